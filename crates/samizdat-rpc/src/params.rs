//! The API's parameters and results: what each method takes and gives (their JSON Schemas
//! are the OpenRPC document's components).

use super::*;

#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct WhoAmI {
    pub name: String,
    pub relay: String,
    /// Full key fingerprint (hex).
    pub fingerprint: String,
    /// The saved proxy (with its credentials) every connection goes through from the
    /// profile's next start, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
    /// Separate proxy identities and connections per conversation and for the mailbox.
    #[serde(default)]
    pub isolate: bool,
}

#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InviteCreateParams {
    /// Let more than one person use the link.
    #[serde(default)]
    pub reusable: bool,
    /// How long the link stays valid, in hours (default 72).
    pub hours: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct InviteLink {
    pub link: String,
    /// Unix seconds.
    pub expires_at: u64,
}

#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InviteAcceptParams {
    pub link: String,
    /// What you will call this contact.
    pub name: String,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct Accepted {
    /// The contact's alias, also the 1:1 conversation's name.
    pub contact: String,
    pub contact_id: ContactId,
    pub conversation_id: ConversationId,
}

/// A conversation named by `target` (contact alias or group name) or by `conversation_id`.
#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SendParams {
    pub target: Option<String>,
    pub conversation_id: Option<ConversationId>,
    /// The message (required without `file`), or the caption of `file`.
    #[serde(default)]
    pub text: Option<String>,
    /// An absolute path of a file to send (read by the service's process): it is encrypted,
    /// uploaded to the conversation's relay and sent; `transfer` events report progress.
    #[serde(default)]
    pub file: Option<String>,
    /// The name `file` is sent under (default: its own name).
    #[serde(default)]
    pub name: Option<String>,
    /// Send a photo's metadata (EXIF: location, camera, time) as it is; by default it is
    /// removed from JPEG, PNG and WebP files before they are encrypted.
    #[serde(default)]
    pub keep_metadata: bool,
    /// `file` is a voice message of this many milliseconds (Opus audio): receivers show a
    /// player with its length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice_ms: Option<u64>,
    /// Answer this message (of the same conversation): receivers show it quoted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<MessageId>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DownloadParams {
    pub message_id: MessageId,
    /// Absolute path of a new file, or of a directory to put the file in (under its own
    /// name). An existing file is never overwritten.
    pub out: String,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DraftParams {
    /// The conversation's id (base64url, as in events).
    pub conversation_id: ConversationId,
    /// The draft; empty deletes it.
    #[serde(default)]
    pub text: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct Draft {
    pub text: String,
}

#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DuressParams {
    /// The duress passphrase (at least 8 characters, not the profile's own).
    pub passphrase: String,
}

#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProxyParams {
    /// A proxy URL (`socks5h://[user:pass@]host:port`, `socks5://…`, `http://…`), `tor`, or
    /// `off`.
    pub proxy: String,
    /// Separate proxy identities and connections per conversation and for the mailbox
    /// (always on with `tor`).
    #[serde(default)]
    pub isolate: bool,
}

#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AutoDownloadParams {
    /// Incoming attachments up to this size are fetched as they arrive (0: only on request).
    pub bytes: u64,
}

#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RelayParams {
    /// A relay's address (`https://host:port#pin=…` for a pinned one).
    pub relay: String,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct Relays {
    /// The relays this profile has a mailbox on, the primary first.
    pub relays: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct Settings {
    /// A conversation moves once its relay has been unreachable this long (0: never).
    pub move_after_secs: u64,
    /// Incoming attachments up to this size are fetched as they arrive (0: on request).
    pub auto_download_bytes: u64,
    /// What the app's notifications show (this device).
    #[serde(default)]
    pub notifications: samizdat_core::NotifyLevel,
    /// Read receipts sent and shown (off by default; shared by the person's devices).
    #[serde(default)]
    pub read_receipts: bool,
    /// Calls may connect directly, showing each side the other's address (off by default:
    /// only through the relay).
    #[serde(default)]
    pub calls_direct: bool,
}

#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadReceiptsParams {
    pub on: bool,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NotifyParams {
    pub level: samizdat_core::NotifyLevel,
}

#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceParams {
    /// A device id from `devices` (or a unique prefix of at least 4 hex digits).
    pub id: String,
}

#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceAddParams {
    /// The link the new device shows (`samizdat device join`): `samizdat://device/v2/…`.
    pub link: String,
}

#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveParams {
    pub target: Option<String>,
    pub conversation_id: Option<ConversationId>,
    /// The relay to move the conversation's log to.
    pub to: String,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct Moved {
    pub conversation_id: ConversationId,
    /// The conversation's relay now (normalised).
    pub relay: String,
}

#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveAfterParams {
    /// Move a conversation after its relay has been unreachable this long (0: never).
    pub seconds: u64,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct Sent {
    pub message_id: MessageId,
    pub conversation_id: ConversationId,
}

#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HistoryParams {
    pub target: Option<String>,
    pub conversation_id: Option<ConversationId>,
    /// At most this many messages (the newest ones).
    pub limit: Option<usize>,
    /// Only messages before the message with this id.
    pub before: Option<MessageId>,
    /// Only messages after the message with this id (then `limit` keeps the oldest).
    pub after: Option<MessageId>,
    /// Only the message with this id.
    pub message_id: Option<MessageId>,
}

#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupRenameParams {
    /// The group by its name (or give `conversation_id`).
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub conversation_id: Option<ConversationId>,
    pub name: String,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactVerifyParams {
    /// The contact by alias or by id.
    pub contact: String,
    /// False takes a verification back.
    #[serde(default = "yes")]
    pub verified: bool,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactRenameParams {
    /// The contact by alias or by id.
    pub contact: String,
    /// What to call them from now on (unique among contacts and conversations).
    pub name: String,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactBlockParams {
    /// The contact by alias or by id.
    pub contact: String,
    /// Block (true, the default) or unblock.
    #[serde(default = "yes")]
    pub blocked: bool,
}

#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatParams {
    pub target: Option<String>,
    pub conversation_id: Option<ConversationId>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupParams {
    /// Where to write the backup file (a path on the service's machine).
    pub out: String,
    /// The backup passphrase (at least 8 characters).
    pub passphrase: String,
    /// Include the encrypted attachment copies (default true).
    #[serde(default = "yes")]
    pub attachments: bool,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct BackedUp {
    pub bytes: u64,
}

#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TimerParams {
    pub target: Option<String>,
    pub conversation_id: Option<ConversationId>,
    /// Seconds a message lives; 0 turns disappearing messages off.
    pub seconds: u64,
}

/// A photo's thumbnail.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct Thumbnail {
    /// The JPEG, unpadded base64url.
    pub jpeg: String,
}

impl Thumbnail {
    /// The JPEG's bytes (`None` if `jpeg` is not base64url).
    pub fn bytes(&self) -> Option<Vec<u8>> {
        samizdat_proto::Bytes::decode(&self.jpeg).ok()
    }
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageParams {
    pub message_id: MessageId,
}

/// Pin, archive or mute a conversation (this device's list).
#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ArrangeParams {
    pub target: Option<String>,
    pub conversation_id: Option<ConversationId>,
    /// `pin`, `archive`: on (true) or off. `mute`: ignored.
    #[serde(default)]
    pub on: bool,
    /// `mute` only: seconds (absent: until unmuted; 0: unmute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct Muted {
    /// When the mute ends (ms since the epoch); absent: not muted.
    pub muted_until: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchParams {
    /// Words to find (each as a prefix; all of them; ё and е alike; any case).
    pub query: String,
    /// Only in this conversation (a contact's alias or a group's name, or `conversation_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<ConversationId>,
    /// At most this many hits (default 100, at most 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// The conversation of the message acted on.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct Acted {
    pub conversation_id: ConversationId,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReactParams {
    pub message_id: MessageId,
    /// One emoji. A new reaction replaces yours on that message.
    pub emoji: String,
    /// Take your reaction `emoji` back instead.
    #[serde(default)]
    pub remove: bool,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EditParams {
    pub message_id: MessageId,
    /// The corrected text.
    pub text: String,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteParams {
    pub message_id: MessageId,
    /// Delete it for every member (only a message of yours); otherwise on this device only.
    #[serde(default)]
    pub for_everyone: bool,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ForwardParams {
    pub message_id: MessageId,
    /// Where to: a contact's alias or a group's name (or `conversation_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<ConversationId>,
}

#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupParams {
    /// The group's name (for `group_create`: the new group's).
    #[serde(default)]
    pub group: String,
    /// The group by id instead of by name (not for `group_create`).
    #[serde(default)]
    pub conversation_id: Option<ConversationId>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct Created {
    pub conversation_id: ConversationId,
}

#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupAddParams {
    /// The group by its name (or give `conversation_id`).
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub conversation_id: Option<ConversationId>,
    /// Contacts, each by alias or by id.
    pub contacts: Vec<String>,
}

#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupRemoveParams {
    /// The group by its name (or give `conversation_id`).
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub conversation_id: Option<ConversationId>,
    /// The contact by alias or by id.
    pub contact: String,
}

#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactParams {
    /// The contact by alias or by id.
    pub contact: String,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct SafetyNumber {
    pub safety_number: String,
}

#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InvitationParams {
    pub id: i64,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct Joined {
    /// The conversation joined (absent when another device of yours joins instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<ConversationId>,
    /// The invitation waited on another device of yours: it joins when it next syncs and
    /// adds this device.
    #[serde(default)]
    pub elsewhere: bool,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct Done {
    pub ok: bool,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct Synced {
    /// What the sync reported (also in the event log).
    pub events: Vec<Event>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct Subscribed {
    /// The newest position in the durable log when the subscription started: events after
    /// it arrive as `event` notifications (read older ones with `get_events`).
    pub last: u64,
}

#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetEventsParams {
    /// Return events after this position (0: from the oldest kept).
    #[serde(default)]
    pub since: u64,
    /// Wait this long for the first event when there is none yet (default 0, at most
    /// 300000).
    #[serde(default)]
    pub timeout_ms: u64,
    /// At most this many events (default and maximum 1000).
    pub limit: Option<usize>,
}

/// The OpenRPC document (see <https://spec.open-rpc.org>).
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct OpenRpcDocument(pub Value);

/// Start a call in a 1:1 conversation (`video`: with the camera).
#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CallPrepareParams {
    pub target: Option<String>,
    pub conversation_id: Option<ConversationId>,
    #[serde(default)]
    pub video: bool,
}

/// One call, and for `call_start` / `call_accept` the browser's offer or answer (SDP).
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CallParams {
    pub call_id: samizdat_core::CallId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp: Option<String>,
    /// `call_answer`: the person (fingerprint, hex) whose offer this answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// `call_join`: an offer for each person already in the group call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub offers: Vec<LegOffer>,
}

/// An offer for one person in a group call (`call_join`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LegOffer {
    /// Their fingerprint (hex), as `call` lists it in `legs`.
    pub to: String,
    pub sdp: String,
}

/// Calls of one conversation, or of all (neither given).
#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CallsParams {
    pub target: Option<String>,
    pub conversation_id: Option<ConversationId>,
}

#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CallsDirectParams {
    pub on: bool,
}

// ---- channels -------------------------------------------------------------------------------

/// A channel named by `channel` (its name, as a person types it) or by `channel_id` — exactly
/// one.
#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_id: Option<samizdat_core::ChannelId>,
    /// `channel_read`: mark the posts read (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mark_read: Option<bool>,
}

#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelCreateParams {
    pub name: String,
    #[serde(default)]
    pub about: String,
}

#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelPostParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_id: Option<samizdat_core::ChannelId>,
    /// The post's text (`channel_post`, `channel_edit`).
    #[serde(default)]
    pub text: String,
    /// The post concerned (`channel_edit`, `channel_delete`, `channel_pin`; absent in
    /// `channel_pin`: unpin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// `channel_post`: an absolute path of a photo or file to post (read by the service's
    /// process), with `text` as its caption (may be empty). A photo's location, camera and
    /// time are removed first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The name `file` is posted under (default: its own name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelFileParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_id: Option<samizdat_core::ChannelId>,
    /// The post whose file it is.
    pub seq: u64,
    /// `channel_download`: absolute path of a new file, or of a directory to put the file in
    /// (under its own name). An existing file is never overwritten.
    #[serde(default)]
    pub out: String,
}

#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelFollowParams {
    /// A `samizdat://channel/v1/…#…` link.
    pub link: String,
}

#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelMirrorParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_id: Option<samizdat_core::ChannelId>,
    /// The relay to copy the channel to.
    pub url: String,
}

/// A channel made or followed: its id and its link.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct ChannelMade {
    pub channel_id: samizdat_core::ChannelId,
    /// The link to share: whoever holds it can read (the key is after `#`).
    pub link: String,
}

/// A record stored in a channel.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct ChannelPosted {
    /// Its number in the channel (a post's number is how edits, deletes and pins name it).
    pub seq: u64,
}

#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelAdminParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_id: Option<samizdat_core::ChannelId>,
    /// The contact (alias or id).
    pub contact: String,
}
