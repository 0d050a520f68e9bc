//! Transactions applied after buffering: streamed (spilled, or applied ahead on a second
//! session) and two-phase.

use std::time::Duration;

use applier::{ApplierConfig, ApplyError};
use pgoutput_decoder::LogicalMessage;

use super::common::{Env, count, exec_each, last_end, setup};

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
