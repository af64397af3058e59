//! The HTTP side of the analytics service, on the same port as Socket.IO:
//! `POST /api/v1/orgs/{org}/events`, `GET /api/v1/stats`, `GET /healthz`, the dashboard at `/`, and
//! the stock client bundle at `<path>socket.io.js`.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use serde_json::{Value, json};

use crate::engineio::error::Body;
use crate::server::Service;

use super::events::{Invalid, valid_org_id, validate_event};
use super::{Analytics, now_ms};

/// The largest accepted API request body.
pub const MAX_API_BODY: usize = 1_000_000;
/// The most events in one batch.
pub const MAX_BATCH: usize = 1000;

const DASHBOARD: &str = include_str!("dashboard.html");

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
            (&Method::GET, "/api/v1/stats") => json_response(StatusCode::OK, &self.stats()),
            (&Method::GET, "/metrics") => {
                let mut res = Response::new(Full::new(Bytes::from(self.metrics_text())));
                res.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                res
            }
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

impl Analytics {
    /// The server's metrics and the service's own, in Prometheus text format.
    pub fn metrics_text(&self) -> String {
        use std::sync::atomic::Ordering;
        let mut e = crate::metrics::Exposition::new();
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
        e.finish()
    }

    fn authorized(&self, req: &Request<Incoming>) -> bool {
        let Some(key) = self.config().api_key.as_deref() else {
            return true;
        };
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        given.is_some_and(|given| constant_time_eq(given.as_bytes(), key.as_bytes()))
    }

    /// `POST /api/v1/orgs/{org}/events`: one event object or an array of them. Every event is
    /// validated before any is published, so a bad batch changes nothing.
    async fn post_events(&self, org: &str, req: Request<Incoming>) -> Response<Body> {
        if !self.authorized(&req) {
            return error(StatusCode::UNAUTHORIZED, "missing or wrong API key");
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
        let body = match Limited::new(req.into_body(), MAX_API_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(err) if err.is::<http_body_util::LengthLimitError>() => {
                return error(StatusCode::PAYLOAD_TOO_LARGE, "body over 1 MB");
            }
            Err(_) => return error(StatusCode::BAD_REQUEST, "could not read body"),
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
        json_response(
            StatusCode::OK,
            &json!({ "accepted": updates.len(), "delivered": delivered }),
        )
    }

    async fn client_bundle(&self, file: &str) -> Response<Body> {
        const FILES: [&str; 4] = [
            "socket.io.js",
            "socket.io.min.js",
            "socket.io.js.map",
            "socket.io.min.js.map",
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
