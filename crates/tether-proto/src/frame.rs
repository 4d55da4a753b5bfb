//! Frame headers (RFC 6455 section 5.2): parsing and emitting.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-------+-+-------------+-------------------------------+
//! |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
//! |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
//! |N|V|V|V|       |S|             |   (if payload len==126/127)   |
//! | |1|2|3|       |K|             |                               |
//! +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
//! |     Extended payload length continued, if payload len == 127  |
//! + - - - - - - - - - - - - - - - +-------------------------------+
//! |                               |Masking-key, if MASK set to 1  |
//! +-------------------------------+-------------------------------+
//! ```
// `pub` for tether_proto::__internal (the `unstable-internals` feature of
// the benches and fuzz targets); crate-private otherwise.
#![cfg_attr(not(feature = "unstable-internals"), allow(unreachable_pub, dead_code))]

use crate::error::ProtocolError;

/// FIN bit (RFC 6455 section 5.2).
const FIN: u8 = 0x80;
/// RSV1..RSV3 bits (RFC 6455 section 5.2).
pub const RSV_MASK: u8 = 0x70;
/// RSV1 bit, used by permessage-deflate (RFC 7692 section 6).
pub const RSV1: u8 = 0x40;
/// RSV2 bit.
pub const RSV2: u8 = 0x20;
/// RSV3 bit.
pub const RSV3: u8 = 0x10;
/// Opcode bits.
const OPCODE_MASK: u8 = 0x0f;
/// MASK bit of the second byte.
const MASK_BIT: u8 = 0x80;
/// Largest payload of a control frame (RFC 6455 section 5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 0x7d;
/// Largest frame header: 2 + 8 (64-bit length) + 4 (mask key).
pub const MAX_HEADER_LEN: usize = 14;

/// A frame opcode (RFC 6455 section 5.2, section 11.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpCode {
    /// `0x0`: continuation of a fragmented message.
    Continuation,
    /// `0x1`: first frame of a text message.
    Text,
    /// `0x2`: first frame of a binary message.
    Binary,
    /// `0x8`: close.
    Close,
    /// `0x9`: ping.
    Ping,
    /// `0xA`: pong.
    Pong,
}

impl OpCode {
    /// Decodes an opcode; `None` for the reserved values `0x3..=0x7` and `0xB..=0xF`.
    pub const fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            0x0 => Self::Continuation,
            0x1 => Self::Text,
            0x2 => Self::Binary,
            0x8 => Self::Close,
            0x9 => Self::Ping,
            0xa => Self::Pong,
            _ => return None,
        })
    }

    /// The 4-bit wire value.
    pub const fn as_u8(self) -> u8 {
        match self {
            Self::Continuation => 0x0,
            Self::Text => 0x1,
            Self::Binary => 0x2,
            Self::Close => 0x8,
            Self::Ping => 0x9,
            Self::Pong => 0xa,
        }
    }

    /// Control frames have the high bit of the opcode set (RFC 6455 section 5.5).
    pub const fn is_control(self) -> bool {
        self.as_u8() & 0x8 != 0
    }
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// FIN: this is the final fragment of a message.
    pub fin: bool,
    /// The RSV1..RSV3 bits, in place (`0x40`, `0x20`, `0x10`).
    pub rsv: u8,
    /// The opcode.
    pub opcode: OpCode,
    /// The masking key, present on frames sent by a client.
    pub mask: Option<[u8; 4]>,
    /// The payload length.
    pub payload_len: u64,
}

impl FrameHeader {
    /// Parses a header from the start of `buf`.
    ///
    /// Returns `Ok(None)` when `buf` does not yet hold the whole header (a
    /// status, not an error), and `Ok(Some((header, header_len)))` otherwise.
    /// Checks what can be checked without connection state: reserved opcodes,
    /// the 64-bit length's top bit, and the control-frame rules of section 5.5.
    #[inline]
    pub fn parse(buf: &[u8]) -> Result<Option<(Self, usize)>, ProtocolError> {
        let [b0, b1, ..] = *buf else {
            return Ok(None);
        };
        let opcode = OpCode::from_u8(b0 & OPCODE_MASK).ok_or(ProtocolError::ReservedOpcode(b0 & OPCODE_MASK))?;
        let fin = b0 & FIN != 0;
        let masked = b1 & MASK_BIT != 0;
        let (payload_len, mut pos) = match b1 & 0x7f {
            126 => {
                let Some(ext) = buf.get(2..4) else {
                    return Ok(None);
                };
                (u64::from(u16::from_be_bytes([ext[0], ext[1]])), 4)
            }
            127 => {
                let Some(ext) = buf.get(2..10) else {
                    return Ok(None);
                };
                let mut bytes = [0; 8];
                bytes.copy_from_slice(ext);
                let len = u64::from_be_bytes(bytes);
                // RFC 6455 section 5.2: "the most significant bit MUST be 0".
                if len >> 63 != 0 {
                    return Err(ProtocolError::InvalidLength);
                }
                (len, 10)
            }
            len => (u64::from(len), 2),
        };
        if opcode.is_control() {
            // RFC 6455 section 5.5: control frames are not fragmented and carry
            // at most 125 bytes (so they always use the 7-bit length).
            if !fin {
                return Err(ProtocolError::FragmentedControlFrame);
            }
            if payload_len > MAX_CONTROL_PAYLOAD as u64 {
                return Err(ProtocolError::ControlFrameTooLong);
            }
        }
        let mask = if masked {
            let Some(key) = buf.get(pos..pos + 4) else {
                return Ok(None);
            };
            pos += 4;
            Some([key[0], key[1], key[2], key[3]])
        } else {
            None
        };
        Ok(Some((
            Self {
                fin,
                rsv: b0 & RSV_MASK,
                opcode,
                mask,
                payload_len,
            },
            pos,
        )))
    }

    /// The encoded length of this header.
    pub const fn encoded_len(&self) -> usize {
        let len = match self.payload_len {
            0..=125 => 2,
            126..=0xffff => 4,
            _ => 10,
        };
        if self.mask.is_some() {
            len + 4
        } else {
            len
        }
    }

    /// Writes the header into `out` using the shortest length form
    /// (RFC 6455 section 5.2: "the minimal number of bytes MUST be used").
    /// Returns the number of bytes written.
    #[inline]
    pub fn encode(&self, out: &mut [u8; MAX_HEADER_LEN]) -> usize {
        out[0] = u8::from(self.fin) << 7 | (self.rsv & RSV_MASK) | self.opcode.as_u8();
        let mask_bit = if self.mask.is_some() { MASK_BIT } else { 0 };
        let mut pos = match self.payload_len {
            len @ 0..=125 => {
                out[1] = mask_bit | len as u8;
                2
            }
            len @ 126..=0xffff => {
                out[1] = mask_bit | 126;
                out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
                4
            }
            len => {
                out[1] = mask_bit | 127;
                out[2..10].copy_from_slice(&len.to_be_bytes());
                10
            }
        };
        if let Some(key) = self.mask {
            out[pos..pos + 4].copy_from_slice(&key);
            pos += 4;
        }
        pos
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode(header: &FrameHeader) -> Vec<u8> {
        let mut buf = [0; MAX_HEADER_LEN];
        let n = header.encode(&mut buf);
        buf[..n].to_vec()
    }

    /// RFC 6455 section 5.7: the examples, headers only.
    #[test]
    fn rfc6455_5_7_examples() {
        // A single-frame unmasked text message "Hello".
        let (h, n) = FrameHeader::parse(&[0x81, 0x05, 0x48]).unwrap().unwrap();
        assert_eq!(
            (h.fin, h.opcode, h.mask, h.payload_len, n),
            (true, OpCode::Text, None, 5, 2)
        );
        // A single-frame masked text message "Hello".
        let bytes = [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f];
        let (h, n) = FrameHeader::parse(&bytes).unwrap().unwrap();
        assert_eq!((h.mask, n), (Some([0x37, 0xfa, 0x21, 0x3d]), 6));
        // A fragmented unmasked text message: first and last fragment.
        let (h, _) = FrameHeader::parse(&[0x01, 0x03]).unwrap().unwrap();
        assert_eq!((h.fin, h.opcode), (false, OpCode::Text));
        let (h, _) = FrameHeader::parse(&[0x80, 0x02]).unwrap().unwrap();
        assert_eq!((h.fin, h.opcode), (true, OpCode::Continuation));
        // 256 bytes binary message in a single unmasked frame.
        let (h, n) = FrameHeader::parse(&[0x82, 0x7e, 0x01, 0x00]).unwrap().unwrap();
        assert_eq!((h.payload_len, n), (256, 4));
        // 64KiB binary message in a single unmasked frame.
        let bytes = [0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0];
        let (h, n) = FrameHeader::parse(&bytes).unwrap().unwrap();
        assert_eq!((h.payload_len, n), (65536, 10));
        assert_eq!(encode(&h), bytes);
    }

    #[test]
    fn rfc6455_5_2_partial_header_is_a_status() {
        let full = [0x82, 0xff, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4];
        for end in 0..full.len() {
            assert_eq!(FrameHeader::parse(&full[..end]).unwrap(), None, "prefix {end}");
        }
        assert!(FrameHeader::parse(&full).unwrap().is_some());
    }

    #[test]
    fn rfc6455_5_2_reserved_opcodes() {
        for op in (0x3..=0x7).chain(0xb..=0xf) {
            assert_eq!(
                FrameHeader::parse(&[0x80 | op, 0]),
                Err(ProtocolError::ReservedOpcode(op))
            );
        }
    }

    #[test]
    fn rfc6455_5_2_length_top_bit() {
        let bytes = [0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(FrameHeader::parse(&bytes), Err(ProtocolError::InvalidLength));
    }

    #[test]
    fn rfc6455_5_5_control_frames() {
        assert_eq!(
            FrameHeader::parse(&[0x09, 0]),
            Err(ProtocolError::FragmentedControlFrame)
        );
        assert_eq!(
            FrameHeader::parse(&[0x89, 126, 0, 126]),
            Err(ProtocolError::ControlFrameTooLong)
        );
        assert!(FrameHeader::parse(&[0x8a, 125]).unwrap().is_some());
    }

    #[test]
    fn rfc6455_5_2_shortest_length_form() {
        let h = |len| FrameHeader {
            fin: true,
            rsv: 0,
            opcode: OpCode::Binary,
            mask: None,
            payload_len: len,
        };
        assert_eq!(encode(&h(125)).len(), 2);
        assert_eq!(encode(&h(126)).len(), 4);
        assert_eq!(encode(&h(0xffff)).len(), 4);
        assert_eq!(encode(&h(0x1_0000)).len(), 10);
    }

    fn any_header() -> impl Strategy<Value = FrameHeader> {
        let data = (
            any::<bool>(),
            prop_oneof![Just(OpCode::Continuation), Just(OpCode::Text), Just(OpCode::Binary)],
            0..(1u64 << 63),
        );
        let control = (
            prop_oneof![Just(OpCode::Close), Just(OpCode::Ping), Just(OpCode::Pong)],
            0..126u64,
        )
            .prop_map(|(op, len)| (true, op, len));
        (prop_oneof![data, control], 0..8u8, any::<Option<[u8; 4]>>()).prop_map(
            |((fin, opcode, payload_len), rsv, mask)| FrameHeader {
                fin,
                rsv: rsv << 4,
                opcode,
                mask,
                payload_len,
            },
        )
    }

    proptest! {
        #[test]
        fn header_round_trip(header in any_header()) {
            let bytes = encode(&header);
            prop_assert_eq!(bytes.len(), header.encoded_len());
            prop_assert_eq!(FrameHeader::parse(&bytes).unwrap(), Some((header, bytes.len())));
        }

        #[test]
        fn header_parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
            let _ = FrameHeader::parse(&bytes);
        }
    }
}
