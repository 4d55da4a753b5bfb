//! The few futures the opening handshake needs, written on [`RuntimeIo`]
//! so that every runtime runs the same handshake code.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::pin;
use std::task::Poll;
use std::time::Instant;

use bytes::BytesMut;
use tether_proto::RecvBuf;

use crate::runtime::{Runtime, RuntimeIo, Timer};

/// Writes all of `bytes` and flushes.
pub(crate) async fn write_all<S, R: RuntimeIo<S>>(io: &mut S, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        R::set_deadline(io, None);
        let n = poll_fn(|cx| R::poll_write(io, cx, bytes)).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        bytes = &bytes[n..];
    }
    poll_fn(|cx| R::poll_flush(io, cx)).await
}

/// Writes `bytes`, flushes and shuts the transport down.
pub(crate) async fn write_and_close<S, R: RuntimeIo<S>>(io: &mut S, bytes: &[u8]) -> io::Result<()> {
    write_all::<S, R>(io, bytes).await?;
    poll_fn(|cx| R::poll_shutdown(io, cx)).await
}

/// Reads into `buf` (emptied first) what the transport has, up to its
/// capacity; `None` when `deadline` passed first.
pub(crate) async fn read_until<S, R: RuntimeIo<S>>(
    io: &mut S,
    buf: &mut BytesMut,
    deadline: Option<Instant>,
) -> Option<io::Result<usize>> {
    buf.clear();
    let mut timer = deadline.map(R::timer);
    poll_fn(|cx| {
        if let Some(timer) = &mut timer {
            if timer.poll_expired(cx).is_ready() {
                return Poll::Ready(None);
            }
        }
        R::set_deadline(io, deadline);
        R::poll_read(io, cx, &mut RecvBuf::from(&mut *buf)).map(Some)
    })
    .await
}

/// Runs `future` until `deadline`; `None` if the deadline came first.
pub(crate) async fn with_deadline<R: Runtime, F: Future>(deadline: Option<Instant>, future: F) -> Option<F::Output> {
    let mut future = pin!(future);
    let Some(deadline) = deadline else {
        return Some(future.await);
    };
    let mut timer = R::timer(deadline);
    poll_fn(|cx| {
        if let Poll::Ready(output) = future.as_mut().poll(cx) {
            return Poll::Ready(Some(output));
        }
        if timer.poll_expired(cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}
