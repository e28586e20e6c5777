//! End-to-end tests: the real `samizdat` binary against a real relay process on a random
//! loopback port.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod app;
mod attachments;
mod bounds;
mod channels;
mod crash;
mod delivery;
mod devices;
mod everyday;
mod harness;
mod mitm;
mod operators;
mod reach;
mod relays;
mod review3;
mod safety;
mod service;

use harness::{Person, RelayProc, World};

#[test]
fn invite_accept_and_a_one_to_one_chat() {
    let mut w = World::new();
    let [alice, bob] = w.people(["alice", "bob"]);
    w.connect(&alice, &bob);
    // bob knows alice by the alias he chose; alice knows bob by the name he shared.
    assert!(bob.ok(&["contacts"]).contains("alice"));
    let hello = w.text("hello alice");
    bob.ok(&["send", "alice", &hello]);
    let out = alice.ok(&["sync"]);
    assert!(out.contains(&hello), "{out}");
    let list: Vec<serde_json::Value> = alice
        .ok(&["list", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let conv = list
        .iter()
        .find(|c| c["name"] == bob.display.as_str())
        .expect("conversation named after bob");
    assert_eq!(conv["unread"], 1);
    let reply = w.text("hi bob");
    alice.ok(&["send", &bob.display, &reply]);
    assert!(bob.ok(&["sync"]).contains(&reply));
    let h = bob.history("alice");
    assert_eq!(h.len(), 2);
    for m in &h {
        for key in ["id", "from", "text", "sent_at"] {
            assert!(!m[key].is_null(), "history entry lacks {key}: {m}");
        }
    }
    assert_eq!(h[0]["from"], "me");
    assert_eq!(h[1]["from"], "alice");
    assert_eq!(h[1]["text"], reply.as_str());
    // Both compute the same safety number.
    let a = alice
        .ok(&["verify", &bob.display])
        .lines()
        .last()
        .unwrap()
        .to_string();
    let b = bob
        .ok(&["verify", "alice"])
        .lines()
        .last()
        .unwrap()
        .to_string();
    assert_eq!(a, b);
    assert_eq!(a.split(' ').count(), 12);
    // Syncing again shows nothing twice.
    assert!(bob.ok(&["sync"]).contains("nothing new"));
    w.assert_no_plaintext();
}

#[test]
fn single_use_invites_and_display_name_collisions() {
    let mut w = World::new();
    let [alice, bob, carol] = w.people(["alice", "bob", "carol"]);
    let link = alice.ok(&["invite"]).lines().last().unwrap().to_string();
    bob.ok(&["accept", &link, "--name", "alice"]);
    carol.ok(&["accept", &link, "--name", "alice"]);
    let out = alice.ok(&["sync"]);
    assert!(
        out.contains("refused"),
        "the second use of a single-use invite must be refused: {out}"
    );
    let contacts = alice.ok(&["contacts", "--json"]);
    assert_eq!(contacts.lines().count(), 1, "{contacts}");
    // alice keeps nothing half-made: only bob's conversation is left.
    let convs = alice.ok(&["list", "--json"]);
    assert_eq!(convs.lines().count(), 1, "{convs}");
    // carol is told, and her attempt no longer blocks a new link under the same alias.
    let out = carol.ok(&["sync"]);
    assert!(out.contains("refused the invite"), "{out}");
    assert!(carol.ok(&["list"]).contains("ask for a new link"));
    let link = alice
        .ok(&["invite", "--reusable"])
        .lines()
        .last()
        .unwrap()
        .to_string();
    carol.ok(&["accept", &link, "--name", "alice"]);
    alice.ok(&["sync"]);
    let hi = w.text("carol again");
    carol.ok(&["send", "alice", &hi]);
    alice.ok(&["sync"]);
    assert!(alice.texts(&carol.display).contains(&hi));
    // A reusable invite admits several people; equal display names are made unique.
    let twin1 = w.person_named("twin1", "Twin Name");
    let twin2 = w.person_named("twin2", "Twin Name");
    twin1.ok(&["accept", &link, "--name", "alice"]);
    twin2.ok(&["accept", &link, "--name", "alice"]);
    alice.ok(&["sync"]);
    let aliases: Vec<String> = alice
        .ok(&["contacts", "--json"])
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["alias"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(aliases.len(), 4, "{aliases:?}");
    assert!(
        aliases.contains(&"Twin Name".to_string()) && aliases.contains(&"Twin Name-2".to_string()),
        "{aliases:?}"
    );
    let t = w.text("to the second twin");
    alice.ok(&["send", "Twin Name-2", &t]);
    assert!(twin2.ok(&["sync"]).contains(&t));
    assert!(!twin1.ok(&["sync"]).contains(&t));
    w.assert_no_plaintext();
}

#[test]
fn concurrent_senders_agree_on_one_order() {
    let mut w = World::new();
    let [alice, bob, carol] = w.people(["alice", "bob", "carol"]);
    w.connect(&alice, &bob);
    w.connect(&alice, &carol);
    alice.ok(&["group", "create", "busy"]);
    alice.ok(&["group", "add", "busy", &bob.display, &carol.display]);
    bob.ok(&["sync"]);
    carol.ok(&["sync"]);
    // Everyone sends at once: the log's order is the same for every member.
    let texts: Vec<String> = (0..3).map(|i| w.text(&format!("burst {i}"))).collect();
    let children = vec![
        bob.cmd(&["send", "busy", &texts[0]]).spawn().unwrap(),
        alice.cmd(&["send", "busy", &texts[1]]).spawn().unwrap(),
        carol.cmd(&["send", "busy", &texts[2]]).spawn().unwrap(),
    ];
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    for p in [&alice, &bob, &carol] {
        p.ok(&["sync"]);
    }
    let order = alice.texts("busy");
    assert_eq!(order.len(), 3);
    assert_eq!(bob.texts("busy"), order);
    assert_eq!(carol.texts("busy"), order);
}

#[test]
fn key_package_substitution_is_detected() {
    let mut w = World::new();
    let [alice, bob, mallory] = w.people(["alice", "bob", "mallory"]);
    let link = alice.ok(&["invite"]).lines().last().unwrap().to_string();
    // A relay that answers a claim on alice's mailbox with mallory's KeyPackage is the same,
    // to bob, as a link whose mailbox points at mallory while the fingerprint is alice's.
    let m_link = mallory.ok(&["invite"]).lines().last().unwrap().to_string();
    let mut forged = samizdat_core::Invite::parse(&link).unwrap();
    forged.mailbox = samizdat_core::Invite::parse(&m_link).unwrap().mailbox;
    let forged_link = forged.to_link();
    let err = bob.fails(&["accept", &forged_link, "--name", "alice"]);
    assert!(err.contains("does not belong to the inviter"), "{err}");
    assert!(bob.ok(&["contacts", "--json"]).trim().is_empty());
    assert!(mallory.ok(&["sync"]).contains("nothing new"));
    // The genuine link still works.
    bob.ok(&["accept", &link, "--name", "alice"]);
}

#[test]
fn user_errors_are_one_clear_line() {
    let mut w = World::new();
    let [alice, bob] = w.people(["alice", "bob"]);
    w.connect(&alice, &bob);
    let e = alice.fails(&["send", "nobody", "hi"]);
    assert!(e.contains("no contact or group called"), "{e}");
    let e = alice.fails(&["accept", "samizdat://invite/v1/garbage!!", "--name", "x"]);
    assert!(e.contains("invalid invite"), "{e}");
    let e = alice.fails(&["accept", "https://example.org/", "--name", "x"]);
    assert!(e.contains("invalid invite"), "{e}");
    let e = alice.fails(&["group", "members", "nope"]);
    assert!(e.contains("no contact or group"), "{e}");
    // Expired link.
    let link = alice
        .ok(&["invite", "--hours", "0"])
        .lines()
        .last()
        .unwrap()
        .to_string();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let e = bob.fails(&["accept", &link, "--name", "alice-again"]);
    assert!(e.contains("expired"), "{e}");
    // Wrong passphrase.
    let out = alice
        .cmd(&["contacts"])
        .env("SAMIZDAT_PASSPHRASE", "not it")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("wrong passphrase"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1);
    // No profile.
    let ghost = Person {
        name: "ghost".into(),
        display: "ghost".into(),
        home: w.dir.path().join("ghost"),
    };
    assert!(ghost.fails(&["sync"]).contains("no profile"));
    // Relay down.
    w.relay.kill();
    let e = alice.fails(&["send", &bob.display, "anyone there?"]);
    assert!(e.contains("cannot reach the relay"), "{e}");
    let e = alice.fails(&["sync"]);
    assert!(e.contains("cannot reach the relay"), "{e}");
}

#[test]
fn relay_restart_and_kill_keep_every_acknowledged_message() {
    let mut w = World::new();
    let [alice, bob] = w.people(["alice", "bob"]);
    w.connect(&alice, &bob);
    let mut sent = Vec::new();
    for i in 0..5 {
        let t = w.text(&format!("before kill {i}"));
        bob.ok(&["send", "alice", &t]);
        sent.push(t);
    }
    // SIGKILL: no chance to flush anything that was not already durable.
    let addr = w.relay.addr.clone();
    let data = w.relay.data.clone();
    w.relay.kill();
    w.relay = RelayProc::start(&data, &addr);
    for i in 0..3 {
        let t = w.text(&format!("after restart {i}"));
        bob.ok(&["send", "alice", &t]);
        sent.push(t);
    }
    // SIGTERM: a clean, zero exit.
    let status = w.relay.terminate();
    assert!(status.success(), "relay exit status on SIGTERM: {status}");
    w.relay = RelayProc::start(&data, &addr);
    alice.ok(&["sync"]);
    assert_eq!(alice.texts(&bob.display), sent);
    w.assert_no_plaintext();
}

#[test]
fn listen_prints_pushed_messages() {
    let mut w = World::new();
    let [alice, bob] = w.people(["alice", "bob"]);
    w.connect(&alice, &bob);
    let listener = alice
        .cmd(&["listen", "--json", "--count", "2", "--timeout", "60"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let t1 = w.text("pushed one");
    let t2 = w.text("pushed two");
    bob.ok(&["send", "alice", &t1]);
    bob.ok(&["send", "alice", &t2]);
    let out = listener.wait_with_output().unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let msgs: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "message")
        .collect();
    assert_eq!(msgs.len(), 2, "{stdout}");
    assert_eq!(msgs[0]["text"], t1.as_str());
    assert_eq!(msgs[1]["text"], t2.as_str());
}

#[test]
fn demo_runs_and_finds_no_plaintext() {
    let out = std::process::Command::new(harness::BIN)
        .arg("demo")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("no plaintext found"), "{stdout}");
    assert!(stdout.contains("carol tries to post: refused"), "{stdout}");
}

/// Three relay processes on one PostgreSQL; clients know all three addresses. One process is
/// SIGKILLed while a client listens on it and another sends: both fail over, and every
/// acknowledged message is delivered exactly once.
#[test]
fn clients_fail_over_when_a_relay_process_dies() {
    let Some(db) = harness::postgres_url() else {
        println!("skipped: SAMIZDAT_TEST_DATABASE_URL is not set");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut relays: Vec<RelayProc> = (0..3)
        .map(|i| RelayProc::start_with(&dir.path().join(format!("r{i}")), "127.0.0.1:0", Some(&db)))
        .collect();
    let spec = relays
        .iter()
        .map(|r| r.url.clone())
        .collect::<Vec<_>>()
        .join(",");
    let person = |name: &str| {
        let p = Person {
            name: name.into(),
            display: format!("{name}-{}", harness::hex_rand()),
            home: dir.path().join(name),
        };
        p.ok(&["init", "--relay", &spec, "--name", &p.display]);
        p
    };
    let alice = person("alice");
    let bob = person("bob");
    let link = alice.ok(&["invite"]).lines().last().unwrap().to_string();
    bob.ok(&["accept", &link, "--name", "alice"]);
    alice.ok(&["sync"]);

    let listener = alice
        .cmd(&["listen", "--json", "--timeout", "40"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    let mut acked = Vec::new();
    for i in 0..24 {
        if i == 8 {
            relays[0].kill(); // the address every client tries first
        }
        let text = format!("failover message {i} {}", harness::hex_rand());
        if bob.run(&["send", "alice", &text]).status.success() {
            acked.push(text);
        }
    }
    assert!(
        acked.len() >= 20,
        "sends kept failing after one process died: {} acknowledged",
        acked.len()
    );
    bob.ok(&["sync"]); // flushes anything queued
    std::thread::sleep(std::time::Duration::from_secs(3));
    crate::harness::signal(&listener, rustix::process::Signal::INT);
    let out = listener.wait_with_output().unwrap();
    let pushed: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "message")
        .collect();
    let pushed_ids: Vec<&str> = pushed.iter().map(|m| m["id"].as_str().unwrap()).collect();
    let unique: std::collections::HashSet<&&str> = pushed_ids.iter().collect();
    assert_eq!(unique.len(), pushed_ids.len(), "a message was shown twice");
    for t in &acked {
        assert_eq!(
            pushed.iter().filter(|m| m["text"] == t.as_str()).count(),
            1,
            "acknowledged {t:?} not shown exactly once while listening"
        );
    }
    alice.ok(&["sync"]);
    let history = alice.texts(&bob.display);
    for t in &acked {
        assert_eq!(
            history.iter().filter(|h| *h == t).count(),
            1,
            "{t:?} not in history exactly once"
        );
    }
    let unique: std::collections::HashSet<&String> = history.iter().collect();
    assert_eq!(unique.len(), history.len());
    relays.clear();
}

/// Crash, client side: a client killed between storing and acknowledging (mailbox), or
/// around the relay's acknowledgement of a send, loses nothing and shows nothing twice.
#[test]
fn client_crashes_lose_nothing_and_duplicate_nothing() {
    let mut w = World::new();
    let [alice, bob] = w.people(["alice", "bob"]);
    let link = alice.ok(&["invite"]).lines().last().unwrap().to_string();
    bob.ok(&["accept", &link, "--name", "alice"]);
    // alice joins and stores, then dies before acknowledging the Welcome.
    let out = alice
        .cmd(&["sync"])
        .env("SAMIZDAT_TEST_CRASH", "mailbox-before-ack")
        .output()
        .unwrap();
    assert!(!out.status.success(), "the crash point must have fired");
    alice.ok(&["sync"]);
    assert_eq!(alice.ok(&["contacts", "--json"]).lines().count(), 1);
    assert_eq!(
        alice.ok(&["list", "--json"]).lines().count(),
        1,
        "joined twice?"
    );

    // bob dies after storing the pending message, before the relay saw it.
    let t1 = w.text("queued before a crash");
    let out = bob
        .cmd(&["send", "alice", &t1])
        .env("SAMIZDAT_TEST_CRASH", "send-before-append")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(!alice.ok(&["sync"]).contains(&t1), "not sent yet");
    assert!(
        bob.history("alice")
            .iter()
            .any(|m| m["text"] == t1.as_str() && m["delivered"] == false)
    );
    bob.ok(&["sync"]); // retries the queued request
    assert!(alice.ok(&["sync"]).contains(&t1));

    // bob dies after the relay stored the message, before recording it.
    let t2 = w.text("acknowledged then crash");
    let out = bob
        .cmd(&["send", "alice", &t2])
        .env("SAMIZDAT_TEST_CRASH", "send-after-append")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(alice.ok(&["sync"]).contains(&t2));
    let out = bob.ok(&["sync"]); // the retry is answered with the original result
    assert!(!out.contains("rejected"), "{out}");
    let h = bob.history("alice");
    assert_eq!(h.iter().filter(|m| m["text"] == t2.as_str()).count(), 1);
    assert!(h.iter().all(|m| m["delivered"] == true));
    assert!(alice.ok(&["sync"]).contains("nothing new"));
    assert_eq!(alice.texts(&bob.display), vec![t1, t2]);
    w.assert_no_plaintext();
}

/// Hostile relay: the relay's own database is tampered with while it runs — bit flips,
/// truncation, duplicates, replays and injected garbage. Clients never display a forged,
/// altered or duplicated message, say what they rejected, and keep working.
#[test]
fn hostile_relay_tampering_is_rejected_and_recovered_from() {
    let mut w = World::new();
    let [alice, bob] = w.people(["alice", "bob"]);
    w.connect(&alice, &bob);
    let db = rusqlite::Connection::open(w.relay.data.join("relay.db")).unwrap();
    db.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    let last = |db: &rusqlite::Connection| -> (Vec<u8>, i64, Vec<u8>) {
        db.query_row(
            "SELECT group_id, seq, body FROM entries WHERE kind = 0 ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0).unwrap(), r.get(1).unwrap(), r.get(2).unwrap())),
        )
        .unwrap()
    };
    let append_raw = |db: &rusqlite::Connection, gid: &[u8], body: &[u8]| {
        db.execute(
            "INSERT INTO entries (group_id, seq, epoch, kind, body, stored_at)
             SELECT group_id, next_seq, current_epoch, 0, ?2, 0 FROM groups WHERE group_id = ?1",
            rusqlite::params![gid, body],
        )
        .unwrap();
        db.execute(
            "UPDATE groups SET next_seq = next_seq + 1 WHERE group_id = ?1",
            [gid],
        )
        .unwrap();
    };

    // 1. A bit flip in a stored message.
    let flipped = w.text("this one gets a bit flipped");
    bob.ok(&["send", "alice", &flipped]);
    let (gid, seq, mut body) = last(&db);
    let mid = body.len() / 2;
    body[mid] ^= 0x01;
    db.execute(
        "UPDATE entries SET body = ?3 WHERE group_id = ?1 AND seq = ?2",
        rusqlite::params![gid, seq, body],
    )
    .unwrap();
    let out = alice.ok(&["sync"]);
    assert!(
        !out.contains(&flipped),
        "an altered message was displayed: {out}"
    );
    assert!(out.contains("rejected entry"), "{out}");

    // 2. Truncation.
    let cut = w.text("this one gets truncated");
    bob.ok(&["send", "alice", &cut]);
    let (gid, seq, body) = last(&db);
    db.execute(
        "UPDATE entries SET body = ?3 WHERE group_id = ?1 AND seq = ?2",
        rusqlite::params![gid, seq, &body[..body.len() / 2]],
    )
    .unwrap();
    let out = alice.ok(&["sync"]);
    assert!(
        !out.contains(&cut) && out.contains("rejected entry"),
        "{out}"
    );

    // 3. Duplicate and replay: a genuine message stored again later in the log.
    let real = w.text("genuine and then duplicated");
    bob.ok(&["send", "alice", &real]);
    let (gid, _, body) = last(&db);
    assert!(alice.ok(&["sync"]).contains(&real));
    append_raw(&db, &gid, &body);
    append_raw(&db, &gid, &body);
    let out = alice.ok(&["sync"]);
    assert!(!out.contains(&real), "a duplicate was displayed: {out}");

    // 4. Injected garbage, and genuine MLS messages from non-members: carol's application
    //    message and commit from her own conversation with bob, replayed into this group.
    append_raw(&db, &gid, b"not an MLS message at all");
    append_raw(&db, &gid, &[0u8; 300]);
    let carol = w.person("carol");
    w.connect(&bob, &carol);
    let foreign = w.text("carol to bob, elsewhere");
    carol.ok(&["send", "bob", &foreign]);
    let (foreign_app, foreign_commit): (Vec<u8>, Vec<u8>) = {
        let pick = |kind: i64| -> Vec<u8> {
            db.query_row(
                "SELECT body FROM entries WHERE kind = ?1 AND group_id != ?2 ORDER BY seq DESC LIMIT 1",
                rusqlite::params![kind, gid],
                |r| r.get(0),
            )
            .unwrap()
        };
        (pick(0), pick(1))
    };
    append_raw(&db, &gid, &foreign_app);
    append_raw(&db, &gid, &foreign_commit);
    let out = alice.ok(&["sync"]);
    assert!(out.contains("rejected entry"), "{out}");
    assert!(
        !out.contains(&foreign),
        "a non-member's message was displayed: {out}"
    );

    // Recovery: the conversation keeps working both ways.
    let after = w.text("after the attack");
    bob.ok(&["send", "alice", &after]);
    assert!(alice.ok(&["sync"]).contains(&after));
    let reply = w.text("reply after the attack");
    alice.ok(&["send", &bob.display, &reply]);
    assert!(bob.ok(&["sync"]).contains(&reply));
    let shown = alice.texts(&bob.display);
    assert_eq!(shown.iter().filter(|t| **t == real).count(), 1);
    assert!(!shown.contains(&flipped) && !shown.contains(&cut));
}

/// Text from others cannot forge lines in the CLI's output.
#[test]
fn finding_10_control_characters_are_escaped_in_human_output() {
    let mut w = World::new();
    let [alice, bob] = w.people(["alice", "bob"]);
    w.connect(&alice, &bob);
    bob.ok(&["send", "alice", "x\n[friends] alice: meet at 5\u{1b}[31m"]);
    let out = alice.ok(&["sync"]);
    assert!(!out.contains("\n[friends]"), "{out}");
    assert!(!out.contains('\u{1b}'), "{out}");
    assert!(
        out.contains("x\\n[friends] alice: meet at 5\\u{1b}[31m"),
        "{out}"
    );
}

/// Finding 8: someone drains a person's KeyPackage pool (every claim after that gets the
/// last-resort KeyPackage, forever). The next sync refills the pool, so adds use fresh
/// KeyPackages again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_8_a_drained_key_package_pool_is_refilled() {
    let mut w = World::new();
    let alice = w.person("alice");
    let link = alice.ok(&["invite"]).lines().last().unwrap().to_string();
    let invite = samizdat_core::Invite::parse(&link).unwrap();
    let relay = samizdat_core::relay_client::RelayClient::new(&w.relay.url).unwrap();
    let mut drained = false;
    for _ in 0..25 {
        let kp = relay.claim_key_package(&invite.mailbox).await.unwrap();
        if kp.last_resort {
            drained = true;
            break;
        }
    }
    assert!(drained, "the pool never ran dry");
    alice.ok(&["sync"]);
    let kp = relay.claim_key_package(&invite.mailbox).await.unwrap();
    assert!(!kp.last_resort, "the pool was not refilled");
}
