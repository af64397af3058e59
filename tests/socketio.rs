//! Raw-packet tests of the Socket.IO layer over a real WebSocket on 127.0.0.1: CONNECT and auth,
//! CONNECT_ERROR, namespaces, events and acks both ways, binary attachments, disconnects, parse errors
//! and per-socket order; and a socket.io-client 2.x session (Engine.IO v3, protocol v4).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tidings::socketio::{Args, Config, ConnectError, SocketIo, SocketRef};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const WAIT: Duration = Duration::from_secs(5);

struct TestServer {
    port: u16,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    reasons: Arc<Mutex<Vec<String>>>,
}

impl TestServer {
    async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    async fn start_with(configure: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config::default();
        config.engine.ping_interval = Duration::from_millis(300);
        config.engine.ping_timeout = Duration::from_millis(300);
        configure(&mut config);
        let io = SocketIo::new(config);
        let counter = io.clone();
        let reasons: Arc<Mutex<Vec<String>>> = Arc::default();
        let log = reasons.clone();
        io.ns("/", move |socket| {
            // A lost event shows up as the test's missing event.
            let _ = socket.emit("auth", socket.handshake().auth());
            socket.on("echo", |socket, args: Args, _| {
                // A lost echo shows up as the test's missing event.
                let _ = socket.emit_args("echo", args);
            });
            socket.on("echo-ack", |_, args: Args, ack| {
                if let Some(ack) = ack {
                    // A lost answer shows up as the test's missing ack.
                    let _ = ack.send(args);
                }
            });
            socket.on("disconnect-me", |socket, _, _| socket.disconnect(false));
            socket.on("join", |socket, args: Args, ack| {
                let joined = match socket.join(args.get::<Vec<String>>(0).unwrap_or_default()) {
                    Ok(()) => json!(true),
                    Err(err) => json!({ "error": err.to_string() }),
                };
                if let Some(ack) = ack {
                    // A lost answer shows up as the test's missing ack.
                    let _ = ack.send_one(joined);
                }
            });
            let counter = counter.clone();
            socket.on("rate-limited", move |_, _, ack| {
                if let Some(ack) = ack {
                    // A lost answer shows up as the test's missing ack.
                    let _ = ack.send_one(counter.rate_limited_events());
                }
            });
            socket.on("panic", |_, _, _| panic!("a handler bug"));
            // Emits of reserved names, to the socket and as a broadcast: both refused.
            socket.on("reserved", |socket, _, ack| {
                let direct = socket.emit("disconnect", 1).err().map(|e| e.to_string());
                let broadcast = socket.broadcast().emit("connect", 1);
                let broadcast = broadcast.err().map(|e| e.to_string());
                if let Some(ack) = ack {
                    // A lost answer shows up as the test's missing ack.
                    let _ = ack.send_one(json!({ "direct": direct, "broadcast": broadcast }));
                }
            });
            socket.on("ask", |socket, args: Args, _| {
                let socket = socket.clone();
                tokio::spawn(async move {
                    let answer = socket
                        .emit_with_ack("question", args, Duration::from_secs(2))
                        .await;
                    let report = match answer {
                        Ok(a) => json!({ "answer": a.values }),
                        Err(e) => json!({ "error": e.to_string() }),
                    };
                    // A lost report shows up as the test's missing event.
                    let _ = socket.emit("answered", report);
                });
            });
            let log = log.clone();
            socket.on_disconnect(move |_, reason| log.lock().unwrap().push(reason.as_str().into()));
        });
        let admin = io.ns("/admin", |socket| {
            // A lost event shows up as the test's missing event.
            let _ = socket.emit("welcome", "admin");
        });
        io.dynamic_ns(|name| name.starts_with("/dyn-"), |_| {});
        admin.use_middleware(|socket: SocketRef| async move {
            if socket.handshake().auth().get("token") == Some(&json!("ok")) {
                Ok(())
            } else {
                Err(ConnectError::new("unauthorized").with_data(json!({ "why": "token" })))
            }
        });
        let listener = tidings::server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = tidings::server::serve(listener, io, Default::default(), async {
                let _ = stopped.await;
            })
            .await;
        });
        Self {
            port,
            stop: Some(stop),
            task,
            reasons,
        }
    }

    /// A WebSocket-only Engine.IO session, past its open packet.
    async fn connect(&self) -> Ws {
        self.connect_eio(4).await
    }

    /// The same, speaking Engine.IO revision `eio`.
    async fn connect_eio(&self, eio: u8) -> Ws {
        let url = format!(
            "ws://127.0.0.1:{}/socket.io/?EIO={eio}&transport=websocket",
            self.port
        );
        let (mut ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .unwrap()
            .unwrap();
        let open = next_text(&mut ws).await;
        assert!(open.starts_with("0{"), "{open}");
        ws
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(WAIT, self.task)
            .await
            .unwrap()
            .unwrap();
    }
}

/// The next message that is not a heartbeat ping (answered with a pong).
async fn next_msg(ws: &mut Ws) -> Message {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("timed out waiting for a frame")
            .expect("stream ended")
            .expect("websocket error");
        if msg.to_text().ok() == Some("2") {
            ws.send(Message::text("3")).await.unwrap();
            continue;
        }
        return msg;
    }
}

async fn next_text(ws: &mut Ws) -> String {
    match next_msg(ws).await {
        Message::Text(t) => t.to_string(),
        other => panic!("expected text, got {other:?}"),
    }
}

async fn send(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text.to_owned())).await.unwrap();
}

/// Sends CONNECT for `/` and returns the socket id from the reply.
async fn connect_root(ws: &mut Ws, auth: Option<Value>) -> String {
    let packet = match auth {
        Some(auth) => format!("40{auth}"),
        None => "40".to_owned(),
    };
    send(ws, &packet).await;
    let reply = next_text(ws).await;
    let data: Value = serde_json::from_str(reply.strip_prefix("40").unwrap()).unwrap();
    // With recovery off, the reply carries the sid and nothing else.
    assert_eq!(data.as_object().unwrap().len(), 1, "{reply}");
    data["sid"].as_str().unwrap().to_owned()
}

/// Answers heartbeats for `duration`, expecting nothing else.
async fn idle(ws: &mut Ws, duration: Duration) {
    let deadline = tokio::time::Instant::now() + duration;
    while let Ok(next) = tokio::time::timeout_at(deadline, ws.next()).await {
        let msg = next.expect("stream ended").expect("websocket error");
        assert_eq!(msg.to_text().unwrap(), "2", "unexpected frame while idle");
        ws.send(Message::text("3")).await.unwrap();
    }
}

/// Waits until the server closes the connection.
async fn expect_closed(ws: &mut Ws) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let next = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("connection was not closed");
        match next {
            None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
            Some(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn connect_with_and_without_auth() {
    let server = TestServer::start().await;
    let mut ws = server.connect().await;
    let sid = connect_root(&mut ws, None).await;
    assert_eq!(sid.len(), 20);
    assert_eq!(next_text(&mut ws).await, r#"42["auth",{}]"#);

    let mut ws2 = server.connect().await;
    let sid2 = connect_root(&mut ws2, Some(json!({ "token": "€1" }))).await;
    assert_ne!(sid, sid2);
    assert_eq!(next_text(&mut ws2).await, r#"42["auth",{"token":"€1"}]"#);
    server.stop().await;
}

#[tokio::test]
async fn unknown_namespace_and_refusing_middleware_get_connect_error() {
    let server = TestServer::start().await;
    let mut ws = server.connect().await;
    send(&mut ws, "40/nope,").await;
    assert_eq!(
        next_text(&mut ws).await,
        r#"44/nope,{"message":"Invalid namespace"}"#
    );
    send(&mut ws, r#"40/admin,{"token":"bad"}"#).await;
    assert_eq!(
        next_text(&mut ws).await,
        r#"44/admin,{"message":"unauthorized","data":{"why":"token"}}"#
    );
    // The connection survives refusals, and a good token gets in.
    send(&mut ws, r#"40/admin,{"token":"ok"}"#).await;
    let reply = next_text(&mut ws).await;
    assert!(reply.starts_with(r#"40/admin,{"sid":""#), "{reply}");
    assert_eq!(next_text(&mut ws).await, r#"42/admin,["welcome","admin"]"#);
    server.stop().await;
}

#[tokio::test]
async fn events_and_acks_both_ways() {
    let server = TestServer::start().await;
    let mut ws = server.connect().await;
    connect_root(&mut ws, None).await;
    next_text(&mut ws).await; // auth
    send(&mut ws, r#"42["echo","a",{"b":[1,2]}]"#).await;
    assert_eq!(next_text(&mut ws).await, r#"42["echo","a",{"b":[1,2]}]"#);
    send(&mut ws, r#"4217["echo-ack","x",3]"#).await;
    assert_eq!(next_text(&mut ws).await, r#"4317["x",3]"#);
    // Server → client ack.
    send(&mut ws, r#"42["ask","why?"]"#).await;
    let question = next_text(&mut ws).await;
    let rest = question.strip_prefix("42").unwrap();
    let id: String = rest.chars().take_while(char::is_ascii_digit).collect();
    assert_eq!(&rest[id.len()..], r#"["question","why?"]"#);
    send(&mut ws, &format!(r#"43{id}["because"]"#)).await;
    assert_eq!(
        next_text(&mut ws).await,
        r#"42["answered",{"answer":["because"]}]"#
    );
    server.stop().await;
}

#[tokio::test]
async fn emits_of_reserved_event_names_are_refused_with_the_reason() {
    let server = TestServer::start().await;
    let mut ws = server.connect().await;
    connect_root(&mut ws, None).await;
    next_text(&mut ws).await; // auth
    send(&mut ws, r#"421["reserved"]"#).await;
    // The ack comes first: no `disconnect` event reached the client (it would close on it).
    assert_eq!(
        next_text(&mut ws).await,
        r#"431[{"direct":"\"disconnect\" is a reserved event name","broadcast":"\"connect\" is a reserved event name"}]"#
    );
    server.stop().await;
}

#[tokio::test]
async fn binary_attachments_round_trip() {
    let server = TestServer::start().await;
    let mut ws = server.connect().await;
    connect_root(&mut ws, None).await;
    next_text(&mut ws).await;
    send(
        &mut ws,
        r#"452-["echo",{"a":{"_placeholder":true,"num":0}},[{"_placeholder":true,"num":1}]]"#,
    )
    .await;
    ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    ws.send(Message::binary(vec![4u8])).await.unwrap();
    assert_eq!(
        next_text(&mut ws).await,
        r#"452-["echo",{"a":{"_placeholder":true,"num":0}},[{"_placeholder":true,"num":1}]]"#
    );
    assert_eq!(next_msg(&mut ws).await, Message::binary(vec![1u8, 2, 3]));
    assert_eq!(next_msg(&mut ws).await, Message::binary(vec![4u8]));
    // Binary ack.
    send(
        &mut ws,
        r#"451-9["echo-ack",{"_placeholder":true,"num":0}]"#,
    )
    .await;
    ws.send(Message::binary(vec![9u8])).await.unwrap();
    assert_eq!(
        next_text(&mut ws).await,
        r#"461-9[{"_placeholder":true,"num":0}]"#
    );
    assert_eq!(next_msg(&mut ws).await, Message::binary(vec![9u8]));
    server.stop().await;
}

#[tokio::test]
async fn disconnects_both_ways_keep_the_connection() {
    let server = TestServer::start().await;
    let mut ws = server.connect().await;
    connect_root(&mut ws, None).await;
    next_text(&mut ws).await;
    send(&mut ws, r#"42["disconnect-me"]"#).await;
    assert_eq!(next_text(&mut ws).await, "41");
    // The Engine.IO connection stays; the client may connect again.
    connect_root(&mut ws, None).await;
    next_text(&mut ws).await;
    send(&mut ws, "41").await;
    // Nothing more for the namespace: the next frame is the heartbeat.
    let next = tokio::time::timeout(WAIT, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(next.to_text().unwrap(), "2");
    assert_eq!(
        *server.reasons.lock().unwrap(),
        ["server namespace disconnect", "client namespace disconnect"]
    );
    server.stop().await;
}

#[tokio::test]
async fn closing_the_transport_disconnects_with_transport_close() {
    let server = TestServer::start().await;
    let mut ws = server.connect().await;
    connect_root(&mut ws, None).await;
    next_text(&mut ws).await;
    ws.close(None).await.unwrap();
    drop(ws);
    for _ in 0..50 {
        if !server.reasons.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(*server.reasons.lock().unwrap(), ["transport close"]);
    server.stop().await;
}

#[tokio::test]
async fn parse_errors_and_invalid_states_close_the_connection() {
    let server = TestServer::start().await;
    for bad in [
        r#"42{}"#,
        r#"4abc"#,
        r#"42["connect"]"#,
        r#"4999999999999999999999["a"]"#,
    ] {
        let mut ws = server.connect().await;
        connect_root(&mut ws, None).await;
        next_text(&mut ws).await;
        send(&mut ws, bad).await;
        expect_closed(&mut ws).await;
    }
    // An event before any CONNECT, and a double CONNECT, close the connection too.
    let mut ws = server.connect().await;
    send(&mut ws, r#"42["echo"]"#).await;
    expect_closed(&mut ws).await;
    let mut ws = server.connect().await;
    connect_root(&mut ws, None).await;
    next_text(&mut ws).await;
    send(&mut ws, "40").await;
    expect_closed(&mut ws).await;
    assert!(
        server
            .reasons
            .lock()
            .unwrap()
            .iter()
            .all(|r| r == "parse error" || r == "forced close"),
        "{:?}",
        server.reasons.lock().unwrap()
    );
    server.stop().await;
}

#[tokio::test]
async fn events_sent_right_after_connect_are_handled_in_order() {
    let server = TestServer::start().await;
    let mut ws = server.connect().await;
    // CONNECT and a burst of events in one go, without waiting for the CONNECT reply.
    send(&mut ws, "40").await;
    for i in 0..200 {
        send(&mut ws, &format!(r#"42["echo",{i}]"#)).await;
    }
    let reply = next_text(&mut ws).await;
    assert!(reply.starts_with("40{"), "{reply}");
    assert_eq!(next_text(&mut ws).await, r#"42["auth",{}]"#);
    for i in 0..200 {
        assert_eq!(next_text(&mut ws).await, format!(r#"42["echo",{i}]"#));
    }
    server.stop().await;
}

#[tokio::test]
async fn a_panicking_handler_closes_only_its_own_connection() {
    // The bystander answers no ping while the test watches the other connection: a heartbeat long
    // enough that a slow machine cannot time it out, so that only the panic can close anything.
    let server = TestServer::start_with(|c| c.engine.ping_timeout = Duration::from_secs(30)).await;
    let mut bystander = server.connect().await;
    connect_root(&mut bystander, None).await;
    next_text(&mut bystander).await;
    let mut ws = server.connect().await;
    connect_root(&mut ws, None).await;
    next_text(&mut ws).await;
    send(&mut ws, r#"42["panic"]"#).await;
    expect_closed(&mut ws).await;
    for _ in 0..50 {
        if !server.reasons.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(*server.reasons.lock().unwrap(), ["transport error"]);
    // The other client is served as before.
    send(&mut bystander, r#"42["echo","still here"]"#).await;
    assert_eq!(
        next_text(&mut bystander).await,
        r#"42["echo","still here"]"#
    );
    server.stop().await;
}

#[tokio::test]
async fn event_rate_limit_drops_or_disconnects() {
    use tidings::socketio::{OnExceed, RateLimit};
    let limit = |on_exceed| RateLimit {
        per_second: 0.5,
        burst: 5,
        on_exceed,
    };
    let server = TestServer::start_with(|c| c.event_rate_limit = Some(limit(OnExceed::Drop))).await;
    let mut ws = server.connect().await;
    connect_root(&mut ws, None).await;
    next_text(&mut ws).await;
    for i in 0..8 {
        send(&mut ws, &format!(r#"42["echo",{i}]"#)).await;
    }
    for i in 0..5 {
        assert_eq!(next_text(&mut ws).await, format!(r#"42["echo",{i}]"#));
    }
    // The excess was dropped and counted; the socket stays (the ack request itself waits for a
    // token, so give it time).
    idle(&mut ws, Duration::from_millis(2100)).await;
    send(&mut ws, r#"421["rate-limited"]"#).await;
    assert_eq!(next_text(&mut ws).await, "431[3]");
    server.stop().await;

    let server =
        TestServer::start_with(|c| c.event_rate_limit = Some(limit(OnExceed::Disconnect))).await;
    let mut ws = server.connect().await;
    connect_root(&mut ws, None).await;
    next_text(&mut ws).await;
    for i in 0..6 {
        send(&mut ws, &format!(r#"42["echo",{i}]"#)).await;
    }
    for i in 0..5 {
        assert_eq!(next_text(&mut ws).await, format!(r#"42["echo",{i}]"#));
    }
    assert_eq!(next_text(&mut ws).await, "41");
    server.stop().await;
}

#[tokio::test]
async fn room_and_dynamic_namespace_limits() {
    let server = TestServer::start_with(|c| {
        c.max_rooms_per_socket = 3;
        c.max_dynamic_namespaces = 1;
    })
    .await;
    let mut ws = server.connect().await;
    connect_root(&mut ws, None).await;
    next_text(&mut ws).await;
    // Own room + 2 more is the limit.
    send(&mut ws, r#"421["join",["a","b"]]"#).await;
    assert_eq!(next_text(&mut ws).await, "431[true]");
    send(&mut ws, r#"422["join",["c"]]"#).await;
    assert_eq!(
        next_text(&mut ws).await,
        r#"432[{"error":"room limit reached: 4 rooms asked for, at most 3 allowed"}]"#
    );
    send(&mut ws, r#"423["join",["a"]]"#).await;
    assert_eq!(next_text(&mut ws).await, "433[true]");
    // One dynamic namespace may be created; the second name is refused.
    send(&mut ws, "40/dyn-1,").await;
    assert!(next_text(&mut ws).await.starts_with(r#"40/dyn-1,{"sid""#));
    send(&mut ws, "40/dyn-2,").await;
    assert_eq!(
        next_text(&mut ws).await,
        r#"44/dyn-2,{"message":"Invalid namespace"}"#
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connect_reply_comes_before_any_broadcast() {
    let io = SocketIo::new(Config::default());
    io.ns("/", |_| {});
    let listener = tidings::server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(tidings::server::serve(
        listener,
        io.clone(),
        Default::default(),
        async {
            let _ = stopped.await;
        },
    ));
    // Broadcasts to the whole namespace, back to back, from another task (and thread).
    let flood = io.clone();
    let ticker = tokio::spawn(async move {
        loop {
            flood.emit("tick", 0).expect("a number under a plain name");
            tokio::task::yield_now().await;
        }
    });
    let url = format!("ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket");
    for _ in 0..200 {
        let (mut ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(&url))
            .await
            .unwrap()
            .unwrap();
        assert!(next_text(&mut ws).await.starts_with("0{"));
        send(&mut ws, "40").await;
        // A broadcast may only reach a socket once the client knows it is connected.
        let first = next_text(&mut ws).await;
        assert!(
            first.starts_with("40{"),
            "before the CONNECT reply: {first}"
        );
    }
    ticker.abort();
    let _ = stop.send(());
    let _ = tokio::time::timeout(WAIT, server).await;
}

#[tokio::test]
async fn connect_timeout_closes_only_connections_that_never_joined() {
    let server = TestServer::start_with(|c| c.connect_timeout = Duration::from_millis(300)).await;
    let mut never = server.connect().await;
    let mut left = server.connect().await;
    connect_root(&mut left, None).await;
    next_text(&mut left).await;
    send(&mut left, "41").await;
    // The first never joined a namespace: closed. The second joined, so its timer is gone for good,
    // as in the reference: leaving every namespace keeps the connection.
    assert_eq!(next_text(&mut never).await, "1");
    expect_closed(&mut never).await;
    idle(&mut left, Duration::from_millis(600)).await;
    server.stop().await;
}

#[tokio::test]
async fn a_socket_io_client_2_is_served_in_protocol_v4() {
    let server = TestServer::start_with(|config| config.engine.allow_eio3 = true).await;
    let mut ws = server.connect_eio(3).await;
    // Connected to `/` without asking; the reply has no payload (the client names its socket).
    assert_eq!(next_text(&mut ws).await, "40");
    assert_eq!(next_text(&mut ws).await, r#"42["auth",{}]"#);
    // The client pings (v3), the server answers.
    send(&mut ws, "2").await;
    assert_eq!(next_text(&mut ws).await, "3");
    // Namespace auth comes from the CONNECT's query string; a refusal carries the middleware's
    // data as it is, an unknown namespace the reference's object.
    send(&mut ws, "40/admin?token=bad,").await;
    assert_eq!(next_text(&mut ws).await, r#"44/admin,{"why":"token"}"#);
    send(&mut ws, "40/nope,").await;
    assert_eq!(
        next_text(&mut ws).await,
        r#"44/nope,{"message":"Invalid namespace"}"#
    );
    send(&mut ws, "40/admin?token=ok").await;
    assert_eq!(next_text(&mut ws).await, "40/admin,");
    assert_eq!(next_text(&mut ws).await, r#"42/admin,["welcome","admin"]"#);
    // Binary travels with the v3 type byte.
    send(&mut ws, r#"451-["echo",{"_placeholder":true,"num":0}]"#).await;
    ws.send(Message::binary(vec![4, 1, 2])).await.unwrap();
    assert_eq!(
        next_text(&mut ws).await,
        r#"451-["echo",{"_placeholder":true,"num":0}]"#
    );
    assert_eq!(next_msg(&mut ws).await, Message::binary(vec![4, 1, 2]));
    server.stop().await;
}

/// A handshake GET answered by `io.handle` directly: status and body.
async fn handshake(io: &SocketIo) -> (u16, String) {
    use http_body_util::BodyExt as _;
    let req = http::Request::get("/socket.io/?EIO=4&transport=polling")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let res = io.handle(req, Some("127.0.0.1:1".parse().unwrap())).await;
    let status = res.status().as_u16();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn allow_request_awaits_an_async_check_then_allows_or_refuses() {
    let mut config = Config::default();
    config.engine.allow_request_timeout = Duration::from_millis(200);
    let io = SocketIo::new(config);
    // Each check hands the test a verdict channel and waits for the test's answer.
    let (checks, mut pending) = tokio::sync::mpsc::unbounded_channel();
    io.allow_request(move |request| {
        let checks = checks.clone();
        async move {
            assert_eq!(request.uri().path(), "/socket.io/");
            let (verdict, answer) = oneshot::channel::<Result<(), String>>();
            checks.send(verdict).unwrap();
            // No verdict ever (the sender dropped): never answers, so the deadline decides.
            match answer.await {
                Ok(verdict) => verdict,
                Err(_) => std::future::pending().await,
            }
        }
    });
    for verdict in [Ok(()), Err("no tokens today".to_owned())] {
        let io2 = io.clone();
        let request = tokio::spawn(async move { handshake(&io2).await });
        let check = tokio::time::timeout(WAIT, pending.recv())
            .await
            .unwrap()
            .unwrap();
        // The check is running and the handshake waits for it.
        assert!(!request.is_finished());
        let refused = verdict.is_err();
        check.send(verdict).unwrap();
        let (status, body) = tokio::time::timeout(WAIT, request).await.unwrap().unwrap();
        if refused {
            assert_eq!(status, 403);
            assert_eq!(body, r#"{"code":4,"message":"no tokens today"}"#);
        } else {
            assert_eq!(status, 200, "{body}");
            assert!(body.starts_with(r#"0{"sid":"#), "{body}");
        }
    }
    // A check that never answers: refused at the deadline.
    let io2 = io.clone();
    let request = tokio::spawn(async move { handshake(&io2).await });
    drop(
        tokio::time::timeout(WAIT, pending.recv())
            .await
            .unwrap()
            .unwrap(),
    );
    let (status, body) = tokio::time::timeout(WAIT, request).await.unwrap().unwrap();
    assert_eq!(status, 403);
    assert_eq!(body, r#"{"code":4,"message":"Forbidden"}"#);
}

#[tokio::test]
async fn an_ack_without_timeout_ends_with_the_answer_or_the_disconnect() {
    let io = SocketIo::new(Config::default());
    let (outcomes, mut outcome) = tokio::sync::mpsc::unbounded_channel();
    io.ns("/", move |socket| {
        let asked = outcomes.clone();
        socket.on("ask", move |socket, _, _| {
            let (socket, outcomes) = (socket.clone(), asked.clone());
            tokio::spawn(async move {
                let answer = socket
                    .emit_with_ack_no_timeout("question", Args::one(1))
                    .await;
                outcomes.send(answer.map(|a| a.values)).unwrap();
            });
        });
        let outcomes = outcomes.clone();
        // Asks after its own disconnect: nothing can answer, so the wait must end at once.
        socket.on("leave-then-ask", move |socket, _, _| {
            socket.disconnect(false);
            let (socket, outcomes) = (socket.clone(), outcomes.clone());
            tokio::spawn(async move {
                let answer = socket
                    .emit_with_ack_no_timeout("question", Args::one(2))
                    .await;
                outcomes.send(answer.map(|a| a.values)).unwrap();
            });
        });
    });
    let listener = tidings::server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = tidings::server::serve(listener, io, Default::default(), async {
            let _ = stopped.await;
        })
        .await;
    });
    let server = TestServer {
        port,
        stop: Some(stop),
        task,
        reasons: Arc::default(),
    };

    // Answered.
    let mut ws = server.connect().await;
    connect_root(&mut ws, None).await;
    send(&mut ws, r#"42["ask"]"#).await;
    let question = next_text(&mut ws).await;
    let id: String = question[2..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    assert_eq!(&question[2 + id.len()..], r#"["question",1]"#);
    send(&mut ws, &format!(r#"43{id}["yes"]"#)).await;
    let answered = tokio::time::timeout(WAIT, outcome.recv()).await.unwrap();
    assert_eq!(answered.unwrap().unwrap(), vec![json!("yes")]);

    // The client leaves before answering: the wait ends with `Disconnected`.
    send(&mut ws, r#"42["ask"]"#).await;
    assert!(next_text(&mut ws).await.contains(r#"["question",1]"#));
    ws.close(None).await.unwrap();
    let gone = tokio::time::timeout(WAIT, outcome.recv()).await.unwrap();
    match gone.unwrap() {
        Err(tidings::socketio::AckError::Disconnected) => {}
        other => panic!("expected Disconnected, got {other:?}"),
    }

    // Asked on a socket already disconnected: `Disconnected` too, not a wait for ever.
    let mut ws = server.connect().await;
    connect_root(&mut ws, None).await;
    send(&mut ws, r#"42["leave-then-ask"]"#).await;
    let late = tokio::time::timeout(WAIT, outcome.recv()).await.unwrap();
    match late.unwrap() {
        Err(tidings::socketio::AckError::Disconnected) => {}
        other => panic!("expected Disconnected, got {other:?}"),
    }
    server.stop().await;
}
