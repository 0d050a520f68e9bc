//! A mirror into shards: the lab scenario across two shards, SIGKILLs under the Store OLTP
//! load, and a shard's cluster stopped and restarted mid-stream; `verify` after each.

use std::process::{Command, Stdio};
use std::time::Duration;

use applier::shard::ShardLayout;
use pgcluster::{Cluster, ClusterBuilder, StopMode};
use pgconn::ConnConfig;
use pgmirror::mirror::shards::verify::{ShardVerifyOptions, ShardVerifyReport, verify};
use pgmirror::mirror::shards::{self, ShardedOptions};
use pgmirror::shutdown::Shutdown;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio_postgres::Client;

use crate::common::{Mirror, database, kill, pgmirror_task, store_mirror, wait_for};

/// The Store tables' shard keys: a customer's orders with the customer; items by order.
const SHARD_KEYS: [&str; 3] = ["customers=id", "orders=customer_id", "order_items=order_id"];

fn layout() -> ShardLayout {
    pgmirror::commands::shard_keys::parse(&SHARD_KEYS.map(String::from)).unwrap()
}

/// A Store source on `cluster` (orders' shard key is not in its primary key, so it publishes
/// whole old rows) and `n` empty shard databases on `shard_clusters` (cycled).
async fn store_and_shards(
    cluster: &Cluster,
    shard_clusters: &[&Cluster],
    n: usize,
) -> (String, Client, Vec<(String, String)>) {
    let (src_db, src) = database(cluster, "shsrc").await;
    store::create_schema(&src).await.unwrap();
    store::populate(&src, &store::Scale::tiny()).await.unwrap();
    src.batch_execute("ALTER TABLE orders REPLICA IDENTITY FULL").await.unwrap();
    let mut shards = Vec::new();
    for i in 0..n {
        let c = shard_clusters[i % shard_clusters.len()];
        let (db, _) = database(c, &format!("shard{i}")).await;
        shards.push((c.url(&db), db));
    }
    (src_db, src, shards)
}

fn verify_opts(source: &str, shards: &[(String, String)], name: &str) -> ShardVerifyOptions {
    ShardVerifyOptions {
        source: ConnConfig::parse(source).unwrap(),
        shards: shards.iter().map(|(url, _)| ConnConfig::parse(url).unwrap()).collect(),
        layout: layout(),
        tables: pgmirror::selection::TableSelection {
            publication: None,
            tables: Some(store::TABLES.iter().map(|t| (*t).to_owned()).collect()),
            exclude_tables: None,
        },
        name: name.to_owned(),
        wait_timeout: Duration::from_secs(30),
    }
}

/// Verifies until every table matches (the mirror may still be copying), or fails with the
/// last report.
async fn wait_verified(opts: &ShardVerifyOptions, timeout: Duration) -> ShardVerifyReport {
    let start = std::time::Instant::now();
    loop {
        match verify(opts).await {
            Ok(r) if r.all_match() && r.caught_up => return r,
            Ok(r) if start.elapsed() > timeout => panic!("shards differ:\n{}", r.render()),
            Err(e) if start.elapsed() > timeout => panic!("verify failed: {e:#}"),
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_scenario_across_two_shards() {
    let cluster = pgcluster::shared();
    let (src_db, src, shards_dbs) = store_and_shards(cluster, &[cluster], 2).await;
    let mut mirror = store_mirror(cluster, &src_db, cluster, &shards_dbs[0].1);
    mirror.sequence_interval = Duration::from_millis(300);
    let name = mirror.name.clone();
    let opts = ShardedOptions {
        mirror,
        shards: shards_dbs.iter().map(|(url, _)| ConnConfig::parse(url).unwrap()).collect(),
        layout: layout(),
    };
    let shutdown = Shutdown::manual();
    let mut stop = shutdown.clone();
    let task = tokio::spawn(async move { shards::run(&opts, &mut stop).await });
    let vopts = verify_opts(&cluster.url(&src_db), &shards_dbs, &name);

    // The initial copy splits customers, orders and items; products are on both shards.
    let report = wait_verified(&vopts, Duration::from_secs(60)).await;
    assert_eq!(report.tables.len(), 4);
    let shard0 = cluster.connect(&shards_dbs[0].1).await.unwrap();
    let shard1 = cluster.connect(&shards_dbs[1].1).await.unwrap();
    let customers: i64 = src.query_one("SELECT count(*) FROM customers", &[]).await.unwrap().get(0);
    let on0: i64 = shard0.query_one("SELECT count(*) FROM customers", &[]).await.unwrap().get(0);
    let on1: i64 = shard1.query_one("SELECT count(*) FROM customers", &[]).await.unwrap().get(0);
    assert_eq!(on0 + on1, customers);
    assert!(on0 > 0 && on1 > 0, "both shards hold customers ({on0}, {on1})");

    // A row inserted on the primary lands on the shard its key hashes to.
    let id: i64 = src
        .query_one(
            "INSERT INTO customers (email, name) VALUES ('lab1@example.com', 'Lab One') RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    src.batch_execute("CREATE TABLE shard_probe (k bigint) PARTITION BY HASH (k)").await.unwrap();
    let home: bool = src
        .query_one(
            "SELECT satisfies_hash_partition('shard_probe'::regclass, 2, 0, $1::int8)",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    let (here, there) = if home { (&shard0, &shard1) } else { (&shard1, &shard0) };
    wait_for(Duration::from_secs(5), "the new customer on its shard", || async {
        here.query_opt("SELECT 1 FROM customers WHERE id = $1", &[&id]).await.unwrap().is_some()
    })
    .await;
    assert!(
        there.query_opt("SELECT 1 FROM customers WHERE id = $1", &[&id]).await.unwrap().is_none()
    );

    // The OLTP load, orders moved to other customers (and shards), a reference table changed.
    let mut writer = cluster.connect(&src_db).await.unwrap();
    let mut rng = StdRng::seed_from_u64(21);
    for _ in 0..200 {
        store::oltp_transaction(&mut writer, &mut rng).await.unwrap();
    }
    src.batch_execute(
        "UPDATE orders SET customer_id = customer_id % 15 + 1, note = repeat(md5(id::text), 200) \
         WHERE id % 4 = 0; \
         UPDATE products SET stock = stock + 10 WHERE id % 3 = 0",
    )
    .await
    .unwrap();
    wait_verified(&vopts, Duration::from_secs(60)).await;

    // TRUNCATE reaches every shard; sequences too.
    src.batch_execute("TRUNCATE order_items").await.unwrap();
    wait_verified(&vopts, Duration::from_secs(60)).await;
    let want: i64 =
        src.query_one("SELECT last_value FROM customers_id_seq", &[]).await.unwrap().get(0);
    for shard in [&shard0, &shard1] {
        wait_for(Duration::from_secs(10), "the sequence on every shard", || async {
            let v: i64 = shard
                .query_one("SELECT last_value FROM customers_id_seq", &[])
                .await
                .unwrap()
                .get(0);
            v == want
        })
        .await;
    }
    shutdown.trigger();
    task.await.unwrap().unwrap();

    // The operator commands take every shard.
    let source = cluster.url(&src_db);
    let mut targets = Vec::new();
    for (url, _) in &shards_dbs {
        targets.extend(["--target", url.as_str()]);
    }
    // Stopped, the mirror is reported unhealthy (exit 1), shard by shard.
    let status = pgmirror_cmd(&[&["status", "--source", &source, "--name", &name], &targets[..]]);
    let out = String::from_utf8_lossy(&status.stdout);
    assert!(out.contains("shard 0:") && out.contains("shard 1:"), "{out}");
    let check =
        pgmirror_cmd(&[&["check", "--source", &source, "--tables", "customers"], &targets[..]]);
    let out = String::from_utf8_lossy(&check.stdout);
    assert!(out.contains("shard 1:"), "{out}");
    let dropped = pgmirror_cmd(&[&["drop", "--source", &source, "--name", &name], &targets[..]]);
    assert!(dropped.status.success(), "{}", String::from_utf8_lossy(&dropped.stderr));
    let slots: i64 = src
        .query_one(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1",
            &[&format!("pgmirror_{name}")],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(slots, 0, "the slot is dropped");
    for shard in [&shard0, &shard1] {
        let left: bool = shard
            .query_one("SELECT to_regnamespace('pgmirror') IS NOT NULL", &[])
            .await
            .unwrap()
            .get(0);
        assert!(!left, "the pgmirror schema is gone from every shard");
    }
}

/// Runs the built binary with the concatenated arguments.
fn pgmirror_cmd(args: &[&[&str]]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pgmirror")).args(args.concat()).output().expect("run pgmirror")
}

/// `pgmirror mirror` into the shards, as a child process.
fn spawn_sharded(source: &str, shards: &[(String, String)], name: &str) -> Mirror {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgmirror"));
    cmd.args(["mirror", "--source", source, "--name", name, "--tables"])
        .arg(store::TABLES.join(","));
    for (url, _) in shards {
        cmd.args(["--target", url]);
    }
    for key in SHARD_KEYS {
        cmd.args(["--shard-key", key]);
    }
    let child = cmd
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn pgmirror");
    Mirror(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loop_under_oltp_load_verifies_after_each_restart() {
    let cluster = pgcluster::shared();
    let (src_db, _src, shards_dbs) = store_and_shards(cluster, &[cluster], 2).await;
    let source = cluster.url(&src_db);
    let name = pgcluster::unique_name("shkill");
    let vopts = verify_opts(&source, &shards_dbs, &name);
    let mut rng = StdRng::seed_from_u64(0x5EED);
    let mut writer = cluster.connect(&src_db).await.unwrap();
    for round in 0..4u64 {
        let mut child = spawn_sharded(&source, &shards_dbs, &name);
        // Writes while the mirror copies or streams, then a SIGKILL at a random moment.
        for _ in 0..100 {
            store::oltp_transaction(&mut writer, &mut rng).await.unwrap();
        }
        writer
            .execute(
                "UPDATE orders SET customer_id = customer_id % 15 + 1 WHERE id % 9 = $1",
                &[&i64::try_from(round).unwrap()],
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100 + 150 * round)).await;
        kill(&mut child);
        // Restarted, it catches up: every shard exact.
        let mut child = spawn_sharded(&source, &shards_dbs, &name);
        wait_verified(&vopts, Duration::from_secs(90)).await;
        kill(&mut child);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_sharded_outside_their_primary_key_survive_sigkills() {
    let cluster = pgcluster::shared();
    let (src_db, src, shards_dbs) = store_and_shards(cluster, &[cluster], 2).await;
    // The default identity (the primary key `id`): an update sends the new row only, without
    // its TOASTed note, and a delete the id only.
    src.batch_execute(
        "ALTER TABLE orders REPLICA IDENTITY DEFAULT; \
         UPDATE orders SET note = (SELECT string_agg(md5(random()::text || i::text), '') \
             FROM generate_series(1, 400) i)",
    )
    .await
    .unwrap();
    let source = cluster.url(&src_db);
    let name = pgcluster::unique_name("shloose");
    let vopts = verify_opts(&source, &shards_dbs, &name);
    let mut rng = StdRng::seed_from_u64(0x1005E);
    let mut writer = cluster.connect(&src_db).await.unwrap();
    for round in 0..3i64 {
        let mut child = spawn_sharded(&source, &shards_dbs, &name);
        for _ in 0..60 {
            store::oltp_transaction(&mut writer, &mut rng).await.unwrap();
        }
        writer
            .batch_execute(&format!(
                "UPDATE orders SET customer_id = customer_id % 15 + 1 WHERE id % 5 = {round}; \
                 DELETE FROM order_items WHERE order_id % 23 = {round}; \
                 DELETE FROM orders WHERE id % 23 = {round}"
            ))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100 + 200 * u64::try_from(round).unwrap())).await;
        kill(&mut child);
        let mut child = spawn_sharded(&source, &shards_dbs, &name);
        wait_verified(&vopts, Duration::from_secs(90)).await;
        kill(&mut child);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_cluster_stopped_mid_stream_catches_up_when_it_returns() {
    let cluster = pgcluster::shared();
    // Shard 1 on a cluster of its own, stopped while changes flow.
    let own = ClusterBuilder::new().start().expect("start the shard's cluster");
    let (src_db, src, shards_dbs) = store_and_shards(cluster, &[cluster, &own], 2).await;
    let source = cluster.url(&src_db);
    let name = pgcluster::unique_name("shdown");
    let vopts = verify_opts(&source, &shards_dbs, &name);
    let _child = spawn_sharded(&source, &shards_dbs, &name);
    wait_verified(&vopts, Duration::from_secs(60)).await;

    own.stop(StopMode::Immediate).expect("stop shard 1");
    let mut writer = cluster.connect(&src_db).await.unwrap();
    let mut rng = StdRng::seed_from_u64(7);
    for _ in 0..150 {
        store::oltp_transaction(&mut writer, &mut rng).await.unwrap();
    }
    // The slot keeps what shard 1 has not made durable.
    let slot: String = src
        .query_one(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&format!("pgmirror_{name}")],
        )
        .await
        .unwrap()
        .get(0);
    let now: String = src.query_one("SELECT pg_current_wal_lsn()::text", &[]).await.unwrap().get(0);
    assert_ne!(slot, now, "the slot is not confirmed past what the stopped shard lacks");
    tokio::time::sleep(Duration::from_secs(2)).await;
    own.start().expect("restart shard 1");
    wait_verified(&vopts, Duration::from_secs(120)).await;
}

/// A sharded mirror of `tables` started on the given shard databases, running in this process.
fn start_sharded(
    cluster: &Cluster,
    src_db: &str,
    shards_dbs: &[(String, String)],
    tables: &[&str],
) -> (String, Shutdown, tokio::task::JoinHandle<anyhow::Result<()>>) {
    let mut mirror = store_mirror(cluster, src_db, cluster, &shards_dbs[0].1);
    mirror.sequence_interval = Duration::from_millis(300);
    mirror.tables.tables = Some(tables.iter().map(|t| (*t).to_owned()).collect());
    let name = mirror.name.clone();
    let opts = ShardedOptions {
        mirror,
        shards: shards_dbs.iter().map(|(url, _)| ConnConfig::parse(url).unwrap()).collect(),
        layout: layout(),
    };
    let shutdown = Shutdown::manual();
    let mut stop = shutdown.clone();
    let task = tokio::spawn(async move { shards::run(&opts, &mut stop).await });
    (name, shutdown, task)
}

/// `pgmirror reshard` from the mirror `old` on `old_shards` to `new` on `new_shards`.
fn reshard_args(
    source: &str,
    (new, new_shards): (&str, &[(String, String)]),
    (old, old_shards): (&str, &[(String, String)]),
) -> Vec<String> {
    let mut args: Vec<String> =
        ["reshard", "--source", source, "--name", new, "--retire", old].map(String::from).into();
    for (url, _) in new_shards {
        args.extend(["--target".to_owned(), url.clone()]);
    }
    for (url, _) in old_shards {
        args.extend(["--retire-target".to_owned(), url.clone()]);
    }
    args.extend(SHARD_KEYS.iter().flat_map(|k| ["--shard-key".to_owned(), (*k).to_owned()]));
    args
}

async fn slot_exists(cluster: &Cluster, slot: &str) -> bool {
    let c = cluster.connect("postgres").await.unwrap();
    c.query_one("SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", &[&slot])
        .await
        .unwrap()
        .get::<_, i64>(0)
        == 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shards_become_three_while_writes_go_on() {
    let cluster = pgcluster::shared();
    let (src_db, _src, two) = store_and_shards(cluster, &[cluster], 2).await;
    let source = cluster.url(&src_db);
    let (old_name, old_stop, old_task) = start_sharded(cluster, &src_db, &two, &store::TABLES);
    wait_verified(&verify_opts(&source, &two, &old_name), Duration::from_secs(60)).await;

    // Writes go on throughout.
    let writing = Shutdown::manual();
    let stop_writing = writing.clone();
    let mut writer = cluster.connect(&src_db).await.unwrap();
    let writes = tokio::spawn(async move {
        let mut rng = StdRng::seed_from_u64(23);
        let mut n = 0u32;
        while !stop_writing.is_triggered() {
            store::oltp_transaction(&mut writer, &mut rng).await.unwrap();
            n += 1;
        }
        n
    });

    // A second mirror from the same source into three new targets: its own slot and copy.
    let mut three = Vec::new();
    for i in 0..3 {
        let (db, _) = database(cluster, &format!("reshard{i}")).await;
        three.push((cluster.url(&db), db));
    }
    let (new_name, new_stop, new_task) = start_sharded(cluster, &src_db, &three, &store::TABLES);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!old_task.is_finished() && !new_task.is_finished(), "both mirrors run side by side");

    // Cut-over through `pgmirror reshard`, once writes stop.
    writing.trigger();
    let written = writes.await.unwrap();
    assert!(written > 10, "{written} transactions written while resharding");
    let reshard = reshard_args(&source, (&new_name, &three), (&old_name, &two));
    let run = pgmirror_task;
    let old_slot = format!("pgmirror_{old_name}");
    let slot_exists = |slot: String| async move { slot_exists(cluster, &slot).await };

    // The same mirror named twice is refused before anything is looked at.
    let mut same = reshard.clone();
    let at = same.iter().position(|a| a == "--retire").unwrap();
    same[at + 1] = new_name.clone();
    let (code, text) = run(same).await.unwrap();
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("both name"), "{text}");

    // While the old mirror runs, the new layout verifies but nothing is dropped.
    let (code, text) = run(reshard.clone()).await.unwrap();
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("all tables match"), "the new layout verified:\n{text}");
    assert!(text.contains("still runs") && text.contains("--wait"), "{text}");
    assert!(slot_exists(old_slot.clone()).await, "the old mirror's slot stays");

    // With --wait it retires the old mirror once that stops: its slot and bookkeeping go, its
    // rows stay.
    let mut waiting = reshard.clone();
    waiting.push("--wait".to_owned());
    let waiting = run(waiting);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!waiting.is_finished(), "reshard --wait waits while the old mirror runs");
    assert!(slot_exists(old_slot.clone()).await, "the old mirror's slot stays while it runs");
    old_stop.trigger();
    old_task.await.unwrap().unwrap();
    let (code, text) = waiting.await.unwrap();
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("retiring mirror"), "{text}");
    assert!(!slot_exists(old_slot).await, "the old mirror's slot is dropped:\n{text}");
    for (_, db) in &two {
        let c = cluster.connect(db).await.unwrap();
        let left: bool = c
            .query_one("SELECT to_regclass('pgmirror.mirrors') IS NOT NULL", &[])
            .await
            .unwrap()
            .get(0);
        assert!(!left, "{db} keeps no bookkeeping of the retired mirror");
        let rows: i64 = c.query_one("SELECT count(*) FROM customers", &[]).await.unwrap().get(0);
        assert!(rows > 0, "{db} keeps its rows for readers still pointed at it");
    }
    assert!(!new_task.is_finished(), "the new mirror keeps streaming");

    // The new layout goes on following the source.
    let src = cluster.connect(&src_db).await.unwrap();
    src.batch_execute("UPDATE customers SET name = name || ' (after reshard)' WHERE id <= 20")
        .await
        .unwrap();
    wait_verified(&verify_opts(&source, &three, &new_name), Duration::from_secs(60)).await;
    new_stop.trigger();
    new_task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_key_of_an_unsupported_type_stops_the_start_with_one_line() {
    let cluster = pgcluster::shared();
    let (src_db, src, shards_dbs) = store_and_shards(cluster, &[cluster], 2).await;
    let source = cluster.url(&src_db);
    let mut args = vec!["mirror", "--source", &source, "--tables", "customers,orders"];
    for (url, _) in &shards_dbs {
        args.extend(["--target", url.as_str()]);
    }
    args.extend(["--shard-key", "customers=is_active"]);
    let out = pgmirror_cmd(&[&args[..]]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("shard key column \"is_active\" of \"public\".\"customers\" has type boolean, which cannot be sharded"),
        "{err}"
    );
    // Refused before anything was created on the source.
    let slots: i64 = src
        .query_one(
            "SELECT count(*) FROM pg_replication_slots WHERE database = current_database()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(slots, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reshard_refuses_a_layout_that_lacks_a_table_or_does_not_stream() {
    let cluster = pgcluster::shared();
    let (src_db, _src, four) = store_and_shards(cluster, &[cluster], 4).await;
    let source = cluster.url(&src_db);
    let (all, partial) = four.split_at(2);
    let (all_name, all_stop, all_task) = start_sharded(cluster, &src_db, all, &store::TABLES);
    let some = ["customers", "orders", "order_items"];
    let (part_name, part_stop, part_task) = start_sharded(cluster, &src_db, partial, &some);
    wait_verified(&verify_opts(&source, all, &all_name), Duration::from_secs(60)).await;
    let mut part_opts = verify_opts(&source, partial, &part_name);
    part_opts.tables.tables = Some(some.map(String::from).into());
    wait_verified(&part_opts, Duration::from_secs(60)).await;

    // A new layout without products would lose it at the cutover.
    let args = reshard_args(&source, (&part_name, partial), (&all_name, all));
    let (code, text) = pgmirror_task(args).await.unwrap();
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("does not mirror public.products"), "{text}");
    assert_eq!(text.lines().count(), 1, "one line: {text}");

    // A new layout whose mirror is stopped would fall behind after the cutover.
    all_stop.trigger();
    all_task.await.unwrap().unwrap();
    let args = reshard_args(&source, (&all_name, all), (&part_name, partial));
    let (code, text) = pgmirror_task(args).await.unwrap();
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("is not streaming"), "{text}");
    for name in [&all_name, &part_name] {
        assert!(slot_exists(cluster, &format!("pgmirror_{name}")).await, "nothing was dropped");
    }
    part_stop.trigger();
    part_task.await.unwrap().unwrap();
}
