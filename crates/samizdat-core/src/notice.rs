//! What the core tells a person, as data: a [`Notice`] names what happened and carries its
//! parameters; each front renders it in its reader's language (the app and the CLI from the
//! Fluent files, key `notice-<kind>`; bots read the kind). The core writes no sentence of its
//! own, so the Russian app shows no English, and a third language is one more `.ftl` file.
//!
//! The same holds for a conversation's state ([`ConvStatus`], stored as a code) and for why an
//! introduction was refused ([`Refusal`]).

use serde::{Deserialize, Serialize};

use crate::Error;

/// The kind of a core error: what a front translates (`problem-<kind>` in the Fluent files)
/// and what JSON-RPC reports as `error.data.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    WrongPassphrase,
    Usage,
    NotFound,
    NotMember,
    InvalidInvite,
    KeyPackageMismatch,
    RelayUnreachable,
    /// The relay refused (its code is in `relay_code` where one is given).
    Relay,
    Busy,
    Protocol,
    Mls,
    Crypto,
    Integrity,
    Storage,
    Stopped,
}

impl ErrorKind {
    /// The snake_case name (as serialized).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::WrongPassphrase => "wrong_passphrase",
            ErrorKind::Usage => "usage",
            ErrorKind::NotFound => "not_found",
            ErrorKind::NotMember => "not_member",
            ErrorKind::InvalidInvite => "invalid_invite",
            ErrorKind::KeyPackageMismatch => "key_package_mismatch",
            ErrorKind::RelayUnreachable => "relay_unreachable",
            ErrorKind::Relay => "relay",
            ErrorKind::Busy => "busy",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Mls => "mls",
            ErrorKind::Crypto => "crypto",
            ErrorKind::Integrity => "integrity",
            ErrorKind::Storage => "storage",
            ErrorKind::Stopped => "stopped",
        }
    }
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::WrongPassphrase => ErrorKind::WrongPassphrase,
            Error::Usage(_) => ErrorKind::Usage,
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::NotMember(_) => ErrorKind::NotMember,
            Error::InvalidInvite(_) => ErrorKind::InvalidInvite,
            Error::KeyPackageMismatch => ErrorKind::KeyPackageMismatch,
            Error::RelayUnreachable(_) => ErrorKind::RelayUnreachable,
            Error::Relay { .. } => ErrorKind::Relay,
            Error::Busy(_) => ErrorKind::Busy,
            Error::Protocol(_) => ErrorKind::Protocol,
            Error::Mls(_) => ErrorKind::Mls,
            Error::Crypto(_) => ErrorKind::Crypto,
            Error::Integrity(_) => ErrorKind::Integrity,
            Error::Storage(_) => ErrorKind::Storage,
            Error::Stopped(_) => ErrorKind::Stopped,
        }
    }
}

/// An error inside a notice: its kind, for the front to say in its language, and the
/// technical detail (English, from the library or relay that failed) for the CLI and for a
/// report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Problem {
    pub kind: ErrorKind,
    pub detail: String,
}

impl From<&Error> for Problem {
    fn from(e: &Error) -> Problem {
        Problem {
            kind: e.kind(),
            detail: e.to_string(),
        }
    }
}

/// Why an introduction through an invite was refused. Travels between clients as a string
/// (`Body::Refused`); the known ones become codes, anything else is kept as the sender wrote it
/// (control characters removed, at most 200 characters).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "code", content = "text", rename_all = "snake_case")]
pub enum Refusal {
    /// The introduction used an invite this profile never made.
    UnknownInvite,
    ExpiredInvite,
    ReusedInvite,
    /// A reason this version does not know, as its sender wrote it.
    Other(String),
}

impl Refusal {
    /// The reason as it travels between clients (and as older versions wrote it).
    pub fn wire(&self) -> &str {
        match self {
            Refusal::UnknownInvite => "an introduction used an invite this profile never made",
            Refusal::ExpiredInvite => "an introduction used an expired invite",
            Refusal::ReusedInvite => "an introduction reused a single-use invite",
            Refusal::Other(text) => text,
        }
    }

    pub fn from_wire(text: &str) -> Refusal {
        let text: String = text.chars().filter(|c| !c.is_control()).take(200).collect();
        [
            Refusal::UnknownInvite,
            Refusal::ExpiredInvite,
            Refusal::ReusedInvite,
        ]
        .into_iter()
        .find(|r| r.wire() == text)
        .unwrap_or(Refusal::Other(text))
    }
}

/// Why a conversation no longer takes messages (or is about to end). Stored as a code in
/// `conversations.status` (with the refusal in `status_reason`); fronts render it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ConvStatus {
    /// We left (here or on another device of ours).
    Left,
    /// A member removed us.
    Removed,
    /// Our state no longer matches the group's log (a fork, tampering, a false token):
    /// a member must re-add us, or a move re-creates the log.
    LostSync,
    /// We refused the introduction that made this conversation; the other side is being told.
    Refusing { reason: Refusal },
    /// We refused it and told them; the conversation is forgotten once that is sent.
    Refused { reason: Refusal },
    /// The other side refused our introduction.
    InviteRefused { reason: Refusal },
}

impl ConvStatus {
    /// The code stored in `conversations.status`.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            ConvStatus::Left => "left",
            ConvStatus::Removed => "removed",
            ConvStatus::LostSync => "lost_sync",
            ConvStatus::Refusing { .. } => "refusing",
            ConvStatus::Refused { .. } => "refused",
            ConvStatus::InviteRefused { .. } => "invite_refused",
        }
    }

    /// The refusal stored in `conversations.status_reason`.
    pub(crate) fn reason(&self) -> Option<&str> {
        match self {
            ConvStatus::Refusing { reason }
            | ConvStatus::Refused { reason }
            | ConvStatus::InviteRefused { reason } => Some(reason.wire()),
            _ => None,
        }
    }

    /// Read back from the two columns; an unknown code (a newer version's) reads as `None`.
    pub(crate) fn from_columns(code: Option<&str>, reason: Option<&str>) -> Option<ConvStatus> {
        let reason = || Refusal::from_wire(reason.unwrap_or(""));
        Some(match code? {
            "left" => ConvStatus::Left,
            "removed" => ConvStatus::Removed,
            "lost_sync" => ConvStatus::LostSync,
            "refusing" => ConvStatus::Refusing { reason: reason() },
            "refused" => ConvStatus::Refused { reason: reason() },
            "invite_refused" => ConvStatus::InviteRefused { reason: reason() },
            _ => return None,
        })
    }
}

/// Something the core has to tell a person that is not a message: the kind says what
/// happened, the parameters fill in the sentence each front writes in its language.
/// Names in parameters (`who`, `name`, `alias`) are labels of this profile, for display.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", content = "params", rename_all = "snake_case")]
pub enum Notice {
    // ---- relays and moves
    /// A relay answered on the realtime connection with an error.
    RelayError {
        code: String,
        detail: String,
    },
    RelayFrameUnreadable,
    /// The relay of our mailbox cannot be reached; the others are read meanwhile.
    RelayUnreachable {
        error: Problem,
    },
    /// A move to `relay` failed.
    MoveFailed {
        relay: String,
        error: Problem,
    },
    /// We re-created this conversation's log on the same relay.
    LogRecreated {
        relay: String,
    },
    /// We moved this conversation to `relay`.
    MovedByUs {
        relay: String,
        from: String,
    },
    /// A member moved it.
    MovedByMember {
        relay: String,
        from: String,
    },
    /// Two moves raced; this one won by the move rule.
    MovedChosen {
        relay: String,
        over: String,
    },
    MoveNotFollowed {
        error: Problem,
    },
    /// A member could not be told that the conversation moved.
    MoveNotTold {
        who: String,
        error: Option<Problem>,
    },
    AnnounceFailed {
        error: Problem,
    },
    LockedLogNotRecreated {
        error: Problem,
    },
    // ---- the log
    SyncFailed {
        error: Problem,
    },
    /// Our state no longer matches the log's epoch token (a fork or tampering).
    LostSyncToken,
    /// `who`'s commit at `position` does not lead to the token the relay recorded.
    LostSyncFalseToken {
        who: String,
        position: u64,
    },
    /// The commit at `position` does not lead to the recorded token and we cannot tell who
    /// is at fault; `conversation` is for the `samizdat move` hint.
    LostSyncForkedCommit {
        position: u64,
        conversation: String,
    },
    /// Entries we had not read are gone from the relay.
    EntriesExpired,
    /// Entries `from..=to` are missing (withheld or expired).
    EntriesMissing {
        from: u64,
        to: u64,
    },
    /// Entry `position` was forged, damaged or could not be decrypted; never shown.
    EntryRejected {
        position: u64,
        error: Problem,
    },
    UndecodableMessage {
        position: u64,
    },
    MailboxMessageUnreadable,
    QueuedUpdateRefused {
        error: Problem,
    },
    /// A received message's attachment failed its checks; the text is kept.
    AttachmentRefused {
        error: Problem,
    },
    // ---- joining and members
    JoinFailed {
        error: Problem,
    },
    /// A pending invitation claims the id of our conversation `name` without continuing it.
    ClaimsConversation {
        name: String,
    },
    /// A pending invitation's group is on a relay this profile never used.
    UnknownRelay {
        relay: String,
    },
    InvitationRelayChanged,
    /// `name` was not added yet; it completes when the relay is back.
    AddPending {
        name: String,
        error: Problem,
    },
    AddFailed {
        name: String,
        error: Problem,
    },
    /// An introduction to `name` failed; the half-made conversation is gone.
    ConnectFailed {
        name: String,
        error: Problem,
    },
    /// `name` had not joined; a fresh invitation was sent (or failed).
    InvitationResent {
        name: String,
    },
    InvitationResendFailed {
        name: String,
        error: Problem,
    },
    /// The Welcome for `who` could not be stored on their relay.
    WelcomeNotDelivered {
        who: String,
        error: Option<Problem>,
    },
    LeaverNotRemoved {
        error: Problem,
    },
    LeftOnOtherDevice,
    /// We refused an introduction; the other side is told and the conversation removed.
    IntroductionRefused {
        reason: Refusal,
    },
    /// Someone came in through a link that alone would not have let them in (used up,
    /// expired, unknown), in a conversation the person joined by hand from their pending
    /// invitations: it became the 1:1 chat with them. A line in that chat.
    LetInByHand {
        reason: Refusal,
    },
    /// The other person could not read something we sent (entry `position` of the log): it
    /// was changed on the way, by the relay or someone between. A line in that chat.
    TheyCouldNotRead {
        position: u64,
    },
    /// `name` refused our introduction.
    InviteRefusedBy {
        name: String,
        reason: Refusal,
    },
    // ---- devices
    /// A contact's signed device list added a device.
    ContactDeviceAdded {
        who: String,
    },
    ContactDeviceRemoved {
        who: String,
    },
    DeviceListUnsigned,
    DeviceListNotSent {
        error: Problem,
    },
    /// A device `who` removed changed the group; it and `added` members it added go.
    RevokedDeviceChangedGroup {
        who: String,
        added: u64,
    },
    IgnoredRevokedDevice {
        who: String,
    },
    LinkFailed {
        error: Problem,
    },
    /// A link message did not open with the link's key (altered, or not for it).
    LinkMessageUnreadable,
    DeviceLinked {
        name: String,
        conversations: u64,
    },
    NewDeviceNotAdded {
        error: Problem,
    },
    OwnDevicesNotAdded {
        error: Problem,
    },
    OwnDeviceNotAdded {
        name: String,
        error: Problem,
    },
    RevokedDeviceNotRemoved {
        error: Problem,
    },
    HistorySent,
    HistoryReceived {
        conversations: u64,
        messages: u64,
    },
    HistoryUnreadable {
        error: Problem,
    },
    OtherDevicesNotTold {
        error: Problem,
    },
    InvitationAcceptedElsewhere {
        name: String,
    },
    InvitationDeclinedElsewhere,
    InvitationElsewhereFailed {
        error: Problem,
    },
}
