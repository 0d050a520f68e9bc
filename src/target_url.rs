//! What `--target` names: the URL scheme decides the kind of target.

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
    /// Parses `--target`'s value.
    ///
    /// # Errors
    /// A connection string that cannot be used, with the problem (never the password).
    pub fn parse(value: &str) -> anyhow::Result<Self> {
        if is_mysql_url(value) {
            return Ok(TargetUrl::MySql(
                MySqlUrl::parse(value).map_err(|e| anyhow::anyhow!("--target: {e}"))?,
            ));
        }
        crate::conn::parse("--target", value).map(TargetUrl::Postgres)
    }
}
