//! Fault injection: pgmirror killed at random moments, the primary crashed, the target locked
//! and restarted, the network cut and stalled, objects dropped behind pgmirror's back, a second
//! process for the same mirror, and a huge transaction. After every fault the target must equal
//! the primary, with nothing lost and nothing repeated, or pgmirror must stop with a clear error.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgcluster::{Cluster, ClusterBuilder, StopMode};
use pgconn::ConnConfig;
use pgmirror::mirror::{self, MirrorOptions};
use pgmirror::selection::TableSelection;
use pgmirror::shutdown::Shutdown;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_postgres::Client;

use crate::common::{
    fingerprints, kill, spawn, spawn_mirror, store_mirror, store_pair, wait_converged, wait_for,
};
use crate::support::proxy::Proxy;

/// A task running Store OLTP transactions until the handle is dropped; `gate` pauses it.
struct Writer {
    gate: Arc<tokio::sync::Mutex<()>>,
    written: Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    async fn start(cluster: &Cluster, db: &str, seed: u64) -> Writer {
        let mut client = cluster.connect(db).await.expect("writer connects");
        let gate = Arc::new(tokio::sync::Mutex::new(()));
        let g = gate.clone();
        let written = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let n = written.clone();
        let task = tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed);
            loop {
                let open = g.lock().await;
                if store::oltp_transaction(&mut client, &mut rng).await.is_err() {
                    // The primary went away: this writer is done.
                    return;
                }
                n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                drop(open);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
        Writer { gate, written, task }
    }

    /// Pauses between two transactions; writing resumes when the guard is dropped.
    async fn pause(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.gate.lock().await
    }

    /// Stops between two transactions; returns how many it committed.
    async fn stop(self) -> u64 {
        let _paused = self.gate.lock().await;
        self.task.abort();
        let _ = self.task.await;
        self.written.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_sigkills_during_copy_catch_up_and_live_load_lose_and_repeat_nothing() {
    let cluster = pgcluster::shared();
    let scale = store::Scale { customers: 3_000, products: 300, orders: 8_000, items_per_order: 3 };
    let (src_db, src, dst_db, dst) = store_pair(cluster, cluster, &scale).await;
    let (source, target) = (cluster.url(&src_db), cluster.url(&dst_db));
    let name = pgcluster::unique_name("kill20");
    let mut rng = StdRng::seed_from_u64(0xFA17);
    let mut kills = 0;

    // During the initial copy.
    for _ in 0..4 {
        let mut child = spawn_mirror(&source, &target, &name);
        tokio::time::sleep(Duration::from_millis(rng.gen_range(30..600))).await;
        kill(&mut child);
        kills += 1;
    }

    // During catch-up of a mixed backlog (inserts, updates, deletes, TOAST).
    let mut writer = cluster.connect(&src_db).await.unwrap();
    for round in 0..6i64 {
        for _ in 0..120 {
            store::oltp_transaction(&mut writer, &mut rng).await.unwrap();
        }
        writer
            .batch_execute(&format!(
                "UPDATE products SET stock = stock + 1 WHERE id % 5 = {round};
                 DELETE FROM order_items WHERE order_id % 97 = {round};"
            ))
            .await
            .unwrap();
        let mut child = spawn_mirror(&source, &target, &name);
        tokio::time::sleep(Duration::from_millis(rng.gen_range(50..800))).await;
        kill(&mut child);
        kills += 1;
    }
    drop(writer);

    // While streaming live load from a concurrent writer; after every restart the target
    // catches up to exactly the primary.
    let live = Writer::start(cluster, &src_db, 7).await;
    for _ in 0..5 {
        let mut child = spawn_mirror(&source, &target, &name);
        tokio::time::sleep(Duration::from_millis(rng.gen_range(200..1200))).await;
        kill(&mut child);
        kills += 1;

        let paused = live.pause().await;
        let mut child = spawn_mirror(&source, &target, &name);
        wait_converged(&src, &dst, Duration::from_secs(60)).await;
        kill(&mut child);
        kills += 1;
        drop(paused);
        tokio::time::sleep(Duration::from_millis(rng.gen_range(100..400))).await;
    }
    let written = live.stop().await;
    assert!(written > 0, "the live writer wrote");

    let mut child = spawn_mirror(&source, &target, &name);
    wait_converged(&src, &dst, Duration::from_secs(60)).await;
    kill(&mut child);
    assert!(kills >= 20);
    assert_eq!(fingerprints(&src).await, fingerprints(&dst).await, "after {kills} kills");
    eprintln!("survived {kills} SIGKILLs ({written} live transactions)");
}

/// Options for an in-process mirror of the Store tables at explicit URLs.
fn mirror_at(source: &str, target: &str) -> MirrorOptions {
    let tables = TableSelection {
        publication: None,
        tables: Some(store::TABLES.iter().map(|t| (*t).to_owned()).collect()),
        exclude_tables: None,
    };
    pgmirror::logging::init(0);
    let mut opts = MirrorOptions::new(
        pgcluster::unique_name("fault"),
        ConnConfig::parse(source).unwrap(),
        ConnConfig::parse(target).unwrap(),
        tables,
    );
    opts.sequence_interval = Duration::from_secs(1);
    opts
}

struct Running {
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

fn run_mirror(opts: &MirrorOptions) -> Running {
    let shutdown = Shutdown::manual();
    let mut stop = shutdown.clone();
    let opts = opts.clone();
    let task = tokio::spawn(async move { mirror::run(&opts, &mut stop).await });
    Running { shutdown, task }
}

impl Running {
    async fn stop(self) {
        self.shutdown.trigger();
        let ended = tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("mirror stops within 30 s");
        ended.unwrap().expect("mirror stops cleanly");
    }

    /// The error the mirror stops with by itself, within `within`.
    async fn fatal(self, within: Duration) -> String {
        let ended = tokio::time::timeout(within, self.task)
            .await
            .expect("pgmirror stops by itself instead of retrying for ever");
        let err = ended.unwrap().expect_err("pgmirror stops with an error");
        format!("{err:#}")
    }
}

async fn count(client: &Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

/// A primary that streams large transactions early (`logical_decoding_work_mem = 64kB`).
fn streaming_primary() -> Cluster {
    ClusterBuilder::new().setting("logical_decoding_work_mem", "64kB").start().unwrap()
}

/// The Store tables of `primary` mirrored into the shared cluster, converged once.
async fn running_store_mirror(
    primary: &Cluster,
) -> (String, Client, Client, MirrorOptions, Running) {
    let replica = pgcluster::shared();
    let (src_db, src, dst_db, dst) = store_pair(primary, replica, &store::Scale::tiny()).await;
    let opts = store_mirror(primary, &src_db, replica, &dst_db);
    let running = run_mirror(&opts);
    wait_converged(&src, &dst, Duration::from_secs(60)).await;
    (src_db, src, dst, opts, running)
}

/// Rows of the customers table locked by some session of the target database.
async fn customers_locked_on(dst: &Client) -> bool {
    count(
        dst,
        "SELECT count(*) FROM pg_catalog.pg_locks l \
         JOIN pg_catalog.pg_database d ON d.oid = l.database AND d.datname = current_database() \
         WHERE l.relation = 'customers'::regclass AND l.mode = 'RowExclusiveLock' AND l.granted",
    )
    .await
        > 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_streamed_transactions_applied_ahead_survive_a_crash_of_the_mirror() {
    // Streams large transactions early: the mirror applies them while they arrive.
    let primary = streaming_primary();
    let _log = primary.log_guard();
    let (src_db, src, dst, opts, running) = running_store_mirror(&primary).await;
    let insert_big = |tag: &str| {
        format!(
            "BEGIN; INSERT INTO customers (email, name) \
             SELECT '{tag}' || g || '@example.com', repeat('x', 200) FROM generate_series(1, 20000) g"
        )
    };

    // 1. Small transactions commit around a large one, which commits last.
    let big = primary.connect(&src_db).await.unwrap();
    big.batch_execute(&insert_big("first")).await.unwrap();
    let writer = Writer::start(&primary, &src_db, 31).await;
    // The writer does not touch customers: a lock there is the large transaction, applied
    // ahead on the mirror's second target session.
    wait_for(Duration::from_secs(30), "the large transaction applied ahead", || {
        customers_locked_on(&dst)
    })
    .await;
    big.batch_execute("UPDATE customers SET loyalty_points = 7 WHERE id % 3 = 0; COMMIT")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    writer.stop().await;
    wait_converged(&src, &dst, Duration::from_secs(60)).await;

    // 2. The mirror dies while it applies another one ahead; a new one takes over.
    big.batch_execute(&insert_big("second")).await.unwrap();
    wait_for(Duration::from_secs(30), "the second large transaction applied ahead", || {
        customers_locked_on(&dst)
    })
    .await;
    running.task.abort();
    let _ = running.task.await;
    wait_for(Duration::from_secs(30), "the dead mirror's sessions rolled back", || async {
        !customers_locked_on(&dst).await
    })
    .await;
    let running = run_mirror(&opts);
    big.batch_execute("COMMIT").await.unwrap();
    src.batch_execute("UPDATE products SET stock = stock + 1 WHERE id = 1").await.unwrap();
    wait_converged(&src, &dst, Duration::from_secs(60)).await;
    let n = count(
        &dst,
        "SELECT count(*) FROM customers WHERE email LIKE 'first%' OR email LIKE 'second%'",
    )
    .await;
    assert_eq!(n, 40_000);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_crash_mid_large_transaction_and_small_stream_converges_without_the_aborted_one() {
    // Streams large transactions early, so the mirror holds part of one when the primary dies.
    let primary = streaming_primary();
    let _log = primary.log_guard();
    let (src_db, _, dst, _, running) = running_store_mirror(&primary).await;

    // 1. A large transaction in flight (streamed to the mirror in pieces), then a crash.
    let big = primary.connect(&src_db).await.unwrap();
    big.batch_execute(
        "BEGIN; INSERT INTO customers (email, name) \
         SELECT 'big' || g || '@example.com', repeat('x', 200) FROM generate_series(1, 30000) g",
    )
    .await
    .unwrap();
    let writer = Writer::start(&primary, &src_db, 11).await;
    // Let the large one reach the mirror (streamed chunks) while small ones commit around it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    primary.stop(StopMode::Immediate).unwrap();
    writer.stop().await;
    drop(big);
    tokio::time::sleep(Duration::from_millis(500)).await;
    primary.start().unwrap();

    let src = primary.connect(&src_db).await.unwrap();
    wait_converged(&src, &dst, Duration::from_secs(60)).await;
    let leaked = count(&dst, "SELECT count(*) FROM customers WHERE email LIKE 'big%'").await;
    assert_eq!(leaked, 0, "the aborted large transaction must not reach the target");

    // 2. A crash in the middle of a stream of small transactions.
    let writer = Writer::start(&primary, &src_db, 12).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    primary.stop(StopMode::Immediate).unwrap();
    let before_crash = writer.stop().await;
    assert!(before_crash > 0);
    primary.start().unwrap();
    let src = primary.connect(&src_db).await.unwrap();
    let writer = Writer::start(&primary, &src_db, 13).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    writer.stop().await;
    wait_converged(&src, &dst, Duration::from_secs(60)).await;
    assert!(!running.task.is_finished(), "pgmirror kept running through both crashes");
    running.stop().await;
    assert_eq!(fingerprints(&src).await, fingerprints(&dst).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_locked_then_restarted_waits_and_keeps_its_place() {
    let primary = pgcluster::shared();
    let replica = ClusterBuilder::new().start().unwrap();
    let _log = replica.log_guard();
    let (src_db, src, dst_db, dst) = store_pair(primary, &replica, &store::Scale::tiny()).await;
    let opts = store_mirror(primary, &src_db, &replica, &dst_db);
    let running = run_mirror(&opts);
    wait_converged(&src, &dst, Duration::from_secs(60)).await;

    // The target refuses writes to orders for a while.
    let mut locker = replica.connect(&dst_db).await.unwrap();
    let tx = locker.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE").await.unwrap();
    let writer = Writer::start(primary, &src_db, 21).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    writer.stop().await;
    assert!(!running.task.is_finished(), "pgmirror waits for the lock instead of failing");
    tx.commit().await.unwrap();
    wait_converged(&src, &dst, Duration::from_secs(60)).await;

    // The target restarts (fast, then crash) under load.
    for mode in [StopMode::Fast, StopMode::Immediate] {
        let writer = Writer::start(primary, &src_db, 22).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        replica.stop(mode).unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        replica.start().unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        writer.stop().await;
        let dst = replica.connect(&dst_db).await.unwrap();
        wait_converged(&src, &dst, Duration::from_secs(60)).await;
    }
    assert!(!running.task.is_finished(), "pgmirror kept running through target restarts");
    running.stop().await;
    let dst = replica.connect(&dst_db).await.unwrap();
    assert_eq!(fingerprints(&src).await, fingerprints(&dst).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_cut_stalled_and_delayed_reconnects_and_converges() {
    let primary = ClusterBuilder::new().wal_sender_timeout(Duration::from_secs(2)).start().unwrap();
    let _log = primary.log_guard();
    let replica = pgcluster::shared();
    let (src_db, src, dst_db, dst) = store_pair(&primary, replica, &store::Scale::tiny()).await;
    let to_primary = Proxy::start(primary.port()).await;
    let to_replica = Proxy::start(replica.port()).await;
    let url = |port: u16, db: &str| format!("postgres://postgres@127.0.0.1:{port}/{db}");
    let opts = mirror_at(&url(to_primary.port(), &src_db), &url(to_replica.port(), &dst_db));
    let running = run_mirror(&opts);
    wait_converged(&src, &dst, Duration::from_secs(60)).await;
    let mut faults = 0;

    // Delay on every chunk, both ways.
    to_primary.delay(Duration::from_millis(30));
    to_replica.delay(Duration::from_millis(30));
    let writer = Writer::start(&primary, &src_db, 31).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    writer.stop().await;
    wait_converged(&src, &dst, Duration::from_secs(60)).await;
    to_primary.delay(Duration::ZERO);
    to_replica.delay(Duration::ZERO);
    faults += 1;

    // Every connection cut, several times, under load.
    let writer = Writer::start(&primary, &src_db, 32).await;
    for round in 0..4 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        if round % 2 == 0 {
            to_primary.cut()
        } else {
            to_replica.cut()
        }
        faults += 1;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    to_primary.cut();
    to_replica.cut();
    faults += 1;
    writer.stop().await;
    wait_converged(&src, &dst, Duration::from_secs(60)).await;

    // Stalled past wal_sender_timeout (2 s): the primary drops the walsender.
    let accepted = to_primary.accepted();
    let writer = Writer::start(&primary, &src_db, 33).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    to_primary.stall(true);
    to_replica.stall(true);
    tokio::time::sleep(Duration::from_secs(5)).await;
    to_primary.stall(false);
    to_replica.stall(false);
    faults += 1;
    writer.stop().await;
    wait_converged(&src, &dst, Duration::from_secs(60)).await;
    assert!(to_primary.accepted() > accepted, "pgmirror reconnected after the stall");
    assert!(!running.task.is_finished());
    running.stop().await;
    assert_eq!(fingerprints(&src).await, fingerprints(&dst).await);
    eprintln!("converged after {faults} network faults");
}

async fn slot_exists(client: &Client, slot: &str) -> bool {
    client
        .query_one("SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", &[&slot])
        .await
        .unwrap()
        .get::<_, i64>(0)
        == 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_dropped_behind_its_back_stops_with_the_recovery_and_no_resync() {
    let cluster = pgcluster::shared();
    let (src_db, src, dst_db, dst) = store_pair(cluster, cluster, &store::Scale::tiny()).await;
    let opts = store_mirror(cluster, &src_db, cluster, &dst_db);
    let slot = opts.slot_name();
    let running = run_mirror(&opts);
    wait_converged(&src, &dst, Duration::from_secs(60)).await;

    // Terminate the walsender and drop its slot (retrying while pgmirror grabs it again).
    let started = Instant::now();
    loop {
        src.execute(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots \
             WHERE slot_name = $1 AND active_pid IS NOT NULL",
            &[&slot],
        )
        .await
        .unwrap();
        if src.execute("SELECT pg_drop_replication_slot($1)", &[&slot]).await.is_ok() {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "could not drop the slot");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    src.execute("INSERT INTO customers (email, name) VALUES ('lost@example.com', 'Lost')", &[])
        .await
        .unwrap();
    let msg = running.fatal(Duration::from_secs(30)).await;
    assert!(msg.contains(&slot), "names the slot: {msg}");
    assert!(msg.contains("initial copy"), "says how to recover: {msg}");
    assert!(!slot_exists(&src, &slot).await, "no silent re-creation of the slot: {msg}");
    let lost = count(&dst, "SELECT count(*) FROM customers WHERE email = 'lost@example.com'").await;
    assert_eq!(lost, 0, "no silent resync");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publication_dropped_stops_with_a_clear_error() {
    let cluster = pgcluster::shared();
    let (src_db, src, dst_db, dst) = store_pair(cluster, cluster, &store::Scale::tiny()).await;
    let opts = store_mirror(cluster, &src_db, cluster, &dst_db);
    let publication = format!("pgmirror_{}", opts.name);
    let running = run_mirror(&opts);
    wait_converged(&src, &dst, Duration::from_secs(60)).await;
    src.batch_execute(&format!("DROP PUBLICATION {}", pgconn::quote_ident(&publication)))
        .await
        .unwrap();
    src.execute("INSERT INTO customers (email, name) VALUES ('nopub@example.com', 'N')", &[])
        .await
        .unwrap();
    let msg = running.fatal(Duration::from_secs(30)).await;
    assert!(msg.contains(&publication), "names the publication: {msg}");
    assert!(msg.contains("CREATE PUBLICATION"), "says how to fix it: {msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_altered_incompatibly_on_the_primary_stops_with_a_clear_error() {
    let cluster = pgcluster::shared();
    let (src_db, src, dst_db, dst) = store_pair(cluster, cluster, &store::Scale::tiny()).await;
    let opts = store_mirror(cluster, &src_db, cluster, &dst_db);
    let running = run_mirror(&opts);
    wait_converged(&src, &dst, Duration::from_secs(60)).await;
    // A required column dropped on the primary: the target cannot take its rows any more.
    src.batch_execute(
        "ALTER TABLE customers DROP COLUMN name;
         INSERT INTO customers (email) VALUES ('altered@example.com');",
    )
    .await
    .unwrap();
    let msg = running.fatal(Duration::from_secs(30)).await;
    assert!(msg.contains("customers") && msg.contains("name"), "names table and column: {msg}");
    eprintln!("incompatible change: {msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_dropped_on_the_primary_stops_with_a_clear_error() {
    let cluster = pgcluster::shared();
    let (src_db, src, dst_db, dst) = store_pair(cluster, cluster, &store::Scale::tiny()).await;
    let opts = store_mirror(cluster, &src_db, cluster, &dst_db);
    let running = run_mirror(&opts);
    wait_converged(&src, &dst, Duration::from_secs(60)).await;
    src.batch_execute("DROP TABLE order_items").await.unwrap();
    let msg = running.fatal(Duration::from_secs(30)).await;
    assert!(msg.contains("order_items"), "names the table: {msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_process_for_the_same_mirror_refuses_to_run() {
    let cluster = pgcluster::shared();
    let (src_db, src, dst_db, dst) = store_pair(cluster, cluster, &store::Scale::tiny()).await;
    let (source, target) = (cluster.url(&src_db), cluster.url(&dst_db));
    let name = pgcluster::unique_name("twice");
    let mut first = spawn_mirror(&source, &target, &name);
    wait_converged(&src, &dst, Duration::from_secs(60)).await;

    let second = Command::new(env!("CARGO_BIN_EXE_pgmirror"))
        .args(["mirror", "--source", &source, "--target", &target, "--name", &name])
        .args(["--tables", &store::TABLES.join(",")])
        .env("RUST_LOG", "info")
        .output()
        .expect("run a second pgmirror");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "the second pgmirror must refuse: {stderr}");
    // It says at once why it waits, then refuses.
    let waiting = stderr.find("another pgmirror holds mirror").expect(&stderr);
    let refused = stderr.find("another pgmirror is already running").expect(&stderr);
    assert!(waiting < refused, "{stderr}");
    assert!(first.0.try_wait().unwrap().is_none(), "the first one keeps running");

    // The first still mirrors.
    src.execute("INSERT INTO customers (email, name) VALUES ('once@example.com', 'O')", &[])
        .await
        .unwrap();
    wait_converged(&src, &dst, Duration::from_secs(30)).await;
    kill(&mut first);
}

fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_bounded_under_a_300k_row_transaction() {
    let cluster = pgcluster::shared();
    let (src_db, src) = crate::common::database(cluster, "huge_src").await;
    let (dst_db, dst) = crate::common::database(cluster, "huge_dst").await;
    src.batch_execute("CREATE TABLE big (id bigint PRIMARY KEY, payload text NOT NULL)")
        .await
        .unwrap();
    let name = pgcluster::unique_name("huge");
    let mut child =
        spawn(&["--name", &name, "--tables", "big"], &cluster.url(&src_db), &cluster.url(&dst_db));
    wait_for(Duration::from_secs(30), "the mirror to stream", || async {
        count(&src, "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'pgmirror'")
            .await
            == 1
    })
    .await;
    let rows = 300_000i64;
    src.execute(
        "INSERT INTO big SELECT g, md5(g::text) || repeat('p', 300) FROM generate_series(1::bigint, $1) g",
        &[&rows],
    )
    .await
    .unwrap();
    wait_for(Duration::from_secs(120), "all rows on the target", || async {
        dst.query_one("SELECT count(*) FROM big", &[])
            .await
            .map(|r| r.get::<_, i64>(0) == rows)
            .unwrap_or(false)
    })
    .await;
    let peak_kib = vm_hwm_kib(child.0.id());
    kill(&mut child);
    eprintln!("peak RSS of pgmirror through a {rows}-row transaction: {} MiB", peak_kib / 1024);
    assert!(peak_kib < 200 * 1024, "peak RSS {peak_kib} KiB");
}

/// The walsender of a stream that just ended (a fault, a repair of the target) leaves the slot
/// only once the server notices: a start meanwhile waits for it instead of stopping with "slot
/// is active" (which ended a mirror right after it repaired a table added to its publication).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_waits_for_the_previous_walsender_to_release_the_slot() {
    let cluster = pgcluster::shared();
    let (src_db, src, dst_db, dst) = store_pair(cluster, cluster, &store::Scale::tiny()).await;
    let opts = store_mirror(cluster, &src_db, cluster, &dst_db);
    let running = run_mirror(&opts);
    // Streaming: set-up is over, and the slot stays when the mirror stops. The slot is active
    // during set-up too (the walsender that created it holds it while the copy uses its
    // snapshot), so the mirror's own record says when streaming began.
    let slot = opts.slot_name();
    wait_for(Duration::from_secs(60), "the mirror streaming", || async {
        let sql = "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1 AND active";
        let recorded = "SELECT count(*) FROM pgmirror.mirrors WHERE state = 'streaming'";
        src.query_one(sql, &[&slot]).await.unwrap().get::<_, i64>(0) == 1
            && dst.query_one(recorded, &[]).await.is_ok_and(|r| r.get::<_, i64>(0) == 1)
    })
    .await;
    running.stop().await;
    wait_for(Duration::from_secs(30), "the slot released", || async {
        let sql = "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1 AND active";
        src.query_one(sql, &[&slot]).await.unwrap().get::<_, i64>(0) == 0
    })
    .await;

    // Another walsender holds the slot for a moment, as the previous stream's does.
    let holder = replication::ReplicationClient::connect(&opts.source).await.unwrap();
    let publication = format!("pgmirror_{}", opts.name);
    let start = replication::StartReplication::new(slot, [publication]);
    let held = holder.start_replication(start).await.unwrap();
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        drop(held);
    });

    let running = run_mirror(&opts);
    src.execute("INSERT INTO customers (email, name) VALUES ('after@example.com', 'After')", &[])
        .await
        .unwrap();
    wait_for(Duration::from_secs(60), "the row after the restart", || async {
        running.task.is_finished()
            || count(&dst, "SELECT count(*) FROM customers WHERE email = 'after@example.com'").await
                == 1
    })
    .await;
    assert!(
        !running.task.is_finished(),
        "the mirror stopped: {}",
        running.fatal(Duration::ZERO).await
    );
    release.await.unwrap();
    running.stop().await;
}
