//! Mailboxes and KeyPackage pools.

use std::collections::HashSet;

use samizdat_proto::{ErrorCode, Limits};
use serde_json::json;

use crate::harness::{TestRelay, now, rand_id};

crate::backend_tests! {
async fn drop_read_ack(b: Backend) {
    let relay = TestRelay::start(&b).await;
    let mb = relay.create_mailbox().await;
    let s1 = relay.drop_msg(&mb.id, b"first".to_vec()).await.unwrap();
    let s2 = relay.drop_msg(&mb.id, b"second".to_vec()).await.unwrap();
    assert!(s2 > s1);
    let msgs = relay.read_mailbox(&mb, 0).await.unwrap();
    assert_eq!(
        msgs.iter().map(|m| m.body.0.clone()).collect::<Vec<_>>(),
        vec![b"first".to_vec(), b"second".to_vec()]
    );
    assert_eq!(relay.read_mailbox(&mb, s1).await.unwrap().len(), 1);
    assert_eq!(relay.ack(&mb, &[s1, 999]).await.unwrap(), 1);
    let msgs = relay.read_mailbox(&mb, 0).await.unwrap();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].seq, s2);
    // Unknown mailbox.
    assert_eq!(
        relay
            .drop_msg(&rand_id(), b"x".to_vec())
            .await
            .unwrap_err()
            .code,
        ErrorCode::NotFound
    );
    relay.stop().await;
}

async fn duplicate_mailbox_id_is_refused_but_retry_is_idempotent(b: Backend) {
    let relay = TestRelay::start(&b).await;
    let mb = relay.create_mailbox().await;
    let req = rand_id();
    let body = json!({"request_id": req, "mailbox_id": rand_id(), "owner_key": samizdat_proto::Bytes(vec![1; 32])});
    let first: serde_json::Value = relay.post("/v1/mailboxes", body.clone()).await.unwrap();
    let again: serde_json::Value = relay.post("/v1/mailboxes", body).await.unwrap();
    assert_eq!(first, again);
    let clash = relay
        .post::<serde_json::Value>("/v1/mailboxes", json!({"request_id": rand_id(), "mailbox_id": mb.id, "owner_key": samizdat_proto::Bytes(vec![1; 32])}))
        .await
        .unwrap_err();
    assert_eq!(clash.code, ErrorCode::AlreadyExists);
    relay.stop().await;
}

async fn drop_retry_stores_once(b: Backend) {
    let relay = TestRelay::start(&b).await;
    let mb = relay.create_mailbox().await;
    let req = rand_id();
    let path = format!("/v1/mailboxes/{}/messages", mb.id);
    let body = json!({"request_id": req, "body": samizdat_proto::Bytes(b"once".to_vec())});
    let a: samizdat_proto::Stored = relay.post(&path, body.clone()).await.unwrap();
    let b: samizdat_proto::Stored = relay.post(&path, body).await.unwrap();
    assert_eq!(a, b);
    assert_eq!(relay.read_mailbox(&mb, 0).await.unwrap().len(), 1);
    // Finding 11: a request id answers only a repeat of the same operation on the same
    // target. On another kind of request it is a new request (here: an empty pool), never
    // the drop's stored answer.
    let e = relay
        .post::<serde_json::Value>(
            &format!("/v1/mailboxes/{}/keypackages/claim", mb.id),
            json!({"request_id": req}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::NoKeyPackage);
    // And on another mailbox it is a new drop there, not the first mailbox's answer.
    let other = relay.create_mailbox().await;
    let _: samizdat_proto::Stored = relay
        .post(
            &format!("/v1/mailboxes/{}/messages", other.id),
            json!({"request_id": req, "body": samizdat_proto::Bytes(b"twice".to_vec())}),
        )
        .await
        .unwrap();
    assert_eq!(relay.read_mailbox(&other, 0).await.unwrap().len(), 1);
    relay.stop().await;
}

async fn signatures_are_checked_and_not_replayable(b: Backend) {
    let relay = TestRelay::start(&b).await;
    let mb = relay.create_mailbox().await;
    let other = relay.create_mailbox().await;
    let path = format!("/v1/mailboxes/{}/messages?after=0", mb.id);

    // Unsigned.
    let r = relay.http.get(relay.url(&path)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<samizdat_proto::ErrorBody>().await.unwrap().code,
        ErrorCode::BadSignature
    );

    // Signed by someone else's key.
    let wrong = crate::harness::Mailbox {
        id: mb.id,
        key: other.key.clone(),
    };
    let r = relay
        .signed(&wrong, reqwest::Method::GET, &path, vec![])
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<samizdat_proto::ErrorBody>().await.unwrap().code,
        ErrorCode::BadSignature
    );

    // Signed over a different path (the signature covers the query too).
    let ts = now();
    let nonce = rand_id();
    let good = relay.signed_at(
        &mb,
        reqwest::Method::GET,
        &format!("/v1/mailboxes/{}/messages?after=5", mb.id),
        vec![],
        ts,
        nonce,
    );
    let tampered = good.build().unwrap();
    let mut req = relay.http.get(relay.url(&path));
    for (k, v) in tampered.headers() {
        req = req.header(k, v);
    }
    assert_eq!(
        req.send()
            .await
            .unwrap()
            .json::<samizdat_proto::ErrorBody>()
            .await
            .unwrap()
            .code,
        ErrorCode::BadSignature
    );

    // A valid request works once; the same signed request again is a replay.
    let nonce = rand_id();
    let ts = now();
    let r = relay
        .signed_at(&mb, reqwest::Method::GET, &path, vec![], ts, nonce)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = relay
        .signed_at(&mb, reqwest::Method::GET, &path, vec![], ts, nonce)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<samizdat_proto::ErrorBody>().await.unwrap().code,
        ErrorCode::ReplayedSignature
    );

    // Timestamp outside the window.
    let r = relay
        .signed_at(
            &mb,
            reqwest::Method::GET,
            &path,
            vec![],
            now() - 3600,
            rand_id(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<samizdat_proto::ErrorBody>().await.unwrap().code,
        ErrorCode::StaleSignature
    );

    // Garbage headers.
    let r = relay
        .http
        .get(relay.url(&path))
        .header("x-samizdat-timestamp", "yesterday")
        .header("x-samizdat-nonce", "x")
        .header("x-samizdat-signature", "%%%")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<samizdat_proto::ErrorBody>().await.unwrap().code,
        ErrorCode::BadSignature
    );
    relay.stop().await;
}

async fn quota_and_message_limits(b: Backend) {
    let limits = Limits {
        mailbox_quota_messages: 3,
        max_mailbox_message: 1000,
        ..Limits::default()
    };
    let relay = TestRelay::start_with(&b, limits).await;
    let mb = relay.create_mailbox().await;
    for i in 0..3u8 {
        relay.drop_msg(&mb.id, vec![i; 10]).await.unwrap();
    }
    assert_eq!(
        relay.drop_msg(&mb.id, vec![9; 10]).await.unwrap_err().code,
        ErrorCode::QuotaExceeded
    );
    // Acknowledging frees space.
    let seqs: Vec<u64> = relay
        .read_mailbox(&mb, 0)
        .await
        .unwrap()
        .iter()
        .map(|m| m.seq)
        .collect();
    relay.ack(&mb, &seqs[..1]).await.unwrap();
    relay.drop_msg(&mb.id, vec![9; 10]).await.unwrap();
    // Too large a message.
    assert_eq!(
        relay
            .drop_msg(&mb.id, vec![0; 1001])
            .await
            .unwrap_err()
            .code,
        ErrorCode::TooLarge
    );
    relay.stop().await;
}

async fn messages_expire_after_ttl(b: Backend) {
    let limits = Limits {
        mailbox_ttl_secs: 0,
        ..Limits::default()
    };
    let relay = TestRelay::start_with(&b, limits).await;
    let mb = relay.create_mailbox().await;
    relay.drop_msg(&mb.id, b"gone".to_vec()).await.unwrap();
    assert!(relay.read_mailbox(&mb, 0).await.unwrap().is_empty());
    relay.stop().await;
}

async fn fifty_concurrent_claims_on_ten_key_packages(b: Backend) {
    let relay = TestRelay::start(&b).await;
    let mb = relay.create_mailbox().await;
    let kps: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 100]).collect();
    let count = relay
        .upload(&mb, kps.clone(), Some(vec![0xEE; 100]))
        .await
        .unwrap();
    assert_eq!(count.available, 10);
    assert!(count.has_last_resort);

    let relay = std::sync::Arc::new(relay);
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let relay = relay.clone();
        let id = mb.id;
        tasks.push(tokio::spawn(async move { relay.claim(&id).await.unwrap() }));
    }
    let mut handed = Vec::new();
    let mut last_resorts = 0;
    for t in tasks {
        let c = t.await.unwrap();
        if c.last_resort {
            assert_eq!(c.key_package.0, vec![0xEE; 100]);
            last_resorts += 1;
        } else {
            handed.push(c.key_package.0);
        }
    }
    assert_eq!(handed.len(), 10);
    assert_eq!(last_resorts, 40);
    let distinct: HashSet<_> = handed.iter().collect();
    assert_eq!(distinct.len(), 10, "a KeyPackage was handed out twice");
    let relay = std::sync::Arc::into_inner(relay).unwrap();
    relay.stop().await;
}

async fn key_package_pool_bounds_and_counts(b: Backend) {
    let limits = Limits {
        max_key_packages: 5,
        max_key_package_size: 200,
        ..Limits::default()
    };
    let relay = TestRelay::start_with(&b, limits).await;
    let mb = relay.create_mailbox().await;
    // Empty pool, no last resort.
    assert_eq!(
        relay.claim(&mb.id).await.unwrap_err().code,
        ErrorCode::NoKeyPackage
    );
    assert_eq!(
        relay
            .upload(&mb, vec![vec![1; 10]; 6], None)
            .await
            .unwrap_err()
            .code,
        ErrorCode::QuotaExceeded
    );
    assert_eq!(
        relay
            .upload(&mb, vec![vec![1; 201]], None)
            .await
            .unwrap_err()
            .code,
        ErrorCode::TooLarge
    );
    relay.upload(&mb, vec![vec![1; 10]; 2], None).await.unwrap();
    let path = format!("/v1/mailboxes/{}/keypackages", mb.id);
    let r = relay
        .signed(&mb, reqwest::Method::GET, &path, vec![])
        .send()
        .await
        .unwrap();
    let count: samizdat_proto::KeyPackageCount = r.json().await.unwrap();
    assert_eq!(
        count,
        samizdat_proto::KeyPackageCount {
            available: 2,
            has_last_resort: false
        }
    );
    relay.claim(&mb.id).await.unwrap();
    relay.claim(&mb.id).await.unwrap();
    assert_eq!(
        relay.claim(&mb.id).await.unwrap_err().code,
        ErrorCode::NoKeyPackage
    );
    // A claim retry returns the same KeyPackage and takes nothing more.
    relay
        .upload(&mb, vec![vec![7; 10], vec![8; 10]], None)
        .await
        .unwrap();
    let req = rand_id();
    let path = format!("/v1/mailboxes/{}/keypackages/claim", mb.id);
    let a: samizdat_proto::ClaimedKeyPackage =
        relay.post(&path, json!({"request_id": req})).await.unwrap();
    let b: samizdat_proto::ClaimedKeyPackage =
        relay.post(&path, json!({"request_id": req})).await.unwrap();
    assert_eq!(a, b);
    let c = relay.claim(&mb.id).await.unwrap();
    assert_ne!(a.key_package, c.key_package);
    relay.stop().await;
}

async fn claims_are_rate_limited(b: Backend) {
    let limits = Limits {
        claims_per_ip_per_minute: 2,
        ..Limits::default()
    };
    let relay = TestRelay::start_with(&b, limits).await;
    let mb = relay.create_mailbox().await;
    relay.upload(&mb, vec![], Some(vec![1; 10])).await.unwrap();
    crate::harness::away_from_minute_boundary().await;
    relay.claim(&mb.id).await.unwrap();
    relay.claim(&mb.id).await.unwrap();
    assert_eq!(
        relay.claim(&mb.id).await.unwrap_err().code,
        ErrorCode::RateLimited
    );
    relay.stop().await;
}
}
