//! The Engine.IO endpoint: request routing, the handshake, and CORS.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use tokio::time::Instant;

use super::codec::{Frame, Framing, Protocol};
use super::config::{AllowedOrigins, Cors, EngineConfig};
use super::error::{Body, HttpError};
use super::heartbeat::Heartbeat;
use super::query::{MAX_QUERY_LEN, parse_engine_query};
use super::registry::SessionMap;
use super::session::{OutboxLimits, RequestInfo, Session, TransportKind};
use super::{CloseReason, Handler, polling, proxy, sid, websocket};

/// An Engine.IO server: cheap to clone, shared by every connection.
pub struct EngineIo<H> {
    inner: Arc<Inner<H>>,
}

pub(crate) struct Inner<H> {
    pub(crate) config: EngineConfig,
    pub(crate) handler: H,
    pub(crate) sessions: Arc<SessionMap>,
}

impl<H> Clone for EngineIo<H> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<H> std::fmt::Debug for EngineIo<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineIo")
            .field("path", &self.inner.config.path)
            .finish_non_exhaustive()
    }
}

impl<H: Handler> EngineIo<H> {
    /// An endpoint with `config`, handing sessions to `handler`.
    pub fn new(config: EngineConfig, handler: H) -> Self {
        let sessions = Arc::new(SessionMap::new(
            config.close_grace(),
            super::wheel::tick_for(config.ping_interval, config.ping_timeout),
        ));
        Self {
            inner: Arc::new(Inner {
                config,
                handler,
                sessions,
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// The application handler.
    pub fn handler(&self) -> &H {
        &self.inner.handler
    }

    /// What the Engine.IO layer has counted.
    pub fn metrics(&self) -> &super::EngineMetrics {
        &self.inner.sessions.metrics
    }

    /// How many sessions are open, by transport (polling, websocket).
    pub fn sessions_by_transport(&self) -> (usize, usize) {
        let all = self.inner.sessions.all();
        let ws = all
            .iter()
            .filter(|s| s.transport() == TransportKind::WebSocket)
            .count();
        (all.len() - ws, ws)
    }

    /// Sids of polling sessions their client closed that still answer one racing GET with a noop
    /// (bounded: 1 024 per registry shard, each for the close grace).
    pub fn tombstones(&self) -> usize {
        self.inner.sessions.tombstones()
    }

    /// The bytes buffered for every open session: queued, or being written
    /// ([`Session::buffered_bytes`]). Summed when asked (a scrape), at no cost to the sessions.
    pub fn buffered_bytes(&self) -> usize {
        self.inner
            .sessions
            .all()
            .iter()
            .map(|s| s.buffered_bytes())
            .sum()
    }

    /// How many sessions are open.
    pub fn session_count(&self) -> usize {
        self.inner.sessions.len()
    }

    /// The open session with id `sid`.
    pub fn session(&self, sid: &str) -> Option<Arc<Session>> {
        self.inner.sessions.get(sid)
    }

    /// Whether `path` is this endpoint's path (with or without the trailing slash).
    pub fn matches(&self, path: &str) -> bool {
        let own = &self.inner.config.path;
        path == own || path == own.trim_end_matches('/')
    }

    /// Closes every session with a close packet (server shutdown).
    pub fn close_all(&self, reason: CloseReason) {
        for session in self.inner.sessions.all() {
            session.close(reason, true);
        }
    }

    /// Answers one HTTP request addressed to this endpoint.
    pub async fn handle<B>(
        &self,
        req: Request<B>,
        remote_addr: Option<SocketAddr>,
    ) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let cors = self.inner.config.cors.as_ref();
        let origin = req.headers().get(header::ORIGIN).cloned();
        if req.method() == Method::OPTIONS {
            if let Some(cors) = cors {
                return preflight(cors, origin.as_ref(), req.headers());
            }
        }
        // One check for every request of the endpoint: handshakes, polling GETs and POSTs, upgrades.
        let host = req.headers().get(header::HOST).map(HeaderValue::as_bytes);
        let refused =
            cors.is_some_and(|c| c.refuses(origin.as_ref().map(HeaderValue::as_bytes), host));
        let routed = if refused {
            tracing::debug!(?origin, "origin not allowed");
            Err((
                HttpError::OriginNotAllowed,
                websocket::is_upgrade_request(&req),
            ))
        } else {
            self.route(req, remote_addr).await
        };
        let mut res = match routed {
            Ok(res) => res,
            Err((err, upgrade)) => {
                tracing::debug!(error = ?err, "engine.io request refused");
                let metrics = &self.inner.sessions.metrics;
                match err.code() {
                    Some(code) => metrics.request_errors[usize::from(code)].inc(),
                    None if err == HttpError::TooManyConnections => metrics.connection_limit.inc(),
                    None => {}
                }
                if upgrade {
                    err.into_upgrade_response()
                } else {
                    err.into_response()
                }
            }
        };
        if let Some(cors) = cors {
            apply_cors(cors, origin.as_ref(), res.headers_mut());
        }
        res
    }

    async fn route<B>(
        &self,
        mut req: Request<B>,
        remote_addr: Option<SocketAddr>,
    ) -> Result<Response<Body>, (HttpError, bool)>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let config = &self.inner.config;
        let upgrade = websocket::is_upgrade_request(&req);
        let fail = |e| (e, upgrade);
        let raw_query = req.uri().query().unwrap_or("");
        if raw_query.len() > MAX_QUERY_LEN {
            return Err(fail(HttpError::BadRequest));
        }
        let query = parse_engine_query(raw_query);
        let transport = match query.transport.as_deref() {
            Some("polling") if config.allow_polling => TransportKind::Polling,
            Some("websocket") if config.allow_websocket => TransportKind::WebSocket,
            _ => return Err(fail(HttpError::TransportUnknown)),
        };

        if let Some(sid) = query.sid.as_deref() {
            let Some(session) = self.inner.sessions.get(sid) else {
                if transport == TransportKind::Polling && !upgrade && req.method() == Method::GET {
                    return polling::get_closed(&self.inner.sessions, sid).map_err(fail);
                }
                return Err(fail(HttpError::SessionIdUnknown));
            };
            return match transport {
                TransportKind::WebSocket if upgrade => {
                    // The WebSocket's own request says whether it takes binary frames (v3).
                    let framing = Framing::new(session.protocol(), query.b64.as_deref());
                    websocket::upgrade_session(&self.inner, session, framing, &mut req)
                        .map_err(fail)
                }
                TransportKind::WebSocket => Err(fail(HttpError::BadRequest)),
                TransportKind::Polling => {
                    if session.transport() != TransportKind::Polling {
                        return Err(fail(HttpError::BadRequest));
                    }
                    match *req.method() {
                        Method::GET => {
                            let encoding = polling::Encoding::accepted(req.headers());
                            polling::get(&self.inner, session, encoding)
                                .await
                                .map_err(fail)
                        }
                        Method::POST => {
                            polling::post(&self.inner, session, req).await.map_err(fail)
                        }
                        _ => Err(fail(HttpError::BadRequest)),
                    }
                }
            };
        }

        // A handshake.
        if req.method() != Method::GET {
            return Err(fail(HttpError::BadHandshakeMethod));
        }
        // "3rd revision by default": with v3 allowed, anything but `EIO=4` is v3, as the reference.
        let protocol = match query.eio.as_deref() {
            Some("4") => Protocol::V4,
            #[cfg(feature = "eio3")]
            _ if config.allow_eio3 => Protocol::V3,
            _ => return Err(fail(HttpError::UnsupportedProtocolVersion)),
        };
        let framing = Framing::new(protocol, query.b64.as_deref());
        if transport == TransportKind::WebSocket && !upgrade {
            return Err(fail(HttpError::BadRequest));
        }
        let client = proxy::client_addr(&config.trusted_proxies, remote_addr, req.headers());
        let mut info = RequestInfo::new(req.uri(), req.headers(), client);
        info.peer_addr = remote_addr;
        let info = Arc::new(info);
        if let Some(check) = self.inner.handler.allow_request(&info) {
            match tokio::time::timeout(config.allow_request_timeout, check).await {
                Ok(Ok(())) => {}
                Ok(Err(message)) => {
                    tracing::debug!(%message, "handshake refused by allow_request");
                    return Err(fail(HttpError::Forbidden(message)));
                }
                Err(_) => {
                    tracing::debug!("allow_request did not answer in time; handshake refused");
                    return Err(fail(HttpError::Forbidden("Forbidden".to_owned())));
                }
            }
        }
        let ip = client.map(|a| a.ip());
        if !self
            .inner
            .sessions
            .reserve(ip, config.max_connections, config.max_connections_per_ip)
        {
            tracing::debug!(?ip, "connection limit reached");
            return Err(fail(HttpError::TooManyConnections));
        }
        match transport {
            TransportKind::Polling => {
                let (session, open) = self.open_session(info, TransportKind::Polling, framing);
                polling::spawn_driver(&self.inner, session);
                // A v3 client reads even the handshake as a payload (`<length>:0{…}`).
                let mut body = Vec::with_capacity(open.len() + 8);
                framing.encode_payload([&Frame::Text(Bytes::from(open))], &mut body);
                Ok(polling::text_response(Bytes::from(body)))
            }
            TransportKind::WebSocket => {
                websocket::open_session(self.clone(), info, framing, &mut req).map_err(|e| {
                    self.inner.sessions.release(ip);
                    fail(e)
                })
            }
        }
    }

    /// Gives back a connection-limit reservation whose session never came to be.
    pub(crate) fn release_reservation(&self, ip: Option<std::net::IpAddr>) {
        self.inner.sessions.release(ip);
    }

    /// Creates and registers a session (its connection-limit reservation already taken), gives it
    /// its handler, and returns it with its open packet.
    pub(crate) fn open_session(
        &self,
        info: Arc<RequestInfo>,
        transport: TransportKind,
        framing: Framing,
    ) -> (Arc<Session>, String) {
        let config = &self.inner.config;
        let id = sid::generate();
        let (now, interval, timeout) = (Instant::now(), config.ping_interval, config.ping_timeout);
        let heartbeat = match framing.protocol() {
            Protocol::V4 => Heartbeat::new(now, interval, timeout),
            #[cfg(feature = "eio3")]
            Protocol::V3 => Heartbeat::client_pings(now, interval, timeout),
        };
        let session = Arc::new(Session::new(
            id,
            info,
            transport,
            heartbeat,
            self.inner.sessions.clone(),
            OutboxLimits::new(config),
            framing,
        ));
        let upgrades = match transport {
            TransportKind::Polling if config.allow_websocket => r#"["websocket"]"#,
            _ => "[]",
        };
        let open = format!(
            r#"0{{"sid":"{}","upgrades":{},"pingInterval":{},"pingTimeout":{},"maxPayload":{}}}"#,
            session.id(),
            upgrades,
            config.ping_interval.as_millis(),
            config.ping_timeout.as_millis(),
            config.max_payload,
        );
        self.inner.sessions.insert(session.clone());
        let handler = self.inner.handler.on_open(&session);
        session.set_handler(handler);
        tracing::debug!(
            sid = session.id(),
            transport = transport.name(),
            "engine session opened"
        );
        (session, open)
    }
}

fn allowed_origin(cors: &Cors, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
    match (&cors.origins, origin) {
        (AllowedOrigins::Any, Some(o)) if cors.credentials => Some(o.clone()),
        (AllowedOrigins::Any, _) => Some(HeaderValue::from_static("*")),
        (origins, Some(o)) => origins.contains(o.as_bytes()).then(|| o.clone()),
        (AllowedOrigins::List(_), None) => None,
    }
}

fn apply_cors(cors: &Cors, origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
    let Some(allowed) = allowed_origin(cors, origin) else {
        return;
    };
    let reflected = allowed != "*";
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
    if reflected {
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    if cors.credentials {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
}

fn preflight(cors: &Cors, origin: Option<&HeaderValue>, req: &HeaderMap) -> Response<Body> {
    let mut res = Response::new(Full::new(Bytes::new()));
    *res.status_mut() = StatusCode::NO_CONTENT;
    let headers = res.headers_mut();
    apply_cors(cors, origin, headers);
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET,HEAD,PUT,PATCH,POST,DELETE"),
    );
    if let Some(requested) = req.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested.clone());
        headers.append(
            header::VARY,
            HeaderValue::from_static("Access-Control-Request-Headers"),
        );
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    res
}
