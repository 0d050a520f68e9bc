//! One module per command.

pub mod mirror;
pub mod tail;
