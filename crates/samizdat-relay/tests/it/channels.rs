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
}
