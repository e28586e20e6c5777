//! Group logs: tokens, epoch compare-and-set, Welcomes, idempotency.

use samizdat_proto::{Bytes, EntryKind, ErrorCode, Limits};
use serde_json::json;

use crate::harness::{TestRelay, rand_id};

crate::backend_tests! {
async fn append_and_read_with_tokens(b: Backend) {
    let relay = TestRelay::start(&b).await;
    let g = relay.create_group(0).await;
    let a = relay.append_app(&g, 0, b"m1".to_vec()).await.unwrap();
    let b = relay.append_app(&g, 0, b"m2".to_vec()).await.unwrap();
    assert_eq!(b, a + 1);
    let page = relay.read_entries(&g, 0, 0).await.unwrap();
    assert_eq!(page.current_epoch, 0);
    assert_eq!(page.entries.len(), 2);
    assert_eq!(page.entries[0].kind, EntryKind::Application);
    assert_eq!(relay.read_entries(&g, 0, a).await.unwrap().entries.len(), 1);

    // Wrong token: neither write nor read.
    let e = relay
        .append_raw(&g.id, b"not the token", json!({"request_id": rand_id(), "kind": "application", "epoch": 0, "body": Bytes(vec![1])}))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::BadToken);
    assert_eq!(
        relay
            .read_entries_with(&g.id, 0, 0, b"not the token")
            .await
            .unwrap_err()
            .code,
        ErrorCode::BadToken
    );
    // Missing token.
    let r = relay
        .http
        .get(relay.url(&format!("/v1/groups/{}/entries?epoch=0", g.id)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // A token for an epoch that does not exist yet.
    assert_eq!(
        relay.read_entries(&g, 1, 0).await.unwrap_err().code,
        ErrorCode::BadToken
    );
    // Unknown group: refused on the token (before the body is read), telling nothing about
    // whether the group exists.
    let e = relay
        .append_raw(&rand_id(), g.token(0), json!({"request_id": rand_id(), "kind": "application", "epoch": 0, "body": Bytes(vec![1])}))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::BadToken);
    relay.stop().await;
}

async fn commits_move_the_epoch_and_old_tokens_stop_working(b: Backend) {
    let relay = TestRelay::start(&b).await;
    let g = relay.create_group(0).await;
    relay
        .append_app(&g, 0, b"in epoch 0".to_vec())
        .await
        .unwrap();
    let c = relay
        .append_commit(&g, 0, b"commit 0->1".to_vec(), json!([]))
        .await
        .unwrap();
    // Epoch 0 is closed: application entries with its token are stale.
    let e = relay.append_app(&g, 0, b"late".to_vec()).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::StaleEpoch);
    assert_eq!(e.current_epoch, Some(1));
    // A removed member knows only epoch 0's token: it cannot write to epoch 1.
    let e = relay
        .append_raw(&g.id, g.token(0), json!({"request_id": rand_id(), "kind": "application", "epoch": 1, "body": Bytes(vec![1])}))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::BadToken);
    // Nor read epoch 1.
    assert_eq!(
        relay
            .read_entries_with(&g.id, 1, 0, g.token(0))
            .await
            .unwrap_err()
            .code,
        ErrorCode::BadToken
    );
    relay
        .append_app(&g, 1, b"in epoch 1".to_vec())
        .await
        .unwrap();
    let p0 = relay.read_entries(&g, 0, 0).await.unwrap();
    assert_eq!(p0.current_epoch, 1);
    assert_eq!(p0.entries.last().unwrap().seq, c);
    assert_eq!(p0.entries.last().unwrap().kind, EntryKind::Commit);
    let p1 = relay.read_entries(&g, 1, 0).await.unwrap();
    assert_eq!(p1.entries.len(), 1);
    assert!(p1.entries[0].seq > c);
    // A commit without the next token hash is refused.
    let e = relay
        .append_raw(
            &g.id,
            g.token(1),
            json!({"request_id": rand_id(), "kind": "commit", "epoch": 1, "body": Bytes(vec![1])}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::BadRequest);
    relay.stop().await;
}

async fn twenty_concurrent_commits_one_wins(b: Backend) {
    let relay = std::sync::Arc::new(TestRelay::start(&b).await);
    let g = std::sync::Arc::new(relay.create_group(5).await);
    let mb = relay.create_mailbox().await;
    let mut tasks = Vec::new();
    for i in 0..20u8 {
        let relay = relay.clone();
        let g = g.clone();
        let mbid = mb.id;
        // Each committer claimed a KeyPackage of the new member (security review 3, M2).
        let kp = relay.claimed_key_package(&mb).await;
        tasks.push(tokio::spawn(async move {
            relay
                .append_commit(
                    &g,
                    5,
                    vec![i; 64],
                    json!([{"mailbox_id": mbid, "body": Bytes(vec![i; 8]), "key_package_hash": kp}]),
                )
                .await
        }));
    }
    let mut won = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await.unwrap() {
            Ok(seq) => won.push((i as u8, seq)),
            Err(e) => {
                assert_eq!(e.code, ErrorCode::EpochConflict);
                assert_eq!(e.current_epoch, Some(6));
            }
        }
    }
    assert_eq!(won.len(), 1, "exactly one commit must win: {won:?}");
    let (winner, _) = won[0];
    // Only the winner's Welcome was delivered.
    let msgs = relay.read_mailbox(&mb, 0).await.unwrap();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].body.0, vec![winner; 8]);
    let page = relay.read_entries(&g, 5, 0).await.unwrap();
    assert_eq!(page.entries.len(), 1);
    assert_eq!(page.entries[0].body.0, vec![winner; 64]);
    let relay = std::sync::Arc::into_inner(relay).unwrap();
    relay.stop().await;
}

/// Appends racing for one group (on PostgreSQL they are stored in batches, one transaction
/// for all that wait): each is answered for itself — retries racing their first attempt get
/// its seq, a bad token is refused, one commit wins — and the log holds each entry once.
async fn concurrent_appends_to_one_group_are_each_answered_and_stored_once(b: Backend) {
    let relay = std::sync::Arc::new(TestRelay::start(&b).await);
    let g = std::sync::Arc::new(relay.create_group(0).await);
    let mut tasks = Vec::new();
    let ids: Vec<_> = (0..40).map(|_| rand_id()).collect();
    for i in 0..58usize {
        let (relay, g) = (relay.clone(), g.clone());
        let app = |id, body: Vec<u8>| json!({"request_id": id, "kind": "application", "epoch": 0, "body": Bytes(body)});
        let (token, body) = match i {
            // 40 distinct entries, the first 10 sent twice at once (a retry racing itself).
            0..40 => (g.token(0).to_vec(), app(ids[i], vec![i as u8; 32])),
            40..50 => (g.token(0).to_vec(), app(ids[i - 40], vec![(i - 40) as u8; 32])),
            50..55 => (b"not the token".to_vec(), app(rand_id(), vec![0xEE; 32])),
            _ => (
                g.token(0).to_vec(),
                json!({"request_id": rand_id(), "kind": "commit", "epoch": 0, "body": Bytes(vec![0xC0 + i as u8; 64]),
                       "next_token_hash": Bytes(samizdat_relay::token_hash(g.token(1)).to_vec())}),
            ),
        };
        tasks.push(tokio::spawn(async move { relay.append_raw(&g.id, &token, body).await }));
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    let mut stored = std::collections::BTreeMap::new();
    for (i, a) in answers.iter().enumerate() {
        match (i, a) {
            (0..40, Ok(seq)) => assert!(stored.insert(*seq, i).is_none(), "seq {seq} twice"),
            (0..50, Err(e)) => {
                // Arrived after the winning commit closed epoch 0.
                assert_eq!(e.code, ErrorCode::StaleEpoch, "{e:?}");
                assert_eq!(e.current_epoch, Some(1));
            }
            (40..50, Ok(seq)) => {
                if let Ok(first) = &answers[i - 40] {
                    assert_eq!(seq, first, "a retry got another seq");
                }
            }
            (50..55, a) => assert_eq!(a.as_ref().unwrap_err().code, ErrorCode::BadToken),
            (_, Ok(seq)) => assert!(stored.insert(*seq, i).is_none(), "seq {seq} twice"),
            (_, Err(e)) => assert_eq!(e.code, ErrorCode::EpochConflict, "{e:?}"),
        }
    }
    let commits = stored.values().filter(|i| **i >= 55).count();
    assert_eq!(commits, 1, "exactly one commit wins");
    // A retry whose first attempt was refused as stale may itself have landed first: then
    // it is the stored one.
    for i in 40..50 {
        if let (Err(_), Ok(seq)) = (&answers[i - 40], &answers[i]) {
            stored.insert(*seq, i - 40);
        }
    }
    let page = relay.read_entries(&g, 0, 0).await.unwrap();
    assert_eq!(page.entries.len(), stored.len(), "{stored:?}");
    for e in &page.entries {
        let i = stored[&e.seq];
        if i < 40 {
            assert_eq!(e.body.0, vec![i as u8; 32]);
        }
    }
    let relay = std::sync::Arc::into_inner(relay).unwrap();
    relay.stop().await;
}

async fn welcome_to_missing_mailbox_does_not_abort_the_commit(b: Backend) {
    let relay = TestRelay::start(&b).await;
    let g = relay.create_group(0).await;
    let mb = relay.create_mailbox().await;
    // Finding 3: a Welcome that cannot be stored (the mailbox is gone) must not cost the
    // committer its commit; the commit lands and the Welcome is reported undelivered.
    let missing = rand_id();
    let kp = relay.claimed_key_package(&mb).await;
    let r = relay
        .http
        .post(relay.url(&format!("/v1/groups/{}/entries", g.id)))
        .header(samizdat_proto::HEADER_TOKEN, Bytes::encode(g.token(0)))
        .json(&json!({"request_id": rand_id(), "kind": "commit", "epoch": 0, "body": Bytes(b"c".to_vec()),
                      "next_token_hash": Bytes(samizdat_relay::token_hash(g.token(1)).to_vec()),
                      "welcomes": [{"mailbox_id": missing, "body": Bytes(vec![1])},
                                   {"mailbox_id": mb.id, "body": Bytes(vec![2]), "key_package_hash": kp}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let stored: samizdat_proto::Stored = r.json().await.unwrap();
    assert_eq!(stored.undelivered_welcomes, vec![missing]);
    let page = relay.read_entries(&g, 0, 0).await.unwrap();
    assert_eq!(page.entries.len(), 1);
    assert_eq!(page.current_epoch, 1);
    let msgs = relay.read_mailbox(&mb, 0).await.unwrap();
    assert_eq!(msgs.len(), 1, "the other Welcome was delivered");
    relay.stop().await;
}

async fn append_retry_is_idempotent(b: Backend) {
    let relay = TestRelay::start(&b).await;
    let g = relay.create_group(0).await;
    let body = json!({"request_id": rand_id(), "kind": "commit", "epoch": 0, "body": Bytes(b"c".to_vec()),
                      "next_token_hash": Bytes(samizdat_relay::token_hash(g.token(1)).to_vec())});
    let a = relay
        .append_raw(&g.id, g.token(0), body.clone())
        .await
        .unwrap();
    // The retry arrives after the epoch moved on: still the original answer, not a conflict.
    let b = relay.append_raw(&g.id, g.token(0), body).await.unwrap();
    assert_eq!(a, b);
    assert_eq!(relay.read_entries(&g, 0, 0).await.unwrap().entries.len(), 1);
    relay.stop().await;
}

async fn entry_size_limits_tell_application_from_commit(b: Backend) {
    let limits = Limits {
        max_application_entry: 1000,
        max_commit_entry: 100_000,
        ..Limits::default()
    };
    let relay = TestRelay::start_with(&b, limits).await;
    let g = relay.create_group(0).await;
    assert_eq!(
        relay
            .append_app(&g, 0, vec![0; 1001])
            .await
            .unwrap_err()
            .code,
        ErrorCode::TooLarge
    );
    relay.append_app(&g, 0, vec![0; 1000]).await.unwrap();
    relay
        .append_commit(&g, 0, vec![0; 50_000], json!([]))
        .await
        .unwrap();
    assert_eq!(
        relay
            .append_commit(&g, 1, vec![0; 100_001], json!([]))
            .await
            .unwrap_err()
            .code,
        ErrorCode::TooLarge
    );
    relay.stop().await;
}

async fn duplicate_group_id_is_refused(b: Backend) {
    let relay = TestRelay::start(&b).await;
    let g = relay.create_group(0).await;
    let e = relay
        .post::<serde_json::Value>(
            "/v1/groups",
            json!({"request_id": rand_id(), "group_id": g.id, "epoch": 0, "token_hash": Bytes(vec![0; 32])}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::AlreadyExists);
    let e = relay
        .post::<serde_json::Value>(
            "/v1/groups",
            json!({"request_id": rand_id(), "group_id": rand_id(), "epoch": 0, "token_hash": Bytes(vec![0; 31])}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::BadRequest);
    relay.stop().await;
}

async fn binary_http_appends_carry_the_entry_as_it_is(b: Backend) {
    let relay = TestRelay::start(&b).await;
    let g = relay.create_group(0).await;
    let post = |token: Vec<u8>, headers: Vec<(&'static str, String)>, body: Vec<u8>| {
        let mut r = relay
            .http
            .post(relay.url(&format!("/v1/groups/{}/entries", g.id)))
            .header(samizdat_proto::HEADER_TOKEN, Bytes::encode(&token))
            .header("content-type", "application/octet-stream");
        for (k, v) in headers {
            r = r.header(k, v);
        }
        async move {
            let r = r.body(body).send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<serde_json::Value>().await.unwrap())
        }
    };
    let rid = rand_id();
    let app = |rid: samizdat_proto::Id, epoch: u64| {
        vec![
            ("x-samizdat-request-id", rid.to_string()),
            ("x-samizdat-epoch", epoch.to_string()),
            ("x-samizdat-kind", "application".to_string()),
        ]
    };
    let body: Vec<u8> = (0..=255u8).collect();
    let (status, stored) = post(g.token(0).to_vec(), app(rid, 0), body.clone()).await;
    assert_eq!(status, 200, "{stored}");
    let seq = stored["seq"].as_u64().unwrap();
    // A retry gets the same answer; the entry is stored once, byte for byte.
    let (status, again) = post(g.token(0).to_vec(), app(rid, 0), body.clone()).await;
    assert_eq!((status, again["seq"].as_u64()), (200, Some(seq)));
    let page = relay.read_entries(&g, 0, 0).await.unwrap();
    assert_eq!(page.entries.len(), 1);
    assert_eq!(page.entries[0].body.0, body);
    // A commit in binary form moves the epoch.
    let next_hash = samizdat_relay::token_hash(g.token(1));
    let mut commit = app(rand_id(), 0);
    commit[2].1 = "commit".into();
    commit.push(("x-samizdat-next-token-hash", Bytes::encode(&next_hash)));
    let (status, answer) = post(g.token(0).to_vec(), commit, b"commit".to_vec()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(relay.read_entries(&g, 1, 0).await.unwrap().current_epoch, 1);
    // Missing or malformed metadata, a wrong token: typed refusals, nothing stored.
    let (status, e) = post(g.token(1).to_vec(), app(rand_id(), 1)[..2].to_vec(), vec![1]).await;
    assert_eq!((status, e["code"].as_str()), (400, Some("bad_request")), "{e}");
    let mut bad_epoch = app(rand_id(), 1);
    bad_epoch[1].1 = "-1".into();
    let (status, _) = post(g.token(1).to_vec(), bad_epoch, vec![1]).await;
    assert_eq!(status, 400);
    let (status, e) = post(b"not the token".to_vec(), app(rand_id(), 1), vec![1]).await;
    assert_eq!((status, e["code"].as_str()), (403, Some("bad_token")));
    let (status, e) = post(g.token(0).to_vec(), app(rand_id(), 0), vec![1]).await;
    assert_eq!((status, e["code"].as_str()), (409, Some("stale_epoch")), "{e}");
    assert_eq!(relay.read_entries(&g, 1, 0).await.unwrap().entries.len(), 0);
    relay.stop().await;
}
}
