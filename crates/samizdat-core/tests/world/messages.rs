//! What people do to a message once it is sent (issue 30): replies, reactions, edits,
//! deletes, forwards — and what a hostile or newer client cannot make this one do.

use std::time::Duration;

use samizdat_core::testing::World;
use samizdat_core::{Event, MessageId, Notice};
use serde_json::json;

use crate::run;

/// The id of the message whose text is `text` in `person`'s copy of `conversation`.
fn id_of(person: &samizdat_core::testing::Person, conversation: &str, text: &str) -> MessageId {
    match person
        .history(conversation)
        .into_iter()
        .find(|m| m.text == text)
    {
        Some(m) => m.id,
        None => panic!("{} has no message {text:?} in {conversation}", person.name),
    }
}

/// A payload as a client puts it inside MLS (see `payload.rs`), with any body.
fn plaintext(id_byte: u8, body: serde_json::Value) -> Vec<u8> {
    let id = samizdat_proto::Id::from_bytes([id_byte; 16]);
    serde_json::to_vec(&json!({ "id": id, "sent_at": 1, "body": body })).expect("json")
}

/// Alice asks, bob answers quoting her and reacts; alice corrects her question and then
/// takes it back for everyone. Each step shows on the other side after one sync, and the
/// delete leaves no text, file, reaction or quote of it anywhere.
#[test]
fn a_reply_a_reaction_an_edit_and_a_delete_reach_the_other_side() {
    run(async {
        let mut w = World::new().await;
        let [mut alice, mut bob] = w.people(["alice", "bob"]).await;
        w.connect(&mut alice, &mut bob).await;
        let (to_bob, to_alice) = (bob.display.clone(), alice.name.clone());
        let question = w.text("when do we meet");
        alice.send(&to_bob, &question).await;
        bob.sync().await;
        let asked = id_of(&bob, &to_alice, &question);
        assert_eq!(
            asked,
            id_of(&alice, &to_bob, &question),
            "one id on both sides"
        );

        let answer = w.text("at noon");
        let conv = bob.conversation(&to_alice);
        bob.profile
            .send_text(&conv, &answer, Some(&asked), false)
            .await
            .expect("the reply");
        bob.profile
            .react(&asked, "👍", false)
            .await
            .expect("a reaction");
        bob.take();
        alice.sync().await;
        let got = alice.history(&to_bob);
        let reply = got.iter().find(|m| m.text == answer).expect("the reply");
        let quote = reply.reply_to.as_ref().expect("it quotes");
        assert!(quote.found, "{quote:?}");
        assert_eq!(quote.id, asked);
        assert_eq!(quote.text.as_deref(), Some(question.as_str()));
        let mine = got.iter().find(|m| m.id == asked).expect("the question");
        assert_eq!(mine.reactions.len(), 1, "{:?}", mine.reactions);
        assert_eq!(mine.reactions[0].emoji, "👍");
        assert_eq!(mine.reactions[0].who, vec![bob.display.clone()]);
        assert!(!mine.reactions[0].mine);
        assert!(
            alice.seen.iter().any(|e| matches!(e, Event::Reaction { id, emoji: Some(e), .. } if *id == asked && e == "👍")),
            "the reaction is an event"
        );

        // A second reaction from the same person replaces the first; taking it back removes it.
        bob.profile
            .react(&asked, "❤️", false)
            .await
            .expect("another");
        alice.sync().await;
        let r = &alice
            .history(&to_bob)
            .into_iter()
            .find(|m| m.id == asked)
            .unwrap()
            .reactions;
        assert_eq!((r.len(), r[0].emoji.as_str()), (1, "❤️"), "{r:?}");
        bob.profile
            .react(&asked, "❤️", true)
            .await
            .expect("taken back");
        alice.sync().await;
        let q = alice
            .history(&to_bob)
            .into_iter()
            .find(|m| m.id == asked)
            .unwrap();
        assert!(q.reactions.is_empty(), "{:?}", q.reactions);
        bob.profile.react(&asked, "👍", false).await.expect("again");
        alice.sync().await;

        // Only the sender edits; the quote follows the corrected text.
        let err = bob.profile.edit(&asked, "not mine").await.unwrap_err();
        assert_eq!(err.kind(), samizdat_core::ErrorKind::Usage, "{err}");
        let fixed = w.text("when do we meet tomorrow");
        alice.profile.edit(&asked, &fixed).await.expect("the edit");
        alice.take();
        bob.sync().await;
        let seen = bob.history(&to_alice);
        let q = seen.iter().find(|m| m.id == asked).unwrap();
        assert_eq!((q.text.as_str(), q.edited), (fixed.as_str(), true));
        let quoted = seen.iter().find(|m| m.text == answer).unwrap();
        assert_eq!(
            quoted.reply_to.as_ref().unwrap().text.as_deref(),
            Some(fixed.as_str())
        );

        // Delete for everyone: text, reactions and the quote of it go on both sides.
        let err = bob.profile.delete_message(&asked, true).await.unwrap_err();
        assert_eq!(err.kind(), samizdat_core::ErrorKind::Usage, "{err}");
        alice
            .profile
            .delete_message(&asked, true)
            .await
            .expect("deleted");
        alice.take();
        bob.sync().await;
        for p in [&alice, &bob] {
            let peer = if p.name == "alice" {
                &to_bob
            } else {
                &to_alice
            };
            let h = p.history(peer);
            let d = h.iter().find(|m| m.id == asked).expect("a tombstone");
            assert!(
                d.deleted && d.text.is_empty() && d.reactions.is_empty(),
                "{d:?}"
            );
            let quoted = h.iter().find(|m| m.text == answer).unwrap();
            assert!(
                !quoted.reply_to.as_ref().unwrap().found,
                "{} still quotes it",
                p.name
            );
            let kept = p
                .profile
                .rows_for_test(&format!(
                    "SELECT (SELECT COUNT(*) FROM messages WHERE body LIKE '%{}%' OR body LIKE '%{}%') + (SELECT COUNT(*) FROM reactions)",
                    question, fixed
                ))
                .unwrap();
            assert_eq!(
                kept, 0,
                "{} keeps the deleted words or its reactions",
                p.name
            );
        }

        // Delete for me: gone here only.
        let answered = id_of(&alice, &to_bob, &answer);
        alice
            .profile
            .delete_message(&answered, false)
            .await
            .expect("deleted here");
        assert!(alice.history(&to_bob).iter().all(|m| m.id != answered));
        assert!(bob.history(&to_alice).iter().any(|m| m.id == answered));
        w.assert_no_plaintext();
    });
}

/// Bob's client is modified: it sends an edit and a delete of alice's message, a reaction
/// and a reply naming her message with a hash of words she never wrote. Alice's copy does not
/// change, and the reply shows its quote as not available.
#[test]
fn only_the_sender_edits_or_deletes_and_a_quote_cannot_be_forged() {
    run(async {
        let mut w = World::new().await;
        let [mut alice, mut bob] = w.people(["alice", "bob"]).await;
        w.connect(&mut alice, &mut bob).await;
        let (to_bob, to_alice) = (bob.display.clone(), alice.name.clone());
        let said = w.text("i will be there");
        alice.send(&to_bob, &said).await;
        bob.sync().await;
        let target = id_of(&bob, &to_alice, &said);
        let good = bob.profile.message_ref_for_test(&target).unwrap();
        let forged =
            json!({ "id": good["id"], "hash": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA" });
        let conv = bob.conversation(&to_alice);
        let bodies = [
            json!({ "type": "edit", "target": good, "text": "i will not come" }),
            json!({ "type": "delete", "target": good }),
            json!({ "type": "react", "target": forged, "emoji": "💩" }),
            json!({ "type": "text", "text": "you said you would not come", "reply_to": forged }),
            json!({ "type": "edit", "target": forged, "text": "i will not come" }),
        ];
        for (i, body) in bodies.into_iter().enumerate() {
            bob.profile
                .send_plaintext_for_test(&conv, &plaintext(10 + i as u8, body))
                .await
                .expect("appended");
        }
        alice.sync().await;
        let h = alice.history(&to_bob);
        let mine = h.iter().find(|m| m.id == target).expect("still there");
        assert_eq!(mine.text, said);
        assert!(
            !mine.edited && !mine.deleted && mine.reactions.is_empty(),
            "{mine:?}"
        );
        let reply = h
            .iter()
            .find(|m| m.text == "you said you would not come")
            .expect("the reply arrives");
        let quote = reply.reply_to.as_ref().expect("it names a message");
        assert!(!quote.found && quote.text.is_none(), "{quote:?}");
    });
}

/// A newer version sends a body this one does not know: it is kept (its JSON, in the
/// encrypted profile), shown as "update Samizdat to see this", and nothing fails.
#[test]
fn a_body_from_a_newer_version_is_kept_and_shown_as_such() {
    run(async {
        let mut w = World::new().await;
        let [mut alice, mut bob] = w.people(["alice", "bob"]).await;
        w.connect(&mut alice, &mut bob).await;
        let conv = bob.conversation(&alice.name);
        let body = json!({ "type": "poll", "question": "which day", "options": ["mon", "tue"] });
        bob.profile
            .send_plaintext_for_test(&conv, &plaintext(7, body))
            .await
            .expect("appended");
        let events = alice.sync().await;
        assert!(
            !events.iter().any(|e| matches!(
                e,
                Event::Notice {
                    notice: Notice::UndecodableMessage { .. },
                    ..
                }
            )),
            "{events:?}"
        );
        let h = alice.history(&bob.display);
        let m = h.last().expect("a message");
        assert!(m.unsupported && m.text.is_empty(), "{m:?}");
        let kept = alice
            .profile
            .rows_for_test("SELECT COUNT(*) FROM messages WHERE unknown LIKE '%which day%'")
            .unwrap();
        assert_eq!(kept, 1, "the body is kept for a later version");
        // It can be answered and reacted to like any message (its hash is of nothing said).
        alice
            .profile
            .react(&m.id, "👀", false)
            .await
            .expect("a reaction");
    });
}

/// With a timer, a message's reply, reactions and edit disappear with it from both
/// profiles, read from the stores themselves.
#[test]
fn a_disappearing_message_takes_its_quotes_reactions_and_edits_with_it() {
    run(async {
        let mut w = World::new().await;
        let [mut alice, mut bob] = w.people(["alice", "bob"]).await;
        w.connect(&mut alice, &mut bob).await;
        let (to_bob, to_alice) = (bob.display.clone(), alice.name.clone());
        let conv = alice.conversation(&to_bob);
        alice.profile.set_timer(&conv, 60).await.expect("timer");
        alice.take();
        bob.sync().await;
        let secret = w.text("the meeting point is the old bridge");
        alice.send(&to_bob, &secret).await;
        bob.sync().await;
        let id = id_of(&bob, &to_alice, &secret);
        let answer = w.text("understood the bridge");
        let bconv = bob.conversation(&to_alice);
        bob.profile
            .send_text(&bconv, &answer, Some(&id), false)
            .await
            .expect("reply");
        bob.profile.react(&id, "👍", false).await.expect("react");
        bob.take();
        let fixed = w.text("the meeting point is the new bridge");
        alice.sync().await;
        alice.profile.edit(&id, &fixed).await.expect("edit");
        alice.profile.react(&id, "🙏", false).await.expect("react");
        alice.take();
        bob.sync().await;
        let count = format!(
            "SELECT (SELECT COUNT(*) FROM messages WHERE body LIKE '%{secret}%' OR body LIKE '%{fixed}%' OR body LIKE '%{answer}%') + (SELECT COUNT(*) FROM reactions)"
        );
        for p in [&alice, &bob] {
            assert_eq!(
                p.profile.rows_for_test(&count).unwrap(),
                2 + 2,
                "{} before",
                p.name
            );
        }
        // Receipts name the messages too (each side holds some by now).
        let receipts =
            "SELECT (SELECT COUNT(*) FROM receipts) + (SELECT COUNT(*) FROM receipts_owed)";
        for p in [&alice, &bob] {
            assert!(
                p.profile.rows_for_test(receipts).unwrap() > 0,
                "{} has receipts",
                p.name
            );
        }
        w.advance(Duration::from_secs(120));
        for p in [&mut alice, &mut bob] {
            p.sync().await;
            assert_eq!(
                p.profile.rows_for_test(receipts).unwrap(),
                0,
                "{} keeps receipts of what disappeared",
                p.name
            );
            let peer = p.history(if p.name == "alice" {
                &to_bob
            } else {
                &to_alice
            });
            assert!(peer.iter().all(|m| m.id != id), "{} still shows it", p.name);
            assert_eq!(
                p.profile.rows_for_test(&count).unwrap(),
                0,
                "{} keeps a trace",
                p.name
            );
        }
    });
}

/// A message forwarded to another conversation arrives there marked as forwarded, with the
/// same text; the original stays where it was.
#[test]
fn a_forwarded_message_arrives_marked() {
    run(async {
        let mut w = World::new().await;
        let [mut alice, mut bob, mut carol] = w.people(["alice", "bob", "carol"]).await;
        w.connect(&mut alice, &mut bob).await;
        w.connect(&mut alice, &mut carol).await;
        let news = w.text("the road north is closed");
        bob.send(&alice.name, &news).await;
        alice.sync().await;
        let id = id_of(&alice, &bob.display, &news);
        let to_carol = alice.conversation(&carol.display);
        let new_id = alice
            .profile
            .forward(&id, &to_carol)
            .await
            .expect("forwarded");
        assert_ne!(new_id, id);
        carol.sync().await;
        let got = carol.history(&alice.name);
        let m = got.iter().find(|m| m.text == news).expect("carol has it");
        assert!(m.forwarded && !m.outgoing, "{m:?}");
        assert!(
            alice
                .history(&bob.display)
                .iter()
                .any(|m| m.id == id && !m.forwarded)
        );
    });
}

/// Search finds words across conversations on this device, newest first, Russian-aware (any
/// case, ё as е, prefixes); `--in` keeps to one conversation; an edit re-indexes, and a
/// message deleted for everyone or expired is no longer found — its words are gone from the
/// index itself, read through `fts5vocab`.
#[test]
fn search_is_local_russian_aware_and_forgets_what_is_gone() {
    run(async {
        let mut w = World::new().await;
        let [mut alice, mut bob, mut carol] = w.people(["alice", "bob", "carol"]).await;
        w.connect(&mut alice, &mut bob).await;
        w.connect(&mut alice, &mut carol).await;
        let (to_bob, to_carol) = (bob.display.clone(), carol.display.clone());
        alice.send(&to_bob, "Встреча у ёлки в пятницу").await;
        bob.send(&alice.name, "встречи отменяются до понедельника")
            .await;
        carol.send(&alice.name, "Где встретимся? У елки?").await;
        alice.sync().await;

        let texts = |hits: Vec<samizdat_core::SearchHit>| -> Vec<String> {
            hits.into_iter().map(|h| h.text).collect()
        };
        // "встре" is a prefix of all three words (any case); newest first (carol's arrived
        // last).
        let all = alice.profile.search("ВСТРЕ", None, 100).expect("search");
        assert_eq!(
            texts(all.clone()),
            vec![
                "Где встретимся? У елки?".to_string(),
                "встречи отменяются до понедельника".into(),
                "Встреча у ёлки в пятницу".into()
            ]
        );
        assert_eq!(all[2].from, "me");
        assert_eq!(all[1].conversation, to_bob);
        // ё and е alike, both ways.
        assert_eq!(alice.profile.search("елки", None, 100).unwrap().len(), 2);
        assert_eq!(alice.profile.search("ёлки", None, 100).unwrap().len(), 2);
        // Every word must be there; one conversation only.
        assert_eq!(
            texts(alice.profile.search("встреч пятн", None, 100).unwrap()),
            vec!["Встреча у ёлки в пятницу".to_string()]
        );
        let in_carol = alice.conversation(&to_carol);
        assert_eq!(
            alice
                .profile
                .search("встре", Some(&in_carol), 100)
                .unwrap()
                .len(),
            1
        );
        // "встреч" is not a prefix of "встретимся".
        assert_eq!(alice.profile.search("встреч", None, 100).unwrap().len(), 2);
        // What people type is words, never FTS5 syntax.
        assert!(alice.profile.search("\"встреч OR NEAR(", None, 100).is_ok());
        let err = alice.profile.search("  ?! ", None, 100).unwrap_err();
        assert_eq!(err.kind(), samizdat_core::ErrorKind::Usage);

        // An edit re-indexes.
        let mine = alice.profile.search("пятниц", None, 10).unwrap()[0].id;
        alice
            .profile
            .edit(&mine, "Встреча у ёлки в субботу")
            .await
            .unwrap();
        assert!(alice.profile.search("пятниц", None, 10).unwrap().is_empty());
        assert_eq!(alice.profile.search("суббот", None, 10).unwrap().len(), 1);
        // Deleted for everyone: not found, and the word is gone from the index's pages.
        alice.profile.delete_message(&mine, true).await.unwrap();
        assert!(alice.profile.search("суббот", None, 10).unwrap().is_empty());
        let vocab = "SELECT COUNT(*) FROM temp.search_terms WHERE term = 'субботу'";
        alice.profile.vocab_for_test().unwrap();
        assert_eq!(alice.profile.rows_for_test(vocab).unwrap(), 0);
        assert!(
            alice
                .profile
                .rows_for_test("SELECT COUNT(*) FROM temp.search_terms WHERE term = 'понедельника'")
                .unwrap()
                == 1
        );

        // Expired: not found, gone from the index.
        let conv = alice.conversation(&to_carol);
        alice.profile.set_timer(&conv, 30).await.unwrap();
        alice.send(&to_carol, "пароль от подвала семнадцать").await;
        assert_eq!(alice.profile.search("подвал", None, 10).unwrap().len(), 1);
        w.advance(Duration::from_secs(60));
        assert!(alice.profile.search("подвал", None, 10).unwrap().is_empty());
        assert_eq!(
            alice
                .profile
                .rows_for_test("SELECT COUNT(*) FROM temp.search_terms WHERE term = 'подвала'")
                .unwrap(),
            0
        );
    });
}

/// The lines a chat keeps about itself: the event of each, in the conversation's own
/// history.
fn lines(p: &samizdat_core::testing::Person, conversation: &str) -> Vec<Event> {
    p.history(conversation)
        .into_iter()
        .filter_map(|m| m.system.map(|e| *e))
        .collect()
}

/// Who was added, removed or left, a rename and the timer show as lines in the group's chat
/// on every member's side, in log order among the messages; a 1:1 chat shows its timer.
#[test]
fn a_group_keeps_lines_about_itself_in_its_chat() {
    run(async {
        let mut w = World::new().await;
        let [mut alice, mut bob, mut carol] = w.people(["alice", "bob", "carol"]).await;
        w.connect(&mut alice, &mut bob).await;
        w.connect(&mut alice, &mut carol).await;
        let id = alice.group_create("friends").await;
        alice
            .group_add("friends", &[&bob.display, &carol.display])
            .await;
        bob.sync().await;
        carol.sync().await;
        alice.send("friends", "hello all").await;
        let renamed = alice
            .profile
            .group_rename(&id, "old friends")
            .await
            .expect("renamed");
        alice.profile.set_timer(&id, 3600).await.expect("timer");
        alice.take();
        alice.group_remove(&renamed, &carol.display).await;
        bob.sync().await;
        let bob_group = bob
            .profile
            .conversations()
            .unwrap()
            .into_iter()
            .find(|c| c.kind == samizdat_core::ConvKind::Group)
            .expect("bob's group");
        let bl = lines(&bob, &bob_group.name);
        let kinds: Vec<&str> = bl
            .iter()
            .map(|e| match e {
                Event::MemberAdded { .. } => "added",
                Event::GroupNamed { .. } => "renamed",
                Event::TimerSet { .. } => "timer",
                Event::MemberRemoved { .. } => "removed",
                _ => "other",
            })
            .collect();
        assert!(
            kinds.contains(&"renamed") && kinds.contains(&"timer") && kinds.contains(&"removed"),
            "{bl:?}"
        );
        assert!(
            bl.iter().any(|e| matches!(e, Event::GroupNamed { conversation, .. } if conversation == "old friends")),
            "{bl:?}"
        );
        assert!(
            bl.iter()
                .any(|e| matches!(e, Event::TimerSet { secs: 3600, .. })),
            "{bl:?}"
        );
        // In order: the rename comes after "hello all", the removal last.
        let h = bob.history(&bob_group.name);
        let hello = h.iter().position(|m| m.text == "hello all").expect("hello");
        let rename = h
            .iter()
            .position(|m| matches!(m.system.as_deref(), Some(Event::GroupNamed { conversation, .. }) if conversation == "old friends"))
            .unwrap();
        let removal = h
            .iter()
            .position(|m| matches!(m.system.as_deref(), Some(Event::MemberRemoved { .. })))
            .unwrap();
        assert!(hello < rename && rename < removal, "{h:?}");
        // The lines are not messages: no unread count, no preview, nothing to search.
        assert_eq!(
            bob_group.last.as_ref().map(|l| l.text.as_str()),
            Some("hello all")
        );
        bob.group_leave(&bob_group.name).await;
        alice.sync().await;
        assert!(
            lines(&alice, &renamed)
                .iter()
                .any(|e| matches!(e, Event::MemberLeft { .. })),
            "{:?}",
            lines(&alice, &renamed)
        );
        // A 1:1 chat: the timer is a line; membership never is.
        let direct = alice.conversation(&bob.display);
        alice.profile.set_timer(&direct, 300).await.unwrap();
        alice.take();
        bob.sync().await;
        let bl = lines(&bob, &alice.name);
        assert!(
            bl.iter()
                .any(|e| matches!(e, Event::TimerSet { secs: 300, .. })),
            "{bl:?}"
        );
        assert!(
            !bl.iter().any(|e| matches!(e, Event::MemberAdded { .. })),
            "{bl:?}"
        );
    });
}

/// Renaming a contact renames their 1:1 chat (found by the new name, with its messages); a
/// name already taken is refused; the contact is told nothing.
#[test]
fn a_contact_can_be_called_something_else() {
    run(async {
        let mut w = World::new().await;
        let [mut alice, mut bob, mut carol] = w.people(["alice", "bob", "carol"]).await;
        w.connect(&mut alice, &mut bob).await;
        w.connect(&mut alice, &mut carol).await;
        alice.send(&bob.display, "before the rename").await;
        let bob_id = alice.contact(&bob.display);
        let err = alice
            .profile
            .contact_rename(&bob_id, &carol.display)
            .unwrap_err();
        assert_eq!(err.kind(), samizdat_core::ErrorKind::Usage, "{err}");
        alice
            .profile
            .contact_rename(&bob_id, "Боб с работы")
            .expect("renamed");
        assert_eq!(alice.contact("Боб с работы"), bob_id);
        assert_eq!(
            alice.texts("Боб с работы"),
            vec!["before the rename".to_string()]
        );
        assert!(alice.profile.find_conversation(&bob.display).is_err());
        // Nothing went to bob: his side is as it was.
        let events = bob.sync().await;
        assert!(
            events.is_empty() || !events.iter().any(|e| matches!(e, Event::GroupNamed { .. })),
            "{events:?}"
        );
    });
}

/// The state of `person`'s own message `text` in `conversation`.
fn state_of(
    person: &samizdat_core::testing::Person,
    conversation: &str,
    text: &str,
) -> (
    Option<samizdat_core::MessageState>,
    Option<samizdat_core::ReceiptCounts>,
) {
    let m = person
        .history(conversation)
        .into_iter()
        .find(|m| m.text == text)
        .unwrap_or_else(|| panic!("{} has no message {text:?}", person.name));
    assert!(m.outgoing);
    (m.state, m.receipts)
}

/// Sent (the relay has it), then delivered once a device of bob's holds it; read only when
/// both bob and alice turned read receipts on (off by default: bob opening the chat says
/// nothing). A receipt is no message: nothing new shows in bob's chat or alice's.
#[test]
fn delivered_when_a_device_has_it_read_only_when_both_want_it() {
    use samizdat_core::MessageState::*;
    run(async {
        let mut w = World::new().await;
        let [mut alice, mut bob] = w.people(["alice", "bob"]).await;
        w.connect(&mut alice, &mut bob).await;
        let (to_bob, to_alice) = (bob.display.clone(), alice.name.clone());
        let hello = w.text("are you there");
        alice.send(&to_bob, &hello).await;
        assert_eq!(state_of(&alice, &to_bob, &hello).0, Some(Sent));
        assert!(!alice.profile.read_receipts().unwrap(), "off by default");

        bob.sync().await;
        assert_eq!(bob.texts(&to_alice), vec![hello.clone()]);
        alice.sync().await;
        assert_eq!(state_of(&alice, &to_bob, &hello).0, Some(Delivered));
        assert!(
            alice
                .seen
                .iter()
                .any(|e| matches!(e, Event::Receipt { read: false, .. })),
            "a receipt is an event for the fronts"
        );
        // Bob has read it (history marks it read) but read receipts are off.
        bob.sync().await;
        alice.sync().await;
        assert_eq!(state_of(&alice, &to_bob, &hello).0, Some(Delivered));

        // Bob turns them on, alice not yet: bob's next read is sent, alice does not see it.
        bob.profile.set_read_receipts(true).unwrap();
        let second = w.text("still there");
        alice.send(&to_bob, &second).await;
        bob.sync().await;
        let _ = bob.history(&to_alice);
        bob.sync().await;
        alice.sync().await;
        assert_eq!(state_of(&alice, &to_bob, &second).0, Some(Delivered));
        alice.profile.set_read_receipts(true).unwrap();
        assert_eq!(state_of(&alice, &to_bob, &second).0, Some(Read));
        // The first was read while bob had them off: it stays delivered.
        assert_eq!(state_of(&alice, &to_bob, &hello).0, Some(Delivered));

        // Receipts added no message anywhere, and no unread count.
        assert_eq!(alice.texts(&to_bob), vec![hello.clone(), second.clone()]);
        assert_eq!(bob.texts(&to_alice), vec![hello, second]);
        let unread: u64 = alice
            .profile
            .conversations()
            .unwrap()
            .iter()
            .map(|c| c.unread)
            .sum();
        assert_eq!(unread, 0);
        w.assert_no_plaintext();
    });
}

/// In a small group a message is delivered when every other member holds it; until then the
/// front shows how many do.
#[test]
fn a_small_group_counts_who_has_a_message() {
    use samizdat_core::MessageState::*;
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
        alice.sync().await;
        let text = w.text("meeting moved");
        alice.send("trio", &text).await;
        bob.sync().await;
        alice.sync().await;
        let (state, counts) = state_of(&alice, "trio", &text);
        assert_eq!(state, Some(Sent));
        let counts = counts.expect("counts in a group");
        assert_eq!((counts.delivered, counts.read, counts.of), (1, 0, 2));
        carol.sync().await;
        alice.sync().await;
        let (state, counts) = state_of(&alice, "trio", &text);
        assert_eq!(state, Some(Delivered));
        assert_eq!(counts.expect("counts").delivered, 2);
        // Bob's receipt reached carol too; her copy of alice's message is not hers to count.
        let bob_group = bob
            .profile
            .conversations()
            .unwrap()
            .into_iter()
            .find(|c| c.kind == samizdat_core::ConvKind::Group)
            .expect("bob's group");
        assert!(
            bob.history(&bob_group.name)
                .iter()
                .all(|m| m.state.is_none() || m.outgoing)
        );
    });
}

/// A photo-like JPEG (gradients and noise) of `w`×`h` pixels.
pub(crate) fn photo(w: u32, h: u32) -> Vec<u8> {
    let mut seed = 0x9e37_79b9_u32;
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        let n = (seed & 0x1f) as u8;
        image::Rgb([
            ((x * 255 / w) as u8).wrapping_add(n),
            ((y * 255 / h) as u8).wrapping_add(n),
            128u8.wrapping_add(n),
        ])
    });
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85)
        .encode_image(&img)
        .expect("jpeg");
    out
}

/// A photo arrives with the thumbnail its sender made (shown at once, no download), and a
/// disappearing one takes its thumbnail with it from both profiles.
#[test]
fn a_photo_comes_with_its_thumbnail_which_disappears_with_it() {
    run(async {
        let mut w = World::new().await;
        let [mut alice, mut bob] = w.people(["alice", "bob"]).await;
        w.connect(&mut alice, &mut bob).await;
        let (to_bob, to_alice) = (bob.display.clone(), alice.name.clone());
        let conv = alice.conversation(&to_bob);
        alice.profile.set_timer(&conv, 60).await.expect("timer");
        alice.take();
        bob.sync().await;
        let id = alice.send_photo(&to_bob, &photo(1600, 1200)).await;
        bob.sync().await;
        let got = bob.history(&to_alice);
        let m = got.iter().find(|m| m.id == id).expect("the photo");
        let a = m.attachment.as_ref().expect("an attachment");
        assert!(a.thumbnail && !a.downloaded, "{a:?}");
        assert_eq!((a.width, a.height), (1600, 1200));
        let thumb = bob.profile.thumbnail(&id).expect("the thumbnail");
        let small = image::load_from_memory(&thumb).expect("a JPEG");
        assert_eq!((small.width(), small.height()), (320, 240));
        assert!(thumb.len() <= samizdat_core::thumbnail::MAX_BYTES);
        let stored = "SELECT COUNT(*) FROM messages WHERE attachment LIKE '%\"thumbnail\"%'";
        for p in [&alice, &bob] {
            assert_eq!(p.profile.rows_for_test(stored).unwrap(), 1, "{}", p.name);
        }
        w.advance(Duration::from_secs(120));
        for p in [&mut alice, &mut bob] {
            p.sync().await;
            assert!(p.profile.thumbnail(&id).is_err(), "{} still has it", p.name);
            assert_eq!(p.profile.rows_for_test(stored).unwrap(), 0, "{}", p.name);
        }
    });
}

/// Blocking: nothing bob sends is kept (messages, reactions, group invitations), alice cannot
/// write to him until she unblocks him, and bob is not told; unblocked, he is heard again.
#[test]
fn a_blocked_contact_is_not_heard_and_cannot_be_written_to() {
    run(async {
        let mut w = World::new().await;
        let [mut alice, mut bob, mut carol] = w.people(["alice", "bob", "carol"]).await;
        w.connect(&mut alice, &mut bob).await;
        w.connect(&mut bob, &mut carol).await;
        let (to_bob, to_alice) = (bob.display.clone(), alice.name.clone());
        let hello = w.text("hello before the block");
        bob.send(&to_alice, &hello).await;
        alice.sync().await;
        let bob_id = alice.contact(&to_bob);
        alice.profile.contact_block(&bob_id, true).expect("block");
        assert!(alice.profile.contacts().unwrap().iter().any(|c| c.blocked));
        let conv = alice.conversation(&to_bob);
        assert!(
            alice
                .profile
                .conversations()
                .unwrap()
                .iter()
                .any(|c| c.id == conv && c.blocked)
        );

        let spam = w.text("you cannot hide from me");
        bob.send(&to_alice, &spam).await;
        let mine = id_of(&bob, &to_alice, &spam);
        bob.profile.react(&mine, "😡", false).await.expect("react");
        bob.take();
        // Bob makes a group with alice and carol: alice is not brought in.
        bob.group_create("trap").await;
        let _ = bob
            .profile
            .group_add(&bob.conversation("trap"), &[bob.contact(&to_alice)])
            .await;
        bob.take();
        alice.sync().await;
        assert_eq!(
            alice.texts(&to_bob),
            vec![hello.clone()],
            "nothing new kept"
        );
        assert!(
            alice.profile.invitations().unwrap().is_empty(),
            "no invitation from a blocked contact"
        );
        assert!(
            alice
                .profile
                .conversations()
                .unwrap()
                .iter()
                .all(|c| c.kind != samizdat_core::ConvKind::Group)
        );
        let refused = alice.profile.send(&conv, "hi").await;
        assert!(
            matches!(&refused, Err(samizdat_core::Error::Usage(m)) if m.contains("blocked")),
            "{refused:?}"
        );

        alice
            .profile
            .contact_block(&bob_id, false)
            .expect("unblock");
        let again = w.text("are we fine now");
        bob.send(&to_alice, &again).await;
        alice.sync().await;
        assert_eq!(alice.texts(&to_bob), vec![hello, again]);
        alice.send(&to_bob, "yes").await;
        w.assert_no_plaintext();
    });
}

/// Deleting a chat: a group is left (the others see it) and goes from the list with its
/// messages; a 1:1 chat loses its messages and leaves the list until the contact writes again.
#[test]
fn deleting_a_chat_leaves_a_group_and_empties_a_direct_chat() {
    run(async {
        let mut w = World::new().await;
        let [mut alice, mut bob] = w.people(["alice", "bob"]).await;
        w.connect(&mut alice, &mut bob).await;
        let (to_bob, to_alice) = (bob.display.clone(), alice.name.clone());
        let group = bob.group_create("book club").await;
        bob.group_add("book club", &[&to_alice]).await;
        alice.sync().await;
        let secret = w.text("chapter nine is about the tunnel");
        bob.send("book club", &secret).await;
        let direct = w.text("see you at the club");
        bob.send(&to_alice, &direct).await;
        alice.sync().await;
        assert!(alice.got(&secret) && alice.got(&direct));

        let alice_group = alice
            .profile
            .conversations()
            .unwrap()
            .into_iter()
            .find(|c| c.kind == samizdat_core::ConvKind::Group)
            .expect("the group")
            .id;
        alice
            .profile
            .delete_chat(&alice_group)
            .await
            .expect("delete the group chat");
        alice.take();
        let convs = alice.profile.conversations().unwrap();
        assert!(convs.iter().all(|c| c.id != alice_group), "{convs:?}");
        let count = format!("SELECT COUNT(*) FROM messages WHERE body LIKE '%{secret}%'");
        assert_eq!(alice.profile.rows_for_test(&count).unwrap(), 0);
        bob.sync().await;
        bob.sync().await;
        assert_eq!(bob.members("book club").len(), 1, "alice left");
        let _ = group;

        let dconv = alice.conversation(&to_bob);
        alice
            .profile
            .delete_chat(&dconv)
            .await
            .expect("delete the 1:1 chat");
        let convs = alice.profile.conversations().unwrap();
        let d = convs
            .iter()
            .find(|c| c.id == dconv)
            .expect("the contact's chat stays");
        assert!(d.archived && d.last.is_none(), "{d:?}");
        assert!(alice.texts(&to_bob).is_empty());
        let back = w.text("did you get my message");
        bob.send(&to_alice, &back).await;
        alice.sync().await;
        let convs = alice.profile.conversations().unwrap();
        let d = convs.iter().find(|c| c.id == dconv).expect("chat");
        assert!(!d.archived, "their message brings it back");
        assert_eq!(alice.texts(&to_bob), vec![back]);
    });
}

/// Saved messages: a note to self is kept in the self group, which only the person's own
/// devices share — the linked laptop has it, is listed as such, finds it by search; no
/// contact ever sees it.
#[test]
fn saved_messages_reach_only_my_own_devices() {
    run(async {
        let mut w = World::new().await;
        let [mut alice, mut bob] = w.people(["alice", "bob"]).await;
        w.connect(&mut alice, &mut bob).await;
        let mut laptop = w.link_device(&mut alice, "laptop").await;
        let saved = alice
            .profile
            .saved_messages()
            .await
            .expect("saved messages");
        assert_eq!(
            alice
                .profile
                .find_conversation(samizdat_core::SAVED_TARGET)
                .unwrap(),
            saved
        );
        let note = w.text("the door code is 4711");
        alice.profile.send(&saved, &note).await.expect("a note");
        alice.take();
        laptop.sync().await;
        let convs = laptop.profile.conversations().unwrap();
        let mine = convs
            .iter()
            .find(|c| c.kind == samizdat_core::ConvKind::SelfGroup)
            .expect("saved messages listed on the laptop");
        assert_eq!(mine.id, saved);
        assert!(mine.name.is_empty(), "no name of its own: fronts say it");
        let got = laptop.profile.history(&saved).unwrap();
        assert_eq!(got.len(), 1);
        assert!(got[0].outgoing && got[0].text == note);
        let hits = laptop.profile.search("door code", None, 10).unwrap();
        assert_eq!(hits.len(), 1, "{hits:?}");
        bob.sync().await;
        assert!(!bob.got(&note));
        w.assert_no_plaintext();
    });
}
