//! End to end: a relay process, two `samizdat listen` processes and a sender running
//! `samizdat send`, all real commands. Latency is measured two ways: from the moment the send
//! command starts (what a user waits, including process start and key derivation) and from the
//! message's own `sent_at` (stamped just before encryption) until the listener prints it.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::json;

use crate::Report;
use crate::util::{Progress, RelayChild, ms, pct};

/// The service's socket in a profile directory (`samizdat serve` makes it).
const SOCKET: &str = "samizdat.sock";

#[derive(Debug, clap::Args)]
pub struct E2eArgs {
    /// Messages to send.
    #[arg(long, default_value_t = 30)]
    pub messages: usize,
    /// Long-running clients: every profile runs `samizdat serve`; the sender sends through
    /// one `samizdat rpc` connection, the listeners print through `samizdat listen` on their
    /// service's socket. Without it, every send is a `samizdat send` process.
    #[arg(long)]
    pub service: bool,
    /// With `--service`: the sender and the listeners speak JSON-RPC on each service's own
    /// socket, as a bot does (and as the app, inside `serve`, gets its events), instead of
    /// through the `samizdat rpc` and `samizdat listen` processes (two hops fewer each way).
    #[arg(long, requires = "service")]
    pub socket: bool,
}

pub(super) const PASS: &str = "bench passphrase";

pub(super) fn samizdat(home: &std::path::Path) -> Result<Command> {
    let mut c = Command::new(crate::util::samizdat_exe()?);
    c.arg("--home")
        .arg(home)
        .env("SAMIZDAT_PASSPHRASE", PASS)
        .env("SAMIZDAT_LOG", "error")
        .stdin(Stdio::null());
    Ok(c)
}

pub(super) fn ok(home: &std::path::Path, args: &[&str]) -> Result<String> {
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
    let homes = setup(tmp.path(), &relay.url)?;
    if args.service {
        return run_service(&args, &homes);
    }
    let (tx, rx) = mpsc::channel::<(usize, String, Instant, u64)>();
    let listeners = start_listeners(&homes, args.messages, tx)?;
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
    let (from_command, from_sent_at) = collect(&rx, &started, args.messages);
    stop(listeners);
    Ok(report(
        &args,
        "`samizdat send` process → printed by `samizdat listen`",
        "from command start",
        "(includes process start and passphrase key derivation)",
        from_command,
        from_sent_at,
    ))
}

/// A relay with a sender and two listeners in a group called `bench`.
fn setup(dir: &std::path::Path, relay: &str) -> Result<Vec<std::path::PathBuf>> {
    let homes: Vec<_> = ["sender", "listener1", "listener2"]
        .iter()
        .map(|n| dir.join(n))
        .collect();
    for (h, name) in homes.iter().zip(["Sender", "Listener One", "Listener Two"]) {
        ok(h, &["init", "--relay", relay, "--name", name])?;
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
    Ok(homes)
}

type Line = (usize, String, Instant, u64);

/// `samizdat listen --json` on each listener, their lines sent to `tx`.
fn start_listeners(
    homes: &[std::path::PathBuf],
    messages: usize,
    tx: mpsc::Sender<Line>,
) -> Result<Vec<std::process::Child>> {
    let mut listeners = Vec::new();
    for (i, l) in homes[1..].iter().enumerate() {
        let mut child = samizdat(l)?
            .args([
                "listen",
                "--json",
                "--timeout",
                &(messages as u64 * 3 + 60).to_string(),
                "--count",
                &messages.to_string(),
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
    Ok(listeners)
}

/// The receivers' `event` notifications, read on their services' sockets (subscribed as a
/// bot subscribes); each reader ends when its service closes the socket.
fn socket_listeners(homes: &[std::path::PathBuf], tx: mpsc::Sender<Line>) -> Result<()> {
    for (i, home) in homes[1..].iter().enumerate() {
        let mut sock = UnixStream::connect(home.join(SOCKET)).context("a listener's socket")?;
        sock.write_all(b"{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"subscribe\",\"params\":{}}\n")?;
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(sock).lines().map_while(Result::ok) {
                let (at, wall) = (Instant::now(), now_ms());
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                if v["method"] == "event" {
                    let _ = tx.send((i, v["params"].to_string(), at, wall));
                }
            }
        });
    }
    Ok(())
}

fn stop(children: Vec<std::process::Child>) {
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
}
/// Latencies of the displayed messages: from the moment each was started, and from its
/// own `sent_at` stamp.
fn collect(
    rx: &mpsc::Receiver<Line>,
    started: &[(String, Instant)],
    messages: usize,
) -> (Vec<f64>, Vec<f64>) {
    let mut from_command = Vec::new();
    let mut from_sent_at = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while from_command.len() < 2 * messages && Instant::now() < deadline {
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
    (from_command, from_sent_at)
}

fn report(
    args: &E2eArgs,
    path: &str,
    first: &str,
    note: &str,
    mut from_command: Vec<f64>,
    mut from_sent_at: Vec<f64>,
) -> Report {
    let displayed = from_command.len();
    let text = format!(
        "End to end: {path} (2 listeners, {} messages, {displayed} displays)\n\
         {first}: p50 {} ms, p99 {} ms  {note}\n\
         from sent_at stamp:  p50 {} ms, p99 {} ms  (encrypt → relay → push → sync → print)\n",
        args.messages,
        ms(pct(&mut from_command.clone(), 50.0)),
        ms(pct(&mut from_command.clone(), 99.0)),
        ms(pct(&mut from_sent_at.clone(), 50.0)),
        ms(pct(&mut from_sent_at.clone(), 99.0)),
    );
    Report {
        text,
        json: json!({"benchmark": "e2e", "mode": match (args.service, args.socket) { (true, true) => "socket", (true, false) => "service", _ => "process" },
            "messages": args.messages, "displays": displayed,
            "from_command_p50_ms": pct(&mut from_command.clone(), 50.0), "from_command_p99_ms": pct(&mut from_command, 99.0),
            "from_sent_at_p50_ms": pct(&mut from_sent_at.clone(), 50.0), "from_sent_at_p99_ms": pct(&mut from_sent_at, 99.0)}),
    }
}

/// Every profile runs `serve`; the sender sends through one `samizdat rpc` connection to its
/// service; listeners print through `samizdat listen` on theirs.
fn run_service(args: &E2eArgs, homes: &[std::path::PathBuf]) -> Result<Report> {
    let mut children = Vec::new();
    for h in homes {
        let mut child = samizdat(h)?
            .arg("serve")
            .stdout(Stdio::piped())
            .spawn()
            .context("starting serve")?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?)
            .read_line(&mut line)?;
        if !line.starts_with("serving") {
            bail!("serve said {line:?}");
        }
        children.push(child);
    }
    let (tx, rx) = mpsc::channel::<Line>();
    let (mut rpc_in, mut rpc_out): (Box<dyn Write>, Box<dyn BufRead>) = if args.socket {
        socket_listeners(homes, tx)?;
        let sock = UnixStream::connect(homes[0].join(SOCKET)).context("the sender's socket")?;
        (Box::new(sock.try_clone()?), Box::new(BufReader::new(sock)))
    } else {
        children.extend(start_listeners(homes, args.messages, tx)?);
        let mut rpc = samizdat(&homes[0])?
            .arg("rpc")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting rpc")?;
        let rpc_in = rpc.stdin.take().ok_or_else(|| anyhow!("no stdin"))?;
        let rpc_out = BufReader::new(rpc.stdout.take().ok_or_else(|| anyhow!("no stdout"))?);
        children.push(rpc);
        (Box::new(rpc_in), Box::new(rpc_out))
    };
    std::thread::sleep(Duration::from_millis(800));
    let mut started: Vec<(String, Instant)> = Vec::new();
    let mut send_ms = Vec::new();
    let progress = Progress::new(
        "end-to-end messages (service)",
        Duration::from_millis(args.messages as u64 * 100),
    );
    for k in 0..args.messages {
        let text = format!("bench message {k}");
        let req = json!({"jsonrpc": "2.0", "id": k, "method": "send",
            "params": {"target": "bench", "text": text}});
        // One write per request, as a client with a buffered writer sends it (formatting
        // straight into the pipe would cost a system call per JSON token).
        let line = format!("{req}\n");
        let t0 = Instant::now();
        started.push((text, t0));
        rpc_in.write_all(line.as_bytes())?;
        rpc_in.flush()?;
        let mut answer = String::new();
        rpc_out.read_line(&mut answer)?;
        send_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        let v: serde_json::Value = serde_json::from_str(&answer)?;
        if v.get("error").is_some() {
            bail!("send failed: {answer}");
        }
        progress.tick();
        std::thread::sleep(Duration::from_millis(50));
    }
    progress.done();
    let (from_send, from_sent_at) = collect(&rx, &started, args.messages);
    drop(rpc_in);
    stop(children);
    let mut r = report(
        args,
        if args.socket {
            "`send` over JSON-RPC on a running `serve`'s socket → its `event` notification on another `serve`'s socket"
        } else {
            "`send` over JSON-RPC to a running `serve` → printed by `samizdat listen` through another `serve`"
        },
        "from the send request",
        "(no process start, no key derivation)",
        from_send,
        from_sent_at,
    );
    let (p50, p99) = (
        pct(&mut send_ms.clone(), 50.0),
        pct(&mut send_ms.clone(), 99.0),
    );
    r.text.push_str(&format!(
        "send call (stored, encrypted, acknowledged by the relay): p50 {} ms, p99 {} ms\n",
        ms(p50),
        ms(p99)
    ));
    r.json["send_call_p50_ms"] = json!(p50);
    r.json["send_call_p99_ms"] = json!(p99);
    Ok(r)
}
