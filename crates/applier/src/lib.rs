//! applier
