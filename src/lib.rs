//! pgmirror as a library: the CLI's commands and the mirror's orchestration, on top of the
//! workspace crates (`pgoutput-decoder`, `replication`, `applier`, `tablesync`).
#![deny(missing_docs)]

pub mod cli;
pub mod commands;
pub mod conn;
pub mod guard;
pub mod logging;
pub mod metrics;
pub mod mirror;
pub mod progress;
pub mod pump;
pub mod retry;
pub mod setup;
pub mod shutdown;
pub mod text;
