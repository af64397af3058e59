//! Engine.IO configuration with documented defaults.

use std::time::Duration;

/// Which origins may make cross-origin requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// Any origin (`Access-Control-Allow-Origin: *`, or the request's origin when credentials are on).
    Any,
    /// Only these exact origins (e.g. `https://dash.example.com`).
    List(Vec<String>),
}

/// CORS policy. No CORS headers at all are sent unless one is configured, as the reference does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cors {
    /// Allowed origins.
    pub origins: AllowedOrigins,
    /// Whether to send `Access-Control-Allow-Credentials: true`.
    pub credentials: bool,
}

impl Cors {
    /// Any origin, no credentials.
    pub fn any() -> Self {
        Self {
            origins: AllowedOrigins::Any,
            credentials: false,
        }
    }
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
    /// tungstenite's read buffer per WebSocket connection, and the most it reads in one call. The
    /// largest single item of an idle connection's memory: default 512 bytes, which holds the usual
    /// event whole (4 KiB would cost about 3.5 KiB more RSS per idle client; a large message still
    /// arrives in one buffer, read in more calls).
    pub ws_read_buffer_size: usize,
    /// How many bytes of queued frames are gathered before a write to the socket. Default 16 KiB:
    /// the frames drained in one batch go out in one write (0 would write each frame on its own,
    /// one system call per delivery); a batch is flushed at its end whatever its size.
    pub ws_write_buffer_size: usize,
    /// CORS policy; `None` (the default) sends no CORS headers.
    pub cors: Option<Cors>,
    /// Polling responses at least this large are compressed (gzip or deflate, as the client's
    /// `Accept-Encoding` allows). Default `Some(1024)`, as the reference's `httpCompression`;
    /// `None` turns compression off.
    pub http_compression_threshold: Option<usize>,
    /// The most sessions open at once; handshakes beyond it get HTTP 503. Default unlimited.
    pub max_connections: usize,
    /// The most sessions open at once from one client address; handshakes beyond it get HTTP 503.
    /// Default unlimited (a proxy in front would otherwise look like one client).
    pub max_connections_per_ip: usize,
    /// Whether Engine.IO v3 clients (socket.io-client 2.x) may connect, as the reference's
    /// `allowEIO3`. Default false: a handshake without `EIO=4` gets HTTP 400, code 5 "Unsupported
    /// protocol version". When true, any `EIO` other than `4` (or none) is taken as v3, as the
    /// reference does.
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
            ws_read_buffer_size: 512,
            ws_write_buffer_size: 16 * 1024,
            cors: None,
            http_compression_threshold: Some(1024),
            max_connections: usize::MAX,
            max_connections_per_ip: usize::MAX,
            allow_eio3: false,
        }
    }
}

impl EngineConfig {
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
        if !self.allow_polling && !self.allow_websocket {
            return Err("at least one transport must be allowed".into());
        }
        Ok(())
    }
}
