//! The target session: statements into the pipeline, prepared statements per table and shape,
//! the target transaction (opened lazily, committed by [`Target::flush`] with the progress
//! row), and its subtransactions.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use futures_util::future::maybe_done;
use pgoutput_decoder::Lsn;
use tokio_postgres::error::{DbError, SqlState};
use tokio_postgres::{Client, Statement};

use crate::error::{ApplyError, Op};
use crate::target::CommitInfo;

use super::PostgresTarget;
use super::pipeline::{Pipeline, Purpose, StmtFuture};
use super::progress;
use super::runs::OneRow;
use super::table::{StmtKey, TableInfo};
use super::value::Param;

pub(super) fn stmt_future(client: &Arc<Client>, stmt: Statement, params: Vec<Param>) -> StmtFuture {
    let client = Arc::clone(client);
    Box::pin(async move { client.execute_raw(&stmt, params).await })
}

pub(super) fn simple_future(client: &Arc<Client>, sql: String) -> StmtFuture {
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

/// What a single-row statement is for.
#[derive(Clone, Copy)]
struct Row {
    rel_id: u32,
    op: Op,
    /// Rows it should affect.
    expected: u64,
    /// The source transaction's commit LSN (for errors).
    commit_lsn: Lsn,
}

/// The connection to the target and what is open on it.
pub(super) struct Session {
    pub(super) client: Arc<Client>,
    /// The backend's process id, by which the target's lock tables name it.
    pub(super) pid: i32,
    /// For a fork, its parent's backend process id.
    pub(super) parent: Option<i32>,
    /// Statements sent and not yet answered.
    pub(super) pipe: Pipeline,
    /// A target transaction is open.
    pub(super) in_txn: bool,
    /// The savepoints of the target transaction, by subtransaction xid, oldest first.
    pub(super) savepoints: Vec<u32>,
    /// An error left the session in an unknown state: every later call fails.
    pub(super) poisoned: bool,
}

impl Session {
    pub(super) fn new(client: Client, pid: i32, pipe: Pipeline) -> Self {
        Session {
            client: Arc::new(client),
            pid,
            parent: None,
            pipe,
            in_txn: false,
            savepoints: Vec::new(),
            poisoned: false,
        }
    }
}

/// Savepoints at most in one target transaction. Beyond 64 subtransactions a backend's cache
/// of them overflows, and every snapshot on the target gets slower; a source transaction with
/// that many (an exception block per row, say) is applied at its commit instead.
pub(super) const MAX_SAVEPOINTS: usize = 32;

impl PostgresTarget {
    /// Sends a statement into the target transaction, opening it if need be (ending an open
    /// `COPY` first: nothing else may go out during one).
    pub(super) async fn push(
        &mut self,
        fut: StmtFuture,
        purpose: Purpose,
        bytes: usize,
    ) -> Result<(), ApplyError> {
        self.close_copy().await?;
        self.ensure_txn().await?;
        self.stats.statements += 1;
        self.session.pipe.push(fut, purpose, bytes).await
    }

    /// Sends a prepared statement for a change (`expected` rows) into the pipeline.
    pub(super) async fn push_change(
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
        let fut = stmt_future(&self.session.client, stmt, params);
        self.push(fut, purpose, bytes).await
    }

    /// Sends the single-row statement `key` (prepared on first use from `sql`) with its
    /// `params`, into the target transaction; with `carry`, as a whole target transaction of
    /// its own instead, the statement writing the progress row after that commit too, unless
    /// the target refuses that statement for the table (then into a target transaction it
    /// opens, which the caller sees open).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn push_row(
        &mut self,
        rel_id: u32,
        op: Op,
        key: StmtKey,
        sql: impl Fn(&TableInfo) -> String,
        params: Vec<Param>,
        expected: u64,
        commit_lsn: Lsn,
        carry: Option<&CommitInfo>,
    ) -> Result<(), ApplyError> {
        let row = Row { rel_id, op, expected, commit_lsn };
        if let Some(c) = carry.filter(|_| !self.catalog.tables[&rel_id].carry_refused) {
            // Boxed: every single-row statement's future would be as big as this one.
            return Box::pin(self.push_carrying(row, key, sql, params, c)).await;
        }
        let (stmt, table) = self.statement(rel_id, op, key, sql).await?;
        self.push_change(stmt, params, table, op, commit_lsn, expected).await
    }

    /// [`Self::push_row`] carrying the progress row after `commit`; into a target transaction
    /// when the target refuses such a statement for the table (it is not asked again).
    async fn push_carrying(
        &mut self,
        row: Row,
        key: StmtKey,
        sql: impl Fn(&TableInfo) -> String,
        mut params: Vec<Param>,
        commit: &CommitInfo,
    ) -> Result<(), ApplyError> {
        let Row { rel_id, op, expected, commit_lsn } = row;
        // The statement's parameters are exactly `params`, numbered from 1.
        let n = params.len();
        let carrying = StmtKey::Committing(Box::new(key.clone()));
        match self.statement(rel_id, op, carrying, |t| progress::carried_by(&sql(t), n)).await {
            Ok((stmt, table)) => {
                params.extend(progress::params(&self.cfg.mirror_name, commit));
                let purpose = Purpose::Change { table, op, commit_lsn, expected };
                self.push_alone(stmt, params, purpose).await
            }
            // Refused when it was parsed (nothing is open): "WITH cannot be used in a query
            // that is rewritten by rules into multiple queries".
            Err(e)
                if e.as_db_error().map(DbError::code) == Some(&SqlState::FEATURE_NOT_SUPPORTED) =>
            {
                tracing::debug!(error = %e, "one-row transactions of this table go with BEGIN and COMMIT");
                if let Some(t) = self.catalog.tables.get_mut(&rel_id) {
                    t.carry_refused = true;
                }
                let (stmt, table) = self.statement(rel_id, op, key, sql).await?;
                self.push_change(stmt, params, table, op, commit_lsn, expected).await
            }
            Err(e) => Err(e),
        }
    }

    /// Sends a prepared statement outside any transaction block: a target transaction of its
    /// own, which the server commits at the statement's Sync.
    async fn push_alone(
        &mut self,
        stmt: Statement,
        params: Vec<Param>,
        purpose: Purpose,
    ) -> Result<(), ApplyError> {
        debug_assert!(!self.session.in_txn && self.runs.is_empty());
        let bytes = params_bytes(&params);
        let fut = stmt_future(&self.session.client, stmt, params);
        self.stats.statements += 1;
        self.session.pipe.push(fut, purpose, bytes).await
    }

    /// Ends the open `COPY`, if any, and waits for every reply: before a query that needs
    /// its answer.
    pub(super) async fn quiesce(&mut self) -> Result<(), ApplyError> {
        self.close_copy().await?;
        self.session.pipe.drain().await
    }

    /// Sends a `SET` of the session (in order with the changes around it, inside the target
    /// transaction, so that a rollback undoes both).
    async fn push_setting(&mut self, sql: &'static str) -> Result<(), ApplyError> {
        self.ensure_txn().await?;
        let fut = simple_future(&self.session.client, sql.to_owned());
        self.session.pipe.push(fut, Purpose::Other(sql), 32).await
    }

    /// [`Self::push_change`] of a statement that joins a run of whole old rows to their
    /// table, with seq scans enabled for it: the session's `enable_seqscan = off` only
    /// penalises a seq scan, which a table without an index still needs; the penalty (1e10)
    /// then dwarfs every other cost, and the planner takes a nested loop over the table per
    /// old row as just as cheap (170 ms for 500 deletes of a 10k-row table).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn push_scanning_change(
        &mut self,
        stmt: Statement,
        params: Vec<Param>,
        table: Arc<str>,
        op: Op,
        commit_lsn: Lsn,
        expected: u64,
    ) -> Result<(), ApplyError> {
        self.push_setting("SET enable_seqscan = on").await?;
        self.push_change(stmt, params, table, op, commit_lsn, expected).await?;
        self.push_setting("SET enable_seqscan = off").await
    }

    /// Opens the target transaction unless it is open: before the first statement of a
    /// target transaction goes out, so that one holding a single statement can go without.
    pub(super) async fn ensure_txn(&mut self) -> Result<(), ApplyError> {
        if !self.session.in_txn {
            let fut = simple_future(&self.session.client, "BEGIN".to_owned());
            self.session.pipe.push(fut, Purpose::Other("BEGIN"), 16).await?;
            self.session.in_txn = true;
        }
        Ok(())
    }

    /// The prepared statement `key` for table `rel_id`, preparing it on first use.
    pub(super) async fn statement(
        &mut self,
        rel_id: u32,
        op: Op,
        key: StmtKey,
        sql: impl FnOnce(&TableInfo) -> String,
    ) -> Result<(Statement, Arc<str>), ApplyError> {
        let t = self.catalog.tables.get(&rel_id).ok_or(ApplyError::UnknownRelation { rel_id })?;
        let name = Arc::clone(&t.name);
        if let Some(s) = t.stmts.get(&key) {
            return Ok((s.clone(), name));
        }
        let sql = sql(t);
        self.quiesce().await?;
        let stmt =
            self.session.client.prepare(&sql).await.map_err(|source| ApplyError::Change {
                table: name.to_string(),
                op,
                commit_lsn: self.commit_lsn(),
                source,
            })?;
        if let Some(t) = self.catalog.tables.get_mut(&rel_id) {
            t.stmts.insert(key, stmt.clone());
        }
        Ok((stmt, name))
    }

    /// `SAVEPOINT` for subtransaction `subxid`, after every buffered run (their rows belong
    /// before it).
    pub(super) async fn savepoint(&mut self, subxid: u32) -> Result<(), ApplyError> {
        self.guard()?;
        if self.session.savepoints.len() >= MAX_SAVEPOINTS {
            return Err(ApplyError::Unsupported("this many subtransactions"));
        }
        self.session.savepoints.push(subxid);
        self.subtransaction_statement(format!("SAVEPOINT s{subxid}"), "SAVEPOINT").await
    }

    /// `ROLLBACK TO` the savepoint of subtransaction `subxid`, which stays; later ones are gone.
    pub(super) async fn rollback_to_savepoint(&mut self, subxid: u32) -> Result<(), ApplyError> {
        self.guard()?;
        if let Some(i) = self.session.savepoints.iter().position(|&x| x == subxid) {
            self.session.savepoints.truncate(i + 1);
        }
        let sql = format!("ROLLBACK TO SAVEPOINT s{subxid}");
        self.subtransaction_statement(sql, "ROLLBACK TO").await
    }

    async fn subtransaction_statement(
        &mut self,
        sql: String,
        what: &'static str,
    ) -> Result<(), ApplyError> {
        let r = async {
            self.ensure_txn().await?;
            self.end_runs().await?;
            let fut = simple_future(&self.session.client, sql);
            self.session.pipe.push(fut, Purpose::Other(what), 32).await
        }
        .await;
        self.check(r)
    }

    /// Whether the session with backend process id `pid` waits for a lock this one holds
    /// (`pg_blocking_pids`), asked after every reply this session awaits: the connection reads
    /// no reply while an earlier one is unclaimed.
    pub(super) async fn blocks_session(&mut self, pid: i32) -> Result<bool, ApplyError> {
        self.quiesce().await?;
        let row = self
            .session
            .client
            .query_one("SELECT pg_backend_pid() = ANY (pg_blocking_pids($1))", &[&pid])
            .await
            .map_err(|e| ApplyError::target("asking the target which session blocks", e))?;
        Ok(row.get(0))
    }

    /// Commits the target transaction, with the progress row of the last source commit, and
    /// returns the newest source end LSN that is durable.
    pub(super) async fn do_flush(&mut self) -> Result<Option<Lsn>, ApplyError> {
        if let Some(s) = &self.source {
            return Err(ApplyError::protocol(
                "flush",
                format!("inside source transaction {}", s.xid),
            ));
        }
        if self.session.in_txn || self.last_commit.is_some() || !self.runs.is_empty() {
            if !self.commit_in_one_statement().await? {
                self.end_runs().await?;
                self.ensure_txn().await?;
                if let Some(c) = self.last_commit {
                    self.push_progress(&c).await?;
                }
                let fut = simple_future(&self.session.client, "COMMIT".to_owned());
                self.session.pipe.push(fut, Purpose::Other("COMMIT"), 16).await?;
            }
            let mut position = if self.last_commit.is_some() {
                self.durability.position_after_commit(&self.session.client).map(maybe_done)
            } else {
                None
            };
            if let Some(p) = &mut position {
                // Polled once to send it now, behind the COMMIT.
                poll_fn(|cx| Poll::Ready(Pin::new(&mut *p).poll(cx).is_ready())).await;
            }
            self.session.pipe.drain().await?;
            self.session.in_txn = false;
            self.session.savepoints.clear();
            self.stats.commits += 1;
            if let Some(c) = self.last_commit.take() {
                let position = match position {
                    Some(mut p) => {
                        (&mut p).await;
                        Pin::new(&mut p).take_output()
                    }
                    None => None,
                };
                self.durability.committed(position, c.end_lsn)?;
            }
        } else if self.durability.has_unflushed() {
            self.durability.poll(&self.session.client).await?;
        }
        debug_assert!(self.session.pipe.is_empty());
        Ok(self.durability.durable())
    }

    /// Sends the progress row after `c`.
    async fn push_progress(&mut self, c: &CommitInfo) -> Result<(), ApplyError> {
        let fut = self.progress.write(&self.session.client, &self.cfg.mirror_name, c);
        self.session.pipe.push(fut, Purpose::Other("writing progress"), 128).await
    }

    /// Sends a target transaction that nothing has opened yet as one statement in its own
    /// implicit transaction, which the server commits at its Sync: the progress row alone, or
    /// a single-row insert, update or delete by key carrying the progress row in a `WITH`.
    /// Saves the `BEGIN` and `COMMIT` (two statements and their replies) a transaction of one
    /// row costs otherwise, as live single-row transactions are. Returns whether it did.
    async fn commit_in_one_statement(&mut self) -> Result<bool, ApplyError> {
        let Some(c) = self.last_commit else { return Ok(false) };
        if self.session.in_txn {
            return Ok(false);
        }
        if self.runs.is_empty() {
            self.push_progress(&c).await?;
        } else if let Some((rel_id, lsn, row)) = self.take_one_row() {
            match row {
                OneRow::Insert(row) => self.insert_row(rel_id, lsn, &row, Some(&c)).await?,
                OneRow::Update(r) => {
                    self.update_row(rel_id, lsn, &r.key, &r.new, &r.set, Some(&c)).await?;
                }
                OneRow::Delete(row) => self.delete_row(rel_id, lsn, &row, Some(&c)).await?,
            }
        } else {
            return Ok(false);
        }
        if self.session.in_txn {
            // The target refused the one statement: the row went into a transaction.
            return Ok(false);
        }
        self.stats.one_statement_commits += 1;
        Ok(true)
    }
}
