//! Tidings: a Socket.IO server with the Engine.IO v4 and Socket.IO v5 protocols written by hand.
//!
//! Data flows down on receive and up on send:
//!
//! ```text
//!  TCP accept (server: connection cap, TCP_NODELAY, graceful shutdown)
//!    └─ hyper http1 connection with upgrades
//!         └─ engineio/  sessions keyed by sid; polling and WebSocket transports; upgrade; heartbeat
//!         └─ socketio/  namespaces, sockets, acks, recovery, broadcast operators
//!              └─ adapter/  rooms and fan-out (local; Redis, feature `redis`), sockets as `Member`s
//!                   └─ rooms/  sharded registry: room → members, member → rooms
//!    parser/  the Parser trait, Args and the packet codecs (JSON, msgpack): a leaf all of them use
//! ```
//!
//! The Engine.IO layer knows nothing of Socket.IO: it hands whole messages to a small handler trait
//! ([`engineio::Handler`]), so a bare Engine.IO endpoint can exist on its own.

#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod adapter;
#[cfg(feature = "admin-ui")]
pub mod admin_ui;
mod date;
pub mod engineio;
pub mod metrics;
pub mod parser;
pub mod rooms;
pub mod server;
pub mod socketio;

/// A boxed future, as middlewares, `allow_request` checks and cluster requests return.
pub type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// The README's Rust examples, compiled and run as doctests (`cargo test --doc`).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
