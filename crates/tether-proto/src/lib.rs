//! tether-proto: the sans-IO WebSocket protocol core.
#![warn(missing_docs)]

mod close;
mod config;
mod connection;
mod error;
pub mod extension;
pub mod frame;
pub mod handshake;
pub mod mask;
mod message;
mod random;
pub mod utf8;

pub use close::{CloseCode, CloseFrame, InvalidClose, MAX_REASON_LEN};
pub use config::Config;
pub use connection::{CloseCause, Closed, Connection, Event, Role, State};
pub use error::{ProtocolError, SendError};
pub use extension::Extension;
pub use message::{DataKind, Fragment, Message, Utf8Bytes};
pub use random::{RandomSource, SeededRandom};
