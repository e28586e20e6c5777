//! What a relay operator's machine relies on (issue 32): the relay does not run as root
//! unless told, and keeps its data in a directory only its user can read.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{BIN, RelayProc, needs};

/// Started by root without `--allow-root`, the relay refuses before it opens a socket or
/// writes a byte, and says why and what to do.
#[test]
fn the_relay_refuses_to_run_as_root_unless_told() {
    if !needs("the_relay_refuses_to_run_as_root_unless_told", &[], true) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("relay");
    let mut child = Command::new(BIN)
        .args(["relay", "--listen", "127.0.0.1:0", "--data"])
        .arg(&data)
        .env_remove("SAMIZDAT_RELAY_ALLOW_ROOT")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A relay that starts anyway never exits by itself: give it a generous minute, then fail.
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the relay started as root without --allow-root");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not run as root"), "{err}");
    assert!(err.contains("--allow-root"), "{err}");
    assert!(!data.exists(), "the refused relay made its data directory");
    // Told, it runs (the rest of the suite runs every relay that way here).
    let relay = RelayProc::start(&data, "127.0.0.1:0");
    assert!(relay.url.starts_with("http://127.0.0.1:"), "{}", relay.url);
}

/// A data directory others could read is narrowed to 0700 at start; files the relay makes
/// in it are its user's alone.
#[test]
fn the_relay_keeps_its_data_directory_private() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("relay");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let _relay = RelayProc::start(&data, "127.0.0.1:0");
    let mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "data directory mode {mode:o}");
    let db = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "db"))
        .expect("the relay's database file");
    let mode = std::fs::metadata(&db).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode & 0o077, 0, "{} mode {mode:o}", db.display());
}

/// `--check-config` reads what the package installs as `/etc/samizdat/relay.toml` and says it
/// holds, without starting anything; a wrong value is refused with the file's line.
#[test]
fn the_packaged_relay_config_holds() {
    let packaged = concat!(env!("CARGO_MANIFEST_DIR"), "/../../packaging/relay.toml");
    let out = Command::new(BIN)
        .args(["relay", "--check-config", "--config", packaged])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("configuration ok: listen 127.0.0.1:7700"),
        "{said}"
    );
    assert!(said.contains("/var/lib/samizdat"), "{said}");
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("relay.toml");
    std::fs::write(&bad, "listen = \"127.0.0.1:7700\"\nretention = 3\n").unwrap();
    let out = Command::new(BIN)
        .args(["relay", "--check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 2"), "{err}");
}

/// What a package installs beside the binary: a manual page per command and completion
/// scripts, generated from the parser's own definitions.
#[test]
fn man_pages_and_completions_come_from_the_parser() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .arg("man")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for page in [
        "samizdat.1",
        "samizdat-relay.1",
        "samizdat-send.1",
        "samizdat-serve.1",
    ] {
        let text = std::fs::read_to_string(dir.path().join(page)).unwrap();
        assert!(
            text.starts_with(".ie \\n(.g .ds Aq"),
            "{page}: {}",
            &text[..40]
        );
        assert!(text.contains(".TH "), "{page}");
    }
    let relay = std::fs::read_to_string(dir.path().join("samizdat-relay.1")).unwrap();
    assert!(
        relay.contains("allow\\-root"),
        "the relay's page lists its flags"
    );
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(BIN)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(
            script.contains("relay") && script.contains("check-config"),
            "{shell}"
        );
    }
    let out = Command::new(BIN)
        .args(["completions", "cmd"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "an unknown shell is refused");
}

/// `samizdat@.service` hands the profile's passphrase over as the systemd credential
/// `samizdat-passphrase` (a file in `$CREDENTIALS_DIRECTORY`): it is read from there before
/// the environment, a trailing newline is not part of it, and a wrong or empty one fails
/// with one clear line instead of falling back to something else.
#[test]
fn a_profile_opens_with_the_passphrase_systemd_hands_over() {
    let mut w = crate::harness::World::new();
    let alice = w.person("alice");
    let creds = tempfile::tempdir().unwrap();
    let file = creds.path().join("samizdat-passphrase");
    let with_credential = |env_pass: Option<&str>| {
        let mut c = alice.cmd(&["contacts", "--json"]);
        c.env("CREDENTIALS_DIRECTORY", creds.path());
        match env_pass {
            Some(p) => c.env("SAMIZDAT_PASSPHRASE", p),
            None => c.env_remove("SAMIZDAT_PASSPHRASE"),
        };
        c.output().unwrap()
    };
    // The right passphrase, as `echo` writes it, with nothing in the environment.
    std::fs::write(&file, format!("{}\n", crate::harness::PASSPHRASE)).unwrap();
    let out = with_credential(None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The credential wins over a (wrong) environment variable.
    let out = with_credential(Some("not the passphrase"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A wrong credential is not rescued by a right environment variable.
    std::fs::write(&file, "not the passphrase\n").unwrap();
    let out = with_credential(Some(crate::harness::PASSPHRASE));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    // An empty one says so.
    std::fs::write(&file, "\n").unwrap();
    let out = with_credential(None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("credential is empty"), "{err}");
    // Without the credential file the environment is used as before.
    std::fs::remove_file(&file).unwrap();
    let out = with_credential(Some(crate::harness::PASSPHRASE));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `--min-free-disk-percent` sets the relay's free-disk floor (M8): at 100 every write is
/// refused with `storage_full`; at 0 (what the test harness sets through the environment, so
/// a host's disk running low cannot fail unrelated tests) the same drop goes on to the next
/// check, a mailbox that does not exist.
#[tokio::test]
async fn the_free_disk_floor_is_set_by_flag_and_environment() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let drop_to_nobody = |url: String| {
        let http = http.clone();
        async move {
            let id = samizdat_proto::Id::from_bytes([7; 16]);
            let r = http
                .post(format!("{url}/v1/mailboxes/{id}/messages"))
                .body(b"hello".to_vec())
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body: serde_json::Value = r.json().await.unwrap();
            (
                status,
                body["code"].as_str().unwrap_or_default().to_string(),
            )
        }
    };
    let full = RelayProc::start_with_args(
        &dir.path().join("full"),
        "127.0.0.1:0",
        &["--min-free-disk-percent", "100"],
    );
    assert_eq!(
        drop_to_nobody(full.url.clone()).await,
        (429, "storage_full".into())
    );
    let open = RelayProc::start(&dir.path().join("open"), "127.0.0.1:0");
    assert_eq!(
        drop_to_nobody(open.url.clone()).await,
        (404, "not_found".into())
    );
    // Out of range is refused before the relay starts.
    let out = Command::new(BIN)
        .args([
            "relay",
            "--allow-root",
            "--check-config",
            "--min-free-disk-percent",
            "101",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
}
