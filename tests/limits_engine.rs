//! The Engine.IO layer's bounds, against a real listener on 127.0.0.1:0 with raw clients: the
//! outbound queue's byte budget, the WebSocket write timeout, the polling body read timeout,
//! WebSockets counted against the accept loop's connection limit (and waited for at shutdown), the
//! `Origin` check, and the client address behind a trusted proxy.
//!
//! Memory is asserted with the server's own accounting (`EngineIo::buffered_bytes`, and the
//! `tidings_outbound_buffered_bytes` gauge of a Socket.IO server). Every wait is bounded.

mod common;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{WAIT, bounded, http, open_polling, polling_post, polling_target, wait_until};
use futures_util::SinkExt as _;
use tidings::engineio::{
    CloseReason, Cors, EngineConfig, EngineIo, Frame, Handler, IpRange, Payload, Session,
    SessionHandler,
};
use tidings::server::{self, ServeOptions};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

const PATH: &str = "/engine.io/";
const FRAME: usize = 64 * 1024;

// ===== the application: floods on request =====

/// `stream`: queues a 64 KiB message every millisecond until the session refuses it.
/// `burst:N`: queues N 64 KiB messages at once. `more`: replies with one 64 KiB message.
/// Anything else is echoed.
#[derive(Default)]
struct Flood {
    closed: Arc<Mutex<Vec<CloseReason>>>,
}

struct FloodSession {
    session: Arc<Session>,
    closed: Arc<Mutex<Vec<CloseReason>>>,
}

impl Handler for Flood {
    fn on_open(&self, session: &Arc<Session>) -> Arc<dyn SessionHandler> {
        Arc::new(FloodSession {
            session: session.clone(),
            closed: self.closed.clone(),
        })
    }
}

fn big() -> Frame {
    Frame::message(&"x".repeat(FRAME - 1))
}

impl SessionHandler for FloodSession {
    fn on_message(&self, payload: Payload) {
        let Payload::Text(text) = payload else {
            return;
        };
        let text = String::from_utf8_lossy(&text).into_owned();
        if text == "stream" {
            let session = self.session.clone();
            tokio::spawn(async move {
                // Bounded: the session closes long before (1 MiB budget, or the write timeout).
                for _ in 0..20_000 {
                    if session.send(big()).is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            });
        } else if let Some(n) = text.strip_prefix("burst:") {
            for _ in 0..n.parse::<usize>().unwrap() {
                let _ = self.session.send(big());
            }
        } else if text == "more" {
            let _ = self.session.send(big());
        } else {
            let _ = self.session.send(Frame::message(&text));
        }
    }

    fn on_close(&self, reason: CloseReason) {
        self.closed.lock().unwrap().push(reason);
    }
}

// ===== the server under test =====

/// The library's defaults (pingInterval 25 s, pingTimeout 60 s: no heartbeat interferes), on
/// `PATH`.
fn config() -> EngineConfig {
    let mut config = EngineConfig::default();
    config.path = PATH.into();
    config
}

struct TestServer {
    addr: SocketAddr,
    engine: EngineIo<Flood>,
    closed: Arc<Mutex<Vec<CloseReason>>>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<io::Result<()>>,
}

impl TestServer {
    async fn start(config: EngineConfig) -> Self {
        Self::start_with(config, ServeOptions::default()).await
    }

    async fn start_with(config: EngineConfig, options: ServeOptions) -> Self {
        config.validate().unwrap();
        let listener = server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let flood = Flood::default();
        let closed = flood.closed.clone();
        let engine = EngineIo::new(config, flood);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server::serve(
            listener,
            engine.clone(),
            options,
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            addr,
            engine,
            closed,
            stop,
            task,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        bounded(WAIT * 2, "the server to stop", self.task)
            .await
            .unwrap()
            .unwrap();
    }

    fn closed_with(&self, reason: CloseReason) -> bool {
        self.closed.lock().unwrap().contains(&reason)
    }
}

/// A WebSocket-only session whose client reads the open packet and then never reads again, with a
/// tiny receive buffer so that the server's writes stall soon. Returns it with its sid.
async fn stalled_ws(addr: SocketAddr) -> (WebSocketStream<TcpStream>, String) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(addr).await.unwrap();
    let url = format!("ws://{addr}{PATH}?EIO=4&transport=websocket");
    let (mut ws, _) = bounded(WAIT, "a websocket handshake", async {
        tokio_tungstenite::client_async(url, tcp).await
    })
    .await
    .unwrap();
    let open = common::ws_text(&mut ws).await;
    let open: serde_json::Value = serde_json::from_str(&open[1..]).unwrap();
    (ws, open["sid"].as_str().unwrap().to_owned())
}

// ===== 1. the outbound queue is bounded in bytes =====

#[tokio::test]
async fn a_polling_client_that_never_gets_is_closed_over_the_byte_budget() {
    let server = TestServer::start(config()).await;
    let addr = server.addr;
    let sid = open_polling(addr, PATH).await;
    // Each POST makes the server queue 64 KiB more; the client never GETs.
    let mut posts = 0;
    while posts < 64 {
        let res = polling_post(addr, PATH, &sid, b"4more").await;
        if res.status != 200 {
            break;
        }
        posts += 1;
        if server.engine.session(&sid).is_none() {
            break;
        }
        assert!(server.engine.buffered_bytes() <= 1 << 20);
    }
    // 16 replies fill the 1 MiB budget exactly; the 17th is over it.
    assert_eq!(posts, 17, "closed once over the budget");
    assert!(server.engine.session(&sid).is_none());
    assert!(server.closed_with(CloseReason::TransportError));
    assert_eq!(server.engine.metrics().slow_consumers.get(), 1);
    assert_eq!(server.engine.buffered_bytes(), 0);
    let res = http(addr, "GET", &polling_target(PATH, &sid), &[], b"").await;
    assert_eq!(res.status, 400, "the session is gone: {}", res.text());
    server.stop().await;
}

#[tokio::test]
async fn a_websocket_client_that_never_reads_is_closed_over_the_byte_budget() {
    let mut config = config();
    // Long enough that the byte budget, not the write timeout, ends the session.
    config.write_timeout = Some(Duration::from_secs(30));
    let server = TestServer::start(config).await;
    let (mut ws, sid) = stalled_ws(server.addr).await;
    ws.send(Message::text("4stream")).await.unwrap();
    let engine = &server.engine;
    assert!(
        wait_until(WAIT, || engine.session(&sid).is_none()).await,
        "closed as a slow consumer"
    );
    assert!(server.closed_with(CloseReason::TransportError));
    assert_eq!(engine.metrics().slow_consumers.get(), 1);
    assert_eq!(engine.buffered_bytes(), 0);
    drop(ws);
    server.stop().await;
}

#[tokio::test]
async fn a_slow_consumer_gives_its_connection_back_at_once() {
    let mut config = config();
    config.write_timeout = Some(Duration::from_secs(30));
    let mut options = ServeOptions::default();
    options.max_connections = 1;
    let server = TestServer::start_with(config, options).await;
    let (mut ws, sid) = stalled_ws(server.addr).await;
    ws.send(Message::text("4stream")).await.unwrap();
    let engine = &server.engine;
    assert!(wait_until(WAIT, || engine.session(&sid).is_none()).await);
    // The write that was stuck on the client ends with the session, not at the write timeout:
    // the only connection permit is free again, and the batch is gone.
    let other = open_polling(server.addr, PATH).await;
    assert!(engine.session(&other).is_some());
    drop(ws);
    server.stop().await;
}

#[tokio::test]
async fn one_message_larger_than_the_budget_still_goes_out() {
    let mut config = config();
    config.max_buffered_bytes = 1_000_000;
    let server = TestServer::start(config).await;
    let (mut ws, sid) = common::ws_session(server.addr, PATH).await;
    let huge = "y".repeat(900_000);
    // Echoed: 900 001 bytes onto an empty queue, then another, each written before the next.
    for _ in 0..2 {
        ws.send(Message::text(format!("4{huge}"))).await.unwrap();
        let reply = common::ws_text(&mut ws).await;
        assert_eq!(reply.len(), huge.len() + 1);
    }
    assert!(server.engine.session(&sid).is_some());
    assert_eq!(server.engine.metrics().slow_consumers.get(), 0);
    server.stop().await;
}

#[tokio::test]
async fn the_socketio_gauge_reports_buffered_bytes_and_returns_to_zero() {
    use tidings::socketio::{Config, SocketIo};
    let io = SocketIo::new(Config::default());
    io.ns("/", |socket| {
        socket.on("more", |socket, _: tidings::socketio::Args, _| {
            // The test reads the gauge, not the frames: a refused emit leaves it at zero, which
            // the test would see.
            let _ = socket.emit("big", "z".repeat(FRAME));
        });
    });
    let listener = server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server::serve(
        listener,
        io.clone(),
        ServeOptions::default(),
        async move {
            let _ = stopped.await;
        },
    ));
    let gauge = |io: &SocketIo| -> u64 {
        let text = io.metrics_text();
        let line = text
            .lines()
            .find(|l| l.starts_with("tidings_outbound_buffered_bytes "))
            .expect("the gauge is rendered");
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let path = "/socket.io/";
    let sid = open_polling(addr, path).await;
    polling_post(addr, path, &sid, b"40").await;
    let connected = common::polling_recv(addr, path, &sid).await;
    assert!(connected[0].starts_with("40"), "{connected:?}");
    let mut seen = 0;
    for _ in 0..64 {
        if polling_post(addr, path, &sid, br#"42["more"]"#)
            .await
            .status
            != 200
        {
            break;
        }
        if io.engine().session(&sid).is_none() {
            break;
        }
        seen = seen.max(gauge(&io));
    }
    assert!(
        seen > 15 * FRAME as u64,
        "the gauge saw the backlog: {seen}"
    );
    assert!(
        io.engine().session(&sid).is_none(),
        "closed over the budget"
    );
    assert_eq!(gauge(&io), 0);
    let _ = stop.send(());
    bounded(WAIT, "the server to stop", task)
        .await
        .unwrap()
        .unwrap();
}

// ===== 2. a WebSocket client that stops reading is cleaned up =====

#[tokio::test]
async fn a_stalled_websocket_write_times_out() {
    let mut config = config();
    config.write_timeout = Some(Duration::from_millis(500));
    // Room for the whole burst: only the stalled write can end the session.
    config.max_buffered_bytes = 256 << 20;
    let server = TestServer::start(config).await;
    let (mut ws, sid) = stalled_ws(server.addr).await;
    ws.send(Message::text("4burst:256")).await.unwrap(); // 16 MiB
    let engine = &server.engine;
    assert!(
        wait_until(WAIT, || engine.session(&sid).is_none()).await,
        "the session is gone"
    );
    assert!(server.closed_with(CloseReason::TransportError));
    assert_eq!(engine.session_count(), 0);
    assert_eq!(engine.buffered_bytes(), 0);
    assert_eq!(engine.metrics().slow_consumers.get(), 0);
    // The server let go of the connection: its writes end, and reading drains to the end.
    let mut tcp = ws.into_inner();
    let drained = bounded(WAIT, "the server to close the connection", async {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    });
    drained.await;
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_gone_within_ping_interval_plus_timeout() {
    let mut config = config();
    config.ping_interval = Duration::from_millis(1000);
    config.ping_timeout = Duration::from_millis(1000);
    config.max_buffered_bytes = 256 << 20;
    // No write timeout of its own: the ping timeout.
    assert_eq!(config.effective_write_timeout(), config.ping_timeout);
    let server = TestServer::start(config).await;
    let (mut ws, sid) = stalled_ws(server.addr).await;
    ws.send(Message::text("4burst:256")).await.unwrap();
    let engine = &server.engine;
    let within = Duration::from_millis(2000 + 500);
    assert!(
        wait_until(within, || engine.session(&sid).is_none()).await,
        "gone within pingInterval + pingTimeout"
    );
    assert_eq!(engine.buffered_bytes(), 0);
    drop(ws);
    server.stop().await;
}

// ===== 3. the body of a polling POST must arrive in time =====

#[tokio::test]
async fn a_polling_post_whose_body_stalls_gets_408() {
    let mut config = config();
    config.body_read_timeout = Duration::from_millis(300);
    let server = TestServer::start(config).await;
    let addr = server.addr;
    let sid = open_polling(addr, PATH).await;
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: text/plain;charset=UTF-8\r\n\
         Content-Length: 1000\r\n\r\n",
        polling_target(PATH, &sid)
    );
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&[b'4'; 500]).await.unwrap();
    // The client never sends the rest, and never closes.
    let res = bounded(WAIT, "the 408", common::read_response(&mut tcp))
        .await
        .expect("a response");
    assert_eq!(res.status, 408);
    assert_eq!(res.text(), r#"{"code":3,"message":"Request body timeout"}"#);
    assert_eq!(res.header("connection"), Some("close"));
    // A client whose POST stalls is broken: its session is closed.
    assert!(server.engine.session(&sid).is_none());
    assert!(server.closed_with(CloseReason::TransportError));
    let res = http(addr, "GET", &polling_target(PATH, &sid), &[], b"").await;
    assert_eq!(res.status, 400);
    server.stop().await;
}

// ===== 4. WebSockets count against the connection limit, and shutdown waits for them =====

#[tokio::test]
async fn websockets_hold_their_connection_permit_for_their_whole_life() {
    let mut options = ServeOptions::default();
    options.max_connections = 2;
    let server = TestServer::start_with(config(), options).await;
    let addr = server.addr;
    let (first, _) = common::ws_session(addr, PATH).await;
    let (_second, _) = common::ws_session(addr, PATH).await;
    // A third connection waits in the backlog while both WebSockets live.
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    let third = tokio::spawn(async move {
        let sid = open_polling(addr, PATH).await;
        count.fetch_add(1, Ordering::SeqCst);
        sid
    });
    let early = tokio::time::timeout(Duration::from_millis(500), async {
        while served.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        early.is_err(),
        "the third connection was served while two WebSockets are open"
    );
    drop(first);
    let sid = bounded(WAIT, "the third connection to be served", third)
        .await
        .unwrap();
    assert!(server.engine.session(&sid).is_some());
    server.stop().await;
}

#[tokio::test]
async fn shutdown_closes_websockets_and_waits_for_them() {
    let mut options = ServeOptions::default();
    options.shutdown_grace = Duration::from_secs(5);
    let server = TestServer::start_with(config(), options).await;
    let (mut ws, _) = common::ws_session(server.addr, PATH).await;
    let engine = server.engine.clone();
    let _ = server.stop.send(());
    // The client is told: the close packet, then the WebSocket close.
    assert_eq!(common::ws_text(&mut ws).await, "1");
    bounded(WAIT, "serve to return", server.task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(engine.session_count(), 0);
}

#[tokio::test]
async fn shutdown_waits_for_a_websocket_still_writing() {
    let mut config = config();
    config.write_timeout = Some(Duration::from_millis(1000));
    config.max_buffered_bytes = 256 << 20;
    let mut options = ServeOptions::default();
    options.shutdown_grace = Duration::from_secs(4);
    let server = TestServer::start_with(config, options).await;
    let (mut ws, sid) = stalled_ws(server.addr).await;
    ws.send(Message::text("4burst:256")).await.unwrap();
    // The server's write is stuck on the client that does not read.
    let engine = server.engine.clone();
    assert!(wait_until(WAIT, || engine.buffered_bytes() > 0).await);
    let started = tokio::time::Instant::now();
    let _ = server.stop.send(());
    bounded(WAIT, "serve to return", server.task)
        .await
        .unwrap()
        .unwrap();
    // Not before the WebSocket's task ended (its write timed out), within the grace period.
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(500),
        "returned after {took:?}"
    );
    assert!(engine.session(&sid).is_none());
    drop(ws);
}

// ===== 5. the Origin check =====

async fn upgrade_status(addr: SocketAddr, target: &str, origin: Option<&str>) -> u16 {
    let mut headers = vec![
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "13"),
    ];
    if let Some(origin) = origin {
        headers.push(("Origin", origin));
    }
    let raw = common::request_bytes(addr, "GET", target, &headers, b"");
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&raw).await.unwrap();
    // Only the status line: a 101 keeps the connection open.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    bounded(WAIT, "an upgrade answer", async {
        while !head.ends_with(b"\r\n") {
            if tcp.read(&mut byte).await.unwrap() == 0 {
                break;
            }
            head.push(byte[0]);
        }
    })
    .await;
    String::from_utf8_lossy(&head)[9..12].parse().unwrap()
}

#[tokio::test]
async fn foreign_origins_are_refused_on_every_request() {
    let mut config = config();
    config.cors = Some(Cors::list(vec!["http://good.test".into()], true));
    let server = TestServer::start(config).await;
    let addr = server.addr;
    let handshake = polling_target(PATH, "");
    let good = [("Origin", "http://good.test")];
    let evil = [("Origin", "http://evil.test")];

    // Handshakes.
    let res = http(addr, "GET", &handshake, &evil, b"").await;
    assert_eq!(res.status, 403);
    assert_eq!(res.text(), r#"{"code":4,"message":"Origin not allowed"}"#);
    assert_eq!(server.engine.session_count(), 0);
    assert_eq!(http(addr, "GET", &handshake, &good, b"").await.status, 200);
    // A page of this server's own (Origin is the Host it talks to).
    let own = format!("http://{addr}");
    let same = [("Origin", own.as_str())];
    assert_eq!(http(addr, "GET", &handshake, &same, b"").await.status, 200);
    let spoof = [
        ("Origin", "http://evil.test"),
        ("X-Forwarded-Host", "evil.test"),
    ];
    assert_eq!(http(addr, "GET", &handshake, &spoof, b"").await.status, 403);
    // No Origin: a non-browser client.
    let sid = open_polling(addr, PATH).await;

    // Requests of an open session.
    let target = polling_target(PATH, &sid);
    let res = http(addr, "POST", &target, &evil, b"4hi").await;
    assert_eq!(res.status, 403);
    assert_eq!(http(addr, "GET", &target, &evil, b"").await.status, 403);
    assert_eq!(http(addr, "POST", &target, &good, b"4hi").await.status, 200);
    let res = http(addr, "GET", &target, &good, b"").await;
    assert_eq!((res.status, res.text().as_str()), (200, "4hi"));

    // WebSocket upgrades, fresh and of the polling session: refused before 101.
    let ws = format!("{PATH}?EIO=4&transport=websocket");
    assert_eq!(
        upgrade_status(addr, &ws, Some("http://evil.test")).await,
        403
    );
    let upgrade = format!("{ws}&sid={sid}");
    assert_eq!(
        upgrade_status(addr, &upgrade, Some("http://evil.test")).await,
        403
    );
    assert_eq!(
        upgrade_status(addr, &ws, Some("http://good.test")).await,
        101
    );
    assert_eq!(upgrade_status(addr, &ws, None).await, 101);
    server.stop().await;
}

#[tokio::test]
async fn the_origin_check_can_be_turned_off() {
    let mut config = config();
    let mut cors = Cors::list(vec!["http://good.test".into()], true);
    cors.enforce_origin = false;
    config.cors = Some(cors);
    let server = TestServer::start(config).await;
    let addr = server.addr;
    let evil = [("Origin", "http://evil.test")];
    let res = http(addr, "GET", &polling_target(PATH, ""), &evil, b"").await;
    assert_eq!(res.status, 200);
    // No CORS headers for it, as before.
    assert_eq!(res.header("access-control-allow-origin"), None);
    let ws = format!("{PATH}?EIO=4&transport=websocket");
    assert_eq!(
        upgrade_status(addr, &ws, Some("http://evil.test")).await,
        101
    );
    server.stop().await;
}

// ===== 6. the client address behind a trusted proxy =====

async fn handshake_from(addr: SocketAddr, forwarded_for: &str) -> common::Resp {
    http(
        addr,
        "GET",
        &polling_target(PATH, ""),
        &[("X-Forwarded-For", forwarded_for)],
        b"",
    )
    .await
}

fn sid_of(res: &common::Resp) -> String {
    let open: serde_json::Value = serde_json::from_str(&res.text()[1..]).unwrap();
    open["sid"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_per_ip_cap_counts_forwarded_clients_behind_a_trusted_proxy() {
    let mut config = config();
    config.max_connections_per_ip = 1;
    config.trusted_proxies = vec!["127.0.0.1/32".parse::<IpRange>().unwrap()];
    let server = TestServer::start(config).await;
    let addr = server.addr;
    let first = handshake_from(addr, "203.0.113.1").await;
    assert_eq!(first.status, 200);
    let session = server.engine.session(&sid_of(&first)).unwrap();
    let request = session.request();
    assert_eq!(request.remote_addr.unwrap().ip().to_string(), "203.0.113.1");
    assert_eq!(request.peer_addr.unwrap().ip().to_string(), "127.0.0.1");
    assert_eq!(handshake_from(addr, "203.0.113.1").await.status, 503);
    // A spoofed hop left of the one our proxy saw changes nothing.
    assert_eq!(
        handshake_from(addr, "198.51.100.1, 203.0.113.1")
            .await
            .status,
        503
    );
    assert_eq!(handshake_from(addr, "203.0.113.2").await.status, 200);
    // A malformed header: the proxy itself is the client, counted once.
    assert_eq!(handshake_from(addr, "garbage").await.status, 200);
    assert_eq!(handshake_from(addr, "unknown").await.status, 503);
    server.stop().await;
}

#[tokio::test]
async fn forwarded_headers_from_an_untrusted_peer_are_ignored() {
    let mut config = config();
    config.max_connections_per_ip = 1;
    config.trusted_proxies = vec!["10.9.9.9".parse::<IpRange>().unwrap()];
    let server = TestServer::start(config).await;
    let addr = server.addr;
    let first = handshake_from(addr, "203.0.113.1").await;
    assert_eq!(first.status, 200);
    let session = server.engine.session(&sid_of(&first)).unwrap();
    assert_eq!(
        session.request().remote_addr.unwrap().ip().to_string(),
        "127.0.0.1"
    );
    // Another claimed client from the same peer: still the same client.
    assert_eq!(handshake_from(addr, "203.0.113.2").await.status, 503);
    server.stop().await;
}
