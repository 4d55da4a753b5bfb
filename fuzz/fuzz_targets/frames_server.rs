//! A frame stream (any bytes) fed in chunks to a server connection; see
//! `src/frames.rs` for the input layout and the checks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_proto::Role;

fuzz_target!(|data: &[u8]| {
    tether_proto_fuzz::frames::run(Role::Server, data);
});
