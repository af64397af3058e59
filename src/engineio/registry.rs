//! The live sessions, keyed by sid: a fixed number of shards, each a mutex around a plain map.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};

use super::session::Session;

const SHARDS: usize = 16;

/// Sessions by id.
pub(crate) struct SessionMap {
    hasher: RandomState,
    shards: [Mutex<HashMap<Box<str>, Arc<Session>>>; SHARDS],
}

impl SessionMap {
    pub(crate) fn new() -> Self {
        Self {
            hasher: RandomState::new(),
            shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
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
        self.shard(id).remove(id);
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
