//! Sending: every outgoing payload is stored as pending before the relay sees it (text in
//! `messages`, other bodies in `outbox`) and retried until acknowledged or refused for good.

use super::*;

/// An outgoing update that could not reach the relay is stored and retried by the next
/// sync: for the caller that is success.
pub(super) fn queued<T>(r: Result<T>) -> Result<()> {
    match r {
        Ok(_) | Err(Error::RelayUnreachable(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// A text message of ours rebuilt from its `messages` row (to send it again), with the
/// message it answers and whether it was forwarded (read through `conn`, which the caller
/// holds).
pub(super) fn text_payload(
    conn: &crate::store::Conn<'_>,
    id: &[u8],
    text: String,
    sent_at: i64,
    expires_in: Option<i64>,
    attachment: Option<String>,
) -> Result<Payload> {
    let (reply_id, reply_hash, forwarded): (Option<Vec<u8>>, Option<Vec<u8>>, bool) = conn
        .query_row(
            "SELECT reply_to, reply_hash, forwarded FROM messages WHERE id = ?1",
            params![id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?
        .unwrap_or((None, None, false));
    let reply_to = match (reply_id, reply_hash) {
        (Some(id), Some(hash)) => Some(crate::payload::MessageRef {
            id: Id::from_slice(&id).map_err(|_| Error::Storage("corrupt reply id".into()))?,
            hash: Bytes(hash),
        }),
        _ => None,
    };
    Ok(Payload {
        unknown: None,
        id: Id::from_slice(id).map_err(|_| Error::Storage("corrupt message id".into()))?,
        expires_in: expires_in.map(|e| e.max(0) as u64),
        sent_at: sent_at as u64,
        body: Body::Text {
            text,
            attachment: attachment.and_then(|a| serde_json::from_str(&a).ok()),
            reply_to,
            forwarded,
        },
    })
}

impl Profile {
    /// Send a text message to a contact or group. The message is stored before the relay sees
    /// it: when the relay cannot be reached the error says so and the message stays queued
    /// (retried by the next sync).
    pub async fn send(&mut self, id: &ConversationId, text: &str) -> Result<MessageId> {
        self.send_text(id, text, None, false).await
    }

    /// [`Profile::send`], answering `reply_to` (a message of the same conversation; the
    /// receivers show it quoted) or marked as passed on from elsewhere (`forwarded`).
    pub async fn send_text(
        &mut self,
        id: &ConversationId,
        text: &str,
        reply_to: Option<&MessageId>,
        forwarded: bool,
    ) -> Result<MessageId> {
        if text.is_empty() {
            return Err(Error::Usage("the message is empty".into()));
        }
        if text.len() > MAX_TEXT {
            return Err(Error::Usage(format!(
                "the message is longer than {MAX_TEXT} bytes"
            )));
        }
        let conv = self.conv(id)?;
        self.check_not_blocked(&conv)?;
        let reply_to = match reply_to {
            Some(m) => Some(self.reference_in(&conv, m)?),
            None => None,
        };
        // What was typed is now a message (stored before it is sent): no draft of it stays.
        self.clear_draft(&conv.group_id)?;
        let body = Body::Text {
            text: text.to_string(),
            attachment: None,
            reply_to,
            forwarded,
        };
        let payload = self.new_message(&conv, body)?;
        self.send_payload(&conv, payload).await
    }

    /// A new message of ours in `conv`: a fresh id, now, and the conversation's timer.
    pub(super) fn new_message(&self, conv: &Conv, body: Body) -> Result<Payload> {
        let timer = self.timer(&conv.group_id)?;
        Ok(Payload {
            unknown: None,
            id: random_id(),
            expires_in: (timer > 0).then_some(timer),
            sent_at: now_millis(),
            body,
        })
    }

    /// A conversation's disappearing-messages timer in seconds (0: off).
    pub(super) fn timer(&self, group: &Id) -> Result<u64> {
        let secs: i64 = self.db.conn().query_row(
            "SELECT timer_secs FROM conversations WHERE group_id = ?1",
            params![group.as_bytes()],
            |r| r.get(0),
        )?;
        Ok(secs.max(0) as u64)
    }

    /// Set the disappearing-messages timer for everyone in the conversation (0: off); the
    /// change is sent in the conversation (queued when the relay is unreachable).
    pub async fn set_timer(&mut self, id: &ConversationId, secs: u64) -> Result<()> {
        if secs > 365 * 24 * 3600 {
            return Err(Error::Usage("the timer can be at most a year".into()));
        }
        let conv = self.conv(id)?;
        self.db.transaction(|tx| {
            tx.conn().execute(
                "UPDATE conversations SET timer_secs = ?2 WHERE group_id = ?1",
                params![conv.group_id.as_bytes(), secs as i64],
            )?;
            let e = Event::TimerSet {
                conversation_id: ConversationId::from_id(conv.group_id),
                conversation: conv.name.clone(),
                who: "me".into(),
                secs,
            };
            self.emit(e)
        })?;
        queued(self.send_body(&conv, Body::Timer { secs }).await)
    }

    /// Delete every message whose time is up (row and text; `secure_delete` overwrites them).
    pub(super) fn expire_messages(&self) -> Result<usize> {
        let now = now_millis() as i64;
        let files: Vec<String> = {
            let conn = self.db.conn();
            let mut stmt = conn.prepare(
                "SELECT attachment_file FROM messages
                 WHERE expires_at IS NOT NULL AND expires_at <= ?1 AND attachment_file IS NOT NULL",
            )?;
            stmt.query_map(params![now], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?
        };
        let n = self.db.conn().execute(
            "DELETE FROM messages WHERE expires_at IS NOT NULL AND expires_at <= ?1",
            params![now],
        )?;
        if n > 0 {
            // Their words leave the search index's pages too (the rows' reactions went with
            // them: a trigger).
            self.compact_search()?;
        }
        self.wipe_attachment_files(files);
        Ok(n)
    }

    /// Send a refused message again, as a new message; the failed one is removed once its
    /// copy is stored. Returns the new message id.
    pub async fn message_retry(&mut self, message_id: &MessageId) -> Result<MessageId> {
        let raw = message_id.as_bytes();
        let row: Option<(Vec<u8>, String, bool, Option<String>, Option<String>)> = self
            .db
            .conn()
            .query_row(
                "SELECT group_id, body, failed IS NOT NULL AND outgoing = 1, attachment, attachment_file
                 FROM messages WHERE id = ?1",
                params![raw],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()?;
        let Some((gid, text, failed, attachment, file)) = row else {
            return Err(Error::NotFound(format!("no message {message_id}")));
        };
        if !failed {
            return Err(Error::Usage(
                "only a message of yours that failed can be sent again".into(),
            ));
        }
        let gid = Id::from_slice(&gid).map_err(|_| Error::Storage("corrupt group id".into()))?;
        let conv = ConversationId::from_id(gid);
        // The conversation is still there (a typed not-found otherwise).
        self.conv(&conv)?;
        let resent = match (attachment, file) {
            // The blob is still on the relay: send the same attachment again, moving our
            // copy to the new message.
            (Some(json), Some(file)) => {
                let att = serde_json::from_str(&json)
                    .map_err(|e| Error::Storage(format!("corrupt attachment record: {e}")))?;
                let path = self.attachments_dir()?.join(file);
                self.send_attachment(&conv, &text, att, &path).await
            }
            _ => self.send(&conv, &text).await,
        };
        let new_id = match resent {
            Ok(id) => id,
            // Stored and queued: still a successful retry.
            Err(Error::RelayUnreachable(_)) => self.newest_own_message(&gid)?,
            Err(e) => return Err(e),
        };
        self.db
            .conn()
            .execute("DELETE FROM messages WHERE id = ?1", params![raw])?;
        Ok(new_id)
    }

    /// The id of the conversation a message belongs to.
    pub fn conversation_of_message(&self, message_id: &MessageId) -> Result<ConversationId> {
        let raw = message_id.as_bytes();
        let gid: Vec<u8> = self
            .db
            .conn()
            .query_row(
                "SELECT group_id FROM messages WHERE id = ?1",
                params![raw],
                |r| r.get(0),
            )
            .optional()?
            .ok_or_else(|| Error::NotFound(format!("no message {message_id}")))?;
        ConversationId::from_slice(&gid)
    }

    fn newest_own_message(&self, gid: &Id) -> Result<MessageId> {
        let id: Vec<u8> = self.db.conn().query_row(
            "SELECT id FROM messages WHERE group_id = ?1 AND outgoing = 1 ORDER BY rowid DESC LIMIT 1",
            params![gid.as_bytes()],
            |r| r.get(0),
        )?;
        MessageId::from_slice(&id)
    }

    pub(super) async fn send_body(&mut self, conv: &Conv, body: Body) -> Result<MessageId> {
        let payload = Payload {
            unknown: None,
            id: random_id(),
            expires_in: None,
            sent_at: now_millis(),
            body,
        };
        self.send_payload(conv, payload).await
    }

    /// Encrypt and append one payload, storing it as pending first (text in `messages`,
    /// every other body in `outbox`), so nothing is lost when the relay is unreachable.
    pub(super) async fn send_payload(
        &mut self,
        conv: &Conv,
        payload: Payload,
    ) -> Result<MessageId> {
        if !conv.active {
            return Err(Error::NotMember(format!(
                "you are no longer a member of {:?}",
                conv.name
            )));
        }
        let plain = payload.encode();
        // Catch up first, unless the service follows this log live: then what we have is
        // current as far as anyone can know, and the append's compare-and-set (a stale epoch
        // reads and retries) covers the rest.
        let synced = if self.live_logs.contains(&conv.log) {
            Ok(Vec::new())
        } else {
            self.sync_group(&conv.group_id).await
        };
        match synced {
            Ok(_) => {}
            Err(e @ Error::RelayUnreachable(_)) => {
                // Store it all the same, encrypted for the epoch we know: the next sync sends
                // it (re-encrypting it if the group has moved on meanwhile).
                let mut group = self.mls.load(conv.group_id.as_bytes())?;
                let epoch = group.epoch();
                let ct = group.encrypt(&plain)?;
                self.db.transaction(|tx| {
                    group.save()?;
                    self.queue(tx, conv, &payload, &plain, &random_id(), &ct, epoch)
                })?;
                return Err(e);
            }
            Err(e) => return Err(e),
        }
        if !matches!(payload.body, Body::Leave | Body::Refused { .. })
            && !self.pending_removals(&conv.group_id)?.is_empty()
        {
            // Members asked to leave (now or in an earlier sync that could not finish):
            // remove them before saying anything new, so a leaver's keys cannot read it.
            Box::pin(self.commit_pending_removals(Some(&conv.group_id))).await?;
        }
        let relay = self.conv_relay(conv)?;
        for _ in 0..MAX_ATTEMPTS {
            let mut group = self.mls.load(conv.group_id.as_bytes())?;
            let epoch = group.epoch();
            let ct = group.encrypt(&plain)?;
            let token = group.token()?;
            let request_id = random_id();
            // Store the ratchet step and the pending message before the relay sees it: a
            // crash after this point retries the identical request.
            self.db.transaction(|tx| {
                group.save()?;
                self.queue(tx, conv, &payload, &plain, &request_id, &ct, epoch)
            })?;
            crash_point("send-before-append");
            match relay
                .append_application(request_id, &conv.log, &token, epoch, ct)
                .await
            {
                Ok(seq) => {
                    crash_point("send-after-append");
                    self.mark_sent(conv, &payload, seq)?;
                    return Ok(MessageId::from_id(payload.id));
                }
                Err(Error::Relay {
                    code: ErrorCode::StaleEpoch,
                    ..
                }) => {
                    let synced = self.sync_group(&conv.group_id).await;
                    synced?;
                }
                Err(e @ Error::RelayUnreachable(_)) => {
                    // The message stays queued; the next sync or send retries it.
                    return Err(e);
                }
                Err(e) => {
                    self.mark_failed(conv, &payload, &e)?;
                    return Err(e);
                }
            }
        }
        Err(Error::Busy(
            "the group kept changing while sending; the message stays queued and is retried by the next sync".into(),
        ))
    }

    /// Store one encrypted attempt of `payload` as pending (inside the caller's transaction).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn queue(
        &self,
        tx: &Tx,
        conv: &Conv,
        payload: &Payload,
        plain: &[u8],
        request_id: &Id,
        ct: &[u8],
        epoch: u64,
    ) -> Result<()> {
        let conn = tx.conn();
        if let Body::Text {
            text,
            attachment,
            reply_to,
            forwarded,
        } = &payload.body
        {
            let hash = super::actions::content_hash(
                &conv.group_id,
                &self.fingerprint,
                &payload.id,
                payload.sent_at,
                text,
                attachment.as_ref(),
            );
            let attachment = attachment
                .as_ref()
                .map(serde_json::to_string)
                .transpose()
                .map_err(|e| Error::Storage(e.to_string()))?;
            let existed: i64 = conn.query_row(
                "SELECT COUNT(*) FROM messages WHERE id = ?1",
                params![payload.id.as_bytes()],
                |r| r.get(0),
            )?;
            conn.execute(
                "INSERT INTO messages (id, group_id, sender_fp, outgoing, body, sent_at, received_at, request_id, pending_body, pending_epoch, expires_in, expires_at, attachment, content_hash, reply_to, reply_hash, forwarded)
                 VALUES (?1, ?2, ?3, 1, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)
                 ON CONFLICT(id) DO UPDATE SET request_id = excluded.request_id, pending_body = excluded.pending_body, pending_epoch = excluded.pending_epoch",
                params![payload.id.as_bytes(), conv.group_id.as_bytes(), &self.fingerprint[..], text, payload.sent_at as i64, now_millis() as i64, request_id.as_bytes(), ct, epoch as i64,
                    payload.expires_in.map(|e| e as i64),
                    payload.expires_in.map(|e| payload.sent_at.saturating_add(e.saturating_mul(1000)) as i64),
                    attachment, &hash[..], reply_to.as_ref().map(|r| r.id.as_bytes().to_vec()),
                    reply_to.as_ref().map(|r| r.hash.0.clone()), forwarded],
            )?;
            drop(conn);
            // Reported once, on the first attempt (a re-encryption keeps the id).
            if existed == 0 {
                self.emit(Event::MessageQueued {
                    conversation_id: ConversationId::from_id(conv.group_id),
                    conversation: conv.name.clone(),
                    id: MessageId::from_id(payload.id),
                })?;
            }
        } else {
            conn.execute(
                "INSERT INTO outbox (id, group_id, payload, request_id, pending_body, pending_epoch, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(id) DO UPDATE SET request_id = excluded.request_id, pending_body = excluded.pending_body, pending_epoch = excluded.pending_epoch",
                params![payload.id.as_bytes(), conv.group_id.as_bytes(), plain, request_id.as_bytes(), ct, epoch as i64, now_millis() as i64],
            )?;
        }
        Ok(())
    }

    /// The relay acknowledged our message at `seq`: remember the position as our own (MLS
    /// cannot decrypt its own messages) and clear the pending request, in one transaction.
    pub(super) fn mark_sent(&self, conv: &Conv, payload: &Payload, seq: u64) -> Result<()> {
        // Lost to a power failure, the message is pending again: its retry repeats the
        // request id and the relay answers with the same position.
        self.db.transaction_recoverable(|tx| {
            let conn = tx.conn();
            conn.execute(
                "INSERT OR IGNORE INTO own_entries (group_id, seq) VALUES (?1, ?2)",
                params![conv.group_id.as_bytes(), seq as i64],
            )?;
            if matches!(payload.body, Body::Text { .. }) {
                let changed = conn.execute(
                    "UPDATE messages SET seq = ?2, pending_body = NULL, pending_epoch = NULL WHERE id = ?1 AND seq IS NULL",
                    params![payload.id.as_bytes(), (conv.seq_base + seq) as i64],
                )?;
                drop(conn);
                if changed == 1 {
                    self.emit(
                        Event::MessageDelivered {
                            conversation_id: ConversationId::from_id(conv.group_id),
                            conversation: conv.name.clone(),
                            id: MessageId::from_id(payload.id),
                            position: seq,
                        },
                    )?;
                }
            } else {
                conn.execute(
                    "DELETE FROM outbox WHERE id = ?1",
                    params![payload.id.as_bytes()],
                )?;
            }
            Ok(())
        })
    }

    /// The relay refused our message for good: a text message stays in the history marked as
    /// failed (with the reason); other bodies are dropped with a notice.
    pub(super) fn mark_failed(
        &mut self,
        conv: &Conv,
        payload: &Payload,
        why: &Error,
    ) -> Result<()> {
        self.db.transaction(|tx| {
            if matches!(payload.body, Body::Text { .. }) {
                tx.conn().execute(
                    "UPDATE messages SET pending_body = NULL, pending_epoch = NULL, failed = ?2 WHERE id = ?1",
                    params![
                        payload.id.as_bytes(),
                        serde_json::to_string(&Problem::from(why))
                            .map_err(|e| Error::Storage(e.to_string()))?
                    ],
                )?;
                self.emit(
                    Event::MessageFailed {
                        conversation_id: ConversationId::from_id(conv.group_id),
                        conversation: conv.name.clone(),
                        id: MessageId::from_id(payload.id),
                        error: Problem::from(why),
                    },
                )
            } else {
                tx.conn().execute(
                    "DELETE FROM outbox WHERE id = ?1",
                    params![payload.id.as_bytes()],
                )?;
                self.emit(
                    Event::notice(
                        Some(conv),
                        Notice::QueuedUpdateRefused {
                            error: Problem::from(why),
                        },
                    ),
                )
            }
        })?;
        Ok(())
    }

    /// Retry outgoing messages and updates that the relay has not acknowledged, oldest first.
    pub(super) async fn flush_pending(&mut self, conv: &Conv) -> Result<()> {
        let pending: Vec<(Vec<u8>, Vec<u8>, i64, Payload)> = {
            let conn = self.db.conn();
            let mut stmt = conn.prepare(
                "SELECT request_id, pending_body, pending_epoch, id, body, sent_at, NULL, received_at, expires_in, attachment FROM messages
                 WHERE group_id = ?1 AND pending_body IS NOT NULL
                 UNION ALL
                 SELECT request_id, pending_body, pending_epoch, id, NULL, 0, payload, created_at, NULL, NULL FROM outbox
                 WHERE group_id = ?1
                 ORDER BY 8",
            )?;
            let rows = stmt
                .query_map(params![conv.group_id.as_bytes()], |r| {
                    Ok((
                        r.get::<_, Vec<u8>>(0)?,
                        r.get::<_, Vec<u8>>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, Vec<u8>>(3)?,
                        r.get::<_, Option<String>>(4)?,
                        r.get::<_, i64>(5)?,
                        r.get::<_, Option<Vec<u8>>>(6)?,
                        r.get::<_, Option<i64>>(8)?,
                        r.get::<_, Option<String>>(9)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut out = Vec::with_capacity(rows.len());
            for (request_id, body, epoch, id, text, sent_at, plain, expires_in, attachment) in rows
            {
                let payload = match (text, plain) {
                    (Some(text), _) => {
                        text_payload(&conn, &id, text, sent_at, expires_in, attachment)?
                    }
                    (None, Some(plain)) => Payload::decode(&plain)?,
                    (None, None) => continue,
                };
                out.push((request_id, body, epoch, payload));
            }
            out
        };
        let relay = self.conv_relay(conv)?;
        for (request_id, body, epoch, payload) in pending {
            let request_id = Id::from_slice(&request_id)
                .map_err(|_| Error::Storage("corrupt request id".into()))?;
            let token = self.token(&conv.group_id, epoch as u64)?;
            match relay
                .append_application(request_id, &conv.log, &token, epoch as u64, body)
                .await
            {
                Ok(seq) => self.mark_sent(conv, &payload, seq)?,
                Err(Error::Relay {
                    code: ErrorCode::StaleEpoch,
                    ..
                }) => {
                    // Encrypted for an epoch that is over: re-encrypt the same payload (same
                    // id) now.
                    match self.send_payload(conv, payload.clone()).await {
                        Ok(_) | Err(Error::Relay { .. }) => {}
                        Err(e @ Error::NotMember(_)) => self.mark_failed(conv, &payload, &e)?,
                        Err(e) => return Err(e),
                    }
                }
                Err(e @ Error::RelayUnreachable(_)) => return Err(e),
                Err(e) => self.mark_failed(conv, &payload, &e)?,
            }
        }
        Ok(())
    }

    /// The client for `url`, kept for the life of the profile (one connection pool per relay;
    /// with isolation, one per relay for everything that is not a conversation's log:
    /// KeyPackage claims, drops into other people's mailboxes).
    /// From now on, every relay client appends application entries over a WebSocket it holds
    /// (one per relay and proxy identity), falling back to HTTP: for a long-running service.
    pub fn hold_append_sockets(&mut self) {
        self.ws_appends = true;
        self.relay = self.relay.clone().with_ws_appends();
        self.relays
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    pub(super) fn relay_for(&self, url: &str) -> Result<RelayClient> {
        let key = crate::relay_client::normalize_spec(url)?;
        if key == self.relay.base() && !self.net.isolate {
            return Ok(self.relay.clone());
        }
        self.client(&key, format!("relay:{key}").as_bytes())
    }

    /// The client for a conversation's log: with isolation, its own connections and proxy
    /// identity, never shared with the mailbox or another conversation.
    pub(crate) fn conv_relay(&self, conv: &Conv) -> Result<RelayClient> {
        if !self.net.isolate {
            return self.relay_for(&conv.relay);
        }
        self.conv_client_for(&conv.relay, &conv.group_id)
    }

    /// The identity of the mailbox's connections.
    pub(crate) fn mailbox_identity(&self) -> Option<String> {
        super::isolation_identity(&self.net, &self.isolation_salt, b"mailbox")
    }

    /// A client for `url` on behalf of a conversation (its attachments): under the
    /// conversation's identity when isolating.
    pub(crate) fn conv_client_for(&self, url: &str, group: &Id) -> Result<RelayClient> {
        if !self.net.isolate {
            return self.relay_for(url);
        }
        let key = crate::relay_client::normalize_spec(url)?;
        self.client(&key, group.as_bytes())
    }

    fn client(&self, url: &str, purpose: &[u8]) -> Result<RelayClient> {
        // Isolating, a conversation's own client speaks over its WebSocket, and the other
        // identities (drops to someone's mailbox, KeyPackage claims) are used now and then:
        // their HTTP requests (a full read every few minutes, files) open a connection each
        // rather than hold one beside the sockets (issue 33: ≤ 1 socket per conversation).
        let keep_idle = !self.net.isolating();
        let identity = super::isolation_identity(&self.net, &self.isolation_salt, purpose);
        let cache = format!("{url}|{}", identity.as_deref().unwrap_or(""));
        let mut relays = self.relays.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = relays.get(&cache) {
            return Ok(r.clone());
        }
        let mut r = if keep_idle {
            RelayClient::with_net(url, &self.net, identity.as_deref())?
        } else {
            RelayClient::with_net_unpooled(url, &self.net, identity.as_deref())?
        };
        if self.ws_appends {
            r = r.with_ws_appends();
        }
        relays.insert(cache, r.clone());
        Ok(r)
    }
}
