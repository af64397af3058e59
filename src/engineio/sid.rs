//! Unguessable identifiers for sessions and sockets.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// A fresh 20-character id carrying 120 bits from the operating system's random source, in URL-safe
/// base64 (the alphabet the reference ids use, so clients and logs see familiar ids).
pub fn generate() -> String {
    let mut bytes = [0u8; 15];
    // The OS random source failing is not recoverable: no id we could make would be unguessable.
    getrandom::fill(&mut bytes).expect("the OS random source is unavailable");
    URL_SAFE_NO_PAD.encode(bytes)
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
