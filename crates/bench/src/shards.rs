//! pgmirror into N shards on the same backlog ([`BenchOptions::shards`]): every table with a
//! primary key sharded by it, the sentinel a reference table, one database per shard on the
//! replica cluster (all shards share its CPU). Timed from spawn until the sentinel is on every
//! shard; verified with `pgmirror verify` over the shards.
//!
//! [`BenchOptions::shards`]: crate::BenchOptions::shards

use std::process::Stdio;
use std::time::Instant;

use tokio_postgres::Client;

use crate::error::Error;
use crate::harness::{Backlog, Bench, PUBLICATION, log_tail};
use crate::procstat::WalsenderSampler;
use crate::report::RunResult;
use crate::sentinel::SentinelWatch;
use crate::workload::SENTINEL_TABLE;

/// The contender's name in the report.
pub(crate) fn contender_name(shards: usize) -> String {
    format!("pgmirror {shards} shard{}", if shards == 1 { "" } else { "s" })
}

/// `--shard-key` values: each published table with a primary key, by it.
async fn shard_keys(src: &Client, tables: &[String]) -> Result<Vec<String>, Error> {
    let mut keys = Vec::new();
    for table in tables.iter().filter(|t| t.as_str() != SENTINEL_TABLE) {
        let columns: Vec<String> = src
            .query(
                "SELECT a.attname::text FROM pg_index i \
                 JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n) ON true \
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
                 WHERE i.indrelid = $1::text::regclass AND i.indisprimary ORDER BY k.n",
                &[table],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if !columns.is_empty() {
            keys.push(format!("{table}={}", columns.join(",")));
        }
    }
    Ok(keys)
}

/// Leaves on shard `i` of `n` only the base rows that hash to it, as PostgreSQL's own
/// `satisfies_hash_partition` decides (the target databases start as copies of the template,
/// which holds every base row).
async fn keep_own_rows(target: &Client, keys: &[String], n: usize, i: usize) -> Result<(), Error> {
    target.batch_execute("SET session_replication_role = replica").await?;
    for (j, key) in keys.iter().enumerate() {
        let Some((table, columns)) = key.split_once('=') else { continue };
        let columns: Vec<&str> = columns.split(',').collect();
        let typed: String = target
            .query_one(
                "SELECT string_agg(quote_ident(a.attname) || ' ' || \
                        format_type(a.atttypid, a.atttypmod), ', ' \
                        ORDER BY array_position($2::text[], a.attname::text)) \
                 FROM pg_attribute a \
                 WHERE a.attrelid = $1::text::regclass AND a.attname = ANY($2::text[])",
                &[&table, &columns],
            )
            .await?
            .get(0);
        let quoted: Vec<String> = columns.iter().map(|c| pgconn::quote_ident(c)).collect();
        let list = quoted.join(", ");
        target
            .batch_execute(&format!(
                "CREATE TEMP TABLE shard_probe_{j} ({typed}) PARTITION BY HASH ({list}); \
                 DELETE FROM {table} WHERE NOT satisfies_hash_partition(\
                     'pg_temp.shard_probe_{j}'::regclass, {n}, {i}, {list})"
            ))
            .await?;
    }
    target.batch_execute("RESET session_replication_role").await?;
    Ok(())
}

impl Bench {
    /// One run of pgmirror into `shards` shards draining `slot`.
    pub(crate) async fn run_sharded(
        &mut self,
        backlog: &Backlog,
        slot: &str,
        run: u32,
        shards: usize,
    ) -> Result<RunResult, Error> {
        let src = self.primary.connect(&backlog.db).await?;
        let keys = shard_keys(&src, &backlog.tables).await?;
        let mut names = Vec::new();
        let mut targets = Vec::new();
        let mut watches = Vec::new();
        for i in 0..shards {
            let name = format!("{}_s{shards}_{run}_{i}", backlog.db);
            let target = self.target_from(&backlog.template, &name).await?;
            keep_own_rows(&target, &keys, shards, i).await?;
            watches.push(SentinelWatch::start(&self.replica, &name).await?);
            targets.push(target);
            names.push(name);
        }
        let mut args: Vec<String> =
            vec!["--source".into(), self.primary.url(&backlog.db), "--name".into(), "bench".into()];
        for name in &names {
            args.extend(["--target".into(), self.replica.url(name)]);
        }
        for key in &keys {
            args.extend(["--shard-key".into(), key.clone()]);
        }
        let log = self.scratch.0.join(format!("{}_s{shards}_{run}.log", backlog.db));
        let sampler = WalsenderSampler::start(src, slot.into());
        let t = Instant::now();
        let mut child = tokio::process::Command::new(&self.opts.pgmirror_exe)
            .arg("mirror")
            .args(&args)
            .args(["--publication", PUBLICATION, "--slot", slot, "--no-initial-copy"])
            .env_remove("PGMIRROR_SOURCE")
            .env_remove("PGMIRROR_TARGET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .kill_on_drop(true)
            .spawn()
            .map_err(Error::context("starting pgmirror"))?;
        let pid = child.id().ok_or_else(|| Error::Failed("pgmirror has no pid".into()))?;
        let mut waited = Ok(());
        for watch in &mut watches {
            waited = watch
                .wait(1, self.opts.run_timeout, || match child.try_wait()? {
                    Some(status) => Err(Error::Failed(format!(
                        "pgmirror exited ({status}): {}",
                        log_tail(&log)
                    ))),
                    None => Ok(()),
                })
                .await;
            if waited.is_err() {
                break;
            }
        }
        let seconds = t.elapsed().as_secs_f64();
        let process = self.process_figures(pid);
        let walsender_cpu_s = sampler.finish(self.ticks_per_second);
        let _ = child.kill().await;
        waited?;
        // Each shard holds exactly its rows, and together they equal the primary.
        let verified = tokio::process::Command::new(&self.opts.pgmirror_exe)
            .arg("verify")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .map_err(Error::context("running pgmirror verify"))?
            .success();
        drop(targets);
        for name in &names {
            self.drop_replica_db(name).await?;
        }
        Ok(RunResult::measured(run, seconds, walsender_cpu_s, process, verified))
    }
}
