//! `pgmirror record`: save a slot's raw pgoutput stream to a file, for `pgmirror replay`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use pgoutput_decoder::Lsn;

use crate::bench::recording::{self, RecordOptions, StopAt};
use crate::cli::TableSelection;
use crate::conn;
use crate::shutdown::Shutdown;

/// Arguments of `pgmirror record`.
#[derive(Debug, Args)]
pub struct RecordArgs {
    /// The primary: --source and psql's -h -p -U -d (`PG*` variables fill in the rest).
    #[command(flatten)]
    pub source: conn::SourceArgs,
    /// The tables to record.
    #[command(flatten)]
    pub tables: TableSelection,
    /// The logical replication slot to stream from (recording advances it).
    #[arg(long, value_name = "NAME")]
    pub slot: String,
    /// Create the slot first.
    #[arg(long)]
    pub create_slot: bool,
    /// The recording to write.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Stop once the stream has passed this LSN.
    #[arg(long, value_name = "LSN")]
    pub until_lsn: Option<Lsn>,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Stop after this many seconds without a message.
    #[arg(long, value_name = "SECS")]
    pub idle: Option<f64>,
    /// Ask for text values instead of binary ones.
    #[arg(long)]
    pub text: bool,
}

fn seconds(option: &str, value: Option<f64>) -> anyhow::Result<Option<Duration>> {
    value
        .map(|s| {
            Duration::try_from_secs_f64(s)
                .map_err(|_| anyhow::anyhow!("{option}: expected a non-negative number of seconds"))
        })
        .transpose()
}

/// Records until the stop condition or Ctrl-C, then prints a summary line.
///
/// # Errors
/// Connection, slot and file errors.
pub async fn run(args: RecordArgs) -> anyhow::Result<ExitCode> {
    let opts = RecordOptions {
        source: args.source.config()?,
        tables: args.tables,
        slot: args.slot,
        create_slot: args.create_slot,
        out: args.out,
        stop: StopAt {
            until_lsn: args.until_lsn,
            duration: seconds("--duration", args.duration)?,
            idle: seconds("--idle", args.idle)?,
        },
        binary: !args.text,
    };
    let mut shutdown = Shutdown::on_signals();
    let summary = recording::record(&opts, &mut shutdown).await?;
    println!(
        "recorded {} messages ({} transactions, {} row changes, {} payload bytes) up to {} into {}",
        summary.messages,
        summary.transactions,
        summary.changes,
        summary.payload_bytes,
        summary.last_commit_end,
        opts.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
