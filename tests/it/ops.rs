//! The operator commands `check`, `status`, `verify` and `drop`, against real clusters: called
//! in-process for their reports, and as the built binary for exit status and output.

use std::time::Duration;

use pgcluster::ClusterBuilder;
use pgconn::ConnConfig;
use pgmirror::commands::check::{CheckOptions, run_check};
use pgmirror::commands::drop::{DropOptions, Outcome, run_drop};
use pgmirror::commands::status::{StatusOptions, collect_status};
use pgmirror::commands::verify::{VerifyOptions, VerifyReport, run_verify};
use pgmirror::mirror::{self, MirrorOptions};
use pgmirror::selection::TableSelection;
use pgmirror::shutdown::Shutdown;
use tokio::task::JoinHandle;
use tokio_postgres::Client;

use crate::common::{database, store_mirror, store_pair, wait_converged};

/// Runs the built `pgmirror` binary; returns (exit code, stdout, stderr).
async fn pgmirror(args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgmirror"))
        .args(args)
        .env_remove("PGMIRROR_SOURCE")
        .env_remove("PGMIRROR_TARGET")
        .output()
        .await
        .expect("run pgmirror");
    (
        out.status.code().expect("exit code"),
        String::from_utf8(out.stdout).expect("utf-8 stdout"),
        String::from_utf8(out.stderr).expect("utf-8 stderr"),
    )
}

fn config(url: &str) -> ConnConfig {
    ConnConfig::parse(url).expect("connection string")
}

fn store_tables() -> TableSelection {
    TableSelection {
        publication: None,
        tables: Some(store::TABLES.iter().map(|t| (*t).to_owned()).collect()),
        exclude_tables: None,
    }
}

async fn count(client: &Client, sql: &str, name: &str) -> i64 {
    client.query_one(sql, &[&name]).await.expect(sql).get(0)
}

async fn slots(client: &Client, slot: &str) -> i64 {
    count(client, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", slot).await
}

async fn publications(client: &Client, publication: &str) -> i64 {
    count(client, "SELECT count(*) FROM pg_publication WHERE pubname = $1", publication).await
}

/// Starts `opts` in the background and waits for the initial copy to converge.
async fn start_mirror(
    opts: &MirrorOptions,
    src: &Client,
    dst: &Client,
) -> (Shutdown, JoinHandle<anyhow::Result<()>>) {
    let shutdown = Shutdown::manual();
    let mut stop = shutdown.clone();
    let run_opts = opts.clone();
    let task = tokio::spawn(async move { mirror::run(&run_opts, &mut stop).await });
    wait_converged(src, dst, Duration::from_secs(60)).await;
    (shutdown, task)
}

async fn stop_mirror(shutdown: Shutdown, task: JoinHandle<anyhow::Result<()>>) {
    shutdown.trigger();
    task.await.expect("mirror task").expect("mirror stops cleanly");
}

fn verify_opts(opts: &MirrorOptions) -> VerifyOptions {
    let mut v = VerifyOptions::new(opts.source.clone(), opts.target.clone());
    v.name = Some(opts.name.clone());
    // Small chunks so that differences are narrowed down within several ranges.
    v.chunk_rows = 7;
    v
}

fn table<'a>(report: &'a VerifyReport, name: &str) -> &'a pgmirror::commands::verify::TableVerdict {
    report.tables.iter().find(|t| t.table == name).unwrap_or_else(|| panic!("{name} verified"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_each_failure_and_its_fix() {
    // wal_level is cluster-wide and needs a restart: this primary is the test's own.
    let primary = ClusterBuilder::new()
        .fast_unsafe()
        .setting("wal_level", "replica")
        .start()
        .expect("start primary");
    let (db, admin) = database(&primary, "chk").await;
    let role = pgcluster::unique_name("plain");
    admin
        .batch_execute(&format!(
            "CREATE TABLE keyed (id int PRIMARY KEY, v text); \
             CREATE TABLE nokey (a int, b text); \
             CREATE ROLE {role} LOGIN; \
             GRANT SELECT ON keyed TO {role};"
        ))
        .await
        .unwrap();
    let url = primary.url_for(&role, None, &db);
    let opts = CheckOptions {
        source: config(&url),
        target: None,
        tables: Some(TableSelection {
            publication: None,
            tables: Some(vec!["keyed".into(), "nokey".into()]),
            exclude_tables: None,
        }),
        name: "default".into(),
    };
    let report = run_check(&opts).await;
    eprintln!("{}", report.render());
    assert!(!report.passed());

    let get = |name: &str| report.get(name).unwrap_or_else(|| panic!("check {name} ran"));
    let fix = |name: &str| get(name).fix.clone().unwrap_or_default();
    assert!(get("source connection").ok);
    assert!(get("tables").ok);
    assert!(get("replication slots").ok);
    assert!(get("wal senders").ok, "{:?}", get("wal senders"));
    assert!(!get("wal_level").ok);
    assert!(get("wal_level").detail.starts_with("replica"), "{:?}", get("wal_level"));
    assert!(fix("wal_level").contains("ALTER SYSTEM SET wal_level = logical"));
    assert!(fix("wal_level").contains("restart"));
    assert!(!get("replication role").ok);
    assert_eq!(fix("replication role"), format!("ALTER ROLE \"{role}\" WITH REPLICATION;"));
    assert!(!get("replication connection").ok, "{:?}", get("replication connection"));
    assert!(fix("replication connection").contains("REPLICATION"));
    assert!(!get("replica identity").ok);
    assert!(get("replica identity").detail.contains("\"public\".\"nokey\""));
    assert!(!get("replica identity").detail.contains("keyed\""));
    assert!(
        fix("replica identity").contains("ALTER TABLE \"public\".\"nokey\" REPLICA IDENTITY FULL;")
    );
    assert!(!get("select privilege").ok);
    assert_eq!(
        fix("select privilege"),
        format!("GRANT SELECT ON \"public\".\"nokey\" TO \"{role}\";")
    );
    assert!(!get("publication").ok, "{role} owns no table: {:?}", get("publication"));

    // Applying the fixes makes those checks pass.
    admin
        .batch_execute(&format!(
            "ALTER ROLE {role} WITH REPLICATION; GRANT SELECT ON nokey TO {role}; \
             ALTER TABLE nokey REPLICA IDENTITY FULL"
        ))
        .await
        .unwrap();
    let report = run_check(&opts).await;
    for name in
        ["replication role", "replication connection", "replica identity", "select privilege"]
    {
        assert!(report.get(name).unwrap().ok, "{}", report.render());
    }
    assert!(!report.get("wal_level").unwrap().ok);

    // The binary: non-zero exit, one line per check, the fix under the failure; --json parses.
    let tables = "--tables=keyed,nokey";
    let (code, out, err) = pgmirror(&["check", "--source", &url, tables]).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("✘ wal_level"), "{out}");
    assert!(out.contains("fix: ALTER SYSTEM SET wal_level = logical"), "{out}");
    assert!(out.contains("✔ replication role"), "{out}");
    let (code, out, err) = pgmirror(&["check", "--source", &url, tables, "--json"]).await;
    assert_eq!(code, 1, "{out}{err}");
    let json: serde_json::Value = serde_json::from_str(&out).expect("JSON output");
    let checks = json.as_array().expect("an array");
    let wal = checks.iter().find(|c| c["check"] == "wal_level").expect("wal_level");
    assert_eq!(wal["ok"], false);
    assert!(wal["fix"].as_str().unwrap().contains("wal_level = logical"));
    assert!(checks.iter().all(|c| c["detail"].is_string() && c["ok"].is_boolean()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_passes_on_a_good_setup_and_creates_nothing() {
    let cluster = pgcluster::shared();
    let (src_db, _src, dst_db, dst) = store_pair(cluster, cluster, &store::Scale::tiny()).await;
    let opts = CheckOptions {
        source: config(&cluster.url(&src_db)),
        target: Some(config(&cluster.url(&dst_db))),
        tables: Some(store_tables()),
        name: "default".into(),
    };
    let report = run_check(&opts).await;
    eprintln!("{}", report.render());
    assert!(report.passed(), "{}", report.render());
    let target_tables = report.get("target tables").unwrap();
    assert!(target_tables.detail.starts_with("0 exist and match, 4 will be created"));
    assert!(report.get("target writable").unwrap().ok);
    // The shared cluster keeps WAL for lagging slots without limit: a warning, not a failure.
    let retention = report.get("wal retention").unwrap();
    assert!(retention.ok && retention.warning, "{retention:?}");
    assert!(retention.fix.as_deref().unwrap().contains("max_slot_wal_keep_size"));
    let created: bool =
        dst.query_one("SELECT to_regnamespace('pgmirror') IS NOT NULL", &[]).await.unwrap().get(0);
    assert!(!created, "check created the pgmirror schema");

    let (code, out, err) = pgmirror(&[
        "check",
        "--source",
        &cluster.url(&src_db),
        "--target",
        &cluster.url(&dst_db),
        "--tables",
        &store::TABLES.join(","),
    ])
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("checks passed"), "{out}");

    // An incompatible target table fails the check, naming the table and the column.
    store::create_schema(&dst).await.unwrap();
    dst.batch_execute("ALTER TABLE orders ALTER COLUMN note TYPE integer USING NULL")
        .await
        .unwrap();
    let report = run_check(&opts).await;
    let target_tables = report.get("target tables").unwrap();
    assert!(!target_tables.ok);
    let fix = target_tables.fix.as_deref().unwrap();
    assert!(fix.contains("\"note\"") && fix.contains("orders"), "{fix}");
}

/// A REPLICA IDENTITY FULL table without an index on the target is a warning naming it (each
/// change would scan the whole table there); one with an index passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_warns_of_full_identity_tables_without_a_target_index() {
    let cluster = pgcluster::shared();
    let ddl = "CREATE TABLE bag (a int, b text); ALTER TABLE bag REPLICA IDENTITY FULL; \
               CREATE TABLE ibag (a int, b text); ALTER TABLE ibag REPLICA IDENTITY FULL;";
    let (src_db, src) = database(cluster, "chk_full_src").await;
    src.batch_execute(ddl).await.unwrap();
    let (dst_db, dst) = database(cluster, "chk_full_dst").await;
    dst.batch_execute(ddl).await.unwrap();
    dst.batch_execute("CREATE INDEX ON ibag (a)").await.unwrap();
    let opts = CheckOptions {
        source: config(&cluster.url(&src_db)),
        target: Some(config(&cluster.url(&dst_db))),
        tables: Some(TableSelection {
            publication: None,
            tables: Some(vec!["bag".into(), "ibag".into()]),
            exclude_tables: None,
        }),
        name: "default".into(),
    };
    let report = run_check(&opts).await;
    eprintln!("{}", report.render());
    let lookups = report.get("row lookups").expect("row lookups checked");
    assert!(lookups.ok && lookups.warning, "{lookups:?}");
    assert!(lookups.detail.contains("\"public\".\"bag\""), "{lookups:?}");
    assert!(!lookups.detail.contains("ibag"), "{lookups:?}");
    assert!(lookups.fix.as_deref().unwrap().contains("CREATE INDEX ON \"public\".\"bag\""));

    dst.batch_execute("CREATE INDEX ON bag (b)").await.unwrap();
    let lookups = run_check(&opts).await.get("row lookups").cloned().unwrap();
    assert!(lookups.ok && !lookups.warning, "{lookups:?}");
}

/// A DEFERRABLE unique constraint on the target is a warning naming it, with the statement
/// that makes it immediate: the apply session's `session_replication_role = replica` skips
/// its recheck. After that fix the check passes quietly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_warns_of_deferrable_unique_constraints_on_the_target() {
    let cluster = pgcluster::shared();
    let ddl = "CREATE TABLE dk (id int PRIMARY KEY, \"Code\" int)";
    let (src_db, src) = database(cluster, "chk_defer_src").await;
    src.batch_execute(ddl).await.unwrap();
    let (dst_db, dst) = database(cluster, "chk_defer_dst").await;
    dst.batch_execute(ddl).await.unwrap();
    dst.batch_execute(
        "ALTER TABLE dk ADD CONSTRAINT \"dk Code\" UNIQUE (\"Code\") DEFERRABLE INITIALLY DEFERRED",
    )
    .await
    .unwrap();
    let opts = CheckOptions {
        source: config(&cluster.url(&src_db)),
        target: Some(config(&cluster.url(&dst_db))),
        tables: Some(TableSelection {
            publication: None,
            tables: Some(vec!["dk".into()]),
            exclude_tables: None,
        }),
        name: "default".into(),
    };
    let report = run_check(&opts).await;
    eprintln!("{}", report.render());
    let deferrable = report.get("deferrable constraints").expect("deferrable constraints checked");
    assert!(deferrable.ok && deferrable.warning, "{deferrable:?}");
    assert!(deferrable.detail.contains("\"public\".\"dk\".\"dk Code\""), "{deferrable:?}");
    let fix = deferrable.fix.as_deref().unwrap().strip_prefix("on the target: ").unwrap();
    assert_eq!(
        fix,
        "ALTER TABLE \"public\".\"dk\" DROP CONSTRAINT \"dk Code\", \
         ADD CONSTRAINT \"dk Code\" UNIQUE (\"Code\");"
    );

    // The fix as printed works, and then there is nothing to say.
    dst.batch_execute(fix).await.unwrap();
    assert!(run_check(&opts).await.get("deferrable constraints").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_verify_and_drop_on_a_running_mirror() {
    let cluster = pgcluster::shared();
    let (src_db, src, dst_db, dst) = store_pair(cluster, cluster, &store::Scale::tiny()).await;
    let opts = store_mirror(cluster, &src_db, cluster, &dst_db);
    let (source_url, target_url) = (cluster.url(&src_db), cluster.url(&dst_db));
    let (shutdown, task) = start_mirror(&opts, &src, &dst).await;

    // A write just before verify: verify waits for the mirror to apply it.
    src.execute("INSERT INTO customers (email, name) VALUES ('late@example.com', 'Late')", &[])
        .await
        .unwrap();
    let report = run_verify(&verify_opts(&opts)).await.expect("verify");
    eprint!("{}", report.render());
    assert!(report.synced, "{}", report.note);
    assert!(report.all_match(), "{}", report.render());
    assert_eq!(report.tables.len(), 4);
    let customers = table(&report, "public.customers");
    assert_eq!((customers.source_rows, customers.target_rows), (21, Some(21)));
    assert!(customers.chunks >= 3, "chunked: {customers:?}");

    // Status in-process.
    let status_opts = StatusOptions {
        source: opts.source.clone(),
        target: Some(opts.target.clone()),
        name: Some(opts.name.clone()),
        slot: None,
        max_lag: None,
    };
    let status = collect_status(&status_opts).await.expect("status");
    eprint!("{}", status.render());
    assert_eq!(status.slot, opts.slot_name());
    assert_eq!(status.state.as_deref(), Some("streaming"));
    let slot = status.slot_status.as_ref().expect("slot exists");
    assert!(slot.active);
    assert!(slot.active_pid.is_some());
    assert_eq!(slot.application_name.as_deref(), Some("pgmirror"));
    assert!(slot.confirmed_flush_lsn.is_some() && slot.restart_lsn.is_some());
    assert!(slot.retained_wal_bytes.unwrap() >= 0);
    assert!(status.lag_bytes.is_some());
    let progress = status.target.as_ref().expect("progress row");
    assert!(progress.commit_time.is_some(), "a transaction was applied: {progress:?}");
    assert!(status.lag_seconds.is_some());
    assert_eq!(status.tables.len(), 4);
    for t in &status.tables {
        assert_eq!(Some(t.source_rows), t.target_rows, "{t:?}");
    }

    // A target table held locked (as the initial copy holds it) gets no count, and status
    // does not wait for the lock.
    let mut locker = cluster.connect(&dst_db).await.unwrap();
    let tx = locker.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE products IN ACCESS EXCLUSIVE MODE").await.unwrap();
    let status = collect_status(&status_opts).await.expect("status beside a locked table");
    for t in &status.tables {
        let locked = t.table == "public.products";
        assert_eq!(t.target_rows.is_none(), locked, "{t:?}");
    }
    tx.rollback().await.unwrap();

    // Status from the binary, as JSON; the mirror is found without --name (the only one).
    let (code, out, err) =
        pgmirror(&["status", "--source", &source_url, "--target", &target_url, "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).expect("JSON status");
    assert_eq!(json["mirror"], opts.name.as_str());
    assert_eq!(json["slot_status"]["active"], true);
    assert_eq!(json["slot_status"]["application_name"], "pgmirror");
    assert!(json["target"]["end_lsn"].is_string());
    let customers = json["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == "public.customers")
        .expect("customers counted");
    assert_eq!(customers["source_rows"], 21);
    assert_eq!(customers["target_rows"], 21);

    // --watch shows the status again and again until Ctrl-C, then exits cleanly; through a
    // pipe one report after another, without a terminal's control codes.
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgmirror"))
        .args(["status", "--source", &source_url, "--target", &target_url, "--watch", "1"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start status --watch");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let pid = child.id().expect("running").to_string();
    let sent = std::process::Command::new("kill").args(["-INT", &pid]).status().unwrap();
    assert!(sent.success());
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("status --watch stops on SIGINT")
        .unwrap();
    assert!(out.status.success(), "{:?}", out.status);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.matches("slot state   active").count() >= 2, "refreshed: {text}");
    assert!(!text.contains('\x1b') && !text.contains("Ctrl-C"), "{text}");

    // Rows changed on the target behind the mirror's back.
    dst.batch_execute(
        "UPDATE customers SET name = 'tampered' WHERE id = 3; \
         DELETE FROM order_items WHERE order_id = 5 AND line_no = 1; \
         INSERT INTO customers (id, email, name) VALUES (100000, 'extra@example.com', 'Extra')",
    )
    .await
    .unwrap();
    let report = run_verify(&verify_opts(&opts)).await.expect("verify");
    eprint!("{}", report.render());
    assert!(report.synced, "{}", report.note);
    assert!(!report.all_match());
    let customers = table(&report, "public.customers");
    assert!(!customers.matches);
    assert_eq!((customers.source_rows, customers.target_rows), (21, Some(22)));
    let kinds: Vec<(&str, &str)> =
        customers.diffs.iter().map(|d| (d.key.as_str(), d.kind)).collect();
    // In key order (numeric, as the key compares), not text order.
    assert_eq!(kinds, [("id=3", "differs"), ("id=100000", "extra_on_target")]);
    let items = table(&report, "public.order_items");
    let kinds: Vec<(&str, &str)> = items.diffs.iter().map(|d| (d.key.as_str(), d.kind)).collect();
    assert_eq!(kinds, [("order_id=5, line_no=1", "missing_on_target")]);
    assert!(table(&report, "public.products").matches);
    assert!(table(&report, "public.orders").matches);

    // The binary: exit status 1 and the keys in the output; --max-diffs limits the list.
    let (code, out, err) = pgmirror(&[
        "verify",
        "--source",
        &source_url,
        "--target",
        &target_url,
        "--name",
        &opts.name,
        "--max-diffs",
        "1",
    ])
    .await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("✘ public.customers"), "{out}");
    assert!(out.contains("differs            id=3\n"), "{out}");
    assert!(!out.contains("id=100000"), "limited to one key: {out}");
    assert!(out.contains("raise --max-diffs"), "{out}");
    assert!(out.contains("missing on target  order_id=5, line_no=1"), "{out}");
    assert!(out.contains("✔ public.orders"), "{out}");

    // Drop refuses while the mirror streams from the slot, and removes nothing.
    let drop_opts = DropOptions {
        source: opts.source.clone(),
        target: Some(opts.target.clone()),
        name: Some(opts.name.clone()),
        slot: None,
        wait: false,
        force: false,
    };
    let err = run_drop(&drop_opts).await.expect_err("slot is active");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("is active") && msg.contains("pgmirror") && msg.contains("--wait"),
        "{msg}"
    );
    assert_eq!(slots(&src, &opts.slot_name()).await, 1);

    stop_mirror(shutdown, task).await;
    let report = run_drop(&drop_opts).await.expect("drop");
    eprint!("{}", report.render());
    let publication = format!("pgmirror_{}", opts.name);
    assert_eq!(report.get("slot").unwrap().outcome, Outcome::Removed);
    assert_eq!(report.get("publication").unwrap().outcome, Outcome::Removed);
    assert_eq!(report.get("mirror row").unwrap().outcome, Outcome::Removed);
    assert_eq!(report.get("progress row").unwrap().outcome, Outcome::Removed);
    let kept = report.get("target tables").unwrap();
    assert_eq!(kept.outcome, Outcome::Kept);
    assert!(
        kept.reason.contains("public.customers") && kept.reason.contains("keep the mirrored rows"),
        "{kept:?}"
    );
    assert_eq!(
        report.get("schema").map(|a| a.outcome),
        Some(Outcome::Removed),
        "{}",
        report.render()
    );
    assert_eq!(slots(&src, &opts.slot_name()).await, 0);
    assert_eq!(publications(&src, &publication).await, 0);
    // The mirror was the target's only one: pgmirror's schema, its rows included, is gone.
    assert_eq!(
        count(&dst, "SELECT count(*) FROM pg_namespace WHERE nspname = $1", "pgmirror").await,
        0
    );
    let rows: i64 = dst.query_one("SELECT count(*) FROM customers", &[]).await.unwrap().get(0);
    assert_eq!(rows, 22, "the mirrored rows stay");

    // Nothing left to show, and a second drop finds nothing.
    let status = collect_status(&status_opts).await.expect("status");
    assert!(status.slot_status.is_none());
    assert!(!status.healthy);
    assert!(status.problems.iter().any(|n| n.contains("does not exist")), "{:?}", status.problems);
    let (code, out, err) =
        pgmirror(&["drop", "--source", &source_url, "--target", &target_url, "--name", &opts.name])
            .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("absent  slot \"{}\"", opts.slot_name())), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_keeps_what_pgmirror_did_not_create() {
    let cluster = pgcluster::shared();
    let (src_db, src, dst_db, dst) = store_pair(cluster, cluster, &store::Scale::tiny()).await;
    let publication = pgcluster::unique_name("own_pub");
    src.batch_execute(&format!(
        "CREATE PUBLICATION {publication} FOR TABLE customers, products, orders, order_items"
    ))
    .await
    .unwrap();
    let mut opts = store_mirror(cluster, &src_db, cluster, &dst_db);
    opts.tables = TableSelection {
        publication: Some(publication.clone()),
        tables: None,
        exclude_tables: None,
    };
    let (shutdown, task) = start_mirror(&opts, &src, &dst).await;

    // verify by publication finds the mirror streaming it, and waits for it.
    let mut v = VerifyOptions::new(opts.source.clone(), opts.target.clone());
    v.tables = Some(opts.tables.clone());
    let report = run_verify(&v).await.expect("verify");
    assert_eq!(report.mirror.as_deref(), Some(opts.name.as_str()), "{}", report.note);
    assert!(report.synced && report.all_match(), "{}", report.render());
    stop_mirror(shutdown, task).await;

    let report = run_drop(&DropOptions {
        source: opts.source.clone(),
        target: Some(opts.target.clone()),
        name: Some(opts.name.clone()),
        slot: None,
        wait: false,
        force: false,
    })
    .await
    .expect("drop");
    eprint!("{}", report.render());
    assert_eq!(report.get("slot").unwrap().outcome, Outcome::Removed);
    let kept = report.get("publication").unwrap();
    assert_eq!(kept.outcome, Outcome::Kept);
    assert!(kept.reason.contains("did not create"), "{kept:?}");
    assert_eq!(slots(&src, &opts.slot_name()).await, 0);
    assert_eq!(publications(&src, &publication).await, 1, "the given publication stays");

    // Without --target nothing says who made a slot not named pgmirror_*: --force needed.
    let other = pgcluster::unique_name("other_slot");
    src.execute("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", &[&other])
        .await
        .unwrap();
    let mut drop_other = DropOptions {
        source: opts.source.clone(),
        target: None,
        name: None,
        slot: Some(other.clone()),
        wait: false,
        force: false,
    };
    let err = run_drop(&drop_other).await.expect_err("not pgmirror's");
    assert!(format!("{err:#}").contains("--force"), "{err:#}");
    assert_eq!(slots(&src, &other).await, 1);
    let source_url = cluster.url(&src_db);
    let (code, _, err) = pgmirror(&["drop", "--source", &source_url, "--slot", &other]).await;
    assert_eq!(code, 1);
    assert!(err.contains("--force"), "{err}");
    drop_other.force = true;
    let report = run_drop(&drop_other).await.expect("forced drop");
    assert_eq!(report.get("slot").unwrap().outcome, Outcome::Removed);
    assert_eq!(slots(&src, &other).await, 0);
}
