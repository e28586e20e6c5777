//! Read-only views for the fronts: conversations, history, members, invitations.

use super::*;

/// A pending group invitation (a message request).
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct InvitationView {
    pub id: i64,
    /// Key fingerprint (hex prefix) of the member who added us; not a contact.
    pub from: String,
    /// The relay hosting the group's log.
    pub relay: String,
    /// False when this profile has never used that relay: accepting connects to it.
    pub relay_known: bool,
    pub members: usize,
    pub received_at: u64,
    /// Why this invitation needs a second look, if it does.
    pub warning: Option<String>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct ContactView {
    /// The contact's stable id: their full key fingerprint (hex).
    pub id: String,
    pub alias: String,
    pub display_name: String,
    pub fingerprint: String,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct ConversationView {
    /// The conversation's stable id (its MLS group id, base64url).
    pub id: String,
    pub name: String,
    pub kind: ConvKind,
    pub unread: u64,
    pub members: usize,
    pub active: bool,
    pub status: Option<String>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct MessageView {
    pub id: String,
    pub from: String,
    pub text: String,
    pub sent_at: u64,
    pub seq: Option<u64>,
    pub outgoing: bool,
    /// False while an outgoing message waits for the relay's acknowledgement.
    pub delivered: bool,
    /// Set when the relay refused an outgoing message for good (with the reason).
    pub failed: Option<String>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct MemberView {
    pub name: String,
    pub fingerprint: String,
    pub me: bool,
    /// False until the member has announced itself in the group (it joins by processing its
    /// Welcome, then sends its name). A member that stays unjoined can be sent a fresh
    /// Welcome (`group readd`).
    pub joined: bool,
}

impl Profile {
    pub fn conversations(&self) -> Result<Vec<ConversationView>> {
        let conn = self.db.conn();
        let mut stmt = conn.prepare(
            "SELECT c.group_id, c.name, c.kind, c.active, c.status,
                    (SELECT COUNT(*) FROM messages m WHERE m.group_id = c.group_id AND m.unread = 1)
             FROM conversations c ORDER BY c.created_at",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, i64>(5)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        drop(stmt);
        drop(conn);
        let mut out = Vec::new();
        for (gid, name, kind, active, status, unread) in rows {
            let members = if active != 0 {
                self.mls.load(&gid).map(|g| g.members().len()).unwrap_or(0)
            } else {
                0
            };
            out.push(ConversationView {
                id: Id::from_slice(&gid)
                    .map_err(|_| Error::Storage("corrupt group id".into()))?
                    .to_string(),
                name,
                kind: ConvKind::from_sql(&kind)?,
                unread: unread as u64,
                members,
                active: active != 0,
                status,
            });
        }
        Ok(out)
    }

    /// Messages of a conversation in log order; marks them read.
    pub fn history(&self, target: &str) -> Result<Vec<MessageView>> {
        let conv = self.conv_by_name(target)?;
        let rows = {
            let conn = self.db.conn();
            let mut stmt = conn.prepare(
                "SELECT id, sender_fp, body, sent_at, seq, outgoing, pending_body IS NULL AND failed IS NULL, failed FROM messages
                 WHERE group_id = ?1 ORDER BY seq IS NULL, seq, received_at",
            )?;
            stmt.query_map(params![conv.group_id.as_bytes()], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, bool>(6)?,
                    r.get::<_, Option<String>>(7)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?
        };
        let mut out = Vec::with_capacity(rows.len());
        for (id, fp, text, sent_at, seq, outgoing, delivered, failed) in rows {
            out.push(MessageView {
                id: Bytes::encode(&id),
                from: self.label(&conv.group_id, &fp)?,
                text,
                sent_at: sent_at as u64,
                seq: seq.map(|s| s as u64),
                outgoing: outgoing != 0,
                delivered,
                failed,
            });
        }
        self.db.conn().execute(
            "UPDATE messages SET unread = 0 WHERE group_id = ?1",
            params![conv.group_id.as_bytes()],
        )?;
        Ok(out)
    }

    pub fn group_members(&self, name: &str) -> Result<Vec<MemberView>> {
        let conv = self.conv_by_name(name)?;
        if !conv.active {
            return Err(Error::NotMember(format!(
                "you are no longer a member of {name:?}"
            )));
        }
        let group = self.mls.load(conv.group_id.as_bytes())?;
        group
            .members()
            .into_iter()
            .map(|m| {
                let me = m.fingerprint == self.fingerprint;
                let announced: bool = self.db.conn().query_row(
                    "SELECT EXISTS (SELECT 1 FROM member_names WHERE group_id = ?1 AND fingerprint = ?2)",
                    params![conv.group_id.as_bytes(), &m.fingerprint[..]],
                    |r| r.get(0),
                )?;
                Ok(MemberView {
                    name: self.label(&conv.group_id, &m.fingerprint)?,
                    fingerprint: hex::encode(&m.fingerprint[..8]),
                    me,
                    joined: me || announced,
                })
            })
            .collect()
    }

    /// Pending group invitations from people who are not contacts.
    pub fn invitations(&self) -> Result<Vec<InvitationView>> {
        let conn = self.db.conn();
        let mut stmt = conn.prepare(
            "SELECT id, committer, relay, members, received_at, claims_existing FROM invitations ORDER BY id",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, Option<String>>(5)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut out = Vec::with_capacity(rows.len());
        for (id, committer, relay, members, received_at, claims) in rows {
            let relay_known = self.relay_known(&relay)?;
            out.push(InvitationView {
                id,
                from: hex::encode(&committer[..committer.len().min(8)]),
                warning: invitation_warning(claims.as_deref(), relay_known, &relay),
                relay,
                relay_known,
                members: members.max(0) as usize,
                received_at: received_at.max(0) as u64,
            });
        }
        Ok(out)
    }
}
