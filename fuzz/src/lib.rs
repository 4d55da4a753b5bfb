//! Harnesses shared by the fuzz targets in `fuzz_targets/`: a driver that
//! feeds a frame stream to one connection and checks its outputs, an
//! in-memory client/server pair driven by a sequence of operations, and the
//! opening-handshake parsers fed arbitrary requests and responses.
//!
//! Every check is an `assert!`: a failed invariant is a crash that libFuzzer
//! saves as a reproducer.

pub mod check;
pub mod frames;
pub mod handshake;
pub mod pair;
