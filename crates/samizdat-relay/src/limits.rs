//! Who is asking, and how often: the client address (through trusted proxies only), rate
//! limits keyed by address bucket or by target mailbox (governor's GCRA), and the relay-wide
//! budget of request body bytes held in memory.
//!
//! Rate limits are per process by design: with N processes behind a balancer an address
//! gets at most N times the limit. Everything else the relay enforces lives in the store.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::str::FromStr;
use std::sync::Arc;

use axum::http::HeaderMap;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use samizdat_proto::Id;

/// The unit a per-address limit counts: an IPv4 address, or an IPv6 /64 (one customer's
/// network: a client can pick any address in it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddrBucket {
    V4([u8; 4]),
    V6Prefix64([u8; 8]),
}

impl AddrBucket {
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => AddrBucket::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => AddrBucket::V4(v4.octets()),
                None => {
                    let o = v6.octets();
                    let mut p = [0u8; 8];
                    p.copy_from_slice(&o[..8]);
                    AddrBucket::V6Prefix64(p)
                }
            },
        }
    }
}

/// An address range in CIDR notation (`10.0.0.0/8`, `::1/128`, or a bare address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR range"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {max}"))?,
            None => max,
        };
        Ok(Cidr { addr, prefix })
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        fn plain(ip: IpAddr) -> IpAddr {
            match ip {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
                v4 => v4,
            }
        }
        let p = u32::from(self.prefix);
        match (plain(self.addr), plain(ip)) {
            (IpAddr::V4(n), IpAddr::V4(x)) => {
                let m = if p == 0 { 0 } else { u32::MAX << (32 - p) };
                u32::from(n) & m == u32::from(x) & m
            }
            (IpAddr::V6(n), IpAddr::V6(x)) => {
                let m = if p == 0 { 0 } else { u128::MAX << (128 - p) };
                u128::from(n) & m == u128::from(x) & m
            }
            _ => false,
        }
    }
}

/// Turn the socket peer into the client's address: the peer itself, unless it is a
/// configured trusted proxy, in which case the right-most address in `X-Forwarded-For`
/// (or `Forwarded: for=`) that is not itself a trusted proxy. Headers from anyone else are
/// ignored, so a client cannot choose its own bucket.
pub fn client_addr(peer: SocketAddr, headers: &HeaderMap, trusted: &[Cidr]) -> IpAddr {
    let peer_ip = peer.ip();
    if trusted.is_empty() || !trusted.iter().any(|c| c.contains(peer_ip)) {
        return peer_ip;
    }
    let mut hops: Vec<IpAddr> = Vec::new();
    for v in headers.get_all("forwarded") {
        let Ok(v) = v.to_str() else { continue };
        for element in v.split(',') {
            for pair in element.split(';') {
                let Some((k, val)) = pair.trim().split_once('=') else {
                    continue;
                };
                if k.trim().eq_ignore_ascii_case("for")
                    && let Some(ip) = parse_forwarded_node(val)
                {
                    hops.push(ip);
                }
            }
        }
    }
    if hops.is_empty() {
        for v in headers.get_all("x-forwarded-for") {
            let Ok(v) = v.to_str() else { continue };
            hops.extend(v.split(',').filter_map(|h| h.trim().parse::<IpAddr>().ok()));
        }
    }
    hops.into_iter()
        .rev()
        .find(|ip| !trusted.iter().any(|c| c.contains(*ip)))
        .unwrap_or(peer_ip)
}

/// `for=` values: `192.0.2.1`, `"[2001:db8::1]:4711"`, `192.0.2.1:80`; obfuscated ones
/// (`_hidden`, `unknown`) give nothing.
fn parse_forwarded_node(v: &str) -> Option<IpAddr> {
    let v = v.trim().trim_matches('"');
    if let Some(rest) = v.strip_prefix('[') {
        return rest
            .split(']')
            .next()?
            .parse::<Ipv6Addr>()
            .ok()
            .map(IpAddr::V6);
    }
    if let Ok(ip) = v.parse::<IpAddr>() {
        return Some(ip);
    }
    v.rsplit_once(':').and_then(|(h, _)| h.parse().ok())
}

/// Request body bytes held in memory per client address: one address, even a valid
/// mailbox owner, may hold at most its share of the relay-wide budget, so it cannot starve
/// everyone else's requests (security review 3, M3).
pub struct BodyShares {
    held: std::sync::Mutex<std::collections::HashMap<AddrBucket, u64>>,
    max: u64,
}

/// Bytes one request holds of its address's share; dropping it gives them back.
pub struct Share {
    shares: Arc<BodyShares>,
    bucket: AddrBucket,
    n: u64,
}

impl BodyShares {
    pub fn new(max: u64) -> Arc<Self> {
        Arc::new(BodyShares {
            held: Default::default(),
            max: max.max(1),
        })
    }

    /// Take `n` more bytes for `bucket`, or `None` when that would pass its share.
    pub fn take(self: &Arc<Self>, bucket: AddrBucket, n: u64) -> Option<Share> {
        // A poisoned lock means a panic while counting: refuse rather than admit unbounded.
        let mut held = self.held.lock().ok()?;
        let h = held.entry(bucket).or_insert(0);
        if h.saturating_add(n) > self.max {
            if *h == 0 {
                held.remove(&bucket);
            }
            return None;
        }
        *h += n;
        Some(Share {
            shares: self.clone(),
            bucket,
            n,
        })
    }

    /// Bytes `bucket` holds now.
    pub fn held_by(&self, bucket: AddrBucket) -> u64 {
        self.held
            .lock()
            .map(|h| h.get(&bucket).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

impl Share {
    /// One share for both (same address).
    pub fn merge(&mut self, mut other: Share) {
        debug_assert!(self.bucket == other.bucket);
        self.n += std::mem::take(&mut other.n);
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        if let Ok(mut held) = self.shares.held.lock()
            && let Some(h) = held.get_mut(&self.bucket)
        {
            *h = h.saturating_sub(self.n);
            if *h == 0 {
                held.remove(&self.bucket);
            }
        }
    }
}

/// A per-key limit of `per_minute` requests (bursts up to the same number).
pub struct KeyedLimit<K: std::hash::Hash + Eq + Clone> {
    inner: Option<DefaultKeyedRateLimiter<K>>,
}

impl<K: std::hash::Hash + Eq + Clone> KeyedLimit<K> {
    /// `0` means no limit.
    pub fn per_minute(n: u32) -> Self {
        KeyedLimit {
            inner: NonZeroU32::new(n).map(|n| RateLimiter::keyed(Quota::per_minute(n))),
        }
    }

    pub fn allow(&self, key: &K) -> bool {
        self.inner.as_ref().is_none_or(|l| l.check_key(key).is_ok())
    }

    /// Forget keys whose allowance is full again (bounds memory; run by the sweeper).
    pub fn forget_idle(&self) {
        if let Some(l) = &self.inner {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

/// Every rate limit of the relay.
pub struct RateLimits {
    pub claims_per_addr: KeyedLimit<AddrBucket>,
    pub claims_per_mailbox: KeyedLimit<Id>,
    pub creations_per_addr: KeyedLimit<AddrBucket>,
    pub drops_per_addr: KeyedLimit<AddrBucket>,
    pub drops_per_mailbox: KeyedLimit<Id>,
}

impl RateLimits {
    pub fn new(l: &samizdat_proto::Limits) -> Arc<Self> {
        Arc::new(RateLimits {
            claims_per_addr: KeyedLimit::per_minute(l.claims_per_ip_per_minute),
            claims_per_mailbox: KeyedLimit::per_minute(l.claims_per_mailbox_per_minute),
            creations_per_addr: KeyedLimit::per_minute(l.creations_per_ip_per_minute),
            drops_per_addr: KeyedLimit::per_minute(l.drops_per_ip_per_minute),
            drops_per_mailbox: KeyedLimit::per_minute(l.drops_per_mailbox_per_minute),
        })
    }

    pub fn forget_idle(&self) {
        self.claims_per_addr.forget_idle();
        self.claims_per_mailbox.forget_idle();
        self.creations_per_addr.forget_idle();
        self.drops_per_addr.forget_idle();
        self.drops_per_mailbox.forget_idle();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|s| s.parse().expect("cidr")).collect()
    }

    #[test]
    fn cidr_contains() {
        let c: Cidr = "10.0.0.0/8".parse().expect("cidr");
        assert!(c.contains("10.1.2.3".parse().expect("ip")));
        assert!(!c.contains("11.0.0.1".parse().expect("ip")));
        assert!(c.contains("::ffff:10.0.0.1".parse().expect("ip")));
        let one: Cidr = "127.0.0.1".parse().expect("cidr");
        assert!(one.contains("127.0.0.1".parse().expect("ip")));
        assert!(!one.contains("127.0.0.2".parse().expect("ip")));
        let v6: Cidr = "2001:db8::/32".parse().expect("cidr");
        assert!(v6.contains("2001:db8:1::5".parse().expect("ip")));
        assert!(!v6.contains("2001:db9::5".parse().expect("ip")));
        assert!(!v6.contains("10.0.0.1".parse().expect("ip")));
        let all: Cidr = "0.0.0.0/0".parse().expect("cidr");
        assert!(all.contains("8.8.8.8".parse().expect("ip")));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nonsense".parse::<Cidr>().is_err());
    }

    #[test]
    fn forwarded_headers_only_from_trusted_proxies() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            "6.6.6.6, 203.0.113.9".parse().expect("hv"),
        );
        let proxy: SocketAddr = "127.0.0.1:5000".parse().expect("addr");
        let stranger: SocketAddr = "198.51.100.7:5000".parse().expect("addr");
        let trusted = cidrs(&["127.0.0.1/32"]);
        // The right-most untrusted hop: the left part is whatever the client claimed.
        assert_eq!(
            client_addr(proxy, &h, &trusted),
            "203.0.113.9".parse::<IpAddr>().expect("ip")
        );
        // Without trust the header is ignored.
        assert_eq!(client_addr(proxy, &h, &[]), proxy.ip());
        assert_eq!(client_addr(stranger, &h, &trusted), stranger.ip());
        let mut f = HeaderMap::new();
        f.insert(
            "forwarded",
            "for=192.0.2.60;proto=http, for=\"[2001:db8:cafe::17]:4711\""
                .parse()
                .expect("hv"),
        );
        assert_eq!(
            client_addr(proxy, &f, &trusted),
            "2001:db8:cafe::17".parse::<IpAddr>().expect("ip")
        );
    }

    #[test]
    fn ipv6_buckets_by_64() {
        let a = AddrBucket::of("2001:db8:1:2::1".parse().expect("ip"));
        let b = AddrBucket::of("2001:db8:1:2:ffff::9".parse().expect("ip"));
        let c = AddrBucket::of("2001:db8:1:3::1".parse().expect("ip"));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn body_shares_per_address() {
        let shares = BodyShares::new(100);
        let (a, b) = (
            AddrBucket::of([10, 0, 0, 1].into()),
            AddrBucket::of([10, 0, 0, 2].into()),
        );
        let mut first = shares.take(a, 60).expect("within the share");
        assert!(shares.take(a, 41).is_none(), "past the share");
        first.merge(shares.take(a, 40).expect("up to the share"));
        assert_eq!(shares.held_by(a), 100);
        let other = shares.take(b, 100).expect("another address has its own");
        drop(first);
        assert_eq!(shares.held_by(a), 0);
        assert!(shares.take(a, 100).is_some());
        drop(other);
        assert_eq!(shares.held_by(b), 0);
    }

    #[test]
    fn keyed_limit_counts_per_key() {
        let l = KeyedLimit::per_minute(2);
        let (a, b) = (
            AddrBucket::of([10, 0, 0, 1].into()),
            AddrBucket::of([10, 0, 0, 2].into()),
        );
        assert!(l.allow(&a) && l.allow(&a));
        assert!(!l.allow(&a));
        assert!(
            l.allow(&b),
            "one address exhausting its allowance leaves others alone"
        );
        assert!(KeyedLimit::<AddrBucket>::per_minute(0).allow(&a));
    }
}
