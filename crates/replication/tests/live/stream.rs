//! START_REPLICATION: decoded Store DML for every protocol/binary
//! combination, streaming of large transactions, feedback and liveness.

use std::collections::HashMap;
use std::time::Duration;

use pgcluster::{Cluster, ClusterBuilder};
use pgoutput_decoder::{Column, LogicalMessage, Lsn, OldTuple, Relation, ReplicaIdentity, Tuple};
use replication::{
    CreateSlotOptions, LogicalReplicationStream, ReplicationClient, ReplicationEvent,
    SnapshotAction, StartReplication, Streaming,
};

use crate::{cfg, fresh_db, next_event, start_cluster, wait_for_slot};

/// Creates a permanent slot (no snapshot) and starts streaming from it.
async fn open_stream(
    cluster: &Cluster,
    db: &str,
    slot: &str,
    mut opts: StartReplication,
) -> LogicalReplicationStream {
    let mut client = ReplicationClient::connect(&cfg(cluster, db)).await.unwrap();
    client
        .create_slot(
            slot,
            CreateSlotOptions { snapshot: SnapshotAction::Nothing, ..Default::default() },
        )
        .await
        .unwrap();
    opts.slot = slot.to_owned();
    client.start_replication(opts).await.unwrap()
}

/// Collects events up to and including the `n`-th transaction end.
async fn collect_txns(stream: &mut LogicalReplicationStream, n: usize) -> Vec<LogicalMessage> {
    let mut out = Vec::new();
    let mut seen = 0;
    while seen < n {
        let ev = next_event(stream).await;
        if matches!(ev.message, LogicalMessage::Commit(_) | LogicalMessage::StreamCommit(_)) {
            seen += 1;
        }
        out.push(ev.message);
    }
    out
}

/// The value of column `i` as text (decoding the few binary types used here).
fn value(t: &Tuple, rel: &Relation, i: usize) -> Option<String> {
    match t.get(i).expect("column present") {
        Column::Null => None,
        Column::UnchangedToast => Some("<toast>".into()),
        Column::Text(b) => Some(String::from_utf8(b.to_vec()).unwrap()),
        Column::Binary(b) => Some(binary_to_text(rel.columns[i].type_oid, b)),
    }
}

/// Binary send formats of the types whose values the test checks.
fn binary_to_text(type_oid: u32, b: &[u8]) -> String {
    match type_oid {
        20 => i64::from_be_bytes(b[..].try_into().unwrap()).to_string(),
        23 => i32::from_be_bytes(b[..].try_into().unwrap()).to_string(),
        16 => {
            if b[..] == [1] {
                "t".into()
            } else {
                "f".into()
            }
        }
        // text, varchar: the bytes themselves.
        25 | 1043 => String::from_utf8(b.to_vec()).unwrap(),
        // jsonb: a version byte, then text.
        3802 => String::from_utf8(b[1..].to_vec()).unwrap(),
        // bytea: raw bytes, shown like PostgreSQL's hex output.
        17 => format!("\\x{}", b.iter().map(|x| format!("{x:02x}")).collect::<String>()),
        other => format!("<binary oid {other}>"),
    }
}

async fn store_dml(proto: u32, binary: bool) {
    let (cluster, db) = fresh_db(&format!("dml_v{proto}_{binary}")).await;
    let sql = cluster.connect(&db).await.unwrap();
    sql.batch_execute(store::SCHEMA_SQL).await.unwrap();
    let publication = pgcluster::unique_name("store_pub");
    sql.batch_execute(&format!("CREATE PUBLICATION {publication} FOR ALL TABLES")).await.unwrap();
    let mut opts = StartReplication::new("", [publication.as_str()]);
    opts.proto_version = Some(proto);
    opts.binary = binary;
    let slot = pgcluster::unique_name("dml_slot");
    let mut stream = open_stream(cluster, &db, &slot, opts).await;
    assert_eq!(stream.proto_version(), proto);

    // One transaction per statement (a multi-statement simple query would be one).
    for txn in [
        "INSERT INTO customers (id, email, name, phone, preferences, created_at) VALUES \
           (1, 'ann@example.com', 'Ann', NULL, '{\"k\": 1}', '2024-01-02 03:04:05+00')",
        "INSERT INTO products (id, sku, name, price, stock, tags, thumbnail) VALUES \
           (10, '8c6b8f2e-1c8a-4f4e-9a53-0c1d2e3f4a5b', 'Lamp', 12.50, 3, '{a,b}', '\\x0102')",
        "BEGIN; \
         INSERT INTO orders (id, customer_id, status, total) VALUES (100, 1, 'new', 25.00); \
         INSERT INTO order_items VALUES (100, 1, 10, 1, 12.50), (100, 2, 10, 1, 12.50); \
         COMMIT",
        "UPDATE customers SET loyalty_points = 5, phone = '+1 555' WHERE id = 1",
        "UPDATE order_items SET line_no = 3 WHERE order_id = 100 AND line_no = 2",
        "DELETE FROM order_items WHERE order_id = 100 AND line_no = 3",
        "TRUNCATE order_items",
    ] {
        sql.batch_execute(txn).await.unwrap();
    }

    let messages = collect_txns(&mut stream, 7).await;
    let mut relations: HashMap<u32, Relation> = HashMap::new();
    let mut by_name: HashMap<String, u32> = HashMap::new();
    let mut changes = Vec::new();
    let mut begin_final = None;
    for m in messages {
        match m {
            LogicalMessage::Relation(r) => {
                assert_eq!(r.xid, None);
                by_name.insert(r.name.clone(), r.rel_id);
                relations.insert(r.rel_id, r);
            }
            LogicalMessage::Begin(b) => begin_final = Some(b.final_lsn),
            LogicalMessage::Commit(c) => {
                assert_eq!(Some(c.commit_lsn), begin_final.take(), "Begin.final_lsn = commit LSN");
                assert!(c.end_lsn > c.commit_lsn);
            }
            LogicalMessage::Type(_) | LogicalMessage::Origin(_) => {}
            other => changes.push(other),
        }
    }
    let customers = &relations[&by_name["customers"]];
    assert_eq!(customers.namespace, "public");
    assert_eq!(customers.replica_identity, ReplicaIdentity::Default);
    let names: Vec<&str> = customers.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "id",
            "email",
            "name",
            "phone",
            "is_active",
            "loyalty_points",
            "preferences",
            "created_at"
        ]
    );
    assert!(customers.columns[0].is_key && !customers.columns[1].is_key);
    assert_eq!(customers.columns[0].type_oid, 20);
    let items = &relations[&by_name["order_items"]];
    let item_keys: Vec<bool> = items.columns.iter().map(|c| c.is_key).collect();
    assert_eq!(item_keys, [true, true, false, false, false]);
    assert_eq!(items.columns[4].type_modifier, (12 << 16) + 2 + 4, "numeric(12,2) typmod");

    assert_eq!(changes.len(), 9, "{changes:#?}");
    // 1. Customer insert.
    let LogicalMessage::Insert(ins) = &changes[0] else { panic!("{:?}", changes[0]) };
    assert_eq!(ins.rel_id, customers.rel_id);
    let row: Vec<Option<String>> = (0..8).map(|i| value(&ins.new, customers, i)).collect();
    assert_eq!(
        row[..6],
        [
            Some("1".into()),
            Some("ann@example.com".into()),
            Some("Ann".into()),
            None,
            Some("t".into()),
            Some("0".into()),
        ]
    );
    assert_eq!(row[6].as_deref(), Some("{\"k\": 1}"));
    if !binary {
        // Text output uses the walsender's session settings: ISO dates, UTC.
        assert_eq!(row[7].as_deref(), Some("2024-01-02 03:04:05+00"));
    }
    for c in &ins.new {
        assert_eq!(matches!(c, Column::Binary(_)), binary && !c.is_null(), "{c:?}");
    }
    // 2. Product insert.
    let products = &relations[&by_name["products"]];
    let LogicalMessage::Insert(ins) = &changes[1] else { panic!("{:?}", changes[1]) };
    assert_eq!(ins.rel_id, products.rel_id);
    assert_eq!(value(&ins.new, products, 0).as_deref(), Some("10"));
    assert_eq!(value(&ins.new, products, 2).as_deref(), Some("Lamp"));
    assert_eq!(value(&ins.new, products, 4).as_deref(), Some("3"));
    assert_eq!(value(&ins.new, products, 6).as_deref(), Some("\\x0102"));
    assert_eq!(value(&ins.new, products, 7), None);
    if !binary {
        assert_eq!(
            value(&ins.new, products, 1).as_deref(),
            Some("8c6b8f2e-1c8a-4f4e-9a53-0c1d2e3f4a5b")
        );
        assert_eq!(value(&ins.new, products, 3).as_deref(), Some("12.50"));
        assert_eq!(value(&ins.new, products, 5).as_deref(), Some("{a,b}"));
    }
    // 3. The order and its items, in one transaction.
    let orders = &relations[&by_name["orders"]];
    let LogicalMessage::Insert(ins) = &changes[2] else { panic!("{:?}", changes[2]) };
    assert_eq!(ins.rel_id, orders.rel_id);
    assert_eq!(value(&ins.new, orders, 2).as_deref(), Some("new"));
    for (i, line) in [(3, "1"), (4, "2")] {
        let LogicalMessage::Insert(ins) = &changes[i] else { panic!("{:?}", changes[i]) };
        assert_eq!(ins.rel_id, items.rel_id);
        assert_eq!(value(&ins.new, items, 0).as_deref(), Some("100"));
        assert_eq!(value(&ins.new, items, 1).as_deref(), Some(line));
    }
    // 4. Non-key update: no old tuple.
    let LogicalMessage::Update(upd) = &changes[5] else { panic!("{:?}", changes[5]) };
    assert_eq!(upd.rel_id, customers.rel_id);
    assert!(upd.old.is_none());
    assert_eq!(value(&upd.new, customers, 3).as_deref(), Some("+1 555"));
    assert_eq!(value(&upd.new, customers, 5).as_deref(), Some("5"));
    // 5. Key update: the old key, other columns null.
    let LogicalMessage::Update(upd) = &changes[6] else { panic!("{:?}", changes[6]) };
    let Some(OldTuple::Key(old)) = &upd.old else { panic!("old key expected: {upd:?}") };
    assert_eq!(value(old, items, 1).as_deref(), Some("2"));
    assert!(old.get(2).is_some_and(Column::is_null));
    assert_eq!(value(&upd.new, items, 1).as_deref(), Some("3"));
    // 6. Delete by key.
    let LogicalMessage::Delete(del) = &changes[7] else { panic!("{:?}", changes[7]) };
    let OldTuple::Key(old) = &del.old else { panic!("old key expected: {del:?}") };
    assert_eq!(value(old, items, 0).as_deref(), Some("100"));
    assert_eq!(value(old, items, 1).as_deref(), Some("3"));
    // 7. Truncate.
    let LogicalMessage::Truncate(t) = &changes[8] else { panic!("{:?}", changes[8]) };
    assert_eq!(t.rel_ids, [items.rel_id]);
    assert!(!t.cascade && !t.restart_identity);
    stream.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_dml_v1_text() {
    store_dml(1, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_dml_v1_binary() {
    store_dml(1, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_dml_v2_text() {
    store_dml(2, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_dml_v2_binary() {
    store_dml(2, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_dml_v3_text() {
    store_dml(3, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_dml_v3_binary() {
    store_dml(3, true).await;
}

/// A fresh database whose walsenders stream or spill a transaction after `work_mem` of it
/// (the walsender reads per-database settings), with a table `table (id int PRIMARY KEY, pad
/// text)` published as `{table}_pub`.
async fn db_decoding_in(
    prefix: &str,
    work_mem: &str,
    table: &str,
) -> (&'static Cluster, String, tokio_postgres::Client) {
    let (cluster, db) = fresh_db(prefix).await;
    let sql = cluster.connect(&db).await.unwrap();
    sql.batch_execute(&format!(
        "ALTER DATABASE {} SET logical_decoding_work_mem = '{work_mem}'; \
         CREATE TABLE {table} (id int PRIMARY KEY, pad text); \
         CREATE PUBLICATION {table}_pub FOR TABLE {table}",
        pgconn::quote_ident(&db)
    ))
    .await
    .unwrap();
    (cluster, db, sql)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_transaction_is_streamed_with_protocol_2() {
    let (cluster, db, sql) = db_decoding_in("streamed", "64kB", "big").await;
    let mut opts = StartReplication::new("", ["big_pub"]);
    opts.proto_version = Some(2);
    opts.streaming = Streaming::On;
    let slot = pgcluster::unique_name("stream_slot");
    let mut stream = open_stream(cluster, &db, &slot, opts).await;
    const ROWS: usize = 3000;
    sql.batch_execute(&format!(
        "INSERT INTO big SELECT g, repeat('x', 100) FROM generate_series(1, {ROWS}) g"
    ))
    .await
    .unwrap();
    let mut starts = 0;
    let mut stops = 0;
    let mut inserts = 0;
    let mut top_xid = None;
    loop {
        let ev = next_event(&mut stream).await;
        match ev.message {
            LogicalMessage::StreamStart(s) => {
                assert_eq!(s.first_segment, starts == 0);
                assert_eq!(*top_xid.get_or_insert(s.xid), s.xid);
                starts += 1;
            }
            LogicalMessage::StreamStop => stops += 1,
            LogicalMessage::Insert(i) => {
                assert_eq!(i.xid, top_xid, "changes inside a stream block carry the xid");
                inserts += 1;
            }
            LogicalMessage::Relation(r) => assert_eq!(r.xid, top_xid),
            LogicalMessage::StreamCommit(c) => {
                assert_eq!(Some(c.xid), top_xid);
                stream.confirm(c.end_lsn);
                break;
            }
            LogicalMessage::Begin(_) | LogicalMessage::Commit(_) => {
                panic!("the transaction should have been streamed")
            }
            _ => {}
        }
    }
    assert!(starts >= 2, "several stream blocks ({starts})");
    assert_eq!(starts, stops);
    assert_eq!(inserts, ROWS);
    stream.shutdown().await.unwrap();
}

/// Whether each of the next `n` transactions came streamed (StreamStart .. StreamCommit) or
/// whole (Begin .. Commit).
async fn streamed_or_whole(stream: &mut LogicalReplicationStream, n: usize) -> Vec<bool> {
    let mut seen = Vec::new();
    while seen.len() < n {
        match next_event(stream).await.message {
            LogicalMessage::Commit(c) => {
                stream.confirm(c.end_lsn);
                seen.push(false);
            }
            LogicalMessage::StreamCommit(c) => {
                stream.confirm(c.end_lsn);
                seen.push(true);
            }
            _ => {}
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decoding_work_mem_is_lowered_never_raised() {
    let (cluster, db, sql) = db_decoding_in("workmem", "1MB", "w").await;
    let mut streams = Vec::new();
    for (name, kb) in [("left", None), ("lowered", Some(64)), ("above", Some(4096))] {
        let mut opts = StartReplication::new("", ["w_pub"]);
        opts.proto_version = Some(2);
        opts.streaming = Streaming::On;
        opts.decoding_work_mem_kb = kb;
        let slot = pgcluster::unique_name(&format!("workmem_{name}"));
        streams.push((name, open_stream(cluster, &db, &slot, opts).await));
    }
    // About 0.3 MB of changes, then about 1.5 MB: between 64 kB and 1 MB, then between
    // 1 MB and 4 MB.
    for rows in ["1, 1000", "1001, 7000"] {
        sql.batch_execute(&format!(
            "INSERT INTO w SELECT g, repeat('x', 100) FROM generate_series({rows}) g"
        ))
        .await
        .unwrap();
    }
    for (name, stream) in &mut streams {
        let expected = match *name {
            "lowered" => [true, true],
            // 4 MB is above the session's 1 MB: left at 1 MB, the larger one still streams.
            _ => [false, true],
        };
        assert_eq!(streamed_or_whole(stream, 2).await, expected, "{name}");
    }
    for (_, stream) in streams {
        stream.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_feedback_moves_the_slot() {
    let (cluster, db) = fresh_db("feedback").await;
    let sql = cluster.connect(&db).await.unwrap();
    sql.batch_execute("CREATE TABLE f (id int PRIMARY KEY); CREATE PUBLICATION f_pub FOR TABLE f")
        .await
        .unwrap();
    let mut opts = StartReplication::new("", ["f_pub"]);
    opts.status_interval = Duration::from_millis(200);
    let slot = pgcluster::unique_name("feedback_slot");
    let mut stream = open_stream(cluster, &db, &slot, opts).await;
    let feedback = stream.feedback();
    sql.batch_execute("INSERT INTO f VALUES (1)").await.unwrap();
    let end = loop {
        if let LogicalMessage::Commit(c) = next_event(&mut stream).await.message {
            break c.end_lsn;
        }
    };
    // Received but not confirmed: the slot must not move past the commit.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    wait_for_slot(&sql, &slot, "unconfirmed commit stays unacknowledged", |lsn, _| {
        lsn.is_some_and(|l| l < end)
    })
    .await;
    assert!(stream.flushed_lsn() < end);
    feedback.confirm(end);
    assert_eq!(feedback.confirmed_lsn(), end);
    wait_for_slot(&sql, &slot, "confirmed_flush_lsn reaches the commit end", |lsn, _| {
        lsn.is_some_and(|l| l >= end)
    })
    .await;
    assert!(stream.flushed_lsn() >= end);
    // Confirming less later never moves it back.
    feedback.confirm(Lsn(end.0 - 1));
    assert_eq!(stream.confirmed_lsn(), end);
    stream.shutdown().await.unwrap();
    wait_for_slot(&sql, &slot, "inactive after shutdown", |lsn, active| {
        !active && lsn.is_some_and(|l| l >= end)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keepalives_advance_the_slot() {
    let (cluster, db) = fresh_db("idle_ack").await;
    let sql = cluster.connect(&db).await.unwrap();
    sql.batch_execute(
        "CREATE TABLE published (id int PRIMARY KEY); CREATE TABLE unpublished (id int); \
         CREATE PUBLICATION idle_pub FOR TABLE published",
    )
    .await
    .unwrap();
    let mut opts = StartReplication::new("", ["idle_pub"]);
    opts.status_interval = Duration::from_millis(200);
    let slot = pgcluster::unique_name("idle_slot");
    let stream = open_stream(cluster, &db, &slot, opts).await;
    // Only unpublished changes: pgoutput sends nothing for them (PG 15 skips
    // empty transactions), yet the slot has to follow the WAL.
    for i in 0..5 {
        sql.execute("INSERT INTO unpublished VALUES ($1)", &[&i]).await.unwrap();
    }
    let target: String =
        sql.query_one("SELECT pg_current_wal_lsn()::text", &[]).await.unwrap().get(0);
    let target: Lsn = target.parse().unwrap();
    wait_for_slot(&sql, &slot, "idle acks reach the current WAL position", |lsn, _| {
        lsn.is_some_and(|l| l >= target)
    })
    .await;
    assert!(stream.received_lsn() >= target);
    assert_eq!(stream.confirmed_lsn(), Lsn::ZERO, "nothing was confirmed by the caller");
    stream.shutdown().await.unwrap();
}

/// A server that drops replication connections quiet for 3 s. Not less: the walsender asks
/// for a reply after half the timeout, and on a loaded two-core machine running the whole
/// test suite the reply can take over a second.
async fn impatient_cluster() -> Cluster {
    start_cluster(ClusterBuilder::new().fast_unsafe().wal_sender_timeout(Duration::from_secs(3)))
        .await
}

/// The next event of the stream `name`; on an error, an end or a 30 s wait, fails with the
/// server's log, which says whether the walsender gave up on us.
async fn next_or_log(
    cluster: &Cluster,
    name: &str,
    stream: &mut LogicalReplicationStream,
) -> ReplicationEvent {
    let failure = match tokio::time::timeout(Duration::from_secs(30), stream.next()).await {
        Ok(Some(Ok(ev))) => return ev,
        Ok(Some(Err(e))) => format!("error: {e}"),
        Ok(None) => "ended".to_owned(),
        Err(_) => "nothing for 30 s".to_owned(),
    };
    let log = cluster.log_contents().unwrap_or_default();
    panic!("{name}: stream {failure}; server log:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_stalled_consumers_stay_connected() {
    let cluster = impatient_cluster().await;
    let db = "postgres";
    let sql = cluster.connect(db).await.unwrap();
    sql.batch_execute(
        "CREATE TABLE t (id int PRIMARY KEY, pad text); CREATE PUBLICATION p FOR TABLE t",
    )
    .await
    .unwrap();

    // Idle: nothing to read for 3x the timeout (status interval left at 10 s).
    let mut idle = open_stream(&cluster, db, "idle_slot", StartReplication::new("", ["p"])).await;
    // Stalled: a tiny channel that fills up while nobody reads.
    let mut opts = StartReplication::new("", ["p"]);
    opts.channel_capacity = 2;
    let mut stalled = open_stream(&cluster, db, "stalled_slot", opts).await;
    sql.batch_execute("INSERT INTO t SELECT g, repeat('y', 200) FROM generate_series(1, 500) g")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(9)).await;

    for (name, stream) in [("idle", &mut idle), ("stalled", &mut stalled)] {
        let mut inserts = 0;
        loop {
            match next_or_log(&cluster, name, stream).await.message {
                LogicalMessage::Insert(_) => inserts += 1,
                LogicalMessage::Commit(c) => {
                    stream.confirm(c.end_lsn);
                    break;
                }
                _ => {}
            }
        }
        assert_eq!(inserts, 500, "{name}");
    }
    // Both are still alive: a new change arrives on each.
    sql.batch_execute("INSERT INTO t VALUES (1000, 'z')").await.unwrap();
    for (name, stream) in [("idle", &mut idle), ("stalled", &mut stalled)] {
        loop {
            if let LogicalMessage::Insert(_) = next_or_log(&cluster, name, stream).await.message {
                break;
            }
        }
    }
    let log = cluster.log_contents().unwrap_or_default();
    assert!(!log.contains("replication timeout"), "walsender timed out:\n{log}");
    idle.shutdown().await.unwrap();
    stalled.shutdown().await.unwrap();
}
