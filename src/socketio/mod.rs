//! Socket.IO v5 on top of Engine.IO v4.
//!
//! - Packets become Engine.IO messages through the server's [`Parser`] ([`Config::parser`], default
//!   JSON; the parsers live in [`crate::parser`]).
//! - A client (one Engine.IO session) carries [`Socket`]s, one per [`Namespace`] it connected to.
//! - Rooms live in the namespace's [`Adapter`](crate::adapter::Adapter); broadcasts go through it ([`BroadcastOperator`]).
//!
//! Ordering guarantees: a socket's inbound packets are handled in arrival order, one at a time; a
//! socket's connection handler runs before the next packet of its client is read, so an event sent
//! right after the CONNECT reply always finds its handler.

pub use crate::BoxFuture;

mod broadcast;
mod client;
mod config;
mod error;
mod handshake;
mod io;
mod namespace;
mod recovery;
mod shared;
mod tower;

pub use crate::adapter::SocketInfo;
pub use crate::parser::Args;
#[cfg(feature = "msgpack")]
pub use crate::parser::MsgPackParser;
pub use crate::parser::{DecodeError, Limits, Packet, PacketType};
pub use crate::parser::{JsonParser, PacketDecoder, Parser, parser_named};
pub use broadcast::BroadcastOperator;
pub use config::{Config, OnExceed, RateLimit};
pub use error::{AckError, ConnectError, JoinError, SendError};
pub use handshake::Handshake;
pub use io::{SocketIo, SocketIoHandler};
pub use namespace::observer::{self, Observer};
pub use namespace::socket::{AckSender, DisconnectReason, IntoRooms, Socket, SocketRef};
pub use namespace::{Namespace, SocketIoMetrics};
pub use recovery::{RecoveryConfig, RecoveryStats};
pub use tower::{ResponseFuture, SocketIoLayer, SocketIoService};
