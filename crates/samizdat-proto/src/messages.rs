//! JSON bodies of the HTTP API under `/v1`.

use serde::{Deserialize, Serialize};

use crate::{Bytes, Id};

/// `POST /v1/mailboxes` — create a mailbox owned by an Ed25519 public key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateMailbox {
    pub request_id: Id,
    pub mailbox_id: Id,
    /// The owner's 32-byte Ed25519 public key.
    pub owner_key: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Created {
    pub id: Id,
}

/// `POST /v1/mailboxes/{id}/messages` — drop a message (anyone who knows the address).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DropMessage {
    pub request_id: Id,
    pub body: Bytes,
}

/// Answer to a drop or a group append: where the relay stored it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    pub seq: u64,
}

/// One message in a mailbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailboxMessage {
    pub seq: u64,
    pub body: Bytes,
    /// Unix seconds when the relay stored it.
    pub stored_at: u64,
}

/// `GET /v1/mailboxes/{id}/messages?after=SEQ&limit=N` (owner-signed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailboxMessages {
    pub messages: Vec<MailboxMessage>,
}

/// `POST /v1/mailboxes/{id}/ack` (owner-signed) — delete messages by sequence number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckMessages {
    pub request_id: Id,
    pub seqs: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acked {
    /// How many of the listed messages were still there and are now deleted.
    pub deleted: u64,
}

/// `POST /v1/mailboxes/{id}/keypackages` (owner-signed) — add KeyPackages to the pool,
/// and optionally replace the last-resort KeyPackage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadKeyPackages {
    pub request_id: Id,
    pub key_packages: Vec<Bytes>,
    #[serde(default)]
    pub last_resort: Option<Bytes>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyPackageCount {
    pub available: u64,
    pub has_last_resort: bool,
}

/// `POST /v1/mailboxes/{id}/keypackages/claim` — take one KeyPackage, exactly once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimKeyPackage {
    pub request_id: Id,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimedKeyPackage {
    pub key_package: Bytes,
    /// True when the pool was empty and the last-resort KeyPackage was handed out.
    pub last_resort: bool,
}

/// `POST /v1/groups` — create a group log at `epoch` whose token hashes to `token_hash`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateGroup {
    pub request_id: Id,
    pub group_id: Id,
    pub epoch: u64,
    /// SHA-256 of the epoch token (32 bytes).
    pub token_hash: Bytes,
}

/// Kind of a group log entry. The relay cannot see more than this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WelcomeDrop {
    pub mailbox_id: Id,
    pub body: Bytes,
}

/// `POST /v1/groups/{id}/entries` with the current epoch's token in `x-samizdat-token`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub seq: u64,
    pub epoch: u64,
    pub kind: EntryKind,
    pub body: Bytes,
}

/// `GET /v1/groups/{id}/entries?epoch=E&after=SEQ&limit=N` with epoch E's token.
/// Returns entries of epoch E only, in log order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entries {
    pub entries: Vec<Entry>,
    /// The group's current epoch. If it is above the requested epoch, the epoch's last
    /// entry is the commit that closed it.
    pub current_epoch: u64,
}

/// `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub status: String,
    pub version: String,
}
