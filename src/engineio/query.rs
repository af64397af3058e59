//! Parsing of the handshake query string, sans-IO.

use std::borrow::Cow;

/// The Engine.IO parameters of a request's query string, borrowed from it where nothing needed
/// decoding (every request parses them: no allocation for the usual `EIO=4&transport=websocket`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineQuery<'a> {
    /// `EIO`: the protocol version the client speaks.
    pub eio: Option<Cow<'a, str>>,
    /// `transport`: `polling` or `websocket`.
    pub transport: Option<Cow<'a, str>>,
    /// `sid`: the session, once it exists.
    pub sid: Option<Cow<'a, str>>,
    /// `b64`: an Engine.IO v3 client without binary support asks for base64 with any non-empty value.
    pub b64: Option<Cow<'a, str>>,
}

/// The longest query string we look at; anything longer is refused as a bad request.
pub const MAX_QUERY_LEN: usize = 8 * 1024;

/// Splits a raw query string into decoded `(key, value)` pairs (`+` is a space, `%XX` is a byte;
/// invalid escapes are kept as they are, invalid UTF-8 is replaced).
pub fn parse_pairs(query: &str) -> Vec<(String, String)> {
    raw_pairs(query)
        .map(|(k, v)| {
            (
                decode_component(k).into_owned(),
                decode_component(v).into_owned(),
            )
        })
        .collect()
}

/// Extracts the Engine.IO parameters. The first occurrence of a key wins.
pub fn parse_engine_query(query: &str) -> EngineQuery<'_> {
    let mut q = EngineQuery::default();
    for (k, v) in raw_pairs(query) {
        let slot = match &*decode_component(k) {
            "EIO" => &mut q.eio,
            "transport" => &mut q.transport,
            "sid" => &mut q.sid,
            "b64" => &mut q.b64,
            _ => continue,
        };
        if slot.is_none() {
            *slot = Some(decode_component(v));
        }
    }
    q
}

/// The `(key, value)` pairs of a query string, not decoded (a pair without `=` has an empty value).
fn raw_pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
}

fn decode_component(s: &str) -> Cow<'_, str> {
    let bytes = s.as_bytes();
    if !bytes.iter().any(|&b| b == b'+' || b == b'%') {
        return Cow::Borrowed(s);
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_engine_parameters() {
        let q = parse_engine_query("EIO=4&transport=polling&t=N8hyd6w&sid=ab%2Dc");
        assert_eq!(q.eio.as_deref(), Some("4"));
        assert_eq!(q.transport.as_deref(), Some("polling"));
        assert_eq!(q.sid.as_deref(), Some("ab-c"));
        // Only what needed decoding was copied.
        assert!(matches!(q.transport, Some(Cow::Borrowed(_))));
        assert!(matches!(q.sid, Some(Cow::Owned(_))));
        assert_eq!(parse_engine_query(""), EngineQuery::default());
        let q = parse_engine_query("EIO=4&EIO=3&transport");
        assert_eq!(q.eio.as_deref(), Some("4"));
        assert_eq!(q.transport.as_deref(), Some(""));
    }

    #[test]
    fn decodes_components_leniently() {
        let pairs = parse_pairs("a=%E2%82%AC&b=x+y&c=%zz&d=%4&e=%ff&&=v");
        assert_eq!(
            pairs,
            [
                ("a".into(), "€".into()),
                ("b".into(), "x y".into()),
                ("c".into(), "%zz".into()),
                ("d".into(), "%4".into()),
                ("e".into(), "\u{fffd}".into()),
                ("".into(), "v".into()),
            ]
        );
    }
}
