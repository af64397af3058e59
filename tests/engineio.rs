//! Engine.IO v4 (and v3, with `allow_eio3`) against a real listener on 127.0.0.1:0, with raw HTTP/1.1 and raw WebSocket clients,
//! comparing exact responses with the reference behaviour (see the protocol notes, §1).
//!
//! Every test runs its own server with an echo handler and the official suite's timings (pingInterval
//! 300 ms, pingTimeout 200 ms), so heartbeat pings can show up at any time: the helpers that are not
//! about the heartbeat answer them (`3`) and skip them. Every wait is bounded.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use tidings::engineio::{
    AllowFuture, CloseReason, Cors, EngineConfig, EngineIo, Frame, Handler, Payload, RequestInfo,
    Session, SessionHandler, TransportKind,
};
use tidings::server::{self, ServeOptions};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};

/// The bound on any single wait for the server.
const WAIT: Duration = Duration::from_secs(3);
const PING_INTERVAL: Duration = Duration::from_millis(300);
const PING_TIMEOUT: Duration = Duration::from_millis(200);

// ===== the application: an echo endpoint =====

/// Echoes every message back; optionally refuses every handshake; records why sessions closed.
#[derive(Default)]
struct Echo {
    refuse: Option<String>,
    closed: Arc<Mutex<Vec<CloseReason>>>,
}

struct EchoSession {
    session: Arc<Session>,
    closed: Arc<Mutex<Vec<CloseReason>>>,
}

impl Handler for Echo {
    fn allow_request(&self, _request: &Arc<RequestInfo>) -> Option<AllowFuture> {
        let refuse = self.refuse.clone()?;
        Some(Box::pin(async move { Err(refuse) }))
    }

    fn on_open(&self, session: &Arc<Session>) -> Arc<dyn SessionHandler> {
        Arc::new(EchoSession {
            session: session.clone(),
            closed: self.closed.clone(),
        })
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
        let _ = self.session.send(frame);
    }

    fn on_close(&self, reason: CloseReason) {
        self.closed.lock().unwrap().push(reason);
    }
}

// ===== the server under test =====

fn config() -> EngineConfig {
    let mut config = EngineConfig::default();
    config.path = "/engine.io/".into();
    config.ping_interval = PING_INTERVAL;
    config.ping_timeout = PING_TIMEOUT;
    config
}

struct TestServer {
    addr: SocketAddr,
    engine: EngineIo<Echo>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<io::Result<()>>,
}

async fn start_with(config: EngineConfig, echo: Echo) -> TestServer {
    let listener = server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let engine = EngineIo::new(config, echo);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server::serve(
        listener,
        engine.clone(),
        ServeOptions::default(),
        async move {
            let _ = stopped.await;
        },
    ));
    TestServer {
        addr,
        engine,
        stop,
        task,
    }
}

async fn start() -> TestServer {
    start_with(config(), Echo::default()).await
}

impl TestServer {
    /// Completes the shutdown future and waits for `serve` to return; returns how long that took.
    async fn stop(self) -> Duration {
        let began = Instant::now();
        let _ = self.stop.send(());
        bounded(Duration::from_secs(8), self.task)
            .await
            .expect("serve panicked")
            .expect("serve failed");
        began.elapsed()
    }

    /// The close reasons the handler has seen so far.
    fn closed(&self) -> Vec<CloseReason> {
        self.engine.handler().closed.lock().unwrap().clone()
    }
}

async fn bounded<F: Future>(limit: Duration, f: F) -> F::Output {
    timeout(limit, f).await.expect("timed out waiting")
}

/// Waits until `cond` holds, checking every few milliseconds.
/// Waits until a polling GET of `sid` is pending on the server.
async fn get_waits(server: &TestServer, sid: &str) {
    eventually(|| {
        server
            .engine
            .session(sid)
            .is_some_and(|session| session.polling_get_waiting())
    })
    .await;
}

async fn eventually(mut cond: impl FnMut() -> bool) {
    bounded(WAIT, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

// ===== a tiny HTTP/1.1 client =====

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("body is not UTF-8")
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("body is not JSON")
    }

    /// Asserts a reference error response: status, JSON content type, and exact body.
    #[track_caller]
    fn assert_error(&self, status: u16, code: u8, message: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.header("content-type"), Some("application/json"));
        assert_eq!(
            self.json(),
            serde_json::json!({ "code": code, "message": message })
        );
    }

    /// Asserts a 200 polling payload with the reference content type; returns its packets.
    #[track_caller]
    fn assert_payload(&self) -> Vec<String> {
        assert_eq!(self.status, 200, "{self:?}");
        assert_eq!(
            self.header("content-type"),
            Some("text/plain; charset=UTF-8")
        );
        self.text().split('\x1e').map(str::to_owned).collect()
    }

    /// Asserts the reference answer to a successful POST.
    #[track_caller]
    fn assert_ok(&self) {
        assert_eq!(self.status, 200, "{self:?}");
        assert_eq!(self.header("content-type"), Some("text/html"));
        assert_eq!(self.text(), "ok");
    }
}

/// Sends one request on a fresh connection (`Connection: close`) and reads the whole response.
/// The official suites' "should ignore HTTP requests with same sid after upgrade": the client sends
/// `5` on the WebSocket, then a GET on a connection it already holds. The server must handle the
/// `5` first, as the reference's event loop does (it came first), and answer the GET 400; a GET
/// handled first would get a noop (the upgrade is in progress), 1 suite run in 30 here before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_sent_after_the_upgrade_packet_is_refused() {
    const TRIES: usize = 200;
    let server = start().await;
    let addr = server.addr;
    let mut noop = 0;
    for _ in 0..TRIES {
        let (sid, _) = open_polling(addr).await;
        let mut ws = ws_connect(addr, &format!("transport=websocket&sid={sid}")).await;
        ws.send(Message::text("2probe")).await.unwrap();
        assert_eq!(ws_recv(&mut ws).await, Message::text("3probe"));
        let mut stream = TcpStream::connect(addr).await.unwrap();
        ws.send(Message::text("5")).await.unwrap();
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n",
            eio(&format!("transport=polling&sid={sid}"))
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        bounded(WAIT, stream.read_to_end(&mut raw)).await.unwrap();
        let res = parse_response(&raw);
        if res.status == 200 {
            noop += 1;
        } else {
            res.assert_error(400, 3, "Bad request");
        }
        drop(ws);
    }
    assert_eq!(noop, 0, "{noop} of {TRIES} GETs sent after `5` got a noop");
    server.stop().await;
}

/// Packets queued while a GET is held mid-upgrade stay for the WebSocket: the GET gets its noop
/// (the client is leaving polling and waits for it only to end). Handing them to that GET let the
/// recovery tests' clients get an event twice across a reconnection.
#[tokio::test]
async fn packets_queued_during_a_held_get_go_to_the_websocket() {
    let server = start().await;
    let addr = server.addr;
    let (sid, _) = open_polling(addr).await;
    let mut ws = ws_connect(addr, &format!("transport=websocket&sid={sid}")).await;
    ws.send(Message::text("2probe")).await.unwrap();
    assert_eq!(ws_recv(&mut ws).await, Message::text("3probe"));
    let held = spawn_poll(addr, &sid);
    get_waits(&server, &sid).await;
    // The echo of this POST is queued while the GET is held.
    post(addr, &sid, "4during the hold").await.assert_ok();
    assert_eq!(held.await.unwrap().assert_payload(), ["6"]);
    ws.send(Message::text("5")).await.unwrap();
    assert_eq!(ws_recv(&mut ws).await, Message::text("4during the hold"));
    server.stop().await;
}

/// The other side of the hold: a stock client that polled again after the probe waits for that GET
/// before it sends `5`, so the GET must get its noop (after the short hold), and the upgrade then
/// completes as usual.
#[tokio::test]
async fn a_get_during_the_upgrade_gets_a_noop_and_the_upgrade_goes_on() {
    let server = start().await;
    let addr = server.addr;
    let (sid, _) = open_polling(addr).await;
    let mut ws = ws_connect(addr, &format!("transport=websocket&sid={sid}")).await;
    ws.send(Message::text("2probe")).await.unwrap();
    assert_eq!(ws_recv(&mut ws).await, Message::text("3probe"));
    assert_eq!(poll(addr, &sid).await.assert_payload(), ["6"]);
    ws.send(Message::text("5")).await.unwrap();
    let session = server.engine.session(&sid).unwrap();
    eventually(|| session.transport() == TransportKind::WebSocket).await;
    ws.send(Message::text("4hello")).await.unwrap();
    assert_eq!(ws_recv(&mut ws).await, Message::text("4hello"));
    server.stop().await;
}

async fn http(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    let chunked = headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("transfer-encoding"));
    if !chunked && (method == "POST" || !body.is_empty()) {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    bounded(WAIT, async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        // The server may answer (413) and close before reading everything; the answer still counts.
        let _ = stream.write_all(&request).await;
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
                Err(err) if raw.is_empty() => panic!("reading the response: {err}"),
                Err(_) => break,
            }
        }
        parse_response(&raw)
    })
    .await
}

fn parse_response(raw: &[u8]) -> Resp {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("incomplete response: {:?}", String::from_utf8_lossy(raw)));
    let head = std::str::from_utf8(&raw[..end]).unwrap();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
    let status = status_line[9..12].parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|line| {
            let (k, v) = line.split_once(':').unwrap();
            (k.trim().to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    let rest = &raw[end + 4..];
    let is_chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if is_chunked {
        dechunk(rest)
    } else if let Some((_, len)) = headers.iter().find(|(k, _)| k == "content-length") {
        let len: usize = len.parse().unwrap();
        assert!(rest.len() >= len, "truncated body");
        rest[..len].to_vec()
    } else {
        rest.to_vec()
    };
    Resp {
        status,
        headers,
        body,
    }
}

fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let eol = rest.windows(2).position(|w| w == b"\r\n").unwrap();
        let size_field = std::str::from_utf8(&rest[..eol]).unwrap();
        let size = usize::from_str_radix(size_field.split(';').next().unwrap().trim(), 16).unwrap();
        rest = &rest[eol + 2..];
        if size == 0 {
            return body;
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

fn eio(query: &str) -> String {
    format!("/engine.io/?EIO=4&{query}")
}

async fn get(addr: SocketAddr, target: &str) -> Resp {
    http(addr, "GET", target, &[], b"").await
}

async fn poll(addr: SocketAddr, sid: &str) -> Resp {
    get(addr, &eio(&format!("transport=polling&sid={sid}"))).await
}

async fn post(addr: SocketAddr, sid: &str, body: &str) -> Resp {
    http(
        addr,
        "POST",
        &eio(&format!("transport=polling&sid={sid}")),
        &[("Content-Type", "text/plain;charset=UTF-8")],
        body.as_bytes(),
    )
    .await
}

/// A GET that may still be pending while the test goes on.
fn spawn_poll(addr: SocketAddr, sid: &str) -> JoinHandle<Resp> {
    let sid = sid.to_owned();
    tokio::spawn(async move { poll(addr, &sid).await })
}

/// Polls until something other than heartbeat pings arrives (answering each ping); returns the
/// other packets.
async fn poll_skipping_pings(addr: SocketAddr, sid: &str) -> Vec<String> {
    loop {
        let mut packets = poll(addr, sid).await.assert_payload();
        let pings = packets.iter().filter(|p| *p == "2").count();
        packets.retain(|p| p != "2");
        if pings > 0 {
            post(addr, sid, "3").await.assert_ok();
        }
        if !packets.is_empty() {
            return packets;
        }
    }
}

/// Waits for a pending GET and returns its packets without pings (which it answers).
async fn finish_poll(addr: SocketAddr, sid: &str, pending: JoinHandle<Resp>) -> Vec<String> {
    let mut packets = bounded(WAIT, pending).await.unwrap().assert_payload();
    if packets.iter().any(|p| p == "2") {
        packets.retain(|p| p != "2");
        if packets.is_empty() {
            return poll_skipping_pings(addr, sid).await;
        }
    }
    packets
}

/// Opens a polling session; returns its sid and the handshake JSON.
async fn open_polling(addr: SocketAddr) -> (String, serde_json::Value) {
    let packets = get(addr, &eio("transport=polling")).await.assert_payload();
    assert_eq!(packets.len(), 1, "{packets:?}");
    let json = packets[0]
        .strip_prefix('0')
        .expect("the handshake is an open packet");
    let json: serde_json::Value = serde_json::from_str(json).unwrap();
    (json["sid"].as_str().unwrap().to_owned(), json)
}

// ===== a WebSocket client =====

type Ws = WebSocketStream<TcpStream>;

async fn ws_connect(addr: SocketAddr, query: &str) -> Ws {
    ws_connect_to(addr, &eio(query)).await
}

async fn ws_connect_to(addr: SocketAddr, target: &str) -> Ws {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let url = format!("ws://{addr}{target}");
    let (ws, res) = bounded(WAIT, tokio_tungstenite::client_async(url, tcp))
        .await
        .expect("websocket handshake failed");
    assert_eq!(res.status(), 101);
    ws
}

/// The next WebSocket message, skipping WebSocket-level ping/pong; `None` when the stream ended.
async fn ws_next(ws: &mut Ws) -> Option<Message> {
    bounded(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(msg)) => return Some(msg),
                Some(Err(_)) | None => return None,
            }
        }
    })
    .await
}

/// The next message that is not an Engine.IO ping (answering each ping with `3`).
async fn ws_recv(ws: &mut Ws) -> Message {
    loop {
        match ws_next(ws).await {
            Some(Message::Text(t)) if t == "2" => {
                let _ = ws.send(Message::text("3")).await;
            }
            Some(msg) => return msg,
            None => panic!("the websocket ended"),
        }
    }
}

/// Opens a WebSocket-only session; returns the socket, its sid and the handshake JSON.
async fn open_websocket(addr: SocketAddr) -> (Ws, String, serde_json::Value) {
    let mut ws = ws_connect(addr, "transport=websocket").await;
    let Some(Message::Text(open)) = ws_next(&mut ws).await else {
        panic!("expected the open packet");
    };
    let json: serde_json::Value = serde_json::from_str(open.strip_prefix('0').unwrap()).unwrap();
    let sid = json["sid"].as_str().unwrap().to_owned();
    (ws, sid, json)
}

/// Expects the server to end the WebSocket (a close frame or just the end), skipping pings.
async fn expect_ws_end(ws: &mut Ws) {
    loop {
        match ws_next(ws).await {
            Some(Message::Text(t)) if t == "2" => {}
            Some(Message::Close(_)) | None => return,
            other => panic!("expected the websocket to end, got {other:?}"),
        }
    }
}

/// Expects the server to close the WebSocket with `code` (a close frame, then the end).
async fn expect_close_code(ws: &mut Ws, code: CloseCode) {
    match ws_next(ws).await {
        Some(Message::Close(Some(frame))) => assert_eq!(frame.code, code),
        other => panic!("expected a close frame with {code}, got {other:?}"),
    }
    assert!(ws_next(ws).await.is_none());
}

fn assert_handshake(json: &serde_json::Value, upgrades: serde_json::Value, max_payload: u64) {
    let obj = json.as_object().unwrap();
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "maxPayload",
            "pingInterval",
            "pingTimeout",
            "sid",
            "upgrades"
        ]
    );
    assert_eq!(json["sid"].as_str().unwrap().len(), 20);
    assert_eq!(json["upgrades"], upgrades);
    assert_eq!(json["pingInterval"], 300);
    assert_eq!(json["pingTimeout"], 200);
    assert_eq!(json["maxPayload"], max_payload);
}

// ===== handshake =====

#[tokio::test]
async fn polling_handshake_has_exactly_the_five_fields() {
    let server = start().await;
    let (sid1, json) = open_polling(server.addr).await;
    assert_handshake(&json, serde_json::json!(["websocket"]), 1_000_000);
    let (sid2, _) = open_polling(server.addr).await;
    assert_ne!(sid1, sid2);
    assert!(server.engine.session(&sid1).is_some());
    server.stop().await;
}

#[tokio::test]
async fn websocket_handshake_offers_no_upgrades() {
    let server = start().await;
    let (mut ws1, sid1, json) = open_websocket(server.addr).await;
    assert_handshake(&json, serde_json::json!([]), 1_000_000);
    let (mut ws2, sid2, _) = open_websocket(server.addr).await;
    assert_ne!(sid1, sid2);
    ws1.close(None).await.unwrap();
    ws2.close(None).await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn handshake_advertises_the_configured_max_payload() {
    let mut config = config();
    config.max_payload = 1000;
    let server = start_with(config, Echo::default()).await;
    let (_, json) = open_polling(server.addr).await;
    assert_handshake(&json, serde_json::json!(["websocket"]), 1000);
    server.stop().await;
}

// ===== error codes =====

#[tokio::test]
async fn code_0_for_missing_or_unknown_transport() {
    let server = start().await;
    let addr = server.addr;
    get(addr, "/engine.io/?EIO=4")
        .await
        .assert_error(400, 0, "Transport unknown");
    get(addr, &eio("transport=abc"))
        .await
        .assert_error(400, 0, "Transport unknown");
    server.stop().await;
}

#[tokio::test]
async fn code_1_for_unknown_sid() {
    let server = start().await;
    let addr = server.addr;
    poll(addr, "unknown")
        .await
        .assert_error(400, 1, "Session ID unknown");
    post(addr, "unknown", "4hello")
        .await
        .assert_error(400, 1, "Session ID unknown");
    server.stop().await;
}

#[tokio::test]
async fn code_2_for_post_without_sid() {
    let server = start().await;
    http(
        server.addr,
        "POST",
        &eio("transport=polling"),
        &[],
        b"4hello",
    )
    .await
    .assert_error(400, 2, "Bad handshake method");
    server.stop().await;
}

#[tokio::test]
async fn code_3_for_websocket_transport_without_upgrade() {
    let server = start().await;
    let addr = server.addr;
    get(addr, &eio("transport=websocket"))
        .await
        .assert_error(400, 3, "Bad request");
    // Also for an existing session.
    let (sid, _) = open_polling(addr).await;
    get(addr, &eio(&format!("transport=websocket&sid={sid}")))
        .await
        .assert_error(400, 3, "Bad request");
    server.stop().await;
}

#[tokio::test]
async fn code_3_for_polling_after_upgrade() {
    let server = start().await;
    let addr = server.addr;
    let (sid, _) = open_polling(addr).await;
    let mut ws = ws_connect(addr, &format!("transport=websocket&sid={sid}")).await;
    ws.send(Message::text("2probe")).await.unwrap();
    assert_eq!(ws_recv(&mut ws).await, Message::text("3probe"));
    ws.send(Message::text("5")).await.unwrap();
    // The upgrade completes once the server has read `5`: wait for the session to say so.
    let session = server.engine.session(&sid).unwrap();
    eventually(|| session.transport() == TransportKind::WebSocket).await;
    poll(addr, &sid).await.assert_error(400, 3, "Bad request");
    post(addr, &sid, "4hello")
        .await
        .assert_error(400, 3, "Bad request");
    // The session itself is unharmed.
    ws.send(Message::text("4hello")).await.unwrap();
    assert_eq!(ws_recv(&mut ws).await, Message::text("4hello"));
    server.stop().await;
}

#[tokio::test]
async fn code_4_when_allow_request_refuses() {
    // The default message, and the hook's own.
    for message in ["Forbidden", "no tokens today"] {
        let echo = Echo {
            refuse: Some(message.into()),
            ..Echo::default()
        };
        let server = start_with(config(), echo).await;
        get(server.addr, &eio("transport=polling"))
            .await
            .assert_error(403, 4, message);
        // A refused WebSocket handshake is a plain 403 before the upgrade.
        let tcp = TcpStream::connect(server.addr).await.unwrap();
        let url = format!("ws://{}{}", server.addr, eio("transport=websocket"));
        match bounded(WAIT, tokio_tungstenite::client_async(url, tcp)).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
                assert_eq!(res.status(), 403);
                assert_eq!(res.body().as_deref(), Some(message.as_bytes()));
            }
            other => panic!("expected a 403, got {other:?}"),
        }
        assert_eq!(server.engine.session_count(), 0);
        server.stop().await;
    }
}

#[tokio::test]
async fn code_5_for_missing_or_old_protocol_version() {
    let server = start().await;
    let addr = server.addr;
    for target in [
        "/engine.io/?EIO=3&transport=polling",
        "/engine.io/?transport=polling",
        "/engine.io/?EIO=abc&transport=polling",
    ] {
        get(addr, target)
            .await
            .assert_error(400, 5, "Unsupported protocol version");
    }
    assert_eq!(server.engine.session_count(), 0);
    server.stop().await;
}

#[tokio::test]
async fn other_paths_are_not_found() {
    let server = start().await;
    let res = get(server.addr, "/socket.io/?EIO=4&transport=polling").await;
    assert_eq!(res.status, 404);
    server.stop().await;
}

// ===== polling =====

/// A burst of 40 echoed messages, read back by `user_agent`'s client: how many packets each GET
/// carried (pings left out).
async fn burst_sizes(server: &TestServer, user_agent: Option<&str>) -> Vec<usize> {
    let headers: Vec<(&str, &str)> = user_agent
        .map(|ua| ("User-Agent", ua))
        .into_iter()
        .collect();
    let open = http(server.addr, "GET", &eio("transport=polling"), &headers, b"")
        .await
        .assert_payload();
    let open: serde_json::Value = serde_json::from_str(&open[0][1..]).unwrap();
    let sid = open["sid"].as_str().unwrap().to_owned();
    let burst: Vec<String> = (0..40).map(|i| format!("4m{i}")).collect();
    post(server.addr, &sid, &burst.join("\u{1e}"))
        .await
        .assert_ok();
    let mut sizes = Vec::new();
    let mut got = Vec::new();
    while got.len() < 40 {
        let packets = poll_skipping_pings(server.addr, &sid).await;
        sizes.push(packets.len());
        got.extend(packets);
    }
    assert_eq!(got, burst, "every message once, in order");
    sizes
}

#[tokio::test]
async fn polling_responses_hold_at_most_16_packets_for_python_clients_only() {
    let server = start().await;
    // python-engineio's clients (requests, aiohttp) refuse payloads of more than 16 packets.
    for ua in ["python-requests/2.32.3", "Python/3.11 aiohttp/3.10.5"] {
        let sizes = burst_sizes(&server, Some(ua)).await;
        assert!(sizes.iter().all(|&n| n <= 16), "{ua}: {sizes:?}");
        assert!(sizes.len() >= 3, "{ua}: {sizes:?}");
    }
    // Anyone else gets the burst in one response.
    let sizes = burst_sizes(&server, Some("node")).await;
    assert_eq!(sizes, [40]);
    let sizes = burst_sizes(&server, None).await;
    assert_eq!(sizes, [40]);
    server.stop().await;
}

#[tokio::test]
async fn polling_echoes_text_and_binary() {
    let server = start().await;
    let addr = server.addr;
    let (sid, _) = open_polling(addr).await;
    post(addr, &sid, "4hello\x1ebAQIDBA==\x1e4world")
        .await
        .assert_ok();
    // Binary goes back as `b` + base64, in order, in one payload.
    assert_eq!(
        poll_skipping_pings(addr, &sid).await,
        ["4hello", "bAQIDBA==", "4world"]
    );
    // A pending GET is released by the next message.
    let pending = spawn_poll(addr, &sid);
    get_waits(&server, &sid).await;
    post(addr, &sid, "4é✓").await.assert_ok();
    assert_eq!(finish_poll(addr, &sid, pending).await, ["4é✓"]);
    server.stop().await;
}

#[tokio::test]
async fn overlapping_get_is_refused_and_closes_the_session() {
    let server = start().await;
    let addr = server.addr;
    let (sid, _) = open_polling(addr).await;
    let first = spawn_poll(addr, &sid);
    get_waits(&server, &sid).await;
    let second = poll(addr, &sid).await;
    assert_eq!(second.status, 400);
    assert!(second.body.is_empty(), "{second:?}");
    let first = bounded(WAIT, first).await.unwrap();
    assert_eq!(first.assert_payload(), ["1"]);
    poll(addr, &sid)
        .await
        .assert_error(400, 1, "Session ID unknown");
    assert_eq!(server.closed(), [CloseReason::TransportError]);
    server.stop().await;
}

#[tokio::test]
async fn aborted_get_closes_the_session() {
    let server = start().await;
    let addr = server.addr;
    let (sid, _) = open_polling(addr).await;
    let pending = spawn_poll(addr, &sid);
    get_waits(&server, &sid).await;
    pending.abort();
    let _ = pending.await;
    eventually(|| server.engine.session(&sid).is_none()).await;
    poll(addr, &sid)
        .await
        .assert_error(400, 1, "Session ID unknown");
    server.stop().await;
}

#[tokio::test]
async fn oversized_post_is_refused_with_413() {
    let mut config = config();
    config.max_payload = 1000;
    let server = start_with(config, Echo::default()).await;
    let addr = server.addr;
    let body = format!("4{}", "x".repeat(1000));

    // Declared by Content-Length. The request is refused; the session lives on, as the reference.
    let (sid, _) = open_polling(addr).await;
    let res = post(addr, &sid, &body).await;
    assert_eq!(res.status, 413, "{res:?}");
    assert!(res.body.is_empty());
    post(addr, &sid, "4still open").await.assert_ok();
    assert_eq!(poll_skipping_pings(addr, &sid).await, ["4still open"]);

    // Only found out while reading a chunked body.
    let (sid, _) = open_polling(addr).await;
    let mut chunked = Vec::new();
    for piece in body.as_bytes().chunks(300) {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let res = http(
        addr,
        "POST",
        &eio(&format!("transport=polling&sid={sid}")),
        &[("Transfer-Encoding", "chunked")],
        &chunked,
    )
    .await;
    assert_eq!(res.status, 413, "{res:?}");
    assert!(res.body.is_empty());
    post(addr, &sid, "4still open").await.assert_ok();
    assert_eq!(poll_skipping_pings(addr, &sid).await, ["4still open"]);

    // Exactly at the limit is fine.
    let (sid, _) = open_polling(addr).await;
    post(addr, &sid, &body[..1000]).await.assert_ok();
    assert_eq!(poll_skipping_pings(addr, &sid).await, [&body[..1000]]);
    server.stop().await;
}

#[tokio::test]
async fn client_close_packet_releases_the_pending_get_with_noop() {
    let server = start().await;
    let addr = server.addr;
    let (sid, _) = open_polling(addr).await;
    let pending = spawn_poll(addr, &sid);
    get_waits(&server, &sid).await;
    post(addr, &sid, "1").await.assert_ok();
    let res = bounded(WAIT, pending).await.unwrap();
    assert_eq!(res.assert_payload(), ["6"]);
    poll(addr, &sid)
        .await
        .assert_error(400, 1, "Session ID unknown");
    post(addr, &sid, "4late")
        .await
        .assert_error(400, 1, "Session ID unknown");
    assert_eq!(server.closed(), [CloseReason::TransportClose]);
    server.stop().await;
}

/// The official suites' "forcefully closes the session": a GET and the close POST sent at the same
/// moment. Whichever the server handles first, the GET gets a noop (`6`), never "Session ID
/// unknown", as against the reference; the GET after it gets 400. Before the session registry kept
/// a client-closed session's sid for that GET, 138 to 145 in 200 tries got 400 here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_racing_the_client_close_post_gets_noop() {
    const TRIES: usize = 200;
    let server = start().await;
    let addr = server.addr;
    let mut unknown = 0;
    for _ in 0..TRIES {
        let (sid, _) = open_polling(addr).await;
        let (get, close) = tokio::join!(poll(addr, &sid), post(addr, &sid, "1"));
        close.assert_ok();
        if get.status == 400 {
            get.assert_error(400, 1, "Session ID unknown");
            unknown += 1;
            continue;
        }
        assert_eq!(get.assert_payload(), ["6"]);
        poll(addr, &sid)
            .await
            .assert_error(400, 1, "Session ID unknown");
    }
    assert_eq!(unknown, 0, "{unknown} of {TRIES} racing GETs got 400");
    eventually(|| server.engine.session_count() == 0).await;
    server.stop().await;
}

#[tokio::test]
async fn a_client_closed_sid_is_unknown_again_after_the_grace() {
    // The grace follows the ping timeout (200 ms here).
    let server = start().await;
    let addr = server.addr;
    let (sid, _) = open_polling(addr).await;
    let (early, _) = open_polling(addr).await;
    post(addr, &sid, "1").await.assert_ok();
    let closed = Instant::now();
    post(addr, &early, "1").await.assert_ok();
    assert_eq!(server.closed(), [CloseReason::TransportClose; 2]);
    assert!(server.engine.session(&sid).is_none());
    assert_eq!(server.engine.session_count(), 0);
    assert_eq!(
        server.engine.tombstones(),
        2,
        "what the metrics gauge reports"
    );
    // Within the grace, the sid answers one GET.
    assert_eq!(poll(addr, &early).await.assert_payload(), ["6"]);
    assert_eq!(server.engine.tombstones(), 1);
    // A POST is never answered for a closed session.
    post(addr, &sid, "4late")
        .await
        .assert_error(400, 1, "Session ID unknown");
    // Nothing to wait on but the clock: the grace is a deadline.
    tokio::time::sleep_until((closed + PING_TIMEOUT + Duration::from_millis(50)).into()).await;
    poll(addr, &sid)
        .await
        .assert_error(400, 1, "Session ID unknown");
    server.stop().await;
}

#[tokio::test]
async fn a_closed_polling_session_leaves_no_task_behind() {
    // A long ping timeout: the grace period for collecting a close packet follows it.
    let mut config = config();
    config.ping_timeout = Duration::from_secs(20);
    let server = start_with(config, Echo::default()).await;
    let addr = server.addr;
    let runtime = tokio::runtime::Handle::current().metrics();
    let before = runtime.num_alive_tasks();
    for _ in 0..20 {
        let (sid, _) = open_polling(addr).await;
        post(addr, &sid, "1").await.assert_ok();
    }
    // Closed by the client and gone from the registry: nothing of them may wait for a GET.
    eventually(|| server.engine.session_count() == 0).await;
    eventually(|| runtime.num_alive_tasks() <= before).await;
    server.stop().await;
}

#[tokio::test]
async fn server_close_without_pending_get_is_collected_by_the_next_get() {
    let server = start().await;
    let addr = server.addr;
    let (sid, _) = open_polling(addr).await;
    post(addr, &sid, "4bye").await.assert_ok();
    // The application closes the session between two polls (e.g. a Socket.IO disconnect, which
    // queues `41` first): the next GET still gets what was queued, and the one after it the close
    // packet, in a response of its own as in the reference (the stock client would drop a `41`
    // that shares a response with the close packet).
    let session = server.engine.session(&sid).unwrap();
    assert!(session.close(CloseReason::ForcedClose, true));
    assert_eq!(poll(addr, &sid).await.assert_payload(), ["4bye"]);
    assert_eq!(poll(addr, &sid).await.assert_payload(), ["1"]);
    poll(addr, &sid)
        .await
        .assert_error(400, 1, "Session ID unknown");
    assert!(server.engine.session(&sid).is_none());
    assert_eq!(server.closed(), [CloseReason::ForcedClose]);
    server.stop().await;
}

#[tokio::test]
async fn server_close_with_a_pending_get_sends_queued_packets_before_the_close_packet() {
    let server = start().await;
    let addr = server.addr;
    let (sid, _) = open_polling(addr).await;
    let pending = spawn_poll(addr, &sid);
    get_waits(&server, &sid).await;
    // As Socket.IO's `socket.disconnect(true)` does: queue `41`, then close at once.
    let session = server.engine.session(&sid).unwrap();
    session.send(Frame::message("1")).unwrap();
    assert!(session.close(CloseReason::ForcedClose, true));
    assert_eq!(
        bounded(WAIT, pending).await.unwrap().assert_payload(),
        ["41"]
    );
    assert_eq!(poll(addr, &sid).await.assert_payload(), ["1"]);
    poll(addr, &sid)
        .await
        .assert_error(400, 1, "Session ID unknown");
    assert!(server.engine.session(&sid).is_none());
    assert_eq!(server.closed(), [CloseReason::ForcedClose]);
    server.stop().await;
}

#[tokio::test]
async fn server_close_releases_a_pending_get_with_close() {
    let server = start().await;
    let addr = server.addr;
    let (sid, _) = open_polling(addr).await;
    let pending = spawn_poll(addr, &sid);
    get_waits(&server, &sid).await;
    let session = server.engine.session(&sid).unwrap();
    assert!(session.close(CloseReason::ForcedClose, true));
    assert_eq!(finish_poll(addr, &sid, pending).await, ["1"]);
    poll(addr, &sid)
        .await
        .assert_error(400, 1, "Session ID unknown");
    server.stop().await;
}

#[tokio::test]
async fn invalid_packet_over_polling_closes_the_session() {
    let server = start().await;
    let addr = server.addr;
    let (sid, _) = open_polling(addr).await;
    let res = post(addr, &sid, "abc").await;
    assert_eq!(res.status, 400, "{res:?}");
    poll(addr, &sid)
        .await
        .assert_error(400, 1, "Session ID unknown");
    assert_eq!(server.closed(), [CloseReason::ParseError]);
    server.stop().await;
}

#[tokio::test]
async fn binary_post_body_is_refused() {
    let server = start().await;
    let addr = server.addr;
    let (sid, _) = open_polling(addr).await;
    let res = http(
        addr,
        "POST",
        &eio(&format!("transport=polling&sid={sid}")),
        &[("Content-Type", "application/octet-stream")],
        &[4, 1, 2, 3],
    )
    .await;
    assert_eq!(res.status, 400, "{res:?}");
    poll(addr, &sid)
        .await
        .assert_error(400, 1, "Session ID unknown");
    server.stop().await;
}

// ===== websocket =====

#[tokio::test]
async fn websocket_echoes_text_and_binary_frames() {
    let server = start().await;
    let (mut ws, _, _) = open_websocket(server.addr).await;
    ws.send(Message::text("4hello")).await.unwrap();
    assert_eq!(ws_recv(&mut ws).await, Message::text("4hello"));
    // A binary frame is a message with no type prefix, both ways.
    ws.send(Message::binary(vec![1, 2, 3, 4])).await.unwrap();
    assert_eq!(ws_recv(&mut ws).await, Message::binary(vec![1, 2, 3, 4]));
    ws.send(Message::text("4é✓")).await.unwrap();
    assert_eq!(ws_recv(&mut ws).await, Message::text("4é✓"));
    ws.close(None).await.unwrap();
    eventually(|| server.engine.session_count() == 0).await;
    assert_eq!(server.closed(), [CloseReason::TransportClose]);
    server.stop().await;
}

#[tokio::test]
async fn websocket_message_over_max_payload_is_closed_with_1009() {
    let mut config = config();
    config.max_payload = 1000;
    let server = start_with(config, Echo::default()).await;
    let (mut ws, _, _) = open_websocket(server.addr).await;
    // At the limit: fine.
    let fits = format!("4{}", "x".repeat(999));
    ws.send(Message::text(fits.clone())).await.unwrap();
    assert_eq!(ws_recv(&mut ws).await, Message::text(fits));
    ws.send(Message::binary(vec![7u8; 1001])).await.unwrap();
    expect_close_code(&mut ws, CloseCode::Size).await;
    assert_eq!(server.closed(), [CloseReason::TransportError]);
    server.stop().await;
}

#[tokio::test]
async fn websocket_invalid_utf8_is_closed_with_1007() {
    let server = start().await;
    let (mut ws, _, _) = open_websocket(server.addr).await;
    // tungstenite's `Message::Text` is always valid UTF-8; send the raw frame instead.
    let frame = tokio_tungstenite::tungstenite::protocol::frame::Frame::message(
        Bytes::from_static(b"4\xff\xfe"),
        OpCode::Data(Data::Text),
        true,
    );
    ws.send(Message::Frame(frame)).await.unwrap();
    expect_close_code(&mut ws, CloseCode::Invalid).await;
    server.stop().await;
}

#[tokio::test]
async fn invalid_packet_over_websocket_closes_the_session() {
    let server = start().await;
    let (mut ws, sid, _) = open_websocket(server.addr).await;
    ws.send(Message::text("abc")).await.unwrap();
    expect_ws_end(&mut ws).await;
    assert!(server.engine.session(&sid).is_none());
    assert_eq!(server.closed(), [CloseReason::ParseError]);
    server.stop().await;
}

#[tokio::test]
async fn websocket_close_packet_ends_the_session() {
    let server = start().await;
    let (mut ws, sid, _) = open_websocket(server.addr).await;
    ws.send(Message::text("1")).await.unwrap();
    expect_ws_end(&mut ws).await;
    assert!(server.engine.session(&sid).is_none());
    server.stop().await;
}

#[tokio::test]
async fn websocket_dropped_without_a_close_frame_is_a_transport_close() {
    let server = start().await;
    let (ws, sid, _) = open_websocket(server.addr).await;
    // The TCP connection just ends (a killed client, a lost network): the client closed the
    // transport, it did not break the protocol.
    drop(ws);
    eventually(|| server.engine.session(&sid).is_none()).await;
    assert_eq!(server.closed(), [CloseReason::TransportClose]);
    server.stop().await;
}

#[tokio::test]
async fn second_websocket_for_an_upgraded_session_is_closed() {
    let server = start().await;
    let addr = server.addr;
    let (sid, _) = open_polling(addr).await;
    let mut ws = ws_connect(addr, &format!("transport=websocket&sid={sid}")).await;
    ws.send(Message::text("2probe")).await.unwrap();
    assert_eq!(ws_recv(&mut ws).await, Message::text("3probe"));
    ws.send(Message::text("5")).await.unwrap();
    let mut second = ws_connect(addr, &format!("transport=websocket&sid={sid}")).await;
    expect_ws_end(&mut second).await;
    ws.send(Message::text("4hello")).await.unwrap();
    assert_eq!(ws_recv(&mut ws).await, Message::text("4hello"));
    server.stop().await;
}

// ===== upgrade =====

#[tokio::test]
async fn upgrade_from_polling_to_websocket() {
    let server = start().await;
    let addr = server.addr;
    let (sid, _) = open_polling(addr).await;
    let pending = spawn_poll(addr, &sid);
    get_waits(&server, &sid).await;

    let mut ws = ws_connect(addr, &format!("transport=websocket&sid={sid}")).await;
    ws.send(Message::text("2probe")).await.unwrap();
    assert_eq!(ws_recv(&mut ws).await, Message::text("3probe"));
    // The pending GET is released with a noop once the probe is answered.
    assert_eq!(finish_poll(addr, &sid, pending).await, ["6"]);

    // Messages the server queues during the upgrade wait for the websocket.
    post(addr, &sid, "4queued\x1ebAQI=").await.assert_ok();
    ws.send(Message::text("5")).await.unwrap();
    assert_eq!(ws_recv(&mut ws).await, Message::text("4queued"));
    assert_eq!(ws_recv(&mut ws).await, Message::binary(vec![1, 2]));

    // From now on everything flows over the websocket.
    ws.send(Message::text("4hello")).await.unwrap();
    assert_eq!(ws_recv(&mut ws).await, Message::text("4hello"));
    ws.send(Message::binary(vec![9, 8, 7])).await.unwrap();
    assert_eq!(ws_recv(&mut ws).await, Message::binary(vec![9, 8, 7]));
    assert_eq!(
        server.engine.session(&sid).unwrap().transport(),
        TransportKind::WebSocket
    );
    server.stop().await;
}

#[tokio::test]
async fn server_close_during_an_upgrade_delivers_the_queued_packets_over_the_websocket() {
    let server = start().await;
    let addr = server.addr;
    let (sid, _) = open_polling(addr).await;
    let pending = spawn_poll(addr, &sid);
    get_waits(&server, &sid).await;

    let mut ws = ws_connect(addr, &format!("transport=websocket&sid={sid}")).await;
    ws.send(Message::text("2probe")).await.unwrap();
    assert_eq!(ws_recv(&mut ws).await, Message::text("3probe"));
    assert_eq!(finish_poll(addr, &sid, pending).await, ["6"]);

    // The application says goodbye and closes while the client is between probe and `5` (polling
    // paused): as in the reference, the upgrade completes and the WebSocket carries what was
    // queued, then closes.
    let session = server.engine.session(&sid).unwrap();
    session.send(Frame::message("1")).unwrap();
    assert!(session.close(CloseReason::ForcedClose, true));
    ws.send(Message::text("5")).await.unwrap();
    assert_eq!(ws_recv(&mut ws).await, Message::text("41"));
    assert_eq!(ws_recv(&mut ws).await, Message::text("1"));
    expect_ws_end(&mut ws).await;
    assert_eq!(server.closed(), [CloseReason::ForcedClose]);
    eventually(|| server.engine.session(&sid).is_none()).await;
    server.stop().await;
}

// ===== heartbeat =====

#[tokio::test]
async fn polling_ping_timeout_closes_the_session() {
    let server = start().await;
    let addr = server.addr;
    let opened = Instant::now();
    let (sid, _) = open_polling(addr).await;
    // The ping comes after pingInterval.
    let res = poll(addr, &sid).await;
    assert_eq!(res.assert_payload(), ["2"]);
    assert!(opened.elapsed() >= PING_INTERVAL - Duration::from_millis(20));
    // No pong: gone after pingInterval + pingTimeout.
    tokio::time::sleep_until(
        (opened + PING_INTERVAL + PING_TIMEOUT + Duration::from_millis(50)).into(),
    )
    .await;
    poll(addr, &sid)
        .await
        .assert_error(400, 1, "Session ID unknown");
    assert_eq!(server.closed(), [CloseReason::PingTimeout]);
    server.stop().await;
}

#[tokio::test]
async fn polling_ping_timeout_releases_a_pending_get_with_close() {
    let server = start().await;
    let addr = server.addr;
    let opened = Instant::now();
    let (sid, _) = open_polling(addr).await;
    assert_eq!(poll(addr, &sid).await.assert_payload(), ["2"]);
    // No pong, but a GET is waiting when the timeout strikes: like any server-initiated close over
    // polling, it carries the close packet (the reference's `doClose` on a writable transport).
    let res = bounded(WAIT, spawn_poll(addr, &sid)).await.unwrap();
    assert_eq!(res.assert_payload(), ["1"]);
    assert!(opened.elapsed() >= PING_INTERVAL + PING_TIMEOUT - Duration::from_millis(20));
    poll(addr, &sid)
        .await
        .assert_error(400, 1, "Session ID unknown");
    assert_eq!(server.closed(), [CloseReason::PingTimeout]);
    server.stop().await;
}

#[tokio::test]
async fn websocket_ping_timeout_closes_the_connection() {
    let server = start().await;
    let opened = Instant::now();
    let (mut ws, sid, _) = open_websocket(server.addr).await;
    assert_eq!(ws_next(&mut ws).await, Some(Message::text("2")));
    assert!(opened.elapsed() >= PING_INTERVAL - Duration::from_millis(20));
    // No pong: the server ends the connection.
    expect_ws_end(&mut ws).await;
    assert!(opened.elapsed() >= PING_INTERVAL + PING_TIMEOUT - Duration::from_millis(20));
    assert!(server.engine.session(&sid).is_none());
    assert_eq!(server.closed(), [CloseReason::PingTimeout]);
    server.stop().await;
}

#[tokio::test]
async fn polling_pongs_keep_the_session_alive() {
    let server = start().await;
    let addr = server.addr;
    let opened = Instant::now();
    let (sid, _) = open_polling(addr).await;
    for _ in 0..4 {
        assert_eq!(poll(addr, &sid).await.assert_payload(), ["2"]);
        post(addr, &sid, "3").await.assert_ok();
    }
    // Four intervals: well past pingInterval + pingTimeout.
    assert!(opened.elapsed() >= 4 * PING_INTERVAL - Duration::from_millis(20));
    post(addr, &sid, "4still here").await.assert_ok();
    assert_eq!(poll_skipping_pings(addr, &sid).await, ["4still here"]);
    assert!(server.closed().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn websocket_pongs_keep_the_session_alive() {
    let server = start().await;
    let opened = Instant::now();
    let (mut ws, _, _) = open_websocket(server.addr).await;
    for _ in 0..4 {
        assert_eq!(ws_next(&mut ws).await, Some(Message::text("2")));
        ws.send(Message::text("3")).await.unwrap();
    }
    assert!(opened.elapsed() >= 4 * PING_INTERVAL - Duration::from_millis(20));
    ws.send(Message::text("4still here")).await.unwrap();
    assert_eq!(ws_recv(&mut ws).await, Message::text("4still here"));
    assert!(server.closed().is_empty());
    server.stop().await;
}

// ===== CORS =====

#[tokio::test]
async fn cors_any_allows_every_origin() {
    let mut config = config();
    config.cors = Some(Cors::any());
    let server = start_with(config, Echo::default()).await;
    let addr = server.addr;
    let origin = [("Origin", "https://app.example.com")];

    let res = http(addr, "GET", &eio("transport=polling"), &origin, b"").await;
    res.assert_payload();
    assert_eq!(res.header("access-control-allow-origin"), Some("*"));
    // Error answers carry it too, or the browser could not read them.
    let res = http(addr, "GET", &eio("transport=abc"), &origin, b"").await;
    res.assert_error(400, 0, "Transport unknown");
    assert_eq!(res.header("access-control-allow-origin"), Some("*"));

    let res = http(
        addr,
        "OPTIONS",
        &eio("transport=polling"),
        &[
            ("Origin", "https://app.example.com"),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "content-type"),
        ],
        b"",
    )
    .await;
    assert_eq!(res.status, 204, "{res:?}");
    assert!(res.body.is_empty());
    assert_eq!(res.header("access-control-allow-origin"), Some("*"));
    let methods = res.header("access-control-allow-methods").unwrap();
    assert!(methods.split(',').any(|m| m == "POST"), "{methods}");
    assert!(methods.split(',').any(|m| m == "GET"), "{methods}");
    assert_eq!(
        res.header("access-control-allow-headers"),
        Some("content-type")
    );
    server.stop().await;
}

#[tokio::test]
async fn no_cors_headers_without_cors() {
    let server = start().await;
    let addr = server.addr;
    let origin = [("Origin", "https://app.example.com")];
    let res = http(addr, "GET", &eio("transport=polling"), &origin, b"").await;
    res.assert_payload();
    assert!(
        res.headers
            .iter()
            .all(|(k, _)| !k.starts_with("access-control-")),
        "{res:?}"
    );
    let res = http(
        addr,
        "OPTIONS",
        &eio("transport=polling"),
        &[
            ("Origin", "https://app.example.com"),
            ("Access-Control-Request-Method", "POST"),
        ],
        b"",
    )
    .await;
    assert_ne!(res.status, 204);
    assert!(
        res.headers
            .iter()
            .all(|(k, _)| !k.starts_with("access-control-")),
        "{res:?}"
    );
    server.stop().await;
}

// ===== graceful shutdown =====

#[tokio::test]
async fn shutdown_closes_sessions_with_a_close_packet() {
    let server = start().await;
    let addr = server.addr;
    let (sid, _) = open_polling(addr).await;
    let pending = spawn_poll(addr, &sid);
    let (mut ws, _, _) = open_websocket(addr).await;
    get_waits(&server, &sid).await;

    let stopping = tokio::spawn(server.stop());

    let res = bounded(WAIT, pending).await.unwrap();
    assert_eq!(res.assert_payload(), ["1"]);
    assert_eq!(ws_next(&mut ws).await, Some(Message::text("1")));
    assert!(matches!(ws_next(&mut ws).await, Some(Message::Close(_))));
    assert!(ws_next(&mut ws).await.is_none());

    let took = bounded(WAIT, stopping).await.unwrap();
    assert!(
        took < Duration::from_secs(3),
        "serve took {took:?} to return"
    );
    // Nobody is listening any more.
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn connection_limits_refuse_with_503_and_free_up_on_close() {
    let mut per_ip = config();
    per_ip.max_connections_per_ip = 2;
    let server = start_with(per_ip, Echo::default()).await;
    let addr = server.addr;
    let (first, _) = open_polling(addr).await;
    let (_ws, _, _) = open_websocket(addr).await;
    // A third session from the same address is refused, over either transport.
    let res = get(addr, &eio("transport=polling")).await;
    assert_eq!(res.status, 503, "{res:?}");
    assert_eq!(
        res.json(),
        serde_json::json!({ "message": "Too many connections" })
    );
    let tcp = TcpStream::connect(addr).await.unwrap();
    let url = format!("ws://{addr}{}", eio("transport=websocket"));
    match bounded(WAIT, tokio_tungstenite::client_async(url, tcp)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => assert_eq!(res.status(), 503),
        other => panic!("expected a refused upgrade, got {other:?}"),
    }
    // Closing one frees its place.
    post(addr, &first, "1").await.assert_ok();
    let (_again, _) = open_polling(addr).await;
    server.stop().await;

    let mut global = config();
    global.max_connections = 1;
    let server = start_with(global, Echo::default()).await;
    let (_only, _) = open_polling(server.addr).await;
    assert_eq!(
        get(server.addr, &eio("transport=polling")).await.status,
        503
    );
    server.stop().await;
}

#[tokio::test]
async fn large_polling_responses_are_compressed_as_accepted() {
    use std::io::Read as _;
    let server = start().await;
    let addr = server.addr;
    let big = format!("4{}", "abc".repeat(700));
    for (accept, expected) in [
        (Some("gzip, deflate, br"), Some("gzip")),
        (Some("deflate"), Some("deflate")),
        (Some("gzip;q=0, deflate"), Some("deflate")),
        (Some("br"), None),
        (None, None),
    ] {
        let (sid, _) = open_polling(addr).await;
        post(addr, &sid, &big).await.assert_ok();
        let headers: Vec<(&str, &str)> =
            accept.map(|a| ("Accept-Encoding", a)).into_iter().collect();
        let res = http(
            addr,
            "GET",
            &eio(&format!("transport=polling&sid={sid}")),
            &headers,
            b"",
        )
        .await;
        assert_eq!(res.status, 200);
        assert_eq!(res.header("content-encoding"), expected, "{accept:?}");
        let mut body = String::new();
        match expected {
            Some("gzip") => {
                flate2::read::GzDecoder::new(&res.body[..])
                    .read_to_string(&mut body)
                    .unwrap();
            }
            Some("deflate") => {
                flate2::read::ZlibDecoder::new(&res.body[..])
                    .read_to_string(&mut body)
                    .unwrap();
            }
            _ => body = res.text().to_owned(),
        }
        assert!(body.split('\x1e').any(|p| p == big), "{accept:?}");
    }
    // Small responses are sent as they are.
    let (sid, _) = open_polling(addr).await;
    post(addr, &sid, "4small").await.assert_ok();
    let res = http(
        addr,
        "GET",
        &eio(&format!("transport=polling&sid={sid}")),
        &[("Accept-Encoding", "gzip")],
        b"",
    )
    .await;
    assert_eq!(res.header("content-encoding"), None);
    server.stop().await;
}

// ===== Engine.IO v3 (allow_eio3): socket.io-client 2.x =====
//
// Expected bytes are the reference's (socket.io 4 with `allowEIO3: true`), captured on the wire.

fn eio3(query: &str) -> String {
    format!("/engine.io/?EIO=3&{query}")
}

async fn start_eio3() -> TestServer {
    let mut config = config();
    config.allow_eio3 = true;
    start_with(config, Echo::default()).await
}

/// Asserts a 200 text polling response; returns its body.
#[track_caller]
fn assert_v3_text(res: &Resp) -> &str {
    assert_eq!(res.status, 200, "{res:?}");
    assert_eq!(
        res.header("content-type"),
        Some("text/plain; charset=UTF-8")
    );
    res.text()
}

async fn poll3(addr: SocketAddr, sid: &str) -> Resp {
    get(addr, &eio3(&format!("transport=polling&sid={sid}"))).await
}

async fn post3(addr: SocketAddr, sid: &str, content_type: &str, body: &[u8]) -> Resp {
    let target = eio3(&format!("transport=polling&sid={sid}"));
    http(
        addr,
        "POST",
        &target,
        &[("Content-Type", content_type)],
        body,
    )
    .await
}

/// Opens a v3 polling session (with extra query parameters); returns its sid and handshake JSON.
async fn open_polling3(addr: SocketAddr, extra: &str) -> (String, serde_json::Value) {
    let res = get(addr, &eio3(&format!("transport=polling{extra}"))).await;
    let body = assert_v3_text(&res);
    let (len, packet) = body.split_once(':').expect("a length-prefixed payload");
    assert_eq!(len.parse::<usize>().unwrap(), packet.encode_utf16().count());
    let json: serde_json::Value = serde_json::from_str(packet.strip_prefix('0').unwrap()).unwrap();
    (json["sid"].as_str().unwrap().to_owned(), json)
}

#[tokio::test]
async fn eio3_a_get_after_the_client_close_gets_a_framed_noop() {
    let server = start_eio3().await;
    let addr = server.addr;
    let (sid, _) = open_polling3(addr, "&b64=1").await;
    post3(addr, &sid, "text/plain;charset=UTF-8", b"1:1")
        .await
        .assert_ok();
    // The GET the client may have sent with its close gets the noop in the session's framing.
    assert_eq!(assert_v3_text(&poll3(addr, &sid).await), "1:6");
    poll3(addr, &sid)
        .await
        .assert_error(400, 1, "Session ID unknown");
    server.stop().await;
}

#[tokio::test]
async fn eio3_is_accepted_only_when_allowed() {
    // Refused by default (see `code_5_for_missing_or_old_protocol_version`); allowed, anything but
    // `EIO=4` is v3, as the reference's "3rd revision by default".
    let server = start_eio3().await;
    let addr = server.addr;
    let (_, json) = open_polling3(addr, "").await;
    assert_handshake(&json, serde_json::json!(["websocket"]), 1_000_000);
    let res = get(addr, "/engine.io/?transport=polling").await;
    let (len, open) = assert_v3_text(&res).split_once(':').unwrap();
    assert_eq!(len, open.len().to_string());
    assert!(open.starts_with("0{"), "{res:?}");
    // v4 clients are unaffected.
    let (_, json) = open_polling(addr).await;
    assert_handshake(&json, serde_json::json!(["websocket"]), 1_000_000);
    server.stop().await;
}

#[tokio::test]
async fn eio3_polling_payloads_are_length_prefixed_in_utf16_units() {
    let server = start_eio3().await;
    let addr = server.addr;
    let (sid, _) = open_polling3(addr, "&b64=1").await;
    post3(
        addr,
        &sid,
        "text/plain;charset=UTF-8",
        "6:4hello4:4é😀6:b4AQID".as_bytes(),
    )
    .await
    .assert_ok();
    let res = poll3(addr, &sid).await;
    assert_eq!(assert_v3_text(&res), "6:4hello4:4é😀6:b4AQID");
    // A malformed payload closes the session, as in v4.
    let res = post3(addr, &sid, "text/plain;charset=UTF-8", b"9:4short").await;
    assert_eq!(res.status, 400, "{res:?}");
    poll3(addr, &sid)
        .await
        .assert_error(400, 1, "Session ID unknown");
    assert_eq!(server.closed(), [CloseReason::ParseError]);
    server.stop().await;
}

#[tokio::test]
async fn eio3_polling_binary_payloads_for_clients_with_binary_support() {
    let server = start_eio3().await;
    let addr = server.addr;
    let (sid, _) = open_polling3(addr, "").await;
    // `4hello` as text, then a binary message 01 02 03 (its type byte first).
    let mut body = vec![0, 6, 0xff];
    body.extend_from_slice(b"4hello");
    body.extend_from_slice(&[1, 4, 0xff, 4, 1, 2, 3]);
    post3(addr, &sid, "application/octet-stream", &body)
        .await
        .assert_ok();
    let res = poll3(addr, &sid).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("content-type"), Some("application/octet-stream"));
    assert_eq!(res.body, body);
    // Without binary packets the payload stays text.
    post3(addr, &sid, "text/plain;charset=UTF-8", b"3:4hi")
        .await
        .assert_ok();
    assert_eq!(assert_v3_text(&poll3(addr, &sid).await), "3:4hi");
    server.stop().await;
}

#[tokio::test]
async fn eio3_the_client_pings_and_the_server_answers() {
    let server = start_eio3().await;
    let addr = server.addr;
    let (sid, _) = open_polling3(addr, "").await;
    // Pinging every 150 ms keeps the session well past pingInterval + pingTimeout (500 ms); the
    // server never pings.
    let mut last = Instant::now();
    for _ in 0..6 {
        last = Instant::now();
        post3(addr, &sid, "text/plain;charset=UTF-8", b"1:2")
            .await
            .assert_ok();
        assert_eq!(assert_v3_text(&poll3(addr, &sid).await), "1:3");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // Then silence: the session dies pingInterval + pingTimeout after the last ping.
    let res = bounded(WAIT, poll3(addr, &sid)).await;
    assert_eq!(assert_v3_text(&res), "1:1");
    assert!(
        last.elapsed() >= PING_INTERVAL + PING_TIMEOUT,
        "{:?}",
        last.elapsed()
    );
    assert_eq!(server.closed(), [CloseReason::PingTimeout]);

    // A pong from a v3 client is the wrong direction: the session is closed.
    let (sid, _) = open_polling3(addr, "").await;
    post3(addr, &sid, "text/plain;charset=UTF-8", b"1:3")
        .await
        .assert_ok();
    eventually(|| server.closed().len() == 2).await;
    assert_eq!(server.closed()[1], CloseReason::TransportError);
    server.stop().await;
}

#[tokio::test]
async fn eio3_websocket_binary_frames_carry_the_type_byte() {
    let server = start_eio3().await;
    let addr = server.addr;
    let mut ws = ws_connect_to(addr, &eio3("transport=websocket")).await;
    let Some(Message::Text(open)) = ws_next(&mut ws).await else {
        panic!("expected the open packet");
    };
    // No length prefix on a WebSocket.
    let json: serde_json::Value = serde_json::from_str(open.strip_prefix('0').unwrap()).unwrap();
    assert_handshake(&json, serde_json::json!([]), 1_000_000);
    ws.send(Message::text("2")).await.unwrap();
    assert_eq!(ws_next(&mut ws).await, Some(Message::text("3")));
    ws.send(Message::binary(vec![4, 1, 2, 3])).await.unwrap();
    assert_eq!(
        ws_next(&mut ws).await,
        Some(Message::binary(vec![4, 1, 2, 3]))
    );
    // Base64 from the client is binary too.
    ws.send(Message::text("b4AQID")).await.unwrap();
    assert_eq!(
        ws_next(&mut ws).await,
        Some(Message::binary(vec![4, 1, 2, 3]))
    );
    ws.send(Message::text("4é😀")).await.unwrap();
    assert_eq!(ws_next(&mut ws).await, Some(Message::text("4é😀")));

    // A client that asked for base64 gets binary as `b4` text.
    let mut ws = ws_connect_to(addr, &eio3("transport=websocket&b64=1")).await;
    assert!(matches!(ws_next(&mut ws).await, Some(Message::Text(_))));
    ws.send(Message::binary(vec![4, 1, 2, 3])).await.unwrap();
    assert_eq!(ws_next(&mut ws).await, Some(Message::text("b4AQID")));
    server.stop().await;
}

#[tokio::test]
async fn eio3_upgrade_from_polling_to_websocket() {
    let server = start_eio3().await;
    let addr = server.addr;
    // Polling with base64 (as socket.io-client 2.x in Node), the WebSocket with binary frames.
    let (sid, _) = open_polling3(addr, "&b64=1").await;
    let pending = {
        let sid = sid.clone();
        tokio::spawn(async move { poll3(addr, &sid).await })
    };
    get_waits(&server, &sid).await;
    let mut ws = ws_connect_to(addr, &eio3(&format!("transport=websocket&sid={sid}"))).await;
    ws.send(Message::text("2probe")).await.unwrap();
    assert_eq!(ws_next(&mut ws).await, Some(Message::text("3probe")));
    // The pending GET is released with a noop, in v3 framing.
    let released = bounded(WAIT, pending).await.unwrap();
    assert_eq!(assert_v3_text(&released), "1:6");
    post3(addr, &sid, "text/plain;charset=UTF-8", b"7:4queued")
        .await
        .assert_ok();
    ws.send(Message::text("5")).await.unwrap();
    assert_eq!(ws_next(&mut ws).await, Some(Message::text("4queued")));
    ws.send(Message::binary(vec![4, 9])).await.unwrap();
    assert_eq!(ws_next(&mut ws).await, Some(Message::binary(vec![4, 9])));
    ws.send(Message::text("2")).await.unwrap();
    assert_eq!(ws_next(&mut ws).await, Some(Message::text("3")));
    assert_eq!(
        server.engine.session(&sid).unwrap().transport(),
        TransportKind::WebSocket
    );
    server.stop().await;
}
