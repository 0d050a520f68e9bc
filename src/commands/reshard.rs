//! `pgmirror reshard`: retires a mirror once a second mirror of the same source, into a new set
//! of shards, is proven to hold exactly the source's rows.
//!
//! Going from N to M shards runs two mirrors side by side: the new one, started with `pgmirror
//! mirror --name NEW --target ... --shard-key ...` (its own slot, publication and copy), follows
//! the source while the old one keeps serving. `reshard` is the gate of the cutover: it drops
//! what the old mirror made only when
//! - the two are different mirrors, and no new target is one of the old targets' databases;
//! - the new mirror mirrors every table the old one does, has finished its initial copy on
//!   every shard, and is streaming (a walsender holds its slot);
//! - `verify` of the new layout, after every new shard caught up with the source's current WAL
//!   position, finds each shard holding exactly its rows;
//! - the old mirror has stopped (its slot released): `--wait` waits for that.
//!
//! Then it drops the old mirror as `pgmirror drop --name OLD` does on each old target: its slot,
//! the publication it created, its rows in the targets' bookkeeping. The old targets' tables
//! and rows stay, for readers still pointed at them.

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use applier::mysql::progress::{self as mysql_progress, MirrorState as MySqlState};
use applier::mysql::session::MySqlUrl;
use clap::Args;
use pgconn::{ConnConfig, DatabaseIdentity};
use tokio_postgres::Client;

use crate::commands::shard_keys::{self, TargetArgs};
use crate::conn;
use crate::mirror::registry::{self, MirrorState};
use crate::mirror::shards::verify::{ShardVerifyOptions, verify};
use crate::selection::TableSelection;

/// How often the old mirror's slot is looked at while waiting for it to be released.
const POLL: Duration = Duration::from_millis(500);

/// Arguments of `pgmirror reshard`.
#[derive(Debug, Args)]
pub struct ReshardArgs {
    /// The primary: --source and psql's -h -p -U -d (`PG*` variables fill in the rest).
    #[command(flatten)]
    pub source: conn::SourceArgs,
    /// The new mirror, already started with `pgmirror mirror --name`.
    #[arg(long, value_name = "MIRROR")]
    pub name: String,
    /// The new mirror's shards, in order, and their shard keys.
    #[command(flatten)]
    pub targets: TargetArgs,
    /// The mirror the new one replaces.
    #[arg(long, value_name = "MIRROR")]
    pub retire: String,
    /// The retired mirror's targets (repeated for its shards).
    #[arg(long, value_name = "URL", required = true)]
    pub retire_target: Vec<String>,
    /// Wait for the retired mirror to be stopped instead of failing while it runs.
    #[arg(long)]
    pub wait: bool,
    /// How long to wait for the new shards to catch up with the source before verifying.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pub wait_timeout: u64,
}

/// The shards of one side, all of one kind.
enum Shards {
    Postgres(Vec<ConnConfig>),
    MySql(Vec<MySqlUrl>),
}

impl Shards {
    /// The URLs given as `flag`.
    fn parse(flag: &str, urls: &[String]) -> anyhow::Result<Self> {
        Ok(match shard_keys::mysql_shards(flag, urls)? {
            Some(urls) => Shards::MySql(urls),
            None => Shards::Postgres(shard_keys::postgres_shards(flag, urls)?),
        })
    }
}

/// Which database a shard is, to tell two sides' databases apart.
#[derive(Debug, PartialEq, Eq)]
enum Identity {
    Postgres(DatabaseIdentity),
    /// `@@hostname`, `@@port`, `@@datadir` and the database.
    MySql(String),
}

impl Identity {
    fn same(&self, other: &Identity) -> bool {
        match (self, other) {
            (Identity::Postgres(a), Identity::Postgres(b)) => a.same_database(b),
            (a, b) => a == b,
        }
    }
}

/// What one side's shards record of a mirror.
struct Recorded {
    slot: String,
    publication: String,
    /// Shards whose initial copy has not finished.
    copying: Vec<usize>,
    identities: Vec<Identity>,
}

/// Reads the mirror `name`'s record on every shard of a side.
async fn recorded(shards: &Shards, name: &str, side: &str) -> anyhow::Result<Recorded> {
    let missing = |i: usize| {
        format!(
            "{side} shard {i} holds no mirror {name:?}: give the --name and targets the mirror \
             was started with"
        )
    };
    let mut found: Option<(String, String)> = None;
    let mut copying = Vec::new();
    let mut identities = Vec::new();
    match shards {
        Shards::Postgres(cfgs) => {
            for (i, cfg) in cfgs.iter().enumerate() {
                let c = pgconn::connect_sql(cfg)
                    .await
                    .with_context(|| format!("connecting to {side} shard {i}"))?;
                let rec = registry::load(&c, name)
                    .await
                    .with_context(|| format!("reading pgmirror.mirrors on {side} shard {i}"))?
                    .with_context(|| missing(i))?;
                if rec.state == MirrorState::Copying {
                    copying.push(i);
                }
                found.get_or_insert((rec.slot, rec.publication));
                identities.push(Identity::Postgres(
                    pgconn::identify(&c).await.context("identifying a shard's database")?,
                ));
            }
        }
        Shards::MySql(urls) => {
            let conns = crate::mirror::mysql::shards::connect_all(urls).await?;
            for (i, (mut c, _)) in conns.into_iter().enumerate() {
                let rows = mysql_progress::load_all(&mut c)
                    .await
                    .with_context(|| format!("reading {side} shard {i}'s progress"))?;
                let row = rows.into_iter().find(|r| r.name == name).with_context(|| missing(i))?;
                if row.state == MySqlState::Copying {
                    copying.push(i);
                }
                found.get_or_insert((row.slot, row.publication));
                let (host, port, dir, db): (String, u32, String, Option<String>) =
                    sqlx::query_as("SELECT @@hostname, @@port, @@datadir, DATABASE()")
                        .fetch_one(&mut c)
                        .await
                        .context("identifying a shard's database")?;
                identities.push(Identity::MySql(format!(
                    "{host}:{port}{dir}/{}",
                    db.unwrap_or_default()
                )));
            }
        }
    }
    let (slot, publication) = found.context("no shards given")?;
    Ok(Recorded { slot, publication, copying, identities })
}

/// The tables a publication publishes, as `schema.table`.
async fn published(source: &Client, publication: &str) -> anyhow::Result<BTreeSet<String>> {
    let rows = source
        .query(
            "SELECT format('%I.%I', schemaname, tablename) FROM pg_catalog.pg_publication_tables \
             WHERE pubname = $1",
            &[&publication],
        )
        .await
        .context("reading pg_publication_tables on the source")?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The walsender holding `slot`, if one does; `None` inside when the slot does not exist.
async fn slot_holder(source: &Client, slot: &str) -> anyhow::Result<Option<Option<i32>>> {
    let row = source
        .query_opt(
            "SELECT active_pid FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .context("reading pg_replication_slots on the source")?;
    Ok(row.map(|r| r.get(0)))
}

/// Runs `pgmirror reshard`: exit status 0 once the old mirror is retired, 1 when the new layout
/// does not verify (nothing is dropped then).
///
/// # Errors
/// Any of the refusals in the module documentation, each naming what to do; connection and
/// query errors.
pub async fn run(args: ReshardArgs) -> anyhow::Result<ExitCode> {
    if args.name == args.retire {
        bail!("--name and --retire both name {:?}: name the new mirror and the old one", args.name);
    }
    let new_shards = Shards::parse("--target", &args.targets.target)?;
    let old_shards = Shards::parse("--retire-target", &args.retire_target)?;
    let source_cfg = args.source.config()?;
    let source = pgconn::connect_sql(&source_cfg).await.context("connecting to the source")?;

    let new = recorded(&new_shards, &args.name, "new").await?;
    let old = recorded(&old_shards, &args.retire, "retired").await?;
    for (i, n) in new.identities.iter().enumerate() {
        if let Some(j) = old.identities.iter().position(|o| o.same(n)) {
            bail!(
                "new shard {i} is the database of retired shard {j}: the new layout needs \
                 databases of its own (nothing was changed)"
            );
        }
    }
    if new.slot == old.slot {
        bail!("the two mirrors share slot {:?}: they are one mirror", new.slot);
    }
    let lacking: Vec<String> = published(&source, &old.publication)
        .await?
        .difference(&published(&source, &new.publication).await?)
        .cloned()
        .collect();
    if !lacking.is_empty() {
        bail!(
            "mirror {:?} does not mirror {} that {:?} does: add them to publication {:?} (or \
             start the new mirror with them) before retiring the old one (nothing was changed)",
            args.name,
            lacking.join(", "),
            args.retire,
            new.publication
        );
    }
    if !new.copying.is_empty() {
        bail!(
            "mirror {:?} has not finished its initial copy on shard(s) {:?}: let it run, then \
             reshard again (nothing was changed)",
            args.name,
            new.copying
        );
    }
    if !matches!(slot_holder(&source, &new.slot).await?, Some(Some(_))) {
        bail!(
            "mirror {:?} is not streaming (no walsender holds slot {:?}): run `pgmirror mirror \
             --name {}` with its targets, then reshard again (nothing was changed)",
            args.name,
            new.slot,
            args.name
        );
    }

    println!("verifying the new layout ({:?}) against the source", args.name);
    if !verified(&args, &source_cfg, &new_shards, &new).await? {
        println!(
            "the new layout does not hold exactly the source's rows: mirror {:?} was left \
             running and nothing was dropped",
            args.retire
        );
        return Ok(ExitCode::FAILURE);
    }

    if let Some(Some(pid)) = slot_holder(&source, &old.slot).await? {
        if !args.wait {
            bail!(
                "the new layout verified, but mirror {:?} still runs (walsender pid {pid} holds \
                 slot {:?}): move readers to the new shards, stop that pgmirror, then reshard \
                 again, or pass --wait (nothing was dropped)",
                args.retire,
                old.slot
            );
        }
        println!("waiting for mirror {:?} to stop (walsender pid {pid})", args.retire);
        while let Some(Some(_)) = slot_holder(&source, &old.slot).await? {
            tokio::time::sleep(POLL).await;
        }
    }
    println!("retiring mirror {:?}", args.retire);
    crate::commands::drop::run(crate::commands::drop::DropArgs {
        source: args.source.clone(),
        target: args.retire_target.clone(),
        slot: None,
        name: Some(args.retire.clone()),
        wait: false,
        force: false,
    })
    .await
}

/// Whether every new shard caught up with the source and holds exactly its rows; prints the
/// comparison.
async fn verified(
    args: &ReshardArgs,
    source: &ConnConfig,
    shards: &Shards,
    new: &Recorded,
) -> anyhow::Result<bool> {
    let tables = TableSelection::publication(new.publication.clone());
    match shards {
        Shards::Postgres(cfgs) => {
            let report = verify(&ShardVerifyOptions {
                source: source.clone(),
                shards: cfgs.clone(),
                layout: args.targets.layout()?,
                tables,
                name: args.name.clone(),
                wait_timeout: Duration::from_secs(args.wait_timeout),
            })
            .await?;
            print!("{}", report.render());
            Ok(report.caught_up && report.all_match())
        }
        Shards::MySql(urls) => {
            let code = crate::mirror::mysql::ops::verify_shards(
                source,
                urls,
                &args.targets.layout()?,
                Some(&args.name),
                Some(tables),
                10_000,
                20,
            )
            .await?;
            Ok(code == ExitCode::SUCCESS)
        }
    }
}
