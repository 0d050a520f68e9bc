//! One module per command.

pub mod demo;
pub mod mirror;
pub mod tail;
