//! permessage-deflate (RFC 7692): negotiation and the per-message codec.
//!
//! Compression is opt-in on a server ([`Accept::permessage_deflate`]) and an
//! offer on a client ([`ClientRequest::permessage_deflate`]). Compressing
//! secrets next to data an attacker controls leaks the secrets through the
//! compressed size (CRIME, BREACH): send such messages with
//! [`SendOptions::uncompressed`](crate::SendOptions::uncompressed), or leave
//! compression off.
//!
//! The codec is flate2, on its pure-Rust zlib-rs backend by default (enable
//! flate2's `zlib` or `zlib-ng` feature in your Cargo.toml for a C one): raw
//! deflate with window bits 9 to 15 on both sides, through flate2's zlib
//! API. zlib cannot build a raw-deflate compressor with an 8-bit window,
//! and compressing with 9 bits for a peer that asked for 8 would send
//! back-references it cannot follow: so a server declines an offer that
//! would force its compressor to 8 bits, and a client told to compress with
//! 8 bits sends its messages uncompressed (RFC 7692 lets any message go
//! uncompressed). Decompressing a peer's 8-bit stream is fine: it runs with
//! a 9-bit window, which holds every distance an 8-bit one can refer to.
//!
//! flate2 does not expose zlib's memory level: every compressor runs at
//! zlib's default, 8 (see below for what that costs).
//!
//! # Memory per connection
//!
//! zlib-rs keeps fixed-size tables whatever the window and memory level (the
//! hash table alone is 128 KiB), so the window changes the compression ratio
//! more than the memory: measured, a compressor costs about 371 KiB at
//! window 15 (memory level 8); a decompressor about 46 KiB at any window. The states are
//! allocated on the first compressed message in each direction. What frees
//! memory is [`DeflateConfig::release_between_messages`] with no context
//! takeover: the state then exists only while a message is being
//! (de)compressed. Measured with `cargo bench -p tether-benches --bench
//! deflate_memory` (one server connection after echoing a 2.4 KB message):
//!
//! | server settings | held while idle | time per echo |
//! |---|---|---|
//! | no compression | 9 KiB | 0.3 µs |
//! | [`DeflateConfig::default`] | 420 KiB | 6 µs |
//! | [`DeflateConfig::low_memory`] | 3 KiB | 28 µs |
//!
//! [`Accept::permessage_deflate`]: crate::handshake::Accept::permessage_deflate
//! [`ClientRequest::permessage_deflate`]: crate::handshake::ClientRequest::permessage_deflate

use bytes::BytesMut;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::connection::Role;
use crate::extension::{DecodeError, Extension, SharedEncoding};
use crate::frame::RSV1;
use crate::handshake::ExtensionOffer;
use crate::message::DataKind;

/// The extension token (RFC 7692 section 7).
pub const EXTENSION_NAME: &str = "permessage-deflate";
/// The tail a sync flush ends with, stripped before sending and appended
/// before inflating (RFC 7692 section 7.2.1 and 7.2.2).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// Extension parameters (RFC 7692 section 7.1).
const SERVER_NO_CONTEXT_TAKEOVER: &str = "server_no_context_takeover";
const CLIENT_NO_CONTEXT_TAKEOVER: &str = "client_no_context_takeover";
const SERVER_MAX_WINDOW_BITS: &str = "server_max_window_bits";
const CLIENT_MAX_WINDOW_BITS: &str = "client_max_window_bits";
/// Window bits: RFC 7692 allows 8 to 15; zlib compresses with 9 to 15.
const MIN_WINDOW_BITS: u8 = 8;
const MIN_COMPRESS_WINDOW_BITS: u8 = 9;
const MAX_WINDOW_BITS: u8 = 15;
/// Output is produced in steps of at most this many bytes, so that the
/// message size limit is checked before memory is spent.
const INFLATE_STEP: usize = 32 * 1024;

/// Local permessage-deflate settings: what a client offers, what a server
/// accepts, and how this end compresses.
///
/// The same type serves both roles; each field says what it means for each.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeflateConfig {
    /// Client: ask the server to compress each message on its own
    /// (`server_no_context_takeover` in the offer). Server: compress each
    /// message on its own, and say so in the answer. Default `false`.
    pub server_no_context_takeover: bool,
    /// Client: compress each message on its own, and say so in the offer.
    /// Server: ask the client to compress each message on its own. Default
    /// `false`.
    pub client_no_context_takeover: bool,
    /// The largest LZ77 window (9 to 15) of the server's compressor. Client:
    /// offered as `server_max_window_bits` when below 15. Server: the window
    /// it compresses with, or less if the client asks. Default 15.
    pub server_max_window_bits: u8,
    /// The largest window (9 to 15) of the client's compressor. Client: the
    /// window it compresses with, or less if the server asks; the offer
    /// always carries `client_max_window_bits` (with this value when below
    /// 15) so a server may ask. Server: asked of clients that allow it, when
    /// below 15. Default 15.
    pub client_max_window_bits: u8,
    /// zlib compression level, 0 (store) to 9 (smallest). Default 6.
    pub level: u8,
    /// Messages shorter than this many bytes are sent uncompressed.
    /// Default 64.
    pub threshold: usize,
    /// Free the zlib state after each message in every direction that runs
    /// without context takeover (where the state carries nothing from one
    /// message to the next), so idle connections hold none. Costs a fresh
    /// allocation per compressed message. Default `false`.
    pub release_between_messages: bool,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        Self {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: MAX_WINDOW_BITS,
            client_max_window_bits: MAX_WINDOW_BITS,
            level: 6,
            threshold: 64,
            release_between_messages: false,
        }
    }
}

impl DeflateConfig {
    /// For servers with many mostly idle connections: no context takeover
    /// in either direction (asked of the client too), small windows, and the
    /// zlib state freed after each message, so an idle connection holds no
    /// compression memory at all (see the module documentation for figures).
    /// Repeated content compresses less well, and each compressed message
    /// pays for setting the state up again.
    pub fn low_memory() -> Self {
        Self {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            server_max_window_bits: 10,
            client_max_window_bits: 10,
            release_between_messages: true,
            ..Self::default()
        }
    }

    /// Checks the ranges; the handshake refuses a configuration that fails.
    pub fn validate(&self) -> Result<(), String> {
        for (name, bits) in [
            (SERVER_MAX_WINDOW_BITS, self.server_max_window_bits),
            (CLIENT_MAX_WINDOW_BITS, self.client_max_window_bits),
        ] {
            if !(MIN_COMPRESS_WINDOW_BITS..=MAX_WINDOW_BITS).contains(&bits) {
                return Err(format!("{name} is {bits}; zlib compresses with 9 to 15"));
            }
        }
        if self.level > 9 {
            return Err(format!("compression level is {}; it goes from 0 to 9", self.level));
        }
        Ok(())
    }

    /// The offer a client sends (RFC 7692 section 7.1).
    pub fn offer(&self) -> ExtensionOffer {
        let mut offer = ExtensionOffer::new(EXTENSION_NAME);
        if self.server_no_context_takeover {
            offer = offer.with_param(SERVER_NO_CONTEXT_TAKEOVER, None);
        }
        if self.client_no_context_takeover {
            offer = offer.with_param(CLIENT_NO_CONTEXT_TAKEOVER, None);
        }
        if self.server_max_window_bits < MAX_WINDOW_BITS {
            offer = offer.with_param(
                SERVER_MAX_WINDOW_BITS,
                Some(self.server_max_window_bits.to_string().as_str()),
            );
        }
        // Always allow the server to limit our window (7.1.2.2): a server
        // that wants to save memory can then ask.
        let value = (self.client_max_window_bits < MAX_WINDOW_BITS).then(|| self.client_max_window_bits.to_string());
        offer.with_param(CLIENT_MAX_WINDOW_BITS, value.as_deref())
    }

    /// Server: picks the first offer this configuration can accept (RFC 7692
    /// section 5.1 and 7.1) and returns the answer to send. `None` declines
    /// every offer: the connection then runs uncompressed. Offers with
    /// unknown, duplicate or invalid parameters are declined, as the RFC asks.
    pub fn accept(&self, offers: &[ExtensionOffer]) -> Option<ExtensionOffer> {
        offers
            .iter()
            .filter(|offer| offer.name.eq_ignore_ascii_case(EXTENSION_NAME))
            .find_map(|offer| self.accept_one(&Params::parse(offer).ok()?))
    }

    fn accept_one(&self, offer: &Params) -> Option<ExtensionOffer> {
        let mut answer = ExtensionOffer::new(EXTENSION_NAME);
        if offer.server_no_context_takeover || self.server_no_context_takeover {
            answer = answer.with_param(SERVER_NO_CONTEXT_TAKEOVER, None);
        }
        if offer.client_no_context_takeover || self.client_no_context_takeover {
            answer = answer.with_param(CLIENT_NO_CONTEXT_TAKEOVER, None);
        }
        let server_bits = self
            .server_max_window_bits
            .min(offer.server_max_window_bits.unwrap_or(MAX_WINDOW_BITS));
        if server_bits < MIN_COMPRESS_WINDOW_BITS {
            // Only 8 bits would do, and zlib cannot compress with 8.
            return None;
        }
        if offer.server_max_window_bits.is_some() || server_bits < MAX_WINDOW_BITS {
            answer = answer.with_param(SERVER_MAX_WINDOW_BITS, Some(server_bits.to_string().as_str()));
        }
        if let Some(allowed) = offer.client_max_window_bits {
            // The client allows a limit (7.1.2.2); ask for one if we want
            // less than what it would use anyway.
            let client_bits = self.client_max_window_bits.min(allowed.unwrap_or(MAX_WINDOW_BITS));
            if client_bits < MAX_WINDOW_BITS {
                answer = answer.with_param(CLIENT_MAX_WINDOW_BITS, Some(client_bits.to_string().as_str()));
            }
        }
        Some(answer)
    }

    /// Client: checks the server's answer against this offer (RFC 7692
    /// section 7.1). An answer with unknown, duplicate or invalid parameters,
    /// or that does not fit the offer, is an error: the client fails the
    /// connection.
    pub fn check_answer(&self, answer: &ExtensionOffer) -> Result<(), String> {
        let answer = Params::parse(answer)?;
        if let Some(bits) = answer.server_max_window_bits {
            if self.server_max_window_bits < MAX_WINDOW_BITS && bits > self.server_max_window_bits {
                return Err(format!(
                    "server_max_window_bits={bits} is more than the {} offered",
                    self.server_max_window_bits
                ));
            }
        } else if self.server_max_window_bits < MAX_WINDOW_BITS {
            return Err("the answer lacks the server_max_window_bits that was offered".to_owned());
        }
        match answer.client_max_window_bits {
            Some(None) => return Err("client_max_window_bits needs a value in an answer".to_owned()),
            Some(Some(bits)) if bits > self.client_max_window_bits => {
                return Err(format!(
                    "client_max_window_bits={bits} is more than the {} offered",
                    self.client_max_window_bits
                ));
            }
            _ => {}
        }
        Ok(())
    }
}

/// The permessage-deflate parameters a connection agreed on (RFC 7692
/// section 7.1), from the server's answer: whether each side resets its
/// compression context after every message, and each side's LZ77 window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct DeflateParams {
    /// The server resets its compressor after each message.
    pub server_no_context_takeover: bool,
    /// The client resets its compressor after each message.
    pub client_no_context_takeover: bool,
    /// The server's compression window, in bits (15 when not limited).
    pub server_max_window_bits: u8,
    /// The client's compression window, in bits (15 when not limited).
    pub client_max_window_bits: u8,
}

impl DeflateParams {
    /// The parameters of a server's permessage-deflate answer.
    pub fn from_answer(answer: &ExtensionOffer) -> Result<Self, String> {
        let params = Params::parse(answer)?;
        Ok(Self {
            server_no_context_takeover: params.server_no_context_takeover,
            client_no_context_takeover: params.client_no_context_takeover,
            server_max_window_bits: params.server_max_window_bits.unwrap_or(MAX_WINDOW_BITS),
            client_max_window_bits: params.client_max_window_bits.flatten().unwrap_or(MAX_WINDOW_BITS),
        })
    }
}

/// What was agreed, from the answer's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Params {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// `Some(None)`: present without a value.
    client_max_window_bits: Option<Option<u8>>,
}

impl Params {
    /// Parses the parameters of an offer or answer (RFC 7692 section 7.1):
    /// each at most once, known names only, window bits 8 to 15 written
    /// without leading zeros.
    fn parse(offer: &ExtensionOffer) -> Result<Self, String> {
        let mut params = Self {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: None,
            client_max_window_bits: None,
        };
        let mut seen = [false; 4];
        for (name, value) in &offer.params {
            let index = match name.to_ascii_lowercase().as_str() {
                SERVER_NO_CONTEXT_TAKEOVER => 0,
                CLIENT_NO_CONTEXT_TAKEOVER => 1,
                SERVER_MAX_WINDOW_BITS => 2,
                CLIENT_MAX_WINDOW_BITS => 3,
                _ => return Err(format!("unknown parameter {name}")),
            };
            if std::mem::replace(&mut seen[index], true) {
                return Err(format!("duplicate parameter {name}"));
            }
            match (index, value.as_deref()) {
                (0, None) => params.server_no_context_takeover = true,
                (1, None) => params.client_no_context_takeover = true,
                (2, Some(v)) => params.server_max_window_bits = Some(window_bits(name, v)?),
                (3, None) => params.client_max_window_bits = Some(None),
                (3, Some(v)) => params.client_max_window_bits = Some(Some(window_bits(name, v)?)),
                (0 | 1, Some(_)) => return Err(format!("{name} takes no value")),
                _ => return Err(format!("{name} needs a value")),
            }
        }
        Ok(params)
    }
}

fn window_bits(name: &str, value: &str) -> Result<u8, String> {
    match value.parse::<u8>() {
        Ok(bits) if (MIN_WINDOW_BITS..=MAX_WINDOW_BITS).contains(&bits) && !value.starts_with('0') => Ok(bits),
        _ => Err(format!("{name}={value} is not a window size from 8 to 15")),
    }
}

/// The permessage-deflate codec of one connection.
pub(crate) struct PerMessageDeflate {
    /// The server's answer, as agreed.
    answer: ExtensionOffer,
    /// Window of our compressor; `None` when the peer asked for 8 bits,
    /// which zlib cannot produce: messages then go uncompressed.
    compress_bits: Option<u8>,
    /// Reset the compressor after each message.
    compress_reset: bool,
    /// Window of the peer's compressor, for our decompressor.
    decompress_bits: u8,
    /// Reset the decompressor after each message.
    decompress_reset: bool,
    level: u8,
    threshold: usize,
    release: bool,
    deflate: Option<Compress>,
    inflate: Option<Decompress>,
}

impl PerMessageDeflate {
    /// The codec for an agreed `answer`, with the local settings `config`.
    pub(crate) fn new(role: Role, answer: &ExtensionOffer, config: &DeflateConfig) -> Result<Self, String> {
        config.validate()?;
        let agreed = Params::parse(answer)?;
        let server_bits = agreed.server_max_window_bits.unwrap_or(MAX_WINDOW_BITS);
        let client_bits = match agreed.client_max_window_bits {
            Some(Some(bits)) => bits,
            _ => MAX_WINDOW_BITS,
        };
        let (ours, theirs, our_reset, their_reset, our_limit) = match role {
            Role::Server => (
                server_bits,
                client_bits,
                agreed.server_no_context_takeover,
                agreed.client_no_context_takeover,
                config.server_max_window_bits,
            ),
            Role::Client => (
                client_bits,
                server_bits,
                // Having offered client_no_context_takeover, keep the promise
                // even if the answer does not repeat it (7.1.1.2).
                agreed.client_no_context_takeover || config.client_no_context_takeover,
                agreed.server_no_context_takeover,
                config.client_max_window_bits,
            ),
        };
        let compress_bits = ours.min(our_limit);
        Ok(Self {
            answer: answer.clone(),
            compress_bits: (compress_bits >= MIN_COMPRESS_WINDOW_BITS).then_some(compress_bits),
            compress_reset: our_reset,
            decompress_bits: theirs,
            decompress_reset: their_reset,
            level: config.level,
            threshold: config.threshold,
            release: config.release_between_messages,
            deflate: None,
            inflate: None,
        })
    }

    fn deflater(&mut self, bits: u8) -> &mut Compress {
        let level = Compression::new(u32::from(self.level));
        // Raw deflate: no zlib header.
        self.deflate
            .get_or_insert_with(|| Compress::new_with_window_bits(level, false, bits))
    }
}

/// Compresses one message with `deflate` (raw deflate, a sync flush, the
/// `00 00 ff ff` tail removed: RFC 7692 section 7.2.1).
fn deflate_message(deflate: &mut Compress, payload: &[u8]) -> Result<BytesMut, String> {
    // Deflate seldom grows data by more than 5 bytes per 16 KiB block.
    let mut out = BytesMut::with_capacity(payload.len() + payload.len() / 1000 + 64);
    let mut input = payload;
    loop {
        if out.capacity() - out.len() < 64 {
            out.reserve(out.capacity().max(1024));
        }
        let spare = out.spare_capacity_mut();
        let room = spare.len();
        let (before_in, before_out) = (deflate.total_in(), deflate.total_out());
        deflate
            .compress_uninit(input, spare, FlushCompress::Sync)
            .map_err(|e| format!("deflate failed: {e}"))?;
        let consumed = (deflate.total_in() - before_in) as usize;
        let produced = (deflate.total_out() - before_out) as usize;
        // SAFETY: zlib initialised the first `produced` bytes of the
        // spare capacity it was handed.
        unsafe { out.set_len(out.len() + produced) };
        input = &input[consumed..];
        // The sync flush is complete once all input is in and zlib
        // stopped with room to spare (it stops early only when full).
        if input.is_empty() && produced < room {
            break;
        }
        if consumed == 0 && produced == 0 {
            return Err("deflate makes no progress".to_owned());
        }
    }
    if out.is_empty() {
        // An empty message right after a flushed one: zlib has nothing to
        // flush and writes nothing. Its compressed form is an empty
        // stored block, `00 00 00 ff ff`, which is 0x00 without the tail
        // (RFC 7692 section 7.2.3.6).
        out.extend_from_slice(&[0x00]);
    } else if out.ends_with(&TAIL) {
        out.truncate(out.len() - TAIL.len());
    } else {
        return Err("deflate output does not end with a sync flush".to_owned());
    }
    Ok(out)
}

/// One message compressed with a fresh context of `window_bits` at
/// `level`: what a server without context takeover sends, the same for
/// every connection with that window (for
/// [`PreparedMessage`](crate::PreparedMessage)).
pub(crate) fn compress_once(payload: &[u8], window_bits: u8, level: u8) -> Result<BytesMut, String> {
    let mut deflate = Compress::new_with_window_bits(Compression::new(u32::from(level)), false, window_bits);
    deflate_message(&mut deflate, payload)
}

impl Extension for PerMessageDeflate {
    fn name(&self) -> &str {
        EXTENSION_NAME
    }

    fn agreed(&self) -> Option<&ExtensionOffer> {
        Some(&self.answer)
    }

    fn rsv_bits(&self) -> u8 {
        RSV1
    }

    fn shared_encoding(&self, _kind: DataKind, len: usize) -> SharedEncoding {
        match self.compress_bits {
            // What `encode` leaves as it is.
            None => SharedEncoding::Unchanged,
            Some(_) if len < self.threshold => SharedEncoding::Unchanged,
            // A fresh context for every message: the same bytes for every
            // connection with this window and level.
            Some(window_bits) if self.compress_reset => SharedEncoding::Deflate {
                window_bits,
                level: self.level,
            },
            // Context takeover: the bytes depend on what this connection
            // sent before.
            Some(_) => SharedEncoding::PerConnection,
        }
    }

    fn encode(&mut self, _kind: DataKind, payload: &[u8]) -> Result<Option<(BytesMut, u8)>, String> {
        let Some(bits) = self.compress_bits else {
            return Ok(None);
        };
        if payload.len() < self.threshold {
            return Ok(None);
        }
        let (reset, release) = (self.compress_reset, self.release);
        let deflate = self.deflater(bits);
        let out = deflate_message(deflate, payload)?;
        if reset {
            if release {
                self.deflate = None;
            } else {
                deflate.reset();
            }
        }
        Ok(Some((out, RSV1)))
    }

    fn decode(&mut self, input: &[u8], last: bool, out: &mut BytesMut, limit: usize) -> Result<(), DecodeError> {
        // A 9-bit window holds every distance of an 8-bit stream; zlib's
        // raw inflate takes no less than 9.
        let bits = self.decompress_bits.max(MIN_COMPRESS_WINDOW_BITS);
        let inflate = self
            .inflate
            .get_or_insert_with(|| Decompress::new_with_window_bits(false, bits));
        let start = out.len();
        let mut pieces: [&[u8]; 2] = [input, if last { &TAIL } else { &[] }];
        for piece in &mut pieces {
            loop {
                let written = out.len() - start;
                if written > limit {
                    return Err(DecodeError::TooLarge);
                }
                // Never offer more room than the limit allows, plus one byte
                // to notice going over it.
                let room = INFLATE_STEP.min((limit - written).saturating_add(1));
                if out.capacity() - out.len() < room {
                    out.reserve(room);
                }
                let spare = &mut out.spare_capacity_mut()[..room];
                let (before_in, before_out) = (inflate.total_in(), inflate.total_out());
                // One message for every kind of corrupt data: zlib's own
                // text depends on where in its calls it noticed (a split of
                // the same input can report "invalid distance too far back"
                // or "repeated call with bad state"), and the connection's
                // events must not depend on how the input was split (the
                // fuzz targets check it).
                let status = inflate
                    .decompress_uninit(piece, spare, FlushDecompress::Sync)
                    .map_err(|_| DecodeError::Invalid("invalid deflate data".to_owned()));
                let consumed = (inflate.total_in() - before_in) as usize;
                let produced = (inflate.total_out() - before_out) as usize;
                // SAFETY: zlib initialised the first `produced` bytes of the
                // spare capacity it was handed.
                unsafe { out.set_len(out.len() + produced) };
                *piece = &piece[consumed..];
                // zlib reads ahead through block headers without output
                // room; output past the limit comes before whatever error
                // it found there, as it would if the input came in pieces.
                if status.is_err() && out.len() - start > limit {
                    return Err(DecodeError::TooLarge);
                }
                match status? {
                    // The peer ended its deflate stream (BFINAL): what follows
                    // starts afresh.
                    Status::StreamEnd => inflate.reset(false),
                    Status::Ok | Status::BufError => {}
                }
                if piece.is_empty() && produced < room {
                    break;
                }
                if consumed == 0 && produced == 0 {
                    if piece.is_empty() {
                        break;
                    }
                    return Err(DecodeError::Invalid("deflate data makes no progress".to_owned()));
                }
            }
        }
        if out.len() - start > limit {
            return Err(DecodeError::TooLarge);
        }
        if last && self.decompress_reset {
            if self.release {
                self.inflate = None;
            } else {
                inflate.reset(false);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn offer(params: &[(&str, Option<&str>)]) -> ExtensionOffer {
        params
            .iter()
            .fold(ExtensionOffer::new(EXTENSION_NAME), |o, (n, v)| o.with_param(*n, *v))
    }

    fn codec(role: Role, answer: &ExtensionOffer, config: DeflateConfig) -> PerMessageDeflate {
        PerMessageDeflate::new(role, answer, &DeflateConfig { threshold: 0, ..config }).unwrap()
    }

    fn compress(codec: &mut PerMessageDeflate, data: &[u8]) -> Vec<u8> {
        let (out, rsv) = codec.encode(DataKind::Binary, data).unwrap().unwrap();
        assert_eq!(rsv, RSV1);
        out.to_vec()
    }

    fn decompress(codec: &mut PerMessageDeflate, data: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
        let mut out = BytesMut::new();
        codec.decode(data, true, &mut out, limit)?;
        Ok(out.to_vec())
    }

    mod rfc7692_7_2_3_examples {
        use super::*;

        #[test]
        fn a_message_compressed_once() {
            let mut c = codec(Role::Server, &offer(&[]), DeflateConfig::default());
            assert_eq!(compress(&mut c, b"Hello"), [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
            let mut d = codec(Role::Client, &offer(&[]), DeflateConfig::default());
            assert_eq!(
                decompress(&mut d, &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], 100).unwrap(),
                b"Hello"
            );
        }

        #[test]
        fn sharing_the_window_across_messages() {
            let mut c = codec(Role::Server, &offer(&[]), DeflateConfig::default());
            assert_eq!(compress(&mut c, b"Hello"), [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
            assert_eq!(compress(&mut c, b"Hello"), [0xf2, 0x00, 0x11, 0x00, 0x00]);
            let mut d = codec(Role::Client, &offer(&[]), DeflateConfig::default());
            assert_eq!(
                decompress(&mut d, &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], 100).unwrap(),
                b"Hello"
            );
            assert_eq!(
                decompress(&mut d, &[0xf2, 0x00, 0x11, 0x00, 0x00], 100).unwrap(),
                b"Hello"
            );
        }

        #[test]
        fn no_context_takeover_compresses_each_message_alone() {
            let answer = offer(&[(SERVER_NO_CONTEXT_TAKEOVER, None)]);
            let mut c = codec(Role::Server, &answer, DeflateConfig::default());
            for _ in 0..3 {
                assert_eq!(compress(&mut c, b"Hello"), [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
            }
        }

        #[test]
        fn deflate_block_with_no_compression() {
            let mut d = codec(Role::Client, &offer(&[]), DeflateConfig::default());
            let data = [0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00];
            assert_eq!(decompress(&mut d, &data, 100).unwrap(), b"Hello");
        }

        #[test]
        fn deflate_block_with_bfinal_set() {
            let mut d = codec(Role::Client, &offer(&[]), DeflateConfig::default());
            let data = [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00];
            assert_eq!(decompress(&mut d, &data, 100).unwrap(), b"Hello");
            // The stream ended; the next message starts a new one.
            assert_eq!(
                decompress(&mut d, &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], 100).unwrap(),
                b"Hello"
            );
        }

        #[test]
        fn two_deflate_blocks_in_one_message() {
            let mut d = codec(Role::Client, &offer(&[]), DeflateConfig::default());
            let data = [
                0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00,
            ];
            assert_eq!(decompress(&mut d, &data, 100).unwrap(), b"Hello");
        }

        #[test]
        fn empty_message() {
            let mut c = codec(Role::Server, &offer(&[]), DeflateConfig::default());
            assert_eq!(compress(&mut c, b""), [0x00]);
            let mut d = codec(Role::Client, &offer(&[]), DeflateConfig::default());
            assert_eq!(decompress(&mut d, &[0x00], 100).unwrap(), b"");
        }
    }

    mod rfc7692_7_1_negotiation {
        use super::*;

        #[test]
        fn offers() {
            assert_eq!(
                DeflateConfig::default().offer().to_string(),
                "permessage-deflate; client_max_window_bits"
            );
            let config = DeflateConfig {
                server_no_context_takeover: true,
                client_no_context_takeover: true,
                ..DeflateConfig::low_memory()
            };
            assert_eq!(
                config.offer().to_string(),
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
                 server_max_window_bits=10; client_max_window_bits=10"
            );
        }

        #[test]
        fn parameters_are_checked() {
            for bad in [
                vec![("x-unknown", None)],
                vec![(SERVER_NO_CONTEXT_TAKEOVER, None), (SERVER_NO_CONTEXT_TAKEOVER, None)],
                vec![(SERVER_NO_CONTEXT_TAKEOVER, Some("1"))],
                vec![(SERVER_MAX_WINDOW_BITS, None)],
                vec![(SERVER_MAX_WINDOW_BITS, Some("7"))],
                vec![(SERVER_MAX_WINDOW_BITS, Some("16"))],
                vec![(SERVER_MAX_WINDOW_BITS, Some("010"))],
                vec![(CLIENT_MAX_WINDOW_BITS, Some("x"))],
            ] {
                assert!(Params::parse(&offer(&bad)).is_err(), "{bad:?}");
            }
            let ok = offer(&[(SERVER_MAX_WINDOW_BITS, Some("8")), (CLIENT_MAX_WINDOW_BITS, None)]);
            assert_eq!(
                Params::parse(&ok),
                Ok(Params {
                    server_no_context_takeover: false,
                    client_no_context_takeover: false,
                    server_max_window_bits: Some(8),
                    client_max_window_bits: Some(None),
                })
            );
        }

        #[test]
        fn server_accepts_the_first_acceptable_offer() {
            let config = DeflateConfig::default();
            let offers = [
                offer(&[("x-bad", None)]),
                // zlib cannot compress with an 8-bit window: declined.
                offer(&[(SERVER_MAX_WINDOW_BITS, Some("8"))]),
                offer(&[(SERVER_NO_CONTEXT_TAKEOVER, None), (SERVER_MAX_WINDOW_BITS, Some("10"))]),
                offer(&[]),
            ];
            assert_eq!(
                config.accept(&offers).unwrap().to_string(),
                "permessage-deflate; server_no_context_takeover; server_max_window_bits=10"
            );
            assert_eq!(config.accept(&offers[..2]), None);
            assert_eq!(config.accept(&[ExtensionOffer::new("x-other")]), None);
        }

        #[test]
        fn server_asks_for_a_smaller_client_window_only_when_allowed() {
            let config = DeflateConfig {
                server_max_window_bits: 10,
                client_max_window_bits: 10,
                ..DeflateConfig::default()
            };
            assert_eq!(
                config
                    .accept(&[offer(&[(CLIENT_MAX_WINDOW_BITS, None)])])
                    .unwrap()
                    .to_string(),
                "permessage-deflate; server_max_window_bits=10; client_max_window_bits=10"
            );
            assert_eq!(
                config
                    .accept(&[offer(&[(CLIENT_MAX_WINDOW_BITS, Some("9"))])])
                    .unwrap()
                    .to_string(),
                "permessage-deflate; server_max_window_bits=10; client_max_window_bits=9"
            );
            assert_eq!(
                config.accept(&[offer(&[])]).unwrap().to_string(),
                "permessage-deflate; server_max_window_bits=10"
            );
        }

        #[test]
        fn client_checks_the_answer() {
            let config = DeflateConfig {
                server_max_window_bits: 12,
                client_max_window_bits: 11,
                ..DeflateConfig::default()
            };
            assert_eq!(
                config.check_answer(&offer(&[(SERVER_MAX_WINDOW_BITS, Some("12"))])),
                Ok(())
            );
            assert_eq!(
                config.check_answer(&offer(&[
                    (SERVER_MAX_WINDOW_BITS, Some("9")),
                    (CLIENT_MAX_WINDOW_BITS, Some("8"))
                ])),
                Ok(())
            );
            for bad in [
                vec![],
                vec![(SERVER_MAX_WINDOW_BITS, Some("13"))],
                vec![
                    (SERVER_MAX_WINDOW_BITS, Some("12")),
                    (CLIENT_MAX_WINDOW_BITS, Some("12")),
                ],
                vec![(SERVER_MAX_WINDOW_BITS, Some("12")), (CLIENT_MAX_WINDOW_BITS, None)],
                vec![(SERVER_MAX_WINDOW_BITS, Some("12")), ("x", None)],
            ] {
                assert!(config.check_answer(&offer(&bad)).is_err(), "{bad:?}");
            }
        }

        #[test]
        fn client_told_to_use_8_bits_sends_uncompressed() {
            let answer = offer(&[(CLIENT_MAX_WINDOW_BITS, Some("8"))]);
            let mut c = PerMessageDeflate::new(Role::Client, &answer, &DeflateConfig::default()).unwrap();
            assert_eq!(c.encode(DataKind::Text, &[b'a'; 1000]).unwrap(), None);
        }

        #[test]
        fn invalid_local_configuration_is_refused() {
            for config in [
                DeflateConfig {
                    server_max_window_bits: 8,
                    ..DeflateConfig::default()
                },
                DeflateConfig {
                    client_max_window_bits: 16,
                    ..DeflateConfig::default()
                },
                DeflateConfig {
                    level: 10,
                    ..DeflateConfig::default()
                },
            ] {
                assert!(config.validate().is_err(), "{config:?}");
            }
        }
    }

    #[test]
    fn low_memory_releases_state_between_messages() {
        let answer = DeflateConfig::low_memory()
            .accept(&[DeflateConfig::low_memory().offer()])
            .unwrap();
        assert_eq!(
            answer.to_string(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=10; client_max_window_bits=10"
        );
        let mut server = codec(Role::Server, &answer, DeflateConfig::low_memory());
        let mut client = codec(Role::Client, &answer, DeflateConfig::low_memory());
        for _ in 0..3 {
            let wire = compress(&mut server, &[b'x'; 500]);
            assert!(server.deflate.is_none(), "compressor freed after the message");
            assert_eq!(decompress(&mut client, &wire, 1000).unwrap(), [b'x'; 500]);
            assert!(client.inflate.is_none(), "decompressor freed after the message");
        }
    }

    #[test]
    fn threshold_leaves_small_messages_alone() {
        let mut c = PerMessageDeflate::new(Role::Server, &offer(&[]), &DeflateConfig::default()).unwrap();
        assert_eq!(c.encode(DataKind::Text, &[b'a'; 63]).unwrap(), None);
        assert!(c.encode(DataKind::Text, &[b'a'; 64]).unwrap().is_some());
    }

    #[test]
    fn zip_bomb_stops_at_the_limit() {
        let mut c = codec(
            Role::Server,
            &offer(&[]),
            DeflateConfig {
                level: 9,
                ..DeflateConfig::default()
            },
        );
        let bomb = compress(&mut c, &vec![0u8; 16 << 20]);
        assert!(bomb.len() < 64 * 1024, "{}", bomb.len());
        let mut d = codec(Role::Client, &offer(&[]), DeflateConfig::default());
        let mut out = BytesMut::new();
        assert_eq!(d.decode(&bomb, true, &mut out, 1 << 20), Err(DecodeError::TooLarge));
        assert!(out.len() <= (1 << 20) + 1, "stopped at {} bytes", out.len());
        // The buffer grows by doubling, so at worst twice the limit is reserved.
        assert!(
            out.capacity() <= 2 * ((1 << 20) + INFLATE_STEP),
            "reserved {} bytes",
            out.capacity()
        );
    }

    #[test]
    fn empty_message_after_another_with_context_takeover() {
        // zlib writes nothing for a sync flush right after another one.
        let mut server = codec(Role::Server, &offer(&[]), DeflateConfig::default());
        let mut client = codec(Role::Client, &offer(&[]), DeflateConfig::default());
        for message in [&b"hello"[..], b"", b"", b"hello"] {
            let wire = compress(&mut server, message);
            assert!(!wire.is_empty());
            assert_eq!(decompress(&mut client, &wire, 100).unwrap(), message);
        }
    }

    #[test]
    fn corrupt_data_is_an_error() {
        let mut d = codec(Role::Client, &offer(&[]), DeflateConfig::default());
        assert!(matches!(
            decompress(&mut d, &[0xff, 0xff, 0xff, 0xff], 100),
            Err(DecodeError::Invalid(_))
        ));
    }

    proptest! {
        /// Any messages, any windows, with and without context takeover,
        /// decoded in any pieces: the round trip is exact.
        #[test]
        fn round_trip(
            messages in proptest::collection::vec(
                prop_oneof![
                    proptest::collection::vec(any::<u8>(), 0..3000),
                    "[a-c ]{0,4000}".prop_map(String::into_bytes),
                ],
                1..6,
            ),
            server_bits in 9u8..=15,
            client_bits in 9u8..=15,
            server_nct in any::<bool>(),
            level in 0u8..=9,
            piece in 1usize..200,
        ) {
            let answer = {
                let mut a = offer(&[(SERVER_MAX_WINDOW_BITS, Some(&server_bits.to_string())), (CLIENT_MAX_WINDOW_BITS, Some(&client_bits.to_string()))]);
                if server_nct { a = a.with_param(SERVER_NO_CONTEXT_TAKEOVER, None); }
                a
            };
            let config = DeflateConfig { level, ..DeflateConfig::default() };
            let mut server = codec(Role::Server, &answer, config.clone());
            let mut client = codec(Role::Client, &answer, config);
            for message in &messages {
                let wire = compress(&mut server, message);
                let mut out = BytesMut::new();
                let chunks: Vec<&[u8]> = wire.chunks(piece).collect();
                if chunks.is_empty() {
                    client.decode(&[], true, &mut out, usize::MAX / 2).unwrap();
                }
                for (i, chunk) in chunks.iter().enumerate() {
                    client.decode(chunk, i + 1 == chunks.len(), &mut out, usize::MAX / 2).unwrap();
                }
                prop_assert_eq!(&out[..], &message[..]);
            }
        }
    }
}
