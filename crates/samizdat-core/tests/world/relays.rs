//! Conversations moving off a blocked relay ("blocked": the relay's address accepts
//! connections and drops them, as a censor's reset looks to the client).

use std::time::Duration;

use samizdat_core::testing::{Person, World};

use crate::run;

/// Sync both, moving the clock a second each time, until `done` holds (at most a minute of
/// the profiles' clock).
async fn sync_until(
    w: &World,
    a: &mut Person,
    b: &mut Person,
    what: &str,
    done: impl Fn(&Person, &Person) -> bool,
) {
    for _ in 0..60 {
        // A relay that is down is reported by the sync that finds it so; the next ones go on.
        let _ = a.try_sync().await;
        let _ = b.try_sync().await;
        if done(a, b) {
            return;
        }
        w.advance(Duration::from_secs(1));
    }
    panic!("{what}: not within a minute");
}

/// Alice and bob chat on relay 0; both also have a mailbox on relay 1. Relay 0 is blocked:
/// once the configured time has passed the conversation moves to relay 1 (the relay they
/// share), both keep chatting with history intact, and a message bob sent during the outage
/// is delivered after the move and shown once.
#[test]
fn a_conversation_moves_off_a_blocked_relay() {
    run(async {
        let mut w = World::new().await;
        let b = w.add_relay().await;
        let mut alice = w.person_on_relays("alice", &[0, b]).await;
        let mut bob = w.person_on_relays("bob", &[0, b]).await;
        w.connect(&mut alice, &mut bob).await;
        let (a_url, b_url) = (w.relay(0).url.clone(), w.relay(b).url.clone());
        assert_eq!(alice.relay_of(&bob.display), a_url);
        let (m1, m2) = (w.text("before the block 1"), w.text("before the block 2"));
        alice.send(&bob.display, &m1).await;
        bob.sync().await;
        bob.send("alice", &m2).await;
        alice.sync().await;
        for p in [&alice, &bob] {
            p.profile.set_move_after(2).expect("move-after is set");
        }

        w.relay(0).block().await;
        let m3 = w.text("sent during the outage");
        let to_alice = bob.conversation("alice");
        let queued = bob.profile.send(&to_alice, &m3).await;
        assert!(
            matches!(queued, Err(samizdat_core::Error::RelayUnreachable(_))),
            "the send is queued while relay 0 is blocked: {queued:?}"
        );
        // Not before the configured time: a sync at once keeps the conversation where it is.
        let _ = alice.try_sync().await;
        let _ = bob.try_sync().await;
        assert_eq!(alice.relay_of(&bob.display), a_url, "moved too early");
        let bob_name = bob.display.clone();
        sync_until(&w, &mut alice, &mut bob, "the move", |a, b| {
            a.relay_of(&bob_name) == b_url
                && b.relay_of("alice") == b_url
                && a.texts(&bob_name).contains(&m3)
        })
        .await;
        let m4 = w.text("after the move");
        alice.send(&bob.display, &m4).await;
        bob.sync().await;
        let want = vec![m1, m2, m3.clone(), m4];
        assert_eq!(alice.texts(&bob.display), want);
        assert_eq!(bob.texts("alice"), want);
        w.assert_no_plaintext();
    });
}

/// Relay 0 is blocked and alice and bob both move the conversation at once, alice to relay 1
/// and bob to relay 2, each sending a message on the log they moved to. They end on one log
/// (the relay the rule picks: the lowest hash of its address), and every message is shown
/// once on both sides.
#[test]
fn concurrent_moves_converge_on_one_log() {
    run(async {
        let mut w = World::new().await;
        let b = w.add_relay().await;
        let c = w.add_relay().await;
        let mut alice = w.person_on_relays("alice", &[0, b]).await;
        let mut bob = w.person_on_relays("bob", &[0, c]).await;
        w.connect(&mut alice, &mut bob).await;
        let m1 = w.text("before the race");
        alice.send(&bob.display, &m1).await;
        bob.sync().await;
        for p in [&alice, &bob] {
            p.profile
                .set_move_after(0)
                .expect("automatic moves are off");
        }
        w.relay(0).block().await;
        let (b_url, c_url) = (w.relay(b).url.clone(), w.relay(c).url.clone());
        let bob_name = bob.display.clone();
        let (with_bob, with_alice) = (alice.conversation(&bob.display), bob.conversation("alice"));
        let (a, z) = tokio::join!(
            alice.profile.move_conversation(&with_bob, &b_url),
            bob.profile.move_conversation(&with_alice, &c_url),
        );
        a.expect("alice moves");
        z.expect("bob moves");
        alice.take();
        bob.take();
        let from_alice = w.text("alice on her log");
        let from_bob = w.text("bob on his log");
        alice.send(&bob_name, &from_alice).await;
        bob.send("alice", &from_bob).await;
        sync_until(&w, &mut alice, &mut bob, "one log", |a, b| {
            a.relay_of(&bob_name) == b.relay_of("alice")
                && a.texts(&bob_name).contains(&from_bob)
                && b.texts("alice").contains(&from_alice)
        })
        .await;
        let on = alice.relay_of(&bob_name);
        assert!(on == b_url || on == c_url, "{on}");
        let after = w.text("after the race");
        bob.send("alice", &after).await;
        alice.sync().await;
        for (p, target) in [(&alice, bob_name.as_str()), (&bob, "alice")] {
            let texts = p.texts(target);
            for t in [&m1, &from_alice, &from_bob] {
                let n = texts.iter().filter(|x| *x == t).count();
                assert_eq!(n, 1, "{} shows {t:?} {n} times: {texts:?}", p.name);
            }
            assert_eq!(texts.first(), Some(&m1));
        }
        assert!(alice.texts(&bob_name).contains(&after));
        w.assert_no_plaintext();
    });
}
