//! Everyday safety: panic wipe and the duress passphrase.

use crate::harness::World;

/// `wipe` refuses without `--yes` when nobody can be asked, and with it leaves nothing of the
/// profile on disk.
#[test]
fn wipe_leaves_nothing_of_the_profile() {
    let mut w = World::new();
    let [alice, bob] = w.people(["alice", "bob"]);
    w.connect(&alice, &bob);
    let t = w.text("before the wipe");
    alice.ok(&["send", &bob.display, &t]);
    let err = alice.fails(&["wipe"]);
    assert!(err.contains("--yes"), "{err}");
    assert!(
        alice.home.join("profile.db").exists(),
        "nothing deleted without --yes"
    );
    assert!(alice.ok(&["wipe", "--yes"]).contains("wiped"));
    assert!(!alice.home.exists(), "the profile directory is gone");
    let err = alice.fails(&["list"]);
    assert!(err.contains("no profile"), "{err}");
    w.assert_no_plaintext();
}

/// `wipe` while `serve` owns the profile: the owner wipes what it holds (the `wipe` method on
/// its socket: no other process deletes files under it), says so, and exits by itself.
#[test]
fn wipe_stops_a_running_service() {
    use std::io::{BufRead, Read};
    let mut w = World::new();
    let [alice] = w.people(["alice"]);
    let mut serve = alice
        .cmd(&["serve"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("serve");
    let mut out = std::io::BufReader::new(serve.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("serving");
    assert!(line.contains("serving"), "{line}");
    assert!(alice.ok(&["wipe", "--yes"]).contains("wiped"));
    let status = serve.wait().expect("serve stops");
    let mut rest = String::new();
    out.read_to_string(&mut rest).expect("serve's last words");
    assert!(rest.contains("the profile was wiped"), "{rest}");
    // It stopped by itself (a signal would leave no exit code).
    assert!(status.success(), "{status:?}");
    assert!(!alice.home.exists(), "the profile directory is gone");
}

/// The duress passphrase: set it; opening the profile with it wipes the old one silently and
/// opens a fresh, empty profile with the same display name, which works; the real
/// passphrase no longer opens anything.
#[test]
fn the_duress_passphrase_wipes_and_opens_an_empty_profile() {
    let mut w = World::new();
    let [alice, bob] = w.people(["alice", "bob"]);
    w.connect(&alice, &bob);
    let t = w.text("a secret before duress");
    alice.ok(&["send", &bob.display, &t]);
    let fp_before = alice.ok(&["whoami"]);
    let duress_file = alice.home.join("duress");
    let before = std::fs::read(&duress_file).expect("a duress file always exists");
    let out = alice
        .cmd(&["duress", "set"])
        .env("SAMIZDAT_DURESS_PASSPHRASE", super::harness::PASSPHRASE)
        .output()
        .expect("duress set");
    assert!(
        !out.status.success(),
        "the duress passphrase must differ from the real one"
    );
    let duress = "the words for the checkpoint";
    let out = alice
        .cmd(&["duress", "set"])
        .env("SAMIZDAT_DURESS_PASSPHRASE", duress)
        .output()
        .expect("duress set");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = std::fs::read(&duress_file).expect("duress file");
    assert_eq!(
        before.len(),
        after.len(),
        "its size does not tell it is set"
    );

    // At the checkpoint: opened with the duress passphrase.
    let list = alice
        .cmd(&["list", "--json"])
        .env("SAMIZDAT_PASSPHRASE", duress)
        .output()
        .expect("list");
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    assert!(
        String::from_utf8_lossy(&list.stdout).trim().is_empty(),
        "no conversations"
    );
    let who = alice
        .cmd(&["whoami"])
        .env("SAMIZDAT_PASSPHRASE", duress)
        .output()
        .expect("whoami");
    let who = String::from_utf8_lossy(&who.stdout).to_string();
    assert!(who.contains(&alice.display), "same display name: {who}");
    assert_ne!(who, fp_before, "a new identity");
    // Nothing of the old profile is left: not the plaintext, not the old database.
    for entry in std::fs::read_dir(&alice.home).expect("home") {
        let bytes = std::fs::read(entry.expect("entry").path()).unwrap_or_default();
        assert!(memchr::memmem::find(&bytes, t.as_bytes()).is_none());
    }
    let old = alice.run(&["list"]);
    assert!(
        !old.status.success(),
        "the real passphrase opens nothing any more"
    );
    // The fresh profile works: it makes an invite others can accept.
    let link = alice
        .cmd(&["invite"])
        .env("SAMIZDAT_PASSPHRASE", duress)
        .output()
        .expect("invite");
    assert!(
        link.status.success(),
        "{}",
        String::from_utf8_lossy(&link.stderr)
    );
    w.assert_no_plaintext();
}

/// Disappearing messages: a member sets a timer that everyone sees; each message carries it
/// and is deleted from both stores when it is up (from sending for the sender, from arrival
/// for the receiver); turning it off stops it for new messages.
#[test]
fn disappearing_messages_are_deleted_from_both_stores() {
    let mut w = World::new();
    let [alice, bob] = w.people(["alice", "bob"]);
    w.connect(&alice, &bob);
    assert!(
        alice
            .fails(&["timer", &bob.display, "soon"])
            .contains("not a duration")
    );
    alice.ok(&["timer", &bob.display, "3s"]);
    let out = bob.ok(&["sync"]);
    assert!(out.contains("set disappearing messages to 3 s"), "{out}");
    let t = w.text("gone in three seconds");
    alice.ok(&["send", &bob.display, &t]);
    bob.ok(&["sync"]);
    assert!(bob.texts("alice").contains(&t), "delivered first");
    let json = bob.history("alice");
    let m = json
        .iter()
        .find(|m| m["text"] == t.as_str())
        .expect("the message");
    assert!(m["expires_at"].is_u64(), "{m}");
    // A file under the timer: both copies (the sender's and the fetched one) go with it.
    let file = w.dir.path().join("fleeting.txt");
    std::fs::write(&file, b"a fleeting file").unwrap();
    let sent = alice.ok(&["send", &bob.display, "--file", file.to_str().unwrap()]);
    let id = sent.trim().trim_start_matches("sent ").to_string();
    bob.ok(&["sync"]);
    bob.ok(&[
        "download",
        &id,
        "--out",
        w.dir.path().join("kept.txt").to_str().unwrap(),
    ]);
    let copies = |p: &crate::harness::Person| {
        std::fs::read_dir(p.home.join("attachments"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    assert_eq!((copies(&alice), copies(&bob)), (1, 1));
    std::thread::sleep(std::time::Duration::from_secs(4));
    assert!(!bob.texts("alice").contains(&t), "gone from the receiver");
    assert!(
        !alice.texts(&bob.display).contains(&t),
        "gone from the sender"
    );
    assert_eq!(
        (copies(&alice), copies(&bob)),
        (0, 0),
        "attachment copies are deleted with their messages"
    );
    bob.ok(&["sync"]);
    // Off again: new messages stay.
    bob.ok(&["timer", "alice", "off"]);
    let out = alice.ok(&["sync"]);
    assert!(out.contains("turned disappearing messages off"), "{out}");
    let k = w.text("this one stays");
    alice.ok(&["send", &bob.display, &k]);
    bob.ok(&["sync"]);
    std::thread::sleep(std::time::Duration::from_secs(4));
    assert!(bob.texts("alice").contains(&k));
    // The deleted text is in no file of either profile (SQLCipher encrypts the pages and
    // secure_delete overwrites freed ones).
    for p in [&alice, &bob] {
        for entry in std::fs::read_dir(&p.home).expect("home") {
            let bytes = std::fs::read(entry.expect("entry").path()).unwrap_or_default();
            assert!(memchr::memmem::find(&bytes, t.as_bytes()).is_none());
        }
    }
    w.assert_no_plaintext();
}

/// Backup and restore: back up, exchange more messages (and a commit), wipe, restore, sync —
/// every message from before and after the backup is there once, and the restored profile
/// sends to the group. A wrong passphrase or a damaged file is a clear error and leaves
/// nothing behind.
#[test]
fn a_restored_backup_catches_up_from_the_logs() {
    let mut w = World::new();
    let [alice, bob, carol] = w.people(["alice", "bob", "carol"]);
    w.connect(&bob, &alice);
    w.connect(&bob, &carol);
    bob.ok(&["group", "create", "friends"]);
    bob.ok(&["group", "add", "friends", &alice.display]);
    alice.ok(&["sync"]);
    let before = w.text("before the backup");
    bob.ok(&["send", "friends", &before]);
    let photo = w.dir.path().join("photo.jpg");
    std::fs::write(&photo, vec![7u8; 50_000]).unwrap();
    let sent = bob.ok(&["send", "friends", "--file", photo.to_str().unwrap()]);
    let photo_id = sent.trim().trim_start_matches("sent ").to_string();
    alice.ok(&["sync"]);
    alice.ok(&[
        "download",
        &photo_id,
        "--out",
        w.dir.path().join("got.jpg").to_str().unwrap(),
    ]);
    let file = w.dir.path().join("alice.backup");
    let backup = |p: &str| {
        alice
            .cmd(&["backup", "--out", file.to_str().unwrap()])
            .env("SAMIZDAT_BACKUP_PASSPHRASE", p)
            .output()
            .expect("backup")
    };
    assert!(
        !backup("short").status.success(),
        "weak backup passphrase refused"
    );
    let out = backup("a long backup passphrase");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&file).expect("backup file");
    assert!(
        memchr::memmem::find(&bytes, before.as_bytes()).is_none(),
        "encrypted"
    );

    // After the backup: a message and a commit (carol is added).
    let after = w.text("after the backup");
    bob.ok(&["group", "add", "friends", &carol.display]);
    bob.ok(&["send", "friends", &after]);
    alice.ok(&["wipe", "--yes"]);

    let restore = |p: &str, f: &std::path::Path| {
        alice
            .cmd(&["restore", f.to_str().unwrap()])
            .env("SAMIZDAT_BACKUP_PASSPHRASE", p)
            .output()
            .expect("restore")
    };
    let wrong = restore("not the backup passphrase", &file);
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("wrong backup passphrase"));
    assert!(
        !alice.home.join("profile.db").exists(),
        "nothing left behind"
    );
    let damaged = w.dir.path().join("damaged.backup");
    let mut d = bytes.clone();
    let n = d.len();
    d.truncate(n / 2);
    std::fs::write(&damaged, &d).unwrap();
    assert!(
        !restore("a long backup passphrase", &damaged)
            .status
            .success()
    );
    assert!(!alice.home.join("profile.db").exists());
    let ok = restore("a long backup passphrase", &file);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    // The attachment copy came back with the backup (not fetched again).
    assert_eq!(
        std::fs::read_dir(alice.home.join("attachments"))
            .map(|d| d.count())
            .unwrap_or(0),
        1,
        "the encrypted copy is restored"
    );
    let photo_msg = alice
        .history("friends")
        .into_iter()
        .find(|m| m["id"] == photo_id.as_str())
        .expect("the photo message");
    assert_eq!(photo_msg["attachment"]["downloaded"], true, "{photo_msg}");
    let again = w.dir.path().join("again.jpg");
    alice.ok(&["download", &photo_id, "--out", again.to_str().unwrap()]);
    assert_eq!(std::fs::read(&again).unwrap(), vec![7u8; 50_000]);
    alice.ok(&["sync"]);
    let texts = alice.texts("friends");
    assert_eq!(
        texts.iter().filter(|t| **t == before).count(),
        1,
        "{texts:?}"
    );
    assert_eq!(
        texts.iter().filter(|t| **t == after).count(),
        1,
        "{texts:?}"
    );
    assert_eq!(
        alice.members("friends").len(),
        3,
        "the commit after the backup applied"
    );
    // The search index was built again for the restored rows: what was backed up and what
    // arrived after are both found, once each, with their own ids.
    for text in [&before, &after] {
        let found = alice.ok(&["search", text, "--json"]);
        let hits: Vec<serde_json::Value> = found
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(hits.len(), 1, "{text}: {found}");
        assert_eq!(hits[0]["text"], text.as_str());
    }
    let back = w.text("alice is back");
    alice.ok(&["send", "friends", &back]);
    bob.ok(&["sync"]);
    carol.ok(&["sync"]);
    assert_eq!(bob.texts("friends").last(), Some(&back));
    assert_eq!(carol.texts("friends").last(), Some(&back));
    w.assert_no_plaintext();
}
