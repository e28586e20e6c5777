//! Signed device lists (security review 3, H2): which device keys speak for a person.
//!
//! The device with the identity key signs a new list (`crate::device::DeviceList`, the next
//! version) whenever a device is linked or revoked, sends it in every conversation and in the self
//! group, and every device of the person passes the newest one on when it announces itself
//! (`Body::Profile`). Contacts keep the newest list of each person (`device_lists`,
//! `listed_devices`) and:
//! - refuse a Welcome committed by a revoked device, and treat one from a linked device they
//!   have no list for as an invitation from a stranger (consent first);
//! - ignore messages from a revoked device;
//! - remove a revoked device's leaves from the groups they share with it (the next member who
//!   syncs commits it, as for a member who left);
//! - say "X linked a new device" / "X removed a device" in the conversation the list came in.

use super::*;
use crate::device::DeviceList;

/// What a person's newest list says of one of their devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeviceStatus {
    /// The identity key itself (a first device) or a listed device.
    Speaks,
    Revoked,
    /// A linked device that no list we hold names (yet).
    Unknown,
}

impl Profile {
    /// A device that `person` revoked committed in `conv` (its commit is applied: refusing it
    /// would split the group): undo what it could undo — its own leaf and every leaf it added
    /// are removed by the next commit (ours at the end of this sync, or whoever's comes
    /// first), and the conversation says so. Removals it made stand (inside the caller's
    /// transaction).
    pub(super) fn undo_revoked_commit(
        &self,
        conv: &Conv,
        person: &[u8; 32],
        device: &[u8; 32],
        before: &[crate::mls::Member],
        after: &[crate::mls::Member],
    ) -> Result<()> {
        let added = after
            .iter()
            .filter(|m| !before.iter().any(|b| b.device == m.device))
            .map(|m| m.device);
        let mut undone = 0usize;
        for leaf in std::iter::once(*device).chain(added) {
            self.db.conn().execute(
                "INSERT OR IGNORE INTO pending_removals (group_id, member, created_at) VALUES (?1, ?2, ?3)",
                params![conv.group_id.as_bytes(), &leaf[..], now_secs() as i64],
            )?;
            undone += 1;
        }
        let who = self.label(&conv.group_id, person)?;
        let text = Notice::RevokedDeviceChangedGroup {
            who,
            added: undone.saturating_sub(1) as u64,
        };
        self.emit(Event::notice(Some(conv), text))
    }

    /// Our own newest signed list (every device of ours keeps it to pass it on).
    pub(super) fn own_device_list(&self) -> Result<Option<DeviceList>> {
        self.stored_list(&self.fingerprint)
    }

    fn stored_list(&self, person: &[u8; 32]) -> Result<Option<DeviceList>> {
        let json: Option<Vec<u8>> = self
            .db
            .conn()
            .query_row(
                "SELECT list FROM device_lists WHERE person = ?1",
                params![&person[..]],
                |r| r.get(0),
            )
            .optional()?;
        Ok(json.and_then(|j| serde_json::from_slice(&j).ok()))
    }

    /// What `person`'s newest list says of `device` (a device key fingerprint).
    pub(crate) fn device_status(
        &self,
        person: &[u8; 32],
        device: &[u8; 32],
    ) -> Result<DeviceStatus> {
        if person == device {
            return Ok(DeviceStatus::Speaks);
        }
        let revoked: Option<bool> = self
            .db
            .conn()
            .query_row(
                "SELECT revoked FROM listed_devices WHERE person = ?1 AND device_fp = ?2",
                params![&person[..], &device[..]],
                |r| r.get(0),
            )
            .optional()?;
        Ok(match revoked {
            Some(true) => DeviceStatus::Revoked,
            Some(false) => DeviceStatus::Speaks,
            None => DeviceStatus::Unknown,
        })
    }

    /// The device with the identity key: sign the next list from the device records, keep it
    /// and send it in every conversation (a conversation whose relay is away gets it queued).
    pub(super) async fn publish_device_list(&mut self) -> Result<()> {
        if !self.holds_identity()? {
            return Ok(());
        }
        let records = self.device_records()?;
        let fp = |r: &DeviceRecord| -> Option<[u8; 32]> { r.id.0.as_slice().try_into().ok() };
        let mut devices: Vec<[u8; 32]> = vec![self.device_fp()?];
        devices.extend(
            records
                .iter()
                .filter(|r| r.revoked_at.is_none())
                .filter_map(fp),
        );
        devices.dedup();
        let revoked: Vec<[u8; 32]> = records
            .iter()
            .filter(|r| r.revoked_at.is_some())
            .filter_map(fp)
            .collect();
        let version = self.own_device_list()?.map_or(1, |l| l.version + 1);
        let list = DeviceList::sign(
            self.cipher_suite(),
            &zeroize::Zeroizing::new(self.db.setting(Setting::MlsSecret)?),
            &self.db.setting(Setting::MlsPublic)?,
            version,
            devices,
            revoked,
        )?;
        let me = self.fingerprint;
        self.db
            .transaction(|tx| self.keep_device_list(tx, &me, &list, None))?;
        for conv in self.active_convs()? {
            if is_self_group(&conv) {
                continue;
            }
            let payload = Payload {
                unknown: None,
                id: random_id(),
                expires_in: None,
                sent_at: now_millis(),
                body: Body::DeviceList { list: list.clone() },
            };
            match self.send_payload(&conv, payload).await {
                Ok(_) | Err(Error::RelayUnreachable(_)) => {}
                Err(e) => {
                    let text = Notice::DeviceListNotSent {
                        error: Problem::from(&e),
                    };
                    self.emit(Event::notice(Some(&conv), text))?;
                }
            }
        }
        Ok(())
    }

    /// A list that arrived from `sender` (in `conv`, or the self group when `conv` is `None`):
    /// kept if it is signed by the sender's identity and newer than the one we hold; its news
    /// told and its revoked devices' leaves queued for removal. Older or foreign lists change
    /// nothing. Inside the caller's transaction.
    pub(super) fn keep_device_list(
        &self,
        tx: &Tx,
        sender: &[u8; 32],
        list: &DeviceList,
        conv: Option<&Conv>,
    ) -> Result<()> {
        let person = match list.verify() {
            Ok(p) if p == *sender => p,
            _ => {
                if let Some(conv) = conv {
                    let text = Notice::DeviceListUnsigned;
                    self.emit(Event::notice(Some(conv), text))?;
                }
                return Ok(());
            }
        };
        let previous = self.stored_list(&person)?;
        if previous.as_ref().is_some_and(|p| p.version >= list.version) {
            return Ok(());
        }
        let json = serde_json::to_vec(list).map_err(|e| Error::Storage(e.to_string()))?;
        let conn = tx.conn();
        conn.execute(
            "INSERT INTO device_lists (person, version, list) VALUES (?1, ?2, ?3)
             ON CONFLICT(person) DO UPDATE SET version = excluded.version, list = excluded.list",
            params![&person[..], list.version as i64, json],
        )?;
        conn.execute(
            "DELETE FROM listed_devices WHERE person = ?1",
            params![&person[..]],
        )?;
        for (set, revoked) in [(&list.devices, false), (&list.revoked, true)] {
            for d in set {
                conn.execute(
                    "INSERT OR REPLACE INTO listed_devices (person, device_fp, revoked) VALUES (?1, ?2, ?3)",
                    params![&person[..], &d.0, revoked],
                )?;
            }
        }
        drop(conn);
        if person == self.fingerprint {
            return Ok(());
        }
        // The news, once, where the list came in.
        if let Some(conv) = conv {
            let before = previous.as_ref();
            let added = list
                .devices
                .iter()
                .filter(|d| d.0 != person && !before.is_some_and(|b| b.lists(&d.0)))
                .count();
            let removed = list
                .revoked
                .iter()
                .filter(|d| !before.is_some_and(|b| b.revokes(&d.0)))
                .count();
            let who = self.label(&conv.group_id, &person)?;
            if added > 0 {
                let text = Notice::ContactDeviceAdded { who: who.clone() };
                self.emit(Event::notice(Some(conv), text))?;
            }
            if removed > 0 {
                let text = Notice::ContactDeviceRemoved { who: who.clone() };
                self.emit(Event::notice(Some(conv), text))?;
            }
        }
        // Leaves of revoked devices in groups we share: removed by the next commit.
        for c in self.active_convs()? {
            let present: Vec<Vec<u8>> = self
                .mls
                .load(c.group_id.as_bytes())?
                .members()
                .iter()
                .filter(|m| {
                    m.fingerprint.as_slice() == person.as_slice() && list.revokes(&m.device)
                })
                .map(|m| m.device.to_vec())
                .collect();
            for device in present {
                tx.conn().execute(
                    "INSERT OR IGNORE INTO pending_removals (group_id, member, created_at) VALUES (?1, ?2, ?3)",
                    params![c.group_id.as_bytes(), device, now_secs() as i64],
                )?;
            }
        }
        Ok(())
    }
}
