//! `pgmirror drop`: removes exactly what pgmirror created for a mirror.
//!
//! What pgmirror created is recorded on the target (`pgmirror.mirrors`): the slot and, when it
//! made one, the publication. Those are dropped on the primary, then the mirror's row and
//! progress row on the target, and the `pgmirror` schema once no mirror is left in it. The
//! mirrored tables and their rows stay, and the report says what they hold (the mirrored
//! rows, or an unfinished initial copy). Anything pgmirror did
//! not create is kept unless `--force`. Without `--target` nothing records what pgmirror
//! made, so only a slot whose name starts with `pgmirror_` is dropped (others need `--force`)
//! and publications are left alone.
//!
//! An active slot is refused (naming the process holding it) before anything is removed,
//! unless `--wait` asks to wait for it to be released.

use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use pgconn::ConnConfig;
use replication::ReplicationClient;
use serde::Serialize;
use tokio_postgres::Client;

use crate::conn;
use crate::display::display_name;
use crate::mirror::lookup::resolve_mirror;
use crate::mirror::registry::{self, MirrorState};
use crate::target_url::TargetUrl;

/// Arguments of `pgmirror drop`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["slot", "name"])))]
pub struct DropArgs {
    /// The primary: --source and psql's -h -p -U -d (`PG*` variables fill in the rest).
    #[command(flatten)]
    pub source: conn::SourceArgs,
    /// The replica, where pgmirror recorded what it created. Repeated: every shard of a
    /// sharded mirror.
    #[arg(long, env = "PGMIRROR_TARGET", hide_env_values = true, value_name = "URL")]
    pub target: Vec<String>,
    /// The slot to drop.
    #[arg(long, value_name = "NAME")]
    pub slot: Option<String>,
    /// The mirror to drop.
    #[arg(long, value_name = "MIRROR")]
    pub name: Option<String>,
    /// Wait for an active slot to be released instead of failing.
    #[arg(long)]
    pub wait: bool,
    /// Also drop what pgmirror did not create (the slot or publication it was given).
    #[arg(long)]
    pub force: bool,
}

/// What to drop.
#[derive(Debug, Clone)]
pub struct DropOptions {
    /// The primary.
    pub source: ConnConfig,
    /// The replica holding `pgmirror.mirrors`.
    pub target: Option<ConnConfig>,
    /// `--name`.
    pub name: Option<String>,
    /// `--slot`.
    pub slot: Option<String>,
    /// Wait for an active slot.
    pub wait: bool,
    /// Drop things pgmirror did not create.
    pub force: bool,
}

/// What happened to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It was dropped or deleted.
    Removed,
    /// It exists and was left alone.
    Kept,
    /// It did not exist.
    Absent,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DropAction {
    /// `slot`, `publication`, `mirror row`, `progress row`, `target tables`.
    pub object: &'static str,
    /// Its name.
    pub name: String,
    /// What happened.
    pub outcome: Outcome,
    /// Why (for kept objects, how to remove them anyway).
    pub reason: String,
}

/// Everything `pgmirror drop` did, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DropReport {
    /// The actions.
    pub actions: Vec<DropAction>,
}

impl DropReport {
    /// The action on `object`, if any.
    pub fn get(&self, object: &str) -> Option<&DropAction> {
        self.actions.iter().find(|a| a.object == object)
    }

    /// One line per object.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for a in &self.actions {
            let verb = match a.outcome {
                Outcome::Removed => "removed",
                Outcome::Kept => "kept   ",
                Outcome::Absent => "absent ",
            };
            let _ = write!(out, "{verb} {} {:?}", a.object, a.name);
            if !a.reason.is_empty() {
                let _ = write!(out, ": {}", a.reason);
            }
            out.push('\n');
        }
        out
    }

    fn push(
        &mut self,
        object: &'static str,
        name: &str,
        outcome: Outcome,
        reason: impl Into<String>,
    ) {
        self.actions.push(DropAction {
            object,
            name: name.to_owned(),
            outcome,
            reason: reason.into(),
        });
    }
}

/// Runs `pgmirror drop`.
///
/// # Errors
/// An active slot without `--wait`, a slot that is not pgmirror's without `--force`,
/// connection and query errors.
pub async fn run(args: DropArgs) -> anyhow::Result<ExitCode> {
    let targets: Vec<Option<&String>> =
        if args.target.is_empty() { vec![None] } else { args.target.iter().map(Some).collect() };
    // The slot and publication go with the first shard; the others find them gone.
    for (i, target) in targets.iter().enumerate() {
        let target = match target.map(|t| conn::parse_target(t)).transpose()? {
            Some(TargetUrl::MySql(target)) => {
                let Some(name) = args.name.as_deref() else {
                    anyhow::bail!("a MySQL mirror is dropped by its --name");
                };
                if targets.len() > 1 {
                    println!("shard {i}:");
                }
                let code = crate::mirror::mysql::ops::drop(&args.source.config()?, &target, name)
                    .await
                    .with_context(|| format!("shard {i}"))?;
                if i + 1 == targets.len() {
                    return Ok(code);
                }
                continue;
            }
            Some(TargetUrl::Nats(url)) => {
                let name =
                    args.name.as_deref().context("a NATS mirror is dropped by its --name")?;
                let source = args.source.config()?;
                let dropped = crate::mirror::nats::ops::drop_mirror(
                    &source, &url, name, args.force, args.wait,
                )
                .await?;
                let mut report = DropReport::default();
                for d in dropped {
                    use crate::mirror::nats::ops::Outcome as N;
                    let outcome = match d.outcome {
                        N::Removed => Outcome::Removed,
                        N::Kept => Outcome::Kept,
                        N::Absent => Outcome::Absent,
                    };
                    report.push(d.object, &d.name, outcome, d.reason);
                }
                print!("{}", report.render());
                return Ok(ExitCode::SUCCESS);
            }
            Some(TargetUrl::Postgres(target)) => Some(target),
            None => None,
        };
        let opts = DropOptions {
            source: args.source.config()?,
            target,
            name: args.name.clone(),
            slot: args.slot.clone(),
            wait: args.wait,
            force: args.force,
        };
        let report = run_drop(&opts).await.with_context(|| format!("shard {i}"))?;
        if targets.len() > 1 {
            println!("shard {i}:");
        }
        print!("{}", report.render());
    }
    Ok(ExitCode::SUCCESS)
}

/// The slot as `pg_replication_slots` shows it.
struct SlotRow {
    active_pid: Option<i32>,
    application_name: Option<String>,
    client_addr: Option<String>,
}

async fn find_slot(source: &Client, slot: &str) -> anyhow::Result<Option<SlotRow>> {
    let row = source
        .query_opt(
            "SELECT s.active_pid, r.application_name, host(r.client_addr) \
             FROM pg_catalog.pg_replication_slots s \
             LEFT JOIN pg_catalog.pg_stat_replication r ON r.pid = s.active_pid \
             WHERE s.slot_name = $1",
            &[&slot],
        )
        .await
        .context("reading pg_replication_slots on the source")?;
    Ok(row.map(|r| SlotRow {
        active_pid: r.get(0),
        application_name: r.get(1),
        client_addr: r.get(2),
    }))
}

/// Drops what pgmirror created for the mirror (and, with `force`, what it was given).
///
/// # Errors
/// See [`run`].
pub async fn run_drop(opts: &DropOptions) -> anyhow::Result<DropReport> {
    let source = pgconn::connect_sql(&opts.source).await.context("connecting to the source")?;
    let mut target = match &opts.target {
        Some(cfg) => Some(pgconn::connect_sql(cfg).await.context("connecting to the target")?),
        None => None,
    };
    if let Some(target) = &target {
        crate::same_database::refuse_same_database(&source, target).await?;
    }
    let mirror =
        resolve_mirror(target.as_ref(), opts.name.as_deref(), opts.slot.as_deref()).await?;
    let record = mirror.record.clone();
    let slot = mirror.slot.clone();

    // Decide about the slot first: refusing must happen before anything is removed.
    let (drop_slot, keep_reason) = match &record {
        Some(r) if r.created_slot => (true, String::new()),
        Some(_) if opts.force => (true, String::new()),
        Some(_) => (
            false,
            "pgmirror did not create it (the mirror was started on an existing slot); pass \
             --force to drop it"
                .to_owned(),
        ),
        None if slot.starts_with("pgmirror_") || opts.force => (true, String::new()),
        None => bail!(
            "slot {slot:?} is not known to be pgmirror's: {} and its name does not start with \
             pgmirror_; pass --force to drop it anyway",
            if opts.target.is_some() {
                "the target has no pgmirror.mirrors row for it"
            } else {
                "without --target nothing records what pgmirror created"
            }
        ),
    };
    // Which tables the mirror wrote, for the report, while its publication still exists.
    let tables = match &record {
        Some(r) => tablesync::publication_tables(&source, &r.publication)
            .await
            .map(|t| t.iter().map(display_name).collect::<Vec<_>>().join(", "))
            .unwrap_or_default(),
        None => String::new(),
    };
    let mut report = DropReport::default();
    match find_slot(&source, &slot).await? {
        None => report.push("slot", &slot, Outcome::Absent, "not on the source"),
        Some(_) if !drop_slot => report.push("slot", &slot, Outcome::Kept, keep_reason),
        Some(row) => {
            if let Some(pid) = row.active_pid
                && !opts.wait
            {
                bail!(
                    "slot {slot:?} is active: pid {pid} ({} from {}) is streaming from it; stop \
                     that pgmirror first, or pass --wait to wait until it disconnects \
                     (nothing was dropped)",
                    row.application_name.as_deref().unwrap_or("unknown application"),
                    row.client_addr.as_deref().unwrap_or("a local socket"),
                );
            }
            let mut repl = ReplicationClient::connect(&opts.source)
                .await
                .context("replication connection to the source")?;
            repl.drop_slot(&slot, opts.wait)
                .await
                .with_context(|| format!("dropping slot {slot:?}"))?;
            repl.close().await;
            report.push("slot", &slot, Outcome::Removed, "");
        }
    }

    match &record {
        Some(r) if r.created_publication || opts.force => {
            let existed = tablesync::drop_publication(&source, &r.publication).await?;
            let (outcome, reason) = if existed {
                (Outcome::Removed, "")
            } else {
                (Outcome::Absent, "not on the source")
            };
            report.push("publication", &r.publication, outcome, reason);
        }
        Some(r) => report.push(
            "publication",
            &r.publication,
            Outcome::Kept,
            "pgmirror did not create it (it was given with --publication); pass --force to \
             drop it",
        ),
        None => {
            // Nothing says who made a publication named like the mirror: keep it.
            let guess = format!("pgmirror_{}", mirror.name);
            let exists = source
                .query_opt("SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = $1", &[&guess])
                .await
                .context("looking up the publication")?
                .is_some();
            if exists && opts.force {
                tablesync::drop_publication(&source, &guess).await?;
                report.push("publication", &guess, Outcome::Removed, "--force");
            } else if exists {
                report.push(
                    "publication",
                    &guess,
                    Outcome::Kept,
                    "no pgmirror.mirrors row says pgmirror created it; pass --force to drop it",
                );
            }
        }
    }

    if let Some(target) = target.as_mut() {
        let copying = record.as_ref().is_some_and(|r| r.state == MirrorState::Copying);
        drop_on_target(target, &mirror.name, record.is_some(), copying, &tables, &mut report)
            .await?;
    }
    Ok(report)
}

/// Deletes the mirror's row and progress row, and the `pgmirror` schema when no other mirror
/// uses it; the mirrored tables stay, and the report says what they hold.
async fn drop_on_target(
    target: &mut Client,
    name: &str,
    has_record: bool,
    copying: bool,
    tables: &str,
    report: &mut DropReport,
) -> anyhow::Result<()> {
    let tx = target.transaction().await.context("starting a target transaction")?;
    if has_record {
        crate::mirror::registry::delete_row(&tx, name)
            .await
            .context("deleting the mirror's row")?;
    }
    let has_progress =
        applier::progress::delete(&tx, name).await.context("deleting the mirror's progress")?;
    crate::mirror::resync::forget(&tx, name).await.context("deleting the mirror's resyncs")?;
    registry::forget_shard_moves(&tx, name).await.context("deleting the mirror's shard moves")?;
    tx.commit().await.context("committing on the target")?;
    let outcome = if has_record { Outcome::Removed } else { Outcome::Absent };
    report.push("mirror row", name, outcome, if has_record { "" } else { "none recorded" });
    let outcome = if has_progress { Outcome::Removed } else { Outcome::Absent };
    report.push("progress row", name, outcome, "");
    if registry::drop_schema_if_unused(target).await.context("dropping the pgmirror schema")? {
        report.push("schema", "pgmirror", Outcome::Removed, "no other mirror uses it");
    } else if registry::schema_exists(target).await.context("reading the target")? {
        report.push("schema", "pgmirror", Outcome::Kept, "other mirrors (or other objects) use it");
    }
    let which =
        if tables.is_empty() { "the mirrored tables".to_owned() } else { tables.to_owned() };
    let reason = if copying {
        format!(
            "{which} hold an unfinished initial copy; empty or drop them before mirroring into \
             them again (or start with --truncate-target)"
        )
    } else {
        format!("{which} keep the mirrored rows; drop them yourself if they are not needed")
    };
    report.push("target tables", name, Outcome::Kept, reason);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_one_line_per_object() {
        let mut r = DropReport::default();
        r.push("slot", "pgmirror_m", Outcome::Removed, "");
        r.push("publication", "mine", Outcome::Kept, "pgmirror did not create it");
        assert_eq!(
            r.render(),
            "removed slot \"pgmirror_m\"\nkept    publication \"mine\": pgmirror did not create it\n"
        );
        assert_eq!(r.get("publication").map(|a| a.outcome), Some(Outcome::Kept));
    }
}
