//! When a target COMMIT is durable.
//!
//! By default the session runs with `synchronous_commit = off`, as the native subscriber does:
//! COMMIT returns before its WAL is flushed. A target crash may then lose the last commits,
//! but the progress row goes with them, so the source sends them again. What must not happen
//! is confirming such a commit to the primary (it would drop the WAL we still need). So the
//! target's WAL insert position after a COMMIT is recorded (asked in the COMMIT's own pipeline,
//! at most every [`ASK_EVERY`]; a position asked later covers the commits before it), and a
//! source LSN is reported durable only once `pg_current_wal_flush_lsn()` has passed the
//! position recorded for it (the WAL writer flushes within a few hundred milliseconds; the
//! applier polls). With `synchronous_commit: true` the session uses `local` and a returned
//! COMMIT is durable.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgoutput_decoder::Lsn;
use tokio_postgres::types::PgLsn;
use tokio_postgres::{Client, Row, Statement};

use crate::error::ApplyError;

/// The reply to the WAL position query sent behind a COMMIT.
pub(super) type PositionFuture =
    Pin<Box<dyn Future<Output = Result<Row, tokio_postgres::Error>> + Send>>;

/// How often a WAL position is asked behind a COMMIT. The WAL writer flushes asynchronous
/// commits every `wal_writer_delay` (200 ms by default), so positions asked more often would
/// not make anything durable sooner; a live transaction every few milliseconds would pay a
/// statement each for nothing.
const ASK_EVERY: Duration = Duration::from_millis(200);

/// The durability of one session's commits.
pub(super) struct Durability {
    /// A returned COMMIT is durable (`synchronous_commit = local`).
    synchronous: bool,
    wal_stmt: Statement,
    flush_lsn_stmt: Statement,
    flushes: Flushes,
    /// When a WAL position was last asked behind a COMMIT.
    last_asked: Option<Instant>,
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
        Ok(Durability {
            synchronous,
            wal_stmt,
            flush_lsn_stmt,
            flushes: Flushes::default(),
            last_asked: None,
        })
    }

    /// The WAL position query to send right behind a COMMIT, in the same pipeline: the
    /// server answers it after the COMMIT, so its insert position covers the commit record,
    /// and no round trip is spent on it. `None` when a returned COMMIT is durable, or when a
    /// position was asked less than [`ASK_EVERY`] ago (the next one, or [`Self::poll`],
    /// covers this commit).
    pub(super) fn position_after_commit(&mut self, client: &Arc<Client>) -> Option<PositionFuture> {
        if self.synchronous || self.last_asked.is_some_and(|t| t.elapsed() < ASK_EVERY) {
            return None;
        }
        self.last_asked = Some(Instant::now());
        let client = Arc::clone(client);
        let stmt = self.wal_stmt.clone();
        Some(Box::pin(async move { client.query_one(&stmt, &[]).await }))
    }

    /// A COMMIT holding the source transactions up to `end_lsn` returned; `position` is the
    /// answer to [`Self::position_after_commit`]'s query sent behind it, if one was.
    pub(super) fn committed(
        &mut self,
        position: Option<Result<Row, tokio_postgres::Error>>,
        end_lsn: Lsn,
    ) -> Result<(), ApplyError> {
        match position {
            Some(position) => self.positioned(position, end_lsn),
            None if self.synchronous => {
                self.flushes.durable_up_to(end_lsn);
                Ok(())
            }
            None => {
                self.flushes.unpositioned(end_lsn);
                Ok(())
            }
        }
    }

    /// The answer to the WAL position query, asked once the commits up to `end_lsn` returned.
    fn positioned(
        &mut self,
        position: Result<Row, tokio_postgres::Error>,
        end_lsn: Lsn,
    ) -> Result<(), ApplyError> {
        let row = position.map_err(|e| ApplyError::target("reading the WAL position", e))?;
        let insert: PgLsn = row.get(0);
        let flushed: PgLsn = row.get(1);
        self.flushes.push(u64::from(insert), end_lsn);
        self.flushes.flushed(u64::from(flushed));
        Ok(())
    }

    /// Whether commits wait for the target's WAL flush.
    pub(super) fn has_unflushed(&self) -> bool {
        !self.flushes.waiting.is_empty() || self.flushes.unpositioned.is_some()
    }

    /// Asks how far the target's WAL is flushed, and marks the commits below durable; asks
    /// the position of the commits that have none first (every one of them returned before
    /// the query went out, so the current insert position is past their records).
    pub(super) async fn poll(&mut self, client: &Client) -> Result<(), ApplyError> {
        if let Some(end_lsn) = self.flushes.unpositioned {
            let position = client.query_one(&self.wal_stmt, &[]).await;
            return self.positioned(position, end_lsn);
        }
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
    /// The newest source end LSN committed with no WAL position known yet.
    unpositioned: Option<Lsn>,
    durable: Option<Lsn>,
}

impl Flushes {
    /// A WAL position read after the commits up to `end_lsn` returned: past every earlier
    /// commit's record too, those without a position included.
    fn push(&mut self, wal_position: u64, end_lsn: Lsn) {
        self.waiting.push_back((wal_position, end_lsn));
        self.unpositioned = None;
    }

    /// A commit up to `end_lsn` returned and no position was asked behind it.
    fn unpositioned(&mut self, end_lsn: Lsn) {
        self.unpositioned = self.unpositioned.max(Some(end_lsn));
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
    fn commits_without_a_position_wait_for_a_later_one() {
        let mut f = Flushes::default();
        f.unpositioned(Lsn(10));
        f.unpositioned(Lsn(20));
        f.flushed(u64::MAX);
        assert_eq!(f.durable, None);
        // Asked behind a later commit (or at the next poll, for the newest of them).
        f.push(300, Lsn(20));
        assert_eq!(f.unpositioned, None);
        f.flushed(299);
        assert_eq!(f.durable, None);
        f.flushed(300);
        assert_eq!(f.durable, Some(Lsn(20)));
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
