//! WebSocket frames on `GET /v1/ws`: JSON text frames tagged by `type`.

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
    Unsubscribe {
        id: Id,
    },
    Ping {
        #[serde(default)]
        nonce: u64,
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
    /// Every entry of `epoch` has been pushed and the group moved on.
    EpochClosed {
        group_id: Id,
        epoch: u64,
    },
    Pong {
        nonce: u64,
    },
    /// A frame was refused. `id` names the subscription concerned, when there is one.
    Error {
        code: ErrorCode,
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<Id>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
        fn client_frame_parse_never_panics(s in ".{0,200}") {
            let _ = serde_json::from_str::<ClientFrame>(&s);
        }

        #[test]
        fn client_frame_parse_json_like(s in r#"\{"type":"(subscribe_group|subscribe_mailbox|ping|unsubscribe)"[ -~]{0,120}\}"#) {
            let _ = serde_json::from_str::<ClientFrame>(&s);
        }
    }
}
