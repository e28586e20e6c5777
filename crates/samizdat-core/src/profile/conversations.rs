//! The `conversations` table and what hangs off a conversation's row: looked up by id or
//! log (a name only through `find_conversation`, at a front's edge), status, forgetting
//! one (its secrets and tokens go with it), epoch tokens.

use super::*;

pub(super) type ConvRow = (
    Vec<u8>,
    String,
    String,
    String,
    i64,
    i64,
    i64,
    Option<Vec<u8>>,
    i64,
);

pub(super) fn conv_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ConvRow> {
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
}

pub(super) const CONV_COLUMNS: &str =
    "group_id, kind, name, relay, read_epoch, cursor, active, log_id, seq_base";

impl Profile {
    /// The conversation with this id (a typed not-found when there is none).
    pub(super) fn conv(&self, id: &ConversationId) -> Result<Conv> {
        self.conv_by_id(id.id())?
            .ok_or_else(|| Error::NotFound(format!("no conversation with id {id}")))
    }

    /// The conversation a person calls `name` (a group's name or a contact's alias): what a
    /// front resolves at its edge before it calls a method with the id.
    /// `@saved` names the saved messages (once they exist: `saved_messages` makes them).
    pub fn find_conversation(&self, name: &str) -> Result<ConversationId> {
        if name == SAVED_TARGET {
            return self
                .self_group()?
                .map(ConversationId::from_id)
                .ok_or_else(|| Error::NotFound("no saved messages yet".into()));
        }
        let id: Option<Vec<u8>> = self
            .db
            .conn()
            .query_row(
                "SELECT group_id FROM conversations WHERE name = ?1 AND kind != 'self'",
                params![name],
                |r| r.get(0),
            )
            .optional()?;
        let id =
            id.ok_or_else(|| Error::NotFound(format!("no contact or group called {name:?}")))?;
        ConversationId::from_slice(&id)
    }

    /// Delete a conversation that never came to be (an accept refused for good), with its
    /// contact, MLS state and tokens (inside the caller's transaction).
    pub(super) fn forget_conversation(&self, tx: &Tx, gid: &Id) -> Result<()> {
        let conn = tx.conn();
        let g = gid.as_bytes();
        conn.execute("DELETE FROM contacts WHERE group_id = ?1", params![g])?;
        for table in [
            "conversations",
            "drafts",
            "last_rosters",
            "epoch_tokens",
            "own_entries",
            "member_names",
            "messages",
            "outbox",
            "mls_groups",
            "mls_epochs",
            "mls_trees",
            "mls_state_bases",
        ] {
            conn.execute(
                &format!("DELETE FROM {table} WHERE group_id = ?1"),
                params![g],
            )?;
        }
        Ok(())
    }

    /// Forget the keys of a conversation we are no longer in (removed, or left and our
    /// leave notice delivered): MLS state and epoch tokens go; the history stays. Inside the
    /// caller's transaction.
    pub(super) fn drop_group_secrets(&self, tx: &Tx, gid: &Id) -> Result<()> {
        // Who was in it: only one of them may re-add us later (M6).
        if let Ok(group) = self.mls.load(gid.as_bytes()) {
            let conn = tx.conn();
            for m in group.members() {
                conn.execute(
                    "INSERT OR IGNORE INTO last_rosters (group_id, person) VALUES (?1, ?2)",
                    params![gid.as_bytes(), &m.fingerprint[..]],
                )?;
            }
        }
        let conn = tx.conn();
        for table in [
            "mls_groups",
            "mls_epochs",
            "mls_trees",
            "mls_state_bases",
            "epoch_tokens",
        ] {
            conn.execute(
                &format!("DELETE FROM {table} WHERE group_id = ?1"),
                params![gid.as_bytes()],
            )?;
        }
        Ok(())
    }

    /// The current name of the conversation with this id.
    pub fn conversation_name(&self, id: &ConversationId) -> Result<String> {
        Ok(self.conv(id)?.name)
    }

    pub(super) fn conv_by_id(&self, id: &Id) -> Result<Option<Conv>> {
        let row = self
            .db
            .conn()
            .query_row(
                &format!("SELECT {CONV_COLUMNS} FROM conversations WHERE group_id = ?1"),
                params![id.as_bytes()],
                conv_from_row,
            )
            .optional()?;
        row.map(Self::conv_from_tuple).transpose()
    }

    /// The conversation whose log on its relay has this id (a push names the log).
    pub(crate) fn conv_by_log(&self, id: &Id) -> Result<Option<Conv>> {
        let row = self
            .db
            .conn()
            .query_row(
                &format!(
                    "SELECT {CONV_COLUMNS} FROM conversations WHERE COALESCE(log_id, group_id) = ?1"
                ),
                params![id.as_bytes()],
                conv_from_row,
            )
            .optional()?;
        row.map(Self::conv_from_tuple).transpose()
    }

    pub(super) fn conv_from_tuple(t: ConvRow) -> Result<Conv> {
        let group_id =
            Id::from_slice(&t.0).map_err(|_| Error::Storage("corrupt group id".into()))?;
        let log = match t.7 {
            Some(l) => Id::from_slice(&l).map_err(|_| Error::Storage("corrupt log id".into()))?,
            None => group_id,
        };
        Ok(Conv {
            group_id,
            log,
            seq_base: t.8.max(0) as u64,
            kind: ConvKind::from_sql(&t.1)?,
            name: t.2,
            relay: t.3,
            read_epoch: t.4 as u64,
            cursor: t.5 as u64,
            active: t.6 != 0,
        })
    }

    pub(crate) fn active_convs(&self) -> Result<Vec<Conv>> {
        self.convs_where("active = 1")
    }

    /// Conversations we left whose leave notice is still queued.
    pub(super) fn left_with_outbox(&self) -> Result<Vec<Conv>> {
        self.convs_where("active = 0 AND group_id IN (SELECT group_id FROM outbox)")
    }

    /// Record why `gid` no longer takes messages (inside the caller's transaction, if any).
    pub(super) fn set_status(&self, gid: &Id, status: &ConvStatus) -> Result<()> {
        self.db.conn().execute(
            "UPDATE conversations SET status = ?2, status_reason = ?3,
                 active = CASE WHEN ?2 = 'refusing' THEN active ELSE 0 END
             WHERE group_id = ?1",
            params![gid.as_bytes(), status.code(), status.reason()],
        )?;
        Ok(())
    }

    pub(super) fn status_of(&self, gid: &Id) -> Result<Option<ConvStatus>> {
        let row: Option<(Option<String>, Option<String>)> = self
            .db
            .conn()
            .query_row(
                "SELECT status, status_reason FROM conversations WHERE group_id = ?1",
                params![gid.as_bytes()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        Ok(row.and_then(|(code, reason)| {
            ConvStatus::from_columns(code.as_deref(), reason.as_deref())
        }))
    }

    /// Conversations matching a fixed SQL condition, oldest first.
    pub(super) fn convs_where(&self, condition: &str) -> Result<Vec<Conv>> {
        let conn = self.db.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {CONV_COLUMNS} FROM conversations WHERE {condition} ORDER BY created_at"
        ))?;
        let rows = stmt
            .query_map([], conv_from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        drop(stmt);
        drop(conn);
        rows.into_iter().map(Self::conv_from_tuple).collect()
    }

    pub(super) fn store_token(&self, group: &Id, epoch: u64, token: &[u8]) -> Result<()> {
        self.db.conn().execute(
            "INSERT OR REPLACE INTO epoch_tokens (group_id, epoch, token) VALUES (?1, ?2, ?3)",
            params![group.as_bytes(), epoch as i64, token],
        )?;
        Ok(())
    }

    pub(crate) fn token(&self, group: &Id, epoch: u64) -> Result<Vec<u8>> {
        self.db
            .conn()
            .query_row(
                "SELECT token FROM epoch_tokens WHERE group_id = ?1 AND epoch = ?2",
                params![group.as_bytes(), epoch as i64],
                |r| r.get(0),
            )
            .optional()?
            .ok_or_else(|| Error::Storage(format!("missing epoch token for epoch {epoch}")))
    }
}

/// Chat housekeeping (issue 30): this device's own arrangement of its list.
impl Profile {
    /// Keep a conversation at the top of the list (or not).
    pub fn set_pinned(&self, id: &ConversationId, pinned: bool) -> Result<()> {
        let conv = self.conv(id)?;
        self.db.conn().execute(
            "UPDATE conversations SET pinned = ?2 WHERE group_id = ?1",
            params![conv.group_id.as_bytes(), pinned],
        )?;
        Ok(())
    }

    /// Keep a conversation out of the main list (or bring it back). A new message brings it
    /// back unless it is muted.
    pub fn set_archived(&self, id: &ConversationId, archived: bool) -> Result<()> {
        let conv = self.conv(id)?;
        self.db.conn().execute(
            "UPDATE conversations SET archived = ?2 WHERE group_id = ?1",
            params![conv.group_id.as_bytes(), archived],
        )?;
        Ok(())
    }

    /// Mute a conversation for `secs` seconds (`None`: until unmuted), or unmute it
    /// (`Some(0)`). Returns when the mute ends (ms), if it is muted.
    pub fn set_muted(&self, id: &ConversationId, secs: Option<u64>) -> Result<Option<u64>> {
        let conv = self.conv(id)?;
        let until = match secs {
            Some(0) => None,
            Some(s) => Some(
                now_millis()
                    .saturating_add(s.saturating_mul(1000))
                    .min(i64::MAX as u64),
            ),
            None => Some(i64::MAX as u64),
        };
        self.db.conn().execute(
            "UPDATE conversations SET muted_until = ?2 WHERE group_id = ?1",
            params![conv.group_id.as_bytes(), until.map(|u| u as i64)],
        )?;
        Ok(until)
    }

    /// A message arrived: an archived conversation that is not muted comes back to the list.
    pub(super) fn unarchive_on_message(&self, group: &Id) -> Result<()> {
        self.db.conn().execute(
            "UPDATE conversations SET archived = 0
             WHERE group_id = ?1 AND archived = 1 AND (muted_until IS NULL OR muted_until <= ?2)",
            params![group.as_bytes(), now_millis() as i64],
        )?;
        Ok(())
    }
}

/// What a notification may show while the app is open (issue 30): by default nothing that
/// identifies anyone — a shoulder or a screen recorder sees only that something arrived.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum NotifyLevel {
    /// No notifications.
    Off,
    /// "A new message", nothing more.
    #[default]
    Private,
    /// Who wrote, not what.
    Sender,
    /// Who wrote and what.
    SenderText,
}

impl Profile {
    pub fn notifications(&self) -> Result<NotifyLevel> {
        Ok(self
            .db
            .setting_string(Setting::Notifications)
            .ok()
            .and_then(|s| serde_json::from_value(serde_json::Value::String(s)).ok())
            .unwrap_or_default())
    }

    pub fn set_notifications(&self, level: NotifyLevel) -> Result<()> {
        let value = serde_json::to_value(level).map_err(|e| Error::Storage(e.to_string()))?;
        let text = value.as_str().unwrap_or("private").to_string();
        self.db.set_setting(Setting::Notifications, text.as_bytes())
    }
}
