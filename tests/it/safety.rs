//! Nothing pgmirror runs may touch the source: a target that is the source's own database is
//! refused by every command, however the two connection strings spell it, before anything is
//! created or written; another database of the same server stays a legitimate target.

use std::time::Duration;

use pgcluster::Cluster;
use tokio_postgres::Client;

use crate::common::{database, wait_converged};

/// Runs the built `pgmirror` binary with a deadline; returns (exit code, stdout, stderr).
async fn pgmirror(args: &[&str]) -> (i32, String, String) {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgmirror"))
        .args(args)
        .env_remove("PGMIRROR_SOURCE")
        .env_remove("PGMIRROR_TARGET")
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .output();
    // Before the guard, `mirror` hung on its own lock: a hang is a failure, not a stuck test.
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

async fn scalar(client: &Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.expect(sql).get(0)
}

/// Every way of writing the same database: URL, `key=value`, `localhost`, the Unix socket, and
/// another role.
fn spellings(cluster: &Cluster, db: &str) -> Vec<String> {
    vec![
        cluster.url(db),
        format!("host=localhost port={} user=postgres dbname={db}", cluster.port()),
        format!(
            "host={} port={} user=postgres dbname={db}",
            cluster.socket_dir().display(),
            cluster.port()
        ),
        format!("postgres://guard_other_role@127.0.0.1:{}/{db}", cluster.port()),
    ]
}

/// A database with a table worth keeping.
async fn precious(cluster: &Cluster) -> (String, Client) {
    let (db, client) = database(cluster, "guard").await;
    client
        .batch_execute(
            "CREATE TABLE precious (id int PRIMARY KEY, v text); \
             INSERT INTO precious SELECT g, 'row ' || g FROM generate_series(1, 1000) g",
        )
        .await
        .unwrap();
    // A second role that reaches the same database (trust authentication).
    let _ = client.batch_execute("CREATE ROLE guard_other_role LOGIN SUPERUSER").await;
    (db, client)
}

/// Fails unless the run failed with one `error:` line saying the target is the source.
fn assert_refused(what: &str, (code, out, err): &(i32, String, String)) {
    assert_ne!(*code, 0, "{what} must fail: {out}{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "{what}: one error line: {err}");
    assert!(errors[0].contains("the source's own database"), "{what}: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_refuses_the_sources_own_database_however_spelled() {
    let cluster = pgcluster::shared();
    let (db, src) = precious(cluster).await;
    let source = cluster.url(&db);
    for (i, target) in spellings(cluster, &db).iter().enumerate() {
        let name = format!("guard{i}");
        let out = pgmirror(&[
            "mirror",
            "--source",
            &source,
            "--target",
            target,
            "--tables",
            "precious",
            "--truncate-target",
            "--name",
            &name,
        ])
        .await;
        assert_refused(&format!("mirror with target {target:?}"), &out);

        let out =
            pgmirror(&["check", "--source", &source, "--target", target, "--tables", "precious"])
                .await;
        assert_eq!(out.0, 1, "check must fail: {}{}", out.1, out.2);
        assert!(out.1.contains("✘ target is not the source"), "{}", out.1);
        assert!(
            !out.1.contains("--truncate-target"),
            "check suggests emptying the source: {}",
            out.1
        );

        let out =
            pgmirror(&["verify", "--source", &source, "--target", target, "--tables", "precious"])
                .await;
        assert_refused("verify", &out);
        let out =
            pgmirror(&["drop", "--source", &source, "--target", target, "--name", &name]).await;
        assert_refused("drop", &out);
    }
    // The source is untouched: its rows, and nothing created on it.
    assert_eq!(scalar(&src, "SELECT count(*) FROM precious").await, 1000);
    assert_eq!(
        scalar(
            &src,
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'pgmirror_guard%'"
        )
        .await,
        0
    );
    assert_eq!(
        scalar(&src, "SELECT count(*) FROM pg_publication WHERE pubname LIKE 'pgmirror_guard%'")
            .await,
        0
    );
    assert_eq!(
        scalar(&src, "SELECT count(*) FROM pg_namespace WHERE nspname = 'pgmirror'").await,
        0
    );
}

/// `replay` has no source to ask: the recording says which database it came from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_refuses_the_database_a_recording_was_made_from() {
    let cluster = pgcluster::shared();
    let (db, src) = precious(cluster).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("precious.pgmr");
    let slot = pgcluster::unique_name("guard_rec");
    let url = cluster.url(&db);
    let recorded = pgmirror(&[
        "record",
        "--source",
        &url,
        "--tables",
        "precious",
        "--slot",
        &slot,
        "--create-slot",
        "--out",
        file.to_str().unwrap(),
        "--duration",
        "1",
    ])
    .await;
    assert_eq!(recorded.0, 0, "{}{}", recorded.1, recorded.2);
    // A slot that does not exist: the command line names the flag that creates it.
    let missing = pgmirror(&[
        "record",
        "--source",
        &url,
        "--tables",
        "precious",
        "--slot",
        &format!("{slot}_missing"),
        "--out",
        dir.path().join("missing.pgmr").to_str().unwrap(),
    ])
    .await;
    assert_ne!(missing.0, 0, "{}{}", missing.1, missing.2);
    assert!(
        missing.2.contains("does not exist on the source; pass --create-slot"),
        "{}",
        missing.2
    );
    let out = pgmirror(&["replay", file.to_str().unwrap(), "--target", &url]).await;
    assert_ne!(out.0, 0, "{}{}", out.1, out.2);
    assert!(out.2.contains("--target is the database this recording was made from"), "{}", out.2);
    assert!(out.2.contains("point --target at another database"), "{}", out.2);
    assert_eq!(
        scalar(&src, "SELECT count(*) FROM pg_namespace WHERE nspname = 'pgmirror'").await,
        0
    );
    // Another database of the same server takes it.
    let (other, _client) = database(cluster, "guard_replay").await;
    let out = pgmirror(&["replay", file.to_str().unwrap(), "--target", &cluster.url(&other)]).await;
    assert_eq!(out.0, 0, "{}{}", out.1, out.2);
    src.execute("SELECT pg_drop_replication_slot($1)", &[&slot]).await.unwrap();
}

/// Another database of the source's own server is a legitimate target, `--truncate-target`
/// included: it empties the target's tables, never the source's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_database_of_the_same_server_is_mirrored() {
    let cluster = pgcluster::shared();
    let (src_db, src, dst_db, dst) =
        crate::common::store_pair(cluster, cluster, &store::Scale::tiny()).await;
    store::create_schema(&dst).await.unwrap();
    dst.execute("INSERT INTO customers (email, name) VALUES ('old@example.com', 'Old')", &[])
        .await
        .unwrap();
    let before = crate::common::fingerprints(&src).await;
    let mut opts = crate::common::store_mirror(cluster, &src_db, cluster, &dst_db);
    opts.truncate_target = true;
    let report = pgmirror::commands::check::run_check(&pgmirror::commands::check::CheckOptions {
        source: opts.source.clone(),
        target: Some(opts.target.clone()),
        tables: Some(opts.tables.clone()),
        name: "default".into(),
    })
    .await;
    assert!(report.get("target is not the source").is_some_and(|c| c.ok), "{}", report.render());
    let shutdown = pgmirror::shutdown::Shutdown::manual();
    let mut stop = shutdown.clone();
    let task = tokio::spawn(async move { pgmirror::mirror::run(&opts, &mut stop).await });
    wait_converged(&src, &dst, Duration::from_secs(60)).await;
    shutdown.trigger();
    task.await.unwrap().unwrap();
    assert_eq!(crate::common::fingerprints(&src).await, before, "the source changed");
}
