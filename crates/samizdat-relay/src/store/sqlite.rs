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
use rusqlite_migration::{M, Migrations};
use samizdat_proto::{
    Bytes, ClaimedKeyPackage, Entries, Entry, EntryKind, ErrorCode, Id, KeyPackageCount, Limits,
    MailboxMessage,
};
use tokio::sync::oneshot;

use super::rules::{self, GroupRow, MailboxCounters, NewBlob, Tables, run_now};
use super::{
    AppendRequest, Appended, BlobQuota, BlobRecord, CLAIM_RECORD_SECS, ChannelState, MAX_COUNTER,
    NewRecord, Result, Store, StoreError, Swept, channels, hash32, now_secs, scope,
};
use crate::notify::Topic;

/// The schema, version by version (`PRAGMA user_version` holds the version reached).
pub(crate) fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(include_str!("../../migrations/sqlite/0001_init.sql")),
        M::up(include_str!("../../migrations/sqlite/0002_bounds.sql")),
        M::up(include_str!("../../migrations/sqlite/0003_blobs.sql")),
        M::up(include_str!("../../migrations/sqlite/0004_append_key.sql")),
        M::up(include_str!("../../migrations/sqlite/0005_channels.sql")),
    ])
}

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

/// Bring `relay.db` (in `dir`) to the newest schema. A database that holds data and is
/// about to change is first copied whole to `relay.db.before-migration-vN` (N: its version),
/// so an operator whose upgrade went wrong can go back to the previous package with the data
/// as it was. A new database, or one already current, is not copied.
fn migrate(conn: &mut Connection, dir: &Path) -> Result<()> {
    let migrations = migrations();
    let pending = migrations
        .pending_migrations(conn)
        .map_err(|e| StoreError::Backend(format!("cannot read the schema version: {e}")))?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > 0 && pending > 0 {
        let backup = dir.join(format!("relay.db.before-migration-v{version}"));
        // A copy left by an attempt that failed is of the same, unchanged database.
        match std::fs::remove_file(&backup) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(StoreError::Backend(format!(
                    "cannot replace {}: {e}",
                    backup.display()
                )));
            }
        }
        let target = backup
            .to_str()
            .ok_or_else(|| StoreError::Backend("the data directory is not UTF-8".into()))?;
        conn.execute("VACUUM INTO ?1", [target]).map_err(|e| {
            StoreError::Backend(format!("cannot copy the database before migrating: {e}"))
        })?;
        tracing::info!(
            from = version,
            steps = pending,
            "copied the database before migrating"
        );
    }
    migrations.to_latest(conn).map_err(|e| match e {
        rusqlite_migration::Error::MigrationDefinition(
            rusqlite_migration::MigrationDefinitionError::DatabaseTooFarAhead,
        ) => StoreError::Backend(
            "the relay database was written by a newer samizdat; run that version".into(),
        ),
        e => StoreError::Backend(format!("cannot migrate the relay database: {e}")),
    })
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
        crate::private_dir(dir)
            .map_err(|e| StoreError::Backend(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join("relay.db");
        let mut conn = open(&path)?;
        migrate(&mut conn, dir)?;
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

/// SQLite's [`Tables`]: the statements of the rules, on the writer's connection (inside its
/// transaction). Nothing here waits, so the rules run to completion at once ([`run_now`]).
struct SqliteTables<'c>(&'c Connection);

impl Tables for SqliteTables<'_> {
    async fn prior(&mut self, scope: &str, target: &Id, request: &Id) -> Result<Option<String>> {
        Ok(query_one(
            self.0,
            "SELECT result FROM requests WHERE scope = ?1 AND target = ?2 AND request_id = ?3",
            params![scope, target.as_bytes(), request.as_bytes()],
            |r| r.get(0),
        )
        .optional()?)
    }

    async fn claims(&mut self, mailbox: &Id, since: u64) -> Result<Vec<(Id, String)>> {
        let mut stmt = self.0.prepare_cached(
            "SELECT request_id, result FROM requests WHERE scope = ?1 AND target = ?2 AND stored_at > ?3",
        )?;
        let rows = stmt
            .query_map(
                params![scope::CLAIM, mailbox.as_bytes(), since as i64],
                |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, String>(1)?)),
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, answer)| Some((Id::from_slice(&id).ok()?, answer)))
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
        exec(
            self.0,
            "INSERT INTO requests (scope, target, request_id, result, stored_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                scope,
                target.as_bytes(),
                request.as_bytes(),
                answer,
                now as i64
            ],
        )?;
        Ok(())
    }

    async fn mailbox_exists(&mut self, mailbox: &Id) -> Result<bool> {
        Ok(query_one(
            self.0,
            "SELECT 1 FROM mailboxes WHERE mailbox_id = ?1",
            params![mailbox.as_bytes()],
            |r| r.get::<_, i64>(0),
        )
        .optional()?
        .is_some())
    }

    async fn insert_mailbox(&mut self, mailbox: &Id, owner_key: &[u8], now: u64) -> Result<()> {
        exec(
            self.0,
            "INSERT INTO mailboxes (mailbox_id, owner_key, created_at, last_seen_at) VALUES (?1, ?2, ?3, ?3)",
            params![mailbox.as_bytes(), owner_key, now as i64],
        )?;
        Ok(())
    }

    async fn mailbox_for_update(&mut self, mailbox: &Id) -> Result<Option<MailboxCounters>> {
        Ok(query_one(
            self.0,
            "SELECT next_seq, msg_count, msg_bytes FROM mailboxes WHERE mailbox_id = ?1",
            params![mailbox.as_bytes()],
            |r| {
                Ok(MailboxCounters {
                    next_seq: r.get::<_, i64>(0)? as u64,
                    messages: r.get::<_, i64>(1)? as u64,
                    bytes: r.get::<_, i64>(2)? as u64,
                })
            },
        )
        .optional()?)
    }

    async fn insert_message(
        &mut self,
        mailbox: &Id,
        seq: u64,
        body: &[u8],
        now: u64,
        expires_at: u64,
    ) -> Result<()> {
        exec(
            self.0,
            "INSERT INTO mailbox_messages (mailbox_id, seq, body, stored_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                mailbox.as_bytes(),
                seq as i64,
                body,
                now as i64,
                expires_at as i64
            ],
        )?;
        exec(
            self.0,
            "UPDATE mailboxes SET next_seq = ?2, msg_count = msg_count + 1, msg_bytes = msg_bytes + ?3 WHERE mailbox_id = ?1",
            params![mailbox.as_bytes(), seq as i64 + 1, body.len() as i64],
        )?;
        Ok(())
    }

    async fn delete_messages(&mut self, mailbox: &Id, seqs: &[u64]) -> Result<(u64, u64)> {
        let (mut deleted, mut bytes) = (0u64, 0u64);
        for seq in seqs {
            let len: Option<i64> = query_one(
                self.0,
                "DELETE FROM mailbox_messages WHERE mailbox_id = ?1 AND seq = ?2 RETURNING length(body)",
                params![mailbox.as_bytes(), *seq as i64],
                |r| r.get(0),
            )
            .optional()?;
            if let Some(len) = len {
                deleted += 1;
                bytes += len as u64;
            }
        }
        exec(
            self.0,
            "UPDATE mailboxes SET msg_count = msg_count - ?2, msg_bytes = msg_bytes - ?3 WHERE mailbox_id = ?1",
            params![mailbox.as_bytes(), deleted as i64, bytes as i64],
        )?;
        Ok((deleted, bytes))
    }

    async fn last_resort_for_update(&mut self, mailbox: &Id) -> Result<Option<Option<Vec<u8>>>> {
        Ok(query_one(
            self.0,
            "SELECT last_resort FROM mailboxes WHERE mailbox_id = ?1",
            params![mailbox.as_bytes()],
            |r| r.get(0),
        )
        .optional()?)
    }

    async fn has_last_resort(&mut self, mailbox: &Id) -> Result<Option<bool>> {
        Ok(query_one(
            self.0,
            "SELECT last_resort IS NOT NULL FROM mailboxes WHERE mailbox_id = ?1",
            params![mailbox.as_bytes()],
            |r| r.get(0),
        )
        .optional()?)
    }

    async fn set_last_resort(&mut self, mailbox: &Id, key_package: &[u8]) -> Result<()> {
        exec(
            self.0,
            "UPDATE mailboxes SET last_resort = ?2 WHERE mailbox_id = ?1",
            params![mailbox.as_bytes(), key_package],
        )?;
        Ok(())
    }

    async fn pool_size(&mut self, mailbox: &Id) -> Result<u64> {
        let n: i64 = query_one(
            self.0,
            "SELECT COUNT(*) FROM key_packages WHERE mailbox_id = ?1",
            params![mailbox.as_bytes()],
            |r| r.get(0),
        )?;
        Ok(n.max(0) as u64)
    }

    async fn insert_key_package(
        &mut self,
        mailbox: &Id,
        key_package: &[u8],
        now: u64,
    ) -> Result<()> {
        exec(
            self.0,
            "INSERT INTO key_packages (mailbox_id, data, uploaded_at) VALUES (?1, ?2, ?3)",
            params![mailbox.as_bytes(), key_package, now as i64],
        )?;
        Ok(())
    }

    async fn take_key_package(&mut self, mailbox: &Id) -> Result<Option<Vec<u8>>> {
        Ok(query_one(
            self.0,
            "DELETE FROM key_packages WHERE id =
               (SELECT id FROM key_packages WHERE mailbox_id = ?1 ORDER BY id LIMIT 1)
             RETURNING data",
            params![mailbox.as_bytes()],
            |r| r.get(0),
        )
        .optional()?)
    }

    async fn group_exists(&mut self, group: &Id) -> Result<bool> {
        Ok(query_one(
            self.0,
            "SELECT 1 FROM groups WHERE group_id = ?1",
            params![group.as_bytes()],
            |r| r.get::<_, i64>(0),
        )
        .optional()?
        .is_some())
    }

    async fn insert_group(&mut self, group: &Id, epoch: u64, now: u64) -> Result<()> {
        exec(
            self.0,
            "INSERT INTO groups (group_id, current_epoch, created_at, last_append_at) VALUES (?1, ?2, ?3, ?3)",
            params![group.as_bytes(), epoch as i64, now as i64],
        )?;
        Ok(())
    }

    async fn group_for_update(&mut self, group: &Id) -> Result<Option<GroupRow>> {
        Ok(query_one(
            self.0,
            "SELECT current_epoch, next_seq, bytes FROM groups WHERE group_id = ?1",
            params![group.as_bytes()],
            |r| {
                Ok(GroupRow {
                    current_epoch: r.get::<_, i64>(0)? as u64,
                    next_seq: r.get::<_, i64>(1)? as u64,
                    bytes: r.get::<_, i64>(2)? as u64,
                })
            },
        )
        .optional()?)
    }

    async fn insert_epoch(
        &mut self,
        group: &Id,
        epoch: u64,
        token_hash: &[u8; 32],
        now: u64,
    ) -> Result<()> {
        exec(
            self.0,
            "INSERT INTO group_epochs (group_id, epoch, token_hash, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![group.as_bytes(), epoch as i64, &token_hash[..], now as i64],
        )?;
        Ok(())
    }

    async fn epoch_token_hash(&mut self, group: &Id, epoch: u64) -> Result<Option<Vec<u8>>> {
        Ok(query_one(
            self.0,
            "SELECT token_hash FROM group_epochs WHERE group_id = ?1 AND epoch = ?2",
            params![group.as_bytes(), epoch as i64],
            |r| r.get(0),
        )
        .optional()?)
    }

    async fn entry_of_request(&mut self, group: &Id, request: &Id) -> Result<Option<u64>> {
        Ok(query_one(
            self.0,
            "SELECT seq FROM entries WHERE group_id = ?1 AND request_id = ?2",
            params![group.as_bytes(), request.as_bytes()],
            |r| r.get::<_, i64>(0),
        )
        .optional()?
        .map(|s| s as u64))
    }

    async fn insert_entry(&mut self, seq: u64, req: &AppendRequest, now: u64) -> Result<()> {
        exec(
            self.0,
            "INSERT INTO entries (group_id, seq, epoch, kind, body, stored_at, request_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                req.group_id.as_bytes(),
                seq as i64,
                req.epoch as i64,
                req.kind.as_i64(),
                req.body,
                now as i64,
                req.request_id.as_bytes()
            ],
        )?;
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
        exec(
            self.0,
            "UPDATE groups SET current_epoch = ?2, next_seq = ?3, bytes = bytes + ?4, last_append_at = ?5 WHERE group_id = ?1",
            params![
                group.as_bytes(),
                current_epoch as i64,
                next_seq as i64,
                added_bytes as i64,
                now as i64
            ],
        )?;
        Ok(())
    }

    async fn savepoint(&mut self) -> Result<()> {
        exec(self.0, "SAVEPOINT rule", [])?;
        Ok(())
    }

    async fn rollback_to_savepoint(&mut self) -> Result<()> {
        exec(self.0, "ROLLBACK TO rule", [])?;
        exec(self.0, "RELEASE rule", [])?;
        Ok(())
    }

    async fn release_savepoint(&mut self) -> Result<()> {
        exec(self.0, "RELEASE rule", [])?;
        Ok(())
    }

    async fn wake(&mut self, _topics: &[Topic]) -> Result<()> {
        // One process: the HTTP layer wakes its subscribers from the answer.
        Ok(())
    }

    async fn lock_blob_source(&mut self, _source: &[u8; 32]) -> Result<()> {
        // The single writer already runs creations in turn.
        Ok(())
    }

    async fn blob_bytes_held(&mut self, source: &[u8; 32], now: u64) -> Result<u64> {
        let held: i64 = query_one(
            self.0,
            "SELECT COALESCE(SUM(offset_bytes), 0) FROM blobs WHERE source = ?1 AND expires_at > ?2",
            params![source.as_slice(), now as i64],
            |r| r.get(0),
        )?;
        Ok(held.max(0) as u64)
    }

    async fn insert_blob(&mut self, blob: &NewBlob) -> Result<()> {
        exec(
            self.0,
            "INSERT INTO blobs (blob_id, token_hash, length, source, created_at, expires_at, for_channel)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                blob.blob.as_bytes().as_slice(),
                blob.token_hash.as_slice(),
                blob.length as i64,
                blob.source.as_slice(),
                blob.now as i64,
                blob.expires_at as i64,
                blob.for_channel
            ],
        )?;
        Ok(())
    }
}

fn not_found(what: &str) -> StoreError {
    rules::not_found(what)
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
            run_now(rules::create_mailbox(
                &mut SqliteTables(conn),
                request_id,
                mailbox,
                &owner_key,
                now,
            ))
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
            run_now(rules::drop_message(
                &mut SqliteTables(conn),
                request_id,
                mailbox,
                &body,
                now,
                &limits,
            ))
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
            run_now(rules::ack_messages(
                &mut SqliteTables(conn),
                request_id,
                mailbox,
                &seqs,
                now_secs(),
            ))
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
            run_now(rules::upload_key_packages(
                &mut SqliteTables(conn),
                request_id,
                mailbox,
                &key_packages,
                last_resort.as_deref(),
                max,
                now_secs(),
            ))
        })
        .await
    }

    async fn claim_key_package(&self, request_id: Id, mailbox: Id) -> Result<ClaimedKeyPackage> {
        self.write(move |conn| {
            run_now(rules::claim_key_package(
                &mut SqliteTables(conn),
                request_id,
                mailbox,
                now_secs(),
            ))
        })
        .await
    }

    async fn key_package_count(&self, mailbox: Id) -> Result<KeyPackageCount> {
        self.read(move |conn| run_now(rules::key_package_count(&mut SqliteTables(conn), &mailbox)))
            .await
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
            run_now(rules::create_group(
                &mut SqliteTables(conn),
                request_id,
                group,
                epoch,
                &token_hash,
                now,
            ))
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
        self.write(move |conn| run_now(rules::append(&mut SqliteTables(conn), &req, now, &limits)))
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

    async fn channel_state(&self, channel: Id) -> Result<Option<ChannelState>> {
        self.read(move |conn| {
            let row: Option<(i64, Vec<u8>, Vec<u8>)> = query_one(
                conn,
                "SELECT head_seq, head_hash, admins FROM channels WHERE channel_id = ?1",
                params![channel.as_bytes()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
            row.map(|(seq, hash, admins)| {
                Ok(ChannelState {
                    seq: seq as u64,
                    hash: hash32(hash)?,
                    admins: channels::split_admins(&admins)?,
                })
            })
            .transpose()
        })
        .await
    }

    async fn store_channel_record(&self, r: NewRecord, now: u64) -> Result<bool> {
        self.write(move |conn| {
            let id = r.channel.as_bytes().to_vec();
            let head: Option<(i64, Vec<u8>)> = query_one(
                conn,
                "SELECT head_seq, head_hash FROM channels WHERE channel_id = ?1",
                params![id],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
            let head = head.map(|(s, h)| Ok::<_, StoreError>((s as u64, hash32(h)?))).transpose()?;
            let stored: Option<Vec<u8>> = query_one(
                conn,
                "SELECT hash FROM channel_records WHERE channel_id = ?1 AND seq = ?2",
                params![id, r.seq as i64],
                |row| row.get(0),
            )
            .optional()?;
            let stored = stored.map(hash32).transpose()?;
            let step = channels::step(head, stored, &r)?;
            if step == channels::Step::Repeat {
                return Ok(false);
            }
            if step == channels::Step::Create {
                exec(
                    conn,
                    "INSERT INTO channels (channel_id, head_seq, head_hash, admins, created_at, bytes) VALUES (?1, 0, ?2, ?3, ?4, ?5)",
                    params![id, &r.hash[..], channels::join_admins(r.admins.as_deref().unwrap_or_default()), now as i64, r.bytes.len() as i64],
                )?;
            } else {
                exec(
                    conn,
                    "UPDATE channels SET head_seq = ?2, head_hash = ?3, admins = COALESCE(?4, admins), bytes = bytes + ?5 WHERE channel_id = ?1",
                    params![id, r.seq as i64, &r.hash[..], r.admins.as_deref().map(channels::join_admins), r.bytes.len() as i64],
                )?;
            }
            exec(
                conn,
                "INSERT INTO channel_records (channel_id, seq, hash, record, stored_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id, r.seq as i64, &r.hash[..], r.bytes, now as i64],
            )?;
            Ok(true)
        })
        .await
    }

    async fn read_channel(&self, channel: Id, from: u64, to: u64) -> Result<Vec<Vec<u8>>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT record FROM channel_records WHERE channel_id = ?1 AND seq >= ?2 AND seq <= ?3 ORDER BY seq",
            )?;
            let rows = stmt.query_map(
                params![channel.as_bytes(), from.min(MAX_COUNTER) as i64, to.min(MAX_COUNTER) as i64],
                |r| r.get::<_, Vec<u8>>(0),
            )?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
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
                      + (SELECT COALESCE(SUM(length), 0) FROM blobs) + (SELECT COALESCE(SUM(bytes), 0) FROM channels)",
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
        for_channel: bool,
        now: u64,
        limits: &Limits,
    ) -> Result<()> {
        let quota = limits.blob_quota_bytes;
        let new = NewBlob::new(blob, token_hash, length, source, for_channel, now, limits);
        self.write(move |conn| run_now(rules::create_blob(&mut SqliteTables(conn), &new, quota)))
            .await
    }

    async fn blob(&self, blob: Id, now: u64) -> Result<Option<BlobRecord>> {
        self.read(move |conn| {
            let row = conn
                .query_row(
                    "SELECT token_hash, length, offset_bytes, expires_at, for_channel FROM blobs
                     WHERE blob_id = ?1 AND expires_at > ?2",
                    params![blob.as_bytes().as_slice(), now as i64],
                    |r| {
                        Ok((
                            r.get::<_, Vec<u8>>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, i64>(2)?,
                            r.get::<_, i64>(3)?,
                            r.get::<_, bool>(4)?,
                        ))
                    },
                )
                .optional()?;
            row.map(|(h, length, offset, expires, for_channel)| {
                Ok(BlobRecord {
                    token_hash: hash32(h)?,
                    length: length as u64,
                    offset: offset as u64,
                    expires_at: expires as u64,
                    for_channel,
                })
            })
            .transpose()
        })
        .await
    }

    async fn advance_blob(
        &self,
        blob: Id,
        from: u64,
        to: u64,
        finished_expiry: u64,
        quota: BlobQuota,
    ) -> Result<bool> {
        self.write(move |conn| {
            let n = exec(
                conn,
                "UPDATE blobs SET offset_bytes = ?3,
                        expires_at = CASE WHEN ?3 = length THEN ?4 ELSE expires_at END
                 WHERE blob_id = ?1 AND offset_bytes = ?2 AND ?3 <= length
                   AND (SELECT COALESCE(SUM(b.offset_bytes), 0) FROM blobs b
                        WHERE b.source = blobs.source AND b.expires_at > ?5) + (?3 - ?2) <= ?6",
                params![
                    blob.as_bytes().as_slice(),
                    from as i64,
                    to as i64,
                    finished_expiry as i64,
                    quota.now as i64,
                    quota.bytes.min(crate::store::MAX_COUNTER) as i64
                ],
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

#[cfg(test)]
mod tests {
    use super::*;

    fn version(conn: &Connection) -> i64 {
        conn.pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap()
    }

    /// A relay upgraded from schema 3 (before one row per append) keeps its data: the
    /// append's idempotency record moves onto its entry, and the database as it was is kept
    /// beside it for going back. A database already current is not copied again.
    #[test]
    fn an_old_database_is_copied_then_migrated_with_its_data() {
        let dir = tempfile::tempdir().unwrap();
        let (group, request) = ([7u8; 16], [9u8; 16]);
        {
            let mut conn = Connection::open(dir.path().join("relay.db")).unwrap();
            migrations().to_version(&mut conn, 3).unwrap();
            conn.execute(
                "INSERT INTO groups (group_id, current_epoch, next_seq, created_at) \
                 VALUES (?1, 0, 2, 1)",
                [&group[..]],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO entries (group_id, seq, epoch, kind, body, stored_at) \
                 VALUES (?1, 1, 0, 1, x'00ff', 1)",
                [&group[..]],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO requests (scope, target, request_id, result, stored_at) \
                 VALUES ('append', ?1, ?2, '1', 1)",
                [&group[..], &request[..]],
            )
            .unwrap();
        }

        let store = SqliteStore::open(dir.path()).unwrap();
        drop(store);

        let backup = dir.path().join("relay.db.before-migration-v3");
        let old = Connection::open(&backup).unwrap();
        assert_eq!(version(&old), 3);
        let kept: i64 = old
            .query_row(
                "SELECT COUNT(*) FROM requests WHERE scope = 'append'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(kept, 1, "the copy is the database before the migration");

        let conn = Connection::open(dir.path().join("relay.db")).unwrap();
        assert_eq!(version(&conn), 5);
        let (body, moved): (Vec<u8>, Vec<u8>) = conn
            .query_row(
                "SELECT body, request_id FROM entries WHERE group_id = ?1 AND seq = 1",
                [&group[..]],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(body, vec![0x00, 0xff]);
        assert_eq!(
            moved,
            request.to_vec(),
            "the idempotency key moved onto its entry"
        );
        let left: i64 = conn
            .query_row("SELECT COUNT(*) FROM requests", [], |r| r.get(0))
            .unwrap();
        assert_eq!(left, 0);
        drop(conn);

        // Opened again: nothing to migrate, no second copy.
        std::fs::remove_file(&backup).unwrap();
        drop(SqliteStore::open(dir.path()).unwrap());
        assert!(!backup.exists(), "a current database was copied");
        // A new database is not copied either.
        let fresh = tempfile::tempdir().unwrap();
        drop(SqliteStore::open(fresh.path()).unwrap());
        let names: Vec<_> = std::fs::read_dir(fresh.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(
            names.iter().all(|n| !n.contains("before-migration")),
            "{names:?}"
        );
    }
}
