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
/// The applier calls, per source transaction, [`begin`](Target::begin), then any number of
/// [`relation`](Target::relation) and [`change`](Target::change) calls, then
/// [`commit`](Target::commit). A target may keep its own transaction open across many source
/// transactions (grouping); [`flush`](Target::flush), called only between source transactions,
/// makes everything so far durable. Relation calls can also arrive between transactions.
/// After any error the target's state is unspecified: drop it and build a new one.
///
/// The futures are `Send` so an applier can run inside `tokio::spawn`.
pub trait Target {
    /// End LSN of the last source transaction the target holds (its stored progress), if any.
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

    /// One change of the current source transaction.
    fn change(&mut self, change: Change) -> impl Future<Output = Result<(), ApplyError>> + Send;

    /// The current source transaction ends. It need not be durable yet.
    fn commit(
        &mut self,
        commit: &CommitInfo,
    ) -> impl Future<Output = Result<(), ApplyError>> + Send;

    /// Makes every committed source transaction durable (or starts doing so) and returns the
    /// newest source end LSN that IS durable now, which the caller may confirm to the primary.
    /// Returning an older LSN than the last commit is allowed (e.g. asynchronous commit not yet
    /// flushed); a later call returns the rest. Called only between source transactions.
    fn flush(&mut self) -> impl Future<Output = Result<Option<Lsn>, ApplyError>> + Send;

    /// Another target writing to the same destination in a transaction of its own, whose
    /// [`flush`](Target::flush) is durable when it returns. The applier uses it to apply a large
    /// streamed transaction while the rest of it still arrives, and commits it after
    /// everything this target committed before. `None` (the default): not supported.
    fn fork(&mut self) -> impl Future<Output = Result<Option<Self>, ApplyError>> + Send
    where
        Self: Sized,
    {
        async { Ok(None) }
    }

    /// Identifies this target's session to the [`blocks`](Target::blocks) of the targets
    /// [`fork`](Target::fork) makes. Default: `None`, no way to tell.
    fn session(&self) -> Option<u32> {
        None
    }

    /// Whether this session holds a lock that the sibling `session` (from
    /// [`session`](Target::session)) is waiting for. The applier asks this of a
    /// [`fork`](Target::fork) about the main session when a main-session operation takes long.
    /// Default: `Ok(false)`, not known.
    fn blocks(&mut self, session: u32) -> impl Future<Output = Result<bool, ApplyError>> + Send {
        let _ = session;
        async { Ok(false) }
    }

    /// A subtransaction of the current source transaction made its first change: remember
    /// this point under `id` (its xid) so [`rollback_to`](Target::rollback_to) can return to
    /// it. Only called on a target from [`fork`](Target::fork). Default: not supported.
    fn savepoint(&mut self, id: u32) -> impl Future<Output = Result<(), ApplyError>> + Send {
        let _ = id;
        async { Err(ApplyError::Unsupported("savepoints")) }
    }

    /// Undoes every change since [`savepoint`](Target::savepoint) `id`, which stays set
    /// (later ones are gone). Default: not supported.
    fn rollback_to(&mut self, id: u32) -> impl Future<Output = Result<(), ApplyError>> + Send {
        let _ = id;
        async { Err(ApplyError::Unsupported("savepoints")) }
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
