//! The committed seeds (`fuzz/seeds/<target>/<name>`), written from the protocol notes' examples and
//! the unit-test tables.
//!
//! The raw targets take the bytes as they are. The structured targets read their input through
//! `arbitrary`, so their seeds are written by [`Writer`], which lays bytes out the way
//! `arbitrary` 1.x reads them (integers little-endian from the front, enum tags as a `u32`, a
//! continue-flag before each `Vec` element, string and [`Blob`] lengths taken from the end).
//! `tests::structured_seeds_read_back` checks that layout against the `arbitrary` in use.
//!
//! `TIDINGS_WRITE_SEEDS=1 cargo test --manifest-path fuzz/Cargo.toml` rewrites the files;
//! `tests::committed_seeds_are_current` fails when they are out of date. Inputs kept from crashes sit
//! beside them under their own names and are not touched.

use crate::{
    AttachmentMessage, AttachmentsInput, Blob, ClientFrame, Json, SessionConfig, SessionInput,
    SessionStep, SioText, TextMessage,
};

/// One read, in the order `arbitrary` makes them.
enum Op {
    /// Bytes read from the front.
    Front(Vec<u8>),
    /// A collection length, read from the end.
    Len(usize),
}

/// Lays out bytes so that `arbitrary` reads back the values written into it.
#[derive(Default)]
pub struct Writer {
    ops: Vec<Op>,
}

impl Writer {
    fn front(&mut self, bytes: &[u8]) {
        self.ops.push(Op::Front(bytes.to_vec()));
    }

    /// An enum variant `index` of `count`: `arbitrary` picks `(u32 * count) >> 32`.
    fn variant(&mut self, index: u32, count: u32) {
        let tag = (u64::from(index) << 32).div_ceil(u64::from(count));
        self.front(&u32::try_from(tag).expect("index < count").to_le_bytes());
    }

    fn bytes(&mut self, bytes: &[u8]) {
        self.ops.push(Op::Len(bytes.len()));
        self.front(bytes);
    }

    /// The finished input.
    pub fn finish(self) -> Vec<u8> {
        let front: usize = self
            .ops
            .iter()
            .map(|op| match op {
                Op::Front(b) => b.len(),
                Op::Len(_) => 0,
            })
            .sum();
        // How many bytes each length takes depends on how much is left when it is read, which
        // depends on the lengths' own sizes: iterate to the fixed point (sizes only grow).
        let lens = self
            .ops
            .iter()
            .filter(|op| matches!(op, Op::Len(_)))
            .count();
        let mut widths = vec![1usize; lens];
        loop {
            let total = front + widths.iter().sum::<usize>();
            let mut next = Vec::with_capacity(lens);
            let (mut front_read, mut back_read) = (0, 0);
            for op in &self.ops {
                match op {
                    Op::Front(b) => front_read += b.len(),
                    Op::Len(_) => {
                        let remaining = total - front_read - back_read;
                        let width = match remaining {
                            0 => 0,
                            1..=256 => 1,
                            257..=65_537 => 2,
                            _ => panic!("seed too long for this writer"),
                        };
                        back_read += width;
                        next.push(width);
                    }
                }
            }
            if next == widths {
                break;
            }
            widths = next;
        }
        let mut out = Vec::new();
        let mut tail = Vec::new();
        let mut width = widths.iter();
        for op in &self.ops {
            match op {
                Op::Front(b) => out.extend_from_slice(b),
                Op::Len(n) => {
                    let w = *width.next().expect("one width per length");
                    let bytes = (*n as u64).to_be_bytes();
                    // Lengths are read from the end: the first one read is the last in the input.
                    let mut chunk = bytes[8 - w..].to_vec();
                    chunk.extend_from_slice(&tail);
                    tail = chunk;
                }
            }
        }
        out.extend_from_slice(&tail);
        out
    }
}

/// A value that can be written as `arbitrary` input.
pub trait ToSeed {
    /// Appends the reads that produce `self`.
    fn write(&self, w: &mut Writer);

    /// The input bytes for `self` alone.
    fn to_seed(&self) -> Vec<u8> {
        let mut w = Writer::default();
        self.write(&mut w);
        w.finish()
    }
}

macro_rules! int_seed {
    ($($t:ty),*) => {$(
        impl ToSeed for $t {
            fn write(&self, w: &mut Writer) {
                w.front(&self.to_le_bytes());
            }
        }
    )*};
}
int_seed!(u8, u16, u64, i64);

impl ToSeed for f64 {
    fn write(&self, w: &mut Writer) {
        self.to_bits().write(w);
    }
}

impl ToSeed for bool {
    fn write(&self, w: &mut Writer) {
        u8::from(*self).write(w);
    }
}

impl<T: ToSeed> ToSeed for Option<T> {
    fn write(&self, w: &mut Writer) {
        self.is_some().write(w);
        if let Some(v) = self {
            v.write(w);
        }
    }
}

impl<T: ToSeed> ToSeed for Vec<T> {
    fn write(&self, w: &mut Writer) {
        for item in self {
            true.write(w);
            item.write(w);
        }
        false.write(w);
    }
}

impl<T: ToSeed> ToSeed for Box<T> {
    fn write(&self, w: &mut Writer) {
        (**self).write(w);
    }
}

impl<A: ToSeed, B: ToSeed> ToSeed for (A, B) {
    fn write(&self, w: &mut Writer) {
        self.0.write(w);
        self.1.write(w);
    }
}

impl ToSeed for String {
    fn write(&self, w: &mut Writer) {
        w.bytes(self.as_bytes());
    }
}

impl ToSeed for Blob {
    fn write(&self, w: &mut Writer) {
        w.bytes(&self.0);
    }
}

impl ToSeed for Json {
    fn write(&self, w: &mut Writer) {
        const COUNT: u32 = 10;
        match self {
            Self::Null => w.variant(0, COUNT),
            Self::Bool(b) => {
                w.variant(1, COUNT);
                b.write(w);
            }
            Self::Int(n) => {
                w.variant(2, COUNT);
                n.write(w);
            }
            Self::UInt(n) => {
                w.variant(3, COUNT);
                n.write(w);
            }
            Self::Float(f) => {
                w.variant(4, COUNT);
                f.write(w);
            }
            Self::Str(s) => {
                w.variant(5, COUNT);
                s.write(w);
            }
            Self::Array(items) => {
                w.variant(6, COUNT);
                items.write(w);
            }
            Self::Object(entries) => {
                w.variant(7, COUNT);
                entries.write(w);
            }
            Self::Placeholder(n) => {
                w.variant(8, COUNT);
                n.write(w);
            }
            Self::OddPlaceholder(num) => {
                w.variant(9, COUNT);
                num.write(w);
            }
        }
    }
}

impl ToSeed for SioText {
    fn write(&self, w: &mut Writer) {
        self.kind.write(w);
        self.count.write(w);
        self.nsp.write(w);
        self.root_slash.write(w);
        self.comma.write(w);
        self.id.write(w);
        self.data.write(w);
        self.tail.write(w);
    }
}

impl ToSeed for TextMessage {
    fn write(&self, w: &mut Writer) {
        match self {
            Self::Raw(bytes) => {
                w.variant(0, 2);
                bytes.write(w);
            }
            Self::Built(text) => {
                w.variant(1, 2);
                text.write(w);
            }
        }
    }
}

impl ToSeed for ClientFrame {
    fn write(&self, w: &mut Writer) {
        match self {
            Self::Message(text) => {
                w.variant(0, 3);
                text.write(w);
            }
            Self::Control { kind, data } => {
                w.variant(1, 3);
                kind.write(w);
                data.write(w);
            }
            Self::Binary(bytes) => {
                w.variant(2, 3);
                bytes.write(w);
            }
        }
    }
}

impl ToSeed for AttachmentMessage {
    fn write(&self, w: &mut Writer) {
        match self {
            Self::Text(text) => {
                w.variant(0, 2);
                text.write(w);
            }
            Self::Binary(bytes) => {
                w.variant(1, 2);
                bytes.write(w);
            }
        }
    }
}

impl ToSeed for AttachmentsInput {
    fn write(&self, w: &mut Writer) {
        self.max_attachments.write(w);
        self.first.write(w);
        self.rest.write(w);
    }
}

impl ToSeed for SessionConfig {
    fn write(&self, w: &mut Writer) {
        self.websocket.write(w);
        self.ping_interval_ms.write(w);
        self.ping_timeout_ms.write(w);
        self.max_buffered.write(w);
        self.max_packets.write(w);
        self.max_attachments.write(w);
    }
}

impl ToSeed for SessionStep {
    fn write(&self, w: &mut Writer) {
        const COUNT: u32 = 8;
        match self {
            Self::Post(body) => {
                w.variant(0, COUNT);
                body.write(w);
            }
            Self::PostFrames(frames) => {
                w.variant(1, COUNT);
                frames.write(w);
            }
            Self::WsMessage(text) => {
                w.variant(2, COUNT);
                text.write(w);
            }
            Self::WsText(text) => {
                w.variant(3, COUNT);
                text.write(w);
            }
            Self::WsBinary(bytes) => {
                w.variant(4, COUNT);
                bytes.write(w);
            }
            Self::Pong => w.variant(5, COUNT),
            Self::Elapse(ms) => {
                w.variant(6, COUNT);
                ms.write(w);
            }
            Self::Collect(n) => {
                w.variant(7, COUNT);
                n.write(w);
            }
        }
    }
}

impl ToSeed for SessionInput {
    fn write(&self, w: &mut Writer) {
        self.config.write(w);
        self.steps.write(w);
    }
}

// ===== the seeds =====

/// A seed file: its name and its bytes.
pub type Seed = (&'static str, Vec<u8>);

fn raw(list: &[(&'static str, &[u8])]) -> Vec<Seed> {
    list.iter().map(|(n, b)| (*n, b.to_vec())).collect()
}

/// `4hello`-style Engine.IO packets, as WebSocket frames carry them.
pub fn eio_packet() -> Vec<Seed> {
    raw(&[
        ("message", b"4hello"),
        ("message-multibyte", "4€ünï🦀".as_bytes()),
        (
            "open",
            br#"0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#,
        ),
        ("close", b"1"),
        ("ping", b"2"),
        ("ping-probe", b"2probe"),
        ("pong-probe", b"3probe"),
        ("upgrade", b"5"),
        ("noop", b"6"),
        ("unknown-type", b"7"),
        ("empty", b""),
        ("binary-frame", &[1, 2, 3, 4]),
        ("not-utf8", b"4\xff\xfe"),
        ("socketio-event", br#"42["foo",{"a":[1,2]}]"#),
    ])
}

/// Polling payloads, with `b` + base64 binary packets.
pub fn eio_payload() -> Vec<Seed> {
    raw(&[
        ("notes-text-and-binary", b"4hello\x1ebAQIDBA=="),
        ("notes-three-packets", b"4hello\x1e2\x1e4world"),
        (
            "socketio-binary-event",
            b"451-[\"baz\",{\"_placeholder\":true,\"num\":0}]\x1ebAQIDBA==",
        ),
        (
            "multibyte",
            "40\x1e42[\"héllo\",\"日本語\",\"🦀\"]".as_bytes(),
        ),
        ("bad-base64", b"b!!!!"),
        ("base64-unpadded", b"bAQIDBA\x1e3"),
        ("base64-non-canonical", b"bAR=="),
        ("empty-base64", b"b"),
        ("trailing-separator", b"4a\x1e"),
        ("empty", b""),
        ("not-utf8", b"4\xff\xfe"),
        (
            "nine-packets",
            b"4a\x1e4b\x1e4c\x1e4d\x1e4e\x1e4f\x1e4g\x1e4h\x1e4i",
        ),
        ("close", b"1"),
        ("pong-and-noop", b"3\x1e6"),
    ])
}

/// Engine.IO v3 polling payloads: a first byte that is even selects the text format, odd the
/// binary one. From the reference's wire captures and the codec's tables.
pub fn eio3_payload() -> Vec<Seed> {
    let binary = |parts: &[&[u8]]| {
        let mut out = vec![1];
        for part in parts {
            out.extend_from_slice(part);
        }
        out
    };
    let text = |body: &str| {
        let mut out = vec![0];
        out.extend_from_slice(body.as_bytes());
        out
    };
    vec![
        ("text-handshake-reply", text("2:40")),
        ("text-pings", text("1:21:2")),
        (
            "text-utf16-lengths",
            text(r#"53:451-["hello","wörld😀",{"_placeholder":true,"num":0}]6:b4AQID"#),
        ),
        ("text-empty-packet", text("0:1:6")),
        ("text-split-surrogate", text("2:4😀")),
        ("text-short", text("9:4short")),
        ("text-no-colon", text("4hello")),
        ("text-huge-length", text("99999999999:4")),
        ("text-base64-ping", text("4:b2AA")),
        (
            "binary-reference",
            binary(&[
                &[0, 2, 0xff],
                b"40",
                &[0, 5, 6, 0xff],
                r#"451-["hello","wörld😀",{"_placeholder":true,"num":0}]"#.as_bytes(),
                &[1, 4, 0xff, 4, 1, 2, 3],
            ]),
        ),
        ("binary-bad-digit", binary(&[&[0, 10, 0xff], b"4"])),
        ("binary-too-long", binary(&[&[0, 2, 0xff], b"4"])),
        ("binary-no-terminator", binary(&[&[0, 1, 2, 3]])),
        ("binary-empty-binary", binary(&[&[1, 0, 0xff]])),
        ("binary-not-utf8", binary(&[&[0, 2, 0xff], b"4\xff"])),
    ]
}

/// Socket.IO packet texts: the canonical forms, the lenient ones, and hostile ones.
pub fn sio_packet() -> Vec<Seed> {
    raw(&[
        ("connect", b"0"),
        ("connect-auth", br#"0{"token":"123"}"#),
        ("connect-nsp", b"0/admin,"),
        ("connect-nsp-auth", br#"0/admin,{"token":"abc"}"#),
        ("connect-nsp-to-end", b"0/custom"),
        ("disconnect-nsp", b"1/admin,"),
        ("event", br#"2["foo",1]"#),
        ("event-ack-id", br#"212["foo"]"#),
        ("event-numeric-name", br#"2[1,"a"]"#),
        ("ack-nsp", br#"3/admin,13["bar"]"#),
        ("ack-no-data", b"3/admin,13"),
        ("connect-error", br#"4{"message":"Not authorized"}"#),
        (
            "connect-error-data",
            br#"4/admin,{"message":"Not authorized","data":{"a":1}}"#,
        ),
        ("connect-error-legacy", br#"4"legacy""#),
        (
            "binary-event",
            br#"51-["baz",{"_placeholder":true,"num":0}]"#,
        ),
        (
            "binary-event-nsp-ack",
            br#"52-/admin,7["a",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#,
        ),
        (
            "binary-ack",
            br#"61-15["bar",{"_placeholder":true,"num":0}]"#,
        ),
        (
            "binary-nested",
            br#"51-["n",{"deep":[{"x":{"_placeholder":true,"num":0}}]}]"#,
        ),
        ("binary-zero", br#"50-["none"]"#),
        (
            "multibyte",
            r#"2/ñamespace€,["héllo","日本語","🦀"]"#.as_bytes(),
        ),
        ("ack-id-max", br#"218446744073709551615["max"]"#),
        ("ack-id-overflow", br#"218446744073709551616["a"]"#),
        (
            "floats",
            br#"2["f",1.5e300,-0,1e-320,0.1,123456789012345678901234567890]"#,
        ),
        ("unrooted-nsp", br#"2admin,["a"]"#),
        ("reserved-name", br#"2["connect"]"#),
        (
            "placeholder-out-of-range",
            br#"51-["a",{"_placeholder":true,"num":5}]"#,
        ),
        ("huge-count", br#"5999999999999999999999-["a"]"#),
        ("lone-surrogate", br#"2["\ud800"]"#),
        ("not-utf8", b"2[\"\xc3\x28\"]"),
        ("truncated-utf8", b"\xf0\x9f\xa6"),
    ])
}

/// msgpack packets: what notepack.io writes for the npm client (bytes captured from Node), the
/// value forms it reads, and hostile ones.
pub fn sio_msgpack() -> Vec<Seed> {
    raw(&[
        // {type:0, data:undefined, nsp:"/"}
        ("connect", b"\x83\xa4type\x00\xa4data\xd4\x00\x00\xa3nsp\xa1/"),
        (
            "connect-auth",
            b"\x83\xa4type\x00\xa4data\x81\xa5token\xa3abc\xa3nsp\xa6/admin",
        ),
        ("disconnect", b"\x82\xa4type\x01\xa3nsp\xa1/"),
        // {type:2, data:["hello",1,Buffer[1,2,3]], options:{compress:true}, nsp:"/admin", id:3}
        (
            "event-binary-ack-id",
            b"\x85\xa4type\x02\xa4data\x93\xa5hello\x01\xc4\x03\x01\x02\x03\xa7options\x81\xa8compress\xc3\xa3nsp\xa6/admin\xa2id\x03",
        ),
        // A Uint8Array (ext 8, type 0), a Date (fixext 8, type 0), undefined (fixext 1, type 0).
        (
            "typed-array",
            b"\x83\xa4type\x02\xa4data\x92\xa2u8\xc7\x02\x00\x09\x08\xa3nsp\xa1/",
        ),
        (
            "date",
            b"\x83\xa4type\x02\xa4data\x92\xa1d\xd7\x00\x00\x00\x01\x8d\xf4\xdc\x54\x95\xa3nsp\xa1/",
        ),
        (
            "undefined",
            b"\x83\xa4type\x02\xa4data\x93\xa1u\x92\xd4\x00\x00\x01\x82\xa1a\xd4\x00\x00\xa1b\x02\xa3nsp\xa1/",
        ),
        (
            "numbers-ack",
            b"\x84\xa4type\x03\xa4data\x99\xff\xd0\xdf\xd1\xff\x38\xd2\xff\xff\x63\xc0\xd3\xff\xff\xff\xff\x4d\x2f\xa2\x00\xcb\x3f\xf8\x00\x00\x00\x00\x00\x00\xcd\x01\x2c\xce\x00\x01\x11\x70\xcf\x00\x00\x00\x01\x2a\x05\xf2\x00\xa3nsp\xa1/\xa2id\x00",
        ),
        (
            "connect-error",
            b"\x83\xa4type\x04\xa4data\x82\xa7message\xacunauthorized\xa4data\x81\xa6reason\xa9bad token\xa3nsp\xa6/admin",
        ),
        (
            "other-ext",
            b"\x83\xa4type\x02\xa4data\x93\xa1e\xd5\x05\x01\x02\xc7\x01\xff\x03\xa3nsp\xa1/",
        ),
        (
            "wide-forms",
            b"\xde\x00\x03\xa4type\x02\xa4data\xdc\x00\x02\xd9\x01e\xda\x00\x01f\xa3nsp\xdb\x00\x00\x00\x01/",
        ),
        ("huge-array", b"\x83\xa4type\x02\xa3nsp\xa1/\xa4data\xdd\xff\xff\xff\xff"),
        ("huge-map", b"\xdf\xff\xff\xff\xff"),
        (
            "huge-bin",
            b"\x83\xa4type\x02\xa3nsp\xa1/\xa4data\x92\xa1e\xc6\xff\xff\xff\xff",
        ),
        (
            "deep",
            b"\x83\xa4type\x02\xa3nsp\xa1/\xa4data\x92\xa1e\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\xc0",
        ),
        ("truncated", b"\x83\xa4type\x02\xa4data\x92\xa1b\xc4\x03xy"),
        ("trailing", b"\x82\xa4type\x01\xa3nsp\xa1/\x00"),
        (
            "placeholder-lookalike",
            b"\x83\xa4type\x02\xa3nsp\xa1/\xa4data\x92\x01\x82\xac_placeholder\xc3\xa3num\x00",
        ),
    ])
}

/// Handshake query strings.
pub fn handshake_query() -> Vec<Seed> {
    raw(&[
        ("polling", b"EIO=4&transport=polling&t=N8hyd6w"),
        ("polling-sid", b"EIO=4&transport=polling&sid=ab%2Dc"),
        (
            "websocket",
            b"EIO=4&transport=websocket&sid=lv_VI97HAXpY6yYWAAAC",
        ),
        ("lenient-escapes", b"a=%E2%82%AC&b=x+y&c=%zz&d=%4&e=%ff&&=v"),
        ("repeated-keys", b"EIO=4&EIO=3&transport"),
        ("old-protocol", b"EIO=3&transport=polling&b64=1&j=0"),
        ("multibyte", "sid=é€🦀&transport=poll%69ng".as_bytes()),
        ("not-utf8-escape", b"sid=%C3%28%F0%9F%A6"),
        ("lone-percent", b"%"),
    ])
}

fn text(s: &str) -> TextMessage {
    TextMessage::Raw(Blob(s.as_bytes().to_vec()))
}

fn blob(b: &[u8]) -> Blob {
    Blob(b.to_vec())
}

/// Binary packets and their attachments, in and out of order.
pub fn sio_attachments() -> Vec<(&'static str, AttachmentsInput)> {
    use AttachmentMessage::{Binary, Text};
    let input = |max, first: &str, rest| AttachmentsInput {
        max_attachments: max,
        first: text(first),
        rest,
    };
    vec![
        (
            "notes-binary-event",
            input(
                10,
                r#"51-["baz",{"_placeholder":true,"num":0}]"#,
                vec![Binary(blob(&[1, 2, 3, 4]))],
            ),
        ),
        (
            "nsp-ack-two-parts",
            input(
                10,
                r#"52-/admin,7["a",{"_placeholder":true,"num":1},{"_placeholder":true,"num":0}]"#,
                vec![Binary(blob(b"first")), Binary(blob(b""))],
            ),
        ),
        (
            "binary-ack",
            input(
                10,
                r#"61-15["bar",{"_placeholder":true,"num":0}]"#,
                vec![Binary(blob(&[0xff]))],
            ),
        ),
        (
            "text-mid-binary",
            input(
                10,
                r#"51-["a",{"_placeholder":true,"num":0}]"#,
                vec![
                    Text(text(r#"2["b"]"#)),
                    Binary(blob(b"late")),
                    Text(text(r#"2["c"]"#)),
                ],
            ),
        ),
        (
            "over-limit",
            input(2, r#"53-["a"]"#, vec![Binary(blob(b"x"))]),
        ),
        (
            "limit-zero",
            input(0, r#"51-["a"]"#, vec![Binary(blob(b"x"))]),
        ),
        (
            "zero-attachments",
            input(10, r#"50-["none"]"#, vec![Binary(blob(b"x"))]),
        ),
        (
            "two-packets",
            input(
                10,
                r#"51-["a",{"_placeholder":true,"num":0}]"#,
                vec![
                    Binary(blob("€".as_bytes())),
                    Text(text(
                        r#"62-/x,9[{"_placeholder":true,"num":1},{"_placeholder":true,"num":0}]"#,
                    )),
                    Binary(blob(b"\x00\xff")),
                    Binary(blob(b"b")),
                ],
            ),
        ),
        (
            "built-nested",
            AttachmentsInput {
                max_attachments: 10,
                first: TextMessage::Built(SioText {
                    kind: 5,
                    count: Some(2),
                    nsp: Some("/日本".to_owned()),
                    root_slash: true,
                    comma: true,
                    id: Some(42),
                    data: Some(Json::Array(vec![
                        Json::Str("upload".to_owned()),
                        Json::Object(vec![(
                            "file".to_owned(),
                            Json::Array(vec![Json::Placeholder(1)]),
                        )]),
                        Json::Placeholder(0),
                        Json::Float(0.5),
                    ])),
                    tail: None,
                }),
                rest: vec![Binary(blob(&[0; 8])), Binary(blob(&[1; 3]))],
            },
        ),
    ]
}

/// Whole sessions, polling and WebSocket.
pub fn session_sequence() -> Vec<(&'static str, SessionInput)> {
    use SessionStep::*;
    let config = |websocket| SessionConfig {
        websocket,
        ping_interval_ms: 50,
        ping_timeout_ms: 30,
        max_buffered: 63,
        max_packets: 15,
        max_attachments: 10,
    };
    vec![
        (
            "polling-connect-event-binary",
            SessionInput {
                config: config(false),
                steps: vec![
                    Post(blob(b"40")),
                    Post(blob(
                        b"42[\"foo\"]\x1e451-[\"baz\",{\"_placeholder\":true,\"num\":0}]\x1ebAQIDBA==",
                    )),
                    Collect(16),
                    Elapse(51),
                    Collect(16),
                    Pong,
                    Post(blob("42/ñ,3[\"héllo\",\"🦀\"]".as_bytes())),
                    Collect(16),
                    Post(blob(b"1")),
                ],
            },
        ),
        (
            "polling-frames",
            SessionInput {
                config: config(false),
                steps: vec![
                    PostFrames(vec![
                        ClientFrame::Message(text(r#"0/admin,{"token":"abc"}"#)),
                        ClientFrame::Message(text(r#"52-["a",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#)),
                        ClientFrame::Binary(blob(b"x")),
                        ClientFrame::Binary(blob(&[0xf0, 0x9f])),
                        ClientFrame::Control {
                            kind: 6,
                            data: String::new(),
                        },
                    ]),
                    Collect(3),
                    Collect(16),
                ],
            },
        ),
        (
            "polling-bad-payload",
            SessionInput {
                config: config(false),
                steps: vec![Post(blob(b"4\xff\xfe")), Post(blob(b"b!!!!")), Collect(4)],
            },
        ),
        (
            "polling-never-pongs",
            SessionInput {
                config: config(false),
                steps: vec![Post(blob(b"40")), Elapse(40), Elapse(40), Elapse(40), Collect(8)],
            },
        ),
        (
            "websocket-session",
            SessionInput {
                config: config(true),
                steps: vec![
                    WsText(r#"40/admin,{"token":"abc"}"#.to_owned()),
                    WsMessage(text(r#"451-["baz",{"_placeholder":true,"num":0}]"#)),
                    WsBinary(blob(&[1, 2, 3, 4])),
                    Collect(16),
                    WsText("2probe".to_owned()),
                    Elapse(51),
                    Pong,
                    Collect(16),
                    WsText("4abc".to_owned()),
                ],
            },
        ),
        (
            "websocket-text-mid-binary",
            SessionInput {
                config: config(true),
                steps: vec![
                    WsMessage(text(r#"52-["a",{"_placeholder":true,"num":0}]"#)),
                    WsBinary(blob(b"one")),
                    WsMessage(text(r#"2["b"]"#)),
                    WsBinary(blob(b"two")),
                ],
            },
        ),
        (
            "websocket-slow-consumer",
            SessionInput {
                config: SessionConfig {
                    max_buffered: 2,
                    ..config(true)
                },
                steps: vec![
                    WsMessage(text(r#"2["a"]"#)),
                    WsMessage(text(r#"2["b"]"#)),
                    WsMessage(text(r#"2["c"]"#)),
                    WsMessage(text(r#"2["d"]"#)),
                    Collect(8),
                ],
            },
        ),
    ]
}

/// The Redis Streams adapter's stream entries.
pub fn redis_stream_entry() -> Vec<Seed> {
    raw(&[
        // A broadcast with a binary value: `data` is base64 of msgpack.
        (
            "binary-base64",
            b"uid\nn\nnsp\n/x\ntype\n3\ndata\ngqZwYWNrZXSCpHR5cGUCpGRhdGGSpGZpbGXEAwECA6RvcHRzg6Vyb29tc5CmZXhjZXB0kKVmbGFnc4A=",
        ),
        // A Node node's `io.to("r1").except("x").volatile.emit("chat", "hi", {n: 1})`, fields `key\nvalue\n...`.
        (
            "node-broadcast",
            b"uid\n8f3c4e5d6a7b8c9d\nnsp\n/\ntype\n3\ndata\n{\"packet\":{\"type\":2,\"data\":[\"chat\",\"hi\",{\"n\":1}]},\"opts\":{\"rooms\":[\"r1\"],\"except\":[\"x\"],\"flags\":{\"volatile\":true}}}",
        ),
        // Found by fuzzing: no `data` field (`dat`), written back as `data: null`.
        (
            "no-data-field",
            b"uid\nn\nnsp\n/\ntype\n4\ndat\na{\"opts\":{\"rooms\":[\"a\"],\"except\":[],\"flags\":{}},\"rooms\":[\"b\"]}\ntseq\n3",
        ),
        // Found by fuzzing: a comma in the namespace, which no packet can carry.
        (
            "comma-in-nsp",
            b"uid\nn\nnsp\n/a,b\ntype\n3\ndata\n{\"packet\":{\"type\":2,\"data\":[\"e\"]},\"opts\":{\"rooms\":[],\"except\":[],\"flags\":{}}}",
        ),
        // A Tidings node's `socketsJoin`, with its running number.
        (
            "sockets-join",
            b"uid\nn\nnsp\n/\ntype\n4\ndata\n{\"opts\":{\"rooms\":[\"a\"],\"except\":[],\"flags\":{}},\"rooms\":[\"b\"]}\ntseq\n3",
        ),
    ])
}

/// Every seed, by target.
/// The Redis adapter's broadcasts, as a Node node publishes them.
pub fn redis_message() -> Vec<Seed> {
    raw(&[
        // ["esENMx", {type:2, data:["chat","to r1 from s1",{n:1}], nsp:"/"}, {rooms:["r1"], except:[], flags:{}}]
        (
            "node-broadcast-r1",
            b"\x93\xa6esENMx\x83\xa4type\x02\xa4data\x93\xa4chat\xadto r1 from s1\x81\xa1n\x01\xa3nsp\xa1/\x83\xa5rooms\x91\xa2r1\xa6except\x90\xa5flags\x80",
        ),
        // Found by fuzzing: `data` that is no event array (`1`), a broadcast to refuse.
        ("data-not-an-event", b"\x93\xa1u\x82\xa4data\x01\xa3nsp\xa1/\x80"),
        // Found by fuzzing: a binary value in the options, not the packet's.
        (
            "binary-outside-data",
            b"\x93\xa1u\x82\xa4data\x91\xa1e\xa3nsp\xa1/\x81\xa1x\xc4\x01\x07",
        ),
        // ["u", {type:2, data:["file",Buffer[1,2,3]], nsp:"/x"}, {rooms:[], except:["e"], flags:{volatile:true}}]
        (
            "binary-volatile-except",
            b"\x93\xa1u\x83\xa4type\x02\xa4data\x92\xa4file\xc4\x03\x01\x02\x03\xa3nsp\xa2/x\x83\xa5rooms\x90\xa6except\x91\xa1e\xa5flags\x81\xa8volatile\xc3",
        ),
    ])
}

/// A masked client frame, as a browser sends it.
fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut out = vec![if fin { 0x80 | opcode } else { opcode }];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// WebSocket frames from a client, after a first byte that says where the target cuts them.
pub fn ws_frames() -> Vec<Seed> {
    let seed = |cut: u8, frames: Vec<Vec<u8>>| {
        let mut out = vec![cut];
        out.extend(frames.concat());
        out
    };
    vec![
        (
            "text",
            seed(3, vec![client_frame(true, 0x1, b"42[\"echo\",1]")]),
        ),
        (
            "binary-then-ping",
            seed(
                9,
                vec![
                    client_frame(true, 0x2, &[1, 2, 3]),
                    client_frame(true, 0x9, b"p"),
                ],
            ),
        ),
        (
            "fragmented-around-ping",
            seed(
                7,
                vec![
                    client_frame(false, 0x1, b"4he"),
                    client_frame(true, 0x9, b""),
                    client_frame(true, 0x0, "llo wörld".as_bytes()),
                ],
            ),
        ),
        (
            "long-length",
            seed(2, vec![client_frame(true, 0x1, &[b'a'; 200])]),
        ),
        (
            "too-large",
            seed(1, vec![client_frame(true, 0x2, &[0; 300])]),
        ),
        (
            "close-then-more",
            seed(
                4,
                vec![
                    client_frame(true, 0x8, &[0x03, 0xe8]),
                    client_frame(true, 0x1, b"4x"),
                ],
            ),
        ),
        ("unmasked", vec![1, 0x81, 0x01, b'a']),
        (
            "invalid-utf8",
            seed(0, vec![client_frame(true, 0x1, &[0xff, 0xfe])]),
        ),
    ]
}

pub fn all() -> Vec<(&'static str, Vec<Seed>)> {
    vec![
        ("eio_packet", eio_packet()),
        ("eio_payload", eio_payload()),
        ("eio3_payload", eio3_payload()),
        ("sio_packet", sio_packet()),
        ("sio_msgpack", sio_msgpack()),
        ("redis_message", redis_message()),
        ("redis_stream_entry", redis_stream_entry()),
        ("handshake_query", handshake_query()),
        ("ws_frames", ws_frames()),
        (
            "sio_attachments",
            sio_attachments()
                .into_iter()
                .map(|(name, input)| (name, input.to_seed()))
                .collect(),
        ),
        (
            "session_sequence",
            session_sequence()
                .into_iter()
                .map(|(name, input)| (name, input.to_seed()))
                .collect(),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use arbitrary::{Arbitrary, Unstructured};

    use super::*;

    fn read_back<'a, T: Arbitrary<'a>>(bytes: &'a [u8]) -> T {
        T::arbitrary_take_rest(Unstructured::new(bytes)).expect("seed reads back")
    }

    #[test]
    fn structured_seeds_read_back() {
        for (name, input) in sio_attachments() {
            let bytes = input.to_seed();
            let back: AttachmentsInput = read_back(&bytes);
            assert_eq!(format!("{back:?}"), format!("{input:?}"), "{name}");
        }
        for (name, input) in session_sequence() {
            let bytes = input.to_seed();
            let back: SessionInput = read_back(&bytes);
            assert_eq!(format!("{back:?}"), format!("{input:?}"), "{name}");
        }
    }

    #[test]
    fn long_inputs_read_back() {
        // Lengths that take two bytes, and every JSON variant.
        let input = AttachmentsInput {
            max_attachments: 3,
            first: TextMessage::Built(SioText {
                kind: 2,
                count: None,
                nsp: Some("n".repeat(300)),
                root_slash: true,
                comma: false,
                id: None,
                data: Some(Json::Array(vec![
                    Json::Null,
                    Json::Bool(true),
                    Json::Int(-3),
                    Json::UInt(u64::MAX),
                    Json::Float(-2.5),
                    Json::Str("s".into()),
                    Json::Object(vec![("k".into(), Json::Array(vec![]))]),
                    Json::Placeholder(2),
                    Json::OddPlaceholder(Box::new(Json::Str("0".into()))),
                ])),
                tail: Some(blob(&[0xff; 70])),
            }),
            rest: vec![AttachmentMessage::Binary(blob(&[7; 400]))],
        };
        let bytes = input.to_seed();
        assert!(bytes.len() > 700);
        let back: AttachmentsInput = read_back(&bytes);
        assert_eq!(format!("{back:?}"), format!("{input:?}"));
    }

    #[test]
    fn committed_seeds_are_current() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("seeds");
        let write = std::env::var_os("TIDINGS_WRITE_SEEDS").is_some();
        for (target, seeds) in all() {
            let dir = root.join(target);
            if write {
                std::fs::create_dir_all(&dir).unwrap();
            }
            for (name, bytes) in seeds {
                let path = dir.join(name);
                if write {
                    std::fs::write(&path, &bytes).unwrap();
                }
                let committed = std::fs::read(&path).unwrap_or_else(|e| {
                    panic!("{}: {e} (TIDINGS_WRITE_SEEDS=1 writes it)", path.display())
                });
                assert_eq!(committed, bytes, "{} is out of date", path.display());
            }
        }
    }
}
