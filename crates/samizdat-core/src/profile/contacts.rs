//! Invites and contacts: making and accepting invite links, names, safety numbers, and
//! the introduction that turns an invite's conversation into a 1:1 chat.

use super::*;

/// Whom an accepted invite connected us to, and the 1:1 conversation with them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connected {
    pub contact: ContactId,
    pub conversation: ConversationId,
}

impl Profile {
    /// The alias of the contact with key fingerprint `fp`, if it is a contact.
    pub(super) fn contact_alias(&self, fp: &[u8]) -> Result<Option<String>> {
        Ok(self
            .db
            .conn()
            .query_row(
                "SELECT alias FROM contacts WHERE fingerprint = ?1",
                params![fp],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Create an invite link valid for `ttl_secs`.
    pub fn invite(&self, ttl_secs: u64, reusable: bool) -> Result<Invite> {
        let invite = Invite {
            relay: self.relay.base().to_string(),
            mailbox: self.mailbox,
            fp: Bytes(self.fingerprint.to_vec()),
            id: random_id(),
            exp: now_secs().saturating_add(ttl_secs),
            reusable,
            more: self.own_addresses().into_iter().skip(1).collect(),
        };
        self.db.conn().execute(
            "INSERT INTO invites (invite_id, expires_at, reusable, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![invite.id.as_bytes(), invite.exp as i64, reusable as i64, now_secs() as i64],
        )?;
        Ok(invite)
    }

    pub(super) fn name_taken(&self, name: &str) -> Result<bool> {
        let n: i64 = self.db.conn().query_row(
            "SELECT (SELECT COUNT(*) FROM contacts WHERE alias = ?1) + (SELECT COUNT(*) FROM conversations WHERE name = ?1)",
            params![name],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }

    pub(super) fn unique_name(&self, wanted: &str) -> Result<String> {
        // Names come from other people: nothing invisible, no bidi controls (review 3, L11).
        let base = crate::text::clean_name(wanted);
        let base = if base.is_empty() {
            "someone".to_string()
        } else {
            base
        };
        if !self.name_taken(&base)? {
            return Ok(base);
        }
        for i in 2.. {
            let candidate = format!("{base}-{i}");
            if !self.name_taken(&candidate)? {
                return Ok(candidate);
            }
        }
        unreachable!("an unbounded counter always finds a free name")
    }

    pub(super) fn check_new_name(&self, name: &str, what: &str) -> Result<()> {
        if name.trim().is_empty()
            || name.chars().count() > 64
            || name.chars().any(crate::text::is_hidden)
        {
            return Err(Error::Usage(format!(
                "{what} must be 1 to 64 printable characters (no invisible or direction-changing ones)"
            )));
        }
        if self.name_taken(name)? {
            return Err(Error::Usage(format!(
                "the name {name:?} is already used by a contact or conversation"
            )));
        }
        Ok(())
    }

    /// The contact a person calls `alias`: what a front resolves at its edge.
    pub fn find_contact(&self, alias: &str) -> Result<ContactId> {
        let fp: Option<Vec<u8>> = self
            .db
            .conn()
            .query_row(
                "SELECT fingerprint FROM contacts WHERE alias = ?1",
                params![alias],
                |r| r.get(0),
            )
            .optional()?;
        let fp = fp.ok_or_else(|| Error::NotFound(format!("no contact called {alias:?}")))?;
        ContactId::from_slice(&fp)
    }

    /// A contact's alias (what this person calls them).
    pub(super) fn alias_of(&self, contact: &ContactId) -> Result<String> {
        self.contact_alias(contact.as_bytes())?
            .ok_or_else(|| Error::NotFound(format!("no contact {}", contact.short())))
    }

    /// Accept an invite: claim and verify the inviter's KeyPackage, create the 1:1
    /// conversation on the inviter's relay, and introduce ourselves.
    pub async fn accept(&mut self, link: &str, alias: &str) -> Result<Connected> {
        let invite = Invite::parse(link)?;
        invite.check_not_expired(now_secs())?;
        if invite.fingerprint() == self.fingerprint {
            return Err(Error::Usage("this is your own invite link".into()));
        }
        let alias = alias.trim();
        self.check_new_name(alias, "the contact alias")?;
        let existing = self.contact_alias(&invite.fp.0)?;
        if let Some(a) = existing {
            return Err(Error::Usage(format!(
                "you are already connected to this person as {a:?}"
            )));
        }
        // The inviter's relays in their order: the first that answers hosts the chat.
        let mut claimed = None;
        let mut last_err = None;
        for m in invite.mailboxes() {
            let relay = self.relay_for(&m.relay)?;
            match relay.claim_key_package(&m.mailbox).await {
                Ok(c) => {
                    claimed = Some((c, m));
                    break;
                }
                Err(e @ Error::RelayUnreachable(_)) => last_err = Some(e),
                Err(Error::Relay {
                    code: ErrorCode::NotFound | ErrorCode::NoKeyPackage,
                    ..
                }) => {
                    last_err = Some(Error::InvalidInvite(
                        "the inviter's mailbox is gone or has no KeyPackage; ask for a new invite"
                            .into(),
                    ))
                }
                Err(e) => return Err(e),
            }
        }
        let Some((claimed, home)) = claimed else {
            return Err(
                last_err.unwrap_or_else(|| Error::InvalidInvite("the link names no relay".into()))
            );
        };
        let fp = mls::key_package_fingerprint(&claimed.key_package.0)?;
        if fp != invite.fingerprint() {
            return Err(Error::KeyPackageMismatch);
        }
        let invite = Invite {
            relay: home.relay,
            mailbox: home.mailbox,
            ..invite
        };

        // Where they can be reached: the relay that answered first, then the others in order.
        let mut all_addresses = vec![crate::payload::MailboxAddr {
            relay: invite.relay.clone(),
            mailbox: invite.mailbox,
        }];
        all_addresses.extend(
            invite
                .mailboxes()
                .into_iter()
                .filter(|m| m.mailbox != invite.mailbox),
        );
        let group_id = random_id();
        let mut group = self.mls.create_group(group_id.as_bytes())?;
        let token0 = group.token()?;
        // The new log is the conversation's: created under its identity when isolating.
        self.conv_client_for(&invite.relay, &group_id)?
            .create_group(random_id(), group_id, group.epoch(), sha256(&token0))
            .await?;
        // The conversation, the contact and the add still to commit, in one step: from here
        // on the accept completes (now, or resumed by sync) or is undone and reported.
        let pending: i64 = self.db.transaction(|tx| {
            group.save()?;
            tx.conn().execute(
                "INSERT INTO conversations (group_id, kind, name, relay, read_epoch, cursor, created_at) VALUES (?1, 'direct', ?2, ?3, ?4, 0, ?5)",
                params![group_id.as_bytes(), alias, invite.relay, group.epoch() as i64, now_secs() as i64],
            )?;
            self.store_token(&group_id, group.epoch(), &token0)?;
            tx.conn().execute(
                "INSERT INTO contacts (alias, fingerprint, display_name, relay, mailbox_id, group_id, created_at) VALUES (?1, ?2, ?1, ?3, ?4, ?5, ?6)",
                params![alias, &fp[..], invite.relay, invite.mailbox.as_bytes(), group_id.as_bytes(), now_secs() as i64],
            )?;
            self.state_changed()?;
            self.store_peer_addresses(&fp, &all_addresses)?;
            tx.conn().execute(
                "INSERT INTO pending_adds (group_id, member, alias, relay, mailbox, next_at, created_at, invite, key_package)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7, ?8)",
                params![group_id.as_bytes(), &fp[..], alias, invite.relay, invite.mailbox.as_bytes(), now_millis() as i64, invite.id.as_bytes(), claimed.key_package.0],
            )?;
            Ok(tx.conn().last_insert_rowid())
        })?;
        drop(group);
        crash_point("accept-before-commit");
        let since = self.last_event()?;
        self.resume_add(pending).await?;
        if self.conv_by_id(&group_id)?.is_none() {
            // Refused for good and undone; the reason is in the event log.
            let why = self
                .events_since(since)?
                .iter()
                .rev()
                .find_map(|e| match e {
                    Event::Notice {
                        notice: Notice::ConnectFailed { error, .. },
                        ..
                    } => Some(error.detail.clone()),
                    _ => None,
                })
                .unwrap_or_else(|| "the inviter's relay refused".into());
            return Err(Error::InvalidInvite(why));
        }
        Ok(Connected {
            contact: ContactId::from_bytes(fp),
            conversation: ConversationId::from_id(group_id),
        })
    }

    pub fn contacts(&self) -> Result<Vec<ContactView>> {
        let conn = self.db.conn();
        let mut stmt = conn.prepare(
            "SELECT alias, display_name, fingerprint, verified, blocked FROM contacts ORDER BY alias",
        )?;
        let rows = stmt
            .query_map([], |r| {
                let fp: Vec<u8> = r.get(2)?;
                let alias: String = r.get(0)?;
                Ok((
                    fp.clone(),
                    ContactView {
                        id: r.get(2)?,
                        shown_as: alias.clone(),
                        alias,
                        display_name: r.get(1)?,
                        fingerprint: hex::encode(&fp[..8.min(fp.len())]),
                        verified: r.get(3)?,
                        hue: crate::text::hue(&fp),
                        blocked: r.get(4)?,
                    },
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        drop(stmt);
        drop(conn);
        let alike = self.look_alike_contacts()?;
        Ok(rows
            .into_iter()
            .map(|(fp, mut c)| {
                if alike.contains(&fp) {
                    c.shown_as = format!("{} (~{})", c.alias, hex::encode(&fp[..3.min(fp.len())]));
                }
                c
            })
            .collect())
    }

    /// Record that the safety number with a contact was compared (or take that back).
    pub fn contact_verify(&mut self, contact: &ContactId, verified: bool) -> Result<()> {
        let changed = self.db.conn().execute(
            "UPDATE contacts SET verified = ?2 WHERE fingerprint = ?1",
            params![contact, verified],
        )?;
        if changed == 0 {
            return Err(Error::NotFound(format!("no contact {}", contact.short())));
        }
        self.state_changed()
    }

    /// Call a contact something else (issue 30): the alias, and the name of their 1:1
    /// conversation with it, on this device and (through the state) the person's others.
    /// Nothing is sent to the contact.
    pub fn contact_rename(&mut self, contact: &ContactId, alias: &str) -> Result<()> {
        let alias = alias.trim();
        if self.alias_of(contact)? == alias {
            return Ok(());
        }
        self.check_new_name(alias, "the contact alias")?;
        self.db.transaction(|tx| {
            let conn = tx.conn();
            conn.execute(
                "UPDATE conversations SET name = ?2
                 WHERE kind = 'direct' AND group_id = (SELECT group_id FROM contacts WHERE fingerprint = ?1)",
                params![contact, alias],
            )?;
            conn.execute(
                "UPDATE contacts SET alias = ?2 WHERE fingerprint = ?1",
                params![contact, alias],
            )?;
            Ok(())
        })?;
        self.state_changed()
    }

    /// A safety number both sides compute identically: 12 groups of 5 digits.
    pub fn safety_number(&self, contact: &ContactId) -> Result<String> {
        // Only with a contact: a number with a stranger would vouch for nothing.
        self.alias_of(contact)?;
        let fp = contact.as_bytes().to_vec();
        let (a, b) = if fp.as_slice() < &self.fingerprint[..] {
            (fp.as_slice(), &self.fingerprint[..])
        } else {
            (&self.fingerprint[..], fp.as_slice())
        };
        let mut input = b"samizdat safety number v1".to_vec();
        input.extend_from_slice(a);
        input.extend_from_slice(b);
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA512, &input);
        let groups: Vec<String> = digest
            .as_ref()
            .chunks(5)
            .take(12)
            .map(|c| {
                let n = c.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
                format!("{:05}", n % 100_000)
            })
            .collect();
        Ok(groups.join(" "))
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn apply_intro(
        &self,
        conv: &mut Conv,
        sender: &[u8; 32],
        name: String,
        relay: String,
        mailbox: Id,
        invite: Id,
        mailboxes: Vec<crate::payload::MailboxAddr>,
    ) -> Result<()> {
        let gid = conv.group_id;
        let row: Option<(i64, i64, i64)> = self
            .db
            .conn()
            .query_row(
                "SELECT expires_at, reusable, uses FROM invites WHERE invite_id = ?1",
                params![invite.as_bytes()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let refusal = match row {
            None => Some(Refusal::UnknownInvite),
            Some((exp, _, _)) if (exp as u64) < now_secs() => Some(Refusal::ExpiredInvite),
            Some((_, 0, uses)) if uses > 0 => Some(Refusal::ReusedInvite),
            Some(_) => None,
        };
        let by_hand: bool = self.db.conn().query_row(
            "SELECT joined_by_hand FROM conversations WHERE group_id = ?1",
            params![gid.as_bytes()],
            |r| r.get(0),
        )?;
        // Joined by hand from the pending invitations: the person let them in themselves, so
        // the link's state no longer decides; the chat says what the link alone would not
        // have allowed (a used-up single-use link has been seen by someone).
        let let_in_by_hand = refusal.clone().filter(|_| by_hand);
        let refusal = refusal.filter(|_| !by_hand);
        if let Some(reason) = refusal {
            // The next sync tells the invitee, leaves the group and forgets it here
            // (`finish_refusals`); recorded now, in this entry's transaction.
            self.set_status(
                &gid,
                &ConvStatus::Refusing {
                    reason: reason.clone(),
                },
            )?;
            self.emit(Event::notice(
                Some(conv),
                Notice::IntroductionRefused { reason },
            ))?;
            return Ok(());
        }
        if let_in_by_hand.is_none() {
            self.db.conn().execute(
                "UPDATE invites SET uses = uses + 1 WHERE invite_id = ?1",
                params![invite.as_bytes()],
            )?;
        }
        let mut addresses = vec![crate::payload::MailboxAddr {
            relay: relay.clone(),
            mailbox,
        }];
        addresses.extend(mailboxes.into_iter().filter(|m| m.mailbox != mailbox));
        self.store_peer_addresses(sender, &addresses)?;
        let display = crate::text::clean_name(&name);
        let existing = self.contact_alias(&sender[..])?;
        let alias = match existing {
            Some(a) => a,
            None => {
                let alias = self.unique_name(&display)?;
                self.db.conn().execute(
                    "INSERT INTO contacts (alias, fingerprint, display_name, relay, mailbox_id, group_id, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![alias, &sender[..], display, relay, mailbox.as_bytes(), gid.as_bytes(), now_secs() as i64],
                )?;
                self.state_changed()?;
                let e = Event::NewContact {
                    fingerprint: ContactId::from_bytes(*sender),
                    alias: alias.clone(),
                    display_name: display.clone(),
                };
                self.emit(e)?;
                alias
            }
        };
        // The conversation becomes the 1:1 chat with this contact, named by the alias
        // (an older 1:1 conversation with them keeps its own name).
        let other_conv: i64 = self.db.conn().query_row(
            "SELECT COUNT(*) FROM conversations WHERE name = ?1 AND group_id != ?2",
            params![alias, gid.as_bytes()],
            |r| r.get(0),
        )?;
        let new_name = if other_conv == 0 {
            alias
        } else {
            self.unique_name(&alias)?
        };
        self.db.conn().execute(
            "UPDATE conversations SET kind = 'direct', name = ?2 WHERE group_id = ?1",
            params![gid.as_bytes(), new_name],
        )?;
        conv.kind = ConvKind::Direct;
        conv.name = new_name;
        if let Some(reason) = let_in_by_hand {
            self.emit(Event::notice(Some(conv), Notice::LetInByHand { reason }))?;
        }
        Ok(())
    }

    /// Tell invitees whose introduction we refused, leave those conversations, and forget
    /// them once nothing is queued for them any more: the inviter keeps nothing half-made.
    pub(super) async fn finish_refusals(&mut self) -> Result<()> {
        for conv in self.convs_where("active = 1 AND status = 'refusing'")? {
            let Some(ConvStatus::Refusing { reason }) = self.status_of(&conv.group_id)? else {
                continue;
            };
            for body in [
                Body::Refused {
                    reason: reason.wire().to_string(),
                },
                Body::Leave,
            ] {
                let payload = Payload {
                    unknown: None,
                    id: random_id(),
                    expires_in: None,
                    sent_at: now_millis(),
                    body,
                };
                queued(self.send_payload(&conv, payload).await)?;
            }
            self.set_status(&conv.group_id, &ConvStatus::Refused { reason })?;
        }
        for conv in self.convs_where(
            "active = 0 AND status = 'refused' AND group_id NOT IN (SELECT group_id FROM outbox)",
        )? {
            self.db
                .transaction(|tx| self.forget_conversation(tx, &conv.group_id))?;
        }
        Ok(())
    }

    /// The inviter refused our introduction: this conversation ends, says why, and no longer
    /// blocks accepting a new link from the same person (inside the entry's transaction).
    pub(super) fn apply_refused(
        &self,
        conv: &mut Conv,
        sender: &[u8; 32],
        reason: &str,
    ) -> Result<()> {
        // Only the contact this conversation was made for can refuse it.
        let contact: Option<String> = self
            .db
            .conn()
            .query_row(
                "SELECT alias FROM contacts WHERE fingerprint = ?1 AND group_id = ?2",
                params![&sender[..], conv.group_id.as_bytes()],
                |r| r.get(0),
            )
            .optional()?;
        let Some(alias) = contact else {
            return Ok(());
        };
        let reason = Refusal::from_wire(reason);
        let name = self.unique_name(&format!("{alias} (refused)"))?;
        self.db.conn().execute(
            "DELETE FROM contacts WHERE fingerprint = ?1",
            params![&sender[..]],
        )?;
        self.db.conn().execute(
            "UPDATE conversations SET name = ?2 WHERE group_id = ?1",
            params![conv.group_id.as_bytes(), name],
        )?;
        self.set_status(
            &conv.group_id,
            &ConvStatus::InviteRefused {
                reason: reason.clone(),
            },
        )?;
        conv.active = false;
        conv.name = name;
        let text = Notice::InviteRefusedBy {
            name: alias,
            reason,
        };
        self.emit(Event::notice(Some(conv), text))
    }
}
