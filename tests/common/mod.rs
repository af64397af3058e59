//! Helpers shared by the integration tests that drive a real listener with raw clients
//! (`hostile.rs`, `soak.rs`): a tiny HTTP/1.1 client that also reports a connection dropped without
//! an answer, a WebSocket Socket.IO client, bounded waits and the process RSS.
//!
//! Each test file is its own crate and uses only part of this module.
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

/// The bound on any single wait for the server.
pub const WAIT: Duration = Duration::from_secs(5);

/// Awaits `f`, panicking with `what` if it takes longer than `limit`.
pub async fn bounded<F: Future>(limit: Duration, what: &str, f: F) -> F::Output {
    match tokio::time::timeout(limit, f).await {
        Ok(out) => out,
        Err(_) => panic!("timed out after {limit:?} waiting for {what}"),
    }
}

/// Waits (up to `limit`) until `cond` holds, checking every few milliseconds; returns whether it did.
pub async fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ===== HTTP/1.1 =====

/// An HTTP response, as read off the wire.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The bytes of a request with `Connection: close`, and `Content-Length` unless the headers set
/// the framing themselves (`Transfer-Encoding`, or a `Content-Length` that need not be true).
pub fn request_bytes(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    let framed = headers.iter().any(|(k, _)| {
        k.eq_ignore_ascii_case("transfer-encoding") || k.eq_ignore_ascii_case("content-length")
    });
    if !framed && (method == "POST" || !body.is_empty()) {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    request
}

/// Writes `raw` on a fresh connection and reads until the server closes it. `None` when the
/// connection ended without a single byte of response.
pub async fn http_raw(addr: SocketAddr, raw: &[u8]) -> Option<Resp> {
    bounded(WAIT, "an HTTP response", async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        // The server may answer (413) and close before reading everything; the answer still counts.
        let _ = stream.write_all(raw).await;
        read_response(&mut stream).await
    })
    .await
}

/// Reads a response until the server closes the connection; `None` if it sent nothing.
pub async fn read_response(stream: &mut TcpStream) -> Option<Resp> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
    (!raw.is_empty()).then(|| parse_response(&raw))
}

/// One request on a fresh connection; panics if the server drops it without answering.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    http_raw(addr, &request_bytes(addr, method, target, headers, body))
        .await
        .unwrap_or_else(|| panic!("{method} {target}: connection closed without a response"))
}

pub fn parse_response(raw: &[u8]) -> Resp {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("incomplete response: {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
    let status = status_line[9..12].parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let rest = &raw[end + 4..];
    let is_chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if is_chunked {
        dechunk(rest)
    } else if let Some((_, len)) = headers.iter().find(|(k, _)| k == "content-length") {
        let len: usize = len.parse().unwrap();
        rest[..len.min(rest.len())].to_vec()
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
    while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
        let size_field = String::from_utf8_lossy(&rest[..eol]);
        let Ok(size) = usize::from_str_radix(size_field.split(';').next().unwrap().trim(), 16)
        else {
            break;
        };
        rest = &rest[eol + 2..];
        if size == 0 || rest.len() < size {
            break;
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[(size + 2).min(rest.len())..];
    }
    body
}

// ===== Engine.IO polling =====

/// The polling URL of a session (`sid` empty: the handshake).
pub fn polling_target(path: &str, sid: &str) -> String {
    if sid.is_empty() {
        format!("{path}?EIO=4&transport=polling")
    } else {
        format!("{path}?EIO=4&transport=polling&sid={sid}")
    }
}

/// Opens a polling session; returns its sid.
pub async fn open_polling(addr: SocketAddr, path: &str) -> String {
    let res = http(addr, "GET", &polling_target(path, ""), &[], b"").await;
    assert_eq!(res.status, 200, "{res:?}");
    let text = res.text();
    let open: Value =
        serde_json::from_str(text.strip_prefix('0').expect("an open packet")).unwrap();
    open["sid"].as_str().unwrap().to_owned()
}

/// POSTs a polling payload.
pub async fn polling_post(addr: SocketAddr, path: &str, sid: &str, body: &[u8]) -> Resp {
    http(
        addr,
        "POST",
        &polling_target(path, sid),
        &[("Content-Type", "text/plain;charset=UTF-8")],
        body,
    )
    .await
}

/// GETs until a packet other than a ping arrives (answering pings); returns those packets.
pub async fn polling_recv(addr: SocketAddr, path: &str, sid: &str) -> Vec<String> {
    loop {
        let res = http(addr, "GET", &polling_target(path, sid), &[], b"").await;
        assert_eq!(res.status, 200, "{res:?}");
        let mut packets: Vec<String> = res.text().split('\x1e').map(str::to_owned).collect();
        let pinged = packets.iter().any(|p| p == "2");
        packets.retain(|p| p != "2");
        if pinged {
            polling_post(addr, path, sid, b"3").await;
        }
        if !packets.is_empty() {
            return packets;
        }
    }
}

// ===== WebSocket =====

pub type Ws = WebSocketStream<TcpStream>;

/// Opens a WebSocket to `target` (path and query) on `addr`.
pub async fn ws_connect(addr: SocketAddr, target: &str) -> Ws {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let url = format!("ws://{addr}{target}");
    let (ws, res) = bounded(WAIT, "a websocket handshake", async {
        tokio_tungstenite::client_async(url, tcp).await
    })
    .await
    .expect("websocket handshake failed");
    assert_eq!(res.status(), 101);
    ws
}

/// The next text message that is not an Engine.IO ping (pings are answered).
pub async fn ws_text(ws: &mut Ws) -> String {
    bounded(WAIT, "a websocket message", async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) if t == "2" => {
                    let _ = ws.send(Message::text("3")).await;
                }
                Some(Ok(Message::Text(t))) => return t.to_string(),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                other => panic!("expected a text message, got {other:?}"),
            }
        }
    })
    .await
}

/// A WebSocket-only Engine.IO session past its open packet; returns it with its sid.
pub async fn ws_session(addr: SocketAddr, path: &str) -> (Ws, String) {
    let mut ws = ws_connect(addr, &format!("{path}?EIO=4&transport=websocket")).await;
    let open = ws_text(&mut ws).await;
    let open: Value =
        serde_json::from_str(open.strip_prefix('0').expect("an open packet")).unwrap();
    (ws, open["sid"].as_str().unwrap().to_owned())
}

/// Sends CONNECT for the main namespace (with `auth`) and waits for the reply; returns the socket
/// id. Packets that arrive before the reply are returned too (there should be none).
pub async fn sio_connect(ws: &mut Ws, auth: Option<&Value>) -> String {
    let packet = match auth {
        Some(auth) => format!("40{auth}"),
        None => "40".to_owned(),
    };
    ws.send(Message::text(packet)).await.unwrap();
    let reply = ws_text(ws).await;
    let data: Value = serde_json::from_str(
        reply
            .strip_prefix("40")
            .unwrap_or_else(|| panic!("expected a CONNECT reply, got {reply}")),
    )
    .unwrap();
    data["sid"].as_str().unwrap().to_owned()
}

// ===== process =====

/// The resident set size of this process, in KiB (Linux).
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("reading /proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// How many file descriptors this process has open (Linux).
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count)
}
