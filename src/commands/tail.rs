//! `pgmirror tail`: every change of a publication as one JSON object per line.
//!
//! It confirms a transaction to the slot only once its lines are safe where they go: written
//! and flushed into a pipe or terminal; written, flushed and fsync'd in a regular file (given
//! with `--file`, or standard output redirected to one). fsyncs are at least [`FSYNC_INTERVAL`]
//! apart, so a stream of small transactions costs at most ten a second, and a transaction is
//! confirmed within about 0.3 s of being written. A restart (or a crash) then resumes right
//! after the last transaction confirmed: nothing confirmed is ever missing from the output, and
//! what was written after it is written again. Ctrl-C stops it cleanly after the current
//! transaction; `--endpos` stops it at an LSN.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use applier::{Applier, ApplierConfig, JsonTarget};
use clap::Args;
use pgoutput_decoder::Lsn;
use replication::{
    CreateSlotOptions, ReplicationClient, SnapshotAction, StartReplication, Streaming,
};

use crate::commands::table_args::TableArgs;
use crate::conn;
use crate::metrics::Metrics;
use crate::pump::pump_until;
use crate::selection::{self, TableSelection};
use crate::shutdown::Shutdown;

/// Least time between two fsyncs of the output file.
pub const FSYNC_INTERVAL: Duration = Duration::from_millis(100);

/// Arguments of `pgmirror tail`.
#[derive(Debug, Args)]
pub struct TailArgs {
    /// The primary: --source and psql's -h -p -U -d (`PG*` variables fill in the rest).
    #[command(flatten)]
    pub source: conn::SourceArgs,
    /// The tables to follow.
    #[command(flatten)]
    pub tables: TableArgs,
    /// The logical replication slot to read.
    #[arg(long, default_value = "pgmirror_tail", value_name = "NAME")]
    pub slot: String,
    /// Create the slot if it does not exist (it starts at the current end of WAL).
    #[arg(long)]
    pub create_slot: bool,
    /// Use a temporary slot, dropped when tail exits (nothing is remembered between runs).
    #[arg(long, conflicts_with = "create_slot")]
    pub temporary: bool,
    /// Ask for binary column values (printed as in text format; types from extensions as hex).
    #[arg(long)]
    pub binary: bool,
    /// Start at this LSN (`X/Y`) instead of where the slot stands, as pg_recvlogical's
    /// --startpos: transactions that commit before it are skipped (and the slot moves to it).
    #[arg(short = 'I', long, value_name = "LSN", value_parser = parse_lsn)]
    pub startpos: Option<Lsn>,
    /// Stop, with exit status 0, once every transaction whose commit ends at or before this LSN
    /// (`X/Y`, e.g. from `pg_current_wal_lsn()`) is written, as pg_recvlogical's --endpos;
    /// a transaction is never cut: one whose commit record spans the LSN is written whole.
    #[arg(short = 'E', long, value_name = "LSN", value_parser = parse_lsn)]
    pub endpos: Option<Lsn>,
    /// Append the lines to FILE (created with mode 0600 if missing) instead of standard
    /// output; `-` is standard output.
    #[arg(short = 'f', long, value_name = "FILE")]
    pub file: Option<PathBuf>,
}

fn parse_lsn(s: &str) -> Result<Lsn, String> {
    s.parse().map_err(|e| format!("{e}"))
}

/// Runs `pgmirror tail`.
///
/// # Errors
/// Connection, slot or publication problems, and output errors.
pub async fn run(args: TailArgs) -> anyhow::Result<ExitCode> {
    if let (Some(start), Some(end)) = (args.startpos, args.endpos) {
        anyhow::ensure!(
            end >= start,
            "--endpos {end} is before --startpos {start}: nothing could be printed; swap them"
        );
    }
    let source = args.source.config()?;
    let (out, sync) = output(args.file.as_deref())?;
    let sql = pgconn::connect_sql(&source).await.context("connecting to the source")?;
    let tables = TableSelection::from(args.tables);
    let publication =
        selection::publication_for(&sql, &tables, &args.slot).await.context("publication")?;

    let mut client =
        ReplicationClient::connect(&source).await.context("replication connection to source")?;
    if args.temporary || args.create_slot {
        let exists = client.slot_exists(&args.slot).await.context("looking up the slot")?;
        if args.temporary || !exists {
            let opts = CreateSlotOptions {
                temporary: args.temporary,
                snapshot: SnapshotAction::Nothing,
                ..CreateSlotOptions::default()
            };
            let slot = client
                .create_slot(&args.slot, opts)
                .await
                .with_context(|| format!("creating slot {}", args.slot))?;
            tracing::info!(slot = %args.slot, at = %slot.consistent_point, "created slot");
        }
    }

    // Where the primary's WAL ends now: the backlog to catch up on.
    let backlog_end = client.identify_system().await.context("IDENTIFY_SYSTEM")?.xlogpos;
    let mut start = StartReplication::new(args.slot.clone(), [publication]);
    if let Some(startpos) = args.startpos {
        check_startpos(&sql, &args.slot, startpos).await?;
        start.start_lsn = startpos;
    }
    start.binary = args.binary;
    start.messages = true;
    // Large transactions arrive in pieces instead of after the whole decode on the primary.
    start.streaming =
        if client.server_version() >= 140_000 { Streaming::On } else { Streaming::Off };
    let stream = client.start_replication(start).await.context("starting replication")?;
    tracing::info!(slot = %args.slot, proto = stream.proto_version(), "streaming changes");

    let mut target = JsonTarget::new(out).with_catalog(sql);
    if let Some(file) = sync {
        target = target.with_fsync(file, FSYNC_INTERVAL);
    }
    let mut applier = Applier::new(target, ApplierConfig::default()).await?;
    let mut shutdown = Shutdown::on_signals();
    let ended = pump_until(
        &mut applier,
        stream,
        &mut shutdown,
        &Metrics::default(),
        backlog_end,
        args.endpos,
    )
    .await;
    match ended {
        Ok(()) => {
            if let Some(end) = args.endpos.filter(|_| !shutdown.is_triggered()) {
                tracing::info!(endpos = %end, "reached --endpos");
            }
        }
        Err(e) if is_broken_pipe(&e) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(ExitCode::SUCCESS)
}

/// Where the lines go, and the regular file to fsync before a transaction is confirmed
/// (`--file`, or standard output redirected to a file); a pipe or terminal is only flushed.
fn output(file: Option<&Path>) -> anyhow::Result<(Box<dyn Write + Send>, Option<File>)> {
    let regular = |f: File| f.metadata().is_ok_and(|m| m.is_file()).then_some(f);
    match file.filter(|p| *p != Path::new("-")) {
        Some(path) => {
            let ctx = || format!("--file {}", path.display());
            let created = !path.exists();
            let f = OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o600)
                .open(path)
                .with_context(ctx)?;
            if created {
                // The new directory entry must survive a crash as well as the data.
                let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
                File::open(dir.unwrap_or(Path::new(".")))
                    .and_then(|d| d.sync_all())
                    .with_context(ctx)?;
            }
            let sync = regular(f.try_clone().with_context(ctx)?);
            Ok((Box::new(BufWriter::new(f)), sync))
        }
        None => {
            let stdout = io::stdout();
            let sync = stdout.as_fd().try_clone_to_owned().ok().map(File::from).and_then(regular);
            Ok((Box::new(BufWriter::new(stdout)), sync))
        }
    }
}

/// `--startpos` must be WAL the primary has; before the slot's position it has no effect.
async fn check_startpos(
    sql: &tokio_postgres::Client,
    slot: &str,
    startpos: Lsn,
) -> anyhow::Result<()> {
    let row = sql
        .query_one(
            "SELECT CASE WHEN NOT pg_catalog.pg_is_in_recovery() \
                         THEN pg_catalog.pg_current_wal_insert_lsn()::text END, \
                    (SELECT confirmed_flush_lsn::text FROM pg_catalog.pg_replication_slots \
                     WHERE slot_name = $1)",
            &[&slot],
        )
        .await
        .context("reading the WAL and slot positions")?;
    let lsn = |i: usize| row.get::<_, Option<String>>(i).and_then(|l| l.parse::<Lsn>().ok());
    if let Some(wal_end) = lsn(0) {
        anyhow::ensure!(
            startpos <= wal_end,
            "--startpos {startpos} is past the end of the primary's WAL ({wal_end}); give an \
             LSN it has written, e.g. from pg_current_wal_lsn()"
        );
    }
    if let Some(confirmed) = lsn(1)
        && startpos < confirmed
    {
        tracing::warn!(
            %startpos,
            %confirmed,
            "--startpos is before what the slot already confirmed; the primary starts there"
        );
    }
    Ok(())
}

fn is_broken_pipe(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            return io.kind() == io::ErrorKind::BrokenPipe;
        }
        cur = err.source();
    }
    false
}
