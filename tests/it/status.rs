//! `pgmirror status` as people use it: through a pipe, as a health check, with publication
//! row filters, and as a role that may not see everything in `pg_stat_replication`.

use std::process::Stdio;
use std::time::Duration;

use pgconn::ConnConfig;
use pgmirror::commands::status::{StatusOptions, collect_status};

use crate::common::{database, kill, spawn_mirror, store_pair, wait_converged, wait_for};

/// Runs the built `pgmirror status` with `args`; returns (exit code, stdout, stderr).
async fn status(args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgmirror"))
        .arg("status")
        .args(args)
        .env_remove("PGMIRROR_SOURCE")
        .env_remove("PGMIRROR_TARGET")
        .output()
        .await
        .expect("run pgmirror status");
    (
        out.status.code().expect("exit code"),
        String::from_utf8(out.stdout).expect("utf-8 stdout"),
        String::from_utf8(out.stderr).expect("utf-8 stderr"),
    )
}

/// [`status`] again until `done(exit code)` or 30 s pass; the last outcome.
async fn status_until(args: &[&str], done: impl Fn(i32) -> bool) -> (i32, String, String) {
    let start = std::time::Instant::now();
    loop {
        let out = status(args).await;
        if done(out.0) || start.elapsed() > Duration::from_secs(30) {
            return out;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn options(source: &str, target: Option<&str>, name: &str) -> StatusOptions {
    StatusOptions {
        source: ConnConfig::parse(source).unwrap(),
        target: target.map(|t| ConnConfig::parse(t).unwrap()),
        name: Some(name.to_owned()),
        slot: None,
        max_lag: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_through_a_pipe_writes_json_lines_and_stops_quietly_on_ctrl_c() {
    let cluster = pgcluster::shared();
    let (db, _client) = database(cluster, "watch").await;
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgmirror"))
        .args(["status", "--source", &cluster.url(&db), "--slot", "pgmirror_nothing_here"])
        .args(["--watch", "1", "--json"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start status --watch");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let pid = child.id().expect("running").to_string();
    assert!(std::process::Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("status --watch stops on SIGINT")
        .unwrap();
    let (stdout, stderr) =
        (String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap());
    // Exits 0 although the slot it shows is missing: --watch is a view, not a check.
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("finishing the current transaction"), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines.len() >= 2, "a line per refresh: {stdout:?}");
    for line in lines {
        let json: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        assert_eq!(json["slot"], "pgmirror_nothing_here", "{line}");
        assert_eq!(json["healthy"], false, "{line}");
    }
}

/// A publication row filter (PostgreSQL 15+) leaves rows out of the mirror: `status` counts
/// what it lets through, as `verify` compares.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_counts_honour_publication_row_filters() {
    let cluster = pgcluster::shared();
    let (src_db, src) = database(cluster, "rfsrc").await;
    let (dst_db, dst) = database(cluster, "rfdst").await;
    let name = pgcluster::unique_name("rf");
    src.batch_execute(&format!(
        "CREATE TABLE t (id int PRIMARY KEY, v text); \
         INSERT INTO t SELECT g, 'v' FROM generate_series(1, 3000) g; \
         CREATE TABLE plain (id int PRIMARY KEY); INSERT INTO plain VALUES (1), (2); \
         CREATE PUBLICATION pgmirror_{name} FOR TABLE t WHERE (id > 1499), plain"
    ))
    .await
    .unwrap();
    // What a mirror of that publication holds.
    dst.batch_execute(
        "CREATE TABLE t (id int PRIMARY KEY, v text); \
         INSERT INTO t SELECT g, 'v' FROM generate_series(1500, 3000) g; \
         CREATE TABLE plain (id int PRIMARY KEY); INSERT INTO plain VALUES (1), (2);",
    )
    .await
    .unwrap();
    let opts = options(&cluster.url(&src_db), Some(&cluster.url(&dst_db)), &name);
    let status = collect_status(&opts).await.expect("status");
    let text = status.render();
    eprint!("{text}");
    let t = status.tables.iter().find(|t| t.table == "public.t").expect("t counted");
    assert_eq!((t.source_rows, t.target_rows), (1501, Some(1501)), "{text}");
    assert_eq!(t.row_filter.as_deref(), Some("(id > 1499)"));
    let plain = status.tables.iter().find(|t| t.table == "public.plain").expect("plain");
    assert_eq!(
        (plain.source_rows, plain.target_rows, plain.row_filter.as_deref()),
        (2, Some(2), None)
    );
    assert!(!text.contains('≠'), "{text}");
    assert!(text.contains("WHERE (id > 1499)"), "{text}");
}

/// The exit status tells a healthy mirror from a missing, inactive or lagging one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_status_is_a_health_check() {
    let cluster = pgcluster::shared();
    let (src_db, src, dst_db, dst) = store_pair(cluster, cluster, &store::Scale::tiny()).await;
    let (source, target) = (cluster.url(&src_db), cluster.url(&dst_db));
    let name = pgcluster::unique_name("health");
    let mut mirror = spawn_mirror(&source, &target, &name);
    wait_converged(&src, &dst, Duration::from_secs(60)).await;
    let base = ["--source", source.as_str(), "--target", target.as_str(), "--name", name.as_str()];
    let with = |extra: &'static [&'static str]| [&base[..], extra].concat();

    let out = status_until(&with(&["--max-lag", "1h"]), |code| code == 0).await;
    assert_eq!(out.0, 0, "{}{}", out.1, out.2);
    assert!(out.1.contains("health       healthy\n"), "{}", out.1);

    // A change the mirror cannot apply (its table is locked on the target) ages.
    let mut locker = cluster.connect(&dst_db).await.unwrap();
    let tx = locker.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE customers IN ACCESS EXCLUSIVE MODE").await.unwrap();
    src.execute("INSERT INTO customers (email, name) VALUES ('h@example.com', 'H')", &[])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let (code, stdout, _) = status(&with(&["--max-lag", "1s"])).await;
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("health       UNHEALTHY\n"), "{stdout}");
    assert!(stdout.contains("is over --max-lag 1 s"), "{stdout}");
    let (code, stdout, _) = status(&with(&["--max-lag", "1B", "--json"])).await;
    assert_eq!(code, 1, "{stdout}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["healthy"], false);
    assert!(json["problems"][0].as_str().unwrap().contains("is over --max-lag 1 B"), "{json}");
    assert!(json["lag_seconds"].as_f64().unwrap() >= 1.0, "{json}");
    let (code, stdout, _) = status(&with(&["--max-lag", "10m"])).await;
    assert_eq!(code, 0, "{stdout}");
    tx.rollback().await.unwrap();
    wait_converged(&src, &dst, Duration::from_secs(30)).await;

    // No pgmirror connected.
    kill(&mut mirror);
    let out = status_until(&with(&[]), |code| code != 0).await;
    assert_eq!(out.0, 1, "{}{}", out.1, out.2);
    assert!(out.1.contains("is inactive: no pgmirror is connected"), "{}", out.1);

    // The slot gone.
    let slot = format!("pgmirror_{name}");
    src.execute("SELECT pg_drop_replication_slot($1)", &[&slot]).await.unwrap();
    let (code, stdout, _) = status(&with(&[])).await;
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("does not exist on the source"), "{stdout}");

    let (code, _, stderr) = status(&with(&["--max-lag", "5"])).await;
    assert_eq!(code, 2, "clap's usage error: {stderr}");
    assert!(stderr.contains("--max-lag") && stderr.contains("30s"), "{stderr}");
}

/// A role without pg_read_all_stats sees "?" for the consumer's address and state: status
/// says what that means and the grant that shows them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hidden_replication_details_are_explained() {
    let cluster = pgcluster::shared();
    let (src_db, src, dst_db, dst) = store_pair(cluster, cluster, &store::Scale::tiny()).await;
    let name = pgcluster::unique_name("hidden");
    let _mirror = spawn_mirror(&cluster.url(&src_db), &cluster.url(&dst_db), &name);
    wait_converged(&src, &dst, Duration::from_secs(60)).await;
    let slot = format!("pgmirror_{name}");
    wait_for(Duration::from_secs(30), "the mirror streaming", || async {
        let sql = "SELECT active FROM pg_replication_slots WHERE slot_name = $1";
        src.query_one(sql, &[&slot]).await.is_ok_and(|r| r.get(0))
    })
    .await;
    let role = pgcluster::unique_name("watcher");
    src.batch_execute(&format!(
        "CREATE ROLE {role} LOGIN; GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role};"
    ))
    .await
    .unwrap();
    let as_role = cluster.url_for(&role, None, &src_db);

    let hidden = collect_status(&options(&as_role, None, &name)).await.expect("status");
    let text = hidden.render();
    eprint!("{text}");
    let slot = hidden.slot_status.as_ref().expect("slot");
    assert!(slot.active && !slot.details_visible, "{slot:?}");
    assert!(text.contains(" from ? (?)\n"), "not taken for a local socket: {text}");
    assert!(text.contains(&format!("GRANT pg_read_all_stats TO \"{role}\";")), "{text}");
    assert!(text.contains("note: \"?\" = hidden from role"), "{text}");
    assert_eq!(hidden.lag_seconds, None);

    src.batch_execute(&format!("GRANT pg_read_all_stats TO {role}")).await.unwrap();
    let shown = collect_status(&options(&as_role, None, &name)).await.expect("status");
    let text = shown.render();
    let slot = shown.slot_status.as_ref().expect("slot");
    assert!(slot.details_visible, "{slot:?}");
    assert_eq!(slot.client_addr.as_deref(), Some("127.0.0.1"), "{text}");
    // A loaded machine can show the walsender still catching up: either way, now visible.
    assert!(matches!(slot.state.as_deref(), Some("streaming" | "catchup")), "{text}");
    assert!(!text.contains("pg_read_all_stats"), "{text}");
    assert!(shown.lag_seconds.is_some());
}
