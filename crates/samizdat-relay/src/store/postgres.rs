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
    Bytes, ClaimedKeyPackage, Entries, Entry, EntryKind, Id, KeyPackageCount, Limits,
    MailboxMessage,
};
use tokio_postgres::error::SqlState;
use tokio_postgres::{AsyncMessage, Client, NoTls, Transaction};

use super::rules::{self, GroupRow, MailboxCounters, NewBlob, Tables, append_answer, not_found};
use super::{
    AppendRequest, Appended, BlobQuota, BlobRecord, CLAIM_RECORD_SECS, ChannelState, MAX_COUNTER,
    NewRecord, Result, Store, StoreError, Swept, channels, hash32, now_secs, scope,
};
use crate::notify::{Notifier, Topic};

/// The schema, version by version, named as refinery expects (`V{version}__{name}`).
const MIGRATIONS: &[(&str, &str)] = &[
    (
        "V1__init",
        include_str!("../../migrations/postgres/0001_init.sql"),
    ),
    (
        "V2__bounds",
        include_str!("../../migrations/postgres/0002_bounds.sql"),
    ),
    (
        "V3__blobs",
        include_str!("../../migrations/postgres/0003_blobs.sql"),
    ),
    (
        "V4__append_function",
        include_str!("../../migrations/postgres/0004_append_function.sql"),
    ),
    (
        "V5__append_batch",
        include_str!("../../migrations/postgres/0005_append_batch.sql"),
    ),
    (
        "V6__channels",
        include_str!("../../migrations/postgres/0006_channels.sql"),
    ),
];
/// refinery's history table (its default name).
const HISTORY: &str = "refinery_schema_history";
/// The table of the hand-written runner that refinery replaced (versions it applied).
const OLD_HISTORY: &str = "samizdat_migrations";
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
    /// This process's mark on its NOTIFY payloads (`o:<id>`): its listener skips them, since
    /// the HTTP layer already woke this process's subscribers (and pushed fresh entries
    /// without a store read). Other processes act on them as before.
    origin: Arc<str>,
}

/// Appends without Welcomes waiting for their group, per group: the first one to arrive
/// starts a task that stores whatever has gathered in one `samizdat_append_batch` call and
/// goes on until the queue is empty (group commit per group; see migration 5).
struct Batches {
    pool: deadpool_postgres::Pool,
    origin: Arc<str>,
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
        let notify = format!("{} {}", self.origin, topic_payload(Topic::Group(group)));
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
        let origin = crate::auth::random_id()
            .ok_or_else(|| StoreError::Backend("the random number generator failed".into()))?;
        let origin: Arc<str> = format!("o:{origin}").into();
        Ok(PgStore {
            url: url.to_string(),
            batches: Arc::new(Batches {
                pool: pool.clone(),
                origin: origin.clone(),
                counted: Default::default(),
                queues: std::sync::Mutex::new(HashMap::new()),
            }),
            pool,
            origin,
        })
    }

    /// Bring the schema up to date with refinery (each migration in its own transaction,
    /// recorded in `refinery_schema_history`; a database ahead of this binary or with an
    /// altered migration is refused). A database migrated by the earlier hand-written runner
    /// has its history moved into refinery's table first, so nothing is applied twice.
    async fn migrate(client: &mut Client) -> Result<()> {
        let migrations = MIGRATIONS
            .iter()
            .map(|(name, sql)| refinery_core::Migration::unapplied(name, sql))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| StoreError::Backend(format!("bad migration: {e}")))?;
        Self::adopt_old_history(client, &migrations).await?;
        refinery_core::Runner::new(&migrations)
            .run_async(client)
            .await
            .map_err(|e| StoreError::Backend(format!("cannot migrate the relay database: {e}")))?;
        Ok(())
    }

    /// Move the versions recorded by the earlier runner into refinery's table (same DDL as
    /// refinery's), in one transaction, and drop the old table.
    async fn adopt_old_history(
        client: &mut Client,
        migrations: &[refinery_core::Migration],
    ) -> Result<()> {
        let row = client
            .query_one(
                "SELECT to_regclass($1) IS NOT NULL, to_regclass($2) IS NOT NULL",
                &[&OLD_HISTORY, &HISTORY],
            )
            .await?;
        let (old, new): (bool, bool) = (row.get(0), row.get(1));
        if !old || new {
            return Ok(());
        }
        let tx = client.transaction().await?;
        tx.batch_execute(&format!(
            "CREATE TABLE {HISTORY} (version INT4 PRIMARY KEY, name VARCHAR(255), applied_on VARCHAR(255), checksum VARCHAR(255))"
        ))
        .await?;
        let applied: Vec<i64> = tx
            .query(&format!("SELECT version FROM {OLD_HISTORY}"), &[])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for m in migrations {
            if applied.contains(&i64::from(m.version())) {
                tx.execute(
                    &format!(
                        "INSERT INTO {HISTORY} (version, name, applied_on, checksum)
                         VALUES ($1, $2, to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), $3)"
                    ),
                    &[&m.version(), &m.name(), &m.checksum().to_string()],
                )
                .await?;
            }
        }
        tx.batch_execute(&format!("DROP TABLE {OLD_HISTORY}"))
            .await?;
        tx.commit().await?;
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
        let origin = self.origin.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = listen_once(&url, &origin, &notifier).await {
                    tracing::warn!(error = %e, "PostgreSQL listener lost; reconnecting");
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
    }
}

async fn listen_once(url: &str, origin: &str, notifier: &Notifier) -> Result<()> {
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
            r = &mut listen, if !listening => {
                r?;
                listening = true;
                // What other processes stored while no one listened (a lost connection, or
                // before the first LISTEN) was announced to no one here: everyone reads.
                notifier.all();
            }
            msg = stream.next() => match msg {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    // One payload may carry several topics, separated by spaces, after the
                    // sending process's mark; our own were delivered when they happened.
                    let mut words = n.payload().split(' ').peekable();
                    if words.next_if(|w| w.starts_with("o:")).is_some_and(|o| o == origin) {
                        continue;
                    }
                    for topic in words.filter_map(parse_topic) {
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
        Topic::Channel(id) => format!("c:{id}"),
    }
}

fn parse_topic(s: &str) -> Option<Topic> {
    let (kind, id) = s.split_once(':')?;
    let id: Id = id.parse().ok()?;
    match kind {
        "m" => Some(Topic::Mailbox(id)),
        "g" => Some(Topic::Group(id)),
        "c" => Some(Topic::Channel(id)),
        _ => None,
    }
}

/// Wake-ups for several topics in as few NOTIFYs as the payload limit allows (one for any
/// ordinary commit), instead of one per mailbox.
async fn notify_all(tx: &Transaction<'_>, origin: &str, topics: &[Topic]) -> Result<()> {
    let mut payload = String::from(origin);
    for t in topics {
        let p = topic_payload(*t);
        if payload.len() > origin.len() && payload.len() + 1 + p.len() > MAX_NOTIFY_PAYLOAD {
            tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])
                .await?;
            payload.truncate(origin.len());
        }
        payload.push(' ');
        payload.push_str(&p);
    }
    if payload.len() > origin.len() {
        tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])
            .await?;
    }
    Ok(())
}

/// PostgreSQL's [`Tables`]: the statements of the rules inside one transaction. Rows the
/// rules update are read `FOR UPDATE`, so concurrent transactions (in any relay process) on
/// the same mailbox or group run in turn.
struct PgTables<'a, 'c>(&'a Transaction<'c>, &'a str);

impl Tables for PgTables<'_, '_> {
    async fn prior(&mut self, scope: &str, target: &Id, request: &Id) -> Result<Option<String>> {
        Ok(self
            .0
            .query_opt(
                "SELECT result FROM requests WHERE scope = $1 AND target = $2 AND request_id = $3",
                &[
                    &scope,
                    &target.as_bytes().as_slice(),
                    &request.as_bytes().as_slice(),
                ],
            )
            .await?
            .map(|r| r.get(0)))
    }

    async fn claims(&mut self, mailbox: &Id, since: u64) -> Result<Vec<(Id, String)>> {
        let rows = self
            .0
            .query(
                "SELECT request_id, result FROM requests WHERE scope = $1 AND target = $2 AND stored_at > $3",
                &[&scope::CLAIM, &mailbox.as_bytes().as_slice(), &(since as i64)],
            )
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|r| {
                let id: Vec<u8> = r.get(0);
                Some((Id::from_slice(&id).ok()?, r.get::<_, String>(1)))
            })
            .collect())
    }

    async fn remember(
        &mut self,
        scope: &str,
        target: &Id,
        request: &Id,
        answer: String,
        now: u64,
    ) -> Result<()> {
        self.0
            .execute(
                "INSERT INTO requests (scope, target, request_id, result, stored_at) VALUES ($1, $2, $3, $4, $5)",
                &[
                    &scope,
                    &target.as_bytes().as_slice(),
                    &request.as_bytes().as_slice(),
                    &answer,
                    &(now as i64),
                ],
            )
            .await?;
        Ok(())
    }

    async fn mailbox_exists(&mut self, mailbox: &Id) -> Result<bool> {
        Ok(self
            .0
            .query_opt(
                "SELECT 1 FROM mailboxes WHERE mailbox_id = $1",
                &[&mailbox.as_bytes().as_slice()],
            )
            .await?
            .is_some())
    }

    async fn insert_mailbox(&mut self, mailbox: &Id, owner_key: &[u8], now: u64) -> Result<()> {
        self.0
            .execute(
                "INSERT INTO mailboxes (mailbox_id, owner_key, created_at, last_seen_at) VALUES ($1, $2, $3, $3)",
                &[&mailbox.as_bytes().as_slice(), &owner_key, &(now as i64)],
            )
            .await?;
        Ok(())
    }

    async fn mailbox_for_update(&mut self, mailbox: &Id) -> Result<Option<MailboxCounters>> {
        Ok(self
            .0
            .query_opt(
                "SELECT next_seq, msg_count, msg_bytes FROM mailboxes WHERE mailbox_id = $1 FOR UPDATE",
                &[&mailbox.as_bytes().as_slice()],
            )
            .await?
            .map(|r| MailboxCounters {
                next_seq: r.get::<_, i64>(0) as u64,
                messages: r.get::<_, i64>(1) as u64,
                bytes: r.get::<_, i64>(2) as u64,
            }))
    }

    async fn insert_message(
        &mut self,
        mailbox: &Id,
        seq: u64,
        body: &[u8],
        now: u64,
        expires_at: u64,
    ) -> Result<()> {
        let m = mailbox.as_bytes().as_slice();
        self.0
            .execute(
                "INSERT INTO mailbox_messages (mailbox_id, seq, body, stored_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
                &[&m, &(seq as i64), &body, &(now as i64), &(expires_at as i64)],
            )
            .await?;
        self.0
            .execute(
                "UPDATE mailboxes SET next_seq = $2, msg_count = msg_count + 1, msg_bytes = msg_bytes + $3 WHERE mailbox_id = $1",
                &[&m, &(seq as i64 + 1), &(body.len() as i64)],
            )
            .await?;
        Ok(())
    }

    async fn delete_messages(&mut self, mailbox: &Id, seqs: &[u64]) -> Result<(u64, u64)> {
        let m = mailbox.as_bytes().as_slice();
        let seqs: Vec<i64> = seqs.iter().map(|s| *s as i64).collect();
        let row = self
            .0
            .query_one(
                "WITH d AS (DELETE FROM mailbox_messages WHERE mailbox_id = $1 AND seq = ANY($2) RETURNING length(body) AS len)
                 SELECT COUNT(*), COALESCE(SUM(len), 0)::BIGINT FROM d",
                &[&m, &seqs],
            )
            .await?;
        let (deleted, bytes): (i64, i64) = (row.get(0), row.get(1));
        self.0
            .execute(
                "UPDATE mailboxes SET msg_count = msg_count - $2, msg_bytes = msg_bytes - $3 WHERE mailbox_id = $1",
                &[&m, &deleted, &bytes],
            )
            .await?;
        Ok((deleted as u64, bytes as u64))
    }

    async fn last_resort_for_update(&mut self, mailbox: &Id) -> Result<Option<Option<Vec<u8>>>> {
        Ok(self
            .0
            .query_opt(
                "SELECT last_resort FROM mailboxes WHERE mailbox_id = $1 FOR UPDATE",
                &[&mailbox.as_bytes().as_slice()],
            )
            .await?
            .map(|r| r.get(0)))
    }

    async fn has_last_resort(&mut self, mailbox: &Id) -> Result<Option<bool>> {
        Ok(self
            .0
            .query_opt(
                "SELECT last_resort IS NOT NULL FROM mailboxes WHERE mailbox_id = $1",
                &[&mailbox.as_bytes().as_slice()],
            )
            .await?
            .map(|r| r.get(0)))
    }

    async fn set_last_resort(&mut self, mailbox: &Id, key_package: &[u8]) -> Result<()> {
        self.0
            .execute(
                "UPDATE mailboxes SET last_resort = $2 WHERE mailbox_id = $1",
                &[&mailbox.as_bytes().as_slice(), &key_package],
            )
            .await?;
        Ok(())
    }

    async fn pool_size(&mut self, mailbox: &Id) -> Result<u64> {
        let n: i64 = self
            .0
            .query_one(
                "SELECT COUNT(*) FROM key_packages WHERE mailbox_id = $1",
                &[&mailbox.as_bytes().as_slice()],
            )
            .await?
            .get(0);
        Ok(n.max(0) as u64)
    }

    async fn insert_key_package(
        &mut self,
        mailbox: &Id,
        key_package: &[u8],
        now: u64,
    ) -> Result<()> {
        self.0
            .execute(
                "INSERT INTO key_packages (mailbox_id, data, uploaded_at) VALUES ($1, $2, $3)",
                &[&mailbox.as_bytes().as_slice(), &key_package, &(now as i64)],
            )
            .await?;
        Ok(())
    }

    async fn take_key_package(&mut self, mailbox: &Id) -> Result<Option<Vec<u8>>> {
        Ok(self
            .0
            .query_opt(
                "DELETE FROM key_packages WHERE id = (SELECT id FROM key_packages WHERE mailbox_id = $1 ORDER BY id LIMIT 1) RETURNING data",
                &[&mailbox.as_bytes().as_slice()],
            )
            .await?
            .map(|r| r.get(0)))
    }

    async fn group_exists(&mut self, group: &Id) -> Result<bool> {
        Ok(self
            .0
            .query_opt(
                "SELECT 1 FROM groups WHERE group_id = $1",
                &[&group.as_bytes().as_slice()],
            )
            .await?
            .is_some())
    }

    async fn insert_group(&mut self, group: &Id, epoch: u64, now: u64) -> Result<()> {
        self.0
            .execute(
                "INSERT INTO groups (group_id, current_epoch, created_at, last_append_at) VALUES ($1, $2, $3, $3)",
                &[&group.as_bytes().as_slice(), &(epoch as i64), &(now as i64)],
            )
            .await?;
        Ok(())
    }

    async fn group_for_update(&mut self, group: &Id) -> Result<Option<GroupRow>> {
        Ok(self
            .0
            .query_opt(
                "SELECT current_epoch, next_seq, bytes FROM groups WHERE group_id = $1 FOR UPDATE",
                &[&group.as_bytes().as_slice()],
            )
            .await?
            .map(|r| GroupRow {
                current_epoch: r.get::<_, i64>(0) as u64,
                next_seq: r.get::<_, i64>(1) as u64,
                bytes: r.get::<_, i64>(2) as u64,
            }))
    }

    async fn insert_epoch(
        &mut self,
        group: &Id,
        epoch: u64,
        token_hash: &[u8; 32],
        now: u64,
    ) -> Result<()> {
        self.0
            .execute(
                "INSERT INTO group_epochs (group_id, epoch, token_hash, created_at) VALUES ($1, $2, $3, $4)",
                &[
                    &group.as_bytes().as_slice(),
                    &(epoch as i64),
                    &token_hash.as_slice(),
                    &(now as i64),
                ],
            )
            .await?;
        Ok(())
    }

    async fn epoch_token_hash(&mut self, group: &Id, epoch: u64) -> Result<Option<Vec<u8>>> {
        Ok(self
            .0
            .query_opt(
                "SELECT token_hash FROM group_epochs WHERE group_id = $1 AND epoch = $2",
                &[&group.as_bytes().as_slice(), &(epoch as i64)],
            )
            .await?
            .map(|r| r.get(0)))
    }

    async fn entry_of_request(&mut self, group: &Id, request: &Id) -> Result<Option<u64>> {
        Ok(self
            .0
            .query_opt(
                "SELECT seq FROM entries WHERE group_id = $1 AND request_id = $2",
                &[&group.as_bytes().as_slice(), &request.as_bytes().as_slice()],
            )
            .await?
            .map(|r| r.get::<_, i64>(0) as u64))
    }

    async fn insert_entry(&mut self, seq: u64, req: &AppendRequest, now: u64) -> Result<()> {
        self.0
            .execute(
                "INSERT INTO entries (group_id, seq, epoch, kind, body, stored_at, request_id) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &req.group_id.as_bytes().as_slice(),
                    &(seq as i64),
                    &(req.epoch as i64),
                    &(req.kind.as_i64() as i16),
                    &req.body,
                    &(now as i64),
                    &req.request_id.as_bytes().as_slice(),
                ],
            )
            .await?;
        Ok(())
    }

    async fn update_group(
        &mut self,
        group: &Id,
        current_epoch: u64,
        next_seq: u64,
        added_bytes: u64,
        now: u64,
    ) -> Result<()> {
        self.0
            .execute(
                "UPDATE groups SET current_epoch = $2, next_seq = $3, bytes = bytes + $4, last_append_at = $5 WHERE group_id = $1",
                &[
                    &group.as_bytes().as_slice(),
                    &(current_epoch as i64),
                    &(next_seq as i64),
                    &(added_bytes as i64),
                    &(now as i64),
                ],
            )
            .await?;
        Ok(())
    }

    async fn savepoint(&mut self) -> Result<()> {
        self.0.batch_execute("SAVEPOINT rule").await?;
        Ok(())
    }

    async fn rollback_to_savepoint(&mut self) -> Result<()> {
        self.0
            .batch_execute("ROLLBACK TO SAVEPOINT rule; RELEASE SAVEPOINT rule")
            .await?;
        Ok(())
    }

    async fn release_savepoint(&mut self) -> Result<()> {
        self.0.batch_execute("RELEASE SAVEPOINT rule").await?;
        Ok(())
    }

    async fn wake(&mut self, topics: &[Topic]) -> Result<()> {
        notify_all(self.0, self.1, topics).await
    }

    async fn lock_blob_source(&mut self, source: &[u8; 32]) -> Result<()> {
        let key = i64::from_be_bytes(source[..8].try_into().unwrap_or([0; 8]));
        self.0
            .execute("SELECT pg_advisory_xact_lock($1)", &[&key])
            .await?;
        Ok(())
    }

    async fn blob_bytes_held(&mut self, source: &[u8; 32], now: u64) -> Result<u64> {
        let held: i64 = self
            .0
            .query_one(
                "SELECT COALESCE(SUM(offset_bytes), 0)::BIGINT FROM blobs WHERE source = $1 AND expires_at > $2",
                &[&source.as_slice(), &(now as i64)],
            )
            .await?
            .get(0);
        Ok(held.max(0) as u64)
    }

    async fn insert_blob(&mut self, blob: &NewBlob) -> Result<()> {
        self.0
            .execute(
                "INSERT INTO blobs (blob_id, token_hash, length, source, created_at, expires_at, for_channel)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &blob.blob.as_bytes().as_slice(),
                    &blob.token_hash.as_slice(),
                    &(blob.length as i64),
                    &blob.source.as_slice(),
                    &(blob.now as i64),
                    &(blob.expires_at as i64),
                    &blob.for_channel,
                ],
            )
            .await?;
        Ok(())
    }
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
            rules::create_mailbox(
                &mut PgTables(&tx, &self.origin),
                request_id,
                mailbox,
                &owner_key,
                now,
            )
            .await
        })
    }

    async fn mailbox_owner(&self, mailbox: Id) -> Result<Option<Vec<u8>>> {
        let guard = self.conn().await?;
        let client: &Client = &guard;
        let row = client
            .query_opt(
                &guard
                    .prepare_cached("SELECT owner_key FROM mailboxes WHERE mailbox_id = $1")
                    .await?,
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
            rules::drop_message(
                &mut PgTables(&tx, &self.origin),
                request_id,
                mailbox,
                &body,
                now,
                limits,
            )
            .await
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
                &guard.prepare_cached("SELECT seq, body, stored_at FROM mailbox_messages WHERE mailbox_id = $1 AND seq > $2 AND expires_at > $3 ORDER BY seq LIMIT $4").await?,
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
            rules::ack_messages(
                &mut PgTables(&tx, &self.origin),
                request_id,
                mailbox,
                &seqs,
                now_secs(),
            )
            .await
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
            rules::upload_key_packages(
                &mut PgTables(&tx, &self.origin),
                request_id,
                mailbox,
                &key_packages,
                last_resort.as_deref(),
                max,
                now_secs(),
            )
            .await
        })
    }

    async fn claim_key_package(&self, request_id: Id, mailbox: Id) -> Result<ClaimedKeyPackage> {
        in_tx!(self, |tx| {
            rules::claim_key_package(
                &mut PgTables(&tx, &self.origin),
                request_id,
                mailbox,
                now_secs(),
            )
            .await
        })
    }

    async fn key_package_count(&self, mailbox: Id) -> Result<KeyPackageCount> {
        in_tx!(self, |tx| rules::key_package_count(
            &mut PgTables(&tx, &self.origin),
            &mailbox
        )
        .await)
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
            rules::create_group(
                &mut PgTables(&tx, &self.origin),
                request_id,
                group,
                epoch,
                &token_hash,
                now,
            )
            .await
        })
    }

    async fn epoch_token(&self, group: Id, epoch: u64) -> Result<Option<([u8; 32], u64)>> {
        let guard = self.conn().await?;
        let client: &Client = &guard;
        let row = client
            .query_opt(
                &guard.prepare_cached("SELECT e.token_hash, g.current_epoch FROM group_epochs e JOIN groups g ON g.group_id = e.group_id
                 WHERE e.group_id = $1 AND e.epoch = $2").await?,
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

    async fn channel_state(&self, channel: Id) -> Result<Option<ChannelState>> {
        let guard = self.conn().await?;
        let client: &Client = &guard;
        let row = client
            .query_opt(
                &guard
                    .prepare_cached(
                        "SELECT head_seq, head_hash, admins FROM channels WHERE channel_id = $1",
                    )
                    .await?,
                &[&channel.as_bytes().as_slice()],
            )
            .await?;
        row.map(|r| {
            Ok(ChannelState {
                seq: r.get::<_, i64>(0) as u64,
                hash: hash32(r.get(1))?,
                admins: channels::split_admins(r.get::<_, &[u8]>(2))?,
            })
        })
        .transpose()
    }

    async fn store_channel_record(&self, r: NewRecord, now: u64) -> Result<bool> {
        in_tx!(self, |tx| {
            let id = r.channel.as_bytes().as_slice();
            let head = tx
                .query_opt(
                    "SELECT head_seq, head_hash FROM channels WHERE channel_id = $1 FOR UPDATE",
                    &[&id],
                )
                .await?
                .map(|row| Ok::<_, StoreError>((row.get::<_, i64>(0) as u64, hash32(row.get(1))?)))
                .transpose()?;
            let stored = tx
                .query_opt(
                    "SELECT hash FROM channel_records WHERE channel_id = $1 AND seq = $2",
                    &[&id, &(r.seq.min(MAX_COUNTER) as i64)],
                )
                .await?
                .map(|row| hash32(row.get(0)))
                .transpose()?;
            let step = channels::step(head, stored, &r)?;
            if step == channels::Step::Repeat {
                return Ok(false);
            }
            if step == channels::Step::Create {
                // Two processes creating the same channel at once: the loser's insert breaks
                // the primary key and is re-run, finding the winner's genesis.
                tx.execute(
                    "INSERT INTO channels (channel_id, head_seq, head_hash, admins, created_at, bytes) VALUES ($1, 0, $2, $3, $4, $5)",
                    &[&id, &r.hash.as_slice(), &channels::join_admins(r.admins.as_deref().unwrap_or_default()), &(now as i64), &(r.bytes.len() as i64)],
                )
                .await?;
            } else {
                tx.execute(
                    "UPDATE channels SET head_seq = $2, head_hash = $3, admins = COALESCE($4, admins), bytes = bytes + $5 WHERE channel_id = $1",
                    &[&id, &(r.seq as i64), &r.hash.as_slice(), &r.admins.as_deref().map(channels::join_admins), &(r.bytes.len() as i64)],
                )
                .await?;
            }
            tx.execute(
                "INSERT INTO channel_records (channel_id, seq, hash, record, stored_at) VALUES ($1, $2, $3, $4, $5)",
                &[&id, &(r.seq as i64), &r.hash.as_slice(), &r.bytes, &(now as i64)],
            )
            .await?;
            notify_all(&tx, &self.origin, &[Topic::Channel(r.channel)]).await?;
            Ok(true)
        })
    }

    async fn read_channel(&self, channel: Id, from: u64, to: u64) -> Result<Vec<Vec<u8>>> {
        let guard = self.conn().await?;
        let client: &Client = &guard;
        let rows = client
            .query(
                &guard
                    .prepare_cached(
                        "SELECT record FROM channel_records WHERE channel_id = $1 AND seq >= $2 AND seq <= $3 ORDER BY seq",
                    )
                    .await?,
                &[
                    &channel.as_bytes().as_slice(),
                    &(from.min(MAX_COUNTER) as i64),
                    &(to.min(MAX_COUNTER) as i64),
                ],
            )
            .await?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    async fn token_epoch(&self, group: Id, token_hash: [u8; 32]) -> Result<Option<u64>> {
        let guard = self.conn().await?;
        let client: &Client = &guard;
        let row = client
            .query_opt(
                &guard.prepare_cached("SELECT epoch FROM group_epochs WHERE group_id = $1 AND token_hash = $2 LIMIT 1").await?,
                &[&group.as_bytes().as_slice(), &token_hash.as_slice()],
            )
            .await?;
        Ok(row.map(|r| r.get::<_, i64>(0) as u64))
    }

    async fn append(&self, req: AppendRequest, now: u64, limits: &Limits) -> Result<Appended> {
        if req.welcomes.is_empty() {
            return self.append_batched(req, now, limits).await;
        }
        in_tx!(self, |tx| rules::append(
            &mut PgTables(&tx, &self.origin),
            &req,
            now,
            limits
        )
        .await)
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
                &guard
                    .prepare_cached(
                        "SELECT current_epoch, next_seq FROM groups WHERE group_id = $1",
                    )
                    .await?,
                &[&g],
            )
            .await?
            .ok_or_else(|| not_found("group"))?;
        let (current, next_seq): (i64, i64) = (row.get(0), row.get(1));
        let rows = client
            .query(
                &guard.prepare_cached("SELECT seq, epoch, kind, body FROM entries WHERE group_id = $1 AND epoch = $2 AND seq > $3 ORDER BY seq LIMIT $4").await?,
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
                    &guard.prepare_cached("SELECT token_hash FROM group_epochs WHERE group_id = $1 AND epoch = $2").await?,
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
        for_channel: bool,
        now: u64,
        limits: &Limits,
    ) -> Result<()> {
        let new = NewBlob::new(blob, token_hash, length, source, for_channel, now, limits);
        in_tx!(self, |tx| {
            rules::create_blob(
                &mut PgTables(&tx, &self.origin),
                &new,
                limits.blob_quota_bytes,
            )
            .await
        })
    }

    async fn blob(&self, blob: Id, now: u64) -> Result<Option<BlobRecord>> {
        let guard = self.conn().await?;
        let client: &Client = &guard;
        let row = client
            .query_opt(
                "SELECT token_hash, length, offset_bytes, expires_at, for_channel FROM blobs
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
                for_channel: r.get::<_, bool>(4),
            })
        })
        .transpose()
    }

    async fn advance_blob(
        &self,
        blob: Id,
        from: u64,
        to: u64,
        finished_expiry: u64,
        quota: BlobQuota,
    ) -> Result<bool> {
        let guard = self.conn().await?;
        let client: &Client = &guard;
        let n = client
            .execute(
                "UPDATE blobs SET offset_bytes = $3,
                        expires_at = CASE WHEN $3 = length THEN $4 ELSE expires_at END
                 WHERE blob_id = $1 AND offset_bytes = $2 AND $3 <= length
                   AND (SELECT COALESCE(SUM(b.offset_bytes), 0)::BIGINT FROM blobs b
                        WHERE b.source = blobs.source AND b.expires_at > $5) + ($3 - $2) <= $6",
                &[
                    &blob.as_bytes().as_slice(),
                    &(from as i64),
                    &(to as i64),
                    &(finished_expiry as i64),
                    &(quota.now as i64),
                    &(quota.bytes.min(crate::store::MAX_COUNTER) as i64),
                ],
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
                              + (SELECT COALESCE(SUM(length), 0) FROM blobs) + (SELECT COALESCE(SUM(bytes), 0) FROM channels))::BIGINT",
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
