//! Commits: adds and removals, retried on epoch conflicts, with the membership events.

use super::*;

/// SHA-256 of the next epoch's token, as the relay is told. Fault injection for the
/// finding-6 test: the `BAD_NEXT_TOKEN` fault point makes this client lie (a hostile
/// member); unset in normal use.
fn next_token_hash(token: &[u8]) -> [u8; 32] {
    if crate::fault::on("BAD_NEXT_TOKEN") {
        return sha256(b"a token nobody can derive");
    }
    sha256(token)
}

impl Profile {
    /// Drop a stored commit of ours that the relay did not take (the log, read to its end,
    /// does not contain it). No-op when none is stored.
    pub(super) fn clear_stale_commit(&mut self, group: &Id) -> Result<()> {
        let key = Setting::PendingCommit(*group);
        if self.db.get_setting(key)?.is_none() {
            return Ok(());
        }
        let mut g = self.mls.load(group.as_bytes())?;
        self.db.transaction(|_| {
            if g.has_pending_commit() {
                g.clear_pending_commit();
                g.save()?;
            }
            self.db.delete_setting(key)
        })
    }

    /// Report who joined and who went between two member lists (inside the caller's
    /// transaction). Our own removal is reported as `removed` by the caller.
    pub(super) fn member_changes(
        &self,
        conv: &Conv,
        before: &[mls::Member],
        after: &[mls::Member],
    ) -> Result<()> {
        let had = |list: &[mls::Member], fp: &[u8; 32]| list.iter().any(|m| &m.fingerprint == fp);
        for m in after.iter().filter(|m| !had(before, &m.fingerprint)) {
            let e = Event::MemberAdded {
                conversation_id: ConversationId::from_id(conv.group_id),
                conversation: conv.name.clone(),
                member: ContactId::from_bytes(m.fingerprint),
                who: self.label(&conv.group_id, &m.fingerprint)?,
            };
            self.emit(e)?;
        }
        for m in before.iter().filter(|m| !had(after, &m.fingerprint)) {
            if m.fingerprint == self.fingerprint {
                continue;
            }
            let e = Event::MemberRemoved {
                conversation_id: ConversationId::from_id(conv.group_id),
                conversation: conv.name.clone(),
                member: ContactId::from_bytes(m.fingerprint),
                who: self.label(&conv.group_id, &m.fingerprint)?,
            };
            self.emit(e)?;
            self.drop_from_calls(conv, &m.fingerprint)?;
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
        let relay = self.conv_relay(conv)?;
        for _ in 0..MAX_ATTEMPTS {
            let synced = self.sync_group(&conv.group_id).await;
            synced?;
            // The catch-up may have named the conversation (a Welcome's first message).
            let conv = &self
                .conv_by_id(&conv.group_id)?
                .unwrap_or_else(|| conv.clone());
            let mut group = self.mls.load(conv.group_id.as_bytes())?;
            let members = group.members();
            // A person is every device of theirs; a device (revocation) is one leaf. Never
            // our own leaf.
            let own = group.own_index();
            let indices: Vec<u32> = members
                .iter()
                .filter(|m| m.index != own)
                .filter(|m| {
                    removes.iter().any(|fp| {
                        m.fingerprint.as_slice() == fp.as_slice()
                            || m.device.as_slice() == fp.as_slice()
                    })
                })
                .map(|m| m.index)
                .collect();
            if adds.is_empty() && indices.is_empty() {
                return Ok(());
            }
            let kps: Vec<Vec<u8>> = adds.iter().map(|a| a.0.clone()).collect();
            let epoch = group.epoch();
            let token = group.token()?;
            // Where the group lives, signed for the new members (M1).
            let place = crate::welcome::JoinPlace {
                relay: conv.relay.clone().into_bytes(),
                log: if conv.log != conv.group_id {
                    conv.log.as_bytes().to_vec()
                } else {
                    Vec::new()
                },
            };
            let pending = group.commit_placed(&kps, &indices, Some(place))?;
            // Store the commit as pending before the relay sees it: if we die after the relay
            // accepted it, the next sync finds it in the log, recognises it as ours and
            // applies it (instead of being unable to process our own commit).
            self.db.transaction(|_| {
                group.save()?;
                self.db
                    .set_setting(Setting::PendingCommit(conv.group_id), b"1")
            })?;
            group.apply_pending_commit()?;
            let next_token = group.token()?;
            let mut welcomes = match &pending.welcome {
                Some(nm) => {
                    self.prepare_welcomes(&relay, conv, &adds, invite, nm, &token)
                        .await?
                }
                None => Welcomes::default(),
            };
            match relay
                .append(
                    random_id(),
                    &conv.log,
                    &token,
                    EntryKind::Commit,
                    epoch,
                    pending.commit,
                    Some(next_token_hash(&next_token)),
                    std::mem::take(&mut welcomes.drops),
                )
                .await
            {
                Ok(stored) => {
                    crash_point("commit-after-append");
                    let done = Committed {
                        group,
                        next_token,
                        members,
                        adds: &adds,
                        removes: &removes,
                        welcomes,
                    };
                    return self.finish_commit(conv, done, &stored).await;
                }
                Err(Error::Relay {
                    code: ErrorCode::EpochConflict,
                    ..
                }) => {
                    // Someone else committed first: drop our change (stored too), catch up,
                    // retry.
                    drop(group);
                    self.clear_stale_commit(&conv.group_id)?;
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::Busy(
            "other members kept committing; try again".into(),
        ))
    }

    /// Store a commit the relay took: the new epoch and its token, the Welcomes still owed,
    /// the members watched until they join, the group's name queued for them; then deliver.
    async fn finish_commit(
        &mut self,
        conv: &Conv,
        mut c: Committed<'_>,
        stored: &samizdat_proto::Stored,
    ) -> Result<()> {
        // Welcomes the group's relay could not store go the same way as those
        // for other relays: kept and retried.
        for mailbox in &stored.undelivered_welcomes {
            if let Some((kp, r, _)) = c.adds.iter().find(|a| a.2 == *mailbox) {
                c.welcomes.owed.push(OwedDrop {
                    relay: r.clone(),
                    mailbox: *mailbox,
                    member: mls::key_package_fingerprint(kp)?,
                });
            }
        }
        // New members learn the group's name from the first message of their
        // epoch: queued with the commit, so a crash cannot leave them unnamed.
        let meta = (!c.adds.is_empty() && conv.kind == ConvKind::Group).then(|| Payload {
            unknown: None,
            id: random_id(),
            expires_in: None,
            sent_at: now_millis(),
            body: Body::GroupMeta {
                name: conv.name.clone(),
            },
        });
        self.db.transaction(|tx| {
            c.group.save()?;
            self.store_token(&conv.group_id, c.group.epoch(), &c.next_token)?;
            tx.conn().execute(
                "INSERT OR IGNORE INTO own_entries (group_id, seq) VALUES (?1, ?2)",
                params![conv.group_id.as_bytes(), stored.seq as i64],
            )?;
            for d in &c.welcomes.owed {
                if let Some(part) = c.welcomes.parts.get(&d.mailbox) {
                    self.owe_drop(&conv.group_id, d, part)?;
                }
            }
            // Watched until they join (a fresh Welcome if they never do).
            for (kp, _, _) in c.adds {
                tx.conn().execute(
                    "INSERT INTO added_members (group_id, member, added_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (group_id, member) DO UPDATE SET added_at = excluded.added_at",
                    params![
                        conv.group_id.as_bytes(),
                        &mls::key_package_fingerprint(kp)?[..],
                        now_secs() as i64
                    ],
                )?;
            }
            // Whoever asked to leave and is now gone needs no removal any more.
            for fp in c.removes {
                tx.conn().execute(
                    "DELETE FROM pending_removals WHERE group_id = ?1 AND member = ?2",
                    params![conv.group_id.as_bytes(), fp],
                )?;
            }
            if let Some(p) = &meta {
                let plain = p.encode();
                let ct = c.group.encrypt(&plain)?;
                c.group.save()?;
                let epoch = c.group.epoch();
                self.queue(tx, conv, p, &plain, &random_id(), &ct, epoch)?;
            }
            self.db
                .delete_setting(Setting::PendingCommit(conv.group_id))?;
            self.member_changes(conv, &c.members, &c.group.members())
        })?;
        crash_point("commit-before-drops");
        // Deliver now if we can; whatever cannot be is retried by the next sync
        // (the commit stands either way).
        if !c.welcomes.owed.is_empty() {
            self.flush_drops(Some(&conv.group_id)).await?;
        }
        if meta.is_some() {
            match self.flush_pending(conv).await {
                Ok(()) | Err(Error::RelayUnreachable(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Each new member's Welcome (small, naming it) beside the new epoch's ratchet tree,
    /// stored once as a blob beside the log: the drops the group's relay takes with the
    /// commit, and those owed to mailboxes on other relays.
    async fn prepare_welcomes(
        &self,
        relay: &RelayClient,
        conv: &Conv,
        adds: &[(Vec<u8>, String, Id)],
        invite: Option<Id>,
        nm: &mls::NewMembers,
        token: &[u8],
    ) -> Result<Welcomes> {
        let mut w = Welcomes::default();
        let owner = crate::relay_client::BlobOwner::Group {
            log: conv.log,
            token,
        };
        let tree_blob = relay.put_blob(&nm.sealed_tree, owner).await?;
        for ((kp, mailbox_relay, mailbox), welcome) in adds.iter().zip(&nm.welcomes) {
            let part = crate::welcome::WelcomePart {
                group_id: conv.group_id.as_bytes().to_vec(),
                relay: conv.relay.clone().into_bytes(),
                log: if conv.log != conv.group_id {
                    conv.log.as_bytes().to_vec()
                } else {
                    Vec::new()
                },
                invite_mac: invite
                    .map(|i| crate::invite_mac(&i, &conv.group_id).to_vec())
                    .unwrap_or_default(),
                tree_blob: tree_blob.as_bytes().to_vec(),
                tree_len: nm.sealed_tree.len() as u64,
                welcome: welcome.clone(),
            }
            .encode()?;
            if mailbox_relay.trim_end_matches('/') == relay.base() {
                w.drops.push(WelcomeDrop {
                    mailbox_id: *mailbox,
                    body: Bytes(part.clone()),
                    // The relay takes it only for a KeyPackage claimed from that
                    // mailbox (M2); one that came another way (a device link) is
                    // reported undelivered and sent as an ordinary drop.
                    key_package_hash: Some(Bytes(sha256(kp).to_vec())),
                });
            } else {
                w.owed.push(OwedDrop {
                    relay: mailbox_relay.clone(),
                    mailbox: *mailbox,
                    member: mls::key_package_fingerprint(kp)?,
                });
            }
            w.parts.insert(*mailbox, part);
        }
        Ok(w)
    }
}

/// The Welcomes of one commit.
#[derive(Default)]
struct Welcomes {
    /// Taken by the group's relay with the commit.
    drops: Vec<WelcomeDrop>,
    /// Owed to members whose mailbox is on another relay (or that the group's relay could
    /// not store): stored with the commit, delivered after it.
    owed: Vec<OwedDrop>,
    /// Each new member's mailbox message, by mailbox.
    parts: HashMap<Id, Vec<u8>>,
}

/// A commit the relay took, with what storing it needs.
struct Committed<'a> {
    group: mls::Group,
    next_token: zeroize::Zeroizing<Vec<u8>>,
    /// The members before it.
    members: Vec<mls::Member>,
    adds: &'a [(Vec<u8>, String, Id)],
    removes: &'a [Vec<u8>],
    welcomes: Welcomes,
}
