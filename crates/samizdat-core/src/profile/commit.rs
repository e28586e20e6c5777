//! Commits: adds and removals, retried on epoch conflicts, with the membership events.

use super::*;

impl Profile {
    /// Report who joined and who went between two member lists (inside the caller's
    /// transaction). Our own removal is reported as `removed` by the caller.
    pub(super) fn member_changes(
        &self,
        conv: &Conv,
        before: &[mls::Member],
        after: &[mls::Member],
        events: &mut Vec<Event>,
    ) -> Result<()> {
        let had = |list: &[mls::Member], fp: &[u8; 32]| list.iter().any(|m| &m.fingerprint == fp);
        for m in after.iter().filter(|m| !had(before, &m.fingerprint)) {
            let e = Event::MemberAdded {
                conversation_id: conv.group_id.to_string(),
                conversation: conv.name.clone(),
                member: hex::encode(m.fingerprint),
                who: self.label(&conv.group_id, &m.fingerprint)?,
            };
            self.emit(events, e)?;
        }
        for m in before.iter().filter(|m| !had(after, &m.fingerprint)) {
            if m.fingerprint == self.fingerprint {
                continue;
            }
            let e = Event::MemberRemoved {
                conversation_id: conv.group_id.to_string(),
                conversation: conv.name.clone(),
                member: hex::encode(m.fingerprint),
                who: self.label(&conv.group_id, &m.fingerprint)?,
            };
            self.emit(events, e)?;
        }
        Ok(())
    }

    /// Commit adds (KeyPackage, mailbox relay, mailbox) and removals (fingerprints), retrying
    /// on epoch conflicts after catching up.
    pub(super) async fn commit_change(
        &mut self,
        conv: &Conv,
        adds: Vec<(Vec<u8>, String, Id)>,
        removes: Vec<Vec<u8>>,
        invite: Option<Id>,
    ) -> Result<()> {
        let relay = self.relay_for(&conv.relay)?;
        let mut events = Vec::new();
        for _ in 0..MAX_ATTEMPTS {
            let synced = self.sync_group(&conv.group_id, &mut events).await;
            self.buffered.append(&mut events);
            synced?;
            let mut group = self.mls.load(conv.group_id.as_bytes())?;
            let members = group.members();
            let indices: Vec<u32> = removes
                .iter()
                .filter_map(|fp| {
                    members
                        .iter()
                        .find(|m| m.fingerprint.as_slice() == fp.as_slice())
                        .map(|m| m.index)
                })
                .collect();
            if adds.is_empty() && indices.is_empty() {
                return Ok(());
            }
            let kps: Vec<Vec<u8>> = adds.iter().map(|a| a.0.clone()).collect();
            let epoch = group.epoch();
            let token = group.token()?;
            let pending = group.commit(&kps, &indices)?;
            group.apply_pending_commit()?;
            let next_token = group.token()?;
            let mut welcomes = Vec::new();
            let mut elsewhere = Vec::new();
            if let Some(w) = &pending.welcome {
                let env = Envelope::Welcome {
                    group_id: conv.group_id,
                    relay: conv.relay.clone(),
                    welcome: Bytes(w.clone()),
                    invite_mac: invite
                        .map(|i| Bytes(crate::invite_mac(&i, &conv.group_id).to_vec())),
                }
                .encode();
                for (_, mailbox_relay, mailbox) in &adds {
                    if mailbox_relay.trim_end_matches('/') == relay.base() {
                        welcomes.push(WelcomeDrop {
                            mailbox_id: *mailbox,
                            body: Bytes(env.clone()),
                        });
                    } else {
                        elsewhere.push((mailbox_relay.clone(), *mailbox, env.clone()));
                    }
                }
            }
            match relay
                .append(
                    random_id(),
                    &conv.group_id,
                    &token,
                    EntryKind::Commit,
                    epoch,
                    pending.commit,
                    Some(sha256(&next_token)),
                    welcomes,
                )
                .await
            {
                Ok(seq) => {
                    self.db.transaction(|| {
                        group.save()?;
                        self.store_token(&conv.group_id, group.epoch(), &next_token)?;
                        self.db.conn().execute(
                            "INSERT OR IGNORE INTO own_entries (group_id, seq) VALUES (?1, ?2)",
                            params![conv.group_id.as_bytes(), seq as i64],
                        )?;
                        self.member_changes(conv, &members, &group.members(), &mut events)
                    })?;
                    self.buffered.append(&mut events);
                    for (r, mailbox, env) in elsewhere {
                        self.relay_for(&r)?
                            .drop_message(random_id(), &mailbox, env)
                            .await?;
                    }
                    return Ok(());
                }
                Err(Error::Relay {
                    code: ErrorCode::EpochConflict,
                    ..
                }) => {
                    // Someone else committed first: drop our in-memory change, catch up, retry.
                    drop(group);
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::Busy(
            "other members kept committing; try again".into(),
        ))
    }
}
