//! One module per command.

pub mod check;
pub mod demo;
pub mod drop;
pub mod mirror;
pub mod status;
pub mod tail;
pub mod verify;
