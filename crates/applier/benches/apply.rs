//! Apply-side throughput: a backlog is decoded from a real slot into memory first, then only
//! the apply into a second database is timed (PostgresTarget, default settings, vs. the same
//! target with COPY and set-based statements switched off: pipelined single-row statements).
//!
//! The OLTP case replays the Store mix: per source transaction an order, 2-4 order lines, a
//! product stock update (products repeat; a tenth have a TOASTed description) and the order's
//! status/total update.
//!
//! Run: `cargo bench -p applier --bench apply` (env `APPLY_BENCH_ROWS`, default 100000;
//! `APPLY_BENCH_OLTP_TXNS`, default 40000; `APPLY_BENCH_ONLY`, a case name prefix).

use std::time::Instant;

use applier::{Applier, ApplierConfig, PostgresTarget, PostgresTargetConfig};
use bytes::Bytes;
use pgoutput_decoder::{Decoder, LogicalMessage};
use store::TABLES;

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

/// The Store OLTP mix as one procedure committing after every transaction (server-side, so
/// the backlog is made in seconds): what `store::OltpPlan::execute` does, without its RNG.
const OLTP_PROC: &str = "CREATE PROCEDURE oltp(n int) LANGUAGE plpgsql AS $$ \
    DECLARE o bigint; np bigint; nc bigint; \
    BEGIN \
      SELECT max(id) INTO np FROM products; SELECT max(id) INTO nc FROM customers; \
      FOR i IN 1..n LOOP \
        INSERT INTO orders (customer_id, status, note) \
          VALUES (1 + (i * 7919) % nc, 'new', CASE WHEN i % 5 = 0 THEN 'note ' || i END) \
          RETURNING id INTO o; \
        INSERT INTO order_items (order_id, line_no, product_id, quantity, unit_price) \
          SELECT o, l, p.id, 1 + (i + l) % 5, p.price FROM generate_series(1, 2 + i % 3) AS l \
          JOIN products AS p ON p.id = 1 + (i * 40503 + l * 7919) % np; \
        UPDATE products SET stock = stock - 1, updated_at = clock_timestamp() \
          WHERE id = 1 + (i * 40503 + 7919) % np; \
        UPDATE orders SET status = 'paid', total = (SELECT coalesce(sum(quantity * unit_price), 0) \
          FROM order_items WHERE order_id = o) WHERE id = o; \
        COMMIT; \
      END LOOP; \
    END $$";

/// Applies `msgs` into `target` (with `fast` off: no COPY and no set-based statements) and
/// returns the applier and the seconds it took, final flush included.
async fn apply_timed(
    target: tokio_postgres::Client,
    msgs: Vec<LogicalMessage>,
    fast: bool,
) -> (Applier<PostgresTarget>, f64) {
    let mut cfg = PostgresTargetConfig::new("bench");
    if !fast {
        cfg.copy_min_rows = usize::MAX;
        cfg.batch_min_rows = usize::MAX;
    }
    let target = PostgresTarget::new(target, cfg).await.unwrap();
    let mut applier = Applier::new(target, ApplierConfig::default()).await.unwrap();
    let start = Instant::now();
    for m in msgs {
        applier.handle(m).await.unwrap();
    }
    applier.flush().await.unwrap();
    (applier, start.elapsed().as_secs_f64())
}

async fn fingerprints(c: &tokio_postgres::Client) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    for t in TABLES {
        out.push(store::table_fingerprint(c, t).await.unwrap());
    }
    out
}

async fn run_oltp(txns: u64) {
    let cluster = pgcluster::shared();
    let scale = store::Scale::bench(2_000);
    for fast in [true, false] {
        let src_db = pgcluster::unique_name("bench_src");
        let dst_db = pgcluster::unique_name("bench_dst");
        cluster.create_database(&src_db).await.unwrap();
        cluster.create_database(&dst_db).await.unwrap();
        let src = cluster.connect(&src_db).await.unwrap();
        let dst = cluster.connect(&dst_db).await.unwrap();
        for c in [&src, &dst] {
            store::create_schema(c).await.unwrap();
            store::populate(c, &scale).await.unwrap();
        }
        src.batch_execute(OLTP_PROC).await.unwrap();
        src.batch_execute("CREATE PUBLICATION bench_pub FOR ALL TABLES").await.unwrap();
        src.execute("SELECT pg_create_logical_replication_slot('bench_slot', 'pgoutput')", &[])
            .await
            .unwrap();
        src.batch_execute("SET synchronous_commit = off").await.unwrap();
        src.batch_execute(&format!("CALL oltp({txns})")).await.unwrap();
        let msgs = fetch(&src, "bench_slot", "bench_pub").await;
        let n = msgs.len();
        let (applier, secs) =
            apply_timed(cluster.connect(&dst_db).await.unwrap(), msgs, fast).await;
        assert_eq!(fingerprints(&dst).await, fingerprints(&src).await, "target matches source");
        let rate = u32::try_from(txns).map(f64::from).unwrap_or(f64::NAN) / secs;
        let ts = applier.target().stats();
        println!(
            "{:<34} {:<10} {txns:>8} txns {n:>8} msgs {secs:>7.3} s {rate:>10.0} txns/s  \
             flushes={} statements={} copied={} batched={}",
            "Store OLTP mix",
            if fast { "batched" } else { "per-row" },
            applier.stats().flushes,
            ts.statements,
            ts.copied_rows,
            ts.batched_rows,
        );
        src.batch_execute("SELECT pg_drop_replication_slot('bench_slot')").await.unwrap();
    }
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
        let n = msgs.len();
        let (applier, secs) =
            apply_timed(cluster.connect(&dst_db).await.unwrap(), msgs, fast).await;
        let check: i64 = dst.query_one("SELECT count(*) FROM t", &[]).await.unwrap().get(0);
        let src_count: i64 = src.query_one("SELECT count(*) FROM t", &[]).await.unwrap().get(0);
        assert_eq!(check, src_count, "target matches source");
        let rate = u32::try_from(rows).map(f64::from).unwrap_or(f64::NAN) / secs;
        let ts = applier.target().stats();
        println!(
            "{name:<34} {:<10} {rows:>8} rows {n:>8} msgs {secs:>7.3} s {rate:>10.0} rows/s  \
             txns={} flushes={} statements={}",
            if fast { "batched" } else { "per-row" },
            applier.stats().applied_txns,
            applier.stats().flushes,
            ts.statements,
        );
        src.batch_execute("SELECT pg_drop_replication_slot('bench_slot')").await.unwrap();
    }
}

fn main() {
    let rows: u64 =
        std::env::var("APPLY_BENCH_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let only = std::env::var("APPLY_BENCH_ONLY").unwrap_or_default();
    let txns: u64 =
        std::env::var("APPLY_BENCH_OLTP_TXNS").ok().and_then(|v| v.parse().ok()).unwrap_or(40_000);
    // On a worker thread, as `pgmirror mirror` runs its pump: a `block_on` future runs on the
    // calling thread, and every wake of a connection task from there crosses threads.
    rt.block_on(async move {
        tokio::spawn(Box::pin(cases(only, txns, rows))).await.unwrap();
    });
}

async fn cases(only: String, txns: u64, rows: u64) {
    {
        if "Store OLTP mix".starts_with(&only) {
            run_oltp(txns).await;
        }
        let case = |name: &'static str, workload: &'static str, rows: u64| {
            let skip = !name.starts_with(&only);
            async move {
                if !skip {
                    run(name, workload, rows).await;
                }
            }
        };
        case(
            "one INSERT transaction",
            "INSERT INTO t SELECT g, g, md5(g::text) FROM generate_series(1, {rows}) g",
            rows,
        )
        .await;
        case(
            "single-row INSERT transactions",
            "CREATE PROCEDURE ins(n int) LANGUAGE plpgsql AS $$ BEGIN FOR i IN 1..n LOOP \
             INSERT INTO t VALUES (i, i, md5(i::text)); COMMIT; END LOOP; END $$|CALL ins({rows})",
            rows,
        )
        .await;
        case("one UPDATE transaction", "UPDATE t SET v = v + 1", rows).await;
        case("one DELETE transaction", "DELETE FROM t", rows).await;
    }
}
