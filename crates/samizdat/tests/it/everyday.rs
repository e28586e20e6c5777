//! The everyday commands of the CLI contract, end to end between two profiles (issue 30):
//! `send --reply-to`, `react`, `edit`, `delete [--for-everyone]`, `forward`, and `history
//! --json` showing `reply_to`, `reactions`, `edited`, `deleted`.

use serde_json::Value;

use crate::World;

fn find<'a>(history: &'a [Value], text: &str) -> &'a Value {
    history
        .iter()
        .find(|m| m["text"] == text)
        .unwrap_or_else(|| panic!("no message {text:?} in {history:?}"))
}

fn by_id<'a>(history: &'a [Value], id: &Value) -> &'a Value {
    history
        .iter()
        .find(|m| m["id"] == *id)
        .unwrap_or_else(|| panic!("no message {id} in {history:?}"))
}

#[test]
fn reply_react_edit_delete_and_forward_from_the_command_line() {
    let mut w = World::new();
    let [alice, bob, carol] = w.people(["alice", "bob", "carol"]);
    w.connect(&alice, &bob);
    w.connect(&alice, &carol);
    let question = w.text("is the bridge open");
    let sent = alice.ok(&["send", &bob.display, &question]);
    let asked = sent
        .trim()
        .strip_prefix("sent ")
        .expect("prints the id")
        .to_string();
    bob.ok(&["sync"]);
    let h = bob.history("alice");
    assert_eq!(
        find(&h, &question)["id"],
        asked.as_str(),
        "one id on both sides"
    );

    let answer = w.text("it is open until six");
    bob.ok(&["send", "alice", &answer, "--reply-to", &asked]);
    bob.ok(&["react", &asked, "👍"]);
    alice.ok(&["sync"]);
    let h = alice.history(&bob.display);
    let reply = find(&h, &answer);
    assert_eq!(reply["reply_to"]["id"], asked.as_str());
    assert_eq!(reply["reply_to"]["found"], true);
    assert_eq!(reply["reply_to"]["text"], question.as_str());
    let q = find(&h, &question);
    assert_eq!(q["reactions"][0]["emoji"], "👍", "{q}");
    assert_eq!(q["reactions"][0]["count"], 1);
    // The human form shows both.
    let shown = alice.ok(&["history", &bob.display]);
    assert!(
        shown.contains("[re me: ") && shown.contains("👍 1"),
        "{shown}"
    );

    // Not an emoji; someone else's message: one-line errors, nothing changes.
    let err = bob.fails(&["react", &asked, "hello"]);
    assert!(err.contains("one emoji"), "{err}");
    let err = bob.fails(&["edit", &asked, "changed by bob"]);
    assert!(err.contains("only the person who sent"), "{err}");
    let err = bob.fails(&["delete", &asked, "--for-everyone"]);
    assert!(err.contains("only the person who sent"), "{err}");

    let fixed = w.text("is the north bridge open");
    alice.ok(&["edit", &asked, &fixed]);
    bob.ok(&["sync"]);
    let h = bob.history("alice");
    let q = by_id(&h, &Value::from(asked.as_str()));
    assert_eq!(
        (q["text"].as_str(), &q["edited"]),
        (Some(fixed.as_str()), &Value::Bool(true))
    );

    // Forward bob's answer to carol.
    let answer_id = find(&alice.history(&bob.display), &answer)["id"].clone();
    alice.ok(&["forward", answer_id.as_str().unwrap(), &carol.display]);
    carol.ok(&["sync"]);
    let h = carol.history("alice");
    assert_eq!(find(&h, &answer)["forwarded"], true);

    alice.ok(&["delete", &asked, "--for-everyone"]);
    bob.ok(&["sync"]);
    for (p, peer) in [(&alice, bob.display.as_str()), (&bob, "alice")] {
        let h = p.history(peer);
        let d = by_id(&h, &Value::from(asked.as_str()));
        assert_eq!(d["deleted"], true, "{d}");
        assert_eq!(d["text"], "");
        assert!(d.get("reactions").is_none(), "{d}");
        assert_eq!(find(&h, &answer)["reply_to"]["found"], false);
    }
    // Delete for me: gone from bob's history only.
    bob.ok(&["delete", answer_id.as_str().unwrap()]);
    assert!(bob.history("alice").iter().all(|m| m["id"] != answer_id));
    assert!(
        alice
            .history(&bob.display)
            .iter()
            .any(|m| m["id"] == answer_id)
    );
    w.assert_no_plaintext();
}

#[test]
fn search_mute_pin_and_archive_from_the_command_line() {
    let mut w = World::new();
    let [alice, bob, carol] = w.people(["alice", "bob", "carol"]);
    w.connect(&alice, &bob);
    w.connect(&alice, &carol);
    bob.ok(&["send", "alice", "Встреча у ёлки в пятницу"]);
    carol.ok(&["send", "alice", "встречи не будет"]);
    alice.ok(&["sync"]);
    let out = alice.ok(&["search", "ВСТРЕЧ", "--json"]);
    let hits: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(hits.len(), 2, "{out}");
    // Newest first, with the fields the contract names.
    assert_eq!(hits[0]["text"], "встречи не будет");
    assert_eq!(hits[1]["from"], bob.display.as_str());
    for key in ["id", "conversation", "from", "text", "sent_at"] {
        assert!(hits[0].get(key).is_some(), "{key} missing: {}", hits[0]);
    }
    let out = alice.ok(&["search", "елки", "--in", &bob.display, "--json"]);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        alice
            .ok(&["search", "nothing-like-this"])
            .contains("nothing found")
    );
    let err = alice.fails(&["search", "?!"]);
    assert!(err.contains("at least one word"), "{err}");

    // Pin carol: first in the list; archive bob, mute him for an hour.
    alice.ok(&["pin", &carol.display]);
    alice.ok(&["archive", &bob.display]);
    let muted = alice.ok(&["mute", &bob.display, "1h"]);
    assert!(muted.contains("muted for 1h"), "{muted}");
    let list: Vec<Value> = alice
        .ok(&["list", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(list[0]["shown_as"], carol.display.as_str(), "{list:?}");
    assert_eq!(list[0]["pinned"], true);
    let b = list
        .iter()
        .find(|c| c["shown_as"] == bob.display.as_str())
        .unwrap();
    assert_eq!(b["archived"], true);
    assert!(b["muted_until"].as_u64().is_some(), "{b}");
    // Muted, a new message leaves it archived; unmuted, the next one brings it back.
    bob.ok(&["send", "alice", "still there?"]);
    alice.ok(&["sync"]);
    assert!(alice.ok(&["list"]).contains("archived"));
    alice.ok(&["mute", &bob.display, "off"]);
    bob.ok(&["send", "alice", "hello?"]);
    alice.ok(&["sync"]);
    let listed = alice.ok(&["list"]);
    assert!(
        !listed.contains("archived") && !listed.contains("muted"),
        "{listed}"
    );
    alice.ok(&["pin", &carol.display, "--off"]);
    assert!(!alice.ok(&["list"]).contains("pinned"));
}
