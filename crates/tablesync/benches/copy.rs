//! Initial-copy throughput on a throwaway local cluster (source and target databases on
//! the same server, so both sides share the machine's cores).
//!
//! `cargo bench -p tablesync --bench copy` runs it; `TABLESYNC_BENCH_ROWS` (default
//! 1,000,000) sets the row count of the single-table case, and the three-table case uses a
//! third of it per table. Under `cargo test` it only checks that it builds.

use std::time::{Duration, Instant};

use tablesync::{CopyFormat, CopyOptions, NoTlsConnector, QualifiedName, TargetOptions};

const RUNS: usize = 5;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("copy bench: run with `cargo bench -p tablesync --bench copy`");
        return;
    }
    let rows: i64 = std::env::var("TABLESYNC_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(run(rows));
}

async fn run(rows: i64) {
    let cluster = pgcluster::ClusterBuilder::new()
        .setting("max_wal_size", "4GB")
        .setting("autovacuum", "off")
        .start()
        .expect("start cluster");
    cluster.create_database("src").await.unwrap();
    cluster.create_database("dst").await.unwrap();
    let src = cluster.connect("src").await.unwrap();
    let dst = cluster.connect("dst").await.unwrap();
    let third = rows / 3;
    for (name, n) in [("one", rows), ("a", third), ("b", third), ("c", third)] {
        src.batch_execute(&format!(
            "CREATE TABLE {name} (id bigint PRIMARY KEY, qty integer NOT NULL, label text, \
             at timestamptz NOT NULL, price numeric(12,2), flag boolean);
             INSERT INTO {name} SELECT i, i % 1000, 'label ' || md5(i::text), \
               timestamptz '2024-01-01' + i * interval '1 second', (i % 10000) / 100.0, i % 2 = 0 \
             FROM generate_series(1, {n}) i;
             ANALYZE {name};"
        ))
        .await
        .unwrap();
    }
    let source = NoTlsConnector::from_url(&cluster.url("src")).unwrap();
    let target = NoTlsConnector::from_url(&cluster.url("dst")).unwrap();
    let one =
        tablesync::resolve_tables(&src, &[QualifiedName::parse("one").unwrap()]).await.unwrap();
    let three = tablesync::resolve_tables(&src, &QualifiedName::parse_list("a,b,c").unwrap())
        .await
        .unwrap();
    for t in one.iter().chain(&three) {
        tablesync::ensure_target_table(&dst, t, &TargetOptions::default()).await.unwrap();
    }

    let split = Some(one[0].estimated_bytes / 4 + 1);
    let cases = [
        ("1 table, binary, 1 connection", &one, CopyFormat::Binary, 1, None),
        ("1 table, text, 1 connection", &one, CopyFormat::Text, 1, None),
        ("1 table in 4 block ranges, binary, 2 connections", &one, CopyFormat::Binary, 2, split),
        ("3 tables, binary, 1 connection", &three, CopyFormat::Binary, 1, None),
        ("3 tables, binary, 3 connections", &three, CopyFormat::Binary, 3, None),
    ];
    // Contenders take turns within each round, so machine noise hits all of them alike.
    let psql = cluster.bindir().join("psql");
    let (src_url, dst_url) = (cluster.url("src"), cluster.url("dst"));
    let script = format!(
        "{psql} -X -q -d \"$SRC\" -c 'COPY (SELECT id, qty, label, at, price, flag FROM ONLY one) \
         TO STDOUT (FORMAT binary)' | {psql} -X -q -d \"$DST\" -c 'COPY one FROM STDIN (FORMAT binary)'",
        psql = psql.display()
    );
    let mut times = vec![Vec::new(); cases.len() + 1];
    let mut reports = vec![None; cases.len()];
    for _ in 0..RUNS {
        for (i, (_, tables, format, parallelism, split_bytes)) in cases.iter().enumerate() {
            let options = CopyOptions {
                parallelism: *parallelism,
                format: *format,
                truncate_target: true,
                replica_role: true,
                split_bytes: *split_bytes,
                ..CopyOptions::default()
            };
            let exporter = cluster.connect("src").await.unwrap();
            exporter.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ").await.unwrap();
            let snap: String =
                exporter.query_one("SELECT pg_export_snapshot()", &[]).await.unwrap().get(0);
            let started = Instant::now();
            let r = tablesync::copy_tables(&source, &target, &snap, tables, &options, &|_| {})
                .await
                .unwrap();
            times[i].push(started.elapsed());
            reports[i] = Some(r);
        }
        // Reference: the same binary COPY piped between two psql processes.
        dst.batch_execute("TRUNCATE one").await.unwrap();
        let started = Instant::now();
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .env("SRC", &src_url)
            .env("DST", &dst_url)
            .status()
            .unwrap();
        times[cases.len()].push(started.elapsed());
        assert!(status.success());
    }
    for (i, t) in times.iter_mut().enumerate() {
        t.sort();
        let median = t[RUNS / 2];
        let (min, max) = (t[0].as_secs_f64(), t[RUNS - 1].as_secs_f64());
        match reports.get(i) {
            Some(Some(report)) => println!(
                "{}: {} rows, {:.1} MB: median {:.2} s (min {min:.2}, max {max:.2}), {:.0} rows/s",
                cases[i].0,
                report.rows,
                mb(report.bytes),
                median.as_secs_f64(),
                rate(report.rows, median),
            ),
            _ => println!(
                "reference psql | psql, 1 table, binary: median {:.2} s (min {min:.2}, max {max:.2})",
                median.as_secs_f64()
            ),
        }
    }
}

fn mb(bytes: u64) -> f64 {
    f64::from(u32::try_from(bytes / 1000).unwrap_or(u32::MAX)) / 1000.0
}

fn rate(rows: u64, elapsed: Duration) -> f64 {
    f64::from(u32::try_from(rows).unwrap_or(u32::MAX)) / elapsed.as_secs_f64()
}
