//! A first-time operator's start of `pgmirror mirror`: servers that cannot be reached, a
//! primary that is not ready, missing privileges, Ctrl-C during the copy. Each fails or stops
//! with one line that says what to do, and leaves nothing behind that it created.

use std::process::Stdio;
use std::time::{Duration, Instant};

use pgcluster::ClusterBuilder;
use pgconn::ConnConfig;
use pgmirror::commands::check::{CheckOptions, run_check};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_postgres::Client;

use crate::common::{database, store_mirror, store_pair, wait_for};

/// Runs the built binary with a deadline; returns (exit code, stdout, stderr).
async fn pgmirror(args: &[&str]) -> (i32, String, String) {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgmirror"))
        .args(args)
        .env_remove("PGMIRROR_SOURCE")
        .env_remove("PGMIRROR_TARGET")
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), child)
        .await
        .unwrap_or_else(|_| panic!("pgmirror {args:?} did not finish within 60 s"))
        .expect("run pgmirror");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The one `error:` line of a failed run.
fn error_line<'a>(what: &str, (code, out, err): &'a (i32, String, String)) -> &'a str {
    assert_ne!(*code, 0, "{what} must fail: {out}{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "{what}: one error line: {err}");
    errors[0]
}

async fn scalar(client: &Client, sql: &str, arg: &str) -> i64 {
    client.query_one(sql, &[&arg]).await.expect(sql).get(0)
}

/// Nothing of mirror `name` is left: no slot or publication on the source, no table `tables`
/// and no `pgmirror` schema on the target.
async fn assert_nothing_left(src: &Client, dst: &Client, name: &str, tables: &[&str]) {
    let like = format!("pgmirror_{name}%");
    let q = "SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE $1";
    assert_eq!(scalar(src, q, &like).await, 0, "slot left behind");
    let q = "SELECT count(*) FROM pg_publication WHERE pubname LIKE $1";
    assert_eq!(scalar(src, q, &like).await, 0, "publication left behind");
    for t in tables {
        let q = "SELECT count(*) FROM pg_class WHERE relname = $1 AND relkind IN ('r', 'p')";
        assert_eq!(scalar(dst, q, t).await, 0, "target table {t} left behind");
    }
    let q = "SELECT count(*) FROM pg_namespace WHERE nspname = $1";
    assert_eq!(scalar(dst, q, "pgmirror").await, 0, "pgmirror schema left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_servers_fail_the_first_contact_at_once() {
    let cluster = pgcluster::shared();
    let (db, _client) = database(cluster, "reach").await;
    let target = cluster.url(&db);
    let closed = "postgres://postgres@127.0.0.1:1/app?connect_timeout=5";
    let no_db = cluster.url("no_such_database_here");
    for (what, source) in [("nothing listening", closed), ("no such database", no_db.as_str())] {
        let started = Instant::now();
        let out =
            pgmirror(&["mirror", "--source", source, "--target", &target, "--tables", "t"]).await;
        let line = error_line(what, &out);
        assert!(line.contains("connecting to the source"), "{what}: {line}");
        assert!(started.elapsed() < Duration::from_secs(30), "{what}: retried instead of failing");
    }
    let out = pgmirror(&["mirror", "--source", &target, "--target", closed, "--tables", "t"]).await;
    assert!(error_line("unreachable target", &out).contains("127.0.0.1:1"), "{}", out.2);

    // --retry-first-connect waits for the servers instead, and says so.
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgmirror"))
        .args(["mirror", "--source", closed, "--target", &target, "--tables", "t"])
        .arg("--retry-first-connect")
        .env("RUST_LOG", "warn")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("a warning within 30 s")
        .unwrap()
        .unwrap_or_default();
    assert!(line.contains("cannot reach the servers yet"), "{line}");
    assert!(!line.contains("disconnected"), "{line}");
    assert!(child.try_wait().unwrap().is_none(), "it keeps trying");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_start_leaves_nothing_behind() {
    // A primary that cannot decode: refused before anything is created.
    let primary =
        ClusterBuilder::new().fast_unsafe().setting("wal_level", "replica").start().unwrap();
    let (src_db, src) = database(&primary, "left").await;
    src.batch_execute("CREATE TABLE kept (id int PRIMARY KEY)").await.unwrap();
    let replica = pgcluster::shared();
    let (dst_db, dst) = database(replica, "left_dst").await;
    let name = pgcluster::unique_name("left");
    let out = pgmirror(&[
        "mirror",
        "--source",
        &primary.url(&src_db),
        "--target",
        &replica.url(&dst_db),
        "--tables",
        "kept",
        "--name",
        &name,
    ])
    .await;
    let line = error_line("wal_level = replica", &out);
    assert!(
        line.contains("wal_level") && line.contains("ALTER SYSTEM SET wal_level = logical"),
        "{line}"
    );
    assert_nothing_left(&src, &dst, &name, &["kept"]).await;

    // A failure after the publication, the target tables and the mirror's row were made: the
    // slot cannot be created under this name.
    let cluster = pgcluster::shared();
    let (src_db, src, dst_db, dst) = store_pair(cluster, cluster, &store::Scale::tiny()).await;
    let name = pgcluster::unique_name("left");
    let out = pgmirror(&[
        "mirror",
        "--source",
        &cluster.url(&src_db),
        "--target",
        &cluster.url(&dst_db),
        "--tables",
        &store::TABLES.join(","),
        "--name",
        &name,
        "--slot",
        "Not-A-Valid-Slot-Name",
    ])
    .await;
    assert!(error_line("invalid slot name", &out).contains("creating the slot"), "{}", out.2);
    assert_nothing_left(&src, &dst, &name, &store::TABLES).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_the_publication_without_ownership_names_the_fix() {
    let cluster = pgcluster::shared();
    let (src_db, src) = database(cluster, "pubown").await;
    let role = pgcluster::unique_name("rep");
    src.batch_execute(&format!(
        "CREATE TABLE owned_elsewhere (id int PRIMARY KEY); \
         CREATE ROLE {role} LOGIN REPLICATION; GRANT SELECT ON owned_elsewhere TO {role}"
    ))
    .await
    .unwrap();
    let (dst_db, dst) = database(cluster, "pubown_dst").await;
    let name = pgcluster::unique_name("pubown");
    let out = pgmirror(&[
        "mirror",
        "--source",
        &cluster.url_for(&role, None, &src_db),
        "--target",
        &cluster.url(&dst_db),
        "--tables",
        "owned_elsewhere",
        "--name",
        &name,
    ])
    .await;
    let line = error_line("no ownership", &out);
    assert!(
        line.contains(&format!(
            "CREATE PUBLICATION \"pgmirror_{name}\" FOR TABLE \"public\".\"owned_elsewhere\""
        )),
        "{line}"
    );
    assert!(line.contains(&format!("--publication pgmirror_{name} instead of --tables")), "{line}");
    assert_nothing_left(&src, &dst, &name, &["owned_elsewhere"]).await;
}

/// The README's least-privilege role: REPLICATION and SELECT on the tables, nothing on their
/// sequences. `check` names the grant; a running mirror warns at every sequence sync and
/// counts each failure, and syncs the sequences it can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequence_privileges_are_checked_and_every_failure_is_warned() {
    let cluster = pgcluster::shared();
    let (src_db, src, dst_db, dst) = store_pair(cluster, cluster, &store::Scale::tiny()).await;
    let role = pgcluster::unique_name("seqrep");
    let publication = pgcluster::unique_name("seqpub");
    src.batch_execute(&format!(
        "CREATE ROLE {role} LOGIN REPLICATION; \
         GRANT SELECT ON customers, products, orders, order_items TO {role}; \
         GRANT SELECT ON SEQUENCE orders_id_seq TO {role}; \
         CREATE PUBLICATION {publication} FOR TABLE customers, products, orders, order_items"
    ))
    .await
    .unwrap();
    let source = cluster.url_for(&role, None, &src_db);
    let selection = pgmirror::selection::TableSelection {
        publication: Some(publication.clone()),
        tables: None,
        exclude_tables: None,
    };
    let report = run_check(&CheckOptions {
        source: ConnConfig::parse(&source).unwrap(),
        target: Some(ConnConfig::parse(&cluster.url(&dst_db)).unwrap()),
        tables: Some(selection.clone()),
        name: "default".into(),
    })
    .await;
    let seq = report.get("sequence privileges").expect("the check ran");
    assert!(!seq.ok, "{}", report.render());
    let fix = seq.fix.as_deref().unwrap();
    assert!(fix.contains("GRANT SELECT ON SEQUENCE") && fix.contains("customers_id_seq"), "{fix}");
    assert!(fix.contains(&format!("TO \"{role}\"")) && !fix.contains("orders_id_seq"), "{fix}");

    let mut opts = store_mirror(cluster, &src_db, cluster, &dst_db);
    opts.source = ConnConfig::parse(&source).unwrap();
    opts.tables = selection;
    let metrics = opts.metrics.clone();
    let shutdown = pgmirror::shutdown::Shutdown::manual();
    let mut stop = shutdown.clone();
    let task = tokio::spawn(async move { pgmirror::mirror::run(&opts, &mut stop).await });
    // One failure per unreadable sequence (customers, products, order_items) at the copy and
    // at each sync, every second.
    wait_for(Duration::from_secs(60), "failures counted at several syncs", || async {
        errors_total(&metrics.render()) >= 9
    })
    .await;
    // The readable one is synced all the same.
    let want: i64 =
        src.query_one("SELECT last_value FROM orders_id_seq", &[]).await.unwrap().get(0);
    let got: i64 = dst.query_one("SELECT last_value FROM orders_id_seq", &[]).await.unwrap().get(0);
    assert_eq!(got, want);
    shutdown.trigger();
    task.await.unwrap().unwrap();
}

fn errors_total(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("pgmirror_errors_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_fails_a_row_filter_outside_the_replica_identity() {
    let cluster = pgcluster::shared();
    let (db, src) = database(cluster, "rowfilter").await;
    let (bad, good) = (pgcluster::unique_name("badpub"), pgcluster::unique_name("goodpub"));
    src.batch_execute(&format!(
        "CREATE TABLE events (id int PRIMARY KEY, region text, v int); \
         CREATE PUBLICATION {bad} FOR TABLE events WHERE (region = 'eu'); \
         CREATE PUBLICATION {good} FOR TABLE events WHERE (id > 10)"
    ))
    .await
    .unwrap();
    let check = |publication: String| {
        let source = ConnConfig::parse(&cluster.url(&db)).unwrap();
        async move {
            run_check(&CheckOptions {
                source,
                target: None,
                tables: Some(pgmirror::selection::TableSelection {
                    publication: Some(publication),
                    tables: None,
                    exclude_tables: None,
                }),
                name: "default".into(),
            })
            .await
        }
    };
    let report = check(bad).await;
    let rf = report.get("row filters").expect("the check ran");
    assert!(!rf.ok, "{}", report.render());
    assert!(rf.detail.contains("\"public\".\"events\" filters on \"region\""), "{}", rf.detail);
    assert!(
        rf.fix
            .as_deref()
            .unwrap()
            .contains("ALTER TABLE \"public\".\"events\" REPLICA IDENTITY FULL")
    );
    // PostgreSQL does refuse the update the check warned about.
    let err = src.execute("UPDATE events SET v = 1", &[]).await.unwrap_err();
    assert!(format!("{err:?}").contains("replica identity"), "{err:?}");
    let report = check(good).await;
    assert!(report.get("row filters").is_some_and(|c| c.ok), "{}", report.render());
}

/// Ctrl-C while the tables are copied: the mirror says what happens next, drops its slot and
/// exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_during_the_initial_copy_says_what_happens_next() {
    let cluster = pgcluster::shared();
    let (src_db, src, dst_db, dst) = store_pair(cluster, cluster, &store::Scale::tiny()).await;
    // The copy waits on a target table this test holds locked.
    store::create_schema(&dst).await.unwrap();
    let mut locker = cluster.connect(&dst_db).await.unwrap();
    let lock = locker.transaction().await.unwrap();
    // SHARE: no transaction id, so the slot's creation does not wait for this transaction.
    lock.batch_execute("LOCK TABLE order_items IN SHARE MODE").await.unwrap();
    let name = pgcluster::unique_name("ctrlc");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgmirror"))
        .args(["mirror", "--source", &cluster.url(&src_db), "--target", &cluster.url(&dst_db)])
        .args(["--tables", &store::TABLES.join(","), "--name", &name])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let slot = format!("pgmirror_{name}");
    wait_for(Duration::from_secs(30), "the copy to start", || async {
        scalar(&src, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", &slot).await
            == 1
    })
    .await;
    wait_for(Duration::from_secs(30), "the copy to wait for the locked table", || async {
        let waiting = "SELECT count(*) FROM pg_locks \
                       WHERE NOT granted AND relation = $1::text::regclass";
        scalar(&dst, waiting, "order_items").await > 0
    })
    .await;
    sigint(&child);
    let mut stderr = child.stderr.take().unwrap();
    let read = tokio::spawn(async move {
        let mut text = String::new();
        let _ = tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut text).await;
        text
    });
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    if status.is_err() {
        let _ = child.kill().await;
    }
    drop(lock);
    let err = read.await.unwrap();
    let status = status.unwrap_or_else(|_| panic!("stops within 30 s: {err}")).unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(err.contains("initial copy interrupted"), "{err}");
    assert!(err.contains("starts the copy over"), "{err}");
    assert_eq!(
        scalar(&src, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", &slot).await,
        0
    );
    // `drop` says what the tables hold: an unfinished copy, not a mirror.
    let out = pgmirror(&[
        "drop",
        "--source",
        &cluster.url(&src_db),
        "--target",
        &cluster.url(&dst_db),
        "--name",
        &name,
    ])
    .await;
    assert_eq!(out.0, 0, "{}{}", out.1, out.2);
    assert!(out.1.contains("hold an unfinished initial copy"), "{}", out.1);
}

fn sigint(child: &tokio::process::Child) {
    let pid = child.id().expect("running");
    let status =
        std::process::Command::new("kill").args(["-INT", &pid.to_string()]).status().unwrap();
    assert!(status.success());
}
