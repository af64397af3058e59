//! The socketioxide peer of the Tidings benchmark harness (`benches/run.sh`): socketioxide with
//! its defaults, served by axum as its documentation shows.
//!
//! Listens on 127.0.0.1 at `PORT` (default 3000; 0 = a free port) with a backlog of 1 024 and
//! TCP_NODELAY, and prints `listening on 127.0.0.1:<port>`. The harness contract, on namespace `/`
//! at `/socket.io/`:
//! - `join` (room name) → join that room and ack `true`;
//! - `echo` (any data) → emit `echo` back to the sender with it;
//! - `broadcast` `{room, data}` → emit `bcast` with `data` to every socket in `room`.

use axum::serve::ListenerExt;
use serde::Deserialize;
use serde_json::Value;
use socketioxide::SocketIo;
use socketioxide::extract::{AckSender, Data, SocketRef};

#[derive(Deserialize)]
struct Broadcast {
    room: String,
    data: Value,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000);
    let (layer, io) = SocketIo::new_layer();
    io.ns("/", async |s: SocketRef| {
        s.on(
            "join",
            async |s: SocketRef, Data::<String>(room), ack: AckSender| {
                s.join(room);
                ack.send(&true).ok();
            },
        );
        s.on("echo", async |s: SocketRef, Data::<Value>(data)| {
            s.emit("echo", &data).ok();
        });
        s.on("broadcast", async |io: SocketIo, Data::<Broadcast>(b)| {
            io.to(b.room).emit("bcast", &b.data).await.ok();
        });
    });
    let app = axum::Router::new()
        .fallback(async || axum::http::StatusCode::NOT_FOUND)
        .layer(layer);

    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(([127, 0, 0, 1], port).into())?;
    let listener = socket.listen(1024)?;
    println!("listening on {}", listener.local_addr()?);
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}
