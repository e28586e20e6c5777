//! Sync: the mailbox (Welcomes) and each conversation's log, processed strictly in order.

use super::*;

impl Profile {
    /// Fetch and process the mailbox and every conversation; acknowledge what was stored.
    pub async fn sync(&mut self) -> Result<Vec<Event>> {
        let mut events = Vec::new();
        self.expire_messages()?;
        // A relay that cannot be reached stops only what lives on it: the other mailboxes and
        // conversations are still read. The primary relay being down is reported at the end.
        let mut home_down = None;
        let mut newly_down = false;
        match self.sync_mailbox(&mut events).await {
            Ok(()) => {
                let home = self.relay.base().to_string();
                self.relay_up(&home);
            }
            Err(e @ Error::RelayUnreachable(_)) => {
                let home = self.relay.base().to_string();
                newly_down = self.down_for(&home).is_none();
                self.relay_down(&home);
                home_down = Some(e);
            }
            Err(e) => return Err(e),
        }
        let reached = self.sync_other_mailboxes(&mut events).await?;
        if reached > 0
            && let Some(e) = home_down.take()
            && newly_down
        {
            // Another of our relays answered: this sync worked; say (once) which did not.
            self.emit(
                &mut events,
                Event::notice(
                    None,
                    Notice::RelayUnreachable {
                        error: Problem::from(&e),
                    },
                ),
            )?;
        }
        if !self.down_since.contains_key(self.relay.base()) {
            match self.maintain_key_packages().await {
                Ok(()) | Err(Error::RelayUnreachable(_)) => {}
                Err(e) => return Err(e),
            }
            self.maintain_other_pools().await?;
        }
        // Welcomes owed to members on other relays, and adds waiting for one, when due.
        self.flush_drops(None).await?;
        self.resume_adds().await?;
        events.append(&mut self.buffered);
        // Leave notices queued before we marked a conversation as left.
        for conv in self.left_with_outbox()? {
            match self.flush_pending(&conv).await {
                Ok(()) | Err(Error::RelayUnreachable(_)) => {}
                Err(e) => return Err(e),
            }
            events.append(&mut self.buffered);
            self.forget_keys_if_left(&conv.group_id)?;
        }
        let convs = self.active_convs()?;
        for conv in convs {
            // Queued sends first: once acknowledged they are known as our own entries, so
            // the log read below skips them instead of failing to decrypt them.
            let flushed = self.flush_pending(&conv).await;
            events.append(&mut self.buffered);
            let result = match flushed {
                Ok(()) => self.sync_group(&conv.group_id, &mut events).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(_) => {
                    self.relay_up(&conv.relay);
                    // Whatever the catch-up queued (a recovered commit's group name).
                    match self.flush_pending(&conv).await {
                        Ok(()) | Err(Error::RelayUnreachable(_)) => {}
                        Err(e) => return Err(e),
                    }
                    events.append(&mut self.buffered);
                }
                Err(Error::RelayUnreachable(_)) => {
                    self.relay_down(&conv.relay);
                    // Down for longer than the profile allows: move the conversation.
                    self.auto_move(&conv, &mut events).await?;
                }
                Err(Error::Relay {
                    code: ErrorCode::BadToken,
                    ..
                }) => {
                    // Our epoch token is not the group's: we processed a commit the others did
                    // not (a fork served by a dishonest relay) or lost our state. Stop using
                    // this state; a member re-adding us starts afresh.
                    self.db.conn().execute(
                        "UPDATE conversations SET active = 0, status = 'lost_sync', status_reason = NULL WHERE group_id = ?1",
                        params![conv.group_id.as_bytes()],
                    )?;
                    self.emit(
                        &mut events,
                        Event::notice(Some(&conv), Notice::LostSyncToken),
                    )?;
                }
                Err(e) => self.emit(
                    &mut events,
                    Event::notice(
                        Some(&conv),
                        Notice::SyncFailed {
                            error: Problem::from(&e),
                        },
                    ),
                )?,
            }
        }
        // Groups left on another device of ours (read here or by a push): their keys go
        // once nothing of ours is queued for them.
        for conv in self.convs_where(
            "active = 0 AND status = 'left' AND group_id IN (SELECT group_id FROM mls_groups)",
        )? {
            self.forget_keys_if_left(&conv.group_id)?;
        }
        // Devices asking to be linked, and a history another device of ours sent.
        match self.sync_links(&mut events).await {
            Ok(()) | Err(Error::RelayUnreachable(_)) => {}
            Err(e) => self.emit(
                &mut events,
                Event::notice(
                    None,
                    Notice::LinkFailed {
                        error: Problem::from(&e),
                    },
                ),
            )?,
        }
        events.append(&mut self.buffered);
        match self.import_history(&mut events).await {
            Ok(_) | Err(Error::RelayUnreachable(_)) => {}
            Err(e) => {
                self.db.conn().execute(
                    "DELETE FROM settings WHERE key IN ('history_archive', 'state_archive')",
                    [],
                )?;
                self.emit(
                    &mut events,
                    Event::notice(
                        None,
                        Notice::HistoryUnreadable {
                            error: Problem::from(&e),
                        },
                    ),
                )?
            }
        }
        match self.answer_invitations(&mut events).await {
            Ok(()) | Err(Error::RelayUnreachable(_)) => {}
            Err(e) => return Err(e),
        }
        match self.send_state_if_changed().await {
            Ok(()) | Err(Error::RelayUnreachable(_)) => {}
            Err(e) => self.emit(
                &mut events,
                Event::notice(
                    None,
                    Notice::OtherDevicesNotTold {
                        error: Problem::from(&e),
                    },
                ),
            )?,
        }
        // Logs a member locked with a false token (docs/THREAT-MODEL.md, Part A, finding 6): re-created, then the culprit is
        // removed by the step below.
        match self.recover_locked_logs(&mut events).await {
            Ok(()) | Err(Error::RelayUnreachable(_)) => {}
            Err(e) => self.emit(
                &mut events,
                Event::notice(
                    None,
                    Notice::LockedLogNotRecreated {
                        error: Problem::from(&e),
                    },
                ),
            )?,
        }
        // Members who asked to leave (stored when their notice was read, also by earlier
        // syncs that could not finish): remove them; one committer wins, the rest find them
        // gone. Then members we added who never joined get a fresh Welcome.
        for step in 0..3 {
            let r = match step {
                0 => self.commit_pending_removals(None).await,
                1 => self.resend_welcomes().await,
                _ => self.finish_refusals().await,
            };
            match r {
                Ok(()) | Err(Error::RelayUnreachable(_)) => {}
                Err(e) => return Err(e),
            }
        }
        events.append(&mut self.buffered);
        if let Some(e) = home_down {
            // The events so far are published by the caller (`take_events`).
            self.buffered = events;
            return Err(e);
        }
        Ok(events)
    }

    /// Re-create the logs that a member locked with a false next-token hash (docs/THREAT-MODEL.md, Part A, finding 6) on
    /// their relay, from the epoch we are at: the members follow the move notice, and the
    /// culprit's removal is queued (`commit_pending_removals` makes it on the new log). A
    /// member who already moved it first makes us follow instead (same log id).
    async fn recover_locked_logs(&mut self, events: &mut Vec<Event>) -> Result<()> {
        let keys: Vec<String> = {
            let conn = self.db.conn();
            let mut stmt = conn.prepare("SELECT key FROM settings WHERE key LIKE 'recover:%'")?;
            stmt.query_map([], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?
        };
        for key in keys {
            let gid = key
                .strip_prefix("recover:")
                .and_then(|g| g.parse::<Id>().ok());
            let conv = match gid {
                Some(g) => self.conv_by_id(&g)?,
                None => None,
            };
            let Some(conv) = conv else {
                self.db
                    .conn()
                    .execute("DELETE FROM settings WHERE key = ?1", params![key])?;
                continue;
            };
            if conv.active {
                // Someone else's move reached us first: nothing left to do here.
                self.db
                    .conn()
                    .execute("DELETE FROM settings WHERE key = ?1", params![key])?;
                continue;
            }
            let relay = conv.relay.clone();
            let moved = self.move_conversation(&conv.name, &relay).await;
            events.append(&mut self.buffered);
            moved?;
            self.db
                .conn()
                .execute("DELETE FROM settings WHERE key = ?1", params![key])?;
        }
        Ok(())
    }

    /// Read one conversation's log (after a push for it): its queued sends, the log, and
    /// the removals it asks for. The full `sync` covers the rest.
    /// Catch up one conversation after a push: `pushed` are the entries the relay pushed for
    /// `log` (possibly none), applied as they are when they directly follow the cursor;
    /// otherwise, and for anything they do not cover, the log is read.
    pub async fn sync_conversation(
        &mut self,
        log: &Id,
        mut pushed: Vec<samizdat_proto::Entry>,
    ) -> Result<Vec<Event>> {
        let mut events = Vec::new();
        let conv = match self.conv_by_log(log)? {
            Some(c) => c,
            None => match self.conv_by_id(log)? {
                Some(c) => {
                    // Pushed for an older log of this conversation: not what we read now.
                    pushed.clear();
                    c
                }
                None => return Ok(events),
            },
        };
        let group_id = &conv.group_id.clone();
        if !conv.active {
            return Ok(events);
        }
        self.flush_pending(&conv).await?;
        events.append(&mut self.buffered);
        self.sync_group_with(group_id, pushed, &mut events).await?;
        self.flush_pending(&conv).await?;
        events.append(&mut self.buffered);
        self.commit_pending_removals(Some(group_id)).await?;
        events.append(&mut self.buffered);
        Ok(events)
    }

    pub(super) async fn sync_mailbox(&mut self, events: &mut Vec<Event>) -> Result<()> {
        let relay = self.relay.clone();
        let key = self.mailbox_key.clone();
        let id = self.mailbox;
        self.read_one_mailbox(&relay, &id, &key, events).await
    }

    /// Read one of our mailboxes: Welcomes (joins or pending invitations) and move notices;
    /// acknowledge what was processed.
    pub(super) async fn read_one_mailbox(
        &mut self,
        relay: &RelayClient,
        mailbox: &Id,
        key: &MailboxKey,
        events: &mut Vec<Event>,
    ) -> Result<()> {
        let msgs = relay.read_mailbox(key, mailbox, 0).await?;
        if msgs.is_empty() {
            return Ok(());
        }
        let mut done = Vec::new();
        let mut joined = 0;
        for m in msgs {
            let welcome = match WelcomePart::decode(&m.body.0) {
                Some(part) => Some(part.and_then(Arrived::part)),
                None => match Envelope::decode(&m.body.0) {
                    // A device-link answer arriving late (`device join` reads its own).
                    Ok(Envelope::Device { sealed }) => {
                        self.device_envelope(&sealed.0)?;
                        None
                    }
                    Ok(Envelope::Move { sealed }) => {
                        if let Err(e) = self.receive_move(&sealed.0, events).await {
                            if matches!(e, Error::RelayUnreachable(_)) {
                                // Not acknowledged: read again once the new relay answers.
                                continue;
                            }
                            self.emit(
                                events,
                                Event::notice(
                                    None,
                                    Notice::MoveNotFollowed {
                                        error: Problem::from(&e),
                                    },
                                ),
                            )?;
                        }
                        None
                    }
                    Ok(Envelope::Welcome {
                        group_id,
                        relay,
                        welcome,
                        invite_mac,
                        log,
                    }) => Some(Ok(Arrived {
                        group_id,
                        relay,
                        log,
                        invite_mac: invite_mac.map(|m| m.0),
                        stored: welcome.0,
                    })),
                    Err(_) => {
                        self.emit(
                            events,
                            Event::notice(None, Notice::MailboxMessageUnreadable),
                        )?;
                        None
                    }
                },
            };
            match welcome {
                None => {}
                Some(Err(e)) => self.emit(
                    events,
                    Event::notice(
                        None,
                        Notice::JoinFailed {
                            error: Problem::from(&e),
                        },
                    ),
                )?,
                Some(Ok(w)) => {
                    let w = match self.signed_place(w, events) {
                        Ok(w) => w,
                        Err(e) => {
                            self.emit(
                                events,
                                Event::notice(
                                    None,
                                    Notice::JoinFailed {
                                        error: Problem::from(&e),
                                    },
                                ),
                            )?;
                            done.push(m.seq);
                            continue;
                        }
                    };
                    if let Some(c) = self.conv_by_id(&w.group_id)?.filter(|c| c.active) {
                        // Already joined (a crash before the acknowledgement): nothing to do —
                        // unless the Welcome is for a later epoch than ours: a member re-adds
                        // us to a group that went on without us (a relay forked us off, and
                        // our own recovery left us on a log of our own). Screened as a re-add.
                        let later = WelcomePart::decode(&w.stored)
                            .and_then(|p| p.ok())
                            .and_then(|p| self.mls.examine(&p.welcome).ok())
                            .is_some_and(|seen| seen.epoch > c.read_epoch);
                        if !later {
                            done.push(m.seq);
                            continue;
                        }
                    }
                    // From a linked device of a contact: read our conversation with them first,
                    // so the newest device list they sent (a revocation, say) is known.
                    self.read_lists_before(&w, events).await;
                    let screened = self.screen_welcome(&w);
                    // Fault injection for the tests: a Welcome that cannot be processed.
                    let screened = if crate::fault::on("LOSE_WELCOMES") {
                        Err(Error::Protocol(
                            "the Welcome could not be processed (test fault injection)".into(),
                        ))
                    } else {
                        screened
                    };
                    let outcome = match screened {
                        Ok(Screened::Join) => self.join_arrived(&w, events).await.map(Some),
                        Ok(Screened::Pending(Some(event))) => {
                            self.emit(events, *event).map(|()| None)
                        }
                        Ok(Screened::Pending(None)) => Ok(None),
                        Err(e) => Err(e),
                    };
                    match outcome {
                        Ok(Some(_)) => joined += 1,
                        Ok(None) => {}
                        // The group's relay holds the tree: read the Welcome again once it
                        // answers.
                        Err(Error::RelayUnreachable(_)) => continue,
                        Err(e) => self.emit(
                            events,
                            Event::notice(
                                None,
                                Notice::JoinFailed {
                                    error: Problem::from(&e),
                                },
                            ),
                        )?,
                    }
                }
            }
            done.push(m.seq);
        }
        // Acknowledge only after the joins are committed locally.
        crash_point("mailbox-before-ack");
        if !done.is_empty() {
            relay.ack(key, mailbox, done).await?;
        }
        if joined > 0 {
            let new: Vec<Id> = events
                .iter()
                .filter_map(|e| match e {
                    Event::Joined {
                        conversation_id, ..
                    } => conversation_id.parse().ok(),
                    _ => None,
                })
                .collect();
            self.after_join(new, events).await?;
        }
        Ok(())
    }

    /// Refill the KeyPackage pool and announce our display name in conversations we just
    /// joined.
    pub(super) async fn after_join(&mut self, new: Vec<Id>, events: &mut Vec<Event>) -> Result<()> {
        {
            // A join used a KeyPackage of one of our mailboxes: the other pools are checked
            // by the next sync, the primary's now.
            self.others_checked_at = 0;
            if let Ok(count) = self
                .relay
                .key_package_count(&self.mailbox_key, &self.mailbox)
                .await
                && (count.available as usize) < KEY_PACKAGE_POOL / 2
            {
                let _ = self
                    .upload_key_packages(KEY_PACKAGE_POOL - count.available as usize, None)
                    .await;
            }
            for id in new {
                // By id: catching up may rename the conversation (or end our membership).
                let Some(conv) = self.conv_by_id(&id)? else {
                    continue;
                };
                self.announce_in(&conv, events).await?;
                match self.add_own_devices(&conv, events).await {
                    Ok(()) | Err(Error::RelayUnreachable(_)) => {}
                    Err(e) => {
                        let text = Notice::OwnDevicesNotAdded {
                            error: Problem::from(&e),
                        };
                        self.emit(events, Event::notice(Some(&conv), text))?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Read and process a conversation's log from its cursor. Returns members who asked to leave.
    pub(super) async fn sync_group(
        &mut self,
        group_id: &Id,
        events: &mut Vec<Event>,
    ) -> Result<Vec<Vec<u8>>> {
        self.sync_group_with(group_id, Vec::new(), events).await
    }

    /// [`Self::sync_group`], starting from entries the relay pushed when they can stand for
    /// the first read ([`pushed_page`]); then nothing more is read (what follows is pushed
    /// too, or read by the next sync).
    async fn sync_group_with(
        &mut self,
        group_id: &Id,
        pushed: Vec<samizdat_proto::Entry>,
        events: &mut Vec<Event>,
    ) -> Result<Vec<Vec<u8>>> {
        let mut leavers = Vec::new();
        let Some(mut conv) = self.conv_by_id(group_id)? else {
            return Ok(leavers);
        };
        let mut pushed = pushed_page(&conv, pushed);
        let from_push = pushed.is_some();
        let relay = self.conv_relay(&conv)?;
        let own: HashSet<u64> = {
            let conn = self.db.conn();
            let mut stmt =
                conn.prepare("SELECT seq FROM own_entries WHERE group_id = ?1 AND seq > ?2")?;
            stmt.query_map(params![group_id.as_bytes(), conv.cursor as i64], |r| {
                r.get::<_, i64>(0)
            })?
            .map(|r| r.map(|v| v as u64))
            .collect::<rusqlite::Result<HashSet<_>>>()?
        };
        let mut group: Option<mls::Group> = None;
        let start = conv.cursor;
        let mut last_page = 0usize;
        while conv.active {
            if last_page >= PROGRESS_PAGE {
                // Another page: a long catch-up, worth showing.
                let e = Event::SyncProgress {
                    conversation_id: group_id.to_string(),
                    conversation: conv.name.clone(),
                    done: conv.cursor - start,
                };
                self.emit(events, e)?;
            }
            let page = match pushed.take() {
                Some(page) => page,
                None if from_push => break,
                None => {
                    let token = self.token(group_id, conv.read_epoch)?;
                    relay
                        .read_entries(&conv.log, conv.read_epoch, conv.cursor, &token)
                        .await?
                }
            };
            // The hash the epoch's closing commit gave the relay for the next epoch.
            let next_hash = page.next_token_hash.clone();
            if page.entries.is_empty() {
                if page.current_epoch > conv.read_epoch {
                    self.emit(events, Event::notice(Some(&conv), Notice::EntriesExpired))?;
                }
                break;
            }
            // The relay is trusted for order, not for honesty: process by position, each
            // position once, and say so when positions are missing.
            let mut entries = page.entries;
            entries.sort_by_key(|e| e.seq);
            entries.dedup_by_key(|e| e.seq);
            entries.retain(|e| e.seq > conv.cursor);
            if entries.is_empty() {
                break;
            }
            last_page = entries.len();
            for entry in entries {
                if !conv.active {
                    break;
                }
                if conv.cursor > 0 && entry.seq != conv.cursor + 1 {
                    let missing = Notice::EntriesMissing {
                        from: conv.cursor + 1,
                        to: entry.seq - 1,
                    };
                    self.emit(events, Event::notice(Some(&conv), missing))?;
                }
                let mut next_epoch = conv.read_epoch;
                if own.contains(&entry.seq) {
                    if entry.kind == EntryKind::Commit {
                        next_epoch = entry.epoch + 1;
                    }
                    self.set_cursor(&conv, entry.seq, next_epoch)?;
                    conv.cursor = entry.seq;
                    conv.read_epoch = next_epoch;
                    continue;
                }
                if group.is_none() {
                    group = Some(self.mls.load(group_id.as_bytes())?);
                }
                let Some(g) = group.as_mut() else { break };
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
                        // H2: a device its person revoked committed. Every member applies the
                        // commit (refusing it would split the group), then undoes it: the
                        // device and every leaf it added are removed by the next commit.
                        let revoked_committer = match (committer, committer_device) {
                            (Some(p), Some(d)) if p != self.fingerprint => {
                                self.device_status(&p, &d)?
                                    == super::device_lists::DeviceStatus::Revoked
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
                        let g = &mut *g;
                        self.db.transaction(|| {
                            g.save()?;
                            if let Some(t) = &token {
                                self.store_token(group_id, epoch, t)?;
                            }
                            if bogus {
                                // Two explanations fit, and the client cannot tell them apart:
                                // the committer lied to the relay, or the relay served a commit
                                // it never accepted (a fork). Say both, name the committer.
                                let who = culprit.clone().unwrap_or_default();
                                self.set_status(group_id, &ConvStatus::LostSync)?;
                                // Recovery without anyone's help (docs/THREAT-MODEL.md, finding 6): at the end of
                                // this sync the log is re-created on the same relay from this
                                // epoch (the other members follow the notice), and the
                                // committer is removed by our next commit there.
                                // Who was in it (the culprit included): any of them may
                                // re-add us later, should this be a fork (M6).
                                for m in &after {
                                    self.db.conn().execute(
                                        "INSERT OR IGNORE INTO last_rosters (group_id, person) VALUES (?1, ?2)",
                                        params![group_id.as_bytes(), &m.fingerprint[..]],
                                    )?;
                                }
                                let recovering = match committer {
                                    Some(fp) if fp != self.fingerprint => {
                                        self.db.conn().execute(
                                            "INSERT OR IGNORE INTO pending_removals (group_id, member, created_at) VALUES (?1, ?2, ?3)",
                                            params![group_id.as_bytes(), &fp[..], now_secs() as i64],
                                        )?;
                                        self.db.set_setting(&recover_key(group_id), b"1")?;
                                        true
                                    }
                                    _ => false,
                                };
                                let text = if recovering {
                                    Notice::LostSyncFalseToken {
                                        who,
                                        position: entry.seq,
                                    }
                                } else {
                                    Notice::LostSyncForkedCommit {
                                        position: entry.seq,
                                        conversation: conv.name.clone(),
                                    }
                                };
                                self.emit(events, Event::notice(Some(&conv), text))?;
                            } else if removed {
                                self.db.conn().execute(
                                    "UPDATE conversations SET active = 0, status = 'removed', status_reason = NULL WHERE group_id = ?1",
                                    params![group_id.as_bytes()],
                                )?;
                                let e = Event::Removed {
                                    conversation_id: group_id.to_string(),
                                    conversation: conv.name.clone(),
                                };
                                self.emit(events, e)?;
                                self.drop_group_secrets(group_id)?;
                            } else {
                                self.member_changes(&conv, &before, &after, events)?;
                                if let (true, Some(person), Some(device)) =
                                    (revoked_committer, committer, committer_device)
                                {
                                    self.undo_revoked_commit(&conv, &person, &device, &before, &after, events)?;
                                }
                                // Our own commit, recovered after a crash: the group's name
                                // queued with it was lost; queue it again for the new members.
                                let ours = committer == Some(self.fingerprint);
                                if ours && conv.kind == ConvKind::Group && after.len() > before.len()
                                {
                                    let p = Payload {
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
                                    self.queue(&conv, &p, &plain, &random_id(), &ct, epoch, events)?;
                                }
                            }
                            self.set_cursor(&conv, entry.seq, epoch)
                        })?;
                        conv.cursor = entry.seq;
                        conv.read_epoch = epoch;
                        if removed || bogus {
                            conv.active = false;
                        }
                    }
                    Ok(Incoming::Application {
                        sender,
                        sender_device,
                        data,
                    }) => {
                        let g = &mut *g;
                        let mut new_events = Vec::new();
                        let mut left = None;
                        // A device its person revoked no longer speaks for them (H2).
                        let revoked = self.device_status(&sender, &sender_device)?
                            == super::device_lists::DeviceStatus::Revoked;
                        self.db.transaction(|| {
                            g.save()?;
                            match Payload::decode(&data) {
                                Ok(_) if revoked => {
                                    let who = self.label(&conv.group_id, &sender)?;
                                    self.emit(
                                        &mut new_events,
                                        Event::notice(
                                            Some(&conv),
                                            Notice::IgnoredRevokedDevice { who },
                                        ),
                                    )?;
                                }
                                Ok(p) => {
                                    left = self.apply_payload(
                                        &mut conv,
                                        &sender,
                                        p,
                                        entry.seq,
                                        &mut new_events,
                                    )?;
                                }
                                Err(_) => self.emit(
                                    &mut new_events,
                                    Event::notice(
                                        Some(&conv),
                                        Notice::UndecodableMessage {
                                            position: entry.seq,
                                        },
                                    ),
                                )?,
                            }
                            self.set_cursor(&conv, entry.seq, conv.read_epoch)
                        })?;
                        // Re-read: the payload may have renamed the conversation.
                        if let Some(c) = self.conv_by_id(group_id)? {
                            conv.name = c.name;
                            conv.kind = c.kind;
                        }
                        conv.cursor = entry.seq;
                        events.extend(new_events);
                        leavers.extend(left);
                    }
                    Ok(Incoming::Other) => {
                        let g = &mut *g;
                        self.db.transaction(|| {
                            g.save()?;
                            self.set_cursor(&conv, entry.seq, conv.read_epoch)
                        })?;
                        conv.cursor = entry.seq;
                    }
                    Err(e) => {
                        // Forged, damaged or undecryptable: never displayed. Reload the
                        // group so no partial state from the failed attempt survives.
                        group = None;
                        let text = Notice::EntryRejected {
                            position: entry.seq,
                            error: Problem::from(&e),
                        };
                        self.db.transaction(|| {
                            self.emit(events, Event::notice(Some(&conv), text))?;
                            self.set_cursor(&conv, entry.seq, conv.read_epoch)
                        })?;
                        conv.cursor = entry.seq;
                    }
                }
            }
        }
        // The log was read to its end: a commit of ours still pending was not taken.
        if conv.active {
            self.clear_stale_commit(group_id)?;
        }
        Ok(leavers)
    }

    pub(super) fn set_cursor(&self, conv: &Conv, seq: u64, epoch: u64) -> Result<()> {
        self.db.conn().execute(
            "UPDATE conversations SET cursor = ?2, read_epoch = ?3 WHERE group_id = ?1",
            params![conv.group_id.as_bytes(), seq as i64, epoch as i64],
        )?;
        Ok(())
    }
}

/// The setting that marks a conversation whose log a member locked (docs/THREAT-MODEL.md, finding 6) for recovery.
fn recover_key(group: &Id) -> String {
    format!("recover:{group}")
}

/// Entries the relay pushed, as a page that can stand for a read: application entries of the
/// epoch being read that directly follow the cursor, without a gap. Anything else is read
/// from the log: a commit (only a read carries the hash its epoch closed with, which members
/// check), a gap, another epoch. The relay is no more trusted for a push than for a read:
/// each entry is opened and checked the same way.
fn pushed_page(
    conv: &Conv,
    mut pushed: Vec<samizdat_proto::Entry>,
) -> Option<samizdat_proto::Entries> {
    pushed.sort_by_key(|e| e.seq);
    pushed.dedup_by_key(|e| e.seq);
    pushed.retain(|e| e.seq > conv.cursor);
    let first = pushed.first()?.seq;
    let last = pushed.last()?.seq;
    let contiguous = first == conv.cursor + 1 && last - first + 1 == pushed.len() as u64;
    let plain = pushed
        .iter()
        .all(|e| e.kind == EntryKind::Application && e.epoch == conv.read_epoch);
    (contiguous && plain).then_some(samizdat_proto::Entries {
        entries: pushed,
        current_epoch: conv.read_epoch,
        next_token_hash: None,
        last_seq: last,
    })
}
