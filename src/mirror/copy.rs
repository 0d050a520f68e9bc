//! The initial copy of a mirror's tables under the slot's exported snapshot, and the sync of
//! their sequences.

use std::sync::Arc;

use anyhow::{Context, bail};
use pgconn::ConnConfig;
use tablesync::{Connector, CopyEvent, CopyOptions, TableDef};
use tokio_postgres::Client;

use super::options::MirrorOptions;
use crate::shutdown::Shutdown;

/// Opens the copy's sessions: each call connects to the source or the target anew.
pub(super) fn connectors(opts: &MirrorOptions) -> (impl Connector, impl Connector) {
    let connector = |cfg: ConnConfig| {
        move || {
            let cfg = cfg.clone();
            async move { pgconn::connect_sql(&cfg).await }
        }
    };
    (connector(opts.source.clone()), connector(opts.target.clone()))
}

pub(super) async fn initial_copy(
    opts: &MirrorOptions,
    tables: &[TableDef],
    snapshot: &str,
    truncate: bool,
    shutdown: &Shutdown,
) -> anyhow::Result<()> {
    let target = pgconn::connect_sql(&opts.target).await?;
    // `session_replication_role = replica` (foreign keys not checked while tables load in
    // parallel) needs a superuser; a lesser role copies one table at a time in dependency order.
    let superuser = target
        .query_one("SELECT current_setting('is_superuser') = 'on'", &[])
        .await
        .context("checking the target role")?
        .get::<_, bool>(0);
    if !superuser {
        tracing::warn!(
            "the target role is not a superuser: copying tables one at a time, parents first, \
             with foreign keys and triggers active"
        );
    }
    if truncate {
        // One statement for all tables: foreign keys between them forbid truncating one by one.
        let list = tables.iter().map(TableDef::quoted).collect::<Vec<_>>().join(", ");
        target
            .batch_execute(&format!("TRUNCATE {list}"))
            .await
            .context("emptying the target tables before the initial copy")?;
    } else {
        tablesync::ensure_targets_empty(&target, tables).await.map_err(with_truncate_flag)?;
    }
    drop(target);
    let (source, target) = connectors(opts);
    let copy_opts = CopyOptions {
        parallelism: if superuser { opts.copy_parallelism.max(1) } else { 1 },
        truncate_target: false,
        // Tables are copied in parallel, so a child table may land before its parent: foreign
        // keys are checked by the primary already, as the native subscriber assumes too.
        replica_role: superuser,
        ..CopyOptions::default()
    };
    let bars = Arc::new(crate::bars::CopyBars::new(tables, opts.progress_bars));
    let event_bars = bars.clone();
    let metrics = opts.metrics.clone();
    let total = u64::try_from(tables.len()).unwrap_or(u64::MAX);
    let done = std::sync::atomic::AtomicU64::new(0);
    let last_rows = std::sync::Mutex::new(std::collections::HashMap::<String, (u64, u64)>::new());
    metrics.copy_tables(0, total);
    let on_event = move |event: CopyEvent<'_>| {
        match &event {
            CopyEvent::Progress { table, rows, bytes } => {
                // Events carry running totals per table; the metrics want increments.
                if let Ok(mut last) = last_rows.lock() {
                    let prev = last.entry(table.quoted()).or_insert((0, 0));
                    metrics.copied(rows.saturating_sub(prev.0), bytes.saturating_sub(prev.1));
                    *prev = (*rows, *bytes);
                }
            }
            CopyEvent::TableDone(_) => {
                let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                metrics.copy_tables(n, total);
            }
            _ => {}
        }
        event_bars.event(event)
    };
    tracing::info!(tables = tables.len(), "copying tables under the slot's snapshot");
    let mut stop = shutdown.clone();
    let report = tokio::select! {
        r = tablesync::copy_tables(&source, &target, snapshot, tables, &copy_opts, &on_event) => {
            r.map_err(with_truncate_flag)?
        }
        () = stop.wait() => bail!("stopped during the initial copy"),
    };
    bars.finish();
    tracing::info!(
        rows = report.rows,
        bytes = report.bytes,
        seconds = report.elapsed.as_secs_f64(),
        "copied tables"
    );
    Ok(())
}

/// A target table that holds rows, with the flag that empties it.
fn with_truncate_flag(e: tablesync::Error) -> anyhow::Error {
    match e {
        tablesync::Error::TargetNotEmpty { .. } => anyhow::anyhow!(
            "{e}, or run `pgmirror mirror` with --truncate-target to have them deleted"
        ),
        e => e.into(),
    }
}

/// Copies the current value of every sequence the tables use. Each sequence is tried on its
/// own; each failure is a warning with its fix, counted in `pgmirror_errors_total`, and
/// repeated at every later sync until it is fixed. Returns how many were synced.
pub(super) async fn sync_sequences_once(
    opts: &MirrorOptions,
    source: &Client,
    target: &Client,
    tables: &[TableDef],
) -> usize {
    let seqs = match tablesync::table_sequences(source, tables).await {
        Ok(seqs) => seqs,
        Err(e) => {
            opts.metrics.error();
            tracing::warn!(error = %format!("{e:#}"), "could not list the tables' sequences; will retry");
            return 0;
        }
    };
    let report = tablesync::sync_sequences(source, target, &seqs).await;
    for failure in &report.failures {
        opts.metrics.error();
        tracing::warn!("{failure}");
    }
    report.synced
}
