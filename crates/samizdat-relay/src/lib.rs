//! The Samizdat relay: an untrusted store-and-forward server.
//!
//! It keeps mailboxes (Welcomes and contact requests), KeyPackage pools and one totally
//! ordered log per group, and pushes new entries to subscribers over a WebSocket. It stores
//! only opaque ciphertext, epoch-token *hashes* and routing ids: it never sees plaintext,
//! names, or who is in which group. It is trusted for availability and for ordering each
//! group's log, and for nothing else.
//!
//! What it is not: a client, an identity service, or anything that can read messages.
//!
//! Storage sits behind [`store::Store`]; [`store::SqliteStore`] is the single-process
//! backend. No state that a second relay process would need lives in memory: subscribers
//! hold cursors and re-read the log, so a process can die at any moment.

mod auth;
mod blobs;
mod channels;
pub mod http;
pub mod limits;
mod metrics;
pub mod notify;
mod openapi;
mod serve;
pub mod store;
pub mod tls;
pub mod turn;
mod ws;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use samizdat_proto::Limits;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use auth::token_hash;
use limits::{Cidr, RateLimits};
use metrics::Metrics;
use notify::Notifier;
pub use serve::serve_bounded;
use store::{PgStore, SqliteStore, Store};

/// Errors starting or running a relay.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot open the relay's storage: {0}")]
    Storage(#[from] store::StoreError),
    #[error("server failed: {0}")]
    Serve(std::io::Error),
    #[error("invalid setting: {0}")]
    Config(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Relay settings, from flags, environment or a TOML file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    pub listen: String,
    /// Directory for the SQLite database (unused with `database`).
    pub data: PathBuf,
    /// Directory for blob files (encrypted attachments). Default: `blobs` under `data`.
    /// Relay processes sharing a PostgreSQL database must share this directory too.
    pub blob_dir: Option<PathBuf>,
    /// A `postgres://` URL: use PostgreSQL, shared with other relay processes.
    pub database: Option<String>,
    /// PostgreSQL connections per process.
    pub pool_size: usize,
    /// How often expired messages and entries are deleted, in seconds.
    pub sweep_interval_secs: u64,
    /// Reverse proxies whose `X-Forwarded-For` / `Forwarded` headers are believed, as CIDR
    /// ranges (`127.0.0.1/32`). Empty: the socket peer is the client (headers ignored).
    pub trusted_proxies: Vec<String>,
    /// Serve TLS with this PEM certificate (chain) and `tls_key`.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Serve TLS with a self-signed certificate made once and kept in this directory.
    pub tls_self_signed: Option<PathBuf>,
    /// Serve `GET /metrics` on this separate address (e.g. `127.0.0.1:9700`). Unset: no
    /// metrics endpoint at all; the public listener never serves them.
    pub metrics_listen: Option<String>,
    /// Serve the API only under `/<prefix>` (8 to 64 letters, digits, `-` or `_`): a relay
    /// address then carries it (`https://host/<prefix>#pin=…`), and a probe without it gets
    /// the ordinary 404 page for everything (security review 3, M12).
    pub path_prefix: Option<String>,
    pub limits: Limits,
    /// Relaying calls (issue 31): `[turn]`.
    pub turn: turn::TurnConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:7700".into(),
            data: PathBuf::from("samizdat-relay"),
            database: None,
            blob_dir: None,
            pool_size: 8,
            sweep_interval_secs: 60,
            trusted_proxies: Vec::new(),
            tls_cert: None,
            tls_key: None,
            tls_self_signed: None,
            metrics_listen: None,
            path_prefix: None,
            limits: Limits::default(),
            turn: turn::TurnConfig::default(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct AppState {
    pub store: Arc<dyn Store>,
    pub limits: Arc<Limits>,
    pub metrics: Arc<Metrics>,
    pub notifier: Notifier,
    pub rates: Arc<RateLimits>,
    pub trusted_proxies: Arc<[Cidr]>,
    /// Request body bytes in memory, relay-wide (`limits.max_inflight_body_bytes`).
    pub body_budget: Arc<tokio::sync::Semaphore>,
    /// Where blob files live (see `blobs`).
    pub blob_dir: Arc<std::path::Path>,
    /// Total stored bytes as of the last sweep (for `max_relay_bytes`).
    pub stored_bytes: Arc<std::sync::atomic::AtomicU64>,
    pub shutdown: watch::Receiver<bool>,
    /// Epoch tokens the store confirmed (the append's pre-check; see `auth::TokenCache`).
    pub tokens: Arc<auth::TokenCache>,
    /// Requests and WebSockets in flight per client behind a trusted proxy (whose own
    /// connections carry many clients): `max_connections_per_ip` each (security review 3, M4).
    pub forwarded: Arc<serve::ConnectionCaps>,
    /// Request body bytes in memory per client address (security review 3, M3).
    pub body_shares: Arc<limits::BodyShares>,
    /// The free share of the data and blob file systems (`min_free_disk_percent`).
    pub disk: Arc<http::DiskWatch>,
    /// The TURN server for calls, unless turned off.
    pub turn: Option<Arc<turn::Turn>>,
    /// Full channel segments served from memory (see `channels::SegmentCache`).
    pub segments: Arc<channels::SegmentCache>,
    /// Fresh channel records as pushed frames, read and encoded once per process.
    pub push_frames: Arc<channels::PushFrames>,
}

/// Create `dir` (and its parents) if needed and make it readable by the relay's account only
/// (0700): the relay's data is metadata other accounts of the host must not read (security
/// review 3, L10).
pub(crate) fn private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `GET /metrics` on its own listener (keep it on loopback or a private network).
async fn spawn_metrics(
    listen: &str,
    metrics: Arc<Metrics>,
    store: Arc<dyn Store>,
    mut stop: watch::Receiver<bool>,
) -> Result<SocketAddr> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| Error::Listen {
            addr: listen.to_string(),
            source,
        })?;
    let addr = listener.local_addr().map_err(Error::Serve)?;
    let app = axum::Router::new()
        .route("/v1/openapi.json", axum::routing::get(crate::http::openapi))
        .route(
            "/healthz",
            axum::routing::get(|| async {
                axum::Json(samizdat_proto::Health {
                    status: "ok".into(),
                    version: Some(env!("CARGO_PKG_VERSION").into()),
                })
            }),
        )
        .route(
        "/metrics",
        axum::routing::get(move || {
            let m = metrics.clone();
            let store = store.clone();
            async move {
                let (batches, writes) = store.write_batches();
                let text = format!(
                    "{}# HELP samizdat_write_batches_total Write transactions that stored batched writes.\n\
                     # TYPE samizdat_write_batches_total counter\nsamizdat_write_batches_total {batches}\n\
                     # HELP samizdat_batched_writes_total Writes stored by those transactions (mean batch = this / batches).\n\
                     # TYPE samizdat_batched_writes_total counter\nsamizdat_batched_writes_total {writes}\n",
                    m.render()
                );
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    text,
                )
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await;
    });
    Ok(addr)
}

/// A relay that is listening. Dropping it does not stop it; call [`Relay::shutdown`].
pub struct Relay {
    addr: SocketAddr,
    /// The certificate pin when serving TLS.
    pin: Option<String>,
    /// `/<prefix>` when the API is served under a secret path, else empty.
    prefix: String,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<()>>,
    sweeper: tokio::task::JoinHandle<()>,
    metrics_addr: Option<SocketAddr>,
    turn: Option<Arc<turn::Turn>>,
}

impl Relay {
    /// Open storage, bind, and start serving in the background.
    pub async fn start(config: Config) -> Result<Relay> {
        let store: Arc<dyn Store> = match &config.database {
            Some(url) => Arc::new(PgStore::open(url, config.pool_size).await?),
            None => Arc::new(SqliteStore::open_with_queue(
                &config.data,
                config.limits.writer_queue,
            )?),
        };
        Self::start_with_store(config, store).await
    }

    /// Start serving on an already opened store.
    pub async fn start_with_store(config: Config, store: Arc<dyn Store>) -> Result<Relay> {
        let trusted_proxies = config
            .trusted_proxies
            .iter()
            .map(|c| c.parse::<Cidr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::Config(format!("trusted_proxies: {e}")))?;
        let listener = TcpListener::bind(&config.listen)
            .await
            .map_err(|source| Error::Listen {
                addr: config.listen.clone(),
                source,
            })?;
        let addr = listener.local_addr().map_err(Error::Serve)?;
        let blob_dir = config
            .blob_dir
            .clone()
            .unwrap_or_else(|| config.data.join("blobs"));
        private_dir(&blob_dir).map_err(|e| {
            Error::Config(format!(
                "cannot create the blob directory {}: {e}",
                blob_dir.display()
            ))
        })?;
        let tls = match (&config.tls_cert, &config.tls_key, &config.tls_self_signed) {
            (Some(c), Some(k), None) => Some(tls::from_files(c, k)?),
            (None, None, Some(dir)) => Some(tls::self_signed(dir)?),
            (None, None, None) => None,
            _ => {
                return Err(Error::Config(
                    "TLS: give --tls-cert with --tls-key, or --tls-self-signed DIR".into(),
                ));
            }
        };
        let pin = tls.as_ref().map(|t| t.pin.clone());
        let acceptor = tls.map(|t| t.acceptor);
        let (stop, stop_rx) = watch::channel(false);
        let turn = turn::Turn::start(&config.turn, addr.ip(), stop_rx.clone()).await?;
        if let Some(t) = &turn {
            t.set_main_port(addr);
        }
        let limits = Arc::new(config.limits.clone());
        let notifier = Notifier::new();
        store.start_wakeups(notifier.clone());
        let push_frames = Arc::new(channels::PushFrames::new(notifier.channel_wakes()));
        let metrics = Arc::new(Metrics::default());
        let budget = usize::try_from(limits.max_inflight_body_bytes)
            .unwrap_or(usize::MAX)
            .clamp(64 * 1024, tokio::sync::Semaphore::MAX_PERMITS);
        let state = AppState {
            turn: turn.clone(),
            store: store.clone(),
            rates: RateLimits::new(&limits),
            trusted_proxies: trusted_proxies.into(),
            body_budget: Arc::new(tokio::sync::Semaphore::new(budget)),
            disk: http::DiskWatch::new(vec![config.data.clone(), blob_dir.clone()]),
            blob_dir: blob_dir.into(),
            stored_bytes: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            limits: limits.clone(),
            metrics: metrics.clone(),
            notifier,
            shutdown: stop_rx.clone(),
            tokens: Arc::default(),
            segments: Arc::default(),
            push_frames,
            forwarded: serve::ConnectionCaps::new(
                limits.max_connections,
                limits.max_connections_per_ip,
                Arc::from([]),
            ),
            body_shares: limits::BodyShares::new(
                limits
                    .max_inflight_body_bytes_per_ip
                    .max(limits.max_request_body as u64),
            ),
        };
        let metrics_addr = match &config.metrics_listen {
            Some(m) => {
                Some(spawn_metrics(m, metrics.clone(), store.clone(), stop_rx.clone()).await?)
            }
            None => None,
        };
        let prefix = match &config.path_prefix {
            None => String::new(),
            Some(p)
                if (8..=64).contains(&p.len())
                    && p.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
            {
                format!("/{p}")
            }
            Some(_) => {
                return Err(Error::Config(
                    "path_prefix must be 8 to 64 letters, digits, - or _".into(),
                ));
            }
        };
        let app = http::router(state.clone());
        let app = if prefix.is_empty() {
            app
        } else {
            axum::Router::new()
                .nest(&prefix, app)
                .fallback(http::fallback)
        };
        let sweep_every = Duration::from_secs(config.sweep_interval_secs.max(1));
        let mut sweep_stop = stop_rx.clone();
        let state_trusted = state.trusted_proxies.clone();
        let sweep_state = state;
        let sweeper = tokio::spawn(async move {
            let mut tick = tokio::time::interval(sweep_every);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let store = &sweep_state.store;
                        match store.sweep(now_secs(), &sweep_state.limits).await {
                            Ok(s) => {
                                sweep_state.stored_bytes.store(s.stored_bytes, std::sync::atomic::Ordering::Relaxed);
                                if s.removed() > 0 {
                                    tracing::info!(entries = s.entries, mailbox_messages = s.mailbox_messages, mailboxes = s.mailboxes, groups = s.groups, key_packages = s.key_packages, "expired data deleted");
                                }
                            }
                            Err(e) => tracing::warn!(error = %e, "retention sweep failed"),
                        }
                        let blobs = blobs::sweep(&sweep_state).await;
                        if blobs > 0 {
                            tracing::info!(blobs, "expired blobs deleted");
                        }
                        sweep_state.rates.forget_idle();
                    }
                    _ = sweep_stop.changed() => break,
                }
            }
        });
        let caps = serve::ConnectionCaps::new(
            limits.max_connections,
            limits.max_connections_per_ip,
            state_trusted,
        );
        let header_timeout = Duration::from_secs(limits.header_timeout_secs.max(1));
        let turn_main = turn.clone();
        let task = tokio::spawn(async move {
            serve::run(
                listener,
                serve::Protocols {
                    tls: acceptor,
                    turn: turn_main,
                },
                app,
                caps,
                header_timeout,
                metrics,
                stop_rx,
            )
            .await
            .map_err(Error::Serve)
        });
        Ok(Relay {
            turn,
            addr,
            pin,
            prefix,
            stop,
            task,
            sweeper,
            metrics_addr,
        })
    }

    /// The TURN server, unless `turn.enabled` is off.
    pub fn turn(&self) -> Option<&Arc<turn::Turn>> {
        self.turn.as_ref()
    }

    /// Where `/metrics` is served, if `metrics_listen` was set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The relay's base URL: `http://ADDR`, or with TLS `https://ADDR#pin=PIN` (the pin
    /// lets clients trust this certificate without a CA).
    pub fn url(&self) -> String {
        match &self.pin {
            Some(pin) => format!("https://{}{}#pin={pin}", self.addr, self.prefix),
            None => format!("http://{}{}", self.addr, self.prefix),
        }
    }

    /// The address actually bound (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop accepting, let in-flight requests finish, and wait.
    pub async fn shutdown(self) -> Result<()> {
        let _ = self.stop.send(true);
        let served = match self.task.await {
            Ok(r) => r,
            Err(e) => Err(Error::Serve(std::io::Error::other(e))),
        };
        // The sweeper holds the store too: once it is gone, the store closes (SQLite
        // checkpoints its WAL) as soon as the last request handler has finished.
        let _ = self.sweeper.await;
        served
    }

    /// Wait until the server stops by itself (an error) — used by the binary.
    pub async fn stopped(&mut self) -> Result<()> {
        match (&mut self.task).await {
            Ok(r) => r,
            Err(e) => Err(Error::Serve(std::io::Error::other(e))),
        }
    }
}
