//! [`PostgresTarget`]: a PostgreSQL mini-replica.
//!
//! # Transactions and progress
//! Source transactions are grouped into one target transaction, opened lazily and committed by
//! [`Target::flush`]. The progress row (`pgmirror.progress`, keyed by mirror name) is written
//! in that same transaction, so after a crash the target holds exactly the source transactions
//! up to the stored end LSN: the applier skips those and replays the rest.
//!
//! # Durability
//! By default the session runs with `synchronous_commit = off`, as the native subscriber does:
//! COMMIT returns before its WAL is flushed. A target crash may then lose the last commits,
//! but the progress row goes with them, so the source sends them again. What must not happen
//! is confirming such a commit to the primary (it would drop the WAL we still need). So after
//! each COMMIT we record the target's WAL insert position, and report a source LSN as durable
//! only once `pg_current_wal_flush_lsn()` has passed the position recorded for it (the WAL
//! writer flushes within a few hundred milliseconds; the applier polls). With
//! `synchronous_commit: true` the session uses `local` and a returned COMMIT is durable.
//!
//! # Speed
//! Statements are pipelined (see `pipeline.rs`) with prepared statements cached per table and
//! shape. Runs of inserts into one table become one `COPY` (binary when pgoutput sent binary
//! values, which are exactly the send/recv format `COPY (FORMAT binary)` reads). Runs of updates
//! and deletes by key become one set-based statement over arrays; a run is cut where a key
//! repeats so the per-key order holds.
//!
//! # Rows, identity and TOAST
//! Rows are found by the replica identity: the key columns (from the old key tuple when sent,
//! else from the new row) or, for `REPLICA IDENTITY FULL`, the whole old row (`=` for values,
//! so an index on any of its columns serves the lookup, and `IS NULL` for NULLs), one row at a
//! time (`ctid = (SELECT ctid ... LIMIT 1)`) so identical duplicates are handled one by one.
//! Unchanged TOAST values are left out of `SET` lists. A row to update or delete that the
//! target lacks is logged and counted, as the native subscriber does.
//!
//! # Schema drift
//! A source column the target table lacks is added (`ALTER TABLE ... ADD COLUMN`, inside the
//! target transaction): builtin types are named by the target's `format_type`, other types by
//! the source's Type message or a [`TypeResolver`]. Any other difference (a target column the
//! source does not send, a changed type, a missing table) stops with [`ApplyError::Schema`]
//! before anything of that transaction is committed.

mod pipeline;
mod table;
mod value;

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, TryStreamExt};
use pgconn::quote_ident;
use pgoutput_decoder::{Column, ColumnValue, DecodingMessage, Lsn, OldTuple, Relation, Tuple};
use tokio_postgres::types::PgLsn;
use tokio_postgres::{Client, CopyInSink, Statement};

use crate::error::{ApplyError, Op, SchemaChange};
use crate::target::{Change, CommitInfo, Target, TxnInfo, TypeMap};
use pipeline::{Pipeline, Purpose, StmtFuture};
use table::{ColInfo, Match, RowType, StmtKey, TableInfo, UniqueHazard};
use value::{COPY_BINARY_HEADER, COPY_BINARY_TRAILER, Param, ValueFormat};

/// Names a type the target cannot name itself: a non-builtin source type OID (with its type
/// modifier) to an SQL type name, already quoted as needed. Used for `ADD COLUMN` on drift.
pub trait TypeResolver: Send + Sync {
    /// The SQL type name for a source type, if known.
    fn type_name(&self, type_oid: u32, type_modifier: i32) -> Option<String>;
}

/// The error a connector may fail with.
type ConnectError = Box<dyn std::error::Error + Send + Sync>;

/// Opens another connection to the same target database (see
/// [`PostgresTarget::with_connector`]).
type Connector = Arc<
    dyn Fn() -> Pin<Box<dyn std::future::Future<Output = Result<Client, ConnectError>> + Send>>
        + Send
        + Sync,
>;

/// Settings of a [`PostgresTarget`].
#[derive(Debug, Clone)]
pub struct PostgresTargetConfig {
    /// Key of this mirror's row in `pgmirror.progress` (several mirrors can share a target).
    pub mirror_name: String,
    /// Wait for the WAL flush at every COMMIT (`synchronous_commit = local`) instead of
    /// committing asynchronously and confirming later.
    pub synchronous_commit: bool,
    /// `SET session_replication_role = replica`, as the native subscriber does (ordinary
    /// triggers and foreign-key checks do not fire). Needs superuser; without it a warning is
    /// logged and the session keeps its role.
    pub replica_role: bool,
    /// Bytes of statements in flight before waiting for replies.
    pub max_inflight_bytes: usize,
    /// Statements in flight before waiting for replies.
    pub max_inflight_statements: usize,
    /// Runs of at least this many inserts into one table go through `COPY`.
    pub copy_min_rows: usize,
    /// Runs of at least this many updates or deletes by key go as one set-based statement.
    pub batch_min_rows: usize,
    /// Rows per set-based statement at most.
    pub batch_max_rows: usize,
    /// Report a new table, new columns or a changed column type as
    /// [`ApplyError::SchemaChanged`] for the caller to repair with the source's catalog,
    /// instead of adding the columns here (without defaults: the target cannot know them) or
    /// failing.
    pub report_schema_changes: bool,
}

impl PostgresTargetConfig {
    /// Defaults for a mirror named `mirror_name`.
    pub fn new(mirror_name: impl Into<String>) -> Self {
        PostgresTargetConfig {
            mirror_name: mirror_name.into(),
            synchronous_commit: false,
            replica_role: true,
            max_inflight_bytes: 8 << 20,
            max_inflight_statements: 4096,
            copy_min_rows: 32,
            batch_min_rows: 4,
            batch_max_rows: 2000,
            report_schema_changes: false,
        }
    }
}

/// Counters of a [`PostgresTarget`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PostgresTargetStats {
    /// Target transactions committed.
    pub commits: u64,
    /// Statements sent (row statements, set-based statements, COPYs).
    pub statements: u64,
    /// Rows written through COPY.
    pub copied_rows: u64,
    /// Rows written through set-based statements.
    pub batched_rows: u64,
    /// Rows an update or delete did not find on the target.
    pub missing_rows: u64,
    /// Columns added because the source gained them.
    pub columns_added: u64,
}

pub(crate) const PROGRESS_DDL: &str = "CREATE SCHEMA IF NOT EXISTS pgmirror; \
    CREATE TABLE IF NOT EXISTS pgmirror.progress (\
        mirror_name text PRIMARY KEY, \
        end_lsn pg_lsn NOT NULL, \
        commit_lsn pg_lsn, \
        commit_time timestamptz, \
        xid bigint, \
        updated_at timestamptz NOT NULL DEFAULT now())";

const PROGRESS_UPSERT: &str = "INSERT INTO pgmirror.progress AS p \
    (mirror_name, end_lsn, commit_lsn, commit_time, xid, updated_at) \
    VALUES ($1, $2, $3, $4, $5, clock_timestamp()) \
    ON CONFLICT (mirror_name) DO UPDATE SET end_lsn = EXCLUDED.end_lsn, \
    commit_lsn = EXCLUDED.commit_lsn, commit_time = EXCLUDED.commit_time, \
    xid = EXCLUDED.xid, updated_at = EXCLUDED.updated_at";

const ATTRIBUTES_SQL: &str = "SELECT a.attname::text, a.atttypid, \
        format_type(a.atttypid, a.atttypmod), \
        coalesce(t.typcategory = 'G' OR t.oid IN (114, 142) \
            OR (t.typcategory = 'A' AND (e.typcategory = 'G' OR e.oid IN (114, 142))), false), \
        t.typcategory = 'A', a.attidentity = 'a', a.attgenerated <> '' \
    FROM pg_catalog.pg_attribute a \
    JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
    LEFT JOIN pg_catalog.pg_type e ON e.oid = t.typelem AND t.typcategory = 'A' \
    WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped \
    ORDER BY a.attnum";

/// A table's row type and its attributes (name, type), in the order of its binary form.
const ROW_TYPE_SQL: &str = "SELECT c.reltype, a.attname::text, a.atttypid \
    FROM pg_catalog.pg_class c \
    JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid \
    WHERE c.oid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped \
    ORDER BY a.attnum";

/// Per immediate unique or exclusion index of a table: whether it is an exclusion, expression
/// or partial index, and its columns by name (sorted).
const UNIQUE_INDEXES_SQL: &str = "SELECT i.indisexclusion OR i.indexprs IS NOT NULL \
        OR i.indpred IS NOT NULL, \
        coalesce(array_agg(a.attname::text ORDER BY a.attname::text) \
            FILTER (WHERE a.attname IS NOT NULL), '{}') \
    FROM pg_catalog.pg_index i \
    LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey) \
    WHERE i.indrelid = $1::text::regclass AND (i.indisexclusion OR (i.indisunique AND i.indimmediate)) \
    GROUP BY i.indexrelid, i.indisexclusion, i.indexprs IS NOT NULL, i.indpred IS NOT NULL";

/// Source type OIDs below this are builtin and mean the same on every server.
const FIRST_NON_BUILTIN_OID: u32 = 10_000;

/// Size at which a COPY's buffered rows are sent.
const COPY_CHUNK: usize = 256 * 1024;

/// Bytes of buffered rows after which an insert run stops buffering and streams into a `COPY`
/// (a large transaction must not sit in memory; its later updates then end the run instead of
/// folding into it).
const COPY_STREAM_BYTES: usize = 4 << 20;

/// Bytes of rows buffered over all tables' runs before every run is sent.
const MAX_BUFFERED_BYTES: usize = 32 << 20;

/// The pending changes of one table, to go out as one statement (or a few).
///
/// # Invariant
/// Per table, the target applies exactly the source's sequence of row images:
/// - A run holds changes of one kind whose keys are distinct (as set-based statements and
///   `COPY` need). A change that does not fit ends (sends) its table's run first.
/// - Folding: an update of a row whose buffered insert or update (same key before and after)
///   is still in the run is merged into it: the merged row is the row the source had after
///   both. It moves the update earlier only past changes of other rows of the run, which
///   are of the kind the row itself is in the run for, and into an update only when it keeps
///   the values other unique indexes check (so unique values move in source order).
///
/// Across tables, runs go out as they fill up, not in source order. That only is correct
/// under `session_replication_role = replica` (`reorder`): foreign keys and ordinary
/// triggers do not fire, so nothing on the target depends on the order between tables (only
/// `ENABLE ALWAYS`/`REPLICA` triggers could, as with the native subscriber's batching).
/// Without it, a change to another table first sends the pending run, which keeps the source
/// order across tables too. Nothing is visible before the group's COMMIT either way.
struct Run {
    rel_id: u32,
    rel: Arc<Relation>,
    /// Commit LSN of the source transaction of the run's first change (for errors).
    commit_lsn: Lsn,
    /// Approximate bytes of the buffered rows.
    bytes: usize,
    kind: RunKind,
}

enum RunKind {
    /// Inserts. `keys`: the key of each buffered row to its index, for folding; once `copy`
    /// streams, rows are encoded at once and no longer foldable (`keys` is emptied).
    Insert {
        format: Option<ValueFormat>,
        rows: Vec<Tuple>,
        keys: HashMap<RowKey, usize>,
        copy: Option<CopyState>,
    },
    /// Updates by key. `keys`: the old and new key of every row; `Some(i)` when row `i` keeps
    /// its key (a later update of it folds into it), `None` for a key an update moved.
    Update { rows: Vec<UpdateRow>, keys: HashMap<RowKey, Option<usize>> },
    /// Deletes by key.
    Delete { key_binary: Box<[bool]>, rows: Vec<Tuple>, keys: HashSet<RowKey> },
}

/// One buffered update: the old key, the new row, the columns it sets.
struct UpdateRow {
    key: Tuple,
    new: Tuple,
    set: Box<[bool]>,
}

struct CopyState {
    sink: Pin<Box<CopyInSink<Bytes>>>,
    buf: BytesMut,
    rows: u64,
    binary: bool,
}

/// Approximate bytes of a buffered row: the row as received (one buffer) and its handle.
fn tuple_bytes(t: &Tuple) -> usize {
    t.raw().len() + 48
}

/// Key values of a row, each length-prefixed, in one buffer: hashed and compared as a unit,
/// without a reference count per value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
struct RowKey(Vec<u8>);

impl RowKey {
    fn push(&mut self, value: &[u8]) {
        self.0.extend_from_slice(&value.len().to_ne_bytes());
        self.0.extend_from_slice(value);
    }

    /// The values of a key tuple (as built by `key_values`).
    fn of(key: &Tuple) -> RowKey {
        let mut k = RowKey::default();
        for v in key.iter().filter_map(Column::bytes) {
            k.push(v);
        }
        k
    }
}

/// The key columns of `row`, in key order (`key` holds ascending column indices), in one walk
/// over the row; `None` for a column the row lacks.
fn key_columns<'a>(key: &[usize], row: &'a Tuple) -> impl Iterator<Item = Option<Column<'a>>> {
    let mut cols = row.iter().enumerate();
    key.iter().map(move |&k| cols.by_ref().find(|&(i, _)| i == k).map(|(_, c)| c))
}

/// The insert-run key of a row, when its table has a key and the row has every key value.
fn insert_key(t: &TableInfo, new: &Tuple) -> Option<RowKey> {
    if t.key.is_empty() || t.full_identity() {
        return None;
    }
    let mut k = RowKey::default();
    for c in key_columns(&t.key, new) {
        k.push(c?.bytes()?);
    }
    Some(k)
}

/// A buffered insert with a later update of the same row folded in: values the update sent
/// replace the inserted ones (unchanged TOAST values keep the inserted value).
fn fold_into_insert(inserted: &Tuple, new: &Tuple) -> Tuple {
    Tuple::from_columns(
        inserted.iter().zip(new).map(|(i, n)| if n.is_unchanged_toast() { i } else { n }),
    )
}

/// A buffered update with a later update of the same row folded in.
fn fold_into_update(row: &mut UpdateRow, new: &Tuple, set: &[bool]) {
    row.new = Tuple::from_columns(
        row.new.iter().zip(new).zip(set).map(|((old, new), &s)| if s { new } else { old }),
    );
    for (was, &s) in row.set.iter_mut().zip(set) {
        *was |= s;
    }
}

/// Whether an update of a buffered row may fold into it without changing where unique values
/// move: it keeps every value the table's other unique indexes check (see [`UniqueHazard`]).
/// Folding moves the update earlier, past other rows' updates; one that leaves those values
/// alone commutes with them.
fn keeps_unique_values(hazard: &UniqueHazard, buffered: &Tuple, new: &Tuple) -> bool {
    match hazard {
        UniqueHazard::None => true,
        UniqueHazard::RowByRow => false,
        UniqueHazard::Columns(cols) => cols.iter().all(|&c| match (buffered.get(c), new.get(c)) {
            (_, Some(Column::UnchangedToast)) => true,
            (Some(a), Some(b)) => a == b,
            _ => false,
        }),
    }
}

/// A PostgreSQL target. See the module documentation for transactions, durability and speed.
pub struct PostgresTarget {
    client: Arc<Client>,
    /// The session's backend process id, by which the target's lock tables name it.
    pid: i32,
    cfg: PostgresTargetConfig,
    tables: HashMap<u32, TableInfo>,
    types: TypeMap,
    resolver: Option<Arc<dyn TypeResolver>>,
    connector: Option<Connector>,
    /// Whether schema drift is repaired here (not in a forked session: its ALTER TABLE would
    /// hold a lock the main session may need before the fork can commit).
    alters_schema: bool,
    pipe: Pipeline,
    /// Pending runs, at most one per table (see [`Run`] for the invariant).
    runs: Vec<Run>,
    /// Bytes buffered in `runs`.
    buffered: usize,
    /// Runs of different tables may go out in any order: the session's replication role is
    /// `replica`.
    reorder: bool,
    in_txn: bool,
    source: Option<TxnInfo>,
    last_commit: Option<CommitInfo>,
    progress_stmt: Statement,
    wal_stmt: Statement,
    flush_lsn_stmt: Statement,
    /// (target WAL position after the COMMIT, source end LSN it holds), oldest first.
    unconfirmed: VecDeque<(u64, Lsn)>,
    durable: Option<Lsn>,
    poisoned: bool,
    stats: PostgresTargetStats,
}

impl fmt::Debug for PostgresTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresTarget")
            .field("mirror_name", &self.cfg.mirror_name)
            .field("in_txn", &self.in_txn)
            .field("reorder", &self.reorder)
            .field("durable", &self.durable)
            .field("pipeline", &self.pipe)
            .finish_non_exhaustive()
    }
}

fn stmt_future(client: &Arc<Client>, stmt: Statement, params: Vec<Param>) -> StmtFuture {
    let client = Arc::clone(client);
    Box::pin(async move { client.execute_raw(&stmt, params).await })
}

fn simple_future(client: &Arc<Client>, sql: String) -> StmtFuture {
    let client = Arc::clone(client);
    Box::pin(async move { client.batch_execute(&sql).await.map(|()| 0) })
}

fn params_bytes(params: &[Param]) -> usize {
    params
        .iter()
        .map(|p| match p {
            Param::Null => 4,
            Param::Text(b) | Param::Binary(b) => b.len() + 4,
        })
        .sum::<usize>()
        + 32
}

/// Same relation shape (everything but the xid it arrived with).
fn same_shape(a: &Relation, b: &Relation) -> bool {
    a.rel_id == b.rel_id
        && a.namespace == b.namespace
        && a.name == b.name
        && a.replica_identity == b.replica_identity
        && a.columns == b.columns
}

impl PostgresTarget {
    /// Sets up the session (synchronous_commit, replication role), creates the progress table
    /// if missing and prepares the bookkeeping statements. The caller spawned the client's
    /// connection task.
    ///
    /// # Errors
    /// When the target rejects the setup.
    pub async fn new(client: Client, cfg: PostgresTargetConfig) -> Result<Self, ApplyError> {
        let sync = if cfg.synchronous_commit { "local" } else { "off" };
        client
            .batch_execute(&format!("SET synchronous_commit = {sync}"))
            .await
            .map_err(|e| ApplyError::target("setting synchronous_commit", e))?;
        // Rows are always found by key, as the native subscriber finds them (through the
        // identity index). The planner would seq-scan small tables, and a table that many
        // updates of one group have bloated with versions only this transaction can see is
        // then scanned whole for every row: measured at ~250 us per update of a 200-row table.
        // A disabled seq scan still costs 1e10, which crosses `jit_above_cost`: a FULL-identity
        // table without an index (only a seq scan can find its rows) then JIT-compiled every
        // statement, about 160 ms each. Apply statements touch a few rows; JIT never pays.
        client
            .batch_execute("SET enable_seqscan = off; SET jit = off")
            .await
            .map_err(|e| ApplyError::target("setting enable_seqscan and jit", e))?;
        let mut reorder = false;
        if cfg.replica_role {
            match client.batch_execute("SET session_replication_role = replica").await {
                Ok(()) => reorder = true,
                Err(e)
                    if e.code()
                        == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) =>
                {
                    tracing::warn!(
                        "not a superuser: triggers and foreign keys fire on the target, and \
                         changes to different tables are not batched together"
                    );
                }
                Err(e) => return Err(ApplyError::target("setting session_replication_role", e)),
            }
        }
        client
            .batch_execute(PROGRESS_DDL)
            .await
            .map_err(|e| ApplyError::target("creating pgmirror.progress", e))?;
        let progress_stmt = client
            .prepare(PROGRESS_UPSERT)
            .await
            .map_err(|e| ApplyError::target("preparing progress update", e))?;
        let wal_stmt = client
            .prepare("SELECT pg_current_wal_insert_lsn(), pg_current_wal_flush_lsn()")
            .await
            .map_err(|e| ApplyError::target("preparing WAL position query", e))?;
        let flush_lsn_stmt = client
            .prepare("SELECT pg_current_wal_flush_lsn()")
            .await
            .map_err(|e| ApplyError::target("preparing WAL position query", e))?;
        let pid = client
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .map_err(|e| ApplyError::target("reading the backend's process id", e))?
            .get(0);
        let pipe = Pipeline::new(cfg.max_inflight_bytes, cfg.max_inflight_statements);
        Ok(PostgresTarget {
            client: Arc::new(client),
            pid,
            cfg,
            tables: HashMap::new(),
            types: TypeMap::new(),
            resolver: None,
            connector: None,
            alters_schema: true,
            pipe,
            runs: Vec::new(),
            buffered: 0,
            reorder,
            in_txn: false,
            source: None,
            last_commit: None,
            progress_stmt,
            wal_stmt,
            flush_lsn_stmt,
            unconfirmed: VecDeque::new(),
            durable: None,
            poisoned: false,
            stats: PostgresTargetStats::default(),
        })
    }

    /// Names non-builtin types for `ADD COLUMN` when the source's Type messages do not.
    #[must_use]
    pub fn with_type_resolver(mut self, resolver: Arc<dyn TypeResolver>) -> Self {
        self.resolver = Some(resolver);
        self
    }

    /// Lets [`Target::fork`] open a second connection with `connect`, which returns a client
    /// whose connection task is already spawned: a large streamed transaction is then applied
    /// while it arrives, instead of from its spill file at its commit.
    #[must_use]
    pub fn with_connector<F, Fut, E>(mut self, connect: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Client, E>> + Send + 'static,
        E: Into<ConnectError>,
    {
        self.connector = Some(Arc::new(move || {
            let connecting = connect();
            Box::pin(async move { connecting.await.map_err(Into::into) })
        }));
        self
    }

    /// The target connection (for queries of the caller's own between flushes).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Counters so far.
    pub fn stats(&self) -> PostgresTargetStats {
        PostgresTargetStats { missing_rows: self.pipe.missing_rows, ..self.stats.clone() }
    }

    fn commit_lsn(&self) -> Lsn {
        self.source.as_ref().map_or(Lsn::ZERO, |s| s.commit_lsn)
    }

    /// Runs `f`, poisoning the target if it fails (its session state is then unknown).
    fn check<R>(&mut self, r: Result<R, ApplyError>) -> Result<R, ApplyError> {
        if r.is_err() {
            self.poisoned = true;
        }
        r
    }

    fn guard(&self) -> Result<(), ApplyError> {
        if self.poisoned { Err(ApplyError::Poisoned) } else { Ok(()) }
    }

    /// Whether changes to different tables are batched independently (each table's run goes
    /// out on its own schedule): the session runs with `session_replication_role = replica`.
    pub fn batches_across_tables(&self) -> bool {
        self.reorder
    }

    /// Sends a statement (ending an open `COPY` first: nothing else may go out during one).
    async fn push(
        &mut self,
        fut: StmtFuture,
        purpose: Purpose,
        bytes: usize,
    ) -> Result<(), ApplyError> {
        self.close_copy().await?;
        self.stats.statements += 1;
        self.pipe.push(fut, purpose, bytes).await
    }

    /// Sends a prepared statement for a change (`expected` rows) into the pipeline.
    async fn push_change(
        &mut self,
        stmt: Statement,
        params: Vec<Param>,
        table: Arc<str>,
        op: Op,
        commit_lsn: Lsn,
        expected: u64,
    ) -> Result<(), ApplyError> {
        let bytes = params_bytes(&params);
        let purpose = Purpose::Change { table, op, commit_lsn, expected };
        let fut = stmt_future(&self.client, stmt, params);
        self.push(fut, purpose, bytes).await
    }

    /// Ends the open `COPY`, if any, and waits for every reply: before a query that needs
    /// its answer.
    async fn quiesce(&mut self) -> Result<(), ApplyError> {
        self.close_copy().await?;
        self.pipe.drain().await
    }

    async fn ensure_txn(&mut self) -> Result<(), ApplyError> {
        if !self.in_txn {
            let fut = simple_future(&self.client, "BEGIN".to_owned());
            self.pipe.push(fut, Purpose::Other("BEGIN"), 16).await?;
            self.in_txn = true;
        }
        Ok(())
    }

    /// Makes sure `tables[rel.rel_id]` matches `rel`, checking (and repairing) the target
    /// table when the relation is new or changed.
    async fn table(&mut self, rel: &Arc<Relation>) -> Result<(), ApplyError> {
        if let Some(t) = self.tables.get_mut(&rel.rel_id) {
            if Arc::ptr_eq(&t.rel, rel) {
                return Ok(());
            }
            if same_shape(&t.rel, rel) {
                // The primary resends a Relation after any cache invalidation (an ANALYZE,
                // say): the buffered run goes on, or it would be cut in two for nothing.
                t.rel = Arc::clone(rel);
                for run in self.runs.iter_mut().filter(|r| r.rel_id == rel.rel_id) {
                    run.rel = Arc::clone(rel);
                }
                return Ok(());
            }
        }
        // A run of the old shape is stale: it goes out first. (Runs of other tables may stay
        // buffered; `describe` ends an open COPY, which would leave the catalog query
        // waiting for ever.)
        self.end_table_run(rel.rel_id).await?;
        let cols = self.describe(rel).await?;
        let mut info = TableInfo::new(Arc::clone(rel), cols);
        info.unique_hazard = self.unique_hazard(&info).await?;
        info.row_type = self.row_type(&info).await?;
        self.tables.insert(rel.rel_id, info);
        Ok(())
    }

    /// What the target table's row-by-row checked unique and exclusion indexes, other than
    /// one on exactly the identity key columns, allow (see [`UniqueHazard`]).
    async fn unique_hazard(&mut self, t: &TableInfo) -> Result<UniqueHazard, ApplyError> {
        let mut key: Vec<&str> = t.key.iter().map(|&k| t.rel.columns[k].name.as_str()).collect();
        key.sort_unstable();
        self.quiesce().await?;
        let rows = self
            .client
            .query(UNIQUE_INDEXES_SQL, &[&t.name.as_ref()])
            .await
            .map_err(|e| ApplyError::target(format!("reading the indexes of {}", t.name), e))?;
        let mut guard: Vec<usize> = Vec::new();
        let mut other = false;
        for r in &rows {
            let exclusion_or_expr: bool = r.get(0);
            let cols: Vec<String> = r.get(1);
            if exclusion_or_expr || key.is_empty() {
                return Ok(UniqueHazard::RowByRow);
            }
            if cols == key {
                continue;
            }
            other = true;
            for name in &cols {
                // A column the publication leaves out never changes through it.
                if let Some(i) = t.rel.columns.iter().position(|c| &c.name == name) {
                    guard.push(i);
                }
            }
        }
        guard.sort_unstable();
        guard.dedup();
        Ok(if other { UniqueHazard::Columns(guard.into()) } else { UniqueHazard::None })
    }

    /// The target table's row type, when a table has array columns (only they need it).
    async fn row_type(&mut self, t: &TableInfo) -> Result<Option<RowType>, ApplyError> {
        if !t.cols.iter().any(|c| c.is_array) {
            return Ok(None);
        }
        self.quiesce().await?;
        let rows =
            self.client.query(ROW_TYPE_SQL, &[&t.name.as_ref()]).await.map_err(|e| {
                ApplyError::target(format!("reading the row type of {}", t.name), e)
            })?;
        let mut oid = 0;
        let mut attrs = Vec::with_capacity(rows.len());
        for r in &rows {
            oid = r.get(0);
            let name: String = r.get(1);
            if name == "ordinality" {
                // Would clash with `WITH ORDINALITY`'s column.
                return Ok(None);
            }
            attrs.push((t.rel.columns.iter().position(|c| c.name == name), r.get(2)));
        }
        Ok((oid != 0).then_some(RowType { oid, attrs }))
    }

    /// Reads the target table's columns, adds source columns it lacks, and matches them.
    async fn describe(&mut self, rel: &Arc<Relation>) -> Result<Vec<ColInfo>, ApplyError> {
        let name = table::qualified_name(rel);
        let schema_err = |detail: String| ApplyError::Schema { table: name.clone(), detail };
        self.quiesce().await?;
        let oid: Option<u32> = self
            .client
            .query_one("SELECT to_regclass($1)::oid", &[&name])
            .await
            .map_err(|e| ApplyError::target(format!("looking up {name}"), e))?
            .get(0);
        let changed = |change: SchemaChange| ApplyError::SchemaChanged {
            schema: rel.namespace.clone(),
            table: rel.name.clone(),
            change,
        };
        let Some(oid) = oid else {
            if self.cfg.report_schema_changes {
                return Err(changed(SchemaChange::TableMissing));
            }
            return Err(schema_err("the table does not exist on the target".into()));
        };
        for attempt in 0..2 {
            let rows = self
                .client
                .query(ATTRIBUTES_SQL, &[&oid])
                .await
                .map_err(|e| ApplyError::target(format!("reading the columns of {name}"), e))?;
            struct Attr {
                info: ColInfo,
                generated: bool,
            }
            let mut attrs: HashMap<String, Attr> = HashMap::new();
            for r in &rows {
                let col: String = r.get(0);
                let info = ColInfo {
                    quoted: quote_ident(&col),
                    type_oid: r.get(1),
                    type_name: r.get(2),
                    text_compare: r.get(3),
                    is_array: r.get(4),
                    identity_always: r.get(5),
                };
                attrs.insert(col, Attr { info, generated: r.get(6) });
            }
            let mut missing = Vec::new();
            for c in &rel.columns {
                match attrs.get(&c.name) {
                    None => missing.push(c),
                    Some(a) if a.generated => {
                        return Err(schema_err(format!(
                            "column {:?} is generated on the target",
                            c.name
                        )));
                    }
                    Some(a)
                        if c.type_oid < FIRST_NON_BUILTIN_OID && a.info.type_oid != c.type_oid =>
                    {
                        if self.cfg.report_schema_changes {
                            return Err(changed(SchemaChange::ColumnTypeChanged {
                                column: c.name.clone(),
                            }));
                        }
                        return Err(schema_err(format!(
                            "column {:?} has type {} on the target but type OID {} on the source",
                            c.name, a.info.type_name, c.type_oid
                        )));
                    }
                    Some(_) => {}
                }
            }
            for (col, a) in &attrs {
                if !a.generated && !rel.columns.iter().any(|c| &c.name == col) {
                    return Err(schema_err(format!(
                        "column {col:?} exists on the target but the source does not send it"
                    )));
                }
            }
            if missing.is_empty() {
                return Ok(rel
                    .columns
                    .iter()
                    .map(|c| attrs.remove(&c.name).expect("checked above").info)
                    .collect());
            }
            if attempt > 0 {
                return Err(schema_err("columns still missing after ADD COLUMN".into()));
            }
            if self.cfg.report_schema_changes && self.alters_schema {
                let names = missing.iter().map(|c| c.name.clone()).collect();
                return Err(changed(SchemaChange::ColumnsAdded(names)));
            }
            if !self.alters_schema {
                return Err(schema_err("columns missing, and this session adds none".into()));
            }
            // Schema drift: add the columns inside the target transaction, then look again.
            self.ensure_txn().await?;
            self.quiesce().await?;
            for c in missing {
                let ty = Self::type_name(
                    &self.client,
                    &self.types,
                    self.resolver.as_ref(),
                    c.type_oid,
                    c.type_modifier,
                )
                .await?
                .ok_or_else(|| {
                    schema_err(format!(
                        "cannot name type OID {} of new column {:?}",
                        c.type_oid, c.name
                    ))
                })?;
                let sql = format!("ALTER TABLE {name} ADD COLUMN {} {ty}", quote_ident(&c.name));
                tracing::info!(table = %name, column = %c.name, %ty, "adding a column the source gained");
                self.client
                    .batch_execute(&sql)
                    .await
                    .map_err(|e| ApplyError::target(format!("adding column to {name}"), e))?;
                self.stats.columns_added += 1;
            }
        }
        unreachable!("the loop returns")
    }

    /// An SQL name for a source type. (Not a method: a `&self` held across an await would
    /// need the target to be `Sync`, and in-flight statement futures are not.)
    async fn type_name(
        client: &Client,
        types: &TypeMap,
        resolver: Option<&Arc<dyn TypeResolver>>,
        oid: u32,
        typmod: i32,
    ) -> Result<Option<String>, ApplyError> {
        if oid < FIRST_NON_BUILTIN_OID {
            let row = client
                .query_one("SELECT format_type($1, $2)", &[&oid, &typmod])
                .await
                .map_err(|e| ApplyError::target("naming a builtin type", e))?;
            return Ok(row.get(0));
        }
        if let Some(t) = types.get(&oid) {
            let ns = if t.namespace.is_empty() { "pg_catalog" } else { t.namespace.as_str() };
            return Ok(Some(format!("{}.{}", quote_ident(ns), quote_ident(&t.name))));
        }
        Ok(resolver.and_then(|r| r.type_name(oid, typmod)))
    }

    /// The prepared statement `key` for table `rel_id`, preparing it on first use.
    async fn statement(
        &mut self,
        rel_id: u32,
        op: Op,
        key: StmtKey,
        sql: impl FnOnce(&TableInfo) -> String,
    ) -> Result<(Statement, Arc<str>), ApplyError> {
        let t = self.tables.get(&rel_id).ok_or(ApplyError::UnknownRelation { rel_id })?;
        let name = Arc::clone(&t.name);
        if let Some(s) = t.stmts.get(&key) {
            return Ok((s.clone(), name));
        }
        let sql = sql(t);
        self.quiesce().await?;
        let stmt = self.client.prepare(&sql).await.map_err(|source| ApplyError::Change {
            table: name.to_string(),
            op,
            commit_lsn: self.commit_lsn(),
            source,
        })?;
        if let Some(t) = self.tables.get_mut(&rel_id) {
            t.stmts.insert(key, stmt.clone());
        }
        Ok((stmt, name))
    }

    async fn apply(&mut self, change: Change) -> Result<(), ApplyError> {
        match change {
            Change::Insert { rel, new } => self.insert(rel, new).await,
            Change::Update { rel, old, new } => self.update(rel, old, new).await,
            Change::Delete { rel, old } => self.delete(rel, old).await,
            Change::Truncate { rels, cascade, restart_identity } => {
                self.end_runs().await?;
                self.ensure_txn().await?;
                let names: Vec<String> = rels.iter().map(|r| table::qualified_name(r)).collect();
                let mut sql = format!("TRUNCATE {}", names.join(", "));
                if restart_identity {
                    sql.push_str(" RESTART IDENTITY");
                }
                if cascade {
                    sql.push_str(" CASCADE");
                }
                let purpose = Purpose::Change {
                    table: names.join(", ").into(),
                    op: Op::Truncate,
                    commit_lsn: self.commit_lsn(),
                    expected: 0,
                };
                let fut = simple_future(&self.client, sql);
                self.push(fut, purpose, 64).await
            }
            // The replica has nowhere to put transactional messages.
            Change::Message(_) => Ok(()),
        }
    }

    fn run_index(&self, rel_id: u32) -> Option<usize> {
        self.runs.iter().position(|r| r.rel_id == rel_id)
    }

    /// Before a change to `rel_id` without cross-table reordering: sends other tables' runs.
    async fn leave_others(&mut self, rel_id: u32) -> Result<(), ApplyError> {
        if !self.reorder {
            while let Some(i) = self.runs.iter().position(|r| r.rel_id != rel_id) {
                let run = self.runs.remove(i);
                self.send_run(run).await?;
            }
        }
        Ok(())
    }

    /// Sends `rel_id`'s run, if any.
    async fn end_table_run(&mut self, rel_id: u32) -> Result<(), ApplyError> {
        match self.run_index(rel_id) {
            Some(i) => {
                let run = self.runs.remove(i);
                self.send_run(run).await
            }
            None => Ok(()),
        }
    }

    /// A savepoint statement, after every buffered run (their rows belong before it).
    async fn subtransaction_statement(
        &mut self,
        sql: String,
        what: &'static str,
    ) -> Result<(), ApplyError> {
        self.guard()?;
        let r = async {
            self.ensure_txn().await?;
            self.end_runs().await?;
            let fut = simple_future(&self.client, sql);
            self.pipe.push(fut, Purpose::Other(what), 32).await
        }
        .await;
        self.check(r)
    }

    /// Sends every run, oldest first.
    async fn end_runs(&mut self) -> Result<(), ApplyError> {
        while !self.runs.is_empty() {
            let run = self.runs.remove(0);
            self.send_run(run).await?;
        }
        Ok(())
    }

    /// A new run for `rel`, after sending the table's current one.
    async fn start_run(&mut self, rel: &Arc<Relation>, kind: RunKind) -> Result<usize, ApplyError> {
        self.end_table_run(rel.rel_id).await?;
        self.runs.push(Run {
            rel_id: rel.rel_id,
            rel: Arc::clone(rel),
            commit_lsn: self.commit_lsn(),
            bytes: 0,
            kind,
        });
        Ok(self.runs.len() - 1)
    }

    /// Accounts `bytes` more buffered in run `i`; sends everything when over the budget.
    async fn buffered_more(&mut self, i: usize, bytes: usize) -> Result<(), ApplyError> {
        self.runs[i].bytes += bytes;
        self.buffered += bytes;
        if self.buffered > MAX_BUFFERED_BYTES {
            self.end_runs().await?;
        }
        Ok(())
    }

    async fn insert(&mut self, rel: Arc<Relation>, new: Tuple) -> Result<(), ApplyError> {
        self.table(&rel).await?;
        let rel_id = rel.rel_id;
        let name = Arc::clone(&self.tables[&rel_id].name);
        if new.len() != rel.columns.len() || new.iter().any(Column::is_unchanged_toast) {
            return Err(ApplyError::Schema {
                table: name.to_string(),
                detail: "insert row does not match the relation".into(),
            });
        }
        self.leave_others(rel_id).await?;
        let Some(fmt) = ValueFormat::of_row(&new) else {
            // Mixed text and binary values: no COPY, one statement.
            self.end_table_run(rel_id).await?;
            return self.insert_row(rel_id, self.commit_lsn(), &new).await;
        };
        let key = insert_key(&self.tables[&rel_id], &new);
        let fits = self.run_index(rel_id).is_some_and(|i| match &self.runs[i] {
            Run { rel: r, kind: RunKind::Insert { format, keys, .. }, .. } => {
                Arc::ptr_eq(r, &rel)
                    && (fmt.is_none() || format.is_none() || *format == fmt)
                    && key.as_ref().is_none_or(|k| !keys.contains_key(k))
            }
            _ => false,
        });
        let i = match self.run_index(rel_id) {
            Some(i) if fits => i,
            _ => {
                let kind = RunKind::Insert {
                    format: fmt,
                    rows: Vec::new(),
                    keys: HashMap::new(),
                    copy: None,
                };
                self.start_run(&rel, kind).await?
            }
        };
        let bytes = tuple_bytes(&new);
        let copy_min = self.cfg.copy_min_rows;
        let run = &mut self.runs[i];
        let RunKind::Insert { format, rows, keys, copy } = &mut run.kind else { unreachable!() };
        if format.is_none() {
            *format = fmt;
        }
        if let Some(c) = copy {
            encode_copy_row(c, &new);
            c.rows += 1;
            if c.buf.len() >= COPY_CHUNK {
                let chunk = c.buf.split().freeze();
                if let Err(source) = c.sink.send(chunk).await {
                    let err = ApplyError::Change {
                        table: name.to_string(),
                        op: Op::Insert,
                        commit_lsn: run.commit_lsn,
                        source,
                    };
                    return Err(err);
                }
            }
            return Ok(());
        }
        if let Some(k) = key {
            keys.insert(k, rows.len());
        }
        rows.push(new);
        let stream = run.bytes + bytes >= COPY_STREAM_BYTES && rows.len() >= copy_min;
        if stream {
            return self.stream_copy(i).await;
        }
        self.buffered_more(i, bytes).await
    }

    /// Starts a COPY for table `rel_id` (ending any other open COPY and waiting for the
    /// pipeline first).
    async fn open_copy(
        &mut self,
        rel_id: u32,
        commit_lsn: Lsn,
        binary: bool,
    ) -> Result<CopyState, ApplyError> {
        let (stmt, table) = self
            .statement(rel_id, Op::Insert, StmtKey::Copy { binary }, |t| t.copy_sql(binary))
            .await?;
        self.quiesce().await?;
        let sink = self.client.copy_in::<_, Bytes>(&stmt).await.map_err(|source| {
            ApplyError::Change { table: table.to_string(), op: Op::Insert, commit_lsn, source }
        })?;
        self.stats.statements += 1;
        let mut c = CopyState {
            sink: Box::pin(sink),
            buf: BytesMut::with_capacity(COPY_CHUNK + 4096),
            rows: 0,
            binary,
        };
        if binary {
            c.buf.extend_from_slice(COPY_BINARY_HEADER);
        }
        Ok(c)
    }

    /// Turns the buffered insert run `i` into a streaming COPY (the run stays open).
    async fn stream_copy(&mut self, i: usize) -> Result<(), ApplyError> {
        let (rel_id, commit_lsn) = (self.runs[i].rel_id, self.runs[i].commit_lsn);
        let RunKind::Insert { format, .. } = &self.runs[i].kind else { return Ok(()) };
        let binary = *format != Some(ValueFormat::Text);
        // Another run's COPY may end here, which shifts the indices.
        let mut c = self.open_copy(rel_id, commit_lsn, binary).await?;
        let i = self.run_index(rel_id).expect("opening a COPY keeps this table's run");
        let run = &mut self.runs[i];
        self.buffered -= run.bytes;
        run.bytes = 0;
        let RunKind::Insert { rows, keys, copy, format } = &mut run.kind else { unreachable!() };
        // Only rows of the COPY's format may join it from now on.
        *format = Some(if binary { ValueFormat::Binary } else { ValueFormat::Text });
        for row in rows.drain(..) {
            encode_copy_row(&mut c, &row);
            c.rows += 1;
        }
        *keys = HashMap::new();
        *copy = Some(c);
        Ok(())
    }

    /// Ends the run holding an open COPY, if any.
    async fn close_copy(&mut self) -> Result<(), ApplyError> {
        let open =
            self.runs.iter().position(|r| matches!(r.kind, RunKind::Insert { copy: Some(_), .. }));
        if let Some(i) = open {
            let run = self.runs.remove(i);
            let RunKind::Insert { copy: Some(c), .. } = run.kind else { unreachable!() };
            self.finish_copy(&run.rel, run.commit_lsn, c).await?;
        }
        Ok(())
    }

    /// Sends the rest of a COPY and queues its completion.
    async fn finish_copy(
        &mut self,
        rel: &Relation,
        commit_lsn: Lsn,
        mut c: CopyState,
    ) -> Result<(), ApplyError> {
        if c.binary {
            c.buf.extend_from_slice(COPY_BINARY_TRAILER);
        }
        let table: Arc<str> = table::qualified_name(rel).into();
        let chunk = c.buf.split().freeze();
        if let Err(source) = c.sink.send(chunk).await {
            return Err(ApplyError::Change {
                table: table.to_string(),
                op: Op::Insert,
                commit_lsn,
                source,
            });
        }
        self.stats.copied_rows += c.rows;
        let expected = c.rows;
        let mut sink = c.sink;
        let fut: StmtFuture = Box::pin(async move { sink.as_mut().finish().await });
        let purpose = Purpose::Change { table, op: Op::Insert, commit_lsn, expected };
        self.pipe.push(fut, purpose, 64).await
    }

    /// Sends a run (already taken out of `runs`) as statements.
    async fn send_run(&mut self, run: Run) -> Result<(), ApplyError> {
        self.buffered -= run.bytes;
        let Run { rel_id, rel, commit_lsn, kind, .. } = run;
        match kind {
            RunKind::Insert { copy: Some(c), .. } => self.finish_copy(&rel, commit_lsn, c).await,
            RunKind::Insert { rows, format, copy: None, .. } => {
                let no_arrays = !self.tables[&rel_id].cols.iter().any(|c| c.is_array);
                if rows.len() >= self.cfg.copy_min_rows {
                    let binary = format != Some(ValueFormat::Text);
                    let mut c = self.open_copy(rel_id, commit_lsn, binary).await?;
                    for row in &rows {
                        encode_copy_row(&mut c, row);
                        c.rows += 1;
                        if c.buf.len() >= COPY_CHUNK {
                            let chunk = c.buf.split().freeze();
                            if let Err(source) = c.sink.send(chunk).await {
                                return Err(ApplyError::Change {
                                    table: table::qualified_name(&rel),
                                    op: Op::Insert,
                                    commit_lsn,
                                    source,
                                });
                            }
                        }
                    }
                    self.finish_copy(&rel, commit_lsn, c).await
                } else if rows.len() >= 2 && no_arrays {
                    self.insert_rows(rel_id, commit_lsn, &rows, format).await
                } else {
                    for row in &rows {
                        self.insert_row(rel_id, commit_lsn, row).await?;
                    }
                    Ok(())
                }
            }
            RunKind::Update { rows, .. } => self.flush_update_run(rel_id, commit_lsn, rows).await,
            RunKind::Delete { rows, key_binary, .. } => {
                self.flush_delete_run(rel_id, commit_lsn, rows, key_binary).await
            }
        }
    }

    async fn insert_row(
        &mut self,
        rel_id: u32,
        commit_lsn: Lsn,
        row: &Tuple,
    ) -> Result<(), ApplyError> {
        let (stmt, table) =
            self.statement(rel_id, Op::Insert, StmtKey::Insert, TableInfo::insert_sql).await?;
        let params: Vec<Param> =
            row.values().map(|v| Param::from_value(v).unwrap_or(Param::Null)).collect();
        self.push_change(stmt, params, table, Op::Insert, commit_lsn, 1).await
    }

    /// A short run of inserts as one statement over arrays (a COPY costs a round trip).
    async fn insert_rows(
        &mut self,
        rel_id: u32,
        commit_lsn: Lsn,
        rows: &[Tuple],
        format: Option<ValueFormat>,
    ) -> Result<(), ApplyError> {
        let binary = format != Some(ValueFormat::Text);
        let (stmt, table) = self
            .statement(rel_id, Op::Insert, StmtKey::BatchInsert { binary }, |t| {
                t.batch_insert_sql(binary)
            })
            .await?;
        let t = &self.tables[&rel_id];
        let picks: Vec<(usize, u32)> = t
            .cols
            .iter()
            .enumerate()
            .map(|(i, c)| (i, if binary { c.type_oid } else { TEXT_OID }))
            .collect();
        let params: Vec<Param> =
            value::column_arrays(rows, &picks).into_iter().map(Param::Binary).collect();
        let expected = u64::try_from(rows.len()).unwrap_or(u64::MAX);
        self.stats.batched_rows += expected;
        self.push_change(stmt, params, table, Op::Insert, commit_lsn, expected).await
    }

    /// The key values identifying a row for table `t` (key replica identity), from the old
    /// tuple if sent, else from the new row: a tuple of the key columns only.
    fn key_values(
        t: &TableInfo,
        op: Op,
        old: Option<&Tuple>,
        new: Option<&Tuple>,
    ) -> Result<Tuple, ApplyError> {
        let missing = |detail: &str| ApplyError::MissingIdentity {
            table: t.name.to_string(),
            op,
            detail: detail.into(),
        };
        if t.key.is_empty() {
            return Err(missing("the relation has no key columns (replica identity nothing?)"));
        }
        let src = old.or(new).ok_or_else(|| missing("no old key sent"))?;
        for c in key_columns(&t.key, src) {
            match c {
                Some(Column::Text(_) | Column::Binary(_)) => {}
                Some(Column::UnchangedToast) => {
                    return Err(missing("key column is an unchanged TOAST value"));
                }
                Some(Column::Null) | None => return Err(missing("key column is NULL")),
            }
        }
        Ok(Tuple::from_columns(key_columns(&t.key, src).flatten()))
    }

    async fn update(
        &mut self,
        rel: Arc<Relation>,
        old: Option<OldTuple>,
        new: Tuple,
    ) -> Result<(), ApplyError> {
        self.table(&rel).await?;
        let t = &self.tables[&rel.rel_id];
        if new.len() != t.cols.len() {
            return Err(ApplyError::Schema {
                table: t.name.to_string(),
                detail: "update row does not match the relation".into(),
            });
        }
        let set: Box<[bool]> = new
            .iter()
            .zip(&t.cols)
            .map(|(v, c)| !v.is_unchanged_toast() && !c.identity_always)
            .collect();
        if t.full_identity() {
            let Some(OldTuple::Full(old)) = old else {
                return Err(ApplyError::MissingIdentity {
                    table: t.name.to_string(),
                    op: Op::Update,
                    detail: "replica identity full without the old row".into(),
                });
            };
            self.leave_others(rel.rel_id).await?;
            self.end_table_run(rel.rel_id).await?;
            return self.full_identity_row(rel.rel_id, Op::Update, Some((&new, &set)), &old).await;
        }
        let key = Self::key_values(t, Op::Update, old.as_ref().map(OldTuple::tuple), Some(&new))?;
        if !set.iter().any(|&s| s) {
            return Ok(()); // nothing the target can change
        }
        self.update_by_key(rel, key, new, set).await
    }

    async fn delete(&mut self, rel: Arc<Relation>, old: OldTuple) -> Result<(), ApplyError> {
        self.table(&rel).await?;
        let t = &self.tables[&rel.rel_id];
        if t.full_identity() {
            let OldTuple::Full(old) = old else {
                return Err(ApplyError::MissingIdentity {
                    table: t.name.to_string(),
                    op: Op::Delete,
                    detail: "replica identity full without the old row".into(),
                });
            };
            self.leave_others(rel.rel_id).await?;
            self.end_table_run(rel.rel_id).await?;
            return self.full_identity_row(rel.rel_id, Op::Delete, None, &old).await;
        }
        let key = Self::key_values(t, Op::Delete, Some(old.tuple()), None)?;
        self.delete_by_key(rel, key).await
    }

    /// One update or delete matching the whole old row (REPLICA IDENTITY FULL).
    async fn full_identity_row(
        &mut self,
        rel_id: u32,
        op: Op,
        set: Option<(&Tuple, &[bool])>,
        old: &Tuple,
    ) -> Result<(), ApplyError> {
        let matched: Box<[Match]> = old
            .values()
            .map(|v| match v {
                ColumnValue::UnchangedToast => Match::Skip,
                ColumnValue::Null => Match::Null,
                ColumnValue::Text(_) | ColumnValue::Binary(_) => Match::Value,
            })
            .collect();
        let mut params: Vec<Param> = Vec::new();
        let key = match set {
            Some((new, set)) => {
                params.extend(
                    new.values()
                        .zip(set)
                        .filter(|(_, s)| **s)
                        .filter_map(|(v, _)| Param::from_value(v)),
                );
                StmtKey::Update { set: set.into(), matched: matched.clone() }
            }
            None => StmtKey::Delete { matched: matched.clone() },
        };
        // NULLs are matched by `IS NULL`, without a parameter.
        params.extend(
            old.values().filter(|v| !matches!(v, ColumnValue::Null)).filter_map(Param::from_value),
        );
        let (stmt, table) = match &key {
            StmtKey::Update { set, matched } => {
                let (s, m) = (set.clone(), matched.clone());
                self.statement(rel_id, op, key, move |t| t.update_sql(&s, &m)).await?
            }
            _ => {
                let m = matched.clone();
                self.statement(rel_id, op, key, move |t| t.delete_sql(&m)).await?
            }
        };
        self.push_change(stmt, params, table, op, self.commit_lsn(), 1).await
    }

    /// Updates by key: folds into the table's buffered insert or update of the same row,
    /// joins (or starts) the table's update run, or goes alone.
    async fn update_by_key(
        &mut self,
        rel: Arc<Relation>,
        key: Tuple,
        new: Tuple,
        set: Box<[bool]>,
    ) -> Result<(), ApplyError> {
        let rel_id = rel.rel_id;
        let t = &self.tables[&rel_id];
        let key_bytes = RowKey::of(&key);
        let new_key = new_key_bytes(t, &new);
        let same_key = new_key == key_bytes;
        // Array values cannot travel in `unnest` arrays of their own, only inside rows of the
        // table's type, which carry the new key only.
        let sets_arrays = t.cols.iter().zip(&set).any(|(c, &s)| c.is_array && s);
        let batchable = !t.key.iter().any(|&k| t.cols[k].is_array)
            && (!sets_arrays || (same_key && t.row_type.is_some()));
        let key_tuple = key;
        self.leave_others(rel_id).await?;
        if !batchable {
            self.end_table_run(rel_id).await?;
            return self.update_row(rel_id, self.commit_lsn(), &key_tuple, &new, &set).await;
        }
        let bytes = tuple_bytes(&new) + tuple_bytes(&key_tuple);
        if let Some(i) = self.run_index(rel_id)
            && same_key
            && Arc::ptr_eq(&self.runs[i].rel, &rel)
        {
            match &mut self.runs[i].kind {
                RunKind::Insert { format, rows, keys, copy: None } => {
                    if let Some(&j) = keys.get(&key_bytes) {
                        let merged = fold_into_insert(&rows[j], &new);
                        let fits = ValueFormat::of_row(&merged)
                            .is_some_and(|f| f.is_none() || format.is_none() || f == *format);
                        if fits {
                            rows[j] = merged;
                            return self.buffered_more(i, bytes).await;
                        }
                    }
                }
                RunKind::Update { rows, keys } => {
                    if let Some(Some(j)) = keys.get(&key_bytes)
                        && keeps_unique_values(
                            &self.tables[&rel_id].unique_hazard,
                            &rows[*j].new,
                            &new,
                        )
                    {
                        fold_into_update(&mut rows[*j], &new, &set);
                        return self.buffered_more(i, bytes).await;
                    }
                }
                _ => {}
            }
        }
        let fits = self.run_index(rel_id).is_some_and(|i| match &self.runs[i] {
            Run { rel: r, kind: RunKind::Update { rows, keys }, .. } => {
                Arc::ptr_eq(r, &rel)
                    && rows.len() < self.cfg.batch_max_rows
                    && !keys.contains_key(&key_bytes)
                    && !keys.contains_key(&new_key)
            }
            _ => false,
        });
        let i = match self.run_index(rel_id) {
            Some(i) if fits => i,
            _ => {
                let kind = RunKind::Update { rows: Vec::new(), keys: HashMap::new() };
                self.start_run(&rel, kind).await?
            }
        };
        let RunKind::Update { rows, keys } = &mut self.runs[i].kind else { unreachable!() };
        if same_key {
            keys.insert(key_bytes, Some(rows.len()));
        } else {
            keys.insert(key_bytes, None);
            keys.insert(new_key, None);
        }
        rows.push(UpdateRow { key: key_tuple, new, set });
        self.buffered_more(i, bytes).await
    }

    async fn update_row(
        &mut self,
        rel_id: u32,
        commit_lsn: Lsn,
        key: &Tuple,
        new: &Tuple,
        set: &[bool],
    ) -> Result<(), ApplyError> {
        let t = &self.tables[&rel_id];
        let (s, m): (Box<[bool]>, Box<[Match]>) = (set.into(), t.key_match());
        let key_stmt = StmtKey::Update { set: s.clone(), matched: m.clone() };
        let (stmt, table) =
            self.statement(rel_id, Op::Update, key_stmt, move |t| t.update_sql(&s, &m)).await?;
        let mut params: Vec<Param> = new
            .values()
            .zip(set)
            .filter(|(_, s)| **s)
            .filter_map(|(v, _)| Param::from_value(v))
            .collect();
        params.extend(key.values().filter_map(Param::from_value));
        self.push_change(stmt, params, table, Op::Update, commit_lsn, 1).await
    }

    /// Sends a run of updates (distinct keys): one set-based statement per shape (columns set,
    /// value formats) with enough rows, single-row statements for the rest, in source order.
    async fn flush_update_run(
        &mut self,
        rel_id: u32,
        commit_lsn: Lsn,
        rows: Vec<UpdateRow>,
    ) -> Result<(), ApplyError> {
        let guard_cols = match &self.tables[&rel_id].unique_hazard {
            UniqueHazard::RowByRow => {
                for row in &rows {
                    self.update_row(rel_id, commit_lsn, &row.key, &row.new, &row.set).await?;
                }
                return Ok(());
            }
            UniqueHazard::None => Box::default(),
            UniqueHazard::Columns(cols) => cols.clone(),
        };
        type Shape = (Box<[bool]>, Box<[bool]>, Box<[bool]>);
        let mut shapes: Vec<(Shape, Vec<usize>)> = Vec::new();
        for (i, row) in rows.iter().enumerate() {
            // Formats only matter for the columns that travel.
            let binary: Box<[bool]> = row
                .new
                .iter()
                .zip(&row.set)
                .map(|(v, &s)| s && !matches!(v, Column::Text(_)))
                .collect();
            let shape = (row.set.clone(), binary, column_binary(&row.key).into());
            match shapes.iter_mut().find(|(s, _)| *s == shape) {
                Some((_, group)) => group.push(i),
                None => shapes.push((shape, vec![i])),
            }
        }
        // Rows a set-based statement applied (or looked for: a missing row is counted there).
        let mut done = vec![false; rows.len()];
        for ((set, binary, key_binary), group) in shapes {
            if group.len() < self.cfg.batch_min_rows {
                continue;
            }
            let guard: Vec<usize> = guard_cols.iter().copied().filter(|&c| set[c]).collect();
            let batch: Vec<&UpdateRow> = group.iter().map(|&i| &rows[i]).collect();
            let t = &self.tables[&rel_id];
            let applied = if t.cols.iter().zip(&set).any(|(c, &s)| c.is_array && s) {
                // Rows of the table's type carry binary values only.
                if set.iter().zip(&binary).any(|(&s, &b)| s && !b) {
                    continue;
                }
                self.update_row_type_batch(rel_id, commit_lsn, &batch, set, &guard).await?
            } else {
                self.update_batch(rel_id, commit_lsn, &batch, set, binary, key_binary, &guard)
                    .await?
            };
            match applied {
                None => group.iter().for_each(|&i| done[i] = true),
                Some(positions) => {
                    for p in positions {
                        if let Some(&i) = p.checked_sub(1).and_then(|p| group.get(p)) {
                            done[i] = true;
                        }
                    }
                }
            }
        }
        // The rest in source order: rows applied above kept their unique values, so they
        // commute with these.
        for (row, _) in rows.iter().zip(&done).filter(|(_, d)| !**d) {
            self.update_row(rel_id, commit_lsn, &row.key, &row.new, &row.set).await?;
        }
        Ok(())
    }

    /// One set-based update. Unguarded, it goes into the pipeline (`None`); guarded (see
    /// [`TableInfo::batch_update_sql`]), it waits for the positions of the rows it updated.
    #[allow(clippy::too_many_arguments)]
    async fn update_batch(
        &mut self,
        rel_id: u32,
        commit_lsn: Lsn,
        rows: &[&UpdateRow],
        set: Box<[bool]>,
        binary: Box<[bool]>,
        key_binary: Box<[bool]>,
        guard: &[usize],
    ) -> Result<Option<Vec<usize>>, ApplyError> {
        let (s, b, kb, g) = (set.clone(), binary.clone(), key_binary.clone(), guard.to_vec());
        let key = StmtKey::BatchUpdate {
            set: set.clone(),
            binary: combined(&key_binary, &binary),
            guarded: !guard.is_empty(),
        };
        let (stmt, table) = self
            .statement(rel_id, Op::Update, key, move |t| t.batch_update_sql(&s, &b, &kb, &g))
            .await?;
        let t = &self.tables[&rel_id];
        let key_picks = key_picks(t, &key_binary);
        let set_picks: Vec<(usize, u32)> = t
            .cols
            .iter()
            .enumerate()
            .filter(|&(i, _)| set[i])
            .map(|(i, c)| (i, if binary[i] { c.type_oid } else { TEXT_OID }))
            .collect();
        let params: Vec<Param> = value::column_arrays(rows.iter().map(|r| &r.key), &key_picks)
            .into_iter()
            .chain(value::column_arrays(rows.iter().map(|r| &r.new), &set_picks))
            .map(Param::Binary)
            .collect();
        let guarded = !guard.is_empty();
        self.run_update_batch(stmt, table, params, rows.len(), commit_lsn, guarded).await
    }

    /// A set-based update of rows that keep their key, as one array of the table's row type
    /// (see [`TableInfo::row_update_sql`]); the result as for [`Self::update_batch`].
    async fn update_row_type_batch(
        &mut self,
        rel_id: u32,
        commit_lsn: Lsn,
        rows: &[&UpdateRow],
        set: Box<[bool]>,
        guard: &[usize],
    ) -> Result<Option<Vec<usize>>, ApplyError> {
        let (s, g) = (set.clone(), guard.to_vec());
        let key = StmtKey::RowUpdate { set: set.clone(), guarded: !guard.is_empty() };
        let (stmt, table) =
            self.statement(rel_id, Op::Update, key, move |t| t.row_update_sql(&s, &g)).await?;
        let t = &self.tables[&rel_id];
        let Some(row_type) = &t.row_type else {
            return Err(ApplyError::UnknownRelation { rel_id });
        };
        // The rows are found by their key, which travels even where it is not set (an
        // identity column GENERATED ALWAYS).
        let carried: Vec<bool> = (0..set.len()).map(|i| set[i] || t.key.contains(&i)).collect();
        let array = value::row_type_array(rows.iter().map(|r| &r.new), row_type, &carried);
        let guarded = !guard.is_empty();
        let params = vec![Param::Binary(array)];
        self.run_update_batch(stmt, table, params, rows.len(), commit_lsn, guarded).await
    }

    /// Sends a set-based update: unguarded into the pipeline (`None`: every row applied or
    /// counted missing), guarded waiting for the 1-based positions of the rows it updated.
    async fn run_update_batch(
        &mut self,
        stmt: Statement,
        table: Arc<str>,
        params: Vec<Param>,
        rows: usize,
        commit_lsn: Lsn,
        guarded: bool,
    ) -> Result<Option<Vec<usize>>, ApplyError> {
        let expected = u64::try_from(rows).unwrap_or(u64::MAX);
        if !guarded {
            self.stats.batched_rows += expected;
            self.push_change(stmt, params, table, Op::Update, commit_lsn, expected).await?;
            return Ok(None);
        }
        self.quiesce().await?;
        self.stats.statements += 1;
        let change_err = |source| ApplyError::Change {
            table: table.to_string(),
            op: Op::Update,
            commit_lsn,
            source,
        };
        let returned: Vec<tokio_postgres::Row> = self
            .client
            .query_raw(&stmt, params)
            .await
            .map_err(change_err)?
            .try_collect()
            .await
            .map_err(change_err)?;
        let positions: Vec<usize> =
            returned.iter().filter_map(|r| usize::try_from(r.get::<_, i64>(0)).ok()).collect();
        self.stats.batched_rows += u64::try_from(positions.len()).unwrap_or(u64::MAX);
        Ok(Some(positions))
    }

    async fn delete_by_key(&mut self, rel: Arc<Relation>, key: Tuple) -> Result<(), ApplyError> {
        let rel_id = rel.rel_id;
        let t = &self.tables[&rel_id];
        let batchable = !t.key.iter().any(|&k| t.cols[k].is_array);
        let key_binary = column_binary(&key);
        let key_bytes = RowKey::of(&key);
        let key_tuple = key;
        self.leave_others(rel_id).await?;
        if !batchable {
            self.end_table_run(rel_id).await?;
            return self.delete_row(rel_id, self.commit_lsn(), &key_tuple).await;
        }
        let fits = self.run_index(rel_id).is_some_and(|i| match &self.runs[i] {
            Run { rel: r, kind: RunKind::Delete { key_binary: kb, rows, keys }, .. } => {
                Arc::ptr_eq(r, &rel)
                    && **kb == *key_binary
                    && rows.len() < self.cfg.batch_max_rows
                    && !keys.contains(&key_bytes)
            }
            _ => false,
        });
        let i = match self.run_index(rel_id) {
            Some(i) if fits => i,
            _ => {
                let kind = RunKind::Delete {
                    key_binary: key_binary.into(),
                    rows: Vec::new(),
                    keys: HashSet::new(),
                };
                self.start_run(&rel, kind).await?
            }
        };
        let bytes = tuple_bytes(&key_tuple);
        let RunKind::Delete { rows, keys, .. } = &mut self.runs[i].kind else { unreachable!() };
        keys.insert(key_bytes);
        rows.push(key_tuple);
        self.buffered_more(i, bytes).await
    }

    async fn delete_row(
        &mut self,
        rel_id: u32,
        commit_lsn: Lsn,
        key: &Tuple,
    ) -> Result<(), ApplyError> {
        let t = &self.tables[&rel_id];
        let m = t.key_match();
        let (stmt, table) = self
            .statement(rel_id, Op::Delete, StmtKey::Delete { matched: m.clone() }, move |t| {
                t.delete_sql(&m)
            })
            .await?;
        let params: Vec<Param> = key.values().filter_map(Param::from_value).collect();
        self.push_change(stmt, params, table, Op::Delete, commit_lsn, 1).await
    }

    async fn flush_delete_run(
        &mut self,
        rel_id: u32,
        commit_lsn: Lsn,
        rows: Vec<Tuple>,
        key_binary: Box<[bool]>,
    ) -> Result<(), ApplyError> {
        if rows.len() < self.cfg.batch_min_rows {
            for key in &rows {
                self.delete_row(rel_id, commit_lsn, key).await?;
            }
            return Ok(());
        }
        let kb = key_binary.clone();
        let (stmt, table) = self
            .statement(
                rel_id,
                Op::Delete,
                StmtKey::BatchDelete { binary: key_binary.clone() },
                move |t| t.batch_delete_sql(&kb),
            )
            .await?;
        let t = &self.tables[&rel_id];
        let params: Vec<Param> = value::column_arrays(&rows, &key_picks(t, &key_binary))
            .into_iter()
            .map(Param::Binary)
            .collect();
        let expected = u64::try_from(rows.len()).unwrap_or(u64::MAX);
        self.stats.batched_rows += expected;
        self.push_change(stmt, params, table, Op::Delete, commit_lsn, expected).await
    }
    /// Marks every unconfirmed commit at or below the target's WAL flush position durable.
    fn resolve(&mut self, flushed: u64) {
        while let Some(&(pos, end)) = self.unconfirmed.front() {
            if pos > flushed {
                break;
            }
            self.unconfirmed.pop_front();
            self.durable = Some(self.durable.map_or(end, |d| d.max(end)));
        }
    }

    async fn do_flush(&mut self) -> Result<Option<Lsn>, ApplyError> {
        if let Some(s) = &self.source {
            return Err(ApplyError::protocol(
                "flush",
                format!("inside source transaction {}", s.xid),
            ));
        }
        if self.in_txn || self.last_commit.is_some() {
            self.end_runs().await?;
            self.ensure_txn().await?;
            if let Some(c) = self.last_commit {
                let params = vec![
                    Param::Text(Bytes::from(self.cfg.mirror_name.clone())),
                    Param::Binary(Bytes::copy_from_slice(&u64::from(c.end_lsn).to_be_bytes())),
                    Param::Binary(Bytes::copy_from_slice(&u64::from(c.commit_lsn).to_be_bytes())),
                    Param::Binary(Bytes::copy_from_slice(&c.commit_time.0.to_be_bytes())),
                    Param::Binary(Bytes::copy_from_slice(&i64::from(c.xid).to_be_bytes())),
                ];
                let fut = stmt_future(&self.client, self.progress_stmt.clone(), params);
                self.pipe.push(fut, Purpose::Other("writing progress"), 128).await?;
            }
            let fut = simple_future(&self.client, "COMMIT".to_owned());
            self.pipe.push(fut, Purpose::Other("COMMIT"), 16).await?;
            self.pipe.drain().await?;
            self.in_txn = false;
            self.stats.commits += 1;
            if let Some(c) = self.last_commit.take() {
                if self.cfg.synchronous_commit {
                    self.durable = Some(self.durable.map_or(c.end_lsn, |d| d.max(c.end_lsn)));
                } else {
                    let row = self
                        .client
                        .query_one(&self.wal_stmt, &[])
                        .await
                        .map_err(|e| ApplyError::target("reading the WAL position", e))?;
                    let insert: PgLsn = row.get(0);
                    let flushed: PgLsn = row.get(1);
                    self.unconfirmed.push_back((u64::from(insert), c.end_lsn));
                    self.resolve(u64::from(flushed));
                }
            }
        } else if !self.unconfirmed.is_empty() {
            let row = self
                .client
                .query_one(&self.flush_lsn_stmt, &[])
                .await
                .map_err(|e| ApplyError::target("reading the WAL flush position", e))?;
            let flushed: PgLsn = row.get(0);
            self.resolve(u64::from(flushed));
        }
        debug_assert!(self.pipe.is_empty());
        Ok(self.durable)
    }
}

const TEXT_OID: u32 = 25;

fn encode_copy_row(c: &mut CopyState, row: &Tuple) {
    if c.binary {
        value::copy_binary_row(&mut c.buf, row);
    } else {
        value::copy_text_row(&mut c.buf, row);
    }
}

/// Per column: is the value binary (NULLs count as binary until a text value shows up).
fn column_binary(row: &Tuple) -> Vec<bool> {
    row.iter().map(|v| !matches!(v, Column::Text(_))).collect()
}

/// The arrays of a set-based statement by key: column `j` of the key tuples, as the key
/// column's type when binary, else text.
fn key_picks(t: &TableInfo, key_binary: &[bool]) -> Vec<(usize, u32)> {
    t.key
        .iter()
        .zip(key_binary)
        .enumerate()
        .map(|(j, (&k, &binary))| (j, if binary { t.cols[k].type_oid } else { TEXT_OID }))
        .collect()
}

fn combined(a: &[bool], b: &[bool]) -> Box<[bool]> {
    a.iter().chain(b).copied().collect()
}

/// The key values of a new row (so a later change by the new key is not merged into a run
/// where the old key is still being updated).
fn new_key_bytes(t: &TableInfo, new: &Tuple) -> RowKey {
    let mut k = RowKey::default();
    for v in key_columns(&t.key, new).flatten().filter_map(Column::bytes) {
        k.push(v);
    }
    k
}

impl Target for PostgresTarget {
    async fn load_progress(&mut self) -> Result<Option<Lsn>, ApplyError> {
        self.guard()?;
        let row = self
            .client
            .query_opt(
                "SELECT end_lsn FROM pgmirror.progress WHERE mirror_name = $1",
                &[&self.cfg.mirror_name],
            )
            .await
            .map_err(|e| ApplyError::target("reading pgmirror.progress", e));
        let row = self.check(row)?;
        Ok(row.map(|r| Lsn(u64::from(r.get::<_, PgLsn>(0)))))
    }

    async fn begin(&mut self, txn: &TxnInfo) -> Result<(), ApplyError> {
        self.guard()?;
        self.source = Some(txn.clone());
        Ok(())
    }

    async fn relation(&mut self, rel: &Arc<Relation>, types: &TypeMap) -> Result<(), ApplyError> {
        self.guard()?;
        for (oid, t) in types {
            self.types.entry(*oid).or_insert_with(|| t.clone()).clone_from(t);
        }
        let r = self.table(rel).await;
        self.check(r)
    }

    async fn change(&mut self, change: Change) -> Result<(), ApplyError> {
        self.guard()?;
        let r = async {
            self.ensure_txn().await?;
            self.apply(change).await
        }
        .await;
        self.check(r)
    }

    async fn commit(&mut self, commit: &CommitInfo) -> Result<(), ApplyError> {
        self.guard()?;
        self.source = None;
        self.last_commit = Some(*commit);
        Ok(())
    }

    async fn flush(&mut self) -> Result<Option<Lsn>, ApplyError> {
        self.guard()?;
        let r = self.do_flush().await;
        self.check(r)
    }

    async fn message(&mut self, _msg: &DecodingMessage) -> Result<(), ApplyError> {
        self.guard()
    }

    fn session(&self) -> Option<u32> {
        u32::try_from(self.pid).ok()
    }

    /// Asks the target's lock manager (`pg_blocking_pids`), after every reply this session
    /// awaits: the connection reads no reply while an earlier one is unclaimed.
    async fn blocks(&mut self, session: u32) -> Result<bool, ApplyError> {
        self.guard()?;
        let r = async {
            self.quiesce().await?;
            let pid = i32::try_from(session).unwrap_or(i32::MAX);
            let row = self
                .client
                .query_one("SELECT pg_backend_pid() = ANY (pg_blocking_pids($1))", &[&pid])
                .await
                .map_err(|e| ApplyError::target("asking the target which session blocks", e))?;
            Ok(row.get(0))
        }
        .await;
        self.check(r)
    }

    async fn savepoint(&mut self, id: u32) -> Result<(), ApplyError> {
        self.subtransaction_statement(format!("SAVEPOINT s{id}"), "SAVEPOINT").await
    }

    async fn rollback_to(&mut self, id: u32) -> Result<(), ApplyError> {
        self.subtransaction_statement(format!("ROLLBACK TO SAVEPOINT s{id}"), "ROLLBACK TO").await
    }

    /// A second session with the same settings, except that its COMMIT waits for the WAL
    /// flush (the one large transaction it carries is confirmed as soon as it commits) and
    /// that it fails on schema drift instead of adding columns: an `ALTER TABLE` there would
    /// lock the table until that transaction's commit, while the main session may have to
    /// apply earlier transactions to the same table first.
    async fn fork(&mut self) -> Result<Option<Self>, ApplyError> {
        let Some(connector) = self.connector.clone() else { return Ok(None) };
        let client = connector().await.map_err(ApplyError::Connect)?;
        let cfg = PostgresTargetConfig { synchronous_commit: true, ..self.cfg.clone() };
        let mut fork = PostgresTarget::new(client, cfg).await?;
        fork.resolver.clone_from(&self.resolver);
        fork.alters_schema = false;
        Ok(Some(fork))
    }
}
