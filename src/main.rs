//! `pgmirror`: mirror PostgreSQL tables over logical replication.
//!
//! The binary is a thin edge: it parses arguments, sets up logging, runs one command from the
//! library and turns its error into one line on stderr and a non-zero exit status.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = pgmirror::cli::Cli::parse();
    pgmirror::logging::init(cli.verbose);
    // One thread runs every task: the replication socket, the apply loop and the target's
    // connection hand work to each other per message, and across threads each hand-off is a
    // wake-up through the kernel, CPU the walsender and the target's backend need on a small
    // machine. Blocking work (cluster start-up) uses the blocking pool.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // A task of its own, so a panic in the command is reported like an error.
    let outcome = runtime.block_on(async { tokio::spawn(pgmirror::cli::run(cli)).await });
    let result = match outcome {
        Ok(result) => result,
        Err(e) => {
            eprintln!("error: the command's task failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // `{:#}` prints the whole context chain on one line: "what failed: why".
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
