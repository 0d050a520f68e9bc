//! A backlog committed well before streaming starts is read in bulk (see the
//! crate's pacing): every transaction still arrives, in order, and the tail
//! that is smaller than the bulk wake-up threshold is not held back.

use std::time::Duration;

use pgoutput_decoder::{Column, LogicalMessage, Lsn};
use replication::{CreateSlotOptions, ReplicationClient, SnapshotAction, StartReplication};

use crate::{cfg, fresh_db, next_event, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_is_read_in_bulk_without_losing_the_tail() {
    let (cluster, db) = fresh_db("backlog").await;
    let sql = cluster.connect(&db).await.unwrap();
    sql.batch_execute("CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION p FOR TABLE t")
        .await
        .unwrap();
    let slot = pgcluster::unique_name("backlog");
    let mut client = ReplicationClient::connect(&cfg(cluster, &db)).await.unwrap();
    client
        .create_slot(
            &slot,
            CreateSlotOptions { snapshot: SnapshotAction::Nothing, ..Default::default() },
        )
        .await
        .unwrap();
    // 3000 one-row transactions: a few hundred kilobytes of pgoutput.
    sql.batch_execute(
        "CREATE PROCEDURE fill() LANGUAGE plpgsql AS $$ BEGIN \
         FOR i IN 1..3000 LOOP INSERT INTO t VALUES (i); COMMIT; END LOOP; END $$",
    )
    .await
    .unwrap();
    // On its own: a multi-statement batch is one transaction, where COMMIT is refused.
    sql.batch_execute("CALL fill()").await.unwrap();
    // Old enough to count as a backlog.
    tokio::time::sleep(Duration::from_millis(400)).await;

    let mut stream = client.start_replication(StartReplication::new(&slot, ["p"])).await.unwrap();
    let mut next_id = 1;
    let mut last_commit = Lsn::ZERO;
    while next_id <= 3000 {
        match next_event(&mut stream).await.message {
            LogicalMessage::Insert(i) => {
                let Some(Column::Text(v)) = i.new.get(0) else { panic!("text id expected") };
                assert_eq!(std::str::from_utf8(v).unwrap(), next_id.to_string());
                next_id += 1;
            }
            LogicalMessage::Commit(c) => {
                assert!(c.end_lsn > last_commit, "commits in order");
                last_commit = c.end_lsn;
            }
            _ => {}
        }
    }

    // A fresh transaction after the backlog: a few dozen bytes, far below the
    // bulk threshold, must not wait for more data that never comes.
    sql.batch_execute("INSERT INTO t VALUES (3001)").await.unwrap();
    within(5, "the transaction after the backlog", async {
        loop {
            if let LogicalMessage::Insert(i) = next_event(&mut stream).await.message {
                let Some(Column::Text(v)) = i.new.get(0) else { panic!("text id expected") };
                assert_eq!(v, b"3001".as_slice());
                break;
            }
        }
    })
    .await;
    stream.shutdown().await.unwrap();
}
