//! When a target COMMIT is durable.
//!
//! By default the session runs with `synchronous_commit = off`, as the native subscriber does:
//! COMMIT returns before its WAL is flushed. A target crash may then lose the last commits,
//! but the progress row goes with them, so the source sends them again. What must not happen
//! is confirming such a commit to the primary (it would drop the WAL we still need). So after
//! each COMMIT the target's WAL insert position is recorded (asked in the COMMIT's own
//! pipeline), and a source LSN is reported durable only once `pg_current_wal_flush_lsn()` has
//! passed the position recorded for it (the WAL writer flushes within a few hundred
//! milliseconds; the applier polls). With `synchronous_commit: true` the session uses `local`
//! and a returned COMMIT is durable.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use pgoutput_decoder::Lsn;
use tokio_postgres::types::PgLsn;
use tokio_postgres::{Client, Row, Statement};

use crate::error::ApplyError;

/// The reply to the WAL position query sent behind a COMMIT.
pub(super) type PositionFuture =
    Pin<Box<dyn Future<Output = Result<Row, tokio_postgres::Error>> + Send>>;

/// The durability of one session's commits.
pub(super) struct Durability {
    /// A returned COMMIT is durable (`synchronous_commit = local`).
    synchronous: bool,
    wal_stmt: Statement,
    flush_lsn_stmt: Statement,
    flushes: Flushes,
}

impl Durability {
    /// Prepares the WAL position queries.
    pub(super) async fn prepare(client: &Client, synchronous: bool) -> Result<Self, ApplyError> {
        let wal_stmt = client
            .prepare("SELECT pg_current_wal_insert_lsn(), pg_current_wal_flush_lsn()")
            .await
            .map_err(|e| ApplyError::target("preparing WAL position query", e))?;
        let flush_lsn_stmt = client
            .prepare("SELECT pg_current_wal_flush_lsn()")
            .await
            .map_err(|e| ApplyError::target("preparing WAL position query", e))?;
        Ok(Durability { synchronous, wal_stmt, flush_lsn_stmt, flushes: Flushes::default() })
    }

    /// The WAL position query to send right behind a COMMIT, in the same pipeline: the
    /// server answers it after the COMMIT, so its insert position covers the commit record,
    /// and no round trip is spent on it. `None` when a returned COMMIT is durable.
    pub(super) fn position_after_commit(&self, client: &Arc<Client>) -> Option<PositionFuture> {
        if self.synchronous {
            return None;
        }
        let client = Arc::clone(client);
        let stmt = self.wal_stmt.clone();
        Some(Box::pin(async move { client.query_one(&stmt, &[]).await }))
    }

    /// A COMMIT holding the source transactions up to `end_lsn` returned; `position` is the
    /// answer to [`Self::position_after_commit`]'s query sent behind it.
    pub(super) fn committed(
        &mut self,
        position: Option<Result<Row, tokio_postgres::Error>>,
        end_lsn: Lsn,
    ) -> Result<(), ApplyError> {
        let Some(position) = position else {
            self.flushes.durable_up_to(end_lsn);
            return Ok(());
        };
        let row = position.map_err(|e| ApplyError::target("reading the WAL position", e))?;
        let insert: PgLsn = row.get(0);
        let flushed: PgLsn = row.get(1);
        self.flushes.push(u64::from(insert), end_lsn);
        self.flushes.flushed(u64::from(flushed));
        Ok(())
    }

    /// Whether commits wait for the target's WAL flush.
    pub(super) fn has_unflushed(&self) -> bool {
        !self.flushes.waiting.is_empty()
    }

    /// Asks how far the target's WAL is flushed, and marks the commits below durable.
    pub(super) async fn poll(&mut self, client: &Client) -> Result<(), ApplyError> {
        let row = client
            .query_one(&self.flush_lsn_stmt, &[])
            .await
            .map_err(|e| ApplyError::target("reading the WAL flush position", e))?;
        let flushed: PgLsn = row.get(0);
        self.flushes.flushed(u64::from(flushed));
        Ok(())
    }

    /// The newest source end LSN whose commit is durable.
    pub(super) fn durable(&self) -> Option<Lsn> {
        self.flushes.durable
    }
}

/// Commits waiting for the target's WAL flush, and the newest durable source end LSN.
#[derive(Debug, Default)]
struct Flushes {
    /// (target WAL position after the COMMIT, source end LSN it holds), oldest first.
    waiting: VecDeque<(u64, Lsn)>,
    durable: Option<Lsn>,
}

impl Flushes {
    fn push(&mut self, wal_position: u64, end_lsn: Lsn) {
        self.waiting.push_back((wal_position, end_lsn));
    }

    /// Marks every waiting commit at or below the target's WAL flush position durable.
    fn flushed(&mut self, flushed: u64) {
        while let Some(&(pos, end)) = self.waiting.front() {
            if pos > flushed {
                break;
            }
            self.waiting.pop_front();
            self.durable_up_to(end);
        }
    }

    fn durable_up_to(&mut self, end: Lsn) {
        self.durable = Some(self.durable.map_or(end, |d| d.max(end)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_is_durable_once_the_wal_is_flushed_past_it() {
        let mut f = Flushes::default();
        f.push(100, Lsn(10));
        f.push(200, Lsn(20));
        f.flushed(99);
        assert_eq!(f.durable, None);
        f.flushed(150);
        assert_eq!(f.durable, Some(Lsn(10)));
        f.flushed(200);
        assert_eq!(f.durable, Some(Lsn(20)));
        assert!(f.waiting.is_empty());
    }

    #[test]
    fn durability_never_goes_back() {
        let mut f = Flushes::default();
        f.durable_up_to(Lsn(30));
        f.push(100, Lsn(20));
        f.flushed(100);
        assert_eq!(f.durable, Some(Lsn(30)));
    }
}
