//! What a `--tables` selection means on the source: table names and `schema.*` patterns,
//! minus the `--exclude-tables` entries.

use std::collections::HashSet;

use tokio_postgres::Client;
use tokio_postgres::types::Type;

use crate::catalog::{TableDef, load_tables, table_oid};
use crate::error::{DbContext, Error};
use crate::ident::TablePattern;

/// The tables `schema.*` stands for, by name: ordinary and partitioned tables, except
/// partitions (their rows are replicated through their partitioned table) and unlogged or
/// temporary tables (logical decoding does not carry them).
const SCHEMA_TABLES_SQL: &str = "SELECT c.oid FROM pg_catalog.pg_class c \
     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition \
       AND c.relpersistence = 'p' \
     ORDER BY c.relname";

/// Resolves `include` (tables and `schema.*` patterns, see [`TablePattern::parse_list`]) on
/// the source, leaves out every table an `exclude` entry matches, and returns the rest in
/// foreign-key dependency order (referenced tables first). A schema pattern is expanded now:
/// a table created in the schema later is not part of the result.
///
/// # Errors
/// [`Error::TableNotFound`], [`Error::SchemaNotFound`] or [`Error::NoTablesInSchema`] for
/// the first `include` entry that matches nothing; [`Error::ExcludeUnmatched`] for an
/// `exclude` entry that matches none of the selected tables; [`Error::AllExcluded`];
/// [`Error::NoTables`] for an empty `include`; [`Error::Db`].
pub async fn resolve_selection(
    client: &Client,
    include: &[TablePattern],
    exclude: &[TablePattern],
) -> Result<Vec<TableDef>, Error> {
    if include.is_empty() {
        return Err(Error::NoTables);
    }
    let mut oids = Vec::new();
    let mut seen = HashSet::new();
    for pattern in include {
        let found = matching(client, pattern).await?;
        match pattern {
            TablePattern::Table(name) if found.is_empty() => {
                return Err(Error::TableNotFound { table: name.clone() });
            }
            TablePattern::Schema(schema) if found.is_empty() => {
                return Err(if schema_exists(client, schema).await? {
                    Error::NoTablesInSchema { schema: schema.clone(), pattern: pattern.to_string() }
                } else {
                    Error::SchemaNotFound { schema: schema.clone(), pattern: pattern.to_string() }
                });
            }
            _ => {}
        }
        oids.extend(found.into_iter().filter(|oid| seen.insert(*oid)));
    }
    for pattern in exclude {
        let gone = matching(client, pattern).await?;
        let before = oids.len();
        oids.retain(|oid| !gone.contains(oid));
        if oids.len() == before {
            return Err(Error::ExcludeUnmatched { pattern: pattern.to_string() });
        }
    }
    if oids.is_empty() {
        return Err(Error::AllExcluded);
    }
    load_tables(client, &oids).await
}

/// The OIDs of the tables `pattern` matches (none when it names nothing).
async fn matching(client: &Client, pattern: &TablePattern) -> Result<Vec<u32>, Error> {
    match pattern {
        TablePattern::Table(name) => {
            Ok(table_oid(client, name, "source").await?.into_iter().collect())
        }
        TablePattern::Schema(schema) => Ok(client
            .query_typed(SCHEMA_TABLES_SQL, &[(schema, Type::TEXT)])
            .await
            .db_context(|| format!("listing the tables of schema \"{schema}\" on the source"))?
            .iter()
            .map(|r| r.get(0))
            .collect()),
    }
}

async fn schema_exists(client: &Client, schema: &str) -> Result<bool, Error> {
    Ok(!client
        .query_typed(
            "SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1",
            &[(&schema, Type::TEXT)],
        )
        .await
        .db_context(|| format!("looking up schema \"{schema}\" on the source"))?
        .is_empty())
}
