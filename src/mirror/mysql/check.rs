//! `pgmirror check` of a MySQL/MariaDB target: each check passes, warns or fails with its fix.

use applier::mysql::schema;
use applier::mysql::session::{self, MySqlUrl};
use pgconn::ConnConfig;
use sqlx::{MySqlConnection, Row};

use crate::preflight::Report;
use crate::selection::TableSelection;

/// Statements of one mirror go up to 4 MB of values; rows larger than that need more.
const MIN_PACKET: u64 = 16 << 20;

/// Privileges the mirror uses on the target database.
const PRIVILEGES: [&str; 7] = ["SELECT", "INSERT", "UPDATE", "DELETE", "CREATE", "ALTER", "DROP"];

/// Adds the target's checks to `report`: connection and version, privileges, InnoDB,
/// `sql_mode`, `max_allowed_packet`, `lower_case_table_names`, time zone handling, commit
/// durability, and with `tables` the names and the existing tables.
pub async fn check(
    source: &ConnConfig,
    target: &MySqlUrl,
    tables: Option<&TableSelection>,
    report: &mut Report,
) {
    let (mut conn, server) = match session::connect(target.options()).await {
        Ok(c) => c,
        Err(e) => {
            report.fail(
                "target connection",
                format!("{e:#}"),
                "check the --target URL (mysql://user:password@host:port/database) and that the \
                 server accepts connections",
            );
            return;
        }
    };
    let kind = if server.mariadb { "MariaDB" } else { "MySQL" };
    report.pass("target connection", format!("{kind} {} at {target}", server.version));
    let major_ok = version_ok(&server.version, server.mariadb);
    if major_ok {
        report.pass("target version", format!("{kind} {}", server.version));
    } else {
        report.fail(
            "target version",
            format!("{kind} {} is too old", server.version),
            "use MariaDB 10.3 or newer, or MySQL 8.0 or newer",
        );
    }
    if let Err(e) = settings(&mut conn, target, report).await {
        report.fail("target settings", format!("{e:#}"), "see the error above");
    }
    if let Some(selection) = tables {
        tables_check(source, &mut conn, selection, report).await;
    }
}

fn version_ok(version: &str, mariadb: bool) -> bool {
    let mut parts = version.split(['.', '-']).filter_map(|p| p.parse::<u32>().ok());
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if mariadb { (major, minor) >= (10, 3) } else { major >= 8 }
}

async fn variable(conn: &mut MySqlConnection, name: &str) -> anyhow::Result<String> {
    let row = sqlx::query(&format!("SELECT CAST(@@{name} AS CHAR)")).fetch_one(&mut *conn).await?;
    Ok(row.try_get::<Option<String>, _>(0)?.unwrap_or_default())
}

async fn settings(
    conn: &mut MySqlConnection,
    target: &MySqlUrl,
    report: &mut Report,
) -> anyhow::Result<()> {
    let db = target.database();
    let held: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(PRIVILEGE_TYPE AS CHAR) FROM information_schema.USER_PRIVILEGES \
         WHERE GRANTEE = CONCAT('''', SUBSTRING_INDEX(CURRENT_USER(), '@', 1), '''@''', \
                                SUBSTRING_INDEX(CURRENT_USER(), '@', -1), '''') \
         UNION SELECT CAST(PRIVILEGE_TYPE AS CHAR) FROM information_schema.SCHEMA_PRIVILEGES \
         WHERE GRANTEE = CONCAT('''', SUBSTRING_INDEX(CURRENT_USER(), '@', 1), '''@''', \
                                SUBSTRING_INDEX(CURRENT_USER(), '@', -1), '''') \
           AND TABLE_SCHEMA = DATABASE()",
    )
    .fetch_all(&mut *conn)
    .await?;
    let missing: Vec<&str> =
        PRIVILEGES.iter().copied().filter(|p| !held.iter().any(|h| h == p)).collect();
    if missing.is_empty() {
        report.pass("target privileges", format!("{} on {db}", PRIVILEGES.join(", ")));
    } else {
        report.fail(
            "target privileges",
            format!("missing {} on database {db}", missing.join(", ")),
            format!(
                "GRANT {} ON {}.* TO <the --target user>",
                PRIVILEGES.join(", "),
                applier::mysql::quote(db)
            ),
        );
    }
    let innodb: Option<String> = sqlx::query_scalar(
        "SELECT CAST(SUPPORT AS CHAR) FROM information_schema.ENGINES WHERE ENGINE = 'InnoDB'",
    )
    .fetch_optional(&mut *conn)
    .await?;
    if innodb.as_deref().is_some_and(|s| s == "YES" || s == "DEFAULT") {
        report.pass("storage engine", "InnoDB (transactional) is available");
    } else {
        report.fail(
            "storage engine",
            "InnoDB is not available, and the progress row must share a transaction with the \
             changes",
            "enable InnoDB on the server",
        );
    }
    let mode = variable(conn, "GLOBAL.sql_mode").await?;
    report.pass(
        "sql_mode",
        format!(
            "server default {mode:?}; pgmirror's sessions set STRICT_ALL_TABLES, so a value MySQL \
             would change is an error"
        ),
    );
    let packet: u64 = variable(conn, "GLOBAL.max_allowed_packet").await?.parse().unwrap_or(0);
    if packet >= MIN_PACKET {
        report.pass("max_allowed_packet", format!("{} MB", packet >> 20));
    } else {
        report.fail(
            "max_allowed_packet",
            format!("{} MB: a statement or a large row may not fit", packet >> 20),
            "SET GLOBAL max_allowed_packet = 67108864 (and max_allowed_packet = 64M in the \
             server's option file)",
        );
    }
    let lower = variable(conn, "lower_case_table_names").await?;
    if lower == "0" {
        report.pass("lower_case_table_names", "0: table names keep their case");
    } else {
        report.warn(
            "lower_case_table_names",
            format!("{lower}: table names are folded to lower case"),
            "mixed-case table names become lower case; pgmirror refuses names that then collide",
        );
    }
    match sqlx::query("SET time_zone = '+00:00'").execute(&mut *conn).await {
        Ok(_) => report.pass(
            "time zone",
            "sessions run in UTC ('+00:00'); timestamptz values are stored as UTC DATETIME(6)",
        ),
        Err(e) => report.fail(
            "time zone",
            format!("SET time_zone = '+00:00' failed: {e}"),
            "allow the session to set time_zone",
        ),
    }
    let flush = variable(conn, "GLOBAL.innodb_flush_log_at_trx_commit").await?;
    if flush == "1" {
        report.pass("commit durability", "innodb_flush_log_at_trx_commit = 1");
    } else {
        report.warn(
            "commit durability",
            format!(
                "innodb_flush_log_at_trx_commit = {flush}: a server crash can lose commits the \
                 primary was already told were applied"
            ),
            "SET GLOBAL innodb_flush_log_at_trx_commit = 1",
        );
    }
    Ok(())
}

async fn tables_check(
    source: &ConnConfig,
    conn: &mut MySqlConnection,
    selection: &TableSelection,
    report: &mut Report,
) {
    let checked = async {
        let src = pgconn::connect_sql(source).await?;
        let (_, tables) = super::describe_tables(&src, selection).await?;
        let (missing, problems) = schema::check_tables(conn, &tables).await?;
        anyhow::Ok((tables.len(), missing, problems))
    };
    match checked.await {
        Ok((n, missing, problems)) if problems.is_empty() => report
            .pass("target tables", format!("{n} tables fit; {} will be created", missing.len())),
        Ok((_, _, problems)) => {
            for p in problems {
                let (detail, fix) = p.split_once("; fix: ").unwrap_or((&p, "see above"));
                report.fail("target tables", detail, fix);
            }
        }
        Err(e) => {
            let msg = format!("{e:#}");
            report.fail("target tables", msg, "rename or leave out what the lines above name");
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn versions() {
        assert!(super::version_ok("10.11.6-MariaDB-0+deb12u1", true));
        assert!(!super::version_ok("10.2.44-MariaDB", true));
        assert!(super::version_ok("8.0.36", false));
        assert!(!super::version_ok("5.7.44-log", false));
    }
}
