//! Masking (RFC 6455 section 5.3).
//!
//! `transformed[i] = original[i] ^ key[i % 4]`. Masking is its own inverse.
//! This implementation works a machine word at a time on the aligned middle of
//! the buffer, which the compiler vectorises (SSE2/AVX2/NEON) without `unsafe`.
// `pub` for tether_proto::__internal (the `unstable-internals` feature of
// the benches and fuzz targets); crate-private otherwise.
#![cfg_attr(not(feature = "unstable-internals"), allow(unreachable_pub, dead_code))]

/// Masks or unmasks `data` in place with `key`, as if `data` started `offset`
/// bytes into the payload (so a payload can be processed in pieces).
#[inline]
pub fn apply_mask(data: &mut [u8], key: [u8; 4], offset: usize) {
    let key = rotate_key(key, offset);
    if data.len() < 16 {
        apply_mask_bytewise(data, key);
        return;
    }
    // No `unsafe` here: fixed-size chunks let the compiler use unaligned
    // vector loads and stores, which is as fast as aligned access on the
    // targets we measure (see benches/).
    let key64 = u64::from_ne_bytes([key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3]]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let masked = u64::from_ne_bytes(word) ^ key64;
        chunk.copy_from_slice(&masked.to_ne_bytes());
    }
    apply_mask_bytewise(chunks.into_remainder(), key);
}

/// The key as seen by a piece that starts `offset` bytes into the payload.
#[inline]
const fn rotate_key(key: [u8; 4], offset: usize) -> [u8; 4] {
    let k = u32::from_be_bytes(key).rotate_left((offset % 4) as u32 * 8);
    k.to_be_bytes()
}

/// The reference implementation, straight from section 5.3.
#[inline]
pub fn apply_mask_bytewise(data: &mut [u8], key: [u8; 4]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= key[i & 3];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rfc6455_5_7_masked_hello() {
        let mut data = [0x7f, 0x9f, 0x4d, 0x51, 0x58];
        apply_mask(&mut data, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(&data, b"Hello");
    }

    proptest! {
        /// Masking any slice at any offset and alignment equals the naive
        /// reference applied to the whole payload.
        #[test]
        fn rfc6455_5_3_mask_equals_reference(
            payload in proptest::collection::vec(any::<u8>(), 0..300),
            key in any::<[u8; 4]>(),
            start in 0usize..300,
            len in 0usize..300,
            misalign in 0usize..8,
        ) {
            let start = start.min(payload.len());
            let end = (start + len).min(payload.len());
            let mut expected = payload.clone();
            apply_mask_bytewise(&mut expected, key);

            // Place the payload at an arbitrary alignment.
            let mut storage = vec![0u8; misalign];
            storage.extend_from_slice(&payload);
            let buf = &mut storage[misalign..];
            apply_mask(&mut buf[start..end], key, start);
            prop_assert_eq!(&buf[start..end], &expected[start..end]);
        }
    }
}
