//! Creating and checking the source publication.

use pgconn::quote_ident;
use tokio_postgres::Client;

use crate::catalog::{TableDef, published_names};
use crate::error::{DbContext, Error};

/// What [`ensure_publication`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublicationStatus {
    /// The publication did not exist and was created for exactly the given tables.
    Created,
    /// The publication existed and publishes every given table (maybe more).
    Existing,
}

/// Makes sure publication `name` exists and publishes `tables`.
///
/// Missing: `CREATE PUBLICATION "name" FOR TABLE ...` with every table quoted (and
/// `publish_via_partition_root` when a table is partitioned, so that changes arrive under
/// the partitioned table's name). Present: it is left unchanged and must already cover
/// every table.
///
/// # Errors
/// [`Error::PublicationMissingTables`] listing the uncovered tables; [`Error::NoTables`]
/// for an empty list; [`Error::Db`].
pub async fn ensure_publication(
    client: &Client,
    name: &str,
    tables: &[TableDef],
) -> Result<PublicationStatus, Error> {
    if tables.is_empty() {
        return Err(Error::NoTables);
    }
    match published_names(client, name).await? {
        Some(published) => {
            let missing: Vec<_> = tables
                .iter()
                .map(TableDef::qualified_name)
                .filter(|t| !published.contains(t))
                .collect();
            if missing.is_empty() {
                Ok(PublicationStatus::Existing)
            } else {
                Err(Error::PublicationMissingTables { publication: name.to_owned(), missing })
            }
        }
        None => {
            let list = tables.iter().map(TableDef::quoted).collect::<Vec<_>>().join(", ");
            // Changes of partitions are then published under the partitioned table's name,
            // the one table that exists on the target.
            let options = if tables.iter().any(|t| t.is_partitioned) {
                " WITH (publish_via_partition_root = true)"
            } else {
                ""
            };
            client
                .batch_execute(&format!(
                    "CREATE PUBLICATION {} FOR TABLE {list}{options}",
                    quote_ident(name)
                ))
                .await
                .db_context(|| format!("creating publication \"{name}\" on the source"))?;
            Ok(PublicationStatus::Created)
        }
    }
}

/// Drops publication `name` if it exists; returns whether it existed.
///
/// # Errors
/// [`Error::Db`].
pub async fn drop_publication(client: &Client, name: &str) -> Result<bool, Error> {
    let ctx = || format!("dropping publication \"{name}\" on the source");
    let existed = client
        .query_opt("SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = $1", &[&name])
        .await
        .db_context(ctx)?
        .is_some();
    client
        .batch_execute(&format!("DROP PUBLICATION IF EXISTS {}", quote_ident(name)))
        .await
        .db_context(ctx)?;
    Ok(existed)
}
