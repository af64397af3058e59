//! Request-level errors and their wire responses, mapped in one place.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

/// The body type of every response the Engine.IO layer produces.
pub type Body = Full<Bytes>;

/// Why a request to the Engine.IO endpoint was refused.
///
/// The numbered kinds are the reference server's error codes; [`HttpError::into_response`] is the only
/// place that turns them into bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HttpError {
    /// Code 0: `transport` missing, unknown or disabled.
    TransportUnknown,
    /// Code 1: `sid` unknown, expired or closed.
    SessionIdUnknown,
    /// Code 2: a request without `sid` that is not a GET.
    BadHandshakeMethod,
    /// Code 3: anything else malformed (transport mismatch, websocket GET without upgrade, ...).
    BadRequest,
    /// Code 4: refused by the `allow_request` hook (HTTP 403), with its message.
    Forbidden(String),
    /// Code 5: `EIO` missing or not 4.
    UnsupportedProtocolVersion,
    /// A second GET or POST while one is pending: a bare 400 (the session is closed too).
    Overlap,
    /// A POST body over `max_payload`: a bare 413.
    PayloadTooLarge,
    /// A POST body the codec refused: a bare 400 (the session is closed too).
    InvalidPayload,
    /// The connection limit (global or per client address) is reached: HTTP 503.
    TooManyConnections,
    /// Code 4: the request's `Origin` is not in the configured list
    /// ([`Cors::enforce_origin`](super::Cors::enforce_origin)): HTTP 403.
    OriginNotAllowed,
    /// Code 3: a POST body did not arrive within `body_read_timeout`: HTTP 408 (the session is
    /// closed too).
    BodyTimeout,
}

impl HttpError {
    /// The reference error code, for the kinds that have one.
    pub fn code(&self) -> Option<u8> {
        Some(match self {
            Self::TransportUnknown => 0,
            Self::SessionIdUnknown => 1,
            Self::BadHandshakeMethod => 2,
            Self::BadRequest => 3,
            Self::Forbidden(_) | Self::OriginNotAllowed => 4,
            Self::UnsupportedProtocolVersion => 5,
            Self::BodyTimeout => 3,
            Self::Overlap
            | Self::PayloadTooLarge
            | Self::InvalidPayload
            | Self::TooManyConnections => return None,
        })
    }

    /// The reference error message.
    pub fn message(&self) -> &str {
        match self {
            Self::TransportUnknown => "Transport unknown",
            Self::SessionIdUnknown => "Session ID unknown",
            Self::BadHandshakeMethod => "Bad handshake method",
            Self::BadRequest | Self::Overlap | Self::InvalidPayload => "Bad request",
            Self::Forbidden(msg) => msg,
            Self::UnsupportedProtocolVersion => "Unsupported protocol version",
            Self::PayloadTooLarge => "Payload too large",
            Self::TooManyConnections => "Too many connections",
            Self::OriginNotAllowed => "Origin not allowed",
            Self::BodyTimeout => "Request body timeout",
        }
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Forbidden(_) | Self::OriginNotAllowed => StatusCode::FORBIDDEN,
            Self::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::TooManyConnections => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// The HTTP response for a polling (or otherwise non-upgrade) request.
    pub fn into_response(self) -> Response<Body> {
        let status = self.status();
        if self == Self::TooManyConnections {
            let body = serde_json::json!({ "message": self.message() }).to_string();
            let mut res = Response::new(Full::new(Bytes::from(body)));
            *res.status_mut() = status;
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            return res;
        }
        let Some(code) = self.code() else {
            return bare(status);
        };
        let body = serde_json::json!({ "code": code, "message": self.message() }).to_string();
        let mut res = Response::new(Full::new(Bytes::from(body)));
        *res.status_mut() = status;
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if self == Self::BodyTimeout {
            // The rest of the body is never read: the connection cannot carry another request.
            res.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        res
    }

    /// The response for a refused WebSocket upgrade: plain text, and the connection is not reused.
    pub fn into_upgrade_response(self) -> Response<Body> {
        let status = match self {
            Self::PayloadTooLarge => StatusCode::BAD_REQUEST,
            _ => self.status(),
        };
        let mut res = Response::new(Full::new(Bytes::from(self.message().to_owned())));
        *res.status_mut() = status;
        let h = res.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        res
    }
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.code() {
            Some(code) => write!(
                f,
                "{} (code {code}, HTTP {})",
                self.message(),
                self.status()
            ),
            None => write!(f, "{} (HTTP {})", self.message(), self.status()),
        }
    }
}

impl std::error::Error for HttpError {}

impl std::fmt::Display for super::SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Closed => "the session is closed",
            Self::Full => "the session's outbound queue is full",
        })
    }
}

impl std::error::Error for super::SendError {}

fn bare(status: StatusCode) -> Response<Body> {
    let mut res = Response::new(Full::new(Bytes::new()));
    *res.status_mut() = status;
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    async fn body(res: Response<Body>) -> String {
        let b = res.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(b.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn maps_codes_to_reference_bodies() {
        let cases = [
            (
                HttpError::TransportUnknown,
                400,
                r#"{"code":0,"message":"Transport unknown"}"#,
            ),
            (
                HttpError::SessionIdUnknown,
                400,
                r#"{"code":1,"message":"Session ID unknown"}"#,
            ),
            (
                HttpError::BadHandshakeMethod,
                400,
                r#"{"code":2,"message":"Bad handshake method"}"#,
            ),
            (
                HttpError::BadRequest,
                400,
                r#"{"code":3,"message":"Bad request"}"#,
            ),
            (
                HttpError::Forbidden("Forbidden".into()),
                403,
                r#"{"code":4,"message":"Forbidden"}"#,
            ),
            (
                HttpError::UnsupportedProtocolVersion,
                400,
                r#"{"code":5,"message":"Unsupported protocol version"}"#,
            ),
            (
                HttpError::OriginNotAllowed,
                403,
                r#"{"code":4,"message":"Origin not allowed"}"#,
            ),
            (
                HttpError::BodyTimeout,
                408,
                r#"{"code":3,"message":"Request body timeout"}"#,
            ),
            (HttpError::Overlap, 400, ""),
            (HttpError::PayloadTooLarge, 413, ""),
        ];
        for (err, status, expected) in cases {
            let res = err.into_response();
            assert_eq!(res.status().as_u16(), status);
            assert_eq!(body(res).await, expected);
        }
    }

    #[test]
    fn displays_message_code_and_status() {
        assert_eq!(
            HttpError::SessionIdUnknown.to_string(),
            "Session ID unknown (code 1, HTTP 400 Bad Request)"
        );
        assert_eq!(
            HttpError::PayloadTooLarge.to_string(),
            "Payload too large (HTTP 413 Payload Too Large)"
        );
        assert_eq!(
            super::super::SendError::Closed.to_string(),
            "the session is closed"
        );
    }
}
