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
pub mod http;
mod metrics;
pub mod notify;
mod ratelimit;
pub mod store;
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
use metrics::Metrics;
use notify::Notifier;
use ratelimit::RateLimiter;
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
    /// A `postgres://` URL: use PostgreSQL, shared with other relay processes.
    pub database: Option<String>,
    /// PostgreSQL connections per process.
    pub pool_size: usize,
    /// How often expired messages and entries are deleted, in seconds.
    pub sweep_interval_secs: u64,
    pub limits: Limits,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:7700".into(),
            data: PathBuf::from("samizdat-relay"),
            database: None,
            pool_size: 8,
            sweep_interval_secs: 60,
            limits: Limits::default(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct AppState {
    pub store: Arc<dyn Store>,
    pub limits: Arc<Limits>,
    pub metrics: Arc<Metrics>,
    pub notifier: Notifier,
    pub claims: Arc<RateLimiter>,
    pub creations: Arc<RateLimiter>,
    pub shutdown: watch::Receiver<bool>,
}

pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A relay that is listening. Dropping it does not stop it; call [`Relay::shutdown`].
pub struct Relay {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<()>>,
    sweeper: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// Open storage, bind, and start serving in the background.
    pub async fn start(config: Config) -> Result<Relay> {
        let store: Arc<dyn Store> = match &config.database {
            Some(url) => Arc::new(PgStore::open(url, config.pool_size).await?),
            None => Arc::new(SqliteStore::open(&config.data)?),
        };
        Self::start_with_store(config, store).await
    }

    /// Start serving on an already opened store.
    pub async fn start_with_store(config: Config, store: Arc<dyn Store>) -> Result<Relay> {
        let listener = TcpListener::bind(&config.listen)
            .await
            .map_err(|source| Error::Listen {
                addr: config.listen.clone(),
                source,
            })?;
        let addr = listener.local_addr().map_err(Error::Serve)?;
        let (stop, stop_rx) = watch::channel(false);
        let limits = Arc::new(config.limits.clone());
        let notifier = Notifier::new();
        store.start_wakeups(notifier.clone());
        let state = AppState {
            store: store.clone(),
            claims: Arc::new(RateLimiter::new(limits.claims_per_ip_per_minute)),
            creations: Arc::new(RateLimiter::new(limits.creations_per_ip_per_minute)),
            limits: limits.clone(),
            metrics: Arc::new(Metrics::default()),
            notifier,
            shutdown: stop_rx.clone(),
        };
        let app = http::router(state);
        let sweep_every = Duration::from_secs(config.sweep_interval_secs.max(1));
        let mut sweep_stop = stop_rx.clone();
        let sweep_store = store.clone();
        let sweeper = tokio::spawn(async move {
            let mut tick = tokio::time::interval(sweep_every);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        match sweep_store.sweep(now_secs(), &limits).await {
                            Ok(s) if s.entries + s.mailbox_messages > 0 => tracing::info!(entries = s.entries, mailbox_messages = s.mailbox_messages, "expired data deleted"),
                            Ok(_) => {}
                            Err(e) => tracing::warn!(error = %e, "retention sweep failed"),
                        }
                    }
                    _ = sweep_stop.changed() => break,
                }
            }
        });
        let mut graceful = stop_rx;
        let task = tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move {
                let _ = graceful.wait_for(|s| *s).await;
            })
            .await
            .map_err(Error::Serve)
        });
        Ok(Relay {
            addr,
            stop,
            task,
            sweeper,
        })
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
