//! `verify`, `status` and `drop` of a MySQL/MariaDB mirror.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use applier::mysql::progress::{self, MirrorRow};
use applier::mysql::session::{self, MySqlUrl};
use applier::mysql::verify::{TableDiff, compare_table};
use applier::mysql::{copy, take};
use applier::shard::ShardLayout;
use pgconn::ConnConfig;
use pgoutput_decoder::Lsn;
use tokio_postgres::Client;

use super::describe_tables;
use crate::selection::TableSelection;

/// The mirror's row: the one named, else the only one on the target.
async fn find_row(
    conn: &mut sqlx::MySqlConnection,
    name: Option<&str>,
) -> anyhow::Result<MirrorRow> {
    let rows = progress::load_all(conn).await?;
    match name {
        Some(n) => rows
            .into_iter()
            .find(|r| r.name == n)
            .with_context(|| format!("the MySQL target has no mirror named {n:?}")),
        None => match <[MirrorRow; 1]>::try_from(rows) {
            Ok([row]) => Ok(row),
            Err(rows) if rows.is_empty() => bail!("the MySQL target holds no pgmirror mirror"),
            Err(rows) => {
                let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
                bail!("the MySQL target holds several mirrors ({names:?}); name one with --name")
            }
        },
    }
}

/// The tables given, or else those of the mirror's publication as `conn` records it.
async fn selection(
    conn: &mut sqlx::MySqlConnection,
    name: Option<&str>,
    tables: Option<TableSelection>,
) -> anyhow::Result<TableSelection> {
    Ok(match tables {
        Some(t) => t,
        None => TableSelection::publication(find_row(conn, name).await?.publication),
    })
}

/// `pgmirror verify` into MySQL: each table compared row by row; exit 0 only when all match.
/// Tables that still differ are compared again after a second (at most twice), so changes the
/// mirror was applying do not count.
///
/// # Errors
/// Connection and query errors; no mirror and no tables given.
pub async fn verify(
    source: &ConnConfig,
    target: &MySqlUrl,
    name: Option<&str>,
    tables: Option<TableSelection>,
    chunk_rows: usize,
    max_diffs: usize,
) -> anyhow::Result<ExitCode> {
    let src = pgconn::connect_sql(source).await.context("connecting to the source")?;
    let (mut conn, _) = session::connect(target.options()).await?;
    let selection = selection(&mut conn, name, tables).await?;
    let (_, tables) = describe_tables(&src, &selection).await?;
    let mut all_match = true;
    let mut out = String::new();
    for t in &tables {
        let mut diff = compare_table(&src, &mut conn, t, chunk_rows, max_diffs).await?;
        for _ in 0..2 {
            if diff.is_equal() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            diff = compare_table(&src, &mut conn, t, chunk_rows, max_diffs).await?;
        }
        all_match &= render(&mut out, &t.source_display(), &diff);
    }
    print!("{out}");
    Ok(if all_match { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Appends a table's verdict to `out`; returns whether it matches.
fn render(out: &mut String, table: &str, diff: &TableDiff) -> bool {
    if diff.is_equal() {
        let _ = writeln!(out, "✔ {table}: {} rows match", diff.source_rows);
        return true;
    }
    let _ = writeln!(
        out,
        "✘ {table}: source {} rows, target {}; {} differences:",
        diff.source_rows, diff.target_rows, diff.differing
    );
    for d in &diff.differences {
        let _ = writeln!(out, "    {d}");
    }
    false
}

/// `pgmirror verify` of a mirror into MySQL shards: each shard's rows of each table compared
/// row by row with the source rows it should hold (a sharded table's rows that hash to it, a
/// reference table's all); a row missing, differing or on the wrong shard counts. Exit 0 only
/// when every shard matches. Differences are compared again after a second (at most twice).
///
/// # Errors
/// Connection and query errors; no mirror and no tables given; a bad shard key.
pub async fn verify_shards(
    source: &ConnConfig,
    shards: &[MySqlUrl],
    layout: &ShardLayout,
    name: Option<&str>,
    tables: Option<TableSelection>,
    chunk_rows: usize,
    max_diffs: usize,
) -> anyhow::Result<ExitCode> {
    let src = pgconn::connect_sql(source).await.context("connecting to the source")?;
    let mut conns: Vec<_> =
        super::shards::connect_all(shards).await?.into_iter().map(|(c, _)| c).collect();
    let selection = selection(&mut conns[0], name, tables).await.context("shard 0")?;
    let (_, tables) = describe_tables(&src, &selection).await?;
    let keys = super::shards::routed_keys(layout, &tables)?;
    let compare = super::shards::compare_shards;
    let mut diffs = compare(&src, &mut conns, &tables, &keys, chunk_rows, max_diffs).await?;
    for _ in 0..2 {
        if diffs.iter().all(|d| d.diff.is_equal()) {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        diffs = compare(&src, &mut conns, &tables, &keys, chunk_rows, max_diffs).await?;
    }
    let mut all_match = true;
    let mut out = String::new();
    for d in &diffs {
        let part = if d.sharded { "its part of " } else { "" };
        all_match &= render(&mut out, &format!("shard {}, {part}{}", d.shard, d.table), &d.diff);
    }
    print!("{out}");
    Ok(if all_match { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The slot's confirmed LSN and whether a walsender holds it, if it exists.
async fn slot_state(src: &Client, slot: &str) -> anyhow::Result<Option<(Option<Lsn>, bool)>> {
    let row = src
        .query_opt(
            "SELECT confirmed_flush_lsn::text, active FROM pg_catalog.pg_replication_slots \
             WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .context("reading pg_replication_slots on the source")?;
    Ok(row.map(|r| {
        let lsn: Option<String> = r.get(0);
        (lsn.and_then(|l| l.parse().ok()), r.get(1))
    }))
}

/// `pgmirror status` of a MySQL mirror: its state and stored progress, its slot, the lag in
/// WAL bytes. Exit 0 only when the slot exists and pgmirror streams from it.
///
/// # Errors
/// Connection and query errors; no such mirror.
pub async fn status(
    source: &ConnConfig,
    target: &MySqlUrl,
    name: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let src = pgconn::connect_sql(source).await.context("connecting to the source")?;
    let (mut conn, _) = session::connect(target.options()).await?;
    let row = find_row(&mut conn, name).await?;
    let slot = slot_state(&src, &row.slot).await?;
    let current: String = src
        .query_one("SELECT pg_catalog.pg_current_wal_lsn()::text", &[])
        .await
        .context("reading the source's WAL position")?
        .get(0);
    let current: Option<Lsn> = current.parse().ok();
    let lag = current.zip(row.lsn).map(|(c, p)| c.0.saturating_sub(p.0));
    let healthy = slot.is_some_and(|(_, active)| active);
    let state = match row.state {
        progress::MirrorState::Copying => "copying",
        progress::MirrorState::Streaming => "streaming",
    };
    if json {
        let v = serde_json::json!({
            "mirror": row.name,
            "state": state,
            "target": target.to_string(),
            "slot": row.slot,
            "slot_exists": slot.is_some(),
            "slot_active": slot.is_some_and(|(_, a)| a),
            "confirmed_flush_lsn": slot.and_then(|(l, _)| l).map(|l| l.to_string()),
            "stored_progress": row.lsn.map(|l| l.to_string()),
            "lag_bytes": lag,
            "healthy": healthy,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("mirror {:?} into {target}: {state}", row.name);
        match slot {
            Some((confirmed, active)) => println!(
                "slot {:?}: {}, confirmed {}",
                row.slot,
                if active { "active" } else { "inactive (no pgmirror streaming)" },
                confirmed.map_or("-".to_owned(), |l| l.to_string())
            ),
            None => println!("slot {:?}: missing on the source", row.slot),
        }
        println!(
            "stored progress {}, lag {} bytes of WAL",
            row.lsn.map_or("-".to_owned(), |l| l.to_string()),
            lag.map_or("?".to_owned(), |l| l.to_string())
        );
    }
    Ok(if healthy { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// `pgmirror drop` of a MySQL mirror: its slot, its publication if it created it, and its row
/// in `pgmirror_progress`. The MySQL tables and their rows are kept.
///
/// # Errors
/// An active slot (stop the mirror first), connection and query errors.
pub async fn drop(source: &ConnConfig, target: &MySqlUrl, name: &str) -> anyhow::Result<ExitCode> {
    let src = pgconn::connect_sql(source).await.context("connecting to the source")?;
    let (mut conn, _) = session::connect(target.options()).await?;
    let row = find_row(&mut conn, Some(name)).await?;
    match slot_state(&src, &row.slot).await? {
        Some((_, true)) => bail!(
            "slot {:?} is in use (is pgmirror still running mirror {name:?}?); stop it first",
            row.slot
        ),
        Some(_) => {
            src.execute("SELECT pg_catalog.pg_drop_replication_slot($1)", &[&row.slot])
                .await
                .context("dropping the slot")?;
            println!("dropped slot {:?}", row.slot);
        }
        None => println!("slot {:?} was already gone", row.slot),
    }
    if row.created_publication && tablesync::drop_publication(&src, &row.publication).await? {
        println!("dropped publication {:?}", row.publication);
    }
    if !row.stats_paused.is_empty() {
        // The mirror was dropped during its initial copy.
        copy::resume_stats_recalc(&mut conn, &row.stats_paused).await?;
        println!(
            "turned InnoDB's automatic statistics recalculation back on for {:?}",
            row.stats_paused
        );
    }
    let moves = take::forget(&mut conn, name, None).await?;
    if moves > 0 {
        println!("forgot {moves} rows kept in `{}` by moves between shards", take::MOVES_TABLE);
    }
    progress::delete(&mut conn, name).await?;
    println!("deleted mirror {name:?} from `pgmirror_progress`; the MySQL tables are kept");
    Ok(ExitCode::SUCCESS)
}
