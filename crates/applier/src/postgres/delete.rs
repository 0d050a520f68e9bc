//! Deletes: by key, batched into one set-based statement over arrays; for `REPLICA IDENTITY
//! FULL`, batched too, each old row deleting one target row that prints as it did.

use std::sync::Arc;

use pgoutput_decoder::{Lsn, OldTuple, Relation, Tuple};

use crate::error::{ApplyError, Op};
use crate::target::CommitInfo;

use super::PostgresTarget;
use super::identity::{
    RowKey, column_binary, full_match, key_picks, matched_values, picks_of, value_binary,
};
use super::runs::{Run, RunKind, tuple_bytes};
use super::table::{Match, StmtKey, TableInfo};
use super::value::{self, Param};

impl PostgresTarget {
    pub(super) async fn delete(
        &mut self,
        rel: Arc<Relation>,
        old: OldTuple,
    ) -> Result<(), ApplyError> {
        self.table(&rel).await?;
        let t = &self.catalog.tables[&rel.rel_id];
        if t.full_identity() {
            let OldTuple::Full(old) = old else {
                return Err(ApplyError::MissingIdentity {
                    table: t.name.to_string(),
                    op: Op::Delete,
                    detail: "replica identity full without the old row".into(),
                });
            };
            // Boxed: inline, its state would grow every delete's future.
            return Box::pin(self.delete_full_row(rel, old)).await;
        }
        let key = Self::key_values(t, Op::Delete, Some(old.tuple()), None)?;
        self.delete_by_key(rel, key).await
    }

    async fn delete_by_key(&mut self, rel: Arc<Relation>, key: Tuple) -> Result<(), ApplyError> {
        let rel_id = rel.rel_id;
        let t = &self.catalog.tables[&rel_id];
        let batchable = !t.key.iter().any(|&k| t.cols[k].is_array);
        let key_binary = column_binary(&key);
        let key_bytes = RowKey::of(&key);
        let key_tuple = key;
        self.leave_others(rel_id).await?;
        if !batchable {
            self.end_table_run(rel_id).await?;
            return self.delete_row(rel_id, self.commit_lsn(), &key_tuple, None).await;
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
                    keys: Default::default(),
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

    /// A delete matching the whole old row: into the table's run of such deletes of the same
    /// shape, or on its own when a matched column is an array or the run holds the same row.
    async fn delete_full_row(&mut self, rel: Arc<Relation>, old: Tuple) -> Result<(), ApplyError> {
        let rel_id = rel.rel_id;
        self.leave_others(rel_id).await?;
        let t = &self.catalog.tables[&rel_id];
        let matched = full_match(&old);
        if t.cols.iter().zip(&matched).any(|(c, m)| c.is_array && *m == Match::Value) {
            self.end_table_run(rel_id).await?;
            return self.full_identity_row(rel_id, Op::Delete, None, &old).await;
        }
        let binary = value_binary(old.iter());
        let key = RowKey::of(&old);
        let fits = self.run_index(rel_id).is_some_and(|i| match &self.runs[i] {
            Run {
                rel: r, kind: RunKind::FullDelete { matched: m, binary: b, rows, keys }, ..
            } => {
                Arc::ptr_eq(r, &rel)
                    && *m == matched
                    && *b == binary
                    && rows.len() < self.cfg.batch_max_rows
                    && !keys.contains(&key)
            }
            _ => false,
        });
        let i = match self.run_index(rel_id) {
            Some(i) if fits => i,
            _ => {
                let kind = RunKind::FullDelete {
                    matched,
                    binary,
                    rows: Vec::new(),
                    keys: Default::default(),
                };
                self.start_run(&rel, kind).await?
            }
        };
        let bytes = tuple_bytes(&old);
        let RunKind::FullDelete { rows, keys, .. } = &mut self.runs[i].kind else { unreachable!() };
        keys.insert(key);
        rows.push(old);
        self.buffered_more(i, bytes).await
    }

    pub(super) async fn flush_full_delete_run(
        &mut self,
        rel_id: u32,
        commit_lsn: Lsn,
        rows: Vec<Tuple>,
        matched: Box<[Match]>,
        binary: Box<[bool]>,
    ) -> Result<(), ApplyError> {
        if rows.len() < self.cfg.batch_min_rows {
            for old in &rows {
                self.full_identity_row(rel_id, Op::Delete, None, old).await?;
            }
            return Ok(());
        }
        let (m, b) = (matched.clone(), binary.clone());
        let (stmt, table) = self
            .statement(
                rel_id,
                Op::Delete,
                StmtKey::FullBatchDelete { matched: matched.clone(), binary: binary.clone() },
                move |t| t.full_batch_delete_sql(&m, &b),
            )
            .await?;
        let picks = picks_of(&self.catalog.tables[&rel_id], matched_values(&matched), &binary);
        let params: Vec<Param> =
            value::column_arrays(&rows, &picks).into_iter().map(Param::Binary).collect();
        let rows = u64::try_from(rows.len()).unwrap_or(u64::MAX);
        self.stats.batched_rows += rows;
        let expected = self.expected_deletes(rel_id, rows);
        self.push_scanning_change(stmt, params, table, Op::Delete, commit_lsn, expected).await
    }

    /// A single-row delete by key; with `carry`, as a whole target transaction (see
    /// [`Self::push_row`]).
    pub(super) async fn delete_row(
        &mut self,
        rel_id: u32,
        commit_lsn: Lsn,
        key: &Tuple,
        carry: Option<&CommitInfo>,
    ) -> Result<(), ApplyError> {
        let m = self.catalog.tables[&rel_id].key_match();
        let key_stmt = StmtKey::Delete { matched: m.clone() };
        let params: Vec<Param> = key.values().filter_map(Param::from_value).collect();
        let expected = self.expected_deletes(rel_id, 1);
        let sql = move |t: &TableInfo| t.delete_sql(&m);
        self.push_row(rel_id, Op::Delete, key_stmt, sql, params, expected, commit_lsn, carry).await
    }

    pub(super) async fn flush_delete_run(
        &mut self,
        rel_id: u32,
        commit_lsn: Lsn,
        rows: Vec<Tuple>,
        key_binary: Box<[bool]>,
    ) -> Result<(), ApplyError> {
        if rows.len() < self.cfg.batch_min_rows {
            for key in &rows {
                self.delete_row(rel_id, commit_lsn, key, None).await?;
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
        let t = &self.catalog.tables[&rel_id];
        let params: Vec<Param> = value::column_arrays(&rows, &key_picks(t, &key_binary))
            .into_iter()
            .map(Param::Binary)
            .collect();
        let rows = u64::try_from(rows.len()).unwrap_or(u64::MAX);
        self.stats.batched_rows += rows;
        let expected = self.expected_deletes(rel_id, rows);
        self.push_change(stmt, params, table, Op::Delete, commit_lsn, expected).await
    }

    /// Rows of `rel_id` that `rows` deletes must find: none where they may be on another shard.
    fn expected_deletes(&self, rel_id: u32, rows: u64) -> u64 {
        if self.spread.contains(&rel_id) { 0 } else { rows }
    }
}
