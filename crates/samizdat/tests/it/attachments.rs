//! Encrypted attachments through a real relay process: byte-identical files of several
//! sizes, a relay killed mid-upload and mid-download, a relay that flips a byte, groups, and
//! hostile input.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::harness::{Person, RelayProc, World};

/// A file of `size` bytes: a canary (kept as a secret for the relay scan) repeated through
/// pseudo-random filler, so any plaintext leak would be found.
fn make_file(w: &mut World, dir: &Path, name: &str, size: usize) -> (PathBuf, Vec<u8>) {
    let canary = w.text("file body");
    let mut data = Vec::with_capacity(size);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ size as u64;
    while data.len() < size {
        if data.len() % 65_536 == 0 {
            data.extend_from_slice(canary.as_bytes());
        } else {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            data.extend_from_slice(&x.to_le_bytes());
        }
    }
    data.truncate(size);
    let path = dir.join(name);
    std::fs::write(&path, &data).unwrap();
    (path, data)
}

fn sent_id(out: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix("sent "))
        .expect("sent line")
        .trim()
        .to_string()
}

/// The newest message with an attachment in `p`'s history of `target`.
fn last_attachment(p: &Person, target: &str) -> serde_json::Value {
    p.history(target)
        .into_iter()
        .rev()
        .find(|m| !m["attachment"].is_null())
        .expect("a message with an attachment")
}

fn blob_files(relay: &RelayProc) -> Vec<PathBuf> {
    std::fs::read_dir(relay.data.join("blobs"))
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default()
}

#[test]
fn attachments_of_1k_5m_and_60m_arrive_byte_identical() {
    let mut w = World::new();
    let [alice, bob] = w.people(["alice", "bob"]);
    w.connect(&alice, &bob);
    let files = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    for (i, size) in [1_000usize, 5 << 20, 60 << 20].into_iter().enumerate() {
        let name = format!(
            "{}.bin",
            w.text(&format!("secret-name-{i}")).replace(' ', "_")
        );
        let (path, data) = make_file(&mut w, files.path(), &name, size);
        let caption = w.text("the caption");
        let sent = alice.ok(&[
            "send",
            &bob.display,
            "--file",
            path.to_str().unwrap(),
            "--text",
            &caption,
        ]);
        let id = sent_id(&sent);
        let got = bob.ok(&["sync"]);
        assert!(got.contains(&caption), "{got}");
        let m = last_attachment(&bob, "alice");
        assert_eq!(m["id"], id.as_str());
        assert_eq!(m["text"], caption.as_str());
        assert_eq!(m["attachment"]["name"], name.as_str());
        assert_eq!(m["attachment"]["size"], size as u64);
        assert_eq!(m["attachment"]["downloaded"], false);
        // The sender keeps its own copy.
        assert_eq!(
            last_attachment(&alice, &bob.display)["attachment"]["downloaded"],
            true
        );
        let saved = bob.ok(&["download", &id, "--out", out.path().to_str().unwrap()]);
        assert!(saved.contains("saved"), "{saved}");
        let back = std::fs::read(out.path().join(&name)).unwrap();
        assert!(back == data, "{size}-byte file differs after the trip");
        assert_eq!(
            last_attachment(&bob, "alice")["attachment"]["downloaded"],
            true
        );
    }
    // Ciphertext only on the relay: no file body, name or caption in any of its files. Its
    // blobs are the three attachments and the sealed ratchet tree of the Welcome that
    // brought bob into the conversation.
    assert_eq!(blob_files(&w.relay).len(), 4);
    w.assert_no_plaintext();
    // Downloading again reads the local copy; an existing output file is never overwritten.
    let id = last_attachment(&bob, "alice")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let err = bob.fails(&["download", &id, "--out", out.path().to_str().unwrap()]);
    assert!(err.contains("exists"), "{err}");
}

/// The size of the largest file in `dir` whose name starts with `prefix`.
fn largest(dir: &Path, prefix: &str) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

/// Wait (bounded) until `size()` reaches `min`, while `running()` holds; returns the size.
fn wait_for_bytes(size: impl Fn() -> u64, min: u64, mut running: impl FnMut() -> bool) -> u64 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let n = size();
        if n >= min {
            return n;
        }
        assert!(
            running(),
            "the transfer finished before the relay could be killed"
        );
        assert!(std::time::Instant::now() < deadline, "no transfer progress");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Whether a transfer continued from a byte past the start (not from scratch).
fn resumed_past_zero(stderr: &str, what: &str) -> bool {
    let prefix = format!("{what} resumed at byte ");
    stderr.lines().any(|l| {
        l.strip_prefix(&prefix)
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n > 0)
    })
}

#[test]
fn an_upload_and_a_download_resume_after_the_relay_is_killed() {
    let mut w = World::new();
    let [alice, bob] = w.people(["alice", "bob"]);
    w.connect(&alice, &bob);
    let files = tempfile::tempdir().unwrap();
    let (path, data) = make_file(&mut w, files.path(), "resume.bin", 6 << 20);
    let data_dir = w.relay.data.clone();
    let addr = w.relay.addr.clone();
    // Slow pieces, so the relay can be killed half-way.
    let child = alice
        .cmd(&["send", &bob.display, "--file", path.to_str().unwrap()])
        .env("SAMIZDAT_TEST_TRANSFER_PIECE", "524288")
        .env("SAMIZDAT_TEST_TRANSFER_PAUSE_MS", "150")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let before = wait_for_bytes(|| largest(&data_dir.join("blobs"), ""), 1 << 20, || true);
    assert!(before < (6 << 20), "killed too late");
    w.relay.kill();
    std::thread::sleep(std::time::Duration::from_millis(700));
    w.relay = RelayProc::start(&data_dir, &addr);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(resumed_past_zero(&stderr, "upload"), "{stderr}");
    let id = sent_id(&String::from_utf8_lossy(&out.stdout));

    bob.ok(&["sync"]);
    let dest = files.path().join("copy.bin");
    let mut child = bob
        .cmd(&["download", &id, "--out", dest.to_str().unwrap()])
        .env("SAMIZDAT_TEST_TRANSFER_PAUSE_MS", "150")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the partial download holds something, then kill the relay.
    let attachments = bob.home.join("attachments");
    wait_for_bytes(
        || largest(&attachments, "download-"),
        1 << 20,
        || child.try_wait().unwrap().is_none(),
    );
    w.relay.kill();
    std::thread::sleep(std::time::Duration::from_millis(700));
    w.relay = RelayProc::start(&data_dir, &addr);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(resumed_past_zero(&stderr, "download"), "{stderr}");
    assert!(
        std::fs::read(&dest).unwrap() == data,
        "resumed file differs"
    );
}

#[test]
fn a_relay_that_flips_a_byte_of_a_blob_is_caught() {
    let mut w = World::new();
    let [alice, bob] = w.people(["alice", "bob"]);
    w.connect(&alice, &bob);
    let files = tempfile::tempdir().unwrap();
    let (path, _) = make_file(&mut w, files.path(), "flip.bin", 300_000);
    let id = sent_id(&alice.ok(&["send", &bob.display, "--file", path.to_str().unwrap()]));
    bob.ok(&["sync"]);
    // The attachment's blob: the largest (the other is the sealed ratchet tree of the
    // Welcome that brought bob into the conversation).
    let blob = blob_files(&w.relay)
        .into_iter()
        .max_by_key(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .expect("a blob file");
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[123_456] ^= 0x20;
    std::fs::write(&blob, &bytes).unwrap();
    let dest = files.path().join("never.bin");
    let err = bob.fails(&["download", &id, "--out", dest.to_str().unwrap()]);
    assert!(err.contains("does not match its digest"), "{err}");
    assert!(!dest.exists(), "nothing of a damaged file is written");
    let kept: Vec<_> = std::fs::read_dir(bob.home.join("attachments"))
        .unwrap()
        .filter_map(|e| e.ok())
        .collect();
    assert!(kept.is_empty(), "a damaged copy was kept: {kept:?}");
    assert_eq!(
        last_attachment(&bob, "alice")["attachment"]["downloaded"],
        false
    );
}

#[test]
fn a_file_in_a_group_of_three() {
    let mut w = World::new();
    let [alice, bob, carol] = w.people(["alice", "bob", "carol"]);
    w.connect(&alice, &bob);
    w.connect(&alice, &carol);
    alice.ok(&["group", "create", "circle"]);
    alice.ok(&["group", "add", "circle", &bob.display, &carol.display]);
    bob.ok(&["sync"]);
    carol.ok(&["sync"]);
    let files = tempfile::tempdir().unwrap();
    let (path, data) = make_file(&mut w, files.path(), "minutes.pdf", 700_000);
    let id = sent_id(&alice.ok(&["send", "circle", "--file", path.to_str().unwrap()]));
    for p in [&bob, &carol] {
        p.ok(&["sync"]);
        let m = last_attachment(p, "circle");
        assert_eq!(m["attachment"]["media_type"], "application/pdf");
        let dest = files.path().join(format!("{}.pdf", p.name));
        p.ok(&["download", &id, "--out", dest.to_str().unwrap()]);
        assert!(
            std::fs::read(&dest).unwrap() == data,
            "{} got another file",
            p.name
        );
    }
    w.assert_no_plaintext();
}

#[test]
fn oversized_and_oddly_named_files_get_clear_answers() {
    let mut w = World::new();
    let [alice, bob] = w.people(["alice", "bob"]);
    w.connect(&alice, &bob);
    let files = tempfile::tempdir().unwrap();
    // 1 GB (sparse) against the relay's 100 MiB limit: refused before anything is encrypted.
    let big = files.path().join("big.iso");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(1_000_000_000)
        .unwrap();
    let err = alice.fails(&["send", &bob.display, "--file", big.to_str().unwrap()]);
    assert!(err.contains("at most"), "{err}");
    assert!(
        std::fs::read_dir(alice.home.join("attachments"))
            .map(|d| d.count())
            .unwrap_or(0)
            == 0,
        "nothing left behind"
    );
    let err = alice.fails(&["send", &bob.display, "--file", "/no/such/file"]);
    assert!(err.contains("cannot read"), "{err}");
    // A name with control characters and a leading dot arrives as a plain name, and is
    // written inside the chosen directory.
    let odd = files.path().join(".hidden\tname\u{202e}.txt");
    std::fs::write(&odd, b"odd").unwrap();
    let id = sent_id(&alice.ok(&["send", &bob.display, "--file", odd.to_str().unwrap()]));
    bob.ok(&["sync"]);
    assert_eq!(
        last_attachment(&bob, "alice")["attachment"]["name"],
        "hiddenname.txt"
    );
    let out = tempfile::tempdir().unwrap();
    bob.ok(&["download", &id, "--out", out.path().to_str().unwrap()]);
    assert_eq!(
        std::fs::read(out.path().join("hiddenname.txt")).unwrap(),
        b"odd"
    );
    let err = bob.fails(&["download", "AAAAAAAAAAAAAAAAAAAAAA", "--out", "/tmp"]);
    assert!(err.contains("no message"), "{err}");
}

#[test]
fn small_attachments_are_fetched_automatically_when_asked_for() {
    let mut w = World::new();
    let [alice, bob] = w.people(["alice", "bob"]);
    w.connect(&alice, &bob);
    let err = bob.fails(&["config", "auto-download", "lots"]);
    assert!(err.contains("not a size"), "{err}");
    assert!(
        bob.ok(&["config", "auto-download", "1M"])
            .contains("up to 1048576 bytes")
    );
    let files = tempfile::tempdir().unwrap();
    let (small, _) = make_file(&mut w, files.path(), "small.bin", 100_000);
    let (large, _) = make_file(&mut w, files.path(), "large.bin", 3 << 20);
    alice.ok(&["send", &bob.display, "--file", small.to_str().unwrap()]);
    alice.ok(&["send", &bob.display, "--file", large.to_str().unwrap()]);
    // A running service fetches as messages arrive; a one-shot sync before it exits.
    bob.ok(&["sync"]);
    let fetched: Vec<(String, bool)> = bob
        .history("alice")
        .iter()
        .filter(|m| !m["attachment"].is_null())
        .map(|m| {
            (
                m["attachment"]["name"].as_str().unwrap().to_string(),
                m["attachment"]["downloaded"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        fetched,
        vec![
            ("small.bin".to_string(), true),
            ("large.bin".to_string(), false)
        ]
    );
}
