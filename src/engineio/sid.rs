//! Unguessable identifiers for sessions and sockets.

use std::cell::RefCell;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Random bytes fetched from the operating system at once, per thread, and handed out once each
/// (as the reference's ids draw on a pool of `crypto.randomBytes`): a connection takes two ids,
/// and a system call for each would be most of their cost.
const POOL: usize = 4096;

struct Pool {
    bytes: [u8; POOL],
    /// Bytes from here on are not handed out yet.
    next: usize,
}

thread_local! {
    static RANDOM: RefCell<Pool> = const { RefCell::new(Pool { bytes: [0; POOL], next: POOL }) };
}

/// `N` bytes from the operating system's random source, none of them ever handed out before.
fn random<const N: usize>() -> [u8; N] {
    const { assert!(N <= POOL) };
    RANDOM.with_borrow_mut(|pool| {
        if POOL - pool.next < N {
            // The OS random source failing is not recoverable: no id we could make would be
            // unguessable.
            getrandom::fill(&mut pool.bytes).expect("the OS random source is unavailable");
            pool.next = 0;
        }
        let mut out = [0u8; N];
        let taken = &mut pool.bytes[pool.next..pool.next + N];
        out.copy_from_slice(taken);
        // Not left behind in memory once handed out.
        taken.fill(0);
        pool.next += N;
        out
    })
}

/// A fresh id's 20 characters: 120 random bits in URL-safe base64.
fn generate_chars() -> [u8; 20] {
    let mut chars = [0u8; 20];
    let written = URL_SAFE_NO_PAD
        .encode_slice(random::<15>(), &mut chars)
        .expect("15 bytes are 20 base64 characters");
    debug_assert_eq!(written, 20);
    chars
}

/// A fresh 20-character id carrying 120 bits from the operating system's random source, in URL-safe
/// base64 (the alphabet the reference ids use, so clients and logs see familiar ids).
pub fn generate() -> String {
    let chars = generate_chars();
    // Base64 is ASCII.
    String::from_utf8_lossy(&chars).into_owned()
}

/// [`generate`], allocated once as the shared string a socket id is kept as.
pub(crate) fn generate_shared() -> Arc<str> {
    let chars = generate_chars();
    Arc::from(std::str::from_utf8(&chars).expect("base64 is ASCII"))
}

/// `bytes` random bytes from the operating system's source, in lower-case hex (the form of the
/// Node cluster adapters' node and request ids).
pub fn generate_hex(bytes: usize) -> String {
    let mut raw = vec![0u8; bytes];
    getrandom::fill(&mut raw).expect("the OS random source is unavailable");
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_ids_have_two_digits_per_byte() {
        let id = super::generate_hex(8);
        assert_eq!(id.len(), 16);
        assert!(
            id.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
    }

    #[test]
    fn pooled_bytes_are_never_handed_out_twice() {
        // Across refills of the pool: 4 096 / 15 ids per pool, a few pools.
        let ids: std::collections::HashSet<String> =
            (0..2_000).map(|_| super::generate()).collect();
        assert_eq!(ids.len(), 2_000);
        let shared = super::generate_shared();
        assert_eq!(shared.len(), 20);
        assert!(!ids.contains(&*shared));
    }

    #[test]
    fn ids_are_20_url_safe_chars_and_differ() {
        let a = super::generate();
        let b = super::generate();
        assert_eq!(a.len(), 20);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        assert_ne!(a, b);
    }
}
