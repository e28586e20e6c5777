//! Applying one entry of a conversation's log: a commit (a new epoch, members in and out, a
//! false token found out) or an application message (a payload, or a revoked device ignored).

use super::*;

/// A commit mls-rs processed, with what the caller saw before it.
pub(super) struct CommitSeen {
    pub(super) epoch: u64,
    pub(super) removed: bool,
    pub(super) committer: Option<[u8; 32]>,
    pub(super) committer_device: Option<[u8; 32]>,
    /// The members before the commit.
    pub(super) before: Vec<mls::Member>,
    /// The hash the epoch's closing commit gave the relay for the next epoch.
    pub(super) next_hash: Option<Bytes>,
}

impl Profile {
    /// Process one entry of the log (not one of ours) into the group, loaded on first use;
    /// a rejected entry drops the loaded group so no partial state survives. Returns a
    /// leaver's fingerprint when the entry was a leave notice.
    pub(super) fn apply_entry(
        &mut self,
        conv: &mut Conv,
        group: &mut Option<mls::Group>,
        entry: samizdat_proto::Entry,
        next_hash: &Option<Bytes>,
    ) -> Result<Option<Vec<u8>>> {
        if group.is_none() {
            *group = Some(self.mls.load(conv.group_id.as_bytes())?);
        }
        let Some(g) = group.as_mut() else {
            return Ok(None);
        };
        let before = if entry.kind == EntryKind::Commit {
            g.members()
        } else {
            Vec::new()
        };
        let processed = g.process(&entry.body.0);
        match processed {
            Ok(Incoming::Commit {
                epoch,
                removed,
                committer,
                committer_device,
            }) => {
                let seen = CommitSeen {
                    epoch,
                    removed,
                    committer,
                    committer_device,
                    before,
                    next_hash: next_hash.clone(),
                };
                self.apply_commit_entry(conv, g, entry.seq, seen)?;
            }
            Ok(Incoming::Application {
                sender,
                sender_device,
                data,
            }) => {
                let left = self.apply_application_entry(
                    conv,
                    g,
                    entry.seq,
                    (sender, sender_device),
                    data,
                )?;
                return Ok(left);
            }
            Ok(Incoming::Other) => {
                let g = &mut *g;
                self.db.transaction(|_| {
                    g.save()?;
                    self.set_cursor(&*conv, entry.seq, conv.read_epoch)
                })?;
                conv.cursor = entry.seq;
            }
            Err(e) => {
                // Forged, damaged or undecryptable: never displayed. Reload the
                // group so no partial state from the failed attempt survives.
                *group = None;
                let text = Notice::EntryRejected {
                    position: entry.seq,
                    error: Problem::from(&e),
                };
                let direct = conv.kind == ConvKind::Direct;
                self.db.transaction(|tx| {
                    self.emit(Event::notice(Some(&*conv), text))?;
                    // In a 1:1 chat the other person is told (`Body::Unreadable`).
                    if direct {
                        tx.conn().execute(
                            "INSERT OR IGNORE INTO unreadable_owed (group_id, position)
                             SELECT ?1, ?2 WHERE (SELECT COUNT(*) FROM unreadable_owed WHERE group_id = ?1) < 16",
                            params![conv.group_id.as_bytes(), entry.seq as i64],
                        )?;
                    }
                    self.set_cursor(&*conv, entry.seq, conv.read_epoch)
                })?;
                conv.cursor = entry.seq;
            }
        }
        Ok(None)
    }

    /// The positions of the log after `conv`'s cursor that we appended ourselves.
    pub(super) fn own_entries_after(&self, conv: &Conv) -> Result<HashSet<u64>> {
        let conn = self.db.conn();
        let mut stmt =
            conn.prepare("SELECT seq FROM own_entries WHERE group_id = ?1 AND seq > ?2")?;
        let seqs = stmt
            .query_map(params![conv.group_id.as_bytes(), conv.cursor as i64], |r| {
                r.get::<_, i64>(0)
            })?
            .map(|r| r.map(|v| v as u64))
            .collect::<rusqlite::Result<HashSet<_>>>()?;
        Ok(seqs)
    }

    /// Apply the commit at position `seq` (already processed into `g`): save the new epoch
    /// and its token, report who came and went, or find out a false token or our removal.
    pub(super) fn apply_commit_entry(
        &mut self,
        conv: &mut Conv,
        g: &mut mls::Group,
        seq: u64,
        c: CommitSeen,
    ) -> Result<()> {
        let CommitSeen {
            epoch,
            removed,
            committer,
            committer_device,
            before,
            next_hash,
        } = c;
        let group_id = &conv.group_id.clone();
        // H2: a device its person revoked committed. Every member applies the
        // commit (refusing it would split the group), then undoes it: the
        // device and every leaf it added are removed by the next commit.
        let revoked_committer = match (committer, committer_device) {
            (Some(p), Some(d)) if p != self.fingerprint => {
                self.device_status(&p, &d)? == super::device_lists::DeviceStatus::Revoked
            }
            _ => false,
        };
        let token = if removed { None } else { Some(g.token()?) };
        let after = if removed { Vec::new() } else { g.members() };
        // docs/THREAT-MODEL.md, Part A, finding 6: a committer who gave the relay a token hash that
        // is not the one its commit derives locks every other member out.
        // Name them instead of failing later with an unexplained refusal.
        let bogus = match (&token, &next_hash) {
            (Some(t), Some(h)) => h.0.as_slice() != sha256(t).as_slice(),
            _ => false,
        };
        let culprit = match committer {
            Some(fp) if bogus => Some(self.label(group_id, &fp)?),
            _ => None,
        };

        self.db.transaction(|tx| {
            g.save()?;
            if let Some(t) = &token {
                self.store_token(group_id, epoch, t)?;
            }
            if bogus {
                self.lost_sync_at(tx, conv, seq, committer, culprit.clone(), &after)?;
            } else if removed {
                tx.conn().execute(
                    "UPDATE conversations SET active = 0, status = 'removed', status_reason = NULL WHERE group_id = ?1",
                    params![group_id.as_bytes()],
                )?;
                let e = Event::Removed {
                    conversation_id: ConversationId::from_id(*group_id),
                    conversation: conv.name.clone(),
                };
                self.emit(e)?;
                self.drop_group_secrets(tx, group_id)?;
            } else {
                self.member_changes(&*conv, &before, &after)?;
                if let (true, Some(person), Some(device)) =
                    (revoked_committer, committer, committer_device)
                {
                    self.undo_revoked_commit(&*conv, &person, &device, &before, &after)?;
                }
                // Our own commit, recovered after a crash: the group's name
                // queued with it was lost; queue it again for the new members.
                let ours = committer == Some(self.fingerprint);
                if ours && conv.kind == ConvKind::Group && after.len() > before.len()
                {
                    let p = Payload {
                        unknown: None,
                        id: random_id(),
                        expires_in: None,
                        sent_at: now_millis(),
                        body: Body::GroupMeta {
                            name: conv.name.clone(),
                        },
                    };
                    let plain = p.encode();
                    let ct = g.encrypt(&plain)?;
                    g.save()?;
                    let epoch = g.epoch();
                    self.queue(tx, &*conv, &p, &plain, &random_id(), &ct, epoch)?;
                }
            }
            self.set_cursor(&*conv, seq, epoch)
        })?;
        conv.cursor = seq;
        conv.read_epoch = epoch;
        if removed || bogus {
            conv.active = false;
        }
        Ok(())
    }

    /// A commit whose token hash is false (docs/THREAT-MODEL.md, Part A, finding 6): two
    /// explanations fit and the client cannot tell them apart — the committer lied to the
    /// relay, or the relay served a commit it never accepted (a fork). Say both, name the
    /// committer, and prepare the recovery (inside the caller's transaction).
    fn lost_sync_at(
        &self,
        tx: &Tx,
        conv: &Conv,
        seq: u64,
        committer: Option<[u8; 32]>,
        culprit: Option<String>,
        after: &[mls::Member],
    ) -> Result<()> {
        let group_id = &conv.group_id;
        // Two explanations fit, and the client cannot tell them apart:
        // the committer lied to the relay, or the relay served a commit
        // it never accepted (a fork). Say both, name the committer.
        let who = culprit.unwrap_or_default();
        self.set_status(group_id, &ConvStatus::LostSync)?;
        // Recovery without anyone's help (docs/THREAT-MODEL.md, finding 6): at the end of
        // this sync the log is re-created on the same relay from this
        // epoch (the other members follow the notice), and the
        // committer is removed by our next commit there.
        // Who was in it (the culprit included): any of them may
        // re-add us later, should this be a fork (M6).
        for m in after {
            tx.conn().execute(
                "INSERT OR IGNORE INTO last_rosters (group_id, person) VALUES (?1, ?2)",
                params![group_id.as_bytes(), &m.fingerprint[..]],
            )?;
        }
        let recovering = match committer {
            Some(fp) if fp != self.fingerprint => {
                tx.conn().execute(
                    "INSERT OR IGNORE INTO pending_removals (group_id, member, created_at) VALUES (?1, ?2, ?3)",
                    params![group_id.as_bytes(), &fp[..], now_secs() as i64],
                )?;
                self.db.set_setting(Setting::Recover(*group_id), b"1")?;
                true
            }
            _ => false,
        };
        let text = if recovering {
            Notice::LostSyncFalseToken { who, position: seq }
        } else {
            Notice::LostSyncForkedCommit {
                position: seq,
                conversation: conv.name.clone(),
            }
        };
        self.emit(Event::notice(Some(conv), text))
    }

    /// Apply the application message at position `seq` from `sender` (person, device):
    /// its payload, unless the device was revoked or the payload does not decode. Returns
    /// the leaver's fingerprint when the payload was a leave notice.
    pub(super) fn apply_application_entry(
        &mut self,
        conv: &mut Conv,
        g: &mut mls::Group,
        seq: u64,
        (sender, sender_device): ([u8; 32], [u8; 32]),
        data: Vec<u8>,
    ) -> Result<Option<Vec<u8>>> {
        let group_id = &conv.group_id.clone();
        let mut left = None;
        // A device its person revoked no longer speaks for them (H2).
        let revoked = self.device_status(&sender, &sender_device)?
            == super::device_lists::DeviceStatus::Revoked;
        // What it does is in the log; applying it again after a power loss is harmless.
        self.db.transaction_recoverable(|tx| {
            g.save()?;
            match Payload::decode(&data) {
                Ok(_) if revoked => {
                    let who = self.label(&conv.group_id, &sender)?;
                    self.emit(Event::notice(
                        Some(&*conv),
                        Notice::IgnoredRevokedDevice { who },
                    ))?;
                }
                Ok(p) => {
                    left = self.apply_payload(tx, &mut *conv, &sender, p, seq)?;
                }
                Err(_) => self.emit(Event::notice(
                    Some(&*conv),
                    Notice::UndecodableMessage { position: seq },
                ))?,
            }
            self.set_cursor(&*conv, seq, conv.read_epoch)
        })?;
        // Re-read: the payload may have renamed the conversation.
        if let Some(c) = self.conv_by_id(group_id)? {
            conv.name = c.name;
            conv.kind = c.kind;
        }
        conv.cursor = seq;
        Ok(left)
    }
}
