//! Security review 3 (`docs/THREAT-MODEL.md` lists every finding with its test): one test per
//! finding, named after it, over the real binary and real relay processes. Each one failed on
//! `1542caf`'s behaviour.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::harness::{Person, RelayProc, World};

/// A person whose profile lives in `home` (not yet created).
fn person_at(home: &Path, name: &str) -> Person {
    Person {
        name: name.into(),
        display: name.into(),
        home: home.to_path_buf(),
    }
}

/// The message id `send` printed (its `sent ID` line).
fn sent_id(out: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix("sent "))
        .expect("sent line")
        .trim()
        .to_string()
}

/// A fresh invite link of `p` (the last line `invite` prints).
fn invite_of(p: &Person) -> String {
    p.ok(&["invite"]).lines().last().expect("link").to_string()
}

/// The id of `p`'s (only) other device, from `device list`.
fn other_device_id(p: &Person) -> String {
    p.ok(&["device", "list", "--json"])
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json"))
        .find(|d| d["this"] == false)
        .expect("another device")["id"]
        .as_str()
        .expect("id")
        .to_string()
}

/// A stand-in relay that answers every request with `status` and `body` (JSON).
fn fake_relay(status: u16, body: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut line = String::new();
                // Read the request head (no body is expected on the requests used here).
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} Whatever\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    format!("http://{addr}")
}

/// L1: a hostile relay's error message cannot forge a line or colour the terminal.
#[test]
fn finding_l1_relay_error_text_cannot_forge_a_line() {
    let url = fake_relay(
        400,
        r#"{"code":"bad_request","message":"try again\n[friends] alice: meet at 5\u001b[32m verified\u001b[0m \u202e"}"#,
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let p = person_at(&dir.path().join("p"), "p");
    // `fails` also checks: exit status 1 and exactly one line on stderr.
    let err = p.fails(&["init", "--relay", &url, "--name", "P"]);
    assert!(!err.contains('\u{1b}'), "{err:?}");
    assert!(!err.contains('\u{202e}'), "{err:?}");
    assert!(err.contains("try again"), "{err:?}");
}

/// L2: isolation cannot silently be off: `--isolate` with a proxy that has its own user name
/// and password is refused (the identity is the user name).
#[test]
fn finding_l2_isolation_with_proxy_credentials_is_refused() {
    let w = World::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let p = person_at(&dir.path().join("p"), "p");
    let err = p.fails(&[
        "init",
        "--relay",
        &w.relay.url,
        "--name",
        "P",
        "--proxy",
        "socks5h://user:secret@127.0.0.1:9",
        "--isolate",
    ]);
    assert!(err.contains("isolation"), "{err}");
    assert!(!p.home.join("profile.db").exists());
    // And on an existing profile.
    let mut w = w;
    let [alice] = w.people(["alice"]);
    let err = alice.fails(&[
        "config",
        "proxy",
        "socks5h://user:secret@127.0.0.1:9",
        "--isolate",
    ]);
    assert!(err.contains("isolation"), "{err}");
    assert!(!alice.ok(&["whoami"]).contains("secret"));
}

/// The duress file's bytes and inode.
fn duress_file(home: &Path) -> (Vec<u8>, u64) {
    let path = home.join("duress");
    let bytes = std::fs::read(&path).expect("duress file");
    (bytes, std::fs::metadata(&path).expect("meta").ino())
}

/// L3: the duress file is rewritten at every unlock, whether or not a duress passphrase is
/// set, so its contents and times do not show when one was set; it keeps working.
#[test]
fn finding_l3_the_duress_file_is_rewritten_at_every_unlock() {
    let mut w = World::new();
    let [alice] = w.people(["alice"]);
    let before = duress_file(&alice.home);
    alice.ok(&["contacts"]);
    let after = duress_file(&alice.home);
    assert_ne!(
        before.0, after.0,
        "the duress file did not change on unlock"
    );
    assert_ne!(before.1, after.1, "the duress file kept its inode");
    assert_eq!(before.0.len(), after.0.len());
    alice.ok_with(
        &["duress", "set"],
        &[("SAMIZDAT_DURESS_PASSPHRASE", "words for the checkpoint")],
    );
    let set = duress_file(&alice.home);
    alice.ok(&["contacts"]);
    let later = duress_file(&alice.home);
    assert_ne!(set.0, later.0, "a set duress file did not change on unlock");
    assert_eq!(set.0.len(), later.0.len());
    assert_eq!(set.0.len(), before.0.len());
    // Still the duress passphrase: it opens an empty profile with the same name.
    let out = alice.ok_with(
        &["whoami"],
        &[("SAMIZDAT_PASSPHRASE", "words for the checkpoint")],
    );
    assert!(out.contains(&alice.display));
}

/// A SOCKS5 proxy (no authentication, CONNECT only) on loopback that counts connections.
fn counting_socks5() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            seen.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                let _ = socks5_session(client);
            });
        }
    });
    (port, count)
}

fn socks5_session(mut c: TcpStream) -> std::io::Result<()> {
    let mut head = [0u8; 2];
    c.read_exact(&mut head)?;
    let mut methods = vec![0u8; usize::from(head[1])];
    c.read_exact(&mut methods)?;
    c.write_all(&[5, 0])?;
    let mut req = [0u8; 4];
    c.read_exact(&mut req)?;
    let host = match req[3] {
        1 => {
            let mut ip = [0u8; 4];
            c.read_exact(&mut ip)?;
            std::net::Ipv4Addr::from(ip).to_string()
        }
        3 => {
            let mut len = [0u8; 1];
            c.read_exact(&mut len)?;
            let mut name = vec![0u8; usize::from(len[0])];
            c.read_exact(&mut name)?;
            String::from_utf8_lossy(&name).to_string()
        }
        _ => return Ok(()),
    };
    let mut port = [0u8; 2];
    c.read_exact(&mut port)?;
    let upstream = TcpStream::connect((host.as_str(), u16::from_be_bytes(port)))?;
    c.write_all(&[5, 0, 0, 1, 0, 0, 0, 0, 0, 0])?;
    let (mut a, mut b) = (c.try_clone()?, upstream.try_clone()?);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut a, &mut b);
        let _ = b.shutdown(std::net::Shutdown::Write);
    });
    let (mut a, mut b) = (upstream, c);
    let _ = std::io::copy(&mut a, &mut b);
    let _ = b.shutdown(std::net::Shutdown::Write);
    Ok(())
}

/// M11: a proxy turned on after the duress passphrase was set is used by the duress unlock:
/// the fresh profile never connects directly.
#[test]
fn finding_m11_the_duress_profile_uses_the_current_proxy() {
    let mut w = World::new();
    let [alice] = w.people(["alice"]);
    alice.ok_with(
        &["duress", "set"],
        &[("SAMIZDAT_DURESS_PASSPHRASE", "words for the checkpoint")],
    );
    let (port, through_proxy) = counting_socks5();
    let proxy = format!("socks5h://127.0.0.1:{port}");
    alice.ok(&["config", "proxy", &proxy]);
    let before = through_proxy.load(Ordering::SeqCst);
    let shown = alice.ok_with(
        &["whoami"],
        &[("SAMIZDAT_PASSPHRASE", "words for the checkpoint")],
    );
    assert!(shown.contains(&format!("127.0.0.1:{port}")), "{shown}");
    assert!(
        through_proxy.load(Ordering::SeqCst) > before,
        "the duress profile did not connect through the proxy"
    );
}

/// M10: a new profile needs a passphrase of at least 8 characters (the database key itself is
/// checked by `store::tests::finding_m10_…`).
#[test]
fn finding_m10_a_new_profile_needs_eight_characters() {
    let w = World::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let p = person_at(&dir.path().join("p"), "p");
    let out = p
        .cmd(&["init", "--relay", &w.relay.url, "--name", "P"])
        .env("SAMIZDAT_PASSPHRASE", "1234567")
        .output()
        .expect("init");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("at least 8 characters"), "{err}");
    assert!(!p.home.join("profile.db").exists());
}

/// M13: a profile directory that another account could have prepared is refused; one that
/// is only readable by others is made private.
#[test]
fn finding_m13_a_directory_others_can_write_is_refused() {
    let w = World::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("shared");
    std::fs::create_dir(&home).expect("mkdir");
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let p = person_at(&home, "p");
    let err = p.fails(&["init", "--relay", &w.relay.url, "--name", "P"]);
    assert!(err.contains("written by other users"), "{err}");
    assert!(!home.join("profile.db").exists());
    // Readable by others only: taken, and made 0700.
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    p.ok(&["init", "--relay", &w.relay.url, "--name", "P"]);
    let mode = std::fs::metadata(&home).expect("meta").mode() & 0o777;
    assert_eq!(mode, 0o700);
    // A profile directory made writable by others later is refused too.
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let err = p.fails(&["contacts"]);
    assert!(err.contains("written by other users"), "{err}");
}

/// M13: a socket in the profile directory served by another account is never talked to.
/// Needs root (to run the impostor as `nobody`); says SKIPPED otherwise.
#[test]
fn finding_m13_a_socket_of_another_account_is_not_used() {
    if !crate::harness::needs(
        "review3::finding_m13_a_socket_of_another_account_is_not_used",
        &["setpriv", "python3"],
        true,
    ) {
        return;
    }
    let mut w = World::new();
    let [alice] = w.people(["alice"]);
    let spot = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(spot.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let sock = spot.path().join("s.sock");
    let flag = spot.path().join("connected");
    let script = format!(
        "import socket,os\ns=socket.socket(socket.AF_UNIX)\ns.bind({sock:?})\ns.listen(8)\nprint('ready',flush=True)\nwhile True:\n  c,_=s.accept()\n  open({flag:?},'w').write('yes')\n  c.close()\n",
        sock = sock.to_str().expect("utf8"),
        flag = flag.to_str().expect("utf8"),
    );
    let mut impostor = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            &script,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("setpriv python3");
    let mut line = String::new();
    BufReader::new(impostor.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("impostor ready");
    assert_eq!(line.trim(), "ready");
    std::fs::rename(&sock, alice.home.join("samizdat.sock")).expect("plant the socket");
    alice.ok(&["contacts"]);
    let _ = impostor.kill();
    let _ = impostor.wait();
    assert!(!flag.exists(), "the CLI talked to another account's socket");
}

/// The certificate's validity dates (two UTCTime values, `YYMMDDHHMMSSZ`) from its DER bytes.
fn validity_years(der: &[u8]) -> Vec<u32> {
    der.windows(15)
        .filter(|w| w[0] == 0x17 && w[1] == 13 && w[14] == b'Z')
        .filter_map(|w| std::str::from_utf8(&w[2..4]).ok()?.parse::<u32>().ok())
        .map(|yy| if yy < 50 { 2000 + yy } else { 1900 + yy })
        .collect()
}

/// M12: one probe does not identify a relay: an ordinary-looking certificate, no version or
/// API document on the public listener, an ordinary 404 page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_m12_one_probe_does_not_identify_a_relay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tls = dir.path().join("tls");
    let relay = RelayProc::start_tls(&dir.path().join("relay"), "127.0.0.1:0", &tls);
    let pem = std::fs::read_to_string(tls.join("cert.pem")).expect("cert");
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    use base64::Engine;
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("pem");
    let text = String::from_utf8_lossy(&der).to_lowercase();
    for tell in ["rcgen", "samizdat", "relay"] {
        assert!(!text.contains(tell), "the certificate says {tell:?}");
    }
    let years = validity_years(&der);
    assert_eq!(years.len(), 2, "{years:?}");
    assert!(years[0] >= 2025 && years[1] - years[0] <= 2, "{years:?}");
    let http = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .expect("client");
    let base = relay.url.split('#').next().expect("url").to_string();
    let health: serde_json::Value = http
        .get(format!("{base}/healthz"))
        .send()
        .await
        .expect("healthz")
        .json()
        .await
        .expect("json");
    assert_eq!(health, serde_json::json!({ "status": "ok" }));
    for path in ["/v1/openapi.json", "/", "/wp-login.php"] {
        let r = http.get(format!("{base}{path}")).send().await.expect(path);
        assert_eq!(r.status(), 404, "{path}");
        let page = r.text().await.expect("text").to_lowercase();
        assert!(page.contains("404 not found"), "{path}: {page}");
        assert!(
            !page.contains("samizdat") && !page.contains("openapi"),
            "{path}: {page}"
        );
    }
}

/// M9: the relay keeps no reversible trace of an uploader's address: a blob's `source` is not
/// a plain hash of the address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_m9_no_reversible_uploader_address_on_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("relay");
    let relay = RelayProc::start(&data, "127.0.0.1:0");
    // A blob is created for a group (M8): make one, with an epoch token.
    let http = reqwest::Client::new();
    let group = samizdat_proto::Id::from_bytes([5; 16]);
    let token = b"an epoch token of group five";
    let token_hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token);
    let r = http
        .post(format!("{}/v1/groups", relay.url))
        .json(&serde_json::json!({
            "request_id": samizdat_proto::Id::from_bytes([6; 16]),
            "group_id": group,
            "epoch": 0,
            "token_hash": samizdat_proto::Bytes(token_hash.as_ref().to_vec()),
        }))
        .send()
        .await
        .expect("create group");
    assert!(r.status().is_success(), "{}", r.status());
    let r = http
        .post(format!("{}/v1/blobs", relay.url))
        .header("upload-length", "100")
        .header("x-samizdat-group", group.to_string())
        .header("x-samizdat-token", samizdat_proto::Bytes::encode(token))
        .send()
        .await
        .expect("create blob");
    assert_eq!(r.status(), 201);
    let db = rusqlite::Connection::open(data.join("relay.db")).expect("relay.db");
    let sources: Vec<Vec<u8>> = db
        .prepare("SELECT source FROM blobs")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(sources.len(), 1);
    let sha = |s: &str| {
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, s.as_bytes())
            .as_ref()
            .to_vec()
    };
    for guess in [
        "V4([127, 0, 0, 1])",
        "127.0.0.1",
        "V4(127.0.0.1)",
        &format!("\"group {group}\""),
        &format!("group {group}"),
    ] {
        assert_ne!(sources[0], sha(guess), "the source is sha256({guess:?})");
    }
}

/// L10: the relay's data directory and database are not readable by other accounts.
#[test]
fn finding_l10_relay_data_is_private() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("relay");
    std::fs::create_dir(&data).expect("mkdir");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let _relay = RelayProc::start(&data, "127.0.0.1:0");
    assert_eq!(
        std::fs::metadata(&data).expect("meta").mode() & 0o777,
        0o700
    );
    let db = std::fs::metadata(data.join("relay.db")).expect("relay.db");
    assert_eq!(
        db.mode() & 0o077,
        0,
        "relay.db mode {:o}",
        db.mode() & 0o777
    );
    assert_eq!(
        std::fs::metadata(data.join("blobs")).expect("blobs").mode() & 0o777,
        0o700
    );
}

/// L7: decrypted downloads and backups are readable by their owner only, whatever the umask.
#[test]
fn finding_l7_downloads_and_backups_are_private() {
    let mut w = World::new();
    let [alice, bob] = w.people(["alice", "bob"]);
    w.connect(&alice, &bob);
    let files = tempfile::tempdir().expect("tempdir");
    let src = files.path().join("notes.txt");
    std::fs::write(&src, w.text("file contents")).expect("write");
    let id = sent_id(&alice.ok(&["send", &bob.display, "--file", src.to_str().expect("utf8")]));
    bob.ok(&["sync"]);
    let out = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(out.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    bob.ok(&["download", &id, "--out", out.path().to_str().expect("utf8")]);
    let got = out.path().join("notes.txt");
    assert_eq!(
        std::fs::metadata(&got).expect("saved").mode() & 0o777,
        0o600
    );
    let backup = out.path().join("alice.backup");
    alice
        .cmd(&["backup", "--out", backup.to_str().expect("utf8")])
        .env("SAMIZDAT_BACKUP_PASSPHRASE", "a long backup passphrase")
        .status()
        .expect("backup");
    assert_eq!(
        std::fs::metadata(&backup).expect("backup").mode() & 0o777,
        0o600
    );
}

/// L6: no `SAMIZDAT_LOG` directive makes tokio-postgres log below warn (its statement
/// parameters hold full ids and ciphertext). Needs PostgreSQL; says SKIPPED without it.
#[test]
fn finding_l6_the_log_filter_cannot_print_query_parameters() {
    let Some(db) = crate::harness::postgres_url() else {
        eprintln!("SKIPPED: SAMIZDAT_TEST_DATABASE_URL is not set");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("pg-relay");
    std::fs::create_dir_all(&data).expect("mkdir");
    let log = std::fs::File::create(data.join("relay.log")).expect("log");
    let mut child = std::process::Command::new(crate::harness::BIN)
        .args(["relay", "--allow-root", "--listen", "127.0.0.1:0", "--data"])
        .arg(&data)
        .args(["--database", &db])
        .env(
            "SAMIZDAT_LOG",
            "debug,tokio_postgres=trace,tokio_postgres::query=trace,tokio_postgres::prepare=debug",
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("relay");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("listening");
    let url = line
        .trim()
        .trim_start_matches("relay listening on ")
        .to_string();
    let dir2 = tempfile::tempdir().expect("tempdir");
    let p = person_at(&dir2.path().join("p"), "p");
    p.ok(&["init", "--relay", &url, "--name", "P"]);
    let _ = child.kill();
    let _ = child.wait();
    let logged = std::fs::read_to_string(data.join("relay.log")).expect("log");
    assert!(
        logged.contains("DEBUG"),
        "the relay logged nothing at debug"
    );
    let pg: Vec<&str> = logged
        .lines()
        .filter(|l| l.contains("tokio_postgres") && !l.contains("WARN") && !l.contains("ERROR"))
        .collect();
    assert!(pg.is_empty(), "tokio-postgres logged below warn: {pg:?}");
}

/// From a fresh machine: `wipe` stops a running `serve` with no `kill` program on the PATH
/// (a minimal Debian has none), and confirms it is gone.
#[test]
fn finding_fresh_wipe_stops_the_service_without_a_kill_program() {
    let mut w = World::new();
    let [alice] = w.people(["alice"]);
    let mut serve = alice
        .cmd(&["serve"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("serve");
    let mut line = String::new();
    BufReader::new(serve.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("serving");
    assert!(line.contains("serving"), "{line}");
    let empty = tempfile::tempdir().expect("tempdir");
    let out = alice
        .cmd(&["wipe", "--yes"])
        .env("PATH", empty.path())
        .output()
        .expect("wipe");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Bounded: a service still running after a minute fails the test instead of hanging it.
    let deadline = Instant::now() + Duration::from_secs(60);
    let stopped = loop {
        if let Some(status) = serve.try_wait().expect("try_wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = serve.kill();
            let _ = serve.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(stopped.is_some(), "serve kept running after the wipe");
    assert!(!alice.home.join("profile.db").exists());
}

/// L11 and the app review's impersonation findings: a name with invisible and bidi characters
/// (sent raw by a hostile client) reaches no front with them — contacts, members, the CLI.
#[test]
fn finding_l11_names_carry_no_invisible_or_bidi_characters() {
    let mut w = World::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let hostile = "Al\u{200B}ice\u{202E}gpj.exe\u{2066}";
    let mallory = person_at(&dir.path().join("mallory"), "mallory");
    mallory.ok_with(
        &["init", "--relay", &w.relay.url, "--name", hostile],
        &[("SAMIZDAT_TEST_RAW_NAME", "1")],
    );
    let [bob] = w.people(["bob"]);
    bob.ok(&["accept", &invite_of(&mallory), "--name", "mal"]);
    mallory.ok(&["sync"]);
    bob.ok(&["group", "create", "club"]);
    bob.ok(&["group", "add", "club", "mal"]);
    mallory.ok(&["sync"]);
    bob.ok(&["sync"]);
    for out in [
        bob.ok(&["contacts", "--json"]),
        bob.ok(&["contacts"]),
        bob.ok(&["list", "--json"]),
        bob.ok(&["list"]),
        bob.ok(&["group", "members", "club", "--json"]),
    ] {
        assert!(
            !out.chars().any(samizdat_core::text::is_hidden_but_newline),
            "{out:?}"
        );
    }
    let contacts = bob.ok(&["contacts", "--json"]);
    assert!(contacts.contains("Alicegpj.exe"), "{contacts}");
    // A name with such characters cannot be chosen either.
    let err = bob.fails(&["group", "rename", "club", "c\u{202E}lub"]);
    assert!(err.contains("invisible"), "{err}");
}

/// H1: the new device shows the link; the device with the identity key signs nothing until the
/// person confirms the new device's name and code there. Whoever glimpses a link gets no access
/// to the account — at most the new, empty device. Links last 2 minutes.
#[test]
fn finding_h1_a_glimpsed_device_link_gives_no_access_to_the_account() {
    let mut w = World::new();
    let [alice, bob, mallory] = w.people(["alice", "bob", "mallory"]);
    w.connect(&alice, &bob);
    let secret = w.text("the meeting is moved to Thursday");
    bob.ok(&["send", "alice", &secret]);
    alice.ok(&["sync"]);
    let laptop = person_at(&w.dir.path().join("laptop"), "laptop");
    let j = crate::devices::start_join_on(&laptop, &w.relay.url, "60", &[]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let link = samizdat_core::device::Link::parse(&j.link).expect("link");
    assert!(link.expires_at <= now + 121, "a link lives 2 minutes");
    // Without a confirmation the identity device shows the name and code and signs nothing:
    // the link is still unused afterwards.
    let out = alice.run(&["device", "add", &j.link]);
    assert!(!out.status.success());
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("laptop") && shown.contains(&j.code),
        "{shown}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nothing was added"),
        "{out:?}"
    );
    // An intruder who glimpsed the link takes it first: the new device becomes the
    // intruder's — it gets nothing of Alice's.
    mallory.ok(&["device", "add", &j.link, "--yes"]);
    let (ok, out, err) = crate::devices::finish_join(j);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains(&format!("linked as a device of {}", mallory.display)),
        "{out}"
    );
    assert!(!laptop.ok(&["list"]).contains(&bob.display));
    assert!(!laptop.ok(&["contacts"]).contains(&bob.display));
    let devices = alice.ok(&["device", "list", "--json"]);
    assert_eq!(devices.lines().count(), 1, "{devices}");
    let _ = secret;
}

/// M5: the launch token never reaches a command line (the browser is opened on a private file
/// that forwards to the URL; the file goes once the token is used), and the app lives on a host
/// name of its own, so its session cookie is not shared with other servers on 127.0.0.1.
#[test]
fn finding_m5_the_launch_token_is_in_no_command_line_and_the_cookie_in_no_shared_host() {
    let mut w = World::new();
    let [alice] = w.people(["alice"]);
    // A stand-in for xdg-open that records the command line it was given.
    let bin = tempfile::tempdir().expect("tempdir");
    let argv = bin.path().join("argv");
    let opener = bin.path().join("xdg-open");
    std::fs::write(
        &opener,
        format!("#!/bin/sh\necho \"$@\" > {}\n", argv.display()),
    )
    .expect("opener");
    std::fs::set_permissions(&opener, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut app = alice
        .cmd(&["app", "--listen", "127.0.0.1:0"])
        .env("PATH", format!("{}:/usr/bin:/bin", bin.path().display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("app");
    let mut url = String::new();
    let mut out = BufReader::new(app.stdout.take().expect("stdout"));
    while !url.starts_with("http://") {
        url.clear();
        assert!(out.read_line(&mut url).expect("read") > 0, "no URL");
    }
    let url = url.trim().to_string();
    let token = url.split("token=").nth(1).expect("token").to_string();
    // The shell creates the file before `echo` writes to it: wait for the whole line.
    let deadline = Instant::now() + Duration::from_secs(30);
    let written = || std::fs::read_to_string(&argv).is_ok_and(|s| s.ends_with('\n'));
    while !written() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let given = std::fs::read_to_string(&argv).expect("the opener ran");
    assert!(
        !given.contains(&token),
        "the token is on a command line: {given}"
    );
    let page = alice.home.join("app-launch.html");
    assert_eq!(given.trim(), page.to_str().expect("utf8"));
    let meta = std::fs::metadata(&page).expect("launch page");
    assert_eq!(meta.mode() & 0o777, 0o600);
    assert!(
        std::fs::read_to_string(&page)
            .expect("read")
            .contains(&token)
    );
    // The app's own host: a random .localhost name; the shared loopback names are refused.
    let rest = url.strip_prefix("http://").expect("http");
    let (hostport, _) = rest.split_once('/').expect("path");
    let (host, port) = hostport.rsplit_once(':').expect("port");
    assert!(host.ends_with(".localhost") && host.len() == 42, "{host}");
    let port: u16 = port.parse().expect("port");
    let get = |host: &str, path: &str| {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )
        .expect("write");
        let mut r = String::new();
        let _ = s.read_to_string(&mut r);
        r
    };
    let login = format!("/login?token={token}");
    let refused = get(&format!("127.0.0.1:{port}"), &login);
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    let r = get(hostport, &login);
    assert!(r.starts_with("HTTP/1.1 303"), "{r}");
    let cookie = r
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .expect("a cookie");
    assert!(!cookie.to_ascii_lowercase().contains("domain="), "{cookie}");
    assert!(!page.exists(), "the launch page outlived its token");
    let _ = app.kill();
    let _ = app.wait();
}

/// H2: a revoked (seized) device stops being its owner for contacts. The review's scenario:
/// Alice revokes her phone; the phone creates a group and adds Bob; Bob refuses it. Before
/// that, Bob is told of the new device and of its removal, and the phone's messages reach him
/// as Alice's while it is hers.
#[test]
fn finding_h2_a_revoked_device_no_longer_speaks_for_its_owner() {
    let mut w = World::new();
    let [alice, bob] = w.people(["alice", "bob"]);
    w.connect(&alice, &bob);
    let phone = person_at(&w.dir.path().join("phone"), "phone");
    let j = crate::devices::start_join_on(&phone, &w.relay.url, "120", &[]);
    alice.ok(&["device", "add", &j.link, "--yes"]);
    let (ok, out, err) = crate::devices::finish_join(j);
    assert!(ok, "{out}{err}");
    let seen = bob.ok(&["sync"]);
    assert!(seen.contains("linked a new device"), "{seen}");
    // While it is hers, the phone speaks for Alice.
    let hi = w.text("from alice's phone");
    phone.ok(&["send", &bob.display, &hi]);
    bob.ok(&["sync"]);
    assert!(bob.texts("alice").contains(&hi));
    // Revoked. Bob does not sync in between: the Welcome below is the first he reads.
    let id = other_device_id(&alice);
    alice.ok(&["device", "revoke", &id]);
    phone.ok(&["group", "create", "plans"]);
    phone.ok(&["group", "add", "plans", &bob.display]);
    let lie = w.text("it's me, Alice: send me the list of names");
    phone.ok(&["send", "plans", &lie]);
    let seen = bob.ok(&["sync"]);
    assert!(seen.contains("removed a device"), "{seen}");
    assert!(
        seen.contains("refused a group from a device that alice removed"),
        "{seen}"
    );
    assert!(!seen.contains(&lie), "{seen}");
    assert!(!bob.ok(&["list"]).contains("plans"));
    assert!(bob.ok(&["invitations", "--json"]).trim().is_empty());
    // A second sync changes nothing: the Welcome was refused for good.
    let again = bob.ok(&["sync"]);
    assert!(!again.contains(&lie) && !bob.ok(&["list"]).contains("plans"));
    // Alice and Bob still talk.
    let after = w.text("still alice");
    alice.ok(&["send", &bob.display, &after]);
    bob.ok(&["sync"]);
    assert!(bob.texts("alice").contains(&after));
}

/// M7: a member cannot choose where the others' downloads connect: a file whose relay is not
/// one the conversation uses (a private address, or the member's own server) is not fetched,
/// with a message that names the host.
#[test]
fn finding_m7_attachments_come_only_from_the_conversations_relays() {
    let mut w = World::new();
    let [alice, bob] = w.people(["alice", "bob"]);
    w.connect(&alice, &bob);
    let files = tempfile::tempdir().expect("tempdir");
    let src = files.path().join("minutes.txt");
    std::fs::write(&src, w.text("the minutes")).expect("write");
    for (relay, host) in [
        ("http://192.168.1.1:7700", "192.168.1.1"),
        ("http://informant.example:7700", "informant.example"),
    ] {
        let id = sent_id(&alice.ok_with(
            &["send", &bob.display, "--file", src.to_str().expect("utf8")],
            &[("SAMIZDAT_TEST_ATTACHMENT_RELAY", relay)],
        ));
        bob.ok(&["sync"]);
        let out = tempfile::tempdir().expect("tempdir");
        let err = bob.fails(&["download", &id, "--out", out.path().to_str().expect("utf8")]);
        assert!(err.contains("not fetched") && err.contains(host), "{err}");
        assert_eq!(std::fs::read_dir(out.path()).expect("dir").count(), 0);
    }
}

/// M6: a contact who was never in a conversation cannot replace it with a group of their own
/// under its id (here one Bob was removed from): it waits as an invitation that says so, and
/// the old conversation keeps its history.
#[test]
fn finding_m6_a_contact_cannot_take_over_a_conversation_by_its_id() {
    let mut w = World::new();
    let [alice, bob, carol, dave] = w.people(["alice", "bob", "carol", "dave"]);
    w.connect(&alice, &bob);
    // Mallory keeps her groups on a relay of her own (a group id is unique per relay).
    let other = RelayProc::start(&w.dir.path().join("relay2"), "127.0.0.1:0");
    let mallory = person_at(&w.dir.path().join("mallory"), "mallory");
    mallory.ok(&["init", "--relay", &other.url, "--name", "Mallory"]);
    for p in [&bob, &carol, &dave] {
        p.ok(&["accept", &invite_of(&mallory), "--name", "mallory"]);
        mallory.ok(&["sync"]);
    }
    alice.ok(&["group", "create", "friends"]);
    alice.ok(&["group", "add", "friends", &bob.display]);
    let before = w.text("said in friends");
    alice.ok(&["send", "friends", &before]);
    bob.ok(&["sync"]);
    alice.ok(&["group", "remove", "friends", &bob.display]);
    bob.ok(&["sync"]);
    let friends: serde_json::Value = bob
        .ok(&["list", "--json"])
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json"))
        .find(|c| c["name"] == "friends")
        .expect("friends");
    assert_eq!(friends["active"], false);
    let id = friends["id"].as_str().expect("id").to_string();
    // Mallory makes a group with that id, commits past Bob's epoch and adds him.
    mallory.ok_with(
        &["group", "create", "fake"],
        &[("SAMIZDAT_TEST_GROUP_ID", &id)],
    );
    for name in ["carol", "dave", "bob"] {
        let display = [&carol, &dave, &bob]
            .into_iter()
            .find(|p| p.name == name)
            .expect("person")
            .display
            .clone();
        mallory.ok(&["group", "add", "fake", &display]);
    }
    bob.ok(&["sync"]);
    let pending = bob.ok(&["invitations", "--json"]);
    assert_eq!(pending.lines().count(), 1, "{pending}");
    let warning: serde_json::Value = serde_json::from_str(pending.trim()).expect("json");
    assert_eq!(
        warning["warning"]["kind"], "claims_conversation",
        "{pending}"
    );
    // The CLI says it in English.
    let said = bob.ok(&["invitations"]);
    assert!(said.contains("possibly a takeover attempt"), "{said}");
    let after: serde_json::Value = bob
        .ok(&["list", "--json"])
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json"))
        .find(|c| c["id"] == id.as_str())
        .expect("still there");
    assert_eq!(after["active"], false, "{after}");
    assert_eq!(after["relay"], w.relay.url.as_str(), "{after}");
    assert!(bob.texts("friends").contains(&before));
}

/// M3: an owner-signed upload for a mailbox that does not exist is answered before its body
/// is read, so slow uploads of that kind hold none of the relay-wide body budget.
#[test]
fn finding_m3_unauthenticated_uploads_are_refused_before_their_body() {
    let dir = tempfile::tempdir().expect("tempdir");
    let relay = RelayProc::start(&dir.path().join("relay"), "127.0.0.1:0");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    for path in ["keypackages", "ack"] {
        let mut s = TcpStream::connect(&relay.addr).expect("connect");
        write!(
            s,
            "POST /v1/mailboxes/AAAAAAAAAAAAAAAAAAAAAA/{path} HTTP/1.1\r\nHost: relay\r\n\
             content-type: application/json\r\ncontent-length: 4000000\r\n\
             x-samizdat-timestamp: {now}\r\nx-samizdat-nonce: BBBBBBBBBBBBBBBBBBBBBB\r\n\
             x-samizdat-signature: AAAA\r\n\r\n{{\"request_id\""
        )
        .expect("send the head");
        // The body never comes: the answer must not wait for it.
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let mut head = [0u8; 12];
        s.read_exact(&mut head)
            .expect("an answer before the body (the relay waited for it)");
        // Refused (no such mailbox, or a signature that cannot be right) — before the body.
        assert!(head.starts_with(b"HTTP/1.1 4"), "{path}: {head:?}");
    }
}

/// M1: a hostile mailbox relay that rewrites where a contact's invitation lives cannot
/// redirect the member: the relay and log the committer signed into the Welcome are used, and
/// the change is reported.
#[test]
fn finding_m1_a_rewritten_welcome_relay_is_not_followed() {
    let mut w = World::new();
    let proxy = crate::mitm::Proxy::start(&w.relay.url);
    let [alice] = w.people(["alice"]);
    // Bob's mailbox is reached through the hostile relay.
    let bob = person_at(&w.dir.path().join("bob"), "bob");
    bob.ok(&["init", "--relay", &proxy.url, "--name", "Bob"]);
    bob.ok(&["accept", &invite_of(&alice), "--name", "alice"]);
    alice.ok(&["sync"]);
    alice.ok(&["group", "create", "plans"]);
    proxy.set(crate::mitm::Mode::RewriteWelcomeRelay);
    alice.ok(&["group", "add", "plans", "Bob"]);
    let plan = w.text("the plan");
    alice.ok(&["send", "plans", &plan]);
    let out = bob.ok(&["sync"]);
    assert!(out.contains("changed on the way"), "{out}");
    proxy.set(crate::mitm::Mode::Honest);
    bob.ok(&["sync"]);
    assert!(bob.ok(&["list"]).contains("plans"));
    assert!(bob.texts("plans").contains(&plan));
}

/// M12: with a secret path prefix, a relay answers a probe without it with the plain 404 page
/// everywhere, while clients given its address (which carries the prefix) work as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_m12_a_secret_path_prefix_hides_the_api() {
    let dir = tempfile::tempdir().expect("tempdir");
    let relay = RelayProc::start_with_args(
        &dir.path().join("relay"),
        "127.0.0.1:0",
        &["--path-prefix", "k7Hs9dQ2xPzw"],
    );
    assert!(relay.url.ends_with("/k7Hs9dQ2xPzw"), "{}", relay.url);
    let http = reqwest::Client::new();
    let host = relay.addr.split('/').next().expect("host").to_string();
    let bare = format!("http://{host}");
    for path in ["/healthz", "/v1/ws", "/v1/mailboxes"] {
        let r = http.get(format!("{bare}{path}")).send().await.expect(path);
        assert_eq!(r.status(), 404, "{path}");
        assert!(r.text().await.expect("text").contains("404 Not Found"));
    }
    let r = http
        .get(format!("{}/healthz", relay.url))
        .send()
        .await
        .expect("healthz");
    assert_eq!(r.status(), 200);
    // Two people on it: an invite, a message, through HTTP and the WebSocket.
    let url = relay.url.clone();
    tokio::task::spawn_blocking(move || {
        let a = person_at(&dir.path().join("a"), "a");
        let b = person_at(&dir.path().join("b"), "b");
        a.ok(&["init", "--relay", &url, "--name", "Anna"]);
        b.ok(&["init", "--relay", &url, "--name", "Boris"]);
        b.ok(&["accept", &invite_of(&a), "--name", "anna"]);
        a.ok(&["sync"]);
        b.ok(&["send", "anna", "through the secret path"]);
        a.ok(&["sync"]);
        assert!(
            a.texts("Boris")
                .contains(&"through the secret path".to_string())
        );
    })
    .await
    .expect("people");
    drop(relay);
}

/// App review: a photo leaves the device without its metadata (here a JPEG whose EXIF and
/// comment carry a position and a camera serial number); `--keep-metadata` sends the bytes
/// as they are.
#[test]
fn finding_app_photos_leave_without_their_metadata() {
    let mut w = World::new();
    let [alice, bob] = w.people(["alice", "bob"]);
    w.connect(&alice, &bob);
    let secret = w.text("GPS 55.7558N 37.6173E camera SN-12345");
    let seg = |marker: u8, contents: &[u8]| {
        let mut s = vec![0xFF, marker];
        s.extend_from_slice(
            &u16::try_from(contents.len() + 2)
                .expect("len")
                .to_be_bytes(),
        );
        s.extend_from_slice(contents);
        s
    };
    let mut exif =
        b"Exif\0\0MM\0*\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01\0\x03\0\0\0\0\0\0".to_vec();
    exif.extend_from_slice(secret.as_bytes());
    let mut photo = vec![0xFF, 0xD8];
    photo.extend(seg(0xE0, b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0"));
    photo.extend(seg(0xE1, &exif));
    photo.extend(seg(0xFE, secret.as_bytes()));
    photo.extend(seg(0xDB, &[1u8; 65]));
    photo.extend(seg(0xC0, b"\x08\0\x10\0\x10\x01\x01\x11\0"));
    photo.extend(seg(0xDA, b"\x01\x01\0\0\x3f\0"));
    let pixels = b"\x12\x34\xFF\x00\x56\x78\x9a";
    photo.extend_from_slice(pixels);
    photo.extend_from_slice(&[0xFF, 0xD9]);
    let files = tempfile::tempdir().expect("tempdir");
    let path = files.path().join("IMG_0001.jpg");
    std::fs::write(&path, &photo).expect("write");
    let received = |extra: &[&str]| {
        let mut args = vec!["send", &bob.display, "--file", path.to_str().expect("utf8")];
        args.extend_from_slice(extra);
        let id = sent_id(&alice.ok(&args));
        bob.ok(&["sync"]);
        let out = tempfile::tempdir().expect("tempdir");
        bob.ok(&[
            "download",
            &id,
            "--out",
            out.path().join("got.jpg").to_str().expect("utf8"),
        ]);
        std::fs::read(out.path().join("got.jpg")).expect("downloaded")
    };
    let has = |hay: &[u8], needle: &[u8]| memchr::memmem::find(hay, needle).is_some();
    let cleaned = received(&[]);
    assert!(!has(&cleaned, b"55.7558N"), "the position left the device");
    assert!(
        !has(&cleaned, b"SN-12345"),
        "the camera's serial number left the device"
    );
    assert!(has(&cleaned, pixels), "the picture itself is unchanged");
    assert!(
        has(&cleaned, b"Exif\0\0MM"),
        "the orientation is kept in an EXIF of its own"
    );
    assert!(cleaned.len() < photo.len());
    assert_eq!(
        received(&["--keep-metadata"]),
        photo,
        "--keep-metadata sends it as it is"
    );
    // The relay's files never held it in plaintext (every `w.text` is scanned for).
    w.assert_no_plaintext();
}

/// App review (impersonation): two contacts whose names look alike — "bob", and "bоb" with a
/// Cyrillic о — are told apart everywhere: each carries a key suffix (in the contact list, the
/// chat list and on their messages) and a colour from their key; a contact whose name looks
/// like no one else's keeps it plain.
#[test]
fn finding_app_look_alike_contacts_are_told_apart() {
    let mut w = World::new();
    let [alice, bob, mallory, carol] = w.people(["alice", "bob", "mallory", "carol"]);
    alice.ok(&["accept", &invite_of(&bob), "--name", "bob"]);
    bob.ok(&["sync"]);
    alice.ok(&["accept", &invite_of(&mallory), "--name", "b\u{043e}b"]);
    mallory.ok(&["sync"]);
    alice.ok(&["accept", &invite_of(&carol), "--name", "carol"]);
    carol.ok(&["sync"]);
    let contacts: Vec<serde_json::Value> = alice
        .ok(&["contacts", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let shown = |alias: &str| -> String {
        contacts
            .iter()
            .find(|c| c["alias"] == alias)
            .and_then(|c| c["shown_as"].as_str())
            .expect("contact")
            .to_string()
    };
    let (real, fake) = (shown("bob"), shown("b\u{043e}b"));
    assert!(
        real.starts_with("bob (~") && fake.starts_with("b\u{043e}b (~"),
        "{real} / {fake}"
    );
    assert_ne!(
        real[real.len() - 7..],
        fake[fake.len() - 7..],
        "the suffixes differ"
    );
    assert_eq!(shown("carol"), "carol");
    assert!(
        contacts
            .iter()
            .all(|c| c["hue"].as_u64().is_some_and(|h| h < 12))
    );
    // On messages and in the chat list too.
    bob.ok(&["send", &alice.display, "from the real bob"]);
    mallory.ok(&["send", &alice.display, "from the other one"]);
    alice.ok(&["sync"]);
    let from = |alias: &str| {
        alice.history(alias).last().expect("a message")["from"]
            .as_str()
            .expect("from")
            .to_string()
    };
    assert_eq!(from("bob"), real);
    assert_eq!(from("b\u{043e}b"), fake);
    let chats = alice.ok(&["list"]);
    assert!(chats.contains(&real) && chats.contains(&fake), "{chats}");
}

/// App review: a file sent while the relay cannot be reached is kept, encrypted, and shown
/// waiting; it is uploaded and sent when the relay is back, as a text is — never dropped.
#[test]
fn finding_app_a_file_sent_while_the_relay_is_away_is_queued() {
    let mut w = World::new();
    let [alice, bob] = w.people(["alice", "bob"]);
    w.connect(&alice, &bob);
    let files = tempfile::tempdir().expect("tempdir");
    let path = files.path().join("report.txt");
    let body = w.text("the report body");
    std::fs::write(&path, &body).expect("write");
    let caption = w.text("the report");
    let (data, addr) = (w.relay.data.clone(), w.relay.addr.clone());
    w.relay.kill();
    let hold = crate::harness::PortHold::new(&addr);
    let err = alice.fails(&[
        "send",
        &bob.display,
        "--file",
        path.to_str().expect("utf8"),
        "--text",
        &caption,
    ]);
    assert!(err.contains("stored"), "{err}");
    let waiting = alice.history(&bob.display).pop().expect("the message");
    assert_eq!(waiting["text"], caption.as_str());
    assert_eq!(waiting["attachment"]["name"], "report.txt", "{waiting}");
    assert_eq!(waiting["delivered"], false);
    // The plaintext was not kept anywhere in the profile (only its encrypted copy).
    assert_eq!(
        crate::app::files_containing(&alice.home, body.as_bytes()),
        Vec::<std::path::PathBuf>::new()
    );
    drop(hold);
    w.relay = RelayProc::start(&data, &addr);
    alice.ok(&["sync"]);
    let sent = alice.history(&bob.display).pop().expect("the message");
    assert_eq!(
        sent["id"], waiting["id"],
        "the same message, not a second one"
    );
    assert_eq!(sent["delivered"], true, "{sent}");
    bob.ok(&["sync"]);
    let got = bob.history("alice").pop().expect("bob got it");
    assert_eq!(got["text"], caption.as_str());
    let out = tempfile::tempdir().expect("tempdir");
    bob.ok(&[
        "download",
        got["id"].as_str().expect("id"),
        "--out",
        out.path().to_str().expect("utf8"),
    ]);
    assert_eq!(
        std::fs::read_to_string(out.path().join("report.txt")).expect("file"),
        body
    );
    w.assert_no_plaintext();
}

/// H2, a commit by a revoked device in a group it is still in (its person's removal of it has
/// not landed yet): members apply it — refusing would split the group — then undo it: the
/// device and everyone it added are removed by the next commit, and the group says so.
#[test]
fn finding_h2_a_commit_by_a_revoked_device_is_undone() {
    let mut w = World::new();
    let [alice, bob, mallory] = w.people(["alice", "bob", "mallory"]);
    w.connect(&alice, &bob);
    w.connect(&alice, &mallory);
    let phone = person_at(&w.dir.path().join("phone"), "phone");
    let j = crate::devices::start_join_on(&phone, &w.relay.url, "120", &[]);
    alice.ok(&["device", "add", &j.link, "--yes"]);
    let (ok, out, err) = crate::devices::finish_join(j);
    assert!(ok, "{out}{err}");
    bob.ok(&["group", "create", "friends"]);
    bob.ok(&["group", "add", "friends", "alice"]);
    alice.ok(&["sync"]);
    phone.ok(&["sync"]);
    bob.ok(&["sync"]);
    assert_eq!(bob.members("friends").len(), 2, "bob and alice");
    // Alice revokes the phone; her removal of its leaves has not landed (the fault point
    // leaves them). The phone, seized, adds Mallory before anyone removes it.
    let id = other_device_id(&alice);
    alice.ok_with(
        &["device", "revoke", &id],
        &[("SAMIZDAT_TEST_REVOKE_WITHOUT_REMOVAL", "1")],
    );
    phone.ok(&["group", "add", "friends", &mallory.display]);
    let seen = bob.ok(&["sync"]);
    assert!(
        seen.contains("a device that alice removed changed this group"),
        "{seen}"
    );
    let members = bob.members("friends");
    assert_eq!(members.len(), 2, "mallory was not removed: {members:?}");
    let devices: u64 = bob
        .ok(&["group", "members", "friends", "--json"])
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("json")["devices"]
                .as_u64()
                .expect("devices")
        })
        .sum();
    assert_eq!(devices, 2, "bob's and alice's own device only");
    // Mallory learns she is out; what the group says next does not reach her.
    mallory.ok(&["sync"]);
    let after = w.text("after the undo");
    bob.ok(&["send", "friends", &after]);
    mallory.ok(&["sync"]);
    alice.ok(&["sync"]);
    assert!(alice.texts("friends").contains(&after));
    assert!(
        !mallory.ok(&["list"]).contains("friends") || !mallory.texts("friends").contains(&after)
    );
}
