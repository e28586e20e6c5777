//! `samizdat app`: the messenger as a local web app. An HTTP server on loopback serves
//! server-rendered pages (maud, Fluent strings) and a small script for live updates (SSE).
//! It holds no messenger logic: every action is a JSON-RPC method of the client service —
//! in this process (the app owns the profile) or in a running `samizdat serve` (the app
//! talks to its socket) — and live updates are the service's event stream.

mod calls;
mod channels;
mod files;
mod pages;
mod security;
mod web;

use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, anyhow};
use samizdat_core::lock::ProfileLock;
use samizdat_core::{ClientHandle, LiveEvent, Mode, Profile, RelayState};
use samizdat_rpc::{self as rpc, Api, RpcError, codes};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::{RwLock, broadcast};

use crate::client::{RemoteClient, SocketServer, connect, serve_socket};

/// Where the app's actions go.
enum Core {
    /// This process owns the profile (and serves its socket for the CLI meanwhile).
    Local {
        handle: ClientHandle,
        _socket: SocketServer,
        _lock: ProfileLock,
    },
    /// A `samizdat serve` owns it: every call is a request on its socket.
    Remote,
}

/// What the app can show: onboarding, the unlock page, or the messenger.
enum Phase {
    NoProfile,
    Locked,
    Ready(Core),
}

/// An error from the service, with the core's kind (`data.kind`) for a translated message.
#[derive(Debug, Clone)]
pub struct CallError {
    pub kind: Option<String>,
    pub message: String,
}

/// The service's typed error as the app shows it (its kind as a string: the app adds `locked`
/// and `stopped` of its own).
impl From<RpcError> for CallError {
    fn from(e: RpcError) -> CallError {
        CallError {
            kind: e
                .data
                .as_ref()
                .and_then(|d| d.get("kind"))
                .and_then(Value::as_str)
                .map(String::from),
            message: e.message,
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

pub struct App {
    home: PathBuf,
    default_relay: String,
    phase: RwLock<Phase>,
    /// Every event of the service, for the pages' live streams.
    events: broadcast::Sender<LiveEvent>,
    /// The home relay's last known connection state (and the retry delay).
    relay: Mutex<Option<(RelayState, Option<u64>)>>,
    pub(crate) i18n: crate::i18n::I18n,
    pub(crate) guard: security::Guard,
    /// Told when the person quits from the page.
    pub(crate) quit: tokio::sync::Notify,
    /// This device linking itself to an existing profile (onboarding), while it waits.
    linking: Arc<Mutex<Option<Linking>>>,
    /// What notifications may show (the profile's setting, read once and kept in step).
    notify: Mutex<Option<samizdat_core::NotifyLevel>>,
}

/// The onboarding link's progress: the link and code once shown, or why it failed.
#[derive(Debug, Clone, Default)]
pub(crate) struct Linking {
    pub link: Option<(String, String)>,
    pub error: Option<CallError>,
}

/// Options of `samizdat app`.
pub struct Options {
    pub home: PathBuf,
    pub listen: SocketAddr,
    pub open: bool,
    pub default_relay: String,
    /// A browser session unused this long ends.
    pub session_idle: std::time::Duration,
}

/// Connections the app's server keeps open at once (a browser opens six or so per host,
/// plus one live-updates stream per tab).
const MAX_CONNECTIONS: usize = 64;
/// A request's headers must arrive within this.
const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub async fn run(o: Options) -> Result<()> {
    if !o.listen.ip().is_loopback() {
        return Err(anyhow!(
            "the app listens on loopback only (127.0.0.1 or [::1]); got {}",
            o.listen
        ));
    }
    let (listener, host) = bind_stable(&o.home, o.listen).await?;
    let addr = listener.local_addr()?;
    // Scratch files a crash or a SIGKILL left behind (plaintext of a file being sent) go
    // before anything else (security review 3, L9).
    let _ = samizdat_core::wipe::wipe(&o.home.join("tmp"));
    let (events, _) = broadcast::channel(4096);
    let app = Arc::new(App {
        home: o.home.clone(),
        default_relay: o.default_relay,
        phase: RwLock::new(Phase::NoProfile),
        events,
        relay: Mutex::new(None),
        i18n: crate::i18n::I18n::new(),
        guard: security::Guard::new(&host, addr.port())
            .with_idle(o.session_idle)
            .kept_in(o.home.join(SESSIONS_FILE)),
        quit: tokio::sync::Notify::new(),
        linking: Arc::new(Mutex::new(None)),
        notify: Mutex::new(None),
    });
    app.start().await?;
    let token = app.guard.launch_token();
    let url = format!("http://{host}:{}/login?token={token}", addr.port());
    if o.open {
        open_browser(&o.home, &url);
    }
    eprintln!("Samizdat app for {} (Ctrl-C to stop)", o.home.display());
    // The launch URL is the last stdout line (scripts read it).
    println!("{url}");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let router = web::router(app.clone());
    // Bounded like the relay (security review 3, L9): a local program cannot hold the app's
    // server with half-sent requests or thousands of idle connections.
    let (_stop, stopping) = tokio::sync::watch::channel(false);
    let server = samizdat_relay::serve_bounded(
        listener,
        router,
        MAX_CONNECTIONS,
        MAX_CONNECTIONS,
        HEADER_TIMEOUT,
        stopping,
    );
    tokio::select! {
        r = server => r.context("the app's HTTP server stopped")?,
        _ = crate::cli::stop_signal() => {}
        _ = app.quit.notified() => {}
    }
    // Stop the service (and release the profile) before the process ends.
    *app.phase.write().await = Phase::NoProfile;
    Ok(())
}

/// The file in the profile directory that keeps the app's browser sessions between runs
/// (hashed; see `security::Guard::kept_in`).
const SESSIONS_FILE: &str = "app-sessions";

/// The file in the profile directory that keeps the app's origin (host and port) between
/// runs.
const ORIGIN_FILE: &str = "app-origin";

/// A host name of its own for this profile's app: 128 random bits under `.localhost`, which
/// browsers resolve to loopback themselves. Cookies are kept per host, not per port, so a
/// session cookie on `127.0.0.1` would also be sent to any other local server on `127.0.0.1`
/// (another account's, say); one on this host goes nowhere else (security review 3, M5).
fn random_host() -> String {
    let mut b = [0u8; 16];
    let _ = aws_lc_rs::rand::fill(&mut b);
    format!("{}.localhost", hex::encode(b))
}

/// Listen where this profile's app listened last time (asked for port 0 and that port is
/// free), else where asked; and keep the origin (host and port). A stable origin keeps
/// whatever a browser holds for the app in one place, where `Clear-Site-Data` reaches it,
/// instead of one origin per run left behind (security review 3, H3).
async fn bind_stable(home: &Path, listen: SocketAddr) -> Result<(tokio::net::TcpListener, String)> {
    let kept = std::fs::read_to_string(home.join(ORIGIN_FILE)).ok();
    let (host, port) = match kept.as_deref().and_then(|o| o.trim().split_once(' ')) {
        Some((h, p)) if h.ends_with(".localhost") && h.len() == 42 => {
            (h.to_string(), p.parse::<u16>().ok().filter(|p| *p != 0))
        }
        _ => (random_host(), None),
    };
    let listener = match port.filter(|_| listen.port() == 0) {
        Some(port) => match tokio::net::TcpListener::bind(SocketAddr::new(listen.ip(), port)).await
        {
            Ok(l) => l,
            Err(_) => tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?,
        },
        None => tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?,
    };
    let port = listener.local_addr()?.port();
    // The profile directory is where the profile will be (made private now if new).
    if samizdat_core::check_private_dir(home).is_ok()
        || (!home.exists()
            && std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(home)
                .is_ok())
    {
        let _ = std::fs::write(home.join(ORIGIN_FILE), format!("{host} {port}"));
    }
    Ok((listener, host))
}

/// The page the browser is opened on: it forwards to the launch URL. It lives in the private
/// profile directory (0600) and is removed once the token is used.
pub(crate) const LAUNCH_FILE: &str = "app-launch.html";

/// Best effort: the URL is printed either way. The browser gets the path of a private file
/// that forwards to the URL, never the URL itself: a command line is readable by every
/// account of the machine (`/proc/PID/cmdline`), and whoever redeems the token first owns the
/// session (security review 3, M5; Jupyter does the same).
fn open_browser(home: &Path, url: &str) {
    let page = home.join(LAUNCH_FILE);
    let html = format!(
        "<!doctype html><meta charset=utf-8><meta name=referrer content=no-referrer>\
         <meta http-equiv=refresh content=\"0;url={url}\"><title>Samizdat</title>\
         <a href=\"{url}\">Open Samizdat</a>"
    );
    let written = (|| -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::remove_file(&page);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&page)?;
        f.write_all(html.as_bytes())
    })();
    if written.is_err() {
        return;
    }
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    let _ = std::process::Command::new(opener)
        .arg(&page)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
}

impl App {
    /// What notifications may show, as last read from the profile (the private default
    /// until then).
    pub(crate) fn notify_level(&self) -> samizdat_core::NotifyLevel {
        self.notify
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .unwrap_or_default()
    }

    pub(crate) fn remember_notify(&self, level: samizdat_core::NotifyLevel) {
        *self.notify.lock().unwrap_or_else(|p| p.into_inner()) = Some(level);
    }

    /// Read the notification setting from the profile once.
    pub(crate) async fn load_notify(&self) {
        let known = self
            .notify
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some();
        if !known && let Ok(s) = self.settings(samizdat_rpc::NoParams {}).await {
            self.remember_notify(s.notifications);
        }
    }

    /// The profile directory.
    pub(crate) fn home(&self) -> &std::path::Path {
        &self.home
    }

    /// Find the profile: through a running `serve`, unlocked from the environment, locked,
    /// or not there yet.
    async fn start(self: &Arc<Self>) -> Result<()> {
        if connect(&self.home).await.is_some() {
            self.go_remote().await;
            return Ok(());
        }
        if !Profile::exists(&self.home) {
            *self.phase.write().await = Phase::NoProfile;
            return Ok(());
        }
        if let Ok(p) = std::env::var("SAMIZDAT_PASSPHRASE") {
            let p = zeroize::Zeroizing::new(p);
            return match self.unlock(&p).await {
                Ok(()) => Ok(()),
                Err(e) => Err(anyhow!("{e}")),
            };
        }
        *self.phase.write().await = Phase::Locked;
        Ok(())
    }

    async fn go_remote(self: &Arc<Self>) {
        *self.phase.write().await = Phase::Ready(Core::Remote);
        let app = self.clone();
        tokio::spawn(async move { app.follow_remote().await });
    }

    /// Forward the remote service's events; reconnect while the app runs.
    async fn follow_remote(self: Arc<Self>) {
        loop {
            if let Some(stream) = connect(&self.home).await {
                let mut c = RemoteClient::new(stream);
                if c.call("subscribe", json!({}), |_| {}).await.is_ok() {
                    while let Ok(e) = c.next_event().await {
                        self.publish(e);
                    }
                }
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    }

    fn publish(&self, e: LiveEvent) {
        if let samizdat_core::Event::Relay {
            state, retry_in_ms, ..
        } = &e.event
            && let Ok(mut r) = self.relay.lock()
        {
            *r = Some((*state, *retry_in_ms));
        }
        let _ = self.events.send(e);
    }

    /// Own the profile in this process and start the service.
    async fn own(self: &Arc<Self>, profile: Profile, lock: ProfileLock) -> Result<()> {
        let (handle, mut rx) = ClientHandle::start_subscribed(profile, Mode::Realtime)?;
        let socket = serve_socket(&self.home, handle.clone())?;
        *self.phase.write().await = Phase::Ready(Core::Local {
            handle,
            _socket: socket,
            _lock: lock,
        });
        let app = self.clone();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(e) => app.publish(e),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(())
    }

    /// Start linking this (profile-less) device to an existing profile: a profile of its own
    /// on `relay`, whose one-time link the page shows until the device with the identity key
    /// adds it (`device join`, in the background). The page follows [`App::linking`].
    pub(crate) async fn start_linking(
        self: &Arc<Self>,
        passphrase: zeroize::Zeroizing<String>,
        relay: &str,
        name: &str,
    ) -> Result<(), CallError> {
        if !matches!(*self.phase.read().await, Phase::NoProfile) {
            return Err(CallError {
                kind: Some("usage".into()),
                message: "a profile already exists".into(),
            });
        }
        let lock = ProfileLock::try_acquire(&self.home).map_err(|e| core_error(e.into()))?;
        if let Ok(mut l) = self.linking.lock() {
            *l = Some(Linking::default());
        }
        let app = self.clone();
        let (relay, name) = (relay.to_string(), name.to_string());
        tokio::spawn(async move {
            let state = app.linking.clone();
            let show = move |link: &str, code: &str| {
                if let Ok(mut l) = state.lock()
                    && let Some(l) = l.as_mut()
                {
                    l.link = Some((link.to_string(), code.to_string()));
                }
            };
            let joined = Profile::device_join(
                &app.home,
                &passphrase,
                &relay,
                &name,
                std::time::Duration::from_secs(samizdat_core::device::LINK_TTL + 600),
                show,
            )
            .await;
            let outcome = match joined {
                Ok((profile, _)) => app.own(profile, lock).await.map_err(core_error),
                Err(e) => Err(core_error(e.into())),
            };
            if let Ok(mut l) = app.linking.lock() {
                *l = match outcome {
                    Ok(()) => None,
                    Err(e) => Some(Linking {
                        link: None,
                        error: Some(e),
                    }),
                };
            }
        });
        Ok(())
    }

    /// How linking this device goes (`None` when it is not linking).
    pub(crate) fn linking(&self) -> Option<Linking> {
        self.linking.lock().ok().and_then(|l| l.clone())
    }

    /// Lock: a profile this process owns is closed (its keys leave memory; the page asks for
    /// the passphrase again). A profile owned by `samizdat serve` stays open there.
    pub(crate) async fn lock(&self) {
        let mut phase = self.phase.write().await;
        if matches!(*phase, Phase::Ready(Core::Local { .. })) {
            *phase = Phase::Locked;
        }
    }

    /// Open the profile with a passphrase. A wrong one is `kind = wrong_passphrase`.
    pub(crate) async fn unlock(self: &Arc<Self>, passphrase: &str) -> Result<(), CallError> {
        if matches!(*self.phase.read().await, Phase::Ready(_)) {
            return Ok(());
        }
        let home = self.home.clone();
        let lock = tokio::task::spawn_blocking(move || crate::client::lock_waiting(&home))
            .await
            .map_err(|e| CallError {
                kind: None,
                message: e.to_string(),
            })?
            .map_err(core_error)?;
        // The duress passphrase opens a fresh, empty profile (the old one is wiped).
        let profile = Profile::open_or_duress(&self.home, passphrase)
            .await
            .map_err(|e| core_error(e.into()))?;
        self.own(profile, lock).await.map_err(core_error)
    }

    /// Create the profile (onboarding) and start the service on it.
    pub(crate) async fn create(
        self: &Arc<Self>,
        passphrase: &str,
        relay: &str,
        name: &str,
    ) -> Result<(), CallError> {
        if !matches!(*self.phase.read().await, Phase::NoProfile) || Profile::exists(&self.home) {
            return Err(CallError {
                kind: Some("usage".into()),
                message: "a profile already exists here".into(),
            });
        }
        let lock = ProfileLock::try_acquire(&self.home).map_err(|e| core_error(e.into()))?;
        let profile = Profile::init(&self.home, passphrase, relay, name)
            .await
            .map_err(|e| core_error(e.into()))?;
        self.own(profile, lock).await.map_err(core_error)
    }

    /// Set the duress passphrase (it must not open the profile).
    pub(crate) async fn set_duress(&self, duress: &str) -> Result<(), CallError> {
        self.duress_set(rpc::DuressParams {
            passphrase: duress.to_string(),
        })
        .await?;
        Ok(())
    }

    /// Wipe the profile now: its owner (this process's service, or the `serve` whose socket
    /// the app uses, which exits after) deletes every file it holds; the app goes back to
    /// onboarding.
    pub(crate) async fn wipe(&self) -> Result<(), CallError> {
        let mut phase = self.phase.write().await;
        let asked = match &*phase {
            Phase::Ready(Core::Local { handle, .. }) => handle.wipe().await.is_ok(),
            Phase::Ready(Core::Remote) => match connect(&self.home).await {
                Some(stream) => RemoteClient::new(stream)
                    .call_rpc("wipe", serde_json::json!({}), |_| {})
                    .await
                    .is_ok(),
                None => false,
            },
            _ => false,
        };
        // An owner that did not answer is told to stop (its pid is in the lock file).
        if !asked && matches!(*phase, Phase::Ready(Core::Remote)) {
            crate::client::stop_owner(&self.home);
        }
        // Dropping the core closes the socket and releases the lock; whatever is left of
        // the home goes below.
        *phase = Phase::NoProfile;
        samizdat_core::wipe::wipe(&self.home).map_err(|e| core_error(e.into()))
    }

    pub(crate) async fn state(&self) -> State {
        match &*self.phase.read().await {
            Phase::NoProfile => State::NoProfile,
            Phase::Locked => State::Locked,
            Phase::Ready(_) => State::Ready,
        }
    }

    pub(crate) fn relay_state(&self) -> Option<(RelayState, Option<u64>)> {
        self.relay.lock().ok().and_then(|r| *r)
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<LiveEvent> {
        self.events.subscribe()
    }

    /// Call a method chosen at run time (a form names it) and read its typed result; the
    /// typed methods of [`Api`] are for everything else.
    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        method: &'static str,
        params: Value,
    ) -> Result<T, CallError> {
        let value = self.call_raw(method, params).await?;
        serde_json::from_value(value).map_err(|e| CallError {
            kind: None,
            message: format!("reading the answer to {method}: {e}"),
        })
    }
}

/// The typed API ([`Api`]) for the pages: through the service this process runs, or one
/// request on the owner's socket (a connection per call: the socket is local and the app's
/// calls are few). Without an open profile every call is `locked`.
impl Api for App {
    async fn call_raw(&self, method: &'static str, params: Value) -> Result<Value, RpcError> {
        let phase = self.phase.read().await;
        match &*phase {
            Phase::Ready(Core::Local { handle, .. }) => {
                let handle = handle.clone();
                drop(phase);
                samizdat_rpc::call_local(&handle, method, params).await
            }
            Phase::Ready(Core::Remote) => {
                drop(phase);
                let stream = connect(&self.home).await.ok_or_else(|| {
                    RpcError::new(codes::STOPPED, "the samizdat service is not running")
                        .with_kind(samizdat_core::ErrorKind::Stopped)
                })?;
                RemoteClient::new(stream)
                    .call_rpc(method, params, |_| {})
                    .await
            }
            _ => Err(RpcError {
                code: codes::STOPPED,
                message: "the profile is not open".into(),
                data: Some(serde_json::json!({ "kind": "locked" })),
            }),
        }
    }
}

fn core_error(e: anyhow::Error) -> CallError {
    let kind = match e.downcast_ref::<samizdat_core::Error>() {
        Some(samizdat_core::Error::WrongPassphrase) => Some("wrong_passphrase"),
        Some(samizdat_core::Error::RelayUnreachable(_)) => Some("relay_unreachable"),
        Some(samizdat_core::Error::Usage(_)) => Some("usage"),
        Some(samizdat_core::Error::InvalidInvite(_)) => Some("invalid_invite"),
        _ => None,
    };
    CallError {
        kind: kind.map(String::from),
        message: format!("{e:#}"),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    NoProfile,
    Locked,
    Ready,
}
