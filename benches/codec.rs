//! Encode/decode cost per packet of both codecs (sans-IO, no sockets).
//!
//! `cargo bench --bench codec`; throughput is in packets, so criterion's time per iteration divided
//! by the element count is the time per packet.
//!
//! - Engine.IO: a small text message (a WebSocket frame), a binary message, and a long-polling
//!   payload of 16 packets (text, and mixed text + base64 binary).
//! - Socket.IO: a small text event, a binary event with one 1 KiB attachment, and an event with a
//!   nested object (a typical analytics update).
//! - Socket.IO msgpack parser: the same three packets as one msgpack message each.

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;
use std::hint::black_box;
use tidings::engineio::{self, Frame, codec};
use tidings::parser::msgpack;
use tidings::parser::packet::{self, Decoder, Limits, Packet};

const SMALL_EIO: &[u8] = br#"42["echo","hello world"]"#;
const SMALL_SIO: &[u8] = br#"2["echo","hello world"]"#;
const NESTED_SIO: &[u8] = br#"2["analytics:update",{"type":"metrics","organizationId":"org-42","data":{"activeUsers":1234,"messagesPerMinute":56.5,"sentiment":{"positive":0.61,"neutral":0.3,"negative":0.09}},"timestamp":1767225600000}]"#;
const BINARY_SIO: &[u8] = br#"51-["upload",{"_placeholder":true,"num":0}]"#;

fn engineio_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("engineio");
    g.throughput(Throughput::Elements(1));

    let small = Bytes::from_static(SMALL_EIO);
    g.bench_function("decode_text/small", |b| {
        b.iter(|| codec::decode_text(black_box(small.clone())).unwrap())
    });
    g.bench_function("encode_text/small", |b| {
        b.iter(|| Frame::message(black_box(r#"2["echo","hello world"]"#)))
    });
    let kib = Bytes::from(vec![0xA5u8; 1024]);
    g.bench_function("decode_binary/1KiB", |b| {
        b.iter(|| codec::decode_binary(black_box(kib.clone())))
    });

    // Polling payloads of 16 packets.
    g.throughput(Throughput::Elements(16));
    let text_frames: Vec<Frame> = (0..16)
        .map(|i| Frame::message(&format!(r#"2["tick",{{"n":{i},"v":"abcdefgh"}}]"#)))
        .collect();
    let mixed_frames: Vec<Frame> = (0..16)
        .map(|i| {
            if i % 4 == 3 {
                Frame::Binary(Bytes::from(vec![i as u8; 256]))
            } else {
                Frame::message(&format!(r#"2["tick",{{"n":{i}}}]"#))
            }
        })
        .collect();
    for (name, frames) in [("text", &text_frames), ("mixed", &mixed_frames)] {
        let mut body = Vec::new();
        codec::encode_payload(frames.iter(), &mut body);
        let body = Bytes::from(body);
        g.bench_function(format!("encode_payload/16-{name}"), |b| {
            let mut out = Vec::with_capacity(body.len());
            b.iter(|| {
                out.clear();
                codec::encode_payload(black_box(frames.iter()), &mut out);
                out.len()
            })
        });
        g.bench_function(format!("decode_payload/16-{name}"), |b| {
            b.iter(|| codec::decode_payload(black_box(body.clone()), 16).unwrap())
        });
    }
    g.finish();
    // Keep the re-export in use: the Engine.IO module is what a server embeds.
    let _ = engineio::PacketType::Message;
}

fn socketio_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("socketio");
    g.throughput(Throughput::Elements(1));

    for (name, text) in [("small", SMALL_SIO), ("nested", NESTED_SIO)] {
        g.bench_function(format!("decode/{name}"), |b| {
            let mut d = Decoder::new(Limits::default());
            b.iter(|| d.decode_text(black_box(text)).unwrap().unwrap())
        });
        let mut d = Decoder::new(Limits::default());
        let packet = d.decode_text(text).unwrap().unwrap();
        g.bench_function(format!("encode/{name}"), |b| {
            b.iter_batched_ref(
                || Frame::message_buffer(256),
                |out| packet::encode(black_box(&packet), out),
                BatchSize::SmallInput,
            )
        });
    }

    // A binary event: the text part, then one 1 KiB attachment.
    let attachment = Bytes::from(vec![7u8; 1024]);
    g.bench_function("decode/binary-1KiB", |b| {
        let mut d = Decoder::new(Limits::default());
        b.iter(|| {
            assert!(d.decode_text(black_box(BINARY_SIO)).unwrap().is_none());
            d.decode_binary(attachment.clone()).unwrap().unwrap()
        })
    });
    let binary = Packet::event("/", json!(["upload", packet::placeholder(0)]), None)
        .with_attachments(vec![attachment.clone()]);
    g.bench_function("encode/binary-1KiB", |b| {
        b.iter_batched_ref(
            || BytesMut::with_capacity(64),
            |out| {
                packet::encode(black_box(&binary), out);
                // The attachment goes out as its own frame, shared, not copied.
                Frame::Binary(binary.attachments[0].clone())
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn msgpack_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("socketio-msgpack");
    g.throughput(Throughput::Elements(1));
    let binary = Packet::event("/", json!(["upload", packet::placeholder(0)]), None)
        .with_attachments(vec![Bytes::from(vec![7u8; 1024])]);
    let mut packets = vec![("binary-1KiB", binary)];
    for (name, text) in [("small", SMALL_SIO), ("nested", NESTED_SIO)] {
        let packet = Decoder::new(Limits::default())
            .decode_text(text)
            .unwrap()
            .unwrap();
        packets.push((name, packet));
    }
    for (name, packet) in packets {
        let mut bytes = BytesMut::new();
        msgpack::encode(&packet, &mut bytes);
        let bytes = bytes.freeze();
        g.bench_function(format!("decode/{name}"), |b| {
            let d = msgpack::Decoder::new(Limits::default());
            b.iter(|| d.decode(black_box(&bytes)).unwrap())
        });
        g.bench_function(format!("encode/{name}"), |b| {
            b.iter_batched_ref(
                || BytesMut::with_capacity(256),
                |out| msgpack::encode(black_box(&packet), out),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, engineio_benches, socketio_benches, msgpack_benches);
criterion_main!(benches);
