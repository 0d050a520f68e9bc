//! The initial copy of a table into MySQL: the source's rows read with `COPY ... TO STDOUT`
//! under the slot's exported snapshot, converted as streamed values are, and written with
//! multi-row `INSERT`s of one prepared statement, one transaction per table, while the next
//! rows are read.

use std::sync::Arc;

use futures_util::{StreamExt, pin_mut};
use pgoutput_decoder::Column;
use sqlx::MySqlConnection;
use tokio_postgres::Client;

use super::run::{MAX_BINDS, Run, RunKind, bind};
use super::schema::MySqlTable;
use super::value::{Bind, convert};
use super::{MySqlTargetConfig, exec, quote, target_err};
use crate::error::ApplyError;
use crate::shard::KeyColumn;
use crate::shard::hash::{partition_of, row_hash};

/// Settings that shape the text COPY prints, the same the replication connection uses.
pub(super) const SESSION: &str = "SET DateStyle = 'ISO, MDY'; SET IntervalStyle = 'postgres'; \
     SET TimeZone = 'UTC'; SET extra_float_digits = 3; SET bytea_output = 'hex'; \
     SET client_encoding = 'UTF8'";

/// Copies `table`'s rows (those `row_filter` keeps, if any) as of `snapshot` (an exported
/// snapshot; `None`: a fresh one) from `source` into the empty MySQL table through `conn`;
/// returns how many.
///
/// # Errors
/// [`ApplyError::Unrepresentable`] for a value MySQL cannot hold; [`ApplyError::SourceCatalog`]
/// when the source fails; [`ApplyError::MySql`] when the target does.
pub async fn copy_table(
    source: &Client,
    conn: &mut MySqlConnection,
    collation: &str,
    table: &Arc<MySqlTable>,
    snapshot: Option<&str>,
    row_filter: Option<&str>,
    cfg: &MySqlTargetConfig,
) -> Result<u64, ApplyError> {
    let shards = std::slice::from_mut(conn);
    let rows = copy_table_routed(source, shards, collation, table, None, snapshot, row_filter, cfg);
    Ok(rows.await?.iter().sum())
}

/// [`copy_table`] into shards, each through its own connection in `shards` (shard `i` holds
/// hash partition `REMAINDER i`): the table is read once, each row goes to the shard its `key`
/// (column indexes and types) hashes to, or to every shard when `key` is `None` (a reference
/// table). Returns the rows each shard received; each shard's part is one transaction.
///
/// # Errors
/// As [`copy_table`]; [`ApplyError::Shard`] for a key value that cannot be hashed.
#[allow(clippy::too_many_arguments)]
pub async fn copy_table_routed(
    source: &Client,
    shards: &mut [MySqlConnection],
    collation: &str,
    table: &Arc<MySqlTable>,
    key: Option<&[KeyColumn]>,
    snapshot: Option<&str>,
    row_filter: Option<&str>,
    cfg: &MySqlTargetConfig,
) -> Result<Vec<u64>, ApplyError> {
    let snapshot_sql = match snapshot {
        Some(s) => format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT {}; \
             {SESSION}",
            pgconn::quote_literal(s)
        ),
        None => format!("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; {SESSION}"),
    };
    source.batch_execute(&snapshot_sql).await.map_err(ApplyError::SourceCatalog)?;
    let cols: Vec<String> = table.columns.iter().map(|c| pgconn::quote_ident(&c.name)).collect();
    let filter = row_filter.map(|f| format!(" WHERE {f}")).unwrap_or_default();
    let sql = format!(
        "COPY (SELECT {} FROM {}.{}{filter}) TO STDOUT",
        cols.join(", "),
        pgconn::quote_ident(&table.schema),
        pgconn::quote_ident(&table.name)
    );
    let stream = source.copy_out(&sql).await.map_err(ApplyError::SourceCatalog)?;
    for conn in shards.iter_mut() {
        // One transaction for the table, as `LOAD DATA` has: a commit (and its log flush) per
        // statement would cost more than the rows. An interrupted copy starts over anyway.
        exec(conn, "SET SESSION unique_checks = 0")
            .await
            .map_err(|e| target_err("setting up the copy session", e))?;
        exec(conn, "BEGIN").await.map_err(|e| target_err("BEGIN", e))?;
    }
    let per_statement = rows_per_statement(table, cfg.batch_max_rows);
    // The source's rows are read and converted while the shards insert the batches before.
    let (senders, receivers): (Vec<_>, Vec<_>) =
        shards.iter().map(|_| tokio::sync::mpsc::channel::<Vec<Vec<Bind>>>(2)).unzip();
    let n = shards.len();
    let read = async move {
        pin_mut!(stream);
        let mut batches: Vec<(Vec<Vec<Bind>>, usize)> = vec![(Vec::new(), 0); n];
        let mut pending: Vec<u8> = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(ApplyError::SourceCatalog)?;
            pending.extend_from_slice(&chunk);
            let Some(end) = pending.iter().rposition(|&b| b == b'\n') else { continue };
            for line in pending[..end].split(|&b| b == b'\n') {
                let fields: Vec<Option<String>> = line.split(|&b| b == b'\t').map(field).collect();
                let r = row(table, &fields)?;
                let to = match key {
                    Some(key) => shard_of(key, &fields, n)?,
                    None => 0..n,
                };
                let size = r.iter().map(Bind::wire_len).sum::<usize>();
                let mut r = Some(r);
                for i in to.clone() {
                    let (batch, bytes) = &mut batches[i];
                    *bytes += size;
                    // The last shard takes the row itself; only a reference table's are cloned.
                    let one = if i + 1 == to.end { r.take() } else { r.clone() };
                    batch.extend(one);
                    if batch.len() == per_statement || *bytes >= cfg.batch_max_bytes {
                        *bytes = 0;
                        if senders[i].send(std::mem::take(batch)).await.is_err() {
                            // A writer failed; its error is the one to report.
                            return Ok(());
                        }
                    }
                }
            }
            pending.drain(..=end);
        }
        for ((batch, _), sender) in batches.into_iter().zip(&senders) {
            if !batch.is_empty() {
                let _ = sender.send(batch).await;
            }
        }
        Ok::<_, ApplyError>(())
    };
    let writes = shards
        .iter_mut()
        .zip(receivers)
        .map(|(conn, received)| write_batches(conn, collation, table, per_statement, received));
    let ((), rows) = tokio::try_join!(read, futures_util::future::try_join_all(writes))?;
    for conn in shards.iter_mut() {
        exec(conn, "COMMIT").await.map_err(|e| target_err("COMMIT", e))?;
    }
    source.batch_execute("COMMIT").await.map_err(ApplyError::SourceCatalog)?;
    Ok(rows)
}

/// The shard (of `shards`) a copied row's `key` hashes to, as a range of one.
fn shard_of(
    key: &[KeyColumn],
    fields: &[Option<String>],
    shards: usize,
) -> Result<std::ops::Range<usize>, ApplyError> {
    let hashes = key
        .iter()
        .map(|k| {
            let v = fields.get(k.index).and_then(Option::as_deref);
            k.ty.hash(v.map_or(Column::Null, |s| Column::Text(s.as_bytes())))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(ApplyError::Shard)?;
    let i = partition_of(row_hash(hashes), shards);
    Ok(i..i + 1)
}

/// Inserts the batches `received` into `table` through `conn`; returns the rows.
async fn write_batches(
    conn: &mut MySqlConnection,
    collation: &str,
    table: &Arc<MySqlTable>,
    per_statement: usize,
    mut received: tokio::sync::mpsc::Receiver<Vec<Vec<Bind>>>,
) -> Result<u64, ApplyError> {
    let prepared = insert_sql(table, per_statement);
    let mut rows = 0u64;
    while let Some(batch) = received.recv().await {
        rows += u64::try_from(batch.len()).unwrap_or(u64::MAX);
        if batch.len() == per_statement {
            // Full batches share one prepared statement: the server parses it once and takes
            // the values in binary, where parsing literals was most of its work.
            let mut q = sqlx::query(&prepared);
            for b in batch.into_iter().flatten() {
                q = bind(q, b);
            }
            sqlx::Executor::execute(&mut *conn, q)
                .await
                .map_err(|e| target_err(format!("INSERT on {}", table.quoted()), e))?;
        } else {
            let mut run = Run::new(table.clone(), RunKind::Insert(all_columns(table)));
            for r in batch {
                run.push(None, None, r);
            }
            run.execute(conn, collation).await?;
        }
    }
    Ok(rows)
}

/// Rows in one copy statement: `max_rows`, fewer when the table is too wide for MySQL's limit
/// of placeholders in a prepared statement.
fn rows_per_statement(table: &MySqlTable, max_rows: usize) -> usize {
    (MAX_BINDS / table.columns.len().max(1)).clamp(1, max_rows.max(1))
}

fn all_columns(table: &MySqlTable) -> Vec<usize> {
    (0..table.columns.len()).collect()
}

/// `INSERT INTO t (c, ...) VALUES (?, ...), ...` of `rows` rows.
fn insert_sql(table: &MySqlTable, rows: usize) -> String {
    let cols: Vec<String> = table.columns.iter().map(|c| quote(&c.name)).collect();
    let tuple = format!("({})", vec!["?"; cols.len()].join(", "));
    format!(
        "INSERT INTO {} ({}) VALUES {}",
        table.quoted(),
        cols.join(", "),
        vec![tuple; rows].join(", ")
    )
}

/// One COPY text line's fields converted.
fn row(table: &MySqlTable, fields: &[Option<String>]) -> Result<Vec<Bind>, ApplyError> {
    let mut out = Vec::with_capacity(fields.len());
    for (c, f) in table.columns.iter().zip(fields) {
        match f {
            None => out.push(Bind::Null),
            Some(s) => out.push(convert(c.ty.kind, s).map_err(|reason| {
                let key: Vec<String> = table
                    .key
                    .iter()
                    .map(|&k| {
                        let v = fields.get(k).and_then(Option::as_deref).unwrap_or("NULL");
                        format!("{}={v}", table.columns[k].name)
                    })
                    .collect();
                ApplyError::Unrepresentable {
                    table: table.source_display(),
                    key: key.join(", "),
                    column: c.name.clone(),
                    value: s.chars().take(80).collect(),
                    reason,
                }
            })?),
        }
    }
    Ok(out)
}

/// A COPY text field: `\N` is NULL; backslash escapes decoded.
fn field(f: &[u8]) -> Option<String> {
    if f == b"\\N" {
        return None;
    }
    if !f.contains(&b'\\') {
        return Some(String::from_utf8_lossy(f).into_owned());
    }
    let mut out = Vec::with_capacity(f.len());
    let mut i = 0;
    while i < f.len() {
        if f[i] != b'\\' || i + 1 == f.len() {
            out.push(f[i]);
            i += 1;
            continue;
        }
        let c = f[i + 1];
        i += 2;
        match c {
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let mut v = u32::from(c - b'0');
                let mut n = 1;
                while n < 3 && i < f.len() && (b'0'..=b'7').contains(&f[i]) {
                    v = v * 8 + u32::from(f[i] - b'0');
                    i += 1;
                    n += 1;
                }
                out.push(u8::try_from(v & 0xff).unwrap_or(0));
            }
            b'x' if i < f.len() && f[i].is_ascii_hexdigit() => {
                let mut v = 0u32;
                let mut n = 0;
                while n < 2 && i < f.len() && f[i].is_ascii_hexdigit() {
                    v = v * 16 + char::from(f[i]).to_digit(16).unwrap_or(0);
                    i += 1;
                    n += 1;
                }
                out.push(u8::try_from(v).unwrap_or(0));
            }
            other => out.push(other),
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// The tables among `tables` whose InnoDB `STATS_AUTO_RECALC` is the server's default, the
/// ones [`pause_stats_recalc`] may turn off for the copy and turn back to the default after.
///
/// # Errors
/// [`ApplyError::MySql`] when the catalog cannot be read.
pub async fn default_stats_recalc(
    conn: &mut MySqlConnection,
    tables: &[MySqlTable],
) -> Result<Vec<String>, ApplyError> {
    let mut out = Vec::new();
    for t in tables {
        let options: Option<String> = sqlx::query_scalar(
            "SELECT CAST(CREATE_OPTIONS AS CHAR) FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
        )
        .bind(&t.target)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| target_err(format!("reading the options of {}", t.quoted()), e))?
        .flatten();
        if !options.unwrap_or_default().to_ascii_lowercase().contains("stats_auto_recalc") {
            out.push(t.target.clone());
        }
    }
    Ok(out)
}

/// Turns InnoDB's automatic statistics recalculation off on `tables` for the copy. A table
/// filling up from empty asks for it again at every tenth more rows; MariaDB 10.11's statistics
/// thread then loops until ten seconds have passed since the last one, taking a core the copy
/// needs (the copy of three 1M-row tables took 16 s with it, 8 s without).
///
/// # Errors
/// [`ApplyError::MySql`] when a statement fails.
pub async fn pause_stats_recalc(
    conn: &mut MySqlConnection,
    tables: &[String],
) -> Result<(), ApplyError> {
    for t in tables {
        let sql = format!("ALTER TABLE {} STATS_AUTO_RECALC = 0", quote(t));
        exec(conn, &sql).await.map_err(|e| target_err(format!("ALTER TABLE {}", quote(t)), e))?;
    }
    Ok(())
}

/// Gives `tables` (those of them that still exist) the server's default statistics
/// recalculation again and fresh statistics (`ANALYZE TABLE`), after the copy.
///
/// # Errors
/// [`ApplyError::MySql`] when a statement fails.
pub async fn resume_stats_recalc(
    conn: &mut MySqlConnection,
    tables: &[String],
) -> Result<(), ApplyError> {
    for t in tables {
        let exists: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
        )
        .bind(t)
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| target_err(format!("looking up {}", quote(t)), e))?;
        if exists == 0 {
            continue;
        }
        let q = quote(t);
        exec(conn, &format!("ALTER TABLE {q} STATS_AUTO_RECALC = DEFAULT"))
            .await
            .map_err(|e| target_err(format!("ALTER TABLE {q}"), e))?;
        // A result set: read, not executed.
        sqlx::query(&format!("ANALYZE TABLE {q}"))
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| target_err(format!("ANALYZE TABLE {q}"), e))?;
    }
    Ok(())
}

/// Empties the tables (before a copy starts over).
///
/// # Errors
/// [`ApplyError::MySql`] when a statement fails.
pub async fn empty_tables(
    conn: &mut MySqlConnection,
    tables: &[MySqlTable],
) -> Result<(), ApplyError> {
    for t in tables {
        sqlx::Executor::execute(
            &mut *conn,
            format!("TRUNCATE TABLE {}", quote(&t.target)).as_str(),
        )
        .await
        .map_err(|e| super::target_err(format!("emptying {}", t.quoted()), e))?;
    }
    Ok(())
}

/// The tables among `tables` that hold rows.
///
/// # Errors
/// [`ApplyError::MySql`] when a query fails.
pub async fn non_empty_tables(
    conn: &mut MySqlConnection,
    tables: &[MySqlTable],
) -> Result<Vec<String>, ApplyError> {
    let mut out = Vec::new();
    for t in tables {
        let any: Option<i64> = sqlx::query_scalar(&format!("SELECT 1 FROM {} LIMIT 1", t.quoted()))
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| super::target_err(format!("reading {}", t.quoted()), e))?;
        if any.is_some() {
            out.push(t.target.clone());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_fields() {
        assert_eq!(field(b"\\N"), None);
        assert_eq!(field(b"a\\tb\\\\c\\n"), Some("a\tb\\c\n".into()));
        assert_eq!(field(b"\\101\\x42"), Some("AB".into()));
        assert_eq!(field(b"\\\\N"), Some("\\N".into()));
    }
}
