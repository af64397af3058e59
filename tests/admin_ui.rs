//! The Admin UI's protocol over raw WebSockets on 127.0.0.1: login (refused, accepted, by session
//! id), what an admin is told on connect, the per-socket events, and the commands.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::SinkExt as _;
use serde_json::{Value, json};
use tidings::admin_ui::{AdminAuth, AdminUiConfig, Mode};
use tidings::server;
use tidings::socketio::{Args, Config, SocketIo};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;

use common::{
    WAIT, Ws, bounded, open_polling, polling_post, sio_connect, ws_connect, ws_session, ws_text,
};

// bcryptjs.hashSync("changeit", 4)
const HASH: &str = "$2a$04$TaU6EVSVg4pwh349dVC2/.Gvz47Du8hR2gleSe9QBitX98m/1XtWG";

struct Server {
    addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

async fn start(configure: impl FnOnce(&mut AdminUiConfig)) -> Server {
    let io = SocketIo::new(Config::default());
    io.ns("/", |socket| {
        socket.on("join", |socket, args: Args, ack| {
            socket
                .join(args.get::<String>(0).unwrap_or_default())
                .expect("within the room limit");
            if let Some(ack) = ack {
                // A lost answer shows up as the test's missing ack.
                let _ = ack.send_one(true);
            }
        });
        socket.on("echo", |socket, args: Args, _| {
            // A lost echo shows up as the test's missing event.
            let _ = socket.emit_args("echo", args);
        });
    });
    let mut admin = AdminUiConfig::basic("admin", HASH);
    admin.stats_interval = Duration::from_millis(200);
    configure(&mut admin);
    tidings::admin_ui::instrument(&io, admin).unwrap();
    let listener = server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server::serve(
        listener,
        io,
        server::ServeOptions::default(),
        async move {
            let _ = stopped.await;
        },
    ));
    Server { addr, _stop: stop }
}

/// Sends CONNECT for `/admin` with `auth`; returns the reply packet (CONNECT or CONNECT_ERROR).
async fn admin_connect(ws: &mut Ws, auth: &Value) -> String {
    ws.send(Message::text(format!("40/admin,{auth}")))
        .await
        .unwrap();
    loop {
        let packet = ws_text(ws).await;
        if packet.starts_with("40/admin,") || packet.starts_with("44/admin,") {
            return packet;
        }
        // Events the server queued before the reply (none are expected) are skipped.
    }
}

/// The arguments of the next admin event named `name`, skipping every other packet.
async fn next_event(ws: &mut Ws, name: &str) -> Vec<Value> {
    bounded(WAIT, name, async {
        loop {
            let packet = ws_text(ws).await;
            let Some(json) = packet.strip_prefix("42/admin,") else {
                continue;
            };
            let Value::Array(mut values) = serde_json::from_str(json).unwrap() else {
                panic!("not an event: {packet}");
            };
            if values.first() == Some(&Value::from(name)) {
                values.remove(0);
                return values;
            }
        }
    })
    .await
}

async fn login(addr: SocketAddr) -> (Ws, String) {
    let (mut ws, _) = ws_session(addr, "/socket.io/").await;
    let reply = admin_connect(
        &mut ws,
        &json!({ "username": "admin", "password": "changeit" }),
    )
    .await;
    assert!(reply.starts_with("40/admin,{\"sid\""), "{reply}");
    let session = next_event(&mut ws, "session").await;
    (ws, session[0].as_str().unwrap().to_owned())
}

/// A main-namespace client; returns it with its socket id.
async fn client(addr: SocketAddr) -> (Ws, String) {
    let (mut ws, _) = ws_session(addr, "/socket.io/").await;
    let id = sio_connect(&mut ws, None).await;
    (ws, id)
}

#[tokio::test]
async fn wrong_credentials_are_refused() {
    let server = start(|_| {}).await;
    for auth in [
        json!({ "username": "admin", "password": "wrong" }),
        json!({ "username": "root", "password": "changeit" }),
        json!({ "sessionId": "0123456789abcdef" }),
        json!({}),
    ] {
        let (mut ws, _) = ws_session(server.addr, "/socket.io/").await;
        let reply = admin_connect(&mut ws, &auth).await;
        assert_eq!(
            reply, r#"44/admin,{"message":"invalid credentials"}"#,
            "{auth}"
        );
    }
}

#[tokio::test]
async fn login_gives_a_session_the_config_and_every_socket() {
    let server = start(|_| {}).await;
    let (mut main, id) = client(server.addr).await;
    main.send(Message::text(r#"421["join","r1"]"#))
        .await
        .unwrap();
    assert_eq!(ws_text(&mut main).await, "431[true]");

    let (mut admin, session) = login(server.addr).await;
    assert_eq!(session.len(), 16);
    assert!(session.bytes().all(|b| b.is_ascii_hexdigit()));
    let config = next_event(&mut admin, "config").await;
    let features = config[0]["supportedFeatures"].as_array().unwrap();
    for f in [
        "EMIT",
        "JOIN",
        "LEAVE",
        "DISCONNECT",
        "MJOIN",
        "MLEAVE",
        "MDISCONNECT",
        "AGGREGATED_EVENTS",
        "ALL_EVENTS",
    ] {
        assert!(features.contains(&Value::from(f)), "{f} in {features:?}");
    }
    let all = next_event(&mut admin, "all_sockets").await;
    let sockets = all[0].as_array().unwrap();
    let mine = sockets
        .iter()
        .find(|s| s["id"] == id.as_str())
        .expect("the client listed");
    assert_eq!(mine["nsp"], "/");
    assert_eq!(mine["transport"], "websocket");
    assert_eq!(mine["clientId"].as_str().unwrap().len(), 12);
    let mut rooms: Vec<&str> = mine["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    rooms.sort_unstable();
    let mut expected = vec![id.as_str(), "r1"];
    expected.sort_unstable();
    assert_eq!(rooms, expected);
    assert_eq!(mine["data"], json!({}));
    assert_eq!(mine["handshake"]["address"], "127.0.0.1");
    assert!(mine["handshake"].get("auth").is_none());
    assert!(mine["handshake"]["time"].as_str().unwrap().ends_with('Z'));

    let stats = next_event(&mut admin, "server_stats").await;
    let stats = &stats[0];
    assert_eq!(stats["pid"], std::process::id());
    assert_eq!(stats["clientsCount"], 2);
    assert_eq!(stats["pollingClientsCount"], 0);
    let namespaces = stats["namespaces"].as_array().unwrap();
    assert!(
        namespaces.contains(&json!({ "name": "/", "socketsCount": 1 })),
        "{namespaces:?}"
    );
    assert!(stats["serverId"].as_str().is_some_and(|s| !s.is_empty()));

    // The UI reconnects with the session id alone, and gets no new session.
    let (mut again, _) = ws_session(server.addr, "/socket.io/").await;
    let reply = admin_connect(&mut again, &json!({ "sessionId": session })).await;
    assert!(reply.starts_with("40/admin,{\"sid\""), "{reply}");
    // (The other admin's events about this connection may come first.)
    loop {
        let name = next_event_name(&mut again).await;
        assert_ne!(name, "session");
        if name == "config" {
            break;
        }
    }
}

/// The name of the next admin event.
async fn next_event_name(ws: &mut Ws) -> String {
    bounded(WAIT, "an admin event", async {
        loop {
            let packet = ws_text(ws).await;
            if let Some(json) = packet.strip_prefix("42/admin,") {
                let values: Vec<Value> = serde_json::from_str(json).unwrap();
                return values[0].as_str().unwrap().to_owned();
            }
        }
    })
    .await
}

#[tokio::test]
async fn an_admin_sees_sockets_rooms_and_events() {
    let server = start(|_| {}).await;
    let (mut admin, _) = login(server.addr).await;
    next_event(&mut admin, "all_sockets").await;

    let (mut main, id) = client(server.addr).await;
    let joined = next_event(&mut admin, "room_joined").await;
    assert_eq!(&joined[..3], &[json!("/"), json!(id), json!(id)]);
    let connected = next_event(&mut admin, "socket_connected").await;
    assert_eq!(connected[0]["id"], id.as_str());
    assert_eq!(connected[0]["rooms"], json!([id]));
    assert!(connected[1].as_str().unwrap().ends_with('Z'));

    main.send(Message::text(r#"421["join","r1"]"#))
        .await
        .unwrap();
    let joined = next_event(&mut admin, "room_joined").await;
    assert_eq!(&joined[..3], &[json!("/"), json!("r1"), json!(id)]);

    main.send(Message::text(r#"42["echo",{"n":1}]"#))
        .await
        .unwrap();
    let received = next_event(&mut admin, "event_received").await;
    assert_eq!(
        &received[..3],
        &[json!("/"), json!(id), json!(["echo", { "n": 1 }])]
    );
    let sent = next_event(&mut admin, "event_sent").await;
    assert_eq!(
        &sent[..3],
        &[json!("/"), json!(id), json!(["echo", { "n": 1 }])]
    );

    drop(main);
    let gone = next_event(&mut admin, "socket_disconnected").await;
    assert_eq!(
        &gone[..3],
        &[json!("/"), json!(id), json!("transport close")]
    );
    let mut left = Vec::new();
    for _ in 0..2 {
        let event = next_event(&mut admin, "room_left").await;
        assert_eq!(event[2], id.as_str());
        left.push(event[1].as_str().unwrap().to_owned());
    }
    left.sort();
    let mut expected = vec![id.clone(), "r1".to_owned()];
    expected.sort();
    assert_eq!(left, expected);
}

#[tokio::test]
async fn commands_join_emit_leave_and_disconnect() {
    let server = start(|_| {}).await;
    let (mut admin, _) = login(server.addr).await;
    next_event(&mut admin, "all_sockets").await;
    let (mut main, id) = client(server.addr).await;
    next_event(&mut admin, "socket_connected").await;

    admin
        .send(Message::text(format!(
            r#"42/admin,["join","/","r2","{id}"]"#
        )))
        .await
        .unwrap();
    let joined = next_event(&mut admin, "room_joined").await;
    assert_eq!(&joined[..3], &[json!("/"), json!("r2"), json!(id)]);

    // A reserved name is not emitted; the next emit is the first thing the client gets.
    admin
        .send(Message::text(r#"42/admin,["emit","/","r2","disconnect"]"#))
        .await
        .unwrap();
    admin
        .send(Message::text(
            r#"42/admin,["emit","/","r2","hello",1,{"a":2}]"#,
        ))
        .await
        .unwrap();
    assert_eq!(ws_text(&mut main).await, r#"42["hello",1,{"a":2}]"#);

    admin
        .send(Message::text(format!(
            r#"42/admin,["leave","/","r2","{id}"]"#
        )))
        .await
        .unwrap();
    let left = next_event(&mut admin, "room_left").await;
    assert_eq!(&left[..3], &[json!("/"), json!("r2"), json!(id)]);

    admin
        .send(Message::text(format!(
            r#"42/admin,["_disconnect","/",false,"{id}"]"#
        )))
        .await
        .unwrap();
    assert_eq!(ws_text(&mut main).await, "41");
    let gone = next_event(&mut admin, "socket_disconnected").await;
    assert_eq!(
        &gone[..3],
        &[json!("/"), json!(id), json!("server namespace disconnect")]
    );
}

#[tokio::test]
async fn readonly_production_admins_get_stats_and_no_commands() {
    let server = start(|c| {
        c.readonly = true;
        c.mode = Mode::Production;
        c.auth = AdminAuth::None;
    })
    .await;
    let (mut admin, _) = ws_session(server.addr, "/socket.io/").await;
    let reply = admin_connect(&mut admin, &json!({})).await;
    assert!(reply.starts_with("40/admin,"), "{reply}");
    let config = next_event(&mut admin, "config").await;
    assert_eq!(
        config[0],
        json!({ "supportedFeatures": ["AGGREGATED_EVENTS"] })
    );
    let (mut main, id) = client(server.addr).await;
    admin
        .send(Message::text(format!(
            r#"42/admin,["_disconnect","/",false,"{id}"]"#
        )))
        .await
        .unwrap();
    // Only stats come, and the client stays connected.
    for _ in 0..2 {
        assert_eq!(next_event_name(&mut admin).await, "server_stats");
    }
    main.send(Message::text(r#"42["echo",1]"#)).await.unwrap();
    assert_eq!(ws_text(&mut main).await, r#"42["echo",1]"#);
}

#[tokio::test]
async fn an_upgrade_is_reported_with_the_new_transport() {
    let server = start(|_| {}).await;
    let (mut admin, _) = login(server.addr).await;
    next_event(&mut admin, "all_sockets").await;

    let sid = open_polling(server.addr, "/socket.io/").await;
    let res = polling_post(server.addr, "/socket.io/", &sid, b"40").await;
    assert_eq!(res.status, 200);
    let connected = next_event(&mut admin, "socket_connected").await;
    assert_eq!(connected[0]["transport"], "polling");
    assert_eq!(connected[0]["clientId"], &sid[..12]);
    let id = connected[0]["id"].as_str().unwrap().to_owned();
    let stats = next_event(&mut admin, "server_stats").await;
    assert_eq!(stats[0]["pollingClientsCount"], 1);

    let mut ws = ws_connect(
        server.addr,
        &format!("/socket.io/?EIO=4&transport=websocket&sid={sid}"),
    )
    .await;
    ws.send(Message::text("2probe")).await.unwrap();
    assert_eq!(ws_text(&mut ws).await, "3probe");
    ws.send(Message::text("5")).await.unwrap();
    let updated = next_event(&mut admin, "socket_updated").await;
    assert_eq!(
        updated[0],
        json!({ "id": id, "nsp": "/", "transport": "websocket" })
    );
}

#[tokio::test]
async fn failed_logins_are_throttled_per_address_and_success_resets() {
    let server = start(|admin| {
        let mut throttle = tidings::admin_ui::LoginThrottle::default();
        throttle.max_failures = 3;
        throttle.window = Duration::from_secs(60);
        admin.login_throttle = throttle;
    })
    .await;
    let wrong = json!({ "username": "admin", "password": "wrong" });
    let right = json!({ "username": "admin", "password": "changeit" });
    let attempt = |auth: Value| async move {
        let (mut ws, _) = ws_session(server.addr, "/socket.io/").await;
        admin_connect(&mut ws, &auth).await
    };
    // Two failures, then a success: the count starts again.
    for _ in 0..2 {
        assert_eq!(
            attempt(wrong.clone()).await,
            r#"44/admin,{"message":"invalid credentials"}"#
        );
    }
    assert!(attempt(right.clone()).await.starts_with("40/admin,"));
    for _ in 0..3 {
        assert_eq!(
            attempt(wrong.clone()).await,
            r#"44/admin,{"message":"invalid credentials"}"#
        );
    }
    // Past the limit every attempt from this address is refused, the right password included,
    // without a password check.
    let throttled = r#"44/admin,{"message":"too many failed logins, retry later"}"#;
    assert_eq!(attempt(wrong.clone()).await, throttled);
    let started = std::time::Instant::now();
    assert_eq!(attempt(right.clone()).await, throttled);
    assert!(started.elapsed() < WAIT);
}
