//! How a CLI command reaches its profile: through the socket of the process that owns it
//! (`serve`, `listen` or `rpc`, like `docker` talks to `dockerd`), or — when none runs — by
//! taking the profile lock and running the client service in this process. Either way the
//! command speaks the same JSON-RPC methods, so both paths behave alike.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use samizdat_core::lock::ProfileLock;
use samizdat_core::{ClientHandle, LiveEvent, Mode, Profile};
use samizdat_rpc::{self as rpc, Api, GetEventsParams, RpcError};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

/// A passphrase, zeroed when dropped.
pub type Secret = zeroize::Zeroizing<String>;

/// The owner's socket inside the profile directory.
pub const SOCKET: &str = "samizdat.sock";
/// Clients connected to the owner's socket at once (CLI commands, `rpc`, the app).
const MAX_SOCKET_CLIENTS: usize = 64;
/// How long a command waits for another process to release the profile.
const LOCK_WAIT: Duration = Duration::from_secs(30);

pub fn socket_path(home: &Path) -> PathBuf {
    home.join(SOCKET)
}

pub enum Backend {
    /// This process owns the profile.
    Local {
        handle: ClientHandle,
        _lock: ProfileLock,
    },
    /// Another process owns it; we talk through its socket (one request at a time).
    Remote(tokio::sync::Mutex<RemoteClient>),
}

/// The owner's socket, if one answers — in a directory no one else could have prepared, and
/// served by a process of this account: text written to an impostor's socket would go to
/// the impostor (security review 3, M13). A socket served by another account is ignored
/// (the profile lock then decides who owns the profile).
pub async fn connect(home: &Path) -> Option<UnixStream> {
    if !home.is_dir() || samizdat_core::check_private_dir(home).is_err() {
        return None;
    }
    let me = rustix::process::geteuid().as_raw();
    let path = socket_path(home);
    if std::os::unix::fs::MetadataExt::uid(&std::fs::symlink_metadata(&path).ok()?) != me {
        return None;
    }
    let stream = UnixStream::connect(&path).await.ok()?;
    let peer = stream.peer_cred().ok()?;
    (peer.uid() == me).then_some(stream)
}

/// Fail with the core's "no profile" error when `home` holds none — before a passphrase is
/// asked for or a lock file is created.
pub fn require_profile(home: &Path) -> Result<()> {
    if Profile::exists(home) {
        return Ok(());
    }
    Err(Profile::open(home, "unused")
        .err()
        .map(anyhow::Error::from)
        .unwrap_or_else(|| anyhow!("no profile in {}", home.display())))
}

/// Take the lock (waiting, bounded, with a message) and open the profile (the duress
/// passphrase opens a fresh one, see `samizdat_core::wipe`).
pub async fn open_locked(
    home: &Path,
    passphrase: impl FnOnce() -> Result<Secret>,
) -> Result<(Profile, ProfileLock)> {
    require_profile(home)?;
    let lock = lock_waiting(home)?;
    let profile = Profile::open_or_duress(home, &passphrase()?).await?;
    Ok((profile, lock))
}

/// Take the profile lock, waiting (bounded, saying so on stderr) for another process.
pub fn lock_waiting(home: &Path) -> Result<ProfileLock> {
    Ok(ProfileLock::acquire(home, LOCK_WAIT, |pid| {
        eprintln!(
            "waiting for another samizdat process{} using this profile…",
            pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
        );
    })?)
}

impl Backend {
    /// Reach the profile in `home`, through its owner if one runs.
    pub async fn open(
        home: &Path,
        mode: Mode,
        passphrase: impl FnOnce() -> Result<Secret>,
    ) -> Result<Backend> {
        if let Some(stream) = connect(home).await {
            return Ok(Backend::Remote(tokio::sync::Mutex::new(RemoteClient::new(
                stream,
            ))));
        }
        let (profile, lock) = open_locked(home, passphrase).await?;
        let handle = ClientHandle::start(profile, mode)?;
        Ok(Backend::Local {
            handle,
            _lock: lock,
        })
    }

    /// Call a method while watching live events (transfer progress) until it answers.
    pub async fn call_watching<T: DeserializeOwned>(
        &mut self,
        method: &str,
        params: Value,
        mut on_event: impl FnMut(&LiveEvent),
    ) -> Result<T> {
        let value = match self {
            Backend::Local { handle, .. } => {
                let mut events = handle.subscribe();
                let call = samizdat_rpc::call_local(handle, method, params);
                tokio::pin!(call);
                loop {
                    tokio::select! {
                        r = &mut call => break r?,
                        e = events.recv() => if let Ok(e) = e { on_event(&e) },
                    }
                }
            }
            Backend::Remote(c) => {
                let c = c.get_mut();
                c.call("subscribe", json!({}), |_| {}).await?;
                c.call(method, params, |note| {
                    if note.get("method").and_then(Value::as_str) == Some("event")
                        && let Some(p) = note.get("params")
                        && let Ok(e) = serde_json::from_value::<LiveEvent>(p.clone())
                    {
                        on_event(&e);
                    }
                })
                .await?
            }
        };
        serde_json::from_value(value).with_context(|| format!("reading the answer to {method}"))
    }

    /// The newest position in the durable event log.
    pub async fn last_event(&mut self) -> Result<u64> {
        let page = self
            .get_events(GetEventsParams {
                since: u64::MAX,
                ..Default::default()
            })
            .await?;
        Ok(page.last)
    }

    /// Durable events logged after `since` (what an operation reported along the way).
    pub async fn events_since(&mut self, since: u64) -> Result<Vec<samizdat_core::Event>> {
        let page = self
            .get_events(GetEventsParams {
                since,
                limit: Some(1000),
                ..Default::default()
            })
            .await?;
        Ok(page.events.into_iter().map(|e| e.event).collect())
    }
}

/// The typed API ([`Api`]): in process through the service this process runs, or as a
/// request on the owner's socket. Errors keep their kind across the socket.
impl Api for Backend {
    async fn call_raw(&self, method: &'static str, params: Value) -> Result<Value, RpcError> {
        match self {
            Backend::Local { handle, .. } => samizdat_rpc::call_local(handle, method, params).await,
            Backend::Remote(c) => c.lock().await.call_rpc(method, params, |_| {}).await,
        }
    }
}

/// A JSON-RPC connection to the owner's socket.
pub struct RemoteClient {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    next_id: u64,
}

impl RemoteClient {
    pub fn new(stream: UnixStream) -> RemoteClient {
        let (r, w) = stream.into_split();
        RemoteClient {
            reader: BufReader::new(r),
            writer: w,
            next_id: 1,
        }
    }

    /// Send a request and return the whole response object (`result` or `error`); the
    /// notifications read while waiting go to `on_note`.
    pub async fn request_with(
        &mut self,
        method: &str,
        params: Value,
        mut on_note: impl FnMut(Value),
    ) -> Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        let req = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        let mut line = req.to_string();
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .await
            .context("writing to the samizdat service")?;
        loop {
            let msg = self.next_message().await?;
            if msg.get("id").and_then(Value::as_u64) == Some(id) {
                return Ok(msg);
            }
            if msg.get("method").is_some() {
                on_note(msg);
            }
        }
    }

    /// Send a request and return its `result`; notifications read while waiting go to
    /// `on_note`.
    pub async fn call(
        &mut self,
        method: &str,
        params: Value,
        on_note: impl FnMut(Value),
    ) -> Result<Value> {
        Ok(self.call_rpc(method, params, on_note).await?)
    }

    /// [`Self::call`] with the service's typed error: its code and kind survive the socket.
    /// A lost connection is `stopped`.
    pub async fn call_rpc(
        &mut self,
        method: &str,
        params: Value,
        on_note: impl FnMut(Value),
    ) -> Result<Value, RpcError> {
        let msg = self
            .request_with(method, params, on_note)
            .await
            .map_err(|e| {
                RpcError::new(rpc::codes::STOPPED, format!("{e:#}"))
                    .with_kind(samizdat_core::ErrorKind::Stopped)
            })?;
        if let Some(err) = msg.get("error") {
            return Err(RpcError::from_wire(err));
        }
        Ok(msg.get("result").cloned().unwrap_or(Value::Null))
    }

    /// The next line from the service, parsed.
    pub async fn next_message(&mut self) -> Result<Value> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .await
            .context("reading from the samizdat service")?;
        if n == 0 {
            return Err(anyhow!("the samizdat service closed the connection"));
        }
        serde_json::from_str(&line).context("the samizdat service sent an unreadable line")
    }

    /// The next `event` notification.
    pub async fn next_event(&mut self) -> Result<LiveEvent> {
        loop {
            let msg = self.next_message().await?;
            if msg.get("method").and_then(Value::as_str) == Some("event")
                && let Some(params) = msg.get("params")
                && let Ok(e) = serde_json::from_value::<LiveEvent>(params.clone())
            {
                return Ok(e);
            }
        }
    }
}

/// The owner's socket, served while this process owns the profile; removed on drop.
pub struct SocketServer {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SocketServer {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Serve JSON-RPC on the profile's socket (mode 0600). Call only while holding the lock: any
/// socket file found is then stale (left by a crash) and is replaced.
pub fn serve_socket(home: &Path, handle: ClientHandle) -> Result<SocketServer> {
    use std::os::unix::fs::PermissionsExt;
    let path = socket_path(home);
    if path.exists() {
        std::fs::remove_file(&path)
            .with_context(|| format!("removing the stale socket {}", path.display()))?;
    }
    let listener = tokio::net::UnixListener::bind(&path)
        .with_context(|| format!("cannot listen on {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_SOCKET_CLIENTS));
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            // Bounded: beyond MAX_SOCKET_CLIENTS a new connection is closed at once.
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                drop(stream);
                continue;
            };
            let handle = handle.clone();
            tokio::spawn(async move {
                let (r, w) = stream.into_split();
                samizdat_rpc::serve_connection(handle, BufReader::new(r), w).await;
                drop(slot);
            });
        }
    });
    Ok(SocketServer { path, task })
}

/// Stop the process that owns the profile (its pid is in the lock file while it holds the
/// lock), signalled directly — no outside `kill` program, which a minimal system lacks — and
/// confirm it is gone: SIGTERM first (it closes its profile cleanly), SIGKILL if it still holds
/// the lock after 3 s. A wipe must not leave a running service with the keys in memory.
/// Nothing happens when nobody holds the lock. Returns whether an owner was stopped.
pub fn stop_owner(home: &Path) -> bool {
    use rustix::process::{Pid, Signal, kill_process, test_kill_process};
    if ProfileLock::try_acquire(home).is_ok() {
        return false;
    }
    let Some(pid) = std::fs::read_to_string(home.join(samizdat_core::lock::LOCK_FILE))
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok())
        .filter(|p| u32::try_from(*p).ok() != Some(std::process::id()))
        .and_then(Pid::from_raw)
    else {
        return false;
    };
    let gone =
        |home: &Path| ProfileLock::try_acquire(home).is_ok() || test_kill_process(pid).is_err();
    for (signal, wait) in [(Signal::TERM, 30), (Signal::KILL, 50)] {
        if kill_process(pid, signal).is_err() {
            return gone(home);
        }
        for _ in 0..wait {
            if gone(home) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    gone(home)
}
