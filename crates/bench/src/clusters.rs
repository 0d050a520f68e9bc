//! The two clusters: their settings (durable or not, pglogical preloaded or not), and the
//! upkeep between runs, and copies between them.

use pgcluster::{Cluster, ClusterBuilder};
use pgconn::quote_ident;
use serde::Serialize;
use tokio_postgres::Client;

use crate::error::Error;

/// The settings a cluster ran with, as it reported them (`SHOW`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterSettings {
    /// `primary` or `replica`.
    pub role: String,
    /// `fsync`.
    pub fsync: String,
    /// `synchronous_commit` (the server's; sessions may set their own).
    pub synchronous_commit: String,
    /// `shared_preload_libraries`.
    pub shared_preload_libraries: String,
}

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

/// Drops database `name` of `cluster`, or with pglogical preloaded (`pglogical`) empties it:
/// pglogical 2.4.2's supervisor never answers the barrier DROP DATABASE waits for on
/// PostgreSQL 15 (2ndQuadrant/pglogical#399), so the drop would hang. An emptied database keeps
/// only its catalogs; the clusters go at the end of the run.
pub(crate) async fn drop_db(cluster: &Cluster, name: &str, pglogical: bool) -> Result<(), Error> {
    if !pglogical {
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

/// Writes out the dirty buffers of `clusters` (untimed), so no contender pays for writing
/// what the one before it left in shared buffers (checkpoints are otherwise off during the
/// bench).
pub(crate) async fn checkpoint(clusters: [&Cluster; 2]) -> Result<(), Error> {
    for cluster in clusters {
        cluster.connect("postgres").await?.batch_execute("CHECKPOINT").await?;
    }
    Ok(())
}

/// Streams `table` from `src` into `dst` with binary COPY.
pub(crate) async fn copy_table(src: &Client, dst: &Client, table: &str) -> Result<(), Error> {
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
