//! `bench move`: how long a conversation is cut off when its relay is blocked.
//!
//! Two people under `samizdat serve`, each with a mailbox on relays A and B, chat on A. A is
//! then blocked (killed, its port held by a listener that accepts and drops every
//! connection, as a censor's reset looks to a client) and alice sends at once: the message
//! is queued. The clock runs from the block to bob's `samizdat listen` printing the message,
//! which needs the conversation to have moved to B (after the configured detection time,
//! `config move-after`), bob to have followed, and the queued message to be re-sent there.
//! Reported: the whole time, and the time after the detection time (the goal is < 5 s).

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::json;

use crate::Report;
use crate::e2e::{ok, samizdat};
use crate::util::RelayChild;

/// The owner's socket in a profile directory (`samizdat`'s `client::SOCKET`): present while
/// `samizdat serve` holds the profile.
const SOCKET: &str = "samizdat.sock";

#[derive(Debug, clap::Args)]
pub struct MoveArgs {
    /// The detection time (`config move-after`), seconds.
    #[arg(long, default_value_t = 10)]
    pub detect: u64,
    /// How many times to measure.
    #[arg(long, default_value_t = 3)]
    pub runs: u32,
}

/// A port that accepts and drops every connection until dropped.
struct Hold(Arc<AtomicBool>);

impl Hold {
    fn new(addr: &str) -> Result<Hold> {
        let listener = std::net::TcpListener::bind(addr).context("holding the relay's port")?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((s, _)) => drop(s),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Ok(Hold(stop))
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A child process killed when dropped.
struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn one_run(detect: u64) -> Result<Duration> {
    let tmp = tempfile::tempdir()?;
    let mut relay_a = RelayChild::start(&tmp.path().join("a"), None)?;
    let relay_b = RelayChild::start(&tmp.path().join("b"), None)?;
    let (alice, bob) = (tmp.path().join("alice"), tmp.path().join("bob"));
    for (home, name) in [(&alice, "Alice"), (&bob, "Bob")] {
        ok(
            home,
            &[
                "init",
                "--relay",
                &relay_a.url,
                "--relay",
                &relay_b.url,
                "--name",
                name,
            ],
        )?;
        ok(home, &["config", "move-after", &format!("{detect}s")])?;
    }
    let link = ok(&alice, &["invite"])?
        .lines()
        .last()
        .ok_or_else(|| anyhow!("no invite link"))?
        .to_string();
    ok(&bob, &["accept", &link, "--name", "alice"])?;
    ok(&alice, &["sync"])?;
    ok(&alice, &["send", "Bob", "before the block"])?;
    ok(&bob, &["sync"])?;
    let debug = std::env::var("SAMIZDAT_BENCH_DEBUG").is_ok();
    let _serve_a = Kill(
        samizdat(&alice)?
            .arg("serve")
            .env("SAMIZDAT_LOG", if debug { "debug" } else { "error" })
            .stdout(Stdio::null())
            .stderr(if debug {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()?,
    );
    let _serve_b = Kill(
        samizdat(&bob)?
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    // Both services up (their sockets exist: asking anything earlier would open the profile
    // in a second process and keep the service from starting) and connected.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(alice.join(SOCKET).exists() && bob.join(SOCKET).exists()) {
        if Instant::now() > deadline {
            bail!("the services did not start");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut listen = Kill(
        samizdat(&bob)?
            .args(["listen", "--json", "--timeout", "180"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let stdout = listen.0.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
            if std::env::var("SAMIZDAT_BENCH_DEBUG").is_ok() {
                eprintln!("bob: {}", &line[..line.len().min(160)]);
            }
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                && v["event"] == "message"
                && v["text"] == "during the block"
            {
                let _ = tx.send(Instant::now());
                return;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Block A, then send at once (queued: A does not answer).
    let _ = relay_a.child.kill();
    let _ = relay_a.child.wait();
    let _hold = Hold::new(&relay_a.addr)?;
    let blocked = Instant::now();
    let _ = samizdat(&alice)?
        .args(["send", "Bob", "during the block"])
        .output()?;
    let seen =
        tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(detect + 60)))
            .await?;
    let Ok(seen) = seen else {
        // What alice's side looks like, to say why.
        let list = ok(&alice, &["list", "--json"]).unwrap_or_default();
        let history = ok(&alice, &["history", "Bob", "--json"]).unwrap_or_default();
        bail!("bob never saw the message sent during the block; alice: {list} {history}");
    };
    let took = seen.duration_since(blocked);
    let list = ok(&bob, &["list", "--json"])?;
    if !list.contains(&relay_b.addr) {
        bail!("the conversation is not on relay B: {list}");
    }
    Ok(took)
}

pub async fn run(args: MoveArgs) -> Result<Report> {
    let mut runs = Vec::new();
    for i in 0..args.runs {
        eprintln!("run {}/{}", i + 1, args.runs);
        runs.push(one_run(args.detect).await?);
    }
    let after: Vec<f64> = runs
        .iter()
        .map(|d| d.as_secs_f64() - args.detect as f64)
        .collect();
    let mut text = format!(
        "blocked relay → first message on the new relay (detection time {} s)\n{:<6} {:>10} {:>22}\n",
        args.detect, "run", "total s", "after detection s"
    );
    for (i, (d, a)) in runs.iter().zip(&after).enumerate() {
        text.push_str(&format!(
            "{:<6} {:>10.2} {:>22.2}\n",
            i + 1,
            d.as_secs_f64(),
            a
        ));
    }
    let worst = after.iter().cloned().fold(f64::MIN, f64::max);
    text.push_str(&format!(
        "worst after detection: {worst:.2} s (goal < 5 s)\n"
    ));
    Ok(Report {
        text,
        json: json!({
            "detect_s": args.detect,
            "total_s": runs.iter().map(|d| d.as_secs_f64()).collect::<Vec<_>>(),
            "after_detection_s": after,
        }),
    })
}
