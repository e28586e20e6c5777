//! The Samizdat client core: a profile's keys, its SQLCipher-encrypted store, MLS groups
//! (through mls-rs, behind [`mls`]), invites, and the relay client.
//!
//! What it is not: a user interface. It prints nothing and reads no terminal; the CLI, TUI and
//! web UI are thin fronts over [`Profile`]. It never sends a name, a contact list or a
//! plaintext to a relay: display names travel only inside MLS-encrypted messages, and MLS
//! credentials carry a key fingerprint, never a name.

pub mod invite;
pub mod mls;
pub mod payload;
mod profile;
pub mod relay_client;
pub mod store;

pub use invite::Invite;
pub use profile::{ContactView, ConversationView, Event, MemberView, MessageView, Profile};
pub use samizdat_proto::ErrorCode;

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
    #[error("local storage error: {0}")]
    Storage(String),
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

pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data).as_ref());
    out
}

pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(crate) fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
