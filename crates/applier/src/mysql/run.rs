//! Runs of changes of one kind into one table, sent as one statement (updates: one per list of
//! columns they set) with the values inlined: a multi-row `INSERT`, a set-based `UPDATE`
//! joined to the new rows by key, a `DELETE ... WHERE key IN (...)`.
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
use super::{exec, quote, target_err};
use crate::error::{ApplyError, Op};

/// Values in one statement at most.
pub(super) const MAX_BINDS: usize = 65_535;

/// What a run does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunKind {
    /// Inserts of the given columns (indexes into the table's columns).
    Insert(Vec<usize>),
    /// Updates by key; each row holds the key, then the new values of the columns it sets.
    Update,
    /// Deletes by key.
    Delete,
}

/// Changes of one kind into one table, not sent yet.
#[derive(Debug)]
pub struct Run {
    pub table: Arc<MySqlTable>,
    pub kind: RunKind,
    rows: Vec<Vec<Bind>>,
    /// The column lists the update rows set (an unchanged TOAST value leaves its column out,
    /// so rows of one run may differ); one statement goes out per list.
    sets: Vec<Vec<usize>>,
    /// For each update row, its list in `sets`.
    row_set: Vec<usize>,
    /// The key of each keyed row to its index.
    keys: HashMap<String, usize>,
    binds: usize,
    /// The widest row's values.
    width: usize,
    bytes: usize,
}

impl Run {
    pub fn new(table: Arc<MySqlTable>, kind: RunKind) -> Self {
        Run {
            table,
            kind,
            rows: Vec::new(),
            sets: Vec::new(),
            row_set: Vec::new(),
            keys: HashMap::new(),
            binds: 0,
            width: 0,
            bytes: 0,
        }
    }

    /// Whether a row of `kind` with key `key` (`None`: not tracked) can join this run.
    /// Updates of different keys commute, so an update run takes rows of any column list.
    pub fn accepts(&self, kind: &RunKind, key: Option<&str>) -> bool {
        &self.kind == kind && key.is_none_or(|k| !self.keys.contains_key(k))
    }

    /// Folds an update of the row with key `key` (`row`: the key's values, then the new values
    /// of `set`) into the buffered insert or update of that row; gives `row` back when the run
    /// holds no such row or it is an insert that lacks one of `set`'s columns. Folded into an
    /// update of other columns, the row sets both lists: the later value where they overlap.
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
            RunKind::Update => {
                let had = &self.sets[self.row_set[i]];
                if had.as_slice() == set {
                    row
                } else {
                    let mut cols = had.clone();
                    let mut merged = self.rows[i].clone();
                    for (c, b) in set.iter().zip(row.into_iter().skip(key_len)) {
                        match cols.iter().position(|x| x == c) {
                            Some(p) => merged[key_len + p] = b,
                            None => {
                                cols.push(*c);
                                merged.push(b);
                            }
                        }
                    }
                    self.row_set[i] = self.set_index(&cols);
                    merged
                }
            }
            RunKind::Delete => return Err(row),
        };
        let old = std::mem::replace(&mut self.rows[i], new);
        let new_len = self.rows[i].len();
        self.binds = self.binds + new_len - old.len();
        self.width = self.width.max(new_len);
        self.bytes -= old.iter().map(Bind::wire_len).sum::<usize>();
        self.bytes += self.rows[i].iter().map(Bind::wire_len).sum::<usize>();
        Ok(())
    }

    fn set_index(&mut self, set: &[usize]) -> usize {
        match self.sets.iter().position(|s| s.as_slice() == set) {
            Some(j) => j,
            None => {
                self.sets.push(set.to_vec());
                self.sets.len() - 1
            }
        }
    }

    /// Approximate bytes of the buffered values.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether the run is at its size limit.
    pub fn is_full(&self, max_rows: usize, max_bytes: usize) -> bool {
        self.rows.len() >= max_rows
            || self.bytes >= max_bytes
            || self.binds + self.width.max(1) > MAX_BINDS
    }

    /// Adds a row; `key` (`None`: not tracked, for the initial copy) must not be held yet;
    /// `set`: the columns an update row sets.
    pub fn push(&mut self, key: Option<String>, set: Option<&[usize]>, row: Vec<Bind>) {
        self.binds += row.len();
        self.width = self.width.max(row.len());
        self.bytes += row.iter().map(Bind::wire_len).sum::<usize>();
        if let Some(key) = key {
            self.keys.insert(key, self.rows.len());
        }
        if let Some(set) = set {
            let j = self.set_index(set);
            self.row_set.push(j);
        }
        self.rows.push(row);
    }

    fn op(&self) -> Op {
        match self.kind {
            RunKind::Insert(_) => Op::Insert,
            RunKind::Update => Op::Update,
            RunKind::Delete => Op::Delete,
        }
    }

    /// Sends the run, one statement per column list; returns the rows and statements.
    /// Boxed: sqlx's executor futures are `Send` only for one lifetime, which a `Target`'s
    /// futures cannot name.
    pub fn execute<'a>(
        self,
        conn: &'a mut MySqlConnection,
        collation: &'a str,
    ) -> BoxFuture<'a, Result<(usize, usize), ApplyError>> {
        Box::pin(self.execute_inner(conn, collation))
    }

    async fn execute_inner(
        self,
        conn: &mut MySqlConnection,
        collation: &str,
    ) -> Result<(usize, usize), ApplyError> {
        let n = self.rows.len();
        if n == 0 {
            return Ok((0, 0));
        }
        let what = format!("{} on {}", self.op(), self.table.quoted());
        let groups: Vec<(Option<&[usize]>, Vec<usize>)> = if self.kind == RunKind::Update {
            let mut g: Vec<(Option<&[usize]>, Vec<usize>)> =
                self.sets.iter().map(|s| (Some(s.as_slice()), Vec::new())).collect();
            for (r, &j) in self.row_set.iter().enumerate() {
                g[j].1.push(r);
            }
            g.retain(|(_, rows)| !rows.is_empty());
            g
        } else {
            vec![(None, (0..n).collect())]
        };
        let statements = groups.len();
        for (set, group) in groups {
            let rows: Vec<&[Bind]> = group.iter().map(|&r| self.rows[r].as_slice()).collect();
            let sql = sql(&self.table, &self.kind, set.unwrap_or_default(), &rows, collation);
            // The text protocol: one round trip, where a prepared statement of a size that
            // seldom recurs costs three (prepare, execute, close) and the placeholders'
            // metadata.
            exec(conn, &sql).await.map_err(|e| target_err(what.clone(), e))?;
        }
        Ok((n, statements))
    }
}

/// Appends `rows` as `(v, ...), ...`, or with `cast` applied to each value.
fn push_tuples(sql: &mut String, rows: &[&[Bind]], typed: Option<&[Kind]>) {
    for (r, row) in rows.iter().enumerate() {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for (j, b) in row.iter().enumerate() {
            if j > 0 {
                sql.push_str(", ");
            }
            match typed {
                Some(kinds) => push_cast(sql, b, kinds[j]),
                None => b.write_literal(sql),
            }
        }
        sql.push(')');
    }
}

/// The statement applying `rows` of `kind` to `t` (`set`: the columns an update sets), the
/// values inlined as literals.
fn sql(t: &MySqlTable, kind: &RunKind, set: &[usize], rows: &[&[Bind]], collation: &str) -> String {
    let name = |i: &usize| quote(&t.columns[*i].name);
    let bytes: usize = rows.iter().flat_map(|r| r.iter()).map(Bind::wire_len).sum();
    let mut sql = String::with_capacity(256 + bytes + rows.len() * 8);
    match kind {
        RunKind::Insert(cols) => {
            let list: Vec<String> = cols.iter().map(name).collect();
            let _ = write!(sql, "INSERT INTO {} ({}) VALUES ", t.quoted(), list.join(", "));
            push_tuples(&mut sql, rows, None);
        }
        RunKind::Delete => {
            let _ = write!(sql, "DELETE FROM {} WHERE ", t.quoted());
            push_key_in(&mut sql, t, rows);
        }
        RunKind::Update => {
            // Joined to a derived table of the new rows; typed by casts, so keys compare
            // as the column's type (a string compared with a number compares as doubles).
            let _ = write!(sql, "UPDATE {} AS t JOIN (", t.quoted());
            let cols: Vec<usize> = t.key.iter().chain(set).copied().collect();
            for (r, row) in rows.iter().enumerate() {
                sql.push_str(if r == 0 { "SELECT " } else { " UNION ALL SELECT " });
                for (j, (b, &i)) in row.iter().zip(&cols).enumerate() {
                    if j > 0 {
                        sql.push_str(", ");
                    }
                    push_cast(&mut sql, b, t.columns[i].ty.kind);
                    if r == 0 {
                        let _ = write!(sql, " AS c{j}");
                    }
                }
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

/// Appends `(key, ...) IN ((v, ...), ...)`: the rows whose key is one of `keys` (each the key's
/// values in key order), typed as the key columns are.
pub(super) fn push_key_in(sql: &mut String, t: &MySqlTable, keys: &[&[Bind]]) {
    let names: Vec<String> = t.key.iter().map(|&i| quote(&t.columns[i].name)).collect();
    let kinds: Vec<Kind> = t.key.iter().map(|&i| t.columns[i].ty.kind).collect();
    let _ = write!(sql, "({}) IN (", names.join(", "));
    push_tuples(sql, keys, Some(&kinds));
    sql.push(')');
}

/// A text key compared to a derived table's column (of the connection's collation) needs the
/// table's collation.
fn collate(t: &MySqlTable, i: usize, collation: &str) -> String {
    match t.columns[i].ty.kind {
        Kind::Text { .. } => format!(" COLLATE {collation}"),
        _ => String::new(),
    }
}

/// A value typed as the column's values are.
fn push_cast(sql: &mut String, b: &Bind, kind: Kind) {
    let ty = match kind {
        Kind::Bool | Kind::Int => "SIGNED",
        Kind::UInt => "UNSIGNED",
        Kind::Float { .. } => "DOUBLE",
        // The widest DECIMAL: exact for every value a mapped column holds.
        Kind::Decimal { .. } => "DECIMAL(65,30)",
        Kind::Bytes { .. } => "BINARY",
        Kind::Date => "DATE",
        Kind::Time => "TIME(6)",
        Kind::DateTime { .. } => "DATETIME(6)",
        // Untyped, so the column's collation decides comparisons.
        Kind::Text { .. } | Kind::Json | Kind::JsonArray { .. } | Kind::JsonString => {
            return b.write_utf8mb4_literal(sql);
        }
    };
    sql.push_str("CAST(");
    b.write_utf8mb4_literal(sql);
    let _ = write!(sql, " AS {ty})");
}

/// Binds `b` to a prepared statement.
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
