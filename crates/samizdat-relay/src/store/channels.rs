//! The rule every store applies to a channel record, and the types it works on. The HTTP
//! layer has already decoded the record and checked its signature against the admin set of
//! the chain it names as its parent; the store makes sure that parent is still the head
//! (compare-and-set), so a record can only ever extend the chain it was checked against.

use samizdat_proto::{ErrorCode, Id, channel::MAX_CHANNEL_RECORDS};

use super::{Result, StoreError};

/// Where a channel's chain stands on this relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelState {
    pub seq: u64,
    pub hash: [u8; 32],
    pub admins: Vec<[u8; 32]>,
}

/// A checked record, ready to store.
#[derive(Debug, Clone)]
pub struct NewRecord {
    pub channel: Id,
    pub seq: u64,
    pub prev: [u8; 32],
    /// SHA-256 of `bytes`.
    pub hash: [u8; 32],
    /// The admin set from this record on, when it declares one (genesis, roster).
    pub admins: Option<Vec<[u8; 32]>>,
    pub bytes: Vec<u8>,
}

/// What storing a record does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// A genesis: the channel is new.
    Create,
    /// The next record of the chain.
    Extend,
    /// This very record is already stored (a retry, or a second copy sent to a mirror).
    Repeat,
}

/// Decide, from the head (`None`: no such channel) and the hash already stored at the
/// record's sequence number (if any).
pub(crate) fn step(
    head: Option<(u64, [u8; 32])>,
    stored_at_seq: Option<[u8; 32]>,
    r: &NewRecord,
) -> Result<Step> {
    if let Some(h) = stored_at_seq {
        return if h == r.hash {
            Ok(Step::Repeat)
        } else if r.seq == 0 {
            Err(StoreError::rejected(
                ErrorCode::AlreadyExists,
                "a different channel already has this id on this relay",
            ))
        } else {
            Err(conflict())
        };
    }
    match head {
        None if r.seq == 0 => Ok(Step::Create),
        None => Err(StoreError::rejected(
            ErrorCode::NotFound,
            "no such channel on this relay (store its genesis first)",
        )),
        Some(_) if r.seq >= MAX_CHANNEL_RECORDS => Err(StoreError::rejected(
            ErrorCode::StorageFull,
            "this channel holds as many records as a relay keeps",
        )),
        Some((seq, hash)) if r.seq == seq + 1 && r.prev == hash => Ok(Step::Extend),
        Some(_) => Err(conflict()),
    }
}

fn conflict() -> StoreError {
    StoreError::rejected(
        ErrorCode::ChainConflict,
        "this record does not follow the channel's last record; read the head and chain onto it",
    )
}

/// The admin keys as one column (32 bytes each).
pub(crate) fn join_admins(admins: &[[u8; 32]]) -> Vec<u8> {
    samizdat_proto::channel::join_admins(admins)
}

pub(crate) fn split_admins(bytes: &[u8]) -> Result<Vec<[u8; 32]>> {
    samizdat_proto::channel::split_admins(bytes)
        .ok_or_else(|| StoreError::Backend("corrupt channel admin set".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: u64, prev: u8, hash: u8) -> NewRecord {
        NewRecord {
            channel: Id::from_bytes([1; 16]),
            seq,
            prev: [prev; 32],
            hash: [hash; 32],
            admins: None,
            bytes: vec![],
        }
    }

    #[test]
    fn a_record_extends_only_the_head_it_names() {
        assert_eq!(step(None, None, &rec(0, 0, 1)).unwrap(), Step::Create);
        assert!(step(None, None, &rec(1, 1, 2)).is_err());
        assert_eq!(
            step(Some((0, [1; 32])), None, &rec(1, 1, 2)).unwrap(),
            Step::Extend
        );
        // Names another parent, or skips one: refused.
        assert!(step(Some((0, [1; 32])), None, &rec(1, 9, 2)).is_err());
        assert!(step(Some((0, [1; 32])), None, &rec(2, 1, 2)).is_err());
        // The same record again is a repeat; another at a taken place is a fork, refused.
        assert_eq!(
            step(Some((1, [2; 32])), Some([2; 32]), &rec(1, 1, 2)).unwrap(),
            Step::Repeat
        );
        assert!(step(Some((1, [2; 32])), Some([2; 32]), &rec(1, 1, 3)).is_err());
        assert!(step(Some((0, [1; 32])), Some([1; 32]), &rec(0, 0, 5)).is_err());
        assert_eq!(
            split_admins(&join_admins(&[[3; 32], [4; 32]])).unwrap(),
            vec![[3; 32], [4; 32]]
        );
    }
}
