//! PostgresTarget against real clusters: changes read from a real slot, applied into another
//! database, compared with `store::table_fingerprint`.

mod common;

use std::time::Duration;

use applier::{ApplierConfig, ApplyError, Op};
use common::{Env, apply_all, count, exec_each, last_end, setup};
use pgoutput_decoder::{Column, LogicalMessage};
use rand::SeedableRng;

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

/// REPLICA IDENTITY FULL on a table with a (non-unique) index: rows are found through the
/// index, as PostgreSQL 16's own subscriber does, not by a scan of the table per change.
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
    let mut scans: i64 = 0;
    for _ in 0..100 {
        env.dst.batch_execute("SELECT pg_stat_clear_snapshot()").await.unwrap();
        scans = env
            .dst
            .query_one(
                "SELECT coalesce(idx_scan, 0) FROM pg_stat_user_indexes WHERE indexrelname = 'ibag_a'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if scans > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // About 4 + 33 + 4 + 12 single-row changes, each one index scan.
    assert!(scans >= 40, "index scans: {scans}");
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

/// A streamed transaction (protocol 2) larger than logical_decoding_work_mem, with a rolled
/// back savepoint, interleaved with a small transaction; spilled to a file on our side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_transaction_with_subxact_abort() {
    let env = setup(
        "stream",
        "CREATE TABLE big (id int PRIMARY KEY, pad text); CREATE TABLE small (id int PRIMARY KEY)",
        false,
    )
    .await;
    let mut big = env.source_session().await;
    let tx = big.transaction().await.unwrap();
    tx.batch_execute("INSERT INTO big SELECT g, repeat('p', 100) FROM generate_series(1, 3000) g")
        .await
        .unwrap();
    tx.batch_execute(
        "SAVEPOINT s1; INSERT INTO big SELECT g, 'gone' FROM generate_series(3001, 6000) g",
    )
    .await
    .unwrap();
    tx.batch_execute("UPDATE big SET pad = 'gone too' WHERE id <= 10; ROLLBACK TO SAVEPOINT s1")
        .await
        .unwrap();
    exec_each(&env.src, "INSERT INTO small VALUES (1)").await;
    tx.batch_execute("SAVEPOINT s2; INSERT INTO big VALUES (7000, 'kept'); RELEASE s2; DELETE FROM big WHERE id = 5").await.unwrap();
    tx.commit().await.unwrap();
    let msgs = env.fetch(2, true, &[("streaming", "on")], Some("64kB")).await;
    assert!(count(&msgs, |m| matches!(m, LogicalMessage::StreamStart(_))) > 1);
    assert!(
        count(&msgs, |m| matches!(m, LogicalMessage::StreamAbort(a) if a.xid != a.subxid)) >= 1
    );
    let cfg = ApplierConfig { spill_memory_limit: 16 << 10, ..ApplierConfig::default() };
    let applier = env.apply(&msgs, cfg).await.unwrap();
    assert!(applier.stats().spilled_txns >= 1);
    // Applied ahead: the rolled-back savepoint is undone there with ROLLBACK TO SAVEPOINT.
    assert_eq!(applier.stats().speculated_txns, 1, "{:?}", applier.stats());
    env.assert_same(&["big", "small"]).await;
    let n: i64 = env.dst.query_one("SELECT count(*) FROM big", &[]).await.unwrap().get(0);
    assert_eq!(n, 3000);
    assert_eq!(env.progress("test").await, Some(last_end(&msgs)));
}

/// A streamed transaction without subtransactions is applied on a second session while it
/// arrives: interleaved with small transactions that commit before it (one of them changes a
/// row the streamed one changes afterwards) and after it, and with a streamed transaction
/// that rolls back. A second pass over the same messages skips it and leaves the target as is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_transaction_applied_while_it_arrives() {
    let env = setup(
        "ahead",
        "CREATE TABLE big (id int PRIMARY KEY, pad text); CREATE TABLE small (id int PRIMARY KEY)",
        false,
    )
    .await;
    exec_each(&env.src, "INSERT INTO big VALUES (10000, 'base')").await;
    let mut big = env.source_session().await;
    let tx = big.transaction().await.unwrap();
    tx.batch_execute("INSERT INTO big SELECT g, repeat('p', 100) FROM generate_series(1, 3000) g")
        .await
        .unwrap();
    // Commits before the streamed transaction, on the row it changes next.
    exec_each(&env.src, "INSERT INTO small VALUES (1); UPDATE big SET pad = 'b' WHERE id = 10000")
        .await;
    tx.batch_execute(
        "UPDATE big SET pad = 'a' WHERE id = 10000; \
         INSERT INTO big SELECT g, repeat('q', 100) FROM generate_series(3001, 6000) g; \
         UPDATE big SET pad = 'u' WHERE id % 7 = 0; DELETE FROM big WHERE id % 11 = 0",
    )
    .await
    .unwrap();
    exec_each(&env.src, "INSERT INTO small VALUES (2)").await;
    tx.commit().await.unwrap();
    exec_each(&env.src, "UPDATE big SET pad = 'c' WHERE id = 10000; INSERT INTO small VALUES (3)")
        .await;
    let gone = big.transaction().await.unwrap();
    gone.batch_execute("INSERT INTO big SELECT g, 'gone' FROM generate_series(20001, 24000) g")
        .await
        .unwrap();
    gone.rollback().await.unwrap();
    let msgs = env.fetch(2, true, &[("streaming", "on")], Some("64kB")).await;
    assert!(count(&msgs, |m| matches!(m, LogicalMessage::StreamStart(_))) > 2);
    assert_eq!(count(&msgs, |m| matches!(m, LogicalMessage::StreamCommit(_))), 1);
    assert_eq!(
        count(&msgs, |m| matches!(m, LogicalMessage::StreamAbort(a) if a.xid == a.subxid)),
        1
    );

    let applier = env.apply(&msgs, ApplierConfig::default()).await.unwrap();
    assert_eq!(applier.stats().speculated_txns, 1, "{:?}", applier.stats());
    assert_eq!(applier.stats().aborted_txns, 1);
    env.assert_same(&["big", "small"]).await;
    assert_eq!(env.progress("test").await, Some(last_end(&msgs)));

    // Sent again (as after a restart): everything is skipped, the copy ahead rolled back.
    let again = env.apply(&msgs, ApplierConfig::default()).await.unwrap();
    assert_eq!(again.stats().applied_txns, 0, "{:?}", again.stats());
    assert_eq!(again.stats().speculated_txns, 0);
    env.assert_same(&["big", "small"]).await;
    let pad: String =
        env.dst.query_one("SELECT pad FROM big WHERE id = 10000", &[]).await.unwrap().get(0);
    assert_eq!(pad, "c");
}

/// A backlog that stalls a transaction applied ahead on a target with a unique index the
/// primary lacks: a streamed transaction sets `x = 5` on row 1 first, then `between` commits
/// (inserting `x = 5` again), then the streamed transaction goes on and commits, then `after`.
/// Returns the messages and the index of the first message of `between`.
async fn stalling_backlog(env: &Env, between: &str, after: &str) -> (Vec<LogicalMessage>, usize) {
    env.dst.batch_execute("CREATE UNIQUE INDEX t_x_only_on_the_target ON t (x)").await.unwrap();
    interleaved_backlog(env, between, after).await
}

/// A streamed transaction sets `x = 5` on row 1 (of rows 1 and 2) first, then `between`
/// commits, then the streamed transaction goes on and commits, then `after`. Returns the
/// messages and the index of the first message of `between`.
async fn interleaved_backlog(
    env: &Env,
    between: &str,
    after: &str,
) -> (Vec<LogicalMessage>, usize) {
    exec_each(&env.src, "INSERT INTO t VALUES (1, 1), (2, 2)").await;
    let mut s = env.source_session().await;
    let tx = s.transaction().await.unwrap();
    tx.batch_execute(
        "UPDATE t SET x = 5 WHERE id = 1; \
         INSERT INTO t SELECT g, g FROM generate_series(10001, 13000) g",
    )
    .await
    .unwrap();
    exec_each(&env.src, between).await;
    tx.batch_execute("INSERT INTO t SELECT g, g FROM generate_series(13001, 16000) g")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    if !after.is_empty() {
        exec_each(&env.src, after).await;
    }
    let msgs = env.fetch(2, true, &[("streaming", "on")], Some("64kB")).await;
    let small = msgs
        .iter()
        .enumerate()
        .filter_map(|(i, m)| matches!(m, LogicalMessage::Begin(_)).then_some(i))
        .nth(1)
        .expect("the transaction committed while the streamed one was open");
    assert!(
        msgs[..small].iter().any(|m| matches!(m, LogicalMessage::StreamStart(_))),
        "the streamed transaction starts before it"
    );
    (msgs, small)
}

/// A patience no test waits out: only the lock check can see a stall.
const FOREVER: Duration = Duration::from_secs(3600);

/// Applies `msgs` with `patience`, pausing before message `pause_at` so that the second
/// session's UPDATE reaches the target first. Fails if that takes a minute.
async fn apply_pausing(
    env: &Env,
    msgs: &[LogicalMessage],
    pause_at: usize,
    patience: Duration,
) -> (applier::Applier<applier::PostgresTarget>, Result<(), ApplyError>) {
    let cfg = ApplierConfig { speculation_patience: patience, ..Default::default() };
    let mut applier = applier::Applier::new(env.target("test").await, cfg).await.unwrap();
    let result = tokio::time::timeout(Duration::from_secs(60), async {
        for (i, m) in msgs.iter().enumerate() {
            if i == pause_at {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            applier.handle(m.clone()).await?;
        }
        applier.flush().await.map(drop)
    })
    .await
    .expect("the two target sessions waited on each other");
    (applier, result)
}

/// The earlier transaction inserts a value the streamed one, applied ahead, already holds
/// uncommitted on the second session, so the main session waits for it, and the second
/// session would only commit after the main session. The target's lock table shows the wait
/// (the patience is never reached): the second session rolls back, the earlier transaction
/// commits, and the streamed one, replayed from its spill, stops on the unique index with the
/// table named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_main_session_waiting_on_the_session_ahead_rolls_that_session_back() {
    let env = setup("aheadwait", "CREATE TABLE t (id int PRIMARY KEY, x int)", false).await;
    let (msgs, small) = stalling_backlog(&env, "INSERT INTO t VALUES (100000, 5)", "").await;
    let small_end = msgs[small..]
        .iter()
        .find_map(|m| match m {
            LogicalMessage::Commit(c) => Some(c.end_lsn),
            _ => None,
        })
        .unwrap();

    let started = std::time::Instant::now();
    let (applier, applied) = apply_pausing(&env, &msgs, small, FOREVER).await;
    let err = applied.expect_err("the streamed transaction breaks the target's unique index");
    let chain = format!("{err}: {:?}", std::error::Error::source(&err));
    assert!(chain.contains("\"public\".\"t\""), "{chain}");
    assert!(chain.contains("t_x_only_on_the_target"), "{chain}");
    assert!(started.elapsed() < Duration::from_secs(30), "{:?}", started.elapsed());
    drop(applier);
    assert_eq!(env.progress("test").await, Some(small_end));
    let x: i32 = env.dst.query_one("SELECT x FROM t WHERE id = 100000", &[]).await.unwrap().get(0);
    assert_eq!(x, 5, "the small transaction committed");
    let rows: i64 = env.dst.query_one("SELECT count(*) FROM t", &[]).await.unwrap().get(0);
    assert_eq!(rows, 3, "nothing of the streamed transaction");
}

/// The same wait, where the earlier transaction's row is deleted again before the streamed
/// transaction commits: once the second session is rolled back, everything applies, the
/// streamed transaction from its spill, and the next streamed transaction is not applied
/// ahead (this target would stall it the same way).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_stall_streamed_transactions_are_applied_at_their_commit() {
    let env = setup("aheadstall", "CREATE TABLE t (id int PRIMARY KEY, x int)", false).await;
    let (msgs, small) = stalling_backlog(
        &env,
        "INSERT INTO t VALUES (100000, 5); DELETE FROM t WHERE id = 100000",
        "INSERT INTO t SELECT g, g FROM generate_series(20001, 26000) g",
    )
    .await;
    assert_eq!(count(&msgs, |m| matches!(m, LogicalMessage::StreamCommit(_))), 2);

    let (applier, applied) = apply_pausing(&env, &msgs, small, FOREVER).await;
    applied.unwrap();
    assert_eq!(applier.stats().speculated_txns, 0, "{:?}", applier.stats());
    assert_eq!(applier.stats().applied_txns, 5, "{:?}", applier.stats());
    env.assert_same(&["t"]).await;
    assert_eq!(env.progress("test").await, Some(last_end(&msgs)));
}

/// Begins a transaction on `target` that locks row 2 of `t` as soon as the applier has
/// inserted it (the first transaction of [`interleaved_backlog`], before the streamed one).
async fn lock_row_2_once_applied(target: &tokio_postgres::Client) {
    target.batch_execute("BEGIN").await.unwrap();
    while target.query("SELECT FROM t WHERE id = 2 FOR UPDATE", &[]).await.unwrap().is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A wait that goes through a third session is not in the lock check's view: the target's own
/// session waits for the second one, and the main session for it. The patience ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_through_a_third_session_ends_after_the_patience() {
    let env = setup("aheadchain", "CREATE TABLE t (id int PRIMARY KEY, x int)", false).await;
    let (msgs, small) = stalling_backlog(&env, "UPDATE t SET x = 7 WHERE id = 2", "").await;
    // On the target: a session that locks row 2, then waits to insert x = 5 (held by the
    // second session), and gives up its lock once that insert is through.
    let third = env.target_session().await;
    let waiter = tokio::spawn(async move {
        lock_row_2_once_applied(&third).await;
        // Until the second session holds x = 5 (its first change), the insert goes through
        // and is undone; then it waits.
        third.batch_execute("SET lock_timeout = '50ms'").await.unwrap();
        loop {
            let r = third.batch_execute("SAVEPOINT probe; INSERT INTO t VALUES (100000, 5)").await;
            third.batch_execute("ROLLBACK TO SAVEPOINT probe").await.unwrap();
            if r.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        third.batch_execute("SET lock_timeout = 0").await.unwrap();
        third.batch_execute("INSERT INTO t VALUES (100000, 5)").await.unwrap();
        third.batch_execute("ROLLBACK").await.unwrap();
    });
    let started = std::time::Instant::now();
    let (applier, applied) = apply_pausing(&env, &msgs, small, Duration::from_secs(2)).await;
    waiter.await.unwrap();
    applied.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(2), "{:?}", started.elapsed());
    assert_eq!(applier.stats().speculated_txns, 0, "{:?}", applier.stats());
    env.assert_same(&["t"]).await;
}

/// A main session that waits for a lock of someone else (here a session of the target's own)
/// keeps the session ahead: once the lock is released, the streamed transaction commits as
/// applied ahead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_main_session_waiting_on_someone_else_keeps_the_session_ahead() {
    let env = setup("aheadother", "CREATE TABLE t (id int PRIMARY KEY, x int)", false).await;
    let (msgs, small) = interleaved_backlog(&env, "UPDATE t SET x = 7 WHERE id = 2", "").await;
    let other = env.target_session().await;
    let release = tokio::spawn(async move {
        lock_row_2_once_applied(&other).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        other.batch_execute("ROLLBACK").await.unwrap();
    });
    let started = std::time::Instant::now();
    let (applier, applied) = apply_pausing(&env, &msgs, small, FOREVER).await;
    release.await.unwrap();
    applied.unwrap();
    // The main session did wait for that lock, while the speculation was open.
    assert!(started.elapsed() >= Duration::from_secs(1), "{:?}", started.elapsed());
    assert_eq!(applier.stats().speculated_txns, 1, "{:?}", applier.stats());
    env.assert_same(&["t"]).await;
}

/// pgoutput sends a relation inside every streamed transaction that touches it, and once one
/// commits, counts it as sent: a transaction after it comes without a Relation message. Here
/// the first transaction after the slot's start is streamed, so only its stream describes the
/// table, and then once more a transaction that is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relations_sent_in_a_streamed_transaction_serve_the_transactions_after_it() {
    // No autovacuum: an ANALYZE invalidates the relation, and pgoutput then describes it
    // again, which is not the case under test.
    let env = setup(
        "streamrel",
        "CREATE TABLE t (id int PRIMARY KEY, pad text) WITH (autovacuum_enabled = off)",
        false,
    )
    .await;
    exec_each(&env.src, "INSERT INTO t SELECT g, 'first' FROM generate_series(1, 3000) g").await;
    exec_each(&env.src, "INSERT INTO t VALUES (100000, 'after')").await;
    let mut s = env.source_session().await;
    let tx = s.transaction().await.unwrap();
    tx.batch_execute("INSERT INTO t SELECT g, 'second' FROM generate_series(10001, 13000) g")
        .await
        .unwrap();
    exec_each(&env.src, "UPDATE t SET pad = 'during' WHERE id = 100000").await;
    tx.commit().await.unwrap();
    exec_each(&env.src, "INSERT INTO t VALUES (100001, 'last')").await;
    let msgs = env.fetch(2, true, &[("streaming", "on")], Some("64kB")).await;
    assert_eq!(count(&msgs, |m| matches!(m, LogicalMessage::StreamCommit(_))), 2);
    let small = msgs.iter().position(|m| matches!(m, LogicalMessage::Begin(_))).unwrap();
    let last = msgs.iter().rposition(|m| matches!(m, LogicalMessage::Begin(_))).unwrap();
    let relations = |from: usize, to: usize| {
        msgs[from..to].iter().filter(|m| matches!(m, LogicalMessage::Relation(_))).count()
    };
    assert_eq!(relations(0, small), 1, "the first stream describes the table");
    assert_eq!(relations(small, small + 4), 0, "the next transaction relies on it");
    assert_eq!(relations(last, msgs.len()), 0, "so does the last one");

    let applier = env.apply(&msgs, ApplierConfig::default()).await.unwrap();
    assert_eq!(applier.stats().applied_txns, 5, "{:?}", applier.stats());
    env.assert_same(&["t"]).await;
}

/// Nested savepoints in a transaction applied ahead: rolling back the outer one undoes the
/// inner, released one too. A transaction with more subtransactions than the second session
/// takes savepoints for is replayed from its spill instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn savepoints_in_transactions_applied_ahead() {
    let env = setup("aheadsp", "CREATE TABLE t (id int PRIMARY KEY, pad text)", false).await;
    let mut s = env.source_session().await;
    let tx = s.transaction().await.unwrap();
    tx.batch_execute(
        "INSERT INTO t SELECT g, repeat('p', 100) FROM generate_series(1, 2000) g; \
         SAVEPOINT a; INSERT INTO t SELECT g, 'a' FROM generate_series(2001, 3000) g; \
         SAVEPOINT b; UPDATE t SET pad = 'b' WHERE id <= 500; RELEASE b; \
         DELETE FROM t WHERE id BETWEEN 600 AND 700; ROLLBACK TO a; \
         SAVEPOINT c; INSERT INTO t SELECT g, 'c' FROM generate_series(3001, 4000) g; RELEASE c; \
         UPDATE t SET pad = 'top' WHERE id % 9 = 0",
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    // One subtransaction per row (an exception block): more than the savepoint budget.
    env.src
        .batch_execute(
            "DO $$ BEGIN FOR i IN 10001..10100 LOOP \
               BEGIN INSERT INTO t VALUES (i, repeat('x', 2000)); \
               EXCEPTION WHEN unique_violation THEN NULL; END; END LOOP; END $$",
        )
        .await
        .unwrap();
    let msgs = env.fetch(2, true, &[("streaming", "on")], Some("64kB")).await;
    assert_eq!(count(&msgs, |m| matches!(m, LogicalMessage::StreamCommit(_))), 2);
    assert!(
        count(&msgs, |m| matches!(m, LogicalMessage::StreamAbort(a) if a.xid != a.subxid)) >= 1
    );

    let applier = env.apply(&msgs, ApplierConfig::default()).await.unwrap();
    assert_eq!(applier.stats().speculated_txns, 1, "{:?}", applier.stats());
    assert_eq!(applier.stats().applied_txns, 2);
    env.assert_same(&["t"]).await;
    let n: i64 = env.dst.query_one("SELECT count(*) FROM t", &[]).await.unwrap().get(0);
    assert_eq!(n, 3100);
}

/// Two streamed transactions in flight at once: the first is applied ahead, the second is
/// spilled, commits first on the primary and is replayed on the main session at its commit,
/// before the first one commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interleaved_streamed_transactions_commit_in_source_order() {
    let env = setup("interleave", "CREATE TABLE a (id int PRIMARY KEY, pad text)", false).await;
    let mut first = env.source_session().await;
    let mut second = env.source_session().await;
    let t1 = first.transaction().await.unwrap();
    let t2 = second.transaction().await.unwrap();
    for step in 0..4 {
        let (lo, hi) = (step * 2000 + 1, step * 2000 + 1000);
        t1.execute(
            "INSERT INTO a SELECT g, repeat('1', 100) FROM generate_series($1::int, $2::int) g",
            &[&lo, &hi],
        )
        .await
        .unwrap();
        t2.execute(
            "INSERT INTO a SELECT g, repeat('2', 100) FROM generate_series($1::int, $2::int) g",
            &[&(lo + 1000), &(hi + 1000)],
        )
        .await
        .unwrap();
    }
    t2.commit().await.unwrap();
    t1.execute("UPDATE a SET pad = 'one' WHERE id % 1000 = 1", &[]).await.unwrap();
    t1.commit().await.unwrap();
    let msgs = env.fetch(2, true, &[("streaming", "on")], Some("64kB")).await;
    let streamed: std::collections::HashSet<u32> = msgs
        .iter()
        .filter_map(|m| match m {
            LogicalMessage::StreamStart(s) => Some(s.xid),
            _ => None,
        })
        .collect();
    assert_eq!(streamed.len(), 2, "both transactions streamed");
    let first_streamed = msgs.iter().find_map(|m| match m {
        LogicalMessage::StreamStart(s) => Some(s.xid),
        _ => None,
    });
    let last_committed = msgs.iter().rev().find_map(|m| match m {
        LogicalMessage::StreamCommit(c) => Some(c.xid),
        _ => None,
    });
    assert_eq!(first_streamed, last_committed, "the one applied ahead commits last");

    let applier = env.apply(&msgs, ApplierConfig::default()).await.unwrap();
    assert_eq!(applier.stats().speculated_txns, 1, "{:?}", applier.stats());
    assert_eq!(applier.stats().applied_txns, 2);
    env.assert_same(&["a"]).await;
    assert_eq!(env.progress("test").await, Some(last_end(&msgs)));
}

/// A column the target lacks, first seen inside a streamed transaction: the second session
/// does not add it (its ALTER TABLE would lock the table until that transaction commits, and
/// an earlier transaction on the same table still has to be applied), so the transaction is
/// replayed from its spill and the main session repairs the drift.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_inside_a_streamed_transaction_is_left_to_the_main_session() {
    let env = setup("aheaddrift", "CREATE TABLE big (id int PRIMARY KEY, pad text)", false).await;
    exec_each(
        &env.src,
        "INSERT INTO big VALUES (10000, 'base'); ALTER TABLE big ADD COLUMN extra text",
    )
    .await;
    let mut big = env.source_session().await;
    let tx = big.transaction().await.unwrap();
    tx.batch_execute(
        "INSERT INTO big SELECT g, repeat('p', 100), 'x' FROM generate_series(1, 3000) g",
    )
    .await
    .unwrap();
    exec_each(&env.src, "UPDATE big SET extra = 'e' WHERE id = 10000").await;
    tx.batch_execute(
        "INSERT INTO big SELECT g, repeat('q', 100), 'y' FROM generate_series(3001, 6000) g",
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let msgs = env.fetch(2, true, &[("streaming", "on")], Some("64kB")).await;
    assert!(count(&msgs, |m| matches!(m, LogicalMessage::StreamStart(_))) > 1);

    let applied = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        env.apply(&msgs, ApplierConfig::default()),
    )
    .await
    .expect("the two target sessions waited on each other");
    let applier = applied.unwrap();
    assert_eq!(applier.stats().speculated_txns, 0, "{:?}", applier.stats());
    assert_eq!(applier.target().stats().columns_added, 1);
    env.assert_same(&["big"]).await;
}

/// Two-phase: applied at COMMIT PREPARED, dropped at ROLLBACK PREPARED, and the confirmed
/// LSN never passes a PREPARE we only hold in memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_phase_commit_and_rollback() {
    let env = setup("twophase", "CREATE TABLE t (id int PRIMARY KEY, v text)", true).await;
    let gid1 = pgcluster::unique_name("g1");
    let gid2 = pgcluster::unique_name("g2");
    exec_each(
        &env.src,
        &format!(
            "BEGIN; INSERT INTO t VALUES (1, 'one'), (2, 'two'); PREPARE TRANSACTION '{gid1}';
             BEGIN; INSERT INTO t VALUES (3, 'three'); PREPARE TRANSACTION '{gid2}';
             INSERT INTO t VALUES (10, 'plain');"
        ),
    )
    .await;
    let first = env.fetch(3, true, &[("two_phase", "on")], None).await;
    assert_eq!(count(&first, |m| matches!(m, LogicalMessage::Prepare(_))), 2);
    let prepare_lsn = first
        .iter()
        .find_map(|m| match m {
            LogicalMessage::BeginPrepare(b) => Some(b.prepare_lsn),
            _ => None,
        })
        .unwrap();
    let mut applier =
        applier::Applier::new(env.target("test").await, ApplierConfig::default()).await.unwrap();
    for m in &first {
        applier.handle(m.clone()).await.unwrap();
    }
    applier.flush().await.unwrap();
    // Asynchronous commit: poll until the target's WAL flush covers it.
    let mut confirmed = applier.confirmed();
    for _ in 0..100 {
        if confirmed.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        confirmed = applier.flush().await.unwrap().or(confirmed);
    }
    let confirmed = confirmed.expect("the plain transaction became durable");
    assert!(confirmed <= prepare_lsn, "{confirmed} must not pass PREPARE at {prepare_lsn}");

    exec_each(&env.src, &format!("COMMIT PREPARED '{gid1}'; ROLLBACK PREPARED '{gid2}'")).await;
    let second = env.fetch(3, true, &[("two_phase", "on")], None).await;
    for m in &second {
        applier.handle(m.clone()).await.unwrap();
    }
    applier.flush().await.unwrap();
    env.assert_same(&["t"]).await;
    let n: i64 = env.dst.query_one("SELECT count(*) FROM t", &[]).await.unwrap().get(0);
    assert_eq!(n, 3);
}

/// A column added on the source is added on the target; a column only the target has stops
/// the apply before anything of that transaction commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_drift() {
    let env = setup("drift", "CREATE TABLE t (id int PRIMARY KEY, a text)", false).await;
    exec_each(
        &env.src,
        "INSERT INTO t VALUES (1, 'a');
             ALTER TABLE t ADD COLUMN b numeric(10,2), ADD COLUMN c varchar(5)[];
             INSERT INTO t VALUES (2, 'b', 3.25, '{x,y}'); UPDATE t SET b = 1 WHERE id = 1;",
    )
    .await;
    let msgs = env.fetch(1, true, &[], None).await;
    let applier = env.apply(&msgs, ApplierConfig::default()).await.unwrap();
    assert_eq!(applier.target().stats().columns_added, 2);
    env.assert_same(&["t"]).await;
    let ty: String = env
        .dst
        .query_one("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 't'::regclass AND attname = 'b'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(ty, "numeric(10,2)");

    // The target gains a column the source does not have: a clear error, nothing applied.
    env.dst.batch_execute("ALTER TABLE t ADD COLUMN extra int").await.unwrap();
    exec_each(&env.src, "INSERT INTO t VALUES (3, 'c')").await;
    let before = env.progress("test").await;
    let msgs = env.fetch(1, true, &[], None).await;
    let err = env.apply(&msgs, ApplierConfig::default()).await.unwrap_err();
    assert!(matches!(&err, ApplyError::Schema { detail, .. } if detail.contains("extra")), "{err}");
    assert_eq!(env.progress("test").await, before);
    let n: i64 = env.dst.query_one("SELECT count(*) FROM t", &[]).await.unwrap().get(0);
    assert_eq!(n, 2);
}

/// A target-side constraint violation names table, operation and source commit, and rolls
/// back the whole group: no rows, no progress. (Row 3 exists before the slot, so its update
/// is not folded into an insert of the group.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_error_is_atomic_and_named() {
    let env = setup(
        "err",
        "CREATE TABLE t (id int PRIMARY KEY, v int); INSERT INTO t VALUES (3, 3)",
        false,
    )
    .await;
    env.dst.batch_execute("ALTER TABLE t ADD CONSTRAINT small CHECK (v < 100)").await.unwrap();
    exec_each(&env.src, "INSERT INTO t VALUES (1, 1); INSERT INTO t VALUES (2, 2); UPDATE t SET v = 500 WHERE id = 3").await;
    let msgs = env.fetch(1, true, &[], None).await;
    let last_commit = msgs
        .iter()
        .rev()
        .find_map(|m| match m {
            LogicalMessage::Begin(b) => Some(b.final_lsn),
            _ => None,
        })
        .unwrap();
    let err = env.apply(&msgs, ApplierConfig::default()).await.unwrap_err();
    match &err {
        ApplyError::Change { table, op, commit_lsn, .. } => {
            assert_eq!(table, "\"public\".\"t\"");
            assert_eq!(*op, Op::Update);
            assert_eq!(*commit_lsn, last_commit);
        }
        other => panic!("unexpected {other}"),
    }
    assert_eq!(err.as_db_error().map(|e| e.code().code()), Some("23514"));
    assert_eq!(env.progress("test").await, None);
    let n: i64 = env.dst.query_one("SELECT count(*) FROM t", &[]).await.unwrap().get(0);
    assert_eq!(n, 1);
}

/// An update folded into the group's insert of the same row fails as that insert: the error
/// names the insert and the first source commit of the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folded_update_error_names_the_insert() {
    let env = setup("errfold", "CREATE TABLE t (id int PRIMARY KEY, v int)", false).await;
    env.dst.batch_execute("ALTER TABLE t ADD CONSTRAINT small CHECK (v < 100)").await.unwrap();
    exec_each(&env.src, "INSERT INTO t VALUES (1, 1); INSERT INTO t VALUES (2, 2); UPDATE t SET v = 500 WHERE id = 2").await;
    let msgs = env.fetch(1, true, &[], None).await;
    let first_commit = msgs
        .iter()
        .find_map(|m| match m {
            LogicalMessage::Begin(b) => Some(b.final_lsn),
            _ => None,
        })
        .unwrap();
    let err = env.apply(&msgs, ApplierConfig::default()).await.unwrap_err();
    match &err {
        ApplyError::Change { table, op, commit_lsn, .. } => {
            assert_eq!(table, "\"public\".\"t\"");
            assert_eq!(*op, Op::Insert);
            assert_eq!(*commit_lsn, first_commit);
        }
        other => panic!("unexpected {other}"),
    }
    assert_eq!(err.as_db_error().map(|e| e.code().code()), Some("23514"));
    assert_eq!(env.progress("test").await, None);
}

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
