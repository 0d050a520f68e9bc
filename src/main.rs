//! `pgmirror`: mirror PostgreSQL tables over logical replication.

use clap::Parser;

/// Mirror PostgreSQL tables onto another server through logical decoding.
#[derive(Debug, Parser)]
#[command(name = "pgmirror", version, about)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
}
