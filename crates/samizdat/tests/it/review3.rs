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
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIPPED: needs root to run a listener as another account");
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
    let r = reqwest::Client::new()
        .post(format!("{}/v1/blobs", relay.url))
        .header("upload-length", "100")
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
    for guess in ["V4([127, 0, 0, 1])", "127.0.0.1", "V4(127.0.0.1)"] {
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
    let sent = alice.ok(&["send", &bob.display, "--file", src.to_str().expect("utf8")]);
    let id = sent
        .lines()
        .find_map(|l| l.strip_prefix("sent "))
        .expect("sent line")
        .trim()
        .to_string();
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
        .args(["relay", "--listen", "127.0.0.1:0", "--data"])
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
    let link = mallory
        .ok(&["invite"])
        .lines()
        .last()
        .expect("link")
        .to_string();
    bob.ok(&["accept", &link, "--name", "mal"]);
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
