//! Channels: only an admin's signed record extends the chain; segments are immutable once
//! full, with ETags a cache can revalidate; followers get records pushed without any proof of
//! who they are.

use std::time::Duration;

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use futures_util::{SinkExt, StreamExt};
use samizdat_proto::channel::{self, ChannelRecord, RecordKind, SEGMENT_RECORDS};
use samizdat_proto::{ChannelHead, ClientFrame, ErrorCode, Id, ServerFrame};
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{TestRelay, rand_id};

fn key() -> Ed25519KeyPair {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
}

fn public(k: &Ed25519KeyPair) -> [u8; 32] {
    k.public_key().as_ref().try_into().unwrap()
}

fn record(
    k: &Ed25519KeyPair,
    ch: Id,
    seq: u64,
    prev: [u8; 32],
    kind: RecordKind,
    admins: Vec<[u8; 32]>,
) -> Vec<u8> {
    let mut r = ChannelRecord {
        channel: ch,
        seq,
        prev,
        kind,
        admins,
        body: format!("sealed body {seq}").into_bytes(),
        signer: public(k),
        signature: [0; 64],
    };
    r.signature = k.sign(&r.signing_payload()).as_ref().try_into().unwrap();
    r.encode()
}

fn hash(bytes: &[u8]) -> [u8; 32] {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes)
        .as_ref()
        .try_into()
        .unwrap()
}

async fn store(relay: &TestRelay, ch: &Id, bytes: &[u8]) -> Result<u16, ErrorCode> {
    let r = relay
        .http
        .post(relay.url(&format!("/v1/channels/{ch}/records")))
        .header("content-type", "application/octet-stream")
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    if r.status().is_success() {
        return Ok(status);
    }
    let e: samizdat_proto::ErrorBody = r.json().await.unwrap();
    Err(e.code)
}

/// A channel of `n` posts after its genesis; the hashes of every record.
async fn channel_of(relay: &TestRelay, admin: &Ed25519KeyPair, n: u64) -> (Id, Vec<[u8; 32]>) {
    let ch = rand_id();
    let g = record(
        admin,
        ch,
        0,
        [0; 32],
        RecordKind::Genesis,
        vec![public(admin)],
    );
    assert_eq!(store(relay, &ch, &g).await, Ok(201));
    let mut hashes = vec![hash(&g)];
    for seq in 1..=n {
        let r = record(
            admin,
            ch,
            seq,
            hashes[seq as usize - 1],
            RecordKind::Post,
            vec![],
        );
        assert_eq!(store(relay, &ch, &r).await, Ok(201));
        hashes.push(hash(&r));
    }
    (ch, hashes)
}

crate::backend_tests! {
async fn only_an_admins_next_record_extends_the_chain(b: Backend) {
    let relay = TestRelay::start(&b).await;
    let (admin, stranger, second) = (key(), key(), key());
    let (ch, hashes) = channel_of(&relay, &admin, 2).await;
    // The same record again: stored once, answered 200.
    let again = record(&admin, ch, 2, hashes[1], RecordKind::Post, vec![]);
    assert_eq!(store(&relay, &ch, &again).await, Ok(200));
    // A stranger's record, or one naming the admin with a stranger's signature.
    let forged = record(&stranger, ch, 3, hashes[2], RecordKind::Post, vec![]);
    assert_eq!(store(&relay, &ch, &forged).await, Err(ErrorCode::BadSignature));
    let mut posing = ChannelRecord::decode(&forged).unwrap();
    posing.signer = public(&admin);
    assert_eq!(store(&relay, &ch, &posing.encode()).await, Err(ErrorCode::BadSignature));
    // A fork (another record 2), a skip (record 4), a wrong parent: refused.
    let fork = record(&admin, ch, 2, [9; 32], RecordKind::Post, vec![]);
    assert_eq!(store(&relay, &ch, &fork).await, Err(ErrorCode::ChainConflict));
    let skip = record(&admin, ch, 4, hashes[2], RecordKind::Post, vec![]);
    assert_eq!(store(&relay, &ch, &skip).await, Err(ErrorCode::ChainConflict));
    let wrong = record(&admin, ch, 3, hashes[1], RecordKind::Post, vec![]);
    assert_eq!(store(&relay, &ch, &wrong).await, Err(ErrorCode::ChainConflict));
    // Another genesis under the same id; garbage; a record of another channel.
    let g2 = record(&stranger, ch, 0, [0; 32], RecordKind::Genesis, vec![public(&stranger)]);
    assert_eq!(store(&relay, &ch, &g2).await, Err(ErrorCode::AlreadyExists));
    assert_eq!(store(&relay, &ch, b"not a record").await, Err(ErrorCode::BadRequest));
    let other = record(&admin, rand_id(), 3, hashes[2], RecordKind::Post, vec![]);
    assert_eq!(store(&relay, &ch, &other).await, Err(ErrorCode::BadRequest));
    // A roster record hands the channel to another admin: the first can no longer write.
    let roster = record(&admin, ch, 3, hashes[2], RecordKind::Roster, vec![public(&second)]);
    assert_eq!(store(&relay, &ch, &roster).await, Ok(201));
    let old = record(&admin, ch, 4, hash(&roster), RecordKind::Post, vec![]);
    assert_eq!(store(&relay, &ch, &old).await, Err(ErrorCode::BadSignature));
    let new = record(&second, ch, 4, hash(&roster), RecordKind::Post, vec![]);
    assert_eq!(store(&relay, &ch, &new).await, Ok(201));
    let head: ChannelHead = relay.http.get(relay.url(&format!("/v1/channels/{ch}"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(head.seq, 4);
    assert_eq!(head.hash.0, hash(&new).to_vec());
    // Unknown channel.
    let r = relay.http.get(relay.url(&format!("/v1/channels/{}", rand_id()))).send().await.unwrap();
    assert_eq!(r.status(), 404);
    relay.stop().await;
}

async fn full_segments_are_immutable_and_revalidate_by_etag(b: Backend) {
    let relay = TestRelay::start(&b).await;
    let admin = key();
    let (ch, hashes) = channel_of(&relay, &admin, SEGMENT_RECORDS + 3).await;
    let get = |n: u64, etag: Option<String>| {
        let mut req = relay.http.get(relay.url(&format!("/v1/channels/{ch}/segments/{n}")));
        if let Some(e) = etag {
            req = req.header("if-none-match", e);
        }
        req.send()
    };
    let full = get(0, None).await.unwrap();
    assert_eq!(full.status(), 200);
    let cache = full.headers()["cache-control"].to_str().unwrap().to_string();
    assert!(cache.contains("immutable"), "{cache}");
    let etag = full.headers()["etag"].to_str().unwrap().to_string();
    let bytes = full.bytes().await.unwrap();
    let records = channel::decode_segment(&bytes).unwrap();
    assert_eq!(records.len() as u64, SEGMENT_RECORDS);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(hash(r), hashes[i]);
    }
    // Twice more (the second from the relay's cache): the same bytes; a revalidation is 304.
    for _ in 0..2 {
        let again = get(0, None).await.unwrap();
        assert_eq!(again.headers()["etag"].to_str().unwrap(), etag);
        assert_eq!(again.bytes().await.unwrap(), bytes);
    }
    let not_modified = get(0, Some(etag.clone())).await.unwrap();
    assert_eq!(not_modified.status(), 304);
    // The tail segment may still grow: it is revalidated, never kept.
    let tail = get(1, None).await.unwrap();
    assert_eq!(tail.headers()["cache-control"], "no-cache");
    let tail_etag = tail.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(channel::decode_segment(&tail.bytes().await.unwrap()).unwrap().len(), 4);
    assert_eq!(get(1, Some(tail_etag.clone())).await.unwrap().status(), 304);
    let seq = SEGMENT_RECORDS + 4;
    let r = record(&admin, ch, seq, hashes[seq as usize - 1], RecordKind::Post, vec![]);
    assert_eq!(store(&relay, &ch, &r).await, Ok(201));
    assert_eq!(get(1, Some(tail_etag)).await.unwrap().status(), 200, "the tail changed");
    assert_eq!(get(2, None).await.unwrap().status(), 404);
    relay.stop().await;
}

async fn a_follower_gets_records_pushed_without_saying_who_it_is(b: Backend) {
    let relay = TestRelay::start(&b).await;
    let admin = key();
    let (ch, hashes) = channel_of(&relay, &admin, 2).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(relay.ws_url()).await.unwrap();
    let hello = tokio::time::timeout(Duration::from_secs(20), ws.next()).await.unwrap().unwrap().unwrap();
    assert!(hello.to_text().unwrap().contains("hello"));
    let sub = ClientFrame::SubscribeChannel { channel_id: ch, after: 1 };
    ws.send(Message::Text(serde_json::to_string(&sub).unwrap().into())).await.unwrap();
    let mut frames = Vec::new();
    let mut record_3 = None;
    while frames.len() < 3 {
        if frames.len() == 2 && record_3.is_none() {
            // Subscribed, then record 2 (after 1): now a new record is pushed as it lands.
            let r = record(&admin, ch, 3, hashes[2], RecordKind::Post, vec![]);
            assert_eq!(store(&relay, &ch, &r).await, Ok(201));
            record_3 = Some(r);
        }
        let m = tokio::time::timeout(Duration::from_secs(20), ws.next()).await.unwrap().unwrap().unwrap();
        let Message::Text(t) = m else { continue };
        frames.push(serde_json::from_str::<ServerFrame>(t.as_str()).unwrap());
    }
    assert!(matches!(frames[0], ServerFrame::Subscribed { id } if id == ch));
    assert!(matches!(&frames[1], ServerFrame::ChannelRecord { seq: 2, .. }));
    match &frames[2] {
        ServerFrame::ChannelRecord { seq: 3, record, channel_id } => {
            assert_eq!(*channel_id, ch);
            assert_eq!(Some(&record.0), record_3.as_ref());
        }
        other => panic!("expected record 3, got {other:?}"),
    }
    relay.stop().await;
}

/// A channel's file: a blob is made for a channel only with a request signed by one of its
/// current admins (a stranger's signature, a replayed nonce or an unknown channel are
/// refused), and once its upload is finished it lives `channel_blob_ttl_secs`, not the
/// shorter `blob_ttl_secs` of a conversation's attachment.
async fn a_channels_file_is_vouched_for_by_an_admin_and_lives_long(b: Backend) {
    let limits = samizdat_proto::Limits {
        blob_ttl_secs: 60,
        channel_blob_ttl_secs: 10 * 365 * 86_400,
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start_in(&b, dir.path(), limits).await;
    let (admin, stranger) = (key(), key());
    let (ch, _) = channel_of(&relay, &admin, 1).await;
    let create = |k: &Ed25519KeyPair, channel: Id, nonce: Id| {
        let ts = crate::harness::now();
        let payload = samizdat_proto::http_signing_payload("POST", "/v1/blobs", ts, &nonce, &[]);
        relay
            .http
            .post(relay.url("/v1/blobs"))
            .header("upload-length", "5")
            .header(samizdat_proto::HEADER_CHANNEL, channel.to_string())
            .header(samizdat_proto::HEADER_TIMESTAMP, ts.to_string())
            .header(samizdat_proto::HEADER_NONCE, nonce.to_string())
            .header(samizdat_proto::HEADER_SIGNATURE, samizdat_proto::Bytes::encode(k.sign(&payload).as_ref()))
            .send()
    };
    let code = |r: reqwest::Response| async move {
        let status = r.status().as_u16();
        let body: serde_json::Value = r.json().await.unwrap();
        (status, body["code"].as_str().unwrap_or_default().to_string())
    };
    assert_eq!(code(create(&stranger, ch, rand_id()).await.unwrap()).await, (401, "bad_signature".into()));
    assert_eq!(code(create(&admin, rand_id(), rand_id()).await.unwrap()).await, (404, "not_found".into()));
    let nonce = rand_id();
    let made = create(&admin, ch, nonce).await.unwrap();
    assert_eq!(made.status().as_u16(), 201);
    let made: samizdat_proto::BlobCreated = made.json().await.unwrap();
    assert_eq!(code(create(&admin, ch, nonce).await.unwrap()).await, (401, "replayed_signature".into()));
    let put = relay
        .http
        .patch(relay.url(&format!("/v1/blobs/{}/upload", made.blob_id)))
        .header(samizdat_proto::HEADER_UPLOAD_TOKEN, samizdat_proto::Bytes::encode(&made.upload_token.0))
        .header(samizdat_proto::HEADER_UPLOAD_OFFSET, "0")
        .header("content-type", "application/octet-stream")
        .body(b"hello".to_vec())
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{}", put.status());
    let got = relay.http.get(relay.url(&format!("/v1/blobs/{}", made.blob_id))).send().await.unwrap();
    assert_eq!(got.bytes().await.unwrap().as_ref(), b"hello");
    relay.stop().await;
    // What the relay keeps of the blob: made for a channel, kept ten years.
    use samizdat_relay::store::Store;
    let store: std::sync::Arc<dyn Store> = match &b {
        crate::harness::Backend::Sqlite => std::sync::Arc::new(samizdat_relay::store::SqliteStore::open(dir.path()).unwrap()),
        crate::harness::Backend::Postgres(url) => std::sync::Arc::new(samizdat_relay::store::PgStore::open(url, 2).await.unwrap()),
    };
    let record = store
        .blob(made.blob_id, crate::harness::now())
        .await
        .unwrap()
        .expect("the blob's record");
    assert!(record.for_channel);
    assert!(
        record.expires_at > crate::harness::now() + 9 * 365 * 86_400,
        "a channel's file lives channel_blob_ttl_secs: {}",
        record.expires_at
    );
}

/// A post to many followers of one relay process costs that process a store read or two, not
/// one per follower: the record is read once and shared, and so is "there is no record after
/// it yet" (each follower asks, having sent the newest), until the next record is announced.
async fn a_post_to_many_followers_costs_the_relay_one_read(b: Backend) {
    const FOLLOWERS: usize = 40;
    let relay = TestRelay::start(&b).await;
    let admin = key();
    let (ch, hashes) = channel_of(&relay, &admin, 1).await;
    let mut followers = Vec::new();
    for _ in 0..FOLLOWERS {
        let (mut ws, _) = tokio_tungstenite::connect_async(relay.ws_url()).await.unwrap();
        let _hello = tokio::time::timeout(Duration::from_secs(20), ws.next()).await.unwrap();
        let sub = ClientFrame::SubscribeChannel { channel_id: ch, after: 1 };
        ws.send(Message::Text(serde_json::to_string(&sub).unwrap().into())).await.unwrap();
        loop {
            let m = tokio::time::timeout(Duration::from_secs(20), ws.next()).await.unwrap().unwrap().unwrap();
            let Message::Text(t) = m else { continue };
            if matches!(serde_json::from_str::<ServerFrame>(t.as_str()).unwrap(), ServerFrame::Subscribed { .. }) {
                break;
            }
        }
        followers.push(ws);
    }
    let reads = || async {
        let text = relay.http.get(relay.metrics_url()).send().await.unwrap().text().await.unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("samizdat_push_reads_total "))
            .map(|v| v.trim().parse::<f64>().unwrap() as u64)
            .unwrap_or(0)
    };
    let before = reads().await;
    let r = record(&admin, ch, 2, hashes[1], RecordKind::Post, vec![]);
    assert_eq!(store(&relay, &ch, &r).await, Ok(201));
    for ws in &mut followers {
        loop {
            let m = tokio::time::timeout(Duration::from_secs(30), ws.next()).await.unwrap().unwrap().unwrap();
            let Message::Text(t) = m else { continue };
            if let ServerFrame::ChannelRecord { seq, record, .. } = serde_json::from_str::<ServerFrame>(t.as_str()).unwrap() {
                assert_eq!((seq, record.0.as_slice()), (2, r.as_slice()));
                break;
            }
        }
    }
    let spent = reads().await - before;
    assert!(spent <= 3, "{spent} store reads to push one record to {FOLLOWERS} followers");
    relay.stop().await;
}
}
