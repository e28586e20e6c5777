//! PostgreSQL storage, shared by any number of relay processes.
//!
//! Every operation is one transaction. Races between processes are settled by row locks
//! (`SELECT … FOR UPDATE` on the group or mailbox row) and primary keys; an operation that
//! loses a unique-key or serialization race is re-run from the start, where it finds the
//! winner's result (idempotency) or the new state. Wake-ups for subscribers on other
//! processes travel as `NOTIFY samizdat` inside the same transaction, so they are sent only on
//! commit; they are hints, never the source of truth.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use samizdat_proto::{
    Bytes, ClaimedKeyPackage, Entries, Entry, EntryKind, ErrorCode, Id, KeyPackageCount, Limits,
    MailboxMessage,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_postgres::error::SqlState;
use tokio_postgres::{AsyncMessage, Client, NoTls, Transaction};

use super::{
    AppendRequest, Appended, BlobRecord, CLAIM_RECORD_SECS, MAX_COUNTER, Result, Store, StoreError,
    Swept, epoch_exhausted, hash32, scope, welcome_skippable,
};
use crate::notify::{Notifier, Topic};

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/postgres/0001_init.sql")),
    (2, include_str!("../../migrations/postgres/0002_bounds.sql")),
    (3, include_str!("../../migrations/postgres/0003_blobs.sql")),
    (
        4,
        include_str!("../../migrations/postgres/0004_append_function.sql"),
    ),
    (
        5,
        include_str!("../../migrations/postgres/0005_append_batch.sql"),
    ),
];
/// Most appends one batch stores (and their bytes, at least one append).
const MAX_BATCH: usize = 256;
const MAX_BATCH_BYTES: usize = 4 << 20;
/// A NOTIFY payload must stay under PostgreSQL's 8,000-byte limit.
const MAX_NOTIFY_PAYLOAD: usize = 7_000;
/// Arbitrary key for the advisory lock that serializes migrations across processes.
const MIGRATION_LOCK: i64 = 0x5a4d_4947;
const CHANNEL: &str = "samizdat";
const MAX_RETRIES: usize = 5;

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.code() {
            Some(c)
                if *c == SqlState::UNIQUE_VIOLATION
                    || *c == SqlState::T_R_SERIALIZATION_FAILURE
                    || *c == SqlState::T_R_DEADLOCK_DETECTED =>
            {
                StoreError::Retry
            }
            _ => StoreError::Backend(e.to_string()),
        }
    }
}

/// The PostgreSQL [`Store`]: a `deadpool-postgres` pool (connections opened on demand, a
/// closed one replaced before reuse).
pub struct PgStore {
    url: String,
    pool: deadpool_postgres::Pool,
    batches: Arc<Batches>,
}

/// Appends without Welcomes waiting for their group, per group: the first one to arrive
/// starts a task that stores whatever has gathered in one `samizdat_append_batch` call and
/// goes on until the queue is empty (group commit per group; see migration 5).
struct Batches {
    pool: deadpool_postgres::Pool,
    /// Batches stored and the appends they held (see `Store::write_batches`).
    counted: [std::sync::atomic::AtomicU64; 2],
    queues: std::sync::Mutex<HashMap<Id, Vec<Queued>>>,
}

struct Queued {
    req: AppendRequest,
    now: u64,
    answer: tokio::sync::oneshot::Sender<Result<Appended>>,
}

async fn connect(url: &str) -> Result<Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(|e| StoreError::Backend(format!("cannot connect to PostgreSQL: {e}")))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "PostgreSQL connection closed");
        }
    });
    Ok(client)
}

impl Batches {
    /// Store `group`'s queued appends, batch after batch, until none is left.
    async fn drain(&self, group: Id, limits: &Limits) {
        loop {
            let batch: Vec<Queued> = {
                let Ok(mut queues) = self.queues.lock() else {
                    return;
                };
                let Some(queue) = queues.get_mut(&group) else {
                    return;
                };
                if queue.is_empty() {
                    queues.remove(&group);
                    return;
                }
                let (mut n, mut bytes) = (0, 0);
                while n < queue.len().min(MAX_BATCH)
                    && (n == 0 || bytes + queue[n].req.body.len() <= MAX_BATCH_BYTES)
                {
                    bytes += queue[n].req.body.len();
                    n += 1;
                }
                queue.drain(..n).collect()
            };
            self.counted[0].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.counted[1].fetch_add(batch.len() as u64, std::sync::atomic::Ordering::Relaxed);
            match self.store(group, &batch, limits).await {
                Ok(rows) => {
                    for (q, (status, seq, current)) in batch.into_iter().zip(rows) {
                        let _ = q.answer.send(append_answer(&q.req, status, seq, current));
                    }
                }
                Err(e) => {
                    for q in batch {
                        let _ = q.answer.send(Err(e.duplicate()));
                    }
                }
            }
        }
    }

    /// One call of `samizdat_append_batch`, re-run on a lost race.
    async fn store(
        &self,
        group: Id,
        batch: &[Queued],
        limits: &Limits,
    ) -> Result<Vec<(i16, Option<i64>, Option<i64>)>> {
        let epochs: Vec<i64> = batch.iter().map(|q| q.req.epoch as i64).collect();
        let tokens: Vec<&[u8]> = batch.iter().map(|q| q.req.token_hash.as_slice()).collect();
        let requests: Vec<&[u8]> = batch
            .iter()
            .map(|q| q.req.request_id.as_bytes().as_slice())
            .collect();
        let kinds: Vec<i16> = batch.iter().map(|q| q.req.kind.as_i64() as i16).collect();
        let bodies: Vec<&[u8]> = batch.iter().map(|q| q.req.body.as_slice()).collect();
        let next: Vec<Option<&[u8]>> = batch
            .iter()
            .map(|q| q.req.next_token_hash.as_ref().map(|h| h.as_slice()))
            .collect();
        // One clock for the batch: the latest of its requests.
        let now = batch.iter().map(|q| q.now).max().unwrap_or_default() as i64;
        let notify = topic_payload(Topic::Group(group));
        let max_bytes = limits.max_group_bytes.min(i64::MAX as u64) as i64;
        let mut attempt = 0;
        loop {
            let client = pooled(&self.pool).await?;
            let stmt = client
                .prepare_cached(
                    "SELECT r_index, r_status, r_seq, r_epoch FROM samizdat_append_batch($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                )
                .await?;
            let res = client
                .query(
                    &stmt,
                    &[
                        &group.as_bytes().as_slice(),
                        &epochs,
                        &tokens,
                        &requests,
                        &kinds,
                        &bodies,
                        &next,
                        &now,
                        &max_bytes,
                        &notify,
                    ],
                )
                .await;
            match res.map_err(StoreError::from) {
                Ok(rows) => {
                    let mut out = vec![(-1i16, None, None); batch.len()];
                    for r in rows {
                        let i = r.get::<_, i32>(0) as usize;
                        if let Some(slot) = i.checked_sub(1).and_then(|i| out.get_mut(i)) {
                            *slot = (r.get(1), r.get(2), r.get(3));
                        }
                    }
                    return Ok(out);
                }
                Err(StoreError::Retry) if attempt < MAX_RETRIES => attempt += 1,
                Err(e) => return Err(e),
            }
        }
    }
}

/// A connection from `pool` (a lost one is replaced by the pool).
async fn pooled(pool: &deadpool_postgres::Pool) -> Result<deadpool_postgres::Object> {
    pool.get().await.map_err(|e| match e {
        deadpool_postgres::PoolError::Backend(e) => StoreError::from(e),
        // Every connection busy for the wait timeout, or none could be made.
        other => {
            tracing::warn!(error = %other, "no PostgreSQL connection");
            StoreError::Retry
        }
    })
}

/// The answer to one append from `samizdat_append`'s status (see migration 4).
fn append_answer(
    req: &AppendRequest,
    status: i16,
    seq: Option<i64>,
    current: Option<i64>,
) -> Result<Appended> {
    let seq = || {
        seq.map(|s| s as u64)
            .ok_or_else(|| StoreError::Backend("samizdat_append returned no seq".into()))
    };
    match status {
        0 | 1 => Ok(Appended {
            seq: seq()?,
            welcomed: Vec::new(),
            undelivered: Vec::new(),
            fresh: status == 0,
        }),
        2 => Err(not_found("group")),
        3 => Err(StoreError::rejected(
            ErrorCode::BadToken,
            "the epoch token does not match this group and epoch",
        )),
        4 => {
            let current = current.unwrap_or_default() as u64;
            let code = match req.kind {
                EntryKind::Commit => ErrorCode::EpochConflict,
                EntryKind::Application => ErrorCode::StaleEpoch,
            };
            Err(StoreError::Rejected {
                code,
                message: format!(
                    "the group is at epoch {current}, not {}; fetch the log, process it and retry",
                    req.epoch
                ),
                current_epoch: Some(current),
            })
        }
        5 => Err(StoreError::rejected(
            ErrorCode::StorageFull,
            "this group's log has reached the relay's storage limit; wait for old entries to expire or move the group",
        )),
        6 => Err(epoch_exhausted()),
        7 => Err(StoreError::rejected(
            ErrorCode::BadRequest,
            "a commit must carry next_token_hash",
        )),
        other => Err(StoreError::Backend(format!(
            "samizdat_append returned status {other}"
        ))),
    }
}

impl PgStore {
    /// Connect, migrate (once, under an advisory lock) and open a pool of `pool_size`.
    pub async fn open(url: &str, pool_size: usize) -> Result<PgStore> {
        let mut client = connect(url).await?;
        client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        let migrated = Self::migrate(&mut client).await;
        client
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
            .await?;
        migrated?;
        drop(client);
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Backend(format!("bad PostgreSQL URL: {e}")))?;
        let manager = deadpool_postgres::Manager::from_config(
            config,
            NoTls,
            deadpool_postgres::ManagerConfig {
                // A closed connection is replaced before it is handed out (no extra round trip,
                // as with the pool this replaces: one that died silently fails one request).
                recycling_method: deadpool_postgres::RecyclingMethod::Fast,
            },
        );
        let pool = deadpool_postgres::Pool::builder(manager)
            .max_size(pool_size.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .create_timeout(Some(Duration::from_secs(10)))
            .wait_timeout(Some(Duration::from_secs(30)))
            .build()
            .map_err(|e| StoreError::Backend(format!("cannot build the PostgreSQL pool: {e}")))?;
        Ok(PgStore {
            url: url.to_string(),
            batches: Arc::new(Batches {
                pool: pool.clone(),
                counted: Default::default(),
                queues: std::sync::Mutex::new(HashMap::new()),
            }),
            pool,
        })
    }

    async fn migrate(client: &mut Client) -> Result<()> {
        client
            .batch_execute("CREATE TABLE IF NOT EXISTS samizdat_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)")
            .await?;
        for (v, sql) in MIGRATIONS {
            let done = client
                .query_opt("SELECT 1 FROM samizdat_migrations WHERE version = $1", &[v])
                .await?;
            if done.is_none() {
                let tx = client.transaction().await?;
                tx.batch_execute(sql).await?;
                tx.execute(
                    "INSERT INTO samizdat_migrations (version, applied_at) VALUES ($1, $2)",
                    &[v, &(now_secs() as i64)],
                )
                .await?;
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// An append without Welcomes (every application message, most commits): queued for its
    /// group and stored by one `samizdat_append_batch` call with the others waiting for the same
    /// group — one prepared statement (cached per connection), no explicit transaction, so one
    /// round trip and one WAL flush per batch. Same rules, same answers; acknowledged only once
    /// committed.
    async fn append_batched(
        &self,
        req: AppendRequest,
        now: u64,
        limits: &Limits,
    ) -> Result<Appended> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let group = req.group_id;
        let lead = {
            let mut queues = self
                .batches
                .queues
                .lock()
                .map_err(|_| StoreError::Backend("append queue poisoned".into()))?;
            let lead = !queues.contains_key(&group);
            queues
                .entry(group)
                .or_default()
                .push(Queued { req, now, answer });
            lead
        };
        if lead {
            // A task of its own: the request that started it may be cancelled (its client
            // gone); the appends queued behind it must still be stored and answered.
            let batches = self.batches.clone();
            let limits = limits.clone();
            tokio::spawn(async move { batches.drain(group, &limits).await });
        }
        answered
            .await
            .map_err(|_| StoreError::Backend("the append batch was lost".into()))?
    }

    /// A pooled connection (a lost one is replaced by the pool).
    async fn conn(&self) -> Result<deadpool_postgres::Object> {
        pooled(&self.pool).await
    }

    /// Forward `NOTIFY samizdat` payloads to this process's subscribers, reconnecting forever.
    pub fn start_listener(&self, notifier: Notifier) {
        let url = self.url.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = listen_once(&url, &notifier).await {
                    tracing::warn!(error = %e, "PostgreSQL listener lost; reconnecting");
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
    }
}

async fn listen_once(url: &str, notifier: &Notifier) -> Result<()> {
    let (client, mut connection) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(|e| StoreError::Backend(format!("cannot connect to PostgreSQL: {e}")))?;
    let mut stream = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    let listen_sql = format!("LISTEN {CHANNEL}");
    let listen = client.batch_execute(&listen_sql);
    tokio::pin!(listen);
    let mut listening = false;
    loop {
        tokio::select! {
            r = &mut listen, if !listening => { r?; listening = true; }
            msg = stream.next() => match msg {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    // One payload may carry several topics, separated by spaces.
                    for topic in n.payload().split(' ').filter_map(parse_topic) {
                        notifier.notify(topic);
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => return Ok(()),
            }
        }
    }
}

fn topic_payload(topic: Topic) -> String {
    match topic {
        Topic::Mailbox(id) => format!("m:{id}"),
        Topic::Group(id) => format!("g:{id}"),
    }
}

fn parse_topic(s: &str) -> Option<Topic> {
    let (kind, id) = s.split_once(':')?;
    let id: Id = id.parse().ok()?;
    match kind {
        "m" => Some(Topic::Mailbox(id)),
        "g" => Some(Topic::Group(id)),
        _ => None,
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn not_found(what: &str) -> StoreError {
    StoreError::rejected(ErrorCode::NotFound, format!("no such {what}"))
}

async fn notify(tx: &Transaction<'_>, topic: Topic) -> Result<()> {
    notify_all(tx, &[topic]).await
}

/// Wake-ups for several topics in as few NOTIFYs as the payload limit allows (one for any
/// ordinary commit), instead of one per mailbox.
async fn notify_all(tx: &Transaction<'_>, topics: &[Topic]) -> Result<()> {
    let mut payload = String::new();
    for t in topics {
        let p = topic_payload(*t);
        if !payload.is_empty() && payload.len() + 1 + p.len() > MAX_NOTIFY_PAYLOAD {
            tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])
                .await?;
            payload.clear();
        }
        if !payload.is_empty() {
            payload.push(' ');
        }
        payload.push_str(&p);
    }
    if !payload.is_empty() {
        tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])
            .await?;
    }
    Ok(())
}

async fn prior<T: DeserializeOwned>(
    tx: &Transaction<'_>,
    request_id: &Id,
    scope: &str,
    target: &Id,
) -> Result<Option<T>> {
    let row = tx
        .query_opt(
            "SELECT result FROM requests WHERE scope = $1 AND target = $2 AND request_id = $3",
            &[
                &scope,
                &target.as_bytes().as_slice(),
                &request_id.as_bytes().as_slice(),
            ],
        )
        .await?;
    match row {
        None => Ok(None),
        Some(r) => {
            let result: String = r.get(0);
            serde_json::from_str(&result)
                .map(Some)
                .map_err(|e| StoreError::Backend(format!("corrupt idempotency record: {e}")))
        }
    }
}

async fn remember<T: Serialize>(
    tx: &Transaction<'_>,
    request_id: &Id,
    scope: &str,
    target: &Id,
    result: &T,
    now: u64,
) -> Result<()> {
    let json = serde_json::to_string(result).map_err(|e| StoreError::Backend(e.to_string()))?;
    tx.execute(
        "INSERT INTO requests (scope, target, request_id, result, stored_at) VALUES ($1, $2, $3, $4, $5)",
        &[
            &scope,
            &target.as_bytes().as_slice(),
            &request_id.as_bytes().as_slice(),
            &json,
            &(now as i64),
        ],
    )
    .await?;
    Ok(())
}

/// Store one message in a mailbox (the caller sends the wake-up). A Welcome (`welcome`) may
/// use the Welcome allowance on top of the quota.
async fn drop_into(
    tx: &Transaction<'_>,
    mailbox: &Id,
    body: &[u8],
    now: u64,
    limits: &Limits,
    welcome: bool,
) -> Result<u64> {
    let m = mailbox.as_bytes().as_slice();
    let row = tx
        .query_opt(
            "SELECT next_seq, msg_count, msg_bytes FROM mailboxes WHERE mailbox_id = $1 FOR UPDATE",
            &[&m],
        )
        .await?
        .ok_or_else(|| not_found("mailbox"))?;
    let (seq, count, bytes): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    let (max_count, max_bytes) = super::mailbox_caps(limits, welcome);
    if count as u64 >= max_count || bytes as u64 + body.len() as u64 > max_bytes {
        return Err(StoreError::rejected(
            ErrorCode::QuotaExceeded,
            "the mailbox is full; its owner must read and acknowledge messages first",
        ));
    }
    tx.execute(
        "INSERT INTO mailbox_messages (mailbox_id, seq, body, stored_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
        &[&m, &seq, &body, &(now as i64), &(now.saturating_add(limits.mailbox_ttl_secs) as i64)],
    )
    .await?;
    tx.execute(
        "UPDATE mailboxes SET next_seq = next_seq + 1, msg_count = msg_count + 1, msg_bytes = msg_bytes + $2 WHERE mailbox_id = $1",
        &[&m, &(body.len() as i64)],
    )
    .await?;
    Ok(seq as u64)
}

async fn kp_count(tx: &Transaction<'_>, mailbox: &Id) -> Result<KeyPackageCount> {
    let m = mailbox.as_bytes().as_slice();
    let row = tx
        .query_opt(
            "SELECT last_resort IS NOT NULL FROM mailboxes WHERE mailbox_id = $1",
            &[&m],
        )
        .await?
        .ok_or_else(|| not_found("mailbox"))?;
    let available: i64 = tx
        .query_one(
            "SELECT COUNT(*) FROM key_packages WHERE mailbox_id = $1",
            &[&m],
        )
        .await?
        .get(0);
    Ok(KeyPackageCount {
        available: available as u64,
        has_last_resort: row.get(0),
    })
}

/// Run one operation in a transaction, re-running it when it lost a race.
macro_rules! in_tx {
    ($self:ident, |$tx:ident| $body:expr) => {{
        let mut attempt = 0;
        loop {
            let mut guard = $self.conn().await?;
            let client: &mut Client = &mut guard;
            let $tx = client.transaction().await?;
            let result: Result<_> = async { $body }.await;
            match result {
                Ok(v) => match $tx.commit().await {
                    Ok(()) => break Ok(v),
                    Err(e) => match StoreError::from(e) {
                        StoreError::Retry if attempt < MAX_RETRIES => {}
                        other => break Err(other),
                    },
                },
                Err(StoreError::Retry) if attempt < MAX_RETRIES => {
                    drop($tx);
                }
                Err(e) => break Err(e),
            }
            attempt += 1;
        }
    }};
}

#[async_trait]
impl Store for PgStore {
    fn write_batches(&self) -> (u64, u64) {
        let c = &self.batches.counted;
        (
            c[0].load(std::sync::atomic::Ordering::Relaxed),
            c[1].load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    async fn create_mailbox(
        &self,
        request_id: Id,
        mailbox: Id,
        owner_key: Vec<u8>,
        now: u64,
    ) -> Result<()> {
        in_tx!(self, |tx| {
            if prior::<()>(&tx, &request_id, scope::CREATE_MAILBOX, &mailbox)
                .await?
                .is_some()
            {
                return Ok(());
            }
            let m = mailbox.as_bytes().as_slice();
            if tx
                .query_opt("SELECT 1 FROM mailboxes WHERE mailbox_id = $1", &[&m])
                .await?
                .is_some()
            {
                return Err(StoreError::rejected(
                    ErrorCode::AlreadyExists,
                    "a mailbox with this id exists; choose a new random id",
                ));
            }
            tx.execute(
                "INSERT INTO mailboxes (mailbox_id, owner_key, created_at, last_seen_at) VALUES ($1, $2, $3, $3)",
                &[&m, &owner_key, &(now as i64)],
            )
            .await?;
            remember(&tx, &request_id, scope::CREATE_MAILBOX, &mailbox, &(), now).await
        })
    }

    async fn mailbox_owner(&self, mailbox: Id) -> Result<Option<Vec<u8>>> {
        let guard = self.conn().await?;
        let client: &Client = &guard;
        let row = client
            .query_opt(
                "SELECT owner_key FROM mailboxes WHERE mailbox_id = $1",
                &[&mailbox.as_bytes().as_slice()],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn use_nonce(&self, nonce: Id, expires_at: u64, mailbox: Id, now: u64) -> Result<bool> {
        let guard = self.conn().await?;
        let client: &Client = &guard;
        let n = client
            .execute(
                "INSERT INTO nonces (nonce, expires_at) VALUES ($1, $2) ON CONFLICT (nonce) DO NOTHING",
                &[&nonce.as_bytes().as_slice(), &(expires_at as i64)],
            )
            .await?;
        if n == 1 {
            client
                .execute(
                    "UPDATE mailboxes SET last_seen_at = $2 WHERE mailbox_id = $1",
                    &[&mailbox.as_bytes().as_slice(), &(now as i64)],
                )
                .await?;
        }
        Ok(n == 1)
    }

    async fn touch_mailbox(&self, mailbox: Id, now: u64) -> Result<()> {
        let guard = self.conn().await?;
        let client: &Client = &guard;
        client
            .execute(
                "UPDATE mailboxes SET last_seen_at = $2 WHERE mailbox_id = $1",
                &[&mailbox.as_bytes().as_slice(), &(now as i64)],
            )
            .await?;
        Ok(())
    }

    async fn drop_message(
        &self,
        request_id: Id,
        mailbox: Id,
        body: Vec<u8>,
        now: u64,
        limits: &Limits,
    ) -> Result<u64> {
        in_tx!(self, |tx| {
            if let Some(seq) = prior::<u64>(&tx, &request_id, scope::DROP, &mailbox).await? {
                return Ok(seq);
            }
            let seq = drop_into(&tx, &mailbox, &body, now, limits, false).await?;
            notify(&tx, Topic::Mailbox(mailbox)).await?;
            remember(&tx, &request_id, scope::DROP, &mailbox, &seq, now).await?;
            Ok(seq)
        })
    }

    async fn read_mailbox(
        &self,
        mailbox: Id,
        after: u64,
        limit: usize,
        now: u64,
    ) -> Result<Vec<MailboxMessage>> {
        let guard = self.conn().await?;
        let client: &Client = &guard;
        let rows = client
            .query(
                "SELECT seq, body, stored_at FROM mailbox_messages WHERE mailbox_id = $1 AND seq > $2 AND expires_at > $3 ORDER BY seq LIMIT $4",
                &[&mailbox.as_bytes().as_slice(), &(after as i64), &(now as i64), &(limit as i64)],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| MailboxMessage {
                seq: r.get::<_, i64>(0) as u64,
                body: Bytes(r.get(1)),
                stored_at: r.get::<_, i64>(2) as u64,
            })
            .collect())
    }

    async fn ack_messages(&self, request_id: Id, mailbox: Id, seqs: Vec<u64>) -> Result<u64> {
        in_tx!(self, |tx| {
            if let Some(n) = prior::<u64>(&tx, &request_id, scope::ACK, &mailbox).await? {
                return Ok(n);
            }
            let m = mailbox.as_bytes().as_slice();
            let seqs: Vec<i64> = seqs.iter().map(|s| *s as i64).collect();
            let row = tx
                .query_one(
                    "WITH d AS (DELETE FROM mailbox_messages WHERE mailbox_id = $1 AND seq = ANY($2) RETURNING length(body) AS len)
                     SELECT COUNT(*), COALESCE(SUM(len), 0)::BIGINT FROM d",
                    &[&m, &seqs],
                )
                .await?;
            let (deleted, bytes): (i64, i64) = (row.get(0), row.get(1));
            tx.execute(
                "UPDATE mailboxes SET msg_count = msg_count - $2, msg_bytes = msg_bytes - $3 WHERE mailbox_id = $1",
                &[&m, &deleted, &bytes],
            )
            .await?;
            remember(
                &tx,
                &request_id,
                scope::ACK,
                &mailbox,
                &(deleted as u64),
                now_secs(),
            )
            .await?;
            Ok(deleted as u64)
        })
    }

    async fn upload_key_packages(
        &self,
        request_id: Id,
        mailbox: Id,
        key_packages: Vec<Vec<u8>>,
        last_resort: Option<Vec<u8>>,
        max: u64,
    ) -> Result<KeyPackageCount> {
        in_tx!(self, |tx| {
            let m = mailbox.as_bytes().as_slice();
            if prior::<KeyPackageCount>(&tx, &request_id, scope::UPLOAD, &mailbox)
                .await?
                .is_some()
            {
                return kp_count(&tx, &mailbox).await;
            }
            tx.query_opt(
                "SELECT 1 FROM mailboxes WHERE mailbox_id = $1 FOR UPDATE",
                &[&m],
            )
            .await?
            .ok_or_else(|| not_found("mailbox"))?;
            let before = kp_count(&tx, &mailbox).await?;
            if before.available + key_packages.len() as u64 > max {
                return Err(StoreError::rejected(
                    ErrorCode::QuotaExceeded,
                    format!(
                        "a pool holds at most {max} KeyPackages; {} are stored",
                        before.available
                    ),
                ));
            }
            for kp in &key_packages {
                tx.execute(
                    "INSERT INTO key_packages (mailbox_id, data, uploaded_at) VALUES ($1, $2, $3)",
                    &[&m, kp, &(now_secs() as i64)],
                )
                .await?;
            }
            if let Some(lr) = &last_resort {
                tx.execute(
                    "UPDATE mailboxes SET last_resort = $2 WHERE mailbox_id = $1",
                    &[&m, lr],
                )
                .await?;
            }
            let after = kp_count(&tx, &mailbox).await?;
            remember(
                &tx,
                &request_id,
                scope::UPLOAD,
                &mailbox,
                &after,
                now_secs(),
            )
            .await?;
            Ok(after)
        })
    }

    async fn claim_key_package(&self, request_id: Id, mailbox: Id) -> Result<ClaimedKeyPackage> {
        in_tx!(self, |tx| {
            if let Some(c) =
                prior::<ClaimedKeyPackage>(&tx, &request_id, scope::CLAIM, &mailbox).await?
            {
                return Ok(c);
            }
            let m = mailbox.as_bytes().as_slice();
            // The mailbox row lock serializes claims on one pool across processes.
            let row = tx
                .query_opt(
                    "SELECT last_resort FROM mailboxes WHERE mailbox_id = $1 FOR UPDATE",
                    &[&m],
                )
                .await?
                .ok_or_else(|| not_found("mailbox"))?;
            let last_resort: Option<Vec<u8>> = row.get(0);
            let taken = tx
                .query_opt(
                    "DELETE FROM key_packages WHERE id = (SELECT id FROM key_packages WHERE mailbox_id = $1 ORDER BY id LIMIT 1) RETURNING data",
                    &[&m],
                )
                .await?
                .map(|r| r.get::<_, Vec<u8>>(0));
            let claimed = match (taken, last_resort) {
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
            remember(
                &tx,
                &request_id,
                scope::CLAIM,
                &mailbox,
                &claimed,
                now_secs(),
            )
            .await?;
            Ok(claimed)
        })
    }

    async fn key_package_count(&self, mailbox: Id) -> Result<KeyPackageCount> {
        in_tx!(self, |tx| kp_count(&tx, &mailbox).await)
    }

    async fn create_group(
        &self,
        request_id: Id,
        group: Id,
        epoch: u64,
        token_hash: [u8; 32],
        now: u64,
    ) -> Result<()> {
        in_tx!(self, |tx| {
            if prior::<()>(&tx, &request_id, scope::CREATE_GROUP, &group)
                .await?
                .is_some()
            {
                return Ok(());
            }
            let g = group.as_bytes().as_slice();
            if tx
                .query_opt("SELECT 1 FROM groups WHERE group_id = $1", &[&g])
                .await?
                .is_some()
            {
                return Err(StoreError::rejected(
                    ErrorCode::AlreadyExists,
                    "a group with this id exists; choose a new random id",
                ));
            }
            tx.execute(
                "INSERT INTO groups (group_id, current_epoch, created_at, last_append_at) VALUES ($1, $2, $3, $3)",
                &[&g, &(epoch as i64), &(now as i64)],
            )
            .await?;
            tx.execute(
                "INSERT INTO group_epochs (group_id, epoch, token_hash, created_at) VALUES ($1, $2, $3, $4)",
                &[&g, &(epoch as i64), &token_hash.as_slice(), &(now as i64)],
            )
            .await?;
            remember(&tx, &request_id, scope::CREATE_GROUP, &group, &(), now).await
        })
    }

    async fn epoch_token(&self, group: Id, epoch: u64) -> Result<Option<([u8; 32], u64)>> {
        let guard = self.conn().await?;
        let client: &Client = &guard;
        let row = client
            .query_opt(
                "SELECT e.token_hash, g.current_epoch FROM group_epochs e JOIN groups g ON g.group_id = e.group_id
                 WHERE e.group_id = $1 AND e.epoch = $2",
                &[&group.as_bytes().as_slice(), &(epoch as i64)],
            )
            .await?;
        row.map(|r| {
            let h: Vec<u8> = r.get(0);
            let cur: i64 = r.get(1);
            <[u8; 32]>::try_from(h.as_slice())
                .map(|h| (h, cur as u64))
                .map_err(|_| StoreError::Backend("corrupt token hash".into()))
        })
        .transpose()
    }

    async fn token_epoch(&self, group: Id, token_hash: [u8; 32]) -> Result<Option<u64>> {
        let guard = self.conn().await?;
        let client: &Client = &guard;
        let row = client
            .query_opt(
                "SELECT epoch FROM group_epochs WHERE group_id = $1 AND token_hash = $2 LIMIT 1",
                &[&group.as_bytes().as_slice(), &token_hash.as_slice()],
            )
            .await?;
        Ok(row.map(|r| r.get::<_, i64>(0) as u64))
    }

    async fn append(&self, req: AppendRequest, now: u64, limits: &Limits) -> Result<Appended> {
        if req.welcomes.is_empty() {
            return self.append_batched(req, now, limits).await;
        }
        in_tx!(self, |tx| {
            let g = req.group_id.as_bytes().as_slice();
            // The group row lock makes the epoch compare-and-set atomic across processes.
            let row = tx
                .query_opt(
                    "SELECT current_epoch, next_seq, bytes FROM groups WHERE group_id = $1 FOR UPDATE",
                    &[&g],
                )
                .await?
                .ok_or_else(|| not_found("group"))?;
            let (current, seq, bytes): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
            let current = current as u64;
            // Who may append is checked before anything else, including the retry record.
            let stored = tx
                .query_opt(
                    "SELECT token_hash FROM group_epochs WHERE group_id = $1 AND epoch = $2",
                    &[&g, &(req.epoch as i64)],
                )
                .await?
                .map(|r| r.get::<_, Vec<u8>>(0));
            if stored.as_deref() != Some(req.token_hash.as_slice()) {
                return Err(StoreError::rejected(
                    ErrorCode::BadToken,
                    "the epoch token does not match this group and epoch",
                ));
            }
            // The retry record is the entry itself (one row per append).
            let prior = tx
                .query_opt(
                    "SELECT seq FROM entries WHERE group_id = $1 AND request_id = $2",
                    &[&g, &req.request_id.as_bytes().as_slice()],
                )
                .await?
                .map(|r| r.get::<_, i64>(0));
            if let Some(seq) = prior {
                return Ok(Appended {
                    seq: seq as u64,
                    welcomed: Vec::new(),
                    undelivered: Vec::new(),
                    fresh: false,
                });
            }
            if req.epoch != current {
                let code = match req.kind {
                    EntryKind::Commit => ErrorCode::EpochConflict,
                    EntryKind::Application => ErrorCode::StaleEpoch,
                };
                return Err(StoreError::Rejected {
                    code,
                    message: format!(
                        "the group is at epoch {current}, not {}; fetch the log, process it and retry",
                        req.epoch
                    ),
                    current_epoch: Some(current),
                });
            }
            if bytes as u64 + req.body.len() as u64 > limits.max_group_bytes {
                return Err(StoreError::rejected(
                    ErrorCode::StorageFull,
                    "this group's log has reached the relay's storage limit; wait for old entries to expire or move the group",
                ));
            }
            let next_seq = (seq as u64)
                .checked_add(1)
                .filter(|n| *n <= MAX_COUNTER)
                .ok_or_else(epoch_exhausted)?;
            tx.execute(
                "INSERT INTO entries (group_id, seq, epoch, kind, body, stored_at, request_id) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[&g, &seq, &(req.epoch as i64), &(req.kind.as_i64() as i16), &req.body, &(now as i64), &req.request_id.as_bytes().as_slice()],
            )
            .await?;
            let (mut welcomed, mut undelivered) = (Vec::new(), Vec::new());
            let len = req.body.len() as i64;
            if req.kind == EntryKind::Commit {
                let next_hash = req.next_token_hash.ok_or_else(|| {
                    StoreError::rejected(
                        ErrorCode::BadRequest,
                        "a commit must carry next_token_hash",
                    )
                })?;
                let next = current
                    .checked_add(1)
                    .filter(|n| *n <= MAX_COUNTER)
                    .ok_or_else(epoch_exhausted)?;
                tx.execute(
                    "INSERT INTO group_epochs (group_id, epoch, token_hash, created_at) VALUES ($1, $2, $3, $4)",
                    &[&g, &(next as i64), &next_hash.as_slice(), &(now as i64)],
                )
                .await?;
                tx.execute(
                    "UPDATE groups SET current_epoch = $2, next_seq = $3, bytes = bytes + $4, last_append_at = $5 WHERE group_id = $1",
                    &[&g, &(next as i64), &(next_seq as i64), &len, &(now as i64)],
                )
                .await?;
                // Mailbox rows are locked in one fixed order (by id), so two commits that
                // welcome the same people cannot deadlock.
                let mut welcomes: Vec<_> = req.welcomes.iter().collect();
                welcomes.sort_by_key(|w| w.mailbox_id);
                for w in welcomes {
                    tx.batch_execute("SAVEPOINT welcome").await?;
                    match drop_into(&tx, &w.mailbox_id, &w.body.0, now, limits, true).await {
                        Ok(_) => {
                            tx.batch_execute("RELEASE SAVEPOINT welcome").await?;
                            welcomed.push(w.mailbox_id);
                        }
                        Err(e) if welcome_skippable(&e) => {
                            tx.batch_execute("ROLLBACK TO SAVEPOINT welcome").await?;
                            undelivered.push(w.mailbox_id);
                        }
                        Err(e) => return Err(e),
                    }
                }
            } else {
                tx.execute(
                    "UPDATE groups SET next_seq = $2, bytes = bytes + $3, last_append_at = $4 WHERE group_id = $1",
                    &[&g, &(next_seq as i64), &len, &(now as i64)],
                )
                .await?;
            }
            let mut topics = vec![Topic::Group(req.group_id)];
            topics.extend(welcomed.iter().map(|m| Topic::Mailbox(*m)));
            notify_all(&tx, &topics).await?;
            Ok(Appended {
                seq: seq as u64,
                welcomed,
                undelivered,
                fresh: true,
            })
        })
    }

    async fn read_entries(
        &self,
        group: Id,
        epoch: u64,
        after: u64,
        limit: usize,
    ) -> Result<Entries> {
        let guard = self.conn().await?;
        let client: &Client = &guard;
        let g = group.as_bytes().as_slice();
        // Current epoch first: if it is past `epoch`, every entry of `epoch` is committed.
        let row = client
            .query_opt(
                "SELECT current_epoch, next_seq FROM groups WHERE group_id = $1",
                &[&g],
            )
            .await?
            .ok_or_else(|| not_found("group"))?;
        let (current, next_seq): (i64, i64) = (row.get(0), row.get(1));
        let rows = client
            .query(
                "SELECT seq, epoch, kind, body FROM entries WHERE group_id = $1 AND epoch = $2 AND seq > $3 ORDER BY seq LIMIT $4",
                &[&g, &(epoch as i64), &(after as i64), &(limit as i64)],
            )
            .await?;
        let mut entries = Vec::with_capacity(rows.len());
        for r in rows {
            let kind = EntryKind::from_i64(i64::from(r.get::<_, i16>(2)))
                .ok_or_else(|| StoreError::Backend("corrupt entry kind".into()))?;
            entries.push(Entry {
                seq: r.get::<_, i64>(0) as u64,
                epoch: r.get::<_, i64>(1) as u64,
                kind,
                body: Bytes(r.get(3)),
            });
        }
        let next_token_hash = if current as u64 > epoch {
            client
                .query_opt(
                    "SELECT token_hash FROM group_epochs WHERE group_id = $1 AND epoch = $2",
                    &[&g, &((epoch + 1) as i64)],
                )
                .await?
                .map(|r| Bytes(r.get(0)))
        } else {
            None
        };
        Ok(Entries {
            entries,
            current_epoch: current as u64,
            next_token_hash,
            last_seq: (next_seq as u64).saturating_sub(1),
        })
    }

    async fn create_blob(
        &self,
        blob: Id,
        token_hash: [u8; 32],
        length: u64,
        source: [u8; 32],
        now: u64,
        limits: &Limits,
    ) -> Result<()> {
        let quota = limits.blob_quota_bytes;
        let expires = now.saturating_add(limits.blob_ttl_secs).min(MAX_COUNTER) as i64;
        let now = now as i64;
        in_tx!(self, |tx| {
            // One source's creations in turn, so concurrent ones cannot both fit the quota.
            let key = i64::from_be_bytes(source[..8].try_into().unwrap_or([0; 8]));
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&key])
                .await?;
            let held: i64 = tx
                .query_one(
                    "SELECT COALESCE(SUM(length), 0)::BIGINT FROM blobs WHERE source = $1 AND expires_at > $2",
                    &[&source.as_slice(), &now],
                )
                .await?
                .get(0);
            if (held.max(0) as u64).saturating_add(length) > quota {
                return Err(super::blob_quota_exceeded());
            }
            tx.execute(
                "INSERT INTO blobs (blob_id, token_hash, length, source, created_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    &blob.as_bytes().as_slice(),
                    &token_hash.as_slice(),
                    &(length as i64),
                    &source.as_slice(),
                    &now,
                    &expires,
                ],
            )
            .await?;
            Ok(())
        })
    }

    async fn blob(&self, blob: Id, now: u64) -> Result<Option<BlobRecord>> {
        let guard = self.conn().await?;
        let client: &Client = &guard;
        let row = client
            .query_opt(
                "SELECT token_hash, length, offset_bytes, expires_at FROM blobs
                 WHERE blob_id = $1 AND expires_at > $2",
                &[&blob.as_bytes().as_slice(), &(now as i64)],
            )
            .await?;
        row.map(|r| {
            Ok(BlobRecord {
                token_hash: hash32(r.get::<_, Vec<u8>>(0))?,
                length: r.get::<_, i64>(1) as u64,
                offset: r.get::<_, i64>(2) as u64,
                expires_at: r.get::<_, i64>(3) as u64,
            })
        })
        .transpose()
    }

    async fn advance_blob(&self, blob: Id, from: u64, to: u64) -> Result<bool> {
        let guard = self.conn().await?;
        let client: &Client = &guard;
        let n = client
            .execute(
                "UPDATE blobs SET offset_bytes = $3 WHERE blob_id = $1 AND offset_bytes = $2 AND $3 <= length",
                &[&blob.as_bytes().as_slice(), &(from as i64), &(to as i64)],
            )
            .await?;
        Ok(n == 1)
    }

    async fn expire_blobs(&self, now: u64) -> Result<Vec<Id>> {
        let guard = self.conn().await?;
        let client: &Client = &guard;
        let rows = client
            .query(
                "DELETE FROM blobs WHERE expires_at <= $1 RETURNING blob_id",
                &[&(now as i64)],
            )
            .await?;
        Ok(rows
            .iter()
            .filter_map(|r| Id::from_slice(r.get::<_, &[u8]>(0)).ok())
            .collect())
    }

    async fn sweep(&self, now: u64, limits: &Limits) -> Result<Swept> {
        let cutoff = now.saturating_sub(limits.retention_secs) as i64;
        let idle = now.saturating_sub(limits.mailbox_idle_secs) as i64;
        let group_idle = now.saturating_sub(limits.group_idle_secs) as i64;
        let kp_cutoff = now.saturating_sub(limits.key_package_ttl_secs) as i64;
        let claim_cutoff = now.saturating_sub(CLAIM_RECORD_SECS) as i64;
        let now = now as i64;
        in_tx!(self, |tx| {
            let expired = tx
                .query(
                    "WITH d AS (DELETE FROM mailbox_messages WHERE expires_at <= $1 RETURNING mailbox_id, length(body) AS len)
                     SELECT mailbox_id, COUNT(*), COALESCE(SUM(len), 0)::BIGINT FROM d GROUP BY mailbox_id ORDER BY mailbox_id",
                    &[&now],
                )
                .await?;
            let mut mailbox_messages = 0u64;
            for r in &expired {
                let (m, n, b): (Vec<u8>, i64, i64) = (r.get(0), r.get(1), r.get(2));
                mailbox_messages += n as u64;
                tx.execute("UPDATE mailboxes SET msg_count = msg_count - $2, msg_bytes = msg_bytes - $3 WHERE mailbox_id = $1", &[&m, &n, &b])
                    .await?;
            }
            let gone = tx
                .query(
                    "WITH d AS (DELETE FROM entries WHERE stored_at <= $1 RETURNING group_id, length(body) AS len)
                     SELECT group_id, COUNT(*), COALESCE(SUM(len), 0)::BIGINT FROM d GROUP BY group_id ORDER BY group_id",
                    &[&cutoff],
                )
                .await?;
            let mut entries = 0u64;
            for r in &gone {
                let (g, n, b): (Vec<u8>, i64, i64) = (r.get(0), r.get(1), r.get(2));
                entries += n as u64;
                tx.execute(
                    "UPDATE groups SET bytes = bytes - $2 WHERE group_id = $1",
                    &[&g, &b],
                )
                .await?;
            }
            tx.execute(
                "DELETE FROM group_epochs ge WHERE created_at <= $1
                   AND epoch < (SELECT current_epoch FROM groups g WHERE g.group_id = ge.group_id)
                   AND NOT EXISTS (SELECT 1 FROM entries e WHERE e.group_id = ge.group_id AND e.epoch = ge.epoch)",
                &[&cutoff],
            )
            .await?;
            tx.execute(
                "DELETE FROM group_epochs WHERE group_id IN (SELECT group_id FROM groups WHERE last_append_at <= $1)",
                &[&group_idle],
            )
            .await?;
            let groups = tx
                .execute(
                    "DELETE FROM groups WHERE last_append_at <= $1",
                    &[&group_idle],
                )
                .await?;
            mailbox_messages += tx
                .execute(
                    "DELETE FROM mailbox_messages WHERE mailbox_id IN (SELECT mailbox_id FROM mailboxes WHERE last_seen_at <= $1)",
                    &[&idle],
                )
                .await?;
            let mut key_packages = tx
                .execute(
                    "DELETE FROM key_packages WHERE mailbox_id IN (SELECT mailbox_id FROM mailboxes WHERE last_seen_at <= $1)",
                    &[&idle],
                )
                .await?;
            let mailboxes = tx
                .execute("DELETE FROM mailboxes WHERE last_seen_at <= $1", &[&idle])
                .await?;
            key_packages += tx
                .execute(
                    "DELETE FROM key_packages WHERE uploaded_at <= $1",
                    &[&kp_cutoff],
                )
                .await?;
            tx.execute("DELETE FROM nonces WHERE expires_at <= $1", &[&now])
                .await?;
            tx.execute("DELETE FROM requests WHERE stored_at <= $1", &[&cutoff])
                .await?;
            tx.execute(
                "DELETE FROM requests WHERE scope = $1 AND stored_at <= $2",
                &[&scope::CLAIM, &claim_cutoff],
            )
            .await?;
            let stored: i64 = tx
                .query_one(
                    "SELECT ((SELECT COALESCE(SUM(bytes), 0) FROM groups) + (SELECT COALESCE(SUM(msg_bytes), 0) FROM mailboxes)
                              + (SELECT COALESCE(SUM(length), 0) FROM blobs))::BIGINT",
                    &[],
                )
                .await?
                .get(0);
            Ok(Swept {
                mailbox_messages,
                entries,
                mailboxes,
                groups,
                key_packages,
                stored_bytes: stored.max(0) as u64,
            })
        })
    }

    fn start_wakeups(&self, notifier: Notifier) {
        self.start_listener(notifier);
    }
}
