//! Several devices of one person: linking by a one-time link, messages on every
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

/// The relay `p` keeps its mailbox on (from `whoami`).
fn relay_of(p: &Person) -> String {
    let who = p.ok(&["whoami"]);
    who.split_whitespace()
        .skip_while(|t| *t != "relay:")
        .nth(1)
        .expect("relay in whoami")
        .to_string()
}

/// `device join` running on a new home: the link and code it showed, the rest of its output
/// still to come.
pub(crate) struct Joining {
    child: Child,
    pub(crate) link: String,
    pub(crate) code: String,
    rest: std::thread::JoinHandle<String>,
}

/// Start `device join` for `dev` on `relay` and read its link (bounded by the process: it
/// prints the link first or fails).
pub(crate) fn start_join_on(
    dev: &Person,
    relay: &str,
    timeout: &str,
    env: &[(&str, &str)],
) -> Joining {
    use std::io::BufRead;
    let mut child = dev
        .cmd(&[
            "device",
            "join",
            "--name",
            &dev.name,
            "--relay",
            relay,
            "--timeout",
            timeout,
        ])
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn device join");
    let mut reader = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut seen = String::new();
    let link = loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).expect("read");
        if n == 0 {
            let out = child.wait_with_output().expect("output");
            panic!(
                "device join printed no link: {seen}{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        seen.push_str(&line);
        if line.starts_with("samizdat://device/") {
            break line.trim().to_string();
        }
    };
    let code = seen
        .split("code ")
        .nth(1)
        .and_then(|r| r.get(..7))
        .expect("the code next to the link")
        .to_string();
    let rest = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut reader, &mut s);
        s
    });
    Joining {
        child,
        link,
        code,
        rest,
    }
}

fn start_join(first: &Person, dev: &Person, timeout: &str) -> Joining {
    start_join_on(dev, &relay_of(first), timeout, &[])
}

/// Wait (bounded) for a joining device to finish; its exit status and output.
pub(crate) fn finish_join(mut j: Joining) -> (bool, String, String) {
    let deadline = Instant::now() + Duration::from_secs(200);
    let status = loop {
        if let Some(status) = j.child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = j.child.kill();
            panic!("device join never finished");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    if let Some(mut e) = j.child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    (status.success(), j.rest.join().expect("stdout"), err)
}

/// Link `dev` to `first` (the new device shows its link, `first` adds it), requiring success.
fn link(first: &Person, dev: &Person) -> String {
    let j = start_join(first, dev, "120");
    first.ok(&["device", "add", &j.link, "--yes"]);
    let (ok, out, err) = finish_join(j);
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

#[test]
fn a_running_service_completes_the_link_by_itself() {
    let mut w = World::new();
    let [alice, bob] = w.people(["alice", "bob"]);
    w.connect(&alice, &bob);
    let _serve = crate::service::Serve::start(&alice);
    // Through the service's socket: the service answers the new device by itself.
    let laptop = device(&w, "laptop");
    let j = start_join(&alice, &laptop, "60");
    alice.ok(&["device", "add", &j.link, "--yes"]);
    let (ok, out, err) = finish_join(j);
    assert!(ok, "{out}{err}");
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
    // alice's relay, as her devices see it, is the hostile one: the new device's KeyPackages
    // reach her one-time mailbox through it.
    let alice = device(&w, "alice");
    alice.ok(&["init", "--relay", &proxy.url, "--name", "Alice"]);
    let laptop = device(&w, "laptop");
    let j = start_join_on(&laptop, &w.relay.url, "15", &[]);
    proxy.set(crate::mitm::Mode::TamperFirstDrop);
    let err = alice.fails(&["device", "add", &j.link, "--yes", "--timeout", "15"]);
    assert!(err.contains("does not open with its key"), "{err}");
    assert!(err.contains("nothing was added"), "{err}");
    let (ok, _, err) = finish_join(j);
    assert!(!ok);
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

/// A link made by hand (as an attacker or a damaged copy would have it).
fn crafted_link(relay: &str, expires_at: u64) -> samizdat_core::device::Link {
    samizdat_core::device::Link {
        v: 2,
        relay: relay.to_string(),
        mailbox: samizdat_proto::Id::from_bytes([7; 16]),
        hpke: Bytes(vec![1; 1216]),
        secret: Bytes(vec![2; 32]),
        device_key: Bytes(vec![3; 32]),
        name: "crafted".into(),
        cipher_suite: u16::from(samizdat_core::mls::DEFAULT_CIPHERSUITE),
        expires_at,
    }
}

#[test]
fn bad_links_are_refused_and_change_nothing() {
    let mut w = World::new();
    let [alice, bob] = w.people(["alice", "bob"]);
    w.connect(&alice, &bob);
    let gone = |p: &Person| assert!(!p.home.join("profile.db").exists());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();

    // Expired, made the old way, not a link at all: each says so.
    let expired = crafted_link(&w.relay.url, now - 1).to_link();
    assert!(
        alice
            .fails(&["device", "add", &expired, "--yes"])
            .contains("expired")
    );
    assert!(
        alice
            .fails(&["device", "add", "samizdat://device/v1/AAAA", "--yes"])
            .contains("made the old way")
    );
    assert!(
        alice
            .fails(&["device", "add", "samizdat://device/v2/@@", "--yes"])
            .contains("not a device link")
    );
    // A changed link shows another code than the new device's screen.
    let fresh = crafted_link(&w.relay.url, now + 100);
    let mut changed = fresh.clone();
    changed.hpke.0[10] ^= 0x5a;
    let shown = |l: &samizdat_core::device::Link| {
        String::from_utf8(alice.run(&["device", "add", &l.to_link()]).stdout).unwrap()
    };
    assert!(shown(&fresh).contains(&fresh.code()));
    assert!(!shown(&changed).contains(&fresh.code()));

    // KeyPackages substituted on the way (as a relay handing out others' would): detected,
    // no device is added.
    let dev = device(&w, "substituted");
    let j = start_join_on(
        &dev,
        &w.relay.url,
        "15",
        &[("SAMIZDAT_TEST_SUBSTITUTE_KEY_PACKAGES", "1")],
    );
    let err = alice.fails(&["device", "add", &j.link, "--yes", "--timeout", "30"]);
    assert!(err.contains("not the new device's"), "{err}");
    let (ok, _, err) = finish_join(j);
    assert!(!ok);
    assert!(
        err.contains("refused") || err.contains("nothing was linked"),
        "{err}"
    );
    gone(&dev);
    assert_eq!(devices(&alice).len(), 1, "{:?}", devices(&alice));

    // A good link works once; used again it is refused.
    let laptop = device(&w, "laptop");
    let j = start_join(&alice, &laptop, "120");
    let used = j.link.clone();
    alice.ok(&["device", "add", &used, "--yes"]);
    let (ok, out, err) = finish_join(j);
    assert!(ok, "{out}{err}");
    assert!(
        alice
            .fails(&["device", "add", &used, "--yes"])
            .contains("already used")
    );
    // A home that already holds a profile cannot join.
    assert!(
        laptop
            .fails(&["device", "join", "--name", "x", "--relay", &w.relay.url])
            .contains("already exists")
    );
    // Only the first device holds the identity key.
    assert!(
        laptop
            .fails(&["device", "add", &fresh.to_link(), "--yes"])
            .contains("first device")
    );
    assert_eq!(devices(&alice).len(), 2);
}
