//! `pgmirror mirror` end to end: the Store workload from several sessions, every kind of
//! change, a target restart, one very large transaction and one that arrives streamed.

use std::time::Duration;

use pgcluster::{ClusterBuilder, StopMode};
use pgmirror::mirror::{self, MirrorOptions};
use pgmirror::shutdown::Shutdown;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::task::JoinHandle;

use crate::common::{database, fingerprints, store_mirror, store_pair, wait_converged};

fn spawn(opts: MirrorOptions) -> (Shutdown, JoinHandle<anyhow::Result<()>>) {
    let shutdown = Shutdown::manual();
    let mut stop = shutdown.clone();
    (shutdown, tokio::spawn(async move { mirror::run(&opts, &mut stop).await }))
}

async fn stop(shutdown: Shutdown, task: JoinHandle<anyhow::Result<()>>) {
    shutdown.trigger();
    task.await.expect("mirror task").expect("mirror stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_change_from_concurrent_sessions() {
    let cluster = pgcluster::shared();
    let (src_db, src, dst_db, dst) = store_pair(cluster, cluster, &store::Scale::tiny()).await;
    let (shutdown, task) = spawn(store_mirror(cluster, &src_db, cluster, &dst_db));
    wait_converged(&src, &dst, Duration::from_secs(60)).await;

    // Four sessions interleaving Store OLTP transactions.
    let mut writers = Vec::new();
    for seed in 0..4u64 {
        let mut client = cluster.connect(&src_db).await.unwrap();
        writers.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed);
            for _ in 0..50 {
                store::oltp_transaction(&mut client, &mut rng).await.unwrap();
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    src.batch_execute(
        "UPDATE order_items SET line_no = line_no + 100 WHERE order_id % 3 = 0; \
         UPDATE customers SET phone = NULL, preferences = '{\"vip\": true}' WHERE id % 4 = 0; \
         UPDATE products SET stock = stock + 5 WHERE description IS NOT NULL; \
         DELETE FROM orders WHERE id % 5 = 0; \
         INSERT INTO customers (id, email, name) VALUES (900001, 'key@example.com', 'Key'); \
         UPDATE customers SET id = 900002 WHERE id = 900001;",
    )
    .await
    .unwrap();
    wait_converged(&src, &dst, Duration::from_secs(60)).await;

    // A TOASTed description left untouched by an update stays intact on the replica.
    let toasted: i64 = dst
        .query_one("SELECT count(*) FROM products WHERE length(description) > 4000", &[])
        .await
        .unwrap()
        .get(0);
    assert!(toasted > 0, "the Store has TOASTed descriptions");

    // TRUNCATE ... RESTART IDENTITY CASCADE reaches the replica too.
    src.batch_execute("TRUNCATE orders RESTART IDENTITY CASCADE").await.unwrap();
    wait_converged(&src, &dst, Duration::from_secs(60)).await;
    let left: i64 = dst.query_one("SELECT count(*) FROM order_items", &[]).await.unwrap().get(0);
    assert_eq!(left, 0);
    stop(shutdown, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_restart_loses_nothing() {
    let source = pgcluster::shared();
    let replica = ClusterBuilder::new().start().expect("start replica");
    let (src_db, src, dst_db, dst) = store_pair(source, &replica, &store::Scale::tiny()).await;
    let (shutdown, task) = spawn(store_mirror(source, &src_db, &replica, &dst_db));
    wait_converged(&src, &dst, Duration::from_secs(60)).await;

    let mut writer = source.connect(&src_db).await.unwrap();
    let mut rng = StdRng::seed_from_u64(42);
    for i in 0..120 {
        if i == 40 {
            replica.stop(StopMode::Fast).unwrap();
        }
        if i == 80 {
            replica.start().unwrap();
        }
        store::oltp_transaction(&mut writer, &mut rng).await.unwrap();
    }
    let dst = replica.connect(&dst_db).await.unwrap();
    wait_converged(&src, &dst, Duration::from_secs(90)).await;
    stop(shutdown, task).await;
    assert_eq!(fingerprints(&src).await, fingerprints(&dst).await);
    drop(dst);
}

/// A mirror of one table, `events`, between two new databases of the shared cluster.
struct EventsMirror {
    src: tokio_postgres::Client,
    dst: tokio_postgres::Client,
    slot: String,
    shutdown: Shutdown,
    task: JoinHandle<anyhow::Result<()>>,
}

impl EventsMirror {
    /// Creates `events` with `columns` on the primary and starts mirroring it; returns once
    /// the mirror has set up the target.
    async fn start(prefix: &str, columns: &str) -> Self {
        let cluster = pgcluster::shared();
        let (src_db, src) = database(cluster, &format!("{prefix}_src")).await;
        let (dst_db, dst) = database(cluster, &format!("{prefix}_dst")).await;
        src.batch_execute(&format!("CREATE TABLE events ({columns})")).await.unwrap();
        let mut opts = store_mirror(cluster, &src_db, cluster, &dst_db);
        opts.tables.tables = Some(vec!["events".into()]);
        let slot = opts.slot_name();
        let (shutdown, task) = spawn(opts);
        crate::common::wait_for(Duration::from_secs(30), "the target table", || async {
            dst.query_opt("SELECT 1 FROM pgmirror.progress", &[]).await.is_ok_and(|r| r.is_some())
        })
        .await;
        EventsMirror { src, dst, slot, shutdown, task }
    }

    /// Runs `sql` on the primary and waits up to `timeout` for the replica's `events` to
    /// equal the primary's.
    async fn converge_after(&self, sql: &str, timeout: Duration) {
        self.src.batch_execute(sql).await.unwrap();
        let want: (i64, String) = store::table_fingerprint(&self.src, "events").await.unwrap();
        crate::common::wait_for(timeout, "the rows on the replica", || async {
            store::table_fingerprint(&self.dst, "events").await.ok().as_ref() == Some(&want)
        })
        .await;
    }

    async fn stop(self) {
        stop(self.shutdown, self.task).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_row_transaction() {
    let m = EventsMirror::start("big", "id bigint PRIMARY KEY, kind int, payload text").await;
    m.converge_after(
        "INSERT INTO events SELECT i, i % 7, md5(i::text) FROM generate_series(1, 1000000) i",
        Duration::from_secs(240),
    )
    .await;
    m.stop().await;
}

/// A transaction under the primary's 64 MB `logical_decoding_work_mem` but over the 8 MB a
/// mirror asks of its own walsender reaches the mirror streamed (so the target starts on it
/// before the primary commits) and is applied whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_past_8_mb_arrives_streamed() {
    let m = EventsMirror::start("mid", "id bigint PRIMARY KEY, payload text").await;
    let limit: String =
        m.src.query_one("SHOW logical_decoding_work_mem", &[]).await.unwrap().get(0);
    assert_eq!(limit, "64MB", "the test needs the server's default");
    // 100k changes of a 100-byte row: between 8 and 64 MB as the walsender holds them (with the
    // mirror leaving the primary's 64 MB in place, this test times out below).
    m.converge_after(
        "INSERT INTO events SELECT i, repeat('x', 100) FROM generate_series(1, 100000) i",
        Duration::from_secs(120),
    )
    .await;
    // The walsender reports its counts to the statistics system within a second or so.
    let streamed = "SELECT stream_txns FROM pg_catalog.pg_stat_replication_slots \
                    WHERE slot_name = $1";
    crate::common::wait_for(Duration::from_secs(30), "a streamed transaction", || async {
        let row = m.src.query_opt(streamed, &[&m.slot]).await.unwrap();
        row.is_some_and(|r| r.get::<_, i64>(0) >= 1)
    })
    .await;
    m.stop().await;
}

/// Regression: a table's first change arriving while a COPY into another table is open on the
/// target connection used to hang the applier (the catalog lookup waited behind the COPY).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_change_to_a_table_right_after_a_copy_run() {
    let cluster = pgcluster::shared();
    let (src_db, src) = database(cluster, "copyrun_src").await;
    let (dst_db, dst) = database(cluster, "copyrun_dst").await;
    src.batch_execute(
        "CREATE TABLE bulk (id int PRIMARY KEY, v text); \
         CREATE TABLE sentinel (id int PRIMARY KEY)",
    )
    .await
    .unwrap();
    let mut opts = store_mirror(cluster, &src_db, cluster, &dst_db);
    opts.tables.tables = Some(vec!["bulk".into(), "sentinel".into()]);
    let (shutdown, task) = spawn(opts);
    crate::common::wait_for(Duration::from_secs(30), "streaming to start", || async {
        dst.query_opt("SELECT 1 FROM pgmirror.progress", &[]).await.is_ok_and(|r| r.is_some())
    })
    .await;
    src.batch_execute(
        "INSERT INTO bulk SELECT i, md5(i::text) FROM generate_series(1, 1000) i; \
         INSERT INTO sentinel VALUES (1);",
    )
    .await
    .unwrap();
    crate::common::wait_for(Duration::from_secs(30), "the sentinel on the replica", || async {
        dst.query_opt("SELECT 1 FROM sentinel", &[]).await.is_ok_and(|r| r.is_some())
    })
    .await;
    let n: i64 = dst.query_one("SELECT count(*) FROM bulk", &[]).await.unwrap().get(0);
    assert_eq!(n, 1000);
    stop(shutdown, task).await;
}

async fn customers_sequence(c: &tokio_postgres::Client) -> Option<i64> {
    c.query_one(
        "SELECT last_value FROM pg_catalog.pg_sequences \
         WHERE schemaname = 'public' AND sequencename = 'customers_id_seq'",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

/// Sequences reach the target while streaming, every `sequence_interval` (1 s here), through
/// one kept connection per side: no new session on the primary each round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequences_follow_the_primary_while_streaming_on_kept_connections() {
    let cluster = pgcluster::shared();
    let (src_db, src, dst_db, dst) = store_pair(cluster, cluster, &store::Scale::tiny()).await;
    let (shutdown, task) = spawn(store_mirror(cluster, &src_db, cluster, &dst_db));
    wait_converged(&src, &dst, Duration::from_secs(60)).await;
    for round in 0..2 {
        src.execute(
            "INSERT INTO customers (email, name) \
             SELECT 'seq' || $1::int || '-' || g || '@example.com', 'n' FROM generate_series(1, 50) g",
            &[&round],
        )
        .await
        .unwrap();
        let want = customers_sequence(&src).await;
        crate::common::wait_for(Duration::from_secs(20), "the target's sequence", || async {
            customers_sequence(&dst).await == want
        })
        .await;
    }
    // The sequence sync's source session (the only ordinary one of pgmirror's) stays the same.
    let sessions = || async {
        let rows = src
            .query(
                "SELECT pid FROM pg_catalog.pg_stat_activity WHERE datname = $1 \
                 AND backend_type = 'client backend' AND application_name = 'pgmirror' \
                 ORDER BY pid",
                &[&src_db],
            )
            .await
            .unwrap();
        rows.iter().map(|r| r.get::<_, i32>(0)).collect::<Vec<_>>()
    };
    let before = sessions().await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let after = sessions().await;
    assert_eq!(before.len(), 1, "{before:?}");
    assert_eq!(before, after);
    stop(shutdown, task).await;
}

/// How often the main thread of process `pid` (its runtime's thread) went to sleep: its
/// voluntary context switches (preemption by a busy machine does not count).
fn sleeps(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("voluntary_ctxt_switches in /proc/<pid>/status")
}

/// A mirror that applied a lone transaction waits for the target's WAL flush without spinning:
/// it looks again at the durability poll, not every couple of milliseconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_mirror_does_not_spin_while_its_last_commit_becomes_durable() {
    let cluster = pgcluster::shared();
    let (src_db, src) = database(cluster, "quiet_src").await;
    let (dst_db, dst) = database(cluster, "quiet_dst").await;
    for c in [&src, &dst] {
        c.batch_execute("CREATE TABLE q (id int PRIMARY KEY)").await.unwrap();
    }
    let mut child = crate::common::spawn(
        &["--tables", "q", "--name", &pgcluster::unique_name("quiet")],
        &cluster.url(&src_db),
        &cluster.url(&dst_db),
    );
    let pid = child.0.id();
    let seen = |n: i64| {
        let dst = &dst;
        async move { dst.query_one("SELECT count(*) FROM q", &[]).await.unwrap().get::<_, i64>(0) == n }
    };
    src.execute("INSERT INTO q VALUES (0)", &[]).await.unwrap();
    crate::common::wait_for(Duration::from_secs(60), "the first row", || seen(1)).await;
    // One lone transaction every 400 ms: each is applied, then waits for the target's WAL
    // writer (its session commits asynchronously) before it is confirmed.
    let before = sleeps(pid);
    for i in 1..=5 {
        src.execute("INSERT INTO q VALUES ($1)", &[&i]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let switches = sleeps(pid) - before;
    crate::common::wait_for(Duration::from_secs(30), "every row", || seen(6)).await;
    crate::common::kill(&mut child);
    // A handful per transaction (its messages, the target's answers, the durability polls, the
    // status updates) and the idle ticks of 2 s: about 120 here. Waking every 2-3 ms until the
    // target's WAL writer flushed made it about 310.
    assert!(switches < 250, "{switches} sleeps for 5 lone transactions in 2 s");
}
