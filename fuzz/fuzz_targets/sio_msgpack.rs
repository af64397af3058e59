//! One binary message through the msgpack parser's decoder (`msgpack::Decoder::decode`, the npm
//! socket.io-msgpack-parser's wire form), with the default limits.
//!
//! Invariants: no panic, whatever the bytes (nesting, declared lengths, markers); a decoded packet
//! keeps every `Packet` invariant and holds no more binary values than the limit, and no more binary
//! bytes than the message; it re-encodes as msgpack to bytes that decode to the same packet; and, the
//! in-memory form being one for both parsers, it also re-encodes through the JSON parser to itself.

#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use tidings::parser::msgpack::{self, Decoder};
use tidings::parser::packet::Limits;
use tidings_fuzz::check_sio_packet;

fuzz_target!(|data: &[u8]| {
    let max = Limits::default().max_attachments;
    let input = Bytes::copy_from_slice(data);
    let Ok(packet) = Decoder::default().decode(&input) else {
        return;
    };
    assert!(packet.attachments.len() <= max);
    let binary: usize = packet.attachments.iter().map(Bytes::len).sum();
    assert!(
        binary <= data.len(),
        "{binary} binary bytes from {} bytes",
        data.len()
    );

    let mut again = BytesMut::new();
    msgpack::encode(&packet, &mut again);
    let again = again.freeze();
    assert_eq!(
        Decoder::default().decode(&again).as_ref(),
        Ok(&packet),
        "re-encoded as {again:02x?}"
    );
    check_sio_packet(&packet, max);
});
