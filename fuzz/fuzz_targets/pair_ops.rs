//! Operations on a client and a server wired to each other in memory; see
//! `src/pair.rs` for the operations and the checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: tether_proto_fuzz::pair::Input| {
    tether_proto_fuzz::pair::run(input);
});
