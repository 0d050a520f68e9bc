//! [`PostgresTarget`]: a PostgreSQL mini-replica.
//!
//! Source transactions are grouped into one target transaction, opened by its first statement
//! and committed by [`Target::flush`] together with the progress row (`progress`), so after a
//! crash the target holds exactly the source transactions up to the stored end LSN: the
//! applier skips those and replays the rest. A target transaction of one row goes out as a
//! single statement that carries the progress row, committed without `BEGIN` and `COMMIT`. A
//! COMMIT is reported durable only once the target's WAL holds it (`durability`).
//!
//! Each change goes into its table's run (`runs`): runs of inserts become one `COPY`
//! (`insert`), runs of updates and deletes by key one set-based statement (`update`,
//! `delete`), and statements are pipelined with prepared statements cached per table and shape
//! (`session`, `pipeline`). Rows are found by their replica identity (`identity`). A row to
//! update or delete that the target lacks is logged and counted, as the native subscriber
//! does. The target table behind each relation is looked up, and schema drift repaired or
//! reported, in `schema`.

mod delete;
mod durability;
mod identity;
mod insert;
mod pipeline;
pub mod progress;
mod runs;
mod schema;
mod session;
mod table;
mod take;
mod update;
mod value;

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;

use pgoutput_decoder::{DecodingMessage, Lsn, Relation};
use tokio_postgres::Client;

use crate::error::{ApplyError, Op};
use crate::target::{Change, CommitInfo, Target, TxnInfo, TypeMap};
use durability::Durability;
use pipeline::{Pipeline, Purpose};
use progress::ProgressRow;
use runs::Run;
use schema::Catalog;
pub use schema::TypeResolver;
use session::{Session, simple_future};

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
    /// Bytes of statements in flight on the second session that applies a large streamed
    /// transaction as it arrives. Deeper than the main session's: the walsender sends such a
    /// transaction in bursts of `logical_decoding_work_mem` and decodes the next one in
    /// between, so whatever the target has not been handed when a burst ends is applied
    /// while the walsender decodes instead of after it.
    pub fork_max_inflight_bytes: usize,
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
            fork_max_inflight_bytes: 64 << 20,
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
    /// Of those, the ones that went out as a single statement, without `BEGIN` and `COMMIT`
    /// (one row, or only the progress row).
    pub one_statement_commits: u64,
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

/// A PostgreSQL target. See the module documentation for transactions, durability and speed.
pub struct PostgresTarget {
    cfg: PostgresTargetConfig,
    session: Session,
    catalog: Catalog,
    /// Opens the connections of forks.
    connector: Option<Connector>,
    /// Pending runs, at most one per table (see [`Run`] for the invariant).
    runs: Vec<Run>,
    /// Bytes buffered in `runs`.
    buffered: usize,
    /// The key map of the last update run sent, emptied, for the next one: it keeps the
    /// room a run grew into.
    spare_update_keys: runs::UpdateKeys,
    /// Runs of different tables may go out in any order: the session's replication role is
    /// `replica`.
    reorder: bool,
    /// Tables whose rows may live on another shard (see [`crate::shard`]): a delete that finds
    /// no row is not reported missing.
    spread: std::collections::HashSet<u32>,
    /// The source transaction begun and not yet committed.
    source: Option<TxnInfo>,
    /// The last source transaction committed since the last flush: its progress row goes in
    /// the next COMMIT.
    last_commit: Option<CommitInfo>,
    progress: ProgressRow,
    durability: Durability,
    stats: PostgresTargetStats,
}

impl fmt::Debug for PostgresTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresTarget")
            .field("mirror_name", &self.cfg.mirror_name)
            .field("in_txn", &self.session.in_txn)
            .field("reorder", &self.reorder)
            .field("durable", &self.durability.durable())
            .field("pipeline", &self.session.pipe)
            .finish_non_exhaustive()
    }
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
        // identity index): the planner would seq-scan small tables, whole for every row once
        // one group's updates have bloated them. A disabled seq scan still costs 1e10, above
        // `jit_above_cost`, so a table only a seq scan can search would be JIT-compiled for
        // every statement; apply statements touch a few rows, and JIT never pays.
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
        let progress = ProgressRow::prepare(&client).await?;
        let durability = Durability::prepare(&client, cfg.synchronous_commit).await?;
        let pid = client
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .map_err(|e| ApplyError::target("reading the backend's process id", e))?
            .get(0);
        let pipe = Pipeline::new(cfg.max_inflight_bytes, cfg.max_inflight_statements);
        Ok(PostgresTarget {
            cfg,
            session: Session::new(client, pid, pipe),
            catalog: Catalog::new(),
            connector: None,
            runs: Vec::new(),
            buffered: 0,
            spare_update_keys: Default::default(),
            reorder,
            spread: std::collections::HashSet::new(),
            source: None,
            last_commit: None,
            progress,
            durability,
            stats: PostgresTargetStats::default(),
        })
    }

    /// Names non-builtin types for `ADD COLUMN` when the source's Type messages do not.
    #[must_use]
    pub fn with_type_resolver(mut self, resolver: Arc<dyn TypeResolver>) -> Self {
        self.catalog.set_resolver(resolver);
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
        &self.session.client
    }

    /// Counters so far.
    pub fn stats(&self) -> PostgresTargetStats {
        PostgresTargetStats { missing_rows: self.session.pipe.missing_rows, ..self.stats.clone() }
    }

    fn commit_lsn(&self) -> Lsn {
        self.source.as_ref().map_or(Lsn::ZERO, |s| s.commit_lsn)
    }

    /// Runs `f`, poisoning the target if it fails (its session state is then unknown).
    fn check<R>(&mut self, r: Result<R, ApplyError>) -> Result<R, ApplyError> {
        if r.is_err() {
            self.session.poisoned = true;
        }
        r
    }

    fn guard(&self) -> Result<(), ApplyError> {
        if self.session.poisoned { Err(ApplyError::Poisoned) } else { Ok(()) }
    }

    /// Whether changes to different tables are batched independently (each table's run goes
    /// out on its own schedule): the session runs with `session_replication_role = replica`.
    pub fn batches_across_tables(&self) -> bool {
        self.reorder
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
                let fut = simple_future(&self.session.client, sql);
                self.push(fut, purpose, 64).await
            }
            // The replica has nowhere to put transactional messages.
            Change::Message(_) => Ok(()),
        }
    }
}

impl Target for PostgresTarget {
    async fn load_progress(&mut self) -> Result<Option<Lsn>, ApplyError> {
        self.guard()?;
        let loaded = progress::load(&*self.session.client, &self.cfg.mirror_name)
            .await
            .map_err(|e| ApplyError::target("reading pgmirror.progress", e));
        self.check(loaded)
    }

    async fn begin(&mut self, txn: &TxnInfo) -> Result<(), ApplyError> {
        self.guard()?;
        self.source = Some(txn.clone());
        Ok(())
    }

    async fn relation(&mut self, rel: &Arc<Relation>, types: &TypeMap) -> Result<(), ApplyError> {
        self.guard()?;
        self.catalog.learn_types(types);
        let r = self.table(rel).await;
        self.check(r)
    }

    async fn change(&mut self, change: Change) -> Result<(), ApplyError> {
        self.guard()?;
        let r = self.apply(change).await;
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

    /// Asks the target's lock manager whether the parent's session waits for this one.
    async fn blocks_parent(&mut self) -> Result<bool, ApplyError> {
        self.guard()?;
        let Some(parent) = self.session.parent else { return Ok(false) };
        let r = self.blocks_session(parent).await;
        self.check(r)
    }

    /// A savepoint named after the subtransaction (at most 32 in one transaction).
    async fn begin_subtransaction(&mut self, subxid: u32) -> Result<(), ApplyError> {
        self.savepoint(subxid).await
    }

    async fn abort_subtransaction(&mut self, subxid: u32) -> Result<(), ApplyError> {
        self.rollback_to_savepoint(subxid).await
    }

    /// A second session with the same settings, except that its COMMIT waits for the WAL
    /// flush (the one large transaction it carries is confirmed as soon as it commits) and
    /// that it fails on schema drift instead of adding columns: an `ALTER TABLE` there would
    /// lock the table until that transaction's commit, while the main session may have to
    /// apply earlier transactions to the same table first.
    async fn fork(&mut self) -> Result<Option<Self>, ApplyError> {
        let Some(connector) = self.connector.clone() else { return Ok(None) };
        let client = connector().await.map_err(ApplyError::Connect)?;
        let cfg = PostgresTargetConfig {
            synchronous_commit: true,
            max_inflight_bytes: self.cfg.fork_max_inflight_bytes,
            ..self.cfg.clone()
        };
        let mut fork = PostgresTarget::new(client, cfg).await?;
        fork.catalog = self.catalog.for_fork();
        fork.session.parent = Some(self.session.pid);
        Ok(Some(fork))
    }
}
