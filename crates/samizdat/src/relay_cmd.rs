//! `samizdat relay`: run a relay until SIGINT or SIGTERM.

use std::path::PathBuf;

use anyhow::{Context, Result};
use samizdat_relay::{Config, Relay};

#[derive(Debug, clap::Args)]
pub struct RelayArgs {
    /// Address to listen on [default: 127.0.0.1:7700]
    #[arg(long, env = "SAMIZDAT_RELAY_LISTEN")]
    pub listen: Option<String>,
    /// Directory for the relay's database [default: ./samizdat-relay]
    #[arg(long, env = "SAMIZDAT_RELAY_DATA")]
    pub data: Option<PathBuf>,
    /// Directory for blob files (encrypted attachments) [default: blobs under --data]. Relay
    /// processes sharing a PostgreSQL database must share it too.
    #[arg(long, env = "SAMIZDAT_RELAY_BLOB_DIR")]
    pub blob_dir: Option<PathBuf>,
    /// Largest blob (encrypted attachment) accepted, in bytes [default: 100 MiB]
    #[arg(long, env = "SAMIZDAT_RELAY_MAX_BLOB_BYTES")]
    pub max_blob_bytes: Option<u64>,
    /// Refuse writes (`storage_full`) while the data or blob file system has less than this
    /// share free, in percent; 0 turns the floor off [default: 5]
    #[arg(long, env = "SAMIZDAT_RELAY_MIN_FREE_DISK_PERCENT", value_parser = clap::value_parser!(u64).range(0..=100))]
    pub min_free_disk_percent: Option<u64>,
    /// Serve TLS with this PEM certificate (or chain); needs --tls-key.
    #[arg(long, env = "SAMIZDAT_RELAY_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "SAMIZDAT_RELAY_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve TLS with a self-signed certificate made on first start and kept in DIR; the
    /// relay prints its address with the certificate's pin (https://…#pin=…).
    #[arg(
        long,
        env = "SAMIZDAT_RELAY_TLS_SELF_SIGNED",
        conflicts_with = "tls_cert"
    )]
    pub tls_self_signed: Option<PathBuf>,
    /// PostgreSQL URL (postgres://user@host/db): store everything there, shared with other
    /// relay processes, instead of SQLite under --data.
    #[arg(long, env = "SAMIZDAT_RELAY_DATABASE")]
    pub database: Option<String>,
    /// PostgreSQL connections per relay process [default: 8]
    #[arg(long, env = "SAMIZDAT_RELAY_POOL_SIZE")]
    pub pool_size: Option<usize>,
    /// Serve Prometheus metrics on this separate address (keep it on loopback); without it
    /// there is no metrics endpoint.
    #[arg(long, env = "SAMIZDAT_RELAY_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// A reverse proxy (address or CIDR) whose X-Forwarded-For / Forwarded headers are
    /// believed for rate limits; repeat for several. Headers from anyone else are ignored.
    #[arg(long = "trusted-proxy")]
    pub trusted_proxies: Vec<String>,
    /// Serve the API only under this secret path (8 to 64 letters, digits, - or _): the
    /// relay's address carries it, and a probe without it gets a plain 404 for everything.
    #[arg(long, env = "SAMIZDAT_RELAY_PATH_PREFIX")]
    pub path_prefix: Option<String>,
    /// TOML file with `listen`, `data`, `sweep_interval_secs`, a `[limits]` and a `[turn]` table.
    /// Flags and environment variables override it.
    #[arg(long, env = "SAMIZDAT_RELAY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Run even as root. Without it the relay refuses: a flaw in a program that reads what
    /// strangers send would own the whole machine. Run it as a user of its own instead
    /// (docs/DEPLOY.md).
    #[arg(long, env = "SAMIZDAT_RELAY_ALLOW_ROOT")]
    pub allow_root: bool,
    /// Read the configuration (file, environment, flags), say whether it holds, and exit
    /// without starting: for packages and operators before a restart.
    #[arg(long)]
    pub check_config: bool,
}

pub fn load_config(args: &RelayArgs) -> Result<Config> {
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading relay config {}", path.display()))?;
            toml::from_str::<Config>(&text)
                .with_context(|| format!("parsing relay config {}", path.display()))?
        }
        None => Config::default(),
    };
    if let Some(l) = &args.listen {
        config.listen = l.clone();
    }
    if let Some(d) = &args.data {
        config.data = d.clone();
    }
    if let Some(c) = &args.tls_cert {
        config.tls_cert = Some(c.clone());
    }
    if let Some(k) = &args.tls_key {
        config.tls_key = Some(k.clone());
    }
    if let Some(d) = &args.tls_self_signed {
        config.tls_self_signed = Some(d.clone());
    }
    if let Some(b) = &args.blob_dir {
        config.blob_dir = Some(b.clone());
    }
    if let Some(n) = args.max_blob_bytes {
        config.limits.max_blob_bytes = n;
    }
    if let Some(p) = args.min_free_disk_percent {
        config.limits.min_free_disk_percent = p;
    }
    if let Some(db) = &args.database {
        config.database = Some(db.clone());
    }
    if let Some(n) = args.pool_size {
        config.pool_size = n;
    }
    if let Some(m) = &args.metrics_listen {
        config.metrics_listen = Some(m.clone());
    }
    if let Some(p) = &args.path_prefix {
        config.path_prefix = Some(p.clone());
    }
    if !args.trusted_proxies.is_empty() {
        config.trusted_proxies = args.trusted_proxies.clone();
    }
    Ok(config)
}

/// The data directory, made if missing, readable by the relay's user alone (0700): an older
/// directory with wider rights is narrowed, and one of another user is refused.
fn private_dir(dir: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating the data directory {}", dir.display()))?;
    let meta = std::fs::metadata(dir)
        .with_context(|| format!("reading the data directory {}", dir.display()))?;
    if meta.uid() != rustix::process::geteuid().as_raw() {
        anyhow::bail!(
            "the data directory {} belongs to another user; the relay keeps its data in a \
             directory of its own",
            dir.display()
        );
    }
    if meta.mode() & 0o777 != 0o700 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making {} private (0700)", dir.display()))?;
        tracing::info!("the data directory is now readable by this user alone (0700)");
    }
    Ok(())
}

pub async fn run(args: RelayArgs) -> Result<()> {
    // Everything the relay creates (database, journal, blobs, certificate) is its own:
    // metadata is not for the other accounts of the host (security review 3, L10).
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let config = load_config(&args)?;
    let storage = match &config.database {
        Some(_) => "PostgreSQL".to_string(),
        None => format!("SQLite in {}", config.data.display()),
    };
    if args.check_config {
        println!("configuration ok: listen {}, {storage}", config.listen);
        return Ok(());
    }
    if rustix::process::geteuid().is_root() && !args.allow_root {
        anyhow::bail!(
            "the relay does not run as root: a flaw in it would own the machine. Run it as a \
             user of its own (see docs/DEPLOY.md), or pass --allow-root \
             (SAMIZDAT_RELAY_ALLOW_ROOT=1) if you must"
        );
    }
    if config.database.is_none() {
        private_dir(&config.data)?;
    }
    let mut relay = Relay::start(config).await.context("starting the relay")?;
    tracing::info!(addr = %relay.addr(), storage = %storage, "relay listening");
    println!("relay listening on {}", relay.url());
    if let Some(m) = relay.metrics_addr() {
        tracing::info!(addr = %m, "metrics listening");
    }

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        r = relay.stopped() => return r.context("relay stopped"),
    }
    tracing::info!("shutting down: no new connections; finishing in-flight requests");
    relay.shutdown().await.context("shutting down the relay")?;
    tracing::info!("relay stopped");
    Ok(())
}
