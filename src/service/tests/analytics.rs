//! The analytics service failing closed and staying bounded, over raw clients on 127.0.0.1: the API
//! without a key, stats behind the key, metrics on their own listener, a stalled API body, joins past
//! the room limit, history pages, expiring and not-yet-valid tokens. One test runs the `tidings`
//! binary itself to check the flags.

#[path = "../../../tests/common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::SinkExt as _;
use serde_json::{Value, json};
use tidings::server;
use tidings::socketio::{Config, OnExceed, RateLimit, SocketIo};
use tidings_service::analytics::auth::{Claims, sign};
use tidings_service::analytics::{Analytics, AnalyticsConfig};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;

use common::{WAIT, Ws, bounded, http, read_response, ws_session, ws_text};

const SECRET: &str = "test-secret";
const KEY: &str = "test-key";

struct Server {
    addr: SocketAddr,
    analytics: Analytics,
    _stop: oneshot::Sender<()>,
}

fn serve_on<S: server::Service>(service: S) -> (SocketAddr, oneshot::Sender<()>) {
    let listener = server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server::serve(
        listener,
        service,
        server::ServeOptions::default(),
        async move {
            let _ = stopped.await;
        },
    ));
    (addr, stop)
}

async fn start(
    configure: impl FnOnce(&mut AnalyticsConfig),
    configure_io: impl FnOnce(&mut Config),
) -> Server {
    let mut io_config = Config::default();
    configure_io(&mut io_config);
    let io = SocketIo::new(io_config);
    let mut config = AnalyticsConfig::default();
    configure(&mut config);
    config.validate().unwrap();
    let analytics = Analytics::new(io, config);
    let (addr, stop) = serve_on(analytics.clone());
    Server {
        addr,
        analytics,
        _stop: stop,
    }
}

/// Production mode (a secret) with the API key.
fn production(c: &mut AnalyticsConfig) {
    c.auth_secret = Some(SECRET.to_owned());
    c.api_key = Some(KEY.to_owned());
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(orgs: &[&str], exp: u64, nbf: Option<u64>) -> String {
    sign(
        SECRET.as_bytes(),
        &Claims {
            sub: None,
            orgs: orgs.iter().map(|o| (*o).to_owned()).collect(),
            exp,
            nbf,
        },
    )
    .unwrap()
}

async fn post_events(addr: SocketAddr, org: &str, key: Option<&str>, body: &Value) -> common::Resp {
    let auth = key.map(|k| format!("Bearer {k}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(auth) = &auth {
        headers.push(("Authorization", auth.as_str()));
    }
    http(
        addr,
        "POST",
        &format!("/api/v1/orgs/{org}/events"),
        &headers,
        body.to_string().as_bytes(),
    )
    .await
}

fn message(n: u64) -> Value {
    json!({
        "type": "message",
        "timestamp": n,
        "data": { "conversationId": "c1", "messageId": format!("m{n}"), "role": "user", "content": format!("#{n}") },
    })
}

fn body_json(res: &common::Resp) -> Value {
    serde_json::from_slice(&res.body).unwrap_or_else(|_| panic!("not JSON: {}", res.text()))
}

/// A dashboard over WebSocket with `auth`; returns the CONNECT reply too.
async fn dashboard(addr: SocketAddr, auth: &Value) -> (Ws, String) {
    let (mut ws, _) = ws_session(addr, "/socket.io/").await;
    ws.send(Message::text(format!("40{auth}"))).await.unwrap();
    let reply = ws_text(&mut ws).await;
    (ws, reply)
}

async fn connected(addr: SocketAddr, auth: &Value) -> Ws {
    let (ws, reply) = dashboard(addr, auth).await;
    assert!(reply.starts_with("40{\"sid\""), "{reply}");
    ws
}

/// Emits `event` with `arg` and ack id `id`; returns the ack's first argument, skipping other
/// packets.
async fn call(ws: &mut Ws, id: u64, event: &str, arg: &Value) -> Value {
    ws.send(Message::text(format!("42{id}{}", json!([event, arg]))))
        .await
        .unwrap();
    let prefix = format!("43{id}");
    loop {
        let packet = ws_text(ws).await;
        if let Some(rest) = packet.strip_prefix(&prefix) {
            let mut values: Vec<Value> = serde_json::from_str(rest).unwrap();
            return values.remove(0);
        }
    }
}

// ===== fail closed =====

#[tokio::test]
async fn the_api_fails_closed_in_production_mode_without_a_key() {
    let closed = start(|c| c.auth_secret = Some(SECRET.to_owned()), |_| {}).await;
    let res = post_events(closed.addr, "acme", None, &message(1)).await;
    assert_eq!(res.status, 503, "{}", res.text());
    assert!(body_json(&res)["error"].as_str().is_some());
    // Any bearer is refused too: there is no key to match.
    let res = post_events(closed.addr, "acme", Some("guess"), &message(1)).await;
    assert_eq!(res.status, 503);
    let stats = http(closed.addr, "GET", "/api/v1/stats", &[], b"").await;
    assert_eq!(stats.status, 503, "{}", stats.text());
    assert!(!stats.text().contains("socketsPerOrg"));

    // Opened explicitly, it serves anyone.
    let open = start(
        |c| {
            c.auth_secret = Some(SECRET.to_owned());
            c.api_open = true;
        },
        |_| {},
    )
    .await;
    assert_eq!(
        post_events(open.addr, "acme", None, &message(1))
            .await
            .status,
        200
    );
    let stats = http(open.addr, "GET", "/api/v1/stats", &[], b"").await;
    assert_eq!(stats.status, 200);

    // Development mode (no secret) stays open without a key.
    let dev = start(|_| {}, |_| {}).await;
    assert_eq!(
        post_events(dev.addr, "acme", None, &message(1))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn stats_need_the_api_key_when_one_is_set() {
    let s = start(production, |_| {}).await;
    let anonymous = http(s.addr, "GET", "/api/v1/stats", &[], b"").await;
    assert_eq!(anonymous.status, 401, "{}", anonymous.text());
    assert!(!anonymous.text().contains("socketsPerOrg"));
    let wrong = http(
        s.addr,
        "GET",
        "/api/v1/stats",
        &[("Authorization", "Bearer nope")],
        b"",
    )
    .await;
    assert_eq!(wrong.status, 401);
    let auth = format!("Bearer {KEY}");
    let ok = http(
        s.addr,
        "GET",
        "/api/v1/stats",
        &[("Authorization", auth.as_str())],
        b"",
    )
    .await;
    assert_eq!(ok.status, 200);
    assert!(body_json(&ok)["socketsPerOrg"].is_object());
}

#[tokio::test]
async fn metrics_move_to_their_own_listener() {
    let s = start(
        |c| {
            production(c);
            c.serve_metrics = false;
        },
        |_| {},
    )
    .await;
    let main = http(s.addr, "GET", "/metrics", &[], b"").await;
    assert_eq!(main.status, 404);
    let (metrics_addr, _stop) = serve_on(s.analytics.metrics_service());
    let metrics = http(metrics_addr, "GET", "/metrics", &[], b"").await;
    assert_eq!(metrics.status, 200);
    assert!(metrics.text().contains("tidings_analytics_events_in_total"));
    assert!(
        metrics
            .text()
            .contains("tidings_analytics_tokens_expired_total")
    );
    // Nothing else is served there.
    let other = http(metrics_addr, "GET", "/api/v1/stats", &[], b"").await;
    assert_eq!(other.status, 404);
    let socket_io = http(
        metrics_addr,
        "GET",
        "/socket.io/?EIO=4&transport=polling",
        &[],
        b"",
    )
    .await;
    assert_eq!(socket_io.status, 404);
}

// ===== body timeout =====

#[tokio::test]
async fn an_api_body_that_never_finishes_gets_408() {
    let s = start(
        |c| {
            production(c);
            c.api_body_timeout = Duration::from_millis(300);
        },
        |_| {},
    )
    .await;
    let mut stream = TcpStream::connect(s.addr).await.unwrap();
    let head = format!(
        "POST /api/v1/orgs/acme/events HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"type\":",
        s.addr
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    // The rest of the body never comes; the server answers and closes by itself.
    let res = bounded(WAIT, "the 408", read_response(&mut stream))
        .await
        .expect("a response");
    assert_eq!(res.status, 408, "{}", res.text());
    assert!(body_json(&res)["error"].as_str().is_some());
    assert!(started.elapsed() < Duration::from_secs(3));
    // Nothing more is read from that connection.
    let mut rest = [0u8; 16];
    let n = bounded(WAIT, "the close", stream.read(&mut rest))
        .await
        .unwrap_or(0);
    assert_eq!(n, 0);
}

// ===== rooms =====

#[tokio::test]
async fn a_join_past_the_room_limit_says_it_failed_and_claims_nothing() {
    // Its own room plus one organisation (org room + three type rooms) fills five.
    let s = start(production, |c| c.max_rooms_per_socket = 5).await;
    let exp = now_secs() + 3600;
    let mut ws = connected(s.addr, &json!({ "token": token(&["a", "b"], exp, None) })).await;
    let a = call(
        &mut ws,
        1,
        "join:analytics",
        &json!({ "organizationId": "a" }),
    )
    .await;
    assert_eq!(a, json!({ "ok": true, "room": "org:a" }));
    let b = call(
        &mut ws,
        2,
        "join:analytics",
        &json!({ "organizationId": "b" }),
    )
    .await;
    assert_eq!(b, json!({ "ok": false, "error": "room limit reached" }));
    // The subscription does not claim `b`: no history of it, and nothing is delivered.
    let history = call(
        &mut ws,
        3,
        "request:history",
        &json!({ "organizationId": "b" }),
    )
    .await;
    assert_eq!(history, json!({ "ok": false, "error": "not joined" }));
    let res = post_events(s.addr, "b", Some(KEY), &message(now_ms())).await;
    assert_eq!(body_json(&res)["delivered"], 0);
    // Leaving `a` frees the rooms, and `b` can be joined.
    let left = call(
        &mut ws,
        4,
        "leave:analytics",
        &json!({ "organizationId": "a" }),
    )
    .await;
    assert_eq!(left, json!({ "ok": true }));
    let b = call(
        &mut ws,
        5,
        "join:analytics",
        &json!({ "organizationId": "b" }),
    )
    .await;
    assert_eq!(b, json!({ "ok": true, "room": "org:b" }));
}

#[tokio::test]
async fn a_subscription_past_the_room_limit_says_it_failed_and_is_taken_back() {
    let s = start(production, |c| c.max_rooms_per_socket = 7).await;
    let exp = now_secs() + 3600;
    let mut ws = connected(s.addr, &json!({ "token": token(&["a", "b"], exp, None) })).await;
    let types = call(&mut ws, 1, "unsubscribe:events", &json!(["metrics"])).await;
    assert_eq!(
        types,
        json!({ "ok": true, "types": ["message", "sentiment"] })
    );
    // Own room + 2 x (org room + two type rooms) = 7.
    for (id, org) in [(2, "a"), (3, "b")] {
        let joined = call(
            &mut ws,
            id,
            "join:analytics",
            &json!({ "organizationId": org }),
        )
        .await;
        assert_eq!(joined["ok"], true, "{org}");
    }
    let more = call(&mut ws, 4, "subscribe:events", &json!(["metrics"])).await;
    assert_eq!(more, json!({ "ok": false, "error": "room limit reached" }));
    // The subscription still says what is delivered.
    let types = call(&mut ws, 5, "subscribe:events", &json!([])).await;
    assert_eq!(
        types,
        json!({ "ok": true, "types": ["message", "sentiment"] })
    );
    let metrics = json!({ "type": "metrics", "data": { "totalMessages": 1 } });
    let res = post_events(s.addr, "a", Some(KEY), &metrics).await;
    assert_eq!(body_json(&res)["delivered"], 0);
    let res = post_events(s.addr, "a", Some(KEY), &message(now_ms())).await;
    assert_eq!(body_json(&res)["delivered"], 1);
}

fn now_ms() -> u64 {
    tidings_service::analytics::now_ms()
}

// ===== history =====

#[tokio::test]
async fn history_is_paginated_by_count_and_bytes() {
    let s = start(
        |c| {
            production(c);
            c.history_page_default = 3;
            c.history_page_max = 4;
        },
        |_| {},
    )
    .await;
    let base = now_ms() - 10_000;
    let batch: Vec<Value> = (1..=7).map(|i| message(base + i)).collect();
    let res = post_events(s.addr, "acme", Some(KEY), &Value::Array(batch)).await;
    assert_eq!(res.status, 200, "{}", res.text());

    let exp = now_secs() + 3600;
    let mut ws = connected(s.addr, &json!({ "token": token(&["acme"], exp, None) })).await;
    call(
        &mut ws,
        1,
        "join:analytics",
        &json!({ "organizationId": "acme" }),
    )
    .await;
    let stamps = |reply: &Value| -> Vec<u64> {
        reply["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["timestamp"].as_u64().unwrap() - base)
            .collect()
    };
    // The default page.
    let first = call(&mut ws, 2, "request:history", &json!({ "since": 0 })).await;
    assert_eq!(first["ok"], true);
    assert_eq!(stamps(&first), [1, 2, 3]);
    assert_eq!(first["more"], true);
    // A limit above the maximum is capped.
    let second = call(
        &mut ws,
        3,
        "request:history",
        &json!({ "since": base + 3, "limit": 1000, "organizationId": "acme" }),
    )
    .await;
    assert_eq!(stamps(&second), [4, 5, 6, 7]);
    assert_eq!(second["more"], false);
    let none = call(&mut ws, 4, "request:history", &json!({ "since": base + 7 })).await;
    assert_eq!(none, json!({ "ok": true, "events": [], "more": false }));
}

#[tokio::test]
async fn a_history_page_is_bounded_in_bytes() {
    let s = start(
        |c| {
            production(c);
            c.history_page_bytes = 1024;
        },
        |_| {},
    )
    .await;
    let base = now_ms() - 10_000;
    let batch: Vec<Value> = (1..=20)
        .map(|i| {
            let mut m = message(base + i);
            m["data"]["content"] = Value::from("x".repeat(300));
            m
        })
        .collect();
    assert_eq!(
        post_events(s.addr, "acme", Some(KEY), &Value::Array(batch))
            .await
            .status,
        200
    );
    let exp = now_secs() + 3600;
    let mut ws = connected(s.addr, &json!({ "token": token(&["acme"], exp, None) })).await;
    call(
        &mut ws,
        1,
        "join:analytics",
        &json!({ "organizationId": "acme" }),
    )
    .await;
    let page = call(&mut ws, 2, "request:history", &json!({ "since": 0 })).await;
    let events = page["events"].as_array().unwrap();
    assert!(!events.is_empty() && events.len() < 5, "{}", events.len());
    assert!(page.to_string().len() < 2048);
    assert_eq!(page["more"], true);
}

#[tokio::test]
async fn history_requests_count_against_the_event_rate_limit() {
    let s = start(production, |c| {
        c.event_rate_limit = Some(RateLimit {
            per_second: 2.0,
            burst: 3,
            on_exceed: OnExceed::Drop,
        });
    })
    .await;
    let exp = now_secs() + 3600;
    let mut ws = connected(s.addr, &json!({ "token": token(&["acme"], exp, None) })).await;
    call(
        &mut ws,
        1,
        "join:analytics",
        &json!({ "organizationId": "acme" }),
    )
    .await;
    // Two tokens are left for six requests sent at once.
    for id in 2..=7 {
        let packet = format!("42{id}{}", json!(["request:history", { "since": 0 }]));
        ws.send(Message::text(packet)).await.unwrap();
    }
    let io = s.analytics.io().clone();
    assert!(common::wait_until(WAIT, || io.rate_limited_events() >= 3).await);
    // Once the bucket refills, a last request is answered; every answer before it came in order.
    let mut acked = Vec::new();
    let mut sent = 0u64;
    bounded(WAIT, "the last ack", async {
        loop {
            sent += 1;
            ws.send(Message::text(format!(
                "429{}",
                json!(["request:history", { "since": 0 }])
            )))
            .await
            .unwrap();
            let deadline = tokio::time::Instant::now() + Duration::from_millis(600);
            while let Ok(packet) = tokio::time::timeout_at(deadline, ws_text(&mut ws)).await {
                if packet.starts_with("439") {
                    return;
                }
                if let Some(rest) = packet.strip_prefix("43") {
                    acked.push(rest.chars().next().unwrap());
                }
            }
        }
    })
    .await;
    acked.dedup();
    // The last request's earlier tries were dropped too.
    let dropped = io.rate_limited_events() - (sent - 1);
    assert!(acked.len() <= 3, "answered {acked:?}");
    assert_eq!(
        acked.len() as u64 + dropped,
        6,
        "answered {acked:?}, dropped {dropped}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_history_requests_does_not_delay_another_dashboard() {
    let s = start(production, |_| {}).await;
    // A full history for the flooded organisation: 1 000 updates of about 600 bytes.
    let base = now_ms() - 60_000;
    for chunk in 0..4u64 {
        let batch: Vec<Value> = (0..250)
            .map(|i| {
                let mut m = message(base + chunk * 250 + i);
                m["data"]["content"] = Value::from("x".repeat(500));
                m
            })
            .collect();
        let res = post_events(s.addr, "big", Some(KEY), &Value::Array(batch)).await;
        assert_eq!(res.status, 200, "{}", res.text());
    }
    let exp = now_secs() + 3600;
    let mut flooders = Vec::new();
    for _ in 0..2 {
        let mut ws = connected(s.addr, &json!({ "token": token(&["big"], exp, None) })).await;
        call(
            &mut ws,
            1,
            "join:analytics",
            &json!({ "organizationId": "big" }),
        )
        .await;
        flooders.push(tokio::spawn(async move {
            // 100 requests for the largest page, as fast as the answers are read.
            for id in 2..102u64 {
                let page = call(
                    &mut ws,
                    id,
                    "request:history",
                    &json!({ "since": 0, "limit": 100_000 }),
                )
                .await;
                assert_eq!(page["ok"], true);
                assert_eq!(page["more"], true);
            }
        }));
    }
    let mut canary = connected(s.addr, &json!({ "token": token(&["canary"], exp, None) })).await;
    call(
        &mut canary,
        1,
        "join:analytics",
        &json!({ "organizationId": "canary" }),
    )
    .await;
    // Live updates to the canary while the flood runs: each is posted, then awaited.
    let mut worst = Duration::ZERO;
    let mut rounds = 0;
    while rounds < 20 || (!flooders.iter().all(|f| f.is_finished()) && rounds < 2000) {
        rounds += 1;
        let posted = Instant::now();
        let res = post_events(s.addr, "canary", Some(KEY), &message(now_ms())).await;
        assert_eq!(body_json(&res)["delivered"], 1);
        loop {
            let packet = ws_text(&mut canary).await;
            if packet.starts_with("42[\"analytics:update\"") {
                break;
            }
        }
        worst = worst.max(posted.elapsed());
    }
    for f in flooders {
        bounded(Duration::from_secs(60), "the flooders", f)
            .await
            .unwrap();
    }
    assert!(
        worst < Duration::from_secs(1),
        "a live update took {worst:?} during the flood ({rounds} rounds)"
    );
}

// ===== tokens =====

#[tokio::test]
async fn a_socket_is_disconnected_when_its_token_expires() {
    let s = start(production, |_| {}).await;
    let exp = now_secs() + 2;
    let mut ws = connected(s.addr, &json!({ "token": token(&["acme"], exp, None) })).await;
    let joined = call(
        &mut ws,
        1,
        "join:analytics",
        &json!({ "organizationId": "acme" }),
    )
    .await;
    assert_eq!(joined["ok"], true);
    // The reason, then the server-side disconnect (the client's "io server disconnect").
    let packets = bounded(Duration::from_secs(6), "the expiry", async {
        let mut seen = Vec::new();
        loop {
            let packet = ws_text(&mut ws).await;
            let done = packet == "41";
            seen.push(packet);
            if done {
                return seen;
            }
        }
    })
    .await;
    assert!(
        now_secs() >= exp,
        "disconnected before the token expired ({packets:?})"
    );
    let error = packets
        .iter()
        .position(|p| p.starts_with("42[\"analytics:error\""))
        .expect("an analytics:error event");
    let payload: Value = serde_json::from_str(&packets[error][2..]).unwrap();
    assert_eq!(payload[1]["code"], "token_expired");
    assert_eq!(packets.last().unwrap(), "41");
    assert!(
        common::wait_until(WAIT, || s
            .analytics
            .metrics_text()
            .contains("tidings_analytics_tokens_expired_total 1"))
        .await
    );
    // A long-lived socket next to it is untouched, and the expired one is no longer watched.
    let mut other = connected(
        s.addr,
        &json!({ "token": token(&["acme"], now_secs() + 3600, None) }),
    )
    .await;
    let ok = call(
        &mut other,
        1,
        "join:analytics",
        &json!({ "organizationId": "acme" }),
    )
    .await;
    assert_eq!(ok["ok"], true);
    assert!(
        s.analytics
            .metrics_text()
            .contains("tidings_analytics_token_deadlines 1")
    );
}

#[tokio::test]
async fn a_token_before_its_nbf_is_refused() {
    let s = start(production, |_| {}).await;
    let early = token(&["acme"], now_secs() + 3600, Some(now_secs() + 600));
    let (code, message) = refusal(s.addr, &json!({ "token": early })).await;
    assert_eq!(code, "token_invalid");
    assert!(message.contains("not valid yet"), "{message}");
    let ready = token(&["acme"], now_secs() + 3600, Some(now_secs() - 1));
    connected(s.addr, &json!({ "token": ready })).await;
}

/// The CONNECT_ERROR of a refused dashboard: its `data.code` and its message.
async fn refusal(addr: SocketAddr, auth: &Value) -> (String, String) {
    let (_ws, reply) = dashboard(addr, auth).await;
    let body: Value = serde_json::from_str(reply.strip_prefix("44").expect("a CONNECT_ERROR"))
        .unwrap_or_else(|_| panic!("{reply}"));
    let code = body["data"]["code"].as_str().unwrap_or_default().to_owned();
    (
        code,
        body["message"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test]
async fn each_refusal_says_why_with_a_code() {
    let s = start(production, |_| {}).await;
    let forged = sign(
        b"another secret",
        &Claims {
            sub: None,
            orgs: vec!["acme".into()],
            exp: now_secs() + 60,
            nbf: None,
        },
    )
    .unwrap();
    let cases = [
        (json!({}), "token_missing", "no token"),
        (json!({ "token": 42 }), "token_missing", "no token"),
        (
            json!({ "token": "garbage" }),
            "token_invalid",
            "well-formed",
        ),
        (json!({ "token": forged }), "token_invalid", "secret"),
        (
            json!({ "token": token(&["acme"], now_secs() - 10, None) }),
            "token_expired",
            "expired",
        ),
        (
            json!({ "token": token(&["acme"], now_secs() + 60, None), "organizationId": "globex" }),
            "org_forbidden",
            "globex",
        ),
    ];
    for (auth, want_code, want_words) in cases {
        let (code, message) = refusal(s.addr, &auth).await;
        assert_eq!(code, want_code, "{auth}");
        assert!(message.contains(want_words), "{auth}: {message}");
    }
    // A granted organisation named at connect is fine.
    let auth =
        json!({ "token": token(&["acme"], now_secs() + 60, None), "organizationId": "acme" });
    connected(s.addr, &auth).await;
}
// ===== the binary =====

/// Runs the `tidings` binary with `args` and `env`; returns it with its main and metrics addresses.
async fn run_binary(
    args: &[&str],
    env: &[(&str, &str)],
) -> (tokio::process::Child, SocketAddr, Option<SocketAddr>) {
    use tokio::io::AsyncBufReadExt as _;
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_tidings"));
    cmd.args(args)
        .env_clear()
        .env("TIDINGS_PORT", "0")
        .env("TIDINGS_DEMO", "false")
        .env("RUST_LOG", "error")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("the tidings binary starts");
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let (mut main, mut metrics) = (None, None);
    bounded(WAIT, "the binary's addresses", async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(addr) = line.strip_prefix("metrics on ") {
                metrics = Some(addr.parse().unwrap());
            }
            if let Some(addr) = line.strip_prefix("listening on ") {
                main = Some(addr.parse().unwrap());
                break;
            }
        }
    })
    .await;
    // Keep reading, so that the binary never writes to a closed pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, main.expect("a listening line"), metrics)
}

#[tokio::test]
async fn the_binary_fails_closed_and_serves_metrics_apart() {
    let (mut child, addr, metrics) = run_binary(
        &["--metrics-addr", "127.0.0.1:0"],
        &[("TIDINGS_AUTH_SECRET", SECRET)],
    )
    .await;
    let res = post_events(addr, "acme", None, &message(now_ms())).await;
    assert_eq!(res.status, 503, "{}", res.text());
    assert_eq!(
        http(addr, "GET", "/api/v1/stats", &[], b"").await.status,
        503
    );
    assert_eq!(http(addr, "GET", "/metrics", &[], b"").await.status, 404);
    let metrics = metrics.expect("a metrics line");
    let res = http(metrics, "GET", "/metrics", &[], b"").await;
    assert_eq!(res.status, 200);
    assert!(res.text().contains("tidings_analytics_events_in_total 0"));
    child.kill().await.unwrap();

    // `--api-open` (here through its variable) opens it; metrics are back on the main port.
    let (mut child, addr, _) = run_binary(
        &[],
        &[
            ("TIDINGS_AUTH_SECRET", SECRET),
            ("TIDINGS_API_OPEN", "true"),
        ],
    )
    .await;
    let res = post_events(addr, "acme", None, &message(now_ms())).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(http(addr, "GET", "/metrics", &[], b"").await.status, 200);
    child.kill().await.unwrap();
}

/// With `--log-format json` every line the binary prints is a JSON object, the address line too
/// (its address in `fields.addr`); `--host localhost` resolves; `/metrics` carries the process
/// figures and the build; the seed's event shape (an ISO `timestamp` inside `data`) is accepted.
#[tokio::test]
async fn the_binary_logs_only_json_and_takes_the_seeds_events() {
    use tokio::io::AsyncBufReadExt as _;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["--log-format", "json", "--host", "localhost"])
        .env_clear()
        .env("TIDINGS_PORT", "0")
        .env("TIDINGS_DEMO", "false")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the tidings binary starts");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let addr: SocketAddr = bounded(WAIT, "the JSON address line", async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let value: Value = serde_json::from_str(&line)
                .unwrap_or_else(|_| panic!("a line that is not JSON: {line}"));
            seen.push(line);
            if value["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("listening on "))
            {
                return value["fields"]["addr"].as_str().unwrap().parse().unwrap();
            }
        }
        panic!("no listening line in {seen:?}");
    })
    .await;
    assert!(addr.ip().is_loopback(), "{addr}");
    assert!(
        seen.len() > 1,
        "the start-up settings are logged too: {seen:?}"
    );
    let later = tokio::spawn(async move {
        let mut rest = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            rest.push(line);
        }
        rest
    });

    let mut event = message(0);
    event.as_object_mut().unwrap().remove("timestamp");
    event["data"]["timestamp"] = json!("2026-12-03T11:07:34.123Z");
    let res = post_events(addr, "acme", None, &event).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(
        body_json(&res),
        json!({ "accepted": 1, "delivered": 0, "cluster": false })
    );
    let res = http(addr, "GET", "/metrics", &[], b"").await;
    let text = res.text();
    for name in [
        "tidings_build_info{version=\"",
        "process_resident_memory_bytes ",
        "process_open_fds ",
        "process_cpu_seconds_total ",
        "process_start_time_seconds ",
    ] {
        assert!(text.contains(name), "{name} missing");
    }
    child.kill().await.unwrap();
    for line in later.await.unwrap() {
        assert!(
            serde_json::from_str::<Value>(&line).is_ok(),
            "a line that is not JSON: {line}"
        );
    }
}

#[tokio::test]
async fn the_binary_refuses_a_port_that_is_no_number() {
    for (var, value) in [("PORT", "abc"), ("TIDINGS_PORT", "abc")] {
        // A binary that took the value would serve until killed: the bound makes that a failure.
        let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_tidings"))
            .env_clear()
            .env(var, value)
            .env("TIDINGS_DEMO", "false")
            .kill_on_drop(true)
            .output();
        let out = bounded(WAIT, "the binary to refuse the port", run)
            .await
            .unwrap();
        assert!(!out.status.success(), "{var}={value} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("abc"), "{var}: {err}");
    }
}
