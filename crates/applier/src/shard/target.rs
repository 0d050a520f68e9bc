//! [`ShardedTarget`]: N targets behind one [`Target`].
//!
//! Every source transaction is begun and committed on every shard (an empty one costs nothing
//! but moves that shard's progress along), so each shard keeps its own progress in its own
//! transactions and [`flush`](Target::flush) returns the oldest LSN all shards made durable:
//! the slot is confirmed no further. On restart each shard skips what its own progress already
//! covers, by the applier's rule (a commit record starting before the stored end LSN).
//!
//! An update that changes a row's shard key moves the row: the old shard deletes it and keeps
//! its values in `pgmirror.shard_moves` in the same transaction ([`ShardTarget::take_row`]),
//! and the new shard inserts it, whole, with the values the source did not send (unchanged
//! TOASTed columns) filled from the old row. If only one of the two shards committed when a
//! crash came, the replay finds the row in the other shard's `shard_moves` (by source commit
//! and the change's position in its transaction), so the layout converges whichever shard
//! committed first. Rows kept there are forgotten once every shard's progress has passed them.
//!
//! When the shard key lies outside the replica identity (Store's `orders` by `customer_id`,
//! primary key `id`, default identity), an update carries the new row only and a delete the
//! identity only, so neither says where the row is. An update asks the shard the new key hashes
//! to whether it holds the row (by identity): usually it does, as the key did not change, and
//! the update goes there. Otherwise the row moved: the other shards are asked to hand it over,
//! as above. A delete goes to every shard, and only the one holding the row finds it.

use std::future::Future;
use std::sync::Arc;

use futures_util::future::try_join_all;
use pgoutput_decoder::{Column, ColumnValue, DecodingMessage, Lsn, OldTuple, Relation, Tuple};

use super::hash::{partition_of, row_hash};
use super::layout::{KeyColumn, ShardLayout, TableRoute};
use crate::error::ApplyError;
use crate::target::{Change, CommitInfo, Target, TxnInfo, TypeMap};

/// Where a moved row is kept on its old shard: the source transaction's commit LSN and the
/// change's position in it (the same on every replay of that transaction).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MoveId {
    /// Commit LSN of the source transaction.
    pub commit_lsn: Lsn,
    /// Position of the change in the source transaction, from 0.
    pub seq: u32,
}

/// A target that can be a shard: besides applying changes, it hands over a row that moves to
/// another shard, keeping it until every shard has passed the move.
pub trait ShardTarget: Target {
    /// In the current transaction: deletes the row of `rel` identified by `old` (the old key or
    /// row, when sent) or else by `new`, keeps its values under `at`, and returns them (text
    /// values). `None`: the target lacks the row.
    fn take_row(
        &mut self,
        rel: &Arc<Relation>,
        old: Option<&Tuple>,
        new: &Tuple,
        at: MoveId,
    ) -> impl Future<Output = Result<Option<Tuple>, ApplyError>> + Send;

    /// Whether the target holds, with every change sent so far, the row of `rel` identified
    /// by `old` (the old key, when sent) or else by `new`.
    fn holds_row(
        &mut self,
        rel: &Arc<Relation>,
        old: Option<&Tuple>,
        new: &Tuple,
    ) -> impl Future<Output = Result<bool, ApplyError>> + Send;

    /// In the current transaction: deletes the row `old` identifies if the target holds it.
    /// One it lacks is not reported missing: another shard holds it.
    fn delete_if_held(
        &mut self,
        rel: Arc<Relation>,
        old: OldTuple,
    ) -> impl Future<Output = Result<(), ApplyError>> + Send;

    /// A row [`take_row`](ShardTarget::take_row) kept under `at` in an earlier, committed
    /// transaction.
    fn taken_row(
        &mut self,
        at: MoveId,
    ) -> impl Future<Output = Result<Option<Tuple>, ApplyError>> + Send;

    /// Forgets the rows kept by source transactions committed before `before`; called between
    /// source transactions, durable with the next flush.
    fn forget_moves(&mut self, before: Lsn) -> impl Future<Output = Result<(), ApplyError>> + Send;
}

/// One shard and what the sharded target knows of it.
#[derive(Debug)]
struct Shard<T> {
    target: T,
    /// Its stored progress at start: it skips transactions this covers.
    stored: Option<Lsn>,
    /// The newest LSN it reported durable (or its stored progress).
    durable: Option<Lsn>,
    /// Whether it takes part in the current source transaction.
    active: bool,
    /// Rows taken since its kept rows were last cleaned up.
    took: bool,
}

/// N targets laid out as PostgreSQL's hash partitioning of the sharded tables. See the module
/// documentation.
#[derive(Debug)]
pub struct ShardedTarget<T> {
    shards: Vec<Shard<T>>,
    layout: ShardLayout,
    /// Routes by relation id, with the relation they were computed for.
    routes: std::collections::HashMap<u32, (Arc<Relation>, TableRoute)>,
    /// The current source transaction.
    txn: Option<TxnInfo>,
    /// Position of the next change in the current source transaction.
    seq: u32,
    /// Rows moved between shards.
    moves: u64,
}

impl<T: ShardTarget + Send> ShardedTarget<T> {
    /// Shards in order: shard `i` holds partition `REMAINDER i` of `MODULUS shards.len()`.
    ///
    /// # Panics
    /// With no shards.
    pub fn new(shards: Vec<T>, layout: ShardLayout) -> Self {
        assert!(!shards.is_empty(), "a sharded target needs at least one shard");
        ShardedTarget {
            shards: shards
                .into_iter()
                .map(|target| Shard {
                    target,
                    stored: None,
                    durable: None,
                    active: false,
                    took: false,
                })
                .collect(),
            layout,
            routes: std::collections::HashMap::new(),
            txn: None,
            seq: 0,
            moves: 0,
        }
    }

    /// The shards, in order.
    pub fn shards(&self) -> impl Iterator<Item = &T> {
        self.shards.iter().map(|s| &s.target)
    }

    /// Rows moved from one shard to another so far.
    pub fn moved_rows(&self) -> u64 {
        self.moves
    }

    fn route(&mut self, rel: &Arc<Relation>) -> Result<TableRoute, ApplyError> {
        if let Some((r, route)) = self.routes.get(&rel.rel_id)
            && Arc::ptr_eq(r, rel)
        {
            return Ok(route.clone());
        }
        let route = self.layout.route(rel)?;
        self.routes.insert(rel.rel_id, (Arc::clone(rel), route.clone()));
        Ok(route)
    }

    /// The shard a row's key hashes to; `column(i)` gives the value of relation column `i`.
    fn shard_of<'a>(
        &self,
        key: &[KeyColumn],
        column: impl Fn(usize) -> Option<Column<'a>>,
    ) -> Result<usize, ApplyError> {
        let hashes = key
            .iter()
            .map(|k| k.ty.hash(column(k.index).unwrap_or(Column::Null)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(partition_of(row_hash(hashes), self.shards.len()))
    }

    async fn send_to(&mut self, i: usize, change: Change) -> Result<(), ApplyError> {
        let s = &mut self.shards[i];
        if s.active { s.target.change(change).await } else { Ok(()) }
    }

    async fn send_all(&mut self, change: Change) -> Result<(), ApplyError> {
        for s in self.shards.iter_mut().filter(|s| s.active) {
            s.target.change(change.clone()).await?;
        }
        Ok(())
    }

    async fn update(
        &mut self,
        rel: Arc<Relation>,
        old: Option<OldTuple>,
        new: Tuple,
        seq: u32,
    ) -> Result<(), ApplyError> {
        let key = match self.route(&rel)? {
            TableRoute::Reference => return self.send_all(Change::Update { rel, old, new }).await,
            TableRoute::Sharded { key, in_identity: false } => {
                return self.update_elsewhere(rel, old, new, seq, &key).await;
            }
            TableRoute::Sharded { key, in_identity: true } => key,
        };
        let old_row = old.as_ref().map(OldTuple::tuple);
        // A key column the new row leaves out (unchanged TOAST) kept its value: the old key
        // has it when the key is in the replica identity.
        let to = self.shard_of(&key, |i| match new.get(i) {
            Some(Column::UnchangedToast) => old_row.and_then(|o| o.get(i)),
            c => c,
        })?;
        // No old key: the replica identity, and so the shard key, did not change.
        let from = match old_row {
            Some(o) => self.shard_of(&key, |i| o.get(i))?,
            None => to,
        };
        if from == to {
            return self.send_to(to, Change::Update { rel, old, new }).await;
        }
        let at = self.move_id(seq);
        let source = &mut self.shards[from];
        source.took = true;
        let taken = if source.active {
            source.target.take_row(&rel, old_row, &new, at).await?
        } else {
            // The old shard committed this transaction before a restart: the row is kept.
            source.target.taken_row(at).await?
        };
        self.moves += 1;
        match taken {
            Some(row) => {
                let whole = fill_unchanged(&new, &row);
                self.send_to(to, Change::Insert { rel, new: whole }).await
            }
            None => {
                tracing::warn!(
                    table = %rel.name,
                    "an update moves a row to shard {to} that shard {from} does not hold"
                );
                self.send_to(to, Change::Update { rel, old, new }).await
            }
        }
    }

    /// Where a row moved by change `seq` of the current source transaction is kept.
    fn move_id(&self, seq: u32) -> MoveId {
        let commit_lsn = self.txn.as_ref().map_or(Lsn::ZERO, |t| t.commit_lsn);
        MoveId { commit_lsn, seq }
    }

    /// An update of a table whose shard key lies outside the replica identity: the shard the
    /// new key hashes to is asked whether it holds the row; if not (or if it applied this
    /// transaction before a restart), the others hand the row over. See the module
    /// documentation.
    async fn update_elsewhere(
        &mut self,
        rel: Arc<Relation>,
        old: Option<OldTuple>,
        new: Tuple,
        seq: u32,
        key: &[KeyColumn],
    ) -> Result<(), ApplyError> {
        let old_key = old.as_ref().map(OldTuple::tuple);
        if key.iter().any(|k| matches!(new.get(k.index), Some(Column::UnchangedToast))) {
            // A key column too large to be sent again: it did not change, but which shard it
            // hashes to is unknown. Whichever shard holds the row updates it.
            for s in self.shards.iter_mut().filter(|s| s.active) {
                if s.target.holds_row(&rel, old_key, &new).await? {
                    return s.target.change(Change::Update { rel, old, new }).await;
                }
            }
            if self.shards.iter().all(|s| s.active) {
                tracing::warn!(table = %rel.name, "a row to update is on no shard");
            }
            return Ok(());
        }
        let to = self.shard_of(key, |i| new.get(i))?;
        let home = &mut self.shards[to];
        if home.active && home.target.holds_row(&rel, old_key, &new).await? {
            return home.target.change(Change::Update { rel, old, new }).await;
        }
        let at = self.move_id(seq);
        let mut taken = None;
        for (_, s) in self.shards.iter_mut().enumerate().filter(|(i, _)| *i != to) {
            taken = if s.active {
                s.took = true;
                s.target.take_row(&rel, old_key, &new, at).await?
            } else {
                // A shard that applied this transaction before a restart kept the row it
                // held.
                s.target.taken_row(at).await?
            };
            if taken.is_some() {
                break;
            }
        }
        match taken {
            Some(row) => {
                self.moves += 1;
                let whole = fill_unchanged(&new, &row);
                self.send_to(to, Change::Insert { rel, new: whole }).await
            }
            // On no other shard either: reported missing where it belongs.
            None => self.send_to(to, Change::Update { rel, old, new }).await,
        }
    }

    async fn route_change(&mut self, change: Change) -> Result<(), ApplyError> {
        let seq = self.seq;
        self.seq += 1;
        match change {
            Change::Insert { rel, new } => match self.route(&rel)? {
                TableRoute::Reference => self.send_all(Change::Insert { rel, new }).await,
                TableRoute::Sharded { key, .. } => {
                    let i = self.shard_of(&key, |c| new.get(c))?;
                    self.send_to(i, Change::Insert { rel, new }).await
                }
            },
            Change::Update { rel, old, new } => self.update(rel, old, new, seq).await,
            Change::Delete { rel, old } => match self.route(&rel)? {
                TableRoute::Reference => self.send_all(Change::Delete { rel, old }).await,
                // The old key does not say where the row is: every shard that lacks it
                // deletes nothing.
                TableRoute::Sharded { in_identity: false, .. } => {
                    for s in self.shards.iter_mut().filter(|s| s.active) {
                        s.target.delete_if_held(Arc::clone(&rel), old.clone()).await?;
                    }
                    Ok(())
                }
                TableRoute::Sharded { key, in_identity: true } => {
                    let i = self.shard_of(&key, |c| old.tuple().get(c))?;
                    self.send_to(i, Change::Delete { rel, old }).await
                }
            },
            c @ (Change::Truncate { .. } | Change::Message(_)) => self.send_all(c).await,
        }
    }
}

/// `new` with its unchanged TOASTed values taken from `old`.
fn fill_unchanged(new: &Tuple, old: &Tuple) -> Tuple {
    Tuple::new(
        new.values()
            .enumerate()
            .map(|(i, v)| match v {
                ColumnValue::UnchangedToast => old.value(i).unwrap_or(ColumnValue::Null),
                v => v,
            })
            .collect(),
    )
}

impl<T: ShardTarget + Send> Target for ShardedTarget<T> {
    async fn load_progress(&mut self) -> Result<Option<Lsn>, ApplyError> {
        for s in &mut self.shards {
            s.stored = s.target.load_progress().await?;
            s.durable = s.stored;
            // Rows kept by moves before a restart may be forgotten once all shards pass them.
            s.took = true;
        }
        // `None` (a shard that holds nothing yet) orders first.
        Ok(self.shards.iter().map(|s| s.stored).min().flatten())
    }

    async fn begin(&mut self, txn: &TxnInfo) -> Result<(), ApplyError> {
        self.txn = Some(txn.clone());
        self.seq = 0;
        for s in &mut self.shards {
            s.active = s.stored.is_none_or(|p| txn.commit_lsn >= p);
            if s.active {
                s.target.begin(txn).await?;
            }
        }
        Ok(())
    }

    async fn relation(&mut self, rel: &Arc<Relation>, types: &TypeMap) -> Result<(), ApplyError> {
        self.route(rel)?;
        for s in &mut self.shards {
            s.target.relation(rel, types).await?;
        }
        Ok(())
    }

    async fn change(&mut self, change: Change) -> Result<(), ApplyError> {
        self.route_change(change).await
    }

    async fn commit(&mut self, commit: &CommitInfo) -> Result<(), ApplyError> {
        self.txn = None;
        for s in self.shards.iter_mut().filter(|s| s.active) {
            s.target.commit(commit).await?;
            s.active = false;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<Option<Lsn>, ApplyError> {
        let durable = try_join_all(self.shards.iter_mut().map(|s| s.target.flush())).await?;
        for (s, d) in self.shards.iter_mut().zip(durable) {
            s.durable = s.durable.max(d);
        }
        let oldest = self.shards.iter().map(|s| s.durable).min().flatten();
        // Kept rows of moves every shard has passed are needed by no replay.
        if let Some(horizon) = oldest {
            for s in self.shards.iter_mut().filter(|s| s.took) {
                s.target.forget_moves(horizon).await?;
                s.took = false;
            }
        }
        Ok(oldest)
    }

    async fn message(&mut self, msg: &DecodingMessage) -> Result<(), ApplyError> {
        for s in &mut self.shards {
            s.target.message(msg).await?;
        }
        Ok(())
    }
}
