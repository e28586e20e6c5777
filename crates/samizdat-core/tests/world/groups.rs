//! Groups: adds, removals, leaving, concurrent commits, catching up across epochs.

use samizdat_core::Event;
use samizdat_core::store::Db;
use samizdat_core::testing::{PASSPHRASE, Person, World};

use crate::run;

#[test]
fn groups_add_remove_and_leave() {
    run(async {
        let mut w = World::new().await;
        let [mut alice, mut bob, mut carol] = w.people(["alice", "bob", "carol"]).await;
        w.connect(&mut alice, &mut bob).await;
        w.connect(&mut alice, &mut carol).await;
        alice.group_create("circle").await;
        alice
            .group_add("circle", &[&bob.display, &carol.display])
            .await;
        bob.sync().await;
        carol.sync().await;
        assert_eq!(alice.members("circle").len(), 3);
        assert_eq!(alice.members("circle"), bob.members("circle"));
        assert_eq!(alice.members("circle"), carol.members("circle"));
        let (m1, m2, m3) = (w.text("first"), w.text("second"), w.text("third"));
        alice.send("circle", &m1).await;
        bob.send("circle", &m2).await;
        carol.send("circle", &m3).await;
        for p in [&mut alice, &mut bob, &mut carol] {
            p.sync().await;
        }
        let order = alice.texts("circle");
        assert_eq!(order, vec![m1, m2, m3]);
        assert_eq!(bob.texts("circle"), order);
        assert_eq!(carol.texts("circle"), order);

        // Removal: carol can neither read nor post afterwards.
        alice.group_remove("circle", &carol.display).await;
        let secret = w.text("after carol left");
        alice.send("circle", &secret).await;
        let events = carol.sync().await;
        assert!(
            events.iter().any(|e| matches!(e, Event::Removed { .. })),
            "carol is told she was removed: {events:?}"
        );
        assert!(!carol.texts("circle").contains(&secret));
        let err = carol
            .profile
            .send(&carol.conversation("circle"), "still here?")
            .await
            .expect_err("a removed member cannot post");
        assert!(err.to_string().contains("no longer a member"), "{err}");
        bob.sync().await;
        assert!(bob.got(&secret));

        // Leave: bob leaves; alice's next sync removes him from the group.
        bob.group_leave("circle").await;
        let events = alice.sync().await;
        assert!(
            events.iter().any(|e| matches!(e, Event::MemberLeft { .. })),
            "{events:?}"
        );
        assert_eq!(alice.members("circle").len(), 1);
        let circle = alice.conversation("circle");
        assert!(bob.profile.send(&circle, "gone").await.is_err());
        w.assert_no_plaintext();
    });
}

/// Two members add someone at the same moment: one commit wins the epoch, the other catches
/// up and retries, and all four agree on the group.
#[test]
fn concurrent_commits_both_land() {
    run(async {
        let mut w = World::new().await;
        let [mut alice, mut bob, mut carol, mut dave] =
            w.people(["alice", "bob", "carol", "dave"]).await;
        w.connect(&mut alice, &mut bob).await;
        w.connect(&mut alice, &mut carol).await;
        w.connect(&mut bob, &mut dave).await;
        alice.group_create("race").await;
        alice.group_add("race", &[&bob.display]).await;
        bob.sync().await;
        // Both commits are in flight together: the relay takes one for the epoch.
        let (carol_id, dave_id) = (
            vec![alice.contact(&carol.display)],
            vec![bob.contact(&dave.display)],
        );
        let (race_a, race_b) = (alice.conversation("race"), bob.conversation("race"));
        let (a, b) = tokio::join!(
            alice.profile.group_add(&race_a, &carol_id),
            bob.profile.group_add(&race_b, &dave_id),
        );
        a.expect("alice's add lands");
        b.expect("bob's add lands");
        for p in [&mut alice, &mut bob, &mut carol, &mut dave] {
            p.take();
            p.sync().await;
        }
        let members = alice.members("race");
        assert_eq!(members.len(), 4);
        for p in [&bob, &carol, &dave] {
            assert_eq!(p.members("race"), members, "{} disagrees", p.name);
        }
        let t = w.text("all four");
        dave.send("race", &t).await;
        for p in [&mut alice, &mut bob, &mut carol] {
            p.sync().await;
            assert!(p.got(&t), "{} missed dave's message", p.name);
        }
        w.assert_no_plaintext();
    });
}

/// A member offline while the group goes through eight epochs reads everything, in order.
#[test]
fn offline_member_catches_up_across_many_epochs() {
    run(async {
        let mut w = World::new().await;
        let [mut alice, mut bob, mut carol] = w.people(["alice", "bob", "carol"]).await;
        w.connect(&mut alice, &mut bob).await;
        w.connect(&mut alice, &mut carol).await;
        alice.group_create("long").await;
        alice.group_add("long", &[&carol.display]).await;
        carol.sync().await;
        let mut sent = Vec::new();
        for i in 0..4 {
            alice.group_add("long", &[&bob.display]).await;
            bob.sync().await;
            let t = w.text(&format!("round {i}"));
            bob.send("long", &t).await;
            sent.push(t);
            alice.sync().await;
            alice.group_remove("long", &bob.display).await;
            bob.sync().await;
            let t = w.text(&format!("after round {i}"));
            alice.send("long", &t).await;
            sent.push(t);
        }
        carol.sync().await;
        assert_eq!(carol.texts("long"), sent);
        assert_eq!(alice.texts("long"), sent);
        w.assert_no_plaintext();
    });
}

/// Finding 15: a member who was removed, or who left, no longer keeps the group's keys (MLS
/// state and epoch tokens); the history stays readable and the 1:1 conversation still works.
#[test]
fn finding_15_departed_members_forget_the_group_keys() {
    run(async {
        // Read beside the open profile (SQLite allows a second connection).
        let count = |p: &Person, table: &str| -> i64 {
            let db = Db::open(&p.home.join("profile.db"), PASSPHRASE).expect("the profile opens");
            db.conn()
                .query_row(
                    &format!("SELECT COUNT(DISTINCT group_id) FROM {table}"),
                    [],
                    |r| r.get(0),
                )
                .expect("a count")
        };
        let mut w = World::new().await;
        let [mut alice, mut bob, mut carol] = w.people(["alice", "bob", "carol"]).await;
        w.connect(&mut alice, &mut bob).await;
        w.connect(&mut alice, &mut carol).await;
        alice.group_create("friends").await;
        alice
            .group_add("friends", &[&bob.display, &carol.display])
            .await;
        let t = w.text("before");
        alice.send("friends", &t).await;
        bob.sync().await;
        carol.sync().await;
        for p in [&bob, &carol] {
            assert_eq!(count(p, "mls_groups"), 2, "{}: 1:1 and the group", p.name);
            assert_eq!(count(p, "epoch_tokens"), 2);
        }
        alice.group_remove("friends", &bob.display).await;
        let events = bob.sync().await;
        assert!(events.iter().any(|e| matches!(e, Event::Removed { .. })));
        carol.group_leave("friends").await;
        for p in [&bob, &carol] {
            assert_eq!(
                count(p, "mls_groups"),
                1,
                "{} keeps the group's MLS state",
                p.name
            );
            assert_eq!(
                count(p, "epoch_tokens"),
                1,
                "{} keeps its epoch tokens",
                p.name
            );
            assert_eq!(p.texts("friends"), vec![t.clone()], "history stays");
        }
        let hi = w.text("still talking");
        bob.send("alice", &hi).await;
        alice.sync().await;
        assert!(alice.texts(&bob.display).contains(&hi));
    });
}
