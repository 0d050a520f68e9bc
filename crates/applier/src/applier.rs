//! The driver: turns the pgoutput message stream into [`Target`] calls.

mod positions;
mod relations;
mod speculate;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgoutput_decoder::{LogicalMessage, Lsn, Relation, StreamCommit};

use crate::error::ApplyError;
use crate::spill::Spill;
use crate::target::{Change, CommitInfo, Target, TxnInfo};
use positions::Positions;
use relations::Relations;
use speculate::{Ahead, watched};

/// When the applier asks the target to make its work durable, and how it buffers.
#[derive(Debug, Clone)]
pub struct ApplierConfig {
    /// Flush after this many changes since the last flush (bounds the target transaction).
    pub max_batch_rows: u64,
    /// Flush after roughly this many bytes of change data since the last flush.
    pub max_batch_bytes: usize,
    /// Flush when the oldest unflushed source commit is this old, even if the stream is busy.
    /// (When the caller finds the stream idle it calls [`Applier::idle`], which flushes at
    /// once.)
    pub max_batch_delay: Duration,
    /// How often to re-check durability of commits the target made asynchronously.
    pub durability_poll: Duration,
    /// In-memory budget per buffered (streamed or prepared) transaction; beyond it the
    /// transaction moves to a temporary file.
    pub spill_memory_limit: usize,
    /// Directory for spill files (default: the system temporary directory).
    pub spill_dir: Option<PathBuf>,
    /// How long an operation of the main target session may wait while a streamed
    /// transaction is applied ahead on a second session, before that second session is rolled
    /// back, the transaction left to its spill, and later ones applied at their commit too.
    /// A wait for the second session itself is seen long before (see
    /// [`Target::blocks_parent`]); this bounds a wait that goes through a third session.
    pub speculation_patience: Duration,
}

impl Default for ApplierConfig {
    fn default() -> Self {
        ApplierConfig {
            max_batch_rows: 200_000,
            max_batch_bytes: 64 << 20,
            max_batch_delay: Duration::from_millis(200),
            durability_poll: Duration::from_millis(100),
            spill_memory_limit: 4 << 20,
            spill_dir: None,
            speculation_patience: Duration::from_secs(30),
        }
    }
}

/// Counters, for progress reporting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyStats {
    /// Source transactions replayed into the target.
    pub applied_txns: u64,
    /// Source transactions skipped because the target already had them.
    pub skipped_txns: u64,
    /// Row changes (and truncates, messages) handed to the target.
    pub changes: u64,
    /// Target flushes.
    pub flushes: u64,
    /// Buffered transactions that outgrew memory and went to a temporary file.
    pub spilled_txns: u64,
    /// Streamed transactions applied on a second target session while they arrived (see
    /// [`Target::fork`]).
    pub speculated_txns: u64,
    /// Streamed transactions aborted on the source (dropped).
    pub aborted_txns: u64,
    /// Row changes skipped because a copy of their table taken later already held them.
    pub floored_changes: u64,
}

/// Where we are in the stream, outside stream blocks.
#[derive(Debug)]
enum Txn {
    /// Between transactions.
    None,
    /// Inside Begin..Commit; `skip` when the target already has it.
    Live { info: TxnInfo, skip: bool },
    /// Inside Begin Prepare..Prepare: buffered until COMMIT PREPARED.
    Preparing { xid: u32, gid: String, prepare_lsn: Lsn, spill: Spill },
}

/// A prepared transaction waiting for COMMIT/ROLLBACK PREPARED.
#[derive(Debug)]
struct Prepared {
    spill: Spill,
    prepare_lsn: Lsn,
}

/// Replays a pgoutput message stream into a [`Target`]. See the crate docs for the loop.
#[derive(Debug)]
pub struct Applier<T: Target> {
    target: T,
    cfg: ApplierConfig,
    relations: Relations,
    /// The target's stored progress, and what was applied, made durable and confirmed since.
    positions: Positions,
    txn: Txn,
    /// Top-level xid of the open Stream Start..Stop block.
    stream: Option<u32>,
    streams: HashMap<u32, Spill>,
    /// The streamed transaction being applied on a second session as it arrives.
    ahead: Ahead<T>,
    prepared: HashMap<String, Prepared>,
    /// Tables copied again under a snapshot (see [`Applier::set_table_floors`]): their
    /// changes in transactions committed before the floor are in the copy already.
    floors: HashMap<(String, String), Lsn>,
    /// The commit LSN of the transaction whose changes are being applied.
    applying: Option<Lsn>,
    pending_rows: u64,
    pending_bytes: usize,
    pending_commits: u64,
    pending_since: Option<Instant>,
    last_poll: Instant,
    stats: ApplyStats,
}

impl<T: Target> Applier<T> {
    /// Builds an applier and loads the target's stored progress.
    ///
    /// # Errors
    /// When the target cannot load its progress.
    pub async fn new(mut target: T, cfg: ApplierConfig) -> Result<Self, ApplyError> {
        let start_progress = target.load_progress().await?;
        let ahead = Ahead::new(cfg.speculation_patience);
        Ok(Applier {
            target,
            cfg,
            relations: Relations::default(),
            positions: Positions::new(start_progress),
            txn: Txn::None,
            stream: None,
            streams: HashMap::new(),
            ahead,
            prepared: HashMap::new(),
            floors: HashMap::new(),
            applying: None,
            pending_rows: 0,
            pending_bytes: 0,
            pending_commits: 0,
            pending_since: None,
            last_poll: Instant::now(),
            stats: ApplyStats::default(),
        })
    }

    /// The progress the target had when the applier started (transactions ending at or before
    /// it are skipped).
    pub fn start_progress(&self) -> Option<Lsn> {
        self.positions.stored()
    }

    /// Tables whose rows were copied again under a snapshot taken at a floor LSN (a table
    /// added to the publication, or resynchronised): their changes in transactions committed
    /// before the floor are already in that copy and are skipped; later ones are applied.
    /// Keyed by (schema, table) as the source names them. Streamed transactions are then no
    /// longer applied ahead of their commit, since whether they reach a table depends on
    /// their commit LSN.
    pub fn set_table_floors(&mut self, floors: HashMap<(String, String), Lsn>) {
        self.floors = floors;
        if !self.floors.is_empty() {
            self.ahead.stop_forking();
        }
    }

    /// Changes skipped because a table's copy already held them (see
    /// [`set_table_floors`](Self::set_table_floors)).
    pub fn floored_changes(&self) -> u64 {
        self.stats.floored_changes
    }

    /// End LSN of the last source transaction handed to the target (maybe not yet durable).
    pub fn last_applied(&self) -> Option<Lsn> {
        self.positions.last_applied()
    }

    /// The last LSN returned as durable (confirmable).
    pub fn confirmed(&self) -> Option<Lsn> {
        self.positions.confirmed()
    }

    /// Counters so far.
    pub fn stats(&self) -> &ApplyStats {
        &self.stats
    }

    /// The target.
    pub fn target(&self) -> &T {
        &self.target
    }

    /// The target, mutably (e.g. to read its own statistics).
    pub fn target_mut(&mut self) -> &mut T {
        &mut self.target
    }

    /// Gives the target back.
    pub fn into_target(self) -> T {
        self.target
    }

    /// Whether nothing is pending: no open or buffered transaction and everything applied is
    /// confirmed durable (so nothing is due either: [`next_deadline`](Self::next_deadline) is
    /// `None`). Only then may a caller confirm a keepalive's `wal_end` directly, or call itself
    /// caught up.
    pub fn is_quiescent(&self) -> bool {
        matches!(self.txn, Txn::None)
            && self.stream.is_none()
            && self.streams.is_empty()
            && !self.ahead.is_open()
            && self.prepared.is_empty()
            && self.pending_commits == 0
            && self.positions.all_confirmed()
    }

    /// Whether the stream is between transactions: no Begin..Commit open and no Stream
    /// Start..Stop block open. Buffered streamed or prepared transactions may still be pending;
    /// the primary sends them again after a restart because they are not confirmed. A clean
    /// stop waits for this.
    pub fn is_between_transactions(&self) -> bool {
        matches!(self.txn, Txn::None) && self.stream.is_none()
    }

    /// Whether commits are grouped in the target's open transaction, waiting for a flush
    /// (as opposed to flushed commits waiting only to become durable).
    pub fn holds_unflushed_commits(&self) -> bool {
        self.pending_since.is_some()
    }

    /// When the caller should call [`idle`](Self::idle) at the latest, even if messages keep
    /// arriving: the batch delay of unflushed commits, or the next durability check.
    pub fn next_deadline(&self) -> Option<Instant> {
        if let Some(since) = self.pending_since {
            return Some(since + self.cfg.max_batch_delay);
        }
        if self.positions.awaits_durability() {
            return Some(self.last_poll + self.cfg.durability_poll);
        }
        None
    }

    /// Handles one message in stream order. Returns `Some(lsn)` when a flush made a new source
    /// LSN durable: confirm it to the primary.
    ///
    /// # Errors
    /// Protocol violations, unknown relations, target errors. After an error, drop the
    /// applier and its target and restart from the slot.
    pub async fn handle(&mut self, msg: LogicalMessage) -> Result<Option<Lsn>, ApplyError> {
        if let Some(top) = self.stream {
            return self.handle_in_stream(top, msg).await;
        }
        match msg {
            LogicalMessage::Begin(b) => {
                self.expect_no_txn("Begin")?;
                let info = TxnInfo {
                    xid: b.xid,
                    commit_lsn: b.final_lsn,
                    commit_time: b.commit_time,
                    streamed: false,
                    gid: None,
                };
                let skip = self.positions.holds(b.final_lsn);
                if !skip {
                    watched(&mut self.ahead, self.target.begin(&info)).await?;
                }
                self.applying = Some(b.final_lsn);
                self.txn = Txn::Live { info, skip };
                Ok(None)
            }
            LogicalMessage::Commit(c) => {
                let Txn::Live { info, skip } = std::mem::replace(&mut self.txn, Txn::None) else {
                    return Err(ApplyError::protocol("Commit", "outside a transaction"));
                };
                if skip {
                    self.stats.skipped_txns += 1;
                    return Ok(None);
                }
                let commit = CommitInfo {
                    xid: info.xid,
                    commit_lsn: c.commit_lsn,
                    end_lsn: c.end_lsn,
                    commit_time: c.commit_time,
                };
                watched(&mut self.ahead, self.target.commit(&commit)).await?;
                self.committed(commit.end_lsn);
                self.maybe_flush().await
            }
            LogicalMessage::Origin(_) => Ok(None),
            LogicalMessage::Relation(r) => {
                let rel = self.relations.described(r);
                match &mut self.txn {
                    Txn::Preparing { spill, .. } => {
                        spill.push(&LogicalMessage::Relation((*rel).clone()), None)?;
                    }
                    // The target's schema is ahead of a transaction it already has.
                    Txn::Live { skip: true, .. } => {}
                    _ => {
                        let op = self.target.relation(&rel, self.relations.types());
                        watched(&mut self.ahead, op).await?;
                    }
                }
                Ok(None)
            }
            LogicalMessage::Type(t) => {
                if let Txn::Preparing { spill, .. } = &mut self.txn {
                    spill.push(&LogicalMessage::Type(t.clone()), None)?;
                }
                self.relations.announced(t);
                Ok(None)
            }
            LogicalMessage::Message(m) if !m.transactional => {
                watched(&mut self.ahead, self.target.message(&m)).await?;
                Ok(None)
            }
            m @ (LogicalMessage::Insert(_)
            | LogicalMessage::Update(_)
            | LogicalMessage::Delete(_)
            | LogicalMessage::Truncate(_)
            | LogicalMessage::Message(_)) => {
                match &mut self.txn {
                    Txn::Live { skip: true, .. } => {}
                    Txn::Live { skip: false, .. } => {
                        let change = self.relations.change(m, None)?;
                        self.apply_change(change).await?;
                    }
                    Txn::Preparing { spill, .. } => {
                        let was_spilled = spill.is_spilled();
                        spill.push(&m, None)?;
                        if !was_spilled && spill.is_spilled() {
                            self.stats.spilled_txns += 1;
                        }
                    }
                    Txn::None => {
                        return Err(ApplyError::protocol(msg_name(&m), "outside a transaction"));
                    }
                }
                Ok(None)
            }
            LogicalMessage::StreamStart(s) => {
                self.expect_no_txn("Stream Start")?;
                self.stream = Some(s.xid);
                let limit = self.cfg.spill_memory_limit;
                let dir = self.cfg.spill_dir.clone();
                self.streams.entry(s.xid).or_insert_with(|| Spill::new(true, limit, dir));
                self.stream_start(s.xid, s.first_segment).await
            }
            LogicalMessage::StreamStop => {
                Err(ApplyError::protocol("Stream Stop", "outside a stream block"))
            }
            LogicalMessage::StreamAbort(a) => {
                if a.xid == a.subxid {
                    self.ahead.give_up(a.xid);
                    self.relations.forget(a.xid);
                    if self.streams.remove(&a.xid).is_some() {
                        self.stats.aborted_txns += 1;
                    }
                } else if let Some(spill) = self.streams.get_mut(&a.xid) {
                    spill.abort_subxact(a.subxid)?;
                    self.ahead.abort_subtransaction(a.xid, a.subxid).await;
                }
                Ok(None)
            }
            LogicalMessage::StreamCommit(c) => {
                self.expect_no_txn("Stream Commit")?;
                self.relations.adopt(c.xid);
                if let Some(confirm) = self.commit_ahead(&c).await? {
                    return Ok(confirm);
                }
                let spill = self.streams.remove(&c.xid);
                let info = TxnInfo {
                    xid: c.xid,
                    commit_lsn: c.commit_lsn,
                    commit_time: c.commit_time,
                    streamed: true,
                    gid: None,
                };
                self.replay(spill, info, CommitInfo::from(&c)).await
            }
            LogicalMessage::BeginPrepare(b) => {
                self.expect_no_txn("Begin Prepare")?;
                self.txn = Txn::Preparing {
                    xid: b.xid,
                    gid: b.gid,
                    prepare_lsn: b.prepare_lsn,
                    spill: Spill::new(
                        false,
                        self.cfg.spill_memory_limit,
                        self.cfg.spill_dir.clone(),
                    ),
                };
                Ok(None)
            }
            LogicalMessage::Prepare(p) => {
                let Txn::Preparing { gid, prepare_lsn, spill, .. } =
                    std::mem::replace(&mut self.txn, Txn::None)
                else {
                    return Err(ApplyError::protocol("Prepare", "without Begin Prepare"));
                };
                if gid != p.gid {
                    return Err(ApplyError::protocol(
                        "Prepare",
                        format!("for {:?} inside {gid:?}", p.gid),
                    ));
                }
                self.prepared.insert(gid, Prepared { spill, prepare_lsn });
                Ok(None)
            }
            LogicalMessage::StreamPrepare(p) => {
                self.expect_no_txn("Stream Prepare")?;
                self.ahead.give_up(p.xid);
                self.relations.adopt(p.xid);
                let spill = self.streams.remove(&p.xid).unwrap_or_else(|| {
                    Spill::new(true, self.cfg.spill_memory_limit, self.cfg.spill_dir.clone())
                });
                self.prepared.insert(p.gid, Prepared { spill, prepare_lsn: p.prepare_lsn });
                Ok(None)
            }
            LogicalMessage::CommitPrepared(c) => {
                self.expect_no_txn("Commit Prepared")?;
                let prepared = self.prepared.remove(&c.gid);
                let already = self.positions.holds(c.commit_lsn);
                if prepared.is_none() && !already {
                    return Err(ApplyError::UnknownPrepared { gid: c.gid, end_lsn: c.end_lsn });
                }
                let info = TxnInfo {
                    xid: c.xid,
                    commit_lsn: c.commit_lsn,
                    commit_time: c.commit_time,
                    streamed: false,
                    gid: Some(c.gid),
                };
                let commit = CommitInfo {
                    xid: c.xid,
                    commit_lsn: c.commit_lsn,
                    end_lsn: c.end_lsn,
                    commit_time: c.commit_time,
                };
                self.replay(prepared.map(|p| p.spill), info, commit).await
            }
            LogicalMessage::RollbackPrepared(r) => {
                if self.prepared.remove(&r.gid).is_some() {
                    self.stats.aborted_txns += 1;
                }
                // It no longer holds the confirmation back at its PREPARE.
                Ok(self.report())
            }
            other => {
                tracing::debug!(tag = other.tag(), "ignoring message");
                Ok(None)
            }
        }
    }

    /// Inside a Stream Start..Stop block: everything is buffered for the top-level xid.
    async fn handle_in_stream(
        &mut self,
        top: u32,
        msg: LogicalMessage,
    ) -> Result<Option<Lsn>, ApplyError> {
        match msg {
            LogicalMessage::StreamStop => {
                self.stream = None;
                Ok(None)
            }
            LogicalMessage::Message(m) if !m.transactional => {
                watched(&mut self.ahead, self.target.message(&m)).await?;
                Ok(None)
            }
            m @ (LogicalMessage::Relation(_)
            | LogicalMessage::Type(_)
            | LogicalMessage::Insert(_)
            | LogicalMessage::Update(_)
            | LogicalMessage::Delete(_)
            | LogicalMessage::Truncate(_)
            | LogicalMessage::Message(_)) => {
                if let LogicalMessage::Relation(r) = &m {
                    self.relations.described_in_stream(top, r);
                }
                let xid = m.stream_xid();
                let spill = self.streams.get_mut(&top).ok_or_else(|| {
                    ApplyError::protocol(msg_name(&m), "in a stream block that was not started")
                })?;
                let was_spilled = spill.is_spilled();
                spill.push(&m, xid)?;
                if !was_spilled && spill.is_spilled() {
                    self.stats.spilled_txns += 1;
                }
                self.ahead.apply(top, &m, &mut self.relations).await;
                Ok(None)
            }
            LogicalMessage::Origin(_) => Ok(None),
            other => Err(ApplyError::protocol(msg_name(&other), "inside a stream block")),
        }
    }

    /// Replays a buffered transaction at its commit (or skips it if the target has it).
    async fn replay(
        &mut self,
        spill: Option<Spill>,
        info: TxnInfo,
        commit: CommitInfo,
    ) -> Result<Option<Lsn>, ApplyError> {
        if self.positions.holds(commit.commit_lsn) {
            self.stats.skipped_txns += 1;
            return Ok(None);
        }
        watched(&mut self.ahead, self.target.begin(&info)).await?;
        self.applying = Some(commit.commit_lsn);
        if let Some(spill) = spill {
            let mut reader = spill.into_reader()?;
            // Relation messages inside a buffered transaction describe the relation as that
            // transaction saw it; they must not overwrite the cache later transactions use.
            let mut overlay: HashMap<u32, Arc<Relation>> = HashMap::new();
            while let Some(m) = reader.next_message()? {
                match m {
                    LogicalMessage::Relation(r) => {
                        let rel = Arc::new(r);
                        let op = self.target.relation(&rel, self.relations.types());
                        watched(&mut self.ahead, op).await?;
                        overlay.insert(rel.rel_id, rel);
                    }
                    LogicalMessage::Type(t) => self.relations.announced(t),
                    m @ (LogicalMessage::Insert(_)
                    | LogicalMessage::Update(_)
                    | LogicalMessage::Delete(_)
                    | LogicalMessage::Truncate(_)
                    | LogicalMessage::Message(_)) => {
                        let change = self.relations.change(m, Some(&overlay))?;
                        self.apply_change(change).await?;
                    }
                    _ => {}
                }
            }
        }
        watched(&mut self.ahead, self.target.commit(&commit)).await?;
        self.committed(commit.end_lsn);
        self.maybe_flush().await
    }

    async fn apply_change(&mut self, change: Change) -> Result<(), ApplyError> {
        let Some(change) = self.above_floors(change) else {
            self.stats.floored_changes += 1;
            return Ok(());
        };
        self.pending_rows += 1;
        self.pending_bytes += change.approx_bytes();
        self.stats.changes += 1;
        watched(&mut self.ahead, self.target.change(change)).await
    }

    /// `change` without what a table's copy already holds: `None` when nothing is left.
    fn above_floors(&self, change: Change) -> Option<Change> {
        if self.floors.is_empty() {
            return Some(change);
        }
        let commit = self.applying.unwrap_or(Lsn::ZERO);
        let held = |rel: &Relation| {
            self.floors
                .get(&(rel.namespace.clone(), rel.name.clone()))
                .is_some_and(|floor| commit < *floor)
        };
        match change {
            Change::Insert { ref rel, .. }
            | Change::Update { ref rel, .. }
            | Change::Delete { ref rel, .. }
                if held(rel) =>
            {
                None
            }
            Change::Truncate { rels, cascade, restart_identity } => {
                let rels: Vec<_> = rels.into_iter().filter(|r| !held(r)).collect();
                (!rels.is_empty()).then_some(Change::Truncate { rels, cascade, restart_identity })
            }
            other => Some(other),
        }
    }

    /// A source transaction ending at `end_lsn` was committed on the target, to be flushed.
    fn committed(&mut self, end_lsn: Lsn) {
        self.applied(end_lsn);
        self.pending_commits += 1;
        self.pending_since.get_or_insert_with(Instant::now);
    }

    fn applied(&mut self, end_lsn: Lsn) {
        self.stats.applied_txns += 1;
        self.positions.applied(end_lsn);
    }

    /// At Stream Start of `xid`: before a chunk of a transaction applied ahead, or the first
    /// chunk of one that starts being applied ahead, the main session commits what it holds
    /// (see `speculate.rs`). Returns an LSN to confirm, if that made one durable.
    async fn stream_start(
        &mut self,
        xid: u32,
        first_segment: bool,
    ) -> Result<Option<Lsn>, ApplyError> {
        let Some(start) = self.ahead.at_stream_start(xid, first_segment) else { return Ok(None) };
        let confirm = if self.pending_commits > 0 { self.flush().await? } else { None };
        if start {
            self.ahead.open(&mut self.target, xid).await;
        }
        Ok(confirm)
    }

    /// Stream Commit of a transaction applied ahead: commits the main session's earlier work,
    /// then the transaction on its fork. `None` when `c` is not being applied ahead (the
    /// caller replays its spill); `Some(lsn to confirm)` when it is done.
    async fn commit_ahead(&mut self, c: &StreamCommit) -> Result<Option<Option<Lsn>>, ApplyError> {
        if !self.ahead.is_applying(c.xid) {
            return Ok(None);
        }
        if self.positions.holds(c.commit_lsn) {
            // The target had it already (sent again after a restart): roll the copy back.
            self.ahead.give_up(c.xid);
            self.streams.remove(&c.xid);
            self.stats.skipped_txns += 1;
            return Ok(Some(None));
        }
        if self.pending_commits > 0 {
            // Watched: this may give the speculation up, and then the spill is replayed.
            self.flush().await?;
        }
        let Some(done) = self.ahead.commit(c).await? else { return Ok(None) };
        self.streams.remove(&c.xid);
        self.applied(c.end_lsn);
        self.stats.speculated_txns += 1;
        self.stats.changes += done.changes;
        self.positions.durable(done.durable);
        Ok(Some(self.report()))
    }

    async fn maybe_flush(&mut self) -> Result<Option<Lsn>, ApplyError> {
        let due = self.pending_rows >= self.cfg.max_batch_rows
            || self.pending_bytes >= self.cfg.max_batch_bytes
            || self.pending_since.is_some_and(|s| s.elapsed() >= self.cfg.max_batch_delay);
        if due { self.flush().await } else { Ok(None) }
    }

    /// Call when the stream is idle (when that is, is the caller's to judge: it sees the stream)
    /// and at [`next_deadline`](Self::next_deadline): commits grouped work at once so it
    /// becomes visible, and re-checks durability of earlier asynchronous commits. Returns a
    /// newly durable LSN to confirm, if any.
    ///
    /// # Errors
    /// Target errors.
    pub async fn idle(&mut self) -> Result<Option<Lsn>, ApplyError> {
        if matches!(self.txn, Txn::Live { .. }) {
            return Ok(None); // mid-transaction: the rest of it is on its way
        }
        if self.pending_commits > 0 {
            return self.flush().await;
        }
        if self.positions.awaits_durability()
            && self.last_poll.elapsed() >= self.cfg.durability_poll
        {
            return self.flush().await;
        }
        Ok(None)
    }

    /// Makes everything applied so far durable now (between transactions; inside a live
    /// transaction it does nothing) and returns a newly durable LSN to confirm, if any.
    ///
    /// # Errors
    /// Target errors.
    pub async fn flush(&mut self) -> Result<Option<Lsn>, ApplyError> {
        if matches!(self.txn, Txn::Live { .. }) {
            return Ok(None);
        }
        let durable = watched(&mut self.ahead, self.target.flush()).await?;
        self.last_poll = Instant::now();
        if self.pending_commits > 0 {
            self.stats.flushes += 1;
        }
        self.pending_rows = 0;
        self.pending_bytes = 0;
        self.pending_commits = 0;
        self.pending_since = None;
        if let Some(d) = durable {
            self.positions.durable(d);
        }
        Ok(self.report())
    }

    /// The durable LSN, held back to the oldest prepared transaction we only hold in our own
    /// buffers: confirming past its PREPARE would stop the primary from sending it again.
    fn report(&mut self) -> Option<Lsn> {
        let preparing = match &self.txn {
            Txn::Preparing { prepare_lsn, .. } => Some(*prepare_lsn),
            _ => None,
        };
        let hold = self.prepared.values().map(|p| p.prepare_lsn).chain(preparing).min();
        self.positions.confirm(hold)
    }

    fn expect_no_txn(&self, message: &'static str) -> Result<(), ApplyError> {
        match &self.txn {
            Txn::None => Ok(()),
            Txn::Live { info, .. } => {
                Err(ApplyError::protocol(message, format!("inside transaction {}", info.xid)))
            }
            Txn::Preparing { xid, .. } => {
                Err(ApplyError::protocol(message, format!("inside prepared transaction {xid}")))
            }
        }
    }
}

fn msg_name(m: &LogicalMessage) -> &'static str {
    match m {
        LogicalMessage::Begin(_) => "Begin",
        LogicalMessage::Commit(_) => "Commit",
        LogicalMessage::Origin(_) => "Origin",
        LogicalMessage::Relation(_) => "Relation",
        LogicalMessage::Type(_) => "Type",
        LogicalMessage::Insert(_) => "Insert",
        LogicalMessage::Update(_) => "Update",
        LogicalMessage::Delete(_) => "Delete",
        LogicalMessage::Truncate(_) => "Truncate",
        LogicalMessage::Message(_) => "Message",
        LogicalMessage::StreamStart(_) => "Stream Start",
        LogicalMessage::StreamStop => "Stream Stop",
        LogicalMessage::StreamCommit(_) => "Stream Commit",
        LogicalMessage::StreamAbort(_) => "Stream Abort",
        LogicalMessage::BeginPrepare(_) => "Begin Prepare",
        LogicalMessage::Prepare(_) => "Prepare",
        LogicalMessage::CommitPrepared(_) => "Commit Prepared",
        LogicalMessage::RollbackPrepared(_) => "Rollback Prepared",
        LogicalMessage::StreamPrepare(_) => "Stream Prepare",
        _ => "unknown",
    }
}
