//! JSON-RPC 2.0 over a [`ClientHandle`]: line-delimited on stdin/stdout (`samizdat rpc`) and
//! on the `serve` socket. Documented in docs/RPC.md; `rpc.discover` returns the OpenRPC
//! document generated here from the method types.
//!
//! Every method is declared once, in `methods!` below, with its params and result types:
//! the dispatcher and the OpenRPC document are both generated from that list.

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Mutex, Semaphore, mpsc};

use crate::profile::{
    ContactView, ConversationView, Event, EventPage, GroupAdded, InvitationView, MemberView,
    MessageView,
};
use crate::service::{ClientHandle, LiveEvent};
use crate::{Error, Profile};

/// Longest request line accepted (a 64 KiB message is well inside it).
pub const MAX_LINE: usize = 1 << 20;
/// Requests one connection may have in flight at once.
const MAX_IN_FLIGHT: usize = 64;
/// Lines waiting to be written to one connection.
const OUT_QUEUE: usize = 1024;
/// Longest `get_events` wait.
const MAX_WAIT_MS: u64 = 300_000;

// ---- errors -------------------------------------------------------------------------------

/// A JSON-RPC error object. `code` is stable; `data.kind` names the core error.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

/// The stable error codes (also in docs/RPC.md).
pub mod codes {
    pub const PARSE_ERROR: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
    pub const INTERNAL: i64 = -32603;
    /// The request is well-formed but not acceptable (empty message, name taken...).
    pub const USAGE: i64 = -32000;
    pub const NOT_FOUND: i64 = -32001;
    pub const NOT_MEMBER: i64 = -32002;
    /// The relay cannot be reached; outgoing messages stay queued and are retried.
    pub const RELAY_UNREACHABLE: i64 = -32003;
    /// The relay refused; `data.relay_code` is its error code.
    pub const RELAY_REFUSED: i64 = -32004;
    pub const BUSY: i64 = -32005;
    pub const INVALID_INVITE: i64 = -32006;
    /// The relay handed out a key that is not the inviter's: possibly a malicious relay.
    pub const KEY_MISMATCH: i64 = -32007;
    pub const PROTOCOL: i64 = -32008;
    pub const STORAGE: i64 = -32009;
    pub const STOPPED: i64 = -32010;
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RpcError {}

impl RpcError {
    /// The core error's kind (`data.kind`), typed; `None` for protocol errors (bad params, no
    /// such method) and kinds this version does not know.
    pub fn kind(&self) -> Option<crate::ErrorKind> {
        let kind = self.data.as_ref()?.get("kind")?.clone();
        serde_json::from_value(kind).ok()
    }

    /// A JSON-RPC error object as it arrived over a socket (a malformed one becomes an
    /// internal error carrying its text).
    pub fn from_wire(error: &Value) -> RpcError {
        serde_json::from_value(error.clone())
            .unwrap_or_else(|_| RpcError::new(codes::INTERNAL, error.to_string()))
    }

    pub fn new(code: i64, message: impl Into<String>) -> RpcError {
        RpcError {
            code,
            message: message.into(),
            data: None,
        }
    }

    /// The same error, naming the core error kind it stands for.
    pub fn with_kind(self, kind: crate::ErrorKind) -> RpcError {
        self.with_kind_str(kind.as_str())
    }

    fn with_kind_str(mut self, kind: &str) -> RpcError {
        self.data = Some(json!({ "kind": kind }));
        self
    }
}

impl From<Error> for RpcError {
    fn from(e: Error) -> RpcError {
        use codes::*;
        let message = e.to_string();
        let code = match &e {
            Error::Relay { code, .. } => {
                return RpcError {
                    code: RELAY_REFUSED,
                    message,
                    data: Some(json!({ "kind": "relay", "relay_code": code })),
                };
            }
            Error::WrongPassphrase | Error::Storage(_) => STORAGE,
            Error::Usage(_) => USAGE,
            Error::NotFound(_) => NOT_FOUND,
            Error::NotMember(_) => NOT_MEMBER,
            Error::InvalidInvite(_) => INVALID_INVITE,
            Error::KeyPackageMismatch => KEY_MISMATCH,
            Error::RelayUnreachable(_) => RELAY_UNREACHABLE,
            Error::Busy(_) => BUSY,
            Error::Protocol(_) | Error::Mls(_) | Error::Crypto(_) | Error::Integrity(_) => PROTOCOL,
            Error::Stopped(_) => STOPPED,
        };
        let kind = e.kind().as_str();
        RpcError::new(code, message).with_kind_str(kind)
    }
}

type RpcResult<T> = std::result::Result<T, RpcError>;

// ---- params and results ---------------------------------------------------------------------

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
    pub conversation_id: String,
}

/// A conversation named by `target` (contact alias or group name) or by `conversation_id`.
#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SendParams {
    pub target: Option<String>,
    pub conversation_id: Option<String>,
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
}

#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DownloadParams {
    pub message_id: String,
    /// Absolute path of a new file, or of a directory to put the file in (under its own
    /// name). An existing file is never overwritten.
    pub out: String,
}

#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DraftParams {
    /// The conversation's id (base64url, as in events).
    pub conversation_id: String,
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
    pub conversation_id: Option<String>,
    /// The relay to move the conversation's log to.
    pub to: String,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct Moved {
    pub conversation_id: String,
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
    pub message_id: String,
    pub conversation_id: String,
}

#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HistoryParams {
    pub target: Option<String>,
    pub conversation_id: Option<String>,
    /// At most this many messages (the newest ones).
    pub limit: Option<usize>,
    /// Only messages before the message with this id.
    pub before: Option<String>,
    /// Only messages after the message with this id (then `limit` keeps the oldest).
    pub after: Option<String>,
    /// Only the message with this id.
    pub message_id: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupRenameParams {
    /// The group by its name (or give `conversation_id`).
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub conversation_id: Option<String>,
    pub name: String,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactVerifyParams {
    pub contact: String,
    /// False takes a verification back.
    #[serde(default = "yes")]
    pub verified: bool,
}

fn yes() -> bool {
    true
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
    pub conversation_id: Option<String>,
    /// Seconds a message lives; 0 turns disappearing messages off.
    pub seconds: u64,
}

#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageParams {
    pub message_id: String,
}

#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupParams {
    /// The group's name (for `group_create`: the new group's).
    #[serde(default)]
    pub group: String,
    /// The group by id instead of by name (not for `group_create`).
    #[serde(default)]
    pub conversation_id: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct Created {
    pub conversation_id: String,
}

#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupAddParams {
    /// The group by its name (or give `conversation_id`).
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub conversation_id: Option<String>,
    /// Contact aliases.
    pub contacts: Vec<String>,
}

#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupRemoveParams {
    /// The group by its name (or give `conversation_id`).
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub conversation_id: Option<String>,
    pub contact: String,
}

#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactParams {
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
    /// The conversation joined (empty when another device of yours joins instead).
    pub conversation: String,
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

// ---- the method list ------------------------------------------------------------------------

/// What one connection is: the service handle and this connection's subscription.
pub struct Session {
    handle: ClientHandle,
    out: mpsc::Sender<String>,
    subscription: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Set when the client's input ended: waits stop early (answers are still written).
    closed: tokio::sync::watch::Receiver<bool>,
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Ok(mut s) = self.subscription.try_lock()
            && let Some(t) = s.take()
        {
            t.abort();
        }
    }
}

macro_rules! methods {
    ($($name:literal => $handler:ident($params:ty) -> $result:ty, $summary:literal;)*) => {
        /// Every method name, in documentation order.
        pub const METHODS: &[&str] = &[$($name,)* "rpc.discover"];

        async fn dispatch(s: &Session, method: &str, params: Value) -> RpcResult<Value> {
            match method {
                $($name => {
                    let p: $params = parse_params(params)?;
                    let r: $result = $handler(s, p).await?;
                    serde_json::to_value(r).map_err(|e| RpcError::new(codes::INTERNAL, e.to_string()))
                })*
                "rpc.discover" => Ok(openrpc()),
                other => Err(RpcError::new(
                    codes::METHOD_NOT_FOUND,
                    format!("no method {other:?}; see rpc.discover"),
                )),
            }
        }

        /// The client API, declared once (the list below): one typed method per JSON-RPC
        /// method. A front implements [`Api::call_raw`] — in process through the service, or
        /// as a request on the owner's socket — and gets every method with its parameter and
        /// result types checked by the compiler. The dispatcher and the OpenRPC document are
        /// generated from the same list, so the three cannot drift apart.
        pub trait Api: Sync {
            /// One call by name (the transport under the typed methods).
            fn call_raw(
                &self,
                method: &'static str,
                params: Value,
            ) -> impl std::future::Future<Output = Result<Value, RpcError>> + Send;

            $(
                #[doc = $summary]
                fn $handler(
                    &self,
                    params: $params,
                ) -> impl std::future::Future<Output = Result<$result, RpcError>> + Send {
                    async move {
                        let params = serde_json::to_value(params)
                            .map_err(|e| RpcError::new(codes::INTERNAL, e.to_string()))?;
                        let value = self.call_raw($name, params).await?;
                        serde_json::from_value(value).map_err(|e| {
                            RpcError::new(
                                codes::INTERNAL,
                                format!("reading the answer to {}: {e}", $name),
                            )
                        })
                    }
                }
            )*
        }

        /// The OpenRPC document, generated from the method types.
        pub fn openrpc() -> Value {
            let mut generator = schemars::generate::SchemaSettings::draft07().into_generator();
            let methods = vec![
                $(method_doc(
                    $name,
                    $summary,
                    &serde_json::to_value(generator.root_schema_for::<$params>()).unwrap_or_default(),
                    serde_json::to_value(generator.subschema_for::<$result>()).unwrap_or_default(),
                ),)*
                method_doc(
                    "rpc.discover",
                    "This document.",
                    &json!({}),
                    json!({ "type": "object" }),
                ),
            ];
            let events = serde_json::to_value(generator.subschema_for::<LiveEvent>()).unwrap_or_default();
            let mut schemas = serde_json::to_value(generator.definitions()).unwrap_or_default();
            if let Some(map) = schemas.as_object_mut() {
                map.insert("Event".into(), events);
            }
            let doc = json!({
                "openrpc": "1.2.6",
                "info": {
                    "title": "Samizdat client",
                    "version": env!("CARGO_PKG_VERSION"),
                    "description": "JSON-RPC 2.0 over newline-delimited JSON (samizdat rpc; the serve socket). Notifications: `event` (params: components.schemas.Event), `events_lagged`. Clients must ignore event kinds and fields they do not know.",
                },
                "methods": methods,
                "components": { "schemas": schemas },
            });
            fix_refs(doc)
        }
    };
}

methods! {
    "whoami" => whoami(NoParams) -> WhoAmI, "This profile's name, relay and key fingerprint.";
    "invite_create" => invite_create(InviteCreateParams) -> InviteLink, "Make an invite link; whoever has it can contact you.";
    "invite_accept" => invite_accept(InviteAcceptParams) -> Accepted, "Accept an invite link: verify the inviter's key and start a 1:1 conversation.";
    "contacts" => contacts(NoParams) -> Vec<ContactView>, "List contacts.";
    "conversations" => conversations(NoParams) -> Vec<ConversationView>, "List conversations with unread counts.";
    "send" => send(SendParams) -> Sent, "Send a text message, or a file (`file`, with `text` as its caption). Stored before it is sent: on relay_unreachable it stays queued and is retried.";
    "download" => download(DownloadParams) -> crate::transfer::Downloaded, "Fetch a message's attachment (resuming), check its digest, decrypt it to a new file.";
    "set_proxy" => set_proxy(ProxyParams) -> Done, "Connect through a proxy (or `tor`, or `off`) from the profile's next start.";
    "relays" => relays(NoParams) -> Relays, "The relays this profile has a mailbox on, the primary first.";
    "relay_add" => relay_add(RelayParams) -> Relays, "Open a mailbox and a KeyPackage pool on another, independent relay; members are told.";
    "relay_remove" => relay_remove(RelayParams) -> Relays, "Close the mailbox on a relay (not the last); members are told.";
    "settings" => settings(NoParams) -> Settings, "The settings your devices share (move-after, auto-download).";
    "device_add_preview" => device_add_preview(DeviceAddParams) -> crate::LinkPreview, "What adding a new device's link would add (its name and the code its screen shows); changes nothing.";
    "device_add" => device_add(DeviceAddParams) -> crate::LinkPreview, "Add the new device that shows this link (call after the person confirmed its name and code): sign its key and answer it; it is added to every conversation when its KeyPackages arrive (this profile's next sync, or at once while the service runs).";
    "devices" => devices(NoParams) -> Vec<crate::DeviceView>, "Your devices (this one marked `this`).";
    "device_revoke" => device_revoke(DeviceParams) -> Done, "Remove a device of yours from every conversation and the self group; it reads nothing sent after.";
    "move" => move_conversation(MoveParams) -> Moved, "Move a conversation's log to another relay now and tell every member.";
    "set_move_after" => set_move_after(MoveAfterParams) -> Done, "Move conversations whose relay has been unreachable this long (seconds; 0: never).";
    "set_auto_download" => set_auto_download(AutoDownloadParams) -> Done, "Fetch incoming attachments up to this size as they arrive (0: only on request).";
    "history" => history(HistoryParams) -> Vec<MessageView>, "A conversation's messages in log order (marks them read).";
    "group_create" => group_create(GroupParams) -> Created, "Create an empty group.";
    "group_add" => group_add(GroupAddParams) -> GroupAdded, "Add contacts to a group; those whose relay is unreachable are added by later syncs (`waiting`).";
    "group_remove" => group_remove(GroupRemoveParams) -> Done, "Remove a contact from a group.";
    "group_readd" => group_readd(GroupRemoveParams) -> Done, "Send a member who never joined a fresh Welcome (no new invite needed).";
    "group_rename" => group_rename(GroupRenameParams) -> Created, "Rename a group for every member (queued when the relay is unreachable).";
    "contact_verify" => contact_verify(ContactVerifyParams) -> Done, "Mark a contact as verified after comparing safety numbers (verified=false takes it back).";
    "draft" => draft(DraftParams) -> Draft, "The unsent draft of a conversation (empty if none); kept in the encrypted profile.";
    "draft_set" => draft_set(DraftParams) -> Done, "Keep (or, with an empty text, delete) the unsent draft of a conversation in the encrypted profile; a send clears it.";
    "duress_set" => duress_set(DuressParams) -> Done, "Set the duress passphrase: opening the profile with it wipes it and opens an empty one with the same name, relay and network settings.";
    "backup" => backup(BackupParams) -> BackedUp, "Write an encrypted backup of the whole profile (Argon2id-derived key) to a file.";
    "set_timer" => set_timer(TimerParams) -> Done, "Set the disappearing-messages timer for everyone in a conversation (seconds; 0: off).";
    "message_retry" => message_retry(MessageParams) -> Sent, "Send a failed message again as a new message; the failed one is removed.";
    "group_leave" => group_leave(GroupParams) -> Done, "Leave a group.";
    "group_members" => group_members(GroupParams) -> Vec<MemberView>, "A group's members.";
    "safety_number" => safety_number(ContactParams) -> SafetyNumber, "The safety number shared with a contact.";
    "invitations" => invitations(NoParams) -> Vec<InvitationView>, "Pending group invitations from people who are not contacts.";
    "invitation_accept" => invitation_accept(InvitationParams) -> Joined, "Join a pending invitation's group.";
    "invitation_decline" => invitation_decline(InvitationParams) -> Done, "Forget a pending invitation; nothing is sent.";
    "sync" => sync(NoParams) -> Synced, "Fetch and process what arrived now.";
    "subscribe" => subscribe(NoParams) -> Subscribed, "Turn on `event` notifications on this connection.";
    "unsubscribe" => unsubscribe(NoParams) -> Done, "Turn `event` notifications off.";
    "get_events" => get_events(GetEventsParams) -> EventPage, "Durable events after a position, waiting up to timeout_ms for the first; `overflow` says events were dropped from the bounded log.";
}

fn parse_params<T: for<'de> Deserialize<'de>>(params: Value) -> RpcResult<T> {
    let params = match params {
        Value::Null => json!({}),
        Value::Array(a) if a.is_empty() => json!({}),
        p @ Value::Object(_) => p,
        _ => {
            return Err(RpcError::new(
                codes::INVALID_PARAMS,
                "params must be an object (by name)",
            ));
        }
    };
    serde_json::from_value(params)
        .map_err(|e| RpcError::new(codes::INVALID_PARAMS, format!("invalid params: {e}")))
}

fn method_doc(name: &str, summary: &str, params: &Value, result: Value) -> Value {
    let required: Vec<&str> = params
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let list: Vec<Value> = params
        .get("properties")
        .and_then(Value::as_object)
        .map(|props| {
            props
                .iter()
                .map(|(k, schema)| {
                    json!({
                        "name": k,
                        "required": required.contains(&k.as_str()),
                        "schema": schema,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    json!({
        "name": name,
        "summary": summary,
        "paramStructure": "by-name",
        "params": list,
        "result": { "name": "result", "schema": result },
    })
}

/// schemars points at `#/definitions/X`; OpenRPC keeps them in `components.schemas`.
fn fix_refs(v: Value) -> Value {
    match v {
        Value::String(s) if s.starts_with("#/definitions/") => {
            Value::String(s.replace("#/definitions/", "#/components/schemas/"))
        }
        Value::Array(a) => Value::Array(a.into_iter().map(fix_refs).collect()),
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k, fix_refs(v))).collect()),
        other => other,
    }
}

// ---- handlers -------------------------------------------------------------------------------

/// Run `f` on the service's profile.
macro_rules! on_profile {
    ($s:expr, |$p:ident| $body:expr) => {
        $s.handle
            .call(move |$p: &mut Profile| async move { $body }.boxed_local())
            .await
            .map_err(RpcError::from)
    };
}

/// The conversation's current name from `target` or `conversation_id` (exactly one).
/// The group a `group_*` call names: by `conversation_id` (what the app and bots hold) or by
/// name (what a person types in the CLI) — exactly one.
fn group_name(
    p: &Profile,
    group: String,
    conversation_id: Option<String>,
) -> crate::Result<String> {
    let by_name = (!group.is_empty()).then_some(group);
    target_name(p, by_name, conversation_id)
}

fn target_name(
    p: &Profile,
    target: Option<String>,
    conversation_id: Option<String>,
) -> crate::Result<String> {
    match (target, conversation_id) {
        (Some(t), None) => Ok(t),
        (None, Some(id)) => p.conversation_name(&id),
        _ => Err(Error::Usage(
            "name the conversation with exactly one of target and conversation_id".into(),
        )),
    }
}

async fn whoami(s: &Session, _: NoParams) -> RpcResult<WhoAmI> {
    on_profile!(s, |p| {
        let net = p.saved_net()?;
        Ok(WhoAmI {
            name: p.name().to_string(),
            relay: p.relay_url().to_string(),
            fingerprint: p.fingerprint_hex(),
            proxy: net.proxy.as_ref().map(|x| x.url()),
            isolate: net.isolate,
        })
    })
}

async fn invite_create(s: &Session, a: InviteCreateParams) -> RpcResult<InviteLink> {
    let hours = a.hours.unwrap_or(72);
    if hours > 24 * 365 {
        return Err(RpcError::new(
            codes::INVALID_PARAMS,
            "hours must be at most 8760 (a year)",
        ));
    }
    on_profile!(s, |p| {
        let invite = p.invite(hours * 3600, a.reusable)?;
        Ok(InviteLink {
            link: invite.to_link(),
            expires_at: invite.exp,
        })
    })
}

async fn invite_accept(s: &Session, a: InviteAcceptParams) -> RpcResult<Accepted> {
    on_profile!(s, |p| {
        let contact = p.accept(&a.link, &a.name).await?;
        let conversation_id = p.conversation_id(&contact)?;
        Ok(Accepted {
            contact,
            conversation_id,
        })
    })
}

async fn contacts(s: &Session, _: NoParams) -> RpcResult<Vec<ContactView>> {
    on_profile!(s, |p| p.contacts())
}

async fn conversations(s: &Session, _: NoParams) -> RpcResult<Vec<ConversationView>> {
    on_profile!(s, |p| p.conversations())
}

fn absolute(path: &str, what: &str) -> RpcResult<std::path::PathBuf> {
    let p = std::path::PathBuf::from(path);
    if !p.is_absolute() {
        return Err(Error::Usage(format!("{what} must be an absolute path")).into());
    }
    Ok(p)
}

async fn send(s: &Session, a: SendParams) -> RpcResult<Sent> {
    if a.file.is_none() && a.text.is_none() {
        return Err(RpcError::new(
            codes::INVALID_PARAMS,
            "invalid params: `text` is required (or `file`)",
        ));
    }
    if let Some(file) = &a.file {
        let path = absolute(file, "file")?;
        let (t, c) = (a.target.clone(), a.conversation_id.clone());
        let (name, conversation_id) = on_profile!(s, |p| {
            let name = target_name(p, t, c)?;
            let id = p.conversation_id(&name)?;
            Ok((name, id))
        })?;
        let caption = a.text.clone().unwrap_or_default();
        let how = crate::transfer::SendFile {
            name: a.name.clone(),
            keep_metadata: a.keep_metadata,
        };
        let message_id = s.handle.send_file(&name, &path, &caption, &how).await?;
        return Ok(Sent {
            message_id,
            conversation_id,
        });
    }
    on_profile!(s, |p| {
        let name = target_name(p, a.target, a.conversation_id)?;
        let conversation_id = p.conversation_id(&name)?;
        let message_id = p.send(&name, a.text.as_deref().unwrap_or_default()).await?;
        Ok(Sent {
            message_id,
            conversation_id,
        })
    })
}

async fn history(s: &Session, a: HistoryParams) -> RpcResult<Vec<MessageView>> {
    on_profile!(s, |p| {
        let name = target_name(p, a.target, a.conversation_id)?;
        let page = crate::Page {
            before: a.before,
            after: a.after,
            id: a.message_id,
            limit: a.limit,
        };
        p.history_page(&name, &page)
    })
}

async fn group_rename(s: &Session, a: GroupRenameParams) -> RpcResult<Created> {
    on_profile!(s, |p| {
        let group = group_name(p, a.group, a.conversation_id)?;
        let name = p.group_rename(&group, &a.name).await?;
        Ok(Created {
            conversation_id: p.conversation_id(&name)?,
        })
    })
}

async fn contact_verify(s: &Session, a: ContactVerifyParams) -> RpcResult<Done> {
    on_profile!(s, |p| {
        p.contact_verify(&a.contact, a.verified)?;
        Ok(Done { ok: true })
    })
}

async fn backup(s: &Session, a: BackupParams) -> RpcResult<BackedUp> {
    let pass = zeroize::Zeroizing::new(a.passphrase);
    on_profile!(s, |p| Ok(BackedUp {
        bytes: p.backup(std::path::Path::new(&a.out), &pass, a.attachments)?,
    }))
}

async fn download(s: &Session, a: DownloadParams) -> RpcResult<crate::transfer::Downloaded> {
    let out = absolute(&a.out, "out")?;
    Ok(s.handle.download(&a.message_id, &out).await?)
}

async fn draft(s: &Session, a: DraftParams) -> RpcResult<Draft> {
    on_profile!(s, |p| Ok(Draft {
        text: p.draft(&a.conversation_id)?
    }))
}

async fn draft_set(s: &Session, a: DraftParams) -> RpcResult<Done> {
    let text = zeroize::Zeroizing::new(a.text.unwrap_or_default());
    on_profile!(s, |p| {
        p.set_draft(&a.conversation_id, &text)?;
        Ok(Done { ok: true })
    })
}

async fn duress_set(s: &Session, a: DuressParams) -> RpcResult<Done> {
    let passphrase = zeroize::Zeroizing::new(a.passphrase);
    on_profile!(s, |p| {
        p.set_duress(&passphrase)?;
        Ok(Done { ok: true })
    })
}

async fn set_proxy(s: &Session, a: ProxyParams) -> RpcResult<Done> {
    let net = match a.proxy.trim() {
        "off" | "" => crate::net::Net::default(),
        t if t.eq_ignore_ascii_case("tor") => crate::net::Net::tor(),
        url => crate::net::Net {
            proxy: Some(crate::net::Proxy::parse(url)?),
            isolate: a.isolate,
        },
    };
    on_profile!(s, |p| {
        p.set_net(&net)?;
        Ok(Done { ok: true })
    })
}

async fn relays(s: &Session, _: NoParams) -> RpcResult<Relays> {
    on_profile!(s, |p| Ok(Relays { relays: p.relays() }))
}

async fn relay_add(s: &Session, a: RelayParams) -> RpcResult<Relays> {
    on_profile!(s, |p| {
        p.add_relay(&a.relay).await?;
        Ok(Relays { relays: p.relays() })
    })
}

async fn relay_remove(s: &Session, a: RelayParams) -> RpcResult<Relays> {
    on_profile!(s, |p| {
        p.remove_relay(&a.relay).await?;
        Ok(Relays { relays: p.relays() })
    })
}

async fn settings(s: &Session, _: NoParams) -> RpcResult<Settings> {
    on_profile!(s, |p| Ok(Settings {
        move_after_secs: p.move_after()?,
        auto_download_bytes: p.auto_download_bytes()?,
    }))
}

async fn device_add_preview(s: &Session, a: DeviceAddParams) -> RpcResult<crate::LinkPreview> {
    on_profile!(s, |p| p.device_add_preview(&a.link))
}

async fn device_add(s: &Session, a: DeviceAddParams) -> RpcResult<crate::LinkPreview> {
    on_profile!(s, |p| p.device_add(&a.link).await)
}

async fn devices(s: &Session, _: NoParams) -> RpcResult<Vec<crate::DeviceView>> {
    on_profile!(s, |p| p.devices())
}

async fn device_revoke(s: &Session, a: DeviceParams) -> RpcResult<Done> {
    on_profile!(s, |p| {
        p.device_revoke(&a.id).await?;
        Ok(Done { ok: true })
    })
}

async fn move_conversation(s: &Session, a: MoveParams) -> RpcResult<Moved> {
    on_profile!(s, |p| {
        let name = target_name(p, a.target, a.conversation_id)?;
        let relay = p.move_conversation(&name, &a.to).await?;
        Ok(Moved {
            conversation_id: p.conversation_id(&name)?,
            relay,
        })
    })
}

async fn set_move_after(s: &Session, a: MoveAfterParams) -> RpcResult<Done> {
    on_profile!(s, |p| {
        p.set_move_after(a.seconds)?;
        Ok(Done { ok: true })
    })
}

async fn set_auto_download(s: &Session, a: AutoDownloadParams) -> RpcResult<Done> {
    on_profile!(s, |p| {
        p.set_auto_download_bytes(a.bytes)?;
        Ok(Done { ok: true })
    })
}

async fn set_timer(s: &Session, a: TimerParams) -> RpcResult<Done> {
    on_profile!(s, |p| {
        let name = target_name(p, a.target, a.conversation_id)?;
        p.set_timer(&name, a.seconds).await?;
        Ok(Done { ok: true })
    })
}

async fn message_retry(s: &Session, a: MessageParams) -> RpcResult<Sent> {
    on_profile!(s, |p| {
        let message_id = p.message_retry(&a.message_id).await?;
        let conversation_id = p.conversation_of_message(&message_id)?;
        Ok(Sent {
            message_id,
            conversation_id,
        })
    })
}

async fn group_create(s: &Session, a: GroupParams) -> RpcResult<Created> {
    if a.conversation_id.is_some() {
        return Err(RpcError::new(
            codes::INVALID_PARAMS,
            "invalid params: a new group has a name (`group`), not an id",
        ));
    }
    on_profile!(s, |p| {
        p.group_create(&a.group).await?;
        Ok(Created {
            conversation_id: p.conversation_id(a.group.trim())?,
        })
    })
}

async fn group_add(s: &Session, a: GroupAddParams) -> RpcResult<GroupAdded> {
    if a.contacts.is_empty() {
        return Err(RpcError::new(codes::INVALID_PARAMS, "contacts is empty"));
    }
    on_profile!(s, |p| {
        let group = group_name(p, a.group, a.conversation_id)?;
        p.group_add(&group, &a.contacts).await
    })
}

async fn group_remove(s: &Session, a: GroupRemoveParams) -> RpcResult<Done> {
    on_profile!(s, |p| {
        let group = group_name(p, a.group, a.conversation_id)?;
        p.group_remove(&group, &a.contact).await?;
        Ok(Done { ok: true })
    })
}

async fn group_readd(s: &Session, a: GroupRemoveParams) -> RpcResult<Done> {
    on_profile!(s, |p| {
        let group = group_name(p, a.group, a.conversation_id)?;
        p.group_readd(&group, &a.contact).await?;
        Ok(Done { ok: true })
    })
}

async fn group_leave(s: &Session, a: GroupParams) -> RpcResult<Done> {
    on_profile!(s, |p| {
        let group = group_name(p, a.group, a.conversation_id)?;
        p.group_leave(&group).await?;
        Ok(Done { ok: true })
    })
}

async fn group_members(s: &Session, a: GroupParams) -> RpcResult<Vec<MemberView>> {
    on_profile!(s, |p| {
        let group = group_name(p, a.group, a.conversation_id)?;
        p.group_members(&group)
    })
}

async fn safety_number(s: &Session, a: ContactParams) -> RpcResult<SafetyNumber> {
    on_profile!(s, |p| Ok(SafetyNumber {
        safety_number: p.safety_number(&a.contact)?,
    }))
}

async fn invitations(s: &Session, _: NoParams) -> RpcResult<Vec<InvitationView>> {
    on_profile!(s, |p| p.invitations())
}

async fn invitation_accept(s: &Session, a: InvitationParams) -> RpcResult<Joined> {
    on_profile!(s, |p| {
        if p.invitation_elsewhere(a.id)? {
            p.invitation_answer_elsewhere(a.id, true).await?;
            return Ok(Joined {
                conversation: String::new(),
                elsewhere: true,
            });
        }
        Ok(Joined {
            conversation: p.invitation_accept(a.id).await?,
            elsewhere: false,
        })
    })
}

async fn invitation_decline(s: &Session, a: InvitationParams) -> RpcResult<Done> {
    on_profile!(s, |p| {
        if p.invitation_elsewhere(a.id)? {
            p.invitation_answer_elsewhere(a.id, false).await?;
        } else {
            p.invitation_decline(a.id)?;
        }
        Ok(Done { ok: true })
    })
}

async fn sync(s: &Session, _: NoParams) -> RpcResult<Synced> {
    let synced = on_profile!(s, |p| Ok(Synced {
        events: p.sync().await?,
    }))?;
    // Files that waited for their relay go now (or wait for the next sync).
    match s.handle.send_pending_files().await {
        Ok(()) | Err(Error::RelayUnreachable(_)) => {}
        Err(e) => tracing::debug!("waiting files not sent yet: {e}"),
    }
    Ok(synced)
}

async fn subscribe(s: &Session, _: NoParams) -> RpcResult<Subscribed> {
    let mut sub = s.subscription.lock().await;
    let mut rx = s.handle.subscribe();
    let last = s.handle.last_seq();
    let out = s.out.clone();
    if let Some(old) = sub.take() {
        old.abort();
    }
    *sub = Some(tokio::spawn(async move {
        loop {
            let line = match rx.recv().await {
                Ok(e) => json!({ "jsonrpc": "2.0", "method": "event", "params": e }),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => json!({
                    "jsonrpc": "2.0",
                    "method": "events_lagged",
                    "params": { "missed": n, "hint": "read them with get_events" },
                }),
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            if out.send(line.to_string()).await.is_err() {
                return;
            }
        }
    }));
    Ok(Subscribed { last })
}

async fn unsubscribe(s: &Session, _: NoParams) -> RpcResult<Done> {
    if let Some(t) = s.subscription.lock().await.take() {
        t.abort();
    }
    Ok(Done { ok: true })
}

async fn get_events(s: &Session, a: GetEventsParams) -> RpcResult<EventPage> {
    let limit = a.limit.unwrap_or(1000).clamp(1, 1000);
    let wait = Duration::from_millis(a.timeout_ms.min(MAX_WAIT_MS));
    let mut closed = s.closed.clone();
    let waited = tokio::select! {
        page = s.handle.get_events(a.since, limit, wait) => Some(page),
        // Nobody will wait for more: answer with what there is now.
        _ = closed.wait_for(|c| *c) => None,
    };
    let page = match waited {
        Some(page) => page,
        None => s.handle.get_events(a.since, limit, Duration::ZERO).await,
    };
    page.map_err(RpcError::from)
}

/// Call one method in-process (the CLI when it owns the profile). No notifications.
pub async fn call_local(handle: &ClientHandle, method: &str, params: Value) -> RpcResult<Value> {
    let (out, _rx) = mpsc::channel(1);
    let (_closed_tx, closed) = tokio::sync::watch::channel(false);
    let s = Session {
        handle: handle.clone(),
        out,
        subscription: Mutex::new(None),
        closed,
    };
    dispatch(&s, method, params).await
}

// ---- the line protocol ----------------------------------------------------------------------

/// Answer one request object (`None` for a notification, which gets no answer).
async fn handle_one(s: &Session, req: Value) -> Option<Value> {
    let id = req.get("id").cloned();
    let is_notification = id.is_none();
    let id = id.unwrap_or(Value::Null);
    let valid_id = matches!(id, Value::Null | Value::String(_) | Value::Number(_));
    let method = req.get("method").and_then(Value::as_str);
    let result = match (req.get("jsonrpc").and_then(Value::as_str), method) {
        (Some("2.0"), Some(method)) if valid_id => {
            let params = req.get("params").cloned().unwrap_or(Value::Null);
            dispatch(s, method, params).await
        }
        _ => Err(RpcError::new(
            codes::INVALID_REQUEST,
            "not a JSON-RPC 2.0 request (needs \"jsonrpc\": \"2.0\", a string method and a string or number id)",
        )),
    };
    if is_notification && method.is_some() {
        return None;
    }
    Some(match result {
        Ok(v) => json!({ "jsonrpc": "2.0", "id": id, "result": v }),
        Err(e) => {
            json!({ "jsonrpc": "2.0", "id": if valid_id { id } else { Value::Null }, "error": e })
        }
    })
}

/// Answer one line: a request, a notification or a batch.
async fn handle_line(s: &Session, line: &[u8]) -> Option<Value> {
    let v: Value = match serde_json::from_slice(line) {
        Ok(v) => v,
        Err(e) => {
            return Some(json!({
                "jsonrpc": "2.0", "id": null,
                "error": RpcError::new(codes::PARSE_ERROR, format!("parse error: {e}")),
            }));
        }
    };
    match v {
        Value::Array(batch) if batch.is_empty() => Some(json!({
            "jsonrpc": "2.0", "id": null,
            "error": RpcError::new(codes::INVALID_REQUEST, "empty batch"),
        })),
        Value::Array(batch) => {
            let mut out = Vec::new();
            for req in batch.into_iter().take(MAX_IN_FLIGHT) {
                if let Some(r) = handle_one(s, req).await {
                    out.push(r);
                }
            }
            (!out.is_empty()).then_some(Value::Array(out))
        }
        req => handle_one(s, req).await,
    }
}

/// Read one line of at most `MAX_LINE` bytes. `Ok(None)` at the end of input; a longer line
/// is consumed up to its newline and reported as `Err(())`.
async fn read_line<R: AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<std::result::Result<(), ()>>> {
    buf.clear();
    let mut too_long = false;
    loop {
        let chunk = r.fill_buf().await?;
        if chunk.is_empty() {
            return Ok(if buf.is_empty() && !too_long {
                None
            } else if too_long {
                Some(Err(()))
            } else {
                Some(Ok(()))
            });
        }
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        if !too_long {
            if buf.len() + take > MAX_LINE + 1 {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(&chunk[..take]);
            }
        }
        r.consume(take);
        if done {
            return Ok(Some(if too_long { Err(()) } else { Ok(()) }));
        }
    }
}

/// Serve JSON-RPC on one line-delimited connection until the reader ends. Requests run
/// concurrently (at most `MAX_IN_FLIGHT`); answers may come out of order (match them by id).
pub async fn serve_connection<R, W>(handle: ClientHandle, reader: R, writer: W)
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (out_tx, mut out_rx) = mpsc::channel::<String>(OUT_QUEUE);
    let write_task = tokio::spawn(async move {
        let mut writer = writer;
        while let Some(line) = out_rx.recv().await {
            if writer.write_all(line.as_bytes()).await.is_err()
                || writer.write_all(b"\n").await.is_err()
                || writer.flush().await.is_err()
            {
                break;
            }
        }
    });
    let (closed_tx, closed) = tokio::sync::watch::channel(false);
    let session = Arc::new(Session {
        handle,
        out: out_tx.clone(),
        subscription: Mutex::new(None),
        closed,
    });
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut reader = reader;
    let mut buf = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        match read_line(&mut reader, &mut buf).await {
            Ok(None) | Err(_) => break,
            Ok(Some(Err(()))) => {
                let e = RpcError::new(
                    codes::INVALID_REQUEST,
                    format!("request line longer than {MAX_LINE} bytes"),
                );
                let line = json!({ "jsonrpc": "2.0", "id": null, "error": e });
                if out_tx.send(line.to_string()).await.is_err() {
                    break;
                }
            }
            Ok(Some(Ok(()))) => {
                if buf.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let Ok(permit) = in_flight.clone().acquire_owned().await else {
                    break;
                };
                let session = session.clone();
                let out = out_tx.clone();
                let line = std::mem::take(&mut buf);
                tasks.spawn(async move {
                    if let Some(answer) = handle_line(&session, &line).await {
                        let _ = out.send(answer.to_string()).await;
                    }
                    drop(permit);
                });
                while tasks.try_join_next().is_some() {}
            }
        }
    }
    // The input ended: finish what was asked (without waiting for events), then stop writing.
    let _ = closed_tx.send(true);
    while tasks.join_next().await.is_some() {}
    if let Some(t) = session.subscription.lock().await.take() {
        t.abort();
    }
    drop(session);
    drop(out_tx);
    let _ = write_task.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openrpc_lists_every_method_with_resolvable_refs() {
        let doc = openrpc();
        let names: Vec<&str> = doc["methods"]
            .as_array()
            .expect("methods")
            .iter()
            .filter_map(|m| m["name"].as_str())
            .collect();
        assert_eq!(names, METHODS);
        let text = doc.to_string();
        assert!(!text.contains("#/definitions/"), "unrewritten refs");
        let schemas = doc["components"]["schemas"].as_object().expect("schemas");
        for r in text.split("\"#/components/schemas/").skip(1) {
            let name = &r[..r.find('"').expect("end of ref")];
            assert!(schemas.contains_key(name), "dangling ref {name}");
        }
        let send = doc["methods"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m["name"] == "send"))
            .expect("send");
        let text_param = send["params"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["name"] == "text"))
            .expect("text param");
        // Optional in the schema: a file may go without a caption (the handler refuses a
        // send with neither, as invalid params).
        assert_ne!(text_param["required"], true);
        assert!(
            send["params"]
                .as_array()
                .is_some_and(|p| p.iter().any(|p| p["name"] == "file")),
            "send documents its file parameter"
        );
    }

    #[test]
    fn core_errors_map_to_stable_codes() {
        let e = RpcError::from(Error::NotFound("x".into()));
        assert_eq!(
            (e.code, e.data.as_ref().map(|d| d["kind"].clone())),
            (codes::NOT_FOUND, Some(json!("not_found")))
        );
        let e = RpcError::from(Error::RelayUnreachable("r".into()));
        assert_eq!(e.code, codes::RELAY_UNREACHABLE);
    }
}
