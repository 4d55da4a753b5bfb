//! The test data, generated the same way by the Python peer
//! (`interop/python/peer.py`) and the Node peer (`interop/node/peer.mjs`), so
//! that each side can check what the other sent without sending it twice.

use bytes::Bytes;
use tether_tokio::Message;

/// 16 MiB: the size of the large messages.
pub const LARGE: usize = 16 << 20;

/// Multi-byte UTF-8: 2, 3 and 4-byte characters.
pub const UTF8: &str = "héllo wörld ✓ 日本語 🚀";

/// Where [`UTF8`] is cut into fragments: byte 2 is inside "é", 9 inside
/// "ö", 20 inside "日".
pub const UTF8_CUTS: [usize; 3] = [2, 9, 20];

/// `n` bytes of "000000000000000\n000000000000001\n..." (16 bytes a line).
pub fn lines(n: usize) -> String {
    let mut s = String::with_capacity(n + 16);
    let mut i = 0u64;
    while s.len() < n {
        s.push_str(&format!("{i:015}\n"));
        i += 1;
    }
    s.truncate(n);
    s
}

/// [`lines`] with every byte XORed with 0xA5: binary, not UTF-8.
pub fn binpat(n: usize) -> Vec<u8> {
    lines(n).into_bytes().into_iter().map(|b| b ^ 0xa5).collect()
}

/// `n` bytes from a 31-bit LCG (`x = x * 1103515245 + 12345`, byte `x >> 16`):
/// incompressible within itself.
pub fn noise(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345) & 0x7fff_ffff;
            (x >> 16) as u8
        })
        .collect()
}

/// The text messages of the `text` scenario.
pub fn texts() -> Vec<Message> {
    ["hello", UTF8, "", &lines(70_000)]
        .into_iter()
        .map(|t| Message::Text(t.into()))
        .collect()
}

/// The binary messages of the `binary` scenario.
pub fn bins() -> Vec<Message> {
    vec![
        Message::Binary(Bytes::new()),
        Message::Binary((0..=255u8).collect::<Vec<u8>>().into()),
        Message::Binary(binpat(100_000).into()),
    ]
}

/// [`UTF8`] cut at [`UTF8_CUTS`]: four fragments, three of them ending
/// inside a character.
pub fn utf8_pieces() -> Vec<&'static [u8]> {
    let bytes = UTF8.as_bytes();
    let mut pieces = Vec::new();
    let mut start = 0;
    for cut in UTF8_CUTS {
        pieces.push(&bytes[start..cut]);
        start = cut;
    }
    pieces.push(&bytes[start..]);
    pieces
}

/// A binary message in four fragments, one of them empty.
pub fn bin_pieces() -> Vec<Vec<u8>> {
    vec![vec![0, 1], Vec::new(), vec![0xff; 1000], b"end".to_vec()]
}

/// The messages of the `deflate` scenario, in order: the same 200 bytes of
/// noise twice (the second is tiny on the wire exactly when the sender keeps
/// its context), 1000 bytes of noise 64 times (compresses only with a
/// window above 1000 bytes), and repetitive UTF-8 text.
pub fn deflate_messages() -> Vec<Message> {
    vec![
        Message::Binary(noise(200, 1).into()),
        Message::Binary(noise(200, 1).into()),
        Message::Binary(noise(1000, 2).repeat(64).into()),
        Message::Text(format!("{UTF8} ").repeat(1000).into()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generators_match_the_peers() {
        assert_eq!(&lines(40), "000000000000000\n000000000000001\n00000000");
        assert_eq!(binpat(2), vec![b'0' ^ 0xa5; 2]);
        // The first bytes the Python and Node generators give for seed 1.
        assert_eq!(noise(4, 1), vec![0xc6, 0x7e, 0x81, 0x6b]);
        let joined: Vec<u8> = utf8_pieces().concat();
        assert_eq!(joined, UTF8.as_bytes());
        assert!(utf8_pieces().iter().take(3).all(|p| std::str::from_utf8(p).is_err()));
    }
}
