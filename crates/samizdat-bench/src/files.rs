//! Attachments and backups.
//!
//! `bench attachments`: one file (default 100 MB of random bytes) sent through a local relay
//! process by the client core (encrypt + resumable upload + the MLS message), then fetched,
//! checked and decrypted by the receiver — next to the same file copied with `curl` to and
//! from a plain HTTP file server (Python's `http.server` with PUT) on the same machine, in
//! the same run.
//!
//! `bench backup`: a profile holding N messages (default 100,000) backed up and restored.
//! The conversation and its first messages are real (made through a relay); the rest are
//! rows added to the profile's database directly — backup and restore copy the database, so
//! only its size matters, and 100,000 sends would take minutes without measuring anything
//! more.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::json;

use crate::Report;
use crate::e2e::{PASS, ok};
use crate::util::RelayChild;

#[derive(Debug, clap::Args)]
pub struct AttachmentArgs {
    /// File size in MB (10^6 bytes).
    #[arg(long, default_value_t = 100)]
    pub mb: u64,
}

#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    /// Messages in the profile.
    #[arg(long, default_value_t = 100_000)]
    pub messages: u64,
}

/// Two connected profiles on a fresh relay: (alice, bob).
fn pair(dir: &Path, relay: &str) -> Result<(PathBuf, PathBuf)> {
    let (a, b) = (dir.join("alice"), dir.join("bob"));
    introduce(&a, &b, relay, &[])?;
    Ok((a, b))
}

/// Alice (with `alice_init` added to her `init`) and Bob on `relay`, contacts of each other.
fn introduce(a: &Path, b: &Path, relay: &str, alice_init: &[&str]) -> Result<()> {
    let mut init = vec!["init", "--relay", relay, "--name", "Alice"];
    init.extend_from_slice(alice_init);
    ok(a, &init)?;
    ok(b, &["init", "--relay", relay, "--name", "Bob"])?;
    let link = ok(a, &["invite"])?
        .lines()
        .last()
        .ok_or_else(|| anyhow!("no invite link"))?
        .to_string();
    ok(b, &["accept", &link, "--name", "alice"])?;
    ok(a, &["sync"])?;
    Ok(())
}

async fn handle(home: &Path) -> Result<samizdat_core::ClientHandle> {
    let profile = samizdat_core::Profile::open(home, PASS)?;
    Ok(samizdat_core::ClientHandle::start(
        profile,
        samizdat_core::Mode::OnDemand,
    )?)
}

fn mbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64().max(1e-9)
}

/// A plain HTTP file server: GET from the directory, PUT writes a file.
const FILE_SERVER: &str = r#"
import http.server, os, sys
class H(http.server.SimpleHTTPRequestHandler):
    def do_PUT(self):
        n = int(self.headers["Content-Length"])
        with open(os.path.join(self.directory, os.path.basename(self.path)), "wb") as f:
            while n > 0:
                b = self.rfile.read(min(n, 1 << 20))
                if not b: break
                f.write(b); n -= len(b)
        self.send_response(201); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *a): pass
d = sys.argv[1]
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: H(*a, directory=d))
print(s.server_address[1], flush=True)
s.serve_forever()
"#;

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn curl(args: &[&str]) -> Result<Duration> {
    let t = Instant::now();
    let out = Command::new("curl")
        .args(["-sS", "--fail"])
        .args(args)
        .output()
        .context("running curl (apt-get install curl)")?;
    if !out.status.success() {
        bail!("curl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(t.elapsed())
}

/// The same file to and from a plain HTTP server with curl: (upload, download).
fn curl_baseline(dir: &Path, file: &Path) -> Result<(Duration, Duration)> {
    let served = dir.join("served");
    std::fs::create_dir_all(&served)?;
    let mut child = Command::new("python3")
        .args(["-c", FILE_SERVER])
        .arg(&served)
        .stdout(Stdio::piped())
        .spawn()
        .context("starting python3 http.server")?;
    let port = {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?)
            .read_line(&mut line)?;
        line.trim().to_string()
    };
    let _server = Child(child);
    let url = format!("http://127.0.0.1:{port}/file.bin");
    let up = curl(&["-T", &file.display().to_string(), &url])?;
    // The best of three downloads: the peer's figure is its best, not its unluckiest.
    let copy = dir.join("curl-copy.bin").display().to_string();
    let mut down = Duration::MAX;
    for _ in 0..3 {
        let _ = std::fs::remove_file(&copy);
        down = down.min(curl(&["-o", &copy, &url])?);
    }
    Ok((up, down))
}

pub async fn attachments(args: AttachmentArgs) -> Result<Report> {
    let tmp = tempfile::tempdir()?;
    let relay = RelayChild::start(&tmp.path().join("relay"), None)?;
    let (a, b) = {
        let (dir, url) = (tmp.path().to_path_buf(), relay.url.clone());
        tokio::task::spawn_blocking(move || pair(&dir, &url)).await??
    };
    let size = args.mb * 1_000_000;
    let file = tmp.path().join("file.bin");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&file)?);
        let mut left = size;
        while left > 0 {
            let n = left.min(1 << 20);
            f.write_all(&super::util::random_bytes(n as usize))?;
            left -= n;
        }
        f.flush()?;
    }
    eprintln!("attachments: {} MB through the relay", args.mb);
    // Encryption alone, to see where the time goes.
    let enc_out = tmp.path().join("enc-only.bin");
    let t = Instant::now();
    samizdat_core::attachment::encrypt_file(&file, size, &enc_out)?;
    let encrypt = t.elapsed();
    std::fs::remove_file(&enc_out)?;

    // The two primitives alone, in memory: the floor under both directions.
    let (aead, sha, blake3) = primitives(size as usize);

    let alice = handle(&a).await?;
    let bob = handle(&b).await?;
    let t = Instant::now();
    let to_bob = alice
        .call(|p| futures_util::FutureExt::boxed_local(async move { p.find_conversation("Bob") }))
        .await?;
    let id = alice
        .send_file(&to_bob, &file, "bench", &Default::default())
        .await?;
    let upload = t.elapsed();
    samizdat_rpc::call_local(&bob, "sync", json!({}))
        .await
        .map_err(|e| anyhow!("{}", e.message))?;
    let out = tmp.path().join("received.bin");
    let t = Instant::now();
    bob.download(&id, &out).await?;
    let download = t.elapsed();
    if std::fs::metadata(&out)?.len() != size {
        bail!("the received file has the wrong size");
    }
    // The same again from the copy now held: decryption (with the final fsync) alone.
    let t = Instant::now();
    bob.download(&id, &tmp.path().join("received-again.bin"))
        .await?;
    let decrypt = t.elapsed();
    drop((alice, bob));

    eprintln!("attachments: the same file with curl and a plain HTTP server");
    let (curl_up, curl_down) = curl_baseline(tmp.path(), &file)?;
    let rows = [
        ("upload (encrypt + upload + send)", upload, curl_up),
        ("download (fetch + verify + decrypt)", download, curl_down),
    ];
    let mut text = format!(
        "attachment of {} MB through a local relay (SQLite), vs curl to a plain HTTP file server\n\
         {:<38} {:>10} {:>10} {:>12} {:>7}\n",
        args.mb, "", "samizdat", "MB/s", "curl MB/s", "ratio"
    );
    let mut json_rows = Vec::new();
    for (what, ours, theirs) in rows {
        let (o, c) = (mbps(size, ours), mbps(size, theirs));
        text.push_str(&format!(
            "{what:<38} {:>9.2}s {o:>10.1} {c:>12.1} {:>6.2}x\n",
            ours.as_secs_f64(),
            o / c
        ));
        json_rows.push(
            json!({ "what": what, "seconds": ours.as_secs_f64(), "mb_per_s": o,
            "curl_seconds": theirs.as_secs_f64(), "curl_mb_per_s": c, "ratio": o / c }),
        );
    }
    text.push_str(&format!(
        "of which encrypting the file (read, pad, seal, hash, write, fsync): {:.2}s ({:.1} MB/s)\n\
         of which decrypting the held copy (read, open pieces on every core, write, fsync): {:.2}s ({:.1} MB/s)\n\
         in memory: ChaCha20-Poly1305 STREAM {:.1} MB/s, SHA-256 {:.1} MB/s, BLAKE3 (the digest now) {:.1} MB/s\n",
        encrypt.as_secs_f64(),
        mbps(size, encrypt),
        decrypt.as_secs_f64(),
        mbps(size, decrypt),
        mbps(size, aead),
        mbps(size, sha),
        mbps(size, blake3)
    ));
    Ok(Report {
        text,
        json: json!({ "bytes": size, "rows": json_rows,
            "encrypt_seconds": encrypt.as_secs_f64(), "decrypt_seconds": decrypt.as_secs_f64(),
            "aead_mb_per_s": mbps(size, aead), "sha256_mb_per_s": mbps(size, sha),
            "blake3_mb_per_s": mbps(size, blake3) }),
    })
}

/// Seal `n` bytes with the attachment AEAD and hash them, in memory: (AEAD, SHA-256, BLAKE3)
/// times.
fn primitives(n: usize) -> (Duration, Duration, Duration) {
    use chacha20poly1305::aead::stream::EncryptorBE32;
    use chacha20poly1305::{ChaCha20Poly1305, KeyInit};
    let data = vec![0x5au8; n];
    let t = Instant::now();
    let mut enc = EncryptorBE32::from_aead(
        ChaCha20Poly1305::new((&[1u8; 32]).into()),
        (&[0u8; 7]).into(),
    );
    let mut sealed = 0usize;
    for piece in data.chunks(samizdat_core::attachment::PIECE) {
        sealed += enc.encrypt_next(piece).map(|c| c.len()).unwrap_or(0);
    }
    let aead = t.elapsed();
    let t = Instant::now();
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &data);
    let sha = t.elapsed();
    let t = Instant::now();
    let mut h =
        samizdat_core::attachment::Hasher::new(samizdat_core::attachment::DigestKind::Blake3);
    h.update(&data);
    let b3 = h.finish();
    let blake3 = t.elapsed();
    std::hint::black_box((sealed, d, b3));
    (aead, sha, blake3)
}

pub async fn backup(args: BackupArgs) -> Result<Report> {
    let tmp = tempfile::tempdir()?;
    let relay = RelayChild::start(&tmp.path().join("relay"), None)?;
    let (a, _b) = {
        let (dir, url) = (tmp.path().to_path_buf(), relay.url.clone());
        tokio::task::spawn_blocking(move || pair(&dir, &url)).await??
    };
    for i in 0..10 {
        ok(&a, &["send", "Bob", &format!("real message {i}")])?;
    }
    eprintln!("backup: filling the profile to {} messages", args.messages);
    crate::util::fill_profile(&a, args.messages, |i| {
        format!("filler message number {} with some words in it", i + 1_000)
    })?;
    let file = tmp.path().join("alice.backup");
    let profile = samizdat_core::Profile::open(&a, PASS)?;
    let t = Instant::now();
    let bytes = profile.backup(&file, "a bench backup passphrase", true)?;
    let backup = t.elapsed();
    drop(profile);
    let restored = tmp.path().join("restored");
    let t = Instant::now();
    samizdat_core::Profile::restore(&restored, &file, "a bench backup passphrase", PASS)?;
    let restore = t.elapsed();
    let profile = samizdat_core::Profile::open(&restored, PASS)?;
    let shown = profile.history(&profile.find_conversation("Bob")?)?.len() as u64;
    if shown != args.messages {
        bail!(
            "the restored profile shows {shown} messages, not {}",
            args.messages
        );
    }
    let text = format!(
        "profile with {} messages: backup {:.2}s ({} MB file), restore {:.2}s (incl. Argon2id both ways); restored history verified\n",
        args.messages,
        backup.as_secs_f64(),
        bytes / 1_000_000,
        restore.as_secs_f64()
    );
    Ok(Report {
        text,
        json: json!({ "messages": args.messages, "backup_seconds": backup.as_secs_f64(),
            "restore_seconds": restore.as_secs_f64(), "backup_bytes": bytes }),
    })
}

#[derive(Debug, clap::Args)]
pub struct IsolationArgs {
    /// Conversations in the profile.
    #[arg(long, default_value_t = 100)]
    pub conversations: usize,
    /// Then: a profile with this many isolated conversations (each shared with a second
    /// person) stays usable — messages into them, send → displayed (0: skip).
    #[arg(long, default_value_t = 300)]
    pub usable: usize,
    /// Messages sent for that measure.
    #[arg(long, default_value_t = 50)]
    pub messages: usize,
}

/// Established TCP connections to `port` on 127.0.0.1 (from /proc/net/tcp).
fn connections_to(port: u16) -> Result<usize> {
    let table = std::fs::read_to_string("/proc/net/tcp")?;
    let want = format!("0100007F:{port:04X}");
    Ok(table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[2] == want && f[3] == "01"
        })
        .count())
}

/// The cost of transport isolation: a profile with N conversations under `samizdat serve`,
/// through a SOCKS proxy, with and without isolation — connections to the proxy and the
/// service's resident memory once everything is connected. The proxy is the repository's
/// `tests/support/socks_logger.py`, which (as Tor with IsolateSOCKSAuth) takes any user name:
/// isolation refuses a proxy with credentials of its own (security review 3, L2), and
/// microsocks takes only one user.
pub async fn isolation(args: IsolationArgs) -> Result<Report> {
    let tmp = tempfile::tempdir()?;
    // One person adding another to hundreds of groups in a minute: more claims of their
    // KeyPackages and drops into their mailbox than a relay allows by default.
    let relay = RelayChild::start_with(
        &tmp.path().join("relay"),
        None,
        "max_connections_per_ip = 30000\nclaims_per_mailbox_per_minute = 100000\ndrops_per_mailbox_per_minute = 100000\n",
    )?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/support/socks_logger.py"
    );
    let mut socks = Command::new("python3")
        .arg(script)
        .arg(port.to_string())
        .arg(tmp.path().join("socks.log"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the SOCKS proxy (python3 tests/support/socks_logger.py)")?;
    let mut ready = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(socks.stdout.take().context("its output")?),
        &mut ready,
    )?;
    let _socks = Child(socks);
    let proxy = format!("socks5h://127.0.0.1:{port}");
    let mut rows = Vec::new();
    for isolate in [false, true] {
        let home = tmp.path().join(if isolate { "isolated" } else { "shared" });
        let mut init = vec![
            "init", "--relay", &relay.url, "--name", "Bench", "--proxy", &proxy,
        ];
        if isolate {
            init.push("--isolate");
        }
        ok(&home, &init)?;
        {
            let mut p = samizdat_core::Profile::open(&home, PASS)?;
            for i in 0..args.conversations {
                p.group_create(&format!("conversation {i}")).await?;
            }
        }
        let before = connections_to(port)?;
        let mut serve = super::e2e::samizdat(&home)?
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        // Let every socket connect and subscribe (bounded), then read the figures.
        let want = if isolate { args.conversations + 1 } else { 1 };
        let deadline = Instant::now() + Duration::from_secs(60);
        while connections_to(port)? < before + want && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // The steady state: past the first syncs and the 10 s an isolating client keeps an
        // idle HTTP connection.
        tokio::time::sleep(Duration::from_secs(15)).await;
        let conns = connections_to(port)?.saturating_sub(before);
        let rss = super::util::rss_kib(serve.id())?;
        let ws = crate::util::relay_counts(std::slice::from_ref(&relay.metrics))
            .await?
            .websockets;
        let _ = serve.kill();
        let _ = serve.wait();
        rows.push((isolate, conns, rss, ws));
        // Let the relay see the sockets go before the next row counts its own.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let usable = if args.usable > 0 {
        Some(
            usable(
                &relay.url,
                &proxy,
                port,
                tmp.path(),
                args.usable,
                args.messages,
            )
            .await?,
        )
    } else {
        None
    };
    let mut text = format!(
        "{} conversations under `samizdat serve`, through a SOCKS5 proxy (socks5h)\n{:<12} {:>14} {:>12} {:>12}\n",
        args.conversations, "", "connections", "WebSockets", "RSS MiB"
    );
    for (isolate, conns, rss, ws) in &rows {
        text.push_str(&format!(
            "{:<12} {:>14} {:>12} {:>12.1}\n",
            if *isolate { "isolated" } else { "shared" },
            conns,
            ws,
            *rss as f64 / 1024.0
        ));
    }
    let mut usable_json = json!(null);
    if let Some((mut lat, conns)) = usable {
        let (p50, p99) = (
            crate::util::pct(&mut lat, 50.0),
            crate::util::pct(&mut lat, 99.0),
        );
        text.push_str(&format!(
            "{} isolated conversations ({conns} connections through the proxy), messages into them from another person: send → displayed p50 {p50:.1} ms, p99 {p99:.1} ms ({} messages; goal p99 < 1 s)\n",
            args.usable,
            lat.len()
        ));
        usable_json = json!({ "conversations": args.usable, "connections": conns,
            "messages": lat.len(), "p50_ms": p50, "p99_ms": p99 });
    }
    Ok(Report {
        text,
        json: json!({
            "rows": rows.iter()
                .map(|(i, c, r, w)| json!({ "isolated": i, "connections": c, "websockets": w, "rss_kib": r }))
                .collect::<Vec<_>>(),
            "usable": usable_json,
        }),
    })
}

/// Issue 33, item 2: a profile with `n` isolated conversations through the SOCKS proxy on
/// `port` stays usable. Alice (isolated) shares `n` groups with Bob (direct); both run as
/// services in this process; Bob sends `messages` messages, each into another of the
/// groups, one after the other; each counts from Bob's send call to Alice's service
/// showing it. Returns the latencies (ms) and the connections Alice held to the proxy.
async fn usable(
    relay: &str,
    proxy: &str,
    port: u16,
    dir: &Path,
    n: usize,
    messages: usize,
) -> Result<(Vec<f64>, usize)> {
    use futures_util::FutureExt;
    use samizdat_core::{ClientHandle, Event, Mode, Profile};
    let (a, b) = (dir.join("usable-alice"), dir.join("usable-bob"));
    introduce(&a, &b, relay, &["--proxy", proxy, "--isolate"])?;
    eprintln!("isolation: {n} groups shared with a second person");
    {
        let mut p = Profile::open(&a, PASS)?;
        let bob = p.find_contact("Bob")?;
        for i in 0..n {
            let id = p.group_create(&format!("usable {i}")).await?;
            p.group_add(&id, std::slice::from_ref(&bob)).await?;
        }
    }
    let mut ids = Vec::new();
    {
        let mut p = Profile::open(&b, PASS)?;
        for _ in 0..10 {
            p.sync().await?;
            ids = (0..n)
                .filter_map(|i| p.find_conversation(&format!("usable {i}")).ok())
                .collect();
            if ids.len() == n {
                break;
            }
        }
        if ids.len() != n {
            bail!("Bob joined {} of {n} groups", ids.len());
        }
    }
    let before = connections_to(port)?;
    let (alice, mut events) =
        ClientHandle::start_subscribed(Profile::open(&a, PASS)?, Mode::Realtime)?;
    let bob = ClientHandle::start(Profile::open(&b, PASS)?, Mode::Realtime)?;
    // Every socket up (bounded), and the first syncs past.
    let deadline = Instant::now() + Duration::from_secs(120);
    while connections_to(port)? < before + n + 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let conns = connections_to(port)?.saturating_sub(before);
    let mut lat = Vec::new();
    for m in 0..messages {
        let id = ids[(m * 7919) % n];
        let text = format!("usable message {m}");
        let t = Instant::now();
        let sent = text.clone();
        bob.call(move |p| async move { p.send(&id, &sent).await }.boxed_local())
            .await?;
        let shown = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match events.recv().await {
                    Ok(e) => {
                        if matches!(&e.event, Event::Message { text: t, .. } if *t == text) {
                            return true;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return false,
                }
            }
        })
        .await;
        if !matches!(shown, Ok(true)) {
            bail!("message {m} was not shown within 30 s");
        }
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    drop((alice, bob));
    Ok((lat, conns))
}

#[derive(Debug, clap::Args)]
pub struct IdleArgs {
    /// Conversations in the profile (groups on the relay, each subscribed on the service's
    /// socket).
    #[arg(long, default_value_t = 100)]
    pub conversations: usize,
    /// How long to watch, once the service has settled.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
}

/// How many times the threads of `pid` were scheduled so far (`/proc/PID/task/*/schedstat`,
/// third field): every wake-up of the process counts.
fn wakeups(pid: u32) -> Result<u64> {
    let mut n = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let stat = std::fs::read_to_string(t?.path().join("schedstat")).unwrap_or_default();
        n += stat
            .split_whitespace()
            .nth(2)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok(n)
}

/// Issue 33, idle clients: `samizdat serve` with `conversations` conversations and nothing
/// happening, watched for `seconds` after it settled: wake-ups per second (timers, socket
/// reads, requests), resident memory; the relay's wake-ups and store reads for pushes in the
/// same window.
pub async fn idle(args: IdleArgs) -> Result<Report> {
    let tmp = tempfile::tempdir()?;
    let relay = RelayChild::start(&tmp.path().join("relay"), None)?;
    let home = tmp.path().join("idle");
    ok(&home, &["init", "--relay", &relay.url, "--name", "Bench"])?;
    {
        let mut p = samizdat_core::Profile::open(&home, PASS)?;
        for i in 0..args.conversations {
            p.group_create(&format!("conversation {i}")).await?;
        }
    }
    // Killed when dropped: a benchmark that fails half way leaves no service behind.
    let serve = Child(
        super::e2e::samizdat(&home)?
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let pid = serve.0.id();
    // Settle: the socket connects and subscribes, the first syncs run.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let metrics = [relay.metrics.clone()];
    let (client0, relay0, reads0) = (
        wakeups(pid)?,
        wakeups(relay.pid())?,
        crate::util::relay_counts(&metrics).await?.push_reads,
    );
    let (cpu0, relay_cpu0) = (
        crate::util::cpu_time(pid)?,
        crate::util::cpu_time(relay.pid())?,
    );
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let secs = args.seconds as f64;
    let client = (wakeups(pid)? - client0) as f64 / secs;
    let relay_wakeups = (wakeups(relay.pid())? - relay0) as f64 / secs;
    let reads = crate::util::relay_counts(&metrics).await?.push_reads - reads0;
    let cpu = crate::util::cpu_time(pid)? - cpu0;
    let relay_cpu = crate::util::cpu_time(relay.pid())? - relay_cpu0;
    let rss = super::util::rss_kib(pid)?;
    drop(serve);
    let text = format!(
        "{} conversations under `samizdat serve`, idle for {} s after settling\n\
         service: {:.2} wake-ups/s (goal ≤ 1), RSS {:.1} MiB (goal < 40), CPU {:.0} ms\n\
         relay:   {:.2} wake-ups/s, {} store reads for pushes, CPU {:.0} ms\n",
        args.conversations,
        args.seconds,
        client,
        rss as f64 / 1024.0,
        cpu.as_secs_f64() * 1000.0,
        relay_wakeups,
        reads,
        relay_cpu.as_secs_f64() * 1000.0,
    );
    Ok(Report {
        text,
        json: json!({
            "conversations": args.conversations,
            "seconds": args.seconds,
            "service_wakeups_per_s": client,
            "service_rss_kib": rss,
            "service_cpu_ms": cpu.as_millis() as u64,
            "relay_wakeups_per_s": relay_wakeups,
            "relay_push_reads": reads,
            "relay_cpu_ms": relay_cpu.as_millis() as u64,
        }),
    })
}
