//! Incremental UTF-8 validation (RFC 6455 section 8.1).
//!
//! Text arrives in pieces (fragments, partial reads); a code point may be split
//! between pieces. [`Utf8Validator`] keeps at most three bytes of an incomplete
//! code point and reports invalid input as soon as the bytes seen so far
//! cannot start any valid sequence ("fail fast", as Autobahn 6.x checks).
// `pub` for tether_proto::__internal (the `unstable-internals` feature of
// the benches and fuzz targets); crate-private otherwise.
#![cfg_attr(not(feature = "unstable-internals"), allow(unreachable_pub, dead_code))]

/// Invalid UTF-8 was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidUtf8;

/// Validates a byte stream piece by piece.
#[derive(Debug, Default, Clone)]
pub struct Utf8Validator {
    /// Bytes of an incomplete code point carried over from the last piece.
    carry: [u8; 4],
    carry_len: u8,
}

impl Utf8Validator {
    /// A validator at the start of a stream.
    pub const fn new() -> Self {
        Self {
            carry: [0; 4],
            carry_len: 0,
        }
    }

    /// Validates the next piece. On success returns how many bytes at the end
    /// of `piece` belong to an incomplete code point; those are held here and
    /// must not be treated as complete text yet.
    pub fn feed(&mut self, mut piece: &[u8]) -> Result<usize, InvalidUtf8> {
        if self.carry_len > 0 {
            // Complete the carried code point with up to three bytes of `piece`.
            let carried = usize::from(self.carry_len);
            let take = piece.len().min(4 - carried);
            let mut joined = self.carry;
            joined[carried..carried + take].copy_from_slice(&piece[..take]);
            let used = match simdutf8::compat::from_utf8(&joined[..carried + take]) {
                Ok(_) => carried + take,
                // Still incomplete: only possible when `piece` is exhausted,
                // since no valid prefix is four bytes long.
                Err(e) if e.error_len().is_none() && e.valid_up_to() == 0 => {
                    self.carry = joined;
                    self.carry_len = (carried + take) as u8;
                    return Ok(take);
                }
                Err(e) => e.valid_up_to(),
            };
            if used <= carried {
                // The carried prefix cannot be completed.
                return Err(InvalidUtf8);
            }
            // The carried code point is complete; whatever follows it in
            // `piece` is checked below, errors included.
            self.carry_len = 0;
            piece = &piece[used - carried..];
        }
        // The body up to a last code point that may be cut off is checked
        // with the fast validator; only the (at most 3-byte) tail needs the
        // one that tells an incomplete sequence from an invalid one.
        let cut = incomplete_tail_start(piece);
        let (body, tail) = piece.split_at(cut);
        if simdutf8::basic::from_utf8(body).is_err() {
            return Err(InvalidUtf8);
        }
        match simdutf8::compat::from_utf8(tail) {
            Ok(_) => Ok(0),
            Err(e) if e.error_len().is_none() && e.valid_up_to() == 0 => {
                self.carry[..tail.len()].copy_from_slice(tail);
                self.carry_len = tail.len() as u8;
                Ok(tail.len())
            }
            Err(_) => Err(InvalidUtf8),
        }
    }

    /// Ends the stream: an incomplete code point left over is invalid.
    pub fn finish(&mut self) -> Result<(), InvalidUtf8> {
        let complete = self.carry_len == 0;
        self.carry_len = 0;
        if complete {
            Ok(())
        } else {
            Err(InvalidUtf8)
        }
    }

    /// How many bytes of an incomplete code point are being held.
    pub const fn pending(&self) -> usize {
        self.carry_len as usize
    }

    /// Forgets any state, ready for a new stream.
    pub fn reset(&mut self) {
        self.carry_len = 0;
    }
}

/// Where the last code point of `bytes` starts if it may be incomplete (its
/// lead byte announces more bytes than follow it); `bytes.len()` otherwise.
fn incomplete_tail_start(bytes: &[u8]) -> usize {
    let len = bytes.len();
    for back in 1..=len.min(3) {
        let byte = bytes[len - back];
        if byte & 0xc0 != 0x80 {
            // ASCII or a lead byte: how long is its sequence?
            let needed = match byte {
                0xf0.. => 4,
                0xe0.. => 3,
                0xc0.. => 2,
                _ => 1,
            };
            return if needed > back { len - back } else { len };
        }
    }
    len
}

/// Validates a whole payload at once (the fast path).
#[inline]
pub fn validate(bytes: &[u8]) -> Result<(), InvalidUtf8> {
    to_str(bytes).map(|_| ())
}

/// A whole payload as text, validated at once.
#[inline]
pub fn to_str(bytes: &[u8]) -> Result<&str, InvalidUtf8> {
    simdutf8::basic::from_utf8(bytes).map_err(|_| InvalidUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn feed_split(bytes: &[u8], cuts: &[usize]) -> Result<(), InvalidUtf8> {
        let mut v = Utf8Validator::new();
        let mut start = 0;
        for &cut in cuts {
            let cut = cut.clamp(start, bytes.len());
            v.feed(&bytes[start..cut])?;
            start = cut;
        }
        v.feed(&bytes[start..])?;
        v.finish()
    }

    #[test]
    fn rfc6455_8_1_code_point_split_across_pieces() {
        let text = "κόσμε 𝄞 €".as_bytes();
        for cut in 0..=text.len() {
            assert_eq!(feed_split(text, &[cut]), Ok(()), "cut at {cut}");
        }
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(&[0xf0, 0x9d]), Ok(2));
        assert_eq!(v.feed(&[0x84]), Ok(1));
        assert_eq!(v.feed(&[0x9e, b'a']), Ok(0));
        assert_eq!(v.finish(), Ok(()));
    }

    #[test]
    fn rfc6455_8_1_fail_fast() {
        // 0xf4 0x90 can never start a valid sequence (> U+10FFFF): reported
        // at once, not at the end of the message.
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(&[b'a', 0xf4]), Ok(1));
        assert_eq!(v.feed(&[0x90]), Err(InvalidUtf8));
        // Surrogates (0xed 0xa0..) likewise.
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(&[0xed, 0xa0]), Err(InvalidUtf8));
        // An incomplete sequence at the end of the stream.
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(&[0xe2, 0x82]), Ok(2));
        assert_eq!(v.finish(), Err(InvalidUtf8));
    }

    #[test]
    fn carried_prefix_followed_by_ascii_is_invalid() {
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(&[0xe2]), Ok(1));
        assert_eq!(v.feed(b"ab"), Err(InvalidUtf8));
    }

    proptest! {
        /// Any split of any byte string gives the same verdict as validating
        /// it whole.
        #[test]
        fn incremental_equals_whole(
            bytes in prop_oneof![
                any::<String>().prop_map(String::into_bytes),
                proptest::collection::vec(any::<u8>(), 0..40),
                proptest::collection::vec(prop_oneof![Just(0xe2u8), Just(0x82), Just(0xac), Just(0xf0), Just(0x9f), Just(b'a'), Just(0xed), Just(0xa0)], 0..20),
            ],
            mut cuts in proptest::collection::vec(0usize..64, 0..6),
        ) {
            cuts.sort_unstable();
            let whole = std::str::from_utf8(&bytes).is_ok();
            prop_assert_eq!(feed_split(&bytes, &cuts).is_ok(), whole);
        }
    }
}
