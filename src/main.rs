//! `pgmirror`: mirror PostgreSQL tables over logical replication.
//!
//! The binary is a thin edge: it parses arguments, sets up logging, runs one command from the
//! library and turns its error into one line on stderr and a non-zero exit status.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = pgmirror::cli::Cli::parse();
    pgmirror::logging::init(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Run the command on a worker thread, not in `block_on` on the main thread: a pipelined
    // apply loop there pays a thread wake-up per statement (measured: about 2x slower).
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
