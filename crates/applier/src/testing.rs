//! Test support: a [`Target`] that applies nothing and records every call, and builders for
//! the pgoutput messages the applier is fed.
//!
//! The applier's state machine (grouping, dedupe, streamed and prepared transactions,
//! confirmation, speculation) is driven here without a server; what the calls do to a real
//! database is tested against PostgreSQL in `tests/postgres/`.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use pgoutput_decoder::{
    Begin, BeginPrepare, ColumnValue, Commit, CommitPrepared, DecodingMessage, Delete, Insert,
    LogicalMessage, Lsn, OldTuple, PgTimestamp, Prepare, Relation, RelationColumn, ReplicaIdentity,
    RollbackPrepared, StreamAbort, StreamCommit, StreamStart, Truncate, Tuple,
};

use crate::error::ApplyError;
use crate::target::{Change, CommitInfo, Target, TxnInfo, TypeMap};

/// How a [`RecordingTarget`] (and the sessions it forks) behaves.
#[derive(Debug, Clone, Default)]
pub(crate) struct Script {
    /// What `load_progress` returns: the progress a previous run stored.
    pub progress: Option<Lsn>,
    /// Whether `fork` offers a second session.
    pub forks: bool,
    /// `fork` fails (a second connection cannot be opened).
    pub fork_fails: bool,
    /// A forked session fails on a change to this table (schema drift it does not repair).
    pub fork_fails_on: Option<String>,
    /// The main session's change to this table waits until no forked session is left (a lock
    /// a forked session holds, through a unique index the source lacks).
    pub main_waits_for_forks_on: Option<String>,
    /// The main session's change to this table takes this long (waits for someone else).
    pub main_slow_on: Option<(String, Duration)>,
    /// What a forked session answers to `blocks_parent`.
    pub fork_blocks_main: bool,
    /// A forked session refuses to begin more subtransactions than this (as the PostgreSQL
    /// target refuses more than its savepoint limit).
    pub max_subtransactions: Option<usize>,
}

#[derive(Debug, Default)]
struct Shared {
    calls: Vec<String>,
    forks_made: u32,
    forks_alive: u32,
    /// The main session's commits are durable up to here (`None`: all of them).
    durable_cap: Option<Lsn>,
}

/// The test's view of a [`RecordingTarget`] and its forks: the calls so far, and the
/// durability of the main session's commits.
#[derive(Debug, Clone)]
pub(crate) struct Log(Arc<Mutex<Shared>>);

impl Log {
    /// The calls recorded since the last `take`, oldest first.
    pub(crate) fn take(&self) -> Vec<String> {
        std::mem::take(&mut lock(&self.0).calls)
    }

    /// From now on the main session's flush makes its commits durable only up to `cap`
    /// (asynchronous commit not yet flushed); `None` again: all of them.
    pub(crate) fn set_durable_cap(&self, cap: Option<Lsn>) {
        lock(&self.0).durable_cap = cap;
    }

    /// Forked sessions not dropped yet.
    pub(crate) fn forks_alive(&self) -> u32 {
        lock(&self.0).forks_alive
    }
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A [`Target`] that records each call as one line of text: `begin 7 at 0/100`,
/// `insert t 1`, `commit 7 end 0/108`, `flush -> 0/108`; a forked session's lines start with
/// its name (`fork1: `). A forked session dropped with its transaction open records
/// `fork1: rolled back`.
#[derive(Debug)]
pub(crate) struct RecordingTarget {
    /// `None` for the main session, else the fork's name.
    name: Option<String>,
    /// This session's number (0 for the main session), by which its forks name it.
    session: u32,
    /// A fork's parent session.
    parent: Option<u32>,
    shared: Arc<Mutex<Shared>>,
    script: Arc<Script>,
    /// The source transaction begun and not yet committed.
    open: Option<u32>,
    /// End LSNs committed on this session.
    commits: Vec<Lsn>,
    /// Subtransactions begun in the open transaction, oldest first.
    subtransactions: Vec<u32>,
}

impl RecordingTarget {
    /// The main session, and the log it and its forks write to.
    pub(crate) fn new(script: Script) -> (Self, Log) {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let target = RecordingTarget {
            name: None,
            session: 0,
            parent: None,
            shared: Arc::clone(&shared),
            script: Arc::new(script),
            open: None,
            commits: Vec::new(),
            subtransactions: Vec::new(),
        };
        (target, Log(shared))
    }

    fn record(&self, call: impl std::fmt::Display) {
        let line = match &self.name {
            Some(name) => format!("{name}: {call}"),
            None => call.to_string(),
        };
        lock(&self.shared).calls.push(line);
    }

    fn is_fork(&self) -> bool {
        self.name.is_some()
    }

    /// Waits, as the script says, before a main-session change to `table` completes.
    async fn main_session_wait(&self, table: &str) {
        if self.is_fork() {
            return;
        }
        if self.script.main_waits_for_forks_on.as_deref() == Some(table) {
            while lock(&self.shared).forks_alive > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        if let Some((slow, pause)) = &self.script.main_slow_on
            && slow == table
        {
            tokio::time::sleep(*pause).await;
        }
    }
}

impl Drop for RecordingTarget {
    fn drop(&mut self) {
        if !self.is_fork() {
            return;
        }
        if self.open.is_some() {
            self.record("rolled back");
        }
        lock(&self.shared).forks_alive -= 1;
    }
}

/// The row's `id`.
fn values(t: &Tuple) -> &str {
    t.get(0).and_then(|c| c.as_str()).unwrap_or("?")
}

/// One change as a line: `insert t 1`, `update t 2`, `delete t 3`, `truncate t,u`,
/// `message prefix`.
fn describe(change: &Change) -> (String, Vec<String>) {
    match change {
        Change::Insert { rel, new } => {
            (format!("insert {} {}", rel.name, values(new)), vec![rel.name.clone()])
        }
        Change::Update { rel, new, .. } => {
            (format!("update {} {}", rel.name, values(new)), vec![rel.name.clone()])
        }
        Change::Delete { rel, old } => {
            (format!("delete {} {}", rel.name, values(old.tuple())), vec![rel.name.clone()])
        }
        Change::Truncate { rels, .. } => {
            let names: Vec<String> = rels.iter().map(|r| r.name.clone()).collect();
            (format!("truncate {}", names.join(",")), names)
        }
        Change::Message(m) => (format!("message {}", m.prefix), Vec::new()),
    }
}

impl Target for RecordingTarget {
    async fn load_progress(&mut self) -> Result<Option<Lsn>, ApplyError> {
        self.record("load_progress");
        Ok(self.script.progress)
    }

    async fn begin(&mut self, txn: &TxnInfo) -> Result<(), ApplyError> {
        let mut line = format!("begin {} at {}", txn.xid, txn.commit_lsn);
        if txn.streamed {
            line.push_str(" streamed");
        }
        if let Some(gid) = &txn.gid {
            line.push_str(&format!(" gid {gid}"));
        }
        self.record(line);
        self.open = Some(txn.xid);
        Ok(())
    }

    async fn relation(&mut self, rel: &Arc<Relation>, _types: &TypeMap) -> Result<(), ApplyError> {
        self.record(format!("relation {}", rel.name));
        Ok(())
    }

    async fn change(&mut self, change: Change) -> Result<(), ApplyError> {
        let (line, tables) = describe(&change);
        self.record(&line);
        if self.is_fork()
            && let Some(bad) = &self.script.fork_fails_on
            && tables.contains(bad)
        {
            return Err(ApplyError::Schema { table: bad.clone(), detail: "drifted".into() });
        }
        for table in &tables {
            self.main_session_wait(table).await;
        }
        Ok(())
    }

    async fn commit(&mut self, commit: &CommitInfo) -> Result<(), ApplyError> {
        self.record(format!("commit {} end {}", commit.xid, commit.end_lsn));
        self.open = None;
        self.subtransactions.clear();
        self.commits.push(commit.end_lsn);
        Ok(())
    }

    async fn flush(&mut self) -> Result<Option<Lsn>, ApplyError> {
        // A fork commits synchronously; the main session as far as the test lets it.
        let cap = if self.is_fork() { None } else { lock(&self.shared).durable_cap };
        let durable = self.commits.iter().copied().filter(|&l| cap.is_none_or(|c| l <= c)).max();
        self.record(format!("flush -> {}", durable.map_or("none".into(), |l| l.to_string())));
        Ok(durable)
    }

    async fn fork(&mut self) -> Result<Option<Self>, ApplyError> {
        if self.script.fork_fails {
            self.record("fork -> error");
            return Err(ApplyError::Connect("connection refused".into()));
        }
        if !self.script.forks {
            self.record("fork -> none");
            return Ok(None);
        }
        let n = {
            let mut shared = lock(&self.shared);
            shared.forks_made += 1;
            shared.forks_alive += 1;
            shared.forks_made
        };
        let name = format!("fork{n}");
        self.record(format!("fork -> {name}"));
        Ok(Some(RecordingTarget {
            name: Some(name),
            session: n,
            parent: Some(self.session),
            shared: Arc::clone(&self.shared),
            script: Arc::clone(&self.script),
            open: None,
            commits: Vec::new(),
            subtransactions: Vec::new(),
        }))
    }

    async fn blocks_parent(&mut self) -> Result<bool, ApplyError> {
        let blocks = self.script.fork_blocks_main;
        let parent = self.parent.map_or("none".into(), |p| p.to_string());
        self.record(format!("blocks parent {parent}? {blocks}"));
        Ok(blocks)
    }

    async fn begin_subtransaction(&mut self, subxid: u32) -> Result<(), ApplyError> {
        if self.script.max_subtransactions.is_some_and(|max| self.subtransactions.len() >= max) {
            return Err(ApplyError::Unsupported("this many subtransactions"));
        }
        self.subtransactions.push(subxid);
        self.record(format!("savepoint {subxid}"));
        Ok(())
    }

    async fn abort_subtransaction(&mut self, subxid: u32) -> Result<(), ApplyError> {
        if let Some(i) = self.subtransactions.iter().position(|&x| x == subxid) {
            self.subtransactions.truncate(i + 1);
        }
        self.record(format!("rollback to {subxid}"));
        Ok(())
    }

    async fn message(&mut self, msg: &DecodingMessage) -> Result<(), ApplyError> {
        self.record(format!("non-transactional message {}", msg.prefix));
        Ok(())
    }
}

// Message builders. Every relation has two text columns, `id` (the key) and `v`; changes
// carry only their `id` column's value in the recorded line.

pub(crate) fn lsn(v: u64) -> Lsn {
    Lsn(v)
}

fn time() -> PgTimestamp {
    PgTimestamp(0)
}

fn row(id: &str) -> Tuple {
    Tuple::new(vec![ColumnValue::Text(Bytes::copy_from_slice(id.as_bytes())), ColumnValue::Null])
}

/// Relation `rel_id` named `name` (in schema `public`); `xid` inside a stream block.
pub(crate) fn relation(xid: Option<u32>, rel_id: u32, name: &str) -> LogicalMessage {
    let col = |name: &str, is_key| RelationColumn {
        is_key,
        name: name.into(),
        type_oid: 25,
        type_modifier: -1,
    };
    LogicalMessage::Relation(Relation {
        xid,
        rel_id,
        namespace: "public".into(),
        name: name.into(),
        replica_identity: ReplicaIdentity::Default,
        columns: vec![col("id", true), col("v", false)],
    })
}

pub(crate) fn insert(xid: Option<u32>, rel_id: u32, id: &str) -> LogicalMessage {
    LogicalMessage::Insert(Insert { xid, rel_id, new: row(id) })
}

pub(crate) fn delete(xid: Option<u32>, rel_id: u32, id: &str) -> LogicalMessage {
    LogicalMessage::Delete(Delete { xid, rel_id, old: OldTuple::Key(row(id)) })
}

pub(crate) fn truncate(xid: Option<u32>, rel_ids: &[u32]) -> LogicalMessage {
    LogicalMessage::Truncate(Truncate {
        xid,
        cascade: false,
        restart_identity: false,
        rel_ids: rel_ids.to_vec(),
    })
}

pub(crate) fn message(xid: Option<u32>, transactional: bool, prefix: &str) -> LogicalMessage {
    LogicalMessage::Message(DecodingMessage {
        xid,
        transactional,
        lsn: Lsn::ZERO,
        prefix: prefix.into(),
        content: Bytes::new(),
    })
}

pub(crate) fn begin(xid: u32, final_lsn: u64) -> LogicalMessage {
    LogicalMessage::Begin(Begin { final_lsn: lsn(final_lsn), commit_time: time(), xid })
}

pub(crate) fn commit(commit_lsn: u64, end_lsn: u64) -> LogicalMessage {
    LogicalMessage::Commit(Commit {
        flags: 0,
        commit_lsn: lsn(commit_lsn),
        end_lsn: lsn(end_lsn),
        commit_time: time(),
    })
}

/// A whole transaction: Begin at `commit_lsn`, `changes`, Commit ending 8 bytes later.
pub(crate) fn txn(xid: u32, commit_lsn: u64, changes: Vec<LogicalMessage>) -> Vec<LogicalMessage> {
    let mut msgs = vec![begin(xid, commit_lsn)];
    msgs.extend(changes);
    msgs.push(commit(commit_lsn, commit_lsn + 8));
    msgs
}

pub(crate) fn stream_start(xid: u32, first_segment: bool) -> LogicalMessage {
    LogicalMessage::StreamStart(StreamStart { xid, first_segment })
}

/// One Stream Start..Stop block of transaction `xid` holding `changes`.
pub(crate) fn stream_block(
    xid: u32,
    first_segment: bool,
    changes: Vec<LogicalMessage>,
) -> Vec<LogicalMessage> {
    let mut msgs = vec![stream_start(xid, first_segment)];
    msgs.extend(changes);
    msgs.push(LogicalMessage::StreamStop);
    msgs
}

/// Stream Commit of `xid` at `commit_lsn`, ending 8 bytes later.
pub(crate) fn stream_commit(xid: u32, commit_lsn: u64) -> LogicalMessage {
    LogicalMessage::StreamCommit(StreamCommit {
        xid,
        flags: 0,
        commit_lsn: lsn(commit_lsn),
        end_lsn: lsn(commit_lsn + 8),
        commit_time: time(),
    })
}

/// Stream Abort of `subxid` (the whole transaction when it is `xid`).
pub(crate) fn stream_abort(xid: u32, subxid: u32) -> LogicalMessage {
    LogicalMessage::StreamAbort(StreamAbort { xid, subxid, abort_lsn: None, abort_time: None })
}

fn prepare_body(xid: u32, gid: &str, prepare_lsn: u64) -> Prepare {
    Prepare {
        flags: 0,
        prepare_lsn: lsn(prepare_lsn),
        end_lsn: lsn(prepare_lsn + 8),
        prepare_time: time(),
        xid,
        gid: gid.into(),
    }
}

/// Begin Prepare, `changes`, Prepare: transaction `xid` prepared as `gid` at `prepare_lsn`.
pub(crate) fn prepared(
    xid: u32,
    gid: &str,
    prepare_lsn: u64,
    changes: Vec<LogicalMessage>,
) -> Vec<LogicalMessage> {
    let mut msgs = vec![LogicalMessage::BeginPrepare(BeginPrepare {
        prepare_lsn: lsn(prepare_lsn),
        end_lsn: lsn(prepare_lsn + 8),
        prepare_time: time(),
        xid,
        gid: gid.into(),
    })];
    msgs.extend(changes);
    msgs.push(LogicalMessage::Prepare(prepare_body(xid, gid, prepare_lsn)));
    msgs
}

/// Stream Prepare of streamed transaction `xid` as `gid` at `prepare_lsn`.
pub(crate) fn stream_prepare(xid: u32, gid: &str, prepare_lsn: u64) -> LogicalMessage {
    LogicalMessage::StreamPrepare(prepare_body(xid, gid, prepare_lsn))
}

/// COMMIT PREPARED of `gid` at `commit_lsn`, ending 8 bytes later.
pub(crate) fn commit_prepared(xid: u32, gid: &str, commit_lsn: u64) -> LogicalMessage {
    LogicalMessage::CommitPrepared(CommitPrepared {
        flags: 0,
        commit_lsn: lsn(commit_lsn),
        end_lsn: lsn(commit_lsn + 8),
        commit_time: time(),
        xid,
        gid: gid.into(),
    })
}

/// ROLLBACK PREPARED of `gid` prepared at `prepare_lsn`, rolled back at `at`.
pub(crate) fn rollback_prepared(xid: u32, gid: &str, prepare_lsn: u64, at: u64) -> LogicalMessage {
    LogicalMessage::RollbackPrepared(RollbackPrepared {
        flags: 0,
        prepare_end_lsn: lsn(prepare_lsn + 8),
        rollback_end_lsn: lsn(at + 8),
        prepare_time: time(),
        rollback_time: time(),
        xid,
        gid: gid.into(),
    })
}
