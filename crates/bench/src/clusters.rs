//! The two clusters: their settings (durable or not, pglogical preloaded or not), and the
//! upkeep between runs.

use pgcluster::{Cluster, ClusterBuilder};
use pgconn::quote_ident;

use crate::error::Error;
use crate::harness::Bench;
use crate::report::ClusterSettings;

/// Settings every benchmark cluster shares, with checkpoints and autovacuum kept out of the
/// runs; durability stays the server's default (on) unless [`bench_cluster_builder`] sets it.
pub(crate) fn cluster_builder() -> ClusterBuilder {
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

/// [`cluster_builder`], durable or not, with pglogical preloaded when it takes part.
pub(crate) fn bench_cluster_builder(durable: bool, pglogical: bool) -> ClusterBuilder {
    // Not durable: no fsync of WAL, data or slot state, and no commit waiting for its WAL
    // flush; with --durable, what a production primary runs with (the servers' defaults).
    let on = if durable { "on" } else { "off" };
    let builder = cluster_builder().setting("fsync", on).setting("synchronous_commit", on);
    if pglogical {
        // pglogical's default conflict resolution (apply_remote) needs no
        // track_commit_timestamp, so it stays off as for every other contender. Its supervisor,
        // a manager per database and the apply worker are background workers.
        builder
            .setting("shared_preload_libraries", "pglogical")
            .setting("max_worker_processes", "16")
    } else {
        builder
    }
}

/// The settings `cluster` runs with.
pub(crate) async fn cluster_settings(
    cluster: &Cluster,
    role: &str,
) -> Result<ClusterSettings, Error> {
    let client = cluster.connect("postgres").await?;
    let show = |name: &'static str| {
        let client = &client;
        async move {
            let row = client.query_one(&format!("SHOW {name}"), &[]).await?;
            Ok::<String, Error>(row.get(0))
        }
    };
    Ok(ClusterSettings {
        role: role.to_owned(),
        fsync: show("fsync").await?,
        synchronous_commit: show("synchronous_commit").await?,
        shared_preload_libraries: show("shared_preload_libraries").await?,
    })
}

impl Bench {
    /// Drops database `name` of the replica (see [`Bench::drop_db`]).
    pub(crate) async fn drop_replica_db(&self, name: &str) -> Result<(), Error> {
        self.drop_db(&self.replica, name).await
    }

    /// Drops database `name` of the primary (see [`Bench::drop_db`]).
    pub(crate) async fn drop_primary_db(&self, name: &str) -> Result<(), Error> {
        self.drop_db(&self.primary, name).await
    }

    /// Drops a database, or with pglogical preloaded empties it: pglogical 2.4.2's supervisor
    /// never answers the barrier DROP DATABASE waits for on PostgreSQL 15
    /// (2ndQuadrant/pglogical#399), so the drop would hang. An emptied database keeps only its
    /// catalogs; the clusters go at the end of the run.
    async fn drop_db(&self, cluster: &Cluster, name: &str) -> Result<(), Error> {
        if !self.pglogical {
            return Ok(cluster.drop_database(name).await?);
        }
        let client = cluster.connect(name).await?;
        let schemas = client
            .query(
                "SELECT nspname::text FROM pg_catalog.pg_namespace \
                 WHERE nspname !~ '^pg_' AND nspname <> 'information_schema'",
                &[],
            )
            .await?;
        for row in schemas {
            let schema: String = row.get(0);
            client.batch_execute(&format!("DROP SCHEMA {} CASCADE", quote_ident(&schema))).await?;
        }
        Ok(())
    }

    /// Writes out both clusters' dirty buffers before a contender starts (untimed), so no
    /// contender pays for writing what the one before it left in shared buffers (checkpoints
    /// are otherwise off during the bench).
    pub(crate) async fn settle(&self) -> Result<(), Error> {
        for cluster in [&self.primary, &self.replica] {
            cluster.connect("postgres").await?.batch_execute("CHECKPOINT").await?;
        }
        Ok(())
    }
}
