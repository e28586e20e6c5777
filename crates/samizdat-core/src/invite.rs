//! Invite links: `samizdat://invite/v2/<base64url(binary)>` (v1, base64url of JSON, is still
//! read).
//!
//! The v2 body, all integers big-endian:
//! `flags(1: bit 0 reusable) ‖ exp(u32, Unix seconds) ‖ fp(32) ‖ id(16) ‖ mailbox(16) ‖
//! n(1) ‖ n × address`, the addresses of the inviter's relay service (one, or the processes
//! of one service), each `kind(1: 0 http, 1 https, 2 https with pin) ‖ host_len(1) ‖ host ‖
//! port(u16) ‖ [pin(32)]`. One http address on an IPv4 host comes to 95 bytes, a pinned
//! https one to 127: 149 and 191 characters with the prefix, against ~300 for v1's JSON — a
//! QR code two sizes smaller.
//!
//! A link carries the inviter's relay address, mailbox address and key fingerprint, an invite
//! id, an expiry and whether it may be used more than once. It never carries a name. The
//! fingerprint lets the invitee refuse a KeyPackage that a relay substituted.

use samizdat_proto::{Bytes, Id};
use serde::{Deserialize, Serialize};

use crate::payload::{MAX_MAILBOXES, MailboxAddr};
use crate::{Error, Result};

pub const PREFIX: &str = "samizdat://invite/v2/";
/// Links made before v2 (JSON), still accepted.
pub const PREFIX_V1: &str = "samizdat://invite/v1/";
/// Links longer than this are refused before decoding.
const MAX_LINK: usize = 2048;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Invite {
    pub relay: String,
    pub mailbox: Id,
    /// SHA-256 of the inviter's MLS signature key.
    pub fp: Bytes,
    pub id: Id,
    /// Unix seconds after which the inviter refuses the invite.
    pub exp: u64,
    pub reusable: bool,
    /// The inviter's other mailboxes, on independent relays (tried when the first cannot be
    /// reached).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more: Vec<MailboxAddr>,
}

/// Flag bit 1: more mailboxes follow the first one's addresses.
const FLAG_MORE: u8 = 2;

fn damaged() -> Error {
    Error::InvalidInvite("the link is damaged (bad contents); copy it again".into())
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(damaged());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
}

/// `http(s)://host:port` and the path after it (`/secret`, or empty).
fn split_path(addr: &str) -> (&str, &str) {
    let start = addr.find("://").map_or(0, |i| i + 3);
    match addr[start..].find('/') {
        Some(i) => {
            let (a, p) = addr.split_at(start + i);
            (a, p.trim_end_matches('/'))
        }
        None => (addr, ""),
    }
}

/// `n(1) ‖ n × address` for one relay service (its addresses joined by commas).
fn encode_addresses(out: &mut Vec<u8>, relay: &str) {
    let addrs: Vec<&str> = relay.split(',').map(str::trim).take(255).collect();
    out.push(addrs.len() as u8);
    for a in addrs {
        let (addr, pin) = crate::pin::split(a).unwrap_or((a, None));
        // A relay served under a secret path (`--path-prefix`): kinds 3 to 5 carry it.
        let (addr, path) = split_path(addr);
        let https = addr.starts_with("https://");
        let (host, port) = crate::net::host_port(addr)
            .unwrap_or_else(|_| (String::new(), if https { 443 } else { 80 }));
        let kind = match (https, pin.is_some()) {
            (false, _) => 0,
            (true, false) => 1,
            (true, true) => 2,
        };
        out.push(if path.is_empty() { kind } else { kind + 3 });
        let host = host.as_bytes();
        out.push(host.len().min(255) as u8);
        out.extend_from_slice(&host[..host.len().min(255)]);
        out.extend_from_slice(&port.to_be_bytes());
        if !path.is_empty() {
            let path = path.as_bytes();
            out.push(path.len().min(255) as u8);
            out.extend_from_slice(&path[..path.len().min(255)]);
        }
        if let Some(pin) = pin {
            out.extend_from_slice(&pin);
        }
    }
}

fn decode_addresses(r: &mut Reader<'_>) -> Result<String> {
    let n = r.take(1)?[0];
    if n == 0 {
        return Err(damaged());
    }
    let mut addrs = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let kind = r.take(1)?[0];
        let host_len = r.take(1)?[0] as usize;
        let host = std::str::from_utf8(r.take(host_len)?).map_err(|_| damaged())?;
        if host.is_empty()
            || host
                .chars()
                .any(|c| c.is_control() || "/?#@ ,[]".contains(c))
        {
            return Err(damaged());
        }
        let port = u16::from_be_bytes(r.take(2)?.try_into().map_err(|_| damaged())?);
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        let path = if (3..=5).contains(&kind) {
            let n = r.take(1)?[0] as usize;
            let path = std::str::from_utf8(r.take(n)?).map_err(|_| damaged())?;
            if !path.starts_with('/')
                || !path[1..]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_/".contains(&b))
            {
                return Err(damaged());
            }
            path.to_string()
        } else {
            String::new()
        };
        addrs.push(match kind % 3 {
            _ if kind > 5 => return Err(damaged()),
            0 => format!("http://{host}:{port}{path}"),
            1 => format!("https://{host}:{port}{path}"),
            _ => format!(
                "https://{host}:{port}{path}#pin={}",
                Bytes::encode(r.take(32)?)
            ),
        });
    }
    Ok(addrs.join(","))
}

impl Invite {
    pub fn to_link(&self) -> String {
        format!("{PREFIX}{}", Bytes::encode(&self.encode()))
    }

    /// Every mailbox of the inviter, in order (the one above first).
    pub fn mailboxes(&self) -> Vec<MailboxAddr> {
        let mut all = vec![MailboxAddr {
            relay: self.relay.clone(),
            mailbox: self.mailbox,
        }];
        all.extend(self.more.iter().cloned());
        all
    }

    /// The v2 binary body.
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        let more = !self.more.is_empty();
        out.push(u8::from(self.reusable) | if more { FLAG_MORE } else { 0 });
        out.extend_from_slice(&(self.exp.min(u64::from(u32::MAX)) as u32).to_be_bytes());
        out.extend_from_slice(&self.fingerprint());
        out.extend_from_slice(self.id.as_bytes());
        out.extend_from_slice(self.mailbox.as_bytes());
        encode_addresses(&mut out, &self.relay);
        if more {
            let n = self.more.len().min(MAX_MAILBOXES);
            out.push(n as u8);
            for m in &self.more[..n] {
                out.extend_from_slice(m.mailbox.as_bytes());
                encode_addresses(&mut out, &m.relay);
            }
        }
        out
    }

    /// Read a v2 body.
    fn decode(b: &[u8]) -> Result<Invite> {
        let mut r = Reader(b);
        let flags = r.take(1)?[0];
        let exp = u32::from_be_bytes(r.take(4)?.try_into().map_err(|_| damaged())?);
        let fp = r.take(32)?.to_vec();
        let id = Id::from_slice(r.take(16)?).map_err(|_| damaged())?;
        let mailbox = Id::from_slice(r.take(16)?).map_err(|_| damaged())?;
        if flags & !(1 | FLAG_MORE) != 0 {
            return Err(damaged());
        }
        let relay = decode_addresses(&mut r)?;
        let mut more = Vec::new();
        if flags & FLAG_MORE != 0 {
            let n = r.take(1)?[0] as usize;
            if n == 0 || n > MAX_MAILBOXES {
                return Err(damaged());
            }
            for _ in 0..n {
                let mailbox = Id::from_slice(r.take(16)?).map_err(|_| damaged())?;
                let relay = decode_addresses(&mut r)?;
                more.push(MailboxAddr { relay, mailbox });
            }
        }
        if !r.0.is_empty() {
            return Err(damaged());
        }
        Ok(Invite {
            relay,
            mailbox,
            fp: Bytes(fp),
            id,
            exp: u64::from(exp),
            reusable: flags & 1 == 1,
            more,
        })
    }

    /// Parse and check a link (not its expiry: see [`Invite::check_not_expired`]).
    pub fn parse(link: &str) -> Result<Invite> {
        let link = link.trim();
        if link.len() > MAX_LINK {
            return Err(Error::InvalidInvite("the link is too long".into()));
        }
        let (rest, v1) = match (link.strip_prefix(PREFIX), link.strip_prefix(PREFIX_V1)) {
            (Some(r), _) => (r, false),
            (None, Some(r)) => (r, true),
            _ => {
                return Err(Error::InvalidInvite(format!(
                    "an invite link starts with {PREFIX}"
                )));
            }
        };
        let body = Bytes::decode(rest).map_err(|_| {
            Error::InvalidInvite("the link is damaged (not base64url); copy it again".into())
        })?;
        let invite: Invite = if v1 {
            serde_json::from_slice(&body).map_err(|_| {
                Error::InvalidInvite("the link is damaged (bad contents); copy it again".into())
            })?
        } else {
            Invite::decode(&body)?
        };
        if invite.fp.len() != 32 {
            return Err(Error::InvalidInvite(
                "the link's key fingerprint has the wrong length".into(),
            ));
        }
        for m in invite.mailboxes() {
            if !(m.relay.starts_with("http://") || m.relay.starts_with("https://"))
                || m.relay.len() > 512
                || crate::relay_client::normalize_spec(&m.relay).is_err()
            {
                return Err(Error::InvalidInvite(
                    "the link's relay address is not an http(s) URL".into(),
                ));
            }
        }
        Ok(invite)
    }

    pub fn check_not_expired(&self, now: u64) -> Result<()> {
        if now > self.exp {
            return Err(Error::InvalidInvite(
                "this invite has expired; ask for a new one".into(),
            ));
        }
        Ok(())
    }

    pub fn fingerprint(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        if self.fp.len() == 32 {
            out.copy_from_slice(&self.fp.0);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A relay served under a secret path keeps it through an invite (M12).
    #[test]
    fn relays_with_a_secret_path_round_trip() {
        for relay in [
            "http://127.0.0.1:7700/k7Hs9dQ2xPzw".to_string(),
            format!(
                "https://relay.example.org:443/s3cret-path#pin={}",
                Bytes::encode(&[4u8; 32])
            ),
        ] {
            let invite = Invite {
                relay: relay.clone(),
                ..sample()
            };
            assert_eq!(Invite::parse(&invite.to_link()).unwrap().relay, relay);
        }
    }

    fn sample() -> Invite {
        Invite {
            relay: "http://127.0.0.1:7700".into(),
            mailbox: Id::from_bytes([3; 16]),
            fp: Bytes(vec![9; 32]),
            id: Id::from_bytes([4; 16]),
            exp: 1_900_000_000,
            reusable: false,
            more: Vec::new(),
        }
    }

    #[test]
    fn roundtrip() {
        let i = sample();
        assert_eq!(Invite::parse(&i.to_link()).unwrap(), i);
        let pinned = Invite {
            relay: format!(
                "https://relay.example.org:443#pin={}",
                Bytes::encode(&[5u8; 32])
            ),
            reusable: true,
            ..sample()
        };
        assert_eq!(Invite::parse(&pinned.to_link()).unwrap(), pinned);
        let v6 = Invite {
            relay: "http://[::1]:7700".into(),
            ..sample()
        };
        assert_eq!(Invite::parse(&v6.to_link()).unwrap(), v6);
        // One relay service reached at several addresses (its processes).
        let several = Invite {
            relay: "http://127.0.0.1:7701,http://127.0.0.1:7702".into(),
            ..sample()
        };
        assert_eq!(Invite::parse(&several.to_link()).unwrap(), several);
        // Independent relays: a mailbox on each.
        let independent = Invite {
            more: vec![
                MailboxAddr {
                    relay: "http://10.0.0.2:7700".into(),
                    mailbox: Id::from_bytes([6; 16]),
                },
                MailboxAddr {
                    relay: format!("https://b.example:443#pin={}", Bytes::encode(&[7u8; 32])),
                    mailbox: Id::from_bytes([8; 16]),
                },
            ],
            ..sample()
        };
        let link = independent.to_link();
        assert_eq!(Invite::parse(&link).unwrap(), independent);
        assert_eq!(Invite::parse(&link).unwrap().mailboxes().len(), 3);
        assert!(link.len() < 300, "{} characters", link.len());
    }

    #[test]
    fn v2_links_are_short_and_v1_links_still_work() {
        let i = sample();
        let v1 = format!(
            "{PREFIX_V1}{}",
            Bytes::encode(&serde_json::to_vec(&i).unwrap())
        );
        assert_eq!(Invite::parse(&v1).unwrap(), i);
        let v2 = i.to_link();
        assert!(v2.len() <= 150, "{} characters", v2.len());
        assert!(
            v2.len() * 2 < v1.len() + 60,
            "v2 {} vs v1 {}",
            v2.len(),
            v1.len()
        );
        let pinned = Invite {
            relay: format!("https://203.0.113.7:443#pin={}", Bytes::encode(&[5u8; 32])),
            ..sample()
        };
        assert!(pinned.to_link().len() <= 195, "{}", pinned.to_link().len());
    }

    #[test]
    fn rejects_damage() {
        let link = sample().to_link();
        assert!(Invite::parse(&link[..link.len() - 5]).is_err());
        assert!(Invite::parse("https://example.org").is_err());
        assert!(Invite::parse(&format!("{PREFIX}!!!")).is_err());
        let v1 = |i: &Invite| {
            format!(
                "{PREFIX_V1}{}",
                Bytes::encode(&serde_json::to_vec(i).unwrap())
            )
        };
        let mut bad = sample();
        bad.fp = Bytes(vec![1; 5]);
        assert!(Invite::parse(&v1(&bad)).is_err());
        let mut bad = sample();
        bad.relay = "file:///etc/passwd".into();
        assert!(Invite::parse(&v1(&bad)).is_err());
        // v2: truncated bodies, unknown relay kinds, hosts with URL syntax.
        let body = sample().encode();
        for n in 0..body.len() {
            assert!(Invite::decode(&body[..n]).is_err(), "truncated at {n}");
        }
        let mut odd = body.clone();
        odd[70] = 9;
        assert!(Invite::decode(&odd).is_err());
        let mut long = body.clone();
        long.push(0);
        assert!(Invite::decode(&long).is_err(), "trailing bytes");
    }

    #[test]
    fn expiry() {
        let i = sample();
        assert!(i.check_not_expired(i.exp).is_ok());
        assert!(i.check_not_expired(i.exp + 1).is_err());
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in ".{0,300}") {
            let _ = Invite::parse(&s);
        }

        #[test]
        fn parse_never_panics_on_prefixed(s in "[A-Za-z0-9_-]{0,400}") {
            let _ = Invite::parse(&format!("{PREFIX}{s}"));
            let _ = Invite::parse(&format!("{PREFIX_V1}{s}"));
        }

        #[test]
        fn decode_never_panics(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Invite::decode(&b);
        }
    }
}
