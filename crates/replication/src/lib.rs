//! PostgreSQL logical replication connection, over tokio, `postgres-protocol`
//! and rustls.
//!
//! - [`ConnConfig`]: connection strings as PostgreSQL users write them (URL or
//!   `key=value`, `PG*` variables, service file, `.pgpass`, several hosts with
//!   `target_session_attrs`), never showing the password.
//! - [`ReplicationClient`]: a `replication=database` connection with
//!   IDENTIFY_SYSTEM, slot commands, plain SQL and `COPY TO STDOUT`.
//! - [`LogicalReplicationStream`]: START_REPLICATION with decoded pgoutput
//!   events and feedback that keeps the walsender alive even when the
//!   consumer is slow; progress is confirmed with a [`FeedbackHandle`].
//! - [`connect_sql`]: an ordinary tokio-postgres connection with the same
//!   settings and TLS rules.
//!
//! ```no_run
//! use replication::{ConnConfig, ReplicationClient, StartReplication};
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
mod config;
mod error;
mod hosts;
mod identity;
mod pacing;
mod sql;
mod stream;
mod tls;
mod wire;

pub use client::{
    CreateSlotOptions, ReplicationClient, SimpleRow, SlotInfo, SnapshotAction, SystemInfo,
};
pub use config::{
    ChannelBinding, ConnConfig, DEFAULT_APPLICATION_NAME, DEFAULT_PORT, Host, Keepalives,
    PasswordPrompt, SslMode, TargetSessionAttrs,
};
pub use error::{DbError, Error, quote_ident, quote_literal};
pub use identity::{DatabaseIdentity, identify};
pub use pacing::BULK_READ_WAIT;
pub use sql::connect_sql;
pub use stream::{
    DEFAULT_CHANNEL_CAPACITY, DEFAULT_STATUS_INTERVAL, FeedbackHandle, LogicalReplicationStream,
    ReplicationEvent, StartReplication, Streaming,
};
pub use tls::MakeRustlsConnect;
