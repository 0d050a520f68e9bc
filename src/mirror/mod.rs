//! `pgmirror mirror`'s engine: prepare the primary and the target, copy the tables under the
//! slot's snapshot, then stream and apply for ever, retrying through outages.
//!
//! Set-up is recorded in `pgmirror.mirrors` on the target ([`registry`]) before anything is
//! created on the primary that would need cleaning up, so every crash leaves a state that the
//! next start can finish or undo:
//! - no row: nothing was created yet (or a failed set-up was undone);
//! - `copying`: the slot exists but the copy did not finish; the slot's snapshot is gone with the
//!   connection that exported it, so the slot is dropped and the copy redone from scratch;
//! - `streaming`: stream from `pgmirror.progress`.

pub mod registry;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use applier::{Applier, ApplierConfig, PostgresTarget, PostgresTargetConfig};
use pgoutput_decoder::Lsn;
use replication::{
    ConnConfig, CreateSlotOptions, ReplicationClient, SnapshotAction, StartReplication, Streaming,
};
use tablesync::{CopyEvent, CopyOptions, TableDef, TargetOptions};
use tokio_postgres::Client;

use crate::cli::TableSelection;
use crate::metrics::Metrics;
use crate::pump::{PumpEnd, pump};
use crate::retry::{Backoff, is_transient};
use crate::shutdown::Shutdown;
use registry::{MirrorRecord, MirrorState};

/// Everything a mirror needs to run.
#[derive(Debug, Clone)]
pub struct MirrorOptions {
    /// The mirror's name: the key of its progress row; the default slot and publication
    /// names derive from it.
    pub name: String,
    /// The primary.
    pub source: ConnConfig,
    /// The replica.
    pub target: ConnConfig,
    /// The tables, as a publication or a list.
    pub tables: TableSelection,
    /// Slot name (default `pgmirror_<name>`).
    pub slot: Option<String>,
    /// Copy existing rows before streaming.
    pub initial_copy: bool,
    /// Empty non-empty target tables before the initial copy instead of failing.
    pub truncate_target: bool,
    /// Parallel COPY connections for the initial copy.
    pub copy_parallelism: usize,
    /// Binary column values (faster; the default).
    pub binary: bool,
    /// Show progress bars (a terminal) rather than log lines.
    pub progress_bars: bool,
    /// How often sequences are copied while streaming.
    pub sequence_interval: Duration,
    /// Settings of the apply loop.
    pub applier: ApplierConfig,
    /// Where the mirror reports what it does (served by `--metrics-addr`).
    pub metrics: Arc<Metrics>,
}

impl MirrorOptions {
    /// Options with the defaults for everything but the essentials.
    pub fn new(
        name: impl Into<String>,
        source: ConnConfig,
        target: ConnConfig,
        tables: TableSelection,
    ) -> Self {
        MirrorOptions {
            name: name.into(),
            source,
            target,
            tables,
            slot: None,
            initial_copy: true,
            truncate_target: false,
            copy_parallelism: 2,
            binary: true,
            progress_bars: false,
            sequence_interval: Duration::from_secs(30),
            applier: ApplierConfig::default(),
            metrics: Metrics::new(),
        }
    }

    /// The slot's name.
    pub fn slot_name(&self) -> String {
        self.slot.clone().unwrap_or_else(|| format!("pgmirror_{}", self.name))
    }

    fn publication_name(&self) -> String {
        self.tables.publication.clone().unwrap_or_else(|| format!("pgmirror_{}", self.name))
    }
}

/// Runs a mirror until `shutdown` is triggered or a fault that retrying cannot fix.
///
/// Transient faults (either server down or restarting, a lost connection) are logged and
/// retried with capped exponential backoff; the mirror resumes from the target's stored progress.
///
/// # Errors
/// Faults that repeat: bad configuration, missing privileges, schema mismatches, a lost slot.
pub async fn run(opts: &MirrorOptions, shutdown: &mut Shutdown) -> anyhow::Result<()> {
    let mut backoff = Backoff::default();
    loop {
        let attempt = async {
            // One lock for set-up and streaming: taking it twice raced the release of the
            // first, since a dropped client's session ends on the server a moment later.
            let _lock = lock_mirror(&opts.target, &opts.name).await?;
            let record = prepare(opts, shutdown).await?;
            stream(opts, &record, shutdown, &mut backoff).await
        };
        match attempt.await {
            Ok(()) => return Ok(()),
            Err(e) if shutdown.is_triggered() => {
                tracing::info!(error = %format!("{e:#}"), "stopped");
                return Ok(());
            }
            Err(e) if is_transient(e.as_ref()) => {
                opts.metrics.error();
                opts.metrics.reconnected();
                let delay = backoff.next_delay();
                tracing::warn!(
                    error = %format!("{e:#}"),
                    retry_in = ?delay,
                    "disconnected; retrying"
                );
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = shutdown.wait() => return Ok(()),
                }
            }
            Err(e) => {
                opts.metrics.error();
                return Err(e);
            }
        }
    }
}

/// How long a start waits for the mirror's lock before deciding another pgmirror holds it: the
/// session of a previous process that was killed ends on the server only once the server
/// notices the closed socket, which takes a moment on a loaded machine.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// A target connection that holds this mirror's advisory lock, so a second pgmirror for the
/// same mirror refuses to run.
async fn lock_mirror(target: &ConnConfig, name: &str) -> anyhow::Result<Client> {
    let client = replication::connect_sql(target).await.context("connecting to the target")?;
    // The session of this process's previous attempt may still be ending on the server: give
    // it a moment before deciding that another pgmirror holds the lock.
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    let locked = loop {
        let locked: bool = client
            .query_one(
                "SELECT pg_try_advisory_lock(hashtextextended('pgmirror:' || $1, 0))",
                &[&name],
            )
            .await
            .context("taking the mirror's lock on the target")?
            .get(0);
        if locked || std::time::Instant::now() >= deadline {
            break locked;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    if !locked {
        bail!(
            "another pgmirror is already running mirror {name:?} on this target; stop it first \
             (or give this one another --name)"
        );
    }
    Ok(client)
}

/// Makes sure the publication, slot, target tables and (if needed) the initial copy are in
/// place, and returns the mirror's record in state `streaming`.
async fn prepare(opts: &MirrorOptions, shutdown: &Shutdown) -> anyhow::Result<MirrorRecord> {
    let mut target =
        replication::connect_sql(&opts.target).await.context("connecting to the target")?;
    registry::ensure_table(&target).await.context("creating pgmirror.mirrors on the target")?;
    let existing = registry::load(&target, &opts.name).await.context("reading pgmirror.mirrors")?;
    if let Some(rec) = &existing
        && rec.state == MirrorState::Streaming
    {
        return Ok(rec.clone());
    }

    let source =
        replication::connect_sql(&opts.source).await.context("connecting to the source")?;
    let slot = opts.slot_name();
    let publication = opts.publication_name();
    let tables = crate::setup::resolve_tables(&source, &opts.tables).await?;
    check_replica_identity(&tables)?;
    for table in &tables {
        tablesync::ensure_target_table(&target, table, &TargetOptions::default()).await?;
    }
    let mut repl = ReplicationClient::connect(&opts.source)
        .await
        .context("replication connection to the source")?;
    let system = repl.identify_system().await.context("IDENTIFY_SYSTEM")?;

    // A previous start died during its initial copy: undo it and copy again.
    let mut redo_copy = false;
    if let Some(rec) = &existing {
        redo_copy = true;
        if rec.created_slot && crate::setup::slot_exists(&mut repl, &rec.slot).await? {
            tracing::info!(slot = %rec.slot, "previous initial copy was interrupted; starting it over");
            repl.drop_slot(&rec.slot, true).await.context("dropping the unfinished copy's slot")?;
        }
    }
    if crate::setup::slot_exists(&mut repl, &slot).await? && opts.initial_copy {
        bail!(
            "slot {slot:?} already exists on the source but this target has no record of it; \
                 drop it (SELECT pg_drop_replication_slot('{slot}')) for a fresh initial copy, or \
                 pass --no-initial-copy to stream from where it stands"
        );
    }
    let created_publication = match existing.as_ref() {
        Some(rec) => rec.created_publication,
        None => {
            opts.tables.publication.is_none()
                && tablesync::ensure_publication(&source, &publication, &tables).await?
                    == tablesync::PublicationStatus::Created
        }
    };

    let mut record = MirrorRecord {
        name: opts.name.clone(),
        slot: slot.clone(),
        publication,
        created_slot: true,
        created_publication,
        state: MirrorState::Copying,
        source_system_id: Some(system.system_id.to_string()),
    };

    if !opts.initial_copy {
        let exists = crate::setup::slot_exists(&mut repl, &slot).await?;
        record.created_slot = !exists;
        let point = if exists {
            None
        } else {
            let opts =
                CreateSlotOptions { snapshot: SnapshotAction::Nothing, ..Default::default() };
            Some(repl.create_slot(&slot, opts).await.context("creating the slot")?.consistent_point)
        };
        registry::save(&target, &record).await?;
        registry::finish_copy(&mut target, &opts.name, point.unwrap_or(Lsn::ZERO)).await?;
        record.state = MirrorState::Streaming;
        tracing::info!(slot = %slot, "slot ready; streaming without an initial copy");
        return Ok(record);
    }

    // Record first, then create: a crash between the two leaves a row whose slot may not
    // exist, which the next start handles; the opposite order could orphan a slot.
    registry::save(&target, &record).await.context("recording the mirror on the target")?;
    let created = repl
        .create_slot(
            &slot,
            CreateSlotOptions { snapshot: SnapshotAction::Export, ..Default::default() },
        )
        .await
        .context("creating the slot")?;
    tracing::info!(slot = %slot, consistent_point = %created.consistent_point, "created slot");
    let Some(snapshot) = created.snapshot_name.clone() else {
        bail!("the source did not export a snapshot for slot {slot:?}");
    };

    let copied =
        initial_copy(opts, &tables, &snapshot, redo_copy || opts.truncate_target, shutdown).await;
    if let Err(e) = copied {
        if shutdown.is_triggered() {
            // Stopped, not failed: the tables copied so far stay, and so does the record
            // ("copying"), so the next start empties them and copies again. Only the slot
            // goes, so the primary keeps no WAL for a stopped mirror.
            drop_setup_slot(&mut repl, &record.slot).await;
            return Err(e);
        }
        undo_setup(&mut repl, &mut target, &source, &record).await;
        return Err(e);
    }
    // The snapshot can go now: the copy is committed on the target.
    repl.close().await;
    if let Err(e) = sync_sequences_once(&source, &target, &tables).await {
        tracing::warn!(error = %format!("{e:#}"), "copying sequence values failed; will retry while streaming");
    }
    registry::finish_copy(&mut target, &opts.name, created.consistent_point)
        .await
        .context("storing the initial progress")?;
    record.state = MirrorState::Streaming;
    tracing::info!("initial copy done");
    Ok(record)
}

/// Drops the slot a set-up created, on a fresh connection if the old one failed.
async fn drop_setup_slot(repl: &mut ReplicationClient, slot: &str) {
    if let Err(e) = repl.drop_slot(slot, true).await {
        // The replication connection may be what failed; try a fresh one.
        tracing::debug!(error = %e, "dropping the slot on the old connection failed");
        if let Ok(mut fresh) = ReplicationClient::connect(repl.config()).await
            && let Err(e) = fresh.drop_slot(slot, true).await
        {
            tracing::error!(slot = %slot, error = %e, "could not drop the slot; drop it by hand");
        }
    }
}

/// After a failed initial copy: drop what this set-up created, so nothing is left behind.
async fn undo_setup(
    repl: &mut ReplicationClient,
    target: &mut Client,
    source: &Client,
    rec: &MirrorRecord,
) {
    drop_setup_slot(repl, &rec.slot).await;
    if rec.created_publication {
        let _ = tablesync::drop_publication(source, &rec.publication).await;
    }
    let _ = registry::delete(target, &rec.name).await;
}

fn check_replica_identity(tables: &[TableDef]) -> anyhow::Result<()> {
    for t in tables {
        if !t.has_replica_identity() {
            bail!(
                "table {} has no primary key or replica identity, so its UPDATEs and DELETEs \
                 cannot be replicated; fix: ALTER TABLE {} REPLICA IDENTITY FULL (or add a \
                 primary key)",
                t.quoted(),
                t.quoted()
            );
        }
    }
    Ok(())
}

async fn initial_copy(
    opts: &MirrorOptions,
    tables: &[TableDef],
    snapshot: &str,
    truncate: bool,
    shutdown: &Shutdown,
) -> anyhow::Result<()> {
    let target = replication::connect_sql(&opts.target).await?;
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
        tablesync::ensure_targets_empty(&target, tables).await?;
    }
    drop(target);
    let source_cfg = opts.source.clone();
    let target_cfg = opts.target.clone();
    let source = move || {
        let cfg = source_cfg.clone();
        async move { replication::connect_sql(&cfg).await }
    };
    let target = move || {
        let cfg = target_cfg.clone();
        async move { replication::connect_sql(&cfg).await }
    };
    let copy_opts = CopyOptions {
        parallelism: if superuser { opts.copy_parallelism.max(1) } else { 1 },
        truncate_target: false,
        // Tables are copied in parallel, so a child table may land before its parent: foreign
        // keys are checked by the primary already, as the native subscriber assumes too.
        replica_role: superuser,
        ..CopyOptions::default()
    };
    let progress = Arc::new(crate::progress::CopyProgress::new(tables, opts.progress_bars));
    let report_progress = progress.clone();
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
        report_progress.event(event)
    };
    tracing::info!(tables = tables.len(), "copying tables under the slot's snapshot");
    let mut stop = shutdown.clone();
    let report = tokio::select! {
        r = tablesync::copy_tables(&source, &target, snapshot, tables, &copy_opts, &on_event) => r?,
        () = stop.wait() => bail!("stopped during the initial copy"),
    };
    progress.finish();
    tracing::info!(
        rows = report.rows,
        bytes = report.bytes,
        seconds = report.elapsed.as_secs_f64(),
        "copied tables"
    );
    Ok(())
}

async fn sync_sequences_once(
    source: &Client,
    target: &Client,
    tables: &[TableDef],
) -> anyhow::Result<usize> {
    let seqs = tablesync::table_sequences(source, tables).await?;
    Ok(tablesync::sync_sequences(source, target, &seqs).await?)
}

/// One streaming session: connect, apply until stopped or disconnected.
async fn stream(
    opts: &MirrorOptions,
    record: &MirrorRecord,
    shutdown: &mut Shutdown,
    backoff: &mut Backoff,
) -> anyhow::Result<()> {
    let target =
        replication::connect_sql(&opts.target).await.context("connecting to the target")?;
    let mut target_cfg = PostgresTargetConfig::new(opts.name.clone());
    target_cfg.replica_role = true;
    // More target sessions, for applying a large streamed transaction while it arrives.
    let target_conn = opts.target.clone();
    let target = PostgresTarget::new(target, target_cfg).await?.with_connector(move || {
        let cfg = target_conn.clone();
        async move { replication::connect_sql(&cfg).await }
    });
    let mut applier = Applier::new(target, opts.applier.clone()).await?;
    let progress = applier.start_progress().unwrap_or(Lsn::ZERO);

    let mut repl = ReplicationClient::connect(&opts.source)
        .await
        .context("replication connection to the source")?;
    let system = repl.identify_system().await.context("IDENTIFY_SYSTEM")?;
    if let Some(expected) = &record.source_system_id
        && *expected != system.system_id.to_string()
    {
        bail!(
            "the source is a different PostgreSQL cluster (system id {}) than the one this \
                 mirror was set up from ({expected}); point --source at the original primary, or \
                 `pgmirror drop` this mirror and set it up again",
            system.system_id
        );
    }
    if !crate::setup::slot_exists(&mut repl, &record.slot).await? {
        bail!(
            "replication slot {:?} no longer exists on the source (dropped or invalidated), so \
             changes since {progress} are lost to this mirror; recover with a fresh initial copy: \
             `pgmirror drop` then `pgmirror mirror` again",
            record.slot
        );
    }
    let mut start = StartReplication::new(record.slot.clone(), [record.publication.clone()]);
    start.start_lsn = progress;
    start.binary = opts.binary;
    start.streaming = if repl.server_version() >= 140_000 { Streaming::On } else { Streaming::Off };
    // Report progress every second (not libpq's 10 s): the slot, `status` and `verify` then
    // see applied positions promptly, and an idle slot releases WAL sooner.
    start.status_interval = Duration::from_secs(1);
    let stream = repl.start_replication(start).await.context("starting replication")?;
    tracing::info!(slot = %record.slot, from = %progress, proto = stream.proto_version(), "streaming");

    let mut sequences = spawn_sequence_sync(opts, shutdown.clone());
    let connected_at = std::time::Instant::now();
    let result = tokio::select! {
        r = pump(&mut applier, stream, shutdown, &opts.metrics, system.xlogpos) => r.map_err(anyhow::Error::from),
        // A mirrored table vanished from the source: its changes would be lost silently.
        Ok(Some(gone)) = &mut sequences => Err(gone),
    };
    sequences.abort();
    if connected_at.elapsed() > Duration::from_secs(10) {
        // A session that streamed for a while was healthy: a new fault starts the backoff over.
        backoff.reset();
    }
    match result {
        Ok(PumpEnd::Stopped) => {
            // Last sequence values, so a replica that takes over does not reuse ids.
            if let Ok(sync) = SequenceSync::connect(opts).await {
                let _ = sync.run().await;
            }
            let stats = applier.stats();
            tracing::info!(
                applied_txns = stats.applied_txns,
                changes = stats.changes,
                "stopped cleanly"
            );
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Copies sequence values every `sequence_interval` while streaming. Ends with an error if a
/// mirrored table no longer exists on the source (no change of it would ever arrive again).
///
/// Keeps its two connections and the table definitions between rounds: a round is then one
/// existence check of the tables by OID, one query for their sequences and one `setval` per
/// sequence. A table gone by OID (dropped, or dropped and created again) or any error sends the
/// next round through a full resolve on fresh connections.
fn spawn_sequence_sync(
    opts: &MirrorOptions,
    mut shutdown: Shutdown,
) -> tokio::task::JoinHandle<Option<anyhow::Error>> {
    let opts = opts.clone();
    tokio::spawn(async move {
        let mut state: Option<SequenceSync> = None;
        loop {
            tokio::select! {
                () = tokio::time::sleep(opts.sequence_interval) => {}
                () = shutdown.wait() => return None,
            }
            let synced = async {
                let sync = match state.take() {
                    Some(s) if s.tables_still_there().await? => state.insert(s),
                    _ => state.insert(SequenceSync::connect(&opts).await?),
                };
                sync.run().await
            };
            match synced.await {
                Ok(n) => tracing::debug!(sequences = n, "synced sequences"),
                Err(e)
                    if e.chain().any(|c| {
                        matches!(
                            c.downcast_ref::<tablesync::Error>(),
                            Some(tablesync::Error::TableNotFound { .. })
                        )
                    }) =>
                {
                    return Some(e.context(
                        "a mirrored table no longer exists on the source (dropped or renamed), \
                         so its changes cannot be mirrored; recreate it, or `pgmirror drop` this \
                         mirror and set it up again with the remaining tables",
                    ));
                }
                Err(e) => {
                    state = None;
                    tracing::debug!(error = %format!("{e:#}"), "sequence sync failed; will retry")
                }
            }
        }
    })
}

/// What the periodic sequence sync keeps between rounds.
struct SequenceSync {
    source: tokio_postgres::Client,
    target: tokio_postgres::Client,
    tables: Vec<TableDef>,
}

impl SequenceSync {
    async fn connect(opts: &MirrorOptions) -> anyhow::Result<Self> {
        let source = replication::connect_sql(&opts.source).await?;
        let target = replication::connect_sql(&opts.target).await?;
        let tables = crate::setup::resolve_tables(&source, &opts.tables).await?;
        Ok(SequenceSync { source, target, tables })
    }

    /// Copies the current sequence values; returns how many.
    async fn run(&self) -> anyhow::Result<usize> {
        sync_sequences_once(&self.source, &self.target, &self.tables).await
    }

    /// Whether every table resolved earlier still exists under the same OID.
    async fn tables_still_there(&self) -> anyhow::Result<bool> {
        let oids: Vec<u32> = self.tables.iter().map(|t| t.oid).collect();
        let missing: i64 = self
            .source
            .query_one(
                "SELECT count(*) FROM unnest($1::oid[]) AS t(oid) \
                 WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = t.oid)",
                &[&oids],
            )
            .await?
            .get(0);
        Ok(missing == 0)
    }
}
