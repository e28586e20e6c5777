//! MLS at scale: the client core's group operations (through `samizdat_core::mls`, state in
//! SQLCipher) against raw mls-rs (in-memory state) doing the same, in the same run, with the
//! same ciphersuite (hybrid post-quantum ML_KEM_768_X25519) and the same rules (encrypted,
//! padded handshakes; path required).

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use mls_rs::client_builder::MlsConfig;
use mls_rs::identity::SigningIdentity;
use mls_rs::identity::basic::{BasicCredential, BasicIdentityProvider};
use mls_rs::{CipherSuiteProvider, Client, CryptoProvider, ExtensionList, MlsMessage};
use mls_rs_crypto_awslc::AwsLcCryptoProvider;
use samizdat_core::mls::{self as core_mls, Mls};
use serde_json::json;

use crate::Report;
use crate::util::with_progress;

#[derive(Debug, clap::Args)]
pub struct MlsArgs {
    /// Group sizes.
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000,10000")]
    pub members: Vec<usize>,
    /// Application messages timed per size.
    #[arg(long, default_value_t = 50)]
    pub messages: usize,
}

const CS: mls_rs::CipherSuite = core_mls::DEFAULT_CIPHERSUITE;

/// KeyPackages of `n` members, each made by its own mls-rs client.
pub(super) fn raw_key_packages(n: usize) -> Result<Vec<Vec<u8>>> {
    (0..n)
        .map(|_| {
            Ok(raw_client()?
                .generate_key_package_message(ExtensionList::new(), ExtensionList::new(), None)?
                .to_bytes()?)
        })
        .collect()
}

fn raw_client() -> Result<Client<impl MlsConfig>> {
    raw_client_with(core_mls::rules())
}

/// The same rules with the ratchet tree inside the Welcome, as the client had them before
/// Welcomes were stored once (each new member's HPKE context is then the whole tree).
fn tree_in_welcome_rules() -> mls_rs::mls_rules::DefaultMlsRules {
    core_mls::rules().with_commit_options(
        mls_rs::mls_rules::CommitOptions::new()
            .with_ratchet_tree_extension(true)
            .with_path_required(true),
    )
}

fn raw_client_with(rules: mls_rs::mls_rules::DefaultMlsRules) -> Result<Client<impl MlsConfig>> {
    let provider = AwsLcCryptoProvider::default();
    let cs = provider
        .cipher_suite_provider(CS)
        .ok_or_else(|| anyhow!("ciphersuite unsupported"))?;
    let (secret, public) = cs.signature_key_generate().map_err(|e| anyhow!("{e:?}"))?;
    let fp = core_mls::fingerprint(public.as_bytes());
    let identity =
        SigningIdentity::new(BasicCredential::new(fp.to_vec()).into_credential(), public);
    Ok(Client::builder()
        .crypto_provider(provider)
        .identity_provider(BasicIdentityProvider)
        .mls_rules(rules)
        .signing_identity(identity, secret, CS)
        .build())
}

fn core_client(dir: &std::path::Path, name: &str) -> Result<Mls> {
    let db = samizdat_core::store::Db::open(&dir.join(format!("{name}.db")), "bench passphrase")?;
    let keys = core_mls::generate_signer(CS)?;
    Ok(Mls::new(db, &keys.secret, &keys.public, CS, None)?)
}

#[derive(Default, Clone, Copy)]
struct Times {
    create: f64,
    join: f64,
    commit: f64,
    process: f64,
    encrypt: f64,
    decrypt: f64,
    load: f64,
    /// Raw only: create + add all and join with the tree inside the Welcome.
    create_in: f64,
    join_in: f64,
    commit_bytes: usize,
    welcome_bytes: usize,
    /// Bytes the relay stores to add everyone (core: tree once + one part per member; raw:
    /// one Welcome, which a mailbox per member used to copy).
    stored_bytes: usize,
}

fn secs(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

/// Raw mls-rs: `creator` makes a group adding `joiner_kp` and `others` in one commit and
/// stores its state; returns the group, its Welcome and the time taken.
fn raw_create<C: MlsConfig>(
    creator: &Client<C>,
    joiner_kp: MlsMessage,
    others: &[Vec<u8>],
) -> Result<(mls_rs::Group<C>, MlsMessage, f64)> {
    let start = Instant::now();
    let mut group = creator.create_group(ExtensionList::new(), ExtensionList::new(), None)?;
    let mut b = group.commit_builder().add_member(joiner_kp)?;
    for kp in others {
        b = b.add_member(MlsMessage::from_bytes(kp)?)?;
    }
    let out = b.build()?;
    group.apply_pending_commit()?;
    group.write_to_storage()?;
    let took = secs(start);
    let welcome = out
        .welcome_messages
        .first()
        .ok_or_else(|| anyhow!("no welcome"))?
        .clone();
    Ok((group, welcome, took))
}

fn run_raw(others: &[Vec<u8>], messages: usize) -> Result<Times> {
    let creator = raw_client()?;
    let joiner = raw_client()?;
    let joiner_kp =
        joiner.generate_key_package_message(ExtensionList::new(), ExtensionList::new(), None)?;
    let mut t = Times::default();
    let (mut group, welcome, took) = raw_create(&creator, joiner_kp, others)?;
    t.create = took;
    let tree = group.export_tree().into_owned();
    t.welcome_bytes = welcome.to_bytes()?.len();
    let start = Instant::now();
    let (mut jg, _) = joiner.join_group(Some(tree), &welcome, None)?;
    jg.write_to_storage()?;
    t.join = secs(start);
    let start = Instant::now();
    let commit = group.commit_builder().build()?;
    group.apply_pending_commit()?;
    group.write_to_storage()?;
    t.commit = secs(start);
    let bytes = commit.commit_message.to_bytes()?;
    t.commit_bytes = bytes.len();
    let start = Instant::now();
    jg.process_incoming_message(MlsMessage::from_bytes(&bytes)?)?;
    jg.write_to_storage()?;
    t.process = secs(start);
    let text = vec![b'x'; 160];
    let (mut enc, mut dec) = (0.0, 0.0);
    for _ in 0..messages {
        let s = Instant::now();
        let m = group
            .encrypt_application_message(&text, Vec::new())?
            .to_bytes()?;
        group.write_to_storage()?;
        enc += secs(s);
        let s = Instant::now();
        jg.process_incoming_message(MlsMessage::from_bytes(&m)?)?;
        jg.write_to_storage()?;
        dec += secs(s);
    }
    t.encrypt = enc / messages as f64;
    t.decrypt = dec / messages as f64;
    let gid = group.group_id().to_vec();
    drop(group);
    let start = Instant::now();
    let group = creator.load_group(&gid)?;
    t.load = secs(start);
    drop(group);
    // The same group built with the ratchet tree inside the Welcome (as before): each new
    // member's HPKE encryption then binds a GroupInfo that holds the whole tree, and that
    // one Welcome holds everything every new member needs, once.
    let creator = raw_client_with(tree_in_welcome_rules())?;
    let joiner = raw_client_with(tree_in_welcome_rules())?;
    let joiner_kp =
        joiner.generate_key_package_message(ExtensionList::new(), ExtensionList::new(), None)?;
    let (_group, welcome, took) = raw_create(&creator, joiner_kp, others)?;
    t.create_in = took;
    t.stored_bytes = welcome.to_bytes()?.len();
    let start = Instant::now();
    let (mut jg, _) = joiner.join_group(None, &welcome, None)?;
    jg.write_to_storage()?;
    t.join_in = secs(start);
    Ok(t)
}

fn run_core(dir: &std::path::Path, others: &[Vec<u8>], messages: usize) -> Result<Times> {
    let creator = core_client(dir, "creator")?;
    let joiner = core_client(dir, "joiner")?;
    let mut kps = vec![joiner.key_package(false)?];
    kps.extend_from_slice(others);
    let gid = super::util::random_bytes(16);
    let mut t = Times::default();
    let start = Instant::now();
    let mut group = creator.create_group(&gid)?;
    let pending = group.commit(&kps, &[])?;
    group.apply_pending_commit()?;
    group.save()?;
    t.create = secs(start);
    let nm = pending.welcome.ok_or_else(|| anyhow!("no welcome"))?;
    // What one new member reads: its own Welcome and the sealed tree.
    t.welcome_bytes = nm.welcomes[0].len() + nm.sealed_tree.len();
    // What the relay stores for all of them: the sealed tree once, and each member's
    // mailbox message (its Welcome in a `WelcomePart` naming the tree).
    t.stored_bytes = nm.sealed_tree.len();
    for w in &nm.welcomes {
        t.stored_bytes += samizdat_core::welcome::WelcomePart {
            group_id: gid.clone(),
            relay: b"https://relay.example.org".to_vec(),
            log: Vec::new(),
            invite_mac: Vec::new(),
            tree_blob: vec![0; 16],
            tree_len: nm.sealed_tree.len() as u64,
            welcome: w.clone(),
        }
        .encode()?
        .len();
    }
    let start = Instant::now();
    let (mut jg, _) = joiner.join(&nm.welcomes[0], Some(&nm.sealed_tree))?;
    jg.save()?;
    t.join = secs(start);
    let start = Instant::now();
    let commit = group.commit(&[], &[])?;
    group.apply_pending_commit()?;
    group.save()?;
    t.commit = secs(start);
    t.commit_bytes = commit.commit.len();
    let start = Instant::now();
    jg.process(&commit.commit)?;
    jg.save()?;
    t.process = secs(start);
    let text = vec![b'x'; 160];
    let (mut enc, mut dec) = (0.0, 0.0);
    for _ in 0..messages {
        let s = Instant::now();
        let m = group.encrypt(&text)?;
        group.save()?;
        enc += secs(s);
        let s = Instant::now();
        jg.process(&m)?;
        jg.save()?;
        dec += secs(s);
    }
    t.encrypt = enc / messages as f64;
    t.decrypt = dec / messages as f64;
    drop(group);
    let start = Instant::now();
    let group = creator.load(&gid)?;
    t.load = secs(start);
    drop(group);
    Ok(t)
}

pub async fn run(args: MlsArgs) -> Result<Report> {
    let mut text = String::from(
        "MLS group operations, ciphersuite ML_KEM_768_X25519 — client core (SQLCipher state) vs raw mls-rs (in-memory state)\n\
         members  operation          core ms     raw ms   core/raw\n",
    );
    let mut rows = Vec::new();
    for &n in &args.members {
        let n = n.max(2);
        // KeyPackages of the other n-2 members, made by separate clients (not timed).
        let others = with_progress(
            &format!("{n} members: generating KeyPackages"),
            Duration::from_millis(n as u64 / 2 + 100),
            async { tokio::task::spawn_blocking(move || raw_key_packages(n - 2)).await? },
        )
        .await?;
        let others = std::sync::Arc::new(others);
        let msgs = args.messages;
        let o = others.clone();
        let raw = with_progress(
            &format!("{n} members: raw mls-rs"),
            Duration::from_millis(n as u64 + 200),
            async move { tokio::task::spawn_blocking(move || run_raw(&o, msgs)).await? },
        )
        .await?;
        let dir = tempfile::tempdir()?;
        let path = dir.path().to_path_buf();
        let o = others.clone();
        let core = with_progress(
            &format!("{n} members: client core"),
            Duration::from_millis(n as u64 + 200),
            async move { tokio::task::spawn_blocking(move || run_core(&path, &o, msgs)).await? },
        )
        .await?;
        let ops: [(&str, f64, f64); 7] = [
            ("create + add all", core.create, raw.create),
            ("join (Welcome)", core.join, raw.join),
            ("commit (create)", core.commit, raw.commit),
            ("commit (process)", core.process, raw.process),
            ("encrypt message", core.encrypt, raw.encrypt),
            ("decrypt message", core.decrypt, raw.decrypt),
            ("load state", core.load, raw.load),
        ];
        let mut json_ops = Vec::new();
        for (name, c, r) in ops {
            text += &format!(
                "{n:>7}  {name:<17} {:>9.3} {:>10.3} {:>10.2}\n",
                c * 1000.0,
                r * 1000.0,
                c / r
            );
            json_ops.push(
                json!({"op": name, "core_ms": c * 1000.0, "raw_ms": r * 1000.0, "ratio": c / r}),
            );
        }
        text += &format!(
            "{n:>7}  sizes: one member's Welcome + sealed tree {} B (raw Welcome {} B), update commit {} B\n",
            core.welcome_bytes, raw.welcome_bytes, core.commit_bytes
        );
        text += &format!(
            "{n:>7}  relay bytes to add {} members: {} B = {:.2}x one Welcome with the tree inside (copied per mailbox before: {} B)\n",
            n - 1,
            core.stored_bytes,
            core.stored_bytes as f64 / raw.stored_bytes as f64,
            raw.stored_bytes as u64 * (n as u64 - 1)
        );
        text += &format!(
            "{n:>7}  raw, ratchet tree inside the Welcome (the client before): create + add all {:.3} ms, join {:.3} ms\n",
            raw.create_in * 1000.0,
            raw.join_in * 1000.0
        );
        rows.push(json!({"members": n, "ops": json_ops, "welcome_bytes": core.welcome_bytes, "commit_bytes": core.commit_bytes,
                         "raw_tree_in_welcome": {"create_ms": raw.create_in * 1000.0, "join_ms": raw.join_in * 1000.0, "welcome_bytes": raw.stored_bytes},
                         "raw_welcome_bytes": raw.welcome_bytes, "relay_bytes_to_add": core.stored_bytes,
                         "relay_bytes_to_add_over_one_welcome": core.stored_bytes as f64 / raw.stored_bytes as f64,
                         "relay_bytes_to_add_when_copied": raw.stored_bytes as u64 * (n as u64 - 1)}));
    }
    Ok(Report {
        text,
        json: json!({"benchmark": "mls", "ciphersuite": "ML_KEM_768_X25519", "results": rows}),
    })
}
