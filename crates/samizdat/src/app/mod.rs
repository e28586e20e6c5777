//! `samizdat app`: the messenger as a local web app. An HTTP server on loopback serves
//! server-rendered pages (maud, Fluent strings) and a small script for live updates (SSE).
//! It holds no messenger logic: every action is a JSON-RPC method of the client service —
//! in this process (the app owns the profile) or in a running `samizdat serve` (the app
//! talks to its socket) — and live updates are the service's event stream.

mod files;
mod i18n;
mod pages;
mod security;
mod web;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, anyhow};
use samizdat_core::lock::ProfileLock;
use samizdat_core::{ClientHandle, LiveEvent, Mode, Profile, RelayState};
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
#[derive(Debug)]
pub struct CallError {
    pub kind: Option<String>,
    pub message: String,
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
    pub(crate) i18n: i18n::I18n,
    pub(crate) guard: security::Guard,
    /// Told when the person quits from the page.
    pub(crate) quit: tokio::sync::Notify,
}

/// Options of `samizdat app`.
pub struct Options {
    pub home: PathBuf,
    pub listen: SocketAddr,
    pub open: bool,
    pub default_relay: String,
}

pub async fn run(o: Options) -> Result<()> {
    if !o.listen.ip().is_loopback() {
        return Err(anyhow!(
            "the app listens on loopback only (127.0.0.1 or [::1]); got {}",
            o.listen
        ));
    }
    let listener = bind_stable(&o.home, o.listen).await?;
    let addr = listener.local_addr()?;
    let (events, _) = broadcast::channel(4096);
    let app = Arc::new(App {
        home: o.home.clone(),
        default_relay: o.default_relay,
        phase: RwLock::new(Phase::NoProfile),
        events,
        relay: Mutex::new(None),
        i18n: i18n::I18n::new(),
        guard: security::Guard::new(addr.port()),
        quit: tokio::sync::Notify::new(),
    });
    app.start().await?;
    let token = app.guard.launch_token();
    let url = format!("http://127.0.0.1:{}/login?token={token}", addr.port());
    if o.open {
        open_browser(&url);
    }
    eprintln!("Samizdat app for {} (Ctrl-C to stop)", o.home.display());
    // The launch URL is the last stdout line (scripts read it).
    println!("{url}");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let router = web::router(app.clone());
    let server = axum::serve(listener, router.into_make_service());
    tokio::select! {
        r = server => r.context("the app's HTTP server stopped")?,
        _ = crate::cli::stop_signal() => {}
        _ = app.quit.notified() => {}
    }
    // Stop the service (and release the profile) before the process ends.
    *app.phase.write().await = Phase::NoProfile;
    Ok(())
}

/// The file in the profile directory that keeps the app's port between runs.
const PORT_FILE: &str = "app-port";

/// Listen where this profile's app listened last time (asked for port 0 and that port is
/// free), else where asked; and remember the port. A stable origin keeps whatever a browser
/// holds for the app in one place, where `Clear-Site-Data` reaches it, instead of one origin
/// per run left behind (security review 3, H3).
async fn bind_stable(home: &Path, listen: SocketAddr) -> Result<tokio::net::TcpListener> {
    let remembered = std::fs::read_to_string(home.join(PORT_FILE))
        .ok()
        .and_then(|p| p.trim().parse::<u16>().ok())
        .filter(|p| *p != 0);
    if listen.port() == 0
        && let Some(port) = remembered
        && let Ok(l) = tokio::net::TcpListener::bind(SocketAddr::new(listen.ip(), port)).await
    {
        return Ok(l);
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let port = listener.local_addr()?.port();
    if listen.port() == 0 && samizdat_core::check_private_dir(home).is_ok() {
        let _ = std::fs::write(home.join(PORT_FILE), port.to_string());
    }
    Ok(listener)
}

/// Best effort: the URL is printed either way.
fn open_browser(url: &str) {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    let _ = std::process::Command::new(opener)
        .arg(url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
}

impl App {
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
        let _: samizdat_core::rpc::Done = self
            .call("duress_set", json!({ "passphrase": duress }))
            .await?;
        Ok(())
    }

    /// Wipe the profile now: stop the service (or the `serve` that owns it), delete every
    /// file; the app goes back to onboarding.
    pub(crate) async fn wipe(&self) -> Result<(), CallError> {
        let mut phase = self.phase.write().await;
        if matches!(*phase, Phase::Ready(Core::Remote)) {
            crate::client::stop_owner(&self.home);
        }
        // Dropping the core stops the service, closes the socket and releases the lock.
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

    /// Call a JSON-RPC method of the service and read its typed result.
    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        params: Value,
    ) -> Result<T, CallError> {
        let value = {
            let phase = self.phase.read().await;
            match &*phase {
                Phase::Ready(Core::Local { handle, .. }) => {
                    let handle = handle.clone();
                    drop(phase);
                    samizdat_core::rpc::call_local(&handle, method, params)
                        .await
                        .map_err(|e| CallError {
                            kind: e
                                .data
                                .as_ref()
                                .and_then(|d| d.get("kind"))
                                .and_then(Value::as_str)
                                .map(String::from),
                            message: e.message,
                        })?
                }
                Phase::Ready(Core::Remote) => {
                    drop(phase);
                    remote_call(&self.home, method, params).await?
                }
                _ => {
                    return Err(CallError {
                        kind: Some("locked".into()),
                        message: "the profile is not open".into(),
                    });
                }
            }
        };
        serde_json::from_value(value).map_err(|e| CallError {
            kind: None,
            message: format!("reading the answer to {method}: {e}"),
        })
    }
}

/// One request on the owner's socket (a connection per call: the socket is local and the
/// app's calls are few).
async fn remote_call(home: &Path, method: &str, params: Value) -> Result<Value, CallError> {
    let lost = |m: String| CallError {
        kind: Some("stopped".into()),
        message: m,
    };
    let stream = connect(home)
        .await
        .ok_or_else(|| lost("the samizdat service is not running".into()))?;
    let mut c = RemoteClient::new(stream);
    let reply = c
        .request(method, params)
        .await
        .map_err(|e| lost(e.to_string()))?;
    if let Some(err) = reply.get("error") {
        return Err(CallError {
            kind: err
                .get("data")
                .and_then(|d| d.get("kind"))
                .and_then(Value::as_str)
                .map(String::from),
            message: err
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("error")
                .to_string(),
        });
    }
    Ok(reply.get("result").cloned().unwrap_or(Value::Null))
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
