//! Who the client is behind a reverse proxy: `Forwarded` / `X-Forwarded-For`, believed only from the
//! proxies the operator trusts.
//!
//! Sans-IO: headers and the TCP peer in, an address out. A header from a peer that is not trusted is
//! never read, whatever it says (anyone can send one). From a trusted peer the list of hops is walked
//! from the right (the hop nearest to us) to the left, skipping trusted proxies; the first address
//! that is not trusted is the client. A hop that cannot be parsed (`unknown`, an obfuscated name,
//! garbage) ends the walk with the TCP peer, as nothing left of it can be believed.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use http::HeaderMap;

/// An address range in CIDR notation (`10.0.0.0/8`, `fd00::/8`), or one address (`127.0.0.1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    base: IpAddr,
    prefix: u8,
}

impl IpRange {
    /// Whether `ip` lies in the range (an IPv4-mapped IPv6 address counts as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.base, ip) {
            (IpAddr::V4(base), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(base) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(base), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(base) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let base: IpAddr = addr
            .parse()
            .map_err(|_| format!("not an IP address or CIDR range: {s:?}"))?;
        let base = canonical(base);
        let max = if base.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("bad prefix length in {s:?}"))?,
        };
        Ok(Self { base, prefix })
    }
}

impl std::fmt::Display for IpRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The client's address for a request from `peer` with `headers`, given the `trusted` proxies.
pub(crate) fn client_addr(
    trusted: &[IpRange],
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
) -> Option<SocketAddr> {
    let peer_addr = peer?;
    let is_trusted = |ip: IpAddr| trusted.iter().any(|range| range.contains(ip));
    if trusted.is_empty() || !is_trusted(peer_addr.ip()) {
        return peer;
    }
    // `Forwarded` (RFC 7239) when present, else `X-Forwarded-For`; never a mix of both.
    let forwarded: Vec<&str> = headers
        .get_all(http::header::FORWARDED)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let hops: Vec<Option<SocketAddr>> = if !forwarded.is_empty() {
        forwarded
            .iter()
            .flat_map(|v| v.split(','))
            .map(forwarded_for)
            .collect()
    } else {
        headers
            .get_all("x-forwarded-for")
            .iter()
            .map(|v| v.to_str().ok())
            .flat_map(|v| match v {
                Some(v) => v.split(',').map(|hop| parse_hop(hop.trim())).collect(),
                None => vec![None],
            })
            .collect()
    };
    let mut client = peer_addr;
    for hop in hops.into_iter().rev() {
        let Some(hop) = hop else {
            return peer;
        };
        client = hop;
        if !is_trusted(hop.ip()) {
            break;
        }
    }
    Some(client)
}

/// The `for=` of one `Forwarded` element; `None` if it has none or it is not an address.
fn forwarded_for(element: &str) -> Option<SocketAddr> {
    let value = element.split(';').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("for")
            .then_some(value.trim())
    })?;
    parse_hop(value.trim_matches('"'))
}

/// One hop: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`, `[2001:db8::1]` or `[2001:db8::1]:4711`.
/// A hop without a port gets port 0.
fn parse_hop(hop: &str) -> Option<SocketAddr> {
    if let Ok(addr) = hop.parse::<SocketAddr>() {
        return Some(SocketAddr::new(canonical(addr.ip()), addr.port()));
    }
    let bare = hop
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(hop);
    bare.parse::<IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(canonical(ip), 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn ranges(list: &[&str]) -> Vec<IpRange> {
        list.iter().map(|r| r.parse().unwrap()).collect()
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    fn client(trusted: &[&str], peer: &str, pairs: &[(&'static str, &'static str)]) -> String {
        client_addr(
            &ranges(trusted),
            Some(peer.parse().unwrap()),
            &headers(pairs),
        )
        .unwrap()
        .to_string()
    }

    #[test]
    fn ranges_parse_and_match() {
        let net: IpRange = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.0.9".parse().unwrap()));
        let one: IpRange = "127.0.0.1".parse().unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        let all: IpRange = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        let v6: IpRange = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
        for bad in ["", "10.0.0.0/33", "fd00::/129", "example.com", "10.0.0.0/x"] {
            assert!(bad.parse::<IpRange>().is_err(), "{bad}");
        }
        assert_eq!(net.to_string(), "10.1.0.0/16");
    }

    #[test]
    fn headers_from_an_untrusted_peer_are_ignored() {
        let xff = [("x-forwarded-for", "203.0.113.9")];
        assert_eq!(client(&[], "127.0.0.1:5000", &xff), "127.0.0.1:5000");
        assert_eq!(
            client(&["10.0.0.0/8"], "127.0.0.1:5000", &xff),
            "127.0.0.1:5000"
        );
    }

    #[test]
    fn the_first_untrusted_hop_from_the_right_is_the_client() {
        let trusted = ["127.0.0.1", "10.0.0.0/8"];
        let peer = "127.0.0.1:5000";
        assert_eq!(
            client(&trusted, peer, &[("x-forwarded-for", "203.0.113.9")]),
            "203.0.113.9:0"
        );
        // A spoofed left part is not believed: 198.51.100.7 is what our proxies saw.
        assert_eq!(
            client(
                &trusted,
                peer,
                &[("x-forwarded-for", "1.2.3.4, 198.51.100.7, 10.0.0.5")]
            ),
            "198.51.100.7:0"
        );
        // Several header lines are one list.
        assert_eq!(
            client(
                &trusted,
                peer,
                &[
                    ("x-forwarded-for", "1.2.3.4"),
                    ("x-forwarded-for", "10.1.1.1")
                ]
            ),
            "1.2.3.4:0"
        );
        // `Forwarded` wins over `X-Forwarded-For`, with ports and IPv6.
        assert_eq!(
            client(
                &trusted,
                peer,
                &[
                    (
                        "forwarded",
                        r#"for="[2001:db8::17]:4711";proto=https, for=10.0.0.2"#
                    ),
                    ("x-forwarded-for", "192.0.2.1"),
                ]
            ),
            "[2001:db8::17]:4711"
        );
        assert_eq!(
            client(
                &trusted,
                peer,
                &[("forwarded", "proto=http;For=192.0.2.60")]
            ),
            "192.0.2.60:0"
        );
        // Every hop trusted: the farthest one.
        assert_eq!(
            client(&trusted, peer, &[("x-forwarded-for", "10.0.0.9, 10.0.0.8")]),
            "10.0.0.9:0"
        );
        // No header: the peer.
        assert_eq!(client(&trusted, peer, &[]), "127.0.0.1:5000");
    }

    #[test]
    fn a_malformed_hop_falls_back_to_the_peer() {
        let trusted = ["127.0.0.1"];
        let peer = "127.0.0.1:5000";
        for value in ["unknown", "1.2.3.4, garbage", "", "1.2.3.4,"] {
            assert_eq!(
                client(&trusted, peer, &[("x-forwarded-for", value)]),
                peer,
                "{value:?}"
            );
        }
        assert_eq!(
            client(&trusted, peer, &[("forwarded", "for=_hidden")]),
            peer
        );
        assert_eq!(client(&trusted, peer, &[("forwarded", "proto=http")]), peer);
        // Malformed, but left of the first untrusted hop: never looked at.
        assert_eq!(
            client(&trusted, peer, &[("x-forwarded-for", "garbage, 192.0.2.5")]),
            "192.0.2.5:0"
        );
    }
}
