//! Several devices of one person (issue 14): linking by a one-time link, messages on every
//! device, "me" for the person's own messages, the history transfer, groups with a member on
//! two devices, revocation, and every bad link refused without changing anything.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use samizdat_proto::Bytes;

use crate::harness::{Person, World};

/// A device home that does not exist yet (`device join` creates the profile).
fn device(w: &World, name: &str) -> Person {
    Person {
        name: name.to_string(),
        display: name.to_string(),
        home: w.dir.path().join(name),
    }
}

fn link_of(p: &Person) -> String {
    p.ok(&["device", "link"])
        .lines()
        .last()
        .expect("link line")
        .to_string()
}

fn start_join(dev: &Person, link: &str, timeout: &str) -> Child {
    dev.cmd(&[
        "device",
        "join",
        link,
        "--name",
        &dev.name,
        "--yes",
        "--timeout",
        timeout,
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn device join")
}

/// Sync `first` until the joining device is done; returns its exit status and output.
fn finish_join(first: &Person, mut child: Child) -> (bool, String, String) {
    let deadline = Instant::now() + Duration::from_secs(150);
    let mut seen = String::new();
    loop {
        if let Some(_status) = child.try_wait().expect("wait") {
            break;
        }
        assert!(Instant::now() < deadline, "device join never finished");
        seen.push_str(&first.ok(&["sync"]));
        std::thread::sleep(Duration::from_millis(300));
    }
    let out = child.wait_with_output().expect("output");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        format!(
            "{}\n(the first device saw: {seen})",
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Link `dev` to `first`, requiring success.
fn link(first: &Person, dev: &Person) -> String {
    let child = start_join(dev, &link_of(first), "120");
    let (ok, out, err) = finish_join(first, child);
    assert!(ok, "device join failed: {out}{err}");
    out
}

fn devices(p: &Person) -> Vec<serde_json::Value> {
    p.ok(&["device", "list", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect()
}

fn count(texts: &[String], t: &str) -> usize {
    texts.iter().filter(|x| x.as_str() == t).count()
}

fn safety(p: &Person, alias: &str) -> String {
    p.ok(&["verify", alias])
        .lines()
        .last()
        .expect("number")
        .to_string()
}

#[test]
fn a_linked_laptop_gets_history_messages_and_answers_as_the_same_person_until_revoked() {
    let mut w = World::new();
    let [alice, bob] = w.people(["alice", "bob"]);
    w.connect(&alice, &bob);
    let number = safety(&bob, "alice");
    let before = w.text("from before the laptop");
    bob.ok(&["send", "alice", &before]);
    alice.ok(&["sync"]);
    let mine = w.text("alice wrote this before too");
    alice.ok(&["send", &bob.display, &mine]);

    let laptop = device(&w, "laptop");
    let out = link(&alice, &laptop);
    assert!(out.contains("linked as a device of"), "{out}");
    // Same person: the same fingerprint, the same safety number for bob.
    assert_eq!(
        laptop.ok(&["whoami"]).lines().last().unwrap(),
        alice.ok(&["whoami"]).lines().last().unwrap()
    );
    assert_eq!(safety(&laptop, &bob.display), safety(&alice, &bob.display));
    // The history came along, with the conversation and contact names.
    let h = laptop.history(&bob.display);
    let texts: Vec<&str> = h.iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(texts, vec![before.as_str(), mine.as_str()], "{h:?}");
    assert_eq!(h[0]["from"], bob.display.as_str());
    assert_eq!(h[1]["from"], "me");
    assert!(laptop.ok(&["contacts"]).contains(&bob.display));
    let list = devices(&alice);
    assert_eq!(list.len(), 2, "{list:?}");
    assert!(
        list.iter()
            .any(|d| d["name"] == "laptop" && d["this"] == false)
    );
    let on_laptop = devices(&laptop);
    assert_eq!(on_laptop.len(), 2, "{on_laptop:?}");
    assert!(
        on_laptop
            .iter()
            .any(|d| d["name"] == "laptop" && d["this"] == true)
    );

    // bob → alice: both devices show it, once.
    let hello = w.text("hello both of you");
    bob.ok(&["send", "alice", &hello]);
    alice.ok(&["sync"]);
    laptop.ok(&["sync"]);
    alice.ok(&["sync"]);
    // Read on the phone: read on the laptop after they sync.
    let unread = |p: &Person| -> u64 {
        p.ok(&["list", "--json"])
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|c| c["name"] == bob.display.as_str())
            .unwrap()["unread"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(unread(&laptop), 1);
    assert_eq!(count(&alice.texts(&bob.display), &hello), 1);
    alice.ok(&["sync"]);
    laptop.ok(&["sync"]);
    assert_eq!(unread(&laptop), 0);
    assert_eq!(count(&laptop.texts(&bob.display), &hello), 1);

    // The laptop answers: bob sees alice; alice's phone shows it as "me".
    let reply = w.text("answered from the laptop");
    laptop.ok(&["send", &bob.display, &reply]);
    assert!(bob.ok(&["sync"]).contains(&reply));
    let bh = bob.history("alice");
    let last = bh.last().unwrap();
    assert_eq!(last["text"], reply.as_str());
    assert_eq!(last["from"], "alice");
    alice.ok(&["sync"]);
    let ah = alice.history(&bob.display);
    let from_laptop = ah.iter().find(|m| m["text"] == reply.as_str()).unwrap();
    assert_eq!(from_laptop["from"], "me", "{ah:?}");
    // bob still sees two people in the chat.
    let convs: Vec<serde_json::Value> = bob
        .ok(&["list", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(convs[0]["members"], 2, "{convs:?}");

    // Revoke the laptop from the phone: it reads nothing sent after, and cannot send.
    let id = list.iter().find(|d| d["this"] == false).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    alice.ok(&["device", "revoke", &id]);
    assert!(
        devices(&alice)
            .iter()
            .any(|d| d["id"] == id.as_str() && d["revoked"] == true)
    );
    let after = w.text("sent after the revocation");
    bob.ok(&["sync"]);
    bob.ok(&["send", "alice", &after]);
    laptop.ok(&["sync"]);
    assert_eq!(count(&laptop.texts(&bob.display), &after), 0);
    laptop.fails(&["send", &bob.display, "still here?"]);
    alice.ok(&["sync"]);
    assert_eq!(count(&alice.texts(&bob.display), &after), 1);
    // bob's safety number for alice never changed.
    assert_eq!(safety(&bob, "alice"), number);
    alice.fails(&["device", "revoke", &id]);
    w.assert_no_plaintext();
}

#[test]
fn a_group_of_three_people_with_one_on_two_devices() {
    let mut w = World::new();
    let [alice, bob, carol] = w.people(["alice", "bob", "carol"]);
    w.connect(&bob, &alice);
    w.connect(&bob, &carol);
    let laptop = device(&w, "laptop");
    link(&alice, &laptop);
    bob.ok(&["group", "create", "trio"]);
    bob.ok(&["group", "add", "trio", &alice.display, &carol.display]);
    // alice's phone joins (bob is a contact) and adds her laptop.
    alice.ok(&["sync"]);
    laptop.ok(&["sync"]);
    carol.ok(&["sync"]);
    bob.ok(&["sync"]);
    assert_eq!(bob.members("trio").len(), 3, "{:?}", bob.members("trio"));
    assert_eq!(laptop.members("trio").len(), 3);
    // bob sees three people; asked, alice has two devices.
    let listed: Vec<serde_json::Value> = bob
        .ok(&["group", "members", "trio", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let devs: Vec<u64> = listed
        .iter()
        .map(|m| m["devices"].as_u64().unwrap())
        .collect();
    assert_eq!(devs.iter().sum::<u64>(), 4, "{listed:?}");
    let hi = w.text("hello trio");
    carol.ok(&["send", "trio", &hi]);
    alice.ok(&["sync"]);
    laptop.ok(&["sync"]);
    assert_eq!(count(&alice.texts("trio"), &hi), 1);
    assert_eq!(count(&laptop.texts("trio"), &hi), 1);
    let from_laptop = w.text("the laptop in the group");
    laptop.ok(&["send", "trio", &from_laptop]);
    bob.ok(&["sync"]);
    carol.ok(&["sync"]);
    assert_eq!(count(&carol.texts("trio"), &from_laptop), 1);
    // Removing alice removes both of her devices.
    bob.ok(&["group", "remove", "trio", &alice.display]);
    let gone = w.text("after alice left");
    bob.ok(&["send", "trio", &gone]);
    alice.ok(&["sync"]);
    laptop.ok(&["sync"]);
    assert_eq!(count(&alice.texts("trio"), &gone), 0);
    assert_eq!(count(&laptop.texts("trio"), &gone), 0);
    assert_eq!(bob.members("trio").len(), 2);
}

#[test]
fn leaving_a_group_on_one_device_leaves_it_on_all() {
    let mut w = World::new();
    let [alice, bob] = w.people(["alice", "bob"]);
    w.connect(&bob, &alice);
    let laptop = device(&w, "laptop");
    link(&alice, &laptop);
    bob.ok(&["group", "create", "pair"]);
    bob.ok(&["group", "add", "pair", &alice.display]);
    alice.ok(&["sync"]);
    laptop.ok(&["sync"]);
    laptop.ok(&["group", "leave", "pair"]);
    let out = alice.ok(&["sync"]);
    assert!(
        out.contains("you left this group on your other device"),
        "{out}"
    );
    alice.fails(&["send", "pair", "still here?"]);
    // bob removes the person: both devices.
    bob.ok(&["sync"]);
    bob.ok(&["sync"]);
    assert_eq!(bob.members("pair").len(), 1, "{:?}", bob.members("pair"));
    let after = w.text("after alice left the pair");
    bob.ok(&["send", "pair", &after]);
    alice.ok(&["sync"]);
    laptop.ok(&["sync"]);
    assert_eq!(count(&alice.texts("pair"), &after), 0);
    assert_eq!(count(&laptop.texts("pair"), &after), 0);
}

#[test]
fn contacts_made_and_verified_after_linking_reach_the_other_device() {
    let mut w = World::new();
    let [alice, bob] = w.people(["alice", "bob"]);
    w.connect(&alice, &bob);
    let laptop = device(&w, "laptop");
    link(&alice, &laptop);
    // carol accepts alice's invite after the laptop was linked.
    let carol = w.person("carol");
    w.connect(&alice, &carol);
    laptop.ok(&["sync"]);
    assert!(laptop.ok(&["contacts"]).contains(&carol.display));
    let hi = w.text("carol says hi to both");
    carol.ok(&["send", "alice", &hi]);
    laptop.ok(&["sync"]);
    assert_eq!(count(&laptop.texts(&carol.display), &hi), 1);
    assert_eq!(safety(&laptop, &carol.display), safety(&carol, "alice"));
    // Marked verified on the laptop: the phone shows it too; so is a shared setting.
    laptop.ok(&["verify", &carol.display, "--mark"]);
    laptop.ok(&["config", "move-after", "42s"]);
    laptop.ok(&["sync"]);
    alice.ok(&["sync"]);
    let contacts: Vec<serde_json::Value> = alice
        .ok(&["contacts", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let c = contacts
        .iter()
        .find(|c| c["alias"] == carol.display.as_str())
        .unwrap();
    assert_eq!(c["verified"], true, "{contacts:?}");
    let shown = alice.ok(&["config", "move-after"]);
    assert!(shown.contains("42"), "{shown}");
}

#[test]
fn a_running_service_completes_the_link_by_itself() {
    let mut w = World::new();
    let [alice, bob] = w.people(["alice", "bob"]);
    w.connect(&alice, &bob);
    let _serve = crate::service::Serve::start(&alice);
    // Through the service's socket; nobody runs `sync` on alice's side.
    let link = link_of(&alice);
    let laptop = device(&w, "laptop");
    let out = laptop.ok(&[
        "device",
        "join",
        &link,
        "--name",
        "laptop",
        "--yes",
        "--timeout",
        "60",
    ]);
    assert!(out.contains("1 conversations"), "{out}");
    assert_eq!(devices(&alice).len(), 2);
    let hi = w.text("to both while serving");
    bob.ok(&["send", "alice", &hi]);
    laptop.ok(&["sync"]);
    assert_eq!(count(&laptop.texts(&bob.display), &hi), 1);
}

#[test]
fn a_relay_that_alters_the_new_devices_key_packages_links_nothing() {
    let w = World::new();
    let proxy = crate::mitm::Proxy::start(&w.relay.url);
    // alice's relay, as her devices see it, is the hostile one.
    let alice = device(&w, "alice");
    alice.ok(&["init", "--relay", &proxy.url, "--name", "Alice"]);
    let link = link_of(&alice);
    proxy.set(crate::mitm::Mode::TamperSecondDrop);
    let laptop = device(&w, "laptop");
    let child = start_join(&laptop, &link, "15");
    let (ok, _, err) = finish_join(&alice, child);
    assert!(!ok);
    assert!(err.contains("does not open with its key"), "{err}");
    assert!(err.contains("nothing was linked"), "{err}");
    assert!(!laptop.home.join("profile.db").exists());
    assert_eq!(devices(&alice).len(), 1);
}

#[test]
fn an_invitation_that_reached_the_phone_is_accepted_on_the_laptop() {
    let mut w = World::new();
    let [alice, carol, mallory] = w.people(["alice", "carol", "mallory"]);
    let laptop = device(&w, "laptop");
    link(&alice, &laptop);
    // A single-use invite, used by carol; mallory reuses it: a request from a stranger,
    // pending on the phone (its mailbox is the invite's).
    let invite = alice.ok(&["invite"]).lines().last().unwrap().to_string();
    carol.ok(&["accept", &invite, "--name", "alice"]);
    alice.ok(&["sync"]);
    mallory.ok(&["accept", &invite, "--name", "alice"]);
    alice.ok(&["sync"]);
    let pending = |p: &Person| -> Vec<serde_json::Value> {
        p.ok(&["invitations", "--json"])
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let on_phone = pending(&alice);
    assert_eq!(on_phone.len(), 1, "{on_phone:?}");
    assert_eq!(on_phone[0]["on_other_device"], false);
    laptop.ok(&["sync"]);
    let on_laptop = pending(&laptop);
    assert_eq!(on_laptop.len(), 1, "{on_laptop:?}");
    assert_eq!(on_laptop[0]["on_other_device"], true);
    let id = on_laptop[0]["id"].as_i64().unwrap().to_string();
    assert!(
        laptop
            .ok(&["invitation", "accept", &id])
            .contains("your other device")
    );
    assert!(pending(&laptop).is_empty());
    // The phone joins when it syncs, and adds the laptop.
    let out = alice.ok(&["sync"]);
    assert!(out.contains("accepted on your other device"), "{out}");
    assert!(pending(&alice).is_empty());
    let joined = laptop.ok(&["sync"]);
    assert!(joined.contains("joined"), "{joined}");
}

/// Change one byte of a link's payload (see `device::Link::to_link`).
fn tamper(link: &str, at: usize) -> String {
    let (prefix, body) = link.split_at("samizdat://device/v1/".len());
    let mut raw = Bytes::decode(body).unwrap();
    raw[at] ^= 0x5a;
    format!("{prefix}{}", Bytes::encode(&raw))
}

#[test]
fn bad_links_are_refused_and_change_nothing() {
    let mut w = World::new();
    let [alice, bob] = w.people(["alice", "bob"]);
    w.connect(&alice, &bob);
    let good = link_of(&alice);
    let gone = |p: &Person| assert!(!p.home.join("profile.db").exists());

    // Expired (the expiry is bytes 3..11).
    let dev = device(&w, "expired");
    let mut raw = Bytes::decode(&good["samizdat://device/v1/".len()..]).unwrap();
    raw[3..11].copy_from_slice(&1u64.to_be_bytes());
    let expired = format!("samizdat://device/v1/{}", Bytes::encode(&raw));
    assert!(
        dev.fails(&["device", "join", &expired, "--name", "x", "--yes"])
            .contains("expired")
    );
    gone(&dev);
    // Not a link at all.
    assert!(
        dev.fails(&[
            "device",
            "join",
            "samizdat://device/v1/@@",
            "--name",
            "x",
            "--yes"
        ])
        .contains("not a device link")
    );

    // A wrong secret (bytes 27..59): the first device refuses; the link stays usable.
    let dev = device(&w, "wrong-code");
    let child = start_join(&dev, &tamper(&good, 30), "60");
    let (ok, _, err) = finish_join(&alice, child);
    assert!(!ok);
    assert!(err.contains("refused"), "{err}");
    gone(&dev);

    // A link for another identity (bytes 59..91): the certificate does not match it.
    let dev = device(&w, "other-identity");
    let child = start_join(&dev, &tamper(&link_of(&alice), 60), "60");
    let (ok, _, err) = finish_join(&alice, child);
    assert!(!ok);
    assert!(err.contains("another identity"), "{err}");
    gone(&dev);

    // KeyPackages substituted on the way (as a relay handing out others' would): detected,
    // no device is added.
    let dev = device(&w, "substituted");
    let child = dev
        .cmd(&[
            "device",
            "join",
            &link_of(&alice),
            "--name",
            "s",
            "--yes",
            "--timeout",
            "15",
        ])
        .env("SAMIZDAT_TEST_SUBSTITUTE_KEY_PACKAGES", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (ok, _, err) = finish_join(&alice, child);
    assert!(!ok);
    assert!(err.contains("not the new device's"), "{err}");
    assert!(err.contains("linking a device failed"), "{err}");
    gone(&dev);
    assert_eq!(devices(&alice).len(), 1, "{:?}", devices(&alice));

    // The good link works once; used again it is refused.
    let laptop = device(&w, "laptop");
    let child = start_join(&laptop, &good, "120");
    let (ok, out, err) = finish_join(&alice, child);
    assert!(ok, "{out}{err}");
    let again = device(&w, "again");
    let child = start_join(&again, &good, "60");
    let (ok, _, err) = finish_join(&alice, child);
    assert!(!ok);
    assert!(err.contains("already used"), "{err}");
    gone(&again);
    // A home that already holds a profile cannot join.
    assert!(
        laptop
            .fails(&["device", "join", &link_of(&alice), "--name", "x", "--yes"])
            .contains("already exists")
    );
    // Only the first device holds the identity key.
    assert!(laptop.fails(&["device", "link"]).contains("first device"));
    assert_eq!(devices(&alice).len(), 2);
}
