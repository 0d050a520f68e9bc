//! The streaming loop shared by `tail` and `mirror`: replication events in, applier calls out,
//! durable LSNs confirmed back to the primary.

use std::time::Duration;

use applier::{Applier, ApplyError, Target};
use pgoutput_decoder::{LogicalMessage, Lsn};
use replication::LogicalReplicationStream;
use tokio::time::Instant;

use crate::bars::CatchUpBar;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;

/// How long the stream may be silent before we treat it as idle and flush. Short, so a lone
/// small transaction reaches the target within a few milliseconds; during catch-up the channel
/// is never empty for this long, so grouping is unaffected. A transaction that arrives after
/// such a quiet spell is flushed as soon as the stream has nothing more to give instead (a
/// lone transaction on an idle primary), and the next ones wait again (a busy primary).
const IDLE_AFTER: Duration = Duration::from_millis(2);
/// Durability checks at a clean stop (20 ms apart).
const STOP_FLUSH_TRIES: u32 = 50;
/// How long to sleep when nothing at all is pending.
const IDLE_SLEEP: Duration = Duration::from_millis(500);

/// Queued events taken in a row before the timers are looked at again.
const BURST: u32 = 64;

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
/// confirms, and ends the stream with a final status update: `Ok` then means everything
/// received was applied and confirmed. `backlog_end` is the primary's
/// WAL flush position when the stream started (IDENTIFY_SYSTEM's `xlogpos`): "caught up" is
/// logged once everything up to it is applied and the stream is quiet.
///
/// # Errors
/// See [`PumpError`]. The stream is dropped (not shut down cleanly) on error.
pub async fn pump<T: Target>(
    applier: &mut Applier<T>,
    stream: LogicalReplicationStream,
    shutdown: &mut Shutdown,
    metrics: &Metrics,
    backlog_end: Lsn,
) -> Result<(), PumpError> {
    pump_until(applier, stream, shutdown, metrics, backlog_end, None).await
}

/// [`pump`], which also stops by itself, as pg_recvlogical's `--endpos` does, once everything
/// before `end` is applied and confirmed: every transaction whose commit record starts before
/// `end` (for an `end` at a record boundary, such as `pg_current_wal_lsn()`, those whose commit
/// ends at or before it, the ones pg_recvlogical prints) and every non-transactional message at
/// or before it. It stops after a transaction ending at or past `end`, at the first one that
/// commits at or after `end` (not applied), or once the primary has read past `end` and
/// nothing received is left to apply. A transaction is never cut short.
///
/// # Errors
/// See [`PumpError`].
pub async fn pump_until<T: Target>(
    applier: &mut Applier<T>,
    mut stream: LogicalReplicationStream,
    shutdown: &mut Shutdown,
    metrics: &Metrics,
    backlog_end: Lsn,
    end: Option<Lsn>,
) -> Result<(), PumpError> {
    if let Some(start) = applier.start_progress() {
        // What the target already holds is durable: lets the stream acknowledge keepalives.
        stream.confirm(start);
    }
    // Transactions received before a reconnect and sent again stop counting as waiting.
    report_positions(metrics, &stream);
    let _streaming = metrics.streaming();
    let mut pending = false;
    // The stream has been silent for `IDLE_AFTER` or longer.
    let mut quiet = true;
    // The events pending now came after such a silence.
    let mut fresh = false;
    let mut catch_up = CatchUpBar::new(backlog_end);
    let mut burst = 0;
    // Nothing before `end` is left to apply.
    let mut reached = false;
    loop {
        if (reached || shutdown.is_triggered()) && applier.is_between_transactions() {
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
            report_positions(metrics, &stream);
            stream.shutdown().await?;
            return Ok(());
        }
        // While events are queued, take them without reading the clock or arming a timer for
        // each one; every `BURST` events the loop goes through the select below, so deadlines
        // are still met.
        // The primary has read past `end` and all we received is applied: unless an event is
        // still queued, nothing before `end` can follow.
        let past_end =
            end.is_some_and(|end| stream.received_lsn() >= end) && applier.is_quiescent();
        if let Some(event) = (burst < BURST || past_end).then(|| stream.try_next()).flatten() {
            burst += 1;
            pending = true;
            fresh |= std::mem::take(&mut quiet);
            reached |= on_event(applier, &stream, metrics, &mut catch_up, event, end).await?;
            continue;
        }
        if past_end {
            reached = true;
            continue;
        }
        burst = 0;
        if fresh && applier.is_between_transactions() && !stream.is_reading_backlog() {
            fresh = false;
            flush_idle(applier, &stream, metrics, &mut catch_up, &mut pending).await?;
            continue;
        }
        let wait = match (pending, stream.is_reading_backlog()) {
            // A backlog arrives in gulps: a pause between two is not an idle primary, and
            // flushing there would cut the target transactions short.
            (true, true) => replication::BULK_READ_WAIT * 3,
            (true, false) => IDLE_AFTER,
            (false, _) => IDLE_SLEEP,
        };
        let started = Instant::now();
        let deadline = applier
            .next_deadline()
            .map(Instant::from_std)
            .map_or(started + wait, |d| d.min(started + wait));
        tokio::select! {
            event = stream.next() => {
                let event = event.ok_or(PumpError::SourceClosed)?;
                // Silent for `IDLE_AFTER` or longer, even if no timer fired meanwhile.
                quiet |= Instant::now() >= started + IDLE_AFTER;
                pending = true;
                fresh |= std::mem::take(&mut quiet);
                reached |= on_event(applier, &stream, metrics, &mut catch_up, event, end).await?;
            }
            () = tokio::time::sleep_until(deadline) => {
                // No event since `started`; woken early by the batch delay, events may still
                // be streaming in.
                quiet |= Instant::now() >= started + IDLE_AFTER;
                flush_idle(applier, &stream, metrics, &mut catch_up, &mut pending).await?;
            }
            () = shutdown.wait(), if !shutdown.is_triggered() => {}
        }
    }
}

/// Flushes what the applier holds when the stream is quiet, and notes progress.
async fn flush_idle<T: Target>(
    applier: &mut Applier<T>,
    stream: &LogicalReplicationStream,
    metrics: &Metrics,
    catch_up: &mut CatchUpBar,
    pending: &mut bool,
) -> Result<(), PumpError> {
    if let Some(lsn) = applier.idle().await? {
        stream.confirm(lsn);
    }
    report_positions(metrics, stream);
    catch_up.update(stream.received_lsn(), stream.confirmed_lsn());
    // Commits that only wait to become durable are looked at again at the applier's next
    // deadline (its durability poll), not every `IDLE_AFTER`.
    *pending = applier.holds_unflushed_commits();
    if !*pending && applier.is_quiescent() {
        // Quiet and applied: everything received is done, and a keepalive's position means
        // the primary had nothing for us before it.
        catch_up.caught_up(stream.confirmed_lsn().max(stream.received_lsn()));
    }
    Ok(())
}

/// Hands one event from the stream to the applier and confirms what it made durable. True
/// when nothing before `end` is left: the event starts what ends past `end` (it is not handed
/// on), or it completed a transaction ending at or past `end`.
async fn on_event<T: Target>(
    applier: &mut Applier<T>,
    stream: &LogicalReplicationStream,
    metrics: &Metrics,
    catch_up: &mut CatchUpBar,
    event: Result<replication::ReplicationEvent, replication::Error>,
    end: Option<Lsn>,
) -> Result<bool, PumpError> {
    let event = event?;
    if let Some(end) = end
        && applier.is_between_transactions()
        && starts_past(&event.message, end)
    {
        return Ok(true);
    }
    metrics.observe(&event.message);
    if let Some(lsn) = applier.handle(event.message).await? {
        stream.confirm(lsn);
        report_positions(metrics, stream);
        catch_up.update(stream.received_lsn(), lsn);
    }
    Ok(end.is_some_and(|end| applier.last_applied().is_some_and(|done| done >= end)))
}

/// Whether `msg` starts what ends past `end`: a transaction whose commit record starts at or
/// after `end` (so it ends after it), or a non-transactional message after `end`.
fn starts_past(msg: &LogicalMessage, end: Lsn) -> bool {
    match msg {
        LogicalMessage::Begin(b) => b.final_lsn >= end,
        LogicalMessage::StreamCommit(c) => c.commit_lsn >= end,
        LogicalMessage::CommitPrepared(c) => c.commit_lsn >= end,
        LogicalMessage::Message(m) => !m.transactional && m.lsn > end,
        _ => false,
    }
}

/// The positions received and confirmed to the primary: what the applier made durable, or
/// further (the WAL of other tables and databases) once the stream is idle and says so.
fn report_positions(metrics: &Metrics, stream: &LogicalReplicationStream) {
    let confirmed = stream.confirmed_lsn().max(stream.flushed_lsn());
    metrics.positions(stream.received_lsn(), confirmed);
}
