//! The server the official protocol test suites run against, on one port:
//! - a bare Engine.IO echo endpoint at `/engine.io/` (the Engine.IO v4 suite);
//! - Socket.IO at `/socket.io/` with namespaces `/` and `/custom` (the Socket.IO v5 suite).
//!
//! Both use the suites' configuration: pingInterval 300 ms, pingTimeout 200 ms, maxPayload 1 000 000,
//! connectTimeout 1 s, CORS `*`.
//!
//! `PORT=3000 cargo run --example conformance` (PORT=0 picks a free port; the address is printed).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use tidings::engineio::error::Body;
use tidings::engineio::{
    CloseReason, Cors, EngineConfig, EngineIo, Frame, Handler, Payload, Session, SessionHandler,
};
use tidings::server::Service;
use tidings::socketio::{Args, Config, SocketIo};

/// Echoes every message back to its session.
struct Echo;

struct EchoSession(Arc<Session>);

impl Handler for Echo {
    fn on_open(&self, session: &Arc<Session>) -> Arc<dyn SessionHandler> {
        Arc::new(EchoSession(session.clone()))
    }
}

impl SessionHandler for EchoSession {
    fn on_message(&self, payload: Payload) {
        let frame = match payload {
            Payload::Text(text) => {
                let mut buf = Frame::message_buffer(text.len());
                buf.extend_from_slice(&text);
                Frame::Text(buf.freeze())
            }
            Payload::Binary(bytes) => Frame::Binary(bytes),
        };
        let _ = self.0.send(frame);
    }

    fn on_close(&self, _reason: CloseReason) {}
}

fn suite_engine_config(path: &str) -> EngineConfig {
    let mut config = EngineConfig::default();
    config.path = path.into();
    config.ping_interval = Duration::from_millis(300);
    config.ping_timeout = Duration::from_millis(200);
    config.max_payload = 1_000_000;
    config.cors = Some(Cors::any());
    config
}

fn socket_io() -> SocketIo {
    let mut config = Config::default();
    config.engine = suite_engine_config("/socket.io/");
    config.connect_timeout = Duration::from_secs(1);
    let io = SocketIo::new(config);
    io.ns("/", |socket| {
        // The suites read `auth` right after connecting; a client gone already misses nothing.
        let _ = socket.emit("auth", socket.handshake().auth());
        socket.on("message", |socket, args: Args, _| {
            // Echoes to a client that may have left meanwhile: nothing to do if it has.
            let _ = socket.emit_args("message-back", args);
        });
        socket.on("message-with-ack", |_, args: Args, ack| {
            if let Some(ack) = ack {
                // As above: a client gone meanwhile does not need its answer.
                let _ = ack.send(args);
            }
        });
    });
    io.ns("/custom", |socket| {
        // The suites read `auth` right after connecting; a client gone already misses nothing.
        let _ = socket.emit("auth", socket.handshake().auth());
    });
    io
}

/// Routes by path to the Socket.IO server or the bare Engine.IO endpoint.
#[derive(Clone)]
struct Both {
    io: SocketIo,
    echo: EngineIo<Echo>,
}

impl Service for Both {
    async fn call(&self, req: Request<Incoming>, remote: SocketAddr) -> Response<Body> {
        if self.echo.matches(req.uri().path()) {
            self.echo.handle(req, Some(remote)).await
        } else {
            self.io.call(req, remote).await
        }
    }

    fn shutdown(&self) {
        self.io.shutdown();
        self.echo.shutdown();
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000);
    let service = Both {
        io: socket_io(),
        echo: EngineIo::new(suite_engine_config("/engine.io/"), Echo),
    };
    let listener = tidings::server::bind(([127, 0, 0, 1], port).into())?;
    println!("listening on {}", listener.local_addr()?);
    tidings::server::serve(
        listener,
        service,
        tidings::server::ServeOptions::default(),
        tidings::server::shutdown_signal(),
    )
    .await
}
