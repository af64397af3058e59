//! Engine.IO configuration with documented defaults.

use std::time::Duration;

pub use super::proxy::IpRange;

/// Which origins may make cross-origin requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// Any origin (`Access-Control-Allow-Origin: *`, or the request's origin when credentials are on).
    Any,
    /// Only these exact origins (e.g. `https://dash.example.com`).
    List(Vec<String>),
}

impl AllowedOrigins {
    /// Whether `origin` (an `Origin` header's bytes) is allowed.
    pub fn contains(&self, origin: &[u8]) -> bool {
        match self {
            Self::Any => true,
            Self::List(list) => list.iter().any(|allowed| allowed.as_bytes() == origin),
        }
    }
}

/// CORS policy. No CORS headers at all are sent unless one is configured, as the reference does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cors {
    /// Allowed origins.
    pub origins: AllowedOrigins,
    /// Whether to send `Access-Control-Allow-Credentials: true`.
    pub credentials: bool,
    /// With a [`AllowedOrigins::List`], refuse every request (handshake, polling GET/POST, WebSocket
    /// upgrade) whose `Origin` header is present and not in the list, with HTTP 403 (code 4, "Origin
    /// not allowed"; an upgrade is refused before `101`). A request without `Origin` (a non-browser
    /// client) passes, and so does a same-origin one (the `Origin`'s host and port are the request's
    /// `Host`: a page served by this server; a browser on a foreign page cannot forge either). Default true: CORS alone does not stop a foreign page, since browsers do not
    /// apply CORS to WebSocket upgrades and do send simple cross-origin POSTs. The reference has no
    /// such check (its `cors` option only sets headers; `allowRequest` is left to the application).
    pub enforce_origin: bool,
}

impl Cors {
    /// Any origin, no credentials.
    pub fn any() -> Self {
        Self {
            origins: AllowedOrigins::Any,
            credentials: false,
            enforce_origin: true,
        }
    }

    /// Only `origins`, with or without credentials; foreign origins refused (`enforce_origin`).
    pub fn list(origins: Vec<String>, credentials: bool) -> Self {
        Self {
            origins: AllowedOrigins::List(origins),
            credentials,
            enforce_origin: true,
        }
    }

    /// Whether a request with these `Origin` and `Host` headers is refused by
    /// [`Cors::enforce_origin`].
    pub fn refuses(&self, origin: Option<&[u8]>, host: Option<&[u8]>) -> bool {
        match origin {
            Some(origin) if self.enforce_origin => {
                !self.origins.contains(origin) && !is_same_origin(origin, host)
            }
            _ => false,
        }
    }
}

/// Whether `origin` (`scheme://host[:port]`) names the `host` the request was sent to.
fn is_same_origin(origin: &[u8], host: Option<&[u8]>) -> bool {
    let Some(host) = host else {
        return false;
    };
    let authority = origin
        .windows(3)
        .position(|w| w == b"://")
        .map(|at| &origin[at + 3..]);
    authority.is_some_and(|a| !a.is_empty() && a.eq_ignore_ascii_case(host))
}

/// Engine.IO server options.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EngineConfig {
    /// The path the endpoint answers on, with leading and trailing slash. Default `/socket.io/`
    /// (Socket.IO's mount point; a bare Engine.IO endpoint conventionally uses `/engine.io/`).
    pub path: String,
    /// How often the server sends a ping. Default 25 s (the reference default).
    pub ping_interval: Duration,
    /// How long the server waits for the pong before closing the session. Default 60 s (the reference
    /// uses 20 s; we are more patient with mobile clients on bad networks).
    pub ping_timeout: Duration,
    /// The largest message or polling request body accepted, in bytes, advertised in the handshake.
    /// Default 1 000 000 (the reference's `maxHttpBufferSize`). Over it: HTTP 413 / WebSocket close 1009.
    pub max_payload: usize,
    /// How long a client may take between opening the WebSocket of an upgrade and sending `5`.
    /// Default 10 s (the reference default).
    pub upgrade_timeout: Duration,
    /// Whether the polling transport is offered. Default true.
    pub allow_polling: bool,
    /// Whether the WebSocket transport is offered. Default true.
    pub allow_websocket: bool,
    /// The most packets a client may put in one polling request body. Default 1 024.
    pub max_packets_per_payload: usize,
    /// The most packets one polling GET response carries. Default 1 024 (the rest waits for the next
    /// GET, which the client sends at once).
    pub max_packets_per_poll: usize,
    /// Clients that refuse larger polling payloads, recognised by a substring of the `User-Agent` of
    /// their handshake, get at most `small_poll_packets` per response. Default: the HTTP stacks of
    /// python-engineio's clients (`python-requests`, `aiohttp`), which refuse a payload of more than
    /// 16 packets and drop the connection. A cap of 16 for every client would cut the JavaScript
    /// client's polling throughput under bursts some fifty-fold (benches/results/polling.md).
    pub small_poll_user_agents: Vec<String>,
    /// The most packets per polling response for those clients. Default 16.
    pub small_poll_packets: usize,
    /// The most frames buffered for one session before it counts as a slow consumer and is closed.
    /// Default 8 192.
    pub max_buffered_frames: usize,
    /// The most bytes buffered for one session (queued, or in a WebSocket write not yet done) before
    /// it counts as a slow consumer: it is closed ("transport error", counted in
    /// [`EngineMetrics::slow_consumers`](super::EngineMetrics)) and its queue freed. Default 1 MiB
    /// (1 048 576). A group of frames queued onto an empty queue always fits, so one message of any
    /// size (up to `max_payload` from clients, any size from the application) goes out to a client
    /// that keeps up, whatever the budget; a smaller budget bounds a client that does not read more
    /// tightly. Frames shared by
    /// a broadcast count in full for every session. The reference bounds nothing (its `writeBuffer`
    /// grows without limit).
    pub max_buffered_bytes: usize,
    /// How long one write to a WebSocket may make no progress before the session is closed
    /// ("transport error") and its queue and batch freed. `None` (the default) uses `ping_timeout`:
    /// a client that stops reading is treated like one that stops answering pings (while a write
    /// is stuck the heartbeat cannot run). It measures a lack of progress, not a write's length: a
    /// slow reader that keeps taking bytes is not cut off, one that takes none for this long is.
    /// The reference has none (a stalled peer is found only by TCP keep-alive).
    pub write_timeout: Option<Duration>,
    /// How long a polling POST may take to deliver its whole body. Default 10 s: a full
    /// `max_payload` body (1 MB) arrives in time at about 1 Mbit/s, and an honest client's payloads
    /// are far smaller; the body's buffer (up to 1 MB) is held no longer. Over it: HTTP 408 and the
    /// session is closed ("transport error"; a client whose POST stalls is broken, and its next
    /// request would find its packets lost anyway). The reference has none of its own (Node's
    /// `server.requestTimeout`, 300 s by default, applies).
    pub body_read_timeout: Duration,
    /// How long a handshake waits for the `allow_request` check to answer. Default 10 s; past it
    /// the handshake is refused as if the check had (HTTP 403, code 4, "Forbidden"), and the
    /// request's memory is freed. The reference waits for its callback without a bound.
    pub allow_request_timeout: Duration,
    /// Proxies whose `Forwarded: for=` / `X-Forwarded-For` headers are believed. Default empty: the
    /// TCP peer is the client, and the headers are ignored. When the peer is in one of these ranges
    /// the client is the first untrusted hop from the right (kept as
    /// [`RequestInfo::remote_addr`](super::RequestInfo::remote_addr), the peer as `peer_addr`),
    /// which is what `max_connections_per_ip` counts; a malformed list falls back to the peer. The
    /// reference has none (`handshake.address` is always the TCP peer; compare Express's
    /// `trust proxy`).
    pub trusted_proxies: Vec<IpRange>,
    /// CORS policy; `None` (the default) sends no CORS headers.
    pub cors: Option<Cors>,
    /// Polling responses at least this large are compressed (gzip or deflate, as the client's
    /// `Accept-Encoding` allows). Default `Some(1024)`, as the reference's `httpCompression`;
    /// `None` turns compression off.
    pub http_compression_threshold: Option<usize>,
    /// The most sessions open at once; handshakes beyond it get HTTP 503. Default unlimited (the
    /// library leaves capacity to the application; the `tidings` binary sets 25 000).
    pub max_connections: usize,
    /// The most sessions open at once from one client address (see `trusted_proxies`); handshakes
    /// beyond it get HTTP 503. Default unlimited (a proxy in front would otherwise look like one
    /// client; the `tidings` binary sets 2 000).
    pub max_connections_per_ip: usize,
    /// Whether Engine.IO v3 clients (socket.io-client 2.x) may connect, as the reference's
    /// `allowEIO3`. Default false: a handshake without `EIO=4` gets HTTP 400, code 5 "Unsupported
    /// protocol version". When true, any `EIO` other than `4` (or none) is taken as v3, as the
    /// reference does. Needs the `eio3` feature.
    #[cfg(feature = "eio3")]
    pub allow_eio3: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            path: "/socket.io/".to_owned(),
            ping_interval: Duration::from_secs(25),
            ping_timeout: Duration::from_secs(60),
            max_payload: 1_000_000,
            upgrade_timeout: Duration::from_secs(10),
            allow_polling: true,
            allow_websocket: true,
            max_packets_per_payload: 1024,
            max_packets_per_poll: 1024,
            small_poll_user_agents: vec!["python-requests".to_owned(), "aiohttp".to_owned()],
            small_poll_packets: 16,
            max_buffered_frames: 8192,
            max_buffered_bytes: 1 << 20,
            write_timeout: None,
            body_read_timeout: Duration::from_secs(10),
            allow_request_timeout: Duration::from_secs(10),
            trusted_proxies: Vec::new(),
            cors: None,
            http_compression_threshold: Some(1024),
            max_connections: usize::MAX,
            max_connections_per_ip: usize::MAX,
            #[cfg(feature = "eio3")]
            allow_eio3: false,
        }
    }
}

impl EngineConfig {
    /// How long a closed polling session's last word waits for its client's next GET: the close
    /// packet of an orderly server close, or the noop for a GET that raced the client's own close.
    /// `ping_timeout`, at most 30 s: a client that polls at all polls again within it.
    pub(crate) fn close_grace(&self) -> Duration {
        self.ping_timeout.min(Duration::from_secs(30))
    }

    /// The write timeout in effect: [`EngineConfig::write_timeout`], or else `ping_timeout`.
    pub fn effective_write_timeout(&self) -> Duration {
        self.write_timeout.unwrap_or(self.ping_timeout)
    }

    /// Checks the values once at start-up.
    pub fn validate(&self) -> Result<(), String> {
        if !self.path.starts_with('/') || !self.path.ends_with('/') {
            return Err(format!("path must start and end with '/': {:?}", self.path));
        }
        if self.ping_interval.is_zero() || self.ping_timeout.is_zero() {
            return Err("ping interval and timeout must be positive".into());
        }
        if self.max_payload == 0 {
            return Err("max payload must be positive".into());
        }
        if self.max_packets_per_poll == 0
            || self.max_packets_per_payload == 0
            || self.small_poll_packets == 0
        {
            return Err("packet limits must be positive".into());
        }
        if self.max_buffered_frames == 0 {
            return Err("max buffered frames must be positive".into());
        }
        if self.max_buffered_bytes == 0 {
            return Err("max buffered bytes must be positive".into());
        }
        if self.write_timeout.is_some_and(|t| t.is_zero())
            || self.body_read_timeout.is_zero()
            || self.allow_request_timeout.is_zero()
        {
            return Err("write, body read and allow_request timeouts must be positive".into());
        }
        if !self.allow_polling && !self.allow_websocket {
            return Err("at least one transport must be allowed".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_origin_check_refuses_foreign_origins_only() {
        let cors = Cors::list(vec!["https://dash.test".into()], true);
        let refuses = |origin: Option<&str>, host: Option<&str>| {
            cors.refuses(origin.map(str::as_bytes), host.map(str::as_bytes))
        };
        assert!(!refuses(Some("https://dash.test"), Some("api.test")));
        assert!(!refuses(None, Some("api.test")));
        assert!(refuses(Some("https://evil.test"), Some("api.test")));
        assert!(refuses(Some("https://dash.test.evil"), Some("api.test")));
        // Same origin: a page of this server.
        assert!(!refuses(
            Some("http://API.test:3000"),
            Some("api.test:3000")
        ));
        assert!(refuses(Some("http://api.test:3001"), Some("api.test:3000")));
        assert!(refuses(Some("null"), Some("null")));
        assert!(refuses(Some("http://"), Some("")));
        assert!(refuses(Some("https://evil.test"), None));
        let mut off = cors.clone();
        off.enforce_origin = false;
        assert!(!off.refuses(Some(b"https://evil.test"), None));
        assert!(!Cors::any().refuses(Some(b"https://evil.test"), None));
    }
}
