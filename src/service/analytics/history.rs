//! A bounded per-organisation buffer of recent updates, so a dashboard that was away can catch up.
//!
//! Storage is sharded by organisation: recording or reading one organisation locks only its shard,
//! and only long enough to copy pointers. Each entry is the update's JSON text as [`Bytes`], so a page
//! shares the stored bytes; parsing them into the reply happens after the lock is released. Nothing
//! here ever holds a lock across the whole history or while serialising.
//!
//! Memory is bounded by the existing caps: at most `max_len` entries per organisation, none older than
//! `max_age`. A reply is bounded by [`Page`]: a count and a byte budget.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;

/// How many shards the organisations are spread over: enough that two busy organisations rarely
/// share a lock on a many-core machine, few enough that an empty history costs nothing to speak of.
const SHARDS: usize = 16;

/// One stored update.
#[derive(Debug, Clone)]
struct Entry {
    /// The update's timestamp (ms since the Unix epoch, as the update says).
    timestamp: u64,
    /// Arrival order across the whole history: breaks timestamp ties deterministically.
    seq: u64,
    /// The update's JSON text.
    json: Bytes,
}

type Shard = Mutex<HashMap<Box<str>, VecDeque<Entry>>>;

/// Recent updates by organisation, bounded in count and age.
#[derive(Debug)]
pub struct History {
    max_len: usize,
    max_age: Duration,
    hasher: RandomState,
    seq: AtomicU64,
    shards: Box<[Shard]>,
}

/// What one reply may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// The most updates.
    pub limit: usize,
    /// The most bytes of update JSON. One update is always returned, however large, so that a reader
    /// can make progress.
    pub max_bytes: usize,
}

/// One page of updates, oldest first.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PageOf {
    /// The updates' JSON texts.
    pub events: Vec<Bytes>,
    /// Whether more updates after the last one returned exist (ask again with `since` = its
    /// timestamp).
    pub more: bool,
}

impl History {
    /// Keeps at most `max_len` updates per organisation, none older than `max_age`.
    pub fn new(max_len: usize, max_age: Duration) -> Self {
        Self {
            max_len,
            max_age,
            hasher: RandomState::new(),
            seq: AtomicU64::new(0),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    fn max_age_ms(&self) -> u64 {
        u64::try_from(self.max_age.as_millis()).unwrap_or(u64::MAX)
    }

    fn shard(&self, org: &str) -> std::sync::MutexGuard<'_, HashMap<Box<str>, VecDeque<Entry>>> {
        let i = (self.hasher.hash_one(org) % SHARDS as u64) as usize;
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records an update (its timestamp in ms and its JSON text) at `now_ms`.
    pub fn record(&self, org: &str, timestamp: u64, json: Bytes, now_ms: u64) {
        if self.max_len == 0 {
            return;
        }
        let cutoff = now_ms.saturating_sub(self.max_age_ms());
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let mut shard = self.shard(org);
        let buf = match shard.get_mut(org) {
            Some(buf) => buf,
            None => shard.entry(org.into()).or_default(),
        };
        buf.push_back(Entry {
            timestamp,
            seq,
            json,
        });
        while buf.len() > self.max_len || buf.front().is_some_and(|e| e.timestamp < cutoff) {
            buf.pop_front();
        }
    }

    /// The first page of updates of `orgs` with a timestamp after `since`, ordered by timestamp
    /// (ties in arrival order).
    ///
    /// A page never ends inside a run of updates sharing one timestamp when it can end before it,
    /// so that asking again with `since` = the last timestamp returned misses nothing. (Only a run
    /// longer than a whole page, i.e. more than `limit` updates in the same millisecond, is cut.)
    pub fn page<'a>(
        &self,
        orgs: impl IntoIterator<Item = &'a str>,
        since: u64,
        page: Page,
        now_ms: u64,
    ) -> PageOf {
        let cutoff = now_ms.saturating_sub(self.max_age_ms());
        let limit = page.limit.max(1);
        // Per organisation, under its shard's lock: the `limit + 1` oldest matching entries
        // (pointer copies). One more than a page tells whether there are more.
        let mut found: Vec<Entry> = Vec::new();
        for org in orgs {
            let shard = self.shard(org);
            let Some(buf) = shard.get(org) else {
                continue;
            };
            let mut matching: Vec<&Entry> = buf
                .iter()
                .filter(|e| e.timestamp > since && e.timestamp >= cutoff)
                .collect();
            if matching.len() > limit + 1 {
                matching.select_nth_unstable_by_key(limit, |e| (e.timestamp, e.seq));
                matching.truncate(limit + 1);
            }
            found.extend(matching.into_iter().cloned());
        }
        found.sort_unstable_by_key(|e| (e.timestamp, e.seq));
        let mut bytes = 0usize;
        let mut take = 0usize;
        for e in &found {
            if take == limit || (take > 0 && bytes + e.json.len() > page.max_bytes) {
                break;
            }
            bytes += e.json.len();
            take += 1;
        }
        let more = take < found.len();
        if more {
            // Step back to the start of the run the page would cut, unless the run is the page.
            let cut = found[take].timestamp;
            let run_start = found[..take]
                .iter()
                .rposition(|e| e.timestamp != cut)
                .map_or(0, |i| i + 1);
            if run_start > 0 {
                take = run_start;
            }
        }
        found.truncate(take);
        PageOf {
            events: found.into_iter().map(|e| e.json).collect(),
            more,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(t: u64) -> Bytes {
        Bytes::from(t.to_string())
    }

    fn texts(page: &PageOf) -> Vec<String> {
        page.events
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect()
    }

    const ALL: Page = Page {
        limit: 1000,
        max_bytes: usize::MAX,
    };

    #[test]
    fn bounded_by_count_and_age() {
        let h = History::new(3, Duration::from_millis(100));
        for t in 1..=5 {
            h.record("a", t, b(t), 10);
        }
        assert_eq!(texts(&h.page(["a"], 0, ALL, 10)), ["3", "4", "5"]);
        assert_eq!(texts(&h.page(["a"], 4, ALL, 10)), ["5"]);
        assert!(h.page(["b"], 0, ALL, 10).events.is_empty());
        // Everything is older than 100 ms at t = 200.
        assert!(h.page(["a"], 0, ALL, 200).events.is_empty());
        h.record("a", 200, b(200), 200);
        assert_eq!(texts(&h.page(["a"], 0, ALL, 200)), ["200"]);
    }

    fn shard_index(h: &History, org: &str) -> usize {
        (h.hasher.hash_one(org) % SHARDS as u64) as usize
    }

    #[test]
    fn an_organisation_is_recorded_while_another_ones_shard_is_locked() {
        let h = std::sync::Arc::new(History::new(10, Duration::from_secs(3600)));
        let other = (0..)
            .map(|i| format!("org{i}"))
            .find(|o| shard_index(&h, o) != shard_index(&h, "busy"))
            .unwrap();
        // A reader of "busy" holds its shard (as a page being gathered does).
        let held = h.shard("busy");
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let writer = {
            let h = h.clone();
            std::thread::spawn(move || {
                h.record(&other, 1, Bytes::from_static(b"1"), 10);
                let page = h.page([other.as_str()], 0, ALL, 10);
                done_tx.send(page.events.len()).unwrap();
            })
        };
        assert_eq!(
            done_rx.recv_timeout(Duration::from_secs(5)),
            Ok(1),
            "another organisation waited for the lock"
        );
        drop(held);
        writer.join().unwrap();
    }

    #[test]
    fn pages_by_count_and_walks_the_history_with_since() {
        let h = History::new(100, Duration::from_secs(3600));
        for t in 1..=10 {
            h.record("a", t, b(t), 10);
        }
        let page = Page {
            limit: 4,
            max_bytes: usize::MAX,
        };
        let first = h.page(["a"], 0, page, 10);
        assert_eq!(texts(&first), ["1", "2", "3", "4"]);
        assert!(first.more);
        let second = h.page(["a"], 4, page, 10);
        assert_eq!(texts(&second), ["5", "6", "7", "8"]);
        assert!(second.more);
        let last = h.page(["a"], 8, page, 10);
        assert_eq!(texts(&last), ["9", "10"]);
        assert!(!last.more);
    }

    #[test]
    fn pages_by_bytes_but_always_return_one_update() {
        let h = History::new(100, Duration::from_secs(3600));
        h.record("a", 1, Bytes::from(vec![b'x'; 100]), 10);
        h.record("a", 2, Bytes::from(vec![b'y'; 100]), 10);
        h.record("a", 3, Bytes::from(vec![b'z'; 100]), 10);
        let page = Page {
            limit: 100,
            max_bytes: 250,
        };
        let first = h.page(["a"], 0, page, 10);
        assert_eq!(first.events.len(), 2);
        assert!(first.more);
        // A budget below one update still returns one, so the reader makes progress.
        let tiny = Page {
            limit: 100,
            max_bytes: 10,
        };
        let one = h.page(["a"], 0, tiny, 10);
        assert_eq!(one.events.len(), 1);
        assert!(one.more);
    }

    #[test]
    fn merges_organisations_in_timestamp_order() {
        let h = History::new(100, Duration::from_secs(3600));
        // Arrival order differs from timestamp order.
        h.record("a", 5, b(5), 10);
        h.record("b", 2, b(2), 10);
        h.record("a", 1, b(1), 10);
        h.record("b", 7, b(7), 10);
        h.record("c", 3, b(3), 10);
        let page = Page {
            limit: 3,
            max_bytes: usize::MAX,
        };
        let first = h.page(["a", "b"], 0, page, 10);
        assert_eq!(texts(&first), ["1", "2", "5"]);
        assert!(first.more);
        let rest = h.page(["a", "b"], 5, page, 10);
        assert_eq!(texts(&rest), ["7"]);
        assert!(!rest.more);
    }

    #[test]
    fn a_page_does_not_end_inside_a_run_of_equal_timestamps() {
        let h = History::new(100, Duration::from_secs(3600));
        h.record("a", 1, Bytes::from_static(b"1"), 10);
        for tag in ["2a", "2b", "2c"] {
            h.record("a", 2, Bytes::from(tag), 10);
        }
        h.record("a", 3, Bytes::from_static(b"3"), 10);
        let page = Page {
            limit: 3,
            max_bytes: usize::MAX,
        };
        let first = h.page(["a"], 0, page, 10);
        // [1, 2a, 2b] would lose 2c when asking again with since = 2.
        assert_eq!(texts(&first), ["1"]);
        assert!(first.more);
        let second = h.page(["a"], 1, page, 10);
        assert_eq!(texts(&second), ["2a", "2b", "2c"]);
        assert!(second.more);
        let third = h.page(["a"], 2, page, 10);
        assert_eq!(texts(&third), ["3"]);
        assert!(!third.more);
    }
}
