//! IDENTIFY_SYSTEM, slot creation in every flavour, drop, SQL and COPY on
//! the replication connection.

use futures_util::StreamExt;
use replication::{CreateSlotOptions, ReplicationClient, SnapshotAction};

use crate::{cfg, fresh_db};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identify_system() {
    let (cluster, db) = fresh_db("ident").await;
    let sql = cluster.connect(&db).await.unwrap();
    let mut client = ReplicationClient::connect(&cfg(cluster, &db)).await.unwrap();
    let info = client.identify_system().await.unwrap();
    let row = sql
        .query_one(
            "SELECT system_identifier::text, timeline_id::int4, pg_current_wal_flush_lsn()::text \
             FROM pg_control_system(), pg_control_checkpoint()",
            &[],
        )
        .await
        .unwrap();
    let system_id: String = row.get(0);
    let timeline: i32 = row.get(1);
    let flush: pgoutput_decoder::Lsn = row.get::<_, String>(2).parse().unwrap();
    assert_eq!(info.system_id.to_string(), system_id);
    assert_eq!(i64::from(info.timeline), i64::from(timeline));
    assert_eq!(info.dbname.as_deref(), Some(db.as_str()));
    assert!(info.xlogpos > pgoutput_decoder::Lsn::ZERO && info.xlogpos <= flush);
    // Server version agrees with the server.
    let num: String = sql.query_one("SHOW server_version_num", &[]).await.unwrap().get(0);
    assert_eq!(client.server_version().to_string(), num);
}

async fn slot_row(sql: &tokio_postgres::Client, slot: &str) -> Option<(bool, bool, String)> {
    sql.query_opt(
        "SELECT temporary, two_phase, plugin FROM pg_replication_slots WHERE slot_name = $1",
        &[&slot],
    )
    .await
    .unwrap()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_and_drop_slots() {
    let (cluster, db) = fresh_db("slots").await;
    let sql = cluster.connect(&db).await.unwrap();
    sql.batch_execute("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a')")
        .await
        .unwrap();

    // Temporary + exported snapshot: usable by another connection, gone on close.
    let temp = pgcluster::unique_name("temp_slot");
    let mut client = ReplicationClient::connect(&cfg(cluster, &db)).await.unwrap();
    let info = client
        .create_slot(&temp, CreateSlotOptions { temporary: true, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(info.slot_name, temp);
    assert_eq!(info.output_plugin, "pgoutput");
    assert!(info.consistent_point > pgoutput_decoder::Lsn::ZERO);
    let snapshot = info.snapshot_name.expect("exported snapshot");
    assert_eq!(slot_row(&sql, &temp).await, Some((true, false, "pgoutput".into())));
    // Changes after the slot must not be visible in the snapshot.
    sql.batch_execute("INSERT INTO t VALUES (2, 'b')").await.unwrap();
    let other = cluster.connect(&db).await.unwrap();
    other
        .batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ; SET TRANSACTION SNAPSHOT {}",
            pgconn::quote_literal(&snapshot)
        ))
        .await
        .expect("import snapshot");
    let n: i64 = other.query_one("SELECT count(*) FROM t", &[]).await.unwrap().get(0);
    assert_eq!(n, 1, "the snapshot predates the second insert");
    other.batch_execute("COMMIT").await.unwrap();
    client.close().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while slot_row(&sql, &temp).await.is_some() {
        assert!(std::time::Instant::now() < deadline, "temporary slot not dropped");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // Permanent, no snapshot, two-phase; then dropped.
    let perm = pgcluster::unique_name("perm_slot");
    let mut client = ReplicationClient::connect(&cfg(cluster, &db)).await.unwrap();
    let info = client
        .create_slot(
            &perm,
            CreateSlotOptions {
                snapshot: SnapshotAction::Nothing,
                two_phase: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(info.snapshot_name, None);
    assert_eq!(slot_row(&sql, &perm).await, Some((false, true, "pgoutput".into())));
    client.drop_slot(&perm, false).await.unwrap();
    assert_eq!(slot_row(&sql, &perm).await, None);
    // Dropping it again: slot missing.
    let err = client.drop_slot(&perm, true).await.unwrap_err();
    assert!(err.is_slot_missing(), "{err}");
    // The connection is still usable after an error.
    client.identify_system().await.unwrap();

    // USE_SNAPSHOT inside a repeatable-read transaction, then COPY on the same connection.
    let used = pgcluster::unique_name("use_slot");
    client.simple_query("BEGIN READ ONLY ISOLATION LEVEL REPEATABLE READ").await.unwrap();
    let info = client
        .create_slot(
            &used,
            CreateSlotOptions { snapshot: SnapshotAction::Use, ..Default::default() },
        )
        .await
        .unwrap();
    assert_eq!(info.snapshot_name, None);
    sql.batch_execute("INSERT INTO t VALUES (3, 'c')").await.unwrap();
    let chunks: Vec<_> = client
        .copy_out("COPY t TO STDOUT")
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let text: Vec<u8> = chunks.concat();
    assert_eq!(String::from_utf8(text).unwrap(), "1\ta\n2\tb\n", "COPY sees the slot snapshot");
    client.simple_query("COMMIT").await.unwrap();
    // A failing COPY is an error, and the connection survives it.
    let results: Vec<_> = client.copy_out("COPY missing_table TO STDOUT").collect().await;
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].as_ref().unwrap_err().code(), Some(&pgconn::SqlState::UNDEFINED_TABLE));
    // A COPY abandoned half-way is drained before the next command.
    {
        let mut copy = Box::pin(client.copy_out("COPY t TO STDOUT"));
        copy.next().await.unwrap().unwrap();
    }
    let rows = client.simple_query("SELECT 42 AS answer, NULL::text AS nothing").await.unwrap();
    assert_eq!(rows[0].get_by_name("answer"), Some("42"));
    assert_eq!(rows[0].get(1), None);
    assert_eq!(rows[0].columns(), ["answer", "nothing"]);
    client.drop_slot(&used, false).await.unwrap();
    client.close().await;
}
