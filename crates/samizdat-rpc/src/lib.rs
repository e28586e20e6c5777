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

use samizdat_core::{ClientHandle, LiveEvent};
use samizdat_core::{ContactId, ConversationId, Error, ErrorKind, MessageId, Profile};
use samizdat_core::{
    ContactView, ConversationView, Event, EventPage, GroupAdded, InvitationView, MemberView,
    MessageView,
};

mod handlers;
mod params;
use handlers::*;
pub use params::*;

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
    pub fn kind(&self) -> Option<ErrorKind> {
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
    pub fn with_kind(self, kind: ErrorKind) -> RpcError {
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
        if let Error::Relay { code, .. } = &e {
            return RpcError {
                code: RELAY_REFUSED,
                message,
                data: Some(json!({ "kind": "relay", "relay_code": code })),
            };
        }
        let code = match e.kind() {
            ErrorKind::WrongPassphrase | ErrorKind::Storage => STORAGE,
            ErrorKind::Usage => USAGE,
            ErrorKind::NotFound => NOT_FOUND,
            ErrorKind::NotMember => NOT_MEMBER,
            ErrorKind::InvalidInvite => INVALID_INVITE,
            ErrorKind::KeyPackageMismatch => KEY_MISMATCH,
            ErrorKind::RelayUnreachable => RELAY_UNREACHABLE,
            ErrorKind::Relay => RELAY_REFUSED,
            ErrorKind::Busy => BUSY,
            ErrorKind::Protocol | ErrorKind::Mls | ErrorKind::Crypto | ErrorKind::Integrity => {
                PROTOCOL
            }
            ErrorKind::Stopped => STOPPED,
        };
        let kind = e.kind().as_str();
        RpcError::new(code, message).with_kind_str(kind)
    }
}

type RpcResult<T> = std::result::Result<T, RpcError>;

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
    "thumbnail" => thumbnail(MessageParams) -> Thumbnail, "A photo's thumbnail (a JPEG of at most 320 pixels a side, made on the sender's device and carried in the message).";
    "download" => download(DownloadParams) -> samizdat_core::transfer::Downloaded, "Fetch a message's attachment (resuming), check its digest, decrypt it to a new file.";
    "set_proxy" => set_proxy(ProxyParams) -> Done, "Connect through a proxy (or `tor`, or `off`) from the profile's next start.";
    "relays" => relays(NoParams) -> Relays, "The relays this profile has a mailbox on, the primary first.";
    "relay_add" => relay_add(RelayParams) -> Relays, "Open a mailbox and a KeyPackage pool on another, independent relay; members are told.";
    "relay_remove" => relay_remove(RelayParams) -> Relays, "Close the mailbox on a relay (not the last); members are told.";
    "settings" => settings(NoParams) -> Settings, "The settings your devices share (move-after, auto-download).";
    "device_add_preview" => device_add_preview(DeviceAddParams) -> samizdat_core::LinkPreview, "What adding a new device's link would add (its name and the code its screen shows); changes nothing.";
    "device_add" => device_add(DeviceAddParams) -> samizdat_core::LinkPreview, "Add the new device that shows this link (call after the person confirmed its name and code): sign its key and answer it; it is added to every conversation when its KeyPackages arrive (this profile's next sync, or at once while the service runs).";
    "devices" => devices(NoParams) -> Vec<samizdat_core::DeviceView>, "Your devices (this one marked `this`).";
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
    "contact_rename" => contact_rename(ContactRenameParams) -> Done, "Call a contact something else (their 1:1 conversation follows); nothing is sent to them.";
    "saved_messages" => saved_messages(NoParams) -> Created, "Saved messages: notes to yourself, shared by your devices only (made on first use). Its conversation id; `@saved` names it as a target once it exists.";
    "contact_block" => contact_block(ContactBlockParams) -> Done, "Block a contact (`blocked`: true) or unblock them: nothing they send is kept (messages, reactions, edits, receipts, group invitations) and you cannot write to them. They are not told.";
    "delete_chat" => delete_chat(ChatParams) -> Done, "Delete a chat on this device: a group is left first, then its messages, files and the conversation go; a 1:1 chat loses its messages and files and leaves the list until the contact writes again.";
    "contact_verify" => contact_verify(ContactVerifyParams) -> Done, "Mark a contact as verified after comparing safety numbers (verified=false takes it back).";
    "draft" => draft(DraftParams) -> Draft, "The unsent draft of a conversation (empty if none); kept in the encrypted profile.";
    "draft_set" => draft_set(DraftParams) -> Done, "Keep (or, with an empty text, delete) the unsent draft of a conversation in the encrypted profile; a send clears it.";
    "wipe" => wipe(NoParams) -> Done, "Delete this profile for good: the service stops, closes the profile and deletes every file in its home, then answers; the process that served it (`samizdat serve`) exits. Nothing is left to read.";
    "duress_set" => duress_set(DuressParams) -> Done, "Set the duress passphrase: opening the profile with it wipes it and opens an empty one with the same name, relay and network settings.";
    "backup" => backup(BackupParams) -> BackedUp, "Write an encrypted backup of the whole profile (Argon2id-derived key) to a file.";
    "set_timer" => set_timer(TimerParams) -> Done, "Set the disappearing-messages timer for everyone in a conversation (seconds; 0: off).";
    "set_read_receipts" => set_read_receipts(ReadReceiptsParams) -> Done, "Send read receipts, and see other people's (off by default: then neither; delivery receipts are always on in 1:1 and small groups).";
    "call_prepare" => call_prepare(CallPrepareParams) -> samizdat_core::CallIce, "Start a call in a 1:1 conversation or a group of up to four people: its id and the relay's TURN servers with credentials for it (no identity in them), for the browser to gather its candidates. Then `call_start` with the offer.";
    "call_start" => call_start(CallParams) -> Done, "Ring the other side with this offer (`sdp`); it travels inside MLS, so its DTLS fingerprint is authenticated. Only relayed candidates leave unless direct calls are allowed. A group call starts with no `sdp`: the group's members ring, and each who joins offers to those already in.";
    "call_accept" => call_accept(CallParams) -> Done, "Take a ringing call with this answer (`sdp`); the person's other devices stop ringing.";
    "call_join" => call_join(CallParams) -> Done, "Join a ringing group call with an offer (`offers: [{to, sdp}]`) for each person `call` lists as present in `legs`; people who join later offer to you (event `call_changed`).";
    "call_answer" => call_answer(CallParams) -> Done, "In a group call: answer (`sdp`) the offer the person `to` made you when joining.";
    "call_renegotiate" => call_renegotiate(CallParams) -> Done, "In a connected 1:1 call: a new offer (`sdp`; an ICE restart, video added); the other side answers with `call_reanswer` (event `call_changed`). When both offer at once, the caller's offer wins.";
    "call_reanswer" => call_reanswer(CallParams) -> Done, "Answer (`sdp`) the other side's renegotiation, as `call` shows it in `renegotiation`.";
    "call_decline" => call_decline(CallParams) -> Done, "Do not take a ringing call (bots can decline every call); the caller sees it declined.";
    "call_end" => call_end(CallParams) -> Done, "Hang up, or stop ringing the other side before they answer.";
    "call_ice" => call_ice(CallParams) -> samizdat_core::CallIce, "The relay's TURN servers with fresh credentials for this call (the callee asks before answering).";
    "call" => call(CallParams) -> samizdat_core::CallView, "One call: its state, its offer and answer, the other side's DTLS fingerprint.";
    "calls" => calls(CallsParams) -> Vec<samizdat_core::CallView>, "Calls of one conversation (`target` or `conversation_id`) or of all, newest first; events `call_incoming`, `call_answered`, `call_changed` (group calls) and `call_ended` say when they change.";
    "set_calls_direct" => set_calls_direct(CallsDirectParams) -> Done, "Let calls connect directly, showing each side the other's address (off by default: only through the relay).";
    "set_notifications" => set_notifications(NotifyParams) -> Done, "What the app's notifications show on this device: `off`, `private` (the default: only that something arrived), `sender`, `sender_text`.";
    "pin" => pin(ArrangeParams) -> Done, "Keep a conversation at the top of this device's list (`on`), or not.";
    "archive" => archive(ArrangeParams) -> Done, "Keep a conversation out of this device's main list (`on`), or bring it back; a new message brings it back unless it is muted.";
    "mute" => mute(ArrangeParams) -> Muted, "Mute a conversation for `seconds` (absent: until unmuted; 0: unmute): no notifications.";
    "search" => search(SearchParams) -> Vec<samizdat_core::SearchHit>, "Find messages on this device (never asks a relay): every word of `query` as a prefix, any case, ё as е; newest first.";
    "react" => react(ReactParams) -> Acted, "React to a message with one emoji (replacing your earlier reaction to it), or take it back (`remove`). Queued when the relay is unreachable.";
    "edit" => edit(EditParams) -> Acted, "Correct the text of a message of yours, for every member. Queued when the relay is unreachable.";
    "delete" => delete(DeleteParams) -> Acted, "Delete a message on this device, or (`for_everyone`, a message of yours) for every member: its text, file and reactions go.";
    "forward" => forward(ForwardParams) -> Sent, "Send a message (its text and file) on to another conversation, marked as forwarded.";
    "message_retry" => message_retry(MessageParams) -> Sent, "Send a failed message again as a new message; the failed one is removed.";
    "group_leave" => group_leave(GroupParams) -> Done, "Leave a group.";
    "group_members" => group_members(GroupParams) -> Vec<MemberView>, "A group's members.";
    "safety_number" => safety_number(ContactParams) -> SafetyNumber, "The safety number shared with a contact.";
    "invitations" => invitations(NoParams) -> Vec<InvitationView>, "Pending group invitations from people who are not contacts.";
    "invitation_accept" => invitation_accept(InvitationParams) -> Joined, "Join a pending invitation's group.";
    "invitation_decline" => invitation_decline(InvitationParams) -> Done, "Forget a pending invitation; nothing is sent.";
    "channel_create" => channel_create(ChannelCreateParams) -> ChannelMade, "Create a channel on your relay, with you as its admin: a log only its admins can write and anyone with its link can read. Its link (the key after `#`) is in the answer.";
    "channel_post" => channel_post(ChannelPostParams) -> ChannelPosted, "Post `text` to a channel you are an admin of (signed with your key for this channel, sealed under the channel key); stored on its relay, then its mirrors. With `file`, a photo or file (encrypted under its own key, uploaded to the channel's relays) with `text` as its caption.";
    "channel_download" => channel_download(ChannelFileParams) -> samizdat_core::transfer::Downloaded, "Fetch post `seq`'s file from the first of the channel's relays whose copy matches its digest, and decrypt it to a new file (`out`).";
    "channel_thumbnail" => channel_thumbnail(ChannelFileParams) -> Thumbnail, "Post `seq`'s photo thumbnail (a JPEG made on the admin's device and carried in the post).";
    "channel_edit" => channel_edit(ChannelPostParams) -> ChannelPosted, "Correct the text of post `seq`, for every reader.";
    "channel_delete" => channel_delete(ChannelPostParams) -> ChannelPosted, "Delete post `seq` for every reader.";
    "channel_pin" => channel_pin(ChannelPostParams) -> ChannelPosted, "Pin post `seq` (absent: unpin).";
    "channel_link" => channel_link(ChannelParams) -> ChannelMade, "A channel's link: its relays (home, then mirrors) and, after `#`, its key. Whoever holds it can read; no relay ever sees the part after `#`.";
    "channel_follow" => channel_follow(ChannelFollowParams) -> ChannelMade, "Follow a channel from its link: its genesis is checked against the link, every record against the chain. Nothing is sent that names you; no one (the admins included) can list followers.";
    "channel_read" => channel_read(ChannelParams) -> Vec<samizdat_core::ChannelPostView>, "A channel's posts, oldest first (marks them read unless `mark_read` is false).";
    "channel_sync" => channel_sync(ChannelParams) -> samizdat_core::ChannelSynced, "Read what is new in a channel now, from the first of its relays whose copy checks out (`faults` names the ones that did not).";
    "channel_mirror_add" => channel_mirror_add(ChannelMirrorParams) -> samizdat_core::ChannelView, "Copy a channel to another relay (`url`) and keep it filled; anyone who follows a channel may mirror it. An admin's link lists it.";
    "channel_admin_add" => channel_admin_add(ChannelAdminParams) -> Done, "Ask a contact to administer a channel you are an admin of: they join its admin group (an MLS group, made on first use), make a key of their own and are added to the roster after their next sync and yours.";
    "channel_admin_remove" => channel_admin_remove(ChannelAdminParams) -> Done, "Take an admin out of the roster (the relay and every reader refuse their records from then on) and out of the admin group.";
    "channel_admins" => channel_admins(ChannelParams) -> Vec<ContactId>, "The contacts who hold an admin key of a channel (as said in its admin group); you are not listed.";
    "channel_rekey" => channel_rekey(ChannelParams) -> ChannelPosted, "Rotate the channel key: followers read on (the new key is sealed under the old one); a link made from now on opens nothing posted before.";
    "channels" => channels(NoParams) -> Vec<samizdat_core::ChannelView>, "The channels you run or follow, with unread counts; `fault` says when a relay's copy last failed its check.";
    "channel_leave" => channel_leave(ChannelParams) -> Done, "Stop following a channel on this device (nothing is sent: no one learns you read it).";
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
mod tests;
