//! Several independent relays per profile (moves off a blocked relay are tested in one process:
//! `crates/samizdat-core/tests/world/relays.rs`). "Blocked" is a relay killed with its port held
//! open by a process that accepts and drops every connection (a censor's reset, to the client).

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
