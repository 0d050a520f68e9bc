//! `pgmirror bench`: apply throughput of pgmirror against PostgreSQL's own subscriber, on
//! the same backlog, on two throwaway clusters.
//!
//! Method (see the performance reference): for each workload, the slots of every contender
//! and run are created first; then the backlog is generated while nothing consumes them,
//! ending with a sentinel row. The contenders then drain the same backlog one after another,
//! each into a fresh target database holding the same tables and base rows:
//! - `native`: a `CREATE SUBSCRIPTION` on an existing slot, timed from `ENABLE` until the
//!   sentinel is visible;
//! - `pg_recvlogical`: drains the slot to `/dev/null` (`--start -E <end LSN>`), the floor of
//!   what the primary can send;
//! - `pgmirror`: the `pgmirror` binary as a child process (`mirror --no-initial-copy`), timed
//!   from spawn until the sentinel is visible; its CPU time and peak RSS come from `/proc`.
//!
//! The walsender's CPU time is sampled for each contender; every target is verified against
//! the primary table by table. A recording of each backlog (which also warms the WAL into the
//! page cache) gives the time spent decoding, to compare with pgmirror's CPU time.

pub mod procstat;
pub mod recording;
pub mod workload;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use pgcluster::{Cluster, ClusterBuilder, quote_ident, quote_literal};
use pgoutput_decoder::Lsn;
use serde::Serialize;
use tokio_postgres::Client;

use crate::cli::TableSelection;
use crate::shutdown::Shutdown;
use procstat::WalsenderSampler;
use recording::{RecordOptions, StopAt};
use workload::{SENTINEL_DDL, SENTINEL_TABLE, Scale, Workload};

/// The publication every contender streams.
const PUBLICATION: &str = "pgmirror_bench";

/// Settings of a benchmark.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Workloads to run, in order.
    pub workloads: Vec<Workload>,
    /// Size multiplier.
    pub scale: Scale,
    /// Repetitions of each contender on each backlog.
    pub runs: u32,
    /// The pgmirror executable to run as a child.
    pub pgmirror_exe: PathBuf,
    /// Samples of the live-latency measurement (0 to skip it).
    pub latency_samples: usize,
    /// Progress lines on stderr.
    pub verbose: bool,
    /// How long one contender may take before its run counts as failed.
    pub run_timeout: Duration,
}

/// One contender's run on one backlog.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    /// 1-based run number.
    pub run: u32,
    /// Seconds until caught up; `None` when the run failed.
    pub seconds: Option<f64>,
    /// CPU seconds of the walsender that served the contender.
    pub walsender_cpu_s: Option<f64>,
    /// CPU seconds of the pgmirror process.
    pub pgmirror_cpu_s: Option<f64>,
    /// Peak RSS of the pgmirror process in MB.
    pub peak_rss_mb: Option<f64>,
    /// Whether the target equals the primary (for `pg_recvlogical`: the slot reached the
    /// end LSN).
    pub verified: bool,
    /// Why the run failed.
    pub error: Option<String>,
}

/// Median, minimum and maximum.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Stat {
    /// The median (mean of the middle two for an even count).
    pub median: f64,
    /// The minimum.
    pub min: f64,
    /// The maximum.
    pub max: f64,
}

impl Stat {
    /// Of `values`; `None` when empty.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Stat> {
        let mut v: Vec<f64> = values.into_iter().collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let mid = v.len() / 2;
        let median =
            if v.len().is_multiple_of(2) { f64::midpoint(v[mid - 1], v[mid]) } else { v[mid] };
        Some(Stat { median, min: v[0], max: v[v.len() - 1] })
    }
}

/// One contender on one workload, over all runs.
#[derive(Debug, Clone, Serialize)]
pub struct ContenderReport {
    /// `native`, `pg_recvlogical` or `pgmirror`.
    pub contender: String,
    /// Every run.
    pub runs: Vec<RunResult>,
    /// Seconds over the successful runs.
    pub seconds: Option<Stat>,
    /// Rows per second at the median time.
    pub rows_per_s: Option<f64>,
    /// Source transactions per second at the median time.
    pub txns_per_s: Option<f64>,
    /// Median time relative to the native subscriber's median time.
    pub ratio_vs_native: Option<f64>,
    /// Walsender CPU seconds.
    pub walsender_cpu_s: Option<Stat>,
    /// Per run, the contender's seconds over its walsender's CPU seconds: how close it came
    /// to the primary's own limit (1.0 would be as fast as the walsender can decode and send).
    pub vs_walsender_cpu: Option<Stat>,
    /// Median walsender CPU seconds over the native subscriber's median seconds: the lowest
    /// `ratio_vs_native` any consumer could reach with the walsender working this hard.
    pub walsender_cpu_vs_native: Option<f64>,
    /// pgmirror CPU seconds.
    pub pgmirror_cpu_s: Option<Stat>,
    /// Highest peak RSS of pgmirror over the runs, MB.
    pub peak_rss_mb: Option<f64>,
    /// Every run succeeded and was verified.
    pub verified: bool,
}

/// Decoding cost of a backlog, measured on its recording.
#[derive(Debug, Clone, Serialize)]
pub struct DecodeShare {
    /// pgoutput messages in the backlog.
    pub messages: u64,
    /// Their payload bytes.
    pub payload_bytes: u64,
    /// Seconds to decode them all (one core).
    pub decode_s: f64,
    /// `decode_s` over pgmirror's median CPU seconds.
    pub share_of_pgmirror_cpu: Option<f64>,
}

/// One workload's results.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadReport {
    /// Its name.
    pub workload: String,
    /// Source transactions in the backlog.
    pub transactions: u64,
    /// Row changes in the backlog (rows copied, for the initial copy).
    pub rows: u64,
    /// WAL bytes of the backlog (for the initial copy: the source database's size).
    pub wal_bytes: u64,
    /// Seconds to generate the backlog.
    pub generate_s: f64,
    /// Per contender.
    pub contenders: Vec<ContenderReport>,
    /// Decoding cost.
    pub decode: Option<DecodeShare>,
}

/// Live latency: one small transaction on an idle primary until visible on the replica.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyReport {
    /// The contender.
    pub contender: String,
    /// Samples taken.
    pub samples: usize,
    /// Milliseconds.
    pub ms: Stat,
}

/// The whole benchmark.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// The primary's `server_version`.
    pub server_version: String,
    /// The size multiplier.
    pub scale: f64,
    /// Runs per contender.
    pub runs: u32,
    /// Per workload.
    pub workloads: Vec<WorkloadReport>,
    /// Live latency, when measured.
    pub latency: Vec<LatencyReport>,
}

/// The contenders of a streaming backlog, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Contender {
    Native,
    Recvlogical,
    Pgmirror,
}

impl Contender {
    const EACH: [Contender; 3] = [Contender::Native, Contender::Recvlogical, Contender::Pgmirror];

    fn name(self) -> &'static str {
        match self {
            Contender::Native => "native",
            Contender::Recvlogical => "pg_recvlogical",
            Contender::Pgmirror => "pgmirror",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Contender::Native => "n",
            Contender::Recvlogical => "r",
            Contender::Pgmirror => "m",
        }
    }
}

/// A directory removed on drop.
#[derive(Debug)]
struct ScratchDir(PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The two clusters and what every run needs.
struct Bench {
    opts: BenchOptions,
    primary: Cluster,
    replica: Cluster,
    scratch: ScratchDir,
    ticks_per_second: f64,
    latency: Vec<LatencyReport>,
}

/// One streaming backlog on the primary.
struct Backlog {
    db: String,
    template: String,
    tables: Vec<String>,
    fingerprints: Vec<(i64, String)>,
    end_lsn: Lsn,
    proto_version: u32,
}

/// Settings both clusters share: fair (durable, like a production server), with checkpoints
/// and autovacuum kept out of the runs.
fn cluster_builder() -> ClusterBuilder {
    ClusterBuilder::new()
        .setting("max_wal_size", "64GB")
        .setting("min_wal_size", "1GB")
        .setting("checkpoint_timeout", "1d")
        .setting("autovacuum", "off")
        .setting("shared_buffers", "512MB")
        .setting("wal_sender_timeout", "5min")
        .setting("wal_receiver_timeout", "5min")
        .setting("max_logical_replication_workers", "4")
        .setting("max_sync_workers_per_subscription", "2")
        // The launcher starts workers at most this often (default 5 s): back-to-back runs
        // would otherwise time the launcher's wait, not the subscriber.
        .setting("wal_retrieve_retry_interval", "50ms")
}

fn say(opts: &BenchOptions, text: &str) {
    if opts.verbose {
        eprintln!("bench: {text}");
    }
}

/// Runs the benchmark: starts the clusters, runs every workload, removes the clusters.
///
/// # Errors
/// Clusters that do not start, or a workload whose backlog cannot be generated. A contender
/// that fails is reported in its [`RunResult`] instead.
pub async fn run(opts: BenchOptions) -> anyhow::Result<BenchReport> {
    anyhow::ensure!(opts.runs > 0, "--runs must be at least 1");
    let (primary, replica) = tokio::task::spawn_blocking(|| -> anyhow::Result<_> {
        let primary = cluster_builder().start().context("starting the primary")?;
        let replica = cluster_builder().start().context("starting the replica")?;
        Ok((primary, replica))
    })
    .await??;
    let scratch = std::env::temp_dir().join(pgcluster::unique_name("pgmirror_bench"));
    std::fs::create_dir_all(&scratch).context("creating a scratch directory")?;
    let mut bench = Bench {
        opts,
        primary,
        replica,
        scratch: ScratchDir(scratch),
        ticks_per_second: procstat::clock_ticks_per_second(),
        latency: Vec::new(),
    };
    let server_version: String = bench
        .primary
        .connect("postgres")
        .await?
        .query_one("SHOW server_version", &[])
        .await?
        .get(0);
    let mut workloads = Vec::new();
    let list: Vec<Workload> = if bench.opts.workloads.contains(&Workload::All) {
        Workload::EACH.to_vec()
    } else {
        bench.opts.workloads.clone()
    };
    let result = async {
        for w in list {
            say(&bench.opts, &format!("workload {w}"));
            let report = if w == Workload::Initial {
                bench.initial_copy().await
            } else {
                bench.streaming(w).await
            };
            workloads.push(report.with_context(|| format!("workload {w}"))?);
        }
        anyhow::Ok(())
    }
    .await;
    let Bench { primary, replica, latency, opts, .. } = bench;
    let _ = tokio::task::spawn_blocking(move || {
        drop(primary);
        drop(replica);
    })
    .await;
    result?;
    Ok(BenchReport {
        server_version,
        scale: opts.scale.as_f64(),
        runs: opts.runs,
        workloads,
        latency,
    })
}

async fn current_lsn(client: &Client) -> anyhow::Result<Lsn> {
    let text: String = client.query_one("SELECT pg_current_wal_lsn()::text", &[]).await?.get(0);
    Ok(text.parse()?)
}

impl Bench {
    fn slot(&self, w: Workload, c: &str, run: u32) -> String {
        format!("bench_{}_{c}_{run}", w.name().replace('-', "_"))
    }

    /// Creates the target template database: the workload's tables and the primary's base
    /// rows (copied with binary COPY).
    async fn make_template(
        &self,
        w: Workload,
        src_db: &str,
        template: &str,
        tables: &[String],
        copy_rows: bool,
    ) -> anyhow::Result<()> {
        self.replica.create_database(template).await?;
        let tpl = self.replica.connect(template).await?;
        let src = self.primary.connect(src_db).await?;
        match w.target_ddl() {
            Some(ddl) => tpl.batch_execute(&ddl).await?,
            None => {
                let sel = TableSelection {
                    publication: Some(PUBLICATION.into()),
                    tables: None,
                    exclude_tables: None,
                };
                for t in crate::setup::resolve_tables(&src, &sel).await? {
                    if t.name != SENTINEL_TABLE {
                        tpl.batch_execute(&tablesync::create_table_sql(&t)).await?;
                    }
                }
            }
        }
        tpl.batch_execute(SENTINEL_DDL).await?;
        if copy_rows {
            for t in tables {
                copy_table(&src, &tpl, t).await.with_context(|| format!("copying {t}"))?;
            }
            tpl.batch_execute("VACUUM ANALYZE").await?;
        }
        Ok(())
    }

    /// A fresh target database, a copy of `template`.
    async fn target_from(&self, template: &str, name: &str) -> anyhow::Result<Client> {
        let admin = self.replica.connect("postgres").await?;
        let sql =
            format!("CREATE DATABASE {} TEMPLATE {}", quote_ident(name), quote_ident(template));
        // The template's last session may still be closing.
        let mut tries = 0;
        loop {
            match admin.batch_execute(&sql).await {
                Ok(()) => break,
                Err(e) if tries < 100 => {
                    tries += 1;
                    tracing::debug!(error = %e, "CREATE DATABASE from template; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e).context("creating a target database"),
            }
        }
        Ok(self.replica.connect(name).await?)
    }

    async fn drop_slot(&self, db: &str, slot: &str) -> anyhow::Result<()> {
        let client = self.primary.connect(db).await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            client
                .execute(
                    "SELECT pg_terminate_backend(active_pid) FROM pg_catalog.pg_replication_slots \
                     WHERE slot_name = $1 AND active_pid IS NOT NULL",
                    &[&slot],
                )
                .await?;
            let dropped = client
                .execute(
                    "SELECT pg_drop_replication_slot(slot_name) FROM pg_catalog.pg_replication_slots \
                     WHERE slot_name = $1",
                    &[&slot],
                )
                .await;
            match dropped {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(error = %e, "dropping slot; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e).context("dropping a benchmark slot"),
            }
        }
    }

    /// A streaming workload: backlog, recording, then every contender `runs` times.
    async fn streaming(&mut self, w: Workload) -> anyhow::Result<WorkloadReport> {
        let opts = self.opts.clone();
        let db = format!("src_{}", w.name().replace('-', "_"));
        self.primary.create_database(&db).await?;
        w.prepare(&self.primary, &db, opts.scale).await.context("preparing the primary")?;
        let src = self.primary.connect(&db).await?;
        let tables = publish(&src, w).await?;
        let template = format!("tpl_{}", w.name().replace('-', "_"));
        self.make_template(w, &db, &template, &tables, true).await?;

        // Every slot exists before the first change of the backlog.
        let mut slots = vec![self.slot(w, "rec", 0)];
        for run in 1..=opts.runs {
            for c in Contender::EACH {
                slots.push(self.slot(w, c.short(), run));
            }
        }
        for s in &slots {
            src.execute("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", &[s]).await?;
        }
        let start_lsn = current_lsn(&src).await?;
        say(&opts, &format!("{w}: generating the backlog"));
        let t = Instant::now();
        // The sentinel table's first change opens the backlog, so every consumer has met
        // both tables before the bulk of it. (pgmirror's applier deadlocks when a table's
        // first change arrives while a COPY into another table is open.)
        src.execute(&format!("INSERT INTO {SENTINEL_TABLE} (id) VALUES (0)"), &[]).await?;
        w.generate(&self.primary, &db, opts.scale).await.context("generating the backlog")?;
        src.execute(&format!("INSERT INTO {SENTINEL_TABLE} (id) VALUES (1)"), &[]).await?;
        let generate_s = t.elapsed().as_secs_f64();
        let end_lsn = current_lsn(&src).await?;
        let fingerprints = workload::fingerprints(&src, &tables).await?;
        say(
            &opts,
            &format!(
                "{w}: backlog of {} MB WAL in {generate_s:.1} s",
                end_lsn.bytes_since(start_lsn) >> 20
            ),
        );

        // The recording reads the whole backlog once: the WAL is in the page cache for the
        // contenders, and its decode time is the decoder's share.
        let rec_path = self.scratch.0.join(format!("{}.rec", w.name()));
        let (summary, proto_version) =
            self.record_backlog(&db, &slots[0], end_lsn, &rec_path).await?;
        let (messages, decode_s) = recording::decode_all(&rec_path)?;
        let _ = std::fs::remove_file(&rec_path);
        self.drop_slot(&db, &slots[0]).await?;

        let backlog =
            Backlog { db: db.clone(), template, tables, fingerprints, end_lsn, proto_version };
        let mut runs: Vec<(Contender, RunResult)> = Vec::new();
        for run in 1..=opts.runs {
            for c in Contender::EACH {
                self.settle().await?;
                let slot = self.slot(w, c.short(), run);
                let measure_latency = opts.latency_samples > 0
                    && run == 1
                    && c != Contender::Recvlogical
                    && !self.latency.iter().any(|l| l.contender == c.name());
                let result = match c {
                    Contender::Native => {
                        self.run_native(&backlog, &slot, run, measure_latency).await
                    }
                    Contender::Recvlogical => self.run_recvlogical(&backlog, &slot).await,
                    Contender::Pgmirror => {
                        self.run_pgmirror(&backlog, &slot, run, measure_latency).await
                    }
                };
                let mut result = result.unwrap_or_else(|e| RunResult {
                    run,
                    seconds: None,
                    walsender_cpu_s: None,
                    pgmirror_cpu_s: None,
                    peak_rss_mb: None,
                    verified: false,
                    error: Some(format!("{e:#}")),
                });
                result.run = run;
                say(&opts, &format!("{w} run {run} {}: {}", c.name(), describe(&result)));
                if let Err(e) = self.drop_slot(&db, &slot).await {
                    tracing::warn!(error = %format!("{e:#}"), "could not drop a slot");
                }
                runs.push((c, result));
            }
        }
        self.replica.drop_database(&backlog.template).await?;
        self.primary.drop_database(&db).await?;

        let contenders = summarize(&runs, summary.changes, summary.transactions);
        let pgmirror_cpu =
            contenders.iter().find(|c| c.contender == "pgmirror").and_then(|c| c.pgmirror_cpu_s);
        Ok(WorkloadReport {
            workload: w.name().to_owned(),
            transactions: summary.transactions,
            rows: summary.changes,
            wal_bytes: end_lsn.bytes_since(start_lsn),
            generate_s,
            contenders,
            decode: Some(DecodeShare {
                messages,
                payload_bytes: summary.payload_bytes,
                decode_s,
                share_of_pgmirror_cpu: pgmirror_cpu.map(|s| decode_s / s.median),
            }),
        })
    }

    async fn record_backlog(
        &self,
        db: &str,
        slot: &str,
        end_lsn: Lsn,
        path: &Path,
    ) -> anyhow::Result<(recording::RecordSummary, u32)> {
        let opts = RecordOptions {
            source: replication::ConnConfig::parse(&self.primary.url(db))?,
            tables: TableSelection {
                publication: Some(PUBLICATION.into()),
                tables: None,
                exclude_tables: None,
            },
            slot: slot.to_owned(),
            create_slot: false,
            out: path.to_owned(),
            stop: StopAt { until_lsn: Some(end_lsn), duration: None, idle: None },
            binary: true,
        };
        let summary = tokio::time::timeout(
            self.opts.run_timeout,
            recording::record(&opts, &mut Shutdown::manual()),
        )
        .await
        .context("recording the backlog timed out")??;
        let proto = recording::RecordingReader::open(path)?.header().proto_version;
        Ok((summary, proto))
    }

    async fn verify(&self, backlog: &Backlog, target: &Client) -> anyhow::Result<bool> {
        let got = workload::fingerprints(target, &backlog.tables).await?;
        Ok(got == backlog.fingerprints)
    }

    async fn run_native(
        &mut self,
        backlog: &Backlog,
        slot: &str,
        run: u32,
        measure_latency: bool,
    ) -> anyhow::Result<RunResult> {
        let name = format!("{}_n_{run}", backlog.db);
        let target = self.target_from(&backlog.template, &name).await?;
        let sub = quote_ident(&format!("sub_{name}"));
        let conninfo = quote_literal(&self.primary.url(&backlog.db));
        // The same pgoutput options as every contender: binary, streaming; PostgreSQL picks
        // the highest protocol version, as the others do.
        target
            .batch_execute(&format!(
                "CREATE SUBSCRIPTION {sub} CONNECTION {conninfo} PUBLICATION {} WITH \
                 (copy_data = false, enabled = false, create_slot = false, slot_name = {}, \
                 binary = true, streaming = on)",
                quote_ident(PUBLICATION),
                quote_literal(slot)
            ))
            .await?;
        let sampler =
            WalsenderSampler::start(self.primary.connect(&backlog.db).await?, slot.into());
        let t = Instant::now();
        target.batch_execute(&format!("ALTER SUBSCRIPTION {sub} ENABLE")).await?;
        wait_sentinel(&target, 1, self.opts.run_timeout, CATCH_UP_POLL, || Ok(())).await?;
        let seconds = t.elapsed().as_secs_f64();
        let walsender_cpu_s = sampler.finish(self.ticks_per_second);
        if measure_latency {
            self.measure_latency("native", &backlog.db, &target, || Ok(())).await?;
        }
        let verified = self.verify(backlog, &target).await?;
        target.batch_execute(&format!("ALTER SUBSCRIPTION {sub} DISABLE")).await?;
        target.batch_execute(&format!("ALTER SUBSCRIPTION {sub} SET (slot_name = NONE)")).await?;
        target.batch_execute(&format!("DROP SUBSCRIPTION {sub}")).await?;
        drop(target);
        self.replica.drop_database(&name).await?;
        Ok(RunResult {
            run,
            seconds: Some(seconds),
            walsender_cpu_s,
            pgmirror_cpu_s: None,
            peak_rss_mb: None,
            verified,
            error: None,
        })
    }

    async fn run_recvlogical(&self, backlog: &Backlog, slot: &str) -> anyhow::Result<RunResult> {
        let src = self.primary.connect(&backlog.db).await?;
        let sampler =
            WalsenderSampler::start(self.primary.connect(&backlog.db).await?, slot.into());
        let mut cmd = tokio::process::Command::new(self.primary.bindir().join("pg_recvlogical"));
        cmd.arg("-d")
            .arg(self.primary.url(&backlog.db))
            .args(["--slot", slot, "--start", "--no-loop", "-f", "/dev/null"])
            .arg("-E")
            .arg(backlog.end_lsn.to_string())
            .arg("-o")
            .arg(format!("proto_version={}", backlog.proto_version))
            .arg("-o")
            .arg(format!("publication_names={PUBLICATION}"))
            .args(["-o", "binary=true", "-o", "streaming=on"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let t = Instant::now();
        let out = tokio::time::timeout(self.opts.run_timeout, cmd.output())
            .await
            .context("pg_recvlogical timed out")??;
        let seconds = t.elapsed().as_secs_f64();
        let walsender_cpu_s = sampler.finish(self.ticks_per_second);
        if !out.status.success() {
            bail!("pg_recvlogical failed: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        let confirmed: Option<String> = src
            .query_one(
                "SELECT confirmed_flush_lsn::text FROM pg_catalog.pg_replication_slots \
                 WHERE slot_name = $1",
                &[&slot],
            )
            .await?
            .get(0);
        let confirmed: Lsn = confirmed.unwrap_or_default().parse().unwrap_or_default();
        Ok(RunResult {
            run: 0,
            seconds: Some(seconds),
            walsender_cpu_s,
            pgmirror_cpu_s: None,
            peak_rss_mb: None,
            verified: confirmed >= backlog.end_lsn,
            error: None,
        })
    }

    fn spawn_pgmirror(
        &self,
        src_db: &str,
        target_db: &str,
        slot: &str,
        initial_copy: bool,
        log: &Path,
    ) -> anyhow::Result<tokio::process::Child> {
        let log_file = std::fs::File::create(log)?;
        let mut cmd = tokio::process::Command::new(&self.opts.pgmirror_exe);
        cmd.arg("mirror")
            .arg("--source")
            .arg(self.primary.url(src_db))
            .arg("--target")
            .arg(self.replica.url(target_db))
            .args(["--publication", PUBLICATION, "--name", "bench", "--slot", slot]);
        if !initial_copy {
            cmd.arg("--no-initial-copy");
        }
        cmd.env_remove("PGMIRROR_SOURCE")
            .env_remove("PGMIRROR_TARGET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .kill_on_drop(true);
        cmd.spawn().context("starting pgmirror")
    }

    async fn run_pgmirror(
        &mut self,
        backlog: &Backlog,
        slot: &str,
        run: u32,
        measure_latency: bool,
    ) -> anyhow::Result<RunResult> {
        let name = format!("{}_m_{run}", backlog.db);
        let target = self.target_from(&backlog.template, &name).await?;
        let log = self.scratch.0.join(format!("{name}.log"));
        let sampler =
            WalsenderSampler::start(self.primary.connect(&backlog.db).await?, slot.into());
        let t = Instant::now();
        let mut child = self.spawn_pgmirror(&backlog.db, &name, slot, false, &log)?;
        let pid = child.id().context("pgmirror has no pid")?;
        let alive = |child: &mut tokio::process::Child| -> anyhow::Result<()> {
            if let Some(status) = child.try_wait()? {
                bail!("pgmirror exited ({status}): {}", log_tail(&log));
            }
            Ok(())
        };
        let waited =
            wait_sentinel(&target, 1, self.opts.run_timeout, CATCH_UP_POLL, || alive(&mut child))
                .await
                .with_context(|| format!("pgmirror's log: {}", log_tail(&log)));
        let seconds = t.elapsed().as_secs_f64();
        // Read while the process still runs: its /proc entry goes with it.
        let cpu =
            procstat::cpu_ticks(pid).map(|t| procstat::ticks_as_seconds(t, self.ticks_per_second));
        let rss = procstat::peak_rss_bytes(pid);
        let walsender_cpu_s = sampler.finish(self.ticks_per_second);
        waited?;
        if measure_latency {
            self.measure_latency("pgmirror", &backlog.db, &target, || alive(&mut child)).await?;
        }
        let _ = child.kill().await;
        let verified = self.verify(backlog, &target).await?;
        drop(target);
        self.replica.drop_database(&name).await?;
        Ok(RunResult {
            run,
            seconds: Some(seconds),
            walsender_cpu_s,
            pgmirror_cpu_s: cpu,
            peak_rss_mb: rss.map(mb),
            verified,
            error: None,
        })
    }

    /// Single-row inserts on the idle primary, each timed until visible on the target.
    async fn measure_latency(
        &mut self,
        contender: &str,
        db: &str,
        target: &Client,
        mut alive: impl FnMut() -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let src = self.primary.connect(db).await?;
        let mut samples = Vec::new();
        for i in 0..self.opts.latency_samples {
            // Ids distinct per contender: later slots replay earlier contenders' samples.
            let id = 1_000 * (2 + i32::try_from(self.latency.len())?) + i32::try_from(i)?;
            // Let the consumer go idle between samples.
            tokio::time::sleep(Duration::from_millis(50)).await;
            src.execute(&format!("INSERT INTO {SENTINEL_TABLE} (id) VALUES ($1)"), &[&id]).await?;
            let t = Instant::now();
            wait_sentinel(target, id, Duration::from_secs(30), LATENCY_POLL, &mut alive).await?;
            samples.push(t.elapsed().as_secs_f64() * 1e3);
        }
        if let Some(ms) = Stat::of(samples) {
            self.latency.push(LatencyReport {
                contender: contender.to_owned(),
                samples: self.opts.latency_samples,
                ms,
            });
        }
        // Later contenders of this backlog replay these rows after their sentinel: harmless.
        Ok(())
    }

    /// Writes out both clusters' dirty buffers before a contender starts (untimed), so no
    /// contender pays for writing what the one before it left in shared buffers (checkpoints
    /// are otherwise off during the bench).
    async fn settle(&self) -> anyhow::Result<()> {
        for cluster in [&self.primary, &self.replica] {
            cluster.connect("postgres").await?.batch_execute("CHECKPOINT").await?;
        }
        Ok(())
    }

    /// The initial copy of three Store tables: native `copy_data = true` against pgmirror's
    /// initial copy.
    async fn initial_copy(&mut self) -> anyhow::Result<WorkloadReport> {
        let w = Workload::Initial;
        let opts = self.opts.clone();
        let db = "src_initial".to_owned();
        self.primary.create_database(&db).await?;
        let t = Instant::now();
        w.prepare(&self.primary, &db, opts.scale).await?;
        let generate_s = t.elapsed().as_secs_f64();
        let src = self.primary.connect(&db).await?;
        let tables = publish(&src, w).await?;
        let template = "tpl_initial".to_owned();
        self.make_template(w, &db, &template, &tables, false).await?;
        let fingerprints = workload::fingerprints(&src, &tables).await?;
        let rows: u64 = fingerprints.iter().map(|f| u64::try_from(f.0).unwrap_or(0)).sum();
        let db_bytes: i64 =
            src.query_one("SELECT pg_database_size(current_database())", &[]).await?.get(0);
        let backlog = Backlog {
            db: db.clone(),
            template: template.clone(),
            tables,
            fingerprints,
            end_lsn: Lsn::ZERO,
            proto_version: 0,
        };
        // Warm the source tables into the page cache.
        for t in &backlog.tables {
            src.batch_execute(&format!("SELECT count(*) FROM {}", quote_ident(t))).await?;
        }
        let mut runs = Vec::new();
        for run in 1..=opts.runs {
            for c in [Contender::Native, Contender::Pgmirror] {
                self.settle().await?;
                let result = match c {
                    Contender::Native => self.initial_native(&backlog, run).await,
                    _ => self.initial_pgmirror(&backlog, run).await,
                };
                let result = result.unwrap_or_else(|e| RunResult {
                    run,
                    seconds: None,
                    walsender_cpu_s: None,
                    pgmirror_cpu_s: None,
                    peak_rss_mb: None,
                    verified: false,
                    error: Some(format!("{e:#}")),
                });
                say(&opts, &format!("initial run {run} {}: {}", c.name(), describe(&result)));
                runs.push((c, result));
            }
        }
        self.replica.drop_database(&template).await?;
        self.primary.drop_database(&db).await?;
        Ok(WorkloadReport {
            workload: w.name().to_owned(),
            transactions: 0,
            rows,
            wal_bytes: u64::try_from(db_bytes).unwrap_or(0),
            generate_s,
            contenders: summarize(&runs, rows, 0),
            decode: None,
        })
    }

    async fn initial_native(&self, backlog: &Backlog, run: u32) -> anyhow::Result<RunResult> {
        let name = format!("{}_n_{run}", backlog.db);
        let target = self.target_from(&backlog.template, &name).await?;
        let sub_name = format!("sub_{name}");
        let sub = quote_ident(&sub_name);
        let conninfo = quote_literal(&self.primary.url(&backlog.db));
        let t = Instant::now();
        target
            .batch_execute(&format!(
                "CREATE SUBSCRIPTION {sub} CONNECTION {conninfo} PUBLICATION {} WITH \
                 (copy_data = true, binary = true, streaming = on)",
                quote_ident(PUBLICATION)
            ))
            .await?;
        let want = i64::try_from(backlog.tables.len())?;
        loop {
            let ready: i64 = target
                .query_one(
                    "SELECT count(*) FROM pg_catalog.pg_subscription_rel r \
                     JOIN pg_catalog.pg_subscription s ON s.oid = r.srsubid \
                     WHERE s.subname = $1 AND r.srsubstate = 'r'",
                    &[&sub_name],
                )
                .await?
                .get(0);
            if ready >= want {
                break;
            }
            if t.elapsed() > self.opts.run_timeout {
                bail!("the native initial copy did not finish within {:?}", self.opts.run_timeout);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let seconds = t.elapsed().as_secs_f64();
        let verified = self.verify(backlog, &target).await?;
        target.batch_execute(&format!("DROP SUBSCRIPTION {sub}")).await?;
        drop(target);
        self.replica.drop_database(&name).await?;
        Ok(RunResult {
            run,
            seconds: Some(seconds),
            walsender_cpu_s: None,
            pgmirror_cpu_s: None,
            peak_rss_mb: None,
            verified,
            error: None,
        })
    }

    async fn initial_pgmirror(&self, backlog: &Backlog, run: u32) -> anyhow::Result<RunResult> {
        let name = format!("{}_m_{run}", backlog.db);
        let slot = format!("bench_initial_m_{run}");
        let target = self.target_from(&backlog.template, &name).await?;
        let log = self.scratch.0.join(format!("{name}.log"));
        let t = Instant::now();
        let mut child = self.spawn_pgmirror(&backlog.db, &name, &slot, true, &log)?;
        let pid = child.id().context("pgmirror has no pid")?;
        loop {
            // The registry table appears once pgmirror has started; until then, not ready.
            let state = crate::mirror::registry::load(&target, "bench").await.ok().flatten();
            if state.is_some_and(|r| r.state == crate::mirror::registry::MirrorState::Streaming) {
                break;
            }
            if let Some(status) = child.try_wait()? {
                bail!("pgmirror exited ({status}): {}", log_tail(&log));
            }
            if t.elapsed() > self.opts.run_timeout {
                bail!(
                    "pgmirror's initial copy did not finish within {:?}: {}",
                    self.opts.run_timeout,
                    log_tail(&log)
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let seconds = t.elapsed().as_secs_f64();
        let cpu =
            procstat::cpu_ticks(pid).map(|t| procstat::ticks_as_seconds(t, self.ticks_per_second));
        let rss = procstat::peak_rss_bytes(pid);
        let _ = child.kill().await;
        let verified = self.verify(backlog, &target).await?;
        drop(target);
        self.drop_slot(&backlog.db, &slot).await?;
        self.replica.drop_database(&name).await?;
        Ok(RunResult {
            run,
            seconds: Some(seconds),
            walsender_cpu_s: None,
            pgmirror_cpu_s: cpu,
            peak_rss_mb: rss.map(mb),
            verified,
            error: None,
        })
    }
}

/// Creates the benchmark publication on the workload's tables and the sentinel; returns the
/// data tables (without the sentinel), for fingerprints.
async fn publish(src: &Client, w: Workload) -> anyhow::Result<Vec<String>> {
    let tables: Vec<String> = match w {
        // The initial copy's three big tables are customers, orders and order_items;
        // products (small) comes along so that the foreign keys hold.
        Workload::Oltp | Workload::Initial | Workload::All => {
            store::TABLES.iter().map(|t| (*t).to_owned()).collect()
        }
        Workload::Tpcb => {
            ["pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history"]
                .iter()
                .map(|t| (*t).to_owned())
                .collect()
        }
        Workload::Tiny => vec!["tiny".into()],
        Workload::Bulk => vec!["bulk".into()],
        Workload::Update => vec!["upd".into()],
        Workload::Delete => vec!["del".into()],
        Workload::FullIdentity => vec!["fullid".into()],
    };
    let mut list: Vec<String> = tables.iter().map(|t| quote_ident(t)).collect();
    if w != Workload::Initial {
        list.push(quote_ident(SENTINEL_TABLE));
    }
    src.batch_execute(&format!(
        "CREATE PUBLICATION {} FOR TABLE {}",
        quote_ident(PUBLICATION),
        list.join(", ")
    ))
    .await?;
    Ok(tables)
}

/// Streams `table` from `src` into `dst` with binary COPY.
async fn copy_table(src: &Client, dst: &Client, table: &str) -> anyhow::Result<()> {
    use futures_util::{SinkExt, StreamExt};
    let q = quote_ident(table);
    let out = src.copy_out(&format!("COPY {q} TO STDOUT (FORMAT binary)")).await?;
    let sink =
        dst.copy_in::<_, bytes::Bytes>(&format!("COPY {q} FROM STDIN (FORMAT binary)")).await?;
    futures_util::pin_mut!(out);
    futures_util::pin_mut!(sink);
    while let Some(chunk) = out.next().await {
        sink.send(chunk?).await?;
    }
    sink.finish().await?;
    Ok(())
}

/// How often the live latency is polled. tokio's timer rounds a sleep up to the next whole
/// millisecond, which made sub-millisecond latencies read as 1-3 ms.
const LATENCY_POLL: Duration = Duration::from_micros(100);
/// How often a catch-up is polled.
const CATCH_UP_POLL: Duration = Duration::from_millis(1);

/// Polls `target` every `gap` until the sentinel row `id` is visible.
async fn wait_sentinel(
    target: &Client,
    id: i32,
    timeout: Duration,
    gap: Duration,
    mut alive: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let sql = format!("SELECT EXISTS (SELECT 1 FROM {SENTINEL_TABLE} WHERE id = $1)");
    let stmt = target.prepare(&sql).await?;
    let t = Instant::now();
    loop {
        if target.query_one(&stmt, &[&id]).await?.get::<_, bool>(0) {
            return Ok(());
        }
        alive()?;
        if t.elapsed() > timeout {
            bail!("the target did not catch up within {timeout:?}");
        }
        if gap < Duration::from_millis(1) {
            tokio::task::spawn_blocking(move || std::thread::sleep(gap)).await?;
        } else {
            tokio::time::sleep(gap).await;
        }
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

fn mb(bytes: u64) -> f64 {
    // Byte counts of a process fit f64 exactly.
    #[allow(clippy::cast_precision_loss)]
    let b = bytes as f64;
    b / f64::from(1u32 << 20)
}

fn describe(r: &RunResult) -> String {
    match (&r.error, r.seconds) {
        (Some(e), _) => format!("FAILED: {e}"),
        (None, Some(s)) => format!("{s:.2} s, verified {}", r.verified),
        (None, None) => "no result".into(),
    }
}

#[allow(clippy::cast_precision_loss)]
fn per_second(count: u64, seconds: f64) -> Option<f64> {
    (count > 0 && seconds > 0.0).then(|| count as f64 / seconds)
}

fn summarize(runs: &[(Contender, RunResult)], rows: u64, txns: u64) -> Vec<ContenderReport> {
    let mut out = Vec::new();
    let contenders: Vec<Contender> =
        Contender::EACH.into_iter().filter(|c| runs.iter().any(|(x, _)| x == c)).collect();
    for c in contenders {
        let mine: Vec<RunResult> =
            runs.iter().filter(|(x, _)| *x == c).map(|(_, r)| r.clone()).collect();
        let seconds = Stat::of(mine.iter().filter_map(|r| r.seconds));
        out.push(ContenderReport {
            contender: c.name().to_owned(),
            seconds,
            rows_per_s: seconds.and_then(|s| per_second(rows, s.median)),
            txns_per_s: seconds.and_then(|s| per_second(txns, s.median)),
            ratio_vs_native: None,
            walsender_cpu_s: Stat::of(mine.iter().filter_map(|r| r.walsender_cpu_s)),
            vs_walsender_cpu: Stat::of(mine.iter().filter_map(|r| {
                match (r.seconds, r.walsender_cpu_s) {
                    (Some(s), Some(w)) if w > 0.0 => Some(s / w),
                    _ => None,
                }
            })),
            walsender_cpu_vs_native: None,
            pgmirror_cpu_s: Stat::of(mine.iter().filter_map(|r| r.pgmirror_cpu_s)),
            peak_rss_mb: mine.iter().filter_map(|r| r.peak_rss_mb).reduce(f64::max),
            verified: !mine.is_empty() && mine.iter().all(|r| r.verified && r.error.is_none()),
            runs: mine,
        });
    }
    let native = out.iter().find(|c| c.contender == "native").and_then(|c| c.seconds);
    for c in &mut out {
        c.ratio_vs_native = match (c.seconds, native) {
            (Some(s), Some(n)) if n.median > 0.0 => Some(s.median / n.median),
            _ => None,
        };
        c.walsender_cpu_vs_native = match (c.walsender_cpu_s, native) {
            (Some(w), Some(n)) if n.median > 0.0 => Some(w.median / n.median),
            _ => None,
        };
    }
    out
}

/// The report as a text table.
pub fn render(report: &BenchReport) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "PostgreSQL {}, scale {}, {} run(s); seconds are median (min-max)",
        report.server_version, report.scale, report.runs
    );
    let _ = writeln!(
        s,
        "{:<14} {:<15} {:>22} {:>11} {:>10} {:>7} {:>20} {:>8} {:>8} {:>5}",
        "workload",
        "contender",
        "seconds",
        "rows/s",
        "txns/s",
        "vs nat",
        "walsender CPU s",
        "pgm CPU",
        "RSS MB",
        "ok"
    );
    for w in &report.workloads {
        for c in &w.contenders {
            let opt = |v: Option<f64>, prec: usize| v.map_or("-".into(), |v| format!("{v:.prec$}"));
            let stat = |v: Option<Stat>| {
                v.map_or("-".into(), |v| format!("{:.2} ({:.2}-{:.2})", v.median, v.min, v.max))
            };
            let _ = writeln!(
                s,
                "{:<14} {:<15} {:>22} {:>11} {:>10} {:>7} {:>20} {:>8} {:>8} {:>5}",
                w.workload,
                c.contender,
                stat(c.seconds),
                opt(c.rows_per_s, 0),
                opt(c.txns_per_s, 0),
                opt(c.ratio_vs_native, 2),
                stat(c.walsender_cpu_s),
                opt(c.pgmirror_cpu_s.map(|s| s.median), 2),
                opt(c.peak_rss_mb, 0),
                if c.verified { "yes" } else { "NO" },
            );
            for r in &c.runs {
                if let Some(e) = &r.error {
                    let _ = writeln!(s, "    run {} failed: {e}", r.run);
                }
            }
        }
        let mut line = format!(
            "  {}: {} txns, {} rows, {:.1} MB {}, generated in {:.1} s",
            w.workload,
            w.transactions,
            w.rows,
            mb(w.wal_bytes),
            if w.decode.is_some() { "WAL" } else { "source database" },
            w.generate_s
        );
        if let Some(d) = &w.decode {
            let _ = write!(
                line,
                "; decoding {} messages ({:.1} MB) took {:.3} s{}",
                d.messages,
                mb(d.payload_bytes),
                d.decode_s,
                d.share_of_pgmirror_cpu
                    .map_or(String::new(), |x| format!(" = {:.1}% of pgmirror's CPU", x * 100.0))
            );
        }
        let pgmirror = w.contenders.iter().find(|c| c.contender == Contender::Pgmirror.name());
        if let Some((vs, floor)) =
            pgmirror.and_then(|c| c.vs_walsender_cpu.zip(c.walsender_cpu_vs_native))
        {
            let _ = write!(
                line,
                "; pgmirror took {:.2}x ({:.2}-{:.2}) its walsender's CPU time, which alone was \
                 {floor:.2} of native's time",
                vs.median, vs.min, vs.max
            );
        }
        let _ = writeln!(s, "{line}");
    }
    for l in &report.latency {
        let _ = writeln!(
            s,
            "live latency {}: median {:.1} ms (min {:.1}, max {:.1}) over {} samples",
            l.contender, l.ms.median, l.ms.min, l.ms.max, l.samples
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats() {
        assert!(Stat::of([]).is_none());
        let s = Stat::of([3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(Stat::of([4.0, 1.0, 2.0, 3.0]).unwrap().median, 2.5);
    }

    fn ok(run: u32, seconds: f64) -> RunResult {
        RunResult {
            run,
            seconds: Some(seconds),
            walsender_cpu_s: Some(1.0),
            pgmirror_cpu_s: None,
            peak_rss_mb: None,
            verified: true,
            error: None,
        }
    }

    #[test]
    fn summaries_and_ratio() {
        let runs = vec![
            (Contender::Native, ok(1, 4.0)),
            (Contender::Pgmirror, ok(1, 1.0)),
            (Contender::Native, ok(2, 6.0)),
            (
                Contender::Pgmirror,
                RunResult { error: Some("x".into()), verified: false, ..ok(2, 2.0) },
            ),
        ];
        let s = summarize(&runs, 1000, 100);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].seconds.unwrap().median, 5.0);
        assert_eq!(s[0].rows_per_s, Some(200.0));
        assert_eq!(s[0].txns_per_s, Some(20.0));
        assert!(s[0].verified);
        assert_eq!(s[1].ratio_vs_native, Some(1.5 / 5.0));
        assert!(!s[1].verified);
        // Every run's walsender spent 1 s: native took 4 and 6 s, pgmirror 1 and 2 s.
        assert_eq!(s[0].vs_walsender_cpu.unwrap().median, 5.0);
        assert_eq!(s[1].vs_walsender_cpu.unwrap().median, 1.5);
        assert_eq!(s[1].walsender_cpu_vs_native, Some(1.0 / 5.0));
        let text = render(&BenchReport {
            server_version: "15".into(),
            scale: 1.0,
            runs: 2,
            workloads: vec![WorkloadReport {
                workload: "tiny".into(),
                transactions: 100,
                rows: 1000,
                wal_bytes: 1 << 20,
                generate_s: 1.0,
                contenders: s,
                decode: None,
            }],
            latency: vec![],
        });
        assert!(text.contains("run 2 failed: x"), "{text}");
        assert!(
            text.contains("pgmirror took 1.50x (1.00-2.00) its walsender's CPU time, which alone was 0.20 of native's time"),
            "{text}"
        );
        assert!(text.contains("NO"), "{text}");
    }
}
