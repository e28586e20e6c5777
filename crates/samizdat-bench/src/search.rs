//! `bench search`: local search over a profile of 100,000 messages (issue 30's goal: p99 <
//! 50 ms), through `Profile::search` — the same call the CLI, JSON-RPC and the app make — on
//! the profile's real encrypted database with its FTS5 index kept by the triggers.

use std::path::Path;
use std::time::Instant;

use anyhow::{Result, bail};
use serde_json::json;

use crate::Report;
use crate::e2e::{PASS, ok};
use crate::util::{RelayChild, pct};

#[derive(Debug, clap::Args)]
pub struct SearchArgs {
    /// Messages in the profile.
    #[arg(long, default_value_t = 100_000)]
    pub messages: u64,
    /// Times each query is run.
    #[arg(long, default_value_t = 50)]
    pub runs: usize,
}

/// Words the filler messages are made of: Russian and English, common and rare, with ё.
const WORDS: &[&str] = &[
    "встреча",
    "встречи",
    "завтра",
    "сегодня",
    "ёлка",
    "ёлки",
    "документы",
    "граница",
    "поезд",
    "вокзал",
    "деньги",
    "адрес",
    "квартира",
    "мама",
    "папа",
    "работа",
    "суббота",
    "пятница",
    "meeting",
    "tomorrow",
    "station",
    "train",
    "border",
    "papers",
    "money",
    "address",
    "the",
    "and",
    "at",
    "noon",
    "please",
    "call",
    "when",
    "where",
    "ok",
    "да",
    "нет",
    "привет",
    "пока",
];

/// `total` messages of 6–14 words each, drawn from [`WORDS`] in a fixed sequence: the same
/// profile every run.
fn fill(home: &Path, total: u64) -> Result<()> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    crate::util::fill_profile(home, total, |_| {
        let n = 6 + next() % 9;
        (0..n)
            .map(|_| WORDS[(next() % WORDS.len() as u64) as usize])
            .collect::<Vec<_>>()
            .join(" ")
    })
}

pub async fn run(args: SearchArgs) -> Result<Report> {
    let tmp = tempfile::tempdir()?;
    let relay = RelayChild::start(&tmp.path().join("relay"), None)?;
    let a = tmp.path().join("alice");
    let url = relay.url.clone();
    {
        let a = a.clone();
        tokio::task::spawn_blocking(move || -> Result<()> {
            ok(&a, &["init", "--relay", &url, "--name", "Alice"])?;
            ok(&a, &["group", "create", "notes"])?;
            ok(&a, &["send", "notes", "первое сообщение"])?;
            Ok(())
        })
        .await??;
    }
    eprintln!("search: filling the profile to {} messages", args.messages);
    let t = Instant::now();
    fill(&a, args.messages)?;
    let filled = t.elapsed();
    let profile = samizdat_core::Profile::open(&a, PASS)?;
    // A common word, a rarer one, a Russian prefix, ё typed as е, two words, one
    // conversation only, and a word that is nowhere.
    let notes = profile.find_conversation("notes")?;
    let queries: [(&str, Option<&samizdat_core::ConversationId>); 7] = [
        ("the", None),
        ("граница", None),
        ("встре", None),
        ("елки", None),
        ("поезд вокзал", None),
        ("деньги", Some(&notes)),
        ("nowhere", None),
    ];
    let mut rows = Vec::new();
    let mut all = Vec::new();
    let mut text = format!(
        "local search, {} messages in the encrypted profile (filled in {:.1} s); {} runs per query, 100 hits asked\n",
        args.messages,
        filled.as_secs_f64(),
        args.runs
    );
    for (q, within) in queries {
        let mut ms = Vec::with_capacity(args.runs);
        let mut hits = 0;
        for _ in 0..args.runs {
            let t = Instant::now();
            hits = profile.search(q, within, 100)?.len();
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        if q != "nowhere" && hits == 0 {
            bail!("{q:?} found nothing");
        }
        all.extend_from_slice(&ms);
        let (p50, p99) = (pct(&mut ms, 50.0), pct(&mut ms, 99.0));
        text.push_str(&format!(
            "  {:<14} {:<6} hits {:>3}  p50 {:>6.2} ms  p99 {:>6.2} ms\n",
            q,
            if within.is_some() { "in one" } else { "all" },
            hits,
            p50,
            p99
        ));
        rows.push(json!({ "query": q, "in_one_conversation": within.is_some(), "hits": hits, "p50_ms": p50, "p99_ms": p99 }));
    }
    // What a removal costs: delete for me merges the index so the words leave its pages.
    let mut profile = profile;
    let victims: Vec<_> = profile
        .search("граница", None, 5)?
        .into_iter()
        .map(|h| h.id)
        .collect();
    let mut removal = Vec::new();
    for id in victims {
        let t = Instant::now();
        profile.delete_message(&id, false).await?;
        removal.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let removal_p50 = pct(&mut removal, 50.0);
    text.push_str(&format!(
        "  a message deleted (index merged, words gone from its pages): p50 {removal_p50:.1} ms of {} deletes\n",
        removal.len()
    ));
    let p99 = pct(&mut all, 99.0);
    text.push_str(&format!(
        "every query: p99 {p99:.2} ms (goal < 50 ms: {})\n",
        if p99 < 50.0 { "met" } else { "not met" }
    ));
    Ok(Report {
        text,
        json: json!({ "messages": args.messages, "runs": args.runs, "queries": rows, "p99_ms": p99,
            "delete_p50_ms": removal_p50 }),
    })
}
