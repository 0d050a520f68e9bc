//! `pgmirror tail`: every change of a publication as one JSON object per line.
//!
//! It confirms a transaction to the slot only after its lines are written and flushed, so a
//! restart resumes right after the last transaction printed. Ctrl-C stops it cleanly after the
//! current transaction.

use std::io::{self, Write};
use std::process::ExitCode;

use anyhow::Context;
use applier::{Applier, ApplierConfig, JsonTarget};
use clap::Args;
use replication::{
    CreateSlotOptions, ReplicationClient, SnapshotAction, StartReplication, Streaming,
};

use crate::cli::TableSelection;
use crate::metrics::Metrics;
use crate::pump::{PumpEnd, pump};
use crate::shutdown::Shutdown;
use crate::{conn, setup};

/// Arguments of `pgmirror tail`.
#[derive(Debug, Args)]
pub struct TailArgs {
    /// The primary: --source and psql's -h -p -U -d (`PG*` variables fill in the rest).
    #[command(flatten)]
    pub source: conn::SourceArgs,
    /// The tables to follow.
    #[command(flatten)]
    pub tables: TableSelection,
    /// The logical replication slot to read.
    #[arg(long, default_value = "pgmirror_tail", value_name = "NAME")]
    pub slot: String,
    /// Create the slot if it does not exist (it starts at the current end of WAL).
    #[arg(long)]
    pub create_slot: bool,
    /// Use a temporary slot, dropped when tail exits (nothing is remembered between runs).
    #[arg(long, conflicts_with = "create_slot")]
    pub temporary: bool,
    /// Ask for binary column values (decoded for common types, hex otherwise).
    #[arg(long)]
    pub binary: bool,
}

/// Runs `pgmirror tail`.
///
/// # Errors
/// Connection, slot or publication problems, and output errors.
pub async fn run(args: TailArgs) -> anyhow::Result<ExitCode> {
    let source = args.source.config()?;
    let sql = replication::connect_sql(&source).await.context("connecting to the source")?;
    let publication =
        setup::publication_for(&sql, &args.tables, &args.slot).await.context("publication")?;
    drop(sql);

    let mut client =
        ReplicationClient::connect(&source).await.context("replication connection to source")?;
    if args.temporary || args.create_slot {
        let exists = setup::slot_exists(&mut client, &args.slot).await?;
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
    start.binary = args.binary;
    start.messages = true;
    // Large transactions arrive in pieces instead of after the whole decode on the primary.
    start.streaming =
        if client.server_version() >= 140_000 { Streaming::On } else { Streaming::Off };
    let stream = client.start_replication(start).await.context("starting replication")?;
    tracing::info!(slot = %args.slot, proto = stream.proto_version(), "streaming changes");

    let target = JsonTarget::new(io::BufWriter::new(io::stdout()));
    let mut applier = Applier::new(target, ApplierConfig::default()).await?;
    let mut shutdown = Shutdown::on_signals();
    match pump(&mut applier, stream, &mut shutdown, &Metrics::default(), backlog_end).await {
        Ok(PumpEnd::Stopped) => {}
        Err(e) if is_broken_pipe(&e) => {}
        Err(e) => return Err(e.into()),
    }
    let _ = io::stdout().flush();
    Ok(ExitCode::SUCCESS)
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
