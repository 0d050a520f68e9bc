//! pgmirror killed with SIGKILL at random moments, restarted, and the target still exact.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::common::{fingerprints, kill, spawn_mirror, store_pair, wait_converged};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_copy_and_catch_up_loses_and_repeats_nothing() {
    let cluster = pgcluster::shared();
    let scale = store::Scale { customers: 2_000, products: 200, orders: 6_000, items_per_order: 3 };
    let (src_db, src, dst_db, dst) = store_pair(cluster, cluster, &scale).await;
    let (source, target) = (cluster.url(&src_db), cluster.url(&dst_db));
    let name = pgcluster::unique_name("crash");
    let mut rng = StdRng::seed_from_u64(0x5EED);

    // Killed during the initial copy: the next start must redo it from scratch.
    for _ in 0..3 {
        let mut child = spawn_mirror(&source, &target, &name);
        tokio::time::sleep(Duration::from_millis(rng.gen_range(20..400))).await;
        kill(&mut child);
    }

    // A backlog built while pgmirror is down, then killed repeatedly while catching up.
    let mut writer = cluster.connect(&src_db).await.unwrap();
    let mut kills = 0;
    for round in 0..6 {
        for _ in 0..150 {
            store::oltp_transaction(&mut writer, &mut rng).await.unwrap();
        }
        writer
            .execute(
                "UPDATE products SET stock = stock + 1 WHERE id % 7 = $1",
                &[&i64::from(round)],
            )
            .await
            .unwrap();
        let mut child = spawn_mirror(&source, &target, &name);
        tokio::time::sleep(Duration::from_millis(rng.gen_range(50..700))).await;
        kill(&mut child);
        kills += 1;
    }

    // The last run is left to finish: every table equals the primary.
    let mut child = spawn_mirror(&source, &target, &name);
    wait_converged(&src, &dst, Duration::from_secs(90)).await;
    kill(&mut child);
    assert_eq!(fingerprints(&src).await, fingerprints(&dst).await, "after {kills} kills");

    // Exactly once: the stored progress is a commit position the slot has confirmed.
    let progress: String = dst
        .query_one("SELECT end_lsn::text FROM pgmirror.progress WHERE mirror_name = $1", &[&name])
        .await
        .unwrap()
        .get(0);
    assert_ne!(progress, "0/0");
}

/// Stopped cleanly (SIGTERM) while tables are being copied: some are committed on the target
/// by then. The next start empties them and copies again instead of refusing a non-empty
/// target, and ends equal to the primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_copy_is_resumed_by_the_next_start() {
    let cluster = pgcluster::shared();
    let scale =
        store::Scale { customers: 20_000, products: 200, orders: 40_000, items_per_order: 3 };
    let (src_db, src, dst_db, dst) = store_pair(cluster, cluster, &scale).await;
    let (source, target) = (cluster.url(&src_db), cluster.url(&dst_db));
    let name = pgcluster::unique_name("term_copy");

    let mut child = spawn_mirror(&source, &target, &name);
    // Stop as soon as one table is on the target: others are still being copied.
    crate::common::wait_for(Duration::from_secs(60), "a first copied table", || async {
        let mut any = false;
        for t in store::TABLES {
            let sql = format!("SELECT EXISTS (SELECT 1 FROM {t})");
            any |= dst.query_one(&sql, &[]).await.is_ok_and(|r| r.get::<_, bool>(0));
        }
        any
    })
    .await;
    let pid = child.0.id().to_string();
    std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = child.0.wait().unwrap();
    assert!(status.success(), "a stop during the copy exits cleanly: {status}");

    let mut child = spawn_mirror(&source, &target, &name);
    wait_converged(&src, &dst, Duration::from_secs(90)).await;
    kill(&mut child);
    assert_eq!(fingerprints(&src).await, fingerprints(&dst).await);
}
