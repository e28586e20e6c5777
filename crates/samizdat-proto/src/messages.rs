//! JSON bodies of the HTTP API under `/v1`.

use serde::{Deserialize, Serialize};

use crate::{Bytes, Id};

/// `POST /v1/mailboxes` — create a mailbox owned by an Ed25519 public key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateMailbox {
    pub request_id: Id,
    pub mailbox_id: Id,
    /// The owner's 32-byte Ed25519 public key.
    pub owner_key: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Created {
    pub id: Id,
}

/// `POST /v1/mailboxes/{id}/messages` — drop a message (anyone who knows the address).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DropMessage {
    pub request_id: Id,
    pub body: Bytes,
}

/// Answer to a drop or a group append: where the relay stored it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Stored {
    pub seq: u64,
    /// Mailboxes whose Welcome the relay could not store (full or gone). The commit itself
    /// landed; the committer should deliver these Welcomes another way or later.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub undelivered_welcomes: Vec<Id>,
}

/// One message in a mailbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MailboxMessage {
    pub seq: u64,
    pub body: Bytes,
    /// Unix seconds when the relay stored it.
    pub stored_at: u64,
}

/// `GET /v1/mailboxes/{id}/messages?after=SEQ&limit=N` (owner-signed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MailboxMessages {
    pub messages: Vec<MailboxMessage>,
}

/// `POST /v1/mailboxes/{id}/ack` (owner-signed) — delete messages by sequence number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AckMessages {
    pub request_id: Id,
    pub seqs: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Acked {
    /// How many of the listed messages were still there and are now deleted.
    pub deleted: u64,
}

/// `POST /v1/mailboxes/{id}/keypackages` (owner-signed) — add KeyPackages to the pool,
/// and optionally replace the last-resort KeyPackage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UploadKeyPackages {
    pub request_id: Id,
    pub key_packages: Vec<Bytes>,
    #[serde(default)]
    pub last_resort: Option<Bytes>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeyPackageCount {
    pub available: u64,
    pub has_last_resort: bool,
}

/// `POST /v1/mailboxes/{id}/keypackages/claim` — take one KeyPackage, exactly once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimKeyPackage {
    pub request_id: Id,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClaimedKeyPackage {
    pub key_package: Bytes,
    /// True when the pool was empty and the last-resort KeyPackage was handed out.
    pub last_resort: bool,
}

/// `POST /v1/groups` — create a group log at `epoch` whose token hashes to `token_hash`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGroup {
    pub request_id: Id,
    pub group_id: Id,
    pub epoch: u64,
    /// SHA-256 of the epoch token (32 bytes).
    pub token_hash: Bytes,
}

/// Kind of a group log entry. The relay cannot see more than this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    Application,
    Commit,
}

impl EntryKind {
    pub fn as_i64(self) -> i64 {
        match self {
            EntryKind::Application => 0,
            EntryKind::Commit => 1,
        }
    }

    pub fn from_i64(v: i64) -> Option<Self> {
        match v {
            0 => Some(EntryKind::Application),
            1 => Some(EntryKind::Commit),
            _ => None,
        }
    }
}

/// A Welcome (or any message) to drop into a new member's mailbox when a commit wins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WelcomeDrop {
    pub mailbox_id: Id,
    pub body: Bytes,
    /// SHA-256 of the KeyPackage this Welcome is for. The relay drops it only if that
    /// KeyPackage was claimed from this mailbox in the last ten minutes, once per claim
    /// (security review 3, M2); otherwise it is reported undelivered, and the committer
    /// delivers it as an ordinary drop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_package_hash: Option<Bytes>,
}

/// `POST /v1/groups/{id}/entries` with the current epoch's token in `x-samizdat-token`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppendEntry {
    pub request_id: Id,
    pub kind: EntryKind,
    /// The epoch the sender is in. For a commit, the epoch it moves the group *from*.
    pub epoch: u64,
    pub body: Bytes,
    /// Commits only: SHA-256 of the next epoch's token.
    #[serde(default)]
    pub next_token_hash: Option<Bytes>,
    /// Commits only: messages stored in the same transaction, only if the commit wins.
    #[serde(default)]
    pub welcomes: Vec<WelcomeDrop>,
}

/// One entry of a group log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Entry {
    pub seq: u64,
    pub epoch: u64,
    pub kind: EntryKind,
    pub body: Bytes,
}

/// `GET /v1/groups/{id}/entries?epoch=E&after=SEQ&limit=N` with epoch E's token.
/// Returns entries of epoch E only, in log order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Entries {
    pub entries: Vec<Entry>,
    /// The group's current epoch. If it is above the requested epoch, the epoch's last
    /// entry is the commit that closed it.
    pub current_epoch: u64,
    /// When the requested epoch is closed: the token hash its closing commit gave the relay
    /// for the next epoch. Members check it against the token they derive from that commit,
    /// so a member who gives the relay a false hash (locking everyone else out) is named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token_hash: Option<Bytes>,
    /// The group's last stored seq (any epoch) when the read began. A reader that got every
    /// entry of its epoch after `after` (fewer than `limit`) has seen that epoch up to here.
    #[serde(default)]
    pub last_seq: u64,
}

/// `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Health {
    pub status: String,
    /// Only on the metrics listener: the public listener does not say what it runs
    /// (security review 3, M12).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

#[cfg(test)]
mod tests {
    //! Every body the relay parses from the network, fed arbitrary bytes and JSON-shaped
    //! noise: decoding may fail, never panic. `PROPTEST_CASES` raises the iteration count
    //! (the long mode in docs/THREAT-MODEL.md uses 1,000,000 in total).
    use super::*;
    use proptest::prelude::*;

    fn all(bytes: &[u8]) {
        let _ = serde_json::from_slice::<CreateMailbox>(bytes);
        let _ = serde_json::from_slice::<DropMessage>(bytes);
        let _ = serde_json::from_slice::<AckMessages>(bytes);
        let _ = serde_json::from_slice::<UploadKeyPackages>(bytes);
        let _ = serde_json::from_slice::<ClaimKeyPackage>(bytes);
        let _ = serde_json::from_slice::<CreateGroup>(bytes);
        let _ = serde_json::from_slice::<AppendEntry>(bytes);
        let _ = serde_json::from_slice::<crate::ClientFrame>(bytes);
        let _ = serde_json::from_slice::<crate::ErrorBody>(bytes);
        let _ = serde_json::from_slice::<Entries>(bytes);
        let _ = serde_json::from_slice::<MailboxMessages>(bytes);
    }

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<u64>().prop_map(serde_json::Value::from),
            "[A-Za-z0-9_-]{0,30}".prop_map(serde_json::Value::from),
            Just(serde_json::Value::from("AAAAAAAAAAAAAAAAAAAAAA")),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            let keys = prop_oneof![
                Just("request_id".to_string()),
                Just("mailbox_id".to_string()),
                Just("group_id".to_string()),
                Just("owner_key".to_string()),
                Just("body".to_string()),
                Just("kind".to_string()),
                Just("epoch".to_string()),
                Just("token_hash".to_string()),
                Just("next_token_hash".to_string()),
                Just("welcomes".to_string()),
                Just("seqs".to_string()),
                Just("key_packages".to_string()),
                Just("last_resort".to_string()),
                Just("type".to_string()),
                Just("token".to_string()),
                Just("after".to_string()),
                Just("signature".to_string()),
                "[a-z_]{1,12}".prop_map(String::from),
            ];
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                proptest::collection::btree_map(keys, inner, 0..6)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn bodies_never_panic_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            all(&bytes);
        }

        #[test]
        fn bodies_never_panic_on_json_noise(v in json_value()) {
            all(&serde_json::to_vec(&v).unwrap());
        }
    }

    #[test]
    fn append_entry_shape_is_stable() {
        let e = AppendEntry {
            request_id: Id::from_bytes([1; 16]),
            kind: EntryKind::Commit,
            epoch: 4,
            body: Bytes(vec![1, 2]),
            next_token_hash: Some(Bytes(vec![3])),
            welcomes: vec![WelcomeDrop {
                mailbox_id: Id::from_bytes([2; 16]),
                body: Bytes(vec![4]),
                key_package_hash: None,
            }],
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"request_id":"AQEBAQEBAQEBAQEBAQEBAQ","kind":"commit","epoch":4,"body":"AQI","next_token_hash":"Aw","welcomes":[{"mailbox_id":"AgICAgICAgICAgICAgICAg","body":"BA"}]}"#
        );
    }
}

/// `POST /v1/blobs` (201): a blob to upload into. `upload_token` is the write capability
/// (send it as `x-samizdat-upload-token`); `blob_id` alone lets anyone with it download the
/// finished blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BlobCreated {
    pub blob_id: Id,
    pub upload_token: Bytes,
    pub length: u64,
}

/// `GET` / `PATCH /v1/blobs/{id}/upload`: how far the upload is (bytes stored durably).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BlobOffset {
    pub offset: u64,
    pub length: u64,
}

/// `POST /v1/groups/{id}/calls?epoch=N` — TURN credentials for one call of this group's
/// members (issue 31). Authorised like a read of the log (the epoch's token in
/// `x-samizdat-token`) before the body is read.
/// `room` is a 32-byte value both sides of the call derive from the group's MLS exporter; the
/// relay keeps only its hash, sealed inside the credential, and relays only between the
/// allocations of one room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TurnRequest {
    /// 32 bytes.
    pub room: Bytes,
}

/// TURN credentials that carry no identity: `username` is `<expiry>:<sealed handle>`, the
/// handle opaque to everyone but this relay (a fresh one per request), `credential` the REST
/// password for it. The client builds the URLs from the relay's host and these ports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TurnCredentials {
    pub username: String,
    pub credential: String,
    /// Seconds from now until the credential can no longer open an allocation.
    pub ttl_secs: u64,
    /// TURN over UDP on this port of the relay's host (absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp_port: Option<u16>,
    /// TURN over TCP on this port of the relay's host; the relay's own port when TURN shares it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_port: Option<u16>,
}
