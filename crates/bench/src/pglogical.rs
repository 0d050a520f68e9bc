//! The `pglogical` contender: a pglogical 2 subscription on the same backlog, when the
//! extension is installed (`postgresql-15-pglogical` on Debian and Ubuntu).
//!
//! Set up as pglogical's own `pglogical_create_subscriber` starts a subscriber at a known
//! position: the provider node and its replication sets exist before the slots; the slot is
//! created before the backlog, under the name pglogical derives for the subscription
//! (`pglogical.pglogical_gen_slot_name`), with pglogical's `pglogical_output` plugin; the
//! subscriber gets a replication origin of that name, then the subscription with
//! `synchronize_structure` and `synchronize_data` off, marked ready (`local_sync_status`) in the
//! same transaction. Left in its initial state, the subscription's first start would drop that
//! slot and create a new one at the current end of WAL, skipping the backlog. The apply worker
//! streams from the origin's position (none yet), that is from the slot's start: the backlog's
//! first change, as for every other contender.

use std::path::Path;
use std::time::Instant;

use pgconn::quote_ident;
use tokio_postgres::Client;

use crate::error::Error;
use crate::harness::{Backlog, Bench, SamplePath};
use crate::procstat::{BackendSampler, WalsenderSampler};
use crate::report::RunResult;
use crate::sentinel::SentinelWatch;
use crate::workload::{SENTINEL_TABLE, Workload};

/// The provider's pglogical node.
const PROVIDER: &str = "bench_provider";
/// Every run's subscription (one per target database).
const SUBSCRIPTION: &str = "bench";
/// The output plugin of pglogical's slots.
pub(crate) const PLUGIN: &str = "pglogical_output";

/// Whether pglogical is installed for the server binaries in `bindir`: its library in
/// `pg_config --pkglibdir` and its control file in `pg_config --sharedir`.
pub(crate) fn installed(bindir: &Path) -> bool {
    let pg_config = |arg: &str| -> Option<std::path::PathBuf> {
        let out = std::process::Command::new(bindir.join("pg_config")).arg(arg).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().into())
    };
    let lib = pg_config("--pkglibdir").is_some_and(|d| d.join("pglogical.so").is_file());
    let control = pg_config("--sharedir")
        .is_some_and(|d| d.join("extension").join("pglogical.control").is_file());
    lib && control
}

/// The report's line when pglogical is missing, for server major version `major`.
pub(crate) fn skipped_note(major: &str) -> String {
    format!("pglogical: skipped (install postgresql-{major}-pglogical)")
}

/// Why pglogical cannot take part in workload `w`, if it cannot.
pub(crate) fn unsupported(w: Workload) -> Option<&'static str> {
    match w {
        // replication_set_add_table refuses a table without a primary key in a set that
        // replicates updates or deletes.
        Workload::FullIdentity => {
            Some("pglogical not run: it replicates only inserts into a table without a primary key")
        }
        _ => None,
    }
}

/// The per-run target database of pglogical.
pub(crate) fn target_db(src_db: &str, run: u32) -> String {
    format!("{src_db}_l_{run}")
}

/// Makes the primary's database `db` a pglogical provider of `tables` and the sentinel:
/// tables with a primary key in the `default` replication set, tables without one (only
/// inserted into, like pgbench's history) in `default_insert_only`.
pub(crate) async fn provide(src: &Client, dsn: &str, tables: &[String]) -> Result<(), Error> {
    src.batch_execute("CREATE EXTENSION IF NOT EXISTS pglogical").await?;
    src.execute("SELECT pglogical.create_node(node_name := $1, dsn := $2)", &[&PROVIDER, &dsn])
        .await?;
    for t in tables.iter().map(String::as_str).chain([SENTINEL_TABLE]) {
        let quoted = quote_ident(t);
        let has_key: bool = src
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_index \
                 WHERE indrelid = $1::text::regclass AND indisprimary)",
                &[&quoted],
            )
            .await?
            .get(0);
        let set = if has_key { "default" } else { "default_insert_only" };
        src.execute(
            "SELECT pglogical.replication_set_add_table(set_name := $1, \
             relation := $2::text::regclass)",
            &[&set, &quoted],
        )
        .await
        .map_err(Error::context(format!("adding {t} to pglogical's {set} replication set")))?;
    }
    Ok(())
}

/// The slot pglogical will stream for the subscription of target database `target_db`.
pub(crate) async fn slot_name(src: &Client, target_db: &str) -> Result<String, Error> {
    Ok(src
        .query_one(
            "SELECT pglogical.pglogical_gen_slot_name($1, $2, $3)::text",
            &[&target_db, &PROVIDER, &SUBSCRIPTION],
        )
        .await?
        .get(0))
}

impl Bench {
    /// One pglogical run: a fresh target, its subscription on `slot`, timed from the commit
    /// that creates it until the sentinel is visible. The subscription is dropped afterwards
    /// (with its slot and origin), whatever happened.
    pub(crate) async fn run_pglogical(
        &mut self,
        backlog: &Backlog,
        slot: &str,
        run: u32,
        measure_latency: bool,
    ) -> Result<RunResult, Error> {
        let name = target_db(&backlog.db, run);
        let mut target = self.target_from(&backlog.template, &name).await?;
        let result = async {
            let mut watch = SentinelWatch::start(&self.replica, &name).await?;
            let mut r =
                self.pglogical_catch_up(backlog, &mut target, &mut watch, &name, slot, run).await?;
            if measure_latency {
                let path = SamplePath { slot, consumer: None, target_db: &name };
                self.measure_latency(
                    "pglogical",
                    &backlog.db,
                    &target,
                    &mut watch,
                    path,
                    || Ok(()),
                )
                .await?;
            }
            r.verified = self.verify(backlog, &target).await?;
            Ok(r)
        }
        .await;
        if let Err(e) =
            target.execute("SELECT pglogical.drop_subscription($1, true)", &[&SUBSCRIPTION]).await
        {
            tracing::warn!(error = %e, "could not drop the pglogical subscription");
        }
        drop(target);
        self.drop_replica_db(&name).await?;
        result
    }

    async fn pglogical_catch_up(
        &self,
        backlog: &Backlog,
        target: &mut Client,
        watch: &mut SentinelWatch,
        name: &str,
        slot: &str,
        run: u32,
    ) -> Result<RunResult, Error> {
        target.batch_execute("CREATE EXTENSION pglogical").await?;
        target
            .execute(
                "SELECT pglogical.create_node(node_name := $1, dsn := $2)",
                &[&name, &self.replica.url(name)],
            )
            .await?;
        target.execute("SELECT pg_catalog.pg_replication_origin_create($1)", &[&slot]).await?;
        let me: i32 = target.query_one("SELECT pg_catalog.pg_backend_pid()", &[]).await?.get(0);
        let tx = target.transaction().await?;
        tx.execute(
            "SELECT pglogical.create_subscription(subscription_name := $1, provider_dsn := $2, \
             replication_sets := ARRAY['default', 'default_insert_only'], \
             synchronize_structure := false, synchronize_data := false, \
             forward_origins := '{}')",
            &[&SUBSCRIPTION, &self.primary.url(&backlog.db)],
        )
        .await?;
        let derived: String = tx
            .query_one(
                "SELECT sub_slot_name::text FROM pglogical.subscription WHERE sub_name = $1",
                &[&SUBSCRIPTION],
            )
            .await?
            .get(0);
        if derived != slot {
            return Err(Error::Failed(format!(
                "pglogical named the subscription's slot {derived}, not {slot}: this pglogical \
                 version derives slot names differently"
            )));
        }
        tx.execute(
            "UPDATE pglogical.local_sync_status SET sync_status = 'r' \
             WHERE sync_relname IS NULL AND sync_subid = \
             (SELECT sub_id FROM pglogical.subscription WHERE sub_name = $1)",
            &[&SUBSCRIPTION],
        )
        .await?;
        let walsender =
            WalsenderSampler::start(self.primary.connect(&backlog.db).await?, slot.into());
        let backends = BackendSampler::start(
            self.replica.connect("postgres").await?,
            name.into(),
            vec![me, watch.pid()],
        );
        let t = Instant::now();
        tx.commit().await?;
        watch.wait(1, self.opts.run_timeout, || Ok(())).await?;
        let seconds = t.elapsed().as_secs_f64();
        let walsender_cpu_s = walsender.finish(self.ticks_per_second);
        let target_cpu_s = backends.finish(self.ticks_per_second);
        Ok(RunResult::subscriber(run, seconds, walsender_cpu_s, target_cpu_s, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_notes() {
        assert_eq!(skipped_note("15"), "pglogical: skipped (install postgresql-15-pglogical)");
        assert_eq!(target_db("src_oltp", 2), "src_oltp_l_2");
        assert!(unsupported(Workload::FullIdentity).is_some());
        assert!(unsupported(Workload::Store4).is_none());
    }

    #[test]
    fn missing_binaries_mean_not_installed() {
        assert!(!installed(Path::new("/nonexistent")));
    }
}
