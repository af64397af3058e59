//! Connection state recovery, as the reference server (≥ 4.6) speaks it, with its budgets and its
//! authorisation step.
//!
//! With recovery on, the CONNECT reply carries a private id (`pid`), and every event the server emits
//! without ack and without `volatile` gets a trailing string argument: its offset. Each such packet is
//! kept for a while with the rooms it was sent to. When a socket drops for a reason that allows
//! recovery (transport close/error, ping timeout, forced close, shutdown), its id, rooms and data are
//! kept too. A client that reconnects within the window with `{pid, offset}` in its CONNECT auth gets
//! its old id, rooms and data back, and every kept packet after `offset` that was meant for it.
//!
//! Authorisation: a resume is *claimed* here ([`Recovery::claim`]) and only consumed once the socket
//! has passed the namespace's middlewares and its resume hook; a refused or failed attempt hands the
//! saved session back untouched ([`Recovery::put_back`]), so someone else's attempt with a stolen pid
//! costs the owner nothing. What is replayed is gathered for the rooms the hook let the socket keep.
//!
//! Budgets, so that no one's traffic pushes out anyone else's:
//! - each target (a room, or "the whole namespace") keeps at most `max_packets_per_room` packets; a
//!   flood into one room (or one socket's own room) evicts only that room's oldest packets;
//! - all rooms together keep at most `max_packets`; over it, the room holding the most packets gives
//!   up its oldest, so a small tenant's few missed events outlive a big one's flood;
//! - a room that lost a packet remembers the newest offset it lost, and a session in that room whose
//!   client saw less than that is not resumable (it would silently miss an event);
//! - saved sessions are capped by count and by bytes (oldest first out), and swept after the window.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::time::Instant;

use crate::rooms::Room;

use crate::adapter::BroadcastOptions;

/// Recovery options.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RecoveryConfig {
    /// How long after a disconnect a client may recover. Default 2 minutes (the reference default).
    pub max_disconnection_duration: Duration,
    /// Whether a recovered socket skips the namespace's middlewares. Default **false**: a resume
    /// passes the same middlewares as a fresh connect, before anything is replayed. (The reference
    /// defaults to true, which lets anyone holding a stolen `pid` read its owner's missed events
    /// with no credentials at all.)
    pub skip_middlewares: bool,
    /// The most packets kept for replay in one namespace, all rooms together. Default 10 000.
    pub max_packets: usize,
    /// The most packets kept for one target room (or for namespace-wide broadcasts). Default 1 000.
    pub max_packets_per_room: usize,
    /// The most disconnected sessions kept at once per namespace. Default 10 000.
    pub max_saved_sessions: usize,
    /// The most bytes those saved sessions may hold (ids, room names, data). Default 16 MiB.
    pub max_saved_bytes: usize,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        Self {
            max_disconnection_duration: Duration::from_secs(120),
            skip_middlewares: false,
            max_packets: 10_000,
            max_packets_per_room: 1_000,
            max_saved_sessions: 10_000,
            max_saved_bytes: 16 * 1024 * 1024,
        }
    }
}

/// A packet kept for replay: its event data (offset included) and who it was for.
#[derive(Debug, Clone)]
pub(crate) struct StoredPacket {
    at: Instant,
    rooms: Vec<Room>,
    except: Vec<Room>,
    pub(crate) data: Value,
    pub(crate) attachments: Vec<Bytes>,
    /// How many room logs still hold it.
    holders: usize,
}

/// What a dropped socket leaves behind for its return.
#[derive(Debug, Clone)]
pub(crate) struct SavedSession {
    pub(crate) sid: Room,
    pub(crate) pid: Room,
    pub(crate) rooms: Vec<Room>,
    pub(crate) data: Value,
    at: Instant,
    /// Insertion number, to tell this save from a later one of the same pid in the order queue.
    seq: u64,
    bytes: usize,
}

/// A saved session claimed for a resume, and the offset its client saw last. Either consumed by
/// the connect that claimed it or handed back with [`Recovery::put_back`].
#[derive(Debug)]
pub(crate) struct Resumed {
    pub(crate) session: SavedSession,
    after: u64,
}

/// What the gauges show of one namespace's store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecoveryStats {
    /// Packets kept for replay.
    pub packets: usize,
    /// Disconnected sessions kept.
    pub saved_sessions: usize,
    /// Bytes those sessions hold (estimated: ids, room names, serialised data).
    pub saved_bytes: usize,
}

/// The packets kept for one target, oldest first, and the newest one it had to let go.
#[derive(Debug, Default)]
struct RoomLog {
    offsets: VecDeque<u64>,
    lost: Option<(u64, Instant)>,
}

/// A target of a broadcast: one room, or the whole namespace (`None`).
type Target = Option<Room>;

#[derive(Debug, Default)]
struct State {
    next_offset: u64,
    packets: BTreeMap<u64, StoredPacket>,
    logs: HashMap<Target, RoomLog>,
    /// (packets held, target): the fullest log is the last.
    fullest: BTreeSet<(usize, Target)>,
    sessions: HashMap<Room, SavedSession>,
    /// Saved sessions in the order they were saved: (pid, seq). Entries whose session was taken or
    /// saved again are skipped when reached.
    order: VecDeque<(Room, u64)>,
    next_seq: u64,
    saved_bytes: usize,
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

/// Counts the bytes a value serialises to, without keeping them.
struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// About what a saved session holds: its ids, its room names (with the pointer each takes), its
/// data as JSON, and the entry itself.
fn saved_size(sid: &Room, pid: &Room, rooms: &[Room], data: &Value) -> usize {
    let mut count = ByteCount(0);
    if !data.is_null() {
        let _ = serde_json::to_writer(&mut count, data);
    }
    let rooms: usize = rooms.iter().map(|r| r.len() + 16).sum();
    sid.len() + pid.len() + rooms + count.0 + std::mem::size_of::<SavedSession>()
}

/// The logs a packet sent with these options goes into.
fn targets(rooms: &[Room]) -> Vec<Target> {
    if rooms.is_empty() {
        vec![None]
    } else {
        rooms.iter().cloned().map(Some).collect()
    }
}

impl State {
    /// Appends `offset` to `target`'s log.
    fn push(&mut self, target: Target, offset: u64) {
        let log = self.logs.entry(target.clone()).or_default();
        let before = log.offsets.len();
        log.offsets.push_back(offset);
        if before > 0 {
            self.fullest.remove(&(before, target.clone()));
        }
        self.fullest.insert((before + 1, target));
    }

    /// Lets go of `target`'s oldest packet; `lost` records that a session in that room may now be
    /// missing it. The packet itself goes once no log holds it.
    fn pop(&mut self, target: &Target, now: Instant, lost: bool) {
        let Some(log) = self.logs.get_mut(target) else {
            return;
        };
        let before = log.offsets.len();
        let Some(offset) = log.offsets.pop_front() else {
            return;
        };
        if lost {
            log.lost = Some((offset, now));
        }
        let forget = log.offsets.is_empty() && log.lost.is_none();
        self.fullest.remove(&(before, target.clone()));
        if before > 1 {
            self.fullest.insert((before - 1, target.clone()));
        }
        if forget {
            self.logs.remove(target);
        }
        if let Some(packet) = self.packets.get_mut(&offset) {
            packet.holders = packet.holders.saturating_sub(1);
            if packet.holders == 0 {
                self.packets.remove(&offset);
            }
        }
    }

    /// Whether a session in `rooms` (and its own room `sid`) may have lost a packet after `after`.
    fn lost_after(&self, after: u64, sid: &Room, rooms: &[Room]) -> bool {
        let lost = |target: Target| {
            self.logs
                .get(&target)
                .and_then(|log| log.lost)
                .is_some_and(|(offset, _)| offset > after)
        };
        lost(None) || lost(Some(sid.clone())) || rooms.iter().any(|room| lost(Some(room.clone())))
    }

    fn remove_session(&mut self, pid: &str) -> Option<SavedSession> {
        let session = self.sessions.remove(pid)?;
        self.saved_bytes -= session.bytes;
        Some(session)
    }

    fn insert_session(&mut self, session: SavedSession) {
        self.saved_bytes += session.bytes;
        if let Some(old) = self.sessions.insert(session.pid.clone(), session) {
            self.saved_bytes -= old.bytes;
        }
    }
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
    #[cfg(test)]
    pub(crate) fn store(
        &self,
        data: Value,
        attachments: &[Bytes],
        opts: &BroadcastOptions,
    ) -> Value {
        self.store_numbered(data, attachments, opts).0
    }

    /// Appends the next offset to `data` (an event array), keeps the packet, and returns the data
    /// with the offset's number.
    pub(crate) fn store_numbered(
        &self,
        mut data: Value,
        attachments: &[Bytes],
        opts: &BroadcastOptions,
    ) -> (Value, u64) {
        let now = Instant::now();
        let mut state = self.lock();
        let n = state.next_offset;
        state.next_offset += 1;
        if let Value::Array(items) = &mut data {
            items.push(Value::String(self.format_offset(n)));
        }
        let targets = targets(&opts.rooms);
        state.packets.insert(
            n,
            StoredPacket {
                at: now,
                rooms: opts.rooms.clone(),
                except: opts.except.clone(),
                data: data.clone(),
                attachments: attachments.to_vec(),
                holders: targets.len(),
            },
        );
        for target in targets {
            state.push(target.clone(), n);
            if state
                .logs
                .get(&target)
                .is_some_and(|log| log.offsets.len() > self.config.max_packets_per_room)
            {
                state.pop(&target, now, true);
            }
        }
        while state.packets.len() > self.config.max_packets {
            let Some((_, fullest)) = state.fullest.last().cloned() else {
                break;
            };
            state.pop(&fullest, now, true);
        }
        self.sweep(&mut state, now);
        (data, n)
    }

    /// Keeps a dropped socket's state for the window, within the count and byte caps (the oldest
    /// saved sessions make room).
    pub(crate) fn save(&self, sid: Room, pid: Room, rooms: Vec<Room>, data: Value) {
        let now = Instant::now();
        let bytes = saved_size(&sid, &pid, &rooms, &data);
        let mut state = self.lock();
        let seq = state.next_seq;
        state.next_seq += 1;
        state.order.push_back((pid.clone(), seq));
        state.insert_session(SavedSession {
            sid,
            pid,
            rooms,
            data,
            at: now,
            seq,
            bytes,
        });
        while state.sessions.len() > self.config.max_saved_sessions
            || state.saved_bytes > self.config.max_saved_bytes
        {
            let Some((pid, seq)) = state.order.pop_front() else {
                break;
            };
            if state.sessions.get(&pid).is_some_and(|s| s.seq == seq) {
                state.remove_session(&pid);
            }
        }
        self.sweep(&mut state, now);
    }

    /// Claims the saved session of `pid` for a resume, if its client's last `offset` can still be
    /// resumed from: the offset was handed out, and no packet after it that was meant for the
    /// session has been let go (or the client would silently miss it). While claimed, the session is
    /// out of the store (a second attempt with the same pid finds nothing); the caller either
    /// consumes it or hands it back with [`put_back`](Self::put_back).
    pub(crate) fn claim(&self, pid: &str, offset: &str) -> Option<Resumed> {
        let now = Instant::now();
        let mut state = self.lock();
        self.sweep(&mut state, now);
        let after = self.parse_offset(offset)?;
        if after >= state.next_offset {
            return None;
        }
        let session = state.sessions.get(pid)?;
        if state.lost_after(after, &session.sid, &session.rooms) {
            return None;
        }
        let session = state.remove_session(pid)?;
        Some(Resumed { session, after })
    }

    /// Hands back a claimed session whose resume was refused or failed, as it was.
    pub(crate) fn put_back(&self, resumed: Resumed) {
        let mut state = self.lock();
        if !state.sessions.contains_key(&resumed.session.pid) {
            state.insert_session(resumed.session);
        }
    }

    /// The kept packets after the resumed client's offset that were meant for its id or for one of
    /// `rooms` (those it was allowed to keep), in order, and the bound below which every offset has
    /// been handed out (so is either among them or not for it).
    pub(crate) fn missed(&self, resumed: &Resumed, rooms: &[Room]) -> (Vec<StoredPacket>, u64) {
        let state = self.lock();
        let missed = state
            .packets
            .range(resumed.after + 1..)
            .map(|(_, p)| p)
            .filter(|p| is_for(p, &resumed.session, rooms))
            .cloned()
            .collect();
        (missed, state.next_offset)
    }

    /// What the store holds now.
    pub(crate) fn stats(&self) -> RecoveryStats {
        let state = self.lock();
        RecoveryStats {
            packets: state.packets.len(),
            saved_sessions: state.sessions.len(),
            saved_bytes: state.saved_bytes,
        }
    }

    /// [`claim`](Self::claim) and [`missed`](Self::missed) for every saved room at once.
    #[cfg(test)]
    pub(crate) fn restore(
        &self,
        pid: &str,
        offset: &str,
    ) -> Option<(SavedSession, Vec<StoredPacket>)> {
        let resumed = self.claim(pid, offset)?;
        let (missed, _) = self.missed(&resumed, &resumed.session.rooms);
        Some((resumed.session, missed))
    }

    fn sweep(&self, state: &mut State, now: Instant) {
        let window = self.config.max_disconnection_duration;
        while let Some((&offset, packet)) = state.packets.first_key_value() {
            if now.duration_since(packet.at) <= window {
                break;
            }
            for target in targets(&packet.rooms) {
                if state
                    .logs
                    .get(&target)
                    .is_some_and(|log| log.offsets.front() == Some(&offset))
                {
                    state.pop(&target, now, false);
                }
            }
            // Whatever log still names it (none should), the packet is too old to replay.
            state.packets.remove(&offset);
        }
        // The rest is swept at most once a second: the scans are linear.
        if state
            .last_sweep
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        state.last_sweep = Some(now);
        let before = state.sessions.len();
        state
            .sessions
            .retain(|_, s| now.duration_since(s.at) <= window);
        if state.sessions.len() != before {
            state.saved_bytes = state.sessions.values().map(|s| s.bytes).sum();
        }
        let State {
            sessions, order, ..
        } = &mut *state;
        order.retain(|(pid, seq)| sessions.get(pid).is_some_and(|s| s.seq == *seq));
        for log in state.logs.values_mut() {
            if log
                .lost
                .is_some_and(|(_, at)| now.duration_since(at) > window)
            {
                log.lost = None;
            }
        }
        state
            .logs
            .retain(|_, log| !log.offsets.is_empty() || log.lost.is_some());
    }

    #[cfg(test)]
    fn counts(&self) -> (usize, usize) {
        let state = self.lock();
        (state.packets.len(), state.sessions.len())
    }
}

/// Whether a kept packet was meant for `session`'s socket, which keeps `rooms` of its saved ones: it
/// went to the socket's id, to one of those rooms or to the whole namespace, and it did not leave
/// out any room the socket was in (kept or not).
fn is_for(packet: &StoredPacket, session: &SavedSession, rooms: &[Room]) -> bool {
    let kept = |room: &Room| *room == session.sid || rooms.contains(room);
    let was_in = |room: &Room| *room == session.sid || session.rooms.contains(room);
    let targeted = packet.rooms.is_empty() || packet.rooms.iter().any(kept);
    targeted && !packet.except.iter().any(was_in)
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

    fn config(f: impl FnOnce(&mut RecoveryConfig)) -> RecoveryConfig {
        let mut config = RecoveryConfig::default();
        f(&mut config);
        config
    }

    #[test]
    fn one_rooms_flood_does_not_push_out_another_rooms_missed_events() {
        // The defaults: 1 000 per room, 10 000 in all. One socket's own room gets 10 050 replies
        // (a `ping` flood answered with `pong`s), after org A's dashboard dropped with one update
        // still to come.
        let r = Recovery::new(RecoveryConfig::default());
        let seen = offset_of(&r.store(json!(["hello"]), &[], &opts(&["org:a"], &[])));
        r.save("V".into(), "PV".into(), vec!["org:a".into()], Value::Null);
        r.store(json!(["update-a"]), &[], &opts(&["org:a"], &[]));
        for i in 0..10_050 {
            r.store(json!(["pong", i]), &[], &opts(&["flooder"], &[]));
        }
        let (session, missed) = r.restore("PV", &seen).expect("victim still recovers");
        assert_eq!(&*session.sid, "V");
        let names: Vec<&str> = missed.iter().map(|p| p.data[0].as_str().unwrap()).collect();
        assert_eq!(names, ["update-a"]);
        // The flood kept only its own room's budget.
        assert!(r.counts().0 <= 1_002);
    }

    #[test]
    fn over_the_total_the_fullest_room_gives_way() {
        let r = Recovery::new(config(|c| {
            c.max_packets = 10;
            c.max_packets_per_room = 8;
        }));
        let seen = offset_of(&r.store(json!(["x"]), &[], &opts(&["small"], &[])));
        r.save("S".into(), "P".into(), vec!["small".into()], Value::Null);
        r.store(json!(["for-small"]), &[], &opts(&["small"], &[]));
        for _ in 0..4 {
            r.store(json!(["a"]), &[], &opts(&["big-a"], &[]));
        }
        for _ in 0..20 {
            r.store(json!(["b"]), &[], &opts(&["big-b"], &[]));
        }
        assert!(r.counts().0 <= 10);
        let (_, missed) = r.restore("P", &seen).expect("the small room lost nothing");
        assert_eq!(missed.len(), 1);
        assert_eq!(missed[0].data[0], "for-small");
    }

    #[test]
    fn a_session_whose_room_lost_a_packet_is_not_resumable() {
        let r = Recovery::new(config(|c| c.max_packets_per_room = 3));
        let seen = offset_of(&r.store(json!(["x"]), &[], &opts(&["r"], &[])));
        r.save("S".into(), "P".into(), vec!["r".into()], Value::Null);
        r.save("T".into(), "Q".into(), vec!["other".into()], Value::Null);
        for _ in 0..5 {
            r.store(json!(["y"]), &[], &opts(&["r"], &[]));
        }
        assert!(
            r.claim("P", &seen).is_none(),
            "room r lost packets after the offset"
        );
        assert!(r.claim("Q", &seen).is_some(), "room other lost nothing");
    }

    #[test]
    fn a_packet_to_several_rooms_stays_while_one_still_holds_it() {
        let r = Recovery::new(config(|c| c.max_packets_per_room = 2));
        let seen = offset_of(&r.store(json!(["x"]), &[], &opts(&["quiet"], &[])));
        r.save("S".into(), "P".into(), vec!["quiet".into()], Value::Null);
        r.store(json!(["both"]), &[], &opts(&["quiet", "busy"], &[]));
        for _ in 0..5 {
            r.store(json!(["busy"]), &[], &opts(&["busy"], &[]));
        }
        let (_, missed) = r.restore("P", &seen).unwrap();
        assert_eq!(missed.len(), 1);
        assert_eq!(missed[0].data[0], "both");
    }

    #[test]
    fn a_claim_handed_back_leaves_the_session_as_it_was() {
        let r = Recovery::new(RecoveryConfig::default());
        let seen = offset_of(&r.store(json!(["x"]), &[], &opts(&[], &[])));
        r.save("S".into(), "P".into(), vec!["r1".into()], json!({"k": 1}));
        r.store(json!(["missed"]), &[], &opts(&["r1"], &[]));
        let claimed = r.claim("P", &seen).unwrap();
        // While claimed, a second attempt finds nothing.
        assert!(r.claim("P", &seen).is_none());
        r.put_back(claimed);
        assert_eq!(r.stats().saved_sessions, 1);
        let (session, missed) = r.restore("P", &seen).expect("the owner still recovers");
        assert_eq!(session.rooms, vec![Room::from("r1")]);
        assert_eq!(session.data, json!({"k": 1}));
        assert_eq!(missed.len(), 1);
    }

    #[test]
    fn rooms_left_behind_are_not_replayed_but_still_exclude() {
        let r = Recovery::new(RecoveryConfig::default());
        let seen = offset_of(&r.store(json!(["x"]), &[], &opts(&[], &[])));
        r.save(
            "S".into(),
            "P".into(),
            vec!["a".into(), "b".into()],
            Value::Null,
        );
        r.store(json!(["to-a"]), &[], &opts(&["a"], &[]));
        r.store(json!(["to-b"]), &[], &opts(&["b"], &[]));
        r.store(json!(["all-but-a"]), &[], &opts(&[], &["a"]));
        r.store(json!(["direct"]), &[], &opts(&["S"], &[]));
        let resumed = r.claim("P", &seen).unwrap();
        // Only room b is kept (say, the new credentials do not grant a).
        let (missed, _) = r.missed(&resumed, &[Room::from("b")]);
        let names: Vec<&str> = missed.iter().map(|p| p.data[0].as_str().unwrap()).collect();
        assert_eq!(names, ["to-b", "direct"]);
    }

    #[test]
    fn saved_sessions_are_capped_by_count_and_bytes() {
        let r = Recovery::new(config(|c| c.max_saved_sessions = 3));
        for i in 0..10 {
            r.save(
                format!("S{i}").into(),
                format!("P{i}").into(),
                vec![],
                Value::Null,
            );
        }
        let stats = r.stats();
        assert_eq!(stats.saved_sessions, 3);
        let seen = offset_of(&r.store(json!(["x"]), &[], &opts(&[], &[])));
        assert!(r.claim("P0", &seen).is_none(), "the oldest made room");
        assert!(r.claim("P9", &seen).is_some());

        let r = Recovery::new(config(|c| c.max_saved_bytes = 64 * 1024));
        let rooms: Vec<Room> = (0..1000)
            .map(|i| Room::from(format!("room-{i:04}")))
            .collect();
        for i in 0..20 {
            r.save(
                format!("S{i}").into(),
                format!("P{i}").into(),
                rooms.clone(),
                Value::Null,
            );
        }
        let stats = r.stats();
        assert!(stats.saved_bytes <= 64 * 1024, "{stats:?}");
        assert!(
            stats.saved_sessions >= 1 && stats.saved_sessions < 20,
            "{stats:?}"
        );
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
