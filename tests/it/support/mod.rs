//! Test helpers that stand between pgmirror and the servers: a TCP proxy that cuts, stalls
//! and delays connections, and a fake walsender that sends hostile replication streams.

pub mod fake_walsender;
pub mod proxy;
