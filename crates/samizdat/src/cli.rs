//! The client commands: a thin front over `samizdat_core::Profile`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use samizdat_core::{ClientHandle, Event, Mode, Notice, Profile};
use samizdat_rpc::{self as rpc, Api};
use serde_json::json;

use tokio::io::AsyncWriteExt;

use crate::client::{
    Backend, RemoteClient, Secret, connect, lock_waiting, require_profile, serve_socket,
    socket_path,
};

#[derive(Debug, clap::Subcommand)]
pub enum RelaysCommand {
    /// One relay address per line, the primary first.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Open a mailbox on another, independent relay.
    Add { url: String },
    /// Close the mailbox on a relay (not the last one).
    Remove { url: String },
}

#[derive(Debug, clap::Subcommand)]
pub enum ConfigCommand {
    /// Move a conversation to another relay once its relay has been unreachable this long
    /// (30s, 5m, 1h…; `off`: only by `samizdat move`). Default 5m. Without an argument, show
    /// the current setting.
    MoveAfter { duration: Option<String> },
    /// Fetch incoming attachments up to SIZE (e.g. 5M, 500K; 0 = only on request).
    AutoDownload { size: String },
    /// Send read receipts and see other people's (`on`), or neither (`off`, the default).
    /// Without an argument, show the current setting.
    ReadReceipts { state: Option<String> },
    /// Let calls connect directly, showing each side the other's address (`on`), or only
    /// through the relay (`off`, the default). Without an argument, show the current setting.
    CallsDirect { state: Option<String> },
    /// Connect through a proxy from now on: a URL (socks5h://, socks5://, http://), `tor`,
    /// or `off`. Without an argument, show the current setting.
    Proxy {
        url: Option<String>,
        /// Separate proxy identities and connections for the mailbox and each conversation
        /// (on by default with `tor`).
        #[arg(long)]
        isolate: bool,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum ClientCommand {
    /// Create a profile: keys, encrypted store, a mailbox and KeyPackages on a relay (or on
    /// each of several independent relays).
    Init {
        /// The relay's address, e.g. http://127.0.0.1:7700; repeat it for a mailbox on each of
        /// several independent relays (the first is the primary).
        #[arg(long, required = true)]
        relay: Vec<String>,
        /// Your display name, shared only inside encrypted messages.
        #[arg(long)]
        name: String,
        /// Connect through this proxy: socks5h://[user:pass@]host:port (names resolved by
        /// the proxy), socks5://… or http://… (also SAMIZDAT_PROXY).
        #[arg(long, conflicts_with = "tor")]
        proxy: Option<String>,
        /// Connect through Tor (socks5h://127.0.0.1:9050), each conversation and the mailbox
        /// on its own circuit.
        #[arg(long)]
        tor: bool,
        /// With --proxy: separate proxy identities and connections for the mailbox and for
        /// each conversation (always on with --tor).
        #[arg(long, requires = "proxy")]
        isolate: bool,
    },
    /// Print an invite link (last line of the output).
    Invite {
        /// Let more than one person use the link.
        #[arg(long)]
        reusable: bool,
        /// How long the link stays valid, in hours.
        #[arg(long, default_value_t = 72)]
        hours: u64,
        /// Also draw the link as a QR code.
        #[arg(long)]
        qr: bool,
    },
    /// Accept an invite link and start a 1:1 conversation.
    Accept {
        link: String,
        /// What you will call this contact.
        #[arg(long)]
        name: String,
    },
    /// List contacts.
    Contacts {
        #[arg(long)]
        json: bool,
    },
    /// Send a message to a contact or a group (`@saved`: your saved messages, a note to
    /// yourself that your devices share).
    Send {
        target: String,
        /// The message (or use --file).
        text: Option<String>,
        /// Send this file (encrypted, uploaded to the conversation's relay).
        #[arg(long)]
        file: Option<std::path::PathBuf>,
        /// The file's caption.
        #[arg(long = "text", requires = "file")]
        caption: Option<String>,
        /// Send a photo's metadata (location, camera, time) as it is; by default it is removed
        /// from JPEG, PNG and WebP files.
        #[arg(long, requires = "file")]
        keep_metadata: bool,
        /// Answer this message (its id from `history --json`): shown quoted.
        #[arg(long, allow_hyphen_values = true, conflicts_with = "file")]
        reply_to: Option<String>,
    },
    /// Mute a conversation: for a while (30m, 8h, 1w), until unmuted (no duration), or `off`.
    Mute {
        target: String,
        duration: Option<String>,
    },
    /// Keep a conversation at the top of the list.
    Pin {
        target: String,
        #[arg(long)]
        off: bool,
    },
    /// List calls (of one conversation, or all), newest first.
    Calls {
        target: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Act on a call: `decline CALL_ID` (a ringing one) or `end CALL_ID`.
    Call { action: String, call_id: String },
    /// Block a contact: nothing they send is kept, you cannot write to them (`--off`: unblock).
    Block {
        contact: String,
        #[arg(long)]
        off: bool,
    },
    /// Delete a chat on this device (a group is left first). Needs `--yes`.
    DeleteChat {
        target: String,
        #[arg(long)]
        yes: bool,
    },
    /// Keep a conversation out of the main list (a new message brings it back unless muted).
    Archive {
        target: String,
        #[arg(long)]
        off: bool,
    },
    /// Find messages on this device (each word as a prefix; newest first).
    Search {
        query: String,
        /// Only in this contact's or group's conversation.
        #[arg(long = "in")]
        within: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// React to a message with one emoji (replacing your earlier reaction to it).
    React {
        /// The message's id (from `history --json`; it may start with `-`).
        #[arg(allow_hyphen_values = true)]
        message_id: String,
        emoji: String,
        /// Take this reaction back.
        #[arg(long)]
        remove: bool,
    },
    /// Correct the text of a message of yours, for everyone.
    Edit {
        #[arg(allow_hyphen_values = true)]
        message_id: String,
        text: String,
    },
    /// Delete a message on this device, or for everyone (a message of yours).
    Delete {
        #[arg(allow_hyphen_values = true)]
        message_id: String,
        #[arg(long)]
        for_everyone: bool,
    },
    /// Send a message (its text and file) on to another contact or group.
    Forward {
        #[arg(allow_hyphen_values = true)]
        message_id: String,
        target: String,
    },
    /// Fetch a message's attachment, check it and write it decrypted.
    Download {
        /// The message's id (from `history --json`; it may start with `-`).
        #[arg(allow_hyphen_values = true)]
        message_id: String,
        /// A new file, or a directory to put it in [default: the current directory]
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
    /// Profile settings.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Fetch, process and store what arrived; print it.
    Sync {
        #[arg(long)]
        json: bool,
    },
    /// Stay connected and print messages as they arrive.
    Listen {
        #[arg(long)]
        json: bool,
        /// Stop after this many seconds.
        #[arg(long)]
        timeout: Option<u64>,
        /// Stop after this many messages.
        #[arg(long)]
        count: Option<usize>,
    },
    /// The relays this profile has a mailbox on.
    #[command(subcommand)]
    Relays(RelaysCommand),
    /// Move a conversation's log to another relay now (its relay is blocked); every member
    /// is told and follows.
    Move {
        target: String,
        /// The relay to move to.
        #[arg(long)]
        to: String,
    },
    /// Disappearing messages: how long messages in a conversation live (30s, 5m, 1h, 1d, 1w,
    /// or off), for every member.
    Timer { target: String, duration: String },
    /// Show a conversation's messages.
    History {
        target: String,
        #[arg(long)]
        json: bool,
    },
    /// List conversations with unread counts.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Manage groups.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Channels: one set of admins posts, anyone with the link reads, no one can list readers.
    #[command(subcommand)]
    Channel(ChannelCommand),
    /// Show the safety number shared with a contact (compare it in person).
    Verify {
        alias: String,
        #[arg(long)]
        qr: bool,
        /// Record that you compared the number and it matched.
        #[arg(long, conflicts_with = "unmark")]
        mark: bool,
        /// Take a verification back.
        #[arg(long)]
        unmark: bool,
    },
    /// List pending group invitations from people who are not your contacts.
    Invitations {
        #[arg(long)]
        json: bool,
    },
    /// Accept or decline a pending group invitation.
    #[command(subcommand)]
    Invitation(InvitationCommand),
    /// Link, list and revoke your devices.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Show this profile's name, relay and key fingerprint.
    Whoami,
    /// Run the client service in the foreground: stay connected, and carry out every other
    /// command for this profile through its socket (`samizdat.sock` in the profile).
    Serve,
    /// Delete this profile at once: every file overwritten and removed. A running `serve` or
    /// app for it is stopped.
    Wipe {
        /// Do not ask (required when stdin is not a terminal).
        #[arg(long)]
        yes: bool,
    },
    /// Write an encrypted backup of this profile (passphrase from SAMIZDAT_BACKUP_PASSPHRASE
    /// or a prompt).
    Backup {
        #[arg(long)]
        out: PathBuf,
        /// Leave the attachments out (they can be fetched again while the relay keeps them).
        #[arg(long)]
        no_attachments: bool,
    },
    /// Recreate a profile from a backup in --home (which must hold none); it then catches up
    /// from the relays. The new profile's passphrase comes from SAMIZDAT_PASSPHRASE or a prompt.
    Restore { file: PathBuf },
    /// The duress passphrase: opening the profile with it wipes the profile silently and
    /// opens a fresh, empty one with the same name.
    #[command(subcommand)]
    Duress(DuressCommand),
    /// The app: a local web UI in your browser (English and Russian). Prints its URL, with a
    /// one-time launch token, as the last line.
    App {
        /// Address to serve on; loopback only. Port 0 picks a free port.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
        /// Do not open the browser.
        #[arg(long)]
        no_open: bool,
        /// The relay suggested when creating a profile in the app.
        #[arg(long, env = "SAMIZDAT_RELAY", default_value = "http://127.0.0.1:7700")]
        relay: String,
        /// A browser session unused this many seconds ends (the page asks for a new launch
        /// link); default 12 hours.
        #[arg(long, default_value_t = 12 * 3600)]
        session_idle: u64,
    },
    /// Line-delimited JSON-RPC 2.0 on stdin/stdout, for bots and scripts (docs/RPC.md).
    Rpc {
        /// Print the OpenRPC document describing every method and exit.
        #[arg(long)]
        openrpc: bool,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum DeviceCommand {
    /// On the new device: make this --home (new, empty) a device of yours. Prints a one-time
    /// link (valid 2 minutes) and its code, then waits (bounded by --timeout) until the device
    /// that holds your identity adds it with `device add LINK`.
    Join {
        /// This device's name, shown on your other devices.
        #[arg(long)]
        name: String,
        /// The relay this device keeps its mailbox on.
        #[arg(long, env = "SAMIZDAT_RELAY")]
        relay: String,
        /// Also draw the link as a QR code.
        #[arg(long)]
        qr: bool,
        /// Seconds to wait for the other device.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
    },
    /// On the device that holds your identity: add the new device that shows LINK. Shows its
    /// name and code and asks; nothing is signed before you confirm.
    Add {
        link: String,
        /// Confirm without asking (scripts; compare the code on both screens first).
        #[arg(long)]
        yes: bool,
        /// Seconds to wait for the new device to finish.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
    },
    /// Your devices.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a device from every conversation; it reads nothing sent after.
    Revoke { id: String },
}

#[derive(Debug, clap::Subcommand)]
pub enum DuressCommand {
    /// Set (or replace) it: from SAMIZDAT_DURESS_PASSPHRASE or a prompt (twice).
    Set,
}

#[derive(Debug, clap::Subcommand)]
pub enum InvitationCommand {
    /// Join the group: only now is its relay contacted and your name sent.
    Accept { id: i64 },
    /// Forget the invitation; nothing is ever sent.
    Decline { id: i64 },
}

#[derive(Debug, clap::Subcommand)]
pub enum ChannelCommand {
    /// Create a channel on your relay, with you as its admin. Prints its link last.
    Create {
        name: String,
        /// A line that says what the channel is.
        #[arg(long, default_value = "")]
        about: String,
    },
    /// Post to a channel you are an admin of. Prints the post's number.
    Post {
        channel: String,
        /// The post, or the caption of --file (may be empty then).
        #[arg(default_value = "")]
        text: String,
        /// A photo or file to post (a photo's location, camera and time are removed first).
        #[arg(long)]
        file: Option<std::path::PathBuf>,
    },
    /// Save post SEQ's photo or file (fetched from the first of the channel's relays whose
    /// copy checks out).
    Download {
        channel: String,
        seq: u64,
        /// A new file, or a directory to put it in [default: the current directory]
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
    /// Correct the text of post SEQ.
    Edit {
        channel: String,
        seq: u64,
        text: String,
    },
    /// Delete post SEQ for every reader.
    Delete { channel: String, seq: u64 },
    /// Pin post SEQ (or, with no SEQ, unpin).
    Pin { channel: String, seq: Option<u64> },
    /// Print the channel's link (the last line of stdout); whoever holds it can read.
    Link {
        channel: String,
        /// Also draw it as a QR code.
        #[arg(long)]
        qr: bool,
    },
    /// Follow a channel from its link. Nothing is sent that names you.
    Follow { link: String },
    /// Show a channel's posts (fetching what is new first) and mark them read.
    Read {
        channel: String,
        #[arg(long)]
        json: bool,
    },
    /// Manage a channel's mirrors.
    #[command(subcommand)]
    Mirror(ChannelMirrorCommand),
    /// The channels you run or follow, with unread counts.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Stop following a channel on this device (nothing is sent).
    Leave { channel: String },
    /// Manage a channel's admins (through its admin group).
    #[command(subcommand)]
    Admin(ChannelAdminCommand),
    /// Rotate the channel key: followers read on; a link made after opens nothing before.
    Rekey { channel: String },
}

#[derive(Debug, clap::Subcommand)]
pub enum ChannelAdminCommand {
    /// Ask a contact to administer the channel (added once their device made its key).
    Add { channel: String, alias: String },
    /// Take an admin out: their records are refused from then on.
    Remove { channel: String, alias: String },
    /// The contacts who administer the channel with you.
    List { channel: String },
}

#[derive(Debug, clap::Subcommand)]
pub enum ChannelMirrorCommand {
    /// Copy the channel to the relay at URL and keep it filled; readers fall back to it.
    Add { channel: String, url: String },
}

#[derive(Debug, clap::Subcommand)]
pub enum GroupCommand {
    /// Create an empty group.
    Create { name: String },
    /// Add contacts to a group.
    Add {
        name: String,
        #[arg(required = true)]
        aliases: Vec<String>,
    },
    /// Remove a contact from a group.
    Remove { name: String, alias: String },
    /// Send a member who never joined a fresh Welcome (no new invite needed).
    Readd { name: String, alias: String },
    /// Rename a group for every member.
    Rename { name: String, new_name: String },
    /// Leave a group.
    Leave { name: String },
    /// List a group's members.
    Members {
        name: String,
        #[arg(long)]
        json: bool,
    },
}

fn default_home() -> Result<PathBuf> {
    directories::ProjectDirs::from("org", "samizdat", "samizdat")
        .map(|d| d.data_dir().to_path_buf())
        .ok_or_else(|| {
            anyhow!("cannot find a data directory; pass --home DIR or set SAMIZDAT_HOME")
        })
}

/// The name of the systemd credential that carries a profile's passphrase to
/// `samizdat@.service` (`LoadCredential=` / `LoadCredentialEncrypted=`, docs/DEPLOY.md).
pub const PASSPHRASE_CREDENTIAL: &str = "samizdat-passphrase";

/// The passphrase handed over by systemd, if this process was started with credentials:
/// a file in `$CREDENTIALS_DIRECTORY` that only this service can read, so the passphrase
/// sits in no environment (which `/proc/PID/environ` and child processes would see) and no
/// unit file. One trailing newline (as `echo` or an editor leaves) is not part of it.
fn credential_passphrase() -> Result<Option<Secret>> {
    let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") else {
        return Ok(None);
    };
    let path = Path::new(&dir).join(PASSPHRASE_CREDENTIAL);
    let bytes = match std::fs::read(&path) {
        Ok(b) => zeroize::Zeroizing::new(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).context("reading the passphrase credential"),
    };
    let mut text = std::str::from_utf8(&bytes)
        .map_err(|_| anyhow!("the passphrase credential is not UTF-8"))?;
    text = text.strip_suffix('\n').unwrap_or(text);
    text = text.strip_suffix('\r').unwrap_or(text);
    if text.is_empty() {
        return Err(anyhow!("the passphrase credential is empty"));
    }
    Ok(Some(Secret::new(text.to_string())))
}

/// The passphrase, wiped from memory when dropped: from a systemd credential, then
/// SAMIZDAT_PASSPHRASE, then a prompt on a terminal.
fn passphrase(confirm: bool) -> Result<Secret> {
    if let Some(p) = credential_passphrase()? {
        return Ok(p);
    }
    if let Ok(p) = std::env::var("SAMIZDAT_PASSPHRASE") {
        return Ok(Secret::new(p));
    }
    if !std::io::stdin().is_terminal() {
        return Err(anyhow!(
            "no passphrase: set SAMIZDAT_PASSPHRASE, hand over the systemd credential \
             samizdat-passphrase, or run in a terminal"
        ));
    }
    let p =
        Secret::new(rpassword::prompt_password("Passphrase: ").context("reading the passphrase")?);
    if confirm {
        let again = Secret::new(
            rpassword::prompt_password("Repeat passphrase: ").context("reading the passphrase")?,
        );
        if *again != *p {
            return Err(anyhow!("the passphrases differ"));
        }
    }
    Ok(p)
}

/// `30s`, `5m`, `1h`, `1d`, `1w` (or a plain number of seconds); `off` is 0.
/// A size: bytes, or with K, M or G (powers of 1024).
fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.eq_ignore_ascii_case(&'k') => (&t[..i], 1u64 << 10),
        Some((i, c)) if c.eq_ignore_ascii_case(&'m') => (&t[..i], 1 << 20),
        Some((i, c)) if c.eq_ignore_ascii_case(&'g') => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    num.trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| anyhow!("{s:?} is not a size (e.g. 0, 500K, 5M)"))
}

/// A progress bar for one transfer, drawn on stderr only when it is a terminal.
struct TransferBar {
    bar: Option<indicatif::ProgressBar>,
    label: &'static str,
}

impl TransferBar {
    fn new(label: &'static str) -> TransferBar {
        TransferBar { bar: None, label }
    }

    fn on(&mut self, e: &samizdat_core::LiveEvent) {
        use std::io::IsTerminal;
        let Event::Transfer {
            done,
            total,
            resumed_at,
            direction,
            ..
        } = &e.event
        else {
            return;
        };
        if let Some(at) = resumed_at {
            let what = match direction {
                samizdat_core::TransferDirection::Upload => "upload",
                samizdat_core::TransferDirection::Download => "download",
            };
            let line = format!("{what} resumed at byte {at} of {total}");
            match &self.bar {
                Some(b) => b.println(line),
                None => eprintln!("{line}"),
            }
        }
        if !std::io::stderr().is_terminal() {
            return;
        }
        let label = self.label;
        let bar = self.bar.get_or_insert_with(|| {
            let b = indicatif::ProgressBar::new(*total);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
            ) {
                b.set_style(style.progress_chars("=> "));
            }
            b.set_message(label);
            b
        });
        bar.set_position(*done);
    }

    fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

fn parse_duration(s: &str) -> Result<u64> {
    let s = s.trim();
    if s == "off" || s == "0" {
        return Ok(0);
    }
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| anyhow!("{s:?} is not a duration (like 30s, 5m, 1h, 1d, 1w or off)"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => {
            return Err(anyhow!(
                "{s:?} is not a duration (like 30s, 5m, 1h, 1d, 1w or off)"
            ));
        }
    };
    n.checked_mul(mult)
        .filter(|v| *v > 0)
        .ok_or_else(|| anyhow!("{s:?} is not a usable duration"))
}

/// The backup passphrase, from the environment or asked (twice when making a backup).
fn backup_passphrase(confirm: bool) -> Result<Secret> {
    if let Ok(p) = std::env::var("SAMIZDAT_BACKUP_PASSPHRASE") {
        return Ok(Secret::new(p));
    }
    if !std::io::stdin().is_terminal() {
        return Err(anyhow!(
            "no backup passphrase: set SAMIZDAT_BACKUP_PASSPHRASE or run in a terminal"
        ));
    }
    let p = Secret::new(
        rpassword::prompt_password("Backup passphrase: ").context("reading the passphrase")?,
    );
    if confirm {
        let again = Secret::new(
            rpassword::prompt_password("Repeat it: ").context("reading the passphrase")?,
        );
        if *again != *p {
            return Err(anyhow!("the passphrases differ"));
        }
    }
    Ok(p)
}

/// The duress passphrase, from the environment or asked twice on a terminal.
fn duress_passphrase() -> Result<Secret> {
    if let Ok(p) = std::env::var("SAMIZDAT_DURESS_PASSPHRASE") {
        if p.chars().count() < 8 {
            return Err(anyhow!(
                "the duress passphrase must have at least 8 characters"
            ));
        }
        return Ok(Secret::new(p));
    }
    if !std::io::stdin().is_terminal() {
        return Err(anyhow!(
            "no duress passphrase: set SAMIZDAT_DURESS_PASSPHRASE or run in a terminal"
        ));
    }
    let p = Secret::new(
        rpassword::prompt_password("Duress passphrase: ").context("reading the passphrase")?,
    );
    let again =
        Secret::new(rpassword::prompt_password("Repeat it: ").context("reading the passphrase")?);
    if *again != *p {
        return Err(anyhow!("the passphrases differ"));
    }
    if p.chars().count() < 8 {
        return Err(anyhow!(
            "the duress passphrase must have at least 8 characters"
        ));
    }
    Ok(p)
}

/// `samizdat wipe`: ask (on a terminal) unless `--yes`; a running owner (serve, the app)
/// wipes the profile itself (the `wipe` method) and exits; otherwise delete everything here.
async fn wipe(home: &Path, yes: bool) -> Result<()> {
    if !Profile::exists(home) && !home.exists() {
        return Err(anyhow!("no profile in {}", home.display()));
    }
    if !yes {
        if !std::io::stdin().is_terminal() {
            return Err(anyhow!(
                "wipe deletes the profile for good; pass --yes to confirm"
            ));
        }
        eprint!(
            "Delete the profile in {} for good? Type yes: ",
            home.display()
        );
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if answer.trim() != "yes" {
            return Err(anyhow!("not wiped"));
        }
    }
    // A running owner (serve, the app) is asked to wipe what it holds. One that does not
    // answer (stuck, or an older version) is told to stop (its pid is in the lock file);
    // its files go either way.
    let asked = match crate::client::connect(home).await {
        Some(stream) => crate::client::RemoteClient::new(stream)
            .call_rpc("wipe", json!({}), |_| {})
            .await
            .is_ok(),
        None => false,
    };
    if !asked {
        crate::client::stop_owner(home);
    }
    samizdat_core::wipe::wipe(home)?;
    println!("wiped {}", home.display());
    Ok(())
}

fn print_qr(data: &str) -> Result<()> {
    let code =
        qrcode::QrCode::new(data.as_bytes()).context("the data is too long for a QR code")?;
    let s = code
        .render::<qrcode::render::unicode::Dense1x2>()
        .quiet_zone(true)
        .build();
    println!("{s}");
    Ok(())
}

/// A message id as typed (from `history --json`).
fn message_id(s: &str) -> Result<samizdat_core::MessageId> {
    Ok(s.parse()?)
}

/// Text from others (messages, names, relay errors) made safe for a terminal line: control
/// characters and line breaks are shown escaped, so nobody can forge a line or a colour.
pub fn safe(s: &str) -> String {
    samizdat_core::text::escape(s)
}

/// Print one event. JSON mode prints every event as one line; the human form leaves out
/// the bookkeeping (queued, delivered, progress, connection changes).
fn print_event(e: &Event, json: bool) {
    if json {
        println!("{}", serde_json::to_string(e).unwrap_or_default());
        return;
    }
    match e {
        Event::Message {
            conversation,
            from,
            text,
            ..
        } => println!("[{}] {}: {}", safe(conversation), safe(from), safe(text)),
        Event::MessageFailed {
            conversation,
            error,
            ..
        } => println!(
            "[{}] a message was refused by the relay: {}",
            safe(conversation),
            safe(&error.detail)
        ),
        Event::InvitationPending {
            id,
            from,
            members,
            warning,
            ..
        } => {
            println!(
                "invitation {id}: a group of {members} from {from} (not a contact); `samizdat invitation accept {id}` or `decline {id}`"
            );
            if let Some(w) = warning {
                println!("  warning: {}", safe(&crate::i18n::notice_en(w)));
            }
        }
        Event::NewContact {
            alias,
            display_name,
            ..
        } => println!(
            "new contact: {} (calls themself {:?})",
            safe(alias),
            display_name
        ),
        Event::Joined { conversation, .. } => {
            println!("joined a conversation ({})", safe(conversation))
        }
        Event::CallIncoming {
            conversation,
            call_id,
            video,
            from,
            group,
            ..
        } => println!(
            "[{}] {} is calling ({}{}): call {call_id}; `samizdat call decline {call_id}`, or answer in the app",
            safe(conversation),
            safe(from),
            if *group { "group, " } else { "" },
            if *video { "video" } else { "voice" }
        ),
        Event::CallEnded {
            outgoing,
            video,
            outcome,
            duration_secs,
            call_id,
            group,
            ..
        } => println!(
            "call {call_id}: {}",
            crate::i18n::call_line_en(*outgoing, *video, *group, *outcome, *duration_secs)
        ),
        Event::TimerSet {
            conversation,
            who,
            secs,
            ..
        } => {
            if *secs == 0 {
                println!(
                    "[{}] {} turned disappearing messages off",
                    safe(conversation),
                    safe(who)
                );
            } else {
                println!(
                    "[{}] {} set disappearing messages to {secs} s",
                    safe(conversation),
                    safe(who)
                );
            }
        }
        Event::GroupNamed { conversation, .. } => {
            println!("group is called {}", safe(conversation))
        }
        Event::MemberAdded {
            conversation, who, ..
        } => println!("[{}] {} was added", safe(conversation), safe(who)),
        Event::MemberRemoved {
            conversation, who, ..
        } => println!("[{}] {} was removed", safe(conversation), safe(who)),
        Event::MemberLeft {
            conversation, who, ..
        } => println!("[{}] {} left", safe(conversation), safe(who)),
        Event::Removed { conversation, .. } => {
            println!("[{}] you were removed from the group", safe(conversation))
        }
        Event::Reaction {
            id,
            who,
            emoji: Some(emoji),
            ..
        } => println!("{} reacted {} to {id}", safe(who), safe(emoji)),
        Event::MessageEdited { id, text, .. } => {
            println!("message {id} was edited: {}", safe(text))
        }
        Event::MessageDeleted {
            id,
            for_everyone: true,
            ..
        } => println!("message {id} was deleted by its sender"),
        Event::Notice {
            conversation: Some(c),
            notice,
            ..
        } => println!(
            "[{}] note: {}",
            safe(c),
            safe(&crate::i18n::notice_en(notice))
        ),
        Event::Notice {
            conversation: None,
            notice,
            ..
        } => println!("note: {}", safe(&crate::i18n::notice_en(notice))),
        Event::Relay {
            relay,
            state: samizdat_core::RelayState::Retrying,
            retry_in_ms,
        } => println!(
            "note: cannot reach {}; retrying in {:.1} s",
            safe(relay),
            retry_in_ms.unwrap_or(0) as f64 / 1000.0
        ),
        _ => {}
    }
}

/// Events an operation reported along the way that the user did not ask for (messages that
/// arrived during a send's catch-up, refusals): printed after it, as before the service.
fn print_side_events(events: &[Event]) {
    for e in events {
        if !matches!(
            e,
            Event::MessageQueued { .. } | Event::MessageDelivered { .. }
        ) {
            print_event(e, false);
        }
    }
}

/// Hints the core leaves to the fronts, chosen by the error's kind.
fn with_hint(e: anyhow::Error) -> anyhow::Error {
    use samizdat_core::ErrorKind;
    let kind = match (
        e.downcast_ref::<rpc::RpcError>(),
        e.downcast_ref::<samizdat_core::Error>(),
    ) {
        (Some(rpc), _) => rpc.kind(),
        (None, Some(core)) => Some(core.kind()),
        _ => None,
    };
    match kind {
        // No profile here at all (before any service runs).
        Some(ErrorKind::NotFound) if e.downcast_ref::<samizdat_core::Error>().is_some() => {
            anyhow!("{e}; create one with `samizdat init --relay URL --name NAME`")
        }
        Some(ErrorKind::NotFound) => anyhow!("{e}; see `samizdat list` and `samizdat contacts`"),
        _ => e,
    }
}

pub async fn run(home: Option<PathBuf>, cmd: ClientCommand) -> Result<()> {
    let home = match home {
        Some(h) => h,
        None => default_home()?,
    };
    run_in(&home, cmd).await.map_err(with_hint)
}

async fn run_in(home: &Path, cmd: ClientCommand) -> Result<()> {
    let pass = || passphrase(false);
    match cmd {
        ClientCommand::Init {
            relay,
            name,
            proxy,
            tor,
            isolate,
        } => {
            let _lock = samizdat_core::lock::ProfileLock::try_acquire(home)?;
            let net = match (proxy, tor) {
                (_, true) => samizdat_core::net::Net::tor(),
                (Some(url), false) => samizdat_core::net::Net {
                    proxy: Some(samizdat_core::net::Proxy::parse(&url)?),
                    isolate,
                },
                (None, false) => samizdat_core::net::Net::from_env()?.unwrap_or_default(),
            };
            let p = Profile::init_relays(home, &passphrase(true)?, &relay, &name, net).await?;
            println!("profile created in {}", home.display());
            println!(
                "name: {}  relay: {}  fingerprint: {}",
                p.name(),
                p.relays().join(" + "),
                p.fingerprint_hex()
            );
            return Ok(());
        }
        ClientCommand::Serve => return serve(home).await,
        ClientCommand::Device(DeviceCommand::Join {
            name,
            relay,
            qr,
            timeout,
        }) => return device_join(home, &relay, &name, qr, timeout).await,
        ClientCommand::Wipe { yes } => return wipe(home, yes).await,
        ClientCommand::Restore { file } => {
            let backup_pass = backup_passphrase(false)?;
            let pass = passphrase(true)?;
            let _lock = samizdat_core::lock::ProfileLock::try_acquire(home)?;
            Profile::restore(home, &file, &backup_pass, &pass)?;
            println!(
                "restored into {}; `samizdat sync` catches up from the relays",
                home.display()
            );
            return Ok(());
        }
        ClientCommand::App {
            listen,
            no_open,
            relay,
            session_idle,
        } => {
            return crate::app::run(crate::app::Options {
                home: home.to_path_buf(),
                listen,
                open: !no_open,
                default_relay: relay,
                session_idle: std::time::Duration::from_secs(session_idle.max(1)),
            })
            .await;
        }
        ClientCommand::Rpc { openrpc: true } => {
            println!(
                "{}",
                serde_json::to_string_pretty(&samizdat_rpc::openrpc())?
            );
            return Ok(());
        }
        ClientCommand::Rpc { openrpc: false } => return rpc(home).await,
        ClientCommand::Listen {
            json,
            timeout,
            count,
        } => return listen(home, json, timeout, count).await,
        _ => {}
    }
    let mut b = Backend::open(home, Mode::OnDemand, pass).await?;
    match cmd {
        ClientCommand::Whoami => {
            let w: samizdat_rpc::WhoAmI = b.whoami(rpc::NoParams {}).await?;
            println!(
                "name: {}\nrelay: {}\nfingerprint: {}",
                w.name, w.relay, w.fingerprint
            );
            if let Some(p) = &w.proxy {
                println!(
                    "proxy: {}{}",
                    samizdat_core::net::redact(p),
                    if w.isolate { " (isolated)" } else { "" }
                );
            }
        }
        ClientCommand::Invite {
            reusable,
            hours,
            qr,
        } => {
            let invite: samizdat_rpc::InviteLink = b
                .invite_create(rpc::InviteCreateParams {
                    reusable,
                    hours: Some(hours),
                })
                .await?;
            println!(
                "{} invite, valid for {hours} h. Share it privately; whoever has it can contact you.",
                if reusable { "Reusable" } else { "Single-use" }
            );
            if qr {
                print_qr(&invite.link)?;
            }
            println!("{}", invite.link);
        }
        ClientCommand::Accept { link, name } => {
            let since = b.last_event().await?;
            let a: Result<rpc::Accepted, _> = b
                .invite_accept(rpc::InviteAcceptParams {
                    link: link.clone(),
                    name: name.clone(),
                })
                .await;
            let side = b.events_since(since).await.unwrap_or_default();
            let a = a?;
            println!(
                "connected: {} (verified the inviter's key fingerprint)",
                a.contact
            );
            print_side_events(&side);
        }
        ClientCommand::Contacts { json } => {
            let contacts: Vec<samizdat_core::ContactView> = b.contacts(rpc::NoParams {}).await?;
            if json {
                for c in &contacts {
                    println!("{}", serde_json::to_string(c)?);
                }
            } else if contacts.is_empty() {
                println!(
                    "no contacts yet: `samizdat invite` or `samizdat accept LINK --name ALIAS`"
                );
            } else {
                for c in contacts {
                    println!(
                        "{}  (calls themself {:?}, key {})",
                        safe(&c.shown_as),
                        c.display_name,
                        c.fingerprint
                    );
                }
            }
        }
        ClientCommand::Send {
            target,
            text,
            file,
            caption,
            keep_metadata,
            reply_to,
        } => {
            if target == samizdat_core::SAVED_TARGET {
                let _: samizdat_rpc::Created = b.saved_messages(rpc::NoParams {}).await?;
            }
            let since = b.last_event().await?;
            let params = match (&text, &file) {
                (Some(text), None) => match &reply_to {
                    Some(r) => {
                        json!({ "target": target, "text": text, "reply_to": message_id(r)? })
                    }
                    None => json!({ "target": target, "text": text }),
                },
                (None, Some(file)) => json!({
                    "target": target,
                    "text": caption.unwrap_or_default(),
                    "file": std::path::absolute(file)?.display().to_string(),
                    "keep_metadata": keep_metadata,
                }),
                _ => return Err(anyhow!("give either the message text or --file PATH")),
            };
            let mut bar = TransferBar::new("uploading");
            let sent: Result<samizdat_rpc::Sent> =
                b.call_watching("send", params, |e| bar.on(e)).await;
            bar.finish();
            print_side_events(&b.events_since(since).await.unwrap_or_default());
            let sent = sent.map_err(|e| {
                let unreachable = e.downcast_ref::<rpc::RpcError>().and_then(rpc::RpcError::kind)
                    == Some(samizdat_core::ErrorKind::RelayUnreachable);
                if unreachable {
                    anyhow!("{e}; the message is stored and the next sync (or a running `samizdat serve`) sends it")
                } else {
                    e
                }
            })?;
            println!("sent {}", sent.message_id);
        }
        ClientCommand::Mute { target, duration } => {
            let seconds = duration.as_deref().map(parse_duration).transpose()?;
            let muted = b
                .mute(rpc::ArrangeParams {
                    target: Some(target.clone()),
                    seconds,
                    ..Default::default()
                })
                .await?;
            match (muted.muted_until, duration) {
                (None, _) => println!("{} is not muted", safe(&target)),
                (Some(_), None) => println!("{} is muted until you unmute it", safe(&target)),
                (Some(_), Some(d)) => println!("{} is muted for {d}", safe(&target)),
            }
        }
        ClientCommand::Pin { target, off } => {
            b.pin(rpc::ArrangeParams {
                target: Some(target.clone()),
                on: !off,
                ..Default::default()
            })
            .await?;
        }
        ClientCommand::Calls { target, json } => {
            let calls: Vec<samizdat_core::CallView> = b
                .calls(rpc::CallsParams {
                    target: target.clone(),
                    conversation_id: None,
                })
                .await?;
            for c in &calls {
                if json {
                    println!("{}", serde_json::to_string(c)?);
                    continue;
                }
                let line = match c.outcome {
                    Some(o) => crate::i18n::call_line_en(
                        c.outgoing,
                        c.video,
                        c.group,
                        o,
                        c.duration_secs(),
                    ),
                    None => format!("{:?}", c.state).to_lowercase(),
                };
                println!("{}  {}", c.call_id, safe(&line));
            }
        }
        ClientCommand::Call { action, call_id } => {
            let params = rpc::CallParams {
                call_id: call_id.parse()?,
                sdp: None,
                to: None,
                offers: Vec::new(),
            };
            let _: samizdat_rpc::Done = match action.as_str() {
                "decline" => b.call_decline(params).await?,
                "end" => b.call_end(params).await?,
                other => {
                    return Err(anyhow!(
                        "call takes `decline` or `end`, not {:?}",
                        safe(other)
                    ));
                }
            };
            println!("call {call_id}: {action}");
        }
        ClientCommand::Block { contact, off } => {
            let _: samizdat_rpc::Done = b
                .contact_block(rpc::ContactBlockParams {
                    contact: contact.clone(),
                    blocked: !off,
                })
                .await?;
            if off {
                println!("{} is unblocked", safe(&contact));
            } else {
                println!("{} is blocked", safe(&contact));
            }
        }
        ClientCommand::DeleteChat { target, yes } => {
            if !yes {
                return Err(anyhow!(
                    "deleting the chat with {} removes its messages and files from this device; add --yes to do it",
                    safe(&target)
                ));
            }
            let _: samizdat_rpc::Done = b
                .delete_chat(rpc::ChatParams {
                    target: Some(target.clone()),
                    ..Default::default()
                })
                .await?;
            println!("the chat with {} is deleted on this device", safe(&target));
        }
        ClientCommand::Archive { target, off } => {
            b.archive(rpc::ArrangeParams {
                target: Some(target.clone()),
                on: !off,
                ..Default::default()
            })
            .await?;
        }
        ClientCommand::Search {
            query,
            within,
            json,
        } => {
            let hits = b
                .search(rpc::SearchParams {
                    query,
                    target: within,
                    conversation_id: None,
                    limit: None,
                })
                .await?;
            for h in &hits {
                if json {
                    println!("{}", serde_json::to_string(h)?);
                } else {
                    println!(
                        "[{}] {}: {}  ({})",
                        safe(&h.conversation),
                        safe(&h.from),
                        safe(&h.text),
                        h.id
                    );
                }
            }
            if hits.is_empty() && !json {
                println!("nothing found");
            }
        }
        ClientCommand::React {
            message_id: id,
            emoji,
            remove,
        } => {
            let params = rpc::ReactParams {
                message_id: message_id(&id)?,
                emoji,
                remove,
            };
            b.react(params).await?;
        }
        ClientCommand::Edit {
            message_id: id,
            text,
        } => {
            let params = rpc::EditParams {
                message_id: message_id(&id)?,
                text,
            };
            b.edit(params).await?;
        }
        ClientCommand::Delete {
            message_id: id,
            for_everyone,
        } => {
            let params = rpc::DeleteParams {
                message_id: message_id(&id)?,
                for_everyone,
            };
            b.delete(params).await?;
        }
        ClientCommand::Forward {
            message_id: id,
            target,
        } => {
            let params = rpc::ForwardParams {
                message_id: message_id(&id)?,
                target: Some(target),
                conversation_id: None,
            };
            let sent = b.forward(params).await?;
            println!("sent {}", sent.message_id);
        }
        ClientCommand::Download { message_id, out } => {
            let out = match out {
                Some(o) => std::path::absolute(&o)?,
                None => std::env::current_dir().context("the current directory")?,
            };
            let mut bar = TransferBar::new("downloading");
            let done: samizdat_core::transfer::Downloaded = b
                .call_watching(
                    "download",
                    json!({ "message_id": message_id, "out": out.display().to_string() }),
                    |e| bar.on(e),
                )
                .await
                .inspect_err(|_| bar.finish())?;
            bar.finish();
            println!("saved {} ({} bytes)", safe(&done.path), done.size);
        }
        ClientCommand::Config(ConfigCommand::Proxy { url, isolate }) => {
            let Some(url) = url else {
                let w: samizdat_rpc::WhoAmI = b.whoami(rpc::NoParams {}).await?;
                match &w.proxy {
                    Some(p) => println!(
                        "proxy: {}{}",
                        samizdat_core::net::redact(p),
                        if w.isolate { " (isolated)" } else { "" }
                    ),
                    None => println!("no proxy: connections go to the relays directly"),
                }
                return Ok(());
            };
            let _: samizdat_rpc::Done = b
                .set_proxy(rpc::ProxyParams {
                    proxy: url.clone(),
                    isolate,
                })
                .await?;
            println!(
                "saved; it applies from the next start of the profile (restart a running `samizdat serve` or app)"
            );
        }
        ClientCommand::Config(ConfigCommand::MoveAfter { duration: None }) => {
            let s: samizdat_rpc::Settings = b.settings(rpc::NoParams {}).await?;
            if s.move_after_secs == 0 {
                println!("move-after: off (conversations move only by `samizdat move`)");
            } else {
                println!("move-after: {}s", s.move_after_secs);
            }
        }
        ClientCommand::Config(ConfigCommand::MoveAfter {
            duration: Some(duration),
        }) => {
            let seconds = parse_duration(&duration)?;
            let _: samizdat_rpc::Done = b.set_move_after(rpc::MoveAfterParams { seconds }).await?;
            if seconds == 0 {
                println!("conversations move only by `samizdat move`");
            } else {
                println!("a conversation moves once its relay has been unreachable for {duration}");
            }
        }
        ClientCommand::Relays(cmd) => {
            let r: samizdat_rpc::Relays = match &cmd {
                RelaysCommand::List { .. } => b.relays(rpc::NoParams {}).await?,
                RelaysCommand::Add { url } => {
                    b.relay_add(rpc::RelayParams { relay: url.clone() }).await?
                }
                RelaysCommand::Remove { url } => {
                    b.relay_remove(rpc::RelayParams { relay: url.clone() })
                        .await?
                }
            };
            if matches!(cmd, RelaysCommand::List { json: true }) {
                println!("{}", serde_json::to_string(&r.relays)?);
            } else {
                for relay in &r.relays {
                    println!("{relay}");
                }
            }
        }
        ClientCommand::Move { target, to } => {
            let m: samizdat_rpc::Moved = b
                .move_conversation(rpc::MoveParams {
                    target: Some(target.clone()),
                    to: to.clone(),
                    ..Default::default()
                })
                .await?;
            println!("{} moved to {}", safe(&target), safe(&m.relay));
        }
        ClientCommand::Config(ConfigCommand::AutoDownload { size }) => {
            let bytes = parse_size(&size)?;
            let _: samizdat_rpc::Done = b
                .set_auto_download(rpc::AutoDownloadParams { bytes })
                .await?;
            if bytes == 0 {
                println!("attachments are fetched only when you ask (samizdat download)");
            } else {
                println!("attachments up to {bytes} bytes are fetched as they arrive");
            }
        }
        ClientCommand::Config(ConfigCommand::CallsDirect { state }) => {
            let on = match state.as_deref() {
                None => {
                    let s: samizdat_rpc::Settings = b.settings(rpc::NoParams {}).await?;
                    s.calls_direct
                }
                Some("on") => true,
                Some("off") => false,
                Some(other) => {
                    return Err(anyhow!(
                        "calls-direct takes `on` or `off`, not {:?}",
                        safe(other)
                    ));
                }
            };
            if state.is_some() {
                let _: samizdat_rpc::Done =
                    b.set_calls_direct(rpc::CallsDirectParams { on }).await?;
            }
            println!(
                "calls: {}",
                if on {
                    "direct connections allowed (each side sees the other's address)"
                } else {
                    "only through the relay"
                }
            );
        }
        ClientCommand::Config(ConfigCommand::ReadReceipts { state }) => {
            let on = match state.as_deref() {
                None => {
                    let s: samizdat_rpc::Settings = b.settings(rpc::NoParams {}).await?;
                    s.read_receipts
                }
                Some("on") => true,
                Some("off") => false,
                Some(other) => {
                    return Err(anyhow!(
                        "read-receipts takes `on` or `off`, not {:?}",
                        safe(other)
                    ));
                }
            };
            if state.is_some() {
                let _: samizdat_rpc::Done =
                    b.set_read_receipts(rpc::ReadReceiptsParams { on }).await?;
            }
            println!("read receipts: {}", if on { "on" } else { "off" });
        }
        ClientCommand::Sync { json } => {
            let synced: samizdat_rpc::Synced = b.sync(rpc::NoParams {}).await?;
            let shown: Vec<&Event> = synced
                .events
                .iter()
                .filter(|e| {
                    json || !matches!(
                        e,
                        Event::MessageQueued { .. } | Event::MessageDelivered { .. }
                    )
                })
                .collect();
            for e in &shown {
                print_event(e, json);
            }
            if shown.is_empty() && !json {
                println!("nothing new");
            }
        }
        ClientCommand::History { target, json } => {
            if target == samizdat_core::SAVED_TARGET {
                let _: samizdat_rpc::Created = b.saved_messages(rpc::NoParams {}).await?;
            }
            let msgs: Vec<samizdat_core::MessageView> = b
                .history(rpc::HistoryParams {
                    target: Some(target.clone()),
                    ..Default::default()
                })
                .await?;
            for m in msgs {
                if json {
                    println!("{}", serde_json::to_string(&m)?);
                } else {
                    use samizdat_core::MessageState as S;
                    let mark = match (&m.failed, m.state) {
                        (Some(why), _) => format!("  (not delivered: {})", safe(&why.detail)),
                        (None, Some(S::Sending)) => "  (waiting to be sent)".into(),
                        (None, Some(S::Delivered)) => "  (delivered)".into(),
                        (None, Some(S::Read)) => "  (read)".into(),
                        _ => String::new(),
                    };
                    let file = m
                        .attachment
                        .as_ref()
                        .map(|a| {
                            format!(
                                " [file {}: {} bytes{} — samizdat download {}]",
                                safe(&a.name),
                                a.size,
                                if a.downloaded { ", on this device" } else { "" },
                                m.id
                            )
                        })
                        .unwrap_or_default();
                    if let Some(e) = &m.system {
                        println!("-- {} --", safe(&crate::i18n::line_en(e)));
                        continue;
                    }
                    let text = if m.deleted {
                        "(deleted)".to_string()
                    } else if m.unsupported {
                        "(sent by a newer version: update Samizdat to see this)".to_string()
                    } else {
                        safe(&m.text)
                    };
                    let quote = m
                        .reply_to
                        .as_ref()
                        .map(|q| match (&q.from, &q.text) {
                            (_, Some(t)) if q.found && q.mine => format!("[re me: {}] ", safe(t)),
                            (Some(from), Some(t)) if q.found => {
                                format!("[re {}: {}] ", safe(from), safe(t))
                            }
                            _ => "[re: message not available] ".into(),
                        })
                        .unwrap_or_default();
                    let extra = [
                        m.forwarded.then(|| "forwarded".to_string()),
                        m.edited.then(|| "edited".to_string()),
                        (!m.reactions.is_empty()).then(|| {
                            m.reactions
                                .iter()
                                .map(|r| format!("{} {}", safe(&r.emoji), r.count))
                                .collect::<Vec<_>>()
                                .join(" ")
                        }),
                    ]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>();
                    let extra = if extra.is_empty() {
                        String::new()
                    } else {
                        format!("  ({})", extra.join(", "))
                    };
                    println!("{}: {quote}{text}{file}{extra}{mark}", safe(&m.from));
                }
            }
        }
        ClientCommand::List { json } => {
            let convs: Vec<samizdat_core::ConversationView> =
                b.conversations(rpc::NoParams {}).await?;
            for c in convs {
                if json {
                    println!("{}", serde_json::to_string(&c)?);
                } else {
                    let state = match (&c.active, &c.status) {
                        (true, _) => format!("{} members", c.members),
                        (false, Some(s)) => crate::i18n::status_en(s),
                        (false, None) => "inactive".into(),
                    };
                    let marks = [
                        c.pinned.then_some("pinned"),
                        c.archived.then_some("archived"),
                        c.muted_until.map(|_| "muted"),
                    ]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(", ");
                    let marks = if marks.is_empty() {
                        marks
                    } else {
                        format!("  ({marks})")
                    };
                    let shown = match c.kind {
                        samizdat_core::ConvKind::SelfGroup => {
                            format!("{} (saved messages)", samizdat_core::SAVED_TARGET)
                        }
                        _ => safe(&c.shown_as),
                    };
                    println!(
                        "{:<20} {:<6} {:>3} unread  {}{marks}",
                        shown,
                        c.kind.to_string(),
                        c.unread,
                        safe(&state)
                    );
                }
            }
        }
        ClientCommand::Channel(c) => channel_command(&mut b, c).await?,
        ClientCommand::Group(g) => match g {
            GroupCommand::Create { name } => {
                let _: samizdat_rpc::Created = b
                    .group_create(rpc::GroupParams {
                        group: name.clone(),
                        conversation_id: None,
                    })
                    .await?;
                println!(
                    "group {name} created; add people with `samizdat group add {name} ALIAS...`"
                );
            }
            GroupCommand::Add { name, aliases } => {
                let since = b.last_event().await?;
                let added: Result<samizdat_core::GroupAdded, _> = b
                    .group_add(rpc::GroupAddParams {
                        group: name.clone(),
                        conversation_id: None,
                        contacts: aliases.clone(),
                    })
                    .await;
                let side = b.events_since(since).await.unwrap_or_default();
                let added = added?;
                // The answer names contacts by id; a person reads their aliases.
                let contacts = b.contacts(rpc::NoParams {}).await?;
                let aliases = |ids: &[samizdat_core::ContactId]| {
                    ids.iter()
                        .map(|id| match contacts.iter().find(|c| c.id == *id) {
                            Some(c) => safe(&c.alias),
                            None => id.short(),
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                if !added.added.is_empty() {
                    println!("added {} to {name}", aliases(&added.added));
                }
                if !added.waiting.is_empty() {
                    println!(
                        "{} will be added to {name} when their relay can be reached (retried by sync, or while `samizdat serve` runs)",
                        aliases(&added.waiting)
                    );
                }
                print_side_events(&side);
            }
            GroupCommand::Remove { name, alias } => {
                let _: samizdat_rpc::Done = b
                    .group_remove(rpc::GroupRemoveParams {
                        group: name.clone(),
                        conversation_id: None,
                        contact: alias.clone(),
                    })
                    .await?;
                println!("removed {alias} from {name}");
            }
            GroupCommand::Readd { name, alias } => {
                let _: samizdat_rpc::Done = b
                    .group_readd(rpc::GroupRemoveParams {
                        group: name.clone(),
                        conversation_id: None,
                        contact: alias.clone(),
                    })
                    .await?;
                println!("sent {alias} a fresh invitation to {name}");
            }
            GroupCommand::Rename { name, new_name } => {
                let _: samizdat_rpc::Created = b
                    .group_rename(rpc::GroupRenameParams {
                        group: name.clone(),
                        conversation_id: None,
                        name: new_name.clone(),
                    })
                    .await?;
                println!("renamed {name} to {}", safe(new_name.trim()));
            }
            GroupCommand::Leave { name } => {
                let _: samizdat_rpc::Done = b
                    .group_leave(rpc::GroupParams {
                        group: name.clone(),
                        conversation_id: None,
                    })
                    .await?;
                println!("left {name}");
            }
            GroupCommand::Members { name, json } => {
                let members: Vec<samizdat_core::MemberView> = b
                    .group_members(rpc::GroupParams {
                        group: name.clone(),
                        conversation_id: None,
                    })
                    .await?;
                for m in members {
                    if json {
                        println!("{}", serde_json::to_string(&m)?);
                    } else {
                        let state = if m.joined { "" } else { "  (not joined yet)" };
                        let devices = if m.devices > 1 {
                            format!("  ({} devices)", m.devices)
                        } else {
                            String::new()
                        };
                        println!("{}  (key {}){state}{devices}", safe(&m.name), m.fingerprint);
                    }
                }
            }
        },
        ClientCommand::Invitations { json } => {
            let list: Vec<samizdat_core::InvitationView> = b.invitations(rpc::NoParams {}).await?;
            if json {
                for i in &list {
                    println!("{}", serde_json::to_string(i)?);
                }
            } else if list.is_empty() {
                println!("no pending invitations");
            } else {
                for i in list {
                    println!(
                        "{}  a group of {} from {} (not a contact), relay {}{}",
                        i.id,
                        i.members,
                        i.from,
                        safe(&i.relay),
                        i.warning
                            .map(|w| format!("\n   warning: {}", safe(&crate::i18n::notice_en(&w))))
                            .unwrap_or_default()
                    );
                }
            }
        }
        ClientCommand::Invitation(cmd) => match cmd {
            InvitationCommand::Accept { id } => {
                let since = b.last_event().await?;
                let joined: Result<rpc::Joined, _> =
                    b.invitation_accept(rpc::InvitationParams { id }).await;
                let side = b.events_since(since).await.unwrap_or_default();
                let joined = joined?;
                print_side_events(&side);
                if joined.elsewhere {
                    println!(
                        "accepted: your other device, where it arrived, joins when it next syncs and adds this one"
                    );
                } else if let Some(id) = joined.conversation_id {
                    let conversations = b.conversations(rpc::NoParams {}).await?;
                    let name = conversations
                        .iter()
                        .find(|c| c.id == id)
                        .map(|c| c.name.clone())
                        .unwrap_or_else(|| id.to_string());
                    println!("joined {}", safe(&name));
                }
            }
            InvitationCommand::Decline { id } => {
                let _: samizdat_rpc::Done =
                    b.invitation_decline(rpc::InvitationParams { id }).await?;
                println!("declined invitation {id}");
            }
        },
        ClientCommand::Backup {
            out,
            no_attachments,
        } => {
            let pass = backup_passphrase(true)?;
            let out = std::path::absolute(&out).unwrap_or(out);
            let done: samizdat_rpc::BackedUp = b
                .backup(rpc::BackupParams {
                    out: out.to_string_lossy().into_owned(),
                    passphrase: pass.as_str().to_string(),
                    attachments: !no_attachments,
                })
                .await?;
            println!("backup written to {} ({} bytes)", out.display(), done.bytes);
        }
        ClientCommand::Timer { target, duration } => {
            let seconds = parse_duration(&duration)?;
            let _: samizdat_rpc::Done = b
                .set_timer(rpc::TimerParams {
                    target: Some(target.clone()),
                    seconds,
                    ..Default::default()
                })
                .await?;
            if seconds == 0 {
                println!("disappearing messages off in {}", safe(&target));
            } else {
                println!(
                    "messages in {} now disappear after {duration}",
                    safe(&target)
                );
            }
        }
        ClientCommand::Duress(DuressCommand::Set) => {
            let duress = duress_passphrase()?;
            let _: samizdat_rpc::Done = b
                .duress_set(rpc::DuressParams {
                    passphrase: duress.as_str().to_string(),
                })
                .await?;
            println!(
                "duress passphrase set: opening this profile with it wipes it and opens an empty one"
            );
        }
        ClientCommand::Verify {
            alias,
            qr,
            mark,
            unmark,
        } => {
            if mark || unmark {
                let _: samizdat_rpc::Done = b
                    .contact_verify(rpc::ContactVerifyParams {
                        contact: alias.clone(),
                        verified: mark,
                    })
                    .await?;
                println!(
                    "{alias} is {}",
                    if mark {
                        "marked as verified"
                    } else {
                        "no longer marked as verified"
                    }
                );
                return Ok(());
            }
            let n: samizdat_rpc::SafetyNumber = b
                .safety_number(rpc::ContactParams {
                    contact: alias.clone(),
                })
                .await?;
            println!("Safety number with {alias} (they see the same digits):");
            if qr {
                print_qr(&n.safety_number)?;
            }
            println!("{}", n.safety_number);
        }
        ClientCommand::Device(cmd) => match cmd {
            DeviceCommand::Add { link, yes, timeout } => {
                device_add(&mut b, &link, yes, timeout).await?
            }
            DeviceCommand::List { json } => {
                let list: Vec<samizdat_core::DeviceView> = b.devices(rpc::NoParams {}).await?;
                for d in &list {
                    if json {
                        println!("{}", serde_json::to_string(d)?);
                    } else {
                        println!(
                            "{}  {}{}{}",
                            &d.id.to_string()[..16],
                            if d.name.is_empty() {
                                "first device".to_string()
                            } else {
                                safe(&d.name)
                            },
                            if d.this { "  (this device)" } else { "" },
                            if d.revoked { "  (revoked)" } else { "" }
                        );
                    }
                }
            }
            DeviceCommand::Revoke { id } => {
                let _: samizdat_rpc::Done = b
                    .device_revoke(rpc::DeviceParams { id: id.clone() })
                    .await?;
                println!("device {id} revoked: removed from every conversation");
            }
            DeviceCommand::Join { .. } => unreachable!("handled above"),
        },
        ClientCommand::Init { .. }
        | ClientCommand::Serve
        | ClientCommand::Wipe { .. }
        | ClientCommand::Restore { .. }
        | ClientCommand::App { .. }
        | ClientCommand::Rpc { .. }
        | ClientCommand::Listen { .. } => unreachable!("handled above"),
    }
    Ok(())
}

/// `device join`: a new profile in `home` that shows a one-time link and becomes a device of
/// the person whose identity device adds it.
async fn device_join(home: &Path, relay: &str, name: &str, qr: bool, timeout: u64) -> Result<()> {
    let pass = passphrase(true)?;
    let _lock = samizdat_core::lock::ProfileLock::try_acquire(home)?;
    let show = |link: &str, code: &str| {
        println!("On the device that holds your identity: samizdat device add LINK");
        println!(
            "It shows this device's name and code {code}; they must match. The link works once, for 2 minutes."
        );
        if qr {
            let _ = print_qr(link);
        }
        println!("{link}");
        let _ = std::io::stdout().flush();
    };
    let (p, j) = Profile::device_join(
        home,
        &pass,
        relay,
        name,
        Duration::from_secs(timeout.max(1)),
        show,
    )
    .await?;
    println!(
        "linked as a device of {}: {} conversations, {} messages of history",
        safe(&j.name),
        j.conversations,
        j.messages
    );
    println!("fingerprint: {}", p.fingerprint_hex());
    Ok(())
}

/// `device add LINK`: show the new device's name and code, ask (or `--yes`), add it, and wait
/// (bounded) until it is in every conversation.
async fn device_add(b: &mut Backend, link: &str, yes: bool, timeout: u64) -> Result<()> {
    let p: samizdat_core::LinkPreview = b
        .device_add_preview(rpc::DeviceAddParams {
            link: link.to_string(),
        })
        .await?;
    println!("New device: {}", safe(&p.name));
    println!(
        "Code: {} (the new device shows it next to its link)",
        p.code
    );
    if !yes {
        if !std::io::stdin().is_terminal() {
            return Err(anyhow!(
                "nothing was added: compare the code with the new device's screen, then run again with --yes"
            ));
        }
        print!("Is this your device, showing the same code? [y/N] ");
        let _ = std::io::stdout().flush();
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Err(anyhow!("nothing was added"));
        }
    }
    let since = b.last_event().await?;
    let p: samizdat_core::LinkPreview = b
        .device_add(rpc::DeviceAddParams {
            link: link.to_string(),
        })
        .await?;
    println!("Waiting for the new device…");
    let deadline = std::time::Instant::now() + Duration::from_secs(timeout.max(1));
    loop {
        let _: samizdat_rpc::Synced = b.sync(rpc::NoParams {}).await?;
        for e in b.events_since(since).await? {
            // A failure, or KeyPackages altered on the way (they no longer open with the
            // one-time key): the new device is not added.
            if let Event::Notice { notice, .. } = &e
                && matches!(
                    notice,
                    Notice::LinkFailed { .. } | Notice::LinkMessageUnreadable
                )
            {
                let text = crate::i18n::notice_en(notice);
                return Err(anyhow!("{text}; nothing was added"));
            }
        }
        let list: Vec<samizdat_core::DeviceView> = b.devices(rpc::NoParams {}).await?;
        if list.iter().any(|d| d.id == p.id) {
            break;
        }
        if std::time::Instant::now() > deadline {
            return Err(anyhow!(
                "the new device did not finish in time; nothing was added (show a new link there and try again)"
            ));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    println!(
        "added device {}: it is in every conversation and has the history",
        safe(&p.name)
    );
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
pub(crate) async fn stop_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// Own the profile with the realtime service and its socket.
async fn own(home: &Path, lock: samizdat_core::lock::ProfileLock) -> Result<Owner> {
    let profile = Profile::open_or_duress(home, &passphrase(false)?).await?;
    let (handle, events) = ClientHandle::start_subscribed(profile, Mode::Realtime)?;
    let socket = serve_socket(home, handle.clone())?;
    Ok(Owner {
        handle,
        events,
        _socket: socket,
        _lock: lock,
    })
}

struct Owner {
    handle: ClientHandle,
    events: tokio::sync::broadcast::Receiver<samizdat_core::LiveEvent>,
    _socket: crate::client::SocketServer,
    _lock: samizdat_core::lock::ProfileLock,
}

impl Owner {
    async fn whoami(&self) -> Result<samizdat_rpc::WhoAmI> {
        let v = samizdat_rpc::call_local(&self.handle, "whoami", json!({}))
            .await
            .map_err(|e| anyhow!(e.message))?;
        Ok(serde_json::from_value(v)?)
    }
}

async fn serve(home: &Path) -> Result<()> {
    require_profile(home)?;
    let lock = samizdat_core::lock::ProfileLock::try_acquire(home)?;
    let owner = own(home, lock).await?;
    let w = owner.whoami().await?;
    println!(
        "serving {} ({}) on {}; Ctrl-C to stop",
        safe(&w.name),
        w.relay,
        socket_path(home).display()
    );
    let _ = std::io::stdout().flush();
    tokio::select! {
        _ = stop_signal() => {}
        // Wiped through its socket: nothing is left to serve.
        _ = owner.handle.stopped() => println!("the profile was wiped; stopping"),
    }
    drop(owner);
    Ok(())
}

async fn rpc(home: &Path) -> Result<()> {
    let stdin = tokio::io::BufReader::new(tokio::io::stdin());
    if let Some(stream) = connect(home).await {
        // Another process owns the profile: relay lines both ways.
        let (mut r, mut w) = stream.into_split();
        let mut stdin = stdin;
        let mut stdout = tokio::io::stdout();
        let up = async {
            let _ = tokio::io::copy(&mut stdin, &mut w).await;
            // End of input: the service answers what was asked, then closes.
            let _ = w.shutdown().await;
            std::future::pending::<()>().await;
        };
        let down = tokio::io::copy(&mut r, &mut stdout);
        tokio::select! {
            _ = up => {}
            r = down => { r.context("relaying answers from the samizdat service")?; }
        }
        let _ = stdout.flush().await;
        return Ok(());
    }
    require_profile(home)?;
    let lock = lock_waiting(home)?;
    let owner = own(home, lock).await?;
    samizdat_rpc::serve_connection(owner.handle.clone(), stdin, tokio::io::stdout()).await;
    drop(owner);
    Ok(())
}

async fn listen(home: &Path, json: bool, timeout: Option<u64>, count: Option<usize>) -> Result<()> {
    let deadline = async {
        match timeout {
            Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let mut seen = 0usize;
    let mut show = |e: &Event| -> bool {
        print_event(e, json);
        let _ = std::io::stdout().flush();
        if matches!(e, Event::Message { .. }) {
            seen += 1;
        }
        count.is_some_and(|c| seen >= c)
    };
    if let Some(stream) = connect(home).await {
        let mut c = RemoteClient::new(stream);
        c.call("subscribe", json!({}), |_| {}).await?;
        if !json {
            println!("listening through the running samizdat service (Ctrl-C to stop)");
        }
        loop {
            tokio::select! {
                _ = &mut deadline => return Ok(()),
                _ = stop_signal() => return Ok(()),
                e = c.next_event() => if show(&e?.event) { return Ok(()) },
            }
        }
    }
    require_profile(home)?;
    let lock = lock_waiting(home)?;
    let mut owner = own(home, lock).await?;
    if !json {
        let w = owner.whoami().await?;
        println!("listening on {} (Ctrl-C to stop)", w.relay);
    }
    let _ = std::io::stdout().flush();
    loop {
        tokio::select! {
            _ = &mut deadline => return Ok(()),
            _ = stop_signal() => return Ok(()),
            e = owner.events.recv() => match e {
                Ok(e) => if show(&e.event) { return Ok(()) },
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    eprintln!("note: {n} events were not shown (too many at once); see `samizdat history`");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return Err(anyhow!("the client service stopped")),
            },
        }
    }
}

fn by_name(channel: &str) -> rpc::ChannelParams {
    rpc::ChannelParams {
        channel: Some(channel.to_string()),
        ..Default::default()
    }
}

fn post_params(channel: &str, text: &str, seq: Option<u64>) -> rpc::ChannelPostParams {
    rpc::ChannelPostParams {
        channel: Some(channel.to_string()),
        channel_id: None,
        text: text.to_string(),
        seq,
        file: None,
        name: None,
    }
}

/// `samizdat channel …`.
async fn channel_command(b: &mut Backend, cmd: ChannelCommand) -> Result<()> {
    match cmd {
        ChannelCommand::Create { name, about } => {
            let made = b
                .channel_create(rpc::ChannelCreateParams {
                    name: name.clone(),
                    about,
                })
                .await?;
            println!("channel {} created; share its link:", safe(name.trim()));
            println!("{}", made.link);
        }
        ChannelCommand::Post {
            channel,
            text,
            file,
        } => {
            let mut params = post_params(&channel, &text, None);
            if let Some(file) = &file {
                params.file = Some(std::path::absolute(file)?.display().to_string());
            }
            let posted = b.channel_post(params).await?;
            println!("posted to {} as post {}", safe(&channel), posted.seq);
        }
        ChannelCommand::Download { channel, seq, out } => {
            let out = match out {
                Some(o) => std::path::absolute(&o)?,
                None => std::env::current_dir().context("the current directory")?,
            };
            let done = b
                .channel_download(rpc::ChannelFileParams {
                    channel: Some(channel),
                    channel_id: None,
                    seq,
                    out: out.display().to_string(),
                })
                .await?;
            println!("saved {} ({} bytes)", safe(&done.path), done.size);
        }
        ChannelCommand::Edit { channel, seq, text } => {
            b.channel_edit(post_params(&channel, &text, Some(seq)))
                .await?;
            println!("post {seq} corrected");
        }
        ChannelCommand::Delete { channel, seq } => {
            b.channel_delete(post_params(&channel, "", Some(seq)))
                .await?;
            println!("post {seq} deleted");
        }
        ChannelCommand::Pin { channel, seq } => {
            b.channel_pin(post_params(&channel, "", seq)).await?;
            match seq {
                Some(seq) => println!("post {seq} pinned"),
                None => println!("nothing pinned"),
            }
        }
        ChannelCommand::Link { channel, qr } => {
            let made = b.channel_link(by_name(&channel)).await?;
            if qr {
                print_qr(&made.link)?;
            }
            println!("{}", made.link);
        }
        ChannelCommand::Follow { link } => {
            let made = b.channel_follow(rpc::ChannelFollowParams { link }).await?;
            let list = b.channels(rpc::NoParams {}).await?;
            match list.iter().find(|c| c.id == made.channel_id) {
                Some(c) => println!(
                    "following {} ({} posts, {} unread)",
                    safe(&c.name),
                    c.posts,
                    c.unread
                ),
                None => println!("following the channel"),
            }
        }
        ChannelCommand::Read { channel, json } => {
            // What is new first; a channel whose relays are all down shows what is here.
            if let Err(e) = b.channel_sync(by_name(&channel)).await {
                eprintln!("could not fetch new posts: {e}");
            }
            let posts = b.channel_read(by_name(&channel)).await?;
            for p in &posts {
                if json {
                    println!("{}", serde_json::to_string(p)?);
                } else {
                    println!(
                        "[{}] {}{}{}{}",
                        p.seq,
                        if p.pinned { "(pinned) " } else { "" },
                        safe(&p.text),
                        if p.edited { " (edited)" } else { "" },
                        match &p.file {
                            Some(f) => format!(" [file: {}, {} bytes]", safe(&f.name), f.size),
                            None => String::new(),
                        }
                    );
                }
            }
            if posts.is_empty() && !json {
                println!("no posts yet");
            }
        }
        ChannelCommand::Mirror(ChannelMirrorCommand::Add { channel, url }) => {
            let view = b
                .channel_mirror_add(rpc::ChannelMirrorParams {
                    channel: Some(channel.clone()),
                    channel_id: None,
                    url,
                })
                .await?;
            println!(
                "{} is now read from: {}",
                safe(&view.name),
                view.relays.join(", ")
            );
        }
        ChannelCommand::List { json } => {
            let list = b.channels(rpc::NoParams {}).await?;
            for c in &list {
                if json {
                    println!("{}", serde_json::to_string(c)?);
                } else {
                    println!(
                        "{}{}  {} posts, {} unread{}",
                        safe(&c.name),
                        if c.admin { " (admin)" } else { "" },
                        c.posts,
                        c.unread,
                        if c.fault.is_some() {
                            "  (a relay's copy failed its check)"
                        } else {
                            ""
                        }
                    );
                }
            }
            if list.is_empty() && !json {
                println!("no channels");
            }
        }
        ChannelCommand::Admin(ChannelAdminCommand::Add { channel, alias }) => {
            b.channel_admin_add(rpc::ChannelAdminParams {
                channel: Some(channel.clone()),
                channel_id: None,
                contact: alias.clone(),
            })
            .await?;
            println!(
                "asked {} to administer {}; they are added once their device has made its key (their next sync, then yours)",
                safe(&alias),
                safe(&channel)
            );
        }
        ChannelCommand::Admin(ChannelAdminCommand::Remove { channel, alias }) => {
            b.channel_admin_remove(rpc::ChannelAdminParams {
                channel: Some(channel.clone()),
                channel_id: None,
                contact: alias.clone(),
            })
            .await?;
            println!("{} no longer administers {}", safe(&alias), safe(&channel));
        }
        ChannelCommand::Admin(ChannelAdminCommand::List { channel }) => {
            let ids = b.channel_admins(by_name(&channel)).await?;
            let contacts = b.contacts(rpc::NoParams {}).await?;
            for id in ids {
                match contacts.iter().find(|c| c.id == id) {
                    Some(c) => println!("{}", safe(&c.alias)),
                    None => println!("{}", id.short()),
                }
            }
        }
        ChannelCommand::Rekey { channel } => {
            b.channel_rekey(by_name(&channel)).await?;
            println!("the key of {} changed; share its new link", safe(&channel));
        }
        ChannelCommand::Leave { channel } => {
            b.channel_leave(by_name(&channel)).await?;
            println!("no longer following {}", safe(&channel));
        }
    }
    Ok(())
}
