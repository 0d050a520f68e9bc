//! `applier::progress` against a real server: every statement on `pgmirror.progress`, and the
//! row a `PostgresTarget` writes at its commits read back through it.

use applier::{CommitInfo, PostgresTarget, PostgresTargetConfig, Target, TxnInfo, progress};
use pgoutput_decoder::{Lsn, PgTimestamp};
use tokio_postgres::Client;

async fn database(prefix: &str) -> Client {
    let cluster = pgcluster::shared();
    let name = pgcluster::unique_name(prefix);
    cluster.create_database(&name).await.unwrap();
    cluster.connect(&name).await.unwrap()
}

async fn end_lsn_text(db: &Client, mirror: &str) -> String {
    db.query_one("SELECT end_lsn::text FROM pgmirror.progress WHERE mirror_name = $1", &[&mirror])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn a_mirrors_progress_is_stored_loaded_read_and_deleted() {
    let db = database("progress_api").await;
    // No table yet: nothing to read, nothing to delete.
    assert_eq!(progress::read(&db, "m").await.unwrap(), None);
    assert!(!progress::delete(&db, "m").await.unwrap());

    // Above 32 bits, so both halves of the position travel.
    let lsn = Lsn(0x1_0000_00AB);
    progress::store(&db, "m", lsn).await.unwrap();
    assert_eq!(progress::load(&db, "m").await.unwrap(), Some(lsn));
    assert_eq!(progress::load(&db, "other").await.unwrap(), None);
    assert_eq!(end_lsn_text(&db, "m").await, "1/AB");
    let stored = progress::read(&db, "m").await.unwrap().unwrap();
    assert_eq!(stored.end_lsn, lsn);
    assert_eq!(stored.end_lsn.to_string(), "1/AB", "printed as the server prints it");
    assert_eq!(stored.updated_at.len(), "2000-01-01T00:00:00.000000Z".len(), "{stored:?}");
    assert_eq!(stored.commit_lsn, None);
    assert_eq!(stored.commit_time, None);
    assert_eq!(stored.commit_age_seconds, None);

    assert!(progress::delete(&db, "m").await.unwrap());
    assert!(!progress::delete(&db, "m").await.unwrap());
    assert_eq!(progress::load(&db, "m").await.unwrap(), None);
    assert_eq!(progress::read(&db, "m").await.unwrap(), None);
}

#[tokio::test]
async fn the_row_a_target_commits_reads_back_through_the_same_module() {
    let db = database("progress_target").await;
    let client = pgcluster::shared().connect(&db_name(&db).await).await.unwrap();
    let cfg = PostgresTargetConfig { synchronous_commit: true, ..PostgresTargetConfig::new("m") };
    let mut target = PostgresTarget::new(client, cfg).await.unwrap();
    assert_eq!(target.load_progress().await.unwrap(), None);
    let (commit_lsn, end_lsn) = (Lsn(0x2_0000_0010), Lsn(0x2_0000_0018));
    let txn =
        TxnInfo { xid: 7, commit_lsn, commit_time: PgTimestamp(0), streamed: false, gid: None };
    target.begin(&txn).await.unwrap();
    let commit = CommitInfo { xid: 7, commit_lsn, end_lsn, commit_time: PgTimestamp(0) };
    target.commit(&commit).await.unwrap();
    assert_eq!(target.flush().await.unwrap(), Some(end_lsn), "a synchronous commit is durable");

    assert_eq!(target.load_progress().await.unwrap(), Some(end_lsn));
    assert_eq!(end_lsn_text(&db, "m").await, "2/18");
    let stored = progress::read(&db, "m").await.unwrap().unwrap();
    assert_eq!(stored.end_lsn, end_lsn);
    assert_eq!(stored.commit_lsn, Some(commit_lsn));
    assert_eq!(stored.commit_time.as_deref(), Some("2000-01-01T00:00:00.000000Z"));
    assert!(stored.commit_age_seconds.is_some_and(|a| a > 0.0), "{stored:?}");

    // Storing a position that is no transaction's forgets the last commit's details.
    progress::store(&db, "m", Lsn(0x3_0000_0000)).await.unwrap();
    let stored = progress::read(&db, "m").await.unwrap().unwrap();
    assert_eq!((stored.end_lsn, stored.commit_lsn), (Lsn(0x3_0000_0000), None));
}

async fn db_name(db: &Client) -> String {
    db.query_one("SELECT current_database()::text", &[]).await.unwrap().get(0)
}
