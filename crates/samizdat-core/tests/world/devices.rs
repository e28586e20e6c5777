//! Several devices of one person.

use samizdat_core::testing::{Person, World};

use crate::run;

fn count(texts: &[String], t: &str) -> usize {
    texts.iter().filter(|x| x.as_str() == t).count()
}

fn unread(p: &Person, conversation: &str) -> u64 {
    let all = p.profile.conversations().expect("conversations");
    all.iter()
        .find(|c| c.name == conversation)
        .map(|c| c.unread)
        .expect("the conversation")
}

/// A laptop linked to alice's phone gets the history, reads and answers as alice (bob sees
/// one person, the same safety number), follows what was read on the phone, and once revoked
/// reads nothing sent after and cannot send.
#[test]
fn a_linked_laptop_gets_history_messages_and_answers_as_the_same_person_until_revoked() {
    run(async {
        let mut w = World::new().await;
        let [mut alice, mut bob] = w.people(["alice", "bob"]).await;
        w.connect(&mut alice, &mut bob).await;
        let number = bob
            .profile
            .safety_number(&bob.contact("alice"))
            .expect("a safety number");
        let before = w.text("from before the laptop");
        bob.send("alice", &before).await;
        alice.sync().await;
        let mine = w.text("alice wrote this before too");
        alice.send(&bob.display, &mine).await;

        let mut laptop = w.link_device(&mut alice, "laptop").await;
        // Same person: the same fingerprint, the same safety number for bob.
        assert_eq!(
            laptop.profile.fingerprint_hex(),
            alice.profile.fingerprint_hex()
        );
        let on_laptop = laptop
            .profile
            .safety_number(&laptop.contact(&bob.display))
            .expect("number");
        assert_eq!(
            on_laptop,
            alice
                .profile
                .safety_number(&alice.contact(&bob.display))
                .expect("n")
        );
        // The history came along, with the conversation and contact names.
        let h = laptop.history(&bob.display);
        let texts: Vec<&str> = h.iter().map(|m| m.text.as_str()).collect();
        assert_eq!(texts, vec![before.as_str(), mine.as_str()]);
        assert_eq!(h[0].from, bob.display);
        assert_eq!(h[1].from, "me");
        let list = alice.profile.devices().expect("devices");
        assert_eq!(list.len(), 2, "{list:?}");
        assert!(list.iter().any(|d| d.name == "laptop" && !d.this));
        let theirs = laptop.profile.devices().expect("devices");
        assert!(
            theirs.iter().any(|d| d.name == "laptop" && d.this),
            "{theirs:?}"
        );

        // bob → alice: both devices show it, once; read on the phone, read on the laptop.
        let hello = w.text("hello both of you");
        bob.send("alice", &hello).await;
        alice.sync().await;
        laptop.sync().await;
        alice.sync().await;
        assert_eq!(unread(&laptop, &bob.display), 1);
        assert_eq!(count(&alice.texts(&bob.display), &hello), 1);
        alice.sync().await;
        laptop.sync().await;
        assert_eq!(unread(&laptop, &bob.display), 0);
        assert_eq!(count(&laptop.texts(&bob.display), &hello), 1);

        // The laptop answers: bob sees alice; the phone shows it as "me".
        let reply = w.text("answered from the laptop");
        laptop.send(&bob.display, &reply).await;
        bob.sync().await;
        let last = bob.history("alice").pop().expect("a message");
        assert_eq!(
            (last.text.as_str(), last.from.as_str()),
            (reply.as_str(), "alice")
        );
        alice.sync().await;
        let ah = alice.history(&bob.display);
        let from_laptop = ah.iter().find(|m| m.text == reply).expect("the reply");
        assert_eq!(from_laptop.from, "me");
        let convs = bob.profile.conversations().expect("conversations");
        assert_eq!(convs[0].members, 2, "bob still sees two people");

        // Revoke the laptop from the phone.
        let id = list.iter().find(|d| !d.this).expect("the laptop").id;
        alice.profile.device_revoke(&id).await.expect("revoked");
        alice.take();
        let now = alice.profile.devices().expect("devices");
        assert!(now.iter().any(|d| d.id == id && d.revoked));
        let after = w.text("sent after the revocation");
        bob.sync().await;
        bob.send("alice", &after).await;
        let _ = laptop.try_sync().await;
        assert_eq!(count(&laptop.texts(&bob.display), &after), 0);
        assert!(
            laptop
                .profile
                .send(&laptop.conversation(&bob.display), "still here?")
                .await
                .is_err()
        );
        alice.sync().await;
        assert_eq!(count(&alice.texts(&bob.display), &after), 1);
        assert_eq!(
            bob.profile.safety_number(&bob.contact("alice")).expect("n"),
            number
        );
        assert!(alice.profile.device_revoke(&id).await.is_err());
        w.assert_no_plaintext();
    });
}

/// A group of three in which alice has two devices: her phone joins and adds her laptop,
/// bob sees three people (four devices), messages reach both of alice's devices once, the
/// laptop speaks in the group, and removing alice removes both.
#[test]
fn a_group_of_three_people_with_one_on_two_devices() {
    run(async {
        let mut w = World::new().await;
        let [mut alice, mut bob, mut carol] = w.people(["alice", "bob", "carol"]).await;
        w.connect(&mut bob, &mut alice).await;
        w.connect(&mut bob, &mut carol).await;
        let mut laptop = w.link_device(&mut alice, "laptop").await;
        bob.group_create("trio").await;
        bob.group_add("trio", &[&alice.display, &carol.display])
            .await;
        // alice's phone joins (bob is a contact) and adds her laptop.
        for p in [&mut alice, &mut laptop, &mut carol, &mut bob] {
            p.sync().await;
        }
        assert_eq!(bob.members("trio").len(), 3, "{:?}", bob.members("trio"));
        assert_eq!(laptop.members("trio").len(), 3);
        let listed = bob
            .profile
            .group_members(&bob.conversation("trio"))
            .expect("members");
        let devices: usize = listed.iter().map(|m| m.devices).sum();
        assert_eq!(devices, 4, "{listed:?}");
        let hi = w.text("hello trio");
        carol.send("trio", &hi).await;
        alice.sync().await;
        laptop.sync().await;
        assert_eq!(count(&alice.texts("trio"), &hi), 1);
        assert_eq!(count(&laptop.texts("trio"), &hi), 1);
        let from_laptop = w.text("the laptop in the group");
        laptop.send("trio", &from_laptop).await;
        bob.sync().await;
        carol.sync().await;
        assert_eq!(count(&carol.texts("trio"), &from_laptop), 1);
        // Removing alice removes both of her devices.
        bob.group_remove("trio", &alice.display).await;
        let gone = w.text("after alice left");
        bob.send("trio", &gone).await;
        alice.sync().await;
        laptop.sync().await;
        assert_eq!(count(&alice.texts("trio"), &gone), 0);
        assert_eq!(count(&laptop.texts("trio"), &gone), 0);
        assert_eq!(bob.members("trio").len(), 2);
        w.assert_no_plaintext();
    });
}

/// Leaving a group on one device leaves it on every device of the person: the phone is told
/// and stops sending there, and the other members remove the person (both devices), who
/// reads nothing said after.
#[test]
fn leaving_a_group_on_one_device_leaves_it_on_all() {
    run(async {
        let mut w = World::new().await;
        let [mut alice, mut bob] = w.people(["alice", "bob"]).await;
        w.connect(&mut bob, &mut alice).await;
        let mut laptop = w.link_device(&mut alice, "laptop").await;
        bob.group_create("pair").await;
        bob.group_add("pair", &[&alice.display]).await;
        alice.sync().await;
        laptop.sync().await;
        laptop.group_leave("pair").await;
        let told = alice.sync().await;
        assert!(
            told.iter().any(|e| matches!(
                e,
                samizdat_core::Event::Notice {
                    notice: samizdat_core::Notice::LeftOnOtherDevice,
                    ..
                }
            )),
            "{told:?}"
        );
        let pair = alice.conversation("pair");
        let refused = alice.profile.send(&pair, "still here?").await;
        assert!(
            matches!(refused, Err(samizdat_core::Error::NotMember(_))),
            "{refused:?}"
        );
        // bob removes the person: both devices.
        bob.sync().await;
        bob.sync().await;
        assert_eq!(bob.members("pair").len(), 1, "{:?}", bob.members("pair"));
        let after = w.text("after alice left the pair");
        bob.send("pair", &after).await;
        alice.sync().await;
        laptop.sync().await;
        assert_eq!(count(&alice.texts("pair"), &after), 0);
        assert_eq!(count(&laptop.texts("pair"), &after), 0);
        w.assert_no_plaintext();
    });
}

/// A contact made after the laptop was linked reaches the laptop (its messages, the same
/// safety number), and what the person does on the laptop — marking the contact verified,
/// a shared setting — reaches the phone.
#[test]
fn contacts_made_and_verified_after_linking_reach_the_other_device() {
    run(async {
        let mut w = World::new().await;
        let [mut alice, mut bob] = w.people(["alice", "bob"]).await;
        w.connect(&mut alice, &mut bob).await;
        let mut laptop = w.link_device(&mut alice, "laptop").await;
        // carol accepts alice's invite after the laptop was linked.
        let mut carol = w.person("carol").await;
        w.connect(&mut alice, &mut carol).await;
        laptop.sync().await;
        let carol_on_laptop = laptop.contact(&carol.display);
        let hi = w.text("carol says hi to both");
        carol.send("alice", &hi).await;
        laptop.sync().await;
        assert_eq!(count(&laptop.texts(&carol.display), &hi), 1);
        assert_eq!(
            laptop
                .profile
                .safety_number(&carol_on_laptop)
                .expect("a number"),
            carol
                .profile
                .safety_number(&carol.contact("alice"))
                .expect("a number")
        );
        // Marked verified on the laptop: the phone shows it too; so is a shared setting.
        laptop
            .profile
            .contact_verify(&carol_on_laptop, true)
            .expect("verified");
        laptop.profile.set_move_after(42).expect("set");
        laptop.sync().await;
        alice.sync().await;
        let on_phone = alice.profile.contacts().expect("contacts");
        let c = on_phone
            .iter()
            .find(|c| c.alias == carol.display)
            .expect("carol on the phone");
        assert!(c.verified, "{on_phone:?}");
        assert_eq!(alice.profile.move_after().expect("move-after"), 42);
        w.assert_no_plaintext();
    });
}
