//! Socket.IO v5 on top of Engine.IO v4.
//!
//! - [`packet`] is the sans-IO JSON codec (text part + binary attachments), [`msgpack`] the msgpack
//!   one; a server picks one through its [`Parser`] ([`Config::parser`], default JSON).
//! - A client (one Engine.IO session) carries [`Socket`]s, one per [`Namespace`] it connected to.
//! - Rooms live in the namespace's [`Adapter`]; broadcasts go through it ([`BroadcastOperator`]).
//!
//! Ordering guarantees: a socket's inbound packets are handled in arrival order, one at a time; a
//! socket's connection handler runs before the next packet of its client is read, so an event sent
//! right after the CONNECT reply always finds its handler.

mod adapter;
mod args;
mod broadcast;
mod client;
mod config;
mod error;
mod handshake;
mod io;
#[cfg(all(feature = "msgpack", feature = "fuzzing"))]
pub mod msgpack;
#[cfg(all(feature = "msgpack", not(feature = "fuzzing")))]
#[allow(unreachable_pub, dead_code)]
pub(crate) mod msgpack;
mod namespace;
pub mod observer;
#[cfg(feature = "fuzzing")]
pub mod packet;
#[cfg(not(feature = "fuzzing"))]
#[allow(unreachable_pub, dead_code)]
pub(crate) mod packet;
mod parser;
mod recovery;
#[cfg(feature = "redis")]
pub mod redis;
mod socket;
mod tower;

pub use adapter::{
    Adapter, AdapterFactory, BroadcastOptions, LocalAdapter, ServerSideAck, ServerSideHandler,
    broadcast_local,
};
pub use args::Args;
pub use broadcast::BroadcastOperator;
pub use config::{Config, OnExceed, RateLimit};
pub use error::{AckError, ConnectError, JoinError, SendError};
pub use handshake::Handshake;
pub use io::{SocketIo, SocketIoHandler};
#[cfg(feature = "msgpack")]
pub use msgpack::MsgPackParser;
pub use namespace::{BoxFuture, Namespace, SocketIoMetrics};
pub use observer::Observer;
pub use packet::{DecodeError, Limits, Packet, PacketType};
pub use parser::{JsonParser, PacketDecoder, Parser, parser_named};
pub use recovery::{RecoveryConfig, RecoveryStats};
pub use socket::{AckSender, DisconnectReason, IntoRooms, Socket, SocketInfo, SocketRef};
pub use tower::{ResponseFuture, SocketIoLayer, SocketIoService};
