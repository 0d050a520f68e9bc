//! The target's schema: what a mirror needs on a target it does not own outright.

use std::time::Duration;

use pgmirror::cli::TableSelection;
use replication::ConnConfig;

use crate::common::{database, store_mirror, wait_for};

/// A target role without superuser checks foreign keys as rows arrive: parents must be copied
/// before their children, whatever their sizes (the largest table used to go first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_superuser_target_with_foreign_keys_is_copied_parents_first() {
    let cluster = pgcluster::shared();
    let ddl = "CREATE TABLE customer (id int PRIMARY KEY, name text); \
               CREATE TABLE rental (id int PRIMARY KEY, customer_id int NOT NULL REFERENCES customer, note text); \
               CREATE TABLE payment (id int PRIMARY KEY, rental_id int NOT NULL REFERENCES rental, amount numeric)";
    let (src_db, src) = database(cluster, "fk_src").await;
    src.batch_execute(ddl).await.unwrap();
    src.batch_execute(
        "INSERT INTO customer SELECT g, 'c' || g FROM generate_series(1, 10) g; \
         INSERT INTO rental SELECT g, 1 + g % 10, repeat('r', 200) FROM generate_series(1, 5000) g; \
         INSERT INTO payment SELECT g, 1 + g % 5000, g FROM generate_series(1, 2000) g; \
         ANALYZE",
    )
    .await
    .unwrap();
    let (dst_db, dst) = database(cluster, "fk_dst").await;
    let role = pgcluster::unique_name("fk_owner");
    dst.batch_execute(&format!(
        "CREATE ROLE {role} LOGIN; GRANT CREATE ON DATABASE {dst_db} TO {role}; \
         GRANT CREATE ON SCHEMA public TO {role}; \
         SET ROLE {role}; {ddl}; RESET ROLE"
    ))
    .await
    .unwrap();

    let mut opts = store_mirror(cluster, &src_db, cluster, &dst_db);
    opts.target = ConnConfig::parse(&cluster.url_for(&role, None, &dst_db)).unwrap();
    opts.tables = TableSelection {
        publication: None,
        tables: Some(vec!["payment".into(), "rental".into(), "customer".into()]),
    };
    let shutdown = pgmirror::shutdown::Shutdown::manual();
    let mut stop = shutdown.clone();
    let task = tokio::spawn(async move { pgmirror::mirror::run(&opts, &mut stop).await });
    wait_for(Duration::from_secs(60), "every row on the target", || async {
        let n: i64 = dst
            .query_one(
                "SELECT (SELECT count(*) FROM customer) + (SELECT count(*) FROM rental) \
                        + (SELECT count(*) FROM payment)",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        n == 7010
    })
    .await;
    assert!(!task.is_finished(), "the mirror failed: {:?}", task.await);
    shutdown.trigger();
    task.await.unwrap().unwrap();
}
