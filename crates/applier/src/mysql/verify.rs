//! Row-by-row comparison of a source table with its MySQL table.
//!
//! The engines print values differently (and hash nothing alike), so each value is brought to
//! one normal form first: the source's text through the same conversion the mirror applies,
//! the target's through `CAST(... AS CHAR)` (`HEX` for bytes); then floats are compared as
//! numbers, decimals without trailing zeros, times with six fractional digits, JSON as parsed
//! documents. The source is read in key order, in chunks; each chunk's keys are looked up on
//! the target, then the target's keys the source lacks are listed.

use std::collections::HashMap;

use pgoutput_decoder::Column;
use sqlx::{MySqlConnection, Row};
use tokio_postgres::Client;

use super::schema::{MySqlColumn, MySqlTable};
use super::types::Kind;
use super::value::{Bind, convert};
use super::{quote, target_err};
use crate::error::ApplyError;
use crate::shard::KeyColumn;
use crate::shard::hash::{partition_of, row_hash};

/// How a table compares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableDiff {
    /// Rows on the source.
    pub source_rows: u64,
    /// Rows on the target.
    pub target_rows: u64,
    /// Keys (`col=value, ...`) of rows that differ, are missing on the target, or are only on
    /// the target; at most `max_keys`, each with what differs.
    pub differences: Vec<String>,
    /// Differences found in all (the list may be cut).
    pub differing: u64,
}

impl TableDiff {
    /// Whether both sides hold the same rows.
    pub fn is_equal(&self) -> bool {
        self.differing == 0
    }
}

/// Compares `table` on the source (read through `source`, whose session settings this sets)
/// with the MySQL table, `chunk` rows at a time, listing at most `max_keys` differing keys.
///
/// # Errors
/// [`ApplyError::SourceCatalog`] or [`ApplyError::MySql`] when a query fails.
pub async fn compare_table(
    source: &Client,
    conn: &mut MySqlConnection,
    table: &MySqlTable,
    chunk: usize,
    max_keys: usize,
) -> Result<TableDiff, ApplyError> {
    compare_table_part(source, conn, table, None, chunk, max_keys).await
}

/// Which source rows a shard holds: those whose `key` (column indexes and types) hashes to
/// hash partition `remainder` of `modulus`.
#[derive(Debug, Clone, Copy)]
pub struct Part<'a> {
    /// The shard key.
    pub key: &'a [KeyColumn],
    /// The number of shards.
    pub modulus: usize,
    /// The shard.
    pub remainder: usize,
}

impl Part<'_> {
    /// Whether the source row (text values) belongs to this part.
    fn holds(&self, texts: &[Option<String>]) -> Result<bool, ApplyError> {
        let hashes = self
            .key
            .iter()
            .map(|k| {
                let v = texts.get(k.index).and_then(Option::as_deref);
                k.ty.hash(v.map_or(Column::Null, |s| Column::Text(s.as_bytes())))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(partition_of(row_hash(hashes), self.modulus) == self.remainder)
    }
}

/// [`compare_table`] of the source rows `part` selects (all with `None`) with the MySQL table,
/// a shard's: a row the shard holds that hashes to another shard counts as only on the target.
///
/// # Errors
/// As [`compare_table`]; [`ApplyError::Shard`] for a key value that cannot be hashed.
pub async fn compare_table_part(
    source: &Client,
    conn: &mut MySqlConnection,
    table: &MySqlTable,
    part: Option<Part<'_>>,
    chunk: usize,
    max_keys: usize,
) -> Result<TableDiff, ApplyError> {
    source.batch_execute(super::copy::SESSION).await.map_err(ApplyError::SourceCatalog)?;
    let mut diff = TableDiff::default();
    let pg_cols: Vec<String> = table
        .columns
        .iter()
        .map(|c| {
            let q = pgconn::quote_ident(&c.name);
            // The output function's text, as COPY and the stream carry it (a cast to text
            // differs: it drops char(n)'s padding and adds inet's /128). `IS NULL` is true of
            // a composite whose fields are all NULL; its text is not NULL.
            format!("CASE WHEN {q}::text IS NOT NULL THEN format('%s', {q}) END")
        })
        .collect();
    let key_cols: Vec<String> =
        table.key.iter().map(|&i| pgconn::quote_ident(&table.columns[i].name)).collect();
    let key_params: Vec<String> = table
        .key
        .iter()
        .enumerate()
        .map(|(j, &i)| format!("${}::text::{}", j + 1, table.columns[i].pg_type))
        .collect();
    let from =
        format!("{}.{}", pgconn::quote_ident(&table.schema), pgconn::quote_ident(&table.name));
    let limit = chunk.max(1);
    let first = format!(
        "SELECT {} FROM {from} ORDER BY {} LIMIT {limit}",
        pg_cols.join(", "),
        key_cols.join(", ")
    );
    let next = format!(
        "SELECT {} FROM {from} WHERE ({}) > ({}) ORDER BY {} LIMIT {limit}",
        pg_cols.join(", "),
        key_cols.join(", "),
        key_params.join(", "),
        key_cols.join(", ")
    );
    let mut last: Option<Vec<String>> = None;
    let mut seen_on_target = 0u64;
    loop {
        let rows = match &last {
            None => source.query(&first, &[]).await,
            Some(k) => {
                let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                    k.iter().map(|s| s as &(dyn tokio_postgres::types::ToSql + Sync)).collect();
                source.query(&next, &params).await
            }
        }
        .map_err(ApplyError::SourceCatalog)?;
        if rows.is_empty() {
            break;
        }
        let mut src: Vec<(String, Vec<Option<String>>)> = Vec::with_capacity(rows.len());
        let mut keys: Vec<Vec<Option<String>>> = Vec::with_capacity(rows.len());
        for r in &rows {
            let texts: Vec<Option<String>> = (0..table.columns.len()).map(|i| r.get(i)).collect();
            last = Some(table.key.iter().map(|&i| texts[i].clone().unwrap_or_default()).collect());
            if let Some(p) = &part
                && !p.holds(&texts)?
            {
                continue;
            }
            keys.push(table.key.iter().map(|&i| texts[i].clone()).collect());
            let norm: Vec<Option<String>> = table
                .columns
                .iter()
                .zip(&texts)
                .map(|(c, t)| t.as_deref().map(|s| normal_source(c.ty.kind, s)))
                .collect();
            src.push((key_of(table, &norm), norm));
        }
        diff.source_rows += u64::try_from(src.len()).unwrap_or(u64::MAX);
        let target =
            if keys.is_empty() { HashMap::new() } else { target_rows(conn, table, &keys).await? };
        seen_on_target += u64::try_from(target.len()).unwrap_or(u64::MAX);
        for (key, values) in &src {
            let problem = match target.get(key) {
                None => Some("missing on the target".to_owned()),
                Some(t) => first_difference(table, values, t),
            };
            if let Some(p) = problem {
                diff.differing += 1;
                if diff.differences.len() < max_keys {
                    diff.differences.push(format!("({key}): {p}"));
                }
            }
        }
        if rows.len() < limit {
            break;
        }
    }
    let count: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {}", table.quoted()))
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| target_err(format!("counting {}", table.quoted()), e))?;
    diff.target_rows = u64::try_from(count).unwrap_or(0);
    if diff.target_rows > seen_on_target {
        let extra = diff.target_rows - seen_on_target;
        diff.differing += extra;
        if diff.differences.len() < max_keys {
            diff.differences.push(format!("{extra} rows only on the target"));
        }
    }
    Ok(diff)
}

/// The normal form of a source value.
fn normal_source(kind: Kind, s: &str) -> String {
    match convert(kind, s) {
        Ok(Bind::Int(v)) => v.to_string(),
        Ok(Bind::UInt(v)) => v.to_string(),
        Ok(Bind::Float32(v)) => v.to_string(),
        Ok(Bind::Float64(v)) => v.to_string(),
        Ok(Bind::Bytes(b)) => b.iter().map(|b| format!("{b:02x}")).collect(),
        Ok(Bind::Text(t)) => normal_text(kind, &t),
        Ok(Bind::Null) => String::new(),
        // A value the mirror refuses is never on the target: show it as the source has it.
        Err(_) => format!("unrepresentable {s}"),
    }
}

/// The normal form of a value as MySQL prints it (`HEX` for bytes).
fn normal_target(kind: Kind, s: &str) -> String {
    match kind {
        Kind::Float { single: true } => s.parse::<f32>().map_or(s.to_owned(), |v| v.to_string()),
        Kind::Float { single: false } => s.parse::<f64>().map_or(s.to_owned(), |v| v.to_string()),
        Kind::Bytes { .. } => s.to_ascii_lowercase(),
        _ => normal_text(kind, s),
    }
}

fn normal_text(kind: Kind, s: &str) -> String {
    match kind {
        Kind::Decimal { .. } => {
            let (neg, digits) = s.strip_prefix('-').map_or((false, s), |d| (true, d));
            let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
            let int = int.trim_start_matches('0');
            let frac = frac.trim_end_matches('0');
            let int = if int.is_empty() { "0" } else { int };
            let zero = int == "0" && frac.is_empty();
            let sign = if neg && !zero { "-" } else { "" };
            if frac.is_empty() { format!("{sign}{int}") } else { format!("{sign}{int}.{frac}") }
        }
        Kind::Time | Kind::DateTime { .. } => {
            let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
            format!("{whole}.{frac:0<6}")
        }
        Kind::Json | Kind::JsonArray { .. } | Kind::JsonString => {
            serde_json::from_str::<serde_json::Value>(s).map_or(s.to_owned(), |v| v.to_string())
        }
        _ => s.to_owned(),
    }
}

/// `col=value, ...` of a row's key, from its normal forms.
fn key_of(table: &MySqlTable, norm: &[Option<String>]) -> String {
    table
        .key
        .iter()
        .map(|&i| {
            let v = norm[i].as_deref().unwrap_or("NULL");
            format!("{}={v}", table.columns[i].name)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// What differs between a source row and its target row, as one phrase.
fn first_difference(
    table: &MySqlTable,
    src: &[Option<String>],
    dst: &[Option<String>],
) -> Option<String> {
    table.columns.iter().zip(src.iter().zip(dst)).find(|(_, (a, b))| a != b).map(|(c, (a, b))| {
        format!(
            "column {:?} is {} on the source but {} on the target",
            c.name,
            a.as_deref().unwrap_or("NULL"),
            b.as_deref().unwrap_or("NULL")
        )
    })
}

/// The expression reading a column's value as text: `CAST(... AS CHAR)`, `HEX` for bytes, a
/// `FLOAT` through `DOUBLE` (which holds it exactly; the `FLOAT`'s own text has six digits).
pub(super) fn read_column(c: &MySqlColumn) -> String {
    match c.ty.kind {
        Kind::Bytes { .. } => format!("HEX({})", quote(&c.name)),
        Kind::Float { single: true } => format!("CAST(CAST({} AS DOUBLE) AS CHAR)", quote(&c.name)),
        _ => format!("CAST({} AS CHAR)", quote(&c.name)),
    }
}

/// The target's rows with the given source keys (text forms), by normal key.
async fn target_rows(
    conn: &mut MySqlConnection,
    table: &MySqlTable,
    keys: &[Vec<Option<String>>],
) -> Result<HashMap<String, Vec<Option<String>>>, ApplyError> {
    let cols: Vec<String> = table.columns.iter().map(read_column).collect();
    let key_cols: Vec<String> = table.key.iter().map(|&i| quote(&table.columns[i].name)).collect();
    let tuple = format!("({})", vec!["?"; key_cols.len()].join(", "));
    let sql = format!(
        "SELECT {} FROM {} WHERE ({}) IN ({})",
        cols.join(", "),
        table.quoted(),
        key_cols.join(", "),
        vec![tuple.as_str(); keys.len()].join(", ")
    );
    let mut q = sqlx::query(&sql).persistent(false);
    for k in keys {
        for (j, &i) in table.key.iter().enumerate() {
            let kind = table.columns[i].ty.kind;
            let b = k[j].as_deref().map_or(Ok(Bind::Null), |s| convert(kind, s));
            q = super::run::bind(q, b.unwrap_or(Bind::Null));
        }
    }
    let rows = q
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| target_err(format!("reading {}", table.quoted()), e))?;
    let mut out = HashMap::with_capacity(rows.len());
    for r in rows {
        let norm: Vec<Option<String>> = table
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let v: Option<String> = r.try_get(i).ok().flatten();
                v.map(|s| normal_target(c.ty.kind, &s))
            })
            .collect();
        out.insert(key_of(table, &norm), norm);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_normalise_alike() {
        let cases: &[(Kind, &str, &str)] = &[
            (Kind::Decimal { precision: 12, scale: 2 }, "12.50", "12.50"),
            (
                Kind::Decimal { precision: 65, scale: 30 },
                "-0.5",
                "-0.500000000000000000000000000000",
            ),
            (Kind::DateTime { tz: true }, "2024-01-02 03:04:05.5+00", "2024-01-02 03:04:05.500000"),
            (Kind::Float { single: false }, "1e+300", "1e300"),
            (Kind::Bool, "t", "1"),
            (Kind::Json, "{\"b\": 1, \"a\": [1, 2]}", "{\"a\":[1,2],\"b\":1}"),
            (Kind::Bytes { max_bytes: None }, "\\xdeadbeef", "DEADBEEF"),
        ];
        for (kind, src, dst) in cases {
            assert_eq!(normal_source(*kind, src), normal_target(*kind, dst), "{kind:?} {src}");
        }
    }
}
