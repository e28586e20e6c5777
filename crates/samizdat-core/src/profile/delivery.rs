//! Delivery across relays: mailbox drops (Welcomes) owed to another party are stored in the
//! transaction that makes them owed and retried, with backoff and jitter, until the relay
//! stores them or refuses them for good — then the user is told. The relay that refuses
//! drops can delay a member's join; it cannot make one half-happen silently.

use std::time::Duration;

use backon::BackoffBuilder;

use super::*;

/// Give up on a drop that could not be delivered for this long.
const DROP_MAX_AGE_MS: u64 = 7 * 24 * 3600 * 1000;

/// A Welcome owed to one new member.
pub(super) struct OwedDrop {
    pub relay: String,
    pub mailbox: Id,
    pub member: [u8; 32],
}

/// The delay before retry number `attempts` (1 s doubling to 1 h, with jitter).
pub(super) fn retry_delay(attempts: u32) -> Duration {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(3600))
        .with_jitter()
        .without_max_times()
        .build()
        .nth(attempts as usize)
        .unwrap_or(Duration::from_secs(3600))
}

/// Whether a relay's refusal may go away by itself (full, busy, limited).
fn transient(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::QuotaExceeded
            | ErrorCode::RateLimited
            | ErrorCode::Unavailable
            | ErrorCode::Internal
            | ErrorCode::Timeout
            | ErrorCode::StorageFull
    )
}

impl Profile {
    /// Record a drop as owed (one row: atomic by itself).
    pub(super) fn owe_drop(&self, group: &Id, d: &OwedDrop, body: &[u8]) -> Result<()> {
        self.owe_drop_kind(group, d, body, "welcome")
    }

    /// Record a drop of a kind: `welcome` (the member's other mailboxes are tried when this
    /// one's relay cannot be reached) or `move` (one per mailbox).
    pub(super) fn owe_drop_kind(
        &self,
        group: &Id,
        d: &OwedDrop,
        body: &[u8],
        kind: &str,
    ) -> Result<()> {
        self.db.conn().execute(
            "INSERT INTO drops (request_id, relay, mailbox, body, group_id, member, next_at, created_at, kind)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8)",
            params![
                random_id().as_bytes(),
                d.relay,
                d.mailbox.as_bytes(),
                body,
                group.as_bytes(),
                &d.member[..],
                now_millis() as i64,
                kind
            ],
        )?;
        Ok(())
    }

    /// Deliver owed drops: those of `group` now, or (without a group) every one that is due.
    /// A relay that cannot be reached only postpones them; the caller's operation stands.
    pub(super) async fn flush_drops(&mut self, group: Option<&Id>) -> Result<()> {
        let now = now_millis();
        type Row = (
            Vec<u8>,
            String,
            Vec<u8>,
            Vec<u8>,
            Vec<u8>,
            Vec<u8>,
            i64,
            i64,
            String,
        );
        let due: Vec<Row> = {
            let conn = self.db.conn();
            let mut stmt = conn.prepare(
                "SELECT request_id, relay, mailbox, body, group_id, member, attempts, created_at, kind FROM drops
                 WHERE (?1 IS NULL AND next_at <= ?2) OR group_id = ?1 ORDER BY created_at",
            )?;
            stmt.query_map(
                params![group.map(|g| g.as_bytes().to_vec()), now as i64],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                        r.get(7)?,
                        r.get(8)?,
                    ))
                },
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?
        };
        for (request_id, relay, mailbox, body, gid, member, attempts, created_at, kind) in due {
            let (Ok(rid), Ok(mailbox), Ok(gid)) = (
                Id::from_slice(&request_id),
                Id::from_slice(&mailbox),
                Id::from_slice(&gid),
            ) else {
                return Err(Error::Storage("corrupt drop row".into()));
            };
            let mut result = match self.relay_for(&relay) {
                Ok(client) => client
                    .drop_message(rid, &mailbox, body.clone())
                    .await
                    .map(|_| ()),
                Err(e) => Err(e),
            };
            if kind == "welcome" && matches!(result, Err(Error::RelayUnreachable(_))) {
                // The member's other relays, in their order (the same request id: a relay
                // stores it once).
                for alt in self.peer_addresses(&member)? {
                    if alt.mailbox == mailbox {
                        continue;
                    }
                    let Ok(client) = self.relay_for(&alt.relay) else {
                        continue;
                    };
                    let r = client
                        .drop_message(rid, &alt.mailbox, body.clone())
                        .await
                        .map(|_| ());
                    let reached = !matches!(r, Err(Error::RelayUnreachable(_)));
                    if reached {
                        result = r;
                        break;
                    }
                }
            }
            let retry = match &result {
                Ok(()) => None,
                Err(Error::RelayUnreachable(_)) => Some(true),
                Err(Error::Relay { code, .. }) => Some(transient(*code)),
                Err(_) => Some(false),
            };
            let too_old = now.saturating_sub(created_at as u64) > DROP_MAX_AGE_MS;
            match (retry, result) {
                (None, _) => {
                    self.db.conn().execute(
                        "DELETE FROM drops WHERE request_id = ?1",
                        params![request_id],
                    )?;
                }
                (Some(true), Err(e)) if !too_old => {
                    let next = now + retry_delay(attempts as u32).as_millis() as u64;
                    self.db.conn().execute(
                        "UPDATE drops SET attempts = attempts + 1, next_at = ?2, last_error = ?3 WHERE request_id = ?1",
                        params![request_id, next as i64, e.to_string()],
                    )?;
                }
                (_, e) => {
                    // Refused for good (or for too long): say so; the member is in the group
                    // but cannot read it until they are re-added.
                    let why = e.err().as_ref().map(Problem::from);
                    let conv = self.conv_by_id(&gid)?;
                    let who = self.label(&gid, &member)?;
                    self.db.transaction(|tx| {
                        tx.conn().execute(
                            "DELETE FROM drops WHERE request_id = ?1",
                            params![request_id],
                        )?;
                        let text = if kind == "move" {
                            Notice::MoveNotTold { who, error: why }
                        } else {
                            Notice::WelcomeNotDelivered { who, error: why }
                        };
                        self.emit(Event::notice(conv.as_ref(), text))
                    })?;
                }
            }
        }
        Ok(())
    }

    /// Drops still owed (for the views and tests): (member fingerprint, attempts, last error).
    pub fn owed_drops(&self) -> Result<Vec<(String, u32, Option<String>)>> {
        let conn = self.db.conn();
        let mut stmt =
            conn.prepare("SELECT member, attempts, last_error FROM drops ORDER BY created_at")?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    hex::encode(r.get::<_, Vec<u8>>(0)?),
                    r.get::<_, i64>(1)? as u32,
                    r.get::<_, Option<String>>(2)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }
}
