//! Transports: plain or TLS, and their addresses.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_io::{AsyncRead, AsyncWrite};
use tether_driver::TransportAddrs;

use crate::FuturesIo;

// Addresses of the transports this crate knows, for
// `WebSocketStream::local_addr` and `peer_addr`: each one's TCP stream's.
// For a transport of your own, implement `TransportAddrs<YourTransport>`
// for `FuturesIo`.

/// A TCP stream's own addresses.
macro_rules! tcp_addrs {
    ($(#[$attr:meta])* $tcp:ty) => {
        $(#[$attr])*
        impl TransportAddrs<$tcp> for FuturesIo {
            fn local_addr(io: &$tcp) -> io::Result<SocketAddr> {
                io.local_addr()
            }

            fn peer_addr(io: &$tcp) -> io::Result<SocketAddr> {
                io.peer_addr()
            }
        }
    };
}

/// A wrapper's addresses: those of the stream it wraps; and what its TLS
/// session agreed, if it has one.
macro_rules! wrapper_addrs {
    ($(#[$attr:meta])* $($wrapper:ident)::+, |$io:ident| $inner:expr, tls: |$t:ident| $tls:expr) => {
        $(#[$attr])*
        impl<S> TransportAddrs<$($wrapper)::+<S>> for FuturesIo
        where
            Self: TransportAddrs<S>,
        {
            fn local_addr($io: &$($wrapper)::+<S>) -> io::Result<SocketAddr> {
                <Self as TransportAddrs<S>>::local_addr($inner)
            }

            fn peer_addr($io: &$($wrapper)::+<S>) -> io::Result<SocketAddr> {
                <Self as TransportAddrs<S>>::peer_addr($inner)
            }

            #[cfg(feature = "tls")]
            fn tls_info($t: &$($wrapper)::+<S>) -> Option<tether_driver::tls::TlsInfo> {
                $tls
            }
        }
    };
}

// async-net's stream is also smol's (`smol::net::TcpStream`).
tcp_addrs!(async_net::TcpStream);

tcp_addrs!(TcpStream);

/// A TCP stream on async-io's reactor (the one smol and async-std run on):
/// `Async<std::net::TcpStream>`, closed as a TCP stream should be. What
/// this crate's clients connect with; for a server, wrap what smol's
/// `Async<TcpListener>` accepts (`TcpStream::from`).
///
/// Lighter than async-net's `TcpStream` (`smol::net::TcpStream`), which
/// works too: that one waits for readiness through owned futures, made
/// again after each read, that register in a list the socket's async-io
/// source allocates (about 0.6 KiB more per idle connection, and more
/// instructions per message; benches/README, thirteenth pass); this one
/// waits through the source's one waker per direction. Unlike a bare
/// `Async<TcpStream>`, whose `poll_close` only flushes, closing it shuts
/// the write side down (a FIN, as async-net's does), so that the driving
/// loop's end of a connection (after the close handshake, a send timeout)
/// reaches the peer before the stream is dropped.
#[derive(Debug)]
pub struct TcpStream(async_io::Async<std::net::TcpStream>);

impl TcpStream {
    /// The socket.
    pub fn get_ref(&self) -> &std::net::TcpStream {
        self.0.get_ref()
    }

    /// async-io's stream.
    pub fn into_inner(self) -> async_io::Async<std::net::TcpStream> {
        self.0
    }

    /// Connects (async-io's non-blocking connect).
    pub async fn connect(addr: SocketAddr) -> io::Result<Self> {
        async_io::Async::<std::net::TcpStream>::connect(addr).await.map(Self)
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().local_addr()
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().peer_addr()
    }
}

impl From<async_io::Async<std::net::TcpStream>> for TcpStream {
    fn from(stream: async_io::Async<std::net::TcpStream>) -> Self {
        Self(stream)
    }
}

impl AsyncRead for TcpStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }

    fn poll_read_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &mut [io::IoSliceMut<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_read_vectored(cx, bufs)
    }
}

impl AsyncWrite for TcpStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.0.get_ref().shutdown(std::net::Shutdown::Write))
    }
}
tcp_addrs!(
    #[cfg(feature = "async-std")]
    async_std::net::TcpStream
);
wrapper_addrs!(MaybeTlsStream, |io| io.tcp(), tls: |io| match io {
    MaybeTlsStream::Plain(_) => None,
    MaybeTlsStream::Tls(s) => Some(tether_driver::tls::TlsInfo::from_client(s.get_ref().1)),
    MaybeTlsStream::TlsInTls(s) => Some(tether_driver::tls::TlsInfo::from_client(s.get_ref().1)),
});
wrapper_addrs!(
    #[cfg(feature = "tls")]
    futures_rustls::client::TlsStream,
    |io| io.get_ref().0,
    tls: |io| Some(tether_driver::tls::TlsInfo::from_client(io.get_ref().1))
);
wrapper_addrs!(
    #[cfg(feature = "tls")]
    futures_rustls::server::TlsStream,
    |io| io.get_ref().0,
    tls: |io| Some(tether_driver::tls::TlsInfo::from_server(io.get_ref().1))
);

/// The transport of a connection opened with [`connect`](crate::connect):
/// plain TCP for `ws://`, TLS for `wss://`.
#[derive(Debug)]
#[non_exhaustive]
pub enum MaybeTlsStream<S> {
    /// `ws://`.
    Plain(S),
    /// `wss://`, or `ws://` through an `https://` proxy (TLS to the proxy).
    #[cfg(feature = "tls")]
    Tls(Box<futures_rustls::client::TlsStream<S>>),
    /// `wss://` through an `https://` proxy: TLS to the server inside the
    /// TLS session with the proxy.
    #[cfg(feature = "tls")]
    TlsInTls(Box<futures_rustls::client::TlsStream<Self>>),
}

/// What both variants are, to forward each call through one `match`.
trait Transport: AsyncRead + AsyncWrite + Unpin {}

impl<T: AsyncRead + AsyncWrite + Unpin> Transport for T {}

impl<S> MaybeTlsStream<S> {
    /// The TCP stream underneath.
    pub fn tcp(&self) -> &S {
        match self {
            Self::Plain(s) => s,
            #[cfg(feature = "tls")]
            Self::Tls(s) => s.get_ref().0,
            #[cfg(feature = "tls")]
            Self::TlsInTls(s) => s.get_ref().0.tcp(),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> MaybeTlsStream<S> {
    /// The variant's stream; one dynamic call per read or write is nothing
    /// beside the system call it makes.
    fn io(self: Pin<&mut Self>) -> Pin<&mut (dyn Transport + '_)> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s),
            #[cfg(feature = "tls")]
            Self::Tls(s) => Pin::new(&mut **s),
            #[cfg(feature = "tls")]
            Self::TlsInTls(s) => Pin::new(&mut **s),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for MaybeTlsStream<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        self.io().poll_read(cx, buf)
    }

    fn poll_read_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &mut [io::IoSliceMut<'_>],
    ) -> Poll<io::Result<usize>> {
        self.io().poll_read_vectored(cx, bufs)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for MaybeTlsStream<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.io().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.io().poll_write_vectored(cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io().poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io().poll_close(cx)
    }
}
