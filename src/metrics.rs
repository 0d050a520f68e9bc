//! Prometheus metrics of a running mirror, served as text on `--metrics-addr`.
//!
//! The exposition format is a few lines of text and the endpoint answers one GET, so this is
//! a small responder on a tokio listener rather than an HTTP framework.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use pgoutput_decoder::{LogicalMessage, Lsn, PgTimestamp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

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
    last_commit_unix_micros: AtomicU64,
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

    /// Counts one message from the stream (rows by table and operation, commits).
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
            LogicalMessage::Commit(c) => return self.commit(c.commit_time),
            LogicalMessage::StreamCommit(c) => return self.commit(c.commit_time),
            LogicalMessage::CommitPrepared(c) => return self.commit(c.commit_time),
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

    fn commit(&self, at: PgTimestamp) {
        self.transactions.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(at.unix_micros()).unwrap_or(0);
        self.last_commit_unix_micros.store(micros, Ordering::Relaxed);
    }

    /// The highest WAL position received and the position confirmed to the primary.
    pub fn positions(&self, received: Lsn, confirmed: Lsn) {
        self.received_lsn.fetch_max(received.0, Ordering::Relaxed);
        self.confirmed_lsn.fetch_max(confirmed.0, Ordering::Relaxed);
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

    /// The metrics in Prometheus' text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let g = |v: &AtomicU64| v.load(Ordering::Relaxed);
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        };
        metric(
            "pgmirror_transactions_total",
            "counter",
            "Source transactions received.",
            g(&self.transactions),
        );
        metric(
            "pgmirror_received_lsn",
            "gauge",
            "Highest WAL position received (bytes).",
            g(&self.received_lsn),
        );
        metric(
            "pgmirror_confirmed_lsn",
            "gauge",
            "WAL position confirmed to the primary (bytes).",
            g(&self.confirmed_lsn),
        );
        let lag = g(&self.received_lsn).saturating_sub(g(&self.confirmed_lsn));
        metric(
            "pgmirror_apply_lag_bytes",
            "gauge",
            "Received but not yet durably applied WAL (bytes).",
            lag,
        );
        let last = g(&self.last_commit_unix_micros);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        let lag_s = if last == 0 { 0.0 } else { now.saturating_sub(last) as f64 / 1e6 };
        let _ = writeln!(
            out,
            "# HELP pgmirror_apply_lag_seconds Age of the last source commit received.\n\
             # TYPE pgmirror_apply_lag_seconds gauge\npgmirror_apply_lag_seconds {lag_s:.3}"
        );
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        };
        metric(
            "pgmirror_reconnects_total",
            "counter",
            "Reconnects after transient faults.",
            g(&self.reconnects),
        );
        metric(
            "pgmirror_errors_total",
            "counter",
            "Errors met (transient or not).",
            g(&self.errors),
        );
        metric(
            "pgmirror_initial_copy_rows_total",
            "counter",
            "Rows copied by the initial copy.",
            g(&self.copy_rows),
        );
        metric(
            "pgmirror_initial_copy_bytes_total",
            "counter",
            "Bytes copied by the initial copy.",
            g(&self.copy_bytes),
        );
        metric(
            "pgmirror_initial_copy_tables_done",
            "gauge",
            "Tables whose initial copy is done.",
            g(&self.copy_tables_done),
        );
        metric(
            "pgmirror_initial_copy_tables_total",
            "gauge",
            "Tables to copy initially.",
            g(&self.copy_tables_total),
        );
        let _ = writeln!(
            out,
            "# HELP pgmirror_rows_total Row changes received, by table and operation.\n\
             # TYPE pgmirror_rows_total counter"
        );
        // By the relation's latest name; ids that share a name (a table dropped and created
        // again) add up.
        let mut by_name: BTreeMap<(String, &str), u64> = BTreeMap::new();
        if let (Ok(rows), Ok(names)) = (self.rows.lock(), self.relations.lock()) {
            for (rel_id, counts) in rows.iter() {
                let table = names.get(rel_id).cloned().unwrap_or_else(|| rel_id.to_string());
                for (op, n) in OPS.iter().zip(counts).filter(|(_, n)| **n > 0) {
                    *by_name.entry((table.clone(), op)).or_default() += n;
                }
            }
        }
        for ((table, op), n) in by_name {
            let table = table.replace('\\', "\\\\").replace('"', "\\\"");
            let _ = writeln!(out, "pgmirror_rows_total{{table=\"{table}\",op=\"{op}\"}} {n}");
        }
        out
    }
}

/// Serves `metrics` at `http://addr/metrics` (any path answers) until the task is dropped.
///
/// # Errors
/// The address cannot be bound.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving Prometheus metrics");
    Ok(tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else { continue };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                // Read the request head (we answer every request with the metrics).
                let mut buf = [0u8; 2048];
                let _ =
                    tokio::time::timeout(std::time::Duration::from_secs(2), sock.read(&mut buf))
                        .await;
                let body = metrics.render();
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(body.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgoutput_decoder::{Insert, Relation, ReplicaIdentity, Tuple};

    #[test]
    fn counts_rows_by_table_and_operation() {
        let m = Metrics::default();
        m.observe(&LogicalMessage::Relation(Relation {
            xid: None,
            rel_id: 7,
            namespace: "public".into(),
            name: "orders".into(),
            replica_identity: ReplicaIdentity::Default,
            columns: vec![],
        }));
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
    }
}
