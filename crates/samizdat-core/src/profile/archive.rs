//! What the self group carries between a person's devices: the state (contacts, names,
//! settings), invitations answered elsewhere, and the one-time history archive a new device
//! imports.

use super::*;

/// The largest history archive a new device reads (sealed).
pub(super) const MAX_ARCHIVE: u64 = 1 << 30;

/// The history a new device receives once, sealed under a one-time key.
#[derive(Debug, Default, Serialize, serde::Deserialize)]
pub(super) struct Archive {
    contacts: Vec<ArchivedContact>,
    conversations: Vec<ArchivedConversation>,
    messages: Vec<ArchivedMessage>,
    /// The device that made it (its pending invitations are below).
    #[serde(default)]
    device: Bytes,
    /// Invitations from strangers waiting on that device.
    #[serde(default)]
    invitations: Vec<ArchivedInvitation>,
    /// The settings every device of the person shares (`Setting::SHARED`).
    #[serde(default)]
    settings: Vec<(String, Bytes)>,
}

/// Settings that follow the person to every device (the proxy and the relays do not: they
/// are about where a device is).

#[derive(Debug, Serialize, serde::Deserialize)]
pub(super) struct ArchivedInvitation {
    group_id: Bytes,
    relay: String,
    committer: Bytes,
    members: i64,
    claims_existing: Option<String>,
    received_at: i64,
}

#[derive(Debug, Serialize, serde::Deserialize)]
pub(super) struct ArchivedContact {
    alias: String,
    fingerprint: Bytes,
    display_name: String,
    relay: Option<String>,
    mailbox_id: Option<Bytes>,
    group_id: Option<Bytes>,
    verified: bool,
    created_at: i64,
}

#[derive(Debug, Serialize, serde::Deserialize)]
pub(super) struct ArchivedConversation {
    group_id: Bytes,
    kind: String,
    name: String,
    relay: String,
    active: bool,
    timer_secs: i64,
    seq_base: i64,
    created_at: i64,
    /// Messages up to this position are read.
    #[serde(default)]
    read_seq: Option<i64>,
}

#[derive(Debug, Serialize, serde::Deserialize)]
pub(super) struct ArchivedMessage {
    id: Bytes,
    group_id: Bytes,
    seq: Option<i64>,
    sender_fp: Bytes,
    outgoing: bool,
    body: String,
    sent_at: i64,
    received_at: i64,
    expires_in: Option<i64>,
    expires_at: Option<i64>,
    attachment: Option<String>,
}

/// Seal an archive (JSON) padded with spaces, which JSON ignores, to a Padmé size (as
/// attachments are, 4 KiB at least): the relay learns the size of a person's history only
/// within a few percent (security review 3, L8).
pub(super) fn seal_archive(key: &[u8], plain: &[u8]) -> Result<Vec<u8>> {
    let padded_len = usize::try_from(crate::attachment::padded_len(plain.len() as u64))
        .map_err(|_| Error::Storage("the archive is too large".into()))?;
    let mut padded = zeroize::Zeroizing::new(Vec::with_capacity(padded_len));
    padded.extend_from_slice(plain);
    padded.resize(padded_len, b' ');
    crate::welcome::seal_tree(key, &padded)
}

pub(super) fn open_archive(key: &[u8], sealed: &[u8]) -> Result<Vec<u8>> {
    crate::welcome::open_tree(key, sealed)
        .map_err(|_| Error::Integrity("the history archive does not open with its key".into()))
}

impl Profile {
    /// Seal an archive under a fresh key and store it once as a blob on our relay; what the
    /// self group message carries. `device`: the one device it is for (empty: all).
    pub(super) async fn upload_archive(
        &self,
        archive: &Archive,
        device: &[u8],
    ) -> Result<ArchiveRef> {
        let plain = zeroize::Zeroizing::new(
            serde_json::to_vec(archive).map_err(|e| Error::Storage(e.to_string()))?,
        );
        let mut key = zeroize::Zeroizing::new(vec![0u8; 32]);
        aws_lc_rs::rand::fill(&mut key)
            .map_err(|_| Error::Crypto("the system random number generator failed".into()))?;
        let sealed = seal_archive(&key, &plain)?;
        let owner = crate::relay_client::BlobOwner::Mailbox {
            mailbox: self.mailbox,
            key: &self.mailbox_key,
        };
        let blob = self.relay.put_blob(&sealed, owner).await?;
        Ok(ArchiveRef {
            relay: self.relay.base().to_string(),
            blob,
            len: sealed.len() as u64,
            key: Bytes(key.to_vec()),
            device: Bytes(device.to_vec()),
        })
    }

    /// Fetch and open an archive another device of ours stored.
    pub(super) async fn fetch_archive(&self, r: &ArchiveRef) -> Result<Archive> {
        let sealed = self
            .relay_for(&r.relay)?
            .get_blob_bytes(&r.blob, r.len, MAX_ARCHIVE)
            .await?;
        let plain = zeroize::Zeroizing::new(open_archive(&r.key.0, &sealed)?);
        serde_json::from_slice(&plain)
            .map_err(|_| Error::Protocol("an undecodable archive from another device".into()))
    }

    pub(super) fn build_archive(&self) -> Result<Archive> {
        let device = Bytes(self.device_fp()?.to_vec());
        let mut settings = Vec::new();
        for key in Setting::SHARED {
            if let Some(v) = self.db.get_setting(key)? {
                settings.push((key.key().into_owned(), Bytes(v)));
            }
        }
        // Held to the end: nothing below may ask `self.db` again.
        let conn = self.db.conn();
        let mut a = Archive::default();
        let mut stmt = conn.prepare(
            "SELECT alias, fingerprint, display_name, relay, mailbox_id, group_id, verified, created_at FROM contacts",
        )?;
        a.contacts = stmt
            .query_map([], |r| {
                Ok(ArchivedContact {
                    alias: r.get(0)?,
                    fingerprint: Bytes(r.get(1)?),
                    display_name: r.get(2)?,
                    relay: r.get(3)?,
                    mailbox_id: r.get::<_, Option<Vec<u8>>>(4)?.map(Bytes),
                    group_id: r.get::<_, Option<Vec<u8>>>(5)?.map(Bytes),
                    verified: r.get(6)?,
                    created_at: r.get(7)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        let mut stmt = conn.prepare(
            "SELECT group_id, kind, name, relay, active, timer_secs, seq_base, created_at,
                    (SELECT MAX(seq) FROM messages m WHERE m.group_id = c.group_id AND m.unread = 0)
             FROM conversations c WHERE kind != 'self'",
        )?;
        a.conversations = stmt
            .query_map([], |r| {
                Ok(ArchivedConversation {
                    group_id: Bytes(r.get(0)?),
                    kind: r.get(1)?,
                    name: r.get(2)?,
                    relay: r.get(3)?,
                    active: r.get(4)?,
                    timer_secs: r.get(5)?,
                    seq_base: r.get(6)?,
                    created_at: r.get(7)?,
                    read_seq: r.get(8)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        let mut stmt = conn.prepare(
            "SELECT id, group_id, seq, sender_fp, outgoing, body, sent_at, received_at, expires_in, expires_at, attachment
             FROM messages WHERE pending_body IS NULL AND failed IS NULL",
        )?;
        a.messages = stmt
            .query_map([], |r| {
                Ok(ArchivedMessage {
                    id: Bytes(r.get(0)?),
                    group_id: Bytes(r.get(1)?),
                    seq: r.get(2)?,
                    sender_fp: Bytes(r.get(3)?),
                    outgoing: r.get(4)?,
                    body: r.get(5)?,
                    sent_at: r.get(6)?,
                    received_at: r.get(7)?,
                    expires_in: r.get(8)?,
                    expires_at: r.get(9)?,
                    attachment: r.get(10)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        let mut stmt = conn.prepare(
            "SELECT group_id, relay, committer, members, claims_existing, received_at
             FROM invitations WHERE on_device IS NULL",
        )?;
        a.invitations = stmt
            .query_map([], |r| {
                Ok(ArchivedInvitation {
                    group_id: Bytes(r.get(0)?),
                    relay: r.get(1)?,
                    committer: Bytes(r.get(2)?),
                    members: r.get(3)?,
                    claims_existing: r.get(4)?,
                    received_at: r.get(5)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        a.device = device;
        a.settings = settings;
        Ok(a)
    }

    /// Whether invitation `id` waits on another device of ours.
    pub fn invitation_elsewhere(&self, id: i64) -> Result<bool> {
        let on: Option<Option<Vec<u8>>> = self
            .db
            .conn()
            .query_row(
                "SELECT on_device FROM invitations WHERE id = ?1",
                params![id],
                |r| r.get(0),
            )
            .optional()?;
        match on {
            None => Err(Error::NotFound(format!("no pending invitation {id}"))),
            Some(d) => Ok(d.is_some()),
        }
    }

    /// Answer an invitation that waits on another device of ours: that device accepts (and
    /// adds this one) or declines it when it next syncs.
    pub async fn invitation_answer_elsewhere(&mut self, id: i64, accept: bool) -> Result<()> {
        let gid: Vec<u8> = self.db.conn().query_row(
            "SELECT group_id FROM invitations WHERE id = ?1 AND on_device IS NOT NULL",
            params![id],
            |r| r.get(0),
        )?;
        let group_id =
            Id::from_slice(&gid).map_err(|_| Error::Storage("corrupt invitation row".into()))?;
        self.send_self(Body::InvitationAnswer { group_id, accept })
            .await?;
        self.db
            .conn()
            .execute("DELETE FROM invitations WHERE id = ?1", params![id])?;
        Ok(())
    }

    /// Carry out answers our other devices gave to invitations that arrived here.
    pub(super) async fn answer_invitations(&mut self) -> Result<()> {
        for (key, value) in self.db.settings_of(Family::InvitationAnswer)? {
            let Setting::InvitationAnswer(group) = key else {
                continue;
            };
            let id: Option<i64> = self
                .db
                .conn()
                .query_row(
                    "SELECT id FROM invitations WHERE group_id = ?1 AND on_device IS NULL",
                    params![group.as_bytes()],
                    |r| r.get(0),
                )
                .optional()?;
            let outcome = match id {
                Some(id) if value == b"1" => self
                    .invitation_accept(id)
                    .await
                    .and_then(|id| self.conversation_name(&id))
                    .map(|name| Some(Notice::InvitationAcceptedElsewhere { name })),
                Some(id) => self
                    .invitation_decline(id)
                    .map(|()| Some(Notice::InvitationDeclinedElsewhere)),
                None => Ok(None),
            };
            match outcome {
                Err(e @ Error::RelayUnreachable(_)) => return Err(e),
                Err(e) => self.emit(Event::notice(
                    None,
                    Notice::InvitationElsewhereFailed {
                        error: Problem::from(&e),
                    },
                ))?,
                Ok(Some(text)) => self.emit(Event::notice(None, text))?,
                Ok(None) => {}
            }
            self.db.delete_setting(key)?;
        }
        Ok(())
    }

    /// Apply the self group's bodies (only from our own person, only in the self group).
    /// Returns whether the body was one of them.
    pub(super) fn apply_self_body(
        &self,
        tx: &Tx,
        conv: &Conv,
        sender: &[u8; 32],
        body: &Body,
    ) -> Result<bool> {
        let ours = *sender == self.fingerprint && is_self_group(conv);
        match body {
            Body::Devices { devices, signed } => {
                if ours {
                    tx.conn().execute("DELETE FROM devices", [])?;
                    self.store_device_records(tx, devices)?;
                    if let Some(list) = signed {
                        self.keep_device_list(tx, sender, list, None)?;
                    }
                }
                Ok(true)
            }
            Body::State { archive } => {
                if ours {
                    let json = serde_json::to_string(archive)
                        .map_err(|e| Error::Storage(e.to_string()))?;
                    self.db
                        .set_setting(Setting::StateArchive, json.as_bytes())?;
                }
                Ok(true)
            }
            Body::InvitationAnswer { group_id, accept } => {
                if ours {
                    self.db.set_setting(
                        Setting::InvitationAnswer(*group_id),
                        if *accept { b"1" } else { b"0" },
                    )?;
                }
                Ok(true)
            }
            Body::History { archive } => {
                if ours && archive.device.0 == self.device_fp()? {
                    let json = serde_json::to_string(archive)
                        .map_err(|e| Error::Storage(e.to_string()))?;
                    self.db
                        .set_setting(Setting::HistoryArchive, json.as_bytes())?;
                    self.emit(Event::notice(Some(conv), Notice::HistorySent))?;
                }
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Fetch and import a history archive the self group announced (once).
    pub(super) async fn import_history(&mut self) -> Result<usize> {
        self.import_state().await?;
        let Some(json) = self.db.get_setting(Setting::HistoryArchive)? else {
            return Ok(0);
        };
        let r: ArchiveRef =
            serde_json::from_slice(&json).map_err(|e| Error::Storage(e.to_string()))?;
        let archive = self.fetch_archive(&r).await?;
        let n = archive.messages.len();
        self.db.transaction(|tx| {
            self.apply_archive(tx, &archive, true)?;
            self.db.delete_setting(Setting::HistoryArchive)?;
            self.db
                .set_setting(Setting::HistoryImported, &(n as u64).to_be_bytes())?;
            self.emit(Event::notice(
                None,
                Notice::HistoryReceived {
                    conversations: archive.conversations.len() as u64,
                    messages: n as u64,
                },
            ))
        })?;
        Ok(n)
    }

    /// Note that contacts or conversation names changed: the next sync sends the state to
    /// the person's other devices (inside the caller's transaction, if any).
    pub(super) fn state_changed(&self) -> Result<()> {
        if self.self_group()?.is_some() {
            self.db.set_setting(Setting::SelfStateDirty, b"1")?;
        }
        Ok(())
    }

    /// Send contacts and conversation names to our other devices if they changed.
    pub(super) async fn send_state_if_changed(&mut self) -> Result<()> {
        if self.db.get_setting(Setting::SelfStateDirty)?.is_none() {
            return Ok(());
        }
        let me = self.device_fp()?;
        let others = self
            .device_records()?
            .iter()
            .any(|d| d.revoked_at.is_none() && d.id.0 != me);
        if others {
            let mut state = self.build_archive()?;
            state.messages.clear();
            let archive = self.upload_archive(&state, &[]).await?;
            self.send_self(Body::State { archive }).await?;
        }
        self.db.delete_setting(Setting::SelfStateDirty)?;
        Ok(())
    }

    /// Apply the latest contacts and names another device of ours sent.
    pub(super) async fn import_state(&mut self) -> Result<()> {
        let Some(json) = self.db.get_setting(Setting::StateArchive)? else {
            return Ok(());
        };
        let r: ArchiveRef =
            serde_json::from_slice(&json).map_err(|e| Error::Storage(e.to_string()))?;
        let state = self.fetch_archive(&r).await?;
        self.db.transaction(|tx| {
            self.apply_archive(tx, &state, false)?;
            self.db.delete_setting(Setting::StateArchive)?;
            Ok(())
        })
    }

    /// Take contacts, names and (with `history`) messages from another device of ours.
    pub(super) fn apply_archive(&self, tx: &Tx, a: &Archive, history: bool) -> Result<()> {
        for c in &a.conversations {
            let current: Option<String> = tx
                .conn()
                .query_row(
                    "SELECT name FROM conversations WHERE group_id = ?1",
                    params![&c.group_id.0],
                    |r| r.get(0),
                )
                .optional()?;
            let kind = if c.kind == "direct" {
                "direct"
            } else {
                "group"
            };
            match current {
                // Joined already: take the other device's name, kind and positions.
                Some(name) => {
                    let name = if name == c.name {
                        name
                    } else {
                        self.unique_name(&c.name)?
                    };
                    tx.conn().execute(
                        "UPDATE conversations SET name = ?2, kind = ?3, timer_secs = ?4, seq_base = ?5 WHERE group_id = ?1",
                        params![&c.group_id.0, name, kind, c.timer_secs, c.seq_base],
                    )?;
                }
                // Not joined here yet (its Welcome comes by itself): nothing to name.
                None if !history => {}
                // A conversation this person left: its history only.
                None => {
                    let name = self.unique_name(&c.name)?;
                    tx.conn().execute(
                        "INSERT INTO conversations (group_id, kind, name, relay, read_epoch, cursor, active, created_at, timer_secs, seq_base)
                         VALUES (?1, ?2, ?3, ?4, 0, 0, 0, ?5, ?6, ?7)",
                        params![&c.group_id.0, kind, name, c.relay, c.created_at, c.timer_secs, c.seq_base],
                    )?;
                }
            }
        }
        let me = self.device_fp()?;
        for (key, value) in &a.settings {
            if let Some(key) = Setting::shared(key)
                && value.len() <= 64
            {
                self.db.set_setting(key, &value.0)?;
            }
        }
        let conn = tx.conn();
        if !a.device.0.is_empty() && a.device.0 != me {
            // That device's pending invitations replace what we showed for it.
            conn.execute(
                "DELETE FROM invitations WHERE on_device = ?1",
                params![&a.device.0],
            )?;
            for i in &a.invitations {
                conn.execute(
                    "INSERT OR IGNORE INTO invitations (group_id, relay, welcome, committer, members, claims_existing, received_at, on_device)
                     SELECT ?1, ?2, x'', ?3, ?4, ?5, ?6, ?7
                     WHERE NOT EXISTS (SELECT 1 FROM conversations WHERE group_id = ?1 AND active = 1)",
                    params![&i.group_id.0, i.relay, &i.committer.0, i.members, i.claims_existing, i.received_at, &a.device.0],
                )?;
            }
        }
        for c in &a.conversations {
            if let Some(seq) = c.read_seq {
                conn.execute(
                    "UPDATE messages SET unread = 0 WHERE group_id = ?1 AND unread = 1 AND seq <= ?2",
                    params![&c.group_id.0, seq],
                )?;
            }
        }
        for c in &a.contacts {
            // A direct conversation is named after its contact: the alias follows it.
            let alias: String = match &c.group_id {
                Some(g) => conn
                    .query_row(
                        "SELECT name FROM conversations WHERE group_id = ?1",
                        params![&g.0],
                        |r| r.get(0),
                    )
                    .optional()?
                    .unwrap_or_else(|| c.alias.clone()),
                None => c.alias.clone(),
            };
            conn.execute(
                "INSERT INTO contacts (alias, fingerprint, display_name, relay, mailbox_id, group_id, created_at, verified)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (fingerprint) DO UPDATE SET verified = excluded.verified,
                    display_name = excluded.display_name, group_id = COALESCE(contacts.group_id, excluded.group_id)",
                params![alias, &c.fingerprint.0, c.display_name, c.relay, c.mailbox_id.as_ref().map(|b| b.0.clone()), c.group_id.as_ref().map(|b| b.0.clone()), c.created_at, c.verified],
            )?;
        }
        for m in &a.messages {
            conn.execute(
                "INSERT OR IGNORE INTO messages (id, group_id, seq, sender_fp, outgoing, body, sent_at, received_at, unread, expires_in, expires_at, attachment)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0, ?9, ?10, ?11)",
                params![&m.id.0, &m.group_id.0, m.seq, &m.sender_fp.0, m.outgoing, m.body, m.sent_at, m.received_at, m.expires_in, m.expires_at, m.attachment],
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// L8: archives of different sizes seal to the same Padmé bucket, and open to what was
    /// sealed (the padding is JSON whitespace).
    #[test]
    pub(super) fn finding_l8_history_archives_are_padded() {
        let key = [7u8; 32];
        let small = Archive::default();
        let mut larger = Archive::default();
        larger
            .settings
            .push(("move_after".into(), Bytes(vec![1; 900])));
        let seal = |a: &Archive| seal_archive(&key, &serde_json::to_vec(a).unwrap()).unwrap();
        let (s, l) = (seal(&small), seal(&larger));
        assert_eq!(
            s.len(),
            l.len(),
            "two histories of different sizes look the same"
        );
        assert!(s.len() >= 4096);
        let opened: Archive = serde_json::from_slice(&open_archive(&key, &l).unwrap()).unwrap();
        assert_eq!(opened.settings, larger.settings);
    }
}
