//! The Tidings peer of the benchmark harness (`benches/run.sh`).
//!
//! Listens on 127.0.0.1 at `PORT` (default 3000; 0 = a free port), backlog 1 024, and prints
//! `listening on 127.0.0.1:<port>`. The contract every peer of the harness implements, on namespace
//! `/` at path `/socket.io/`:
//! - `join` (room name) → join that room and ack `true`;
//! - `echo` (any data) → emit `echo` back to the sender with the same arguments;
//! - `broadcast` `{room, data}` → emit `bcast` with `data` to every socket in `room`.

use serde::Deserialize;
use serde_json::Value;
use tidings::socketio::{Args, Config, SocketIo};

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
    let io = SocketIo::new(Config::default());
    let io2 = io.clone();
    io.ns("/", move |socket| {
        socket.on("join", |socket, args: Args, ack| {
            // Acked with whether the room was joined (false past `max_rooms_per_socket`).
            let joined = args
                .get::<String>(0)
                .is_ok_and(|room| socket.join(room).is_ok());
            if let Some(Err(err)) = ack.map(|ack| ack.send_one(joined)) {
                tracing::debug!(%err, "join ack not sent");
            }
        });
        socket.on("echo", |socket, args: Args, _| {
            if let Err(err) = socket.emit_args("echo", args) {
                tracing::debug!(%err, "echo not sent");
            }
        });
        let io = io2.clone();
        socket.on("broadcast", move |_, args: Args, _| {
            if let Ok(Broadcast { room, data }) = args.get::<Broadcast>(0) {
                if let Err(err) = io.to(room.as_str()).emit("bcast", data) {
                    tracing::debug!(%err, "broadcast not sent");
                }
            }
        });
    });

    let listener = tidings::server::bind(([127, 0, 0, 1], port).into())?;
    println!("listening on {}", listener.local_addr()?);
    tidings::server::serve(
        listener,
        io,
        tidings::server::ServeOptions::default(),
        tidings::server::shutdown_signal(),
    )
    .await
}
