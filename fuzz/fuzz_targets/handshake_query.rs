//! The handshake query string: `parse_pairs` and `parse_engine_query`.
//!
//! Invariants: one pair per non-empty `&`-separated segment, in order; a decoded component is never
//! longer than its raw text (each `%XX` becomes one byte, replaced by at most 3 bytes of U+FFFD);
//! text without `%` or `+` is kept as it is; the Engine.IO fields are the first occurrence of their
//! key; and re-encoding the decoded pairs (percent-encoding every byte that is not unreserved) parses
//! back to the same pairs.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tidings::engineio::query::{parse_engine_query, parse_pairs};

fn percent_encode(s: &str, out: &mut String) {
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // A request URI's query is ASCII, but the parser takes any `&str`: give it multibyte text too.
    let query = String::from_utf8_lossy(data);
    let pairs = parse_pairs(&query);

    let segments: Vec<&str> = query.split('&').filter(|s| !s.is_empty()).collect();
    assert_eq!(pairs.len(), segments.len());
    for ((key, value), segment) in pairs.iter().zip(&segments) {
        let (raw_key, raw_value) = segment.split_once('=').unwrap_or((segment, ""));
        for (decoded, raw) in [(key, raw_key), (value, raw_value)] {
            assert!(
                decoded.len() <= raw.len(),
                "{raw:?} decoded to longer {decoded:?}"
            );
            if !raw.contains(['%', '+']) {
                assert_eq!(decoded, raw);
            }
        }
    }

    let engine = parse_engine_query(&query);
    let first = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(engine.eio.as_deref(), first("EIO").as_deref());
    assert_eq!(engine.transport.as_deref(), first("transport").as_deref());
    assert_eq!(engine.sid.as_deref(), first("sid").as_deref());

    let mut encoded = String::new();
    for (i, (key, value)) in pairs.iter().enumerate() {
        if i > 0 {
            encoded.push('&');
        }
        percent_encode(key, &mut encoded);
        encoded.push('=');
        percent_encode(value, &mut encoded);
    }
    assert_eq!(parse_pairs(&encoded), pairs, "re-encoded as {encoded:?}");
});
