//! The live sessions, keyed by sid: a fixed number of shards, each a mutex around a plain map.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::session::Session;
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

/// Sessions by id.
pub(crate) struct SessionMap {
    pub(crate) metrics: EngineMetrics,
    hasher: RandomState,
    shards: [Mutex<HashMap<Box<str>, Arc<Session>>>; SHARDS],
    /// Sessions counted against the connection limits: reserved at the handshake, released when the
    /// session leaves the map (or its handshake fails).
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

impl SessionMap {
    pub(crate) fn new() -> Self {
        Self {
            metrics: EngineMetrics::default(),
            hasher: RandomState::new(),
            shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
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

    fn shard(&self, id: &str) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Arc<Session>>> {
        let i = self.hasher.hash_one(id) as usize & (SHARDS - 1);
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn insert(&self, session: Arc<Session>) {
        self.shard(session.id())
            .insert(session.id().into(), session);
    }

    pub(crate) fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.shard(id).get(id).cloned()
    }

    pub(crate) fn remove(&self, id: &str) {
        let removed = self.shard(id).remove(id);
        if let Some(session) = removed {
            self.release(session.request().remote_addr.map(|a| a.ip()));
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
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
                    .values()
                    .cloned(),
            );
        }
        out
    }
}
