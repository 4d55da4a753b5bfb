//! Piece-by-piece receive: a reader over one message (the runtime's
//! `AsyncRead`, with the `tokio-io` or `futures-io` feature).

use std::io;
use std::sync::Mutex;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use tether_proto::DataKind;

use crate::driver::{Driver, Incoming, Side};
use crate::runtime::{Runtime, RuntimeIo};
use crate::split::lock;
use crate::Error;

/// One received message as a byte reader (`tokio::io::AsyncRead` with the
/// `tokio-io` feature, `futures_io::AsyncRead` with `futures-io`, or
/// [`poll_read`](Self::poll_read) for any other runtime): its payload arrives piece by
/// piece as the peer sends it (with
/// [`Config::stream_threshold`](tether_proto::Config::stream_threshold)
/// set), so a message of any size can be copied to a file or parsed
/// incrementally without holding it whole.
///
/// Reading drives the connection, as receiving does. End of file is the end
/// of the message. If the connection fails in the middle, the read fails
/// with an `io::Error` that wraps the [`Error`]. Dropping the reader early
/// skips the rest of the message.
pub struct MessageReader<'a, S, R: Runtime> {
    access: Access<'a, S, R>,
    kind: DataKind,
    piece: Bytes,
    done: bool,
}

enum Access<'a, S, R: Runtime> {
    Owned(&'a mut Driver<S, R>),
    Shared(&'a Mutex<Driver<S, R>>),
}

impl<S, R: Runtime> std::fmt::Debug for MessageReader<'_, S, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageReader")
            .field("kind", &self.kind)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl<'a, S, R: Runtime> MessageReader<'a, S, R> {
    pub(crate) fn owned(driver: &'a mut Driver<S, R>, kind: DataKind, piece: Bytes, done: bool) -> Self {
        Self {
            access: Access::Owned(driver),
            kind,
            piece,
            done,
        }
    }

    pub(crate) fn shared(driver: &'a Mutex<Driver<S, R>>, kind: DataKind, piece: Bytes, done: bool) -> Self {
        Self {
            access: Access::Shared(driver),
            kind,
            piece,
            done,
        }
    }

    /// Text or binary.
    pub fn kind(&self) -> DataKind {
        self.kind
    }

    /// Whether the whole message has arrived (the unread rest is buffered).
    pub fn is_complete(&self) -> bool {
        self.done
    }
}

/// The first piece of a message: its kind, bytes, and whether it is the last.
pub(crate) type FirstPiece = (DataKind, Bytes, bool);

/// The first piece of the next message; `None` at the end of the connection.
pub(crate) fn poll_first<S, R: RuntimeIo<S>>(
    driver: &mut Driver<S, R>,
    cx: &mut Context<'_>,
) -> Poll<Result<Option<FirstPiece>, Error>> {
    // A message that whole-message receive began to reassemble continues here.
    if let Some((kind, bytes)) = driver.take_partial() {
        return Poll::Ready(Ok(Some((kind, bytes, false))));
    }
    loop {
        match ready!(driver.poll_incoming(cx, Side::Recv)) {
            Some(Incoming::Message(m)) => {
                return Poll::Ready(Ok(Some((m.kind(), m.into_bytes(), true))));
            }
            Some(Incoming::Fragment(f)) => return Poll::Ready(Ok(Some((f.kind, f.data, f.last)))),
            Some(Incoming::Ping(_) | Incoming::Pong(_)) => {}
            None => {
                return Poll::Ready(match driver.take_end() {
                    Some(e) => Err(e),
                    None => Ok(None),
                })
            }
        }
    }
}

impl<S, R: RuntimeIo<S>> MessageReader<'_, S, R> {
    /// Reads the next bytes of the message into `buf`; `Ok(0)` at its end
    /// (or when `buf` is empty). Drives the connection while it waits.
    pub fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        ready!(self.poll_piece(cx))?;
        let n = self.piece.len().min(buf.len());
        buf[..n].copy_from_slice(&self.piece[..n]);
        self.piece.advance(n);
        Poll::Ready(Ok(n))
    }

    /// Ready when there are bytes in `piece`, or the message is done.
    fn poll_piece(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if !self.piece.is_empty() || self.done {
                return Poll::Ready(Ok(()));
            }
            let next = match &mut self.access {
                Access::Owned(driver) => driver.poll_incoming(cx, Side::Recv),
                Access::Shared(mutex) => lock(mutex).poll_incoming(cx, Side::Recv),
            };
            match ready!(next) {
                Some(Incoming::Fragment(f)) => {
                    self.piece = f.data;
                    self.done = f.last;
                }
                // The core never puts another message inside a streamed one.
                Some(Incoming::Message(m)) => {
                    self.piece = m.into_bytes();
                    self.done = true;
                }
                Some(Incoming::Ping(_) | Incoming::Pong(_)) => {}
                None => {
                    let error = match &mut self.access {
                        Access::Owned(driver) => driver.take_end(),
                        Access::Shared(mutex) => lock(mutex).take_end(),
                    };
                    self.done = true;
                    return Poll::Ready(Err(match error {
                        Some(e) => e.into(),
                        None => io::Error::new(io::ErrorKind::UnexpectedEof, "the connection closed mid-message"),
                    }));
                }
            }
        }
    }
}

#[cfg(feature = "tokio-io")]
impl<S, R: RuntimeIo<S>> tokio::io::AsyncRead for MessageReader<'_, S, R> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_piece(cx))?;
        let n = this.piece.len().min(buf.remaining());
        buf.put_slice(&this.piece[..n]);
        this.piece.advance(n);
        Poll::Ready(Ok(()))
    }
}

#[cfg(feature = "futures-io")]
impl<S, R: RuntimeIo<S>> futures_io::AsyncRead for MessageReader<'_, S, R> {
    fn poll_read(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        MessageReader::poll_read(self.get_mut(), cx, buf)
    }
}

impl<S, R: Runtime> Drop for MessageReader<'_, S, R> {
    fn drop(&mut self) {
        if !self.done {
            match &mut self.access {
                Access::Owned(driver) => driver.skip_message(),
                Access::Shared(mutex) => lock(mutex).skip_message(),
            }
        }
    }
}
