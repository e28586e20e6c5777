//! Membership changes that must complete: removing members who left (their leave notice is
//! stored until a commit removes them) and re-sending Welcomes to members who never joined.

use super::*;

/// How long an added member may stay unjoined before we send a fresh Welcome.
fn readd_after() -> u64 {
    std::env::var("SAMIZDAT_READD_AFTER_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24 * 3600)
}

/// Fresh Welcomes per member before we give up (the member can still be re-added by hand).
const MAX_RESENDS: i64 = 3;

impl Profile {
    /// Members of `group` who asked to leave and are still in its tree.
    pub(super) fn pending_removals(&self, group: &Id) -> Result<Vec<Vec<u8>>> {
        let conn = self.db.conn();
        let mut stmt = conn.prepare("SELECT member FROM pending_removals WHERE group_id = ?1")?;
        let rows = stmt
            .query_map(params![group.as_bytes()], |r| r.get::<_, Vec<u8>>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Commit the removal of every member who asked to leave (of one group, or of all), and
    /// forget the requests that are done. An unreachable relay keeps them for the next sync.
    /// Fault injection for the tests: the `SKIP_REMOVALS` fault point stops here, as a crash
    /// right after reading a leave notice would.
    pub(super) async fn commit_pending_removals(&mut self, only: Option<&Id>) -> Result<()> {
        if crate::fault::on("SKIP_REMOVALS") {
            return Ok(());
        }
        let groups: Vec<Vec<u8>> = {
            let conn = self.db.conn();
            let mut stmt = conn.prepare("SELECT DISTINCT group_id FROM pending_removals")?;
            stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?
        };
        for gid in groups {
            let gid =
                Id::from_slice(&gid).map_err(|_| Error::Storage("corrupt group id".into()))?;
            if only.is_some_and(|o| *o != gid) {
                continue;
            }
            let conv = match self.conv_by_id(&gid)? {
                Some(c) if c.active => c,
                // Not ours to do any more (we left or were removed).
                _ => {
                    self.db.conn().execute(
                        "DELETE FROM pending_removals WHERE group_id = ?1",
                        params![gid.as_bytes()],
                    )?;
                    continue;
                }
            };
            let members = self.mls.load(gid.as_bytes())?.members();
            let mut leavers = Vec::new();
            for fp in self.pending_removals(&gid)? {
                // A person who left, or one revoked device of a person (see `device_lists`).
                if members.iter().any(|m| {
                    m.fingerprint.as_slice() == fp.as_slice()
                        || m.device.as_slice() == fp.as_slice()
                }) {
                    leavers.push(fp);
                } else {
                    // Someone already committed it.
                    self.db.conn().execute(
                        "DELETE FROM pending_removals WHERE group_id = ?1 AND member = ?2",
                        params![gid.as_bytes(), fp],
                    )?;
                }
            }
            if leavers.is_empty() {
                continue;
            }
            match Box::pin(self.commit_change(&conv, Vec::new(), leavers.clone(), None)).await {
                Ok(()) => {
                    for fp in &leavers {
                        self.db.conn().execute(
                            "DELETE FROM pending_removals WHERE group_id = ?1 AND member = ?2",
                            params![gid.as_bytes(), fp],
                        )?;
                    }
                }
                Err(e @ Error::RelayUnreachable(_)) => return Err(e),
                Err(e) => {
                    let text = Notice::LeaverNotRemoved {
                        error: Problem::from(&e),
                    };
                    self.emit(Event::notice(Some(&conv), text))?;
                }
            }
        }
        Ok(())
    }

    /// Send a fresh Welcome to members we added who have not joined within the delay.
    pub(super) async fn resend_welcomes(&mut self) -> Result<()> {
        let due = now_secs().saturating_sub(readd_after()) as i64;
        let rows: Vec<(Vec<u8>, Vec<u8>)> = {
            let conn = self.db.conn();
            let mut stmt = conn.prepare(
                "SELECT group_id, member FROM added_members WHERE added_at <= ?1 AND resent < ?2",
            )?;
            stmt.query_map(params![due, MAX_RESENDS], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?
        };
        for (gid, fp) in rows {
            let gid =
                Id::from_slice(&gid).map_err(|_| Error::Storage("corrupt group id".into()))?;
            let forget = |p: &Profile| -> Result<()> {
                p.db.conn().execute(
                    "DELETE FROM added_members WHERE group_id = ?1 AND member = ?2",
                    params![gid.as_bytes(), &fp],
                )?;
                Ok(())
            };
            let conv = match self.conv_by_id(&gid)? {
                Some(c) if c.active && c.kind != ConvKind::Direct => c,
                _ => {
                    forget(self)?;
                    continue;
                }
            };
            let in_tree = self
                .mls
                .load(gid.as_bytes())?
                .members()
                .iter()
                .any(|m| m.fingerprint.as_slice() == fp.as_slice());
            if !in_tree || self.has_joined(&gid, &fp)? {
                forget(self)?;
                continue;
            }
            let Some(alias) = self.contact_alias(&fp)? else {
                forget(self)?;
                continue;
            };
            let contact = ContactId::from_slice(&fp)?;
            let result =
                Box::pin(self.group_readd(&ConversationId::from_id(conv.group_id), &contact)).await;
            if let Err(e @ Error::RelayUnreachable(_)) = result {
                return Err(e);
            }
            self.db.conn().execute(
                "UPDATE added_members SET resent = resent + 1, added_at = ?3 WHERE group_id = ?1 AND member = ?2",
                params![gid.as_bytes(), &fp, now_secs() as i64],
            )?;
            let text = match result {
                Ok(()) => Notice::InvitationResent { name: alias },
                Err(e) => Notice::InvitationResendFailed {
                    name: alias,
                    error: Problem::from(&e),
                },
            };
            self.emit(Event::notice(Some(&conv), text))?;
        }
        Ok(())
    }

    /// Whether a member has shown up in a group: announced its name or written.
    pub(super) fn has_joined(&self, group: &Id, fp: &[u8]) -> Result<bool> {
        Ok(self.db.conn().query_row(
            "SELECT EXISTS (SELECT 1 FROM member_names WHERE group_id = ?1 AND fingerprint = ?2)
                 OR EXISTS (SELECT 1 FROM messages WHERE group_id = ?1 AND sender_fp = ?2)",
            params![group.as_bytes(), fp],
            |r| r.get(0),
        )?)
    }
}
