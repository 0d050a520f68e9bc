//! A mirror's set-up: what must exist on the primary and the target before streaming, and the
//! undoing of it when set-up fails, so a failed start leaves nothing behind that it created.

use anyhow::{Context, bail};
use pgoutput_decoder::Lsn;
use replication::{CreateSlotOptions, ReplicationClient, SnapshotAction};
use tablesync::{CreatedSchema, TableDef, TargetOptions};
use tokio_postgres::Client;

use super::copy::{initial_copy, sync_sequences_once};
use super::options::MirrorOptions;
use super::registry::{self, MirrorRecord, MirrorState};
use crate::shutdown::Shutdown;

/// Makes sure the publication, slot, target tables and (if needed) the initial copy are in
/// place, and returns the mirror's record in state `streaming`.
///
/// A start that fails before its initial copy is committed removes what it created: the
/// slot, the publication, the target schema objects it created (types, sequences, tables), the
/// mirror's row and the `pgmirror` schema when this start created it. A start stopped by Ctrl-C during the copy keeps its
/// tables and its `copying` row (the next start empties them and copies again), and drops the
/// slot so the primary keeps no WAL for a stopped mirror.
pub(super) async fn prepare(
    opts: &MirrorOptions,
    shutdown: &Shutdown,
) -> anyhow::Result<MirrorRecord> {
    let mut target = pgconn::connect_sql(&opts.target).await.context("connecting to the target")?;
    let schema_existed = registry::schema_exists(&target).await.context("reading the target")?;
    let existing = registry::load(&target, &opts.name).await.context("reading pgmirror.mirrors")?;
    if let Some(rec) = &existing
        && rec.state == MirrorState::Streaming
    {
        return Ok(rec.clone());
    }
    let source = pgconn::connect_sql(&opts.source).await.context("connecting to the source")?;
    let mut undo = Undo { schema_created: !schema_existed, ..Undo::default() };
    let mut stop = shutdown.clone();
    // Creating the slot waits for the primary's running transactions to end, which may take
    // long: Ctrl-C must end any step.
    let prepared = tokio::select! {
        r = set_up(opts, shutdown, &mut target, &source, existing, &mut undo) => r,
        () = stop.wait() => Err(anyhow::anyhow!("stopped during set-up")),
    };
    if prepared.is_err() {
        if shutdown.is_triggered() && undo.copy_started {
            if let Some(slot) = &undo.slot {
                drop_slot(&opts.source, slot).await;
            }
            tracing::warn!(
                "initial copy interrupted: the slot was dropped, so the primary keeps no WAL \
                 for this mirror; the next `pgmirror mirror` empties the tables copied so far \
                 and starts the copy over"
            );
        } else {
            undo.run(opts, &mut target, &source).await;
            if shutdown.is_triggered() {
                tracing::warn!(
                    "set-up interrupted before the initial copy; removed what it had created"
                );
            }
        }
    }
    prepared
}

/// What a failing set-up created so far, to remove again.
#[derive(Debug, Default)]
struct Undo {
    /// The `pgmirror` schema did not exist before this start.
    schema_created: bool,
    /// This start wrote the mirror's row.
    record: Option<String>,
    /// This start created the slot.
    slot: Option<String>,
    /// This start created the publication.
    publication: Option<String>,
    /// Target types, sequences and tables this start created.
    schema: Option<CreatedSchema>,
    /// The initial copy began: a stop keeps the tables and the `copying` row.
    copy_started: bool,
}

impl Undo {
    /// Best effort: each step is logged when it fails, and the rest still runs.
    async fn run(&self, opts: &MirrorOptions, target: &mut Client, source: &Client) {
        if let Some(slot) = &self.slot {
            drop_slot(&opts.source, slot).await;
        }
        if let Some(publication) = &self.publication
            && let Err(e) = tablesync::drop_publication(source, publication).await
        {
            tracing::error!(error = %e, "could not drop publication {publication:?} that this start created; drop it by hand");
        }
        if let Some(schema) = &self.schema
            && let Err(e) = schema.drop_all(target).await
        {
            tracing::error!(error = %format!("{e:#}"), "could not drop the target tables, sequences and types that this start created");
        }
        if let Some(name) = &self.record
            && let Err(e) = registry::delete(target, name).await
        {
            tracing::error!(error = %e, "could not delete the mirror's row in pgmirror.mirrors");
        }
        if self.schema_created
            && let Err(e) = registry::drop_schema_if_unused(target).await
        {
            tracing::error!(error = %e, "could not drop the pgmirror schema that this start created");
        }
    }
}

async fn set_up(
    opts: &MirrorOptions,
    shutdown: &Shutdown,
    target: &mut Client,
    source: &Client,
    existing: Option<MirrorRecord>,
    undo: &mut Undo,
) -> anyhow::Result<MirrorRecord> {
    let slot = opts.slot_name();
    let publication = opts.publication_name();
    let tables = crate::selection::resolve_tables(source, &opts.tables).await?;
    check_replica_identity(&tables)?;
    if existing.is_none() {
        // A first start: what creating the slot needs, checked before anything is created.
        crate::preflight::ensure_source_ready(source, &slot).await?;
    }
    create_target_schema(target, source, &tables, undo).await?;
    registry::ensure_table(target).await.context("creating pgmirror.mirrors on the target")?;
    let mut repl = ReplicationClient::connect(&opts.source)
        .await
        .context("replication connection to the source")?;
    let system = repl.identify_system().await.context("IDENTIFY_SYSTEM")?;

    // A previous start died during its initial copy: undo it and copy again.
    let redo_copy = existing.is_some();
    let interrupted = existing.as_ref().filter(|r| r.created_slot).map(|r| r.slot.as_str());
    clear_interrupted_copy(&mut repl, interrupted, &slot, opts.initial_copy, "this target has")
        .await?;
    let created_publication = match existing.as_ref() {
        Some(rec) => rec.created_publication,
        None if opts.tables.publication.is_none() => {
            let status =
                crate::selection::create_publication(source, &publication, &tables).await?;
            let created = status == tablesync::PublicationStatus::Created;
            if created {
                undo.publication = Some(publication.clone());
            }
            created
        }
        None => false,
    };

    let mut record = MirrorRecord::copying(
        &opts.name,
        &slot,
        publication,
        created_publication,
        system.system_id,
    );

    if !opts.initial_copy {
        let exists = repl.slot_exists(&slot).await.context("looking up the slot")?;
        record.created_slot = !exists;
        registry::save(target, &record).await?;
        undo.record = existing.is_none().then(|| opts.name.clone());
        let point = if exists {
            None
        } else {
            let opts =
                CreateSlotOptions { snapshot: SnapshotAction::Nothing, ..Default::default() };
            let created = repl.create_slot(&slot, opts).await.context("creating the slot")?;
            undo.slot = Some(slot.clone());
            Some(created.consistent_point)
        };
        validate_foreign_keys(source, target, &tables).await?;
        registry::finish_copy(target, &opts.name, point.unwrap_or(Lsn::ZERO)).await?;
        record.state = MirrorState::Streaming;
        tracing::info!(slot = %slot, "slot ready; streaming without an initial copy");
        return Ok(record);
    }

    // Record first, then create: a crash between the two leaves a row whose slot may not
    // exist, which the next start handles; the opposite order could orphan a slot.
    registry::save(target, &record).await.context("recording the mirror on the target")?;
    undo.record = existing.is_none().then(|| opts.name.clone());
    let (created, snapshot) = create_exporting_slot(&mut repl, &slot).await?;
    undo.slot = Some(slot.clone());

    undo.copy_started = true;
    initial_copy(opts, &tables, &snapshot, redo_copy || opts.truncate_target, shutdown).await?;
    // The snapshot can go now: the copy is committed on the target.
    repl.close().await;
    validate_foreign_keys(source, target, &tables).await?;
    sync_sequences_once(opts, source, target, &tables).await;
    registry::finish_copy(target, &opts.name, created.consistent_point)
        .await
        .context("storing the initial progress")?;
    record.state = MirrorState::Streaming;
    tracing::info!("initial copy done");
    Ok(record)
}

/// Creates `slot` exporting its snapshot; returns it and the snapshot's name (valid while
/// `repl` stays open).
pub(super) async fn create_exporting_slot(
    repl: &mut ReplicationClient,
    slot: &str,
) -> anyhow::Result<(replication::SlotInfo, String)> {
    let created = repl
        .create_slot(
            slot,
            CreateSlotOptions { snapshot: SnapshotAction::Export, ..Default::default() },
        )
        .await
        .context("creating the slot")?;
    tracing::info!(slot = %slot, consistent_point = %created.consistent_point, "created slot");
    let Some(snapshot) = created.snapshot_name.clone() else {
        bail!("the source did not export a snapshot for slot {slot:?}");
    };
    Ok((created, snapshot))
}

/// Creates what the mirrored tables need on the target and the target lacks (see
/// [`tablesync::plan_target_schema`]), in one target transaction, after checking the tables it
/// has. Nothing is created when anything stands in the way.
async fn create_target_schema(
    target: &mut Client,
    source: &Client,
    tables: &[TableDef],
    undo: &mut Undo,
) -> anyhow::Result<()> {
    let plan = tablesync::plan_target_schema(source, target, tables)
        .await
        .context("reading what the mirrored tables need on the target")?;
    let existing = TargetOptions { create_missing: false };
    for table in tables.iter().filter(|t| !plan.creates_table(&t.qualified_name())) {
        tablesync::ensure_target_table(target, table, &existing).await?;
    }
    if plan.problems.len() > 1 {
        tracing::error!("`pgmirror check` lists each thing that stands in the way, with its fix");
    }
    for warning in &plan.warnings {
        tracing::warn!("{warning}");
    }
    for skipped in &plan.not_created {
        // Triggers are left out by design; the rest deserves a look.
        if skipped.kind == tablesync::ObjectKind::Trigger {
            tracing::info!(reason = %skipped.reason, "not created on the target: {}", skipped.name);
        } else {
            tracing::warn!(reason = %skipped.reason, "not created on the target: {}", skipped.name);
        }
    }
    let created = plan.create(target).await?;
    if !created.is_empty() {
        let tables = plan.created_tables().len();
        tracing::info!(
            objects = plan.planned.len(),
            tables,
            "created the mirrored tables' schema on the target"
        );
        undo.schema = Some(created);
    }
    Ok(())
}

/// [`create_target_schema`] for a set-up that does not undo what it created (a shard's).
pub(super) async fn create_schema(
    target: &mut Client,
    source: &Client,
    tables: &[TableDef],
) -> anyhow::Result<()> {
    create_target_schema(target, source, tables, &mut Undo::default()).await
}

/// Validates the foreign keys created NOT VALID for the copy; one that the copied rows
/// violate (rows a row filter separated from their parents) stays NOT VALID, with a warning.
async fn validate_foreign_keys(
    source: &Client,
    target: &Client,
    tables: &[TableDef],
) -> anyhow::Result<()> {
    let failures = tablesync::validate_foreign_keys(source, target, tables)
        .await
        .context("validating foreign keys after the initial copy")?;
    for failure in failures {
        tracing::warn!("{failure}");
    }
    Ok(())
}

/// Drops a slot that a set-up created, on a fresh replication connection (the set-up's own
/// may be what failed).
async fn drop_slot(source: &pgconn::ConnConfig, slot: &str) {
    let dropped = async {
        let mut repl = ReplicationClient::connect(source).await?;
        repl.drop_slot(slot, true).await
    };
    if let Err(e) = dropped.await {
        tracing::error!(slot = %slot, error = %e, "could not drop the slot; drop it by hand with SELECT pg_drop_replication_slot('{slot}')");
    }
}

/// Clears what an interrupted initial copy left on the source before the copy starts over: the
/// slot it created (`interrupted`; a slot the mirror was given is kept). Then, when a fresh copy
/// is due, refuses a slot named `slot` that no record of the mirror covers (`holder_has`: who
/// lacks the record, "this target has"). Returns whether `slot` exists now.
pub(super) async fn clear_interrupted_copy(
    repl: &mut ReplicationClient,
    interrupted: Option<&str>,
    slot: &str,
    initial_copy: bool,
    holder_has: &str,
) -> anyhow::Result<bool> {
    if let Some(old) = interrupted
        && repl.slot_exists(old).await.context("looking up the slot")?
    {
        tracing::info!(slot = %old, "previous initial copy was interrupted; starting it over");
        repl.drop_slot(old, true).await.context("dropping the unfinished copy's slot")?;
    }
    let exists = repl.slot_exists(slot).await.context("looking up the slot")?;
    if exists && initial_copy {
        bail!(
            "slot {slot:?} already exists on the source but {holder_has} no record of it; drop \
             it (SELECT pg_drop_replication_slot('{slot}')) for a fresh initial copy, or pass \
             --no-initial-copy to stream from where it stands"
        );
    }
    Ok(exists)
}

pub(super) fn check_replica_identity(tables: &[TableDef]) -> anyhow::Result<()> {
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
