//! Reach under blocking: proxies. The client runs in a network namespace whose only link is
//! a veth pair to the proxy's address; the relay listens on the host's loopback, which the
//! namespace cannot reach — so anything that works went through the proxy, and a profile
//! without the proxy fails. Proxies are real Debian servers (`microsocks`, `tinyproxy`,
//! `danted`); `.ci/run` installs them. Needs root (network namespaces); without root or the
//! programs each test says `SKIPPED` (and `.ci/run` fails).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use crate::harness::{BIN, PASSPHRASE, Person, World, hex_rand, needs};

/// A network namespace with one veth link to the host: host side `10.77.A.B+1/30`, namespace
/// side `10.77.A.B+2/30` (a /30 picked at random), no other route. Removed on drop.
struct NetNs {
    name: String,
    host_if: String,
    host_ip: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl NetNs {
    fn new() -> NetNs {
        let tag = &hex_rand()[..6];
        // A /30 of its own among 16,384 (two namespaces of tests running at once on one
        // subnet broke each other's routes: one in 63 before).
        let r = u16::from_str_radix(&tag[..4], 16).unwrap_or(1);
        let (a, b) = (r >> 6 & 0xff, (r & 0x3f) * 4);
        let name = format!("sz{tag}");
        let host_if = format!("vh{tag}");
        let ns_if = format!("vn{tag}");
        let host_ip = format!("10.77.{a}.{}", b + 1);
        let ns_ip = format!("10.77.{a}.{}", b + 2);
        ip(&["netns", "add", &name]);
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ]);
        ip(&["link", "set", &ns_if, "netns", &name]);
        ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        ip(&[
            "-n",
            &name,
            "addr",
            "add",
            &format!("{ns_ip}/30"),
            "dev",
            &ns_if,
        ]);
        ip(&["-n", &name, "link", "set", &ns_if, "up"]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        NetNs {
            name,
            host_if,
            host_ip,
        }
    }

    /// `samizdat --home HOME ARGS…` inside the namespace.
    fn samizdat(&self, home: &Path, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, BIN, "--home"])
            .arg(home)
            .args(args)
            .env("SAMIZDAT_PASSPHRASE", PASSPHRASE)
            .env("SAMIZDAT_BACKUP_PASSPHRASE", PASSPHRASE)
            .env_remove("SAMIZDAT_PROXY")
            .stdin(Stdio::null());
        c
    }

    fn ok(&self, home: &Path, args: &[&str]) -> String {
        let out = self.samizdat(home, args).output().expect("run");
        assert!(
            out.status.success(),
            "samizdat {args:?} in the namespace: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn run(&self, home: &Path, args: &[&str]) -> Output {
        self.samizdat(home, args).output().expect("run")
    }
}

impl NetNs {
    /// Give the namespace its own name resolution: an empty hosts file (not even
    /// `localhost`) and a DNS server inside the namespace that writes every name it is asked
    /// for to the returned file and refuses it. Any name the client resolves itself shows up
    /// there.
    fn logging_dns(&self, dir: &Path) -> (PathBuf, Server) {
        let etc = PathBuf::from("/etc/netns").join(&self.name);
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(etc.join("hosts"), "").unwrap();
        std::fs::write(
            etc.join("resolv.conf"),
            "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
        )
        .unwrap();
        let log = dir.join("dns-queries.log");
        std::fs::write(&log, "").unwrap();
        let script = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 53))
print("ready", flush=True)
while True:
    q, peer = s.recvfrom(4096)
    labels, i = [], 12
    while i < len(q) and q[i]:
        labels.append(q[i + 1:i + 1 + q[i]].decode("ascii", "replace")); i += 1 + q[i]
    with open(sys.argv[1], "a") as f: f.write(".".join(labels) + "\n")
    # REFUSED, echoing the question.
    s.sendto(q[:2] + bytes([0x81, 0x85]) + q[4:6] + b"\0\0\0\0\0\0" + q[12:], peer)
"#;
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.name, "python3", "-c", script])
            .arg(&log)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line.trim(), "ready");
        (log, Server(child))
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(PathBuf::from("/etc/netns").join(&self.name));
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A proxy server process, stopped on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Wait until something listens on `addr` (bounded).
fn wait_listening(addr: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing listens on {addr}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn microsocks(ip: &str, port: u16, auth: Option<(&str, &str)>) -> Server {
    let mut c = Command::new("microsocks");
    c.args(["-i", ip, "-p", &port.to_string()]);
    if let Some((u, p)) = auth {
        c.args(["-u", u, "-P", p]);
    }
    let child = c
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("microsocks (apt-get install microsocks)");
    wait_listening(&format!("{ip}:{port}"));
    Server(child)
}

fn tinyproxy(dir: &Path, ip: &str, port: u16) -> Server {
    let conf = dir.join("tinyproxy.conf");
    // No ConnectPort lines: CONNECT to any port (the relay's is random).
    std::fs::write(
        &conf,
        format!(
            "Port {port}\nListen {ip}\nTimeout 600\nMaxClients 100\nAllow 10.77.0.0/16\nLogLevel Error\nLogFile \"{}\"\n",
            dir.join("tinyproxy.log").display()
        ),
    )
    .unwrap();
    let child = Command::new("tinyproxy")
        .args(["-d", "-c"])
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tinyproxy (apt-get install tinyproxy)");
    wait_listening(&format!("{ip}:{port}"));
    Server(child)
}

fn danted(dir: &Path, ip: &str, port: u16) -> Server {
    let conf = dir.join("danted.conf");
    std::fs::write(
        &conf,
        format!(
            "logoutput: {log}\ninternal: {ip} port = {port}\nexternal: lo\n\
             socksmethod: none\nclientmethod: none\nuser.privileged: root\nuser.unprivileged: nobody\n\
             client pass {{ from: 10.77.0.0/16 to: 0.0.0.0/0 }}\n\
             socks pass {{ from: 10.77.0.0/16 to: 0.0.0.0/0 command: connect }}\n",
            log = dir.join("danted.log").display()
        ),
    )
    .unwrap();
    let child = Command::new("danted")
        .args(["-f"])
        .arg(&conf)
        .arg("-p")
        .arg(dir.join("danted.pid"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("danted (apt-get install dante-server)");
    wait_listening(&format!("{ip}:{port}"));
    Server(child)
}

/// A profile in the namespace, going through `proxy`, connected with `alice` (on the host);
/// they chat both ways, over HTTP and over the realtime WebSocket, and send a file.
fn chat_through(w: &mut World, ns: &NetNs, alice: &Person, name: &str, proxy: &str) {
    let home: PathBuf = w.dir.path().join(name);
    ns.ok(
        &home,
        &[
            "init",
            "--relay",
            &w.relay.url,
            "--name",
            name,
            "--proxy",
            proxy,
        ],
    );
    let who = ns.ok(&home, &["whoami"]);
    assert!(who.contains("proxy:"), "{who}");
    assert!(
        !who.contains("secret-pass"),
        "a proxy password shown: {who}"
    );
    let link = alice.ok(&["invite"]).lines().last().unwrap().to_string();
    ns.ok(&home, &["accept", &link, "--name", "alice"]);
    alice.ok(&["sync"]);
    let hi = w.text(&format!("hello from {name} behind a proxy"));
    ns.ok(&home, &["send", "alice", &hi]);
    assert!(alice.ok(&["sync"]).contains(&hi));
    // The realtime connection (WebSocket) through the proxy: listen for one message.
    let mut listen = ns
        .samizdat(&home, &["listen", "--count", "1", "--timeout", "60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let back = w.text(&format!("to {name}"));
    alice.ok(&["send", name, &back]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while listen.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "listen never finished"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = listen.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&back),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // An attachment, both ways.
    let file = w.dir.path().join(format!("{name}.bin"));
    std::fs::write(&file, vec![9u8; 300_000]).unwrap();
    let sent = ns.ok(&home, &["send", "alice", "--file", file.to_str().unwrap()]);
    let id = sent.trim().trim_start_matches("sent ").to_string();
    alice.ok(&["sync"]);
    let got = w.dir.path().join(format!("{name}-got.bin"));
    alice.ok(&["download", &id, "--out", got.to_str().unwrap()]);
    assert_eq!(std::fs::read(&got).unwrap(), vec![9u8; 300_000]);
}

#[test]
fn every_connection_goes_through_the_proxy_and_none_goes_direct() {
    if !needs(
        "reach::every_connection_goes_through_the_proxy_and_none_goes_direct",
        &["ip", "microsocks", "danted", "tinyproxy"],
        true,
    ) {
        return;
    }
    let mut w = World::new();
    let alice = w.person("alice");
    let ns = NetNs::new();
    let cfg = tempfile::tempdir().unwrap();

    // Control: without a proxy the namespace reaches nothing.
    let direct = w.dir.path().join("direct");
    let out = ns.run(
        &direct,
        &["init", "--relay", &w.relay.url, "--name", "direct"],
    );
    assert!(
        !out.status.success(),
        "the namespace reached the relay directly"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot reach the relay"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // microsocks without and with a password, SOCKS5 with names resolved by the proxy and
    // locally; dante; tinyproxy (HTTP, CONNECT for the WebSocket).
    let _m1 = microsocks(&ns.host_ip, 1080, None);
    let _m2 = microsocks(&ns.host_ip, 1081, Some(("samizdat", "secret-pass")));
    let _d = danted(cfg.path(), &ns.host_ip, 1082);
    let _t = tinyproxy(cfg.path(), &ns.host_ip, 8888);
    let h = ns.host_ip.clone();
    chat_through(&mut w, &ns, &alice, "carol", &format!("socks5h://{h}:1080"));
    chat_through(
        &mut w,
        &ns,
        &alice,
        "dave",
        &format!("socks5://samizdat:secret-pass@{h}:1081"),
    );
    chat_through(&mut w, &ns, &alice, "erin", &format!("socks5h://{h}:1082"));
    chat_through(&mut w, &ns, &alice, "frank", &format!("http://{h}:8888"));

    // A wrong password is a clear error.
    let bad = w.dir.path().join("bad");
    let out = ns.run(
        &bad,
        &[
            "init",
            "--relay",
            &w.relay.url,
            "--name",
            "bad",
            "--proxy",
            &format!("socks5://samizdat:wrong@{h}:1081"),
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("proxy"), "{err}");
    assert!(!err.contains("wrong@"), "the password is not echoed: {err}");
    w.assert_no_plaintext();
}

/// With `socks5h` the client resolves nothing itself: the relay's name goes to the proxy.
/// The control: with `socks5` the same name is looked up in the namespace (and fails there).
#[test]
fn socks5h_leaks_no_dns_lookup() {
    if !needs(
        "reach::socks5h_leaks_no_dns_lookup",
        &["ip", "microsocks", "python3"],
        true,
    ) {
        return;
    }
    let mut w = World::new();
    let ns = NetNs::new();
    let cfg = tempfile::tempdir().unwrap();
    let (queries, _dns) = ns.logging_dns(cfg.path());
    let _m = microsocks(&ns.host_ip, 1080, None);
    // `localhost` resolves on the proxy's side (the host) and nowhere in the namespace.
    let port = w.relay.addr.rsplit(':').next().unwrap().to_string();
    let relay = format!("http://localhost:{port}");
    let h = ns.host_ip.clone();
    let home = w.dir.path().join("grace");
    ns.ok(
        &home,
        &[
            "init",
            "--relay",
            &relay,
            "--name",
            "grace",
            "--proxy",
            &format!("socks5h://{h}:1080"),
        ],
    );
    ns.ok(&home, &["sync"]);
    let asked = std::fs::read_to_string(&queries).unwrap();
    assert!(
        asked.trim().is_empty(),
        "names resolved in the namespace: {asked}"
    );
    // Control: socks5 resolves here, and the logging server sees it.
    let other = w.dir.path().join("heidi");
    let out = ns.run(
        &other,
        &[
            "init",
            "--relay",
            &relay,
            "--name",
            "heidi",
            "--proxy",
            &format!("socks5://{h}:1080"),
        ],
    );
    assert!(
        !out.status.success(),
        "localhost cannot resolve in the namespace"
    );
    let asked = std::fs::read_to_string(&queries).unwrap();
    assert!(
        asked.contains("localhost"),
        "the control lookup was not seen: {asked:?}"
    );
    let _ = &mut w;
}

/// Isolation: through a SOCKS server that logs user names (as Tor isolates by them), the
/// mailbox and each conversation arrive under their own identity, over their own
/// connections; no connection carries both an owner signature and a group token, or two
/// conversations' traffic.
#[test]
fn isolation_keeps_the_mailbox_and_each_conversation_apart() {
    if !needs(
        "reach::isolation_keeps_the_mailbox_and_each_conversation_apart",
        &["python3"],
        false,
    ) {
        return;
    }
    let mut w = World::new();
    let [bob, carol] = w.people(["bob", "carol"]);
    let cfg = tempfile::tempdir().unwrap();
    let log = cfg.path().join("socks.log");
    let (port, _proxy) = crate::harness::socks_logger(&log);
    let alice = w.isolated_person("alice", port);
    assert!(alice.ok(&["whoami"]).contains("(isolated)"));
    w.connect(&alice, &bob);
    w.connect(&alice, &carol);
    // alice listens (mailbox socket + one socket per conversation) while both write.
    let mut listen = alice
        .cmd(&["listen", "--count", "2", "--timeout", "60", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let (b, c) = (w.text("bob to alice"), w.text("carol to alice"));
    bob.ok(&["send", "alice", &b]);
    carol.ok(&["send", "alice", &c]);
    let out = {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while listen.try_wait().unwrap().is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "listen never finished"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        listen.wait_with_output().unwrap()
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&b) && text.contains(&c), "{text}");
    alice.ok(&["send", &bob.display, &w.text("reply to bob")]);
    alice.ok(&["send", &carol.display, &w.text("reply to carol")]);
    std::thread::sleep(std::time::Duration::from_millis(500));

    let conns: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(conns.len() >= 4, "{conns:?}");
    let mut owner_users = std::collections::HashSet::new();
    let mut group_users: std::collections::HashMap<String, std::collections::HashSet<String>> =
        Default::default();
    for c in &conns {
        let user = c["user"]
            .as_str()
            .expect("every connection has an identity")
            .to_string();
        let groups: Vec<String> = c["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g.as_str().unwrap().to_string())
            .collect();
        assert!(
            !(c["owner_signature"] == true && (c["group_token"] == true || !groups.is_empty())),
            "a connection carried the mailbox and a conversation: {c}"
        );
        assert!(
            groups.len() <= 1,
            "a connection carried two conversations: {c}"
        );
        if c["owner_signature"] == true {
            owner_users.insert(user.clone());
        }
        if let Some(g) = groups.first() {
            group_users.entry(g.clone()).or_default().insert(user);
        }
    }
    assert_eq!(
        owner_users.len(),
        1,
        "the mailbox has one identity: {owner_users:?}"
    );
    assert_eq!(group_users.len(), 2, "two conversations: {group_users:?}");
    let mut all: Vec<&String> = owner_users.iter().collect();
    for users in group_users.values() {
        assert_eq!(
            users.len(),
            1,
            "a conversation under several identities: {users:?}"
        );
        all.extend(users.iter());
    }
    let distinct: std::collections::HashSet<&&String> = all.iter().collect();
    assert_eq!(
        distinct.len(),
        3,
        "mailbox and conversations share an identity: {all:?}"
    );
    // The conversations had their own WebSockets (group subscriptions arrived on them).
    assert!(
        conns
            .iter()
            .filter(|c| c["group_token"] == true && c["owner_signature"] == false)
            .count()
            >= 2
    );
}

/// Native TLS with a pinned self-signed certificate: the relay prints its address with the
/// pin; clients using it chat (HTTP and WebSocket) and send files over TLS; invites carry
/// the pin; a wrong pin is refused with a clear error; the certificate (and pin) survive a
/// restart.
#[test]
fn a_pinned_self_signed_relay_needs_no_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (data, tls) = (dir.path().join("relay"), dir.path().join("tls"));
    let relay = crate::harness::RelayProc::start_tls(&data, "127.0.0.1:0", &tls);
    assert!(relay.url.starts_with("https://"), "{}", relay.url);
    let pin = relay.url.split("#pin=").nth(1).expect("pin").to_string();
    assert_eq!(pin.len(), 43);
    let mut w = World {
        dir,
        relay,
        secrets: Vec::new(),
    };
    let [alice, bob] = w.people(["alice", "bob"]);
    let link = alice.ok(&["invite"]).lines().last().unwrap().to_string();
    let invite = samizdat_core::Invite::parse(&link).unwrap();
    assert!(
        invite.relay.contains(&format!("#pin={pin}")),
        "{}",
        invite.relay
    );
    bob.ok(&["accept", &link, "--name", "alice"]);
    alice.ok(&["sync"]);
    let hi = w.text("over pinned TLS");
    bob.ok(&["send", "alice", &hi]);
    assert!(alice.ok(&["sync"]).contains(&hi));
    // The WebSocket over TLS.
    let listen = alice
        .cmd(&["listen", "--count", "1", "--timeout", "60"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let pushed = w.text("pushed over wss");
    bob.ok(&["send", "alice", &pushed]);
    let out = listen.wait_with_output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(&pushed));
    let file = w.dir.path().join("tls.bin");
    std::fs::write(&file, vec![3u8; 200_000]).unwrap();
    let id = bob.ok(&["send", "alice", "--file", file.to_str().unwrap()]);
    let id = id.trim().trim_start_matches("sent ").to_string();
    alice.ok(&["sync"]);
    let got = w.dir.path().join("tls-got.bin");
    alice.ok(&["download", &id, "--out", got.to_str().unwrap()]);
    assert_eq!(std::fs::read(&got).unwrap(), vec![3u8; 200_000]);

    // Another pin (a different server's key) is refused.
    let wrong = samizdat_proto::Bytes::encode(&[1u8; 32]);
    let base = w.relay.url.split('#').next().unwrap().to_string();
    let eve = w.dir.path().join("eve");
    let out = Command::new(BIN)
        .args(["--home"])
        .arg(&eve)
        .args([
            "init",
            "--relay",
            &format!("{base}#pin={wrong}"),
            "--name",
            "eve",
        ])
        .env("SAMIZDAT_PASSPHRASE", PASSPHRASE)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not match the pin"), "{err}");
    // Without a pin the self-signed certificate is not trusted (WebPKI).
    let out = Command::new(BIN)
        .args(["--home"])
        .arg(&eve)
        .args(["init", "--relay", &base, "--name", "eve"])
        .env("SAMIZDAT_PASSPHRASE", PASSPHRASE)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("certificate"));

    // A restart keeps the certificate, so the pin in everyone's address stays right.
    let addr = w.relay.addr.clone();
    w.relay.kill();
    w.relay = crate::harness::RelayProc::start_tls(&data, &addr, &tls);
    assert!(w.relay.url.ends_with(&pin));
    let again = w.text("after the restart");
    bob.ok(&["send", "alice", &again]);
    assert!(alice.ok(&["sync"]).contains(&again));
    w.assert_no_plaintext();
}
