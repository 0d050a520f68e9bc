//! Apply throughput of pgmirror's applier fed from a recording into a real target cluster,
//! and the decoder's share of it.
//!
//! Setup (not timed): a durable throwaway cluster; a Store database populated at a small
//! scale; a slot; 2,000 Store OLTP transactions; a recording of that backlog. Each sample
//! replays the recording into a fresh copy of a template database that holds the same
//! populated Store tables, exactly as `pgmirror replay` does.
//!
//! `cargo bench --bench apply` (about a minute).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pgcluster::{Cluster, ClusterBuilder};
use pgconn::{ConnConfig, quote_ident};
use pgmirror::commands::record::{Recording, record};
use pgmirror::selection::TableSelection;
use pgmirror::shutdown::Shutdown;
use rand::SeedableRng;
use recording::{ReplayOptions, StopAt};

const TRANSACTIONS: u32 = 2_000;
const SCALE: u32 = 2_000;

struct Fixture {
    cluster: Cluster,
    recording: PathBuf,
    transactions: u64,
    changes: u64,
}

async fn fixture(dir: &Path) -> Fixture {
    let cluster = ClusterBuilder::new()
        .setting("max_wal_size", "8GB")
        .setting("autovacuum", "off")
        .start()
        .expect("start cluster");
    let scale = store::Scale::bench(SCALE);
    for db in ["src", "tpl"] {
        cluster.create_database(db).await.expect("create database");
        let client = cluster.connect(db).await.expect("connect");
        store::create_schema(&client).await.expect("schema");
        // Deterministic: the template holds the same rows as the source.
        store::populate(&client, &scale).await.expect("populate");
    }
    let mut src = cluster.connect("src").await.expect("connect");
    src.batch_execute(
        "CREATE PUBLICATION bench FOR TABLE customers, products, orders, order_items; \
         SELECT pg_create_logical_replication_slot('bench', 'pgoutput')",
    )
    .await
    .expect("publication and slot");
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    for _ in 0..TRANSACTIONS {
        store::oltp_transaction(&mut src, &mut rng).await.expect("OLTP transaction");
    }
    let end: String =
        src.query_one("SELECT pg_current_wal_insert_lsn()::text", &[]).await.unwrap().get(0);
    let path = dir.join("store_oltp.rec");
    let opts = Recording {
        source: ConnConfig::parse(&cluster.url("src")).unwrap(),
        tables: TableSelection {
            publication: Some("bench".into()),
            tables: None,
            exclude_tables: None,
        },
        slot: "bench".into(),
        create_slot: false,
        out: path.clone(),
        stop: StopAt {
            until_lsn: Some(end.parse().unwrap()),
            duration: Some(Duration::from_secs(120)),
            idle: None,
        },
        binary: true,
    };
    let summary = record(&opts, &mut Shutdown::manual()).await.expect("record");
    Fixture {
        cluster,
        recording: path,
        transactions: summary.transactions,
        changes: summary.changes,
    }
}

async fn replay_once(f: &Fixture, n: u64) -> Duration {
    let db = format!("t{n}");
    let admin = f.cluster.connect("postgres").await.unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {} TEMPLATE tpl", quote_ident(&db)))
        .await
        .unwrap();
    let opts = ReplayOptions {
        target: ConnConfig::parse(&f.cluster.url(&db)).unwrap(),
        name: "bench".into(),
        create_tables: false,
        applier: applier::ApplierConfig::default(),
    };
    let t = Instant::now();
    let s = recording::replay(&f.recording, &opts).await.expect("replay");
    let elapsed = t.elapsed();
    assert_eq!(s.applied_txns, f.transactions);
    f.cluster.drop_database(&db).await.unwrap();
    elapsed
}

fn apply(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = std::env::temp_dir().join(pgcluster::unique_name("pgmirror_apply_bench"));
    std::fs::create_dir_all(&dir).unwrap();
    let f = rt.block_on(fixture(&dir));

    let mut g = c.benchmark_group("apply");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(15));
    g.throughput(Throughput::Elements(f.transactions));
    let mut n = 0;
    g.bench_function("replay_store_oltp_txns", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    n += 1;
                    total += replay_once(&f, n).await;
                }
                total
            })
        });
    });
    g.finish();

    // Decode share: the same messages, decoded only.
    let mut g = c.benchmark_group("decode");
    g.sample_size(20).measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Elements(f.changes));
    g.bench_function("decode_store_oltp_recording", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (_, secs) = recording::decode_all(&f.recording).expect("decode");
                total += Duration::from_secs_f64(secs);
            }
            total
        });
    });
    g.finish();
    drop(f);
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, apply);
criterion_main!(benches);
