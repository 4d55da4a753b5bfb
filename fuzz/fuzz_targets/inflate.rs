//! A frame stream fed to a server that negotiated permessage-deflate: the
//! inflate path under the message size limits (zip bombs, corrupt data,
//! RSV1 where it is not allowed). See `src/frames.rs` for the input layout;
//! the deflate flag is forced on.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_proto::Role;
use tether_proto_fuzz::frames;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut input = Vec::with_capacity(data.len());
    input.push(flags | frames::DEFLATE);
    input.extend_from_slice(rest);
    frames::run(Role::Server, &input);
});
