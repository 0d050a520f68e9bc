//! `pgmirror demo --target mysql`: the lab with a throwaway MariaDB server as the replica.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use applier::mysql::schema::MySqlTable;
use applier::mysql::session::MySqlUrl;
use applier::mysql::verify::compare_table;
use pgcluster::{ClusterBuilder, StopMode};
use pgconn::ConnConfig;
use rand::SeedableRng;
use rand::rngs::StdRng;
use sqlx::{Connection, MySqlConnection};
use tokio_postgres::Client;

use crate::mirror::mysql::{MySqlMirrorOptions, run};
use crate::selection::TableSelection;
use crate::shutdown::Shutdown;

const DB: &str = "store";

fn step(n: u32, text: &str) {
    say!("\n== {n}. {text}");
}

/// Waits until every Store table in MariaDB equals the primary's (or the mirror fails).
async fn wait_equal(
    src: &Client,
    dst: &mut MySqlConnection,
    tables: &[MySqlTable],
    timeout: Duration,
    task: &tokio::task::JoinHandle<anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let mut equal = true;
        for t in tables {
            // A table the mirror has not created yet differs.
            equal &= compare_table(src, dst, t, 10_000, 1).await.is_ok_and(|d| d.is_equal());
        }
        if equal {
            return Ok(());
        }
        if task.is_finished() {
            bail!("the mirror stopped");
        }
        if start.elapsed() > timeout {
            bail!("MariaDB still differs from the primary after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs the lab into MariaDB; the servers are removed at the end.
pub(super) async fn lab(
    orders: u32,
    transactions: u32,
    shutdown: Shutdown,
) -> anyhow::Result<bool> {
    step(1, "A throwaway PostgreSQL primary and a throwaway MariaDB server");
    let (primary, mariadb) = tokio::task::spawn_blocking(|| -> anyhow::Result<_> {
        let primary = ClusterBuilder::new().start().context("starting the primary")?;
        let mariadb = testservers::mariadb::MariaDb::new().context("starting MariaDB")?;
        Ok((primary, mariadb))
    })
    .await??;
    say!("   primary: 127.0.0.1:{} (wal_level = logical)", primary.port());
    say!("   MariaDB: 127.0.0.1:{}", mariadb.port());

    step(2, "The Store database on the primary");
    primary.create_database(DB).await?;
    mariadb.create_database(DB).await?;
    let src = primary.connect(DB).await?;
    store::create_schema(&src).await?;
    let scale = store::Scale { orders, ..store::Scale::demo() };
    store::populate(&src, &scale).await?;
    let mut counts = Vec::new();
    for t in store::TABLES {
        let n: i64 = src.query_one(&format!("SELECT count(*) FROM {t}"), &[]).await?.get(0);
        counts.push(format!("{t} {n}"));
    }
    say!("   primary: {}", counts.join(", "));

    step(3, "pgmirror mirror --target mysql://...: tables, initial copy, streaming");
    let selection = TableSelection {
        publication: None,
        tables: Some(store::TABLES.iter().map(|t| (*t).to_owned()).collect()),
        exclude_tables: None,
    };
    let url = MySqlUrl::parse(&mariadb.url(DB))?;
    let opts =
        MySqlMirrorOptions::new("demo", ConnConfig::parse(&primary.url(DB))?, url, selection);
    let mut stop = shutdown.clone();
    let mirror_opts = opts.clone();
    let t = Instant::now();
    let task = tokio::spawn(async move { run(&mirror_opts, &mut stop).await });
    let mut dst = mariadb.connect(DB).await?;
    let (_, tables) = crate::mirror::mysql::describe_tables(&src, &opts.tables).await?;
    wait_equal(&src, &mut dst, &tables, Duration::from_secs(120), &task).await?;
    say!("   MariaDB equals the primary after {:.2} s (initial copy)", t.elapsed().as_secs_f64());

    step(4, "Insert on the primary, read in MariaDB");
    let mut delays = Vec::new();
    for i in 0..5 {
        let email = format!("demo{i}@example.com");
        src.execute("INSERT INTO customers (email, name) VALUES ($1, 'Demo Customer')", &[&email])
            .await?;
        let t = Instant::now();
        loop {
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM customers WHERE email = ?")
                .bind(&email)
                .fetch_one(&mut dst)
                .await?;
            if n == 1 {
                break;
            }
            if t.elapsed() > Duration::from_secs(10) {
                bail!("{email} did not reach MariaDB within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        delays.push(t.elapsed());
    }
    delays.sort();
    say!(
        "   5 single-row inserts visible in MariaDB, median {:.1} ms",
        delays[2].as_secs_f64() * 1e3
    );
    let mut rng = StdRng::seed_from_u64(7);
    let mut client = primary.connect(DB).await?;
    for _ in 0..transactions {
        store::oltp_transaction(&mut client, &mut rng).await?;
    }
    wait_equal(&src, &mut dst, &tables, Duration::from_secs(60), &task).await?;
    say!("   {transactions} Store OLTP transactions applied; MariaDB equal");

    step(5, "The primary crashes; MariaDB still serves reads; the primary comes back");
    drop((src, client));
    primary.stop(StopMode::Immediate)?;
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders").fetch_one(&mut dst).await?;
    say!("   primary down; MariaDB answers: {n} orders");
    tokio::time::sleep(Duration::from_secs(1)).await;
    primary.start()?;
    let src = primary.connect(DB).await?;
    let mut client = primary.connect(DB).await?;
    for _ in 0..transactions {
        store::oltp_transaction(&mut client, &mut rng).await?;
    }
    wait_equal(&src, &mut dst, &tables, Duration::from_secs(120), &task).await?;
    say!("   replication resumed by itself; {transactions} more transactions applied");

    step(6, "pgmirror verify: every row compared");
    for t in &tables {
        let d = compare_table(&src, &mut dst, t, 10_000, 5).await?;
        say!("   {}: {} rows, {} differences", t.source_display(), d.source_rows, d.differing);
    }
    shutdown.trigger();
    task.await?.context("the mirror")?;
    let _ = dst.close().await;
    Ok(false)
}
