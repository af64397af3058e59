//! An HTTP long-polling payload: `decode_payload` (records split on `\x1e`, `b` + base64 for binary)
//! and, from the same bytes read as structured frames, `encode_payload`.
//!
//! Invariants, decoding: the body must be UTF-8; a decoded payload has one packet per record, never
//! more than the limit, and re-encodes to exactly the input (base64 is canonical, so nothing is
//! consumed twice or skipped); the limited decode agrees with the unlimited one (same packets, or
//! `TooManyPackets` exactly when the limit is passed before an earlier error).
//! Encoding: `decode_payload(encode_payload(frames)) == frames` for separator-free frames, and the
//! payload's length is what `Frame::polling_len` announces.

#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tidings::engineio::codec::{self, DecodeError, Frame, SEPARATOR};
use tidings_fuzz::{ClientFrame, check_payload_round_trip, encode_payload_checked, frame_of};

/// The server's default `max_packets_per_payload` is 1024; a small limit is reached more often.
const LIMIT: usize = 8;

fuzz_target!(|data: &[u8]| {
    let body = Bytes::copy_from_slice(data);
    let records = data.iter().filter(|&&b| b == SEPARATOR).count() + 1;

    let full = codec::decode_payload(body.clone(), usize::MAX);
    match &full {
        Ok(packets) => {
            assert_eq!(packets.len(), records);
            let frames: Vec<Frame> = packets.iter().map(frame_of).collect();
            assert_eq!(encode_payload_checked(&frames), data, "re-encoding differs");
        }
        Err(DecodeError::InvalidUtf8) => assert!(std::str::from_utf8(data).is_err()),
        Err(DecodeError::TooManyPackets) => panic!("TooManyPackets without a limit"),
        Err(_) => assert!(std::str::from_utf8(data).is_ok()),
    }

    let limited = codec::decode_payload(body, LIMIT);
    match (&full, &limited) {
        (Ok(_), _) if records > LIMIT => assert_eq!(limited, Err(DecodeError::TooManyPackets)),
        (Ok(_), _) => assert_eq!(&limited, &full),
        (Err(DecodeError::InvalidUtf8), _) => assert_eq!(&limited, &full),
        (Err(_), Ok(_)) => panic!("limited decode accepted what the full one refused"),
        (Err(e), Err(l)) => assert!(
            l == e || *l == DecodeError::TooManyPackets,
            "{e:?} vs {l:?}"
        ),
    }
    if let Ok(packets) = &limited {
        assert!(packets.len() <= LIMIT);
    }

    // The same bytes as a list of frames: encode, then decode back.
    if let Ok(frames) = Vec::<ClientFrame>::arbitrary_take_rest(Unstructured::new(data)) {
        let frames: Vec<Frame> = frames.iter().map(ClientFrame::to_frame).collect();
        check_payload_round_trip(&frames);
    }
});
