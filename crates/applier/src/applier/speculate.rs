//! Applying a large streamed transaction while it still arrives.
//!
//! A transaction that outgrows `logical_decoding_work_mem` on the primary is streamed in
//! chunks (protocol 2+) long before its commit. Buffering it and replaying it at the commit
//! serializes the two halves of the work: the walsender decodes for seconds while the target
//! waits, then the target applies for seconds while the walsender waits. Instead, the first
//! such transaction is also applied on a second target session ([`Target::fork`]) as its
//! chunks arrive, and committed there at its Stream Commit (PostgreSQL 16 calls this
//! `streaming = parallel`).
//!
//! The spill file is still written: it stays the truth. Whatever speculation cannot follow (a
//! prepared transaction, a subtransaction the fork cannot undo, an error) just drops the
//! second session, which rolls its work back, and the transaction is replayed from the spill at
//! its commit as before. A fork that supports subtransactions
//! ([`Target::begin_subtransaction`]) undoes a rolled-back one in place.
//!
//! Why the two sessions never wait on each other: on the primary, a transaction that commits
//! before the streamed one cannot touch a row the streamed one has changed (it would wait for
//! the row lock), and anything it changed before the streamed one did was decoded, and handed
//! to the main session, before the chunk that carries the streamed change. So the main
//! session commits what it holds before each chunk is applied, and commits again before the
//! streamed transaction commits, keeping the target's commit order the primary's.
//!
//! That argument holds for the primary's constraints. A target that has more (a unique index
//! or a trigger the primary lacks) can still make the main session wait for a row the second
//! session holds, and the second session only commits at a Stream Commit that the applier
//! reads after the main session is done: a deadlock through the client, which the target's
//! own deadlock detector cannot see. So every operation of the main session is [`watched`]:
//! once it has taken [`LOCK_CHECK_AFTER`] while a speculation is open, the second session is
//! asked whether the main session waits for it ([`Target::blocks_parent`]), and again every
//! [`LOCK_CHECK_EVERY`]. If it does, or if the operation has not finished after
//! [`speculation_patience`](crate::ApplierConfig::speculation_patience) (a wait through a
//! third session, which the lock check does not follow), the second session is dropped,
//! which rolls it back and releases its locks, the transaction is replayed from its spill at
//! its commit, and no later one is applied ahead (this target would stall it the same way).
//! A main session that is merely slow, or waits for someone else, keeps the speculation.

use std::collections::HashMap;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use pgoutput_decoder::{LogicalMessage, Lsn, PgTimestamp, Relation, StreamCommit};

use super::relations::Relations;
use crate::error::ApplyError;
use crate::target::{CommitInfo, Target, TxnInfo};

/// A streamed transaction being applied on its own target session.
#[derive(Debug)]
struct Speculation<T> {
    /// Top-level xid of the streamed transaction.
    xid: u32,
    target: T,
    /// Relations as this transaction described them (they must not replace the cache other
    /// transactions use).
    overlay: HashMap<u32, Arc<Relation>>,
    /// Changes applied so far.
    changes: u64,
    /// Subtransactions with changes, in the order of their first change (each begun on the
    /// fork with [`Target::begin_subtransaction`]).
    subtransactions: Vec<u32>,
}

/// How long a main-session operation runs before the second session is first asked whether
/// it holds the main session up. Most operations take well under a millisecond.
const LOCK_CHECK_AFTER: Duration = Duration::from_millis(100);
/// How often it is asked again while the operation goes on.
const LOCK_CHECK_EVERY: Duration = Duration::from_millis(250);

/// Whether the applier may open a second session, as far as it knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Forking {
    /// Not tried yet, or it worked.
    Maybe,
    /// The target has no second session to offer.
    Unsupported,
    /// The main session once waited on the second one: this target has something the primary
    /// lacks, and would stall every speculation the same way.
    Stalled,
}

/// The speculation, if one is open, and whether to try the next.
#[derive(Debug)]
pub(super) struct Ahead<T> {
    spec: Option<Speculation<T>>,
    forking: Forking,
    /// How long a main-session operation may wait before the speculation is given up.
    patience: Duration,
}

/// A speculated transaction committed on its session.
pub(super) struct Committed {
    /// Durable on the target up to here: the fork's commit, and the main session's before it.
    pub(super) durable: Lsn,
    /// Changes it applied.
    pub(super) changes: u64,
}

impl<T: Target> Ahead<T> {
    pub(super) fn new(patience: Duration) -> Self {
        Ahead { spec: None, forking: Forking::Maybe, patience }
    }

    /// No further transaction is applied ahead (one already open goes on).
    pub(super) fn stop_forking(&mut self) {
        if self.forking == Forking::Maybe {
            self.forking = Forking::Unsupported;
        }
    }

    /// Whether a speculation is open.
    pub(super) fn is_open(&self) -> bool {
        self.spec.is_some()
    }

    /// Whether streamed transaction `xid` is being applied ahead.
    pub(super) fn is_applying(&self, xid: u32) -> bool {
        self.spec.as_ref().is_some_and(|s| s.xid == xid)
    }

    /// At a Stream Start of `xid`: `Some(start)` when a chunk of it is to be applied ahead,
    /// `start` when its speculation is to be opened (its first chunk, none open, forking not
    /// ruled out). The main session must commit what it holds first (see the module docs).
    pub(super) fn at_stream_start(&self, xid: u32, first_segment: bool) -> Option<bool> {
        let start = first_segment && self.spec.is_none() && self.forking == Forking::Maybe;
        (start || self.is_applying(xid)).then_some(start)
    }

    /// Opens the speculation of `xid` on a fork of `main`, with the transaction begun on it.
    pub(super) async fn open(&mut self, main: &mut T, xid: u32) {
        let opened = async {
            let Some(mut target) = main.fork().await? else { return Ok(None) };
            let info = TxnInfo {
                xid,
                // Not known before the commit; only error messages would show it.
                commit_lsn: Lsn::ZERO,
                commit_time: PgTimestamp(0),
                streamed: true,
                gid: None,
            };
            target.begin(&info).await?;
            Ok(Some(target))
        };
        match opened.await {
            Ok(Some(target)) => {
                tracing::debug!(xid, "applying a streamed transaction as it arrives");
                let (overlay, subtransactions) = (HashMap::new(), Vec::new());
                self.spec = Some(Speculation { xid, target, overlay, changes: 0, subtransactions });
            }
            Ok(None) => self.forking = Forking::Unsupported,
            Err(e) => abandon_log(xid, &e),
        }
    }

    /// One message of a stream block of transaction `top` (already in its spill): applied on
    /// the fork when that transaction is being speculated.
    pub(super) async fn apply(&mut self, top: u32, msg: &LogicalMessage, cache: &mut Relations) {
        let Some(spec) = self.spec.as_mut().filter(|s| s.xid == top) else { return };
        let result = match msg {
            LogicalMessage::Relation(r) => {
                let rel = Arc::new(r.clone());
                spec.overlay.insert(rel.rel_id, Arc::clone(&rel));
                spec.target.relation(&rel, cache.types()).await
            }
            LogicalMessage::Type(t) => {
                cache.announced(t.clone());
                Ok(())
            }
            m => {
                // A subtransaction's first change: its abort (which may still come) undoes it
                // and what came after it, which can only be its own subtransactions' changes.
                // The spill and the native subscriber cut there too.
                let new_subxact =
                    m.stream_xid().filter(|&x| x != top && !spec.subtransactions.contains(&x));
                async {
                    if let Some(x) = new_subxact {
                        spec.subtransactions.push(x);
                        spec.target.begin_subtransaction(x).await?;
                    }
                    let change = cache.change(m.clone(), Some(&spec.overlay))?;
                    spec.changes += 1;
                    spec.target.change(change).await
                }
                .await
            }
        };
        if let Err(e) = result {
            abandon_log(top, &e);
            self.spec = None;
        }
    }

    /// Stream Abort of subtransaction `subxid` of `xid`: undone on the fork, if it made
    /// changes. (A subtransaction without changes has nothing to undo.)
    pub(super) async fn abort_subtransaction(&mut self, xid: u32, subxid: u32) {
        let Some(spec) = self.spec.as_mut().filter(|s| s.xid == xid) else { return };
        let Some(i) = spec.subtransactions.iter().position(|&x| x == subxid) else { return };
        // Later subtransactions are gone with the changes after this one's first.
        spec.subtransactions.truncate(i + 1);
        if let Err(e) = spec.target.abort_subtransaction(subxid).await {
            abandon_log(xid, &e);
            self.spec = None;
        }
    }

    /// Stream Abort of a whole transaction, Stream Prepare, or a Stream Commit the target
    /// already has: its speculation (if any) is dropped, which rolls the fork back.
    pub(super) fn give_up(&mut self, xid: u32) {
        if self.is_applying(xid) {
            self.spec = None;
        }
    }

    /// Stream Commit of `c`: commits its speculation, if one is (still) open, and waits until
    /// that is durable.
    pub(super) async fn commit(
        &mut self,
        c: &StreamCommit,
    ) -> Result<Option<Committed>, ApplyError> {
        let Some(mut spec) = self.spec.take_if(|s| s.xid == c.xid) else { return Ok(None) };
        spec.target.commit(&CommitInfo::from(c)).await?;
        // A fork's flush returns only once its COMMIT is durable, and that makes the main
        // session's earlier commits durable too: they are before it in the WAL.
        let durable = spec.target.flush().await?.unwrap_or(c.end_lsn);
        Ok(Some(Committed { durable, changes: spec.changes }))
    }
}

/// Awaits `op`, an operation of the main session. If a speculation is open and `op` waits
/// for one of its locks, or has not finished after the patience, the speculation is dropped
/// (its session rolls back, releasing whatever `op` may be waiting for), none is started
/// again, and `op` is awaited to its end. A speculation whose session fails meanwhile is
/// dropped too (it would hold its locks until rolled back).
pub(super) async fn watched<T: Target, F: Future>(ahead: &mut Ahead<T>, op: F) -> F::Output {
    let mut op = pin!(op);
    let Some(spec) = ahead.spec.as_mut() else { return op.await };
    let (xid, patience) = (spec.xid, ahead.patience);
    let stall = {
        let in_the_way = in_the_way(spec);
        tokio::select! {
            out = &mut op => return out,
            () = tokio::time::sleep(patience) => Ok(None),
            seen = in_the_way => seen.map(Some),
        }
    };
    ahead.spec = None;
    match stall {
        Ok(waited) => {
            ahead.forking = Forking::Stalled;
            let how = match waited {
                Some(waited) => format!(
                    "is waiting ({} ms so far) for a lock of the session applying streamed \
                     transaction {xid} ahead",
                    waited.as_millis()
                ),
                None => format!(
                    "has waited {} ms, possibly for the session applying streamed transaction \
                     {xid} ahead",
                    patience.as_millis()
                ),
            };
            tracing::warn!(
                xid,
                "the target's main session {how} (a unique index or trigger the primary \
                 lacks?): rolling that session back and applying streamed transactions at \
                 their commit from now on"
            );
        }
        Err(e) => abandon_log(xid, &e),
    }
    op.await
}

/// Resolves, with the time since the start, once the speculation's session reports that it
/// holds something the main session waits for, or with its error.
async fn in_the_way<T: Target>(spec: &mut Speculation<T>) -> Result<Duration, ApplyError> {
    let started = tokio::time::Instant::now();
    let mut pause = LOCK_CHECK_AFTER;
    loop {
        tokio::time::sleep(pause).await;
        if spec.target.blocks_parent().await? {
            return Ok(started.elapsed());
        }
        pause = LOCK_CHECK_EVERY;
    }
}

fn abandon_log(xid: u32, e: &ApplyError) {
    let mut error = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        error.push_str(": ");
        error.push_str(&s.to_string());
        source = s.source();
    }
    tracing::debug!(
        xid,
        error,
        "streamed transaction not applied ahead; replaying it at its commit"
    );
}
