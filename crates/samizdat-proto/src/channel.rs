//! Channels: a log one set of admins writes and anyone holding the link reads.
//!
//! A channel is a chain of signed records. Record 0 (the genesis) names the first admins; every
//! later record names the hash of the one before it and is signed by an admin of the chain as
//! it stood before it. A `roster` record replaces the admin set. Bodies are sealed by the
//! admins under the channel key (which relays never see); the relay checks only the chain and
//! the signatures, so it refuses what a non-admin sends, and any relay can hold a copy
//! (a mirror) that readers check the same way.
//!
//! Layout (integers big-endian; this is what is signed, the signature follows it):
//!
//! ```text
//! channel_id (16) | seq (u64) | prev (32) | kind (u8) | admin_count (u8) | admins (32 each)
//! | body_len (u32) | body | signer (32)                         ... then signature (64)
//! ```
//!
//! A record's hash (what the next record's `prev` holds, and what a link's genesis hash is)
//! is SHA-256 over all of it, signature included. The signature is Ed25519 over
//! [`CHANNEL_SIGNING_CONTEXT`] followed by the signed part. This crate only encodes; the relay
//! and the client verify.

use crate::Id;

/// Prefixed to a record's signed bytes before signing, so a channel signature can never be
/// taken for any other signature a key makes.
pub const CHANNEL_SIGNING_CONTEXT: &[u8] = b"samizdat-channel-v1\n";
/// Records per segment: segment `n` holds records `n * SEGMENT_RECORDS ..` up to the next.
pub const SEGMENT_RECORDS: u64 = 64;
/// Most admins a channel may name.
pub const MAX_CHANNEL_ADMINS: usize = 32;
/// Longest sealed body of one record.
pub const MAX_CHANNEL_BODY: usize = 64 * 1024;
/// Most records one channel holds on a relay.
pub const MAX_CHANNEL_RECORDS: u64 = 1_000_000;

/// What a record does, as the relay sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordKind {
    /// Record 0: the first admins and the sealed channel description.
    Genesis,
    /// A sealed post (text, file, edit, delete, pin, key change: the relay cannot tell).
    Post,
    /// The admin set from here on is `admins`.
    Roster,
}

impl RecordKind {
    pub fn as_u8(self) -> u8 {
        match self {
            RecordKind::Genesis => 0,
            RecordKind::Post => 1,
            RecordKind::Roster => 2,
        }
    }

    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(RecordKind::Genesis),
            1 => Some(RecordKind::Post),
            2 => Some(RecordKind::Roster),
            _ => None,
        }
    }
}

/// One record of a channel's chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelRecord {
    pub channel: Id,
    pub seq: u64,
    /// Hash of record `seq - 1` (zeros for the genesis).
    pub prev: [u8; 32],
    pub kind: RecordKind,
    /// The admin set a genesis or roster record declares (empty for a post).
    pub admins: Vec<[u8; 32]>,
    pub body: Vec<u8>,
    /// The admin key that signed it.
    pub signer: [u8; 32],
    pub signature: [u8; 64],
}

/// Why bytes are not a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("the record ends before its {0}")]
    Truncated(&'static str),
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
    #[error("a record names at most {MAX_CHANNEL_ADMINS} admins")]
    TooManyAdmins,
    #[error("a record's body is at most {MAX_CHANNEL_BODY} bytes")]
    BodyTooLarge,
    #[error("{0} bytes follow the record")]
    Trailing(usize),
    #[error("a genesis or roster record names its admins; a post names none")]
    AdminsMisplaced,
    #[error("the genesis is record 0, and only record 0 is a genesis")]
    GenesisMisplaced,
}

impl ChannelRecord {
    /// The bytes the signature covers (without [`CHANNEL_SIGNING_CONTEXT`]).
    pub fn signed_part(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + 8 + 32 + 2 + 32 * self.admins.len() + 4 + 32);
        out.extend_from_slice(self.channel.as_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.prev);
        out.push(self.kind.as_u8());
        out.push(self.admins.len() as u8);
        for a in &self.admins {
            out.extend_from_slice(a);
        }
        out.extend_from_slice(&(self.body.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.body);
        out.extend_from_slice(&self.signer);
        out
    }

    /// What the signer signs: the context, then the signed part.
    pub fn signing_payload(&self) -> Vec<u8> {
        let mut out = CHANNEL_SIGNING_CONTEXT.to_vec();
        out.extend_from_slice(&self.signed_part());
        out
    }

    /// The whole record, signature included.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.signed_part();
        out.extend_from_slice(&self.signature);
        out
    }

    /// Read one record; every byte must belong to it.
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let mut r = Reader(bytes);
        let channel = Id::from_bytes(r.array::<16>("channel id")?);
        let seq = u64::from_be_bytes(r.array::<8>("sequence number")?);
        let prev = r.array::<32>("previous hash")?;
        let kind_byte = r.array::<1>("kind")?[0];
        let kind = RecordKind::from_u8(kind_byte).ok_or(RecordError::UnknownKind(kind_byte))?;
        let count = r.array::<1>("admin count")?[0] as usize;
        if count > MAX_CHANNEL_ADMINS {
            return Err(RecordError::TooManyAdmins);
        }
        let mut admins = Vec::with_capacity(count);
        for _ in 0..count {
            admins.push(r.array::<32>("admins")?);
        }
        let len = u32::from_be_bytes(r.array::<4>("body length")?) as usize;
        if len > MAX_CHANNEL_BODY {
            return Err(RecordError::BodyTooLarge);
        }
        let body = r.take(len, "body")?.to_vec();
        let signer = r.array::<32>("signer")?;
        let signature = r.array::<64>("signature")?;
        if !r.0.is_empty() {
            return Err(RecordError::Trailing(r.0.len()));
        }
        let record = ChannelRecord {
            channel,
            seq,
            prev,
            kind,
            admins,
            body,
            signer,
            signature,
        };
        record.check_shape()?;
        Ok(record)
    }

    /// The rules of shape every reader and relay applies before any signature check.
    pub fn check_shape(&self) -> Result<(), RecordError> {
        let declares = matches!(self.kind, RecordKind::Genesis | RecordKind::Roster);
        if declares == self.admins.is_empty() {
            return Err(RecordError::AdminsMisplaced);
        }
        if (self.kind == RecordKind::Genesis) != (self.seq == 0) {
            return Err(RecordError::GenesisMisplaced);
        }
        if self.admins.len() > MAX_CHANNEL_ADMINS {
            return Err(RecordError::TooManyAdmins);
        }
        if self.body.len() > MAX_CHANNEL_BODY {
            return Err(RecordError::BodyTooLarge);
        }
        Ok(())
    }
}

/// An admin set as one byte string (32 bytes each), as relays and clients store it.
pub fn join_admins(admins: &[[u8; 32]]) -> Vec<u8> {
    admins.concat()
}

/// The admin set [`join_admins`] made; `None` if the length is not a multiple of 32.
pub fn split_admins(bytes: &[u8]) -> Option<Vec<[u8; 32]>> {
    if !bytes.len().is_multiple_of(32) {
        return None;
    }
    Some(
        bytes
            .chunks_exact(32)
            .map(|c| {
                let mut a = [0u8; 32];
                a.copy_from_slice(c);
                a
            })
            .collect(),
    )
}

/// The segment that holds record `seq`.
pub fn segment_of(seq: u64) -> u64 {
    seq / SEGMENT_RECORDS
}

/// A segment's bytes: each record as `len (u32) | record`, in order.
pub fn encode_segment<'a>(records: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        out.extend_from_slice(&(r.len() as u32).to_be_bytes());
        out.extend_from_slice(r);
    }
    out
}

/// Split a segment into its records' bytes (each still to be decoded and checked).
pub fn decode_segment(mut bytes: &[u8]) -> Result<Vec<&[u8]>, RecordError> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        if bytes.len() < 4 {
            return Err(RecordError::Truncated("record length"));
        }
        let len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        let rest = &bytes[4..];
        if rest.len() < len {
            return Err(RecordError::Truncated("record"));
        }
        out.push(&rest[..len]);
        bytes = &rest[len..];
    }
    Ok(out)
}

/// `GET /v1/channels/{id}`: where the chain stands on this relay.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ChannelHead {
    /// The last record's sequence number (0: only the genesis).
    pub seq: u64,
    /// The last record's hash (base64url).
    pub hash: crate::Bytes,
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], RecordError> {
        if self.0.len() < n {
            return Err(RecordError::Truncated(what));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], RecordError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(seq: u64) -> ChannelRecord {
        ChannelRecord {
            channel: Id::from_bytes([7; 16]),
            seq,
            prev: [1; 32],
            kind: RecordKind::Post,
            admins: vec![],
            body: b"sealed".to_vec(),
            signer: [2; 32],
            signature: [3; 64],
        }
    }

    #[test]
    fn a_record_reads_back_as_written_and_refuses_every_truncation() {
        let mut r = post(5);
        let bytes = r.encode();
        assert_eq!(ChannelRecord::decode(&bytes).unwrap(), r);
        for cut in 0..bytes.len() {
            assert!(
                ChannelRecord::decode(&bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            ChannelRecord::decode(&longer),
            Err(RecordError::Trailing(1))
        );
        r.kind = RecordKind::Roster;
        assert_eq!(
            ChannelRecord::decode(&r.encode()),
            Err(RecordError::AdminsMisplaced)
        );
        r.admins = vec![[4; 32]];
        assert_eq!(ChannelRecord::decode(&r.encode()).unwrap(), r);
        r.kind = RecordKind::Genesis;
        assert_eq!(
            ChannelRecord::decode(&r.encode()),
            Err(RecordError::GenesisMisplaced)
        );
    }

    #[test]
    fn a_segment_splits_into_its_records() {
        let a = post(1).encode();
        let b = post(2).encode();
        let seg = encode_segment([a.as_slice(), b.as_slice()]);
        assert_eq!(
            decode_segment(&seg).unwrap(),
            vec![a.as_slice(), b.as_slice()]
        );
        assert!(decode_segment(&seg[..seg.len() - 1]).is_err());
        assert_eq!(segment_of(63), 0);
        assert_eq!(segment_of(64), 1);
    }
}
