//! Throwaway local MariaDB servers and NATS JetStream servers, for tests and benchmarks.
//!
//! Like `pgcluster` for PostgreSQL, and on the same plumbing (`serverproc`): each server
//! lives in a temporary directory, listens on a free port of 127.0.0.1, dies with the
//! process that started it (even on SIGKILL), and is removed when dropped. A process-wide
//! shared server of each kind serves tests that only need a database or a stream of their
//! own; tests that stop, restart or crash a server start their own.
//!
//! ```no_run
//! # async fn demo() -> Result<(), testservers::Error> {
//! use sqlx::Executor;
//! let mariadb = testservers::mariadb::shared();
//! let db = testservers::unique_name("mytest");
//! mariadb.create_database(&db).await?;
//! let mut conn = mariadb.connect(&db).await?;
//! conn.execute("CREATE TABLE t (id int PRIMARY KEY)").await?;
//!
//! let nats = testservers::nats::shared();
//! let jetstream = async_nats::jetstream::new(nats.connect().await?);
//! # Ok(()) }
//! ```
//!
//! Not for production code: nothing but tests and benchmarks may depend on this crate.
//! The servers come from Debian's `mariadb-server` and `nats-server` packages.
#![deny(missing_docs)]

mod conf;
mod error;
mod exit;
pub mod mariadb;
pub mod nats;
mod server;

pub use error::Error;
pub use mariadb::{MariaDb, MariaDbBuilder};
pub use nats::{NatsCluster, NatsServer};
pub use server::Server;
pub use serverproc::{LogGuard, unique_name};
