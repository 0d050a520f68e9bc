//! `pgmirror status`: the mirror's slot, lag, stored progress and row counts in one view.
//!
//! It reads what the primary shows in `pg_replication_slots` and `pg_stat_replication` (as a
//! physical replica's `pg_stat_wal_receiver` would show on the standby), and the target's
//! `pgmirror.mirrors` and `pgmirror.progress`. Read-only on both servers. It exits non-zero
//! when the mirror is unhealthy (see [`problems`]), so it serves as a health check.

mod max_lag;

use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use pgconn::ConnConfig;
use serde::Serialize;
use tablesync::TableDef;
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

use crate::conn;
use crate::display::{display_name, human_bytes};
use crate::mirror::lookup::resolve_mirror;
use crate::mirror::registry::MirrorState;
use crate::shutdown::Shutdown;
use crate::target_url::TargetUrl;

pub use max_lag::{BadMaxLag, MaxLag};

/// Arguments of `pgmirror status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The primary: --source and psql's -h -p -U -d (`PG*` variables fill in the rest).
    #[command(flatten)]
    pub source: conn::SourceArgs,
    /// The replica: adds its stored progress, lag in seconds and row counts. Repeated: the
    /// shards of a sharded mirror, each shown in turn.
    #[arg(long, env = "PGMIRROR_TARGET", hide_env_values = true, value_name = "URL")]
    pub target: Vec<String>,
    /// The slot to show (default: the mirror's, else `pgmirror_default`).
    #[arg(long, value_name = "NAME", conflicts_with = "name")]
    pub slot: Option<String>,
    /// The mirror to show (default: the only one recorded on the target, else `default`).
    #[arg(long, value_name = "MIRROR")]
    pub name: Option<String>,
    /// Print one JSON object instead of text (with --watch, one per line).
    #[arg(long)]
    pub json: bool,
    /// Show the status again every N seconds until Ctrl-C: in place on a terminal, else one
    /// report (or JSON line) after another. Always exits 0.
    #[arg(long, value_name = "SECONDS")]
    pub watch: Option<u64>,
    /// Unhealthy (exit 1) when the lag is over this: a duration (`30s`, `5m`), compared with
    /// PostgreSQL's `replay_lag`, or WAL bytes (`64MB`, `1GB`).
    #[arg(long, value_name = "LAG")]
    pub max_lag: Option<MaxLag>,
}

/// The slot as the primary shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlotStatus {
    /// A walsender is streaming from it.
    pub active: bool,
    /// That walsender's pid.
    pub active_pid: Option<i32>,
    /// The consumer's `application_name` (from `pg_stat_replication`).
    pub application_name: Option<String>,
    /// The consumer's address; `None` over a Unix socket, or when hidden from this role.
    pub client_addr: Option<String>,
    /// The walsender's state (`streaming`, `catchup`, ...); `None` when hidden from this role.
    pub state: Option<String>,
    /// This role may see the consumer's address, state and lag: PostgreSQL shows them only to
    /// superusers and members of `pg_read_all_stats`.
    pub details_visible: bool,
    /// Everything before it is applied and confirmed by the consumer.
    pub confirmed_flush_lsn: Option<String>,
    /// The oldest WAL the slot keeps.
    pub restart_lsn: Option<String>,
    /// WAL kept for the slot: current LSN minus `restart_lsn`.
    pub retained_wal_bytes: Option<i64>,
    /// `reserved`, `extended`, `unreserved` or `lost`.
    pub wal_status: Option<String>,
    /// Bytes the slot may still fall behind before it is invalidated; `None` is unlimited.
    pub safe_wal_size: Option<i64>,
    /// The database the slot decodes.
    pub database: Option<String>,
}

/// The target's stored progress for the mirror.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetProgress {
    /// Resume point: end of the last applied transaction.
    pub end_lsn: String,
    /// That transaction's commit LSN (none right after the initial copy).
    pub commit_lsn: Option<String>,
    /// Its commit time on the primary (RFC 3339).
    pub commit_time: Option<String>,
    /// Seconds since that commit time. Not the lag: on an idle primary it grows although
    /// nothing waits to be applied.
    pub commit_age_seconds: Option<f64>,
    /// When the row was last written (RFC 3339).
    pub updated_at: String,
}

/// Row counts of one mirrored table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableCounts {
    /// `schema.table`.
    pub table: String,
    /// Rows on the primary; with a row filter, the rows it lets through.
    pub source_rows: i64,
    /// Rows on the target; `None` when the table is missing there or no target was given.
    pub target_rows: Option<i64>,
    /// The publication's row filter (PostgreSQL 15+): only rows matching it are mirrored.
    pub row_filter: Option<String>,
}

/// Everything `pgmirror status` shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    /// The mirror's name.
    pub mirror: String,
    /// Set-up state from `pgmirror.mirrors` (`copying`, `streaming`); `None` when unknown.
    pub state: Option<String>,
    /// The slot's name.
    pub slot: String,
    /// The publication, when known (recorded on the target or named after the mirror).
    pub publication: Option<String>,
    /// `pg_current_wal_lsn()` on the primary.
    pub source_lsn: String,
    /// The slot; `None` when it does not exist.
    pub slot_status: Option<SlotStatus>,
    /// Bytes of WAL the mirror has not confirmed: current LSN minus `confirmed_flush_lsn`.
    pub lag_bytes: Option<i64>,
    /// PostgreSQL's `replay_lag` for the slot's consumer: how long ago the primary sent the
    /// oldest change pgmirror has not yet confirmed applied; 0 once everything sent is applied.
    /// `None` without a consumer, or when hidden from this role.
    pub lag_seconds: Option<f64>,
    /// The target's stored progress; `None` without a target or a progress row.
    pub target: Option<TargetProgress>,
    /// Per-table row counts.
    pub tables: Vec<TableCounts>,
    /// No problem below: the exit status is 0.
    pub healthy: bool,
    /// What makes the mirror unhealthy (slot missing, invalidated or inactive; lag over
    /// `--max-lag`).
    pub problems: Vec<String>,
    /// Things that could not be shown, and why.
    pub notes: Vec<String>,
}

/// What to show.
#[derive(Debug, Clone)]
pub struct StatusOptions {
    /// The primary.
    pub source: ConnConfig,
    /// The replica, if any.
    pub target: Option<ConnConfig>,
    /// `--name`.
    pub name: Option<String>,
    /// `--slot`.
    pub slot: Option<String>,
    /// `--max-lag`.
    pub max_lag: Option<MaxLag>,
}

/// Runs `pgmirror status`, once or (with `--watch`) until Ctrl-C. Once, it exits 1 when the
/// mirror is unhealthy.
///
/// # Errors
/// Connection and query errors (with `--watch` they are shown and retried instead).
pub async fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    if args.target.len() > 1 {
        anyhow::ensure!(
            args.watch.is_none(),
            "--watch takes one --target; watch each shard on its own"
        );
        let mut healthy = true;
        if args.target.iter().any(|t| applier::mysql::session::is_mysql_url(t)) {
            let source = args.source.config()?;
            for (i, target) in args.target.iter().enumerate() {
                let TargetUrl::MySql(url) = conn::parse_target(target)? else {
                    anyhow::bail!(
                        "--target {}: the shards of a mirror are all PostgreSQL or all \
                         MySQL/MariaDB databases",
                        target.split('@').next_back().unwrap_or_default()
                    );
                };
                if !args.json {
                    println!("shard {i}:");
                }
                let code = crate::mirror::mysql::ops::status(
                    &source,
                    &url,
                    args.name.as_deref(),
                    args.json,
                )
                .await
                .with_context(|| format!("shard {i}"))?;
                healthy &= code == ExitCode::SUCCESS;
            }
            return Ok(if healthy { ExitCode::SUCCESS } else { ExitCode::FAILURE });
        }
        for (i, target) in args.target.iter().enumerate() {
            let opts = StatusOptions {
                source: args.source.config()?,
                target: Some(conn::parse("--target", target)?),
                name: args.name.clone(),
                slot: args.slot.clone(),
                max_lag: args.max_lag,
            };
            let status = collect_status(&opts).await.with_context(|| format!("shard {i}"))?;
            if !args.json {
                println!("shard {i}:");
            }
            print_status(&status, args.json)?;
            healthy &= status.healthy;
        }
        return Ok(if healthy { ExitCode::SUCCESS } else { ExitCode::FAILURE });
    }
    let target = match args.target.first().map(|t| conn::parse_target(t)).transpose()? {
        Some(TargetUrl::MySql(target)) => {
            let source = args.source.config()?;
            return crate::mirror::mysql::ops::status(
                &source,
                &target,
                args.name.as_deref(),
                args.json,
            )
            .await;
        }
        Some(TargetUrl::Nats(url)) => {
            let name = args.name.as_deref().unwrap_or("default");
            let status =
                crate::mirror::nats::ops::status(&args.source.config()?, &url, name).await?;
            print!("{}", status.render());
            return Ok(if status.healthy() { ExitCode::SUCCESS } else { ExitCode::FAILURE });
        }
        Some(TargetUrl::Postgres(target)) => Some(target),
        None => None,
    };
    let opts = StatusOptions {
        source: args.source.config()?,
        target,
        name: args.name,
        slot: args.slot,
        max_lag: args.max_lag,
    };
    let Some(every) = args.watch else {
        let status = collect_status(&opts).await?;
        print_status(&status, args.json)?;
        return Ok(if status.healthy { ExitCode::SUCCESS } else { ExitCode::FAILURE });
    };
    let every = Duration::from_secs(every.max(1));
    // Refreshing in place is for a person at a terminal; a pipe or a file gets one report (or
    // one JSON line) after another, with nothing else.
    let in_place = std::io::stdout().is_terminal();
    // Nothing is applied here, so a stop has no transaction to finish and nothing to say.
    let mut shutdown = Shutdown::on_signals_quietly();
    loop {
        let shown = tokio::select! {
            shown = collect_status(&opts) => shown,
            () = shutdown.wait() => return Ok(ExitCode::SUCCESS),
        };
        if in_place {
            // Cursor home and clear screen.
            print!("\x1b[H\x1b[2J");
        }
        match shown {
            Ok(status) => print_status(&status, args.json)?,
            Err(e) if args.json => {
                println!("{}", serde_json::json!({ "error": format!("{e:#}") }));
            }
            Err(e) => println!("error: {e:#} (retrying)"),
        }
        if in_place {
            println!("every {}s; Ctrl-C to stop", every.as_secs());
        } else if !args.json {
            println!();
        }
        std::io::stdout().flush()?;
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = shutdown.wait() => return Ok(ExitCode::SUCCESS),
        }
    }
}

fn print_status(status: &Status, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(status)?);
    } else {
        print!("{}", status.render());
    }
    Ok(())
}

/// Gathers the status from the primary and (if given) the target.
///
/// # Errors
/// Connection and query errors.
pub async fn collect_status(opts: &StatusOptions) -> anyhow::Result<Status> {
    let source = pgconn::connect_sql(&opts.source).await.context("connecting to the source")?;
    let target = match &opts.target {
        Some(cfg) => {
            let t = pgconn::connect_sql(cfg).await.context("connecting to the target")?;
            // A status report never waits long: the initial copy holds each table locked
            // until it commits, and such a table gets no count (see `table_counts`). Set once
            // for this session, which only reads.
            t.batch_execute("SET lock_timeout = '500ms'").await.context("setting lock_timeout")?;
            Some(t)
        }
        None => None,
    };
    let mirror =
        resolve_mirror(target.as_ref(), opts.name.as_deref(), opts.slot.as_deref()).await?;
    let mut notes = Vec::new();

    let source_lsn: String = source
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .context("reading the source's WAL position")?
        .get(0);
    let SlotRow { slot: slot_status, lag_bytes, lag_seconds, role } =
        slot_status(&source, &mirror.slot).await?;
    if slot_status.as_ref().is_some_and(|s| s.active && !s.details_visible) {
        notes.push(format!(
            "\"?\" = hidden from role {role:?}: pg_stat_replication shows the consumer's address, \
             state and lag only to superusers and members of pg_read_all_stats; to see them: \
             GRANT pg_read_all_stats TO {};",
            pgconn::quote_ident(&role)
        ));
    }

    let progress = match &target {
        Some(t) => target_progress(t, &mirror.name).await?,
        None => None,
    };
    if target.is_some() && progress.is_none() {
        notes.push(format!("no progress row for mirror {:?} on the target", mirror.name));
    }

    // The tables: the recorded publication, else one named after the mirror if it exists.
    let publication = match &mirror.record {
        Some(r) => Some(r.publication.clone()),
        None => {
            let guess = format!("pgmirror_{}", mirror.name);
            let exists = source
                .query_opt("SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = $1", &[&guess])
                .await
                .context("looking up the publication")?
                .is_some();
            exists.then_some(guess)
        }
    };
    let mut tables = Vec::new();
    match &publication {
        Some(p) => match tablesync::publication_tables(&source, p).await {
            Ok(defs) => {
                for def in &defs {
                    tables.push(table_counts(&source, target.as_ref(), def).await?);
                }
            }
            Err(e) => notes.push(format!("cannot list the tables: {e}")),
        },
        None => notes.push("publication unknown (give --target or --name): no row counts".into()),
    }

    let mut status = Status {
        mirror: mirror.name,
        state: mirror.record.as_ref().map(|r| {
            match r.state {
                MirrorState::Copying => "copying",
                MirrorState::Streaming => "streaming",
            }
            .to_owned()
        }),
        slot: mirror.slot,
        publication,
        source_lsn,
        slot_status,
        lag_bytes,
        lag_seconds,
        target: progress,
        tables,
        healthy: true,
        problems: Vec::new(),
        notes,
    };
    status.problems = problems(&status, opts.max_lag);
    status.healthy = status.problems.is_empty();
    Ok(status)
}

/// What makes the mirror unhealthy, one line each; empty when it is healthy.
pub fn problems(status: &Status, max_lag: Option<MaxLag>) -> Vec<String> {
    let slot = &status.slot;
    let Some(s) = &status.slot_status else {
        return vec![format!(
            "slot {slot:?} does not exist on the source: create the mirror with `pgmirror mirror`"
        )];
    };
    let mut out = Vec::new();
    if s.wal_status.as_deref() == Some("lost") {
        out.push(format!(
            "slot {slot:?} is invalidated (wal_status lost): the primary removed WAL it still \
             needed; recover with `pgmirror drop` then `pgmirror mirror` (a fresh initial copy)"
        ));
    }
    if !s.active {
        out.push(format!("slot {slot:?} is inactive: no pgmirror is connected to it"));
    }
    match max_lag {
        Some(MaxLag::Bytes(max)) => match status.lag_bytes {
            Some(lag) if lag > max => {
                out.push(format!("lag {} is over --max-lag {}", human_bytes(lag), human_bytes(max)))
            }
            Some(_) => {}
            None => out.push("lag in bytes unknown (the slot has no confirmed position)".into()),
        },
        Some(MaxLag::Seconds(max)) => match status.lag_seconds {
            Some(lag) if lag > max => {
                out.push(format!("lag {lag:.1} s is over --max-lag {}", MaxLag::Seconds(max)));
            }
            Some(_) => {}
            // An inactive slot is reported above; otherwise the role cannot see the lag.
            None if !s.active => {}
            None => out.push(
                "lag in seconds unknown: pg_stat_replication hides it from this role (see the \
                 note on pg_read_all_stats), or give --max-lag in bytes"
                    .into(),
            ),
        },
        None => {}
    }
    out
}

/// What [`slot_status`] reads.
struct SlotRow {
    slot: Option<SlotStatus>,
    lag_bytes: Option<i64>,
    lag_seconds: Option<f64>,
    /// The role `status` runs as.
    role: String,
}

async fn slot_status(source: &Client, slot: &str) -> anyhow::Result<SlotRow> {
    let role: String = source
        .query_one("SELECT current_user::text", &[])
        .await
        .context("reading current_user")?
        .get(0);
    let row = source
        .query_opt(
            "SELECT s.active, s.active_pid, r.application_name, host(r.client_addr), r.state, \
                    s.confirmed_flush_lsn::text, s.restart_lsn::text, \
                    pg_wal_lsn_diff(pg_current_wal_lsn(), s.restart_lsn)::bigint, \
                    s.wal_status, s.safe_wal_size, s.database::text, \
                    pg_wal_lsn_diff(pg_current_wal_lsn(), s.confirmed_flush_lsn)::bigint, \
                    extract(epoch FROM r.replay_lag)::float8, \
                    pg_has_role('pg_read_all_stats', 'USAGE') \
             FROM pg_catalog.pg_replication_slots s \
             LEFT JOIN pg_catalog.pg_stat_replication r ON r.pid = s.active_pid \
             WHERE s.slot_name = $1",
            &[&slot],
        )
        .await
        .context("reading pg_replication_slots")?;
    let Some(r) = row else {
        return Ok(SlotRow { slot: None, lag_bytes: None, lag_seconds: None, role });
    };
    let slot = SlotStatus {
        active: r.get(0),
        active_pid: r.get(1),
        application_name: r.get(2),
        client_addr: r.get(3),
        state: r.get(4),
        details_visible: r.get(13),
        confirmed_flush_lsn: r.get(5),
        restart_lsn: r.get(6),
        retained_wal_bytes: r.get(7),
        wal_status: r.get(8),
        safe_wal_size: r.get(9),
        database: r.get(10),
    };
    // PostgreSQL clears `replay_lag` once the consumer has applied everything sent to it, and
    // while it falls behind estimates the lag of the position it is stuck at, so it grows.
    let replay_lag: Option<f64> = r.get(12);
    let lag_seconds = match replay_lag {
        _ if !slot.active || !slot.details_visible => None,
        Some(lag) => Some(lag),
        None => Some(0.0),
    };
    Ok(SlotRow { slot: Some(slot), lag_bytes: r.get(11), lag_seconds, role })
}

async fn target_progress(target: &Client, mirror: &str) -> anyhow::Result<Option<TargetProgress>> {
    let stored =
        applier::progress::read(target, mirror).await.context("reading pgmirror.progress")?;
    Ok(stored.map(|p| TargetProgress {
        end_lsn: p.end_lsn.to_string(),
        commit_lsn: p.commit_lsn.map(|l| l.to_string()),
        commit_time: p.commit_time,
        commit_age_seconds: p.commit_age_seconds,
        updated_at: p.updated_at,
    }))
}

/// Exact row counts on both sides (`ONLY` the table itself unless it is partitioned). On the
/// source only the rows the publication's row filter lets through count: the others are not
/// mirrored.
pub(crate) async fn table_counts(
    source: &Client,
    target: Option<&Client>,
    table: &TableDef,
) -> anyhow::Result<TableCounts> {
    let only = if table.is_partitioned { "" } else { "ONLY " };
    let sql = format!("SELECT count(*) FROM {only}{}", table.quoted());
    // The filter is PostgreSQL's own deparsed expression (`pg_publication_tables.rowfilter`).
    let source_sql = match &table.row_filter {
        Some(filter) => format!("{sql} WHERE ({filter})"),
        None => sql.clone(),
    };
    let source_rows: i64 = source
        .query_one(&source_sql, &[])
        .await
        .with_context(|| format!("counting rows of {} on the source", table.quoted()))?
        .get(0);
    let target_rows = match target {
        Some(t) => {
            let exists: bool = t
                .query_one("SELECT to_regclass($1::text) IS NOT NULL", &[&table.quoted()])
                .await
                .context("looking up a target table")?
                .get(0);
            if exists {
                // The initial copy holds the table locked until it commits: no count yet
                // (the caller's session has a short `lock_timeout`).
                match t.query_one(&sql, &[]).await {
                    Ok(row) => Some(row.get(0)),
                    Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => None,
                    Err(e) => {
                        return Err(anyhow::Error::new(e).context(format!(
                            "counting rows of {} on the target",
                            table.quoted()
                        )));
                    }
                }
            } else {
                None
            }
        }
        None => None,
    };
    Ok(TableCounts {
        table: display_name(table),
        source_rows,
        target_rows,
        row_filter: table.row_filter.clone(),
    })
}

impl Status {
    /// The text view.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let state = self.state.as_deref().unwrap_or("not recorded on a target");
        let _ = writeln!(out, "mirror       {} ({state})", self.mirror);
        let _ = writeln!(
            out,
            "slot         {}   publication {}",
            self.slot,
            self.publication.as_deref().unwrap_or("?")
        );
        let _ = writeln!(out, "source WAL   {}", self.source_lsn);
        match &self.slot_status {
            None => {
                let _ = writeln!(out, "slot state   missing");
            }
            Some(s) => {
                if s.active {
                    // No address is a Unix socket, unless this role may not see it (a note
                    // then says what "?" means).
                    let socket = if s.details_visible { "local socket" } else { "?" };
                    let _ = writeln!(
                        out,
                        "slot state   active, pid {}, {} from {} ({})",
                        s.active_pid.map_or_else(|| "?".to_owned(), |p| p.to_string()),
                        s.application_name.as_deref().unwrap_or("?"),
                        s.client_addr.as_deref().unwrap_or(socket),
                        s.state.as_deref().unwrap_or("?"),
                    );
                } else {
                    let _ = writeln!(out, "slot state   inactive (no pgmirror connected)");
                }
                let _ = writeln!(
                    out,
                    "             confirmed_flush {}, restart {}, WAL retained {}",
                    s.confirmed_flush_lsn.as_deref().unwrap_or("-"),
                    s.restart_lsn.as_deref().unwrap_or("-"),
                    s.retained_wal_bytes.map_or_else(|| "-".to_owned(), human_bytes),
                );
                let _ = writeln!(
                    out,
                    "             wal_status {}, safe_wal_size {}",
                    s.wal_status.as_deref().unwrap_or("-"),
                    s.safe_wal_size.map_or_else(|| "unlimited".to_owned(), human_bytes),
                );
            }
        }
        let _ = writeln!(
            out,
            "lag          {} of WAL, {} (replay_lag)",
            self.lag_bytes.map_or_else(|| "?".to_owned(), human_bytes),
            self.lag_seconds.map_or_else(|| "? s".to_owned(), |s| format!("{s:.1} s")),
        );
        if let Some(p) = &self.target {
            let _ = writeln!(
                out,
                "target       progress {}, last commit {} at {}{}",
                p.end_lsn,
                p.commit_lsn.as_deref().unwrap_or("-"),
                p.commit_time.as_deref().unwrap_or("-"),
                p.commit_age_seconds.map_or_else(String::new, |a| format!(" ({a:.0} s ago)")),
            );
        }
        if !self.tables.is_empty() {
            let width = self.tables.iter().map(|t| t.table.len()).max().unwrap_or(0).max(5);
            let _ =
                writeln!(out, "{:<width$}  {:>12}  {:>12}", "table", "source rows", "target rows");
            for t in &self.tables {
                let target = t.target_rows.map_or_else(|| "-".to_owned(), |n| n.to_string());
                let mark = if t.target_rows == Some(t.source_rows) { "" } else { "  ≠" };
                let filter =
                    t.row_filter.as_deref().map_or_else(String::new, |f| format!("  WHERE {f}"));
                let _ = writeln!(
                    out,
                    "{:<width$}  {:>12}  {:>12}{mark}{filter}",
                    t.table, t.source_rows, target
                );
            }
        }
        let health = if self.healthy { "healthy" } else { "UNHEALTHY" };
        let _ = writeln!(out, "health       {health}");
        for p in &self.problems {
            let _ = writeln!(out, "  - {p}");
        }
        for n in &self.notes {
            let _ = writeln!(out, "note: {n}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(slot: Option<SlotStatus>) -> Status {
        Status {
            mirror: "m".into(),
            state: None,
            slot: "pgmirror_m".into(),
            publication: None,
            source_lsn: "0/0".into(),
            slot_status: slot,
            lag_bytes: Some(2048),
            lag_seconds: Some(3.0),
            target: None,
            tables: vec![],
            healthy: true,
            problems: vec![],
            notes: vec![],
        }
    }

    fn slot(active: bool, wal_status: &str) -> SlotStatus {
        SlotStatus {
            active,
            active_pid: active.then_some(42),
            application_name: None,
            client_addr: None,
            state: None,
            details_visible: true,
            confirmed_flush_lsn: Some("0/10".into()),
            restart_lsn: Some("0/8".into()),
            retained_wal_bytes: Some(8),
            wal_status: Some(wal_status.into()),
            safe_wal_size: None,
            database: None,
        }
    }

    #[test]
    fn missing_lost_inactive_and_lagging_slots_are_unhealthy() {
        assert!(problems(&status(Some(slot(true, "reserved"))), None).is_empty());
        let missing = problems(&status(None), None);
        assert!(missing[0].contains("does not exist"), "{missing:?}");
        let lost = problems(&status(Some(slot(false, "lost"))), None);
        assert!(lost[0].contains("invalidated") && lost[1].contains("inactive"), "{lost:?}");
        let healthy = status(Some(slot(true, "reserved")));
        assert!(problems(&healthy, Some(MaxLag::Bytes(4096))).is_empty());
        assert!(problems(&healthy, Some(MaxLag::Seconds(5.0))).is_empty());
        let over = problems(&healthy, Some(MaxLag::Bytes(1024)));
        assert_eq!(over, ["lag 2.0 kB is over --max-lag 1.0 kB"]);
        let over = problems(&healthy, Some(MaxLag::Seconds(2.0)));
        assert_eq!(over, ["lag 3.0 s is over --max-lag 2 s"]);
    }
}
