//! PostgresTarget against real clusters: changes read from a real slot, applied into another
//! database, compared with `store::table_fingerprint`.

#[path = "../common/mod.rs"]
mod common;

mod batching;
mod buffered;
mod errors;
mod rows;
