//! Several admins of one channel (issue 34), through an MLS group of its admins: an ordinary
//! group conversation (`channels.admin_group`) in which an admin invites a member
//! (`Body::ChannelAdmin`, carrying the link — and so the key — inside MLS), the member makes an
//! admin key of its own for this channel and says its public half (`Body::ChannelAdminKey`),
//! and the admin who invited them signs a roster record that adds it. Removing an admin is a
//! roster record without their key: the relay and every reader refuse their records from
//! then on. Each admin's key is made on their own device and never leaves it.

use samizdat_proto::channel::RecordKind;

use super::*;
use crate::ids::ChannelId;

impl Profile {
    /// Ask a contact to administer a channel this profile is an admin of: they join the
    /// channel's admin group (made on first use) and are added to the roster once their
    /// device has made its key (after their next sync, then ours).
    pub async fn channel_admin_add(&mut self, id: &ChannelId, contact: &ContactId) -> Result<()> {
        let view = self.channel_view(id)?;
        if !view.admin {
            return Err(Error::NotMember(format!(
                "only the admins of {} can add admins",
                view.name
            )));
        }
        let group = match self.channel_admin_group(id)? {
            Some(g) => g,
            None => {
                let g = self.group_create(&format!("{} admins", view.name)).await?;
                self.db.conn().execute(
                    "UPDATE channels SET admin_group = ?2 WHERE channel_id = ?1",
                    params![id.as_bytes(), g.as_bytes()],
                )?;
                g
            }
        };
        let members = self.group_members(&group)?;
        let short = hex::encode(&contact.as_bytes()[..8]);
        if !members.iter().any(|m| m.fingerprint == short) {
            let added = self
                .group_add(&group, std::slice::from_ref(contact))
                .await?;
            if added.added.is_empty() {
                return Err(Error::RelayUnreachable(
                    "their relay cannot be reached; try again later".into(),
                ));
            }
        }
        self.db.conn().execute(
            "INSERT INTO channel_admins (channel_id, contact, invited_by_me) VALUES (?1, ?2, 1)
             ON CONFLICT (channel_id, contact) DO UPDATE SET invited_by_me = 1",
            params![id.as_bytes(), contact.as_bytes()],
        )?;
        let link = self.channel_link(id)?;
        let conv = self.conv(&group)?;
        // Our own key first, at every invitation: a member who joins the group now cannot read
        // what was said before, so this is how the newcomer learns who holds the inviter's key
        // (the keys of admins added before it, it learns only if they say theirs again).
        if let Some(pkcs8) = self.channel_admin_pkcs8(id)? {
            let own = MailboxKey::from_pkcs8(&pkcs8)?.public();
            self.send_body(
                &conv,
                Body::ChannelAdminKey {
                    channel: *id.as_proto(),
                    key: Bytes(own),
                },
            )
            .await?;
        }
        self.send_body(
            &conv,
            Body::ChannelAdmin {
                to: Bytes(contact.as_bytes().to_vec()),
                link,
            },
        )
        .await?;
        Ok(())
    }

    /// Take an admin's key out of the roster (they can no longer write) and out of the admin
    /// group.
    pub async fn channel_admin_remove(
        &mut self,
        id: &ChannelId,
        contact: &ContactId,
    ) -> Result<()> {
        let key: Option<Vec<u8>> = self
            .db
            .conn()
            .query_row(
                "SELECT key FROM channel_admins WHERE channel_id = ?1 AND contact = ?2",
                params![id.as_bytes(), contact.as_bytes()],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
        let Some(key) = key.and_then(|k| <[u8; 32]>::try_from(k).ok()) else {
            return Err(Error::NotFound(
                "they are not an admin of this channel".into(),
            ));
        };
        self.channel_roster(id, |admins| admins.retain(|a| *a != key))
            .await?;
        self.db.conn().execute(
            "DELETE FROM channel_admins WHERE channel_id = ?1 AND contact = ?2",
            params![id.as_bytes(), contact.as_bytes()],
        )?;
        if let Some(group) = self.channel_admin_group(id)?
            && let Err(e) = self.group_remove(&group, contact).await
        {
            tracing::debug!("removing a channel admin from the admin group: {e}");
        }
        Ok(())
    }

    /// Rotate the channel key: the next key is sealed under the current one (so every
    /// follower reads on), and the channel's name is said again under it (for those who follow
    /// from a link made after). A link made from now on opens nothing posted before.
    pub async fn channel_rekey(&mut self, id: &ChannelId) -> Result<u64> {
        let view = self.channel_view(id)?;
        let next = crate::channel::ChannelKey::generate(0)?;
        let next_key = Bytes(next.key.to_vec());
        self.channel_append(id, |_, key, channel| {
            let what = crate::channel::Sealed::Rekey {
                epoch: key.epoch + 1,
                key: next_key.clone(),
            };
            Ok((
                RecordKind::Post,
                Vec::new(),
                crate::channel::seal(key, channel, &what)?,
            ))
        })
        .await?;
        self.channel_append(id, |_, key, channel| {
            let what = crate::channel::Sealed::Info {
                name: view.name.clone(),
                about: view.about.clone(),
            };
            Ok((
                RecordKind::Post,
                Vec::new(),
                crate::channel::seal(key, channel, &what)?,
            ))
        })
        .await
    }

    /// The people who hold an admin key of the channel (as said in its admin group).
    pub fn channel_admin_contacts(&self, id: &ChannelId) -> Result<Vec<ContactId>> {
        let conn = self.db.conn();
        let mut stmt = conn.prepare(
            "SELECT contact FROM channel_admins WHERE channel_id = ?1 AND key IS NOT NULL",
        )?;
        let rows = stmt.query_map(params![id.as_bytes()], |r| r.get::<_, Vec<u8>>(0))?;
        rows.map(|r| {
            let fp = r?;
            <[u8; 32]>::try_from(fp.as_slice())
                .map(ContactId::from_bytes)
                .map_err(|_| Error::Storage("corrupt admin fingerprint".into()))
        })
        .collect()
    }

    fn channel_admin_pkcs8(&self, id: &ChannelId) -> Result<Option<zeroize::Zeroizing<Vec<u8>>>> {
        let k: Option<Vec<u8>> = self.db.conn().query_row(
            "SELECT admin_key FROM channels WHERE channel_id = ?1",
            params![id.as_bytes()],
            |r| r.get(0),
        )?;
        Ok(k.map(zeroize::Zeroizing::new))
    }

    fn channel_admin_group(&self, id: &ChannelId) -> Result<Option<ConversationId>> {
        let g: Option<Vec<u8>> = self.db.conn().query_row(
            "SELECT admin_group FROM channels WHERE channel_id = ?1",
            params![id.as_bytes()],
            |r| r.get(0),
        )?;
        g.map(|g| ConversationId::from_slice(&g)).transpose()
    }

    /// `Body::ChannelAdmin` (inside the caller's transaction): kept if it is for us.
    pub(super) fn apply_channel_admin(
        &self,
        tx: &Tx,
        conv: &Conv,
        to: &Bytes,
        link: &str,
    ) -> Result<()> {
        if to.0.as_slice() != self.fingerprint.as_slice() {
            return Ok(());
        }
        let Ok(parsed) = crate::channel::ChannelLink::parse(link) else {
            return Ok(());
        };
        tx.conn().execute(
            "INSERT OR REPLACE INTO channel_admin_invites (channel_id, group_id, link, received_at) VALUES (?1, ?2, ?3, ?4)",
            params![parsed.channel.as_bytes(), conv.group_id.as_bytes(), link, now_secs() as i64],
        )?;
        Ok(())
    }

    /// `Body::ChannelAdminKey` (inside the caller's transaction): who holds which key.
    pub(super) fn apply_channel_admin_key(
        &self,
        tx: &Tx,
        sender: &[u8; 32],
        channel: &Id,
        key: &Bytes,
    ) -> Result<()> {
        // Our own key is not news (and we are not listed among the others).
        if key.0.len() != 32 || *sender == self.fingerprint {
            return Ok(());
        }
        let known: i64 = tx.conn().query_row(
            "SELECT COUNT(*) FROM channels WHERE channel_id = ?1",
            params![channel.as_bytes()],
            |r| r.get(0),
        )?;
        if known == 0 {
            return Ok(());
        }
        tx.conn().execute(
            "INSERT INTO channel_admins (channel_id, contact, key) VALUES (?1, ?2, ?3)
             ON CONFLICT (channel_id, contact) DO UPDATE SET key = excluded.key, in_roster = 0",
            params![channel.as_bytes(), &sender[..], key.0],
        )?;
        Ok(())
    }

    /// After a sync: take invitations to administer (follow, make a key, say it) and add the
    /// keys of the people this profile invited to the roster. A failure waits for the next
    /// sync.
    pub(crate) async fn channel_admin_work_quietly(&mut self) {
        if let Err(e) = self.take_channel_admin_invites().await {
            tracing::debug!("channel admin invitations: {e}");
        }
        if let Err(e) = self.add_invited_admins().await {
            tracing::debug!("channel admin keys: {e}");
        }
    }

    async fn take_channel_admin_invites(&mut self) -> Result<()> {
        let invites: Vec<(Vec<u8>, Vec<u8>, String)> = {
            let conn = self.db.conn();
            let mut stmt =
                conn.prepare("SELECT channel_id, group_id, link FROM channel_admin_invites")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        for (channel, group, link) in invites {
            let id = self.channel_follow(&link).await?;
            let group = ConversationId::from_slice(&group)?;
            let existing: Option<Vec<u8>> = self.db.conn().query_row(
                "SELECT admin_key FROM channels WHERE channel_id = ?1",
                params![id.as_bytes()],
                |r| r.get(0),
            )?;
            let public = match existing {
                Some(pkcs8) => MailboxKey::from_pkcs8(&pkcs8)?.public(),
                None => {
                    let (key, pkcs8) = MailboxKey::generate()?;
                    let pkcs8 = zeroize::Zeroizing::new(pkcs8);
                    self.db.conn().execute(
                        "UPDATE channels SET admin_key = ?2, admin_group = ?3 WHERE channel_id = ?1",
                        params![id.as_bytes(), &pkcs8[..], group.as_bytes()],
                    )?;
                    key.public()
                }
            };
            let conv = self.conv(&group)?;
            self.send_body(
                &conv,
                Body::ChannelAdminKey {
                    channel: *id.as_proto(),
                    key: Bytes(public),
                },
            )
            .await?;
            self.db.conn().execute(
                "DELETE FROM channel_admin_invites WHERE channel_id = ?1",
                params![channel],
            )?;
        }
        Ok(())
    }

    async fn add_invited_admins(&mut self) -> Result<()> {
        let due: Vec<(Vec<u8>, Vec<u8>, Vec<u8>)> = {
            let conn = self.db.conn();
            let mut stmt = conn.prepare(
                "SELECT channel_id, contact, key FROM channel_admins
                 WHERE invited_by_me = 1 AND in_roster = 0 AND key IS NOT NULL",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        for (channel, contact, key) in due {
            let id = ChannelId::from_slice(&channel)?;
            let Ok(key) = <[u8; 32]>::try_from(key) else {
                continue;
            };
            self.channel_roster(&id, |admins| {
                if !admins.contains(&key) {
                    admins.push(key);
                }
            })
            .await?;
            self.db.conn().execute(
                "UPDATE channel_admins SET in_roster = 1 WHERE channel_id = ?1 AND contact = ?2",
                params![channel, contact],
            )?;
        }
        Ok(())
    }

    /// Publish a roster record: the chain's admin set, changed by `change`.
    async fn channel_roster(
        &mut self,
        id: &ChannelId,
        change: impl Fn(&mut Vec<[u8; 32]>),
    ) -> Result<u64> {
        self.channel_append(id, |chain_admins, _, _| {
            let mut admins = chain_admins.to_vec();
            change(&mut admins);
            if admins.is_empty() {
                return Err(Error::Usage("a channel keeps at least one admin".into()));
            }
            if admins.len() > samizdat_proto::channel::MAX_CHANNEL_ADMINS {
                return Err(Error::Usage(format!(
                    "a channel has at most {} admins",
                    samizdat_proto::channel::MAX_CHANNEL_ADMINS
                )));
            }
            Ok((RecordKind::Roster, admins, Vec::new()))
        })
        .await
    }
}
