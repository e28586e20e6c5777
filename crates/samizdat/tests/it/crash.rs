//! Crash harness, relay side: senders and a subscriber run against a relay process that is
//! SIGKILLed at random moments and restarted. Every acknowledged entry must be in the log
//! exactly once, in one order, and the subscriber must see that order without gaps or
//! repeats. `SAMIZDAT_LONG=1` raises the kill count from 5 to 30.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use samizdat_proto::{Bytes, ClientFrame, Entries, Id, ServerFrame};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{RelayProc, hex_rand};

fn rand_id() -> Id {
    let mut b = [0u8; 16];
    aws_lc_rs::rand::fill(&mut b).unwrap();
    Id::from_bytes(b)
}

fn sha256(d: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, d)
        .as_ref()
        .to_vec()
}

/// POST until the relay answers (same request id every time): at-least-once delivery with
/// idempotent retries. Returns the stored sequence number.
async fn append_until_acked(
    http: &reqwest::Client,
    url: &str,
    group: Id,
    token: &[u8],
    body: Vec<u8>,
    stop: Instant,
) -> Option<u64> {
    let req =
        json!({"request_id": rand_id(), "kind": "application", "epoch": 0, "body": Bytes(body)});
    while Instant::now() < stop {
        let r = http
            .post(format!("{url}/v1/groups/{group}/entries"))
            .header("x-samizdat-token", Bytes::encode(token))
            .json(&req)
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        if let Ok(r) = r
            && r.status().is_success()
        {
            let v: serde_json::Value = r.json().await.ok()?;
            return v["seq"].as_u64();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_sigkill_loses_nothing_acknowledged_sqlite() {
    sigkill_run(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_sigkill_loses_nothing_acknowledged_postgres() {
    let Some(db) = crate::harness::postgres_url() else {
        println!("skipped: SAMIZDAT_TEST_DATABASE_URL is not set");
        return;
    };
    sigkill_run(Some(db)).await;
}

async fn sigkill_run(database: Option<String>) {
    let kills = if std::env::var("SAMIZDAT_LONG").is_ok() {
        30
    } else {
        5
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("relay");
    let first = RelayProc::start_with(&data, "127.0.0.1:0", database.as_deref());
    let addr = first.addr.clone();
    let url = first.url.clone();
    let relay = Arc::new(Mutex::new(first));
    let http = reqwest::Client::new();
    let group = rand_id();
    let token = hex_rand().into_bytes();
    let r = http
        .post(format!("{url}/v1/groups"))
        .json(&json!({"request_id": rand_id(), "group_id": group, "epoch": 0, "token_hash": Bytes(sha256(&token))}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());

    let stop = Instant::now() + Duration::from_secs(120);
    let sending = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let acked: Arc<Mutex<Vec<(u64, Vec<u8>)>>> = Arc::default();
    let mut senders = Vec::new();
    for s in 0..4u8 {
        let (http, url, token, acked, sending) = (
            http.clone(),
            url.clone(),
            token.clone(),
            acked.clone(),
            sending.clone(),
        );
        senders.push(tokio::spawn(async move {
            let mut k = 0u32;
            while sending.load(std::sync::atomic::Ordering::Relaxed) {
                let body = [vec![s], k.to_be_bytes().to_vec(), hex_rand().into_bytes()].concat();
                if let Some(seq) =
                    append_until_acked(&http, &url, group, &token, body.clone(), stop).await
                {
                    acked.lock().unwrap().push((seq, body));
                }
                k += 1;
            }
        }));
    }
    // A subscriber that reconnects with its cursor after every kill.
    let seen: Arc<Mutex<Vec<(u64, Vec<u8>)>>> = Arc::default();
    let subscriber = {
        let (seen, token, addr, sending) =
            (seen.clone(), token.clone(), addr.clone(), sending.clone());
        tokio::spawn(async move {
            let mut quiet_rounds = 0;
            loop {
                let after = seen.lock().unwrap().last().map(|e| e.0).unwrap_or(0);
                if let Ok((mut ws, _)) =
                    tokio_tungstenite::connect_async(format!("ws://{addr}/v1/ws")).await
                {
                    let f = ClientFrame::SubscribeGroup {
                        group_id: group,
                        epoch: 0,
                        token: Bytes(token.clone()),
                        after,
                    };
                    if ws
                        .send(Message::Text(serde_json::to_string(&f).unwrap().into()))
                        .await
                        .is_ok()
                    {
                        loop {
                            match tokio::time::timeout(Duration::from_secs(3), ws.next()).await {
                                Ok(Some(Ok(Message::Text(t)))) => {
                                    if let Ok(ServerFrame::Entry { seq, body, .. }) =
                                        serde_json::from_str::<ServerFrame>(t.as_str())
                                    {
                                        seen.lock().unwrap().push((seq, body.0));
                                        quiet_rounds = 0;
                                    }
                                }
                                Ok(Some(Ok(_))) => {}
                                Err(_) if !sending.load(std::sync::atomic::Ordering::Relaxed) => {
                                    quiet_rounds += 1;
                                    if quiet_rounds >= 2 {
                                        return;
                                    }
                                }
                                Err(_) => {}
                                _ => break,
                            }
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    for i in 0..kills {
        let wait = 150 + (u64::from(hex_rand().as_bytes()[0]) * 3) % 350;
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let mut r = relay.lock().unwrap();
        r.kill();
        *r = RelayProc::start_with(&data, &addr, database.as_deref());
        eprintln!("kill {} of {kills}", i + 1);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    sending.store(false, std::sync::atomic::Ordering::Relaxed);
    for s in senders {
        s.await.unwrap();
    }
    tokio::time::timeout(Duration::from_secs(60), subscriber)
        .await
        .expect("subscriber finished")
        .unwrap();

    // The log as stored.
    let mut log = Vec::new();
    let mut after = 0;
    loop {
        let page: Entries = http
            .get(format!(
                "{url}/v1/groups/{group}/entries?epoch=0&after={after}"
            ))
            .header("x-samizdat-token", Bytes::encode(&token))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if page.entries.is_empty() {
            break;
        }
        after = page.entries.last().unwrap().seq;
        log.extend(page.entries.into_iter().map(|e| (e.seq, e.body.0)));
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 20,
        "too few appends went through: {}",
        acked.len()
    );
    for (seq, body) in &acked {
        let matches: Vec<_> = log.iter().filter(|(_, b)| b == body).collect();
        assert_eq!(
            matches.len(),
            1,
            "acknowledged entry stored {} times",
            matches.len()
        );
        assert_eq!(
            matches[0].0, *seq,
            "acknowledged at one seq, stored at another"
        );
    }
    assert!(log.windows(2).all(|w| w[0].0 < w[1].0));
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen, log,
        "the subscriber must see exactly the log, in order"
    );
    eprintln!(
        "{kills} kills: {} appends acknowledged, {} entries in the log, subscriber saw all",
        acked.len(),
        log.len()
    );
}
