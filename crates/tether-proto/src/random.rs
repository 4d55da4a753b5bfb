//! The injected source of randomness (mask keys, `Sec-WebSocket-Key`).
//!
//! The core has no global random source. Adapters pass a generator seeded from
//! the operating system; tests pass a seeded one so that runs repeat.
//! RFC 6455 section 5.3 asks for masking keys from "a strong source of
//! entropy": production sources should be cryptographically secure.

/// Fills buffers with random bytes.
///
/// Implemented for every `FnMut(&mut [u8]) + Send`, so an adapter can pass
/// `|buf: &mut [u8]| rng.fill_bytes(buf)`.
pub trait RandomSource: Send {
    /// Fills `dst` with random bytes.
    fn fill_bytes(&mut self, dst: &mut [u8]);
}

impl<F: FnMut(&mut [u8]) + Send> RandomSource for F {
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        self(dst);
    }
}

/// A small, fast, seedable generator (SplitMix64) for tests and fuzzing.
///
/// It is predictable by design: do not use it for connections that cross a
/// network you do not control.
#[derive(Debug, Clone)]
pub struct SeededRandom {
    state: u64,
}

impl SeededRandom {
    /// A generator whose output is fixed by `seed`.
    pub const fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl RandomSource for SeededRandom {
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        for chunk in dst.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}
