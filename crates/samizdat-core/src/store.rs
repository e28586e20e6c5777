//! The profile's database: one SQLCipher-encrypted SQLite file holding keys, MLS state,
//! contacts, conversations and messages.
//!
//! The page key is derived from the passphrase with Argon2id (64 MiB, 3 passes — memory-hard,
//! unlike SQLCipher's own PBKDF2, which GPUs guess about 100 times faster) over the random
//! 16-byte salt SQLCipher keeps at the start of the file, and handed to SQLCipher as a raw
//! key (security review 3, M10). Nothing in the file is readable without it. A wrong
//! passphrase is detected on open. A profile written before (keyed by SQLCipher's PBKDF2) is
//! re-keyed on its first open.

use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{CachedStatement, Connection, Params, Row};
use rusqlite_migration::{M, Migrations};

use crate::{Error, Result};

/// The profile's schema, version by version (`PRAGMA user_version` holds the version reached;
/// backups carry it).
pub(crate) fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(include_str!("../migrations/0001_init.sql")),
        M::up(include_str!("../migrations/0002_invitations.sql")),
        M::up(include_str!("../migrations/0003_service.sql")),
        M::up(include_str!("../migrations/0004_delivery.sql")),
        M::up(include_str!("../migrations/0005_app.sql")),
        M::up(include_str!("../migrations/0006_membership.sql")),
        M::up(include_str!("../migrations/0007_indexes.sql")),
        M::up(include_str!("../migrations/0008_timers.sql")),
        M::up(include_str!("../migrations/0009_attachments.sql")),
        M::up(include_str!("../migrations/0010_relays.sql")),
        M::up(include_str!("../migrations/0011_trees.sql")),
        M::up(include_str!("../migrations/0012_devices.sql")),
        M::up(include_str!("../migrations/0013_drafts.sql")),
        M::up(include_str!("../migrations/0014_device_lists.sql")),
        M::up(include_str!("../migrations/0015_pending_files.sql")),
        M::up(include_str!("../migrations/0016_status_codes.sql")),
        M::up(include_str!("../migrations/0017_self_kind.sql")),
        M::up(include_str!("../migrations/0018_drop_hidden.sql")),
        M::up(include_str!("../migrations/0019_everyday.sql")),
        M::up(include_str!("../migrations/0020_search.sql")),
        M::up(include_str!("../migrations/0021_housekeeping.sql")),
        M::up(include_str!("../migrations/0022_receipts.sql")),
        M::up(include_str!("../migrations/0023_block.sql")),
        M::up(include_str!("../migrations/0024_consent.sql")),
        M::up(include_str!("../migrations/0025_calls.sql")),
        M::up(include_str!("../migrations/0026_group_calls.sql")),
        M::up(include_str!("../migrations/0027_channels.sql")),
    ])
}

/// The shortest passphrase a new profile (or a restored one) may have, in characters — the
/// same in every front (security review 3, M10). Existing profiles with shorter ones still
/// open.
pub const MIN_PASSPHRASE_CHARS: usize = 8;

/// Refuse a passphrase too short for a new profile.
pub fn check_new_passphrase(passphrase: &str) -> Result<()> {
    if passphrase.chars().count() < MIN_PASSPHRASE_CHARS {
        return Err(Error::Usage(format!(
            "the passphrase must have at least {MIN_PASSPHRASE_CHARS} characters"
        )));
    }
    Ok(())
}

/// SQLCipher's salt: the first 16 bytes of the file.
const SALT: usize = 16;

/// The salt at the start of an existing database file (`None` for a new one).
fn file_salt(path: &Path) -> Result<Option<[u8; SALT]>> {
    use std::io::Read;
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::Storage(format!(
                "cannot open {}: {e}",
                path.display()
            )));
        }
    };
    let mut salt = [0u8; SALT];
    match f.read_exact(&mut salt) {
        Ok(()) => Ok(Some(salt)),
        // Empty (created but never written): a new database.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(Error::Storage(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

/// SQLCipher's raw-key literal for `passphrase` over `salt`: `x'<key><salt>'`, the key from
/// Argon2id (see the module comment). The salt in the literal is the file's own, so a new
/// database gets it in its header.
fn raw_key(passphrase: &str, salt: &[u8; SALT]) -> Result<zeroize::Zeroizing<String>> {
    let key = zeroize::Zeroizing::new(crate::wipe::derive_key(passphrase, salt)?);
    Ok(zeroize::Zeroizing::new(format!(
        "x'{}{}'",
        hex::encode(key.as_slice()),
        hex::encode(salt)
    )))
}

/// The first read fails if the key is wrong (or the file is not a database).
fn readable(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
}

/// A shared handle on the profile database. The MLS storage providers use the same
/// connection, so MLS state and messages can commit in one transaction.
#[derive(Clone)]
pub struct Db {
    conn: Arc<Mutex<Connection>>,
}

impl Db {
    /// Open (or create) the encrypted database at `path` with `passphrase`.
    pub fn open(path: &Path, passphrase: &str) -> Result<Db> {
        Self::open_keyed(path, passphrase, true)
    }

    /// [`Db::open`]; `legacy` allows (and re-keys) a database keyed the old way.
    fn open_keyed(path: &Path, passphrase: &str, legacy: bool) -> Result<Db> {
        if passphrase.is_empty() {
            return Err(Error::Usage("the passphrase must not be empty".into()));
        }
        let conn = Connection::open(path)
            .map_err(|e| Error::Storage(format!("cannot open {}: {e}", path.display())))?;
        let salt = match file_salt(path)? {
            Some(salt) => salt,
            None => {
                let mut salt = [0u8; SALT];
                aws_lc_rs::rand::fill(&mut salt)
                    .map_err(|_| Error::Crypto("the system random generator failed".into()))?;
                salt
            }
        };
        let key = raw_key(passphrase, &salt)?;
        conn.pragma_update(None, "key", key.as_str())?;
        // SQLCipher would log a wrong key to stderr itself (its logger starts with the first
        // key); the error we return says it in one line.
        let _ = conn.execute_batch("PRAGMA cipher_log_level = NONE");
        if readable(&conn).is_err() {
            if !legacy {
                return Err(Error::Storage(
                    "the profile database could not be re-keyed".into(),
                ));
            }
            // A profile from before Argon2id: SQLCipher's PBKDF2 on the passphrase itself.
            // If that opens it, re-key it now, in place (every page rewritten under the new
            // key; the same salt).
            drop(conn);
            let conn = Connection::open(path)
                .map_err(|e| Error::Storage(format!("cannot open {}: {e}", path.display())))?;
            conn.pragma_update(None, "key", passphrase)?;
            let _ = conn.execute_batch("PRAGMA cipher_log_level = NONE");
            if readable(&conn).is_err() {
                return Err(Error::WrongPassphrase);
            }
            // Re-keying rewrites the main file; the journal must not be a WAL meanwhile.
            conn.pragma_update(None, "journal_mode", "DELETE")?;
            conn.pragma_update(None, "rekey", key.as_str())?;
            drop(conn);
            return Self::open_keyed(path, passphrase, false);
        }
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        // Deleted rows (expired or wiped messages) are overwritten, not left in free pages.
        conn.pragma_update(None, "secure_delete", true)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        // Room for every statement the profile runs (about 200 distinct ones).
        conn.set_prepared_statement_cache_capacity(256);
        let mut conn = conn;
        migrations().to_latest(&mut conn).map_err(|e| match e {
            rusqlite_migration::Error::MigrationDefinition(
                rusqlite_migration::MigrationDefinitionError::DatabaseTooFarAhead,
            ) => Error::Storage(
                "this profile was written by a newer samizdat; open it with that version".into(),
            ),
            e => Error::Storage(format!("cannot migrate the profile database: {e}")),
        })?;
        Ok(Db {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    pub fn conn(&self) -> Conn<'_> {
        // A poisoned lock means a panic mid-statement; SQLite rolled the statement back.
        Conn(self.conn.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Run `f` inside one transaction. MLS storage writes made by `f` (through the same
    /// connection) are part of it. `f` gets the transaction's [`Tx`]: what must only happen
    /// inside one takes it, so the compiler checks that a transaction is open.
    pub fn transaction<T>(&self, f: impl FnOnce(&Tx) -> Result<T>) -> Result<T> {
        self.conn().execute_batch("BEGIN IMMEDIATE")?;
        match f(&Tx(self)) {
            Ok(v) => {
                self.conn().execute_batch("COMMIT")?;
                Ok(v)
            }
            Err(e) => {
                let _ = self.conn().execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    /// [`Db::transaction`] for a write the relay's log gives back: applying an entry someone
    /// else appended, taking our own entry's echo, marking a message the relay acknowledged.
    /// It commits without waiting for the disk (`synchronous = NORMAL`): a crash of the
    /// process loses nothing (the WAL is written), a power loss may lose it until the next
    /// durable commit or checkpoint — and then the cursor is back before the entry, which is
    /// read and applied again (its message id makes that display once). SQLite's WAL
    /// commits in order, so any later durable commit carries this one to the disk too; what
    /// must be on the disk before anyone outside sees it (a ratchet step before the relay
    /// takes its ciphertext, a mailbox entry before it is deleted) uses
    /// [`Db::transaction`].
    pub fn transaction_recoverable<T>(&self, f: impl FnOnce(&Tx) -> Result<T>) -> Result<T> {
        self.conn().execute_batch("PRAGMA synchronous = NORMAL")?;
        let result = self.transaction(f);
        let restored = self.conn().execute_batch("PRAGMA synchronous = FULL");
        let value = result?;
        restored?;
        Ok(value)
    }
}

/// The locked connection. Its `execute`, `query_row` and `prepare` go through the
/// connection's statement cache: the profile runs the same few dozen statements for every
/// message, and parsing them again each time was a fifth of a send's CPU (perf, session 6).
/// Everything else is the [`Connection`]'s own.
pub struct Conn<'a>(MutexGuard<'a, Connection>);

impl Conn<'_> {
    /// [`Connection::execute`], prepared once.
    pub fn execute<P: Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.0.prepare_cached(sql)?.execute(params)
    }

    /// [`Connection::query_row`], prepared once.
    pub fn query_row<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
    where
        P: Params,
        F: FnOnce(&Row<'_>) -> rusqlite::Result<T>,
    {
        self.0.prepare_cached(sql)?.query_row(params, f)
    }

    /// [`Connection::prepare`], prepared once (the statement returns to the cache when
    /// dropped).
    pub fn prepare(&self, sql: &str) -> rusqlite::Result<CachedStatement<'_>> {
        self.0.prepare_cached(sql)
    }
}

impl Deref for Conn<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.0
    }
}

impl DerefMut for Conn<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        &mut self.0
    }
}

/// An open transaction: made only by [`Db::transaction`] and passed explicitly to what must
/// run inside one (several writes that stand or fall together), which writes through it.
pub struct Tx<'a>(&'a Db);

impl Tx<'_> {
    /// The connection, inside the transaction.
    pub fn conn(&self) -> Conn<'_> {
        self.0.conn()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The profile schema migrates with rusqlite_migration: every migration applies in order
    /// on an empty database, reopening changes nothing, and a profile written by a newer
    /// samizdat (a version this one does not know) is refused with a clear error.
    #[test]
    fn migrations_apply_once_and_a_newer_profile_is_refused() {
        migrations()
            .validate()
            .expect("the migrations apply in order");
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("profile.db");
        let db = Db::open(&path, "pass").expect("create");
        db.set_setting(crate::settings::Setting::Name, b"v")
            .expect("write");
        drop(db);
        let db = Db::open(&path, "pass").expect("reopen");
        assert_eq!(
            db.get_setting(crate::settings::Setting::Name)
                .expect("read"),
            Some(b"v".to_vec())
        );
        let version: i64 = db
            .conn()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .expect("version");
        assert_eq!(version, 27);
        db.conn()
            .pragma_update(None, "user_version", 99)
            .expect("set version");
        drop(db);
        match Db::open(&path, "pass") {
            Err(Error::Storage(m)) => assert!(m.contains("newer samizdat"), "{m}"),
            Err(e) => panic!("unexpected error: {e}"),
            Ok(_) => panic!("a newer profile must be refused"),
        }
    }

    /// Statuses written as English sentences by earlier versions become codes that each front
    /// says in its language (migration 0016); refusals keep their reason.
    /// Migration 17: the self group of an older profile (known by its reserved name) becomes
    /// kind `self`; every other row and column comes through unchanged. Migration 18 then
    /// drops `hidden`, which the kind replaced.
    #[test]
    fn the_self_group_of_older_profiles_becomes_a_kind() {
        let mut conn = Connection::open_in_memory().expect("db");
        migrations().to_version(&mut conn, 16).expect("up to 16");
        conn.execute_batch(
            "INSERT INTO conversations (group_id, kind, name, relay, read_epoch, cursor, created_at, timer_secs, log_id, seq_base, hidden, status, status_reason)
             VALUES (x'01', 'group', char(1) || 'self', 'http://r', 3, 9, 5, 0, x'0a', 0, 1, NULL, NULL),
                    (x'02', 'group', 'friends', 'http://r', 2, 7, 6, 60, NULL, 4, 0, 'refusing', 'reused_invite'),
                    (x'03', 'direct', 'bob', 'http://s', 1, 1, 7, 0, NULL, 0, 0, NULL, NULL);",
        )
        .expect("insert");
        migrations().to_version(&mut conn, 17).expect("up to 17");
        let rows: Vec<(
            String,
            String,
            i64,
            i64,
            i64,
            Option<Vec<u8>>,
            i64,
            i64,
            Option<String>,
        )> = {
            let mut stmt = conn
                .prepare(
                    "SELECT kind, name, cursor, timer_secs, seq_base, log_id, hidden, created_at, status_reason
                     FROM conversations ORDER BY group_id",
                )
                .expect("select");
            stmt.query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                ))
            })
            .expect("rows")
            .collect::<rusqlite::Result<_>>()
            .expect("rows")
        };
        let kinds: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
        assert_eq!(kinds, ["self", "group", "direct"]);
        assert_eq!(rows[0].1, "\u{1}self");
        assert_eq!(
            (rows[0].2, rows[0].5.clone(), rows[0].6),
            (9, Some(vec![0x0a]), 1)
        );
        assert_eq!((rows[1].3, rows[1].4, rows[1].7), (60, 4, 6));
        assert_eq!(rows[1].8.as_deref(), Some("reused_invite"));
        // The new constraint still refuses what is no kind.
        assert!(
            conn.execute(
                "INSERT INTO conversations (group_id, kind, name, relay, read_epoch, created_at) VALUES (x'04', 'other', 'x', 'r', 0, 0)",
                [],
            )
            .is_err()
        );
        // Migration 18: `hidden` said what the kind says; it goes, and the rows stay.
        migrations().to_latest(&mut conn).expect("to latest");
        assert!(
            conn.prepare("SELECT hidden FROM conversations").is_err(),
            "the column is gone"
        );
        let self_groups: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM conversations WHERE kind = 'self'",
                [],
                |r| r.get(0),
            )
            .expect("count");
        assert_eq!(self_groups, 1);
    }

    #[test]
    fn english_statuses_of_older_profiles_become_codes() {
        use crate::{ConvStatus, Refusal};
        let mut conn = Connection::open_in_memory().expect("db");
        migrations().to_version(&mut conn, 15).expect("up to 15");
        let old = [
            ("you left", Some(ConvStatus::Left)),
            ("removed from the group", Some(ConvStatus::Removed)),
            (
                "lost sync with the group (the commit by bob at position 7 does not match the relay); ask a member to re-add you",
                Some(ConvStatus::LostSync),
            ),
            (
                "refusing: an introduction reused a single-use invite",
                Some(ConvStatus::Refusing {
                    reason: Refusal::ReusedInvite,
                }),
            ),
            (
                "refused: an introduction used an expired invite",
                Some(ConvStatus::Refused {
                    reason: Refusal::ExpiredInvite,
                }),
            ),
        ];
        for (i, (status, _)) in old.iter().enumerate() {
            conn.execute(
                "INSERT INTO conversations (group_id, kind, name, relay, read_epoch, status, created_at)
                 VALUES (?1, 'group', ?2, 'http://r', 1, ?3, 0)",
                rusqlite::params![vec![i as u8; 16], format!("c{i}"), status],
            )
            .expect("insert");
        }
        migrations().to_latest(&mut conn).expect("to latest");
        for (i, (_, want)) in old.iter().enumerate() {
            let (code, reason): (Option<String>, Option<String>) = conn
                .query_row(
                    "SELECT status, status_reason FROM conversations WHERE name = ?1",
                    [format!("c{i}")],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .expect("row");
            assert_eq!(
                &ConvStatus::from_columns(code.as_deref(), reason.as_deref()),
                want,
                "{code:?} {reason:?}"
            );
        }
    }

    /// M10: the database is keyed by Argon2id, not by SQLCipher's PBKDF2 on the passphrase
    /// (which no longer opens it); a profile written the old way opens with its passphrase
    /// and is re-keyed in place, keeping its rows; a wrong passphrase opens neither way.
    #[test]
    fn finding_m10_the_database_is_keyed_by_argon2id_and_old_profiles_are_rekeyed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let legacy_opens = |path: &Path, pass: &str| {
            let conn = Connection::open(path).expect("open");
            let _ = conn.execute_batch("PRAGMA cipher_log_level = NONE");
            conn.pragma_update(None, "key", pass).expect("key");
            readable(&conn).is_ok()
        };
        // A new database: only the Argon2id key opens it.
        let path = dir.path().join("new.db");
        Db::open(&path, "correct horse")
            .expect("create")
            .set_setting(crate::settings::Setting::Name, b"v")
            .expect("write");
        assert!(
            !legacy_opens(&path, "correct horse"),
            "PBKDF2 on the passphrase still opens it"
        );
        assert!(matches!(
            Db::open(&path, "wrong horse"),
            Err(Error::WrongPassphrase)
        ));
        assert_eq!(
            Db::open(&path, "correct horse")
                .expect("reopen")
                .get_setting(crate::settings::Setting::Name)
                .expect("read"),
            Some(b"v".to_vec())
        );
        // A database keyed the old way, with a row and in WAL mode as profiles were.
        let old = dir.path().join("old.db");
        {
            let conn = Connection::open(&old).expect("open");
            conn.pragma_update(None, "key", "correct horse")
                .expect("key");
            conn.pragma_update(None, "journal_mode", "WAL")
                .expect("wal");
            conn.execute_batch(
                "CREATE TABLE kept (v TEXT); INSERT INTO kept VALUES ('still here')",
            )
            .expect("write");
        }
        assert!(matches!(
            Db::open(&old, "wrong horse"),
            Err(Error::WrongPassphrase)
        ));
        assert!(
            legacy_opens(&old, "correct horse"),
            "a wrong passphrase must not re-key"
        );
        let db = Db::open(&old, "correct horse").expect("the old profile opens");
        let kept: String = db
            .conn()
            .query_row("SELECT v FROM kept", [], |r| r.get(0))
            .expect("row kept");
        assert_eq!(kept, "still here");
        drop(db);
        assert!(
            !legacy_opens(&old, "correct horse"),
            "the old profile was not re-keyed"
        );
        let db = Db::open(&old, "correct horse").expect("reopens with the new key");
        let kept: String = db
            .conn()
            .query_row("SELECT v FROM kept", [], |r| r.get(0))
            .expect("row kept");
        assert_eq!(kept, "still here");
    }

    /// A recoverable transaction commits without waiting for the disk, and only it: every
    /// other commit is durable again after it, whether it succeeded or failed — a slip here
    /// would quietly make the ratchet step before an append lazy too.
    #[test]
    fn only_a_recoverable_transaction_skips_the_fsync() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Db::open(&dir.path().join("profile.db"), "pass").expect("create");
        let level = |db: &Db| -> i64 {
            db.conn()
                .pragma_query_value(None, "synchronous", |r| r.get(0))
                .expect("synchronous")
        };
        const NORMAL: i64 = 1;
        const FULL: i64 = 2;
        assert_eq!(level(&db), FULL);
        let inside = db
            .transaction_recoverable(|_| Ok(level(&db)))
            .expect("commits");
        assert_eq!(inside, NORMAL);
        assert_eq!(level(&db), FULL);
        let failed: Result<()> =
            db.transaction_recoverable(|_| Err(Error::Usage("refused".into())));
        assert!(matches!(failed, Err(Error::Usage(_))));
        assert_eq!(level(&db), FULL);
        // A statement run twice comes from the cache, and still sees what changed between.
        db.set_setting(crate::settings::Setting::Name, b"one")
            .expect("write");
        db.set_setting(crate::settings::Setting::Name, b"two")
            .expect("write again");
        assert_eq!(
            db.get_setting(crate::settings::Setting::Name)
                .expect("read"),
            Some(b"two".to_vec())
        );
    }
}
