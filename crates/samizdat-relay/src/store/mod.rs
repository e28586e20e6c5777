//! The relay's storage: one trait, implemented by SQLite (one process) and PostgreSQL
//! (many processes). Every method is one atomic transaction; write methods return only
//! after the data is durable.
//!
//! Idempotency lives here too: every write takes the client's `request_id`; a repeat returns
//! the first answer (stored in the same transaction as the write) and changes nothing.

mod channels;
mod memory;
mod postgres;
pub(crate) mod rules;
mod sqlite;

pub use channels::{ChannelState, NewRecord};
pub use memory::MemoryStore;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

use async_trait::async_trait;
use samizdat_proto::{
    ClaimedKeyPackage, Entries, EntryKind, ErrorCode, Id, KeyPackageCount, Limits, MailboxMessage,
    WelcomeDrop,
};

/// What a store operation can fail with. Client-caused failures carry an [`ErrorCode`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("{message}")]
    Rejected {
        code: ErrorCode,
        message: String,
        current_epoch: Option<u64>,
    },
    #[error("storage failure: {0}")]
    Backend(String),
    /// The transaction lost a race (unique key, serialization) and should be re-run.
    #[error("transaction conflict; retry")]
    Retry,
}

impl StoreError {
    pub fn rejected(code: ErrorCode, message: impl Into<String>) -> Self {
        StoreError::Rejected {
            code,
            message: message.into(),
            current_epoch: None,
        }
    }
}

impl StoreError {
    /// The same error again, for each of several requests that one failure answers.
    pub fn duplicate(&self) -> StoreError {
        match self {
            StoreError::Rejected {
                code,
                message,
                current_epoch,
            } => StoreError::Rejected {
                code: *code,
                message: message.clone(),
                current_epoch: *current_epoch,
            },
            StoreError::Backend(m) => StoreError::Backend(m.clone()),
            StoreError::Retry => StoreError::Retry,
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Backend(e.to_string())
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A group append, already parsed and size-checked by the HTTP layer.
#[derive(Debug, Clone)]
pub struct AppendRequest {
    pub request_id: Id,
    pub group_id: Id,
    pub kind: EntryKind,
    pub epoch: u64,
    /// SHA-256 of the token the client presented.
    pub token_hash: [u8; 32],
    pub body: Vec<u8>,
    pub next_token_hash: Option<[u8; 32]>,
    pub welcomes: Vec<WelcomeDrop>,
}

/// Where an append landed, and which mailboxes got Welcomes (to wake their subscribers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub seq: u64,
    pub welcomed: Vec<Id>,
    /// Mailboxes whose Welcome was not stored (full even with the Welcome allowance, or
    /// gone): the commit still lands and the committer is told, so it can deliver later.
    pub undelivered: Vec<Id>,
    /// False when this answers a retry (the entry was stored by the first attempt).
    pub fresh: bool,
}

/// How many rows a retention sweep removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    pub mailbox_messages: u64,
    pub entries: u64,
    /// Idle mailboxes deleted (with their messages and KeyPackages).
    pub mailboxes: u64,
    /// Idle groups deleted (all entries expired), with their epochs.
    pub groups: u64,
    /// KeyPackages deleted unclaimed after their time.
    pub key_packages: u64,
    /// Bytes of entries and mailbox messages still stored after the sweep.
    pub stored_bytes: u64,
}

impl Swept {
    pub fn removed(&self) -> u64 {
        self.mailbox_messages + self.entries + self.mailboxes + self.groups + self.key_packages
    }
}

/// The quota an upload's piece is checked against: bytes uploaded to a source's unexpired
/// blobs (as of `now`) may not pass `bytes`.
#[derive(Debug, Clone, Copy)]
pub struct BlobQuota {
    pub now: u64,
    pub bytes: u64,
}

/// A blob's record; its bytes live in a file under the blob directory (see `crate::blobs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobRecord {
    /// SHA-256 of the upload token.
    pub token_hash: [u8; 32],
    pub length: u64,
    /// Bytes stored durably so far (`length` when the upload is complete).
    pub offset: u64,
    pub expires_at: u64,
    /// A channel's file: kept `channel_blob_ttl_secs` once finished.
    pub for_channel: bool,
}

/// How long a claim's idempotency record (which holds the claimed KeyPackage) is kept: long
/// enough for a client to retry, short enough not to keep a record of who was added.
pub const CLAIM_RECORD_SECS: u64 = 600;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Create a mailbox. Repeating the same request id is a no-op.
    async fn create_mailbox(
        &self,
        request_id: Id,
        mailbox: Id,
        owner_key: Vec<u8>,
        now: u64,
    ) -> Result<()>;

    /// The owner's public key, if the mailbox exists.
    async fn mailbox_owner(&self, mailbox: Id) -> Result<Option<Vec<u8>>>;

    /// Record a signature nonce of `mailbox`'s owner; false if it was already used (a
    /// replay). Also marks the mailbox as in use (idle mailboxes expire).
    async fn use_nonce(&self, nonce: Id, expires_at: u64, mailbox: Id, now: u64) -> Result<bool>;

    /// Mark a mailbox as in use (its owner subscribed over a WebSocket).
    async fn touch_mailbox(&self, mailbox: Id, now: u64) -> Result<()>;

    /// Store a message in a mailbox, within its quota. Returns its sequence number.
    async fn drop_message(
        &self,
        request_id: Id,
        mailbox: Id,
        body: Vec<u8>,
        now: u64,
        limits: &Limits,
    ) -> Result<u64>;

    /// Messages after `after`, oldest first, not yet expired.
    async fn read_mailbox(
        &self,
        mailbox: Id,
        after: u64,
        limit: usize,
        now: u64,
    ) -> Result<Vec<MailboxMessage>>;

    /// Delete acknowledged messages; returns how many were deleted.
    async fn ack_messages(&self, request_id: Id, mailbox: Id, seqs: Vec<u64>) -> Result<u64>;

    /// Add KeyPackages to the pool (bounded by `max`) and optionally replace the last resort.
    async fn upload_key_packages(
        &self,
        request_id: Id,
        mailbox: Id,
        key_packages: Vec<Vec<u8>>,
        last_resort: Option<Vec<u8>>,
        max: u64,
    ) -> Result<KeyPackageCount>;

    /// Hand out one KeyPackage exactly once, else the last resort.
    async fn claim_key_package(&self, request_id: Id, mailbox: Id) -> Result<ClaimedKeyPackage>;

    async fn key_package_count(&self, mailbox: Id) -> Result<KeyPackageCount>;

    /// Create a group log at `epoch` with that epoch's token hash.
    async fn create_group(
        &self,
        request_id: Id,
        group: Id,
        epoch: u64,
        token_hash: [u8; 32],
        now: u64,
    ) -> Result<()>;

    /// The token hash of `epoch` and the group's current epoch; `None` if the group or the
    /// epoch is unknown.
    async fn epoch_token(&self, group: Id, epoch: u64) -> Result<Option<([u8; 32], u64)>>;

    /// Which epoch of `group` has this token hash, if any: the cheap check the HTTP layer
    /// makes before it reads an append's body.
    async fn token_epoch(&self, group: Id, token_hash: [u8; 32]) -> Result<Option<u64>>;

    /// Append an entry: token check, epoch compare-and-set for commits, Welcome drops — one
    /// transaction.
    async fn append(&self, req: AppendRequest, now: u64, limits: &Limits) -> Result<Appended>;

    /// Entries of `epoch` after `after`, in log order.
    async fn read_entries(
        &self,
        group: Id,
        epoch: u64,
        after: u64,
        limit: usize,
    ) -> Result<Entries>;

    /// Where a channel's chain stands, with its current admins; `None` if the relay has none.
    async fn channel_state(&self, channel: Id) -> Result<Option<ChannelState>>;

    /// Store a checked record: a genesis creates the channel, any other must follow the head
    /// it names (compare-and-set). True when stored now, false when it already was.
    async fn store_channel_record(&self, record: NewRecord, now: u64) -> Result<bool>;

    /// A channel's records `from ..= to` that exist, in order.
    async fn read_channel(&self, channel: Id, from: u64, to: u64) -> Result<Vec<Vec<u8>>>;

    /// Delete expired mailbox messages, log entries, nonces and idempotency records.
    async fn sweep(&self, now: u64, limits: &Limits) -> Result<Swept>;

    /// Record a new blob of `length` bytes for `source` (a hash of the uploader's address
    /// bucket), within the per-source quota of unexpired blobs; `for_channel`: a channel's
    /// file, kept `channel_blob_ttl_secs` once finished.
    #[allow(clippy::too_many_arguments)]
    async fn create_blob(
        &self,
        blob: Id,
        token_hash: [u8; 32],
        length: u64,
        source: [u8; 32],
        for_channel: bool,
        now: u64,
        limits: &Limits,
    ) -> Result<()>;

    /// A blob that has not expired.
    async fn blob(&self, blob: Id, now: u64) -> Result<Option<BlobRecord>>;

    /// Move a blob's durable offset from `from` to `to`; false if it was not at `from` (a
    /// concurrent upload moved it), or if the bytes uploaded to the unexpired blobs of its
    /// source (group or mailbox) at `quota.now` would pass `quota.bytes` (security review 3,
    /// M8: the quota counts bytes actually uploaded).
    async fn advance_blob(
        &self,
        blob: Id,
        from: u64,
        to: u64,
        finished_expiry: u64,
        quota: BlobQuota,
    ) -> Result<bool>;

    /// Delete the records of blobs expired at `now`; returns their ids so their files can go.
    async fn expire_blobs(&self, now: u64) -> Result<Vec<Id>>;

    /// Write transactions that stored batched writes, and the writes they stored (SQLite: every
    /// write through the writer thread; PostgreSQL: appends batched per group). The mean batch
    /// is their quotient; `/metrics` exports both.
    fn write_batches(&self) -> (u64, u64) {
        (0, 0)
    }

    /// False when the store can no longer write (the SQLite writer died); `/healthz` says so.
    fn healthy(&self) -> bool {
        true
    }

    /// Deliver wake-ups caused by other relay processes to this process's subscribers.
    /// A single-process backend has none.
    fn start_wakeups(&self, _notifier: crate::notify::Notifier) {}
}

/// Idempotency scopes. A record is keyed by (scope, target, request id): a request id only
/// ever answers a repeat of the same operation on the same mailbox or group. Appends keep
/// theirs on the entry itself (`entries.request_id`, unique per group): one row per append.
pub(crate) mod scope {
    pub const CREATE_MAILBOX: &str = "create_mailbox";
    pub const DROP: &str = "drop";
    pub const ACK: &str = "ack";
    pub const UPLOAD: &str = "upload_key_packages";
    pub const CLAIM: &str = "claim";
    /// A claim whose KeyPackage a Welcome was dropped for (M2: one Welcome per claim).
    pub const WELCOMED: &str = "welcomed";
    pub const CREATE_GROUP: &str = "create_group";
}

/// The largest epoch or sequence number the stores can hold (they are signed 64-bit).
pub const MAX_COUNTER: u64 = i64::MAX as u64;

/// Seconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(crate) fn hash32(v: Vec<u8>) -> Result<[u8; 32]> {
    <[u8; 32]>::try_from(v.as_slice()).map_err(|_| StoreError::Backend("corrupt token hash".into()))
}

pub(crate) fn blob_quota_exceeded() -> StoreError {
    StoreError::rejected(
        ErrorCode::QuotaExceeded,
        "this conversation (or mailbox) holds as many file bytes on this relay as it allows; wait for older files to expire",
    )
}

pub(crate) fn epoch_exhausted() -> StoreError {
    StoreError::rejected(
        ErrorCode::BadRequest,
        "this group's epoch counter is exhausted; create a new group",
    )
}

/// How many messages and bytes a mailbox may hold for this drop: the quota, plus the Welcome
/// allowance for Welcomes that arrive with accepted commits.
pub(crate) fn mailbox_caps(limits: &Limits, welcome: bool) -> (u64, u64) {
    if welcome {
        (
            limits
                .mailbox_quota_messages
                .saturating_add(limits.welcome_allowance_messages),
            limits
                .mailbox_quota_bytes
                .saturating_add(limits.welcome_allowance_bytes),
        )
    } else {
        (limits.mailbox_quota_messages, limits.mailbox_quota_bytes)
    }
}

/// Whether a Welcome drop failure should leave the commit standing (the Welcome is reported
/// as undelivered) rather than abort it.
pub(crate) fn welcome_skippable(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::Rejected {
            code: ErrorCode::QuotaExceeded | ErrorCode::NotFound,
            ..
        }
    )
}
