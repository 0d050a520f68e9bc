//! One module per command, and the table flags several of them share (`table_args`).

pub mod bench;
pub mod check;
pub mod demo;
pub mod drop;
pub mod mirror;
pub mod record;
pub mod replay;
pub mod reshard;
pub mod resync;
pub mod shard_keys;
pub mod status;
pub mod table_args;
pub mod tail;
pub mod verify;
