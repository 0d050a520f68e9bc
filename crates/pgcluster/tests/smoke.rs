//! Smallest end-to-end check: a cluster starts, answers, and has logical WAL.
use pgcluster::ClusterBuilder;

#[tokio::test]
async fn starts_and_answers() {
    let t = std::time::Instant::now();
    let cluster = ClusterBuilder::new().start().unwrap();
    let first = t.elapsed();
    let _guard = cluster.log_guard();
    let client = cluster.connect("postgres").await.unwrap();
    let row = client.query_one("SHOW wal_level", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "logical");
    let t = std::time::Instant::now();
    let second = ClusterBuilder::new().start().unwrap();
    eprintln!("first cluster {first:?}, second (template copy) {:?}", t.elapsed());
    assert_ne!(second.port(), cluster.port());
}
