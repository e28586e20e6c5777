//! The second durable peer: Redis Streams with `appendonly yes` and `appendfsync always` — a
//! write is acknowledged after the append-only file is fsync'd (Redis groups the fsyncs of
//! one event-loop turn, as the relay groups a batch's). A private `redis-server` (Debian's)
//! runs on a free loopback port with its own directory; senders `XADD` under the relay's
//! closed loop (one stream per group, `inflight` commands in flight per sender on a
//! pipelined connection), and a subscriber reads every stream with `XREAD BLOCK` (a
//! connection per stream), as the relay pushes every entry to a subscriber.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use redis::AsyncCommands;
use redis::streams::{StreamReadOptions, StreamReadReply};

use crate::load::{now_us, read_stamp, stamped};
use crate::nats::{PeerResult, Server, free_port};
use crate::util::{pct, random_bytes};

const SERVER: &str = "/usr/bin/redis-server";

pub async fn closed_loop(
    dir: &std::path::Path,
    streams: usize,
    inflight: usize,
    dur: Duration,
    size: usize,
) -> Result<PeerResult> {
    if !std::path::Path::new(SERVER).exists() {
        return Err(anyhow!(
            "{SERVER} not found: apt-get install redis-server (or pass --no-peer)"
        ));
    }
    let version = Command::new(SERVER)
        .arg("--version")
        .output()
        .map(|o| {
            let text = String::from_utf8_lossy(&o.stdout).to_string();
            text.split_whitespace()
                .find_map(|w| w.strip_prefix("v="))
                .unwrap_or("?")
                .to_string()
        })
        .unwrap_or_default();
    let port = free_port()?;
    let data = dir.join(format!("redis-{size}"));
    std::fs::create_dir_all(&data)?;
    let _server = Server(
        Command::new(SERVER)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .args(["--save", "", "--daemonize", "no", "--protected-mode", "yes"])
            .arg("--dir")
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-server")?,
    );
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
    let mut control = {
        let mut tries = 0;
        loop {
            match client.get_multiplexed_async_connection().await {
                Ok(c) => break c,
                Err(_) if tries < 50 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    // The promise this run measures, read back from the server itself.
    let fsync: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("appendfsync")
        .query_async(&mut control)
        .await?;
    if fsync.get(1).map(String::as_str) != Some("always") {
        return Err(anyhow!(
            "redis-server did not take appendfsync always: {fsync:?}"
        ));
    }
    let keys: Vec<String> = (0..streams).map(|s| format!("bench.g{s}")).collect();

    let delivered = Arc::new(AtomicU64::new(0));
    let lats = Arc::new(std::sync::Mutex::new(Vec::new()));
    // The subscribers: one connection per stream (XREAD BLOCK holds the connection it is
    // sent on), so reading keeps up as the relay's pushes do.
    let mut readers = Vec::new();
    for key in &keys {
        let mut conn = client.get_multiplexed_async_connection().await?;
        let delivered = delivered.clone();
        let lats = lats.clone();
        let key = key.clone();
        readers.push(tokio::spawn(async move {
            let mut last = "$".to_string();
            let options = StreamReadOptions::default().block(1000).count(4096);
            loop {
                let reply: redis::RedisResult<Option<StreamReadReply>> =
                    conn.xread_options(&[&key], &[&last], &options).await;
                let Ok(reply) = reply else { break };
                let Some(reply) = reply else { continue };
                let mut batch = Vec::new();
                for entry in reply.keys.into_iter().flat_map(|k| k.ids) {
                    delivered.fetch_add(1, Ordering::Relaxed);
                    if let Some(redis::Value::BulkString(body)) = entry.map.get("d")
                        && let Some((t, _)) = read_stamp(body)
                    {
                        batch.push(now_us().saturating_sub(t) as f64 / 1000.0);
                    }
                    last = entry.id;
                }
                if let Ok(mut l) = lats.lock() {
                    l.extend(batch);
                }
            }
        }));
    }
    // Let the first XREAD reach the server before anything is written.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let template = random_bytes(size);
    let published = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + dur;
    let mut tasks = Vec::new();
    for key in &keys {
        // One pipelined connection per sender, `inflight` commands outstanding on it.
        let conn = client.get_multiplexed_async_connection().await?;
        for _ in 0..inflight {
            let mut conn = conn.clone();
            let template = template.clone();
            let published = published.clone();
            let key = key.clone();
            tasks.push(tokio::spawn(async move {
                while Instant::now() < deadline {
                    let body = stamped(&template, now_us(), 0);
                    let added: redis::RedisResult<String> =
                        conn.xadd(&key, "*", &[("d", body)]).await;
                    if added.is_ok() {
                        published.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
    }
    for t in tasks {
        t.await?;
    }
    // Every acknowledged entry is read (or 10 s pass), then the subscribers stop.
    let drain = Instant::now() + Duration::from_secs(10);
    while delivered.load(Ordering::Relaxed) < published.load(Ordering::Relaxed)
        && Instant::now() < drain
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for r in readers {
        r.abort();
    }
    let secs = dur.as_secs_f64();
    let mut l = lats.lock().map_err(|_| anyhow!("lock"))?.clone();
    Ok(PeerResult {
        name: "redis-streams (appendfsync always)".into(),
        version,
        promise: "fsync always: acknowledged after the append-only file is fsync'd (one fsync per event-loop turn)".into(),
        durable: true,
        published_per_s: published.load(Ordering::Relaxed) as f64 / secs,
        delivered_per_s: delivered.load(Ordering::Relaxed) as f64 / secs,
        p50: pct(&mut l, 50.0),
        p99: pct(&mut l, 99.0),
    })
}
