//! The metrics as Prometheus text: the mirror's figures, the process' and the build's.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::{Metrics, OPS};

/// The `Content-Type` of what [`render`] returns.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// A registry with the mirror's metrics, the process metrics and `pgmirror_build_info`.
pub fn registry(metrics: Arc<Metrics>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(MirrorCollector(metrics)));
    registry.register_collector(Box::new(ProcessCollector));
    registry
}

impl Metrics {
    /// The metrics in Prometheus' text exposition format (version 0.0.4).
    pub fn render(self: &Arc<Self>) -> String {
        render(&registry(self.clone()))
    }
}

/// `registry` in the text exposition format (version 0.0.4); label values are escaped by
/// the encoder.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing to a String does not fail, and every collector here returns Ok.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, registry);
    out
}

fn counter<V>(e: &mut DescriptorEncoder, name: &str, help: &str, v: V) -> std::fmt::Result
where
    ConstCounter<V>: EncodeMetric,
{
    // The encoder appends `_total` to a counter's name.
    let name = name.strip_suffix("_total").unwrap_or(name);
    ConstCounter::new(v).encode(e.encode_descriptor(name, help, None, MetricType::Counter)?)
}

fn gauge<V>(e: &mut DescriptorEncoder, name: &str, help: &str, v: V) -> std::fmt::Result
where
    ConstGauge<V>: EncodeMetric,
{
    ConstGauge::new(v).encode(e.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

fn load(v: &AtomicU64) -> u64 {
    v.load(Ordering::Relaxed)
}

fn unix_micros_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

#[derive(Debug)]
struct MirrorCollector(Arc<Metrics>);

impl Collector for MirrorCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let m = &self.0;
        counter(
            &mut e,
            "pgmirror_transactions_total",
            "Source transactions received.",
            load(&m.transactions),
        )?;
        let (received, confirmed) = (load(&m.received_lsn), load(&m.confirmed_lsn));
        gauge(&mut e, "pgmirror_received_lsn", "Highest WAL position received (bytes).", received)?;
        gauge(
            &mut e,
            "pgmirror_confirmed_lsn",
            "WAL position confirmed to the primary as durably applied (bytes).",
            confirmed,
        )?;
        gauge(
            &mut e,
            "pgmirror_apply_lag_bytes",
            "Received but not yet durably applied WAL (bytes).",
            received.saturating_sub(confirmed),
        )?;
        let (oldest, last_applied) = match m.pending.lock() {
            Ok(p) => (p.oldest_waiting(), p.last_applied()),
            Err(_) => (None, None),
        };
        // A clock behind the primary's would make a fresh commit look like it is from the
        // future: no negative lag.
        let lag = oldest.map_or(0.0, |t| unix_micros_now().saturating_sub(t).max(0) as f64 / 1e6);
        gauge(
            &mut e,
            "pgmirror_apply_lag_seconds",
            "Age of the oldest change received but not yet durably applied: now minus the \
             source commit time of the oldest such transaction (a transaction streamed while in \
             progress counts from its commit); 0 when nothing waits. Compares this host's clock \
             with the primary's.",
            lag,
        )?;
        gauge(
            &mut e,
            "pgmirror_last_applied_commit_timestamp_seconds",
            "Source commit time (Unix seconds) of the newest transaction durably applied since \
             pgmirror started; 0 until one is.",
            last_applied.map_or(0.0, |t| t as f64 / 1e6),
        )?;
        gauge(
            &mut e,
            "pgmirror_streaming",
            "1 while changes are streamed and applied, 0 during set-up, the initial copy and \
             reconnects.",
            i64::from(m.is_streaming()),
        )?;
        counter(
            &mut e,
            "pgmirror_reconnects_total",
            "Reconnects after transient faults.",
            load(&m.reconnects),
        )?;
        counter(
            &mut e,
            "pgmirror_errors_total",
            "Errors met (transient or not).",
            load(&m.errors),
        )?;
        counter(
            &mut e,
            "pgmirror_initial_copy_rows_total",
            "Rows copied by the initial copy.",
            load(&m.copy_rows),
        )?;
        counter(
            &mut e,
            "pgmirror_initial_copy_bytes_total",
            "Bytes copied by the initial copy.",
            load(&m.copy_bytes),
        )?;
        gauge(
            &mut e,
            "pgmirror_initial_copy_tables_done",
            "Tables whose initial copy is done.",
            load(&m.copy_tables_done),
        )?;
        gauge(
            &mut e,
            "pgmirror_initial_copy_tables_total",
            "Tables to copy initially.",
            load(&m.copy_tables_total),
        )?;
        self.rows(&mut e)?;
        let mut info = e.encode_descriptor(
            "pgmirror_build_info",
            "The pgmirror version, as a label; always 1.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(1i64)
            .encode(info.encode_family(&[("version", env!("CARGO_PKG_VERSION"))])?)?;
        Ok(())
    }
}

impl MirrorCollector {
    fn rows(&self, e: &mut DescriptorEncoder) -> std::fmt::Result {
        // By the relation's latest name; ids that share a name (a table dropped and created
        // again) add up.
        let mut by_name: std::collections::BTreeMap<(String, &str), u64> = Default::default();
        if let (Ok(rows), Ok(names)) = (self.0.rows.lock(), self.0.relations.lock()) {
            for (rel_id, counts) in rows.iter() {
                let table = names.get(rel_id).cloned().unwrap_or_else(|| rel_id.to_string());
                for (op, n) in OPS.iter().zip(counts).filter(|(_, n)| **n > 0) {
                    *by_name.entry((table.clone(), op)).or_default() += n;
                }
            }
        }
        let mut family = e.encode_descriptor(
            "pgmirror_rows",
            "Row changes received, by table and operation.",
            None,
            MetricType::Counter,
        )?;
        for ((table, op), n) in by_name {
            let labels = [("table", table.as_str()), ("op", op)];
            ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// The standard process metrics (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
/// `process_open_fds`, ...), read when scraped.
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let p = metrics_process::collector::collect();
        if let Some(v) = p.cpu_seconds_total {
            counter(
                &mut e,
                "process_cpu_seconds_total",
                "Total user and system CPU time spent in seconds.",
                v,
            )?;
        }
        let gauges = [
            ("process_open_fds", "Number of open file descriptors.", p.open_fds),
            ("process_max_fds", "Maximum number of open file descriptors.", p.max_fds),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                p.virtual_memory_bytes,
            ),
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                p.resident_memory_bytes,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                p.start_time_seconds,
            ),
            ("process_threads", "Number of OS threads in the process.", p.threads),
        ];
        for (name, help, value) in gauges {
            if let Some(v) = value {
                gauge(&mut e, name, help, v)?;
            }
        }
        Ok(())
    }
}
