//! `samizdat`: the one binary — relay, client CLI and demo.
//!
//! Every user error ends in one line on stderr and a non-zero exit status.

mod app;
mod cli;
mod client;
mod demo;
mod i18n;
mod relay_cmd;

use anyhow::Result;
use clap::{CommandFactory, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "samizdat",
    version,
    about = "End-to-end encrypted messenger: relay and client"
)]
struct Cli {
    /// Profile directory [env: SAMIZDAT_HOME; default: the platform's data directory]
    #[arg(long, global = true, env = "SAMIZDAT_HOME")]
    home: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a relay.
    Relay(relay_cmd::RelayArgs),
    /// Run the demo: an embedded relay, alice, bob and carol, and a plaintext scan.
    Demo,
    /// Benchmarks (see docs/BENCHMARKS.md): runs the `samizdat-bench` binary beside this one.
    #[command(disable_help_flag = true)]
    Bench {
        /// What `samizdat-bench` takes (`samizdat bench --help` lists it).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// Print a completion script for a shell (`samizdat completions bash >
    /// /usr/share/bash-completion/completions/samizdat`).
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Write the manual pages (samizdat.1 and one per command) into a directory, for packages.
    Man {
        /// Where to write them (made if missing).
        dir: std::path::PathBuf,
    },
    #[command(flatten)]
    Client(cli::ClientCommand),
}

/// `samizdat completions SHELL`: generated from the same definitions as the parser.
fn completions(shell: clap_complete::Shell) -> Result<()> {
    use anyhow::Context;
    use std::io::Write;
    let mut cmd = Cli::command();
    // Into memory first: the generator panics when its writer fails (a closed pipe).
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "samizdat", &mut script);
    std::io::stdout()
        .write_all(&script)
        .context("writing the completion script")?;
    Ok(())
}

/// `samizdat man DIR`: a page for the binary and one for every command (`samizdat-relay.1`…).
fn man_pages(dir: &std::path::Path) -> Result<()> {
    use anyhow::Context;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), dir)
        .with_context(|| format!("writing the manual pages into {}", dir.display()))?;
    Ok(())
}

fn init_tracing(default: &str) {
    use tracing_subscriber::filter::{FilterExt, filter_fn};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer};
    let filter =
        EnvFilter::try_from_env("SAMIZDAT_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    // Whatever SAMIZDAT_LOG says, even a directive naming one of its modules: tokio-postgres
    // logs statement parameters (full ids, token hashes, ciphertext) below warn, so those
    // events are dropped after the filter (security review 3, L6).
    let no_query_parameters = filter_fn(|meta| {
        !meta.target().starts_with("tokio_postgres") || *meta.level() <= tracing::Level::WARN
    });
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(filter.and(no_query_parameters)),
        )
        .init();
}

/// `samizdat bench …`: the benchmarks are a binary of their own (crate `samizdat-bench`), so
/// the messenger carries no load generator. It is looked for beside this binary, then on the
/// PATH, and it runs this binary as its relays and clients.
fn bench(args: Vec<std::ffi::OsString>) -> Result<()> {
    use anyhow::Context;
    let me = std::env::current_exe().context("finding this binary")?;
    let name = format!("samizdat-bench{}", std::env::consts::EXE_SUFFIX);
    let beside = me.with_file_name(&name);
    let program = if beside.is_file() {
        beside
    } else {
        name.into()
    };
    let status = std::process::Command::new(&program)
        .args(args)
        .env("SAMIZDAT_BIN", &me)
        .status()
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot run {} ({e}): build the benchmarks with `cargo build --release -p samizdat-bench`",
                program.display()
            )
        })?;
    // The benchmark has said why it failed; its status is this command's.
    match status.code() {
        Some(0) => Ok(()),
        code => std::process::exit(code.unwrap_or(1)),
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_tracing(match cli.command {
        Command::Relay(_) => "info,tokio_postgres=warn",
        _ => "warn,rustls_platform_verifier=off",
    });
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result: Result<()> = rt.block_on(async {
        match cli.command {
            Command::Relay(args) => relay_cmd::run(args).await,
            Command::Demo => demo::run().await,
            Command::Bench { args } => bench(args),
            Command::Completions { shell } => completions(shell),
            Command::Man { dir } => man_pages(&dir),
            Command::Client(cmd) => cli::run(cli.home, cmd).await,
        }
    });
    // Every task (and with them every service handle) goes with the runtime; then the
    // service threads close their profiles before the process exits.
    rt.shutdown_timeout(std::time::Duration::from_secs(5));
    samizdat_core::service::wait_stopped(std::time::Duration::from_secs(10));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line whatever the error carries (a relay's message, a file name): control
            // and bidi characters are escaped (security review 3, L1).
            eprintln!("error: {}", cli::safe(&format!("{e:#}")));
            std::process::ExitCode::FAILURE
        }
    }
}
