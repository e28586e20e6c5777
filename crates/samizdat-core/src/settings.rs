//! The `settings` table and its owner: every key the profile keeps there, typed.
//!
//! A key is a [`Setting`], never a string: a misspelt key is a compile error, and the keys
//! that belong to one group (`recover:…`, `pending_commit:…`, `invitation_answer:…`) are
//! variants that carry the group, listed and deleted by their [`Family`].

use std::borrow::Cow;

use rusqlite::{OptionalExtension, params};
use samizdat_proto::Id;

use crate::store::Db;
use crate::{Error, Result};

/// One key of the `settings` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    /// The person's display name.
    Name,
    /// The primary relay's address.
    Relay,
    /// Relays that could not be reached, and since when (JSON).
    RelaysDown,
    /// The primary mailbox: its id and its owner's signing key (PKCS#8).
    MailboxId,
    MailboxKey,
    /// This device's MLS signing key pair, and the cipher suite it is for.
    MlsPublic,
    MlsSecret,
    Ciphersuite,
    /// When the last-resort KeyPackage was last replaced (Unix seconds).
    LastResortAt,
    /// The network settings: the proxy, isolation, and the salt isolation identities hash.
    Proxy,
    Isolate,
    IsolationSalt,
    /// The self group's id (the person's own devices).
    SelfGroup,
    /// A linked device: the certificate its first device signed, and the name it was given.
    DeviceCert,
    DeviceName,
    /// Settings the person's devices share (see [`Setting::SHARED`]).
    MoveAfter,
    AutoDownloadBytes,
    /// The state to share with the person's other devices, and whether it changed.
    StateArchive,
    SelfStateDirty,
    /// A device being linked: the history it was sent, its key for the answer, the first
    /// device's refusal, how many messages it imported.
    HistoryArchive,
    JoinHpkeSecret,
    JoinHpkePublic,
    JoinRefused,
    HistoryImported,
    /// The duress passphrase's derived key, and whether this profile manages one.
    DuressKey,
    DuressManaged,
    /// What the app's notifications may show ([`crate::NotifyLevel`]).
    Notifications,
    /// Read receipts sent and shown (`1`) or not (absent or `0`, the default).
    ReadReceipts,
    /// Calls may connect directly, showing each side the other's address (`1`), or only
    /// through the relay (absent or `0`, the default).
    CallsDirect,
    /// A group whose log no longer takes our token: recover it by moving.
    Recover(Id),
    /// A commit of ours sent but not yet seen in the group's log.
    PendingCommit(Id),
    /// Another device's answer to an invitation that arrived here (`1` accept, `0` decline).
    InvitationAnswer(Id),
}

/// The keys that name a group: listed together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Recover,
    PendingCommit,
    InvitationAnswer,
}

impl Family {
    fn prefix(self) -> &'static str {
        match self {
            Family::Recover => "recover:",
            Family::PendingCommit => "pending_commit:",
            Family::InvitationAnswer => "invitation_answer:",
        }
    }

    fn of(self, group: Id) -> Setting {
        match self {
            Family::Recover => Setting::Recover(group),
            Family::PendingCommit => Setting::PendingCommit(group),
            Family::InvitationAnswer => Setting::InvitationAnswer(group),
        }
    }
}

impl Setting {
    /// What every device of a person shares (carried in the state archive between them).
    pub const SHARED: [Setting; 4] = [
        Setting::AutoDownloadBytes,
        Setting::MoveAfter,
        Setting::ReadReceipts,
        Setting::CallsDirect,
    ];

    /// The key as stored.
    pub fn key(self) -> Cow<'static, str> {
        use Setting::*;
        let fixed = match self {
            Name => "name",
            Relay => "relay",
            RelaysDown => "relays_down",
            MailboxId => "mailbox_id",
            MailboxKey => "mailbox_key",
            MlsPublic => "mls_public",
            MlsSecret => "mls_secret",
            Ciphersuite => "ciphersuite",
            LastResortAt => "last_resort_at",
            Proxy => "proxy",
            Isolate => "isolate",
            IsolationSalt => "isolation_salt",
            SelfGroup => "self_group",
            DeviceCert => "device_cert",
            DeviceName => "device_name",
            MoveAfter => "move_after",
            AutoDownloadBytes => "auto_download_bytes",
            StateArchive => "state_archive",
            SelfStateDirty => "self_state_dirty",
            HistoryArchive => "history_archive",
            JoinHpkeSecret => "join_hpke_secret",
            JoinHpkePublic => "join_hpke_public",
            JoinRefused => "join_refused",
            HistoryImported => "history_imported",
            DuressKey => "duress_key",
            DuressManaged => "duress_managed",
            Notifications => "notifications",
            ReadReceipts => "read_receipts",
            CallsDirect => "calls_direct",
            Recover(g) => return format!("{}{g}", Family::Recover.prefix()).into(),
            PendingCommit(g) => return format!("{}{g}", Family::PendingCommit.prefix()).into(),
            InvitationAnswer(g) => {
                return format!("{}{g}", Family::InvitationAnswer.prefix()).into();
            }
        };
        fixed.into()
    }

    /// A shared setting by its stored key (what another device's archive names).
    pub fn shared(key: &str) -> Option<Setting> {
        Setting::SHARED.into_iter().find(|s| s.key() == key)
    }
}

impl Db {
    pub fn get_setting(&self, key: Setting) -> Result<Option<Vec<u8>>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT value FROM settings WHERE key = ?1",
                params![key.key()],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// A setting every profile has (a missing one means its creation was interrupted).
    pub fn setting(&self, key: Setting) -> Result<Vec<u8>> {
        self.get_setting(key)?.ok_or_else(|| {
            Error::Storage(format!(
                "profile is missing its {}; was its creation interrupted?",
                key.key()
            ))
        })
    }

    pub fn setting_string(&self, key: Setting) -> Result<String> {
        String::from_utf8(self.setting(key)?)
            .map_err(|_| Error::Storage(format!("corrupt setting {}", key.key())))
    }

    pub fn set_setting(&self, key: Setting, value: &[u8]) -> Result<()> {
        self.conn().execute(
            "INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![key.key(), value],
        )?;
        Ok(())
    }

    pub fn delete_setting(&self, key: Setting) -> Result<()> {
        self.conn()
            .execute("DELETE FROM settings WHERE key = ?1", params![key.key()])?;
        Ok(())
    }

    /// Every setting of a family, with its group (a key whose group does not parse is a
    /// damaged row: skipped).
    pub fn settings_of(&self, family: Family) -> Result<Vec<(Setting, Vec<u8>)>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT key, value FROM settings WHERE key >= ?1 AND key < ?2 ORDER BY key")?;
        let prefix = family.prefix();
        // Every key that starts with the prefix sorts between it and the prefix with its
        // last byte (':') raised by one (';').
        let end = format!("{};", &prefix[..prefix.len() - 1]);
        let rows = stmt
            .query_map(params![prefix, end], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows
            .into_iter()
            .filter_map(|(k, v)| {
                let group: Id = k.strip_prefix(prefix)?.parse().ok()?;
                Some((family.of(group), v))
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys are what older profiles stored (a rename would lose settings), and a family
    /// lists only its own keys, each with its group.
    #[test]
    fn keys_are_stable_and_families_list_their_own() {
        assert_eq!(Setting::MoveAfter.key(), "move_after");
        assert_eq!(Setting::DuressManaged.key(), "duress_managed");
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("p.db"), "a test passphrase").expect("open");
        let (a, b) = (crate::random_id(), crate::random_id());
        db.set_setting(Setting::Recover(a), b"1").expect("write");
        db.set_setting(Setting::Recover(b), b"1").expect("write");
        db.set_setting(Setting::PendingCommit(a), b"1")
            .expect("write");
        db.set_setting(Setting::Name, b"someone").expect("write");
        let mut listed: Vec<Setting> = db
            .settings_of(Family::Recover)
            .expect("list")
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        let mut want = vec![Setting::Recover(a), Setting::Recover(b)];
        listed.sort_by_key(|s| s.key());
        want.sort_by_key(|s| s.key());
        assert_eq!(listed, want);
        db.delete_setting(Setting::Recover(a)).expect("delete");
        assert_eq!(db.settings_of(Family::Recover).expect("list").len(), 1);
        assert_eq!(
            db.settings_of(Family::PendingCommit).expect("list").len(),
            1
        );
        assert_eq!(Setting::shared("move_after"), Some(Setting::MoveAfter));
        assert_eq!(Setting::shared("mls_secret"), None);
    }
}
