//! Mirroring from code instead of the CLI: `pgmirror::mirror::run` with `MirrorOptions`, stopped
//! through a `Shutdown` once the target holds the same Store tables as the source.
//!
//! ```sh
//! cargo run --example mirror_from_code -- "postgres://postgres@localhost:5432/store" \
//!     "postgres://postgres@localhost:5433/store"
//! ```
//!
//! The source needs the Store tables (`crates/store/sql/schema.sql`, as in docker/compose.yml);
//! the target database must exist, and pgmirror creates the tables in it. A second run resumes
//! from the progress stored in the target (no second copy). Clean up with
//! `pgmirror drop --source ... --target ... --name from_code`.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use pgconn::ConnConfig;
use pgmirror::mirror::{self, MirrorOptions};
use pgmirror::selection::TableSelection;
use pgmirror::shutdown::Shutdown;
use tokio_postgres::Client;

/// Mirrors the Store tables from `source` to `target` under the mirror name `name` until every
/// table is equal on both sides, then stops the mirror cleanly. Returns how long that took.
///
/// # Errors
/// Set-up and replication errors, or the tables not converging within `timeout`.
pub async fn run(
    source: &str,
    target: &str,
    name: &str,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let source = ConnConfig::parse(source).context("source connection string")?;
    let target = ConnConfig::parse(target).context("target connection string")?;
    let tables = TableSelection {
        publication: None,
        tables: Some(store::TABLES.iter().map(|t| (*t).to_owned()).collect()),
        exclude_tables: None,
    };
    let mut opts = MirrorOptions::new(name, source.clone(), target.clone(), tables);
    opts.copy_parallelism = 2;

    // The mirror runs until its Shutdown is triggered: by us here, by SIGTERM in the CLI.
    let shutdown = Shutdown::manual();
    let mut mirror_stop = shutdown.clone();
    let started = Instant::now();
    let mut task = tokio::spawn(async move { mirror::run(&opts, &mut mirror_stop).await });

    let src = pgconn::connect_sql(&source).await.context("connecting to the source")?;
    let dst = pgconn::connect_sql(&target).await.context("connecting to the target")?;
    loop {
        if task.is_finished() {
            task.await.context("mirror task")??;
            bail!("the mirror stopped before the tables converged");
        }
        // The target tables appear during set-up; until then the comparison fails.
        if let (Ok(want), Ok(got)) = (fingerprints(&src).await, fingerprints(&dst).await)
            && want == got
        {
            break;
        }
        if started.elapsed() > timeout {
            shutdown.trigger();
            let _ = (&mut task).await;
            bail!("the target did not converge within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = started.elapsed();

    // A clean stop: the mirror finishes the transaction at hand and confirms its position.
    shutdown.trigger();
    task.await.context("mirror task")??;
    Ok(took)
}

/// Row count and an md5 of the ordered rows, per Store table.
async fn fingerprints(client: &Client) -> anyhow::Result<Vec<(i64, String)>> {
    let mut out = Vec::new();
    for table in store::TABLES {
        out.push(store::table_fingerprint(client, table).await?);
    }
    Ok(out)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    pgmirror::logging::init(0);
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [source, target] = args.as_slice() else {
        bail!("usage: mirror_from_code <source connection string> <target connection string>");
    };
    let took = run(source, target, "from_code", Duration::from_secs(600)).await?;
    println!("target equals source after {:.2} s; mirror stopped", took.as_secs_f64());
    Ok(())
}
