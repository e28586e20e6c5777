//! Attachments in the profile: the message rows that carry them and the encrypted copies
//! under `attachments/` (ciphertext exactly as on the relay; the key lives in the encrypted
//! database). Moving bytes to and from relays happens outside the profile's thread
//! (`crate::transfer`); these are the steps that touch the database.

use super::*;
use crate::payload::Attachment;

/// The directory of encrypted attachment copies inside a profile.
pub const ATTACHMENTS_DIR: &str = "attachments";

/// Where an attachment's bytes are, for a download.
pub struct AttachmentSource {
    pub attachment: Attachment,
    /// The client to fetch it with (the profile's proxy; the conversation's identity).
    pub client: crate::relay_client::RelayClient,
    /// Our encrypted copy, when we have one.
    pub local: Option<PathBuf>,
    /// Where a new copy goes.
    pub dir: PathBuf,
}

/// A file waiting for its relay (see [`Profile::queue_attachment`]).
pub struct PendingFile {
    pub id: MessageId,
    pub conversation: ConversationId,
    pub cipher_len: u64,
    /// Its encrypted copy.
    pub file: PathBuf,
}

/// Where a file being sent goes (see [`Profile::attachment_plan`]).
pub struct AttachmentPlan {
    pub relay: crate::relay_client::RelayClient,
    pub dir: PathBuf,
    pub log: Id,
    pub token: zeroize::Zeroizing<Vec<u8>>,
}

fn file_name(message: &Id) -> String {
    format!("{}.blob", hex::encode(message.as_bytes()))
}

impl Profile {
    /// The attachments directory (created, owner-only).
    pub fn attachments_dir(&self) -> Result<PathBuf> {
        let dir = self.home.join(ATTACHMENTS_DIR);
        crate::create_private_dir(&dir)?;
        Ok(dir)
    }

    /// Where a file for the conversation goes: the conversation's relay, the attachments directory
    /// (for the encrypted copy), and the conversation's log with its current epoch token (a
    /// blob is created for the group; security review 3, M8). Fails early for a conversation
    /// we left.
    pub fn attachment_plan(&self, id: &ConversationId) -> Result<AttachmentPlan> {
        let conv = self.conv(id)?;
        if !conv.active {
            return Err(Error::NotMember(format!(
                "you are no longer a member of {:?}",
                conv.name
            )));
        }
        self.check_not_blocked(&conv)?;
        let token = self.mls.load(conv.group_id.as_bytes())?.token()?;
        Ok(AttachmentPlan {
            relay: self.conv_relay(&conv)?,
            dir: self.attachments_dir()?,
            log: conv.log,
            token,
        })
    }

    /// Send an uploaded attachment: `file` is its encrypted copy, kept as ours. Returns the
    /// message id; like `send`, a relay that cannot be reached leaves the message queued and
    /// returns `RelayUnreachable`.
    pub async fn send_attachment(
        &mut self,
        conversation: &ConversationId,
        caption: &str,
        attachment: Attachment,
        file: &Path,
    ) -> Result<MessageId> {
        self.send_attachment_as(conversation, caption, attachment, file, false)
            .await
    }

    /// [`Profile::send_attachment`], marked as passed on from another conversation.
    pub(super) async fn send_attachment_as(
        &mut self,
        conversation: &ConversationId,
        caption: &str,
        attachment: Attachment,
        file: &Path,
        forwarded: bool,
    ) -> Result<MessageId> {
        if caption.len() > MAX_TEXT {
            return Err(Error::Usage(format!(
                "the caption is longer than {MAX_TEXT} bytes"
            )));
        }
        let conv = self.conv(conversation)?;
        self.check_not_blocked(&conv)?;
        let timer = self.timer(&conv.group_id)?;
        let id = random_id();
        let dir = self.attachments_dir()?;
        let name = file_name(&id);
        std::fs::rename(file, dir.join(&name))
            .map_err(|e| Error::Storage(format!("cannot keep the encrypted attachment: {e}")))?;
        let payload = Payload {
            unknown: None,
            id,
            expires_in: (timer > 0).then_some(timer),
            sent_at: now_millis(),
            body: Body::Text {
                text: caption.to_string(),
                attachment: Some(attachment),
                reply_to: None,
                forwarded,
            },
        };
        let sent = self.send_payload(&conv, payload).await;
        let stored = self.db.conn().execute(
            "UPDATE messages SET attachment_file = ?2 WHERE id = ?1",
            params![id.as_bytes(), name],
        )?;
        if stored == 0 {
            // Not even queued (e.g. we are no longer a member): nothing refers to the copy.
            let _ = crate::wipe::wipe_file(&dir.join(&name));
        }
        sent
    }

    /// Keep a file whose relay could not be reached, to send when it is back (as a text
    /// would be): `file` is its encrypted copy (kept as ours), `attachment` what the message
    /// will carry but the blob's place. The message shows at once, waiting. Returns its id.
    pub fn queue_attachment(
        &mut self,
        conversation: &ConversationId,
        caption: &str,
        attachment: Attachment,
        file: &Path,
        cipher_len: u64,
    ) -> Result<MessageId> {
        if caption.len() > MAX_TEXT {
            return Err(Error::Usage(format!(
                "the caption is longer than {MAX_TEXT} bytes"
            )));
        }
        let conv = self.conv(conversation)?;
        if !conv.active {
            return Err(Error::NotMember(format!(
                "you are no longer a member of {:?}",
                conv.name
            )));
        }
        let timer = self.timer(&conv.group_id)?;
        let id = random_id();
        let dir = self.attachments_dir()?;
        let name = file_name(&id);
        std::fs::rename(file, dir.join(&name))
            .map_err(|e| Error::Storage(format!("cannot keep the encrypted attachment: {e}")))?;
        let json = serde_json::to_string(&attachment).map_err(|e| Error::Storage(e.to_string()))?;
        let sent_at = now_millis();
        let expires_in = (timer > 0).then_some(timer);
        self.db.transaction(|tx| {
            tx.conn().execute(
                "INSERT INTO messages (id, group_id, sender_fp, outgoing, body, sent_at, received_at, expires_in, expires_at, attachment, attachment_file)
                 VALUES (?1, ?2, ?3, 1, ?4, ?5, ?5, ?6, ?7, ?8, ?9)",
                params![
                    id.as_bytes(),
                    conv.group_id.as_bytes(),
                    &self.fingerprint[..],
                    caption,
                    sent_at as i64,
                    expires_in.map(|e| e as i64),
                    expires_in.map(|e| sent_at.saturating_add(e.saturating_mul(1000)) as i64),
                    json,
                    name,
                ],
            )?;
            tx.conn().execute(
                "INSERT INTO pending_files (id, group_id, cipher_len, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![id.as_bytes(), conv.group_id.as_bytes(), cipher_len as i64, sent_at as i64],
            )?;
            self.emit(
                Event::MessageQueued {
                    conversation_id: ConversationId::from_id(conv.group_id),
                    conversation: conv.name.clone(),
                    id: MessageId::from_id(id),
                },
            )
        })?;
        self.state_changed()?;
        Ok(MessageId::from_id(id))
    }

    /// Whether any file waits for its relay.
    pub fn has_pending_files(&self) -> bool {
        self.db
            .conn()
            .query_row("SELECT EXISTS (SELECT 1 FROM pending_files)", [], |r| {
                r.get(0)
            })
            .unwrap_or(false)
    }

    /// Files waiting for their relay, oldest first.
    pub fn pending_files(&self) -> Result<Vec<PendingFile>> {
        let conn = self.db.conn();
        let mut stmt = conn.prepare(
            "SELECT p.id, p.group_id, p.cipher_len, m.attachment_file FROM pending_files p
             JOIN conversations c ON c.group_id = p.group_id
             JOIN messages m ON m.id = p.id
             ORDER BY p.created_at",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, MessageId>(0)?,
                    r.get::<_, ConversationId>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Option<String>>(3)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        drop(stmt);
        drop(conn);
        let dir = self.attachments_dir()?;
        rows.into_iter()
            .map(|(id, conversation, len, file)| {
                Ok(PendingFile {
                    id,
                    conversation,
                    cipher_len: len.max(0) as u64,
                    file: dir.join(file.unwrap_or_default()),
                })
            })
            .collect()
    }

    /// A waiting file is on its relay as `blob`: send its message (queued as any text if the
    /// relay went away again meanwhile).
    pub async fn send_pending_file(
        &mut self,
        id: &MessageId,
        relay: &str,
        blob: Id,
    ) -> Result<MessageId> {
        let row: Option<(Vec<u8>, String, i64, Option<i64>, Option<String>)> = self
            .db
            .conn()
            .query_row(
                "SELECT group_id, body, sent_at, expires_in, attachment FROM messages WHERE id = ?1",
                params![id.as_bytes()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()?;
        let Some((group, text, sent_at, expires_in, Some(json))) = row else {
            // The message is gone (it disappeared, or was deleted): nothing to send.
            self.db.conn().execute(
                "DELETE FROM pending_files WHERE id = ?1",
                params![id.as_bytes()],
            )?;
            return Err(Error::NotFound("the waiting file's message is gone".into()));
        };
        let mut attachment: Attachment = serde_json::from_str(&json)
            .map_err(|e| Error::Storage(format!("corrupt attachment record: {e}")))?;
        attachment.relay = relay.to_string();
        attachment.blob = blob;
        let json = serde_json::to_string(&attachment).map_err(|e| Error::Storage(e.to_string()))?;
        let group =
            Id::from_slice(&group).map_err(|_| Error::Storage("corrupt group id".into()))?;
        let conv = self
            .conv_by_id(&group)?
            .ok_or_else(|| Error::NotFound("the file's conversation is gone".into()))?;
        self.settle_pending_file(id, "attachment", &json)?;
        let payload = super::outbox::text_payload(
            &self.db.conn(),
            id.as_bytes(),
            text,
            sent_at,
            expires_in,
            Some(json),
        )?;
        self.send_payload(&conv, payload).await
    }

    /// A waiting file cannot be sent (the relay refused it for good, or we left): its message
    /// says why, as a refused text does.
    pub fn pending_file_failed(&mut self, id: &MessageId, why: &str) -> Result<()> {
        self.settle_pending_file(id, "failed", why)?;
        self.state_changed()
    }

    /// A waiting file is no longer waiting: set its message's `column` (`attachment`: where
    /// it went; `failed`: why not) and forget the wait, in one transaction.
    fn settle_pending_file(&self, id: &MessageId, column: &str, value: &str) -> Result<()> {
        debug_assert!(matches!(column, "attachment" | "failed"));
        self.db.transaction(|tx| {
            tx.conn().execute(
                &format!("UPDATE messages SET {column} = ?2 WHERE id = ?1"),
                params![id.as_bytes(), value],
            )?;
            tx.conn().execute(
                "DELETE FROM pending_files WHERE id = ?1",
                params![id.as_bytes()],
            )?;
            Ok(())
        })
    }

    /// The attachment of `message_id`, with our copy if we have it.
    pub fn attachment_source(&self, message_id: &MessageId) -> Result<AttachmentSource> {
        let raw = message_id.as_bytes();
        let row: Option<(Option<String>, Option<String>, Vec<u8>)> = self
            .db
            .conn()
            .query_row(
                "SELECT attachment, attachment_file, group_id FROM messages WHERE id = ?1",
                params![raw],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((json, file, group)) = row else {
            return Err(Error::NotFound(format!("no message {message_id}")));
        };
        let json =
            json.ok_or_else(|| Error::NotFound(format!("message {message_id} has no attachment")))?;
        let attachment: Attachment = serde_json::from_str(&json)
            .map_err(|e| Error::Storage(format!("corrupt attachment record: {e}")))?;
        let dir = self.attachments_dir()?;
        let local = file.map(|f| dir.join(f)).filter(|p| p.exists());
        let group =
            Id::from_slice(&group).map_err(|_| Error::Storage("corrupt group id".into()))?;
        if local.is_none() {
            self.check_attachment_relay(&attachment.relay, &group)?;
        }
        let client = self.conv_client_for(&attachment.relay, &group)?;
        Ok(AttachmentSource {
            client,
            attachment,
            local,
            dir,
        })
    }

    /// A file is fetched only from a relay this conversation already uses — its log's relay,
    /// ours, or one its people announced inside MLS — and never from a private or loopback
    /// address unless the conversation's relay is one: the sender does not get to choose
    /// where a tap on "Save" connects (security review 3, M7).
    fn check_attachment_relay(&self, relay: &str, group: &Id) -> Result<()> {
        let conv = self
            .conv_by_id(group)?
            .ok_or_else(|| Error::NotFound("the file's conversation is gone".into()))?;
        let norm = |r: &str| crate::relay_client::normalize_spec(r).unwrap_or_default();
        let wanted = norm(relay);
        let mut known: Vec<String> = vec![norm(&conv.relay)];
        known.extend(self.relays().iter().map(|r| norm(r)));
        {
            let conn = self.db.conn();
            let mut stmt = conn.prepare("SELECT DISTINCT relay FROM peer_mailboxes")?;
            known.extend(
                stmt.query_map([], |r| r.get::<_, String>(0))?
                    .filter_map(|r| r.ok())
                    .map(|r| norm(&r)),
            );
        }
        let host = |u: &str| {
            u.split_once("://")
                .map(|(_, r)| r)
                .unwrap_or(u)
                .split(['/', '#', ','])
                .next()
                .unwrap_or("")
                .rsplit_once(':')
                .map(|(h, _)| h.trim_matches(['[', ']']).to_string())
                .unwrap_or_default()
        };
        let private = |h: &str| {
            h.eq_ignore_ascii_case("localhost")
                || h.to_ascii_lowercase().ends_with(".localhost")
                || h.parse::<std::net::IpAddr>().is_ok_and(|ip| match ip {
                    std::net::IpAddr::V4(v) => {
                        v.is_loopback() || v.is_private() || v.is_link_local() || v.is_unspecified()
                    }
                    std::net::IpAddr::V6(v) => {
                        v.is_loopback()
                            || v.is_unspecified()
                            || (v.segments()[0] & 0xfe00) == 0xfc00
                            || (v.segments()[0] & 0xffc0) == 0xfe80
                    }
                })
        };
        let shown = host(&wanted);
        if !known.contains(&wanted) {
            return Err(Error::Usage(format!(
                "not fetched: this file is on {shown}, a relay this conversation does not use (the sender chose it)"
            )));
        }
        if private(&shown) && !private(&host(&conv.relay)) {
            return Err(Error::Usage(format!(
                "not fetched: this file is on a private address ({shown})"
            )));
        }
        Ok(())
    }

    /// Our verified copy of `message_id`'s attachment is at `file` (in the attachments
    /// directory): remember it. If the message is gone meanwhile (it disappeared), the copy
    /// goes too. Returns the copy's path.
    pub fn attachment_fetched(&self, message_id: &MessageId, file: &Path) -> Result<PathBuf> {
        let raw = message_id.as_bytes();
        let id = *message_id.id();
        let dir = self.attachments_dir()?;
        let name = file_name(&id);
        let dest = dir.join(&name);
        std::fs::rename(file, &dest)
            .map_err(|e| Error::Storage(format!("cannot keep the downloaded attachment: {e}")))?;
        let n = self.db.conn().execute(
            "UPDATE messages SET attachment_file = ?2 WHERE id = ?1",
            params![raw, name],
        )?;
        if n == 0 {
            let _ = crate::wipe::wipe_file(&dest);
            return Err(Error::NotFound(format!(
                "message {message_id} is gone (it disappeared)"
            )));
        }
        Ok(dest)
    }

    /// Incoming attachments not on this device yet, no larger than `max` bytes: what the
    /// automatic download fetches.
    pub fn attachments_to_fetch(&self, max: u64) -> Result<Vec<MessageId>> {
        let conn = self.db.conn();
        let mut stmt = conn.prepare(
            "SELECT id, attachment FROM messages
             WHERE attachment IS NOT NULL AND attachment_file IS NULL AND outgoing = 0
             ORDER BY received_at DESC LIMIT 50",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, MessageId>(0)?, r.get::<_, String>(1)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows
            .into_iter()
            .filter(|(_, json)| {
                serde_json::from_str::<Attachment>(json).is_ok_and(|a| a.size <= max)
            })
            .map(|(id, _)| id)
            .collect())
    }

    /// The size under which incoming attachments are fetched at once (0: only on request).
    /// A photo's thumbnail (JPEG), made by its sender and kept in the message's row.
    pub fn thumbnail(&self, message_id: &MessageId) -> Result<Vec<u8>> {
        let json: Option<String> = self
            .db
            .conn()
            .query_row(
                "SELECT attachment FROM messages WHERE id = ?1 AND deleted = 0",
                params![message_id.as_bytes()],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
        let att: Option<crate::payload::Attachment> =
            json.as_deref().and_then(|j| serde_json::from_str(j).ok());
        att.as_ref()
            .and_then(|a| a.preview.as_ref())
            .and_then(|p| p.thumbnail.as_ref())
            .map(|t| t.0.clone())
            .ok_or_else(|| Error::NotFound(format!("message {message_id} has no thumbnail")))
    }

    pub fn auto_download_bytes(&self) -> Result<u64> {
        Ok(self
            .db
            .setting_string(Setting::AutoDownloadBytes)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0))
    }

    pub fn set_auto_download_bytes(&self, bytes: u64) -> Result<()> {
        self.db
            .set_setting(Setting::AutoDownloadBytes, bytes.to_string().as_bytes())?;
        self.state_changed()
    }

    /// Delete encrypted attachment copies (of deleted messages), overwriting them first.
    pub(super) fn wipe_attachment_files(&self, files: Vec<String>) {
        let Ok(dir) = self.attachments_dir() else {
            return;
        };
        for f in files {
            if let Err(e) = crate::wipe::wipe_file(&dir.join(&f)) {
                tracing::warn!("cannot delete an attachment copy: {e}");
            }
        }
    }
}
