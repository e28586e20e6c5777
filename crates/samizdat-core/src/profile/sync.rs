//! Sync: the mailbox (Welcomes) and each conversation's log, processed strictly in order.

use super::*;

impl Profile {
    /// Fetch and process the mailbox and every conversation; acknowledge what was stored.
    /// Answers what it reported, read back from the event log (on an error, what it reported
    /// before is in the log too).
    pub async fn sync(&mut self) -> Result<Vec<Event>> {
        let since = self.last_event()?;
        self.sync_quietly().await?;
        self.events_since(since)
    }

    /// [`Profile::sync`] without reading back what it reported: for the service, which
    /// publishes from the event log anyway.
    pub async fn sync_quietly(&mut self) -> Result<()> {
        self.expire_messages()?;
        let home_down = self.sync_mailboxes().await?;
        self.sync_conversations().await?;
        self.sync_devices_and_repairs().await?;
        self.send_receipts_quietly().await;
        self.finish_calls_quietly().await;
        self.channel_admin_work_quietly().await;
        self.sync_channels_quietly().await;
        match home_down {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Read our mailboxes (the home relay's, then the others'), keep the KeyPackage pools full.
    /// Returns the home relay's error when it could not be reached (the rest still ran).
    async fn sync_mailboxes(&mut self) -> Result<Option<Error>> {
        let mut home_down = None;
        let mut newly_down = false;
        match self.sync_mailbox().await {
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
        let reached = self.sync_other_mailboxes().await?;
        if reached > 0
            && let Some(e) = home_down.take()
            && newly_down
        {
            // Another of our relays answered: this sync worked; say (once) which did not.
            self.emit(Event::notice(
                None,
                Notice::RelayUnreachable {
                    error: Problem::from(&e),
                },
            ))?;
        }
        if !self.down_since.contains_key(self.relay.base()) {
            match self.maintain_key_packages().await {
                Ok(()) | Err(Error::RelayUnreachable(_)) => {}
                Err(e) => return Err(e),
            }
            self.maintain_other_pools().await?;
        }
        Ok(home_down)
    }

    /// Owed Welcomes and adds, queued sends, then every active conversation's log; a relay
    /// down for too long moves its conversations; left groups lose their keys.
    async fn sync_conversations(&mut self) -> Result<()> {
        // Welcomes owed to members on other relays, and adds waiting for one, when due.
        self.flush_drops(None).await?;
        self.resume_adds().await?;
        // Leave notices queued before we marked a conversation as left.
        for conv in self.left_with_outbox()? {
            match self.flush_pending(&conv).await {
                Ok(()) | Err(Error::RelayUnreachable(_)) => {}
                Err(e) => return Err(e),
            }
            self.forget_keys_if_left(&conv.group_id)?;
        }
        let convs = self.active_convs()?;
        for conv in convs {
            // Queued sends first: once acknowledged they are known as our own entries, so
            // the log read below skips them instead of failing to decrypt them.
            let flushed = self.flush_pending(&conv).await;
            if self.poll_only && flushed.is_ok() && self.live_logs.contains(&conv.log) {
                // Its socket pushes what arrives: nothing to read.
                continue;
            }
            let result = match flushed {
                Ok(()) => self.sync_group(&conv.group_id).await,
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
                }
                Err(Error::RelayUnreachable(_)) => {
                    self.relay_down(&conv.relay);
                    // Down for longer than the profile allows: move the conversation.
                    self.auto_move(&conv).await?;
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
                    self.emit(Event::notice(Some(&conv), Notice::LostSyncToken))?;
                }
                Err(e) => self.emit(Event::notice(
                    Some(&conv),
                    Notice::SyncFailed {
                        error: Problem::from(&e),
                    },
                ))?,
            }
        }
        // Groups left on another device of ours (read here or by a push): their keys go
        // once nothing of ours is queued for them.
        for conv in self.convs_where(
            "active = 0 AND status = 'left' AND group_id IN (SELECT group_id FROM mls_groups)",
        )? {
            self.forget_keys_if_left(&conv.group_id)?;
        }
        Ok(())
    }

    /// Our other devices (links, history, invitations, state), then repairs: locked logs
    /// re-created, pending removals committed, Welcomes resent, refusals finished.
    async fn sync_devices_and_repairs(&mut self) -> Result<()> {
        // Devices asking to be linked, and a history another device of ours sent.
        match self.sync_links().await {
            Ok(()) | Err(Error::RelayUnreachable(_)) => {}
            Err(e) => self.emit(Event::notice(
                None,
                Notice::LinkFailed {
                    error: Problem::from(&e),
                },
            ))?,
        }
        match self.import_history().await {
            Ok(_) | Err(Error::RelayUnreachable(_)) => {}
            Err(e) => {
                self.db.delete_setting(Setting::HistoryArchive)?;
                self.db.delete_setting(Setting::StateArchive)?;
                self.emit(Event::notice(
                    None,
                    Notice::HistoryUnreadable {
                        error: Problem::from(&e),
                    },
                ))?
            }
        }
        match self.answer_invitations().await {
            Ok(()) | Err(Error::RelayUnreachable(_)) => {}
            Err(e) => return Err(e),
        }
        match self.send_state_if_changed().await {
            Ok(()) | Err(Error::RelayUnreachable(_)) => {}
            Err(e) => self.emit(Event::notice(
                None,
                Notice::OtherDevicesNotTold {
                    error: Problem::from(&e),
                },
            ))?,
        }
        // Logs a member locked with a false token (docs/THREAT-MODEL.md, Part A, finding 6): re-created, then the culprit is
        // removed by the step below.
        match self.recover_locked_logs().await {
            Ok(()) | Err(Error::RelayUnreachable(_)) => {}
            Err(e) => self.emit(Event::notice(
                None,
                Notice::LockedLogNotRecreated {
                    error: Problem::from(&e),
                },
            ))?,
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
        Ok(())
    }

    /// Re-create the logs that a member locked with a false next-token hash (docs/THREAT-MODEL.md, Part A, finding 6) on
    /// their relay, from the epoch we are at: the members follow the move notice, and the
    /// culprit's removal is queued (`commit_pending_removals` makes it on the new log). A
    /// member who already moved it first makes us follow instead (same log id).
    async fn recover_locked_logs(&mut self) -> Result<()> {
        for (key, _) in self.db.settings_of(Family::Recover)? {
            let Setting::Recover(group) = key else {
                continue;
            };
            let Some(conv) = self.conv_by_id(&group)? else {
                self.db.delete_setting(key)?;
                continue;
            };
            if conv.active {
                // Someone else's move reached us first: nothing left to do here.
                self.db.delete_setting(key)?;
                continue;
            }
            let relay = conv.relay.clone();
            let moved = self
                .move_conversation(&ConversationId::from_id(conv.group_id), &relay)
                .await;
            moved?;
            self.db.delete_setting(key)?;
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
    ) -> Result<()> {
        let conv = match self.conv_by_log(log)? {
            Some(c) => c,
            None => match self.conv_by_id(log)? {
                Some(c) => {
                    // Pushed for an older log of this conversation: not what we read now.
                    pushed.clear();
                    c
                }
                None => return Ok(()),
            },
        };
        let group_id = &conv.group_id.clone();
        if !conv.active {
            return Ok(());
        }
        self.flush_pending(&conv).await?;
        self.sync_group_with(group_id, pushed).await?;
        self.flush_pending(&conv).await?;
        self.commit_pending_removals(Some(group_id)).await?;
        self.send_receipts_quietly().await;
        self.finish_calls_quietly().await;
        Ok(())
    }

    pub(super) async fn sync_mailbox(&mut self) -> Result<()> {
        if self.poll_only && self.mailbox_live {
            // Its socket pushes what arrives: nothing to read (and no HTTP connection held
            // open for a read every few seconds).
            return Ok(());
        }
        let relay = self.relay.clone();
        let key = self.mailbox_key.clone();
        let id = self.mailbox;
        self.read_one_mailbox(&relay, &id, &key).await
    }

    /// Read one of our mailboxes: Welcomes (joins or pending invitations) and move notices;
    /// acknowledge what was processed.
    pub(super) async fn read_one_mailbox(
        &mut self,
        relay: &RelayClient,
        mailbox: &Id,
        key: &MailboxKey,
    ) -> Result<()> {
        let msgs = relay.read_mailbox(key, mailbox, 0).await?;
        if msgs.is_empty() {
            return Ok(());
        }
        let mut done = Vec::new();
        let mut joined = Vec::new();
        for m in msgs {
            let taken = match self.open_mailbox_message(&m.body.0).await? {
                Opened::Done => Taken::Done,
                Opened::Retry => Taken::Retry,
                Opened::Welcome(Err(e)) => {
                    let failed = Notice::JoinFailed {
                        error: Problem::from(&e),
                    };
                    self.emit(Event::notice(None, failed))?;
                    Taken::Done
                }
                Opened::Welcome(Ok(w)) => self.take_welcome(w).await?,
            };
            match taken {
                Taken::Done => done.push(m.seq),
                Taken::Joined(group) => {
                    joined.push(group);
                    done.push(m.seq);
                }
                // Not acknowledged: read again once the relay it needs answers.
                Taken::Retry => {}
            }
        }
        // Acknowledge only after the joins are committed locally.
        crash_point("mailbox-before-ack");
        if !done.is_empty() {
            relay.ack(key, mailbox, done).await?;
        }
        if !joined.is_empty() {
            let new = joined;
            self.after_join(new).await?;
        }
        Ok(())
    }

    /// Refill the KeyPackage pool and announce our display name in conversations we just
    /// joined.
    pub(super) async fn after_join(&mut self, new: Vec<Id>) -> Result<()> {
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
                self.announce_in(&conv).await?;
                match self.add_own_devices(&conv).await {
                    Ok(()) | Err(Error::RelayUnreachable(_)) => {}
                    Err(e) => {
                        let text = Notice::OwnDevicesNotAdded {
                            error: Problem::from(&e),
                        };
                        self.emit(Event::notice(Some(&conv), text))?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Read and process a conversation's log from its cursor. Returns members who asked to leave.
    pub(super) async fn sync_group(&mut self, group_id: &Id) -> Result<Vec<Vec<u8>>> {
        self.sync_group_with(group_id, Vec::new()).await
    }

    /// [`Self::sync_group`], starting from entries the relay pushed when they can stand for
    /// the first read ([`pushed_page`]); then nothing more is read (what follows is pushed
    /// too, or read by the next sync).
    async fn sync_group_with(
        &mut self,
        group_id: &Id,
        pushed: Vec<samizdat_proto::Entry>,
    ) -> Result<Vec<Vec<u8>>> {
        let mut leavers = Vec::new();
        let Some(mut conv) = self.conv_by_id(group_id)? else {
            return Ok(leavers);
        };
        let mut pushed = pushed_page(&conv, pushed);
        let from_push = pushed.is_some();
        let relay = self.conv_relay(&conv)?;
        let own = self.own_entries_after(&conv)?;
        let mut group: Option<mls::Group> = None;
        let start = conv.cursor;
        let mut last_page = 0usize;
        while conv.active {
            if last_page >= PROGRESS_PAGE {
                // Another page: a long catch-up, worth showing.
                let e = Event::SyncProgress {
                    conversation_id: ConversationId::from_id(*group_id),
                    conversation: conv.name.clone(),
                    done: conv.cursor - start,
                };
                self.emit(e)?;
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
                    self.emit(Event::notice(Some(&conv), Notice::EntriesExpired))?;
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
                    self.emit(Event::notice(Some(&conv), missing))?;
                }
                let mut next_epoch = conv.read_epoch;
                if own.contains(&entry.seq) {
                    if entry.kind == EntryKind::Commit {
                        next_epoch = entry.epoch + 1;
                    }
                    self.db.transaction_recoverable(|_| {
                        self.set_cursor(&conv, entry.seq, next_epoch)
                    })?;
                    conv.cursor = entry.seq;
                    conv.read_epoch = next_epoch;
                    continue;
                }
                let left = self.apply_entry(&mut conv, &mut group, entry, &next_hash)?;
                leavers.extend(left);
            }
        }
        // The log was read to its end: a commit of ours still pending was not taken.
        if conv.active {
            self.clear_stale_commit(group_id)?;
        }
        Ok(leavers)
    }

    /// What one mailbox message is: a Welcome (whole or not), or a device-link answer or a
    /// move notice (handled here).
    async fn open_mailbox_message(&mut self, body: &[u8]) -> Result<Opened> {
        if let Some(part) = WelcomePart::decode(body) {
            return Ok(Opened::Welcome(part.and_then(Arrived::part)));
        }
        match Envelope::decode(body) {
            // A device-link answer arriving late (`device join` reads its own).
            Ok(Envelope::Device { sealed }) => {
                self.device_envelope(&sealed.0)?;
                Ok(Opened::Done)
            }
            Ok(Envelope::Move { sealed }) => {
                if let Err(e) = self.receive_move(&sealed.0).await {
                    if matches!(e, Error::RelayUnreachable(_)) {
                        return Ok(Opened::Retry);
                    }
                    let failed = Notice::MoveNotFollowed {
                        error: Problem::from(&e),
                    };
                    self.emit(Event::notice(None, failed))?;
                }
                Ok(Opened::Done)
            }
            Ok(Envelope::Welcome {
                group_id,
                relay,
                welcome,
                invite_mac,
                log,
            }) => Ok(Opened::Welcome(Ok(Arrived {
                group_id,
                relay,
                log,
                invite_mac: invite_mac.map(|m| m.0),
                stored: welcome.0,
            }))),
            Err(_) => {
                self.emit(Event::notice(None, Notice::MailboxMessageUnreadable))?;
                Ok(Opened::Done)
            }
        }
    }

    /// A whole Welcome from the mailbox: checked, screened (a stranger's waits as an
    /// invitation), joined.
    async fn take_welcome(&mut self, w: Arrived) -> Result<Taken> {
        let join_failed = |e: &Error| {
            Event::notice(
                None,
                Notice::JoinFailed {
                    error: Problem::from(e),
                },
            )
        };
        let w = match self.signed_place(w) {
            Ok(w) => w,
            Err(e) => {
                self.emit(join_failed(&e))?;
                return Ok(Taken::Done);
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
                return Ok(Taken::Done);
            }
        }
        // From a linked device of a contact: read our conversation with them first,
        // so the newest device list they sent (a revocation, say) is known.
        self.read_lists_before(&w).await;
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
            Ok(Screened::Join) => self.join_arrived(&w).await.map(Some),
            Ok(Screened::Pending(Some(event))) => self.emit(*event).map(|()| None),
            Ok(Screened::Pending(None)) => Ok(None),
            Err(e) => Err(e),
        };
        match outcome {
            Ok(Some(_)) => Ok(Taken::Joined(w.group_id)),
            Ok(None) => Ok(Taken::Done),
            // The group's relay holds the tree: read the Welcome again once it answers.
            Err(Error::RelayUnreachable(_)) => Ok(Taken::Retry),
            Err(e) => {
                self.emit(join_failed(&e))?;
                Ok(Taken::Done)
            }
        }
    }

    pub(super) fn set_cursor(&self, conv: &Conv, seq: u64, epoch: u64) -> Result<()> {
        self.db.conn().execute(
            "UPDATE conversations SET cursor = ?2, read_epoch = ?3 WHERE group_id = ?1",
            params![conv.group_id.as_bytes(), seq as i64, epoch as i64],
        )?;
        Ok(())
    }
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

/// One mailbox message, opened.
enum Opened {
    /// Handled (or unreadable, and said so): acknowledge it.
    Done,
    /// Needs a relay that did not answer: leave it for the next read.
    Retry,
    /// A Welcome, whole, or why it could not be put together.
    Welcome(Result<Arrived>),
}

/// What became of a Welcome.
enum Taken {
    Done,
    /// Joined this group.
    Joined(Id),
    Retry,
}
