//! One module per command.

pub mod bench;
pub mod check;
pub mod demo;
pub mod drop;
pub mod mirror;
pub mod record;
pub mod replay;
pub mod resync;
pub mod status;
pub mod tail;
pub mod verify;
