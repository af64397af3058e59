//! What a Socket.IO client can make the server keep, and what a resume may take: raw WebSocket
//! clients against the library.
//!
//! - A resume passes the namespace's middlewares before anything is replayed, its resume hook picks
//!   the saved rooms the new credentials grant, and a refused or foreign attempt leaves the saved
//!   session to its owner.
//! - A CONNECT's auth payload is kept as its JSON text, within `max_auth_bytes`.
//! - A binary packet waiting for attachments holds its raw bytes, within a byte budget and a
//!   deadline; ending frees them (the server's own gauges show it).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::SinkExt as _;
use serde_json::{Value, json};
use tidings::socketio::{Config, ConnectError, RecoveryConfig, SocketIo, SocketRef};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;

use common::{WAIT, Ws, bounded, wait_until, ws_session, ws_text};

/// A server on 127.0.0.1:0, stopped when dropped.
struct Server {
    addr: SocketAddr,
    io: SocketIo,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn serve(io: SocketIo) -> Server {
    let listener = tidings::server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn({
        let io = io.clone();
        async move {
            let _ = tidings::server::serve(listener, io, Default::default(), async {
                let _ = stopped.await;
            })
            .await;
        }
    });
    Server {
        addr,
        io,
        stop: Some(stop),
    }
}

/// The rooms a token grants: `"a"` → room `t:a`, `"ab"` → `t:a` and `t:b`.
fn granted(token: &str) -> Vec<String> {
    token.chars().map(|c| format!("t:{c}")).collect()
}

/// A tenant server with recovery: the middleware accepts tokens made of the letters a-c (anything
/// else is refused) and records the grant; a new socket joins every room its token grants; the
/// resume hook keeps only granted rooms.
fn tenant_server() -> Server {
    let mut config = Config::default();
    config.recovery = Some(RecoveryConfig::default());
    let io = SocketIo::new(config);
    let ns = io.ns("/", |socket: SocketRef| {
        if !socket.recovered() {
            let rooms = socket
                .with_extension(|grant: &mut Vec<String>| grant.clone())
                .unwrap_or_default();
            socket
                .join(rooms)
                .expect("the grant is within the room limit");
        }
    });
    ns.use_middleware(|socket: SocketRef| {
        let token = socket.handshake().auth_str("token").unwrap_or_default();
        let valid = !token.is_empty() && token.chars().all(|c| ('a'..='c').contains(&c));
        if valid {
            socket.insert_extension(granted(&token));
        }
        async move {
            if valid {
                Ok(())
            } else {
                Err(ConnectError::new("unauthorized"))
            }
        }
    });
    ns.on_resume(|socket, room| {
        socket
            .with_extension(|grant: &mut Vec<String>| grant.iter().any(|g| g == room))
            .unwrap_or(false)
    });
    serve(io)
}

/// Sends CONNECT with `auth` and returns every message up to and including the reply
/// (`40…` or `44…`).
async fn connect(ws: &mut Ws, auth: &Value) -> Vec<String> {
    ws.send(Message::text(format!("40{auth}"))).await.unwrap();
    let mut seen = Vec::new();
    loop {
        let text = ws_text(ws).await;
        let done = text.starts_with("40") || text.starts_with("44");
        seen.push(text);
        if done {
            return seen;
        }
    }
}

fn reply(seen: &[String]) -> Value {
    let last = seen.last().unwrap();
    serde_json::from_str(&last[2..]).unwrap()
}

/// An event's name and first argument, with its recovery offset (the last argument).
fn event(text: &str) -> Option<(String, Value, String)> {
    let items: Vec<Value> = serde_json::from_str(text.strip_prefix("42")?).ok()?;
    Some((
        items.first()?.as_str()?.to_owned(),
        items.get(1)?.clone(),
        items.last()?.as_str()?.to_owned(),
    ))
}

/// Connects with `token`, waits for one broadcast to `room` to learn an offset, and drops the
/// transport (a recoverable disconnect). Returns the socket id, pid and last offset.
async fn connect_and_drop(server: &Server, token: &str, room: &str) -> (String, String, String) {
    let (mut ws, _) = ws_session(server.addr, "/socket.io/").await;
    let seen = connect(&mut ws, &json!({ "token": token })).await;
    let r = reply(&seen);
    let (sid, pid) = (r["sid"].as_str().unwrap(), r["pid"].as_str().unwrap());
    server
        .io
        .to(room.to_owned())
        .emit("hello", 0)
        .expect("broadcast");
    let (name, _, offset) = event(&ws_text(&mut ws).await).expect("an event");
    assert_eq!(name, "hello");
    drop(ws);
    let ns = server.io.of("/").unwrap();
    assert!(
        wait_until(WAIT, || ns.recovery_stats().unwrap().saved_sessions == 1).await,
        "the dropped socket's session is saved"
    );
    (sid.to_owned(), pid.to_owned(), offset)
}

#[tokio::test]
async fn a_stolen_pid_gets_nothing_and_the_owner_still_recovers() {
    let server = tenant_server();
    let (sid, pid, offset) = connect_and_drop(&server, "a", "t:a").await;
    // Missed by the owner while away.
    server
        .io
        .to("t:a")
        .emit("secret", "for tenant a")
        .expect("broadcast");

    // No credentials at all: refused by the middleware, before any replay.
    let (mut ws, _) = ws_session(server.addr, "/socket.io/").await;
    let seen = connect(&mut ws, &json!({ "pid": pid, "offset": offset })).await;
    assert_eq!(seen.len(), 1, "nothing before the refusal: {seen:?}");
    assert!(seen[0].starts_with("44"), "{seen:?}");
    drop(ws);

    // Another tenant's valid token: connected, but as a new socket, with nothing of the owner's.
    let (mut ws, _) = ws_session(server.addr, "/socket.io/").await;
    let seen = connect(
        &mut ws,
        &json!({ "token": "b", "pid": pid, "offset": offset }),
    )
    .await;
    assert_eq!(seen.len(), 1, "nothing replayed: {seen:?}");
    assert_ne!(reply(&seen)["sid"], sid, "not the owner's socket");
    server
        .io
        .to("t:a")
        .emit("live", "for tenant a")
        .expect("broadcast");
    server
        .io
        .to("t:b")
        .emit("live", "for tenant b")
        .expect("broadcast");
    let (_, data, _) = event(&ws_text(&mut ws).await).unwrap();
    assert_eq!(data, "for tenant b", "only its own tenant's live events");
    drop(ws);

    // The owner comes back: same socket, the missed event (and the live one) replayed.
    let (mut ws, _) = ws_session(server.addr, "/socket.io/").await;
    let seen = connect(
        &mut ws,
        &json!({ "token": "a", "pid": pid, "offset": offset }),
    )
    .await;
    assert_eq!(reply(&seen)["sid"], sid, "recovered: {seen:?}");
    let replayed: Vec<Value> = seen.iter().filter_map(|t| event(t)).map(|e| e.1).collect();
    assert_eq!(replayed, ["for tenant a", "for tenant a"]);
}

#[tokio::test]
async fn a_resume_keeps_only_the_rooms_the_new_credentials_grant() {
    let server = tenant_server();
    let (sid, pid, offset) = connect_and_drop(&server, "ab", "t:a").await;
    server.io.to("t:a").emit("missed", "a").expect("broadcast");
    server.io.to("t:b").emit("missed", "b").expect("broadcast");

    // The same user, now with a token for `a` only.
    let (mut ws, _) = ws_session(server.addr, "/socket.io/").await;
    let seen = connect(
        &mut ws,
        &json!({ "token": "a", "pid": pid, "offset": offset }),
    )
    .await;
    assert_eq!(reply(&seen)["sid"], sid, "recovered: {seen:?}");
    let replayed: Vec<Value> = seen.iter().filter_map(|t| event(t)).map(|e| e.1).collect();
    assert_eq!(replayed, ["a"], "room t:b is not replayed");
    let socket = server.io.of("/").unwrap().sockets();
    assert_eq!(socket.len(), 1);
    let mut rooms: Vec<String> = socket[0].rooms().iter().map(|r| r.to_string()).collect();
    rooms.sort();
    let mut expected = [sid.clone(), "t:a".to_owned()];
    expected.sort();
    assert_eq!(rooms, expected, "t:b not rejoined");
}

#[tokio::test]
async fn an_oversized_auth_is_refused_and_a_kept_one_costs_its_json_text() {
    let mut config = Config::default();
    config.max_auth_bytes = 1024;
    let io = SocketIo::new(config);
    io.ns("/", |_socket: SocketRef| {});
    let server = serve(io);
    let metrics = || server.io.metrics_text();
    let gauge = |text: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix("tidings_auth_retained_bytes "))
            .and_then(|v| v.parse().ok())
            .expect("the gauge is exposed")
    };

    let (mut big, _) = ws_session(server.addr, "/socket.io/").await;
    let seen = connect(&mut big, &json!({ "blob": "x".repeat(100_000) })).await;
    assert!(seen[0].starts_with("44"), "{seen:?}");
    assert!(seen[0].contains("auth payload too large"), "{seen:?}");
    assert_eq!(gauge(&metrics()), 0);

    let auth = json!({ "token": "t".repeat(500), "nested": {"list": [1, 2, 3]} });
    let (mut ok, _) = ws_session(server.addr, "/socket.io/").await;
    let seen = connect(&mut ok, &auth).await;
    assert!(seen[0].starts_with("40"), "{seen:?}");
    let kept = auth.to_string().len() as u64;
    assert_eq!(gauge(&metrics()), kept, "the JSON text, nothing more");
    let socket = server.io.of("/").unwrap().sockets().pop().unwrap();
    assert_eq!(socket.handshake().auth(), auth);
    drop(socket);
    drop(ok);
    assert!(
        wait_until(WAIT, || gauge(&metrics()) == 0).await,
        "released when the socket goes"
    );
}

/// Waits until the server closes `ws` (messages before the close are skipped).
async fn closed(ws: &mut Ws) {
    bounded(WAIT, "the close", async {
        while let Some(Ok(msg)) = futures_util::StreamExt::next(ws).await {
            if msg.is_close() {
                return;
            }
        }
    })
    .await;
}

fn pending_gauge(io: &SocketIo) -> u64 {
    io.metrics_text()
        .lines()
        .find_map(|l| l.strip_prefix("tidings_pending_attachment_bytes "))
        .and_then(|v| v.parse().ok())
        .expect("the gauge is exposed")
}

#[tokio::test]
async fn attachments_that_never_come_are_dropped_at_the_deadline() {
    let mut config = Config::default();
    config.attachment_timeout = Duration::from_millis(300);
    let io = SocketIo::new(config);
    io.ns("/", |_socket: SocketRef| {});
    let server = serve(io);
    let (mut ws, _) = ws_session(server.addr, "/socket.io/").await;
    connect(&mut ws, &json!({})).await;
    // A binary event announcing two attachments, with a large text part; one attachment only.
    let text = format!(
        r#"452-["upload",{{"_placeholder":true,"num":0}},{{"_placeholder":true,"num":1}},"{}"]"#,
        "y".repeat(200_000)
    );
    ws.send(Message::text(text.clone())).await.unwrap();
    ws.send(Message::binary(vec![1u8; 1000])).await.unwrap();
    let held = (text.len() - 1 + 1000) as u64;
    assert!(
        wait_until(WAIT, || pending_gauge(&server.io) == held).await,
        "the raw text part and the attachment, nothing more: {}",
        pending_gauge(&server.io)
    );
    // The second attachment never comes: the connection is closed and the bytes freed.
    closed(&mut ws).await;
    assert_eq!(pending_gauge(&server.io), 0);
    assert!(wait_until(WAIT, || server.io.engine().session_count() == 0).await);
}

#[tokio::test]
async fn a_pending_binary_packet_over_its_budget_closes_only_its_connection() {
    let mut config = Config::default();
    config.max_pending_attachment_bytes = 64 * 1024;
    let io = SocketIo::new(config);
    io.ns("/", |socket: SocketRef| {
        socket.on("upload", |_s, args, ack| {
            if let Some(ack) = ack {
                // A lost answer shows up as the test's missing ack.
                let _ = ack.send_one(args.binary.len());
            }
        });
    });
    let server = serve(io);
    let (mut fine, _) = ws_session(server.addr, "/socket.io/").await;
    connect(&mut fine, &json!({})).await;
    let (mut over, _) = ws_session(server.addr, "/socket.io/").await;
    connect(&mut over, &json!({})).await;

    over.send(Message::text(
        r#"451-["upload",{"_placeholder":true,"num":0}]"#,
    ))
    .await
    .unwrap();
    over.send(Message::binary(vec![0u8; 100 * 1024]))
        .await
        .unwrap();
    closed(&mut over).await;
    assert_eq!(pending_gauge(&server.io), 0);

    // Within the budget, a binary packet still goes through.
    fine.send(Message::text(
        r#"451-1["upload",{"_placeholder":true,"num":0}]"#,
    ))
    .await
    .unwrap();
    fine.send(Message::binary(vec![0u8; 32 * 1024]))
        .await
        .unwrap();
    assert_eq!(ws_text(&mut fine).await, "431[1]");
}
