//! The replication lab, step by step, as one test.

use std::time::Duration;

use pgcluster::{ClusterBuilder, StopMode};
use pgmirror::mirror;
use pgmirror::shutdown::Shutdown;

use crate::common::{fingerprints, store_mirror, store_pair, wait_converged, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_mirror_survives_primary_restart() {
    // The primary is stopped mid-test, so it is this test's own; the replica can be shared.
    let primary = ClusterBuilder::new().start().expect("start primary");
    let replica = pgcluster::shared();
    let (src_db, src, dst_db, dst) = store_pair(&primary, replica, &store::Scale::tiny()).await;

    let opts = store_mirror(&primary, &src_db, replica, &dst_db);
    let shutdown = Shutdown::manual();
    let mut stop = shutdown.clone();
    let task = tokio::spawn(async move { mirror::run(&opts, &mut stop).await });

    // Step 1: the initial copy makes both sides equal.
    wait_converged(&src, &dst, Duration::from_secs(60)).await;

    // Step 2: the primary sees pgmirror as a replica would show up.
    wait_for(Duration::from_secs(10), "pgmirror in pg_stat_replication", || async {
        let seen: i64 = src
            .query_one(
                "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'pgmirror'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        seen == 1
    })
    .await;

    // Step 3: a row inserted on the primary is readable on the replica within two seconds.
    src.execute("INSERT INTO customers (email, name) VALUES ('lab1@example.com', 'Lab One')", &[])
        .await
        .unwrap();
    let took = wait_for(Duration::from_secs(2), "the new customer on the replica", || async {
        dst.query_opt("SELECT 1 FROM customers WHERE email = 'lab1@example.com'", &[])
            .await
            .unwrap()
            .is_some()
    })
    .await;
    eprintln!("insert visible on the replica after {took:?}");

    // Step 4: the primary crashes; pgmirror keeps running and the replica still serves reads.
    primary.stop(StopMode::Immediate).expect("stop primary");
    let n: i64 = dst.query_one("SELECT count(*) FROM customers", &[]).await.unwrap().get(0);
    assert!(n > 0, "the replica answers reads while the primary is down");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!task.is_finished(), "pgmirror waits for the primary instead of exiting");

    // Step 5: the primary comes back and replication resumes by itself.
    primary.start().expect("restart primary");
    let src = primary.connect(&src_db).await.expect("reconnect to primary");
    src.execute("INSERT INTO customers (email, name) VALUES ('lab2@example.com', 'Lab Two')", &[])
        .await
        .unwrap();
    wait_for(Duration::from_secs(60), "replication to resume", || async {
        dst.query_opt("SELECT 1 FROM customers WHERE email = 'lab2@example.com'", &[])
            .await
            .unwrap()
            .is_some()
    })
    .await;
    wait_converged(&src, &dst, Duration::from_secs(30)).await;

    // A clean stop, then both sides are still equal.
    shutdown.trigger();
    task.await.expect("mirror task").expect("mirror ends cleanly");
    assert_eq!(fingerprints(&src).await, fingerprints(&dst).await);
}
