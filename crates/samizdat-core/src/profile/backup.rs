//! Encrypted backup and restore.
//!
//! A backup file is `SZBACKUP1\n ‖ salt(16) ‖ database`, where the database is a SQLCipher
//! export of the whole profile (contacts, conversations, history, settings, the MLS state,
//! cursors) keyed with a raw key from Argon2id(backup passphrase, salt) — never written in
//! plaintext, not even as a temporary file. Unless left out, the encrypted attachment copies
//! travel in it too (table `backup_attachments`: file name and ciphertext, still under each
//! file's own key). Restoring re-keys it under the profile
//! passphrase; the restored client then catches up from the conversations' logs from the
//! backup's cursors (within the relays' retention).
//!
//! Forward secrecy: a backup holds the keys of the epochs it was made in; anyone with the
//! file and its passphrase can read what was sent in those epochs while the logs keep it.

use super::*;

const MAGIC: &[u8] = b"SZBACKUP1\n";
const SALT: usize = 16;

/// The raw SQLCipher key for a backup, as the `x'…'` literal SQLCipher takes.
fn backup_key(passphrase: &str, salt: &[u8]) -> Result<zeroize::Zeroizing<String>> {
    let key = zeroize::Zeroizing::new(crate::wipe::derive_key(passphrase, salt)?);
    Ok(zeroize::Zeroizing::new(format!(
        "x'{}'",
        hex::encode(key.as_slice())
    )))
}

fn check_strength(passphrase: &str) -> Result<()> {
    if passphrase.chars().count() < 8 {
        return Err(Error::Usage(
            "the backup passphrase must have at least 8 characters".into(),
        ));
    }
    Ok(())
}

/// A temporary file next to `path` (same file system), removed (overwritten) on drop.
struct Temp(PathBuf);

impl Drop for Temp {
    fn drop(&mut self) {
        if self.0.exists() {
            let _ = crate::wipe::wipe_file(&self.0);
        }
    }
}

impl Profile {
    /// Write an encrypted backup of the whole profile to `out`. Returns its size in bytes.
    pub fn backup(&self, out: &Path, passphrase: &str, with_attachments: bool) -> Result<u64> {
        check_strength(passphrase)?;
        let salt = {
            let mut s = vec![0u8; SALT];
            aws_lc_rs::rand::fill(&mut s)
                .map_err(|_| Error::Crypto("the system random generator failed".into()))?;
            s
        };
        let key = backup_key(passphrase, &salt)?;
        let dir = out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let temp = Temp(dir.join(format!(".samizdat-backup-{}.tmp", random_id())));
        let version: i64 = self
            .db
            .conn()
            .pragma_query_value(None, "user_version", |r| r.get(0))?;
        {
            let conn = self.db.conn();
            conn.execute(
                "ATTACH DATABASE ?1 AS backup KEY ?2",
                params![temp.0.to_string_lossy(), key.as_str()],
            )?;
            let exported = conn
                .query_row("SELECT sqlcipher_export('backup')", [], |_| Ok(()))
                .and_then(|()| {
                    conn.execute_batch(&format!("PRAGMA backup.user_version = {version}"))
                })
                .map_err(Error::from)
                .and_then(|()| {
                    if with_attachments {
                        self.export_attachments(&conn)
                    } else {
                        // Restored messages then say their files are not on the device.
                        conn.execute_batch("UPDATE backup.messages SET attachment_file = NULL")
                            .map_err(Error::from)
                    }
                });
            let _ = conn.execute_batch("DETACH DATABASE backup");
            exported?;
        }
        let tmp_out = Temp(out.with_extension("partial"));
        let written = (|| -> std::io::Result<u64> {
            use std::io::Write;
            let _ = std::fs::remove_file(&tmp_out.0);
            let mut w = std::io::BufWriter::new(crate::create_private_file(&tmp_out.0)?);
            w.write_all(MAGIC)?;
            w.write_all(&salt)?;
            let n = std::io::copy(&mut std::fs::File::open(&temp.0)?, &mut w)?;
            w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            std::fs::rename(&tmp_out.0, out)?;
            Ok((MAGIC.len() + SALT) as u64 + n)
        })()
        .map_err(|e| Error::Storage(format!("cannot write {}: {e}", out.display())))?;
        Ok(written)
    }

    /// Copy the encrypted attachment files into the attached `backup` database.
    fn export_attachments(&self, conn: &rusqlite::Connection) -> Result<()> {
        conn.execute_batch(
            "CREATE TABLE backup.backup_attachments (name TEXT PRIMARY KEY, bytes BLOB NOT NULL)",
        )?;
        let dir = self.attachments_dir()?;
        let names: Vec<String> = conn
            .prepare("SELECT attachment_file FROM main.messages WHERE attachment_file IS NOT NULL")?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for name in names {
            // A copy that is gone (a message that just disappeared) is simply not in it.
            let Ok(bytes) = std::fs::read(dir.join(&name)) else {
                continue;
            };
            conn.execute(
                "INSERT OR IGNORE INTO backup.backup_attachments (name, bytes) VALUES (?1, ?2)",
                params![name, bytes],
            )?;
        }
        Ok(())
    }

    /// Recreate a profile in `home` (which must hold none) from a backup, keyed with
    /// `passphrase` from now on. A wrong backup passphrase or a damaged file is an error
    /// and leaves nothing behind.
    pub fn restore(
        home: &Path,
        file: &Path,
        backup_passphrase: &str,
        passphrase: &str,
    ) -> Result<()> {
        crate::store::check_new_passphrase(passphrase)?;
        if Profile::exists(home) {
            return Err(Error::Usage(format!(
                "a profile already exists in {}; restore into an empty directory",
                home.display()
            )));
        }
        if passphrase.is_empty() {
            return Err(Error::Usage("the passphrase must not be empty".into()));
        }
        let cannot_read =
            |e: std::io::Error| Error::Usage(format!("cannot read {}: {e}", file.display()));
        let mut input = std::fs::File::open(file).map_err(cannot_read)?;
        let mut head = vec![0u8; MAGIC.len() + SALT];
        {
            use std::io::Read;
            let mut n = 0;
            while n < head.len() {
                match input.read(&mut head[n..]).map_err(cannot_read)? {
                    0 => break,
                    k => n += k,
                }
            }
            if n < MAGIC.len() || !head.starts_with(MAGIC) {
                return Err(Error::Usage(format!(
                    "{} is not a samizdat backup",
                    file.display()
                )));
            }
            if n < head.len() {
                return Err(Error::Usage(
                    "the backup file is damaged (too short)".into(),
                ));
            }
        }
        let salt = &head[MAGIC.len()..];
        let key = backup_key(backup_passphrase, salt)?;
        let created = !home.exists();
        crate::create_private_dir(home)?;
        let temp = Temp(home.join(".restore.tmp"));
        let _ = std::fs::remove_file(&temp.0);
        crate::create_private_file(&temp.0)
            .and_then(|mut t| std::io::copy(&mut input, &mut t))
            .map_err(|e| Error::Storage(e.to_string()))?;
        let result = (|| -> Result<()> {
            let conn =
                rusqlite::Connection::open(&temp.0).map_err(|e| Error::Storage(e.to_string()))?;
            conn.execute_batch(&format!("PRAGMA key = \"{}\"", key.as_str()))?;
            let _ = conn.execute_batch("PRAGMA cipher_log_level = NONE");
            let version: i64 = conn
                .query_row("SELECT count(*) FROM sqlite_master", [], |r| {
                    r.get::<_, i64>(0)
                })
                .and_then(|_| conn.pragma_query_value(None, "user_version", |r| r.get(0)))
                .map_err(|_| {
                    Error::Usage("wrong backup passphrase, or the backup file is damaged".into())
                })?;
            restore_attachments(&conn, home)?;
            let target = Profile::db_path(home);
            conn.execute(
                "ATTACH DATABASE ?1 AS profile KEY ?2",
                params![target.to_string_lossy(), passphrase],
            )?;
            let exported = conn
                .query_row("SELECT sqlcipher_export('profile')", [], |_| Ok(()))
                .and_then(|()| {
                    conn.execute_batch(&format!("PRAGMA profile.user_version = {version}"))
                });
            let _ = conn.execute_batch("DETACH DATABASE profile");
            exported.map_err(|_| {
                Error::Usage("the backup file is damaged (its database cannot be read)".into())
            })?;
            Ok(())
        })();
        drop(temp);
        if let Err(e) = result {
            remove_db_files(&Profile::db_path(home));
            let _ = crate::wipe::wipe(&home.join(super::attachments::ATTACHMENTS_DIR));
            if created {
                let _ = std::fs::remove_dir(home);
            }
            return Err(e);
        }
        crate::wipe::init_duress(home)?;
        // It opens (and runs any newer migrations) with the new passphrase. The copy numbered
        // the messages anew: the search index is built again from them.
        let restored = Profile::open(home, passphrase)?;
        restored.reindex_search()
    }
}

/// Write the attachment copies a backup holds into `home`'s attachments directory, then
/// drop them from the (temporary) backup database so the profile does not carry them.
fn restore_attachments(conn: &rusqlite::Connection, home: &Path) -> Result<()> {
    let has: i64 = conn.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE name = 'backup_attachments'",
        [],
        |r| r.get(0),
    )?;
    if has == 0 {
        return Ok(());
    }
    let dir = home.join(super::attachments::ATTACHMENTS_DIR);
    crate::create_private_dir(&dir)?;
    {
        let mut stmt = conn.prepare("SELECT name, bytes FROM backup_attachments")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let name: String = row.get(0)?;
            let bytes: Vec<u8> = row.get(1)?;
            // Names are ours (hex of a message id + ".blob"); anything else is refused.
            let plain = name.len() <= 64
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
                && !name.starts_with('.');
            if !plain {
                return Err(Error::Usage(
                    "the backup file is damaged (an attachment has an odd name)".into(),
                ));
            }
            std::fs::write(dir.join(&name), &bytes)
                .map_err(|e| Error::Storage(format!("cannot write an attachment: {e}")))?;
        }
    }
    conn.execute_batch("DROP TABLE backup_attachments")?;
    Ok(())
}
