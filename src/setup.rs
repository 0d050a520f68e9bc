//! Preparation on the primary shared by the commands: publications and slots.

use anyhow::Context;
use replication::ReplicationClient;
use tablesync::{TableDef, TablePattern};
use tokio_postgres::Client;

use crate::cli::TableSelection;

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
            tablesync::ensure_publication(client, default_name, &tables).await?;
            Ok(default_name.to_owned())
        }
    }
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
            let tables = tablesync::publication_tables(client, name).await?;
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
            Ok(tablesync::resolve_selection(client, &include, &exclude).await?)
        }
        (None, None) => anyhow::bail!("give --publication NAME or --tables A,B"),
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

/// Whether the logical slot `name` exists on the primary.
///
/// # Errors
/// The catalog query failed.
pub async fn slot_exists(client: &mut ReplicationClient, name: &str) -> anyhow::Result<bool> {
    let rows = client
        .simple_query(&format!(
            "SELECT 1 FROM pg_catalog.pg_replication_slots WHERE slot_name = {}",
            replication::quote_literal(name)
        ))
        .await
        .context("looking up the slot")?;
    Ok(!rows.is_empty())
}
