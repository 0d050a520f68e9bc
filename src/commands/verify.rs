//! `pgmirror verify`: proves that the target holds the same rows as the source.
//!
//! Each table is split into key ranges of about `--chunk-rows` rows on the source; each range
//! is hashed on both sides (row count plus an md5 over the rows in key order, see
//! [`tablesync::chunk_hashes`]), and only ranges whose hashes differ are read row by row to
//! name the differing keys.
//!
//! For a running mirror the comparison must not race the stream: verify takes the source's WAL
//! insert position, waits until the mirror has applied up to it (its progress row, or the
//! slot's `confirmed_flush_lsn`, since pgoutput skips empty transactions), then hashes the
//! source in a REPEATABLE READ snapshot. Rows written meanwhile can still make a range differ,
//! so differing ranges are compared again after the mirror catches up once more (twice at
//! most) before they count. Without a mirror to wait for, the result is marked approximate.

use std::cmp::Ordering;
use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use futures_util::future::try_join_all;
use pgconn::ConnConfig;
use serde::Serialize;
use tablesync::{DiffKind, KeyRange, TableDef, TableHash};
use tokio_postgres::Client;

use crate::conn;
use crate::display::{agree, count, display_name};
use crate::mirror::lookup::{MirrorRef, resolve_mirror};
use crate::mirror::registry::{self, MirrorState};
use crate::selection::TableSelection;
use crate::target_url::TargetUrl;

/// How many times differing ranges are compared again after waiting for the mirror.
const RECHECKS: usize = 2;

/// Arguments of `pgmirror verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The primary: --source and psql's -h -p -U -d (`PG*` variables fill in the rest).
    #[command(flatten)]
    pub source: conn::SourceArgs,
    /// The replica, or the shards and shard keys of a sharded mirror.
    #[command(flatten)]
    pub targets: crate::commands::shard_keys::TargetArgs,
    /// Verify the tables of this publication.
    #[arg(long, value_name = "NAME", conflicts_with = "tables")]
    pub publication: Option<String>,
    /// Verify these tables (`name`, `schema.name` or `schema.*`, comma-separated).
    #[arg(long, value_name = "A,B,...", value_delimiter = ',')]
    pub tables: Option<Vec<String>>,
    /// Leave these out of `--tables` (same syntax).
    #[arg(long, value_name = "A,B,...", requires = "tables")]
    pub exclude_tables: Option<Vec<String>>,
    /// The mirror to wait for, and whose tables to verify when no tables are given (default:
    /// the only one recorded on the target, else `default`).
    #[arg(long, value_name = "MIRROR")]
    pub name: Option<String>,
    /// Rows per hashed key range.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    pub chunk_rows: u32,
    /// Differing keys listed per table.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub max_diffs: usize,
    /// How long to wait for the mirror to catch up before comparing anyway.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    pub wait_timeout: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// What to verify.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// The primary.
    pub source: ConnConfig,
    /// The replica.
    pub target: ConnConfig,
    /// The tables; `None` takes the mirror's publication.
    pub tables: Option<TableSelection>,
    /// The mirror (`None`: found as [`resolve_mirror`] does).
    pub name: Option<String>,
    /// Rows per hashed key range.
    pub chunk_rows: u32,
    /// Differing keys listed per table.
    pub max_diffs: usize,
    /// How long to wait for the mirror to catch up.
    pub wait_timeout: Duration,
}

impl VerifyOptions {
    /// Defaults (10 000-row chunks, 20 keys, 30 s) for the rest.
    pub fn new(source: ConnConfig, target: ConnConfig) -> Self {
        VerifyOptions {
            source,
            target,
            tables: None,
            name: None,
            chunk_rows: 10_000,
            max_diffs: 20,
            wait_timeout: Duration::from_secs(30),
        }
    }
}

/// One differing row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RowDiff {
    /// The key as `col=value, ...` (the row text for tables without a key).
    pub key: String,
    /// The key columns' values as text.
    pub key_values: Vec<String>,
    /// `missing_on_target`, `extra_on_target` or `differs`.
    pub kind: &'static str,
}

/// One table's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableVerdict {
    /// `schema.table`.
    pub table: String,
    /// Whether both sides hold the same rows.
    pub matches: bool,
    /// Rows on the source.
    pub source_rows: i64,
    /// Rows on the target; `None` when the table is missing there.
    pub target_rows: Option<i64>,
    /// Key ranges compared.
    pub chunks: usize,
    /// Key ranges that differ.
    pub differing_chunks: usize,
    /// Differing rows, at most `max_diffs`, in key order.
    pub diffs: Vec<RowDiff>,
    /// More differing rows exist than listed.
    pub truncated: bool,
}

/// The result of `pgmirror verify`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerifyReport {
    /// The mirror waited for, if one was found.
    pub mirror: Option<String>,
    /// The target had applied everything up to `source_lsn` before the comparison. When
    /// false, concurrent writes on the source may show up as differences.
    pub synced: bool,
    /// The source WAL position the mirror was waited for.
    pub source_lsn: Option<String>,
    /// How the comparison was synchronised, or why it is approximate.
    pub note: String,
    /// Per-table verdicts.
    pub tables: Vec<TableVerdict>,
}

impl VerifyReport {
    /// Whether every table matches.
    pub fn all_match(&self) -> bool {
        self.tables.iter().all(|t| t.matches)
    }

    /// The text view.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let width = self.tables.iter().map(|t| t.table.len()).max().unwrap_or(0);
        for t in &self.tables {
            let target = t.target_rows.map_or_else(|| "missing".to_owned(), |n| n.to_string());
            if t.matches {
                let _ = writeln!(
                    out,
                    "✔ {:<width$}  {}, {} {}",
                    t.table,
                    count(t.source_rows, "row", "rows"),
                    count(t.chunks, "chunk", "chunks"),
                    agree(t.chunks, "matches", "match")
                );
            } else {
                let _ = writeln!(
                    out,
                    "✘ {:<width$}  source {}, target {target}; {} of {} {}",
                    t.table,
                    count(t.source_rows, "row", "rows"),
                    t.differing_chunks,
                    count(t.chunks, "chunk", "chunks"),
                    agree(t.differing_chunks, "differs", "differ")
                );
                for d in &t.diffs {
                    let _ = writeln!(out, "    {:<17}  {}", d.kind.replace('_', " "), d.key);
                }
                if t.truncated {
                    let _ = writeln!(out, "    ... more (raise --max-diffs)");
                }
            }
        }
        let _ = writeln!(out, "{}", self.note);
        let bad = self.tables.iter().filter(|t| !t.matches).count();
        let n = self.tables.len();
        if bad == 0 && n == 1 {
            let _ = writeln!(out, "the table matches");
        } else if bad == 0 {
            let _ = writeln!(out, "all {n} tables match");
        } else {
            let tables = count(n, "table", "tables");
            let _ = writeln!(out, "{bad} of {tables} {}", agree(bad, "differs", "differ"));
        }
        out
    }
}

/// Runs `pgmirror verify`: exit status 0 only when every table matches.
///
/// # Errors
/// Connection and query errors; no tables to verify.
pub async fn run(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    if args.targets.sharded() {
        return run_sharded(args).await;
    }
    let target = match conn::parse_target(&args.targets.target[0])? {
        TargetUrl::Postgres(target) => target,
        TargetUrl::Nats(url) => bail!(
            "verify compares tables, and {url} holds a stream of changes: read it with a \
             consumer (examples/nats_consumer.rs rebuilds a table from it)"
        ),
        TargetUrl::MySql(target) => {
            let tables =
                (args.publication.is_some() || args.tables.is_some()).then_some(TableSelection {
                    publication: args.publication,
                    tables: args.tables,
                    exclude_tables: args.exclude_tables,
                });
            let chunk = usize::try_from(args.chunk_rows).unwrap_or(usize::MAX);
            return crate::mirror::mysql::ops::verify(
                &args.source.config()?,
                &target,
                args.name.as_deref(),
                tables,
                chunk,
                args.max_diffs,
            )
            .await;
        }
    };
    let mut opts = VerifyOptions::new(args.source.config()?, target);
    opts.tables = (args.publication.is_some() || args.tables.is_some()).then_some(TableSelection {
        publication: args.publication,
        tables: args.tables,
        exclude_tables: args.exclude_tables,
    });
    opts.name = args.name;
    opts.chunk_rows = args.chunk_rows;
    opts.max_diffs = args.max_diffs;
    opts.wait_timeout = Duration::from_secs(args.wait_timeout);
    let report = run_verify(&opts).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    Ok(if report.all_match() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// `verify` of a sharded mirror (several `--target`s or a `--shard-key`).
async fn run_sharded(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    use crate::mirror::shards::verify::{ShardVerifyOptions, verify};
    if let Some(shards) = args.targets.mysql()? {
        let tables =
            (args.publication.is_some() || args.tables.is_some()).then_some(TableSelection {
                publication: args.publication,
                tables: args.tables,
                exclude_tables: args.exclude_tables,
            });
        return crate::mirror::mysql::ops::verify_shards(
            &args.source.config()?,
            &shards,
            &args.targets.layout()?,
            args.name.as_deref(),
            tables,
            usize::try_from(args.chunk_rows).unwrap_or(usize::MAX),
            args.max_diffs,
        )
        .await;
    }
    let shards = args.targets.all()?;
    let name = args.name.unwrap_or_else(|| "default".to_owned());
    let tables = if args.publication.is_some() || args.tables.is_some() {
        TableSelection {
            publication: args.publication,
            tables: args.tables,
            exclude_tables: args.exclude_tables,
        }
    } else {
        let first = pgconn::connect_sql(&shards[0]).await.context("connecting to shard 0")?;
        let Some(rec) = registry::load(&first, &name).await.context("reading pgmirror.mirrors")?
        else {
            bail!("no mirror {name:?} on the first --target; give --name, or --tables")
        };
        TableSelection::publication(rec.publication)
    };
    let opts = ShardVerifyOptions {
        source: args.source.config()?,
        shards,
        layout: args.targets.layout()?,
        tables,
        name,
        wait_timeout: Duration::from_secs(args.wait_timeout),
    };
    let report = verify(&opts).await?;
    print!("{}", report.render());
    Ok(if report.all_match() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Compares every selected table on both sides.
///
/// # Errors
/// Connection and query errors; no tables to verify.
pub async fn run_verify(opts: &VerifyOptions) -> anyhow::Result<VerifyReport> {
    let source = pgconn::connect_sql(&opts.source).await.context("connecting to the source")?;
    let target = pgconn::connect_sql(&opts.target).await.context("connecting to the target")?;
    // A database compared with itself is always "equal": that proves nothing.
    crate::same_database::refuse_same_database(&source, &target).await?;

    let mirror = find_mirror(&target, opts).await?;
    let tables =
        match (&opts.tables, mirror.as_ref().and_then(|m| m.record.as_ref())) {
            (Some(selection), _) => crate::selection::resolve_tables(&source, selection).await?,
            (None, Some(record)) => tablesync::publication_tables(&source, &record.publication)
                .await
                .with_context(|| format!("reading publication {:?}", record.publication))?,
            (None, None) => bail!(
                "no mirror found on the target to take the tables from; give --tables or \
             --publication (or --name of a mirror recorded in pgmirror.mirrors)"
            ),
        };
    if tables.is_empty() {
        bail!("no tables to verify");
    }

    let mut sync = MirrorSync::new(mirror, opts.wait_timeout);
    sync.catch_up(&source, &target).await?;
    begin_snapshot(&source).await?;
    let mut states = Vec::with_capacity(tables.len());
    for def in tables {
        states.push(hash_table(&source, &target, def, opts.chunk_rows).await?);
    }
    // Differences may be writes that arrived after the snapshot: compare those ranges again
    // once the mirror has caught up further.
    for _ in 0..RECHECKS {
        if !sync.synced || states.iter().all(TableState::matches) {
            break;
        }
        end_snapshot(&source).await?;
        sync.catch_up(&source, &target).await?;
        begin_snapshot(&source).await?;
        for state in &mut states {
            state.recheck(&source, &target).await?;
        }
    }

    let mut verdicts = Vec::with_capacity(states.len());
    for state in &states {
        verdicts.push(state.verdict(&source, &target, opts.max_diffs).await?);
    }
    end_snapshot(&source).await?;
    Ok(VerifyReport {
        mirror: sync.mirror.as_ref().map(|m| m.name.clone()),
        synced: sync.synced,
        source_lsn: sync.lsn.clone(),
        note: sync.note.clone(),
        tables: verdicts,
    })
}

/// The mirror to wait for: `--name`, or (without `--tables`/`--publication`) the one
/// [`resolve_mirror`] finds, or the one streaming the given publication.
async fn find_mirror(target: &Client, opts: &VerifyOptions) -> anyhow::Result<Option<MirrorRef>> {
    if opts.name.is_some() || opts.tables.is_none() {
        let m = resolve_mirror(Some(target), opts.name.as_deref(), None).await?;
        return Ok(m.record.is_some().then_some(m));
    }
    let Some(publication) = opts.tables.as_ref().and_then(|s| s.publication.as_deref()) else {
        return Ok(None);
    };
    if !registry::exists(target).await? {
        return Ok(None);
    }
    match registry::name_by(target, registry::Lookup::Publication, publication).await? {
        Some(name) => {
            let m = resolve_mirror(Some(target), Some(&name), None).await?;
            Ok(Some(m))
        }
        None => Ok(None),
    }
}

/// Waiting for the mirror to apply everything up to the source's current WAL position.
struct MirrorSync {
    mirror: Option<MirrorRef>,
    timeout: Duration,
    synced: bool,
    /// Waiting failed once: the result stays approximate.
    gave_up: bool,
    lsn: Option<String>,
    note: String,
}

impl MirrorSync {
    fn new(mirror: Option<MirrorRef>, timeout: Duration) -> Self {
        MirrorSync {
            mirror,
            timeout,
            synced: false,
            gave_up: false,
            lsn: None,
            note: String::new(),
        }
    }

    /// Waits until the mirror has applied the source's current WAL; on failure records why
    /// the comparison is approximate (and stops trying).
    async fn catch_up(&mut self, source: &Client, target: &Client) -> anyhow::Result<()> {
        if self.gave_up {
            return Ok(());
        }
        let Some(mirror) = &self.mirror else {
            self.gave_up = true;
            self.note = "approximate: no mirror recorded on the target to wait for; rows \
                         written on the source during the comparison show up as differences"
                .to_owned();
            return Ok(());
        };
        // The insert position covers every committed transaction, even with asynchronous
        // commit (the write position may not yet).
        let lsn: String = source
            .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
            .await
            .context("reading the source's WAL position")?
            .get(0);
        let started = Instant::now();
        loop {
            // A mirror in its initial copy has no meaningful progress yet: wait for it too.
            let copying = mirror_state(target, &mirror.name).await? == Some(MirrorState::Copying);
            if !copying && applied_up_to(source, target, mirror, &lsn).await? {
                self.synced = true;
                self.note = format!(
                    "synchronised: mirror {:?} had applied the source up to {lsn} (waited \
                     {:.1} s); source read in one REPEATABLE READ snapshot",
                    mirror.name,
                    started.elapsed().as_secs_f64()
                );
                self.lsn = Some(lsn);
                return Ok(());
            }
            if started.elapsed() >= self.timeout && copying {
                self.synced = false;
                self.note = format!(
                    "approximate: mirror {:?} is still in its initial copy after {} s, so the \
                     target is incomplete",
                    mirror.name,
                    self.timeout.as_secs()
                );
                self.gave_up = true;
                return Ok(());
            }
            if started.elapsed() >= self.timeout {
                self.synced = false;
                self.note = format!(
                    "approximate: mirror {:?} did not reach the source's WAL position {lsn} \
                     within {} s (is it running?); differences may be changes not applied yet",
                    mirror.name,
                    self.timeout.as_secs()
                );
                self.lsn = Some(lsn);
                self.gave_up = true;
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The mirror's set-up state in `pgmirror.mirrors`.
async fn mirror_state(target: &Client, name: &str) -> anyhow::Result<Option<MirrorState>> {
    Ok(registry::load(target, name).await.context("reading pgmirror.mirrors")?.map(|r| r.state))
}

/// Whether the target's progress, or the slot's confirmed position, has reached `lsn`.
async fn applied_up_to(
    source: &Client,
    target: &Client,
    mirror: &MirrorRef,
    lsn: &str,
) -> anyhow::Result<bool> {
    let wanted: pgoutput_decoder::Lsn = lsn.parse().context("reading the source's WAL position")?;
    let progress =
        applier::progress::load(target, &mirror.name).await.context("reading pgmirror.progress")?;
    if progress.is_some_and(|p| p >= wanted) {
        return Ok(true);
    }
    // pgmirror confirms to the slot only what the target has committed; pgoutput sends
    // nothing for transactions without published changes, so only the slot moves past them.
    let confirmed: Option<bool> = source
        .query_opt(
            "SELECT confirmed_flush_lsn >= $1::text::pg_lsn FROM pg_catalog.pg_replication_slots \
             WHERE slot_name = $2",
            &[&lsn, &mirror.slot],
        )
        .await
        .context("reading pg_replication_slots")?
        .and_then(|r| r.get(0));
    Ok(confirmed == Some(true))
}

async fn begin_snapshot(source: &Client) -> anyhow::Result<()> {
    source
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .context("starting a snapshot on the source")
}

async fn end_snapshot(source: &Client) -> anyhow::Result<()> {
    source.batch_execute("COMMIT").await.context("ending the source snapshot")
}

/// One table's ranges and their hashes on both sides.
struct TableState {
    def: TableDef,
    /// Whether the table exists on the target.
    on_target: bool,
    /// `(range, source hash, target hash)`; the ranges tile the key space.
    chunks: Vec<(KeyRange, TableHash, TableHash)>,
}

async fn hash_table(
    source: &Client,
    target: &Client,
    def: TableDef,
    chunk_rows: u32,
) -> anyhow::Result<TableState> {
    let name = def.quoted();
    let on_target: bool = target
        .query_one("SELECT to_regclass($1::text) IS NOT NULL", &[&name])
        .await
        .context("looking up a target table")?
        .get(0);
    let mut ranges: Vec<(KeyRange, TableHash)> = tablesync::chunk_hashes(source, &def, chunk_rows)
        .await?
        .into_iter()
        .map(|c| (c.range, c.hash))
        .collect();
    if ranges.is_empty() {
        // An empty source table: one unbounded range catches any target rows.
        let hash = tablesync::table_hash(source, &def, None).await?;
        ranges.push((KeyRange::default(), hash));
    }
    if !on_target {
        let missing = TableHash { rows: 0, md5: String::new() };
        let chunks = ranges.into_iter().map(|(r, h)| (r, h, missing.clone())).collect();
        return Ok(TableState { def, on_target, chunks });
    }
    // Queries on one client are pipelined.
    let target_hashes =
        try_join_all(ranges.iter().map(|(r, _)| tablesync::table_hash(target, &def, Some(r))))
            .await
            .with_context(|| format!("hashing {name} on the target"))?;
    let chunks = ranges.into_iter().zip(target_hashes).map(|((r, s), t)| (r, s, t)).collect();
    Ok(TableState { def, on_target, chunks })
}

impl TableState {
    fn matches(&self) -> bool {
        self.on_target && self.chunks.iter().all(|(_, s, t)| s == t)
    }

    /// Hashes the differing ranges again on both sides.
    async fn recheck(&mut self, source: &Client, target: &Client) -> anyhow::Result<()> {
        if !self.on_target {
            return Ok(());
        }
        for (range, src, dst) in self.chunks.iter_mut().filter(|(_, s, t)| s != t) {
            let (s, t) = futures_util::future::try_join(
                tablesync::table_hash(source, &self.def, Some(range)),
                tablesync::table_hash(target, &self.def, Some(range)),
            )
            .await?;
            *src = s;
            *dst = t;
        }
        Ok(())
    }

    async fn verdict(
        &self,
        source: &Client,
        target: &Client,
        max_diffs: usize,
    ) -> anyhow::Result<TableVerdict> {
        let source_rows = self.chunks.iter().map(|(_, s, _)| s.rows).sum();
        let differing: Vec<&KeyRange> =
            self.chunks.iter().filter(|(_, s, t)| s != t).map(|(r, _, _)| r).collect();
        let mut verdict = TableVerdict {
            table: display_name(&self.def),
            matches: self.matches(),
            source_rows,
            target_rows: self.on_target.then(|| self.chunks.iter().map(|(_, _, t)| t.rows).sum()),
            chunks: self.chunks.len(),
            differing_chunks: differing.len(),
            diffs: Vec::new(),
            truncated: false,
        };
        if !self.on_target {
            return Ok(verdict);
        }
        for range in differing {
            if verdict.diffs.len() >= max_diffs {
                verdict.truncated = true;
                break;
            }
            let mut keys = tablesync::diff_keys(source, target, &self.def, range).await?;
            keys.sort_by(|a, b| compare_keys(&a.key, &b.key));
            for k in keys {
                if verdict.diffs.len() >= max_diffs {
                    verdict.truncated = true;
                    break;
                }
                verdict.diffs.push(RowDiff {
                    key: render_key(&self.def, &k.key),
                    key_values: k.key,
                    kind: kind_name(k.kind),
                });
            }
        }
        Ok(verdict)
    }
}

/// Orders keys for display: numeric parts as numbers (so `3` comes before `100000`, as in the
/// table's key order), other parts as text.
fn compare_keys(a: &[String], b: &[String]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        let order = match (x.parse::<i128>(), y.parse::<i128>()) {
            (Ok(x), Ok(y)) => x.cmp(&y),
            _ => x.cmp(y),
        };
        if order != Ordering::Equal {
            return order;
        }
    }
    a.len().cmp(&b.len())
}

fn kind_name(kind: DiffKind) -> &'static str {
    match kind {
        DiffKind::MissingOnTarget => "missing_on_target",
        DiffKind::ExtraOnTarget => "extra_on_target",
        DiffKind::Differs => "differs",
    }
}

/// `id=42` or `order_id=7, line=2`; for tables without a key, the row text.
fn render_key(def: &TableDef, key: &[String]) -> String {
    let cols = def.key_columns();
    if cols.is_empty() {
        return key.join(", ");
    }
    cols.iter().zip(key).map(|(c, v)| format!("{c}={v}")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(table: &str, diffs: Vec<RowDiff>) -> TableVerdict {
        TableVerdict {
            table: table.into(),
            matches: diffs.is_empty(),
            source_rows: 3,
            target_rows: Some(3),
            chunks: 1,
            differing_chunks: usize::from(!diffs.is_empty()),
            diffs,
            truncated: false,
        }
    }

    #[test]
    fn keys_sort_numerically_where_numeric() {
        let key = |parts: &[&str]| parts.iter().map(|p| (*p).to_owned()).collect::<Vec<_>>();
        let mut keys = vec![key(&["100000"]), key(&["3"]), key(&["-2"]), key(&["b"]), key(&["a"])];
        keys.sort_by(|a, b| compare_keys(a, b));
        assert_eq!(keys, [key(&["-2"]), key(&["3"]), key(&["100000"]), key(&["a"]), key(&["b"])]);
        assert_eq!(compare_keys(&key(&["5", "10"]), &key(&["5", "9"])), Ordering::Greater);
    }

    #[test]
    fn render_lists_differing_keys() {
        let report = VerifyReport {
            mirror: Some("m".into()),
            synced: true,
            source_lsn: Some("0/10".into()),
            note: "synchronised".into(),
            tables: vec![
                verdict("public.a", vec![]),
                verdict(
                    "public.bb",
                    vec![RowDiff {
                        key: "id=7".into(),
                        key_values: vec!["7".into()],
                        kind: "differs",
                    }],
                ),
            ],
        };
        assert!(!report.all_match());
        let text = report.render();
        assert!(text.contains("✔ public.a   3 rows, 1 chunk matches"), "{text}");
        assert!(
            text.contains("✘ public.bb  source 3 rows, target 3; 1 of 1 chunk differs"),
            "{text}"
        );
        assert!(text.contains("    differs            id=7"), "{text}");
        assert!(text.ends_with("1 of 2 tables differs\n"), "{text}");
    }
}
