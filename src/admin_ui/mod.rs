//! The server side of the Socket.IO Admin UI (the `@socket.io/admin-ui` npm package, protocol of
//! version 0.5): the unmodified UI logs in to a Tidings server, lists its sockets, rooms and live
//! events, and can make sockets emit, join, leave and disconnect.
//!
//! Off by default: [`instrument`] turns it on for a server. It declares the admin namespace
//! (`/admin`) with a login middleware, installs the server's [`Observer`](crate::socketio::Observer) (see
//! [`crate::socketio::observer`]) and emits `server_stats` every 2 s. Built only on the public
//! library API.
//!
//! Protocol (the reference's `instrument(io, opts)`):
//! - Login: `auth {username, password}` checked against a bcrypt hash; success creates a session id
//!   (16 hex chars, kept 24 h) sent as `session`, which the UI reconnects with (`auth {sessionId}`).
//!   Failure: CONNECT_ERROR `invalid credentials`. Failed password attempts are throttled per client
//!   address ([`LoginThrottle`]): past the limit, CONNECT_ERROR `too many failed logins, retry later`
//!   without a password check. bcrypt runs on the blocking pool, never on the async workers.
//! - On connect: `config {supportedFeatures}`, then (development mode) `all_sockets [socket...]`.
//! - Development mode: `socket_connected`, `socket_updated`, `socket_disconnected`, `room_joined`,
//!   `room_left`, `event_received`, `event_sent`, each with the date last.
//! - Commands (unless read-only): `emit (nsp, filter?, event, ...args)`, `join (nsp, room, filter?)`,
//!   `leave (nsp, room, filter?)`, `_disconnect (nsp, close, filter?)`; `filter` is a room, and a
//!   socket id is a room.
//!
//! The UI's static files ship in the npm package (`ui/dist`); [`StaticFiles`] serves them under a
//! path of the server, which keeps the UI same-origin. Served elsewhere, the engine's CORS settings
//! must allow the UI's origin with credentials.

mod files;
mod instrument;
mod serialize;
mod throttle;

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::socketio::{Args, ConnectError, Namespace, SocketIo, SocketRef};

pub use files::StaticFiles;
use instrument::{EventBuffer, Instrumentation};
pub use throttle::LoginThrottle;
use throttle::Throttle;

/// How admins log in.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AdminAuth {
    /// Anyone who can reach the admin namespace is an admin. Use with care.
    None,
    /// A username and a bcrypt hash of the password (`$2a$` or `$2b$`; `$2y$` is refused, as the
    /// reference refuses it).
    Basic {
        /// The username.
        username: String,
        /// The bcrypt hash of the password.
        password_hash: String,
    },
}

impl std::fmt::Debug for AdminAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password_hash", &"(set)")
                .finish(),
        }
    }
}

/// What the reference calls `mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Every socket, room and event is reported (the reference's default).
    #[default]
    Development,
    /// Only `server_stats` (counts and aggregated events): cheaper on a busy server.
    Production,
}

/// Admin UI options.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AdminUiConfig {
    /// How admins log in.
    pub auth: AdminAuth,
    /// The admin namespace. Default `/admin` (what the UI connects to unless told otherwise).
    pub namespace: String,
    /// Admins may look but not act (no emit, join, leave or disconnect). Default false.
    pub readonly: bool,
    /// The name of this server in the UI. Default: the host name.
    pub server_id: Option<String>,
    /// Default [`Mode::Development`].
    pub mode: Mode,
    /// How often `server_stats` goes out. Default 2 s (the reference's period; the UI marks a
    /// server unhealthy after 10 s without one).
    pub stats_interval: Duration,
    /// How long a login session id stays valid. Default 24 h (the reference's store TTL).
    pub session_ttl: Duration,
    /// Throttling of failed password logins per client address. Default: 5 per 60 s, 10 000
    /// addresses tracked (the reference has none).
    pub login_throttle: LoginThrottle,
}

impl AdminUiConfig {
    /// Options with this login and the defaults.
    pub fn new(auth: AdminAuth) -> Self {
        Self {
            auth,
            namespace: "/admin".to_owned(),
            readonly: false,
            server_id: None,
            mode: Mode::Development,
            stats_interval: Duration::from_secs(2),
            session_ttl: Duration::from_secs(86_400),
            login_throttle: LoginThrottle::default(),
        }
    }

    /// Options for a login with `username` and a bcrypt `password_hash`.
    pub fn basic(username: impl Into<String>, password_hash: impl Into<String>) -> Self {
        Self::new(AdminAuth::Basic {
            username: username.into(),
            password_hash: password_hash.into(),
        })
    }

    /// Checks the options: a valid bcrypt hash, a namespace name.
    pub fn validate(&self) -> Result<(), String> {
        if !self.namespace.starts_with('/') || self.namespace.contains(',') {
            return Err(format!(
                "the admin namespace must start with '/' and contain no ',': {:?}",
                self.namespace
            ));
        }
        if self.login_throttle.max_failures > 0 && self.login_throttle.window.is_zero() {
            return Err("the admin login throttle window must be above zero".to_owned());
        }
        if self.stats_interval.is_zero() {
            return Err("the admin stats interval must be above zero".to_owned());
        }
        if let AdminAuth::Basic { password_hash, .. } = &self.auth {
            let valid = (password_hash.starts_with("$2a$") || password_hash.starts_with("$2b$"))
                && password_hash.parse::<bcrypt::HashParts>().is_ok();
            if !valid {
                return Err(
                    "the admin password must be a bcrypt hash starting with $2a$ or $2b$"
                        .to_owned(),
                );
            }
        }
        Ok(())
    }
}

/// Login sessions: id → expiry.
#[derive(Debug, Default)]
struct Sessions {
    expiry: Mutex<HashMap<String, Instant>>,
}

impl Sessions {
    fn contains(&self, id: &str) -> bool {
        let now = Instant::now();
        let mut map = self.expiry.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, expiry| *expiry > now);
        map.contains_key(id)
    }

    fn create(&self, ttl: Duration) -> String {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).expect("the OS random source failed");
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        self.expiry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), Instant::now() + ttl);
        id
    }
}

/// A session id created by this connect's login, to send once the socket is connected.
#[derive(Debug, Clone)]
struct NewSession(String);

/// The Admin UI of a server, as [`instrument`] set it up.
#[derive(Debug, Clone)]
pub struct AdminUi {
    inner: Arc<Instrumentation>,
}

impl AdminUi {
    /// The admin namespace.
    pub fn namespace(&self) -> &Arc<Namespace> {
        &self.inner.admin
    }
}

/// Turns the Admin UI on for `io`: declares the admin namespace with its login, installs the
/// server's observer and starts the `server_stats` timer (so call it inside a Tokio runtime).
///
/// Fails if the options are invalid or the server already has an observer.
pub fn instrument(io: &SocketIo, config: AdminUiConfig) -> Result<AdminUi, String> {
    config.validate()?;
    let verbose = config.mode == Mode::Development;
    let mut features: Vec<&str> = if config.readonly {
        Vec::new()
    } else {
        vec![
            "EMIT",
            "JOIN",
            "LEAVE",
            "DISCONNECT",
            "MJOIN",
            "MLEAVE",
            "MDISCONNECT",
        ]
    };
    features.push("AGGREGATED_EVENTS");
    if verbose {
        features.push("ALL_EVENTS");
    }
    let handler_io = io.clone();
    let readonly = config.readonly;
    let admin = io.ns(&config.namespace, move |socket| {
        on_admin_connection(&handler_io, &socket, &features, readonly, verbose);
    });
    let sessions = Arc::new(Sessions::default());
    if let AdminAuth::Basic {
        username,
        password_hash,
    } = config.auth.clone()
    {
        let ttl = config.session_ttl;
        let throttle = Arc::new(Throttle::new(config.login_throttle));
        admin.use_middleware(move |socket: SocketRef| {
            let (sessions, throttle, username, hash) = (
                sessions.clone(),
                throttle.clone(),
                username.clone(),
                password_hash.clone(),
            );
            async move { login(&socket, &sessions, &throttle, &username, hash, ttl).await }
        });
    } else {
        tracing::warn!(nsp = %config.namespace, "Admin UI without authentication");
    }
    let inner = Arc::new(Instrumentation {
        admin,
        verbose,
        admins: AtomicUsize::new(0),
        events: Mutex::new(EventBuffer::default()),
    });
    if !io.observe(inner.clone()) {
        return Err("the server already has an observer".to_owned());
    }
    let server_id = config.server_id.clone().unwrap_or_else(hostname);
    tokio::spawn(emit_stats(
        io.clone(),
        inner.clone(),
        server_id,
        config.stats_interval,
    ));
    Ok(AdminUi { inner })
}

/// The login middleware: a known session id, or the username and a password matching the hash,
/// from an address the throttle does not refuse.
async fn login(
    socket: &SocketRef,
    sessions: &Sessions,
    throttle: &Throttle,
    username: &str,
    hash: String,
    ttl: Duration,
) -> Result<(), ConnectError> {
    let auth = socket.handshake().auth();
    if let Some(id) = auth.get("sessionId").and_then(Value::as_str) {
        if sessions.contains(id) {
            return Ok(());
        }
    }
    let Some(password) = auth.get("password").and_then(Value::as_str) else {
        return Err(ConnectError::new("invalid credentials"));
    };
    // Sockets without a known address (none over this server's listeners) share one entry.
    let addr = socket
        .handshake()
        .address()
        .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |a| a.ip());
    if !throttle.begin(addr, Instant::now()) {
        tracing::debug!(%addr, "admin ui: login throttled");
        return Err(ConnectError::new("too many failed logins, retry later"));
    }
    if auth.get("username").and_then(Value::as_str) == Some(username) {
        let password = password.to_owned();
        // bcrypt is slow on purpose: keep it off the runtime's workers.
        let matches = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
            .await
            .is_ok_and(|r| r.unwrap_or(false));
        if matches {
            throttle.succeeded(addr);
            socket.insert_extension(NewSession(sessions.create(ttl)));
            return Ok(());
        }
    }
    tracing::debug!(%addr, "admin ui: login failed");
    Err(ConnectError::new("invalid credentials"))
}

/// An admin connected: its session id (after a login), the config, every socket, the commands.
fn on_admin_connection(
    io: &SocketIo,
    socket: &SocketRef,
    features: &[&str],
    readonly: bool,
    verbose: bool,
) {
    if let Some(id) = socket.with_extension(|s: &mut NewSession| s.0.clone()) {
        greet(socket, "session", json!(id));
    }
    greet(socket, "config", json!({ "supportedFeatures": features }));
    if !readonly {
        register_commands(io, socket);
    }
    if verbose {
        let (io, socket) = (io.clone(), socket.clone());
        tokio::spawn(async move {
            let sockets = all_sockets(&io).await;
            greet(&socket, "all_sockets", json!(sockets));
        });
    }
}

/// Sends an admin one of the events that open its session; an admin gone meanwhile is only logged.
fn greet(socket: &SocketRef, event: &str, value: Value) {
    if let Err(err) = socket.emit(event, value) {
        tracing::debug!(socket = socket.id(), event, %err, "admin ui: event not sent");
    }
}

/// Every socket of every namespace, this node's and (with a cluster adapter) the others'.
async fn all_sockets(io: &SocketIo) -> Vec<Value> {
    let mut all = Vec::new();
    for ns in io.namespaces() {
        all.extend(ns.sockets().iter().map(|s| serialize::socket(s)));
        if let Some(remote) = ns.adapter().remote_fetch_sockets(&Default::default()) {
            let (remote, _) = remote.await;
            all.extend(
                remote
                    .into_iter()
                    .map(|info| serialize::remote_socket(info, ns.name())),
            );
        }
    }
    all
}

/// The selection a command applies to: the namespace, narrowed to room `filter` when one is given.
fn select(
    io: &SocketIo,
    nsp: &str,
    filter: Option<&str>,
) -> Option<crate::socketio::BroadcastOperator> {
    let ns = io.of(nsp)?;
    Some(match filter.filter(|f| !f.is_empty()) {
        Some(room) => ns.to(room),
        None => ns.broadcast(),
    })
}

fn string_arg(args: &Args, i: usize) -> Option<String> {
    args.get::<Option<String>>(i).ok().flatten()
}

fn register_commands(io: &SocketIo, socket: &SocketRef) {
    let emit_io = io.clone();
    socket.on("emit", move |_, args: Args, _| {
        let (Some(nsp), Some(event)) = (string_arg(&args, 0), string_arg(&args, 2)) else {
            return;
        };
        let filter = string_arg(&args, 1);
        if let Some(op) = select(&emit_io, &nsp, filter.as_deref()) {
            let rest = Args {
                values: args.values.get(3..).unwrap_or_default().to_vec(),
                binary: args.binary.clone(),
            };
            // A reserved event name is refused here, as the reference refuses to emit it.
            if let Err(err) = op.emit_args(&event, rest) {
                tracing::debug!(event, %err, "admin ui: event not emitted");
            }
        }
    });
    for (command, join) in [("join", true), ("leave", false)] {
        let io = io.clone();
        socket.on(command, move |_, args: Args, _| {
            let (Some(nsp), Some(room)) = (string_arg(&args, 0), string_arg(&args, 1)) else {
                return;
            };
            if let Some(op) = select(&io, &nsp, string_arg(&args, 2).as_deref()) {
                if join {
                    op.join(room);
                } else {
                    op.leave(room);
                }
            }
        });
    }
    let io = io.clone();
    socket.on("_disconnect", move |_, args: Args, _| {
        let Some(nsp) = string_arg(&args, 0) else {
            return;
        };
        let close = args.get::<bool>(1).unwrap_or(false);
        if let Some(op) = select(&io, &nsp, string_arg(&args, 2).as_deref()) {
            op.disconnect(close);
        }
    });
}

/// Sends `server_stats` to the admins every `period`, for as long as the runtime runs.
async fn emit_stats(
    io: SocketIo,
    inner: Arc<Instrumentation>,
    server_id: String,
    period: Duration,
) {
    let started = Instant::now();
    let hostname = hostname();
    let mut last = (0, 0, 0, 0);
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let m = io.engine().metrics();
        let now = (
            m.packets_in.get(),
            m.packets_out.get(),
            m.bytes_in.get(),
            m.bytes_out.get(),
        );
        let aggregated = {
            let mut events = inner.events.lock().unwrap_or_else(|e| e.into_inner());
            events.push("packetsIn", None, now.0.saturating_sub(last.0));
            events.push("packetsOut", None, now.1.saturating_sub(last.1));
            events.push("bytesIn", None, now.2.saturating_sub(last.2));
            events.push("bytesOut", None, now.3.saturating_sub(last.3));
            events.drain()
        };
        last = now;
        let (polling, websocket) = io.engine().sessions_by_transport();
        let namespaces: Vec<Value> = io
            .namespaces()
            .iter()
            .map(|ns| json!({ "name": ns.name(), "socketsCount": ns.sockets().len() }))
            .collect();
        let stats = inner.admin.emit(
            "server_stats",
            json!({
                "serverId": server_id,
                "hostname": hostname,
                "pid": std::process::id(),
                "uptime": started.elapsed().as_secs_f64(),
                "clientsCount": polling + websocket,
                "pollingClientsCount": polling,
                "aggregatedEvents": aggregated,
                "namespaces": namespaces,
            }),
        );
        if let Err(err) = stats {
            tracing::debug!(%err, "admin ui: server stats not sent");
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    // bcryptjs.hashSync("changeit", 4)
    const HASH: &str = "$2a$04$TaU6EVSVg4pwh349dVC2/.Gvz47Du8hR2gleSe9QBitX98m/1XtWG";

    #[test]
    fn validate_accepts_2a_and_2b_hashes_and_refuses_2y() {
        assert!(AdminUiConfig::basic("admin", HASH).validate().is_ok());
        let b = HASH.replacen("$2a$", "$2b$", 1);
        assert!(AdminUiConfig::basic("admin", b).validate().is_ok());
        let y = HASH.replacen("$2a$", "$2y$", 1);
        assert!(AdminUiConfig::basic("admin", y).validate().is_err());
        assert!(
            AdminUiConfig::basic("admin", "changeit")
                .validate()
                .is_err()
        );
        assert!(AdminUiConfig::new(AdminAuth::None).validate().is_ok());
        let mut bad = AdminUiConfig::new(AdminAuth::None);
        bad.namespace = "admin".to_owned();
        assert!(bad.validate().is_err());
    }

    #[test]
    fn sessions_expire() {
        let sessions = Sessions::default();
        let id = sessions.create(Duration::from_secs(60));
        assert_eq!(id.len(), 16);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(sessions.contains(&id));
        assert!(!sessions.contains("0123456789abcdef"));
        let gone = sessions.create(Duration::ZERO);
        assert!(!sessions.contains(&gone));
    }

    #[test]
    fn the_password_hash_is_not_printed() {
        let config = AdminUiConfig::basic("admin", HASH);
        assert!(!format!("{config:?}").contains(HASH));
    }
}
