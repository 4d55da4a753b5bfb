//! Transports: what a blocking stream must offer ([`BlockingIo`]), the
//! ones offered here (TCP, Unix sockets, rustls' `StreamOwned`,
//! [`MaybeTlsStream`], [`NoTimeouts`]), and the second read handle that
//! [`split`](crate::WebSocket::split) needs ([`SplitIo`]).

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

/// A blocking transport: `Read + Write` with socket timeouts, so that the
/// core's deadlines (keepalive, idle, close timeouts) can interrupt a read
/// or a write that waits for the peer.
///
/// Implemented for [`TcpStream`], `UnixStream`, rustls'
/// `StreamOwned` over any of them, [`MaybeTlsStream`], and [`NoTimeouts`]
/// (any `Read + Write`, without timers). A read or write that times out
/// must fail with `WouldBlock` or `TimedOut` (what `std::net` does).
pub trait BlockingIo: Read + Write {
    /// Bounds every following read (`SO_RCVTIMEO`); `None` blocks for as
    /// long as it takes. Never called with a zero duration.
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;

    /// Bounds every following write (`SO_SNDTIMEO`).
    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;

    /// Closes the write side: flushes, then TCP FIN (after a TLS
    /// close_notify). The default only flushes.
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.flush()
    }

    /// The local address, where the transport has one of `std::net`'s.
    fn local_addr(&self) -> io::Result<SocketAddr> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the transport has no IP address",
        ))
    }

    /// The peer's address, where the transport has one of `std::net`'s.
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the transport has no IP address",
        ))
    }

    /// What TLS agreed, for a TLS stream (default: `None`).
    #[cfg(feature = "tls")]
    fn tls_info(&self) -> Option<tether_driver::tls::TlsInfo> {
        None
    }
}

/// A transport that a second thread can read while the first writes:
/// what [`WebSocket::split`](crate::WebSocket::split) needs.
pub trait SplitIo: BlockingIo + Sized {
    /// A second handle on the bytes the peer sends (a cloned socket; for
    /// TLS, the raw socket under the TLS session).
    type ReadSide: BlockingIo + Send;

    /// Opens the second handle.
    fn read_side(&self) -> io::Result<Self::ReadSide>;

    /// Turns what the read side delivered into the bytes of the WebSocket
    /// stream: as they are for a plain socket; decrypted by the TLS session
    /// (under the connection's lock) for TLS.
    fn decode<'a>(&mut self, raw: &'a [u8], plain: &'a mut Vec<u8>) -> io::Result<&'a [u8]> {
        let _ = plain;
        Ok(raw)
    }
}

impl BlockingIo for TcpStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        Self::set_read_timeout(self, timeout)
    }

    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        Self::set_write_timeout(self, timeout)
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Self::local_addr(self)
    }

    fn peer_addr(&self) -> io::Result<SocketAddr> {
        Self::peer_addr(self)
    }
}

impl SplitIo for TcpStream {
    type ReadSide = Self;

    fn read_side(&self) -> io::Result<Self> {
        self.try_clone()
    }
}

#[cfg(unix)]
impl BlockingIo for std::os::unix::net::UnixStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        Self::set_read_timeout(self, timeout)
    }

    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        Self::set_write_timeout(self, timeout)
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

#[cfg(unix)]
impl SplitIo for std::os::unix::net::UnixStream {
    type ReadSide = Self;

    fn read_side(&self) -> io::Result<Self> {
        self.try_clone()
    }
}

/// Any `Read + Write` (a serial port, a pipe, an in-memory stream) as a
/// [`BlockingIo`] without timeouts: **timers only fire when data
/// arrives**. A read waits for the peer for as long as it takes, so the
/// keepalive ping, the idle timeout and the close timeout are checked only
/// when a read returns. Prefer a transport with real timeouts where there
/// is one.
#[derive(Debug, Default)]
pub struct NoTimeouts<T>(pub T);

impl<T: Read> Read for NoTimeouts<T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl<T: Write> Write for NoTimeouts<T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl<T: Read + Write> BlockingIo for NoTimeouts<T> {
    fn set_read_timeout(&self, _: Option<Duration>) -> io::Result<()> {
        Ok(())
    }

    fn set_write_timeout(&self, _: Option<Duration>) -> io::Result<()> {
        Ok(())
    }
}

/// The transport of a connection opened with [`connect`](crate::connect):
/// plain TCP for `ws://`, TLS for `wss://`.
#[derive(Debug)]
#[non_exhaustive]
pub enum MaybeTlsStream<S: Read + Write> {
    /// `ws://`.
    Plain(S),
    /// `wss://`, or `ws://` through an `https://` proxy (TLS to the proxy).
    #[cfg(feature = "tls")]
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, S>>),
    /// `wss://` through an `https://` proxy: TLS to the server inside the
    /// TLS session with the proxy.
    #[cfg(feature = "tls")]
    TlsInTls(Box<rustls::StreamOwned<rustls::ClientConnection, Self>>),
}

impl<S: Read + Write> Read for MaybeTlsStream<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Plain(s) => s.read(buf),
            #[cfg(feature = "tls")]
            Self::Tls(s) => s.read(buf),
            #[cfg(feature = "tls")]
            Self::TlsInTls(s) => s.read(buf),
        }
    }
}

impl<S: Read + Write> Write for MaybeTlsStream<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Plain(s) => s.write(buf),
            #[cfg(feature = "tls")]
            Self::Tls(s) => s.write(buf),
            #[cfg(feature = "tls")]
            Self::TlsInTls(s) => s.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Self::Plain(s) => s.write_vectored(bufs),
            #[cfg(feature = "tls")]
            Self::Tls(s) => s.write_vectored(bufs),
            #[cfg(feature = "tls")]
            Self::TlsInTls(s) => s.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Plain(s) => s.flush(),
            #[cfg(feature = "tls")]
            Self::Tls(s) => s.flush(),
            #[cfg(feature = "tls")]
            Self::TlsInTls(s) => s.flush(),
        }
    }
}

impl<S: BlockingIo> BlockingIo for MaybeTlsStream<S> {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.socket().set_read_timeout(timeout)
    }

    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.socket().set_write_timeout(timeout)
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        match self {
            Self::Plain(s) => s.shutdown_write(),
            #[cfg(feature = "tls")]
            Self::Tls(s) => s.shutdown_write(),
            #[cfg(feature = "tls")]
            Self::TlsInTls(s) => s.shutdown_write(),
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket().local_addr()
    }

    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.socket().peer_addr()
    }

    #[cfg(feature = "tls")]
    fn tls_info(&self) -> Option<tether_driver::tls::TlsInfo> {
        match self {
            Self::Plain(s) => s.tls_info(),
            Self::Tls(s) => s.tls_info(),
            Self::TlsInTls(s) => s.tls_info(),
        }
    }
}

impl<S: SplitIo> SplitIo for MaybeTlsStream<S> {
    type ReadSide = S::ReadSide;

    fn read_side(&self) -> io::Result<S::ReadSide> {
        match self {
            Self::Plain(s) => s.read_side(),
            #[cfg(feature = "tls")]
            Self::Tls(s) => s.read_side(),
            #[cfg(feature = "tls")]
            Self::TlsInTls(s) => s.read_side(),
        }
    }

    fn decode<'a>(&mut self, raw: &'a [u8], plain: &'a mut Vec<u8>) -> io::Result<&'a [u8]> {
        match self {
            Self::Plain(s) => s.decode(raw, plain),
            #[cfg(feature = "tls")]
            Self::Tls(s) => s.decode(raw, plain),
            #[cfg(feature = "tls")]
            Self::TlsInTls(s) => s.decode(raw, plain),
        }
    }
}

impl<S: Read + Write> MaybeTlsStream<S> {
    /// The socket under the TLS session, if any.
    pub fn socket(&self) -> &S {
        match self {
            Self::Plain(s) => s,
            #[cfg(feature = "tls")]
            Self::Tls(s) => &s.sock,
            #[cfg(feature = "tls")]
            Self::TlsInTls(s) => s.sock.socket(),
        }
    }
}

#[cfg(feature = "tls")]
mod tls {
    use std::io::{self, Read, Write};
    use std::net::SocketAddr;
    use std::ops::{Deref, DerefMut};
    use std::time::Duration;

    use rustls::{ConnectionCommon, SideData, StreamOwned};

    use super::{BlockingIo, SplitIo};

    impl<C, D, S> BlockingIo for StreamOwned<C, S>
    where
        C: DerefMut + Deref<Target = ConnectionCommon<D>>,
        D: SideData,
        S: BlockingIo,
    {
        fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
            self.sock.set_read_timeout(timeout)
        }

        fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
            self.sock.set_write_timeout(timeout)
        }

        fn shutdown_write(&mut self) -> io::Result<()> {
            self.conn.send_close_notify();
            self.flush()?;
            self.sock.shutdown_write()
        }

        fn local_addr(&self) -> io::Result<SocketAddr> {
            self.sock.local_addr()
        }

        fn peer_addr(&self) -> io::Result<SocketAddr> {
            self.sock.peer_addr()
        }

        fn tls_info(&self) -> Option<tether_driver::tls::TlsInfo> {
            // The SNI name is known on a server only, which this impl cannot
            // tell from a client: none here.
            Some(tether_driver::tls::TlsInfo::from_state(&self.conn, None))
        }
    }

    /// The reader thread reads TLS records from a clone of the raw socket;
    /// the session (shared with the writer, under the lock) decrypts them.
    impl<C, D, S> SplitIo for StreamOwned<C, S>
    where
        C: DerefMut + Deref<Target = ConnectionCommon<D>>,
        D: SideData,
        S: SplitIo,
    {
        type ReadSide = S::ReadSide;

        fn read_side(&self) -> io::Result<S::ReadSide> {
            self.sock.read_side()
        }

        fn decode<'a>(&mut self, raw: &'a [u8], plain: &'a mut Vec<u8>) -> io::Result<&'a [u8]> {
            // What the socket carries: the raw bytes, or (TLS inside an
            // https:// proxy's TLS) what the outer session decrypted.
            let mut outer = Vec::new();
            let mut raw = self.sock.decode(raw, &mut outer)?;
            plain.clear();
            while !raw.is_empty() {
                self.conn.read_tls(&mut raw)?;
                let state = self
                    .conn
                    .process_new_packets()
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                let start = plain.len();
                plain.resize(start + state.plaintext_bytes_to_read(), 0);
                self.conn.reader().read_exact(&mut plain[start..])?;
            }
            Ok(plain)
        }
    }
}
