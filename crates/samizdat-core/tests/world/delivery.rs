//! Delivery across relays that go away and come back.

use std::time::Duration;

use samizdat_core::testing::World;
use samizdat_core::{Event, Notice};

use crate::run;

/// Alice (relay 0) adds carol (relay 1) to a group while relay 1 is down for a minute of the
/// profile's clock: the add waits (stored), is retried with backoff and never given up or
/// reported as failed; once relay 1 is back (same address, same data) alice's next due
/// retry adds carol, who joins and reads the next message.
#[test]
fn cross_relay_group_add_survives_the_new_members_relay_being_down() {
    run(async {
        let mut w = World::new().await;
        let b = w.add_relay().await;
        let mut alice = w.person("alice").await;
        let mut carol = w.person_on("carol", b).await;
        w.connect(&mut alice, &mut carol).await;
        alice.group_create("friends").await;

        w.relay(b).stop().await;
        let added = alice.group_add("friends", &[&carol.display]).await;
        assert_eq!(
            added.waiting,
            vec![alice.contact(&carol.display)],
            "{added:?}"
        );
        assert_eq!(alice.members("friends").len(), 1);
        // A minute of syncs every five seconds: still waiting, nothing reported as failed.
        for _ in 0..12 {
            w.advance(Duration::from_secs(5));
            let events = alice.sync().await;
            let failed = events.iter().any(|e| {
                matches!(
                    e,
                    Event::Notice {
                        notice: Notice::AddFailed { .. },
                        ..
                    }
                )
            });
            assert!(!failed, "the add is not given up: {events:?}");
            assert_eq!(alice.members("friends").len(), 1);
        }
        let hello = w.text("hello friends");
        alice.send("friends", &hello).await;

        w.relay(b).restart().await;
        // The retry falls due (at most the backoff's next step away), and the add goes through.
        w.advance(Duration::from_secs(120));
        alice.sync().await;
        assert_eq!(alice.members("friends").len(), 2, "carol was added");
        let events = carol.sync().await;
        assert!(
            events.iter().any(|e| matches!(e, Event::Joined { .. })),
            "carol never got her Welcome: {events:?}"
        );
        let next = w.text("after carol joined");
        alice.send("friends", &next).await;
        carol.sync().await;
        let texts = carol.texts("friends");
        assert!(
            texts.contains(&next),
            "carol cannot read the group: {texts:?}"
        );
        // Sent before she joined: not hers to read (MLS), and not shown twice either way.
        assert!(!texts.contains(&hello));
        w.assert_no_plaintext();
    });
}

/// A leave completes: the next member to say anything first commits the leaver's removal,
/// so nothing sent after the leave is encrypted to the leaver's keys; the leaver's client
/// stops reading at once.
#[test]
fn leaving_completes_before_anything_new_is_said() {
    run(async {
        let mut w = World::new().await;
        let [mut alice, mut bob, mut carol] = w.people(["alice", "bob", "carol"]).await;
        w.connect(&mut alice, &mut bob).await;
        w.connect(&mut alice, &mut carol).await;
        alice.group_create("friends").await;
        alice
            .group_add("friends", &[&bob.display, &carol.display])
            .await;
        bob.sync().await;
        carol.sync().await;
        carol.group_leave("friends").await;
        // alice sends without syncing first: the send catches up, sees the leave and removes
        // carol before encrypting.
        let t = w.text("after carol left");
        alice.send("friends", &t).await;
        assert_eq!(
            alice.members("friends").len(),
            2,
            "carol was not removed first"
        );
        bob.sync().await;
        assert_eq!(bob.texts("friends").last(), Some(&t));
        assert_eq!(bob.members("friends").len(), 2);
        carol.sync().await;
        assert!(!carol.texts("friends").contains(&t));
        w.assert_no_plaintext();
    });
}

/// Leaving while the relay is down: the leave notice is stored and sent when it is back; the
/// others then remove the leaver, and the leaver reads nothing said after.
#[test]
fn a_leave_while_the_relay_is_down_completes_later() {
    run(async {
        let mut w = World::new().await;
        let [mut alice, mut carol] = w.people(["alice", "carol"]).await;
        w.connect(&mut alice, &mut carol).await;
        alice.group_create("friends").await;
        alice.group_add("friends", &[&carol.display]).await;
        carol.sync().await;
        w.relay(0).stop().await;
        // Stored and queued: the leave itself succeeds.
        carol.group_leave("friends").await;
        w.relay(0).restart().await;
        carol.sync().await;
        alice.sync().await;
        assert_eq!(alice.members("friends").len(), 1, "carol was not removed");
        let t = w.text("after carol left");
        alice.send("friends", &t).await;
        carol.sync().await;
        assert!(!carol.texts("friends").contains(&t));
        w.assert_no_plaintext();
    });
}
