//! Header helpers: the accept key, token lists, and the
//! `Sec-WebSocket-Extensions` grammar (RFC 6455 section 9.1).

use core::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use http::header::{AsHeaderName, HeaderMap, HeaderName};
use sha1::{Digest as _, Sha1};

/// The GUID appended to `Sec-WebSocket-Key` before hashing (RFC 6455
/// section 1.3, section 4.2.2 item 5.4).
pub const ACCEPT_GUID: &[u8; 36] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// One extension of a `Sec-WebSocket-Extensions` header (RFC 6455 section
/// 9.1): its name and its parameters, in order.
///
/// A client offers a list of these; a server answers with the ones it
/// accepts. [`Display`](fmt::Display) writes one in header form and
/// [`ExtensionOffer::format_list`] a whole header value;
/// [`ExtensionOffer::parse_list`] reads one.
///
/// ```
/// use tether_proto::handshake::ExtensionOffer;
///
/// let offers = ExtensionOffer::parse_list("permessage-deflate; client_max_window_bits, x-foo; a=\"1\"").unwrap();
/// assert_eq!(offers[0].name, "permessage-deflate");
/// assert_eq!(offers[0].params, [("client_max_window_bits".to_owned(), None)]);
/// assert_eq!(offers[1].params, [("a".to_owned(), Some("1".to_owned()))]);
/// assert_eq!(ExtensionOffer::format_list(&offers), "permessage-deflate; client_max_window_bits, x-foo; a=1");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ExtensionOffer {
    /// The extension's name, a token (for example `permessage-deflate`).
    pub name: String,
    /// The parameters: a token name and, optionally, a value that is a token
    /// once unquoted.
    pub params: Vec<(String, Option<String>)>,
}

/// A `Sec-WebSocket-Extensions` header value that does not follow the
/// grammar of RFC 6455 section 9.1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionHeaderError {
    position: usize,
    expected: &'static str,
}

impl ExtensionOffer {
    /// An offer of `name` with no parameters.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            params: Vec::new(),
        }
    }

    /// Adds a parameter, with or without a value.
    #[must_use]
    pub fn with_param(mut self, name: impl Into<String>, value: Option<&str>) -> Self {
        self.params.push((name.into(), value.map(str::to_owned)));
        self
    }

    /// Parses a `Sec-WebSocket-Extensions` header value:
    ///
    /// ```text
    /// extension-list = 1#extension
    /// extension      = extension-token *( ";" extension-param )
    /// extension-param = token [ "=" (token | quoted-string) ]
    /// ```
    ///
    /// Whitespace around separators is allowed and empty list elements are
    /// skipped (RFC 9110 section 5.6.1). A quoted value must be a token once
    /// unescaped (RFC 6455 section 9.1).
    pub fn parse_list(value: &str) -> Result<Vec<Self>, ExtensionHeaderError> {
        let mut offers = Vec::new();
        parse_extension_list(value.as_bytes(), &mut offers)?;
        Ok(offers)
    }

    /// Writes `offers` as a `Sec-WebSocket-Extensions` header value, the
    /// inverse of [`parse_list`](Self::parse_list) for valid offers.
    pub fn format_list(offers: &[Self]) -> String {
        let mut out = String::new();
        for (i, offer) in offers.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            out.push_str(&offer.to_string());
        }
        out
    }

    /// The value of parameter `name`: `None` if absent, `Some(None)` if
    /// present without a value. Parameter names compare ASCII
    /// case-insensitively.
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref())
    }

    /// Checks that the offer can be written in a header: the name and
    /// parameter names are tokens, and so are the values.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if !is_token(&self.name) {
            return Err(format!("extension name {:?} is not a token", self.name));
        }
        for (name, value) in &self.params {
            if !is_token(name) {
                return Err(format!(
                    "parameter name {name:?} of extension {} is not a token",
                    self.name
                ));
            }
            if let Some(value) = value {
                if !is_token(value) {
                    return Err(format!("value {value:?} of parameter {name} is not a token"));
                }
            }
        }
        Ok(())
    }
}

impl fmt::Display for ExtensionOffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        for (name, value) in &self.params {
            write!(f, "; {name}")?;
            match value {
                Some(value) if is_token(value) => write!(f, "={value}")?,
                Some(value) => {
                    // Not valid in this header (section 9.1), but written as
                    // a quoted-string rather than silently dropped.
                    f.write_str("=\"")?;
                    for c in value.chars() {
                        if c == '"' || c == '\\' {
                            f.write_str("\\")?;
                        }
                        write!(f, "{c}")?;
                    }
                    f.write_str("\"")?;
                }
                None => {}
            }
        }
        Ok(())
    }
}

impl ExtensionHeaderError {
    /// Byte offset in the header value where parsing stopped.
    pub fn position(&self) -> usize {
        self.position
    }
}

impl fmt::Display for ExtensionHeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid Sec-WebSocket-Extensions header: expected {} at byte {}",
            self.expected, self.position
        )
    }
}

impl std::error::Error for ExtensionHeaderError {}

/// The `Sec-WebSocket-Accept` value for a `Sec-WebSocket-Key` (RFC 6455
/// section 4.2.2 item 5.4): base64(SHA-1(key ++ GUID)).
///
/// ```
/// assert_eq!(tether_proto::handshake::accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
/// ```
pub fn accept_key(key: &[u8]) -> String {
    let mut sha1 = Sha1::new();
    sha1.update(key);
    sha1.update(ACCEPT_GUID);
    BASE64.encode(sha1.finalize())
}

/// Parses every `Sec-WebSocket-Extensions` line of `headers` into one list.
pub(crate) fn extension_offers(headers: &HeaderMap) -> Result<Vec<ExtensionOffer>, ExtensionHeaderError> {
    let mut offers = Vec::new();
    for value in headers.get_all(http::header::SEC_WEBSOCKET_EXTENSIONS) {
        parse_extension_list(value.as_bytes(), &mut offers)?;
    }
    Ok(offers)
}

/// The elements of the comma-separated lists in every `name` line of
/// `headers`, trimmed, empty elements skipped (RFC 9110 section 5.6.1).
pub(crate) fn list_elements(headers: &HeaderMap, name: impl AsHeaderName) -> impl Iterator<Item = &[u8]> {
    headers
        .get_all(name)
        .into_iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b',').map(trim_ows))
        .filter(|e| !e.is_empty())
}

/// Whether the lists in the `name` lines contain `token`, compared ASCII
/// case-insensitively (`Connection: keep-alive, Upgrade` contains `upgrade`).
pub(crate) fn has_token(headers: &HeaderMap, name: impl AsHeaderName, token: &str) -> bool {
    list_elements(headers, name).any(|e| e.eq_ignore_ascii_case(token.as_bytes()))
}

/// The value of a header that must appear at most once, as text; `Ok(None)`
/// if absent.
pub(crate) fn single_value<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
    display_name: &'static str,
) -> Result<Option<&'a str>, super::HandshakeError> {
    let mut values = headers.get_all(name).into_iter();
    let Some(value) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(super::HandshakeError::InvalidHeader {
            name: display_name,
            reason: "it appears more than once",
        });
    }
    match value.to_str() {
        Ok(s) => Ok(Some(s.trim_matches([' ', '\t']))),
        Err(_) => Err(super::HandshakeError::InvalidHeader {
            name: display_name,
            reason: "it is not ASCII",
        }),
    }
}

/// Whether `s` is a non-empty `token` (RFC 9110 section 5.6.2).
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_tchar)
}

/// Writes `name` with the usual capitalisation (`Sec-WebSocket-Accept`,
/// `Set-Cookie`): header names are case-insensitive, but some peers are not.
pub(crate) fn write_header_name(out: &mut Vec<u8>, name: &HeaderName) {
    let known = match name.as_str() {
        "sec-websocket-key" => Some("Sec-WebSocket-Key"),
        "sec-websocket-accept" => Some("Sec-WebSocket-Accept"),
        "sec-websocket-version" => Some("Sec-WebSocket-Version"),
        "sec-websocket-protocol" => Some("Sec-WebSocket-Protocol"),
        "sec-websocket-extensions" => Some("Sec-WebSocket-Extensions"),
        "www-authenticate" => Some("WWW-Authenticate"),
        _ => None,
    };
    if let Some(known) = known {
        out.extend_from_slice(known.as_bytes());
        return;
    }
    let mut upper = true;
    for &b in name.as_str().as_bytes() {
        out.push(if upper { b.to_ascii_uppercase() } else { b });
        upper = b == b'-';
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if !is_ows(*first) {
            break;
        }
        s = rest;
    }
    while let [rest @ .., last] = s {
        if !is_ows(*last) {
            break;
        }
        s = rest;
    }
    s
}

/// A cursor over one header value.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_ows(&mut self) {
        while self.peek().is_some_and(is_ows) {
            self.pos += 1;
        }
    }

    fn error(&self, expected: &'static str) -> ExtensionHeaderError {
        ExtensionHeaderError {
            position: self.pos,
            expected,
        }
    }

    fn token(&mut self, expected: &'static str) -> Result<String, ExtensionHeaderError> {
        let start = self.pos;
        while self.peek().is_some_and(is_tchar) {
            self.pos += 1;
        }
        let token = self.bytes.get(start..self.pos).unwrap_or_default();
        if token.is_empty() {
            return Err(self.error(expected));
        }
        // tchar is ASCII, so every byte maps to the same char.
        Ok(token.iter().map(|&b| char::from(b)).collect())
    }

    /// A quoted-string (RFC 9110 section 5.6.4), unescaped; the cursor is on
    /// the opening quote.
    fn quoted_string(&mut self) -> Result<String, ExtensionHeaderError> {
        let start = self.pos;
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    break;
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(b) if b == b'\t' || (b' '..=b'~').contains(&b) => out.push(char::from(b)),
                        _ => return Err(self.error("an escaped character")),
                    }
                    self.pos += 1;
                }
                Some(b) if b == b'\t' || (b' '..=b'~').contains(&b) => {
                    out.push(char::from(b));
                    self.pos += 1;
                }
                _ => return Err(self.error("a closing quote")),
            }
        }
        // RFC 6455 section 9.1: the unescaped value must be a token.
        if !is_token(&out) {
            return Err(ExtensionHeaderError {
                position: start,
                expected: "a quoted value that is a token",
            });
        }
        Ok(out)
    }
}

/// Parses one header value of the section 9.1 grammar into `offers`.
fn parse_extension_list(bytes: &[u8], offers: &mut Vec<ExtensionOffer>) -> Result<(), ExtensionHeaderError> {
    let mut c = Cursor { bytes, pos: 0 };
    loop {
        // Skip empty list elements.
        c.skip_ows();
        while c.peek() == Some(b',') {
            c.pos += 1;
            c.skip_ows();
        }
        if c.peek().is_none() {
            return Ok(());
        }
        let mut offer = ExtensionOffer::new(c.token("an extension name")?);
        loop {
            c.skip_ows();
            if c.peek() != Some(b';') {
                break;
            }
            c.pos += 1;
            c.skip_ows();
            let name = c.token("a parameter name")?;
            c.skip_ows();
            let value = if c.peek() == Some(b'=') {
                c.pos += 1;
                c.skip_ows();
                Some(if c.peek() == Some(b'"') {
                    c.quoted_string()?
                } else {
                    c.token("a parameter value")?
                })
            } else {
                None
            };
            offer.params.push((name, value));
        }
        offers.push(offer);
        match c.peek() {
            None => return Ok(()),
            Some(b',') => c.pos += 1,
            Some(_) => return Err(c.error("\",\", \";\" or the end of the header")),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use http::HeaderValue;
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn rfc6455_4_2_2_accept_key_example() {
        assert_eq!(accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn rfc6455_4_2_1_token_lists_combine_lines() {
        let mut headers = HeaderMap::new();
        headers.append(
            http::header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert!(has_token(&headers, http::header::CONNECTION, "upgrade"));
        assert!(has_token(&headers, http::header::CONNECTION, "KEEP-ALIVE"));
        assert!(!has_token(&headers, http::header::CONNECTION, "close"));

        let mut headers = HeaderMap::new();
        headers.append(http::header::CONNECTION, HeaderValue::from_static("keep-alive"));
        headers.append(http::header::CONNECTION, HeaderValue::from_static(" ,upgrade\t"));
        assert!(has_token(&headers, http::header::CONNECTION, "upgrade"));
        assert!(!has_token(&headers, http::header::CONNECTION, "upgrad"));
        assert_eq!(list_elements(&headers, http::header::CONNECTION).count(), 2);
    }

    #[test]
    fn rfc6455_9_1_extension_grammar() {
        let offers = ExtensionOffer::parse_list(
            "permessage-deflate ; client_max_window_bits ; server_max_window_bits = 10 ,, \
             permessage-deflate;client_max_window_bits=\"15\", x-webkit",
        )
        .unwrap();
        assert_eq!(
            offers,
            [
                ExtensionOffer::new("permessage-deflate")
                    .with_param("client_max_window_bits", None)
                    .with_param("server_max_window_bits", Some("10")),
                ExtensionOffer::new("permessage-deflate").with_param("client_max_window_bits", Some("15")),
                ExtensionOffer::new("x-webkit"),
            ]
        );
        assert_eq!(offers[0].param("SERVER_max_window_bits"), Some(Some("10")));
        assert_eq!(offers[0].param("client_max_window_bits"), Some(None));
        assert_eq!(offers[0].param("nope"), None);
        assert_eq!(ExtensionOffer::parse_list("").unwrap(), []);
        assert_eq!(ExtensionOffer::parse_list(" , ").unwrap(), []);
        // Escapes inside quoted values unescape to a token.
        assert_eq!(
            ExtensionOffer::parse_list("a; b=\"\\1\\0\"").unwrap()[0].param("b"),
            Some(Some("10"))
        );
    }

    #[test]
    fn rfc6455_9_1_malformed_extension_headers() {
        for (bad, position) in [
            ("a;", 2),
            ("a; =1", 3),
            ("a; b=", 5),
            ("a; b=\"1", 7),
            ("a; b=\"1 2\"", 5),
            ("a; b=\"\"", 5),
            ("a b", 2),
            ("=a", 0),
            ("a; b=1=2", 6),
            ("a; b=@", 5),
            ("a, \"b\"", 3),
            ("a; b=\"\\", 7),
        ] {
            let e = ExtensionOffer::parse_list(bad).unwrap_err();
            assert_eq!(e.position(), position, "{bad:?}: {e}");
        }
        // Obs-text in a header value is an error, not a panic.
        let mut headers = HeaderMap::new();
        headers.append(
            http::header::SEC_WEBSOCKET_EXTENSIONS,
            HeaderValue::from_bytes(b"a; b=\"\xff\"").unwrap(),
        );
        assert!(extension_offers(&headers).is_err());
    }

    #[test]
    fn rfc6455_9_1_extension_lines_combine() {
        let mut headers = HeaderMap::new();
        headers.append(http::header::SEC_WEBSOCKET_EXTENSIONS, HeaderValue::from_static("a; x"));
        headers.append(http::header::SEC_WEBSOCKET_EXTENSIONS, HeaderValue::from_static("b"));
        let offers = extension_offers(&headers).unwrap();
        assert_eq!(
            offers,
            [ExtensionOffer::new("a").with_param("x", None), ExtensionOffer::new("b")]
        );
    }

    #[test]
    fn invalid_offers_do_not_validate() {
        assert!(ExtensionOffer::new("a b").validate().is_err());
        assert!(ExtensionOffer::new("").validate().is_err());
        assert!(ExtensionOffer::new("a")
            .with_param("b\r\nX-Evil", None)
            .validate()
            .is_err());
        assert!(ExtensionOffer::new("a")
            .with_param("b", Some("1 2"))
            .validate()
            .is_err());
        assert!(ExtensionOffer::new("a").with_param("b", Some("1")).validate().is_ok());
        // Display still writes something parseable-looking for invalid values.
        assert_eq!(
            ExtensionOffer::new("a").with_param("b", Some("x\"y")).to_string(),
            "a; b=\"x\\\"y\""
        );
    }

    #[test]
    fn header_names_are_capitalised() {
        let mut out = Vec::new();
        write_header_name(&mut out, &http::header::SEC_WEBSOCKET_ACCEPT);
        out.push(b' ');
        write_header_name(&mut out, &http::header::SET_COOKIE);
        out.push(b' ');
        write_header_name(&mut out, &HeaderName::from_static("x-a-b"));
        assert_eq!(out, b"Sec-WebSocket-Accept Set-Cookie X-A-B");
    }

    fn token() -> impl Strategy<Value = String> {
        "[!#$%&'*+.^_`|~0-9A-Za-z-]{1,12}"
    }

    fn offer() -> impl Strategy<Value = ExtensionOffer> {
        (
            token(),
            proptest::collection::vec((token(), proptest::option::of(token())), 0..4),
        )
            .prop_map(|(name, params)| ExtensionOffer { name, params })
    }

    proptest! {
        #[test]
        fn rfc6455_9_1_extension_round_trip(offers in proptest::collection::vec(offer(), 0..4)) {
            let formatted = ExtensionOffer::format_list(&offers);
            prop_assert_eq!(ExtensionOffer::parse_list(&formatted).unwrap(), offers);
        }

        #[test]
        fn rfc6455_9_1_parse_never_panics(s in "[ -~\t]{0,40}") {
            if let Ok(offers) = ExtensionOffer::parse_list(&s) {
                // Whatever parses formats into something that parses the same.
                let formatted = ExtensionOffer::format_list(&offers);
                prop_assert_eq!(ExtensionOffer::parse_list(&formatted).unwrap(), offers);
            }
        }
    }
}
