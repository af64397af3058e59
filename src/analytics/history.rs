//! A bounded per-organisation buffer of recent updates, so a dashboard that was away can catch up.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;

/// Recent updates by organisation, bounded in count and age.
#[derive(Debug)]
pub struct History {
    max_len: usize,
    max_age: Duration,
    orgs: Mutex<HashMap<String, VecDeque<(u64, Value)>>>,
}

impl History {
    /// Keeps at most `max_len` updates per organisation, none older than `max_age`.
    pub fn new(max_len: usize, max_age: Duration) -> Self {
        Self {
            max_len,
            max_age,
            orgs: Mutex::new(HashMap::new()),
        }
    }

    fn max_age_ms(&self) -> u64 {
        u64::try_from(self.max_age.as_millis()).unwrap_or(u64::MAX)
    }

    /// Records an update (its timestamp in ms) at `now_ms`.
    pub fn record(&self, org: &str, timestamp: u64, update: Value, now_ms: u64) {
        if self.max_len == 0 {
            return;
        }
        let cutoff = now_ms.saturating_sub(self.max_age_ms());
        let mut orgs = self.orgs.lock().unwrap_or_else(|e| e.into_inner());
        let buf = orgs.entry(org.to_owned()).or_default();
        buf.push_back((timestamp, update));
        while buf.len() > self.max_len || buf.front().is_some_and(|(t, _)| *t < cutoff) {
            buf.pop_front();
        }
    }

    /// The updates of `org` with a timestamp after `since`, oldest first.
    pub fn since(&self, org: &str, since: u64, now_ms: u64) -> Vec<Value> {
        let cutoff = now_ms.saturating_sub(self.max_age_ms());
        let orgs = self.orgs.lock().unwrap_or_else(|e| e.into_inner());
        orgs.get(org).map_or_else(Vec::new, |buf| {
            buf.iter()
                .filter(|(t, _)| *t > since && *t >= cutoff)
                .map(|(_, v)| v.clone())
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bounded_by_count_and_age() {
        let h = History::new(3, Duration::from_millis(100));
        for t in 1..=5 {
            h.record("a", t, json!(t), 10);
        }
        assert_eq!(h.since("a", 0, 10), [json!(3), json!(4), json!(5)]);
        assert_eq!(h.since("a", 4, 10), [json!(5)]);
        assert!(h.since("b", 0, 10).is_empty());
        // Everything is older than 100 ms at t = 200.
        assert!(h.since("a", 0, 200).is_empty());
        h.record("a", 200, json!(200), 200);
        assert_eq!(h.since("a", 0, 200), [json!(200)]);
    }
}
