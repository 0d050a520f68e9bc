//! Comparing a table on two servers by ordered hashes, whole or in key-range chunks.
//!
//! A row's text is `ROW(col, ...)::text` over the source's columns in the source's order,
//! so extra target columns and a different column order on the target do not matter. Every
//! helper first sets DateStyle, IntervalStyle, TimeZone, extra_float_digits and
//! bytea_output on the session (they change how values print). Rows are ordered by the
//! key (primary key, else replica identity index), text-like key columns compared with
//! the "C" collation so that both servers agree whatever their default collation; a table
//! without a key is ordered by its row text. The table hash is
//! `md5(string_agg(md5(row_text), '' ORDER BY key))`, so memory stays at 32 bytes per row.

use std::collections::HashMap;

use futures_util::future::try_join_all;
use pgconn::quote_ident;
use tokio_postgres::Client;
use tokio_postgres::types::ToSql;

use crate::catalog::TableDef;
use crate::copy::SESSION_SETTINGS;
use crate::error::{DbContext, Error};

/// A key value: the text of each key column (or the row text for keyless tables).
pub type Key = Vec<String>;

/// A half-open key range `[lower, upper)`; `None` is unbounded.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyRange {
    /// Inclusive lower bound.
    pub lower: Option<Key>,
    /// Exclusive upper bound.
    pub upper: Option<Key>,
}

/// Row count and hash of a table or a key range of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableHash {
    /// Number of rows.
    pub rows: i64,
    /// md5 (hex) of the concatenated per-row md5s in key order.
    pub md5: String,
}

/// One chunk of a table as seen on one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkHash {
    /// The range the chunk covers; consecutive chunks tile the whole key space.
    pub range: KeyRange,
    /// First key in the chunk on this server.
    pub first_key: Key,
    /// Last key in the chunk on this server.
    pub last_key: Key,
    /// Rows and hash.
    pub hash: TableHash,
}

/// A chunk whose hash differs between source and target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkDiff {
    /// The range compared.
    pub range: KeyRange,
    /// Source side.
    pub source: TableHash,
    /// Target side.
    pub target: TableHash,
}

/// How a row differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiffKind {
    /// On the source only.
    MissingOnTarget,
    /// On the target only.
    ExtraOnTarget,
    /// On both, with different contents.
    Differs,
}

/// A row that differs between source and target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyDiff {
    /// Its key (for keyless tables, the row text).
    pub key: Key,
    /// How it differs.
    pub kind: DiffKind,
}

/// SQL pieces for one table's key.
struct KeySql {
    /// Ordering/comparison expressions (collated where needed).
    exprs: Vec<String>,
    /// Text output of each key part.
    texts: Vec<String>,
    /// Parameter placeholders turning text back into key values: `{}` is the `$n`.
    params: Vec<(String, String)>,
    /// `ROW(...)::text` of the table's columns.
    row_text: String,
    /// `ONLY "s"."t"` or `"s"."t"`.
    from: String,
    /// The publication's row filter, if any.
    row_filter: Option<String>,
}

impl KeySql {
    fn new(table: &TableDef) -> Self {
        let cols: Vec<String> = table.columns.iter().map(|c| quote_ident(&c.name)).collect();
        let row_text = format!("ROW({})::text", cols.join(", "));
        let only = if table.is_partitioned { "" } else { "ONLY " };
        let from = format!("{only}{}", table.quoted());
        let keys = table.key_columns();
        let (mut exprs, mut texts, mut params) = (Vec::new(), Vec::new(), Vec::new());
        if keys.is_empty() {
            exprs.push(format!("({row_text}) COLLATE \"C\""));
            texts.push(row_text.clone());
            params.push(("text".to_owned(), " COLLATE \"C\"".to_owned()));
        } else {
            for k in keys {
                let col = table.column(k);
                let collate = if col.is_some_and(|c| c.collatable) { " COLLATE \"C\"" } else { "" };
                let ty = col.map_or_else(|| "text".to_owned(), |c| c.type_name.clone());
                exprs.push(format!("{}{collate}", quote_ident(k)));
                texts.push(format!("{}::text", quote_ident(k)));
                params.push((ty, collate.to_owned()));
            }
        }
        Self { exprs, texts, params, row_text, from, row_filter: table.row_filter.clone() }
    }

    fn order_by(&self) -> String {
        self.exprs.join(", ")
    }

    /// `WHERE` clause for `range`, numbering parameters from 1; appends the values.
    fn where_clause(&self, range: &KeyRange, values: &mut Vec<String>) -> String {
        let mut conds: Vec<String> = self.row_filter.iter().map(|f| format!("({f})")).collect();
        for (bound, op) in [(&range.lower, ">="), (&range.upper, "<")] {
            if let Some(key) = bound {
                let mut rhs = Vec::new();
                for ((ty, collate), v) in self.params.iter().zip(key) {
                    values.push(v.clone());
                    rhs.push(format!("${}::text::{ty}{collate}", values.len()));
                }
                conds.push(format!("({}) {op} ({})", self.exprs.join(", "), rhs.join(", ")));
            }
        }
        if conds.is_empty() { String::new() } else { format!(" WHERE {}", conds.join(" AND ")) }
    }
}

fn as_params(values: &[String]) -> Vec<&(dyn ToSql + Sync)> {
    values.iter().map(|v| v as &(dyn ToSql + Sync)).collect()
}

async fn prepare_session(client: &Client) -> Result<(), Error> {
    client
        .batch_execute(SESSION_SETTINGS)
        .await
        .db_context(|| "setting session formats for hashing".to_owned())
}

/// Row count and ordered hash of `table`, optionally limited to a key range.
///
/// # Errors
/// [`Error::Db`].
pub async fn table_hash(
    client: &Client,
    table: &TableDef,
    range: Option<&KeyRange>,
) -> Result<TableHash, Error> {
    prepare_session(client).await?;
    range_hash(client, table, &KeySql::new(table), range.cloned().unwrap_or_default()).await
}

async fn range_hash(
    client: &Client,
    table: &TableDef,
    key: &KeySql,
    range: KeyRange,
) -> Result<TableHash, Error> {
    let mut values = Vec::new();
    let filter = key.where_clause(&range, &mut values);
    let sql = format!(
        "SELECT count(*), coalesce(md5(string_agg(md5({row}), '' ORDER BY {order})), md5('')) \
         FROM {from}{filter}",
        row = key.row_text,
        order = key.order_by(),
        from = key.from,
    );
    let row = client
        .query_one(&sql, &as_params(&values))
        .await
        .db_context(|| format!("hashing table {}", table.qualified_name()))?;
    Ok(TableHash { rows: row.get(0), md5: row.get(1) })
}

/// Splits `table` into chunks of about `chunk_rows` rows in key order (as seen on this
/// server) and hashes each. The ranges tile the key space: the first is unbounded below,
/// the last unbounded above, so rows another server has outside them are still caught.
///
/// # Errors
/// [`Error::Db`].
pub async fn chunk_hashes(
    client: &Client,
    table: &TableDef,
    chunk_rows: u32,
) -> Result<Vec<ChunkHash>, Error> {
    prepare_session(client).await?;
    let key = KeySql::new(table);
    let chunk = i64::from(chunk_rows.max(1));
    let parts = key.texts.len();
    let sql = format!(
        "SELECT rn, {texts} FROM ( \
           SELECT {aliased}, row_number() OVER (ORDER BY {order}) - 1 AS rn, \
                  count(*) OVER () AS total \
           FROM {from}{filter}) s \
         WHERE rn % $1 = 0 OR rn % $1 = $1 - 1 OR rn = total - 1 ORDER BY rn",
        texts = (0..parts).map(|i| format!("k{i}")).collect::<Vec<_>>().join(", "),
        aliased = key
            .texts
            .iter()
            .enumerate()
            .map(|(i, t)| format!("{t} AS k{i}"))
            .collect::<Vec<_>>()
            .join(", "),
        order = key.order_by(),
        from = key.from,
        filter = key.where_clause(&KeyRange::default(), &mut Vec::new()),
    );
    let rows = client
        .query(&sql, &[&chunk])
        .await
        .db_context(|| format!("computing chunk boundaries of {}", table.qualified_name()))?;
    // (first key, last key) per chunk, in order.
    let mut bounds: Vec<(Key, Key)> = Vec::new();
    for r in &rows {
        let rn: i64 = r.get(0);
        let k: Key = (1..=parts).map(|i| r.get::<_, String>(i)).collect();
        if rn % chunk == 0 {
            bounds.push((k.clone(), k));
        } else if let Some(last) = bounds.last_mut() {
            last.1 = k;
        }
    }
    let ranges: Vec<KeyRange> = (0..bounds.len())
        .map(|i| KeyRange {
            lower: (i > 0).then(|| bounds[i].0.clone()),
            upper: bounds.get(i + 1).map(|b| b.0.clone()),
        })
        .collect();
    // Queries on one client are pipelined.
    let hashes =
        try_join_all(ranges.iter().map(|r| range_hash(client, table, &key, r.clone()))).await?;
    Ok(bounds
        .into_iter()
        .zip(ranges)
        .zip(hashes)
        .map(|(((first_key, last_key), range), hash)| ChunkHash {
            range,
            first_key,
            last_key,
            hash,
        })
        .collect())
}

/// Chunks `table` on the source and hashes the same ranges on the target; returns the
/// ranges that differ (empty when the table is identical). An empty source table is
/// compared as one unbounded range.
///
/// # Errors
/// [`Error::Db`].
pub async fn compare_tables(
    source: &Client,
    target: &Client,
    table: &TableDef,
    chunk_rows: u32,
) -> Result<Vec<ChunkDiff>, Error> {
    let mut chunks = chunk_hashes(source, table, chunk_rows).await?;
    if chunks.is_empty() {
        let hash = table_hash(source, table, None).await?;
        chunks.push(ChunkHash {
            range: KeyRange::default(),
            first_key: Vec::new(),
            last_key: Vec::new(),
            hash,
        });
    }
    prepare_session(target).await?;
    let key = KeySql::new(table);
    let target_hashes =
        try_join_all(chunks.iter().map(|c| range_hash(target, table, &key, c.range.clone())))
            .await?;
    Ok(chunks
        .into_iter()
        .zip(target_hashes)
        .filter(|(c, t)| c.hash != *t)
        .map(|(c, t)| ChunkDiff { range: c.range, source: c.hash, target: t })
        .collect())
}

/// Lists the rows of `range` that differ between source and target (use on a differing
/// chunk from [`compare_tables`]). Sorted by key text.
///
/// # Errors
/// [`Error::Db`].
pub async fn diff_keys(
    source: &Client,
    target: &Client,
    table: &TableDef,
    range: &KeyRange,
) -> Result<Vec<KeyDiff>, Error> {
    let (src, dst) = futures_util::future::try_join(
        row_hashes(source, table, range),
        row_hashes(target, table, range),
    )
    .await?;
    let mut diffs = Vec::new();
    for (key, hash) in &src {
        match dst.get(key) {
            None => diffs.push(KeyDiff { key: key.clone(), kind: DiffKind::MissingOnTarget }),
            Some(h) if h != hash => {
                diffs.push(KeyDiff { key: key.clone(), kind: DiffKind::Differs })
            }
            Some(_) => {}
        }
    }
    for key in dst.keys().filter(|k| !src.contains_key(*k)) {
        diffs.push(KeyDiff { key: key.clone(), kind: DiffKind::ExtraOnTarget });
    }
    diffs.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(diffs)
}

async fn row_hashes(
    client: &Client,
    table: &TableDef,
    range: &KeyRange,
) -> Result<HashMap<Key, String>, Error> {
    prepare_session(client).await?;
    let key = KeySql::new(table);
    let mut values = Vec::new();
    let filter = key.where_clause(range, &mut values);
    let sql =
        format!("SELECT md5({}), {} FROM {}{filter}", key.row_text, key.texts.join(", "), key.from);
    let rows = client
        .query(&sql, &as_params(&values))
        .await
        .db_context(|| format!("reading row hashes of {}", table.qualified_name()))?;
    Ok(rows
        .iter()
        .map(|r| {
            let k: Key = (1..=key.texts.len()).map(|i| r.get::<_, String>(i)).collect();
            (k, r.get::<_, String>(0))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{ColumnDef, ReplicaIdentity};

    fn col(name: &str, ty: &str, collatable: bool) -> ColumnDef {
        ColumnDef {
            name: name.into(),
            type_name: ty.into(),
            type_oid: 0,
            not_null: true,
            default: None,
            has_default: false,
            identity: None,
            generated: None,
            collation: None,
            collatable,
            binary_io: true,
        }
    }

    fn table(pk: &[&str]) -> TableDef {
        TableDef {
            schema: "S".into(),
            name: "t\"x".into(),
            oid: 1,
            is_partitioned: false,
            columns: vec![col("id", "integer", false), col("Name", "text", true)],
            primary_key: pk.iter().map(|s| (*s).to_owned()).collect(),
            replica_identity: ReplicaIdentity::Default,
            identity_columns: Vec::new(),
            estimated_rows: None,
            estimated_bytes: 0,
            pages: 0,
            row_filter: None,
        }
    }

    #[test]
    fn where_clause_uses_typed_collated_parameters() {
        let key = KeySql::new(&table(&["id", "Name"]));
        let mut values = Vec::new();
        let range = KeyRange {
            lower: Some(vec!["1".into(), "a".into()]),
            upper: Some(vec!["5".into(), "b".into()]),
        };
        let w = key.where_clause(&range, &mut values);
        assert_eq!(
            w,
            " WHERE (\"id\", \"Name\" COLLATE \"C\") >= ($1::text::integer, $2::text::text COLLATE \"C\") \
             AND (\"id\", \"Name\" COLLATE \"C\") < ($3::text::integer, $4::text::text COLLATE \"C\")"
        );
        assert_eq!(values, ["1", "a", "5", "b"]);
        assert_eq!(key.from, "ONLY \"S\".\"t\"\"x\"");
        assert_eq!(key.row_text, "ROW(\"id\", \"Name\")::text");
    }

    #[test]
    fn row_filter_is_part_of_every_where_clause() {
        let mut t = table(&["id"]);
        t.row_filter = Some("id > 10".into());
        let key = KeySql::new(&t);
        let mut values = Vec::new();
        assert_eq!(key.where_clause(&KeyRange::default(), &mut values), " WHERE (id > 10)");
        let range = KeyRange { lower: None, upper: Some(vec!["20".into()]) };
        assert_eq!(
            key.where_clause(&range, &mut values),
            " WHERE (id > 10) AND (\"id\") < ($1::text::integer)"
        );
    }

    #[test]
    fn keyless_tables_order_by_row_text() {
        let key = KeySql::new(&table(&[]));
        assert_eq!(key.order_by(), "(ROW(\"id\", \"Name\")::text) COLLATE \"C\"");
        let mut values = Vec::new();
        assert_eq!(key.where_clause(&KeyRange::default(), &mut values), "");
        assert!(values.is_empty());
    }
}
