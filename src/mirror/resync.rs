//! Copying one table again while the mirror streams, as PostgreSQL's `ALTER SUBSCRIPTION ...
//! REFRESH PUBLICATION` does for a new table: a table added to the publication, a column the
//! target cannot fill the way the source did, or `pgmirror resync --table`.
//!
//! A resync creates a temporary slot on the primary, whose exported snapshot is taken at its
//! consistent point, the table's *floor*. A copy session empties the target table, holds its
//! lock, and fills it from that snapshot. Meanwhile the mirror streams from its stored
//! progress as usual, except that the table's changes in transactions committed before the
//! floor are skipped (the copy holds them) and later ones wait for the copy's commit (the lock)
//! and then apply. Every other table streams on.
//!
//! `pgmirror.resyncs` on the target remembers each table's floor and state, so a restart
//! neither loses nor repeats a change: `requested` and `copying` tables are copied again under
//! a new snapshot at the next start; `copied` ones keep their floor until the stored progress
//! has passed it.

use std::collections::HashMap;

use anyhow::{Context, bail};
use applier::SchemaChange;
use pgconn::quote_ident;
use pgoutput_decoder::Lsn;
use replication::{CreateSlotOptions, ReplicationClient, SnapshotAction};
use tablesync::{CopyEvent, CopyOptions, QualifiedName, TableDef, TargetOptions};
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio_postgres::Client;

use super::options::MirrorOptions;

const DDL: &str = "CREATE SCHEMA IF NOT EXISTS pgmirror; \
    CREATE TABLE IF NOT EXISTS pgmirror.resyncs (\
        mirror_name text NOT NULL, \
        schema_name text NOT NULL, \
        table_name text NOT NULL, \
        state text NOT NULL CHECK (state IN ('requested', 'copying', 'copied')), \
        floor_lsn pg_lsn, \
        reason text NOT NULL, \
        updated_at timestamptz NOT NULL DEFAULT now(), \
        PRIMARY KEY (mirror_name, schema_name, table_name))";

/// Where a table's resync stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resync {
    /// The table, as the source names it.
    pub table: QualifiedName,
    /// `requested`, `copying` or `copied`.
    pub state: String,
    /// The snapshot's LSN, once a copy started.
    pub floor: Option<Lsn>,
    /// Why the table is copied again.
    pub reason: String,
}

/// Asks for `table` to be copied again at the mirror's next (re)start.
///
/// # Errors
/// Query errors on the target.
pub async fn request(
    target: &Client,
    mirror: &str,
    table: &QualifiedName,
    reason: &str,
) -> anyhow::Result<()> {
    target.batch_execute(DDL).await.context("creating pgmirror.resyncs on the target")?;
    target
        .execute(
            "INSERT INTO pgmirror.resyncs (mirror_name, schema_name, table_name, state, reason) \
             VALUES ($1, $2, $3, 'requested', $4) \
             ON CONFLICT (mirror_name, schema_name, table_name) DO UPDATE \
             SET state = 'requested', floor_lsn = NULL, reason = EXCLUDED.reason, \
                 updated_at = now()",
            &[&mirror, &table.schema, &table.name, &reason],
        )
        .await
        .context("recording the resync on the target")?;
    Ok(())
}

/// The mirror's resyncs, once `pgmirror.resyncs` exists.
///
/// # Errors
/// Query errors on the target.
pub async fn load(target: &Client, mirror: &str) -> anyhow::Result<Vec<Resync>> {
    let exists: bool = target
        .query_one("SELECT to_regclass('pgmirror.resyncs') IS NOT NULL", &[])
        .await
        .context("reading the target")?
        .get(0);
    if !exists {
        return Ok(Vec::new());
    }
    let rows = target
        .query(
            "SELECT schema_name, table_name, state, floor_lsn::text, reason \
             FROM pgmirror.resyncs WHERE mirror_name = $1 ORDER BY schema_name, table_name",
            &[&mirror],
        )
        .await
        .context("reading pgmirror.resyncs")?;
    Ok(rows
        .iter()
        .map(|r| Resync {
            table: QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1)),
            state: r.get(2),
            floor: r.get::<_, Option<String>>(3).and_then(|l| l.parse().ok()),
            reason: r.get(4),
        })
        .collect())
}

async fn set_state(
    target: &Client,
    mirror: &str,
    table: &QualifiedName,
    state: &str,
    floor: Option<Lsn>,
) -> Result<(), tokio_postgres::Error> {
    let floor = floor.map(|l| l.to_string());
    target
        .execute(
            "UPDATE pgmirror.resyncs SET state = $4, floor_lsn = coalesce($5::text::pg_lsn, \
             floor_lsn), updated_at = now() \
             WHERE mirror_name = $1 AND schema_name = $2 AND table_name = $3",
            &[&mirror, &table.schema, &table.name, &state, &floor],
        )
        .await
        .map(drop)
}

/// Removes the mirror's resyncs (`pgmirror drop`).
///
/// # Errors
/// Query errors on the target.
pub async fn forget(
    target: &impl tokio_postgres::GenericClient,
    mirror: &str,
) -> Result<(), tokio_postgres::Error> {
    let exists: bool =
        target.query_one("SELECT to_regclass('pgmirror.resyncs') IS NOT NULL", &[]).await?.get(0);
    if exists {
        target.execute("DELETE FROM pgmirror.resyncs WHERE mirror_name = $1", &[&mirror]).await?;
    }
    Ok(())
}

/// The copies a streaming session runs beside the stream, and the floors the applier needs.
#[derive(Debug, Default)]
pub(super) struct Running {
    /// (schema, table) → floor, for [`applier::Applier::set_table_floors`].
    pub floors: HashMap<(String, String), Lsn>,
    /// One task per table being copied; each marks its table `copied` when done.
    pub copies: JoinSet<anyhow::Result<QualifiedName>>,
}

/// At the start of a streaming session whose stored progress is `progress`: forgets floors it
/// has passed, starts a copy for every `requested` or interrupted table (returning once each
/// copy holds its table's lock), and returns the floors to apply with.
pub(super) async fn start(opts: &MirrorOptions, progress: Lsn) -> anyhow::Result<Running> {
    let target = pgconn::connect_sql(&opts.target).await.context("connecting to the target")?;
    let mut running = Running::default();
    let resyncs = load(&target, &opts.name).await?;
    if resyncs.is_empty() {
        return Ok(running);
    }
    target
        .execute(
            "DELETE FROM pgmirror.resyncs WHERE mirror_name = $1 AND state = 'copied' \
             AND floor_lsn <= $2::text::pg_lsn",
            &[&opts.name, &progress.to_string()],
        )
        .await
        .context("forgetting finished resyncs")?;
    let source = pgconn::connect_sql(&opts.source).await.context("connecting to the source")?;
    let published = crate::selection::resolve_tables(&source, &opts.tables).await?;
    for resync in resyncs {
        let key = (resync.table.schema.clone(), resync.table.name.clone());
        match (resync.state.as_str(), resync.floor) {
            ("copied", Some(floor)) if floor > progress => {
                running.floors.insert(key, floor);
            }
            ("copied", _) => {}
            _ => {
                let Some(table) =
                    published.iter().find(|t| t.qualified_name() == resync.table).cloned()
                else {
                    bail!(
                        "table {} is to be copied again ({}), but the mirror's publication no \
                         longer publishes it; add it back, or `pgmirror drop` this mirror and set \
                         it up again",
                        resync.table,
                        resync.reason
                    );
                };
                let floor = begin_copy(opts, &target, table, &mut running.copies).await?;
                tracing::info!(table = %resync.table, %floor, reason = %resync.reason, "copying the table again while streaming");
                running.floors.insert(key, floor);
            }
        }
    }
    Ok(running)
}

/// Starts copying `table` under a new snapshot; returns the snapshot's LSN once the copy
/// holds the target table's lock (so no change the stream applies lands before the copy).
async fn begin_copy(
    opts: &MirrorOptions,
    target: &Client,
    table: TableDef,
    copies: &mut JoinSet<anyhow::Result<QualifiedName>>,
) -> anyhow::Result<Lsn> {
    let name = table.qualified_name();
    tablesync::ensure_target_table(target, &table, &TargetOptions::default()).await?;
    let mut repl = ReplicationClient::connect(&opts.source)
        .await
        .context("replication connection to the source")?;
    let slot = format!("pgmirror_resync_{}_{}", std::process::id(), table.oid);
    let created = repl
        .create_slot(
            &slot,
            CreateSlotOptions {
                temporary: true,
                snapshot: SnapshotAction::Export,
                ..CreateSlotOptions::default()
            },
        )
        .await
        .with_context(|| format!("creating a temporary slot to copy {name} again"))?;
    let Some(snapshot) = created.snapshot_name else {
        bail!("the source did not export a snapshot for slot {slot:?}");
    };
    let floor = created.consistent_point;
    set_state(target, &opts.name, &name, "copying", Some(floor))
        .await
        .context("recording the resync's floor")?;

    let superuser: bool = target
        .query_one("SELECT current_setting('is_superuser') = 'on'", &[])
        .await
        .context("checking the target role")?
        .get(0);
    let (locked_tx, locked_rx) = oneshot::channel();
    let locked_tx = std::sync::Mutex::new(Some(locked_tx));
    let opts = opts.clone();
    copies.spawn(async move {
        let (source, target) = super::copy::connectors(&opts);
        let copy_opts = CopyOptions {
            parallelism: 1,
            truncate_target: true,
            replica_role: superuser,
            ..CopyOptions::default()
        };
        let on_event = |event: CopyEvent<'_>| {
            if let CopyEvent::TargetLocked { .. } = event
                && let Some(tx) = locked_tx.lock().ok().and_then(|mut t| t.take())
            {
                let _ = tx.send(());
            }
        };
        let tables = [table];
        let report =
            tablesync::copy_tables(&source, &target, &snapshot, &tables, &copy_opts, &on_event)
                .await;
        // The snapshot (and the temporary slot) may go now.
        repl.close().await;
        let report = report?;
        let name = tables[0].qualified_name();
        let done = pgconn::connect_sql(&opts.target).await?;
        set_state(&done, &opts.name, &name, "copied", None)
            .await
            .context("recording the finished resync")?;
        tracing::info!(table = %name, rows = report.rows, "table copied again; its changes apply from here on");
        Ok(name)
    });
    // The copy failed before it held the table: its task says why.
    if locked_rx.await.is_err() {
        return match copies.join_next().await {
            Some(Ok(Err(e))) => Err(e.context(format!("copying {name} again"))),
            Some(Err(e)) => bail!("copying {name} again: {e}"),
            _ => bail!("copying {name} again ended before it started"),
        };
    }
    Ok(floor)
}

/// Repairs the target after the applier met `change` on `schema.table`, so streaming can
/// start again from the stored progress: a column added on the source with a constant
/// default is added with the value existing rows have there; anything the target cannot
/// reproduce (a new table, a volatile default, a changed type) asks for the table's rows
/// to be copied again.
///
/// # Errors
/// Connection and query errors; a table that is no longer published.
pub(super) async fn repair(
    opts: &MirrorOptions,
    schema: &str,
    table: &str,
    change: &SchemaChange,
) -> anyhow::Result<()> {
    let name = QualifiedName::new(schema, table);
    let source = pgconn::connect_sql(&opts.source).await.context("connecting to the source")?;
    let target = pgconn::connect_sql(&opts.target).await.context("connecting to the target")?;
    let def = tablesync::resolve_tables(&source, std::slice::from_ref(&name))
        .await
        .with_context(|| format!("reading {name} on the source"))?
        .into_iter()
        .next()
        .with_context(|| format!("table {name} is no longer on the source"))?;
    let reason = match change {
        SchemaChange::TableMissing => {
            tablesync::ensure_target_table(&target, &def, &TargetOptions::default()).await?;
            "added to the publication".to_owned()
        }
        SchemaChange::ColumnsAdded(columns) => {
            match add_columns(&source, &target, &def, columns).await? {
                None => {
                    tracing::info!(table = %name, ?columns, "added the columns the source gained, with the values its rows have");
                    return Ok(());
                }
                Some(reason) => reason,
            }
        }
        SchemaChange::ColumnTypeChanged { column } => {
            let col = def.columns.iter().find(|c| &c.name == column).with_context(|| {
                format!("column {column:?} of {name} is no longer on the source")
            })?;
            // The copy fills the table again: empty it first, so the new type needs no cast.
            target
                .batch_execute(&format!(
                    "BEGIN; TRUNCATE {t}; ALTER TABLE {t} ALTER COLUMN {c} TYPE {ty}; COMMIT",
                    t = name.quoted(),
                    c = quote_ident(column),
                    ty = col.type_name
                ))
                .await
                .with_context(|| format!("changing the type of {name}.{column:?} on the target"))?;
            format!("column {column:?} changed its type to {}", col.type_name)
        }
        other => bail!("{name}: cannot repair {other} on the target"),
    };
    tracing::warn!(table = %name, %reason, "the table will be copied again while streaming");
    request(&target, &opts.name, &name, &reason).await
}

/// Adds `columns` to the target table. Returns `None` when every existing row got the value
/// it has on the source, or why the table must be copied again.
async fn add_columns(
    source: &Client,
    target: &Client,
    def: &TableDef,
    columns: &[String],
) -> anyhow::Result<Option<String>> {
    let name = def.qualified_name();
    let mut resync = None;
    let tx_sql = &mut Vec::new();
    for column in columns {
        let col =
            def.columns.iter().find(|c| &c.name == column).with_context(|| {
                format!("column {column:?} of {name} is no longer on the source")
            })?;
        // PostgreSQL keeps the value rows that existed before ADD COLUMN get (a constant
        // default) in attmissingval. Without it, a column with a default was filled by
        // rewriting the table (a volatile default), which decoding does not see.
        let row = source
            .query_one(
                "SELECT a.atthasmissing, (a.attmissingval::text::text[])[1], a.atthasdef, \
                        a.attidentity <> '' \
                 FROM pg_catalog.pg_attribute a \
                 WHERE a.attrelid = $1::text::regclass AND a.attname = $2",
                &[&name.quoted(), column],
            )
            .await
            .with_context(|| format!("reading column {column:?} of {name} on the source"))?;
        let (has_missing, missing, has_default, identity): (bool, Option<String>, bool, bool) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        let mut sql = format!(
            "ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}",
            name.quoted(),
            quote_ident(column),
            col.type_name
        );
        if has_missing && !identity {
            if let Some(value) = &missing {
                sql.push_str(&format!(
                    " DEFAULT {}::{}",
                    pgconn::quote_literal(value),
                    col.type_name
                ));
            }
            if col.not_null {
                sql.push_str(" NOT NULL");
            }
            tx_sql.push(sql);
            // Then the source's own default for rows inserted from now on.
            tx_sql.push(match &col.default {
                Some(d) => format!(
                    "ALTER TABLE {} ALTER COLUMN {} SET DEFAULT {d}",
                    name.quoted(),
                    quote_ident(column)
                ),
                None => format!(
                    "ALTER TABLE {} ALTER COLUMN {} DROP DEFAULT",
                    name.quoted(),
                    quote_ident(column)
                ),
            });
        } else if has_default || identity {
            tx_sql.push(sql);
            resync = Some(format!(
                "column {column:?} was added with a default computed row by row (a volatile \
                 expression or an identity), which the stream does not carry"
            ));
        } else {
            // Added without a default: existing rows hold NULL on both sides.
            if col.not_null {
                sql.push_str(" NOT NULL");
            }
            tx_sql.push(sql);
        }
    }
    let script = format!("BEGIN; {}; COMMIT", tx_sql.join("; "));
    target
        .batch_execute(&script)
        .await
        .with_context(|| format!("adding the new columns of {name} on the target"))?;
    Ok(resync)
}

/// Waits for the next copy to finish: `Ok` with its table, or its error. Pending forever
/// when none runs, so it can sit in a `select!` beside the stream.
pub(super) async fn next_copy(
    copies: &mut JoinSet<anyhow::Result<QualifiedName>>,
) -> anyhow::Result<QualifiedName> {
    match copies.join_next().await {
        Some(Ok(result)) => result,
        Some(Err(e)) => Err(anyhow::anyhow!("a table's copy failed: {e}")),
        None => std::future::pending().await,
    }
}

/// Resolves once `pgmirror resync` asked (through `pgmirror.resyncs`) for a table of this
/// mirror to be copied again, checking every second.
pub(super) async fn requested(opts: &MirrorOptions) -> anyhow::Result<()> {
    let target = pgconn::connect_sql(&opts.target).await.context("connecting to the target")?;
    // Prepared once: the check runs every second for as long as the mirror streams.
    let exists = target
        .prepare("SELECT to_regclass('pgmirror.resyncs') IS NOT NULL")
        .await
        .context("reading the target")?;
    let mut asked = None;
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let asked = match &asked {
            Some(statement) => statement,
            None => {
                let found: bool =
                    target.query_one(&exists, &[]).await.context("reading the target")?.get(0);
                if !found {
                    continue;
                }
                asked.insert(
                    target
                        .prepare(
                            "SELECT EXISTS (SELECT FROM pgmirror.resyncs \
                             WHERE mirror_name = $1 AND state = 'requested')",
                        )
                        .await
                        .context("reading pgmirror.resyncs")?,
                )
            }
        };
        let found: bool = target
            .query_one(asked, &[&opts.name])
            .await
            .context("reading pgmirror.resyncs")?
            .get(0);
        if found {
            return Ok(());
        }
    }
}
