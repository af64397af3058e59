//! How the Admin UI wants sockets and dates: the shapes of `socket_connected` and `all_sockets`.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::socketio::{Socket, SocketInfo};

/// A socket as the UI lists it: `{id, clientId, transport, nsp, data, handshake, rooms}`.
///
/// `clientId` is the first 12 characters of the Engine.IO session id (what the reference shows);
/// `handshake` leaves out `auth` (it would show the admin's password to every admin).
pub(crate) fn socket(socket: &Socket) -> Value {
    let session = socket.session();
    let h = socket.handshake();
    // Behind a proxy the socket address is the proxy's; prefer what it forwarded.
    let forwarded = ["cf-connecting-ip", "x-forwarded-for"]
        .iter()
        .find_map(|name| h.headers().get(*name)?.to_str().ok());
    let address = forwarded.map_or_else(
        || h.address().map(|a| a.ip().to_string()).unwrap_or_default(),
        str::to_owned,
    );
    let mut handshake = h.to_reference_json();
    if let Some(fields) = handshake.as_object_mut() {
        fields.remove("auth");
        fields.insert("address".to_owned(), Value::String(address));
        fields.insert("time".to_owned(), Value::String(iso_date(h.time())));
    }
    json!({
        "id": socket.id(),
        "clientId": client_id(session.id()),
        "transport": session.transport().name(),
        "nsp": socket.ns().name(),
        "data": data(socket.data()),
        "handshake": handshake,
        "rooms": socket.rooms().iter().map(|r| r.as_ref()).collect::<Vec<_>>(),
    })
}

/// A socket of another cluster node (from a fetch-sockets answer), in the same shape as far as the
/// answer tells: no client id or transport.
pub(crate) fn remote_socket(info: SocketInfo, nsp: &str) -> Value {
    let mut handshake = info.handshake;
    if let Some(h) = handshake.as_object_mut() {
        h.remove("auth");
    }
    json!({
        "id": info.id,
        "nsp": nsp,
        "data": info.data,
        "handshake": handshake,
        "rooms": info.rooms,
    })
}

/// Socket data as the UI shows it: an object (`{}` when none was set).
pub(crate) fn data(value: Value) -> Value {
    if value.is_null() { json!({}) } else { value }
}

/// The reference's client id: the first 12 characters of the Engine.IO session id.
pub(crate) fn client_id(sid: &str) -> &str {
    sid.get(..12).unwrap_or(sid)
}

/// `time` as JavaScript's `Date.toISOString()` writes it (how a `Date` argument reaches the UI).
pub(crate) fn iso_date(time: SystemTime) -> String {
    let ms = time
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let secs = ms / 1000;
    let (year, month, day) =
        crate::date::civil_from_days(i64::try_from(secs / 86_400).unwrap_or(0));
    let rem = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn iso_dates_match_javascript() {
        let at = |ms: u64| iso_date(UNIX_EPOCH + Duration::from_millis(ms));
        assert_eq!(at(0), "1970-01-01T00:00:00.000Z");
        // new Date(951782400123).toISOString(): a leap day.
        assert_eq!(at(951_782_400_123), "2000-02-29T00:00:00.123Z");
        // new Date(1795636475904).toISOString()
        assert_eq!(at(1_795_636_475_904), "2026-11-25T19:54:35.904Z");
    }

    #[test]
    fn client_ids_are_twelve_characters() {
        assert_eq!(client_id("abcdefghijklmnopqrst"), "abcdefghijkl");
        assert_eq!(client_id("short"), "short");
    }
}
