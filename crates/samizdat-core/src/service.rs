//! The client as a long-running service: one task owns a [`Profile`] (its database, MLS
//! state and relay connections); every front holds a cloneable [`ClientHandle`].
//!
//! The owner runs on its own thread with a single-threaded runtime, so SQLCipher and MLS work
//! never blocks the fronts' executor and commands never interleave inside a logical step.
//! Commands arrive as jobs on a bounded queue and run one at a time, between realtime syncs —
//! this is what makes `listen` and `send` on one profile safe together.
//!
//! Events: durable ones are read back from the profile's event log after every step (so what
//! is broadcast is exactly what a later `get_events` returns, once each); live-only ones
//! (relay connection changes) are broadcast directly.

use std::collections::HashMap;
use std::time::Duration;

use backon::BackoffBuilder;
use futures_util::future::LocalBoxFuture;
use futures_util::{FutureExt, SinkExt, StreamExt};
use samizdat_proto::{Bytes, ClientFrame, Id, ServerFrame};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::Message;

use crate::profile::{Event, EventPage, RelayState};
use crate::{Error, Profile, Result};

/// Commands waiting for the owner; a full queue makes callers wait (backpressure).
const JOB_QUEUE: usize = 256;
/// Live events buffered per subscriber; a subscriber that falls further behind is told it
/// lagged and reads the rest from the durable log.
const EVENT_BUFFER: usize = 4096;
/// Conversations are polled this often even when the WebSocket is quiet (other relays,
/// missed notifications).
const POLL: Duration = Duration::from_secs(5);
/// How often a running service reads the mailbox of an open device link.
const LINK_POLL: Duration = Duration::from_millis(500);

type Job = Box<dyn for<'a> FnOnce(&'a mut Profile) -> LocalBoxFuture<'a, ()> + Send>;

/// An event as the service delivers it: `seq` is its position in the durable log, absent
/// for live-only events.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LiveEvent {
    pub seq: Option<u64>,
    #[serde(flatten)]
    pub event: Event,
}

/// Service threads, so a process can let them finish (profile closed, runtime and thread
/// gone) before it exits: exiting while one is still tearing down races the C libraries'
/// own teardown (SQLCipher, the crypto library).
static THREADS: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>> =
    std::sync::Mutex::new(Vec::new());

/// Wait (at most `limit`) until every service thread has ended — call it once every handle
/// is gone, before the process exits. Threads still busy after `limit` are left running.
pub fn wait_stopped(limit: Duration) {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let mut threads = THREADS.lock().unwrap_or_else(|p| p.into_inner());
        let (done, busy): (Vec<_>, Vec<_>) = threads.drain(..).partition(|t| t.is_finished());
        *threads = busy;
        let left = threads.len();
        drop(threads);
        for t in done {
            let _ = t.join();
        }
        if left == 0 || std::time::Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A cloneable handle on a running service. Dropping the last handle stops the service.
#[derive(Clone)]
pub struct ClientHandle {
    jobs: mpsc::Sender<Job>,
    events: broadcast::Sender<LiveEvent>,
    last_seq: watch::Receiver<u64>,
}

/// How the service runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Commands only: nothing happens between them (one-shot CLI commands).
    OnDemand,
    /// Stay connected to the home relay, sync as things arrive, retry queued messages.
    Realtime,
}

impl ClientHandle {
    /// Start the service on its own thread; it owns `profile` from now on.
    pub fn start(profile: Profile, mode: Mode) -> Result<ClientHandle> {
        Self::start_subscribed(profile, mode).map(|(h, _)| h)
    }

    /// Start the service with a subscription that sees everything from its first step.
    pub fn start_subscribed(
        mut profile: Profile,
        mode: Mode,
    ) -> Result<(ClientHandle, broadcast::Receiver<LiveEvent>)> {
        // Messages go over a WebSocket held per relay (and proxy identity), not an HTTP
        // request each.
        profile.hold_append_sockets();
        let (jobs_tx, jobs_rx) = mpsc::channel(JOB_QUEUE);
        let (events_tx, first) = broadcast::channel(EVENT_BUFFER);
        let last = profile.events_after(u64::MAX, 0)?.last;
        let (seq_tx, seq_rx) = watch::channel(last);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Storage(format!("cannot start the service runtime: {e}")))?;
        let weak = WeakHandle {
            jobs: jobs_tx.downgrade(),
            events: events_tx.clone(),
            last_seq: seq_rx.clone(),
        };
        let service = Service {
            weak,
            fetching: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
            sending_files: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
            profile,
            jobs: jobs_rx,
            events: events_tx.clone(),
            last_seq: seq_tx,
            published: last,
            connected: false,
        };
        let thread = std::thread::Builder::new()
            .name("samizdat-core".into())
            .spawn(move || {
                rt.block_on(service.run(mode));
                drop(rt);
            })
            .map_err(|e| Error::Storage(format!("cannot start the service thread: {e}")))?;
        THREADS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(thread);
        let handle = ClientHandle {
            jobs: jobs_tx,
            events: events_tx,
            last_seq: seq_rx,
        };
        Ok((handle, first))
    }

    /// Run `f` on the profile, in turn with every other command, and return its result.
    pub async fn call<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'a> FnOnce(&'a mut Profile) -> LocalBoxFuture<'a, Result<T>> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |p| {
            async move {
                let r = f(p).await;
                // The caller may be gone (a client that disconnected mid-call): the work is
                // done and stored all the same.
                let _ = tx.send(r);
            }
            .boxed_local()
        });
        self.jobs
            .send(job)
            .await
            .map_err(|_| Error::Stopped("the client service has stopped".into()))?;
        rx.await
            .map_err(|_| Error::Stopped("the client service stopped during the call".into()))?
    }

    /// Send a live-only event to every subscriber (transfer progress).
    pub(crate) fn broadcast(&self, event: LiveEvent) {
        let _ = self.events.send(event);
    }

    /// Live events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<LiveEvent> {
        self.events.subscribe()
    }

    /// The newest position in the durable event log.
    pub fn last_seq(&self) -> u64 {
        *self.last_seq.borrow()
    }

    /// Durable events after `since`; waits up to `timeout` for the first one when there is
    /// none yet.
    pub async fn get_events(
        &self,
        since: u64,
        limit: usize,
        timeout: Duration,
    ) -> Result<EventPage> {
        let mut seen = self.last_seq.clone();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let page = self
                .call(move |p| async move { p.events_after(since, limit) }.boxed_local())
                .await?;
            if !page.events.is_empty() || page.overflow {
                return Ok(page);
            }
            // Nothing yet: wait until something is logged past `since`, or the deadline.
            let waited = tokio::time::timeout_at(deadline, seen.wait_for(|&l| l > since)).await;
            match waited {
                Ok(Ok(_)) => continue,
                Ok(Err(_)) => return Err(Error::Stopped("the client service has stopped".into())),
                Err(_) => return Ok(page),
            }
        }
    }
}

/// A handle that does not keep the service alive (the service's own, for the automatic
/// download it starts).
struct WeakHandle {
    jobs: mpsc::WeakSender<Job>,
    events: broadcast::Sender<LiveEvent>,
    last_seq: watch::Receiver<u64>,
}

impl WeakHandle {
    fn upgrade(&self) -> Option<ClientHandle> {
        Some(ClientHandle {
            jobs: self.jobs.upgrade()?,
            events: self.events.clone(),
            last_seq: self.last_seq.clone(),
        })
    }
}

struct Service {
    weak: WeakHandle,
    /// An automatic download is running.
    fetching: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Files that waited for their relay are being uploaded (one run at a time).
    sending_files: std::sync::Arc<std::sync::atomic::AtomicBool>,
    profile: Profile,
    jobs: mpsc::Receiver<Job>,
    events: broadcast::Sender<LiveEvent>,
    last_seq: watch::Sender<u64>,
    /// Newest durable event already broadcast.
    published: u64,
    /// Whether the realtime connection was last reported up.
    connected: bool,
}

type Ws = crate::net::Ws;

impl Service {
    /// Broadcast what the last step logged (from the log itself, so each durable event goes
    /// out once and in order), plus the live-only events it reported.
    fn publish(&mut self, reported: Vec<Event>) {
        loop {
            let page = match self.profile.events_after(self.published, 512) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!("cannot read the event log: {e}");
                    break;
                }
            };
            let Some(last) = page.events.last().map(|e| e.seq) else {
                // Rows may have been trimmed: move past them.
                self.published = self.published.max(page.last);
                break;
            };
            for e in page.events {
                if matches!(
                    &e.event,
                    Event::Message {
                        attachment: Some(_),
                        ..
                    }
                ) {
                    self.start_auto_download();
                }
                let _ = self.events.send(LiveEvent {
                    seq: Some(e.seq),
                    event: e.event,
                });
            }
            self.published = last;
        }
        let _ = self.last_seq.send(self.published);
        for event in reported.into_iter().filter(|e| !e.is_durable()) {
            let _ = self.events.send(LiveEvent { seq: None, event });
        }
    }

    /// Fetch new attachments under the user's size in the background (one run at a time;
    /// it uses the job queue like any front).
    fn start_auto_download(&self) {
        use std::sync::atomic::Ordering;
        if self.fetching.swap(true, Ordering::SeqCst) {
            return;
        }
        let Some(handle) = self.weak.upgrade() else {
            self.fetching.store(false, Ordering::SeqCst);
            return;
        };
        let flag = self.fetching.clone();
        tokio::spawn(async move {
            handle.auto_download().await;
            flag.store(false, Ordering::SeqCst);
        });
    }

    /// Upload and send files that waited for their relay, in the background (one run at a
    /// time; it uses the job queue like any front). Only when some wait.
    fn start_pending_files(&self) {
        use std::sync::atomic::Ordering;
        if !self.profile.has_pending_files() || self.sending_files.swap(true, Ordering::SeqCst) {
            return;
        }
        let Some(handle) = self.weak.upgrade() else {
            self.sending_files.store(false, Ordering::SeqCst);
            return;
        };
        let flag = self.sending_files.clone();
        tokio::spawn(async move {
            if let Err(e) = handle.send_pending_files().await {
                tracing::debug!("waiting files not sent yet: {e}");
            }
            flag.store(false, Ordering::SeqCst);
        });
    }

    fn live(&self, event: Event) {
        let _ = self.events.send(LiveEvent { seq: None, event });
    }

    async fn run_job(&mut self, job: Job) {
        // The caller gets its answer inside the job and may drop its handle at once; this one
        // keeps the service up until what the job reported is published, so the work that
        // publishing starts (automatic downloads, which take their own handle) can start.
        let _alive = self.weak.upgrade();
        job(&mut self.profile).await;
        let reported = self.profile.take_events();
        self.publish(reported);
    }

    async fn run(mut self, mode: Mode) {
        if mode == Mode::OnDemand {
            while let Some(job) = self.jobs.recv().await {
                self.run_job(job).await;
            }
            return;
        }
        let relay = self.profile.relay.base().to_string();
        let mut backoff = new_backoff();
        let mut retry_at: Option<tokio::time::Instant> = None;
        let mut ws: Option<Ws> = None;
        let mut challenge: Option<Id> = None;
        let mut subscribed: HashMap<Id, (u64, u64)> = HashMap::new();
        let mut poll = tokio::time::interval(POLL);
        let mut link_poll = tokio::time::interval(LINK_POLL);
        let mut dirty = true;
        let mut groups: std::collections::HashSet<Id> = std::collections::HashSet::new();
        // Entries pushed on the home socket, by log, applied as they are when they follow the
        // cursor (bounded: past `PUSHED_MAX` per log the log is read instead).
        let mut pushed: HashMap<Id, Vec<samizdat_proto::Entry>> = HashMap::new();
        let mut conv_sockets = ConvSockets::new();
        let mut mailbox_sockets = MailboxSockets::new();
        loop {
            if dirty && retry_at.is_none() {
                dirty = false;
                match self.profile.sync().await {
                    Ok(events) => {
                        self.publish(events);
                        self.start_pending_files();
                    }
                    Err(e @ Error::RelayUnreachable(_)) => {
                        ws = None;
                        retry_at = Some(self.unreachable(&e, &relay, &mut backoff));
                    }
                    Err(e) => {
                        let reported = self.profile.take_events();
                        self.publish(reported);
                        tracing::warn!("sync failed: {e}");
                        self.live(Event::Notice {
                            conversation_id: None,
                            conversation: None,
                            notice: crate::Notice::SyncFailed {
                                error: crate::Problem::from(&e),
                            },
                        });
                    }
                }
            }
            // A push for one conversation: read just that log (the 5 s poll and mailbox
            // pushes still run the full sync).
            if !dirty && retry_at.is_none() && !groups.is_empty() {
                for g in std::mem::take(&mut groups) {
                    let entries = pushed.remove(&g).unwrap_or_default();
                    match self.profile.sync_conversation(&g, entries).await {
                        Ok(events) => self.publish(events),
                        Err(e @ Error::RelayUnreachable(_)) => {
                            ws = None;
                            retry_at = Some(self.unreachable(&e, &relay, &mut backoff));
                            break;
                        }
                        // Anything else (a lost token, a fork): the full sync handles it.
                        Err(_) => {
                            let reported = self.profile.take_events();
                            self.publish(reported);
                            dirty = true;
                        }
                    }
                }
            }
            if dirty {
                // A full sync reads every log anyway.
                groups.clear();
                pushed.clear();
            }
            if ws.is_none() && retry_at.is_none() {
                let identity = self.profile.mailbox_identity();
                let url = self.profile.relay.ws_url();
                let tls = self.profile.relay.tls_config();
                match self
                    .profile
                    .net
                    .connect_ws(&url, identity.as_deref(), tls)
                    .await
                {
                    Ok(socket) => {
                        ws = Some(socket);
                        challenge = None;
                        subscribed.clear();
                        backoff = new_backoff();
                        self.connected = true;
                        self.live(Event::Relay {
                            relay: relay.clone(),
                            state: RelayState::Up,
                            retry_in_ms: None,
                        });
                        // Whatever arrived while we were away.
                        dirty = true;
                    }
                    Err(_) => {
                        self.profile.relay.rotate();
                        retry_at = Some(self.retry(&relay, &mut backoff));
                    }
                }
            }
            // Group subscriptions only after the relay's hello (the mailbox goes first).
            if let (Some(socket), Some(_)) = (ws.as_mut(), challenge)
                && let Err(e) = self.update_subscriptions(socket, &mut subscribed).await
            {
                tracing::debug!("subscribe: {e}");
                ws = None;
                self.profile.relay.rotate();
                retry_at = Some(self.retry(&relay, &mut backoff));
            }
            // What the relay pushes to us as it is appended: sends there need not read first.
            // (Rebuilt only when the subscriptions changed: this runs after every event.)
            let live = &mut self.profile.live_logs;
            if ws.is_none() || challenge.is_none() {
                live.clear();
            } else if live.len() != subscribed.len() || !subscribed.keys().all(|k| live.contains(k))
            {
                *live = subscribed.keys().copied().collect();
            }
            if self.profile.net.isolate
                && let Err(e) = conv_sockets.update(&self.profile)
            {
                tracing::debug!("conversation sockets: {e}");
            }
            // Our mailboxes on other relays push too (a move notice while the primary is
            // blocked must not wait for the backoff).
            mailbox_sockets.update(&self.profile);
            // A conversation whose relay is down moves when `move_after` is up: sync then.
            let move_at = self.profile.next_move_due().map(|ms| {
                tokio::time::Instant::now()
                    + Duration::from_millis(ms.saturating_sub(crate::now_millis()))
            });
            tokio::select! {
                Some(()) = mailbox_sockets.push_rx.recv() => {
                    while mailbox_sockets.push_rx.try_recv().is_ok() {}
                    retry_at = None;
                    dirty = true;
                }
                _ = sleep_until(move_at) => {
                    retry_at = None;
                    dirty = true;
                }
                Some(g) = conv_sockets.push_rx.recv() => {
                    groups.insert(g);
                    while let Ok(more) = conv_sockets.push_rx.try_recv() {
                        groups.insert(more);
                    }
                }
                job = self.jobs.recv() => match job {
                    Some(job) => self.run_job(job).await,
                    None => return,
                },
                _ = poll.tick() => dirty = true,
                // A device link waiting for its new device: answered within half a second.
                _ = link_poll.tick() => {
                    if self.profile.links_open().unwrap_or(false) && retry_at.is_none() {
                        match self.profile.poll_links().await {
                            Ok(events) => self.publish(events),
                            Err(e) => tracing::debug!("device link: {e}"),
                        }
                    }
                }
                _ = sleep_until(retry_at) => {
                    retry_at = None;
                    dirty = true;
                }
                msg = next_frame(&mut ws) => {
                    match msg {
                        Some(Ok(Message::Text(text))) => {
                            match self.on_frame(text.as_str(), ws.as_mut()).await {
                                Ok(Frame::Hello(ch)) => challenge = Some(ch),
                                Ok(Frame::Group(g)) => {
                                    groups.insert(g);
                                }
                                Ok(Frame::Other) => dirty = true,
                                Ok(Frame::Quiet) => {}
                                Err(()) => {
                                    ws = None;
                                    retry_at = Some(self.retry(&relay, &mut backoff));
                                }
                            }
                            // Coalesce a burst of notifications into one sync per group.
                            while let Some(Some(Ok(more))) =
                                ws.as_mut().and_then(|s| s.next().now_or_never())
                            {
                                let group = match &more {
                                    Message::Text(t) => group_of(t.as_str()),
                                    Message::Binary(b) => keep_pushed(&mut pushed, b),
                                    _ => continue,
                                };
                                match group {
                                    Some(g) => {
                                        groups.insert(g);
                                    }
                                    None => dirty = true,
                                }
                            }
                        }
                        Some(Ok(Message::Binary(b))) => match keep_pushed(&mut pushed, &b) {
                            Some(g) => {
                                groups.insert(g);
                            }
                            None => dirty = true,
                        },
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => {
                            ws = None;
                            self.profile.relay.rotate();
                            retry_at = Some(self.retry(&relay, &mut backoff));
                        }
                    }
                }
            }
        }
    }

    /// A sync could not reach the relay: publish what it did before that, report the
    /// connection down, and say when the next attempt is.
    fn unreachable(
        &mut self,
        e: &Error,
        relay: &str,
        backoff: &mut backon::ExponentialBackoff,
    ) -> tokio::time::Instant {
        let reported = self.profile.take_events();
        self.publish(reported);
        tracing::debug!("sync: {e}");
        self.retry(relay, backoff)
    }

    /// Report the connection down and say when the next attempt is.
    fn retry(
        &mut self,
        relay: &str,
        backoff: &mut backon::ExponentialBackoff,
    ) -> tokio::time::Instant {
        let delay = backoff.next().unwrap_or(Duration::from_secs(10));
        if std::mem::take(&mut self.connected) {
            self.live(Event::Relay {
                relay: relay.to_string(),
                state: RelayState::Down,
                retry_in_ms: None,
            });
        }
        self.live(Event::Relay {
            relay: relay.to_string(),
            state: RelayState::Retrying,
            retry_in_ms: Some(delay.as_millis() as u64),
        });
        tokio::time::Instant::now() + delay
    }

    /// Handle one server frame: the hello (answered with our mailbox subscription, returning
    /// the challenge), a push for one conversation, another notification (a full sync), or
    /// a failure to answer (`Err`).
    async fn on_frame(&self, text: &str, ws: Option<&mut Ws>) -> std::result::Result<Frame, ()> {
        match serde_json::from_str::<ServerFrame>(text) {
            Ok(ServerFrame::Hello {
                challenge,
                features,
                ..
            }) => {
                let p = &self.profile;
                let sig = p
                    .mailbox_key
                    .sign(&samizdat_proto::ws_signing_payload(&challenge, &p.mailbox));
                let frame = ClientFrame::SubscribeMailbox {
                    mailbox_id: p.mailbox,
                    after: 0,
                    signature: Bytes(sig),
                };
                let text = serde_json::to_string(&frame).map_err(|_| ())?;
                let Some(s) = ws else { return Err(()) };
                ask_binary_entries(s, &features).await.map_err(|_| ())?;
                s.send(Message::Text(text.into())).await.map_err(|_| ())?;
                Ok(Frame::Hello(challenge))
            }
            Ok(ServerFrame::Entry { group_id, .. } | ServerFrame::EpochClosed { group_id, .. }) => {
                Ok(Frame::Group(group_id))
            }
            Ok(ServerFrame::Error { code, message, .. }) => {
                self.live(Event::Notice {
                    conversation_id: None,
                    conversation: None,
                    notice: crate::Notice::RelayError {
                        code: code.to_string(),
                        detail: message,
                    },
                });
                Ok(Frame::Other)
            }
            // A confirmed subscription used to start a full sync: one read of every log after
            // each message (the cursor moves, so the subscription is renewed).
            Ok(ServerFrame::Subscribed { .. } | ServerFrame::Pong { .. }) => Ok(Frame::Quiet),
            Ok(_) => Ok(Frame::Other),
            Err(_) => {
                self.live(Event::Notice {
                    conversation_id: None,
                    conversation: None,
                    notice: crate::Notice::RelayFrameUnreadable,
                });
                Ok(Frame::Other)
            }
        }
    }

    /// Keep group subscriptions on the home relay in line with what we have processed.
    async fn update_subscriptions(
        &self,
        ws: &mut Ws,
        subscribed: &mut HashMap<Id, (u64, u64)>,
    ) -> Result<()> {
        let p = &self.profile;
        if p.net.isolate {
            // Isolated: this connection carries the owner-signed mailbox only; no group token
            // may travel with it. Conversations are read over their own connections (the
            // poll below).
            return Ok(());
        }
        for conv in p.active_convs()? {
            if conv.relay.trim_end_matches('/') != p.relay.base() {
                continue;
            }
            if subscribed.get(&conv.log) == Some(&(conv.read_epoch, conv.cursor)) {
                continue;
            }
            let token = p.token(&conv.group_id, conv.read_epoch)?;
            let frame = ClientFrame::SubscribeGroup {
                group_id: conv.log,
                epoch: conv.read_epoch,
                token: Bytes(token),
                after: conv.cursor,
            };
            let text = serde_json::to_string(&frame).map_err(|e| Error::Protocol(e.to_string()))?;
            ws.send(Message::Text(text.into()))
                .await
                .map_err(|e| Error::RelayUnreachable(e.to_string()))?;
            subscribed.insert(conv.log, (conv.read_epoch, conv.cursor));
        }
        Ok(())
    }
}

/// What one conversation's own WebSocket subscribes (isolation): its log's relay, the
/// epoch being read with that epoch's token, and the cursor.
#[derive(Clone)]
struct ConvSub {
    ws_url: String,
    /// Pinned TLS for this relay (compared by the address, which carries the pin).
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    epoch: u64,
    token: Vec<u8>,
    after: u64,
}

impl PartialEq for ConvSub {
    fn eq(&self, o: &ConvSub) -> bool {
        (&self.ws_url, self.epoch, &self.token, self.after)
            == (&o.ws_url, o.epoch, &o.token, o.after)
    }
}

/// One WebSocket per conversation when isolating: each under the conversation's own proxy
/// identity, carrying that conversation's token only. Pushes come back as group ids.
struct ConvSockets {
    tasks: HashMap<Id, (watch::Sender<ConvSub>, tokio::task::JoinHandle<()>)>,
    push_tx: mpsc::Sender<Id>,
    push_rx: mpsc::Receiver<Id>,
}

impl ConvSockets {
    fn new() -> ConvSockets {
        let (push_tx, push_rx) = mpsc::channel(1024);
        ConvSockets {
            tasks: HashMap::new(),
            push_tx,
            push_rx,
        }
    }

    /// Start, update or stop the sockets so they match the active conversations.
    fn update(&mut self, p: &Profile) -> Result<()> {
        let mut wanted = std::collections::HashSet::new();
        for conv in p.active_convs()? {
            // Keyed by the log: a move starts a socket for the new log and ends the old one.
            wanted.insert(conv.log);
            let client = p.conv_relay(&conv)?;
            let sub = ConvSub {
                ws_url: client.ws_url(),
                tls: client.tls_config(),
                epoch: conv.read_epoch,
                token: p.token(&conv.group_id, conv.read_epoch)?,
                after: conv.cursor,
            };
            match self.tasks.get(&conv.log) {
                Some((tx, task)) if !task.is_finished() => {
                    tx.send_if_modified(|cur| {
                        let changed = *cur != sub;
                        if changed {
                            *cur = sub;
                        }
                        changed
                    });
                }
                _ => {
                    let (tx, rx) = watch::channel(sub);
                    let task = tokio::spawn(conv_socket(
                        p.net.clone(),
                        p.conv_identity(&conv.group_id),
                        conv.log,
                        rx,
                        self.push_tx.clone(),
                    ));
                    self.tasks.insert(conv.log, (tx, task));
                }
            }
        }
        self.tasks.retain(|g, (_, task)| {
            let keep = wanted.contains(g);
            if !keep {
                task.abort();
            }
            keep
        });
        Ok(())
    }
}

impl Drop for ConvSockets {
    fn drop(&mut self) {
        for (_, (_, task)) in self.tasks.drain() {
            task.abort();
        }
    }
}

/// Keep one conversation's WebSocket open (reconnecting with backoff), subscribed to what
/// `sub` says; report each push for the conversation on `push`.
async fn conv_socket(
    net: crate::net::Net,
    identity: Option<String>,
    group: Id,
    mut sub: watch::Receiver<ConvSub>,
    push: mpsc::Sender<Id>,
) {
    let mut backoff = new_backoff();
    loop {
        let (url, tls) = {
            let s = sub.borrow();
            (s.ws_url.clone(), s.tls.clone())
        };
        if let Ok(mut ws) = net.connect_ws(&url, identity.as_deref(), tls).await {
            backoff = new_backoff();
            let mut ready = false;
            loop {
                let frame = tokio::select! {
                    msg = ws.next() => msg,
                    changed = sub.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        let current = sub.borrow().clone();
                        if ready && subscribe_group(&mut ws, group, &current).await.is_err() {
                            break;
                        }
                        continue;
                    }
                };
                let text = match frame {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Binary(b))) => {
                        // A pushed entry: the service reads the log.
                        if group_of_binary(&b).is_some() && push.send(group).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    Some(Ok(_)) => continue,
                    _ => break,
                };
                match serde_json::from_str::<ServerFrame>(text.as_str()) {
                    Ok(ServerFrame::Hello { features, .. }) => {
                        ready = true;
                        if ask_binary_entries(&mut ws, &features).await.is_err() {
                            break;
                        }
                        let current = sub.borrow().clone();
                        if subscribe_group(&mut ws, group, &current).await.is_err() {
                            break;
                        }
                        // Whatever arrived while this socket was away.
                        let _ = push.send(group).await;
                    }
                    // The service is gone: so is this socket.
                    Ok(ServerFrame::Entry { .. } | ServerFrame::EpochClosed { .. })
                        if push.send(group).await.is_err() =>
                    {
                        return;
                    }
                    _ => {}
                }
            }
        }
        tokio::time::sleep(backoff.next().unwrap_or(Duration::from_secs(10))).await;
    }
}

async fn subscribe_group(ws: &mut Ws, group: Id, sub: &ConvSub) -> Result<()> {
    let frame = ClientFrame::SubscribeGroup {
        group_id: group,
        epoch: sub.epoch,
        token: Bytes(sub.token.clone()),
        after: sub.after,
    };
    let text = serde_json::to_string(&frame).map_err(|e| Error::Protocol(e.to_string()))?;
    ws.send(Message::Text(text.into()))
        .await
        .map_err(|e| Error::RelayUnreachable(e.to_string()))
}

/// One WebSocket per mailbox on our other relays (the primary's is the service's own),
/// reporting pushes so the service syncs at once.
struct MailboxSockets {
    tasks: HashMap<String, tokio::task::JoinHandle<()>>,
    push_tx: mpsc::Sender<()>,
    push_rx: mpsc::Receiver<()>,
}

impl MailboxSockets {
    fn new() -> MailboxSockets {
        let (push_tx, push_rx) = mpsc::channel(64);
        MailboxSockets {
            tasks: HashMap::new(),
            push_tx,
            push_rx,
        }
    }

    fn update(&mut self, p: &Profile) {
        let mut wanted = std::collections::HashSet::new();
        for m in &p.others {
            let relay = m.relay.base().to_string();
            wanted.insert(relay.clone());
            if self.tasks.get(&relay).is_some_and(|t| !t.is_finished()) {
                continue;
            }
            let identity = crate::profile::isolation_identity(
                &p.net,
                &p.isolation_salt,
                format!("mailbox:{relay}").as_bytes(),
            );
            let task = tokio::spawn(mailbox_socket(
                p.net.clone(),
                identity,
                m.relay.ws_url(),
                m.relay.tls_config(),
                m.id,
                m.key.clone(),
                self.push_tx.clone(),
            ));
            self.tasks.insert(relay, task);
        }
        self.tasks.retain(|r, task| {
            let keep = wanted.contains(r);
            if !keep {
                task.abort();
            }
            keep
        });
    }
}

impl Drop for MailboxSockets {
    fn drop(&mut self) {
        for (_, task) in self.tasks.drain() {
            task.abort();
        }
    }
}

/// Keep one mailbox's WebSocket open (reconnecting with backoff); report each push.
async fn mailbox_socket(
    net: crate::net::Net,
    identity: Option<String>,
    url: String,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    mailbox: Id,
    key: std::sync::Arc<crate::relay_client::MailboxKey>,
    push: mpsc::Sender<()>,
) {
    let mut backoff = new_backoff();
    loop {
        if let Ok(mut ws) = net.connect_ws(&url, identity.as_deref(), tls.clone()).await {
            backoff = new_backoff();
            while let Some(Ok(frame)) = ws.next().await {
                let Message::Text(text) = frame else { continue };
                match serde_json::from_str::<ServerFrame>(text.as_str()) {
                    Ok(ServerFrame::Hello { challenge, .. }) => {
                        let sig =
                            key.sign(&samizdat_proto::ws_signing_payload(&challenge, &mailbox));
                        let frame = ClientFrame::SubscribeMailbox {
                            mailbox_id: mailbox,
                            after: 0,
                            signature: Bytes(sig),
                        };
                        let Ok(text) = serde_json::to_string(&frame) else {
                            return;
                        };
                        if ws.send(Message::Text(text.into())).await.is_err() {
                            break;
                        }
                    }
                    Ok(ServerFrame::MailboxMessage { .. }) if push.send(()).await.is_err() => {
                        return;
                    }
                    _ => {}
                }
            }
        }
        tokio::time::sleep(backoff.next().unwrap_or(Duration::from_secs(10))).await;
    }
}

/// What a server frame asks of the service.
enum Frame {
    Hello(Id),
    /// New entries in one conversation's log.
    Group(Id),
    /// Nothing to read: a subscription confirmed (the relay pushes what follows its cursor),
    /// a pong.
    Quiet,
    /// Anything else: the mailbox, an error.
    Other,
}

/// The conversation a pushed frame is about, if it is about one.
fn group_of(text: &str) -> Option<Id> {
    match serde_json::from_str::<ServerFrame>(text) {
        Ok(ServerFrame::Entry { group_id, .. } | ServerFrame::EpochClosed { group_id, .. }) => {
            Some(group_id)
        }
        _ => None,
    }
}

/// The conversation a pushed binary entry is about (`None`: not an entry frame). Only the
/// header is read (a conversation's own socket only says which log moved).
fn group_of_binary(b: &[u8]) -> Option<Id> {
    samizdat_proto::BinaryEntry::group_of(b)
}

/// Pushed entries kept per log until the service applies them; past this the log is read.
const PUSHED_MAX: usize = 64;

/// Keep a pushed binary entry for [`Profile::sync_conversation`] and say which log it is
/// for (`None`: not an entry frame). A log with too many waiting entries drops them: a gap
/// makes the sync read the log instead.
fn keep_pushed(pushed: &mut HashMap<Id, Vec<samizdat_proto::Entry>>, b: &[u8]) -> Option<Id> {
    let Ok(e) = samizdat_proto::BinaryEntry::decode(b) else {
        return group_of_binary(b);
    };
    let waiting = pushed.entry(e.group_id).or_default();
    if waiting.len() >= PUSHED_MAX {
        waiting.clear();
    }
    waiting.push(samizdat_proto::Entry {
        seq: e.seq,
        epoch: e.epoch,
        kind: e.kind,
        body: Bytes(e.body),
    });
    Some(e.group_id)
}

/// Ask a relay that offers it (its `hello` lists the feature) to push entries as binary
/// frames: no base64 and no JSON for the relay to encode or for us to parse.
async fn ask_binary_entries(ws: &mut Ws, features: &[String]) -> Result<()> {
    if !features
        .iter()
        .any(|f| f == samizdat_proto::FEATURE_BINARY_ENTRIES)
    {
        return Ok(());
    }
    let frame = ClientFrame::Options {
        binary_entries: true,
    };
    let text = serde_json::to_string(&frame).map_err(|e| Error::Protocol(e.to_string()))?;
    ws.send(Message::Text(text.into()))
        .await
        .map_err(|e| Error::RelayUnreachable(e.to_string()))
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn next_frame(
    ws: &mut Option<Ws>,
) -> Option<std::result::Result<Message, tokio_tungstenite::tungstenite::Error>> {
    match ws.as_mut() {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

fn new_backoff() -> backon::ExponentialBackoff {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(10))
        .with_jitter()
        .without_max_times()
        .build()
}
