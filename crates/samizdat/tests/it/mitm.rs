//! Hostile relay as a man in the middle: a proxy between the clients and an honest relay
//! that drops, duplicates, reorders, replays, bit-flips and truncates log entries, refuses a
//! commit while keeping it, and later serves that kept commit to one member in place of the
//! accepted one (a fork). Clients must never display a forged, altered or duplicated message,
//! must report gaps and forks, and must recover where recovery is possible.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use samizdat_proto::{Bytes, Entries, EntryKind};

use crate::harness::{Person, RelayProc, hex_rand};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Honest,
    /// Drop the first application entry of the next page.
    DropOne,
    /// Serve every entry twice, pages reversed.
    DuplicateAndReorder,
    /// Also serve every entry this proxy ever served for the group again.
    Replay,
    /// Flip one bit in the first application entry of the next page.
    FlipOne,
    /// Cut the first application entry of the next page in half.
    TruncateOne,
    /// Answer the next commit with a fake epoch_conflict, but keep it.
    CaptureNextCommit,
    /// Serve kept commits in place of the accepted ones of the same epoch.
    Fork,
    /// Flip one bit of the next blob downloaded (a sealed ratchet tree of a Welcome).
    FlipBlob,
    /// Flip one bit in the body of the first message dropped into any one mailbox (a new
    /// device's KeyPackages, sent to the identity device's one-time mailbox).
    TamperFirstDrop,
    /// Rewrite the relay address of every Welcome part in mailbox reads (a hostile mailbox
    /// relay redirecting a contact's invitation; security review 3, M1).
    RewriteWelcomeRelay,
}

struct ProxyState {
    relay: String,
    http: reqwest::Client,
    mode: Mutex<Mode>,
    /// (group, epoch) → a commit the relay never accepted.
    kept: Mutex<HashMap<(String, u64), Bytes>>,
    served: Mutex<HashMap<String, Vec<samizdat_proto::Entry>>>,
    /// Messages dropped so far, by mailbox path.
    drops: Mutex<HashMap<String, usize>>,
}

pub struct Proxy {
    pub url: String,
    state: Arc<ProxyState>,
}

impl Proxy {
    pub fn start(relay: &str) -> Proxy {
        let state = Arc::new(ProxyState {
            relay: relay.to_string(),
            http: reqwest::Client::new(),
            mode: Mutex::new(Mode::Honest),
            kept: Mutex::default(),
            served: Mutex::default(),
            drops: Mutex::default(),
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let st = state.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                let app = axum::Router::new().fallback(handle).with_state(st);
                axum::serve(listener, app).await.unwrap();
            });
        });
        let addr = rx.recv().unwrap();
        Proxy {
            url: format!("http://{addr}"),
            state,
        }
    }

    pub fn set(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    pub fn kept_commits(&self) -> usize {
        self.state.kept.lock().unwrap().len()
    }
}

fn json(status: StatusCode, body: Vec<u8>) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap()
}

async fn handle(State(p): State<Arc<ProxyState>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 64 << 20)
        .await
        .unwrap_or_default();
    let path = parts.uri.path().to_string();
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or(path.clone());
    let group = path
        .strip_prefix("/v1/groups/")
        .and_then(|r| r.strip_suffix("/entries"))
        .map(str::to_string);
    let mode = *p.mode.lock().unwrap();

    if parts.method == Method::POST && mode == Mode::CaptureNextCommit && group.is_some() {
        // The append in either form: JSON, or the entry itself with its metadata in headers.
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let commit = if header("content-type").as_deref() == Some("application/octet-stream") {
            (header("x-samizdat-kind").as_deref() == Some("commit")).then(|| {
                let epoch = header("x-samizdat-epoch")
                    .and_then(|e| e.parse().ok())
                    .unwrap_or(0);
                (epoch, Bytes(bytes.to_vec()))
            })
        } else {
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            (v["kind"] == "commit").then(|| {
                let epoch = v["epoch"].as_u64().unwrap_or(0);
                (epoch, serde_json::from_value(v["body"].clone()).unwrap())
            })
        };
        if let Some((epoch, body)) = commit {
            p.kept
                .lock()
                .unwrap()
                .insert((group.clone().unwrap(), epoch), body);
            *p.mode.lock().unwrap() = Mode::Honest;
            let e = serde_json::json!({"code": "epoch_conflict", "message": "someone else committed first", "current_epoch": epoch});
            return json(StatusCode::CONFLICT, serde_json::to_vec(&e).unwrap());
        }
    }

    let mut bytes = bytes.to_vec();
    if parts.method == Method::POST
        && path.starts_with("/v1/mailboxes/")
        && path.ends_with("/messages")
    {
        let n = {
            let mut drops = p.drops.lock().unwrap();
            let n = drops.entry(path.clone()).or_default();
            *n += 1;
            *n
        };
        if mode == Mode::TamperFirstDrop && n == 1 {
            let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            let mut body: Bytes = serde_json::from_value(v["body"].clone()).unwrap();
            let mid = body.0.len() / 2;
            body.0[mid] ^= 0x01;
            v["body"] = serde_json::to_value(&body).unwrap();
            bytes = serde_json::to_vec(&v).unwrap();
            *p.mode.lock().unwrap() = Mode::Honest;
        }
    }
    let mut rb = p
        .http
        .request(parts.method.clone(), format!("{}{target}", p.relay));
    for (k, v) in &parts.headers {
        if k != "host" && k != "content-length" {
            rb = rb.header(k, v);
        }
    }
    let resp = rb.body(bytes).send().await.unwrap();
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
    let mut body = resp.bytes().await.unwrap().to_vec();
    if mode == Mode::FlipBlob
        && parts.method == Method::GET
        && path.starts_with("/v1/blobs/")
        && !path.ends_with("/upload")
        && status.is_success()
        && !body.is_empty()
    {
        let mid = body.len() / 2;
        body[mid] ^= 0x01;
        *p.mode.lock().unwrap() = Mode::Honest;
        return Response::builder()
            .status(status)
            .header("content-type", "application/octet-stream")
            .body(Body::from(body))
            .unwrap();
    }
    if mode == Mode::RewriteWelcomeRelay
        && parts.method == Method::GET
        && path.starts_with("/v1/mailboxes/")
        && path.ends_with("/messages")
        && status.is_success()
    {
        let mut page: samizdat_proto::MailboxMessages = serde_json::from_slice(&body).unwrap();
        for m in &mut page.messages {
            if let Some(Ok(mut part)) = samizdat_core::welcome::WelcomePart::decode(&m.body.0) {
                part.relay = b"http://127.0.0.1:9".to_vec();
                m.body = Bytes(part.encode().unwrap());
            }
        }
        return json(status, serde_json::to_vec(&page).unwrap());
    }
    let (Some(group), true, true) = (group, parts.method == Method::GET, status.is_success())
    else {
        return json(status, body);
    };
    let mut page: Entries = serde_json::from_slice(&body).unwrap();
    let first_app = page
        .entries
        .iter()
        .position(|e| e.kind == EntryKind::Application);
    match mode {
        Mode::Honest
        | Mode::CaptureNextCommit
        | Mode::FlipBlob
        | Mode::TamperFirstDrop
        | Mode::RewriteWelcomeRelay => {}
        Mode::DropOne => {
            if let Some(i) = first_app {
                page.entries.remove(i);
                *p.mode.lock().unwrap() = Mode::Honest;
            }
        }
        Mode::DuplicateAndReorder => {
            let copy = page.entries.clone();
            page.entries.extend(copy);
            page.entries.reverse();
        }
        Mode::Replay => {
            let old = p
                .served
                .lock()
                .unwrap()
                .get(&group)
                .cloned()
                .unwrap_or_default();
            page.entries.extend(old);
        }
        Mode::FlipOne | Mode::TruncateOne => {
            if let Some(i) = first_app {
                let b = &mut page.entries[i].body.0;
                let mid = b.len() / 2;
                if mode == Mode::FlipOne {
                    b[mid] ^= 0x04;
                } else {
                    b.truncate(mid);
                }
                *p.mode.lock().unwrap() = Mode::Honest;
            }
        }
        Mode::Fork => {
            let kept = p.kept.lock().unwrap();
            for e in page
                .entries
                .iter_mut()
                .filter(|e| e.kind == EntryKind::Commit)
            {
                if let Some(other) = kept.get(&(group.clone(), e.epoch)) {
                    e.body = other.clone();
                }
            }
        }
    }
    p.served
        .lock()
        .unwrap()
        .entry(group)
        .or_default()
        .extend(page.entries.iter().cloned());
    json(status, serde_json::to_vec(&page).unwrap())
}

/// A new profile under `dir` whose relay is the proxy.
fn person_behind(dir: &std::path::Path, proxy: &Proxy, name: &str) -> Person {
    let p = Person {
        name: name.into(),
        display: format!("{name}-{}", &hex_rand()[..6]),
        home: dir.join(name),
    };
    p.ok(&["init", "--relay", &proxy.url, "--name", &p.display]);
    p
}

fn texts(p: &Person, target: &str) -> Vec<String> {
    p.texts(target)
}

#[test]
fn man_in_the_middle_relay_cannot_forge_or_duplicate_and_forks_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let relay = RelayProc::start(&dir.path().join("relay"), "127.0.0.1:0");
    let proxy = Proxy::start(&relay.url);
    let person = |name: &str| person_behind(dir.path(), &proxy, name);
    let (alice, bob, carol) = (person("alice"), person("bob"), person("carol"));
    for other in [&bob, &carol] {
        let link = alice.ok(&["invite"]).lines().last().unwrap().to_string();
        other.ok(&["accept", &link, "--name", "alice"]);
        alice.ok(&["sync"]);
    }
    alice.ok(&["group", "create", "g"]);
    alice.ok(&["group", "add", "g", &bob.display, &carol.display]);
    bob.ok(&["sync"]);
    carol.ok(&["sync"]);
    let say = |who: &Person, text: &str| who.ok(&["send", "g", text]);

    // Drop: the gap is reported.
    alice.ok(&["sync"]);
    say(&bob, "m1");
    say(&bob, "m2");
    proxy.set(Mode::DropOne);
    let out = alice.ok(&["sync"]);
    assert!(out.contains("m2") && !out.contains("m1"), "{out}");
    assert!(
        out.contains("missing"),
        "a withheld entry must be reported: {out}"
    );

    // Duplicates, reordering and replays: each message once, in log order.
    say(&bob, "m3");
    say(&carol, "m4");
    proxy.set(Mode::DuplicateAndReorder);
    alice.ok(&["sync"]);
    proxy.set(Mode::Replay);
    assert!(alice.ok(&["sync"]).contains("nothing new"));
    proxy.set(Mode::Honest);
    let shown = texts(&alice, "g");
    assert_eq!(shown, vec!["m2", "m3", "m4"], "{shown:?}");

    // Bit flip and truncation: never displayed, reported, and the group goes on.
    say(&bob, "m5");
    proxy.set(Mode::FlipOne);
    let out = alice.ok(&["sync"]);
    assert!(
        !out.contains("m5") && out.contains("rejected entry"),
        "{out}"
    );
    say(&bob, "m6");
    proxy.set(Mode::TruncateOne);
    let out = alice.ok(&["sync"]);
    assert!(
        !out.contains("m6") && out.contains("rejected entry"),
        "{out}"
    );
    say(&bob, "m7");
    assert!(alice.ok(&["sync"]).contains("m7"));

    // Fork: the proxy refuses alice's commit but keeps it, lets her retry, then serves the
    // kept commit to carol only.
    bob.ok(&["sync"]);
    carol.ok(&["sync"]);
    proxy.set(Mode::CaptureNextCommit);
    alice.ok(&["group", "remove", "g", &bob.display]);
    assert_eq!(proxy.kept_commits(), 1, "the first commit attempt was kept");
    proxy.set(Mode::Fork);
    let out = carol.ok(&["sync"]);
    assert!(
        out.contains("lost sync"),
        "the fork must be reported: {out}"
    );
    proxy.set(Mode::Honest);
    say(&alice, "m8");
    let out = carol.ok(&["sync"]);
    assert!(!out.contains("m8"), "{out}");
    assert!(bob.ok(&["sync"]).contains("removed"));
    // Recovery: carol (who, seeing the mismatch alone, re-created the log for herself: the
    // others never follow a forked epoch's notice) is re-added by a member of the group as
    // she knew it, and reads again.
    alice.ok(&["group", "remove", "g", &carol.display]);
    alice.ok(&["group", "add", "g", &carol.display]);
    carol.ok(&["sync"]);
    say(&alice, "m9");
    assert!(carol.ok(&["sync"]).contains("m9"));
    let carol_sees = texts(&carol, "g");
    assert_eq!(carol_sees.iter().filter(|t| *t == "m9").count(), 1);
    assert!(!carol_sees.contains(&"m8".to_string()));
}

/// Welcomes stored once: the relay holds the sealed ratchet tree a new member needs. A relay
/// that alters it cannot make anyone join a group other than the one the committer signed:
/// the join is refused and reported, nothing is joined, and a fresh Welcome works.
#[test]
fn a_relay_altering_the_welcome_tree_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let relay = RelayProc::start(&dir.path().join("relay"), "127.0.0.1:0");
    let proxy = Proxy::start(&relay.url);
    let person = |name: &str| person_behind(dir.path(), &proxy, name);
    let (alice, bob) = (person("alice"), person("bob"));
    let link = alice.ok(&["invite"]).lines().last().unwrap().to_string();
    bob.ok(&["accept", &link, "--name", "alice"]);
    alice.ok(&["sync"]);
    alice.ok(&["group", "create", "g"]);
    alice.ok(&["group", "add", "g", &bob.display]);
    proxy.set(Mode::FlipBlob);
    let out = bob.ok(&["sync"]);
    assert!(
        out.contains("could not join") && out.contains("ratchet tree"),
        "an altered tree must be refused and reported: {out}"
    );
    let convs = bob.ok(&["list", "--json"]);
    assert_eq!(convs.lines().count(), 1, "only the 1:1 chat: {convs}");
    // A fresh Welcome (another tree blob, served unaltered) joins.
    alice.ok(&["group", "readd", "g", &bob.display]);
    let out = bob.ok(&["sync"]);
    assert!(out.contains("joined"), "{out}");
    alice.ok(&["send", "g", "after the fresh welcome"]);
    assert!(bob.ok(&["sync"]).contains("after the fresh welcome"));
}
