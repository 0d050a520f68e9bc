//! Set-up errors of `pgmirror mirror`: clear messages, nothing left behind.

use pgmirror::mirror;
use pgmirror::shutdown::Shutdown;

use crate::common::{store_mirror, store_pair};

async fn slot_count(client: &tokio_postgres::Client, slot: &str) -> i64 {
    client
        .query_one("SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", &[&slot])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_mismatch_names_table_and_column_and_leaves_no_slot() {
    let cluster = pgcluster::shared();
    let (src_db, src, dst_db, dst) = store_pair(cluster, cluster, &store::Scale::tiny()).await;
    store::create_schema(&dst).await.unwrap();
    dst.batch_execute("ALTER TABLE orders ALTER COLUMN note TYPE integer USING NULL")
        .await
        .unwrap();

    let opts = store_mirror(cluster, &src_db, cluster, &dst_db);
    let err = mirror::run(&opts, &mut Shutdown::manual()).await.unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("orders") && msg.contains("note"), "{msg}");
    assert_eq!(slot_count(&src, &opts.slot_name()).await, 0, "no orphan slot: {msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_empty_target_is_refused_unless_truncate_target() {
    let cluster = pgcluster::shared();
    let (src_db, src, dst_db, dst) = store_pair(cluster, cluster, &store::Scale::tiny()).await;
    store::create_schema(&dst).await.unwrap();
    dst.execute("INSERT INTO customers (email, name) VALUES ('old@example.com', 'Old')", &[])
        .await
        .unwrap();

    let mut opts = store_mirror(cluster, &src_db, cluster, &dst_db);
    let err = mirror::run(&opts, &mut Shutdown::manual()).await.unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("customers") && msg.contains("with --truncate-target"), "{msg}");
    assert_eq!(slot_count(&src, &opts.slot_name()).await, 0, "no orphan slot: {msg}");

    // With --truncate-target the copy replaces the old rows.
    opts.truncate_target = true;
    let shutdown = Shutdown::manual();
    let mut stop = shutdown.clone();
    let task = tokio::spawn(async move { mirror::run(&opts, &mut stop).await });
    crate::common::wait_converged(&src, &dst, std::time::Duration::from_secs(60)).await;
    shutdown.trigger();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_without_replica_identity_is_refused_with_the_fix() {
    let cluster = pgcluster::shared();
    let (src_db, src, dst_db, _dst) = store_pair(cluster, cluster, &store::Scale::tiny()).await;
    src.batch_execute("CREATE TABLE audit_log (at timestamptz, what text)").await.unwrap();
    let mut opts = store_mirror(cluster, &src_db, cluster, &dst_db);
    opts.tables.tables = Some(vec!["customers".into(), "audit_log".into()]);
    let err = mirror::run(&opts, &mut Shutdown::manual()).await.unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("audit_log") && msg.contains("REPLICA IDENTITY FULL"), "{msg}");
    assert_eq!(slot_count(&src, &opts.slot_name()).await, 0);
}
