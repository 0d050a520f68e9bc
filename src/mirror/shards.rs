//! A mirror into N shards: the tables with a shard key split as PostgreSQL's hash partitioning
//! would (`applier::shard`), the others whole on every shard.
//!
//! Each shard keeps the mirror's record (`pgmirror.mirrors`) and its own progress, so set-up
//! and streaming follow the single-target mirror: a start finds every shard `streaming` and
//! streams, or (some shard without a record, or `copying`) drops the unfinished copy's slot and
//! copies again. The initial copy reads each table once under the slot's snapshot and routes
//! its rows, all shards' COPYs at once. While streaming, the slot is confirmed only up to what
//! every shard made durable; a shard that is down stops the stream for all (the others wait,
//! and resume from their own progress once it is back).

pub mod verify;

use std::time::Duration;

use anyhow::{Context, bail};
use applier::shard::{KeyColumn, KeyType, RoutedTable, ShardLayout, ShardedTarget, copy_routed};
use applier::{Applier, PostgresTarget, PostgresTargetConfig};
use futures_util::future::try_join_all;
use pgconn::ConnConfig;
use pgoutput_decoder::Lsn;
use replication::{CreateSlotOptions, ReplicationClient, SnapshotAction};
use tablesync::TableDef;
use tokio_postgres::Client;

use super::registry::{self, MirrorRecord, MirrorState};
use super::{MirrorOptions, lock_mirror};
use crate::pump::pump;
use crate::retry::{Backoff, is_transient};
use crate::shutdown::Shutdown;

/// A mirror into shards.
#[derive(Debug, Clone)]
pub struct ShardedOptions {
    /// The mirror's settings; its `target` is the first shard.
    pub mirror: MirrorOptions,
    /// The shards, in order: shard `i` holds hash partition `REMAINDER i`.
    pub shards: Vec<ConnConfig>,
    /// The sharded tables and their keys.
    pub layout: ShardLayout,
}

/// Runs a sharded mirror until `shutdown` or a fault that retrying cannot fix, as
/// [`super::run`] does for one target.
///
/// # Errors
/// As [`super::run`], and a shard key that cannot be routed.
pub async fn run(opts: &ShardedOptions, shutdown: &mut Shutdown) -> anyhow::Result<()> {
    let mut backoff = Backoff::default();
    let mut connected = false;
    loop {
        let attempt = async {
            let source = pgconn::connect_sql(&opts.mirror.source)
                .await
                .context("connecting to the source")?;
            let mut locks = Vec::new();
            for (i, shard) in opts.shards.iter().enumerate() {
                let target = pgconn::connect_sql(shard)
                    .await
                    .with_context(|| format!("connecting to shard {i}"))?;
                crate::same_database::refuse_same_database(&source, &target).await?;
                locks.push(lock_mirror(target, &opts.mirror.name).await?);
            }
            connected = true;
            opts.layout.check(&source).await?;
            let record = prepare(opts, &source, shutdown).await?;
            drop(source);
            Box::pin(stream(opts, &record, shutdown, &mut backoff)).await
        };
        let result = attempt.await;
        match result {
            Ok(()) => return Ok(()),
            Err(e) if shutdown.is_triggered() => {
                tracing::info!(error = %format!("{e:#}"), "stopped");
                return Ok(());
            }
            Err(e)
                if is_transient(e.as_ref()) && (connected || opts.mirror.retry_first_connect) =>
            {
                opts.mirror.metrics.error();
                let delay = backoff.next_delay();
                tracing::warn!(error = %format!("{e:#}"), retry_in = ?delay, "a server is unreachable; retrying");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = shutdown.wait() => return Ok(()),
                }
            }
            Err(e) => {
                opts.mirror.metrics.error();
                return Err(e);
            }
        }
    }
}

async fn connect_shards(opts: &ShardedOptions) -> anyhow::Result<Vec<Client>> {
    try_join_all(opts.shards.iter().enumerate().map(|(i, cfg)| async move {
        pgconn::connect_sql(cfg).await.with_context(|| format!("connecting to shard {i}"))
    }))
    .await
}

/// Set-up on every shard; returns the mirror's record once every shard streams.
async fn prepare(
    opts: &ShardedOptions,
    source: &Client,
    shutdown: &Shutdown,
) -> anyhow::Result<MirrorRecord> {
    let m = &opts.mirror;
    let mut targets = connect_shards(opts).await?;
    let mut records = Vec::new();
    for t in &targets {
        records.push(registry::load(t, &m.name).await.context("reading pgmirror.mirrors")?);
    }
    if let Some(Some(first)) = records.first()
        && records.iter().all(|r| r.as_ref().is_some_and(|r| r.state == MirrorState::Streaming))
    {
        return Ok(first.clone());
    }
    let existing = records.iter().flatten().next().cloned();
    let slot = m.slot_name();
    let publication = m.publication_name();
    let tables = crate::selection::resolve_tables(source, &m.tables).await?;
    super::prepare::check_replica_identity(&tables)?;
    for (schema, table, _) in opts.layout.tables() {
        if !tables.iter().any(|t| t.schema == schema && t.name == table) {
            bail!(
                "--shard-key names {}.{}, which is not among the mirrored tables",
                pgconn::quote_ident(schema),
                pgconn::quote_ident(table)
            );
        }
    }
    if existing.is_none() {
        crate::preflight::ensure_source_ready(source, &slot).await?;
    }
    for (i, target) in targets.iter_mut().enumerate() {
        super::prepare::create_schema(target, source, &tables)
            .await
            .with_context(|| format!("shard {i}"))?;
        registry::ensure_table(target).await.context("creating pgmirror.mirrors on a shard")?;
    }
    let mut repl = ReplicationClient::connect(&m.source)
        .await
        .context("replication connection to the source")?;
    let system = repl.identify_system().await.context("IDENTIFY_SYSTEM")?;
    let redo = existing.is_some();
    let interrupted = existing.as_ref().filter(|r| r.created_slot).map(|r| r.slot.as_str());
    // Without an initial copy an existing slot is streamed from where it stands.
    let slot_exists = super::prepare::clear_interrupted_copy(
        &mut repl,
        interrupted,
        &slot,
        m.initial_copy,
        "the shards have",
    )
    .await?;
    let created_publication = match &existing {
        Some(rec) => rec.created_publication,
        None if m.tables.publication.is_none() => {
            crate::selection::create_publication(source, &publication, &tables).await?
                == tablesync::PublicationStatus::Created
        }
        None => false,
    };
    let mut record =
        MirrorRecord::copying(&m.name, &slot, publication, created_publication, system.system_id);
    record.created_slot = !slot_exists;
    for t in &targets {
        registry::save(t, &record).await.context("recording the mirror on a shard")?;
    }
    let (point, snapshot) = if slot_exists {
        (Lsn::ZERO, None)
    } else {
        let snapshot =
            if m.initial_copy { SnapshotAction::Export } else { SnapshotAction::Nothing };
        let created = repl
            .create_slot(&slot, CreateSlotOptions { snapshot, ..Default::default() })
            .await
            .context("creating the slot")?;
        tracing::info!(slot = %slot, consistent_point = %created.consistent_point, "created slot");
        (created.consistent_point, created.snapshot_name)
    };
    if let Some(snapshot) = &snapshot {
        let mut stop = shutdown.clone();
        tokio::select! {
            r = copy(opts, &tables, snapshot, redo || m.truncate_target) => r?,
            () = stop.wait() => bail!("stopped during the initial copy"),
        }
    }
    repl.close().await;
    for (i, t) in targets.iter_mut().enumerate() {
        for failure in tablesync::validate_foreign_keys(source, t, &tables)
            .await
            .context("validating foreign keys after the initial copy")?
        {
            // A foreign key whose parent rows live on other shards cannot hold on one shard.
            tracing::warn!(shard = i, "{failure}");
        }
        super::copy::sync_sequences_once(m, source, t, &tables).await;
        registry::finish_copy(t, &m.name, point).await.context("storing the initial progress")?;
    }
    record.state = MirrorState::Streaming;
    tracing::info!(shards = targets.len(), "initial copy done");
    Ok(record)
}

/// The shard key of `table` by position among its COPY columns (`None`: a reference table).
fn routed_key(layout: &ShardLayout, table: &TableDef) -> anyhow::Result<Option<Vec<KeyColumn>>> {
    let Some(columns) = layout.key_of(&table.schema, &table.name) else { return Ok(None) };
    let copy: Vec<_> = table.copy_columns().collect();
    let mut key = Vec::new();
    for name in columns {
        let index = copy
            .iter()
            .position(|c| &c.name == name)
            .with_context(|| format!("shard key column {name:?} of {}", table.quoted()))?;
        let ty = KeyType::from_oid(copy[index].type_oid)
            .with_context(|| format!("shard key column {name:?} of {}", table.quoted()))?;
        key.push(KeyColumn { index, ty });
    }
    Ok(Some(key))
}

/// The initial copy: each table read once under `snapshot` and routed to the shards.
async fn copy(
    opts: &ShardedOptions,
    tables: &[TableDef],
    snapshot: &str,
    truncate: bool,
) -> anyhow::Result<()> {
    let source =
        pgconn::connect_sql(&opts.mirror.source).await.context("connecting to the source")?;
    source
        .batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT {}",
            pgconn::quote_literal(snapshot)
        ))
        .await
        .context("importing the slot's snapshot")?;
    let shards = connect_shards(opts).await?;
    for shard in &shards {
        // Rows of a table may land before their parents' on another shard's schedule.
        if let Err(e) = shard.batch_execute("SET session_replication_role = replica").await {
            tracing::warn!(error = %e, "not a superuser: foreign keys are checked during the copy");
        }
    }
    if truncate {
        // One statement for all tables: foreign keys between them forbid one at a time.
        let list = tables.iter().map(TableDef::quoted).collect::<Vec<_>>().join(", ");
        for shard in &shards {
            shard
                .batch_execute(&format!("TRUNCATE {list}"))
                .await
                .context("emptying the shards' tables before the initial copy")?;
        }
    } else {
        for shard in &shards {
            tablesync::ensure_targets_empty(shard, tables).await.map_err(|e| {
                anyhow::anyhow!(
                    "{e}, or run `pgmirror mirror` with --truncate-target to have them deleted"
                )
            })?;
        }
    }
    tracing::info!(tables = tables.len(), shards = shards.len(), "copying tables into shards");
    for table in tables {
        if table.copy_columns().any(|c| !c.binary_io) {
            bail!(
                "{} has a column without binary input/output, which the copy into shards needs",
                table.quoted()
            );
        }
        let routed = RoutedTable {
            quoted: table.quoted(),
            columns: table.copy_column_list(),
            key: routed_key(&opts.layout, table)?,
        };
        let rows = copy_routed(&source, &shards, &routed).await?;
        tracing::info!(table = %table.quoted(), rows = ?rows, "copied");
    }
    source.batch_execute("COMMIT").await.context("ending the copy's snapshot")?;
    Ok(())
}

/// One streaming session into all shards.
async fn stream(
    opts: &ShardedOptions,
    record: &MirrorRecord,
    shutdown: &mut Shutdown,
    backoff: &mut Backoff,
) -> anyhow::Result<()> {
    let m = &opts.mirror;
    let mut targets = Vec::new();
    for (i, shard) in opts.shards.iter().enumerate() {
        let client =
            pgconn::connect_sql(shard).await.with_context(|| format!("connecting to shard {i}"))?;
        let mut cfg = PostgresTargetConfig::new(m.name.clone());
        cfg.replica_role = true;
        targets.push(PostgresTarget::new(client, cfg).await?);
    }
    let target = ShardedTarget::new(targets, opts.layout.clone());
    let mut applier = Applier::new(target, m.applier.clone()).await?;
    let progress = applier.start_progress().unwrap_or(Lsn::ZERO);

    let (stream, backlog_end) = super::start_stream(m, record, progress).await?;
    tracing::info!(shards = opts.shards.len(), "streaming into shards");
    let sequences = spawn_sequence_sync(opts, shutdown.clone());
    let connected_at = std::time::Instant::now();
    let result = pump(&mut applier, stream, shutdown, &m.metrics, backlog_end).await;
    sequences.abort();
    if connected_at.elapsed() > Duration::from_secs(10) {
        backoff.reset();
    }
    result?;
    sync_sequences(opts).await.ok();
    tracing::info!(
        applied_txns = applier.stats().applied_txns,
        moved_rows = applier.target().moved_rows(),
        "stopped cleanly"
    );
    Ok(())
}

/// Copies the tables' sequence values to every shard.
async fn sync_sequences(opts: &ShardedOptions) -> anyhow::Result<()> {
    let source = pgconn::connect_sql(&opts.mirror.source).await?;
    let tables = crate::selection::resolve_tables(&source, &opts.mirror.tables).await?;
    for shard in connect_shards(opts).await? {
        super::copy::sync_sequences_once(&opts.mirror, &source, &shard, &tables).await;
    }
    Ok(())
}

/// Copies sequence values to every shard every `sequence_interval` while streaming.
fn spawn_sequence_sync(
    opts: &ShardedOptions,
    mut shutdown: Shutdown,
) -> tokio::task::JoinHandle<()> {
    let opts = opts.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = tokio::time::sleep(opts.mirror.sequence_interval) => {}
                () = shutdown.wait() => return,
            }
            if let Err(e) = sync_sequences(&opts).await {
                tracing::debug!(error = %format!("{e:#}"), "sequence sync failed; will retry");
            }
        }
    })
}
