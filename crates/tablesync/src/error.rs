//! The crate's error type.

use crate::ident::QualifiedName;

/// A boxed error from a caller-supplied connector.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in table sync. Each message names the object and the fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A `--tables` entry could not be parsed.
    #[error(
        "invalid table name `{text}`: {reason}; write `table`, `schema.table` or quote with \"...\""
    )]
    InvalidTableName {
        /// The text as given.
        text: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No table was selected.
    #[error("no tables selected: the list is empty, or the publication publishes none")]
    NoTables,
    /// A named table does not exist on the source (or is not a table).
    #[error(
        "table {table} not found on the source; check the spelling (unquoted names are folded to lower case) and that it is an ordinary or partitioned table"
    )]
    TableNotFound {
        /// The name looked up.
        table: QualifiedName,
    },
    /// The source reports a replica identity setting this version does not know.
    #[error(
        "table {table} has replica identity {value:?} on the source, which pgmirror does not know; set a known one (ALTER TABLE {table} REPLICA IDENTITY DEFAULT, FULL or USING INDEX ...) or use a pgmirror that supports this PostgreSQL version"
    )]
    UnknownReplicaIdentity {
        /// The table.
        table: QualifiedName,
        /// `pg_class.relreplident` as the source sent it.
        value: String,
    },
    /// A `schema.*` entry names a schema the source does not have.
    #[error(
        "schema \"{schema}\" not found on the source (from `{pattern}`); check the spelling (unquoted names are folded to lower case, quote others: '\"My Schema\".*')"
    )]
    SchemaNotFound {
        /// The schema looked up.
        schema: String,
        /// The entry as parsed, quoted.
        pattern: String,
    },
    /// A `schema.*` entry matched no table.
    #[error(
        "schema \"{schema}\" has no table to replicate (`{pattern}` selects its ordinary and partitioned tables, not partitions, unlogged or temporary tables); name the tables instead or drop the entry"
    )]
    NoTablesInSchema {
        /// The schema.
        schema: String,
        /// The entry as parsed, quoted.
        pattern: String,
    },
    /// An exclusion entry matches none of the selected tables.
    #[error(
        "exclusion `{pattern}` matches none of the selected tables; check the spelling (unquoted names are folded to lower case) or drop the entry"
    )]
    ExcludeUnmatched {
        /// The entry as parsed, quoted.
        pattern: String,
    },
    /// The exclusions removed every selected table.
    #[error("the exclusions leave none of the selected tables; exclude fewer tables")]
    AllExcluded,
    /// The publication does not exist on the source.
    #[error(
        "publication \"{publication}\" does not exist on the source; create it or let pgmirror create it"
    )]
    PublicationNotFound {
        /// Publication name.
        publication: String,
    },
    /// An existing publication does not cover all tables to mirror.
    #[error(
        "publication \"{publication}\" exists but does not publish {}; run ALTER PUBLICATION ... ADD TABLE for them or use another publication name",
        list(.missing)
    )]
    PublicationMissingTables {
        /// Publication name.
        publication: String,
        /// Tables that are not published.
        missing: Vec<QualifiedName>,
    },
    /// A source column has no counterpart on the existing target table.
    #[error(
        "target table {table} has no column \"{column}\" that the source has; add the column on the target or drop the target table so pgmirror creates it"
    )]
    ColumnMissing {
        /// Target table.
        table: QualifiedName,
        /// Missing column.
        column: String,
    },
    /// A column's type differs between source and target.
    #[error(
        "column \"{column}\" of table {table} is {source_type} on the source but {target_type} on the target; alter the target column to {source_type}"
    )]
    ColumnTypeMismatch {
        /// Target table.
        table: QualifiedName,
        /// Column name.
        column: String,
        /// `format_type` on the source.
        source_type: String,
        /// `format_type` on the target.
        target_type: String,
    },
    /// The target column rejects NULLs that the source allows.
    #[error(
        "column \"{column}\" of table {table} is NOT NULL on the target but nullable on the source; run ALTER TABLE {table} ALTER COLUMN ... DROP NOT NULL on the target"
    )]
    ColumnNullability {
        /// Target table.
        table: QualifiedName,
        /// Column name.
        column: String,
    },
    /// A column is generated on one side only.
    #[error(
        "column \"{column}\" of table {table} is {} on the source but {} on the target; make both sides agree",
        gen_word(*.source_generated),
        gen_word(!*.source_generated)
    )]
    GeneratedMismatch {
        /// Target table.
        table: QualifiedName,
        /// Column name.
        column: String,
        /// Whether the source column is generated.
        source_generated: bool,
    },
    /// A target-only column would make every copied row fail.
    #[error(
        "column \"{column}\" of table {table} exists only on the target and is NOT NULL without a default; drop it, make it nullable or give it a default"
    )]
    ExtraColumnRequired {
        /// Target table.
        table: QualifiedName,
        /// Column name.
        column: String,
    },
    /// The target table already holds rows before the initial copy.
    #[error(
        "target table {table} already holds rows, but the initial copy needs it empty; empty it on the target"
    )]
    TargetNotEmpty {
        /// Target table.
        table: QualifiedName,
    },
    /// The target has no sequence where the source has one (identity column without identity).
    #[error(
        "target column \"{column}\" of table {table} has no identity or owned sequence to sync; recreate the column as identity or drop the target table"
    )]
    TargetSequenceMissing {
        /// Target table.
        table: QualifiedName,
        /// Column name.
        column: String,
    },
    /// The exported snapshot could not be imported.
    #[error(
        "could not import snapshot '{snapshot}' on a source connection; the exporting transaction (replication connection) must stay open and idle until the copy has started"
    )]
    SnapshotImport {
        /// Snapshot name.
        snapshot: String,
        /// Server error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// Copying one table failed.
    #[error("copying table {table} failed ({stage})")]
    Copy {
        /// Table being copied.
        table: QualifiedName,
        /// Which step failed.
        stage: &'static str,
        /// Server or connection error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A caller-supplied connector failed.
    #[error("could not connect to the {side} database")]
    Connect {
        /// `source` or `target`.
        side: &'static str,
        /// The connector's error.
        #[source]
        source: BoxError,
    },
    /// The target cannot be made to hold the mirrored tables as the source has them.
    #[error("{first}{}", if *.more > 0 { format!(" (and {} more)", .more) } else { String::new() })]
    SchemaProblems {
        /// The first problem, with its fix.
        first: String,
        /// How many more there are.
        more: usize,
    },
    /// A catalog query or DDL statement failed.
    #[error("{context}")]
    Db {
        /// What was being done.
        context: String,
        /// Server or connection error.
        #[source]
        source: tokio_postgres::Error,
    },
}

fn gen_word(generated: bool) -> &'static str {
    if generated { "generated" } else { "a plain column" }
}

fn list(names: &[QualifiedName]) -> String {
    names.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// Adds context to a tokio-postgres result.
pub(crate) trait DbContext<T> {
    /// Wraps the error in [`Error::Db`] with a lazily built context.
    fn db_context(self, context: impl FnOnce() -> String) -> Result<T, Error>;
}

impl<T> DbContext<T> for Result<T, tokio_postgres::Error> {
    fn db_context(self, context: impl FnOnce() -> String) -> Result<T, Error> {
        self.map_err(|source| Error::Db { context: context(), source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_table_column_and_fix() {
        let e = Error::ColumnTypeMismatch {
            table: QualifiedName::new("public", "t"),
            column: "c".into(),
            source_type: "integer".into(),
            target_type: "text".into(),
        };
        let msg = e.to_string();
        assert!(msg.contains("\"public\".\"t\"") && msg.contains("\"c\""), "{msg}");
        assert!(msg.contains("integer") && msg.contains("text"), "{msg}");

        let e = Error::PublicationMissingTables {
            publication: "p".into(),
            missing: vec![QualifiedName::new("a", "b"), QualifiedName::new("c", "d")],
        };
        assert!(e.to_string().contains("\"a\".\"b\", \"c\".\"d\""), "{e}");

        let e = Error::GeneratedMismatch {
            table: QualifiedName::new("s", "t"),
            column: "g".into(),
            source_generated: true,
        };
        assert!(e.to_string().contains("generated on the source but a plain column"), "{e}");
    }
}
