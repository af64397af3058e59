//! The real-time analytics service `tidings` runs by default: multi-tenant dashboards that update
//! live. Built only on the public library API.
//!
//! Socket side (namespace `/`):
//! - `join:analytics` `{organizationId}` → joins room `org:{id}` (ack `{ok:true, room}` or
//!   `{ok:false, error}`: `forbidden`, `invalid organizationId`, or `room limit reached` past
//!   `max_rooms_per_socket`, in which case the socket does not count as joined),
//!   `leave:analytics` `{organizationId}`;
//! - `subscribe:events` / `unsubscribe:events` with a list of update types (default: all);
//! - `request:history` `{since, limit?, organizationId?}` → ack `{ok, events, more}`: one page of
//!   the updates after `since` (ms) of the joined organisations (or of one of them), oldest first, at
//!   most `limit` (default [`AnalyticsConfig::history_page_default`], capped at
//!   [`AnalyticsConfig::history_page_max`]) and about [`AnalyticsConfig::history_page_bytes`] of
//!   JSON; `more` says to ask again with `since` = the last timestamp. Each request is one inbound
//!   event, so it counts against the socket's event rate limit like any other;
//! - `ping` → `pong` `{timestamp}` (and the same as ack, when asked).
//!
//! Updates go out as `analytics:update` `{type, organizationId, data, timestamp}`.
//!
//! A socket whose token expires gets `analytics:error` `{code: "token_expired"}` and is then
//! disconnected by the server (one sweeper task watches every deadline); a token before its `nbf`
//! is refused at connect.
//!
//! Tenant isolation: with a secret configured, a socket must connect with `auth: {token}`, an HS256
//! token whose `orgs` claim lists what it may join. Delivery is by room: a socket is in
//! `org:{id}:{type}` only for organisations it was allowed to join and types it subscribed to, and an
//! update of type `t` for organisation `o` goes to room `org:o:t` alone.

pub mod api;
pub mod auth;
pub mod events;
mod expiry;
pub mod history;
mod process;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use tidings::socketio::{AckSender, Args, ConnectError, SocketIo, SocketRef};

use auth::{Grant, Refusal, Verifier};
use events::{Update, UpdateType, valid_org_id};
use expiry::Expiry;
use history::{History, Page};

/// Options of the analytics service.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AnalyticsConfig {
    /// The HS256 secret dashboard tokens are signed with. `None` = development mode (any org).
    pub auth_secret: Option<String>,
    /// The bearer key other services use on the HTTP API (`POST /api/v1/orgs/{org}/events` and
    /// `GET /api/v1/stats`). `None`: in development mode (no `auth_secret`) the API is open; in
    /// production mode it fails closed (503) unless [`Self::api_open`] says otherwise.
    pub api_key: Option<String>,
    /// With an `auth_secret` and no `api_key`, serve the API to anyone anyway. Default false: a
    /// production deployment that forgot its key must not let anyone post to any tenant.
    pub api_open: bool,
    /// How long an API request body may take to arrive in full; slower ones get 408. Default 10 s:
    /// a batch is at most 1 MB, which any live service sends far faster, while a body that never
    /// finishes would otherwise hold its buffer and connection forever.
    pub api_body_timeout: Duration,
    /// Whether `GET /metrics` is answered on the service's port. Default true. Set it to false when
    /// the metrics are served on a listener of their own ([`Analytics::metrics_service`]).
    pub serve_metrics: bool,
    /// Updates kept per organisation for `request:history`. Default 1 000.
    pub history_len: usize,
    /// How long updates stay in the history. Default 1 hour.
    pub history_age: Duration,
    /// Updates in a `request:history` reply when the request names no `limit`. Default 100.
    pub history_page_default: usize,
    /// The most updates in a `request:history` reply, whatever the request asks. Default 500.
    pub history_page_max: usize,
    /// The most bytes of update JSON in a `request:history` reply (one update is always sent, however
    /// large). Default 256 KiB: a page is built and encoded while the socket's session waits, and a
    /// client that floods history requests costs at most its event rate limit times this.
    pub history_page_bytes: usize,
    /// Where the stock socket.io-client browser bundle lives (served at `<path>socket.io.js`).
    pub client_dir: PathBuf,
}

impl AnalyticsConfig {
    /// Checks the options once, at start-up.
    pub fn validate(&self) -> Result<(), String> {
        if self.history_page_max == 0 || self.history_page_default == 0 {
            return Err("history page limits must be above zero".to_owned());
        }
        if self.history_page_default > self.history_page_max {
            return Err(format!(
                "the default history page ({}) exceeds the maximum ({})",
                self.history_page_default, self.history_page_max
            ));
        }
        if self.history_page_bytes == 0 {
            return Err("the history page byte budget must be above zero".to_owned());
        }
        if self.api_body_timeout.is_zero() {
            return Err("the API body timeout must be above zero".to_owned());
        }
        Ok(())
    }

    /// Whether the HTTP API needs no key: development mode without a key, or [`Self::api_open`].
    /// With a key configured the key is always required.
    pub fn api_is_open(&self) -> bool {
        self.api_key.is_none() && (self.auth_secret.is_none() || self.api_open)
    }
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        Self {
            auth_secret: None,
            api_key: None,
            api_open: false,
            api_body_timeout: Duration::from_secs(10),
            serve_metrics: true,
            history_len: 1000,
            history_age: Duration::from_secs(3600),
            history_page_default: 100,
            history_page_max: 500,
            history_page_bytes: 256 * 1024,
            client_dir: PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/analytics/web/node_modules/socket.io-client/dist"
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
    /// Sockets disconnected because their token expired.
    pub tokens_expired: AtomicU64,
    /// Event API answers by HTTP status.
    pub api_requests: std::sync::Mutex<std::collections::BTreeMap<u16, u64>>,
}

pub(crate) struct Shared {
    pub(crate) io: SocketIo,
    pub(crate) config: AnalyticsConfig,
    verifier: Option<Verifier>,
    history: History,
    expiry: Arc<Expiry>,
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
    /// When the token expires (ms since the Unix epoch); `None` in development mode.
    expires_ms: Option<u64>,
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
    /// Installs the service's handlers on `io`'s main namespace. The options should have passed
    /// [`AnalyticsConfig::validate`].
    pub fn new(io: SocketIo, config: AnalyticsConfig) -> Self {
        let verifier = config
            .auth_secret
            .as_deref()
            .map(|s| Verifier::new(s.as_bytes()));
        let shared = Arc::new(Shared {
            io: io.clone(),
            history: History::new(config.history_len, config.history_age),
            expiry: Arc::default(),
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
        let refuse = |refusal: Refusal| {
            tracing::info!(
                socket = socket.id(),
                code = refusal.code(),
                "connect refused"
            );
            ConnectError::new(refusal.message()).with_data(json!({ "code": refusal.code() }))
        };
        let (grant, expires_ms) = match &self.shared.verifier {
            None => (Grant::Any, None),
            Some(verifier) => {
                let token = socket.handshake().auth_str("token");
                let verified = token
                    .ok_or(Refusal::Missing)
                    .and_then(|t| verifier.verify(&t))
                    .map_err(refuse)?;
                (verified.grant, Some(verified.exp.saturating_mul(1000)))
            }
        };
        // A dashboard may name its organisation at connect: one the token does not grant is
        // refused now, with its own code, rather than at its first join.
        if let Some(org) = socket.handshake().auth_str("organizationId") {
            if !grant.allows(&org) {
                return Err(refuse(Refusal::OrgForbidden(org)));
            }
        }
        socket.insert_extension(Subscription {
            grant,
            expires_ms,
            orgs: HashSet::new(),
            types: UpdateType::ALL.into_iter().collect(),
        });
        Ok(())
    }

    fn on_connection(&self, socket: &SocketRef) {
        if socket.recovered() {
            restore_subscription(socket);
        }
        self.watch_expiry(socket);
        let me = self.clone();
        socket.on("join:analytics", move |socket, args: Args, ack| {
            let reply = me.join(socket, &args);
            answer(ack, reply);
        });
        socket.on("leave:analytics", |socket, args: Args, ack| {
            let org = org_arg(&args);
            let left = org.as_deref().is_some_and(|org| leave(socket, org));
            answer(ack, json!({ "ok": left }));
        });
        socket.on("subscribe:events", |socket, args: Args, ack| {
            let reply = set_types(socket, &args, true);
            answer(ack, reply);
        });
        socket.on("unsubscribe:events", |socket, args: Args, ack| {
            let reply = set_types(socket, &args, false);
            answer(ack, reply);
        });
        let me = self.clone();
        socket.on("request:history", move |socket, args: Args, ack| {
            let reply = me.history_for(socket, &args);
            answer(ack, reply);
        });
        socket.on("ping", |socket, _, ack| {
            let pong = json!({ "timestamp": now_ms() });
            let sent = match ack {
                Some(ack) => ack.send_one(pong),
                None => socket.emit("pong", pong),
            };
            if let Err(err) = sent {
                tracing::debug!(socket = socket.id(), %err, "pong not sent");
            }
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
            sub.grant.allows(&org).then(|| sub.types.clone())
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
        // The subscription claims the organisation only once its rooms are joined: a join past
        // `max_rooms_per_socket` joins none of them, and would deliver nothing.
        if let Err(err) = socket.join(rooms) {
            tracing::debug!(socket = socket.id(), %err, "subscription join refused");
            return json!({ "ok": false, "error": "room limit reached" });
        }
        socket.with_extension(|sub: &mut Subscription| sub.orgs.insert(org.clone()));
        json!({ "ok": true, "room": org_room(&org) })
    }

    /// `request:history`: one page of the joined organisations' updates (see the module doc).
    fn history_for(&self, socket: &SocketRef, args: &Args) -> Value {
        let first = args.values.first();
        let field = |name: &str| first.and_then(|v| v.get(name)).and_then(Value::as_u64);
        let since = field("since").unwrap_or(0);
        let config = &self.shared.config;
        let limit = field("limit").map_or(config.history_page_default, |l| {
            usize::try_from(l).unwrap_or(usize::MAX)
        });
        let page = Page {
            limit: limit.clamp(1, config.history_page_max),
            max_bytes: config.history_page_bytes,
        };
        let wanted = org_arg(args);
        let orgs = socket
            .with_extension(|sub: &mut Subscription| match wanted {
                Some(org) => sub.orgs.contains(&org).then(|| vec![org]),
                None => Some(sub.orgs.iter().cloned().collect()),
            })
            .flatten();
        let Some(orgs) = orgs else {
            return json!({ "ok": false, "error": "not joined" });
        };
        let found =
            self.shared
                .history
                .page(orgs.iter().map(String::as_str), since, page, now_ms());
        // Parsed from the shared bytes here, with no lock held.
        let events: Vec<Value> = found
            .events
            .iter()
            .filter_map(|json| serde_json::from_slice(json).ok())
            .collect();
        json!({ "ok": true, "events": events, "more": found.more })
    }

    /// Watches the socket's token deadline; forgets it when the socket disconnects.
    fn watch_expiry(&self, socket: &SocketRef) {
        let Some(Some(deadline)) = socket.with_extension(|sub: &mut Subscription| sub.expires_ms)
        else {
            return;
        };
        let expiry = self.shared.expiry.clone();
        expiry.register(&self.shared.io, socket.id(), deadline);
        let me = self.clone();
        socket.on_disconnect(move |socket, reason| {
            me.shared.expiry.unregister(socket.id(), deadline);
            if reason == tidings::socketio::DisconnectReason::ServerNamespaceDisconnect
                && deadline <= now_ms()
            {
                me.shared
                    .counters
                    .tokens_expired
                    .fetch_add(1, Ordering::Relaxed);
            }
        });
    }

    /// Publishes validated updates: records them in the history and emits each to its organisation's
    /// room for its type. Costs no encoding or fan-out when nobody listens. Returns the deliveries.
    pub fn publish(&self, updates: &[Update]) -> usize {
        let now = now_ms();
        let mut delivered = 0;
        for update in updates {
            let payload = update.to_json();
            if let Ok(json) = serde_json::to_vec(&payload) {
                self.shared.history.record(
                    &update.organization_id,
                    update.timestamp,
                    json.into(),
                    now,
                );
            }
            match self
                .shared
                .io
                .to(type_room(&update.organization_id, update.kind))
                .emit("analytics:update", payload)
            {
                Ok(n) => delivered += n,
                // A JSON value under a fixed, unreserved name: not expected, but not fatal either.
                Err(err) => tracing::debug!(%err, "analytics update not emitted"),
            }
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

/// Whether the socket's token has expired at `now_ms` (development-mode sockets never expire).
fn token_expired(socket: &SocketRef, now_ms: u64) -> bool {
    socket
        .with_extension(|sub: &mut Subscription| sub.expires_ms)
        .flatten()
        .is_some_and(|deadline| deadline <= now_ms)
}

/// The `organizationId` of the first argument (an object, or the id as a plain string).
/// Answers a request's ack, if the client asked for one. A client gone meanwhile gets nothing: that is
/// its disconnect's business, so it is only logged.
fn answer(ack: Option<AckSender>, reply: Value) {
    if let Some(Err(err)) = ack.map(|ack| ack.send_one(reply)) {
        tracing::debug!(%err, "analytics reply not sent");
    }
}

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
    let Some((orgs, before, types)) = socket.with_extension(|sub: &mut Subscription| {
        let before = sub.types.clone();
        for kind in &kinds {
            if add {
                sub.types.insert(*kind);
            } else {
                sub.types.remove(kind);
            }
        }
        (sub.orgs.clone(), before, sub.types.clone())
    }) else {
        return json!({ "ok": false, "error": "not connected" });
    };
    let mut joined = true;
    for org in &orgs {
        for kind in UpdateType::ALL {
            if !types.contains(&kind) {
                socket.leave(&type_room(org, kind));
            }
        }
    }
    for org in &orgs {
        let rooms: Vec<String> = UpdateType::ALL
            .into_iter()
            .filter(|kind| types.contains(kind))
            .map(|kind| type_room(org, kind))
            .collect();
        if let Err(err) = socket.join(rooms) {
            tracing::debug!(socket = socket.id(), %err, "type change join refused");
            joined = false;
        }
    }
    if !joined {
        // Past `max_rooms_per_socket`: take the new types back, so the subscription claims only
        // what is delivered.
        for org in &orgs {
            for kind in types.difference(&before) {
                socket.leave(&type_room(org, *kind));
            }
        }
        socket.with_extension(|sub: &mut Subscription| sub.types = before);
        return json!({ "ok": false, "error": "room limit reached" });
    }
    let mut names: Vec<&str> = types.iter().map(|t| t.as_str()).collect();
    names.sort_unstable();
    json!({ "ok": true, "types": names })
}
