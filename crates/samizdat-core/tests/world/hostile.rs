//! Members and relays that lie.

use samizdat_core::testing::World;
use samizdat_core::{ConvKind, Event, Notice};

use crate::run;

/// The notices among `events`.
fn notices(events: &[Event]) -> Vec<&Notice> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Notice { notice, .. } => Some(notice),
            _ => None,
        })
        .collect()
}

/// Finding 6: a member gives the relay a false next-token hash with its commit (which locks
/// every other member out of the log). The others name that member and recover without
/// anyone's help: the next sync re-creates the log on the same relay from that epoch (the
/// members follow the notice) and removes the culprit there; the group goes on.
#[test]
fn finding_6_a_group_locked_by_a_false_token_recovers_by_itself() {
    run(async {
        let mut w = World::new().await;
        let [mut alice, mut bob, mut carol] = w.people(["alice", "bob", "carol"]).await;
        w.connect(&mut alice, &mut bob).await;
        w.connect(&mut alice, &mut carol).await;
        w.connect(&mut bob, &mut carol).await;
        alice.group_create("friends").await;
        alice.group_add("friends", &[&bob.display]).await;
        bob.sync().await;
        // bob (hostile) adds carol and lies to the relay about the next epoch's token.
        w.set_fault("BAD_NEXT_TOKEN", "1");
        bob.group_add("friends", &[&carol.display]).await;
        w.clear_fault("BAD_NEXT_TOKEN");

        let events = alice.sync().await;
        let said = notices(&events);
        // Named by the label alice knows bob by; recovered in the same sync.
        assert!(
            said.iter().any(|n| matches!(
                n,
                Notice::LostSyncFalseToken { who, .. } if *who == bob.display
            )),
            "{said:?}"
        );
        assert!(
            said.iter()
                .any(|n| matches!(n, Notice::LogRecreated { .. })),
            "{said:?}"
        );
        let friends = alice
            .profile
            .conversations()
            .expect("conversations")
            .into_iter()
            .find(|c| c.name == "friends")
            .expect("the group");
        assert!(friends.active && friends.status.is_none(), "{friends:?}");
        assert_eq!(alice.members("friends").len(), 2, "bob is removed");

        // carol, who joined by bob's commit, follows the move.
        let events = carol.sync().await;
        assert!(events.iter().any(|e| matches!(e, Event::Joined { .. })));
        assert!(
            notices(&events)
                .iter()
                .any(|n| matches!(n, Notice::MovedByMember { .. })),
            "{events:?}"
        );
        let t = w.text("after the recovery");
        alice.send("friends", &t).await;
        carol.sync().await;
        // carol never got the group's name (bob's message with it went to the wrecked log).
        let group = carol
            .profile
            .conversations()
            .expect("conversations")
            .into_iter()
            .find(|c| c.kind == ConvKind::Group)
            .expect("carol's group")
            .name;
        assert_eq!(carol.texts(&group), vec![t.clone()]);
        bob.sync().await;
        assert!(!bob.texts("friends").contains(&t));
        let reply = w.text("carol after the recovery");
        carol.send(&group, &reply).await;
        alice.sync().await;
        assert!(alice.got(&reply));
        w.assert_no_plaintext();
    });
}
