//! Masking keys and handshake nonces from the operating system.

use tether_proto::RandomSource;

/// Bytes drawn from the OS per refill: one system call serves 64 masking keys.
const POOL: usize = 256;

/// A [`RandomSource`] backed by the operating system's CSPRNG (`getrandom`),
/// buffered so that a masking key per frame does not cost a system call per
/// frame. Every byte still comes straight from the OS: keys stay
/// unpredictable, as RFC 6455 section 5.3 requires.
pub struct OsRandom {
    pool: [u8; POOL],
    pos: usize,
}

impl OsRandom {
    /// A source with an empty pool: the first key fills it.
    pub fn new() -> Self {
        Self {
            pool: [0; POOL],
            pos: POOL,
        }
    }
}

impl Default for OsRandom {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for OsRandom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OsRandom")
    }
}

impl RandomSource for OsRandom {
    fn fill_bytes(&mut self, mut dst: &mut [u8]) {
        while !dst.is_empty() {
            if self.pos == POOL {
                if let Err(e) = getrandom::fill(&mut self.pool) {
                    // Without entropy masking is unsafe: stop rather than send
                    // predictable keys.
                    panic!("the operating system's random source failed: {e}");
                }
                self.pos = 0;
            }
            let n = dst.len().min(POOL - self.pos);
            dst[..n].copy_from_slice(&self.pool[self.pos..self.pos + n]);
            // Never hand out the same bytes twice.
            self.pool[self.pos..self.pos + n].fill(0);
            self.pos += n;
            dst = &mut dst[n..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ() {
        let mut random = OsRandom::new();
        let mut keys = std::collections::HashSet::new();
        for _ in 0..1000 {
            let mut key = [0u8; 4];
            random.fill_bytes(&mut key);
            keys.insert(key);
        }
        // 1000 random 32-bit keys collide with probability ~1e-4.
        assert!(keys.len() >= 998);
    }
}
