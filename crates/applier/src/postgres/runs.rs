//! Runs: the buffered changes of one table that go out together.

use std::sync::Arc;

use foldhash::{HashMap, HashSet};
use pgoutput_decoder::{Lsn, Relation, Tuple};

use crate::error::ApplyError;

use super::PostgresTarget;
use super::identity::RowKey;
use super::insert::CopyState;
use super::table::Match;
use super::update::UpdateRow;
use super::value::ValueFormat;

/// Bytes of rows buffered over all tables' runs before every run is sent.
const MAX_BUFFERED_BYTES: usize = 32 << 20;

/// The pending changes of one table, to go out as one statement (or a few).
///
/// # Invariant
/// Per table, the target applies exactly the source's sequence of row images:
/// - A run holds changes of one kind whose keys are distinct (as set-based statements and
///   `COPY` need). A change that does not fit ends (sends) its table's run first.
/// - Folding: an update of a row whose buffered insert or update (same key before and after)
///   is still in the run is merged into it: the merged row is the row the source had after
///   both. It moves the update earlier only past changes of other rows of the run, which
///   are of the kind the row itself is in the run for, and into an update only when it keeps
///   the values other unique indexes check (so unique values move in source order).
///
/// Across tables, runs go out as they fill up, not in source order. That only is correct
/// under `session_replication_role = replica` (`reorder`): foreign keys and ordinary
/// triggers do not fire, so nothing on the target depends on the order between tables (only
/// `ENABLE ALWAYS`/`REPLICA` triggers could, as with the native subscriber's batching).
/// Without it, a change to another table first sends the pending run, which keeps the source
/// order across tables too. Nothing is visible before the group's COMMIT either way.
pub(super) struct Run {
    pub(super) rel_id: u32,
    pub(super) rel: Arc<Relation>,
    /// Commit LSN of the source transaction of the run's first change (for errors).
    pub(super) commit_lsn: Lsn,
    /// Approximate bytes of the buffered rows.
    pub(super) bytes: usize,
    pub(super) kind: RunKind,
}

/// The row of a run that holds one insert, or one update or delete by key: what a single-row
/// statement applies.
pub(super) enum OneRow {
    Insert(Tuple),
    Update(UpdateRow),
    Delete(Tuple),
}

pub(super) enum RunKind {
    /// Inserts. `keys`: the key of each buffered row to its index, for folding; once `copy`
    /// streams, rows are encoded at once and no longer foldable (`keys` is emptied).
    Insert {
        format: Option<ValueFormat>,
        rows: Vec<Tuple>,
        keys: HashMap<RowKey, usize>,
        copy: Option<CopyState>,
    },
    /// Updates by key. `keys`: the old and new key of every row; `Some(i)` when row `i` keeps
    /// its key (a later update of it folds into it), `None` for a key an update moved.
    Update { rows: Vec<UpdateRow>, keys: UpdateKeys },
    /// Deletes by key.
    Delete { key_binary: Box<[bool]>, rows: Vec<Tuple>, keys: HashSet<RowKey> },
    /// Deletes of whole old rows (REPLICA IDENTITY FULL) of one shape: how each column is
    /// matched, which value columns are binary. `keys`: the old rows, all distinct.
    FullDelete {
        matched: Box<[Match]>,
        binary: Box<[bool]>,
        rows: Vec<Tuple>,
        keys: HashSet<RowKey>,
    },
    /// Updates of whole old rows (REPLICA IDENTITY FULL) of one shape, as `FullDelete`, with
    /// the columns they set and which of those are binary; each row is (old, new). `olds`:
    /// the old rows, all distinct; `news`: the new rows, none of which a later row of the run
    /// may update (it would look for a row the statement has not made yet).
    FullUpdate {
        matched: Box<[Match]>,
        binary: Box<[bool]>,
        set: Box<[bool]>,
        set_binary: Box<[bool]>,
        rows: Vec<(Tuple, Tuple)>,
        olds: HashSet<RowKey>,
        news: HashSet<RowKey>,
    },
}

/// The keys of an update run (see [`RunKind::Update`]).
pub(super) type UpdateKeys = HashMap<RowKey, Option<usize>>;

/// What the updates of a [`RunKind::FullUpdate`] run share.
pub(super) struct FullShape {
    pub(super) matched: Box<[Match]>,
    pub(super) binary: Box<[bool]>,
    pub(super) set: Box<[bool]>,
    pub(super) set_binary: Box<[bool]>,
}

/// Approximate bytes of a buffered row: the row as received (one buffer) and its handle.
pub(super) fn tuple_bytes(t: &Tuple) -> usize {
    t.raw().len() + 48
}

impl PostgresTarget {
    pub(super) fn run_index(&self, rel_id: u32) -> Option<usize> {
        self.runs.iter().position(|r| r.rel_id == rel_id)
    }

    /// Takes out the only run when its row is one a single-row statement applies: the
    /// table, the commit LSN of the row's transaction and the row.
    pub(super) fn take_one_row(&mut self) -> Option<(u32, Lsn, OneRow)> {
        fn only<T>(rows: &mut Vec<T>) -> Option<T> {
            if rows.len() == 1 { rows.pop() } else { None }
        }
        let [run] = self.runs.as_mut_slice() else { return None };
        let row = match &mut run.kind {
            RunKind::Insert { rows, copy: None, .. } => only(rows).map(OneRow::Insert),
            RunKind::Update { rows, .. } => only(rows).map(OneRow::Update),
            RunKind::Delete { rows, .. } => only(rows).map(OneRow::Delete),
            _ => None,
        }?;
        let run = self.take_run(0);
        Some((run.rel_id, run.commit_lsn, row))
    }

    /// Takes run `i` out of `runs`, and its rows out of the buffered bytes.
    pub(super) fn take_run(&mut self, i: usize) -> Run {
        let run = self.runs.remove(i);
        self.buffered -= run.bytes;
        run
    }

    /// Before a change to `rel_id` without cross-table reordering: sends other tables' runs.
    pub(super) async fn leave_others(&mut self, rel_id: u32) -> Result<(), ApplyError> {
        if !self.reorder {
            while let Some(i) = self.runs.iter().position(|r| r.rel_id != rel_id) {
                self.send_run(i).await?;
            }
        }
        Ok(())
    }

    /// Sends `rel_id`'s run, if any.
    pub(super) async fn end_table_run(&mut self, rel_id: u32) -> Result<(), ApplyError> {
        match self.run_index(rel_id) {
            Some(i) => self.send_run(i).await,
            None => Ok(()),
        }
    }

    /// Sends every run, oldest first.
    pub(super) async fn end_runs(&mut self) -> Result<(), ApplyError> {
        while !self.runs.is_empty() {
            self.send_run(0).await?;
        }
        Ok(())
    }

    /// A new run for `rel`, after sending the table's current one.
    pub(super) async fn start_run(
        &mut self,
        rel: &Arc<Relation>,
        kind: RunKind,
    ) -> Result<usize, ApplyError> {
        self.end_table_run(rel.rel_id).await?;
        self.runs.push(Run {
            rel_id: rel.rel_id,
            rel: Arc::clone(rel),
            commit_lsn: self.commit_lsn(),
            bytes: 0,
            kind,
        });
        Ok(self.runs.len() - 1)
    }

    /// Accounts `bytes` more buffered in run `i`; sends everything when over the budget.
    pub(super) async fn buffered_more(&mut self, i: usize, bytes: usize) -> Result<(), ApplyError> {
        self.runs[i].bytes += bytes;
        self.buffered += bytes;
        if self.buffered > MAX_BUFFERED_BYTES {
            self.end_runs().await?;
        }
        Ok(())
    }

    /// Takes run `i` out of `runs` and sends it as statements.
    async fn send_run(&mut self, i: usize) -> Result<(), ApplyError> {
        let Run { rel_id, rel, commit_lsn, kind, .. } = self.take_run(i);
        match kind {
            RunKind::Insert { copy: Some(c), .. } => self.finish_copy(&rel, commit_lsn, c).await,
            RunKind::Insert { rows, format, copy: None, .. } => {
                self.send_inserts(&rel, commit_lsn, rows, format).await
            }
            RunKind::Update { rows, mut keys } => {
                keys.clear();
                self.spare_update_keys = keys;
                self.flush_update_run(rel_id, commit_lsn, rows).await
            }
            RunKind::Delete { rows, key_binary, .. } => {
                self.flush_delete_run(rel_id, commit_lsn, rows, key_binary).await
            }
            RunKind::FullDelete { matched, binary, rows, .. } => {
                self.flush_full_delete_run(rel_id, commit_lsn, rows, matched, binary).await
            }
            RunKind::FullUpdate { matched, binary, set, set_binary, rows, .. } => {
                let shape = FullShape { matched, binary, set, set_binary };
                self.flush_full_update_run(rel_id, commit_lsn, rows, shape).await
            }
        }
    }
}
