//! WebSocket frames on `GET /v1/ws`: JSON text frames tagged by `type`, and one binary
//! frame, [`BinaryAppend`] (an application entry appended over the socket, answered by an
//! `appended` or `append_failed` text frame naming its request id).

use serde::{Deserialize, Serialize};

use crate::{Bytes, EntryKind, ErrorCode, Id};

/// Frames a client sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientFrame {
    /// Follow a mailbox: signature over [`crate::ws_signing_payload`] with this connection's
    /// challenge. Stored messages after `after` are pushed, then new ones as they arrive.
    SubscribeMailbox {
        mailbox_id: Id,
        #[serde(default)]
        after: u64,
        signature: Bytes,
    },
    /// Follow one epoch of a group log: entries of `epoch` after `after` are pushed in order.
    /// When the commit closing the epoch has been pushed, the relay sends `epoch_closed`;
    /// the client subscribes again with the next epoch's token.
    SubscribeGroup {
        group_id: Id,
        epoch: u64,
        token: Bytes,
        #[serde(default)]
        after: u64,
    },
    /// Follow a channel: its records after `after` are pushed in order (`channel_record`),
    /// then new ones as they are stored. Nothing is asked of the reader: a channel is public
    /// to whoever knows its id, and sealed for whoever lacks its key.
    SubscribeChannel {
        channel_id: Id,
        #[serde(default)]
        after: u64,
    },
    Unsubscribe {
        id: Id,
    },
    Ping {
        #[serde(default)]
        nonce: u64,
    },
    /// Connection options (relays whose `hello` lists the feature). `binary_entries`: push
    /// group entries as [`BinaryEntry`] binary frames instead of `entry` text frames.
    Options {
        #[serde(default)]
        binary_entries: bool,
    },
}

/// Frames the relay sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// First frame of every connection.
    Hello {
        version: u32,
        challenge: Id,
        /// What this relay can do beyond version 1: `"binary_entries"` (it accepts
        /// [`ClientFrame::Options`] and pushes [`BinaryEntry`] frames). Absent from older
        /// relays.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        features: Vec<String>,
    },
    /// A subscription is active.
    Subscribed {
        id: Id,
    },
    MailboxMessage {
        mailbox_id: Id,
        seq: u64,
        body: Bytes,
        stored_at: u64,
    },
    Entry {
        group_id: Id,
        seq: u64,
        epoch: u64,
        kind: EntryKind,
        body: Bytes,
    },
    /// One record of a followed channel (its bytes as [`crate::ChannelRecord::encode`] makes
    /// them), in order.
    ChannelRecord {
        channel_id: Id,
        seq: u64,
        record: Bytes,
    },
    /// Every entry of `epoch` has been pushed and the group moved on.
    EpochClosed {
        group_id: Id,
        epoch: u64,
    },
    Pong {
        nonce: u64,
    },
    /// A [`BinaryAppend`] was stored (or had been: a retry of a stored request id gets the
    /// first answer).
    Appended {
        request_id: Id,
        seq: u64,
    },
    /// A [`BinaryAppend`] was refused; nothing was stored. The same codes and meaning as the
    /// HTTP append's error body (`stale_epoch` carries the group's current epoch).
    AppendFailed {
        request_id: Id,
        code: ErrorCode,
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        current_epoch: Option<u64>,
    },
    /// A frame was refused. `id` names the subscription concerned, when there is one.
    Error {
        code: ErrorCode,
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<Id>,
    },
}

/// An application entry appended over the WebSocket: a binary frame, so the entry travels as
/// it is (no JSON, no base64). Several may be in flight on one socket; each is answered by
/// request id. Commits (which may carry Welcomes) use the HTTP append.
///
/// Layout (integers big-endian):
///
/// ```text
/// 0x01 | request_id (16) | group_id (16) | epoch (u64) | token_len (u8) | token | body
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinaryAppend {
    pub request_id: Id,
    pub group_id: Id,
    pub epoch: u64,
    pub token: Vec<u8>,
    pub body: Vec<u8>,
}

/// Why a binary frame could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BinaryFrameError {
    #[error("unknown binary frame type {0}")]
    UnknownType(u8),
    #[error("the binary frame ends before its {0}")]
    Truncated(&'static str),
    #[error("the epoch token must be 1 to 64 bytes")]
    TokenLength,
    #[error("unknown entry kind {0}")]
    UnknownKind(u8),
}

fn take<'a>(
    rest: &'a [u8],
    n: usize,
    what: &'static str,
) -> Result<(&'a [u8], &'a [u8]), BinaryFrameError> {
    (rest.len() >= n)
        .then(|| rest.split_at(n))
        .ok_or(BinaryFrameError::Truncated(what))
}

impl BinaryAppend {
    pub const TYPE: u8 = 0x01;
    /// Bytes before the token.
    const FIXED: usize = 1 + 16 + 16 + 8 + 1;

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::FIXED + self.token.len() + self.body.len());
        out.push(Self::TYPE);
        out.extend_from_slice(self.request_id.as_bytes());
        out.extend_from_slice(self.group_id.as_bytes());
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.push(self.token.len() as u8);
        out.extend_from_slice(&self.token);
        out.extend_from_slice(&self.body);
        out
    }

    pub fn decode(b: &[u8]) -> Result<BinaryAppend, BinaryFrameError> {
        let (&ty, rest) = b.split_first().ok_or(BinaryFrameError::Truncated("type"))?;
        if ty != Self::TYPE {
            return Err(BinaryFrameError::UnknownType(ty));
        }
        let (request_id, rest) = take(rest, 16, "request id")?;
        let (group_id, rest) = take(rest, 16, "group id")?;
        let (epoch, rest) = take(rest, 8, "epoch")?;
        let (len, rest) = take(rest, 1, "token length")?;
        let len = len[0] as usize;
        if !(1..=64).contains(&len) {
            return Err(BinaryFrameError::TokenLength);
        }
        let (token, body) = take(rest, len, "token")?;
        let id = |s: &[u8]| Id::from_bytes(s.try_into().unwrap_or([0; 16]));
        Ok(BinaryAppend {
            request_id: id(request_id),
            group_id: id(group_id),
            epoch: u64::from_be_bytes(epoch.try_into().unwrap_or([0; 8])),
            token: token.to_vec(),
            body: body.to_vec(),
        })
    }
}

/// A group entry pushed as a binary frame, to a connection that asked for them
/// ([`ClientFrame::Options`]): the entry travels as it is (no JSON, no base64), encoded once by
/// the relay for every subscriber.
///
/// Layout (integers big-endian):
///
/// ```text
/// 0x02 | group_id (16) | seq (u64) | epoch (u64) | kind (u8: 0 application, 1 commit) | body
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinaryEntry {
    pub group_id: Id,
    pub seq: u64,
    pub epoch: u64,
    pub kind: EntryKind,
    pub body: Vec<u8>,
}

impl BinaryEntry {
    pub const TYPE: u8 = 0x02;
    const FIXED: usize = 1 + 16 + 8 + 8 + 1;

    /// The frame for an entry, from its parts (the relay encodes straight from what it stored).
    pub fn encode_parts(
        group_id: &Id,
        seq: u64,
        epoch: u64,
        kind: EntryKind,
        body: &[u8],
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::FIXED + body.len());
        out.push(Self::TYPE);
        out.extend_from_slice(group_id.as_bytes());
        out.extend_from_slice(&seq.to_be_bytes());
        out.extend_from_slice(&epoch.to_be_bytes());
        out.push(match kind {
            EntryKind::Application => 0,
            EntryKind::Commit => 1,
        });
        out.extend_from_slice(body);
        out
    }

    pub fn encode(&self) -> Vec<u8> {
        Self::encode_parts(&self.group_id, self.seq, self.epoch, self.kind, &self.body)
    }

    /// The group of an entry frame, read from its header without copying the entry (what a
    /// client that only needs to know which log moved reads).
    pub fn group_of(b: &[u8]) -> Option<Id> {
        Self::decode_header(b).ok().map(|(group, _)| group)
    }

    fn decode_header(b: &[u8]) -> Result<(Id, &[u8]), BinaryFrameError> {
        let (&ty, rest) = b.split_first().ok_or(BinaryFrameError::Truncated("type"))?;
        if ty != Self::TYPE {
            return Err(BinaryFrameError::UnknownType(ty));
        }
        let (group_id, rest) = take(rest, 16, "group id")?;
        Ok((Id::from_bytes(group_id.try_into().unwrap_or([0; 16])), rest))
    }

    pub fn decode(b: &[u8]) -> Result<BinaryEntry, BinaryFrameError> {
        let (group_id, rest) = Self::decode_header(b)?;
        let (seq, rest) = take(rest, 8, "seq")?;
        let (epoch, rest) = take(rest, 8, "epoch")?;
        let (kind, body) = take(rest, 1, "kind")?;
        let kind = match kind[0] {
            0 => EntryKind::Application,
            1 => EntryKind::Commit,
            k => return Err(BinaryFrameError::UnknownKind(k)),
        };
        let u64_of = |s: &[u8]| u64::from_be_bytes(s.try_into().unwrap_or([0; 8]));
        Ok(BinaryEntry {
            group_id,
            seq: u64_of(seq),
            epoch: u64_of(epoch),
            kind,
            body: body.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn binary_entry_round_trips_and_refuses_bad_frames() {
        let e = BinaryEntry {
            group_id: Id::from_bytes([2; 16]),
            seq: 9,
            epoch: 4,
            kind: EntryKind::Commit,
            body: b"ciphertext".to_vec(),
        };
        let bytes = e.encode();
        assert_eq!(bytes.len(), 1 + 16 + 8 + 8 + 1 + 10);
        assert_eq!(BinaryEntry::decode(&bytes).unwrap(), e);
        assert_eq!(BinaryEntry::group_of(&bytes), Some(e.group_id));
        assert_eq!(BinaryEntry::group_of(&bytes[..10]), None);
        assert_eq!(
            BinaryEntry::decode(&bytes[..20]),
            Err(BinaryFrameError::Truncated("seq"))
        );
        let mut bad = bytes.clone();
        bad[33] = 7;
        assert_eq!(
            BinaryEntry::decode(&bad),
            Err(BinaryFrameError::UnknownKind(7))
        );
        assert_eq!(
            BinaryEntry::decode(&[BinaryAppend::TYPE, 0, 0]),
            Err(BinaryFrameError::UnknownType(BinaryAppend::TYPE))
        );
        // An empty body is an entry too.
        let empty = BinaryEntry {
            body: Vec::new(),
            ..e
        };
        assert_eq!(BinaryEntry::decode(&empty.encode()).unwrap(), empty);
    }

    #[test]
    fn binary_append_round_trips_and_refuses_bad_frames() {
        let a = BinaryAppend {
            request_id: Id::from_bytes([1; 16]),
            group_id: Id::from_bytes([2; 16]),
            epoch: 7,
            token: vec![3; 32],
            body: b"ciphertext".to_vec(),
        };
        let bytes = a.encode();
        assert_eq!(bytes.len(), 1 + 16 + 16 + 8 + 1 + 32 + 10);
        assert_eq!(BinaryAppend::decode(&bytes).unwrap(), a);
        assert_eq!(
            BinaryAppend::decode(&bytes[..40]),
            Err(BinaryFrameError::Truncated("epoch"))
        );
        assert_eq!(
            BinaryAppend::decode(&[9, 1, 2]),
            Err(BinaryFrameError::UnknownType(9))
        );
        let mut no_token = bytes.clone();
        no_token[41] = 0;
        assert_eq!(
            BinaryAppend::decode(&no_token),
            Err(BinaryFrameError::TokenLength)
        );
        // An empty body is a valid frame (the relay decides what it accepts).
        let empty = BinaryAppend {
            body: Vec::new(),
            ..a
        };
        assert_eq!(BinaryAppend::decode(&empty.encode()).unwrap(), empty);
    }

    #[test]
    fn frames_have_documented_shape() {
        let f = ClientFrame::SubscribeGroup {
            group_id: Id::from_bytes([1; 16]),
            epoch: 3,
            token: Bytes(vec![9; 4]),
            after: 10,
        };
        assert_eq!(
            serde_json::to_string(&f).unwrap(),
            r#"{"type":"subscribe_group","group_id":"AQEBAQEBAQEBAQEBAQEBAQ","epoch":3,"token":"CQkJCQ","after":10}"#
        );
        let s = ServerFrame::EpochClosed {
            group_id: Id::from_bytes([1; 16]),
            epoch: 3,
        };
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"type":"epoch_closed","group_id":"AQEBAQEBAQEBAQEBAQEBAQ","epoch":3}"#
        );
    }

    proptest! {
        #[test]
        fn binary_frame_decode_never_panics(b in proptest::collection::vec(any::<u8>(), 0..120)) {
            let _ = BinaryAppend::decode(&b);
            if let Ok(e) = BinaryEntry::decode(&b) {
                prop_assert_eq!(e.encode(), b);
            }
        }

        #[test]
        fn client_frame_parse_never_panics(s in ".{0,200}") {
            let _ = serde_json::from_str::<ClientFrame>(&s);
        }

        #[test]
        fn client_frame_parse_json_like(s in r#"\{"type":"(subscribe_group|subscribe_mailbox|ping|unsubscribe)"[ -~]{0,120}\}"#) {
            let _ = serde_json::from_str::<ClientFrame>(&s);
        }
    }
}
