//! What travels inside MLS application messages and inside mailbox drops.
//!
//! Application payloads are JSON inside the MLS ciphertext: the relay never sees them.
//! Mailbox envelopes are visible to the relay; they carry only what it already knows (the
//! group id and the relay address of the group's log) plus the MLS Welcome, which is
//! encrypted to the new member.

use samizdat_proto::{Bytes, Id};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Largest plaintext body a user may send.
pub const MAX_TEXT: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload {
    /// Random message id: display is exactly-once by this id.
    pub id: Id,
    /// Sender's clock, milliseconds since the Unix epoch.
    pub sent_at: u64,
    pub body: Body,
    /// Disappearing messages: seconds after which every member deletes this message
    /// (counted from sending for the sender, from arrival for the others).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<u64>,
    /// A body this version does not know ([`Body::Unknown`]), as it came (JSON): kept, and
    /// shown as "update Samizdat to see this".
    #[serde(skip)]
    pub unknown: Option<String>,
}

/// A message named by another (a reply, a reaction, an edit, a delete): its id and the
/// SHA-256 of what it said when it was sent (`profile::reactions::content_hash`). A receiver
/// applies it only to the message with that id *and* that hash, so a quote of something the
/// target never said cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRef {
    pub id: Id,
    pub hash: Bytes,
}

/// Longest reaction (one emoji, possibly with modifiers and joiners).
pub const MAX_REACTION: usize = 32;

/// Most messages one receipt names (a device owing more sends several).
pub const MAX_RECEIPT_TARGETS: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Body {
    Text {
        text: String,
        /// A file sent with the text (the text is then its caption, possibly empty).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attachment: Option<Attachment>,
        /// The message this one answers.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reply_to: Option<MessageRef>,
        /// Passed on from another conversation (`forward`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        forwarded: bool,
    },
    /// A reaction to a message (one per person and message: a new one replaces theirs), or
    /// its removal.
    React {
        target: MessageRef,
        emoji: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        remove: bool,
    },
    /// The sender corrects one of their messages (accepted only from its sender).
    Edit { target: MessageRef, text: String },
    /// The sender deletes one of their messages for everyone (accepted only from its sender).
    Delete { target: MessageRef },
    /// The invitee introduces itself after accepting an invite.
    Intro {
        name: String,
        relay: String,
        mailbox: Id,
        invite: Id,
        /// Every mailbox of the invitee, in its order of preference (the one above first).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        mailboxes: Vec<MailboxAddr>,
    },
    /// A member's display name in this group, and the mailboxes they can be reached at (so
    /// that a member who moves the conversation can tell them).
    Profile {
        name: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        mailboxes: Vec<MailboxAddr>,
        /// The person's newest signed device list, if they have linked devices.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        devices: Option<crate::device::DeviceList>,
    },
    /// The group's name, sent by whoever adds members.
    GroupMeta { name: String },
    /// The sender asks to be removed; the next member who syncs commits the removal.
    Leave,
    /// The conversation's disappearing-messages timer, set by any member (0: off).
    Timer { secs: u64 },
    /// The person's device list (self group only, from the person's own devices).
    Devices {
        devices: Vec<DeviceRecord>,
        /// The same list signed by the identity key, for the devices to pass on.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signed: Option<crate::device::DeviceList>,
    },
    /// The person's signed device list (every conversation, after a device is linked or
    /// revoked): contacts stop accepting revoked devices as the person.
    DeviceList { list: crate::device::DeviceList },
    /// Contacts and conversation names changed on another device of the person (self group
    /// only): where to fetch them (an archive without messages).
    State { archive: ArchiveRef },
    /// The person answered, on another device, an invitation that arrived on the device
    /// reading this (self group only).
    InvitationAnswer { group_id: Id, accept: bool },
    /// Where a newly linked device finds its history (self group only).
    History { archive: ArchiveRef },
    /// The inviter refuses the introduction (a used single-use invite, an expired one):
    /// the invitee's conversation ends with this reason.
    Refused { reason: String },
    /// A device of the sender holds (`read`: has shown its person) these messages of others
    /// (1:1 and small groups; read receipts only when the person turned them on).
    Receipt {
        targets: Vec<MessageRef>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        read: bool,
    },
    /// A call's signalling (issue 31): offers and answers travel inside MLS, so the DTLS
    /// fingerprints in them are the members' own (a relay that rewrites them breaks the call).
    Call { call_id: Id, signal: CallSignal },
    /// In a 1:1 chat: "I could not read entry `position` of this log" (it was forged,
    /// damaged or could not be decrypted). Its sender learns that what they sent was changed
    /// on the way — and a call whose invite it was fails with a clear line instead of ringing
    /// out unanswered.
    Unreadable { position: u64 },
    /// In a channel's admin group (issue 34): the member `to` (a fingerprint) is asked to
    /// administer the channel this link names (its key is in the link: it travels only here,
    /// inside MLS).
    ChannelAdmin { to: Bytes, link: String },
    /// In a channel's admin group: the sender's admin key for `channel` (the public half of
    /// a key made for this channel only). The admin who invited them adds it to the roster.
    ChannelAdminKey { channel: Id, key: Bytes },
    /// A body of a kind this version does not know (a newer version sent it). Never sent.
    #[serde(other)]
    Unknown,
}

/// A mailbox on a relay: where a person can be sent Welcomes and move notices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailboxAddr {
    pub relay: String,
    pub mailbox: Id,
}

/// Most mailboxes a person may announce (more are ignored).
pub const MAX_MAILBOXES: usize = 8;

/// An encrypted file on a relay (see [`crate::attachment`]): everything needed to fetch,
/// check and decrypt it. Travels only inside MLS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// The relay holding the blob.
    pub relay: String,
    pub blob: Id,
    /// The file's fresh ChaCha20-Poly1305 key (32 bytes).
    pub key: Bytes,
    /// The digest of the ciphertext, by [`Self::digest_kind`].
    pub digest: Bytes,
    /// How `digest` was computed: BLAKE3 for files sent now; absent, SHA-256 (files sent
    /// before, still read).
    #[serde(default, skip_serializing_if = "DigestKind::is_sha256")]
    pub digest_kind: DigestKind,
    /// The file's real size in bytes.
    pub size: u64,
    pub name: String,
    pub media_type: String,
    /// What a front needs to show the file inline (a photo's thumbnail, a voice message's
    /// length), made on the sender's device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<Preview>,
}

/// The hash an attachment's digest is made with. Both give 32 bytes; BLAKE3 is two to three
/// times faster here (one core), which is what a 100 MB download waits for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DigestKind {
    #[default]
    Sha256,
    Blake3,
}

impl DigestKind {
    pub fn is_sha256(&self) -> bool {
        *self == DigestKind::Sha256
    }
}

/// How an attachment shows inline (see [`crate::thumbnail`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preview {
    /// A photo: its thumbnail (a JPEG of at most `thumbnail::MAX_BYTES`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbnail: Option<Bytes>,
    /// The photo's size in pixels, upright (0: unknown).
    #[serde(default)]
    pub width: u32,
    #[serde(default)]
    pub height: u32,
    /// A voice message: its length in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice_ms: Option<u64>,
}

/// Longest voice message accepted (an hour).
pub const MAX_VOICE_MS: u64 = 3600 * 1000;

/// Largest attachment a client accepts from a peer (a relay's own limit is usually lower).
pub const MAX_ATTACHMENT: u64 = 4 << 30;

/// The file's key is overwritten when the attachment is dropped (security review 3, L5).
impl zeroize::Zeroize for Attachment {
    fn zeroize(&mut self) {
        self.key.0.zeroize();
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(self);
    }
}

impl Attachment {
    /// Check an attachment from a peer before anything is stored or fetched.
    pub fn check(&self) -> Result<()> {
        crate::check_foreign_relay_url(&self.relay)?;
        if self.key.len() != 32 || self.digest.len() != 32 {
            return Err(Error::Protocol(
                "attachment key or digest has the wrong length".into(),
            ));
        }
        if self.size > MAX_ATTACHMENT {
            return Err(Error::Protocol("attachment larger than 4 GiB".into()));
        }
        if self.name.len() > 1024 || self.media_type.len() > 255 {
            return Err(Error::Protocol("attachment name or type too long".into()));
        }
        if let Some(p) = &self.preview {
            if p.thumbnail
                .as_ref()
                .is_some_and(|t| t.len() > crate::thumbnail::MAX_BYTES)
            {
                return Err(Error::Protocol("attachment thumbnail too large".into()));
            }
            if p.voice_ms.is_some_and(|ms| ms > MAX_VOICE_MS) {
                return Err(Error::Protocol("voice message too long".into()));
            }
        }
        Ok(())
    }
}

impl Payload {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Payload> {
        let mut p: Payload = serde_json::from_slice(bytes)
            .map_err(|e| Error::Protocol(format!("undecodable message payload: {e}")))?;
        if p.body == Body::Unknown {
            // Kept as it came, for a later version to show.
            #[derive(Deserialize)]
            struct Raw {
                body: serde_json::Value,
            }
            let raw: Raw = serde_json::from_slice(bytes)
                .map_err(|e| Error::Protocol(format!("undecodable message payload: {e}")))?;
            p.unknown = Some(raw.body.to_string());
        }
        Ok(p)
    }
}

/// A mailbox drop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Envelope {
    Welcome {
        group_id: Id,
        relay: String,
        welcome: Bytes,
        /// When the Welcome answers one of the recipient's invites: HMAC-SHA256 keyed by
        /// the invite id (known only to the two people) over the group id. It tells the
        /// recipient "this is the person you invited" without showing the relay the id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        invite_mac: Option<Bytes>,
        /// The id of the group's log on that relay when it is not the group id (a group
        /// that moved).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        log: Option<Id>,
    },
    /// A conversation moved to another relay (see `profile/moves.rs`): the notice sealed
    /// under a key derived from the epoch's secret, so only members can make or read it and
    /// the mailbox's relay learns nothing about the conversation.
    Move { sealed: Bytes },
    /// An answer to a device that asked to be linked, sealed to its one-time HPKE key (see
    /// `crate::device`).
    Device { sealed: Bytes },
}

impl Envelope {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Envelope> {
        serde_json::from_slice(bytes)
            .map_err(|e| Error::Protocol(format!("undecodable mailbox message: {e}")))
    }
}

/// A device as the self group carries it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct DeviceRecord {
    pub id: Bytes,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mailbox: Option<Id>,
    pub added_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<u64>,
}

/// Where a new device finds the history archive (sent in the self group).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ArchiveRef {
    pub relay: String,
    pub blob: Id,
    pub len: u64,
    /// ChaCha20-Poly1305 key of this archive only.
    pub key: Bytes,
    /// The device it is for.
    pub device: Bytes,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn payload_shape_is_stable() {
        let p = Payload {
            unknown: None,
            id: Id::from_bytes([1; 16]),
            expires_in: None,
            sent_at: 5,
            body: Body::Text {
                text: "hi".into(),
                attachment: None,
                reply_to: None,
                forwarded: false,
            },
        };
        assert_eq!(
            String::from_utf8(p.encode()).unwrap(),
            r#"{"id":"AQEBAQEBAQEBAQEBAQEBAQ","sent_at":5,"body":{"type":"text","text":"hi"}}"#
        );
        assert_eq!(Payload::decode(&p.encode()).unwrap(), p);
    }

    /// A body of a kind this version does not know decodes (kept as it came); new fields in
    /// a known body are ignored; a reply's reference keeps its shape.
    #[test]
    fn unknown_bodies_and_fields_are_kept_or_ignored() {
        let p = Payload::decode(
            br#"{"id":"AQEBAQEBAQEBAQEBAQEBAQ","sent_at":5,"body":{"type":"poll","q":"which day"}}"#,
        )
        .unwrap();
        assert_eq!(p.body, Body::Unknown);
        assert_eq!(
            p.unknown.as_deref(),
            Some(r#"{"q":"which day","type":"poll"}"#)
        );
        let p = Payload::decode(
            br#"{"id":"AQEBAQEBAQEBAQEBAQEBAQ","sent_at":5,"body":{"type":"text","text":"hi","mood":"happy","reply_to":{"id":"AgICAgICAgICAgICAgICAg","hash":"AwM"}}}"#,
        )
        .unwrap();
        match p.body {
            Body::Text { text, reply_to, .. } => {
                assert_eq!(text, "hi");
                assert_eq!(reply_to.unwrap().hash.0, vec![3, 3]);
            }
            other => panic!("{other:?}"),
        }
        assert!(p.unknown.is_none());
    }

    proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Payload::decode(&bytes);
            let _ = Envelope::decode(&bytes);
        }
    }
}

/// A joiner's offer to one person in a group call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallOffer {
    /// The person (identity fingerprint) the offer is for.
    pub to: Bytes,
    pub sdp: String,
}

/// One step of a call (`Body::Call`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CallSignal {
    /// The caller rings: its offer (every candidate gathered, relayed only unless the caller
    /// allows direct connections) and the call's room token, which the caller derived from
    /// the group's MLS exporter for this call (both sides ask the relay for TURN credentials
    /// with it).
    Invite {
        video: bool,
        sdp: String,
        room: Bytes,
    },
    /// The callee answers (from one of its devices: the others stop ringing).
    Accept { sdp: String },
    /// The callee does not take it (`busy`: already in another call).
    Decline {
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        busy: bool,
    },
    /// Either side hangs up (or the caller gives up before an answer); in a group call, the
    /// sender leaves it.
    End,
    /// A group call starts (a mesh of at most [`crate::MAX_GROUP_CALL`] people): its room
    /// token and the SFrame base key every frame is encrypted under, both from the group's
    /// MLS exporter for this call. The sender is in the call; no SDP yet (each pair makes its
    /// own connection).
    GroupInvite {
        video: bool,
        room: Bytes,
        key: Bytes,
    },
    /// The sender joins a group call, with an offer for each person already in it.
    Join { offers: Vec<CallOffer> },
    /// The answer to the offer a joiner made to `to` (a person's fingerprint).
    Answer { to: Bytes, sdp: String },
    /// A new offer while connected (an ICE restart after the network changed, video added
    /// to a voice call), from either side; when both send one at once, the caller's wins.
    Renegotiate { sdp: String },
    /// The answer to a [`CallSignal::Renegotiate`].
    Reanswer { sdp: String },
    /// A signal of a kind this version does not know.
    #[serde(other)]
    Unknown,
}
