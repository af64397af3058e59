//! Why a socket disconnected.

use super::*;

/// Why a socket disconnected, in the reference's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DisconnectReason {
    /// The server disconnected the socket (`socket.disconnect()`).
    ServerNamespaceDisconnect,
    /// The client disconnected the socket (`socket.disconnect()` on the client).
    ClientNamespaceDisconnect,
    /// The connection was closed (the client went away).
    TransportClose,
    /// The connection failed.
    TransportError,
    /// The client stopped answering pings.
    PingTimeout,
    /// The client sent a packet that could not be parsed.
    ParseError,
    /// The server closed the whole connection.
    ForcedClose,
    /// The server is shutting down.
    ServerShuttingDown,
}

impl DisconnectReason {
    /// The reason as the reference names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ServerNamespaceDisconnect => "server namespace disconnect",
            Self::ClientNamespaceDisconnect => "client namespace disconnect",
            Self::TransportClose => "transport close",
            Self::TransportError => "transport error",
            Self::PingTimeout => "ping timeout",
            Self::ParseError => "parse error",
            Self::ForcedClose => "forced close",
            Self::ServerShuttingDown => "server shutting down",
        }
    }
}

impl DisconnectReason {
    /// Every reason, in [`DisconnectReason::index`] order.
    pub const ALL: [Self; 8] = [
        Self::ServerNamespaceDisconnect,
        Self::ClientNamespaceDisconnect,
        Self::TransportClose,
        Self::TransportError,
        Self::PingTimeout,
        Self::ParseError,
        Self::ForcedClose,
        Self::ServerShuttingDown,
    ];

    /// A dense index of the reason (for per-reason counters).
    pub fn index(self) -> usize {
        self as usize
    }

    /// Whether connection state recovery may restore a socket that dropped for this reason.
    pub fn is_recoverable(self) -> bool {
        matches!(
            self,
            Self::TransportClose
                | Self::TransportError
                | Self::PingTimeout
                | Self::ForcedClose
                | Self::ServerShuttingDown
        )
    }
}

impl From<CloseReason> for DisconnectReason {
    fn from(reason: CloseReason) -> Self {
        match reason {
            CloseReason::TransportClose => Self::TransportClose,
            CloseReason::TransportError => Self::TransportError,
            CloseReason::PingTimeout => Self::PingTimeout,
            CloseReason::ParseError => Self::ParseError,
            CloseReason::ForcedClose => Self::ForcedClose,
            CloseReason::ServerShutdown => Self::ServerShuttingDown,
        }
    }
}
