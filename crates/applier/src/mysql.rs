//! [`MySqlTarget`]: a MySQL/MariaDB replica through sqlx.
//!
//! Many source transactions go into one MySQL transaction, opened lazily and committed by
//! [`Target::flush`] together with the mirror's row in `pgmirror_progress` ([`progress`]), so
//! after a crash the target holds exactly the source transactions up to the stored end LSN.
//! A `TRUNCATE` becomes `DELETE FROM`, which (unlike MySQL's `TRUNCATE`, which commits) stays in
//! that transaction.
//!
//! Every value is converted before anything is sent ([`value`]): one MySQL cannot hold exactly
//! (see the mapping in [`types`]) stops the apply with [`ApplyError::Unrepresentable`], and the
//! open MySQL transaction, with every source transaction of the group, is rolled back.
//!
//! Changes go out in runs (`run`), one pending per table across the source transactions of a
//! group: inserts into a table as one multi-row `INSERT`, updates and deletes by key as one
//! set-based statement, each key at most once per run. Runs of different tables go out in any
//! order: `foreign_key_checks = 0` makes the order between tables irrelevant, and nothing is
//! visible before the group's `COMMIT`.

pub mod copy;
pub mod progress;
mod run;
pub mod schema;
pub mod session;
pub mod take;
pub mod types;
pub mod value;
pub mod verify;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use pgoutput_decoder::{Column, Lsn, OldTuple, Relation, Tuple};
use sqlx::MySqlConnection;

use crate::error::ApplyError;
use crate::target::{Change, CommitInfo, Target, TxnInfo, TypeMap};
use run::{Run, RunKind};
use schema::MySqlTable;
use session::ServerInfo;
use value::{Bind, convert, pg_text};

/// Quotes a MySQL identifier: backticks, embedded backticks doubled.
pub fn quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// Runs `sql` (unprepared). Boxed: sqlx's executor futures are `Send` only for one lifetime,
/// which a `Target`'s futures cannot name.
fn exec<'a>(conn: &'a mut MySqlConnection, sql: &'a str) -> BoxFuture<'a, Result<(), sqlx::Error>> {
    Box::pin(async move { sqlx::Executor::execute(conn, sql).await.map(|_| ()) })
}

pub(crate) fn target_err(context: impl Into<String>, source: sqlx::Error) -> ApplyError {
    ApplyError::MySql { context: context.into(), source }
}

/// Bytes of values buffered over all tables' runs before every run is sent.
const MAX_BUFFERED_BYTES: usize = 32 << 20;

/// Settings of a [`MySqlTarget`].
#[derive(Debug, Clone)]
pub struct MySqlTargetConfig {
    /// Key of this mirror's row in `pgmirror_progress`.
    pub mirror_name: String,
    /// Rows per statement at most.
    pub batch_max_rows: usize,
    /// Bytes of values per statement at most (below the server's `max_allowed_packet`).
    pub batch_max_bytes: usize,
}

impl MySqlTargetConfig {
    /// Defaults for a mirror named `mirror_name`.
    pub fn new(mirror_name: impl Into<String>) -> Self {
        MySqlTargetConfig {
            mirror_name: mirror_name.into(),
            batch_max_rows: 1000,
            batch_max_bytes: 4 << 20,
        }
    }
}

/// Counters of a [`MySqlTarget`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MySqlTargetStats {
    /// MySQL transactions committed.
    pub commits: u64,
    /// Row statements sent.
    pub statements: u64,
    /// Rows they carried.
    pub rows: u64,
}

/// A relation as the target sees it: its table and where each of its columns goes.
#[derive(Debug)]
struct RelMap {
    rel: Arc<Relation>,
    table: Arc<MySqlTable>,
    /// For each relation column, its index in the table's columns.
    cols: Vec<usize>,
    /// For each key column of the table (in key order), its index in the relation.
    key: Vec<usize>,
}

/// A MySQL/MariaDB target. See the module documentation.
pub struct MySqlTarget {
    cfg: MySqlTargetConfig,
    conn: MySqlConnection,
    server: ServerInfo,
    tables: HashMap<(String, String), Arc<MySqlTable>>,
    rels: HashMap<u32, Arc<RelMap>>,
    /// Pending runs, at most one per table, oldest first.
    runs: Vec<Run>,
    in_txn: bool,
    source: Option<TxnInfo>,
    last_commit: Option<CommitInfo>,
    durable: Option<Lsn>,
    poisoned: bool,
    stats: MySqlTargetStats,
}

impl fmt::Debug for MySqlTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MySqlTarget")
            .field("cfg", &self.cfg)
            .field("server", &self.server)
            .field("tables", &self.tables.len())
            .field("in_txn", &self.in_txn)
            .field("durable", &self.durable)
            .finish_non_exhaustive()
    }
}

impl MySqlTarget {
    /// A target writing `tables` through `conn` (set up by [`session::connect`]).
    pub fn new(
        conn: MySqlConnection,
        server: ServerInfo,
        tables: Vec<MySqlTable>,
        cfg: MySqlTargetConfig,
    ) -> Self {
        let tables =
            tables.into_iter().map(|t| ((t.schema.clone(), t.name.clone()), Arc::new(t))).collect();
        MySqlTarget {
            cfg,
            conn,
            server,
            tables,
            rels: HashMap::new(),
            runs: Vec::new(),
            in_txn: false,
            source: None,
            last_commit: None,
            durable: None,
            poisoned: false,
            stats: MySqlTargetStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> &MySqlTargetStats {
        &self.stats
    }

    fn rel_map(&mut self, rel: &Arc<Relation>) -> Result<Arc<RelMap>, ApplyError> {
        if let Some(m) = self.rels.get(&rel.rel_id)
            && Arc::ptr_eq(&m.rel, rel)
        {
            return Ok(m.clone());
        }
        let schema = if rel.namespace.is_empty() { "pg_catalog" } else { &rel.namespace };
        let Some(table) = self.tables.get(&(schema.to_owned(), rel.name.clone())).cloned() else {
            return Err(ApplyError::SchemaChanged {
                schema: schema.to_owned(),
                table: rel.name.clone(),
                change: crate::SchemaChange::TableMissing,
            });
        };
        let mut cols = Vec::with_capacity(rel.columns.len());
        let mut added = Vec::new();
        for c in &rel.columns {
            match table.column(&c.name) {
                Some(i) => cols.push(i),
                None => added.push(c.name.clone()),
            }
        }
        if !added.is_empty() {
            return Err(ApplyError::SchemaChanged {
                schema: schema.to_owned(),
                table: rel.name.clone(),
                change: crate::SchemaChange::ColumnsAdded(added),
            });
        }
        let mut key = Vec::with_capacity(table.key.len());
        for &k in &table.key {
            let Some(pos) = cols.iter().position(|&i| i == k) else {
                return Err(ApplyError::Schema {
                    table: table.source_display(),
                    detail: format!("key column {:?} is not published", table.columns[k].name),
                });
            };
            key.push(pos);
        }
        let m = Arc::new(RelMap { rel: rel.clone(), table, cols, key });
        self.rels.insert(rel.rel_id, m.clone());
        Ok(m)
    }

    async fn begin_if_needed(&mut self) -> Result<(), ApplyError> {
        if !self.in_txn {
            exec(&mut self.conn, "BEGIN").await.map_err(|e| target_err("BEGIN", e))?;
            self.in_txn = true;
        }
        Ok(())
    }

    fn run_index(&self, table: &Arc<MySqlTable>) -> Option<usize> {
        self.runs.iter().position(|r| Arc::ptr_eq(&r.table, table))
    }

    /// Sends the pending run at index `i`.
    async fn send_run(&mut self, i: usize) -> Result<(), ApplyError> {
        let run = self.runs.remove(i);
        self.begin_if_needed().await?;
        let (rows, statements) = run.execute(&mut self.conn, self.server.collation()).await?;
        self.stats.statements += u64::try_from(statements).unwrap_or(u64::MAX);
        self.stats.rows += u64::try_from(rows).unwrap_or(u64::MAX);
        Ok(())
    }

    /// Sends `table`'s pending run, if any.
    async fn end_table_run(&mut self, table: &Arc<MySqlTable>) -> Result<(), ApplyError> {
        match self.run_index(table) {
            Some(i) => self.send_run(i).await,
            None => Ok(()),
        }
    }

    /// Sends every pending run, oldest first.
    async fn end_runs(&mut self) -> Result<(), ApplyError> {
        while !self.runs.is_empty() {
            self.send_run(0).await?;
        }
        Ok(())
    }

    /// Adds a row to `table`'s run: folded into the buffered row of its key when it is an
    /// update that can be, else appended, after sending the run when the row cannot join it.
    async fn add(
        &mut self,
        table: &Arc<MySqlTable>,
        kind: RunKind,
        key: Option<String>,
        set: Option<Vec<usize>>,
        mut row: Vec<Bind>,
    ) -> Result<(), ApplyError> {
        if let Some(i) = self.run_index(table) {
            if let (Some(set), Some(k)) = (&set, &key) {
                match self.runs[i].fold(k, set, row) {
                    Ok(()) => return self.check_full(i).await,
                    Err(r) => row = r,
                }
            }
            if !self.runs[i].accepts(&kind, key.as_deref()) {
                self.send_run(i).await?;
            }
        }
        let i = match self.run_index(table) {
            Some(i) => i,
            None => {
                self.runs.push(Run::new(table.clone(), kind));
                self.runs.len() - 1
            }
        };
        self.runs[i].push(key, set.as_deref(), row);
        self.check_full(i).await
    }

    /// Sends run `i` when it is full, and every run when they buffer too much together.
    async fn check_full(&mut self, i: usize) -> Result<(), ApplyError> {
        if self.runs[i].is_full(self.cfg.batch_max_rows, self.cfg.batch_max_bytes) {
            self.send_run(i).await?;
        }
        if self.runs.iter().map(Run::bytes).sum::<usize>() > MAX_BUFFERED_BYTES {
            self.end_runs().await?;
        }
        Ok(())
    }

    /// Sends one update statement of its own (a key-changing update).
    async fn send_alone(
        &mut self,
        table: &Arc<MySqlTable>,
        set: &[usize],
        row: Vec<Bind>,
    ) -> Result<(), ApplyError> {
        self.end_table_run(table).await?;
        self.begin_if_needed().await?;
        let mut run = Run::new(table.clone(), RunKind::Update);
        run.push(None, Some(set), row);
        run.execute(&mut self.conn, self.server.collation()).await?;
        self.stats.statements += 1;
        self.stats.rows += 1;
        Ok(())
    }

    async fn apply(&mut self, change: Change) -> Result<(), ApplyError> {
        match change {
            Change::Insert { rel, new } => {
                let m = self.rel_map(&rel)?;
                let (cols, row) = values(&m, &new, None)?;
                let key = key_texts(&m, &new)?;
                self.add(&m.table, RunKind::Insert(cols), Some(key), None, row).await
            }
            Change::Update { rel, old, new } => {
                let m = self.rel_map(&rel)?;
                let new_key = key_texts(&m, &new)?;
                let old_key = match &old {
                    Some(o) => key_texts(&m, o.tuple())?,
                    None => new_key.clone(),
                };
                if old_key != new_key {
                    // The key changed: one statement, by the old key, setting every sent column.
                    let (set, mut binds) = values(&m, &new, None)?;
                    let old_tuple = old.as_ref().map(OldTuple::tuple).unwrap_or(&new);
                    let mut row = key_binds(&m, old_tuple)?;
                    row.append(&mut binds);
                    return self.send_alone(&m.table, &set, row).await;
                }
                let (set, binds) = values(&m, &new, Some(&m.table.key))?;
                let mut row = key_binds(&m, &new)?;
                row.extend(binds);
                if set.is_empty() {
                    return Ok(());
                }
                self.add(&m.table, RunKind::Update, Some(new_key), Some(set), row).await
            }
            Change::Delete { rel, old } => {
                let m = self.rel_map(&rel)?;
                let key = key_texts(&m, old.tuple())?;
                let row = key_binds(&m, old.tuple())?;
                self.add(&m.table, RunKind::Delete, Some(key), None, row).await
            }
            Change::Truncate { rels, .. } => {
                self.end_runs().await?;
                self.begin_if_needed().await?;
                for rel in &rels {
                    let m = self.rel_map(rel)?;
                    let sql = format!("DELETE FROM {}", m.table.quoted());
                    exec(&mut self.conn, &sql)
                        .await
                        .map_err(|e| target_err(format!("truncate of {}", m.table.quoted()), e))?;
                    self.stats.statements += 1;
                }
                Ok(())
            }
            Change::Message(_) => Ok(()),
        }
    }
}

/// The text forms of a row's key values, joined (to spot a key twice in a run).
fn key_texts(m: &RelMap, t: &Tuple) -> Result<String, ApplyError> {
    let mut out = String::new();
    for &pos in &m.key {
        let c = &m.rel.columns[pos];
        let v = t.get(pos).unwrap_or(Column::Null);
        let s = pg_text(c.type_oid, v).map_err(|reason| unrepresentable(m, t, pos, "?", reason))?;
        match s {
            Some(s) => {
                out.push_str(&s);
                out.push('\0');
            }
            None => out.push_str("\u{1}NULL\0"),
        }
    }
    Ok(out)
}

/// The key's values of row `t`, converted.
fn key_binds(m: &RelMap, t: &Tuple) -> Result<Vec<Bind>, ApplyError> {
    m.key
        .iter()
        .map(|&pos| bind_of(m, t, pos))
        .collect::<Result<Vec<_>, _>>()
        .map(|v| v.into_iter().map(|b| b.unwrap_or(Bind::Null)).collect())
}

/// The value of relation column `pos` in `t`, converted; `None` for an unchanged TOAST value.
fn bind_of(m: &RelMap, t: &Tuple, pos: usize) -> Result<Option<Bind>, ApplyError> {
    let c = &m.rel.columns[pos];
    let v = t.get(pos).unwrap_or(Column::Null);
    if v.is_unchanged_toast() {
        return Ok(None);
    }
    let text = pg_text(c.type_oid, v).map_err(|r| unrepresentable(m, t, pos, "?", r))?;
    let Some(text) = text else { return Ok(Some(Bind::Null)) };
    let kind = m.table.columns[m.cols[pos]].ty.kind;
    convert(kind, &text).map(Some).map_err(|r| unrepresentable(m, t, pos, &text, r))
}

/// The sent columns of `t` (table indexes) and their values, unchanged TOAST values left out
/// (the target keeps what it has), and the relation columns `skip` names too.
fn values(
    m: &RelMap,
    t: &Tuple,
    skip: Option<&[usize]>,
) -> Result<(Vec<usize>, Vec<Bind>), ApplyError> {
    let mut cols = Vec::with_capacity(m.cols.len());
    let mut binds = Vec::with_capacity(m.cols.len());
    for (pos, &col) in m.cols.iter().enumerate() {
        if skip.is_some_and(|s| s.contains(&col)) {
            continue;
        }
        if let Some(b) = bind_of(m, t, pos)? {
            cols.push(col);
            binds.push(b);
        }
    }
    Ok((cols, binds))
}

/// The error for a value of column `pos` that MySQL cannot hold: table, key, column, value.
fn unrepresentable(m: &RelMap, t: &Tuple, pos: usize, value: &str, reason: String) -> ApplyError {
    let value_len = value.len();
    let mut key = Vec::new();
    for &k in &m.key {
        let c = &m.rel.columns[k];
        let v = t.get(k).unwrap_or(Column::Null);
        let s = pg_text(c.type_oid, v).ok().flatten().map(|s| s.into_owned());
        key.push(format!("{}={}", c.name, s.as_deref().unwrap_or("NULL")));
    }
    let mut value: String = value.chars().take(80).collect();
    if value.len() < value_len {
        value.push('…');
    }
    ApplyError::Unrepresentable {
        table: m.table.source_display(),
        key: key.join(", "),
        column: m.rel.columns[pos].name.clone(),
        value,
        reason,
    }
}

impl MySqlTarget {
    fn check_poisoned(&self) -> Result<(), ApplyError> {
        if self.poisoned { Err(ApplyError::Poisoned) } else { Ok(()) }
    }

    fn poison_on_err<T>(&mut self, r: Result<T, ApplyError>) -> Result<T, ApplyError> {
        if r.is_err() {
            self.poisoned = true;
        }
        r
    }
}

impl Target for MySqlTarget {
    async fn load_progress(&mut self) -> Result<Option<Lsn>, ApplyError> {
        let load: BoxFuture<'_, Result<Option<progress::MirrorRow>, ApplyError>> =
            Box::pin(progress::load(&mut self.conn, &self.cfg.mirror_name));
        let row = load.await?;
        self.durable = row.and_then(|r| r.lsn);
        Ok(self.durable)
    }

    async fn begin(&mut self, txn: &TxnInfo) -> Result<(), ApplyError> {
        self.check_poisoned()?;
        self.source = Some(txn.clone());
        Ok(())
    }

    async fn relation(&mut self, rel: &Arc<Relation>, _types: &TypeMap) -> Result<(), ApplyError> {
        self.check_poisoned()?;
        let r = self.rel_map(rel).map(|_| ());
        self.poison_on_err(r)
    }

    async fn change(&mut self, change: Change) -> Result<(), ApplyError> {
        self.check_poisoned()?;
        let r = self.apply(change).await;
        self.poison_on_err(r)
    }

    async fn commit(&mut self, commit: &CommitInfo) -> Result<(), ApplyError> {
        self.check_poisoned()?;
        self.source = None;
        self.last_commit = Some(*commit);
        Ok(())
    }

    async fn flush(&mut self) -> Result<Option<Lsn>, ApplyError> {
        self.check_poisoned()?;
        let Some(last) = self.last_commit else { return Ok(self.durable) };
        if self.durable >= Some(last.end_lsn) {
            return Ok(self.durable);
        }
        let r = async {
            self.end_runs().await?;
            self.begin_if_needed().await?;
            let store: BoxFuture<'_, Result<(), ApplyError>> =
                Box::pin(progress::store(&mut self.conn, &self.cfg.mirror_name, last.end_lsn));
            store.await?;
            exec(&mut self.conn, "COMMIT").await.map_err(|e| target_err("COMMIT", e))?;
            Ok(())
        }
        .await;
        self.poison_on_err(r)?;
        self.in_txn = false;
        self.stats.commits += 1;
        self.durable = Some(last.end_lsn);
        Ok(self.durable)
    }
}
