//! Counters, gauges and a histogram, and their Prometheus text exposition (written by hand: the
//! format is a few lines of text, simpler than a dependency).
//!
//! Counters are relaxed atomics bumped on the paths they count; gauges (sessions, sockets, rooms) are
//! computed when scraped, so the hot paths pay nothing for them.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Slots per counter: threads add to their own slot, so counting on every core costs no cache-line
/// ping-pong; a read sums the slots.
const SLOTS: usize = 8;

/// One cache line per slot.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Slot(AtomicU64);

thread_local! {
    static SLOT: usize = {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        (NEXT.fetch_add(1, Ordering::Relaxed) as usize) % SLOTS
    };
}

fn slot() -> usize {
    SLOT.with(|s| *s)
}

/// A monotonically increasing count, cheap to bump from every thread.
#[derive(Debug, Default)]
pub struct Counter([Slot; SLOTS]);

impl Counter {
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0[slot()].0.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.iter().map(|s| s.0.load(Ordering::Relaxed)).sum()
    }
}

/// A level that goes up and down (bytes held for clients), changed on paths that are not per
/// message: one shared atomic.
#[derive(Debug, Default)]
pub struct Gauge(std::sync::atomic::AtomicI64);

impl Gauge {
    /// Adds `n`.
    pub fn add(&self, n: usize) {
        self.0
            .fetch_add(i64::try_from(n).unwrap_or(i64::MAX), Ordering::Relaxed);
    }

    /// Takes `n` away.
    pub fn sub(&self, n: usize) {
        self.0
            .fetch_sub(i64::try_from(n).unwrap_or(i64::MAX), Ordering::Relaxed);
    }

    /// The current level (never below zero).
    pub fn get(&self) -> u64 {
        u64::try_from(self.0.load(Ordering::Relaxed)).unwrap_or(0)
    }
}

/// Upper bounds of the latency buckets, in microseconds.
const BUCKETS_US: [u64; 14] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000,
];

/// A latency histogram with fixed buckets (50 µs to 1 s).
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [Counter; BUCKETS_US.len()],
    count: Counter,
    sum_us: Counter,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        if let Some(i) = BUCKETS_US.iter().position(|&b| us <= b) {
            self.buckets[i].inc();
        }
        self.count.inc();
        self.sum_us.add(us);
    }

    /// How many observations were recorded.
    pub fn count(&self) -> u64 {
        self.count.get()
    }
}

/// Writes Prometheus text exposition.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    /// An empty exposition.
    pub fn new() -> Self {
        Self::default()
    }

    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// A metric with one unlabelled value.
    pub fn single(&mut self, name: &str, kind: &str, help: &str, value: u64) {
        self.header(name, kind, help);
        let _ = writeln!(self.out, "{name} {value}");
    }

    /// A metric with one unlabelled value that needs a fraction (seconds, say).
    pub fn single_f64(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.header(name, kind, help);
        let _ = writeln!(self.out, "{name} {value}");
    }

    /// A metric with one value per label value.
    pub fn labelled<'a>(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        label: &str,
        values: impl IntoIterator<Item = (&'a str, u64)>,
    ) {
        self.header(name, kind, help);
        for (value_label, value) in values {
            let escaped = value_label
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            let _ = writeln!(self.out, "{name}{{{label}=\"{escaped}\"}} {value}");
        }
    }

    /// A histogram, in seconds.
    pub fn histogram(&mut self, name: &str, help: &str, h: &Histogram) {
        self.header(name, "histogram", help);
        let mut cumulative = 0;
        for (bound, bucket) in BUCKETS_US.iter().zip(&h.buckets) {
            cumulative += bucket.get();
            let le = *bound as f64 / 1e6;
            let _ = writeln!(self.out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let count = h.count();
        let _ = writeln!(self.out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = h.sum_us.get() as f64 / 1e6;
        let _ = writeln!(self.out, "{name}_sum {sum}\n{name}_count {count}");
    }

    /// The text.
    pub fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_text_format() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(70));
        h.observe(Duration::from_millis(3));
        let mut e = Exposition::new();
        e.single("x_total", "counter", "An x.", 3);
        e.single_f64("w_seconds", "gauge", "A w.", 1.5);
        e.labelled("y", "gauge", "A y.", "nsp", [("/", 2), ("/a\"b", 1)]);
        e.histogram("z_seconds", "A z.", &h);
        let text = e.finish();
        assert!(text.contains("# TYPE x_total counter\nx_total 3\n"));
        assert!(text.contains("# TYPE w_seconds gauge\nw_seconds 1.5\n"));
        assert!(text.contains("y{nsp=\"/\"} 2\ny{nsp=\"/a\\\"b\"} 1\n"));
        assert!(text.contains("z_seconds_bucket{le=\"0.00005\"} 0\n"));
        assert!(text.contains("z_seconds_bucket{le=\"0.0001\"} 1\n"));
        assert!(text.contains("z_seconds_bucket{le=\"0.005\"} 2\n"));
        assert!(text.contains(
            "z_seconds_bucket{le=\"+Inf\"} 2\nz_seconds_sum 0.00307\nz_seconds_count 2\n"
        ));
    }
}
