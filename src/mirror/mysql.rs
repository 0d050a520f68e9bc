//! `pgmirror mirror` into MySQL/MariaDB: map and check the tables, copy them under the slot's
//! snapshot (several at a time), then stream for ever, retrying through outages and resuming
//! from the progress row in `pgmirror_progress`.
//!
//! The mirror's row says where it stands:
//! - no row: nothing was set up (or a failed set-up was undone);
//! - `copying`: the copy did not finish; the next start drops the slot, empties the tables and
//!   copies again;
//! - `streaming`: stream from its `lsn`.

pub mod check;
pub mod ops;
pub mod shards;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use applier::mysql::progress::{self, MirrorRow, MirrorState};
use applier::mysql::schema::{self, MySqlTable, SourceTable};
use applier::mysql::session::{self, MySqlUrl};
use applier::mysql::{copy, quote};
use applier::shard::ShardLayout;
use applier::{Applier, ApplierConfig, ApplyError, MySqlTarget, MySqlTargetConfig, Target};
use futures_util::future::BoxFuture;
use pgconn::ConnConfig;
use pgoutput_decoder::Lsn;
use replication::{
    CreateSlotOptions, ReplicationClient, SnapshotAction, StartReplication, Streaming,
};
use tablesync::TableDef;

use super::wait_for_release;
use crate::metrics::Metrics;
use crate::pump::pump;
use crate::retry::{Backoff, is_transient};
use crate::selection::TableSelection;
use crate::shutdown::Shutdown;

/// Everything a MySQL mirror needs to run.
#[derive(Debug, Clone)]
pub struct MySqlMirrorOptions {
    /// The mirror's name: its progress row; the default slot and publication names derive
    /// from it.
    pub name: String,
    /// The primary.
    pub source: ConnConfig,
    /// The MySQL/MariaDB database.
    pub target: MySqlUrl,
    /// The tables, as a publication or a list.
    pub tables: TableSelection,
    /// Slot name (default `pgmirror_<name>`).
    pub slot: Option<String>,
    /// Copy existing rows before streaming.
    pub initial_copy: bool,
    /// Empty non-empty target tables before the initial copy instead of failing.
    pub truncate_target: bool,
    /// Tables copied at the same time.
    pub copy_parallelism: usize,
    /// Settings of the apply loop.
    pub applier: ApplierConfig,
    /// Where the mirror reports what it does.
    pub metrics: Arc<Metrics>,
    /// The shards, in order (shard `i` holds hash partition `REMAINDER i` of each sharded
    /// table); empty: the one database `target`.
    pub shards: Vec<MySqlUrl>,
    /// The sharded tables and their keys (with `shards`).
    pub layout: ShardLayout,
}

impl MySqlMirrorOptions {
    /// Options with the defaults for everything but the essentials.
    pub fn new(
        name: impl Into<String>,
        source: ConnConfig,
        target: MySqlUrl,
        tables: TableSelection,
    ) -> Self {
        MySqlMirrorOptions {
            name: name.into(),
            source,
            target,
            tables,
            slot: None,
            initial_copy: true,
            truncate_target: false,
            copy_parallelism: 2,
            applier: ApplierConfig::default(),
            metrics: Metrics::new(),
            shards: Vec::new(),
            layout: ShardLayout::new(),
        }
    }

    /// The slot's name.
    pub fn slot_name(&self) -> String {
        self.slot.clone().unwrap_or_else(|| format!("pgmirror_{}", self.name))
    }

    fn publication_name(&self) -> String {
        self.tables.publication.clone().unwrap_or_else(|| format!("pgmirror_{}", self.name))
    }

    /// The databases written: the shards, or the one target.
    pub fn targets(&self) -> Vec<MySqlUrl> {
        if self.shards.is_empty() { vec![self.target.clone()] } else { self.shards.clone() }
    }
}

/// Ends a streaming session so the next one starts at once from the stored progress.
#[derive(Debug, thiserror::Error)]
#[error("restarting the stream: {0}")]
struct Restart(&'static str);

/// Whether `e` is a fault a new session may not meet again (either server down or restarting).
fn transient(e: &anyhow::Error) -> bool {
    is_transient(e.as_ref())
        || e.chain().any(|c| {
            let apply = c.downcast_ref::<ApplyError>().or_else(|| {
                match c.downcast_ref::<crate::pump::PumpError>() {
                    Some(crate::pump::PumpError::Apply(a)) => Some(a),
                    _ => None,
                }
            });
            apply.is_some_and(ApplyError::is_mysql_transient)
        })
}

/// Runs a MySQL mirror until `shutdown` is triggered or a fault that retrying cannot fix.
///
/// # Errors
/// Faults that repeat: bad configuration, names or types MySQL cannot hold, a value it cannot
/// hold exactly, a lost slot; an unreachable server at the first contact.
/// Into one database: `opts.shards` must be empty ([`shards::run`] runs a sharded mirror).
pub async fn run(opts: &MySqlMirrorOptions, shutdown: &mut Shutdown) -> anyhow::Result<()> {
    if !opts.shards.is_empty() {
        bail!("a mirror into MySQL shards runs with mirror::mysql::shards::run");
    }
    run_with(opts, shutdown, |opts, shutdown, connected, backoff| {
        Box::pin(session(opts, shutdown, connected, backoff))
    })
    .await
}

/// One session of a mirror: connect, set up, stream until stopped or disconnected; `bool`: set
/// once the servers answered.
type Session = for<'a> fn(
    &'a MySqlMirrorOptions,
    &'a mut Shutdown,
    &'a mut bool,
    &'a mut Backoff,
) -> BoxFuture<'a, anyhow::Result<()>>;

/// Runs `session` after `session`, retrying through outages, until `shutdown` or a fault that
/// retrying cannot fix.
async fn run_with(
    opts: &MySqlMirrorOptions,
    shutdown: &mut Shutdown,
    session: Session,
) -> anyhow::Result<()> {
    let mut backoff = Backoff::default();
    let mut connected = false;
    loop {
        let result = session(opts, shutdown, &mut connected, &mut backoff).await;
        match result {
            Ok(()) => return Ok(()),
            Err(e) if shutdown.is_triggered() => {
                tracing::info!(error = %format!("{e:#}"), "stopped");
                return Ok(());
            }
            Err(e) if e.downcast_ref::<Restart>().is_some() => tracing::info!("{e}"),
            Err(e) if connected && transient(&e) => {
                opts.metrics.error();
                opts.metrics.reconnected();
                let delay = backoff.next_delay();
                tracing::warn!(error = %format!("{e:#}"), retry_in = ?delay, "connection lost; reconnecting");
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

/// Reads the source's tables and maps them to MySQL ones (names checked).
///
/// # Errors
/// Tables that cannot be resolved, names MySQL cannot take, catalog errors.
pub async fn describe_tables(
    source: &tokio_postgres::Client,
    selection: &TableSelection,
) -> anyhow::Result<(Vec<TableDef>, Vec<MySqlTable>)> {
    let defs = crate::selection::resolve_tables(source, selection).await?;
    let sources: Vec<SourceTable> = defs
        .iter()
        .map(|t| SourceTable {
            schema: t.schema.clone(),
            name: t.name.clone(),
            oid: t.oid,
            key: if t.primary_key.is_empty() {
                t.identity_columns.clone()
            } else {
                t.primary_key.clone()
            },
        })
        .collect();
    let tables = schema::describe(source, &sources).await?;
    Ok((defs, tables))
}

/// One session: connect, set up what is missing, stream until stopped or disconnected.
async fn session(
    opts: &MySqlMirrorOptions,
    shutdown: &mut Shutdown,
    connected: &mut bool,
    backoff: &mut Backoff,
) -> anyhow::Result<()> {
    let (mut lock, _) =
        session::connect(opts.target.options()).await.context("connecting to the target")?;
    let source = pgconn::connect_sql(&opts.source).await.context("connecting to the source")?;
    *connected = true;
    // The server waits up to 10 s for a killed run's session to end.
    let locked = take_lock(&mut lock, &opts.name).await?;
    if locked != Some(1) {
        bail!(
            "another pgmirror is already running mirror {:?} on this target; stop it first (or \
             give this one another --name)",
            opts.name
        );
    }
    let (defs, tables) = describe_tables(&source, &opts.tables).await?;
    let (mut conn, server) = session::connect(opts.target.options()).await?;
    progress::ensure_table(&mut conn).await?;
    let row = match progress::load(&mut conn, &opts.name).await? {
        Some(r) if r.state == MirrorState::Streaming => r,
        existing => {
            let mut stop = shutdown.clone();
            tokio::select! {
                r = set_up(opts, shutdown, &source, &mut conn, &server, &defs, &tables, existing) => r?,
                () = stop.wait() => bail!("stopped during set-up"),
            }
        }
    };
    drop(source);
    let created = schema::ensure_tables(&mut conn, &tables, server.collation()).await?;
    if !created.is_empty() {
        bail!(
            "MySQL tables {created:?} were missing on the target although mirror {:?} had copied \
             them (dropped by hand?); `pgmirror drop` the mirror and set it up again",
            opts.name
        );
    }
    stream(opts, &row, conn, server, tables, shutdown, backoff).await
}

/// Takes the mirror's lock (`GET_LOCK`, held by this connection); `Some(1)` when taken.
async fn take_lock(lock: &mut sqlx::MySqlConnection, name: &str) -> anyhow::Result<Option<i64>> {
    sqlx::query_scalar("SELECT GET_LOCK(CONCAT('pgmirror:', ?), 10)")
        .bind(name)
        .fetch_one(lock)
        .await
        .context("taking the mirror's lock on the target")
}

#[allow(clippy::too_many_arguments)]
async fn set_up(
    opts: &MySqlMirrorOptions,
    shutdown: &Shutdown,
    source: &tokio_postgres::Client,
    conn: &mut sqlx::MySqlConnection,
    server: &session::ServerInfo,
    defs: &[TableDef],
    tables: &[MySqlTable],
    existing: Option<MirrorRow>,
) -> anyhow::Result<MirrorRow> {
    let slot = opts.slot_name();
    let publication = opts.publication_name();
    if existing.is_none() {
        crate::preflight::ensure_source_ready(source, &slot).await?;
    }
    let created = schema::ensure_tables(conn, tables, server.collation()).await?;
    if !created.is_empty() {
        tracing::info!(tables = ?created, "created the mirrored tables on the target");
    }
    let mut repl = ReplicationClient::connect(&opts.source)
        .await
        .context("replication connection to the source")?;
    let system = repl.identify_system().await.context("IDENTIFY_SYSTEM")?;
    let redo = existing.is_some();
    let interrupted = existing.as_ref().map(|r| r.slot.as_str());
    let slot_exists = super::prepare::clear_interrupted_copy(
        &mut repl,
        interrupted,
        &slot,
        opts.initial_copy,
        "this target has",
    )
    .await?;
    if opts.initial_copy {
        ready_for_copy(conn, tables, redo || opts.truncate_target, "").await?;
    }
    let created_publication = match &existing {
        Some(rec) => rec.created_publication,
        None if opts.tables.publication.is_none() => {
            crate::selection::create_publication(source, &publication, defs).await?
                == tablesync::PublicationStatus::Created
        }
        None => false,
    };
    let system_id = system.system_id.to_string();
    let mut row =
        copying_row(opts, &publication, created_publication, &system_id, existing.as_ref());
    plan_stats_pauses(conn, &mut row, tables, opts.initial_copy).await?;
    if !opts.initial_copy && slot_exists {
        // Streams from where the slot stands (no stored progress: everything it sends). Stored
        // as streaming at once: a `copying` row would make the next start drop the given slot.
        repl.close().await;
        row.state = MirrorState::Streaming;
        progress::save(conn, &row).await.context("storing the initial progress")?;
        tracing::info!(slot = %slot, "streaming from the existing slot, without an initial copy");
        return Ok(row);
    }
    // Stored before the tables are altered, so that a crash leaves a record of what to undo.
    progress::save(conn, &row).await?;
    copy::pause_stats_recalc(conn, &row.stats_paused).await?;
    let consistent_point =
        create_slot_and_copy(repl, source, &slot, opts.initial_copy, shutdown, |name| async move {
            copy_all(opts, defs, tables, &name).await
        })
        .await?;
    if opts.initial_copy {
        end_stats_pauses(conn, &mut row).await?;
        tracing::info!("initial copy done");
    }
    row.state = MirrorState::Streaming;
    row.lsn = Some(consistent_point);
    progress::save(conn, &row).await.context("storing the initial progress")?;
    Ok(row)
}

/// Creates `slot`, exporting its snapshot when `initial_copy`, and then runs `copy` under that
/// snapshot (its name); a copy that fails or is stopped drops the slot again, as the next start
/// copies under a new one and this one would only keep WAL. Closes the replication connection
/// (the snapshot lives until then) and returns the slot's consistent point.
async fn create_slot_and_copy<Fut>(
    mut repl: ReplicationClient,
    source: &tokio_postgres::Client,
    slot: &str,
    initial_copy: bool,
    shutdown: &Shutdown,
    copy: impl FnOnce(String) -> Fut,
) -> anyhow::Result<Lsn>
where
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let snapshot = if initial_copy { SnapshotAction::Export } else { SnapshotAction::Nothing };
    let created = repl
        .create_slot(slot, CreateSlotOptions { snapshot, ..Default::default() })
        .await
        .context("creating the slot")?;
    tracing::info!(slot = %slot, consistent_point = %created.consistent_point, "created slot");
    if initial_copy {
        let Some(name) = created.snapshot_name.clone() else {
            bail!("the source did not export a snapshot for slot {slot:?}");
        };
        let mut stop = shutdown.clone();
        let copied = tokio::select! {
            r = copy(name) => r,
            () = stop.wait() => Err(anyhow::anyhow!("stopped during the initial copy")),
        };
        if let Err(e) = copied {
            repl.close().await;
            drop_slot(source, slot).await;
            return Err(e);
        }
    }
    repl.close().await;
    Ok(created.consistent_point)
}

/// Before an initial copy into one database (`on`: which, for messages): empties the tables
/// (`empty`: redoing an interrupted copy, or `--truncate-target`), or refuses tables that
/// already hold rows.
async fn ready_for_copy(
    conn: &mut sqlx::MySqlConnection,
    tables: &[MySqlTable],
    empty: bool,
    on: &str,
) -> anyhow::Result<()> {
    if empty {
        copy::empty_tables(conn, tables).await?;
        return Ok(());
    }
    let full = copy::non_empty_tables(conn, tables).await?;
    if !full.is_empty() {
        let names: Vec<String> = full.iter().map(|t| quote(t)).collect();
        bail!(
            "MySQL tables {}{on} already hold rows; empty them, or run `pgmirror mirror` with \
             --truncate-target to have them emptied",
            names.join(", ")
        );
    }
    Ok(())
}

/// The row of a mirror being set up (`copying`), with the statistics pauses of an interrupted
/// copy (`existing`): ours to end, though the tables now say 0.
fn copying_row(
    opts: &MySqlMirrorOptions,
    publication: &str,
    created_publication: bool,
    system_id: &str,
    existing: Option<&MirrorRow>,
) -> MirrorRow {
    MirrorRow {
        name: opts.name.clone(),
        state: MirrorState::Copying,
        slot: opts.slot_name(),
        publication: publication.to_owned(),
        created_publication,
        source_system_id: Some(system_id.to_owned()),
        lsn: None,
        stats_paused: existing.map(|r| r.stats_paused.clone()).unwrap_or_default(),
    }
}

/// The statistics pauses `row` records for this start: with an initial copy, also every copied
/// table that has the server's default (see [`copy::pause_stats_recalc`]); without one, none
/// (an interrupted copy's are ended here).
async fn plan_stats_pauses(
    conn: &mut sqlx::MySqlConnection,
    row: &mut MirrorRow,
    tables: &[MySqlTable],
    initial_copy: bool,
) -> anyhow::Result<()> {
    if !initial_copy {
        return Ok(end_stats_pauses(conn, row).await?);
    }
    for t in copy::default_stats_recalc(conn, tables).await? {
        if !row.stats_paused.contains(&t) {
            row.stats_paused.push(t);
        }
    }
    Ok(())
}

/// Gives the tables of `row`'s statistics pauses their recalculation back.
async fn end_stats_pauses(
    conn: &mut sqlx::MySqlConnection,
    row: &mut MirrorRow,
) -> Result<(), applier::ApplyError> {
    copy::resume_stats_recalc(conn, &row.stats_paused).await?;
    row.stats_paused.clear();
    Ok(())
}

/// Drops `slot`, waiting for the walsender that created it to let it go; logs a failure.
async fn drop_slot(source: &tokio_postgres::Client, slot: &str) {
    let dropped = wait_for_release(|| async {
        let dropped = source
            .execute(
                "SELECT pg_catalog.pg_drop_replication_slot(slot_name) \
                 FROM pg_catalog.pg_replication_slots WHERE slot_name = $1 AND NOT active",
                &[&slot],
            )
            .await
            .context("dropping the slot")?;
        Ok(dropped == 1)
    })
    .await;
    if !matches!(dropped, Ok(true)) {
        tracing::error!(slot = %slot, "could not drop the slot of the failed copy; drop it by hand with SELECT pg_drop_replication_slot('{slot}')");
    }
}

/// Copies the tables, `copy_parallelism` at a time, each on its own connections.
async fn copy_all(
    opts: &MySqlMirrorOptions,
    defs: &[TableDef],
    tables: &[MySqlTable],
    snapshot: &str,
) -> anyhow::Result<()> {
    tracing::info!(tables = tables.len(), "copying tables under the slot's snapshot");
    let started = std::time::Instant::now();
    let permits = Arc::new(tokio::sync::Semaphore::new(opts.copy_parallelism.max(1)));
    let mut jobs = tokio::task::JoinSet::new();
    for (t, d) in tables.iter().zip(defs) {
        let (opts, table, filter) = (opts.clone(), Arc::new(t.clone()), d.row_filter.clone());
        let (snapshot, permits) = (snapshot.to_owned(), permits.clone());
        jobs.spawn(async move {
            let _permit = permits.acquire_owned().await?;
            let source = pgconn::connect_sql(&opts.source).await?;
            let (mut conn, server) = session::connect(opts.target.options()).await?;
            let cfg = MySqlTargetConfig::new(opts.name.clone());
            let rows = copy::copy_table(
                &source,
                &mut conn,
                server.collation(),
                &table,
                Some(&snapshot),
                filter.as_deref(),
                &cfg,
            )
            .await?;
            opts.metrics.copied(rows, 0);
            tracing::info!(table = %table.source_display(), rows, "copied");
            anyhow::Ok(rows)
        });
    }
    let mut rows = 0;
    while let Some(r) = jobs.join_next().await {
        rows += r.context("a copy task failed")??;
    }
    tracing::info!(rows, seconds = started.elapsed().as_secs_f64(), "copied tables");
    Ok(())
}

/// Streams from the stored progress into the target until stopped or disconnected.
async fn stream(
    opts: &MySqlMirrorOptions,
    row: &MirrorRow,
    conn: sqlx::MySqlConnection,
    server: session::ServerInfo,
    tables: Vec<MySqlTable>,
    shutdown: &mut Shutdown,
    backoff: &mut Backoff,
) -> anyhow::Result<()> {
    let target = MySqlTarget::new(conn, server, tables, MySqlTargetConfig::new(opts.name.clone()));
    stream_into(opts, row, target, shutdown, backoff).await
}

/// Streams from the stored progress into `target` (one database or its shards) until stopped
/// or disconnected.
async fn stream_into<T: Target + Send>(
    opts: &MySqlMirrorOptions,
    row: &MirrorRow,
    target: T,
    shutdown: &mut Shutdown,
    backoff: &mut Backoff,
) -> anyhow::Result<()> {
    let mut applier = Applier::new(target, opts.applier.clone()).await?;
    let progress = applier.start_progress().unwrap_or(Lsn::ZERO);
    let mut repl = ReplicationClient::connect(&opts.source)
        .await
        .context("replication connection to the source")?;
    let system = repl.identify_system().await.context("IDENTIFY_SYSTEM")?;
    if let Some(expected) = &row.source_system_id
        && *expected != system.system_id.to_string()
    {
        bail!(
            "the source is a different PostgreSQL cluster (system id {}) than the one this \
             mirror was set up from ({expected}); point --source at the original primary, or \
             `pgmirror drop` this mirror and set it up again",
            system.system_id
        );
    }
    super::require_slot(&mut repl, &row.slot, progress).await?;
    let source = pgconn::connect_sql(&opts.source).await.context("connecting to the source")?;
    super::wait_for_slot_release(&source, &row.slot).await?;
    let mut start = StartReplication::new(row.slot.clone(), [row.publication.clone()]);
    start.start_lsn = progress;
    // Text values: what the type mapping converts, exactly as the source prints them.
    start.binary = false;
    start.streaming = if repl.server_version() >= 140_000 { Streaming::On } else { Streaming::Off };
    start.status_interval = Duration::from_secs(1);
    let stream = super::start_replication(repl, start, progress).await?;
    tracing::info!(slot = %row.slot, from = %progress, "streaming into MySQL");
    let connected_at = std::time::Instant::now();
    let result = pump(&mut applier, stream, shutdown, &opts.metrics, system.xlogpos).await;
    if connected_at.elapsed() > Duration::from_secs(10) {
        backoff.reset();
    }
    match result {
        Ok(()) => {
            let stats = applier.stats();
            tracing::info!(
                applied_txns = stats.applied_txns,
                changes = stats.changes,
                "stopped cleanly"
            );
            Ok(())
        }
        Err(crate::pump::PumpError::Apply(ApplyError::SchemaChanged { schema, table, change })) => {
            drop(applier);
            repair(opts, &source, &schema, &table, &change).await?;
            Err(Restart("the target was repaired after a schema change on the source").into())
        }
        Err(e) => Err(e.into()),
    }
}

/// Adds to the MySQL table the columns the source's table gained.
async fn repair(
    opts: &MySqlMirrorOptions,
    source: &tokio_postgres::Client,
    schema_name: &str,
    table: &str,
    change: &applier::SchemaChange,
) -> anyhow::Result<()> {
    let applier::SchemaChange::ColumnsAdded(added) = change else {
        bail!(
            "table {}.{} changed on the source ({change}); a MySQL mirror does not follow that \
             change: `pgmirror drop` the mirror and set it up again",
            pgconn::quote_ident(schema_name),
            pgconn::quote_ident(table)
        );
    };
    let (_, tables) = describe_tables(source, &opts.tables).await?;
    let Some(t) = tables.iter().find(|t| t.schema == schema_name && t.name == table) else {
        bail!("table {schema_name}.{table} is no longer mirrored");
    };
    for target in opts.targets() {
        let (mut conn, _) = session::connect(target.options()).await?;
        for name in added {
            let Some(i) = t.column(name) else { continue };
            let c = &t.columns[i];
            let sql =
                format!("ALTER TABLE {} ADD COLUMN {} {}", t.quoted(), quote(&c.name), c.ty.sql);
            // A shard that already has it (added before a crash) is left as it is.
            let exists: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND COLUMN_NAME = ?",
            )
            .bind(&t.target)
            .bind(&c.name)
            .fetch_one(&mut conn)
            .await
            .with_context(|| format!("looking up the columns of {}", t.quoted()))?;
            if exists > 0 {
                continue;
            }
            sqlx::Executor::execute(&mut conn, sql.as_str())
                .await
                .with_context(|| format!("adding column {} to {}", quote(&c.name), t.quoted()))?;
            tracing::info!(table = %t.quoted(), column = %c.name, target = %target, "added a column the source gained");
        }
    }
    Ok(())
}
