//! Piece-by-piece receive: an [`AsyncRead`] over one message.

use std::io;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use tether_proto::DataKind;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::driver::{Driver, Incoming, Side};
use crate::split::lock;
use crate::Error;

/// One received message as an [`AsyncRead`]: its payload arrives piece by
/// piece as the peer sends it (with
/// [`Config::stream_threshold`](tether_proto::Config::stream_threshold)
/// set), so a message of any size can be copied to a file or parsed
/// incrementally without holding it whole.
///
/// Reading drives the connection, as receiving does. End of file is the end
/// of the message. If the connection fails in the middle, the read fails
/// with an `io::Error` that wraps the [`Error`]. Dropping the reader early
/// skips the rest of the message.
pub struct MessageReader<'a, S> {
    access: Access<'a, S>,
    kind: DataKind,
    piece: Bytes,
    done: bool,
}

enum Access<'a, S> {
    Owned(&'a mut Driver<S>),
    Shared(&'a Mutex<Driver<S>>),
}

impl<S> std::fmt::Debug for MessageReader<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageReader")
            .field("kind", &self.kind)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl<'a, S> MessageReader<'a, S> {
    pub(crate) fn owned(driver: &'a mut Driver<S>, kind: DataKind, piece: Bytes, done: bool) -> Self {
        Self {
            access: Access::Owned(driver),
            kind,
            piece,
            done,
        }
    }

    pub(crate) fn shared(driver: &'a Mutex<Driver<S>>, kind: DataKind, piece: Bytes, done: bool) -> Self {
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
pub(crate) fn poll_first<S: AsyncRead + AsyncWrite + Unpin>(
    driver: &mut Driver<S>,
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

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for MessageReader<'_, S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.piece.is_empty() {
                let n = this.piece.len().min(buf.remaining());
                buf.put_slice(&this.piece[..n]);
                this.piece.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.done {
                return Poll::Ready(Ok(()));
            }
            let next = match &mut this.access {
                Access::Owned(driver) => driver.poll_incoming(cx, Side::Recv),
                Access::Shared(mutex) => lock(mutex).poll_incoming(cx, Side::Recv),
            };
            match ready!(next) {
                Some(Incoming::Fragment(f)) => {
                    this.piece = f.data;
                    this.done = f.last;
                }
                // The core never puts another message inside a streamed one.
                Some(Incoming::Message(m)) => {
                    this.piece = m.into_bytes();
                    this.done = true;
                }
                Some(Incoming::Ping(_) | Incoming::Pong(_)) => {}
                None => {
                    let error = match &mut this.access {
                        Access::Owned(driver) => driver.take_end(),
                        Access::Shared(mutex) => lock(mutex).take_end(),
                    };
                    this.done = true;
                    return Poll::Ready(Err(match error {
                        Some(e) => e.into(),
                        None => io::Error::new(io::ErrorKind::UnexpectedEof, "the connection closed mid-message"),
                    }));
                }
            }
        }
    }
}

impl<S> Drop for MessageReader<'_, S> {
    fn drop(&mut self) {
        if !self.done {
            match &mut self.access {
                Access::Owned(driver) => driver.skip_message(),
                Access::Shared(mutex) => lock(mutex).skip_message(),
            }
        }
    }
}
