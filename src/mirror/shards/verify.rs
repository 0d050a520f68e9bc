//! `verify` of a sharded mirror: each shard holds exactly the rows of each sharded table that
//! hash to it (none missing, none misplaced, none extra), so the shards together equal the
//! source, and every shard holds each reference table whole.
//!
//! Rows are compared by the md5 of their text form, in sessions with the same output settings
//! on every server. As `pgmirror verify` does for one target, the comparison first waits until
//! every shard has applied the source's current WAL position, and compares differing tables
//! again after waiting once more (twice at most) before they count.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::Context;
use applier::shard::{KeyType, ShardLayout, hash};
use pgconn::ConnConfig;
use pgoutput_decoder::Column;
use tablesync::TableDef;
use tokio_postgres::Client;

use crate::selection::TableSelection;

/// Output settings that make a row's text the same on every server.
const SESSION: &str = "SET DateStyle = 'ISO, MDY'; SET IntervalStyle = 'postgres'; \
    SET TimeZone = 'UTC'; SET extra_float_digits = 3; SET bytea_output = 'hex'";

/// How many times differing tables are compared again after waiting for the mirror.
const RECHECKS: usize = 2;

/// What to verify.
#[derive(Debug, Clone)]
pub struct ShardVerifyOptions {
    /// The primary.
    pub source: ConnConfig,
    /// The shards, in order.
    pub shards: Vec<ConnConfig>,
    /// The sharded tables.
    pub layout: ShardLayout,
    /// The tables to compare.
    pub tables: TableSelection,
    /// The mirror whose progress to wait for.
    pub name: String,
    /// How long to wait for the shards to catch up.
    pub wait_timeout: Duration,
}

/// One table's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardTableVerdict {
    /// `"schema"."table"`.
    pub table: String,
    /// Its shard key, if sharded.
    pub key: Option<Vec<String>>,
    /// Rows on the source.
    pub source_rows: u64,
    /// Per shard: rows it lacks, rows that belong to another shard, rows the source lacks.
    pub shards: Vec<ShardDiff>,
}

/// How one shard's copy of a table differs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardDiff {
    /// Rows it should hold and does not.
    pub missing: u64,
    /// Source rows it holds that hash to another shard.
    pub misplaced: u64,
    /// Rows it holds that the source does not have.
    pub extra: u64,
}

impl ShardTableVerdict {
    /// Whether every shard holds exactly its rows.
    pub fn matches(&self) -> bool {
        self.shards.iter().all(|d| *d == ShardDiff::default())
    }
}

/// Every table's verdict.
#[derive(Debug, Clone)]
pub struct ShardVerifyReport {
    /// Per table.
    pub tables: Vec<ShardTableVerdict>,
    /// Whether every shard had caught up with the source before the comparison.
    pub caught_up: bool,
}

impl ShardVerifyReport {
    /// Whether every table matches.
    pub fn all_match(&self) -> bool {
        self.tables.iter().all(ShardTableVerdict::matches)
    }

    /// The report as text, one line per table (and per differing shard).
    pub fn render(&self) -> String {
        let mut out = String::new();
        for t in &self.tables {
            let what = match &t.key {
                Some(k) => format!("sharded by ({})", k.join(", ")),
                None => "reference table".to_owned(),
            };
            let verdict = match (&t.key, t.matches()) {
                (Some(_), true) => "each shard holds exactly its rows",
                (None, true) => "whole on every shard",
                (_, false) => "DIFFERS",
            };
            let _ = writeln!(out, "{} ({what}, {} rows): {verdict}", t.table, t.source_rows);
            for (i, d) in t.shards.iter().enumerate().filter(|(_, d)| **d != ShardDiff::default()) {
                let _ = writeln!(
                    out,
                    "  shard {i}: {} missing, {} misplaced, {} extra",
                    d.missing, d.misplaced, d.extra
                );
            }
        }
        if !self.caught_up {
            out.push_str("(the shards had not caught up with the source: approximate)\n");
        }
        let verdict = if self.all_match() { "all tables match" } else { "tables differ" };
        let _ = writeln!(out, "{verdict}");
        out
    }
}

/// Compares every table on the source with the shards.
///
/// # Errors
/// Connection and query errors.
pub async fn verify(opts: &ShardVerifyOptions) -> anyhow::Result<ShardVerifyReport> {
    let source = pgconn::connect_sql(&opts.source).await.context("connecting to the source")?;
    source.batch_execute(SESSION).await?;
    let mut shards = Vec::new();
    for (i, cfg) in opts.shards.iter().enumerate() {
        let c =
            pgconn::connect_sql(cfg).await.with_context(|| format!("connecting to shard {i}"))?;
        c.batch_execute(SESSION).await?;
        shards.push(c);
    }
    let tables = crate::selection::resolve_tables(&source, &opts.tables).await?;
    let mut caught_up = wait_caught_up(opts, &source, &shards).await?;
    let mut verdicts = Vec::new();
    for table in &tables {
        let mut verdict = compare(opts, &source, &shards, table).await?;
        for _ in 0..RECHECKS {
            if verdict.matches() {
                break;
            }
            caught_up &= wait_caught_up(opts, &source, &shards).await?;
            verdict = compare(opts, &source, &shards, table).await?;
        }
        verdicts.push(verdict);
    }
    Ok(ShardVerifyReport { tables: verdicts, caught_up })
}

/// Waits until every shard's progress, or the slot's confirmed position, has reached the
/// source's current WAL position; `false` when the wait timed out.
async fn wait_caught_up(
    opts: &ShardVerifyOptions,
    source: &Client,
    shards: &[Client],
) -> anyhow::Result<bool> {
    let target: String =
        source.query_one("SELECT pg_current_wal_insert_lsn()::text", &[]).await?.get(0);
    let deadline = Instant::now() + opts.wait_timeout;
    loop {
        let slot = match shards.first() {
            Some(s) => crate::mirror::registry::load(s, &opts.name).await.ok().flatten(),
            None => None,
        };
        let mut confirmed = false;
        if let Some(rec) = slot {
            confirmed = source
                .query_opt(
                    "SELECT confirmed_flush_lsn >= $2::text::pg_lsn \
                     FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
                    &[&rec.slot, &target],
                )
                .await?
                .is_some_and(|r| r.get::<_, Option<bool>>(0).unwrap_or(false));
        }
        let mut all = confirmed;
        if !all {
            all = true;
            for shard in shards {
                let reached: Option<bool> = shard
                    .query_opt(
                        "SELECT end_lsn >= $2::text::pg_lsn FROM pgmirror.progress \
                         WHERE mirror_name = $1",
                        &[&opts.name, &target],
                    )
                    .await
                    .ok()
                    .flatten()
                    .map(|r| r.get(0));
                all &= reached.unwrap_or(false);
            }
        }
        if all {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn compare(
    opts: &ShardVerifyOptions,
    source: &Client,
    shards: &[Client],
    table: &TableDef,
) -> anyhow::Result<ShardTableVerdict> {
    let key = opts.layout.key_of(&table.schema, &table.name).map(<[String]>::to_vec);
    let key_types = match &key {
        Some(cols) => Some(
            cols.iter()
                .map(|c| {
                    let col = table
                        .column(c)
                        .with_context(|| format!("{} has no column {c:?}", table.quoted()))?;
                    KeyType::from_oid(col.type_oid)
                        .with_context(|| format!("{}.{c} cannot be a shard key", table.quoted()))
                })
                .collect::<anyhow::Result<Vec<_>>>()?,
        ),
        None => None,
    };
    let key_list = key
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|c| format!("t.{}::text", pgconn::quote_ident(c)))
        .collect::<Vec<_>>();
    let sql = format!(
        "SELECT md5(t::text){} FROM {} t",
        key_list.iter().map(|k| format!(", {k}")).collect::<String>(),
        table.quoted()
    );
    // The row digests the source has, and for a sharded table the shard each belongs to.
    let mut want: HashMap<String, (i64, usize)> = HashMap::new();
    let mut source_rows = 0u64;
    for row in
        source.query(&sql, &[]).await.with_context(|| format!("reading {}", table.quoted()))?
    {
        source_rows += 1;
        let digest: String = row.get(0);
        let shard = match &key_types {
            Some(types) => {
                let mut hashes = Vec::with_capacity(types.len());
                for (i, ty) in types.iter().enumerate() {
                    let v: Option<&str> = row.get(i + 1);
                    hashes.push(ty.hash(v.map_or(Column::Null, |s| Column::Text(s.as_bytes())))?);
                }
                hash::partition_of(hash::row_hash(hashes), shards.len())
            }
            None => 0,
        };
        want.entry(digest).or_insert((0, shard)).0 += 1;
    }
    let digests = format!("SELECT md5(t::text) FROM {} t", table.quoted());
    let mut diffs = Vec::with_capacity(shards.len());
    for (i, shard) in shards.iter().enumerate() {
        let mut have: HashMap<String, i64> = HashMap::new();
        for row in shard
            .query(&digests, &[])
            .await
            .with_context(|| format!("reading {} on shard {i}", table.quoted()))?
        {
            *have.entry(row.get(0)).or_default() += 1;
        }
        let mut d = ShardDiff::default();
        for (digest, &(n, home)) in &want {
            let here = have.get(digest).copied().unwrap_or(0);
            let expected = if key.is_none() || home == i { n } else { 0 };
            if here < expected {
                d.missing += u64::try_from(expected - here).unwrap_or(0);
            } else if here > expected {
                let surplus = u64::try_from(here - expected).unwrap_or(0);
                if expected == 0 && key.is_some() {
                    d.misplaced += surplus
                } else {
                    d.extra += surplus
                }
            }
        }
        for (digest, n) in &have {
            if !want.contains_key(digest) {
                d.extra += u64::try_from(*n).unwrap_or(0);
            }
        }
        diffs.push(d);
    }
    Ok(ShardTableVerdict { table: table.quoted(), key, source_rows, shards: diffs })
}
