//! A large group end to end, on one relay process: the client core creates an N-member MLS
//! group (real KeyPackages) in one commit, stores the sealed ratchet tree once and a Welcome
//! part in each member's mailbox through the same relay client the app uses, a sample of
//! members really reads its mailbox, fetches the tree and joins, every member holds a real
//! WebSocket subscription to the group's log, and one real MLS application message is
//! timed until the last online member has it (the sample decrypts it).
//!
//! Simulated members: the N-1-sample others are KeyPackages made by separate mls-rs clients
//! and a subscription each; they do not decrypt (the sample shows the message is valid).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use futures_util::StreamExt;
use samizdat_core::mls::{self as core_mls, Mls};
use samizdat_core::relay_client::{MailboxKey, RelayClient};
use samizdat_core::welcome::WelcomePart;
use samizdat_proto::{EntryKind, Id, WelcomeDrop};
use serde_json::json;

use crate::Report;
use crate::load::{Group as LogGroup, now_us, subscribe_at};
use crate::util::{RelayChild, dir_bytes, ms, pct, random_bytes, with_progress};

#[derive(Debug, clap::Args)]
pub struct LargeGroupArgs {
    /// Members of the group, the creator included.
    #[arg(long, default_value_t = 10_000)]
    pub members: usize,
    /// Members that really read their mailbox, fetch the tree, join and decrypt.
    #[arg(long, default_value_t = 20)]
    pub sample: usize,
}

fn sha256(d: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, d).as_ref());
    out
}

fn rid() -> Id {
    id(&random_bytes(16))
}

fn id(b: &[u8]) -> Id {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[..16]);
    Id::from_bytes(a)
}

fn core_member(dir: &std::path::Path, name: &str) -> Result<Mls> {
    let db = samizdat_core::store::Db::open(&dir.join(format!("{name}.db")), "bench passphrase")?;
    let keys = core_mls::generate_signer(core_mls::DEFAULT_CIPHERSUITE)?;
    Ok(Mls::new(
        db,
        &keys.secret,
        &keys.public,
        core_mls::DEFAULT_CIPHERSUITE,
        None,
    )?)
}

pub async fn run(args: LargeGroupArgs) -> Result<Report> {
    let n = args.members.max(2);
    let sample = args.sample.clamp(1, n - 1);
    let tmp = tempfile::tempdir()?;
    // One commit adds everyone: the relay must take a commit of that size (the defaults cap a
    // commit at 1,000 Welcomes and 8 MiB; a client adding more uses several commits).
    let relay = RelayChild::start_with(
        &tmp.path().join("relay"),
        None,
        &format!(
            "max_welcomes_per_commit = {n}\nmax_commit_entry = 268435456\nmax_request_body = 536870912\n\
             max_inflight_body_bytes = 1073741824\nmax_connections = {}\nmax_connections_per_ip = {}\n\
             drops_per_ip_per_minute = 1000000\nclaims_per_mailbox_per_minute = 0\n",
            n + 1000,
            n + 1000
        ),
    )?;
    let client = RelayClient::new(&relay.url)?;

    // KeyPackages: the sample's from client cores (each its own SQLCipher profile), the
    // others' from separate mls-rs clients. Not timed.
    let dir = tmp.path().join("members");
    std::fs::create_dir_all(&dir)?;
    let d = dir.clone();
    let (creator, sampled, sample_kps) = tokio::task::spawn_blocking(move || -> Result<_> {
        let creator = core_member(&d, "creator")?;
        let mut sampled = Vec::new();
        let mut kps = Vec::new();
        for i in 0..sample {
            let m = core_member(&d, &format!("s{i}"))?;
            kps.push(m.key_package(false)?);
            sampled.push(m);
        }
        Ok((creator, sampled, kps))
    })
    .await??;
    let others_n = n - 1 - sample;
    let others: Vec<Vec<u8>> = with_progress(
        &format!("{n} members: generating KeyPackages"),
        Duration::from_millis(others_n as u64 + 100),
        async move {
            tokio::task::spawn_blocking(move || super::mls::raw_key_packages(others_n)).await?
        },
    )
    .await?;
    let mut kps = sample_kps;
    kps.extend(others);
    let kp_hashes: Vec<Vec<u8>> = kps.iter().map(|k| sha256(k).to_vec()).collect();

    // A mailbox per member (the sample keep their keys to read theirs).
    let mut keys = Vec::new();
    let mut mailboxes = Vec::with_capacity(n - 1);
    with_progress(
        &format!("{n} members: creating mailboxes"),
        Duration::from_millis(n as u64 + 100),
        async {
            let sem = Arc::new(tokio::sync::Semaphore::new(32));
            let mut tasks = Vec::new();
            for (i, kp) in kps.iter().enumerate().take(n - 1) {
                let (key, _) = MailboxKey::generate()?;
                let owner = key.public();
                let key = Arc::new(key);
                if i < sample {
                    keys.push(key.clone());
                }
                let mailbox = rid();
                mailboxes.push(mailbox);
                let c = client.clone();
                let sem = sem.clone();
                let kp = kp.clone();
                // Its KeyPackage goes into its pool and the creator claims it, as a client
                // does: the relay takes a commit's Welcome only for a claimed KeyPackage
                // (security review 3, M2).
                tasks.push(tokio::spawn(async move {
                    let _p = sem.acquire().await;
                    c.create_mailbox(rid(), mailbox, owner).await?;
                    c.upload_key_packages(&key, &mailbox, vec![kp], None)
                        .await?;
                    c.claim_key_package(&mailbox).await.map(|_| ())
                }));
            }
            for t in tasks {
                t.await??;
            }
            Ok::<_, anyhow::Error>(())
        },
    )
    .await?;
    let data_before = dir_bytes(&tmp.path().join("relay"))?;

    // The creator: create + add everyone in one commit (timed, as `bench mls` does).
    let gid = random_bytes(16);
    let g = gid.clone();
    let (creator, pending, epoch0_token, create_secs) = with_progress(
        &format!("{n} members: creating the group"),
        Duration::from_millis(n as u64 + 500),
        async move {
            tokio::task::spawn_blocking(move || -> Result<_> {
                let start = Instant::now();
                let mut group = creator.create_group(&g)?;
                let token0 = group.token()?;
                let pending = group.commit(&kps, &[])?;
                group.apply_pending_commit()?;
                group.save()?;
                let took = start.elapsed().as_secs_f64();
                drop(group);
                Ok((creator, pending, token0, took))
            })
            .await?
        },
    )
    .await?;
    let nm = pending
        .welcome
        .as_ref()
        .ok_or_else(|| anyhow!("the commit has no Welcome"))?;
    let group_id = id(&gid);
    let mut group = creator.load(&gid)?;
    let token1 = group.token()?;

    // On the relay, as `commit_change` does it: the log, the tree once, the commit with a
    // Welcome part for every mailbox.
    let t_store = Instant::now();
    client
        .create_group(rid(), group_id, 0, sha256(&epoch0_token))
        .await?;
    let owner = samizdat_core::relay_client::BlobOwner::Group {
        log: group_id,
        token: &epoch0_token,
    };
    let tree_blob = client.put_blob(&nm.sealed_tree, owner).await?;
    let mut part_bytes = 0usize;
    let mut welcomes = Vec::with_capacity(n - 1);
    for ((mailbox, w), kp_hash) in mailboxes.iter().zip(&nm.welcomes).zip(&kp_hashes) {
        let part = WelcomePart {
            group_id: gid.clone(),
            relay: relay.url.clone().into_bytes(),
            log: Vec::new(),
            invite_mac: Vec::new(),
            tree_blob: tree_blob.as_bytes().to_vec(),
            tree_len: nm.sealed_tree.len() as u64,
            welcome: w.clone(),
        }
        .encode()?;
        part_bytes += part.len();
        welcomes.push(WelcomeDrop {
            mailbox_id: *mailbox,
            body: samizdat_proto::Bytes(part),
            key_package_hash: Some(samizdat_proto::Bytes(kp_hash.clone())),
        });
    }
    let stored = with_progress(
        &format!("{n} members: storing the commit and {} Welcomes", n - 1),
        Duration::from_millis(n as u64 / 2 + 500),
        client.append(
            rid(),
            &group_id,
            &epoch0_token,
            EntryKind::Commit,
            0,
            pending.commit.clone(),
            Some(sha256(&token1)),
            welcomes,
        ),
    )
    .await?;
    let store_secs = t_store.elapsed().as_secs_f64();
    if !stored.undelivered_welcomes.is_empty() {
        bail!(
            "{} Welcomes were not stored",
            stored.undelivered_welcomes.len()
        );
    }
    let data_after = dir_bytes(&tmp.path().join("relay"))?;
    let payload = part_bytes + nm.sealed_tree.len();

    // The sample: read the mailbox, fetch the tree, join (timed per member).
    let mut joins = Vec::new();
    let mut joined = Vec::new();
    for (i, m) in sampled.into_iter().enumerate() {
        let start = Instant::now();
        let msgs = client.read_mailbox(&keys[i], &mailboxes[i], 0).await?;
        let body = &msgs
            .first()
            .ok_or_else(|| anyhow!("a sampled member's mailbox is empty"))?
            .body
            .0;
        let part = WelcomePart::decode(body).ok_or_else(|| anyhow!("not a Welcome part"))??;
        let sealed = client
            .get_blob_bytes(&id(&part.tree_blob), part.tree_len, 1 << 30)
            .await?;
        let (jg, committer) = tokio::task::spawn_blocking(move || -> Result<_> {
            let (mut jg, c) = m.join(&part.welcome, Some(&sealed))?;
            jg.save()?;
            Ok((jg, c, m))
        })
        .await?
        .map(|(jg, c, m)| {
            joined.push(m);
            (jg, c)
        })?;
        joins.push(start.elapsed().as_secs_f64() * 1000.0);
        if committer != group.own_fingerprint()? || jg.token()? != token1 {
            bail!("a sampled member joined a different group state");
        }
        drop(jg);
    }

    // Everyone online: a subscription per member on the group's log at epoch 1.
    let log = LogGroup {
        id: group_id,
        token: token1.to_vec(),
    };
    let arrivals: Arc<Mutex<Vec<u64>>> = Arc::new(Mutex::new(Vec::with_capacity(n)));
    let bodies: Arc<Mutex<HashMap<usize, Vec<u8>>>> = Arc::new(Mutex::new(HashMap::new()));
    let conns = with_progress(
        &format!("{n} members: opening {} subscriptions", n - 1),
        Duration::from_millis(n as u64 + 200),
        async {
            let sem = Arc::new(tokio::sync::Semaphore::new(256));
            let mut tasks = Vec::with_capacity(n - 1);
            for _ in 0..n - 1 {
                let (addr, log, sem) = (relay.addr.clone(), log.clone(), sem.clone());
                tasks.push(tokio::spawn(async move {
                    let _p = sem.acquire().await;
                    subscribe_at(&addr, &log, 1).await
                }));
            }
            let mut conns = Vec::with_capacity(n - 1);
            for t in tasks {
                conns.push(t.await??);
            }
            Ok::<_, anyhow::Error>(conns)
        },
    )
    .await?;
    for (i, mut ws) in conns.into_iter().enumerate() {
        let (arrivals, bodies) = (arrivals.clone(), bodies.clone());
        tokio::spawn(async move {
            while let Some(Ok(msg)) = ws.next().await {
                if let Some(body) = super::load::entry_body(msg) {
                    let at = now_us();
                    if let Ok(mut a) = arrivals.lock() {
                        a.push(at);
                    }
                    if i < sample
                        && let Ok(mut b) = bodies.lock()
                    {
                        b.insert(i, body);
                    }
                    break;
                }
            }
            // Hold the socket until the benchmark ends.
            let _ = ws.next().await;
        });
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // One real message from the creator, timed from just before its append.
    let text = vec![b'x'; 160];
    let ct = group.encrypt(&text)?;
    group.save()?;
    let t0 = now_us();
    client
        .append_application(rid(), &group_id, &token1, 1, ct.clone())
        .await
        .context("appending the message")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = arrivals.lock().map(|a| a.len()).unwrap_or(0);
        if got >= n - 1 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut lat: Vec<f64> = arrivals
        .lock()
        .map_err(|_| anyhow!("lock"))?
        .iter()
        .map(|a| a.saturating_sub(t0) as f64 / 1000.0)
        .collect();
    let delivered = lat.len();
    let (p50, p99, max) = (
        pct(&mut lat, 50.0),
        pct(&mut lat, 99.0),
        pct(&mut lat, 100.0),
    );
    // The sample decrypts what it was pushed.
    let pushed = bodies.lock().map_err(|_| anyhow!("lock"))?.clone();
    let mut decrypted = 0;
    for (i, m) in joined.iter().enumerate() {
        let Some(body) = pushed.get(&i) else { continue };
        let mut jg = m.load(&gid)?;
        if let core_mls::Incoming::Application { data, .. } = jg.process(body)?
            && data == text
        {
            decrypted += 1;
        }
    }
    let mut joins_sorted = joins.clone();
    let (join_p50, join_max) = (pct(&mut joins_sorted, 50.0), pct(&mut joins_sorted, 100.0));
    let welcome_one = nm.welcomes.first().map(|w| w.len()).unwrap_or(0);
    let text_out = format!(
        "A {n}-member group end to end on one relay process (one commit adds everyone; ML_KEM_768_X25519)\n\
         create + add all (client core, state in SQLCipher): {:.2} s\n\
         relay: log + sealed tree ({} B, once) + commit ({} B) with {} Welcome parts ({} B each, {} B in all): stored in {:.2} s\n\
         relay bytes for the adds: {} B of Welcome payload ({:.2} KiB per member); relay data directory grew {} B\n\
         sampled joins ({}): read mailbox + fetch tree + join + save: p50 {} ms, max {} ms\n\
         one message to {} online members: delivered to {delivered}, p50 {} ms, p99 {} ms, max {} ms; decrypted by {decrypted}/{} sampled members\n",
        create_secs,
        nm.sealed_tree.len(),
        pending.commit.len(),
        n - 1,
        welcome_one,
        part_bytes,
        store_secs,
        payload,
        payload as f64 / (n - 1) as f64 / 1024.0,
        data_after.saturating_sub(data_before),
        joins.len(),
        ms(join_p50),
        ms(join_max),
        n - 1,
        ms(p50),
        ms(p99),
        ms(max),
        joined.len(),
    );
    Ok(Report {
        text: text_out,
        json: json!({"benchmark": "large-group", "members": n, "sample": sample,
                     "create_secs": create_secs, "sealed_tree_bytes": nm.sealed_tree.len(),
                     "commit_bytes": pending.commit.len(), "welcome_part_bytes": part_bytes,
                     "relay_payload_bytes": payload, "relay_dir_growth_bytes": data_after.saturating_sub(data_before),
                     "store_secs": store_secs, "join_ms": joins, "delivered": delivered,
                     "p50_ms": p50, "p99_ms": p99, "max_ms": max, "decrypted": decrypted}),
    })
}
