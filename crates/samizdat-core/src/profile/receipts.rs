//! Receipts: "delivered" (a device of the recipient holds our message) and "read" (it was
//! shown to them), in 1:1 chats and small groups.
//!
//! A receipt is an MLS application message of the conversation (`Body::Receipt`) naming the
//! messages by [`MessageRef`], so the relay sees one more append and nothing of what it says.
//! A device owes a "delivered" receipt for each message of someone else it stores, and — only
//! when its person turned read receipts on (off by default) — a "read" receipt for each such
//! message it shows. What it owes is kept in `receipts_owed` and sent, one receipt per
//! conversation, after the sync or page that produced it; a device skips what another device
//! of its person already acknowledged. Whoever keeps read receipts off neither sends nor sees
//! them (as in Signal).
//!
//! Every member reads every receipt from the log, so large groups get none: above
//! [`RECEIPT_PEOPLE`] people a message stays "sent".

use super::*;
use crate::payload::{MAX_RECEIPT_TARGETS, MessageRef};

/// Conversations of at most this many people send and show receipts.
pub const RECEIPT_PEOPLE: usize = 20;

/// Where one of our messages is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum MessageState {
    /// Stored here, waiting for the relay (it is unreachable, or the send is under way).
    Sending,
    /// The relay has it.
    Sent,
    /// A device of every other member has it.
    Delivered,
    /// Every other member has seen it (read receipts on, theirs and ours).
    Read,
    /// The relay refused it for good (`failed` says why).
    Failed,
}

/// How far one of our messages got in a group: of `of` other members, how many hold it on a
/// device and how many have seen it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct ReceiptCounts {
    pub delivered: u32,
    pub read: u32,
    pub of: u32,
}

/// What the receipts of one message say.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Acks {
    pub(super) delivered: u32,
    pub(super) read: u32,
}

impl Profile {
    /// Read receipts: sent and shown only when on (off by default; shared by the person's
    /// devices).
    pub fn read_receipts(&self) -> Result<bool> {
        Ok(self.db.get_setting(Setting::ReadReceipts)?.as_deref() == Some(b"1"))
    }

    pub fn set_read_receipts(&self, on: bool) -> Result<()> {
        self.db
            .set_setting(Setting::ReadReceipts, if on { b"1" } else { b"0" })?;
        self.state_changed()
    }

    /// Owe a receipt for message `id` of `conv` (inside the caller's transaction): only for a
    /// stored message of someone else.
    pub(super) fn owe_receipt(&self, tx: &Tx, conv: &Conv, id: &Id, read: bool) -> Result<()> {
        let n = tx.conn().execute(
            "INSERT OR IGNORE INTO receipts_owed (group_id, message_id, read)
             SELECT group_id, id, ?3 FROM messages
             WHERE id = ?1 AND group_id = ?2 AND outgoing = 0 AND system IS NULL AND sender_fp != ?4",
            params![
                id.as_bytes(),
                conv.group_id.as_bytes(),
                read,
                &self.fingerprint[..]
            ],
        )?;
        if n > 0 {
            self.receipts_due
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }

    /// Owe "read" receipts for messages of others that were unread in `conv` (called as a
    /// page marks them read), when read receipts are on.
    pub(super) fn owe_read_receipts(&self, conv: &Conv) -> Result<()> {
        if !self.read_receipts()? {
            return Ok(());
        }
        let n = self.db.conn().execute(
            "INSERT OR IGNORE INTO receipts_owed (group_id, message_id, read)
             SELECT group_id, id, 1 FROM messages
             WHERE group_id = ?1 AND unread = 1 AND outgoing = 0 AND system IS NULL
               AND deleted = 0 AND sender_fp != ?2",
            params![conv.group_id.as_bytes(), &self.fingerprint[..]],
        )?;
        if n > 0 {
            self.receipts_due
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }

    /// Receipts this device owes, if any (the service asks after each call).
    pub fn receipts_due(&self) -> bool {
        self.receipts_due.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Send what this device owes: one receipt per conversation and kind (queued like any
    /// message when the relay is unreachable). Conversations that are too large, or that we
    /// left, owe nothing.
    pub async fn send_receipts(&mut self) -> Result<()> {
        self.receipts_due
            .store(false, std::sync::atomic::Ordering::Relaxed);
        let groups: Vec<Vec<u8>> = {
            let conn = self.db.conn();
            let mut stmt = conn.prepare("SELECT DISTINCT group_id FROM receipts_owed")?;
            stmt.query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?
        };
        for gid in groups {
            let conv = match Id::from_slice(&gid).ok().map(|g| self.conv_by_id(&g)) {
                Some(Ok(Some(c))) if c.active && !is_self_group(&c) => c,
                Some(Err(e)) => return Err(e),
                _ => {
                    self.forget_owed(&gid)?;
                    continue;
                }
            };
            let people = self
                .mls
                .load(conv.group_id.as_bytes())
                .map(|g| g.people().len())
                .unwrap_or(usize::MAX);
            if people > RECEIPT_PEOPLE {
                self.forget_owed(&gid)?;
                continue;
            }
            for read in [false, true] {
                loop {
                    let batch = self.owed_batch(&conv, read)?;
                    if batch.is_empty() {
                        break;
                    }
                    let ids: Vec<Vec<u8>> = batch.iter().map(|(id, _)| id.clone()).collect();
                    let targets: Vec<MessageRef> =
                        batch.into_iter().filter_map(|(_, r)| r).collect();
                    if !targets.is_empty() {
                        let body = Body::Receipt {
                            targets: targets.clone(),
                            read,
                        };
                        queued(self.send_body(&conv, body).await)?;
                    }
                    // Said (or queued): our other devices need not say it, and neither do we.
                    let me = self.fingerprint;
                    self.db.transaction(|tx| {
                        for id in &ids {
                            tx.conn().execute(
                                "DELETE FROM receipts_owed WHERE message_id = ?1 AND read = ?2",
                                params![id, read],
                            )?;
                        }
                        for t in &targets {
                            store_receipt(tx, t.id.as_bytes(), &me, read)?;
                        }
                        Ok(())
                    })?;
                }
            }
        }
        Ok(())
    }

    /// [`Profile::send_receipts`] where a failure must not fail what came before it (a sync):
    /// what could not be sent stays owed for the next time.
    pub async fn send_receipts_quietly(&mut self) {
        if !self.receipts_due() {
            return;
        }
        if let Err(e) = self.send_receipts().await {
            self.receipts_due
                .store(true, std::sync::atomic::Ordering::Relaxed);
            tracing::debug!("receipts: {e}");
        }
    }

    /// Up to [`MAX_RECEIPT_TARGETS`] owed rows of one kind: each with its reference, or `None`
    /// when nothing needs saying (gone, deleted, or said already by a device of ours).
    #[allow(clippy::type_complexity)]
    fn owed_batch(&self, conv: &Conv, read: bool) -> Result<Vec<(Vec<u8>, Option<MessageRef>)>> {
        let rows: Vec<(Vec<u8>, Option<bool>)> = {
            let conn = self.db.conn();
            let mut stmt = conn.prepare(
                "SELECT o.message_id, r.read FROM receipts_owed o
                 LEFT JOIN receipts r ON r.message_id = o.message_id AND r.person = ?3
                 WHERE o.group_id = ?1 AND o.read = ?2 LIMIT ?4",
            )?;
            stmt.query_map(
                params![
                    conv.group_id.as_bytes(),
                    read,
                    &self.fingerprint[..],
                    MAX_RECEIPT_TARGETS as i64
                ],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?
            .collect::<rusqlite::Result<_>>()?
        };
        let mut out = Vec::with_capacity(rows.len());
        for (id, said) in rows {
            let already = matches!(said, Some(s) if s || !read);
            let target = match self.target_in(conv, &id)? {
                Some(r) if !already => Some(r),
                _ => None,
            };
            out.push((id, target));
        }
        Ok(out)
    }

    fn forget_owed(&self, gid: &[u8]) -> Result<()> {
        self.db.conn().execute(
            "DELETE FROM receipts_owed WHERE group_id = ?1",
            params![gid],
        )?;
        Ok(())
    }

    /// A receipt from `sender` (inside the caller's transaction): kept for our messages it
    /// names (from someone else), and for others' messages when another device of ours sent
    /// it. Names that match nothing here are ignored.
    pub(super) fn apply_receipt(
        &self,
        tx: &Tx,
        conv: &Conv,
        sender: &[u8; 32],
        targets: &[MessageRef],
        read: bool,
    ) -> Result<()> {
        let mine = *sender == self.fingerprint;
        let mut acked = Vec::new();
        for r in targets.iter().take(MAX_RECEIPT_TARGETS) {
            let Some(t) = self.target_of(conv, r)? else {
                continue;
            };
            let ours = t.sender == self.fingerprint[..];
            if t.deleted || ours == mine {
                continue;
            }
            store_receipt(tx, t.id.as_bytes(), sender, read)?;
            if ours {
                acked.push(MessageId::from_id(t.id));
            }
        }
        if !acked.is_empty() {
            self.emit(Event::Receipt {
                conversation_id: ConversationId::from_id(conv.group_id),
                ids: acked,
                read,
            })?;
        }
        Ok(())
    }

    /// What the receipts say of each of `ids` (people other than us).
    pub(super) fn acks_of(&self, ids: &[Vec<u8>]) -> Result<HashMap<Vec<u8>, Acks>> {
        let mut out = HashMap::new();
        if ids.is_empty() {
            return Ok(out);
        }
        let conn = self.db.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT COUNT(*), COALESCE(SUM(read), 0) FROM receipts WHERE message_id = ?1 AND person != ?2",
        )?;
        for id in ids {
            let (delivered, read): (i64, i64) = stmt
                .query_row(params![id, &self.fingerprint[..]], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?;
            if delivered > 0 {
                out.insert(
                    id.clone(),
                    Acks {
                        delivered: delivered as u32,
                        read: read as u32,
                    },
                );
            }
        }
        Ok(out)
    }
}

/// Keep that `person` holds (or has seen) message `id`; "read" never goes back.
fn store_receipt(tx: &Tx, id: &[u8], person: &[u8], read: bool) -> Result<()> {
    tx.conn().execute(
        "INSERT INTO receipts (message_id, person, read, at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(message_id, person) DO UPDATE SET read = MAX(read, excluded.read)",
        params![id, person, read, now_millis() as i64],
    )?;
    Ok(())
}
