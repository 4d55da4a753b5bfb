//! HTTP/1.1 plumbing shared by the client and the server: buffering a head
//! under a limit, converting httparse's output, writing responses.

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use super::header::write_header_name;
use super::HandshakeError;

/// Accumulates an HTTP head (start line and headers) up to a limit, and
/// tells when it is worth running the parser again.
///
/// Bytes past the limit are never copied: [`fill`](Self::fill) takes what
/// fits and the caller keeps the rest, which is the leftover once the head is
/// complete and an error otherwise.
#[derive(Debug)]
pub(crate) struct HeadBuffer {
    buf: Vec<u8>,
    max_bytes: usize,
    /// A line ended since the last parse: parsing again may progress.
    dirty: bool,
}

impl HeadBuffer {
    pub(crate) fn new(max_bytes: usize) -> Self {
        Self {
            buf: Vec::new(),
            max_bytes,
            dirty: false,
        }
    }

    /// Appends as much of `data` as fits under the limit; returns how many
    /// bytes were taken.
    pub(crate) fn fill(&mut self, data: &[u8]) -> usize {
        let take = self.max_bytes.saturating_sub(self.buf.len()).min(data.len());
        let taken = data.get(..take).unwrap_or_default();
        self.buf.extend_from_slice(taken);
        // httparse only completes (or fails, in all but pathological cases)
        // at the end of a line: parsing on each new line bounds the work to
        // one parse per line, whatever the split of the input.
        self.dirty |= taken.contains(&b'\n');
        take
    }

    /// The buffered bytes, if a line ended since the last call.
    pub(crate) fn parse_candidate(&mut self) -> Option<&[u8]> {
        if !self.dirty {
            return None;
        }
        self.dirty = false;
        Some(&self.buf)
    }

    /// Whether the buffer reached its limit (an incomplete head is then too
    /// large).
    pub(crate) fn is_full(&self) -> bool {
        self.buf.len() >= self.max_bytes
    }

    /// Removes a parsed head of `len` bytes, keeping what follows it.
    pub(crate) fn consume(&mut self, len: usize) {
        self.buf.drain(..len.min(self.buf.len()));
        self.dirty = true;
    }

    /// Takes the bytes after a parsed head of `len` bytes, followed by
    /// `rest` (the part of the last input that was not copied), and empties
    /// the buffer.
    pub(crate) fn take_leftover(&mut self, len: usize, rest: &[u8]) -> Vec<u8> {
        let mut leftover = self.buf.split_off(len.min(self.buf.len()));
        leftover.extend_from_slice(rest);
        self.buf = Vec::new();
        self.dirty = false;
        leftover
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.buf.len()
    }
}

/// Runs `parse` on a fresh array of `max_headers` httparse headers.
pub(crate) fn empty_headers(max_headers: usize) -> Vec<httparse::Header<'static>> {
    vec![httparse::EMPTY_HEADER; max_headers]
}

/// Maps an httparse error to ours.
pub(crate) fn parse_error(e: httparse::Error, max_headers: usize) -> HandshakeError {
    HandshakeError::InvalidHttp(match e {
        httparse::Error::TooManyHeaders => return HandshakeError::TooManyHeaders { limit: max_headers },
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid response status",
        httparse::Error::Token => "invalid token in the start line",
        httparse::Error::Version => "invalid HTTP version",
    })
}

/// Converts parsed headers into a [`HeaderMap`], keeping every line.
pub(crate) fn header_map(headers: &[httparse::Header<'_>]) -> Result<HeaderMap, HandshakeError> {
    let mut map = HeaderMap::try_with_capacity(headers.len())
        .map_err(|_| HandshakeError::TooManyHeaders { limit: headers.len() })?;
    for header in headers {
        let name = HeaderName::from_bytes(header.name.as_bytes())
            .map_err(|_| HandshakeError::InvalidHttp("invalid header name"))?;
        let value =
            HeaderValue::from_bytes(header.value).map_err(|_| HandshakeError::InvalidHttp("invalid header value"))?;
        map.try_append(name, value)
            .map_err(|_| HandshakeError::TooManyHeaders { limit: headers.len() })?;
    }
    Ok(map)
}

/// Writes an HTTP/1.1 response: status line, `headers`, then
/// `Content-Length` and `Connection: close` (unless `headers` has a
/// `Connection` of its own), then `body`.
pub(crate) fn write_response(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + body.len());
    write_status_line(&mut out, status);
    write_headers(&mut out, headers);
    out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    if !headers.contains_key(http::header::CONNECTION) {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// Writes `HTTP/1.1 <code> <reason>\r\n`.
pub(crate) fn write_status_line(out: &mut Vec<u8>, status: StatusCode) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Writes every header line, names capitalised.
pub(crate) fn write_headers(out: &mut Vec<u8>, headers: &HeaderMap) {
    for (name, value) in headers {
        write_header_name(out, name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn head_buffer_never_copies_past_its_limit() {
        let mut head = HeadBuffer::new(8);
        assert_eq!(head.fill(b"GET / HT"), 8);
        assert!(head.is_full());
        assert_eq!(head.fill(b"TP/1.1\r\n"), 0);
        assert_eq!(head.len(), 8);
        assert!(head.parse_candidate().is_none());
    }

    #[test]
    fn head_buffer_leftover() {
        let mut head = HeadBuffer::new(8);
        assert_eq!(head.fill(b"ab\n\ncdefgh"), 8);
        assert_eq!(head.parse_candidate(), Some(&b"ab\n\ncdef"[..]));
        assert_eq!(head.parse_candidate(), None);
        assert_eq!(head.take_leftover(4, b"gh"), b"cdefgh");
        assert_eq!(head.len(), 0);
    }

    #[test]
    fn response_has_length_and_close() {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::SET_COOKIE, HeaderValue::from_static("a=b"));
        let bytes = write_response(StatusCode::NOT_FOUND, &headers, b"nope");
        assert_eq!(
            bytes,
            b"HTTP/1.1 404 Not Found\r\nSet-Cookie: a=b\r\nContent-Length: 4\r\nConnection: close\r\n\r\nnope"
        );
    }
}
