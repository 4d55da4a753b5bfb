//! Buffers for the memcpy yardstick, shared by the mask and utf8 benches.

/// A 64-byte aligned source and destination of `len` bytes each, carved from
/// one allocation so that `dst - src` is `len + 1024`.
///
/// The placement matters: on the machine these figures come from (AMD EPYC,
/// glibc 2.36), a 64 KiB `copy_from_slice` takes about 22 µs instead of
/// 1.4 µs when `dst - src` is 16 modulo 4096 (glibc's `rep movsb` path on
/// this CPU). Two `vec!`s allocated one after the other land exactly there,
/// which would make every ratio against memcpy look 15x better than it is.
pub(crate) struct CopyBuffers {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl CopyBuffers {
    pub(crate) fn new(len: usize, fill: &[u8]) -> Self {
        let mut storage = vec![0u8; 2 * len + 1024 + 64];
        let start = storage.as_ptr().align_offset(64);
        storage[start..start + len].copy_from_slice(&fill[..len]);
        Self { storage, start, len }
    }

    /// The source and the destination.
    pub(crate) fn split(&mut self) -> (&[u8], &mut [u8]) {
        let (src, rest) = self.storage[self.start..].split_at_mut(self.len);
        (src, &mut rest[1024..1024 + self.len])
    }
}
