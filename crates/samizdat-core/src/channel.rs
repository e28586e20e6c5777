//! Channels on the wire: the link, the sealed post bodies and the chain check every reader
//! makes (`samizdat_proto::channel` has the record layout).
//!
//! - **Link** `samizdat://channel/v1/<base64url(JSON {c, g, r})>#<base64url(epoch | key)>`:
//!   the channel id, the genesis hash (so no relay or mirror can pass off another channel),
//!   the relays to read from in order (home first, then mirrors) — and, in the fragment, the
//!   channel key. A link is shown and scanned, never sent to a relay.
//! - **Sealed body** `epoch (u32) | nonce (24) | XChaCha20-Poly1305(JSON post)`, associated data
//!   the channel id and the epoch; the relay sees only its length.
//! - **Chain**: each record must be the next one, name the hash of the one before, and carry
//!   the signature of an admin of the chain before it. A relay or mirror that alters a record,
//!   drops one or forks the chain is caught by the first reader that checks.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use samizdat_proto::channel::{ChannelRecord, RecordKind};
use samizdat_proto::{Bytes, Id};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::relay_client::MailboxKey;
use crate::{Error, Result, sha256};

/// The prefix of a channel link.
pub const LINK_PREFIX: &str = "samizdat://channel/v1/";
/// Most relays a link lists (home and mirrors).
pub const MAX_LINK_RELAYS: usize = 8;
/// Longest post text, in bytes.
pub const MAX_POST_TEXT: usize = 32 * 1024;

/// A channel key, by the epoch it was made in (the genesis's key is epoch 0).
#[derive(Clone)]
pub struct ChannelKey {
    pub epoch: u32,
    pub key: Zeroizing<[u8; 32]>,
}

impl ChannelKey {
    pub fn generate(epoch: u32) -> Result<ChannelKey> {
        let mut key = Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::fill(&mut key[..])
            .map_err(|_| Error::Crypto("cannot generate a channel key".into()))?;
        Ok(ChannelKey { epoch, key })
    }
}

/// What a channel link holds.
#[derive(Clone)]
pub struct ChannelLink {
    pub channel: Id,
    pub genesis: [u8; 32],
    /// Where to read, in order: the home relay first, then mirrors.
    pub relays: Vec<String>,
    pub key: ChannelKey,
}

#[derive(Serialize, Deserialize)]
struct LinkPublic {
    c: Id,
    g: Bytes,
    r: Vec<String>,
}

impl ChannelLink {
    pub fn to_link(&self) -> String {
        let public = LinkPublic {
            c: self.channel,
            g: Bytes(self.genesis.to_vec()),
            r: self.relays.clone(),
        };
        let public = serde_json::to_vec(&public).unwrap_or_default();
        let mut secret = Zeroizing::new(self.key.epoch.to_be_bytes().to_vec());
        secret.extend_from_slice(&self.key.key[..]);
        format!(
            "{LINK_PREFIX}{}#{}",
            Bytes::encode(&public),
            Bytes::encode(&secret)
        )
    }

    pub fn parse(link: &str) -> Result<ChannelLink> {
        let bad = |why: &str| Error::InvalidInvite(format!("not a channel link: {why}"));
        let rest = link
            .trim()
            .strip_prefix(LINK_PREFIX)
            .ok_or_else(|| bad("it does not start with samizdat://channel/v1/"))?;
        let (public, secret) = rest
            .split_once('#')
            .ok_or_else(|| bad("the key (after #) is missing"))?;
        let public = Bytes::decode(public).map_err(|_| bad("it is damaged"))?;
        let public: LinkPublic =
            serde_json::from_slice(&public).map_err(|_| bad("it is damaged"))?;
        let genesis =
            <[u8; 32]>::try_from(public.g.0.as_slice()).map_err(|_| bad("it is damaged"))?;
        let secret = Zeroizing::new(Bytes::decode(secret).map_err(|_| bad("the key is damaged"))?);
        if secret.len() != 36 {
            return Err(bad("the key is damaged"));
        }
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&secret[4..]);
        let epoch = u32::from_be_bytes([secret[0], secret[1], secret[2], secret[3]]);
        if public.r.is_empty() || public.r.len() > MAX_LINK_RELAYS {
            return Err(bad("it must list 1 to 8 relays"));
        }
        let mut relays = Vec::new();
        for r in public.r {
            relays.push(
                crate::relay_client::normalize_spec(&r)
                    .map_err(|_| bad("a relay address is damaged"))?,
            );
        }
        Ok(ChannelLink {
            channel: public.c,
            genesis,
            relays,
            key: ChannelKey { epoch, key },
        })
    }
}

/// What a sealed record says. The relay sees none of it.
// A post carries its file inline: a record is opened, read and dropped one at a time, so
// the size of the largest variant costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Sealed {
    /// The genesis: the channel's name and description.
    Info { name: String, about: String },
    /// A post, with a photo or file if it has one.
    Text {
        text: String,
        /// When the admin posted it (Unix seconds, the admin's clock).
        at: u64,
        /// The file: its key, digest and thumbnail, and the home relay's copy (`relay`,
        /// `blob`), a blob an admin vouched for (`x-samizdat-channel`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file: Option<crate::payload::Attachment>,
        /// The same encrypted bytes on the channel's mirrors, tried in order after the home
        /// relay's copy.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        copies: Vec<FileCopy>,
    },
    /// The text of post `seq` is now `text`.
    Edit { seq: u64, text: String },
    /// Post `seq` is deleted.
    Delete { seq: u64 },
    /// Post `seq` is the pinned post (`None`: none is).
    Pin { seq: Option<u64> },
    /// From here on posts are sealed under this key (it is itself sealed under the one
    /// before, so whoever could read goes on reading; a link made after carries only it).
    Rekey { epoch: u32, key: Bytes },
}

/// Where a copy of a post's file is: a relay of the channel and the blob there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileCopy {
    pub relay: String,
    pub blob: Id,
}

/// Most copies of one file a post names.
pub const MAX_FILE_COPIES: usize = 8;

fn aad(channel: &Id, epoch: u32) -> Vec<u8> {
    let mut a = b"samizdat-channel-post\n".to_vec();
    a.extend_from_slice(channel.as_bytes());
    a.extend_from_slice(&epoch.to_be_bytes());
    a
}

/// Seal `what` under `key` for `channel`.
pub fn seal(key: &ChannelKey, channel: &Id, what: &Sealed) -> Result<Vec<u8>> {
    let plain = Zeroizing::new(
        serde_json::to_vec(what).map_err(|e| Error::Protocol(format!("sealing a post: {e}")))?,
    );
    let mut nonce = [0u8; 24];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| Error::Crypto("no randomness".into()))?;
    let cipher = XChaCha20Poly1305::new(key.key.as_slice().into());
    let aad = aad(channel, key.epoch);
    let sealed = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: &plain,
                aad: &aad,
            },
        )
        .map_err(|_| Error::Crypto("cannot seal a post".into()))?;
    let mut out = key.epoch.to_be_bytes().to_vec();
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// The key epoch a sealed body names.
pub fn sealed_epoch(body: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(body.get(..4)?.try_into().ok()?))
}

/// Open a sealed body with the key of its epoch.
pub fn open(key: &ChannelKey, channel: &Id, body: &[u8]) -> Result<Sealed> {
    let bad =
        || Error::Integrity("a channel post could not be opened with the channel's key".into());
    if body.len() < 4 + 24 || sealed_epoch(body) != Some(key.epoch) {
        return Err(bad());
    }
    let cipher = XChaCha20Poly1305::new(key.key.as_slice().into());
    let aad = aad(channel, key.epoch);
    let plain = Zeroizing::new(
        cipher
            .decrypt(
                XNonce::from_slice(&body[4..28]),
                Payload {
                    msg: &body[28..],
                    aad: &aad,
                },
            )
            .map_err(|_| bad())?,
    );
    serde_json::from_slice(&plain).map_err(|_| bad())
}

/// The hash a record is known by (the next record's `prev`; a link's genesis hash).
pub fn record_hash(bytes: &[u8]) -> [u8; 32] {
    sha256(bytes)
}

/// Make and sign a record.
pub fn sign_record(
    key: &MailboxKey,
    channel: Id,
    seq: u64,
    prev: [u8; 32],
    kind: RecordKind,
    admins: Vec<[u8; 32]>,
    body: Vec<u8>,
) -> Result<ChannelRecord> {
    let signer: [u8; 32] = key
        .public()
        .try_into()
        .map_err(|_| Error::Crypto("an admin key is not Ed25519".into()))?;
    let mut record = ChannelRecord {
        channel,
        seq,
        prev,
        kind,
        admins,
        body,
        signer,
        signature: [0; 64],
    };
    record
        .check_shape()
        .map_err(|e| Error::Usage(format!("cannot make this record: {e}")))?;
    let sig = key.sign(&record.signing_payload());
    record.signature = sig
        .try_into()
        .map_err(|_| Error::Crypto("an Ed25519 signature is 64 bytes".into()))?;
    Ok(record)
}

/// How a relay's copy of a chain went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChainFault {
    /// A record is not signed by an admin of the channel (altered, or forged).
    Forged,
    /// A record names another parent than the record before it (a fork, or one dropped).
    Broken,
    /// The genesis is not the one the link names.
    WrongChannel,
    /// The bytes are not a record.
    Malformed,
}

/// Where a reader's copy of the chain stands, and who may extend it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub seq: u64,
    pub hash: [u8; 32],
    pub admins: Vec<[u8; 32]>,
}

impl Chain {
    /// Start from the genesis, which must hash to what the link says.
    pub fn start(
        channel: &Id,
        genesis: &[u8; 32],
        bytes: &[u8],
    ) -> Result<(Chain, ChannelRecord), ChainFault> {
        let record = ChannelRecord::decode(bytes).map_err(|_| ChainFault::Malformed)?;
        if record_hash(bytes) != *genesis
            || record.channel != *channel
            || record.kind != RecordKind::Genesis
        {
            return Err(ChainFault::WrongChannel);
        }
        check_signature(&record, &record.admins)?;
        Ok((
            Chain {
                seq: 0,
                hash: *genesis,
                admins: record.admins.clone(),
            },
            record,
        ))
    }

    /// Take the next record, or say what is wrong with it.
    pub fn accept(&mut self, channel: &Id, bytes: &[u8]) -> Result<ChannelRecord, ChainFault> {
        let record = ChannelRecord::decode(bytes).map_err(|_| ChainFault::Malformed)?;
        if record.channel != *channel {
            return Err(ChainFault::Malformed);
        }
        if record.seq != self.seq + 1 || record.prev != self.hash {
            return Err(ChainFault::Broken);
        }
        check_signature(&record, &self.admins)?;
        self.seq = record.seq;
        self.hash = record_hash(bytes);
        if record.kind == RecordKind::Roster {
            self.admins = record.admins.clone();
        }
        Ok(record)
    }
}

fn check_signature(record: &ChannelRecord, admins: &[[u8; 32]]) -> Result<(), ChainFault> {
    use aws_lc_rs::signature::{ED25519, UnparsedPublicKey};
    if !admins.contains(&record.signer) {
        return Err(ChainFault::Forged);
    }
    UnparsedPublicKey::new(&ED25519, record.signer)
        .verify(&record.signing_payload(), &record.signature)
        .map_err(|_| ChainFault::Forged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin() -> MailboxKey {
        MailboxKey::generate().unwrap().0
    }

    #[test]
    fn a_link_reads_back_and_keeps_its_key_in_the_fragment() {
        let key = ChannelKey::generate(3).unwrap();
        let link = ChannelLink {
            channel: Id::from_bytes([5; 16]),
            genesis: [6; 32],
            relays: vec!["http://127.0.0.1:1".into(), "http://127.0.0.2:2".into()],
            key: key.clone(),
        };
        let text = link.to_link();
        let (before, after) = text.split_once('#').unwrap();
        assert!(!before.contains(&Bytes::encode(&key.key[..])));
        assert!(after.len() > 40);
        let back = ChannelLink::parse(&text).unwrap();
        assert_eq!(back.channel, link.channel);
        assert_eq!(back.genesis, link.genesis);
        assert_eq!(back.relays, link.relays);
        assert_eq!(*back.key.key, *key.key);
        assert_eq!(back.key.epoch, 3);
        assert!(ChannelLink::parse(before).is_err());
        assert!(ChannelLink::parse("samizdat://channel/v1/%%#x").is_err());
    }

    #[test]
    fn a_sealed_post_opens_only_with_its_key_and_channel() {
        let key = ChannelKey::generate(0).unwrap();
        let ch = Id::from_bytes([1; 16]);
        let post = Sealed::Text {
            text: "hello readers".into(),
            at: 5,
            file: None,
            copies: Vec::new(),
        };
        let sealed = seal(&key, &ch, &post).unwrap();
        assert!(!sealed.windows(5).any(|w| w == b"hello"));
        assert_eq!(open(&key, &ch, &sealed).unwrap(), post);
        assert!(open(&ChannelKey::generate(0).unwrap(), &ch, &sealed).is_err());
        assert!(open(&key, &Id::from_bytes([2; 16]), &sealed).is_err());
        let mut bent = sealed.clone();
        *bent.last_mut().unwrap() ^= 1;
        assert!(open(&key, &ch, &bent).is_err());
    }

    #[test]
    fn the_chain_takes_only_an_admins_next_record() {
        let (a, stranger) = (admin(), admin());
        let ch = Id::from_bytes([9; 16]);
        let pk: [u8; 32] = a.public().try_into().unwrap();
        let g = sign_record(&a, ch, 0, [0; 32], RecordKind::Genesis, vec![pk], vec![1]).unwrap();
        let gb = g.encode();
        let (mut chain, _) = Chain::start(&ch, &record_hash(&gb), &gb).unwrap();
        assert_eq!(
            Chain::start(&ch, &[0; 32], &gb).unwrap_err(),
            ChainFault::WrongChannel
        );
        let p1 = sign_record(&a, ch, 1, chain.hash, RecordKind::Post, vec![], vec![2]).unwrap();
        // Someone else's signature, a skipped record, a wrong parent, a bent byte: refused.
        let forged = sign_record(
            &stranger,
            ch,
            1,
            chain.hash,
            RecordKind::Post,
            vec![],
            vec![2],
        )
        .unwrap();
        assert_eq!(
            chain.clone().accept(&ch, &forged.encode()).unwrap_err(),
            ChainFault::Forged
        );
        let skip = sign_record(&a, ch, 2, chain.hash, RecordKind::Post, vec![], vec![2]).unwrap();
        assert_eq!(
            chain.clone().accept(&ch, &skip.encode()).unwrap_err(),
            ChainFault::Broken
        );
        let fork = sign_record(&a, ch, 1, [7; 32], RecordKind::Post, vec![], vec![2]).unwrap();
        assert_eq!(
            chain.clone().accept(&ch, &fork.encode()).unwrap_err(),
            ChainFault::Broken
        );
        let mut bent = p1.encode();
        let n = bent.len() - 70;
        bent[n] ^= 1;
        assert_eq!(
            chain.clone().accept(&ch, &bent).unwrap_err(),
            ChainFault::Forged
        );
        chain.accept(&ch, &p1.encode()).unwrap();
        assert_eq!(chain.seq, 1);
    }
}
