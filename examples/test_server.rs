//! The server the conformance tests in `protocol-tests/` drive with real clients.
//!
//! Listens on 127.0.0.1 at `PORT` (0 = a free port) and prints `listening on 127.0.0.1:<port>`.
//! Timings can be shortened for tests with `PING_INTERVAL_MS`, `PING_TIMEOUT_MS` and
//! `CONNECT_TIMEOUT_MS`. `RECOVERY_WINDOW_MS` turns connection state recovery on with that window.
//! `REDIS_URL` joins a Redis cluster (the Node redis-adapter's wire format; with
//! `REDIS_ADAPTER=streams`, the Node redis-streams-adapter's, recovery shared; with
//! `REDIS_ADAPTER=sharded`, the sharded adapter's on the Redis Cluster `REDIS_URL` is a node of).
//! `PARSER=msgpack` speaks
//! the npm `socket.io-msgpack-parser` instead of the default JSON parser (`PARSER=json`).
//! `ALLOW_EIO3=1` also accepts socket.io-client 2.x (Engine.IO v3). `MAX_PACKETS_PER_POLL` sets the
//! most packets one polling response carries (default 16).
//!
//! Namespaces and events:
//! - `/`: emits `welcome` `{id}` on connect; see the handlers below for each test event
//!   (`burst` `n` emits `burst` `0..n` to the caller, then acks `n`).
//! - `/admin`: a middleware requires `auth.token == "secret"`, otherwise CONNECT_ERROR
//!   `{"message":"unauthorized","data":{"reason":"bad token"}}`.
//! - dynamic namespaces matching `/dyn-*`: emit `hello` `{nsp}` on connect.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tidings::socketio::{AckSender, Args, Config, ConnectError, SendError, SocketIo, SocketRef};

fn env_ms(name: &str) -> Option<Duration> {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
}

#[derive(Deserialize)]
struct RoomEmit {
    room: String,
    #[serde(default)]
    except: Option<String>,
    event: String,
    data: Value,
}

/// `{room, target}`: the sockets in `room` join or leave `target`.
#[derive(Deserialize)]
struct RoomTarget {
    room: String,
    target: String,
}

#[derive(Deserialize)]
struct MultiEmit {
    rooms: Vec<String>,
    event: String,
    data: Value,
}

#[derive(Deserialize)]
struct AckRequest {
    event: String,
    data: Value,
    timeout_ms: u64,
    #[serde(default)]
    room: Option<String>,
}

/// Answers a test's ack, if it asked for one. A client gone meanwhile gets nothing (logged at debug).
fn reply<T: Serialize>(ack: Option<AckSender>, value: T) {
    if let Some(Err(err)) = ack.map(|ack| ack.send_one(value)) {
        tracing::debug!(%err, "reply not sent");
    }
}

/// Logs an emit the client will not get (gone meanwhile): the tests see the missing event.
fn notify<T>(sent: Result<T, SendError>, event: &str) {
    if let Err(err) = sent {
        tracing::debug!(event, %err, "emit not sent");
    }
}

/// A broadcast's outcome for a test: the number of sockets it reached, or why it was refused.
fn count(n: Result<usize, SendError>) -> Value {
    match n {
        Ok(n) => json!(n),
        Err(err) => json!({ "error": err.to_string() }),
    }
}

/// Reasons of every socket that disconnected, in order, for tests to read back.
type ReasonLog = Arc<Mutex<Vec<Value>>>;

fn register_root_handlers(io: &SocketIo, socket: &SocketRef, reasons: &ReasonLog) {
    // The client has just connected: a refusal here means it is gone already (logged at debug).
    notify(
        socket.emit(
            "welcome",
            json!({ "id": socket.id(), "recovered": socket.recovered() }),
        ),
        "welcome",
    );

    socket.on("echo", |socket, args: Args, _| {
        notify(socket.emit_args("echo", args), "echo");
    });
    socket.on("echo-ack", |_, args: Args, ack| {
        if let Some(Err(err)) = ack.map(|ack| ack.send(args)) {
            tracing::debug!(%err, "echo-ack not sent");
        }
    });
    socket.on("add", |_, args: Args, ack| {
        let sum = args.parse::<(i64, i64)>().map(|(a, b)| a + b);
        match sum {
            Ok(sum) => reply(ack, sum),
            Err(err) => reply(ack, json!({ "error": err.to_string() })),
        }
    });
    socket.on("join", |socket, args: Args, ack| {
        let rooms: Vec<String> = match args.get::<Value>(0) {
            Ok(Value::Array(_)) => args.get(0).unwrap_or_default(),
            Ok(Value::String(room)) => vec![room],
            _ => Vec::new(),
        };
        // Acked with whether the rooms were joined (false past `max_rooms_per_socket`).
        reply(ack, socket.join(rooms).is_ok());
    });
    socket.on("leave", |socket, args: Args, ack| {
        if let Ok(room) = args.get::<String>(0) {
            socket.leave(&room);
        }
        reply(ack, true);
    });
    socket.on("rooms", |socket, _, ack| {
        let mut rooms: Vec<String> = socket.rooms().iter().map(|r| r.to_string()).collect();
        rooms.sort();
        reply(ack, rooms);
    });
    let io2 = io.clone();
    socket.on("to-room", move |socket, args: Args, ack| {
        let Ok(req) = args.get::<RoomEmit>(0) else {
            return;
        };
        // From the server (reaches the sender too, if it is in the room) unless `except` is given.
        let mut op = io2.to(req.room.as_str());
        if let Some(except) = req.except {
            op = op.except(except.as_str());
        }
        // Binary in `data` travels on: its placeholders keep pointing at the same attachments.
        let n = op.emit_args(
            &req.event,
            Args {
                values: vec![req.data],
                binary: args.binary.clone(),
            },
        );
        let _ = socket;
        reply(ack, count(n));
    });
    socket.on("socket-to-room", |socket, args: Args, ack| {
        let Ok(req) = args.get::<RoomEmit>(0) else {
            return;
        };
        let n = socket.to(req.room.as_str()).emit(&req.event, req.data);
        reply(ack, count(n));
    });
    let io2 = io.clone();
    socket.on("multi-room", move |_, args: Args, ack| {
        let Ok(req) = args.get::<MultiEmit>(0) else {
            return;
        };
        let n = io2.to(req.rooms).emit(&req.event, req.data);
        reply(ack, count(n));
    });
    socket.on("broadcast", |socket, args: Args, ack| {
        let n = socket.broadcast().emit_args("broadcast", args);
        reply(ack, count(n));
    });
    socket.on("volatile", |socket, args: Args, _| {
        notify(
            socket
                .ns()
                .broadcast()
                .volatile()
                .emit_args("volatile", args),
            "volatile",
        );
    });
    // The server asks this socket for an ack and reports what came back.
    socket.on("server-ack", |socket, args: Args, ack| {
        let Ok(req) = args.get::<AckRequest>(0) else {
            return;
        };
        let socket = socket.clone();
        tokio::spawn(async move {
            let result = socket
                .emit_with_ack(
                    &req.event,
                    Args::one(req.data),
                    Duration::from_millis(req.timeout_ms),
                )
                .await;
            let report = match result {
                Ok(answer) => json!({ "ok": true, "answer": answer.values }),
                Err(err) => json!({ "ok": false, "error": err.to_string() }),
            };
            reply(ack, report);
        });
    });
    let io2 = io.clone();
    socket.on("broadcast-with-ack", move |_, args: Args, ack| {
        let Ok(req) = args.get::<AckRequest>(0) else {
            return;
        };
        let op = io2
            .to(req.room.unwrap_or_default().as_str())
            .timeout(Duration::from_millis(req.timeout_ms));
        tokio::spawn(async move {
            let (answers, outcome) = op.emit_with_ack(&req.event, Args::one(req.data)).await;
            let mut answers: Vec<Value> = answers.into_iter().flat_map(|a| a.values).collect();
            answers.sort_by_key(|v| v.to_string());
            reply(
                ack,
                json!({ "complete": outcome.is_ok(), "answers": answers }),
            );
        });
    });
    // Room operations on every node of a cluster: `{room, target}` makes the sockets in `room` join or
    // leave `target`, or disconnects them.
    let io2 = io.clone();
    socket.on("sockets-join", move |_, args: Args, ack| {
        if let Ok(req) = args.get::<RoomTarget>(0) {
            io2.to(req.room.as_str()).join(req.target.as_str());
        }
        reply(ack, true);
    });
    let io2 = io.clone();
    socket.on("sockets-leave", move |_, args: Args, ack| {
        if let Ok(req) = args.get::<RoomTarget>(0) {
            io2.to(req.room.as_str()).leave(req.target.as_str());
        }
        reply(ack, true);
    });
    let io2 = io.clone();
    socket.on("disconnect-sockets", move |_, args: Args, ack| {
        let room: String = args.get(0).unwrap_or_default();
        reply(ack, true);
        io2.to(room.as_str()).disconnect(false);
    });
    // A server-side emit to the other nodes, acked with their answers.
    let io2 = io.clone();
    socket.on("server-side-ack", move |_, args: Args, ack| {
        let event: String = args.get(0).unwrap_or_default();
        let io2 = io2.clone();
        tokio::spawn(async move {
            let Some(root) = io2.of("/") else { return };
            let (mut answers, complete) = root
                .server_side_emit_with_ack(&event, Args::new(), Duration::from_secs(3))
                .await;
            answers.sort_by_key(|v| v.to_string());
            reply(ack, json!({ "answers": answers, "complete": complete }));
        });
    });
    // The ids of the sockets in a room, on every node of a cluster.
    let io2 = io.clone();
    socket.on("fetch-sockets", move |_, args: Args, ack| {
        let room: String = args.get(0).unwrap_or_default();
        let op = io2.to(room.as_str());
        tokio::spawn(async move {
            let (sockets, complete) = op.fetch_sockets().await;
            let mut ids: Vec<String> = sockets.into_iter().map(|s| s.id).collect();
            ids.sort();
            reply(ack, json!({ "ids": ids, "complete": complete }));
        });
    });
    socket.on("handshake", |socket, _, ack| {
        // As the reference serialises `socket.handshake`.
        reply(ack, socket.handshake().to_reference_json());
    });
    // A burst for the transport tests: emits `burst` with 0, 1, ..., n-1 to this socket at once
    // (n capped at 10 000), then acks `n`, so the ack arrives after every burst event.
    socket.on("burst", |socket, args: Args, ack| {
        let n = args.get::<u64>(0).unwrap_or(0).min(10_000);
        for i in 0..n {
            notify(socket.emit("burst", i), "burst");
        }
        reply(ack, n);
    });
    socket.on("disconnect-me", |socket, _, _| socket.disconnect(false));
    socket.on("close-me", |socket, _, _| socket.disconnect(true));
    let log = reasons.clone();
    socket.on("disconnect-reasons", move |_, _, ack| {
        let list = log.lock().unwrap().clone();
        reply(ack, list);
    });
    let log = reasons.clone();
    socket.on_disconnect(move |socket, reason| {
        log.lock()
            .unwrap()
            .push(json!({ "id": socket.id(), "reason": reason.as_str() }));
    });
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000);
    let mut config = Config::default();
    if let Some(d) = env_ms("PING_INTERVAL_MS") {
        config.engine.ping_interval = d;
    }
    if let Some(d) = env_ms("PING_TIMEOUT_MS") {
        config.engine.ping_timeout = d;
    }
    if let Some(n) = std::env::var("MAX_PACKETS_PER_POLL")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        config.engine.max_packets_per_poll = n;
    }
    // socket.io-client 2.x (Engine.IO v3) too.
    config.engine.allow_eio3 = std::env::var("ALLOW_EIO3").is_ok_and(|v| v == "1");
    if let Some(d) = env_ms("CONNECT_TIMEOUT_MS") {
        config.connect_timeout = d;
    }
    if let Ok(name) = std::env::var("PARSER") {
        config.parser = tidings::socketio::parser_named(&name).ok_or_else(|| {
            std::io::Error::other(format!("PARSER={name:?}: expected json or msgpack"))
        })?;
    }
    if let Ok(url) = std::env::var("REDIS_URL") {
        let adapter = std::env::var("REDIS_ADAPTER").unwrap_or_default();
        if adapter == "sharded" {
            let factory = tidings::adapter::redis::sharded::ShardedAdapterFactory::connect(
                tidings::adapter::redis::sharded::ShardedConfig::new([url]),
            )
            .await
            .map_err(std::io::Error::other)?;
            config.adapter = Some(Arc::new(factory));
        } else if adapter == "streams" {
            let factory = tidings::adapter::redis::streams::StreamsAdapterFactory::connect(
                tidings::adapter::redis::streams::StreamsConfig::new(url),
            )
            .await
            .map_err(std::io::Error::other)?;
            config.adapter = Some(Arc::new(factory));
        } else {
            let factory = tidings::adapter::redis::RedisAdapterFactory::connect(
                tidings::adapter::redis::RedisConfig::new(url),
            )
            .await
            .map_err(std::io::Error::other)?;
            config.adapter = Some(Arc::new(factory));
        }
    }
    if let Some(window) = env_ms("RECOVERY_WINDOW_MS") {
        let mut recovery = tidings::socketio::RecoveryConfig::default();
        recovery.max_disconnection_duration = window;
        config.recovery = Some(recovery);
    }
    let io = SocketIo::new(config);
    let reasons: ReasonLog = Arc::default();

    let io2 = io.clone();
    io.ns("/", move |socket| {
        register_root_handlers(&io2, &socket, &reasons)
    });

    // Other cluster nodes' server-side emits are answered with who we are.
    if let Some(root) = io.of("/") {
        root.on_server_side_emit(|event, _, ack| {
            if let Some(ack) = ack {
                ack.send(json!(format!("tidings heard {event}")));
            }
        });
    }

    let admin = io.ns("/admin", |socket| {
        notify(
            socket.emit("admin-welcome", json!({ "id": socket.id() })),
            "admin-welcome",
        );
        socket.on("echo", |socket, args: Args, _| {
            notify(socket.emit_args("echo", args), "echo");
        });
    });
    admin.use_middleware(|socket: SocketRef| async move {
        if socket.handshake().auth().get("token") == Some(&json!("secret")) {
            Ok(())
        } else {
            Err(ConnectError::new("unauthorized").with_data(json!({ "reason": "bad token" })))
        }
    });

    io.dynamic_ns(
        |name| name.starts_with("/dyn-"),
        |socket| {
            notify(
                socket.emit("hello", json!({ "nsp": socket.ns().name() })),
                "hello",
            );
        },
    );

    let listener = tidings::server::bind(([127, 0, 0, 1], port).into())?;
    println!("listening on {}", listener.local_addr()?);
    tidings::server::serve(
        listener,
        io,
        tidings::server::ServeOptions::default(),
        tidings::server::shutdown_signal(),
    )
    .await
}
