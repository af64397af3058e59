//! What hostile clients can make the `tidings` binary hold, measured from outside: for each kind of
//! hostile connection, 100 at once against the binary in production mode, while a canary dashboard
//! receives a numbered update every 20 ms. The server's RSS growth must stay within 3x the bytes
//! those clients sent plus 64 KiB per connection, its own byte gauges must show what it holds, the
//! canary must miss nothing, and everything must be released within pingInterval + pingTimeout
//! after the clients stop.
//!
//! The kinds: a 900 KB CONNECT auth, a binary packet whose attachment never comes (900 KB text
//! part, no token needed), replies requested over polling and never collected, a WebSocket that
//! never reads, and a polling POST whose body stalls halfway.

#[path = "../../../tests/common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use common::{Ws, bounded, http, open_polling, polling_post, ws_session, ws_text};

const SECRET: &str = "amplification-secret";
const API_KEY: &str = "amplification-key";
const CONNS: usize = 100;
const PING_INTERVAL_MS: u64 = 1500;
const PING_TIMEOUT_MS: u64 = 1500;
const BIG: usize = 900_000;

struct Binary {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Binary {
    /// Starts `tidings` in production mode on 127.0.0.1 (a free port) and waits for its
    /// listening line.
    async fn start() -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tidings"))
            .args([
                "--host",
                "127.0.0.1",
                "--ping-interval-ms",
                &PING_INTERVAL_MS.to_string(),
                "--ping-timeout-ms",
                &PING_TIMEOUT_MS.to_string(),
                "--max-buffered-bytes",
                "32768",
                "--body-read-timeout-ms",
                "1000",
                "--attachment-timeout-ms",
                "1000",
                "--max-connections-per-ip",
                "1000",
                "--demo",
                "false",
            ])
            .env("TIDINGS_PORT", "0")
            .env("TIDINGS_AUTH_SECRET", SECRET)
            .env("TIDINGS_API_KEY", API_KEY)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the tidings binary starts");
        let stdout = child.stdout.take().unwrap();
        let stdout = tokio::process::ChildStdout::from_std(stdout).unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let addr = bounded(Duration::from_secs(20), "the listening line", async {
            loop {
                let line = lines
                    .next_line()
                    .await
                    .unwrap()
                    .expect("output before exit");
                if let Some(rest) = line.split("listening on ").nth(1) {
                    return rest.trim().parse::<SocketAddr>().unwrap();
                }
            }
        })
        .await;
        // Keep reading so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self { child, addr }
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    async fn metrics(&self) -> String {
        http(self.addr, "GET", "/metrics", &[], b"").await.text()
    }

    /// The value of a sample line of /metrics (0 when absent).
    async fn gauge(&self, line: &str) -> u64 {
        let text = self.metrics().await;
        text.lines()
            .find_map(|l| l.strip_prefix(line)?.strip_prefix(' '))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    async fn sessions(&self) -> u64 {
        self.gauge("tidings_engine_sessions{transport=\"polling\"}")
            .await
            + self
                .gauge("tidings_engine_sessions{transport=\"websocket\"}")
                .await
    }
}

fn token(orgs: &[&str]) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let claims = json!({ "orgs": orgs, "exp": exp });
    let claims: tidings_service::analytics::auth::Claims = serde_json::from_value(claims).unwrap();
    tidings_service::analytics::auth::sign(SECRET.as_bytes(), &claims).unwrap()
}

/// A WebSocket dashboard connected with `token`, joined to `org`.
async fn dashboard(addr: SocketAddr, org: &str) -> Ws {
    let (mut ws, _) = ws_session(addr, "/socket.io/").await;
    ws.send(Message::text(format!(
        "40{}",
        json!({ "token": token(&[org]) })
    )))
    .await
    .unwrap();
    assert!(ws_text(&mut ws).await.starts_with("40"));
    ws.send(Message::text(format!(
        r#"420["join:analytics",{{"organizationId":"{org}"}}]"#
    )))
    .await
    .unwrap();
    assert!(ws_text(&mut ws).await.starts_with("430"));
    ws
}

/// What one kind of hostile client did: its connections (held open) and the bytes they sent.
struct Attack {
    held: Vec<Box<dyn std::any::Any + Send>>,
    sent: usize,
}

async fn big_auth(addr: SocketAddr) -> Attack {
    let mut held: Vec<Box<dyn std::any::Any + Send>> = Vec::new();
    let mut sent = 0;
    for _ in 0..CONNS {
        let (mut ws, _) = ws_session(addr, "/socket.io/").await;
        let packet = format!("40{}", json!({ "token": "x".repeat(BIG) }));
        sent += packet.len();
        ws.send(Message::text(packet)).await.unwrap();
        held.push(Box::new(ws));
    }
    Attack { held, sent }
}

async fn pending_binary(addr: SocketAddr) -> Attack {
    let mut held: Vec<Box<dyn std::any::Any + Send>> = Vec::new();
    let mut sent = 0;
    for _ in 0..CONNS {
        let (mut ws, _) = ws_session(addr, "/socket.io/").await;
        let packet = format!(
            r#"451-["upload",{{"_placeholder":true,"num":0}},"{}"]"#,
            "y".repeat(BIG)
        );
        sent += packet.len();
        ws.send(Message::text(packet)).await.unwrap();
        held.push(Box::new(ws));
    }
    Attack { held, sent }
}

/// Over polling: connect, join an org with a long history, ask for it again and again, never GET.
async fn unread_polling_replies(addr: SocketAddr) -> Attack {
    let mut sent = 0;
    for _ in 0..CONNS {
        let sid = open_polling(addr, "/socket.io/").await;
        let connect = format!("40{}", json!({ "token": token(&["hoard"]) }));
        let join = r#"420["join:analytics",{"organizationId":"hoard"}]"#.to_owned();
        let asks: Vec<String> = (1..=50)
            .map(|i| format!(r#"42{i}["request:history",{{"since":0}}]"#))
            .collect();
        for body in [connect, join, asks.join("\x1e")] {
            sent += body.len() + 200;
            let res = polling_post(addr, "/socket.io/", &sid, body.as_bytes()).await;
            if res.status != 200 {
                break; // closed as a slow consumer: what it asked for is gone with it
            }
        }
    }
    Attack {
        held: Vec::new(),
        sent,
    }
}

/// Over WebSocket: the same requests, and the socket is never read again.
async fn websocket_never_reads(addr: SocketAddr) -> Attack {
    let mut held: Vec<Box<dyn std::any::Any + Send>> = Vec::new();
    let mut sent = 0;
    for _ in 0..CONNS {
        let mut ws = dashboard(addr, "hoard").await;
        for i in 1..=50 {
            let ask = format!(r#"42{i}["request:history",{{"since":0}}]"#);
            sent += ask.len() + 8;
            if ws.send(Message::text(ask)).await.is_err() {
                break;
            }
        }
        held.push(Box::new(ws));
    }
    Attack { held, sent }
}

/// A polling POST that declares 1 MB and sends half.
async fn stalled_body(addr: SocketAddr) -> Attack {
    let mut held: Vec<Box<dyn std::any::Any + Send>> = Vec::new();
    let mut sent = 0;
    for _ in 0..CONNS {
        let sid = open_polling(addr, "/socket.io/").await;
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: {addr}\r\n\
             Content-Type: text/plain\r\nContent-Length: 1000000\r\n\r\n"
        );
        let half = vec![b'4'; 500_000];
        tcp.write_all(head.as_bytes()).await.unwrap();
        tcp.write_all(&half).await.unwrap();
        sent += head.len() + half.len() + 200;
        held.push(Box::new(tcp));
    }
    Attack { held, sent }
}

/// The canary: reads every update of org `canary`, in order; `count` follows how many.
fn spawn_canary(mut ws: Ws, count: Arc<AtomicUsize>) -> tokio::task::JoinHandle<Vec<u64>> {
    tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some(Ok(msg)) = ws.next().await {
            let Message::Text(text) = msg else { continue };
            if text == "2" {
                let _ = ws.send(Message::text("3")).await;
                continue;
            }
            let Some(rest) = text.strip_prefix("42") else {
                continue;
            };
            let Ok(items) = serde_json::from_str::<Vec<Value>>(rest) else {
                continue;
            };
            if items.first().and_then(Value::as_str) == Some("analytics:update") {
                let content = items[1]["data"]["content"].as_str().unwrap_or_default();
                if content == "stop" {
                    break;
                }
                seen.push(content.parse().unwrap());
                count.store(seen.len(), Ordering::Relaxed);
            }
        }
        seen
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_connections_cost_what_they_send_and_are_released() {
    let server = Binary::start().await;
    let addr = server.addr;
    // A long history for the org the attackers may read (each reply a full page).
    for i in 0..300 {
        Poster(addr)
            .send("hoard", &format!("history entry {i} {}", "h".repeat(200)))
            .await;
    }
    let received = Arc::new(AtomicUsize::new(0));
    let canary = spawn_canary(dashboard(addr, "canary").await, received.clone());
    let publisher = tokio::spawn(async move {
        let mut n = 0u64;
        loop {
            Poster(addr).send("canary", &n.to_string()).await;
            n += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    // Warm up: the canary's traffic flows.
    assert!(
        common::wait_until(Duration::from_secs(5), || received.load(Ordering::Relaxed)
            >= 20)
        .await
    );

    type Make =
        fn(SocketAddr) -> std::pin::Pin<Box<dyn std::future::Future<Output = Attack> + Send>>;
    // Smallest senders first: what a later kind frees, an earlier one cannot hide behind.
    let kinds: [(&str, Make, &str); 5] = [
        (
            "unread polling replies",
            |a| Box::pin(unread_polling_replies(a)),
            "tidings_outbound_buffered_bytes",
        ),
        (
            "websocket that never reads",
            |a| Box::pin(websocket_never_reads(a)),
            "tidings_outbound_buffered_bytes",
        ),
        (
            "stalled body",
            |a| Box::pin(stalled_body(a)),
            "tidings_outbound_buffered_bytes",
        ),
        (
            "pending binary",
            |a| Box::pin(pending_binary(a)),
            "tidings_pending_attachment_bytes",
        ),
        (
            "big auth",
            |a| Box::pin(big_auth(a)),
            "tidings_auth_retained_bytes",
        ),
    ];
    let release = Duration::from_millis(PING_INTERVAL_MS + PING_TIMEOUT_MS + 1000);
    for (name, make, gauge) in kinds {
        // What the canary itself holds: its auth, and its own few updates in flight.
        let (baseline, slack) = (server.gauge(gauge).await, 4096);
        let before = server.rss_kib();
        let attack = make(addr).await;
        let peak = server.rss_kib();
        let held = server.gauge(gauge).await;
        let growth = peak.saturating_sub(before) * 1024;
        let allowed = 3 * attack.sent as u64 + 64 * 1024 * CONNS as u64;
        eprintln!(
            "{name}: sent {} KiB, RSS {before} -> {peak} KiB (+{} KiB, allowed {} KiB), {gauge} {held}",
            attack.sent / 1024,
            growth / 1024,
            allowed / 1024
        );
        assert!(
            growth <= allowed,
            "{name}: RSS grew {growth} B for {} B sent",
            attack.sent
        );
        // They stop (the connections stay open, silent): all released within the heartbeat.
        let stopped = Instant::now();
        loop {
            let (sessions, gauge_now) = (server.sessions().await, server.gauge(gauge).await);
            if sessions == 1 && gauge_now <= baseline + slack {
                break;
            }
            assert!(
                stopped.elapsed() < release,
                "{name}: {sessions} sessions and {gauge} {gauge_now} after {:?}",
                stopped.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop(attack.held);
    }
    publisher.abort();
    Poster(addr).send("canary", "stop").await;
    let seen = bounded(Duration::from_secs(10), "the canary", canary)
        .await
        .unwrap();
    assert!(
        seen.len() > 100,
        "the canary received {} updates",
        seen.len()
    );
    for (i, n) in seen.iter().enumerate() {
        assert_eq!(*n, i as u64, "the canary missed or reordered an update");
    }
}

/// Posts updates through the ingestion API.
struct Poster(SocketAddr);

impl Poster {
    async fn send(&self, org: &str, content: &str) {
        let body = json!({
            "type": "message",
            "data": {"conversationId": "c", "messageId": content, "role": "user", "content": content},
        })
        .to_string();
        let auth = format!("Bearer {API_KEY}");
        let res = http(
            self.0,
            "POST",
            &format!("/api/v1/orgs/{org}/events"),
            &[
                ("Content-Type", "application/json"),
                ("Authorization", &auth),
            ],
            body.as_bytes(),
        )
        .await;
        assert_eq!(res.status, 200, "{}", res.text());
    }
}
