//! `samizdat-bench` (also reached as `samizdat bench …`): benchmarks that drive a real relay
//! process over loopback with real protocol clients, and put every number next to a floor or a
//! peer measured in the same run. Results are a table on stdout (or JSON with `--json`);
//! progress goes to stderr.
//!
//! They live in their own crate and binary so that the messenger people install carries no
//! load generator. The relay and client processes they start are the `samizdat` binary beside
//! this one (or `SAMIZDAT_BIN`), see [`util::samizdat_exe`].

mod calls;
mod channels;
mod devices;
mod e2e;
mod files;
mod large;
mod load;
mod media;
mod mls;
mod moves;
mod nats;
mod redis_peer;
mod search;
mod util;

use anyhow::Result;

#[derive(Debug, clap::Parser)]
#[command(
    name = "samizdat-bench",
    version,
    about = "Samizdat benchmarks (docs/BENCHMARKS.md)"
)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub which: Which,
    /// Print results as JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum Which {
    /// Durable throughput and append→push latency vs the SQLite floor, NATS JetStream (fsync
    /// always and default) and Redis Streams (appendfsync always).
    Relay(load::RelayArgs),
    /// Time until the last of N online members has each message.
    Fanout(load::FanoutArgs),
    /// Idle subscribers: resident memory per connection and reconnect storms.
    Connections(load::ConnArgs),
    /// MLS group operations at 10..10,000 members: the client core vs raw mls-rs.
    Mls(mls::MlsArgs),
    /// Two `samizdat listen` clients and a sender: send → displayed latency.
    E2e(e2e::E2eArgs),
    /// A 100 MB attachment up and down through a local relay vs curl and a plain HTTP server.
    Attachments(files::AttachmentArgs),
    /// Backup and restore of a profile with 100,000 messages.
    Backup(files::BackupArgs),
    /// Connections and memory of transport isolation with 100 conversations.
    Isolation(files::IsolationArgs),
    /// An idle `samizdat serve` with 100 conversations: wake-ups per second and memory, the
    /// relay's beside it.
    Idle(files::IdleArgs),
    /// Blocked relay → first message delivered on the new relay (a conversation moving).
    Move(moves::MoveArgs),
    /// A 10,000-member group end to end: create, Welcomes stored once, sampled joins, one
    /// message to every online member.
    LargeGroup(large::LargeGroupArgs),
    /// Link a new device to a person in 100 conversations: time and relay bytes.
    LinkDevice(devices::LinkDeviceArgs),
    /// Local search over a profile of 100,000 messages: latency per query.
    Search(search::SearchArgs),
    /// A 12-megapixel JPEG to the thumbnail the sender's device makes.
    Thumbnail(media::ThumbnailArgs),
    /// Synthetic 1:1 audio calls through the relay's TURN server: relay CPU per call, calls
    /// per core, loss, memory per allocation.
    Calls(calls::CallsArgs),
    /// Channels: a new follower catching up, cached segment reads per second, one post to
    /// many online followers over several relay processes.
    Channels(channels::ChannelArgs),
    /// (Used by `channels`: one load-generator process of followers.)
    #[command(hide = true)]
    ChannelFollowers(channels::FollowersArgs),
}

fn main() -> std::process::ExitCode {
    use clap::Parser;
    let args = BenchArgs::parse();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(run(args)));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: BenchArgs) -> Result<()> {
    let report = match args.which {
        Which::Relay(a) => load::relay(a).await?,
        Which::Fanout(a) => load::fanout(a).await?,
        Which::Connections(a) => load::connections(a).await?,
        Which::Mls(a) => mls::run(a).await?,
        Which::E2e(a) => e2e::run(a).await?,
        Which::Attachments(a) => files::attachments(a).await?,
        Which::Backup(a) => files::backup(a).await?,
        Which::Isolation(a) => files::isolation(a).await?,
        Which::Idle(a) => files::idle(a).await?,
        Which::Move(a) => moves::run(a).await?,
        Which::LargeGroup(a) => large::run(a).await?,
        Which::LinkDevice(a) => devices::run(a).await?,
        Which::Search(a) => search::run(a).await?,
        Which::Thumbnail(a) => media::thumbnail(a).await?,
        Which::Calls(a) => calls::run(a).await?,
        Which::Channels(a) => channels::run(a).await?,
        Which::ChannelFollowers(a) => {
            channels::followers(a).await?;
            return Ok(());
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.json)?);
    } else {
        println!("{}", report.text);
    }
    Ok(())
}

/// A benchmark's result: the human table and the machine-readable form.
pub struct Report {
    pub text: String,
    pub json: serde_json::Value,
}
