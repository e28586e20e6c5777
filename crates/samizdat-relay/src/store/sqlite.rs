//! SQLite storage: WAL, `synchronous=FULL`, one writer thread that commits many requests per
//! transaction (group commit), and a small pool of read connections.
//!
//! A request is answered only after the transaction holding it has committed, so every
//! success the relay returns is on disk.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use samizdat_proto::{
    Bytes, ClaimedKeyPackage, Entries, Entry, EntryKind, ErrorCode, Id, KeyPackageCount, Limits,
    MailboxMessage,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;

use super::{
    AppendRequest, Appended, BlobRecord, CLAIM_RECORD_SECS, MAX_COUNTER, Result, Store, StoreError,
    Swept, epoch_exhausted, hash32, scope, welcome_skippable,
};

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/sqlite/0001_init.sql")),
    (2, include_str!("../../migrations/sqlite/0002_bounds.sql")),
    (3, include_str!("../../migrations/sqlite/0003_blobs.sql")),
    (
        4,
        include_str!("../../migrations/sqlite/0004_append_key.sql"),
    ),
];

/// Most requests folded into one transaction.
const MAX_BATCH: usize = 512;
/// Read connections kept open, and the most reads running at once.
const MAX_READERS: usize = 8;
/// Writes that may wait for the writer thread unless the relay configures otherwise.
pub const DEFAULT_WRITER_QUEUE: usize = 4096;

type Completion = Box<dyn FnOnce(Result<()>) + Send>;
type Job = Box<dyn FnOnce(&Connection) -> (bool, Completion) + Send>;

/// The SQLite [`Store`].
pub struct SqliteStore {
    path: PathBuf,
    /// Transactions and writes of the writer thread (see `Store::write_batches`).
    batches: Arc<[AtomicU64; 2]>,
    writer: Mutex<Option<mpsc::SyncSender<Job>>>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// False once the writer thread has stopped for any reason other than `close`.
    writer_alive: Arc<AtomicBool>,
    readers: Arc<Mutex<Vec<Connection>>>,
    reading: Arc<tokio::sync::Semaphore>,
}

/// Execute through the statement cache: the writer runs the same few statements all day.
fn exec<P: rusqlite::Params>(conn: &Connection, sql: &str, params: P) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

fn query_one<T, P: rusqlite::Params, F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>>(
    conn: &Connection,
    sql: &str,
    params: P,
    f: F,
) -> rusqlite::Result<T> {
    conn.prepare_cached(sql)?.query_row(params, f)
}

fn open(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Deleted entries and messages are overwritten, not left in free pages.
    conn.pragma_update(None, "secure_delete", "ON")?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (v, sql) in MIGRATIONS {
        if *v > version {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", v)?;
            tx.commit()?;
        }
    }
    Ok(())
}

impl SqliteStore {
    /// Open (creating and migrating if needed) `relay.db` in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_with_queue(dir, DEFAULT_WRITER_QUEUE)
    }

    /// As [`SqliteStore::open`], with at most `writer_queue` writes waiting for the writer;
    /// beyond that writes are refused with `unavailable` (back-pressure, never unbounded
    /// memory).
    pub fn open_with_queue(dir: &Path, writer_queue: usize) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Backend(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join("relay.db");
        let mut conn = open(&path)?;
        migrate(&mut conn)?;
        let (tx, rx) = mpsc::sync_channel::<Job>(writer_queue.max(1));
        let writer_alive = Arc::new(AtomicBool::new(true));
        let alive = writer_alive.clone();
        let batches: Arc<[AtomicU64; 2]> = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
        let counted = batches.clone();
        let handle = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || {
                writer_loop(conn, rx, &counted);
                alive.store(false, Ordering::SeqCst);
            })
            .map_err(|e| StoreError::Backend(format!("cannot start writer thread: {e}")))?;
        Ok(SqliteStore {
            path,
            batches,
            writer: Mutex::new(Some(tx)),
            writer_thread: Mutex::new(Some(handle)),
            writer_alive,
            readers: Arc::new(Mutex::new(Vec::new())),
            reading: Arc::new(tokio::sync::Semaphore::new(MAX_READERS * 2)),
        })
    }

    /// The database file (its `-wal` sibling holds recent commits).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Finish every queued write, then stop the writer thread.
    pub fn close(&self) {
        if let Ok(mut w) = self.writer.lock() {
            w.take();
        }
        let handle = self.writer_thread.lock().ok().and_then(|mut h| h.take());
        if let Some(h) = handle {
            let _ = h.join();
        }
    }

    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = oneshot::channel::<Result<T>>();
        let job: Job = Box::new(move |conn| {
            let res = f(conn);
            let ok = res.is_ok();
            let done: Completion = Box::new(move |commit| {
                let _ = tx.send(commit.and(res));
            });
            (ok, done)
        });
        let sender = self
            .writer
            .lock()
            .map_err(|_| StoreError::Backend("writer lock poisoned".into()))?
            .clone()
            .ok_or_else(|| {
                StoreError::rejected(ErrorCode::Unavailable, "relay is shutting down")
            })?;
        sender.try_send(job).map_err(|e| match e {
            mpsc::TrySendError::Full(_) => {
                StoreError::rejected(ErrorCode::Unavailable, "the relay is busy; retry shortly")
            }
            mpsc::TrySendError::Disconnected(_) => {
                StoreError::rejected(ErrorCode::Unavailable, "relay is shutting down")
            }
        })?;
        rx.await
            .map_err(|_| StoreError::Backend("writer thread stopped".into()))?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let readers = self.readers.clone();
        let path = self.path.clone();
        // Bounded: at most this many blocking reads (and connections) at once.
        let permit = self
            .reading
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Backend("reader pool closed".into()))?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let conn = readers.lock().ok().and_then(|mut r| r.pop());
            let conn = match conn {
                Some(c) => c,
                None => open(&path)?,
            };
            let res = f(&conn);
            if let Ok(mut r) = readers.lock()
                && r.len() < MAX_READERS
            {
                r.push(conn);
            }
            res
        })
        .await
        .map_err(|e| StoreError::Backend(format!("reader task failed: {e}")))?
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.close();
    }
}

fn writer_loop(conn: Connection, rx: mpsc::Receiver<Job>, counted: &[AtomicU64; 2]) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        counted[0].fetch_add(1, Ordering::Relaxed);
        counted[1].fetch_add(jobs.len() as u64, Ordering::Relaxed);
        let mut completions = Vec::with_capacity(jobs.len());
        let begin = conn.execute_batch("BEGIN IMMEDIATE");
        if let Err(e) = begin {
            let msg = e.to_string();
            tracing::error!(error = %msg, "cannot begin write transaction");
            // Run nothing; fail every job of this batch.
            for job in jobs {
                drop(job);
            }
            continue;
        }
        for job in jobs {
            let _ = exec(&conn, "SAVEPOINT job", []);
            // A bug in one job must not kill the writer (every later write would fail):
            // contain it, undo the job, and fail only its request (its reply channel drops).
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&conn)));
            match run {
                Ok((ok, done)) => {
                    if !ok {
                        let _ = exec(&conn, "ROLLBACK TO job", []);
                    }
                    completions.push(done);
                }
                Err(_) => {
                    tracing::error!("a write job panicked; it was rolled back");
                    let _ = exec(&conn, "ROLLBACK TO job", []);
                }
            }
            let _ = exec(&conn, "RELEASE job", []);
        }
        let commit = conn.execute_batch("COMMIT").map_err(StoreError::from);
        if let Err(e) = &commit {
            tracing::error!(error = %e, "write transaction failed to commit");
            let _ = conn.execute_batch("ROLLBACK");
        }
        for done in completions {
            done(match &commit {
                Ok(()) => Ok(()),
                Err(e) => Err(StoreError::Backend(e.to_string())),
            });
        }
    }
}

/// Look up an earlier answer to this request id.
fn prior<T: DeserializeOwned>(
    conn: &Connection,
    request_id: &Id,
    scope: &str,
    target: &Id,
) -> Result<Option<T>> {
    let row: Option<String> = query_one(
        conn,
        "SELECT result FROM requests WHERE scope = ?1 AND target = ?2 AND request_id = ?3",
        params![scope, target.as_bytes(), request_id.as_bytes()],
        |r| r.get(0),
    )
    .optional()?;
    match row {
        None => Ok(None),
        Some(result) => serde_json::from_str(&result)
            .map(Some)
            .map_err(|e| StoreError::Backend(format!("corrupt idempotency record: {e}"))),
    }
}

fn remember<T: Serialize>(
    conn: &Connection,
    request_id: &Id,
    scope: &str,
    target: &Id,
    result: &T,
    now: u64,
) -> Result<()> {
    let json = serde_json::to_string(result).map_err(|e| StoreError::Backend(e.to_string()))?;
    exec(
        conn,
        "INSERT INTO requests (scope, target, request_id, result, stored_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            scope,
            target.as_bytes(),
            request_id.as_bytes(),
            json,
            now as i64
        ],
    )?;
    Ok(())
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

/// Store one message in a mailbox. A Welcome (`welcome`) may use the Welcome allowance on
/// top of the quota, so drops from strangers cannot keep it out.
fn drop_into(
    conn: &Connection,
    mailbox: &Id,
    body: &[u8],
    now: u64,
    limits: &Limits,
    welcome: bool,
) -> Result<u64> {
    let row: Option<(i64, i64, i64)> = query_one(
        conn,
        "SELECT next_seq, msg_count, msg_bytes FROM mailboxes WHERE mailbox_id = ?1",
        params![mailbox.as_bytes()],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .optional()?;
    let (seq, count, bytes) = row.ok_or_else(|| not_found("mailbox"))?;
    let (max_count, max_bytes) = super::mailbox_caps(limits, welcome);
    if count as u64 >= max_count || bytes as u64 + body.len() as u64 > max_bytes {
        return Err(StoreError::rejected(
            ErrorCode::QuotaExceeded,
            "the mailbox is full; its owner must read and acknowledge messages first",
        ));
    }
    exec(
        conn,
        "INSERT INTO mailbox_messages (mailbox_id, seq, body, stored_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            mailbox.as_bytes(),
            seq,
            body,
            now as i64,
            now.saturating_add(limits.mailbox_ttl_secs) as i64
        ],
    )?;
    exec(
        conn,
        "UPDATE mailboxes SET next_seq = next_seq + 1, msg_count = msg_count + 1, msg_bytes = msg_bytes + ?2 WHERE mailbox_id = ?1",
        params![mailbox.as_bytes(), body.len() as i64],
    )?;
    Ok(seq as u64)
}

fn kp_count(conn: &Connection, mailbox: &Id) -> Result<KeyPackageCount> {
    let has_last_resort: Option<bool> = query_one(
        conn,
        "SELECT last_resort IS NOT NULL FROM mailboxes WHERE mailbox_id = ?1",
        params![mailbox.as_bytes()],
        |r| r.get(0),
    )
    .optional()?;
    let has_last_resort = has_last_resort.ok_or_else(|| not_found("mailbox"))?;
    let available: i64 = query_one(
        conn,
        "SELECT COUNT(*) FROM key_packages WHERE mailbox_id = ?1",
        params![mailbox.as_bytes()],
        |r| r.get(0),
    )?;
    Ok(KeyPackageCount {
        available: available as u64,
        has_last_resort,
    })
}

#[async_trait]
impl Store for SqliteStore {
    fn write_batches(&self) -> (u64, u64) {
        (
            self.batches[0].load(Ordering::Relaxed),
            self.batches[1].load(Ordering::Relaxed),
        )
    }

    async fn create_mailbox(
        &self,
        request_id: Id,
        mailbox: Id,
        owner_key: Vec<u8>,
        now: u64,
    ) -> Result<()> {
        self.write(move |conn| {
            if prior::<()>(conn, &request_id, scope::CREATE_MAILBOX, &mailbox)?.is_some() {
                return Ok(());
            }
            let existing: Option<Vec<u8>> = query_one(
                conn,
                "SELECT owner_key FROM mailboxes WHERE mailbox_id = ?1",
                params![mailbox.as_bytes()],
                |r| r.get(0),
            )
            .optional()?;
            if existing.is_some() {
                return Err(StoreError::rejected(
                    ErrorCode::AlreadyExists,
                    "a mailbox with this id exists; choose a new random id",
                ));
            }
            exec(
                conn,
                "INSERT INTO mailboxes (mailbox_id, owner_key, created_at, last_seen_at) VALUES (?1, ?2, ?3, ?3)",
                params![mailbox.as_bytes(), owner_key, now as i64],
            )?;
            remember(conn, &request_id, scope::CREATE_MAILBOX, &mailbox, &(), now)
        })
        .await
    }

    async fn mailbox_owner(&self, mailbox: Id) -> Result<Option<Vec<u8>>> {
        self.read(move |conn| {
            Ok(query_one(
                conn,
                "SELECT owner_key FROM mailboxes WHERE mailbox_id = ?1",
                params![mailbox.as_bytes()],
                |r| r.get(0),
            )
            .optional()?)
        })
        .await
    }

    async fn use_nonce(&self, nonce: Id, expires_at: u64, mailbox: Id, now: u64) -> Result<bool> {
        self.write(move |conn| {
            let n = exec(
                conn,
                "INSERT OR IGNORE INTO nonces (nonce, expires_at) VALUES (?1, ?2)",
                params![nonce.as_bytes(), expires_at as i64],
            )?;
            if n == 1 {
                exec(
                    conn,
                    "UPDATE mailboxes SET last_seen_at = ?2 WHERE mailbox_id = ?1",
                    params![mailbox.as_bytes(), now as i64],
                )?;
            }
            Ok(n == 1)
        })
        .await
    }

    async fn touch_mailbox(&self, mailbox: Id, now: u64) -> Result<()> {
        self.write(move |conn| {
            exec(
                conn,
                "UPDATE mailboxes SET last_seen_at = ?2 WHERE mailbox_id = ?1",
                params![mailbox.as_bytes(), now as i64],
            )?;
            Ok(())
        })
        .await
    }

    async fn drop_message(
        &self,
        request_id: Id,
        mailbox: Id,
        body: Vec<u8>,
        now: u64,
        limits: &Limits,
    ) -> Result<u64> {
        let limits = limits.clone();
        self.write(move |conn| {
            if let Some(seq) = prior::<u64>(conn, &request_id, scope::DROP, &mailbox)? {
                return Ok(seq);
            }
            let seq = drop_into(conn, &mailbox, &body, now, &limits, false)?;
            remember(conn, &request_id, scope::DROP, &mailbox, &seq, now)?;
            Ok(seq)
        })
        .await
    }

    async fn read_mailbox(
        &self,
        mailbox: Id,
        after: u64,
        limit: usize,
        now: u64,
    ) -> Result<Vec<MailboxMessage>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, body, stored_at FROM mailbox_messages
                 WHERE mailbox_id = ?1 AND seq > ?2 AND expires_at > ?3 ORDER BY seq LIMIT ?4",
            )?;
            let rows = stmt.query_map(
                params![mailbox.as_bytes(), after as i64, now as i64, limit as i64],
                |r| {
                    Ok(MailboxMessage {
                        seq: r.get::<_, i64>(0)? as u64,
                        body: Bytes(r.get(1)?),
                        stored_at: r.get::<_, i64>(2)? as u64,
                    })
                },
            )?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn ack_messages(&self, request_id: Id, mailbox: Id, seqs: Vec<u64>) -> Result<u64> {
        self.write(move |conn| {
            if let Some(n) = prior::<u64>(conn, &request_id, scope::ACK, &mailbox)? {
                return Ok(n);
            }
            let mut deleted = 0u64;
            let mut bytes = 0i64;
            for seq in seqs {
                let len: Option<i64> = query_one(conn,
                        "DELETE FROM mailbox_messages WHERE mailbox_id = ?1 AND seq = ?2 RETURNING length(body)",
                        params![mailbox.as_bytes(), seq as i64],
                        |r| r.get(0),
                    )
                    .optional()?;
                if let Some(len) = len {
                    deleted += 1;
                    bytes += len;
                }
            }
            exec(
                conn,
                "UPDATE mailboxes SET msg_count = msg_count - ?2, msg_bytes = msg_bytes - ?3 WHERE mailbox_id = ?1",
                params![mailbox.as_bytes(), deleted as i64, bytes],
            )?;
            remember(conn, &request_id, scope::ACK, &mailbox, &deleted, now_secs())?;
            Ok(deleted)
        })
        .await
    }

    async fn upload_key_packages(
        &self,
        request_id: Id,
        mailbox: Id,
        key_packages: Vec<Vec<u8>>,
        last_resort: Option<Vec<u8>>,
        max: u64,
    ) -> Result<KeyPackageCount> {
        self.write(move |conn| {
            if prior::<KeyPackageCount>(conn, &request_id, scope::UPLOAD, &mailbox)?.is_some() {
                return kp_count(conn, &mailbox);
            }
            let before = kp_count(conn, &mailbox)?;
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
                exec(
                    conn,
                    "INSERT INTO key_packages (mailbox_id, data, uploaded_at) VALUES (?1, ?2, ?3)",
                    params![mailbox.as_bytes(), kp, now_secs() as i64],
                )?;
            }
            if let Some(lr) = &last_resort {
                exec(
                    conn,
                    "UPDATE mailboxes SET last_resort = ?2 WHERE mailbox_id = ?1",
                    params![mailbox.as_bytes(), lr],
                )?;
            }
            let after = kp_count(conn, &mailbox)?;
            remember(
                conn,
                &request_id,
                scope::UPLOAD,
                &mailbox,
                &after,
                now_secs(),
            )?;
            Ok(after)
        })
        .await
    }

    async fn claim_key_package(&self, request_id: Id, mailbox: Id) -> Result<ClaimedKeyPackage> {
        self.write(move |conn| {
            if let Some(c) = prior::<ClaimedKeyPackage>(conn, &request_id, scope::CLAIM, &mailbox)?
            {
                return Ok(c);
            }
            let last_resort: Option<Option<Vec<u8>>> = query_one(
                conn,
                "SELECT last_resort FROM mailboxes WHERE mailbox_id = ?1",
                params![mailbox.as_bytes()],
                |r| r.get(0),
            )
            .optional()?;
            let last_resort = last_resort.ok_or_else(|| not_found("mailbox"))?;
            let taken: Option<Vec<u8>> = query_one(
                conn,
                "DELETE FROM key_packages WHERE id =
                       (SELECT id FROM key_packages WHERE mailbox_id = ?1 ORDER BY id LIMIT 1)
                     RETURNING data",
                params![mailbox.as_bytes()],
                |r| r.get(0),
            )
            .optional()?;
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
                conn,
                &request_id,
                scope::CLAIM,
                &mailbox,
                &claimed,
                now_secs(),
            )?;
            Ok(claimed)
        })
        .await
    }

    async fn key_package_count(&self, mailbox: Id) -> Result<KeyPackageCount> {
        self.read(move |conn| kp_count(conn, &mailbox)).await
    }

    async fn create_group(
        &self,
        request_id: Id,
        group: Id,
        epoch: u64,
        token_hash: [u8; 32],
        now: u64,
    ) -> Result<()> {
        self.write(move |conn| {
            if prior::<()>(conn, &request_id, scope::CREATE_GROUP, &group)?.is_some() {
                return Ok(());
            }
            let exists: Option<i64> = query_one(
                conn,
                "SELECT 1 FROM groups WHERE group_id = ?1",
                params![group.as_bytes()],
                |r| r.get(0),
            )
            .optional()?;
            if exists.is_some() {
                return Err(StoreError::rejected(
                    ErrorCode::AlreadyExists,
                    "a group with this id exists; choose a new random id",
                ));
            }
            exec(
                conn,
                "INSERT INTO groups (group_id, current_epoch, created_at, last_append_at) VALUES (?1, ?2, ?3, ?3)",
                params![group.as_bytes(), epoch as i64, now as i64],
            )?;
            exec(
                conn,
                "INSERT INTO group_epochs (group_id, epoch, token_hash, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![group.as_bytes(), epoch as i64, &token_hash[..], now as i64],
            )?;
            remember(conn, &request_id, scope::CREATE_GROUP, &group, &(), now)
        })
        .await
    }

    async fn epoch_token(&self, group: Id, epoch: u64) -> Result<Option<([u8; 32], u64)>> {
        self.read(move |conn| {
            let row: Option<(Vec<u8>, i64)> = query_one(
                conn,
                "SELECT e.token_hash, g.current_epoch FROM group_epochs e
                     JOIN groups g ON g.group_id = e.group_id
                     WHERE e.group_id = ?1 AND e.epoch = ?2",
                params![group.as_bytes(), epoch as i64],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
            row.map(|(h, cur)| Ok((hash32(h)?, cur as u64))).transpose()
        })
        .await
    }

    async fn token_epoch(&self, group: Id, token_hash: [u8; 32]) -> Result<Option<u64>> {
        self.read(move |conn| {
            let epoch: Option<i64> = query_one(
                conn,
                "SELECT epoch FROM group_epochs WHERE group_id = ?1 AND token_hash = ?2 LIMIT 1",
                params![group.as_bytes(), &token_hash[..]],
                |r| r.get(0),
            )
            .optional()?;
            Ok(epoch.map(|e| e as u64))
        })
        .await
    }

    async fn append(&self, req: AppendRequest, now: u64, limits: &Limits) -> Result<Appended> {
        let limits = limits.clone();
        self.write(move |conn| {
            let g = req.group_id.as_bytes();
            let row: Option<(i64, i64, i64)> = query_one(conn,
                    "SELECT current_epoch, next_seq, bytes FROM groups WHERE group_id = ?1",
                    params![g],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            let (current, seq, bytes) = row.ok_or_else(|| not_found("group"))?;
            let current = current as u64;
            // Who may append is checked before anything else, including the retry record.
            let stored: Option<Vec<u8>> = query_one(conn,
                    "SELECT token_hash FROM group_epochs WHERE group_id = ?1 AND epoch = ?2",
                    params![g, req.epoch as i64],
                    |r| r.get(0),
                )
                .optional()?;
            match stored {
                Some(h) if h.as_slice() == req.token_hash.as_slice() => {}
                _ => {
                    return Err(StoreError::rejected(
                        ErrorCode::BadToken,
                        "the epoch token does not match this group and epoch",
                    ));
                }
            }
            // The retry record is the entry itself (one row per append).
            let prior: Option<i64> = query_one(conn,
                    "SELECT seq FROM entries WHERE group_id = ?1 AND request_id = ?2",
                    params![g, req.request_id.as_bytes()],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(seq) = prior {
                return Ok(Appended { seq: seq as u64, welcomed: Vec::new(), undelivered: Vec::new(), fresh: false });
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
            let next_seq = (seq as u64).checked_add(1).filter(|n| *n <= MAX_COUNTER).ok_or_else(epoch_exhausted)?;
            exec(
                conn,
                "INSERT INTO entries (group_id, seq, epoch, kind, body, stored_at, request_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![g, seq, req.epoch as i64, req.kind.as_i64(), req.body, now as i64, req.request_id.as_bytes()],
            )?;
            let (mut welcomed, mut undelivered) = (Vec::new(), Vec::new());
            if req.kind == EntryKind::Commit {
                let next_hash = req.next_token_hash.ok_or_else(|| {
                    StoreError::rejected(ErrorCode::BadRequest, "a commit must carry next_token_hash")
                })?;
                let next = current.checked_add(1).filter(|n| *n <= MAX_COUNTER).ok_or_else(epoch_exhausted)?;
                exec(
                    conn,
                    "INSERT INTO group_epochs (group_id, epoch, token_hash, created_at) VALUES (?1, ?2, ?3, ?4)",
                    params![g, next as i64, &next_hash[..], now as i64],
                )?;
                exec(
                    conn,
                    "UPDATE groups SET current_epoch = ?2, next_seq = ?3, bytes = bytes + ?4, last_append_at = ?5 WHERE group_id = ?1",
                    params![g, next as i64, next_seq as i64, req.body.len() as i64, now as i64],
                )?;
                // Fixed order (by mailbox id), so concurrent commits never lock in a cycle.
                let mut welcomes: Vec<_> = req.welcomes.iter().collect();
                welcomes.sort_by_key(|w| w.mailbox_id);
                for w in welcomes {
                    let _ = exec(conn, "SAVEPOINT welcome", []);
                    match drop_into(conn, &w.mailbox_id, &w.body.0, now, &limits, true) {
                        Ok(_) => welcomed.push(w.mailbox_id),
                        Err(e) if welcome_skippable(&e) => {
                            let _ = exec(conn, "ROLLBACK TO welcome", []);
                            undelivered.push(w.mailbox_id);
                        }
                        Err(e) => return Err(e),
                    }
                    let _ = exec(conn, "RELEASE welcome", []);
                }
            } else {
                exec(
                    conn,
                    "UPDATE groups SET next_seq = ?2, bytes = bytes + ?3, last_append_at = ?4 WHERE group_id = ?1",
                    params![g, next_seq as i64, req.body.len() as i64, now as i64],
                )?;
            }
            Ok(Appended { seq: seq as u64, welcomed, undelivered, fresh: true })
        })
        .await
    }

    async fn read_entries(
        &self,
        group: Id,
        epoch: u64,
        after: u64,
        limit: usize,
    ) -> Result<Entries> {
        self.read(move |conn| {
            // The group first: every entry up to its last seq is stored before the entries
            // are read.
            let current: Option<(i64, i64)> = query_one(
                conn,
                "SELECT current_epoch, next_seq FROM groups WHERE group_id = ?1",
                params![group.as_bytes()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
            let (current, next_seq) = current.ok_or_else(|| not_found("group"))?;
            let current = current as u64;
            let mut stmt = conn.prepare_cached(
                // Through the epoch index, always: on the primary key (which ORDER BY seq makes
                // the planner pick) SQLite steps through every later row of the group, reading
                // each one whole — a 26 MB commit of an earlier epoch made every read (and every
                // subscriber's poll) of the next epoch cost 21 ms instead of 0.01 ms.
                "SELECT seq, epoch, kind, body FROM entries INDEXED BY entries_epoch
                 WHERE group_id = ?1 AND epoch = ?2 AND seq > ?3 ORDER BY seq LIMIT ?4",
            )?;
            let rows = stmt.query_map(
                params![group.as_bytes(), epoch as i64, after as i64, limit as i64],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, Vec<u8>>(3)?,
                    ))
                },
            )?;
            let mut entries = Vec::new();
            for row in rows {
                let (seq, epoch, kind, body) = row?;
                let kind = EntryKind::from_i64(kind)
                    .ok_or_else(|| StoreError::Backend("corrupt entry kind".into()))?;
                entries.push(Entry {
                    seq: seq as u64,
                    epoch: epoch as u64,
                    kind,
                    body: Bytes(body),
                });
            }
            let next_token_hash = if current > epoch {
                query_one(
                    conn,
                    "SELECT token_hash FROM group_epochs WHERE group_id = ?1 AND epoch = ?2",
                    params![group.as_bytes(), (epoch + 1) as i64],
                    |r| r.get::<_, Vec<u8>>(0),
                )
                .optional()?
                .map(Bytes)
            } else {
                None
            };
            Ok(Entries {
                entries,
                current_epoch: current,
                next_token_hash,
                last_seq: (next_seq as u64).saturating_sub(1),
            })
        })
        .await
    }

    async fn sweep(&self, now: u64, limits: &Limits) -> Result<Swept> {
        let limits = limits.clone();
        self.write(move |conn| {
            let now_i = now as i64;
            // Keep the per-mailbox counters right while deleting.
            exec(
                conn,
                "UPDATE mailboxes SET
                   msg_count = msg_count - (SELECT COUNT(*) FROM mailbox_messages m
                                            WHERE m.mailbox_id = mailboxes.mailbox_id AND m.expires_at <= ?1),
                   msg_bytes = msg_bytes - (SELECT COALESCE(SUM(length(body)), 0) FROM mailbox_messages m
                                            WHERE m.mailbox_id = mailboxes.mailbox_id AND m.expires_at <= ?1)
                 WHERE mailbox_id IN (SELECT mailbox_id FROM mailbox_messages WHERE expires_at <= ?1)",
                params![now_i],
            )?;
            let mut mailbox_messages =
                exec(conn, "DELETE FROM mailbox_messages WHERE expires_at <= ?1", params![now_i])? as u64;
            let cutoff = now.saturating_sub(limits.retention_secs) as i64;
            exec(
                conn,
                "UPDATE groups SET bytes = bytes - (SELECT COALESCE(SUM(length(body)), 0) FROM entries e
                                                    WHERE e.group_id = groups.group_id AND e.stored_at <= ?1)
                 WHERE group_id IN (SELECT group_id FROM entries WHERE stored_at <= ?1)",
                params![cutoff],
            )?;
            let entries = exec(conn, "DELETE FROM entries WHERE stored_at <= ?1", params![cutoff])? as u64;
            // Epochs that no entry needs any more (the current epoch always stays).
            exec(
                conn,
                "DELETE FROM group_epochs WHERE created_at <= ?1
                   AND epoch < (SELECT current_epoch FROM groups g WHERE g.group_id = group_epochs.group_id)
                   AND NOT EXISTS (SELECT 1 FROM entries e WHERE e.group_id = group_epochs.group_id AND e.epoch = group_epochs.epoch)",
                params![cutoff],
            )?;
            // Groups nobody appended to for `group_idle_secs` (their entries are long gone).
            let group_idle = now.saturating_sub(limits.group_idle_secs) as i64;
            exec(
                conn,
                "DELETE FROM group_epochs WHERE group_id IN (SELECT group_id FROM groups WHERE last_append_at <= ?1)",
                params![group_idle],
            )?;
            let groups = exec(conn, "DELETE FROM groups WHERE last_append_at <= ?1", params![group_idle])? as u64;
            // Mailboxes whose owner has been away too long, with everything in them.
            let idle = now.saturating_sub(limits.mailbox_idle_secs) as i64;
            mailbox_messages += exec(
                conn,
                "DELETE FROM mailbox_messages WHERE mailbox_id IN (SELECT mailbox_id FROM mailboxes WHERE last_seen_at <= ?1)",
                params![idle],
            )? as u64;
            let mut key_packages = exec(
                conn,
                "DELETE FROM key_packages WHERE mailbox_id IN (SELECT mailbox_id FROM mailboxes WHERE last_seen_at <= ?1)",
                params![idle],
            )? as u64;
            let mailboxes = exec(conn, "DELETE FROM mailboxes WHERE last_seen_at <= ?1", params![idle])? as u64;
            let kp_cutoff = now.saturating_sub(limits.key_package_ttl_secs) as i64;
            key_packages += exec(conn, "DELETE FROM key_packages WHERE uploaded_at <= ?1", params![kp_cutoff])? as u64;
            exec(conn, "DELETE FROM nonces WHERE expires_at <= ?1", params![now_i])?;
            exec(conn, "DELETE FROM requests WHERE stored_at <= ?1", params![cutoff])?;
            exec(
                conn,
                "DELETE FROM requests WHERE scope = ?1 AND stored_at <= ?2",
                params![scope::CLAIM, now.saturating_sub(CLAIM_RECORD_SECS) as i64],
            )?;
            let stored: i64 = query_one(
                conn,
                "SELECT (SELECT COALESCE(SUM(bytes), 0) FROM groups) + (SELECT COALESCE(SUM(msg_bytes), 0) FROM mailboxes)
                      + (SELECT COALESCE(SUM(length), 0) FROM blobs)",
                [],
                |r| r.get(0),
            )?;
            Ok(Swept {
                mailbox_messages,
                entries,
                mailboxes,
                groups,
                key_packages,
                stored_bytes: stored.max(0) as u64,
            })
        })
        .await
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
        let expires = now.saturating_add(limits.blob_ttl_secs).min(MAX_COUNTER);
        self.write(move |conn| {
            let held: i64 = query_one(
                conn,
                "SELECT COALESCE(SUM(length), 0) FROM blobs WHERE source = ?1 AND expires_at > ?2",
                params![source.as_slice(), now as i64],
                |r| r.get(0),
            )?;
            if (held.max(0) as u64).saturating_add(length) > quota {
                return Err(super::blob_quota_exceeded());
            }
            exec(
                conn,
                "INSERT INTO blobs (blob_id, token_hash, length, source, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    blob.as_bytes().as_slice(),
                    token_hash.as_slice(),
                    length as i64,
                    source.as_slice(),
                    now as i64,
                    expires as i64
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn blob(&self, blob: Id, now: u64) -> Result<Option<BlobRecord>> {
        self.read(move |conn| {
            let row = conn
                .query_row(
                    "SELECT token_hash, length, offset_bytes, expires_at FROM blobs
                     WHERE blob_id = ?1 AND expires_at > ?2",
                    params![blob.as_bytes().as_slice(), now as i64],
                    |r| {
                        Ok((
                            r.get::<_, Vec<u8>>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, i64>(2)?,
                            r.get::<_, i64>(3)?,
                        ))
                    },
                )
                .optional()?;
            row.map(|(h, length, offset, expires)| {
                Ok(BlobRecord {
                    token_hash: hash32(h)?,
                    length: length as u64,
                    offset: offset as u64,
                    expires_at: expires as u64,
                })
            })
            .transpose()
        })
        .await
    }

    async fn advance_blob(&self, blob: Id, from: u64, to: u64) -> Result<bool> {
        self.write(move |conn| {
            let n = exec(
                conn,
                "UPDATE blobs SET offset_bytes = ?3 WHERE blob_id = ?1 AND offset_bytes = ?2 AND ?3 <= length",
                params![blob.as_bytes().as_slice(), from as i64, to as i64],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn expire_blobs(&self, now: u64) -> Result<Vec<Id>> {
        self.write(move |conn| {
            let mut stmt =
                conn.prepare("DELETE FROM blobs WHERE expires_at <= ?1 RETURNING blob_id")?;
            let ids = stmt
                .query_map(params![now as i64], |r| r.get::<_, Vec<u8>>(0))?
                .filter_map(|r| r.ok().and_then(|b| Id::from_slice(&b).ok()))
                .collect();
            Ok(ids)
        })
        .await
    }

    fn healthy(&self) -> bool {
        self.writer_alive.load(Ordering::SeqCst)
    }
}
