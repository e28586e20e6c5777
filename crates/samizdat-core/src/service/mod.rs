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

mod sockets;
use sockets::{ConvSockets, MailboxSockets};
mod frames;
use frames::*;

/// Commands waiting for the owner; a full queue makes callers wait (backpressure).
const JOB_QUEUE: usize = 256;
/// Live events buffered per subscriber; a subscriber that falls further behind is told it
/// lagged and reads the rest from the durable log.
const EVENT_BUFFER: usize = 4096;
/// The poll: what no socket pushes (logs on other relays, the mailbox, channels read from
/// elsewhere) is read this often; the rest every `FULL_POLL_EVERY` polls.
const POLL: Duration = Duration::from_secs(5);
/// How often a running service reads the mailbox of an open device link.
const LINK_POLL: Duration = Duration::from_millis(500);
/// Every this many polls, the poll reads every log, the ones the sockets push included (a
/// safety net: a subscription the relay refused, a push lost on the way); the other polls
/// leave those logs to their pushes, so an idle service makes no request for them.
const FULL_POLL_EVERY: u64 = 60;

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
    /// Becomes true when the service has stopped (wiped, or every handle gone).
    stopped: watch::Receiver<bool>,
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
        let (stopped_tx, stopped_rx) = watch::channel(false);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Storage(format!("cannot start the service runtime: {e}")))?;
        let weak = WeakHandle {
            jobs: jobs_tx.downgrade(),
            events: events_tx.clone(),
            last_seq: seq_rx.clone(),
            stopped: stopped_rx.clone(),
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
                let wipe = rt.block_on(service.run(mode));
                drop(rt);
                // The profile is closed (the service and its runtime are gone): its files go
                // now, and the caller of `wipe` hears how that went.
                if let Some((home, answer)) = wipe {
                    let _ = answer.send(crate::wipe::wipe(&home));
                }
                let _ = stopped_tx.send(true);
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
            stopped: stopped_rx,
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
        self.submit(job).await?;
        rx.await
            .map_err(|_| Error::Stopped("the client service stopped during the call".into()))?
    }

    /// Queue a job for the service (waiting while the queue is full).
    async fn submit(&self, job: Job) -> Result<()> {
        self.jobs
            .send(job)
            .await
            .map_err(|_| Error::Stopped("the client service has stopped".into()))
    }

    /// Stop the service and delete the profile — every file in its home, as
    /// [`crate::wipe::wipe`] does. The owner wipes what it holds, so no other process opens
    /// or deletes the profile beside it. Returns once the files are gone; calls on any handle
    /// fail with [`Error::Stopped`] after.
    pub async fn wipe(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |p| {
            async move {
                p.wipe_on_stop = Some(tx);
            }
            .boxed_local()
        });
        self.submit(job).await?;
        rx.await
            .map_err(|_| Error::Stopped("the client service stopped before wiping".into()))?
    }

    /// Resolves once the service has stopped (after [`ClientHandle::wipe`], say).
    pub async fn stopped(&self) {
        let mut stopped = self.stopped.clone();
        let _ = stopped.wait_for(|s| *s).await;
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
    stopped: watch::Receiver<bool>,
}

impl WeakHandle {
    fn upgrade(&self) -> Option<ClientHandle> {
        Some(ClientHandle {
            jobs: self.jobs.upgrade()?,
            events: self.events.clone(),
            last_seq: self.last_seq.clone(),
            stopped: self.stopped.clone(),
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

type Ws = crate::relay_client::SharedWs;

/// A wipe asked of the service: the profile's home, and where to say how it went.
type Wipe = (std::path::PathBuf, oneshot::Sender<Result<()>>);

/// The home relay's connection as the realtime loop holds it.
struct Link {
    relay: String,
    backoff: backon::ExponentialBackoff,
    /// When to try again after a failure (nothing is tried before).
    retry_at: Option<tokio::time::Instant>,
    ws: Option<Ws>,
    /// The relay's hello arrived (group subscriptions wait for it).
    challenge: Option<Id>,
    /// What the socket is subscribed to, by log: (epoch, cursor).
    subscribed: HashMap<Id, (u64, u64)>,
    /// A full sync is due.
    dirty: bool,
    /// Logs that pushed since the last read.
    groups: std::collections::HashSet<Id>,
    /// Entries pushed on the home socket, by log, applied as they are when they follow the
    /// cursor (bounded: past `PUSHED_MAX` per log the log is read instead).
    pushed: HashMap<Id, Vec<samizdat_proto::Entry>>,
    /// Channel records pushed on the home socket, in order (bounded: past `PUSHED_MAX` the
    /// channels are read instead, by the full sync).
    channel_pushed: Vec<(Id, u64, Vec<u8>)>,
    /// The full sync due was asked for by the poll alone.
    poll_tick: bool,
}

impl Link {
    fn new(relay: String) -> Link {
        Link {
            relay,
            backoff: new_backoff(),
            retry_at: None,
            ws: None,
            challenge: None,
            subscribed: HashMap::new(),
            dirty: true,
            groups: std::collections::HashSet::new(),
            pushed: HashMap::new(),
            channel_pushed: Vec::new(),
            poll_tick: false,
        }
    }
}

impl Service {
    /// Broadcast what the last step logged, read from the log itself: each event goes out
    /// once and in order, and the log is the only way events travel (live-only ones, the
    /// relay's state, come from the service itself: `live`).
    fn publish(&mut self) {
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
        // A page that showed messages of others may owe read receipts.
        if self.profile.wipe_on_stop.is_none() {
            self.profile.send_receipts_quietly().await;
        }
        self.publish();
    }

    /// Serve jobs (and, in realtime mode, the relays) until every handle is gone or a job
    /// asked for a wipe: then the profile's home and where to answer, for the thread to wipe
    /// once the profile is closed.
    async fn run(mut self, mode: Mode) -> Option<Wipe> {
        if mode == Mode::OnDemand {
            while let Some(job) = self.jobs.recv().await {
                self.run_job(job).await;
                if self.profile.wipe_on_stop.is_some() {
                    break;
                }
            }
            return self.wipe_request();
        }
        let mut l = Link::new(self.profile.relay.base().to_string());
        let mut poll = tokio::time::interval(POLL);
        let mut link_poll = tokio::time::interval(LINK_POLL);
        let mut conv_sockets = ConvSockets::new();
        let mut mailbox_sockets = MailboxSockets::new();
        let mut polls = 0u64;
        loop {
            if l.dirty && l.retry_at.is_none() {
                l.dirty = false;
                // Due only to the poll: the logs the sockets push are not read again.
                self.profile.poll_only =
                    std::mem::take(&mut l.poll_tick) && !polls.is_multiple_of(FULL_POLL_EVERY);
                self.full_sync(&mut l).await;
                self.profile.poll_only = false;
            }
            // A push for one conversation: read just that log (the 5 s poll and mailbox
            // pushes still run the full sync).
            if !l.dirty && l.retry_at.is_none() && !l.groups.is_empty() {
                self.sync_pushed(&mut l).await;
            }
            if !l.channel_pushed.is_empty() {
                self.take_channel_pushes(&mut l).await;
            }
            if l.dirty {
                // A full sync reads every log anyway.
                l.groups.clear();
                l.pushed.clear();
            }
            if l.ws.is_none() && l.retry_at.is_none() {
                self.connect(&mut l).await;
            }
            // Group subscriptions only after the relay's hello (the mailbox goes first).
            if let (Some(socket), Some(_)) = (l.ws.as_mut(), l.challenge)
                && let Err(e) = self.update_subscriptions(socket, &mut l.subscribed).await
            {
                tracing::debug!("subscribe: {e}");
                l.ws = None;
                self.profile.relay.rotate();
                l.retry_at = Some(self.retry(&l.relay, &mut l.backoff));
            }
            if self.profile.net.isolate
                && let Err(e) = conv_sockets.update(&self.profile)
            {
                tracing::debug!("conversation sockets: {e}");
            }
            self.follow_live_logs(&l, &conv_sockets);
            // Our mailboxes on other relays push too (a move notice while the primary is
            // blocked must not wait for the backoff).
            mailbox_sockets.update(&self.profile);
            // A conversation whose relay is down moves when `move_after` is up: sync then.
            let move_at = self.profile.next_move_due().map(|ms| {
                tokio::time::Instant::now()
                    + Duration::from_millis(ms.saturating_sub(crate::now_millis()))
            });
            // A device link waiting for its new device is polled; none open, no timer runs.
            let links_open = self.profile.links_open().unwrap_or(false);
            tokio::select! {
                Some(()) = mailbox_sockets.push_rx.recv() => {
                    while mailbox_sockets.push_rx.try_recv().is_ok() {}
                    l.retry_at = None;
                    l.dirty = true;
                    l.poll_tick = false;
                }
                _ = sleep_until(move_at) => {
                    l.retry_at = None;
                    l.dirty = true;
                }
                Some(first) = conv_sockets.push_rx.recv() => {
                    let mut next = Some(first);
                    while let Some(p) = next {
                        l.groups.insert(p.log);
                        if let Some(entry) = p.entry {
                            keep_entry(&mut l.pushed, p.log, entry);
                        }
                        next = conv_sockets.push_rx.try_recv().ok();
                    }
                }
                job = self.jobs.recv() => match job {
                    Some(job) => {
                        self.run_job(job).await;
                        if self.profile.wipe_on_stop.is_some() {
                            return self.wipe_request();
                        }
                    }
                    None => return None,
                },
                _ = poll.tick() => {
                    polls += 1;
                    if !l.dirty {
                        l.poll_tick = true;
                    }
                    l.dirty = true;
                }
                // A device link waiting for its new device: answered within half a second.
                _ = link_poll.tick(), if links_open => {
                    if l.retry_at.is_none() {
                        match self.profile.poll_links().await {
                            Ok(()) => self.publish(),
                            Err(e) => tracing::debug!("device link: {e}"),
                        }
                    }
                }
                _ = sleep_until(l.retry_at) => {
                    l.retry_at = None;
                    l.dirty = true;
                }
                msg = next_frame(&mut l.ws) => self.on_message(&mut l, msg).await,
            }
        }
    }

    /// The wipe a job asked for, if one did.
    fn wipe_request(&mut self) -> Option<Wipe> {
        let answer = self.profile.wipe_on_stop.take()?;
        Some((self.profile.home.clone(), answer))
    }

    /// Sync everything; a relay that cannot be reached drops the socket and backs off.
    async fn full_sync(&mut self, l: &mut Link) {
        match self.profile.sync_quietly().await {
            Ok(()) => {
                self.publish();
                self.start_pending_files();
            }
            Err(e @ Error::RelayUnreachable(_)) => {
                l.ws = None;
                l.retry_at = Some(self.unreachable(&e, &l.relay, &mut l.backoff));
            }
            Err(e) => {
                self.publish();
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

    /// Read the logs that pushed, starting from what they pushed.
    async fn sync_pushed(&mut self, l: &mut Link) {
        for g in std::mem::take(&mut l.groups) {
            let entries = l.pushed.remove(&g).unwrap_or_default();
            match self.profile.sync_conversation(&g, entries).await {
                Ok(()) => self.publish(),
                Err(e @ Error::RelayUnreachable(_)) => {
                    l.ws = None;
                    l.retry_at = Some(self.unreachable(&e, &l.relay, &mut l.backoff));
                    break;
                }
                // Anything else (a lost token, a fork): the full sync handles it.
                Err(_) => {
                    self.publish();
                    l.dirty = true;
                }
            }
        }
    }

    /// Take the channel records the home relay pushed, in order.
    async fn take_channel_pushes(&mut self, l: &mut Link) {
        for (id, seq, record) in std::mem::take(&mut l.channel_pushed) {
            let id = crate::ChannelId::from_id(id);
            if let Err(e) = self.profile.channel_take_pushed(&id, seq, &record).await {
                tracing::debug!(channel = %id.short(), "a pushed channel record: {e}");
            }
        }
        self.publish();
    }

    /// Open the home relay's socket (through the proxy, with the mailbox's identity).
    async fn connect(&mut self, l: &mut Link) {
        // One socket for the mailbox, the subscriptions and the appends — except when
        // isolating: then it carries the mailbox only (under its own identity), and each
        // conversation's socket carries that conversation's subscription and appends.
        let appends = !self.profile.net.isolate;
        match self.profile.relay.open_shared(appends).await {
            Ok(socket) => {
                l.ws = Some(socket);
                l.challenge = None;
                l.subscribed.clear();
                l.backoff = new_backoff();
                self.connected = true;
                self.live(Event::Relay {
                    relay: l.relay.clone(),
                    state: RelayState::Up,
                    retry_in_ms: None,
                });
                // Whatever arrived while we were away.
                l.dirty = true;
            }
            Err(_) => {
                self.profile.relay.rotate();
                l.retry_at = Some(self.retry(&l.relay, &mut l.backoff));
            }
        }
    }

    /// What the relay pushes to us as it is appended: sends there need not read first.
    /// (Rebuilt only when the subscriptions changed: this runs after every event.)
    fn follow_live_logs(&mut self, l: &Link, conv_sockets: &ConvSockets) {
        // The home socket's subscriptions, and (isolating) each conversation's own socket.
        let mut now = conv_sockets.live_logs();
        let home_live = l.ws.is_some() && l.challenge.is_some();
        if home_live {
            now.extend(l.subscribed.keys().copied());
        }
        // The mailbox is subscribed on the home socket with the same challenge.
        self.profile.mailbox_live = home_live;
        if self.profile.live_logs != now {
            self.profile.live_logs = now;
        }
    }

    /// A message on the home socket: a frame to answer, entries pushed (kept to apply), or
    /// the socket gone. A burst of notifications is coalesced into one sync per group.
    async fn on_message(
        &mut self,
        l: &mut Link,
        msg: Option<std::result::Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ) {
        match msg {
            Some(Ok(Message::Text(text))) => {
                match self.on_frame(text.as_str(), l.ws.as_mut()).await {
                    Ok(Frame::Hello(ch)) => l.challenge = Some(ch),
                    Ok(Frame::Group(g)) => {
                        l.groups.insert(g);
                    }
                    Ok(Frame::Channel(id, seq, record)) => {
                        if l.channel_pushed.len() < PUSHED_MAX {
                            l.channel_pushed.push((id, seq, record));
                        } else {
                            l.dirty = true;
                        }
                    }
                    Ok(Frame::Other) => l.dirty = true,
                    Ok(Frame::Quiet) => {}
                    Err(()) => {
                        l.ws = None;
                        l.retry_at = Some(self.retry(&l.relay, &mut l.backoff));
                    }
                }
                while let Some(Some(Ok(more))) = l.ws.as_mut().and_then(|s| s.next().now_or_never())
                {
                    let group = match &more {
                        Message::Text(t) if t.as_str().contains("\"channel_record\"") => {
                            match serde_json::from_str::<ServerFrame>(t.as_str()) {
                                Ok(ServerFrame::ChannelRecord {
                                    channel_id,
                                    seq,
                                    record,
                                }) if l.channel_pushed.len() < PUSHED_MAX => {
                                    l.channel_pushed.push((channel_id, seq, record.0));
                                    continue;
                                }
                                _ => None,
                            }
                        }
                        Message::Text(t) => group_of(t.as_str()),
                        Message::Binary(b) => keep_pushed(&mut l.pushed, b),
                        _ => continue,
                    };
                    match group {
                        Some(g) => {
                            l.groups.insert(g);
                        }
                        None => l.dirty = true,
                    }
                }
            }
            Some(Ok(Message::Binary(b))) => match keep_pushed(&mut l.pushed, &b) {
                Some(g) => {
                    l.groups.insert(g);
                }
                None => l.dirty = true,
            },
            Some(Ok(_)) => {}
            Some(Err(_)) | None => {
                l.ws = None;
                self.profile.relay.rotate();
                l.retry_at = Some(self.retry(&l.relay, &mut l.backoff));
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
        self.publish();
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
            Ok(ServerFrame::ChannelRecord {
                channel_id,
                seq,
                record,
            }) => Ok(Frame::Channel(channel_id, seq, record.0)),
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
            // Subscribed for this epoch: the relay pushes every later entry, so a cursor that
            // moved (by those pushes, or by a read) needs no new subscription — one per
            // message would make the relay re-read the log for each.
            if subscribed
                .get(&conv.log)
                .is_some_and(|(epoch, _)| *epoch == conv.read_epoch)
            {
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
        // Channels read from this relay: pushed as they are stored (a reader proves nothing).
        for (channel, after) in p.channels_on_home()? {
            if subscribed.contains_key(&channel) {
                continue;
            }
            let frame = ClientFrame::SubscribeChannel {
                channel_id: channel,
                after,
            };
            let text = serde_json::to_string(&frame).map_err(|e| Error::Protocol(e.to_string()))?;
            ws.send(Message::Text(text.into()))
                .await
                .map_err(|e| Error::RelayUnreachable(e.to_string()))?;
            subscribed.insert(channel, (u64::MAX, after));
        }
        Ok(())
    }
}
