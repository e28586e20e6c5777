//! A profile: one identity on one device, with its encrypted store, its mailbox and its
//! conversations. Every user-facing operation of the messenger is a method here.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use rusqlite::{OptionalExtension, params};
use samizdat_proto::{Bytes, EntryKind, ErrorCode, Id, WelcomeDrop};
use serde::Serialize;

use crate::invite::Invite;
use crate::mls::{self, Incoming, Mls};
use crate::payload::{Body, Envelope, MAX_TEXT, Payload};
use crate::relay_client::{MailboxKey, RelayClient};
use crate::store::Db;
use crate::{Error, Result, now_millis, now_secs, random_id, sha256};

/// KeyPackages kept in the relay's pool; refilled when it drops below half.
const KEY_PACKAGE_POOL: usize = 20;
/// Attempts at a commit or a send when other members keep winning the race.
const MAX_ATTEMPTS: usize = 12;

const DB_FILE: &str = "profile.db";
/// A catch-up reports its progress after every page of at least this many entries.
const PROGRESS_PAGE: usize = 100;
/// Events kept in the durable log; older ones are dropped (and reported as an overflow).
pub const EVENT_LOG_MAX: u64 = 10_000;

/// Fault injection for the crash tests: `SAMIZDAT_TEST_CRASH=<point>` aborts the process at
/// that point, like a power cut (no destructors, no flush). Unset in normal use.
fn crash_point(point: &str) {
    if std::env::var("SAMIZDAT_TEST_CRASH").is_ok_and(|p| p == point) {
        std::process::abort();
    }
}

/// Something the core reports to its fronts. Every event names what it is about by id
/// (`conversation_id`, message `id`, contact `fingerprint`); names are for display only and
/// may change. Fronts must ignore event kinds and fields they do not know.
///
/// Events are written to the profile's durable event log (`events` table) in the same
/// transaction as the change they report, except `relay` connection events, which are live
/// only (see [`Event::is_durable`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A message from another member, stored and shown once.
    Message {
        conversation_id: String,
        conversation: String,
        id: String,
        /// Sender's key fingerprint (hex).
        sender: String,
        /// Sender's display label in this conversation.
        from: String,
        text: String,
        sent_at: u64,
    },
    /// Our message is stored and waits for the relay's acknowledgement.
    MessageQueued {
        conversation_id: String,
        conversation: String,
        id: String,
    },
    /// The relay acknowledged our message at `position` of the conversation's log.
    MessageDelivered {
        conversation_id: String,
        conversation: String,
        id: String,
        position: u64,
    },
    /// Our message was refused and will not be retried.
    MessageFailed {
        conversation_id: String,
        conversation: String,
        id: String,
        reason: String,
    },
    NewContact {
        /// Key fingerprint (hex): the contact's stable id.
        fingerprint: String,
        alias: String,
        display_name: String,
    },
    Joined {
        conversation_id: String,
        conversation: String,
    },
    /// A group got (or changed) its local name.
    GroupNamed {
        conversation_id: String,
        conversation: String,
    },
    MemberAdded {
        conversation_id: String,
        conversation: String,
        /// Key fingerprint (hex) of the new member.
        member: String,
        who: String,
    },
    MemberRemoved {
        conversation_id: String,
        conversation: String,
        member: String,
        who: String,
    },
    MemberLeft {
        conversation_id: String,
        conversation: String,
        member: String,
        who: String,
    },
    /// We were removed from the group.
    Removed {
        conversation_id: String,
        conversation: String,
    },
    Notice {
        conversation_id: Option<String>,
        conversation: Option<String>,
        text: String,
    },
    /// A group invitation from someone who is not a contact, waiting for consent
    /// (`invitation accept|decline ID`). Nothing was sent and no relay was contacted.
    InvitationPending {
        id: i64,
        /// Key fingerprint (hex prefix) of the member who added us.
        from: String,
        relay: String,
        members: usize,
        /// Set when the invitation needs a second look (an unknown relay, a claimed id).
        warning: Option<String>,
    },
    /// A long catch-up on one conversation: `done` log entries processed so far (reported
    /// after each full page).
    SyncProgress {
        conversation_id: String,
        conversation: String,
        done: u64,
    },
    /// The realtime connection to a relay: `up`, `down` or `retrying` (after `retry_in_ms`).
    /// Live only: not in the durable log.
    Relay {
        relay: String,
        state: RelayState,
        retry_in_ms: Option<u64>,
    },
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum RelayState {
    Up,
    Down,
    Retrying,
}

impl Event {
    /// Whether the event belongs in the durable log (all but relay connection changes).
    pub fn is_durable(&self) -> bool {
        !matches!(self, Event::Relay { .. })
    }

    fn notice(conv: Option<&Conv>, text: String) -> Event {
        Event::Notice {
            conversation_id: conv.map(|c| c.group_id.to_string()),
            conversation: conv.map(|c| c.name.clone()),
            text,
        }
    }
}

/// An event with its position in the durable log.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct LoggedEvent {
    pub seq: u64,
    #[serde(flatten)]
    pub event: Event,
}

/// A page of the durable event log.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct EventPage {
    pub events: Vec<LoggedEvent>,
    /// The newest position in the log (pass it as `since` to skip the past).
    pub last: u64,
    /// Events after `since` were dropped from the bounded log before they were read.
    pub overflow: bool,
}

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

/// What to do with a Welcome that arrived in the mailbox.
enum Screened {
    /// From a contact, or answering our own invite: join now.
    Join,
    /// From a stranger: stored as a pending invitation (reported once).
    Pending(Option<Event>),
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
    pub kind: String,
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
}

#[derive(Debug, Clone)]
pub(crate) struct Conv {
    pub(crate) group_id: Id,
    pub(crate) kind: String,
    pub(crate) name: String,
    pub(crate) relay: String,
    pub(crate) read_epoch: u64,
    pub(crate) cursor: u64,
    pub(crate) active: bool,
}

pub struct Profile {
    pub(crate) home: PathBuf,
    pub(crate) db: Db,
    pub(crate) mls: Mls,
    pub(crate) name: String,
    pub(crate) fingerprint: [u8; 32],
    pub(crate) mailbox: Id,
    pub(crate) mailbox_key: MailboxKey,
    pub(crate) relay: RelayClient,
    /// Events produced by syncs that ran inside other operations (a send catches up first).
    pub(crate) buffered: Vec<Event>,
    /// One client (connection pool) per other relay, kept for the life of the profile.
    pub(crate) relays: std::sync::Mutex<HashMap<String, RelayClient>>,
}

fn remove_db_files(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}

fn conv_from_row(
    r: &rusqlite::Row<'_>,
) -> rusqlite::Result<(Vec<u8>, String, String, String, i64, i64, i64)> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

const CONV_COLUMNS: &str = "group_id, kind, name, relay, read_epoch, cursor, active";

impl Profile {
    /// Path of the profile database inside `home`.
    pub fn db_path(home: &Path) -> PathBuf {
        home.join(DB_FILE)
    }

    pub fn exists(home: &Path) -> bool {
        Self::db_path(home).exists()
    }

    /// Create a profile: keys, encrypted store, a mailbox and a KeyPackage pool on `relay`.
    pub async fn init(
        home: &Path,
        passphrase: &str,
        relay_url: &str,
        name: &str,
    ) -> Result<Profile> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
            return Err(Error::Usage(
                "the display name must be 1 to 64 printable characters".into(),
            ));
        }
        let relay = RelayClient::new(relay_url)?;
        let path = Self::db_path(home);
        if path.exists() {
            return Err(Error::Usage(format!(
                "a profile already exists in {}",
                home.display()
            )));
        }
        crate::create_private_dir(home)?;
        relay.health().await?;
        let result = Self::init_inner(home, &path, passphrase, relay, name).await;
        if result.is_err() {
            remove_db_files(&path);
        }
        result
    }

    async fn init_inner(
        home: &Path,
        path: &Path,
        passphrase: &str,
        relay: RelayClient,
        name: &str,
    ) -> Result<Profile> {
        let db = Db::open(path, passphrase)?;
        let signer = mls::generate_signer(mls::DEFAULT_CIPHERSUITE)?;
        let (mailbox_key, pkcs8) = MailboxKey::generate()?;
        let mailbox = random_id();
        db.set_setting("name", name.as_bytes())?;
        db.set_setting("relay", relay.base().as_bytes())?;
        db.set_setting("mls_secret", &signer.secret)?;
        db.set_setting("mls_public", &signer.public)?;
        db.set_setting(
            "ciphersuite",
            &u16::from(mls::DEFAULT_CIPHERSUITE).to_be_bytes(),
        )?;
        db.set_setting("mailbox_id", mailbox.as_bytes())?;
        db.set_setting("mailbox_key", &pkcs8)?;
        relay
            .create_mailbox(random_id(), mailbox, mailbox_key.public())
            .await?;
        let mls = Mls::new(
            db.clone(),
            &signer.secret,
            &signer.public,
            mls::DEFAULT_CIPHERSUITE,
        )?;
        let mut profile = Profile {
            home: home.to_path_buf(),
            fingerprint: mls::fingerprint(&signer.public),
            db,
            mls,
            name: name.to_string(),
            mailbox,
            mailbox_key,
            relay,
            buffered: Vec::new(),
            relays: Default::default(),
        };
        let last_resort = profile.mls.key_package(true)?;
        profile
            .upload_key_packages(KEY_PACKAGE_POOL, Some(last_resort))
            .await?;
        Ok(profile)
    }

    /// Open an existing profile.
    pub fn open(home: &Path, passphrase: &str) -> Result<Profile> {
        let path = Self::db_path(home);
        if !path.exists() {
            return Err(Error::Usage(format!(
                "no profile in {}; create one with `samizdat init --relay URL --name NAME`",
                home.display()
            )));
        }
        let db = Db::open(&path, passphrase)?;
        let secret = zeroize::Zeroizing::new(db.setting("mls_secret")?);
        let public = db.setting("mls_public")?;
        let cs_bytes = db.setting("ciphersuite")?;
        let cs = u16::from_be_bytes(
            <[u8; 2]>::try_from(cs_bytes.as_slice())
                .map_err(|_| Error::Storage("corrupt ciphersuite".into()))?,
        );
        let mls = Mls::new(db.clone(), &secret, &public, cs.into())?;
        let mailbox = Id::from_slice(&db.setting("mailbox_id")?)
            .map_err(|_| Error::Storage("corrupt mailbox id".into()))?;
        let mailbox_key = MailboxKey::from_pkcs8(&db.setting("mailbox_key")?)?;
        let relay = RelayClient::new(&db.setting_string("relay")?)?;
        Ok(Profile {
            home: home.to_path_buf(),
            name: db.setting_string("name")?,
            fingerprint: mls::fingerprint(&public),
            db,
            mls,
            mailbox,
            mailbox_key,
            relay,
            buffered: Vec::new(),
            relays: Default::default(),
        })
    }

    /// Events from catch-ups that ran inside other operations (send, group changes).
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.buffered)
    }

    pub fn home(&self) -> &Path {
        &self.home
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn relay_url(&self) -> &str {
        self.relay.base()
    }

    pub fn fingerprint_hex(&self) -> String {
        hex::encode(self.fingerprint)
    }

    // ---- the event log ------------------------------------------------------------------------

    /// Log `e` durably (inside the caller's transaction, if one is open) and hand it to the
    /// caller's list. Every event the core reports goes through here, once.
    fn emit(&self, events: &mut Vec<Event>, e: Event) -> Result<()> {
        if e.is_durable() {
            let body = serde_json::to_string(&e).map_err(|e| Error::Storage(e.to_string()))?;
            let conn = self.db.conn();
            conn.execute(
                "INSERT INTO events (body, created_at) VALUES (?1, ?2)",
                params![body, now_millis() as i64],
            )?;
            conn.execute(
                "DELETE FROM events WHERE seq <= (SELECT MAX(seq) FROM events) - ?1",
                params![EVENT_LOG_MAX as i64],
            )?;
        }
        events.push(e);
        Ok(())
    }

    /// Events logged after `since` (at most `limit`), oldest first. `overflow` is set when
    /// events after `since` were already dropped from the bounded log.
    pub fn events_after(&self, since: u64, limit: usize) -> Result<EventPage> {
        let conn = self.db.conn();
        let (first, last): (Option<i64>, Option<i64>) =
            conn.query_row("SELECT MIN(seq), MAX(seq) FROM events", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
        let mut stmt =
            conn.prepare("SELECT seq, body FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2")?;
        let rows = stmt
            .query_map(
                params![since.min(i64::MAX as u64) as i64, limit as i64],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut events = Vec::with_capacity(rows.len());
        for (seq, body) in rows {
            // A row written by a newer version with a kind we do not know is skipped.
            if let Ok(event) = serde_json::from_str::<Event>(&body) {
                events.push(LoggedEvent {
                    seq: seq as u64,
                    event,
                });
            }
        }
        let first = first.unwrap_or(0) as u64;
        Ok(EventPage {
            overflow: first > 0 && since.saturating_add(1) < first,
            last: last.unwrap_or(0) as u64,
            events,
        })
    }

    async fn upload_key_packages(&mut self, n: usize, last_resort: Option<Vec<u8>>) -> Result<()> {
        let mut kps = Vec::with_capacity(n);
        for _ in 0..n {
            kps.push(self.mls.key_package(false)?);
        }
        self.relay
            .upload_key_packages(&self.mailbox_key, &self.mailbox, kps, last_resort)
            .await?;
        Ok(())
    }

    // ---- invites and contacts -------------------------------------------------------------

    /// Create an invite link valid for `ttl_secs`.
    pub fn invite(&self, ttl_secs: u64, reusable: bool) -> Result<Invite> {
        let invite = Invite {
            relay: self.relay.base().to_string(),
            mailbox: self.mailbox,
            fp: Bytes(self.fingerprint.to_vec()),
            id: random_id(),
            exp: now_secs().saturating_add(ttl_secs),
            reusable,
        };
        self.db.conn().execute(
            "INSERT INTO invites (invite_id, expires_at, reusable, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![invite.id.as_bytes(), invite.exp as i64, reusable as i64, now_secs() as i64],
        )?;
        Ok(invite)
    }

    fn name_taken(&self, name: &str) -> Result<bool> {
        let n: i64 = self.db.conn().query_row(
            "SELECT (SELECT COUNT(*) FROM contacts WHERE alias = ?1) + (SELECT COUNT(*) FROM conversations WHERE name = ?1)",
            params![name],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }

    fn unique_name(&self, wanted: &str) -> Result<String> {
        let base: String = wanted
            .chars()
            .filter(|c| !c.is_control())
            .take(64)
            .collect();
        let base = if base.trim().is_empty() {
            "someone".to_string()
        } else {
            base.trim().to_string()
        };
        if !self.name_taken(&base)? {
            return Ok(base);
        }
        for i in 2.. {
            let candidate = format!("{base}-{i}");
            if !self.name_taken(&candidate)? {
                return Ok(candidate);
            }
        }
        unreachable!("an unbounded counter always finds a free name")
    }

    fn check_new_name(&self, name: &str, what: &str) -> Result<()> {
        if name.trim().is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control)
        {
            return Err(Error::Usage(format!(
                "{what} must be 1 to 64 printable characters"
            )));
        }
        if self.name_taken(name)? {
            return Err(Error::Usage(format!(
                "the name {name:?} is already used by a contact or conversation"
            )));
        }
        Ok(())
    }

    /// Accept an invite: claim and verify the inviter's KeyPackage, create the 1:1
    /// conversation on the inviter's relay, and introduce ourselves.
    pub async fn accept(&mut self, link: &str, alias: &str) -> Result<String> {
        let invite = Invite::parse(link)?;
        invite.check_not_expired(now_secs())?;
        if invite.fingerprint() == self.fingerprint {
            return Err(Error::Usage("this is your own invite link".into()));
        }
        let alias = alias.trim();
        self.check_new_name(alias, "the contact alias")?;
        let existing: Option<String> = self
            .db
            .conn()
            .query_row(
                "SELECT alias FROM contacts WHERE fingerprint = ?1",
                params![&invite.fp.0],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(a) = existing {
            return Err(Error::Usage(format!(
                "you are already connected to this person as {a:?}"
            )));
        }
        let relay = RelayClient::new(&invite.relay)?;
        let claimed = relay
            .claim_key_package(&invite.mailbox)
            .await
            .map_err(|e| match e {
                Error::Relay {
                    code: ErrorCode::NotFound | ErrorCode::NoKeyPackage,
                    ..
                } => Error::InvalidInvite(
                    "the inviter's mailbox is gone or has no KeyPackage; ask for a new invite"
                        .into(),
                ),
                other => other,
            })?;
        let fp = mls::key_package_fingerprint(&claimed.key_package.0)?;
        if fp != invite.fingerprint() {
            return Err(Error::KeyPackageMismatch);
        }

        let group_id = random_id();
        let mut group = self.mls.create_group(group_id.as_bytes())?;
        let token0 = group.token()?;
        relay
            .create_group(random_id(), group_id, group.epoch(), sha256(&token0))
            .await?;
        self.db.transaction(|| {
            group.save()?;
            self.db.conn().execute(
                "INSERT INTO conversations (group_id, kind, name, relay, read_epoch, cursor, created_at) VALUES (?1, 'direct', ?2, ?3, ?4, 0, ?5)",
                params![group_id.as_bytes(), alias, invite.relay, group.epoch() as i64, now_secs() as i64],
            )?;
            self.store_token(&group_id, group.epoch(), &token0)?;
            self.db.conn().execute(
                "INSERT INTO contacts (alias, fingerprint, display_name, relay, mailbox_id, group_id, created_at) VALUES (?1, ?2, ?1, ?3, ?4, ?5, ?6)",
                params![alias, &fp[..], invite.relay, invite.mailbox.as_bytes(), group_id.as_bytes(), now_secs() as i64],
            )?;
            Ok(())
        })?;
        drop(group);
        let conv = self.conv_by_name(alias)?;
        self.commit_change(
            &conv,
            vec![(claimed.key_package.0, invite.relay.clone(), invite.mailbox)],
            Vec::new(),
            Some(invite.id),
        )
        .await?;
        let intro = Body::Intro {
            name: self.name.clone(),
            relay: self.relay.base().to_string(),
            mailbox: self.mailbox,
            invite: invite.id,
        };
        queued(self.send_body(&conv.name, intro).await)?;
        Ok(alias.to_string())
    }

    pub fn contacts(&self) -> Result<Vec<ContactView>> {
        let conn = self.db.conn();
        let mut stmt =
            conn.prepare("SELECT alias, display_name, fingerprint FROM contacts ORDER BY alias")?;
        let rows = stmt.query_map([], |r| {
            let fp: Vec<u8> = r.get(2)?;
            Ok(ContactView {
                id: hex::encode(&fp),
                alias: r.get(0)?,
                display_name: r.get(1)?,
                fingerprint: hex::encode(&fp[..8.min(fp.len())]),
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// A safety number both sides compute identically: 12 groups of 5 digits.
    pub fn safety_number(&self, alias: &str) -> Result<String> {
        let fp: Vec<u8> = self
            .db
            .conn()
            .query_row(
                "SELECT fingerprint FROM contacts WHERE alias = ?1",
                params![alias],
                |r| r.get(0),
            )
            .optional()?
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "no contact called {alias:?}; see `samizdat contacts`"
                ))
            })?;
        let (a, b) = if fp.as_slice() < &self.fingerprint[..] {
            (fp.as_slice(), &self.fingerprint[..])
        } else {
            (&self.fingerprint[..], fp.as_slice())
        };
        let mut input = b"samizdat safety number v1".to_vec();
        input.extend_from_slice(a);
        input.extend_from_slice(b);
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA512, &input);
        let groups: Vec<String> = digest
            .as_ref()
            .chunks(5)
            .take(12)
            .map(|c| {
                let n = c.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
                format!("{:05}", n % 100_000)
            })
            .collect();
        Ok(groups.join(" "))
    }

    // ---- conversations ----------------------------------------------------------------------

    fn conv_by_name(&self, name: &str) -> Result<Conv> {
        let row = self
            .db
            .conn()
            .query_row(
                &format!("SELECT {CONV_COLUMNS} FROM conversations WHERE name = ?1"),
                params![name],
                conv_from_row,
            )
            .optional()?;
        row.map(Self::conv_from_tuple)
            .transpose()?
            .ok_or_else(|| Error::NotFound(format!("no contact or group called {name:?}")))
    }

    /// The id (base64url, as in events) of the conversation called `name`.
    pub fn conversation_id(&self, name: &str) -> Result<String> {
        Ok(self.conv_by_name(name)?.group_id.to_string())
    }

    /// The current name of the conversation with this id (base64url, as in events).
    pub fn conversation_name(&self, id: &str) -> Result<String> {
        let gid: Id = id
            .parse()
            .map_err(|_| Error::Usage(format!("{id:?} is not a conversation id")))?;
        self.conv_by_id(&gid)?
            .map(|c| c.name)
            .ok_or_else(|| Error::NotFound(format!("no conversation with id {id}")))
    }

    fn conv_by_id(&self, id: &Id) -> Result<Option<Conv>> {
        let row = self
            .db
            .conn()
            .query_row(
                &format!("SELECT {CONV_COLUMNS} FROM conversations WHERE group_id = ?1"),
                params![id.as_bytes()],
                conv_from_row,
            )
            .optional()?;
        row.map(Self::conv_from_tuple).transpose()
    }

    fn conv_from_tuple(t: (Vec<u8>, String, String, String, i64, i64, i64)) -> Result<Conv> {
        Ok(Conv {
            group_id: Id::from_slice(&t.0)
                .map_err(|_| Error::Storage("corrupt group id".into()))?,
            kind: t.1,
            name: t.2,
            relay: t.3,
            read_epoch: t.4 as u64,
            cursor: t.5 as u64,
            active: t.6 != 0,
        })
    }

    pub(crate) fn active_convs(&self) -> Result<Vec<Conv>> {
        self.convs_where("active = 1")
    }

    /// Conversations we left whose leave notice is still queued.
    fn left_with_outbox(&self) -> Result<Vec<Conv>> {
        self.convs_where("active = 0 AND group_id IN (SELECT group_id FROM outbox)")
    }

    /// Conversations matching a fixed SQL condition, oldest first.
    fn convs_where(&self, condition: &str) -> Result<Vec<Conv>> {
        let conn = self.db.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {CONV_COLUMNS} FROM conversations WHERE {condition} ORDER BY created_at"
        ))?;
        let rows = stmt
            .query_map([], conv_from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        drop(stmt);
        drop(conn);
        rows.into_iter().map(Self::conv_from_tuple).collect()
    }

    fn store_token(&self, group: &Id, epoch: u64, token: &[u8]) -> Result<()> {
        self.db.conn().execute(
            "INSERT OR REPLACE INTO epoch_tokens (group_id, epoch, token) VALUES (?1, ?2, ?3)",
            params![group.as_bytes(), epoch as i64, token],
        )?;
        Ok(())
    }

    pub(crate) fn token(&self, group: &Id, epoch: u64) -> Result<Vec<u8>> {
        self.db
            .conn()
            .query_row(
                "SELECT token FROM epoch_tokens WHERE group_id = ?1 AND epoch = ?2",
                params![group.as_bytes(), epoch as i64],
                |r| r.get(0),
            )
            .optional()?
            .ok_or_else(|| Error::Storage(format!("missing epoch token for epoch {epoch}")))
    }

    /// The name to show for a member fingerprint in a conversation.
    fn label(&self, group: &Id, fp: &[u8]) -> Result<String> {
        if fp == self.fingerprint {
            return Ok("me".into());
        }
        let conn = self.db.conn();
        if let Some(alias) = conn
            .query_row(
                "SELECT alias FROM contacts WHERE fingerprint = ?1",
                params![fp],
                |r| r.get::<_, String>(0),
            )
            .optional()?
        {
            return Ok(alias);
        }
        if let Some(name) = conn
            .query_row(
                "SELECT name FROM member_names WHERE group_id = ?1 AND fingerprint = ?2",
                params![group.as_bytes(), fp],
                |r| r.get::<_, String>(0),
            )
            .optional()?
        {
            return Ok(format!("{name} (~{})", hex::encode(&fp[..3.min(fp.len())])));
        }
        Ok(format!("unknown ~{}", hex::encode(&fp[..3.min(fp.len())])))
    }

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
                kind,
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

    // ---- sending ----------------------------------------------------------------------------

    /// Send a text message to a contact or group. The message is stored before the relay sees
    /// it: when the relay cannot be reached the error says so and the message stays queued
    /// (retried by the next sync).
    pub async fn send(&mut self, target: &str, text: &str) -> Result<String> {
        if text.is_empty() {
            return Err(Error::Usage("the message is empty".into()));
        }
        if text.len() > MAX_TEXT {
            return Err(Error::Usage(format!(
                "the message is longer than {MAX_TEXT} bytes"
            )));
        }
        self.send_body(
            target,
            Body::Text {
                text: text.to_string(),
            },
        )
        .await
    }

    async fn send_body(&mut self, target: &str, body: Body) -> Result<String> {
        let conv = self.conv_by_name(target)?;
        let payload = Payload {
            id: random_id(),
            sent_at: now_millis(),
            body,
        };
        self.send_payload(&conv, payload).await
    }

    /// Encrypt and append one payload, storing it as pending first (text in `messages`,
    /// every other body in `outbox`), so nothing is lost when the relay is unreachable.
    async fn send_payload(&mut self, conv: &Conv, payload: Payload) -> Result<String> {
        if !conv.active {
            return Err(Error::NotMember(format!(
                "you are no longer a member of {:?}",
                conv.name
            )));
        }
        let mut events = Vec::new();
        let synced = self.sync_group(&conv.group_id, &mut events).await;
        self.buffered.append(&mut events);
        synced?;
        let relay = self.relay_for(&conv.relay)?;
        let plain = payload.encode();
        for _ in 0..MAX_ATTEMPTS {
            let mut group = self.mls.load(conv.group_id.as_bytes())?;
            let epoch = group.epoch();
            let ct = group.encrypt(&plain)?;
            let token = group.token()?;
            let request_id = random_id();
            // Store the ratchet step and the pending message before the relay sees it: a
            // crash after this point retries the identical request.
            self.db.transaction(|| {
                group.save()?;
                self.queue(conv, &payload, &plain, &request_id, &ct, epoch, &mut events)
            })?;
            self.buffered.append(&mut events);
            crash_point("send-before-append");
            match relay
                .append_application(request_id, &conv.group_id, &token, epoch, ct)
                .await
            {
                Ok(seq) => {
                    crash_point("send-after-append");
                    self.mark_sent(conv, &payload, seq)?;
                    return Ok(payload.id.to_string());
                }
                Err(Error::Relay {
                    code: ErrorCode::StaleEpoch,
                    ..
                }) => {
                    let synced = self.sync_group(&conv.group_id, &mut events).await;
                    self.buffered.append(&mut events);
                    synced?;
                }
                Err(e @ Error::RelayUnreachable(_)) => {
                    // The message stays queued; the next sync or send retries it.
                    return Err(e);
                }
                Err(e) => {
                    self.mark_failed(conv, &payload, &e)?;
                    return Err(e);
                }
            }
        }
        Err(Error::Busy(
            "the group kept changing while sending; the message stays queued and is retried by the next sync".into(),
        ))
    }

    /// Store one encrypted attempt of `payload` as pending (inside the caller's transaction).
    #[allow(clippy::too_many_arguments)]
    fn queue(
        &self,
        conv: &Conv,
        payload: &Payload,
        plain: &[u8],
        request_id: &Id,
        ct: &[u8],
        epoch: u64,
        events: &mut Vec<Event>,
    ) -> Result<()> {
        let conn = self.db.conn();
        if let Body::Text { text } = &payload.body {
            let existed: i64 = conn.query_row(
                "SELECT COUNT(*) FROM messages WHERE id = ?1",
                params![payload.id.as_bytes()],
                |r| r.get(0),
            )?;
            conn.execute(
                "INSERT INTO messages (id, group_id, sender_fp, outgoing, body, sent_at, received_at, request_id, pending_body, pending_epoch)
                 VALUES (?1, ?2, ?3, 1, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT(id) DO UPDATE SET request_id = excluded.request_id, pending_body = excluded.pending_body, pending_epoch = excluded.pending_epoch",
                params![payload.id.as_bytes(), conv.group_id.as_bytes(), &self.fingerprint[..], text, payload.sent_at as i64, now_millis() as i64, request_id.as_bytes(), ct, epoch as i64],
            )?;
            drop(conn);
            // Reported once, on the first attempt (a re-encryption keeps the id).
            if existed == 0 {
                self.emit(
                    events,
                    Event::MessageQueued {
                        conversation_id: conv.group_id.to_string(),
                        conversation: conv.name.clone(),
                        id: payload.id.to_string(),
                    },
                )?;
            }
        } else {
            conn.execute(
                "INSERT INTO outbox (id, group_id, payload, request_id, pending_body, pending_epoch, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(id) DO UPDATE SET request_id = excluded.request_id, pending_body = excluded.pending_body, pending_epoch = excluded.pending_epoch",
                params![payload.id.as_bytes(), conv.group_id.as_bytes(), plain, request_id.as_bytes(), ct, epoch as i64, now_millis() as i64],
            )?;
        }
        Ok(())
    }

    /// The relay acknowledged our message at `seq`: remember the position as our own (MLS
    /// cannot decrypt its own messages) and clear the pending request, in one transaction.
    fn mark_sent(&self, conv: &Conv, payload: &Payload, seq: u64) -> Result<()> {
        let mut events = Vec::new();
        self.db.transaction(|| {
            let conn = self.db.conn();
            conn.execute(
                "INSERT OR IGNORE INTO own_entries (group_id, seq) VALUES (?1, ?2)",
                params![conv.group_id.as_bytes(), seq as i64],
            )?;
            if matches!(payload.body, Body::Text { .. }) {
                let changed = conn.execute(
                    "UPDATE messages SET seq = ?2, pending_body = NULL, pending_epoch = NULL WHERE id = ?1 AND seq IS NULL",
                    params![payload.id.as_bytes(), seq as i64],
                )?;
                drop(conn);
                if changed == 1 {
                    self.emit(
                        &mut events,
                        Event::MessageDelivered {
                            conversation_id: conv.group_id.to_string(),
                            conversation: conv.name.clone(),
                            id: payload.id.to_string(),
                            position: seq,
                        },
                    )?;
                }
            } else {
                conn.execute(
                    "DELETE FROM outbox WHERE id = ?1",
                    params![payload.id.as_bytes()],
                )?;
            }
            Ok(())
        })
    }

    /// The relay refused our message for good: a text message stays in the history marked as
    /// failed (with the reason); other bodies are dropped with a notice.
    fn mark_failed(&mut self, conv: &Conv, payload: &Payload, why: &Error) -> Result<()> {
        let mut events = Vec::new();
        self.db.transaction(|| {
            if matches!(payload.body, Body::Text { .. }) {
                self.db.conn().execute(
                    "UPDATE messages SET pending_body = NULL, pending_epoch = NULL, failed = ?2 WHERE id = ?1",
                    params![payload.id.as_bytes(), why.to_string()],
                )?;
                self.emit(
                    &mut events,
                    Event::MessageFailed {
                        conversation_id: conv.group_id.to_string(),
                        conversation: conv.name.clone(),
                        id: payload.id.to_string(),
                        reason: why.to_string(),
                    },
                )
            } else {
                self.db.conn().execute(
                    "DELETE FROM outbox WHERE id = ?1",
                    params![payload.id.as_bytes()],
                )?;
                self.emit(
                    &mut events,
                    Event::notice(
                        Some(conv),
                        format!("a queued update was refused by the relay: {why}"),
                    ),
                )
            }
        })?;
        self.buffered.append(&mut events);
        Ok(())
    }

    /// Retry outgoing messages and updates that the relay has not acknowledged, oldest first.
    async fn flush_pending(&mut self, conv: &Conv) -> Result<()> {
        let pending: Vec<(Vec<u8>, Vec<u8>, i64, Payload)> = {
            let conn = self.db.conn();
            let mut stmt = conn.prepare(
                "SELECT request_id, pending_body, pending_epoch, id, body, sent_at, NULL, received_at FROM messages
                 WHERE group_id = ?1 AND pending_body IS NOT NULL
                 UNION ALL
                 SELECT request_id, pending_body, pending_epoch, id, NULL, 0, payload, created_at FROM outbox
                 WHERE group_id = ?1
                 ORDER BY 8",
            )?;
            let rows = stmt
                .query_map(params![conv.group_id.as_bytes()], |r| {
                    Ok((
                        r.get::<_, Vec<u8>>(0)?,
                        r.get::<_, Vec<u8>>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, Vec<u8>>(3)?,
                        r.get::<_, Option<String>>(4)?,
                        r.get::<_, i64>(5)?,
                        r.get::<_, Option<Vec<u8>>>(6)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut out = Vec::with_capacity(rows.len());
            for (request_id, body, epoch, id, text, sent_at, plain) in rows {
                let payload = match (text, plain) {
                    (Some(text), _) => Payload {
                        id: Id::from_slice(&id)
                            .map_err(|_| Error::Storage("corrupt message id".into()))?,
                        sent_at: sent_at as u64,
                        body: Body::Text { text },
                    },
                    (None, Some(plain)) => Payload::decode(&plain)?,
                    (None, None) => continue,
                };
                out.push((request_id, body, epoch, payload));
            }
            out
        };
        let relay = self.relay_for(&conv.relay)?;
        for (request_id, body, epoch, payload) in pending {
            let request_id = Id::from_slice(&request_id)
                .map_err(|_| Error::Storage("corrupt request id".into()))?;
            let token = self.token(&conv.group_id, epoch as u64)?;
            match relay
                .append_application(request_id, &conv.group_id, &token, epoch as u64, body)
                .await
            {
                Ok(seq) => self.mark_sent(conv, &payload, seq)?,
                Err(Error::Relay {
                    code: ErrorCode::StaleEpoch,
                    ..
                }) => {
                    // Encrypted for an epoch that is over: re-encrypt the same payload (same
                    // id) now.
                    match self.send_payload(conv, payload.clone()).await {
                        Ok(_) | Err(Error::Relay { .. }) => {}
                        Err(e @ Error::NotMember(_)) => self.mark_failed(conv, &payload, &e)?,
                        Err(e) => return Err(e),
                    }
                }
                Err(e @ Error::RelayUnreachable(_)) => return Err(e),
                Err(e) => self.mark_failed(conv, &payload, &e)?,
            }
        }
        Ok(())
    }

    /// The client for `url`, kept for the life of the profile (one connection pool per relay).
    fn relay_for(&self, url: &str) -> Result<RelayClient> {
        let key = crate::relay_client::normalize_spec(url)?;
        if key == self.relay.base() {
            return Ok(self.relay.clone());
        }
        let mut relays = self.relays.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = relays.get(&key) {
            return Ok(r.clone());
        }
        let r = RelayClient::new(&key)?;
        relays.insert(key, r.clone());
        Ok(r)
    }

    // ---- commits ----------------------------------------------------------------------------

    /// Report who joined and who went between two member lists (inside the caller's
    /// transaction). Our own removal is reported as `removed` by the caller.
    fn member_changes(
        &self,
        conv: &Conv,
        before: &[mls::Member],
        after: &[mls::Member],
        events: &mut Vec<Event>,
    ) -> Result<()> {
        let had = |list: &[mls::Member], fp: &[u8; 32]| list.iter().any(|m| &m.fingerprint == fp);
        for m in after.iter().filter(|m| !had(before, &m.fingerprint)) {
            let e = Event::MemberAdded {
                conversation_id: conv.group_id.to_string(),
                conversation: conv.name.clone(),
                member: hex::encode(m.fingerprint),
                who: self.label(&conv.group_id, &m.fingerprint)?,
            };
            self.emit(events, e)?;
        }
        for m in before.iter().filter(|m| !had(after, &m.fingerprint)) {
            if m.fingerprint == self.fingerprint {
                continue;
            }
            let e = Event::MemberRemoved {
                conversation_id: conv.group_id.to_string(),
                conversation: conv.name.clone(),
                member: hex::encode(m.fingerprint),
                who: self.label(&conv.group_id, &m.fingerprint)?,
            };
            self.emit(events, e)?;
        }
        Ok(())
    }

    /// Commit adds (KeyPackage, mailbox relay, mailbox) and removals (fingerprints), retrying
    /// on epoch conflicts after catching up.
    async fn commit_change(
        &mut self,
        conv: &Conv,
        adds: Vec<(Vec<u8>, String, Id)>,
        removes: Vec<Vec<u8>>,
        invite: Option<Id>,
    ) -> Result<()> {
        let relay = self.relay_for(&conv.relay)?;
        let mut events = Vec::new();
        for _ in 0..MAX_ATTEMPTS {
            let synced = self.sync_group(&conv.group_id, &mut events).await;
            self.buffered.append(&mut events);
            synced?;
            let mut group = self.mls.load(conv.group_id.as_bytes())?;
            let members = group.members();
            let indices: Vec<u32> = removes
                .iter()
                .filter_map(|fp| {
                    members
                        .iter()
                        .find(|m| m.fingerprint.as_slice() == fp.as_slice())
                        .map(|m| m.index)
                })
                .collect();
            if adds.is_empty() && indices.is_empty() {
                return Ok(());
            }
            let kps: Vec<Vec<u8>> = adds.iter().map(|a| a.0.clone()).collect();
            let epoch = group.epoch();
            let token = group.token()?;
            let pending = group.commit(&kps, &indices)?;
            group.apply_pending_commit()?;
            let next_token = group.token()?;
            let mut welcomes = Vec::new();
            let mut elsewhere = Vec::new();
            if let Some(w) = &pending.welcome {
                let env = Envelope::Welcome {
                    group_id: conv.group_id,
                    relay: conv.relay.clone(),
                    welcome: Bytes(w.clone()),
                    invite_mac: invite
                        .map(|i| Bytes(crate::invite_mac(&i, &conv.group_id).to_vec())),
                }
                .encode();
                for (_, mailbox_relay, mailbox) in &adds {
                    if mailbox_relay.trim_end_matches('/') == relay.base() {
                        welcomes.push(WelcomeDrop {
                            mailbox_id: *mailbox,
                            body: Bytes(env.clone()),
                        });
                    } else {
                        elsewhere.push((mailbox_relay.clone(), *mailbox, env.clone()));
                    }
                }
            }
            match relay
                .append(
                    random_id(),
                    &conv.group_id,
                    &token,
                    EntryKind::Commit,
                    epoch,
                    pending.commit,
                    Some(sha256(&next_token)),
                    welcomes,
                )
                .await
            {
                Ok(seq) => {
                    self.db.transaction(|| {
                        group.save()?;
                        self.store_token(&conv.group_id, group.epoch(), &next_token)?;
                        self.db.conn().execute(
                            "INSERT OR IGNORE INTO own_entries (group_id, seq) VALUES (?1, ?2)",
                            params![conv.group_id.as_bytes(), seq as i64],
                        )?;
                        self.member_changes(conv, &members, &group.members(), &mut events)
                    })?;
                    self.buffered.append(&mut events);
                    for (r, mailbox, env) in elsewhere {
                        self.relay_for(&r)?
                            .drop_message(random_id(), &mailbox, env)
                            .await?;
                    }
                    return Ok(());
                }
                Err(Error::Relay {
                    code: ErrorCode::EpochConflict,
                    ..
                }) => {
                    // Someone else committed first: drop our in-memory change, catch up, retry.
                    drop(group);
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::Busy(
            "other members kept committing; try again".into(),
        ))
    }

    // ---- groups -----------------------------------------------------------------------------

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

    fn group_conv(&self, name: &str) -> Result<Conv> {
        let conv = self.conv_by_name(name)?;
        if conv.kind != "group" {
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

    fn contact_route(&self, alias: &str) -> Result<(Vec<u8>, Option<String>, Option<Id>)> {
        let row: Option<(Vec<u8>, Option<String>, Option<Vec<u8>>)> = self
            .db
            .conn()
            .query_row(
                "SELECT fingerprint, relay, mailbox_id FROM contacts WHERE alias = ?1",
                params![alias],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let (fp, relay, mailbox) = row.ok_or_else(|| {
            Error::NotFound(format!(
                "no contact called {alias:?}; see `samizdat contacts`"
            ))
        })?;
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
            let claimed = RelayClient::new(&relay_url)?
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
                Ok(MemberView {
                    name: self.label(&conv.group_id, &m.fingerprint)?,
                    fingerprint: hex::encode(&m.fingerprint[..8]),
                    me: m.fingerprint == self.fingerprint,
                })
            })
            .collect()
    }

    // ---- sync -------------------------------------------------------------------------------

    /// Fetch and process the mailbox and every conversation; acknowledge what was stored.
    pub async fn sync(&mut self) -> Result<Vec<Event>> {
        let mut events = Vec::new();
        self.sync_mailbox(&mut events).await?;
        events.append(&mut self.buffered);
        // Leave notices queued before we marked a conversation as left.
        for conv in self.left_with_outbox()? {
            self.flush_pending(&conv).await?;
            events.append(&mut self.buffered);
        }
        let convs = self.active_convs()?;
        let mut leavers: Vec<(Id, Vec<u8>)> = Vec::new();
        for conv in convs {
            // Queued sends first: once acknowledged they are known as our own entries, so
            // the log read below skips them instead of failing to decrypt them.
            self.flush_pending(&conv).await?;
            events.append(&mut self.buffered);
            match self.sync_group(&conv.group_id, &mut events).await {
                Ok(l) => leavers.extend(l.into_iter().map(|fp| (conv.group_id, fp))),
                Err(e @ Error::RelayUnreachable(_)) => return Err(e),
                Err(Error::Relay {
                    code: ErrorCode::BadToken,
                    ..
                }) => {
                    // Our epoch token is not the group's: we processed a commit the others did
                    // not (a fork served by a dishonest relay) or lost our state. Stop using
                    // this state; a member re-adding us starts afresh.
                    self.db.conn().execute(
                        "UPDATE conversations SET active = 0, status = 'lost sync with the group; ask a member to re-add you' WHERE group_id = ?1",
                        params![conv.group_id.as_bytes()],
                    )?;
                    self.emit(&mut events, Event::notice(Some(&conv), "lost sync with the group (its epoch token no longer matches: a fork or tampering); ask a member to re-add you".into()))?;
                }
                Err(e) => self.emit(
                    &mut events,
                    Event::notice(Some(&conv), format!("sync failed: {e}")),
                )?,
            }
        }
        // Members who asked to leave: remove them (one committer wins; the rest find them gone).
        for (gid, fp) in leavers {
            if let Some(conv) = self.conv_by_id(&gid)?
                && conv.active
            {
                self.commit_change(&conv, Vec::new(), vec![fp], None)
                    .await?;
            }
        }
        events.append(&mut self.buffered);
        Ok(events)
    }

    async fn sync_mailbox(&mut self, events: &mut Vec<Event>) -> Result<()> {
        let msgs = self
            .relay
            .read_mailbox(&self.mailbox_key, &self.mailbox, 0)
            .await?;
        if msgs.is_empty() {
            return Ok(());
        }
        let mut done = Vec::new();
        let mut joined = 0;
        for m in msgs {
            match Envelope::decode(&m.body.0) {
                Ok(Envelope::Welcome {
                    group_id,
                    relay,
                    welcome,
                    invite_mac,
                }) => {
                    if self.conv_by_id(&group_id)?.is_some_and(|c| c.active) {
                        // Already joined (a crash before the acknowledgement): nothing to do.
                        done.push(m.seq);
                        continue;
                    }
                    let screened =
                        self.screen_welcome(group_id, &relay, &welcome.0, invite_mac.as_ref());
                    match screened.and_then(|s| match s {
                        Screened::Join => self.join(group_id, &relay, &welcome.0).map(Some),
                        Screened::Pending(Some(event)) => self.emit(events, event).map(|()| None),
                        Screened::Pending(None) => Ok(None),
                    }) {
                        Ok(Some(name)) => {
                            joined += 1;
                            let e = Event::Joined {
                                conversation_id: group_id.to_string(),
                                conversation: name,
                            };
                            self.emit(events, e)?;
                        }
                        Ok(None) => {}
                        Err(e) => self.emit(
                            events,
                            Event::notice(None, format!("could not join a conversation: {e}")),
                        )?,
                    }
                }
                Err(_) => self.emit(
                    events,
                    Event::notice(None, "dropped an unreadable mailbox message".into()),
                )?,
            }
            done.push(m.seq);
        }
        // Acknowledge only after the joins are committed locally.
        crash_point("mailbox-before-ack");
        self.relay
            .ack(&self.mailbox_key, &self.mailbox, done)
            .await?;
        if joined > 0 {
            let new: Vec<Id> = events
                .iter()
                .filter_map(|e| match e {
                    Event::Joined {
                        conversation_id, ..
                    } => conversation_id.parse().ok(),
                    _ => None,
                })
                .collect();
            self.after_join(new, events).await?;
        }
        Ok(())
    }

    /// Refill the KeyPackage pool and announce our display name in conversations we just
    /// joined.
    async fn after_join(&mut self, new: Vec<Id>, events: &mut Vec<Event>) -> Result<()> {
        {
            let count = self
                .relay
                .key_package_count(&self.mailbox_key, &self.mailbox)
                .await?;
            if (count.available as usize) < KEY_PACKAGE_POOL / 2 {
                self.upload_key_packages(KEY_PACKAGE_POOL - count.available as usize, None)
                    .await?;
            }
            for id in new {
                // By id: catching up may rename the conversation (or end our membership).
                let Some(conv) = self.conv_by_id(&id)? else {
                    continue;
                };
                let payload = Payload {
                    id: random_id(),
                    sent_at: now_millis(),
                    body: Body::Profile {
                        name: self.name.clone(),
                    },
                };
                match self.send_payload(&conv, payload).await {
                    // Queued: the next sync delivers it.
                    Ok(_) | Err(Error::RelayUnreachable(_)) => {}
                    Err(e) => {
                        let text = format!("could not announce ourselves: {e}");
                        self.emit(events, Event::notice(Some(&conv), text))?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Decide whether a Welcome joins at once (from a contact, or the person we invited) or
    /// waits for consent. Nothing is sent, stored in MLS, or fetched from the Welcome's relay.
    fn screen_welcome(
        &mut self,
        group_id: Id,
        relay: &str,
        welcome: &[u8],
        invite_mac: Option<&Bytes>,
    ) -> Result<Screened> {
        crate::check_foreign_relay_url(relay)?;
        let (group, committer) = self.mls.join(welcome)?;
        if group.id() != group_id.as_bytes() {
            return Err(Error::Protocol(
                "the Welcome is for a different group than its envelope says".into(),
            ));
        }
        let members = group.members().len();
        let epoch = group.epoch();
        drop(group);
        let from_contact: bool = self.db.conn().query_row(
            "SELECT EXISTS (SELECT 1 FROM contacts WHERE fingerprint = ?1)",
            params![&committer[..]],
            |r| r.get(0),
        )?;
        let invited = match invite_mac {
            Some(mac) => {
                let conn = self.db.conn();
                let mut stmt = conn.prepare(
                    "SELECT invite_id FROM invites WHERE expires_at > ?1 AND (reusable = 1 OR uses = 0)",
                )?;
                let ids = stmt
                    .query_map(params![now_secs() as i64], |r| r.get::<_, Vec<u8>>(0))?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                ids.iter().filter_map(|b| Id::from_slice(b).ok()).any(|id| {
                    aws_lc_rs::constant_time::verify_slices_are_equal(
                        &crate::invite_mac(&id, &group_id),
                        &mac.0,
                    )
                    .is_ok()
                })
            }
            None => false,
        };
        let previous = self.conv_by_id(&group_id)?;
        let claims_existing = match &previous {
            // A re-add continues the same MLS group: a later epoch, committed by a contact.
            Some(c) if from_contact && epoch > c.read_epoch => None,
            Some(c) => Some(c.name.clone()),
            None if from_contact || invited => return Ok(Screened::Join),
            None => None,
        };
        if previous.is_some() && claims_existing.is_none() {
            return Ok(Screened::Join);
        }
        let relay_known = self.relay_known(relay)?;
        let inserted = self.db.conn().execute(
            "INSERT OR IGNORE INTO invitations (group_id, relay, welcome, committer, members, claims_existing, received_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![group_id.as_bytes(), relay, welcome, &committer[..], members as i64, claims_existing, now_secs() as i64],
        )?;
        if inserted == 0 {
            // Delivered again (the acknowledgement was lost): already reported.
            return Ok(Screened::Pending(None));
        }
        let id: i64 = self.db.conn().query_row(
            "SELECT id FROM invitations WHERE group_id = ?1",
            params![group_id.as_bytes()],
            |r| r.get(0),
        )?;
        Ok(Screened::Pending(Some(Event::InvitationPending {
            id,
            from: hex::encode(&committer[..8]),
            relay: relay.to_string(),
            members,
            warning: invitation_warning(claims_existing.as_deref(), relay_known, relay),
        })))
    }

    /// Whether this profile already talks to `relay` (its own, a contact's or a group's).
    fn relay_known(&self, relay: &str) -> Result<bool> {
        let relay = relay.trim_end_matches('/');
        if relay == self.relay.base() {
            return Ok(true);
        }
        Ok(self.db.conn().query_row(
            "SELECT EXISTS (SELECT 1 FROM conversations WHERE rtrim(relay, '/') = ?1)
                 OR EXISTS (SELECT 1 FROM contacts WHERE rtrim(relay, '/') = ?1)",
            params![relay],
            |r| r.get(0),
        )?)
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

    /// Join a pending invitation: only now is the group's relay contacted and our name sent.
    pub async fn invitation_accept(&mut self, id: i64) -> Result<String> {
        let row: Option<(Vec<u8>, String, Vec<u8>, Option<String>)> = self
            .db
            .conn()
            .query_row(
                "SELECT group_id, relay, welcome, claims_existing FROM invitations WHERE id = ?1",
                params![id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        let (gid, relay, welcome, claims) =
            row.ok_or_else(|| Error::NotFound(format!("no pending invitation {id}")))?;
        let group_id = Id::from_slice(&gid)
            .ok()
            .ok_or_else(|| Error::Protocol("corrupt invitation row".into()))?;
        if let Some(name) = claims
            && self.conv_by_id(&group_id)?.is_some()
        {
            return Err(Error::Usage(format!(
                "this invitation claims the id of your conversation {name:?} without continuing it; it cannot be accepted (decline it)"
            )));
        }
        let name = self.join(group_id, &relay, &welcome)?;
        self.db
            .conn()
            .execute("DELETE FROM invitations WHERE id = ?1", params![id])?;
        let mut events = Vec::new();
        let e = Event::Joined {
            conversation_id: group_id.to_string(),
            conversation: name.clone(),
        };
        self.emit(&mut events, e)?;
        self.after_join(vec![group_id], &mut events).await?;
        self.buffered.append(&mut events);
        Ok(name)
    }

    /// Decline a pending invitation: it is forgotten and nothing is ever sent.
    pub fn invitation_decline(&mut self, id: i64) -> Result<()> {
        let n = self
            .db
            .conn()
            .execute("DELETE FROM invitations WHERE id = ?1", params![id])?;
        if n == 0 {
            return Err(Error::NotFound(format!("no pending invitation {id}")));
        }
        Ok(())
    }

    fn join(&mut self, group_id: Id, relay: &str, welcome: &[u8]) -> Result<String> {
        crate::check_foreign_relay_url(relay)?;
        RelayClient::new(relay)?;
        let (mut group, _) = self.mls.join(welcome)?;
        if group.id() != group_id.as_bytes() {
            return Err(Error::Protocol(
                "the Welcome is for a different group than its envelope says".into(),
            ));
        }
        let token = group.token()?;
        let previous = self.conv_by_id(&group_id)?;
        let name = match &previous {
            Some(c) => c.name.clone(),
            None => self.unique_name(&format!("new-{}", group_id.short()))?,
        };
        self.db.transaction(|| {
            if previous.is_some() {
                // Re-added after a removal (or a lost sync): fresh MLS state; the old state's
                // epoch secrets must not linger.
                self.db.conn().execute("DELETE FROM mls_epochs WHERE group_id = ?1", params![group_id.as_bytes()])?;
            }
            group.save()?;
            if previous.is_some() {
                // Same conversation, reading from the new epoch.
                self.db.conn().execute(
                    "UPDATE conversations SET active = 1, status = NULL, relay = ?2, read_epoch = ?3, cursor = 0 WHERE group_id = ?1",
                    params![group_id.as_bytes(), relay, group.epoch() as i64],
                )?;
            } else {
                self.db.conn().execute(
                    "INSERT INTO conversations (group_id, kind, name, relay, read_epoch, cursor, created_at) VALUES (?1, 'group', ?2, ?3, ?4, 0, ?5)",
                    params![group_id.as_bytes(), name, relay, group.epoch() as i64, now_secs() as i64],
                )?;
            }
            self.store_token(&group_id, group.epoch(), &token)
        })?;
        Ok(name)
    }

    /// Read and process a conversation's log from its cursor. Returns members who asked to leave.
    async fn sync_group(&mut self, group_id: &Id, events: &mut Vec<Event>) -> Result<Vec<Vec<u8>>> {
        let mut leavers = Vec::new();
        let Some(mut conv) = self.conv_by_id(group_id)? else {
            return Ok(leavers);
        };
        let relay = RelayClient::new(&conv.relay)?;
        let own: HashSet<u64> = {
            let conn = self.db.conn();
            let mut stmt =
                conn.prepare("SELECT seq FROM own_entries WHERE group_id = ?1 AND seq > ?2")?;
            stmt.query_map(params![group_id.as_bytes(), conv.cursor as i64], |r| {
                r.get::<_, i64>(0)
            })?
            .map(|r| r.map(|v| v as u64))
            .collect::<rusqlite::Result<HashSet<_>>>()?
        };
        let mut group: Option<mls::Group> = None;
        let start = conv.cursor;
        let mut last_page = 0usize;
        while conv.active {
            if last_page >= PROGRESS_PAGE {
                // Another page: a long catch-up, worth showing.
                let e = Event::SyncProgress {
                    conversation_id: group_id.to_string(),
                    conversation: conv.name.clone(),
                    done: conv.cursor - start,
                };
                self.emit(events, e)?;
            }
            let token = self.token(group_id, conv.read_epoch)?;
            let page = relay
                .read_entries(group_id, conv.read_epoch, conv.cursor, &token)
                .await?;
            if page.entries.is_empty() {
                if page.current_epoch > conv.read_epoch {
                    self.emit(events, Event::notice(Some(&conv), "entries are missing from the relay (expired?); ask a member to re-add you".into()))?;
                }
                break;
            }
            // The relay is trusted for order, not for honesty: process by position, each
            // position once, and say so when positions are missing.
            let mut entries = page.entries;
            entries.sort_by_key(|e| e.seq);
            entries.dedup_by_key(|e| e.seq);
            entries.retain(|e| e.seq > conv.cursor);
            if entries.is_empty() {
                break;
            }
            last_page = entries.len();
            for entry in entries {
                if !conv.active {
                    break;
                }
                if conv.cursor > 0 && entry.seq != conv.cursor + 1 {
                    self.emit(events, Event::notice(Some(&conv), format!(
                            "entries {}..{} of the log are missing (withheld by the relay, or expired)",
                            conv.cursor + 1,
                            entry.seq - 1
                        )))?;
                }
                let mut next_epoch = conv.read_epoch;
                if own.contains(&entry.seq) {
                    if entry.kind == EntryKind::Commit {
                        next_epoch = entry.epoch + 1;
                    }
                    self.set_cursor(&conv, entry.seq, next_epoch)?;
                    conv.cursor = entry.seq;
                    conv.read_epoch = next_epoch;
                    continue;
                }
                if group.is_none() {
                    group = Some(self.mls.load(group_id.as_bytes())?);
                }
                let Some(g) = group.as_mut() else { break };
                let before = if entry.kind == EntryKind::Commit {
                    g.members()
                } else {
                    Vec::new()
                };
                let processed = g.process(&entry.body.0);
                match processed {
                    Ok(Incoming::Commit { epoch, removed }) => {
                        let token = if removed { None } else { Some(g.token()?) };
                        let after = if removed { Vec::new() } else { g.members() };
                        let g = &mut *g;
                        self.db.transaction(|| {
                            g.save()?;
                            if let Some(t) = &token {
                                self.store_token(group_id, epoch, t)?;
                            }
                            if removed {
                                self.db.conn().execute(
                                    "UPDATE conversations SET active = 0, status = 'removed from the group' WHERE group_id = ?1",
                                    params![group_id.as_bytes()],
                                )?;
                                let e = Event::Removed {
                                    conversation_id: group_id.to_string(),
                                    conversation: conv.name.clone(),
                                };
                                self.emit(events, e)?;
                            } else {
                                self.member_changes(&conv, &before, &after, events)?;
                            }
                            self.set_cursor(&conv, entry.seq, epoch)
                        })?;
                        conv.cursor = entry.seq;
                        conv.read_epoch = epoch;
                        if removed {
                            conv.active = false;
                        }
                    }
                    Ok(Incoming::Application { sender, data }) => {
                        let g = &mut *g;
                        let mut new_events = Vec::new();
                        let mut left = None;
                        self.db.transaction(|| {
                            g.save()?;
                            match Payload::decode(&data) {
                                Ok(p) => {
                                    left = self.apply_payload(
                                        &mut conv,
                                        &sender,
                                        p,
                                        entry.seq,
                                        &mut new_events,
                                    )?;
                                }
                                Err(_) => self.emit(
                                    &mut new_events,
                                    Event::notice(
                                        Some(&conv),
                                        format!(
                                            "ignored an undecodable message at position {}",
                                            entry.seq
                                        ),
                                    ),
                                )?,
                            }
                            self.set_cursor(&conv, entry.seq, conv.read_epoch)
                        })?;
                        // Re-read: the payload may have renamed the conversation.
                        if let Some(c) = self.conv_by_id(group_id)? {
                            conv.name = c.name;
                            conv.kind = c.kind;
                        }
                        conv.cursor = entry.seq;
                        events.extend(new_events);
                        leavers.extend(left);
                    }
                    Ok(Incoming::Other) => {
                        let g = &mut *g;
                        self.db.transaction(|| {
                            g.save()?;
                            self.set_cursor(&conv, entry.seq, conv.read_epoch)
                        })?;
                        conv.cursor = entry.seq;
                    }
                    Err(e) => {
                        // Forged, damaged or undecryptable: never displayed. Reload the
                        // group so no partial state from the failed attempt survives.
                        group = None;
                        let text = format!("rejected entry {} of the log: {e}", entry.seq);
                        self.db.transaction(|| {
                            self.emit(events, Event::notice(Some(&conv), text))?;
                            self.set_cursor(&conv, entry.seq, conv.read_epoch)
                        })?;
                        conv.cursor = entry.seq;
                    }
                }
            }
        }
        Ok(leavers)
    }

    fn set_cursor(&self, conv: &Conv, seq: u64, epoch: u64) -> Result<()> {
        self.db.conn().execute(
            "UPDATE conversations SET cursor = ?2, read_epoch = ?3 WHERE group_id = ?1",
            params![conv.group_id.as_bytes(), seq as i64, epoch as i64],
        )?;
        Ok(())
    }

    /// Store the effect of one decrypted payload (inside the caller's transaction).
    /// Returns the sender's fingerprint if it asked to leave.
    fn apply_payload(
        &self,
        conv: &mut Conv,
        sender: &[u8; 32],
        p: Payload,
        seq: u64,
        events: &mut Vec<Event>,
    ) -> Result<Option<Vec<u8>>> {
        let gid = conv.group_id;
        match p.body {
            Body::Text { text } => {
                let inserted = self.db.conn().execute(
                    "INSERT OR IGNORE INTO messages (id, group_id, seq, sender_fp, outgoing, body, sent_at, received_at, unread)
                     VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6, ?7, 1)",
                    params![p.id.as_bytes(), gid.as_bytes(), seq as i64, &sender[..], text, p.sent_at as i64, now_millis() as i64],
                )?;
                if inserted == 1 {
                    let e = Event::Message {
                        conversation_id: gid.to_string(),
                        conversation: conv.name.clone(),
                        id: p.id.to_string(),
                        sender: hex::encode(sender),
                        from: self.label(&gid, sender)?,
                        text,
                        sent_at: p.sent_at,
                    };
                    self.emit(events, e)?;
                }
            }
            Body::Profile { name } => {
                let name: String = name.chars().filter(|c| !c.is_control()).take(64).collect();
                self.db.conn().execute(
                    "INSERT OR REPLACE INTO member_names (group_id, fingerprint, name) VALUES (?1, ?2, ?3)",
                    params![gid.as_bytes(), &sender[..], name],
                )?;
                // In a 1:1 conversation the peer's own name becomes the contact's display name.
                self.db.conn().execute(
                    "UPDATE contacts SET display_name = ?2 WHERE fingerprint = ?1",
                    params![&sender[..], name],
                )?;
            }
            Body::GroupMeta { name } => {
                if conv.name.starts_with("new-") && conv.kind == "group" {
                    let unique = self.unique_name(&name)?;
                    self.db.conn().execute(
                        "UPDATE conversations SET name = ?2 WHERE group_id = ?1",
                        params![gid.as_bytes(), unique],
                    )?;
                    let e = Event::GroupNamed {
                        conversation_id: gid.to_string(),
                        conversation: unique.clone(),
                    };
                    self.emit(events, e)?;
                    conv.name = unique;
                }
            }
            Body::Intro {
                name,
                relay,
                mailbox,
                invite,
            } => {
                self.apply_intro(conv, sender, name, relay, mailbox, invite, events)?;
            }
            Body::Leave => {
                let e = Event::MemberLeft {
                    conversation_id: gid.to_string(),
                    conversation: conv.name.clone(),
                    member: hex::encode(sender),
                    who: self.label(&gid, sender)?,
                };
                self.emit(events, e)?;
                return Ok(Some(sender.to_vec()));
            }
        }
        Ok(None)
    }

    #[allow(clippy::too_many_arguments)]
    fn apply_intro(
        &self,
        conv: &mut Conv,
        sender: &[u8; 32],
        name: String,
        relay: String,
        mailbox: Id,
        invite: Id,
        events: &mut Vec<Event>,
    ) -> Result<()> {
        let gid = conv.group_id;
        let row: Option<(i64, i64, i64)> = self
            .db
            .conn()
            .query_row(
                "SELECT expires_at, reusable, uses FROM invites WHERE invite_id = ?1",
                params![invite.as_bytes()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let refusal = match row {
            None => Some("an introduction used an invite this profile never made"),
            Some((exp, _, _)) if (exp as u64) < now_secs() => {
                Some("an introduction used an expired invite")
            }
            Some((_, 0, uses)) if uses > 0 => Some("an introduction reused a single-use invite"),
            Some(_) => None,
        };
        if let Some(why) = refusal {
            self.db.conn().execute(
                "UPDATE conversations SET active = 0, status = ?2 WHERE group_id = ?1",
                params![gid.as_bytes(), format!("refused: {why}")],
            )?;
            conv.active = false;
            self.emit(events, Event::notice(Some(conv), format!("refused: {why}")))?;
            return Ok(());
        }
        self.db.conn().execute(
            "UPDATE invites SET uses = uses + 1 WHERE invite_id = ?1",
            params![invite.as_bytes()],
        )?;
        let display: String = name.chars().filter(|c| !c.is_control()).take(64).collect();
        let existing: Option<String> = self
            .db
            .conn()
            .query_row(
                "SELECT alias FROM contacts WHERE fingerprint = ?1",
                params![&sender[..]],
                |r| r.get(0),
            )
            .optional()?;
        let alias = match existing {
            Some(a) => a,
            None => {
                let alias = self.unique_name(&display)?;
                self.db.conn().execute(
                    "INSERT INTO contacts (alias, fingerprint, display_name, relay, mailbox_id, group_id, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![alias, &sender[..], display, relay, mailbox.as_bytes(), gid.as_bytes(), now_secs() as i64],
                )?;
                let e = Event::NewContact {
                    fingerprint: hex::encode(sender),
                    alias: alias.clone(),
                    display_name: display.clone(),
                };
                self.emit(events, e)?;
                alias
            }
        };
        // The conversation becomes the 1:1 chat with this contact, named by the alias
        // (an older 1:1 conversation with them keeps its own name).
        let other_conv: i64 = self.db.conn().query_row(
            "SELECT COUNT(*) FROM conversations WHERE name = ?1 AND group_id != ?2",
            params![alias, gid.as_bytes()],
            |r| r.get(0),
        )?;
        let new_name = if other_conv == 0 {
            alias
        } else {
            self.unique_name(&alias)?
        };
        self.db.conn().execute(
            "UPDATE conversations SET kind = 'direct', name = ?2 WHERE group_id = ?1",
            params![gid.as_bytes(), new_name],
        )?;
        conv.kind = "direct".into();
        conv.name = new_name;
        Ok(())
    }
}

/// An outgoing update that could not reach the relay is stored and retried by the next
/// sync: for the caller that is success.
fn queued(r: Result<String>) -> Result<()> {
    match r {
        Ok(_) | Err(Error::RelayUnreachable(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The warning shown with a pending invitation, if it needs one.
fn invitation_warning(claims: Option<&str>, relay_known: bool, relay: &str) -> Option<String> {
    match (claims, relay_known) {
        (Some(name), _) => Some(format!(
            "claims the id of your conversation {name:?} without continuing it: possibly a takeover attempt"
        )),
        (None, false) => Some(format!(
            "hosted on relay {relay}, which you have never used: accepting connects to it"
        )),
        (None, true) => None,
    }
}
