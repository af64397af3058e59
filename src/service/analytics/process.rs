//! The process's own figures for `/metrics`, under the names Prometheus clients use
//! (`process_resident_memory_bytes`, `process_open_fds`, `process_max_fds`,
//! `process_cpu_seconds_total`, `process_start_time_seconds`), and a build info gauge.
//!
//! Read from `/proc` when a scrape asks (Linux); a figure that cannot be read is left out.

use std::time::Duration;

use tidings::metrics::Exposition;

/// Clock ticks per second of `/proc/<pid>/stat` (`USER_HZ`, 100 on every Linux architecture).
const TICKS_PER_SECOND: f64 = 100.0;

/// Appends the process figures and `tidings_build_info{version}`.
pub(super) fn write(e: &mut Exposition) {
    e.labelled(
        "tidings_build_info",
        "gauge",
        "The running build (always 1).",
        "version",
        [(env!("CARGO_PKG_VERSION"), 1)],
    );
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if let Some(kib) = field_kib(&status, "VmRSS:") {
        e.single(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            kib * 1024,
        );
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        e.single(
            "process_open_fds",
            "gauge",
            "Open file descriptors.",
            dir.count() as u64,
        );
    }
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    if let Some(max) = max_open_files(&limits) {
        e.single(
            "process_max_fds",
            "gauge",
            "The soft limit of open file descriptors.",
            max,
        );
    }
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let boot = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    if let Some(times) = StatTimes::parse(&stat) {
        e.single_f64(
            "process_cpu_seconds_total",
            "counter",
            "User and system CPU time spent, in seconds.",
            times.cpu.as_secs_f64(),
        );
        if let Some(btime) = boot_time(&boot) {
            e.single_f64(
                "process_start_time_seconds",
                "gauge",
                "Start time of the process since the Unix epoch, in seconds.",
                btime as f64 + times.started_after_boot.as_secs_f64(),
            );
        }
    }
}

/// `VmRSS:   1234 kB` → 1234.
fn field_kib(status: &str, name: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The soft limit of the `Max open files` row of `/proc/self/limits`.
fn max_open_files(limits: &str) -> Option<u64> {
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `btime <seconds>` of `/proc/stat`.
fn boot_time(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// What `/proc/self/stat` says of CPU time and start.
#[derive(Debug, PartialEq)]
struct StatTimes {
    cpu: Duration,
    started_after_boot: Duration,
}

impl StatTimes {
    /// Fields 14 and 15 (utime, stime) and 22 (starttime), counted after the command name, which
    /// is in parentheses and may hold spaces.
    fn parse(stat: &str) -> Option<Self> {
        let rest = &stat[stat.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // `rest` starts at field 3 (state).
        let field = |n: usize| -> Option<f64> { fields.get(n - 3)?.parse().ok() };
        let ticks = |t: f64| Duration::from_secs_f64(t / TICKS_PER_SECOND);
        Some(Self {
            cpu: ticks(field(14)? + field(15)?),
            started_after_boot: ticks(field(22)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_proc_formats() {
        assert_eq!(
            field_kib("Name:\ttidings\nVmRSS:\t   5120 kB\nThreads: 3\n", "VmRSS:"),
            Some(5120)
        );
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            20000                20000                files\n";
        assert_eq!(max_open_files(limits), Some(20000));
        assert_eq!(
            boot_time("cpu  1 2 3\nbtime 1764750000\nprocesses 9\n"),
            Some(1_764_750_000)
        );
        // A command name with spaces and a parenthesis does not shift the fields.
        let stat = "42 (tid (ings) x) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 12345 \
                    1000 100 18446744073709551615";
        assert_eq!(
            StatTimes::parse(stat),
            Some(StatTimes {
                cpu: Duration::from_secs(3),
                started_after_boot: Duration::from_secs_f64(123.45),
            })
        );
    }

    #[test]
    fn writes_this_process_figures() {
        let mut e = Exposition::new();
        write(&mut e);
        let text = e.finish();
        for name in [
            "tidings_build_info{version=",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_max_fds ",
            "process_cpu_seconds_total ",
            "process_start_time_seconds ",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
    }
}
