//! The examples in `examples/`, run in-process against the shared cluster: each example's `main`
//! only parses arguments and calls its `run`, which the tests call directly.

use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::common::{database, fingerprints, store_pair, wait_for, wait_slot_ready};

#[allow(dead_code)] // `main` is for `cargo run --example`
#[path = "../../examples/cdc.rs"]
mod cdc;
#[allow(dead_code)]
#[path = "../../examples/custom_target.rs"]
mod custom_target;
#[allow(dead_code)]
#[path = "../../examples/mirror_from_code.rs"]
mod mirror_from_code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdc_prints_each_committed_change() {
    let cluster = pgcluster::shared();
    let (db, client) = database(cluster, "ex_cdc").await;
    let publication = pgcluster::unique_name("ex_cdc_pub");
    client
        .batch_execute(&format!(
            "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, note text); \
             CREATE TABLE other (id int PRIMARY KEY); \
             CREATE PUBLICATION {} FOR TABLE items",
            pgconn::quote_ident(&publication)
        ))
        .await
        .unwrap();
    let opts = cdc::CdcOptions {
        source: cluster.url(&db),
        publication,
        slot: pgcluster::unique_name("ex_cdc_slot"),
        limit: Some(4),
    };
    let mut out = Vec::new();
    let workload = async {
        wait_slot_ready(&client, &opts.slot).await;
        // One call per transaction: in one multi-statement query, ROLLBACK would undo them all.
        for sql in [
            "INSERT INTO items VALUES (1, 'apple', NULL), (2, 'pear', 'ripe')",
            "INSERT INTO other VALUES (1)",
            "BEGIN; INSERT INTO items VALUES (3, 'rolled back', NULL); ROLLBACK",
            "UPDATE items SET id = 20 WHERE id = 1",
            "DELETE FROM items WHERE id = 2",
        ] {
            client.batch_execute(sql).await.unwrap();
        }
    };
    let (printed, ()) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(60), cdc::run(&opts, &mut out)),
        workload
    );
    let printed = printed.expect("cdc stops after --limit changes").expect("cdc runs");
    assert_eq!(printed, 4);

    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let changes: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| !l.starts_with("BEGIN ") && !l.starts_with("COMMIT "))
        .collect();
    assert_eq!(
        changes,
        [
            r#"INSERT public.items id="1" name="apple" note=null"#,
            r#"INSERT public.items id="2" name="pear" note="ripe""#,
            r#"UPDATE public.items id="20" name="apple" note=null FROM public.items id="1""#,
            r#"DELETE public.items id="2""#,
        ],
        "{text}"
    );
    // Three transactions of the publication's table: each framed by BEGIN and COMMIT.
    assert_eq!(lines.iter().filter(|l| l.starts_with("BEGIN xid=")).count(), 3, "{text}");
    assert_eq!(lines.iter().filter(|l| l.starts_with("COMMIT end_lsn=")).count(), 3, "{text}");
    assert!(lines.last().is_some_and(|l| l.starts_with("COMMIT ")), "{text}");

    // The slot was temporary: gone with the example's connection.
    wait_for(Duration::from_secs(10), "the temporary slot to go", || async {
        client
            .query_opt("SELECT 1 FROM pg_replication_slots WHERE slot_name = $1", &[&opts.slot])
            .await
            .unwrap()
            .is_none()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_target_counts_exactly_the_committed_rows() {
    let cluster = pgcluster::shared();
    let (db, client) = database(cluster, "ex_count").await;
    let publication = pgcluster::unique_name("ex_count_pub");
    client
        .batch_execute(&format!(
            "CREATE TABLE a (id int PRIMARY KEY, v text); \
             CREATE TABLE b (id int PRIMARY KEY, v text); \
             CREATE PUBLICATION {} FOR TABLE a, b",
            pgconn::quote_ident(&publication)
        ))
        .await
        .unwrap();
    let slot = pgcluster::unique_name("ex_count_slot");
    let source = cluster.url(&db);
    let workload = async {
        wait_slot_ready(&client, &slot).await;
        for sql in [
            "INSERT INTO a SELECT g, 'x' FROM generate_series(1, 5) g",
            "BEGIN; INSERT INTO a VALUES (100, 'rolled back'); ROLLBACK",
            "INSERT INTO b SELECT g, 'y' FROM generate_series(1, 3) g",
            "UPDATE a SET v = 'z' WHERE id <= 2",
            "DELETE FROM b WHERE id = 1",
            "TRUNCATE b",
        ] {
            client.batch_execute(sql).await.unwrap();
        }
    };
    let (target, ()) = tokio::join!(
        tokio::time::timeout(
            Duration::from_secs(60),
            custom_target::run(&source, &publication, &slot, 12)
        ),
        workload
    );
    let target = target.expect("stops after 12 changes").expect("custom target runs");
    let got: Vec<(String, &str, u64)> =
        target.counts().iter().map(|((t, op), n)| (t.clone(), *op, *n)).collect();
    let want = [
        ("public.a", "insert", 5),
        ("public.a", "update", 2),
        ("public.b", "delete", 1),
        ("public.b", "insert", 3),
        ("public.b", "truncate", 1),
    ]
    .map(|(t, op, n)| (t.to_owned(), op, n));
    assert_eq!(got, want);
    assert_eq!(target.total(), 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_from_code_leaves_the_target_equal_and_resumes() {
    let cluster = pgcluster::shared();
    let (src_db, src, dst_db, dst) = store_pair(cluster, cluster, &store::Scale::tiny()).await;
    let name = pgcluster::unique_name("ex_code");
    let (source, target) = (cluster.url(&src_db), cluster.url(&dst_db));

    mirror_from_code::run(&source, &target, &name, Duration::from_secs(120))
        .await
        .expect("first run converges");
    let first = fingerprints(&src).await;
    assert_eq!(fingerprints(&dst).await, first);
    assert!(first.iter().all(|(rows, _)| *rows > 0), "the Store tables have rows: {first:?}");

    // Changes made while no mirror runs are streamed by the next run, from the stored progress.
    let mut client = cluster.connect(&src_db).await.unwrap();
    let mut rng = StdRng::seed_from_u64(11);
    for _ in 0..20 {
        store::oltp_transaction(&mut client, &mut rng).await.expect("OLTP transaction");
    }
    let changed = fingerprints(&src).await;
    assert_ne!(changed, first, "the workload changed the source");
    mirror_from_code::run(&source, &target, &name, Duration::from_secs(120))
        .await
        .expect("second run converges");
    assert_eq!(fingerprints(&dst).await, fingerprints(&src).await);
}
