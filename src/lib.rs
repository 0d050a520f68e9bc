//! pgmirror as a library: the CLI's commands and the mirror's orchestration, on top of the
//! workspace crates (`pgoutput-decoder`, `replication`, `applier`, `tablesync`).
#![deny(missing_docs)]

pub mod bars;
pub mod cli;
pub mod commands;
pub mod conn;
pub mod display;
pub mod logging;
pub mod metrics;
pub mod mirror;
pub mod preflight;
pub mod pump;
pub mod retry;
pub mod same_database;
pub mod selection;
pub mod shutdown;
pub mod target_url;
