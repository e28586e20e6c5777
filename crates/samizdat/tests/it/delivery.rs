//! Delivery across relays: people on different self-hosted relays, with the other relay down
//! at the wrong moment.

use crate::harness::{self, Person, RelayProc, World};

/// A person whose profile (mailbox, KeyPackages) lives on `relay`.
fn person_on(w: &mut World, name: &str, relay: &RelayProc) -> Person {
    let p = Person {
        name: name.into(),
        display: format!("{name}-display-{}", &harness::hex_rand()[..6]),
        home: w.dir.path().join(name),
    };
    p.ok(&["init", "--relay", &relay.url, "--name", &p.display]);
    w.secrets.push(p.display.clone());
    p
}

/// Alice on the world's relay (A), carol on `relay_b`, contacts (their 1:1 conversation is
/// on A), and alice's empty group "friends".
fn alice_with_carol_on(w: &mut World, relay_b: &RelayProc) -> (Person, Person) {
    let alice = w.person("alice");
    let carol = person_on(w, "carol", relay_b);
    let link = alice.ok(&["invite"]).lines().last().unwrap().to_string();
    carol.ok(&["accept", &link, "--name", "alice"]);
    alice.ok(&["sync"]);
    alice.ok(&["group", "create", "friends"]);
    (alice, carol)
}

/// A Welcome refused for good (carol's relay takes no mailbox message that large) is
/// reported at once, not retried forever and not silent.
#[test]
fn a_welcome_refused_for_good_is_reported() {
    let mut w = World::new();
    let b_data = w.dir.path().join("relay-b");
    let config = w.dir.path().join("b.toml");
    std::fs::write(&config, "[limits]\nmax_mailbox_message = 1000\n").expect("config");
    let relay_b = RelayProc::start_with_config(&b_data, "127.0.0.1:0", &config);
    let (alice, carol) = alice_with_carol_on(&mut w, &relay_b);
    let out = alice.ok(&["group", "add", "friends", &carol.display]);
    assert!(
        out.contains("could not be sent their invitation"),
        "the refusal is not reported: {out}"
    );
    // Reported once: the next syncs do not retry or repeat it.
    let out = alice.ok(&["sync"]);
    assert!(!out.contains("could not be sent"), "{out}");
}

/// The committer dies right after its commit landed, before the Welcome to the other relay
/// went out: the Welcome was stored with the commit and the next sync delivers it.
#[test]
fn a_welcome_owed_across_relays_survives_a_crash_after_the_commit() {
    let mut w = World::new();
    let b_data = w.dir.path().join("relay-b");
    let relay_b = RelayProc::start(&b_data, "127.0.0.1:0");
    let (alice, carol) = alice_with_carol_on(&mut w, &relay_b);
    let out = alice
        .cmd(&["group", "add", "friends", &carol.display])
        .env("SAMIZDAT_TEST_CRASH", "commit-before-drops")
        .output()
        .expect("run");
    assert!(!out.status.success(), "the crash point was not reached");
    assert_eq!(alice.members("friends").len(), 2, "the commit landed");
    assert!(
        !carol.ok(&["sync"]).contains("joined"),
        "nothing delivered yet"
    );
    alice.ok(&["sync"]);
    assert!(carol.ok(&["sync"]).contains("joined"));
    let t = w.text("after the crash");
    alice.ok(&["send", "friends", &t]);
    carol.ok(&["sync"]);
    assert_eq!(carol.texts("friends"), vec![t]);
    drop(relay_b);
    w.assert_no_plaintext();
}

/// `accept` dies after creating the conversation and before adding the inviter: the next
/// sync resumes it (commit, introduction) and both sides end up talking, each message once.
#[test]
fn an_accept_interrupted_before_its_commit_is_resumed_by_sync() {
    let mut w = World::new();
    let [alice, bob] = w.people(["alice", "bob"]);
    let link = alice.ok(&["invite"]).lines().last().unwrap().to_string();
    let out = bob
        .cmd(&["accept", &link, "--name", "alice"])
        .env("SAMIZDAT_TEST_CRASH", "accept-before-commit")
        .output()
        .expect("run");
    assert!(!out.status.success(), "the crash point was not reached");
    // Half-way: bob has the conversation, alice has nothing yet.
    assert!(!alice.ok(&["sync"]).contains("new contact"));
    bob.ok(&["sync"]);
    let out = alice.ok(&["sync"]);
    assert!(out.contains("new contact"), "{out}");
    let t1 = w.text("from bob");
    let t2 = w.text("from alice");
    bob.ok(&["send", "alice", &t1]);
    alice.ok(&["send", &bob.display, &t2]);
    alice.ok(&["sync"]);
    bob.ok(&["sync"]);
    assert_eq!(alice.texts(&bob.display), vec![t1.clone(), t2.clone()]);
    assert_eq!(bob.texts("alice"), vec![t1, t2]);
    // A second sync resumes nothing more.
    assert_eq!(alice.members(&bob.display).len(), 2);
    w.assert_no_plaintext();
}

/// A member whose Welcome expired before they ever synced shows as not joined, and any
/// member can send them a fresh Welcome without a new invite; they then join and read.
#[test]
fn a_member_who_never_joined_can_be_sent_a_fresh_welcome() {
    let mut w = World::new();
    let data = w.dir.path().join("short-ttl");
    let config = w.dir.path().join("ttl.toml");
    std::fs::write(&config, "[limits]\nmailbox_ttl_secs = 2\n").expect("config");
    w.relay = RelayProc::start_with_config(&data, "127.0.0.1:0", &config);
    let [alice, carol] = w.people(["alice", "carol"]);
    w.connect(&alice, &carol);
    alice.ok(&["group", "create", "friends"]);
    alice.ok(&["group", "add", "friends", &carol.display]);
    // carol is away until her Welcome has expired.
    std::thread::sleep(std::time::Duration::from_secs(4));
    assert!(!carol.ok(&["sync"]).contains("joined"));
    let members = alice.ok(&["group", "members", "friends"]);
    assert!(members.contains("not joined yet"), "{members}");
    alice.ok(&["group", "readd", "friends", &carol.display]);
    assert!(carol.ok(&["sync"]).contains("joined"));
    let t = w.text("welcome back");
    alice.ok(&["send", "friends", &t]);
    carol.ok(&["sync"]);
    assert_eq!(carol.texts("friends"), vec![t]);
    alice.ok(&["sync"]);
    let members = alice.ok(&["group", "members", "friends"]);
    assert!(!members.contains("not joined yet"), "{members}");
    w.assert_no_plaintext();
}

/// The introduction after an accept is stored before it is sent: a client that dies right
/// before sending it delivers it on its next sync, and the inviter sees the new contact once.
#[test]
fn an_introduction_interrupted_before_it_was_sent_is_delivered_by_sync() {
    let mut w = World::new();
    let [alice, bob] = w.people(["alice", "bob"]);
    let link = alice.ok(&["invite"]).lines().last().unwrap().to_string();
    let out = bob
        .cmd(&["accept", &link, "--name", "alice"])
        .env("SAMIZDAT_TEST_CRASH", "send-before-append")
        .output()
        .expect("run");
    assert!(!out.status.success(), "the crash point was not reached");
    let out = alice.ok(&["sync"]);
    assert!(!out.contains("new contact"), "{out}");
    bob.ok(&["sync"]);
    let out = alice.ok(&["sync"]);
    assert_eq!(out.matches("new contact").count(), 1, "{out}");
    assert!(alice.ok(&["sync"]).contains("nothing new"));
    let t = w.text("hello after the crash");
    alice.ok(&["send", &bob.display, &t]);
    bob.ok(&["sync"]);
    assert_eq!(bob.texts("alice"), vec![t]);
}

/// Same-relay group add, the committer dies right after the commit: the Welcome went with
/// the commit, and the group's name (queued in the commit's transaction) follows on the next
/// sync, so the new member ends up in a named group, not a "new-…" one.
#[test]
fn a_same_relay_add_interrupted_after_its_commit_completes() {
    let mut w = World::new();
    let [alice, bob] = w.people(["alice", "bob"]);
    w.connect(&alice, &bob);
    alice.ok(&["group", "create", "friends"]);
    let out = alice
        .cmd(&["group", "add", "friends", &bob.display])
        .env("SAMIZDAT_TEST_CRASH", "commit-before-drops")
        .output()
        .expect("run");
    assert!(!out.status.success(), "the crash point was not reached");
    alice.ok(&["sync"]);
    let out = bob.ok(&["sync"]);
    assert!(out.contains("group is called friends"), "{out}");
    let t = w.text("named and working");
    alice.ok(&["send", "friends", &t]);
    bob.ok(&["sync"]);
    assert_eq!(bob.texts("friends"), vec![t]);
}

/// The committer dies after the relay accepted its commit and before it stored the new
/// state: the commit was stored as pending first, so the next sync recognises it in the log
/// as its own and applies it — the group goes on (previously: "rejected entry", then lost).
#[test]
fn a_crash_after_the_relay_accepted_our_commit_is_recovered() {
    let mut w = World::new();
    let [alice, bob] = w.people(["alice", "bob"]);
    w.connect(&alice, &bob);
    alice.ok(&["group", "create", "friends"]);
    let out = alice
        .cmd(&["group", "add", "friends", &bob.display])
        .env("SAMIZDAT_TEST_CRASH", "commit-after-append")
        .output()
        .expect("run");
    assert!(!out.status.success(), "the crash point was not reached");
    let out = alice.ok(&["sync"]);
    assert!(!out.contains("rejected"), "{out}");
    assert_eq!(alice.members("friends").len(), 2);
    assert!(bob.ok(&["sync"]).contains("joined"));
    let t1 = w.text("after the recovered commit");
    alice.ok(&["send", "friends", &t1]);
    let t2 = w.text("and back");
    bob.ok(&["send", "friends", &t2]);
    alice.ok(&["sync"]);
    bob.ok(&["sync"]);
    assert_eq!(bob.texts("friends"), vec![t1.clone(), t2.clone()]);
    assert_eq!(alice.texts("friends"), vec![t1, t2]);
}

/// A leave notice is kept until the leaver is removed: a member whose sync read the notice
/// but stopped before committing (a crash, an outage) removes the leaver on its next sync,
/// and a send in between removes them first. Before, the leaver was only remembered in
/// memory for the sync that read the notice and stayed in the group for good.
#[test]
fn a_leave_notice_read_before_a_crash_still_removes_the_leaver() {
    let mut w = World::new();
    let [alice, bob, carol, dave] = w.people(["alice", "bob", "carol", "dave"]);
    w.connect(&alice, &bob);
    w.connect(&alice, &carol);
    w.connect(&alice, &dave);
    alice.ok(&["group", "create", "friends"]);
    alice.ok(&[
        "group",
        "add",
        "friends",
        &bob.display,
        &carol.display,
        &dave.display,
    ]);
    for p in [&bob, &carol, &dave] {
        p.ok(&["sync"]);
    }
    carol.ok(&["group", "leave", "friends"]);
    // bob reads the notice and "crashes" before committing the removal.
    let out = sync_with(&bob, "SAMIZDAT_TEST_SKIP_REMOVALS", "1");
    assert!(out.contains("left"), "{out}");
    assert_eq!(bob.members("friends").len(), 4, "not removed yet");
    // The next send by bob removes carol before encrypting anything.
    let t = w.text("after carol left");
    bob.ok(&["send", "friends", &t]);
    assert_eq!(
        bob.members("friends").len(),
        3,
        "carol was not removed first"
    );
    carol.ok(&["sync"]);
    assert!(!carol.texts("friends").contains(&t));
    alice.ok(&["sync"]);
    assert_eq!(alice.texts("friends").last(), Some(&t));

    // The same with a plain sync: dave leaves, alice reads it and stops, then syncs again.
    dave.ok(&["group", "leave", "friends"]);
    let out = sync_with(&alice, "SAMIZDAT_TEST_SKIP_REMOVALS", "1");
    assert!(out.contains("left"), "{out}");
    assert_eq!(alice.members("friends").len(), 3);
    alice.ok(&["sync"]);
    assert_eq!(
        alice.members("friends").len(),
        2,
        "dave was not removed by the next sync"
    );
    bob.ok(&["sync"]);
    assert_eq!(bob.members("friends").len(), 2);
    w.assert_no_plaintext();
}

/// A member whose Welcome could not be processed is sent a fresh one automatically, by the
/// member who added them, once the re-send delay has passed; once they have joined, nothing
/// more is sent.
#[test]
fn a_member_who_never_joined_is_sent_a_fresh_welcome_automatically() {
    let mut w = World::new();
    let [alice, carol] = w.people(["alice", "carol"]);
    w.connect(&alice, &carol);
    alice.ok(&["group", "create", "friends"]);
    alice.ok(&["group", "add", "friends", &carol.display]);
    let out = sync_with(&carol, "SAMIZDAT_TEST_LOSE_WELCOMES", "1");
    assert!(!out.contains("joined"), "{out}");
    // Within the delay: nothing is re-sent.
    let out = alice.ok(&["sync"]);
    assert!(!out.contains("fresh invitation"), "{out}");
    let out = sync_with(&alice, "SAMIZDAT_READD_AFTER_SECS", "0");
    assert!(out.contains("sent them a fresh invitation"), "{out}");
    assert!(carol.ok(&["sync"]).contains("joined"));
    let t = w.text("after the fresh welcome");
    alice.ok(&["send", "friends", &t]);
    carol.ok(&["sync"]);
    assert_eq!(carol.texts("friends"), vec![t]);
    let out = sync_with(&alice, "SAMIZDAT_READD_AFTER_SECS", "0");
    assert!(!out.contains("fresh invitation"), "carol joined: {out}");
    let members = alice.ok(&["group", "members", "friends"]);
    assert!(!members.contains("not joined yet"), "{members}");
    w.assert_no_plaintext();
}

/// A message the relay refuses for good is marked failed (and kept in the history); "send
/// again" (`message_retry`, the app's retry button) sends it as a new message once the relay
/// takes it, and the failed copy goes.
#[test]
fn a_refused_message_is_marked_failed_and_can_be_sent_again() {
    let mut w = World::new();
    let [alice, bob] = w.people(["alice", "bob"]);
    w.connect(&alice, &bob);
    // The relay restarts with a small entry limit: a long message is refused.
    let data = w.relay.data.clone();
    let addr = w.relay.addr.clone();
    w.relay.kill();
    let config = w.dir.path().join("small.toml");
    std::fs::write(&config, "[limits]\nmax_application_entry = 2000\n").expect("config");
    w.relay = RelayProc::start_with_config(&data, &addr, &config);
    let long = format!("{} {}", w.text("long"), "y".repeat(3000));
    let out = alice.run(&["send", &bob.display, &long]);
    let history = alice.history(&bob.display);
    let failed = history.last().expect("kept in the history");
    assert_eq!(failed["text"], long.as_str(), "{out:?}");
    assert_eq!(failed["failed"]["kind"], "relay", "{failed}");
    let id = failed["id"].as_str().unwrap().to_string();
    // Back to the default limits; send it again.
    w.relay.kill();
    w.relay = RelayProc::start(&data, &addr);
    let answer = rpc_once(
        &alice,
        "message_retry",
        serde_json::json!({ "message_id": id }),
    );
    assert!(answer["result"]["message_id"].is_string(), "{answer}");
    let history = alice.history(&bob.display);
    assert_eq!(
        history
            .iter()
            .filter(|m| m["text"] == long.as_str())
            .count(),
        1
    );
    let sent = history.last().unwrap();
    assert!(
        sent["failed"].is_null() && sent["delivered"] == true,
        "{sent}"
    );
    bob.ok(&["sync"]);
    assert_eq!(bob.texts("alice").last(), Some(&long));
    // Only a failed message of ours can be sent again.
    let answer = rpc_once(
        &alice,
        "message_retry",
        serde_json::json!({ "message_id": sent["id"] }),
    );
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("only a message of yours that failed"),
        "{answer}"
    );
    w.assert_no_plaintext();
}

/// One JSON-RPC call through `samizdat rpc`; the whole response object.
pub(crate) fn rpc_once(p: &Person, method: &str, params: serde_json::Value) -> serde_json::Value {
    use std::io::Write;
    let req = serde_json::json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params });
    let mut child = p
        .cmd(&["rpc"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("rpc");
    {
        let mut stdin = child.stdin.take().expect("stdin");
        writeln!(stdin, "{req}").expect("write");
    }
    let out = child.wait_with_output().expect("rpc output");
    let line = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    serde_json::from_str(&line).expect("a JSON-RPC response")
}

/// `sync` with one fault-injection or tuning variable set; must succeed; its stdout.
fn sync_with(p: &Person, key: &str, value: &str) -> String {
    let out = p.cmd(&["sync"]).env(key, value).output().expect("sync");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}
