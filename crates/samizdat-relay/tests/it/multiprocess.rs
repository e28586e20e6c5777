//! Several relay instances on one PostgreSQL database behave as one relay. Each instance has
//! its own connection pool, listener and in-memory state, exactly like separate processes;
//! only the database is shared. Skipped without `SAMIZDAT_TEST_DATABASE_URL`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use samizdat_proto::{Bytes, ClientFrame, EntryKind, ErrorCode, Limits, ServerFrame};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{Backend, TestRelay, rand_id};

async fn three() -> Option<Vec<Arc<TestRelay>>> {
    let b = Backend::postgres().await?;
    let mut relays = Vec::new();
    for _ in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        relays.push(Arc::new(
            TestRelay::start_in(&b, dir.path(), Limits::default()).await,
        ));
    }
    Some(relays)
}

async fn stop(relays: Vec<Arc<TestRelay>>) {
    for r in relays {
        Arc::into_inner(r).unwrap().stop().await;
    }
}

#[tokio::test]
async fn commit_compare_and_set_holds_across_processes() {
    let Some(relays) = three().await else { return };
    let g = Arc::new(relays[0].create_group(0).await);
    let mut tasks = Vec::new();
    for i in 0..20u8 {
        let relay = relays[i as usize % 3].clone();
        let g = g.clone();
        tasks.push(tokio::spawn(async move {
            relay.append_commit(&g, 0, vec![i; 32], json!([])).await
        }));
    }
    let mut wins = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => wins += 1,
            Err(e) => assert_eq!(e.code, ErrorCode::EpochConflict),
        }
    }
    assert_eq!(wins, 1);
    for r in &relays {
        let page = r.read_entries(&g, 0, 0).await.unwrap();
        assert_eq!(page.entries.len(), 1);
        assert_eq!(page.current_epoch, 1);
    }
    stop(relays).await;
}

#[tokio::test]
async fn key_package_claims_stay_exactly_once_across_processes() {
    let Some(relays) = three().await else { return };
    let mb = relays[0].create_mailbox().await;
    relays[1]
        .upload(
            &mb,
            (0..10u8).map(|i| vec![i; 64]).collect(),
            Some(vec![0xEE; 64]),
        )
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..50 {
        let relay = relays[i % 3].clone();
        let id = mb.id;
        tasks.push(tokio::spawn(async move { relay.claim(&id).await.unwrap() }));
    }
    let mut handed = HashSet::new();
    let mut last_resorts = 0;
    for t in tasks {
        let c = t.await.unwrap();
        if c.last_resort {
            last_resorts += 1;
        } else {
            assert!(
                handed.insert(c.key_package.0),
                "a KeyPackage was handed out twice"
            );
        }
    }
    assert_eq!(handed.len(), 10);
    assert_eq!(last_resorts, 40);
    stop(relays).await;
}

#[tokio::test]
async fn retries_landing_on_another_process_stay_idempotent() {
    let Some(relays) = three().await else { return };
    let g = relays[0].create_group(0).await;
    let req = rand_id();
    let body = json!({"request_id": req, "kind": EntryKind::Application, "epoch": 0, "body": Bytes(b"once".to_vec())});
    let a = relays[0]
        .append_raw(&g.id, g.token(0), body.clone())
        .await
        .unwrap();
    let b = relays[1]
        .append_raw(&g.id, g.token(0), body.clone())
        .await
        .unwrap();
    let c = relays[2].append_raw(&g.id, g.token(0), body).await.unwrap();
    assert_eq!((a, a), (b, c));
    assert_eq!(
        relays[2]
            .read_entries(&g, 0, 0)
            .await
            .unwrap()
            .entries
            .len(),
        1
    );
    // Concurrent duplicates on different processes: one row, one answer.
    let mb = relays[0].create_mailbox().await;
    let req = rand_id();
    let mut tasks = Vec::new();
    for r in &relays {
        let r = r.clone();
        let path = format!("/v1/mailboxes/{}/messages", mb.id);
        tasks.push(tokio::spawn(async move {
            r.post::<samizdat_proto::Stored>(
                &path,
                json!({"request_id": req, "body": Bytes(b"dup".to_vec())}),
            )
            .await
            .unwrap()
        }));
    }
    let mut seqs = HashSet::new();
    for t in tasks {
        seqs.insert(t.await.unwrap().seq);
    }
    assert_eq!(seqs.len(), 1);
    assert_eq!(relays[1].read_mailbox(&mb, 0).await.unwrap().len(), 1);
    stop(relays).await;
}

#[tokio::test]
async fn subscriber_on_one_process_gets_appends_through_another_in_order() {
    let Some(relays) = three().await else { return };
    let g = relays[0].create_group(0).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(relays[0].ws_url())
        .await
        .unwrap();
    let _hello = ws.next().await;
    let sub = ClientFrame::SubscribeGroup {
        group_id: g.id,
        epoch: 0,
        token: Bytes(g.token(0).to_vec()),
        after: 0,
    };
    ws.send(Message::Text(serde_json::to_string(&sub).unwrap().into()))
        .await
        .unwrap();
    let mut seqs = Vec::new();
    for i in 0..20u8 {
        seqs.push(
            relays[1 + (i as usize % 2)]
                .append_app(&g, 0, vec![i])
                .await
                .unwrap(),
        );
    }
    let mut got = Vec::new();
    while got.len() < 20 {
        let msg = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .expect("pushed within 20 s")
            .unwrap()
            .unwrap();
        if let Message::Text(t) = msg
            && let ServerFrame::Entry { seq, .. } = serde_json::from_str(t.as_str()).unwrap()
        {
            got.push(seq);
        }
    }
    assert_eq!(got, seqs);
    stop(relays).await;
}
