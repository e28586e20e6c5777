//! Regression tests for the 2026-11-27 security review of the relay (issue "Hardening"),
//! named after its findings. Each one failed on the code as it landed.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use samizdat_proto::{Bytes, ClientFrame, ErrorCode, Limits};
use samizdat_relay::store::{SqliteStore, Store};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

#[allow(unused_imports)]
use crate::harness::{Backend, TestRelay, now, rand_id};

/// Read until the peer closes or `limit` passes; returns what arrived and whether it closed.
async fn read_until_closed(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (out, true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (out, false),
        }
    }
}

crate::backend_tests! {
    async fn finding_3_drops_are_limited_per_mailbox(b: Backend) {
        let limits = Limits { drops_per_mailbox_per_minute: 3, ..Default::default() };
        let relay = TestRelay::start_with(&b, limits).await;
        let victim = relay.create_mailbox().await;
        let other = relay.create_mailbox().await;
        let mut codes = Vec::new();
        for i in 0..5u8 {
            codes.push(relay.drop_msg(&victim.id, vec![i]).await.map(|_| ()).map_err(|e| e.code));
        }
        assert_eq!(codes.iter().filter(|c| c.is_ok()).count(), 3, "{codes:?}");
        assert_eq!(codes[4], Err(ErrorCode::RateLimited));
        // Another mailbox has its own allowance.
        relay.drop_msg(&other.id, vec![1]).await.unwrap();
        relay.stop().await;
    }

    async fn finding_3_full_mailbox_does_not_block_a_group_add(b: Backend) {
        let limits = Limits { mailbox_quota_messages: 2, ..Default::default() };
        let relay = TestRelay::start_with(&b, limits).await;
        let victim = relay.create_mailbox().await;
        // An attacker who knows the mailbox id fills it.
        relay.drop_msg(&victim.id, b"junk".to_vec()).await.unwrap();
        relay.drop_msg(&victim.id, b"junk".to_vec()).await.unwrap();
        assert_eq!(relay.drop_msg(&victim.id, b"junk".to_vec()).await.unwrap_err().code, ErrorCode::QuotaExceeded);
        // A commit that welcomes the victim still lands, and the Welcome is stored.
        let g = relay.create_group(0).await;
        let kp = relay.claimed_key_package(&victim).await;
        relay
            .append_commit(&g, 0, b"add".to_vec(), json!([{"mailbox_id": victim.id, "body": Bytes(b"welcome".to_vec()), "key_package_hash": kp}]))
            .await
            .unwrap();
        let msgs = relay.read_mailbox(&victim, 0).await.unwrap();
        assert_eq!(msgs.len(), 3);
        assert_eq!(msgs[2].body.0, b"welcome".to_vec());
        relay.stop().await;
    }

    async fn finding_3_welcome_beyond_the_allowance_is_reported_not_fatal(b: Backend) {
        let limits = Limits { mailbox_quota_messages: 1, welcome_allowance_messages: 0, ..Default::default() };
        let relay = TestRelay::start_with(&b, limits).await;
        let victim = relay.create_mailbox().await;
        relay.drop_msg(&victim.id, b"junk".to_vec()).await.unwrap();
        let g = relay.create_group(0).await;
        let kp = relay.claimed_key_package(&victim).await;
        let r = relay
            .http
            .post(relay.url(&format!("/v1/groups/{}/entries", g.id)))
            .header(samizdat_proto::HEADER_TOKEN, Bytes::encode(g.token(0)))
            .json(&json!({"request_id": rand_id(), "kind": "commit", "epoch": 0, "body": Bytes(b"c".to_vec()),
                          "next_token_hash": Bytes(samizdat_relay::token_hash(g.token(1)).to_vec()),
                          "welcomes": [{"mailbox_id": victim.id, "body": Bytes(vec![2]), "key_package_hash": kp}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let stored: samizdat_proto::Stored = r.json().await.unwrap();
        assert_eq!(stored.undelivered_welcomes, vec![victim.id]);
        assert_eq!(relay.read_entries(&g, 0, 0).await.unwrap().current_epoch, 1);
        relay.stop().await;
    }

    /// Security review 3, M2: Welcomes in a stranger's own commits count against the target
    /// mailbox's drop allowance: beyond it they are reported undelivered, not stored, so the
    /// mailbox cannot be filled in a burst.
    async fn finding_m2_welcome_drops_count_against_the_mailbox(b: Backend) {
        let limits = Limits { drops_per_mailbox_per_minute: 5, ..Default::default() };
        let relay = TestRelay::start_with(&b, limits).await;
        let victim = relay.create_mailbox().await;
        let g = relay.create_group(0).await;
        let mut delivered = 0;
        for epoch in 0..3u64 {
            let mut welcomes = Vec::new();
            for i in 0..4u8 {
                let kp = relay.claimed_key_package(&victim).await;
                welcomes.push(json!({"mailbox_id": victim.id, "body": Bytes(vec![i]), "key_package_hash": kp}));
            }
            let r = relay
                .http
                .post(relay.url(&format!("/v1/groups/{}/entries", g.id)))
                .header(samizdat_proto::HEADER_TOKEN, Bytes::encode(g.token(epoch)))
                .json(&json!({"request_id": rand_id(), "kind": "commit", "epoch": epoch, "body": Bytes(b"c".to_vec()),
                              "next_token_hash": Bytes(samizdat_relay::token_hash(g.token(epoch + 1)).to_vec()),
                              "welcomes": welcomes}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let stored: samizdat_proto::Stored = r.json().await.unwrap();
            delivered += 4 - stored.undelivered_welcomes.len();
        }
        // The allowance (5, refilled at 5 a minute however slow the machine) of 12 sent.
        assert!((5..12).contains(&delivered), "{delivered} of 12 stored");
        let msgs = relay.read_mailbox(&victim, 0).await.unwrap();
        assert_eq!(msgs.len(), delivered);
        relay.stop().await;
    }

    /// Security review 3, M2: a commit's Welcome is dropped only for a KeyPackage claimed from
    /// that mailbox (its hash), once per claim; anything else is reported undelivered — so a
    /// stranger's group cannot fill a mailbox without using up its KeyPackages.
    async fn finding_m2_a_welcome_needs_a_key_package_claimed_from_that_mailbox(b: Backend) {
        let relay = TestRelay::start(&b).await;
        let (victim, other) = (relay.create_mailbox().await, relay.create_mailbox().await);
        let g = relay.create_group(0).await;
        let elsewhere = relay.claimed_key_package(&other).await;
        let claimed = relay.claimed_key_package(&victim).await;
        // In the pool, never claimed.
        let unclaimed = {
            let kp = rand_id().as_bytes().to_vec();
            relay.upload(&victim, vec![kp.clone()], None).await.unwrap();
            Bytes(samizdat_relay::token_hash(&kp).to_vec())
        };
        let commit = |epoch: u64, welcomes: serde_json::Value| {
            let req = relay
                .http
                .post(relay.url(&format!("/v1/groups/{}/entries", g.id)))
                .header(samizdat_proto::HEADER_TOKEN, Bytes::encode(g.token(epoch)))
                .json(&json!({"request_id": rand_id(), "kind": "commit", "epoch": epoch, "body": Bytes(b"c".to_vec()),
                              "next_token_hash": Bytes(samizdat_relay::token_hash(g.token(epoch + 1)).to_vec()),
                              "welcomes": welcomes}));
            async move {
                let r = req.send().await.unwrap();
                assert_eq!(r.status(), 200);
                r.json::<samizdat_proto::Stored>().await.unwrap().undelivered_welcomes.len()
            }
        };
        let w = |kp: Option<&Bytes>| json!({"mailbox_id": victim.id, "body": Bytes(b"welcome".to_vec()), "key_package_hash": kp});
        // No hash, a KeyPackage never claimed, one claimed from another mailbox: refused.
        assert_eq!(commit(0, json!([w(None), w(Some(&unclaimed)), w(Some(&elsewhere))])).await, 3);
        assert!(relay.read_mailbox(&victim, 0).await.unwrap().is_empty());
        // The claimed one: delivered, once.
        assert_eq!(commit(1, json!([w(Some(&claimed))])).await, 0);
        assert_eq!(commit(2, json!([w(Some(&claimed))])).await, 1, "a claim is good for one Welcome");
        assert_eq!(relay.read_mailbox(&victim, 0).await.unwrap().len(), 1);
        relay.stop().await;
    }

    /// Security review 3, M12: the metrics name the API's routes, never the secret path
    /// prefix that hides them.
    async fn finding_m12_metrics_do_not_carry_the_secret_path_prefix(b: Backend) {
        let dir = tempfile::tempdir().unwrap();
        let relay = TestRelay::start_configured(&b, dir.path(), Limits::default(), |c| {
            c.path_prefix = Some("k7Hs9dQ2xPzw".into());
        })
        .await;
        let url = relay.relay.url();
        assert!(url.ends_with("/k7Hs9dQ2xPzw"), "{url}");
        let r = relay.http.get(format!("{url}/healthz")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let metrics = relay.http.get(relay.metrics_url()).send().await.unwrap().text().await.unwrap();
        assert!(metrics.contains("route=\"/healthz\""), "{metrics}");
        assert!(!metrics.contains("k7Hs9dQ2xPzw"), "the secret is in the metrics");
        relay.stop().await;
    }

    async fn finding_3_group_storage_is_bounded(b: Backend) {
        let limits = Limits { max_group_bytes: 100, ..Default::default() };
        let relay = TestRelay::start_with(&b, limits).await;
        let g = relay.create_group(0).await;
        relay.append_app(&g, 0, vec![1; 60]).await.unwrap();
        let e = relay.append_app(&g, 0, vec![2; 60]).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::StorageFull);
        assert!(e.message.contains("storage limit"), "{}", e.message);
        // Other groups are not affected.
        let h = relay.create_group(0).await;
        relay.append_app(&h, 0, vec![3; 60]).await.unwrap();
        relay.stop().await;
    }

    async fn finding_4_made_up_token_is_refused_before_the_body(b: Backend) {
        let relay = TestRelay::start(&b).await;
        // Announce a 10 MiB body and send none of it: the answer must come anyway, from the
        // headers alone (the relay never waits for, buffers or decodes the body).
        let mut s = TcpStream::connect(relay.relay.addr()).await.unwrap();
        let req = format!(
            "POST /v1/groups/{}/entries HTTP/1.1\r\nHost: relay\r\nx-samizdat-token: AAAAAAAA\r\ncontent-type: application/json\r\ncontent-length: 10485760\r\n\r\n",
            rand_id()
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let (got, _) = read_until_closed(&mut s, Duration::from_secs(20)).await;
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 403"), "{text}");
        assert!(text.contains("bad_token"), "{text}");
        relay.stop().await;
    }

    async fn finding_4_slow_headers_are_cut_off(b: Backend) {
        let limits = Limits { header_timeout_secs: 1, ..Default::default() };
        let relay = TestRelay::start_with(&b, limits).await;
        let mut s = TcpStream::connect(relay.relay.addr()).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: relay\r\nX-Slow: ").await.unwrap();
        // Never finish the headers: the relay closes the connection (with or without a 408).
        let (_, closed) = read_until_closed(&mut s, Duration::from_secs(30)).await;
        assert!(closed, "a client that never finishes its headers must be disconnected");
        relay.stop().await;
    }

    async fn finding_4_connections_per_address_are_capped(b: Backend) {
        let limits = Limits { max_connections_per_ip: 4, ..Default::default() };
        let relay = TestRelay::start_with(&b, limits).await;
        let mut held = Vec::new();
        for _ in 0..4 {
            let mut s = TcpStream::connect(relay.relay.addr()).await.unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n").await.unwrap();
            let mut buf = [0u8; 512];
            let n = s.read(&mut buf).await.unwrap();
            assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
            held.push(s);
        }
        // The fifth connection from the same address is closed at once.
        let mut fifth = TcpStream::connect(relay.relay.addr()).await.unwrap();
        let _ = fifth.write_all(b"GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n").await;
        let (got, closed) = read_until_closed(&mut fifth, Duration::from_secs(20)).await;
        assert!(closed && got.is_empty(), "{}", String::from_utf8_lossy(&got));
        // Closing one frees its slot.
        drop(held.pop());
        tokio::time::sleep(Duration::from_millis(200)).await;
        let r = relay.http.get(relay.url("/healthz")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        relay.stop().await;
    }

    async fn finding_4_body_bytes_in_memory_are_bounded(b: Backend) {
        // The smallest budget the relay accepts is 64 KiB.
        let limits = Limits { max_inflight_body_bytes: 64 * 1024, ..Default::default() };
        let relay = TestRelay::start_with(&b, limits).await;
        let g = relay.create_group(0).await;
        // A member starts a 100 KiB append and sends 60 KiB of it, then stalls.
        let mut slow = TcpStream::connect(relay.relay.addr()).await.unwrap();
        let head = format!(
            "POST /v1/groups/{}/entries HTTP/1.1\r\nHost: relay\r\n{}: {}\r\ncontent-type: application/json\r\ncontent-length: 102400\r\n\r\n",
            g.id, samizdat_proto::HEADER_TOKEN, Bytes::encode(g.token(0))
        );
        slow.write_all(head.as_bytes()).await.unwrap();
        slow.write_all(&vec![b' '; 60 * 1024]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Another 30 KiB append cannot get its bytes into memory: 503 with Retry-After.
        let r = relay
            .http
            .post(relay.url(&format!("/v1/groups/{}/entries", g.id)))
            .header(samizdat_proto::HEADER_TOKEN, Bytes::encode(g.token(0)))
            .body(vec![b' '; 30 * 1024])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503);
        assert!(r.headers().contains_key("retry-after"));
        // Once the stalled upload is gone, its bytes are released.
        drop(slow);
        tokio::time::sleep(Duration::from_millis(300)).await;
        relay.append_app(&g, 0, vec![7; 100]).await.unwrap();
        relay.stop().await;
    }

    async fn finding_5_forwarded_for_only_from_trusted_proxies(b: Backend) {
        let limits = Limits { creations_per_ip_per_minute: 2, ..Default::default() };
        let dir = tempfile::tempdir().unwrap();
        // Behind a trusted proxy on loopback: each real client has its own allowance.
        let relay = TestRelay::start_configured(&b, dir.path(), limits.clone(), |c| {
            c.trusted_proxies = vec!["127.0.0.1/32".into()];
        })
        .await;
        let create = |relay: &TestRelay, xff: &'static str| {
            let req = relay
                .http
                .post(relay.url("/v1/mailboxes"))
                .header("x-forwarded-for", xff)
                .json(&json!({"request_id": rand_id(), "mailbox_id": rand_id(), "owner_key": Bytes(vec![7; 32])}));
            async move { req.send().await.unwrap().status().as_u16() }
        };
        let a: Vec<u16> = vec![create(&relay, "203.0.113.1").await, create(&relay, "203.0.113.1").await, create(&relay, "203.0.113.1").await];
        assert_eq!(a, vec![201, 201, 429]);
        // A different client behind the same proxy is not blocked by the first one.
        assert_eq!(create(&relay, "198.51.100.2").await, 201);
        // A client cannot pick its bucket: only the right-most untrusted hop counts.
        assert_eq!(create(&relay, "198.51.100.99, 203.0.113.1").await, 429);
        relay.stop().await;

        // Without trusted proxies the header is ignored: everyone is the socket peer.
        let dir = tempfile::tempdir().unwrap();
        let relay = TestRelay::start_configured(&b, dir.path(), limits, |_| {}).await;
        let statuses = vec![create(&relay, "1.1.1.1").await, create(&relay, "2.2.2.2").await, create(&relay, "3.3.3.3").await];
        assert_eq!(statuses, vec![201, 201, 429]);
        relay.stop().await;
    }

    /// Security review 3, M3: one address, even a mailbox's legitimate sender, holds at most
    /// its share of the relay-wide budget of bodies in memory; other addresses are served
    /// meanwhile, and the share comes back when the slow request ends.
    async fn finding_m3_one_address_holds_only_its_share_of_the_body_budget(b: Backend) {
        let limits = Limits {
            max_request_body: 256 * 1024,
            max_mailbox_message: 256 * 1024,
            max_inflight_body_bytes_per_ip: 256 * 1024,
            drops_per_ip_per_minute: 0,
            drops_per_mailbox_per_minute: 0,
            ..Default::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let relay = TestRelay::start_configured(&b, dir.path(), limits, |c| {
            c.trusted_proxies = vec!["127.0.0.1/32".into()];
        })
        .await;
        let mb = relay.create_mailbox().await;
        let path = format!("/v1/mailboxes/{}/messages", mb.id);
        // A slow sender from 203.0.113.1: 180 KB of a 200 KB body, then nothing.
        let open_slow = || async {
            let mut slow = TcpStream::connect(relay.relay.addr()).await.unwrap();
            slow.write_all(format!("POST {path} HTTP/1.1\r\nHost: relay\r\nx-forwarded-for: 203.0.113.1\r\n\
                content-type: application/json\r\ncontent-length: 200000\r\n\r\n").as_bytes()).await.unwrap();
            slow.write_all(&vec![b' '; 180_000]).await.unwrap();
            slow.flush().await.unwrap();
            slow
        };
        let drop_from = |xff: &'static str| {
            let req = relay.http.post(relay.url(&path)).header("x-forwarded-for", xff)
                .json(&json!({"request_id": rand_id(), "body": Bytes(vec![7; 100_000])}));
            async move {
                let r = req.send().await.unwrap();
                (r.status().as_u16(), r.text().await.unwrap())
            }
        };
        // Once the relay holds the slow body, the same address cannot add another 130 KB
        // while it is held. (Should a quick request take the share first, the slow one is
        // the one refused: it starts again.)
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut slow = open_slow().await;
        loop {
            let (status, text) = drop_from("203.0.113.1").await;
            let (answered, _) = read_until_closed(&mut slow, Duration::from_millis(100)).await;
            if status == 429 && answered.is_empty() {
                assert!(text.contains("too much data"), "{text}");
                break;
            }
            assert!(matches!(status, 200 | 429), "{status} {text}");
            assert!(tokio::time::Instant::now() < deadline, "the same address was never limited");
            if !answered.is_empty() {
                slow = open_slow().await;
            }
        }
        // Another client is served meanwhile.
        assert_eq!(drop_from("198.51.100.2").await.0, 200);
        // When the slow request ends, its share comes back.
        drop(slow);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while drop_from("203.0.113.1").await.0 != 200 {
            assert!(tokio::time::Instant::now() < deadline, "the share never came back");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        relay.stop().await;
    }

    /// Security review 3, M4: behind a trusted proxy, each forwarded client may hold
    /// `max_connections_per_ip` WebSockets; the proxy itself, which carries everyone, is not
    /// capped as one address.
    async fn finding_m4_connections_are_capped_per_forwarded_client(b: Backend) {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let limits = Limits { max_connections_per_ip: 2, ..Default::default() };
        let dir = tempfile::tempdir().unwrap();
        let relay = TestRelay::start_configured(&b, dir.path(), limits, |c| {
            c.trusted_proxies = vec!["127.0.0.1/32".into()];
        })
        .await;
        let open = |xff: String| {
            let mut req = relay.ws_url().into_client_request().unwrap();
            req.headers_mut().insert("x-forwarded-for", xff.parse().unwrap());
            async move { tokio_tungstenite::connect_async(req).await.map(|(ws, _)| ws) }
        };
        let first = open("203.0.113.1".into()).await.expect("first");
        let _second = open("203.0.113.1".into()).await.expect("second");
        match open("203.0.113.1".into()).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 429),
            other => panic!("a third WebSocket of one forwarded client: {:?}", other.map(|_| ())),
        }
        // Five other clients through the same proxy connection address are all served.
        let mut others = Vec::new();
        for i in 0..5 {
            others.push(open(format!("198.51.100.{i}")).await.expect("another client"));
        }
        // A closed socket frees its slot.
        drop(first);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if open("203.0.113.1".into()).await.is_ok() {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "the slot never came back");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        relay.stop().await;
    }

    async fn finding_8_claims_are_limited_per_pool(b: Backend) {
        let limits = Limits { claims_per_mailbox_per_minute: 2, ..Default::default() };
        let relay = TestRelay::start_with(&b, limits).await;
        let mb = relay.create_mailbox().await;
        relay.upload(&mb, vec![vec![1; 10], vec![2; 10], vec![3; 10]], Some(vec![9; 10])).await.unwrap();
        relay.claim(&mb.id).await.unwrap();
        relay.claim(&mb.id).await.unwrap();
        assert_eq!(relay.claim(&mb.id).await.unwrap_err().code, ErrorCode::RateLimited);
        // The third KeyPackage is still in the pool.
        let count: samizdat_proto::KeyPackageCount = serde_json::from_slice(
            &relay.signed(&mb, reqwest::Method::GET, &format!("/v1/mailboxes/{}/keypackages", mb.id), Vec::new())
                .send().await.unwrap().bytes().await.unwrap()).unwrap();
        assert_eq!(count.available, 1);
        relay.stop().await;
    }

    async fn finding_9_refused_subscriptions_close_the_connection(b: Backend) {
        let relay = TestRelay::start(&b).await;
        let (mut ws, _) = tokio_tungstenite::connect_async(relay.ws_url()).await.unwrap();
        let _hello = ws.next().await.unwrap().unwrap();
        let g = relay.create_group(0).await;
        let mut closed = false;
        for _ in 0..40 {
            let frame = ClientFrame::SubscribeGroup { group_id: g.id, epoch: 0, token: Bytes(vec![1, 2, 3]), after: 0 };
            if ws.send(Message::Text(serde_json::to_string(&frame).unwrap().into())).await.is_err() {
                closed = true;
                break;
            }
        }
        if !closed {
            // Drain: the relay answers each refusal, then closes.
            let drained = tokio::time::timeout(Duration::from_secs(20), async {
                while let Some(Ok(m)) = ws.next().await {
                    if matches!(m, Message::Close(_)) { break; }
                }
            })
            .await;
            assert!(drained.is_ok(), "the connection must be closed after repeated bad subscriptions");
        }
        relay.stop().await;
    }

    async fn finding_11_request_ids_are_bound_to_their_target(b: Backend) {
        let relay = TestRelay::start(&b).await;
        let a = relay.create_mailbox().await;
        let c = relay.create_mailbox().await;
        relay.upload(&a, vec![b"kp-of-a".to_vec()], None).await.unwrap();
        relay.upload(&c, vec![b"kp-of-c".to_vec()], None).await.unwrap();
        let rid = rand_id();
        let claim = |m: samizdat_proto::Id| {
            let path = format!("/v1/mailboxes/{m}/keypackages/claim");
            let relay = &relay;
            async move { relay.post::<samizdat_proto::ClaimedKeyPackage>(&path, json!({"request_id": rid})).await }
        };
        assert_eq!(claim(a.id).await.unwrap().key_package.0, b"kp-of-a".to_vec());
        // The same request id aimed at another pool is a claim there, not a's record.
        assert_eq!(claim(c.id).await.unwrap().key_package.0, b"kp-of-c".to_vec());
        // A retry on a's pool still gets a's answer.
        assert_eq!(claim(a.id).await.unwrap().key_package.0, b"kp-of-a".to_vec());

        // An append retry aimed at another group is checked against that group's token.
        let g = relay.create_group(0).await;
        let h = relay.create_group(0).await;
        let body = json!({"request_id": rand_id(), "kind": "application", "epoch": 0, "body": Bytes(vec![1])});
        relay.append_raw(&g.id, g.token(0), body.clone()).await.unwrap();
        let e = relay.append_raw(&h.id, g.token(0), body).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::BadToken);
        relay.stop().await;
    }

    async fn finding_13_epoch_overflow_is_refused_and_the_relay_stays_healthy(b: Backend) {
        let relay = TestRelay::start(&b).await;
        let id = rand_id();
        let r: Result<serde_json::Value, _> = relay
            .post("/v1/groups", json!({"request_id": rand_id(), "group_id": id, "epoch": u64::MAX,
                                       "token_hash": Bytes(vec![0; 32])}))
            .await;
        assert_eq!(r.unwrap_err().code, ErrorCode::BadRequest);
        // A group at the last epoch the store can hold cannot commit past it.
        let top = i64::MAX as u64;
        let token = b"top-token".to_vec();
        let _: serde_json::Value = relay
            .post("/v1/groups", json!({"request_id": rand_id(), "group_id": id, "epoch": top,
                                       "token_hash": Bytes(samizdat_relay::token_hash(&token).to_vec())}))
            .await
            .unwrap();
        let e = relay
            .append_raw(&id, &token, json!({"request_id": rand_id(), "kind": "commit", "epoch": top,
                                             "body": Bytes(vec![1]), "next_token_hash": Bytes(vec![0; 32])}))
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert!(e.message.contains("exhausted"), "{}", e.message);
        // Reads with huge cursors are refused too, and the relay still writes.
        let r = relay.http.get(relay.url(&format!("/v1/groups/{id}/entries?epoch={}", u64::MAX)))
            .header(samizdat_proto::HEADER_TOKEN, Bytes::encode(&token)).send().await.unwrap();
        assert_eq!(r.status(), 400);
        let r = relay.http.get(relay.url("/healthz")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let g = relay.create_group(0).await;
        relay.append_app(&g, 0, vec![1]).await.unwrap();
        relay.stop().await;
    }
}

/// Finding 3: idle mailboxes, idle groups with their epochs, and KeyPackages past their
/// lifetime are deleted by the sweep (SQLite store directly, with a clock far ahead).
#[tokio::test]
async fn finding_3_sweep_expires_idle_mailboxes_groups_and_key_packages() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let limits = Limits::default();
    let t = now();
    let (mb, g) = (rand_id(), rand_id());
    store
        .create_mailbox(rand_id(), mb, vec![7; 32], t)
        .await
        .unwrap();
    store
        .upload_key_packages(rand_id(), mb, vec![vec![1; 10]], None, 10)
        .await
        .unwrap();
    store
        .create_group(rand_id(), g, 0, [1; 32], t)
        .await
        .unwrap();
    // Within every lifetime: nothing goes.
    let s = store.sweep(t + 3600, &limits).await.unwrap();
    assert_eq!((s.mailboxes, s.groups, s.key_packages), (0, 0, 0));
    // Past the KeyPackage lifetime: the unclaimed KeyPackage goes, the mailbox stays.
    let s = store
        .sweep(t + limits.key_package_ttl_secs + 1, &limits)
        .await
        .unwrap();
    assert_eq!((s.mailboxes, s.groups, s.key_packages), (0, 0, 1));
    // Past the idle times: the mailbox and the group go, with their epochs.
    let far = t + limits.mailbox_idle_secs.max(limits.group_idle_secs) + 1;
    let s = store.sweep(far, &limits).await.unwrap();
    assert_eq!((s.mailboxes, s.groups), (1, 1));
    assert!(store.mailbox_owner(mb).await.unwrap().is_none());
    assert!(store.token_epoch(g, [1; 32]).await.unwrap().is_none());
    assert_eq!(s.stored_bytes, 0);
}

/// Finding 13: a writer that has stopped is reported (the relay's `/healthz` answers 503
/// from this flag instead of 200 while every write fails).
#[tokio::test]
async fn finding_13_stopped_writer_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    assert!(store.healthy());
    let mb = rand_id();
    store
        .create_mailbox(rand_id(), mb, vec![7; 32], now())
        .await
        .unwrap();
    assert!(store.healthy());
    store.close();
    assert!(!store.healthy(), "a stopped writer is reported");
}
