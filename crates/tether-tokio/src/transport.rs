//! Transports: plain or TLS, and their addresses.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Transports that know their local and peer addresses, for
/// [`WebSocketStream::local_addr`](crate::WebSocketStream::local_addr) and
/// [`peer_addr`](crate::WebSocketStream::peer_addr).
pub trait SocketAddrs {
    /// The local address.
    fn local_addr(&self) -> io::Result<SocketAddr>;
    /// The peer's address.
    fn peer_addr(&self) -> io::Result<SocketAddr>;

    /// What TLS agreed, for a TLS stream (default: `None`).
    #[cfg(feature = "tls")]
    fn tls_info(&self) -> Option<tether_driver::tls::TlsInfo> {
        None
    }
}

impl SocketAddrs for TcpStream {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        Self::local_addr(self)
    }

    fn peer_addr(&self) -> io::Result<SocketAddr> {
        Self::peer_addr(self)
    }
}

#[cfg(feature = "tls")]
impl<S: SocketAddrs> SocketAddrs for tokio_rustls::client::TlsStream<S> {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.get_ref().0.local_addr()
    }

    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.get_ref().0.peer_addr()
    }

    fn tls_info(&self) -> Option<tether_driver::tls::TlsInfo> {
        Some(tether_driver::tls::TlsInfo::from_client(self.get_ref().1))
    }
}

#[cfg(feature = "tls")]
impl<S: SocketAddrs> SocketAddrs for tokio_rustls::server::TlsStream<S> {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.get_ref().0.local_addr()
    }

    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.get_ref().0.peer_addr()
    }

    fn tls_info(&self) -> Option<tether_driver::tls::TlsInfo> {
        Some(tether_driver::tls::TlsInfo::from_server(self.get_ref().1))
    }
}

impl<S: SocketAddrs> SocketAddrs for MaybeTlsStream<S> {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Self::Plain(s) => s.local_addr(),
            #[cfg(feature = "tls")]
            Self::Tls(s) => s.local_addr(),
            #[cfg(feature = "tls")]
            Self::TlsInTls(s) => s.local_addr(),
            #[cfg(feature = "http2")]
            Self::Http2(s) => s.local_addr(),
        }
    }

    fn peer_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Self::Plain(s) => s.peer_addr(),
            #[cfg(feature = "tls")]
            Self::Tls(s) => s.peer_addr(),
            #[cfg(feature = "tls")]
            Self::TlsInTls(s) => s.peer_addr(),
            #[cfg(feature = "http2")]
            Self::Http2(s) => s.peer_addr(),
        }
    }

    #[cfg(feature = "tls")]
    fn tls_info(&self) -> Option<tether_driver::tls::TlsInfo> {
        match self {
            Self::Plain(s) => s.tls_info(),
            Self::Tls(s) => s.tls_info(),
            Self::TlsInTls(s) => s.tls_info(),
            #[cfg(feature = "http2")]
            Self::Http2(s) => s.tls_info(),
        }
    }
}

/// The transport of a connection opened with [`connect`](crate::connect):
/// plain TCP for `ws://`, TLS for `wss://`.
#[derive(Debug)]
#[non_exhaustive]
pub enum MaybeTlsStream<S> {
    /// `ws://`.
    Plain(S),
    /// `wss://`, or `ws://` through an `https://` proxy (TLS to the proxy).
    #[cfg(feature = "tls")]
    Tls(Box<tokio_rustls::client::TlsStream<S>>),
    /// `wss://` through an `https://` proxy: TLS to the server inside the
    /// TLS session with the proxy.
    #[cfg(feature = "tls")]
    TlsInTls(Box<tokio_rustls::client::TlsStream<Self>>),
    /// A stream of an HTTP/2 connection (RFC 8441), opened by
    /// [`Http2Connection::open`](crate::http2::Http2Connection::open).
    #[cfg(feature = "http2")]
    Http2(Box<crate::hyper::HyperIo>),
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for MaybeTlsStream<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            #[cfg(feature = "tls")]
            Self::Tls(s) => Pin::new(s).poll_read(cx, buf),
            #[cfg(feature = "tls")]
            Self::TlsInTls(s) => Pin::new(s).poll_read(cx, buf),
            #[cfg(feature = "http2")]
            Self::Http2(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for MaybeTlsStream<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            #[cfg(feature = "tls")]
            Self::Tls(s) => Pin::new(s).poll_write(cx, buf),
            #[cfg(feature = "tls")]
            Self::TlsInTls(s) => Pin::new(s).poll_write(cx, buf),
            #[cfg(feature = "http2")]
            Self::Http2(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            #[cfg(feature = "tls")]
            Self::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            #[cfg(feature = "tls")]
            Self::TlsInTls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            #[cfg(feature = "http2")]
            Self::Http2(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            #[cfg(feature = "tls")]
            Self::Tls(s) => s.is_write_vectored(),
            #[cfg(feature = "tls")]
            Self::TlsInTls(s) => s.is_write_vectored(),
            #[cfg(feature = "http2")]
            Self::Http2(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            #[cfg(feature = "tls")]
            Self::Tls(s) => Pin::new(s).poll_flush(cx),
            #[cfg(feature = "tls")]
            Self::TlsInTls(s) => Pin::new(s).poll_flush(cx),
            #[cfg(feature = "http2")]
            Self::Http2(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            #[cfg(feature = "tls")]
            Self::Tls(s) => Pin::new(s).poll_shutdown(cx),
            #[cfg(feature = "tls")]
            Self::TlsInTls(s) => Pin::new(s).poll_shutdown(cx),
            #[cfg(feature = "http2")]
            Self::Http2(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
