//! The `tidings` binary: the real-time analytics service with embedded defaults.
//!
//! Every setting is a flag and a `TIDINGS_*` environment variable; the effective values are printed at
//! start-up (secrets masked).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use tidings::admin_ui::{AdminUiConfig, Mode, StaticFiles};
use tidings::analytics::{Analytics, AnalyticsConfig};
use tidings::engineio::Cors;
use tidings::socketio::redis::{RedisAdapterFactory, RedisConfig};
use tidings::socketio::{Config, RecoveryConfig, SocketIo, parser_named};

/// A Socket.IO server for live multi-tenant analytics dashboards.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Address to listen on.
    #[arg(long, env = "TIDINGS_HOST", default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port to listen on (also read from `PORT` when `TIDINGS_PORT` is unset).
    #[arg(long, env = "TIDINGS_PORT")]
    port: Option<u16>,
    /// The Socket.IO path.
    #[arg(long, env = "TIDINGS_PATH", default_value = "/socket.io/")]
    path: String,
    /// Allowed CORS origins: `*` or a comma-separated list. Unset: no CORS headers.
    #[arg(long, env = "TIDINGS_CORS_ORIGINS")]
    cors_origins: Option<String>,
    /// HS256 secret that dashboard tokens are signed with. Unset: development mode (any org).
    #[arg(long, env = "TIDINGS_AUTH_SECRET", hide_env_values = true)]
    auth_secret: Option<String>,
    /// Bearer key for the HTTP API. Unset: the API is open (development mode).
    #[arg(long, env = "TIDINGS_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
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
    /// Channel prefix of the Redis adapter.
    #[arg(long, env = "TIDINGS_REDIS_KEY", default_value = "socket.io")]
    redis_key: String,
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
    /// Directory of the Admin UI's static files (`ui/dist` of the `@socket.io/admin-ui` npm
    /// package), served at `/admin-ui/`.
    #[arg(long, env = "TIDINGS_ADMIN_UI_STATIC", requires = "admin_ui_username")]
    admin_ui_static: Option<PathBuf>,
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

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("cannot start the runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("tidings: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    let port = cli
        .port
        .or_else(|| std::env::var("PORT").ok()?.parse().ok())
        .unwrap_or(3000);
    let development = cli.auth_secret.is_none();
    if development && !cli.host.is_loopback() && !cli.insecure {
        return Err(format!(
            "refusing to listen on {} without TIDINGS_AUTH_SECRET (development mode lets anyone \
             see every organisation); set a secret, or pass --insecure",
            cli.host
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
    config.parser =
        parser_named(&cli.parser).ok_or_else(|| format!("unknown parser {:?}", cli.parser))?;
    // Dashboards live on flaky networks: a reconnect within two minutes misses nothing. Middlewares
    // still run for recovered sockets, so an expired token cannot come back.
    if let Some(url) = &cli.redis_url {
        let mut redis = RedisConfig::new(url.clone());
        redis.key = cli.redis_key.clone();
        let factory = RedisAdapterFactory::connect(redis)
            .await
            .map_err(|e| format!("cannot connect to redis at {url}: {e}"))?;
        tracing::info!(uid = factory.uid(), "joined the redis cluster");
        config.adapter = Some(std::sync::Arc::new(factory));
    }
    let mut recovery = RecoveryConfig::default();
    recovery.skip_middlewares = false;
    config.recovery = Some(recovery);

    let mut analytics_config = AnalyticsConfig::default();
    analytics_config.auth_secret = cli.auth_secret.clone();
    analytics_config.api_key = cli.api_key.clone();
    analytics_config.history_len = cli.history_size;
    analytics_config.history_age = Duration::from_secs(cli.history_age_secs);
    if let Some(dir) = cli.client_dir.clone() {
        analytics_config.client_dir = dir;
    }

    let demo = cli.demo.unwrap_or(development);
    let addr = SocketAddr::new(cli.host, port);
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
        history_size = cli.history_size,
        history_age_secs = cli.history_age_secs,
        redis = cli.redis_url.is_some(),
        admin_ui = cli.admin_ui_username.is_some(),
        admin_ui_static = ?cli.admin_ui_static,
        demo,
        "effective configuration"
    );
    if development {
        tracing::warn!(
            "DEVELOPMENT MODE: no TIDINGS_AUTH_SECRET, so any client may join any organisation"
        );
    }
    if cli.api_key.is_none() {
        tracing::warn!("no TIDINGS_API_KEY: the event API accepts unauthenticated requests");
    }

    let io = SocketIo::new(config);
    if let (Some(username), Some(hash)) = (&cli.admin_ui_username, &cli.admin_ui_password_hash) {
        let mut admin = AdminUiConfig::basic(username.clone(), hash.clone());
        admin.namespace = cli.admin_ui_namespace.clone();
        admin.readonly = cli.admin_ui_readonly;
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
    let listener =
        tidings::server::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    println!("listening on {local}");
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
