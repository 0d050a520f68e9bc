//! The MariaDB contender (`--mariadb`): pgmirror draining the same backlog into a throwaway
//! MariaDB server (`pgmirror mirror --target mysql://... --no-initial-copy`), timed from spawn
//! until the sentinel is visible there, then verified row by row against the primary.
//!
//! Each run starts from a MariaDB database holding the base rows (the state the slots were
//! created at): copied once per workload into `base_<workload>`, then into each run's database
//! with `INSERT ... SELECT`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use applier::mysql::schema::{self, MySqlTable, SourceTable};
use applier::mysql::{MySqlTargetConfig, copy, quote, session, verify};
use sqlx::{Executor, MySqlConnection};
use testservers::mariadb::MariaDb;

use crate::error::Error;
use crate::harness::{Backlog, Bench, PUBLICATION, log_tail};
use crate::procstat;
use crate::report::RunResult;
use crate::workload::SENTINEL_TABLE;

/// A durable MariaDB server (the default `innodb_flush_log_at_trx_commit = 1`), as a
/// production replica would run.
pub(crate) fn start() -> Result<MariaDb, Error> {
    MariaDb::builder()
        .setting("innodb_buffer_pool_size", "512M")
        .setting("innodb_log_file_size", "1G")
        .setting("max_allowed_packet", "64M")
        .start()
        .map_err(|e| Error::Failed(format!("starting MariaDB: {e}")))
}

fn mysql_err(context: &str) -> impl Fn(sqlx::Error) -> Error + '_ {
    move |e| Error::Failed(format!("MariaDB: {context}: {e}"))
}

fn apply_err(e: applier::ApplyError) -> Error {
    Error::Failed(format!("MariaDB: {e}"))
}

impl Bench {
    fn mariadb(&self) -> Result<&MariaDb, Error> {
        self.mariadb.as_ref().ok_or_else(|| Error::Failed("no MariaDB server".into()))
    }

    /// The published tables as the MySQL mirror maps them.
    async fn mysql_tables(&self, db: &str) -> Result<Vec<MySqlTable>, Error> {
        let src = self.primary.connect(db).await?;
        let sources: Vec<SourceTable> = tablesync::publication_tables(&src, PUBLICATION)
            .await?
            .into_iter()
            .map(|t| SourceTable {
                key: if t.primary_key.is_empty() {
                    t.identity_columns.clone()
                } else {
                    t.primary_key.clone()
                },
                schema: t.schema,
                name: t.name,
                oid: t.oid,
            })
            .collect();
        schema::describe(&src, &sources).await.map_err(apply_err)
    }

    /// Creates `base_<db>` in MariaDB with the workload's tables and the primary's rows as
    /// they are now (before the backlog).
    pub(crate) async fn mariadb_base(&self, db: &str) -> Result<(), Error> {
        let server = self.mariadb()?;
        let base = format!("base_{db}");
        server.create_database(&base).await.map_err(|e| Error::Failed(e.to_string()))?;
        let url = session::MySqlUrl::parse(&server.url(&base)).map_err(apply_err)?;
        let (mut conn, info) = session::connect(url.options()).await.map_err(apply_err)?;
        let tables = self.mysql_tables(db).await?;
        schema::ensure_tables(&mut conn, &tables, info.collation()).await.map_err(apply_err)?;
        let src = self.primary.connect(db).await?;
        let cfg = MySqlTargetConfig::new("bench");
        for t in tables {
            let t = Arc::new(t);
            copy::copy_table(&src, &mut conn, info.collation(), &t, None, None, &cfg)
                .await
                .map_err(apply_err)?;
        }
        Ok(())
    }

    /// A run's database: the base tables and rows.
    async fn mariadb_run_db(&self, db: &str, name: &str) -> Result<MySqlConnection, Error> {
        let server = self.mariadb()?;
        server.create_database(name).await.map_err(|e| Error::Failed(e.to_string()))?;
        let mut conn = server.connect(name).await.map_err(|e| Error::Failed(e.to_string()))?;
        let base = quote(&format!("base_{db}"));
        for t in self.mysql_tables(db).await? {
            let q = t.quoted();
            let sql = format!(
                "SET SESSION foreign_key_checks = 0; CREATE TABLE {q} LIKE {base}.{q}; \
                 INSERT INTO {q} SELECT * FROM {base}.{q}"
            );
            conn.execute(sql.as_str()).await.map_err(mysql_err("copying the base rows"))?;
        }
        Ok(conn)
    }

    /// pgmirror into MariaDB on the backlog.
    pub(crate) async fn run_pgmirror_mariadb(
        &mut self,
        backlog: &Backlog,
        slot: &str,
        run: u32,
    ) -> Result<RunResult, Error> {
        let name = format!("{}_y_{run}", backlog.db);
        let mut conn = self.mariadb_run_db(&backlog.db, &name).await?;
        let url = self.mariadb()?.url(&name);
        let log = self.scratch.0.join(format!("{name}.log"));
        let sampler = procstat::WalsenderSampler::start(
            self.primary.connect(&backlog.db).await?,
            slot.into(),
        );
        let t = Instant::now();
        let mut child = self.spawn_pgmirror_to(&backlog.db, &url, slot, false, &log)?;
        let pid = child.id().ok_or_else(|| Error::Failed("pgmirror has no pid".into()))?;
        let sql = format!("SELECT COUNT(*) FROM {} WHERE id = 1", quote(SENTINEL_TABLE));
        // MariaDB has no notifications: the bench asks. Every 10 ms times the run to within
        // 10 ms (runs take seconds) while leaving the cores to pgmirror and MariaDB; a query
        // every millisecond took CPU from the catch-up it timed.
        let poll = Poll { started: t, gap: Duration::from_millis(10), late: "did not catch up" };
        let waited = self.wait_for_row(&mut conn, &sql, &mut child, &log, poll).await;
        let seconds = t.elapsed().as_secs_f64();
        let process = self.process_figures(pid);
        let walsender_cpu_s = sampler.finish(self.ticks_per_second);
        waited?;
        let _ = child.kill().await;
        let src = self.primary.connect(&backlog.db).await?;
        let mut verified = true;
        for t in self.mysql_tables(&backlog.db).await? {
            let diff =
                verify::compare_table(&src, &mut conn, &t, 10_000, 1).await.map_err(apply_err)?;
            verified &= diff.is_equal();
        }
        drop(conn);
        self.mariadb()?.drop_database(&name).await.map_err(|e| Error::Failed(e.to_string()))?;
        Ok(RunResult::measured(run, seconds, walsender_cpu_s, process, verified))
    }
}

/// How [`Bench::wait_for_row`] polls.
struct Poll {
    /// When the timed run began (the run timeout counts from it).
    started: Instant,
    /// Pause between two polls.
    gap: Duration,
    /// What MariaDB failed to do in time, for the error.
    late: &'static str,
}

impl Bench {
    /// Polls `sql` (a count) on `conn` until it is 1; fails when pgmirror exits or the run
    /// timeout passes.
    async fn wait_for_row(
        &self,
        conn: &mut MySqlConnection,
        sql: &str,
        child: &mut tokio::process::Child,
        log: &Path,
        poll: Poll,
    ) -> Result<(), Error> {
        loop {
            let n: Option<i64> = sqlx::query_scalar(sql).fetch_one(&mut *conn).await.ok();
            if n == Some(1) {
                return Ok(());
            }
            if let Some(status) = child.try_wait()? {
                return Err(Error::Failed(format!(
                    "pgmirror exited ({status}): {}",
                    log_tail(log)
                )));
            }
            if poll.started.elapsed() > self.opts.run_timeout {
                return Err(Error::Failed(format!("MariaDB {} in time", poll.late)));
            }
            tokio::time::sleep(poll.gap).await;
        }
    }
}

impl Bench {
    /// The initial copy into MariaDB: pgmirror's (`mirror` with its initial copy, timed until
    /// its progress row says `streaming`), then the ceiling, MariaDB's own `LOAD DATA INFILE`
    /// of the same rows (written by `SELECT ... INTO OUTFILE` from the copy, untimed) into
    /// empty tables of the same definition, one table after another on one connection.
    pub(crate) async fn initial_mariadb(
        &self,
        backlog: &Backlog,
        run: u32,
    ) -> Result<(RunResult, RunResult), Error> {
        let server = self.mariadb()?;
        let name = format!("{}_y_{run}", backlog.db);
        let slot = format!("bench_initial_y_{run}");
        server.create_database(&name).await.map_err(|e| Error::Failed(e.to_string()))?;
        let mut conn = server.connect(&name).await.map_err(|e| Error::Failed(e.to_string()))?;
        let log = self.scratch.0.join(format!("{name}.log"));
        let t = Instant::now();
        let mut child =
            self.spawn_pgmirror_to(&backlog.db, &server.url(&name), &slot, true, &log)?;
        let pid = child.id().ok_or_else(|| Error::Failed("pgmirror has no pid".into()))?;
        let sql = "SELECT COUNT(*) FROM `pgmirror_progress` \
                   WHERE mirror = 'bench' AND state = 'streaming'";
        let poll = Poll {
            started: t,
            gap: Duration::from_millis(5),
            late: "did not finish its initial copy",
        };
        let waited = self.wait_for_row(&mut conn, sql, &mut child, &log, poll).await;
        let seconds = t.elapsed().as_secs_f64();
        let process = self.process_figures(pid);
        let _ = child.kill().await;
        let _ = child.wait().await;
        waited?;
        self.drop_slot(&backlog.db, &slot).await?;
        let src = self.primary.connect(&backlog.db).await?;
        let tables = self.mysql_tables(&backlog.db).await?;
        let mut verified = true;
        for t in &tables {
            let diff =
                verify::compare_table(&src, &mut conn, t, 10_000, 1).await.map_err(apply_err)?;
            verified &= diff.is_equal();
        }
        let copy = RunResult::measured(run, seconds, None, process, verified);
        let load = self.load_data(&mut conn, &name, &tables, run).await?;
        drop(conn);
        server.drop_database(&name).await.map_err(|e| Error::Failed(e.to_string()))?;
        Ok((copy, load))
    }

    /// `LOAD DATA INFILE` of `tables` (as copied into database `copied`) into a new database.
    async fn load_data(
        &self,
        conn: &mut MySqlConnection,
        copied: &str,
        tables: &[MySqlTable],
        run: u32,
    ) -> Result<RunResult, Error> {
        let server = self.mariadb()?;
        let name = format!("{copied}_l");
        server.create_database(&name).await.map_err(|e| Error::Failed(e.to_string()))?;
        let dir: String = sqlx::query_scalar("SELECT @@tmpdir")
            .fetch_one(&mut *conn)
            .await
            .map_err(mysql_err("reading tmpdir"))?;
        let (from, to) = (quote(copied), quote(&name));
        let mut files = Vec::new();
        for t in tables {
            let file = format!("{dir}/{name}_{}.tsv", files.len());
            let q = t.quoted();
            let sql = format!(
                "CREATE TABLE {to}.{q} LIKE {from}.{q}; \
                 SELECT * INTO OUTFILE '{file}' CHARACTER SET binary FROM {from}.{q}"
            );
            conn.execute(sql.as_str()).await.map_err(mysql_err("writing the rows to a file"))?;
            files.push((file, q));
        }
        conn.execute("SET SESSION foreign_key_checks = 0")
            .await
            .map_err(mysql_err("setting up the session"))?;
        let t = Instant::now();
        for (file, q) in &files {
            let sql = format!("LOAD DATA INFILE '{file}' INTO TABLE {to}.{q} CHARACTER SET binary");
            conn.execute(sql.as_str()).await.map_err(mysql_err("LOAD DATA INFILE"))?;
        }
        let seconds = t.elapsed().as_secs_f64();
        let mut verified = true;
        for (file, q) in &files {
            let _ = std::fs::remove_file(file);
            let sums: Vec<(String, Option<i64>)> =
                sqlx::query_as(&format!("CHECKSUM TABLE {from}.{q}, {to}.{q}"))
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(mysql_err("CHECKSUM TABLE"))?;
            verified &= sums.len() == 2 && sums[0].1.is_some() && sums[0].1 == sums[1].1;
        }
        server.drop_database(&name).await.map_err(|e| Error::Failed(e.to_string()))?;
        Ok(RunResult {
            run,
            seconds: Some(seconds),
            walsender_cpu_s: None,
            pgmirror_cpu_s: None,
            target_cpu_s: None,
            peak_rss_mb: None,
            verified,
            error: None,
        })
    }
}
