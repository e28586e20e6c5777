//! A test world in one process (feature `testing`): relays on the SQLite store in a temporary
//! directory, people whose profiles stay open, and a clock the test moves.
//!
//! Behaviour tests run here with no process to spawn, no passphrase to derive per command and
//! no sleep: a relay that is down is a relay that was shut down; "a minute later" is
//! [`World::advance`]. What only processes can show (SIGKILL, proxies, the CLI contract, the
//! app) keeps its binary-level tests in the `samizdat` crate.
//!
//! The clock is the profile's (message expiry, delivery retries, invite and link expiry),
//! moved for the whole process: nextest runs every test in a process of its own. The relays
//! keep the real clock (their signatures and timestamps are checked against it).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use samizdat_relay::{Config, Relay};

use crate::{ContactId, ConversationId, Event, GroupAdded, MessageView, Page, Profile, Result};

/// What the clock was moved by, in milliseconds (see [`World::advance`]).
static CLOCK_OFFSET_MS: AtomicU64 = AtomicU64::new(0);

/// The profile clock's offset from the system's, in milliseconds.
pub(crate) fn clock_offset_ms() -> u64 {
    CLOCK_OFFSET_MS.load(Ordering::Relaxed)
}

/// Argon2id memory for the world's profiles: cheap, since nothing a behaviour test checks
/// depends on what the key costs (`wipe` tests the real parameters).
static KDF_MEMORY_KIB: AtomicU64 = AtomicU64::new(0);

/// The key derivation's memory in KiB while a world runs (`None`: the profile's own).
pub(crate) fn kdf_memory_kib() -> Option<u32> {
    match KDF_MEMORY_KIB.load(Ordering::Relaxed) {
        0 => None,
        kib => u32::try_from(kib).ok(),
    }
}

/// Fault points set by the test (see `crate::fault`), by name.
static FAULTS: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());

/// The value of the fault point `name` if the test set it.
pub(crate) fn fault(name: &str) -> Option<String> {
    let faults = FAULTS.lock().ok()?;
    faults
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
}

/// Every world profile's passphrase.
pub const PASSPHRASE: &str = "a test passphrase, not a secret";

/// Relays, people and every text a test sent (to look for on the relays' disks).
pub struct World {
    dir: tempfile::TempDir,
    relays: Vec<TestRelay>,
    secrets: Vec<String>,
    serial: u64,
}

/// One relay of the world: its address survives a restart, its data too.
pub struct TestRelay {
    relay: Option<Relay>,
    /// While blocked: the task that holds the address, accepting and dropping.
    block: Option<tokio::task::JoinHandle<()>>,
    /// Where it listens (kept across a restart).
    pub addr: std::net::SocketAddr,
    /// Its base URL.
    pub url: String,
    data: PathBuf,
}

impl TestRelay {
    async fn start(data: &Path, listen: &str) -> TestRelay {
        let relay = Relay::start(Config {
            listen: listen.into(),
            data: data.to_path_buf(),
            // The free-disk floor would watch the test machine's shared disk.
            limits: samizdat_proto::Limits {
                min_free_disk_percent: 0,
                ..Default::default()
            },
            ..Config::default()
        })
        .await
        .expect("a test relay starts");
        TestRelay {
            addr: relay.addr(),
            url: relay.url(),
            relay: Some(relay),
            block: None,
            data: data.to_path_buf(),
        }
    }

    /// Where its SQLite database lives (`relay.db`): a test plays a relay that alters what
    /// it stores.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// Stop the relay: nothing listens on its address until [`TestRelay::restart`].
    pub async fn stop(&mut self) {
        if let Some(r) = self.relay.take() {
            r.shutdown().await.expect("the relay stops cleanly");
        }
    }

    /// Block it as a censor does: the relay stops and its address accepts connections and
    /// drops them at once (a reset, not a refusal). [`TestRelay::restart`] lifts it.
    pub async fn block(&mut self) {
        self.stop().await;
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .expect("the relay's address can be held");
        self.block = Some(tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                drop(conn);
            }
        }));
    }

    /// Start it again on the same address with the same data.
    pub async fn restart(&mut self) {
        self.stop().await;
        if let Some(hold) = self.block.take() {
            hold.abort();
            let _ = hold.await;
        }
        let again = TestRelay::start(&self.data, &self.addr.to_string()).await;
        self.relay = again.relay;
    }
}

impl World {
    /// A world with one relay.
    pub async fn new() -> World {
        let dir = tempfile::tempdir().expect("a temporary directory");
        KDF_MEMORY_KIB.store(256, Ordering::Relaxed);
        let mut w = World {
            dir,
            relays: Vec::new(),
            secrets: Vec::new(),
            serial: 0,
        };
        w.add_relay().await;
        w
    }

    /// Start another relay; returns its index.
    pub async fn add_relay(&mut self) -> usize {
        let data = self.dir.path().join(format!("relay-{}", self.relays.len()));
        self.relays
            .push(TestRelay::start(&data, "127.0.0.1:0").await);
        self.relays.len() - 1
    }

    /// Relay `i` (0 is the first).
    pub fn relay(&mut self, i: usize) -> &mut TestRelay {
        &mut self.relays[i]
    }

    /// A new person on the first relay, known to others by `name` plus a random suffix.
    pub async fn person(&mut self, name: &str) -> Person {
        self.person_on(name, 0).await
    }

    /// A new person whose mailbox is on relay `relay`.
    pub async fn person_on(&mut self, name: &str, relay: usize) -> Person {
        self.person_on_relays(name, &[relay]).await
    }

    /// A new person with a mailbox on each of `relays` (the first is the primary).
    pub async fn person_on_relays(&mut self, name: &str, relays: &[usize]) -> Person {
        self.serial += 1;
        let display = format!("{name}-display-{}", self.serial);
        let home = self.dir.path().join(name);
        let urls: Vec<String> = relays.iter().map(|&i| self.relays[i].url.clone()).collect();
        let profile = Profile::init_relays(
            &home,
            PASSPHRASE,
            &urls,
            &display,
            crate::net::Net::default(),
        )
        .await
        .expect("a profile is made");
        self.secrets.push(display.clone());
        Person {
            name: name.to_string(),
            display,
            home,
            profile,
            seen: Vec::new(),
            read: 0,
        }
    }

    /// People on the first relay.
    pub async fn people<const N: usize>(&mut self, names: [&str; N]) -> [Person; N] {
        let mut made = Vec::with_capacity(N);
        for n in names {
            made.push(self.person(n).await);
        }
        match made.try_into() {
            Ok(people) => people,
            Err(_) => unreachable!("N people were made"),
        }
    }

    /// `b` accepts an invite from `a` and names them `a.name`; `a` syncs and knows `b` by
    /// `b.display`.
    pub async fn connect(&mut self, a: &mut Person, b: &mut Person) {
        let link = a.profile.invite(3600, false).expect("an invite").to_link();
        b.profile
            .accept(&link, &a.name)
            .await
            .expect("the invite is accepted");
        b.take();
        a.sync().await;
        let known = a.profile.contacts().expect("contacts");
        assert!(
            known.iter().any(|c| c.alias == b.display),
            "{} should have {} as a contact",
            a.name,
            b.name
        );
    }

    /// Link a new device named `name` to `first` (the person holding the identity key), as
    /// `device join` on the new device and `device add` on `first` do, both at once: the new
    /// device shows its link, `first` adds it and syncs until it is listed, the new device
    /// joins every conversation and imports the history. Returns the new device.
    pub async fn link_device(&mut self, first: &mut Person, name: &str) -> Person {
        let home = self.dir.path().join(name);
        let relay = first.profile.relay_url().to_string();
        let (shown, link) = tokio::sync::oneshot::channel::<String>();
        // Both futures are large in a debug build: on the heap, not the test thread's stack.
        let join = Box::pin(Profile::device_join(
            &home,
            PASSPHRASE,
            &relay,
            name,
            Duration::from_secs(120),
            move |link, _code| {
                let _ = shown.send(link.to_string());
            },
        ));
        let add = Box::pin(async {
            let link = link.await.expect("the new device shows its link");
            let added = first
                .profile
                .device_add(&link)
                .await
                .expect("the device is added");
            first.take();
            for _ in 0..600 {
                first.sync().await;
                let listed = first.profile.devices().expect("devices");
                if listed.iter().any(|d| d.id == added.id) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("{name} was never listed among {}'s devices", first.name);
        });
        let (joined, ()) = tokio::join!(join, add);
        let (profile, _) = joined.expect("the new device joins");
        Person {
            name: name.to_string(),
            display: first.display.clone(),
            home,
            profile,
            seen: Vec::new(),
            read: 0,
        }
    }

    /// A text no relay may ever hold in the clear (checked by [`World::assert_no_plaintext`]).
    pub fn text(&mut self, words: &str) -> String {
        self.serial += 1;
        let mut r = [0u8; 8];
        aws_lc_rs::rand::fill(&mut r).expect("random bytes");
        let t = format!("{words} canary-{}-{}", self.serial, hex::encode(r));
        self.secrets.push(t.clone());
        t
    }

    /// Move the profiles' clock forward (delivery retries fall due, messages expire).
    pub fn advance(&self, by: Duration) {
        CLOCK_OFFSET_MS.fetch_add(by.as_millis() as u64, Ordering::Relaxed);
    }

    /// Set the fault point `name` (what `SAMIZDAT_TEST_<name>` sets for a process) for every
    /// profile of the world until [`World::clear_fault`]; it works only in a build with the
    /// `fault-injection` feature too.
    pub fn set_fault(&self, name: &str, value: &str) {
        if let Ok(mut faults) = FAULTS.lock() {
            faults.retain(|(n, _)| n != name);
            faults.push((name.to_string(), value.to_string()));
        }
    }

    /// Clear the fault point `name`.
    pub fn clear_fault(&self, name: &str) {
        if let Ok(mut faults) = FAULTS.lock() {
            faults.retain(|(n, _)| n != name);
        }
    }

    /// Scan every file of every relay's data directory for every text and name sent.
    pub fn assert_no_plaintext(&self) {
        let mut files = Vec::new();
        let mut stack: Vec<PathBuf> = self.relays.iter().map(|r| r.data.clone()).collect();
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    files.push(p);
                }
            }
        }
        assert!(!files.is_empty(), "the relays wrote nothing");
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

/// A person: their open profile and what it reported.
pub struct Person {
    /// The short name tests use (and others' alias for them).
    pub name: String,
    /// Their own display name.
    pub display: String,
    /// The profile's directory.
    pub home: PathBuf,
    pub profile: Profile,
    /// Every event reported so far.
    pub seen: Vec<Event>,
    /// How far `seen` has read the profile's event log.
    read: u64,
}

impl Person {
    /// Sync; the events it reported (also kept in `seen`).
    pub async fn sync(&mut self) -> Vec<Event> {
        match self.try_sync().await {
            Ok(events) => events,
            Err(e) => panic!("{} could not sync: {e}", self.name),
        }
    }

    /// Sync, with its error (a relay down, say).
    pub async fn try_sync(&mut self) -> Result<Vec<Event>> {
        let synced = self.profile.sync().await;
        let events = self.take();
        synced?;
        Ok(events)
    }

    /// What the profile logged since the last look (a sync, a catch-up inside a send), from
    /// its event log: the one way events travel.
    pub fn take(&mut self) -> Vec<Event> {
        let events = self.profile.events_since(self.read).expect("the event log");
        self.read = self.profile.last_event().expect("the event log");
        self.seen.extend(events.iter().cloned());
        events
    }

    /// The conversation this person calls `name` (a contact's alias or a group's name).
    pub fn conversation(&self, name: &str) -> ConversationId {
        match self.profile.find_conversation(name) {
            Ok(id) => id,
            Err(e) => panic!("{} has no conversation {name}: {e}", self.name),
        }
    }

    /// The contact this person calls `alias`.
    pub fn contact(&self, alias: &str) -> ContactId {
        match self.profile.find_contact(alias) {
            Ok(id) => id,
            Err(e) => panic!("{} has no contact {alias}: {e}", self.name),
        }
    }

    /// Send `text` to a contact or group (by name).
    pub async fn send(&mut self, to: &str, text: &str) {
        let id = self.conversation(to);
        if let Err(e) = self.profile.send(&id, text).await {
            panic!("{} could not send to {to}: {e}", self.name);
        }
        self.take();
    }

    /// Send a photo as the app describes one (its thumbnail made here, on the sender's side)
    /// without uploading the file: what receivers store and show, not the transfer. Returns
    /// the message id.
    pub async fn send_photo(&mut self, to: &str, picture: &[u8]) -> crate::MessageId {
        use samizdat_proto::Bytes;
        let t = crate::thumbnail::make(picture).expect("a picture");
        let attachment = crate::payload::Attachment {
            relay: self.profile.relay_url().to_string(),
            blob: samizdat_proto::Id::from_bytes([9; 16]),
            key: Bytes(vec![7; 32]),
            digest: Bytes(vec![1; 32]),
            digest_kind: Default::default(),
            size: picture.len() as u64,
            name: "photo.jpg".into(),
            media_type: "image/jpeg".into(),
            preview: Some(crate::payload::Preview {
                thumbnail: Some(Bytes(t.jpeg)),
                width: t.width,
                height: t.height,
                voice_ms: None,
            }),
        };
        let copy = self.profile.home().join("photo.sealed");
        std::fs::write(&copy, b"the encrypted copy").expect("write");
        let id = self.conversation(to);
        let sent = self
            .profile
            .send_attachment(&id, "", attachment, &copy)
            .await;
        let id = sent.unwrap_or_else(|e| panic!("{} could not send a photo: {e}", self.name));
        self.take();
        id
    }

    /// Make a group.
    pub async fn group_create(&mut self, name: &str) -> ConversationId {
        let id = self
            .profile
            .group_create(name)
            .await
            .expect("the group is made");
        self.take();
        id
    }

    /// Add contacts (by alias) to a group.
    pub async fn group_add(&mut self, group: &str, who: &[&str]) -> GroupAdded {
        let who: Vec<ContactId> = who.iter().map(|s| self.contact(s)).collect();
        let group = self.conversation(group);
        let added = self.profile.group_add(&group, &who).await;
        self.take();
        added.expect("the members are added")
    }

    /// Remove a contact (by alias) from a group.
    pub async fn group_remove(&mut self, group: &str, who: &str) {
        let (group, who) = (self.conversation(group), self.contact(who));
        self.profile
            .group_remove(&group, &who)
            .await
            .expect("the member is removed");
        self.take();
    }

    /// Leave a group.
    pub async fn group_leave(&mut self, group: &str) {
        let group = self.conversation(group);
        self.profile.group_leave(&group).await.expect("left");
        self.take();
    }

    /// The conversation's messages, oldest first.
    pub fn history(&self, conversation: &str) -> Vec<MessageView> {
        self.profile
            .history_page(&self.conversation(conversation), &Page::default())
            .expect("history")
    }

    /// The texts of the conversation's messages, oldest first (not its lines about itself).
    pub fn texts(&self, conversation: &str) -> Vec<String> {
        self.history(conversation)
            .into_iter()
            .filter(|m| m.system.is_none())
            .map(|m| m.text)
            .collect()
    }

    /// The group's members' key fingerprints, sorted.
    pub fn members(&self, group: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .profile
            .group_members(&self.conversation(group))
            .expect("members")
            .into_iter()
            .map(|m| m.fingerprint)
            .collect();
        v.sort();
        v
    }

    /// The relay (its URL) holding a conversation's log.
    pub fn relay_of(&self, conversation: &str) -> String {
        let all = self.profile.conversations().expect("conversations");
        match all.into_iter().find(|c| c.name == conversation) {
            Some(c) => c.relay,
            None => panic!("{} has no conversation {conversation}", self.name),
        }
    }

    /// Whether any event reported so far says `text` arrived.
    pub fn got(&self, text: &str) -> bool {
        self.seen
            .iter()
            .any(|e| matches!(e, Event::Message { text: t, .. } if t == text))
    }
}
