//! Rows found and changed: COPY and set-based runs, text format, TOAST, `REPLICA IDENTITY
//! FULL`, TRUNCATE.

use applier::ApplierConfig;
use pgoutput_decoder::{Column, LogicalMessage};
use rand::SeedableRng;

use super::common::{count, exec_each, last_end, setup};

/// Store schema and data through COPY runs, OLTP transactions from several interleaved
/// sessions, bulk updates (set-based), key changes, deletes, NULLs; then dedupe on re-apply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_workload_and_dedupe() {
    let env = setup("store", store::SCHEMA_SQL, false).await;
    store::populate(&env.src, &store::Scale::tiny()).await.unwrap();
    // Interleaved OLTP transactions from three sessions.
    let mut tasks = Vec::new();
    for seed in 0..3u64 {
        let mut client = env.source_session().await;
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            for _ in 0..15 {
                store::oltp_transaction(&mut client, &mut rng).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    exec_each(
        &env.src,
        "UPDATE products SET price = price + 1, thumbnail = NULL WHERE id % 2 = 0;
             UPDATE customers SET phone = NULL, preferences = '{\"x\": [1, null]}' WHERE id <= 5;
             UPDATE order_items SET line_no = line_no + 10 WHERE line_no = 1;
             UPDATE order_items SET line_no = 1 WHERE line_no = 12;
             DELETE FROM order_items WHERE line_no = 3;
             UPDATE orders SET note = 'x' || id, shipped_at = now() WHERE status = 'paid';",
    )
    .await;
    let msgs = env.fetch(1, true, &[], None).await;
    assert!(count(&msgs, |m| matches!(m, LogicalMessage::Commit(_))) > 45);
    let applier = env.apply(&msgs, ApplierConfig::default()).await.unwrap();
    env.assert_same(&store::TABLES).await;
    let stats = applier.target().stats();
    assert!(stats.copied_rows > 50, "populate went through COPY: {stats:?}");
    assert!(stats.batched_rows > 10, "bulk updates went set-based: {stats:?}");
    assert_eq!(stats.missing_rows, 0);
    assert_eq!(env.progress("test").await, Some(last_end(&msgs)));
    let applied = applier.stats().applied_txns;

    // Re-applying the same stream (a restart that resends) changes nothing.
    let again = env.apply(&msgs, ApplierConfig::default()).await.unwrap();
    assert_eq!(again.stats().applied_txns, 0);
    assert_eq!(again.stats().skipped_txns, applied);
    env.assert_same(&store::TABLES).await;
    // Nothing new: quiescent, so a clean stop does not wait for a durability that is not coming.
    assert!(again.is_quiescent());
    let idle = applier::Applier::new(env.target("test").await, ApplierConfig::default()).await;
    assert!(idle.unwrap().is_quiescent());

    // Half applied before a "crash": the rest is applied exactly once.
    let half = msgs.len() / 2;
    env.dst
        .batch_execute(
            "TRUNCATE customers, products, orders, order_items; DELETE FROM pgmirror.progress",
        )
        .await
        .unwrap();
    let first = env.apply(&msgs[..half], ApplierConfig::default()).await.unwrap();
    drop(first);
    env.apply(&msgs, ApplierConfig::default()).await.unwrap();
    env.assert_same(&store::TABLES).await;
}

/// The same workload in text format (text COPY, `text[]::type[]` arrays), small batches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_text_format() {
    let env = setup("storetext", store::SCHEMA_SQL, false).await;
    store::populate(&env.src, &store::Scale::tiny()).await.unwrap();
    exec_each(
        &env.src,
        "UPDATE products SET price = price * 2, tags = ARRAY['a,b', 'c\"d', NULL]::text[];
             DELETE FROM order_items WHERE order_id % 3 = 0;",
    )
    .await;
    let msgs = env.fetch(1, false, &[], None).await;
    assert!(msgs.iter().all(|m| match m {
        LogicalMessage::Insert(i) => i.new.iter().all(|v| !matches!(v, Column::Binary(_))),
        _ => true,
    }));
    let cfg = ApplierConfig { max_batch_rows: 7, ..ApplierConfig::default() };
    let applier = env.apply(&msgs, cfg).await.unwrap();
    env.assert_same(&store::TABLES).await;
    // Every transaction is over the row bound, so each one was flushed on its own.
    assert_eq!(applier.stats().flushes, applier.stats().applied_txns);
    assert!(applier.stats().applied_txns >= 3);
}

/// Updates that leave a TOASTed value alone send it as "unchanged"; the target keeps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn toasted_value_untouched() {
    let env =
        setup("toast", "CREATE TABLE doc (id int PRIMARY KEY, n int, body text)", false).await;
    exec_each(
        &env.src,
        "ALTER TABLE doc ALTER COLUMN body SET STORAGE EXTERNAL;
             INSERT INTO doc SELECT g, 0, repeat(md5(g::text), 400) FROM generate_series(1, 5) g;
             UPDATE doc SET n = n + 1;
             UPDATE doc SET n = n + 1, body = body || 'x' WHERE id = 1;",
    )
    .await;
    let msgs = env.fetch(1, true, &[], None).await;
    let unchanged = count(
        &msgs,
        |m| matches!(m, LogicalMessage::Update(u) if u.new.iter().any(Column::is_unchanged_toast)),
    );
    assert!(unchanged >= 5, "the source sent unchanged TOAST values");
    env.apply(&msgs, ApplierConfig::default()).await.unwrap();
    env.assert_same(&["doc"]).await;
}

/// REPLICA IDENTITY FULL without a primary key: duplicates are changed one at a time,
/// NULLs and json (no equality operator) match.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_identity_full_duplicates() {
    let schema =
        "CREATE TABLE bag (a int, b text, j json, p point); ALTER TABLE bag REPLICA IDENTITY FULL;";
    let env = setup("full", schema, false).await;
    exec_each(
        &env.src,
        "INSERT INTO bag VALUES (1, 'x', '{\"k\": 1}', '(1,2)'), (1, 'x', '{\"k\": 1}', '(1,2)'),
                                    (1, 'x', '{\"k\": 1}', '(1,2)'), (2, NULL, NULL, NULL);
             UPDATE bag SET b = 'y' WHERE ctid = (SELECT ctid FROM bag WHERE a = 1 LIMIT 1);
             DELETE FROM bag WHERE ctid = (SELECT ctid FROM bag WHERE a = 1 AND b = 'x' LIMIT 1);
             UPDATE bag SET a = 3 WHERE b IS NULL;",
    )
    .await;
    for binary in [true, false] {
        let msgs = env.fetch(1, binary, &[], None).await;
        if binary {
            env.apply(&msgs, ApplierConfig::default()).await.unwrap();
            env.assert_same(&["bag"]).await;
            // Now in text format: more of the same on top.
            exec_each(&env.src, "INSERT INTO bag VALUES (2, NULL, NULL, NULL); DELETE FROM bag WHERE a = 3; UPDATE bag SET j = '[1]' WHERE a = 1").await;
        } else {
            env.apply(&msgs, ApplierConfig::default()).await.unwrap();
        }
    }
    env.assert_same(&["bag"]).await;
    let rows: i64 =
        env.dst.query_one("SELECT count(*) FROM bag WHERE a = 1", &[]).await.unwrap().get(0);
    assert_eq!(rows, 2);
}

/// REPLICA IDENTITY FULL deletes go out as one statement per run, and each deletes exactly
/// one target row: among identical duplicates, between numerics that are equal but print
/// differently (1.0 and 1.00), with NULLs, json (no equality operator) and points.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_identity_deletes_are_batched_one_row_each() {
    let schema = "CREATE TABLE fbag (a int, n numeric, b text, j json, p point); \
                  ALTER TABLE fbag REPLICA IDENTITY FULL;";
    for binary in [true, false] {
        let env = setup("fulldel", schema, false).await;
        exec_each(
            &env.src,
            "INSERT INTO fbag SELECT i % 50, 1.0, 'v' || i, '{\"k\": 1}', '(1,2)' FROM generate_series(1, 300) i;
                 INSERT INTO fbag VALUES (97, 1.0, 'dup', NULL, NULL), (97, 1.0, 'dup', NULL, NULL),
                                         (97, 1.0, 'dup', NULL, NULL), (97, 1.00, 'dup', NULL, NULL),
                                         (98, NULL, NULL, NULL, NULL), (98, NULL, NULL, NULL, NULL);
                 INSERT INTO fbag SELECT 96, n, 'dup2', '{\"k\": 1}', '(1,2)'
                     FROM unnest('{1.0, 1.0, 1.0, 1.00}'::numeric[]) n;
                 DELETE FROM fbag WHERE ctid = (SELECT ctid FROM fbag WHERE b = 'dup2' AND n::text = '1.0' LIMIT 1);
                 DELETE FROM fbag WHERE ctid = (SELECT ctid FROM fbag WHERE b = 'dup2' AND n::text = '1.00' LIMIT 1);
                 DELETE FROM fbag WHERE ctid = (SELECT ctid FROM fbag WHERE b = 'dup' AND n::text = '1.0' LIMIT 1);
                 DELETE FROM fbag WHERE ctid = (SELECT ctid FROM fbag WHERE b = 'dup' AND n::text = '1.00' LIMIT 1);
                 DELETE FROM fbag WHERE ctid = (SELECT ctid FROM fbag WHERE a = 98 LIMIT 1);
                 DELETE FROM fbag WHERE a < 20;
                 DELETE FROM fbag WHERE a = 30 AND b LIKE 'v1%';
                 DELETE FROM fbag WHERE a = 31;",
        )
        .await;
        let msgs = env.fetch(1, binary, &[], None).await;
        let applier = env.apply(&msgs, ApplierConfig::default()).await.unwrap();
        env.assert_same(&["fbag"]).await;
        let stats = applier.target().stats();
        assert!(stats.batched_rows >= 120, "deletes went set-based: {stats:?}");
        assert_eq!(stats.missing_rows, 0);
        let dups: i64 = env
            .dst
            .query_one("SELECT count(*) FROM fbag WHERE b = 'dup'", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(dups, 2, "one of three 1.0 rows and the 1.00 row deleted");
        // The same in the run of the other rows' deletes (no NULLs: one shape).
        let dups: Vec<String> = env
            .dst
            .query("SELECT n::text FROM fbag WHERE b = 'dup2'", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(dups, ["1.0", "1.0"]);
    }
}

/// REPLICA IDENTITY FULL updates go out as one statement per run, each updating exactly one
/// target row: duplicates, 1.0 against 1.00, NULLs set and matched, a row updated again
/// later in the same run (its new image is what the later update looks for), and a table
/// with a unique index (one at a time, in source order).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_identity_updates_are_batched_one_row_each() {
    let schema = "CREATE TABLE fupd (a int, n numeric, b text, j json); \
                  ALTER TABLE fupd REPLICA IDENTITY FULL; \
                  CREATE TABLE fupq (a int, b text); CREATE UNIQUE INDEX fupq_a ON fupq (a); \
                  ALTER TABLE fupq REPLICA IDENTITY FULL; \
                  CREATE TABLE fupt (a int, big text, b int); \
                  ALTER TABLE fupt REPLICA IDENTITY FULL;";
    for binary in [true, false] {
        let env = setup("fullupd", schema, false).await;
        exec_each(
            &env.src,
            "INSERT INTO fupd SELECT i % 50, 1.0, 'v' || i, '{\"k\": 1}' FROM generate_series(1, 300) i;
                 INSERT INTO fupd SELECT 96, n, 'dup', '{\"k\": 1}'
                     FROM unnest('{1.0, 1.0, 1.0, 1.00}'::numeric[]) n;
                 INSERT INTO fupq SELECT i, 'q' || i FROM generate_series(1, 20) i;
                 UPDATE fupd SET b = b || '!' WHERE a < 20;
                 UPDATE fupd SET b = 'one' WHERE ctid = (SELECT ctid FROM fupd WHERE b = 'dup' AND n::text = '1.0' LIMIT 1);
                 UPDATE fupd SET b = 'two' WHERE ctid = (SELECT ctid FROM fupd WHERE b = 'dup' AND n::text = '1.00' LIMIT 1);
                 UPDATE fupd SET b = b || '?' WHERE a < 10;
                 UPDATE fupd SET j = NULL, n = 2.50 WHERE a BETWEEN 20 AND 29;
                 UPDATE fupd SET n = 3 WHERE j IS NULL;
                 UPDATE fupq SET a = 21 WHERE a = 20; UPDATE fupq SET a = 20 WHERE a = 19;
                 UPDATE fupq SET a = 19 WHERE a = 18; UPDATE fupq SET a = 18 WHERE a = 17;
                 UPDATE fupq SET a = 17 WHERE a = 16;
                 INSERT INTO fupt SELECT i, (SELECT string_agg(md5(i || ':' || j), '')
                     FROM generate_series(1, 200) j), 0 FROM generate_series(1, 6) i;
                 UPDATE fupt SET b = b + 1;
                 UPDATE fupt SET b = b + 1;",
        )
        .await;
        let msgs = env.fetch(1, binary, &[], None).await;
        let applier = env.apply(&msgs, ApplierConfig::default()).await.unwrap();
        // fupt: each update's new row carries the TOASTed `big` unchanged, and the second
        // update's old row is what the first one made.
        env.assert_same(&["fupd", "fupq", "fupt"]).await;
        let stats = applier.target().stats();
        assert!(stats.batched_rows >= 300, "updates went set-based: {stats:?}");
        assert_eq!(stats.missing_rows, 0);
        let dups: Vec<(String, String)> = env
            .dst
            .query("SELECT n::text, b FROM fupd WHERE a = 96 ORDER BY b", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let want = [("1.0", "dup"), ("1.0", "dup"), ("1.0", "one"), ("1.00", "two")];
        let want: Vec<(String, String)> =
            want.iter().map(|(a, b)| ((*a).into(), (*b).into())).collect();
        assert_eq!(dups, want);
    }
}

/// REPLICA IDENTITY FULL rows of a partitioned table published through its root: two
/// partitions hold rows at the same `ctid`, and changing one leaves the other alone, one at a
/// time and in runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_identity_rows_of_a_partitioned_root_are_told_apart_by_partition() {
    let schema = "CREATE TABLE pt (a int, b text) PARTITION BY RANGE (a); \
                  CREATE TABLE pt1 PARTITION OF pt FOR VALUES FROM (0) TO (1000); \
                  CREATE TABLE pt2 PARTITION OF pt FOR VALUES FROM (1000) TO (2000); \
                  ALTER TABLE pt REPLICA IDENTITY FULL; ALTER TABLE pt1 REPLICA IDENTITY FULL; \
                  ALTER TABLE pt2 REPLICA IDENTITY FULL;";
    let env = setup("fullpart", schema, false).await;
    env.src
        .batch_execute(&format!(
            "ALTER PUBLICATION {} SET (publish_via_partition_root = true)",
            env.publication
        ))
        .await
        .unwrap();
    exec_each(
        &env.src,
        "INSERT INTO pt SELECT i, 'v' || i FROM generate_series(1, 10) i;
             INSERT INTO pt SELECT 1000 + i, 'w' || i FROM generate_series(1, 10) i;
             UPDATE pt SET b = 'one' WHERE a = 1;
             DELETE FROM pt WHERE a = 2;
             UPDATE pt SET b = b || '!' WHERE a < 8;
             DELETE FROM pt WHERE a >= 8 AND a < 1000;",
    )
    .await;
    let msgs = env.fetch(1, true, &[], None).await;
    env.apply(&msgs, ApplierConfig::default()).await.unwrap();
    env.assert_same(&["pt1", "pt2"]).await;
}

/// REPLICA IDENTITY FULL on a table with a (non-unique) index: rows are found through the
/// index (as PostgreSQL 16's own subscriber does) or a run's rows by one statement, never by
/// a scan of the table per change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_identity_rows_are_found_through_an_index() {
    let schema = "CREATE TABLE ibag (a int, b text, c int); CREATE INDEX ibag_a ON ibag (a); \
                  ALTER TABLE ibag REPLICA IDENTITY FULL;";
    let env = setup("fullidx", schema, false).await;
    exec_each(
        &env.src,
        "INSERT INTO ibag SELECT i % 500, 'v' || i, NULLIF(i % 3, 0) FROM generate_series(1, 2000) i;
             UPDATE ibag SET b = b || '!' WHERE a = 7;
             UPDATE ibag SET c = 9 WHERE c IS NULL AND a < 50;
             DELETE FROM ibag WHERE a = 8;
             DELETE FROM ibag WHERE c IS NULL AND a > 490",
    )
    .await;
    let msgs = env.fetch(1, true, &[], None).await;
    let applier = env.apply(&msgs, ApplierConfig::default()).await.unwrap();
    env.assert_same(&["ibag"]).await;
    // The applier's session reports its statistics when it ends.
    drop(applier);
    let (mut seq, mut idx) = (0i64, 0i64);
    for _ in 0..100 {
        env.dst.batch_execute("SELECT pg_stat_clear_snapshot()").await.unwrap();
        let row = env
            .dst
            .query_one(
                "SELECT coalesce(seq_scan, 0), coalesce(idx_scan, 0) FROM pg_stat_user_tables \
                 WHERE relname = 'ibag'",
                &[],
            )
            .await
            .unwrap();
        (seq, idx) = (row.get(0), row.get(1));
        if seq + idx > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // About 4 + 33 + 4 + 12 changes: single ones through the index, runs of them as one
    // statement each (index lookups or one scan), never a scan per change.
    assert!(seq + idx > 0, "no statistics arrived");
    assert!(seq <= 6, "seq scans: {seq}, index scans: {idx}");
}

/// TRUNCATE ... CASCADE RESTART IDENTITY reaches every table, and the target's sequence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncate_cascade_restart_identity() {
    let schema =
        "CREATE TABLE parent (id int GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, v text);
                  CREATE TABLE child (id int PRIMARY KEY, parent_id int REFERENCES parent (id));";
    let env = setup("trunc", schema, false).await;
    exec_each(
        &env.src,
        "INSERT INTO parent (v) VALUES ('a'), ('b'); INSERT INTO child VALUES (1, 1), (2, 2);
             TRUNCATE parent, child RESTART IDENTITY CASCADE;
             INSERT INTO parent (v) VALUES ('c');",
    )
    .await;
    let msgs = env.fetch(1, true, &[], None).await;
    let truncate = msgs.iter().find_map(|m| match m {
        LogicalMessage::Truncate(t) => Some(t.clone()),
        _ => None,
    });
    let truncate = truncate.expect("a truncate message");
    assert!(truncate.restart_identity && truncate.cascade && truncate.rel_ids.len() == 2);
    env.dst
        .batch_execute("SELECT setval(pg_get_serial_sequence('parent', 'id'), 50)")
        .await
        .unwrap();
    env.apply(&msgs, ApplierConfig::default()).await.unwrap();
    env.assert_same(&["parent", "child"]).await;
    let called: bool =
        env.dst.query_one("SELECT is_called FROM parent_id_seq", &[]).await.unwrap().get(0);
    assert!(!called, "RESTART IDENTITY reset the target's sequence");
}
