//! `GET /v1/ws`: one WebSocket per client, multiplexing its mailbox and group logs.
//!
//! Each connection keeps only cursors. On a wake-up it reads the store after its cursors and
//! pushes what is new, in log order. Nothing is read on a timer: a wake-up cannot be lost
//! (within a process a connection that fell behind the wake-ups re-reads everything; between
//! processes, a PostgreSQL listener that reconnects wakes every connection), so an idle
//! subscription costs the relay nothing.
//!
//! A client may also append application entries over its socket: binary frames
//! ([`proto::BinaryAppend`]), pipelined (up to [`MAX_APPENDS_IN_FLIGHT`] per connection; the
//! connection stops reading while that many are pending) and answered by request id with an
//! `appended` or `append_failed` text frame, under the same rules as the HTTP append.
//!
//! A client may ask (`options`) for its log entries as binary frames
//! ([`proto::BinaryEntry`]) instead of `entry` text frames: no JSON and no base64 on either
//! side.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use samizdat_proto::{
    self as proto, AppendEntry, BinaryAppend, BinaryEntry, ClientFrame, EntryKind, ErrorCode, Id,
    ServerFrame,
};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{Semaphore, mpsc};

use crate::http::{
    ApiError, append_entry, authorize_append, body_budget, check_relay_storage, check_token,
};
use crate::notify::{Appended, Topic, Wake};
use crate::{AppState, auth, now_secs};

/// Largest client frame: client frames are small control messages.
const MAX_CLIENT_FRAME: usize = 16 * 1024;
/// A connection that sends this many unparseable frames is closed.
const MAX_BAD_FRAMES: u32 = 16;
/// Binary appends one connection may have pending; it reads nothing more until one finishes.
pub const MAX_APPENDS_IN_FLIGHT: usize = 32;
/// Room for a binary append's header (type, ids, epoch, token) around the entry.
const BINARY_APPEND_OVERHEAD: usize = 1 + 16 + 16 + 8 + 1 + 64;
/// A channel follower further behind than one push sends (`max_read_entries` records) gets
/// the rest this long after, a push at a time.
const BACKLOG_PAUSE: Duration = Duration::from_millis(100);

#[utoipa::path(
    get,
    path = "/v1/ws",
    operation_id = "websocket",
    summary = "WebSocket upgrade; frames are described in docs/PROTOCOL.md",
    responses(
        (status = 101, description = "switching protocols"),
        (status = 400, description = "not a WebSocket upgrade", body = samizdat_proto::ErrorBody),
    )
)]
pub async fn upgrade(
    State(state): State<AppState>,
    slot: Option<axum::Extension<crate::http::ForwardedSlot>>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    // The client's address bucket goes with the socket (its appends' bodies count against
    // its share), and a forwarded client's connection slot is held until the socket closes.
    let client = crate::http::CLIENT.try_with(|b| *b).ok();
    let ws = match ws {
        Ok(ws) => ws,
        Err(_) => {
            return axum::response::IntoResponse::into_response(ApiError::new(
                ErrorCode::BadRequest,
                "this endpoint only accepts a WebSocket upgrade",
            ));
        }
    };
    // Small buffers: an idle subscriber should cost a few KiB, not tungstenite's 128 KiB
    // default read buffer. Frames larger than the buffer still work (it grows on demand).
    // Control frames are small; a binary append carries at most one application entry.
    let max_frame =
        MAX_CLIENT_FRAME.max(state.limits.max_application_entry + BINARY_APPEND_OVERHEAD);
    ws.max_message_size(max_frame)
        .max_frame_size(max_frame)
        .read_buffer_size(2048)
        .write_buffer_size(0)
        .on_upgrade(move |socket| async move {
            state.metrics.ws_connections.increment(1.0);
            state.metrics.ws_connections_total.increment(1);
            // Fail closed: without randomness there is no safe challenge.
            if let (Some(conn_id), Some(challenge)) = (auth::random_id(), auth::random_id()) {
                let span = tracing::debug_span!("ws", conn = %conn_id.short());
                let _slot = slot;
                let served =
                    tracing::Instrument::instrument(serve(state.clone(), socket, challenge), span);
                let _ = match client {
                    Some(bucket) => crate::http::CLIENT.scope(bucket, served).await,
                    None => served.await,
                };
            }
            state.metrics.ws_connections.decrement(1.0);
        })
}

struct GroupSub {
    epoch: u64,
    after: u64,
    closed: bool,
    /// Announced entries that arrived ahead of the cursor (appends answered together are
    /// announced in whatever order their tasks run): pushed as soon as the gap fills, or
    /// after a read when it has not filled within [`GAP_WAIT`].
    held: std::collections::BTreeMap<u64, Arc<Appended>>,
}

/// How long an announced entry may wait for the one before it before the log is read.
const GAP_WAIT: Duration = Duration::from_millis(10);
/// Announced entries held per subscription at most; past this the log is read.
const MAX_HELD: usize = 64;

struct Conn {
    state: AppState,
    challenge: Id,
    mailboxes: HashMap<Id, u64>,
    groups: HashMap<Id, GroupSub>,
    /// Followed channels: the last record sent.
    channels: HashMap<Id, u64>,
    /// Push group entries as binary frames (the client asked with `options`).
    binary_entries: bool,
    /// When subscriptions holding entries ahead of a gap read their log (see `GroupSub::held`).
    gap_deadline: Option<tokio::time::Instant>,
    /// When a channel follower that a push left behind gets the next push.
    backlog_at: Option<tokio::time::Instant>,
}

type Sink = futures_util::stream::SplitSink<WebSocket, Message>;

async fn send(sink: &mut Sink, frame: &ServerFrame) -> Result<(), axum::Error> {
    let text = serde_json::to_string(frame).unwrap_or_default();
    send_message(sink, Message::Text(text.into())).await
}

/// Send one frame; a client that takes more than 30 s to accept it is dropped.
async fn send_message(sink: &mut Sink, message: Message) -> Result<(), axum::Error> {
    tokio::time::timeout(Duration::from_secs(30), sink.send(message))
        .await
        .map_err(axum::Error::new)?
}

fn error_frame(e: ApiError, id: Option<Id>) -> ServerFrame {
    ServerFrame::Error {
        code: e.0.code,
        message: e.0.message,
        id,
    }
}

async fn serve(state: AppState, socket: WebSocket, challenge: Id) -> Result<(), axum::Error> {
    let (mut sink, mut stream) = socket.split();
    let mut wake = state.notifier.subscribe();
    let mut shutdown = state.shutdown.clone();
    let mut conn = Conn {
        challenge,
        state,
        mailboxes: HashMap::new(),
        groups: HashMap::new(),
        channels: HashMap::new(),
        binary_entries: false,
        gap_deadline: None,
        backlog_at: None,
    };
    send(
        &mut sink,
        &ServerFrame::Hello {
            version: proto::PROTOCOL_VERSION,
            challenge: conn.challenge,
            features: vec![proto::FEATURE_BINARY_ENTRIES.to_string()],
        },
    )
    .await?;
    let mut bad_frames = 0u32;
    // A socket must prove within a few seconds that it belongs to someone — a subscription
    // (owner signature or epoch token) or an append with a valid token — or it is closed:
    // idle anonymous sockets cannot hold the connection caps (security review 3, M4).
    let proof_deadline = std::time::Duration::from_secs(conn.state.limits.ws_proof_secs.max(1));
    let mut unproven = Some(tokio::time::Instant::now() + proof_deadline);
    // Answers of pending binary appends. Unbounded, but never holds more than
    // MAX_APPENDS_IN_FLIGHT: each answer holds one permit until it is sent.
    let (acks_tx, mut acks) = mpsc::unbounded_channel::<ServerFrame>();
    let in_flight = Arc::new(Semaphore::new(MAX_APPENDS_IN_FLIGHT));
    loop {
        tokio::select! {
            msg = stream.next() => {
                let Some(Ok(msg)) = msg else { return Ok(()) };
                let text = match msg {
                    Message::Text(t) => t,
                    Message::Close(_) => return Ok(()),
                    Message::Ping(_) | Message::Pong(_) => continue,
                    Message::Binary(b) => {
                        match BinaryAppend::decode(&b) {
                            Ok(a) => {
                                // Backpressure: with the limit reached, stop reading this
                                // socket until an append finishes.
                                let Ok(permit) = in_flight.clone().acquire_owned().await else { return Ok(()) };
                                let state = conn.state.clone();
                                let tx = acks_tx.clone();
                                drop(b);
                                tokio::spawn(async move {
                                    let answer = binary_append(&state, a).await;
                                    let _ = tx.send(answer);
                                    drop(permit);
                                });
                            }
                            Err(e) => {
                                bad_frames += 1;
                                conn.state.metrics.reject(ErrorCode::BadRequest);
                                send(&mut sink, &error_frame(ApiError::new(ErrorCode::BadRequest, format!("invalid binary frame: {e}")), None)).await?;
                                if bad_frames >= MAX_BAD_FRAMES { return Ok(()) }
                            }
                        }
                        continue;
                    }
                };
                let frame: ClientFrame = match serde_json::from_str(text.as_str()) {
                    Ok(f) => f,
                    Err(e) => {
                        bad_frames += 1;
                        conn.state.metrics.reject(ErrorCode::BadRequest);
                        send(&mut sink, &error_frame(ApiError::new(ErrorCode::BadRequest, format!("invalid frame: {e}")), None)).await?;
                        if bad_frames >= MAX_BAD_FRAMES { return Ok(()) }
                        continue;
                    }
                };
                if let Some(reply) = conn.handle(frame).await {
                    let subscribed = match &reply { ServerFrame::Subscribed { id } => Some(*id), _ => None };
                    if matches!(reply, ServerFrame::Subscribed { .. } | ServerFrame::Appended { .. }) {
                        unproven = None;
                    }
                    if let ServerFrame::Error { code, .. } = &reply {
                        conn.state.metrics.reject(*code);
                        // A refused subscription (bad token or signature) costs a store read:
                        // it counts like a bad frame, so guessing is bounded per connection.
                        bad_frames += 1;
                    }
                    send(&mut sink, &reply).await?;
                    if bad_frames >= MAX_BAD_FRAMES { return Ok(()) }
                    if let Some(id) = subscribed {
                        conn.push(&mut sink, Some(id)).await?;
                    }
                }
            }
            Some(answer) = acks.recv() => {
                if matches!(answer, ServerFrame::Appended { .. }) {
                    unproven = None;
                }
                if let ServerFrame::AppendFailed { code, .. } = &answer {
                    conn.state.metrics.reject(*code);
                    // A refused token costs a store read: bounded per connection like a
                    // refused subscription.
                    if *code == ErrorCode::BadToken {
                        bad_frames += 1;
                    }
                }
                send(&mut sink, &answer).await?;
                if bad_frames >= MAX_BAD_FRAMES { return Ok(()) }
            }
            topic = wake.recv() => {
                match topic {
                    Ok(Wake::Topic(Topic::Mailbox(id))) if conn.mailboxes.contains_key(&id) => conn.push(&mut sink, Some(id)).await?,
                    Ok(Wake::Topic(Topic::Group(id))) if conn.groups.contains_key(&id) => conn.push(&mut sink, Some(id)).await?,
                    Ok(Wake::Topic(Topic::Channel(id))) if conn.channels.contains_key(&id) => conn.push(&mut sink, Some(id)).await?,
                    Ok(Wake::Entry(e)) if conn.groups.contains_key(&e.group) => conn.push_appended(&mut sink, &e).await?,
                    // Fell behind the wake-ups, or told that any may have been lost.
                    Ok(Wake::All) | Err(RecvError::Lagged(_)) => conn.push(&mut sink, None).await?,
                    Ok(_) => {}
                    Err(RecvError::Closed) => return Ok(()),
                }
            }
            _ = tokio::time::sleep_until(conn.gap_deadline.unwrap_or_else(tokio::time::Instant::now)), if conn.gap_deadline.is_some() => {
                conn.gap_deadline = None;
                let gaps: Vec<Id> = conn.groups.iter().filter(|(_, s)| !s.held.is_empty()).map(|(id, _)| *id).collect();
                for id in gaps {
                    conn.push(&mut sink, Some(id)).await?;
                }
            }
            _ = tokio::time::sleep_until(unproven.unwrap_or_else(tokio::time::Instant::now)), if unproven.is_some() => {
                let _ = sink.send(Message::Close(None)).await;
                return Ok(());
            }
            _ = tokio::time::sleep_until(conn.backlog_at.unwrap_or_else(tokio::time::Instant::now)), if conn.backlog_at.is_some() => {
                conn.backlog_at = None;
                conn.push(&mut sink, None).await?;
            }
            _ = shutdown.changed() => {
                let _ = sink.send(Message::Close(None)).await;
                return Ok(());
            }
        }
    }
}

/// One binary append, with the HTTP append's checks in the same order (who may append
/// first, then the relay's storage, then the entry), answered by request id.
async fn binary_append(state: &crate::AppState, a: BinaryAppend) -> ServerFrame {
    let request_id = a.request_id;
    let res: Result<u64, ApiError> = async {
        let (token_hash, token_epoch) = authorize_append(state, a.group_id, &a.token).await?;
        check_relay_storage(state)?;
        // The entry is held in memory until stored: it counts against the relay-wide budget
        // of bodies in flight, as an HTTP body does.
        let n = u32::try_from(a.body.len().max(1)).unwrap_or(u32::MAX);
        let _budget = body_budget(state, n).await?;
        let stored = append_entry(
            state,
            a.group_id,
            token_hash,
            token_epoch,
            AppendEntry {
                request_id,
                kind: EntryKind::Application,
                epoch: a.epoch,
                body: proto::Bytes(a.body),
                next_token_hash: None,
                welcomes: Vec::new(),
            },
        )
        .await?;
        Ok(stored.seq)
    }
    .await;
    match res {
        Ok(seq) => ServerFrame::Appended { request_id, seq },
        Err(ApiError(e)) => ServerFrame::AppendFailed {
            request_id,
            code: e.code,
            message: e.message,
            current_epoch: e.current_epoch,
        },
    }
}

impl Conn {
    fn subscriptions(&self) -> usize {
        self.mailboxes.len() + self.groups.len() + self.channels.len()
    }

    async fn handle(&mut self, frame: ClientFrame) -> Option<ServerFrame> {
        match frame {
            ClientFrame::Ping { nonce } => Some(ServerFrame::Pong { nonce }),
            ClientFrame::Options { binary_entries } => {
                self.binary_entries = binary_entries;
                None
            }
            ClientFrame::Unsubscribe { id } => {
                self.mailboxes.remove(&id);
                self.groups.remove(&id);
                self.channels.remove(&id);
                None
            }
            ClientFrame::SubscribeMailbox {
                mailbox_id,
                after,
                signature,
            } => {
                if !self.mailboxes.contains_key(&mailbox_id)
                    && self.subscriptions() >= self.state.limits.max_subscriptions
                {
                    return Some(error_frame(
                        ApiError::new(
                            ErrorCode::TooManySubscriptions,
                            "too many subscriptions on this connection",
                        ),
                        Some(mailbox_id),
                    ));
                }
                let owner = match self.state.store.mailbox_owner(mailbox_id).await {
                    Ok(Some(o)) => o,
                    Ok(None) => {
                        return Some(error_frame(
                            ApiError::new(ErrorCode::NotFound, "no such mailbox"),
                            Some(mailbox_id),
                        ));
                    }
                    Err(e) => return Some(error_frame(e.into(), Some(mailbox_id))),
                };
                let payload = proto::ws_signing_payload(&self.challenge, &mailbox_id);
                if !auth::verify(&owner, &payload, &signature.0) {
                    return Some(error_frame(
                        ApiError::new(
                            ErrorCode::BadSignature,
                            "the signature over this connection's challenge does not verify",
                        ),
                        Some(mailbox_id),
                    ));
                }
                if let Err(e) = self.state.store.touch_mailbox(mailbox_id, now_secs()).await {
                    return Some(error_frame(e.into(), Some(mailbox_id)));
                }
                self.mailboxes.insert(mailbox_id, after);
                Some(ServerFrame::Subscribed { id: mailbox_id })
            }
            ClientFrame::SubscribeChannel { channel_id, after } => {
                if !self.channels.contains_key(&channel_id)
                    && self.subscriptions() >= self.state.limits.max_subscriptions
                {
                    return Some(error_frame(
                        ApiError::new(
                            ErrorCode::TooManySubscriptions,
                            "too many subscriptions on this connection",
                        ),
                        Some(channel_id),
                    ));
                }
                // Reading a channel asks for no proof of who reads (that is the point); the
                // channel must exist, and the connection caps still bound what one address holds.
                match self.state.store.channel_state(channel_id).await {
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        return Some(error_frame(
                            ApiError::new(ErrorCode::NotFound, "no such channel on this relay"),
                            Some(channel_id),
                        ));
                    }
                    Err(e) => return Some(error_frame(e.into(), Some(channel_id))),
                }
                self.channels
                    .insert(channel_id, after.min(crate::store::MAX_COUNTER));
                Some(ServerFrame::Subscribed { id: channel_id })
            }
            ClientFrame::SubscribeGroup {
                group_id,
                epoch,
                token,
                after,
            } => {
                if !self.groups.contains_key(&group_id)
                    && self.subscriptions() >= self.state.limits.max_subscriptions
                {
                    return Some(error_frame(
                        ApiError::new(
                            ErrorCode::TooManySubscriptions,
                            "too many subscriptions on this connection",
                        ),
                        Some(group_id),
                    ));
                }
                if epoch > crate::store::MAX_COUNTER || after > crate::store::MAX_COUNTER {
                    return Some(error_frame(
                        ApiError::new(ErrorCode::BadRequest, "epoch and after must be below 2^63"),
                        Some(group_id),
                    ));
                }
                if let Err(e) = check_token(&self.state, group_id, epoch, &token.0).await {
                    return Some(error_frame(e, Some(group_id)));
                }
                self.groups.insert(
                    group_id,
                    GroupSub {
                        epoch,
                        after,
                        closed: false,
                        held: Default::default(),
                    },
                );
                Some(ServerFrame::Subscribed { id: group_id })
            }
        }
    }

    /// A fresh entry announced by this process: sent as is when it directly follows the
    /// subscription's cursor (no store read, no re-encoding), skipped when already sent, held
    /// when it is ahead of the cursor in the same epoch (see `GroupSub::held`); otherwise
    /// read the log.
    async fn push_appended(
        &mut self,
        sink: &mut Sink,
        e: &Arc<Appended>,
    ) -> Result<(), axum::Error> {
        let Some(sub) = self.groups.get_mut(&e.group) else {
            return Ok(());
        };
        let open_epoch = !sub.closed && sub.epoch == e.epoch;
        let next = sub.after.saturating_add(1);
        if open_epoch && e.seq < next {
            return Ok(());
        }
        if open_epoch && e.seq == next {
            self.deliver(sink, e).await?;
            return self.flush_held(sink, e.group).await;
        }
        if open_epoch && sub.held.len() < MAX_HELD {
            sub.held.insert(e.seq, e.clone());
            self.gap_deadline
                .get_or_insert_with(|| tokio::time::Instant::now() + GAP_WAIT);
            return Ok(());
        }
        self.push(sink, Some(e.group)).await
    }

    /// Push held entries that now follow the cursor; drop those already sent.
    async fn flush_held(&mut self, sink: &mut Sink, group: Id) -> Result<(), axum::Error> {
        loop {
            let Some(sub) = self.groups.get_mut(&group) else {
                return Ok(());
            };
            let after = sub.after;
            sub.held.retain(|seq, _| *seq > after);
            if sub.closed {
                sub.held.clear();
                return Ok(());
            }
            let Some(next) = sub.held.remove(&after.saturating_add(1)) else {
                return Ok(());
            };
            self.deliver(sink, &next).await?;
        }
    }

    /// Send an announced entry that directly follows the subscription's cursor.
    async fn deliver(&mut self, sink: &mut Sink, e: &Appended) -> Result<(), axum::Error> {
        let Some(sub) = self.groups.get_mut(&e.group) else {
            return Ok(());
        };
        sub.after = e.seq;
        let close = e.kind == samizdat_proto::EntryKind::Commit;
        if close {
            sub.closed = true;
        }
        let frame = if self.binary_entries {
            Message::Binary(e.binary_frame())
        } else {
            Message::Text(e.text_frame())
        };
        send_message(sink, frame).await?;
        self.state.metrics.pushed_frames.increment(1);
        if close {
            // A commit is the last entry of its epoch.
            send(
                sink,
                &ServerFrame::EpochClosed {
                    group_id: e.group,
                    epoch: e.epoch,
                },
            )
            .await?;
        }
        Ok(())
    }

    /// Push everything new for one subscription (`Some`) or all of them (`None`).
    async fn push(&mut self, sink: &mut Sink, only: Option<Id>) -> Result<(), axum::Error> {
        let limit = self.state.limits.max_read_entries;
        let mailboxes: Vec<Id> = self
            .mailboxes
            .keys()
            .copied()
            .filter(|id| only.is_none_or(|o| o == *id))
            .collect();
        for id in mailboxes {
            loop {
                let after = self.mailboxes.get(&id).copied().unwrap_or(0);
                let msgs = match self
                    .state
                    .store
                    .read_mailbox(id, after, limit, now_secs())
                    .await
                {
                    Ok(m) => m,
                    Err(e) => {
                        send(sink, &error_frame(e.into(), Some(id))).await?;
                        break;
                    }
                };
                let n = msgs.len();
                for m in msgs {
                    self.mailboxes.insert(id, m.seq);
                    send(
                        sink,
                        &ServerFrame::MailboxMessage {
                            mailbox_id: id,
                            seq: m.seq,
                            body: m.body,
                            stored_at: m.stored_at,
                        },
                    )
                    .await?;
                    self.state.metrics.pushed_frames.increment(1);
                }
                if n < limit {
                    break;
                }
            }
        }
        let groups: Vec<Id> = self
            .groups
            .keys()
            .copied()
            .filter(|id| only.is_none_or(|o| o == *id))
            .collect();
        for id in groups {
            while let Some(sub) = self.groups.get(&id) {
                if sub.closed {
                    break;
                }
                let (epoch, after) = (sub.epoch, sub.after);
                self.state.metrics.push_reads.increment(1);
                let page = match self.state.store.read_entries(id, epoch, after, limit).await {
                    Ok(p) => p,
                    Err(e) => {
                        send(sink, &error_frame(e.into(), Some(id))).await?;
                        break;
                    }
                };
                let n = page.entries.len();
                for e in page.entries {
                    if let Some(s) = self.groups.get_mut(&id) {
                        s.after = e.seq;
                    }
                    if self.binary_entries {
                        let frame =
                            BinaryEntry::encode_parts(&id, e.seq, e.epoch, e.kind, &e.body.0);
                        send_message(sink, Message::Binary(frame.into())).await?;
                    } else {
                        send(
                            sink,
                            &ServerFrame::Entry {
                                group_id: id,
                                seq: e.seq,
                                epoch: e.epoch,
                                kind: e.kind,
                                body: e.body,
                            },
                        )
                        .await?;
                    }
                    self.state.metrics.pushed_frames.increment(1);
                }
                if n < limit {
                    // Every entry of the epoch up to the group's last seq has been sent: the
                    // next one appended (last + 1) can be pushed as announced, without a read.
                    if let Some(s) = self.groups.get_mut(&id) {
                        s.after = s.after.max(page.last_seq);
                    }
                    if page.current_epoch > epoch {
                        if let Some(s) = self.groups.get_mut(&id) {
                            s.closed = true;
                        }
                        send(
                            sink,
                            &ServerFrame::EpochClosed {
                                group_id: id,
                                epoch,
                            },
                        )
                        .await?;
                    }
                    break;
                }
            }
            self.flush_held(sink, id).await?;
        }
        let channels: Vec<Id> = self
            .channels
            .keys()
            .copied()
            .filter(|id| only.is_none_or(|o| o == *id))
            .collect();
        for id in channels {
            // Record by record through the process's shared frames: a fresh record is read
            // and encoded once for all its followers here (a follower catching up from far
            // behind makes one read per record; followers read segments to catch up).
            let mut sent = 0;
            while let Some(after) = self.channels.get(&id).copied() {
                if sent >= limit {
                    self.backlog_at = Some(tokio::time::Instant::now() + BACKLOG_PAUSE);
                    break;
                }
                let seq = after.saturating_add(1);
                let push_frames = self.state.push_frames.clone();
                match push_frames.frame(&self.state, id, seq).await {
                    Ok(Some(frame)) => {
                        self.channels.insert(id, seq);
                        send_message(sink, Message::Text(frame)).await?;
                        self.state.metrics.pushed_frames.increment(1);
                        sent += 1;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        send(sink, &error_frame(e.into(), Some(id))).await?;
                        break;
                    }
                }
            }
        }
        Ok(())
    }
}
