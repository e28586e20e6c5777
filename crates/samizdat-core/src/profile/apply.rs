//! The rules for one decrypted payload: what each body kind changes and reports.

use super::*;

impl Profile {
    /// Store the effect of one decrypted payload (inside the caller's transaction).
    /// Returns the sender's fingerprint if it asked to leave.
    pub(super) fn apply_payload(
        &self,
        tx: &Tx,
        conv: &mut Conv,
        sender: &[u8; 32],
        p: Payload,
        seq: u64,
    ) -> Result<Option<Vec<u8>>> {
        let gid = conv.group_id;
        if self.apply_self_body(tx, conv, sender, &p.body)? {
            return Ok(None);
        }
        let mine = *sender == self.fingerprint;
        // What people say to each other (not what keeps the group one group: leaves, names,
        // the timer, devices).
        let speech = matches!(
            p.body,
            Body::Text { .. }
                | Body::React { .. }
                | Body::Edit { .. }
                | Body::Delete { .. }
                | Body::Receipt { .. }
                | Body::Call { .. }
                | Body::Unknown
        );
        // Only the person's devices share the self group; besides what they tell each other,
        // it holds the person's saved messages (notes to self) and what they do to them. (A
        // body this version does not know may be something the devices tell each other: not
        // shown as a note.)
        let note = speech
            && !matches!(
                p.body,
                Body::Receipt { .. } | Body::Call { .. } | Body::Unknown
            );
        if is_self_group(conv) && !(mine && note) {
            return Ok(None);
        }
        // Nothing a blocked contact says is kept; what they do to the group still counts
        // (a leave, their name, the timer), so the group stays one group for everyone.
        if !mine && speech && self.is_blocked(sender)? {
            return Ok(None);
        }
        match p.body {
            Body::Text {
                text,
                attachment,
                reply_to,
                forwarded,
            } => {
                let id = p.id;
                let m = TextIn {
                    id: p.id,
                    sent_at: p.sent_at,
                    expires_in: p.expires_in,
                    text,
                    attachment,
                    reply_to,
                    forwarded,
                };
                self.apply_text(conv, sender, seq, m)?;
                if !mine {
                    self.owe_receipt(tx, conv, &id, false)?;
                }
            }
            Body::Receipt { targets, read } => {
                self.apply_receipt(tx, conv, sender, &targets, read)?
            }
            Body::React {
                target,
                emoji,
                remove,
            } => self.apply_react(tx, conv, sender, &target, &emoji, remove)?,
            Body::Edit { target, text } => self.apply_edit(tx, conv, sender, &target, &text)?,
            Body::Delete { target } => self.apply_delete(tx, conv, sender, &target)?,
            Body::Unknown => self.apply_unknown(conv, sender, &p, seq)?,
            Body::Call { call_id, signal } => {
                self.apply_call(conv, sender, p.sent_at, call_id, signal)?
            }
            Body::Unreadable { position } => self.apply_unreadable(conv, sender, position)?,
            Body::ChannelAdmin { .. } if mine => {}
            Body::ChannelAdmin { to, link } => self.apply_channel_admin(tx, conv, &to, &link)?,
            Body::ChannelAdminKey { channel, key } => {
                self.apply_channel_admin_key(tx, sender, &channel, &key)?
            }
            // Our other devices' announcements are not news about a peer.
            Body::Profile { .. } if mine => {}
            Body::Profile {
                name,
                mailboxes,
                devices,
            } => {
                let list = devices.as_ref();
                self.apply_profile(tx, conv, sender, &name, &mailboxes, list)?;
            }
            Body::GroupMeta { name } => self.apply_group_meta(conv, &name)?,
            Body::Intro {
                name,
                relay,
                mailbox,
                invite,
                mailboxes,
            } => {
                self.apply_intro(conv, sender, name, relay, mailbox, invite, mailboxes)?;
            }
            Body::Timer { secs } => {
                let secs = secs.min(365 * 24 * 3600);
                tx.conn().execute(
                    "UPDATE conversations SET timer_secs = ?2 WHERE group_id = ?1",
                    params![gid.as_bytes(), secs as i64],
                )?;
                let e = Event::TimerSet {
                    conversation_id: ConversationId::from_id(gid),
                    conversation: conv.name.clone(),
                    who: self.label(&gid, sender)?,
                    secs,
                };
                self.emit(e)?;
            }
            Body::DeviceList { list } => {
                self.keep_device_list(tx, sender, &list, Some(conv))?;
            }
            Body::Devices { .. }
            | Body::History { .. }
            | Body::State { .. }
            | Body::InvitationAnswer { .. } => {}
            Body::Refused { reason } => {
                self.apply_refused(conv, sender, &reason)?;
            }
            Body::Leave if mine => {
                // We left on another device: the others remove every device of ours; this
                // one stops here (its keys go at the end of the sync, see `sync`).
                tx.conn().execute(
                    "UPDATE conversations SET active = 0, status = 'left', status_reason = NULL WHERE group_id = ?1",
                    params![gid.as_bytes()],
                )?;
                conv.active = false;
                let e = Event::notice(Some(conv), Notice::LeftOnOtherDevice);
                self.emit(e)?;
            }
            Body::Leave => {
                // Kept until a commit removes them (see `commit_pending_removals`).
                tx.conn().execute(
                    "INSERT OR IGNORE INTO pending_removals (group_id, member, created_at) VALUES (?1, ?2, ?3)",
                    params![gid.as_bytes(), sender, now_secs() as i64],
                )?;
                let e = Event::MemberLeft {
                    conversation_id: ConversationId::from_id(gid),
                    conversation: conv.name.clone(),
                    member: ContactId::from_bytes(*sender),
                    who: self.label(&gid, sender)?,
                };
                self.emit(e)?;
                return Ok(Some(sender.to_vec()));
            }
        }
        Ok(None)
    }

    /// A text message (with its attachment, if it passes its checks): stored once, shown.
    fn apply_text(&self, conv: &Conv, sender: &[u8; 32], seq: u64, m: TextIn) -> Result<()> {
        let TextIn {
            id,
            sent_at,
            expires_in,
            text,
            attachment,
            reply_to,
            forwarded,
        } = m;
        let gid = conv.group_id;
        let mine = *sender == self.fingerprint;
        // An attachment that fails its checks is dropped (the text stays) and said.
        let attachment = match attachment.map(|a| a.check().map(|_| a)).transpose() {
            Ok(a) => a,
            Err(e) => {
                self.emit(Event::Notice {
                    conversation_id: Some(ConversationId::from_id(gid)),
                    conversation: Some(conv.name.clone()),
                    notice: Notice::AttachmentRefused {
                        error: Problem::from(&e),
                    },
                })?;
                None
            }
        };
        let hash =
            super::actions::content_hash(&gid, sender, &id, sent_at, &text, attachment.as_ref());
        let attachment_json = attachment
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| Error::Storage(e.to_string()))?;
        // Disappearing: counted from arrival for the receiver.
        let now = now_millis();
        let expires_at = expires_in.map(|e| {
            now.saturating_add(e.saturating_mul(1000))
                .min(i64::MAX as u64) as i64
        });
        // Sent from another device of ours: "me", and read.
        let inserted = self.db.conn().execute(
            "INSERT OR IGNORE INTO messages (id, group_id, seq, sender_fp, outgoing, body, sent_at, received_at, unread, expires_in, expires_at, attachment, content_hash, reply_to, reply_hash, forwarded)
             VALUES (?1, ?2, ?3, ?4, ?11, ?5, ?6, ?7, ?12, ?8, ?9, ?10, ?13, ?14, ?15, ?16)",
            params![id.as_bytes(), gid.as_bytes(), (conv.seq_base + seq) as i64, &sender[..], text, sent_at as i64, now as i64,
                expires_in.map(|e| e.min(i64::MAX as u64) as i64), expires_at, attachment_json, mine, !mine,
                &hash[..], reply_to.as_ref().map(|r| r.id.as_bytes().to_vec()), reply_to.as_ref().map(|r| r.hash.0.clone()), forwarded],
        )?;
        if inserted == 1 {
            if !mine {
                self.unarchive_on_message(&gid)?;
            }
            let e = Event::Message {
                conversation_id: ConversationId::from_id(gid),
                conversation: conv.name.clone(),
                id: MessageId::from_id(id),
                sender: ContactId::from_bytes(*sender),
                from: self.label(&gid, sender)?,
                text,
                sent_at,
                attachment: attachment.as_ref().map(|a| AttachmentView::of(a, false)),
            };
            self.emit(e)?;
        }
        Ok(())
    }

    /// A member's profile: their name in this conversation (and a 1:1 contact's display
    /// name), their mailboxes, their device list.
    fn apply_profile(
        &self,
        tx: &Tx,
        conv: &Conv,
        sender: &[u8; 32],
        name: &str,
        mailboxes: &[crate::payload::MailboxAddr],
        devices: Option<&crate::device::DeviceList>,
    ) -> Result<()> {
        let gid = conv.group_id;
        if let Some(list) = devices {
            self.keep_device_list(tx, sender, list, Some(conv))?;
        }
        self.store_peer_addresses(sender, mailboxes)?;
        let name = crate::text::clean_name(name);
        tx.conn().execute(
            "INSERT OR REPLACE INTO member_names (group_id, fingerprint, name) VALUES (?1, ?2, ?3)",
            params![gid.as_bytes(), &sender[..], name],
        )?;
        // In a 1:1 conversation the peer's own name becomes the contact's display name.
        tx.conn().execute(
            "UPDATE contacts SET display_name = ?2 WHERE fingerprint = ?1",
            params![&sender[..], name],
        )?;
        Ok(())
    }

    /// A member named (or renamed) the group; our local name follows, made unique among
    /// our contacts and conversations.
    fn apply_group_meta(&self, conv: &mut Conv, name: &str) -> Result<()> {
        // A member named (or renamed) the group; our local name follows, made unique
        // among our contacts and conversations.
        let wanted = name.trim();
        let renamed = wanted != conv.name && wanted != without_counter(&conv.name);
        if conv.kind == ConvKind::Group && (conv.name.starts_with("new-") || renamed) {
            let unique = self.unique_name(name)?;
            self.db.conn().execute(
                "UPDATE conversations SET name = ?2 WHERE group_id = ?1",
                params![conv.group_id.as_bytes(), unique],
            )?;
            let e = Event::GroupNamed {
                conversation_id: ConversationId::from_id(conv.group_id),
                conversation: unique.clone(),
            };
            self.emit(e)?;
            conv.name = unique;
        }
        Ok(())
    }
}

/// A text message as it arrived.
struct TextIn {
    id: Id,
    sent_at: u64,
    expires_in: Option<u64>,
    text: String,
    attachment: Option<crate::payload::Attachment>,
    reply_to: Option<crate::payload::MessageRef>,
    forwarded: bool,
}

/// A local name without the `-N` that `unique_name` adds: "friends-2" → "friends".
fn without_counter(name: &str) -> &str {
    match name.rsplit_once('-') {
        Some((base, n))
            if !base.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) =>
        {
            base
        }
        _ => name,
    }
}
