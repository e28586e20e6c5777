//! A profile: one identity on one device, with its encrypted store, its mailbox and its
//! conversations. Every user-facing operation of the messenger is a method here.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use rusqlite::{OptionalExtension, params};
use samizdat_proto::{Bytes, EntryKind, ErrorCode, Id, WelcomeDrop};
use serde::Serialize;

use crate::ids::{CallId, ContactId, ConversationId, DeviceId, MessageId};
use crate::invite::Invite;
use crate::mls::{self, Incoming, Mls};
use crate::notice::{ConvStatus, Notice, Problem, Refusal};
use crate::payload::{Body, Envelope, MAX_TEXT, Payload};
use crate::relay_client::{MailboxKey, RelayClient};
use crate::settings::{Family, Setting};
use crate::store::{Db, Tx};
use crate::{Error, Result, now_millis, now_secs, random_id, sha256};

mod actions;
mod apply;
mod attachments;
mod calls;
mod channel_admins;
mod channels;
pub(crate) use attachments::{AttachmentSource, PendingFile};
mod archive;
mod backup;
mod commit;
mod contacts;
mod conversations;
mod delivery;
mod device_link;
mod device_lists;
mod devices;
mod drafts;
mod duress;
mod events;
mod groups;
mod housekeeping;
mod invitations;
mod membership;
mod moves;
mod open;
mod outbox;
mod receipts;
mod relays;
mod search;
mod sync;
mod sync_entry;
mod views;

pub use crate::payload::{ArchiveRef, DeviceRecord};
use crate::welcome::WelcomePart;
pub use actions::{QuoteView, ReactionView};
pub use calls::{
    CallIce, CallLeg, CallOutcome, CallState, CallView, IceServer, MAX_GROUP_CALL, RING_SECS,
    Renegotiation, sdp_fingerprint,
};
pub use channels::{ChannelFaultView, ChannelPostView, ChannelSynced, ChannelView};
pub use contacts::Connected;
pub use conversations::NotifyLevel;
use delivery::OwedDrop;
pub use device_link::{Joined as DeviceJoined, LinkPreview};
pub use devices::DeviceView;
pub use devices::SAVED_TARGET;
use devices::{SELF_GROUP_NAME, is_self_group};
pub use events::TransferDirection;
pub use events::{Event, EventPage, LoggedEvent, RelayState};
pub use groups::GroupAdded;
use invitations::{Arrived, Screened, invitation_warning};
use open::remove_db_files;
use outbox::queued;
pub use receipts::{MessageState, RECEIPT_PEOPLE, ReceiptCounts};
pub use search::SearchHit;
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
    /// The self group: one person's devices (never listed; see `profile/devices.rs`).
    #[serde(rename = "self")]
    SelfGroup,
}

impl std::fmt::Display for ConvKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConvKind::Direct => "direct",
            ConvKind::Group => "group",
            ConvKind::SelfGroup => "self",
        })
    }
}

impl ConvKind {
    /// The value stored in `conversations.kind` (a CHECK constraint allows only these).
    fn from_sql(s: &str) -> Result<ConvKind> {
        match s {
            "direct" => Ok(ConvKind::Direct),
            "group" => Ok(ConvKind::Group),
            "self" => Ok(ConvKind::SelfGroup),
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
    /// Logs the running service is subscribed to on a live WebSocket: their entries are
    /// pushed as they are appended, so a send to one of them does not read the log first (a
    /// stale epoch still makes it read). Empty without a service.
    pub(crate) live_logs: HashSet<Id>,
    /// The sync under way is the running service's poll: logs (and channels) in `live_logs`,
    /// and the home mailbox when `mailbox_live`, are left to their pushes.
    pub(crate) poll_only: bool,
    /// The running service's home socket is subscribed to our mailbox: what arrives there
    /// is pushed (and makes the service read it).
    pub(crate) mailbox_live: bool,
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
    /// Set by [`crate::ClientHandle::wipe`]: the service stops after the current job, closes
    /// the profile and deletes its files, then answers here.
    pub(crate) wipe_on_stop: Option<tokio::sync::oneshot::Sender<Result<()>>>,
    /// Receipts are owed (`receipts_owed` has rows this process added): the service sends
    /// them after the call that produced them.
    pub(crate) receipts_due: std::sync::atomic::AtomicBool,
    /// The open call tunnels (loopback TURN listeners carried to the relay through the
    /// proxy), one per call, closed when the call ends.
    pub(crate) call_tunnels: std::sync::Mutex<HashMap<crate::ids::CallId, calls::CallTunnel>>,
}

impl Profile {
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
            .get_setting(Setting::LastResortAt)?
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
                self.db
                    .set_setting(Setting::LastResortAt, &now.to_be_bytes())?;
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
    db.set_setting(Setting::Proxy, url.as_bytes())?;
    db.set_setting(Setting::Isolate, if net.isolate { b"1" } else { b"0" })
}

fn stored_net(db: &Db) -> Result<crate::net::Net> {
    let url = db.setting_string(Setting::Proxy).unwrap_or_default();
    let isolate = db
        .setting(Setting::Isolate)
        .map(|v| v == b"1")
        .unwrap_or(false);
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
