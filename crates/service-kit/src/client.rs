//! Who a request comes from: the client's address and the request's id.
//!
//! Behind a proxy the TCP peer is the proxy, not the client. The proxy
//! says who the client was in `X-Forwarded-For` (or `X-Real-IP`), and may
//! send the id it gave the request in `X-Request-Id`; anyone can write
//! those headers, so they are believed only from a peer in
//! `http.trusted_proxies`. Everything keyed on a client (per-address
//! limits, logs) uses [`Client::address`]; every log line of a request
//! carries [`Client::request_id`], which the answer echoes.
//!
//! Bounds: at most [`MAX_HOPS`] entries of `X-Forwarded-For` are read,
//! from the right; an incoming id longer than [`MAX_REQUEST_ID`] bytes or
//! with other characters than `A-Z a-z 0-9 - _ . :` is replaced by one of
//! ours, so a client cannot put arbitrary text in the logs.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

use crate::error::SettingsError;
use crate::section::rule;

/// The header a request id travels in, both ways.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest incoming request id kept, in bytes.
pub const MAX_REQUEST_ID: usize = 64;

/// Most `X-Forwarded-For` entries read (from the right).
pub const MAX_HOPS: usize = 16;

/// The proxies whose forwarding headers are believed (`http.trusted_proxies`).
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    networks: Arc<[IpNet]>,
}

impl TrustedProxies {
    /// Parses `http.trusted_proxies`: addresses (`10.0.0.5`, `::1`) or
    /// networks (`10.0.0.0/8`, `fd00::/8`); an empty list trusts no one.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, SettingsError> {
        let mut networks = Vec::new();
        for entry in entries.iter().map(|e| e.as_ref().trim()) {
            if entry.is_empty() {
                continue;
            }
            let network = entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    rule(
                        "http.trusted_proxies",
                        format!(
                            "{entry:?} is neither an address nor a network \
                             (e.g. 10.0.0.5, 172.16.0.0/12, fd00::/8)"
                        ),
                    )
                })?;
            networks.push(network.trunc());
        }
        Ok(Self {
            networks: networks.into(),
        })
    }

    /// Whether `address` is one of the trusted proxies.
    pub fn trusts(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        self.networks.iter().any(|net| net.contains(&address))
    }

    /// Who sent a request that reached us from `peer` with `headers`.
    pub fn client(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Client {
        let peer = peer.map(|p| p.to_canonical());
        let trusted = peer.is_some_and(|p| self.trusts(p));
        let address = if trusted {
            self.forwarded(headers).or(peer)
        } else {
            peer
        };
        let request_id = trusted
            .then(|| RequestId::from_header(headers))
            .flatten()
            .unwrap_or_else(RequestId::new);
        Client {
            address,
            request_id,
        }
    }

    /// The client a trusted proxy names: the rightmost `X-Forwarded-For`
    /// entry that is not itself a trusted proxy (entries left of it could
    /// have been written by anyone), else `X-Real-IP`. An entry that is
    /// not an address stops the walk at the last address read.
    fn forwarded(&self, headers: &HeaderMap) -> Option<IpAddr> {
        let mut last = None;
        let hops = headers
            .get_all("x-forwarded-for")
            .filter_map(|value| value.to_str().ok())
            .collect::<Vec<_>>();
        if !hops.is_empty() {
            let entries = hops.iter().rev().flat_map(|value| value.rsplit(','));
            for entry in entries.take(MAX_HOPS) {
                let Some(address) = parse_address(entry) else {
                    return last;
                };
                if !self.trusts(address) {
                    return Some(address);
                }
                last = Some(address);
            }
            return last;
        }
        headers
            .get("x-real-ip")
            .and_then(|value| value.to_str().ok())
            .and_then(parse_address)
    }
}

/// An address as proxies write it: bare, or with a port (`1.2.3.4:5`,
/// `[::1]:5`).
fn parse_address(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<std::net::SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(|address| address.to_canonical())
}

/// Who a request is from, as far as we can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// The client's address: the peer's, or what a trusted proxy says;
    /// `None` only where there is no socket (in-process tests).
    pub address: Option<IpAddr>,
    pub request_id: RequestId,
}

/// A request's id: a trusted proxy's, or 32 hex digits of our own.
///
/// Held as the header value the answer echoes: made once per request, then
/// cloned (a reference count) into the request's extensions, its log lines
/// and its answer, never copied.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RequestId(HeaderValue);

impl RequestId {
    /// A fresh id: 128 random bits in hex, the form nginx's `$request_id` has.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let bits = rand::random::<u128>();
        let mut hex = [0u8; 32];
        for (i, digit) in hex.iter_mut().enumerate() {
            *digit = DIGITS[((bits >> (4 * (31 - i))) & 0xf) as usize];
        }
        Self(HeaderValue::from_bytes(&hex).unwrap_or(HeaderValue::from_static("invalid")))
    }

    /// The id in `X-Request-Id`, if it is one we may log and echo.
    pub fn from_header(headers: &HeaderMap) -> Option<Self> {
        let value = headers.get(REQUEST_ID)?;
        let bytes = value.as_bytes();
        let valid = !bytes.is_empty()
            && bytes.len() <= MAX_REQUEST_ID
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
        valid.then(|| Self(value.clone()))
    }

    pub fn as_str(&self) -> &str {
        // Checked ASCII when made.
        self.0.to_str().unwrap_or("invalid")
    }

    /// The id as a header value, for the answer.
    pub fn header_value(&self) -> HeaderValue {
        self.0.clone()
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarding_headers_count_only_from_a_trusted_peer() {
        let proxies = TrustedProxies::parse(&["10.0.0.0/8", "::1"]).unwrap();
        let sent = headers(&[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-request-id", "abc-123"),
        ]);
        let from_proxy = proxies.client(Some(ip("10.1.2.3")), &sent);
        assert_eq!(from_proxy.address, Some(ip("203.0.113.7")));
        assert_eq!(from_proxy.request_id.as_str(), "abc-123");
        let direct = proxies.client(Some(ip("198.51.100.1")), &sent);
        assert_eq!(direct.address, Some(ip("198.51.100.1")), "spoofed XFF");
        assert_ne!(direct.request_id.as_str(), "abc-123", "spoofed id");
        assert_eq!(direct.request_id.as_str().len(), 32);
        let nobody = TrustedProxies::default().client(Some(ip("10.1.2.3")), &sent);
        assert_eq!(nobody.address, Some(ip("10.1.2.3")));
        let v6 = proxies.client(Some(ip("::1")), &sent);
        assert_eq!(v6.address, Some(ip("203.0.113.7")));
        let mapped = proxies.client(Some(ip("::ffff:10.0.0.1")), &sent);
        assert_eq!(mapped.address, Some(ip("203.0.113.7")), "v4-mapped peer");
    }

    #[test]
    fn the_client_is_the_rightmost_untrusted_hop() {
        let proxies = TrustedProxies::parse(&["10.0.0.0/8"]).unwrap();
        let peer = Some(ip("10.0.0.1"));
        for (xff, client) in [
            // A client's own spoofed entry sits left of what the proxy adds.
            ("1.1.1.1, 203.0.113.7", "203.0.113.7"),
            ("203.0.113.7, 10.0.0.9", "203.0.113.7"),
            ("10.0.0.8, 10.0.0.9", "10.0.0.8"),
            ("garbage, 10.0.0.9", "10.0.0.9"),
            ("garbage", "10.0.0.1"),
            ("[2001:db8::1]:443", "2001:db8::1"),
            ("203.0.113.7:5000", "203.0.113.7"),
        ] {
            let got = proxies.client(peer, &headers(&[("x-forwarded-for", xff)]));
            assert_eq!(got.address, Some(ip(client)), "{xff}");
        }
        let two_lines = headers(&[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-for", "10.0.0.9"),
        ]);
        assert_eq!(
            proxies.client(peer, &two_lines).address,
            Some(ip("203.0.113.7"))
        );
        let real_ip = headers(&[("x-real-ip", "203.0.113.9")]);
        assert_eq!(
            proxies.client(peer, &real_ip).address,
            Some(ip("203.0.113.9"))
        );
    }

    #[test]
    fn a_long_forwarding_chain_is_read_only_so_far() {
        let proxies = TrustedProxies::parse(&["10.0.0.0/8"]).unwrap();
        let chain = std::iter::once("203.0.113.7".to_owned())
            .chain((0..MAX_HOPS).map(|i| format!("10.0.0.{i}")))
            .collect::<Vec<_>>()
            .join(",");
        let got = proxies.client(
            Some(ip("10.0.0.1")),
            &headers(&[("x-forwarded-for", &chain)]),
        );
        assert_eq!(got.address, Some(ip(&format!("10.0.0.{}", 0))));
    }

    #[test]
    fn only_short_plain_request_ids_are_kept() {
        for (id, kept) in [
            ("abc-123_x.y:z", true),
            (&"a".repeat(MAX_REQUEST_ID), true),
            (&"a".repeat(MAX_REQUEST_ID + 1), false),
            ("", false),
            ("has space", false),
            ("quote\"", false),
            ("{json}", false),
        ] {
            let got = RequestId::from_header(&headers(&[("x-request-id", id)]));
            assert_eq!(got.is_some(), kept, "{id:?}");
            if let Some(got) = got {
                assert_eq!(got.as_str(), id);
                assert_eq!(got.header_value(), id);
            }
        }
        assert_ne!(RequestId::new(), RequestId::new());
    }

    #[test]
    fn a_fresh_id_is_32_lowercase_hex_digits_and_its_header_the_same() {
        for _ in 0..100 {
            let id = RequestId::new();
            let text = id.as_str();
            assert_eq!(text.len(), 32, "{text}");
            assert!(
                text.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
                "{text}"
            );
            assert_eq!(id.header_value(), text);
            assert_eq!(id.to_string(), text);
        }
    }

    #[test]
    fn bad_entries_stop_the_start_naming_the_key() {
        let error = TrustedProxies::parse(&["10.0.0.0/8", "not-an-ip"])
            .unwrap_err()
            .to_string();
        assert!(error.contains("http.trusted_proxies"), "{error}");
        assert!(error.contains("not-an-ip"), "{error}");
        let host_bits = TrustedProxies::parse(&["10.1.2.3/8"]).unwrap();
        assert!(host_bits.trusts(ip("10.200.0.1")));
    }
}
