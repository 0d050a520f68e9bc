//! Replays decoded `pgoutput` transactions into a target.
//!
//! The [`Applier`] is fed [`LogicalMessage`](pgoutput_decoder::LogicalMessage)s in stream order
//! (from a live replication stream or a recording). It keeps the relation cache, skips source
//! transactions the target already has (exactly-once after a restart), assembles streamed and
//! two-phase transactions in bounded memory (spilling to temporary files), and decides when the
//! target makes its work durable. Targets implement one small trait, [`Target`]:
//!
//! - [`PostgresTarget`]: a PostgreSQL mini-replica. Many source transactions are grouped into
//!   one target transaction together with the progress row (`pgmirror.progress`), statements are
//!   pipelined, runs of inserts become one `COPY`, runs of updates and deletes become one
//!   set-based statement.
//! - [`JsonTarget`]: one JSON object per line, for change data capture.
//! - [`MySqlTarget`]: a MySQL/MariaDB replica through sqlx, progress in `pgmirror_progress`,
//!   multi-row inserts and set-based updates and deletes.
//! - [`shard::ShardedTarget`]: N targets laid out as PostgreSQL's hash partitioning, each
//!   keeping its own progress.
//! - [`NatsTarget`]: one message per change into a NATS JetStream stream, exactly once.
//!
//! # Driving an applier
//! The caller owns the replication stream and its feedback. For each message it calls
//! [`Applier::handle`]; whenever it finds the stream idle (it decides when: the applier does not
//! see the stream), and once [`Applier::next_deadline`] has passed, it calls [`Applier::idle`].
//! Both return `Some(lsn)` when a new source LSN became durable on the target: that is the LSN
//! to confirm to the primary (write/flush/apply). [`Applier::is_quiescent`] says when nothing
//! is left to apply or confirm. Start replication at the slot's own position (`0/0`): the
//! applier skips what the target already has, using the progress it loads from the target.

#![deny(missing_docs)]

mod applier;
mod error;
mod json;
pub mod mysql;
pub mod nats;
mod postgres;
pub mod shard;
mod spill;
mod target;
#[cfg(test)]
mod testing;

pub use applier::{Applier, ApplierConfig, ApplyStats};
pub use error::{ApplyError, Op, SchemaChange};
pub use json::JsonTarget;
pub use mysql::{MySqlTarget, MySqlTargetConfig, MySqlTargetStats};
pub use nats::{NatsError, NatsTarget, NatsTargetConfig, PayloadFormat};
pub use postgres::progress;
pub use postgres::{PostgresTarget, PostgresTargetConfig, PostgresTargetStats, TypeResolver};
pub use target::{Change, CommitInfo, Target, TxnInfo, TypeMap};
