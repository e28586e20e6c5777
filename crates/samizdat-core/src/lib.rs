//! The Samizdat client core: a profile's keys, its SQLCipher-encrypted store, MLS groups
//! (through mls-rs, behind `mls`), invites, and the relay client.
//!
//! What it is not: a user interface. It prints nothing, reads no terminal and writes no
//! sentence (what it reports is data: [`Notice`], [`ConvStatus`]); the CLI, the app and bots
//! are fronts over the service ([`ClientHandle`]), through the typed API of the `samizdat-rpc`
//! crate above this one (in process, or JSON-RPC over the service's socket).
//!
//! What a front uses is public: the service, the views and
//! events, [`Notice`] and the other reports as data, the lock, the network settings, wipe.
//! The MLS adapter, the store, the relay client and the Welcome parts are public only with the
//! `internals` feature, which the benchmarks and the integration tests turn on; the formats
//! between clients (`payload`, `invite`, `pin`, `metadata`) are private. It never sends a name, a contact list or a
//! plaintext to a relay: display names travel only inside MLS-encrypted messages, and MLS
//! credentials carry a key fingerprint, never a name.

pub mod attachment;
pub mod channel;
pub mod device;
mod fault;
mod ids;
mod invite;
pub mod lock;
mod metadata;
#[cfg(feature = "internals")]
pub mod mls;
#[cfg(not(feature = "internals"))]
mod mls;
pub mod net;
mod notice;
mod payload;
mod pin;
mod profile;
#[cfg(feature = "internals")]
pub mod relay_client;
#[cfg(not(feature = "internals"))]
mod relay_client;
pub mod service;
#[cfg(feature = "internals")]
pub mod settings;
#[cfg(not(feature = "internals"))]
mod settings;
#[cfg(feature = "internals")]
pub mod store;
#[cfg(not(feature = "internals"))]
mod store;
#[cfg(feature = "testing")]
pub mod testing;
pub mod text;
pub mod thumbnail;
pub mod transfer;
#[cfg(feature = "internals")]
pub mod welcome;
#[cfg(not(feature = "internals"))]
mod welcome;
pub mod wipe;

pub use ids::{CallId, ChannelId, ContactId, ConversationId, DeviceId, MessageId};
pub use invite::Invite;
pub use notice::{ConvStatus, ErrorKind, Notice, Problem, Refusal};
pub use payload::MAX_VOICE_MS;
pub use profile::{
    AttachmentView, CallIce, CallLeg, CallOutcome, CallState, CallView, ChannelFaultView,
    ChannelPostView, ChannelSynced, ChannelView, Connected, ContactView, ConvKind,
    ConversationView, DeviceJoined, DeviceView, Event, EventPage, GroupAdded, IceServer,
    InvitationView, LastMessage, LinkPreview, LoggedEvent, MAX_GROUP_CALL, MemberView,
    MessageState, MessageView, NotifyLevel, Page, Profile, QuoteView, RECEIPT_PEOPLE, RING_SECS,
    ReactionView, ReceiptCounts, RelayState, Renegotiation, SAVED_TARGET, SearchHit,
    TransferDirection, sdp_fingerprint,
};
pub use samizdat_proto::ErrorCode;
pub use service::{ClientHandle, LiveEvent, Mode};

/// Everything a core operation can fail with. Each message says what happened and what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("wrong passphrase (or the profile database is damaged)")]
    WrongPassphrase,
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    NotMember(String),
    #[error("invalid invite: {0}")]
    InvalidInvite(String),
    #[error(
        "the relay handed out a KeyPackage that does not belong to the inviter (fingerprint mismatch); \
         the relay may be malicious — nothing was sent; verify the link with the inviter"
    )]
    KeyPackageMismatch,
    #[error("cannot reach the relay at {0}; check the address and your connection, then retry")]
    RelayUnreachable(String),
    #[error("the relay refused: {message} ({code})")]
    Relay {
        code: ErrorCode,
        message: String,
        current_epoch: Option<u64>,
    },
    #[error("{0}")]
    Busy(String),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("MLS error: {0}")]
    Mls(String),
    #[error("crypto error: {0}")]
    Crypto(String),
    /// Received data failed its integrity check (an attachment's digest or tag).
    #[error("{0}")]
    Integrity(String),
    #[error("local storage error: {0}")]
    Storage(String),
    /// The client service is not running (any more).
    #[error("{0}")]
    Stopped(String),
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Storage(e.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn random_id() -> samizdat_proto::Id {
    let mut b = [0u8; 16];
    if aws_lc_rs::rand::fill(&mut b).is_err() {
        // Without an entropy source nothing here is safe; fail loudly instead of reusing ids.
        panic!("the system random number generator failed");
    }
    samizdat_proto::Id::from_bytes(b)
}

/// HMAC-SHA256(key = invite id, message = group id): see `Envelope::Welcome::invite_mac`.
pub(crate) fn invite_mac(invite: &samizdat_proto::Id, group: &samizdat_proto::Id) -> [u8; 32] {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, invite.as_bytes());
    let tag = aws_lc_rs::hmac::sign(&key, group.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// Check a relay address that arrived from someone else (a Welcome, an introduction)
/// before it is stored or ever contacted: http(s) only, bounded length, and no userinfo,
/// query or fragment that could smuggle a different host or path.
pub(crate) fn check_foreign_relay_url(url: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::Protocol(format!("refused a relay address: {why}")));
    if url.len() > 256 {
        return bad("longer than 256 characters");
    }
    let rest = match url.split_once("://") {
        Some(("http" | "https", rest)) => rest,
        _ => return bad("it must start with http:// or https://"),
    };
    if rest.is_empty() {
        return bad("no host");
    }
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return bad("it contains spaces or control characters");
    }
    // The only fragment allowed is a certificate pin (checked in full by `pin::split`).
    let rest = match rest.split_once('#') {
        Some((r, _)) if crate::pin::split(url).is_ok() => r,
        Some(_) => return bad("the only fragment allowed is #pin="),
        None => rest,
    };
    if rest.contains(['@', '?', '#', '\\']) {
        return bad("user names, queries and fragments are not allowed");
    }
    Ok(())
}

/// Create a new file readable and writable by its owner only (0600), whatever the umask:
/// decrypted downloads and backups may land in a shared directory (security review 3, L7).
/// Fails if `path` exists.
pub(crate) fn create_private_file(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// Create a profile directory readable by its owner only (0700); an existing one must pass
/// [`check_private_dir`].
pub(crate) fn create_private_dir(dir: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return check_private_dir(dir);
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::Storage(format!("cannot create {}: {e}", dir.display())))
}

/// Refuse a profile directory that another account could have prepared: one owned by
/// someone else, or writable by group or others (whoever can write there can swap the socket
/// every command talks to, or a file being written). One that is only readable by others is
/// ours: it is made 0700. As ssh treats `~/.ssh` (security review 3, M13).
pub fn check_private_dir(dir: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(dir)
        .map_err(|e| Error::Storage(format!("cannot read {}: {e}", dir.display())))?;
    if meta.uid() != rustix::process::geteuid().as_raw() {
        return Err(Error::Usage(format!(
            "{} belongs to another user; refusing to keep a profile there",
            dir.display()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(Error::Usage(format!(
            "{} can be written by other users; refusing to keep a profile there (chmod 700 it, or choose another directory)",
            dir.display()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::Storage(format!("cannot make {} private: {e}", dir.display())))?;
    }
    Ok(())
}

pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data).as_ref());
    out
}

/// The profile's clock in seconds (see [`now_millis`]).
pub(crate) fn now_secs() -> u64 {
    now_millis() / 1000
}

/// The profile's clock: the system's, moved by the test world's clock when it runs
/// (`testing::World::advance`; the feature is off in every build people run).
pub(crate) fn now_millis() -> u64 {
    let system = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    #[cfg(feature = "testing")]
    let system = system.saturating_add(testing::clock_offset_ms());
    system
}

#[cfg(test)]
mod tests {
    /// Security review 3, L5: epoch tokens and attachment keys are overwritten when they
    /// are dropped (`Zeroizing`, or a `Drop` that calls `Zeroize`).
    #[test]
    fn finding_l5_tokens_and_attachment_keys_are_overwritten() {
        use zeroize::Zeroize;
        // `Group::token` hands out its secret in a `Zeroizing` (a type check: it fails to
        // compile if the token comes back as a plain Vec).
        fn is_zeroizing(_: fn(&crate::mls::Group) -> crate::Result<zeroize::Zeroizing<Vec<u8>>>) {}
        is_zeroizing(crate::mls::Group::token);
        let mut sealed = crate::attachment::Sealed {
            key: [7; 32],
            digest: [1; 32],
            digest_kind: Default::default(),
            cipher_len: 10,
        };
        assert!(
            std::mem::needs_drop::<crate::attachment::Sealed>(),
            "Sealed wipes on drop"
        );
        sealed.zeroize();
        assert_eq!(sealed.key, [0; 32]);
        let mut att = crate::payload::Attachment {
            relay: "http://relay".into(),
            blob: samizdat_proto::Id::from_bytes([2; 16]),
            key: samizdat_proto::Bytes(vec![9; 32]),
            digest: samizdat_proto::Bytes(vec![3; 32]),
            digest_kind: Default::default(),
            size: 1,
            name: "a".into(),
            media_type: "text/plain".into(),
            preview: None,
        };
        att.zeroize();
        assert!(att.key.0.is_empty(), "the key is gone");
    }

    use super::*;

    #[test]
    fn foreign_relay_urls_are_checked() {
        assert!(check_foreign_relay_url("https://relay.example:7700").is_ok());
        assert!(check_foreign_relay_url("http://127.0.0.1:7700/").is_ok());
        for bad in [
            "ftp://relay",
            "relay.example",
            "http://",
            "http://user:pw@evil.example",
            "http://evil.example/x?y=",
            "http://evil.example/#frag",
            "http://evil example",
            "http://a\nb",
        ] {
            assert!(check_foreign_relay_url(bad).is_err(), "{bad:?} accepted");
        }
        assert!(check_foreign_relay_url(&format!("http://{}", "a".repeat(300))).is_err());
    }
}
