//! A person's devices: the self group, the device list and revocation. Linking a new device
//! is in `device_link`, what the self group carries between devices in `archive`. The protocol
//! is in docs/PROTOCOL.md "Devices"; the certificates and link messages in `crate::device`.

use super::*;

/// The local name of the self group: names are unique, and this one cannot collide with a
/// contact or a conversation (control characters never appear in user-chosen names). What
/// makes a conversation the self group is its kind, not this name.
pub(super) const SELF_GROUP_NAME: &str = "\u{1}self";

/// How a front names the saved messages as a target (no contact or group can be called this:
/// names do not start with `@`... and if one did, this wins).
pub const SAVED_TARGET: &str = "@saved";

/// Whether `conv` is the self group (its kind, set when it is created or joined).
pub(super) fn is_self_group(conv: &Conv) -> bool {
    conv.kind == ConvKind::SelfGroup
}

/// One of the person's devices (`device list`).
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct DeviceView {
    /// Fingerprint of the device's MLS key (hex); `device revoke` takes it (a front also
    /// resolves a prefix of it with `find_device`).
    pub id: DeviceId,
    /// What the device was called when it was linked; empty for the first device (fronts
    /// show "first device" in their language).
    pub name: String,
    /// This device.
    pub this: bool,
    pub revoked: bool,
}

impl Profile {
    /// Whether this device holds the person's identity key (the first device).
    pub fn holds_identity(&self) -> Result<bool> {
        Ok(self.db.get_setting(Setting::DeviceCert)?.is_none())
    }

    pub(super) fn cipher_suite(&self) -> u16 {
        u16::from(self.mls.cipher_suite())
    }

    /// This device's own key fingerprint.
    pub(super) fn device_fp(&self) -> Result<[u8; 32]> {
        Ok(mls::fingerprint(&self.db.setting(Setting::MlsPublic)?))
    }

    /// The self group's id, if this person has one.
    pub(super) fn self_group(&self) -> Result<Option<Id>> {
        Ok(self
            .db
            .get_setting(Setting::SelfGroup)?
            .and_then(|b| Id::from_slice(&b).ok()))
    }

    /// Saved messages: notes to self, kept in the self group (shared by the person's devices
    /// only), which is made on first use. Its id.
    pub async fn saved_messages(&mut self) -> Result<ConversationId> {
        Ok(ConversationId::from_id(
            self.ensure_self_group().await?.group_id,
        ))
    }

    /// Create the self group (once), with this device its only member.
    pub(super) async fn ensure_self_group(&mut self) -> Result<Conv> {
        if let Some(id) = self.self_group()?
            && let Some(conv) = self.conv_by_id(&id)?
        {
            return Ok(conv);
        }
        let group_id = random_id();
        let mut group = self.mls.create_group(group_id.as_bytes())?;
        let token = group.token()?;
        let relay = self.relay.base().to_string();
        self.conv_client_for(&relay, &group_id)?
            .create_group(random_id(), group_id, group.epoch(), sha256(&token))
            .await?;
        let me = self.device_fp()?;
        self.db.transaction(|tx| {
            group.save()?;
            tx.conn().execute(
                "INSERT INTO conversations (group_id, kind, name, relay, read_epoch, cursor, created_at) VALUES (?1, 'self', ?2, ?3, ?4, 0, ?5)",
                params![group_id.as_bytes(), SELF_GROUP_NAME, relay, group.epoch() as i64, now_secs() as i64],
            )?;
            self.store_token(&group_id, group.epoch(), &token)?;
            self.db.set_setting(Setting::SelfGroup, group_id.as_bytes())?;
            tx.conn().execute(
                "INSERT OR IGNORE INTO devices (device_fp, name, relay, mailbox_id, added_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![&me[..], "", relay, self.mailbox.as_bytes(), now_secs() as i64],
            )?;
            Ok(())
        })?;
        self.conv_by_id(&group_id)?
            .ok_or_else(|| Error::Storage("the self group vanished".into()))
    }

    /// Add a verified new device to the self group and every conversation, then send it the
    /// device list and the history. Returns the number of conversations it was added to.
    pub(super) async fn add_device(
        &mut self,
        device_fp: [u8; 32],
        name: &str,
        relay: &str,
        mailbox: &Id,
        mut kps: Vec<Vec<u8>>,
    ) -> Result<usize> {
        let self_conv = self.ensure_self_group().await?;
        let convs = self.active_convs()?;
        let others: Vec<Conv> = convs
            .into_iter()
            .filter(|c| c.group_id != self_conv.group_id)
            .collect();
        if kps.len() != others.len() + 1 {
            return Err(Error::Protocol(format!(
                "the new device sent {} KeyPackages for {} conversations",
                kps.len(),
                others.len() + 1
            )));
        }
        self.db.conn().execute(
            "INSERT INTO devices (device_fp, name, relay, mailbox_id, added_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![&device_fp[..], name, relay, mailbox.as_bytes(), now_secs() as i64],
        )?;
        // Contacts learn the new device from the signed list before it appears among them.
        self.publish_device_list().await?;
        let mut take = || kps.remove(0);
        let relay = relay.to_string();
        self.commit_change(
            &self_conv,
            vec![(take(), relay.clone(), *mailbox)],
            vec![],
            None,
        )
        .await?;
        let mut added = 0;
        for conv in &others {
            match self
                .commit_change(conv, vec![(take(), relay.clone(), *mailbox)], vec![], None)
                .await
            {
                Ok(()) => added += 1,
                Err(e) => self.emit(Event::notice(
                    Some(conv),
                    Notice::NewDeviceNotAdded {
                        error: Problem::from(&e),
                    },
                ))?,
            }
        }
        self.send_devices().await?;
        // The history, sealed under a key of its own, stored once on our relay; the key
        // travels in the self group.
        let archive = self.build_archive()?;
        let archive = self.upload_archive(&archive, &device_fp).await?;
        self.send_self(Body::History { archive }).await?;
        Ok(added)
    }

    /// Keep the device list another device of ours sent (inside the caller's transaction).
    pub(super) fn store_device_records(&self, tx: &Tx, devices: &[DeviceRecord]) -> Result<()> {
        for d in devices.iter().take(64) {
            let name: String = d
                .name
                .chars()
                .filter(|c| !c.is_control())
                .take(64)
                .collect();
            tx.conn().execute(
                "INSERT OR REPLACE INTO devices (device_fp, name, relay, mailbox_id, added_at, revoked_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![&d.id.0, name, d.relay, d.mailbox.map(|m| m.as_bytes().to_vec()), d.added_at as i64, d.revoked_at.map(|t| t as i64)],
            )?;
        }
        Ok(())
    }

    /// Send a body in the self group (queued when the relay is unreachable).
    pub(super) async fn send_self(&mut self, body: Body) -> Result<()> {
        let Some(id) = self.self_group()? else {
            return Ok(());
        };
        let Some(conv) = self.conv_by_id(&id)?.filter(|c| c.active) else {
            return Ok(());
        };
        let payload = Payload {
            unknown: None,
            id: random_id(),
            expires_in: None,
            sent_at: now_millis(),
            body,
        };
        match self.send_payload(&conv, payload).await {
            Ok(_) | Err(Error::RelayUnreachable(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Send the device list in the self group.
    pub(super) async fn send_devices(&mut self) -> Result<()> {
        let devices = self.device_records()?;
        let signed = self.own_device_list()?;
        self.send_self(Body::Devices { devices, signed }).await
    }

    pub(super) fn device_records(&self) -> Result<Vec<DeviceRecord>> {
        let conn = self.db.conn();
        let mut stmt = conn.prepare(
            "SELECT device_fp, name, relay, mailbox_id, added_at, revoked_at FROM devices ORDER BY added_at, device_fp",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(DeviceRecord {
                id: Bytes(r.get(0)?),
                name: r.get(1)?,
                relay: r.get(2)?,
                mailbox: r
                    .get::<_, Option<Vec<u8>>>(3)?
                    .and_then(|b| Id::from_slice(&b).ok()),
                added_at: r.get::<_, i64>(4)?.max(0) as u64,
                revoked_at: r.get::<_, Option<i64>>(5)?.map(|t| t.max(0) as u64),
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// After joining a conversation someone else added us to: add our other devices too
    /// (a KeyPackage claimed from each one's mailbox, checked to be that device's).
    pub(super) async fn add_own_devices(&mut self, conv: &Conv) -> Result<()> {
        if self.self_group()? == Some(conv.group_id) {
            return Ok(());
        }
        let me = self.device_fp()?;
        let records = self.device_records()?;
        if records.len() < 2 {
            return Ok(());
        }
        // Catching up may have ended our membership already.
        let Some(conv) = self.conv_by_id(&conv.group_id)?.filter(|c| c.active) else {
            return Ok(());
        };
        let conv = &conv;
        // A revoked device of ours that is here (it was invited through its old mailbox, or
        // added us itself): remove it.
        let revoked: Vec<Vec<u8>> = records
            .iter()
            .filter(|d| d.revoked_at.is_some())
            .map(|d| d.id.0.clone())
            .collect();
        let present_revoked: Vec<Vec<u8>> = self
            .mls
            .load(conv.group_id.as_bytes())?
            .members()
            .iter()
            .filter(|m| revoked.iter().any(|r| r.as_slice() == m.device.as_slice()))
            .map(|m| m.device.to_vec())
            .collect();
        if !present_revoked.is_empty()
            && let Err(e) = self
                .commit_change(conv, Vec::new(), present_revoked, None)
                .await
        {
            self.emit(Event::notice(
                Some(conv),
                Notice::RevokedDeviceNotRemoved {
                    error: Problem::from(&e),
                },
            ))?;
        }
        let others: Vec<DeviceRecord> = records
            .into_iter()
            .filter(|d| d.revoked_at.is_none() && d.id.0 != me)
            .collect();
        for d in others {
            let (Some(relay), Some(mailbox)) = (d.relay.clone(), d.mailbox) else {
                continue;
            };
            let present = self
                .mls
                .load(conv.group_id.as_bytes())?
                .members()
                .iter()
                .any(|m| m.device.as_slice() == d.id.0.as_slice());
            if present {
                continue;
            }
            let added = async {
                let claimed = self.relay_for(&relay)?.claim_key_package(&mailbox).await?;
                let (person, signer) = mls::key_package_signer(&claimed.key_package.0)?;
                if person != self.fingerprint || signer.as_slice() != d.id.0.as_slice() {
                    return Err(Error::KeyPackageMismatch);
                }
                Ok(claimed.key_package.0)
            }
            .await;
            let outcome = match added {
                Ok(kp) => {
                    self.commit_change(conv, vec![(kp, relay, mailbox)], vec![], None)
                        .await
                }
                Err(e) => Err(e),
            };
            if let Err(e) = outcome {
                self.emit(Event::notice(
                    Some(conv),
                    Notice::OwnDeviceNotAdded {
                        name: d.name.clone(),
                        error: Problem::from(&e),
                    },
                ))?;
            }
        }
        Ok(())
    }

    /// The person's devices, as this device knows them.
    pub fn devices(&self) -> Result<Vec<DeviceView>> {
        let me = self.device_fp()?;
        let mut out: Vec<DeviceView> = self
            .device_records()?
            .into_iter()
            .map(|d| {
                Ok(DeviceView {
                    this: d.id.0 == me,
                    id: DeviceId::from_slice(&d.id.0)?,
                    name: d.name,
                    revoked: d.revoked_at.is_some(),
                })
            })
            .collect::<Result<_>>()?;
        if !out.iter().any(|d| d.this) {
            out.insert(
                0,
                DeviceView {
                    id: DeviceId::from_bytes(me),
                    name: String::new(),
                    this: true,
                    revoked: false,
                },
            );
        }
        Ok(out)
    }

    /// The device whose id starts with `prefix` (at least 4 hex digits, as `device list`
    /// shows them): what a front resolves at its edge.
    pub fn find_device(&self, prefix: &str) -> Result<DeviceId> {
        let id = prefix.trim().to_ascii_lowercase();
        if id.len() < 4 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(Error::Usage(
                "give a device id (or at least its first 4 hex digits) from `device list`".into(),
            ));
        }
        let matches: Vec<DeviceView> = self
            .devices()?
            .into_iter()
            .filter(|d| d.id.to_string().starts_with(&id))
            .collect();
        match matches.as_slice() {
            [d] => Ok(d.id),
            [] => Err(Error::NotFound(format!("no device {id}"))),
            _ => Err(Error::Usage(format!(
                "{id} names several devices; give more digits"
            ))),
        }
    }

    /// Remove that device from the self group and every conversation: it can read nothing
    /// sent after. Returns the name it was linked under.
    pub async fn device_revoke(&mut self, id: &DeviceId) -> Result<String> {
        let d = self
            .devices()?
            .into_iter()
            .find(|d| d.id == *id)
            .ok_or_else(|| Error::NotFound(format!("no device {}", id.short())))?;
        if d.this {
            return Err(Error::Usage(
                "a device cannot revoke itself; revoke it from another device (or wipe it)".into(),
            ));
        }
        if d.revoked {
            return Err(Error::Usage(format!(
                "device {:?} is already revoked",
                d.name
            )));
        }
        let fp = id.as_bytes().to_vec();
        let mut convs = self.active_convs()?;
        // The self group last: the device list that says "revoked" goes out after it is out
        // of every conversation.
        let self_id = self.self_group()?;
        convs.sort_by_key(|c| Some(c.group_id) == self_id);
        for conv in &convs {
            let present = self
                .mls
                .load(conv.group_id.as_bytes())?
                .members()
                .iter()
                .any(|m| m.device.as_slice() == fp.as_slice());
            // The `REVOKE_WITHOUT_REMOVAL` fault point leaves the device in the groups, as
            // when this device's removal has not landed yet (the H2 test of what contacts do
            // with a commit from a revoked device).
            if present && !crate::fault::on("REVOKE_WITHOUT_REMOVAL") {
                self.commit_change(conv, Vec::new(), vec![fp.clone()], None)
                    .await?;
            }
        }
        self.db.conn().execute(
            "UPDATE devices SET revoked_at = ?2 WHERE device_fp = ?1",
            params![fp, now_secs() as i64],
        )?;
        // Every contact is told, in every conversation, that it no longer speaks for us.
        self.publish_device_list().await?;
        self.send_devices().await?;
        Ok(d.name)
    }
}
