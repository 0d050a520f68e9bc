//! Helpers shared by the end-to-end tests.

use std::future::Future;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pgcluster::Cluster;
use pgconn::ConnConfig;
use pgmirror::mirror::MirrorOptions;
use pgmirror::selection::TableSelection;
use tokio_postgres::Client;

/// A fresh database on `cluster`, with a client connected to it.
pub async fn database(cluster: &Cluster, prefix: &str) -> (String, Client) {
    let name = pgcluster::unique_name(prefix);
    cluster.create_database(&name).await.expect("create database");
    let client = cluster.connect(&name).await.expect("connect");
    (name, client)
}

/// A Store database on `primary` filled at `scale`, and an empty database on `replica`.
pub async fn store_pair(
    primary: &Cluster,
    replica: &Cluster,
    scale: &store::Scale,
) -> (String, Client, String, Client) {
    let (src_db, src) = database(primary, "src").await;
    store::create_schema(&src).await.expect("create Store schema");
    store::populate(&src, scale).await.expect("populate Store");
    let (dst_db, dst) = database(replica, "dst").await;
    (src_db, src, dst_db, dst)
}

/// Mirror options for the Store tables between two databases.
pub fn store_mirror(
    primary: &Cluster,
    src_db: &str,
    replica: &Cluster,
    dst_db: &str,
) -> MirrorOptions {
    let source = ConnConfig::parse(&primary.url(src_db)).expect("source url");
    let target = ConnConfig::parse(&replica.url(dst_db)).expect("target url");
    let tables = TableSelection {
        publication: None,
        tables: Some(store::TABLES.iter().map(|t| (*t).to_owned()).collect()),
        exclude_tables: None,
    };
    pgmirror::logging::init(0);
    let mut opts = MirrorOptions::new(pgcluster::unique_name("m"), source, target, tables);
    opts.sequence_interval = Duration::from_secs(1);
    opts
}

/// Fingerprints (row count, ordered md5) of every Store table.
pub async fn fingerprints(client: &Client) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    for t in store::TABLES {
        out.push(store::table_fingerprint(client, t).await.expect("fingerprint"));
    }
    out
}

/// Polls `check` until it returns true or `timeout` passes; returns how long it took.
pub async fn wait_for<F, Fut>(timeout: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until `slot` exists and has finished building its snapshot: only transactions that
/// commit after that are decoded for it, and none of them is in a copy made under its snapshot.
pub async fn wait_slot_ready(client: &Client, slot: &str) {
    wait_for(
        Duration::from_secs(120),
        &format!("slot {slot} to reach its consistent point"),
        || async {
            client
                .query_opt(
                    "SELECT 1 FROM pg_replication_slots \
                     WHERE slot_name = $1 AND confirmed_flush_lsn IS NOT NULL",
                    &[&slot],
                )
                .await
                .expect("pg_replication_slots")
                .is_some()
        },
    )
    .await;
}

/// Waits until every Store table on the replica equals the primary.
pub async fn wait_converged(src: &Client, dst: &Client, timeout: Duration) {
    let want = fingerprints(src).await;
    wait_for(timeout, "the replica to equal the primary", || async {
        let mut got = Vec::new();
        for t in store::TABLES {
            match store::table_fingerprint(dst, t).await {
                Ok(f) => got.push(f),
                Err(_) => return false,
            }
        }
        got == want
    })
    .await;
}

/// A `pgmirror mirror` child process, SIGKILLed when dropped (a failed test leaves none behind).
pub struct Mirror(pub Child);

impl Drop for Mirror {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The built binary mirroring the Store tables from `source` to `target` as mirror `name`.
pub fn spawn_mirror(source: &str, target: &str, name: &str) -> Mirror {
    spawn(&["--name", name, "--tables", &store::TABLES.join(",")], source, target)
}

/// The built binary running `pgmirror mirror --source --target` plus `args`.
pub fn spawn(args: &[&str], source: &str, target: &str) -> Mirror {
    let child = Command::new(env!("CARGO_BIN_EXE_pgmirror"))
        .args(["mirror", "--source", source, "--target", target])
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn pgmirror");
    Mirror(child)
}

/// Runs the built binary without blocking the runtime: its exit code and its output.
pub fn pgmirror_task(args: Vec<String>) -> tokio::task::JoinHandle<(Option<i32>, String)> {
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_pgmirror")).args(&args).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    })
}

/// SIGKILLs a mirror process and reaps it.
pub fn kill(child: &mut Mirror) {
    child.0.kill().expect("SIGKILL pgmirror");
    child.0.wait().expect("reap pgmirror");
}
