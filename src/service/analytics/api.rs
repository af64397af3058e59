//! The HTTP side of the analytics service, on the same port as Socket.IO:
//! `POST /api/v1/orgs/{org}/events`, `GET /api/v1/stats`, `GET /api/v1/openapi.json` (the API's
//! OpenAPI 3.1 document, `openapi.json` beside this file), `GET /healthz`, the dashboard at `/`, and
//! the stock client bundle at `<path>socket.io.js`, and `GET /metrics` unless it has a listener of
//! its own ([`Analytics::metrics_service`]).
//!
//! Access to the API (events and stats) is decided in one place (`Analytics::api_access`): with an
//! API key it needs `Authorization: Bearer <key>` (else 401); without one it is open only in
//! development mode or with [`AnalyticsConfig::api_open`](super::AnalyticsConfig::api_open), and in
//! production mode it fails closed with 503 (the service is not configured to take requests: no
//! key was given, and no client can fix that by retrying with other credentials).

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use serde_json::{Value, json};

use tidings::engineio::error::Body;
use tidings::server::Service;

use super::events::{Invalid, valid_org_id, validate_event};
use super::{Analytics, now_ms};

/// The largest accepted API request body.
pub const MAX_API_BODY: usize = 1_000_000;
/// The most events in one batch.
pub const MAX_BATCH: usize = 1000;

const DASHBOARD: &str = include_str!("dashboard.html");
/// The dashboard client package's module (`client/index.js`), served at `/client/analytics.js` for
/// the dashboard page (which maps `socket.io-client` to the stock ESM bundle).
const CLIENT_MODULE: &str = include_str!("client/index.js");
/// The API's OpenAPI 3.1 document, served at `/api/v1/openapi.json`.
pub const OPENAPI: &str = include_str!("openapi.json");

fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    let mut res = Response::new(Full::new(Bytes::from(body.to_string())));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

fn error(status: StatusCode, message: &str) -> Response<Body> {
    json_response(status, &json!({ "error": message }))
}

/// An error after which the connection is closed: the rest of the request cannot be trusted to
/// arrive, so the connection is not kept for another.
fn error_closing(status: StatusCode, message: &str) -> Response<Body> {
    let mut res = error(status, message);
    res.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    res
}

impl Service for Analytics {
    async fn call(&self, req: Request<Incoming>, remote: SocketAddr) -> Response<Body> {
        let io = self.io();
        let path = req.uri().path().to_owned();
        if io.engine().matches(&path) {
            return io.handle(req, Some(remote)).await;
        }
        let engine_path = &io.config().engine.path;
        if let Some(file) = path.strip_prefix(engine_path.as_str()) {
            return self.client_bundle(file).await;
        }
        match (req.method(), path.as_str()) {
            (&Method::GET, "/") | (&Method::GET, "/index.html") => {
                let mut res = Response::new(Full::new(Bytes::from_static(DASHBOARD.as_bytes())));
                res.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                );
                res
            }
            (&Method::GET, "/healthz") => json_response(StatusCode::OK, &json!({ "status": "ok" })),
            (&Method::GET, "/client/analytics.js") => {
                let mut res =
                    Response::new(Full::new(Bytes::from_static(CLIENT_MODULE.as_bytes())));
                res.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/javascript; charset=utf-8"),
                );
                res
            }
            (&Method::GET, "/api/v1/openapi.json") => {
                let mut res = Response::new(Full::new(Bytes::from_static(OPENAPI.as_bytes())));
                res.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                res
            }
            (&Method::GET, "/api/v1/stats") => match self.api_access(&req) {
                Ok(()) => json_response(StatusCode::OK, &self.stats()),
                Err(refused) => refused.into_response(),
            },
            (&Method::GET, "/metrics") if self.config().serve_metrics => self.metrics_response(),
            (_, p) if p.starts_with("/api/v1/orgs/") => {
                let org = p
                    .strip_prefix("/api/v1/orgs/")
                    .and_then(|rest| rest.strip_suffix("/events"))
                    .map(str::to_owned);
                match (req.method(), org) {
                    (&Method::POST, Some(org)) => {
                        let res = self.post_events(&org, req).await;
                        *self
                            .shared
                            .counters
                            .api_requests
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .entry(res.status().as_u16())
                            .or_default() += 1;
                        res
                    }
                    (_, Some(_)) => error(StatusCode::METHOD_NOT_ALLOWED, "use POST"),
                    (_, None) => error(StatusCode::NOT_FOUND, "not found"),
                }
            }
            _ => error(StatusCode::NOT_FOUND, "not found"),
        }
    }

    fn shutdown(&self) {
        self.io().shutdown();
    }
}

/// `GET /metrics` alone, for a listener of its own (`--metrics-addr`): everything else is 404.
#[derive(Debug, Clone)]
pub struct MetricsService {
    analytics: Analytics,
}

impl Service for MetricsService {
    async fn call(&self, req: Request<Incoming>, _remote: SocketAddr) -> Response<Body> {
        if req.method() == Method::GET && req.uri().path() == "/metrics" {
            self.analytics.metrics_response()
        } else {
            error(StatusCode::NOT_FOUND, "not found")
        }
    }
}

impl Analytics {
    /// A service answering `GET /metrics` only, to serve on a separate (private) listener. Set
    /// [`AnalyticsConfig::serve_metrics`](super::AnalyticsConfig::serve_metrics) to false so that
    /// the public port stops answering it.
    pub fn metrics_service(&self) -> MetricsService {
        MetricsService {
            analytics: self.clone(),
        }
    }

    fn metrics_response(&self) -> Response<Body> {
        let mut res = Response::new(Full::new(Bytes::from(self.metrics_text())));
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        res
    }

    /// The server's metrics and the service's own, in Prometheus text format.
    pub fn metrics_text(&self) -> String {
        use std::sync::atomic::Ordering;
        let mut e = tidings::metrics::Exposition::new();
        self.io().write_metrics(&mut e);
        let c = &self.shared.counters;
        let by_status: Vec<(String, u64)> = c
            .api_requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(status, n)| (status.to_string(), *n))
            .collect();
        e.labelled(
            "tidings_api_requests_total",
            "counter",
            "Event API requests by HTTP status.",
            "status",
            by_status.iter().map(|(s, n)| (s.as_str(), *n)),
        );
        e.single(
            "tidings_analytics_events_in_total",
            "counter",
            "Updates accepted.",
            c.events_in.load(Ordering::Relaxed),
        );
        e.single(
            "tidings_analytics_events_out_total",
            "counter",
            "Updates delivered to dashboards.",
            c.events_out.load(Ordering::Relaxed),
        );
        e.single(
            "tidings_analytics_tokens_expired_total",
            "counter",
            "Sockets disconnected because their token expired.",
            c.tokens_expired.load(Ordering::Relaxed),
        );
        e.single(
            "tidings_analytics_token_deadlines",
            "gauge",
            "Connected sockets whose token deadline is watched.",
            self.shared.expiry.len() as u64,
        );
        super::process::write(&mut e);
        e.finish()
    }

    /// The one access check of the HTTP API (see the module doc).
    fn api_access(&self, req: &Request<Incoming>) -> Result<(), Refused> {
        let config = self.config();
        if config.api_is_open() {
            return Ok(());
        }
        let Some(key) = config.api_key.as_deref() else {
            tracing::debug!(path = %req.uri().path(), "API refused: no API key configured");
            return Err(Refused::Closed);
        };
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given.is_some_and(|given| constant_time_eq(given.as_bytes(), key.as_bytes())) {
            Ok(())
        } else {
            tracing::debug!(path = %req.uri().path(), "API refused: missing or wrong key");
            Err(Refused::Unauthorized)
        }
    }

    /// `POST /api/v1/orgs/{org}/events`: one event object or an array of them. Every event is
    /// validated before any is published, so a bad batch changes nothing.
    async fn post_events(&self, org: &str, req: Request<Incoming>) -> Response<Body> {
        if let Err(refused) = self.api_access(&req) {
            return refused.into_response();
        }
        if !valid_org_id(org) {
            return invalid(&Invalid {
                field: "organizationId".into(),
                message: "must be 1-128 characters of A-Z a-z 0-9 _ . -".into(),
            });
        }
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|len| len > MAX_API_BODY as u64) {
            return error(StatusCode::PAYLOAD_TOO_LARGE, "body over 1 MB");
        }
        let timeout = self.config().api_body_timeout;
        let collect = Limited::new(req.into_body(), MAX_API_BODY).collect();
        let body = match tokio::time::timeout(timeout, collect).await {
            Ok(Ok(b)) => b.to_bytes(),
            Ok(Err(err)) if err.is::<http_body_util::LengthLimitError>() => {
                return error(StatusCode::PAYLOAD_TOO_LARGE, "body over 1 MB");
            }
            Ok(Err(_)) => return error(StatusCode::BAD_REQUEST, "could not read body"),
            Err(_) => {
                tracing::debug!(org, ?timeout, "API body not received in time");
                return error_closing(StatusCode::REQUEST_TIMEOUT, "body not received in time");
            }
        };
        let value: Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(err) => {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    &json!({ "error": "invalid JSON", "field": "body", "message": err.to_string() }),
                );
            }
        };
        let (items, batch) = match value {
            Value::Array(items) => (items, true),
            single => (vec![single], false),
        };
        if items.is_empty() || items.len() > MAX_BATCH {
            return invalid(&Invalid {
                field: "events".into(),
                message: format!("a batch holds 1 to {MAX_BATCH} events"),
            });
        }
        let now = now_ms();
        let mut updates = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match validate_event(org, item, now) {
                Ok(update) => updates.push(update),
                Err(mut err) => {
                    if batch {
                        err.field = format!("events[{i}].{}", err.field);
                    }
                    return invalid(&err);
                }
            }
        }
        let delivered = self.publish(&updates);
        // `delivered` counts this node's sockets; in a cluster the other nodes deliver to theirs
        // too, uncounted here, which `cluster` says.
        let cluster = self.io().config().adapter.is_some();
        json_response(
            StatusCode::OK,
            &json!({ "accepted": updates.len(), "delivered": delivered, "cluster": cluster }),
        )
    }

    async fn client_bundle(&self, file: &str) -> Response<Body> {
        const FILES: [&str; 6] = [
            "socket.io.js",
            "socket.io.min.js",
            "socket.io.js.map",
            "socket.io.min.js.map",
            "socket.io.esm.min.js",
            "socket.io.esm.min.js.map",
        ];
        if !FILES.contains(&file) {
            return error(StatusCode::NOT_FOUND, "not found");
        }
        let path = self.config().client_dir.join(file);
        match tokio::fs::read(&path).await {
            Ok(bytes) => {
                let mut res = Response::new(Full::new(Bytes::from(bytes)));
                let ct = if file.ends_with(".map") {
                    "application/json"
                } else {
                    "application/javascript; charset=utf-8"
                };
                res.headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
                res.headers_mut().insert(
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=3600"),
                );
                res
            }
            Err(err) => {
                tracing::debug!(path = %path.display(), %err, "client bundle unavailable");
                error(StatusCode::NOT_FOUND, "client bundle not installed")
            }
        }
    }
}

/// Why the API refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    /// Production mode without an API key (and not `api_open`): nobody is let in.
    Closed,
    /// A key is configured and the request did not carry it.
    Unauthorized,
}

impl Refused {
    fn into_response(self) -> Response<Body> {
        match self {
            Self::Closed => error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the API is closed: no API key is configured",
            ),
            Self::Unauthorized => error(StatusCode::UNAUTHORIZED, "missing or wrong API key"),
        }
    }
}

fn invalid(err: &Invalid) -> Response<Body> {
    json_response(
        StatusCode::BAD_REQUEST,
        &json!({ "error": "invalid event", "field": err.field, "message": err.message }),
    )
}

/// Compares secrets without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
