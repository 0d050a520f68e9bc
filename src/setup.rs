//! Preparation on the primary shared by the commands: publications and slots.

use anyhow::Context;
use replication::ReplicationClient;
use tablesync::{QualifiedName, TableDef};
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
/// Unknown tables or publication, an empty publication.
pub async fn resolve_tables(
    client: &Client,
    selection: &TableSelection,
) -> anyhow::Result<Vec<TableDef>> {
    match (&selection.publication, &selection.tables) {
        (Some(name), _) => {
            let tables = tablesync::publication_tables(client, name).await?;
            anyhow::ensure!(
                !tables.is_empty(),
                "publication {name:?} publishes no tables; add some with ALTER PUBLICATION"
            );
            Ok(tables)
        }
        (None, Some(names)) => {
            let names = names
                .iter()
                .map(|n| QualifiedName::parse(n))
                .collect::<Result<Vec<_>, _>>()
                .context("--tables")?;
            Ok(tablesync::resolve_tables(client, &names).await?)
        }
        (None, None) => anyhow::bail!("give --publication NAME or --tables A,B"),
    }
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
