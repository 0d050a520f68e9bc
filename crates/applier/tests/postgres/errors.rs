//! Schema drift and target errors: repaired, or stopped before anything of the group commits.

use applier::{ApplierConfig, ApplyError, Op};
use pgoutput_decoder::LogicalMessage;

use super::common::{exec_each, last_end, setup};

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

/// A transaction of one row (an insert, an update or a delete) goes out as one statement
/// carrying the progress row, without `BEGIN` and `COMMIT`; when the target refuses the row,
/// neither the row nor the progress is written. A transaction of two rows goes out as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_row_transaction_commits_as_one_statement() {
    let env = setup("onestmt", "CREATE TABLE t (id int PRIMARY KEY, v int)", false).await;
    env.dst.batch_execute("ALTER TABLE t ADD CONSTRAINT small CHECK (v < 100)").await.unwrap();
    env.src.batch_execute("INSERT INTO t VALUES (1, 500)").await.unwrap();
    let msgs = env.fetch(1, true, &[], None).await;
    let err = env.apply(&msgs, ApplierConfig::default()).await.unwrap_err();
    assert!(matches!(&err, ApplyError::Change { op: Op::Insert, .. }), "{err}");
    assert_eq!(err.as_db_error().map(|e| e.code().code()), Some("23514"));
    assert_eq!(env.progress("test").await, None);
    let n: i64 = env.dst.query_one("SELECT count(*) FROM t", &[]).await.unwrap().get(0);
    assert_eq!(n, 0);
    // The row as the source has it (the slot moved past it).
    env.dst
        .batch_execute("ALTER TABLE t DROP CONSTRAINT small; INSERT INTO t VALUES (1, 500)")
        .await
        .unwrap();

    for (sql, one_statement) in [
        ("INSERT INTO t VALUES (2, 2)", true),
        ("UPDATE t SET v = 3 WHERE id = 2", true),
        ("DELETE FROM t WHERE id = 1", true),
        ("INSERT INTO t VALUES (3, 3); INSERT INTO t VALUES (4, 4)", false),
        ("UPDATE t SET v = 5 WHERE id = 3; DELETE FROM t WHERE id = 4", false),
    ] {
        env.src.batch_execute(sql).await.unwrap();
        let msgs = env.fetch(1, true, &[], None).await;
        let applier = env.apply(&msgs, ApplierConfig::default()).await.unwrap();
        let stats = applier.target().stats();
        assert_eq!(
            (stats.commits, stats.one_statement_commits),
            (1, u64::from(one_statement)),
            "{sql}"
        );
        assert_eq!(env.progress("test").await, Some(last_end(&msgs)), "{sql}");
        env.assert_same(&["t"]).await;
    }
}

/// A target table with a rule that turns its statements into several (here an `ENABLE ALWAYS`
/// rule, which fires under the replica role too) refuses a `WITH` around them: its one-row
/// transactions go with `BEGIN` and `COMMIT`, and the rule still fires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_row_transaction_into_a_table_with_a_rule_goes_with_begin_and_commit() {
    let env = setup("onerule", "CREATE TABLE t (id int PRIMARY KEY, v int)", false).await;
    env.dst
        .batch_execute(
            "CREATE TABLE t_log (id int);
             CREATE RULE log AS ON INSERT TO t DO ALSO INSERT INTO t_log VALUES (NEW.id);
             ALTER TABLE t ENABLE ALWAYS RULE log",
        )
        .await
        .unwrap();
    for id in [1, 2] {
        env.src.execute("INSERT INTO t VALUES ($1, 1)", &[&id]).await.unwrap();
        let msgs = env.fetch(1, true, &[], None).await;
        let applier = env.apply(&msgs, ApplierConfig::default()).await.unwrap();
        let stats = applier.target().stats();
        assert_eq!((stats.commits, stats.one_statement_commits), (1, 0));
        assert_eq!(env.progress("test").await, Some(last_end(&msgs)));
    }
    env.assert_same(&["t"]).await;
    let logged: i64 = env.dst.query_one("SELECT count(*) FROM t_log", &[]).await.unwrap().get(0);
    assert_eq!(logged, 2);
}
