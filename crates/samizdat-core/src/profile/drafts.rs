//! Drafts: what someone typed in a conversation and has not sent, kept in the profile
//! (SQLCipher) so that no front has to keep it anywhere else — the app once kept it in the
//! browser's localStorage, in plaintext beyond wipe and duress (security review 3, H3).

use super::*;

/// The longest draft kept, in bytes (a message's own limit in the app).
pub const DRAFT_MAX_BYTES: usize = 60_000;

impl Profile {
    /// Keep `text` as the draft of the conversation; an empty text deletes it.
    pub fn set_draft(&self, id: &ConversationId, text: &str) -> Result<()> {
        let conv = self.conv(id)?;
        if text.len() > DRAFT_MAX_BYTES {
            return Err(Error::Usage(format!(
                "a draft may hold at most {DRAFT_MAX_BYTES} bytes"
            )));
        }
        let conn = self.db.conn();
        if text.is_empty() {
            conn.execute(
                "DELETE FROM drafts WHERE group_id = ?1",
                params![conv.group_id.as_bytes()],
            )?;
        } else {
            conn.execute(
                "INSERT INTO drafts (group_id, text, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(group_id) DO UPDATE SET text = excluded.text, updated_at = excluded.updated_at",
                params![conv.group_id.as_bytes(), text, now_secs() as i64],
            )?;
        }
        Ok(())
    }

    /// The draft of the conversation (empty when there is none).
    pub fn draft(&self, id: &ConversationId) -> Result<String> {
        let conv = self.conv(id)?;
        Ok(self
            .db
            .conn()
            .query_row(
                "SELECT text FROM drafts WHERE group_id = ?1",
                params![conv.group_id.as_bytes()],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or_default())
    }

    /// Drop the draft of a conversation (after a send, or with the conversation).
    pub(crate) fn clear_draft(&self, gid: &Id) -> Result<()> {
        self.db.conn().execute(
            "DELETE FROM drafts WHERE group_id = ?1",
            params![gid.as_bytes()],
        )?;
        Ok(())
    }
}
