//! Which tables a command works on, resolved on the source, and the publication that streams
//! them.

use anyhow::Context;
use pgconn::quote_ident;
use tablesync::{TableDef, TablePattern};
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

/// Which tables a command works on: a publication, or a list of tables.
#[derive(Debug, Clone)]
pub struct TableSelection {
    /// An existing publication on the source.
    pub publication: Option<String>,
    /// Tables as `name`, `schema.name` or `schema.*` (every table of the schema when resolved),
    /// each entry a comma-separated list.
    pub tables: Option<Vec<String>>,
    /// Tables to leave out of `tables`, in the same syntax; not with `publication`, which alone
    /// decides what is streamed.
    pub exclude_tables: Option<Vec<String>>,
}

impl TableSelection {
    /// The tables of the publication `name`.
    pub fn publication(name: impl Into<String>) -> Self {
        TableSelection { publication: Some(name.into()), tables: None, exclude_tables: None }
    }
}

/// The publication to stream: the one named, or one created (if missing) for `--tables`,
/// named `default_name`.
///
/// # Errors
/// Unknown tables, a missing publication, or no privilege to create one.
pub async fn publication_for(
    client: &Client,
    selection: &TableSelection,
    default_name: &str,
) -> anyhow::Result<String> {
    let tables = resolve_tables(client, selection).await?;
    match &selection.publication {
        Some(name) => Ok(name.clone()),
        None => {
            create_publication(client, default_name, &tables).await?;
            Ok(default_name.to_owned())
        }
    }
}

/// [`tablesync::ensure_publication`], with the fix spelled out when the role may not create
/// it (it must own every table): the statement for the owner to run, and `--publication`.
///
/// # Errors
/// As `ensure_publication`; a `permission denied` names the fix.
pub async fn create_publication(
    client: &Client,
    name: &str,
    tables: &[TableDef],
) -> anyhow::Result<tablesync::PublicationStatus> {
    match tablesync::ensure_publication(client, name, tables).await {
        Ok(status) => Ok(status),
        Err(e) if sqlstate(&e) == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => {
            let list = tables.iter().map(TableDef::quoted).collect::<Vec<_>>().join(", ");
            Err(anyhow::Error::new(e).context(format!(
                "this role may not create publication {name:?} (a publication can only be \
                 created by the owner of every table it publishes, with CREATE on the \
                 database); fix: have the tables' owner run CREATE PUBLICATION {} FOR TABLE \
                 {list}; then pass --publication {name} instead of --tables",
                quote_ident(name)
            )))
        }
        Err(e) => Err(e.into()),
    }
}

/// The SQLSTATE of a server error inside a tablesync error.
fn sqlstate(e: &tablesync::Error) -> Option<&SqlState> {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<tokio_postgres::Error>())
        .and_then(tokio_postgres::Error::code)
}

/// The source tables a selection names, in dependency order.
///
/// # Errors
/// Unknown tables, schemas or publication, an empty publication, an exclusion that matches
/// nothing, or `--exclude-tables` with `--publication`.
pub async fn resolve_tables(
    client: &Client,
    selection: &TableSelection,
) -> anyhow::Result<Vec<TableDef>> {
    match (&selection.publication, &selection.tables) {
        (Some(name), _) if selection.exclude_tables.is_some() => anyhow::bail!(
            "--exclude-tables cannot narrow --publication {name:?}: the publication decides \
             which tables are streamed; drop tables from it (ALTER PUBLICATION ... DROP TABLE) \
             or select them with --tables"
        ),
        (Some(name), _) => {
            let tables = tablesync::publication_tables(client, name).await.map_err(with_flags)?;
            anyhow::ensure!(
                !tables.is_empty(),
                "publication {name:?} publishes no tables; add some with ALTER PUBLICATION"
            );
            Ok(tables)
        }
        (None, Some(names)) => {
            let include = patterns(names).context("--tables")?;
            let exclude = patterns(selection.exclude_tables.as_deref().unwrap_or_default())
                .context("--exclude-tables")?;
            tablesync::resolve_selection(client, &include, &exclude).await.map_err(with_flags)
        }
        (None, None) => anyhow::bail!("give --publication NAME or --tables A,B"),
    }
}

/// A selection error worded with the flags that fix it.
fn with_flags(e: tablesync::Error) -> anyhow::Error {
    match e {
        tablesync::Error::NoTables => anyhow::anyhow!(
            "no tables selected; pass --tables or a publication that publishes at least one table"
        ),
        tablesync::Error::ExcludeUnmatched { pattern } => anyhow::anyhow!(
            "--exclude-tables entry `{pattern}` matches none of the tables --tables selects; check \
             the spelling (unquoted names are folded to lower case) or drop the entry"
        ),
        tablesync::Error::AllExcluded => anyhow::anyhow!(
            "--exclude-tables leaves none of the tables --tables selects; exclude fewer tables"
        ),
        e => e.into(),
    }
}

/// Every entry of a `--tables`-style list (each a comma-separated list itself).
fn patterns(entries: &[String]) -> Result<Vec<TablePattern>, tablesync::Error> {
    let mut out = Vec::new();
    for entry in entries {
        out.extend(TablePattern::parse_list(entry)?);
    }
    Ok(out)
}
