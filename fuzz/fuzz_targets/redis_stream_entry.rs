//! One Redis stream entry through the Redis Streams adapter's codec (`redis::streams::wire`, the
//! entries `@socket.io/redis-streams-adapter` writes: fields `uid`, `nsp`, `type`, `data` as JSON
//! text or base64 msgpack). The input is the entry's fields, `key\nvalue\n...`; the same bytes are
//! also read as a Pub/Sub message and as a saved session.
//!
//! Invariants: no panic, whatever the bytes; a decoded broadcast is an event packet keeping every
//! `Packet` invariant, delivered on this node only (`local`); a decoded entry re-encodes, as this
//! node would write it, to fields that decode to the same message.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tidings::adapter::redis::streams::wire::{
    decode_broadcast, decode_entry, decode_pubsub, decode_session, encode_entry, encode_message,
};
use tidings::parser::Packet;
use tidings_fuzz::check_sio_packet;

fuzz_target!(|data: &[u8]| {
    let _ = decode_session(data);
    if let Some(message) = decode_pubsub(data) {
        let again = encode_message(
            &message.uid,
            &message.nsp,
            message.kind,
            &message.data,
            &message.attachments,
        );
        assert_eq!(
            decode_pubsub(&again).as_ref(),
            Some(&message),
            "re-encoded as {again:02x?}"
        );
    }
    let parts: Vec<&[u8]> = data.split(|b| *b == b'\n').collect();
    let fields: Vec<(Vec<u8>, Vec<u8>)> = parts
        .chunks_exact(2)
        .map(|kv| (kv[0].to_vec(), kv[1].to_vec()))
        .collect();
    let Some(message) = decode_entry(&fields) else {
        return;
    };
    if let Some((event, opts)) = decode_broadcast(&message) {
        assert!(opts.local, "a received broadcast is never published again");
        let packet = Packet::event(message.nsp.clone(), event, None)
            .with_attachments(message.attachments.clone());
        check_sio_packet(&packet, usize::MAX);
    }
    let again = encode_entry(
        &message.uid,
        &message.nsp,
        message.kind,
        &message.data,
        &message.attachments,
        message.seq.unwrap_or(0),
    );
    let again: Vec<(Vec<u8>, Vec<u8>)> = again
        .into_iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v))
        .collect();
    let mut expected = message.clone();
    expected.seq = Some(message.seq.unwrap_or(0));
    assert_eq!(
        decode_entry(&again),
        Some(expected),
        "re-encoded as {again:02x?}"
    );
});
