//! `samizdat demo`: an embedded relay on a free loopback port with temporary storage, three
//! people who share nothing but invite links, a 1:1 chat, a group of three and a removal —
//! then what the relay holds, and a scan of its files for every plaintext that was sent.

use std::path::Path;

use anyhow::{Context, Result, bail};
use samizdat_core::{Event, Profile};
use samizdat_relay::{Config, Relay};

const PASSPHRASE: &str = "demo passphrase, not a secret";

struct Person {
    name: &'static str,
    profile: Profile,
}

fn show(events: &[Event], who: &str) {
    for e in events {
        match e {
            Event::Message {
                conversation,
                from,
                text,
                ..
            } => println!("    {who} got [{conversation}] {from}: {text}"),
            Event::NewContact { alias, .. } => println!("    {who} has a new contact: {alias}"),
            Event::Joined { conversation, .. } => println!("    {who} joined {conversation}"),
            Event::GroupNamed { conversation, .. } => {
                println!("    {who} sees the group is called {conversation}")
            }
            Event::Removed { conversation, .. } => {
                println!("    {who} was removed from {conversation}")
            }
            Event::MemberLeft {
                conversation,
                who: w,
                ..
            } => println!("    {who} sees {w} left {conversation}"),
            Event::Notice { notice, .. } => {
                println!("    {who} note: {}", crate::i18n::notice_en(notice))
            }
            Event::InvitationPending { id, members, .. } => println!(
                "    {who} has a pending invitation {id} (a group of {members} from a stranger)"
            ),
            // Bookkeeping the demo does not narrate.
            _ => {}
        }
    }
}

async fn sync(p: &mut Person) -> Result<()> {
    let events = p
        .profile
        .sync()
        .await
        .with_context(|| format!("{} syncing", p.name))?;
    show(&events, p.name);
    Ok(())
}

async fn send(p: &mut Person, to: &str, text: &str, sent: &mut Vec<String>) -> Result<()> {
    // The demo is a front: it resolves the names it prints to ids at its edge.
    let id = p.profile.find_conversation(to)?;
    let since = p.profile.last_event()?;
    p.profile
        .send(&id, text)
        .await
        .with_context(|| format!("{} sending to {to}", p.name))?;
    println!("  {} -> [{to}] {text}", p.name);
    // What the send reported (a catch-up first, say), read from the event log.
    show(&p.profile.events_since(since)?, p.name);
    sent.push(text.to_string());
    Ok(())
}

pub async fn run() -> Result<()> {
    let started = std::time::Instant::now();
    let tmp = tempfile::tempdir().context("creating a temporary directory")?;
    let relay_dir = tmp.path().join("relay");
    let relay = Relay::start(Config {
        listen: "127.0.0.1:0".into(),
        data: relay_dir.clone(),
        ..Config::default()
    })
    .await
    .context("starting the embedded relay")?;
    let url = format!("http://{}", relay.addr());
    println!("== Samizdat demo\nembedded relay on {url}, storage in a temporary directory\n");

    let mut people = Vec::new();
    for (name, display) in [
        ("alice", "Alice Arkhipova"),
        ("bob", "Bob Bortnik"),
        ("carol", "Carol Chernova"),
    ] {
        let profile = Profile::init(&tmp.path().join(name), PASSPHRASE, &url, display).await?;
        println!(
            "{name}: profile created, key fingerprint {}…",
            &profile.fingerprint_hex()[..16]
        );
        people.push(Person { name, profile });
    }
    let [mut alice, mut bob, mut carol]: [Person; 3] = people
        .try_into()
        .map_err(|_| anyhow::anyhow!("three people"))?;
    let mut sent: Vec<String> = Vec::new();

    println!(
        "\n== Invites (links carry the relay, a mailbox address and a key fingerprint — no names)"
    );
    let link = alice.profile.invite(3600, false)?.to_link();
    println!("alice's single-use invite: {}…", &link[..48]);
    bob.profile.accept(&link, "alice").await?;
    println!("bob accepted it: the KeyPackage the relay handed out matched alice's fingerprint");
    let link = alice.profile.invite(3600, false)?.to_link();
    carol.profile.accept(&link, "alice").await?;
    println!("carol accepted another one");
    sync(&mut alice).await?;

    println!("\n== A 1:1 chat");
    send(
        &mut bob,
        "alice",
        "Hi Alice, it's Bob. Is this channel safe?",
        &mut sent,
    )
    .await?;
    sync(&mut alice).await?;
    send(
        &mut alice,
        "Bob Bortnik",
        "Yes: the relay only stores ciphertext.",
        &mut sent,
    )
    .await?;
    sync(&mut bob).await?;

    println!("\n== A group of three (post-quantum MLS, ciphersuite ML_KEM_768_X25519)");
    let club = alice.profile.group_create("book-club").await?;
    let members = [
        alice.profile.find_contact("Bob Bortnik")?,
        alice.profile.find_contact("Carol Chernova")?,
    ];
    alice.profile.group_add(&club, &members).await?;
    println!("  alice created book-club and added Bob and Carol");
    sync(&mut bob).await?;
    sync(&mut carol).await?;
    send(
        &mut alice,
        "book-club",
        "Next book: We by Zamyatin.",
        &mut sent,
    )
    .await?;
    send(
        &mut bob,
        "book-club",
        "Printed copies are hard to find here.",
        &mut sent,
    )
    .await?;
    send(
        &mut carol,
        "book-club",
        "I'll bring the samizdat edition.",
        &mut sent,
    )
    .await?;
    sync(&mut alice).await?;
    sync(&mut bob).await?;
    sync(&mut carol).await?;

    println!("\n== A removal");
    alice.profile.group_remove(&club, &members[1]).await?;
    println!("  alice removed Carol");
    sync(&mut carol).await?;
    send(
        &mut alice,
        "book-club",
        "Carol cannot read this one.",
        &mut sent,
    )
    .await?;
    sync(&mut bob).await?;
    sync(&mut carol).await?;
    let carols_club = carol.profile.find_conversation("book-club")?;
    match carol.profile.send(&carols_club, "Can I still post?").await {
        Ok(_) => bail!("a removed member could post"),
        Err(e) => println!("  carol tries to post: refused ({e})"),
    }

    println!("\n== Each person's view");
    for p in [&alice, &bob, &carol] {
        println!("-- {}", p.name);
        for c in p.profile.conversations()? {
            let state = if c.active {
                format!("{} members", c.members)
            } else {
                c.status
                    .as_ref()
                    .map(crate::i18n::status_en)
                    .unwrap_or_default()
            };
            println!("   {} ({}, {state})", c.name, c.kind);
            for m in p.profile.history(&c.id)? {
                println!("      {}: {}", m.from, m.text);
            }
        }
    }

    relay.shutdown().await.context("stopping the relay")?;
    println!("\n== What the relay holds");
    relay_report(&relay_dir.join("relay.db"))?;

    println!("\n== Plaintext scan of the relay's files");
    let mut needles: Vec<String> = sent.clone();
    needles.extend(
        [
            "Alice Arkhipova",
            "Bob Bortnik",
            "Carol Chernova",
            "book-club",
        ]
        .map(String::from),
    );
    let found = scan(&relay_dir, &needles)?;
    if found.is_empty() {
        println!(
            "scanned every file under the relay's data directory for {} plaintexts and names: no plaintext found",
            needles.len()
        );
    } else {
        for (file, needle) in &found {
            println!("FOUND {needle:?} in {file}");
        }
        bail!("plaintext found in the relay's files");
    }
    let mut profile_hits = 0;
    for p in ["alice", "bob", "carol"] {
        profile_hits += scan(&tmp.path().join(p), &needles)?.len();
    }
    println!(
        "the three profile databases (SQLCipher) contain {profile_hits} readable plaintexts on disk"
    );
    drop(alice);
    drop(bob);
    drop(carol);
    println!(
        "\ndone in {:.1} s; temporary files removed",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn relay_report(db: &Path) -> Result<()> {
    let conn = rusqlite::Connection::open(db).context("opening the relay database")?;
    let q = |sql: &str| -> Result<i64> { Ok(conn.query_row(sql, [], |r| r.get(0))?) };
    println!(
        "group logs: {}   entries: {} ({} commits, {} application), {} bytes",
        q("SELECT COUNT(*) FROM groups")?,
        q("SELECT COUNT(*) FROM entries")?,
        q("SELECT COUNT(*) FROM entries WHERE kind = 1")?,
        q("SELECT COUNT(*) FROM entries WHERE kind = 0")?,
        q("SELECT COALESCE(SUM(length(body)), 0) FROM entries")?
    );
    println!(
        "mailboxes: {}   waiting mailbox messages: {}   KeyPackages in pools: {}   epoch token hashes: {}",
        q("SELECT COUNT(*) FROM mailboxes")?,
        q("SELECT COUNT(*) FROM mailbox_messages")?,
        q("SELECT COUNT(*) FROM key_packages")?,
        q("SELECT COUNT(*) FROM group_epochs")?
    );
    let (seq, epoch, body): (i64, i64, Vec<u8>) = conn.query_row(
        "SELECT seq, epoch, body FROM entries WHERE kind = 0 ORDER BY seq DESC LIMIT 1",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let sample = hex::encode(&body[..body.len().min(48)]);
    println!(
        "a stored application entry (seq {seq}, epoch {epoch}, {} bytes): {sample}…",
        body.len()
    );
    Ok(())
}

/// Every (file, needle) where a needle's bytes occur in a file under `dir`.
fn scan(dir: &Path, needles: &[String]) -> Result<Vec<(String, String)>> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                // SQLite removes the -wal/-shm files when its last connection closes; their
                // contents are in the main file by then, which is scanned too.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
            };
            for n in needles {
                if bytes.windows(n.len()).any(|w| w == n.as_bytes()) {
                    found.push((path.display().to_string(), n.clone()));
                }
            }
        }
    }
    Ok(found)
}
