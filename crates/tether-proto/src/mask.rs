//! Masking (RFC 6455 section 5.3).
//!
//! `transformed[i] = original[i] ^ key[i % 4]`. Masking is its own inverse.
//! This implementation works a machine word at a time, which the compiler
//! vectorises: with the target's baseline (SSE2 on x86-64, 16 bytes a
//! step), and on x86-64 CPUs that have AVX2 (checked once at run time) with
//! 32-byte steps, which halves the instructions of a large payload.
// `pub` for tether_proto::__internal (the `unstable-internals` feature of
// the benches and fuzz targets); crate-private otherwise.
#![cfg_attr(not(feature = "unstable-internals"), allow(unreachable_pub, dead_code))]

/// Masks or unmasks `data` in place with `key`, as if `data` started `offset`
/// bytes into the payload (so a payload can be processed in pieces).
#[inline]
pub fn apply_mask(data: &mut [u8], key: [u8; 4], offset: usize) {
    let key = rotate_key(key, offset);
    if data.len() < 64 {
        mask_short(data, key);
    } else {
        mask_long(data, key);
    }
}

/// 64 bytes or more: in vector steps. Out of line, so that the short path
/// inlines into its callers.
#[inline(never)]
fn mask_long(data: &mut [u8], key: [u8; 4]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // The bytes before the first 32-byte boundary one by one, so that
        // no 32-byte load or store of the rest straddles two cache lines
        // (a payload starts wherever its header ended).
        let head = data.as_ptr().align_offset(32).min(data.len());
        let (head_bytes, body) = data.split_at_mut(head);
        apply_mask_bytewise(head_bytes, key);
        let key = rotate_key(key, head);
        // SAFETY: the CPU has AVX2 (checked just above; std caches the
        // answer), the one requirement of calling a function compiled for it.
        unsafe { mask_words_avx2(body, key_word(key)) };
        return;
    }
    mask_words(data, key_word(key));
}

/// A short payload (most messages of a chat or a game): a word, then
/// half a word, at a time, then the last bytes, with none of the vector
/// loop's setup, which costs more than it saves below a few vector steps.
#[inline]
fn mask_short(data: &mut [u8], key: [u8; 4]) {
    let key64 = key_word(key);
    let (words, mut rest) = data.split_at_mut(data.len() & !7);
    for word in words.chunks_exact_mut(8) {
        let masked =
            u64::from_ne_bytes([word[0], word[1], word[2], word[3], word[4], word[5], word[6], word[7]]) ^ key64;
        word.copy_from_slice(&masked.to_ne_bytes());
    }
    // The words took a multiple of 4 bytes: the key is in phase.
    if rest.len() >= 4 {
        let (half, tail) = rest.split_at_mut(4);
        let masked = u32::from_ne_bytes([half[0], half[1], half[2], half[3]]) ^ u32::from_ne_bytes(key);
        half.copy_from_slice(&masked.to_ne_bytes());
        rest = tail;
    }
    apply_mask_bytewise(rest, key);
}

/// The 4-byte key twice, as a word in memory order.
#[inline]
fn key_word(key: [u8; 4]) -> u64 {
    // Both halves are the key, so the word is the same in either byte order.
    let half = u64::from(u32::from_ne_bytes(key));
    half | half << 32
}

/// [`mask_words`] compiled for AVX2: the same safe code, vectorised with
/// 32-byte registers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn mask_words_avx2(data: &mut [u8], key64: u64) {
    mask_words(data, key64);
}

/// Masks `data` a word at a time (`key64`: the 4-byte key twice, in
/// memory order), then its tail byte by byte. No `unsafe`: fixed-size
/// chunks let the compiler use unaligned vector loads and stores, which is
/// as fast as aligned access on the targets we measure (see benches/).
#[inline(always)]
fn mask_words(data: &mut [u8], key64: u64) {
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let masked = u64::from_ne_bytes(word) ^ key64;
        chunk.copy_from_slice(&masked.to_ne_bytes());
    }
    let key = key64.to_ne_bytes();
    apply_mask_bytewise(chunks.into_remainder(), [key[0], key[1], key[2], key[3]]);
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

    /// Each word path (the baseline, and AVX2 where the CPU has it) equals
    /// the reference at every length up to a few vector steps, whichever
    /// path `apply_mask` picks on this machine.
    #[test]
    fn every_word_path_equals_the_reference() {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        let key64 = key_word(key);
        for len in 0..300 {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let mut expected = data.clone();
            apply_mask_bytewise(&mut expected, key);
            let mut words = data.clone();
            mask_words(&mut words, key64);
            assert_eq!(words, expected, "baseline, {len} bytes");
            let mut short = data.clone();
            mask_short(&mut short, key);
            assert_eq!(short, expected, "short, {len} bytes");
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                let mut wide = data.clone();
                // SAFETY: the CPU has AVX2 (checked just above).
                unsafe { mask_words_avx2(&mut wide, key64) };
                assert_eq!(wide, expected, "AVX2, {len} bytes");
            }
        }
    }

    proptest! {
        /// Masking any slice at any offset and alignment equals the naive
        /// reference applied to the whole payload.
        #[test]
        fn rfc6455_5_3_mask_equals_reference(
            payload in proptest::collection::vec(any::<u8>(), 0..600),
            key in any::<[u8; 4]>(),
            start in 0usize..600,
            len in 0usize..600,
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
