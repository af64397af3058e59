//! The bad-input catalogue (issue 6): hostile inputs at every layer, each a row of [`catalogue`] with
//! the answer the offender must get and what must become of its session, all run against one shared
//! server.
//!
//! While the catalogue runs, a canary (a WebSocket Socket.IO client joined to the room `canary`)
//! receives `tick` broadcasts numbered 1, 2, 3, ... every 10 ms. After every row the canary must have
//! caught up with the last number broadcast, with no number missing or repeated: nothing an offender
//! does may cost another client a packet. At the end every offender must be gone from the server's
//! state (sessions, sockets, rooms).
//!
//! Timings are short (pingInterval and pingTimeout 300 ms, upgradeTimeout 300 ms, header read
//! timeout 500 ms) so the whole catalogue takes a few seconds. Run with `--nocapture` to see the
//! table.

mod common;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    WAIT, Ws, bounded, http, http_raw, open_polling, polling_post, polling_recv, polling_target,
    read_response, request_bytes, sio_connect, wait_until, ws_connect, ws_session, ws_text,
};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::json;
use tidings::server::{self, ServeOptions};
use tidings::socketio::{Args, Config, SocketIo};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

const PATH: &str = "/socket.io/";
const PING_INTERVAL: Duration = Duration::from_millis(300);
const PING_TIMEOUT: Duration = Duration::from_millis(300);
const UPGRADE_TIMEOUT: Duration = Duration::from_millis(300);
const HEADER_TIMEOUT: Duration = Duration::from_millis(500);
const MAX_PAYLOAD: usize = 100_000;
/// The configured `max_packets_per_payload` (the default).
const MAX_PACKETS: usize = 1024;
/// How long a client that expects nothing more waits to be sure nothing more comes.
const QUIET: Duration = Duration::from_millis(150);
/// Scheduling slack allowed on top of a server timer (the machine may be busy).
const SLACK: Duration = Duration::from_millis(700);

// ===== the server under test =====

type Reasons = Arc<Mutex<HashMap<String, Vec<&'static str>>>>;

#[derive(Debug, Default)]
struct CanaryState {
    /// The last tick number received.
    last: u64,
    /// How many ticks were received.
    received: u64,
    /// Gaps, repeats, stray packets, or the end of the connection, not yet reported.
    errors: Vec<String>,
}

struct Server {
    addr: SocketAddr,
    io: SocketIo,
    /// Disconnect reasons seen by the server's disconnect handlers, by Engine.IO sid.
    reasons: Reasons,
    /// How the server's own ack waits (`ask`) ended.
    acks: Arc<Mutex<Vec<String>>>,
    canary: Arc<Mutex<CanaryState>>,
    /// The last tick number broadcast.
    sent: Arc<AtomicU64>,
    canary_sid: String,
    /// How many runs of the `/slow` namespace's middleware have finished.
    slow_middleware_done: Arc<AtomicU64>,
}

impl Server {
    async fn start() -> (Arc<Self>, oneshot::Sender<()>) {
        let mut config = Config::default();
        config.engine.ping_interval = PING_INTERVAL;
        config.engine.ping_timeout = PING_TIMEOUT;
        config.engine.upgrade_timeout = UPGRADE_TIMEOUT;
        config.engine.max_payload = MAX_PAYLOAD;
        assert_eq!(config.engine.max_packets_per_payload, MAX_PACKETS);
        let io = SocketIo::new(config);
        let reasons: Reasons = Arc::default();
        let acks: Arc<Mutex<Vec<String>>> = Arc::default();

        let (log, ack_log) = (reasons.clone(), acks.clone());
        io.ns("/", move |socket| {
            let log = log.clone();
            socket.on_disconnect(move |s, reason| {
                let sid = s.session().id().to_owned();
                log.lock()
                    .unwrap()
                    .entry(sid)
                    .or_default()
                    .push(reason.as_str());
            });
            if socket.handshake().auth().get("canary") == Some(&json!(true)) {
                socket.join("canary").expect("within the room limit");
            }
            socket.on("echo", |s, args: Args, _| {
                // A lost echo shows up as the test's missing event.
                let _ = s.emit_args("echo", args);
            });
            socket.on("echo-ack", |_, args: Args, ack| {
                if let Some(ack) = ack {
                    // A lost answer shows up as the test's missing ack.
                    let _ = ack.send(args);
                }
            });
            let ack_log = ack_log.clone();
            socket.on("ask", move |s, _, _| {
                let (s, ack_log) = (s.clone(), ack_log.clone());
                tokio::spawn(async move {
                    let outcome = s
                        .emit_with_ack("question", Args::one(1), Duration::from_secs(10))
                        .await;
                    ack_log.lock().unwrap().push(match outcome {
                        Ok(_) => "answered".to_owned(),
                        Err(err) => err.to_string(),
                    });
                });
            });
        });
        let log = reasons.clone();
        let slow = io.ns("/slow", move |socket| {
            let log = log.clone();
            socket.on_disconnect(move |s, reason| {
                let sid = s.session().id().to_owned();
                log.lock()
                    .unwrap()
                    .entry(sid)
                    .or_default()
                    .push(reason.as_str());
            });
            socket.on("echo", |s, args: Args, _| {
                // A lost echo shows up as the test's missing event.
                let _ = s.emit_args("echo", args);
            });
        });
        let slow_middleware_done = Arc::new(AtomicU64::new(0));
        let done = slow_middleware_done.clone();
        slow.use_middleware(move |_| {
            let done = done.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                done.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        });

        let listener = server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut options = ServeOptions::default();
        options.header_read_timeout = HEADER_TIMEOUT;
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(server::serve(listener, io.clone(), options, async move {
            let _ = stopped.await;
        }));

        // The canary joins, then the ticks start.
        let (mut ws, canary_sid) = ws_session(addr, PATH).await;
        sio_connect(&mut ws, Some(&json!({ "canary": true }))).await;
        let canary: Arc<Mutex<CanaryState>> = Arc::default();
        tokio::spawn(run_canary(ws, canary.clone()));
        let sent = Arc::new(AtomicU64::new(0));
        let (ticker, tick_errors, last) = (io.clone(), canary.clone(), sent.clone());
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_millis(10));
            for seq in 1.. {
                interval.tick().await;
                let reached = ticker.to("canary").emit("tick", seq);
                if !matches!(reached, Ok(1)) {
                    let error = format!("tick {seq} reached {reached:?} sockets");
                    tick_errors.lock().unwrap().errors.push(error);
                }
                last.store(seq, Ordering::SeqCst);
            }
        });
        let server = Arc::new(Self {
            addr,
            io,
            reasons,
            acks,
            canary,
            sent,
            canary_sid,
            slow_middleware_done,
        });
        (server, stop)
    }

    /// The first disconnect reason the server gave a socket of session `sid`.
    fn reason(&self, sid: &str) -> Option<&'static str> {
        self.reasons
            .lock()
            .unwrap()
            .get(sid)
            .and_then(|r| r.first().copied())
    }

    /// Waits until the canary has the last tick broadcast, then reports (and clears) any gap or
    /// repeat it saw. Returns how long catching up took.
    async fn check_canary(&self) -> Result<Duration, String> {
        let target = self.sent.load(Ordering::SeqCst);
        let began = Instant::now();
        let caught_up = wait_until(WAIT, || self.canary.lock().unwrap().last >= target).await;
        let mut state = self.canary.lock().unwrap();
        let mut errors = std::mem::take(&mut state.errors);
        if !caught_up {
            errors.push(format!(
                "stuck at tick {} while {target} was broadcast",
                state.last
            ));
        }
        if errors.is_empty() {
            Ok(began.elapsed())
        } else {
            Err(errors.join("; "))
        }
    }
}

/// Reads the canary's connection: answers pings, checks that ticks come 1, 2, 3, ... exactly once.
async fn run_canary(mut ws: Ws, state: Arc<Mutex<CanaryState>>) {
    loop {
        let msg = ws.next().await;
        let mut st = state.lock().unwrap();
        match msg {
            Some(Ok(Message::Text(t))) if t == "2" => {
                drop(st);
                if ws.send(Message::text("3")).await.is_err() {
                    state.lock().unwrap().errors.push("pong failed".into());
                    return;
                }
            }
            Some(Ok(Message::Text(t))) => {
                let tick = t
                    .strip_prefix(r#"42["tick","#)
                    .and_then(|rest| rest.strip_suffix(']'))
                    .and_then(|n| n.parse::<u64>().ok());
                match tick {
                    Some(n) => {
                        if st.received > 0 && n != st.last + 1 {
                            let error = format!("tick {n} came after tick {}", st.last);
                            st.errors.push(error);
                        }
                        st.last = st.last.max(n);
                        st.received += 1;
                    }
                    None => st.errors.push(format!("unexpected packet {t:?}")),
                }
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => {
                st.errors
                    .push(format!("canary connection ended: {other:?}"));
                return;
            }
        }
    }
}

// ===== the table =====

/// One frame a hostile WebSocket client sends.
#[derive(Debug, Clone)]
enum Out {
    /// A text frame.
    Text(String),
    /// A binary frame.
    Binary(Vec<u8>),
    /// A text frame whose payload is not UTF-8.
    BadUtf8(Vec<u8>),
    /// Bytes written straight to the TCP stream (a hand-made frame).
    Raw(Vec<u8>),
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type ScenarioFn = fn(Arc<Server>) -> BoxFuture<Outcome>;

/// What the offender does.
#[derive(Clone)]
enum Input {
    /// One HTTP request with no session (a fresh connection).
    Request {
        method: &'static str,
        target: String,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
    },
    /// Raw bytes on a fresh TCP connection.
    Raw(Vec<u8>),
    /// One request on a new polling session, after CONNECT to `/` when `connect`.
    Poll {
        connect: bool,
        method: &'static str,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
    },
    /// Frames on a new WebSocket session, after CONNECT to `/` when `connect`.
    Ws { connect: bool, frames: Vec<Out> },
    /// Several steps, described in words and run by a function.
    Scenario(&'static str, ScenarioFn),
}

/// What the offender gets back.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    /// An HTTP status and the body (text).
    Http(u16, String),
    /// The packets received after the input (pings answered and left out; socket ids masked as
    /// `*`), and how the WebSocket ended.
    Ws(Vec<String>, End),
    /// The TCP connection closed with no response at all.
    Dropped,
    /// A scenario's summary.
    Text(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// A close frame with this code.
    Close(u16),
    /// A close frame without a code.
    CloseNoCode,
    /// The connection ended without a close frame.
    Dropped,
    /// Still open after the answer.
    Open,
}

/// What becomes of the offender's session on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// No session was involved (or none was created).
    NoSession,
    /// The session is still open and its socket connected.
    Alive,
    /// The session is closed, and it had no Socket.IO socket (so no disconnect reason).
    Gone,
    /// The session's socket was disconnected with this reason (seen by its disconnect handler).
    Closed(&'static str),
}

struct Case {
    name: &'static str,
    input: Input,
    answer: Answer,
    fate: Fate,
}

/// What a run produced: the answer, the session it concerned, and the connection to keep open until
/// the session's fate is checked.
struct Outcome {
    answer: Answer,
    sid: Option<String>,
    hold: Option<Ws>,
}

impl Outcome {
    fn text(answer: impl Into<String>, sid: Option<String>, hold: Option<Ws>) -> Self {
        Self {
            answer: Answer::Text(answer.into()),
            sid,
            hold,
        }
    }
}

// Short constructors for the table.

fn row(name: &'static str, input: Input, answer: Answer, fate: Fate) -> Case {
    Case {
        name,
        input,
        answer,
        fate,
    }
}

/// A reference error response: 400 (403 for code 4) with `{"code":N,"message":"..."}`.
fn code(n: u8) -> Answer {
    let message = match n {
        0 => "Transport unknown",
        1 => "Session ID unknown",
        2 => "Bad handshake method",
        3 => "Bad request",
        5 => "Unsupported protocol version",
        _ => unreachable!(),
    };
    Answer::Http(400, json!({ "code": n, "message": message }).to_string())
}

fn status(status: u16, body: &str) -> Answer {
    Answer::Http(status, body.to_owned())
}

fn ok() -> Answer {
    status(200, "ok")
}

fn ws(packets: &[&str], end: End) -> Answer {
    Answer::Ws(packets.iter().map(|&p| p.to_owned()).collect(), end)
}

fn text(s: &str) -> Answer {
    Answer::Text(s.to_owned())
}

/// The answer to a Socket.IO-level protocol error: the close packet, then a close frame.
fn closed_with_close_packet() -> Answer {
    ws(&["1"], End::CloseNoCode)
}

fn get(query: &str) -> Input {
    Input::Request {
        method: "GET",
        target: format!("{PATH}?{query}"),
        headers: Vec::new(),
        body: Vec::new(),
    }
}

fn post(query: &str, body: &str) -> Input {
    Input::Request {
        method: "POST",
        target: format!("{PATH}?{query}"),
        headers: vec![("Content-Type", "text/plain;charset=UTF-8".into())],
        body: body.as_bytes().to_vec(),
    }
}

/// A WebSocket opening handshake for `query`, by hand (so a refusal can be read as HTTP).
fn upgrade(query: &str, key: bool, version: &str) -> Input {
    let mut req = format!(
        "GET {PATH}?{query} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    );
    if key {
        req.push_str("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n");
    }
    req.push_str(&format!("Sec-WebSocket-Version: {version}\r\n\r\n"));
    Input::Raw(req.into_bytes())
}

/// A POST of `body` on a polling session connected to `/`.
fn post_on(body: impl Into<Vec<u8>>) -> Input {
    Input::Poll {
        connect: true,
        method: "POST",
        headers: vec![("Content-Type", "text/plain;charset=UTF-8".into())],
        body: body.into(),
    }
}

/// Frames on a WebSocket session connected to `/`.
fn ws_on(frames: &[&str]) -> Input {
    Input::Ws {
        connect: true,
        frames: frames.iter().map(|&f| Out::Text(f.to_owned())).collect(),
    }
}

/// Frames on a WebSocket session that has not connected to any namespace.
fn ws_bare(frames: &[&str]) -> Input {
    Input::Ws {
        connect: false,
        frames: frames.iter().map(|&f| Out::Text(f.to_owned())).collect(),
    }
}

fn ws_frames(frames: Vec<Out>) -> Input {
    Input::Ws {
        connect: true,
        frames,
    }
}

fn t(s: &str) -> Out {
    Out::Text(s.to_owned())
}

/// A masked client frame with `first` (FIN, RSV, opcode) and `payload`, by hand.
fn masked_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    let mut out = vec![first, 0x80 | payload.len() as u8];
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

const PH0: &str = r#"{"_placeholder":true,"num":0}"#;

/// The catalogue. Each row: the hostile input, the answer the offender gets, the fate of its session.
fn catalogue() -> Vec<Case> {
    use End::{Close, CloseNoCode, Dropped, Open};
    use Fate::{Alive, Closed, Gone, NoSession};
    let parse_error = Closed("parse error");
    let forced_close = Closed("forced close");
    let transport_error = Closed("transport error");
    let nested = format!(r#"42["echo",{}{}]"#, "[".repeat(200), "]".repeat(200));
    let tiny_flood = vec!["4x"; 10_000].join("\x1e");
    let small_flood = vec!["3\x1e6"; 500].join("\x1e");
    let mut event_burst = vec![t(r#"42["nothing"]"#); 10_000];
    event_burst.push(t(r#"421["echo-ack","done"]"#));
    let many_headers = {
        let mut req = format!("GET {PATH}?EIO=4&transport=polling HTTP/1.1\r\nHost: localhost\r\n");
        for i in 0..200 {
            req.push_str(&format!("X-Header-{i}: {i}\r\n"));
        }
        req.push_str("\r\n");
        req.into_bytes()
    };

    vec![
        // ----- handshake and routing, no session -----
        row("EIO=3", get("EIO=3&transport=polling"), code(5), NoSession),
        row("EIO=5", get("EIO=5&transport=polling"), code(5), NoSession),
        row("EIO missing", get("transport=polling"), code(5), NoSession),
        row(
            "EIO not a number",
            get("EIO=four&transport=polling"),
            code(5),
            NoSession,
        ),
        row("transport missing", get("EIO=4"), code(0), NoSession),
        row(
            "transport unknown",
            get("EIO=4&transport=pigeon"),
            code(0),
            NoSession,
        ),
        row(
            "websocket transport without Upgrade",
            get("EIO=4&transport=websocket"),
            code(3),
            NoSession,
        ),
        row(
            "POST handshake",
            post("EIO=4&transport=polling", "40"),
            code(2),
            NoSession,
        ),
        row(
            "GET with an unknown sid",
            get("EIO=4&transport=polling&sid=AAAAAAAAAAAAAAAAAAAA"),
            code(1),
            NoSession,
        ),
        row(
            "POST with an unknown sid",
            post("EIO=4&transport=polling&sid=AAAAAAAAAAAAAAAAAAAA", "40"),
            code(1),
            NoSession,
        ),
        row(
            "sid of invalid percent-escapes and UTF-8",
            get("EIO=4&transport=polling&sid=%ff%fe%00%zz"),
            code(1),
            NoSession,
        ),
        row(
            "query string over 8 KiB",
            get(&format!("EIO=4&transport=polling&t={}", "a".repeat(9000))),
            code(3),
            NoSession,
        ),
        row(
            "WebSocket upgrade with an unknown sid",
            upgrade(
                "EIO=4&transport=websocket&sid=AAAAAAAAAAAAAAAAAAAA",
                true,
                "13",
            ),
            status(400, "Session ID unknown"),
            NoSession,
        ),
        row(
            "WebSocket upgrade with EIO=3",
            upgrade("EIO=3&transport=websocket", true, "13"),
            status(400, "Unsupported protocol version"),
            NoSession,
        ),
        row(
            "WebSocket upgrade with EIO=5",
            upgrade("EIO=5&transport=websocket", true, "13"),
            status(400, "Unsupported protocol version"),
            NoSession,
        ),
        row(
            "WebSocket upgrade without transport",
            upgrade("EIO=4", true, "13"),
            status(400, "Transport unknown"),
            NoSession,
        ),
        row(
            "WebSocket upgrade without Sec-WebSocket-Key",
            upgrade("EIO=4&transport=websocket", false, "13"),
            status(400, "Bad request"),
            NoSession,
        ),
        row(
            "WebSocket upgrade with Sec-WebSocket-Version 8",
            upgrade("EIO=4&transport=websocket", true, "8"),
            status(400, "Bad request"),
            NoSession,
        ),
        row(
            "not HTTP at all (a TLS ClientHello)",
            Input::Raw(vec![0x16, 3, 1, 2, 0, 1, 0, 1, 0xfc, 3, 3, 0, 0, 0, 0]),
            status(400, ""),
            NoSession,
        ),
        row(
            "request line with HTTP/2.0",
            Input::Raw(format!("GET {PATH}?EIO=4&transport=polling HTTP/2.0\r\n\r\n").into()),
            status(400, ""),
            NoSession,
        ),
        row(
            "200 request headers",
            Input::Raw(many_headers),
            status(431, ""),
            NoSession,
        ),
        // ----- Engine.IO over polling -----
        row(
            "invalid UTF-8 in a POST body",
            post_on(&b"4\xff\xfe"[..]),
            status(400, ""),
            parse_error,
        ),
        row(
            "bad base64 in a b packet",
            post_on("bAQID*=="),
            status(400, ""),
            parse_error,
        ),
        row("empty POST body", post_on(""), status(400, ""), parse_error),
        row(
            "payload truncated after a separator",
            post_on("42[\"echo\",1]\x1e"),
            status(400, ""),
            parse_error,
        ),
        row(
            "unknown Engine.IO packet type",
            post_on("7"),
            status(400, ""),
            parse_error,
        ),
        row(
            "10 000 tiny packets in one POST (max_packets_per_payload 1 024): refused",
            post_on(tiny_flood),
            status(400, ""),
            parse_error,
        ),
        row(
            "1 000 pongs and noops in one POST (under the limit): handled",
            post_on(small_flood),
            ok(),
            Alive,
        ),
        row(
            "binary Content-Type on a v4 POST",
            Input::Poll {
                connect: true,
                method: "POST",
                headers: vec![("Content-Type", "application/octet-stream".into())],
                body: vec![1, 2, 3],
            },
            code(3),
            transport_error,
        ),
        row("client ping over polling", post_on("2"), ok(), parse_error),
        row(
            "open packet from the client",
            post_on("0"),
            ok(),
            parse_error,
        ),
        row(
            "upgrade packet outside an upgrade",
            post_on("5"),
            ok(),
            parse_error,
        ),
        row(
            "PUT on a session",
            Input::Poll {
                connect: true,
                method: "PUT",
                headers: Vec::new(),
                body: b"40".to_vec(),
            },
            code(3),
            Alive,
        ),
        row(
            "Socket.IO event before CONNECT (polling)",
            Input::Poll {
                connect: false,
                method: "POST",
                headers: Vec::new(),
                body: br#"42["echo"]"#.to_vec(),
            },
            ok(),
            Gone,
        ),
        row(
            "text packet arriving mid-binary (polling)",
            post_on(format!("451-[\"echo\",{PH0}]\x1e42[\"echo\"]")),
            ok(),
            parse_error,
        ),
        row(
            "attachment without an event (polling)",
            post_on("bAQID"),
            ok(),
            parse_error,
        ),
        row(
            "both Transfer-Encoding and Content-Length (chunked wins)",
            Input::Poll {
                connect: true,
                method: "POST",
                headers: vec![
                    ("Transfer-Encoding", "chunked".into()),
                    ("Content-Length", "5".into()),
                ],
                body: b"1\r\n3\r\n0\r\n\r\n".to_vec(),
            },
            ok(),
            Alive,
        ),
        row(
            "binary event with its b64 attachment (control: handled)",
            post_on(format!("451-[\"echo\",{PH0}]\x1ebAQID")),
            ok(),
            Alive,
        ),
        row(
            "POST declaring a body over maxPayload",
            Input::Scenario(
                "Content-Length maxPayload+100 000, no body sent; then an echo on the same session",
                |s| Box::pin(post_over_max_payload(s, false)),
            ),
            text(r#"413 "", then 42["echo","still here"]"#),
            Alive,
        ),
        row(
            "chunked POST over maxPayload",
            Input::Scenario(
                "chunked body of maxPayload+1 bytes; then an echo on the same session",
                |s| Box::pin(post_over_max_payload(s, true)),
            ),
            text(r#"413 "", then 42["echo","still here"]"#),
            Alive,
        ),
        row(
            "POST body shorter than its Content-Length",
            Input::Scenario(
                "Content-Length 50, 10 bytes sent, then the client half-closes",
                |s| Box::pin(truncated_body(s)),
            ),
            code(3),
            transport_error,
        ),
        row(
            "overlapping polls",
            Input::Scenario("a second GET while one is pending", |s| {
                Box::pin(overlapping_gets(s))
            }),
            text(r#"pending GET: 200 "1", overlapping GET: 400 """#),
            transport_error,
        ),
        row(
            "overlapping POSTs",
            Input::Scenario("a second POST while one is still sending its body", |s| {
                Box::pin(overlapping_posts(s))
            }),
            text(r#"second POST: 400 """#),
            transport_error,
        ),
        row(
            "GET on a closed sid",
            Input::Scenario(
                "the client POSTs 1 (close), then GETs twice with the same sid",
                |s| Box::pin(closed_sid(s)),
            ),
            code(1),
            Closed("transport close"),
        ),
        row(
            "POST to a websocket session",
            Input::Scenario("a polling POST with the sid of a WebSocket session", |s| {
                Box::pin(polling_on_websocket_session(s, "POST"))
            }),
            code(3),
            Alive,
        ),
        row(
            "GET on a websocket session",
            Input::Scenario("a polling GET with the sid of a WebSocket session", |s| {
                Box::pin(polling_on_websocket_session(s, "GET"))
            }),
            code(3),
            Alive,
        ),
        // ----- upgrades -----
        row(
            "second upgrade",
            Input::Scenario(
                "a polling session upgrades, then a second WebSocket claims the same sid",
                |s| Box::pin(second_upgrade(s)),
            ),
            text(r#"second websocket: CloseNoCode, first still echoes: 42["echo","first"]"#),
            Alive,
        ),
        row(
            "upgrade that never completes (probe, no 5)",
            Input::Scenario(
                "2probe, 3probe, then silence on the WebSocket; the client keeps polling",
                |s| Box::pin(stalled_upgrade(s, true, true)),
            ),
            text(
                r#"websocket: CloseNoCode after upgradeTimeout, then over polling: 42["echo","back to polling"]"#,
            ),
            Alive,
        ),
        row(
            "upgrade that never probes",
            Input::Scenario("a WebSocket for the sid that never sends anything", |s| {
                Box::pin(stalled_upgrade(s, false, true))
            }),
            text(
                r#"websocket: CloseNoCode after upgradeTimeout, then over polling: 42["echo","back to polling"]"#,
            ),
            Alive,
        ),
        row(
            "upgrade that never completes, client gone",
            Input::Scenario("2probe, 3probe, then the client stops everything", |s| {
                Box::pin(stalled_upgrade(s, true, false))
            }),
            text("websocket: CloseNoCode after upgradeTimeout"),
            Closed("ping timeout"),
        ),
        row(
            "2probe twice during an upgrade",
            Input::Scenario(
                "2probe, 3probe, 2probe again; the client keeps polling",
                |s| Box::pin(botched_upgrade(s, &["2probe", "2probe"])),
            ),
            text(
                r#"websocket: ["3probe", "3probe"] CloseNoCode, then over polling: 42["echo","back to polling"]"#,
            ),
            Alive,
        ),
        row(
            "5 before 2probe",
            Input::Scenario("the upgrade packet first, without a probe", |s| {
                Box::pin(botched_upgrade(s, &["5"]))
            }),
            text(r#"websocket: [] CloseNoCode, then over polling: 42["echo","back to polling"]"#),
            Alive,
        ),
        row(
            "a message instead of 5 during an upgrade",
            Input::Scenario(
                "2probe, 3probe, then 42[...] on the probing WebSocket",
                |s| Box::pin(botched_upgrade(s, &["2probe", r#"42["echo","early"]"#])),
            ),
            text(
                r#"websocket: ["3probe"] CloseNoCode, then over polling: 42["echo","back to polling"]"#,
            ),
            Alive,
        ),
        row(
            "upgrade claiming a WebSocket session's sid",
            Input::Scenario(
                "a second WebSocket with the sid of a WebSocket-only session",
                |s| Box::pin(upgrade_of_websocket_session(s)),
            ),
            text(r#"second websocket: CloseNoCode, first still echoes: 42["echo","first"]"#),
            Alive,
        ),
        // ----- Engine.IO over WebSocket -----
        row(
            "invalid UTF-8 in a text frame",
            ws_frames(vec![Out::BadUtf8(b"4\xff\xfe".to_vec())]),
            ws(&[], Close(1007)),
            transport_error,
        ),
        row(
            "text message over maxPayload",
            ws_frames(vec![Out::Text(format!("4{}", "x".repeat(MAX_PAYLOAD)))]),
            ws(&[], Close(1009)),
            transport_error,
        ),
        row(
            "binary message over maxPayload",
            ws_frames(vec![Out::Binary(vec![7; MAX_PAYLOAD + 1])]),
            ws(&[], Close(1009)),
            transport_error,
        ),
        row(
            "unmasked client frame",
            ws_frames(vec![Out::Raw(vec![0x81, 0x01, b'3'])]),
            ws(&[], Close(1002)),
            transport_error,
        ),
        row(
            "reserved opcode 0x3",
            ws_frames(vec![Out::Raw(masked_frame(0x83, b"3"))]),
            ws(&[], Close(1002)),
            transport_error,
        ),
        row(
            "RSV1 set without an extension",
            ws_frames(vec![Out::Raw(masked_frame(0xc1, b"3"))]),
            ws(&[], Close(1002)),
            transport_error,
        ),
        row(
            "unknown Engine.IO packet type",
            ws_on(&["7"]),
            ws(&[], Dropped),
            parse_error,
        ),
        row(
            "empty text frame",
            ws_on(&[""]),
            ws(&[], Dropped),
            parse_error,
        ),
        row(
            "client ping (v4 clients never ping)",
            ws_on(&["2"]),
            ws(&[], Dropped),
            parse_error,
        ),
        row(
            "upgrade packet on an established websocket",
            ws_on(&["5"]),
            ws(&[], Dropped),
            parse_error,
        ),
        row(
            "polling-only b64 packet over websocket",
            ws_on(&["bAQID"]),
            ws(&[], Dropped),
            parse_error,
        ),
        row(
            "close packet",
            ws_on(&["1"]),
            ws(&[], Dropped),
            Closed("transport close"),
        ),
        row(
            "stray 2probe",
            ws_on(&["2probe"]),
            ws(&["3probe"], Open),
            Alive,
        ),
        row(
            "pongs and noops",
            ws_on(&["3", "3", "6", "3probe"]),
            ws(&[], Open),
            Alive,
        ),
        row(
            "10 000 tiny events in a burst, then an ack request",
            ws_frames(event_burst),
            ws(&[r#"431["done"]"#], Open),
            Alive,
        ),
        // ----- Socket.IO packets -----
        row(
            "unknown Socket.IO packet type",
            ws_on(&["49"]),
            closed_with_close_packet(),
            parse_error,
        ),
        row(
            "empty Socket.IO packet",
            ws_on(&["4"]),
            closed_with_close_packet(),
            parse_error,
        ),
        row(
            "EVENT that is not an array",
            ws_on(&["42{}"]),
            closed_with_close_packet(),
            parse_error,
        ),
        row(
            "EVENT with an empty array",
            ws_on(&["42[]"]),
            closed_with_close_packet(),
            parse_error,
        ),
        row(
            "EVENT with a reserved name",
            ws_on(&[r#"42["disconnect"]"#]),
            closed_with_close_packet(),
            parse_error,
        ),
        row(
            "truncated JSON",
            ws_on(&[r#"42["echo","#]),
            closed_with_close_packet(),
            parse_error,
        ),
        row(
            "JSON nested 200 deep",
            ws_on(&[&nested]),
            closed_with_close_packet(),
            parse_error,
        ),
        row(
            "number out of range",
            ws_on(&[r#"42["echo",1e400]"#]),
            closed_with_close_packet(),
            parse_error,
        ),
        row(
            "DISCONNECT with data",
            ws_on(&[r#"41{"a":1}"#]),
            closed_with_close_packet(),
            parse_error,
        ),
        row(
            "CONNECT with a non-object auth",
            ws_on(&[r#"40/slow,"x""#]),
            closed_with_close_packet(),
            parse_error,
        ),
        row(
            "namespace without / in an EVENT",
            ws_on(&[r#"42slow,["echo"]"#]),
            closed_with_close_packet(),
            parse_error,
        ),
        row(
            "namespace without / in a CONNECT",
            ws_bare(&["40slow,"]),
            closed_with_close_packet(),
            Gone,
        ),
        row(
            "namespace without / nor ,",
            ws_bare(&["40slow"]),
            closed_with_close_packet(),
            Gone,
        ),
        row(
            "double CONNECT",
            ws_on(&["40"]),
            closed_with_close_packet(),
            forced_close,
        ),
        row(
            "event before CONNECT",
            ws_bare(&[r#"42["echo"]"#]),
            closed_with_close_packet(),
            Gone,
        ),
        row(
            "EVENT for a namespace not joined",
            ws_on(&[r#"42/slow,["echo"]"#]),
            closed_with_close_packet(),
            forced_close,
        ),
        row(
            "ACK for a namespace not joined",
            ws_on(&["43/slow,1[]"]),
            closed_with_close_packet(),
            forced_close,
        ),
        row(
            "DISCONNECT for a namespace not joined",
            ws_on(&["41/slow,"]),
            closed_with_close_packet(),
            forced_close,
        ),
        row(
            "CONNECT_ERROR sent by a client",
            ws_on(&[r#"44{"message":"x"}"#]),
            closed_with_close_packet(),
            forced_close,
        ),
        row(
            "CONNECT to an unknown namespace",
            ws_on(&["40/nope,"]),
            ws(&[r#"44/nope,{"message":"Invalid namespace"}"#], Open),
            Alive,
        ),
        row(
            "ack id that overflows u64",
            ws_on(&[r#"4218446744073709551616["echo-ack",1]"#]),
            closed_with_close_packet(),
            parse_error,
        ),
        row(
            "ack id u64::MAX (control: answered)",
            ws_on(&[r#"4218446744073709551615["echo-ack",1]"#]),
            ws(&["4318446744073709551615[1]"], Open),
            Alive,
        ),
        row(
            "ACK that is not an array",
            ws_on(&[r#"431{"a":1}"#]),
            closed_with_close_packet(),
            parse_error,
        ),
        row(
            "EVENT named by a number (control: no handler, ignored)",
            ws_on(&["42[1,2]"]),
            ws(&[], Open),
            Alive,
        ),
        row(
            "ACK nobody waits for",
            ws_on(&[r#"43999["x"]"#]),
            ws(&[], Open),
            Alive,
        ),
        // ----- binary attachments -----
        row(
            "binary EVENT without a count",
            ws_on(&[r#"45["echo"]"#]),
            closed_with_close_packet(),
            parse_error,
        ),
        row(
            "attachment count over the limit (11 > 10)",
            ws_on(&[r#"4511-["echo"]"#]),
            closed_with_close_packet(),
            parse_error,
        ),
        row(
            "huge declared attachment count",
            ws_on(&[r#"4599999999999999999999999-["echo"]"#]),
            closed_with_close_packet(),
            parse_error,
        ),
        row(
            "2 attachments declared, 1 sent, then a text packet",
            ws_frames(vec![
                Out::Text(format!(
                    r#"452-["echo",{PH0},{{"_placeholder":true,"num":1}}]"#
                )),
                Out::Binary(vec![1, 2, 3]),
                t(r#"42["echo"]"#),
            ]),
            closed_with_close_packet(),
            parse_error,
        ),
        row(
            "1 attachment declared, 2 sent",
            ws_frames(vec![
                Out::Text(format!(r#"451-["echo",{PH0}]"#)),
                Out::Binary(vec![1, 2, 3]),
                Out::Binary(vec![4]),
            ]),
            ws(
                &[&format!(r#"451-["echo",{PH0}]"#), "<binary 010203>", "1"],
                CloseNoCode,
            ),
            parse_error,
        ),
        row(
            "attachment without an event",
            ws_frames(vec![Out::Binary(vec![1, 2, 3])]),
            closed_with_close_packet(),
            parse_error,
        ),
        row(
            "nested placeholder past the attachments",
            ws_on(&[r#"451-["echo",{"a":[{"b":{"_placeholder":true,"num":5}}]}]"#]),
            closed_with_close_packet(),
            parse_error,
        ),
        row(
            "placeholder with a negative num",
            ws_on(&[r#"451-["echo",{"_placeholder":true,"num":-1}]"#]),
            closed_with_close_packet(),
            parse_error,
        ),
        row(
            "placeholder with a string num",
            ws_on(&[r#"451-["echo",{"_placeholder":true,"num":"0"}]"#]),
            closed_with_close_packet(),
            parse_error,
        ),
        row(
            "binary EVENT declaring 0 attachments (control: handled)",
            ws_on(&[r#"450-["echo","x"]"#]),
            ws(&[r#"42["echo","x"]"#], Open),
            Alive,
        ),
        // ----- connect middlewares, acks -----
        row(
            "double CONNECT while the middleware runs",
            ws_bare(&["40/slow,", "40/slow,"]),
            ws(&[r#"40/slow,{"sid":"*"}"#, "1"], CloseNoCode),
            forced_close,
        ),
        row(
            "events queued behind a middleware CONNECT (control: handled in order)",
            ws_bare(&["40/slow,", r#"42/slow,["echo",1]"#, r#"42/slow,["echo",2]"#]),
            ws(
                &[
                    r#"40/slow,{"sid":"*"}"#,
                    r#"42/slow,["echo",1]"#,
                    r#"42/slow,["echo",2]"#,
                ],
                Open,
            ),
            Alive,
        ),
        row(
            "client gone while its CONNECT is in the middleware",
            Input::Scenario("40/slow, then the TCP connection closes at once", |s| {
                Box::pin(gone_during_middleware(s))
            }),
            text("/slow sockets: 0, rooms: 0"),
            Gone,
        ),
        row(
            "client gone while the server waits for its ack",
            Input::Scenario(
                "the server emits with an ack; the client closes instead",
                |s| Box::pin(gone_while_acked(s)),
            ),
            text("question received, server's ack wait ended: socket has been disconnected"),
            Closed("transport close"),
        ),
        // ----- connections and floods -----
        row(
            "slowloris headers",
            Input::Scenario("a request line, then one header line every 100 ms", |s| {
                Box::pin(slowloris(s))
            }),
            text("closed by the header read timeout, no response"),
            NoSession,
        ),
        row(
            "idle TCP that never speaks HTTP",
            Input::Scenario("connect and send nothing", |s| Box::pin(idle_tcp(s))),
            text("closed by the header read timeout, no response"),
            NoSession,
        ),
        row(
            "2 000 abandoned polling handshakes",
            Input::Scenario(
                "2 000 handshakes, never followed by a GET, POST or pong",
                |s| Box::pin(abandoned_handshakes(s)),
            ),
            text("2000 × 200 open packet; all gone within pingInterval + pingTimeout"),
            NoSession,
        ),
        row(
            "300 websocket sockets that stop reading",
            Input::Scenario(
                "300 WebSocket sessions CONNECT to /, then never read or pong",
                |s| Box::pin(silent_websockets(s)),
            ),
            text(
                "300 sockets; all disconnected with ping timeout within pingInterval + pingTimeout",
            ),
            NoSession,
        ),
    ]
}

// ===== running a row =====

fn describe(input: &Input) -> String {
    fn short(bytes: &[u8]) -> String {
        let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(60)]).into_owned();
        if bytes.len() > 60 {
            format!("{shown:?}… ({} bytes)", bytes.len())
        } else {
            format!("{shown:?}")
        }
    }
    match input {
        Input::Request {
            method,
            target,
            body,
            ..
        } => format!("{method} {} {}", short(target.as_bytes()), short(body)),
        Input::Raw(bytes) => format!("raw {}", short(bytes)),
        Input::Poll {
            connect,
            method,
            headers,
            body,
        } => format!(
            "polling{}: {method} {headers:?} {}",
            if *connect { " after 40" } else { "" },
            short(body)
        ),
        Input::Ws { connect, frames } => {
            let shown: Vec<String> = frames
                .iter()
                .take(4)
                .map(|f| match f {
                    Out::Text(s) => short(s.as_bytes()),
                    Out::Binary(b) => format!("<binary {} bytes>", b.len()),
                    Out::BadUtf8(b) => format!("<text frame {}>", short(b)),
                    Out::Raw(b) => format!("<raw {b:02x?}>"),
                })
                .collect();
            let more = if frames.len() > 4 {
                format!(" … ({} frames)", frames.len())
            } else {
                String::new()
            };
            format!(
                "websocket{}: {}{more}",
                if *connect { " after 40" } else { "" },
                shown.join(", ")
            )
        }
        Input::Scenario(what, _) => what.to_string(),
    }
}

fn http_answer(res: Option<common::Resp>) -> Answer {
    res.map_or(Answer::Dropped, |r| Answer::Http(r.status, r.text()))
}

/// Replaces the value of every `"sid":"…"` with `*` (socket ids differ from run to run).
fn mask_sids(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(r#""sid":""#) {
        let (head, tail) = rest.split_at(at + 7);
        out.push_str(head);
        out.push('*');
        rest = tail.find('"').map_or("", |end| &tail[end..]);
    }
    out.push_str(rest);
    out
}

/// A polling session connected to `/`; returns its sid.
async fn polling_connected(addr: SocketAddr) -> String {
    let sid = open_polling(addr, PATH).await;
    assert_eq!(polling_post(addr, PATH, &sid, b"40").await.status, 200);
    let reply = polling_recv(addr, PATH, &sid).await;
    assert!(reply[0].starts_with("40{"), "{reply:?}");
    sid
}

/// A WebSocket session connected to `/` (or not); returns it and its sid.
async fn ws_connected(addr: SocketAddr, connect: bool) -> (Ws, String) {
    let (mut ws, sid) = ws_session(addr, PATH).await;
    if connect {
        sio_connect(&mut ws, None).await;
    }
    (ws, sid)
}

async fn send_out(ws: &mut Ws, frames: Vec<Out>) {
    for frame in frames {
        let msg = match frame {
            Out::Text(s) => Message::text(s),
            Out::Binary(b) => Message::binary(b),
            Out::BadUtf8(b) => Message::Frame(Frame::message(b, OpCode::Data(Data::Text), true)),
            Out::Raw(bytes) => {
                if ws.flush().await.is_err() || ws.get_mut().write_all(&bytes).await.is_err() {
                    return;
                }
                continue;
            }
        };
        // The server may close mid-burst; what it answered is read afterwards.
        if ws.feed(msg).await.is_err() {
            return;
        }
    }
    let _ = ws.flush().await;
}

/// Reads what the server sends after the input: until the connection ends, or (when `expected`
/// says the connection stays open) until the expected packets came and nothing more for [`QUIET`].
async fn read_ws_answer(ws: &mut Ws, expected: &Answer) -> Answer {
    let (wanted, stays_open) = match expected {
        Answer::Ws(packets, end) => (packets.len(), *end == End::Open),
        _ => (0, false),
    };
    let mut got = Vec::new();
    loop {
        let wait = if stays_open && got.len() >= wanted {
            QUIET
        } else {
            WAIT
        };
        let end = match tokio::time::timeout(wait, ws.next()).await {
            Err(_) => End::Open,
            Ok(None | Some(Err(_))) => End::Dropped,
            Ok(Some(Ok(Message::Close(frame)))) => {
                frame.map_or(End::CloseNoCode, |f| End::Close(f.code.into()))
            }
            Ok(Some(Ok(Message::Text(t)))) if t == "2" => {
                let _ = ws.send(Message::text("3")).await;
                continue;
            }
            Ok(Some(Ok(Message::Text(t)))) => {
                got.push(mask_sids(&t));
                continue;
            }
            Ok(Some(Ok(Message::Binary(b)))) => {
                let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
                got.push(format!("<binary {hex}>"));
                continue;
            }
            Ok(Some(Ok(_))) => continue,
        };
        return Answer::Ws(got, end);
    }
}

async fn run_input(server: Arc<Server>, input: Input, expected: Answer) -> Outcome {
    let addr = server.addr;
    match input {
        Input::Request {
            method,
            target,
            headers,
            body,
        } => {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let raw = request_bytes(addr, method, &target, &headers, &body);
            Outcome {
                answer: http_answer(http_raw(addr, &raw).await),
                sid: None,
                hold: None,
            }
        }
        Input::Raw(bytes) => Outcome {
            answer: http_answer(http_raw(addr, &bytes).await),
            sid: None,
            hold: None,
        },
        Input::Poll {
            connect,
            method,
            headers,
            body,
        } => {
            let sid = if connect {
                polling_connected(addr).await
            } else {
                open_polling(addr, PATH).await
            };
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let raw = request_bytes(addr, method, &polling_target(PATH, &sid), &headers, &body);
            Outcome {
                answer: http_answer(http_raw(addr, &raw).await),
                sid: Some(sid),
                hold: None,
            }
        }
        Input::Ws { connect, frames } => {
            let (mut ws, sid) = ws_connected(addr, connect).await;
            send_out(&mut ws, frames).await;
            Outcome {
                answer: read_ws_answer(&mut ws, &expected).await,
                sid: Some(sid),
                hold: Some(ws),
            }
        }
        Input::Scenario(_, run) => run(server).await,
    }
}

/// Sees what became of session `sid`, waiting (bounded) for the change `expected` announces.
async fn observe_fate(server: &Server, sid: Option<&str>, expected: Fate) -> Fate {
    let Some(sid) = sid else {
        return Fate::NoSession;
    };
    let engine = server.io.engine();
    match expected {
        Fate::Closed(_) => {
            wait_until(WAIT, || server.reason(sid).is_some()).await;
        }
        Fate::Gone => {
            wait_until(WAIT, || engine.session(sid).is_none()).await;
        }
        Fate::Alive | Fate::NoSession => {}
    }
    if let Some(reason) = server.reason(sid) {
        return Fate::Closed(reason);
    }
    match engine.session(sid) {
        Some(session) if !session.is_closed() => Fate::Alive,
        _ => Fate::Gone,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_catalogue() {
    let began = Instant::now();
    let (server, stop) = Server::start().await;
    let runtime = tokio::runtime::Handle::current().metrics();
    // The server, the canary's connection and the ticker.
    let tasks_at_start = runtime.num_alive_tasks();
    let cases = catalogue();
    let total = cases.len();
    assert!(total >= 50, "the catalogue has {total} cases");
    let mut failures = Vec::new();
    let mut max_lag = Duration::ZERO;
    println!("{:<3} {:<58} {:<7} answer / fate", "#", "case", "result");
    for (i, case) in cases.into_iter().enumerate() {
        let Case {
            name,
            input,
            answer,
            fate,
        } = case;
        let shown_input = describe(&input);
        let started = Instant::now();
        let task = tokio::spawn(run_input(server.clone(), input, answer.clone()));
        let mut problems = Vec::new();
        let (got_answer, got_fate) = match bounded(Duration::from_secs(30), name, task).await {
            Ok(outcome) => {
                let got_fate = observe_fate(&server, outcome.sid.as_deref(), fate).await;
                drop(outcome.hold);
                (Some(outcome.answer), Some(got_fate))
            }
            Err(err) => {
                problems.push(format!("the case itself failed: {err}"));
                (None, None)
            }
        };
        if let Some(got) = &got_answer {
            if *got != answer {
                problems.push(format!("answer {got:?}, expected {answer:?}"));
            }
        }
        if let Some(got) = got_fate {
            if got != fate {
                problems.push(format!("fate {got:?}, expected {fate:?}"));
            }
        }
        match server.check_canary().await {
            Ok(lag) => max_lag = max_lag.max(lag),
            Err(err) => problems.push(format!("canary: {err}")),
        }
        let result = if problems.is_empty() { "ok" } else { "FAILED" };
        println!(
            "{:<3} {name:<58} {result:<7} {answer:?} / {fate:?} ({} ms)\n    input: {shown_input}",
            i + 1,
            started.elapsed().as_millis()
        );
        for problem in &problems {
            println!("    !! {problem}");
        }
        if !problems.is_empty() {
            failures.push(format!("#{} {name}: {}", i + 1, problems.join("; ")));
        }
    }

    // Every offender is gone from the server's state; only the canary remains.
    let engine = server.io.engine();
    let settled = wait_until(PING_INTERVAL + PING_TIMEOUT + WAIT, || {
        engine.session_count() == 1
    })
    .await;
    if !settled {
        failures.push(format!(
            "{} sessions left after the catalogue (only the canary should remain)",
            engine.session_count()
        ));
    }
    assert!(
        engine.session(&server.canary_sid).is_some(),
        "the canary's session is gone"
    );
    let root = server.io.of("/").unwrap();
    let slow = server.io.of("/slow").unwrap();
    let root_sockets = root.sockets().len();
    if root_sockets != 1 {
        failures.push(format!(
            "{root_sockets} sockets left on / (only the canary should remain)"
        ));
    }
    let slow_state = (slow.sockets().len(), slow.adapter().rooms().len());
    if slow_state != (0, 0) {
        failures.push(format!("/slow still has (sockets, rooms) {slow_state:?}"));
    }
    let mut rooms: Vec<String> = root
        .adapter()
        .rooms()
        .iter()
        .map(ToString::to_string)
        .collect();
    rooms.retain(|r| r != "canary");
    if rooms.len() != 1 {
        failures.push(format!(
            "rooms left on /: {rooms:?} (only the canary's own room should remain)"
        ));
    }
    if let Err(err) = server.check_canary().await {
        failures.push(format!("canary at the end: {err}"));
    }
    // Nothing of the offenders runs on: no connection task, timer or heartbeat driver.
    if !wait_until(WAIT, || runtime.num_alive_tasks() <= tasks_at_start).await {
        failures.push(format!(
            "{} tasks alive at the end, {tasks_at_start} at the start",
            runtime.num_alive_tasks()
        ));
    }
    let ticks = server.canary.lock().unwrap().received;
    println!(
        "{total} cases in {:.1} s; the canary received {ticks} ticks in order, at most {} ms behind",
        began.elapsed().as_secs_f64(),
        max_lag.as_millis()
    );
    let _ = stop.send(());
    assert!(
        failures.is_empty(),
        "{} of {total} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// ===== scenarios =====

async fn post_over_max_payload(s: Arc<Server>, chunked: bool) -> Outcome {
    let addr = s.addr;
    let sid = polling_connected(addr).await;
    let target = polling_target(PATH, &sid);
    let res = if chunked {
        let body = format!("4{}", "x".repeat(MAX_PAYLOAD));
        let mut raw = Vec::new();
        // Nine small chunks, then one that crosses the limit, so nothing is left unread but the
        // terminator.
        let (small, big) = body.as_bytes().split_at(9 * 1000);
        for piece in small.chunks(1000).chain([big]) {
            raw.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            raw.extend_from_slice(piece);
            raw.extend_from_slice(b"\r\n");
        }
        raw.extend_from_slice(b"0\r\n\r\n");
        let headers = [("Transfer-Encoding", "chunked")];
        let mut request = request_bytes(addr, "POST", &target, &headers, b"");
        request.extend_from_slice(&raw);
        http_raw(addr, &request).await
    } else {
        // The length alone is refused: the body is never sent.
        let declared = (MAX_PAYLOAD + 100_000).to_string();
        let head = request_bytes(addr, "POST", &target, &[("Content-Length", &declared)], b"");
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(&head).await.unwrap();
        bounded(WAIT, "the 413", read_response(&mut stream)).await
    };
    let Some(res) = res else {
        return Outcome::text("dropped without a response", Some(sid), None);
    };
    polling_post(addr, PATH, &sid, br#"42["echo","still here"]"#).await;
    let echoed = polling_recv(addr, PATH, &sid).await;
    Outcome::text(
        format!(
            "{} {:?}, then {}",
            res.status,
            res.text(),
            echoed.join(" | ")
        ),
        Some(sid),
        None,
    )
}

async fn truncated_body(s: Arc<Server>) -> Outcome {
    let addr = s.addr;
    let sid = polling_connected(addr).await;
    let target = polling_target(PATH, &sid);
    let mut head = request_bytes(addr, "POST", &target, &[("Content-Length", "50")], b"");
    head.extend_from_slice(br#"42["echo"]"#);
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(&head).await.unwrap();
    stream.shutdown().await.unwrap();
    let res = bounded(WAIT, "an answer", read_response(&mut stream)).await;
    Outcome {
        answer: http_answer(res),
        sid: Some(sid),
        hold: None,
    }
}

async fn overlapping_gets(s: Arc<Server>) -> Outcome {
    let addr = s.addr;
    let sid = polling_connected(addr).await;
    let target = polling_target(PATH, &sid);
    let pending = {
        let target = target.clone();
        tokio::spawn(async move { http(addr, "GET", &target, &[], b"").await })
    };
    let waiting = wait_until(WAIT, || {
        s.io.engine()
            .session(&sid)
            .is_some_and(|session| session.polling_get_waiting())
    })
    .await;
    assert!(waiting, "the first GET never became pending");
    let second = http(addr, "GET", &target, &[], b"").await;
    let first = bounded(WAIT, "the pending GET", pending).await.unwrap();
    // Whichever reached the server second is the overlapping one (on a busy machine the spawned
    // GET may arrive late): report the pair in a fixed order.
    let mut answers = [
        format!("{} {:?}", first.status, first.text()),
        format!("{} {:?}", second.status, second.text()),
    ];
    answers.sort();
    Outcome::text(
        format!(
            "pending GET: {}, overlapping GET: {}",
            answers[0], answers[1]
        ),
        Some(sid),
        None,
    )
}

async fn overlapping_posts(s: Arc<Server>) -> Outcome {
    let addr = s.addr;
    let sid = polling_connected(addr).await;
    let target = polling_target(PATH, &sid);
    // The first POST announces 100 bytes and sends 10, so it stays pending.
    let mut head = request_bytes(addr, "POST", &target, &[("Content-Length", "100")], b"");
    head.extend_from_slice(br#"42["echo"]"#);
    let mut first = TcpStream::connect(addr).await.unwrap();
    first.write_all(&head).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = polling_post(addr, PATH, &sid, br#"42["echo"]"#).await;
    drop(first);
    Outcome::text(
        format!("second POST: {} {:?}", second.status, second.text()),
        Some(sid),
        None,
    )
}

async fn closed_sid(s: Arc<Server>) -> Outcome {
    let addr = s.addr;
    let sid = polling_connected(addr).await;
    assert_eq!(polling_post(addr, PATH, &sid, b"1").await.status, 200);
    // The first GET may be one the client sent with its close (the suites' "forcefully closes the
    // session"): the sid's tombstone answers it with a noop. The next is unknown.
    let first = http(addr, "GET", &polling_target(PATH, &sid), &[], b"").await;
    assert_eq!(
        (first.status, &first.body[..]),
        (200, &b"6"[..]),
        "{first:?}"
    );
    let res = http(addr, "GET", &polling_target(PATH, &sid), &[], b"").await;
    Outcome {
        answer: http_answer(Some(res)),
        sid: Some(sid),
        hold: None,
    }
}

async fn polling_on_websocket_session(s: Arc<Server>, method: &str) -> Outcome {
    let addr = s.addr;
    let (ws, sid) = ws_connected(addr, true).await;
    let res = http(
        addr,
        method,
        &polling_target(PATH, &sid),
        &[("Content-Type", "text/plain;charset=UTF-8")],
        if method == "POST" {
            br#"42["echo"]"#
        } else {
            b""
        },
    )
    .await;
    Outcome {
        answer: http_answer(Some(res)),
        sid: Some(sid),
        hold: Some(ws),
    }
}

fn websocket_target(sid: &str) -> String {
    format!("{PATH}?EIO=4&transport=websocket&sid={sid}")
}

async fn second_upgrade(s: Arc<Server>) -> Outcome {
    let addr = s.addr;
    let sid = polling_connected(addr).await;
    let mut first = ws_connect(addr, &websocket_target(&sid)).await;
    first.send(Message::text("2probe")).await.unwrap();
    assert_eq!(ws_text(&mut first).await, "3probe");
    first.send(Message::text("5")).await.unwrap();
    let mut second = ws_connect(addr, &websocket_target(&sid)).await;
    let end = match read_ws_answer(&mut second, &ws(&[], End::Dropped)).await {
        Answer::Ws(packets, end) if packets.is_empty() => format!("{end:?}"),
        other => format!("{other:?}"),
    };
    first
        .send(Message::text(r#"42["echo","first"]"#))
        .await
        .unwrap();
    let echoed = ws_text(&mut first).await;
    Outcome::text(
        format!("second websocket: {end}, first still echoes: {echoed}"),
        Some(sid),
        Some(first),
    )
}

/// A polling session, then a WebSocket for its sid that sends `frames` instead of a proper upgrade;
/// then the session is used over polling again.
async fn botched_upgrade(s: Arc<Server>, frames: &'static [&'static str]) -> Outcome {
    let addr = s.addr;
    let sid = polling_connected(addr).await;
    let mut ws = ws_connect(addr, &websocket_target(&sid)).await;
    for frame in frames {
        let _ = ws.send(Message::text(*frame)).await;
    }
    let answer = read_ws_answer(&mut ws, &Answer::Ws(Vec::new(), End::Dropped)).await;
    let Answer::Ws(packets, end) = answer else {
        unreachable!()
    };
    polling_post(addr, PATH, &sid, br#"42["echo","back to polling"]"#).await;
    let echoed = polling_recv(addr, PATH, &sid).await;
    Outcome::text(
        format!(
            "websocket: {packets:?} {end:?}, then over polling: {}",
            echoed.join(" | ")
        ),
        Some(sid),
        None,
    )
}

async fn upgrade_of_websocket_session(s: Arc<Server>) -> Outcome {
    let addr = s.addr;
    let (mut first, sid) = ws_connected(addr, true).await;
    let mut second = ws_connect(addr, &websocket_target(&sid)).await;
    let end = match read_ws_answer(&mut second, &Answer::Ws(Vec::new(), End::Dropped)).await {
        Answer::Ws(packets, end) if packets.is_empty() => format!("{end:?}"),
        other => format!("{other:?}"),
    };
    first
        .send(Message::text(r#"42["echo","first"]"#))
        .await
        .unwrap();
    let echoed = ws_text(&mut first).await;
    Outcome::text(
        format!("second websocket: {end}, first still echoes: {echoed}"),
        Some(sid),
        Some(first),
    )
}

async fn stalled_upgrade(s: Arc<Server>, probe: bool, keep_polling: bool) -> Outcome {
    let addr = s.addr;
    let sid = polling_connected(addr).await;
    let mut ws = ws_connect(addr, &websocket_target(&sid)).await;
    let opened = Instant::now();
    if probe {
        ws.send(Message::text("2probe")).await.unwrap();
        assert_eq!(ws_text(&mut ws).await, "3probe");
    }
    let end = match read_ws_answer(&mut ws, &Answer::Ws(Vec::new(), End::Dropped)).await {
        Answer::Ws(packets, end) if packets.is_empty() => format!("{end:?}"),
        other => format!("{other:?}"),
    };
    let took = opened.elapsed();
    let when = if took >= UPGRADE_TIMEOUT && took < UPGRADE_TIMEOUT + SLACK {
        "after upgradeTimeout".to_owned()
    } else {
        format!("after {} ms", took.as_millis())
    };
    if !keep_polling {
        return Outcome::text(format!("websocket: {end} {when}"), Some(sid), None);
    }
    polling_post(addr, PATH, &sid, br#"42["echo","back to polling"]"#).await;
    let echoed = polling_recv(addr, PATH, &sid).await;
    Outcome::text(
        format!(
            "websocket: {end} {when}, then over polling: {}",
            echoed.join(" | ")
        ),
        Some(sid),
        None,
    )
}

async fn gone_during_middleware(s: Arc<Server>) -> Outcome {
    let (mut ws, sid) = ws_connected(s.addr, false).await;
    let before = s.slow_middleware_done.load(Ordering::SeqCst);
    ws.send(Message::text("40/slow,")).await.unwrap();
    drop(ws);
    // The middleware (100 ms) finishes after the client is gone and must find the session closed:
    // no socket is added afterwards.
    let finished = wait_until(WAIT, || {
        s.slow_middleware_done.load(Ordering::SeqCst) > before
    })
    .await;
    assert!(finished, "the middleware never finished");
    let slow = s.io.of("/slow").unwrap();
    // What it does next runs on the server's task: give a wrongly added socket time to show.
    let _ = wait_until(Duration::from_millis(200), || !slow.sockets().is_empty()).await;
    Outcome::text(
        format!(
            "/slow sockets: {}, rooms: {}",
            slow.sockets().len(),
            slow.adapter().rooms().len()
        ),
        Some(sid),
        None,
    )
}

async fn gone_while_acked(s: Arc<Server>) -> Outcome {
    let (mut ws, sid) = ws_connected(s.addr, true).await;
    let before = s.acks.lock().unwrap().len();
    ws.send(Message::text(r#"42["ask"]"#)).await.unwrap();
    let question = ws_text(&mut ws).await;
    let received = question.starts_with("42") && question.ends_with(r#"["question",1]"#);
    drop(ws);
    wait_until(WAIT, || s.acks.lock().unwrap().len() > before).await;
    let outcome = s.acks.lock().unwrap().get(before).cloned();
    Outcome::text(
        format!(
            "question {}, server's ack wait ended: {}",
            if received { "received" } else { "missing" },
            outcome.as_deref().unwrap_or("never")
        ),
        Some(sid),
        None,
    )
}

/// Reads from `stream` until it ends; returns what came and how long after `began` it ended (or
/// `None` if it did not within `limit`), writing `trickle` every 100 ms meanwhile. `began` is taken
/// before connecting: the server's timer cannot start earlier, so a close is never measured short.
async fn until_closed(
    stream: &mut TcpStream,
    began: Instant,
    limit: Duration,
    trickle: Option<&[u8]>,
) -> (Vec<u8>, Option<Duration>) {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while began.elapsed() < limit {
        match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return (got, Some(began.elapsed())),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => {
                if let Some(bytes) = trickle {
                    if stream.write_all(bytes).await.is_err() {
                        return (got, Some(began.elapsed()));
                    }
                }
            }
        }
    }
    (got, None)
}

fn header_timeout_verdict(got: &[u8], closed: Option<Duration>) -> String {
    let response = if got.is_empty() {
        "no response".to_owned()
    } else {
        format!("response {:?}", String::from_utf8_lossy(got))
    };
    match closed {
        Some(after) if after >= HEADER_TIMEOUT && after < HEADER_TIMEOUT + SLACK => {
            format!("closed by the header read timeout, {response}")
        }
        Some(after) => format!("closed after {} ms, {response}", after.as_millis()),
        None => format!("still open, {response}"),
    }
}

async fn slowloris(s: Arc<Server>) -> Outcome {
    let began = Instant::now();
    let mut stream = TcpStream::connect(s.addr).await.unwrap();
    let line = format!("GET {PATH}?EIO=4&transport=polling HTTP/1.1\r\nHost: localhost\r\n");
    stream.write_all(line.as_bytes()).await.unwrap();
    let trickle = Some(&b"X-Slow: 1\r\n"[..]);
    let (got, closed) = until_closed(&mut stream, began, Duration::from_secs(3), trickle).await;
    Outcome::text(header_timeout_verdict(&got, closed), None, None)
}

async fn idle_tcp(s: Arc<Server>) -> Outcome {
    let began = Instant::now();
    let mut stream = TcpStream::connect(s.addr).await.unwrap();
    let (got, closed) = until_closed(&mut stream, began, Duration::from_secs(3), None).await;
    Outcome::text(header_timeout_verdict(&got, closed), None, None)
}

async fn abandoned_handshakes(s: Arc<Server>) -> Outcome {
    const N: usize = 2000;
    let addr = s.addr;
    let target = polling_target(PATH, "");
    let results: Vec<Option<String>> = futures_util::stream::iter(0..N)
        .map(|_| {
            let target = target.clone();
            async move {
                let res = http(addr, "GET", &target, &[], b"").await;
                let text = res.text();
                let open: serde_json::Value = serde_json::from_str(text.strip_prefix('0')?).ok()?;
                (res.status == 200).then(|| open["sid"].as_str().map(str::to_owned))?
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let last = Instant::now();
    let sids: Vec<String> = results.into_iter().flatten().collect();
    let engine = s.io.engine();
    let deadline = PING_INTERVAL + PING_TIMEOUT + SLACK;
    let gone = wait_until(deadline + WAIT, || {
        sids.iter().all(|sid| engine.session(sid).is_none())
    })
    .await;
    let took = last.elapsed();
    let verdict = match (gone, took < deadline) {
        (true, true) => "all gone within pingInterval + pingTimeout".to_owned(),
        (true, false) => format!("all gone after {} ms", took.as_millis()),
        (false, _) => format!(
            "{} still open",
            sids.iter()
                .filter(|sid| engine.session(sid).is_some())
                .count()
        ),
    };
    Outcome::text(
        format!("{} × 200 open packet; {verdict}", sids.len()),
        None,
        None,
    )
}

async fn silent_websockets(s: Arc<Server>) -> Outcome {
    const N: usize = 300;
    let addr = s.addr;
    let opened: Vec<(Ws, String)> = futures_util::stream::iter(0..N)
        .map(|_| async move {
            let (mut ws, sid) = ws_session(addr, PATH).await;
            sio_connect(&mut ws, None).await;
            (ws, sid)
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let last = Instant::now();
    let deadline = PING_INTERVAL + PING_TIMEOUT + SLACK;
    let all_timed_out = || {
        opened
            .iter()
            .all(|(_, sid)| s.reason(sid) == Some("ping timeout"))
    };
    let done = wait_until(deadline + WAIT, all_timed_out).await;
    let took = last.elapsed();
    let engine = s.io.engine();
    let open = opened
        .iter()
        .filter(|(_, sid)| engine.session(sid).is_some())
        .count();
    let verdict = match (done, took < deadline, open) {
        (true, true, 0) => {
            "all disconnected with ping timeout within pingInterval + pingTimeout".to_owned()
        }
        _ => format!(
            "after {} ms: {} with ping timeout, {open} sessions open",
            took.as_millis(),
            opened
                .iter()
                .filter(|(_, sid)| s.reason(sid) == Some("ping timeout"))
                .count()
        ),
    };
    drop(opened);
    Outcome::text(format!("{N} sockets; {verdict}"), None, None)
}
