//! Runs coalesced per table and key, and the progress row moving with each flush.

use applier::ApplierConfig;
use pgoutput_decoder::LogicalMessage;
use rand::SeedableRng;

use super::common::{apply_all, exec_each, setup};

const COALESCE_SCHEMA: &str = "
    CREATE TABLE a (id int PRIMARY KEY, v text NOT NULL, email text NOT NULL UNIQUE);
    CREATE TABLE b (id int PRIMARY KEY, a_id int NOT NULL REFERENCES a (id), n int NOT NULL);
    CREATE TABLE c (id int PRIMARY KEY, v int NOT NULL);
    CREATE TABLE d (id int PRIMARY KEY, s text NOT NULL);
    INSERT INTO a SELECT g, 'seed', 's' || g FROM generate_series(1000, 1009) AS g;
    INSERT INTO c SELECT g, g FROM generate_series(1, 60) AS g;";

/// Per iteration, one or more source transactions touching the four tables in turn: inserts
/// with later updates of the same rows (folded), repeated updates of a few rows (folded),
/// unique values moving between rows across transactions (`a.email`: row by row), key
/// changes, deletes and re-inserts of the same key, and a pure insert stream (COPY).
const COALESCE_PROC: &str = "CREATE PROCEDURE mix(cnt int) LANGUAGE plpgsql AS $$
    DECLARE p int; q int; ep text; eq text;
    BEGIN
      FOR i IN 1..cnt LOOP
        INSERT INTO a VALUES (i, 'new', 'e' || i);
        INSERT INTO b VALUES (i, i, 0), (cnt + i, 1000 + i % 10, 0);
        INSERT INTO d VALUES (i, repeat('x', i));
        UPDATE a SET v = 'upd ' || i WHERE id = i;
        UPDATE b SET n = n + 1 WHERE id IN (i, cnt + i);
        UPDATE c SET v = v + i WHERE id = 1 + i % 5;
        COMMIT;
        UPDATE b SET n = n + 10 WHERE id = cnt + i;
        COMMIT;
        IF i % 7 = 0 THEN
          p := 1000 + i % 10; q := 1000 + (i + 1) % 10;
          SELECT email INTO ep FROM a WHERE id = p; SELECT email INTO eq FROM a WHERE id = q;
          UPDATE a SET email = 'tmp' WHERE id = p; COMMIT;
          UPDATE a SET email = ep WHERE id = q; COMMIT;
          UPDATE a SET email = eq WHERE id = p; COMMIT;
        END IF;
        IF i % 5 = 0 THEN
          UPDATE c SET id = id + 100000 WHERE id = 10 + i / 5;
          UPDATE c SET v = -v WHERE id = 100010 + i / 5;
          COMMIT;
          DELETE FROM c WHERE id = 1 + i % 5;
          INSERT INTO c VALUES (1 + i % 5, -i);
          COMMIT;
        END IF;
        IF i % 9 = 0 THEN
          DELETE FROM b WHERE id = i; DELETE FROM a WHERE id = i;
          COMMIT;
          INSERT INTO a VALUES (i, 'again', 'e' || i);
          COMMIT;
        END IF;
      END LOOP;
    END $$";

/// Many source transactions in one target transaction, coalesced per table: the target ends
/// up equal to the source, with and without cross-table batching (replication role), and
/// with far fewer statements than changes when batching.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coalesced_runs_keep_per_key_order() {
    for reorder in [true, false] {
        let env = setup("coalesce", COALESCE_SCHEMA, false).await;
        env.src.batch_execute(COALESCE_PROC).await.unwrap();
        env.src.batch_execute("CALL mix(200)").await.unwrap();
        let msgs = env.fetch(1, true, &[], None).await;
        let mut cfg = applier::PostgresTargetConfig::new("test");
        cfg.replica_role = reorder;
        let target = applier::PostgresTarget::new(env.target_session().await, cfg).await.unwrap();
        assert_eq!(target.batches_across_tables(), reorder);
        let applier = apply_all(target, &msgs, ApplierConfig::default()).await.unwrap();
        env.assert_same(&["a", "b", "c", "d"]).await;
        let changes = applier.stats().changes;
        let stats = applier.target().stats();
        assert_eq!(stats.missing_rows, 0, "{stats:?}");
        if reorder {
            assert!(stats.copied_rows >= 200, "the inserts into d went through COPY: {stats:?}");
            assert!(stats.batched_rows > 500, "{stats:?}");
            assert!(stats.statements * 3 < changes, "{changes} changes: {stats:?}");
        }
    }
}

/// A backlog of Store OLTP transactions (an order, its lines, a stock update of a product
/// with a unique `sku`, the order's status update) grouped into one target transaction goes
/// out as a handful of statements per table, not one per row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_oltp_backlog_is_coalesced() {
    let env = setup("oltpco", store::SCHEMA_SQL, false).await;
    store::populate(&env.src, &store::Scale::bench(300)).await.unwrap();
    let mut client = env.source_session().await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let before = env.fetch(1, true, &[], None).await;
    for _ in 0..400 {
        store::oltp_transaction(&mut client, &mut rng).await.unwrap();
    }
    let oltp = env.fetch(1, true, &[], None).await;
    let msgs: Vec<LogicalMessage> = before.iter().chain(&oltp).cloned().collect();
    let applier = env.apply(&msgs, ApplierConfig::default()).await.unwrap();
    env.assert_same(&store::TABLES).await;
    let stats = applier.target().stats();
    assert_eq!(stats.missing_rows, 0);
    assert!(stats.statements < 60, "{} OLTP messages: {stats:?}", oltp.len());
}

/// Updates that set array columns go out set-based as rows of the table's type (arrays cannot
/// travel in `unnest` arrays of their own): NULL and empty arrays, a dropped column and a
/// generated column in the row type, a unique column moving; text values (`binary` off) go
/// row by row. The target ends up equal either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn array_columns_in_set_based_updates() {
    // The key is GENERATED ALWAYS: never set by an update, yet it must travel to find rows.
    let schema = "CREATE TABLE a (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, junk int,
            tags text[], n int NOT NULL, u text UNIQUE, g int GENERATED ALWAYS AS (n * 2) STORED,
            m int[][]);
        ALTER TABLE a DROP COLUMN junk;
        INSERT INTO a (id, tags, n, u, m) OVERRIDING SYSTEM VALUE
            SELECT g, ARRAY['t' || g], g, 'u' || g, '{{1,2},{3,4}}' FROM generate_series(1, 60) AS g;
        CREATE TABLE b (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, tags text[]);
        INSERT INTO b (id, tags) OVERRIDING SYSTEM VALUE SELECT g, '{}' FROM generate_series(1, 20) g;";
    for binary in [true, false] {
        let env = setup("arrays", schema, false).await;
        env.src
            .batch_execute(
                "CREATE PROCEDURE churn() LANGUAGE plpgsql AS $$ BEGIN
                   FOR i IN 1..40 LOOP
                     UPDATE a SET n = n + 1,
                       tags = CASE i % 4 WHEN 0 THEN NULL WHEN 1 THEN '{}'
                              ELSE tags || ('x' || i) END,
                       m = CASE WHEN i % 3 = 0 THEN '{{5,6},{7,8}}'::int[][] ELSE m END
                     WHERE id = i;
                     COMMIT;
                   END LOOP;
                   UPDATE a SET u = 'moved' WHERE id = 50; COMMIT;
                   UPDATE a SET u = 'u50', tags = '{a,b}' WHERE id = 51; COMMIT;
                   FOR i IN 1..10 LOOP UPDATE b SET tags = ARRAY['b' || i] WHERE id = i; COMMIT; END LOOP;
                 END $$",
            )
            .await
            .unwrap();
        env.src.batch_execute("CALL churn()").await.unwrap();
        let msgs = env.fetch(1, binary, &[], None).await;
        let applier = env.apply(&msgs, ApplierConfig::default()).await.unwrap();
        env.assert_same(&["a", "b"]).await;
        let stats = applier.target().stats();
        assert_eq!(stats.missing_rows, 0, "{stats:?}");
        if binary {
            assert_eq!(stats.batched_rows, 50, "{stats:?}");
        } else {
            assert_eq!(stats.batched_rows, 0, "{stats:?}");
        }
    }
}

/// A Relation message the primary sends again mid-stream (after any relcache invalidation on
/// it, such as an ANALYZE) with the same shape does not cut the buffered run in two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resent_relation_keeps_the_run() {
    let env = setup("resent", "CREATE TABLE r (id int PRIMARY KEY, v text)", false).await;
    env.src
        .batch_execute(
            "CREATE PROCEDURE fill() LANGUAGE plpgsql AS $$ BEGIN
               FOR i IN 1..50 LOOP INSERT INTO r VALUES (i, 'v' || i); COMMIT; END LOOP;
             END $$",
        )
        .await
        .unwrap();
    env.src.batch_execute("CALL fill()").await.unwrap();
    let mut msgs = env.fetch(1, true, &[], None).await;
    let relation = msgs
        .iter()
        .find(|m| matches!(m, LogicalMessage::Relation(_)))
        .cloned()
        .expect("a Relation message");
    let last_insert = msgs.iter().rposition(|m| matches!(m, LogicalMessage::Insert(_))).unwrap();
    msgs.insert(last_insert, relation);
    let applier = env.apply(&msgs, ApplierConfig::default()).await.unwrap();
    env.assert_same(&["r"]).await;
    let stats = applier.target().stats();
    assert_eq!(stats.copied_rows, 50, "{stats:?}");
}

/// A table with a unique column besides its key (`sku`, as in the Store's products): updates
/// that keep their unique values go out set-based, and those that move a unique value go one
/// at a time in source order, even when one takes a value another gave up in the same run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unique_values_moving_inside_a_batched_run() {
    let schema =
        "CREATE TABLE p (id int PRIMARY KEY, sku text NOT NULL UNIQUE, stock int NOT NULL);
        INSERT INTO p SELECT g, 's' || g, 100 FROM generate_series(1, 70) AS g;";
    for reorder in [true, false] {
        let env = setup("uniqrun", schema, false).await;
        env.src
            .batch_execute(
                "CREATE PROCEDURE churn() LANGUAGE plpgsql AS $$ BEGIN
                   FOR i IN 1..50 LOOP UPDATE p SET stock = stock - i WHERE id = i; COMMIT; END LOOP;
                   -- Folded into the first update of the row: no unique value moves.
                   UPDATE p SET stock = stock - 1 WHERE id = 7; COMMIT;
                   UPDATE p SET sku = 'z60' WHERE id = 60; COMMIT;
                   UPDATE p SET sku = 's60', stock = 0 WHERE id = 61; COMMIT;
                   UPDATE p SET sku = 'gone' WHERE id = 62; COMMIT;
                   UPDATE p SET sku = 's62' WHERE id = 63; COMMIT;
                   UPDATE p SET sku = 's63' WHERE id = 64; COMMIT;
                   -- Not folded (it moves a unique value): ends the run, goes in order.
                   UPDATE p SET sku = 's7' || 'b' WHERE id = 7; COMMIT;
                   UPDATE p SET sku = 's7' WHERE id = 8; COMMIT;
                 END $$",
            )
            .await
            .unwrap();
        env.src.batch_execute("CALL churn()").await.unwrap();
        let msgs = env.fetch(1, true, &[], None).await;
        let mut cfg = applier::PostgresTargetConfig::new("test");
        cfg.replica_role = reorder;
        let target = applier::PostgresTarget::new(env.target_session().await, cfg).await.unwrap();
        let applier = apply_all(target, &msgs, ApplierConfig::default()).await.unwrap();
        env.assert_same(&["p"]).await;
        let stats = applier.target().stats();
        assert_eq!(stats.missing_rows, 0, "{stats:?}");
        // The 50 stock updates went out set-based (the 51st folded in); the sku moves did not.
        assert_eq!(stats.batched_rows, 50, "{stats:?}");
    }
}

/// The progress row moves with the data: after each flush it holds the last applied end LSN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_follows_each_flush() {
    let env = setup("progress", "CREATE TABLE t (id int PRIMARY KEY)", false).await;
    exec_each(
        &env.src,
        "INSERT INTO t VALUES (1); INSERT INTO t VALUES (2); INSERT INTO t VALUES (3)",
    )
    .await;
    let msgs = env.fetch(1, true, &[], None).await;
    let target = env.target("p1").await;
    let mut applier = applier::Applier::new(
        target,
        ApplierConfig { max_batch_rows: u64::MAX, ..ApplierConfig::default() },
    )
    .await
    .unwrap();
    let mut ends = Vec::new();
    for m in &msgs {
        if let LogicalMessage::Commit(c) = m {
            ends.push(c.end_lsn);
        }
        applier.handle(m.clone()).await.unwrap();
        if matches!(m, LogicalMessage::Commit(_)) {
            // Not flushed yet: the target still shows the previous state and progress.
            let n: i64 = env.dst.query_one("SELECT count(*) FROM t", &[]).await.unwrap().get(0);
            assert_eq!(usize::try_from(n).unwrap(), ends.len() - 1);
            let previous = ends.len().checked_sub(2).map(|i| ends[i]);
            assert_eq!(env.progress("p1").await, previous);
            applier.idle().await.unwrap();
            assert_eq!(env.progress("p1").await, ends.last().copied());
            let n: i64 = env.dst.query_one("SELECT count(*) FROM t", &[]).await.unwrap().get(0);
            assert_eq!(usize::try_from(n).unwrap(), ends.len());
        }
    }
    assert_eq!(ends.len(), 3);
    // Another mirror name has its own progress.
    let other =
        apply_all(env.target("p2").await, &msgs[..0], ApplierConfig::default()).await.unwrap();
    assert_eq!(other.start_progress(), None);
}
