//! Read-only views for the fronts: conversations, history, members, invitations.

use super::*;

/// A pending group invitation (a message request).
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct InvitationView {
    pub id: i64,
    /// Key fingerprint (hex prefix) of the member who added us; not a contact.
    pub from: String,
    /// The relay hosting the group's log.
    pub relay: String,
    /// False when this profile has never used that relay: accepting connects to it.
    pub relay_known: bool,
    pub members: usize,
    pub received_at: u64,
    /// Why this invitation needs a second look, if it does.
    pub warning: Option<crate::Notice>,
    /// It arrived on another device of yours: accepting here asks that device to join (it
    /// then adds this one).
    #[serde(default)]
    pub on_other_device: bool,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct ContactView {
    /// The contact's stable id: their full key fingerprint (hex).
    pub id: ContactId,
    pub alias: String,
    pub display_name: String,
    pub fingerprint: String,
    /// Marked as verified by comparing safety numbers.
    pub verified: bool,
    /// How to show them: the alias, with a key suffix when it looks like another contact's.
    #[serde(default)]
    pub shown_as: String,
    /// Their colour (0–11, from their key; see `text::hue`).
    #[serde(default)]
    pub hue: u8,
    /// Blocked: nothing they send is kept, and we cannot write to them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub blocked: bool,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct ConversationView {
    /// The conversation's stable id (its MLS group id, base64url).
    pub id: ConversationId,
    pub name: String,
    /// How to show the conversation: its name, or for a direct one the contact as they are
    /// shown everywhere (with a key suffix when their name looks like another's).
    #[serde(default)]
    pub shown_as: String,
    /// A direct conversation: the contact's colour (0–11, from their key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hue: Option<u8>,
    pub kind: ConvKind,
    pub unread: u64,
    pub members: usize,
    pub active: bool,
    /// Why it no longer takes messages (or is ending); fronts say it in their language.
    pub status: Option<crate::ConvStatus>,
    /// The newest message, if any.
    pub last: Option<LastMessage>,
    /// When the conversation last changed (its newest message, or its creation), ms.
    pub last_activity: u64,
    /// Disappearing messages: seconds a message lives (0: off).
    pub timer_secs: u64,
    /// The relay holding the conversation's log (it changes when the conversation moves).
    pub relay: String,
    /// Kept at the top of the list.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pinned: bool,
    /// Kept out of the main list (a new message brings it back unless it is muted).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub archived: bool,
    /// Muted until then (ms since the epoch; `u64` near `i64::MAX`: until unmuted): no
    /// notification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub muted_until: Option<u64>,
    /// A 1:1 chat with a contact we blocked.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub blocked: bool,
    /// The contact of a 1:1 chat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<ContactId>,
}

/// Which messages of a conversation to read (all of them by default).
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// Only messages before this message id.
    pub before: Option<MessageId>,
    /// Only messages after this message id (then the oldest `limit` of them).
    pub after: Option<MessageId>,
    /// Only this message.
    pub id: Option<MessageId>,
    /// At most this many: the newest ones, or with `after` the oldest.
    pub limit: Option<usize>,
}

/// A conversation's newest message, for a chat list's preview.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct LastMessage {
    pub from: String,
    pub text: String,
    pub sent_at: u64,
    pub outgoing: bool,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct MessageView {
    pub id: MessageId,
    pub from: String,
    /// The sender's colour (0–11, from their key), for messages from others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hue: Option<u8>,
    pub text: String,
    pub sent_at: u64,
    pub seq: Option<u64>,
    pub outgoing: bool,
    /// False while an outgoing message waits for the relay's acknowledgement (the relay has
    /// it once true: "sent"; `state` says more).
    pub delivered: bool,
    /// Our message's state: sending, sent (the relay has it), delivered (a device of every
    /// other member has it), read, failed. Absent for messages of others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<super::MessageState>,
    /// Our message in a group of more than two (with receipts): how many of the others hold
    /// it and have seen it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipts: Option<super::ReceiptCounts>,
    /// Set when the relay refused an outgoing message for good (with the reason).
    pub failed: Option<crate::Problem>,
    /// Disappearing: when this message is deleted (ms since the epoch).
    pub expires_at: Option<u64>,
    /// A file sent with the message; `samizdat download ID` fetches it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachment: Option<AttachmentView>,
    /// The message this one answers, as this device holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<super::QuoteView>,
    /// Reactions, the most chosen first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reactions: Vec<super::ReactionView>,
    /// Its sender corrected the text (`text` is the newest).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub edited: bool,
    /// Deleted for everyone by its sender: no text or file is left.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    /// Passed on from another conversation.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forwarded: bool,
    /// Sent by a newer version in a form this one cannot show: "update Samizdat to see this".
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unsupported: bool,
    /// Not a message but a line about the conversation (someone added, removed or left, a
    /// rename, the timer, a contact's devices): the event, for the front to say in its
    /// reader's language.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<Box<Event>>,
}

/// One `messages` row as a page reads it.
struct Row {
    id: Vec<u8>,
    fp: Vec<u8>,
    text: String,
    sent_at: i64,
    seq: Option<i64>,
    outgoing: i64,
    delivered: bool,
    failed: Option<String>,
    expires_at: Option<i64>,
    attachment: Option<String>,
    file: Option<String>,
    reply_to: Option<Vec<u8>>,
    reply_hash: Option<Vec<u8>>,
    edited: bool,
    deleted: bool,
    forwarded: bool,
    unsupported: bool,
    system: Option<String>,
}

/// An attachment as shown: its name made safe, its real size, and whether the encrypted
/// file is on this device already.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct AttachmentView {
    pub name: String,
    pub size: u64,
    pub media_type: String,
    pub downloaded: bool,
    /// A photo with a thumbnail (`thumbnail` gives it): shown inline.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub thumbnail: bool,
    /// The photo's size in pixels, upright (0: not a photo, or unknown).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub width: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub height: u32,
    /// A voice message: its length in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice_ms: Option<u64>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl AttachmentView {
    pub(crate) fn of(a: &crate::payload::Attachment, downloaded: bool) -> AttachmentView {
        let media_type: String = a
            .media_type
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || "/.+-".contains(*c))
            .take(100)
            .collect();
        AttachmentView {
            name: crate::attachment::safe_name(&a.name),
            size: a.size,
            media_type: if media_type.is_empty() {
                "application/octet-stream".into()
            } else {
                media_type
            },
            downloaded,
            thumbnail: a.preview.as_ref().is_some_and(|p| p.thumbnail.is_some()),
            width: a
                .preview
                .as_ref()
                .map(|p| p.width.min(100_000))
                .unwrap_or(0),
            height: a
                .preview
                .as_ref()
                .map(|p| p.height.min(100_000))
                .unwrap_or(0),
            voice_ms: a.preview.as_ref().and_then(|p| p.voice_ms),
        }
    }

    /// From the stored JSON and file columns.
    pub(crate) fn from_columns(json: Option<&str>, file: Option<&str>) -> Option<AttachmentView> {
        let a: crate::payload::Attachment = serde_json::from_str(json?).ok()?;
        Some(Self::of(&a, file.is_some()))
    }
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct MemberView {
    pub name: String,
    pub fingerprint: String,
    /// Their colour (0–11, from their key; see `text::hue`).
    #[serde(default)]
    pub hue: u8,
    pub me: bool,
    /// False until the member has announced itself in the group (it joins by processing its
    /// Welcome, then sends its name). A member that stays unjoined can be sent a fresh
    /// Welcome (`group readd`).
    pub joined: bool,
    /// How many devices of this person are in the group (each its own MLS member).
    pub devices: usize,
}

impl Profile {
    /// Every conversation, the most recently active first.
    pub fn conversations(&self) -> Result<Vec<ConversationView>> {
        self.expire_messages()?;
        let conn = self.db.conn();
        let mut stmt = conn.prepare(
            "SELECT c.group_id, c.name, c.kind, c.active, c.status, c.status_reason,
                    (SELECT COUNT(*) FROM messages m WHERE m.group_id = c.group_id AND m.unread = 1),
                    c.created_at, c.timer_secs, c.relay, c.pinned, c.archived, c.muted_until
             FROM conversations c ORDER BY c.created_at",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    crate::ConvStatus::from_columns(
                        r.get::<_, Option<String>>(4)?.as_deref(),
                        r.get::<_, Option<String>>(5)?.as_deref(),
                    ),
                    r.get::<_, i64>(6)?,
                    r.get::<_, i64>(7)?,
                    r.get::<_, i64>(8)?,
                    r.get::<_, String>(9)?,
                    (
                        r.get::<_, bool>(10)?,
                        r.get::<_, bool>(11)?,
                        r.get::<_, Option<i64>>(12)?,
                    ),
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        drop(stmt);
        let mut newest = conn.prepare(
            "SELECT sender_fp, body, sent_at, outgoing, received_at FROM messages WHERE group_id = ?1 AND system IS NULL
             ORDER BY COALESCE(seq, 9223372036854775807) DESC, received_at DESC, rowid DESC LIMIT 1",
        )?;
        let mut lasts = Vec::with_capacity(rows.len());
        for row in &rows {
            lasts.push(
                newest
                    .query_row(params![row.0], |r| {
                        Ok((
                            r.get::<_, Vec<u8>>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, i64>(2)?,
                            r.get::<_, i64>(3)?,
                            r.get::<_, i64>(4)?,
                        ))
                    })
                    .optional()?,
            );
        }
        drop(newest);
        drop(conn);
        let mut out = Vec::new();
        let now = now_millis();
        for (
            (
                gid,
                name,
                kind,
                active,
                status,
                unread,
                created_at,
                timer,
                relay,
                (pinned, archived, muted),
            ),
            last,
        ) in rows.into_iter().zip(lasts)
        {
            let members = if active != 0 {
                self.mls.load(&gid).map(|g| g.people().len()).unwrap_or(0)
            } else {
                0
            };
            let id = Id::from_slice(&gid).map_err(|_| Error::Storage("corrupt group id".into()))?;
            let mut last_activity = (created_at.max(0) as u64).saturating_mul(1000);
            let last = match last {
                Some((fp, text, sent_at, outgoing, received_at)) => {
                    last_activity = last_activity.max(received_at.max(0) as u64);
                    Some(LastMessage {
                        from: self.label(&id, &fp)?,
                        text,
                        sent_at: sent_at.max(0) as u64,
                        outgoing: outgoing != 0,
                    })
                }
                None => None,
            };
            let peer: Option<(Vec<u8>, bool)> = (kind == "direct")
                .then(|| {
                    self.db
                        .conn()
                        .query_row(
                            "SELECT fingerprint, blocked FROM contacts WHERE group_id = ?1",
                            params![gid],
                            |r| Ok((r.get(0)?, r.get(1)?)),
                        )
                        .optional()
                })
                .transpose()?
                .flatten();
            let blocked = peer.as_ref().is_some_and(|p| p.1);
            let peer = peer.map(|p| p.0);
            let shown_as = match &peer {
                Some(fp) => self.label(&id, fp)?,
                None => name.clone(),
            };
            // Saved messages have no name of their own: fronts say it in their language.
            let (name, shown_as) = if kind == "self" {
                (String::new(), String::new())
            } else {
                (name, shown_as)
            };
            out.push(ConversationView {
                id: ConversationId::from_id(id),
                name,
                shown_as,
                hue: peer.as_deref().map(crate::text::hue),
                kind: ConvKind::from_sql(&kind)?,
                unread: unread as u64,
                members,
                active: active != 0,
                status,
                last,
                last_activity,
                timer_secs: timer.max(0) as u64,
                relay,
                pinned,
                archived,
                muted_until: muted.map(|m| m.max(0) as u64).filter(|m| *m > now),
                blocked,
                contact: peer
                    .as_deref()
                    .and_then(|p| <[u8; 32]>::try_from(p).ok())
                    .map(ContactId::from_bytes),
            });
        }
        // Pinned first, then the most recently active.
        out.sort_by_key(|c| {
            (
                std::cmp::Reverse(c.pinned),
                std::cmp::Reverse(c.last_activity),
            )
        });
        Ok(out)
    }

    /// Messages of a conversation in log order; marks them read.
    pub fn history(&self, id: &ConversationId) -> Result<Vec<MessageView>> {
        self.history_page(id, &Page::default())
    }

    /// A page of a conversation's messages in log order (messages not yet acknowledged by the
    /// relay last); marks the conversation read. Paged by message id so that a long
    /// conversation opens without reading all of it.
    pub fn history_page(&self, id: &ConversationId, page: &Page) -> Result<Vec<MessageView>> {
        let conv = self.conv(id)?;
        // Disappeared messages are never shown, even between sweeps.
        self.expire_messages()?;
        let anchor = |id: &Option<MessageId>| -> Result<Option<(i64, i64, i64)>> {
            let Some(id) = id else { return Ok(None) };
            let raw = id.as_bytes();
            let key = self
                .db
                .conn()
                .query_row(
                    &format!("SELECT {POSITION_KEY} FROM messages WHERE group_id = ?1 AND id = ?2"),
                    params![conv.group_id.as_bytes(), raw],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?
                .ok_or_else(|| Error::NotFound(format!("no message {id} in {:?}", conv.name)))?;
            Ok(Some(key))
        };
        let before = anchor(&page.before)?;
        let after = anchor(&page.after)?;
        let only = page.id.map(|id| id.as_bytes().to_vec());
        let limit = page.limit.unwrap_or(usize::MAX).min(i64::MAX as usize) as i64;
        // Without `after`, the page was read newest first: turned around below.
        let newest_first = after.is_none();
        let (sql, args) = page_query(&conv.group_id, before, after, only, limit);
        let mut rows = {
            let conn = self.db.conn();
            let mut stmt = conn.prepare(&sql)?;
            stmt.query_map(rusqlite::params_from_iter(args.iter()), |r| {
                Ok(Row {
                    id: r.get(0)?,
                    fp: r.get(1)?,
                    text: r.get(2)?,
                    sent_at: r.get(3)?,
                    seq: r.get(4)?,
                    outgoing: r.get(5)?,
                    delivered: r.get(6)?,
                    failed: r.get(7)?,
                    expires_at: r.get(8)?,
                    attachment: r.get(9)?,
                    file: r.get(10)?,
                    reply_to: r.get(11)?,
                    reply_hash: r.get(12)?,
                    edited: r.get(13)?,
                    deleted: r.get(14)?,
                    forwarded: r.get(15)?,
                    unsupported: r.get(16)?,
                    system: r.get(17)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?
        };
        if newest_first {
            rows.reverse();
        }
        let ids: Vec<Vec<u8>> = rows.iter().map(|r| r.id.clone()).collect();
        let mut reactions = self.reactions_of(&conv.group_id, &ids)?;
        // Receipts: only where they are sent (small conversations we are still in).
        let others = match rows.iter().any(|r| r.outgoing != 0) && conv.active {
            true => self
                .mls
                .load(conv.group_id.as_bytes())
                .map(|g| g.people().len())
                .ok()
                .filter(|n| *n <= super::RECEIPT_PEOPLE)
                .map(|n| n.saturating_sub(1) as u32),
            false => None,
        };
        let show_read = self.read_receipts()?;
        let acks = match others {
            Some(_) => {
                let sent: Vec<Vec<u8>> = rows
                    .iter()
                    .filter(|r| r.outgoing != 0 && r.delivered)
                    .map(|r| r.id.clone())
                    .collect();
                self.acks_of(&sent)?
            }
            None => HashMap::new(),
        };
        // One label lookup per sender, not per message.
        let mut labels: HashMap<Vec<u8>, String> = HashMap::new();
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let system: Option<Box<Event>> = row
                .system
                .as_deref()
                .and_then(|s| serde_json::from_str(s).ok());
            let from = match labels.get(&row.fp) {
                _ if row.system.is_some() => String::new(),
                Some(l) => l.clone(),
                None => {
                    let l = self.label(&conv.group_id, &row.fp)?;
                    labels.insert(row.fp.clone(), l.clone());
                    l
                }
            };
            let reply_to = match (&row.reply_to, &row.reply_hash) {
                (Some(id), Some(hash)) if !row.deleted => Some(self.quote_of(&conv, id, hash)?),
                _ => None,
            };
            let failed = row.failed.as_deref().map(failure);
            let (state, receipts) = match row.outgoing != 0 && row.system.is_none() {
                false => (None, None),
                true => {
                    let a = acks.get(&row.id).copied().unwrap_or_default();
                    let read = if show_read { a.read } else { 0 };
                    let state = if failed.is_some() {
                        super::MessageState::Failed
                    } else if !row.delivered {
                        super::MessageState::Sending
                    } else {
                        match others {
                            Some(n) if n > 0 && read >= n => super::MessageState::Read,
                            Some(n) if n > 0 && a.delivered >= n => super::MessageState::Delivered,
                            _ => super::MessageState::Sent,
                        }
                    };
                    let counts =
                        others
                            .filter(|n| *n > 1 && row.delivered)
                            .map(|of| super::ReceiptCounts {
                                delivered: a.delivered.min(of),
                                read: read.min(of),
                                of,
                            });
                    (Some(state), counts)
                }
            };
            out.push(MessageView {
                id: MessageId::from_slice(&row.id)?,
                from,
                hue: (row.outgoing == 0 && row.system.is_none()).then(|| crate::text::hue(&row.fp)),
                text: row.text,
                sent_at: row.sent_at as u64,
                seq: row.seq.map(|s| s as u64),
                outgoing: row.outgoing != 0,
                delivered: row.delivered,
                state,
                receipts,
                failed,
                expires_at: row.expires_at.map(|e| e.max(0) as u64),
                attachment: AttachmentView::from_columns(
                    row.attachment.as_deref(),
                    row.file.as_deref(),
                ),
                reply_to,
                reactions: reactions.remove(&row.id).unwrap_or_default(),
                edited: row.edited,
                deleted: row.deleted,
                forwarded: row.forwarded,
                unsupported: row.unsupported,
                system,
            });
        }
        self.owe_read_receipts(&conv)?;
        let read = self.db.conn().execute(
            "UPDATE messages SET unread = 0 WHERE group_id = ?1 AND unread = 1",
            params![conv.group_id.as_bytes()],
        )?;
        if read > 0 {
            // Read here: read on the person's other devices too.
            self.state_changed()?;
        }
        Ok(out)
    }

    pub fn group_members(&self, id: &ConversationId) -> Result<Vec<MemberView>> {
        let conv = self.conv(id)?;
        if !conv.active {
            return Err(Error::NotMember(format!(
                "you are no longer a member of {:?}",
                conv.name
            )));
        }
        let group = self.mls.load(conv.group_id.as_bytes())?;
        let leaves = group.members();
        group
            .people()
            .into_iter()
            .map(|m| {
                let devices = leaves.iter().filter(|l| l.fingerprint == m.fingerprint).count();
                let me = m.fingerprint == self.fingerprint;
                // Joined: announced its name, or has written in the group (the creator of a
                // group never announces itself; it writes).
                let announced: bool = self.db.conn().query_row(
                    "SELECT EXISTS (SELECT 1 FROM member_names WHERE group_id = ?1 AND fingerprint = ?2)
                         OR EXISTS (SELECT 1 FROM messages WHERE group_id = ?1 AND sender_fp = ?2)",
                    params![conv.group_id.as_bytes(), &m.fingerprint[..]],
                    |r| r.get(0),
                )?;
                Ok(MemberView {
                    name: self.label(&conv.group_id, &m.fingerprint)?,
                    fingerprint: hex::encode(&m.fingerprint[..8]),
                    hue: crate::text::hue(&m.fingerprint),
                    me,
                    joined: me || announced,
                    devices,
                })
            })
            .collect()
    }

    /// Pending group invitations from people who are not contacts.
    pub fn invitations(&self) -> Result<Vec<InvitationView>> {
        // The rows first, and the connection released: `relay_known` below takes it again (a
        // deadlock before, for an invitation on a relay other than ours).
        let rows = self.invitation_rows()?;
        let mut out = Vec::with_capacity(rows.len());
        for (id, committer, relay, members, received_at, claims, elsewhere) in rows {
            let relay_known = self.relay_known(&relay)?;
            out.push(InvitationView {
                id,
                from: hex::encode(&committer[..committer.len().min(8)]),
                warning: invitation_warning(claims.as_deref(), relay_known, &relay),
                relay,
                relay_known,
                members: members.max(0) as usize,
                received_at: received_at.max(0) as u64,
                on_other_device: elsewhere,
            });
        }
        Ok(out)
    }

    fn invitation_rows(
        &self,
    ) -> Result<Vec<(i64, Vec<u8>, String, i64, i64, Option<String>, bool)>> {
        let conn = self.db.conn();
        let mut stmt = conn.prepare(
            "SELECT id, committer, relay, members, received_at, claims_existing, on_device IS NOT NULL FROM invitations ORDER BY id",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, Option<String>>(5)?,
                    r.get::<_, bool>(6)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }
}

/// Why a message failed, as stored in `messages.failed`: a [`crate::Problem`] as JSON (older
/// versions stored the relay's English sentence, read as the detail of a relay refusal).
fn failure(stored: &str) -> crate::Problem {
    serde_json::from_str(stored).unwrap_or_else(|_| crate::Problem {
        kind: crate::ErrorKind::Relay,
        detail: stored.to_string(),
    })
}

/// The log order as one sortable key: position, then arrival, then insertion.
const POSITION_KEY: &str = "COALESCE(seq, 9223372036854775807), received_at, rowid";

/// The statement (and its arguments) for one page of a conversation's messages: with `after`
/// the oldest messages past the anchor come first; otherwise the newest page before `before`
/// (or the end), newest first. Only the conditions asked for go into the statement, so SQLite
/// can walk the position index (`messages_by_position`) from the anchor instead of reading the
/// conversation.
fn page_query(
    group_id: &Id,
    before: Option<(i64, i64, i64)>,
    after: Option<(i64, i64, i64)>,
    only: Option<Vec<u8>>,
    limit: i64,
) -> (String, Vec<rusqlite::types::Value>) {
    let newest_first = after.is_none();
    let mut sql = String::from(
        "SELECT id, sender_fp, body, sent_at, seq, outgoing,
                pending_body IS NULL AND failed IS NULL
                    AND NOT EXISTS (SELECT 1 FROM pending_files p WHERE p.id = messages.id),
                failed, expires_at,
                attachment, attachment_file,
                reply_to, reply_hash, edited_at IS NOT NULL, deleted, forwarded, unknown IS NOT NULL,
                system
         FROM messages WHERE group_id = ?1",
    );
    let mut args: Vec<rusqlite::types::Value> = vec![group_id.as_bytes().to_vec().into()];
    let mut bound = |sql: &mut String, op: &str, key: (i64, i64, i64)| {
        let n = args.len();
        sql.push_str(&format!(
            " AND ({POSITION_KEY}) {op} (?{}, ?{}, ?{})",
            n + 1,
            n + 2,
            n + 3
        ));
        args.extend([key.0.into(), key.1.into(), key.2.into()]);
    };
    if let Some(k) = before {
        bound(&mut sql, "<", k);
    }
    if let Some(k) = after {
        bound(&mut sql, ">", k);
    }
    if let Some(id) = only {
        sql.push_str(&format!(" AND id = ?{}", args.len() + 1));
        args.push(id.into());
    }
    sql.push_str(&format!(
        " ORDER BY {} LIMIT ?{}",
        if newest_first {
            "COALESCE(seq, 9223372036854775807) DESC, received_at DESC, rowid DESC"
        } else {
            "COALESCE(seq, 9223372036854775807), received_at, rowid"
        },
        args.len() + 1
    ));
    args.push(limit.into());
    (sql, args)
}
