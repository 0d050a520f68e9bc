//! `pgmirror check`: a preflight of the primary (and the target) before `pgmirror mirror`.
//!
//! Every check runs, even after a failure, so one run lists everything to fix. Each prints one
//! line, and each failure (or warning) the exact statement or setting that fixes it. Nothing is
//! created: writability is tested inside a transaction that is rolled back, target tables are
//! compared read-only.

use std::process::ExitCode;

use clap::Args;
use pgconn::{ConnConfig, SqlState, quote_ident};
use replication::ReplicationClient;
use tablesync::TableDef;
use tokio_postgres::Client;

mod row_filter;
mod sequences;
mod target_not_source;
mod target_schema;
mod target_tables;

use crate::conn;
use crate::display::{count, display_name, human_bytes};
use crate::preflight::{Report, error_text, pg_error_text, role_check, settings_checks};
use crate::selection::TableSelection;
use crate::target_url::TargetUrl;

/// Arguments of `pgmirror check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The primary: --source and psql's -h -p -U -d (`PG*` variables fill in the rest).
    #[command(flatten)]
    pub source: conn::SourceArgs,
    /// The replica to write into (its checks are skipped without it). Repeated: every shard
    /// of a sharded mirror is checked.
    #[arg(long, env = "PGMIRROR_TARGET", hide_env_values = true, value_name = "URL")]
    pub target: Vec<String>,
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
    /// NATS target: the stream `pgmirror mirror --nats-stream` will publish into.
    #[arg(long, default_value = "PGMIRROR", value_name = "NAME")]
    pub nats_stream: String,
    /// NATS target: the subject prefix `pgmirror mirror --subject-prefix` will use.
    #[arg(long, default_value = "pgmirror", value_name = "PREFIX")]
    pub subject_prefix: String,
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

/// Runs `pgmirror check`: exit status 0 only when every check passed.
///
/// # Errors
/// A malformed connection string (everything else is a failed check).
pub async fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let source = args.source.config()?;
    let tables = (args.publication.is_some() || args.tables.is_some()).then_some(TableSelection {
        publication: args.publication,
        tables: args.tables,
        exclude_tables: args.exclude_tables,
    });
    let targets: Vec<Option<&String>> =
        if args.target.is_empty() { vec![None] } else { args.target.iter().map(Some).collect() };
    let mut passed = true;
    for (i, target) in targets.iter().enumerate() {
        let target = target.map(|t| conn::parse_target(t)).transpose()?;
        let opts = CheckOptions {
            source: source.clone(),
            target: None,
            tables: tables.clone(),
            name: args.name.clone(),
        };
        let report = match target {
            Some(TargetUrl::MySql(mysql)) => {
                let mut report = run_check(&opts).await;
                crate::mirror::mysql::check::check(
                    &opts.source,
                    &mysql,
                    opts.tables.as_ref(),
                    &mut report,
                )
                .await;
                report
            }
            Some(TargetUrl::Postgres(target)) => {
                run_check(&CheckOptions { target: Some(target), ..opts }).await
            }
            Some(TargetUrl::Nats(url)) => {
                let mut report = run_check(&opts).await;
                let lines =
                    crate::mirror::nats::ops::check(&url, &args.nats_stream, &args.subject_prefix)
                        .await;
                for line in lines {
                    match line {
                        Ok(detail) => report.pass("nats target", detail),
                        Err(problem) => report.fail("nats target", problem, "see the line above"),
                    }
                }
                report
            }
            None => run_check(&opts).await,
        };
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            if targets.len() > 1 {
                println!("shard {i}:");
            }
            print!("{}", report.render());
        }
        passed &= report.passed();
    }
    Ok(if passed { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Runs every check. Never fails: an unreachable server is a failed check.
pub async fn run_check(opts: &CheckOptions) -> Report {
    let mut report = Report::default();
    let tables = check_source(opts, &mut report).await;
    check_replication_connection(&opts.source, &mut report).await;
    let mut target_checked = false;
    if let Some(target) = &opts.target
        && target_not_source::check(&opts.source, target, &mut report).await
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
    let tables = match crate::selection::resolve_tables(&client, selection).await {
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
                    let (user, database) = target_tables::who(client).await;
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
