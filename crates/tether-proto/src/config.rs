//! Connection configuration.

use core::time::Duration;

use crate::close::CloseReply;

/// Settings of an open connection: limits, timers, and behaviour.
///
/// Start from [`Config::default`] and change fields:
///
/// ```
/// # use std::time::Duration;
/// let mut config = tether_proto::Config::default();
/// config.max_message_size = 1 << 20;
/// config.ping_interval = Some(Duration::from_secs(30));
/// config.idle_timeout = Some(Duration::from_secs(60));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// Largest payload of a single received frame; a larger one fails the
    /// connection with 1009. Default 16 MiB.
    pub max_frame_size: u64,
    /// Largest received message, after decompression; a larger one fails the
    /// connection with 1009, before the memory is spent. Applies to streamed
    /// messages too. Default 64 MiB.
    pub max_message_size: u64,
    /// `None` (the default): every message is delivered whole, as
    /// [`Event::Message`](crate::Event::Message). `Some(n)`: a message that
    /// reaches `n` bytes is delivered piece by piece as it arrives, as
    /// [`Event::Fragment`](crate::Event::Fragment)s, and never held whole;
    /// `Some(0)` streams every message.
    pub stream_threshold: Option<usize>,
    /// Answer pings with pongs automatically. Default `true`.
    pub auto_pong: bool,
    /// Split outgoing messages into frames of at most this many payload
    /// bytes. Default `None`: one frame per message.
    pub max_send_frame_size: Option<usize>,
    /// Keepalive: while the connection is open, a ping (empty payload) goes
    /// out once this long has passed since the later of the last bytes
    /// received (any frame, or part of one) and the last keepalive ping sent.
    /// So a connection that receives nothing pings once per interval, and
    /// anything received pushes the next ping back by a whole interval.
    ///
    /// `None` or `Some(Duration::ZERO)`: keepalive is off. Default `None` in
    /// the core; the adapters' default is 2 minutes.
    pub ping_interval: Option<Duration>,
    /// Fail the connection when nothing at all has been received for this
    /// long: a close frame 1011 "idle timeout" is offered to the peer, the
    /// transport is closed without waiting, and 1006 is reported locally.
    /// Set it to about twice the ping interval, so that a healthy peer's
    /// pong arrives in time, and a peer that vanished without a FIN is
    /// noticed.
    ///
    /// `None` or `Some(Duration::ZERO)`: no idle timeout. Default `None` in
    /// the core; the adapters' default is 4 minutes.
    pub idle_timeout: Option<Duration>,
    /// Fail the connection when output has waited this long without the
    /// transport taking a byte of it: the peer stopped reading (or the
    /// network stalled) while we had something to send. The clock starts
    /// when the adapter reports a write that would block
    /// ([`Connection::handle_write_blocked`](crate::Connection::handle_write_blocked))
    /// and stops whenever the transport takes bytes, so a slow peer that
    /// keeps reading is never cut off, however large the message. On expiry
    /// the unwritten output is given up, the transport is to be closed at
    /// once (no close frame: the peer does not read), and 1006 is reported
    /// locally with [`CloseCause::SendTimeout`](crate::CloseCause::SendTimeout).
    ///
    /// `None` or `Some(Duration::ZERO)`: no send timeout. Default `None` in
    /// the core; the adapters' default is 30 seconds.
    pub send_timeout: Option<Duration>,
    /// How long to wait for the peer's close frame after sending ours, and
    /// then for the server to close the transport, before closing it anyway.
    /// Default 10 seconds.
    pub close_timeout: Duration,
    /// The answer to a close handshake the peer starts: by default
    /// ([`CloseReply::Echo`]) its own code and reason, echoed; or a code and
    /// reason of the application's ([`CloseReply::with`]).
    pub close_reply: CloseReply,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_frame_size: 16 << 20,
            max_message_size: 64 << 20,
            stream_threshold: None,
            auto_pong: true,
            max_send_frame_size: None,
            ping_interval: None,
            idle_timeout: None,
            send_timeout: None,
            close_timeout: Duration::from_secs(10),
            close_reply: CloseReply::Echo,
        }
    }
}
