//! The real-time analytics service `tidings` runs by default: multi-tenant dashboards that update
//! live. Built only on the public library API.
//!
//! Socket side (namespace `/`):
//! - `join:analytics` `{organizationId}` → joins room `org:{id}` (ack `{ok:true, room}` or
//!   `{ok:false, error}`), `leave:analytics` `{organizationId}`;
//! - `subscribe:events` / `unsubscribe:events` with a list of update types (default: all);
//! - `request:history` `{since, organizationId?}` → ack `{ok, events}`;
//! - `ping` → `pong` `{timestamp}` (and the same as ack, when asked).
//!
//! Updates go out as `analytics:update` `{type, organizationId, data, timestamp}`.
//!
//! Tenant isolation: with a secret configured, a socket must connect with `auth: {token}`, an HS256
//! token whose `orgs` claim lists what it may join. Delivery is by room: a socket is in
//! `org:{id}:{type}` only for organisations it was allowed to join and types it subscribed to, and an
//! update of type `t` for organisation `o` goes to room `org:o:t` alone.

pub mod api;
pub mod auth;
pub mod events;
pub mod history;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::socketio::{Args, ConnectError, SocketIo, SocketRef};

use auth::{Grant, Verifier};
use events::{Update, UpdateType, valid_org_id};
use history::History;

/// Options of the analytics service.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AnalyticsConfig {
    /// The HS256 secret dashboard tokens are signed with. `None` = development mode (any org).
    pub auth_secret: Option<String>,
    /// The bearer key other services use on the HTTP API. `None` = open API (development mode).
    pub api_key: Option<String>,
    /// Updates kept per organisation for `request:history`. Default 1 000.
    pub history_len: usize,
    /// How long updates stay in the history. Default 1 hour.
    pub history_age: Duration,
    /// Where the stock socket.io-client browser bundle lives (served at `<path>socket.io.js`).
    pub client_dir: PathBuf,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        Self {
            auth_secret: None,
            api_key: None,
            history_len: 1000,
            history_age: Duration::from_secs(3600),
            client_dir: PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/src/analytics/web/node_modules/socket.io-client/dist"
            )),
        }
    }
}

/// Counters for `GET /api/v1/stats`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Updates accepted (API and demo).
    pub events_in: AtomicU64,
    /// Deliveries of updates to sockets.
    pub events_out: AtomicU64,
    /// Joins refused for lack of a grant.
    pub joins_refused: AtomicU64,
    /// Event API answers by HTTP status.
    pub api_requests: std::sync::Mutex<std::collections::BTreeMap<u16, u64>>,
}

pub(crate) struct Shared {
    pub(crate) io: SocketIo,
    pub(crate) config: AnalyticsConfig,
    verifier: Option<Verifier>,
    history: History,
    pub(crate) counters: Counters,
    started: Instant,
}

/// The analytics service: a handle over the Socket.IO server it drives.
#[derive(Clone)]
pub struct Analytics {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Analytics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Analytics").finish_non_exhaustive()
    }
}

/// What one socket has joined and wants.
struct Subscription {
    grant: Grant,
    orgs: HashSet<String>,
    types: HashSet<UpdateType>,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn org_room(org: &str) -> String {
    format!("org:{org}")
}

fn type_room(org: &str, kind: UpdateType) -> String {
    format!("org:{org}:{}", kind.as_str())
}

impl Analytics {
    /// Installs the service's handlers on `io`'s main namespace.
    pub fn new(io: SocketIo, config: AnalyticsConfig) -> Self {
        let verifier = config
            .auth_secret
            .as_deref()
            .map(|s| Verifier::new(s.as_bytes()));
        let shared = Arc::new(Shared {
            io: io.clone(),
            history: History::new(config.history_len, config.history_age),
            config,
            verifier,
            counters: Counters::default(),
            started: Instant::now(),
        });
        let this = Self { shared };
        let me = this.clone();
        let ns = io.ns("/", move |socket| me.on_connection(&socket));
        let me = this.clone();
        ns.use_middleware(move |socket: SocketRef| {
            let result = me.authenticate(&socket);
            async move { result }
        });
        // A resume passes the middleware above first; then it keeps only the organisations its
        // (new) token grants: other rooms are not rejoined and nothing sent to them is replayed. A
        // token granting none of them does not resume at all (the saved session stays its owner's).
        ns.on_resume(|socket, room| {
            let Some(rest) = room.strip_prefix("org:") else {
                return false;
            };
            let org = rest.split_once(':').map_or(rest, |(org, _)| org);
            socket
                .with_extension(|sub: &mut Subscription| sub.grant.allows(org))
                .unwrap_or(false)
        });
        this
    }

    /// The Socket.IO server.
    pub fn io(&self) -> &SocketIo {
        &self.shared.io
    }

    /// The configuration.
    pub fn config(&self) -> &AnalyticsConfig {
        &self.shared.config
    }

    /// Whether the service runs without a token secret (any org may be joined).
    pub fn is_development_mode(&self) -> bool {
        self.shared.verifier.is_none()
    }

    fn authenticate(&self, socket: &SocketRef) -> Result<(), ConnectError> {
        let grant = match &self.shared.verifier {
            None => Grant::Any,
            Some(verifier) => {
                let token = socket.handshake().auth_str("token");
                match token.map(|t| verifier.verify(&t)) {
                    Some(Ok(grant)) => grant,
                    Some(Err(err)) => {
                        tracing::info!(socket = socket.id(), %err, "refused token");
                        return Err(ConnectError::new("unauthorized"));
                    }
                    None => return Err(ConnectError::new("unauthorized")),
                }
            }
        };
        socket.insert_extension(Subscription {
            grant,
            orgs: HashSet::new(),
            types: UpdateType::ALL.into_iter().collect(),
        });
        Ok(())
    }

    fn on_connection(&self, socket: &SocketRef) {
        if socket.recovered() {
            restore_subscription(socket);
        }
        let me = self.clone();
        socket.on("join:analytics", move |socket, args: Args, ack| {
            let reply = me.join(socket, &args);
            if let Some(ack) = ack {
                ack.send_one(reply);
            }
        });
        socket.on("leave:analytics", |socket, args: Args, ack| {
            let org = org_arg(&args);
            let left = org.as_deref().is_some_and(|org| leave(socket, org));
            if let Some(ack) = ack {
                ack.send_one(json!({ "ok": left }));
            }
        });
        socket.on("subscribe:events", |socket, args: Args, ack| {
            let reply = set_types(socket, &args, true);
            if let Some(ack) = ack {
                ack.send_one(reply);
            }
        });
        socket.on("unsubscribe:events", |socket, args: Args, ack| {
            let reply = set_types(socket, &args, false);
            if let Some(ack) = ack {
                ack.send_one(reply);
            }
        });
        let me = self.clone();
        socket.on("request:history", move |socket, args: Args, ack| {
            let reply = me.history_for(socket, &args);
            if let Some(ack) = ack {
                ack.send_one(reply);
            }
        });
        socket.on("ping", |socket, _, ack| {
            let pong = json!({ "timestamp": now_ms() });
            match ack {
                Some(ack) => ack.send_one(pong),
                None => socket.emit("pong", pong),
            };
        });
    }

    fn join(&self, socket: &SocketRef, args: &Args) -> Value {
        let Some(org) = org_arg(args) else {
            return json!({ "ok": false, "error": "organizationId is required" });
        };
        if !valid_org_id(&org) {
            return json!({ "ok": false, "error": "invalid organizationId" });
        }
        let types = socket.with_extension(|sub: &mut Subscription| {
            sub.grant.allows(&org).then(|| {
                sub.orgs.insert(org.clone());
                sub.types.clone()
            })
        });
        let Some(Some(types)) = types else {
            self.shared
                .counters
                .joins_refused
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(socket = socket.id(), org = %org, "join refused: organisation not granted");
            return json!({ "ok": false, "error": "forbidden" });
        };
        let mut rooms = vec![org_room(&org)];
        rooms.extend(types.into_iter().map(|t| type_room(&org, t)));
        socket.join(rooms);
        json!({ "ok": true, "room": org_room(&org) })
    }

    fn history_for(&self, socket: &SocketRef, args: &Args) -> Value {
        let since = args
            .get::<Value>(0)
            .ok()
            .and_then(|v| v.get("since").and_then(Value::as_u64))
            .unwrap_or(0);
        let wanted = org_arg(args);
        let orgs = socket
            .with_extension(|sub: &mut Subscription| sub.orgs.clone())
            .unwrap_or_default();
        let orgs: Vec<String> = match wanted {
            Some(org) if orgs.contains(&org) => vec![org],
            Some(_) => return json!({ "ok": false, "error": "not joined" }),
            None => orgs.into_iter().collect(),
        };
        let now = now_ms();
        let mut events: Vec<Value> = orgs
            .iter()
            .flat_map(|org| self.shared.history.since(org, since, now))
            .collect();
        events.sort_by_key(|e| e.get("timestamp").and_then(Value::as_u64).unwrap_or(0));
        json!({ "ok": true, "events": events })
    }

    /// Publishes validated updates: records them in the history and emits each to its organisation's
    /// room for its type. Costs no encoding or fan-out when nobody listens. Returns the deliveries.
    pub fn publish(&self, updates: &[Update]) -> usize {
        let now = now_ms();
        let mut delivered = 0;
        for update in updates {
            let payload = update.to_json();
            self.shared.history.record(
                &update.organization_id,
                update.timestamp,
                payload.clone(),
                now,
            );
            delivered += self
                .shared
                .io
                .to(type_room(&update.organization_id, update.kind))
                .emit("analytics:update", payload);
        }
        let counters = &self.shared.counters;
        counters
            .events_in
            .fetch_add(updates.len() as u64, Ordering::Relaxed);
        counters
            .events_out
            .fetch_add(delivered as u64, Ordering::Relaxed);
        delivered
    }

    /// Connection statistics.
    pub fn stats(&self) -> Value {
        let io = &self.shared.io;
        let mut orgs = serde_json::Map::new();
        let mut rooms = 0usize;
        if let Some(ns) = io.of("/") {
            for room in ns.adapter().rooms() {
                rooms += 1;
                let Some(org) = room.strip_prefix("org:") else {
                    continue;
                };
                // `org:{id}:{type}` rooms are per-type subscriptions; ids never contain ':'.
                if org.contains(':') {
                    continue;
                }
                let members = ns.to(room.clone()).sockets().len();
                orgs.insert(org.to_owned(), json!(members));
            }
        }
        let sockets = io.of("/").map_or(0, |ns| ns.sockets().len());
        let c = &self.shared.counters;
        json!({
            "connections": io.engine().session_count(),
            "sockets": sockets,
            "socketsPerOrg": orgs,
            "rooms": rooms,
            "eventsIn": c.events_in.load(Ordering::Relaxed),
            "eventsOut": c.events_out.load(Ordering::Relaxed),
            "joinsRefused": c.joins_refused.load(Ordering::Relaxed),
            "uptimeSeconds": self.shared.started.elapsed().as_secs(),
        })
    }

    /// Publishes plausible demo traffic for organisation `demo` until the process ends.
    pub fn spawn_demo_traffic(&self, every: Duration) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            let mut n: u64 = 0;
            let mut total: u64 = 0;
            loop {
                tick.tick().await;
                n += 1;
                let now = now_ms();
                // A cheap pseudo-random walk from the counter; demo data need not be unpredictable.
                let wave = ((n as f64) / 7.0).sin();
                let mut batch = vec![Update {
                    kind: UpdateType::Message,
                    organization_id: "demo".into(),
                    data: json!({
                        "conversationId": format!("c{}", n % 5),
                        "messageId": format!("m{n}"),
                        "role": if n % 2 == 0 { "user" } else { "assistant" },
                        "content": format!("Demo message #{n}"),
                        "responseTime": 400.0 + 300.0 * (wave + 1.0),
                    }),
                    timestamp: now,
                }];
                total += 1;
                batch.push(Update {
                    kind: UpdateType::Sentiment,
                    organization_id: "demo".into(),
                    data: json!({
                        "conversationId": format!("c{}", n % 5),
                        "messageId": format!("m{n}"),
                        "score": (wave * 100.0).round() / 100.0,
                        "confidence": 0.8,
                        "sentiment": if wave > 0.2 { "positive" } else if wave < -0.2 { "negative" } else { "neutral" },
                    }),
                    timestamp: now,
                });
                if n % 5 == 0 {
                    batch.push(Update {
                        kind: UpdateType::Metrics,
                        organization_id: "demo".into(),
                        data: json!({
                            "totalMessages": total,
                            "avgResponseTime": 550.0 + 100.0 * wave,
                            "satisfactionScore": 4.2 + 0.5 * wave,
                            "resolutionRate": 0.8 + 0.1 * wave,
                        }),
                        timestamp: now,
                    });
                }
                me.publish(&batch);
            }
        });
    }
}

/// A recovered socket got its rooms back but not its subscription state: rebuild that from the rooms,
/// dropping any organisation its (re-verified) grant no longer allows.
fn restore_subscription(socket: &SocketRef) {
    let rooms = socket.rooms();
    let mut denied = Vec::new();
    socket.with_extension(|sub: &mut Subscription| {
        sub.orgs.clear();
        sub.types.clear();
        for room in &rooms {
            let Some(rest) = room.strip_prefix("org:") else {
                continue;
            };
            let (org, kind) = match rest.split_once(':') {
                Some((org, kind)) => (org, UpdateType::parse(kind)),
                None => (rest, None),
            };
            if !sub.grant.allows(org) {
                denied.push(room.clone());
                continue;
            }
            sub.orgs.insert(org.to_owned());
            if let Some(kind) = kind {
                sub.types.insert(kind);
            }
        }
        if sub.types.is_empty() {
            sub.types = UpdateType::ALL.into_iter().collect();
        }
    });
    for room in denied {
        socket.leave(&room);
    }
}

/// The `organizationId` of the first argument (an object, or the id as a plain string).
fn org_arg(args: &Args) -> Option<String> {
    match args.values.first()? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("organizationId")?.as_str().map(str::to_owned),
        _ => None,
    }
}

fn leave(socket: &SocketRef, org: &str) -> bool {
    let was_in = socket
        .with_extension(|sub: &mut Subscription| sub.orgs.remove(org))
        .unwrap_or(false);
    socket.leave(&org_room(org));
    for kind in UpdateType::ALL {
        socket.leave(&type_room(org, kind));
    }
    was_in
}

/// `subscribe:events` (add = true) and `unsubscribe:events`: `["message", ...]` or `{types: [...]}`.
fn set_types(socket: &SocketRef, args: &Args, add: bool) -> Value {
    let list = match args.values.first() {
        Some(Value::Array(items)) => items.clone(),
        Some(Value::Object(o)) => o
            .get("types")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
        Some(Value::String(s)) => vec![Value::String(s.clone())],
        _ => Vec::new(),
    };
    let mut kinds = Vec::new();
    for item in &list {
        match item.as_str().and_then(UpdateType::parse) {
            Some(kind) => kinds.push(kind),
            None => return json!({ "ok": false, "error": format!("unknown type {item}") }),
        }
    }
    let Some((orgs, types)) = socket.with_extension(|sub: &mut Subscription| {
        for kind in &kinds {
            if add {
                sub.types.insert(*kind);
            } else {
                sub.types.remove(kind);
            }
        }
        (sub.orgs.clone(), sub.types.clone())
    }) else {
        return json!({ "ok": false, "error": "not connected" });
    };
    for org in &orgs {
        for kind in UpdateType::ALL {
            if types.contains(&kind) {
                socket.join(type_room(org, kind));
            } else {
                socket.leave(&type_room(org, kind));
            }
        }
    }
    let mut names: Vec<&str> = types.iter().map(|t| t.as_str()).collect();
    names.sort_unstable();
    json!({ "ok": true, "types": names })
}
