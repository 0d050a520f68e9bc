//! `pgmirror record`: save a slot's raw pgoutput stream to a file, for `pgmirror replay`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use pgconn::ConnConfig;
use pgoutput_decoder::Lsn;
use recording::{RecordOptions, RecordSummary, StopAt};

use crate::commands::table_args::TableArgs;
use crate::conn;
use crate::selection::TableSelection;
use crate::shutdown::Shutdown;

/// Arguments of `pgmirror record`.
#[derive(Debug, Args)]
pub struct RecordArgs {
    /// The primary: --source and psql's -h -p -U -d (`PG*` variables fill in the rest).
    #[command(flatten)]
    pub source: conn::SourceArgs,
    /// The tables to record.
    #[command(flatten)]
    pub tables: TableArgs,
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

/// What to record, with the tables as the command line selects them.
#[derive(Debug, Clone)]
pub struct Recording {
    /// The primary.
    pub source: ConnConfig,
    /// The tables (a publication `pgmirror_<slot>` is created for a list).
    pub tables: TableSelection,
    /// The slot to stream from.
    pub slot: String,
    /// Create the slot first (it must not exist).
    pub create_slot: bool,
    /// The file to write.
    pub out: PathBuf,
    /// When to stop (also on a shutdown request).
    pub stop: StopAt,
    /// Binary column values.
    pub binary: bool,
}

/// Resolves the selected tables (creating a publication for a list) and records the slot's
/// stream into `rec.out` until `rec.stop` or `shutdown`.
///
/// # Errors
/// Unknown tables or publication; connection, slot and file errors.
pub async fn record(rec: &Recording, shutdown: &mut Shutdown) -> anyhow::Result<RecordSummary> {
    let source = pgconn::connect_sql(&rec.source).await.context("connecting to the source")?;
    let default_publication = format!("pgmirror_{}", rec.slot);
    let publication =
        crate::selection::publication_for(&source, &rec.tables, &default_publication).await?;
    let tables = crate::selection::resolve_tables(&source, &rec.tables).await?;
    drop(source);
    let opts = RecordOptions {
        source: rec.source.clone(),
        publication,
        tables,
        slot: rec.slot.clone(),
        create_slot: rec.create_slot,
        out: rec.out.clone(),
        stop: rec.stop,
        binary: rec.binary,
    };
    recording::record(&opts, shutdown.wait()).await.map_err(|e| match e {
        recording::Error::NoSlot(slot) => {
            anyhow::anyhow!("slot {slot:?} does not exist on the source; pass --create-slot")
        }
        e => e.into(),
    })
}

/// Records until the stop condition or Ctrl-C, then prints a summary line.
///
/// # Errors
/// Connection, slot and file errors.
pub async fn run(args: RecordArgs) -> anyhow::Result<ExitCode> {
    let rec = Recording {
        source: args.source.config()?,
        tables: args.tables.into(),
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
    let summary = record(&rec, &mut shutdown).await?;
    println!(
        "recorded {} messages ({} transactions, {} row changes, {} payload bytes) up to {} into {}",
        summary.messages,
        summary.transactions,
        summary.changes,
        summary.payload_bytes,
        summary.last_commit_end,
        rec.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
