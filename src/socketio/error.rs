//! The Socket.IO layer's errors: why an emit, an ack, a join or a connect did not happen.
//!
//! Each keeps its cause: an emit refused by the Engine.IO session carries the session's
//! [`engineio::SendError`](crate::engineio::SendError) as its [`source`](std::error::Error::source).

use std::fmt;

use serde_json::Value;

/// Why an emit (or an ack answer) was not queued.
#[derive(Debug)]
#[non_exhaustive]
pub enum SendError {
    /// The event name is one socket.io reserves (`connect`, `disconnect`, ...): a client would
    /// treat the packet as malformed and close the connection, so it is not sent.
    ReservedEventName(String),
    /// The argument could not be serialized to JSON.
    Serialize(serde_json::Error),
    /// The socket is no longer connected to its namespace.
    Disconnected,
    /// The Engine.IO session refused the frames (closed, or its queue was full).
    Transport(crate::engineio::SendError),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ReservedEventName(name) => write!(f, "\"{name}\" is a reserved event name"),
            Self::Serialize(_) => f.write_str("the argument could not be serialized"),
            Self::Disconnected => f.write_str("the socket is disconnected"),
            Self::Transport(_) => f.write_str("the connection refused the packet"),
        }
    }
}

impl std::error::Error for SendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Serialize(e) => Some(e),
            Self::Transport(e) => Some(e),
            Self::ReservedEventName(_) | Self::Disconnected => None,
        }
    }
}

impl From<crate::engineio::SendError> for SendError {
    fn from(e: crate::engineio::SendError) -> Self {
        Self::Transport(e)
    }
}

impl From<serde_json::Error> for SendError {
    fn from(e: serde_json::Error) -> Self {
        Self::Serialize(e)
    }
}

/// Checks an event name before it is emitted (the reference throws for the same names).
pub(crate) fn check_event_name(event: &str) -> Result<(), SendError> {
    if crate::parser::packet::RESERVED_EVENTS.contains(&event) {
        tracing::debug!(event, "emit of a reserved event name refused");
        return Err(SendError::ReservedEventName(event.to_owned()));
    }
    Ok(())
}

/// Why an emit with an ack got no answer.
#[derive(Debug)]
#[non_exhaustive]
pub enum AckError {
    /// No answer within the timeout.
    Timeout,
    /// The socket disconnected before answering.
    Disconnected,
    /// The packet could not be queued; the cause says why.
    NotSent(SendError),
}

impl fmt::Display for AckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Timeout => "operation has timed out",
            Self::Disconnected => "socket has been disconnected",
            Self::NotSent(_) => "packet could not be sent",
        })
    }
}

impl std::error::Error for AckError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::NotSent(e) => Some(e),
            Self::Timeout | Self::Disconnected => None,
        }
    }
}

impl From<SendError> for AckError {
    fn from(e: SendError) -> Self {
        Self::NotSent(e)
    }
}

/// Why a socket could not join rooms. A refused join joins none of the rooms asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JoinError {
    /// Joining would put the socket in more rooms than `max_rooms_per_socket` (its own room
    /// included).
    RoomLimit {
        /// The configured limit.
        limit: usize,
        /// How many rooms the socket would be in after the join.
        requested: usize,
    },
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RoomLimit { limit, requested } => write!(
                f,
                "room limit reached: {requested} rooms asked for, at most {limit} allowed"
            ),
        }
    }
}

impl std::error::Error for JoinError {}

/// Why a connect middleware refused a socket: sent to the client as CONNECT_ERROR
/// `{"message": ..., "data": ...}`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ConnectError {
    /// The message the client's `connect_error` event gets.
    pub message: String,
    /// Optional details (`err.data` on the client).
    pub data: Option<Value>,
}

impl ConnectError {
    /// A refusal with a message.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            data: None,
        }
    }

    /// Adds details.
    #[must_use]
    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "connection refused: {}", self.message)
    }
}

impl std::error::Error for ConnectError {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn errors_display_and_keep_their_cause() {
        let err = AckError::NotSent(SendError::Transport(crate::engineio::SendError::Full));
        assert_eq!(err.to_string(), "packet could not be sent");
        let send = err.source().expect("ack error keeps the send error");
        assert_eq!(send.to_string(), "the connection refused the packet");
        let engine = send.source().expect("send error keeps the session's error");
        assert_eq!(engine.to_string(), "the session's outbound queue is full");

        let join = JoinError::RoomLimit {
            limit: 2,
            requested: 3,
        };
        assert!(join.to_string().contains("at most 2"));
        assert_eq!(
            ConnectError::new("nope").to_string(),
            "connection refused: nope"
        );
        assert!(check_event_name("disconnect").is_err());
        assert!(check_event_name("chat").is_ok());
    }
}
