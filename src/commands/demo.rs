//! `pgmirror demo`: the replication lab on two throwaway local clusters, in one command.
//!
//! It reads like the lab report it replaces: set up a primary with the Store database, mirror
//! it onto a replica, watch rows arrive, crash the primary and see the replica still serve
//! reads, restart it and see replication resume, and compare both sides at the end.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use pgcluster::{Cluster, ClusterBuilder, StopMode};
use pgconn::ConnConfig;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio_postgres::Client;

use crate::commands::{check, status, verify};
use crate::mirror::{self, MirrorOptions};
use crate::selection::TableSelection;
use crate::shutdown::Shutdown;

/// Arguments of `pgmirror demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Store orders to generate on the primary before mirroring.
    #[arg(long, default_value_t = 5_000, value_name = "N")]
    pub orders: u32,
    /// Store OLTP transactions to run on the primary while mirroring.
    #[arg(long, default_value_t = 200, value_name = "N")]
    pub transactions: u32,
    /// Leave both clusters running at the end, and print how to connect to them.
    #[arg(long)]
    pub keep: bool,
    /// The replica: a PostgreSQL cluster, or a MariaDB server (`mysql`).
    #[arg(long, value_enum, default_value_t = DemoTarget::Postgres, value_name = "KIND")]
    pub target: DemoTarget,
}

/// What `pgmirror demo` mirrors into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DemoTarget {
    /// A PostgreSQL cluster.
    Postgres,
    /// A MariaDB server (from the installed `mariadb-server`).
    Mysql,
}

const DB: &str = "store";

/// `println!` above any progress bar on the terminal (the mirror's catch-up bar runs on
/// stderr while the lab prints on stdout).
macro_rules! say {
    ($($arg:tt)*) => {
        crate::bars::suspend(|| println!($($arg)*))
    };
}

mod mysql;

/// Runs the demo; the clusters are removed at the end, also after Ctrl-C or an error.
///
/// # Errors
/// When PostgreSQL's server binaries are missing, or a step of the lab fails.
pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    // Ctrl-C ends the lab (dropping the clusters); the mirror has its own stop flag so that
    // the lab can stop it cleanly as one of its steps.
    let mut shutdown = Shutdown::on_signals_quietly();
    let started = Instant::now();
    // Dropping the lab's future drops its clusters, which stops and removes them.
    let finished = tokio::select! {
        r = async {
            match args.target {
                DemoTarget::Postgres => lab(&args, Shutdown::manual()).await,
                DemoTarget::Mysql => {
                    Box::pin(mysql::lab(args.orders, args.transactions, Shutdown::manual())).await
                }
            }
        } => Some(r),
        () = shutdown.wait() => None,
    };
    let Some(kept) = finished.transpose()? else {
        say!(
            "\nInterrupted after {:.1} s; both clusters removed.",
            started.elapsed().as_secs_f64()
        );
        return Ok(ExitCode::SUCCESS);
    };
    if kept {
        say!("\nDone in {:.1} s; the clusters are still running.", started.elapsed().as_secs_f64());
    } else {
        say!("\nDone in {:.1} s; both clusters removed.", started.elapsed().as_secs_f64());
    }
    Ok(ExitCode::SUCCESS)
}

fn step(n: u32, text: &str) {
    say!("\n== {n}. {text}");
}

/// Runs the lab; returns whether the clusters were kept running.
async fn lab(args: &DemoArgs, shutdown: Shutdown) -> anyhow::Result<bool> {
    step(1, "Two throwaway PostgreSQL clusters");
    let (primary, replica) = tokio::task::spawn_blocking(|| -> anyhow::Result<_> {
        let primary = ClusterBuilder::new().start().context("starting the primary")?;
        let replica = ClusterBuilder::new().start().context("starting the replica")?;
        Ok((primary, replica))
    })
    .await??;
    say!("   primary: 127.0.0.1:{} (wal_level = logical)", primary.port());
    say!("   replica: 127.0.0.1:{} (an independent server: no base backup)", replica.port());

    step(2, "The Store database on the primary");
    primary.create_database(DB).await?;
    replica.create_database(DB).await?;
    let src = primary.connect(DB).await?;
    let dst = replica.connect(DB).await?;
    store::create_schema(&src).await?;
    let scale = store::Scale { orders: args.orders, ..store::Scale::demo() };
    let t = Instant::now();
    store::populate(&src, &scale).await?;
    print_counts("primary", &src).await?;
    say!("   generated in {:.2} s", t.elapsed().as_secs_f64());

    let source = ConnConfig::parse(&primary.url(DB))?;
    let target = ConnConfig::parse(&replica.url(DB))?;
    let selection = TableSelection {
        publication: None,
        tables: Some(store::TABLES.iter().map(|t| (*t).to_owned()).collect()),
        exclude_tables: None,
    };

    step(3, "pgmirror check: is the primary ready for logical replication?");
    let report = check::run_check(&check::CheckOptions {
        source: source.clone(),
        target: Some(target.clone()),
        tables: Some(selection.clone()),
        name: "default".into(),
    })
    .await;
    print_indented(&report.render());
    if !report.passed() {
        bail!("the preflight check failed");
    }

    step(4, "pgmirror mirror: slot, publication, initial copy, streaming");
    let opts = MirrorOptions::new("demo", source.clone(), target.clone(), selection.clone());
    let mut mirror_stop = shutdown.clone();
    let mirror_opts = opts.clone();
    let t = Instant::now();
    let mut task = tokio::spawn(async move { mirror::run(&mirror_opts, &mut mirror_stop).await });
    wait_equal(&src, &dst, Duration::from_secs(120), &mut task).await?;
    say!("   replica equals primary after {:.2} s (initial copy)", t.elapsed().as_secs_f64());
    print_counts("replica", &dst).await?;
    // The copy is committed before streaming starts: wait for the walsender to show up.
    let start = Instant::now();
    let row = loop {
        let row = src
            .query_opt(
                "SELECT application_name, state, client_addr::text \
                 FROM pg_stat_replication WHERE application_name = 'pgmirror'",
                &[],
            )
            .await?;
        match row {
            Some(row) => break row,
            None if start.elapsed() > Duration::from_secs(30) => {
                bail!("pg_stat_replication shows no pgmirror connection after 30 s")
            }
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    say!(
        "   pg_stat_replication on the primary: application_name={} state={} client={}",
        row.get::<_, String>(0),
        row.get::<_, String>(1),
        row.get::<_, Option<String>>(2).unwrap_or_else(|| "local".into())
    );

    step(5, "Insert on the primary, read on the replica");
    let mut delays = Vec::new();
    for i in 0..5 {
        let email = format!("demo{i}@example.com");
        src.execute("INSERT INTO customers (email, name) VALUES ($1, 'Demo Customer')", &[&email])
            .await?;
        let t = Instant::now();
        wait_row(&dst, &email, Duration::from_secs(10)).await?;
        delays.push(t.elapsed());
    }
    delays.sort();
    say!(
        "   5 single-row inserts visible on the replica after {} (median {:.1} ms)",
        delays.iter().map(|d| format!("{:.1} ms", ms(*d))).collect::<Vec<_>>().join(", "),
        ms(delays[2])
    );
    let mut rng = StdRng::seed_from_u64(7);
    let mut client = primary.connect(DB).await?;
    let t = Instant::now();
    for _ in 0..args.transactions {
        store::oltp_transaction(&mut client, &mut rng).await?;
    }
    let ran = t.elapsed();
    wait_equal(&src, &dst, Duration::from_secs(60), &mut task).await?;
    say!(
        "   {} Store OLTP transactions (an order, its items, a stock and a status update) in \
         {:.2} s; replica equal {:.0} ms after the last commit",
        args.transactions,
        ran.as_secs_f64(),
        ms(t.elapsed() - ran)
    );

    step(6, "pgmirror status: what pg_stat_replication and pg_stat_wal_receiver showed in the lab");
    let status = status::collect_status(&status::StatusOptions {
        source: source.clone(),
        target: Some(target.clone()),
        name: Some("demo".into()),
        slot: None,
        max_lag: None,
    })
    .await?;
    print_indented(&status.render());

    step(7, "Stop the primary (immediate shutdown, like a crash)");
    drop(client);
    // Off the runtime's thread: the mirror task keeps running meanwhile.
    let primary =
        tokio::task::spawn_blocking(move || primary.stop(StopMode::Immediate).map(|()| primary))
            .await??;
    let n: i64 = dst.query_one("SELECT count(*) FROM orders", &[]).await?.get(0);
    say!("   primary down; the replica still serves reads: SELECT count(*) FROM orders = {n}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    if task.is_finished() {
        bail!("pgmirror exited while the primary was down");
    }
    say!("   pgmirror is still running, retrying the connection with backoff");

    step(8, "Start the primary again");
    let primary = tokio::task::spawn_blocking(move || primary.start().map(|()| primary)).await??;
    let src = primary.connect(DB).await?;
    src.execute(
        "INSERT INTO customers (email, name) VALUES ('back@example.com', 'After Restart')",
        &[],
    )
    .await?;
    let t = Instant::now();
    wait_row(&dst, "back@example.com", Duration::from_secs(60)).await?;
    say!(
        "   a row inserted after the restart reached the replica {:.2} s later: replication resumed",
        t.elapsed().as_secs_f64()
    );

    step(9, "pgmirror verify: every table, chunk by chunk, at a common LSN");
    let mut verify_opts = verify::VerifyOptions::new(source.clone(), target.clone());
    verify_opts.tables = Some(selection.clone());
    verify_opts.name = Some("demo".into());
    let verdict = verify::run_verify(&verify_opts).await?;
    print_indented(&verdict.render());
    if !verdict.all_match() {
        bail!("the replica differs from the primary");
    }

    step(10, "Stop pgmirror cleanly");
    shutdown.trigger();
    match task.await {
        Ok(Ok(())) => say!("   stopped after its last transaction, with a final status update"),
        Ok(Err(e)) => return Err(e.context("pgmirror")),
        Err(e) => bail!("pgmirror task failed: {e}"),
    }
    if args.keep {
        keep_clusters(primary, replica).await?;
        return Ok(true);
    }
    stop_clusters(primary, replica).await;
    Ok(false)
}

/// Detaches both clusters so they outlive this process, and says how to use and stop them.
async fn keep_clusters(primary: Cluster, replica: Cluster) -> anyhow::Result<()> {
    let (primary, replica) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        Ok((primary.keep()?, replica.keep()?))
    })
    .await??;
    // As root the servers run as the `postgres` OS user, so pg_ctl must too.
    let as_postgres = if is_root() { "runuser -u postgres -- " } else { "" };
    step(11, "The clusters keep running (--keep)");
    for (role, c) in [("primary", &primary), ("replica", &replica)] {
        say!("   {role}: psql postgres://postgres@127.0.0.1:{}/{DB}", c.port);
    }
    say!(
        "   mirror again: pgmirror mirror --name demo --tables {} \\\n      --source postgres://postgres@127.0.0.1:{}/{DB} \\\n      --target postgres://postgres@127.0.0.1:{}/{DB}",
        store::TABLES.join(","),
        primary.port,
        replica.port
    );
    for c in [&primary, &replica] {
        say!(
            "   stop: {as_postgres}{} stop -D {} && rm -rf {}",
            c.bindir.join("pg_ctl").display(),
            c.data_dir.display(),
            c.data_dir.parent().unwrap_or(&c.data_dir).display()
        );
    }
    Ok(())
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

async fn stop_clusters(primary: Cluster, replica: Cluster) {
    let _ = tokio::task::spawn_blocking(move || {
        drop(primary);
        drop(replica);
    })
    .await;
}

fn print_indented(text: &str) {
    for line in text.lines() {
        say!("   {line}");
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

async fn print_counts(side: &str, client: &Client) -> anyhow::Result<()> {
    let mut parts = Vec::new();
    for table in store::TABLES {
        let (rows, _) = store::table_fingerprint(client, table).await?;
        parts.push(format!("{table} {rows}"));
    }
    say!("   {side}: {}", parts.join(", "));
    Ok(())
}

async fn wait_row(dst: &Client, email: &str, timeout: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    while dst.query_opt("SELECT 1 FROM customers WHERE email = $1", &[&email]).await?.is_none() {
        if start.elapsed() > timeout {
            bail!("row {email} did not reach the replica within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

async fn fingerprints(client: &Client) -> anyhow::Result<Vec<(i64, String)>> {
    let mut out = Vec::new();
    for table in store::TABLES {
        out.push(store::table_fingerprint(client, table).await?);
    }
    Ok(out)
}

/// Waits until every Store table is equal on both sides, failing early if the mirror exits.
async fn wait_equal(
    src: &Client,
    dst: &Client,
    timeout: Duration,
    task: &mut tokio::task::JoinHandle<anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let want = fingerprints(src).await?;
    let start = Instant::now();
    loop {
        if task.is_finished() {
            return match task.await {
                Ok(Ok(())) => bail!("pgmirror stopped unexpectedly"),
                Ok(Err(e)) => Err(e.context("pgmirror failed")),
                Err(e) => bail!("pgmirror task failed: {e}"),
            };
        }
        if fingerprints(dst).await.ok().as_ref() == Some(&want) {
            return Ok(());
        }
        if start.elapsed() > timeout {
            bail!("the replica did not catch up within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
