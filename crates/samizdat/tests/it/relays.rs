//! Several independent relays per profile, and conversations moving off a blocked relay.
//! "Blocked" is a relay killed with its port held open by a process that accepts and drops
//! every connection (what a censor's reset looks like to the client).

use std::time::{Duration, Instant};

use crate::harness::{self, Person, PortHold, RelayProc, World};

/// A person with a mailbox on each of `relays` (the first is the primary).
fn person_on(w: &mut World, name: &str, relays: &[&str]) -> Person {
    let p = Person {
        name: name.into(),
        display: format!("{name}-display-{}", &harness::hex_rand()[..6]),
        home: w.dir.path().join(name),
    };
    let mut args = vec!["init"];
    for r in relays {
        args.extend(["--relay", r]);
    }
    args.extend(["--name", &p.display]);
    p.ok(&args);
    w.secrets.push(p.display.clone());
    p
}

fn relay(w: &World, name: &str) -> RelayProc {
    RelayProc::start(&w.dir.path().join(name), "127.0.0.1:0")
}

/// Stop a relay and hold its port: connections are accepted and dropped at once.
fn block(r: &mut RelayProc) -> PortHold {
    r.kill();
    PortHold::new(&r.addr)
}

/// The relay a conversation's log is on, as `list --json` reports it.
fn conv_relay(p: &Person, name: &str) -> String {
    p.ok(&["list", "--json"])
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json"))
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("{} has no conversation {name}", p.name))["relay"]
        .as_str()
        .expect("relay")
        .to_string()
}

/// Sync both until `done` holds (bounded: a minute).
fn sync_until(a: &Person, b: &Person, what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        a.ok(&["sync"]);
        b.ok(&["sync"]);
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!("{what}: not within a minute");
}

/// Alice on A+B, bob on B+C. They connect by an invite while A is blocked: bob reaches alice
/// through B, alice still receives the Welcome and the introduction through her mailbox on
/// B, and everything else (a 1:1 chat, a group) keeps working on B.
#[test]
fn independent_relays_keep_a_person_reachable_when_one_is_blocked() {
    let mut w = World::new();
    let a_url = w.relay.url.clone();
    let relay_b = relay(&w, "relay-b");
    let relay_c = relay(&w, "relay-c");
    let alice = person_on(&mut w, "alice", &[&a_url, &relay_b.url]);
    let bob = person_on(&mut w, "bob", &[&relay_b.url, &relay_c.url]);
    let listed: Vec<String> = alice
        .ok(&["relays", "list"])
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed[0].contains(&w.relay.addr) && listed[1].contains(&relay_b.addr));
    let link = alice.ok(&["invite"]).lines().last().unwrap().to_string();
    let invite = samizdat_core::Invite::parse(&link).unwrap();
    assert_eq!(invite.mailboxes().len(), 2, "the link lists both relays");
    assert_ne!(
        invite.mailboxes()[0].mailbox,
        invite.mailboxes()[1].mailbox,
        "one mailbox id per relay, so the relays cannot link them"
    );

    let _hold = block(&mut w.relay);
    bob.ok(&["accept", &link, "--name", "alice"]);
    assert!(conv_relay(&bob, "alice").contains(&relay_b.addr));
    let out = alice.ok(&["sync"]);
    assert!(out.contains("reading your other relays"), "{out}");
    assert!(
        alice.ok(&["contacts"]).contains(&bob.display),
        "alice got no introduction through B: {out}"
    );
    let hi = w.text("hello through B");
    bob.ok(&["send", "alice", &hi]);
    assert!(alice.ok(&["sync"]).contains(&hi));
    let back = w.text("answer through B");
    alice.ok(&["send", &bob.display, &back]);
    assert!(bob.ok(&["sync"]).contains(&back));

    // A group: made on alice's first relay that answers (B); bob's Welcome reaches him.
    alice.ok(&["group", "create", "club"]);
    assert!(conv_relay(&alice, "club").contains(&relay_b.addr));
    alice.ok(&["group", "add", "club", &bob.display]);
    assert!(bob.ok(&["sync"]).contains("joined"));
    let t = w.text("club on B");
    alice.ok(&["send", "club", &t]);
    bob.ok(&["sync"]);
    assert_eq!(bob.texts("club"), vec![t]);

    // Relays come and go: bob adds A's replacement (here: C is already his; he drops it and
    // adds it back), and the primary can be removed when another remains.
    bob.ok(&["relays", "remove", &relay_c.url]);
    assert_eq!(bob.ok(&["relays", "list"]).lines().count(), 1);
    let e = bob.fails(&["relays", "remove", &relay_b.url]);
    assert!(e.contains("only relay"), "{e}");
    bob.ok(&["relays", "add", &relay_c.url]);
    bob.ok(&["relays", "remove", &relay_b.url]);
    let now: Vec<String> = bob
        .ok(&["relays", "list"])
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(now.len(), 1);
    assert!(now[0].contains(&relay_c.addr), "{now:?}");
    // bob told alice where he is now: a new group reaches him on C.
    alice.ok(&["sync"]);
    alice.ok(&["group", "create", "club2"]);
    alice.ok(&["group", "add", "club2", &bob.display]);
    assert!(bob.ok(&["sync"]).contains("joined"));
    w.assert_no_plaintext();
}

/// Alice and bob chat on A; both also have a mailbox on B. A is blocked: after the
/// configured time the conversation moves to B (the relay they share), both keep chatting
/// with history intact, and a message bob sent during the outage is delivered after the
/// move and shown once.
#[test]
fn a_conversation_moves_off_a_blocked_relay() {
    let mut w = World::new();
    let a_url = w.relay.url.clone();
    let relay_b = relay(&w, "relay-b");
    let alice = person_on(&mut w, "alice", &[&a_url, &relay_b.url]);
    let bob = person_on(&mut w, "bob", &[&a_url, &relay_b.url]);
    w.connect(&alice, &bob);
    assert!(conv_relay(&alice, &bob.display).contains(&w.relay.addr));
    let m1 = w.text("before the block 1");
    let m2 = w.text("before the block 2");
    alice.ok(&["send", &bob.display, &m1]);
    bob.ok(&["sync"]);
    bob.ok(&["send", "alice", &m2]);
    alice.ok(&["sync"]);
    for p in [&alice, &bob] {
        p.ok(&["config", "move-after", "2s"]);
    }

    let _hold = block(&mut w.relay);
    let m3 = w.text("sent during the outage");
    let out = bob.run(&["send", "alice", &m3]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot reach"),
        "the send should be queued while A is blocked"
    );
    let blocked = Instant::now();
    sync_until(&alice, &bob, "the move", || {
        conv_relay(&alice, &bob.display).contains(&relay_b.addr)
            && conv_relay(&bob, "alice").contains(&relay_b.addr)
            && alice.texts(&bob.display).contains(&m3)
    });
    assert!(
        blocked.elapsed() >= Duration::from_secs(2),
        "moved too early"
    );
    let m4 = w.text("after the move");
    alice.ok(&["send", &bob.display, &m4]);
    bob.ok(&["sync"]);
    let want = vec![m1, m2, m3.clone(), m4];
    assert_eq!(alice.texts(&bob.display), want);
    assert_eq!(bob.texts("alice"), want);
    let h = alice.history(&bob.display);
    assert_eq!(h.iter().filter(|m| m["text"] == m3.as_str()).count(), 1);
    w.assert_no_plaintext();
}

/// A is blocked and alice and bob both move the conversation at once, alice to B and bob
/// to C, each sending a message on the log they moved to. They end on one log (the relay
/// the rule picks: the lowest hash of its address), and every message is shown once on
/// both sides.
#[test]
fn concurrent_moves_converge_on_one_log() {
    let mut w = World::new();
    let a_url = w.relay.url.clone();
    let relay_b = relay(&w, "relay-b");
    let relay_c = relay(&w, "relay-c");
    let alice = person_on(&mut w, "alice", &[&a_url, &relay_b.url]);
    let bob = person_on(&mut w, "bob", &[&a_url, &relay_c.url]);
    w.connect(&alice, &bob);
    let m1 = w.text("before the race");
    alice.ok(&["send", &bob.display, &m1]);
    bob.ok(&["sync"]);
    for p in [&alice, &bob] {
        p.ok(&["config", "move-after", "off"]);
    }
    let _hold = block(&mut w.relay);

    let a_move = alice
        .cmd(&["move", &bob.display, "--to", &relay_b.url])
        .spawn()
        .unwrap();
    let b_move = bob
        .cmd(&["move", "alice", "--to", &relay_c.url])
        .spawn()
        .unwrap();
    for mut c in [a_move, b_move] {
        assert!(c.wait().unwrap().success());
    }
    let from_alice = w.text("alice on her log");
    let from_bob = w.text("bob on his log");
    alice.ok(&["send", &bob.display, &from_alice]);
    bob.ok(&["send", "alice", &from_bob]);
    sync_until(&alice, &bob, "one log", || {
        conv_relay(&alice, &bob.display) == conv_relay(&bob, "alice")
            && alice.texts(&bob.display).contains(&from_bob)
            && bob.texts("alice").contains(&from_alice)
    });
    let on = conv_relay(&alice, &bob.display);
    assert!(
        on.contains(&relay_b.addr) || on.contains(&relay_c.addr),
        "{on}"
    );
    let after = w.text("after the race");
    bob.ok(&["send", "alice", &after]);
    alice.ok(&["sync"]);
    for (p, target) in [(&alice, bob.display.as_str()), (&bob, "alice")] {
        let texts = p.texts(target);
        for t in [&m1, &from_alice, &from_bob] {
            assert_eq!(
                texts.iter().filter(|x| *x == t).count(),
                1,
                "{} shows {t:?} not exactly once: {texts:?}",
                p.name
            );
        }
        assert_eq!(texts.first(), Some(&m1));
    }
    assert!(alice.texts(&bob.display).contains(&after));
    w.assert_no_plaintext();
}

/// The KeyPackage pool of a second mailbox is kept like the primary's: drained by someone,
/// refilled by the next sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_mailboxs_key_package_pool_is_refilled() {
    let mut w = World::new();
    let a_url = w.relay.url.clone();
    let relay_b = relay(&w, "relay-b");
    let alice = person_on(&mut w, "alice", &[&a_url, &relay_b.url]);
    let link = alice.ok(&["invite"]).lines().last().unwrap().to_string();
    let second = samizdat_core::Invite::parse(&link).unwrap().mailboxes()[1].clone();
    let b = samizdat_core::relay_client::RelayClient::new(&second.relay).unwrap();
    let mut drained = false;
    for _ in 0..25 {
        if b.claim_key_package(&second.mailbox)
            .await
            .unwrap()
            .last_resort
        {
            drained = true;
            break;
        }
    }
    assert!(drained, "the second pool never ran dry");
    alice.ok(&["sync"]);
    let kp = b.claim_key_package(&second.mailbox).await.unwrap();
    assert!(!kp.last_resort, "the second pool was not refilled");
}
