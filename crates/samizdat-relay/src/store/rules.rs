//! The relay's storage rules, written once: idempotency, mailbox quotas and the Welcome
//! allowance, the KeyPackage pool and claim-once, group creation, the epoch compare-and-set
//! of appends with their Welcome drops, the blob quota.
//!
//! Each rule runs inside one transaction of a backend and reaches the data only through
//! [`Tables`], a small per-backend layer of single-purpose statements (SQLite, PostgreSQL,
//! and the in-memory store used by the rules' unit tests). A backend decides how to make the
//! transaction atomic and how to lock: the rules decide what is allowed and what is
//! answered.
//!
//! One exception, on purpose: PostgreSQL stores appends without Welcomes through its
//! server-side function `samizdat_append` (one round trip; migrations 4 and 5) — the same
//! rule as [`append`], in PL/pgSQL, answering with a [`Refusal`] status that
//! [`append_answer`] turns into the same answers. The shared store tests run the same cases
//! against every backend.

use samizdat_proto::{
    Bytes, ClaimedKeyPackage, EntryKind, ErrorCode, Id, KeyPackageCount, Limits, WelcomeDrop,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{AppendRequest, Appended, MAX_COUNTER, Result, StoreError, scope};
use crate::notify::Topic;

/// A mailbox's counters (the row is locked for the transaction where the backend has locks).
#[derive(Debug, Clone, Copy)]
pub(crate) struct MailboxCounters {
    pub next_seq: u64,
    pub messages: u64,
    pub bytes: u64,
}

/// A group's row (locked for the transaction where the backend has locks).
#[derive(Debug, Clone, Copy)]
pub(crate) struct GroupRow {
    pub current_epoch: u64,
    pub next_seq: u64,
    pub bytes: u64,
}

/// The per-backend data layer: each method is one statement (or a few) inside the caller's
/// transaction. Methods named `…_for_update` lock the row until the transaction ends where
/// the backend has row locks (PostgreSQL); SQLite's single writer and the in-memory store's
/// lock already serialize every write.
#[allow(async_fn_in_trait)]
pub(crate) trait Tables {
    /// The stored answer (JSON) to an earlier request with this id on this target.
    async fn prior(&mut self, scope: &str, target: &Id, request: &Id) -> Result<Option<String>>;
    /// The claims of `mailbox`'s KeyPackages recorded after `since`: (request id, answer).
    async fn claims(&mut self, mailbox: &Id, since: u64) -> Result<Vec<(Id, String)>>;
    async fn remember(
        &mut self,
        scope: &str,
        target: &Id,
        request: &Id,
        answer: String,
        now: u64,
    ) -> Result<()>;

    async fn mailbox_exists(&mut self, mailbox: &Id) -> Result<bool>;
    async fn insert_mailbox(&mut self, mailbox: &Id, owner_key: &[u8], now: u64) -> Result<()>;
    async fn mailbox_for_update(&mut self, mailbox: &Id) -> Result<Option<MailboxCounters>>;
    /// Store a message at `seq` and count it (the mailbox's next seq becomes `seq + 1`).
    async fn insert_message(
        &mut self,
        mailbox: &Id,
        seq: u64,
        body: &[u8],
        now: u64,
        expires_at: u64,
    ) -> Result<()>;
    /// Delete these messages and uncount them; returns how many and their bytes.
    async fn delete_messages(&mut self, mailbox: &Id, seqs: &[u64]) -> Result<(u64, u64)>;

    /// The mailbox's last-resort KeyPackage (outer `None`: no such mailbox), row locked.
    async fn last_resort_for_update(&mut self, mailbox: &Id) -> Result<Option<Option<Vec<u8>>>>;
    /// Whether the mailbox has a last resort (`None`: no such mailbox).
    async fn has_last_resort(&mut self, mailbox: &Id) -> Result<Option<bool>>;
    async fn set_last_resort(&mut self, mailbox: &Id, key_package: &[u8]) -> Result<()>;
    async fn pool_size(&mut self, mailbox: &Id) -> Result<u64>;
    async fn insert_key_package(
        &mut self,
        mailbox: &Id,
        key_package: &[u8],
        now: u64,
    ) -> Result<()>;
    /// Remove and return the oldest KeyPackage of the pool.
    async fn take_key_package(&mut self, mailbox: &Id) -> Result<Option<Vec<u8>>>;

    async fn group_exists(&mut self, group: &Id) -> Result<bool>;
    /// A new group row at `epoch`.
    async fn insert_group(&mut self, group: &Id, epoch: u64, now: u64) -> Result<()>;
    async fn group_for_update(&mut self, group: &Id) -> Result<Option<GroupRow>>;
    async fn insert_epoch(
        &mut self,
        group: &Id,
        epoch: u64,
        token_hash: &[u8; 32],
        now: u64,
    ) -> Result<()>;
    async fn epoch_token_hash(&mut self, group: &Id, epoch: u64) -> Result<Option<Vec<u8>>>;
    /// The seq of the entry this request stored, if it did (the append's retry record).
    async fn entry_of_request(&mut self, group: &Id, request: &Id) -> Result<Option<u64>>;
    async fn insert_entry(&mut self, seq: u64, req: &AppendRequest, now: u64) -> Result<()>;
    /// Move the group to `current_epoch` / `next_seq`, count `added_bytes`, note the append.
    async fn update_group(
        &mut self,
        group: &Id,
        current_epoch: u64,
        next_seq: u64,
        added_bytes: u64,
        now: u64,
    ) -> Result<()>;

    /// A savepoint inside the transaction, to undo one Welcome drop and keep the rest.
    async fn savepoint(&mut self) -> Result<()>;
    async fn rollback_to_savepoint(&mut self) -> Result<()>;
    async fn release_savepoint(&mut self) -> Result<()>;

    /// Wake subscribers of these topics in other relay processes once the transaction commits
    /// (this process wakes its own from the answer).
    async fn wake(&mut self, topics: &[Topic]) -> Result<()>;

    /// Serialize blob creations of one source (PostgreSQL: an advisory transaction lock).
    async fn lock_blob_source(&mut self, source: &[u8; 32]) -> Result<()>;
    /// Bytes uploaded to the unexpired blobs of `source`.
    async fn blob_bytes_held(&mut self, source: &[u8; 32], now: u64) -> Result<u64>;
    async fn insert_blob(&mut self, blob: &NewBlob) -> Result<()>;
}

/// A blob record to create.
#[derive(Debug, Clone)]
pub(crate) struct NewBlob {
    pub blob: Id,
    pub token_hash: [u8; 32],
    pub length: u64,
    pub source: [u8; 32],
    pub for_channel: bool,
    pub now: u64,
    pub expires_at: u64,
}

impl NewBlob {
    /// A blob of `length` bytes from `source`. Until its upload is finished it expires within
    /// the hour (its declared length counts against the source's quota only that long: an
    /// upload that never comes cannot hold it for the blob lifetime; security review 3, M8);
    /// finished, it lives the relay's blob lifetime from then ([`unfinished_blob_expiry`]).
    pub(crate) fn new(
        blob: Id,
        token_hash: [u8; 32],
        length: u64,
        source: [u8; 32],
        for_channel: bool,
        now: u64,
        limits: &Limits,
    ) -> Self {
        NewBlob {
            blob,
            token_hash,
            length,
            source,
            for_channel,
            now,
            expires_at: now
                .saturating_add(limits.blob_ttl_secs.min(UNFINISHED_BLOB_SECS))
                .min(MAX_COUNTER),
        }
    }
}

/// How long a blob whose upload is not finished is kept.
pub(crate) const UNFINISHED_BLOB_SECS: u64 = 3600;

/// When a blob finished at `now` expires (a channel's file lives longer).
pub(crate) fn finished_blob_expiry(now: u64, for_channel: bool, limits: &Limits) -> u64 {
    let ttl = if for_channel {
        limits.channel_blob_ttl_secs
    } else {
        limits.blob_ttl_secs
    };
    now.saturating_add(ttl).min(MAX_COUNTER)
}

/// Run a rule whose [`Tables`] never wait (SQLite's connection, the in-memory maps) to
/// completion on the calling thread.
pub(crate) fn run_now<T>(rule: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    let mut rule = std::pin::pin!(rule);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match rule.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => Err(StoreError::Backend(
            "a synchronous store operation waited; this is a bug".into(),
        )),
    }
}

async fn prior<T: DeserializeOwned>(
    t: &mut impl Tables,
    scope: &str,
    target: &Id,
    request: &Id,
) -> Result<Option<T>> {
    match t.prior(scope, target, request).await? {
        None => Ok(None),
        Some(json) => serde_json::from_str(&json)
            .map(Some)
            .map_err(|e| StoreError::Backend(format!("corrupt idempotency record: {e}"))),
    }
}

async fn remember<T: Serialize>(
    t: &mut impl Tables,
    scope: &str,
    target: &Id,
    request: &Id,
    answer: &T,
    now: u64,
) -> Result<()> {
    let json = serde_json::to_string(answer).map_err(|e| StoreError::Backend(e.to_string()))?;
    t.remember(scope, target, request, json, now).await
}

pub(crate) fn not_found(what: &str) -> StoreError {
    StoreError::rejected(ErrorCode::NotFound, format!("no such {what}"))
}

pub(crate) async fn create_mailbox(
    t: &mut impl Tables,
    request: Id,
    mailbox: Id,
    owner_key: &[u8],
    now: u64,
) -> Result<()> {
    if prior::<()>(t, scope::CREATE_MAILBOX, &mailbox, &request)
        .await?
        .is_some()
    {
        return Ok(());
    }
    if t.mailbox_exists(&mailbox).await? {
        return Err(StoreError::rejected(
            ErrorCode::AlreadyExists,
            "a mailbox with this id exists; choose a new random id",
        ));
    }
    t.insert_mailbox(&mailbox, owner_key, now).await?;
    remember(t, scope::CREATE_MAILBOX, &mailbox, &request, &(), now).await
}

/// Store one message in a mailbox, within its quota. A Welcome (`welcome`) may use the
/// Welcome allowance on top of the quota, so drops from strangers cannot keep it out.
async fn drop_into(
    t: &mut impl Tables,
    mailbox: &Id,
    body: &[u8],
    now: u64,
    limits: &Limits,
    welcome: bool,
) -> Result<u64> {
    let m = t
        .mailbox_for_update(mailbox)
        .await?
        .ok_or_else(|| not_found("mailbox"))?;
    let (max_count, max_bytes) = super::mailbox_caps(limits, welcome);
    if m.messages >= max_count || m.bytes.saturating_add(body.len() as u64) > max_bytes {
        return Err(StoreError::rejected(
            ErrorCode::QuotaExceeded,
            "the mailbox is full; its owner must read and acknowledge messages first",
        ));
    }
    let expires = now.saturating_add(limits.mailbox_ttl_secs).min(MAX_COUNTER);
    t.insert_message(mailbox, m.next_seq, body, now, expires)
        .await?;
    Ok(m.next_seq)
}

pub(crate) async fn drop_message(
    t: &mut impl Tables,
    request: Id,
    mailbox: Id,
    body: &[u8],
    now: u64,
    limits: &Limits,
) -> Result<u64> {
    if let Some(seq) = prior::<u64>(t, scope::DROP, &mailbox, &request).await? {
        return Ok(seq);
    }
    let seq = drop_into(t, &mailbox, body, now, limits, false).await?;
    t.wake(&[Topic::Mailbox(mailbox)]).await?;
    remember(t, scope::DROP, &mailbox, &request, &seq, now).await?;
    Ok(seq)
}

pub(crate) async fn ack_messages(
    t: &mut impl Tables,
    request: Id,
    mailbox: Id,
    seqs: &[u64],
    now: u64,
) -> Result<u64> {
    if let Some(n) = prior::<u64>(t, scope::ACK, &mailbox, &request).await? {
        return Ok(n);
    }
    let (deleted, _bytes) = t.delete_messages(&mailbox, seqs).await?;
    remember(t, scope::ACK, &mailbox, &request, &deleted, now).await?;
    Ok(deleted)
}

pub(crate) async fn key_package_count(
    t: &mut impl Tables,
    mailbox: &Id,
) -> Result<KeyPackageCount> {
    let has_last_resort = t
        .has_last_resort(mailbox)
        .await?
        .ok_or_else(|| not_found("mailbox"))?;
    Ok(KeyPackageCount {
        available: t.pool_size(mailbox).await?,
        has_last_resort,
    })
}

pub(crate) async fn upload_key_packages(
    t: &mut impl Tables,
    request: Id,
    mailbox: Id,
    key_packages: &[Vec<u8>],
    last_resort: Option<&[u8]>,
    max: u64,
    now: u64,
) -> Result<KeyPackageCount> {
    if prior::<KeyPackageCount>(t, scope::UPLOAD, &mailbox, &request)
        .await?
        .is_some()
    {
        return key_package_count(t, &mailbox).await;
    }
    // Locks the mailbox: concurrent uploads to one pool are counted in turn.
    t.last_resort_for_update(&mailbox)
        .await?
        .ok_or_else(|| not_found("mailbox"))?;
    let before = t.pool_size(&mailbox).await?;
    if before.saturating_add(key_packages.len() as u64) > max {
        return Err(StoreError::rejected(
            ErrorCode::QuotaExceeded,
            format!("a pool holds at most {max} KeyPackages; {before} are stored"),
        ));
    }
    for kp in key_packages {
        t.insert_key_package(&mailbox, kp, now).await?;
    }
    if let Some(lr) = last_resort {
        t.set_last_resort(&mailbox, lr).await?;
    }
    let after = key_package_count(t, &mailbox).await?;
    remember(t, scope::UPLOAD, &mailbox, &request, &after, now).await?;
    Ok(after)
}

/// Hand out one KeyPackage exactly once, else the last resort. The claim's record (which
/// holds the KeyPackage, so a retry gets the same one) is kept only [`CLAIM_RECORD_SECS`](super::CLAIM_RECORD_SECS).
pub(crate) async fn claim_key_package(
    t: &mut impl Tables,
    request: Id,
    mailbox: Id,
    now: u64,
) -> Result<ClaimedKeyPackage> {
    if let Some(c) = prior::<ClaimedKeyPackage>(t, scope::CLAIM, &mailbox, &request).await? {
        return Ok(c);
    }
    // The mailbox row lock serializes claims on one pool.
    let last_resort = t
        .last_resort_for_update(&mailbox)
        .await?
        .ok_or_else(|| not_found("mailbox"))?;
    let claimed = match (t.take_key_package(&mailbox).await?, last_resort) {
        (Some(kp), _) => ClaimedKeyPackage {
            key_package: Bytes(kp),
            last_resort: false,
        },
        (None, Some(lr)) => ClaimedKeyPackage {
            key_package: Bytes(lr),
            last_resort: true,
        },
        (None, None) => {
            return Err(StoreError::rejected(
                ErrorCode::NoKeyPackage,
                "this mailbox has no KeyPackage left; its owner must upload more",
            ));
        }
    };
    remember(t, scope::CLAIM, &mailbox, &request, &claimed, now).await?;
    Ok(claimed)
}

pub(crate) async fn create_group(
    t: &mut impl Tables,
    request: Id,
    group: Id,
    epoch: u64,
    token_hash: &[u8; 32],
    now: u64,
) -> Result<()> {
    if prior::<()>(t, scope::CREATE_GROUP, &group, &request)
        .await?
        .is_some()
    {
        return Ok(());
    }
    if t.group_exists(&group).await? {
        return Err(StoreError::rejected(
            ErrorCode::AlreadyExists,
            "a group with this id exists; choose a new random id",
        ));
    }
    t.insert_group(&group, epoch, now).await?;
    t.insert_epoch(&group, epoch, token_hash, now).await?;
    remember(t, scope::CREATE_GROUP, &group, &request, &(), now).await
}

/// Why an append was not stored (PostgreSQL's `samizdat_append` answers with the same codes:
/// see [`append_answer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    NoGroup,
    BadToken,
    /// The group is at another epoch (carried).
    Stale(u64),
    StorageFull,
    Exhausted,
    NoNextToken,
}

impl Refusal {
    /// The refusal `samizdat_append` reports with this status (migration 4: 2 no group,
    /// 3 bad token, 4 stale epoch, 5 storage full, 6 exhausted, 7 no next token).
    fn from_status(status: i16, current: Option<i64>) -> Option<Refusal> {
        Some(match status {
            2 => Refusal::NoGroup,
            3 => Refusal::BadToken,
            4 => Refusal::Stale(current.unwrap_or_default() as u64),
            5 => Refusal::StorageFull,
            6 => Refusal::Exhausted,
            7 => Refusal::NoNextToken,
            _ => return None,
        })
    }

    fn error(self, req: &AppendRequest) -> StoreError {
        match self {
            Refusal::NoGroup => not_found("group"),
            Refusal::BadToken => StoreError::rejected(
                ErrorCode::BadToken,
                "the epoch token does not match this group and epoch",
            ),
            Refusal::Stale(current) => StoreError::Rejected {
                code: match req.kind {
                    EntryKind::Commit => ErrorCode::EpochConflict,
                    EntryKind::Application => ErrorCode::StaleEpoch,
                },
                message: format!(
                    "the group is at epoch {current}, not {}; fetch the log, process it and retry",
                    req.epoch
                ),
                current_epoch: Some(current),
            },
            Refusal::StorageFull => StoreError::rejected(
                ErrorCode::StorageFull,
                "this group's log has reached the relay's storage limit; wait for old entries to expire or move the group",
            ),
            Refusal::Exhausted => super::epoch_exhausted(),
            Refusal::NoNextToken => {
                StoreError::rejected(ErrorCode::BadRequest, "a commit must carry next_token_hash")
            }
        }
    }
}

/// The answer to one append from `samizdat_append`'s status (0 stored, 1 a retry of a stored
/// append, else a [`Refusal::status`]), its seq and the group's current epoch.
pub(crate) fn append_answer(
    req: &AppendRequest,
    status: i16,
    seq: Option<i64>,
    current: Option<i64>,
) -> Result<Appended> {
    if let 0 | 1 = status {
        let seq =
            seq.ok_or_else(|| StoreError::Backend("samizdat_append returned no seq".into()))?;
        return Ok(Appended {
            seq: seq as u64,
            welcomed: Vec::new(),
            undelivered: Vec::new(),
            fresh: status == 0,
        });
    }
    let refusal = Refusal::from_status(status, current)
        .ok_or_else(|| StoreError::Backend(format!("samizdat_append returned status {status}")))?;
    Err(refusal.error(req))
}

/// Append an entry: token check first (before even the retry record), then the retry record,
/// the epoch compare-and-set, the group's byte limit; a commit moves the group to the next
/// epoch with its token and drops its Welcomes (one that does not fit is reported, the commit
/// stands).
pub(crate) async fn append(
    t: &mut impl Tables,
    req: &AppendRequest,
    now: u64,
    limits: &Limits,
) -> Result<Appended> {
    match append_checked(t, req, now, limits).await? {
        Ok(appended) => Ok(appended),
        Err(refusal) => Err(refusal.error(req)),
    }
}

async fn append_checked(
    t: &mut impl Tables,
    req: &AppendRequest,
    now: u64,
    limits: &Limits,
) -> Result<Result<Appended, Refusal>> {
    let g = &req.group_id;
    let Some(group) = t.group_for_update(g).await? else {
        return Ok(Err(Refusal::NoGroup));
    };
    // Who may append is checked before anything else, including the retry record.
    if t.epoch_token_hash(g, req.epoch).await?.as_deref() != Some(req.token_hash.as_slice()) {
        return Ok(Err(Refusal::BadToken));
    }
    // The retry record is the entry itself (one row per append).
    if let Some(seq) = t.entry_of_request(g, &req.request_id).await? {
        return Ok(Ok(Appended {
            seq,
            welcomed: Vec::new(),
            undelivered: Vec::new(),
            fresh: false,
        }));
    }
    if req.epoch != group.current_epoch {
        return Ok(Err(Refusal::Stale(group.current_epoch)));
    }
    if group.bytes.saturating_add(req.body.len() as u64) > limits.max_group_bytes {
        return Ok(Err(Refusal::StorageFull));
    }
    let seq = group.next_seq;
    let Some(next_seq) = seq.checked_add(1).filter(|n| *n <= MAX_COUNTER) else {
        return Ok(Err(Refusal::Exhausted));
    };
    let mut epoch = group.current_epoch;
    if req.kind == EntryKind::Commit {
        let Some(next_hash) = req.next_token_hash else {
            return Ok(Err(Refusal::NoNextToken));
        };
        let Some(next) = epoch.checked_add(1).filter(|n| *n <= MAX_COUNTER) else {
            return Ok(Err(Refusal::Exhausted));
        };
        t.insert_entry(seq, req, now).await?;
        t.insert_epoch(g, next, &next_hash, now).await?;
        epoch = next;
    } else {
        t.insert_entry(seq, req, now).await?;
    }
    t.update_group(g, epoch, next_seq, req.body.len() as u64, now)
        .await?;
    let (welcomed, undelivered) = if req.kind == EntryKind::Commit {
        drop_welcomes(t, &req.welcomes, now, limits).await?
    } else {
        (Vec::new(), Vec::new())
    };
    let mut topics = vec![Topic::Group(*g)];
    topics.extend(welcomed.iter().map(|m| Topic::Mailbox(*m)));
    t.wake(&topics).await?;
    Ok(Ok(Appended {
        seq,
        welcomed,
        undelivered,
        fresh: true,
    }))
}

/// Drop a commit's Welcomes, each under the Welcome allowance; one that does not fit (or
/// whose mailbox is gone) is undone and reported. Mailboxes are taken in one fixed order
/// (by id), so two commits that welcome the same people never lock in a cycle.
async fn drop_welcomes(
    t: &mut impl Tables,
    welcomes: &[WelcomeDrop],
    now: u64,
    limits: &Limits,
) -> Result<(Vec<Id>, Vec<Id>)> {
    let mut welcomes: Vec<_> = welcomes.iter().collect();
    welcomes.sort_by_key(|w| w.mailbox_id);
    let (mut welcomed, mut undelivered) = (Vec::new(), Vec::new());
    for w in welcomes {
        // Only for a KeyPackage claimed from this mailbox, once per claim (M2): a stranger's
        // group cannot fill a mailbox with "Welcomes" without using up its KeyPackages.
        let claim = match &w.key_package_hash {
            Some(h) => unused_claim(t, &w.mailbox_id, &h.0, now).await?,
            None => None,
        };
        let Some(claim) = claim else {
            undelivered.push(w.mailbox_id);
            continue;
        };
        t.savepoint().await?;
        let dropped = match drop_into(t, &w.mailbox_id, &w.body.0, now, limits, true).await {
            Ok(_) => remember(t, scope::WELCOMED, &w.mailbox_id, &claim, &(), now).await,
            Err(e) => Err(e),
        };
        match dropped {
            Ok(()) => {
                t.release_savepoint().await?;
                welcomed.push(w.mailbox_id);
            }
            Err(e) if super::welcome_skippable(&e) => {
                t.rollback_to_savepoint().await?;
                undelivered.push(w.mailbox_id);
            }
            Err(e) => return Err(e),
        }
    }
    Ok((welcomed, undelivered))
}

/// A claim of `mailbox`'s KeyPackage whose SHA-256 is `kp_hash`, recorded in the last
/// [`CLAIM_RECORD_SECS`](super::CLAIM_RECORD_SECS) and not yet used for a Welcome.
async fn unused_claim(
    t: &mut impl Tables,
    mailbox: &Id,
    kp_hash: &[u8],
    now: u64,
) -> Result<Option<Id>> {
    let since = now.saturating_sub(super::CLAIM_RECORD_SECS);
    for (request, answer) in t.claims(mailbox, since).await? {
        let Ok(c) = serde_json::from_str::<ClaimedKeyPackage>(&answer) else {
            continue;
        };
        if crate::auth::token_hash(&c.key_package.0).as_slice() == kp_hash
            && prior::<()>(t, scope::WELCOMED, mailbox, &request)
                .await?
                .is_none()
        {
            return Ok(Some(request));
        }
    }
    Ok(None)
}

/// Record a new blob if it fits the source's quota: the bytes uploaded to its unexpired
/// blobs plus this one's length (a declared length that never arrives holds nothing; each
/// piece is checked again as it arrives: `Store::advance_blob`).
pub(crate) async fn create_blob(t: &mut impl Tables, blob: &NewBlob, quota: u64) -> Result<()> {
    // One source's creations in turn, so concurrent ones cannot both fit the quota.
    t.lock_blob_source(&blob.source).await?;
    let held = t.blob_bytes_held(&blob.source, blob.now).await?;
    if held.saturating_add(blob.length) > quota {
        return Err(super::blob_quota_exceeded());
    }
    t.insert_blob(blob).await
}
