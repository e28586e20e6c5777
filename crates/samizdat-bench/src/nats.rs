//! The peer: NATS JetStream with file storage, started here from Debian's `nats-server` on a
//! free loopback port with its own store directory, driven with async-nats under the same
//! closed-loop load as the relay.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt;

use crate::load::{now_us, read_stamp, stamped};
use crate::util::{pct, random_bytes};

pub struct PeerResult {
    pub version: String,
    pub fsync: String,
    pub published_per_s: f64,
    pub delivered_per_s: f64,
    pub p50: f64,
    pub p99: f64,
}

struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub async fn closed_loop(
    dir: &std::path::Path,
    subjects: usize,
    inflight: usize,
    dur: Duration,
    size: usize,
) -> Result<PeerResult> {
    let bin = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .ok_or_else(|| {
            anyhow!("nats-server not found: apt-get install nats-server (or pass --no-peer)")
        })?;
    let version = Command::new(bin)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let port = free_port()?;
    let store = dir.join(format!("nats-{size}"));
    std::fs::create_dir_all(&store)?;
    let conf = dir.join(format!("nats-{size}.conf"));
    // nats-server 2.9 has no `sync_interval` setting: its file store fsyncs on a timer
    // (every 2 minutes by default), weaker than the relay's fsync before every answer.
    std::fs::write(
        &conf,
        format!(
            "listen: 127.0.0.1:{port}\njetstream {{\n  store_dir: \"{}\"\n}}\n",
            store.display()
        ),
    )?;
    let _server = Server(
        Command::new(bin)
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
    Ok(PeerResult {
        version,
        fsync: "default fsync (timer-based, every 2 min)".into(),
        published_per_s: published.load(Ordering::Relaxed) as f64 / secs,
        delivered_per_s: delivered.load(Ordering::Relaxed) as f64 / secs,
        p50: pct(&mut l, 50.0),
        p99: pct(&mut l, 99.0),
    })
}
