//! The initial copy workload: the native subscriber's `copy_data` against pgmirror's copy.

use std::time::{Duration, Instant};

use pgconn::{quote_ident, quote_literal};
use pgoutput_decoder::Lsn;
use tokio_postgres::Client;

use crate::error::Error;
use crate::harness::{Backlog, Bench, PUBLICATION, log_tail, publish, say};
use crate::procstat;
use crate::report::{Contender, RunResult, WorkloadReport, describe, mb, summarize};
use crate::workload::{self, Workload};

impl Bench {
    /// The initial copy of three Store tables: native `copy_data = true` against pgmirror's
    /// initial copy.
    pub(crate) async fn initial_copy(&mut self) -> Result<WorkloadReport, Error> {
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
                let result = result.unwrap_or_else(|e| RunResult::failed(run, &e));
                say(&opts, &format!("initial run {run} {}: {}", c.name(), describe(&result)));
                runs.push((c, result));
            }
            if self.mariadb.is_some() {
                self.settle().await?;
                let (copy, load) = self
                    .initial_mariadb(&backlog, run)
                    .await
                    .unwrap_or_else(|e| (RunResult::failed(run, &e), RunResult::failed(run, &e)));
                for (c, result) in
                    [(Contender::PgmirrorMariaDb, copy), (Contender::MariaDbLoadData, load)]
                {
                    say(&opts, &format!("initial run {run} {}: {}", c.name(), describe(&result)));
                    runs.push((c, result));
                }
            }
        }
        drop(src);
        self.drop_replica_db(&template).await?;
        self.drop_primary_db(&db).await?;
        Ok(WorkloadReport {
            workload: w.name().to_owned(),
            transactions: 0,
            rows,
            wal_bytes: u64::try_from(db_bytes).unwrap_or(0),
            generate_s,
            contenders: summarize(&runs, rows, 0),
            decode: None,
            notes: Vec::new(),
        })
    }

    async fn initial_native(&self, backlog: &Backlog, run: u32) -> Result<RunResult, Error> {
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
        let want = i64::try_from(backlog.tables.len()).unwrap_or(i64::MAX);
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
                return Err(Error::Failed(format!(
                    "the native initial copy did not finish within {:?}",
                    self.opts.run_timeout
                )));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let seconds = t.elapsed().as_secs_f64();
        let verified = self.verify(backlog, &target).await?;
        target.batch_execute(&format!("DROP SUBSCRIPTION {sub}")).await?;
        drop(target);
        self.drop_replica_db(&name).await?;
        Ok(RunResult {
            run,
            seconds: Some(seconds),
            walsender_cpu_s: None,
            target_cpu_s: None,
            pgmirror_cpu_s: None,
            peak_rss_mb: None,
            verified,
            error: None,
        })
    }

    async fn initial_pgmirror(&self, backlog: &Backlog, run: u32) -> Result<RunResult, Error> {
        let name = format!("{}_m_{run}", backlog.db);
        let slot = format!("bench_initial_m_{run}");
        let target = self.target_from(&backlog.template, &name).await?;
        let log = self.scratch.0.join(format!("{name}.log"));
        let t = Instant::now();
        let mut child = self.spawn_pgmirror(&backlog.db, &name, &slot, true, &log)?;
        let pid = child.id().ok_or_else(|| Error::Failed("pgmirror has no pid".into()))?;
        loop {
            if copy_done(&target).await {
                break;
            }
            if let Some(status) = child.try_wait()? {
                return Err(Error::Failed(format!(
                    "pgmirror exited ({status}): {}",
                    log_tail(&log)
                )));
            }
            if t.elapsed() > self.opts.run_timeout {
                return Err(Error::Failed(format!(
                    "pgmirror's initial copy did not finish within {:?}: {}",
                    self.opts.run_timeout,
                    log_tail(&log)
                )));
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
        self.drop_replica_db(&name).await?;
        Ok(RunResult {
            run,
            seconds: Some(seconds),
            walsender_cpu_s: None,
            target_cpu_s: None,
            pgmirror_cpu_s: cpu,
            peak_rss_mb: rss.map(mb),
            verified,
            error: None,
        })
    }
}

/// Whether the pgmirror child has finished its initial copy: its mirror's row in
/// `pgmirror.mirrors` says `streaming`. The table appears once pgmirror has started; until
/// then, or when a query fails, not yet.
async fn copy_done(target: &Client) -> bool {
    let exists = target
        .query_one("SELECT to_regclass('pgmirror.mirrors') IS NOT NULL", &[])
        .await
        .is_ok_and(|r| r.get(0));
    exists
        && target
            .query_opt(
                "SELECT 1 FROM pgmirror.mirrors WHERE mirror_name = 'bench' AND state = 'streaming'",
                &[],
            )
            .await
            .is_ok_and(|r| r.is_some())
}
