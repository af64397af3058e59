//! Just enough of an Engine.IO v4 / Socket.IO v5 client over WebSocket for the benchmarks.
//!
//! Wire format (text frames only): the server opens with `0{...}` (Engine.IO OPEN), the client
//! joins namespace `/` with `40` and the server answers `40{"sid":...}`; the server pings with `2`,
//! the client answers `3`; events are `42["name",...]`, with an ack id `42<id>["name",...]`,
//! answered by `43<id>[...]`.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

pub type Ws = WebSocketStream<TcpStream>;
pub type Error = Box<dyn std::error::Error + Send + Sync>;

pub const PONG: Utf8Bytes = Utf8Bytes::from_static("3");

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub path: String,
    /// How long the whole handshake (TCP connect → CONNECT reply) may take.
    pub timeout: Duration,
}

/// Source addresses, round-robin: one loopback address has about 28 000 ephemeral ports, so many
/// connections need several (127.0.0.2, 127.0.0.3, ...).
#[derive(Debug, Clone, Copy)]
pub struct Sources {
    pub base: Ipv4Addr,
    pub count: u32,
}

impl Sources {
    pub fn nth(&self, i: usize) -> Ipv4Addr {
        let off = (i as u64 % u64::from(self.count.max(1))) as u32;
        Ipv4Addr::from(u32::from(self.base).wrapping_add(off))
    }

    /// The `k`-th disjoint block of `count` addresses after this one (for child processes).
    pub fn block(&self, k: u32) -> Self {
        Self {
            base: Ipv4Addr::from(u32::from(self.base).wrapping_add(k * self.count)),
            count: self.count,
        }
    }
}

fn ws_config() -> WebSocketConfig {
    // Small buffers: the load generator holds up to ~18 000 connections per process; the messages
    // of the scenarios are small.
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
}

/// Opens a Socket.IO connection to namespace `/` from `src`; returns it with the handshake time
/// (TCP connect started → CONNECT reply read).
pub async fn connect(target: &Target, src: Ipv4Addr) -> Result<(Ws, Duration), Error> {
    let start = Instant::now();
    let fut = async {
        let sock = TcpSocket::new_v4()?;
        sock.bind(SocketAddr::new(src.into(), 0))?;
        let stream = sock.connect(target.addr).await?;
        stream.set_nodelay(true)?;
        let url = format!(
            "ws://{}{}?EIO=4&transport=websocket",
            target.addr, target.path
        );
        let (mut ws, _) =
            tokio_tungstenite::client_async_with_config(url, stream, Some(ws_config())).await?;
        // Engine.IO OPEN.
        loop {
            let text = next_text(&mut ws).await?;
            if text.starts_with('0') {
                break;
            }
        }
        ws.send(Message::text("40")).await?;
        loop {
            let text = next_text(&mut ws).await?;
            if text.starts_with("40") {
                break;
            }
            if text.as_str() == "2" {
                ws.send(Message::Text(PONG)).await?;
            } else if text.starts_with("44") {
                return Err(format!("connect refused: {}", text.as_str()).into());
            }
        }
        Ok::<_, Error>(ws)
    };
    let ws = tokio::time::timeout(target.timeout, fut)
        .await
        .map_err(|_| "handshake timed out")??;
    Ok((ws, start.elapsed()))
}

/// A TCP connection to the target from `src`, with Nagle off.
async fn tcp(target: &Target, src: Ipv4Addr) -> Result<TcpStream, Error> {
    let sock = TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(src.into(), 0))?;
    let stream = sock.connect(target.addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Opens a Socket.IO connection as a browser's client does by default: the Engine.IO handshake
/// and the CONNECT of namespace `/` over HTTP long-polling (one keep-alive connection), then the
/// upgrade to WebSocket (`2probe` → `3probe`, `5`) on a second connection, which is returned. The
/// handshake time runs from the first TCP connect to the CONNECT reply; the whole, upgrade
/// included, is bounded by the target's timeout.
pub async fn connect_polling(target: &Target, src: Ipv4Addr) -> Result<(Ws, Duration), Error> {
    let start = Instant::now();
    let fut = async {
        let mut http = tcp(target, src).await?;
        let base = format!("{}?EIO=4&transport=polling", target.path);
        let open = http_exchange(&mut http, target, "GET", &base, None).await?;
        let open: serde_json::Value = serde_json::from_str(
            open.strip_prefix('0')
                .ok_or_else(|| format!("expected an open packet, got {open:?}"))?,
        )?;
        let sid = open["sid"]
            .as_str()
            .ok_or("open packet without sid")?
            .to_owned();
        let session = format!("{base}&sid={sid}");
        http_exchange(&mut http, target, "POST", &session, Some("40")).await?;
        loop {
            let body = http_exchange(&mut http, target, "GET", &session, None).await?;
            let mut packets = body.split('\u{1e}');
            if packets.any(|p| p.starts_with("40")) {
                break;
            }
            if body.split('\u{1e}').any(|p| p.starts_with("44")) {
                return Err(format!("connect refused: {body}").into());
            }
        }
        let handshake = start.elapsed();
        // As the stock client: a poll is pending while the upgrade is probed; the server answers it
        // (with a noop) once the probe succeeds, and only then does the client send `5`.
        send_request(&mut http, target, "GET", &session, "").await?;
        let stream = tcp(target, src).await?;
        let url = format!(
            "ws://{}{}?EIO=4&transport=websocket&sid={sid}",
            target.addr, target.path
        );
        let (mut ws, _) =
            tokio_tungstenite::client_async_with_config(url, stream, Some(ws_config())).await?;
        ws.send(Message::text("2probe")).await?;
        loop {
            let text = next_text(&mut ws).await?;
            if text.as_str() == "3probe" {
                break;
            }
        }
        read_response(&mut http, "GET", &session).await?;
        ws.send(Message::text("5")).await?;
        Ok::<_, Error>((ws, handshake))
    };
    tokio::time::timeout(target.timeout, fut)
        .await
        .map_err(|_| "polling handshake or upgrade timed out")?
}

/// One HTTP/1.1 request on a keep-alive connection; returns the body of a 200 response.
async fn http_exchange(
    stream: &mut TcpStream,
    target: &Target,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<String, Error> {
    send_request(stream, target, method, path, body.unwrap_or("")).await?;
    read_response(stream, method, path).await
}

async fn send_request(
    stream: &mut TcpStream,
    target: &Target,
    method: &str,
    path: &str,
    body: &str,
) -> Result<(), Error> {
    use tokio::io::AsyncWriteExt;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: text/plain;charset=UTF-8\r\n\
         Content-Length: {}\r\n\r\n{body}",
        target.addr,
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    Ok(())
}

/// Reads one HTTP/1.1 response; returns the body of a 200.
async fn read_response(stream: &mut TcpStream, method: &str, path: &str) -> Result<String, Error> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::with_capacity(1024);
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Err("connection closed before the response head".into());
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    if !head.starts_with("http/1.1 200") {
        let line = head.lines().next().unwrap_or("").to_owned();
        return Err(format!("{method} {path}: {line}").into());
    }
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
    };
    let mut body = buf[head_end..].to_vec();
    if let Some(len) = header("content-length:").and_then(|v| v.parse::<usize>().ok()) {
        while body.len() < len {
            if stream.read_buf(&mut body).await? == 0 {
                return Err("connection closed inside a response body".into());
            }
        }
        body.truncate(len);
    } else if header("transfer-encoding:").is_some_and(|v| v.contains("chunked")) {
        // Chunks until the empty one, then the final CRLF.
        let mut raw = body;
        body = Vec::new();
        let mut at = 0;
        loop {
            let line_end = loop {
                if let Some(p) = raw[at..].windows(2).position(|w| w == b"\r\n") {
                    break at + p;
                }
                if stream.read_buf(&mut raw).await? == 0 {
                    return Err("connection closed inside a chunk header".into());
                }
            };
            let size = usize::from_str_radix(
                String::from_utf8_lossy(&raw[at..line_end])
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim(),
                16,
            )?;
            let data = line_end + 2;
            while raw.len() < data + size + 2 {
                if stream.read_buf(&mut raw).await? == 0 {
                    return Err("connection closed inside a chunk".into());
                }
            }
            if size == 0 {
                break;
            }
            body.extend_from_slice(&raw[data..data + size]);
            at = data + size + 2;
        }
    } else {
        return Err("a response without a length".into());
    }
    Ok(String::from_utf8(body)?)
}

/// The next text frame; pings/pongs of the WebSocket layer are skipped, a close is an error.
pub async fn next_text(ws: &mut Ws) -> Result<Utf8Bytes, Error> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(t),
            Some(Ok(Message::Close(_))) | None => return Err("connection closed".into()),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
        }
    }
}

/// Joins `room` with an ack and waits for the ack (answering pings meanwhile).
pub async fn join(ws: &mut Ws, room: &str) -> Result<(), Error> {
    let msg = format!("420[\"join\",{}]", serde_json::Value::from(room));
    ws.send(Message::text(msg)).await?;
    loop {
        let text = next_text(ws).await?;
        if text.starts_with("430") {
            return Ok(());
        }
        if text.as_str() == "2" {
            ws.send(Message::Text(PONG)).await?;
        }
    }
}

/// The unsigned integer after `key` (e.g. `"s":`) in `text`, if any.
pub fn num_after(text: &str, key: &str) -> Option<u64> {
    let at = text.find(key)? + key.len();
    let digits = text[at..]
        .bytes()
        .take_while(u8::is_ascii_digit)
        .fold((0u64, 0usize), |(n, k), b| {
            (n * 10 + u64::from(b - b'0'), k + 1)
        });
    (digits.1 > 0).then_some(digits.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_after_keys() {
        let t = r#"42["bcast",{"s":17,"t":123456,"p":"x"}]"#;
        assert_eq!(num_after(t, "\"s\":"), Some(17));
        assert_eq!(num_after(t, "\"t\":"), Some(123456));
        assert_eq!(num_after(t, "\"q\":"), None);
        assert_eq!(num_after(r#"{"s":"a"}"#, "\"s\":"), None);
    }

    #[test]
    fn sources_round_robin_and_blocks() {
        let s = Sources {
            base: Ipv4Addr::new(127, 0, 0, 2),
            count: 3,
        };
        assert_eq!(s.nth(0), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(s.nth(4), Ipv4Addr::new(127, 0, 0, 3));
        assert_eq!(s.block(2).nth(0), Ipv4Addr::new(127, 0, 0, 8));
    }
}
