//! Moving a conversation off a blocked relay.
//!
//! A conversation's log lives on one relay. When that relay has been unreachable for the
//! profile's `move_after` (or at once, with `samizdat move`), a member opens a new log for
//! the same MLS group on another relay, **starting at the group's current epoch E** with the
//! epoch's token hash (every member at E knows the token; the relay learns only its hash),
//! switches to it, re-sends what was still queued, and tells every member through every
//! mailbox it knows for them. History stays: it is in each member's profile, and the MLS
//! group goes on unchanged, so the next commit on the new log continues the epochs.
//!
//! - The move itself makes no commit, so two members who move at once never fork the MLS
//!   state; only the relay differs, and one rule picks it.
//! - The notice is sealed (ChaCha20-Poly1305, aws-lc-rs) under a key derived by HKDF from
//!   the epoch's token: only members can make or read it, and the mailbox's relay learns
//!   nothing. It names the epoch, the move's number at that epoch, the relay and the log id.
//! - The log id is derived from the token, the number and the relay: the old and new relays
//!   cannot match the two logs by id, and two members who pick the same relay for the same
//!   move land on the same log (the second `create` finds it and checks the token).
//! - **Rule**: at the same epoch, the higher move number wins; at the same number, the
//!   relay whose normalised address has the lowest SHA-256. A member who loses re-sends its
//!   own messages from the losing log on the winner (receivers show each message once, by
//!   its id).
//! - The target is chosen deterministically: the reachable relay on which most members
//!   (us included) have a mailbox, ties broken by the same hash — so members who detect the
//!   outage on their own usually pick the same log even without a notice.

use aws_lc_rs::{aead, hkdf};
use serde::{Deserialize, Serialize};

use super::*;

/// Move a conversation this long (seconds) after its relay stopped answering, by default.
pub const DEFAULT_MOVE_AFTER: u64 = 300;

/// A move target that could not be reached is tried again after this long (ms).
const MOVE_RETRY_MS: u64 = 60_000;

/// What a move notice says (sealed inside `Envelope::Move`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct MoveNotice {
    group_id: Id,
    epoch: u64,
    n: u32,
    relay: String,
    log: Id,
}

/// The winning move known for one epoch.
struct Known {
    n: u32,
    relay: String,
    log: Id,
    rank: Vec<u8>,
}

fn derive(token: &[u8], label: &[u8], extra: &[&[u8]]) -> Result<[u8; 32]> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"samizdat move").extract(token);
    let mut info: Vec<&[u8]> = vec![label];
    info.extend_from_slice(extra);
    let mut out = [0u8; 32];
    prk.expand(&info, hkdf::HKDF_SHA256)
        .and_then(|okm| okm.fill(&mut out))
        .map_err(|_| Error::Crypto("cannot derive a move key".into()))?;
    Ok(out)
}

/// The id of move number `n`'s log on `relay` (normalised).
fn log_id(token: &[u8], n: u32, relay: &str) -> Result<Id> {
    let len = (relay.len() as u32).to_be_bytes();
    let k = derive(
        token,
        b"log id",
        &[&n.to_be_bytes(), &len, relay.as_bytes()],
    )?;
    Id::from_slice(&k[..16]).map_err(|_| Error::Crypto("cannot derive a log id".into()))
}

/// The rule's order among relays for the same move number: lower wins.
fn rank(relay: &str) -> Vec<u8> {
    sha256(relay.as_bytes()).to_vec()
}

fn aead_key(token: &[u8]) -> Result<aead::LessSafeKey> {
    let k = derive(token, b"notice key", &[])?;
    aead::UnboundKey::new(&aead::CHACHA20_POLY1305, &k)
        .map(aead::LessSafeKey::new)
        .map_err(|_| Error::Crypto("cannot make a move key".into()))
}

fn seal(token: &[u8], notice: &MoveNotice) -> Result<Vec<u8>> {
    let key = aead_key(token)?;
    let mut nonce = [0u8; 12];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| Error::Crypto("no randomness".into()))?;
    let mut body = serde_json::to_vec(notice).map_err(|e| Error::Protocol(e.to_string()))?;
    key.seal_in_place_append_tag(
        aead::Nonce::assume_unique_for_key(nonce),
        aead::Aad::empty(),
        &mut body,
    )
    .map_err(|_| Error::Crypto("cannot seal a move notice".into()))?;
    Ok([nonce.as_slice(), &body].concat())
}

fn open(token: &[u8], sealed: &[u8]) -> Option<MoveNotice> {
    if sealed.len() < 12 + 16 || sealed.len() > 4096 {
        return None;
    }
    let key = aead_key(token).ok()?;
    let nonce = aead::Nonce::try_assume_unique_for_key(&sealed[..12]).ok()?;
    let mut body = sealed[12..].to_vec();
    let plain = key
        .open_in_place(nonce, aead::Aad::empty(), &mut body)
        .ok()?;
    serde_json::from_slice(plain).ok()
}

impl Profile {
    /// How long (seconds) a conversation's relay may be unreachable before the conversation
    /// moves (0: never by itself).
    pub fn move_after(&self) -> Result<u64> {
        Ok(self
            .db
            .get_setting(Setting::MoveAfter)?
            .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
            .map(u64::from_be_bytes)
            .unwrap_or(DEFAULT_MOVE_AFTER))
    }

    pub fn set_move_after(&self, secs: u64) -> Result<()> {
        self.db
            .set_setting(Setting::MoveAfter, &secs.to_be_bytes())?;
        self.state_changed()
    }

    /// Move a conversation to another relay now (`samizdat move TARGET --to RELAY`).
    /// Returns the relay's normalised address.
    pub async fn move_conversation(&mut self, id: &ConversationId, to: &str) -> Result<String> {
        let conv = self.conv(id)?;
        if !conv.active && !self.lost_sync(&conv.group_id)? {
            return Err(Error::NotMember(format!(
                "you are no longer a member of {:?}",
                conv.name
            )));
        }
        let to = crate::relay_client::normalize_spec(to)?;
        let r = self.move_to(&conv, &to).await;
        r.map(|()| to)
    }

    /// Whether a conversation stopped because its log no longer takes our token (we still
    /// hold the group's keys: a move can bring it back).
    fn lost_sync(&self, group: &Id) -> Result<bool> {
        Ok(self.db.conn().query_row(
            "SELECT EXISTS (SELECT 1 FROM conversations WHERE group_id = ?1 AND active = 0 AND status = 'lost_sync')
                AND EXISTS (SELECT 1 FROM mls_groups WHERE group_id = ?1)",
            params![group.as_bytes()],
            |r| r.get(0),
        )?)
    }

    /// When (Unix ms) the next conversation whose relay is down is due to move, if one is
    /// and the time is still ahead (the service syncs then).
    pub fn next_move_due(&self) -> Option<u64> {
        let after = self.move_after().ok()?;
        if after == 0 || self.down_since.is_empty() {
            return None;
        }
        let now = now_millis();
        let convs = self.active_convs().ok()?;
        convs
            .iter()
            .filter_map(|c| self.down_since.get(c.relay.trim_end_matches('/')))
            .map(|since| since + after * 1000)
            .filter(|due| *due > now)
            .min()
    }

    /// Called when a conversation's relay could not be reached: move it once the relay has
    /// been down for `move_after`, to the first candidate that answers.
    pub(super) async fn auto_move(&mut self, conv: &Conv) -> Result<()> {
        let after = self.move_after()?;
        if after == 0 || self.down_for(&conv.relay).is_none_or(|d| d < after * 1000) {
            return Ok(());
        }
        let now = now_millis();
        for candidate in self.move_candidates(conv)? {
            // Our own relays are known to be down from their mailboxes; any other candidate
            // that just failed is left alone for a minute (not marked down: nothing of ours
            // lives there to mark it up again).
            let failed_recently = self
                .move_failed
                .get(&candidate)
                .is_some_and(|at| now.saturating_sub(*at) < MOVE_RETRY_MS);
            if self.down_for(&candidate).is_some() || failed_recently {
                continue;
            }
            match self.move_to(conv, &candidate).await {
                Ok(()) => return Ok(()),
                Err(Error::RelayUnreachable(_)) => {
                    self.move_failed.insert(candidate, now);
                }
                Err(e) => {
                    let text = Notice::MoveFailed {
                        relay: candidate.to_string(),
                        error: Problem::from(&e),
                    };
                    return self.emit(Event::notice(Some(conv), text));
                }
            }
        }
        Ok(())
    }

    /// Relays the conversation could move to, best first: those where most members (us
    /// included) have a mailbox, ties by the rule's hash. The current relay is left out.
    fn move_candidates(&self, conv: &Conv) -> Result<Vec<String>> {
        let current = crate::relay_client::normalize_spec(&conv.relay).unwrap_or_default();
        let members = self.mls.load(conv.group_id.as_bytes())?.members();
        let mut count: HashMap<String, usize> = HashMap::new();
        for r in self.relays() {
            *count.entry(r).or_default() += 1;
        }
        for m in members.iter().filter(|m| m.fingerprint != self.fingerprint) {
            let mut seen = HashSet::new();
            for a in self.peer_addresses(&m.fingerprint)? {
                if seen.insert(a.relay.clone()) {
                    *count.entry(a.relay).or_default() += 1;
                }
            }
        }
        let mut out: Vec<(usize, Vec<u8>, String)> = count
            .into_iter()
            .filter(|(r, _)| *r != current)
            .map(|(r, c)| (c, rank(&r), r))
            .collect();
        out.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        Ok(out.into_iter().map(|(_, _, r)| r).collect())
    }

    /// The winning move known at `epoch`.
    fn known_move(&self, group: &Id, epoch: u64) -> Result<Option<Known>> {
        let row: Option<(i64, String, Vec<u8>, Vec<u8>)> = self
            .db
            .conn()
            .query_row(
                "SELECT n, relay, log_id, rank FROM moves WHERE group_id = ?1 AND epoch = ?2",
                params![group.as_bytes(), epoch as i64],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        row.map(|(n, relay, log, rank)| {
            Ok(Known {
                n: n as u32,
                relay,
                log: Id::from_slice(&log).map_err(|_| Error::Storage("corrupt move".into()))?,
                rank,
            })
        })
        .transpose()
    }

    /// Open the new log on `to`, switch to it, re-send what is queued and tell the members.
    async fn move_to(&mut self, conv: &Conv, to: &str) -> Result<()> {
        let to = crate::relay_client::normalize_spec(to)?;
        let gid = conv.group_id;
        let group = self.mls.load(gid.as_bytes())?;
        let epoch = group.epoch();
        let members: Vec<[u8; 32]> = group
            .members()
            .into_iter()
            .map(|m| m.fingerprint)
            .filter(|fp| *fp != self.fingerprint)
            .collect();
        drop(group);
        let token = self.token(&gid, epoch)?;
        let n = match self.known_move(&gid, epoch)? {
            Some(k) => k.n + 1,
            None => 0,
        };
        let log = log_id(&token, n, &to)?;
        let client = self.conv_client_for(&to, &gid)?;
        match client
            .create_group(random_id(), log, epoch, sha256(&token))
            .await
        {
            Ok(()) => {}
            Err(Error::Relay {
                code: ErrorCode::AlreadyExists,
                ..
            }) => {
                // Another member made the same move first: the log must take our token.
                client.read_entries(&log, epoch, 0, &token).await?;
            }
            Err(e) => return Err(e),
        }
        let notice = MoveNotice {
            group_id: gid,
            epoch,
            n,
            relay: to.clone(),
            log,
        };
        let sealed = seal(&token, &notice)?;
        let body = Envelope::Move {
            sealed: Bytes(sealed),
        }
        .encode();
        let text = if crate::relay_client::normalize_spec(&conv.relay).is_ok_and(|c| c == to) {
            Notice::LogRecreated {
                relay: to.to_string(),
            }
        } else {
            Notice::MovedByUs {
                relay: to.to_string(),
                from: conv.relay.clone(),
            }
        };
        self.db.transaction(|tx| {
            self.record_move(tx, &notice)?;
            self.switch_log(tx, conv, &notice)?;
            for fp in &members {
                for a in self.peer_addresses(fp)? {
                    let d = delivery::OwedDrop {
                        relay: a.relay,
                        mailbox: a.mailbox,
                        member: *fp,
                    };
                    self.owe_drop_kind(&gid, &d, &body, "move")?;
                }
            }
            self.emit(Event::notice(Some(conv), text))
        })?;
        self.relay_up(&to);
        crash_point("move-before-notices");
        self.flush_drops(Some(&gid)).await?;
        // What was queued during the outage goes out on the new log now.
        if let Some(moved) = self.conv_by_id(&gid)? {
            match self.flush_pending(&moved).await {
                Ok(()) | Err(Error::RelayUnreachable(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn record_move(&self, tx: &Tx, n: &MoveNotice) -> Result<()> {
        tx.conn().execute(
            "INSERT OR REPLACE INTO moves (group_id, epoch, n, relay, log_id, rank, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![n.group_id.as_bytes(), n.epoch as i64, n.n as i64, n.relay, n.log.as_bytes(), rank(&n.relay), now_millis() as i64],
        )?;
        Ok(())
    }

    /// Read the conversation from the new log, at its first position (inside the caller's
    /// transaction). Positions of the old log are forgotten; message order continues.
    fn switch_log(&self, tx: &Tx, conv: &Conv, n: &MoveNotice) -> Result<()> {
        let g = conv.group_id.as_bytes();
        tx.conn().execute(
            "UPDATE conversations SET relay = ?2, log_id = ?3, read_epoch = ?4, cursor = 0,
                 status = CASE WHEN active = 0 THEN NULL ELSE status END,
                 status_reason = CASE WHEN active = 0 THEN NULL ELSE status_reason END, active = 1,
                 seq_base = MAX(seq_base + cursor, (SELECT COALESCE(MAX(seq), 0) FROM messages WHERE group_id = ?1))
             WHERE group_id = ?1",
            params![g, n.relay, n.log.as_bytes(), n.epoch as i64],
        )?;
        tx.conn()
            .execute("DELETE FROM own_entries WHERE group_id = ?1", params![g])?;
        Ok(())
    }

    /// A move notice from a mailbox: find the conversation whose epoch token opens it, and
    /// follow the move if the rule says so.
    pub(super) async fn receive_move(&mut self, sealed: &[u8]) -> Result<()> {
        // Active ones, and those that lost sync with their log (a move brings them back);
        // conversations we left or were removed from hold no tokens.
        for conv in self.convs_where("active = 1 OR status = 'lost_sync'")? {
            let tokens: Vec<(i64, Vec<u8>)> = {
                let conn = self.db.conn();
                let mut stmt = conn.prepare(
                    "SELECT epoch, token FROM epoch_tokens WHERE group_id = ?1 ORDER BY epoch DESC LIMIT 4",
                )?;
                stmt.query_map(params![conv.group_id.as_bytes()], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?
                .collect::<rusqlite::Result<_>>()?
            };
            for (epoch, token) in tokens {
                if let Some(n) = open(&token, sealed)
                    && n.group_id == conv.group_id
                    && n.epoch == epoch as u64
                {
                    return self.follow_move(&conv, n, &token).await;
                }
            }
        }
        // Not for a conversation we are in now (left since, or not ours): nothing to do.
        Ok(())
    }

    async fn follow_move(&mut self, conv: &Conv, n: MoveNotice, token: &[u8]) -> Result<()> {
        crate::check_foreign_relay_url(&n.relay)?;
        let relay = crate::relay_client::normalize_spec(&n.relay)?;
        if relay != n.relay || n.log != log_id(token, n.n, &relay)? {
            return Err(Error::Protocol(
                "a move notice names a log that its relay and epoch do not give".into(),
            ));
        }
        let epoch = self.mls.load(conv.group_id.as_bytes())?.epoch();
        if n.epoch < epoch {
            // The group moved on since (a commit at a later epoch): the notice is stale.
            return Ok(());
        }
        let known = self.known_move(&conv.group_id, n.epoch)?;
        if let Some(k) = &known {
            let better = n.n > k.n || (n.n == k.n && rank(&relay) < k.rank);
            if !better {
                // The same move, or one the rule puts behind the one we are on.
                return Ok(());
            }
        }
        // The new log must exist and take the epoch's token before we switch to it.
        let client = self.conv_client_for(&relay, &conv.group_id)?;
        client.read_entries(&n.log, n.epoch, 0, token).await?;
        // Messages of ours on a log that lost the race: sent again on the winner.
        let resend: Vec<Payload> = match &known {
            Some(k) if conv.log == k.log => self.sent_on_current_log(conv)?,
            _ => Vec::new(),
        };
        let text = match &known {
            Some(k) => Notice::MovedChosen {
                relay: relay.to_string(),
                over: k.relay.to_string(),
            },
            None => Notice::MovedByMember {
                relay: relay.to_string(),
                from: conv.relay.clone(),
            },
        };
        self.db.transaction(|tx| {
            self.record_move(tx, &n)?;
            self.switch_log(tx, conv, &n)?;
            for p in &resend {
                tx.conn().execute(
                    "UPDATE messages SET seq = NULL WHERE id = ?1",
                    params![p.id.as_bytes()],
                )?;
            }
            self.emit(Event::notice(Some(conv), text))
        })?;
        self.relay_up(&relay);
        let Some(moved) = self.conv_by_id(&conv.group_id)? else {
            return Ok(());
        };
        for p in resend {
            match self.send_payload(&moved, p).await {
                Ok(_) | Err(Error::RelayUnreachable(_)) => {}
                Err(e) => return Err(e),
            }
        }
        match self.flush_pending(&moved).await {
            Ok(()) | Err(Error::RelayUnreachable(_)) => {}
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// Our text messages stored from the conversation's current log.
    fn sent_on_current_log(&self, conv: &Conv) -> Result<Vec<Payload>> {
        let conn = self.db.conn();
        let mut stmt = conn.prepare(
            "SELECT id, body, sent_at, expires_in, attachment FROM messages
             WHERE group_id = ?1 AND outgoing = 1 AND seq > ?2 AND failed IS NULL ORDER BY seq",
        )?;
        let rows = stmt
            .query_map(
                params![conv.group_id.as_bytes(), conv.seq_base as i64],
                |r| {
                    Ok((
                        r.get::<_, Vec<u8>>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, Option<i64>>(3)?,
                        r.get::<_, Option<String>>(4)?,
                    ))
                },
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter()
            .map(|(id, text, sent_at, expires_in, attachment)| {
                outbox::text_payload(&conn, &id, text, sent_at, expires_in, attachment)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_open_only_with_the_epochs_token() {
        let token = [7u8; 32];
        let n = MoveNotice {
            group_id: Id::from_bytes([1; 16]),
            epoch: 4,
            n: 0,
            relay: "http://127.0.0.1:7700".into(),
            log: log_id(&token, 0, "http://127.0.0.1:7700").unwrap(),
        };
        let sealed = seal(&token, &n).unwrap();
        let opened = open(&token, &sealed).unwrap();
        assert_eq!(opened.log, n.log);
        assert_eq!(opened.epoch, 4);
        assert!(open(&[8u8; 32], &sealed).is_none(), "another epoch's token");
        let mut bad = sealed.clone();
        bad[20] ^= 1;
        assert!(open(&token, &bad).is_none(), "a flipped bit");
        assert!(open(&token, &sealed[..10]).is_none());
    }

    #[test]
    fn log_ids_differ_by_relay_number_and_token() {
        let t = [1u8; 32];
        let a = log_id(&t, 0, "http://a:1").unwrap();
        assert_eq!(a, log_id(&t, 0, "http://a:1").unwrap());
        assert_ne!(a, log_id(&t, 1, "http://a:1").unwrap());
        assert_ne!(a, log_id(&t, 0, "http://b:1").unwrap());
        assert_ne!(a, log_id(&[2u8; 32], 0, "http://a:1").unwrap());
    }
}
