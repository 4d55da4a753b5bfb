//! The public face of an async shell, written once: the re-exports, the
//! type names for the shell's runtime, and `connect`, `client_over`,
//! `accept`, `accept_with`.

/// Declares, in an async shell's crate root, the API every async shell
/// offers: re-exports of the driving crate's and the core's types, type
/// aliases that fix the runtime (`WebSocketStream<S>`, `ReadHalf<S>`,
/// `WriteHalf<S>`, `ReuniteError<S>`, `MessageReader<'a, S>`, `Server`,
/// `ClientBuilder`, `ClientStream`), and the functions `connect`,
/// `client_over`, `accept` and `accept_with`.
///
/// ```ignore
/// tether_driver::async_shell_api!(runtime: Tokio, client_stream: MaybeTlsStream<tokio::net::TcpStream>);
/// ```
#[macro_export]
macro_rules! async_shell_api {
    (runtime: $rt:ty, client_stream: $stream:ty) => {
        pub use $crate::hub;
        pub use $crate::proxy;
        pub use $crate::tether_proto;
        #[cfg(feature = "deflate")]
        pub use $crate::tether_proto::deflate::{DeflateConfig, DeflateParams};
        pub use $crate::tether_proto::{
            CloseCause, CloseCode, CloseReply, Closed, Config, DataKind, Message, MessageRef, PreparedMessage,
            ProtocolError, Role, SendOptions, State, Stats, Utf8Bytes,
        };
        pub use $crate::{
            Accept, ClientRequest, Error, ErrorKind, HandshakeConfig, HandshakeError, HttpResponse, Received, Reply,
            Request, WebSocketConfig, DEFAULT_CONNECT_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_REDIRECTS,
            DEFAULT_PING_INTERVAL, DEFAULT_READ_BUFFER_SIZE, DEFAULT_SEND_TIMEOUT, DEFAULT_WRITE_BUFFER_LIMIT,
        };

        /// An open WebSocket connection on a transport `S` of this runtime:
        /// a [`Stream`](futures_core::Stream) and [`Sink`](futures_sink::Sink)
        /// of messages, with plain async methods beside. See
        /// [`tether_driver::WebSocketStream`] for every method.
        pub type WebSocketStream<S> = $crate::WebSocketStream<S, $rt>;
        /// The receiving half of a split [`WebSocketStream`].
        pub type ReadHalf<S> = $crate::ReadHalf<S, $rt>;
        /// The sending half of a split [`WebSocketStream`].
        pub type WriteHalf<S> = $crate::WriteHalf<S, $rt>;
        /// The halves given to `reunite` came from different connections.
        pub type ReuniteError<S> = $crate::ReuniteError<S, $rt>;
        /// One received message as this runtime's `AsyncRead`, piece by piece.
        pub type MessageReader<'a, S> = $crate::MessageReader<'a, S, $rt>;
        /// Settings of accepted connections; see [`tether_driver::Server`].
        pub type Server = $crate::Server<$rt>;
        /// Settings of a client connection; see [`tether_driver::ClientBuilder`].
        pub type ClientBuilder = $crate::ClientBuilder<$rt>;
        /// A client connection opened with [`connect`].
        pub type ClientStream = WebSocketStream<$stream>;

        /// Opens a WebSocket connection to a `ws://` or `wss://` URL with the
        /// default settings. See [`ClientBuilder`] for the others.
        pub async fn connect(url: &str) -> Result<ClientStream, Error> {
            ClientBuilder::new(url).connect().await
        }

        /// Runs the client handshake for `request` over a transport the
        /// caller opened (a Unix socket, a proxy tunnel, an in-memory
        /// pipe...), with the default settings.
        pub async fn client_over<S>(stream: S, request: ClientRequest) -> Result<WebSocketStream<S>, Error>
        where
            $rt: $crate::RuntimeIo<S>,
        {
            ClientBuilder::from_request(request).connect_over(stream).await
        }

        /// Accepts a WebSocket on `stream` with the default settings,
        /// whatever the path. A request that is not a valid WebSocket
        /// handshake (a plain GET, a wrong version) is answered with the
        /// right status (400, 426...) and fails with [`Error::Handshake`].
        pub async fn accept<S>(stream: S) -> Result<WebSocketStream<S>, Error>
        where
            $rt: $crate::RuntimeIo<S>,
        {
            $crate::accept(stream).await
        }

        /// Accepts on `stream` as `callback` decides: it sees the request
        /// (path, query, headers, `Origin`, offered subprotocols with
        /// [`Request::protocols`]) and returns either the options to accept
        /// with (a subprotocol, response headers) or an [`HttpResponse`] to
        /// send instead (a page, a 404).
        pub async fn accept_with<S, F>(stream: S, callback: F) -> Result<WebSocketStream<S>, Error>
        where
            $rt: $crate::RuntimeIo<S>,
            F: FnOnce(&Request) -> Result<Accept, HttpResponse>,
        {
            $crate::accept_with(stream, callback).await
        }
    };
}
