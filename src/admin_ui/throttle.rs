//! Failed Admin UI logins, per client address: after `max_failures` password attempts that did not
//! succeed within `window`, that address is refused (without checking the password) until the
//! window ends. A successful login clears the address.
//!
//! An attempt is counted when it starts, before the (slow, blocking-pool) bcrypt check, so attempts
//! sent in parallel are bounded too; success takes the count away again. The table holds at most
//! `max_addresses` entries: when full, expired entries go first, then the oldest.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Options of the login throttle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoginThrottle {
    /// Failed (or pending) password attempts allowed per address in one window. Default 5. Zero
    /// turns the throttle off.
    pub max_failures: u32,
    /// The window the failures are counted in, which is also how long an address stays refused
    /// after its last counted failure. Default 60 s.
    pub window: Duration,
    /// The most addresses tracked at once. Default 10 000 (about 0.5 MiB).
    pub max_addresses: usize,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        Self {
            max_failures: 5,
            window: Duration::from_secs(60),
            max_addresses: 10_000,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    /// When the window started (the first counted failure).
    since: Instant,
}

/// The throttle table.
#[derive(Debug)]
pub(crate) struct Throttle {
    options: LoginThrottle,
    table: Mutex<HashMap<IpAddr, Entry>>,
}

impl Throttle {
    pub(crate) fn new(options: LoginThrottle) -> Self {
        Self {
            options,
            table: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Entry>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts an attempt from `addr` at `now`; false when the address is refused (nothing counted).
    pub(crate) fn begin(&self, addr: IpAddr, now: Instant) -> bool {
        let o = self.options;
        if o.max_failures == 0 {
            return true;
        }
        let mut table = self.lock();
        if let Some(entry) = table.get_mut(&addr) {
            if now.duration_since(entry.since) >= o.window {
                *entry = Entry {
                    failures: 0,
                    since: now,
                };
            }
            if entry.failures >= o.max_failures {
                return false;
            }
            entry.failures += 1;
            return true;
        }
        if table.len() >= o.max_addresses.max(1) {
            table.retain(|_, e| now.duration_since(e.since) < o.window);
            if table.len() >= o.max_addresses.max(1) {
                if let Some(oldest) = table.iter().min_by_key(|(_, e)| e.since).map(|(a, _)| *a) {
                    table.remove(&oldest);
                }
            }
        }
        table.insert(
            addr,
            Entry {
                failures: 1,
                since: now,
            },
        );
        true
    }

    /// A login from `addr` succeeded: forget its failures.
    pub(crate) fn succeeded(&self, addr: IpAddr) {
        self.lock().remove(&addr);
    }

    /// Addresses tracked.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(max_addresses: usize) -> Throttle {
        Throttle::new(LoginThrottle {
            max_failures: 3,
            window: Duration::from_secs(10),
            max_addresses,
        })
    }

    #[test]
    fn refuses_after_the_failures_until_the_window_ends() {
        let t = throttle(100);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(t.begin(a, t0));
        }
        assert!(!t.begin(a, t0 + Duration::from_secs(9)));
        // Another address is not affected.
        assert!(t.begin(b, t0));
        assert!(t.begin(a, t0 + Duration::from_secs(10)));
    }

    #[test]
    fn success_resets() {
        let t = throttle(100);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(t.begin(a, t0));
        }
        t.succeeded(a);
        assert!(t.begin(a, t0));
    }

    #[test]
    fn the_table_is_bounded() {
        let t = throttle(4);
        let t0 = Instant::now();
        for i in 0..100u8 {
            t.begin(
                IpAddr::from([10, 0, 1, i]),
                t0 + Duration::from_millis(u64::from(i)),
            );
        }
        assert_eq!(t.len(), 4);
    }
}
