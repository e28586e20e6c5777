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

/// Finding 1: a stranger who reuses someone's used-up invite link cannot pull them into a
/// group: the Welcome waits as a pending invitation, nothing is sent into the stranger's group
/// until the person accepts, declining forgets it, and accepting joins.
#[test]
fn finding_1_groups_from_strangers_wait_for_consent() {
    run(async {
        let mut w = World::new().await;
        let [mut bob, mut alice, mut mallory, mut eve] =
            w.people(["bob", "alice", "mallory", "eve"]).await;
        let link = bob
            .profile
            .invite(3600, false)
            .expect("an invite")
            .to_link();
        alice.profile.accept(&link, "bob").await.expect("accepted");
        bob.sync().await;
        // The link is used up; a stranger reuses it and so adds bob to a group of theirs.
        mallory.profile.accept(&link, "bob").await.expect("sent");
        let events = bob.sync().await;
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Event::InvitationPending { .. })),
            "{events:?}"
        );
        assert!(
            !events.iter().any(|e| matches!(e, Event::Joined { .. })),
            "{events:?}"
        );
        let talking = |p: &samizdat_core::testing::Person| {
            p.profile
                .conversations()
                .expect("conversations")
                .into_iter()
                .filter(|c| c.kind != ConvKind::SelfGroup)
                .count()
        };
        assert_eq!(talking(&bob), 1, "only alice's conversation");
        let pending = bob.profile.invitations().expect("invitations");
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].members, 2);
        assert!(pending[0].relay_known);
        // Nothing was sent into the stranger's group: mallory hears nothing from bob.
        mallory.sync().await;
        assert!(mallory.history("bob").iter().all(|m| m.outgoing));
        let first = pending[0].id;
        bob.profile.invitation_decline(first).expect("declined");
        assert!(bob.profile.invitations().expect("invitations").is_empty());
        let again = bob.profile.invitation_accept(first).await;
        assert!(
            matches!(again, Err(samizdat_core::Error::NotFound(_))),
            "{again:?}"
        );

        // Accepting joins: the conversation appears and bob announces himself only now.
        eve.profile.accept(&link, "bob").await.expect("sent");
        bob.sync().await;
        let pending = bob.profile.invitations().expect("invitations");
        assert_eq!(pending.len(), 1);
        let joined = bob
            .profile
            .invitation_accept(pending[0].id)
            .await
            .expect("joined");
        bob.take();
        assert_eq!(talking(&bob), 2);
        assert!(bob.profile.invitations().expect("invitations").is_empty());
        eve.sync().await;
        let with_bob = eve.conversation("bob");
        assert_eq!(
            eve.profile.group_members(&with_bob).expect("members").len(),
            2
        );
        assert!(
            bob.profile
                .conversations()
                .expect("conversations")
                .iter()
                .any(|c| c.id == joined)
        );
        // Issue 30, item 7: what bob joined by hand keeps a sensible name — the stranger's,
        // as a 1:1 chat — and stays, though the link alone would have been refused; its chat
        // says so. Nothing refuses or removes it on later syncs, on either side.
        let events = bob.sync().await;
        assert!(
            !events.iter().any(|e| matches!(
                e,
                Event::Notice {
                    notice: samizdat_core::Notice::IntroductionRefused { .. },
                    ..
                }
            )),
            "{events:?}"
        );
        let chat = bob
            .profile
            .conversations()
            .expect("conversations")
            .into_iter()
            .find(|c| c.id == joined)
            .expect("still listed");
        assert_eq!(chat.kind, ConvKind::Direct, "{chat:?}");
        assert_eq!(chat.shown_as, eve.display, "{chat:?}");
        assert_eq!(chat.name, eve.display, "{chat:?}");
        assert!(chat.active && chat.status.is_none(), "{chat:?}");
        assert_eq!(
            bob.profile
                .find_conversation(&eve.display)
                .expect("by name"),
            joined
        );
        let lines: Vec<_> = bob
            .history(&eve.display)
            .into_iter()
            .filter_map(|m| m.system)
            .collect();
        assert!(
            lines.iter().any(|e| matches!(
                **e,
                Event::Notice {
                    notice: samizdat_core::Notice::LetInByHand {
                        reason: samizdat_core::Refusal::ReusedInvite
                    },
                    ..
                }
            )),
            "{lines:?}"
        );
        let hello = w.text("hello from bob");
        bob.send(&eve.display.clone(), &hello).await;
        eve.sync().await;
        assert!(eve.got(&hello));
        let back = w.text("and back from eve");
        eve.send("bob", &back).await;
        bob.sync().await;
        assert!(bob.got(&back));
        assert!(
            eve.profile
                .conversations()
                .expect("conversations")
                .iter()
                .all(|c| c.status.is_none())
        );
        w.assert_no_plaintext();
    });
}
