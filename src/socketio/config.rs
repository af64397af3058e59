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
}

impl Default for Config {
    fn default() -> Self {
        Self {
            engine: EngineConfig::default(),
            connect_timeout: Duration::from_secs(45),
            max_attachments: 10,
            volatile_queue_limit: 32,
            recovery: None,
        }
    }
}
