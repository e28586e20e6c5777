//! Personas over the real `samizdat` binary and a real relay process ("alice, bob,
//! carol with a relay in one line").

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_samizdat");
/// Argon2id memory (KiB) for the test profiles (see `Person::cmd`).
pub const KDF_MEMORY_KIB: &str = "256";

pub const PASSPHRASE: &str = "correct horse battery staple";

pub struct RelayProc {
    pub child: Child,
    pub url: String,
    pub addr: String,
    pub data: PathBuf,
}

impl RelayProc {
    pub fn start(data: &Path, addr: &str) -> RelayProc {
        Self::start_with(data, addr, None)
    }

    /// A relay process; with `database`, on PostgreSQL.
    pub fn start_with(data: &Path, addr: &str, database: Option<&str>) -> RelayProc {
        let mut cmd = Command::new(BIN);
        cmd.args(["relay", "--allow-root", "--listen", addr, "--data"])
            .arg(data);
        if let Some(db) = database {
            cmd.args(["--database", db, "--pool-size", "4"]);
        }
        Self::spawn(cmd, data)
    }

    /// A relay process with extra command-line arguments.
    pub fn start_with_args(data: &Path, addr: &str, args: &[&str]) -> RelayProc {
        let mut cmd = Command::new(BIN);
        cmd.args(["relay", "--allow-root", "--listen", addr, "--data"])
            .arg(data)
            .args(args);
        Self::spawn(cmd, data)
    }

    /// A relay process with a TOML config file (limits).
    pub fn start_with_config(data: &Path, addr: &str, config: &Path) -> RelayProc {
        let mut cmd = Command::new(BIN);
        cmd.args(["relay", "--allow-root", "--listen", addr, "--data"])
            .arg(data)
            .arg("--config")
            .arg(config);
        Self::spawn(cmd, data)
    }

    /// A relay serving TLS with a self-signed certificate kept in `tls`; its URL carries the
    /// certificate's pin.
    pub fn start_tls(data: &Path, addr: &str, tls: &Path) -> RelayProc {
        let mut cmd = Command::new(BIN);
        cmd.args(["relay", "--allow-root", "--listen", addr, "--data"])
            .arg(data)
            .arg("--tls-self-signed")
            .arg(tls);
        Self::spawn(cmd, data)
    }

    fn spawn(mut cmd: Command, data: &Path) -> RelayProc {
        // The free-disk floor would watch the test machine's shared disk (see the relay's
        // harness); no test here checks it.
        cmd.env("SAMIZDAT_RELAY_MIN_FREE_DISK_PERCENT", "0");
        // Logs at debug level go into the data directory, so the plaintext audit scans them too.
        std::fs::create_dir_all(data).expect("data dir");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data.join("relay.log"))
            .expect("log file");
        let mut child = cmd
            .env("SAMIZDAT_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start relay");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("relay prints its address");
        let url = line
            .trim()
            .strip_prefix("relay listening on ")
            .expect("listening line")
            .to_string();
        let addr = url
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .split('#')
            .next()
            .unwrap_or_default()
            .to_string();
        RelayProc {
            child,
            url,
            addr,
            data: data.to_path_buf(),
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        signal(&self.child, rustix::process::Signal::TERM);
        self.child.wait().expect("wait")
    }
}

impl Drop for RelayProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Keeps a stopped relay's port from being taken by another test's relay (tests run in
/// parallel and bind port 0) while the relay is down: connections are accepted and closed
/// at once, which a client sees as an unreachable relay. Dropping it frees the port.
pub struct PortHold {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PortHold {
    pub fn new(addr: &str) -> PortHold {
        let listener = std::net::TcpListener::bind(addr).expect("hold the stopped relay's port");
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                match listener.accept() {
                    Ok((s, _)) => drop(s),
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
                }
            }
        });
        PortHold {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for PortHold {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub struct World {
    pub dir: tempfile::TempDir,
    pub relay: RelayProc,
    /// Every plaintext and name the test used: none may reach the relay's files.
    pub secrets: Vec<String>,
}

pub struct Person {
    pub name: String,
    pub display: String,
    pub home: PathBuf,
}

/// Whether this machine has what a test needs beyond the README's requirements: the
/// `programs` on the PATH and, with `root`, root (network namespaces). If not, the test says
/// `SKIPPED: <test>: <reason>` on stderr, leaves a marker in `target/tmp/skipped/`, and the
/// caller returns. `.ci/run` installs everything and fails if any test was skipped.
pub fn needs(test: &str, programs: &[&str], root: bool) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = |p: &str| std::env::split_paths(&path).any(|d| d.join(p).is_file());
    let mut missing: Vec<String> = programs
        .iter()
        .filter(|p| !found(p))
        .map(|p| p.to_string())
        .collect();
    if root && !rustix::process::geteuid().is_root() {
        missing.push("root".into());
    }
    if missing.is_empty() {
        return true;
    }
    let reason = format!("needs {} (`.ci/run` installs it)", missing.join(", "));
    eprintln!("SKIPPED: {test}: {reason}");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("skipped");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join(test), reason);
    false
}

/// A fresh PostgreSQL schema for this test, or `None` without `SAMIZDAT_TEST_DATABASE_URL`.
pub fn postgres_url() -> Option<String> {
    let base = std::env::var("SAMIZDAT_TEST_DATABASE_URL").ok()?;
    if !needs("postgres_schema", &["psql"], false) {
        return None;
    }
    let schema = format!("e2e_{}", hex_rand());
    let out = Command::new("psql")
        .arg(&base)
        .args(["-qc", &format!("CREATE SCHEMA {schema}")])
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sep = if base.contains('?') { '&' } else { '?' };
    Some(format!("{base}{sep}options=-c%20search_path%3D{schema}"))
}

impl World {
    /// A person (display name = name) whose every connection goes through the SOCKS5 proxy
    /// on `port`, isolated: the mailbox and each conversation under their own identity.
    pub fn isolated_person(&self, name: &str, port: u16) -> Person {
        let p = Person {
            name: name.into(),
            display: name.into(),
            home: self.dir.path().join(name),
        };
        p.ok(&[
            "init",
            "--relay",
            &self.relay.url,
            "--name",
            name,
            "--proxy",
            &format!("socks5h://127.0.0.1:{port}"),
            "--isolate",
        ]);
        p
    }

    pub fn new() -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        let relay = RelayProc::start(&dir.path().join("relay"), "127.0.0.1:0");
        World {
            dir,
            relay,
            secrets: Vec::new(),
        }
    }

    pub fn person(&mut self, name: &str) -> Person {
        let display = format!("{}-display-{}", name, &hex_rand()[..6]);
        self.person_named(name, &display)
    }

    pub fn person_named(&mut self, name: &str, display: &str) -> Person {
        let display = display.to_string();
        let home = self.dir.path().join(name);
        let p = Person {
            name: name.to_string(),
            display: display.clone(),
            home,
        };
        let out = p.run(&["init", "--relay", &self.relay.url, "--name", &display]);
        assert!(
            out.status.success(),
            "init {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.secrets.push(display);
        p
    }

    pub fn people<const N: usize>(&mut self, names: [&str; N]) -> [Person; N] {
        names.map(|n| self.person(n))
    }

    /// `b` accepts an invite from `a`; both know each other by their plain names afterwards.
    pub fn connect(&mut self, a: &Person, b: &Person) {
        let link = a.ok(&["invite"]).lines().last().expect("link").to_string();
        b.ok(&["accept", &link, "--name", &a.name]);
        // The alias b chose is private too (short aliases would match random bytes by chance).
        if a.name.len() >= 5 && !self.secrets.contains(&a.name) {
            self.secrets.push(a.name.clone());
        }
        a.ok(&["sync"]);
        // a knows b under b's display name; give it the short name too for readable tests.
        assert!(
            a.ok(&["contacts"]).contains(&b.display),
            "{} should have {} as a contact",
            a.name,
            b.name
        );
    }

    /// A message text containing a unique canary, remembered for the plaintext scan.
    pub fn text(&mut self, words: &str) -> String {
        let t = format!("{words} canary-{}", hex_rand());
        self.secrets.push(t.clone());
        t
    }

    /// Scan every file of the relay's data directory for every secret.
    pub fn assert_no_plaintext(&self) {
        let mut files = Vec::new();
        let mut stack = vec![self.relay.data.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).expect("read_dir") {
                let p = e.expect("entry").path();
                if p.is_dir() {
                    stack.push(p)
                } else {
                    files.push(p)
                }
            }
        }
        assert!(!files.is_empty());
        for f in files {
            // SQLite may remove its -wal/-shm files between listing and reading.
            let Ok(bytes) = std::fs::read(&f) else {
                continue;
            };
            for s in &self.secrets {
                assert!(
                    memchr::memmem::find(&bytes, s.as_bytes()).is_none(),
                    "plaintext {s:?} found in relay file {}",
                    f.display()
                );
            }
        }
    }
}

pub fn hex_rand() -> String {
    let mut b = [0u8; 8];
    getrandom(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn getrandom(buf: &mut [u8]) {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .expect("urandom");
}

impl Person {
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(["--home"]).arg(&self.home).args(args);
        c.env("SAMIZDAT_PASSPHRASE", PASSPHRASE)
            .env_remove("SAMIZDAT_HOME")
            .env("SAMIZDAT_LOG", "error")
            // Every command derives the profile's key: a cheap Argon2id (256 KiB, one pass)
            // instead of 64 MiB and three, since no behaviour here depends on its cost (the
            // core's `wipe` tests check the real parameters). Test builds only (fault point).
            .env("SAMIZDAT_TEST_KDF_MEMORY_KIB", KDF_MEMORY_KIB);
        c.stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run samizdat")
    }

    /// Run and require success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{} {:?} failed: {}{}",
            self.name,
            args,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf8")
    }

    /// [`Person::ok`] with extra environment variables (another passphrase, a fault point).
    pub fn ok_with(&self, args: &[&str], env: &[(&str, &str)]) -> String {
        let out = self
            .cmd(args)
            .envs(env.iter().copied())
            .output()
            .expect("run samizdat");
        assert!(
            out.status.success(),
            "{} {:?} failed: {}",
            self.name,
            args,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf8")
    }

    /// Run and require a clean failure: non-zero, one line on stderr, no panic. Returns it.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            !out.status.success(),
            "{} {:?} should fail but printed {}",
            self.name,
            args,
            String::from_utf8_lossy(&out.stdout)
        );
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "expected one line, got: {err}"
        );
        assert!(
            !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
            "{err}"
        );
        err
    }

    /// The conversation's messages (`history --json`), without the lines about the
    /// conversation itself (someone added, a rename, the timer: `system`).
    pub fn history(&self, target: &str) -> Vec<serde_json::Value> {
        self.ok(&["history", target, "--json"])
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json line"))
            .filter(|m| m.get("system").is_none())
            .collect()
    }

    pub fn texts(&self, target: &str) -> Vec<String> {
        self.history(target)
            .iter()
            .map(|m| m["text"].as_str().expect("text").to_string())
            .collect()
    }

    pub fn members(&self, group: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .ok(&["group", "members", group, "--json"])
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).expect("json")["fingerprint"]
                    .as_str()
                    .expect("fp")
                    .to_string()
            })
            .collect();
        v.sort();
        v
    }
}

/// Send `sig` to a child process, from Rust: the tests run no `kill` program (a minimal
/// Debian has none).
pub fn signal(child: &std::process::Child, sig: rustix::process::Signal) {
    if let Some(pid) = i32::try_from(child.id())
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(pid, sig);
    }
}

/// Start the SOCKS proxy that logs what each connection carried
/// (`tests/support/socks_logger.py`): its port, and the process (stopped when dropped).
pub fn socks_logger(log: &std::path::Path) -> (u16, ChildGuard) {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        l.local_addr().expect("its address").port()
    };
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/support/socks_logger.py"
    );
    let mut child = std::process::Command::new("python3")
        .arg(script)
        .arg(port.to_string())
        .arg(log)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    // It prints a line once it listens.
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().expect("its output")),
        &mut line,
    )
    .expect("the proxy starts");
    (port, ChildGuard(child))
}

/// A child process stopped (and reaped) when dropped.
pub struct ChildGuard(pub std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
