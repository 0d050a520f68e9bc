//! Apply-side throughput: a backlog is decoded from a real slot into memory first, then only
//! the apply into a second database is timed (PostgresTarget, default settings, vs. the same
//! target with COPY and set-based statements switched off: pipelined single-row statements).
//!
//! Run: `cargo bench -p applier --bench apply` (env `APPLY_BENCH_ROWS`, default 100000).

use std::time::Instant;

use applier::{Applier, ApplierConfig, PostgresTarget, PostgresTargetConfig};
use bytes::Bytes;
use pgoutput_decoder::{Decoder, LogicalMessage};

const SCHEMA: &str = "CREATE TABLE t (id int8 PRIMARY KEY, v int4 NOT NULL, s text NOT NULL)";

async fn fetch(src: &tokio_postgres::Client, slot: &str, publication: &str) -> Vec<LogicalMessage> {
    src.batch_execute("SET synchronous_commit = on").await.unwrap();
    src.batch_execute("SELECT pg_logical_emit_message(true, 'flush', '')").await.unwrap();
    let opts = vec![
        "proto_version".to_owned(),
        "1".into(),
        "publication_names".into(),
        publication.into(),
        "binary".into(),
        "true".into(),
    ];
    let rows = src
        .query("SELECT data FROM pg_logical_slot_get_binary_changes($1, NULL, NULL, VARIADIC $2::text[])", &[&slot, &opts])
        .await
        .unwrap();
    let mut d = Decoder::new(1);
    rows.iter().map(|r| d.decode(Bytes::from(r.get::<_, Vec<u8>>(0))).unwrap()).collect()
}

async fn run(name: &str, workload: &str, rows: u64) {
    let cluster = pgcluster::shared();
    for fast in [true, false] {
        let src_db = pgcluster::unique_name("bench_src");
        let dst_db = pgcluster::unique_name("bench_dst");
        cluster.create_database(&src_db).await.unwrap();
        cluster.create_database(&dst_db).await.unwrap();
        let src = cluster.connect(&src_db).await.unwrap();
        let dst = cluster.connect(&dst_db).await.unwrap();
        src.batch_execute(SCHEMA).await.unwrap();
        dst.batch_execute(SCHEMA).await.unwrap();
        // The rows the update/delete workloads change exist on both sides before the slot.
        let seed =
            format!("INSERT INTO t SELECT g, 0, md5(g::text) FROM generate_series(1, {rows}) g");
        if workload.starts_with("UPDATE") || workload.starts_with("DELETE") {
            src.batch_execute(&seed).await.unwrap();
            dst.batch_execute(&seed).await.unwrap();
        }
        src.batch_execute("CREATE PUBLICATION bench_pub FOR ALL TABLES").await.unwrap();
        src.execute("SELECT pg_create_logical_replication_slot('bench_slot', 'pgoutput')", &[])
            .await
            .unwrap();
        // `|` separates statements that must run on their own (CALL with COMMIT inside).
        for stmt in workload.replace("{rows}", &rows.to_string()).split('|') {
            src.batch_execute(stmt).await.unwrap();
        }
        let msgs = fetch(&src, "bench_slot", "bench_pub").await;
        let mut cfg = PostgresTargetConfig::new("bench");
        if !fast {
            cfg.copy_min_rows = usize::MAX;
            cfg.batch_min_rows = usize::MAX;
        }
        let target =
            PostgresTarget::new(cluster.connect(&dst_db).await.unwrap(), cfg).await.unwrap();
        let mut applier = Applier::new(target, ApplierConfig::default()).await.unwrap();
        let n = msgs.len();
        let start = Instant::now();
        for m in msgs {
            applier.handle(m).await.unwrap();
        }
        applier.flush().await.unwrap();
        let secs = start.elapsed().as_secs_f64();
        let check: i64 = dst.query_one("SELECT count(*) FROM t", &[]).await.unwrap().get(0);
        let src_count: i64 = src.query_one("SELECT count(*) FROM t", &[]).await.unwrap().get(0);
        assert_eq!(check, src_count, "target matches source");
        let rate = u32::try_from(rows).map(f64::from).unwrap_or(f64::NAN) / secs;
        println!(
            "{name:<34} {:<10} {rows:>8} rows {n:>8} msgs {secs:>7.3} s {rate:>10.0} rows/s  txns={} flushes={}",
            if fast { "batched" } else { "per-row" },
            applier.stats().applied_txns,
            applier.stats().flushes,
        );
        src.batch_execute("SELECT pg_drop_replication_slot('bench_slot')").await.unwrap();
    }
}

fn main() {
    let rows: u64 =
        std::env::var("APPLY_BENCH_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        run(
            "one INSERT transaction",
            "INSERT INTO t SELECT g, g, md5(g::text) FROM generate_series(1, {rows}) g",
            rows,
        )
        .await;
        run(
            "single-row INSERT transactions",
            "CREATE PROCEDURE ins(n int) LANGUAGE plpgsql AS $$ BEGIN FOR i IN 1..n LOOP \
             INSERT INTO t VALUES (i, i, md5(i::text)); COMMIT; END LOOP; END $$|CALL ins({rows})",
            rows,
        )
        .await;
        run("one UPDATE transaction", "UPDATE t SET v = v + 1", rows).await;
        run("one DELETE transaction", "DELETE FROM t", rows).await;
    });
}
