//! A mirror into MariaDB shards: the Store scenario across two shards (copy, routing of new
//! rows, PostgreSQL's hash layout), a key-changing update of a row with TOASTed values moving
//! between shards, and SIGKILLs under the Store OLTP load; each shard compared row by row.

use std::time::Duration;

use applier::mysql::schema::{self, MySqlTable, SourceTable};
use applier::mysql::session::MySqlUrl;
use applier::shard::{KeyColumn, ShardLayout};
use pgconn::ConnConfig;
use pgmirror::mirror::mysql::MySqlMirrorOptions;
use pgmirror::mirror::mysql::shards::{compare_shards, routed_keys, run};
use pgmirror::selection::TableSelection;
use pgmirror::shutdown::Shutdown;
use rand::SeedableRng;
use rand::rngs::StdRng;
use sqlx::MySqlConnection;
use testservers::mariadb::MariaDb;
use tokio_postgres::Client;

use crate::common::{database, kill, spawn};

/// The Store tables' shard keys: a customer's orders with the customer; items by order.
const SHARD_KEYS: [&str; 3] = ["customers=id", "orders=customer_id", "order_items=order_id"];

fn layout(keys: &[&str]) -> ShardLayout {
    let keys: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
    pgmirror::commands::shard_keys::parse(&keys).unwrap()
}

/// `n` fresh databases on the shared MariaDB server: their URLs and connections.
async fn mysql_shards(server: &MariaDb, n: usize) -> (Vec<String>, Vec<MySqlConnection>) {
    let mut urls = Vec::new();
    let mut conns = Vec::new();
    for i in 0..n {
        let name = pgcluster::unique_name(&format!("mshard{i}"));
        server.create_database(&name).await.expect("create MariaDB database");
        urls.push(server.url(&name));
        conns.push(server.connect(&name).await.expect("connect MariaDB"));
    }
    (urls, conns)
}

async fn mapped(src: &Client, tables: &[&str]) -> Vec<MySqlTable> {
    let mut sources = Vec::new();
    for t in tables {
        let row = src
            .query_one(
                "SELECT c.oid::int8, array(SELECT a.attname::text FROM pg_index i \
                   JOIN pg_attribute a ON a.attrelid = i.indrelid \
                   JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(n, o) ON k.n = a.attnum \
                   WHERE i.indrelid = c.oid AND i.indisprimary ORDER BY k.o) \
                 FROM pg_class c WHERE c.oid = $1::text::regclass",
                &[&format!("public.{t}")],
            )
            .await
            .unwrap();
        sources.push(SourceTable {
            schema: "public".into(),
            name: (*t).into(),
            oid: u32::try_from(row.get::<_, i64>(0)).unwrap(),
            key: row.get(1),
        });
    }
    schema::describe(src, &sources).await.unwrap()
}

fn options(src_url: &str, urls: &[String], keys: &[&str], tables: &[&str]) -> MySqlMirrorOptions {
    pgmirror::logging::init(0);
    let selection = TableSelection {
        publication: None,
        tables: Some(tables.iter().map(|t| (*t).to_owned()).collect()),
        exclude_tables: None,
    };
    let shards: Vec<MySqlUrl> = urls.iter().map(|u| MySqlUrl::parse(u).unwrap()).collect();
    let mut opts = MySqlMirrorOptions::new(
        pgcluster::unique_name("ms"),
        ConnConfig::parse(src_url).unwrap(),
        shards[0].clone(),
        selection,
    );
    opts.shards = shards;
    opts.layout = layout(keys);
    opts
}

/// What differs between the shards and the source, one line each.
async fn differences(
    src: &Client,
    shards: &mut [MySqlConnection],
    tables: &[MySqlTable],
    keys: &[Option<Vec<KeyColumn>>],
) -> Vec<String> {
    match compare_shards(src, shards, tables, keys, 500, 5).await {
        Ok(diffs) => diffs
            .iter()
            .filter(|d| !d.diff.is_equal())
            .map(|d| format!("{} shard {}: {:?}", d.table, d.shard, d.diff.differences))
            .collect(),
        Err(e) => vec![format!("{e:#}")],
    }
}

async fn wait_equal(
    src: &Client,
    shards: &mut [MySqlConnection],
    tables: &[MySqlTable],
    keys: &[Option<Vec<KeyColumn>>],
    timeout: Duration,
) {
    let start = std::time::Instant::now();
    loop {
        let diff = differences(src, shards, tables, keys).await;
        if diff.is_empty() {
            return;
        }
        assert!(start.elapsed() < timeout, "the shards still differ from the source: {diff:#?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn ids(conn: &mut MySqlConnection, sql: &str) -> Vec<i64> {
    sqlx::query_scalar(sql).fetch_all(conn).await.unwrap()
}

async fn drop_slot(src: &Client, slot: &str) {
    for _ in 0..100 {
        let dropped = src
            .execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
                 WHERE slot_name = $1 AND NOT active",
                &[&slot],
            )
            .await
            .unwrap();
        if dropped == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_shards_store_is_copied_routed_as_postgres_hashes_and_streamed() {
    let cluster = pgcluster::shared();
    let (src_db, src) = database(cluster, "mssrc").await;
    store::create_schema(&src).await.unwrap();
    store::populate(&src, &store::Scale::tiny()).await.unwrap();
    let (urls, mut shards) = mysql_shards(testservers::mariadb::shared(), 2).await;
    let opts = options(&cluster.url(&src_db), &urls, &SHARD_KEYS, &store::TABLES);
    let tables = mapped(&src, &store::TABLES).await;
    let keys = routed_keys(&opts.layout, &tables).unwrap();
    let shutdown = Shutdown::manual();
    let task = {
        let (opts, mut shutdown) = (opts.clone(), shutdown.clone());
        tokio::spawn(async move { run(&opts, &mut shutdown).await })
    };
    wait_equal(&src, &mut shards, &tables, &keys, Duration::from_secs(120)).await;
    // Every shard holds some customers, and products whole.
    let all: i64 = src.query_one("SELECT count(*) FROM customers", &[]).await.unwrap().get(0);
    let mut held = 0;
    for s in &mut shards {
        let n = ids(s, "SELECT id FROM customers").await.len();
        assert!(n > 0, "a shard without customers");
        held += i64::try_from(n).unwrap();
    }
    assert_eq!(held, all, "each customer on exactly one shard");

    // New rows while streaming land where PostgreSQL's hash partitioning puts them.
    src.batch_execute(
        "INSERT INTO customers (email, name) SELECT 'new' || g || '@x', 'n' \
           FROM generate_series(1, 40) g; \
         INSERT INTO orders (customer_id, total) SELECT id, 1 FROM customers \
           WHERE email LIKE 'new%'; \
         UPDATE products SET stock = stock + 1 WHERE id % 2 = 0; \
         DELETE FROM order_items WHERE order_id % 5 = 0; \
         CREATE TABLE hp (id bigint) PARTITION BY HASH (id); \
         CREATE TABLE hp0 PARTITION OF hp FOR VALUES WITH (MODULUS 2, REMAINDER 0); \
         CREATE TABLE hp1 PARTITION OF hp FOR VALUES WITH (MODULUS 2, REMAINDER 1)",
    )
    .await
    .unwrap();
    wait_equal(&src, &mut shards, &tables, &keys, Duration::from_secs(60)).await;
    for (i, s) in shards.iter_mut().enumerate() {
        let held = ids(s, "SELECT id FROM customers").await;
        let remainder = i32::try_from(i).unwrap();
        let wrong: i64 = src
            .query_one(
                "SELECT count(*) FROM unnest($1::int8[]) id \
                 WHERE NOT satisfies_hash_partition('hp'::regclass, 2, $2, id)",
                &[&held, &remainder],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(wrong, 0, "shard {i} holds customers PostgreSQL would put elsewhere");
    }
    let src_url = cluster.url(&src_db);
    let mut common = vec!["--source", src_url.as_str(), "--name", opts.name.as_str()];
    for u in &urls {
        common.extend(["--target", u.as_str()]);
    }
    let sharded: Vec<&str> = SHARD_KEYS.iter().flat_map(|k| ["--shard-key", *k]).collect();
    let verify_args = [&["verify"][..], &common, &sharded].concat();
    assert_eq!(pgmirror(&verify_args).0, 0, "verify of the shards");
    let (code, out) = pgmirror(&[&["status"][..], &common].concat());
    assert_eq!(code, 0, "status of the shards");
    assert!(out.contains("shard 1:") && out.contains("streaming"), "{out}");
    shutdown.trigger();
    task.await.unwrap().unwrap();
    // A customer of shard 0 also on shard 1: misplaced, and verify says so.
    let db0 = urls[0].rsplit('/').next().unwrap().split('?').next().unwrap();
    sqlx::query(&format!("INSERT INTO customers SELECT * FROM `{db0}`.customers LIMIT 1"))
        .execute(&mut shards[1])
        .await
        .unwrap();
    let (code, out) = pgmirror(&verify_args);
    assert_eq!(code, 1, "a misplaced row fails verify");
    assert!(out.contains("✘ shard 1, its part of \"public\".\"customers\""), "{out}");
    assert_eq!(pgmirror(&[&["drop"][..], &common].concat()).0, 0, "drop of the shards");
    let slots: i64 = src
        .query_one(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1",
            &[&opts.slot_name()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(slots, 0, "drop removed the slot");
    for s in &mut shards {
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pgmirror_progress")
            .fetch_one(&mut *s)
            .await
            .unwrap();
        assert_eq!(rows, 0, "drop removed every shard's progress row");
    }
}

/// Runs the built binary; returns its exit code and standard output.
fn pgmirror(args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgmirror"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run pgmirror");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("pgmirror {args:?}:\n{stdout}{}", String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_shards_a_key_change_moves_a_row_with_toasted_values_whole() {
    let cluster = pgcluster::shared();
    let (src_db, src) = database(cluster, "msmove").await;
    // Incompressible values over 2 kB are stored out of line, and an update that leaves them
    // alone does not send them again.
    src.batch_execute(
        "CREATE TABLE docs (id int PRIMARY KEY, body text, data bytea, tags text[], \
           meta jsonb); \
         ALTER TABLE docs ALTER body SET STORAGE EXTERNAL, ALTER data SET STORAGE EXTERNAL, \
           ALTER tags SET STORAGE EXTERNAL, ALTER meta SET STORAGE EXTERNAL; \
         INSERT INTO docs SELECT g, repeat(md5(g::text), 200), \
           decode(repeat(md5(g::text), 200), 'hex'), \
           array_fill('a \"b\" \\ ' || g, ARRAY[300]), \
           jsonb_build_object('k', repeat('v', 5000), 'n', g) \
           FROM generate_series(1, 20) g",
    )
    .await
    .unwrap();
    let (urls, mut shards) = mysql_shards(testservers::mariadb::shared(), 2).await;
    let opts = options(&cluster.url(&src_db), &urls, &["docs=id"], &["docs"]);
    let tables = mapped(&src, &["docs"]).await;
    let keys = routed_keys(&opts.layout, &tables).unwrap();
    let shutdown = Shutdown::manual();
    let task = {
        let (opts, mut shutdown) = (opts.clone(), shutdown.clone());
        tokio::spawn(async move { run(&opts, &mut shutdown).await })
    };
    wait_equal(&src, &mut shards, &tables, &keys, Duration::from_secs(120)).await;
    // Each row's key changes, so about half move to the other shard, their large values unsent.
    src.batch_execute("UPDATE docs SET id = id + 1000").await.unwrap();
    wait_equal(&src, &mut shards, &tables, &keys, Duration::from_secs(60)).await;
    let moved: Vec<i64> = {
        let mut all = Vec::new();
        for s in &mut shards {
            all.extend(ids(s, "SELECT id FROM docs").await);
        }
        all
    };
    assert_eq!(moved.len(), 20);
    assert!(moved.iter().all(|&id| id > 1000), "old keys left behind: {moved:?}");
    shutdown.trigger();
    task.await.unwrap().unwrap();
    drop_slot(&src, &opts.slot_name()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_shards_sigkill_under_load_loses_and_repeats_nothing() {
    let cluster = pgcluster::shared();
    let (src_db, src) = database(cluster, "mskill").await;
    store::create_schema(&src).await.unwrap();
    store::populate(&src, &store::Scale::tiny()).await.unwrap();
    let (urls, mut shards) = mysql_shards(testservers::mariadb::shared(), 2).await;
    let source_url = cluster.url(&src_db);
    let opts = options(&source_url, &urls, &SHARD_KEYS, &store::TABLES);
    let tables = mapped(&src, &store::TABLES).await;
    let keys = routed_keys(&opts.layout, &tables).unwrap();
    let name = opts.name.clone();
    let mut args = vec!["--name", name.as_str(), "--target", urls[1].as_str()];
    for k in SHARD_KEYS {
        args.extend(["--shard-key", k]);
    }
    let table_list = store::TABLES.join(",");
    args.extend(["--tables", table_list.as_str()]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let mut writer = cluster.connect(&src_db).await.unwrap();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(0x5a4d);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                store::oltp_transaction(&mut writer, &mut rng).await.unwrap();
            }
        })
    };
    let mut mirror = spawn(&args, &source_url, &urls[0]);
    for round in 0..4 {
        tokio::time::sleep(Duration::from_millis(2500 + 500 * round)).await;
        kill(&mut mirror);
        mirror = spawn(&args, &source_url, &urls[0]);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    load.await.unwrap();
    wait_equal(&src, &mut shards, &tables, &keys, Duration::from_secs(180)).await;
    drop(mirror);
    drop_slot(&src, &opts.slot_name()).await;
}

#[test]
fn mysql_shards_mixed_with_postgres_shards_are_refused_in_one_line() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgmirror"))
        .args(["mirror", "--source", "postgres://127.0.0.1:1/src", "--tables", "t"])
        .args(["--target", "postgres://127.0.0.1:1/shard0"])
        .args(["--target", "mysql://rep:s3cret@127.0.0.1:1/shard1", "--shard-key", "t=id"])
        .output()
        .expect("run pgmirror");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("all PostgreSQL or all MySQL/MariaDB databases"),
        "unexpected message: {stderr}"
    );
    assert!(!stderr.contains("s3cret"), "password shown: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_shards_two_become_three_through_reshard() {
    let cluster = pgcluster::shared();
    let (src_db, src) = database(cluster, "msreshard").await;
    store::create_schema(&src).await.unwrap();
    store::populate(&src, &store::Scale::tiny()).await.unwrap();
    let server = testservers::mariadb::shared();
    let (old_urls, mut old_shards) = mysql_shards(server, 2).await;
    let (new_urls, mut new_shards) = mysql_shards(server, 3).await;
    let src_url = cluster.url(&src_db);
    let tables = mapped(&src, &store::TABLES).await;
    let start = |urls: &[String]| {
        let opts = options(&src_url, urls, &SHARD_KEYS, &store::TABLES);
        let shutdown = Shutdown::manual();
        let task = {
            let (opts, mut shutdown) = (opts.clone(), shutdown.clone());
            tokio::spawn(async move { run(&opts, &mut shutdown).await })
        };
        (opts, shutdown, task)
    };
    let (old, old_stop, old_task) = start(&old_urls);
    let keys = routed_keys(&old.layout, &tables).unwrap();
    wait_equal(&src, &mut old_shards, &tables, &keys, Duration::from_secs(120)).await;
    let (new, new_stop, new_task) = start(&new_urls);
    // Written after the new slot's consistent point, so that its layout can only verify equal
    // (and `reshard` find it streaming) through the stream, not through its initial copy.
    crate::common::wait_slot_ready(&src, &new.slot_name()).await;
    src.batch_execute(
        "INSERT INTO customers (email, name) SELECT 'r' || g || '@x', 'r' \
           FROM generate_series(1, 30) g; \
         UPDATE products SET stock = stock + 1 WHERE id % 3 = 0",
    )
    .await
    .unwrap();
    wait_equal(&src, &mut new_shards, &tables, &keys, Duration::from_secs(120)).await;

    let mut args: Vec<String> =
        ["reshard", "--source", &src_url, "--name", &new.name, "--retire", &old.name]
            .map(String::from)
            .into();
    for u in &new_urls {
        args.extend(["--target".to_owned(), u.clone()]);
    }
    for u in &old_urls {
        args.extend(["--retire-target".to_owned(), u.clone()]);
    }
    args.extend(SHARD_KEYS.iter().flat_map(|k| ["--shard-key".to_owned(), (*k).to_owned()]));
    let reshard = crate::common::pgmirror_task;
    let slots = |slot: String| {
        let src = &src;
        async move {
            src.query_one(
                "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
        }
    };

    // The old mirror still runs: the new layout verifies, nothing is dropped.
    let (code, text) = reshard(args.clone()).await.unwrap();
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("still runs"), "{text}");
    assert_eq!(slots(old.slot_name()).await, 1, "{text}");

    // Stopped, it is retired: its slot and progress rows go, its rows stay.
    old_stop.trigger();
    old_task.await.unwrap().unwrap();
    let (code, text) = reshard(args).await.unwrap();
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(slots(old.slot_name()).await, 0, "{text}");
    for s in &mut old_shards {
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pgmirror_progress")
            .fetch_one(&mut *s)
            .await
            .unwrap();
        assert_eq!(rows, 0, "the retired mirror's progress rows are gone");
        assert!(!ids(s, "SELECT id FROM customers").await.is_empty(), "its rows stay");
    }
    assert_eq!(slots(new.slot_name()).await, 1);
    src.batch_execute("DELETE FROM order_items WHERE order_id % 4 = 0").await.unwrap();
    wait_equal(&src, &mut new_shards, &tables, &keys, Duration::from_secs(60)).await;
    new_stop.trigger();
    new_task.await.unwrap().unwrap();
}
