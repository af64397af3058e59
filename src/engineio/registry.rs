//! The live sessions, keyed by sid: a fixed number of shards, each a mutex around a plain map.
//!
//! Each shard also keeps the tombstones of polling sessions their client closed: a sid without a
//! session, which answers one GET with a noop until a grace period ends (see [`SessionMap::retire`]).
//! A tombstone is a few dozen bytes (the session itself, its queue and its connection-limit
//! reservation are gone with the close), and a shard holds at most [`MAX_TOMBSTONES`] of them.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use std::time::Duration;

use tokio::time::Instant;

use super::codec::Framing;
use super::session::Session;
use super::wheel::HeartbeatWheel;
use crate::metrics::{Counter, Histogram};

/// What the Engine.IO layer counts.
#[derive(Debug, Default)]
pub struct EngineMetrics {
    /// Packets received from clients.
    pub packets_in: Counter,
    /// Bytes received from clients (WebSocket messages and polling bodies).
    pub bytes_in: Counter,
    /// Frames sent to clients.
    pub packets_out: Counter,
    /// Bytes sent to clients.
    pub bytes_out: Counter,
    /// Refused requests by reference error code (0–5).
    pub request_errors: [Counter; 6],
    /// Handshakes refused by the connection limits.
    pub connection_limit: Counter,
    /// Sessions closed because their outbound queue overflowed.
    pub slow_consumers: Counter,
    /// From a frame being queued to its write (per batch, oldest frame).
    pub write_latency: Histogram,
}

const SHARDS: usize = 16;

/// The most tombstones a shard keeps: past it (a burst of client closes within one grace period), a
/// close leaves none, and a GET racing it gets 400 as before tombstones.
pub(crate) const MAX_TOMBSTONES: usize = 1024;

/// A shard sweeps its expired tombstones when it holds this many, or twice what the last sweep
/// left: each sweep is paid for by the closes since the one before.
const MIN_SWEEP: usize = 64;

/// A closed polling session's sid, kept for a GET that raced its client's close.
#[derive(Debug, Clone, Copy)]
struct Tombstone {
    /// How that GET's answer is framed (the session's polling framing).
    framing: Framing,
    /// When the sid stops answering.
    until: Instant,
}

/// A live session in its shard, found by its id: the set borrows the key from the session itself,
/// so the registry keeps no second copy of every sid.
struct Live(Arc<Session>);

impl std::borrow::Borrow<str> for Live {
    fn borrow(&self) -> &str {
        self.0.id()
    }
}

impl std::hash::Hash for Live {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // As `str` hashes, which `Borrow<str>` requires.
        self.0.id().hash(state);
    }
}

impl PartialEq for Live {
    fn eq(&self, other: &Self) -> bool {
        self.0.id() == other.0.id()
    }
}

impl Eq for Live {}

#[derive(Default)]
struct Shard {
    live: HashSet<Live>,
    closed: HashMap<Box<str>, Tombstone>,
    /// `closed` is swept when it reaches this many entries.
    sweep_at: usize,
}

impl Shard {
    fn bury(&mut self, id: &str, tombstone: Tombstone, now: Instant) {
        if self.closed.len() >= self.sweep_at.max(MIN_SWEEP) {
            self.closed.retain(|_, t| t.until > now);
            self.sweep_at = (self.closed.len() * 2).clamp(MIN_SWEEP, MAX_TOMBSTONES);
            self.closed.shrink_to(self.sweep_at);
        }
        if self.closed.len() < MAX_TOMBSTONES {
            self.closed.insert(id.into(), tombstone);
        }
    }
}

/// Sessions by id.
pub(crate) struct SessionMap {
    pub(crate) metrics: EngineMetrics,
    hasher: RandomState,
    shards: [Mutex<Shard>; SHARDS],
    /// How long a tombstone answers ([`super::EngineConfig::close_grace`]).
    grace: Duration,
    /// Sessions counted against the connection limits: reserved at the handshake, released when the
    /// session leaves the map (or its handshake fails).
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// The heartbeat deadlines of the WebSocket sessions.
    pub(crate) heartbeats: Arc<HeartbeatWheel>,
}

impl SessionMap {
    /// An empty map whose tombstones answer for `grace`, its WebSocket heartbeats on a wheel of
    /// `heartbeat_tick`.
    pub(crate) fn new(grace: Duration, heartbeat_tick: Duration) -> Self {
        Self {
            heartbeats: HeartbeatWheel::new(heartbeat_tick),
            metrics: EngineMetrics::default(),
            hasher: RandomState::new(),
            shards: std::array::from_fn(|_| Mutex::new(Shard::default())),
            grace,
            total: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a new session from `ip` if that stays within `max_total` and `max_per_ip`.
    pub(crate) fn reserve(&self, ip: Option<IpAddr>, max_total: usize, max_per_ip: usize) -> bool {
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if self.total.load(Ordering::Relaxed) >= max_total {
            return false;
        }
        if let Some(ip) = ip {
            let count = per_ip.entry(ip).or_insert(0);
            if *count >= max_per_ip {
                return false;
            }
            *count += 1;
        }
        self.total.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Gives back what [`SessionMap::reserve`] counted.
    pub(crate) fn release(&self, ip: Option<IpAddr>) {
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        self.total.fetch_sub(1, Ordering::Relaxed);
        if let Some(ip) = ip {
            if let Some(count) = per_ip.get_mut(&ip) {
                *count -= 1;
                if *count == 0 {
                    per_ip.remove(&ip);
                }
            }
        }
    }

    fn shard(&self, id: &str) -> std::sync::MutexGuard<'_, Shard> {
        let i = self.hasher.hash_one(id) as usize & (SHARDS - 1);
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn insert(&self, session: Arc<Session>) {
        // A session's id is unique (120 random bits): an equal one is the same session.
        self.shard(session.id()).live.replace(Live(session));
    }

    pub(crate) fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.shard(id).live.get(id).map(|live| live.0.clone())
    }

    pub(crate) fn remove(&self, id: &str) {
        self.retire(id, None, Instant::now());
    }

    /// Removes the session `id`, leaving with `tombstone` (its polling framing) a sid that answers
    /// one GET with a noop until the grace period from `now` ends ([`SessionMap::take_tombstone`]).
    ///
    /// For a polling session its client closed (`1` in a POST) while no GET was waiting: a GET the
    /// client sent at the same moment may reach the session after that POST, and must be answered
    /// as if it had come first. (The reference, single-threaded, reads the bodiless GET before the
    /// POST's body; handled in parallel here, either may be first.) Both changes happen under the
    /// shard's lock, so a GET finds the session or its tombstone.
    pub(crate) fn retire(&self, id: &str, tombstone: Option<Framing>, now: Instant) {
        let removed = {
            let mut shard = self.shard(id);
            let removed = shard.live.take(id).map(|live| live.0);
            if let (Some(framing), Some(_)) = (tombstone, &removed) {
                let until = now + self.grace;
                shard.bury(id, Tombstone { framing, until }, now);
            }
            removed
        };
        if let Some(session) = removed {
            self.release(session.request().remote_addr.map(|a| a.ip()));
        }
    }

    /// Takes the tombstone of `id` if it still answers at `now`: the framing of the noop its GET
    /// gets. A sid answers once.
    pub(crate) fn take_tombstone(&self, id: &str, now: Instant) -> Option<Framing> {
        let tombstone = self.shard(id).closed.remove(id)?;
        (tombstone.until > now).then_some(tombstone.framing)
    }

    /// How many sessions are open (tombstones are not).
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).live.len())
            .sum()
    }

    /// How many tombstones the shards hold, expired or not (at most `MAX_TOMBSTONES` per shard).
    pub(crate) fn tombstones(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).closed.len())
            .sum()
    }

    /// A snapshot of every session (copied out; no lock is held afterwards).
    pub(crate) fn all(&self) -> Vec<Arc<Session>> {
        let mut out = Vec::new();
        for shard in &self.shards {
            out.extend(
                shard
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .live
                    .iter()
                    .map(|live| live.0.clone()),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engineio::TransportKind;
    use crate::engineio::heartbeat::Heartbeat;
    use crate::engineio::session::{OutboxLimits, RequestInfo};

    const GRACE: Duration = Duration::from_millis(200);

    fn open(map: &Arc<SessionMap>, id: &str, now: Instant) -> Arc<Session> {
        let request = Arc::new(RequestInfo::new(
            &http::Uri::from_static("/engine.io/?EIO=4&transport=polling"),
            &http::HeaderMap::new(),
            Some("127.0.0.1:1".parse().unwrap()),
        ));
        let interval = Duration::from_secs(25);
        let session = Arc::new(Session::new(
            id.to_owned(),
            request,
            TransportKind::Polling,
            Heartbeat::new(now, interval, Duration::from_secs(60)),
            map.clone(),
            OutboxLimits {
                frames: 8,
                bytes: 1 << 20,
            },
            Framing::V4,
        ));
        map.insert(session.clone());
        session
    }

    /// A map whose session `id` was opened and closed by its client at the returned instant.
    fn closed_by_client(id: &str) -> (Arc<SessionMap>, Instant) {
        let t0 = Instant::now();
        let map = Arc::new(SessionMap::new(GRACE, GRACE));
        open(&map, id, t0);
        map.retire(id, Some(Framing::V4), t0);
        (map, t0)
    }

    #[test]
    fn a_tombstone_answers_one_get_within_its_grace() {
        let (map, t0) = closed_by_client("a");
        assert!(map.get("a").is_none());
        assert_eq!(map.len(), 0);
        let just_before = t0 + GRACE - Duration::from_millis(1);
        assert_eq!(map.take_tombstone("a", just_before), Some(Framing::V4));
        // Once answered, the sid is unknown.
        assert_eq!(map.take_tombstone("a", just_before), None);
        assert_eq!(map.tombstones(), 0);
    }

    #[test]
    fn a_tombstone_expires_at_the_end_of_its_grace() {
        let (map, t0) = closed_by_client("a");
        assert_eq!(map.take_tombstone("a", t0 + GRACE), None);
        // A plain removal, or a sid that never was, leaves none.
        open(&map, "b", t0);
        map.remove("b");
        map.retire("never", Some(Framing::V4), t0);
        assert_eq!(map.take_tombstone("b", t0), None);
        assert_eq!(map.take_tombstone("never", t0), None);
        assert_eq!(map.tombstones(), 0);
    }

    #[test]
    fn a_tombstone_holds_no_connection_slot() {
        let t0 = Instant::now();
        let map = Arc::new(SessionMap::new(GRACE, GRACE));
        let ip = Some("127.0.0.1".parse().unwrap());
        assert!(map.reserve(ip, 1, 1));
        open(&map, "a", t0);
        assert!(!map.reserve(ip, 1, 1));
        map.retire("a", Some(Framing::V4), t0);
        assert!(map.reserve(ip, 1, 1), "the close gave the slot back");
    }

    #[test]
    fn tombstones_are_bounded_in_number_and_swept_once_expired() {
        let t0 = Instant::now();
        let map = Arc::new(SessionMap::new(GRACE, GRACE));
        // A burst of closes within one grace period: each shard keeps at most its bound.
        for i in 0..SHARDS * MAX_TOMBSTONES * 2 {
            let id = format!("burst{i}");
            open(&map, &id, t0);
            map.retire(&id, Some(Framing::V4), t0);
        }
        let kept = map.tombstones();
        assert!(kept <= SHARDS * MAX_TOMBSTONES, "{kept}");
        assert!(kept > SHARDS * MAX_TOMBSTONES / 2, "{kept}");
        // After the grace, a few closes (some in every shard, with all but certainty) sweep the
        // expired ones: what is left is about those few.
        let t1 = t0 + GRACE;
        let later = SHARDS * 20;
        for i in 0..later {
            let id = format!("later{i}");
            open(&map, &id, t1);
            map.retire(&id, Some(Framing::V4), t1);
        }
        assert!(map.tombstones() <= later, "{}", map.tombstones());
        assert_eq!(map.take_tombstone("later0", t1), Some(Framing::V4));
        assert_eq!(map.take_tombstone("burst0", t1), None);
    }
}
