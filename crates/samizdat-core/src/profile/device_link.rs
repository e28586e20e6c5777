//! Linking a new device: `device join` on the new device shows a link, `device add` on the
//! device with the identity key takes it (docs/PROTOCOL.md "Devices").

use super::*;
use crate::device::{self, DeviceCert, Link, LinkKeys, LinkReply};

/// Most KeyPackages a link may ask for (one per conversation and the self group).
pub(super) const MAX_LINK_KEY_PACKAGES: u32 = 10_000;

/// What travels in the identity device's one-time mailbox (sealed to its one-time HPKE key).
#[derive(Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum LinkMessage {
    Keys(LinkKeys),
}

/// A new device's link as the device with the identity key shows it before adding it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct LinkPreview {
    /// The device's id once added (fingerprint of its key, hex).
    pub id: DeviceId,
    /// What the new device calls itself.
    pub name: String,
    /// The code the new device shows next to its link; they must be the same.
    pub code: String,
    /// Unix seconds when the link stops working.
    pub expires_at: u64,
}

/// What `device join` did.
#[derive(Debug, Clone, Serialize)]
pub struct Joined {
    pub code: String,
    pub name: String,
    pub conversations: usize,
    pub messages: usize,
}

pub(super) struct LinkRow {
    id: i64,
    relay: String,
    mailbox: Id,
    mailbox_key: zeroize::Zeroizing<Vec<u8>>,
    hpke_secret: zeroize::Zeroizing<Vec<u8>>,
    hpke_public: Vec<u8>,
    secret: zeroize::Zeroizing<Vec<u8>>,
    expires_at: u64,
    device_key: Option<Vec<u8>>,
    name: Option<String>,
    reply: Option<(String, Id, Vec<u8>)>,
    /// Finished (linked or failed): a device that tries it again is told so.
    done: bool,
}

impl Profile {
    /// What `device add` would add, with nothing changed: the new device's name and the code
    /// its screen shows. Refuses what could not be added (expired, used, revoked, ours).
    pub fn device_add_preview(&self, link: &str) -> Result<LinkPreview> {
        let link = self.addable_link(link)?;
        Ok(LinkPreview {
            id: DeviceId::from_bytes(mls::fingerprint(&link.device_key.0)),
            name: link.name.clone(),
            code: link.code(),
            expires_at: link.expires_at,
        })
    }

    /// A link `device add` may take: made for our ciphersuite, in time, not used before, for a
    /// device that is neither this one nor one we know.
    pub(super) fn addable_link(&self, link: &str) -> Result<Link> {
        if !self.holds_identity()? {
            return Err(Error::Usage(
                "only the first device (it holds the identity key) can add devices".into(),
            ));
        }
        let link = Link::parse(link)?;
        if now_secs() > link.expires_at {
            return Err(Error::Usage(
                "this device link has expired (links last 2 minutes); show a new one on the new device".into(),
            ));
        }
        if link.cipher_suite != self.cipher_suite() {
            return Err(Error::Usage(
                "this device link is for another ciphersuite; update samizdat on both devices"
                    .into(),
            ));
        }
        let used: bool = self.db.conn().query_row(
            "SELECT EXISTS (SELECT 1 FROM device_links WHERE reply_mailbox = ?1)",
            params![link.mailbox.as_bytes()],
            |r| r.get(0),
        )?;
        if used {
            return Err(Error::Usage(
                "this device link was already used; show a new one on the new device".into(),
            ));
        }
        let device_fp = mls::fingerprint(&link.device_key.0);
        let known: Option<Option<i64>> = self
            .db
            .conn()
            .query_row(
                "SELECT revoked_at FROM devices WHERE device_fp = ?1",
                params![&device_fp[..]],
                |r| r.get(0),
            )
            .optional()?;
        match known {
            Some(Some(_)) => Err(Error::Usage(
                "this device was revoked; link it with a fresh profile".into(),
            )),
            Some(None) => Err(Error::Usage("this device is already linked".into())),
            None if device_fp == self.device_fp()? => {
                Err(Error::Usage("this is this device's own link".into()))
            }
            None => Ok(link),
        }
    }

    /// `device add LINK`, after the person confirmed the name and code: sign the new device's
    /// key, tell it (sealed to its link key) where to send its KeyPackages — a one-time
    /// mailbox and HPKE key of ours — and wait for them in `sync_links` (every sync, or the
    /// service's polling while a link is open). Nothing is signed before this call.
    pub async fn device_add(&mut self, link: &str) -> Result<LinkPreview> {
        let link = self.addable_link(link)?;
        let cs = self.cipher_suite();
        let cert = DeviceCert::sign(
            cs,
            &zeroize::Zeroizing::new(self.db.setting(Setting::MlsSecret)?),
            &self.db.setting(Setting::MlsPublic)?,
            &link.device_key.0,
        )?;
        let self_conv = self.ensure_self_group().await?;
        // One KeyPackage per conversation (the self group is one of them).
        let wanted = self.active_convs()?.len() as u32;
        let (mailbox_key, pkcs8) = MailboxKey::generate()?;
        let pkcs8 = zeroize::Zeroizing::new(pkcs8);
        let mailbox = random_id();
        self.relay
            .create_mailbox(random_id(), mailbox, mailbox_key.public())
            .await?;
        let (hpke_secret, hpke_public) = device::hpke_keypair(cs)?;
        let hpke_secret = zeroize::Zeroizing::new(hpke_secret);
        let code = link.code();
        // The new device has until its link expires to answer, plus time to make its
        // KeyPackages on a slow machine.
        let expires_at = link.expires_at.max(now_secs()) + 600;
        self.db.conn().execute(
            "INSERT INTO device_links (relay, mailbox_id, mailbox_key, hpke_secret, hpke_public, secret, expires_at,
                                       device_key, name, reply_relay, reply_mailbox, reply_hpke, code)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            params![
                self.relay.base(), mailbox.as_bytes(), &pkcs8[..], &hpke_secret[..], hpke_public,
                &link.secret.0, expires_at as i64, &link.device_key.0, link.name, link.relay,
                link.mailbox.as_bytes(), &link.hpke.0, code
            ],
        )?;
        let reply_relay = self.relay.base().to_string();
        let mac = device::accepted_mac(
            &link.secret.0,
            &cert.encode(),
            &reply_relay,
            &mailbox,
            &hpke_public,
        );
        self.reply(
            &link.relay,
            &link.mailbox,
            &link.hpke.0,
            &LinkReply::Accepted {
                cert: Bytes(cert.encode()),
                name: self.name.clone(),
                key_packages: wanted,
                self_group: self_conv.group_id,
                devices: self.device_records()?,
                reply_relay,
                reply_mailbox: mailbox,
                reply_hpke: Bytes(hpke_public),
                mac: Bytes(mac),
            },
        )
        .await?;
        Ok(LinkPreview {
            id: DeviceId::from_bytes(mls::fingerprint(&link.device_key.0)),
            name: link.name,
            code,
            expires_at: link.expires_at,
        })
    }

    pub(super) fn open_links(&self) -> Result<Vec<LinkRow>> {
        let conn = self.db.conn();
        let mut stmt = conn.prepare(
            "SELECT id, relay, mailbox_id, mailbox_key, hpke_secret, hpke_public, secret, expires_at,
                    device_key, name, reply_relay, reply_mailbox, reply_hpke, done_at IS NOT NULL
             FROM device_links WHERE done_at IS NULL OR expires_at + 3600 > ?1",
        )?;
        let rows = stmt.query_map(params![now_secs() as i64], |r| {
            let reply = match (
                r.get::<_, Option<String>>(10)?,
                r.get::<_, Option<Vec<u8>>>(11)?,
                r.get::<_, Option<Vec<u8>>>(12)?,
            ) {
                (Some(relay), Some(mb), Some(hpke)) => {
                    Id::from_slice(&mb).ok().map(|mb| (relay, mb, hpke))
                }
                _ => None,
            };
            Ok(LinkRow {
                id: r.get(0)?,
                relay: r.get(1)?,
                mailbox: Id::from_slice(&r.get::<_, Vec<u8>>(2)?)
                    .unwrap_or(Id::from_bytes([0; 16])),
                mailbox_key: zeroize::Zeroizing::new(r.get(3)?),
                hpke_secret: zeroize::Zeroizing::new(r.get(4)?),
                hpke_public: r.get(5)?,
                secret: zeroize::Zeroizing::new(r.get(6)?),
                expires_at: r.get::<_, i64>(7)?.max(0) as u64,
                device_key: r.get(8)?,
                name: r.get(9)?,
                reply,
                done: r.get(13)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Whether a link made here still waits for its device.
    pub fn links_open(&self) -> Result<bool> {
        Ok(self.db.conn().query_row(
            "SELECT EXISTS (SELECT 1 FROM device_links WHERE done_at IS NULL AND expires_at + 60 > ?1)",
            params![now_secs() as i64],
            |r| r.get(0),
        )?)
    }

    /// Answer the open links only (the service calls this often while one is open).
    pub async fn poll_links(&mut self) -> Result<()> {
        self.sync_links().await
    }

    pub(super) fn finish_link(&self, id: i64, outcome: &str) -> Result<()> {
        self.db.conn().execute(
            "UPDATE device_links SET done_at = ?2, outcome = ?3 WHERE id = ?1",
            params![id, now_secs() as i64, outcome],
        )?;
        Ok(())
    }

    /// Answer what new devices sent to our open links (called by every sync).
    pub(super) async fn sync_links(&mut self) -> Result<()> {
        let links = self.open_links()?;
        for link in links {
            if now_secs() > link.expires_at + 3600 {
                // Expired a while ago: whatever arrives now is refused by the new device's
                // own check; forget it.
                if !link.done {
                    self.finish_link(link.id, "expired")?;
                }
                continue;
            }
            let relay = self.relay_for(&link.relay)?;
            let key = MailboxKey::from_pkcs8(&link.mailbox_key)?;
            let msgs = relay.read_mailbox(&key, &link.mailbox, 0).await?;
            let mut done = Vec::new();
            for m in msgs {
                done.push(m.seq);
                let outcome = self.link_message(&link, &m.body.0).await;
                match outcome {
                    Ok(true) => break,
                    Ok(false) => {}
                    Err(Error::RelayUnreachable(_)) => {
                        done.pop();
                        break;
                    }
                    Err(e) => {
                        self.finish_link(link.id, &e.to_string())?;
                        // Tell the waiting device at once (it would otherwise time out).
                        if let Some((relay, mailbox, hpke)) = &link.reply {
                            let refused = LinkReply::Refused {
                                reason: format!("linking failed: {e}"),
                            };
                            let _ = self.reply(relay, mailbox, hpke, &refused).await;
                        }
                        self.emit(Event::notice(
                            None,
                            Notice::LinkFailed {
                                error: Problem::from(&e),
                            },
                        ))?;
                        break;
                    }
                }
            }
            if !done.is_empty() {
                relay.ack(&key, &link.mailbox, done).await?;
            }
        }
        Ok(())
    }

    /// One message in a link's mailbox. `Ok(true)` when the link is finished.
    pub(super) async fn link_message(&mut self, link: &LinkRow, sealed: &[u8]) -> Result<bool> {
        let cs = self.cipher_suite();
        let plain = match device::hpke_open(cs, &link.hpke_secret, &link.hpke_public, sealed) {
            Ok(p) => p,
            Err(_) => {
                // Not sealed to this link (or altered on the way): nothing to answer.
                self.emit(Event::notice(None, Notice::LinkMessageUnreadable))?;
                return Ok(false);
            }
        };
        let msg: LinkMessage = serde_json::from_slice(&plain)
            .map_err(|_| Error::Protocol("an undecodable device link message".into()))?;
        match msg {
            LinkMessage::Keys(keys) => self.link_keys(link, keys).await,
        }
    }

    pub(super) async fn reply(
        &self,
        relay: &str,
        mailbox: &Id,
        hpke: &[u8],
        reply: &LinkReply,
    ) -> Result<()> {
        let plain = serde_json::to_vec(reply).map_err(|e| Error::Protocol(e.to_string()))?;
        let sealed = device::hpke_seal(self.cipher_suite(), hpke, &plain)?;
        self.relay_for(relay)?
            .drop_message(
                random_id(),
                mailbox,
                Envelope::Device {
                    sealed: Bytes(sealed),
                }
                .encode(),
            )
            .await?;
        Ok(())
    }

    pub(super) async fn link_keys(&mut self, link: &LinkRow, keys: LinkKeys) -> Result<bool> {
        if link.done {
            return Ok(false);
        }
        let (Some(device_key), Some((relay, mailbox, _))) = (&link.device_key, &link.reply) else {
            return Err(Error::Protocol(
                "KeyPackages arrived before the device asked to link".into(),
            ));
        };
        if !keys.check(&link.secret, device_key) {
            return Err(Error::Protocol(
                "the new device's KeyPackages are not bound to this link".into(),
            ));
        }
        let device_fp = mls::fingerprint(device_key);
        let mut kps = Vec::with_capacity(keys.key_packages.len());
        for kp in keys.key_packages {
            let substituted = || {
                Error::Protocol(
                    "a KeyPackage sent for linking is not the new device's (substituted on the way?); nothing was added"
                        .into(),
                )
            };
            let (person, signer) = mls::key_package_signer(&kp.0).map_err(|_| substituted())?;
            if person != self.fingerprint || signer != device_fp {
                return Err(substituted());
            }
            kps.push(kp.0);
        }
        let name = link.name.clone().unwrap_or_default();
        let added = self
            .add_device(device_fp, &name, relay, mailbox, kps)
            .await?;
        self.finish_link(link.id, "linked")?;
        self.emit(Event::notice(
            None,
            Notice::DeviceLinked {
                name: name.to_string(),
                conversations: added as u64,
            },
        ))?;
        Ok(true)
    }

    /// A link answer that arrived while `device join` syncs: a refusal ends the join.
    pub(super) fn device_envelope(&self, sealed: &[u8]) -> Result<()> {
        let (Some(secret), Some(public)) = (
            self.db.get_setting(Setting::JoinHpkeSecret)?,
            self.db.get_setting(Setting::JoinHpkePublic)?,
        ) else {
            return Ok(());
        };
        let secret = zeroize::Zeroizing::new(secret);
        if let Ok(plain) = device::hpke_open(self.cipher_suite(), &secret, &public, sealed)
            && let Ok(LinkReply::Refused { reason }) = serde_json::from_slice(&plain)
        {
            self.db
                .set_setting(Setting::JoinRefused, reason.as_bytes())?;
        }
        Ok(())
    }

    /// `device join --name NAME`: make this (new, empty) home a device of a person. A profile
    /// of its own is made on `relay`; `show` is given the one-time link (and its code) to
    /// take to the device that holds the identity key (`device add LINK`). Waits until that
    /// device has added this one, at most `timeout`, and never past the link's expiry
    /// without an answer. On any failure nothing is left in `home`.
    pub async fn device_join(
        home: &Path,
        passphrase: &str,
        relay: &str,
        name: &str,
        timeout: std::time::Duration,
        show: impl FnOnce(&str, &str),
    ) -> Result<(Profile, Joined)> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 64 || name.chars().any(crate::text::is_hidden)
        {
            return Err(Error::Usage(
                "the device name must be 1 to 64 printable characters".into(),
            ));
        }
        // A profile of its own first (keys, mailbox), named later after the person.
        let net = crate::net::Net::from_env()?.unwrap_or_default();
        let mut p = Profile::init_device(home, passphrase, relay, name, net).await?;
        let path = Profile::db_path(home);
        let outcome = p.join_inner(name, timeout, show).await;
        match outcome {
            Ok(j) => Ok((p, j)),
            Err(e) => {
                drop(p);
                remove_db_files(&path);
                Err(e)
            }
        }
    }

    pub(super) async fn join_inner(
        &mut self,
        name: &str,
        timeout: std::time::Duration,
        show: impl FnOnce(&str, &str),
    ) -> Result<Joined> {
        let deadline = std::time::Instant::now() + timeout;
        let cs = self.cipher_suite();
        let device_key = self.db.setting(Setting::MlsPublic)?;
        let (hpke_secret, hpke_public) = device::hpke_keypair(cs)?;
        let hpke_secret = zeroize::Zeroizing::new(hpke_secret);
        let mut link_secret = zeroize::Zeroizing::new(vec![0u8; 32]);
        aws_lc_rs::rand::fill(&mut link_secret)
            .map_err(|_| Error::Crypto("the system random number generator failed".into()))?;
        let link = Link {
            v: 2,
            relay: self.relay.base().to_string(),
            mailbox: self.mailbox,
            hpke: Bytes(hpke_public.clone()),
            secret: Bytes(link_secret.to_vec()),
            device_key: Bytes(device_key.clone()),
            name: name.to_string(),
            cipher_suite: cs,
            expires_at: now_secs() + device::LINK_TTL,
        };
        let code = link.code();
        show(&link.to_link(), &code);
        // The answer: our certificate and where to send our KeyPackages (or why not).
        let reply = self
            .await_link_reply(cs, (&hpke_secret, &hpke_public), link.expires_at, deadline)
            .await?;
        let (cert, person_name, wanted, reply_to) =
            self.take_link_reply(reply, &link_secret, name, &device_key)?;
        let parsed = DeviceCert::decode(&cert.0)
            .ok_or_else(|| Error::Protocol("the other device sent no certificate".into()))??;
        parsed.verify(&device_key)?;
        if wanted == 0 || wanted > MAX_LINK_KEY_PACKAGES {
            return Err(Error::Protocol(format!(
                "the other device asked for {wanted} KeyPackages"
            )));
        }
        // Become a device of that person: the certificate in our credential, their name.
        let person_name = crate::text::clean_name(&person_name);
        self.db.set_setting(Setting::DeviceCert, &cert.0)?;
        self.db.set_setting(Setting::Name, person_name.as_bytes())?;
        self.db.set_setting(Setting::DeviceName, name.as_bytes())?;
        let secret = zeroize::Zeroizing::new(self.db.setting(Setting::MlsSecret)?);
        self.mls = Mls::new(
            self.db.clone(),
            &secret,
            &device_key,
            self.mls.cipher_suite(),
            Some(&cert.0),
        )?;
        self.fingerprint = parsed.person();
        self.name = person_name.clone();
        // The pool made at init carries the old credential: replace it.
        self.db.conn().execute("DELETE FROM mls_key_packages", [])?;
        let mut kps = Vec::with_capacity(wanted as usize);
        for _ in 0..wanted {
            kps.push(self.mls.key_package(false)?);
        }
        if crate::fault::on("SUBSTITUTE_KEY_PACKAGES") {
            // Fault injection for the test: KeyPackages of another key, as a relay that
            // handed out someone else's would.
            let other = mls::generate_signer(self.mls.cipher_suite())?;
            let db = self.db.clone();
            let fake = Mls::new(
                db,
                &other.secret,
                &other.public,
                self.mls.cipher_suite(),
                Some(&cert.0),
            )?;
            kps[0] = fake.key_package(false)?;
        }
        // A refusal of what follows arrives while syncing (see `device_envelope`).
        self.db.set_setting(Setting::JoinHpkeSecret, &hpke_secret)?;
        self.db.set_setting(Setting::JoinHpkePublic, &hpke_public)?;
        let keys = LinkKeys::new(&link_secret, &device_key, kps);
        let (reply_relay, reply_mailbox, reply_hpke) = reply_to;
        let plain = serde_json::to_vec(&LinkMessage::Keys(keys))
            .map_err(|e| Error::Protocol(e.to_string()))?;
        self.relay_for(&reply_relay)?
            .drop_message(
                random_id(),
                &reply_mailbox,
                device::hpke_seal(cs, &reply_hpke.0, &plain)?,
            )
            .await?;
        let last_resort = self.mls.key_package(true)?;
        self.upload_key_packages(KEY_PACKAGE_POOL, Some(last_resort))
            .await?;
        // Wait for the Welcomes, the device list and the history (sync imports it).
        let messages = self.await_linked(deadline).await?;
        for key in [Setting::JoinHpkeSecret, Setting::JoinHpkePublic] {
            self.db.delete_setting(key)?;
        }
        Ok(Joined {
            code,
            name: person_name,
            conversations: self.active_convs()?.len().saturating_sub(1),
            messages,
        })
    }

    /// Wait for the answer to our link in our mailbox (sealed to the link's one-time HPKE
    /// key), until the link expires or `deadline`.
    async fn await_link_reply(
        &self,
        cs: u16,
        (hpke_secret, hpke_public): (&[u8], &[u8]),
        expires_at: u64,
        deadline: std::time::Instant,
    ) -> Result<LinkReply> {
        loop {
            let msgs = self
                .relay
                .read_mailbox(&self.mailbox_key, &self.mailbox, 0)
                .await?;
            let mut found = None;
            for m in &msgs {
                self.relay
                    .ack(&self.mailbox_key, &self.mailbox, vec![m.seq])
                    .await?;
                if let Ok(Envelope::Device { sealed }) = Envelope::decode(&m.body.0)
                    && let Ok(plain) = device::hpke_open(cs, hpke_secret, hpke_public, &sealed.0)
                    && let Ok(r) = serde_json::from_slice::<LinkReply>(&plain)
                {
                    found = Some(r);
                    break;
                }
            }
            if let Some(r) = found {
                return Ok(r);
            }
            if now_secs() > expires_at + 5 {
                return Err(Error::Usage(
                    "the link expired before the other device added this one; nothing was linked (run device join again for a new link)".into(),
                ));
            }
            if std::time::Instant::now() > deadline {
                return Err(Error::Busy(
                    "the other device did not add this one in time; nothing was linked".into(),
                ));
            }
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
    }

    /// Check an answer to our link (only a device that saw the link can make one) and keep
    /// what it tells: the self group, the devices, this device. Returns the certificate,
    /// the person's name, how many KeyPackages to send and where.
    fn take_link_reply(
        &self,
        reply: LinkReply,
        link_secret: &[u8],
        name: &str,
        device_key: &[u8],
    ) -> Result<(Bytes, String, u32, (String, Id, Bytes))> {
        match reply {
            LinkReply::Refused { reason } => {
                Err(Error::Usage(format!("the other device refused: {reason}")))
            }
            LinkReply::Accepted {
                cert,
                name: person,
                key_packages,
                self_group,
                devices,
                reply_relay,
                reply_mailbox,
                reply_hpke,
                mac,
            } => {
                // Only a device that saw our link can answer it.
                if !device::accepted_mac_ok(
                    link_secret,
                    &cert.0,
                    &reply_relay,
                    &reply_mailbox,
                    &reply_hpke.0,
                    &mac.0,
                ) {
                    return Err(Error::Protocol(
                        "an answer to this link does not prove it saw the link; nothing was linked"
                            .into(),
                    ));
                }
                crate::check_foreign_relay_url(&reply_relay)?;
                self.db.transaction(|tx| {
                    self.db.set_setting(Setting::SelfGroup, self_group.as_bytes())?;
                    self.store_device_records(tx, &devices)?;
                    // This device, last (the list the first device sends next says the same).
                    tx.conn().execute(
                        "INSERT OR REPLACE INTO devices (device_fp, name, relay, mailbox_id, added_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                        params![&mls::fingerprint(device_key)[..], name, self.relay.base(), self.mailbox.as_bytes(), now_secs() as i64],
                    )?;
                    Ok(())
                })?;
                Ok((
                    cert,
                    person,
                    key_packages,
                    (reply_relay, reply_mailbox, reply_hpke),
                ))
            }
        }
    }

    /// Sync until the history arrived (how many messages it held), a conversation could
    /// not be joined, the other device refused, or `deadline`.
    async fn await_linked(&mut self, deadline: std::time::Instant) -> Result<usize> {
        loop {
            let events = self.sync().await?;
            for e in &events {
                if let Event::Notice {
                    notice: Notice::JoinFailed { error },
                    ..
                } = e
                {
                    return Err(Error::Protocol(format!(
                        "could not join a conversation: {}",
                        error.detail
                    )));
                }
            }
            if let Some(reason) = self.db.get_setting(Setting::JoinRefused)? {
                return Err(Error::Usage(format!(
                    "the other device refused: {}",
                    String::from_utf8_lossy(&reason)
                )));
            }
            if let Some(n) = self.db.get_setting(Setting::HistoryImported)? {
                let messages = <[u8; 8]>::try_from(n.as_slice())
                    .map(u64::from_be_bytes)
                    .unwrap_or(0) as usize;
                return Ok(messages);
            }
            if std::time::Instant::now() > deadline {
                return Err(Error::Busy(
                    "the other device did not finish linking in time (it adds this device when it syncs); nothing was linked".into(),
                ));
            }
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
    }
}
