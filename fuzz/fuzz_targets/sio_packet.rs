//! One Socket.IO text message through `Decoder::decode_text`: the header (type, attachment count,
//! namespace, ack id) and the JSON payload, with the default limits.
//!
//! Invariants: non-UTF-8 is refused as such; an error leaves the decoder idle; a binary packet waits
//! for exactly the count it declared (never more than the limit) and then completes; every packet
//! satisfies the codec's invariants and re-encodes to text that decodes to the same packet.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tidings::parser::packet::{DecodeError, Decoder, Limits};
use tidings_fuzz::{check_sio_packet, declared_attachments};

fuzz_target!(|data: &[u8]| {
    let max = Limits::default().max_attachments;
    let mut decoder = Decoder::default();
    let mut result = decoder.decode_text(data);
    if std::str::from_utf8(data).is_err() {
        assert_eq!(result, Err(DecodeError::InvalidUtf8));
    }
    let mut parts = Vec::new();
    if result == Ok(None) {
        let declared = declared_attachments(data).expect("waits only after a declared count");
        assert!(
            declared >= 1 && declared <= max as u64,
            "waits for {declared}"
        );
        while result == Ok(None) {
            assert!(decoder.is_awaiting_attachments());
            assert!(parts.len() < max, "more than {max} attachments pending");
            let part = Bytes::from(vec![parts.len() as u8; parts.len()]);
            parts.push(part.clone());
            result = decoder.decode_binary(part);
        }
        assert_eq!(parts.len() as u64, declared);
    }
    assert!(!decoder.is_awaiting_attachments());
    match result {
        Ok(Some(packet)) => {
            assert_eq!(packet.attachments, parts);
            if packet.kind.is_binary() {
                assert_eq!(declared_attachments(data), Some(parts.len() as u64));
            }
            check_sio_packet(&packet, max);
        }
        Ok(None) => unreachable!(),
        Err(_) => {
            // Idle after an error: a binary message now is unexpected.
            assert_eq!(
                decoder.decode_binary(Bytes::new()),
                Err(DecodeError::UnexpectedBinary)
            );
        }
    }
});
