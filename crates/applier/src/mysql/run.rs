//! Runs of changes of one kind into one table, sent as one statement: a multi-row `INSERT`, a
//! set-based `UPDATE` joined to the new rows by key, a `DELETE ... WHERE key IN (...)`.
//!
//! A run holds each key at most once. The target keeps one pending run per table; a change that
//! cannot join its table's run (another kind, or a key the run holds) sends that run first, so
//! each table gets exactly the source's sequence of row images. An update of a row whose insert
//! or update (with the same columns) is pending is folded into it instead: the buffered row
//! becomes the row the source had after both.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use sqlx::mysql::MySqlArguments;
use sqlx::query::Query;
use sqlx::{MySql, MySqlConnection};

use super::schema::MySqlTable;
use super::types::Kind;
use super::value::Bind;
use super::{quote, target_err};
use crate::error::{ApplyError, Op};

/// Placeholders in one statement at most (a u16 field of the protocol).
const MAX_BINDS: usize = 65_535;

/// What a run does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunKind {
    /// Inserts of the given columns (indexes into the table's columns).
    Insert(Vec<usize>),
    /// Updates by key (rows hold the key, then these columns' new values).
    Update(Vec<usize>),
    /// Deletes by key.
    Delete,
}

/// Changes of one kind into one table, not sent yet.
#[derive(Debug)]
pub struct Run {
    pub table: Arc<MySqlTable>,
    pub kind: RunKind,
    rows: Vec<Vec<Bind>>,
    /// The key of each keyed row to its index.
    keys: HashMap<String, usize>,
    binds: usize,
    bytes: usize,
}

impl Run {
    pub fn new(table: Arc<MySqlTable>, kind: RunKind) -> Self {
        Run { table, kind, rows: Vec::new(), keys: HashMap::new(), binds: 0, bytes: 0 }
    }

    /// Whether a row of `kind` with key `key` (`None`: not tracked) can join this run.
    pub fn accepts(&self, kind: &RunKind, key: Option<&str>) -> bool {
        &self.kind == kind && key.is_none_or(|k| !self.keys.contains_key(k))
    }

    /// Folds an update of the row with key `key` (`row`: the key's values, then the new values
    /// of `set`) into the buffered insert or update of that row; false when the run holds no
    /// such row or the row lacks one of `set`'s columns (an insert) or has other columns (an
    /// update).
    pub fn fold(&mut self, key: &str, set: &[usize], row: Vec<Bind>) -> Result<(), Vec<Bind>> {
        let Some(&i) = self.keys.get(key) else { return Err(row) };
        let key_len = self.table.key.len();
        let new: Vec<Bind> = match &self.kind {
            RunKind::Insert(cols) => {
                let Some(pos) = set
                    .iter()
                    .map(|c| cols.iter().position(|x| x == c))
                    .collect::<Option<Vec<_>>>()
                else {
                    return Err(row);
                };
                let mut merged = self.rows[i].clone();
                for (p, b) in pos.into_iter().zip(row.into_iter().skip(key_len)) {
                    merged[p] = b;
                }
                merged
            }
            RunKind::Update(cols) if cols.as_slice() == set => row,
            _ => return Err(row),
        };
        let old = std::mem::replace(&mut self.rows[i], new);
        self.bytes -= old.iter().map(Bind::wire_len).sum::<usize>();
        self.bytes += self.rows[i].iter().map(Bind::wire_len).sum::<usize>();
        Ok(())
    }

    /// Approximate bytes of the buffered values.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether the run is at its size limit.
    pub fn is_full(&self, max_rows: usize, max_bytes: usize) -> bool {
        let width = self.rows.first().map_or(1, Vec::len).max(1);
        self.rows.len() >= max_rows || self.bytes >= max_bytes || self.binds + width > MAX_BINDS
    }

    /// Adds a row; `key` (`None`: not tracked, for the initial copy) must not be held yet.
    pub fn push(&mut self, key: Option<String>, row: Vec<Bind>) {
        self.binds += row.len();
        self.bytes += row.iter().map(Bind::wire_len).sum::<usize>();
        if let Some(key) = key {
            self.keys.insert(key, self.rows.len());
        }
        self.rows.push(row);
    }

    fn op(&self) -> Op {
        match self.kind {
            RunKind::Insert(_) => Op::Insert,
            RunKind::Update(_) => Op::Update,
            RunKind::Delete => Op::Delete,
        }
    }

    /// Sends the run as one statement; returns the rows it holds. Boxed: sqlx's executor
    /// futures are `Send` only for one lifetime, which a `Target`'s futures cannot name.
    pub fn execute<'a>(
        self,
        conn: &'a mut MySqlConnection,
        collation: &'a str,
    ) -> BoxFuture<'a, Result<usize, ApplyError>> {
        Box::pin(self.execute_inner(conn, collation))
    }

    async fn execute_inner(
        self,
        conn: &mut MySqlConnection,
        collation: &str,
    ) -> Result<usize, ApplyError> {
        let n = self.rows.len();
        if n == 0 {
            return Ok(0);
        }
        let sql = self.sql(collation);
        let what = format!("{} on {}", self.op(), self.table.quoted());
        let mut q = sqlx::query(&sql);
        for row in self.rows {
            for b in row {
                q = bind(q, b);
            }
        }
        // One-row statements recur; other sizes would crowd the statement cache out.
        q.persistent(n == 1).execute(conn).await.map_err(|e| target_err(what, e))?;
        Ok(n)
    }

    fn sql(&self, collation: &str) -> String {
        let t = &self.table;
        let n = self.rows.len();
        let name = |i: &usize| quote(&t.columns[*i].name);
        let mut sql = String::with_capacity(64 + n * 16);
        match &self.kind {
            RunKind::Insert(cols) => {
                let list: Vec<String> = cols.iter().map(name).collect();
                let _ = write!(sql, "INSERT INTO {} ({}) VALUES ", t.quoted(), list.join(", "));
                let tuple = format!("({})", vec!["?"; cols.len()].join(", "));
                push_repeated(&mut sql, &tuple, n, ", ");
            }
            RunKind::Delete => {
                let _ = write!(sql, "DELETE FROM {} WHERE ", t.quoted());
                let keys: Vec<String> = t.key.iter().map(name).collect();
                let casts: Vec<&str> = t.key.iter().map(|&i| cast(t.columns[i].ty.kind)).collect();
                if keys.len() == 1 {
                    let _ = write!(sql, "{} IN (", keys[0]);
                    push_repeated(&mut sql, casts[0], n, ", ");
                } else {
                    let _ = write!(sql, "({}) IN (", keys.join(", "));
                    push_repeated(&mut sql, &format!("({})", casts.join(", ")), n, ", ");
                }
                sql.push(')');
            }
            RunKind::Update(set) => {
                // Joined to a derived table of the new rows; typed by casts, so keys compare
                // as the column's type (a string compared with a number compares as doubles).
                let _ = write!(sql, "UPDATE {} AS t JOIN (", t.quoted());
                let mut first = String::from("SELECT ");
                let mut rest = String::from("SELECT ");
                for (j, &i) in t.key.iter().chain(set).enumerate() {
                    let sep = if j > 0 { ", " } else { "" };
                    let c = cast(t.columns[i].ty.kind);
                    let _ = write!(first, "{sep}{c} AS c{j}");
                    let _ = write!(rest, "{sep}{c}");
                }
                sql.push_str(&first);
                for _ in 1..n {
                    sql.push_str(" UNION ALL ");
                    sql.push_str(&rest);
                }
                sql.push_str(") AS v ON ");
                for (j, &i) in t.key.iter().enumerate() {
                    let sep = if j > 0 { " AND " } else { "" };
                    let _ = write!(sql, "{sep}t.{} = v.c{j}{}", name(&i), collate(t, i, collation));
                }
                sql.push_str(" SET ");
                for (j, i) in set.iter().enumerate() {
                    let sep = if j > 0 { ", " } else { "" };
                    let _ = write!(sql, "{sep}t.{} = v.c{}", name(i), j + t.key.len());
                }
            }
        }
        sql
    }
}

/// A text key compared to a derived table's column (of the connection's collation) needs the
/// table's collation.
fn collate(t: &MySqlTable, i: usize, collation: &str) -> String {
    match t.columns[i].ty.kind {
        Kind::Text { .. } => format!(" COLLATE {collation}"),
        _ => String::new(),
    }
}

fn push_repeated(sql: &mut String, item: &str, n: usize, sep: &str) {
    for i in 0..n {
        if i > 0 {
            sql.push_str(sep);
        }
        sql.push_str(item);
    }
}

/// A placeholder typed as the column's values are.
fn cast(kind: Kind) -> &'static str {
    match kind {
        Kind::Bool | Kind::Int => "CAST(? AS SIGNED)",
        Kind::UInt => "CAST(? AS UNSIGNED)",
        Kind::Float { .. } => "CAST(? AS DOUBLE)",
        // The widest DECIMAL: exact for every value a mapped column holds.
        Kind::Decimal { .. } => "CAST(? AS DECIMAL(65,30))",
        Kind::Bytes { .. } => "CAST(? AS BINARY)",
        Kind::Date => "CAST(? AS DATE)",
        Kind::Time => "CAST(? AS TIME(6))",
        Kind::DateTime { .. } => "CAST(? AS DATETIME(6))",
        // Untyped, so the column's collation decides comparisons.
        Kind::Text { .. } | Kind::Json | Kind::JsonArray { .. } | Kind::JsonString => "?",
    }
}

pub fn bind(q: Query<'_, MySql, MySqlArguments>, b: Bind) -> Query<'_, MySql, MySqlArguments> {
    match b {
        Bind::Null => q.bind(None::<i64>),
        Bind::Int(v) => q.bind(v),
        Bind::UInt(v) => q.bind(v),
        Bind::Float32(v) => q.bind(v),
        Bind::Float64(v) => q.bind(v),
        Bind::Text(v) => q.bind(v),
        Bind::Bytes(v) => q.bind(v),
    }
}
