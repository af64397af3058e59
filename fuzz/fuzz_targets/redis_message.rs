//! One message from the Redis broadcast channel through the Redis adapter's wire codec
//! (`redis::wire::decode_broadcast`, the Node `@socket.io/redis-adapter`'s
//! `[uid, {type, data, nsp}, {rooms, except, flags}]` in msgpack).
//!
//! Invariants: no panic, whatever the bytes; a decoded broadcast keeps every `Packet` invariant
//! (binary values as attachments behind placeholders, numbered from 0) and is delivered on this node
//! only (`local`); it re-encodes, as this node would publish it, to bytes that decode to the same
//! broadcast.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tidings::adapter::redis::wire::{decode_broadcast, encode_broadcast};
use tidings_fuzz::check_sio_packet;

fuzz_target!(|data: &[u8]| {
    let Some(broadcast) = decode_broadcast(data) else {
        return;
    };
    assert!(
        broadcast.opts.local,
        "a received broadcast is never published again"
    );
    check_sio_packet(&broadcast.packet, usize::MAX);
    let again = encode_broadcast(&broadcast.uid, &broadcast.packet, &broadcast.opts);
    assert_eq!(
        decode_broadcast(&again).as_ref(),
        Some(&broadcast),
        "re-encoded as {again:02x?}"
    );
});
