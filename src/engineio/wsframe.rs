//! The server side of RFC 6455 framing, sans-IO: bytes from the client in, whole messages or a
//! close code out; frame headers for what the server writes.
//!
//! It owns the WebSocket's byte-level rules (masking, fragmentation, control frames, the size limit,
//! UTF-8 of text messages and close reasons) and keeps nothing between reads but the tail of a frame
//! split across them, so an idle connection costs no buffer at all: the transport reads into a
//! buffer of its own and hands the bytes over. It never does I/O and never sees the Engine.IO layer.

use bytes::Bytes;

/// Opcodes (RFC 6455 §5.2).
const CONTINUATION: u8 = 0x0;
pub(crate) const TEXT: u8 = 0x1;
pub(crate) const BINARY: u8 = 0x2;
pub(crate) const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
pub(crate) const PONG: u8 = 0xa;

/// Close codes the server sends (RFC 6455 §7.4.1).
pub(crate) const CLOSE_NORMAL: u16 = 1000;
pub(crate) const CLOSE_PROTOCOL: u16 = 1002;
pub(crate) const CLOSE_INVALID: u16 = 1007;
pub(crate) const CLOSE_SIZE: u16 = 1009;

/// A message from the client.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Message {
    /// A text message, valid UTF-8.
    Text(Bytes),
    Binary(Bytes),
    /// A ping, to be answered with a pong carrying the same bytes.
    Ping(Bytes),
    Pong,
    /// The client closes the connection, with its status code if it gave one.
    Close(Option<u16>),
}

/// Why the client's bytes are not a WebSocket: the close code to answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// Broke the framing rules (1002).
    Protocol(&'static str),
    /// A message over the size limit (1009).
    TooLarge,
    /// Text that is not UTF-8 (1007).
    Utf8,
}

impl FrameError {
    /// The close code that answers it.
    pub(crate) fn code(self) -> u16 {
        match self {
            Self::Protocol(_) => CLOSE_PROTOCOL,
            Self::TooLarge => CLOSE_SIZE,
            Self::Utf8 => CLOSE_INVALID,
        }
    }
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Protocol(why) => write!(f, "websocket protocol error: {why}"),
            Self::TooLarge => f.write_str("websocket message too large"),
            Self::Utf8 => f.write_str("websocket text is not UTF-8"),
        }
    }
}

/// What is kept between reads: only while a frame or a fragmented message is incomplete.
#[derive(Debug, Default)]
struct Partial {
    /// The unread tail of the input: an incomplete frame.
    tail: Vec<u8>,
    /// A fragmented message so far: its opcode and the unmasked bytes of its frames.
    message: Option<(u8, Vec<u8>)>,
}

/// Decodes the client's frames into messages, at most `max_message` bytes each.
#[derive(Debug)]
pub(crate) struct Decoder {
    max_message: usize,
    /// `None` between whole frames: the usual state of an idle connection, which holds nothing.
    partial: Option<Box<Partial>>,
}

/// A parsed frame header.
struct Header {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    /// Header length in bytes.
    len: usize,
    payload: usize,
}

impl Decoder {
    pub(crate) fn new(max_message: usize) -> Self {
        Self {
            max_message,
            partial: None,
        }
    }

    /// Whether bytes of an incomplete frame or message are held.
    #[cfg(test)]
    fn holds(&self) -> bool {
        self.partial.is_some()
    }

    /// Decodes `input`, the next bytes from the client, handing each complete message to `out` in
    /// order. An error ends the connection (answer with [`FrameError::code`]); messages before it
    /// have been handed over. A close message is the last: bytes after it are ignored.
    pub(crate) fn decode(
        &mut self,
        input: &[u8],
        mut out: impl FnMut(Message),
    ) -> Result<(), FrameError> {
        let mut partial = self.partial.take();
        let joined;
        let data: &[u8] = match partial.as_mut() {
            Some(p) if !p.tail.is_empty() => {
                p.tail.extend_from_slice(input);
                joined = std::mem::take(&mut p.tail);
                &joined
            }
            _ => input,
        };
        let mut at = 0;
        let result = loop {
            let header = match parse_header(&data[at..]) {
                Ok(Some(h)) => h,
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            };
            if let Err(e) = self.check(&header, partial.as_deref()) {
                break Err(e);
            }
            if data.len() - at < header.len + header.payload {
                break Ok(());
            }
            let start = at + header.len;
            let payload = &data[start..start + header.payload];
            at = start + header.payload;
            match self.frame(&header, payload, &mut partial) {
                Ok(Some(msg)) => {
                    let close = matches!(msg, Message::Close(_));
                    out(msg);
                    if close {
                        at = data.len();
                        break Ok(());
                    }
                }
                Ok(None) => {}
                Err(e) => break Err(e),
            }
        };
        result?;
        if at < data.len() {
            let p = partial.get_or_insert_with(Box::default);
            p.tail.clear();
            p.tail.extend_from_slice(&data[at..]);
        }
        // Nothing incomplete: nothing held.
        if partial
            .as_ref()
            .is_some_and(|p| p.tail.is_empty() && p.message.is_none())
        {
            partial = None;
        }
        self.partial = partial;
        Ok(())
    }

    /// The rules a header must meet before its payload is even waited for.
    fn check(&self, h: &Header, partial: Option<&Partial>) -> Result<(), FrameError> {
        let fragmenting = partial.and_then(|p| p.message.as_ref());
        match h.opcode {
            CLOSE | PING | PONG => {
                if !h.fin {
                    return Err(FrameError::Protocol("fragmented control frame"));
                }
                if h.payload > 125 {
                    return Err(FrameError::Protocol("control frame over 125 bytes"));
                }
            }
            TEXT | BINARY => {
                if fragmenting.is_some() {
                    return Err(FrameError::Protocol("new message inside a fragmented one"));
                }
                if h.payload > self.max_message {
                    return Err(FrameError::TooLarge);
                }
            }
            CONTINUATION => {
                let Some((_, so_far)) = fragmenting else {
                    return Err(FrameError::Protocol("continuation without a message"));
                };
                if so_far.len() + h.payload > self.max_message {
                    return Err(FrameError::TooLarge);
                }
            }
            _ => return Err(FrameError::Protocol("unknown opcode")),
        }
        Ok(())
    }

    /// One complete frame: a message when it completes one.
    fn frame(
        &self,
        h: &Header,
        masked: &[u8],
        partial: &mut Option<Box<Partial>>,
    ) -> Result<Option<Message>, FrameError> {
        match h.opcode {
            PING => Ok(Some(Message::Ping(unmask(masked, h.mask).into()))),
            PONG => Ok(Some(Message::Pong)),
            CLOSE => close(&unmask(masked, h.mask)).map(|code| Some(Message::Close(code))),
            TEXT | BINARY if h.fin => message(h.opcode, unmask(masked, h.mask)).map(Some),
            TEXT | BINARY => {
                let p = partial.get_or_insert_with(Box::default);
                p.message = Some((h.opcode, unmask(masked, h.mask)));
                Ok(None)
            }
            _ => {
                // A continuation (checked): `check` saw the message.
                let Some(p) = partial.as_mut() else {
                    return Err(FrameError::Protocol("continuation without a message"));
                };
                let Some((_, so_far)) = p.message.as_mut() else {
                    return Err(FrameError::Protocol("continuation without a message"));
                };
                let from = so_far.len();
                so_far.extend_from_slice(masked);
                apply_mask(&mut so_far[from..], h.mask);
                if !h.fin {
                    return Ok(None);
                }
                let (opcode, bytes) = p.message.take().unwrap_or((BINARY, Vec::new()));
                message(opcode, bytes).map(Some)
            }
        }
    }
}

/// A whole data message.
fn message(opcode: u8, bytes: Vec<u8>) -> Result<Message, FrameError> {
    if opcode == TEXT {
        if std::str::from_utf8(&bytes).is_err() {
            return Err(FrameError::Utf8);
        }
        Ok(Message::Text(bytes.into()))
    } else {
        Ok(Message::Binary(bytes.into()))
    }
}

/// A close frame's body: nothing, or a valid status code and a UTF-8 reason (RFC 6455 §5.5.1).
fn close(body: &[u8]) -> Result<Option<u16>, FrameError> {
    match body {
        [] => Ok(None),
        [_] => Err(FrameError::Protocol("close frame of one byte")),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            let valid = matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999);
            if !valid {
                return Err(FrameError::Protocol("invalid close code"));
            }
            if std::str::from_utf8(reason).is_err() {
                return Err(FrameError::Utf8);
            }
            Ok(Some(code))
        }
    }
}

/// A client frame's header from the front of `buf`; `None` while incomplete.
fn parse_header(buf: &[u8]) -> Result<Option<Header>, FrameError> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(FrameError::Protocol("reserved bits set"));
    }
    if b1 & 0x80 == 0 {
        return Err(FrameError::Protocol("unmasked client frame"));
    }
    let (payload, at) = match b1 & 0x7f {
        126 => {
            let Some(b) = buf.get(2..4) else {
                return Ok(None);
            };
            (u64::from(u16::from_be_bytes([b[0], b[1]])), 4)
        }
        127 => {
            let Some(b) = buf.get(2..10) else {
                return Ok(None);
            };
            let mut len = [0u8; 8];
            len.copy_from_slice(b);
            let len = u64::from_be_bytes(len);
            if len >> 63 != 0 {
                return Err(FrameError::Protocol("payload length with the high bit set"));
            }
            (len, 10)
        }
        n => (u64::from(n), 2),
    };
    let Some(mask) = buf.get(at..at + 4) else {
        return Ok(None);
    };
    Ok(Some(Header {
        fin: b0 & 0x80 != 0,
        opcode: b0 & 0x0f,
        mask: [mask[0], mask[1], mask[2], mask[3]],
        len: at + 4,
        // Past the address space is past any limit.
        payload: usize::try_from(payload).unwrap_or(usize::MAX),
    }))
}

fn unmask(masked: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = masked.to_vec();
    apply_mask(&mut out, mask);
    out
}

fn apply_mask(bytes: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = bytes.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let v = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) ^ word;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i];
    }
}

/// The header of an unmasked, unfragmented server frame of `len` payload bytes: FIN and the opcode,
/// then the length in 7, 7+16 or 7+64 bits. Returns the header and how many of its bytes are used.
pub(crate) fn header(opcode: u8, len: usize) -> ([u8; 10], usize) {
    let mut out = [0u8; 10];
    out[0] = 0x80 | opcode;
    let used = if len < 126 {
        // Fits: len < 126.
        out[1] = len as u8;
        2
    } else if let Ok(len) = u16::try_from(len) {
        out[1] = 126;
        out[2..4].copy_from_slice(&len.to_be_bytes());
        4
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    (out, used)
}

/// A close frame with `code`, whole.
pub(crate) fn close_frame(code: u16) -> Bytes {
    let (head, used) = header(CLOSE, 2);
    let mut out = head[..used].to_vec();
    out.extend_from_slice(&code.to_be_bytes());
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame, masked with `mask`.
    fn client(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    fn decode_all(d: &mut Decoder, input: &[u8]) -> (Vec<Message>, Result<(), FrameError>) {
        let mut got = Vec::new();
        let r = d.decode(input, |m| got.push(m));
        (got, r)
    }

    const M: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    #[test]
    fn whole_frames_in_one_read_and_byte_by_byte() {
        let mut input = client(true, TEXT, b"4hello", M);
        input.extend(client(true, BINARY, &[1, 2, 3], M));
        input.extend(client(true, PING, b"p", M));
        input.extend(client(true, TEXT, &vec![b'x'; 70_000], M));
        let want = vec![
            Message::Text(Bytes::from_static(b"4hello")),
            Message::Binary(Bytes::from_static(&[1, 2, 3])),
            Message::Ping(Bytes::from_static(b"p")),
            Message::Text(Bytes::from(vec![b'x'; 70_000])),
        ];
        let mut d = Decoder::new(1_000_000);
        assert_eq!(decode_all(&mut d, &input), (want, Ok(())));
        assert!(!d.holds(), "nothing held between whole frames");
        let mut d = Decoder::new(1_000_000);
        let mut got = Vec::new();
        for b in &input {
            d.decode(std::slice::from_ref(b), |m| got.push(m)).unwrap();
        }
        assert_eq!(got.len(), 4);
        assert!(!d.holds());
    }

    #[test]
    fn fragments_are_joined_around_control_frames() {
        let mut input = client(false, TEXT, b"4hel", M);
        input.extend(client(true, PING, b"", M));
        input.extend(client(false, CONTINUATION, b"lo ", M));
        input.extend(client(true, CONTINUATION, "wörld".as_bytes(), M));
        let mut d = Decoder::new(100);
        let (got, r) = decode_all(&mut d, &input);
        assert_eq!(r, Ok(()));
        assert_eq!(
            got,
            vec![
                Message::Ping(Bytes::new()),
                Message::Text(Bytes::from("4hello wörld"))
            ]
        );
        assert!(!d.holds());
    }

    #[test]
    fn broken_framing_gets_its_close_code() {
        let cases: Vec<(Vec<u8>, u16)> = vec![
            // Unmasked.
            (vec![0x81, 0x01, b'a'], CLOSE_PROTOCOL),
            // Reserved bit.
            (vec![0xc1, 0x80, 0, 0, 0, 0], CLOSE_PROTOCOL),
            // Unknown opcode.
            (client(true, 0x3, b"", M), CLOSE_PROTOCOL),
            // Fragmented ping, oversized ping.
            (client(false, PING, b"", M), CLOSE_PROTOCOL),
            (client(true, PING, &[0; 126], M), CLOSE_PROTOCOL),
            // Continuation with nothing to continue; a new message inside a fragmented one.
            (client(true, CONTINUATION, b"a", M), CLOSE_PROTOCOL),
            (
                [client(false, TEXT, b"a", M), client(true, TEXT, b"b", M)].concat(),
                CLOSE_PROTOCOL,
            ),
            // Too large, whole or in fragments; announced before its bytes arrive.
            (client(true, TEXT, &[b'a'; 11], M), CLOSE_SIZE),
            (
                [
                    client(false, BINARY, &[0; 6], M),
                    client(true, CONTINUATION, &[0; 6], M),
                ]
                .concat(),
                CLOSE_SIZE,
            ),
            (
                vec![0x82, 0xff, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4],
                CLOSE_SIZE,
            ),
            // Not UTF-8, whole or split across fragments' ends only at the end.
            (client(true, TEXT, &[0xff, 0xfe], M), CLOSE_INVALID),
            // Close bodies: one byte, a reserved code, a reason that is not UTF-8.
            (client(true, CLOSE, &[3], M), CLOSE_PROTOCOL),
            (
                client(true, CLOSE, &1005u16.to_be_bytes(), M),
                CLOSE_PROTOCOL,
            ),
            (client(true, CLOSE, &[0x03, 0xe8, 0xff], M), CLOSE_INVALID),
        ];
        for (i, (input, code)) in cases.into_iter().enumerate() {
            let mut d = Decoder::new(10);
            let (_, r) = decode_all(&mut d, &input);
            assert_eq!(r.map_err(FrameError::code), Err(code), "case {i}");
        }
    }

    #[test]
    fn utf8_split_across_fragments_is_accepted() {
        let text = "é".as_bytes();
        let input = [
            client(false, TEXT, &text[..1], M),
            client(true, CONTINUATION, &text[1..], M),
        ]
        .concat();
        let mut d = Decoder::new(10);
        assert_eq!(
            decode_all(&mut d, &input),
            (vec![Message::Text(Bytes::from("é"))], Ok(()))
        );
    }

    #[test]
    fn a_close_ends_the_input() {
        let input = [
            client(true, CLOSE, &1000u16.to_be_bytes(), M),
            client(true, TEXT, b"after", M),
        ]
        .concat();
        let mut d = Decoder::new(10);
        assert_eq!(
            decode_all(&mut d, &input),
            (vec![Message::Close(Some(1000))], Ok(()))
        );
        let mut d = Decoder::new(10);
        assert_eq!(
            decode_all(&mut d, &client(true, CLOSE, b"", M)),
            (vec![Message::Close(None)], Ok(()))
        );
    }

    #[test]
    fn server_headers() {
        assert_eq!(header(TEXT, 5).0[..2], [0x81, 5]);
        assert_eq!(header(BINARY, 126).0[..4], [0x82, 126, 0, 126]);
        assert_eq!(
            header(TEXT, 65_536).0[..10],
            [0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]
        );
        assert_eq!(&close_frame(1002)[..], &[0x88, 2, 0x03, 0xea]);
    }
}
