//! A chat server in a few lines: rooms, broadcasts that leave the sender out, acks.
//!
//! `cargo run --example chat`, then connect any Socket.IO client to http://127.0.0.1:3000:
//! emit `join` with a room name (acked with `true`), then `chat` with `{room, text}`.

use serde::Deserialize;
use tidings::socketio::{Args, Config, SocketIo};

#[derive(Deserialize)]
struct Chat {
    room: String,
    text: String,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt().init();
    let io = SocketIo::new(Config::default());
    io.ns("/", |socket| {
        socket.on("join", |socket, args: Args, ack| {
            // Acked with whether the room was joined (false past `max_rooms_per_socket`).
            let joined = args
                .get::<String>(0)
                .is_ok_and(|room| socket.join(room).is_ok());
            if let Some(Err(err)) = ack.map(|ack| ack.send_one(joined)) {
                tracing::debug!(%err, "join ack not sent");
            }
        });
        socket.on("chat", |socket, args: Args, _| {
            if let Ok(Chat { room, text }) = args.get::<Chat>(0) {
                let from = socket.id().to_owned();
                let sent = socket
                    .to(room.as_str())
                    .emit("chat", serde_json::json!({ "from": from, "text": text }));
                if let Err(err) = sent {
                    tracing::debug!(%err, "chat message not sent");
                }
            }
        });
        socket.on_disconnect(|socket, reason| {
            tracing::info!(id = socket.id(), reason = reason.as_str(), "left");
        });
    });
    io.serve("127.0.0.1:3000".parse().unwrap()).await
}
