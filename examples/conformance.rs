//! The server the official protocol test suites run against: a bare Engine.IO echo endpoint at
//! `/engine.io/` with the suites' timings (pingInterval 300 ms, pingTimeout 200 ms) and CORS `*`.
//!
//! `PORT=3000 cargo run --example conformance` (PORT=0 picks a free port; the address is printed).

use std::sync::Arc;
use std::time::Duration;

use tidings::engineio::{
    CloseReason, Cors, EngineConfig, EngineIo, Frame, Handler, Payload, Session, SessionHandler,
};

struct Echo;

struct EchoSession(Arc<tidings::engineio::Session>);

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

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000);
    let mut config = EngineConfig::default();
    config.path = "/engine.io/".into();
    config.ping_interval = Duration::from_millis(300);
    config.ping_timeout = Duration::from_millis(200);
    config.max_payload = 1_000_000;
    config.cors = Some(Cors::any());
    let engine = EngineIo::new(config, Echo);
    let listener = tidings::server::bind(([127, 0, 0, 1], port).into())?;
    println!("listening on {}", listener.local_addr()?);
    tidings::server::serve(
        listener,
        engine,
        tidings::server::ServeOptions::default(),
        tidings::server::shutdown_signal(),
    )
    .await
}
