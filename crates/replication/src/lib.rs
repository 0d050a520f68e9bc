//! PostgreSQL logical replication: the walsender protocol over tokio and `postgres-protocol`,
//! with the connection settings, TLS and host list of [`pgconn`].
//!
//! - [`ReplicationClient`]: a `replication=database` connection with
//!   IDENTIFY_SYSTEM, slot commands, plain SQL and `COPY TO STDOUT`.
//! - [`LogicalReplicationStream`]: START_REPLICATION with decoded pgoutput
//!   events and feedback that keeps the walsender alive even when the
//!   consumer is slow; progress is confirmed with a [`FeedbackHandle`].
//! - [`Error`]: a connection's [`pgconn::Error`], or replication data that cannot be decoded;
//!   [`connection_error`] finds the connection error of either connection kind.
//!
//! ```no_run
//! use pgconn::ConnConfig;
//! use replication::{ReplicationClient, StartReplication};
//! # async fn demo() -> Result<(), replication::Error> {
//! let cfg = ConnConfig::parse("postgres://rep@db.example.com/app?sslmode=verify-full")?;
//! let client = ReplicationClient::connect(&cfg).await?;
//! let mut stream =
//!     client.start_replication(StartReplication::new("my_slot", ["my_pub"])).await?;
//! while let Some(event) = stream.next().await {
//!     let event = event?;
//!     if let pgoutput_decoder::LogicalMessage::Commit(commit) = &event.message {
//!         // ... once the transaction is durable in the target:
//!         stream.confirm(commit.end_lsn);
//!     }
//! }
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod client;
mod error;
mod pacing;
mod stream;
mod wire;

pub use client::{
    CreateSlotOptions, ReplicationClient, SimpleRow, SlotInfo, SnapshotAction, SystemInfo,
};
pub use error::{Error, connection_error};
pub use pacing::BULK_READ_WAIT;
pub use stream::{
    DEFAULT_CHANNEL_CAPACITY, DEFAULT_STATUS_INTERVAL, FeedbackHandle, LogicalReplicationStream,
    ReplicationEvent, StartReplication, Streaming,
};
