//! Shared pieces: a relay child process, /proc readings, percentiles, a progress bar.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};

/// The `samizdat` binary the benchmarks start as relays and clients: `SAMIZDAT_BIN` (set by
/// `samizdat bench …` to itself), else the `samizdat` beside this binary (`cargo build
/// --release` puts both in `target/release`).
pub fn samizdat_exe() -> Result<std::path::PathBuf> {
    if let Some(bin) = std::env::var_os("SAMIZDAT_BIN") {
        return Ok(bin.into());
    }
    let me = std::env::current_exe().context("finding this binary")?;
    let beside = me.with_file_name(format!("samizdat{}", std::env::consts::EXE_SUFFIX));
    if beside.is_file() {
        return Ok(beside);
    }
    Err(anyhow!(
        "no samizdat binary beside {}: build it (cargo build --release -p samizdat) or set SAMIZDAT_BIN",
        me.display()
    ))
}

/// A `samizdat relay` child process (the `samizdat` binary, see [`samizdat_exe`]).
pub struct RelayChild {
    pub child: Child,
    pub url: String,
    pub addr: String,
    /// Its Prometheus endpoint.
    pub metrics: String,
}

impl RelayChild {
    pub fn start(data: &Path, database: Option<&str>) -> Result<RelayChild> {
        // All load comes from one address (loopback): the per-address connection cap would
        // refuse the subscribers of the fan-out and connection benchmarks.
        RelayChild::start_with(
            data,
            database,
            "max_connections = 30000\nmax_connections_per_ip = 30000\n",
        )
    }

    /// A relay with `extra` lines added to its `[limits]` table.
    pub fn start_with(data: &Path, database: Option<&str>, extra: &str) -> Result<RelayChild> {
        // Generous limits: the benchmark is one address creating many objects.
        let config = data.with_extension("toml");
        std::fs::create_dir_all(data)?;
        std::fs::write(
            &config,
            format!(
                "[limits]\nclaims_per_ip_per_minute = 1000000\ncreations_per_ip_per_minute = 1000000\nmax_subscriptions = 100000\n{extra}"
            ),
        )?;
        // A free port for the metrics listener (taken and let go: loopback, a benchmark).
        let metrics = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let mut cmd = Command::new(samizdat_exe()?);
        cmd.args(["relay", "--allow-root", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .arg("--config")
            .arg(&config)
            .arg("--metrics-listen")
            .arg(metrics.to_string());
        if let Some(db) = database {
            cmd.args(["--database", db]);
        }
        let mut child = cmd
            .env("SAMIZDAT_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting a relay process")?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let url = line
            .trim()
            .strip_prefix("relay listening on ")
            .ok_or_else(|| anyhow!("relay did not start: {line:?}"))?
            .to_string();
        let addr = url.trim_start_matches("http://").to_string();
        Ok(RelayChild {
            child,
            url,
            addr,
            metrics: format!("http://{metrics}/metrics"),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for RelayChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident set size of a process, in KiB.
pub fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS for {pid}"))
}

/// User + system CPU time of a process.
pub fn cpu_time(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces) start after ") ".
    let rest = stat
        .rsplit_once(") ")
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("bad stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11).and_then(|u| u.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|s| s.parse().ok()).unwrap_or(0);
    // USER_HZ is 100 on Linux.
    Ok(Duration::from_millis(ticks * 10))
}

/// Percentile (0–100) of unsorted samples, in the samples' unit.
pub fn pct(samples: &mut [f64], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    let idx = ((p / 100.0) * (samples.len() - 1) as f64).round() as usize;
    samples[idx.min(samples.len() - 1)]
}

/// A one-line progress bar on stderr.
pub struct Progress {
    label: String,
    start: Instant,
    total: Duration,
}

impl Progress {
    pub fn new(label: impl Into<String>, total: Duration) -> Progress {
        Progress {
            label: label.into(),
            start: Instant::now(),
            total,
        }
    }

    pub fn tick(&self) {
        let frac =
            (self.start.elapsed().as_secs_f64() / self.total.as_secs_f64().max(0.001)).min(1.0);
        let filled = (frac * 30.0) as usize;
        eprint!(
            "\r{:<40} [{}{}] {:>3.0}%",
            self.label,
            "#".repeat(filled),
            ".".repeat(30 - filled),
            frac * 100.0
        );
        let _ = std::io::stderr().flush();
    }

    pub fn done(&self) {
        eprintln!(
            "\r{:<40} [{}] done in {:.1} s",
            self.label,
            "#".repeat(30),
            self.start.elapsed().as_secs_f64()
        );
    }
}

/// Run `f` while ticking a progress bar every 200 ms.
pub async fn with_progress<T>(
    label: &str,
    expected: Duration,
    f: impl std::future::Future<Output = T>,
) -> T {
    let p = Progress::new(label, expected);
    tokio::pin!(f);
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let out = loop {
        tokio::select! {
            v = &mut f => break v,
            _ = tick.tick() => p.tick(),
        }
    };
    p.done();
    out
}

/// Bytes of the files under `dir` (recursively).
pub fn dir_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let meta = e.metadata()?;
        total += if meta.is_dir() {
            dir_bytes(&e.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

/// Counters of the relays at `urls` (their metrics listeners), summed: write batches and the
/// writes they held (group commit), and log reads made to push entries to subscribers.
#[derive(Debug, Default, Clone, Copy)]
pub struct RelayCounts {
    pub batches: u64,
    pub writes: u64,
    pub push_reads: u64,
    /// WebSockets open now (a gauge).
    pub websockets: u64,
}

pub async fn relay_counts(urls: &[String]) -> Result<RelayCounts> {
    let mut total = RelayCounts::default();
    for u in urls {
        let text = reqwest::get(u).await?.text().await?;
        for line in text.lines() {
            let mut it = line.split_whitespace();
            match (it.next(), it.next().and_then(|v| v.parse::<u64>().ok())) {
                (Some("samizdat_write_batches_total"), Some(v)) => total.batches += v,
                (Some("samizdat_batched_writes_total"), Some(v)) => total.writes += v,
                (Some("samizdat_push_reads_total"), Some(v)) => total.push_reads += v,
                (Some("samizdat_ws_connections"), Some(v)) => total.websockets += v,
                _ => {}
            }
        }
    }
    Ok(total)
}

pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    let _ = aws_lc_rs::rand::fill(&mut v);
    v
}

pub fn fmt_rate(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0}", v)
    } else {
        format!("{:.1}", v)
    }
}

pub fn ms(d: f64) -> String {
    format!("{d:.2}")
}

/// Grow the profile at `home` to `total` messages by copying its newest message (not a line
/// about the conversation) with the text `text(i)`, in one transaction through the profile's
/// own store (its key is derived from the passphrase with Argon2id) — so the same triggers
/// run as for a message that arrives (the search index among them).
pub fn fill_profile(home: &Path, total: u64, mut text: impl FnMut(u64) -> String) -> Result<()> {
    let db =
        samizdat_core::store::Db::open(&samizdat_core::Profile::db_path(home), crate::e2e::PASS)?;
    let conn = db.conn();
    let have: u64 = conn.query_row("SELECT COUNT(*) FROM messages", [], |r| r.get(0))?;
    let tx = conn.unchecked_transaction()?;
    {
        let mut stmt = tx.prepare(
            "INSERT INTO messages (id, group_id, seq, sender_fp, outgoing, body, sent_at, received_at, unread)
             SELECT randomblob(16), group_id, seq + ?1, sender_fp, outgoing, ?2, sent_at + ?1, received_at + ?1, 0
             FROM messages WHERE system IS NULL ORDER BY rowid DESC LIMIT 1",
        )?;
        for i in 0..total.saturating_sub(have) {
            stmt.execute(rusqlite::params![i as i64 + 1_000, text(i)])?;
        }
    }
    tx.commit()?;
    Ok(())
}
