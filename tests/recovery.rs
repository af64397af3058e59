//! Connection state recovery under live traffic: a socket that comes back while a room it was in
//! keeps receiving broadcasts gets every broadcast exactly once, in order — those it missed
//! (replayed) and those sent while it reconnects (live), with no gap at the seam, even when a slow
//! async middleware holds the reconnect open for a while.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::Value;
use tidings::socketio::{Args, Config, RecoveryConfig, SocketIo, SocketRef};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const WAIT: Duration = Duration::from_secs(5);

async fn open(port: u16) -> Ws {
    let url = format!("ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket");
    let (mut ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("handshake in time")
        .expect("handshake");
    let open = next_text(&mut ws).await;
    assert!(open.starts_with("0{"), "{open}");
    ws
}

/// The next text frame, heartbeats answered.
async fn next_text(ws: &mut Ws) -> String {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time")
            .expect("stream open")
            .expect("no websocket error");
        match msg {
            Message::Text(t) if t == "2" => ws.send(Message::text("3")).await.unwrap(),
            Message::Text(t) => return t.to_string(),
            _ => {}
        }
    }
}

/// A `tick` event's number and recovery offset.
fn tick(text: &str) -> Option<(u64, String)> {
    let data: Value = serde_json::from_str(text.strip_prefix("42")?).ok()?;
    let items = data.as_array()?;
    (items.first()?.as_str()? == "tick").then_some(())?;
    Some((items.get(1)?.as_u64()?, items.get(2)?.as_str()?.to_owned()))
}

/// Checks that ticks come one after the other: none missing, none twice, none out of order.
#[derive(Default)]
struct Ticks {
    next: Option<u64>,
    received: usize,
}

impl Ticks {
    fn check(&mut self, text: &str) {
        if let Some((n, _)) = tick(text) {
            if let Some(next) = self.next {
                assert_eq!(n, next, "broadcast {n} where {next} was due");
            }
            self.next = Some(n + 1);
            self.received += 1;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovered_socket_gets_every_broadcast_once_and_in_order() {
    let mut config = Config::default();
    let mut recovery = RecoveryConfig::default();
    recovery.skip_middlewares = false;
    config.recovery = Some(recovery);
    let io = SocketIo::new(config);
    let ns = io.ns("/", |socket| {
        socket.on("join", |socket, args: Args, ack| {
            socket
                .join(args.get::<String>(0).unwrap_or_default())
                .expect("within the room limit");
            if let Some(ack) = ack {
                // A lost answer shows up as the test's missing ack.
                let _ = ack.send_one(true);
            }
        });
    });
    // A slow middleware keeps the reconnect open while broadcasts go on.
    ns.use_middleware(|_socket: SocketRef| async {
        tokio::time::sleep(Duration::from_millis(30)).await;
        Ok(())
    });
    let listener = tidings::server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn({
        let io = io.clone();
        async move {
            let _ = tidings::server::serve(listener, io, Default::default(), async {
                let _ = stopped.await;
            })
            .await;
        }
    });

    // A publisher that numbers its broadcasts to room "r", from another task, all along.
    let sent = Arc::new(AtomicU64::new(0));
    let publishing = Arc::new(AtomicBool::new(true));
    let publisher = tokio::spawn({
        let (io, sent, publishing) = (io.clone(), sent.clone(), publishing.clone());
        async move {
            while publishing.load(Ordering::Relaxed) {
                let n = sent.fetch_add(1, Ordering::Relaxed);
                io.to("r")
                    .emit("tick", n)
                    .expect("a number under a plain name");
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        }
    });

    let mut ticks = Ticks::default();

    // First connection: join "r", read some ticks, remember the last offset.
    let mut ws = open(port).await;
    ws.send(Message::text("40")).await.unwrap();
    let reply = next_text(&mut ws).await;
    let reply: Value = serde_json::from_str(reply.strip_prefix("40").unwrap()).unwrap();
    let pid = reply["pid"]
        .as_str()
        .expect("recovery on: a pid")
        .to_owned();
    ws.send(Message::text(r#"421["join","r"]"#)).await.unwrap();
    let mut offset = None;
    let mut acked = false;
    while !acked || offset.is_none() || ticks.received < 50 {
        let text = next_text(&mut ws).await;
        acked |= text == "431[true]";
        if let Some((_, o)) = tick(&text) {
            offset = Some(o);
        }
        ticks.check(&text);
    }

    for round in 0..5 {
        // Cut the transport without a close handshake, stay away a little, come back.
        drop(ws);
        tokio::time::sleep(Duration::from_millis(20 + 10 * round)).await;
        ws = open(port).await;
        let auth = serde_json::json!({ "pid": pid, "offset": offset.clone().unwrap() });
        ws.send(Message::text(format!("40{auth}"))).await.unwrap();
        // Everything from here — replayed ticks, the CONNECT reply, live ticks — in one order.
        let mut connected = false;
        let mut after = 0;
        while !connected || after < 100 {
            let text = next_text(&mut ws).await;
            if let Some(reply) = text.strip_prefix("40") {
                let reply: Value = serde_json::from_str(reply).unwrap();
                assert_eq!(
                    reply["pid"], pid,
                    "round {round}: recovered as the same session"
                );
                connected = true;
                continue;
            }
            if let Some((_, o)) = tick(&text) {
                offset = Some(o);
                if connected {
                    after += 1;
                }
            }
            ticks.check(&text);
        }
    }

    publishing.store(false, Ordering::Relaxed);
    publisher.await.unwrap();
    assert!(ticks.received > 500, "{} ticks received", ticks.received);
    drop(ws);
    let _ = stop.send(());
    tokio::time::timeout(WAIT, server)
        .await
        .expect("server stops in time")
        .unwrap();
}
