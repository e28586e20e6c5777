//! Groups: create, add, remove, leave.

use super::*;

impl Profile {
    pub async fn group_create(&mut self, name: &str) -> Result<()> {
        let name = name.trim();
        self.check_new_name(name, "the group name")?;
        let group_id = random_id();
        let mut group = self.mls.create_group(group_id.as_bytes())?;
        let token = group.token()?;
        self.relay
            .create_group(random_id(), group_id, group.epoch(), sha256(&token))
            .await?;
        let relay = self.relay.base().to_string();
        self.db.transaction(|| {
            group.save()?;
            self.db.conn().execute(
                "INSERT INTO conversations (group_id, kind, name, relay, read_epoch, cursor, created_at) VALUES (?1, 'group', ?2, ?3, ?4, 0, ?5)",
                params![group_id.as_bytes(), name, relay, group.epoch() as i64, now_secs() as i64],
            )?;
            self.store_token(&group_id, group.epoch(), &token)
        })?;
        Ok(())
    }

    pub(super) fn group_conv(&self, name: &str) -> Result<Conv> {
        let conv = self.conv_by_name(name)?;
        if conv.kind != ConvKind::Group {
            return Err(Error::Usage(format!(
                "{name:?} is a 1:1 conversation, not a group"
            )));
        }
        if !conv.active {
            return Err(Error::NotMember(format!(
                "you are no longer a member of {name:?}"
            )));
        }
        Ok(conv)
    }

    pub(super) fn contact_route(
        &self,
        alias: &str,
    ) -> Result<(Vec<u8>, Option<String>, Option<Id>)> {
        let row: Option<(Vec<u8>, Option<String>, Option<Vec<u8>>)> = self
            .db
            .conn()
            .query_row(
                "SELECT fingerprint, relay, mailbox_id FROM contacts WHERE alias = ?1",
                params![alias],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let (fp, relay, mailbox) =
            row.ok_or_else(|| Error::NotFound(format!("no contact called {alias:?}")))?;
        let mailbox = mailbox
            .map(|m| Id::from_slice(&m))
            .transpose()
            .map_err(|_| Error::Storage("corrupt mailbox id".into()))?;
        Ok((fp, relay, mailbox))
    }

    /// Add contacts to a group: claim and verify each one's KeyPackage, commit, Welcome them.
    pub async fn group_add(&mut self, name: &str, aliases: &[String]) -> Result<()> {
        let conv = self.group_conv(name)?;
        let mut adds = Vec::new();
        for alias in aliases {
            let (fp, relay, mailbox) = self.contact_route(alias)?;
            let (Some(relay_url), Some(mailbox)) = (relay, mailbox) else {
                return Err(Error::Usage(format!(
                    "{alias:?} has not shared a mailbox yet; sync and try again"
                )));
            };
            let claimed = self
                .relay_for(&relay_url)?
                .claim_key_package(&mailbox)
                .await?;
            if mls::key_package_fingerprint(&claimed.key_package.0)?.as_slice() != fp.as_slice() {
                return Err(Error::KeyPackageMismatch);
            }
            adds.push((claimed.key_package.0, relay_url, mailbox));
        }
        self.commit_change(&conv, adds, Vec::new(), None).await?;
        let meta = Body::GroupMeta {
            name: conv.name.clone(),
        };
        queued(self.send_body(&conv.name, meta).await)?;
        Ok(())
    }

    pub async fn group_remove(&mut self, name: &str, alias: &str) -> Result<()> {
        let conv = self.group_conv(name)?;
        let (fp, _, _) = self.contact_route(alias)?;
        let group = self.mls.load(conv.group_id.as_bytes())?;
        if !group
            .members()
            .iter()
            .any(|m| m.fingerprint.as_slice() == fp.as_slice())
        {
            return Err(Error::NotFound(format!(
                "{alias:?} is not a member of {name:?}"
            )));
        }
        drop(group);
        self.commit_change(&conv, Vec::new(), vec![fp], None).await
    }

    /// Leave a group: announce it; the next member to sync commits our removal.
    pub async fn group_leave(&mut self, name: &str) -> Result<()> {
        let conv = self.group_conv(name)?;
        queued(self.send_body(&conv.name, Body::Leave).await)?;
        self.db.conn().execute(
            "UPDATE conversations SET active = 0, status = 'you left' WHERE group_id = ?1",
            params![conv.group_id.as_bytes()],
        )?;
        Ok(())
    }
}
