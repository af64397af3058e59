//! Tidings nodes sharing rooms and broadcasts through a real Redis server (started by the test on a
//! free loopback port, no persistence). A missing `redis-server` fails them (the project's test
//! command installs it); `TIDINGS_SKIP_REDIS=1` skips them on purpose, with a message.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::json;
use tidings::adapter::redis::streams::{StreamsAdapterFactory, StreamsConfig};
use tidings::adapter::redis::{RedisAdapterFactory, RedisConfig};
use tidings::socketio::{Args, Config, RecoveryConfig, SocketIo};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
const WAIT: Duration = Duration::from_secs(5);

struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start_on(port: u16) -> Option<Self> {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        // Wait until it accepts connections.
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(Self { child, port });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// The server for a test: `None` only when `TIDINGS_SKIP_REDIS=1` opts out; a `redis-server`
    /// that is missing or does not start fails the test.
    fn required() -> Option<Self> {
        if std::env::var("TIDINGS_SKIP_REDIS").is_ok_and(|v| v == "1") {
            eprintln!("TIDINGS_SKIP_REDIS=1: Redis tests skipped on purpose");
            return None;
        }
        Some(Self::start().expect(
            "redis-server did not start: install it (the test command does) or set TIDINGS_SKIP_REDIS=1",
        ))
    }

    fn start() -> Option<Self> {
        let port = TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        Self::start_on(port)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

struct TidingsNode {
    port: u16,
    io: SocketIo,
    /// The classic adapter's factory (`None` on the streams adapter).
    factory: Option<RedisAdapterFactory>,
    stop: Option<oneshot::Sender<()>>,
}

impl TidingsNode {
    async fn start(redis_url: &str) -> Self {
        let factory = RedisAdapterFactory::connect(RedisConfig::new(redis_url))
            .await
            .expect("redis connect");
        let mut config = Config::default();
        config.adapter = Some(std::sync::Arc::new(factory.clone()));
        Self::serve(config, Some(factory))
    }

    /// A node on the streams adapter, recovery on.
    async fn streams(redis_url: &str) -> Self {
        let factory = StreamsAdapterFactory::connect(StreamsConfig::new(redis_url))
            .await
            .expect("redis connect");
        let mut config = Config::default();
        config.adapter = Some(std::sync::Arc::new(factory));
        config.recovery = Some(RecoveryConfig::default());
        Self::serve(config, None)
    }

    fn serve(config: Config, factory: Option<RedisAdapterFactory>) -> Self {
        let io = SocketIo::new(config);
        let node = io.clone();
        io.ns("/", move |socket| {
            socket.on("join", |socket, args: Args, ack| {
                socket
                    .join(args.get::<String>(0).unwrap_or_default())
                    .expect("within the room limit");
                if let Some(ack) = ack {
                    // A lost answer shows up as the test's missing ack.
                    let _ = ack.send_one(true);
                }
            });
            let node = node.clone();
            socket.on("to", move |_, args: Args, ack| {
                let room: String = args.get(0).unwrap_or_default();
                let except: Option<String> = args.get(2).ok();
                let mut op = if room.is_empty() {
                    node.of("/").unwrap().broadcast()
                } else {
                    node.to(room.as_str())
                };
                if let Some(except) = except {
                    op = op.except(except.as_str());
                }
                if let Some(ack) = ack {
                    // A lost answer shows up as the test's missing ack.
                    let _ = ack.send_one(true);
                }
                op.emit("msg", args.values.get(1).cloned().unwrap_or_default())
                    .expect("a JSON value under a plain name");
            });
        });
        let listener = tidings::server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, stopped) = oneshot::channel::<()>();
        let served = io.clone();
        tokio::spawn(async move {
            let _ = tidings::server::serve(listener, served, Default::default(), async {
                let _ = stopped.await;
            })
            .await;
        });
        Self {
            port,
            io,
            factory,
            stop: Some(stop),
        }
    }

    async fn client(&self) -> Ws {
        self.connect("40").await.0
    }

    /// A client that connects to `/` with `connect` (a CONNECT packet); the CONNECT reply's data.
    async fn connect(&self, connect: &str) -> (Ws, serde_json::Value, Vec<String>) {
        let url = format!(
            "ws://127.0.0.1:{}/socket.io/?EIO=4&transport=websocket",
            self.port
        );
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        assert!(next(&mut ws).await.starts_with("0{"));
        ws.send(Message::text(connect.to_owned())).await.unwrap();
        // A resumed socket gets what it missed before the CONNECT reply.
        let mut before = Vec::new();
        loop {
            let frame = next(&mut ws).await;
            if let Some(reply) = frame.strip_prefix("40") {
                return (ws, serde_json::from_str(reply).unwrap(), before);
            }
            before.push(frame);
        }
    }
}

impl Drop for TidingsNode {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn next(ws: &mut Ws) -> String {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("timed out")
            .expect("ended")
            .expect("error");
        let text = msg.to_text().unwrap().to_owned();
        if text == "2" {
            ws.send(Message::text("3")).await.unwrap();
            continue;
        }
        return text;
    }
}

/// Nothing but heartbeats for `d`.
async fn nothing_for(ws: &mut Ws, d: Duration) {
    if let Ok(Some(Ok(msg))) = tokio::time::timeout(d, ws.next()).await {
        panic!("unexpected frame {msg:?}");
    }
}

async fn call(ws: &mut Ws, id: u32, args: serde_json::Value) {
    ws.send(Message::text(format!("42{id}{args}")))
        .await
        .unwrap();
    assert_eq!(next(ws).await, format!("43{id}[true]"));
}

/// Waits until every node counts `n` subscribers on the request channel (subscriptions are async).
async fn wait_for_members(redis: &Redis, n: usize) {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    for _ in 0..100 {
        let counts: Vec<(String, usize)> = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg("socket.io-request#/#")
            .query_async(&mut conn)
            .await
            .unwrap();
        if counts.first().is_some_and(|(_, c)| *c >= n) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nodes did not subscribe");
}

/// Whether every socket of `nodes` in `room` (there must be some) is also in `other` (`in_other`)
/// or not in it (`!in_other`).
fn room_members_are(nodes: &[&TidingsNode], room: &str, other: &str, in_other: bool) -> bool {
    let has = |rooms: &[tidings::rooms::Room], name: &str| rooms.iter().any(|r| &**r == name);
    let members: Vec<_> = nodes
        .iter()
        .flat_map(|node| node.io.of("/").map(|ns| ns.sockets()).unwrap_or_default())
        .map(|socket| socket.rooms())
        .filter(|rooms| has(rooms, room))
        .collect();
    !members.is_empty() && members.iter().all(|rooms| has(rooms, other) == in_other)
}

/// Waits (bounded) until `cond` holds: a remote room operation reaches the other nodes through
/// Redis, asynchronously.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..250 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting: {what}");
}

#[tokio::test]
async fn broadcasts_and_room_operations_cross_nodes() {
    let Some(redis) = Redis::required() else {
        return;
    };
    let a = TidingsNode::start(&redis.url()).await;
    let b = TidingsNode::start(&redis.url()).await;
    let c = TidingsNode::start(&redis.url()).await;
    let (mut a1, mut b1, mut b2, mut c1) = (
        a.client().await,
        b.client().await,
        b.client().await,
        c.client().await,
    );
    wait_for_members(&redis, 3).await;
    call(&mut b1, 1, json!(["join", "r1"])).await;
    call(&mut c1, 1, json!(["join", "r1"])).await;

    // A room broadcast from node A reaches the room's members on B and C, and nobody else.
    call(&mut a1, 2, json!(["to", "r1", "hello r1"])).await;
    assert_eq!(next(&mut b1).await, r#"42["msg","hello r1"]"#);
    assert_eq!(next(&mut c1).await, r#"42["msg","hello r1"]"#);
    nothing_for(&mut b2, Duration::from_millis(300)).await;
    nothing_for(&mut a1, Duration::from_millis(10)).await;

    // Namespace-wide, with an exception.
    call(&mut a1, 3, json!(["to", "", "all but r1", "r1"])).await;
    assert_eq!(next(&mut a1).await, r#"42["msg","all but r1"]"#);
    assert_eq!(next(&mut b2).await, r#"42["msg","all but r1"]"#);
    nothing_for(&mut b1, Duration::from_millis(300)).await;
    nothing_for(&mut c1, Duration::from_millis(10)).await;

    // Remote join: node A makes every socket of r1 (on B and C) join r2.
    a.io.to("r1").join("r2");
    eventually("r1's members on B and C joined r2", || {
        room_members_are(&[&b, &c], "r1", "r2", true)
    })
    .await;
    call(&mut a1, 4, json!(["to", "r2", "to r2"])).await;
    assert_eq!(next(&mut b1).await, r#"42["msg","to r2"]"#);
    assert_eq!(next(&mut c1).await, r#"42["msg","to r2"]"#);
    nothing_for(&mut b2, Duration::from_millis(300)).await;

    // Fetch sockets across the cluster: r2's members live on B and C.
    let (found, complete) = a.io.to("r2").fetch_sockets().await;
    assert!(complete);
    assert_eq!(found.len(), 2);
    assert!(found.iter().all(|s| s.rooms.contains(&"r2".to_owned())));

    // A broadcast with acks from A gathers the answers of r2's members on B and C.
    let asking = tokio::spawn({
        let io = a.io.clone();
        async move {
            io.to("r2")
                .timeout(Duration::from_secs(3))
                .emit_with_ack("question", Args::one("2+2?"))
                .await
        }
    });
    for (ws, name) in [(&mut b1, "b1"), (&mut c1, "c1")] {
        let q = next(ws).await;
        let rest = q.strip_prefix("42").unwrap();
        let id: String = rest.chars().take_while(char::is_ascii_digit).collect();
        assert_eq!(&rest[id.len()..], r#"["question","2+2?"]"#);
        ws.send(Message::text(format!(r#"43{id}["{name}: 4"]"#)))
            .await
            .unwrap();
    }
    let (answers, outcome) = asking.await.unwrap();
    assert!(outcome.is_ok(), "{outcome:?}");
    let mut answers: Vec<String> = answers
        .iter()
        .map(|a| a.get::<String>(0).unwrap())
        .collect();
    answers.sort();
    assert_eq!(answers, ["b1: 4", "c1: 4"]);

    // Server-side emits between nodes, with and without acks.
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
    for (node, name) in [(&b, "b"), (&c, "c")] {
        let seen = seen_tx.clone();
        node.io
            .of("/")
            .unwrap()
            .on_server_side_emit(move |event, args, ack| {
                let _ = seen.send(format!(
                    "{name}:{event}:{}",
                    args.get::<i64>(0).unwrap_or(-1)
                ));
                if let Some(ack) = ack {
                    ack.send(json!(format!("{name} got {event}")));
                }
            });
    }
    a.io.of("/")
        .unwrap()
        .server_side_emit("ping-nodes", Args::one(1));
    let mut seen = vec![
        tokio::time::timeout(WAIT, seen_rx.recv())
            .await
            .unwrap()
            .unwrap(),
        tokio::time::timeout(WAIT, seen_rx.recv())
            .await
            .unwrap()
            .unwrap(),
    ];
    seen.sort();
    assert_eq!(seen, ["b:ping-nodes:1", "c:ping-nodes:1"]);
    let (mut answers, complete) =
        a.io.of("/")
            .unwrap()
            .server_side_emit_with_ack("count", Args::one(2), Duration::from_secs(2))
            .await;
    assert!(complete);
    answers.sort_by_key(|v| v.to_string());
    assert_eq!(answers, [json!("b got count"), json!("c got count")]);

    // Remote leave: node A makes r1's members leave r3 after joining it; r3 broadcasts then reach nobody.
    a.io.to("r1").join("r3");
    eventually("r1's members joined r3", || {
        room_members_are(&[&b, &c], "r1", "r3", true)
    })
    .await;
    a.io.to("r1").leave("r3");
    eventually("r1's members left r3", || {
        room_members_are(&[&b, &c], "r1", "r3", false)
    })
    .await;
    call(&mut a1, 5, json!(["to", "r3", "to r3"])).await;
    nothing_for(&mut b1, Duration::from_millis(300)).await;
    nothing_for(&mut c1, Duration::from_millis(10)).await;

    // Remote disconnect.
    a.io.to("r2").disconnect(false);
    assert_eq!(next(&mut b1).await, "41");
    assert_eq!(next(&mut c1).await, "41");
    assert!(a.factory.as_ref().unwrap().metrics().published.get() > 0);
    assert!(b.factory.as_ref().unwrap().metrics().received.get() > 0);
    // The adapter's counters are in the server's metrics.
    let mut e = tidings::metrics::Exposition::new();
    b.io.write_metrics(&mut e);
    let text = e.finish();
    let received = text
        .lines()
        .find_map(|l| l.strip_prefix("tidings_redis_received_total "))
        .and_then(|n| n.parse::<u64>().ok());
    assert!(received.is_some_and(|n| n > 0), "{text}");
    for name in ["published", "publish_failures", "reconnects"] {
        assert!(
            text.contains(&format!("\ntidings_redis_{name}_total ")),
            "{name}"
        );
    }
}

#[tokio::test]
async fn survives_a_redis_restart() {
    let Some(mut redis) = Redis::required() else {
        return;
    };
    let port = redis.port;
    let a = TidingsNode::start(&redis.url()).await;
    let b = TidingsNode::start(&redis.url()).await;
    let (mut a1, mut b1) = (a.client().await, b.client().await);
    wait_for_members(&redis, 2).await;
    call(&mut b1, 1, json!(["join", "r"])).await;
    call(&mut a1, 2, json!(["to", "r", "before"])).await;
    assert_eq!(next(&mut b1).await, r#"42["msg","before"]"#);

    redis.stop();
    // Local traffic is not blocked while Redis is away.
    call(&mut a1, 3, json!(["to", "r", "lost"])).await;
    call(&mut a1, 4, json!(["join", "mine"])).await;
    drop(redis);
    let redis = Redis::start_on(port).expect("redis restarts");
    wait_for_members(&redis, 2).await;
    // Broadcasts flow again once both nodes are back.
    let mut delivered = false;
    for i in 0..40 {
        call(&mut a1, 10 + i, json!(["to", "r", "after"])).await;
        if let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_millis(250), b1.next()).await
        {
            let text = msg.to_text().unwrap().to_owned();
            if text == r#"42["msg","after"]"# {
                delivered = true;
                break;
            }
            if text == "2" {
                b1.send(Message::text("3")).await.unwrap();
            }
        }
    }
    assert!(delivered, "no broadcast crossed nodes after the restart");
    assert!(a.factory.as_ref().unwrap().metrics().publish_failures.get() >= 1);
}

#[tokio::test]
async fn recovery_is_off_with_the_classic_adapter() {
    let Some(redis) = Redis::required() else {
        return;
    };
    let factory = RedisAdapterFactory::connect(RedisConfig::new(redis.url()))
        .await
        .unwrap();
    let mut config = Config::default();
    config.adapter = Some(std::sync::Arc::new(factory.clone()));
    config.recovery = Some(RecoveryConfig::default());
    let node = TidingsNode::serve(config, Some(factory));
    // No private id: nothing of other nodes' broadcasts is kept, so no resume is offered.
    let (_ws, reply, _) = node.connect("40").await;
    assert!(
        reply.get("sid").is_some() && reply.get("pid").is_none(),
        "{reply}"
    );
}

#[tokio::test]
async fn a_socket_resumes_on_another_node_with_what_any_node_broadcast() {
    let Some(redis) = Redis::required() else {
        return;
    };
    let a = TidingsNode::streams(&redis.url()).await;
    let b = TidingsNode::streams(&redis.url()).await;
    let (mut on_a, reply, _) = a.connect("40").await;
    let (sid, pid) = (reply["sid"].clone(), reply["pid"].clone());
    assert!(
        pid.is_string(),
        "recovery on with the streams adapter: {reply}"
    );
    call(&mut on_a, 1, json!(["join", "r"])).await;
    let mut on_b = b.client().await;
    // Every broadcast carries its stream entry id as its offset, on every node.
    call(&mut on_b, 2, json!(["to", "r", 1])).await;
    let first: serde_json::Value = serde_json::from_str(&next(&mut on_a).await[2..]).unwrap();
    let offset = first[2].as_str().expect("an offset").to_owned();
    assert!(offset.split_once('-').is_some(), "an entry id: {offset}");
    drop(on_a);
    // Let node A see the drop and save the session, then broadcast from B.
    eventually("the drop", || a.io.of("/").unwrap().sockets().is_empty()).await;
    call(&mut on_b, 3, json!(["to", "r", 2])).await;
    call(&mut on_b, 4, json!(["to", "other", 0])).await;
    call(&mut on_b, 5, json!(["to", "r", 3])).await;
    let auth = json!({ "pid": pid, "offset": offset });
    let (mut back, reply, missed) = b.connect(&format!("40{auth}")).await;
    assert_eq!(reply["sid"], sid, "the same id, on the other node");
    let values: Vec<serde_json::Value> = missed
        .iter()
        .map(|m| serde_json::from_str::<serde_json::Value>(&m[2..]).unwrap()[1].clone())
        .collect();
    assert_eq!(
        values,
        [json!(2), json!(3)],
        "what it missed, in order: {missed:?}"
    );
    // And it is in its room again: the next broadcast reaches it, once.
    call(&mut on_b, 6, json!(["to", "r", 4])).await;
    let next_one: serde_json::Value = serde_json::from_str(&next(&mut back).await[2..]).unwrap();
    assert_eq!(next_one[1], 4);
    nothing_for(&mut back, Duration::from_millis(200)).await;
}
