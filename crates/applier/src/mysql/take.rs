//! A MySQL target as a shard (see [`crate::shard`]): handing over a row that moves to another
//! shard and keeping it in table `pgmirror_shard_moves` (InnoDB, in the target database), in
//! the same MySQL transaction as the changes, until every shard has passed the move; telling
//! whether it holds a row; deleting a row it may not hold.
//!
//! A kept row holds the PostgreSQL text form of each value ([`source_text`]), read back from
//! the MySQL row, so the shard it moves to converts it as it converts streamed values and
//! stores the same values (an unchanged TOASTed value the source did not send again included).

use std::fmt::Write as _;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use pgoutput_decoder::{Lsn, OldTuple, Relation, Tuple};
use sqlx::{MySqlConnection, Row};

use super::run::{Run, RunKind, push_key_in};
use super::schema::MySqlTable;
use super::value::{Bind, source_text};
use super::verify::read_column;
use super::{MySqlTarget, RelMap, key_binds, target_err};
use crate::error::ApplyError;
use crate::shard::{MoveId, ShardTarget, text_tuple};
use crate::target::{Change, Target};

/// The table of rows kept by moves.
pub const MOVES_TABLE: &str = "pgmirror_shard_moves";

/// Creates `pgmirror_shard_moves` if it is missing. DDL commits MySQL's open transaction, so
/// this runs at set-up, never while applying.
///
/// # Errors
/// [`ApplyError::MySql`] when the statement fails.
pub async fn ensure_moves_table(conn: &mut MySqlConnection) -> Result<(), ApplyError> {
    let sql = format!(
        "CREATE TABLE IF NOT EXISTS `{MOVES_TABLE}` ( \
           mirror VARCHAR(64) NOT NULL, \
           commit_lsn BIGINT UNSIGNED NOT NULL, \
           seq BIGINT NOT NULL, \
           table_name VARCHAR(200) NOT NULL, \
           row_values LONGTEXT NOT NULL, \
           PRIMARY KEY (mirror, commit_lsn, seq) \
         ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
    );
    sqlx::Executor::execute(conn, sql.as_str())
        .await
        .map_err(|e| target_err(format!("creating table `{MOVES_TABLE}`"), e))?;
    Ok(())
}

/// Whether `pgmirror_shard_moves` exists.
async fn has_moves_table(conn: &mut MySqlConnection) -> Result<bool, ApplyError> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.TABLES \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
    )
    .bind(MOVES_TABLE)
    .fetch_one(conn)
    .await
    .map_err(|e| target_err(format!("looking up `{MOVES_TABLE}`"), e))?;
    Ok(n > 0)
}

/// Deletes mirror `name`'s kept rows (all of them with `before` `None`); returns how many.
///
/// # Errors
/// [`ApplyError::MySql`] when a statement fails.
pub async fn forget(
    conn: &mut MySqlConnection,
    name: &str,
    before: Option<Lsn>,
) -> Result<u64, ApplyError> {
    if !has_moves_table(conn).await? {
        return Ok(0);
    }
    let done =
        sqlx::query(&format!("DELETE FROM `{MOVES_TABLE}` WHERE mirror = ? AND commit_lsn < ?"))
            .bind(name)
            .bind(before.map_or(u64::MAX, |l| l.0))
            .execute(conn)
            .await
            .map_err(|e| target_err("forgetting rows moved to other shards", e))?;
    Ok(done.rows_affected())
}

/// The row of `table` with key `key` (its values in key order), each value in PostgreSQL's
/// text form, in the table's column order; locked for the transaction.
async fn read_row(
    conn: &mut MySqlConnection,
    table: &MySqlTable,
    key: &[Bind],
) -> Result<Option<Vec<Option<String>>>, ApplyError> {
    let cols: Vec<String> = table.columns.iter().map(read_column).collect();
    let mut sql = format!("SELECT {} FROM {} WHERE ", cols.join(", "), table.quoted());
    push_key_in(&mut sql, table, &[key]);
    sql.push_str(" FOR UPDATE");
    let context = || format!("reading a row of {} to move it to another shard", table.quoted());
    let row = sqlx::query(&sql)
        .persistent(false)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| target_err(context(), e))?;
    let Some(row) = row else { return Ok(None) };
    let mut out = Vec::with_capacity(table.columns.len());
    for (i, c) in table.columns.iter().enumerate() {
        let v: Option<String> = row.try_get(i).map_err(|e| target_err(context(), e))?;
        out.push(match v {
            None => None,
            Some(s) => Some(source_text(c.ty.kind, &s).ok_or_else(|| ApplyError::Schema {
                table: table.source_display(),
                detail: format!("column {:?} holds {s:?}, which is not a {:?}", c.name, c.ty.kind),
            })?),
        });
    }
    Ok(Some(out))
}

/// Whether `table` holds a row with key `key`.
async fn row_exists(
    conn: &mut MySqlConnection,
    table: &MySqlTable,
    key: &[Bind],
) -> Result<bool, ApplyError> {
    let mut sql = format!("SELECT 1 FROM {} WHERE ", table.quoted());
    push_key_in(&mut sql, table, &[key]);
    let _ = write!(sql, " LIMIT 1");
    let row: Option<i64> =
        sqlx::query_scalar(&sql).persistent(false).fetch_optional(conn).await.map_err(|e| {
            target_err(format!("looking for a row of {} on a shard", table.quoted()), e)
        })?;
    Ok(row.is_some())
}

/// Keeps a taken row under `at`, in the open transaction.
async fn keep(
    conn: &mut MySqlConnection,
    name: &str,
    at: MoveId,
    table: &str,
    values: &[Option<String>],
) -> Result<(), ApplyError> {
    let json = serde_json::to_string(values).unwrap_or_default();
    sqlx::query(&format!(
        "INSERT INTO `{MOVES_TABLE}` (mirror, commit_lsn, seq, table_name, row_values) \
         VALUES (?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE row_values = VALUES(row_values)"
    ))
    .bind(name)
    .bind(at.commit_lsn.0)
    .bind(i64::from(at.seq))
    .bind(table)
    .bind(json)
    .execute(conn)
    .await
    .map_err(|e| {
        target_err(
            format!("keeping a row moved to another shard in `{MOVES_TABLE}` (made at set-up)"),
            e,
        )
    })?;
    Ok(())
}

/// The row kept under `at`, if any.
async fn kept(
    conn: &mut MySqlConnection,
    name: &str,
    at: MoveId,
) -> Result<Option<Vec<Option<String>>>, ApplyError> {
    if !has_moves_table(conn).await? {
        return Ok(None);
    }
    let json: Option<String> = sqlx::query_scalar(&format!(
        "SELECT CAST(row_values AS CHAR) FROM `{MOVES_TABLE}` \
         WHERE mirror = ? AND commit_lsn = ? AND seq = ?"
    ))
    .bind(name)
    .bind(at.commit_lsn.0)
    .bind(i64::from(at.seq))
    .fetch_optional(conn)
    .await
    .map_err(|e| target_err("reading a row moved to another shard", e))?;
    json.map(|j| {
        serde_json::from_str(&j).map_err(|e| {
            ApplyError::TargetSchema(vec![format!(
                "`{MOVES_TABLE}`.row_values of mirror {name:?} is not a JSON array of texts \
                 ({e}); drop the mirror and set it up again"
            )])
        })
    })
    .transpose()
}

impl MySqlTarget {
    /// Sends the pending run of `rel`'s table, so a query sees every change sent so far, and
    /// opens the MySQL transaction; returns the relation's map and the key of the row `old`
    /// (the old key, when sent) or else `new` identifies.
    async fn settle(
        &mut self,
        rel: &Arc<Relation>,
        old: Option<&Tuple>,
        new: &Tuple,
    ) -> Result<(Arc<RelMap>, Vec<Bind>), ApplyError> {
        self.check_poisoned()?;
        let m = self.rel_map(rel)?;
        self.end_table_run(&m.table).await?;
        self.begin_if_needed().await?;
        let key = key_binds(&m, old.unwrap_or(new))?;
        Ok((m, key))
    }

    async fn take(
        &mut self,
        rel: &Arc<Relation>,
        old: Option<&Tuple>,
        new: &Tuple,
        at: MoveId,
    ) -> Result<Option<Tuple>, ApplyError> {
        let (m, key) = self.settle(rel, old, new).await?;
        let read: BoxFuture<'_, _> = Box::pin(read_row(&mut self.conn, &m.table, &key));
        let Some(row) = read.await? else { return Ok(None) };
        let mut delete = Run::new(m.table.clone(), RunKind::Delete);
        delete.push(None, None, key);
        delete.execute(&mut self.conn, self.server.collation()).await?;
        // In the relation's column order, as the tuple the shard it moves to receives.
        let values: Vec<Option<String>> = m.cols.iter().map(|&i| row[i].clone()).collect();
        let name = self.cfg.mirror_name.clone();
        let table = m.table.source_display();
        let store: BoxFuture<'_, _> = Box::pin(keep(&mut self.conn, &name, at, &table, &values));
        store.await?;
        self.stats.statements += 2;
        Ok(Some(text_tuple(values)))
    }

    async fn holds(
        &mut self,
        rel: &Arc<Relation>,
        old: Option<&Tuple>,
        new: &Tuple,
    ) -> Result<bool, ApplyError> {
        let (m, key) = self.settle(rel, old, new).await?;
        let exists: BoxFuture<'_, _> = Box::pin(row_exists(&mut self.conn, &m.table, &key));
        exists.await
    }
}

impl ShardTarget for MySqlTarget {
    async fn take_row(
        &mut self,
        rel: &Arc<Relation>,
        old: Option<&Tuple>,
        new: &Tuple,
        at: MoveId,
    ) -> Result<Option<Tuple>, ApplyError> {
        let r = self.take(rel, old, new, at).await;
        self.poison_on_err(r)
    }

    async fn holds_row(
        &mut self,
        rel: &Arc<Relation>,
        old: Option<&Tuple>,
        new: &Tuple,
    ) -> Result<bool, ApplyError> {
        let r = self.holds(rel, old, new).await;
        self.poison_on_err(r)
    }

    async fn delete_if_held(
        &mut self,
        rel: Arc<Relation>,
        old: OldTuple,
    ) -> Result<(), ApplyError> {
        // A delete by key that finds no row is no error here.
        self.change(Change::Delete { rel, old }).await
    }

    async fn taken_row(&mut self, at: MoveId) -> Result<Option<Tuple>, ApplyError> {
        self.check_poisoned()?;
        let name = self.cfg.mirror_name.clone();
        let read: BoxFuture<'_, _> = Box::pin(kept(&mut self.conn, &name, at));
        let r = read.await;
        self.poison_on_err(r).map(|row| row.map(text_tuple))
    }

    async fn forget_moves(&mut self, before: Lsn) -> Result<(), ApplyError> {
        self.check_poisoned()?;
        let name = self.cfg.mirror_name.clone();
        let run: BoxFuture<'_, _> = Box::pin(forget(&mut self.conn, &name, Some(before)));
        let r = run.await.map(drop);
        self.poison_on_err(r)
    }
}
