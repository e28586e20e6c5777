//! End to end: a relay process, two `samizdat listen` processes and a sender running
//! `samizdat send`, all real commands. Latency is measured two ways: from the moment the send
//! command starts (what a user waits, including process start and key derivation) and from the
//! message's own `sent_at` (stamped just before encryption) until the listener prints it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::json;

use super::Report;
use super::util::{Progress, RelayChild, ms, pct};

#[derive(Debug, clap::Args)]
pub struct E2eArgs {
    /// Messages to send.
    #[arg(long, default_value_t = 30)]
    pub messages: usize,
}

const PASS: &str = "bench passphrase";

fn samizdat(home: &std::path::Path) -> Result<Command> {
    let mut c = Command::new(std::env::current_exe()?);
    c.arg("--home")
        .arg(home)
        .env("SAMIZDAT_PASSPHRASE", PASS)
        .env("SAMIZDAT_LOG", "error")
        .stdin(Stdio::null());
    Ok(c)
}

fn ok(home: &std::path::Path, args: &[&str]) -> Result<String> {
    let out = samizdat(home)?.args(args).output()?;
    if !out.status.success() {
        bail!(
            "samizdat {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub async fn run(args: E2eArgs) -> Result<Report> {
    tokio::task::spawn_blocking(move || run_blocking(args)).await?
}

fn run_blocking(args: E2eArgs) -> Result<Report> {
    let tmp = tempfile::tempdir()?;
    let relay = RelayChild::start(&tmp.path().join("relay"), None)?;
    let homes: Vec<_> = ["sender", "listener1", "listener2"]
        .iter()
        .map(|n| tmp.path().join(n))
        .collect();
    for (h, name) in homes.iter().zip(["Sender", "Listener One", "Listener Two"]) {
        ok(h, &["init", "--relay", &relay.url, "--name", name])?;
    }
    ok(&homes[0], &["group", "create", "bench"])?;
    for (i, l) in homes[1..].iter().enumerate() {
        let link = ok(&homes[0], &["invite"])?
            .lines()
            .last()
            .ok_or_else(|| anyhow!("no link"))?
            .to_string();
        ok(l, &["accept", &link, "--name", "sender"])?;
        ok(&homes[0], &["sync"])?;
        let alias = if i == 0 {
            "Listener One"
        } else {
            "Listener Two"
        };
        ok(&homes[0], &["group", "add", "bench", alias])?;
        ok(l, &["sync"])?;
    }
    let (tx, rx) = mpsc::channel::<(usize, String, Instant, u64)>();
    let mut listeners = Vec::new();
    for (i, l) in homes[1..].iter().enumerate() {
        let mut child = samizdat(l)?
            .args([
                "listen",
                "--json",
                "--timeout",
                &(args.messages as u64 * 3 + 60).to_string(),
                "--count",
                &args.messages.to_string(),
            ])
            .stdout(Stdio::piped())
            .spawn()
            .context("starting a listener")?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send((i, line, Instant::now(), now_ms()));
            }
        });
        listeners.push(child);
    }
    drop(tx);
    std::thread::sleep(Duration::from_millis(800));
    let mut started: Vec<(String, Instant)> = Vec::new();
    let progress = Progress::new(
        "end-to-end messages",
        Duration::from_millis(args.messages as u64 * 400),
    );
    for k in 0..args.messages {
        let text = format!("bench message {k}");
        started.push((text.clone(), Instant::now()));
        ok(&homes[0], &["send", "bench", &text])?;
        progress.tick();
        std::thread::sleep(Duration::from_millis(100));
    }
    progress.done();
    let mut from_command = Vec::new();
    let mut from_sent_at = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while from_command.len() < 2 * args.messages && Instant::now() < deadline {
        let Ok((_, line, at, wall)) = rx.recv_timeout(Duration::from_secs(5)) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if v["event"] != "message" {
            continue;
        }
        let text = v["text"].as_str().unwrap_or_default();
        if let Some((_, s)) = started.iter().find(|(t, _)| t == text) {
            from_command.push(at.duration_since(*s).as_secs_f64() * 1000.0);
            from_sent_at.push(wall.saturating_sub(v["sent_at"].as_u64().unwrap_or(wall)) as f64);
        }
    }
    for mut l in listeners {
        let _ = l.kill();
        let _ = l.wait();
    }
    let displayed = from_command.len();
    let text = format!(
        "End to end: `samizdat send` → printed by `samizdat listen` (2 listeners, {} messages, {displayed} displays)\n\
         from command start: p50 {} ms, p99 {} ms  (includes process start and passphrase key derivation)\n\
         from sent_at stamp:  p50 {} ms, p99 {} ms  (encrypt → relay → push → sync → print)\n",
        args.messages,
        ms(pct(&mut from_command.clone(), 50.0)),
        ms(pct(&mut from_command.clone(), 99.0)),
        ms(pct(&mut from_sent_at.clone(), 50.0)),
        ms(pct(&mut from_sent_at.clone(), 99.0)),
    );
    Ok(Report {
        text,
        json: json!({"benchmark": "e2e", "messages": args.messages, "displays": displayed,
            "from_command_p50_ms": pct(&mut from_command.clone(), 50.0), "from_command_p99_ms": pct(&mut from_command, 99.0),
            "from_sent_at_p50_ms": pct(&mut from_sent_at.clone(), 50.0), "from_sent_at_p99_ms": pct(&mut from_sent_at, 99.0)}),
    })
}
