//! Invite links: `samizdat://invite/v1/<base64url(JSON)>`.
//!
//! A link carries the inviter's relay address, mailbox address and key fingerprint, an invite
//! id, an expiry and whether it may be used more than once. It never carries a name. The
//! fingerprint lets the invitee refuse a KeyPackage that a relay substituted.

use samizdat_proto::{Bytes, Id};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

pub const PREFIX: &str = "samizdat://invite/v1/";
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
}

impl Invite {
    pub fn to_link(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        format!("{PREFIX}{}", Bytes::encode(&json))
    }

    /// Parse and check a link (not its expiry: see [`Invite::check_not_expired`]).
    pub fn parse(link: &str) -> Result<Invite> {
        let link = link.trim();
        if link.len() > MAX_LINK {
            return Err(Error::InvalidInvite("the link is too long".into()));
        }
        let rest = link
            .strip_prefix(PREFIX)
            .ok_or_else(|| Error::InvalidInvite(format!("an invite link starts with {PREFIX}")))?;
        let json = Bytes::decode(rest).map_err(|_| {
            Error::InvalidInvite("the link is damaged (not base64url); copy it again".into())
        })?;
        let invite: Invite = serde_json::from_slice(&json).map_err(|_| {
            Error::InvalidInvite("the link is damaged (bad contents); copy it again".into())
        })?;
        if invite.fp.len() != 32 {
            return Err(Error::InvalidInvite(
                "the link's key fingerprint has the wrong length".into(),
            ));
        }
        if !(invite.relay.starts_with("http://") || invite.relay.starts_with("https://"))
            || invite.relay.len() > 512
        {
            return Err(Error::InvalidInvite(
                "the link's relay address is not an http(s) URL".into(),
            ));
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

    fn sample() -> Invite {
        Invite {
            relay: "http://127.0.0.1:7700".into(),
            mailbox: Id::from_bytes([3; 16]),
            fp: Bytes(vec![9; 32]),
            id: Id::from_bytes([4; 16]),
            exp: 1_900_000_000,
            reusable: false,
        }
    }

    #[test]
    fn roundtrip() {
        let i = sample();
        assert_eq!(Invite::parse(&i.to_link()).unwrap(), i);
    }

    #[test]
    fn rejects_damage() {
        let link = sample().to_link();
        assert!(Invite::parse(&link[..link.len() - 5]).is_err());
        assert!(Invite::parse("https://example.org").is_err());
        assert!(Invite::parse(&format!("{PREFIX}!!!")).is_err());
        let mut bad = sample();
        bad.fp = Bytes(vec![1; 5]);
        assert!(Invite::parse(&bad.to_link()).is_err());
        let mut bad = sample();
        bad.relay = "file:///etc/passwd".into();
        assert!(Invite::parse(&bad.to_link()).is_err());
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
        }
    }
}
