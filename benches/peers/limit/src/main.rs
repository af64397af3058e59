//! The limit peer of the Tidings benchmark harness: the least a server can do for the harness
//! contract, so the report shows how far a server is from what this machine allows, not only from
//! another WebSocket library.
//!
//! Listens on 127.0.0.1 at `PORT` (default 3000; 0 = a free port), backlog 1 024, TCP_NODELAY, and
//! prints `listening on 127.0.0.1:<port>`. Contract on namespace `/` at `/socket.io/`: `join` (room
//! name) → join and ack `true`; `echo` (any data) → emit `echo` back with it; `broadcast`
//! `{room, data}` → emit `bcast` with `data` to the room.
//!
//! What it does, and nothing more:
//! - The WebSocket handshake by hand on the raw TCP stream (`transport=websocket` only; no polling,
//!   no upgrade), the 101 answer and the Engine.IO open packet in one write.
//! - Every frame it sends is framed once: a broadcast is one buffer (WebSocket header and payload)
//!   shared by reference by every recipient's queue; each connection's queued frames go out in one
//!   vectored write per batch, straight to the TCP stream.
//! - An idle connection holds no buffer: reads go to a per-thread scratch buffer, and only the tail
//!   of a frame split across reads is kept, until it completes.
//! - One task per connection, one mutex-guarded queue and one `Notify` per connection, one ping
//!   timer; rooms in one global `Mutex<HashMap>`.
//! - Heartbeat as the floor peer: ping every 25 s, close when the previous ping is unanswered.
//! - No bounds at all: no write timeout, no queue limit (a slow reader grows its queue), no
//!   fragmented messages (closed), no namespaces but `/`, no binary, no auth, no recovery. It is a
//!   yardstick, not a server.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::IoSlice;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

const PING_INTERVAL: Duration = Duration::from_millis(25_000);
/// The largest request head accepted.
const MAX_HEAD: usize = 8 * 1024;
/// The largest client frame accepted (the Engine.IO default maxPayload).
const MAX_FRAME: usize = 1_000_000;
/// The per-thread buffer reads go to.
const SCRATCH: usize = 64 * 1024;
/// At most this many slices go to one vectored write (Linux's `IOV_MAX`).
const MAX_SLICES: usize = 1024;

const OP_TEXT: u8 = 0x1;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xa;

thread_local! {
    static SCRATCH_BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; SCRATCH]);
}

/// One connection's outbound side: frames, already framed, waiting for the next vectored write.
struct Conn {
    queue: Mutex<Vec<Bytes>>,
    wake: Notify,
}

impl Conn {
    fn push(&self, frame: Bytes) {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let was_empty = queue.is_empty();
        queue.push(frame);
        drop(queue);
        // The task takes the whole queue at once: only the first frame after a take wakes it.
        if was_empty {
            self.wake.notify_one();
        }
    }

    fn take(&self) -> Vec<Bytes> {
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

type Rooms = Mutex<HashMap<String, HashMap<u64, Arc<Conn>>>>;

#[derive(Deserialize)]
struct Broadcast<'a> {
    room: String,
    #[serde(borrow)]
    data: &'a RawValue,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// An unmasked, unfragmented server frame: header and payload in one buffer.
fn frame(opcode: u8, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len() + 10);
    out.put_u8(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.put_u8(n as u8),
        n if n <= 0xffff => {
            out.put_u8(126);
            out.put_u16(n as u16);
        }
        n => {
            out.put_u8(127);
            out.put_u64(n as u64);
        }
    }
    out.put_slice(payload);
    out.freeze()
}

fn text(payload: impl AsRef<[u8]>) -> Bytes {
    frame(OP_TEXT, payload.as_ref())
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000);
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(([127, 0, 0, 1], port).into())?;
    let listener = socket.listen(1024)?;
    println!("listening on {}", listener.local_addr()?);
    let rooms: Arc<Rooms> = Arc::default();
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
            let _ = connection(stream, rooms).await;
        });
    }
}

/// Reads the upgrade request and answers it with 101 and the open packet. Returns any bytes read
/// past the request head.
async fn handshake(stream: &mut TcpStream, id: u64) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(1024);
    let end = loop {
        if head.len() >= MAX_HEAD {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
        if stream.read_buf(&mut head).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let request = std::str::from_utf8(&head[..end]).map_err(|_| std::io::ErrorKind::InvalidData)?;
    let mut lines = request.split("\r\n");
    let target = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .unwrap_or("");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let key = lines.find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("sec-websocket-key")
            .then(|| value.trim())
    });
    let (true, true, Some(key)) = (
        path == "/socket.io/",
        query.contains("EIO=4") && query.contains("transport=websocket"),
        key,
    ) else {
        stream
            .write_all(
                b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            )
            .await?;
        return Err(std::io::ErrorKind::InvalidData.into());
    };
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key.as_bytes());
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let accept = base64::engine::general_purpose::STANDARD.encode(sha.digest().bytes());
    let mut answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    )
    .into_bytes();
    let open = format!(
        "0{{\"sid\":\"limit{id:016x}\",\"upgrades\":[],\"pingInterval\":25000,\"pingTimeout\":20000,\"maxPayload\":1000000}}"
    );
    answer.extend_from_slice(&text(open));
    stream.write_all(&answer).await?;
    Ok(head.split_off(end))
}

async fn connection(mut stream: TcpStream, rooms: Arc<Rooms>) -> std::io::Result<()> {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let mut partial = handshake(&mut stream, id).await?;
    let conn = Arc::new(Conn {
        queue: Mutex::new(Vec::new()),
        wake: Notify::new(),
    });
    let mut joined: Vec<String> = Vec::new();
    let mut ping =
        tokio::time::interval_at(tokio::time::Instant::now() + PING_INTERVAL, PING_INTERVAL);
    let mut awaiting_pong = false;
    let mut state = State {
        id,
        conn: &conn,
        rooms: &rooms,
        joined: &mut joined,
        awaiting_pong: &mut awaiting_pong,
    };
    let result = async {
        if !partial.is_empty() && state.consume(&mut partial)? {
            return Ok(());
        }
        loop {
            let batch = conn.take();
            if !batch.is_empty() {
                write_batch(&mut stream, &batch).await?;
            }
            tokio::select! {
                ready = stream.readable() => {
                    ready?;
                    if state.read(&stream, &mut partial)? {
                        return Ok(());
                    }
                }
                () = conn.wake.notified() => {}
                _ = ping.tick() => {
                    if *state.awaiting_pong {
                        return Ok(());
                    }
                    *state.awaiting_pong = true;
                    conn.push(text("2"));
                }
            }
        }
    }
    .await;
    if !joined.is_empty() {
        let mut map = rooms.lock().unwrap_or_else(|e| e.into_inner());
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

/// Writes a batch of frames in as few vectored writes as the kernel takes.
async fn write_batch(stream: &mut TcpStream, batch: &[Bytes]) -> std::io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = batch.iter().map(|b| IoSlice::new(b)).collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        let take = rest.len().min(MAX_SLICES);
        let n = stream.write_vectored(&rest[..take]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut rest, n);
    }
    Ok(())
}

/// What the frame handlers need of the connection.
struct State<'a> {
    id: u64,
    conn: &'a Arc<Conn>,
    rooms: &'a Rooms,
    joined: &'a mut Vec<String>,
    awaiting_pong: &'a mut bool,
}

/// One client frame: its opcode and unmasked payload, and how many bytes it took.
struct ClientFrame {
    opcode: u8,
    payload: Vec<u8>,
    len: usize,
}

/// Parses one masked client frame from the front of `buf`: `Ok(None)` when it is not all there yet.
fn parse(buf: &[u8]) -> Result<Option<ClientFrame>, ()> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    // FIN set, no extension bits, masked (as a client must): anything else is refused.
    if b0 & 0xf0 != 0x80 || b1 & 0x80 == 0 {
        return Err(());
    }
    let (len, mut at) = match b1 & 0x7f {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (usize::try_from(u64::from_be_bytes(b)).map_err(|_| ())?, 10)
        }
        126 | 127 => return Ok(None),
        n => (n as usize, 2),
    };
    if len > MAX_FRAME {
        return Err(());
    }
    if buf.len() < at + 4 + len {
        return Ok(None);
    }
    let mask = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
    at += 4;
    let payload = buf[at..at + len]
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ mask[i & 3])
        .collect();
    Ok(Some(ClientFrame {
        opcode: b0 & 0x0f,
        payload,
        len: at + len,
    }))
}

impl State<'_> {
    /// Reads what the socket has, into the thread's scratch buffer; keeps only an incomplete tail.
    /// Returns true when the connection is to end.
    fn read(&mut self, stream: &TcpStream, partial: &mut Vec<u8>) -> std::io::Result<bool> {
        SCRATCH_BUF.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            loop {
                let n = match stream.try_read(&mut scratch) {
                    Ok(0) => return Ok(true),
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(false),
                    Err(e) => return Err(e),
                };
                let done = if partial.is_empty() {
                    let (used, done) = self.frames(&scratch[..n])?;
                    partial.extend_from_slice(&scratch[used..n]);
                    done
                } else {
                    partial.extend_from_slice(&scratch[..n]);
                    self.consume(partial)?
                };
                if done {
                    return Ok(true);
                }
                if n < scratch.len() {
                    return Ok(false);
                }
            }
        })
    }

    /// Handles the complete frames in `partial`, keeping the rest (and freeing it once empty).
    fn consume(&mut self, partial: &mut Vec<u8>) -> std::io::Result<bool> {
        let (used, done) = self.frames(partial)?;
        partial.drain(..used);
        if partial.is_empty() {
            *partial = Vec::new();
        }
        Ok(done)
    }

    /// Handles the complete frames at the front of `buf`. Returns the bytes they took, and whether
    /// the connection is to end.
    fn frames(&mut self, buf: &[u8]) -> std::io::Result<(usize, bool)> {
        let mut at = 0;
        loop {
            let got = match parse(&buf[at..]) {
                Ok(Some(got)) => got,
                Ok(None) => return Ok((at, false)),
                Err(()) => return Err(std::io::ErrorKind::InvalidData.into()),
            };
            at += got.len;
            match got.opcode {
                OP_TEXT => {
                    let Ok(text) = std::str::from_utf8(&got.payload) else {
                        return Err(std::io::ErrorKind::InvalidData.into());
                    };
                    if self.packet(text) {
                        return Ok((at, true));
                    }
                }
                OP_PING => self.conn.push(frame(OP_PONG, &got.payload)),
                OP_PONG => {}
                OP_CLOSE => return Ok((at, true)),
                _ => return Err(std::io::ErrorKind::InvalidData.into()),
            }
        }
    }

    /// One Engine.IO packet from the client. Returns true when the connection is to end.
    fn packet(&mut self, packet: &str) -> bool {
        match packet.as_bytes().first() {
            Some(b'3') => *self.awaiting_pong = false,
            Some(b'1') => return true,
            Some(b'4') => match packet.as_bytes().get(1) {
                // CONNECT to `/` (an auth payload, if any, is ignored).
                Some(b'0') if !packet[2..].starts_with('/') => self.conn.push(text(format!(
                    "40{{\"sid\":\"limit{:016x}\"}}",
                    self.id ^ 0x5a5a
                ))),
                Some(b'1') => return true,
                Some(b'2') => self.event(&packet[2..]),
                _ => {}
            },
            _ => {}
        }
        false
    }

    /// A Socket.IO EVENT on `/`: `[ackId]["name",args...]`.
    fn event(&mut self, body: &str) {
        let digits = body.bytes().take_while(u8::is_ascii_digit).count();
        let (ack, json) = body.split_at(digits);
        let Ok(args) = serde_json::from_str::<Vec<&RawValue>>(json) else {
            return;
        };
        let Some((name, args)) = args.split_first() else {
            return;
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
                self.conn.push(text(out));
            }
            "\"join\"" => {
                let Some(Ok(room)) = args
                    .first()
                    .map(|a| serde_json::from_str::<String>(a.get()))
                else {
                    return;
                };
                self.rooms
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(room.clone())
                    .or_default()
                    .insert(self.id, self.conn.clone());
                self.joined.push(room);
                if !ack.is_empty() {
                    self.conn.push(text(format!("43{ack}[true]")));
                }
            }
            "\"broadcast\"" => {
                let Some(Ok(b)) = args
                    .first()
                    .map(|a| serde_json::from_str::<Broadcast<'_>>(a.get()))
                else {
                    return;
                };
                // Framed once; every recipient's queue holds the same buffer.
                let frame = text(format!("42[\"bcast\",{}]", b.data.get()));
                let rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(members) = rooms.get(&b.room) {
                    for member in members.values() {
                        member.push(frame.clone());
                    }
                }
            }
            _ => {}
        }
    }
}
