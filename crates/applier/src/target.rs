//! The [`Target`] trait and the values the applier hands to it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use pgoutput_decoder::{
    DecodingMessage, Lsn, OldTuple, PgTimestamp, Relation, StreamCommit, Tuple, TypeInfo,
};

use crate::error::ApplyError;

/// Types announced by the source (`Type` messages), by type OID. Only non-builtin types are
/// announced, which is what a target needs to name a type it cannot look up itself.
pub type TypeMap = HashMap<u32, TypeInfo>;

/// The start of one source transaction, as the target sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnInfo {
    /// Top-level transaction id on the source.
    pub xid: u32,
    /// LSN of the source commit record (`final_lsn` of Begin, `commit_lsn` otherwise).
    pub commit_lsn: Lsn,
    /// Commit time on the source.
    pub commit_time: PgTimestamp,
    /// Whether the transaction arrived streamed (protocol 2+) and was replayed at its commit.
    pub streamed: bool,
    /// The two-phase global transaction id, for a transaction applied at COMMIT PREPARED.
    pub gid: Option<String>,
}

/// The end of one source transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitInfo {
    /// Top-level transaction id on the source.
    pub xid: u32,
    /// LSN of the source commit record.
    pub commit_lsn: Lsn,
    /// End LSN of the commit record: the progress position once this transaction is applied.
    pub end_lsn: Lsn,
    /// Commit time on the source.
    pub commit_time: PgTimestamp,
}

impl From<&StreamCommit> for CommitInfo {
    fn from(c: &StreamCommit) -> Self {
        CommitInfo {
            xid: c.xid,
            commit_lsn: c.commit_lsn,
            end_lsn: c.end_lsn,
            commit_time: c.commit_time,
        }
    }
}

/// One change inside a source transaction. Values are the decoder's zero-copy bytes; the
/// relation is shared with the applier's relation cache (a new `Arc` whenever the source
/// re-describes the relation, so targets can cache per `Arc` pointer).
#[derive(Debug, Clone)]
pub enum Change {
    /// A new row.
    Insert {
        /// The relation, as last described by the source.
        rel: Arc<Relation>,
        /// The new row, one value per relation column.
        new: Tuple,
    },
    /// A changed row.
    Update {
        /// The relation.
        rel: Arc<Relation>,
        /// The old key (`K`) or old row (`O`, replica identity full), when the source sent one.
        old: Option<OldTuple>,
        /// The new row; unchanged TOASTed values are [`ColumnValue::UnchangedToast`].
        ///
        /// [`ColumnValue::UnchangedToast`]: pgoutput_decoder::ColumnValue::UnchangedToast
        new: Tuple,
    },
    /// A deleted row.
    Delete {
        /// The relation.
        rel: Arc<Relation>,
        /// The old key or old row.
        old: OldTuple,
    },
    /// A `TRUNCATE` of one or more relations.
    Truncate {
        /// The truncated relations.
        rels: Vec<Arc<Relation>>,
        /// `TRUNCATE ... CASCADE`.
        cascade: bool,
        /// `TRUNCATE ... RESTART IDENTITY`.
        restart_identity: bool,
    },
    /// A transactional logical decoding message (`pg_logical_emit_message(true, ...)`).
    Message(DecodingMessage),
}

impl Change {
    /// A rough size in bytes (values plus a fixed overhead per row), for batching decisions.
    pub fn approx_bytes(&self) -> usize {
        fn tuple(t: &Tuple) -> usize {
            // The row as sent: per column a kind byte, plus length and bytes for values.
            t.raw().len() + 16
        }
        match self {
            Change::Insert { new, .. } => tuple(new),
            Change::Update { old, new, .. } => {
                tuple(new) + old.as_ref().map_or(0, |o| tuple(o.tuple()))
            }
            Change::Delete { old, .. } => tuple(old.tuple()),
            Change::Truncate { rels, .. } => 16 * rels.len(),
            Change::Message(m) => m.content.len() + m.prefix.len() + 16,
        }
    }
}

/// Where the applier replays source transactions.
///
/// # Calls
/// Per source transaction the applier calls [`begin`](Target::begin), then any number of
/// [`relation`](Target::relation) and [`change`](Target::change) calls, then
/// [`commit`](Target::commit). Relation calls can also arrive between transactions. A target
/// may group many source transactions into one transaction of its own; [`flush`](Target::flush)
/// is called only between source transactions.
///
/// # Accepted and durable
/// A call that returns `Ok` has *accepted* its work: buffered, sent or applied, but not
/// necessarily durable, and not necessarily visible. Only [`flush`](Target::flush) says what
/// is *durable*: the LSN it returns, and every source transaction ending at or before it, must
/// survive a crash of the target. The applier confirms exactly that LSN to the primary, which
/// may then recycle the WAL before it: an LSN returned too early loses data.
///
/// Accepted work a crash loses must take the stored progress ([`load_progress`]) with it: the
/// applier then skips what the target still holds and replays the rest, exactly once. A target
/// that keeps its progress apart from its data (or none) gets what follows it again after a
/// crash, at least once.
///
/// After any error the target's state is unspecified: drop it and build a new one (the applier
/// starts again from [`load_progress`]).
///
/// # Forks
/// A target may offer [`fork`](Target::fork)s: a second writer to the same destination, in a
/// transaction of its own, which the applier uses to apply a large streamed transaction while it
/// still arrives. A fork knows the target it was forked from (its parent), and answers the calls
/// made only of forks: [`blocks_parent`](Target::blocks_parent),
/// [`begin_subtransaction`](Target::begin_subtransaction) and
/// [`abort_subtransaction`](Target::abort_subtransaction).
///
/// The futures are `Send` so an applier can run inside `tokio::spawn`.
///
/// [`load_progress`]: Target::load_progress
pub trait Target {
    /// End LSN of the last source transaction the target holds durably (its stored progress),
    /// if any: the applier skips every transaction ending at or before it.
    fn load_progress(&mut self) -> impl Future<Output = Result<Option<Lsn>, ApplyError>> + Send;

    /// A source transaction starts.
    fn begin(&mut self, txn: &TxnInfo) -> impl Future<Output = Result<(), ApplyError>> + Send;

    /// The source (re)described a relation. `types` holds the non-builtin types the source
    /// announced so far. Changes always carry their relation too, so this is an early notice
    /// (e.g. to repair schema drift), not something a target must remember.
    fn relation(
        &mut self,
        rel: &Arc<Relation>,
        types: &TypeMap,
    ) -> impl Future<Output = Result<(), ApplyError>> + Send;

    /// One change of the current source transaction, accepted.
    fn change(&mut self, change: Change) -> impl Future<Output = Result<(), ApplyError>> + Send;

    /// The current source transaction ends. Accepted, not yet durable.
    fn commit(
        &mut self,
        commit: &CommitInfo,
    ) -> impl Future<Output = Result<(), ApplyError>> + Send;

    /// Makes every committed source transaction durable (or starts doing so) and returns the
    /// newest source end LSN that IS durable now, which the applier confirms to the primary.
    /// Returning an older LSN than the last commit is allowed (e.g. an asynchronous commit not
    /// yet flushed); a later call returns the rest. Called only between source transactions.
    fn flush(&mut self) -> impl Future<Output = Result<Option<Lsn>, ApplyError>> + Send;

    /// A fork: another target writing to the same destination in a transaction of its own,
    /// whose [`flush`](Target::flush) is durable when it returns. The applier commits a fork's
    /// transaction after everything this target committed before it. `None` (the default):
    /// this target has no forks.
    fn fork(&mut self) -> impl Future<Output = Result<Option<Self>, ApplyError>> + Send
    where
        Self: Sized,
    {
        async { Ok(None) }
    }

    /// Asked of a fork while an operation of its parent takes long: whether the parent waits
    /// for something this fork holds (a row lock, say). Neither could go on, since the fork
    /// commits only after its parent's operation; on `true` the applier drops the fork, which
    /// undoes its work. Default: `Ok(false)`, cannot tell (the applier's patience still bounds
    /// the wait).
    fn blocks_parent(&mut self) -> impl Future<Output = Result<bool, ApplyError>> + Send {
        async { Ok(false) }
    }

    /// Asked of a fork: subtransaction `subxid` of the current source transaction makes its
    /// first change, which the changes after it follow until the next such call. A fork that can
    /// undo part of its transaction remembers this point for
    /// [`abort_subtransaction`](Target::abort_subtransaction). Default: not supported (the
    /// applier drops the fork and applies the transaction at its commit instead).
    fn begin_subtransaction(
        &mut self,
        subxid: u32,
    ) -> impl Future<Output = Result<(), ApplyError>> + Send {
        let _ = subxid;
        async { Err(ApplyError::Unsupported("subtransactions")) }
    }

    /// The source aborted subtransaction `subxid`, begun with
    /// [`begin_subtransaction`](Target::begin_subtransaction): undoes its changes and every
    /// change after them (those of subtransactions begun later, which are gone too). Default:
    /// not supported.
    fn abort_subtransaction(
        &mut self,
        subxid: u32,
    ) -> impl Future<Output = Result<(), ApplyError>> + Send {
        let _ = subxid;
        async { Err(ApplyError::Unsupported("subtransactions")) }
    }

    /// A non-transactional logical decoding message. Ignored unless the target cares.
    fn message(
        &mut self,
        msg: &DecodingMessage,
    ) -> impl Future<Output = Result<(), ApplyError>> + Send {
        let _ = msg;
        async { Ok(()) }
    }
}
