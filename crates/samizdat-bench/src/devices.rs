//! `bench link-device`: link a new device to a person who is in N conversations.
//!
//! Setup (not timed), in process through the client core against a real relay process:
//! alice, `--contacts` people who accepted her invites (1:1 conversations), and groups of
//! alice and one contact until she is in `--conversations` conversations, each with
//! `--messages` messages. Timed: from the new device's `device join` (its profile and link) through `device add`
//! returning — the request, the certificate, its KeyPackages, one commit per conversation
//! plus the self group, the Welcomes, the history archive fetched and imported — while
//! alice's device syncs every 100 ms (what `serve` does on the link's pushes). Reported
//! with the relay bytes it cost: log entries and mailbox messages (the relay's counters)
//! and the growth of its data directory (the database plus blobs: sealed trees, the archive).

use std::cell::Cell;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use samizdat_core::Profile;
use serde_json::json;

use crate::Report;
use crate::e2e::PASS;
use crate::util::{RelayChild, dir_bytes};

#[derive(Debug, clap::Args)]
pub struct LinkDeviceArgs {
    /// Conversations alice is in.
    #[arg(long, default_value_t = 100)]
    pub conversations: usize,
    /// How many of them are 1:1 conversations (the rest are groups of alice and a contact).
    #[arg(long, default_value_t = 20)]
    pub contacts: usize,
    /// Messages in each conversation before linking (the history transferred).
    #[arg(long, default_value_t = 10)]
    pub messages: usize,
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

async fn metrics(relay: &RelayChild) -> Result<String> {
    Ok(reqwest::get(&relay.metrics).await?.text().await?)
}

pub async fn run(args: LinkDeviceArgs) -> Result<Report> {
    let n = args.conversations.max(1);
    let contacts = args.contacts.clamp(1, n);
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("relay");
    let relay = RelayChild::start(&data, None)?;
    let mut alice = Profile::init(&tmp.path().join("alice"), PASS, &relay.url, "Alice").await?;
    eprintln!(
        "setup: {contacts} contacts, {} groups, {} messages each",
        n - contacts,
        args.messages
    );
    for i in 0..contacts {
        let mut peer = Profile::init(
            &tmp.path().join(format!("peer{i}")),
            PASS,
            &relay.url,
            &format!("Peer {i}"),
        )
        .await?;
        let link = alice.invite(3600, false)?.to_link();
        peer.accept(&link, "alice").await?;
    }
    alice.sync().await?;
    let names: Vec<samizdat_core::ContactId> =
        alice.contacts()?.into_iter().map(|c| c.id).collect();
    if names.len() != contacts {
        return Err(anyhow!(
            "only {} of {contacts} contacts connected",
            names.len()
        ));
    }
    for g in 0..n - contacts {
        let name = format!("group-{g}");
        let group = alice.group_create(&name).await?;
        alice
            .group_add(&group, std::slice::from_ref(&names[g % contacts]))
            .await?;
    }
    let convs: Vec<samizdat_core::ConversationId> =
        alice.conversations()?.into_iter().map(|c| c.id).collect();
    for c in &convs {
        for m in 0..args.messages {
            alice
                .send(c, &format!("message {m} of the history"))
                .await?;
        }
    }
    alice.sync().await?;
    let before_metrics = metrics(&relay).await?;
    let before_bytes = dir_bytes(&data)?;
    eprintln!("linking a device into {} conversations", convs.len());

    let start = Instant::now();
    let done = Cell::new(false);
    // The link the new device shows, taken to the first device (`device add`).
    let shown: std::cell::RefCell<Option<String>> = std::cell::RefCell::new(None);
    let laptop_home = tmp.path().join("laptop");
    let join = async {
        let r = Profile::device_join(
            &laptop_home,
            PASS,
            &relay.url,
            "laptop",
            Duration::from_secs(600),
            |link, _code| *shown.borrow_mut() = Some(link.to_string()),
        )
        .await;
        done.set(true);
        r
    };
    let first = async {
        while !done.get() {
            let link = shown.borrow_mut().take();
            if let Some(link) = link {
                alice.device_add(&link).await?;
            }
            alice.sync().await?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::Ok(())
    };
    let (joined, synced) = tokio::join!(join, first);
    synced?;
    let (laptop, joined) = joined?;
    let elapsed = start.elapsed();
    let after_metrics = metrics(&relay).await?;
    let after_bytes = dir_bytes(&data)?;
    let delta = |name: &str| metric(&after_metrics, name) - metric(&before_metrics, name);
    let entry_bytes = delta("samizdat_entry_bytes_stored_total");
    let mailbox_bytes = delta("samizdat_mailbox_bytes_stored_total");
    let entries = delta("samizdat_entries_stored_total");
    let dir = after_bytes.saturating_sub(before_bytes);
    let on_laptop = laptop.conversations()?.len();
    if joined.conversations != convs.len() || on_laptop != convs.len() {
        return Err(anyhow!(
            "the new device is in {} conversations (lists {on_laptop}) of {}",
            joined.conversations,
            convs.len()
        ));
    }
    let text = format!(
        "link a device into {c} conversations ({contacts} 1:1, {g} groups; {m} messages each)\n\
         time from `device join` (a new profile, its link) to linked, `device add` included: {t:.2} s (goal < 10 s)\n\
         history transferred: {msgs} messages\n\
         relay: {entries} log entries, {eb} KiB of entries, {mb} KiB of mailbox messages, \
         data directory +{db} KiB (database, sealed trees, the archive)\n\
         reproduce: samizdat bench link-device --conversations {c} --contacts {contacts} --messages {m}",
        c = convs.len(),
        g = n - contacts,
        m = args.messages,
        t = elapsed.as_secs_f64(),
        msgs = joined.messages,
        eb = entry_bytes / 1024,
        mb = mailbox_bytes / 1024,
        db = dir / 1024,
    );
    Ok(Report {
        text,
        json: json!({
            "conversations": convs.len(),
            "contacts": contacts,
            "messages_per_conversation": args.messages,
            "link_seconds": elapsed.as_secs_f64(),
            "history_messages": joined.messages,
            "relay_entries": entries,
            "relay_entry_bytes": entry_bytes,
            "relay_mailbox_bytes": mailbox_bytes,
            "relay_dir_growth_bytes": dir,
        }),
    })
}
