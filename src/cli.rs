//! Command-line arguments (clap derive) and dispatch to the commands.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::commands;

/// Mirror PostgreSQL tables onto another server through logical decoding.
///
/// As in psql and pg_recvlogical, -h is the host: help is --help or -?.
#[derive(Debug, Parser)]
#[command(name = "pgmirror", version, about, propagate_version = true, disable_help_flag = true)]
pub struct Cli {
    /// Print help.
    #[arg(short = '?', long = "help", global = true, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
    /// More log output (-v debug, -vv trace); `RUST_LOG` overrides it.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Ask on the terminal for every password the connection strings, `PGPASSWORD` or the
    /// password file do not give, before connecting (like psql's -W). Without -W or -w, a
    /// password is asked for when a server wants one and stdin is a terminal.
    #[arg(short = 'W', long = "password", global = true)]
    pub password_prompt: bool,
    /// Never ask for a password (like psql's -w): a server that wants one the settings do
    /// not give fails the connection.
    #[arg(short = 'w', long = "no-password", global = true, conflicts_with = "password_prompt")]
    pub no_password_prompt: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print every change of a publication as one JSON object per line (CDC).
    Tail(commands::tail::TailArgs),
    /// Mirror tables onto another server: initial copy, then every change, exactly once.
    Mirror(commands::mirror::MirrorArgs),
    /// The replication lab on two throwaway local clusters, in one command.
    Demo(commands::demo::DemoArgs),
    /// Preflight: check the primary (and target) for everything a mirror needs, with fixes.
    Check(commands::check::CheckArgs),
    /// Show a mirror's slot, lag, stored progress and row counts.
    Status(commands::status::StatusArgs),
    /// Compare the mirrored tables on both sides and list differing keys.
    Verify(commands::verify::VerifyArgs),
    /// Copy one mirrored table again while the mirror keeps streaming the others.
    Resync(commands::resync::ResyncArgs),
    /// Retire a mirror once a second mirror into new shards verifies equal to the source.
    Reshard(commands::reshard::ReshardArgs),
    /// Remove what pgmirror created for a mirror: slot, publication, its rows on the target.
    Drop(commands::drop::DropArgs),
    /// Benchmark apply throughput against PostgreSQL's own subscriber on throwaway clusters.
    Bench(commands::bench::BenchArgs),
    /// Save a slot's raw pgoutput stream to a file.
    Record(commands::record::RecordArgs),
    /// Apply a recording into a target with the mirror's applier.
    Replay(commands::replay::ReplayArgs),
}

/// Runs the parsed command. `Ok` carries the exit status (some commands report failures, such
/// as a failed check, through it rather than through an error).
///
/// # Errors
/// Whatever the command failed with, for `main` to print on one line.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    crate::conn::set_prompt(match (cli.password_prompt, cli.no_password_prompt) {
        (true, _) => crate::conn::Prompt::Always,
        (_, true) => crate::conn::Prompt::Never,
        _ => crate::conn::Prompt::Auto,
    });
    let result = match cli.command {
        Command::Tail(args) => commands::tail::run(args).await,
        // Boxed: its future holds both connection configs and the whole pipeline.
        Command::Mirror(args) => Box::pin(commands::mirror::run(args)).await,
        Command::Demo(args) => commands::demo::run(args).await,
        Command::Check(args) => commands::check::run(args).await,
        Command::Status(args) => commands::status::run(args).await,
        Command::Verify(args) => commands::verify::run(args).await,
        Command::Resync(args) => commands::resync::run(args).await,
        Command::Reshard(args) => commands::reshard::run(args).await,
        Command::Drop(args) => commands::drop::run(args).await,
        Command::Bench(args) => commands::bench::run(args).await,
        Command::Record(args) => commands::record::run(args).await,
        Command::Replay(args) => commands::replay::run(args).await,
    };
    result.map_err(crate::conn::explain)
}
