//! `pgmirror check`: a preflight of the primary (and the target) before `pgmirror mirror`.
//!
//! Every check runs, even after a failure, so one run lists everything to fix. Each prints one
//! line, and each failure (or warning) the exact statement or setting that fixes it. Nothing is
//! created: writability is tested inside a transaction that is rolled back, target tables are
//! compared read-only.

use std::fmt::Write as _;
use std::process::ExitCode;

use clap::Args;
use pgconn::{ConnConfig, SqlState, quote_ident};
use replication::ReplicationClient;
use serde::Serialize;
use tablesync::TableDef;
use tokio_postgres::Client;

mod guard;
mod row_filter;
mod sequences;
mod target_schema;
mod target_tables;

use crate::cli::TableSelection;
use crate::commands::status::{display_name, human_bytes};
use crate::conn;
use crate::text::count;

/// Arguments of `pgmirror check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The primary: --source and psql's -h -p -U -d (`PG*` variables fill in the rest).
    #[command(flatten)]
    pub source: conn::SourceArgs,
    /// The replica to write into (its checks are skipped without it).
    #[arg(long, env = "PGMIRROR_TARGET", hide_env_values = true, value_name = "URL")]
    pub target: Option<String>,
    /// Check the tables of this existing publication.
    #[arg(long, value_name = "NAME", conflicts_with = "tables")]
    pub publication: Option<String>,
    /// Check these tables (`name`, `schema.name` or `schema.*`, comma-separated).
    #[arg(long, value_name = "A,B,...", value_delimiter = ',')]
    pub tables: Option<Vec<String>>,
    /// The mirror's name, as `pgmirror mirror --name` will be given: fixes then name its
    /// publication (`pgmirror_<name>`).
    #[arg(long, default_value = "default", value_name = "NAME")]
    pub name: String,
    /// Leave these out of `--tables` (same syntax).
    #[arg(long, value_name = "A,B,...", requires = "tables")]
    pub exclude_tables: Option<Vec<String>>,
    /// Print a JSON array of `{check, ok, warning, detail, fix}` instead of text.
    #[arg(long)]
    pub json: bool,
}

/// What to check.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// The primary.
    pub source: ConnConfig,
    /// The replica, if it is to be checked too.
    pub target: Option<ConnConfig>,
    /// The tables to mirror; without them the per-table checks are skipped.
    pub tables: Option<TableSelection>,
    /// The mirror's name (its publication is `pgmirror_<name>` when pgmirror creates it).
    pub name: String,
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    /// Short name of the check, e.g. `wal_level`.
    pub check: String,
    /// Whether it passed (warnings pass).
    pub ok: bool,
    /// Passed, but something deserves attention (`fix` says what).
    pub warning: bool,
    /// What was found.
    pub detail: String,
    /// For a failure or a warning: what to run or change.
    pub fix: Option<String>,
}

/// Every check's outcome, in the order they ran.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Report {
    /// The checks.
    pub checks: Vec<CheckResult>,
}

impl Report {
    /// Whether every check passed (warnings count as passed).
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }

    /// The check called `name`, if it ran.
    pub fn get(&self, name: &str) -> Option<&CheckResult> {
        self.checks.iter().find(|c| c.check == name)
    }

    /// The failed checks.
    pub fn failures(&self) -> impl Iterator<Item = &CheckResult> {
        self.checks.iter().filter(|c| !c.ok)
    }

    /// One aligned line per check, each failure or warning followed by its fix.
    pub fn render(&self) -> String {
        let width = self.checks.iter().map(|c| c.check.chars().count()).max().unwrap_or(0);
        let mut out = String::new();
        for c in &self.checks {
            let mark = match (c.ok, c.warning) {
                (false, _) => "✘",
                (true, true) => "!",
                (true, false) => "✔",
            };
            let _ = writeln!(out, "{mark} {:<width$}  {}", c.check, c.detail);
            if let Some(fix) = &c.fix {
                let _ = writeln!(out, "  {:<width$}  fix: {fix}", "");
            }
        }
        let failed = self.failures().count();
        let n = self.checks.len();
        if failed == 0 {
            let _ = writeln!(out, "all {} passed", count(n, "check", "checks"));
        } else {
            let checks = count(n, "check", "checks");
            let _ = writeln!(out, "{failed} of {checks} failed");
        }
        out
    }

    fn pass(&mut self, check: &str, detail: impl Into<String>) {
        self.push(check, true, false, detail.into(), None);
    }

    fn warn(&mut self, check: &str, detail: impl Into<String>, fix: impl Into<String>) {
        self.push(check, true, true, detail.into(), Some(fix.into()));
    }

    fn fail(&mut self, check: &str, detail: impl Into<String>, fix: impl Into<String>) {
        self.push(check, false, false, detail.into(), Some(fix.into()));
    }

    fn push(&mut self, check: &str, ok: bool, warning: bool, detail: String, fix: Option<String>) {
        self.checks.push(CheckResult { check: check.to_owned(), ok, warning, detail, fix });
    }
}

/// Runs `pgmirror check`: exit status 0 only when every check passed.
///
/// # Errors
/// A malformed connection string (everything else is a failed check).
pub async fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let source = args.source.config()?;
    let target = args.target.as_deref().map(|t| conn::parse("--target", t)).transpose()?;
    let tables = (args.publication.is_some() || args.tables.is_some()).then_some(TableSelection {
        publication: args.publication,
        tables: args.tables,
        exclude_tables: args.exclude_tables,
    });
    let report = run_check(&CheckOptions { source, target, tables, name: args.name }).await;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    Ok(if report.passed() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Runs every check. Never fails: an unreachable server is a failed check.
pub async fn run_check(opts: &CheckOptions) -> Report {
    let mut report = Report::default();
    let tables = check_source(opts, &mut report).await;
    check_replication_connection(&opts.source, &mut report).await;
    let mut target_checked = false;
    if let Some(target) = &opts.target
        && guard::target_is_not_source(&opts.source, target, &mut report).await
    {
        check_target(&opts.source, target, tables.as_deref(), &mut report).await;
        target_checked = true;
    }
    if let Some(tables) = &tables {
        let target = opts.target.as_ref().filter(|_| target_checked);
        sequences::check(&opts.source, target, tables, &mut report).await;
    }
    report
}

/// The error text without the fix that [`pgconn::DbError`]'s `Display` appends (the fix
/// goes on its own line), for an SQL or a replication connection's error.
fn error_text(e: &(dyn std::error::Error + 'static)) -> String {
    match replication::connection_error(e).and_then(pgconn::Error::db_error) {
        Some(db) => db.message.clone(),
        None => e.to_string(),
    }
}

fn pg_error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_owned(),
        None => e.to_string(),
    }
}

/// Source checks over one SQL connection; returns the selected tables when they resolved.
async fn check_source(opts: &CheckOptions, report: &mut Report) -> Option<Vec<TableDef>> {
    let client = match pgconn::connect_sql(&opts.source).await {
        Ok(client) => client,
        Err(e) => {
            let fix = e.fix().unwrap_or_else(|| {
                "check the --source connection string and that the server accepts connections"
                    .to_owned()
            });
            report.fail("source connection", error_text(&e), fix);
            return None;
        }
    };
    match server_summary(&client).await {
        Ok(summary) => report.pass("source connection", summary),
        Err(e) => report.fail("source connection", pg_error_text(&e), "see the error above"),
    }
    if let Err(e) = settings_checks(&client, report).await {
        report.fail("source settings", pg_error_text(&e), "see the error above");
    }
    let role = match role_check(&client, report).await {
        Ok(role) => role,
        Err(e) => {
            report.fail("replication role", pg_error_text(&e), "see the error above");
            String::from("<user>")
        }
    };
    if let Err(e) = wal_retention_check(&client, report).await {
        report.fail("wal retention", pg_error_text(&e), "see the error above");
    }
    let selection = opts.tables.as_ref()?;
    let tables = match crate::setup::resolve_tables(&client, selection).await {
        Ok(t) => t,
        Err(e) => {
            report.fail("tables", "the selected tables could not be resolved", format!("{e:#}"));
            return None;
        }
    };
    let n = count(tables.len(), "table", "tables");
    report.pass("tables", format!("{n}: {}", table_list(&tables)));
    let publication = format!("pgmirror_{}", opts.name);
    if let Err(e) = table_checks(&client, selection, &tables, &role, &publication, report).await {
        report.fail("table privileges", pg_error_text(&e), "see the error above");
    }
    replica_identity_check(&tables, report);
    if let Some(publication) = &selection.publication
        && let Err(e) = row_filter::check(&client, publication, &tables, report).await
    {
        report.fail("row filters", pg_error_text(&e), "see the error above");
    }
    Some(tables)
}

async fn server_summary(client: &Client) -> Result<String, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT current_setting('server_version'), current_user, current_database()",
            &[],
        )
        .await?;
    let (version, user, db): (String, String, String) = (row.get(0), row.get(1), row.get(2));
    Ok(format!("PostgreSQL {version}, user {user:?}, database {db:?}"))
}

fn table_list(tables: &[TableDef]) -> String {
    tables.iter().map(display_name).collect::<Vec<_>>().join(", ")
}

/// `wal_level`, free replication slots and free WAL senders. Senders are counted in
/// `pg_stat_replication`, which lists every walsender to any role (`pg_stat_activity` hides
/// other roles' backend types from unprivileged ones).
pub(crate) async fn settings_checks(
    client: &Client,
    report: &mut Report,
) -> Result<(), tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT current_setting('wal_level'), \
                    current_setting('max_replication_slots')::int, \
                    (SELECT count(*) FROM pg_catalog.pg_replication_slots)::int, \
                    current_setting('max_wal_senders')::int, \
                    (SELECT count(*) FROM pg_catalog.pg_stat_replication)::int",
            &[],
        )
        .await?;
    let wal_level: String = row.get(0);
    let (max_slots, slots, max_senders, senders): (i32, i32, i32, i32) =
        (row.get(1), row.get(2), row.get(3), row.get(4));
    if wal_level == "logical" {
        report.pass("wal_level", "logical");
    } else {
        report.fail(
            "wal_level",
            format!("{wal_level}, but logical decoding needs logical"),
            "ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL (e.g. pg_ctl restart \
             -D <data directory>, or systemctl restart postgresql): wal_level only changes at \
             server start",
        );
    }
    let detail = format!("{slots} of {max_slots} used");
    if slots < max_slots {
        report.pass("replication slots", detail);
    } else {
        report.fail(
            "replication slots",
            format!("{detail}: none free for pgmirror's slot"),
            format!(
                "drop an unused slot (SELECT pg_drop_replication_slot(slot_name) FROM \
                 pg_replication_slots WHERE NOT active AND ...), or ALTER SYSTEM SET \
                 max_replication_slots = {} and restart PostgreSQL",
                max_slots.saturating_add(4)
            ),
        );
    }
    let detail = format!("{senders} of {max_senders} used");
    if senders < max_senders {
        report.pass("wal senders", detail);
    } else {
        report.fail(
            "wal senders",
            format!("{detail}: none free for pgmirror's replication connection"),
            format!(
                "ALTER SYSTEM SET max_wal_senders = {} and restart PostgreSQL, or stop an idle \
                 replication client",
                max_senders.saturating_add(4)
            ),
        );
    }
    Ok(())
}

/// The role may open replication connections (REPLICATION or superuser). Returns its name.
pub(crate) async fn role_check(
    client: &Client,
    report: &mut Report,
) -> Result<String, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT rolname::text, rolsuper, rolreplication FROM pg_catalog.pg_roles \
             WHERE rolname = current_user",
            &[],
        )
        .await?;
    let (role, superuser, replication): (String, bool, bool) = (row.get(0), row.get(1), row.get(2));
    if superuser {
        report.pass("replication role", format!("{role:?} is a superuser"));
    } else if replication {
        report.pass("replication role", format!("{role:?} has REPLICATION"));
    } else {
        report.fail(
            "replication role",
            format!("{role:?} has neither REPLICATION nor superuser"),
            format!("ALTER ROLE {} WITH REPLICATION;", quote_ident(&role)),
        );
    }
    Ok(role)
}

/// `max_slot_wal_keep_size`, and how much WAL the server holds when that is visible.
async fn wal_retention_check(
    client: &Client,
    report: &mut Report,
) -> Result<(), tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT current_setting('max_slot_wal_keep_size'), \
                    (SELECT setting FROM pg_catalog.pg_settings \
                      WHERE name = 'max_slot_wal_keep_size')::bigint",
            &[],
        )
        .await?;
    let (shown, megabytes): (String, i64) = (row.get(0), row.get(1));
    // pg_ls_waldir() needs pg_monitor or superuser: degrade to not showing the size.
    let waldir = match client
        .query_one(
            "SELECT coalesce(sum(size), 0)::bigint, count(*)::bigint FROM pg_catalog.pg_ls_waldir()",
            &[],
        )
        .await
    {
        Ok(r) => {
            let (bytes, files): (i64, i64) = (r.get(0), r.get(1));
            format!(
                "the WAL directory holds {} in {}",
                human_bytes(bytes),
                count(files, "segment file", "segment files")
            )
        }
        Err(_) => "WAL directory size not visible to this role (needs pg_monitor)".to_owned(),
    };
    if megabytes < 0 {
        report.warn(
            "wal retention",
            format!("max_slot_wal_keep_size = -1 (unlimited); {waldir}"),
            "a stopped or lagging pgmirror makes its slot keep WAL without limit until the disk \
             fills; cap it with ALTER SYSTEM SET max_slot_wal_keep_size = '50GB'; SELECT \
             pg_reload_conf(); (a slot past the cap is invalidated and needs a fresh copy)",
        );
    } else {
        report.pass(
            "wal retention",
            format!(
                "max_slot_wal_keep_size = {shown}: a slot lagging more is invalidated; {waldir}"
            ),
        );
    }
    Ok(())
}

/// SELECT on every table, and (for `--tables`) the right to create their publication.
async fn table_checks(
    client: &Client,
    selection: &TableSelection,
    tables: &[TableDef],
    role: &str,
    publication: &str,
    report: &mut Report,
) -> Result<(), tokio_postgres::Error> {
    let mut no_select = Vec::new();
    let mut not_owned = Vec::new();
    for t in tables {
        let row = client
            .query_one(
                "SELECT pg_catalog.has_table_privilege($1::oid, 'SELECT'), \
                        pg_catalog.pg_has_role(c.relowner, 'USAGE') \
                 FROM pg_catalog.pg_class c WHERE c.oid = $1::oid",
                &[&t.oid],
            )
            .await?;
        if !row.get::<_, bool>(0) {
            no_select.push(t.quoted());
        }
        if !row.get::<_, bool>(1) {
            not_owned.push(t.quoted());
        }
    }
    if no_select.is_empty() {
        let all = if tables.len() == 1 {
            "the table".to_owned()
        } else {
            format!("all {} tables", tables.len())
        };
        report.pass("select privilege", format!("{role:?} can read {all}"));
    } else {
        report.fail(
            "select privilege",
            format!("{role:?} cannot read {}", no_select.join(", ")),
            format!("GRANT SELECT ON {} TO {};", no_select.join(", "), quote_ident(role)),
        );
    }
    if let Some(name) = &selection.publication {
        let all = if tables.len() == 1 {
            "the table".to_owned()
        } else {
            format!("all {} tables", tables.len())
        };
        report.pass("publication", format!("{name:?} publishes {all}"));
        return Ok(());
    }
    // CREATE PUBLICATION ... FOR TABLE needs CREATE on the database and owning every table.
    let row = client
        .query_one(
            "SELECT pg_catalog.has_database_privilege(current_database(), 'CREATE'), \
                    current_database()::text",
            &[],
        )
        .await?;
    let (can_create, database): (bool, String) = (row.get(0), row.get(1));
    let all = tables.iter().map(TableDef::quoted).collect::<Vec<_>>().join(", ");
    let publication_sql =
        format!("CREATE PUBLICATION {} FOR TABLE {all};", quote_ident(publication));
    if !not_owned.is_empty() {
        report.fail(
            "publication",
            format!("{role:?} does not own {}, so it cannot publish them", not_owned.join(", ")),
            format!(
                "have the owner run {publication_sql} and give pgmirror --publication \
                 {publication} instead of --tables"
            ),
        );
    } else if !can_create {
        report.fail(
            "publication",
            format!("{role:?} has no CREATE privilege on the database to create a publication"),
            format!(
                "GRANT CREATE ON DATABASE {} TO {}; or have the owner run {publication_sql} \
                 and give --publication {publication}",
                quote_ident(&database),
                quote_ident(role)
            ),
        );
    } else {
        report.pass("publication", "pgmirror can create the publication for these tables");
    }
    Ok(())
}

/// Every table logs enough of an old row for UPDATE and DELETE.
fn replica_identity_check(tables: &[TableDef], report: &mut Report) {
    let missing: Vec<&TableDef> = tables.iter().filter(|t| !t.has_replica_identity()).collect();
    if missing.is_empty() {
        report.pass("replica identity", "every table has a primary key or a replica identity");
        return;
    }
    let names: Vec<String> = missing.iter().map(|t| t.quoted()).collect();
    let fix: Vec<String> = missing
        .iter()
        .map(|t| format!("ALTER TABLE {} REPLICA IDENTITY FULL;", t.quoted()))
        .collect();
    report.fail(
        "replica identity",
        format!(
            "{} {} neither a primary key nor a replica identity: once published, UPDATE and \
             DELETE on {} fail on the source",
            names.join(", "),
            if names.len() == 1 { "has" } else { "have" },
            if names.len() == 1 { "it" } else { "them" }
        ),
        format!("{} (or add a primary key)", fix.join(" ")),
    );
}

/// A replication connection is admitted (`pg_hba.conf`, role) and answers IDENTIFY_SYSTEM.
async fn check_replication_connection(source: &ConnConfig, report: &mut Report) {
    const CHECK: &str = "replication connection";
    let mut client = match ReplicationClient::connect(source).await {
        Ok(c) => c,
        Err(e) => {
            let fix = e.fix().unwrap_or_else(|| "see the error above".to_owned());
            report.fail(CHECK, error_text(&e), fix);
            return;
        }
    };
    match client.identify_system().await {
        Ok(system) => report.pass(
            CHECK,
            format!(
                "IDENTIFY_SYSTEM: system id {}, timeline {}, WAL at {}",
                system.system_id, system.timeline, system.xlogpos
            ),
        ),
        Err(e) => {
            let fix = e
                .db_error()
                .and_then(pgconn::DbError::fix)
                .unwrap_or_else(|| "see the error above".to_owned());
            report.fail(CHECK, format!("IDENTIFY_SYSTEM failed: {}", error_text(&e)), fix);
        }
    }
    client.close().await;
}

async fn check_target(
    source: &ConnConfig,
    target: &ConnConfig,
    tables: Option<&[TableDef]>,
    report: &mut Report,
) {
    let mut client = match pgconn::connect_sql(target).await {
        Ok(c) => c,
        Err(e) => {
            let fix = e.fix().unwrap_or_else(|| {
                "check the --target connection string and that the server accepts connections"
                    .to_owned()
            });
            report.fail("target connection", error_text(&e), fix);
            return;
        }
    };
    match server_summary(&client).await {
        Ok(summary) => report.pass("target connection", summary),
        Err(e) => report.fail("target connection", pg_error_text(&e), "see the error above"),
    }
    check_target_writable(&mut client, report).await;
    let Some(tables) = tables else { return };
    let mut plan_report = Report::default();
    let plan = target_schema::plan(source, &client, tables, &mut plan_report).await;
    if let Err(e) = target_tables::check(&client, tables, plan.as_ref(), report).await {
        report.fail("target tables", format!("{e:#}"), "see the error above");
    }
    report.checks.extend(plan_report.checks);
    if let Some(plan) = &plan {
        target_schema::report(plan, report);
    }
}

/// Creates the `pgmirror` schema and a temporary table in a transaction that is rolled back.
async fn check_target_writable(client: &mut Client, report: &mut Report) {
    const CHECK: &str = "target writable";
    let attempt = async {
        let tx = client.transaction().await?;
        tx.batch_execute(
            "CREATE SCHEMA IF NOT EXISTS pgmirror; \
             CREATE TEMPORARY TABLE pgmirror_check_probe (x int) ON COMMIT DROP",
        )
        .await?;
        tx.rollback().await
    };
    match attempt.await {
        Ok(()) => report.pass(CHECK, "can create the pgmirror schema and write (rolled back)"),
        Err(e) => {
            let fix = match e.code() {
                Some(&SqlState::READ_ONLY_SQL_TRANSACTION) => {
                    "the target is read-only (a standby, or default_transaction_read_only \
                            = on); point --target at a writable server"
                        .to_owned()
                }
                Some(&SqlState::INSUFFICIENT_PRIVILEGE) => {
                    let (user, database) = who(client).await;
                    format!(
                        "GRANT CREATE, TEMPORARY ON DATABASE {database} TO {user}; (for the \
                         pgmirror schema)"
                    )
                }
                _ => "see the error above".to_owned(),
            };
            report.fail(CHECK, pg_error_text(&e), fix);
        }
    }
}

/// The session's role and database, quoted, for the GRANTs of a fix.
async fn who(client: &Client) -> (String, String) {
    match client.query_one("SELECT current_user::text, current_database()::text", &[]).await {
        Ok(row) => (quote_ident(row.get(0)), quote_ident(row.get(1))),
        Err(_) => ("CURRENT_USER".to_owned(), "<target database>".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_aligns_and_prints_fixes() {
        let mut r = Report::default();
        r.pass("wal_level", "logical");
        r.fail("replication role", "\"bob\" has neither", "ALTER ROLE \"bob\" WITH REPLICATION;");
        r.warn("wal retention", "unlimited", "cap it");
        let text = r.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "✔ wal_level         logical");
        assert_eq!(lines[1], "✘ replication role  \"bob\" has neither");
        assert_eq!(lines[2], "                    fix: ALTER ROLE \"bob\" WITH REPLICATION;");
        assert_eq!(lines[3], "! wal retention     unlimited");
        assert_eq!(lines[5], "1 of 3 checks failed");
        assert!(!r.passed());
        assert_eq!(r.failures().count(), 1);
    }

    #[test]
    fn json_is_an_array_of_checks() {
        let mut r = Report::default();
        r.pass("wal_level", "logical");
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v,
            serde_json::json!([
                {"check": "wal_level", "ok": true, "warning": false, "detail": "logical", "fix": null}
            ])
        );
    }
}
