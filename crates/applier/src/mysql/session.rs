//! Connections to a MySQL/MariaDB target: the URL, the session's settings, the server kind.

use std::fmt;
use std::str::FromStr;

use sqlx::mysql::MySqlConnectOptions;
use sqlx::{ConnectOptions, MySqlConnection};

use super::target_err;
use crate::error::ApplyError;

/// The apply session's settings: strict (a value MySQL would change is an error, never a
/// warning), foreign key checks off (as `session_replication_role = replica` on PostgreSQL:
/// the primary checked them, and tables load in parallel), UTC.
const SESSION: &str = "SET SESSION foreign_key_checks = 0, \
     sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION,NO_AUTO_VALUE_ON_ZERO,PIPES_AS_CONCAT', \
     time_zone = '+00:00'";

/// What kind of server the target is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    /// `VERSION()`.
    pub version: String,
    /// MariaDB rather than MySQL.
    pub mariadb: bool,
}

impl ServerInfo {
    /// The collation of created tables: binary and NO PAD, so text compares as PostgreSQL's
    /// deterministic collations compare it (byte for byte, trailing spaces significant).
    pub fn collation(&self) -> &'static str {
        if self.mariadb { "utf8mb4_nopad_bin" } else { "utf8mb4_0900_bin" }
    }
}

/// A parsed MySQL/MariaDB target URL; its `Debug` and `Display` show no user or password.
#[derive(Clone)]
pub struct MySqlUrl {
    opts: MySqlConnectOptions,
}

impl MySqlUrl {
    /// Parses `mysql://user:password@host:port/database?ssl-mode=...` (`mariadb://` too).
    ///
    /// # Errors
    /// [`ApplyError::BadTargetUrl`] naming the problem, never the password.
    pub fn parse(url: &str) -> Result<Self, ApplyError> {
        parse_url(url).map(|opts| MySqlUrl { opts })
    }

    /// The driver's options.
    pub fn options(&self) -> &MySqlConnectOptions {
        &self.opts
    }

    /// The database.
    pub fn database(&self) -> &str {
        self.opts.get_database().unwrap_or_default()
    }
}

impl fmt::Debug for MySqlUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MySqlUrl({})", display(&self.opts))
    }
}

impl fmt::Display for MySqlUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mysql://{}", display(&self.opts))
    }
}

/// Whether `url` names a MySQL/MariaDB target (`mysql://` or `mariadb://`).
pub fn is_mysql_url(url: &str) -> bool {
    let lower = url.get(..10).unwrap_or(url).to_ascii_lowercase();
    lower.starts_with("mysql://") || lower.starts_with("mariadb://")
}

/// Parses a `mysql://user:password@host:port/database?ssl-mode=...` URL (`mariadb://` too).
///
/// # Errors
/// [`ApplyError::BadTargetUrl`] naming the problem, never the password.
pub fn parse_url(url: &str) -> Result<MySqlConnectOptions, ApplyError> {
    let rest = match url.split_once("://") {
        Some((scheme, rest))
            if scheme.eq_ignore_ascii_case("mysql") || scheme.eq_ignore_ascii_case("mariadb") =>
        {
            rest
        }
        _ => {
            return Err(ApplyError::BadTargetUrl(
                "it must start with mysql:// or mariadb://".into(),
            ));
        }
    };
    let opts = MySqlConnectOptions::from_str(&format!("mysql://{rest}"))
        .map_err(|e| ApplyError::BadTargetUrl(redact(&e.to_string(), url)))?;
    if opts.get_database().is_none_or(str::is_empty) {
        return Err(ApplyError::BadTargetUrl(
            "it names no database; add one: mysql://user@host:3306/DATABASE".into(),
        ));
    }
    // sqlx logs each slow statement at WARN with its whole text: a multi-row INSERT's
    // placeholders by the thousand.
    Ok(opts.charset("utf8mb4").disable_statement_logging())
}

/// `host:port/database` of a target, for messages (no user, no password).
pub fn display(opts: &MySqlConnectOptions) -> String {
    format!("{}:{}/{}", opts.get_host(), opts.get_port(), opts.get_database().unwrap_or_default())
}

/// Keeps a password that `url` holds out of a message.
fn redact(msg: &str, url: &str) -> String {
    let password = url
        .split_once("://")
        .and_then(|(_, r)| r.split_once('@'))
        .and_then(|(userinfo, _)| userinfo.split_once(':'))
        .map(|(_, p)| p)
        .filter(|p| !p.is_empty());
    match password {
        Some(p) => msg.replace(p, "********"),
        None => msg.to_owned(),
    }
}

/// Connects and sets the apply session up.
///
/// # Errors
/// [`ApplyError::MySql`] when the server cannot be reached or refuses the settings.
pub async fn connect(
    opts: &MySqlConnectOptions,
) -> Result<(MySqlConnection, ServerInfo), ApplyError> {
    let mut conn = opts
        .connect()
        .await
        .map_err(|e| target_err(format!("connecting to {}", display(opts)), e))?;
    sqlx::Executor::execute(&mut conn, SESSION)
        .await
        .map_err(|e| target_err("setting up the session", e))?;
    let version: String = sqlx::query_scalar("SELECT VERSION()")
        .fetch_one(&mut conn)
        .await
        .map_err(|e| target_err("reading the server version", e))?;
    let mariadb = version.to_ascii_lowercase().contains("mariadb");
    Ok((conn, ServerInfo { version, mariadb }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(is_mysql_url("MariaDB://h/db"));
        assert!(!is_mysql_url("postgres://h/db"));
        let o = parse_url("mariadb://u:pw@db.example:3307/store").unwrap();
        assert_eq!(display(&o), "db.example:3307/store");
        let e = parse_url("mysql://u:secret@h").unwrap_err().to_string();
        assert!(e.contains("names no database"), "{e}");
        let e = parse_url("mysql://u:secret@h:notaport/db").unwrap_err().to_string();
        assert!(!e.contains("secret"), "{e}");
    }
}
