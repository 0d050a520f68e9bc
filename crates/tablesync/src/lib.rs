//! Everything about tables that is not streaming apply: what the source has, making the
//! target match, copying the data consistently with the replication slot, keeping
//! sequences in step, and verifying that both sides hold the same rows.
//!
//! Typical initial sync, as `pgmirror mirror` runs it:
//! 1. [`resolve_selection`] or [`resolve_tables`] (or [`publication_tables`]) on the source, then
//!    [`ensure_publication`].
//! 2. [`plan_target_schema`] and [`SchemaPlan::create`] for what the target lacks (types,
//!    sequences, tables, constraints, indexes, foreign keys), [`ensure_target_table`] to check
//!    the tables it has, and [`ensure_targets_empty`] unless the target is to be truncated.
//! 3. Create the slot with `SNAPSHOT 'export'` on a replication connection and keep that
//!    connection idle; [`copy_tables`] with the snapshot name.
//!    Then [`validate_foreign_keys`] for the foreign keys created NOT VALID.
//! 4. [`table_sequences`] + [`apply_sequences`], later [`sync_sequences`] periodically.
//! 5. [`compare_tables`] / [`diff_keys`] to verify.
//!
//! Every identifier is quoted; names are kept exactly as the catalog stores them.
#![deny(missing_docs)]

mod catalog;
mod copy;
mod error;
mod ident;
mod publication;
mod schema;
mod select;
mod sequences;
mod verify;

pub use catalog::{
    ColumnDef, IdentityKind, ReplicaIdentity, SequenceDef, TableDef, publication_tables,
    refresh_sequences, resolve_tables, table_sequences,
};
pub use copy::{
    Connector, CopyEvent, CopyFormat, CopyOptions, CopyReport, NoTlsConnector, TableReport,
    copy_tables,
};
pub use error::{BoxError, Error};
pub use ident::{QualifiedName, TablePattern};
pub use publication::{PublicationStatus, drop_publication, ensure_publication};
pub use schema::{
    CreatedSchema, NotCreated, ObjectKind, Planned, SchemaPlan, SchemaProblem, TargetOptions,
    TargetTable, ValidationFailure, create_table_sql, ensure_target_table, ensure_targets_empty,
    plan_target_schema, target_is_empty, validate_foreign_keys,
};
pub use select::resolve_selection;
pub use sequences::{
    SequenceFailure, SequenceReport, apply_sequences, create_sequence_sql, sync_sequences,
};
pub use verify::{
    ChunkDiff, ChunkHash, DiffKind, Key, KeyDiff, KeyRange, TableHash, chunk_hashes,
    compare_tables, diff_keys, table_hash,
};
