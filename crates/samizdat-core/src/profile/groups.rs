//! Groups: create, add, remove, leave.

use super::*;

/// Give up on an add whose member's relay stayed unreachable this long.
const ADD_MAX_AGE_MS: u64 = 7 * 24 * 3600 * 1000;

/// A row of `pending_adds`.
struct PendingAdd {
    group: Vec<u8>,
    member: Vec<u8>,
    alias: String,
    relay: String,
    mailbox: Vec<u8>,
    attempts: i64,
    created_at: i64,
    invite: Option<Vec<u8>>,
    key_package: Option<Vec<u8>>,
}

/// What `group_add` did: committed now, or waiting for the member's relay.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct GroupAdded {
    pub added: Vec<ContactId>,
    /// Contacts whose relay could not be reached: added by the next syncs once it is.
    pub waiting: Vec<ContactId>,
}

impl Profile {
    pub async fn group_create(&mut self, name: &str) -> Result<ConversationId> {
        let name = name.trim();
        self.check_new_name(name, "the group name")?;
        // The `GROUP_ID` fault point takes a chosen id, as a hostile client trying to replace
        // someone's conversation would (security review 3, M6 test).
        let group_id = crate::fault::point("GROUP_ID")
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(random_id);
        let mut group = self.mls.create_group(group_id.as_bytes())?;
        let token = group.token()?;
        // Our relays in order: the first that answers hosts the group's log.
        let mut hosted = None;
        let mut last = None;
        for relay in self.relays() {
            match self
                .conv_client_for(&relay, &group_id)?
                .create_group(random_id(), group_id, group.epoch(), sha256(&token))
                .await
            {
                Ok(()) => {
                    hosted = Some(relay);
                    break;
                }
                Err(e @ Error::RelayUnreachable(_)) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        let Some(relay) = hosted else {
            return Err(last.unwrap_or_else(|| {
                Error::RelayUnreachable("none of your relays can be reached".into())
            }));
        };
        self.db.transaction(|tx| {
            group.save()?;
            tx.conn().execute(
                "INSERT INTO conversations (group_id, kind, name, relay, read_epoch, cursor, created_at) VALUES (?1, 'group', ?2, ?3, ?4, 0, ?5)",
                params![group_id.as_bytes(), name, relay, group.epoch() as i64, now_secs() as i64],
            )?;
            self.store_token(&group_id, group.epoch(), &token)
        })?;
        Ok(ConversationId::from_id(group_id))
    }

    pub(super) fn group_conv(&self, id: &ConversationId) -> Result<Conv> {
        let conv = self.conv(id)?;
        let name = &conv.name;
        if conv.kind != ConvKind::Group {
            return Err(Error::Usage(format!(
                "{name:?} is a 1:1 conversation, not a group"
            )));
        }
        if !conv.active {
            return Err(Error::NotMember(format!(
                "you are no longer a member of {name:?}"
            )));
        }
        Ok(conv)
    }

    /// A contact's alias and where to reach them (their newest announced address first).
    pub(super) fn contact_route(
        &self,
        contact: &ContactId,
    ) -> Result<(String, Option<String>, Option<Id>)> {
        let row: Option<(String, Option<String>, Option<Vec<u8>>)> = self
            .db
            .conn()
            .query_row(
                "SELECT alias, relay, mailbox_id FROM contacts WHERE fingerprint = ?1",
                params![contact],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let (alias, relay, mailbox) =
            row.ok_or_else(|| Error::NotFound(format!("no contact {}", contact.short())))?;
        let fp = contact.as_bytes();
        let mailbox = mailbox
            .map(|m| Id::from_slice(&m))
            .transpose()
            .map_err(|_| Error::Storage("corrupt mailbox id".into()))?;
        // What they announced most recently comes first (their relays change).
        if let Some(first) = self.peer_addresses(fp)?.into_iter().next() {
            return Ok((alias, Some(first.relay), Some(first.mailbox)));
        }
        Ok((alias, relay, mailbox))
    }

    /// Add contacts to a group: claim and verify each one's KeyPackage, commit, Welcome them.
    /// A contact whose relay cannot be reached now is added later: the add is stored and
    /// resumed by the next syncs (their alias is returned in `waiting`).
    pub async fn group_add(
        &mut self,
        id: &ConversationId,
        contacts: &[ContactId],
    ) -> Result<GroupAdded> {
        let conv = self.group_conv(id)?;
        let mut adds = Vec::new();
        let mut result = GroupAdded::default();
        let mut waiting = Vec::new();
        for contact in contacts {
            let (alias, relay, mailbox) = self.contact_route(contact)?;
            let fp = contact.as_bytes().to_vec();
            let (Some(relay_url), Some(mailbox)) = (relay, mailbox) else {
                return Err(Error::Usage(format!(
                    "{alias:?} has not shared a mailbox yet; sync and try again"
                )));
            };
            match self.claim_any(&relay_url, &mailbox, &fp).await {
                Ok((kp, relay_url, mailbox)) => {
                    adds.push((kp, relay_url, mailbox));
                    result.added.push(*contact);
                }
                Err(Error::RelayUnreachable(_)) => {
                    waiting.push((fp, alias, relay_url, mailbox));
                    result.waiting.push(*contact);
                }
                Err(e) => return Err(e),
            }
        }
        if !waiting.is_empty() {
            self.db.transaction(|tx| {
                for (fp, alias, relay, mailbox) in &waiting {
                    tx.conn().execute(
                        "INSERT OR IGNORE INTO pending_adds (group_id, member, alias, relay, mailbox, next_at, created_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
                        params![conv.group_id.as_bytes(), fp, alias, relay, mailbox.as_bytes(), now_millis() as i64],
                    )?;
                }
                Ok(())
            })?;
        }
        if !adds.is_empty() {
            self.commit_change(&conv, adds, Vec::new(), None).await?;
        }
        Ok(result)
    }

    /// Claim a contact's KeyPackage and check it is theirs.
    async fn claim_verified(&self, relay: &str, mailbox: &Id, fp: &[u8]) -> Result<Vec<u8>> {
        let claimed = self.relay_for(relay)?.claim_key_package(mailbox).await?;
        if mls::key_package_fingerprint(&claimed.key_package.0)?.as_slice() != fp {
            return Err(Error::KeyPackageMismatch);
        }
        Ok(claimed.key_package.0)
    }

    /// Resume adds that are not committed yet, when due.
    pub(super) async fn resume_adds(&mut self) -> Result<()> {
        let due: Vec<i64> = {
            let conn = self.db.conn();
            let mut stmt =
                conn.prepare("SELECT id FROM pending_adds WHERE next_at <= ?1 ORDER BY id")?;
            stmt.query_map(params![now_millis() as i64], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?
        };
        for id in due {
            self.resume_add(id).await?;
        }
        Ok(())
    }

    /// Claim a member's KeyPackage from the address we have for them, or, when its relay
    /// cannot be reached, from their other mailboxes in their order.
    async fn claim_any(
        &self,
        relay: &str,
        mailbox: &Id,
        member: &[u8],
    ) -> Result<(Vec<u8>, String, Id)> {
        let first = match self.claim_verified(relay, mailbox, member).await {
            Ok(kp) => return Ok((kp, relay.to_string(), *mailbox)),
            Err(e @ Error::RelayUnreachable(_)) => e,
            Err(e) => return Err(e),
        };
        for alt in self.peer_addresses(member)? {
            if alt.mailbox == *mailbox {
                continue;
            }
            match self.claim_verified(&alt.relay, &alt.mailbox, member).await {
                Ok(kp) => return Ok((kp, alt.relay, alt.mailbox)),
                Err(Error::RelayUnreachable(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Err(first)
    }

    /// Try one pending add now. An unreachable relay (or a busy group) postpones it with
    /// backoff; a refusal ends it and tells the user. Errors are only local failures.
    pub(super) async fn resume_add(&mut self, id: i64) -> Result<()> {
        let row = self.pending_add(id)?;
        let Some(row) = row else { return Ok(()) };
        let (Ok(gid), Ok(mailbox)) = (Id::from_slice(&row.group), Id::from_slice(&row.mailbox))
        else {
            return Err(Error::Storage("corrupt pending add".into()));
        };
        let invite = row
            .invite
            .as_deref()
            .map(Id::from_slice)
            .transpose()
            .map_err(|_| Error::Storage("corrupt pending add".into()))?;
        let done = |p: &Self| -> Result<()> {
            p.db.conn()
                .execute("DELETE FROM pending_adds WHERE id = ?1", params![id])?;
            Ok(())
        };
        let Some(conv) = self.conv_by_id(&gid)?.filter(|c| c.active) else {
            return done(self);
        };
        let already = self
            .mls
            .load(gid.as_bytes())?
            .members()
            .iter()
            .any(|m| m.fingerprint.as_slice() == row.member.as_slice());
        let outcome = if already {
            Ok(())
        } else {
            let kp = match row.key_package.clone() {
                Some(kp) => Ok((kp, row.relay.clone(), mailbox)),
                None => self.claim_any(&row.relay, &mailbox, &row.member).await,
            };
            match kp {
                Ok((kp, relay, mailbox)) => {
                    let add = vec![(kp, relay, mailbox)];
                    self.commit_change(&conv, add, Vec::new(), invite).await
                }
                Err(e) => Err(e),
            }
        };
        let too_old = now_millis().saturating_sub(row.created_at as u64) > ADD_MAX_AGE_MS;
        match outcome {
            Ok(()) => {
                done(self)?;
                if let Some(invite) = invite {
                    self.introduce(&conv, invite).await?;
                }
            }
            Err(e @ (Error::RelayUnreachable(_) | Error::Busy(_))) if !too_old => {
                let next = now_millis()
                    + super::delivery::retry_delay(row.attempts as u32).as_millis() as u64;
                self.db.transaction(|tx| {
                    tx.conn().execute(
                        "UPDATE pending_adds SET attempts = attempts + 1, next_at = ?2, last_error = ?3, key_package = NULL WHERE id = ?1",
                        params![id, next as i64, e.to_string()],
                    )?;
                    if row.attempts == 0 {
                        let text = Notice::AddPending {
                            name: row.alias.clone(),
                            error: Problem::from(&e),
                        };
                        self.emit(Event::notice(Some(&conv), text))?;
                    }
                    Ok(())
                })?;
            }
            Err(e) => {
                let alias = row.alias;
                self.db.transaction(|tx| {
                    done(self)?;
                    let text = if invite.is_some() {
                        // Nothing half-made: the conversation and the contact go.
                        self.forget_conversation(tx, &gid)?;
                        Notice::ConnectFailed {
                            name: alias,
                            error: Problem::from(&e),
                        }
                    } else {
                        Notice::AddFailed {
                            name: alias,
                            error: Problem::from(&e),
                        }
                    };
                    let conv = (invite.is_none()).then_some(&conv);
                    self.emit(Event::notice(conv, text))
                })?;
            }
        }
        Ok(())
    }

    /// The pending add `id`, if it is still there.
    fn pending_add(&self, id: i64) -> Result<Option<PendingAdd>> {
        let row = self
            .db
            .conn()
            .query_row(
                "SELECT group_id, member, alias, relay, mailbox, attempts, created_at, invite, key_package
                 FROM pending_adds WHERE id = ?1",
                params![id],
                |r| {
                    Ok(PendingAdd {
                        group: r.get(0)?,
                        member: r.get(1)?,
                        alias: r.get(2)?,
                        relay: r.get(3)?,
                        mailbox: r.get(4)?,
                        attempts: r.get(5)?,
                        created_at: r.get(6)?,
                        invite: r.get(7)?,
                        key_package: r.get(8)?,
                    })
                },
            )
            .optional()?;
        Ok(row)
    }

    /// The inviter added us: introduce ourselves in `conv` (queued if the relay is away).
    async fn introduce(&mut self, conv: &Conv, invite: Id) -> Result<()> {
        let intro = Body::Intro {
            name: self.name.clone(),
            relay: self.relay.base().to_string(),
            mailbox: self.mailbox,
            invite,
            mailboxes: self.announced_addresses(),
        };
        let payload = Payload {
            unknown: None,
            id: random_id(),
            expires_in: None,
            sent_at: now_millis(),
            body: intro,
        };
        queued(self.send_payload(conv, payload).await)
    }

    /// Send a member who never joined (their Welcome was lost, expired or could not be
    /// processed) a fresh one, without a new invite: one commit removes their unused leaf and
    /// adds a fresh KeyPackage of theirs.
    pub async fn group_readd(&mut self, id: &ConversationId, contact: &ContactId) -> Result<()> {
        let conv = self.group_conv(id)?;
        let name = &conv.name;
        let (alias, relay, mailbox) = self.contact_route(contact)?;
        let fp = contact.as_bytes().to_vec();
        let is_member = self
            .mls
            .load(conv.group_id.as_bytes())?
            .members()
            .iter()
            .any(|m| m.fingerprint.as_slice() == fp.as_slice());
        if !is_member {
            return Err(Error::NotFound(format!(
                "{alias:?} is not a member of {name:?}; add them with group add"
            )));
        }
        let (Some(relay_url), Some(mailbox)) = (relay, mailbox) else {
            return Err(Error::Usage(format!(
                "{alias:?} has not shared a mailbox yet; sync and try again"
            )));
        };
        let (kp, relay_url, mailbox) = self.claim_any(&relay_url, &mailbox, &fp).await?;
        self.commit_change(&conv, vec![(kp, relay_url, mailbox)], vec![fp], None)
            .await
    }

    pub async fn group_remove(&mut self, id: &ConversationId, contact: &ContactId) -> Result<()> {
        let conv = self.group_conv(id)?;
        let name = &conv.name;
        let (alias, _, _) = self.contact_route(contact)?;
        let fp = contact.as_bytes().to_vec();
        let group = self.mls.load(conv.group_id.as_bytes())?;
        if !group
            .members()
            .iter()
            .any(|m| m.fingerprint.as_slice() == fp.as_slice())
        {
            return Err(Error::NotFound(format!(
                "{alias:?} is not a member of {name:?}"
            )));
        }
        drop(group);
        self.commit_change(&conv, Vec::new(), vec![fp], None).await
    }

    /// Rename a group for every member: the new name is set here and sent in the group (it
    /// is queued when the relay cannot be reached). Returns the name as stored.
    pub async fn group_rename(&mut self, id: &ConversationId, new_name: &str) -> Result<String> {
        let conv = self.group_conv(id)?;
        let new_name = new_name.trim();
        if new_name == conv.name {
            return Ok(conv.name);
        }
        self.check_new_name(new_name, "a group name")?;
        self.db.transaction(|tx| {
            tx.conn().execute(
                "UPDATE conversations SET name = ?2 WHERE group_id = ?1",
                params![conv.group_id.as_bytes(), new_name],
            )?;
            self.state_changed()?;
            let e = Event::GroupNamed {
                conversation_id: ConversationId::from_id(conv.group_id),
                conversation: new_name.to_string(),
            };
            self.emit(e)
        })?;
        let renamed = Conv {
            name: new_name.to_string(),
            ..conv
        };
        queued(
            self.send_body(
                &renamed,
                Body::GroupMeta {
                    name: new_name.to_string(),
                },
            )
            .await,
        )?;
        Ok(new_name.to_string())
    }

    /// Leave a group: announce it; the next member to sync commits our removal.
    pub async fn group_leave(&mut self, id: &ConversationId) -> Result<()> {
        let conv = self.group_conv(id)?;
        queued(self.send_body(&conv, Body::Leave).await)?;
        self.db.conn().execute(
            "UPDATE conversations SET active = 0, status = 'left', status_reason = NULL WHERE group_id = ?1",
            params![conv.group_id.as_bytes()],
        )?;
        self.forget_keys_if_left(&conv.group_id)?;
        Ok(())
    }

    /// Once our leave notice is delivered (nothing queued for a conversation we left), its
    /// keys go.
    pub(super) fn forget_keys_if_left(&self, gid: &Id) -> Result<()> {
        let queued: i64 = self.db.conn().query_row(
            "SELECT COUNT(*) FROM outbox WHERE group_id = ?1",
            params![gid.as_bytes()],
            |r| r.get(0),
        )?;
        let left: bool = self.db.conn().query_row(
            "SELECT COALESCE(status = 'left', 0) FROM conversations WHERE group_id = ?1",
            params![gid.as_bytes()],
            |r| r.get(0),
        )?;
        if queued == 0 && left {
            self.db.transaction(|tx| self.drop_group_secrets(tx, gid))?;
        }
        Ok(())
    }
}
