//! The profile's database: one SQLCipher-encrypted SQLite file holding keys, MLS state,
//! contacts, conversations and messages.
//!
//! SQLCipher derives the page key from the passphrase (PBKDF2-HMAC-SHA512); nothing in the
//! file is readable without it. A wrong passphrase is detected on open.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, params};
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
    ])
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
        if passphrase.is_empty() {
            return Err(Error::Usage("the passphrase must not be empty".into()));
        }
        let conn = Connection::open(path)
            .map_err(|e| Error::Storage(format!("cannot open {}: {e}", path.display())))?;
        conn.pragma_update(None, "key", passphrase)?;
        // SQLCipher would log a wrong key to stderr itself (its logger starts with the first
        // key); the error we return says it in one line.
        let _ = conn.execute_batch("PRAGMA cipher_log_level = NONE");
        // The first read fails if the key is wrong (or the file is not a database).
        let check: rusqlite::Result<i64> =
            conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0));
        if check.is_err() {
            return Err(Error::WrongPassphrase);
        }
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        // Deleted rows (expired or wiped messages) are overwritten, not left in free pages.
        conn.pragma_update(None, "secure_delete", true)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
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

    pub fn conn(&self) -> MutexGuard<'_, Connection> {
        // A poisoned lock means a panic mid-statement; SQLite rolled the statement back.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run `f` inside one transaction. MLS storage writes made by `f` (through the same
    /// connection) are part of it.
    pub fn transaction<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        self.conn().execute_batch("BEGIN IMMEDIATE")?;
        match f() {
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

    pub fn get_setting(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT value FROM settings WHERE key = ?1",
                params![key],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub fn setting(&self, key: &str) -> Result<Vec<u8>> {
        self.get_setting(key)?.ok_or_else(|| {
            Error::Storage(format!(
                "profile is missing its {key}; was its creation interrupted?"
            ))
        })
    }

    pub fn setting_string(&self, key: &str) -> Result<String> {
        String::from_utf8(self.setting(key)?)
            .map_err(|_| Error::Storage(format!("corrupt setting {key}")))
    }

    pub fn set_setting(&self, key: &str, value: &[u8]) -> Result<()> {
        self.conn().execute(
            "INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
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
        db.set_setting("k", b"v").expect("write");
        drop(db);
        let db = Db::open(&path, "pass").expect("reopen");
        assert_eq!(db.get_setting("k").expect("read"), Some(b"v".to_vec()));
        let version: i64 = db
            .conn()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .expect("version");
        assert_eq!(version, 12);
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
}
