//! What `--target` names: the URL scheme decides the kind of target.

use anyhow::Context;
use applier::mysql::session::{MySqlUrl, is_mysql_url};
use pgconn::ConnConfig;

/// A target: PostgreSQL (a URL or `key=value` string) or MySQL/MariaDB (`mysql://`,
/// `mariadb://`).
#[derive(Debug, Clone)]
pub enum TargetUrl {
    /// A PostgreSQL database.
    Postgres(ConnConfig),
    /// A MySQL or MariaDB database.
    MySql(MySqlUrl),
}

impl TargetUrl {
    /// Parses a target: `mysql://` and `mariadb://` URLs name MySQL/MariaDB, anything else is
    /// a PostgreSQL connection string.
    ///
    /// # Errors
    /// A connection string that cannot be used, with the problem (never the password).
    pub fn parse(value: &str) -> anyhow::Result<Self> {
        if is_mysql_url(value) {
            return Ok(TargetUrl::MySql(MySqlUrl::parse(value)?));
        }
        Ok(TargetUrl::Postgres(ConnConfig::parse(value).context("invalid connection string")?))
    }
}
