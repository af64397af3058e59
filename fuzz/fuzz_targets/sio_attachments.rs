//! The binary-attachment state machine of `Decoder`: a text message, then any sequence of text and
//! binary messages, under a limit that varies from 0 to 16.
//!
//! Each step is checked against a model of the state machine in the module docs: idle or collecting
//! `(declared, received)`. A text while collecting is `UnexpectedText` and resets; a binary while idle
//! is `UnexpectedBinary`; the declared count is never above the limit and never exceeded; a packet
//! completes on exactly its last attachment, holding the received parts in order; every error leaves
//! the decoder idle; and every completed packet re-encodes to itself.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tidings::parser::packet::DecodeError;
use tidings_fuzz::{
    AttachmentMessage as Message, AttachmentsInput, check_sio_packet, declared_attachments, decoder,
};

/// What the decoder should hold: nothing, or a packet's declared count and its parts so far.
enum Model {
    Idle,
    Collecting { declared: usize, parts: Vec<Bytes> },
}

fuzz_target!(|input: AttachmentsInput| {
    let max = usize::from(input.max_attachments % 17);
    let mut decoder = decoder(max);
    let mut model = Model::Idle;
    let messages = std::iter::once(Message::Text(input.first)).chain(input.rest);
    for message in messages {
        match message {
            Message::Text(text) => {
                let text = text.to_bytes();
                let result = decoder.decode_text(&text);
                if let Model::Collecting { .. } = model {
                    assert_eq!(result, Err(DecodeError::UnexpectedText));
                    model = Model::Idle;
                } else {
                    match result {
                        Ok(None) => {
                            let declared = declared_attachments(&text).expect("a declared count");
                            assert!(declared >= 1 && declared <= max as u64);
                            model = Model::Collecting {
                                declared: declared as usize,
                                parts: Vec::new(),
                            };
                        }
                        Ok(Some(packet)) => {
                            assert!(packet.attachments.is_empty());
                            if packet.kind.is_binary() {
                                assert_eq!(declared_attachments(&text), Some(0));
                            }
                            check_sio_packet(&packet, max);
                        }
                        Err(DecodeError::TooManyAttachments) => {
                            assert!(declared_attachments(&text).is_none_or(|n| n > max as u64));
                        }
                        Err(DecodeError::UnexpectedText | DecodeError::UnexpectedBinary) => {
                            panic!("idle decoder gave {result:?}")
                        }
                        Err(_) => {}
                    }
                }
            }
            Message::Binary(bytes) => {
                let bytes = Bytes::from(bytes.0);
                let result = decoder.decode_binary(bytes.clone());
                model = match model {
                    Model::Idle => {
                        assert_eq!(result, Err(DecodeError::UnexpectedBinary));
                        Model::Idle
                    }
                    Model::Collecting {
                        declared,
                        mut parts,
                    } => {
                        parts.push(bytes);
                        assert!(parts.len() <= declared && parts.len() <= max);
                        if parts.len() < declared {
                            assert_eq!(result, Ok(None));
                            Model::Collecting { declared, parts }
                        } else {
                            let packet = result.expect("last attachment").expect("complete");
                            assert!(packet.kind.is_binary());
                            assert_eq!(packet.attachments, parts);
                            check_sio_packet(&packet, max);
                            Model::Idle
                        }
                    }
                };
            }
        }
        assert_eq!(
            decoder.is_awaiting_attachments(),
            matches!(model, Model::Collecting { .. })
        );
    }
});
