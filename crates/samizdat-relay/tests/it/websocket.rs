//! The WebSocket: subscriptions, push order, catch-up, challenges and garbage frames.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use samizdat_proto::{self as proto, Bytes, ClientFrame, ErrorCode, ServerFrame};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::TestRelay;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(relay: &TestRelay) -> (Ws, proto::Id) {
    let (mut ws, _) = tokio_tungstenite::connect_async(relay.ws_url())
        .await
        .unwrap();
    match next(&mut ws).await {
        ServerFrame::Hello {
            challenge,
            version,
            features,
        } => {
            assert!(features.iter().any(|f| f == proto::FEATURE_BINARY_ENTRIES));
            assert_eq!(version, 1);
            (ws, challenge)
        }
        other => panic!("expected hello, got {other:?}"),
    }
}

/// The next message from the relay (20 s at most).
async fn message(ws: &mut Ws) -> Message {
    tokio::time::timeout(Duration::from_secs(20), ws.next())
        .await
        .expect("relay pushed nothing within 20 s")
        .expect("connection closed")
        .unwrap()
}

async fn next(ws: &mut Ws) -> ServerFrame {
    loop {
        if let Message::Text(t) = message(ws).await {
            return serde_json::from_str(t.as_str()).unwrap();
        }
    }
}

/// The next frame, text or binary entry.
async fn next_any(ws: &mut Ws) -> Result<ServerFrame, proto::BinaryEntry> {
    loop {
        match message(ws).await {
            Message::Text(t) => return Ok(serde_json::from_str(t.as_str()).unwrap()),
            Message::Binary(b) => return Err(proto::BinaryEntry::decode(&b).unwrap()),
            _ => {}
        }
    }
}

async fn send(ws: &mut Ws, f: &ClientFrame) {
    ws.send(Message::Text(serde_json::to_string(f).unwrap().into()))
        .await
        .unwrap();
}

crate::backend_tests! {
/// Security review 3, M4: a WebSocket that proves nothing — no subscription, no accepted
/// append; pings do not count — is closed within seconds; a subscribed one stays.
async fn finding_m4_an_unproven_websocket_is_closed_within_seconds(b: Backend) {
    // The deadline is a limit (`ws_proof_secs`, 10 s by default); 2 s here.
    let limits = proto::Limits { ws_proof_secs: 2, ..proto::Limits::default() };
    let relay = TestRelay::start_with(&b, limits).await;
    let g = relay.create_group(0).await;
    // Before the socket opens: it may not be closed sooner than its deadline after this.
    let started = std::time::Instant::now();
    let (mut idle, _) = connect(&relay).await;
    let (mut member, _) = connect(&relay).await;
    send(&mut member, &ClientFrame::SubscribeGroup { group_id: g.id, epoch: 0, token: Bytes(g.token(0).to_vec()), after: 0 }).await;
    assert_eq!(next_any(&mut member).await, Ok(ServerFrame::Subscribed { id: g.id }));
    let closed = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        loop {
            // Pings every second, as a client keeping the socket would.
            let _ = idle.send(Message::Text(serde_json::to_string(&ClientFrame::Ping { nonce: 1 }).unwrap().into())).await;
            match tokio::time::timeout(std::time::Duration::from_secs(1), idle.next()).await {
                Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => break,
                _ => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "an unproven socket was kept for a minute");
    assert!(started.elapsed() >= std::time::Duration::from_secs(2), "closed before its deadline");
    // The subscribed socket is still served.
    send(&mut member, &ClientFrame::Ping { nonce: 7 }).await;
    assert_eq!(next_any(&mut member).await, Ok(ServerFrame::Pong { nonce: 7 }));
    relay.stop().await;
}

/// A connection that asks for binary entries gets every entry — read from the store on catch-up
/// or pushed fresh — as a `BinaryEntry` frame with the same seq, epoch, kind and body that a
/// text connection gets as an `entry` frame, on the same relay at the same time.
async fn binary_entries_on_request_text_for_the_rest(b: Backend) {
    let relay = TestRelay::start(&b).await;
    let g = relay.create_group(0).await;
    let early = relay.append_app(&g, 0, b"early".to_vec()).await.unwrap();
    let subscribe = ClientFrame::SubscribeGroup {
        group_id: g.id,
        epoch: 0,
        token: Bytes(g.token(0).to_vec()),
        after: 0,
    };
    let (mut text, _) = connect(&relay).await;
    let (mut bin, _) = connect(&relay).await;
    send(&mut bin, &ClientFrame::Options { binary_entries: true }).await;
    for ws in [&mut text, &mut bin] {
        send(ws, &subscribe).await;
        assert_eq!(next_any(ws).await, Ok(ServerFrame::Subscribed { id: g.id }));
    }
    let entry = |seq, kind, body: &[u8]| proto::BinaryEntry {
        group_id: g.id,
        seq,
        epoch: 0,
        kind,
        body: body.to_vec(),
    };
    let as_text = |e: &proto::BinaryEntry| ServerFrame::Entry {
        group_id: e.group_id,
        seq: e.seq,
        epoch: e.epoch,
        kind: e.kind,
        body: Bytes(e.body.clone()),
    };
    let caught_up = entry(early, proto::EntryKind::Application, b"early");
    assert_eq!(next_any(&mut bin).await, Err(caught_up.clone()));
    assert_eq!(next_any(&mut text).await, Ok(as_text(&caught_up)));
    let live = relay.append_app(&g, 0, vec![0, 255, 7]).await.unwrap();
    let live = entry(live, proto::EntryKind::Application, &[0, 255, 7]);
    assert_eq!(next_any(&mut bin).await, Err(live.clone()));
    assert_eq!(next_any(&mut text).await, Ok(as_text(&live)));
    let commit = relay
        .append_commit(&g, 0, b"commit".to_vec(), json!([]))
        .await
        .unwrap();
    let commit = entry(commit, proto::EntryKind::Commit, b"commit");
    assert_eq!(next_any(&mut bin).await, Err(commit.clone()));
    assert_eq!(next_any(&mut text).await, Ok(as_text(&commit)));
    let closed = ServerFrame::EpochClosed { group_id: g.id, epoch: 0 };
    assert_eq!(next_any(&mut bin).await, Ok(closed.clone()));
    assert_eq!(next_any(&mut text).await, Ok(closed));
    relay.stop().await;
}

async fn group_entries_are_pushed_in_order_with_catch_up(b: Backend) {
    let relay = TestRelay::start(&b).await;
    let g = relay.create_group(0).await;
    let mut seqs = Vec::new();
    for i in 0..3u8 {
        seqs.push(relay.append_app(&g, 0, vec![i]).await.unwrap());
    }
    let (mut ws, _) = connect(&relay).await;
    send(
        &mut ws,
        &ClientFrame::SubscribeGroup {
            group_id: g.id,
            epoch: 0,
            token: Bytes(g.token(0).to_vec()),
            after: 0,
        },
    )
    .await;
    assert_eq!(next(&mut ws).await, ServerFrame::Subscribed { id: g.id });
    let mut got = Vec::new();
    for _ in 0..3 {
        match next(&mut ws).await {
            ServerFrame::Entry { seq, body, .. } => got.push((seq, body.0)),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), seqs);
    // Live pushes.
    for i in 3..6u8 {
        seqs.push(relay.append_app(&g, 0, vec![i]).await.unwrap());
    }
    for i in 3..6u8 {
        match next(&mut ws).await {
            ServerFrame::Entry { seq, body, .. } => {
                assert_eq!(seq, seqs[i as usize]);
                assert_eq!(body.0, vec![i]);
            }
            other => panic!("{other:?}"),
        }
    }
    // Disconnect; entries appended meanwhile arrive on reconnect, after the cursor.
    drop(ws);
    let last_seen = seqs[5];
    for i in 6..9u8 {
        seqs.push(relay.append_app(&g, 0, vec![i]).await.unwrap());
    }
    let commit = relay
        .append_commit(&g, 0, b"commit".to_vec(), json!([]))
        .await
        .unwrap();
    let (mut ws, _) = connect(&relay).await;
    send(
        &mut ws,
        &ClientFrame::SubscribeGroup {
            group_id: g.id,
            epoch: 0,
            token: Bytes(g.token(0).to_vec()),
            after: last_seen,
        },
    )
    .await;
    assert_eq!(next(&mut ws).await, ServerFrame::Subscribed { id: g.id });
    for i in 6..9u8 {
        match next(&mut ws).await {
            ServerFrame::Entry { seq, .. } => assert_eq!(seq, seqs[i as usize]),
            other => panic!("{other:?}"),
        }
    }
    match next(&mut ws).await {
        ServerFrame::Entry { seq, kind, .. } => {
            assert_eq!(seq, commit);
            assert_eq!(kind, proto::EntryKind::Commit);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        next(&mut ws).await,
        ServerFrame::EpochClosed {
            group_id: g.id,
            epoch: 0
        }
    );
    // Next epoch with its token.
    send(
        &mut ws,
        &ClientFrame::SubscribeGroup {
            group_id: g.id,
            epoch: 1,
            token: Bytes(g.token(1).to_vec()),
            after: commit,
        },
    )
    .await;
    assert_eq!(next(&mut ws).await, ServerFrame::Subscribed { id: g.id });
    let s = relay.append_app(&g, 1, b"e1".to_vec()).await.unwrap();
    match next(&mut ws).await {
        ServerFrame::Entry { seq, epoch, .. } => assert_eq!((seq, epoch), (s, 1)),
        other => panic!("{other:?}"),
    }
    relay.stop().await;
}

async fn mailbox_subscription_needs_the_challenge_signature(b: Backend) {
    let relay = TestRelay::start(&b).await;
    let mb = relay.create_mailbox().await;
    let other = relay.create_mailbox().await;
    relay.drop_msg(&mb.id, b"waiting".to_vec()).await.unwrap();
    let (mut ws, challenge) = connect(&relay).await;
    // Signed with the wrong key.
    let sig = other
        .key
        .sign(&proto::ws_signing_payload(&challenge, &mb.id));
    send(
        &mut ws,
        &ClientFrame::SubscribeMailbox {
            mailbox_id: mb.id,
            after: 0,
            signature: Bytes(sig.as_ref().to_vec()),
        },
    )
    .await;
    match next(&mut ws).await {
        ServerFrame::Error { code, id, .. } => {
            assert_eq!(code, ErrorCode::BadSignature);
            assert_eq!(id, Some(mb.id));
        }
        other => panic!("{other:?}"),
    }
    // A signature over another connection's challenge does not verify here either.
    let (_ws2, challenge2) = connect(&relay).await;
    let replayed = mb.key.sign(&proto::ws_signing_payload(&challenge2, &mb.id));
    send(
        &mut ws,
        &ClientFrame::SubscribeMailbox {
            mailbox_id: mb.id,
            after: 0,
            signature: Bytes(replayed.as_ref().to_vec()),
        },
    )
    .await;
    assert!(matches!(
        next(&mut ws).await,
        ServerFrame::Error {
            code: ErrorCode::BadSignature,
            ..
        }
    ));
    // The right one.
    let sig = mb.key.sign(&proto::ws_signing_payload(&challenge, &mb.id));
    send(
        &mut ws,
        &ClientFrame::SubscribeMailbox {
            mailbox_id: mb.id,
            after: 0,
            signature: Bytes(sig.as_ref().to_vec()),
        },
    )
    .await;
    assert_eq!(next(&mut ws).await, ServerFrame::Subscribed { id: mb.id });
    assert!(
        matches!(next(&mut ws).await, ServerFrame::MailboxMessage { ref body, .. } if body.0 == b"waiting")
    );
    relay.drop_msg(&mb.id, b"live".to_vec()).await.unwrap();
    assert!(
        matches!(next(&mut ws).await, ServerFrame::MailboxMessage { ref body, .. } if body.0 == b"live")
    );
    relay.stop().await;
}

async fn garbage_frames_are_answered_and_the_relay_keeps_serving(b: Backend) {
    let relay = TestRelay::start(&b).await;
    let g = relay.create_group(0).await;
    let (mut ws, _) = connect(&relay).await;
    for junk in [
        "",
        "{",
        "null",
        "{\"type\":\"subscribe_group\"}",
        "{\"type\":\"launch_missiles\"}",
        "[1,2]",
    ] {
        ws.send(Message::Text(junk.into())).await.unwrap();
        assert!(
            matches!(
                next(&mut ws).await,
                ServerFrame::Error {
                    code: ErrorCode::BadRequest,
                    ..
                }
            ),
            "{junk}"
        );
    }
    ws.send(Message::Binary(vec![0xff; 10].into()))
        .await
        .unwrap();
    assert!(matches!(
        next(&mut ws).await,
        ServerFrame::Error {
            code: ErrorCode::BadRequest,
            ..
        }
    ));
    // Wrong token.
    send(
        &mut ws,
        &ClientFrame::SubscribeGroup {
            group_id: g.id,
            epoch: 0,
            token: Bytes(b"wrong".to_vec()),
            after: 0,
        },
    )
    .await;
    assert!(matches!(
        next(&mut ws).await,
        ServerFrame::Error {
            code: ErrorCode::BadToken,
            ..
        }
    ));
    // The connection still works.
    send(&mut ws, &ClientFrame::Ping { nonce: 7 }).await;
    assert_eq!(next(&mut ws).await, ServerFrame::Pong { nonce: 7 });
    // An oversized frame closes this connection, not the relay.
    let _ = ws.send(Message::Text("x".repeat(1 << 20).into())).await;
    let (mut ws2, _) = connect(&relay).await;
    send(&mut ws2, &ClientFrame::Ping { nonce: 8 }).await;
    assert_eq!(next(&mut ws2).await, ServerFrame::Pong { nonce: 8 });
    relay.stop().await;
}

async fn subscriptions_per_connection_are_bounded(b: Backend) {
    let limits = proto::Limits {
        max_subscriptions: 2,
        ..proto::Limits::default()
    };
    let relay = TestRelay::start_with(&b, limits).await;
    let (mut ws, _) = connect(&relay).await;
    for i in 0..3 {
        let g = relay.create_group(0).await;
        send(
            &mut ws,
            &ClientFrame::SubscribeGroup {
                group_id: g.id,
                epoch: 0,
                token: Bytes(g.token(0).to_vec()),
                after: 0,
            },
        )
        .await;
        let f = next(&mut ws).await;
        if i < 2 {
            assert_eq!(f, ServerFrame::Subscribed { id: g.id });
        } else {
            assert!(
                matches!(
                    f,
                    ServerFrame::Error {
                        code: ErrorCode::TooManySubscriptions,
                        ..
                    }
                ),
                "{f:?}"
            );
        }
    }
    relay.stop().await;
}

async fn binary_appends_are_pipelined_acknowledged_by_request_id_and_pushed(b: Backend) {
    let relay = TestRelay::start(&b).await;
    let g = relay.create_group(0).await;
    let (mut sub, _) = connect(&relay).await;
    send(
        &mut sub,
        &ClientFrame::SubscribeGroup {
            group_id: g.id,
            epoch: 0,
            token: Bytes(g.token(0).to_vec()),
            after: 0,
        },
    )
    .await;
    assert_eq!(next(&mut sub).await, ServerFrame::Subscribed { id: g.id });

    // Twenty appends sent back to back on one socket, before any answer is read.
    let (mut ws, _) = connect(&relay).await;
    let frames: Vec<proto::BinaryAppend> = (0..20u8)
        .map(|i| proto::BinaryAppend {
            request_id: crate::harness::rand_id(),
            group_id: g.id,
            epoch: 0,
            token: g.token(0).to_vec(),
            body: vec![i; 100],
        })
        .collect();
    for f in &frames {
        ws.send(Message::Binary(f.encode().into())).await.unwrap();
    }
    let mut acked = std::collections::HashMap::new();
    while acked.len() < frames.len() {
        match next(&mut ws).await {
            ServerFrame::Appended { request_id, seq } => {
                assert!(acked.insert(request_id, seq).is_none(), "acknowledged twice");
            }
            other => panic!("{other:?}"),
        }
    }
    let mut seqs: Vec<u64> = acked.values().copied().collect();
    seqs.sort();
    seqs.dedup();
    assert_eq!(seqs.len(), 20, "twenty distinct entries");
    // Each acknowledged entry is in the log with its body and pushed to the subscriber.
    let log = relay.read_entries(&g, 0, 0).await.unwrap();
    for f in &frames {
        let seq = acked[&f.request_id];
        let e = log.entries.iter().find(|e| e.seq == seq).expect("in the log");
        assert_eq!(e.body.0, f.body);
    }
    let mut pushed = Vec::new();
    while pushed.len() < 20 {
        match next(&mut sub).await {
            ServerFrame::Entry { seq, .. } => pushed.push(seq),
            other => panic!("{other:?}"),
        }
    }
    // In log order, each once: appends answered together are announced in whatever order
    // their tasks run, and the relay holds an early one until the gap fills (or reads).
    assert_eq!(pushed, seqs, "pushed in log order");

    // A retry (same request id) gets the first answer and stores nothing new.
    ws.send(Message::Binary(frames[3].encode().into())).await.unwrap();
    assert_eq!(
        next(&mut ws).await,
        ServerFrame::Appended { request_id: frames[3].request_id, seq: acked[&frames[3].request_id] }
    );
    assert_eq!(relay.read_entries(&g, 0, 0).await.unwrap().entries.len(), 20);

    // Refusals name the request and store nothing: a wrong token, a stale epoch (with the
    // current one), an entry over the application limit, a malformed frame.
    let mut bad = frames[0].clone();
    bad.request_id = crate::harness::rand_id();
    bad.token = vec![7; 32];
    ws.send(Message::Binary(bad.encode().into())).await.unwrap();
    match next(&mut ws).await {
        ServerFrame::AppendFailed { request_id, code, .. } => {
            assert_eq!(request_id, bad.request_id);
            assert_eq!(code, ErrorCode::BadToken);
        }
        other => panic!("{other:?}"),
    }
    relay.append_commit(&g, 0, b"commit".to_vec(), json!([])).await.unwrap();
    // The retry pushed nothing; the next frame is the commit, then the epoch's end.
    match next(&mut sub).await {
        ServerFrame::Entry { seq, kind, .. } => {
            assert_eq!((seq, kind), (seqs[19] + 1, proto::EntryKind::Commit));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(next(&mut sub).await, ServerFrame::EpochClosed { epoch: 0, .. }));
    let mut stale = frames[0].clone();
    stale.request_id = crate::harness::rand_id();
    ws.send(Message::Binary(stale.encode().into())).await.unwrap();
    match next(&mut ws).await {
        ServerFrame::AppendFailed { request_id, code, current_epoch, .. } => {
            assert_eq!(request_id, stale.request_id);
            assert_eq!(code, ErrorCode::StaleEpoch);
            assert_eq!(current_epoch, Some(1));
        }
        other => panic!("{other:?}"),
    }
    let mut big = frames[0].clone();
    big.request_id = crate::harness::rand_id();
    big.epoch = 1;
    big.token = g.token(1).to_vec();
    big.body = vec![0; proto::Limits::default().max_application_entry + 1];
    ws.send(Message::Binary(big.encode().into())).await.unwrap();
    match next(&mut ws).await {
        ServerFrame::AppendFailed { code, .. } => assert_eq!(code, ErrorCode::TooLarge),
        other => panic!("{other:?}"),
    }
    ws.send(Message::Binary(vec![1, 2, 3].into())).await.unwrap();
    match next(&mut ws).await {
        ServerFrame::Error { code, .. } => assert_eq!(code, ErrorCode::BadRequest),
        other => panic!("{other:?}"),
    }
    assert_eq!(relay.read_entries(&g, 1, 0).await.unwrap().entries.len(), 0);
    // The socket still works.
    let mut ok = frames[0].clone();
    ok.request_id = crate::harness::rand_id();
    ok.epoch = 1;
    ok.token = g.token(1).to_vec();
    ws.send(Message::Binary(ok.encode().into())).await.unwrap();
    assert!(matches!(next(&mut ws).await, ServerFrame::Appended { .. }));
    relay.stop().await;
}
}
