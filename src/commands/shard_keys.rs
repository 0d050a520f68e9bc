//! `--target` repeated for shards and `--shard-key TABLE=COLUMN[,COLUMN...]`, the flags of
//! the commands that work on a sharded mirror.

use anyhow::{Context, bail};
use applier::mysql::session::MySqlUrl;
use applier::shard::ShardLayout;
use clap::Args;
use pgconn::ConnConfig;
use tablesync::QualifiedName;

use crate::conn;

/// The targets of a mirror: one replica, or its shards.
#[derive(Debug, Args)]
pub struct TargetArgs {
    /// The replica to write into: a PostgreSQL connection string, `mysql://` or `mariadb://`
    /// for MySQL/MariaDB, or `nats://[user:password@]host:4222[,host2:4222...]` (`tls://` for
    /// TLS) to publish the changes into a NATS JetStream stream. Repeated: the shards (all
    /// PostgreSQL or all MySQL/MariaDB), in order (shard `i` holds hash partition `REMAINDER i` of each sharded table, every row
    /// of the others).
    #[arg(
        long,
        env = "PGMIRROR_TARGET",
        hide_env_values = true,
        value_name = "URL",
        required = true
    )]
    pub target: Vec<String>,
    /// Split a table across the shards by these columns, as `PARTITION BY HASH (columns)`
    /// would: `TABLE=COLUMN[,COLUMN...]` (`schema.table` or a table of `public`). Repeat for
    /// each sharded table; tables without one are copied whole to every shard.
    #[arg(long, value_name = "TABLE=COLUMNS")]
    pub shard_key: Vec<String>,
}

impl TargetArgs {
    /// Whether these are the shards of a sharded mirror.
    pub fn sharded(&self) -> bool {
        self.target.len() > 1 || !self.shard_key.is_empty()
    }

    /// The first (or only) target.
    ///
    /// # Errors
    /// A malformed connection string.
    pub fn first(&self) -> anyhow::Result<ConnConfig> {
        Ok(self.all()?.swap_remove(0))
    }

    /// Every target, in order, when they are PostgreSQL databases.
    ///
    /// # Errors
    /// A malformed connection string; a NATS or MySQL/MariaDB target among them.
    pub fn all(&self) -> anyhow::Result<Vec<ConnConfig>> {
        postgres_shards("--target", &self.target)
    }

    /// The shards, when they are all MySQL/MariaDB databases; `None` when none is.
    ///
    /// # Errors
    /// A malformed URL; a mix of MySQL/MariaDB and other targets.
    pub fn mysql(&self) -> anyhow::Result<Option<Vec<MySqlUrl>>> {
        mysql_shards("--target", &self.target)
    }

    /// The sharded tables.
    ///
    /// # Errors
    /// See [`parse`].
    pub fn layout(&self) -> anyhow::Result<ShardLayout> {
        parse(&self.shard_key)
    }
}

/// The URLs given as `flag`, in order, when they are PostgreSQL databases.
///
/// # Errors
/// A malformed connection string; a NATS or MySQL/MariaDB target among them.
pub fn postgres_shards(flag: &str, urls: &[String]) -> anyhow::Result<Vec<ConnConfig>> {
    urls.iter()
        .map(|t| {
            if crate::target_url::is_nats_url(t) {
                bail!(
                    "{flag} {}: a NATS stream cannot be a shard; publish into NATS with a single \
                     {flag}",
                    shown(t)
                );
            }
            if applier::mysql::session::is_mysql_url(t) {
                bail!("{}", mixed_kinds(flag, t));
            }
            conn::parse(flag, t)
        })
        .collect()
}

/// The URLs given as `flag`, when they are all MySQL/MariaDB databases; `None` when none is.
///
/// # Errors
/// A malformed URL; a mix of MySQL/MariaDB and other targets.
pub fn mysql_shards(flag: &str, urls: &[String]) -> anyhow::Result<Option<Vec<MySqlUrl>>> {
    let is_mysql = |t: &String| applier::mysql::session::is_mysql_url(t);
    if !urls.iter().any(is_mysql) {
        return Ok(None);
    }
    urls.iter()
        .map(|t| {
            if !is_mysql(t) {
                bail!("{}", mixed_kinds(flag, t));
            }
            MySqlUrl::parse(t).with_context(|| format!("{flag} {}", shown(t)))
        })
        .collect::<anyhow::Result<Vec<_>>>()
        .map(Some)
}

fn mixed_kinds(flag: &str, url: &str) -> String {
    format!(
        "{flag} {}: the shards of a mirror are all PostgreSQL or all MySQL/MariaDB databases; \
         give {flag} URLs of one kind",
        shown(url)
    )
}

/// A target URL without its user and password, for messages.
fn shown(url: &str) -> &str {
    url.split('@').next_back().unwrap_or_default()
}

/// The layout the `--shard-key` values describe (`schema.table`, or a table of `public`).
///
/// # Errors
/// A value without `=`, without columns, or with a malformed table name.
pub fn parse(values: &[String]) -> anyhow::Result<ShardLayout> {
    let mut layout = ShardLayout::new();
    for value in values {
        let Some((table, columns)) = value.split_once('=') else {
            bail!("--shard-key {value:?}: write TABLE=COLUMN[,COLUMN...], e.g. orders=customer_id");
        };
        let table =
            QualifiedName::parse(table).with_context(|| format!("--shard-key {value:?}"))?;
        let columns: Vec<String> = columns
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect();
        if columns.is_empty() {
            bail!("--shard-key {value:?}: name at least one column after `=`");
        }
        layout.shard(&table.schema, &table.name, columns);
    }
    Ok(layout)
}
