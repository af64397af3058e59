//! Whole sessions without sockets: one Engine.IO session (polling or WebSocket) whose messages go to a
//! Socket.IO decoder, driven by a sequence of client requests, clock ticks and polling GETs.
//!
//! The handler behaves like the server's client layer (decode; a decode error closes the connection
//! with "parse error") and echoes every completed packet back, so the outbound side is exercised too.
//!
//! Invariants: text handed to the handler is UTF-8; no message after `on_close`, which runs once; an
//! open session never queues more than `max_buffered` frames; a closed session has left the registry;
//! a polling POST never delivers more than `max_packets` packets; the decoder never waits for more
//! than `max_attachments` parts and is idle after an error; a client that never pongs is gone
//! `ping_interval + ping_timeout` after the open; every completed packet re-encodes to itself; and
//! what the server queues reaches the client intact: a polling payload decodes back to the drained
//! frames, and a client-side decoder rebuilds exactly the echoed packets, in order.

#![no_main]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tidings::engineio::codec::{self, DecodeError as EioError, Frame, PacketType, Payload};
use tidings::engineio::fuzzing;
use tidings::engineio::{CloseReason, Session, SessionHandler, TransportKind};
use tidings::parser::packet::{self, Decoder, Packet};
use tidings_fuzz::{
    ClientFrame, SessionInput, SessionStep as Step, check_payload_round_trip, check_sio_packet,
    decoder, fits_in_payload,
};
use tokio::time::Instant;

/// The Socket.IO side of the session, reduced to the decoder and an echo.
struct Echo {
    session: Mutex<Weak<Session>>,
    decoder: Mutex<Decoder>,
    max_attachments: usize,
    /// Parts received for the binary packet being collected.
    pending: Mutex<usize>,
    /// Packets queued back to the client, oldest first, until the client side rebuilds them.
    echoed: Mutex<VecDeque<Packet>>,
    closed: Mutex<Option<CloseReason>>,
    messages: Mutex<usize>,
}

impl SessionHandler for Echo {
    fn on_message(&self, payload: Payload) {
        assert!(self.closed.lock().unwrap().is_none(), "message after close");
        *self.messages.lock().unwrap() += 1;
        let decoded = {
            let mut decoder = self.decoder.lock().unwrap();
            let mut pending = self.pending.lock().unwrap();
            let result = match payload {
                Payload::Text(text) => {
                    assert!(std::str::from_utf8(&text).is_ok(), "text is not UTF-8");
                    *pending = 0;
                    decoder.decode_text(&text)
                }
                Payload::Binary(bytes) => {
                    *pending += 1;
                    decoder.decode_binary(bytes)
                }
            };
            if result == Ok(None) {
                assert!(decoder.is_awaiting_attachments());
                assert!(*pending < self.max_attachments, "too many parts pending");
            } else {
                assert!(!decoder.is_awaiting_attachments());
                *pending = 0;
            }
            result
        };
        let Some(session) = self.session.lock().unwrap().upgrade() else {
            return;
        };
        match decoded {
            Ok(Some(packet)) => {
                check_sio_packet(&packet, self.max_attachments);
                let mut text = Frame::message_buffer(64);
                packet::encode(&packet, &mut text);
                let frames = std::iter::once(Frame::Text(text.freeze()))
                    .chain(packet.attachments.iter().cloned().map(Frame::Binary));
                if session.send_all(frames).is_ok() {
                    self.echoed.lock().unwrap().push_back(packet);
                }
            }
            Ok(None) => {}
            Err(_) => {
                session.close(CloseReason::ParseError, true);
            }
        }
    }

    fn on_close(&self, reason: CloseReason) {
        let mut closed = self.closed.lock().unwrap();
        assert!(closed.is_none(), "closed twice");
        *closed = Some(reason);
    }
}

/// The client's view of what the server sent.
struct Client {
    decoder: Decoder,
    websocket: bool,
}

impl Client {
    /// Checks frames collected from the server: as a polling payload they decode back to themselves,
    /// and the Socket.IO packets in them are exactly the echoed ones, in order.
    fn receive(&mut self, frames: &[Frame], echo: &Echo) {
        if !self.websocket {
            assert!(
                frames.iter().all(fits_in_payload),
                "unframeable: {frames:?}"
            );
            check_payload_round_trip(frames);
        }
        for frame in frames {
            let result = match frame {
                Frame::Text(text) => {
                    assert!(std::str::from_utf8(text).is_ok(), "text frame not UTF-8");
                    let packet = codec::decode_text(text.clone()).expect("server frame decodes");
                    if packet.kind != PacketType::Message {
                        continue;
                    }
                    self.decoder.decode_text(packet.data_bytes())
                }
                Frame::Binary(bytes) => self.decoder.decode_binary(bytes.clone()),
            };
            match result.expect("the client decodes what the server sent") {
                Some(packet) => {
                    let expected = echo.echoed.lock().unwrap().pop_front();
                    assert_eq!(Some(packet), expected);
                }
                None => assert!(self.decoder.is_awaiting_attachments()),
            }
        }
    }
}

/// Feeds one packet as a transport does; an error closes the session the way that transport does.
fn feed(session: &Session, packet: codec::Packet, now: Instant, websocket: bool) -> bool {
    match fuzzing::handle_packet(session, packet, now) {
        Ok(()) => true,
        Err(reason) => {
            session.close(reason, !websocket && reason != CloseReason::TransportClose);
            false
        }
    }
}

fuzz_target!(|input: SessionInput| {
    let config = &input.config;
    let ms = |n: u8| Duration::from_millis(u64::from(n) + 1);
    let (interval, timeout) = (ms(config.ping_interval_ms), ms(config.ping_timeout_ms));
    let max_buffered = usize::from(config.max_buffered) + 1;
    let max_packets = usize::from(config.max_packets % 32) + 1;
    let max_attachments = usize::from(config.max_attachments % 12);
    let websocket = config.websocket;
    let transport = if websocket {
        TransportKind::WebSocket
    } else {
        TransportKind::Polling
    };

    let echo = Arc::new(Echo {
        session: Mutex::new(Weak::new()),
        decoder: Mutex::new(decoder(max_attachments)),
        max_attachments,
        pending: Mutex::new(0),
        echoed: Mutex::new(VecDeque::new()),
        closed: Mutex::new(None),
        messages: Mutex::new(0),
    });
    let opened = Instant::now();
    let mut now = opened;
    let session = fuzzing::open_session(
        echo.clone(),
        transport,
        interval,
        timeout,
        max_buffered,
        now,
    );
    *echo.session.lock().unwrap() = Arc::downgrade(&session);
    let mut client = Client {
        decoder: decoder(max_attachments),
        websocket,
    };
    let mut ponged = false;

    for step in input.steps {
        let messages_before = *echo.messages.lock().unwrap();
        let was_closed = session.is_closed();
        match step {
            Step::Post(body) if !websocket => post(&session, Bytes::from(body.0), max_packets, now),
            Step::PostFrames(frames) if !websocket => {
                let frames: Vec<Frame> = frames.iter().map(ClientFrame::to_frame).collect();
                let mut body = Vec::new();
                codec::encode_payload(&frames, &mut body);
                post(&session, Bytes::from(body), max_packets, now);
            }
            Step::WsMessage(text) if websocket => {
                let text = String::from_utf8_lossy(&text.to_bytes()).into_owned();
                ws_text(&session, Frame::message(&text), now);
            }
            Step::WsText(text) if websocket => {
                ws_text(&session, Frame::Text(Bytes::from(text)), now);
            }
            Step::WsBinary(bytes) if websocket => {
                feed(
                    &session,
                    codec::decode_binary(Bytes::from(bytes.0)),
                    now,
                    true,
                );
            }
            Step::Pong => {
                let pong = codec::Packet::text(PacketType::Pong, Bytes::new());
                if !session.is_closed() {
                    ponged = true;
                    feed(&session, pong, now, websocket);
                }
            }
            Step::Elapse(n) => {
                now += Duration::from_millis(u64::from(n));
                // The timer task: sleeping until a deadline that has passed returns at once.
                while let Some(deadline) = fuzzing::drive_heartbeat(&session, now) {
                    assert!(!session.is_closed());
                    if deadline > now {
                        break;
                    }
                }
            }
            // A polling GET on a closed session is refused unless it is kept for that GET.
            Step::Collect(n) if !session.is_closed() || fuzzing::is_registered(&session) => {
                let frames = fuzzing::drain(&session, usize::from(n));
                client.receive(&frames, &echo);
            }
            _ => {}
        }

        if was_closed {
            assert_eq!(*echo.messages.lock().unwrap(), messages_before);
        }
        if session.is_closed() {
            let reason = echo.closed.lock().unwrap().expect("on_close ran");
            if reason != CloseReason::ForcedClose {
                assert!(!fuzzing::is_registered(&session));
            }
        } else {
            assert!(echo.closed.lock().unwrap().is_none());
            assert!(fuzzing::is_registered(&session));
            assert!(session.buffered() <= max_buffered);
            if !ponged {
                assert!(
                    now < opened + interval + timeout,
                    "never ponged, still open"
                );
            }
        }
    }

    // The server shuts down: every session leaves the registry (which also breaks the
    // session-registry cycle, so nothing outlives the run) and its handler hears it once.
    let was_open = !session.is_closed();
    assert_eq!(session.close(CloseReason::ServerShutdown, false), was_open);
    assert!(!fuzzing::is_registered(&session));
    assert!(echo.closed.lock().unwrap().is_some());
});

/// A polling POST: decode the payload, then feed its packets in order until one closes the session.
fn post(session: &Session, body: Bytes, max_packets: usize, now: Instant) {
    if session.is_closed() {
        return;
    }
    match codec::decode_payload(body, max_packets) {
        Ok(packets) => {
            assert!(packets.len() <= max_packets);
            for packet in packets {
                if !feed(session, packet, now, false) {
                    break;
                }
            }
        }
        Err(err) => {
            assert!(matches!(
                err,
                EioError::Empty
                    | EioError::UnknownType(_)
                    | EioError::InvalidUtf8
                    | EioError::InvalidBase64
                    | EioError::TooManyPackets
            ));
            session.close(CloseReason::ParseError, true);
        }
    }
}

/// A WebSocket text frame: decode it; a stray `2probe` is answered by the transport, not the session.
fn ws_text(session: &Session, frame: Frame, now: Instant) {
    if session.is_closed() {
        return;
    }
    let Frame::Text(text) = frame else { return };
    match codec::decode_text(text) {
        Ok(packet)
            if packet.kind == PacketType::Ping
                && packet.data == Payload::Text(Bytes::from_static(b"probe")) => {}
        Ok(packet) => {
            feed(session, packet, now, true);
        }
        Err(_) => {
            session.close(CloseReason::ParseError, false);
        }
    }
}
