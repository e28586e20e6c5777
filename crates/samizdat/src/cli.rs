//! The client commands: a thin front over `samizdat_core::Profile`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use samizdat_core::{Event, Profile};

#[derive(Debug, clap::Subcommand)]
pub enum ClientCommand {
    /// Create a profile: keys, encrypted store, a mailbox and KeyPackages on a relay.
    Init {
        /// The relay's address, e.g. http://127.0.0.1:7700
        #[arg(long)]
        relay: String,
        /// Your display name, shared only inside encrypted messages.
        #[arg(long)]
        name: String,
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
    /// Send a message to a contact or a group.
    Send { target: String, text: String },
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
    /// Show the safety number shared with a contact (compare it in person).
    Verify {
        alias: String,
        #[arg(long)]
        qr: bool,
    },
    /// Show this profile's name, relay and key fingerprint.
    Whoami,
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

fn passphrase(confirm: bool) -> Result<String> {
    if let Ok(p) = std::env::var("SAMIZDAT_PASSPHRASE") {
        return Ok(p);
    }
    if !std::io::stdin().is_terminal() {
        return Err(anyhow!(
            "no passphrase: set SAMIZDAT_PASSPHRASE or run in a terminal"
        ));
    }
    let p = rpassword::prompt_password("Passphrase: ").context("reading the passphrase")?;
    if confirm {
        let again =
            rpassword::prompt_password("Repeat passphrase: ").context("reading the passphrase")?;
        if again != p {
            return Err(anyhow!("the passphrases differ"));
        }
    }
    Ok(p)
}

fn open(home: &Path) -> Result<Profile> {
    if !Profile::exists(home) {
        // Say so before asking for a passphrase.
        return Profile::open(home, "unused").map_err(Into::into);
    }
    Ok(Profile::open(home, &passphrase(false)?)?)
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
        } => println!("[{conversation}] {from}: {text}"),
        Event::NewContact {
            alias,
            display_name,
        } => println!("new contact: {alias} (calls themself {display_name:?})"),
        Event::Joined { conversation } => println!("joined a conversation ({conversation})"),
        Event::GroupNamed { conversation } => println!("group is called {conversation}"),
        Event::MemberLeft { conversation, who } => println!("[{conversation}] {who} left"),
        Event::Removed { conversation } => {
            println!("[{conversation}] you were removed from the group")
        }
        Event::Notice {
            conversation: Some(c),
            text,
        } => println!("[{c}] note: {text}"),
        Event::Notice {
            conversation: None,
            text,
        } => println!("note: {text}"),
    }
}

pub async fn run(home: Option<PathBuf>, cmd: ClientCommand) -> Result<()> {
    let home = match home {
        Some(h) => h,
        None => default_home()?,
    };
    match cmd {
        ClientCommand::Init { relay, name } => {
            let p = Profile::init(&home, &passphrase(true)?, &relay, &name).await?;
            println!("profile created in {}", home.display());
            println!(
                "name: {}  relay: {}  fingerprint: {}",
                p.name(),
                p.relay_url(),
                p.fingerprint_hex()
            );
        }
        ClientCommand::Whoami => {
            let p = open(&home)?;
            println!(
                "name: {}\nrelay: {}\nfingerprint: {}",
                p.name(),
                p.relay_url(),
                p.fingerprint_hex()
            );
        }
        ClientCommand::Invite {
            reusable,
            hours,
            qr,
        } => {
            let p = open(&home)?;
            let invite = p.invite(hours.saturating_mul(3600), reusable)?;
            let link = invite.to_link();
            println!(
                "{} invite, valid for {hours} h. Share it privately; whoever has it can contact you.",
                if reusable { "Reusable" } else { "Single-use" }
            );
            if qr {
                print_qr(&link)?;
            }
            println!("{link}");
        }
        ClientCommand::Accept { link, name } => {
            let mut p = open(&home)?;
            let alias = p.accept(&link, &name).await?;
            println!("connected: {alias} (verified the inviter's key fingerprint)");
        }
        ClientCommand::Contacts { json } => {
            let p = open(&home)?;
            let contacts = p.contacts()?;
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
                        c.alias, c.display_name, c.fingerprint
                    );
                }
            }
        }
        ClientCommand::Send { target, text } => {
            let mut p = open(&home)?;
            let id = p.send(&target, &text).await?;
            for e in p.take_events() {
                print_event(&e, false);
            }
            println!("sent ({})", &id[..6.min(id.len())]);
        }
        ClientCommand::Sync { json } => {
            let mut p = open(&home)?;
            let events = p.sync().await?;
            for e in &events {
                print_event(e, json);
            }
            if events.is_empty() && !json {
                println!("nothing new");
            }
        }
        ClientCommand::Listen {
            json,
            timeout,
            count,
        } => {
            let mut p = open(&home)?;
            let mut seen = 0usize;
            let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
            let mut done_tx = Some(done_tx);
            let deadline = async move {
                let t = async {
                    match timeout {
                        Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = t => {}
                    _ = done_rx => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            };
            if !json {
                println!("listening on {} (Ctrl-C to stop)", p.relay_url());
            }
            let _ = std::io::stdout().flush();
            p.listen(
                |e| {
                    print_event(e, json);
                    let _ = std::io::stdout().flush();
                    if matches!(e, Event::Message { .. }) {
                        seen += 1;
                        if count.is_some_and(|c| seen >= c)
                            && let Some(tx) = done_tx.take()
                        {
                            let _ = tx.send(());
                        }
                    }
                },
                deadline,
            )
            .await?;
        }
        ClientCommand::History { target, json } => {
            let p = open(&home)?;
            for m in p.history(&target)? {
                if json {
                    println!("{}", serde_json::to_string(&m)?);
                } else {
                    let mark = if m.delivered {
                        ""
                    } else {
                        "  (not yet delivered)"
                    };
                    println!("{}: {}{mark}", m.from, m.text);
                }
            }
        }
        ClientCommand::List { json } => {
            let p = open(&home)?;
            for c in p.conversations()? {
                if json {
                    println!("{}", serde_json::to_string(&c)?);
                } else {
                    let state = match (&c.active, &c.status) {
                        (true, _) => format!("{} members", c.members),
                        (false, Some(s)) => s.clone(),
                        (false, None) => "inactive".into(),
                    };
                    println!(
                        "{:<20} {:<6} {:>3} unread  {state}",
                        c.name, c.kind, c.unread
                    );
                }
            }
        }
        ClientCommand::Group(g) => {
            let mut p = open(&home)?;
            match g {
                GroupCommand::Create { name } => {
                    p.group_create(&name).await?;
                    println!(
                        "group {name} created; add people with `samizdat group add {name} ALIAS...`"
                    );
                }
                GroupCommand::Add { name, aliases } => {
                    p.group_add(&name, &aliases).await?;
                    println!("added {} to {name}", aliases.join(", "));
                }
                GroupCommand::Remove { name, alias } => {
                    p.group_remove(&name, &alias).await?;
                    println!("removed {alias} from {name}");
                }
                GroupCommand::Leave { name } => {
                    p.group_leave(&name).await?;
                    println!("left {name}");
                }
                GroupCommand::Members { name, json } => {
                    // Read-only: nothing to catch up on first.
                    for m in p.group_members(&name)? {
                        if json {
                            println!("{}", serde_json::to_string(&m)?);
                        } else {
                            println!("{}  (key {})", m.name, m.fingerprint);
                        }
                    }
                }
            }
        }
        ClientCommand::Verify { alias, qr } => {
            let p = open(&home)?;
            let number = p.safety_number(&alias)?;
            println!("Safety number with {alias} (they see the same digits):");
            if qr {
                print_qr(&number)?;
            }
            println!("{number}");
        }
    }
    Ok(())
}
