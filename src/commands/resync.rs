//! `pgmirror resync`: copy one mirrored table again without rebuilding the mirror.
//!
//! The request is recorded in `pgmirror.resyncs` on the target. A running mirror sees it
//! within a second, copies the table under a fresh snapshot while every other table streams
//! on, and applies the table's changes from that snapshot on (see `mirror::resync`); this
//! command waits until the copy is committed. A mirror that is not running does it when it
//! next starts.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use tablesync::QualifiedName;

use crate::conn;
use crate::mirror::lookup::resolve_mirror;
use crate::mirror::resync;

/// Arguments of `pgmirror resync`.
#[derive(Debug, Args)]
pub struct ResyncArgs {
    /// The primary: --source and psql's -h -p -U -d (`PG*` variables fill in the rest).
    #[command(flatten)]
    pub source: conn::SourceArgs,
    /// The replica the mirror writes into.
    #[arg(long, env = "PGMIRROR_TARGET", hide_env_values = true, value_name = "URL")]
    pub target: String,
    /// The table to copy again (`name` or `schema.name`).
    #[arg(long, value_name = "TABLE")]
    pub table: String,
    /// The mirror (default: the only one recorded on the target, else `default`).
    #[arg(long, value_name = "MIRROR")]
    pub name: Option<String>,
    /// How long to wait for a running mirror to finish the copy.
    #[arg(long, default_value_t = 3600, value_name = "SECONDS")]
    pub wait_timeout: u64,
}

/// Records the request and waits for a running mirror to carry it out.
///
/// # Errors
/// Connection errors; an unknown mirror or a table it does not mirror; a timeout.
pub async fn run(args: ResyncArgs) -> anyhow::Result<ExitCode> {
    let source_cfg = args.source.config()?;
    let target_cfg = conn::parse("--target", &args.target)?;
    let source = pgconn::connect_sql(&source_cfg).await.context("connecting to the source")?;
    let target = pgconn::connect_sql(&target_cfg).await.context("connecting to the target")?;
    crate::same_database::refuse_same_database(&source, &target).await?;
    let mirror = resolve_mirror(Some(&target), args.name.as_deref(), None).await?;
    let Some(record) = mirror.record else {
        bail!(
            "no mirror {:?} is recorded on the target (pgmirror.mirrors); give --name of a \
             mirror that `pgmirror mirror` set up",
            mirror.name
        );
    };
    let wanted = QualifiedName::parse(&args.table).context("--table")?;
    let published = tablesync::publication_tables(&source, &record.publication)
        .await
        .with_context(|| format!("reading publication {:?}", record.publication))?;
    let Some(table) = published.iter().find(|t| t.qualified_name() == wanted) else {
        bail!(
            "mirror {:?} does not mirror table {}: its publication {:?} does not publish it",
            mirror.name,
            args.table,
            record.publication
        );
    };
    let name = table.qualified_name();
    resync::request(&target, &mirror.name, &name, "asked by pgmirror resync").await?;

    let running: bool = !target
        .query_one(
            "SELECT pg_try_advisory_lock(hashtextextended('pgmirror:' || $1, 0))",
            &[&mirror.name],
        )
        .await
        .context("asking whether the mirror runs")?
        .get::<_, bool>(0);
    if !running {
        println!(
            "{name} will be copied again when `pgmirror mirror --name {}` next starts; the \
             other tables stream meanwhile",
            mirror.name
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("mirror {:?} is running: waiting for it to copy {name} again", mirror.name);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.wait_timeout);
    loop {
        let state = resync::load(&target, &mirror.name)
            .await?
            .into_iter()
            .find(|r| r.table == name)
            .map(|r| (r.state, r.floor));
        match state {
            Some((state, Some(floor))) if state == "copied" => {
                println!(
                    "{name} copied again under a snapshot at {floor} in {:.1} s; its changes \
                     apply from there on",
                    started.elapsed().as_secs_f64()
                );
                return Ok(ExitCode::SUCCESS);
            }
            // Forgotten once the mirror's progress passed the floor: done long ago.
            None => {
                println!("{name} copied again");
                return Ok(ExitCode::SUCCESS);
            }
            Some(_) if Instant::now() >= deadline => bail!(
                "mirror {:?} has not finished copying {name} after {} s; see its log, and \
                 `pgmirror status` (the request stays and is carried out at its next start)",
                mirror.name,
                args.wait_timeout
            ),
            Some(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
