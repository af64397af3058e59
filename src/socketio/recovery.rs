//! Connection state recovery, as the reference server (≥ 4.6) speaks it.
//!
//! With recovery on, the CONNECT reply carries a private id (`pid`), and every event the server emits
//! without ack and without `volatile` gets a trailing string argument: its offset. Each such packet is
//! kept for a while with the rooms it was sent to. When a socket drops for a reason that allows
//! recovery (transport close/error, ping timeout, forced close, shutdown), its id, rooms and data are
//! kept too. A client that reconnects within the window with `{pid, offset}` in its CONNECT auth gets
//! its old id, rooms and data back, and every kept packet after `offset` that was meant for it.
//!
//! Memory is bounded: at most `max_packets` packets, none older than the window; saved sessions are
//! swept once the window has passed.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::time::Instant;

use crate::rooms::Room;

use super::adapter::BroadcastOptions;

/// Recovery options.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RecoveryConfig {
    /// How long after a disconnect a client may recover. Default 2 minutes (the reference default).
    pub max_disconnection_duration: Duration,
    /// Whether a recovered socket skips the namespace's middlewares. Default true (as the reference).
    pub skip_middlewares: bool,
    /// The most packets kept per namespace for replay. Default 10 000.
    pub max_packets: usize,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        Self {
            max_disconnection_duration: Duration::from_secs(120),
            skip_middlewares: true,
            max_packets: 10_000,
        }
    }
}

/// A packet kept for replay: its event data (offset included) and who it was for.
#[derive(Debug, Clone)]
pub(crate) struct StoredPacket {
    offset: u64,
    at: Instant,
    rooms: Vec<Room>,
    except: Vec<Room>,
    pub(crate) data: Value,
    pub(crate) attachments: Vec<Bytes>,
}

/// What a dropped socket leaves behind for its return.
#[derive(Debug, Clone)]
pub(crate) struct SavedSession {
    pub(crate) sid: Room,
    pub(crate) pid: Room,
    pub(crate) rooms: Vec<Room>,
    pub(crate) data: Value,
    at: Instant,
}

/// A saved session being resumed, and the offset its client saw last.
#[derive(Debug)]
pub(crate) struct Resumed {
    pub(crate) session: SavedSession,
    after: u64,
}

#[derive(Debug, Default)]
struct State {
    next_offset: u64,
    packets: VecDeque<StoredPacket>,
    sessions: HashMap<Room, SavedSession>,
    last_sweep: Option<Instant>,
}

/// The recovery store of one namespace.
#[derive(Debug)]
pub(crate) struct Recovery {
    pub(crate) config: RecoveryConfig,
    /// Distinguishes this process's offsets from an earlier one's.
    epoch: String,
    state: Mutex<State>,
}

impl Recovery {
    pub(crate) fn new(config: RecoveryConfig) -> Self {
        Self {
            config,
            epoch: crate::engineio::sid::generate()[..6].to_owned(),
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn format_offset(&self, n: u64) -> String {
        format!("{}.{n}", self.epoch)
    }

    fn parse_offset(&self, offset: &str) -> Option<u64> {
        let (epoch, n) = offset.split_once('.')?;
        (epoch == self.epoch).then(|| n.parse().ok()).flatten()
    }

    /// Appends the next offset to `data` (an event array), keeps the packet, and returns the data.
    pub(crate) fn store(
        &self,
        mut data: Value,
        attachments: &[Bytes],
        opts: &BroadcastOptions,
    ) -> Value {
        let now = Instant::now();
        let mut state = self.lock();
        let n = state.next_offset;
        state.next_offset += 1;
        if let Value::Array(items) = &mut data {
            items.push(Value::String(self.format_offset(n)));
        }
        state.packets.push_back(StoredPacket {
            offset: n,
            at: now,
            rooms: opts.rooms.clone(),
            except: opts.except.clone(),
            data: data.clone(),
            attachments: attachments.to_vec(),
        });
        self.sweep(&mut state, now);
        data
    }

    /// Keeps a dropped socket's state for the window.
    pub(crate) fn save(&self, sid: Room, pid: Room, rooms: Vec<Room>, data: Value) {
        let now = Instant::now();
        let mut state = self.lock();
        state.sessions.insert(
            pid.clone(),
            SavedSession {
                sid,
                pid,
                rooms,
                data,
                at: now,
            },
        );
        self.sweep(&mut state, now);
    }

    /// Takes the saved session of `pid` if its client's last `offset` can still be resumed from:
    /// the offset was handed out, and nothing after it has been dropped from the buffer (or the
    /// client would silently miss it). The session is consumed.
    pub(crate) fn resume(&self, pid: &str, offset: &str) -> Option<Resumed> {
        let now = Instant::now();
        let mut state = self.lock();
        self.sweep(&mut state, now);
        let after = self.parse_offset(offset)?;
        let known = after < state.next_offset
            && state.packets.front().is_none_or(|p| p.offset <= after + 1);
        if !known {
            return None;
        }
        let session = state.sessions.remove(pid)?;
        Some(Resumed { session, after })
    }

    /// The kept packets after the resumed client's offset that were meant for it, in order, and the
    /// bound below which every offset has been handed out (so is either among them or not for it).
    pub(crate) fn missed(&self, resumed: &Resumed) -> (Vec<StoredPacket>, u64) {
        let state = self.lock();
        let missed = state
            .packets
            .iter()
            .filter(|p| p.offset > resumed.after && is_for(p, &resumed.session))
            .cloned()
            .collect();
        (missed, state.next_offset)
    }

    /// The offset [`store`](Self::store) gave an event, read back from its data.
    pub(crate) fn offset_in(&self, data: Option<&Value>) -> Option<u64> {
        match data? {
            Value::Array(items) => self.parse_offset(items.last()?.as_str()?),
            _ => None,
        }
    }

    /// [`resume`](Self::resume) and [`missed`](Self::missed) at once.
    #[cfg(test)]
    pub(crate) fn restore(
        &self,
        pid: &str,
        offset: &str,
    ) -> Option<(SavedSession, Vec<StoredPacket>)> {
        let resumed = self.resume(pid, offset)?;
        let (missed, _) = self.missed(&resumed);
        Some((resumed.session, missed))
    }

    fn sweep(&self, state: &mut State, now: Instant) {
        let window = self.config.max_disconnection_duration;
        while state.packets.len() > self.config.max_packets
            || state
                .packets
                .front()
                .is_some_and(|p| now.duration_since(p.at) > window)
        {
            state.packets.pop_front();
        }
        // Sessions are swept at most once a second: the scan is linear.
        if state
            .last_sweep
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        state.last_sweep = Some(now);
        state
            .sessions
            .retain(|_, s| now.duration_since(s.at) <= window);
    }

    #[cfg(test)]
    fn counts(&self) -> (usize, usize) {
        let state = self.lock();
        (state.packets.len(), state.sessions.len())
    }
}

/// Whether a kept packet was meant for a socket with `session`'s id and rooms.
fn is_for(packet: &StoredPacket, session: &SavedSession) -> bool {
    let in_room = |room: &Room| *room == session.sid || session.rooms.contains(room);
    let targeted = packet.rooms.is_empty() || packet.rooms.iter().any(in_room);
    targeted && !packet.except.iter().any(in_room)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn opts(rooms: &[&str], except: &[&str]) -> BroadcastOptions {
        BroadcastOptions {
            rooms: rooms.iter().map(|r| Room::from(*r)).collect(),
            except: except.iter().map(|r| Room::from(*r)).collect(),
            ..Default::default()
        }
    }

    fn offset_of(data: &Value) -> String {
        data.as_array()
            .unwrap()
            .last()
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned()
    }

    #[test]
    fn replays_what_the_socket_missed_in_order() {
        let r = Recovery::new(RecoveryConfig::default());
        let seen = r.store(json!(["a", 1]), &[], &opts(&[], &[]));
        assert_eq!(seen.as_array().unwrap().len(), 3);
        let last = offset_of(&seen);
        r.save(
            "S".into(),
            "P".into(),
            vec!["S".into(), "r1".into()],
            json!({"k": 1}),
        );
        r.store(json!(["to-r1"]), &[], &opts(&["r1"], &[]));
        r.store(json!(["to-r2"]), &[], &opts(&["r2"], &[]));
        r.store(json!(["direct"]), &[], &opts(&["S"], &[]));
        r.store(json!(["all-but-r1"]), &[], &opts(&[], &["r1"]));
        r.store(json!(["all"]), &[], &opts(&[], &[]));
        let (session, missed) = r.restore("P", &last).unwrap();
        assert_eq!(&*session.sid, "S");
        assert_eq!(session.data, json!({"k": 1}));
        let names: Vec<&str> = missed.iter().map(|p| p.data[0].as_str().unwrap()).collect();
        assert_eq!(names, ["to-r1", "direct", "all"]);
        // One-shot.
        assert!(r.restore("P", &last).is_none());
    }

    #[test]
    fn refuses_unknown_pid_and_offsets() {
        let r = Recovery::new(RecoveryConfig::default());
        let last = offset_of(&r.store(json!(["a"]), &[], &opts(&[], &[])));
        r.save("S".into(), "P".into(), vec![], Value::Null);
        assert!(r.restore("nope", &last).is_none());
        assert!(r.restore("P", "garbage").is_none());
        assert!(r.restore("P", "other.0").is_none());
        assert!(r.restore("P", &format!("{}.99", r.epoch)).is_none());
        assert!(r.restore("P", &last).is_some());
    }

    #[test]
    fn bounded_by_count() {
        let r = Recovery::new(RecoveryConfig {
            max_packets: 3,
            ..Default::default()
        });
        let first = offset_of(&r.store(json!(["a"]), &[], &opts(&[], &[])));
        for _ in 0..5 {
            r.store(json!(["b"]), &[], &opts(&[], &[]));
        }
        assert_eq!(r.counts().0, 3);
        r.save("S".into(), "P".into(), vec![], Value::Null);
        // The first offset fell out of the buffer: packets were lost, so no recovery.
        assert!(r.restore("P", &first).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn expires_after_the_window() {
        let r = Recovery::new(RecoveryConfig {
            max_disconnection_duration: Duration::from_secs(5),
            ..Default::default()
        });
        let last = offset_of(&r.store(json!(["a"]), &[], &opts(&[], &[])));
        r.save("S".into(), "P".into(), vec![], Value::Null);
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(r.restore("P", &last).is_none());
        assert_eq!(r.counts(), (0, 0));
    }
}
