//! Chat housekeeping that changes what this device keeps: blocking a contact, deleting a chat
//! (issue 30, item 6).

use super::*;

impl Profile {
    /// Whether the person with this key fingerprint is a contact we blocked.
    pub(super) fn is_blocked(&self, fp: &[u8]) -> Result<bool> {
        Ok(self
            .db
            .conn()
            .query_row(
                "SELECT blocked FROM contacts WHERE fingerprint = ?1",
                params![fp],
                |r| r.get::<_, bool>(0),
            )
            .optional()?
            .unwrap_or(false))
    }

    /// Block a contact (or unblock them): from now on nothing they send is kept — messages,
    /// reactions, edits, receipts, group invitations — and we cannot write to them until we
    /// unblock them. They are not told. Shared with our other devices.
    pub fn contact_block(&mut self, contact: &ContactId, blocked: bool) -> Result<()> {
        self.alias_of(contact)?;
        self.db.conn().execute(
            "UPDATE contacts SET blocked = ?2 WHERE fingerprint = ?1",
            params![contact, blocked],
        )?;
        self.state_changed()
    }

    /// Refuse to write to a blocked contact's 1:1 chat.
    pub(super) fn check_not_blocked(&self, conv: &Conv) -> Result<()> {
        if conv.kind != ConvKind::Direct {
            return Ok(());
        }
        let blocked: Option<(String, bool)> = self
            .db
            .conn()
            .query_row(
                "SELECT alias, blocked FROM contacts WHERE group_id = ?1",
                params![conv.group_id.as_bytes()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        match blocked {
            Some((alias, true)) => Err(Error::Usage(format!(
                "you blocked {alias}; unblock them to write"
            ))),
            _ => Ok(()),
        }
    }

    /// Delete a chat on this device. A group is left first (the others are told, as by
    /// `group leave`), then its messages, files and the conversation itself go (once the
    /// leave notice is out). A 1:1 chat loses its messages (unsent ones too) and files and
    /// leaves the list (archived); the contact stays, and their next message brings the chat
    /// back.
    pub async fn delete_chat(&mut self, id: &ConversationId) -> Result<()> {
        let conv = self.conv(id)?;
        if is_self_group(&conv) {
            return Err(Error::Usage("saved messages are deleted one by one".into()));
        }
        if conv.kind == ConvKind::Group && conv.active {
            self.group_leave(id).await?;
        }
        let files: Vec<String> = {
            let conn = self.db.conn();
            let mut stmt = conn.prepare(
                "SELECT attachment_file FROM messages WHERE group_id = ?1 AND attachment_file IS NOT NULL",
            )?;
            stmt.query_map(params![conv.group_id.as_bytes()], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?
        };
        let gid = conv.group_id;
        // A queued leave notice (the relay unreachable) must still go out: the conversation
        // row stays until then, empty.
        let queued: i64 = self.db.conn().query_row(
            "SELECT COUNT(*) FROM outbox WHERE group_id = ?1",
            params![gid.as_bytes()],
            |r| r.get(0),
        )?;
        self.db.transaction(|tx| {
            let conn = tx.conn();
            // Unsent messages too: deleting a chat takes back what was waiting in it.
            conn.execute(
                "DELETE FROM messages WHERE group_id = ?1",
                params![gid.as_bytes()],
            )?;
            // A 1:1 chat leaves the list (archived) until the contact writes again.
            conn.execute(
                "UPDATE conversations SET archived = 1, pinned = 0 WHERE group_id = ?1 AND kind = 'direct'",
                params![gid.as_bytes()],
            )?;
            conn.execute(
                "DELETE FROM pending_files WHERE group_id = ?1",
                params![gid.as_bytes()],
            )?;
            conn.execute(
                "DELETE FROM drafts WHERE group_id = ?1",
                params![gid.as_bytes()],
            )?;
            // Its calls (their offers and answers) go with its lines.
            conn.execute(
                "DELETE FROM calls WHERE group_id = ?1",
                params![gid.as_bytes()],
            )?;
            drop(conn);
            if conv.kind == ConvKind::Group && queued == 0 {
                self.forget_conversation(tx, &gid)?;
            }
            self.compact_search()?;
            self.emit(Event::ChatDeleted {
                conversation_id: *id,
            })
        })?;
        self.wipe_attachment_files(files);
        Ok(())
    }
}
