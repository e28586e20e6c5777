//! Channels (issue 34): a new follower catching up on N posts, cached segment reads per second
//! from one relay process, and one post pushed to many online followers — spread over several
//! relay processes on one PostgreSQL and several load-generator processes (a process here may
//! hold at most ~20,000 open files), as a large channel would be served.
//!
//! Followers are raw WebSocket subscribers (a follower's profile holds one such subscription
//! per channel; nothing else of a profile is on the path). Delivery latency is the wall clock
//! from the admin starting the post (sealing, signing, the relay's fsync included) to each
//! follower's socket reading the record; generators report arrival times on the same
//! machine's clock.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow};
use futures_util::{SinkExt, StreamExt};
use samizdat_core::Profile;
use samizdat_proto::ClientFrame;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::Report;
use crate::e2e::PASS;
use crate::util::{RelayChild, pct};

#[derive(Debug, clap::Args)]
pub struct ChannelArgs {
    /// Posts a new follower catches up on.
    #[arg(long, default_value_t = 1000)]
    pub posts: u64,
    /// New followers timed catching up (each a fresh profile).
    #[arg(long, default_value_t = 3)]
    pub catch_ups: usize,
    /// Concurrent readers of full (cached) segments.
    #[arg(long, default_value_t = 64)]
    pub readers: usize,
    /// Seconds of segment reads.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Online followers the post is pushed to.
    #[arg(long, default_value_t = 10_000)]
    pub followers: usize,
    /// Relay processes the followers spread over (several need --database).
    #[arg(long, default_value_t = 1)]
    pub processes: usize,
    /// Follower connections per load-generator process.
    #[arg(long, default_value_t = 16_000)]
    pub per_generator: usize,
    /// PostgreSQL for the relay processes (otherwise one SQLite relay).
    #[arg(long)]
    pub database: Option<String>,
}

/// The hidden load generator: `count` followers of `channel` on `url`, subscribed after
/// `after`; prints `ready` once all are subscribed, then the arrival time (Unix ns) of the next
/// record at each, one per line, and `done`.
#[derive(Debug, clap::Args)]
pub struct FollowersArgs {
    #[arg(long)]
    pub url: String,
    #[arg(long)]
    pub channel: String,
    #[arg(long)]
    pub after: u64,
    #[arg(long)]
    pub count: usize,
}

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

pub async fn followers(a: FollowersArgs) -> Result<Report> {
    let channel: samizdat_proto::Id = a.channel.parse().map_err(|_| anyhow!("bad channel id"))?;
    let ws_url = format!("{}/v1/ws", a.url.replacen("http", "ws", 1));
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(a.count.max(1));
    let (got_tx, mut got_rx) = tokio::sync::mpsc::channel::<u64>(a.count.max(1));
    let (go_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let connecting = std::sync::Arc::new(tokio::sync::Semaphore::new(256));
    for _ in 0..a.count {
        let (ws_url, ready, got, permit) = (
            ws_url.clone(),
            ready_tx.clone(),
            got_tx.clone(),
            connecting.clone(),
        );
        let mut go = go_tx.subscribe();
        tokio::spawn(async move {
            let mut held = Some(permit.acquire_owned().await);
            let Ok((mut ws, _)) = tokio_tungstenite::connect_async(&ws_url).await else {
                return;
            };
            let sub = ClientFrame::SubscribeChannel {
                channel_id: channel,
                after: a.after,
            };
            let Ok(text) = serde_json::to_string(&sub) else {
                return;
            };
            if ws.send(Message::Text(text.into())).await.is_err() {
                return;
            }
            // The first text frame after subscribing is `subscribed`; the next `channel_record`
            // is the post (the follower subscribed at the head). Recognised without a JSON parse:
            // the generators share the machine with the relays they measure.
            let mut subscribed = false;
            while let Some(Ok(m)) = ws.next().await {
                let Message::Text(t) = m else { continue };
                if !subscribed && t.as_str().contains("\"subscribed\"") {
                    subscribed = true;
                    drop(held.take());
                    let _ = ready.send(()).await;
                } else if subscribed && t.as_str().starts_with("{\"type\":\"channel_record\"") {
                    let _ = got.send(unix_ns()).await;
                    break;
                }
            }
            // Hold the socket until the parent is done (closing it is not the benchmark).
            let _ = go.recv().await;
        });
    }
    drop((ready_tx, got_tx));
    for _ in 0..a.count {
        tokio::time::timeout(Duration::from_secs(300), ready_rx.recv())
            .await
            .context("followers subscribing")?
            .ok_or_else(|| anyhow!("a follower could not connect"))?;
    }
    println!("ready");
    let mut n = 0;
    while n < a.count {
        match tokio::time::timeout(Duration::from_secs(60), got_rx.recv()).await {
            Ok(Some(ns)) => {
                println!("{ns}");
                n += 1;
            }
            _ => break,
        }
    }
    println!("done");
    let _ = go_tx.send(());
    Ok(Report {
        text: String::new(),
        json: json!(null),
    })
}

pub async fn run(a: ChannelArgs) -> Result<Report> {
    if a.processes > 1 && a.database.is_none() {
        return Err(anyhow!(
            "several relay processes need --database (PostgreSQL)"
        ));
    }
    let tmp = tempfile::tempdir()?;
    let mut relays = Vec::new();
    for i in 0..a.processes.max(1) {
        relays.push(RelayChild::start(
            &tmp.path().join(format!("relay-{i}")),
            a.database.as_deref(),
        )?);
    }
    let home = &relays[0];
    eprintln!("channels: an admin posts {} posts", a.posts);
    let mut admin = Profile::init(&tmp.path().join("admin"), PASS, &home.url, "Admin").await?;
    let ch = admin.channel_create("Bench channel", "").await?;
    let started = Instant::now();
    let mut post_ms = Vec::new();
    for i in 0..a.posts {
        let t = Instant::now();
        admin
            .channel_post(&ch, &format!("post {i}: {}", "news ".repeat(40)))
            .await?;
        post_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let posting = started.elapsed();
    let link = admin.channel_link(&ch)?;

    // A new follower catching up: follow (genesis checked against the link) and read all.
    let mut catch_up = Vec::new();
    for i in 0..a.catch_ups {
        let mut f = Profile::init(
            &tmp.path().join(format!("follower-{i}")),
            PASS,
            &home.url,
            "Follower",
        )
        .await?;
        let t = Instant::now();
        let id = f.channel_follow(&link).await?;
        let took = t.elapsed();
        let got = f.channel_posts(&id, false)?.len() as u64;
        if got != a.posts {
            return Err(anyhow!(
                "a follower caught up on {got} of {} posts",
                a.posts
            ));
        }
        catch_up.push(took.as_secs_f64());
    }

    // Cached segment reads: full segments, many readers, one relay process.
    let full = a.posts / samizdat_proto::channel::SEGMENT_RECORDS;
    let (reads, read_p50, read_p99, read_mb) = if full == 0 {
        (0.0, f64::NAN, f64::NAN, 0.0)
    } else {
        segment_reads(&home.url, ch.as_proto(), full, a.readers, a.seconds).await?
    };

    // One post to every online follower.
    let after = a.posts;
    let mut gens = Vec::new();
    let mut left = a.followers;
    let mut k = 0;
    while left > 0 {
        let count = left.min(a.per_generator);
        let relay = &relays[k % relays.len()];
        let mut child = Command::new(std::env::current_exe()?)
            .args(["channel-followers", "--url", &relay.url, "--channel"])
            .arg(ch.as_proto().to_string())
            .args(["--after", &after.to_string(), "--count", &count.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting a load generator")?;
        let out = BufReader::new(child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?);
        gens.push((child, out.lines(), count));
        left -= count;
        k += 1;
    }
    eprintln!(
        "channels: {} followers subscribing over {} relay processes ({} generators)",
        a.followers,
        relays.len(),
        gens.len()
    );
    for (_, lines, _) in gens.iter_mut() {
        let line = tokio::task::block_in_place(|| lines.next())
            .ok_or_else(|| anyhow!("a load generator stopped"))??;
        if line != "ready" {
            return Err(anyhow!("a load generator said {line:?}"));
        }
    }
    let rss_before: u64 = relays
        .iter()
        .map(|r| crate::util::rss_kib(r.pid()).unwrap_or(0))
        .sum();
    let cpu_before: Vec<Duration> = relays
        .iter()
        .map(|r| crate::util::cpu_time(r.pid()).unwrap_or_default())
        .collect();
    let gen_pids: Vec<u32> = gens.iter().map(|(c, _, _)| c.id()).collect();
    let gen_cpu_before: Vec<Duration> = gen_pids
        .iter()
        .map(|p| crate::util::cpu_time(*p).unwrap_or_default())
        .collect();
    let t0 = unix_ns();
    admin
        .channel_post(&ch, "the one post every follower gets")
        .await?;
    let mut lat_ms = Vec::new();
    let mut waits = Vec::new();
    for (child, lines, _) in gens {
        let arrivals = tokio::task::block_in_place(|| {
            let mut v = Vec::new();
            for line in lines {
                let line = line?;
                if line == "done" {
                    break;
                }
                v.push(line.parse::<u64>()?);
            }
            anyhow::Ok(v)
        })?;
        lat_ms.extend(
            arrivals
                .into_iter()
                .map(|ns| ns.saturating_sub(t0) as f64 / 1e6),
        );
        waits.push(child);
    }
    // CPU the push cost: the relays' and the load generators' (they share these cores).
    let relay_cpu: f64 = relays
        .iter()
        .zip(&cpu_before)
        .map(|(r, b)| {
            crate::util::cpu_time(r.pid())
                .unwrap_or_default()
                .saturating_sub(*b)
                .as_secs_f64()
        })
        .sum();
    let gen_cpu: f64 = gen_pids
        .iter()
        .zip(&gen_cpu_before)
        .map(|(p, b)| {
            crate::util::cpu_time(*p)
                .unwrap_or_default()
                .saturating_sub(*b)
                .as_secs_f64()
        })
        .sum();
    for mut child in waits {
        let _ = child.wait();
    }
    let delivered = lat_ms.len();
    let (p50, p99, max) = (
        pct(&mut lat_ms, 50.0),
        pct(&mut lat_ms, 99.0),
        pct(&mut lat_ms, 100.0),
    );
    let catch_p50 = pct(&mut catch_up, 50.0);
    let post_p50 = pct(&mut post_ms, 50.0);
    let text = format!(
        "channels ({} relay process{}, {})\n\
         posting {} posts: {:.1} s ({:.1} ms p50 each)\n\
         new follower catching up on {} posts: {:.2} s p50 of {} (goal < 2 s)\n\
         cached segment reads: {:.0}/s, {:.1} MB/s, p50 {:.2} ms, p99 {:.2} ms ({} readers, {} s; goal ≥ 10,000/s)\n\
         one post to {} online followers: delivered to {}, p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms (goal p99 < 2 s)\n\
         CPU of that push: relays {:.2} s, load generators {:.2} s (on {} cores)\n\
         relay memory with the followers subscribed: {:.1} MiB ({:.1} KiB per follower)",
        relays.len(),
        if relays.len() == 1 { "" } else { "es" },
        if a.database.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        },
        a.posts,
        posting.as_secs_f64(),
        post_p50,
        a.posts,
        catch_p50,
        a.catch_ups,
        reads,
        read_mb,
        read_p50,
        read_p99,
        a.readers,
        a.seconds,
        a.followers,
        delivered,
        p50,
        p99,
        max,
        relay_cpu,
        gen_cpu,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        rss_before as f64 / 1024.0,
        rss_before as f64 / a.followers.max(1) as f64,
    );
    Ok(Report {
        text,
        json: json!({
            "processes": relays.len(),
            "store": if a.database.is_some() { "postgres" } else { "sqlite" },
            "posts": a.posts,
            "post_ms_p50": post_p50,
            "catch_up_s_p50": catch_p50,
            "segment_reads_per_s": reads,
            "segment_read_ms_p50": read_p50,
            "segment_read_ms_p99": read_p99,
            "followers": a.followers,
            "delivered": delivered,
            "push_ms_p50": p50,
            "push_ms_p99": p99,
            "push_ms_max": max,
            "push_relay_cpu_s": relay_cpu,
            "push_generator_cpu_s": gen_cpu,
            "relay_rss_kib": rss_before,
        }),
    })
}

/// `readers` tasks reading the `full` full segments round-robin for `seconds`: reads/s, p50
/// and p99 ms, MB/s.
async fn segment_reads(
    url: &str,
    channel: &samizdat_proto::Id,
    full: u64,
    readers: usize,
    seconds: u64,
) -> Result<(f64, f64, f64, f64)> {
    eprintln!("channels: {readers} readers of cached segments for {seconds} s");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(readers)
        .build()?;
    let stop = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for r in 0..readers {
        let (http, url) = (
            http.clone(),
            format!("{url}/v1/channels/{channel}/segments"),
        );
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut bytes = 0u64;
            let mut n = r as u64;
            while Instant::now() < stop {
                let t = Instant::now();
                let resp = http.get(format!("{url}/{}", n % full)).send().await?;
                if !resp.status().is_success() {
                    return Err(anyhow!("segment read answered {}", resp.status()));
                }
                bytes += resp.bytes().await?.len() as u64;
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
                n += 1;
            }
            anyhow::Ok((lat, bytes))
        }));
    }
    let started = Instant::now();
    let mut all = Vec::new();
    let mut bytes = 0;
    for t in tasks {
        let (lat, b) = t.await??;
        all.extend(lat);
        bytes += b;
    }
    let secs = started.elapsed().as_secs_f64();
    let n = all.len() as f64;
    Ok((
        n / secs,
        pct(&mut all, 50.0),
        pct(&mut all, 99.0),
        bytes as f64 / secs / 1e6,
    ))
}
