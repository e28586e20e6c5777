//! A profile: one identity on one device, with its encrypted store, its mailbox and its
//! conversations. Every user-facing operation of the messenger is a method here.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use rusqlite::{OptionalExtension, params};
use samizdat_proto::{Bytes, EntryKind, ErrorCode, Id, WelcomeDrop};
use serde::Serialize;

use crate::invite::Invite;
use crate::mls::{self, Incoming, Mls};
use crate::notice::{ConvStatus, Notice, Problem, Refusal};
use crate::payload::{Body, Envelope, MAX_TEXT, Payload};
use crate::relay_client::{MailboxKey, RelayClient};
use crate::store::Db;
use crate::{Error, Result, now_millis, now_secs, random_id, sha256};

mod apply;
mod attachments;
pub(crate) use attachments::PendingFile;
mod backup;
mod commit;
mod contacts;
mod delivery;
mod device_lists;
mod devices;
mod drafts;
mod duress;
mod events;
mod groups;
mod invitations;
mod membership;
mod moves;
mod outbox;
mod relays;
mod sync;
mod views;

use crate::welcome::WelcomePart;
use delivery::OwedDrop;
pub use devices::{ArchiveRef, DeviceRecord, DeviceView, Joined as DeviceJoined, LinkPreview};
use devices::{SELF_GROUP_NAME, is_self_group};
pub use events::TransferDirection;
pub use events::{Event, EventPage, LoggedEvent, RelayState};
pub use groups::GroupAdded;
use invitations::{Arrived, Screened, invitation_warning};
use outbox::queued;
pub use views::{
    AttachmentView, ContactView, ConversationView, InvitationView, LastMessage, MemberView,
    MessageView, Page,
};

/// What a conversation is: a 1:1 chat (an MLS group of two) or a group.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ConvKind {
    Direct,
    Group,
}

impl std::fmt::Display for ConvKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConvKind::Direct => "direct",
            ConvKind::Group => "group",
        })
    }
}

impl ConvKind {
    /// The value stored in `conversations.kind` (a CHECK constraint allows only these).
    fn from_sql(s: &str) -> Result<ConvKind> {
        match s {
            "direct" => Ok(ConvKind::Direct),
            "group" => Ok(ConvKind::Group),
            other => Err(Error::Storage(format!(
                "unknown conversation kind {other:?}"
            ))),
        }
    }
}

/// KeyPackages kept in the relay's pool; refilled when it drops below half.
const KEY_PACKAGE_POOL: usize = 20;
/// How often (seconds) a running profile checks its KeyPackage pool.
const KP_CHECK_INTERVAL: u64 = 3600;
/// The last-resort KeyPackage is replaced this often (seconds).
const LAST_RESORT_ROTATION: u64 = 30 * 24 * 3600;
/// Attempts at a commit or a send when other members keep winning the race.
const MAX_ATTEMPTS: usize = 12;

const DB_FILE: &str = "profile.db";
/// A catch-up reports its progress after every page of at least this many entries.
const PROGRESS_PAGE: usize = 100;
/// Events kept in the durable log; older ones are dropped (and reported as an overflow).
pub const EVENT_LOG_MAX: u64 = 10_000;

/// Fault injection for the crash tests: the `CRASH` fault point set to `<point>` aborts the process at
/// that point, like a power cut (no destructors, no flush). Unset in normal use.
fn crash_point(point: &str) {
    if crate::fault::point("CRASH").is_some_and(|p| p == point) {
        std::process::abort();
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Conv {
    pub(crate) group_id: Id,
    pub(crate) kind: ConvKind,
    pub(crate) name: String,
    pub(crate) relay: String,
    pub(crate) read_epoch: u64,
    pub(crate) cursor: u64,
    pub(crate) active: bool,
    /// The id of the conversation's log on its relay (the group id until a move).
    pub(crate) log: Id,
    /// Added to log positions in the message order (see migration 10).
    pub(crate) seq_base: u64,
}

pub struct Profile {
    pub(crate) home: PathBuf,
    pub(crate) db: Db,
    pub(crate) mls: Mls,
    pub(crate) name: String,
    pub(crate) fingerprint: [u8; 32],
    pub(crate) mailbox: Id,
    pub(crate) mailbox_key: std::sync::Arc<MailboxKey>,
    pub(crate) relay: RelayClient,
    /// Our mailboxes on other, independent relays.
    pub(crate) others: Vec<relays::OwnMailbox>,
    /// Move targets that could not be reached, and when (Unix ms; in memory only).
    pub(crate) move_failed: HashMap<String, u64>,
    /// Relays (normalised addresses) that could not be reached, since when (Unix ms).
    pub(crate) down_since: HashMap<String, u64>,
    /// Events produced by syncs that ran inside other operations (a send catches up first).
    pub(crate) buffered: Vec<Event>,
    /// Logs the running service is subscribed to on a live WebSocket: their entries are
    /// pushed as they are appended, so a send to one of them does not read the log first (a
    /// stale epoch still makes it read). Empty without a service.
    pub(crate) live_logs: HashSet<Id>,
    /// One client (connection pool) per other relay, kept for the life of the profile.
    pub(crate) relays: std::sync::Mutex<HashMap<String, RelayClient>>,
    /// When this process last checked the KeyPackage pool (Unix seconds; 0: never).
    pub(crate) kp_checked_at: u64,
    /// The same for the pools of the other mailboxes.
    pub(crate) others_checked_at: u64,
    /// How connections leave the machine (proxy, isolation).
    pub(crate) net: crate::net::Net,
    /// Secret salt of the proxy identities (isolation).
    pub(crate) isolation_salt: Vec<u8>,
    /// Relay clients append application entries over a held WebSocket (the service).
    pub(crate) ws_appends: bool,
}

/// The parts of a profile that come from (or go into) its database, for `Profile::assemble`.
struct Stored<'a> {
    home: &'a Path,
    db: Db,
    mls: Mls,
    name: String,
    fingerprint: [u8; 32],
    mailbox: Id,
    mailbox_key: MailboxKey,
    relay: RelayClient,
    others: Vec<relays::OwnMailbox>,
    net: crate::net::Net,
    isolation_salt: Vec<u8>,
}

fn remove_db_files(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}

type ConvRow = (
    Vec<u8>,
    String,
    String,
    String,
    i64,
    i64,
    i64,
    Option<Vec<u8>>,
    i64,
);

fn conv_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ConvRow> {
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
}

const CONV_COLUMNS: &str =
    "group_id, kind, name, relay, read_epoch, cursor, active, log_id, seq_base";

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
        let net = crate::net::Net::from_env()?.unwrap_or_default();
        Self::init_with(home, passphrase, relay_url, name, net).await
    }

    /// [`Profile::init_with`] on several independent relays: a mailbox on each (the first
    /// is the primary). Nothing is left behind when one of them fails.
    pub async fn init_relays(
        home: &Path,
        passphrase: &str,
        relays: &[String],
        name: &str,
        net: crate::net::Net,
    ) -> Result<Profile> {
        let Some((first, rest)) = relays.split_first() else {
            return Err(Error::Usage("give at least one --relay".into()));
        };
        let mut profile = Self::init_with(home, passphrase, first, name, net).await?;
        for r in rest {
            if let Err(e) = profile.add_relay(r).await {
                drop(profile);
                remove_db_files(&Self::db_path(home));
                return Err(e);
            }
        }
        Ok(profile)
    }

    /// [`Profile::init`] with a proxy (kept in the profile for every later connection).
    pub async fn init_with(
        home: &Path,
        passphrase: &str,
        relay_url: &str,
        name: &str,
        net: crate::net::Net,
    ) -> Result<Profile> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
            return Err(Error::Usage(
                "the display name must be 1 to 64 printable characters".into(),
            ));
        }
        Self::create(home, passphrase, relay_url, name, net, true).await
    }

    /// A profile for a device about to be linked (`device join`): keys and a mailbox, no
    /// KeyPackages yet (they need the certificate the other device signs).
    pub(crate) async fn init_device(
        home: &Path,
        passphrase: &str,
        relay_url: &str,
        name: &str,
        net: crate::net::Net,
    ) -> Result<Profile> {
        Self::create(home, passphrase, relay_url, name, net, false).await
    }

    /// A new profile in `home` (nothing is left behind when it fails).
    async fn create(
        home: &Path,
        passphrase: &str,
        relay_url: &str,
        name: &str,
        net: crate::net::Net,
        key_packages: bool,
    ) -> Result<Profile> {
        crate::store::check_new_passphrase(passphrase)?;
        net.check()?;
        let isolation_salt = crate::random_id().as_bytes().to_vec();
        let relay = RelayClient::with_net(
            relay_url,
            &net,
            isolation_identity(&net, &isolation_salt, b"mailbox").as_deref(),
        )?;
        let path = Self::db_path(home);
        if path.exists() {
            return Err(Error::Usage(format!(
                "a profile already exists in {}",
                home.display()
            )));
        }
        crate::create_private_dir(home)?;
        relay.health().await?;
        let result = Self::init_inner(
            home,
            &path,
            passphrase,
            relay,
            name,
            net,
            isolation_salt,
            key_packages,
        )
        .await;
        if result.is_err() {
            remove_db_files(&path);
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn init_inner(
        home: &Path,
        path: &Path,
        passphrase: &str,
        relay: RelayClient,
        name: &str,
        net: crate::net::Net,
        isolation_salt: Vec<u8>,
        key_packages: bool,
    ) -> Result<Profile> {
        let db = Db::open(path, passphrase)?;
        db.set_setting("isolation_salt", &isolation_salt)?;
        store_net(&db, &net)?;
        // Random bytes until a duress passphrase is set (then indistinguishable from them).
        crate::wipe::init_duress(home)?;
        Self::manage_duress(&db)?;
        let signer = mls::generate_signer(mls::DEFAULT_CIPHERSUITE)?;
        let (mailbox_key, pkcs8) = MailboxKey::generate()?;
        let pkcs8 = zeroize::Zeroizing::new(pkcs8);
        let mailbox = random_id();
        // Our own name as others will see it: nothing invisible (review 3, L11). The
        // `RAW_NAME` fault point keeps it as given, as a hostile client would.
        let name = if crate::fault::on("RAW_NAME") {
            name.to_string()
        } else {
            crate::text::clean_name(name)
        };
        if name.is_empty() {
            return Err(Error::Usage("the display name must not be empty".into()));
        }
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
            None,
        )?;
        let mut profile = Profile::assemble(Stored {
            home,
            fingerprint: mls::fingerprint(&signer.public),
            db,
            mls,
            name: name.to_string(),
            mailbox,
            mailbox_key,
            relay,
            others: Vec::new(),
            net,
            isolation_salt,
        });
        profile.db.conn().execute(
            "INSERT INTO mailboxes (relay, mailbox_id, mailbox_key, position, created_at) VALUES (?1, ?2, ?3, 0, ?4)",
            params![profile.relay.base(), mailbox.as_bytes(), &pkcs8[..], now_secs() as i64],
        )?;
        if !key_packages {
            return Ok(profile);
        }
        let last_resort = profile.mls.key_package(true)?;
        profile
            .upload_key_packages(KEY_PACKAGE_POOL, Some(last_resort))
            .await?;
        profile
            .db
            .set_setting("last_resort_at", &now_secs().to_be_bytes())?;
        Ok(profile)
    }

    /// A profile from what its database holds; the in-memory state starts empty.
    fn assemble(s: Stored<'_>) -> Profile {
        let down_since = Self::load_down(&s.db);
        Profile {
            home: s.home.to_path_buf(),
            db: s.db,
            mls: s.mls,
            name: s.name,
            fingerprint: s.fingerprint,
            mailbox: s.mailbox,
            mailbox_key: std::sync::Arc::new(s.mailbox_key),
            relay: s.relay,
            others: s.others,
            down_since,
            move_failed: HashMap::new(),
            buffered: Vec::new(),
            live_logs: HashSet::new(),
            relays: Default::default(),
            ws_appends: false,
            kp_checked_at: 0,
            others_checked_at: 0,
            net: s.net,
            isolation_salt: s.isolation_salt,
        }
    }

    /// Open a profile; with the duress passphrase, wipe it silently and return a fresh,
    /// empty profile with the same display name on the same relay (see `wipe.rs`). The caller
    /// holds the profile lock.
    pub async fn open_or_duress(home: &Path, passphrase: &str) -> Result<Profile> {
        match Profile::open(home, passphrase) {
            Err(Error::WrongPassphrase) => match crate::wipe::check_duress(home, passphrase)? {
                Some(fresh) => {
                    crate::wipe::wipe_keeping_lock(home)?;
                    let net = match &fresh.proxy {
                        Some(url) => crate::net::Net {
                            proxy: Some(crate::net::Proxy::parse(url)?),
                            isolate: fresh.isolate,
                        },
                        None => crate::net::Net::from_env()?.unwrap_or_default(),
                    };
                    Profile::init_with(home, passphrase, &fresh.relay, &fresh.name, net).await
                }
                None => Err(Error::WrongPassphrase),
            },
            other => other,
        }
    }

    /// Open an existing profile.
    pub fn open(home: &Path, passphrase: &str) -> Result<Profile> {
        let path = Self::db_path(home);
        if !path.exists() {
            return Err(Error::NotFound(format!("no profile in {}", home.display())));
        }
        let db = Db::open(&path, passphrase)?;
        let secret = zeroize::Zeroizing::new(db.setting("mls_secret")?);
        let public = db.setting("mls_public")?;
        let cs_bytes = db.setting("ciphersuite")?;
        let cs = u16::from_be_bytes(
            <[u8; 2]>::try_from(cs_bytes.as_slice())
                .map_err(|_| Error::Storage("corrupt ciphersuite".into()))?,
        );
        // A linked device carries its certificate; the first device is the identity.
        let cert = db.get_setting("device_cert")?;
        let mls = Mls::new(db.clone(), &secret, &public, cs.into(), cert.as_deref())?;
        let person = match &cert {
            Some(c) => crate::device::DeviceCert::decode(c)
                .ok_or_else(|| Error::Storage("corrupt device certificate".into()))??
                .person(),
            None => mls::fingerprint(&public),
        };
        let mailbox = Id::from_slice(&db.setting("mailbox_id")?)
            .map_err(|_| Error::Storage("corrupt mailbox id".into()))?;
        let mailbox_key =
            MailboxKey::from_pkcs8(&zeroize::Zeroizing::new(db.setting("mailbox_key")?))?;
        let isolation_salt = match db.setting("isolation_salt") {
            Ok(s) if !s.is_empty() => s,
            _ => {
                let s = crate::random_id().as_bytes().to_vec();
                db.set_setting("isolation_salt", &s)?;
                s
            }
        };
        let net = match crate::net::Net::from_env()? {
            Some(n) => n,
            None => stored_net(&db)?,
        };
        let relay = RelayClient::with_net(
            &db.setting_string("relay")?,
            &net,
            isolation_identity(&net, &isolation_salt, b"mailbox").as_deref(),
        )?;
        let others = Self::load_mailboxes(&db, &net, &isolation_salt, relay.base(), &mailbox)?;
        let profile = Profile::assemble(Stored {
            others,
            home,
            name: db.setting_string("name")?,
            fingerprint: person,
            db,
            mls,
            mailbox,
            mailbox_key,
            relay,
            net,
            isolation_salt,
        });
        // Routine: the duress file changes at every unlock (see `duress.rs`). A failure
        // does not keep the person out of their profile.
        if let Err(e) = profile.refresh_duress() {
            tracing::warn!("cannot rewrite the duress file: {e}");
        }
        Ok(profile)
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

    /// Keep the KeyPackage pool usable (a relay that withholds KeyPackages): refill it when it is below half,
    /// rotate the last-resort KeyPackage every `LAST_RESORT_ROTATION`, and delete private
    /// keys of KeyPackages past their lifetime. Runs at most once an hour per process.
    async fn maintain_key_packages(&mut self) -> Result<()> {
        let now = now_secs();
        if self.kp_checked_at != 0 && now < self.kp_checked_at + KP_CHECK_INTERVAL {
            return Ok(());
        }
        let count = self
            .relay
            .key_package_count(&self.mailbox_key, &self.mailbox)
            .await?;
        let rotated_at = self
            .db
            .get_setting("last_resort_at")?
            .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0);
        let rotate = !count.has_last_resort || now >= rotated_at + LAST_RESORT_ROTATION;
        let missing = KEY_PACKAGE_POOL.saturating_sub(count.available as usize);
        let refill = if (count.available as usize) < KEY_PACKAGE_POOL / 2 {
            missing
        } else {
            0
        };
        if refill > 0 || rotate {
            let last_resort = rotate.then(|| self.mls.key_package(true)).transpose()?;
            self.upload_key_packages(refill, last_resort).await?;
            if rotate {
                self.db.set_setting("last_resort_at", &now.to_be_bytes())?;
            }
        }
        // Private keys of KeyPackages past their lifetime can never be used: delete them.
        // Older last-resort keys are kept until then (someone may hold one right now).
        self.db.conn().execute(
            "DELETE FROM mls_key_packages WHERE expires_at < ?1",
            params![now as i64],
        )?;
        self.kp_checked_at = now;
        Ok(())
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

    fn conv_by_name(&self, name: &str) -> Result<Conv> {
        let row = self
            .db
            .conn()
            .query_row(
                &format!("SELECT {CONV_COLUMNS} FROM conversations WHERE name = ?1 AND hidden = 0"),
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

    /// Delete a conversation that never came to be (an accept refused for good), with its
    /// contact, MLS state and tokens (inside the caller's transaction).
    fn forget_conversation(&self, gid: &Id) -> Result<()> {
        let conn = self.db.conn();
        let g = gid.as_bytes();
        conn.execute("DELETE FROM contacts WHERE group_id = ?1", params![g])?;
        for table in [
            "conversations",
            "drafts",
            "last_rosters",
            "epoch_tokens",
            "own_entries",
            "member_names",
            "messages",
            "outbox",
            "mls_groups",
            "mls_epochs",
            "mls_trees",
            "mls_state_bases",
        ] {
            conn.execute(
                &format!("DELETE FROM {table} WHERE group_id = ?1"),
                params![g],
            )?;
        }
        Ok(())
    }

    /// Forget the keys of a conversation we are no longer in (removed, or left and our
    /// leave notice delivered): MLS state and epoch tokens go; the history stays. Inside the
    /// caller's transaction.
    fn drop_group_secrets(&self, gid: &Id) -> Result<()> {
        // Who was in it: only one of them may re-add us later (M6).
        if let Ok(group) = self.mls.load(gid.as_bytes()) {
            let conn = self.db.conn();
            for m in group.members() {
                conn.execute(
                    "INSERT OR IGNORE INTO last_rosters (group_id, person) VALUES (?1, ?2)",
                    params![gid.as_bytes(), &m.fingerprint[..]],
                )?;
            }
        }
        let conn = self.db.conn();
        for table in [
            "mls_groups",
            "mls_epochs",
            "mls_trees",
            "mls_state_bases",
            "epoch_tokens",
        ] {
            conn.execute(
                &format!("DELETE FROM {table} WHERE group_id = ?1"),
                params![gid.as_bytes()],
            )?;
        }
        Ok(())
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

    /// The conversation whose log on its relay has this id (a push names the log).
    pub(crate) fn conv_by_log(&self, id: &Id) -> Result<Option<Conv>> {
        let row = self
            .db
            .conn()
            .query_row(
                &format!(
                    "SELECT {CONV_COLUMNS} FROM conversations WHERE COALESCE(log_id, group_id) = ?1"
                ),
                params![id.as_bytes()],
                conv_from_row,
            )
            .optional()?;
        row.map(Self::conv_from_tuple).transpose()
    }

    fn conv_from_tuple(t: ConvRow) -> Result<Conv> {
        let group_id =
            Id::from_slice(&t.0).map_err(|_| Error::Storage("corrupt group id".into()))?;
        let log = match t.7 {
            Some(l) => Id::from_slice(&l).map_err(|_| Error::Storage("corrupt log id".into()))?,
            None => group_id,
        };
        Ok(Conv {
            group_id,
            log,
            seq_base: t.8.max(0) as u64,
            kind: ConvKind::from_sql(&t.1)?,
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

    /// Record why `gid` no longer takes messages (inside the caller's transaction, if any).
    fn set_status(&self, gid: &Id, status: &ConvStatus) -> Result<()> {
        self.db.conn().execute(
            "UPDATE conversations SET status = ?2, status_reason = ?3,
                 active = CASE WHEN ?2 = 'refusing' THEN active ELSE 0 END
             WHERE group_id = ?1",
            params![gid.as_bytes(), status.code(), status.reason()],
        )?;
        Ok(())
    }

    fn status_of(&self, gid: &Id) -> Result<Option<ConvStatus>> {
        let row: Option<(Option<String>, Option<String>)> = self
            .db
            .conn()
            .query_row(
                "SELECT status, status_reason FROM conversations WHERE group_id = ?1",
                params![gid.as_bytes()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        Ok(row.and_then(|(code, reason)| {
            ConvStatus::from_columns(code.as_deref(), reason.as_deref())
        }))
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
    /// The contacts (by key fingerprint) whose alias looks like another contact's — the
    /// same Unicode skeleton, as "alice" and "аlice" (Cyrillic а) have: shown everywhere with
    /// a key suffix and their own colour, so one cannot pass for the other.
    pub(crate) fn look_alike_contacts(&self) -> Result<HashSet<Vec<u8>>> {
        let conn = self.db.conn();
        let mut stmt = conn.prepare("SELECT alias, fingerprint FROM contacts")?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let forms: Vec<([String; 2], Vec<u8>)> = rows
            .into_iter()
            .map(|(alias, fp)| (crate::text::skeletons(&alias), fp))
            .collect();
        let mut alike = HashSet::new();
        for (i, (a, fa)) in forms.iter().enumerate() {
            for (b, fb) in &forms[i + 1..] {
                if crate::text::look_alike(a, b) {
                    alike.insert(fa.clone());
                    alike.insert(fb.clone());
                }
            }
        }
        Ok(alike)
    }

    /// How a contact or member is named on screen: the alias, or their own name with a key
    /// suffix; a contact whose alias looks like another's gets the suffix too.
    pub(crate) fn label(&self, group: &Id, fp: &[u8]) -> Result<String> {
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
            drop(conn);
            // A contact whose name looks like another's carries a key suffix (app review).
            if self.look_alike_contacts()?.contains(fp) {
                return Ok(format!(
                    "{alias} (~{})",
                    hex::encode(&fp[..3.min(fp.len())])
                ));
            }
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
            return Ok(format!(
                "{} (~{})",
                crate::text::clean_name(&name),
                hex::encode(&fp[..3.min(fp.len())])
            ));
        }
        Ok(format!("unknown ~{}", hex::encode(&fp[..3.min(fp.len())])))
    }
}

/// The proxy identity of one purpose (the mailbox, a conversation) when isolating: a hash
/// of a secret per-profile salt, so the relay (or a proxy operator) cannot link identities
/// of one person, and stable, so a conversation keeps its circuit between restarts.
pub(crate) fn isolation_identity(
    net: &crate::net::Net,
    salt: &[u8],
    purpose: &[u8],
) -> Option<String> {
    if !net.isolating() {
        return None;
    }
    let h = sha256(&[salt, purpose].concat());
    Some(format!("sz-{}", hex::encode(&h[..8])))
}

fn store_net(db: &Db, net: &crate::net::Net) -> Result<()> {
    net.check()?;
    let url = net.proxy.as_ref().map(|p| p.url()).unwrap_or_default();
    db.set_setting("proxy", url.as_bytes())?;
    db.set_setting("isolate", if net.isolate { b"1" } else { b"0" })
}

fn stored_net(db: &Db) -> Result<crate::net::Net> {
    let url = db.setting_string("proxy").unwrap_or_default();
    let isolate = db.setting("isolate").map(|v| v == b"1").unwrap_or(false);
    let mut net = crate::net::Net {
        proxy: if url.is_empty() {
            None
        } else {
            Some(crate::net::Proxy::parse(&url)?)
        },
        isolate,
    };
    // Stored before `Net::check` existed: isolation never worked with these credentials, so
    // no screen may claim it.
    net.isolate = net.isolating();
    Ok(net)
}

impl Profile {
    /// How this profile connects (what `config proxy` shows).
    pub fn net(&self) -> &crate::net::Net {
        &self.net
    }

    /// Keep a new proxy setting; it applies from the next start of the profile's process.
    pub fn set_net(&self, net: &crate::net::Net) -> Result<()> {
        store_net(&self.db, net)?;
        // A duress unlock must connect the way the profile now does (M11).
        self.refresh_duress()
    }

    /// The saved proxy setting (what the next start uses; `SAMIZDAT_PROXY` overrides it for
    /// one process).
    pub fn saved_net(&self) -> Result<crate::net::Net> {
        stored_net(&self.db)
    }
}
