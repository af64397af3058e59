//! The client's bytes as the WebSocket transport reads them: the decoder of RFC 6455 frames.
//!
//! Invariants: the messages and the outcome do not depend on how the bytes are split across reads
//! (the whole input, then the same cut at a fuzzer-chosen point, then one byte per read); text
//! messages are UTF-8; no data message exceeds the limit; control payloads are at most 125 bytes; an
//! error's close code is 1002, 1007 or 1009; nothing follows a close.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tidings::engineio::fuzzing::ws_decode;

const MAX: usize = 256;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, input)) = data.split_first() else {
        return;
    };
    let whole = ws_decode(MAX, &[input]);
    let at = usize::from(cut).min(input.len());
    assert_eq!(ws_decode(MAX, &[&input[..at], &input[at..]]), whole);
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(ws_decode(MAX, &bytes), whole);

    let (messages, error) = whole;
    for (i, (opcode, bytes)) in messages.iter().enumerate() {
        match opcode {
            0x1 => assert!(std::str::from_utf8(bytes).is_ok()),
            0x2 => {}
            0x8 => assert_eq!(i + 1, messages.len(), "nothing after a close"),
            0x9 | 0xa => assert!(bytes.len() <= 125),
            other => panic!("opcode {other}"),
        }
        if *opcode <= 0x2 {
            assert!(bytes.len() <= MAX);
        }
    }
    if let Some(code) = error {
        assert!(matches!(code, 1002 | 1007 | 1009), "close code {code}");
    }
});
