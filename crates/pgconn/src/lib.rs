//! Connecting to PostgreSQL as libpq does, for the whole project: both the ordinary SQL
//! connections (through tokio-postgres) and the replication connection of the `replication`
//! crate take their settings, TLS, host list and error classification from here.
//!
//! - [`ConnConfig`]: connection strings as PostgreSQL users write them (URL or
//!   `key=value`, `PG*` variables, service file, `.pgpass`, several hosts with
//!   `target_session_attrs`), never showing the password.
//! - [`connect_sql`]: an ordinary tokio-postgres connection with every one of those
//!   settings and TLS through rustls ([`tls`]).
//! - [`hosts`]: trying several hosts in turn, for any kind of connection.
//! - [`Error`] and [`DbError`]: what went wrong, with the fix for the usual setup mistakes;
//!   [`sqlstate`] classifies server errors by their typed code ([`SqlState`]).
//! - [`quote_ident`] and [`quote_literal`]: the one way SQL text gets a name or a value.
//! - [`identify`]: which server and database a connection reached.
//!
//! ```no_run
//! # async fn demo() -> Result<(), pgconn::Error> {
//! let cfg = pgconn::ConnConfig::parse("postgres://app@db.example.com/app?sslmode=verify-full")?;
//! let client = pgconn::connect_sql(&cfg).await?;
//! let table = pgconn::quote_ident("Order Items");
//! client.simple_query(&format!("SELECT count(*) FROM {table}")).await?;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod config;
mod error;
pub mod hosts;
mod identity;
mod quote;
mod sql;
pub mod sqlstate;
pub mod tls;

pub use config::{
    ChannelBinding, ConnConfig, DEFAULT_APPLICATION_NAME, DEFAULT_PORT, Host, Keepalives,
    PasswordPrompt, SslMode, TargetSessionAttrs,
};
pub use error::{DbError, Error};
pub use identity::{DatabaseIdentity, identify};
pub use quote::{quote_ident, quote_literal};
pub use sql::connect_sql;
pub use sqlstate::SqlState;
pub use tls::MakeRustlsConnect;
