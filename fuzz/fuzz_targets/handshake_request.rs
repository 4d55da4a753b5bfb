//! Any bytes, in chunks, as the request a server handshake reads; see
//! `src/handshake.rs` for the input layout and the checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tether_proto_fuzz::handshake::run_request(data);
});
