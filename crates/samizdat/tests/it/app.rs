//! `samizdat app` over plain HTTP: the local web server's defences (Host allow-list, one-time
//! launch token, session cookie, CSRF, same-origin, headers), escaping of attacker-controlled
//! text, and the language choice. The browser scenario is in tests/browser (Playwright).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::Duration;

use crate::harness::{Person, World};

struct AppProc {
    child: Child,
    /// The app's own host name (`<random>.localhost`).
    host: String,
    port: u16,
    token: String,
}

/// `http://HOST:PORT/PATH` of the app's launch URL: the host (a random `*.localhost` name, not
/// a shared loopback name: security review 3, M5), the port and the path.
fn parse_url(url: &str) -> (String, u16, String) {
    let rest = url.strip_prefix("http://").expect("http URL");
    let (hostport, path) = rest.split_once('/').expect("path");
    let (host, port) = hostport.rsplit_once(':').expect("port");
    assert!(
        host.ends_with(".localhost") && host.len() == 42,
        "the app's host is a random .localhost name: {host}"
    );
    (
        host.to_string(),
        port.parse().expect("port"),
        path.to_string(),
    )
}

impl Drop for AppProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_app(p: &Person) -> AppProc {
    let mut child = p
        .cmd(&["app", "--no-open", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn app");
    let out = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(out).lines();
    let url = loop {
        let line = lines
            .next()
            .expect("the app printed its URL")
            .expect("line");
        if line.starts_with("http://") {
            break line;
        }
    };
    // http://<random>.localhost:PORT/login?token=T
    let (host, port, path) = parse_url(&url);
    let token = path
        .strip_prefix("login?token=")
        .expect("token")
        .to_string();
    AppProc {
        child,
        host,
        port,
        token,
    }
}

struct Resp {
    status: u16,
    head: String,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

/// One HTTP/1.1 request with exactly the headers given (so Host can be anything).
fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Resp {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).ok();
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        req.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).expect("write");
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Resp {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

/// The CSRF token and the first conversation's id on the chats page.
fn csrf_and_first_chat(page: &str) -> (String, String) {
    let after = |marker: &str| {
        page.split(marker)
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or_else(|| panic!("{marker} on the chats page"))
            .to_string()
    };
    (after("name=\"csrf-token\" content=\""), after("href=\"/c/"))
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn assert_hardened(r: &Resp, what: &str) {
    let csp = r.header("content-security-policy").unwrap_or_default();
    assert!(csp.contains("default-src 'self'"), "{what}: CSP {csp:?}");
    assert!(
        csp.contains("frame-ancestors 'none'"),
        "{what}: CSP {csp:?}"
    );
    assert!(!csp.contains("unsafe-inline"), "{what}: CSP {csp:?}");
    assert_eq!(
        r.header("x-content-type-options").as_deref(),
        Some("nosniff"),
        "{what}"
    );
    assert_eq!(
        r.header("referrer-policy").as_deref(),
        Some("no-referrer"),
        "{what}"
    );
}

#[test]
fn app_http_defences_escaping_and_languages() {
    let mut w = World::new();
    let [alice, bob] = w.people(["alice", "bobby"]);
    w.connect(&alice, &bob);
    // Attacker-controlled text, sent before the app starts.
    bob.ok(&["send", "alice", "<img src=x onerror=alert(1)>"]);
    bob.ok(&["send", "alice", "</script><script>alert(2)</script>"]);
    let app = start_app(&alice);
    let host = format!("{}:{}", app.host, app.port);
    let h = |extra: &[(&'static str, String)]| -> Vec<(String, String)> {
        let mut v = vec![("Host".to_string(), host.clone())];
        v.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        v
    };
    let get = |path: &str, hs: &[(String, String)]| {
        let hs: Vec<(&str, &str)> = hs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        http(app.port, "GET", path, &hs, "")
    };
    let post = |path: &str, hs: &[(String, String)], body: &str| {
        let hs: Vec<(&str, &str)> = hs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        http(app.port, "POST", path, &hs, body)
    };

    // DNS rebinding: any other Host is refused, even with a valid token — the shared
    // loopback names too, whose cookies every local server would get (M5).
    let on_loopback = format!("127.0.0.1:{}", app.port);
    let on_localhost = format!("localhost:{}", app.port);
    for bad in [
        "evil.example",
        "evil.example:80",
        "127.0.0.1",
        "127.0.0.2:1",
        on_loopback.as_str(),
        on_localhost.as_str(),
    ] {
        let r = http(
            app.port,
            "GET",
            &format!("/login?token={}", app.token),
            &[("Host", bad)],
            "",
        );
        assert_eq!(r.status, 403, "Host {bad} must be refused");
        assert!(r.header("set-cookie").is_none());
    }
    let r = http(app.port, "GET", "/", &[("Host", &host)], "");
    assert_eq!(r.status, 401, "our host, but there is no cookie");

    // No cookie: 401 everywhere but the login page (which is hardened too).
    for path in [
        "/",
        "/settings",
        "/new",
        "/events",
        "/fragments/chats",
        "/c/x",
    ] {
        let r = get(path, &h(&[]));
        assert_eq!(r.status, 401, "{path} without a session");
        assert_hardened(&r, path);
        assert!(!r.body.contains("canary"), "{path}");
    }
    let r = post("/c/x/send", &h(&[]), "text=hi");
    assert_eq!(r.status, 401);
    let r = get("/login?token=wrong", &h(&[]));
    assert_eq!(r.status, 403);

    // The launch token works once.
    let r = get(&format!("/login?token={}", app.token), &h(&[]));
    assert_eq!(r.status, 303, "{}", r.head);
    let cookie = r.header("set-cookie").expect("a session cookie");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    let session = cookie.split(';').next().unwrap().to_string();
    let replay = get(&format!("/login?token={}", app.token), &h(&[]));
    assert_eq!(
        replay.status, 403,
        "a replayed launch token must be refused"
    );
    assert!(replay.header("set-cookie").is_none());

    let me = h(&[("Cookie", session.clone())]);
    let chats = get("/", &me);
    assert_eq!(chats.status, 200, "{}", chats.body);
    assert_hardened(&chats, "/");
    let (csrf, conv) = csrf_and_first_chat(&chats.body);

    // Attacker-controlled text is shown literally: escaped, never markup.
    let page = get(&format!("/c/{conv}"), &me);
    assert_eq!(page.status, 200);
    assert_hardened(&page, "chat");
    assert_eq!(page.header("cache-control").as_deref(), Some("no-store"));
    assert!(
        page.body.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "{}",
        page.body
    );
    assert!(
        page.body
            .contains("&lt;/script&gt;&lt;script&gt;alert(2)&lt;/script&gt;")
    );
    assert!(!page.body.contains("<img src=x"));
    assert!(!page.body.contains("<script>alert"));
    // No inline script at all: only the one external script.
    assert_eq!(page.body.matches("<script").count(), 1);
    assert!(page.body.contains("<script src=\"/static/app.js\""));

    // State changes need the CSRF token, by POST, from our own origin.
    let send = format!("/c/{conv}/send");
    let r = post(&send, &me, "text=no-token");
    assert_eq!(r.status, 403, "POST without CSRF token");
    let r = post(&send, &me, "text=wrong&csrf=0000");
    assert_eq!(r.status, 403, "POST with a wrong CSRF token");
    let mut cross = me.clone();
    cross.push(("Origin".into(), "http://evil.example".into()));
    let r = post(&send, &cross, &format!("text=x&csrf={csrf}"));
    assert_eq!(r.status, 403, "cross-origin POST");
    let mut site = me.clone();
    site.push(("Sec-Fetch-Site".into(), "cross-site".into()));
    let r = post(&send, &site, &format!("text=x&csrf={csrf}"));
    assert_eq!(r.status, 403, "cross-site POST");
    let r = get(&format!("{send}?text=x&csrf={csrf}"), &me);
    assert_eq!(r.status, 405, "state changes are never GET");
    let mut same = me.clone();
    same.push(("Origin".into(), format!("http://{host}")));
    let r = post(
        &send,
        &same,
        &format!("text={}&csrf={csrf}", enc("hello from the app")),
    );
    assert_eq!(r.status, 303, "{}", r.body);
    // It reached bob.
    let mut got = Vec::new();
    for _ in 0..30 {
        bob.ok(&["sync"]);
        got = bob.texts("alice");
        if got.iter().any(|t| t == "hello from the app") {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(got.iter().any(|t| t == "hello from the app"), "{got:?}");

    // Languages: Accept-Language first, then the choice in the settings.
    let mut ru = me.clone();
    ru.push(("Accept-Language".into(), "ru-RU,ru;q=0.9,en;q=0.5".into()));
    let r = get("/", &ru);
    assert!(r.body.contains("lang=\"ru\""));
    assert!(
        r.body.contains("Чаты") && r.body.contains("Настройки"),
        "{}",
        r.body
    );
    let r = get("/", &me);
    assert!(r.body.contains("Chats") && !r.body.contains("Чаты"));
    let r = post("/settings/lang", &me, &format!("lang=ru&csrf={csrf}"));
    assert_eq!(r.status, 303);
    let r = get("/settings", &me);
    assert!(r.body.contains("Язык"), "the setting wins over the browser");
    assert_hardened(&r, "settings");
    let r = get("/nowhere", &me);
    assert_eq!(r.status, 404);
    assert_hardened(&r, "404");

    // Static assets load from us only.
    let js = get("/static/app.js", &h(&[]));
    assert_eq!(js.status, 200);
    assert!(!js.body.contains("http://") && !js.body.contains("https://"));
    let css = get("/static/app.css", &h(&[]));
    assert!(!css.body.contains("url(http"), "no third-party fetches");
}

/// With `samizdat serve` already owning the profile, the app needs no passphrase: it uses
/// the service through its socket (the same JSON-RPC methods), and its pages go live from
/// the service's events.
#[test]
fn the_app_uses_a_running_serve() {
    let mut w = World::new();
    let [alice, bob] = w.people(["alice", "bobby"]);
    w.connect(&alice, &bob);
    let mut serve = alice
        .cmd(&["serve"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve");
    let mut first = String::new();
    BufReader::new(serve.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("serve prints a line");
    assert!(first.contains("serving"), "{first}");
    // No passphrase for the app: it must not need one.
    let mut app = {
        let mut cmd = alice.cmd(&["app", "--no-open", "--listen", "127.0.0.1:0"]);
        cmd.env_remove("SAMIZDAT_PASSPHRASE");
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("app");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let url = loop {
            let line = lines.next().expect("a URL").expect("line");
            if line.starts_with("http://") {
                break line;
            }
        };
        (child, url)
    };
    let (host, port, path) = parse_url(&app.1);
    let host = format!("{host}:{port}");
    let login = http(port, "GET", &format!("/{path}"), &[("Host", &host)], "");
    assert_eq!(login.status, 303);
    let session = login.header("set-cookie").expect("cookie");
    let cookie = session.split(';').next().unwrap().to_string();
    let page = http(
        port,
        "GET",
        "/",
        &[("Host", &host), ("Cookie", &cookie)],
        "",
    );
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("data-page=\"chats\""),
        "not the unlock page: {}",
        page.body
    );
    let t = w.text("through the running service");
    bob.ok(&["send", "alice", &t]);
    // The service receives it (realtime); the app shows it.
    let conv = page
        .body
        .split("href=\"/c/")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("a conversation")
        .to_string();
    let mut shown = false;
    for _ in 0..60 {
        let chat = http(
            port,
            "GET",
            &format!("/c/{conv}"),
            &[("Host", &host), ("Cookie", &cookie)],
            "",
        );
        if chat.body.contains(&t) {
            shown = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(shown, "the message did not reach the app through serve");
    let _ = app.0.kill();
    let _ = app.0.wait();
    let _ = serve.kill();
    let _ = serve.wait();
    w.assert_no_plaintext();
}

/// Every file under `dir` whose bytes contain `needle`.
pub(crate) fn files_containing(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            found.extend(files_containing(&p, needle));
        } else if std::fs::read(&p).is_ok_and(|b| memchr::memmem::find(&b, needle).is_some()) {
            found.push(p);
        }
    }
    found
}

/// Security review 3, L9 and the architecture review: a file sent from the app is never
/// written to the disk in plaintext while it arrives (it is held in memory), and the app's
/// server closes a connection whose request headers do not arrive in time.
#[test]
fn finding_l9_the_app_keeps_uploads_in_memory_and_drops_half_sent_requests() {
    let mut w = World::new();
    let [alice, bob] = w.people(["alice", "bob"]);
    w.connect(&alice, &bob);
    let app = start_app(&alice);
    let host = format!("{}:{}", app.host, app.port);
    let r = http(
        app.port,
        "GET",
        &format!("/login?token={}", app.token),
        &[("Host", &host)],
        "",
    );
    assert_eq!(r.status, 303, "{}", r.head);
    let cookie = r.header("set-cookie").expect("cookie");
    let session = cookie.split(';').next().expect("cookie").to_string();
    let chats = http(
        app.port,
        "GET",
        "/",
        &[("Host", &host), ("Cookie", &session)],
        "",
    );
    let (csrf, conv) = csrf_and_first_chat(&chats.body);

    // A 600 KB file whose every 4 KB carries a marker; half of it is sent, then the test
    // looks through the whole profile for it.
    let marker = w.text("upload marker");
    let mut content = Vec::new();
    while content.len() < 600_000 {
        content.extend_from_slice(marker.as_bytes());
        content.resize(content.len() + 4096 - marker.len(), b'.');
    }
    let boundary = "----samizdat-test-boundary";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n{csrf}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"text\"\r\n\r\nminutes\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"minutes.txt\"\r\n\
         Content-Type: text/plain\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(&content);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let mut s = TcpStream::connect(("127.0.0.1", app.port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(120))).ok();
    write!(
        s,
        "POST /c/{conv}/file HTTP/1.1\r\nHost: {host}\r\nCookie: {session}\r\nOrigin: http://{host}\r\n\
         Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .expect("head");
    let half = body.len() / 2;
    s.write_all(&body[..half]).expect("first half");
    s.flush().expect("flush");
    // Give the app time to take in what it was sent (it would be on disk by now).
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        files_containing(&alice.home, marker.as_bytes()),
        Vec::<std::path::PathBuf>::new(),
        "the plaintext of an upload reached the disk"
    );
    s.write_all(&body[half..]).expect("second half");
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 303"), "{answer}");
    assert_eq!(files_containing(&alice.home, marker.as_bytes()).len(), 0);
    // It reached Bob, under its name, whole.
    bob.ok(&["sync"]);
    let m = bob
        .history("alice")
        .into_iter()
        .rev()
        .find(|m| !m["attachment"].is_null())
        .expect("the file reached bob");
    assert_eq!(m["attachment"]["name"], "minutes.txt", "{m}");
    let out = tempfile::tempdir().expect("tempdir");
    let id = m["id"].as_str().expect("id").to_string();
    bob.ok(&["download", &id, "--out", out.path().to_str().expect("utf8")]);
    assert_eq!(
        std::fs::read(out.path().join("minutes.txt")).expect("file"),
        content
    );

    // Request headers that never finish: the connection is closed (within the app's
    // 10-second header deadline; the test allows a minute).
    let mut slow = TcpStream::connect(("127.0.0.1", app.port)).expect("connect");
    slow.set_read_timeout(Some(Duration::from_secs(60))).ok();
    write!(slow, "GET / HTTP/1.1\r\nHost: {host}\r\n").expect("partial head");
    let mut rest = Vec::new();
    let closed = slow.read_to_end(&mut rest);
    assert!(
        closed.is_ok(),
        "the half-sent request was kept open: {closed:?}"
    );
}
