//! The common setup mistakes give typed errors with a fix.

use pgcluster::ClusterBuilder;
use pgconn::{Error, SqlState};
use pgoutput_decoder::LogicalMessage;
use replication::{CreateSlotOptions, ReplicationClient, SnapshotAction, StartReplication};

use crate::{cfg, cfg_from, fresh_db, repl_err, start_cluster, within};

fn no_snapshot() -> CreateSlotOptions {
    CreateSlotOptions { snapshot: SnapshotAction::Nothing, ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_level_replica() {
    let cluster =
        start_cluster(ClusterBuilder::new().fast_unsafe().setting("wal_level", "replica")).await;
    let mut client = ReplicationClient::connect(&cfg(&cluster, "postgres")).await.unwrap();
    let err = client.create_slot("s", no_snapshot()).await.unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE), "{err}");
    assert!(err.to_string().contains("ALTER SYSTEM SET wal_level = logical"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_slots() {
    let cluster =
        start_cluster(ClusterBuilder::new().fast_unsafe().setting("max_replication_slots", "1"))
            .await;
    let mut client = ReplicationClient::connect(&cfg(&cluster, "postgres")).await.unwrap();
    client.create_slot("first", no_snapshot()).await.unwrap();
    let err = client.create_slot("second", no_snapshot()).await.unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::CONFIGURATION_LIMIT_EXCEEDED), "{err}");
    assert!(err.to_string().contains("max_replication_slots"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_without_replication() {
    let (cluster, db) = fresh_db("norepl").await;
    let sql = cluster.connect(&db).await.unwrap();
    let role = pgcluster::unique_name("plain_role");
    sql.batch_execute(&format!("CREATE ROLE {role} LOGIN")).await.unwrap();
    let c = cfg(cluster, &db).with_user(role.clone());
    let err = repl_err(&c).await;
    assert_eq!(err.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{err}");
    assert!(err.to_string().contains(&format!("ALTER ROLE \"{role}\" WITH REPLICATION")), "{err}");
    // After the fix it works.
    sql.batch_execute(&format!("ALTER ROLE {role} WITH REPLICATION")).await.unwrap();
    ReplicationClient::connect(&c).await.expect("replication role").close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_missing_active_and_publication_missing() {
    let (cluster, db) = fresh_db("slot_errs").await;
    let sql = cluster.connect(&db).await.unwrap();
    sql.batch_execute("CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION p FOR TABLE t")
        .await
        .unwrap();

    // Missing slot.
    let client = ReplicationClient::connect(&cfg(cluster, &db)).await.unwrap();
    let err =
        client.start_replication(StartReplication::new("no_such_slot", ["p"])).await.unwrap_err();
    assert!(err.is_slot_missing(), "{err}");
    assert!(err.to_string().contains("create the slot"), "{err}");

    // Slot already in use by another stream.
    let slot = pgcluster::unique_name("busy_slot");
    let mut client = ReplicationClient::connect(&cfg(cluster, &db)).await.unwrap();
    client.create_slot(&slot, no_snapshot()).await.unwrap();
    let first = client.start_replication(StartReplication::new(slot.clone(), ["p"])).await.unwrap();
    let second = ReplicationClient::connect(&cfg(cluster, &db)).await.unwrap();
    let err =
        second.start_replication(StartReplication::new(slot.clone(), ["p"])).await.unwrap_err();
    assert!(err.is_slot_active(), "{err}");
    assert!(err.to_string().contains("pg_terminate_backend"), "{err}");
    first.shutdown().await.unwrap();

    // Missing publication: reported once the first change is decoded.
    let client = ReplicationClient::connect(&cfg(cluster, &db)).await.unwrap();
    let mut stream = client
        .start_replication(StartReplication::new(slot.clone(), ["missing_pub"]))
        .await
        .unwrap();
    sql.batch_execute("INSERT INTO t VALUES (1)").await.unwrap();
    let err = loop {
        match within(30, "publication error", stream.next()).await {
            Some(Ok(ev)) => assert!(!matches!(ev.message, LogicalMessage::Insert(_))),
            Some(Err(e)) => break e,
            None => panic!("stream ended without an error"),
        }
    };
    assert!(err.is_publication_missing(), "{err}");
    assert!(err.to_string().contains("CREATE PUBLICATION"), "{err}");
    // The stream ends after a fatal error.
    assert!(within(10, "end of stream", stream.next()).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_refused_names_the_target() {
    // Port 1 on loopback: nothing listens there.
    let c = cfg_from("postgres://u@127.0.0.1:1/db", "sslmode=disable");
    for err in [repl_err(&c).await, pgconn::connect_sql(&c).await.unwrap_err()] {
        assert!(matches!(err, Error::Connect { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains("127.0.0.1:1") && text.contains("server running"), "{text}");
        assert!(err.is_connection_lost());
    }
}
