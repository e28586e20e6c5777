//! What people do to a message once it is sent: answer it, react to it, correct it, take it
//! back, pass it on — and what this device does when someone else did.
//!
//! Every one of them names its target with a [`MessageRef`]: the message id and the SHA-256
//! of what the message said when it was sent ([`content_hash`]). A receiver acts only on the
//! message with that id, in the same conversation, whose hash matches — so a reply cannot
//! quote words the target never said, and an edit or delete cannot be pointed at someone
//! else's message (edits and deletes are also accepted only from the target's sender).
//!
//! Nothing here copies a message: a quote is read from its target's row when shown, an edit
//! rewrites the row, reactions live in `reactions`, which a trigger empties with the row. So
//! when a message disappears (its timer) or is deleted, every trace of it goes with it.

use super::*;
use crate::payload::{Attachment, MessageRef};

/// SHA-256 over what a message said when it was sent, bound to its conversation, sender, id
/// and time (and its file's digest): the hash a [`MessageRef`] carries.
pub(crate) fn content_hash(
    group: &Id,
    sender: &[u8],
    id: &Id,
    sent_at: u64,
    text: &str,
    attachment: Option<&Attachment>,
) -> [u8; 32] {
    let mut buf = Vec::with_capacity(128 + text.len());
    buf.extend_from_slice(b"samizdat message v1\0");
    buf.extend_from_slice(group.as_bytes());
    buf.extend_from_slice(sender);
    buf.extend_from_slice(id.as_bytes());
    buf.extend_from_slice(&sent_at.to_be_bytes());
    buf.extend_from_slice(&(text.len() as u64).to_be_bytes());
    buf.extend_from_slice(text.as_bytes());
    match attachment {
        Some(a) => {
            buf.push(1);
            buf.extend_from_slice(&a.digest.0);
        }
        None => buf.push(0),
    }
    sha256(&buf)
}

/// A stored message as a target.
pub(super) struct Target {
    pub(super) id: Id,
    pub(super) group_id: Id,
    pub(super) sender: Vec<u8>,
    pub(super) deleted: bool,
    pub(super) hash: [u8; 32],
    pub(super) text: String,
    pub(super) attachment: Option<String>,
    pub(super) attachment_file: Option<String>,
}

/// A reaction as shown: the emoji, how many people chose it, whether we did, and who.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct ReactionView {
    pub emoji: String,
    pub count: u32,
    /// We are among them.
    pub mine: bool,
    /// The others' labels, in the order they reacted (we are `mine`).
    pub who: Vec<String>,
}

/// The message a reply answers, as shown with it: read from the target's row at display time
/// (never copied), so it goes when the target goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct QuoteView {
    pub id: MessageId,
    /// False when this device does not hold that message (deleted, disappeared, from before
    /// we joined, or a quote whose hash matches nothing it said): shown as "not available".
    pub found: bool,
    /// Its sender's label (absent for a message of ours: `mine`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The message is ours.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mine: bool,
    /// The start of its text (at most 200 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The name of its file, if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

/// Most characters of a quoted text.
const QUOTE_CHARS: usize = 200;

/// An emoji as a reaction: one short symbol, nothing invisible, no letters or digits.
fn check_emoji(emoji: &str) -> Result<()> {
    let ok = !emoji.is_empty()
        && emoji.len() <= crate::payload::MAX_REACTION
        && emoji.chars().count() <= 10
        && !emoji
            .chars()
            .any(|c| c.is_alphanumeric() || c.is_whitespace() || c.is_control() || c == '\u{202e}');
    if ok {
        Ok(())
    } else {
        Err(Error::Usage("a reaction is one emoji".into()))
    }
}

impl Profile {
    /// A message as a target, by id (anywhere).
    pub(super) fn target(&self, message: &MessageId) -> Result<Target> {
        self.target_row(message.as_bytes())?
            .ok_or_else(|| Error::NotFound(format!("no message {message}")))
    }

    fn target_row(&self, id: &[u8]) -> Result<Option<Target>> {
        let row: Option<(Vec<u8>, Vec<u8>, bool, Option<Vec<u8>>, String, i64, Option<String>, Option<String>, Option<String>)> =
            self.db
                .conn()
                .query_row(
                    "SELECT group_id, sender_fp, deleted, content_hash, body, sent_at, attachment, attachment_file, unknown
                     FROM messages WHERE id = ?1",
                    params![id],
                    |r| r.try_into(),
                )
                .optional()?;
        let Some((gid, sender, deleted, hash, text, sent_at, attachment, file, unknown)) = row
        else {
            return Ok(None);
        };
        let id = Id::from_slice(id).map_err(|_| Error::Storage("corrupt message id".into()))?;
        let group_id =
            Id::from_slice(&gid).map_err(|_| Error::Storage("corrupt group id".into()))?;
        let hash = match hash.and_then(|h| <[u8; 32]>::try_from(h.as_slice()).ok()) {
            Some(h) => h,
            // A row from before version 19 (no edits then: the row is what was sent). A body
            // this version could not read has no hash anyone can name.
            None if unknown.is_none() => {
                let att: Option<Attachment> = attachment
                    .as_deref()
                    .and_then(|a| serde_json::from_str(a).ok());
                content_hash(&group_id, &sender, &id, sent_at as u64, &text, att.as_ref())
            }
            None => [0; 32],
        };
        Ok(Some(Target {
            id,
            group_id,
            sender,
            deleted,
            hash,
            text,
            attachment,
            attachment_file: file,
        }))
    }

    /// A reference to `message`, which must be in `conv` and not deleted (what a reply
    /// carries).
    pub(super) fn reference_in(&self, conv: &Conv, message: &MessageId) -> Result<MessageRef> {
        let t = self.target(message)?;
        if t.group_id != conv.group_id {
            return Err(Error::Usage(format!(
                "message {message} is in another conversation"
            )));
        }
        if t.deleted {
            return Err(Error::Usage(format!("message {message} was deleted")));
        }
        Ok(MessageRef {
            id: t.id,
            hash: Bytes(t.hash.to_vec()),
        })
    }

    /// The target of `r` as this conversation's members know it: same conversation, same
    /// hash. `None` for anything else (unknown here, gone, or not what was said).
    pub(super) fn target_of(&self, conv: &Conv, r: &MessageRef) -> Result<Option<Target>> {
        let Some(t) = self.target_row(r.id.as_bytes())? else {
            return Ok(None);
        };
        if t.group_id != conv.group_id || r.hash.0.as_slice() != t.hash.as_slice() {
            return Ok(None);
        }
        Ok(Some(t))
    }

    /// A reference to message `id` of `conv` (raw id), if it is here and not deleted.
    pub(super) fn target_in(&self, conv: &Conv, id: &[u8]) -> Result<Option<MessageRef>> {
        Ok(self
            .target_row(id)?
            .filter(|t| t.group_id == conv.group_id && !t.deleted)
            .map(|t| MessageRef {
                id: t.id,
                hash: Bytes(t.hash.to_vec()),
            }))
    }

    /// The conversation a target lives in, for sending about it (we must still be a member).
    fn conv_of(&self, t: &Target) -> Result<Conv> {
        self.conv(&ConversationId::from_id(t.group_id))
    }

    /// React to a message with one emoji (replacing our earlier reaction to it), or take our
    /// reaction back (`remove`). Shown here at once; sent to the conversation (queued when
    /// the relay is unreachable).
    pub async fn react(
        &mut self,
        message: &MessageId,
        emoji: &str,
        remove: bool,
    ) -> Result<ConversationId> {
        check_emoji(emoji)?;
        let t = self.target(message)?;
        if t.deleted {
            return Err(Error::Usage(format!("message {message} was deleted")));
        }
        let conv = self.conv_of(&t)?;
        let me = self.fingerprint;
        self.db.transaction(|tx| {
            self.store_reaction(tx, &conv, &t, &me, emoji, remove)?;
            Ok(())
        })?;
        let target = MessageRef {
            id: t.id,
            hash: Bytes(t.hash.to_vec()),
        };
        let body = Body::React {
            target,
            emoji: emoji.to_string(),
            remove,
        };
        queued(self.send_body(&conv, body).await)?;
        Ok(ConversationId::from_id(t.group_id))
    }

    /// Correct the text of one of our messages, for everyone (receivers show "edited").
    pub async fn edit(&mut self, message: &MessageId, text: &str) -> Result<ConversationId> {
        if text.trim().is_empty() {
            return Err(Error::Usage("the message is empty".into()));
        }
        if text.len() > MAX_TEXT {
            return Err(Error::Usage(format!(
                "the message is longer than {MAX_TEXT} bytes"
            )));
        }
        let t = self.target(message)?;
        if t.sender != self.fingerprint {
            return Err(Error::Usage(
                "only the person who sent a message can edit it".into(),
            ));
        }
        if t.deleted {
            return Err(Error::Usage(format!("message {message} was deleted")));
        }
        let conv = self.conv_of(&t)?;
        self.db
            .transaction(|tx| self.store_edit(tx, &conv, &t, text))?;
        let body = Body::Edit {
            target: MessageRef {
                id: t.id,
                hash: Bytes(t.hash.to_vec()),
            },
            text: text.to_string(),
        };
        queued(self.send_body(&conv, body).await)?;
        Ok(ConversationId::from_id(t.group_id))
    }

    /// Delete a message: on this device only, or — for a message of ours — for everyone (each
    /// member's copy loses its text, file and reactions and says "deleted").
    pub async fn delete_message(
        &mut self,
        message: &MessageId,
        for_everyone: bool,
    ) -> Result<ConversationId> {
        let t = self.target(message)?;
        if !for_everyone {
            let file = t.attachment_file.clone();
            self.db.transaction(|tx| {
                tx.conn().execute(
                    "DELETE FROM messages WHERE id = ?1",
                    params![t.id.as_bytes()],
                )?;
                self.compact_search()?;
                self.emit(Event::MessageDeleted {
                    conversation_id: ConversationId::from_id(t.group_id),
                    id: MessageId::from_id(t.id),
                    for_everyone: false,
                })
            })?;
            self.wipe_attachment_files(file.into_iter().collect());
            return Ok(ConversationId::from_id(t.group_id));
        }
        if t.sender != self.fingerprint {
            return Err(Error::Usage(
                "only the person who sent a message can delete it for everyone".into(),
            ));
        }
        if t.deleted {
            return Ok(ConversationId::from_id(t.group_id));
        }
        let conv = self.conv_of(&t)?;
        self.db.transaction(|tx| self.store_delete(tx, &t))?;
        self.wipe_attachment_files(t.attachment_file.clone().into_iter().collect());
        let body = Body::Delete {
            target: MessageRef {
                id: t.id,
                hash: Bytes(t.hash.to_vec()),
            },
        };
        queued(self.send_body(&conv, body).await)?;
        Ok(ConversationId::from_id(t.group_id))
    }

    /// Pass a message on to another conversation, as a new message of ours marked
    /// "forwarded" (its text, and its file: the same encrypted blob, whose key now also
    /// travels to the new conversation's members). Returns the new message's id.
    pub async fn forward(&mut self, message: &MessageId, to: &ConversationId) -> Result<MessageId> {
        let t = self.target(message)?;
        if t.deleted {
            return Err(Error::Usage(format!("message {message} was deleted")));
        }
        let attachment: Option<Attachment> = match &t.attachment {
            Some(json) => Some(
                serde_json::from_str(json)
                    .map_err(|e| Error::Storage(format!("corrupt attachment record: {e}")))?,
            ),
            None => None,
        };
        let Some(attachment) = attachment else {
            if t.text.is_empty() {
                return Err(Error::Usage(format!(
                    "message {message} has nothing to forward"
                )));
            }
            return self.send_text(to, &t.text, None, true).await;
        };
        match &t.attachment_file {
            // Our encrypted copy goes with it (a copy: the original keeps its own).
            Some(file) => {
                let dir = self.attachments_dir()?;
                let copy = dir.join(format!(
                    "forward-{}.tmp",
                    hex::encode(random_id().as_bytes())
                ));
                std::fs::copy(dir.join(file), &copy)
                    .map_err(|e| Error::Storage(format!("cannot copy the attachment: {e}")))?;
                self.send_attachment_as(to, &t.text, attachment, &copy, true)
                    .await
            }
            None => {
                let conv = self.conv(to)?;
                let body = Body::Text {
                    text: t.text.clone(),
                    attachment: Some(attachment),
                    reply_to: None,
                    forwarded: true,
                };
                let payload = self.new_message(&conv, body)?;
                self.send_payload(&conv, payload).await
            }
        }
    }

    // ---- what others did ----------------------------------------------------------------

    /// A reaction from `sender` (inside the caller's transaction). Ignored unless its target
    /// is in this conversation and says what the reference says.
    pub(super) fn apply_react(
        &self,
        tx: &Tx,
        conv: &Conv,
        sender: &[u8; 32],
        target: &MessageRef,
        emoji: &str,
        remove: bool,
    ) -> Result<()> {
        if check_emoji(emoji).is_err() {
            return Ok(());
        }
        match self.target_of(conv, target)? {
            Some(t) if !t.deleted => self.store_reaction(tx, conv, &t, sender, emoji, remove),
            _ => Ok(()),
        }
    }

    /// An edit from `sender`: applied only to a message `sender` sent.
    pub(super) fn apply_edit(
        &self,
        tx: &Tx,
        conv: &Conv,
        sender: &[u8; 32],
        target: &MessageRef,
        text: &str,
    ) -> Result<()> {
        if text.is_empty() || text.len() > MAX_TEXT {
            return Ok(());
        }
        match self.target_of(conv, target)? {
            Some(t) if !t.deleted && t.sender == sender[..] => self.store_edit(tx, conv, &t, text),
            _ => Ok(()),
        }
    }

    /// A delete for everyone from `sender`: applied only to a message `sender` sent.
    pub(super) fn apply_delete(
        &self,
        tx: &Tx,
        conv: &Conv,
        sender: &[u8; 32],
        target: &MessageRef,
    ) -> Result<()> {
        match self.target_of(conv, target)? {
            Some(t) if !t.deleted && t.sender == sender[..] => {
                self.store_delete(tx, &t)?;
                self.wipe_attachment_files(t.attachment_file.into_iter().collect());
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn store_reaction(
        &self,
        tx: &Tx,
        conv: &Conv,
        t: &Target,
        who: &[u8; 32],
        emoji: &str,
        remove: bool,
    ) -> Result<()> {
        let conn = tx.conn();
        let changed = if remove {
            conn.execute(
                "DELETE FROM reactions WHERE message_id = ?1 AND reactor = ?2 AND emoji = ?3",
                params![t.id.as_bytes(), &who[..], emoji],
            )?
        } else {
            conn.execute(
                "INSERT INTO reactions (message_id, reactor, emoji, at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(message_id, reactor) DO UPDATE SET emoji = excluded.emoji, at = excluded.at
                 WHERE emoji != excluded.emoji",
                params![t.id.as_bytes(), &who[..], emoji, now_millis() as i64],
            )?
        };
        drop(conn);
        if changed > 0 {
            self.emit(Event::Reaction {
                conversation_id: ConversationId::from_id(conv.group_id),
                id: MessageId::from_id(t.id),
                sender: ContactId::from_bytes(*who),
                who: self.label(&conv.group_id, who)?,
                emoji: (!remove).then(|| emoji.to_string()),
            })?;
        }
        Ok(())
    }

    fn store_edit(&self, tx: &Tx, conv: &Conv, t: &Target, text: &str) -> Result<()> {
        // The hash stays that of what was sent: later replies still name the same message.
        let changed = tx.conn().execute(
            "UPDATE messages SET body = ?2, edited_at = ?3, content_hash = ?4 WHERE id = ?1 AND deleted = 0",
            params![t.id.as_bytes(), text, now_millis() as i64, &t.hash[..]],
        )?;
        if changed > 0 {
            self.emit(Event::MessageEdited {
                conversation_id: ConversationId::from_id(conv.group_id),
                id: MessageId::from_id(t.id),
                text: text.to_string(),
            })?;
        }
        Ok(())
    }

    /// Everything the message said goes (`secure_delete` overwrites the pages); the row stays
    /// as a tombstone so the conversation shows that something was deleted.
    fn store_delete(&self, tx: &Tx, t: &Target) -> Result<()> {
        let conn = tx.conn();
        conn.execute(
            "UPDATE messages SET body = '', attachment = NULL, attachment_file = NULL, deleted = 1, edited_at = NULL, unknown = NULL, content_hash = ?2
             WHERE id = ?1",
            params![t.id.as_bytes(), &t.hash[..]],
        )?;
        conn.execute(
            "DELETE FROM reactions WHERE message_id = ?1",
            params![t.id.as_bytes()],
        )?;
        drop(conn);
        self.compact_search()?;
        self.emit(Event::MessageDeleted {
            conversation_id: ConversationId::from_id(t.group_id),
            id: MessageId::from_id(t.id),
            for_everyone: true,
        })
    }

    /// A body this version cannot read: kept (its JSON) as a message that says to update.
    pub(super) fn apply_unknown(
        &self,
        conv: &Conv,
        sender: &[u8; 32],
        p: &Payload,
        seq: u64,
    ) -> Result<()> {
        let Some(raw) = &p.unknown else {
            return Ok(());
        };
        if raw.len() > 4 * MAX_TEXT {
            return Ok(());
        }
        let gid = conv.group_id;
        let mine = *sender == self.fingerprint;
        let now = now_millis();
        let expires_at = p.expires_in.map(|e| {
            now.saturating_add(e.saturating_mul(1000))
                .min(i64::MAX as u64) as i64
        });
        let inserted = self.db.conn().execute(
            "INSERT OR IGNORE INTO messages (id, group_id, seq, sender_fp, outgoing, body, sent_at, received_at, unread, expires_in, expires_at, unknown)
             VALUES (?1, ?2, ?3, ?4, ?5, '', ?6, ?7, ?8, ?9, ?10, ?11)",
            params![p.id.as_bytes(), gid.as_bytes(), (conv.seq_base + seq) as i64, &sender[..], mine, p.sent_at as i64, now as i64, !mine,
                p.expires_in.map(|e| e.min(i64::MAX as u64) as i64), expires_at, raw],
        )?;
        if inserted == 1 {
            self.emit(Event::Message {
                conversation_id: ConversationId::from_id(gid),
                conversation: conv.name.clone(),
                id: MessageId::from_id(p.id),
                sender: ContactId::from_bytes(*sender),
                from: self.label(&gid, sender)?,
                text: String::new(),
                sent_at: p.sent_at,
                attachment: None,
            })?;
        }
        Ok(())
    }

    // ---- what is shown ------------------------------------------------------------------

    /// The reactions to each of `ids`, grouped by emoji (most chosen first).
    pub(super) fn reactions_of(
        &self,
        group: &Id,
        ids: &[Vec<u8>],
    ) -> Result<HashMap<Vec<u8>, Vec<ReactionView>>> {
        let mut out: HashMap<Vec<u8>, Vec<ReactionView>> = HashMap::new();
        // One lookup per message shown (a page): the primary key leads with the message.
        let mut rows: Vec<(Vec<u8>, Vec<u8>, String)> = Vec::new();
        {
            let conn = self.db.conn();
            let mut stmt = conn.prepare_cached(
                "SELECT reactor, emoji FROM reactions WHERE message_id = ?1 ORDER BY at",
            )?;
            for id in ids {
                let found = stmt
                    .query_map(params![id], |r| Ok((id.clone(), r.get(0)?, r.get(1)?)))?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                rows.extend(found);
            }
        }
        for (message, reactor, emoji) in rows {
            let mine = reactor == self.fingerprint;
            let who = (!mine).then(|| self.label(group, &reactor)).transpose()?;
            let list = out.entry(message).or_default();
            match list.iter_mut().find(|r| r.emoji == emoji) {
                Some(r) => {
                    r.count += 1;
                    r.mine |= mine;
                    r.who.extend(who);
                }
                None => list.push(ReactionView {
                    emoji,
                    count: 1,
                    mine,
                    who: who.into_iter().collect(),
                }),
            }
        }
        for list in out.values_mut() {
            list.sort_by_key(|r| std::cmp::Reverse(r.count));
        }
        Ok(out)
    }

    /// What a reply shows of the message it answers.
    pub(super) fn quote_of(&self, conv: &Conv, id: &[u8], hash: &[u8]) -> Result<QuoteView> {
        let mid = MessageId::from_slice(id)?;
        let not_found = QuoteView {
            id: mid,
            found: false,
            from: None,
            mine: false,
            text: None,
            file: None,
        };
        let Ok(hash) = <[u8; 32]>::try_from(hash) else {
            return Ok(not_found);
        };
        let r = MessageRef {
            id: Id::from_slice(id).map_err(|_| Error::Storage("corrupt reply id".into()))?,
            hash: Bytes(hash.to_vec()),
        };
        let Some(t) = self.target_of(conv, &r)? else {
            return Ok(not_found);
        };
        if t.deleted {
            return Ok(not_found);
        }
        let file = t
            .attachment
            .as_deref()
            .and_then(|a| AttachmentView::from_columns(Some(a), None))
            .map(|a| a.name);
        let mine = t.sender == self.fingerprint;
        Ok(QuoteView {
            id: mid,
            found: true,
            from: (!mine)
                .then(|| self.label(&conv.group_id, &t.sender))
                .transpose()?,
            mine,
            text: Some(t.text.chars().take(QUOTE_CHARS).collect()),
            file,
        })
    }
}

/// What a modified client could do, for the tests of what this one accepts.
#[cfg(feature = "testing")]
impl Profile {
    /// Encrypt and append any plaintext to a conversation, as a hostile or newer client
    /// would (no check of what it says). Returns its position.
    pub async fn send_plaintext_for_test(
        &mut self,
        id: &ConversationId,
        plain: &[u8],
    ) -> Result<u64> {
        let conv = self.conv(id)?;
        let relay = self.conv_relay(&conv)?;
        let mut group = self.mls.load(conv.group_id.as_bytes())?;
        let epoch = group.epoch();
        let ct = group.encrypt(plain)?;
        let token = group.token()?;
        self.db.transaction(|_| group.save())?;
        let seq = relay
            .append_application(random_id(), &conv.log, &token, epoch, ct)
            .await?;
        self.db.conn().execute(
            "INSERT OR IGNORE INTO own_entries (group_id, seq) VALUES (?1, ?2)",
            params![conv.group_id.as_bytes(), seq as i64],
        )?;
        Ok(seq)
    }

    /// The reference (`{"id", "hash"}`, as the wire carries it) to a stored message.
    pub fn message_ref_for_test(&self, message: &MessageId) -> Result<serde_json::Value> {
        let t = self.target(message)?;
        serde_json::to_value(MessageRef {
            id: t.id,
            hash: Bytes(t.hash.to_vec()),
        })
        .map_err(|e| Error::Storage(e.to_string()))
    }

    /// One number read straight from the store (`SELECT COUNT(*) …`): what an expiry or a
    /// delete must leave at zero, checked where it is kept rather than through a view.
    pub fn rows_for_test(&self, sql: &str) -> Result<i64> {
        Ok(self.db.conn().query_row(sql, [], |r| r.get(0))?)
    }
}
