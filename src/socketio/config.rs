//! Socket.IO server options.

use std::time::Duration;

use crate::engineio::EngineConfig;

use super::recovery::RecoveryConfig;
use crate::parser::{JsonParser, Parser};

/// Socket.IO server options, with the Engine.IO options nested.
#[derive(Clone)]
#[non_exhaustive]
pub struct Config {
    /// Engine.IO options (path, heartbeat, limits, CORS). The path defaults to `/socket.io/`.
    pub engine: EngineConfig,
    /// How long a connection may stay without joining any namespace before it is closed.
    /// Default 45 s (the reference's `connectTimeout`).
    pub connect_timeout: Duration,
    /// The Socket.IO parser: [`super::JsonParser`] (the default, socket.io-parser's text form) or
    /// [`super::MsgPackParser`] (the npm `socket.io-msgpack-parser`). Clients must use the same one.
    pub parser: std::sync::Arc<dyn Parser>,
    /// The most binary attachments one packet may declare (with the msgpack parser: the most binary
    /// values one packet may hold). Default 10 (socket.io-parser's limit).
    pub max_attachments: usize,
    /// A volatile packet is dropped for a socket that already has this many frames waiting.
    /// Default 32.
    pub volatile_queue_limit: usize,
    /// Creates each namespace's adapter; `None` (the default) keeps rooms in this process
    /// ([`crate::adapter::LocalAdapter`]). A cluster adapter (e.g. the Redis adapter) goes here.
    pub adapter: Option<std::sync::Arc<dyn crate::adapter::AdapterFactory>>,
    /// Connection state recovery; `None` (the default) turns it off, as the official suite requires
    /// (its CONNECT reply must carry `sid` alone).
    pub recovery: Option<RecoveryConfig>,
    /// Inbound event rate limit per socket; `None` (the default) means no limit.
    pub event_rate_limit: Option<RateLimit>,
    /// The most rooms one socket may be in (its own room included); further joins are refused.
    /// Default 1 000.
    pub max_rooms_per_socket: usize,
    /// The most namespaces dynamic patterns may create; connects beyond get "Invalid namespace".
    /// Default 10 000.
    pub max_dynamic_namespaces: usize,
    /// The largest CONNECT auth payload a socket may keep, in bytes of JSON. A CONNECT with more is
    /// refused with CONNECT_ERROR "auth payload too large". Default 8 KiB: a token or two. The
    /// reference has no such limit (only `maxHttpBufferSize` on the whole message), and keeps the
    /// parsed object for the socket's life; Tidings keeps the JSON text, parsed when asked for.
    pub max_auth_bytes: usize,
    /// The most bytes a binary packet still waiting for its attachments may hold (its text part
    /// and the attachments so far). Over it the connection is closed ("parse error"). Default
    /// 8 MiB. The reference has no such bound.
    pub max_pending_attachment_bytes: usize,
    /// How long the attachments of a binary packet may take to arrive, from its text part. After it
    /// the connection is closed ("parse error") and what it held is freed. Default 10 s. The
    /// reference waits forever.
    pub attachment_timeout: Duration,
}

/// A token bucket: `burst` events at once, refilled at `per_second`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Sustained events per second.
    pub per_second: f64,
    /// Events allowed in a burst.
    pub burst: u32,
    /// What happens to a socket over the limit.
    pub on_exceed: OnExceed,
}

/// What a rate limit does to excess events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnExceed {
    /// Drop the event (counted).
    Drop,
    /// Disconnect the socket ("server namespace disconnect").
    Disconnect,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("engine", &self.engine)
            .field("connect_timeout", &self.connect_timeout)
            .field("parser", &self.parser)
            .field("max_attachments", &self.max_attachments)
            .field("volatile_queue_limit", &self.volatile_queue_limit)
            .field("cluster_adapter", &self.adapter.is_some())
            .field("recovery", &self.recovery)
            .field("event_rate_limit", &self.event_rate_limit)
            .field("max_rooms_per_socket", &self.max_rooms_per_socket)
            .field("max_dynamic_namespaces", &self.max_dynamic_namespaces)
            .field("max_auth_bytes", &self.max_auth_bytes)
            .field(
                "max_pending_attachment_bytes",
                &self.max_pending_attachment_bytes,
            )
            .field("attachment_timeout", &self.attachment_timeout)
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            engine: EngineConfig::default(),
            connect_timeout: Duration::from_secs(45),
            parser: std::sync::Arc::new(JsonParser),
            max_attachments: 10,
            volatile_queue_limit: 32,
            adapter: None,
            recovery: None,
            event_rate_limit: None,
            max_rooms_per_socket: 1000,
            max_dynamic_namespaces: 10_000,
            max_auth_bytes: 8 * 1024,
            max_pending_attachment_bytes: 8 * 1024 * 1024,
            attachment_timeout: Duration::from_secs(10),
        }
    }
}
