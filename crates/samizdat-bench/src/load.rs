//! Relay load: durable throughput and latency (with the storage floor and the peers: NATS
//! JetStream with and without fsync, Redis Streams with fsync),
//! fan-out, and idle connections. A lean load client speaks the real protocol: appends with
//! epoch tokens (binary frames over a WebSocket, or JSON over HTTP with `--transport http`),
//! WebSocket subscriptions that receive pushes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use samizdat_proto::{BinaryAppend, Bytes, ClientFrame, EntryKind, Id, ServerFrame};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::util::{
    RelayChild, cpu_time, fmt_rate, ms, pct, random_bytes, relay_counts, rss_kib, with_progress,
};
use crate::{Report, nats, redis_peer};

/// Sizes of real MLS application messages (PQ suite): a short text and a longer one.
pub const SIZES: [usize; 2] = [246, 1170];

static BASE: OnceLock<Instant> = OnceLock::new();

pub fn now_us() -> u64 {
    BASE.get_or_init(Instant::now).elapsed().as_micros() as u64
}

fn rand_id() -> Id {
    let mut b = [0u8; 16];
    let _ = aws_lc_rs::rand::fill(&mut b);
    Id::from_bytes(b)
}

fn sha256(d: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, d)
        .as_ref()
        .to_vec()
}

/// A body of `size` bytes whose first 12 bytes carry the intended send time and a step tag.
pub fn stamped(template: &[u8], t_us: u64, step: u32) -> Vec<u8> {
    let mut b = template.to_vec();
    b[..8].copy_from_slice(&t_us.to_be_bytes());
    b[8..12].copy_from_slice(&step.to_be_bytes());
    b
}

pub fn read_stamp(body: &[u8]) -> Option<(u64, u32)> {
    let t = u64::from_be_bytes(body.get(..8)?.try_into().ok()?);
    let s = u32::from_be_bytes(body.get(8..12)?.try_into().ok()?);
    Some((t, s))
}

#[derive(Clone)]
pub struct Lean {
    http: reqwest::Client,
    pub base: String,
}

#[derive(Clone)]
pub struct Group {
    pub id: Id,
    pub token: Vec<u8>,
}

impl Lean {
    pub fn new(base: &str) -> Lean {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(1024)
            .build()
            .unwrap_or_default();
        Lean {
            http,
            base: base.to_string(),
        }
    }

    pub async fn create_group(&self) -> Result<Group> {
        let id = rand_id();
        let token = random_bytes(32);
        let r = self
            .http
            .post(format!("{}/v1/groups", self.base))
            .json(&json!({"request_id": rand_id(), "group_id": id, "epoch": 0, "token_hash": Bytes(sha256(&token))}))
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("create group: {}", r.text().await?);
        }
        Ok(Group { id, token })
    }

    pub async fn append(&self, g: &Group, body: Vec<u8>) -> Result<()> {
        let r = self
            .http
            .post(format!("{}/v1/groups/{}/entries", self.base, g.id))
            .header(samizdat_proto::HEADER_TOKEN, Bytes::encode(&g.token))
            .json(&json!({"request_id": rand_id(), "kind": EntryKind::Application, "epoch": 0, "body": Bytes(body)}))
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("append: {}", r.text().await?);
        }
        Ok(())
    }
}

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

type Pending = Arc<Mutex<HashMap<Id, tokio::sync::oneshot::Sender<bool>>>>;

/// One WebSocket that appends: binary frames, many in flight, answers matched by request id.
#[derive(Clone)]
pub struct WsLane {
    sink: Arc<tokio::sync::Mutex<futures_util::stream::SplitSink<Ws, Message>>>,
    pending: Pending,
}

impl WsLane {
    pub async fn connect(addr: &str) -> Result<WsLane> {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/v1/ws")).await?;
        let (sink, mut stream) = ws.split();
        let pending: Pending = Arc::default();
        let p = pending.clone();
        tokio::spawn(async move {
            while let Some(Ok(msg)) = stream.next().await {
                let Message::Text(t) = msg else { continue };
                let (id, ok) = match serde_json::from_str::<ServerFrame>(t.as_str()) {
                    Ok(ServerFrame::Appended { request_id, .. }) => (request_id, true),
                    Ok(ServerFrame::AppendFailed { request_id, .. }) => (request_id, false),
                    _ => continue,
                };
                let tx = p.lock().ok().and_then(|mut p| p.remove(&id));
                if let Some(tx) = tx {
                    let _ = tx.send(ok);
                }
            }
            // Closed: every pending append fails.
            if let Ok(mut p) = p.lock() {
                p.clear();
            }
        });
        Ok(WsLane {
            sink: Arc::new(tokio::sync::Mutex::new(sink)),
            pending,
        })
    }

    pub async fn append(&self, g: &Group, body: Vec<u8>) -> Result<()> {
        let request_id = rand_id();
        let (tx, rx) = tokio::sync::oneshot::channel();
        if let Ok(mut p) = self.pending.lock() {
            p.insert(request_id, tx);
        }
        let frame = BinaryAppend {
            request_id,
            group_id: g.id,
            epoch: 0,
            token: g.token.clone(),
            body,
        }
        .encode();
        self.sink
            .lock()
            .await
            .send(Message::Binary(frame.into()))
            .await?;
        match rx.await {
            Ok(true) => Ok(()),
            Ok(false) => bail!("append refused"),
            Err(_) => bail!("connection closed"),
        }
    }
}

/// How a sender appends.
#[derive(Clone)]
pub enum Lane {
    Http(Lean),
    Ws(WsLane),
}

impl Lane {
    pub async fn append(&self, g: &Group, body: Vec<u8>) -> Result<()> {
        match self {
            Lane::Http(l) => l.append(g, body).await,
            Lane::Ws(w) => w.append(g, body).await,
        }
    }
}

/// `--transport`: how the load client appends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// Binary frames over one WebSocket per sender, pipelined (the client's path).
    Ws,
    /// JSON bodies over HTTP/1.1 with keep-alive (the path of the first version).
    Http,
}

/// `--pushes`: how the relay pushes entries to the benchmark's subscribers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Pushes {
    /// Binary `BinaryEntry` frames, asked for with `options` (the client's path).
    Binary,
    /// `entry` text frames, JSON with a base64 body (the path of the first version).
    Text,
}

/// Whether subscribers ask for binary entries (`--pushes`, binary unless set otherwise).
static TEXT_PUSHES: AtomicBool = AtomicBool::new(false);

pub fn set_pushes(p: Pushes) {
    TEXT_PUSHES.store(p == Pushes::Text, Ordering::Relaxed);
}

/// The body of a pushed entry, in either form.
pub fn entry_body(msg: Message) -> Option<Vec<u8>> {
    match msg {
        Message::Binary(b) => samizdat_proto::BinaryEntry::decode(&b).ok().map(|e| e.body),
        Message::Text(t) => match serde_json::from_str::<ServerFrame>(t.as_str()) {
            Ok(ServerFrame::Entry { body, .. }) => Some(body.0),
            _ => None,
        },
        _ => None,
    }
}

/// Connect and subscribe to `g` from its start; returns once the relay confirmed.
pub async fn subscribe(addr: &str, g: &Group) -> Result<Ws> {
    subscribe_at(addr, g, 0).await
}

/// Subscribe to epoch `epoch` of a group log whose token is `g.token`.
pub async fn subscribe_at(addr: &str, g: &Group, epoch: u64) -> Result<Ws> {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/v1/ws")).await?;
    if !TEXT_PUSHES.load(Ordering::Relaxed) {
        let options = ClientFrame::Options {
            binary_entries: true,
        };
        ws.send(Message::Text(serde_json::to_string(&options)?.into()))
            .await?;
    }
    let frame = ClientFrame::SubscribeGroup {
        group_id: g.id,
        epoch,
        token: Bytes(g.token.clone()),
        after: 0,
    };
    ws.send(Message::Text(serde_json::to_string(&frame)?.into()))
        .await?;
    while let Some(msg) = ws.next().await {
        if let Message::Text(t) = msg?
            && let Ok(ServerFrame::Subscribed { .. }) = serde_json::from_str(t.as_str())
        {
            return Ok(ws);
        }
    }
    Err(anyhow!(
        "connection closed before the subscription was confirmed"
    ))
}

/// Latency samples (ms) per step, and a delivery counter, fed by subscribers.
#[derive(Default)]
pub struct Sink {
    pub delivered: AtomicU64,
    pub latencies: Mutex<HashMap<u32, Vec<f64>>>,
    pub delivered_per_step: Mutex<HashMap<u32, u64>>,
}

impl Sink {
    pub fn record(&self, body: &[u8]) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
        if let Some((t, step)) = read_stamp(body) {
            let lat = (now_us().saturating_sub(t)) as f64 / 1000.0;
            if let Ok(mut l) = self.latencies.lock() {
                l.entry(step).or_default().push(lat);
            }
            if let Ok(mut d) = self.delivered_per_step.lock() {
                *d.entry(step).or_default() += 1;
            }
        }
    }

    pub fn take(&self, step: u32) -> (Vec<f64>, u64) {
        let l = self
            .latencies
            .lock()
            .ok()
            .and_then(|mut l| l.remove(&step))
            .unwrap_or_default();
        let d = self
            .delivered_per_step
            .lock()
            .ok()
            .and_then(|mut d| d.remove(&step))
            .unwrap_or(0);
        (l, d)
    }
}

fn spawn_reader(mut ws: Ws, sink: Arc<Sink>) {
    tokio::spawn(async move {
        while let Some(Ok(msg)) = ws.next().await {
            if let Some(body) = entry_body(msg) {
                sink.record(&body);
            }
        }
    });
}

#[derive(Debug, clap::Args)]
pub struct RelayArgs {
    /// Concurrent senders, each appending to its own group with one online subscriber.
    #[arg(long, default_value_t = 16)]
    pub senders: usize,
    /// Requests in flight per sender in the closed-loop saturation runs.
    #[arg(long, default_value_t = 8)]
    pub inflight: usize,
    /// Seconds per measurement step.
    #[arg(long, default_value_t = 4)]
    pub duration: u64,
    /// Run the relay on PostgreSQL at this URL instead of SQLite.
    #[arg(long)]
    pub database: Option<String>,
    /// Relay processes (sharing --database; senders and subscribers are spread over them).
    #[arg(long, default_value_t = 1)]
    pub processes: usize,
    /// Skip the peers (NATS JetStream in both sync modes, Redis Streams with fsync always).
    #[arg(long)]
    pub no_peer: bool,
    /// Drive an already running relay at this URL instead of starting one (for profiling a
    /// relay under valgrind or perf).
    #[arg(long)]
    pub relay_url: Option<String>,
    /// How appends travel.
    #[arg(long, value_enum, default_value = "ws")]
    pub transport: Transport,
    /// How entries are pushed to the subscribers.
    #[arg(long, value_enum, default_value = "binary")]
    pub pushes: Pushes,
}

struct Closed {
    appended_per_s: f64,
    delivered_per_s: f64,
    p50: f64,
    p99: f64,
}

/// Closed loop: every sender keeps `inflight` appends outstanding for `dur`.
async fn closed_loop(
    lanes: &[Lane],
    groups: &[Group],
    inflight: usize,
    dur: Duration,
    size: usize,
    sink: &Arc<Sink>,
    step: u32,
) -> Result<Closed> {
    let template = random_bytes(size);
    let ok = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + dur;
    let mut tasks = Vec::new();
    for (i, g) in groups.iter().enumerate() {
        for _ in 0..inflight {
            let lean = lanes[i].clone();
            let g = g.clone();
            let template = template.clone();
            let ok = ok.clone();
            tasks.push(tokio::spawn(async move {
                while Instant::now() < deadline {
                    if lean
                        .append(&g, stamped(&template, now_us(), step))
                        .await
                        .is_ok()
                    {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
    }
    for t in tasks {
        t.await?;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (mut lat, delivered) = sink.take(step);
    let secs = dur.as_secs_f64();
    Ok(Closed {
        appended_per_s: ok.load(Ordering::Relaxed) as f64 / secs,
        delivered_per_s: delivered as f64 / secs,
        p50: pct(&mut lat, 50.0),
        p99: pct(&mut lat, 99.0),
    })
}

struct Open {
    offered: f64,
    appended_per_s: f64,
    delivered_per_s: f64,
    p50: f64,
    p99: f64,
    p999: f64,
}

/// Open loop at `rate` appends/s in total: sends leave on schedule whatever the relay does,
/// and latency counts from the scheduled time (no coordinated omission).
async fn open_loop(
    lanes: &[Lane],
    groups: &[Group],
    rate: f64,
    dur: Duration,
    size: usize,
    sink: &Arc<Sink>,
    step: u32,
) -> Result<Open> {
    let template = random_bytes(size);
    let ok = Arc::new(AtomicU64::new(0));
    let per_group = rate / groups.len() as f64;
    let interval = Duration::from_secs_f64(1.0 / per_group.max(0.001));
    let n_per_group = (per_group * dur.as_secs_f64()).round() as u64;
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let mut senders = Vec::new();
    for (i, g) in groups.iter().enumerate() {
        let lean = lanes[i].clone();
        let g = g.clone();
        let template = template.clone();
        let ok = ok.clone();
        let offset = interval.mul_f64(i as f64 / groups.len() as f64);
        senders.push(tokio::spawn(async move {
            let mut inflight = Vec::new();
            for k in 0..n_per_group {
                let at = start + offset + interval.mul_f64(k as f64);
                tokio::time::sleep_until(at).await;
                let intended = now_us().saturating_sub(
                    tokio::time::Instant::now()
                        .saturating_duration_since(at)
                        .as_micros() as u64,
                );
                let lean = lean.clone();
                let g = g.clone();
                let body = stamped(&template, intended, step);
                let ok = ok.clone();
                inflight.push(tokio::spawn(async move {
                    if lean.append(&g, body).await.is_ok() {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                }));
            }
            for t in inflight {
                let _ = t.await;
            }
        }));
    }
    for s in senders {
        s.await?;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (mut lat, delivered) = sink.take(step);
    let secs = dur.as_secs_f64();
    Ok(Open {
        offered: rate,
        appended_per_s: ok.load(Ordering::Relaxed) as f64 / secs,
        delivered_per_s: delivered as f64 / secs,
        p50: pct(&mut lat, 50.0),
        p99: pct(&mut lat, 99.0),
        p999: pct(&mut lat, 99.9),
    })
}

/// The storage floor: the same rows straight into SQLite, WAL + synchronous=FULL, one
/// transaction per batch, on the same disk.
fn sqlite_floor(dir: &std::path::Path, size: usize, batch: usize, dur: Duration) -> Result<f64> {
    let path = dir.join(format!("floor-{size}-{batch}.db"));
    let conn = rusqlite::Connection::open(&path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(
        "CREATE TABLE entries (group_id BLOB NOT NULL, seq INTEGER NOT NULL, epoch INTEGER NOT NULL, kind INTEGER NOT NULL,
         body BLOB NOT NULL, stored_at INTEGER NOT NULL, PRIMARY KEY (group_id, seq)) STRICT, WITHOUT ROWID;
         CREATE INDEX entries_epoch ON entries (group_id, epoch, seq);",
    )?;
    let body = random_bytes(size);
    let gid = random_bytes(16);
    let start = Instant::now();
    let mut rows = 0u64;
    while start.elapsed() < dur {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        {
            let mut stmt = conn.prepare_cached("INSERT INTO entries (group_id, seq, epoch, kind, body, stored_at) VALUES (?1, ?2, 0, 0, ?3, 0)")?;
            for _ in 0..batch {
                rows += 1;
                stmt.execute(rusqlite::params![gid, rows as i64, body])?;
            }
        }
        conn.execute_batch("COMMIT")?;
    }
    Ok(rows as f64 / start.elapsed().as_secs_f64())
}

/// pgbench: Debian installs it beside the server, not on PATH.
fn pgbench_path() -> Option<std::path::PathBuf> {
    if let Ok(out) = std::process::Command::new("pgbench")
        .arg("--version")
        .output()
        && out.status.success()
    {
        return Some("pgbench".into());
    }
    let mut found: Vec<std::path::PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin/pgbench"))
        .filter(|p| p.exists())
        .collect();
    found.sort();
    found.pop()
}

/// The PostgreSQL floor: pgbench on the same database, `clients` connections each inserting
/// the same rows as the relay (one row of `size` bytes per transaction, committed with the
/// server's `synchronous_commit`) for `dur`. Returns transactions (= rows) per second.
fn pg_floor(
    url: &str,
    dir: &std::path::Path,
    size: usize,
    clients: usize,
    dur: Duration,
) -> Result<f64> {
    let pgbench =
        pgbench_path().ok_or_else(|| anyhow!("pgbench not found (Debian: postgresql-client)"))?;
    let setup = std::process::Command::new("psql")
        .arg(url)
        .args(["-q", "-v", "ON_ERROR_STOP=1", "-c"])
        .arg(
            "DROP TABLE IF EXISTS samizdat_floor_entries; DROP SEQUENCE IF EXISTS samizdat_floor_seq;
             CREATE TABLE samizdat_floor_entries (group_id BYTEA NOT NULL, seq BIGINT NOT NULL, epoch BIGINT NOT NULL,
               kind SMALLINT NOT NULL, body BYTEA NOT NULL, stored_at BIGINT NOT NULL, PRIMARY KEY (group_id, seq));
             CREATE SEQUENCE samizdat_floor_seq;",
        )
        .output()?;
    if !setup.status.success() {
        bail!("pgbench setup: {}", String::from_utf8_lossy(&setup.stderr));
    }
    let script = dir.join(format!("floor-{size}.sql"));
    std::fs::write(
        &script,
        format!(
            "INSERT INTO samizdat_floor_entries VALUES ('\\x00112233445566778899aabbccddeeff'::bytea, nextval('samizdat_floor_seq'), 0, 0, convert_to(repeat('x', {size}), 'UTF8'), 0);\n"
        ),
    )?;
    let out = std::process::Command::new(pgbench)
        .args([
            "-n",
            "-M",
            "prepared",
            "-c",
            &clients.to_string(),
            "-j",
            "2",
            "-T",
        ])
        .arg(dur.as_secs().max(1).to_string())
        .arg("-f")
        .arg(&script)
        .arg(url)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let tps = text
        .lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.trim_start_matches("tps = ").split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .ok_or_else(|| {
            anyhow!(
                "pgbench printed no tps: {text} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    let _ = std::process::Command::new("psql")
        .arg(url)
        .args(["-q", "-c", "DROP TABLE IF EXISTS samizdat_floor_entries; DROP SEQUENCE IF EXISTS samizdat_floor_seq;"])
        .output();
    Ok(tps)
}

pub async fn relay(args: RelayArgs) -> Result<Report> {
    set_pushes(args.pushes);
    let tmp = tempfile::tempdir()?;
    let dur = Duration::from_secs(args.duration.max(1));
    let mut relays = Vec::new();
    let mut urls = Vec::new();
    match &args.relay_url {
        Some(url) => urls.push(url.trim_end_matches('/').to_string()),
        None => {
            for i in 0..args.processes.max(1) {
                let r = RelayChild::start(
                    &tmp.path().join(format!("relay{i}")),
                    args.database.as_deref(),
                )?;
                urls.push(r.url.clone());
                relays.push(r);
            }
        }
    }
    let leans: Vec<Lean> = urls.iter().map(|u| Lean::new(u)).collect();
    let sink = Arc::new(Sink::default());
    let mut groups = Vec::new();
    for i in 0..args.senders {
        let g = leans[0].create_group().await?;
        // Subscribers on another process than the sender when there are several.
        let sub_url = &urls[(i + 1) % urls.len()];
        spawn_reader(
            subscribe(sub_url.trim_start_matches("http://"), &g).await?,
            sink.clone(),
        );
        groups.push(g);
    }
    // One lane per sender: its own WebSocket, or a keep-alive HTTP client per relay process.
    let mut lanes = Vec::new();
    for i in 0..groups.len() {
        let url = &urls[i % urls.len()];
        lanes.push(match args.transport {
            Transport::Ws => Lane::Ws(WsLane::connect(url.trim_start_matches("http://")).await?),
            Transport::Http => Lane::Http(leans[i % leans.len()].clone()),
        });
    }
    let backend = if args.database.is_some() {
        "postgresql"
    } else {
        "sqlite"
    };
    let mut text = format!(
        "Relay durable throughput and latency — backend {backend}, appends {}, pushes {}, {} relay process(es), {} senders × {} in flight, {} s per step\n",
        match args.transport {
            Transport::Ws => "as binary WebSocket frames",
            Transport::Http => "as JSON over HTTP",
        },
        match args.pushes {
            Pushes::Binary => "as binary entry frames",
            Pushes::Text => "as JSON entry frames",
        },
        urls.len(),
        args.senders,
        args.inflight,
        dur.as_secs()
    );
    let mut json_sizes = Vec::new();
    let mut step = 0u32;
    let metrics: Vec<String> = relays.iter().map(|r| r.metrics.clone()).collect();
    for size in SIZES {
        step += 1;
        let before = relay_counts(&metrics).await?;
        let sat = with_progress(
            &format!("relay saturation, {size} B"),
            dur,
            closed_loop(&lanes, &groups, args.inflight, dur, size, &sink, step),
        )
        .await?;
        let after = relay_counts(&metrics).await?;
        // Writes per write transaction during the saturation run (group commit).
        let mean_batch =
            (after.writes - before.writes) as f64 / (after.batches - before.batches).max(1) as f64;
        // Log reads per append made to push entries (announced entries are pushed without one).
        let reads_per_append = (after.push_reads - before.push_reads) as f64
            / (sat.appended_per_s * dur.as_secs_f64()).max(1.0);
        let floors: Vec<(usize, f64)> = [1usize, 16, 128, 512]
            .iter()
            .map(|b| sqlite_floor(tmp.path(), size, *b, Duration::from_secs(2)).map(|r| (*b, r)))
            .collect::<Result<_>>()?;
        let floor = floors.iter().map(|f| f.1).fold(0.0, f64::max);
        // As many pgbench clients as appends in flight, within PostgreSQL's default
        // max_connections (100) beside the relay's pools.
        let pg_clients = (args.senders * args.inflight).min(32);
        let pg = match &args.database {
            Some(url) => Some(pg_floor(url, tmp.path(), size, pg_clients, dur)?),
            None => None,
        };
        // The peers under the same closed loop: two that fsync before acknowledging (the
        // relay's promise) and NATS as it ships, which acknowledges from memory.
        let mut peers: Vec<nats::PeerResult> = Vec::new();
        if !args.no_peer {
            for sync in [nats::Sync::Always, nats::Sync::Default] {
                peers.push(
                    with_progress(
                        &format!("NATS JetStream peer ({sync:?}), {size} B"),
                        dur,
                        nats::closed_loop(tmp.path(), sync, args.senders, args.inflight, dur, size),
                    )
                    .await?,
                );
            }
            peers.push(
                with_progress(
                    &format!("Redis Streams peer (appendfsync always), {size} B"),
                    dur,
                    redis_peer::closed_loop(tmp.path(), args.senders, args.inflight, dur, size),
                )
                .await?,
            );
        }
        let mut ladder = Vec::new();
        for frac in [0.1, 0.25, 0.5, 0.75, 0.9, 1.0, 1.2] {
            step += 1;
            let rate = (sat.appended_per_s * frac).max(1.0);
            let o = with_progress(
                &format!("open loop {:.0}/s ({:.0}%), {size} B", rate, frac * 100.0),
                dur,
                open_loop(&lanes, &groups, rate, dur, size, &sink, step),
            )
            .await?;
            ladder.push((frac, o));
        }
        text += &format!("\n-- entries of {size} B\n");
        text += &format!(
            "saturation (closed loop): appended {}/s, delivered {}/s, append→push p50 {} ms, p99 {} ms\n",
            fmt_rate(sat.appended_per_s),
            fmt_rate(sat.delivered_per_s),
            ms(sat.p50),
            ms(sat.p99)
        );
        if !metrics.is_empty() {
            text += &format!(
                "group commit at saturation: {mean_batch:.1} writes per write transaction ({}); {reads_per_append:.3} log reads per append to push entries\n",
                if args.database.is_some() {
                    "appends batched per group"
                } else {
                    "the SQLite writer's batches, all writes"
                }
            );
        }
        text += &format!(
            "storage floor (SQLite WAL, synchronous=FULL): {} rows/s (batch 1: {}, 16: {}, 128: {}, 512: {}) → relay/floor = {:.3}\n",
            fmt_rate(floor),
            fmt_rate(floors[0].1),
            fmt_rate(floors[1].1),
            fmt_rate(floors[2].1),
            fmt_rate(floors[3].1),
            sat.appended_per_s / floor
        );
        if let Some(pg) = pg {
            text += &format!(
                "PostgreSQL floor (pgbench, same database, {} clients, one {size} B row per transaction): {} rows/s → relay/pgbench = {:.3}\n",
                pg_clients,
                fmt_rate(pg),
                sat.appended_per_s / pg
            );
        }
        for p in &peers {
            text += &format!(
                "peer {} {} ({}): published {}/s, delivered {}/s, p50 {} ms, p99 {} ms → relay/peer = {:.2}\n",
                p.name,
                p.version,
                p.promise,
                fmt_rate(p.published_per_s),
                fmt_rate(p.delivered_per_s),
                ms(p.p50),
                ms(p.p99),
                sat.appended_per_s / p.published_per_s
            );
        }
        text += "offered/s    appended/s   delivered/s   p50 ms   p99 ms   p99.9 ms\n";
        for (_, o) in &ladder {
            text += &format!(
                "{:>9} {:>13} {:>13} {:>8} {:>8} {:>10}\n",
                fmt_rate(o.offered),
                fmt_rate(o.appended_per_s),
                fmt_rate(o.delivered_per_s),
                ms(o.p50),
                ms(o.p99),
                ms(o.p999)
            );
        }
        json_sizes.push(json!({
            "size": size,
            "saturation": {"appended_per_s": sat.appended_per_s, "delivered_per_s": sat.delivered_per_s, "p50_ms": sat.p50, "p99_ms": sat.p99, "writes_per_transaction": mean_batch, "push_reads_per_append": reads_per_append},
            "floor_rows_per_s": floor,
            "floor_by_batch": floors.iter().map(|(b, r)| json!({"batch": b, "rows_per_s": r})).collect::<Vec<_>>(),
            "relay_over_floor": sat.appended_per_s / floor,
            "pgbench_rows_per_s": pg,
            "relay_over_pgbench": pg.map(|pg| sat.appended_per_s / pg),
            "peers": peers.iter().map(|p| json!({"name": p.name, "version": p.version, "promise": p.promise,
                "durable": p.durable, "appends_per_s": p.published_per_s, "delivered_per_s": p.delivered_per_s,
                "p50_ms": p.p50, "p99_ms": p.p99, "relay_over_peer": sat.appended_per_s / p.published_per_s})).collect::<Vec<_>>(),
            "open_loop": ladder.iter().map(|(f, o)| json!({"fraction_of_saturation": f, "offered_per_s": o.offered,
                "appended_per_s": o.appended_per_s, "delivered_per_s": o.delivered_per_s, "p50_ms": o.p50, "p99_ms": o.p99, "p999_ms": o.p999})).collect::<Vec<_>>(),
        }));
    }
    Ok(Report {
        text,
        json: json!({"benchmark": "relay", "backend": backend, "transport": format!("{:?}", args.transport).to_lowercase(), "processes": urls.len(), "senders": args.senders,
                     "inflight": args.inflight, "step_secs": dur.as_secs(), "sizes": json_sizes}),
    })
}

#[derive(Debug, clap::Args)]
pub struct FanoutArgs {
    /// Group sizes (online members).
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000")]
    pub members: Vec<usize>,
    /// Messages per group size.
    #[arg(long, default_value_t = 200)]
    pub messages: usize,
    /// Messages per second.
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    #[arg(long)]
    pub database: Option<String>,
}

pub async fn fanout(args: FanoutArgs) -> Result<Report> {
    let tmp = tempfile::tempdir()?;
    let relay = RelayChild::start(&tmp.path().join("relay"), args.database.as_deref())?;
    let lean = Lean::new(&relay.url);
    let mut text = String::from(
        "Fan-out: time from append until the last online member has the message (246 B entries)\nmembers   p50 ms   p99 ms   max ms   relay CPU µs per delivered copy\n",
    );
    let mut rows = Vec::new();
    for &n in &args.members {
        let g = lean.create_group().await?;
        // Arrivals per message: seq tag → (count, last arrival).
        let arrivals: Arc<Mutex<HashMap<u32, (usize, u64)>>> = Arc::new(Mutex::new(HashMap::new()));
        let mut conns = Vec::new();
        for _ in 0..n {
            conns.push(
                subscribe(&relay.addr, &g)
                    .await
                    .context("subscribing a member")?,
            );
        }
        for mut ws in conns {
            let arrivals = arrivals.clone();
            tokio::spawn(async move {
                while let Some(Ok(msg)) = ws.next().await {
                    if let Some(body) = entry_body(msg)
                        && let Some((_, tag)) = read_stamp(&body)
                    {
                        let now = now_us();
                        if let Ok(mut a) = arrivals.lock() {
                            let e = a.entry(tag).or_insert((0, 0));
                            e.0 += 1;
                            e.1 = e.1.max(now);
                        }
                    }
                }
            });
        }
        let template = random_bytes(246);
        let cpu0 = cpu_time(relay.pid())?;
        let mut sent_at = HashMap::new();
        let interval = Duration::from_secs_f64(1.0 / args.rate);
        let total = interval.mul_f64(args.messages as f64);
        with_progress(&format!("fan-out to {n} members"), total, async {
            let mut tick = tokio::time::interval(interval);
            for k in 0..args.messages as u32 {
                tick.tick().await;
                let t = now_us();
                sent_at.insert(k, t);
                lean.append(&g, stamped(&template, t, k)).await?;
            }
            Ok::<_, anyhow::Error>(())
        })
        .await?;
        // Wait until every copy arrived (bounded).
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let complete = arrivals
                .lock()
                .map(|a| a.values().filter(|(c, _)| *c >= n).count())
                .unwrap_or(0);
            if complete >= args.messages || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let cpu = cpu_time(relay.pid())?.saturating_sub(cpu0);
        let a = arrivals.lock().map_err(|_| anyhow!("lock"))?.clone();
        let copies: usize = a.values().map(|(c, _)| *c).sum();
        let mut lat: Vec<f64> = a
            .iter()
            .filter(|(_, (c, _))| *c >= n)
            .filter_map(|(k, (_, last))| {
                sent_at
                    .get(k)
                    .map(|s| (last.saturating_sub(*s)) as f64 / 1000.0)
            })
            .collect();
        let incomplete = args.messages - lat.len();
        let (p50, p99, max) = (
            pct(&mut lat, 50.0),
            pct(&mut lat, 99.0),
            pct(&mut lat, 100.0),
        );
        let cpu_per_copy = cpu.as_secs_f64() * 1e6 / copies.max(1) as f64;
        text += &format!(
            "{n:>7} {:>8} {:>8} {:>8} {:>10.1}{}\n",
            ms(p50),
            ms(p99),
            ms(max),
            cpu_per_copy,
            if incomplete > 0 {
                format!("   ({incomplete} messages not delivered to everyone within 60 s)")
            } else {
                String::new()
            }
        );
        rows.push(json!({"members": n, "messages": args.messages, "p50_ms": p50, "p99_ms": p99, "max_ms": max,
                         "relay_cpu_us_per_copy": cpu_per_copy, "copies": copies, "incomplete": incomplete}));
    }
    Ok(Report {
        text,
        json: json!({"benchmark": "fanout", "rate_per_s": args.rate, "results": rows}),
    })
}

#[derive(Debug, clap::Args)]
pub struct ConnArgs {
    /// Idle subscribers to open (each holds one socket here and one in the relay; this
    /// machine allows about 20,000 open files per process).
    #[arg(long, default_value_t = 15000)]
    pub connections: usize,
}

pub async fn connections(args: ConnArgs) -> Result<Report> {
    let tmp = tempfile::tempdir()?;
    let relay = RelayChild::start(&tmp.path().join("relay"), None)?;
    let lean = Lean::new(&relay.url);
    let g = lean.create_group().await?;
    // Warm up the relay (pools, allocator) before the baseline.
    for _ in 0..50 {
        drop(subscribe(&relay.addr, &g).await?);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss0 = rss_kib(relay.pid())?;
    let n = args.connections;
    let open = |n: usize| {
        let addr = relay.addr.clone();
        let g = g.clone();
        async move {
            let sem = Arc::new(tokio::sync::Semaphore::new(256));
            let mut tasks = Vec::with_capacity(n);
            for _ in 0..n {
                let addr = addr.clone();
                let g = g.clone();
                let sem = sem.clone();
                tasks.push(tokio::spawn(async move {
                    let _p = sem.acquire().await;
                    subscribe(&addr, &g).await
                }));
            }
            let mut conns = Vec::with_capacity(n);
            for t in tasks {
                conns.push(t.await??);
            }
            Ok::<_, anyhow::Error>(conns)
        }
    };
    let t0 = Instant::now();
    let conns = with_progress(
        &format!("opening {n} subscribers"),
        Duration::from_secs(n as u64 / 1500 + 1),
        open(n),
    )
    .await?;
    let open_secs = t0.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss1 = rss_kib(relay.pid())?;
    let per_conn = (rss1.saturating_sub(rss0)) as f64 * 1024.0 / n as f64;
    drop(conns);
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Reconnect storm: everyone at once (256 handshakes in flight).
    let t1 = Instant::now();
    let conns = with_progress(
        "reconnect storm",
        Duration::from_secs_f64(open_secs),
        open(n),
    )
    .await?;
    let storm = t1.elapsed().as_secs_f64();
    let rss2 = rss_kib(relay.pid())?;
    drop(conns);
    let text = format!(
        "Idle authenticated subscribers (token-checked group subscriptions), one relay process\n\
         connections: {n}\nrelay RSS before: {rss0} KiB, with {n} idle: {rss1} KiB → {:.0} bytes per connection ({:.2} KiB)\n\
         first connect: {open_secs:.2} s ({:.0}/s)\nreconnect storm: all {n} back and subscribed in {storm:.2} s ({:.0}/s); RSS after: {rss2} KiB\n",
        per_conn,
        per_conn / 1024.0,
        n as f64 / open_secs,
        n as f64 / storm
    );
    Ok(Report {
        text,
        json: json!({"benchmark": "connections", "connections": n, "rss_before_kib": rss0, "rss_idle_kib": rss1,
                     "bytes_per_connection": per_conn, "connect_secs": open_secs, "reconnect_storm_secs": storm, "rss_after_storm_kib": rss2}),
    })
}
