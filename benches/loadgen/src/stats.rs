//! Latency histograms (microseconds) and the server probe (/proc/PID).

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// 1 µs .. 120 s at 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds")
}

/// Percentiles in microseconds, and the recorded values (for merging across processes).
pub fn summary(h: &Histogram<u64>) -> Value {
    json!({
        "count": h.len(),
        "mean_us": h.mean(),
        "p50_us": h.value_at_quantile(0.50),
        "p90_us": h.value_at_quantile(0.90),
        "p99_us": h.value_at_quantile(0.99),
        "p999_us": h.value_at_quantile(0.999),
        "max_us": h.max(),
    })
}

/// The recorded values as `[[value, count], ...]`, for a parent process to merge.
pub fn to_pairs(h: &Histogram<u64>) -> Value {
    Value::Array(
        h.iter_recorded()
            .map(|v| json!([v.value_iterated_to(), v.count_at_value()]))
            .collect(),
    )
}

pub fn merge_pairs(h: &mut Histogram<u64>, pairs: &Value) {
    for p in pairs.as_array().into_iter().flatten() {
        if let (Some(v), Some(c)) = (p[0].as_u64(), p[1].as_u64()) {
            let _ = h.record_n(v, c);
        }
    }
}

/// Reads the server's memory and CPU time from /proc (Linux).
#[derive(Debug, Clone, Copy)]
pub struct Probe {
    pub pid: u32,
}

/// The /proc clock tick (USER_HZ): 100 on every Linux architecture the harness runs on.
const TICKS_PER_SEC: u64 = 100;

impl Probe {
    /// Resident set size, KiB (VmRSS).
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    }

    /// User + system CPU time of all threads, microseconds (10 ms resolution).
    pub fn cpu_us(&self) -> Option<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
        // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        Some((utime + stime) * 1_000_000 / TICKS_PER_SEC)
    }
}

/// A probe that may be absent (no `--server-pid`).
pub fn rss(p: Option<Probe>) -> Value {
    p.and_then(|p| p.rss_kib()).map_or(Value::Null, Value::from)
}

pub fn cpu(p: Option<Probe>) -> Option<u64> {
    p.and_then(|p| p.cpu_us())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_reads_own_process() {
        let p = Probe {
            pid: std::process::id(),
        };
        assert!(p.rss_kib().unwrap() > 0);
        assert!(p.cpu_us().is_some());
    }

    #[test]
    fn pairs_round_trip() {
        let mut h = histogram();
        h.record(10).unwrap();
        h.record_n(2000, 3).unwrap();
        let mut m = histogram();
        merge_pairs(&mut m, &to_pairs(&h));
        assert_eq!(m.len(), 4);
        assert_eq!(m.value_at_quantile(0.99), h.value_at_quantile(0.99));
    }
}
