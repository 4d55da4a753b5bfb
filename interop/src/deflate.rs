//! permessage-deflate settings of each side, what RFC 7692 says they agree
//! on, and what the wire shows.

use tether_tokio::tether_proto::handshake::ExtensionOffer;
use tether_tokio::DeflateConfig;

/// One side's permessage-deflate settings, in the terms of RFC 7692 section
/// 7.1. `None` window bits: the library's default (no parameter for the
/// peers, 15 for tether). As a query parameter (`deflate=`):
/// `snct,cnct,smwb=N,cmwb=N`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Params {
    /// `server_no_context_takeover`.
    pub snct: bool,
    /// `client_no_context_takeover`.
    pub cnct: bool,
    /// `server_max_window_bits`.
    pub smwb: Option<u8>,
    /// `client_max_window_bits`.
    pub cmwb: Option<u8>,
}

impl Params {
    /// Every combination of the two flags and of the two window sizes among
    /// default, 9 and 15: 36.
    pub fn peer_matrix() -> Vec<Self> {
        Self::matrix(&[None, Some(9), Some(15)])
    }

    /// The same for tether, whose default window is 15: 16.
    pub fn tether_matrix() -> Vec<Self> {
        Self::matrix(&[Some(9), Some(15)])
    }

    fn matrix(windows: &[Option<u8>]) -> Vec<Self> {
        let mut all = Vec::new();
        for snct in [false, true] {
            for cnct in [false, true] {
                for &smwb in windows {
                    for &cmwb in windows {
                        all.push(Self { snct, cnct, smwb, cmwb });
                    }
                }
            }
        }
        all
    }

    /// The `deflate=` query value.
    pub fn spec(&self) -> String {
        let mut items = Vec::new();
        if self.snct {
            items.push("snct".to_owned());
        }
        if self.cnct {
            items.push("cnct".to_owned());
        }
        if let Some(bits) = self.smwb {
            items.push(format!("smwb={bits}"));
        }
        if let Some(bits) = self.cmwb {
            items.push(format!("cmwb={bits}"));
        }
        items.join(",")
    }

    /// tether's configuration for these settings; everything compressed
    /// (threshold 0).
    pub fn tether_config(&self) -> DeflateConfig {
        let mut config = DeflateConfig::default();
        config.server_no_context_takeover = self.snct;
        config.client_no_context_takeover = self.cnct;
        config.server_max_window_bits = self.smwb.unwrap_or(15);
        config.client_max_window_bits = self.cmwb.unwrap_or(15);
        config.threshold = 0;
        config
    }

    /// What a client with these settings offers. tether offers window bits
    /// only below 15 and always allows `client_max_window_bits`; so do the
    /// peers by default (websockets' `client_max_window_bits=True`, ws'
    /// `clientMaxWindowBits` unset).
    pub fn offer(&self, tether: bool) -> Offer {
        let below_15 = |bits: Option<u8>| bits.filter(|&b| b < 15);
        Offer {
            snct: self.snct,
            cnct: self.cnct,
            smwb: if tether { below_15(self.smwb) } else { self.smwb },
            cmwb: Some(if tether { below_15(self.cmwb) } else { self.cmwb }),
        }
    }
}

/// A client's offer: `cmwb` is `None` when not offered, `Some(None)` when
/// offered without a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offer {
    /// `server_no_context_takeover`.
    pub snct: bool,
    /// `client_no_context_takeover`.
    pub cnct: bool,
    /// `server_max_window_bits`.
    pub smwb: Option<u8>,
    /// `client_max_window_bits`.
    pub cmwb: Option<Option<u8>>,
}

/// What both ends run with after the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    /// The server compresses each message on its own.
    pub server_no_context_takeover: bool,
    /// The client compresses each message on its own.
    pub client_no_context_takeover: bool,
    /// The largest window of the server's compressor.
    pub server_max_window_bits: u8,
    /// The largest window of the client's compressor.
    pub client_max_window_bits: u8,
}

impl Agreed {
    /// What a server configured with `server` answers to `offer` (RFC 7692
    /// section 7.1: a flag either side asks for holds; a window is the
    /// smaller of the two limits; the client's window is limited only if
    /// the client allowed it).
    pub fn expected(offer: Offer, server: Params) -> Self {
        Self {
            server_no_context_takeover: offer.snct || server.snct,
            client_no_context_takeover: offer.cnct || server.cnct,
            server_max_window_bits: offer.smwb.unwrap_or(15).min(server.smwb.unwrap_or(15)),
            client_max_window_bits: match offer.cmwb {
                None => 15,
                Some(allowed) => allowed.unwrap_or(15).min(server.cmwb.unwrap_or(15)),
            },
        }
    }

    /// From the `Sec-WebSocket-Extensions` of a 101 response.
    pub fn from_header(header: &str) -> Result<Self, String> {
        let offers = ExtensionOffer::parse_list(header).map_err(|e| format!("bad extension header {header:?}: {e}"))?;
        let [offer] = offers.as_slice() else {
            return Err(format!("expected exactly one extension, got {header:?}"));
        };
        if !offer.name.eq_ignore_ascii_case("permessage-deflate") {
            return Err(format!("expected permessage-deflate, got {header:?}"));
        }
        let bits = |name: &str| -> Result<u8, String> {
            match offer.param(name) {
                None => Ok(15),
                Some(Some(value)) => value
                    .trim_matches('"')
                    .parse()
                    .map_err(|_| format!("bad {name} in {header:?}")),
                Some(None) => Err(format!("{name} without a value in a response: {header:?}")),
            }
        };
        Ok(Self {
            server_no_context_takeover: offer.param("server_no_context_takeover").is_some(),
            client_no_context_takeover: offer.param("client_no_context_takeover").is_some(),
            server_max_window_bits: bits("server_max_window_bits")?,
            client_max_window_bits: bits("client_max_window_bits")?,
        })
    }

    /// (no context takeover, window bits) of the compressor of the client
    /// (`true`) or of the server.
    pub fn compressor(&self, client: bool) -> (bool, u8) {
        if client {
            (self.client_no_context_takeover, self.client_max_window_bits)
        } else {
            (self.server_no_context_takeover, self.server_max_window_bits)
        }
    }
}

/// Checks what one compressor put on the wire for the `deflate` scenario's
/// messages (`sizes`: payload length and bytes on the wire, in the order of
/// [`crate::data::deflate_messages`]) against what was agreed for it.
pub fn check_wire(who: &str, sizes: &[(usize, u64)], no_context_takeover: bool, window_bits: u8) -> Result<(), String> {
    let [(_, first), (_, second), (repeat_len, repeat), (text_len, text)] = sizes else {
        return Err(format!("{who}: expected 4 measured messages, got {sizes:?}"));
    };
    let (first, second, repeat, text) = (*first, *second, *repeat, *text);
    let (repeat_len, text_len) = (*repeat_len as u64, *text_len as u64);
    // The same 200 random bytes twice: with context takeover the second is a
    // back-reference of a few bytes; without, it costs as much as the first.
    if no_context_takeover && second * 10 < first * 9 {
        return Err(format!(
            "{who}: no context takeover was agreed, but a repeated message took {second} bytes after {first}"
        ));
    }
    if !no_context_takeover && second * 2 > first {
        return Err(format!(
            "{who}: context takeover was allowed, but a repeated message took {second} bytes after {first}"
        ));
    }
    // 1000 random bytes repeated: a 512-byte window (9 bits) cannot reach the
    // previous copy, a 32 KiB one (15 bits) can.
    if window_bits <= 9 && repeat * 4 < repeat_len * 3 {
        return Err(format!(
            "{who}: window bits {window_bits} were agreed, but {repeat_len} bytes with a period of 1000 took only \
             {repeat} bytes (a larger window was used)"
        ));
    }
    if window_bits >= 11 && repeat * 8 > repeat_len {
        return Err(format!(
            "{who}: window bits {window_bits} were agreed, but {repeat_len} bytes with a period of 1000 took {repeat} bytes"
        ));
    }
    if text * 4 > text_len {
        return Err(format!(
            "{who}: {text_len} bytes of repetitive text took {text} bytes: not compressed"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrices() {
        assert_eq!(Params::peer_matrix().len(), 36);
        assert_eq!(Params::tether_matrix().len(), 16);
        let p = Params {
            snct: true,
            cnct: false,
            smwb: Some(9),
            cmwb: None,
        };
        assert_eq!(p.spec(), "snct,smwb=9");
    }

    #[test]
    fn agreement() {
        let header = "permessage-deflate; server_no_context_takeover; client_max_window_bits=9";
        let agreed = Agreed::from_header(header).unwrap();
        assert_eq!(agreed.compressor(false), (true, 15));
        assert_eq!(agreed.compressor(true), (false, 9));
        let offer = Params::default().offer(true);
        let server = Params {
            cmwb: Some(9),
            snct: true,
            ..Params::default()
        };
        assert_eq!(Agreed::expected(offer, server), agreed);
    }
}
