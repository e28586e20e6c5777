//! Calls (issue 31): the signalling inside MLS, the TURN credentials from the conversation's
//! relay, and how calls end — as the core sees them (the browsers' media is
//! tests/browser/test_calls.py).

use std::time::Duration;

use samizdat_core::testing::{Person, World};
use samizdat_core::{CallId, CallOutcome, CallState, Event};

use crate::run;

/// An offer as a browser gathering only relayed candidates makes it, plus one host candidate
/// the core must strip (defence in depth).
fn sdp(fingerprint: &str) -> String {
    format!(
        "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
         c=IN IP4 0.0.0.0\r\na=fingerprint:sha-256 {fingerprint}\r\n\
         a=candidate:1 1 udp 2122260223 192.168.1.5 50000 typ host\r\n\
         a=candidate:2 1 udp 41885439 127.0.0.1 50001 typ relay raddr 0.0.0.0 rport 0\r\na=end-of-candidates\r\n"
    )
}

fn ended(p: &Person, call: CallId) -> Option<(CallOutcome, u64)> {
    p.seen.iter().rev().find_map(|e| match e {
        Event::CallEnded {
            call_id,
            outcome,
            duration_secs,
            ..
        } if *call_id == call => Some((*outcome, *duration_secs)),
        _ => None,
    })
}

/// The lines about calls in `p`'s chat `with`, oldest first.
fn call_lines(p: &Person, with: &str) -> Vec<CallOutcome> {
    p.history(with)
        .into_iter()
        .filter_map(|m| match m.system.as_deref() {
            Some(Event::CallEnded { outcome, .. }) => Some(*outcome),
            _ => None,
        })
        .collect()
}

/// Alice calls bob: the offer reaches him through MLS with only relayed candidates, both get
/// TURN credentials for the same call from the conversation's relay (different, identity-free
/// usernames), his answer reaches her, and hanging up ends it on both sides with its
/// duration, as a line in both chats.
#[test]
fn a_call_rings_connects_and_ends_with_a_line_on_both_sides() {
    run(async {
        let mut w = World::new().await;
        let [mut alice, mut bob] = w.people(["alice", "bob"]).await;
        w.connect(&mut alice, &mut bob).await;
        let (to_bob, to_alice) = (bob.display.clone(), alice.name.clone());
        let conv = alice.conversation(&to_bob);
        let ice = alice
            .profile
            .call_prepare(&conv, false)
            .await
            .expect("prepared");
        assert!(ice.relay_only, "relayed only by default");
        let server = &ice.ice_servers[0];
        assert!(
            server
                .urls
                .iter()
                .any(|u| u.starts_with("turn:127.0.0.1:") && u.ends_with("?transport=udp")),
            "{:?}",
            server.urls
        );
        assert!(server.urls.iter().any(|u| u.ends_with("?transport=tcp")));
        for name in [&alice.name, &alice.display, &bob.display] {
            assert!(!server.username.contains(name.as_str()));
        }
        let call = ice.call_id;
        alice
            .profile
            .call_start(&call, &sdp("AA:AA"))
            .await
            .expect("ringing");
        bob.sync().await;
        assert!(
            bob.seen.iter().any(|e| matches!(e, Event::CallIncoming { call_id, video: false, .. } if *call_id == call)),
            "{:?}",
            bob.seen
        );
        let ringing = bob.profile.call(&call).expect("the call");
        assert_eq!(ringing.state, CallState::Ringing);
        assert!(!ringing.outgoing);
        assert!(!ringing.offer.contains("typ host"), "{}", ringing.offer);
        assert!(ringing.offer.contains("typ relay"));
        assert_eq!(ringing.peer_fingerprint.as_deref(), Some("sha-256 AA:AA"));
        let bob_ice = bob
            .profile
            .call_ice(&call)
            .await
            .expect("bob's credentials");
        assert_ne!(bob_ice.ice_servers[0].username, server.username);
        assert_eq!(
            bob_ice.ice_servers[0].urls, server.urls,
            "the same TURN server"
        );

        bob.profile
            .call_accept(&call, &sdp("BB:BB"))
            .await
            .expect("answered");
        alice.sync().await;
        assert!(
            alice
                .seen
                .iter()
                .any(|e| matches!(e, Event::CallAnswered { call_id, .. } if *call_id == call))
        );
        let connected = alice.profile.call(&call).expect("the call");
        assert_eq!(connected.state, CallState::Connected);
        assert_eq!(connected.peer_fingerprint.as_deref(), Some("sha-256 BB:BB"));

        w.advance(Duration::from_secs(95));
        alice.profile.call_end(&call).await.expect("hung up");
        alice.take();
        bob.sync().await;
        let (outcome, secs) = ended(&alice, call).expect("ended for alice");
        assert_eq!(outcome, CallOutcome::Answered);
        assert!((94..=100).contains(&secs), "{secs}");
        let (outcome, secs) = ended(&bob, call).expect("ended for bob");
        assert_eq!(outcome, CallOutcome::Answered);
        assert!((94..=100).contains(&secs), "{secs}");
        assert_eq!(call_lines(&alice, &to_bob), [CallOutcome::Answered]);
        assert_eq!(call_lines(&bob, &to_alice), [CallOutcome::Answered]);
        assert_eq!(bob.profile.calls(None).expect("calls").len(), 1);
        w.assert_no_plaintext();
        // Deleting the chat takes its calls (offers, answers, room tokens) with it.
        let with_alice = bob.conversation(&to_alice);
        bob.profile.delete_chat(&with_alice).await.expect("deleted");
        assert!(bob.profile.calls(None).expect("calls").is_empty());
    });
}

/// `p` rings the other side of `with` (a video call).
async fn ring(p: &mut Person, with: &str) -> CallId {
    let conv = p.conversation(with);
    let call = p
        .profile
        .call_prepare(&conv, true)
        .await
        .expect("prepared")
        .call_id;
    p.profile
        .call_start(&call, &sdp("CC:CC"))
        .await
        .expect("ringing");
    call
}

/// Declined, missed (the caller gave up), unanswered (rang past the limit), busy (the callee
/// was in another call), and a blocked caller who rings no one.
#[test]
fn declined_missed_unanswered_busy_and_blocked_calls() {
    run(async {
        let mut w = World::new().await;
        let [mut alice, mut bob, mut carol] = w.people(["alice", "bob", "carol"]).await;
        w.connect(&mut alice, &mut bob).await;
        w.connect(&mut carol, &mut bob).await;
        let (to_bob, to_alice) = (bob.display.clone(), alice.name.clone());

        // Declined.
        let call = ring(&mut alice, &to_bob).await;
        bob.sync().await;
        bob.profile.call_decline(&call).await.expect("declined");
        alice.sync().await;
        assert_eq!(
            ended(&alice, call).map(|e| e.0),
            Some(CallOutcome::Declined)
        );

        // The caller gives up: missed for bob.
        let call = ring(&mut alice, &to_bob).await;
        bob.sync().await;
        alice.profile.call_end(&call).await.expect("cancelled");
        alice.take();
        bob.sync().await;
        assert_eq!(
            ended(&alice, call).map(|e| e.0),
            Some(CallOutcome::Cancelled)
        );
        assert_eq!(ended(&bob, call).map(|e| e.0), Some(CallOutcome::Missed));

        // Nobody answers: after the ring time the caller's next sync ends it, and bob, who
        // reads the invite only then, counts it missed without ringing.
        let call = ring(&mut alice, &to_bob).await;
        w.advance(Duration::from_secs(samizdat_core::RING_SECS + 5));
        alice.sync().await;
        assert_eq!(
            ended(&alice, call).map(|e| e.0),
            Some(CallOutcome::NoAnswer)
        );
        bob.sync().await;
        assert!(
            !bob.seen
                .iter()
                .any(|e| matches!(e, Event::CallIncoming { call_id, .. } if *call_id == call))
        );
        assert_eq!(ended(&bob, call).map(|e| e.0), Some(CallOutcome::Missed));

        // Busy: bob is talking to carol when alice calls.
        let carol_call = ring(&mut carol, &bob.display.clone()).await;
        bob.sync().await;
        bob.profile
            .call_accept(&carol_call, &sdp("DD:DD"))
            .await
            .expect("answered");
        let call = ring(&mut alice, &to_bob).await;
        bob.sync().await;
        assert_eq!(ended(&bob, call).map(|e| e.0), Some(CallOutcome::Missed));
        alice.sync().await;
        assert_eq!(ended(&alice, call).map(|e| e.0), Some(CallOutcome::Busy));
        bob.profile.call_end(&carol_call).await.expect("hung up");

        // Blocked: alice's calls ring nothing and leave nothing.
        let alice_id = bob.contact(&to_alice);
        bob.profile.contact_block(&alice_id, true).expect("blocked");
        let before = bob.profile.calls(None).expect("calls").len();
        let call = ring(&mut alice, &to_bob).await;
        bob.sync().await;
        assert!(
            !bob.seen
                .iter()
                .any(|e| matches!(e, Event::CallIncoming { call_id, .. } if *call_id == call))
        );
        assert_eq!(bob.profile.calls(None).expect("calls").len(), before);

        assert_eq!(
            call_lines(&alice, &to_bob),
            [
                CallOutcome::Declined,
                CallOutcome::Cancelled,
                CallOutcome::NoAnswer,
                CallOutcome::Busy
            ]
        );
        assert_eq!(
            call_lines(&bob, &to_alice),
            [
                CallOutcome::Declined,
                CallOutcome::Missed,
                CallOutcome::Missed,
                CallOutcome::Missed
            ]
        );
    });
}

/// A relay that alters a call message (to put its own DTLS fingerprint in the offer, say)
/// breaks the call, not its encryption: the callee rejects the entry as damaged, nothing
/// rings, nothing of the altered offer is kept, and the callee's service tells the caller,
/// whose call fails with a line saying their message was changed on the way.
#[test]
fn a_relay_that_alters_the_offer_breaks_the_call_not_the_encryption() {
    run(async {
        let mut w = World::new().await;
        let [mut alice, mut bob] = w.people(["alice", "bob"]).await;
        w.connect(&mut alice, &mut bob).await;
        let to_bob = bob.display.clone();
        let conv = alice.conversation(&to_bob);
        let call = ring(&mut alice, &to_bob).await;

        // The relay rewrites the newest entry of the conversation's log: the invite.
        let log: samizdat_proto::Id = conv.to_string().parse().expect("the log id");
        let db = rusqlite::Connection::open(w.relay(0).data_dir().join("relay.db"))
            .expect("the relay's database");
        db.busy_timeout(Duration::from_secs(10))
            .expect("busy timeout");
        let (seq, mut body): (i64, Vec<u8>) = db
            .query_row(
                "SELECT seq, body FROM entries WHERE group_id = ?1 ORDER BY seq DESC LIMIT 1",
                [log.as_bytes().to_vec()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("the invite's entry");
        let middle = body.len() / 2;
        body[middle] ^= 0x01;
        db.execute(
            "UPDATE entries SET body = ?1 WHERE group_id = ?2 AND seq = ?3",
            rusqlite::params![body, log.as_bytes().to_vec(), seq],
        )
        .expect("altered");

        bob.sync().await;
        assert!(
            !bob.seen
                .iter()
                .any(|e| matches!(e, Event::CallIncoming { .. })),
            "{:?}",
            bob.seen
        );
        assert!(
            bob.seen.iter().any(|e| matches!(
                e,
                Event::Notice {
                    notice: samizdat_core::Notice::EntryRejected { .. },
                    ..
                }
            )),
            "{:?}",
            bob.seen
        );
        assert!(bob.profile.calls(None).expect("calls").is_empty());
        // Bob's service tells alice it could not read her entry: her call fails at once with
        // a line saying why, instead of ringing out unanswered.
        alice.sync().await;
        assert_eq!(ended(&alice, call).map(|e| e.0), Some(CallOutcome::Failed));
        assert!(
            alice.seen.iter().any(|e| matches!(
                e,
                Event::Notice {
                    notice: samizdat_core::Notice::TheyCouldNotRead { .. },
                    ..
                }
            )),
            "{:?}",
            alice.seen
        );
        assert_eq!(call_lines(&alice, &to_bob), [CallOutcome::Failed]);
        // Said once: later syncs tell nothing new.
        bob.sync().await;
        let later = alice.sync().await;
        assert!(!later.iter().any(|e| matches!(
            e,
            Event::Notice {
                notice: samizdat_core::Notice::TheyCouldNotRead { .. },
                ..
            }
        )));
    });
}

/// The leg of `p`'s group call `call` with the person `peer` (hex), if any.
fn leg(p: &Person, call: CallId, peer: &str) -> samizdat_core::CallLeg {
    p.profile
        .call(&call)
        .expect("the call")
        .legs
        .into_iter()
        .find(|l| l.peer == peer)
        .expect("the leg")
}

/// A group call of three, as a mesh: alice starts it with no offer and both others ring with
/// the same SFrame key; bob joins with an offer to alice, who answers it; carol joins with an
/// offer to each, and each offer reaches only the person it is for (host candidates stripped);
/// carol leaves and the others see it; every finished call is a line. A group of five cannot
/// call, and a join naming someone not in the call is refused.
#[test]
fn a_group_call_of_three_is_a_mesh_signalled_inside_the_group() {
    // Many steps in one future: more than a test thread's 2 MiB of stack in a debug build.
    std::thread::Builder::new()
        .stack_size(32 << 20)
        .spawn(group_call_of_three)
        .expect("a thread")
        .join()
        .expect("the test");
}

fn group_call_of_three() {
    run(async {
        let mut w = World::new().await;
        let [mut alice, mut bob, mut carol] = w.people(["alice", "bob", "carol"]).await;
        w.connect(&mut alice, &mut bob).await;
        w.connect(&mut alice, &mut carol).await;
        alice.group_create("trio").await;
        alice
            .group_add("trio", &[&bob.display, &carol.display])
            .await;
        bob.sync().await;
        carol.sync().await;
        let conv = alice.conversation("trio");
        let call = alice
            .profile
            .call_prepare(&conv, false)
            .await
            .expect("prepared")
            .call_id;
        alice.profile.call_start(&call, "").await.expect("started");
        let started = alice.profile.call(&call).expect("call");
        assert!(started.group && started.state == CallState::Connected);
        bob.sync().await;
        carol.sync().await;
        for p in [&bob, &carol] {
            assert!(
                p.seen.iter().any(|e| matches!(
                    e,
                    Event::CallIncoming { call_id, group: true, .. } if *call_id == call
                )),
                "{:?}",
                p.seen
            );
        }
        let at_bob = bob.profile.call(&call).expect("call");
        assert_eq!(at_bob.state, CallState::Ringing);
        assert_eq!(at_bob.sframe_key, started.sframe_key);
        assert_eq!(at_bob.sframe_key.as_ref().map(String::len), Some(32));
        let alice_fp = started.me.clone().expect("alice's fingerprint");
        let bob_fp = at_bob.me.clone().expect("bob's fingerprint");
        let carol_fp = carol.profile.call(&call).expect("call").me.expect("carol");
        assert_eq!(at_bob.legs.len(), 1);
        assert!(at_bob.legs[0].peer == alice_fp && at_bob.legs[0].present);

        // Naming someone who is not in the call is refused; nothing is sent.
        assert!(
            bob.profile
                .call_join(&call, &[(carol_fp.clone(), sdp("B0:B0"))])
                .await
                .is_err()
        );
        // Bob joins, offering to alice; she answers.
        bob.profile
            .call_join(&call, &[(alice_fp.clone(), sdp("B1:B1"))])
            .await
            .expect("bob joins");
        alice.sync().await;
        let offer = leg(&alice, call, &bob_fp).their_offer.expect("bob's offer");
        assert!(
            offer.contains("B1:B1") && !offer.contains("typ host"),
            "{offer}"
        );
        assert!(
            alice
                .seen
                .iter()
                .any(|e| matches!(e, Event::CallChanged { call_id, .. } if *call_id == call))
        );
        alice
            .profile
            .call_answer(&call, &bob_fp, &sdp("A1:A1"))
            .await
            .expect("answered");
        bob.sync().await;
        let answer = leg(&bob, call, &alice_fp)
            .their_answer
            .expect("alice's answer");
        assert!(answer.contains("A1:A1"));

        // Carol joins, offering to both; each offer reaches only its person.
        carol.sync().await;
        let at_carol = carol.profile.call(&call).expect("call");
        assert_eq!(at_carol.legs.iter().filter(|l| l.present).count(), 2);
        carol
            .profile
            .call_join(
                &call,
                &[
                    (alice_fp.clone(), sdp("C1:C1")),
                    (bob_fp.clone(), sdp("C2:C2")),
                ],
            )
            .await
            .expect("carol joins");
        alice.sync().await;
        bob.sync().await;
        let to_alice = leg(&alice, call, &carol_fp).their_offer.expect("to alice");
        let to_bob = leg(&bob, call, &carol_fp).their_offer.expect("to bob");
        assert!(to_alice.contains("C1:C1") && !to_alice.contains("C2:C2"));
        assert!(to_bob.contains("C2:C2") && !to_bob.contains("C1:C1"));
        alice
            .profile
            .call_answer(&call, &carol_fp, &sdp("A2:A2"))
            .await
            .expect("alice answers carol");
        bob.profile
            .call_answer(&call, &carol_fp, &sdp("B2:B2"))
            .await
            .expect("bob answers carol");
        carol.sync().await;
        assert!(
            leg(&carol, call, &alice_fp)
                .their_answer
                .expect("from alice")
                .contains("A2:A2")
        );
        assert!(
            leg(&carol, call, &bob_fp)
                .their_answer
                .expect("from bob")
                .contains("B2:B2")
        );

        // Carol leaves; the others see it and go on; then everyone hangs up.
        carol.profile.call_end(&call).await.expect("carol leaves");
        alice.sync().await;
        bob.sync().await;
        assert!(!leg(&alice, call, &carol_fp).present);
        assert!(!leg(&bob, call, &carol_fp).present);
        assert_eq!(
            alice.profile.call(&call).expect("call").state,
            CallState::Connected
        );
        alice.profile.call_end(&call).await.expect("alice leaves");
        bob.sync().await;
        assert!(!leg(&bob, call, &alice_fp).present);
        bob.profile.call_end(&call).await.expect("bob leaves");
        for p in [&mut alice, &mut bob, &mut carol] {
            p.take();
        }
        for (p, who) in [(&alice, "alice"), (&bob, "bob"), (&carol, "carol")] {
            assert_eq!(
                ended(p, call).map(|e| e.0),
                Some(CallOutcome::Answered),
                "{who}"
            );
            assert_eq!(call_lines(p, "trio"), [CallOutcome::Answered], "{who}");
        }

        // A member removed during a call is out of it at once for those who stay.
        let call2 = alice
            .profile
            .call_prepare(&conv, false)
            .await
            .expect("prepared")
            .call_id;
        alice.profile.call_start(&call2, "").await.expect("started");
        carol.sync().await;
        carol
            .profile
            .call_join(&call2, &[(alice_fp.clone(), sdp("C5:C5"))])
            .await
            .expect("carol joins");
        alice.sync().await;
        assert!(leg(&alice, call2, &carol_fp).present);
        alice.group_remove("trio", &carol.display).await;
        assert!(!leg(&alice, call2, &carol_fp).present);
        alice.take();
        assert!(
            alice
                .seen
                .iter()
                .any(|e| matches!(e, Event::CallChanged { call_id, .. } if *call_id == call2))
        );
        alice.profile.call_end(&call2).await.expect("ended");
        alice.group_add("trio", &[&carol.display]).await;

        // Five people are more than a mesh carries.
        let [mut dave, mut erin] = w.people(["dave", "erin"]).await;
        w.connect(&mut alice, &mut dave).await;
        w.connect(&mut alice, &mut erin).await;
        alice
            .group_add("trio", &[&dave.display, &erin.display])
            .await;
        assert_eq!(alice.members("trio").len(), 5);
        let refused = alice.profile.call_prepare(&conv, false).await;
        assert!(
            matches!(&refused, Err(samizdat_core::Error::Usage(m)) if m.contains("up to 4 people")),
            "{:?}",
            refused.map(|i| i.call_id)
        );
    });
}

/// A connected 1:1 call renegotiates inside MLS (an ICE restart, video added): either side
/// offers, the other answers; when both offer at once, the caller's offer wins on both sides.
/// A call that is not connected cannot renegotiate.
#[test]
fn a_connected_call_renegotiates_and_the_callers_offer_wins_a_tie() {
    run(async {
        let mut w = World::new().await;
        let [mut alice, mut bob] = w.people(["alice", "bob"]).await;
        w.connect(&mut alice, &mut bob).await;
        let to_bob = bob.display.clone();
        let call = ring(&mut alice, &to_bob).await;
        assert!(
            alice
                .profile
                .call_renegotiate(&call, &sdp("A0:A0"))
                .await
                .is_err(),
            "not connected yet"
        );
        bob.sync().await;
        bob.profile
            .call_accept(&call, &sdp("BB:BB"))
            .await
            .expect("answered");
        alice.sync().await;

        // Bob (the callee) restarts: alice answers.
        bob.profile
            .call_renegotiate(&call, &sdp("B1:B1"))
            .await
            .expect("bob offers anew");
        alice.sync().await;
        assert!(
            alice
                .seen
                .iter()
                .any(|e| matches!(e, Event::CallChanged { call_id, .. } if *call_id == call))
        );
        let r = alice
            .profile
            .call(&call)
            .expect("call")
            .renegotiation
            .expect("bob's offer");
        assert!(!r.mine && r.answer.is_none() && r.offer.contains("B1:B1"));
        assert!(!r.offer.contains("typ host"));
        alice
            .profile
            .call_reanswer(&call, &sdp("A1:A1"))
            .await
            .expect("alice answers");
        bob.sync().await;
        let r = bob
            .profile
            .call(&call)
            .expect("call")
            .renegotiation
            .expect("renegotiated");
        assert!(r.mine && r.answer.expect("alice's answer").contains("A1:A1"));
        assert!(
            alice
                .profile
                .call_reanswer(&call, &sdp("A9:A9"))
                .await
                .is_err(),
            "nothing left to answer"
        );

        // Both offer at once: alice called, so her offer stands on both sides.
        alice
            .profile
            .call_renegotiate(&call, &sdp("A2:A2"))
            .await
            .expect("alice offers");
        bob.profile
            .call_renegotiate(&call, &sdp("B2:B2"))
            .await
            .expect("bob offers");
        alice.sync().await;
        bob.sync().await;
        let at_alice = alice
            .profile
            .call(&call)
            .expect("call")
            .renegotiation
            .expect("r");
        assert!(
            at_alice.mine && at_alice.offer.contains("A2:A2"),
            "{at_alice:?}"
        );
        let at_bob = bob
            .profile
            .call(&call)
            .expect("call")
            .renegotiation
            .expect("r");
        assert!(!at_bob.mine && at_bob.offer.contains("A2:A2"), "{at_bob:?}");
        bob.profile
            .call_reanswer(&call, &sdp("B3:B3"))
            .await
            .expect("bob answers alice's");
        alice.sync().await;
        let done = alice
            .profile
            .call(&call)
            .expect("call")
            .renegotiation
            .expect("r");
        assert!(done.answer.expect("answered").contains("B3:B3"));
        alice.profile.call_end(&call).await.expect("hung up");
    });
}
