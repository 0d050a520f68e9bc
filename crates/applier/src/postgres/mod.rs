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
//! else from the new row) or, for `REPLICA IDENTITY FULL`, the whole old row compared
//! NULL-safely, one row at a time (`ctid = (SELECT ctid ... LIMIT 1)`) so identical duplicates
//! are handled one by one. Unchanged TOAST values are left out of `SET` lists. A row to update
//! or delete that the target lacks is logged and counted, as the native subscriber does.
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
use futures_util::SinkExt;
use pgoutput_decoder::{ColumnValue, DecodingMessage, Lsn, OldTuple, Relation, Tuple};
use tokio_postgres::types::PgLsn;
use tokio_postgres::{Client, CopyInSink, Statement};

use crate::error::{ApplyError, Op};
use crate::target::{Change, CommitInfo, Target, TxnInfo, TypeMap};
use pipeline::{Pipeline, Purpose, StmtFuture};
use table::{ColInfo, StmtKey, TableInfo, quote_ident};
use value::{COPY_BINARY_HEADER, COPY_BINARY_TRAILER, Param, ValueFormat};

/// Names a type the target cannot name itself: a non-builtin source type OID (with its type
/// modifier) to an SQL type name, already quoted as needed. Used for `ADD COLUMN` on drift.
pub trait TypeResolver: Send + Sync {
    /// The SQL type name for a source type, if known.
    fn type_name(&self, type_oid: u32, type_modifier: i32) -> Option<String>;
}

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

/// Source type OIDs below this are builtin and mean the same on every server.
const FIRST_NON_BUILTIN_OID: u32 = 10_000;

/// Size at which a COPY's buffered rows are sent.
const COPY_CHUNK: usize = 256 * 1024;

/// A run of consecutive same-table changes being collected into one statement.
struct Run {
    rel_id: u32,
    rel: Arc<Relation>,
    /// Commit LSN of the source transaction of the run's first change (for errors).
    commit_lsn: Lsn,
    kind: RunKind,
}

enum RunKind {
    /// Inserts; `copy` once the run is long enough.
    Insert { format: Option<ValueFormat>, rows: Vec<Tuple>, copy: Option<CopyState> },
    /// Updates by key with the same SET columns; `keys` guards against repeats.
    Update {
        set: Box<[bool]>,
        binary: Box<[bool]>,
        key_binary: Box<[bool]>,
        rows: Vec<(Tuple, Tuple)>,
        keys: HashSet<Vec<Bytes>>,
    },
    /// Deletes by key.
    Delete { key_binary: Box<[bool]>, rows: Vec<Tuple>, keys: HashSet<Vec<Bytes>> },
}

struct CopyState {
    sink: Pin<Box<CopyInSink<Bytes>>>,
    buf: BytesMut,
    rows: u64,
    binary: bool,
}

/// A PostgreSQL target. See the module documentation for transactions, durability and speed.
pub struct PostgresTarget {
    client: Arc<Client>,
    cfg: PostgresTargetConfig,
    tables: HashMap<u32, TableInfo>,
    types: TypeMap,
    resolver: Option<Arc<dyn TypeResolver>>,
    pipe: Pipeline,
    run: Option<Run>,
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
        if cfg.replica_role
            && let Err(e) = client.batch_execute("SET session_replication_role = replica").await
        {
            if e.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) {
                tracing::warn!("not a superuser: triggers and foreign keys fire on the target");
            } else {
                return Err(ApplyError::target("setting session_replication_role", e));
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
        let pipe = Pipeline::new(cfg.max_inflight_bytes, cfg.max_inflight_statements);
        Ok(PostgresTarget {
            client: Arc::new(client),
            cfg,
            tables: HashMap::new(),
            types: TypeMap::new(),
            resolver: None,
            pipe,
            run: None,
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

    async fn push(
        &mut self,
        fut: StmtFuture,
        purpose: Purpose,
        bytes: usize,
    ) -> Result<(), ApplyError> {
        self.stats.statements += 1;
        self.pipe.push(fut, purpose, bytes).await
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
                t.rel = Arc::clone(rel);
                return Ok(());
            }
        }
        // Any open run must go out before the catalog is queried: a run of the old shape is
        // stale, and a run of another table may hold a COPY open on this connection, which
        // would leave the catalog query waiting for ever.
        if self.run.is_some() {
            self.end_run().await?;
        }
        let cols = self.describe(rel).await?;
        self.tables.insert(rel.rel_id, TableInfo::new(Arc::clone(rel), cols));
        Ok(())
    }

    /// Reads the target table's columns, adds source columns it lacks, and matches them.
    async fn describe(&mut self, rel: &Arc<Relation>) -> Result<Vec<ColInfo>, ApplyError> {
        let name = table::qualified_name(rel);
        let schema_err = |detail: String| ApplyError::Schema { table: name.clone(), detail };
        self.pipe.drain().await?;
        let oid: Option<u32> = self
            .client
            .query_one("SELECT to_regclass($1)::oid", &[&name])
            .await
            .map_err(|e| ApplyError::target(format!("looking up {name}"), e))?
            .get(0);
        let Some(oid) = oid else {
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
            // Schema drift: add the columns inside the target transaction, then look again.
            self.ensure_txn().await?;
            self.pipe.drain().await?;
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
        self.pipe.drain().await?;
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
                self.end_run().await?;
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

    async fn insert(&mut self, rel: Arc<Relation>, new: Tuple) -> Result<(), ApplyError> {
        self.table(&rel).await?;
        let name = Arc::clone(&self.tables[&rel.rel_id].name);
        if new.columns.len() != rel.columns.len()
            || new.columns.iter().any(ColumnValue::is_unchanged_toast)
        {
            return Err(ApplyError::Schema {
                table: name.to_string(),
                detail: "insert row does not match the relation".into(),
            });
        }
        let Some(fmt) = ValueFormat::of_row(&new.columns) else {
            // Mixed text and binary values: no COPY, one statement.
            self.end_run().await?;
            return self.insert_row(rel.rel_id, new).await;
        };
        let fits = match &self.run {
            Some(Run { rel_id, rel: r, kind: RunKind::Insert { format, .. }, .. }) => {
                *rel_id == rel.rel_id
                    && Arc::ptr_eq(r, &rel)
                    && (fmt.is_none() || format.is_none() || *format == fmt)
            }
            _ => false,
        };
        if !fits {
            self.end_run().await?;
            self.run = Some(Run {
                rel_id: rel.rel_id,
                rel: Arc::clone(&rel),
                commit_lsn: self.commit_lsn(),
                kind: RunKind::Insert { format: fmt, rows: Vec::new(), copy: None },
            });
        }
        let copy_min = self.cfg.copy_min_rows;
        let Some(Run { kind: RunKind::Insert { format, rows, copy }, .. }) = &mut self.run else {
            unreachable!()
        };
        if format.is_none() {
            *format = fmt;
        }
        match copy {
            Some(c) => {
                encode_copy_row(c, &new.columns);
                c.rows += 1;
                if c.buf.len() >= COPY_CHUNK {
                    let chunk = c.buf.split().freeze();
                    let res = c.sink.send(chunk).await;
                    if let Err(source) = res {
                        return Err(self.run_error(Op::Insert, source));
                    }
                }
                Ok(())
            }
            None => {
                rows.push(new);
                if rows.len() >= copy_min {
                    self.start_copy().await?;
                }
                Ok(())
            }
        }
    }

    fn run_error(&self, op: Op, source: tokio_postgres::Error) -> ApplyError {
        let (table, commit_lsn) = match &self.run {
            Some(r) => (table::qualified_name(&r.rel), r.commit_lsn),
            None => (String::new(), self.commit_lsn()),
        };
        ApplyError::Change { table, op, commit_lsn, source }
    }

    /// Turns the current insert run into a COPY: drains the pipeline, starts the COPY and
    /// writes the rows collected so far.
    async fn start_copy(&mut self) -> Result<(), ApplyError> {
        let Some(run) = &self.run else { return Ok(()) };
        let RunKind::Insert { format, .. } = &run.kind else { return Ok(()) };
        let binary = *format != Some(ValueFormat::Text);
        let rel_id = run.rel_id;
        let (stmt, _) = self
            .statement(rel_id, Op::Insert, StmtKey::Copy { binary }, |t| t.copy_sql(binary))
            .await?;
        self.pipe.drain().await?;
        let sink = match self.client.copy_in::<_, Bytes>(&stmt).await {
            Ok(s) => s,
            Err(source) => return Err(self.run_error(Op::Insert, source)),
        };
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
        let Some(Run { kind: RunKind::Insert { rows, copy, format }, .. }) = &mut self.run else {
            unreachable!()
        };
        // Only rows of the COPY's format may join it from now on.
        *format = Some(if binary { ValueFormat::Binary } else { ValueFormat::Text });
        for row in rows.drain(..) {
            encode_copy_row(&mut c, &row.columns);
            c.rows += 1;
        }
        *copy = Some(c);
        Ok(())
    }

    /// Sends out the current run as statements.
    async fn end_run(&mut self) -> Result<(), ApplyError> {
        let Some(run) = self.run.take() else { return Ok(()) };
        let commit_lsn = run.commit_lsn;
        match run.kind {
            RunKind::Insert { rows, copy: Some(mut c), .. } => {
                if c.binary {
                    c.buf.extend_from_slice(COPY_BINARY_TRAILER);
                }
                let table: Arc<str> = table::qualified_name(&run.rel).into();
                let chunk = c.buf.split().freeze();
                debug_assert!(rows.is_empty());
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
            RunKind::Insert { rows, copy: None, .. } => {
                for row in rows {
                    self.insert_row(run.rel_id, row).await?;
                }
                Ok(())
            }
            RunKind::Update { rows, set, binary, key_binary, .. } => {
                self.flush_update_run(run.rel_id, commit_lsn, rows, set, binary, key_binary).await
            }
            RunKind::Delete { rows, key_binary, .. } => {
                self.flush_delete_run(run.rel_id, commit_lsn, rows, key_binary).await
            }
        }
    }

    async fn insert_row(&mut self, rel_id: u32, row: Tuple) -> Result<(), ApplyError> {
        let (stmt, table) =
            self.statement(rel_id, Op::Insert, StmtKey::Insert, TableInfo::insert_sql).await?;
        let params: Vec<Param> =
            row.columns.iter().map(|v| Param::from_column(v).unwrap_or(Param::Null)).collect();
        let bytes = params_bytes(&params);
        let purpose =
            Purpose::Change { table, op: Op::Insert, commit_lsn: self.commit_lsn(), expected: 1 };
        let fut = stmt_future(&self.client, stmt, params);
        self.push(fut, purpose, bytes).await
    }

    /// The key values identifying a row for table `t` (key replica identity), from the old
    /// tuple if sent, else from the new row.
    fn key_values(
        t: &TableInfo,
        op: Op,
        old: Option<&Tuple>,
        new: Option<&Tuple>,
    ) -> Result<Vec<ColumnValue>, ApplyError> {
        let missing = |detail: &str| ApplyError::MissingIdentity {
            table: t.name.to_string(),
            op,
            detail: detail.into(),
        };
        if t.key.is_empty() {
            return Err(missing("the relation has no key columns (replica identity nothing?)"));
        }
        let src = old.or(new).ok_or_else(|| missing("no old key sent"))?;
        t.key
            .iter()
            .map(|&k| match src.columns.get(k) {
                Some(v @ (ColumnValue::Text(_) | ColumnValue::Binary(_))) => Ok(v.clone()),
                Some(ColumnValue::UnchangedToast) => {
                    Err(missing("key column is an unchanged TOAST value"))
                }
                Some(ColumnValue::Null) | None => Err(missing("key column is NULL")),
            })
            .collect()
    }

    async fn update(
        &mut self,
        rel: Arc<Relation>,
        old: Option<OldTuple>,
        new: Tuple,
    ) -> Result<(), ApplyError> {
        self.table(&rel).await?;
        let t = &self.tables[&rel.rel_id];
        if new.columns.len() != t.cols.len() {
            return Err(ApplyError::Schema {
                table: t.name.to_string(),
                detail: "update row does not match the relation".into(),
            });
        }
        let set: Box<[bool]> = new
            .columns
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
            self.end_run().await?;
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
            self.end_run().await?;
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
        let matched: Box<[bool]> = old.columns.iter().map(|v| !v.is_unchanged_toast()).collect();
        let mut params: Vec<Param> = Vec::new();
        let key = match set {
            Some((new, set)) => {
                params.extend(
                    new.columns
                        .iter()
                        .zip(set)
                        .filter(|(_, s)| **s)
                        .filter_map(|(v, _)| Param::from_column(v)),
                );
                StmtKey::Update { set: set.into(), matched: matched.clone() }
            }
            None => StmtKey::Delete { matched: matched.clone() },
        };
        params.extend(old.columns.iter().filter_map(Param::from_column));
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
        let bytes = params_bytes(&params);
        let purpose = Purpose::Change { table, op, commit_lsn: self.commit_lsn(), expected: 1 };
        let fut = stmt_future(&self.client, stmt, params);
        self.push(fut, purpose, bytes).await
    }

    /// Updates by key: joins (or starts) a set-based run, or goes alone.
    async fn update_by_key(
        &mut self,
        rel: Arc<Relation>,
        key: Vec<ColumnValue>,
        new: Tuple,
        set: Box<[bool]>,
    ) -> Result<(), ApplyError> {
        let t = &self.tables[&rel.rel_id];
        let batchable =
            !t.cols.iter().enumerate().any(|(i, c)| c.is_array && (set[i] || t.key.contains(&i)));
        let binary = column_binary(&new.columns);
        let key_binary = column_binary(&key);
        let key_bytes: Vec<Bytes> = key.iter().filter_map(|v| v.bytes().cloned()).collect();
        let key_tuple = Tuple { columns: key };
        let new_key = new_key_bytes(&self.tables[&rel.rel_id], &new);
        if batchable
            && let Some(Run {
                rel_id,
                rel: r,
                kind: RunKind::Update { set: s, binary: b, key_binary: kb, rows, keys },
                ..
            }) = &mut self.run
            && *rel_id == rel.rel_id
            && Arc::ptr_eq(r, &rel)
            && *s == set
            && **kb == *key_binary
            && same_formats(b, &binary, &new.columns)
            && rows.len() < self.cfg.batch_max_rows
            && !keys.contains(&key_bytes)
            && !keys.contains(&new_key)
        {
            keys.insert(key_bytes);
            keys.insert(new_key);
            rows.push((key_tuple, new));
            return Ok(());
        }
        self.end_run().await?;
        if batchable {
            let mut keys = HashSet::new();
            keys.insert(key_bytes);
            keys.insert(new_key);
            self.run = Some(Run {
                rel_id: rel.rel_id,
                rel,
                commit_lsn: self.commit_lsn(),
                kind: RunKind::Update {
                    set,
                    binary: binary.into(),
                    key_binary: key_binary.into(),
                    rows: vec![(key_tuple, new)],
                    keys,
                },
            });
            return Ok(());
        }
        self.update_row(rel.rel_id, self.commit_lsn(), &key_tuple, &new, &set).await
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
        let mut matched = vec![false; t.cols.len()];
        for &k in &t.key {
            matched[k] = true;
        }
        let (s, m): (Box<[bool]>, Box<[bool]>) = (set.into(), matched.into());
        let key_stmt = StmtKey::Update { set: s.clone(), matched: m.clone() };
        let (stmt, table) =
            self.statement(rel_id, Op::Update, key_stmt, move |t| t.update_sql(&s, &m)).await?;
        let mut params: Vec<Param> = new
            .columns
            .iter()
            .zip(set)
            .filter(|(_, s)| **s)
            .filter_map(|(v, _)| Param::from_column(v))
            .collect();
        params.extend(key.columns.iter().filter_map(Param::from_column));
        let bytes = params_bytes(&params);
        let purpose = Purpose::Change { table, op: Op::Update, commit_lsn, expected: 1 };
        let fut = stmt_future(&self.client, stmt, params);
        self.push(fut, purpose, bytes).await
    }

    async fn flush_update_run(
        &mut self,
        rel_id: u32,
        commit_lsn: Lsn,
        rows: Vec<(Tuple, Tuple)>,
        set: Box<[bool]>,
        binary: Box<[bool]>,
        key_binary: Box<[bool]>,
    ) -> Result<(), ApplyError> {
        if rows.len() < self.cfg.batch_min_rows {
            for (key, new) in &rows {
                self.update_row(rel_id, commit_lsn, key, new, &set).await?;
            }
            return Ok(());
        }
        let (s, b, kb) = (set.clone(), binary.clone(), key_binary.clone());
        let key = StmtKey::BatchUpdate { set: set.clone(), binary: combined(&key_binary, &binary) };
        let (stmt, table) = self
            .statement(rel_id, Op::Update, key, move |t| t.batch_update_sql(&s, &b, &kb))
            .await?;
        let t = &self.tables[&rel_id];
        let mut params = Vec::new();
        for (j, &k) in t.key.iter().enumerate() {
            let oid = if key_binary[j] { t.cols[k].type_oid } else { TEXT_OID };
            params.push(Param::Binary(value::binary_array(
                oid,
                rows.iter().map(|(key, _)| &key.columns[j]),
            )));
        }
        for (i, c) in t.cols.iter().enumerate() {
            if set[i] {
                let oid = if binary[i] { c.type_oid } else { TEXT_OID };
                params.push(Param::Binary(value::binary_array(
                    oid,
                    rows.iter().map(|(_, new)| &new.columns[i]),
                )));
            }
        }
        let bytes = params_bytes(&params);
        let expected = u64::try_from(rows.len()).unwrap_or(u64::MAX);
        self.stats.batched_rows += expected;
        let purpose = Purpose::Change { table, op: Op::Update, commit_lsn, expected };
        let fut = stmt_future(&self.client, stmt, params);
        self.push(fut, purpose, bytes).await
    }

    async fn delete_by_key(
        &mut self,
        rel: Arc<Relation>,
        key: Vec<ColumnValue>,
    ) -> Result<(), ApplyError> {
        let t = &self.tables[&rel.rel_id];
        let batchable = !t.key.iter().any(|&k| t.cols[k].is_array);
        let key_binary = column_binary(&key);
        let key_bytes: Vec<Bytes> = key.iter().filter_map(|v| v.bytes().cloned()).collect();
        let key_tuple = Tuple { columns: key };
        if batchable
            && let Some(Run {
                rel_id,
                rel: r,
                kind: RunKind::Delete { key_binary: kb, rows, keys },
                ..
            }) = &mut self.run
            && *rel_id == rel.rel_id
            && Arc::ptr_eq(r, &rel)
            && **kb == *key_binary
            && rows.len() < self.cfg.batch_max_rows
            && !keys.contains(&key_bytes)
        {
            keys.insert(key_bytes);
            rows.push(key_tuple);
            return Ok(());
        }
        self.end_run().await?;
        if batchable {
            let mut keys = HashSet::new();
            keys.insert(key_bytes);
            self.run = Some(Run {
                rel_id: rel.rel_id,
                rel,
                commit_lsn: self.commit_lsn(),
                kind: RunKind::Delete {
                    key_binary: key_binary.into(),
                    rows: vec![key_tuple],
                    keys,
                },
            });
            return Ok(());
        }
        self.delete_row(rel.rel_id, self.commit_lsn(), &key_tuple).await
    }

    async fn delete_row(
        &mut self,
        rel_id: u32,
        commit_lsn: Lsn,
        key: &Tuple,
    ) -> Result<(), ApplyError> {
        let t = &self.tables[&rel_id];
        let mut matched = vec![false; t.cols.len()];
        for &k in &t.key {
            matched[k] = true;
        }
        let m: Box<[bool]> = matched.into();
        let (stmt, table) = self
            .statement(rel_id, Op::Delete, StmtKey::Delete { matched: m.clone() }, move |t| {
                t.delete_sql(&m)
            })
            .await?;
        let params: Vec<Param> = key.columns.iter().filter_map(Param::from_column).collect();
        let bytes = params_bytes(&params);
        let purpose = Purpose::Change { table, op: Op::Delete, commit_lsn, expected: 1 };
        let fut = stmt_future(&self.client, stmt, params);
        self.push(fut, purpose, bytes).await
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
        let params: Vec<Param> = t
            .key
            .iter()
            .enumerate()
            .map(|(j, &k)| {
                let oid = if key_binary[j] { t.cols[k].type_oid } else { TEXT_OID };
                Param::Binary(value::binary_array(oid, rows.iter().map(|key| &key.columns[j])))
            })
            .collect();
        let bytes = params_bytes(&params);
        let expected = u64::try_from(rows.len()).unwrap_or(u64::MAX);
        self.stats.batched_rows += expected;
        let purpose = Purpose::Change { table, op: Op::Delete, commit_lsn, expected };
        let fut = stmt_future(&self.client, stmt, params);
        self.push(fut, purpose, bytes).await
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
            self.end_run().await?;
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

fn encode_copy_row(c: &mut CopyState, values: &[ColumnValue]) {
    if c.binary {
        value::copy_binary_row(&mut c.buf, values);
    } else {
        value::copy_text_row(&mut c.buf, values);
    }
}

/// Per column: is the value binary (NULLs count as binary until a text value shows up).
fn column_binary(values: &[ColumnValue]) -> Vec<bool> {
    values.iter().map(|v| !matches!(v, ColumnValue::Text(_))).collect()
}

/// Whether a row's value formats agree with a run's (NULL and unchanged values agree with any).
fn same_formats(run: &[bool], row: &[bool], values: &[ColumnValue]) -> bool {
    run.iter()
        .zip(row)
        .zip(values)
        .all(|((a, b), v)| a == b || matches!(v, ColumnValue::Null | ColumnValue::UnchangedToast))
}

fn combined(a: &[bool], b: &[bool]) -> Box<[bool]> {
    a.iter().chain(b).copied().collect()
}

/// The key values of a new row (so a later change by the new key is not merged into a run
/// where the old key is still being updated).
fn new_key_bytes(t: &TableInfo, new: &Tuple) -> Vec<Bytes> {
    t.key.iter().filter_map(|&k| new.columns.get(k).and_then(|v| v.bytes().cloned())).collect()
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
}
