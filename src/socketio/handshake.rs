//! A socket's handshake: what the reference exposes as `socket.handshake`, kept small (the request's
//! headers as one blob, the auth as its JSON text) and serialised as the reference does on demand.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use crate::engineio::RequestInfo;

/// The handshake details of a socket, as the reference exposes them.
#[derive(Debug, Clone)]
pub struct Handshake {
    request: Arc<RequestInfo>,
    /// When the socket connected to its namespace (the reference's `time` and `issued`).
    issued: SystemTime,
    /// The auth payload as the JSON text it came as (at most `max_auth_bytes`), `None` for the
    /// usual empty object. A parsed `Value` tree takes tens of times the bytes of its text, for the
    /// socket's whole life.
    pub(crate) auth: Option<Box<str>>,
}

impl Handshake {
    pub(crate) fn new(request: Arc<RequestInfo>, auth: Option<Box<str>>) -> Self {
        Self {
            request,
            issued: SystemTime::now(),
            auth,
        }
    }

    /// The request headers of the connection.
    pub fn headers(&self) -> &http::HeaderMap {
        self.request.headers()
    }

    /// The query parameters of the connection's first request, decoded.
    pub fn query(&self) -> Vec<(String, String)> {
        crate::engineio::query::parse_pairs(self.request.query().unwrap_or(""))
    }

    /// One query parameter.
    pub fn query_param(&self, key: &str) -> Option<String> {
        self.query()
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// The auth payload the client sent with CONNECT (`{}` when none), parsed from the JSON text
    /// the socket keeps (see [`Handshake::auth_json`]).
    pub fn auth(&self) -> Value {
        self.auth
            .as_deref()
            .and_then(|text| serde_json::from_str(text).ok())
            .unwrap_or_else(|| Value::Object(serde_json::Map::new()))
    }

    /// The auth payload as JSON text (`{}` when none): what the socket keeps of it.
    pub fn auth_json(&self) -> &str {
        self.auth.as_deref().unwrap_or("{}")
    }

    /// The auth payload's field `key`, if it is a string.
    pub fn auth_str(&self, key: &str) -> Option<String> {
        match self.auth().get(key)? {
            Value::String(s) => Some(s.clone()),
            _ => None,
        }
    }

    /// The remote address.
    pub fn address(&self) -> Option<std::net::SocketAddr> {
        self.request.remote_addr
    }

    /// The request URL (path and query).
    pub fn url(&self) -> String {
        self.request.uri_str().to_owned()
    }

    /// Whether the connection is over TLS.
    pub fn secure(&self) -> bool {
        self.request.secure
    }

    /// Whether the request came from another origin (an `Origin` header was sent).
    pub fn xdomain(&self) -> bool {
        self.request.has_header("origin")
    }

    /// When the socket connected to its namespace, in milliseconds since the Unix epoch (the
    /// reference's `issued`, taken at the namespace connect, not at the Engine.IO handshake).
    pub fn issued(&self) -> u64 {
        millis(self.issued)
    }

    /// When the socket connected to its namespace.
    pub fn time(&self) -> SystemTime {
        self.issued
    }

    /// When the Engine.IO session (the connection) was opened.
    pub fn session_opened(&self) -> SystemTime {
        self.request.issued
    }

    /// The handshake as the reference's `socket.handshake` serialises to JSON, for code ported from
    /// a Node server that sends it to clients or logs it:
    /// `{headers, time, address, xdomain, secure, issued, url, query, auth}`. `headers` is Node's
    /// `IncomingHttpHeaders` (names in lower case; a repeated `set-cookie` an array, a repeated
    /// `cookie` joined with `"; "`, the headers Node keeps one of keep the first, any other joined
    /// with `", "`); `time` is JavaScript's `Date` string (UTC); `query` takes a repeated key as an
    /// array of its values, as Node's `querystring`; `address` is the client's IP (empty when unknown).
    /// Cluster nodes exchange it in fetch-sockets answers, as Node nodes do.
    pub fn to_reference_json(&self) -> Value {
        json!({
            "headers": node_headers(self.headers()),
            "time": js_date_string(self.issued),
            "address": self.address().map(|a| a.ip().to_string()).unwrap_or_default(),
            "xdomain": self.xdomain(),
            "secure": self.secure(),
            "issued": self.issued(),
            "url": self.url(),
            "query": node_query(&self.query()),
            "auth": self.auth(),
        })
    }
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Headers of which Node keeps the first when they repeat (`http.IncomingMessage.headers`).
const NODE_SINGLE: &[&str] = &[
    "age",
    "authorization",
    "content-length",
    "content-type",
    "etag",
    "expires",
    "from",
    "host",
    "if-modified-since",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "proxy-authorization",
    "referer",
    "retry-after",
    "server",
    "user-agent",
];

/// `headers` as Node's `IncomingHttpHeaders`.
fn node_headers(headers: &http::HeaderMap) -> Value {
    let mut out = Map::new();
    for name in headers.keys() {
        let name = name.as_str();
        let mut values = headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let value = if name == "set-cookie" {
            Value::Array(values.map(Value::String).collect())
        } else if NODE_SINGLE.contains(&name) {
            Value::String(values.next().unwrap_or_default())
        } else {
            let sep = if name == "cookie" { "; " } else { ", " };
            Value::String(values.collect::<Vec<_>>().join(sep))
        };
        out.insert(name.to_owned(), value);
    }
    Value::Object(out)
}

/// Decoded query pairs as Node's `querystring.parse`: a repeated key becomes an array.
fn node_query(pairs: &[(String, String)]) -> Value {
    let mut out = Map::new();
    for (key, value) in pairs {
        match out.get_mut(key) {
            None => {
                out.insert(key.clone(), Value::String(value.clone()));
            }
            Some(Value::Array(list)) => list.push(Value::String(value.clone())),
            Some(first) => {
                let first = first.take();
                out.insert(key.clone(), json!([first, value]));
            }
        }
    }
    Value::Object(out)
}

/// JavaScript's `new Date(t).toString()` in UTC, e.g.
/// `Thu Dec 03 2026 07:30:00 GMT+0000 (Coordinated Universal Time)`.
fn js_date_string(t: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (year, month, day) = crate::date::civil_from_days(i64::try_from(days).unwrap_or(0));
    format!(
        "{} {} {:02} {:04} {:02}:{:02}:{:02} GMT+0000 (Coordinated Universal Time)",
        DAYS[(days % 7) as usize],
        MONTHS[month as usize - 1],
        day,
        year,
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dates_read_as_javascript_writes_them() {
        let at = |secs| UNIX_EPOCH + Duration::from_secs(secs);
        assert_eq!(
            js_date_string(at(0)),
            "Thu Jan 01 1970 00:00:00 GMT+0000 (Coordinated Universal Time)"
        );
        // 2024-02-29T23:59:59Z, a leap day (a Thursday).
        assert_eq!(
            js_date_string(at(1_709_251_199)),
            "Thu Feb 29 2024 23:59:59 GMT+0000 (Coordinated Universal Time)"
        );
        // 2026-12-03T07:30:05Z.
        assert_eq!(
            js_date_string(at(1_796_283_005)),
            "Thu Dec 03 2026 07:30:05 GMT+0000 (Coordinated Universal Time)"
        );
    }

    #[test]
    fn headers_and_query_as_node_gives_them() {
        let mut headers = http::HeaderMap::new();
        for (k, v) in [
            ("set-cookie", "a=1"),
            ("set-cookie", "b=2"),
            ("cookie", "x=1"),
            ("cookie", "y=2"),
            ("host", "first"),
            ("host", "second"),
            ("accept", "text/html"),
            ("accept", "*/*"),
            ("x-one", "v"),
        ] {
            headers.append(k, http::HeaderValue::from_static(v));
        }
        assert_eq!(
            node_headers(&headers),
            json!({
                "set-cookie": ["a=1", "b=2"],
                "cookie": "x=1; y=2",
                "host": "first",
                "accept": "text/html, */*",
                "x-one": "v",
            })
        );
        let pairs = [("a", "1"), ("b", "2"), ("a", "3"), ("a", "4")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()));
        assert_eq!(node_query(&pairs), json!({"a": ["1", "3", "4"], "b": "2"}));
    }
}
