//! End-to-end tests of the `pgmirror` commands against real PostgreSQL clusters that the tests
//! start themselves. One binary, so tests share one cluster where that is safe; each test uses
//! its own databases, slots and publications.

mod bench;
mod cli_errors;
mod common;
mod crash;
mod demo;
mod docker;
mod errors;
mod examples;
mod faults;
mod first_start;
mod flags;
mod hostile;
mod lab;
mod libpq;
mod metrics;
mod mirror;
mod mysql;
mod mysql_shards;
mod nats;
mod ops;
mod safety;
mod schema;
mod security;
mod shards;
mod status;
mod structure;
mod support;
mod tables;
mod tail;
mod target_schema;
