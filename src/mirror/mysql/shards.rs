//! A MySQL/MariaDB mirror into N shards: the tables with a shard key split as PostgreSQL's hash
//! partitioning would (`applier::shard`), the others whole on every shard.
//!
//! Each shard holds the mirror's row in its own `pgmirror_progress` and its own progress, so
//! set-up follows the single-database mirror: a start finds every shard `streaming` and
//! streams, or (a shard without a row, or `copying`) drops the unfinished copy's slot and
//! copies again. The initial copy reads each table once under the slot's snapshot and routes
//! its rows, every shard inserting at once. While streaming, the slot is confirmed only up to
//! what every shard made durable; rows that move between shards are kept in each shard's
//! `pgmirror_shard_moves` until every shard has passed the move.

use anyhow::{Context, bail};
use applier::mysql::progress::{self, MirrorRow, MirrorState};
use applier::mysql::schema::{self, MySqlTable};
use applier::mysql::session::{self, MySqlUrl, ServerInfo};
use applier::mysql::verify::{Part, TableDiff, compare_table_part};
use applier::mysql::{copy, take};
use applier::shard::{KeyColumn, KeyType, ShardLayout, ShardedTarget};
use applier::{MySqlTarget, MySqlTargetConfig};
use futures_util::future::{BoxFuture, try_join_all};
use replication::ReplicationClient;
use sqlx::MySqlConnection;
use tablesync::TableDef;

use super::{
    MySqlMirrorOptions, copying_row, create_slot_and_copy, describe_tables, end_stats_pauses,
    plan_stats_pauses, ready_for_copy, stream_into, take_lock,
};
use crate::retry::Backoff;
use crate::shutdown::Shutdown;

/// Connects to every shard, in order.
///
/// # Errors
/// A shard that cannot be reached or set up (named by its position).
pub async fn connect_all(
    shards: &[MySqlUrl],
) -> anyhow::Result<Vec<(MySqlConnection, ServerInfo)>> {
    try_join_all(shards.iter().enumerate().map(|(i, url)| async move {
        session::connect(url.options()).await.with_context(|| format!("connecting to shard {i}"))
    }))
    .await
}

/// Runs a mirror into the MySQL shards `opts.shards` until `shutdown` is triggered or a fault
/// that retrying cannot fix, as [`super::run`] does into one database.
///
/// # Errors
/// As [`super::run`]; a shard key that cannot be routed.
pub async fn run(opts: &MySqlMirrorOptions, shutdown: &mut Shutdown) -> anyhow::Result<()> {
    super::run_with(opts, shutdown, session).await
}

/// One session: connect, set up what is missing, stream into every shard until stopped or
/// disconnected.
fn session<'a>(
    opts: &'a MySqlMirrorOptions,
    shutdown: &'a mut Shutdown,
    connected: &'a mut bool,
    backoff: &'a mut Backoff,
) -> BoxFuture<'a, anyhow::Result<()>> {
    Box::pin(async move {
        let mut locks = connect_all(&opts.shards).await?;
        let source = pgconn::connect_sql(&opts.source).await.context("connecting to the source")?;
        *connected = true;
        for (i, (lock, _)) in locks.iter_mut().enumerate() {
            // Locks are the server's, not the database's: shards sharing a server need one each.
            // The server waits up to 10 s for a killed run's session to end.
            let name = if i == 0 { opts.name.clone() } else { format!("{}/shard{i}", opts.name) };
            if take_lock(lock, &name).await? != Some(1) {
                bail!(
                    "another pgmirror is already running mirror {:?} on shard {i}; stop it first \
                     (or give this one another --name)",
                    opts.name
                );
            }
        }
        opts.layout.check(&source).await?;
        let (defs, tables) = describe_tables(&source, &opts.tables).await?;
        let keys = routed_keys(&opts.layout, &tables)?;
        let mut shards = connect_all(&opts.shards).await?;
        let mut rows = Vec::with_capacity(shards.len());
        for (conn, _) in &mut shards {
            progress::ensure_table(conn).await?;
            take::ensure_moves_table(conn).await?;
            rows.push(progress::load(conn, &opts.name).await?);
        }
        let row = match rows.first() {
            Some(Some(first))
                if rows
                    .iter()
                    .all(|r| r.as_ref().is_some_and(|r| r.state == MirrorState::Streaming)) =>
            {
                first.clone()
            }
            _ => {
                let mut stop = shutdown.clone();
                tokio::select! {
                    r = set_up(opts, shutdown, &source, &mut shards, &defs, &tables, &keys, rows) => r?,
                    () = stop.wait() => bail!("stopped during set-up"),
                }
            }
        };
        drop(source);
        let mut targets = Vec::with_capacity(shards.len());
        for (i, (mut conn, server)) in shards.into_iter().enumerate() {
            let created = schema::ensure_tables(&mut conn, &tables, server.collation()).await?;
            if !created.is_empty() {
                bail!(
                    "MySQL tables {created:?} were missing on shard {i} although mirror {:?} had \
                     copied them (dropped by hand?); `pgmirror drop` the mirror and set it up again",
                    opts.name
                );
            }
            let cfg = MySqlTargetConfig::new(opts.name.clone());
            targets.push(MySqlTarget::new(conn, server, tables.clone(), cfg));
        }
        let target = ShardedTarget::new(targets, opts.layout.clone());
        let result = stream_into(opts, &row, target, shutdown, backoff).await;
        drop(locks);
        result
    })
}

/// Each table's shard key, by column index (`None`: a reference table); a `--shard-key` that
/// names a table outside the mirror is refused.
///
/// # Errors
/// A shard key of a table not mirrored, of a column it lacks, or of a type without a hash.
pub fn routed_keys(
    layout: &ShardLayout,
    tables: &[MySqlTable],
) -> anyhow::Result<Vec<Option<Vec<KeyColumn>>>> {
    for (schema, table, _) in layout.tables() {
        if !tables.iter().any(|t| t.schema == schema && t.name == table) {
            bail!(
                "--shard-key names {}.{}, which is not among the mirrored tables",
                pgconn::quote_ident(schema),
                pgconn::quote_ident(table)
            );
        }
    }
    tables
        .iter()
        .map(|t| {
            let Some(columns) = layout.key_of(&t.schema, &t.name) else { return Ok(None) };
            let mut key = Vec::with_capacity(columns.len());
            for name in columns {
                let shown = || format!("shard key column {name:?} of {}", t.source_display());
                let index = t.column(name).with_context(shown)?;
                let ty = KeyType::from_oid(t.columns[index].source.oid).with_context(shown)?;
                key.push(KeyColumn { index, ty });
            }
            Ok(Some(key))
        })
        .collect()
}

/// Set-up on every shard, as the single-database mirror's: tables created or checked, an
/// interrupted copy's slot dropped, the slot created, the tables copied and routed; returns
/// the mirror's row once every shard streams.
#[allow(clippy::too_many_arguments)]
async fn set_up(
    opts: &MySqlMirrorOptions,
    shutdown: &Shutdown,
    source: &tokio_postgres::Client,
    shards: &mut [(MySqlConnection, ServerInfo)],
    defs: &[TableDef],
    tables: &[MySqlTable],
    keys: &[Option<Vec<KeyColumn>>],
    existing: Vec<Option<MirrorRow>>,
) -> anyhow::Result<MirrorRow> {
    let slot = opts.slot_name();
    let publication = opts.publication_name();
    let any = existing.iter().flatten().next().cloned();
    if any.is_none() {
        crate::preflight::ensure_source_ready(source, &slot).await?;
    }
    for (i, (conn, server)) in shards.iter_mut().enumerate() {
        let created = schema::ensure_tables(conn, tables, server.collation())
            .await
            .with_context(|| format!("shard {i}"))?;
        if !created.is_empty() {
            tracing::info!(shard = i, tables = ?created, "created the mirrored tables");
        }
    }
    let mut repl = ReplicationClient::connect(&opts.source)
        .await
        .context("replication connection to the source")?;
    let system = repl.identify_system().await.context("IDENTIFY_SYSTEM")?;
    let interrupted = any.as_ref().map(|r| r.slot.as_str());
    let slot_exists = super::super::prepare::clear_interrupted_copy(
        &mut repl,
        interrupted,
        &slot,
        opts.initial_copy,
        "the shards have",
    )
    .await?;
    if opts.initial_copy {
        let empty = any.is_some() || opts.truncate_target;
        for (i, (conn, _)) in shards.iter_mut().enumerate() {
            ready_for_copy(conn, tables, empty, &format!(" of shard {i}")).await?;
        }
    }
    let created_publication = match &any {
        Some(rec) => rec.created_publication,
        None if opts.tables.publication.is_none() => {
            crate::selection::create_publication(source, &publication, defs).await?
                == tablesync::PublicationStatus::Created
        }
        None => false,
    };
    let system_id = system.system_id.to_string();
    let mut rows: Vec<MirrorRow> = existing
        .iter()
        .map(|e| copying_row(opts, &publication, created_publication, &system_id, e.as_ref()))
        .collect();
    for ((conn, _), row) in shards.iter_mut().zip(&mut rows) {
        plan_stats_pauses(conn, row, tables, opts.initial_copy).await?;
        if !opts.initial_copy && slot_exists {
            row.state = MirrorState::Streaming;
        }
        // Stored before the tables are altered, so that a crash leaves a record of what to undo.
        progress::save(conn, row).await.context("recording the mirror on a shard")?;
        copy::pause_stats_recalc(conn, &row.stats_paused).await?;
    }
    if !opts.initial_copy && slot_exists {
        // Streams from where the slot stands, as the single-database mirror does.
        repl.close().await;
        tracing::info!(slot = %slot, "streaming from the existing slot, without an initial copy");
        return Ok(rows.swap_remove(0));
    }
    let consistent_point =
        create_slot_and_copy(repl, source, &slot, opts.initial_copy, shutdown, |name| async move {
            copy_routed(opts, defs, tables, keys, &name).await
        })
        .await?;
    if opts.initial_copy {
        tracing::info!(shards = shards.len(), "initial copy done");
    }
    for ((conn, _), row) in shards.iter_mut().zip(&mut rows) {
        end_stats_pauses(conn, row).await?;
        row.state = MirrorState::Streaming;
        row.lsn = Some(consistent_point);
        progress::save(conn, row).await.context("storing the initial progress")?;
    }
    Ok(rows.swap_remove(0))
}

/// The initial copy: each table read once under `snapshot` and its rows routed to the shards,
/// on connections of its own (the copy's session settings stay there).
async fn copy_routed(
    opts: &MySqlMirrorOptions,
    defs: &[TableDef],
    tables: &[MySqlTable],
    keys: &[Option<Vec<KeyColumn>>],
    snapshot: &str,
) -> anyhow::Result<()> {
    tracing::info!(tables = tables.len(), shards = opts.shards.len(), "copying tables into shards");
    let source = pgconn::connect_sql(&opts.source).await.context("connecting to the source")?;
    let (mut conns, servers): (Vec<_>, Vec<_>) =
        connect_all(&opts.shards).await?.into_iter().unzip();
    let cfg = MySqlTargetConfig::new(opts.name.clone());
    for ((table, def), key) in tables.iter().zip(defs).zip(keys) {
        let table = std::sync::Arc::new(table.clone());
        let rows = copy::copy_table_routed(
            &source,
            &mut conns,
            servers[0].collation(),
            &table,
            key.as_deref(),
            Some(snapshot),
            def.row_filter.as_deref(),
            &cfg,
        )
        .await?;
        opts.metrics.copied(rows.iter().sum(), 0);
        tracing::info!(table = %table.source_display(), rows = ?rows, "copied");
    }
    Ok(())
}

/// How one table compares on one shard.
#[derive(Debug, Clone)]
pub struct ShardTableDiff {
    /// The source table, `"schema"."table"`.
    pub table: String,
    /// The shard.
    pub shard: usize,
    /// Whether the table is sharded (else the shard holds it whole).
    pub sharded: bool,
    /// How the shard's rows differ from the source rows it should hold.
    pub diff: TableDiff,
}

/// Compares each table on each shard with the source rows it should hold (a sharded table's
/// rows that hash to it, a reference table's all), row by row: a row missing, differing, or
/// held by the wrong shard counts. Every shard matching means the shards together equal the
/// source.
///
/// # Errors
/// Connection and query errors; a key value that cannot be hashed.
pub async fn compare_shards(
    source: &tokio_postgres::Client,
    shards: &mut [MySqlConnection],
    tables: &[MySqlTable],
    keys: &[Option<Vec<KeyColumn>>],
    chunk: usize,
    max_keys: usize,
) -> anyhow::Result<Vec<ShardTableDiff>> {
    let modulus = shards.len();
    let mut out = Vec::new();
    for (table, key) in tables.iter().zip(keys) {
        for (remainder, conn) in shards.iter_mut().enumerate() {
            let part = key.as_deref().map(|key| Part { key, modulus, remainder });
            let diff = compare_table_part(source, conn, table, part, chunk, max_keys)
                .await
                .with_context(|| format!("comparing {} on shard {remainder}", table.quoted()))?;
            out.push(ShardTableDiff {
                table: table.source_display(),
                shard: remainder,
                sharded: key.is_some(),
                diff,
            });
        }
    }
    Ok(out)
}
