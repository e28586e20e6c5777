//! Welcomes: who may add us at once, and the message requests that wait for consent.

use super::*;

/// The largest sealed ratchet tree a client reads into memory (a 10,000-member group's is
/// ~15 MB).
const MAX_SEALED_TREE: u64 = 100 * 1024 * 1024;

/// A Welcome as it arrived in a mailbox: the whole MLS Welcome with the tree inside (older
/// clients), or a [`WelcomePart`] naming the sealed tree on the group's relay.
pub(super) struct Arrived {
    pub group_id: Id,
    pub relay: String,
    pub log: Option<Id>,
    pub invite_mac: Option<Vec<u8>>,
    /// What a pending invitation keeps: the MLS Welcome, or the encoded part.
    pub stored: Vec<u8>,
}

impl Arrived {
    pub(super) fn part(p: WelcomePart) -> Result<Arrived> {
        let id = |b: &[u8]| {
            Id::from_slice(b).map_err(|_| Error::Protocol("malformed Welcome part ids".into()))
        };
        Ok(Arrived {
            group_id: id(&p.group_id)?,
            relay: String::from_utf8(p.relay.clone())
                .map_err(|_| Error::Protocol("a Welcome part's relay is not text".into()))?,
            log: (!p.log.is_empty()).then(|| id(&p.log)).transpose()?,
            invite_mac: (!p.invite_mac.is_empty()).then(|| p.invite_mac.clone()),
            stored: p.encode()?,
        })
    }
}

/// What to do with a Welcome that arrived in the mailbox.
pub(super) enum Screened {
    /// From a contact, or answering our own invite: join now.
    Join,
    /// From a stranger: stored as a pending invitation (reported once).
    Pending(Option<Box<Event>>),
}

/// The warning shown with a pending invitation, if it needs one.
pub(super) fn invitation_warning(
    claims: Option<&str>,
    relay_known: bool,
    relay: &str,
) -> Option<Notice> {
    match (claims, relay_known) {
        (Some(name), _) => Some(Notice::ClaimsConversation {
            name: name.to_string(),
        }),
        (None, false) => Some(Notice::UnknownRelay {
            relay: relay.to_string(),
        }),
        (None, true) => None,
    }
}

impl Profile {
    /// Decide whether a Welcome joins at once (from a contact, or the person we invited) or
    /// waits for consent. Nothing is sent, stored in MLS, or fetched from the Welcome's relay.
    pub(super) fn screen_welcome(&mut self, w: &Arrived) -> Result<Screened> {
        let (group_id, relay, log, welcome) = (w.group_id, w.relay.as_str(), w.log, &w.stored);
        let invite_mac = w.invite_mac.as_ref();
        crate::check_foreign_relay_url(relay)?;
        let (gid, epoch, committer, committer_device, members) = match WelcomePart::decode(welcome)
        {
            Some(part) => {
                let seen = self.mls.examine(&part?.welcome)?;
                (
                    seen.group_id,
                    seen.epoch,
                    seen.committer,
                    seen.committer_device,
                    seen.members as usize,
                )
            }
            None => {
                let (group, committer, device) = self.mls.join_seen(welcome, None)?;
                (
                    group.id().to_vec(),
                    group.epoch(),
                    committer,
                    device,
                    group.members().len(),
                )
            }
        };
        if gid != group_id.as_bytes() {
            return Err(Error::Protocol(
                "the Welcome is for a different group than its envelope says".into(),
            ));
        }
        // A device its person revoked (a seized phone, say) no longer speaks for them: what
        // it commits is refused, ours included (security review 3, H2).
        let status = self.device_status(&committer, &committer_device)?;
        if status == super::device_lists::DeviceStatus::Revoked {
            return Err(Error::Protocol(format!(
                "refused a group from a device that {} removed; it no longer speaks for them",
                if committer == self.fingerprint {
                    "you".to_string()
                } else {
                    self.contact_label(&committer)?
                }
            )));
        }
        // Another device of ours (linking, or adding us where it joined): at once.
        if committer == self.fingerprint {
            return Ok(Screened::Join);
        }
        // Someone we blocked cannot bring us into a group, not even as a pending invitation:
        // the Welcome is dropped without a word.
        if self.is_blocked(&committer)? {
            return Ok(Screened::Pending(None));
        }
        // A linked device no list of the person names yet waits for consent, as a stranger's.
        let from_contact: bool = status == super::device_lists::DeviceStatus::Speaks
            && self.db.conn().query_row(
                "SELECT EXISTS (SELECT 1 FROM contacts WHERE fingerprint = ?1)",
                params![&committer[..]],
                |r| r.get(0),
            )?;
        let invited = match invite_mac {
            Some(mac) => {
                let conn = self.db.conn();
                let mut stmt = conn.prepare(
                    "SELECT invite_id FROM invites WHERE expires_at > ?1 AND (reusable = 1 OR uses = 0)",
                )?;
                let ids = stmt
                    .query_map(params![now_secs() as i64], |r| r.get::<_, Vec<u8>>(0))?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                ids.iter().filter_map(|b| Id::from_slice(b).ok()).any(|id| {
                    aws_lc_rs::constant_time::verify_slices_are_equal(
                        &crate::invite_mac(&id, &group_id),
                        mac,
                    )
                    .is_ok()
                })
            }
            None => false,
        };
        let previous = self.conv_by_id(&group_id)?;
        let claims_existing = match &previous {
            // A re-add continues a conversation: a later epoch, committed by a contact who was
            // in it as we last knew it. No one who was not a member can take one over
            // (security review 3, M6): that is a pending invitation, with a warning.
            Some(c)
                if from_contact
                    && epoch > c.read_epoch
                    && self.was_member(&c.group_id, &committer)? =>
            {
                None
            }
            Some(c) => Some(c.name.clone()),
            None if from_contact || invited => return Ok(Screened::Join),
            None => None,
        };
        if previous.is_some() && claims_existing.is_none() {
            return Ok(Screened::Join);
        }
        let relay_known = self.relay_known(relay)?;
        let inserted = self.db.conn().execute(
            "INSERT OR IGNORE INTO invitations (group_id, relay, welcome, committer, members, claims_existing, received_at, log_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![group_id.as_bytes(), relay, welcome, &committer[..], members as i64, claims_existing, now_secs() as i64, log.map(|l| l.as_bytes().to_vec())],
        )?;
        if inserted == 0 {
            // Delivered again (the acknowledgement was lost): already reported.
            return Ok(Screened::Pending(None));
        }
        // Shown on the person's other devices too.
        self.state_changed()?;
        let id: i64 = self.db.conn().query_row(
            "SELECT id FROM invitations WHERE group_id = ?1",
            params![group_id.as_bytes()],
            |r| r.get(0),
        )?;
        Ok(Screened::Pending(Some(Box::new(
            Event::InvitationPending {
                id,
                from: hex::encode(&committer[..8]),
                relay: relay.to_string(),
                members,
                warning: invitation_warning(claims_existing.as_deref(), relay_known, relay),
            },
        ))))
    }

    /// Whether `person` was a member of the conversation `group` as we last knew it: in its
    /// roster (the one we hold, or the one kept when we left or were removed), announced
    /// there, wrote there, or it is our 1:1 conversation with them.
    fn was_member(&self, group: &Id, person: &[u8; 32]) -> Result<bool> {
        if let Ok(g) = self.mls.load(group.as_bytes())
            && g.members().iter().any(|m| m.fingerprint == *person)
        {
            return Ok(true);
        }
        Ok(self.db.conn().query_row(
            "SELECT EXISTS (SELECT 1 FROM last_rosters WHERE group_id = ?1 AND person = ?2)
                 OR EXISTS (SELECT 1 FROM member_names WHERE group_id = ?1 AND fingerprint = ?2)
                 OR EXISTS (SELECT 1 FROM messages WHERE group_id = ?1 AND sender_fp = ?2)
                 OR EXISTS (SELECT 1 FROM contacts WHERE group_id = ?1 AND fingerprint = ?2)",
            params![group.as_bytes(), &person[..]],
            |r| r.get(0),
        )?)
    }

    /// The Welcome with the relay and log its committer signed, instead of the envelope's
    /// copies, which a hostile mailbox relay could have rewritten (security review 3, M1); a
    /// difference is reported. A Welcome without them (an older committer) is left as it is.
    pub(super) fn signed_place(&self, mut w: Arrived) -> Result<Arrived> {
        let Some(Ok(mut part)) = WelcomePart::decode(&w.stored) else {
            return Ok(w);
        };
        let Some(place) = self.mls.examine(&part.welcome)?.place else {
            return Ok(w);
        };
        let relay = String::from_utf8(place.relay.clone())
            .map_err(|_| Error::Protocol("a Welcome's signed relay is not text".into()))?;
        crate::check_foreign_relay_url(&relay)?;
        let log =
            if place.log.is_empty() {
                None
            } else {
                Some(Id::from_slice(&place.log).map_err(|_| {
                    Error::Protocol("a Welcome's signed log id is malformed".into())
                })?)
            };
        if relay != w.relay || log != w.log {
            self.emit(Event::notice(None, Notice::InvitationRelayChanged))?;
            part.relay = place.relay;
            part.log = place.log;
            w.relay = relay;
            w.log = log;
            w.stored = part.encode()?;
        }
        Ok(w)
    }

    /// A contact's alias, or a short key for someone else.
    fn contact_label(&self, person: &[u8; 32]) -> Result<String> {
        Ok(self
            .db
            .conn()
            .query_row(
                "SELECT alias FROM contacts WHERE fingerprint = ?1",
                params![&person[..]],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or_else(|| format!("~{}", hex::encode(&person[..3]))))
    }

    /// Before screening a Welcome committed by a linked device of a contact: catch up our
    /// conversation with that contact, where their newest device list travels. Failures are
    /// left for the conversation's own sync.
    pub(super) async fn read_lists_before(&mut self, w: &Arrived) {
        let Some(Ok(part)) = WelcomePart::decode(&w.stored) else {
            return;
        };
        let Ok(seen) = self.mls.examine(&part.welcome) else {
            return;
        };
        if seen.committer == seen.committer_device {
            return;
        }
        let conv: Option<Vec<u8>> = self
            .db
            .conn()
            .query_row(
                "SELECT group_id FROM contacts WHERE fingerprint = ?1 AND group_id IS NOT NULL",
                params![&seen.committer[..]],
                |r| r.get(0),
            )
            .optional()
            .ok()
            .flatten();
        if let Some(gid) = conv.and_then(|g| Id::from_slice(&g).ok())
            && self
                .conv_by_id(&gid)
                .ok()
                .flatten()
                .is_some_and(|c| c.active)
        {
            let _ = Box::pin(self.sync_group(&gid)).await;
        }
    }

    /// Whether this profile already talks to `relay` (its own, a contact's or a group's).
    pub(super) fn relay_known(&self, relay: &str) -> Result<bool> {
        let relay = relay.trim_end_matches('/');
        if relay == self.relay.base() {
            return Ok(true);
        }
        Ok(self.db.conn().query_row(
            "SELECT EXISTS (SELECT 1 FROM conversations WHERE rtrim(relay, '/') = ?1)
                 OR EXISTS (SELECT 1 FROM contacts WHERE rtrim(relay, '/') = ?1)",
            params![relay],
            |r| r.get(0),
        )?)
    }

    /// Join a pending invitation: only now is the group's relay contacted and our name sent.
    pub async fn invitation_accept(&mut self, id: i64) -> Result<ConversationId> {
        type Row = (Vec<u8>, String, Vec<u8>, Option<String>, Option<Vec<u8>>);
        let row: Option<Row> = self
            .db
            .conn()
            .query_row(
                "SELECT group_id, relay, welcome, claims_existing, log_id FROM invitations WHERE id = ?1",
                params![id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()?;
        let (gid, relay, welcome, claims, log) =
            row.ok_or_else(|| Error::NotFound(format!("no pending invitation {id}")))?;
        if self.invitation_elsewhere(id)? {
            return Err(Error::Usage(
                "this invitation waits on your other device; accepting here asks it to join (and add this device)".into(),
            ));
        }
        let log = log.and_then(|l| Id::from_slice(&l).ok());
        let group_id = Id::from_slice(&gid)
            .ok()
            .ok_or_else(|| Error::Protocol("corrupt invitation row".into()))?;
        if let Some(name) = claims
            && self.conv_by_id(&group_id)?.is_some()
        {
            return Err(Error::Usage(format!(
                "this invitation claims the id of your conversation {name:?} without continuing it; it cannot be accepted (decline it)"
            )));
        }
        let arrived = Arrived {
            group_id,
            relay,
            log,
            invite_mac: None,
            stored: welcome,
        };
        self.join_arrived(&arrived).await?;
        // Joined by hand: an introduction through a used-up link is the person's choice now.
        self.db.conn().execute(
            "UPDATE conversations SET joined_by_hand = 1 WHERE group_id = ?1",
            params![group_id.as_bytes()],
        )?;
        self.db
            .conn()
            .execute("DELETE FROM invitations WHERE id = ?1", params![id])?;
        self.state_changed()?;
        self.after_join(vec![group_id]).await?;
        Ok(ConversationId::from_id(group_id))
    }

    /// Decline a pending invitation: it is forgotten and nothing is ever sent.
    pub fn invitation_decline(&mut self, id: i64) -> Result<()> {
        let n = self
            .db
            .conn()
            .execute("DELETE FROM invitations WHERE id = ?1", params![id])?;
        if n == 0 {
            return Err(Error::NotFound(format!("no pending invitation {id}")));
        }
        self.state_changed()
    }

    /// Join the group of a Welcome that arrived (fetching its sealed tree from the group's
    /// relay if it travelled apart); the `joined` event is logged in the same transaction.
    pub(super) async fn join_arrived(&mut self, w: &Arrived) -> Result<String> {
        crate::check_foreign_relay_url(&w.relay)?;
        let (welcome, tree) = match WelcomePart::decode(&w.stored) {
            None => (w.stored.clone(), None),
            Some(part) => {
                let part = part?;
                let blob = Id::from_slice(&part.tree_blob)
                    .map_err(|_| Error::Protocol("malformed Welcome part ids".into()))?;
                let client = if self.net.isolate {
                    self.conv_client_for(&w.relay, &w.group_id)?
                } else {
                    self.relay_for(&w.relay)?
                };
                let sealed = client
                    .get_blob_bytes(&blob, part.tree_len, MAX_SEALED_TREE)
                    .await?;
                (part.welcome, Some(sealed))
            }
        };
        self.join(w.group_id, &w.relay, w.log, &welcome, tree.as_deref())
    }

    /// Join the group of an MLS Welcome (with its sealed tree when it travelled apart).
    fn join(
        &mut self,
        group_id: Id,
        relay: &str,
        log: Option<Id>,
        welcome: &[u8],
        sealed_tree: Option<&[u8]>,
    ) -> Result<String> {
        let log = log.map(|l| l.as_bytes().to_vec());
        crate::check_foreign_relay_url(relay)?;
        RelayClient::new(relay)?;
        let (mut group, _) = self.mls.join(welcome, sealed_tree)?;
        if group.id() != group_id.as_bytes() {
            return Err(Error::Protocol(
                "the Welcome is for a different group than its envelope says".into(),
            ));
        }
        let token = group.token()?;
        let previous = self.conv_by_id(&group_id)?;
        let is_self = self.self_group()? == Some(group_id);
        let name = match &previous {
            Some(c) => c.name.clone(),
            None if is_self => SELF_GROUP_NAME.to_string(),
            None => self.unique_name(&format!("new-{}", group_id.short()))?,
        };
        self.db.transaction(|tx| {
            if previous.is_some() {
                // Re-added after a removal (or a lost sync): fresh MLS state; the old state's
                // epoch secrets must not linger.
                tx.conn().execute("DELETE FROM mls_epochs WHERE group_id = ?1", params![group_id.as_bytes()])?;
            }
            group.save()?;
            if previous.is_some() {
                // Same conversation, reading from the new epoch.
                tx.conn().execute(
                    "UPDATE conversations SET active = 1, status = NULL, status_reason = NULL, relay = ?2, read_epoch = ?3, cursor = 0, log_id = ?4,
                        seq_base = (SELECT COALESCE(MAX(seq), 0) FROM messages WHERE group_id = ?1) WHERE group_id = ?1",
                    params![group_id.as_bytes(), relay, group.epoch() as i64, log],
                )?;
                tx.conn().execute(
                    "DELETE FROM own_entries WHERE group_id = ?1",
                    params![group_id.as_bytes()],
                )?;
            } else {
                tx.conn().execute(
                    "INSERT INTO conversations (group_id, kind, name, relay, read_epoch, cursor, created_at, log_id) VALUES (?1, ?7, ?2, ?3, ?4, 0, ?5, ?6)",
                    params![group_id.as_bytes(), name, relay, group.epoch() as i64, now_secs() as i64, log, if is_self { "self" } else { "group" }],
                )?;
            }
            self.store_token(&group_id, group.epoch(), &token)?;
            if is_self {
                return Ok(());
            }
            let e = Event::Joined {
                conversation_id: ConversationId::from_id(group_id),
                conversation: name.clone(),
            };
            self.emit(e)
        })?;
        Ok(name)
    }
}
