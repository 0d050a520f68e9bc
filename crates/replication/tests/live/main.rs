//! Integration tests against real PostgreSQL clusters started by `pgcluster`.
//!
//! Most tests share one cluster (each with its own database, slot and
//! publication names); tests that need special server settings (auth
//! method, TLS, wal_level, timeouts) start their own.

mod auth;
mod backlog;
mod errors;
mod libpq;
mod slots;
mod stream;
mod tls;

use std::future::Future;
use std::time::Duration;

use pgcluster::Cluster;
use pgconn::ConnConfig;
use replication::{LogicalReplicationStream, ReplicationClient, ReplicationEvent};

/// Environment lookup with nothing set: tests never depend on the caller's `PG*` variables.
pub fn no_env(_: &str) -> Option<String> {
    None
}

/// Config for `url` plus extra query parameters, ignoring the process environment.
pub fn cfg_from(url: &str, extra: &str) -> ConnConfig {
    let sep = if url.contains('?') { '&' } else { '?' };
    let s = if extra.is_empty() { url.to_owned() } else { format!("{url}{sep}{extra}") };
    ConnConfig::parse_with_env(&s, &no_env).expect("valid connection string")
}

/// Plaintext config for the superuser on `db`.
pub fn cfg(cluster: &Cluster, db: &str) -> ConnConfig {
    cfg_from(&cluster.url(db), "sslmode=disable")
}

/// The connection error a replication connection with `c` fails with.
pub async fn repl_err(c: &ConnConfig) -> pgconn::Error {
    match ReplicationClient::connect(c).await {
        Ok(_) => panic!("a replication connection to {c} was made"),
        Err(replication::Error::Conn(e)) => e,
        Err(e) => panic!("not a connection error: {e}"),
    }
}

/// A fresh database on the shared cluster.
pub async fn fresh_db(prefix: &str) -> (&'static Cluster, String) {
    let cluster = pgcluster::shared();
    let db = pgcluster::unique_name(prefix);
    cluster.create_database(&db).await.expect("create database");
    (cluster, db)
}

/// Starts a cluster off the async runtime's worker thread (initdb/pg_ctl block).
pub async fn start_cluster(builder: pgcluster::ClusterBuilder) -> Cluster {
    tokio::task::spawn_blocking(move || builder.start().expect("start cluster"))
        .await
        .expect("join")
}

/// Fails the test instead of hanging.
pub async fn within<T>(secs: u64, what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .unwrap_or_else(|_| panic!("timed out after {secs}s waiting for {what}"))
}

/// The next event, failing on errors, end of stream or a 30 s wait.
pub async fn next_event(stream: &mut LogicalReplicationStream) -> ReplicationEvent {
    within(30, "a replication event", stream.next())
        .await
        .expect("stream ended")
        .expect("stream error")
}

/// Polls `pg_replication_slots.confirmed_flush_lsn` until `pred` holds.
pub async fn wait_for_slot(
    client: &tokio_postgres::Client,
    slot: &str,
    what: &str,
    pred: impl Fn(Option<pgoutput_decoder::Lsn>, bool) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let row = client
            .query_one(
                "SELECT confirmed_flush_lsn::text, active FROM pg_replication_slots \
                 WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .expect("slot row");
        let lsn: Option<String> = row.get(0);
        let active: bool = row.get(1);
        let lsn = lsn.map(|l| l.parse().expect("lsn"));
        if pred(lsn, active) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for slot {slot}: {what} (confirmed_flush_lsn {lsn:?}, active \
             {active})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
