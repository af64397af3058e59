//! The floor peer of the Tidings benchmark harness: just enough of Engine.IO v4 / Socket.IO v5,
//! written by hand over tokio-tungstenite, to run the harness contract. It measures the cost of the
//! WebSocket layer alone, so a full Socket.IO server can be compared against it.
//!
//! Listens on 127.0.0.1 at `PORT` (default 3000; 0 = a free port), backlog 1 024, TCP_NODELAY, and
//! prints `listening on 127.0.0.1:<port>`. Contract on namespace `/` at `/socket.io/`: `join` (room
//! name) → join and ack `true`; `echo` (any data) → emit `echo` back with it; `broadcast`
//! `{room, data}` → emit `bcast` with `data` to the room.
//!
//! Its choices, the simplest that work:
//! - WebSocket only (`transport=websocket` in the handshake request; no polling, no upgrade).
//! - One task per connection with one `tokio::time::Interval` (the ping timer) and one unbounded
//!   channel (the outbound queue: broadcasts land there); the task `select!`s over the socket, the
//!   channel and the timer. Outbound frames are fed while the queue has more, then flushed once.
//! - tungstenite's read buffer: 4 KiB (`FLOOR_READ_BUF` to change it; tungstenite's own default is
//!   128 KiB), the size behind the 8.7 KiB/connection reference figure of the design notes; other
//!   WebSocket settings are tungstenite's defaults.
//! - Rooms: one global `Mutex<HashMap<room, HashMap<conn id, sender>>>`; a broadcast is encoded once
//!   (`Utf8Bytes`, reference-counted) and sent to every member while the lock is held.
//! - Packets are parsed with serde_json's `RawValue`: arguments are passed through unparsed.
//! - Heartbeat: OPEN advertises pingInterval 25 000 / pingTimeout 20 000; the server pings every
//!   25 s and closes a connection whose previous ping is still unanswered at the next tick (so the
//!   effective timeout is 25 s, not 20).
//! - No namespaces but `/`, no binary packets, no auth, no acks from the server side, no
//!   connection state recovery, no maxPayload check beyond tungstenite's own limits.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

const PING_INTERVAL: Duration = Duration::from_millis(25_000);

type Tx = mpsc::UnboundedSender<Utf8Bytes>;

#[derive(Default)]
struct Rooms {
    map: Mutex<HashMap<String, HashMap<u64, Tx>>>,
}

impl Rooms {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashMap<u64, Tx>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Deserialize)]
struct Broadcast<'a> {
    room: String,
    #[serde(borrow)]
    data: &'a RawValue,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn sid(id: u64) -> String {
    format!("floor{id:016x}")
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000);
    let read_buf: usize = std::env::var("FLOOR_READ_BUF")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(4096);
    let config = WebSocketConfig::default().read_buffer_size(read_buf);
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(([127, 0, 0, 1], port).into())?;
    let listener = socket.listen(1024)?;
    println!("listening on {}", listener.local_addr()?);
    let rooms = Arc::new(Rooms::default());
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(_) => {
                // Out of descriptors, most likely: do not spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let rooms = rooms.clone();
        tokio::spawn(async move {
            let _ = connection(stream, config, rooms).await;
        });
    }
}

#[allow(clippy::result_large_err)]
fn check_path(req: &Request, res: Response) -> Result<Response, ErrorResponse> {
    let uri = req.uri();
    let ok = uri.path() == "/socket.io/"
        && uri
            .query()
            .is_some_and(|q| q.contains("EIO=4") && q.contains("transport=websocket"));
    if ok {
        Ok(res)
    } else {
        let mut err = ErrorResponse::new(Some(
            "websocket only: /socket.io/?EIO=4&transport=websocket".into(),
        ));
        *err.status_mut() = StatusCode::BAD_REQUEST;
        Err(err)
    }
}

type Error = Box<dyn std::error::Error + Send + Sync>;

async fn connection(
    stream: TcpStream,
    config: WebSocketConfig,
    rooms: Arc<Rooms>,
) -> Result<(), Error> {
    let mut ws =
        tokio_tungstenite::accept_hdr_async_with_config(stream, check_path, Some(config)).await?;
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let open = format!(
        "0{{\"sid\":\"{}\",\"upgrades\":[],\"pingInterval\":25000,\"pingTimeout\":20000,\"maxPayload\":1000000}}",
        sid(id)
    );
    ws.send(Message::text(open)).await?;
    let (tx, mut rx) = mpsc::unbounded_channel::<Utf8Bytes>();
    let mut joined: Vec<String> = Vec::new();
    let mut ping =
        tokio::time::interval_at(tokio::time::Instant::now() + PING_INTERVAL, PING_INTERVAL);
    let mut awaiting_pong = false;
    let result = async {
        loop {
            tokio::select! {
                m = ws.next() => {
                    let text = match m {
                        Some(Ok(Message::Text(t))) => t,
                        Some(Ok(Message::Close(_))) | None => return Ok(()),
                        Some(Ok(_)) => continue,
                        Some(Err(e)) => return Err(e.into()),
                    };
                    match handle(&text, id, &tx, &rooms, &mut joined, &mut awaiting_pong) {
                        Reply::None => {}
                        Reply::Send(out) => ws.send(Message::Text(out)).await?,
                        Reply::Close => return Ok(()),
                    }
                }
                Some(out) = rx.recv() => {
                    ws.feed(Message::Text(out)).await?;
                    while let Ok(out) = rx.try_recv() {
                        ws.feed(Message::Text(out)).await?;
                    }
                    ws.flush().await?;
                }
                _ = ping.tick() => {
                    if awaiting_pong {
                        return Ok(());
                    }
                    awaiting_pong = true;
                    ws.send(Message::Text(Utf8Bytes::from_static("2"))).await?;
                }
            }
        }
    }
    .await;
    if !joined.is_empty() {
        let mut map = rooms.lock();
        for room in joined {
            if let Some(members) = map.get_mut(&room) {
                members.remove(&id);
                if members.is_empty() {
                    map.remove(&room);
                }
            }
        }
    }
    result
}

enum Reply {
    None,
    Send(Utf8Bytes),
    Close,
}

/// One Engine.IO packet from the client.
fn handle(
    text: &str,
    id: u64,
    tx: &Tx,
    rooms: &Rooms,
    joined: &mut Vec<String>,
    awaiting_pong: &mut bool,
) -> Reply {
    match text.as_bytes().first() {
        Some(b'3') => {
            *awaiting_pong = false;
            Reply::None
        }
        Some(b'1') => Reply::Close,
        Some(b'4') => match text.as_bytes().get(1) {
            // CONNECT to `/` (an auth payload, if any, is ignored).
            Some(b'0') if !text[2..].starts_with('/') => {
                Reply::Send(format!("40{{\"sid\":\"{}\"}}", sid(id ^ 0x5a5a)).into())
            }
            Some(b'1') => Reply::Close,
            Some(b'2') => event(&text[2..], id, tx, rooms, joined),
            _ => Reply::None,
        },
        _ => Reply::None,
    }
}

/// A Socket.IO EVENT on `/`: `[ackId]["name",args...]`.
fn event(body: &str, id: u64, tx: &Tx, rooms: &Rooms, joined: &mut Vec<String>) -> Reply {
    let digits = body.bytes().take_while(u8::is_ascii_digit).count();
    let (ack, json) = body.split_at(digits);
    let Ok(args) = serde_json::from_str::<Vec<&RawValue>>(json) else {
        return Reply::None;
    };
    let Some((name, args)) = args.split_first() else {
        return Reply::None;
    };
    match name.get() {
        "\"echo\"" => {
            let mut out = String::with_capacity(json.len() + 8);
            out.push_str("42[\"echo\"");
            for a in args {
                out.push(',');
                out.push_str(a.get());
            }
            out.push(']');
            Reply::Send(out.into())
        }
        "\"join\"" => {
            let Some(Ok(room)) = args
                .first()
                .map(|a| serde_json::from_str::<String>(a.get()))
            else {
                return Reply::None;
            };
            rooms
                .lock()
                .entry(room.clone())
                .or_default()
                .insert(id, tx.clone());
            joined.push(room);
            if ack.is_empty() {
                Reply::None
            } else {
                Reply::Send(format!("43{ack}[true]").into())
            }
        }
        "\"broadcast\"" => {
            let Some(Ok(b)) = args
                .first()
                .map(|a| serde_json::from_str::<Broadcast<'_>>(a.get()))
            else {
                return Reply::None;
            };
            let packet = Utf8Bytes::from(format!("42[\"bcast\",{}]", b.data.get()));
            if let Some(members) = rooms.lock().get(&b.room) {
                for member in members.values() {
                    let _ = member.send(packet.clone());
                }
            }
            Reply::None
        }
        _ => Reply::None,
    }
}
