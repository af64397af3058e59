//! Tidings inside an axum application: `io.layer()` serves the Socket.IO path and passes every other
//! request to the router.
//!
//! `PORT=3000 cargo run --example axum` (PORT=0 picks a free port; the address is printed), then
//! GET http://127.0.0.1:3000/ or connect a Socket.IO client: it is greeted with `hello`, every
//! `echo` is answered with the same arguments, and an `echo` with an ack gets them as the answer.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::{Router, routing::get};
use tidings::socketio::{Args, Config, SocketIo};

async fn index() -> &'static str {
    "an axum app with Socket.IO at /socket.io/\n"
}

/// Hands the client's address to Tidings, which reads it from a `SocketAddr` extension (per-address
/// limits and `trusted_proxies` use it).
async fn remote_addr(
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    mut req: Request,
    next: Next,
) -> Response {
    req.extensions_mut().insert(remote);
    next.run(req).await
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let io = SocketIo::new(Config::default());
    io.ns("/", |socket| {
        let _ = socket.emit("hello", socket.id());
        socket.on("echo", |socket, args: Args, ack| match ack {
            Some(ack) => {
                let _ = ack.send(args);
            }
            None => {
                let _ = socket.emit_args("echo", args);
            }
        });
    });

    let app = Router::new()
        .route("/", get(index))
        .layer(io.layer())
        .layer(middleware::from_fn(remote_addr));

    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on {}", listener.local_addr()?);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
}
