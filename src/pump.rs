//! The streaming loop shared by `tail` and `mirror`: replication events in, applier calls out,
//! durable LSNs confirmed back to the primary.

use std::time::Duration;

use applier::{Applier, ApplyError, Target};
use replication::LogicalReplicationStream;
use tokio::time::Instant;

use crate::metrics::Metrics;
use crate::progress::CatchUp;
use crate::shutdown::Shutdown;

/// How long the stream may be silent before we treat it as idle and flush. Short, so a lone
/// small transaction reaches the target within a few milliseconds; during catch-up the channel
/// is never empty for this long, so grouping is unaffected.
const IDLE_AFTER: Duration = Duration::from_millis(2);
/// Durability checks at a clean stop (20 ms apart).
const STOP_FLUSH_TRIES: u32 = 50;
/// How long to sleep when nothing at all is pending.
const IDLE_SLEEP: Duration = Duration::from_millis(500);

/// Why the loop ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PumpEnd {
    /// A stop was requested; everything received was applied and confirmed.
    Stopped,
}

/// Why the loop failed.
#[derive(Debug, thiserror::Error)]
pub enum PumpError {
    /// The replication stream failed (network, server, decode).
    #[error("replication stream")]
    Source(#[from] replication::Error),
    /// The server ended the stream.
    #[error("the primary ended the replication stream")]
    SourceClosed,
    /// Applying into the target failed.
    #[error(transparent)]
    Apply(#[from] ApplyError),
}

/// Feeds `stream` into `applier` until a stop is requested or something fails. Confirms every
/// LSN the applier reports durable. On a stop it finishes the transaction in progress, flushes,
/// confirms, and ends the stream with a final status update.
///
/// # Errors
/// See [`PumpError`]. The stream is dropped (not shut down cleanly) on error.
pub async fn pump<T: Target>(
    applier: &mut Applier<T>,
    mut stream: LogicalReplicationStream,
    shutdown: &mut Shutdown,
    metrics: &Metrics,
) -> Result<PumpEnd, PumpError> {
    if let Some(start) = applier.start_progress() {
        // What the target already holds is durable: lets the stream acknowledge keepalives.
        stream.confirm(start);
    }
    let mut pending = false;
    let mut catch_up = CatchUp::new();
    loop {
        if shutdown.is_triggered() && applier.is_between_transactions() {
            // The target commits asynchronously: give its WAL flush a moment so the final
            // status update confirms everything applied (what is not confirmed is sent again
            // and skipped, so this only saves work on the next start).
            for _ in 0..STOP_FLUSH_TRIES {
                if let Some(lsn) = applier.flush().await? {
                    stream.confirm(lsn);
                }
                if applier.is_quiescent() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            metrics.positions(stream.received_lsn(), stream.confirmed_lsn());
            stream.shutdown().await?;
            return Ok(PumpEnd::Stopped);
        }
        let wait = match (pending, stream.is_reading_backlog()) {
            // A backlog arrives in gulps: a pause between two is not an idle primary, and
            // flushing there would cut the target transactions short.
            (true, true) => replication::BULK_READ_WAIT * 3,
            (true, false) => IDLE_AFTER,
            (false, _) => IDLE_SLEEP,
        };
        let deadline = applier
            .next_deadline()
            .map(Instant::from_std)
            .map_or(Instant::now() + wait, |d| d.min(Instant::now() + wait));
        tokio::select! {
            event = stream.next() => {
                let event = match event {
                    Some(Ok(event)) => event,
                    Some(Err(e)) => return Err(e.into()),
                    None => return Err(PumpError::SourceClosed),
                };
                pending = true;
                metrics.observe(&event.message);
                if let Some(lsn) = applier.handle(event.message).await? {
                    stream.confirm(lsn);
                    metrics.positions(stream.received_lsn(), lsn);
                    catch_up.update(stream.received_lsn(), lsn);
                }
            }
            () = tokio::time::sleep_until(deadline) => {
                if let Some(lsn) = applier.idle().await? {
                    stream.confirm(lsn);
                }
                metrics.positions(stream.received_lsn(), stream.confirmed_lsn());
                catch_up.update(stream.received_lsn(), stream.confirmed_lsn());
                pending = applier.next_deadline().is_some();
                if !pending && applier.is_quiescent() {
                    catch_up.caught_up(stream.confirmed_lsn().max(stream.received_lsn()));
                }
            }
            () = shutdown.wait(), if !shutdown.is_triggered() => {}
        }
    }
}
