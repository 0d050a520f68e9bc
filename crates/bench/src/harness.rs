//! The two clusters, the streaming workloads and their contenders.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use pgcluster::Cluster;
use pgconn::{quote_ident, quote_literal};
use pgoutput_decoder::Lsn;
use tokio_postgres::Client;

use crate::BenchOptions;
use crate::clusters::{bench_cluster_builder, checkpoint, cluster_settings, copy_table, drop_db};
use crate::error::Error;
use crate::procstat::{self, BackendSampler, CpuSpan, WalsenderSampler};
use crate::report::{
    BenchReport, Contender, DecodeShare, LatencyReport, PathCpu, ProcessFigures, RunResult, Stat,
    WorkloadReport, describe, mb, summarize_named,
};
use crate::sentinel::{self, SentinelWatch};
use crate::workload::{self, SENTINEL_DDL, SENTINEL_TABLE, Workload};

/// The publication every contender streams.
pub(crate) const PUBLICATION: &str = "pgmirror_bench";

/// A directory removed on drop.
#[derive(Debug)]
pub(crate) struct ScratchDir(pub(crate) PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The two clusters and what every run needs.
pub(crate) struct Bench {
    pub(crate) opts: BenchOptions,
    pub(crate) primary: Cluster,
    pub(crate) replica: Cluster,
    pub(crate) scratch: ScratchDir,
    pub(crate) ticks_per_second: f64,
    pub(crate) latency: Vec<LatencyReport>,
    /// The MariaDB server of the `pgmirror-mariadb` contender (`--mariadb`).
    pub(crate) mariadb: Option<testservers::mariadb::MariaDb>,
    /// pglogical is installed and preloaded on both clusters (the `pglogical` contender).
    pub(crate) pglogical: bool,
}

/// One streaming backlog on the primary.
pub(crate) struct Backlog {
    pub(crate) db: String,
    pub(crate) template: String,
    pub(crate) tables: Vec<String>,
    pub(crate) fingerprints: Vec<(i64, String)>,
    pub(crate) end_lsn: Lsn,
    pub(crate) proto_version: u32,
}

pub(crate) fn say(opts: &BenchOptions, text: &str) {
    if opts.verbose {
        eprintln!("bench: {text}");
    }
}

/// Runs the benchmark: starts the clusters, runs every workload, removes the clusters.
///
/// # Errors
/// Clusters that do not start, or a workload whose backlog cannot be generated. A contender
/// that fails is reported in its [`RunResult`] instead.
pub async fn run(opts: BenchOptions) -> Result<BenchReport, Error> {
    if opts.runs == 0 {
        return Err(Error::Failed("at least one run of each contender is needed".into()));
    }
    let durable = opts.durable;
    let (primary, replica, pglogical) = tokio::task::spawn_blocking(move || -> Result<_, Error> {
        let pglogical = crate::pglogical::installed(&pgcluster::find_bindir()?);
        let builder = || bench_cluster_builder(durable, pglogical);
        let primary = builder().start().map_err(Error::context("starting the primary"))?;
        let replica = builder().start().map_err(Error::context("starting the replica"))?;
        Ok((primary, replica, pglogical))
    })
    .await
    .map_err(|e| Error::Failed(format!("starting the clusters: {e}")))??;
    let mariadb = if opts.mariadb {
        Some(
            tokio::task::spawn_blocking(crate::mariadb::start)
                .await
                .map_err(|e| Error::Failed(format!("starting MariaDB: {e}")))??,
        )
    } else {
        None
    };
    let scratch = std::env::temp_dir().join(pgcluster::unique_name("pgmirror_bench"));
    std::fs::create_dir_all(&scratch).map_err(Error::context("creating a scratch directory"))?;
    let mut bench = Bench {
        opts,
        primary,
        replica,
        scratch: ScratchDir(scratch),
        ticks_per_second: procstat::clock_ticks_per_second(),
        latency: Vec::new(),
        mariadb,
        pglogical,
    };
    let server_version: String = bench
        .primary
        .connect("postgres")
        .await?
        .query_one("SHOW server_version", &[])
        .await?
        .get(0);
    let clusters = vec![
        cluster_settings(&bench.primary, "primary").await?,
        cluster_settings(&bench.replica, "replica").await?,
    ];
    let mut notes = Vec::new();
    if !bench.pglogical {
        let major = server_version.split(['.', ' ']).next().unwrap_or_default();
        notes.push(crate::pglogical::skipped_note(major));
    }
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
            workloads.push(report.map_err(Error::context(format!("workload {w}")))?);
        }
        Ok::<_, Error>(())
    }
    .await;
    let Bench { primary, replica, latency, opts, mariadb, .. } = bench;
    let _ = tokio::task::spawn_blocking(move || {
        drop(primary);
        drop(replica);
        drop(mariadb);
    })
    .await;
    result?;
    Ok(BenchReport {
        server_version,
        durable: opts.durable,
        clusters,
        notes,
        scale: opts.scale.as_f64(),
        runs: opts.runs,
        workloads,
        latency,
    })
}

async fn current_lsn(client: &Client) -> Result<Lsn, Error> {
    let text: String = client.query_one("SELECT pg_current_wal_lsn()::text", &[]).await?.get(0);
    text.parse().map_err(|e| Error::Failed(format!("the primary's WAL position: {e}")))
}

impl Bench {
    /// The contenders of streaming workload `w`: the MariaDB one only with a MariaDB server,
    /// pglogical only when installed and able to replicate `w`.
    fn contenders(&self, w: Workload) -> Vec<Contender> {
        let mariadb = self.mariadb.is_some();
        let pglogical = self.pglogical && crate::pglogical::unsupported(w).is_none();
        Contender::EACH
            .into_iter()
            .filter(|c| *c != Contender::MariaDbLoadData)
            .filter(|c| mariadb || *c != Contender::PgmirrorMariaDb)
            .filter(|c| pglogical || *c != Contender::Pglogical)
            .collect()
    }

    fn slot(&self, w: Workload, c: &str, run: u32) -> String {
        format!("bench_{}_{c}_{run}", w.name().replace('-', "_"))
    }

    /// The slot of contender `c`'s run `run` on workload `w` (source database `db`) and its
    /// output plugin.
    async fn contender_slot(
        &self,
        src: &Client,
        db: &str,
        w: Workload,
        c: Contender,
        run: u32,
    ) -> Result<(String, &'static str), Error> {
        Ok(match c {
            Contender::Pglogical => (
                crate::pglogical::slot_name(src, &crate::pglogical::target_db(db, run)).await?,
                crate::pglogical::PLUGIN,
            ),
            _ => (self.slot(w, c.short(), run), "pgoutput"),
        })
    }

    /// Creates the target template database: the workload's tables and the primary's base
    /// rows (copied with binary COPY).
    pub(crate) async fn make_template(
        &self,
        w: Workload,
        src_db: &str,
        template: &str,
        tables: &[String],
        copy_rows: bool,
    ) -> Result<(), Error> {
        self.replica.create_database(template).await?;
        let tpl = self.replica.connect(template).await?;
        let src = self.primary.connect(src_db).await?;
        match w.target_ddl() {
            Some(ddl) => tpl.batch_execute(&ddl).await?,
            None => {
                for t in tablesync::publication_tables(&src, PUBLICATION).await? {
                    if t.name != SENTINEL_TABLE {
                        tpl.batch_execute(&tablesync::create_table_sql(&t)).await?;
                    }
                }
            }
        }
        tpl.batch_execute(SENTINEL_DDL).await?;
        tpl.batch_execute(&sentinel::notify_ddl()).await?;
        if copy_rows {
            for t in tables {
                copy_table(&src, &tpl, t).await.map_err(Error::context(format!("copying {t}")))?;
            }
            tpl.batch_execute("VACUUM ANALYZE").await?;
        }
        Ok(())
    }

    /// A fresh target database, a copy of `template`.
    pub(crate) async fn target_from(&self, template: &str, name: &str) -> Result<Client, Error> {
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
                Err(e) => return Err(Error::context("creating a target database")(e)),
            }
        }
        Ok(self.replica.connect(name).await?)
    }

    pub(crate) async fn drop_slot(&self, db: &str, slot: &str) -> Result<(), Error> {
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
                Err(e) => return Err(Error::context("dropping a benchmark slot")(e)),
            }
        }
    }

    /// A streaming workload: backlog, recording, then every contender `runs` times.
    async fn streaming(&mut self, w: Workload) -> Result<WorkloadReport, Error> {
        let opts = self.opts.clone();
        let db = format!("src_{}", w.name().replace('-', "_"));
        self.primary.create_database(&db).await?;
        w.prepare(&self.primary, &db, opts.scale)
            .await
            .map_err(Error::context("preparing the primary"))?;
        let src = self.flushing_session(&db).await?;
        let tables = publish(&src, w).await?;
        let contenders = self.contenders(w);
        let mut notes = Vec::new();
        if contenders.contains(&Contender::Pglogical) {
            crate::pglogical::provide(&src, &self.primary.url(&db), &tables)
                .await
                .map_err(Error::context("setting up the pglogical provider"))?;
        } else if let Some(why) = crate::pglogical::unsupported(w).filter(|_| self.pglogical) {
            notes.push(why.to_owned());
        }
        let template = format!("tpl_{}", w.name().replace('-', "_"));
        self.make_template(w, &db, &template, &tables, true).await?;
        if self.mariadb.is_some() {
            self.mariadb_base(&db).await.map_err(Error::context("MariaDB base rows"))?;
        }

        // Every slot exists before the first change of the backlog.
        let mut slots = vec![(self.slot(w, "rec", 0), "pgoutput")];
        for run in 1..=opts.runs {
            for &c in &contenders {
                slots.push(self.contender_slot(&src, &db, w, c, run).await?);
            }
            for n in &opts.shards {
                slots.push((self.slot(w, &format!("s{n}"), run), "pgoutput"));
            }
        }
        for (s, plugin) in &slots {
            src.execute("SELECT pg_create_logical_replication_slot($1, $2)", &[s, plugin]).await?;
        }
        let start_lsn = current_lsn(&src).await?;
        say(&opts, &format!("{w}: generating the backlog"));
        let t = Instant::now();
        // The sentinel table's first change opens the backlog, so every consumer has met
        // both tables before the bulk of it. (pgmirror's applier deadlocks when a table's
        // first change arrives while a COPY into another table is open.)
        src.execute(&format!("INSERT INTO {SENTINEL_TABLE} (id) VALUES (0)"), &[]).await?;
        w.generate(&self.primary, &db, opts.scale)
            .await
            .map_err(Error::context("generating the backlog"))?;
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
            self.record_backlog(&db, &slots[0].0, end_lsn, &rec_path).await?;
        let (messages, decode_s) = recording::decode_all(&rec_path)?;
        let _ = std::fs::remove_file(&rec_path);
        self.drop_slot(&db, &slots[0].0).await?;

        let backlog =
            Backlog { db: db.clone(), template, tables, fingerprints, end_lsn, proto_version };
        let mut runs: Vec<(Contender, RunResult)> = Vec::new();
        let mut sharded: Vec<(String, Vec<RunResult>)> = Vec::new();
        for run in 1..=opts.runs {
            for &c in &contenders {
                self.settle().await?;
                let (slot, _) = self.contender_slot(&src, &db, w, c, run).await?;
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
                    Contender::PgmirrorMariaDb => {
                        self.run_pgmirror_mariadb(&backlog, &slot, run).await
                    }
                    Contender::Pglogical => {
                        self.run_pglogical(&backlog, &slot, run, measure_latency).await
                    }
                    Contender::MariaDbLoadData => continue,
                };
                let mut result = result.unwrap_or_else(|e| RunResult::failed(run, &e));
                result.run = run;
                say(&opts, &format!("{w} run {run} {}: {}", c.name(), describe(&result)));
                if let Err(e) = self.drop_slot(&db, &slot).await {
                    tracing::warn!(error = %e.one_line(), "could not drop a slot");
                }
                runs.push((c, result));
            }
            for &n in &opts.shards {
                self.settle().await?;
                let slot = self.slot(w, &format!("s{n}"), run);
                let mut result = self
                    .run_sharded(&backlog, &slot, run, n)
                    .await
                    .unwrap_or_else(|e| RunResult::failed(run, &e));
                result.run = run;
                let name = crate::shards::contender_name(n);
                say(&opts, &format!("{w} run {run} {name}: {}", describe(&result)));
                if let Err(e) = self.drop_slot(&db, &slot).await {
                    tracing::warn!(error = %e.one_line(), "could not drop a slot");
                }
                match sharded.iter_mut().find(|(x, _)| *x == name) {
                    Some((_, results)) => results.push(result),
                    None => sharded.push((name, vec![result])),
                }
            }
        }
        drop(src);
        self.drop_replica_db(&backlog.template).await?;
        self.drop_primary_db(&db).await?;

        let contenders = summarize_named(&runs, sharded, summary.changes, summary.transactions);
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
            notes,
        })
    }

    async fn record_backlog(
        &self,
        db: &str,
        slot: &str,
        end_lsn: Lsn,
        path: &Path,
    ) -> Result<(recording::RecordSummary, u32), Error> {
        let src = self.primary.connect(db).await?;
        let opts = recording::RecordOptions {
            source: pgconn::ConnConfig::parse(&self.primary.url(db))?,
            publication: PUBLICATION.into(),
            tables: tablesync::publication_tables(&src, PUBLICATION).await?,
            slot: slot.to_owned(),
            create_slot: false,
            out: path.to_owned(),
            stop: recording::StopAt { until_lsn: Some(end_lsn), duration: None, idle: None },
            binary: true,
        };
        drop(src);
        let summary = tokio::time::timeout(
            self.opts.run_timeout,
            recording::record(&opts, std::future::pending()),
        )
        .await
        .map_err(|_| Error::Failed("recording the backlog timed out".into()))??;
        let reader = recording::RecordingReader::open(path).map_err(recording::Error::from)?;
        let proto = reader.header().proto_version;
        Ok((summary, proto))
    }

    pub(crate) async fn verify(&self, backlog: &Backlog, target: &Client) -> Result<bool, Error> {
        let got = workload::fingerprints(target, &backlog.tables).await?;
        Ok(got == backlog.fingerprints)
    }

    async fn run_native(
        &mut self,
        backlog: &Backlog,
        slot: &str,
        run: u32,
        measure_latency: bool,
    ) -> Result<RunResult, Error> {
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
        let mut watch = SentinelWatch::start(&self.replica, &name).await?;
        let sampler =
            WalsenderSampler::start(self.primary.connect(&backlog.db).await?, slot.into());
        let backends = self.target_sampler(&target, &name, &watch).await?;
        let t = Instant::now();
        target.batch_execute(&format!("ALTER SUBSCRIPTION {sub} ENABLE")).await?;
        watch.wait(1, self.opts.run_timeout, || Ok(())).await?;
        let seconds = t.elapsed().as_secs_f64();
        let walsender_cpu_s = sampler.finish(self.ticks_per_second);
        let target_cpu_s = backends.finish(self.ticks_per_second);
        if measure_latency {
            let path = SamplePath { slot, consumer: None, target_db: &name };
            self.measure_latency("native", &backlog.db, &target, &mut watch, path, || Ok(()))
                .await?;
        }
        let verified = self.verify(backlog, &target).await?;
        target.batch_execute(&format!("ALTER SUBSCRIPTION {sub} DISABLE")).await?;
        target.batch_execute(&format!("ALTER SUBSCRIPTION {sub} SET (slot_name = NONE)")).await?;
        target.batch_execute(&format!("DROP SUBSCRIPTION {sub}")).await?;
        drop(target);
        self.drop_replica_db(&name).await?;
        Ok(RunResult::subscriber(run, seconds, walsender_cpu_s, target_cpu_s, verified))
    }

    async fn run_recvlogical(&self, backlog: &Backlog, slot: &str) -> Result<RunResult, Error> {
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
            .map_err(|_| Error::Failed("pg_recvlogical timed out".into()))??;
        let seconds = t.elapsed().as_secs_f64();
        let walsender_cpu_s = sampler.finish(self.ticks_per_second);
        if !out.status.success() {
            return Err(Error::Failed(format!(
                "pg_recvlogical failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
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
            target_cpu_s: None,
            peak_rss_mb: None,
            verified: confirmed >= backlog.end_lsn,
            error: None,
        })
    }

    pub(crate) fn spawn_pgmirror(
        &self,
        src_db: &str,
        target_db: &str,
        slot: &str,
        initial_copy: bool,
        log: &Path,
    ) -> Result<tokio::process::Child, Error> {
        self.spawn_pgmirror_to(src_db, &self.replica.url(target_db), slot, initial_copy, log)
    }

    /// `pgmirror mirror` from `slot` into the target at `target_url`.
    pub(crate) fn spawn_pgmirror_to(
        &self,
        src_db: &str,
        target_url: &str,
        slot: &str,
        initial_copy: bool,
        log: &Path,
    ) -> Result<tokio::process::Child, Error> {
        let log_file = std::fs::File::create(log)?;
        let mut cmd = tokio::process::Command::new(&self.opts.pgmirror_exe);
        cmd.arg("mirror")
            .arg("--source")
            .arg(self.primary.url(src_db))
            .arg("--target")
            .arg(target_url)
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
        cmd.spawn().map_err(Error::context("starting pgmirror"))
    }

    async fn run_pgmirror(
        &mut self,
        backlog: &Backlog,
        slot: &str,
        run: u32,
        measure_latency: bool,
    ) -> Result<RunResult, Error> {
        let name = format!("{}_m_{run}", backlog.db);
        let target = self.target_from(&backlog.template, &name).await?;
        let mut watch = SentinelWatch::start(&self.replica, &name).await?;
        let log = self.scratch.0.join(format!("{name}.log"));
        let sampler =
            WalsenderSampler::start(self.primary.connect(&backlog.db).await?, slot.into());
        let backends = self.target_sampler(&target, &name, &watch).await?;
        let t = Instant::now();
        let mut child = self.spawn_pgmirror(&backlog.db, &name, slot, false, &log)?;
        let pid = child.id().ok_or_else(|| Error::Failed("pgmirror has no pid".into()))?;
        let alive = |child: &mut tokio::process::Child| -> Result<(), Error> {
            if let Some(status) = child.try_wait()? {
                return Err(Error::Failed(format!(
                    "pgmirror exited ({status}): {}",
                    log_tail(&log)
                )));
            }
            Ok(())
        };
        let waited = watch
            .wait(1, self.opts.run_timeout, || alive(&mut child))
            .await
            .map_err(|e| Error::context(format!("pgmirror's log: {}", log_tail(&log)))(e));
        let seconds = t.elapsed().as_secs_f64();
        // Read while the process still runs: its /proc entry goes with it.
        let process = self.process_figures(pid);
        let walsender_cpu_s = sampler.finish(self.ticks_per_second);
        let target_cpu_s = backends.finish(self.ticks_per_second);
        waited?;
        if measure_latency {
            let path = SamplePath { slot, consumer: Some(pid), target_db: &name };
            self.measure_latency("pgmirror", &backlog.db, &target, &mut watch, path, || {
                alive(&mut child)
            })
            .await?;
        }
        let _ = child.kill().await;
        let verified = self.verify(backlog, &target).await?;
        drop(target);
        self.drop_replica_db(&name).await?;
        let mut result = RunResult::measured(run, seconds, walsender_cpu_s, process, verified);
        result.target_cpu_s = target_cpu_s;
        Ok(result)
    }

    /// A session on the primary's database `db` whose commits wait for their WAL flush,
    /// whatever the server's `synchronous_commit`: what it commits (the sentinels, the latency
    /// samples) can be sent at once, and the WAL position read after it covers it. With
    /// asynchronous commit, a commit waits up to `wal_writer_delay` (200 ms) before a walsender
    /// may send it, and `pg_current_wal_lsn()` can lag behind it.
    async fn flushing_session(&self, db: &str) -> Result<Client, Error> {
        let client = self.primary.connect(db).await?;
        client.batch_execute("SET synchronous_commit = on").await?;
        Ok(client)
    }

    /// Drops database `name` of the replica (see [`drop_db`]).
    pub(crate) async fn drop_replica_db(&self, name: &str) -> Result<(), Error> {
        drop_db(&self.replica, name, self.pglogical).await
    }

    /// Drops database `name` of the primary (see [`drop_db`]).
    pub(crate) async fn drop_primary_db(&self, name: &str) -> Result<(), Error> {
        drop_db(&self.primary, name, self.pglogical).await
    }

    /// Writes out both clusters' dirty buffers before a contender starts (see [`checkpoint`]).
    pub(crate) async fn settle(&self) -> Result<(), Error> {
        checkpoint([&self.primary, &self.replica]).await
    }

    /// Samples the CPU time of the replica's processes in target database `name`, except the
    /// benchmark's own sessions there: `target` and `watch`.
    async fn target_sampler(
        &self,
        target: &Client,
        name: &str,
        watch: &SentinelWatch,
    ) -> Result<BackendSampler, Error> {
        let me: i32 = target.query_one("SELECT pg_catalog.pg_backend_pid()", &[]).await?.get(0);
        let exclude = vec![me, watch.pid()];
        Ok(BackendSampler::start(self.replica.connect("postgres").await?, name.into(), exclude))
    }

    /// The CPU time and peak RSS of process `pid`, while it still runs.
    pub(crate) fn process_figures(&self, pid: u32) -> ProcessFigures {
        ProcessFigures {
            cpu_s: procstat::cpu_ticks(pid)
                .map(|t| procstat::ticks_as_seconds(t, self.ticks_per_second)),
            peak_rss_mb: procstat::peak_rss_bytes(pid).map(mb),
        }
    }

    /// Single-row inserts on the idle primary, each timed until visible on the target, and
    /// the CPU time per insert of the processes on its way (`path`).
    pub(crate) async fn measure_latency(
        &mut self,
        contender: &str,
        db: &str,
        target: &Client,
        watch: &mut SentinelWatch,
        path: SamplePath<'_>,
        mut alive: impl FnMut() -> Result<(), Error>,
    ) -> Result<(), Error> {
        let src = self.flushing_session(db).await?;
        let walsender = procstat::server_pids(&src, procstat::WALSENDER_PID, path.slot).await?;
        // The benchmark's own sessions are left out: `target`, which asks, and the watch.
        let mut appliers =
            procstat::server_pids(target, procstat::DATABASE_PIDS, path.target_db).await?;
        appliers.retain(|&p| i64::from(p) != i64::from(watch.pid()));
        let walsender = CpuSpan::start(&walsender);
        let consumer = path.consumer.map(|p| CpuSpan::start(&[p]));
        let appliers = CpuSpan::start(&appliers);
        let mut samples = Vec::new();
        for i in 0..self.opts.latency_samples {
            // Ids distinct per contender: later slots replay earlier contenders' samples.
            let id = i32::try_from(1_000 * (2 + self.latency.len()) + i)
                .map_err(|_| Error::Failed("too many latency samples".into()))?;
            // Let the consumer go idle between samples.
            tokio::time::sleep(Duration::from_millis(50)).await;
            src.execute(&format!("INSERT INTO {SENTINEL_TABLE} (id) VALUES ($1)"), &[&id]).await?;
            let t = Instant::now();
            watch.wait(id, Duration::from_secs(30), &mut alive).await?;
            samples.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let n = self.opts.latency_samples;
        // Microseconds per sample. Sample counts stay far below 2^52: exact as f64.
        #[allow(clippy::cast_precision_loss)]
        let per_sample = |span: &CpuSpan| span.nanos().map(|ns| ns as f64 / n as f64 / 1e3);
        let cpu_us = PathCpu {
            walsender: per_sample(&walsender),
            consumer: consumer.as_ref().and_then(per_sample),
            target: per_sample(&appliers),
        };
        if let Some(ms) = Stat::of(samples) {
            self.latency.push(LatencyReport {
                contender: contender.to_owned(),
                samples: n,
                ms,
                cpu_us,
            });
        }
        // Later contenders of this backlog replay these rows after their sentinel: harmless.
        Ok(())
    }
}

/// Creates the benchmark publication on the workload's tables and the sentinel; returns the
/// data tables (without the sentinel), for fingerprints.
pub(crate) async fn publish(src: &Client, w: Workload) -> Result<Vec<String>, Error> {
    let tables: Vec<String> = match w {
        // The initial copy's three big tables are customers, orders and order_items;
        // products (small) comes along so that the foreign keys hold.
        Workload::Oltp | Workload::Store4 | Workload::Initial | Workload::All => {
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

/// The processes a latency sample's change goes through on its way to the target.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SamplePath<'a> {
    /// The slot whose walsender sends the changes.
    pub(crate) slot: &'a str,
    /// The consumer's own process (pgmirror), when it runs outside the servers.
    pub(crate) consumer: Option<u32>,
    /// The target database, whose server processes apply the changes.
    pub(crate) target_db: &'a str,
}

pub(crate) fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}
