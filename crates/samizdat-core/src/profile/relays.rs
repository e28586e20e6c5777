//! Several independent relays per profile: a mailbox (with its own owner key and id, so the
//! relays cannot link them) and a KeyPackage pool on each; where other people can be
//! reached (all their mailboxes, in their order); and which relays are down right now.

use std::sync::Arc;

use super::*;
use crate::payload::{MAX_MAILBOXES, MailboxAddr};

/// One of our mailboxes other than the primary (the primary lives in `Profile::relay`,
/// `mailbox`, `mailbox_key`).
pub(crate) struct OwnMailbox {
    pub(crate) relay: RelayClient,
    pub(crate) id: Id,
    pub(crate) key: Arc<MailboxKey>,
}

/// The proxy identity purpose of a mailbox: the primary keeps the one it always had.
fn mailbox_purpose(relay: &str, primary: bool) -> Vec<u8> {
    if primary {
        b"mailbox".to_vec()
    } else {
        format!("mailbox:{relay}").into_bytes()
    }
}

impl Profile {
    /// Our other mailboxes, from the database; a profile made before version 10 gets its
    /// primary's row here.
    pub(super) fn load_mailboxes(
        db: &Db,
        net: &crate::net::Net,
        salt: &[u8],
        primary: &str,
        primary_id: &Id,
    ) -> Result<Vec<OwnMailbox>> {
        let rows: Vec<(String, Vec<u8>, Vec<u8>)> = {
            let conn = db.conn();
            let mut stmt = conn.prepare(
                "SELECT relay, mailbox_id, mailbox_key FROM mailboxes ORDER BY position",
            )?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<rusqlite::Result<_>>()?
        };
        if rows.is_empty() {
            let key = zeroize::Zeroizing::new(db.setting(Setting::MailboxKey)?);
            db.conn().execute(
                "INSERT INTO mailboxes (relay, mailbox_id, mailbox_key, position, created_at) VALUES (?1, ?2, ?3, 0, ?4)",
                params![primary, primary_id.as_bytes(), &key[..], now_secs() as i64],
            )?;
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for (relay, id, key) in rows {
            if relay == primary {
                continue;
            }
            let identity = isolation_identity(net, salt, &mailbox_purpose(&relay, false));
            out.push(OwnMailbox {
                relay: RelayClient::with_net(&relay, net, identity.as_deref())?,
                id: Id::from_slice(&id).map_err(|_| Error::Storage("corrupt mailbox id".into()))?,
                key: Arc::new(MailboxKey::from_pkcs8(&zeroize::Zeroizing::new(key))?),
            });
        }
        Ok(out)
    }

    /// The relays this profile has a mailbox on, the primary first.
    pub fn relays(&self) -> Vec<String> {
        std::iter::once(self.relay.base().to_string())
            .chain(self.others.iter().map(|m| m.relay.base().to_string()))
            .collect()
    }

    /// Where others can reach us: every mailbox, the primary first.
    pub(crate) fn own_addresses(&self) -> Vec<MailboxAddr> {
        std::iter::once(MailboxAddr {
            relay: self.relay.base().to_string(),
            mailbox: self.mailbox,
        })
        .chain(self.others.iter().map(|m| MailboxAddr {
            relay: m.relay.base().to_string(),
            mailbox: m.id,
        }))
        .collect()
    }

    /// Where others can reach this person: this device's mailboxes, then those of the
    /// person's other (not revoked) devices; at most `MAX_MAILBOXES`.
    pub(crate) fn announced_addresses(&self) -> Vec<MailboxAddr> {
        let own = self.own_addresses();
        let me = self.device_fp().ok();
        let records = self.device_records().unwrap_or_default();
        let mut out: Vec<MailboxAddr> = Vec::new();
        if !records
            .iter()
            .any(|d| Some(d.id.0.as_slice()) == me.as_ref().map(|m| &m[..]))
        {
            out.extend(own.iter().cloned());
        }
        // The person's devices in the order they were linked (the first device first), so
        // that contacts reach the same device whichever one announced.
        for d in records {
            if Some(d.id.0.as_slice()) == me.as_ref().map(|m| &m[..]) {
                out.extend(own.iter().cloned());
                continue;
            }
            if d.revoked_at.is_some() {
                continue;
            }
            if let (Some(relay), Some(mailbox)) = (d.relay, d.mailbox) {
                out.push(MailboxAddr { relay, mailbox });
            }
        }
        let mut seen = std::collections::HashSet::new();
        out.retain(|a| seen.insert(a.mailbox));
        out.truncate(MAX_MAILBOXES);
        out
    }

    /// Open a mailbox (and a KeyPackage pool) on another, independent relay, then tell the
    /// members of every conversation where we can now be reached.
    pub async fn add_relay(&mut self, url: &str) -> Result<String> {
        let spec = crate::relay_client::normalize_spec(url)?;
        if self.relays().contains(&spec) {
            return Err(Error::Usage(format!(
                "{spec} is already one of your relays"
            )));
        }
        if self.others.len() + 1 >= MAX_MAILBOXES {
            return Err(Error::Usage(format!(
                "a profile can have at most {MAX_MAILBOXES} relays"
            )));
        }
        let identity = isolation_identity(
            &self.net,
            &self.isolation_salt,
            &mailbox_purpose(&spec, false),
        );
        let relay = RelayClient::with_net(&spec, &self.net, identity.as_deref())?;
        relay.health().await?;
        let (key, pkcs8) = MailboxKey::generate()?;
        let pkcs8 = zeroize::Zeroizing::new(pkcs8);
        let id = random_id();
        relay.create_mailbox(random_id(), id, key.public()).await?;
        let mailbox = OwnMailbox {
            relay,
            id,
            key: Arc::new(key),
        };
        let mut kps = Vec::with_capacity(KEY_PACKAGE_POOL);
        for _ in 0..KEY_PACKAGE_POOL {
            kps.push(self.mls.key_package(false)?);
        }
        let last_resort = self.mls.key_package(true)?;
        mailbox
            .relay
            .upload_key_packages(&mailbox.key, &mailbox.id, kps, Some(last_resort))
            .await?;
        self.db.conn().execute(
            "INSERT INTO mailboxes (relay, mailbox_id, mailbox_key, position, last_resort_at, created_at)
             VALUES (?1, ?2, ?3, (SELECT COALESCE(MAX(position), 0) + 1 FROM mailboxes), ?4, ?4)",
            params![spec, id.as_bytes(), &pkcs8[..], now_secs() as i64],
        )?;
        self.others.push(mailbox);
        self.announce_addresses().await?;
        Ok(spec)
    }

    /// Close our mailbox on a relay (the last one cannot go). When the primary goes, the
    /// next relay becomes the primary. Members are told where we can be reached now.
    pub async fn remove_relay(&mut self, url: &str) -> Result<()> {
        let spec = crate::relay_client::normalize_spec(url)?;
        if !self.relays().contains(&spec) {
            return Err(Error::NotFound(format!("{spec} is not one of your relays")));
        }
        if self.others.is_empty() {
            return Err(Error::Usage(
                "this is your only relay; add another before removing it".into(),
            ));
        }
        if spec == self.relay.base() {
            let next = self.others.remove(0);
            let pkcs8: Vec<u8> = self.db.conn().query_row(
                "SELECT mailbox_key FROM mailboxes WHERE relay = ?1",
                params![next.relay.base()],
                |r| r.get(0),
            )?;
            let pkcs8 = zeroize::Zeroizing::new(pkcs8);
            self.db.transaction(|tx| {
                tx.conn()
                    .execute("DELETE FROM mailboxes WHERE relay = ?1", params![spec])?;
                self.db
                    .set_setting(Setting::Relay, next.relay.base().as_bytes())?;
                self.db
                    .set_setting(Setting::MailboxId, next.id.as_bytes())?;
                self.db.set_setting(Setting::MailboxKey, &pkcs8)
            })?;
            // The primary keeps the primary's proxy identity.
            self.relay = RelayClient::with_net(
                next.relay.base(),
                &self.net,
                self.mailbox_identity().as_deref(),
            )?;
            self.mailbox = next.id;
            self.mailbox_key = next.key;
        } else {
            self.db
                .conn()
                .execute("DELETE FROM mailboxes WHERE relay = ?1", params![spec])?;
            self.others.retain(|m| m.relay.base() != spec);
        }
        // The primary may have changed: a duress unlock uses the current one.
        self.refresh_duress()?;
        self.announce_addresses().await
    }

    /// Tell every conversation where we can be reached (a profile message; queued when a
    /// relay is away).
    pub(super) async fn announce_addresses(&mut self) -> Result<()> {
        for conv in self.active_convs()? {
            self.announce_in(&conv).await?;
        }
        Ok(())
    }

    /// Our display name and mailboxes, sent in one conversation (queued when its relay is
    /// away; another failure is reported, not returned).
    pub(super) async fn announce_in(&mut self, conv: &Conv) -> Result<()> {
        let payload = Payload {
            unknown: None,
            id: random_id(),
            expires_in: None,
            sent_at: now_millis(),
            body: Body::Profile {
                name: self.name.clone(),
                mailboxes: self.announced_addresses(),
                devices: self.own_device_list()?,
            },
        };
        match self.send_payload(conv, payload).await {
            Ok(_) | Err(Error::RelayUnreachable(_)) => Ok(()),
            Err(e) => {
                let text = Notice::AnnounceFailed {
                    error: Problem::from(&e),
                };
                self.emit(Event::notice(Some(conv), text))
            }
        }
    }

    /// Remember where a person can be reached (what they told us themselves, or their
    /// invite), replacing what we knew. Bad addresses are skipped.
    pub(super) fn store_peer_addresses(&self, fp: &[u8], addrs: &[MailboxAddr]) -> Result<()> {
        let good: Vec<(String, &MailboxAddr)> = addrs
            .iter()
            .take(MAX_MAILBOXES)
            .filter(|a| crate::check_foreign_relay_url(&a.relay).is_ok())
            .filter_map(|a| {
                crate::relay_client::normalize_spec(&a.relay)
                    .ok()
                    .map(|s| (s, a))
            })
            .collect();
        if good.is_empty() {
            return Ok(());
        }
        let conn = self.db.conn();
        conn.execute(
            "DELETE FROM peer_mailboxes WHERE fingerprint = ?1",
            params![fp],
        )?;
        for (pos, (relay, a)) in good.iter().enumerate() {
            conn.execute(
                "INSERT OR REPLACE INTO peer_mailboxes (fingerprint, relay, mailbox_id, position, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![fp, relay, a.mailbox.as_bytes(), pos as i64, now_secs() as i64],
            )?;
        }
        Ok(())
    }

    /// Every mailbox we know for a person, in their order.
    pub(super) fn peer_addresses(&self, fp: &[u8]) -> Result<Vec<MailboxAddr>> {
        let conn = self.db.conn();
        let mut stmt = conn.prepare(
            "SELECT relay, mailbox_id FROM peer_mailboxes WHERE fingerprint = ?1 ORDER BY position",
        )?;
        let rows = stmt
            .query_map(params![fp], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows
            .into_iter()
            .filter_map(|(relay, id)| {
                Id::from_slice(&id)
                    .ok()
                    .map(|mailbox| MailboxAddr { relay, mailbox })
            })
            .collect())
    }

    /// Read our other mailboxes (the primary is read by `sync_mailbox`). One that cannot be
    /// reached is noted as down; the others are still read.
    /// Returns how many answered.
    pub(super) async fn sync_other_mailboxes(&mut self) -> Result<usize> {
        let mut reached = 0;
        for i in 0..self.others.len() {
            let (relay, id, key) = {
                let m = &self.others[i];
                (m.relay.clone(), m.id, m.key.clone())
            };
            match self.read_one_mailbox(&relay, &id, &key).await {
                Ok(()) => {
                    reached += 1;
                    self.relay_up(relay.base());
                }
                Err(Error::RelayUnreachable(_)) => self.relay_down(relay.base()),
                Err(e) => return Err(e),
            }
        }
        Ok(reached)
    }

    /// Keep the KeyPackage pools of our other mailboxes usable (the primary's is kept by
    /// `maintain_key_packages`, which this follows): at most once an hour per process, and
    /// after a join (which may have used one).
    pub(super) async fn maintain_other_pools(&mut self) -> Result<()> {
        let now = now_secs();
        if self.others_checked_at != 0 && now < self.others_checked_at + KP_CHECK_INTERVAL {
            return Ok(());
        }
        self.others_checked_at = now;
        for i in 0..self.others.len() {
            let (relay, id, key) = {
                let m = &self.others[i];
                (m.relay.clone(), m.id, m.key.clone())
            };
            let Ok(count) = relay.key_package_count(&key, &id).await else {
                continue;
            };
            let rotated_at: i64 = self.db.conn().query_row(
                "SELECT last_resort_at FROM mailboxes WHERE relay = ?1",
                params![relay.base()],
                |r| r.get(0),
            )?;
            let now = now_secs();
            let rotate = !count.has_last_resort || now >= rotated_at as u64 + LAST_RESORT_ROTATION;
            let refill = if (count.available as usize) < KEY_PACKAGE_POOL / 2 {
                KEY_PACKAGE_POOL - count.available as usize
            } else {
                0
            };
            if refill == 0 && !rotate {
                continue;
            }
            let mut kps = Vec::with_capacity(refill);
            for _ in 0..refill {
                kps.push(self.mls.key_package(false)?);
            }
            let last_resort = rotate.then(|| self.mls.key_package(true)).transpose()?;
            if relay
                .upload_key_packages(&key, &id, kps, last_resort)
                .await
                .is_ok()
                && rotate
            {
                self.db.conn().execute(
                    "UPDATE mailboxes SET last_resort_at = ?2 WHERE relay = ?1",
                    params![relay.base(), now as i64],
                )?;
            }
        }
        Ok(())
    }

    /// A relay answered: it is not down.
    pub(super) fn relay_up(&mut self, relay: &str) {
        if self
            .down_since
            .remove(relay.trim_end_matches('/'))
            .is_some()
        {
            self.save_down();
        }
    }

    /// A relay could not be reached: remember since when (the first failure). Kept in the
    /// profile, so one-shot commands (`samizdat sync` from cron) also move conversations.
    pub(super) fn relay_down(&mut self, relay: &str) {
        let key = relay.trim_end_matches('/').to_string();
        if let std::collections::hash_map::Entry::Vacant(e) = self.down_since.entry(key) {
            e.insert(now_millis());
            self.save_down();
        }
    }

    fn save_down(&self) {
        if let Ok(json) = serde_json::to_vec(&self.down_since)
            && let Err(e) = self.db.set_setting(Setting::RelaysDown, &json)
        {
            tracing::warn!("cannot store which relays are down: {e}");
        }
    }

    /// Which relays were down when the profile was last used.
    pub(super) fn load_down(db: &Db) -> HashMap<String, u64> {
        db.get_setting(Setting::RelaysDown)
            .ok()
            .flatten()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// How long (ms) a relay has been unreachable, if it is.
    pub(super) fn down_for(&self, relay: &str) -> Option<u64> {
        self.down_since
            .get(relay.trim_end_matches('/'))
            .map(|since| now_millis().saturating_sub(*since))
    }
}
