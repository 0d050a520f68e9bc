//! Sharding: one stream applied into N targets laid out as PostgreSQL's hash partitioning.
//!
//! Shard `i` of `N` holds exactly the rows of each sharded table that `PARTITION BY HASH (key)
//! ... WITH (MODULUS N, REMAINDER i)` would put in partition `i` (`hash`, `key`), so the layout
//! can be checked on the source with `satisfies_hash_partition`. A table without a shard key is
//! a reference table, whole on every shard. [`ShardedTarget`] routes each change to its shard
//! behind the [`Target`](crate::Target) trait; each shard keeps its own progress (`target`).

mod copy;
pub mod hash;
mod key;
mod layout;
mod target;
#[cfg(test)]
mod tests;

pub use copy::{CopyError, RoutedTable, copy_routed};
pub use key::KeyType;
pub use layout::{KeyColumn, ShardLayout, TableRoute};
pub use target::{MoveId, ShardTarget, ShardedTarget};

use bytes::Bytes;
use pgoutput_decoder::{ColumnValue, Tuple};

/// A row of text values read back from a shard (`None`: NULL), as
/// [`ShardTarget::take_row`] returns it.
pub(crate) fn text_tuple(values: Vec<Option<String>>) -> Tuple {
    Tuple::new(
        values
            .into_iter()
            .map(|v| v.map_or(ColumnValue::Null, |s| ColumnValue::Text(Bytes::from(s))))
            .collect(),
    )
}

/// What can go wrong when routing rows to shards.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShardError {
    /// A shard key column's type has no hash implemented here.
    #[error(
        "shard key column {column:?} of {table} has type {type_name}, which cannot be sharded \
         (supported: {supported})",
        supported = KeyType::SUPPORTED
    )]
    UnsupportedType {
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// The column's type, as the source names it (or its OID).
        type_name: String,
    },
    /// A shard key names a column the table lacks.
    #[error("shard key column {column:?} is not a column of {table}")]
    NoSuchColumn {
        /// The table.
        table: String,
        /// The column.
        column: String,
    },
    /// A text shard key under a nondeterministic collation, whose hash depends on the ICU
    /// version.
    #[error(
        "shard key column {column:?} of {table} uses the nondeterministic collation {collation}: \
         give the column a deterministic collation on the source"
    )]
    Nondeterministic {
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// The collation.
        collation: String,
    },
    /// A shard key table is not among the mirrored tables.
    #[error("a shard key names {table}, which is not on the source")]
    UnknownTable {
        /// The table as given.
        table: String,
    },
    /// A key value is an unchanged TOASTed value the change does not carry.
    #[error("a shard key value is an unchanged TOASTed value the change does not carry")]
    Unchanged,
    /// A key value does not parse as its type.
    #[error("shard key value {value:?} is not a valid {ty:?}")]
    BadValue {
        /// The key type.
        ty: KeyType,
        /// The value (its first 64 bytes).
        value: String,
    },
    /// Reading the source's catalog failed.
    #[error("reading the shard keys' columns on the source")]
    Catalog(#[source] tokio_postgres::Error),
}
