//! `pgmirror bench` end to end at a tiny scale, and record/replay of a short workload.

use std::process::Command;
use std::time::Duration;

use pgconn::ConnConfig;
use pgmirror::commands::record::{Recording, record};
use pgmirror::selection::TableSelection;
use pgmirror::shutdown::Shutdown;
use recording::{ReplayOptions, StopAt};

use crate::common::database;

#[test]
fn bench_tiny_workload_reports_every_contender_verified() {
    let out = Command::new(env!("CARGO_BIN_EXE_pgmirror"))
        .args(["bench", "--workload", "tiny", "--scale", "0.005", "--runs", "1", "--json"])
        .args(["--latency-samples", "3", "--timeout", "60", "--quiet"])
        .output()
        .expect("run pgmirror bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("JSON report");
    let workloads = report["workloads"].as_array().expect("workloads");
    assert_eq!(workloads.len(), 1);
    let tiny = &workloads[0];
    assert_eq!(tiny["workload"], "tiny");
    // 500 single-row transactions plus the two sentinel rows.
    assert_eq!(tiny["transactions"], 502);
    let contenders: Vec<&str> = tiny["contenders"]
        .as_array()
        .expect("contenders")
        .iter()
        .map(|c| {
            assert_eq!(c["verified"], true, "{c}");
            assert!(c["seconds"]["median"].as_f64().expect("seconds") > 0.0, "{c}");
            c["contender"].as_str().expect("name")
        })
        .collect();
    // pglogical takes part where it is installed; elsewhere the report says it was skipped.
    let notes: Vec<&str> =
        report["notes"].as_array().expect("notes").iter().map(|n| n.as_str().unwrap()).collect();
    let skipped = notes.iter().any(|n| n.starts_with("pglogical: skipped (install postgresql-"));
    let mut expected = vec!["native", "pg_recvlogical", "pgmirror"];
    if !skipped {
        expected.push("pglogical");
    }
    assert_eq!(contenders, expected, "{notes:?}");
    let pgmirror = &tiny["contenders"][2];
    assert!(pgmirror["peak_rss_mb"].as_f64().expect("rss") > 1.0);
    assert!(pgmirror["ratio_vs_native"].as_f64().expect("ratio") > 0.0);
    let latency = report["latency"].as_array().expect("latency");
    // Every contender but pg_recvlogical.
    assert_eq!(latency.len(), expected.len() - 1, "{latency:?}");
    // The CPU per sample of the processes on the way: the walsender and the target's
    // processes for each, pgmirror's own process for pgmirror alone.
    for l in latency {
        let cpu = &l["cpu_us"];
        assert!(cpu["walsender"].as_f64().is_some_and(|us| us > 0.0), "{l}");
        assert!(cpu["target"].as_f64().is_some_and(|us| us > 0.0), "{l}");
        let own = cpu["consumer"].as_f64();
        if l["contender"] == "pgmirror" {
            assert!(own.is_some_and(|us| us > 0.0), "{l}");
        } else {
            assert_eq!(own, None, "{l}");
        }
    }
    // Without --durable both clusters ran without fsync, and said so.
    assert_eq!(report["durable"], false);
    let clusters = report["clusters"].as_array().expect("clusters");
    assert_eq!(clusters.len(), 2);
    for c in clusters {
        assert_eq!((&c["fsync"], &c["synchronous_commit"]), (&"off".into(), &"off".into()), "{c}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_then_replay_reproduces_the_primary() {
    let cluster = pgcluster::shared();
    // The same deterministic rows on both sides: the target starts as the primary was when
    // the slot was created.
    let setup = "CREATE TABLE items (id bigint PRIMARY KEY, name text, qty int, tags text[], \
                                     price numeric(10,2), seen timestamptz);
                 INSERT INTO items SELECT i, 'item ' || i, i % 7, ARRAY['a', 'b' || i], i / 3.0, \
                     timestamptz '2024-01-01 00:00:00+00' + i * interval '1 hour' \
                     FROM generate_series(1, 50) AS i;";
    let (src_db, src) = database(cluster, "rec_src").await;
    src.batch_execute(setup).await.unwrap();
    let (dst_db, dst) = database(cluster, "rec_dst").await;
    dst.batch_execute(setup).await.unwrap();

    let slot = pgcluster::unique_name("rec_slot");
    let publication = pgcluster::unique_name("rec_pub");
    src.batch_execute(&format!("CREATE PUBLICATION {publication} FOR TABLE items")).await.unwrap();
    src.execute("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", &[&slot])
        .await
        .unwrap();
    // Four transactions (one simple query would be a single implicit transaction).
    for sql in [
        "INSERT INTO items SELECT i, 'new ' || i, i, '{}', 1.5, now() \
         FROM generate_series(51, 250) AS i",
        "UPDATE items SET qty = qty + 100, name = NULL WHERE id % 3 = 0",
        "DELETE FROM items WHERE id % 5 = 0",
        "BEGIN; UPDATE items SET tags = tags || 'x'::text WHERE id < 20; \
         DELETE FROM items WHERE id = 21; COMMIT",
    ] {
        src.batch_execute(sql).await.unwrap();
    }
    let end: String =
        src.query_one("SELECT pg_current_wal_insert_lsn()::text", &[]).await.unwrap().get(0);

    let dir = std::env::temp_dir().join(pgcluster::unique_name("rec"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("items.rec");
    let opts = Recording {
        source: ConnConfig::parse(&cluster.url(&src_db)).unwrap(),
        tables: TableSelection {
            publication: Some(publication),
            tables: None,
            exclude_tables: None,
        },
        slot: slot.clone(),
        create_slot: false,
        out: file.clone(),
        stop: StopAt {
            until_lsn: Some(end.parse().unwrap()),
            duration: Some(Duration::from_secs(60)),
            idle: None,
        },
        binary: true,
    };
    let summary = record(&opts, &mut Shutdown::manual()).await.expect("record");
    assert_eq!(summary.transactions, 4, "{summary:?}");
    assert!(summary.changes > 200, "{summary:?}");
    let end: pgoutput_decoder::Lsn = end.parse().unwrap();
    assert!(!summary.last_commit_end.is_zero() && summary.last_commit_end <= end, "{summary:?}");

    // Through the CLI, as a user would.
    let out = Command::new(env!("CARGO_BIN_EXE_pgmirror"))
        .arg("replay")
        .arg(&file)
        .args(["--target", &cluster.url(&dst_db), "--name", "r1", "--json"])
        .output()
        .expect("run pgmirror replay");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let replayed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON summary");
    assert_eq!(replayed["applied_txns"], 4, "{replayed}");
    assert_eq!(
        store::table_fingerprint(&src, "items").await.unwrap(),
        store::table_fingerprint(&dst, "items").await.unwrap()
    );

    // Replaying again under the same name applies nothing (exactly once via the progress row).
    let again = recording::replay(
        &file,
        &ReplayOptions {
            target: ConnConfig::parse(&cluster.url(&dst_db)).unwrap(),
            name: "r1".into(),
            create_tables: true,
            applier: applier::ApplierConfig::default(),
        },
    )
    .await
    .expect("second replay");
    assert_eq!((again.applied_txns, again.skipped_txns), (0, 4), "{again:?}");

    // Into an empty database, the recording creates its table and gives the same rows.
    let (fresh_db, fresh) = database(cluster, "rec_fresh").await;
    let out = Command::new(env!("CARGO_BIN_EXE_pgmirror"))
        .arg("replay")
        .arg(&file)
        .args(["--target", &cluster.url(&fresh_db)])
        .output()
        .expect("run pgmirror replay");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (rows, _) = store::table_fingerprint(&fresh, "items").await.unwrap();
    let inserted: i64 =
        src.query_one("SELECT count(*) FROM items WHERE id > 50", &[]).await.unwrap().get(0);
    assert_eq!(rows, inserted, "only the recorded inserts reach an empty table");
    let _ = std::fs::remove_dir_all(&dir);
}
