//! Statements in flight on the target connection.
//!
//! tokio-postgres writes a request to the connection the first time its future is polled and
//! only then waits for the reply. So polling each new statement future once, in order, sends
//! the statements in order without waiting; the replies are collected later, also in order.
//! What is in flight is bounded by bytes and count so a slow target applies back-pressure.
//!
//! Polling a statement only hands it to the connection task; on pgmirror's one-thread
//! runtime that task writes it to the socket when the applier next yields. With a backlog
//! that is always ready, the applier would yield only once the pipeline is full, so the
//! target idled while the applier prepared the next statements, and the other way round.
//! Yielding after every [`YIELD_BYTES`] queued keeps both busy.
//!
//! Anything that needs a reply before going on (a `prepare`, a catalog query, starting a
//! `COPY`) first drains the pipeline: the connection hands replies over through small
//! per-request channels and stops reading when one is full, so awaiting a later request while
//! earlier ones are unpolled could stall.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use pgoutput_decoder::Lsn;

use crate::error::{ApplyError, Op};

/// Queued bytes after which the applier yields, so the connection task (on the same thread)
/// writes them out and the target works while the applier prepares the next statements.
const YIELD_BYTES: usize = 64 * 1024;

/// A statement's reply: the number of rows it affected.
pub(crate) type StmtFuture =
    Pin<Box<dyn Future<Output = Result<u64, tokio_postgres::Error>> + Send>>;

/// What a statement was for, to name it in errors and check its row count.
#[derive(Debug, Clone)]
pub(crate) enum Purpose {
    /// Row changes: `expected` rows should be affected.
    Change { table: Arc<str>, op: Op, commit_lsn: Lsn, expected: u64 },
    /// Bookkeeping (BEGIN, COMMIT, progress...).
    Other(&'static str),
}

struct Entry {
    fut: StmtFuture,
    purpose: Purpose,
    bytes: usize,
}

/// The in-flight statements, oldest first.
pub(crate) struct Pipeline {
    queue: VecDeque<Entry>,
    bytes: usize,
    max_bytes: usize,
    max_len: usize,
    /// Bytes queued since this task last let the connection task run.
    unsent: usize,
    /// Rows an update or delete expected but did not find (the target diverged).
    pub(crate) missing_rows: u64,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("len", &self.queue.len())
            .field("bytes", &self.bytes)
            .finish()
    }
}

/// Polls a future once, in the current task's context.
async fn poll_once(fut: &mut StmtFuture) -> Option<Result<u64, tokio_postgres::Error>> {
    std::future::poll_fn(|cx| {
        Poll::Ready(match fut.as_mut().poll(cx) {
            Poll::Ready(r) => Some(r),
            Poll::Pending => None,
        })
    })
    .await
}

impl Pipeline {
    pub(crate) fn new(max_bytes: usize, max_len: usize) -> Self {
        Pipeline {
            queue: VecDeque::new(),
            bytes: 0,
            max_bytes,
            max_len,
            unsent: 0,
            missing_rows: 0,
        }
    }

    /// Sends a statement (by polling its future once) and queues it for its reply.
    pub(crate) async fn push(
        &mut self,
        mut fut: StmtFuture,
        purpose: Purpose,
        bytes: usize,
    ) -> Result<(), ApplyError> {
        if let Some(res) = poll_once(&mut fut).await {
            // Only an error can be ready before the server replied; other entries are older.
            self.drain().await?;
            return self.finish(&purpose, res);
        }
        self.bytes += bytes;
        self.queue.push_back(Entry { fut, purpose, bytes });
        self.unsent += bytes;
        if self.unsent >= YIELD_BYTES {
            self.unsent = 0;
            tokio::task::yield_now().await;
        }
        // Collect whatever already arrived, then wait while over budget.
        loop {
            let over = self.bytes > self.max_bytes || self.queue.len() > self.max_len;
            let Some(front) = self.queue.front_mut() else { break };
            let res =
                if over { Some(front.fut.as_mut().await) } else { poll_once(&mut front.fut).await };
            match res {
                Some(res) => self.pop_with(res)?,
                None => break,
            }
        }
        Ok(())
    }

    fn pop_with(&mut self, res: Result<u64, tokio_postgres::Error>) -> Result<(), ApplyError> {
        let entry = self.queue.pop_front().expect("called with a front entry");
        self.bytes -= entry.bytes;
        self.finish(&entry.purpose, res)
    }

    /// Waits for every reply.
    pub(crate) async fn drain(&mut self) -> Result<(), ApplyError> {
        while let Some(front) = self.queue.front_mut() {
            let res = front.fut.as_mut().await;
            self.pop_with(res)?;
        }
        Ok(())
    }

    /// Whether nothing is in flight.
    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    fn finish(
        &mut self,
        purpose: &Purpose,
        res: Result<u64, tokio_postgres::Error>,
    ) -> Result<(), ApplyError> {
        match (purpose, res) {
            (Purpose::Change { table, op, expected, .. }, Ok(rows)) => {
                if rows < *expected && matches!(op, Op::Update | Op::Delete) {
                    // As the native subscriber does: the row is gone on the target; say so, go on.
                    self.missing_rows += expected - rows;
                    tracing::warn!(%table, %op, expected, found = rows, "rows to change not found on the target");
                }
                Ok(())
            }
            (Purpose::Other(_), Ok(_)) => Ok(()),
            (Purpose::Change { table, op, commit_lsn, .. }, Err(source)) => {
                Err(ApplyError::Change {
                    table: table.to_string(),
                    op: *op,
                    commit_lsn: *commit_lsn,
                    source,
                })
            }
            (Purpose::Other(what), Err(source)) => Err(ApplyError::target(*what, source)),
        }
    }
}
