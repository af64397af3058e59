//! Socket.IO server options.

use std::time::Duration;

use crate::engineio::EngineConfig;

use super::recovery::RecoveryConfig;

/// Socket.IO server options, with the Engine.IO options nested.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Engine.IO options (path, heartbeat, limits, CORS). The path defaults to `/socket.io/`.
    pub engine: EngineConfig,
    /// How long a connection may stay without joining any namespace before it is closed.
    /// Default 45 s (the reference's `connectTimeout`).
    pub connect_timeout: Duration,
    /// The most binary attachments one packet may declare. Default 10 (socket.io-parser's limit).
    pub max_attachments: usize,
    /// A volatile packet is dropped for a socket that already has this many frames waiting.
    /// Default 32.
    pub volatile_queue_limit: usize,
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

impl Default for Config {
    fn default() -> Self {
        Self {
            engine: EngineConfig::default(),
            connect_timeout: Duration::from_secs(45),
            max_attachments: 10,
            volatile_queue_limit: 32,
            recovery: None,
            event_rate_limit: None,
            max_rooms_per_socket: 1000,
            max_dynamic_namespaces: 10_000,
        }
    }
}
