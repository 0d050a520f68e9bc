//! A PostgreSQL target as a shard: handing over a row that moves to another shard, and
//! keeping it in `pgmirror.shard_moves` until every shard has passed the move; telling whether
//! it holds a row, and deleting a row it may not hold (see [`crate::shard`]).

use std::sync::Arc;

use pgoutput_decoder::{ColumnValue, Lsn, OldTuple, Relation, Tuple};
use tokio_postgres::types::ToSql;

use super::PostgresTarget;
use super::identity::RowKey;
use super::runs::RunKind;
use super::table::{Match, StmtKey};
use super::value::Param;
use crate::error::{ApplyError, Op};
use crate::shard::{MoveId, ShardTarget, text_tuple};
use crate::target::{Change, Target};

const CREATE: &str = "CREATE SCHEMA IF NOT EXISTS pgmirror; \
    CREATE TABLE IF NOT EXISTS pgmirror.shard_moves (\
        mirror_name text NOT NULL, \
        commit_lsn pg_lsn NOT NULL, \
        seq int8 NOT NULL, \
        table_name text NOT NULL, \
        row_values text[] NOT NULL, \
        PRIMARY KEY (mirror_name, commit_lsn, seq))";

impl PostgresTarget {
    /// Waits for everything sent so far and opens the target transaction: before a query
    /// whose answer is needed and which must see the changes before it.
    async fn settle(&mut self) -> Result<(), ApplyError> {
        self.guard()?;
        let r = async {
            self.end_runs().await?;
            self.ensure_txn().await?;
            self.quiesce().await
        }
        .await;
        self.check(r)
    }

    /// Whether the row with key `key` is there, when the table's buffered run says so: it
    /// inserts the row or updates it in place (so the row exists), or deletes it. A run is the
    /// table's latest changes, so nothing after it says otherwise.
    fn pending_holds(&self, rel: &Arc<Relation>, key: &RowKey) -> Option<bool> {
        let run = &self.runs[self.run_index(rel.rel_id)?];
        if !Arc::ptr_eq(&run.rel, rel) {
            return None;
        }
        match &run.kind {
            RunKind::Insert { keys, .. } => keys.contains_key(key).then_some(true),
            RunKind::Update { keys, .. } => matches!(keys.get(key), Some(Some(_))).then_some(true),
            RunKind::Delete { keys, .. } => keys.contains(key).then_some(false),
            // Keyed by whole old rows, not by key: ask the target.
            RunKind::FullDelete { .. } | RunKind::FullUpdate { .. } => None,
        }
    }

    async fn has_moves_table(&mut self) -> Result<bool, ApplyError> {
        let exists = self
            .query_rows(
                "looking for pgmirror.shard_moves",
                "SELECT to_regclass('pgmirror.shard_moves') IS NOT NULL",
                &[],
            )
            .await?;
        Ok(exists.first().is_some_and(|r| r.get::<_, bool>(0)))
    }

    async fn query_rows(
        &mut self,
        context: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, ApplyError> {
        let r = self
            .session
            .client
            .query(sql, params)
            .await
            .map_err(|e| ApplyError::target(context.to_owned(), e));
        self.check(r)
    }
}

impl ShardTarget for PostgresTarget {
    async fn take_row(
        &mut self,
        rel: &Arc<Relation>,
        old: Option<&Tuple>,
        new: &Tuple,
        at: MoveId,
    ) -> Result<Option<Tuple>, ApplyError> {
        self.settle().await?;
        let r = self.table(rel).await;
        self.check(r)?;
        let t = self
            .catalog
            .tables
            .get(&rel.rel_id)
            .ok_or(ApplyError::UnknownRelation { rel_id: rel.rel_id })?;
        let (matched, values): (Box<[Match]>, Vec<Param>) = if t.full_identity() {
            let old = old.unwrap_or(new);
            let matched = old
                .values()
                .map(|v| match v {
                    ColumnValue::UnchangedToast => Match::Skip,
                    ColumnValue::Null => Match::Null,
                    _ => Match::Value,
                })
                .collect();
            let values = old.values().filter(|v| !v.is_null()).filter_map(Param::from_value);
            (matched, values.collect())
        } else {
            let key = Self::key_values(t, Op::Delete, old, Some(new))?;
            (t.key_match(), key.values().filter_map(Param::from_value).collect())
        };
        let n = values.len();
        let columns: Vec<String> = t.cols.iter().map(|c| format!("{}::text", c.quoted)).collect();
        let take = format!(
            "WITH gone AS ({} RETURNING ARRAY[{}]::text[] AS r) \
             INSERT INTO pgmirror.shard_moves \
             SELECT ${}, ${}::text::pg_lsn, ${}, ${}, r FROM gone RETURNING row_values",
            t.delete_sql(&matched),
            columns.join(", "),
            n + 1,
            n + 2,
            n + 3,
            n + 4,
        );
        let table = t.name.to_string();
        // A statement with parameters cannot carry the DDL too. Moves are rare: the
        // `IF NOT EXISTS` costs little.
        let r = self
            .session
            .client
            .batch_execute(CREATE)
            .await
            .map_err(|e| ApplyError::target("creating pgmirror.shard_moves", e));
        self.check(r)?;
        let mirror = self.cfg.mirror_name.clone();
        let lsn = at.commit_lsn.to_string();
        let seq = i64::from(at.seq);
        let mut params: Vec<&(dyn ToSql + Sync)> =
            values.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        params.extend([&mirror as &(dyn ToSql + Sync), &lsn, &seq, &table]);
        let rows = self.query_rows("moving a row to another shard", &take, &params).await?;
        Ok(rows.into_iter().next().map(|r| text_tuple(r.get(0))))
    }

    async fn holds_row(
        &mut self,
        rel: &Arc<Relation>,
        old: Option<&Tuple>,
        new: &Tuple,
    ) -> Result<bool, ApplyError> {
        self.guard()?;
        let r = async {
            self.table(rel).await?;
            let t = &self.catalog.tables[&rel.rel_id];
            let key = Self::key_values(t, Op::Update, old, Some(new))?;
            if let Some(held) = self.pending_holds(rel, &RowKey::of(&key)) {
                return Ok(held);
            }
            // Only this table's pending changes decide: other tables' runs stay buffered.
            self.leave_others(rel.rel_id).await?;
            self.end_table_run(rel.rel_id).await?;
            self.ensure_txn().await?;
            self.quiesce().await?;
            let m = self.catalog.tables[&rel.rel_id].key_match();
            let (stmt, _) = self
                .statement(rel.rel_id, Op::Update, StmtKey::Exists, move |t| t.exists_sql(&m))
                .await?;
            let params: Vec<Param> = key.values().filter_map(Param::from_value).collect();
            let params: Vec<&(dyn ToSql + Sync)> =
                params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
            let row = self
                .session
                .client
                .query_one(&stmt, &params)
                .await
                .map_err(|e| ApplyError::target("looking for a row on a shard", e))?;
            Ok(row.get::<_, bool>(0))
        }
        .await;
        self.check(r)
    }

    async fn delete_if_held(
        &mut self,
        rel: Arc<Relation>,
        old: OldTuple,
    ) -> Result<(), ApplyError> {
        self.spread.insert(rel.rel_id);
        self.change(Change::Delete { rel, old }).await
    }

    async fn taken_row(&mut self, at: MoveId) -> Result<Option<Tuple>, ApplyError> {
        self.guard()?;
        let r = self.quiesce().await;
        self.check(r)?;
        if !self.has_moves_table().await? {
            return Ok(None);
        }
        let mirror = self.cfg.mirror_name.clone();
        let lsn = at.commit_lsn.to_string();
        let seq = i64::from(at.seq);
        let rows = self
            .query_rows(
                "reading a row moved to another shard",
                "SELECT row_values FROM pgmirror.shard_moves \
                 WHERE mirror_name = $1 AND commit_lsn = $2::text::pg_lsn AND seq = $3",
                &[&mirror, &lsn, &seq],
            )
            .await?;
        Ok(rows.into_iter().next().map(|r| text_tuple(r.get(0))))
    }

    async fn forget_moves(&mut self, before: Lsn) -> Result<(), ApplyError> {
        self.guard()?;
        let r = self.quiesce().await;
        self.check(r)?;
        if !self.has_moves_table().await? {
            return Ok(());
        }
        self.settle().await?;
        let mirror = self.cfg.mirror_name.clone();
        let lsn = before.to_string();
        self.query_rows(
            "forgetting rows moved to other shards",
            "DELETE FROM pgmirror.shard_moves \
             WHERE mirror_name = $1 AND commit_lsn < $2::text::pg_lsn",
            &[&mirror, &lsn],
        )
        .await
        .map(drop)
    }
}
