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
