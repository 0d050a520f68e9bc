//! Prometheus metrics of a running mirror, served on `--metrics-addr` (see [`http`]).
//!
//! The apply loop updates atomics and a few small maps; the figures that depend on the time
//! of the scrape (the lag in seconds, the process' CPU and memory) are computed when scraped.

mod exposition;
pub mod http;
mod pending;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use pgoutput_decoder::{LogicalMessage, Lsn, PgTimestamp};

use pending::Pending;

/// The `op` label of each row counter, indexed by the constants below.
const OPS: [&str; 4] = ["insert", "update", "delete", "truncate"];
const INSERT: usize = 0;
const UPDATE: usize = 1;
const DELETE: usize = 2;
const TRUNCATE: usize = 3;

/// Counters and gauges of one mirror. Cheap to update from the apply loop.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Row changes by relation id, one counter per [`OPS`] entry. Names are looked up when
    /// rendering, so counting a row costs one lock and no allocation.
    rows: Mutex<HashMap<u32, [u64; OPS.len()]>>,
    relations: Mutex<BTreeMap<u32, String>>,
    transactions: AtomicU64,
    received_lsn: AtomicU64,
    confirmed_lsn: AtomicU64,
    /// Transactions received and not yet applied, for the lag in seconds.
    pending: Mutex<Pending>,
    /// The apply loop is running on a live replication stream.
    streaming: AtomicBool,
    reconnects: AtomicU64,
    errors: AtomicU64,
    copy_rows: AtomicU64,
    copy_bytes: AtomicU64,
    copy_tables_done: AtomicU64,
    copy_tables_total: AtomicU64,
}

impl Metrics {
    /// A fresh set, shared between the apply loop and the endpoint.
    pub fn new() -> Arc<Self> {
        Arc::new(Metrics::default())
    }

    /// Counts one message from the stream (rows by table and operation, commits) and notes
    /// the transactions that now wait to be applied.
    pub fn observe(&self, msg: &LogicalMessage) {
        let (rel_id, op) = match msg {
            LogicalMessage::Relation(r) => {
                if let Ok(mut rels) = self.relations.lock() {
                    rels.insert(r.rel_id, format!("{}.{}", r.namespace, r.name));
                }
                return;
            }
            LogicalMessage::Insert(m) => (m.rel_id, INSERT),
            LogicalMessage::Update(m) => (m.rel_id, UPDATE),
            LogicalMessage::Delete(m) => (m.rel_id, DELETE),
            LogicalMessage::Truncate(t) => {
                for rel in &t.rel_ids {
                    self.count(*rel, TRUNCATE);
                }
                return;
            }
            // pgoutput sends a transaction once it committed: from its Begin on it waits.
            LogicalMessage::Begin(b) => return self.waiting(b.final_lsn, b.commit_time),
            LogicalMessage::Commit(_) => return self.committed(),
            // A transaction streamed while in progress waits from its commit on.
            LogicalMessage::StreamCommit(c) => {
                self.waiting(c.commit_lsn, c.commit_time);
                return self.committed();
            }
            LogicalMessage::CommitPrepared(c) => {
                self.waiting(c.commit_lsn, c.commit_time);
                return self.committed();
            }
            _ => return,
        };
        self.count(rel_id, op);
    }

    /// One row change of `OPS[op]` on relation `rel_id`.
    fn count(&self, rel_id: u32, op: usize) {
        if let Ok(mut rows) = self.rows.lock() {
            rows.entry(rel_id).or_default()[op] += 1;
        }
    }

    fn committed(&self) {
        self.transactions.fetch_add(1, Ordering::Relaxed);
    }

    fn waiting(&self, commit_lsn: Lsn, at: PgTimestamp) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.received(commit_lsn.0, at.unix_micros());
        }
    }

    /// The highest WAL position received and the position confirmed to the primary.
    pub fn positions(&self, received: Lsn, confirmed: Lsn) {
        self.received_lsn.fetch_max(received.0, Ordering::Relaxed);
        let confirmed =
            self.confirmed_lsn.fetch_max(confirmed.0, Ordering::Relaxed).max(confirmed.0);
        if let Ok(mut pending) = self.pending.lock() {
            pending.confirmed(confirmed);
        }
    }

    /// The apply loop runs on a live stream until the returned guard is dropped.
    pub fn streaming(&self) -> StreamingGuard<'_> {
        self.streaming.store(true, Ordering::Relaxed);
        StreamingGuard(self)
    }

    /// Whether changes are being streamed and applied now.
    pub fn is_streaming(&self) -> bool {
        self.streaming.load(Ordering::Relaxed)
    }

    /// A reconnect after a transient fault.
    pub fn reconnected(&self) {
        self.reconnects.fetch_add(1, Ordering::Relaxed);
    }

    /// An error (transient or not).
    pub fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Initial-copy progress: `rows` and `bytes` more copied.
    pub fn copied(&self, rows: u64, bytes: u64) {
        self.copy_rows.fetch_add(rows, Ordering::Relaxed);
        self.copy_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Initial-copy progress: tables done out of total.
    pub fn copy_tables(&self, done: u64, total: u64) {
        self.copy_tables_done.store(done, Ordering::Relaxed);
        self.copy_tables_total.store(total, Ordering::Relaxed);
    }

    /// What `/healthz` answers: `Ok` with a word while streaming, else why not.
    pub fn health(&self) -> Result<&'static str, String> {
        if self.is_streaming() {
            return Ok("streaming");
        }
        let (done, total) = (
            self.copy_tables_done.load(Ordering::Relaxed),
            self.copy_tables_total.load(Ordering::Relaxed),
        );
        if total > 0 && done < total {
            Err(format!("not streaming yet: initial copy, {done} of {total} tables done"))
        } else {
            Err("not streaming: setting up, or reconnecting after a fault".to_owned())
        }
    }
}

/// Marks the apply loop as streaming while it lives (see [`Metrics::streaming`]).
#[derive(Debug)]
pub struct StreamingGuard<'a>(&'a Metrics);

impl Drop for StreamingGuard<'_> {
    fn drop(&mut self) {
        self.0.streaming.store(false, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgoutput_decoder::{Begin, Commit, Insert, Relation, ReplicaIdentity, Tuple};

    fn relation(rel_id: u32, name: &str) -> LogicalMessage {
        LogicalMessage::Relation(Relation {
            xid: None,
            rel_id,
            namespace: "public".into(),
            name: name.into(),
            replica_identity: ReplicaIdentity::Default,
            columns: vec![],
        })
    }

    fn value(text: &str, name: &str) -> f64 {
        let line = text
            .lines()
            .find(|l| l.split(' ').next() == Some(name))
            .unwrap_or_else(|| panic!("{name} in {text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    }

    #[test]
    fn counts_rows_by_table_and_operation() {
        let m = Metrics::new();
        m.observe(&relation(7, "orders"));
        for _ in 0..3 {
            m.observe(&LogicalMessage::Insert(Insert {
                xid: None,
                rel_id: 7,
                new: Tuple::default(),
            }));
        }
        m.positions(Lsn(1000), Lsn(400));
        let text = m.render();
        assert!(
            text.contains("pgmirror_rows_total{table=\"public.orders\",op=\"insert\"} 3"),
            "{text}"
        );
        assert!(text.contains("pgmirror_apply_lag_bytes 600"), "{text}");
        assert!(text.contains("pgmirror_build_info{version=\""), "{text}");
        assert!(text.contains("\nprocess_resident_memory_bytes "), "{text}");
        assert!(text.contains("\nprocess_cpu_seconds_total "), "{text}");
    }

    #[test]
    fn table_names_are_escaped_in_labels() {
        let m = Metrics::new();
        m.observe(&relation(8, "a\"b\\c\nd"));
        m.observe(&LogicalMessage::Insert(Insert { xid: None, rel_id: 8, new: Tuple::default() }));
        let text = m.render();
        assert!(
            text.contains("pgmirror_rows_total{table=\"public.a\\\"b\\\\c\\nd\",op=\"insert\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn lag_is_the_age_of_the_oldest_commit_not_yet_applied() {
        let m = Metrics::new();
        let now = PgTimestamp::now();
        let old = PgTimestamp(now.0 - 40_000_000);
        m.observe(&LogicalMessage::Begin(Begin { final_lsn: Lsn(100), commit_time: old, xid: 1 }));
        let lag = value(&m.render(), "pgmirror_apply_lag_seconds");
        assert!((39.0..60.0).contains(&lag), "waiting since 40 s: {lag}");
        m.observe(&LogicalMessage::Commit(Commit {
            flags: 0,
            commit_lsn: Lsn(100),
            end_lsn: Lsn(120),
            commit_time: old,
        }));
        m.positions(Lsn(120), Lsn(120));
        let text = m.render();
        // Applied and idle: nothing waits, though the last commit is 40 s old.
        assert_eq!(value(&text, "pgmirror_apply_lag_seconds"), 0.0, "{text}");
        let at = value(&text, "pgmirror_last_applied_commit_timestamp_seconds");
        let want = f64::from(u32::try_from(old.unix_micros() / 1_000_000).unwrap());
        assert!((at - want).abs() < 1.0, "{at} vs {want}");
    }

    #[test]
    fn health_follows_the_stream() {
        let m = Metrics::new();
        m.copy_tables(1, 4);
        assert!(m.health().unwrap_err().contains("1 of 4 tables"));
        let guard = m.streaming();
        assert_eq!(m.health(), Ok("streaming"));
        drop(guard);
        assert!(m.health().is_err());
    }
}
