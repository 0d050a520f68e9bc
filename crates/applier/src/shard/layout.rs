//! Which tables are sharded, by which columns, and how a relation's rows are routed.

use std::collections::HashMap;

use pgoutput_decoder::{Relation, ReplicaIdentity};
use tokio_postgres::Client;

use super::ShardError;
use super::key::KeyType;

/// The shard keys of a mirror: per table, its key columns in order. Tables not listed are
/// reference tables, copied whole to every shard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardLayout {
    keys: HashMap<(String, String), Vec<String>>,
}

/// One shard key column of a relation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyColumn {
    /// Index of the column in the relation (and in its tuples).
    pub index: usize,
    /// How it hashes.
    pub ty: KeyType,
}

/// Where the rows of one relation go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableRoute {
    /// Every row to every shard.
    Reference,
    /// Each row to the shard its key hashes to.
    Sharded {
        /// The shard key columns.
        key: Vec<KeyColumn>,
        /// Whether the old key or row the source sends with an update or delete carries the
        /// shard key (it lies within the replica identity, or the identity is FULL). When it
        /// does not, an update does not say which shard held the row, nor a delete which
        /// shard holds it.
        in_identity: bool,
    },
}

impl ShardLayout {
    /// An empty layout: every table is a reference table.
    pub fn new() -> Self {
        ShardLayout::default()
    }

    /// Shards table `schema.table` by `columns` (in that order, as `PARTITION BY HASH` lists
    /// them).
    pub fn shard(&mut self, schema: &str, table: &str, columns: Vec<String>) {
        self.keys.insert((schema.to_owned(), table.to_owned()), columns);
    }

    /// The tables with a shard key, and their key columns.
    pub fn tables(&self) -> impl Iterator<Item = (&str, &str, &[String])> {
        self.keys.iter().map(|((s, t), c)| (s.as_str(), t.as_str(), c.as_slice()))
    }

    /// The shard key columns of `schema.table`, if it is sharded.
    pub fn key_of(&self, schema: &str, table: &str) -> Option<&[String]> {
        self.keys.get(&(schema.to_owned(), table.to_owned())).map(Vec::as_slice)
    }

    /// How rows of `rel` are routed.
    ///
    /// # Errors
    /// A key column the relation lacks or whose type has no hash here.
    pub fn route(&self, rel: &Relation) -> Result<TableRoute, ShardError> {
        let schema = if rel.namespace.is_empty() { "pg_catalog" } else { &rel.namespace };
        let Some(columns) = self.key_of(schema, &rel.name) else {
            return Ok(TableRoute::Reference);
        };
        let table = display_table(schema, &rel.name);
        let mut key = Vec::with_capacity(columns.len());
        let mut in_identity = true;
        for name in columns {
            let (index, col) =
                rel.columns.iter().enumerate().find(|(_, c)| &c.name == name).ok_or_else(|| {
                    ShardError::NoSuchColumn { table: table.clone(), column: name.clone() }
                })?;
            let ty =
                KeyType::from_oid(col.type_oid).ok_or_else(|| ShardError::UnsupportedType {
                    table: table.clone(),
                    column: name.clone(),
                    type_name: format!("OID {}", col.type_oid),
                })?;
            in_identity &= rel.replica_identity == ReplicaIdentity::Full || col.is_key;
            key.push(KeyColumn { index, ty });
        }
        Ok(TableRoute::Sharded { key, in_identity })
    }

    /// Checks every shard key on the source before anything starts: the table and columns
    /// exist, their types hash here, and text keys use a deterministic collation.
    ///
    /// # Errors
    /// The first problem found, or the catalog query's failure.
    pub async fn check(&self, source: &Client) -> Result<(), ShardError> {
        let mut tables: Vec<_> = self.keys.iter().collect();
        tables.sort();
        for ((schema, table), columns) in tables {
            let shown = display_table(schema, table);
            let rows = source
                .query(
                    "SELECT a.attname::text, a.atttypid::regtype::text, a.atttypid::int8, \
                            coalesce(co.collisdeterministic, true), co.collname::text \
                     FROM pg_class c \
                     JOIN pg_namespace n ON n.oid = c.relnamespace \
                     JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 \
                                          AND NOT a.attisdropped \
                     LEFT JOIN pg_collation co ON co.oid = a.attcollation \
                     WHERE n.nspname = $1 AND c.relname = $2",
                    &[schema, table],
                )
                .await
                .map_err(ShardError::Catalog)?;
            if rows.is_empty() {
                return Err(ShardError::UnknownTable { table: shown });
            }
            for name in columns {
                let row = rows.iter().find(|r| r.get::<_, &str>(0) == name).ok_or_else(|| {
                    ShardError::NoSuchColumn { table: shown.clone(), column: name.clone() }
                })?;
                let oid = u32::try_from(row.get::<_, i64>(2)).unwrap_or(0);
                if KeyType::from_oid(oid).is_none() {
                    return Err(ShardError::UnsupportedType {
                        table: shown,
                        column: name.clone(),
                        type_name: row.get(1),
                    });
                }
                if !row.get::<_, bool>(3) {
                    return Err(ShardError::Nondeterministic {
                        table: shown,
                        column: name.clone(),
                        collation: row.get(4),
                    });
                }
            }
        }
        Ok(())
    }
}

fn display_table(schema: &str, table: &str) -> String {
    format!("{}.{}", pgconn::quote_ident(schema), pgconn::quote_ident(table))
}
