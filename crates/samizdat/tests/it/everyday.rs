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

/// A photo-like JPEG (gradients and noise) of `w`×`h` pixels.
fn photo(w: u32, h: u32) -> Vec<u8> {
    let mut seed = 0x2545_f491_u32;
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        let n = (seed & 0x1f) as u8;
        image::Rgb([
            ((x * 255 / w) as u8).wrapping_add(n),
            ((y * 255 / h) as u8).wrapping_add(n),
            64u8.wrapping_add(n),
        ])
    });
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85)
        .encode_image(&img)
        .expect("jpeg");
    out
}

/// Photos and voice messages (issue 30, item 3): a photo sent from the command line arrives
/// with a thumbnail its sender made (`history --json`: `attachment.thumbnail`, its size; the
/// JPEG from JSON-RPC `thumbnail`, at most 320 pixels a side); a voice message sent through
/// the API arrives with its length. A file that is no picture has no thumbnail.
#[test]
fn photos_come_with_thumbnails_and_voice_messages_with_their_length() {
    use base64::Engine;
    let mut w = World::new();
    let [alice, bob] = w.people(["alice", "bob"]);
    w.connect(&alice, &bob);
    let files = tempfile::tempdir().expect("tempdir");
    let pic = files.path().join("IMG_2041.jpg");
    std::fs::write(&pic, photo(2000, 1500)).expect("write");
    let notes = files.path().join("notes.txt");
    std::fs::write(&notes, b"not a picture").expect("write");
    let voice = files.path().join("voice-message.webm");
    // A WebM file's first bytes (EBML), then sound.
    let mut webm = vec![0x1A, 0x45, 0xDF, 0xA3];
    webm.extend_from_slice(&[0x42; 4000]);
    std::fs::write(&voice, &webm).expect("write");

    alice.ok(&["send", &bob.display, "--file", pic.to_str().expect("utf8")]);
    alice.ok(&[
        "send",
        &bob.display,
        "--file",
        notes.to_str().expect("utf8"),
    ]);
    let sent = crate::delivery::rpc_once(
        &alice,
        "send",
        serde_json::json!({"target": bob.display, "file": voice.to_str().expect("utf8"), "voice_ms": 4200}),
    );
    assert!(sent["result"]["message_id"].is_string(), "{sent}");
    bob.ok(&["sync"]);
    let h = bob.history("alice");
    let files: Vec<&Value> = h.iter().filter(|m| m["attachment"].is_object()).collect();
    assert_eq!(files.len(), 3, "{h:?}");
    let (p, n, v) = (
        &files[0]["attachment"],
        &files[1]["attachment"],
        &files[2]["attachment"],
    );
    assert_eq!(p["thumbnail"], true, "{p}");
    assert_eq!(
        (p["width"].as_u64(), p["height"].as_u64()),
        (Some(2000), Some(1500))
    );
    assert_eq!(p["downloaded"], false, "shown without downloading");
    assert!(
        n.get("thumbnail").is_none() && n.get("voice_ms").is_none(),
        "{n}"
    );
    assert_eq!(v["voice_ms"], 4200, "{v}");

    let got = crate::delivery::rpc_once(
        &bob,
        "thumbnail",
        serde_json::json!({"message_id": files[0]["id"]}),
    );
    let jpeg = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(got["result"]["jpeg"].as_str().expect("a thumbnail"))
        .expect("base64url");
    let small = image::load_from_memory(&jpeg).expect("a JPEG");
    assert_eq!((small.width(), small.height()), (320, 240));
    let none = crate::delivery::rpc_once(
        &bob,
        "thumbnail",
        serde_json::json!({"message_id": files[1]["id"]}),
    );
    assert!(none["error"].is_object(), "{none}");
    w.assert_no_plaintext();
}
