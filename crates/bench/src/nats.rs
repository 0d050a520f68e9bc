//! `pgmirror bench --nats`: publishing a backlog into NATS JetStream, next to the ceiling of
//! the same server.
//!
//! A throwaway primary and `nats-server` (file-backed JetStream) are started. A backlog of
//! single-row inserts (in transactions of [`ROWS_PER_TXN`] rows) builds up in a slot while
//! nothing reads it. Then:
//! - `pgmirror`: the binary (`mirror --target nats://... --no-initial-copy`) drains the slot,
//!   timed from spawn until the stream holds every change; its CPU time and peak RSS, and the
//!   walsender's CPU time, come from `/proc`;
//! - `ceiling`: a minimal client publishes the same number of messages, built beforehand with
//!   the same subject, headers and payload size, with the same number of acknowledgements in
//!   flight, into a second stream: what this server takes on this machine. It runs twice, once
//!   through async-nats's JetStream publish (a request per message) and once through the
//!   publisher pgmirror uses (one subscription for every acknowledgement); the faster is the
//!   ceiling.
//!
//! Then the live latency: single-row inserts on the idle primary, each timed from its commit
//! until the stream holds it.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use applier::nats::acks::Publisher;
use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use pgcluster::Cluster;
use serde::Serialize;

use crate::Error;
use crate::procstat::{self, WalsenderSampler};

/// Rows per backlog transaction.
pub const ROWS_PER_TXN: u64 = 1000;

/// Acknowledgements in flight, as pgmirror keeps them.
const IN_FLIGHT: usize = 4096;

/// Settings of the NATS benchmark.
#[derive(Debug, Clone)]
pub struct NatsBenchOptions {
    /// Changes in the backlog.
    pub changes: u64,
    /// The pgmirror executable.
    pub pgmirror_exe: PathBuf,
    /// Live-latency samples (0 to skip).
    pub latency_samples: usize,
    /// How long pgmirror may take.
    pub run_timeout: Duration,
    /// Progress lines on stderr.
    pub verbose: bool,
}

/// What the NATS benchmark measured.
#[derive(Debug, Clone, Serialize)]
pub struct NatsBenchReport {
    /// Changes published.
    pub changes: u64,
    /// pgmirror's changes per second.
    pub pgmirror_per_second: f64,
    /// The minimal client's messages per second.
    pub ceiling_per_second: f64,
    /// The minimal client through async-nats's JetStream publish, and through pgmirror's
    /// publisher: messages per second.
    pub ceiling_clients: (f64, f64),
    /// pgmirror over the ceiling.
    pub share_of_ceiling: f64,
    /// pgmirror's CPU seconds.
    pub pgmirror_cpu_s: Option<f64>,
    /// The walsender's CPU seconds while pgmirror drained the slot.
    pub walsender_cpu_s: Option<f64>,
    /// pgmirror's peak resident memory in MB.
    pub peak_rss_mb: Option<f64>,
    /// Live latency from commit to stored, median and 99th percentile, in milliseconds.
    pub latency_ms: Option<(f64, f64)>,
}

/// The report as a few lines.
pub fn render_nats(r: &NatsBenchReport) -> String {
    let opt = |v: Option<f64>, unit: &str| v.map_or("?".to_owned(), |v| format!("{v:.1} {unit}"));
    let mut s = format!(
        "NATS JetStream, {} single-row changes (file storage, acknowledged)\n\
         pgmirror   {:>10.0} changes/s  ({:.2} of the ceiling)  CPU {}  walsender CPU {}  \
         peak RSS {}\nceiling    {:>10.0} messages/s (minimal client, {IN_FLIGHT} acks in \
         flight: {:.0} through async-nats's JetStream publish, {:.0} through pgmirror's \
         publisher)\n",
        r.changes,
        r.pgmirror_per_second,
        r.share_of_ceiling,
        opt(r.pgmirror_cpu_s, "s"),
        opt(r.walsender_cpu_s, "s"),
        opt(r.peak_rss_mb, "MB"),
        r.ceiling_per_second,
        r.ceiling_clients.0,
        r.ceiling_clients.1,
    );
    if let Some((p50, p99)) = r.latency_ms {
        s.push_str(&format!("latency    median {p50:.1} ms, p99 {p99:.1} ms (commit to stored)\n"));
    }
    s
}

fn say(opts: &NatsBenchOptions, what: &str) {
    if opts.verbose {
        eprintln!("bench: {what}");
    }
}

fn nats_err(what: &str) -> impl FnOnce(async_nats::Error) -> Error + '_ {
    move |e| Error::Failed(format!("{what}: {e}"))
}

/// Runs the NATS benchmark.
///
/// # Errors
/// Servers that cannot start, a backlog that cannot be made, pgmirror failing or too slow.
pub async fn run_nats(opts: NatsBenchOptions) -> Result<NatsBenchReport, Error> {
    let (primary, nats) = tokio::task::spawn_blocking(|| -> Result<_, Error> {
        let primary = crate::clusters::cluster_builder()
            .start()
            .map_err(Error::context("starting the primary"))?;
        let nats = testservers::NatsServer::new()
            .map_err(|e| Error::Failed(format!("starting nats-server: {e}")))?;
        Ok((primary, nats))
    })
    .await
    .map_err(|e| Error::Failed(format!("starting the servers: {e}")))??;
    let result = bench(&opts, &primary, &nats).await;
    let _ = tokio::task::spawn_blocking(move || {
        drop(primary);
        drop(nats);
    })
    .await;
    result
}

async fn bench(
    opts: &NatsBenchOptions,
    primary: &Cluster,
    nats: &testservers::NatsServer,
) -> Result<NatsBenchReport, Error> {
    let db = "nats_bench";
    primary.create_database(db).await?;
    let sql = primary.connect(db).await?;
    sql.batch_execute(
        "CREATE TABLE t (id bigint PRIMARY KEY, v text NOT NULL); \
         CREATE PUBLICATION bench FOR TABLE t;",
    )
    .await?;
    // Not in the same implicit transaction as the writes above, which PostgreSQL refuses.
    sql.batch_execute("SELECT pg_create_logical_replication_slot('bench_nats', 'pgoutput')")
        .await?;
    say(opts, &format!("backlog of {} changes", opts.changes));
    let mut next = 1_u64;
    while next <= opts.changes {
        let last = (next + ROWS_PER_TXN - 1).min(opts.changes);
        let (a, b) = (i64::try_from(next).unwrap_or(i64::MAX), i64::try_from(last).unwrap_or(0));
        sql.execute(
            "INSERT INTO t SELECT i, 'value ' || i FROM generate_series($1::bigint, $2) AS i",
            &[&a, &b],
        )
        .await?;
        next = last + 1;
    }
    let client = nats.connect().await.map_err(|e| Error::Failed(format!("nats: {e}")))?;
    let js = jetstream::new(client);

    say(opts, "pgmirror");
    let sampler = WalsenderSampler::start(primary.connect(db).await?, "bench_nats".into());
    let ticks = procstat::clock_ticks_per_second();
    let t = Instant::now();
    let mut child = tokio::process::Command::new(&opts.pgmirror_exe)
        .args(["mirror", "--source", &primary.url(db), "--target", &nats.url()])
        .args(["--publication", "bench", "--slot", "bench_nats", "--name", "bench"])
        .args(["--no-initial-copy", "--nats-stream", "BENCH", "--subject-prefix", "bench"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(Error::context("starting pgmirror"))?;
    let pid = child.id().ok_or_else(|| Error::Failed("pgmirror has no pid".into()))?;
    wait_messages(&js, "BENCH", opts.changes, opts.run_timeout, &mut child).await?;
    let seconds = t.elapsed().as_secs_f64();
    let pgmirror_cpu_s = procstat::cpu_ticks(pid).map(|t| procstat::ticks_as_seconds(t, ticks));
    let peak_rss_mb = procstat::peak_rss_bytes(pid).map(|b| b as f64 / 1e6);
    let walsender_cpu_s = sampler.finish(ticks);
    let latency_ms = if opts.latency_samples > 0 {
        say(opts, "live latency");
        Some(latency(&sql, &js, opts.changes, opts.latency_samples, &mut child).await?)
    } else {
        None
    };
    let _ = child.kill().await;

    say(opts, "ceiling");
    let ceiling_clients = (
        ceiling(&js, "CEILING_JS", opts.changes, Client::JetStream).await?,
        ceiling(&js, "CEILING_PUB", opts.changes, Client::Publisher).await?,
    );
    let ceiling = ceiling_clients.0.max(ceiling_clients.1);
    let pgmirror_per_second = opts.changes as f64 / seconds;
    Ok(NatsBenchReport {
        changes: opts.changes,
        pgmirror_per_second,
        ceiling_per_second: ceiling,
        ceiling_clients,
        share_of_ceiling: pgmirror_per_second / ceiling,
        pgmirror_cpu_s,
        walsender_cpu_s,
        peak_rss_mb,
        latency_ms,
    })
}

async fn stream_messages(js: &jetstream::Context, stream: &str) -> Option<u64> {
    let mut s = js.get_stream(stream).await.ok()?;
    s.info().await.ok().map(|i| i.state.messages)
}

/// Waits until `stream` holds `want` messages, while pgmirror runs.
async fn wait_messages(
    js: &jetstream::Context,
    stream: &str,
    want: u64,
    timeout: Duration,
    child: &mut tokio::process::Child,
) -> Result<(), Error> {
    let start = Instant::now();
    loop {
        if stream_messages(js, stream).await.is_some_and(|n| n >= want) {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            return Err(Error::Failed(format!("pgmirror exited ({status})")));
        }
        if start.elapsed() > timeout {
            return Err(Error::Failed(format!("pgmirror did not publish {want} changes in time")));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Single-row inserts, each timed from its commit until the stream holds it.
async fn latency(
    sql: &tokio_postgres::Client,
    js: &jetstream::Context,
    base: u64,
    samples: usize,
    child: &mut tokio::process::Child,
) -> Result<(f64, f64), Error> {
    let mut ms = Vec::with_capacity(samples);
    for i in 0..samples {
        let id = i64::try_from(base + 1 + i as u64).unwrap_or(i64::MAX);
        let t = Instant::now();
        sql.execute("INSERT INTO t VALUES ($1, 'live')", &[&id]).await?;
        let want = base + 1 + i as u64;
        wait_messages(js, "BENCH", want, Duration::from_secs(30), child).await?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ms.sort_by(f64::total_cmp);
    let at = |percent: usize| ms[(ms.len() - 1) * percent / 100];
    Ok((at(50), at(99)))
}

/// How the minimal client publishes.
#[derive(Debug, Clone, Copy)]
enum Client {
    /// async-nats's `jetstream::Context::publish_with_headers`.
    JetStream,
    /// [`applier::nats::acks::Publisher`], as pgmirror publishes.
    Publisher,
}

/// What a minimal client publishes per second: the same number of messages with the subject,
/// headers and payload pgmirror sends, built beforehand, `IN_FLIGHT` acknowledgements at a time,
/// into a stream of its own named `name`.
async fn ceiling(
    js: &jetstream::Context,
    name: &str,
    n: u64,
    client: Client,
) -> Result<f64, Error> {
    let prefix = name.to_lowercase();
    js.create_stream(stream::Config {
        name: name.into(),
        subjects: vec![format!("{prefix}.>")],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| Error::Failed(format!("creating the ceiling stream: {e}")))?;
    let messages: Vec<(HeaderMap, Bytes)> = (1..=n)
        .map(|i| {
            let mut h = HeaderMap::new();
            h.insert("Nats-Msg-Id", format!("bench:0/{:X}:{}", i / ROWS_PER_TXN, i % ROWS_PER_TXN));
            h.insert("Pgmirror-Commit-Lsn", "0/1A2B3C4D");
            h.insert("Pgmirror-Xid", "123456");
            h.insert("Pgmirror-Commit-Time", "2026-01-01 00:00:00.123456+00");
            let body = format!(
                "{{\"type\":\"insert\",\"schema\":\"public\",\"table\":\"t\",\"new\":{{\"id\":{i},\"v\":\"value {i}\"}}}}"
            );
            (h, Bytes::from(body))
        })
        .collect();
    let subject = async_nats::Subject::from(format!("{prefix}.nats_bench.public.t"));
    let t = Instant::now();
    match client {
        Client::JetStream => {
            let mut pending = VecDeque::with_capacity(IN_FLIGHT);
            for (h, body) in messages {
                let ack = js
                    .publish_with_headers(subject.clone(), h, body)
                    .await
                    .map_err(|e| nats_err("publishing")(e.into()))?;
                pending.push_back(ack);
                if pending.len() >= IN_FLIGHT
                    && let Some(ack) = pending.pop_front()
                {
                    ack.await.map_err(|e| nats_err("acknowledgement")(e.into()))?;
                }
            }
            for ack in pending {
                ack.await.map_err(|e| nats_err("acknowledgement")(e.into()))?;
            }
        }
        Client::Publisher => {
            let mut p = Publisher::new(js.client(), Duration::from_secs(10))
                .await
                .map_err(|e| nats_err("subscribing")(e.into()))?;
            for (h, body) in messages {
                p.publish(subject.clone(), h, body)
                    .await
                    .map_err(|e| nats_err("publishing")(e.into()))?;
                if p.in_flight() >= IN_FLIGHT {
                    p.ack_oldest().await.map_err(|e| nats_err("acknowledgement")(e.into()))?;
                }
            }
            while p.in_flight() > 0 {
                p.ack_oldest().await.map_err(|e| nats_err("acknowledgement")(e.into()))?;
            }
        }
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}
