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
    /// List pending group invitations from people who are not your contacts.
    Invitations {
        #[arg(long)]
        json: bool,
    },
    /// Accept or decline a pending group invitation.
    #[command(subcommand)]
    Invitation(InvitationCommand),
    /// Show this profile's name, relay and key fingerprint.
    Whoami,
}

#[derive(Debug, clap::Subcommand)]
pub enum InvitationCommand {
    /// Join the group: only now is its relay contacted and your name sent.
    Accept { id: i64 },
    /// Forget the invitation; nothing is ever sent.
    Decline { id: i64 },
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

/// Text from others (messages, names, relay errors) made safe for a terminal line: control
/// characters and line breaks are shown escaped, so nobody can forge a line or a colour.
pub fn safe(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control()
            || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
        {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
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
        } => println!("[{}] {}: {}", safe(conversation), safe(from), safe(text)),
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
                println!("  warning: {}", safe(w));
            }
        }
        Event::NewContact {
            alias,
            display_name,
        } => println!(
            "new contact: {} (calls themself {:?})",
            safe(alias),
            display_name
        ),
        Event::Joined { conversation } => {
            println!("joined a conversation ({})", safe(conversation))
        }
        Event::GroupNamed { conversation } => println!("group is called {}", safe(conversation)),
        Event::MemberLeft { conversation, who } => {
            println!("[{}] {} left", safe(conversation), safe(who))
        }
        Event::Removed { conversation } => {
            println!("[{}] you were removed from the group", safe(conversation))
        }
        Event::Notice {
            conversation: Some(c),
            text,
        } => println!("[{}] note: {}", safe(c), safe(text)),
        Event::Notice {
            conversation: None,
            text,
        } => println!("note: {}", safe(text)),
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
                        safe(&c.alias),
                        c.display_name,
                        c.fingerprint
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
                    println!("{}: {}{mark}", safe(&m.from), safe(&m.text));
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
                        "{:<20} {:<6} {:>3} unread  {}",
                        safe(&c.name),
                        c.kind,
                        c.unread,
                        safe(&state)
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
        ClientCommand::Invitations { json } => {
            let p = open(&home)?;
            let list = p.invitations()?;
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
                            .map(|w| format!("\n   warning: {}", safe(&w)))
                            .unwrap_or_default()
                    );
                }
            }
        }
        ClientCommand::Invitation(cmd) => {
            let mut p = open(&home)?;
            match cmd {
                InvitationCommand::Accept { id } => {
                    let name = p.invitation_accept(id).await?;
                    for e in p.take_events() {
                        print_event(&e, false);
                    }
                    println!("joined {}", safe(&name));
                }
                InvitationCommand::Decline { id } => {
                    p.invitation_decline(id)?;
                    println!("declined invitation {id}");
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
