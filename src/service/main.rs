//! The `tidings` binary: the real-time analytics service with embedded defaults.
//!
//! Every setting is a flag and a `TIDINGS_*` environment variable; the effective values are printed at
//! start-up (secrets masked).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use tidings::adapter::redis::sharded::{ShardedAdapterFactory, ShardedConfig};
use tidings::adapter::redis::streams::{StreamsAdapterFactory, StreamsConfig};
use tidings::adapter::redis::{RedisAdapterFactory, RedisConfig};
use tidings::admin_ui::{AdminUiConfig, LoginThrottle, Mode, StaticFiles};
use tidings::engineio::Cors;
use tidings::socketio::{Config, OnExceed, RateLimit, RecoveryConfig, SocketIo, parser_named};
use tidings_service::analytics::{Analytics, AnalyticsConfig};

/// A Socket.IO server for live multi-tenant analytics dashboards.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Address to listen on: an IP address or a host name (`localhost`), which must resolve.
    #[arg(long, env = "TIDINGS_HOST", default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (also read from `PORT` when `TIDINGS_PORT` is unset; either must be a
    /// port number).
    #[arg(long, env = "TIDINGS_PORT")]
    port: Option<u16>,
    /// The Socket.IO path.
    #[arg(long, env = "TIDINGS_PATH", default_value = "/socket.io/")]
    path: String,
    /// Allowed CORS origins: `*` or a comma-separated list. Unset: no CORS headers.
    #[arg(long, env = "TIDINGS_CORS_ORIGINS")]
    cors_origins: Option<String>,
    /// HS256 secret that dashboard tokens are signed with. Unset: development mode (any org).
    #[arg(
        long,
        env = "TIDINGS_AUTH_SECRET",
        hide_env_values = true,
        global = true
    )]
    auth_secret: Option<String>,
    /// Bearer key for the HTTP API (events and stats). Unset: the API is open in development mode,
    /// and refused (503) in production mode unless `--api-open`.
    #[arg(long, env = "TIDINGS_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// With an auth secret and no API key, serve the HTTP API to anyone anyway.
    #[arg(long, env = "TIDINGS_API_OPEN")]
    api_open: bool,
    /// How long an API request body may take to arrive, in milliseconds (then 408).
    #[arg(long, env = "TIDINGS_API_BODY_TIMEOUT_MS", default_value_t = 10_000)]
    api_body_timeout_ms: u64,
    /// Serve `/metrics` only on this separate address (e.g. 127.0.0.1:9100), not on the main port.
    #[arg(long, env = "TIDINGS_METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,
    /// Inbound event rate limit per socket: `<n>/s,burst=<m>`, or `off`.
    #[arg(
        long,
        env = "TIDINGS_EVENT_RATE_LIMIT",
        default_value = "50/s,burst=100"
    )]
    event_rate_limit: String,
    /// What happens to events over the rate limit: `drop` them, or `disconnect` the socket.
    #[arg(long, env = "TIDINGS_EVENT_RATE_LIMIT_ON_EXCEED", default_value = "drop", value_parser = ["drop", "disconnect"])]
    event_rate_limit_on_exceed: String,
    /// The most rooms one socket may be in (its own included); an organisation takes 4.
    #[arg(long, env = "TIDINGS_MAX_ROOMS_PER_SOCKET", default_value_t = 1000)]
    max_rooms_per_socket: usize,
    /// Server ping interval in milliseconds.
    #[arg(long, env = "TIDINGS_PING_INTERVAL_MS", default_value_t = 25_000)]
    ping_interval_ms: u64,
    /// How long to wait for a pong, in milliseconds.
    #[arg(long, env = "TIDINGS_PING_TIMEOUT_MS", default_value_t = 60_000)]
    ping_timeout_ms: u64,
    /// Largest accepted message or polling body, in bytes.
    #[arg(long, env = "TIDINGS_MAX_PAYLOAD", default_value_t = 1_000_000)]
    max_payload: usize,
    /// With a list of CORS origins: refuse requests (handshakes, polling, WebSocket upgrades) whose
    /// `Origin` is not in it, with HTTP 403. Requests without `Origin` pass.
    #[arg(long, env = "TIDINGS_ORIGIN_CHECK", default_value_t = true, action = clap::ArgAction::Set)]
    origin_check: bool,
    /// The most Engine.IO sessions open at once (HTTP 503 beyond).
    #[arg(long, env = "TIDINGS_MAX_CONNECTIONS", default_value_t = 25_000)]
    max_connections: usize,
    /// The most Engine.IO sessions open at once from one client address (HTTP 503 beyond). Behind a
    /// load balancer, set `--trust-proxy` so that this counts clients, not the balancer.
    #[arg(long, env = "TIDINGS_MAX_CONNECTIONS_PER_IP", default_value_t = 2_000)]
    max_connections_per_ip: usize,
    /// The most TCP connections served at once, WebSockets included (further ones wait).
    #[arg(long, env = "TIDINGS_MAX_TCP_CONNECTIONS", default_value_t = 100_000)]
    max_tcp_connections: usize,
    /// The most bytes queued for one client before it is closed as a slow consumer.
    #[arg(long, env = "TIDINGS_MAX_BUFFERED_BYTES", default_value_t = 1 << 20)]
    max_buffered_bytes: usize,
    /// The most frames queued for one client before it is closed as a slow consumer.
    #[arg(long, env = "TIDINGS_MAX_BUFFERED_FRAMES", default_value_t = 8192)]
    max_buffered_frames: usize,
    /// How long a WebSocket write may make no progress before the session closes, in milliseconds.
    /// Unset: the ping timeout.
    #[arg(long, env = "TIDINGS_WRITE_TIMEOUT_MS")]
    write_timeout_ms: Option<u64>,
    /// How long a polling POST may take to send its body, in milliseconds (HTTP 408 beyond).
    #[arg(long, env = "TIDINGS_BODY_READ_TIMEOUT_MS", default_value_t = 10_000)]
    body_read_timeout_ms: u64,
    /// How long a client may take to send a request's headers, in milliseconds.
    #[arg(long, env = "TIDINGS_HEADER_READ_TIMEOUT_MS", default_value_t = 30_000)]
    header_read_timeout_ms: u64,
    /// Reverse proxies (comma-separated addresses or CIDR ranges, e.g. `10.0.0.0/8,127.0.0.1`) whose
    /// `Forwarded` / `X-Forwarded-For` name the client. Unset: the TCP peer is the client.
    #[arg(long, env = "TIDINGS_TRUST_PROXY", value_delimiter = ',')]
    trust_proxy: Vec<tidings::engineio::IpRange>,
    /// Also accept socket.io-client 2.x (Engine.IO v3), as the reference's `allowEIO3`.
    #[arg(long, env = "TIDINGS_ALLOW_EIO3")]
    allow_eio3: bool,
    /// Updates kept per organisation for `request:history`.
    #[arg(long, env = "TIDINGS_HISTORY_SIZE", default_value_t = 1000)]
    history_size: usize,
    /// How long updates stay in the history, in seconds.
    #[arg(long, env = "TIDINGS_HISTORY_AGE_SECS", default_value_t = 3600)]
    history_age_secs: u64,
    /// Updates in a `request:history` reply when the request names no limit.
    #[arg(long, env = "TIDINGS_HISTORY_PAGE_DEFAULT", default_value_t = 100)]
    history_page_default: usize,
    /// The most updates in a `request:history` reply.
    #[arg(long, env = "TIDINGS_HISTORY_PAGE_MAX", default_value_t = 500)]
    history_page_max: usize,
    /// The most bytes of updates in a `request:history` reply (one update always goes).
    #[arg(long, env = "TIDINGS_HISTORY_PAGE_BYTES", default_value_t = 262_144)]
    history_page_bytes: usize,
    /// Generate demo traffic for org `demo` (default: on in development mode).
    #[arg(long, env = "TIDINGS_DEMO")]
    demo: Option<bool>,
    /// Allow development mode (no auth secret) on a non-loopback address.
    #[arg(long, env = "TIDINGS_INSECURE")]
    insecure: bool,
    /// Socket.IO parser: `json` (socket.io-parser, what every stock client speaks) or `msgpack`
    /// (npm `socket.io-msgpack-parser`; clients must be built with it: the dashboard page and the
    /// Admin UI are not).
    #[arg(long, env = "TIDINGS_PARSER", default_value = "json", value_parser = ["json", "msgpack"])]
    parser: String,
    /// Log format.
    #[arg(long, env = "TIDINGS_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Redis URL: join a cluster of Tidings (and Node socket.io) nodes through Redis.
    #[arg(long, env = "TIDINGS_REDIS_URL")]
    redis_url: Option<String>,
    /// Channel prefix of the Redis adapter (and the stream's name, with `streams`).
    #[arg(long, env = "TIDINGS_REDIS_KEY", default_value = "socket.io")]
    redis_key: String,
    /// Which Redis adapter: `classic` (Pub/Sub, as `@socket.io/redis-adapter`; no recovery across
    /// nodes), `streams` (a Redis stream, as `@socket.io/redis-streams-adapter`: nothing lost
    /// while a node is cut from Redis, and connection state recovery on any node) or `sharded`
    /// (sharded Pub/Sub on a Redis Cluster, as `@socket.io/redis-adapter`'s `createShardedAdapter`;
    /// `--redis-url` names one of the cluster's nodes).
    #[arg(long, env = "TIDINGS_REDIS_ADAPTER", default_value = "classic", value_parser = ["classic", "streams", "sharded"])]
    redis_adapter: String,
    /// The streams adapter's stream bound (`XADD MAXLEN ~`): entries kept for nodes and resuming
    /// clients that fell behind.
    #[arg(long, env = "TIDINGS_REDIS_STREAM_MAXLEN", default_value_t = 10_000)]
    redis_stream_maxlen: usize,
    /// Directory holding the socket.io-client browser bundle.
    #[arg(long, env = "TIDINGS_CLIENT_DIR")]
    client_dir: Option<PathBuf>,
    /// Admin UI username; with `--admin-ui-password-hash`, turns the Socket.IO Admin UI on.
    #[arg(
        long,
        env = "TIDINGS_ADMIN_UI_USERNAME",
        requires = "admin_ui_password_hash"
    )]
    admin_ui_username: Option<String>,
    /// Bcrypt hash (`$2a$`/`$2b$`) of the Admin UI password.
    #[arg(
        long,
        env = "TIDINGS_ADMIN_UI_PASSWORD_HASH",
        hide_env_values = true,
        requires = "admin_ui_username"
    )]
    admin_ui_password_hash: Option<String>,
    /// The Admin UI's namespace.
    #[arg(long, env = "TIDINGS_ADMIN_UI_NAMESPACE", default_value = "/admin")]
    admin_ui_namespace: String,
    /// Admins may look but not act (no emit, join, leave or disconnect).
    #[arg(long, env = "TIDINGS_ADMIN_UI_READONLY")]
    admin_ui_readonly: bool,
    /// Report only aggregated stats, not every socket, room and event.
    #[arg(long, env = "TIDINGS_ADMIN_UI_PRODUCTION")]
    admin_ui_production: bool,
    /// Failed Admin UI password logins allowed per client address per window (0 = no throttle).
    #[arg(long, env = "TIDINGS_ADMIN_UI_LOGIN_MAX_FAILURES", default_value_t = 5)]
    admin_ui_login_max_failures: u32,
    /// The Admin UI login throttle window, in seconds: failures are counted over it, and a refused
    /// address waits until it ends.
    #[arg(long, env = "TIDINGS_ADMIN_UI_LOGIN_WINDOW_SECS", default_value_t = 60)]
    admin_ui_login_window_secs: u64,
    /// Directory of the Admin UI's static files (`ui/dist` of the `@socket.io/admin-ui` npm
    /// package), served at `/admin-ui/`.
    #[arg(long, env = "TIDINGS_ADMIN_UI_STATIC", requires = "admin_ui_username")]
    admin_ui_static: Option<PathBuf>,
    /// The largest CONNECT auth payload a socket may keep, in bytes of JSON (larger: CONNECT_ERROR).
    #[arg(long, env = "TIDINGS_MAX_AUTH_BYTES", default_value_t = 8 * 1024)]
    max_auth_bytes: usize,
    /// The most bytes a binary packet waiting for its attachments may hold.
    #[arg(long, env = "TIDINGS_MAX_PENDING_ATTACHMENT_BYTES", default_value_t = 8 * 1024 * 1024)]
    max_pending_attachment_bytes: usize,
    /// How long a binary packet's attachments may take to arrive, in milliseconds.
    #[arg(long, env = "TIDINGS_ATTACHMENT_TIMEOUT_MS", default_value_t = 10_000)]
    attachment_timeout_ms: u64,
    /// Connection state recovery: the most packets kept for replay, all rooms together.
    #[arg(long, env = "TIDINGS_RECOVERY_MAX_PACKETS", default_value_t = 10_000)]
    recovery_max_packets: usize,
    /// Connection state recovery: the most packets kept for one room.
    #[arg(
        long,
        env = "TIDINGS_RECOVERY_MAX_PACKETS_PER_ROOM",
        default_value_t = 1_000
    )]
    recovery_max_packets_per_room: usize,
    /// Connection state recovery: the most disconnected sessions kept.
    #[arg(
        long,
        env = "TIDINGS_RECOVERY_MAX_SAVED_SESSIONS",
        default_value_t = 10_000
    )]
    recovery_max_saved_sessions: usize,
    /// Connection state recovery: the most bytes those saved sessions may hold.
    #[arg(long, env = "TIDINGS_RECOVERY_MAX_SAVED_BYTES", default_value_t = 16 * 1024 * 1024)]
    recovery_max_saved_bytes: usize,
}

/// The analytics service, with the Admin UI's files in front when they are served.
#[derive(Clone)]
struct App {
    analytics: Analytics,
    admin_files: Option<StaticFiles>,
}

impl tidings::server::Service for App {
    async fn call(
        &self,
        req: http::Request<hyper::body::Incoming>,
        remote: SocketAddr,
    ) -> http::Response<tidings::engineio::error::Body> {
        if let Some(files) = &self.admin_files {
            if req.method() == http::Method::GET && files.matches(req.uri().path()) {
                return files.serve(req.uri().path()).await;
            }
        }
        self.analytics.call(req, remote).await
    }

    fn shutdown(&self) {
        self.analytics.shutdown();
    }
}

/// `--event-rate-limit`: `<n>/s,burst=<m>` (burst defaults to twice the rate) or `off`.
fn parse_rate_limit(spec: &str, on_exceed: &str) -> Result<Option<RateLimit>, String> {
    let spec = spec.trim();
    if spec.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let bad = || format!("--event-rate-limit: expected `<n>/s,burst=<m>` or `off`, got {spec:?}");
    let (rate, burst) = match spec.split_once(',') {
        Some((rate, burst)) => (rate.trim(), Some(burst.trim())),
        None => (spec, None),
    };
    let per_second: f64 = rate
        .strip_suffix("/s")
        .and_then(|n| n.trim().parse().ok())
        .filter(|n: &f64| n.is_finite() && *n > 0.0)
        .ok_or_else(bad)?;
    let burst: u32 = match burst {
        Some(b) => b
            .strip_prefix("burst=")
            .and_then(|n| n.trim().parse().ok())
            .filter(|n| *n > 0)
            .ok_or_else(bad)?,
        // Truncation is intended: a burst is a whole number of events.
        None => ((per_second * 2.0).ceil() as u32).max(1),
    };
    let on_exceed = match on_exceed {
        "disconnect" => OnExceed::Disconnect,
        _ => OnExceed::Drop,
    };
    Ok(Some(RateLimit {
        per_second,
        burst,
        on_exceed,
    }))
}

/// The port `PORT` names (3000 when unset); anything but a port number is refused, as for
/// `TIDINGS_PORT`.
fn port_from_env(value: Option<&str>) -> Result<u16, String> {
    match value {
        None => Ok(3000),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| format!("PORT must be a port number (0 to 65535), not {v:?}")),
    }
}

/// The address `host` names: an IP address as written, or the first address a host name resolves
/// to (`localhost` → 127.0.0.1 where the system says so).
async fn resolve_host(host: &str, port: u16) -> Result<IpAddr, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ip);
    }
    let mut addrs = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("cannot resolve --host {host}: {e}"))?;
    addrs
        .next()
        .map(|a| a.ip())
        .ok_or_else(|| format!("--host {host} resolves to no address"))
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// What `tidings` does besides serving.
#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Prints a dashboard token signed with the configured secret (`--auth-secret` or
    /// `TIDINGS_AUTH_SECRET`, the one the server verifies with).
    Token {
        /// An organisation the token grants (repeat for several).
        #[arg(long = "org", required = true)]
        orgs: Vec<String>,
        /// How long it is valid: `90s`, `30m`, `1h`, `7d` (or plain seconds).
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// Who it is for (the `sub` claim; informational).
        #[arg(long)]
        sub: Option<String>,
    },
}

/// `90s`, `30m`, `1h`, `7d`, or plain seconds.
fn parse_ttl(ttl: &str) -> Result<Duration, String> {
    let ttl = ttl.trim();
    let (number, unit) = match ttl.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => ttl.split_at(i),
        None => (ttl, "s"),
    };
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => 0,
    };
    match number.parse::<u64>() {
        Ok(n) if n > 0 && scale > 0 => Ok(Duration::from_secs(n.saturating_mul(scale))),
        _ => Err(format!(
            "--ttl must be a positive duration such as 90s, 30m, 1h or 7d, not {ttl:?}"
        )),
    }
}

/// The `token` command: the signed token, or why there is none.
fn make_token(
    secret: Option<&str>,
    orgs: &[String],
    ttl: &str,
    sub: Option<&str>,
) -> Result<String, String> {
    use tidings_service::analytics::auth::{Claims, sign};
    use tidings_service::analytics::events::valid_org_id;
    let secret = secret.ok_or(
        "no secret: set TIDINGS_AUTH_SECRET (or --auth-secret) to the one the server verifies with",
    )?;
    if let Some(bad) = orgs.iter().find(|o| !valid_org_id(o)) {
        return Err(format!(
            "--org {bad:?}: 1 to 128 characters of letters, digits, '_', '-' and '.'"
        ));
    }
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        + parse_ttl(ttl)?;
    let claims = Claims {
        sub: sub.map(str::to_owned),
        orgs: orgs.to_vec(),
        exp: exp.as_secs(),
        nbf: None,
    };
    sign(secret.as_bytes(), &claims)
}

/// Announces an address the server listens on: the plain `listening on ADDR` line of the text
/// format (scripts and tests wait for it), or with `--log-format json` a JSON log line like every
/// other, with the same words as its message and the address as a field.
fn announce(json: bool, what: &str, addr: SocketAddr) {
    if json {
        tracing::info!(%addr, "{what} on {addr}");
    } else {
        println!("{what} on {addr}");
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Token { orgs, ttl, sub }) = &cli.command {
        return match make_token(cli.auth_secret.as_deref(), orgs, ttl, sub.as_deref()) {
            Ok(token) => {
                println!("{token}");
                std::process::ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("tidings token: {err}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    init_logging(&cli.log_format);
    let json = cli.log_format == "json";
    let fail = |err: &str| {
        if json {
            tracing::error!(error = %err, "tidings: {err}");
        } else {
            eprintln!("tidings: {err}");
        }
        std::process::ExitCode::FAILURE
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => return fail(&format!("cannot start the runtime: {err}")),
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => fail(&err),
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    let json = cli.log_format == "json";
    let port = match cli.port {
        Some(port) => port,
        None => port_from_env(std::env::var("PORT").ok().as_deref())?,
    };
    let host = resolve_host(&cli.host, port).await?;
    let development = cli.auth_secret.is_none();
    if development && !host.is_loopback() && !cli.insecure {
        return Err(format!(
            "refusing to listen on {host} without TIDINGS_AUTH_SECRET (development mode lets \
             anyone see every organisation); set a secret, or pass --insecure"
        ));
    }

    let mut config = Config::default();
    config.engine.path = cli.path.clone();
    config.engine.ping_interval = Duration::from_millis(cli.ping_interval_ms);
    config.engine.ping_timeout = Duration::from_millis(cli.ping_timeout_ms);
    config.engine.max_payload = cli.max_payload;
    config.engine.allow_eio3 = cli.allow_eio3;
    config.engine.cors = cli.cors_origins.as_deref().map(|origins| {
        if origins.trim() == "*" {
            Cors::any()
        } else {
            let mut cors = Cors::list(
                origins.split(',').map(|o| o.trim().to_owned()).collect(),
                true,
            );
            cors.enforce_origin = cli.origin_check;
            cors
        }
    });
    config.engine.max_connections = cli.max_connections;
    config.engine.max_connections_per_ip = cli.max_connections_per_ip;
    config.engine.max_buffered_bytes = cli.max_buffered_bytes;
    config.engine.max_buffered_frames = cli.max_buffered_frames;
    config.engine.write_timeout = cli.write_timeout_ms.map(Duration::from_millis);
    config.engine.body_read_timeout = Duration::from_millis(cli.body_read_timeout_ms);
    config.engine.trusted_proxies = cli.trust_proxy.clone();
    let mut serve_options = tidings::server::ServeOptions::default();
    serve_options.max_connections = cli.max_tcp_connections;
    serve_options.header_read_timeout = Duration::from_millis(cli.header_read_timeout_ms);
    if serve_options.max_connections == 0 || serve_options.header_read_timeout.is_zero() {
        return Err("max TCP connections and the header read timeout must be positive".into());
    }
    config.engine.validate()?;
    config.event_rate_limit =
        parse_rate_limit(&cli.event_rate_limit, &cli.event_rate_limit_on_exceed)?;
    if cli.max_rooms_per_socket < 2 {
        return Err("--max-rooms-per-socket must be at least 2".to_owned());
    }
    config.max_rooms_per_socket = cli.max_rooms_per_socket;
    config.parser =
        parser_named(&cli.parser).ok_or_else(|| format!("unknown parser {:?}", cli.parser))?;
    // Dashboards live on flaky networks: a reconnect within two minutes misses nothing. Middlewares
    // still run for recovered sockets, so an expired token cannot come back.
    if let Some(url) = &cli.redis_url {
        let unreachable = |e| format!("cannot connect to redis at {url}: {e}");
        if cli.redis_adapter == "sharded" {
            let mut sharded = ShardedConfig::new([url.clone()]);
            sharded.channel_prefix = cli.redis_key.clone();
            let factory = ShardedAdapterFactory::connect(sharded)
                .await
                .map_err(unreachable)?;
            tracing::info!(
                uid = factory.uid(),
                adapter = "sharded",
                "joined the redis cluster"
            );
            config.adapter = Some(std::sync::Arc::new(factory));
        } else if cli.redis_adapter == "streams" {
            let mut streams = StreamsConfig::new(url.clone());
            streams.stream = cli.redis_key.clone();
            streams.channel_prefix = cli.redis_key.clone();
            if cli.redis_stream_maxlen == 0 {
                return Err("--redis-stream-maxlen must be positive".to_owned());
            }
            streams.max_len = cli.redis_stream_maxlen;
            let factory = StreamsAdapterFactory::connect(streams)
                .await
                .map_err(unreachable)?;
            tracing::info!(
                uid = factory.uid(),
                adapter = "streams",
                "joined the redis cluster"
            );
            config.adapter = Some(std::sync::Arc::new(factory));
        } else {
            let mut redis = RedisConfig::new(url.clone());
            redis.key = cli.redis_key.clone();
            let factory = RedisAdapterFactory::connect(redis)
                .await
                .map_err(unreachable)?;
            tracing::info!(
                uid = factory.uid(),
                adapter = "classic",
                "joined the redis cluster"
            );
            config.adapter = Some(std::sync::Arc::new(factory));
        }
    }
    config.max_auth_bytes = cli.max_auth_bytes;
    config.max_pending_attachment_bytes = cli.max_pending_attachment_bytes;
    config.attachment_timeout = Duration::from_millis(cli.attachment_timeout_ms);
    let mut recovery = RecoveryConfig::default();
    recovery.max_packets = cli.recovery_max_packets;
    recovery.max_packets_per_room = cli.recovery_max_packets_per_room;
    recovery.max_saved_sessions = cli.recovery_max_saved_sessions;
    recovery.max_saved_bytes = cli.recovery_max_saved_bytes;
    config.recovery = Some(recovery);

    let mut analytics_config = AnalyticsConfig::default();
    analytics_config.auth_secret = cli.auth_secret.clone();
    analytics_config.api_key = cli.api_key.clone();
    analytics_config.api_open = cli.api_open;
    analytics_config.api_body_timeout = Duration::from_millis(cli.api_body_timeout_ms);
    analytics_config.serve_metrics = cli.metrics_addr.is_none();
    analytics_config.history_len = cli.history_size;
    analytics_config.history_age = Duration::from_secs(cli.history_age_secs);
    analytics_config.history_page_default = cli.history_page_default;
    analytics_config.history_page_max = cli.history_page_max;
    analytics_config.history_page_bytes = cli.history_page_bytes;
    if let Some(dir) = cli.client_dir.clone() {
        analytics_config.client_dir = dir;
    }
    analytics_config.validate()?;

    let demo = cli.demo.unwrap_or(development);
    let addr = SocketAddr::new(host, port);
    let mask = |s: &Option<String>| if s.is_some() { "(set)" } else { "(unset)" };
    tracing::info!(
        %addr,
        path = %config.engine.path,
        ping_interval_ms = cli.ping_interval_ms,
        ping_timeout_ms = cli.ping_timeout_ms,
        max_payload = cli.max_payload,
        parser = %cli.parser,
        allow_eio3 = cli.allow_eio3,
        cors = ?cli.cors_origins,
        origin_check = cli.origin_check,
        max_connections = cli.max_connections,
        max_connections_per_ip = cli.max_connections_per_ip,
        max_tcp_connections = cli.max_tcp_connections,
        max_buffered_bytes = cli.max_buffered_bytes,
        max_buffered_frames = cli.max_buffered_frames,
        write_timeout_ms = config.engine.effective_write_timeout().as_millis() as u64,
        body_read_timeout_ms = cli.body_read_timeout_ms,
        header_read_timeout_ms = cli.header_read_timeout_ms,
        trust_proxy = ?cli.trust_proxy.iter().map(ToString::to_string).collect::<Vec<_>>(),
        auth_secret = mask(&cli.auth_secret),
        api_key = mask(&cli.api_key),
        api_open = cli.api_open,
        api_body_timeout_ms = cli.api_body_timeout_ms,
        metrics_addr = ?cli.metrics_addr,
        event_rate_limit = ?config.event_rate_limit,
        max_rooms_per_socket = cli.max_rooms_per_socket,
        history_size = cli.history_size,
        history_age_secs = cli.history_age_secs,
        history_page_default = cli.history_page_default,
        history_page_max = cli.history_page_max,
        history_page_bytes = cli.history_page_bytes,
        redis = cli.redis_url.is_some(),
        admin_ui = cli.admin_ui_username.is_some(),
        admin_ui_static = ?cli.admin_ui_static,
        admin_ui_login_max_failures = cli.admin_ui_login_max_failures,
        admin_ui_login_window_secs = cli.admin_ui_login_window_secs,
        demo,
        "effective configuration"
    );
    tracing::info!(
        max_auth_bytes = cli.max_auth_bytes,
        max_pending_attachment_bytes = cli.max_pending_attachment_bytes,
        attachment_timeout_ms = cli.attachment_timeout_ms,
        recovery_max_packets = cli.recovery_max_packets,
        recovery_max_packets_per_room = cli.recovery_max_packets_per_room,
        recovery_max_saved_sessions = cli.recovery_max_saved_sessions,
        recovery_max_saved_bytes = cli.recovery_max_saved_bytes,
        "effective socket.io limits"
    );
    if development {
        tracing::warn!(
            "DEVELOPMENT MODE: no TIDINGS_AUTH_SECRET, so any client may join any organisation"
        );
    }
    match (&cli.api_key, development, cli.api_open) {
        (Some(_), _, _) => {}
        (None, true, _) => tracing::warn!(
            "no TIDINGS_API_KEY (development mode): the HTTP API accepts unauthenticated requests"
        ),
        (None, false, true) => tracing::warn!(
            "no TIDINGS_API_KEY and --api-open: anyone may post events to any organisation and \
             read the stats"
        ),
        (None, false, false) => tracing::warn!(
            "no TIDINGS_API_KEY: the HTTP API (events, stats) is closed and answers 503; set a key, \
             or pass --api-open"
        ),
    }
    if cli.metrics_addr.is_none() {
        tracing::info!(
            "/metrics is served on the main port; use --metrics-addr to move it to a private \
             listener"
        );
    }

    let io = SocketIo::new(config);
    if let (Some(username), Some(hash)) = (&cli.admin_ui_username, &cli.admin_ui_password_hash) {
        let mut admin = AdminUiConfig::basic(username.clone(), hash.clone());
        admin.namespace = cli.admin_ui_namespace.clone();
        admin.readonly = cli.admin_ui_readonly;
        let mut throttle = LoginThrottle::default();
        throttle.max_failures = cli.admin_ui_login_max_failures;
        throttle.window = Duration::from_secs(cli.admin_ui_login_window_secs);
        admin.login_throttle = throttle;
        if cli.admin_ui_production {
            admin.mode = Mode::Production;
        }
        tidings::admin_ui::instrument(&io, admin).map_err(|e| format!("admin ui: {e}"))?;
    }
    let admin_files = cli.admin_ui_static.as_ref().map(|dir| {
        if !dir.join("index.html").is_file() {
            tracing::warn!(
                dir = %dir.display(),
                "no index.html in the Admin UI directory (expected the npm package's ui/dist)"
            );
        }
        StaticFiles::new(dir, "/admin-ui")
    });
    let analytics = Analytics::new(io, analytics_config);
    if demo {
        analytics.spawn_demo_traffic(Duration::from_millis(500));
    }
    if let Some(metrics_addr) = cli.metrics_addr {
        let metrics_listener = tidings::server::bind(metrics_addr)
            .map_err(|e| format!("cannot listen on {metrics_addr} for metrics: {e}"))?;
        let metrics_local = metrics_listener.local_addr().map_err(|e| e.to_string())?;
        announce(json, "metrics", metrics_local);
        tracing::info!("metrics at http://{metrics_local}/metrics");
        let service = analytics.metrics_service();
        tokio::spawn(async move {
            // Ends with the process: the metrics listener has no sessions to close.
            let result = tidings::server::serve(
                metrics_listener,
                service,
                tidings::server::ServeOptions::default(),
                std::future::pending(),
            )
            .await;
            if let Err(err) = result {
                tracing::error!(%err, "the metrics listener failed");
            }
        });
    }
    let listener =
        tidings::server::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    announce(json, "listening", local);
    tracing::info!("dashboard at http://{local}/");
    if admin_files.is_some() {
        tracing::info!("admin ui at http://{local}/admin-ui/");
    }
    tidings::server::serve(
        listener,
        App {
            analytics,
            admin_files,
        },
        serve_options,
        tidings::server::shutdown_signal(),
    )
    .await
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_specs() {
        let limit = parse_rate_limit("50/s,burst=100", "drop").unwrap().unwrap();
        assert_eq!(limit.per_second, 50.0);
        assert_eq!(limit.burst, 100);
        assert_eq!(limit.on_exceed, OnExceed::Drop);
        let limit = parse_rate_limit(" 2.5/s ", "disconnect").unwrap().unwrap();
        assert_eq!(limit.burst, 5);
        assert_eq!(limit.on_exceed, OnExceed::Disconnect);
        assert_eq!(parse_rate_limit("off", "drop").unwrap(), None);
        for bad in ["", "50", "0/s", "-1/s", "50/s,100", "50/s,burst=0", "x/s"] {
            assert!(parse_rate_limit(bad, "drop").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ttls_and_tokens() {
        assert_eq!(parse_ttl("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("30m"), Ok(Duration::from_secs(1_800)));
        assert_eq!(parse_ttl("1h"), Ok(Duration::from_secs(3_600)));
        assert_eq!(parse_ttl("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_ttl("45"), Ok(Duration::from_secs(45)));
        for bad in ["", "0s", "1y", "h", "-1h", "1.5h"] {
            assert!(parse_ttl(bad).is_err(), "{bad:?}");
        }
        let orgs = ["acme".to_owned(), "globex".to_owned()];
        let token = make_token(Some("s3cret"), &orgs, "1h", Some("ops")).unwrap();
        let verified = tidings_service::analytics::auth::Verifier::new(b"s3cret")
            .verify(&token)
            .unwrap();
        assert!(verified.grant.allows("acme") && verified.grant.allows("globex"));
        assert!(!verified.grant.allows("initech"));
        assert!(
            make_token(None, &orgs, "1h", None)
                .unwrap_err()
                .contains("TIDINGS_AUTH_SECRET")
        );
        assert!(make_token(Some("s"), &["a:b".to_owned()], "1h", None).is_err());
    }

    #[test]
    fn port_from_the_environment_is_a_port_number_or_refused() {
        assert_eq!(port_from_env(None), Ok(3000));
        assert_eq!(port_from_env(Some("8080")), Ok(8080));
        assert_eq!(port_from_env(Some("0")), Ok(0));
        for bad in ["abc", "", "70000", "-1", "80x"] {
            let err = port_from_env(Some(bad)).unwrap_err();
            assert!(
                err.starts_with("PORT must be a port number"),
                "{bad:?}: {err}"
            );
        }
    }

    #[tokio::test]
    async fn host_names_resolve_and_addresses_stay_as_written() {
        assert_eq!(
            resolve_host("127.0.0.1", 0).await,
            Ok("127.0.0.1".parse().unwrap())
        );
        assert_eq!(resolve_host("::1", 0).await, Ok("::1".parse().unwrap()));
        assert!(resolve_host("localhost", 0).await.unwrap().is_loopback());
        assert!(resolve_host("no-such-host.invalid", 0).await.is_err());
    }

    #[test]
    fn the_defaults_protect_and_parse() {
        let cli = Cli::parse_from(["tidings"]);
        assert!(
            parse_rate_limit(&cli.event_rate_limit, &cli.event_rate_limit_on_exceed)
                .unwrap()
                .is_some()
        );
        assert!(!cli.api_open);
        assert!(cli.metrics_addr.is_none());
        assert_eq!(cli.admin_ui_login_max_failures, 5);
    }
}
