//! Updates: by key, folded into the table's buffered insert or update of the same row, or
//! batched into one set-based statement over arrays per shape; for `REPLICA IDENTITY FULL`,
//! one row at a time. Unchanged TOAST values are left out of `SET` lists.

use std::sync::Arc;

use futures_util::TryStreamExt;
use pgoutput_decoder::{Column, Lsn, OldTuple, Relation, Tuple};
use tokio_postgres::Statement;

use crate::error::{ApplyError, Op};
use crate::target::CommitInfo;

use super::PostgresTarget;
use super::identity::{
    RowKey, TEXT_OID, binary_flags, column_binary, full_match, key_columns, key_picks,
    matched_values, picks_of, value_binary,
};
use super::insert::fold_into_insert;
use super::runs::{FullShape, Run, RunKind, tuple_bytes};
use super::table::{Match, StmtKey, TableInfo, UniqueHazard};
use super::value::{self, Param, ValueFormat};

/// One buffered update: the old key, the new row, the columns it sets.
pub(super) struct UpdateRow {
    pub(super) key: Tuple,
    pub(super) new: Tuple,
    pub(super) set: Box<[bool]>,
}

/// A buffered update with a later update of the same row folded in.
fn fold_into_update(row: &mut UpdateRow, new: &Tuple, set: &[bool]) {
    row.new = Tuple::from_columns(
        row.new.iter().zip(new).zip(set).map(|((old, new), &s)| if s { new } else { old }),
    );
    for (was, &s) in row.set.iter_mut().zip(set) {
        *was |= s;
    }
}

/// Whether an update of a buffered row may fold into it without changing where unique values
/// move: it keeps every value the table's other unique indexes check (see [`UniqueHazard`]).
/// Folding moves the update earlier, past other rows' updates; one that leaves those values
/// alone commutes with them.
fn keeps_unique_values(hazard: &UniqueHazard, buffered: &Tuple, new: &Tuple) -> bool {
    match hazard {
        UniqueHazard::None => true,
        UniqueHazard::RowByRow => false,
        UniqueHazard::Columns(cols) => cols.iter().all(|&c| match (buffered.get(c), new.get(c)) {
            (_, Some(Column::UnchangedToast)) => true,
            (Some(a), Some(b)) => a == b,
            _ => false,
        }),
    }
}

fn combined(a: &[bool], b: &[bool]) -> Box<[bool]> {
    a.iter().chain(b).copied().collect()
}

/// The key values of a new row (so a later change by the new key is not merged into a run
/// where the old key is still being updated).
fn new_key_bytes(t: &TableInfo, new: &Tuple) -> RowKey {
    RowKey::from_values(key_columns(&t.key, new).flatten().filter_map(Column::bytes))
}

impl PostgresTarget {
    pub(super) async fn update(
        &mut self,
        rel: Arc<Relation>,
        old: Option<OldTuple>,
        new: Tuple,
    ) -> Result<(), ApplyError> {
        self.table(&rel).await?;
        let t = &self.catalog.tables[&rel.rel_id];
        if new.len() != t.cols.len() {
            return Err(ApplyError::Schema {
                table: t.name.to_string(),
                detail: "update row does not match the relation".into(),
            });
        }
        let set: Box<[bool]> = new
            .iter()
            .zip(&t.cols)
            .map(|(v, c)| !v.is_unchanged_toast() && !c.identity_always)
            .collect();
        if t.full_identity() {
            let Some(OldTuple::Full(old)) = old else {
                return Err(ApplyError::MissingIdentity {
                    table: t.name.to_string(),
                    op: Op::Update,
                    detail: "replica identity full without the old row".into(),
                });
            };
            // Boxed: inline, its state would grow every update's future.
            return Box::pin(self.update_full_row(rel, old, new, set)).await;
        }
        let key = Self::key_values(t, Op::Update, old.as_ref().map(OldTuple::tuple), Some(&new))?;
        if !set.iter().any(|&s| s) {
            return Ok(()); // nothing the target can change
        }
        // Without an old key the key came from the new row: it did not change.
        let old_key_sent = old.is_some();
        self.update_by_key(rel, key, old_key_sent, new, set).await
    }

    /// Updates by key: folds into the table's buffered insert or update of the same row,
    /// joins (or starts) the table's update run, or goes alone. `key` is the old key, taken
    /// from the new row when no old key was sent (`old_key_sent` false).
    async fn update_by_key(
        &mut self,
        rel: Arc<Relation>,
        key: Tuple,
        old_key_sent: bool,
        new: Tuple,
        set: Box<[bool]>,
    ) -> Result<(), ApplyError> {
        let rel_id = rel.rel_id;
        let t = &self.catalog.tables[&rel_id];
        let key_bytes = RowKey::of(&key);
        // The key the row moves to, if it moves.
        let moved_to = old_key_sent.then(|| new_key_bytes(t, &new)).filter(|k| *k != key_bytes);
        let same_key = moved_to.is_none();
        // Array values cannot travel in `unnest` arrays of their own, only inside rows of the
        // table's type, which carry the new key only.
        let sets_arrays = t.cols.iter().zip(&set).any(|(c, &s)| c.is_array && s);
        let batchable = !t.key.iter().any(|&k| t.cols[k].is_array)
            && (!sets_arrays || (same_key && t.row_type.is_some()));
        let key_tuple = key;
        self.leave_others(rel_id).await?;
        if !batchable {
            self.end_table_run(rel_id).await?;
            return self.update_row(rel_id, self.commit_lsn(), &key_tuple, &new, &set, None).await;
        }
        let bytes = tuple_bytes(&new) + tuple_bytes(&key_tuple);
        if let Some(i) = self.run_index(rel_id)
            && same_key
            && Arc::ptr_eq(&self.runs[i].rel, &rel)
        {
            match &mut self.runs[i].kind {
                RunKind::Insert { format, rows, keys, copy: None } => {
                    if let Some(&j) = keys.get(&key_bytes) {
                        let merged = fold_into_insert(&rows[j], &new);
                        let fits = ValueFormat::of_row(&merged)
                            .is_some_and(|f| f.is_none() || format.is_none() || f == *format);
                        if fits {
                            rows[j] = merged;
                            return self.buffered_more(i, bytes).await;
                        }
                    }
                }
                RunKind::Update { rows, keys } => {
                    if let Some(Some(j)) = keys.get(&key_bytes)
                        && keeps_unique_values(
                            &self.catalog.tables[&rel_id].unique_hazard,
                            &rows[*j].new,
                            &new,
                        )
                    {
                        fold_into_update(&mut rows[*j], &new, &set);
                        return self.buffered_more(i, bytes).await;
                    }
                }
                _ => {}
            }
        }
        let fits = self.run_index(rel_id).is_some_and(|i| match &self.runs[i] {
            Run { rel: r, kind: RunKind::Update { rows, keys }, .. } => {
                Arc::ptr_eq(r, &rel)
                    && rows.len() < self.cfg.batch_max_rows
                    && !keys.contains_key(&key_bytes)
                    && moved_to.as_ref().is_none_or(|k| !keys.contains_key(k))
            }
            _ => false,
        });
        let i = match self.run_index(rel_id) {
            Some(i) if fits => i,
            _ => {
                let keys = std::mem::take(&mut self.spare_update_keys);
                let kind = RunKind::Update { rows: Vec::new(), keys };
                self.start_run(&rel, kind).await?
            }
        };
        let RunKind::Update { rows, keys } = &mut self.runs[i].kind else { unreachable!() };
        match moved_to {
            None => {
                keys.insert(key_bytes, Some(rows.len()));
            }
            Some(new_key) => {
                keys.insert(key_bytes, None);
                keys.insert(new_key, None);
            }
        }
        rows.push(UpdateRow { key: key_tuple, new, set });
        self.buffered_more(i, bytes).await
    }

    /// An update matching the whole old row: into the table's run of such updates of the same
    /// shape, or on its own (see [`Self::full_update_batchable`]).
    async fn update_full_row(
        &mut self,
        rel: Arc<Relation>,
        old: Tuple,
        new: Tuple,
        set: Box<[bool]>,
    ) -> Result<(), ApplyError> {
        let rel_id = rel.rel_id;
        self.leave_others(rel_id).await?;
        let matched = full_match(&old);
        if !self.full_update_batchable(rel_id, &matched, &set) {
            self.end_table_run(rel_id).await?;
            return self.full_identity_row(rel_id, Op::Update, Some((&new, &set)), &old).await;
        }
        let binary = value_binary(old.iter());
        // NULLs travel in either kind of array; counted as text.
        let set_binary: Box<[bool]> = new
            .iter()
            .zip(&set)
            .filter(|(_, s)| **s)
            .map(|(v, _)| matches!(v, Column::Binary(_)))
            .collect();
        let old_key = RowKey::of(&old);
        // The row as the update leaves it: an unchanged TOAST value is the old row's.
        let mut new_key = RowKey::default();
        for (n, o) in new.iter().zip(old.iter()) {
            if let Some(v) = if n.is_unchanged_toast() { o } else { n }.bytes() {
                new_key.push(v);
            }
        }
        let fits = self.run_index(rel_id).is_some_and(|i| match &self.runs[i] {
            Run {
                rel: r,
                kind:
                    RunKind::FullUpdate {
                        matched: m,
                        binary: b,
                        set: st,
                        set_binary: sb,
                        rows,
                        olds,
                        news,
                    },
                ..
            } => {
                Arc::ptr_eq(r, &rel)
                    && (m, b, st, sb) == (&matched, &binary, &set, &set_binary)
                    && rows.len() < self.cfg.batch_max_rows
                    && !olds.contains(&old_key)
                    && !news.contains(&old_key)
            }
            _ => false,
        });
        let i = match self.run_index(rel_id) {
            Some(i) if fits => i,
            _ => {
                let kind = RunKind::FullUpdate {
                    matched,
                    binary,
                    set,
                    set_binary,
                    rows: Vec::new(),
                    olds: Default::default(),
                    news: Default::default(),
                };
                self.start_run(&rel, kind).await?
            }
        };
        let bytes = tuple_bytes(&old) + tuple_bytes(&new);
        let RunKind::FullUpdate { rows, olds, news, .. } = &mut self.runs[i].kind else {
            unreachable!()
        };
        olds.insert(old_key);
        news.insert(new_key);
        rows.push((old, new));
        self.buffered_more(i, bytes).await
    }

    /// Whether a whole-row update of this shape can join a set-based statement: it sets
    /// something, no array travels in `unnest`, and no unique index could see the run's rows
    /// change in another order than the source's.
    fn full_update_batchable(&self, rel_id: u32, matched: &[Match], set: &[bool]) -> bool {
        let t = &self.catalog.tables[&rel_id];
        t.unique_hazard == UniqueHazard::None
            && set.iter().any(|&s| s)
            && t.cols
                .iter()
                .zip(matched)
                .zip(set)
                .all(|((c, m), &s)| !c.is_array || (*m != Match::Value && !s))
    }

    pub(super) async fn flush_full_update_run(
        &mut self,
        rel_id: u32,
        commit_lsn: Lsn,
        rows: Vec<(Tuple, Tuple)>,
        shape: FullShape,
    ) -> Result<(), ApplyError> {
        if rows.len() < self.cfg.batch_min_rows {
            for (old, new) in &rows {
                self.full_identity_row(rel_id, Op::Update, Some((new, &shape.set)), old).await?;
            }
            return Ok(());
        }
        let FullShape { matched, binary, set, set_binary } = shape;
        let key = StmtKey::FullBatchUpdate {
            matched: matched.clone(),
            binary: binary.clone(),
            set: set.clone(),
            set_binary: set_binary.clone(),
        };
        let (m, b, s, sb) = (matched.clone(), binary.clone(), set.clone(), set_binary.clone());
        let (stmt, table) = self
            .statement(rel_id, Op::Update, key, move |t| t.full_batch_update_sql(&m, &b, &s, &sb))
            .await?;
        let t = &self.catalog.tables[&rel_id];
        let old_picks = picks_of(t, matched_values(&matched), &binary);
        let set_cols = set.iter().enumerate().filter(|(_, s)| **s).map(|(i, _)| i);
        let new_picks = picks_of(t, set_cols, &set_binary);
        let mut arrays = value::column_arrays(rows.iter().map(|(o, _)| o), &old_picks);
        arrays.extend(value::column_arrays(rows.iter().map(|(_, n)| n), &new_picks));
        let params: Vec<Param> = arrays.into_iter().map(Param::Binary).collect();
        let n = u64::try_from(rows.len()).unwrap_or(u64::MAX);
        self.stats.batched_rows += n;
        self.push_scanning_change(stmt, params, table, Op::Update, commit_lsn, n).await
    }

    /// A single-row update by key; with `carry`, as a whole target transaction (see
    /// [`Self::push_row`]).
    pub(super) async fn update_row(
        &mut self,
        rel_id: u32,
        commit_lsn: Lsn,
        key: &Tuple,
        new: &Tuple,
        set: &[bool],
        carry: Option<&CommitInfo>,
    ) -> Result<(), ApplyError> {
        let t = &self.catalog.tables[&rel_id];
        let (s, m): (Box<[bool]>, Box<[Match]>) = (set.into(), t.key_match());
        let key_stmt = StmtKey::Update { set: s.clone(), matched: m.clone() };
        let mut params: Vec<Param> = new
            .values()
            .zip(set)
            .filter(|(_, s)| **s)
            .filter_map(|(v, _)| Param::from_value(v))
            .collect();
        params.extend(key.values().filter_map(Param::from_value));
        let sql = move |t: &TableInfo| t.update_sql(&s, &m);
        self.push_row(rel_id, Op::Update, key_stmt, sql, params, 1, commit_lsn, carry).await
    }

    /// Sends a run of updates (distinct keys): one set-based statement per shape (columns set,
    /// value formats) with enough rows, single-row statements for the rest, in source order.
    pub(super) async fn flush_update_run(
        &mut self,
        rel_id: u32,
        commit_lsn: Lsn,
        rows: Vec<UpdateRow>,
    ) -> Result<(), ApplyError> {
        let guard_cols = match &self.catalog.tables[&rel_id].unique_hazard {
            UniqueHazard::RowByRow => {
                for row in &rows {
                    self.update_row(rel_id, commit_lsn, &row.key, &row.new, &row.set, None).await?;
                }
                return Ok(());
            }
            UniqueHazard::None => Box::default(),
            UniqueHazard::Columns(cols) => cols.clone(),
        };
        type Shape = (Box<[bool]>, Box<[bool]>, Box<[bool]>);
        // Formats only matter for the columns that travel.
        fn set_binary(row: &UpdateRow) -> impl Iterator<Item = bool> + '_ {
            row.new.iter().zip(&row.set).map(|(v, &s)| s && !matches!(v, Column::Text(_)))
        }
        let mut shapes: Vec<(Shape, Vec<usize>)> = Vec::new();
        for (i, row) in rows.iter().enumerate() {
            // Compared in place: most rows share the first shape, allocated once.
            let same = |(set, binary, key_binary): &Shape| {
                **set == *row.set
                    && binary.iter().copied().eq(set_binary(row))
                    && key_binary.iter().copied().eq(binary_flags(&row.key))
            };
            match shapes.iter_mut().find(|(s, _)| same(s)) {
                Some((_, group)) => group.push(i),
                None => {
                    let shape = (
                        row.set.clone(),
                        set_binary(row).collect(),
                        column_binary(&row.key).into(),
                    );
                    shapes.push((shape, vec![i]));
                }
            }
        }
        // Rows a set-based statement applied (or looked for: a missing row is counted there).
        let mut done = vec![false; rows.len()];
        for ((set, binary, key_binary), group) in shapes {
            if group.len() < self.cfg.batch_min_rows {
                continue;
            }
            let guard: Vec<usize> = guard_cols.iter().copied().filter(|&c| set[c]).collect();
            let batch: Vec<&UpdateRow> = group.iter().map(|&i| &rows[i]).collect();
            let t = &self.catalog.tables[&rel_id];
            let applied = if t.cols.iter().zip(&set).any(|(c, &s)| c.is_array && s) {
                // Rows of the table's type carry binary values only.
                if set.iter().zip(&binary).any(|(&s, &b)| s && !b) {
                    continue;
                }
                self.update_row_type_batch(rel_id, commit_lsn, &batch, set, &guard).await?
            } else {
                self.update_batch(rel_id, commit_lsn, &batch, set, binary, key_binary, &guard)
                    .await?
            };
            match applied {
                None => group.iter().for_each(|&i| done[i] = true),
                Some(positions) => {
                    for p in positions {
                        if let Some(&i) = p.checked_sub(1).and_then(|p| group.get(p)) {
                            done[i] = true;
                        }
                    }
                }
            }
        }
        // The rest in source order: rows applied above kept their unique values, so they
        // commute with these.
        for (row, _) in rows.iter().zip(&done).filter(|(_, d)| !**d) {
            self.update_row(rel_id, commit_lsn, &row.key, &row.new, &row.set, None).await?;
        }
        Ok(())
    }

    /// One set-based update. Unguarded, it goes into the pipeline (`None`); guarded (see
    /// [`TableInfo::batch_update_sql`]), it waits for the positions of the rows it updated.
    #[allow(clippy::too_many_arguments)]
    async fn update_batch(
        &mut self,
        rel_id: u32,
        commit_lsn: Lsn,
        rows: &[&UpdateRow],
        set: Box<[bool]>,
        binary: Box<[bool]>,
        key_binary: Box<[bool]>,
        guard: &[usize],
    ) -> Result<Option<Vec<usize>>, ApplyError> {
        let (s, b, kb, g) = (set.clone(), binary.clone(), key_binary.clone(), guard.to_vec());
        let key = StmtKey::BatchUpdate {
            set: set.clone(),
            binary: combined(&key_binary, &binary),
            guarded: !guard.is_empty(),
        };
        let (stmt, table) = self
            .statement(rel_id, Op::Update, key, move |t| t.batch_update_sql(&s, &b, &kb, &g))
            .await?;
        let t = &self.catalog.tables[&rel_id];
        let key_picks = key_picks(t, &key_binary);
        let set_picks: Vec<(usize, u32)> = t
            .cols
            .iter()
            .enumerate()
            .filter(|&(i, _)| set[i])
            .map(|(i, c)| (i, if binary[i] { c.type_oid } else { TEXT_OID }))
            .collect();
        let params: Vec<Param> = value::column_arrays(rows.iter().map(|r| &r.key), &key_picks)
            .into_iter()
            .chain(value::column_arrays(rows.iter().map(|r| &r.new), &set_picks))
            .map(Param::Binary)
            .collect();
        let guarded = !guard.is_empty();
        self.run_update_batch(stmt, table, params, rows.len(), commit_lsn, guarded).await
    }

    /// A set-based update of rows that keep their key, as one array of the table's row type
    /// (see [`TableInfo::row_update_sql`]); the result as for [`Self::update_batch`].
    async fn update_row_type_batch(
        &mut self,
        rel_id: u32,
        commit_lsn: Lsn,
        rows: &[&UpdateRow],
        set: Box<[bool]>,
        guard: &[usize],
    ) -> Result<Option<Vec<usize>>, ApplyError> {
        let (s, g) = (set.clone(), guard.to_vec());
        let key = StmtKey::RowUpdate { set: set.clone(), guarded: !guard.is_empty() };
        let (stmt, table) =
            self.statement(rel_id, Op::Update, key, move |t| t.row_update_sql(&s, &g)).await?;
        let t = &self.catalog.tables[&rel_id];
        let Some(row_type) = &t.row_type else {
            return Err(ApplyError::UnknownRelation { rel_id });
        };
        // The rows are found by their key, which travels even where it is not set (an
        // identity column GENERATED ALWAYS).
        let carried: Vec<bool> = (0..set.len()).map(|i| set[i] || t.key.contains(&i)).collect();
        let array = value::row_type_array(rows.iter().map(|r| &r.new), row_type, &carried);
        let guarded = !guard.is_empty();
        let params = vec![Param::Binary(array)];
        self.run_update_batch(stmt, table, params, rows.len(), commit_lsn, guarded).await
    }

    /// Sends a set-based update: unguarded into the pipeline (`None`: every row applied or
    /// counted missing), guarded waiting for the 1-based positions of the rows it updated.
    async fn run_update_batch(
        &mut self,
        stmt: Statement,
        table: Arc<str>,
        params: Vec<Param>,
        rows: usize,
        commit_lsn: Lsn,
        guarded: bool,
    ) -> Result<Option<Vec<usize>>, ApplyError> {
        let expected = u64::try_from(rows).unwrap_or(u64::MAX);
        if !guarded {
            self.stats.batched_rows += expected;
            self.push_change(stmt, params, table, Op::Update, commit_lsn, expected).await?;
            return Ok(None);
        }
        self.quiesce().await?;
        self.stats.statements += 1;
        let change_err = |source| ApplyError::Change {
            table: table.to_string(),
            op: Op::Update,
            commit_lsn,
            source,
        };
        let returned: Vec<tokio_postgres::Row> = self
            .session
            .client
            .query_raw(&stmt, params)
            .await
            .map_err(change_err)?
            .try_collect()
            .await
            .map_err(change_err)?;
        let positions: Vec<usize> =
            returned.iter().filter_map(|r| usize::try_from(r.get::<_, i64>(0)).ok()).collect();
        self.stats.batched_rows += u64::try_from(positions.len()).unwrap_or(u64::MAX);
        Ok(Some(positions))
    }
}

#[cfg(test)]
mod tests {
    use super::super::identity::text_row;
    use super::*;

    #[test]
    fn an_update_folded_into_an_update_sets_what_either_set() {
        let mut row = UpdateRow {
            key: text_row(&[Some("1")]),
            new: text_row(&[Some("1"), Some("a"), Some("x")]),
            set: [true, true, false].into(),
        };
        fold_into_update(&mut row, &text_row(&[Some("1"), None, Some("y")]), &[true, false, true]);
        assert_eq!(row.new, text_row(&[Some("1"), Some("a"), Some("y")]));
        assert_eq!(*row.set, [true, true, true]);
    }

    #[test]
    fn only_an_update_that_keeps_other_unique_values_folds() {
        let buffered = text_row(&[Some("1"), Some("a"), Some("u1")]);
        let hazard = UniqueHazard::Columns([2].into());
        let keeps = text_row(&[Some("1"), Some("b"), Some("u1")]);
        let moves = text_row(&[Some("1"), Some("b"), Some("u2")]);
        let unsent = text_row(&[Some("1"), Some("b"), None]);
        assert!(keeps_unique_values(&hazard, &buffered, &keeps));
        assert!(!keeps_unique_values(&hazard, &buffered, &moves));
        assert!(keeps_unique_values(&hazard, &buffered, &unsent), "an unchanged TOAST value");
        assert!(keeps_unique_values(&UniqueHazard::None, &buffered, &moves));
        assert!(!keeps_unique_values(&UniqueHazard::RowByRow, &buffered, &keeps));
    }
}
