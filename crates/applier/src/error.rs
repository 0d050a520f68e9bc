//! The applier's error type.

use std::fmt;
use std::io;

use pgoutput_decoder::{DecodeError, Lsn};

/// The kind of row operation a failing statement performed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `INSERT` (or a `COPY` of inserted rows).
    Insert,
    /// `UPDATE`.
    Update,
    /// `DELETE`.
    Delete,
    /// `TRUNCATE`.
    Truncate,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Insert => "insert",
            Op::Update => "update",
            Op::Delete => "delete",
            Op::Truncate => "truncate",
        })
    }
}

/// Everything that can go wrong while applying changes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// A change failed on the target (constraint violation, bad value, missing table...).
    #[error("{op} on {table} failed (source commit {commit_lsn})")]
    Change {
        /// Schema-qualified, quoted target table.
        table: String,
        /// What the statement did.
        op: Op,
        /// Commit LSN of the source transaction the change belongs to; for a statement that
        /// carries rows of several source transactions (COPY, set-based, folded updates), the
        /// first of them.
        commit_lsn: Lsn,
        /// The target's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A bookkeeping statement (BEGIN, COMMIT, progress, catalog lookup) failed on the target.
    #[error("target database: {context}")]
    Target {
        /// What we were doing.
        context: String,
        /// The target's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The target does not offer what was asked (see the [`Target`](crate::Target) method).
    #[error("the target does not support {0}")]
    Unsupported(&'static str),
    /// A second connection to the target (see [`Target::fork`](crate::Target::fork)) could not
    /// be opened.
    #[error("opening another connection to the target")]
    Connect(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A change referenced a relation id that no Relation message described.
    #[error("relation id {rel_id} used before a Relation message described it")]
    UnknownRelation {
        /// The unknown relation id.
        rel_id: u32,
    },
    /// The source relation and the target table differ in a way we do not repair.
    #[error("schema mismatch on {table}: {detail}")]
    Schema {
        /// Schema-qualified, quoted table.
        table: String,
        /// What differs.
        detail: String,
    },
    /// The source's table changed in a way only its catalog explains (see
    /// [`PostgresTargetConfig::report_schema_changes`](crate::PostgresTargetConfig)): the
    /// caller repairs the target and starts again from the stored progress. Nothing of the
    /// transaction that met it was committed.
    #[error("table \"{schema}\".\"{table}\" changed on the source: {change}")]
    SchemaChanged {
        /// The table's schema, as the source names it.
        schema: String,
        /// The table's name.
        table: String,
        /// What changed.
        change: SchemaChange,
    },
    /// An update or delete lacks the values that identify the row.
    #[error("{op} on {table} carries no usable replica identity: {detail}")]
    MissingIdentity {
        /// Schema-qualified, quoted table.
        table: String,
        /// The operation.
        op: Op,
        /// What is missing.
        detail: String,
    },
    /// Messages arrived in an order the protocol does not allow.
    #[error("unexpected {message} message {state}")]
    Protocol {
        /// The message that arrived.
        message: &'static str,
        /// Where in the stream it arrived (e.g. "outside a transaction").
        state: String,
    },
    /// COMMIT PREPARED for a transaction whose prepared content we do not hold.
    #[error("COMMIT PREPARED {gid:?} (end {end_lsn}) but its PREPARE was not received")]
    UnknownPrepared {
        /// The global transaction id.
        gid: String,
        /// End LSN of the commit.
        end_lsn: Lsn,
    },
    /// Writing or reading a spill file failed.
    #[error("spill file I/O")]
    Spill(#[source] io::Error),
    /// A spilled message could not be decoded again (corrupt spill file).
    #[error("decoding a spilled message")]
    SpillDecode(#[source] DecodeError),
    /// Looking up a type on the source (to render its values as JSON) failed.
    #[error("looking up type {type_oid} on the source")]
    TypeLookup {
        /// The type's OID.
        type_oid: u32,
        /// The source's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// Writing the JSON output failed.
    #[error("writing JSON output")]
    Output(#[source] io::Error),
    /// A statement on a MySQL/MariaDB target failed.
    #[error("MySQL target: {context}")]
    MySql {
        /// What we were doing.
        context: String,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// A value the MySQL target cannot hold exactly; nothing of its transaction was committed.
    #[error(
        "cannot mirror {table} row ({key}) into MySQL: column {column:?} value {value:?}: \
         {reason}; change the value on the source or leave the table out of the mirror"
    )]
    Unrepresentable {
        /// The source table, quoted.
        table: String,
        /// The row's key, `column=value` pairs.
        key: String,
        /// The column.
        column: String,
        /// The value, as the source prints it (cut at 80 characters).
        value: String,
        /// Why MySQL cannot hold it.
        reason: String,
    },
    /// The MySQL target's tables cannot mirror the source's: one line per problem.
    #[error("the MySQL target does not fit the source:\n  {}", .0.join("\n  "))]
    TargetSchema(Vec<String>),
    /// Reading the source's catalog (for a MySQL target's tables) failed.
    #[error("reading the source's catalog")]
    SourceCatalog(#[source] tokio_postgres::Error),
    /// A MySQL target URL that cannot be used.
    #[error("bad MySQL target URL: {0}")]
    BadTargetUrl(String),
    /// Publishing to NATS JetStream, or setting up its stream and bucket, failed.
    #[error(transparent)]
    Nats(#[from] crate::nats::NatsError),
    /// An earlier error left the target in an unknown state; build a new one.
    #[error("the target failed earlier and must be recreated")]
    Poisoned,
    /// A change could not be routed to its shard.
    #[error(transparent)]
    Shard(#[from] crate::shard::ShardError),
}

/// How a source table changed (see [`ApplyError::SchemaChanged`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SchemaChange {
    /// The table is not on the target: added to the publication while mirroring.
    TableMissing,
    /// Columns the target table lacks.
    ColumnsAdded(Vec<String>),
    /// A column whose type differs from the target's.
    ColumnTypeChanged {
        /// The column.
        column: String,
    },
}

impl std::fmt::Display for SchemaChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SchemaChange::TableMissing => write!(f, "it is published but not on the target"),
            SchemaChange::ColumnsAdded(cols) => write!(f, "new columns {cols:?}"),
            SchemaChange::ColumnTypeChanged { column } => {
                write!(f, "column {column:?} has another type")
            }
        }
    }
}

impl ApplyError {
    pub(crate) fn target(context: impl Into<String>, source: tokio_postgres::Error) -> Self {
        ApplyError::Target { context: context.into(), source }
    }

    pub(crate) fn protocol(message: &'static str, state: impl Into<String>) -> Self {
        ApplyError::Protocol { message, state: state.into() }
    }

    /// Whether this is a MySQL target's fault that a new connection may not meet again: the
    /// connection was lost, the server is shutting down or restarting, a lock wait timed out
    /// or a deadlock was broken.
    pub fn is_mysql_transient(&self) -> bool {
        let ApplyError::MySql { source, .. } = self else { return false };
        match source {
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Database(db) => {
                // ER_SERVER_SHUTDOWN, ER_CON_COUNT_ERROR, ER_LOCK_WAIT_TIMEOUT, ER_LOCK_DEADLOCK,
                // ER_CONNECTION_KILLED, ER_NORMAL_SHUTDOWN
                let code =
                    db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>().map(|e| e.number());
                matches!(code, Some(1040 | 1053 | 1077 | 1205 | 1213 | 1927 | 4031))
            }
            _ => false,
        }
    }

    /// The target's database error, when this error came from one (for its SQLSTATE and text).
    pub fn as_db_error(&self) -> Option<&tokio_postgres::error::DbError> {
        match self {
            ApplyError::Change { source, .. } | ApplyError::Target { source, .. } => {
                source.as_db_error()
            }
            _ => None,
        }
    }
}
