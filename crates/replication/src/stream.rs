//! START_REPLICATION and the [`LogicalReplicationStream`].
//!
//! A background task owns the socket: it reads CopyData, decodes pgoutput
//! and hands events to a bounded channel. While it waits for the consumer
//! (say, busy applying a huge transaction) it keeps sending status updates,
//! so the walsender never times out. Feedback follows PostgreSQL's apply
//! worker: the flush LSN is what the caller confirmed (the end LSN of a
//! durably applied commit); when idle, the last received position, so the
//! slot advances while only unpublished tables change.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use pgoutput_decoder::{
    Decoder, LogicalMessage, Lsn, PgTimestamp, ReplicationMessage, StandbyStatusUpdate,
};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use pgconn::{Error as ConnError, quote_ident, quote_literal};

use crate::error::Error;
use crate::wire::{Backend, Conn};

/// Default interval between status updates (PostgreSQL's
/// `wal_receiver_status_interval`).
pub const DEFAULT_STATUS_INTERVAL: Duration = Duration::from_secs(10);
/// Default number of decoded events buffered between the socket task and
/// the consumer.
pub const DEFAULT_CHANNEL_CAPACITY: usize = 4096;
/// Confirmations closer together than this are batched into one update.
const MIN_CONFIRM_INTERVAL: Duration = Duration::from_millis(100);
/// A transaction committed this long ago (in microseconds) means a backlog.
const BULK_BEHIND_MICROS: i64 = 200_000;
/// How long shutdown waits for the server to finish the COPY.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// pgoutput's `streaming` option: how in-progress transactions are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Streaming {
    /// Only committed transactions, each in one piece.
    #[default]
    Off,
    /// Large transactions in Stream Start/Stop blocks before they commit (PG 14+, protocol 2+).
    On,
    /// Like `On`, plus abort LSN/time in Stream Abort (PG 16+, protocol 4).
    Parallel,
}

/// Options of START_REPLICATION (and of pgoutput).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartReplication {
    /// Slot to stream from.
    pub slot: String,
    /// Where to start; the server starts at max(this, the slot's
    /// `confirmed_flush_lsn`). `Lsn::ZERO` means "where the slot is".
    pub start_lsn: Lsn,
    /// Publications to stream (at least one).
    pub publication_names: Vec<String>,
    /// pgoutput protocol version; `None` picks the highest the server and
    /// this crate speak (PG 14: 2, PG 15: 3, PG 16+: 4).
    pub proto_version: Option<u32>,
    /// Binary column values where the type has a send function (PG 14+).
    pub binary: bool,
    /// Include `pg_logical_emit_message` messages (PG 14+).
    pub messages: bool,
    /// Streaming of in-progress transactions.
    pub streaming: Streaming,
    /// With streaming on, the most a transaction may take of the walsender's memory before
    /// it is streamed, in kB: the session's `logical_decoding_work_mem` is lowered to this
    /// before START_REPLICATION when it is larger, never raised. A large transaction then
    /// reaches the consumer sooner, in smaller chunks. Ignored without streaming, where the
    /// walsender would spill to its disk instead.
    pub decoding_work_mem_kb: Option<u32>,
    /// Decode prepared transactions at PREPARE (PG 15+, protocol 3+).
    pub two_phase: bool,
    /// `origin` filter: `none` or `any` (PG 16+).
    pub origin: Option<String>,
    /// Longest gap between status updates (shortened automatically to half
    /// of the server's `wal_sender_timeout`).
    pub status_interval: Duration,
    /// Decoded events buffered ahead of the consumer.
    pub channel_capacity: usize,
}

impl StartReplication {
    /// Options for `slot` and `publications` with every other setting at its default.
    pub fn new<I, S>(slot: impl Into<String>, publications: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        StartReplication {
            slot: slot.into(),
            publication_names: publications.into_iter().map(Into::into).collect(),
            ..StartReplication::default()
        }
    }
}

impl Default for StartReplication {
    fn default() -> Self {
        StartReplication {
            slot: String::new(),
            start_lsn: Lsn::ZERO,
            publication_names: Vec::new(),
            proto_version: None,
            binary: false,
            messages: false,
            streaming: Streaming::Off,
            decoding_work_mem_kb: None,
            two_phase: false,
            origin: None,
            status_interval: DEFAULT_STATUS_INTERVAL,
            channel_capacity: DEFAULT_CHANNEL_CAPACITY,
        }
    }
}

/// One decoded pgoutput message with its XLogData header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationEvent {
    /// Header start LSN (0/0 for Relation/Type messages; see the reference).
    pub wal_start: Lsn,
    /// Header end LSN (for a Commit, the transaction's end LSN).
    pub wal_end: Lsn,
    /// Server clock when sent.
    pub send_time: PgTimestamp,
    /// The message.
    pub message: LogicalMessage,
}

/// State shared by the stream, its feedback handles and the socket task.
#[derive(Debug)]
struct Shared {
    /// Highest LSN the caller confirmed as durably applied.
    confirmed: AtomicU64,
    /// Highest WAL position received (XLogData or keepalive).
    received: AtomicU64,
    /// Last flush LSN reported to the server.
    flushed: AtomicU64,
    /// Wakes the task after a confirmation.
    confirm_notify: Notify,
    /// The socket is read in bulk (a backlog): data arrives in gulps up to
    /// [`BULK_READ_WAIT`](crate::BULK_READ_WAIT) apart.
    bulk: AtomicBool,
}

/// Reports progress to the stream from wherever transactions are applied.
/// Cheap to clone; stays valid after the stream ends (then does nothing).
#[derive(Debug, Clone)]
pub struct FeedbackHandle {
    shared: Arc<Shared>,
}

impl FeedbackHandle {
    /// Declares everything up to `lsn` durably applied: pass the `end_lsn`
    /// of the last commit the target has made durable. Lower values than a
    /// previous call are ignored.
    pub fn confirm(&self, lsn: Lsn) {
        let prev = self.shared.confirmed.fetch_max(lsn.0, Ordering::AcqRel);
        if lsn.0 > prev {
            self.shared.confirm_notify.notify_one();
        }
    }

    /// Highest LSN confirmed so far.
    pub fn confirmed_lsn(&self) -> Lsn {
        Lsn(self.shared.confirmed.load(Ordering::Acquire))
    }
}

/// Decoded replication events from START_REPLICATION.
///
/// Read with [`next`](Self::next); confirm applied commits with
/// [`confirm`](Self::confirm) or a [`FeedbackHandle`]; end with
/// [`shutdown`](Self::shutdown) (dropping the stream also ends it, without
/// waiting).
pub struct LogicalReplicationStream {
    rx: mpsc::Receiver<Result<ReplicationEvent, Error>>,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<Result<(), Error>>>,
    proto_version: u32,
    server_version: u32,
}

impl fmt::Debug for LogicalReplicationStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogicalReplicationStream")
            .field("proto_version", &self.proto_version)
            .field("received_lsn", &self.received_lsn())
            .field("confirmed_lsn", &self.confirmed_lsn())
            .field("flushed_lsn", &self.flushed_lsn())
            .finish_non_exhaustive()
    }
}

impl LogicalReplicationStream {
    /// The next event; `Some(Err(_))` is fatal and followed by `None`.
    /// Cancel-safe.
    pub async fn next(&mut self) -> Option<Result<ReplicationEvent, Error>> {
        self.rx.recv().await
    }

    /// The next event if one is already queued, without waiting; `None` when none is (or
    /// the stream ended: [`next`](Self::next) then says so).
    pub fn try_next(&mut self) -> Option<Result<ReplicationEvent, Error>> {
        self.rx.try_recv().ok()
    }

    /// A handle for confirming progress from another task.
    pub fn feedback(&self) -> FeedbackHandle {
        FeedbackHandle { shared: self.shared.clone() }
    }

    /// Same as [`FeedbackHandle::confirm`].
    pub fn confirm(&self, lsn: Lsn) {
        self.feedback().confirm(lsn);
    }

    /// Highest WAL position received from the server (XLogData or keepalive).
    pub fn received_lsn(&self) -> Lsn {
        Lsn(self.shared.received.load(Ordering::Acquire))
    }

    /// Highest LSN the caller confirmed.
    pub fn confirmed_lsn(&self) -> Lsn {
        Lsn(self.shared.confirmed.load(Ordering::Acquire))
    }

    /// The last flush LSN reported to the server (what the slot will move to).
    pub fn flushed_lsn(&self) -> Lsn {
        Lsn(self.shared.flushed.load(Ordering::Acquire))
    }

    /// Whether a backlog is being read in bulk: events then arrive in gulps up to
    /// [`BULK_READ_WAIT`](crate::BULK_READ_WAIT) apart, and a pause that long does not mean the primary is idle.
    pub fn is_reading_backlog(&self) -> bool {
        self.shared.bulk.load(Ordering::Relaxed)
    }

    /// The pgoutput protocol version in use.
    pub fn proto_version(&self) -> u32 {
        self.proto_version
    }

    /// The server version (`server_version_num` form).
    pub fn server_version(&self) -> u32 {
        self.server_version
    }

    /// Sends a final status update and CopyDone, waits (briefly) for the
    /// server to finish, then terminates the connection.
    ///
    /// # Errors
    /// An error the task hit that was not delivered through [`next`](Self::next),
    /// or I/O errors while stopping.
    pub async fn shutdown(mut self) -> Result<(), Error> {
        let _ = self.stop.send(true);
        match self.task.take() {
            Some(task) => task
                .await
                .map_err(|e| ConnError::Closed(format!("replication task failed: {e}")))?,
            None => Ok(()),
        }
    }
}

/// Picks the protocol version: the requested one (checked), or the highest
/// both sides speak.
pub(crate) fn negotiate_proto(
    requested: Option<u32>,
    server_version: u32,
) -> Result<u32, ConnError> {
    let server_max = match server_version {
        v if v >= 160_000 => 4,
        v if v >= 150_000 => 3,
        v if v >= 140_000 => 2,
        _ => 1,
    };
    match requested {
        None => Ok(server_max),
        Some(v) if (1..=server_max).contains(&v) => Ok(v),
        Some(v) => Err(ConnError::Unsupported(format!(
            "pgoutput protocol version {v}: this server speaks 1 to {server_max}"
        ))),
    }
}

/// Builds START_REPLICATION, sending only options the server knows.
pub(crate) fn start_command(
    opts: &StartReplication,
    proto: u32,
    server_version: u32,
) -> Result<String, ConnError> {
    if opts.publication_names.is_empty() {
        return Err(ConnError::Config("START_REPLICATION needs at least one publication".into()));
    }
    let need = |ok: bool, what: &str| -> Result<(), ConnError> {
        if ok { Ok(()) } else { Err(ConnError::Unsupported(what.to_owned())) }
    };
    let publications =
        opts.publication_names.iter().map(|p| quote_ident(p)).collect::<Vec<_>>().join(",");
    let mut options = vec![
        format!("proto_version {}", quote_literal(&proto.to_string())),
        format!("publication_names {}", quote_literal(&publications)),
    ];
    if opts.binary {
        need(server_version >= 140_000, "binary needs PostgreSQL 14 or newer")?;
        options.push("binary 'true'".into());
    }
    if opts.messages {
        need(server_version >= 140_000, "messages needs PostgreSQL 14 or newer")?;
        options.push("messages 'true'".into());
    }
    match opts.streaming {
        Streaming::Off => {}
        Streaming::On => {
            need(
                server_version >= 140_000 && proto >= 2,
                "streaming needs PG 14+ and protocol 2+",
            )?;
            options.push("streaming 'on'".into());
        }
        Streaming::Parallel => {
            need(
                server_version >= 160_000 && proto >= 4,
                "streaming=parallel needs PG 16+ and protocol 4",
            )?;
            options.push("streaming 'parallel'".into());
        }
    }
    if opts.two_phase {
        need(server_version >= 150_000 && proto >= 3, "two_phase needs PG 15+ and protocol 3+")?;
        options.push("two_phase 'true'".into());
    }
    if let Some(origin) = &opts.origin {
        need(server_version >= 160_000, "origin needs PostgreSQL 16 or newer")?;
        options.push(format!("origin {}", quote_literal(origin)));
    }
    Ok(format!(
        "START_REPLICATION SLOT {} LOGICAL {} ({})",
        quote_ident(&opts.slot),
        opts.start_lsn,
        options.join(", ")
    ))
}

/// Sends START_REPLICATION, waits for CopyBoth and spawns the socket task.
pub(crate) async fn start(
    mut conn: Conn,
    server_version: u32,
    opts: StartReplication,
    wal_sender_timeout: Option<Duration>,
) -> Result<LogicalReplicationStream, Error> {
    let proto = negotiate_proto(opts.proto_version, server_version)?;
    let sql = start_command(&opts, proto, server_version)?;
    tracing::debug!(command = %sql, "starting replication");
    frontend::query(&sql, conn.buf())?;
    conn.flush().await?;
    match conn.read_message().await? {
        Backend::CopyBothResponse => {}
        Backend::Msg(Message::ErrorResponse(body)) => return Err(conn.db_error(&body).into()),
        _ => {
            return Err(ConnError::Protocol("unexpected answer to START_REPLICATION".into()).into());
        }
    }

    // Stay well inside wal_sender_timeout even when the consumer stalls.
    let mut interval = opts.status_interval;
    let ack_every_keepalive = match wal_sender_timeout {
        Some(t) if t.is_zero() => true,
        Some(t) => {
            interval = interval.min(t / 2);
            false
        }
        None => false,
    };
    let interval = interval.max(Duration::from_millis(10));

    let shared = Arc::new(Shared {
        confirmed: AtomicU64::new(0),
        received: AtomicU64::new(opts.start_lsn.0),
        // Never report less than the resume point: before PG 18 a lower
        // flush LSN could move confirmed_flush_lsn backwards.
        flushed: AtomicU64::new(opts.start_lsn.0),
        confirm_notify: Notify::new(),
        bulk: AtomicBool::new(false),
    });
    let (tx, rx) = mpsc::channel(opts.channel_capacity.max(1));
    let (stop, stop_rx) = watch::channel(false);
    let task = SocketTask {
        conn,
        decoder: Decoder::new(proto).with_parallel_streaming(opts.streaming == Streaming::Parallel),
        tx,
        shared: shared.clone(),
        stop: stop_rx,
        interval,
        ack_every_keepalive,
        in_txn: false,
        pending: false,
        handed_txn_end: Lsn::ZERO,
        last_status: Instant::now(),
        deferred_status: None,
    };
    let handle = tokio::spawn(Box::pin(task.run()));
    Ok(LogicalReplicationStream {
        rx,
        shared,
        stop,
        task: Some(handle),
        proto_version: proto,
        server_version,
    })
}

/// What happened while waiting.
enum Flow {
    Continue,
    /// Shutdown requested or the consumer is gone.
    Stop,
}

struct SocketTask {
    conn: Conn,
    decoder: Decoder,
    tx: mpsc::Sender<Result<ReplicationEvent, Error>>,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
    interval: Duration,
    ack_every_keepalive: bool,
    /// Inside Begin..Commit, BeginPrepare..Prepare or StreamStart..StreamStop.
    in_txn: bool,
    /// An event was received but not yet handed to the channel.
    pending: bool,
    /// End LSN of the last transaction-ending message received.
    handed_txn_end: Lsn,
    last_status: Instant,
    /// A confirmation arrived too soon after the last update; send then.
    deferred_status: Option<Instant>,
}

impl SocketTask {
    async fn run(mut self) -> Result<(), Error> {
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let result = self.read_loop(&mut ticker).await;
        match result {
            Ok(()) => self.stop_streaming().await,
            Err(e) => {
                tracing::debug!(error = %e, "replication stream ended with an error");
                // Deliver the error unless nobody listens any more.
                let mut stop = self.stop.clone();
                tokio::select! {
                    sent = self.tx.send(Err(e)) => match sent {
                        Ok(()) => Ok(()),
                        Err(mpsc::error::SendError(Err(e))) => Err(e),
                        Err(_) => Ok(()),
                    },
                    _ = stopped(&mut stop) => Ok(()),
                }
            }
        }
    }

    /// Reads and dispatches until shutdown (`Ok`) or a fatal error.
    async fn read_loop(&mut self, ticker: &mut tokio::time::Interval) -> Result<(), Error> {
        loop {
            let deferred = self.deferred_status;
            let mut stop = self.stop.clone();
            tokio::select! {
                biased;
                _ = stopped(&mut stop) => return Ok(()),
                msg = self.conn.read_message() => {
                    if let Flow::Stop = self.handle(msg?, ticker).await? {
                        return Ok(());
                    }
                }
                _ = ticker.tick() => self.send_status(false).await?,
                _ = self.shared.confirm_notify.notified() => self.on_confirm().await?,
                _ = sleep_until_opt(deferred) => self.send_status(false).await?,
            }
        }
    }

    async fn handle(
        &mut self,
        msg: Backend,
        ticker: &mut tokio::time::Interval,
    ) -> Result<Flow, Error> {
        match msg {
            Backend::Msg(Message::CopyData(body)) => {
                match ReplicationMessage::parse(body.into_bytes())? {
                    ReplicationMessage::XLogData(x) => {
                        self.shared.received.fetch_max(x.wal_end.0, Ordering::AcqRel);
                        let message = self.decoder.decode(x.data)?;
                        let bulk = match &message {
                            // Far behind the primary: read the backlog in bulk. Both
                            // times come from the primary's clock, so skew does not matter.
                            LogicalMessage::Begin(b) => Some(
                                x.send_time.0.saturating_sub(b.commit_time.0) > BULK_BEHIND_MICROS,
                            ),
                            // A streamed transaction outgrew `logical_decoding_work_mem` on the
                            // primary: it arrives in chunks of many changes, none of which can
                            // be applied before its commit, so nothing waits on a single byte.
                            LogicalMessage::StreamStart(_) => Some(true),
                            _ => None,
                        };
                        if let Some(bulk) = bulk {
                            let bulk = self.conn.set_bulk_reading(bulk);
                            self.shared.bulk.store(bulk, Ordering::Relaxed);
                        }
                        self.track(&message);
                        let event = ReplicationEvent {
                            wal_start: x.wal_start,
                            wal_end: x.wal_end,
                            send_time: x.send_time,
                            message,
                        };
                        self.deliver(event, ticker).await
                    }
                    ReplicationMessage::Keepalive(k) => {
                        self.shared.received.fetch_max(k.wal_end.0, Ordering::AcqRel);
                        if k.reply_requested || self.ack_every_keepalive {
                            self.send_status(false).await?;
                        }
                        Ok(Flow::Continue)
                    }
                }
            }
            Backend::Msg(Message::ErrorResponse(body)) => Err(self.conn.db_error(&body).into()),
            Backend::Msg(Message::CopyDone) => {
                Err(ConnError::Closed("the server ended the replication stream".into()).into())
            }
            _ => {
                Err(ConnError::Protocol("unexpected message in the replication stream".into())
                    .into())
            }
        }
    }

    /// Transaction boundaries, for the idle rule.
    fn track(&mut self, message: &LogicalMessage) {
        let end = match message {
            LogicalMessage::Begin(_)
            | LogicalMessage::BeginPrepare(_)
            | LogicalMessage::StreamStart(_) => {
                self.in_txn = true;
                None
            }
            LogicalMessage::StreamStop => {
                self.in_txn = false;
                None
            }
            LogicalMessage::Commit(c) => {
                self.in_txn = false;
                Some(c.end_lsn)
            }
            LogicalMessage::Prepare(p) => {
                self.in_txn = false;
                Some(p.end_lsn)
            }
            LogicalMessage::StreamCommit(c) => Some(c.end_lsn),
            LogicalMessage::StreamPrepare(p) => Some(p.end_lsn),
            LogicalMessage::CommitPrepared(c) => Some(c.end_lsn),
            LogicalMessage::RollbackPrepared(r) => Some(r.rollback_end_lsn),
            _ => None,
        };
        if let Some(end) = end {
            self.handed_txn_end = self.handed_txn_end.max(end);
        }
    }

    /// Hands one event over, sending status updates while the consumer lags.
    async fn deliver(
        &mut self,
        event: ReplicationEvent,
        ticker: &mut tokio::time::Interval,
    ) -> Result<Flow, Error> {
        // Fast path: room in the channel.
        let event = match self.tx.try_send(Ok(event)) {
            Ok(()) => return Ok(Flow::Continue),
            Err(mpsc::error::TrySendError::Closed(_)) => return Ok(Flow::Stop),
            Err(mpsc::error::TrySendError::Full(event)) => event,
        };
        self.pending = true;
        let tx = self.tx.clone();
        loop {
            let deferred = self.deferred_status;
            let mut stop = self.stop.clone();
            tokio::select! {
                biased;
                _ = stopped(&mut stop) => return Ok(Flow::Stop),
                permit = tx.reserve() => {
                    self.pending = false;
                    return match permit {
                        Ok(permit) => {
                            permit.send(event);
                            Ok(Flow::Continue)
                        }
                        Err(_) => Ok(Flow::Stop),
                    };
                }
                _ = ticker.tick() => self.send_status(false).await?,
                _ = self.shared.confirm_notify.notified() => self.on_confirm().await?,
                _ = sleep_until_opt(deferred) => self.send_status(false).await?,
            }
        }
    }

    /// The flush LSN to report now (monotonic).
    fn flush_position(&self) -> Lsn {
        let confirmed = Lsn(self.shared.confirmed.load(Ordering::Acquire));
        let received = Lsn(self.shared.received.load(Ordering::Acquire));
        let idle = !self.pending
            && !self.in_txn
            && self.tx.capacity() == self.tx.max_capacity()
            && confirmed >= self.handed_txn_end;
        let candidate = if idle { confirmed.max(received) } else { confirmed };
        candidate.max(Lsn(self.shared.flushed.load(Ordering::Acquire)))
    }

    async fn on_confirm(&mut self) -> Result<(), Error> {
        if self.flush_position() <= Lsn(self.shared.flushed.load(Ordering::Acquire)) {
            return Ok(());
        }
        let due = self.last_status + MIN_CONFIRM_INTERVAL;
        if Instant::now() >= due {
            self.send_status(false).await
        } else {
            self.deferred_status = Some(due);
            Ok(())
        }
    }

    async fn send_status(&mut self, reply_requested: bool) -> Result<(), Error> {
        let flush = self.flush_position();
        self.shared.flushed.fetch_max(flush.0, Ordering::AcqRel);
        let received = Lsn(self.shared.received.load(Ordering::Acquire));
        let update = StandbyStatusUpdate {
            write_lsn: received.max(flush),
            flush_lsn: flush,
            apply_lsn: flush,
            send_time: PgTimestamp::now(),
            reply_requested,
        };
        frontend::CopyData::new(update.to_bytes())?.write(self.conn.buf());
        self.conn.flush().await?;
        self.last_status = Instant::now();
        self.deferred_status = None;
        tracing::trace!(write = %update.write_lsn, flush = %flush, "sent standby status update");
        Ok(())
    }

    /// Final status update, CopyDone, wait for the server to finish, Terminate.
    async fn stop_streaming(mut self) -> Result<(), Error> {
        self.send_status(false).await?;
        frontend::copy_done(self.conn.buf());
        self.conn.flush().await?;
        let drain = async {
            loop {
                match self.conn.read_message().await? {
                    Backend::Msg(Message::ReadyForQuery(_)) => return Ok(()),
                    Backend::Msg(Message::ErrorResponse(body)) => {
                        return Err(self.conn.db_error(&body));
                    }
                    // Data still in flight, CopyDone, CommandComplete.
                    _ => {}
                }
            }
        };
        let result: Result<(), Error> = match tokio::time::timeout(SHUTDOWN_GRACE, drain).await {
            Ok(r) => r.map_err(Error::from),
            Err(_) => {
                tracing::debug!("server did not finish the replication COPY in time");
                Ok(())
            }
        };
        self.conn.terminate().await;
        result
    }
}

/// Resolves once shutdown is requested (or the stream handle is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard returned by wait_for is not Send: drop it right here.
    let _ = stop.wait_for(|s| *s).await.map(|_| ());
}

/// Sleeps until `deadline`, or forever when there is none.
async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_negotiation() {
        assert_eq!(negotiate_proto(None, 130_010).unwrap(), 1);
        assert_eq!(negotiate_proto(None, 140_000).unwrap(), 2);
        assert_eq!(negotiate_proto(None, 150_018).unwrap(), 3);
        assert_eq!(negotiate_proto(None, 160_004).unwrap(), 4);
        assert_eq!(negotiate_proto(None, 180_001).unwrap(), 4);
        assert_eq!(negotiate_proto(Some(1), 150_018).unwrap(), 1);
        assert!(negotiate_proto(Some(4), 150_018).is_err());
        assert!(negotiate_proto(Some(0), 150_018).is_err());
    }

    #[test]
    fn start_commands() {
        let mut o = StartReplication::new("my slot", ["a", "B\"x", "it's"]);
        o.start_lsn = Lsn(0x1_0000_0010);
        assert_eq!(
            start_command(&o, 1, 150_000).unwrap(),
            "START_REPLICATION SLOT \"my slot\" LOGICAL 1/10 (proto_version '1', \
             publication_names '\"a\",\"B\"\"x\",\"it''s\"')"
        );
        o.binary = true;
        o.messages = true;
        o.streaming = Streaming::On;
        o.two_phase = true;
        let cmd = start_command(&o, 3, 150_000).unwrap();
        assert!(cmd.ends_with("binary 'true', messages 'true', streaming 'on', two_phase 'true')"));
        assert!(matches!(start_command(&o, 2, 150_000), Err(ConnError::Unsupported(_))));
        assert!(matches!(start_command(&o, 3, 140_000), Err(ConnError::Unsupported(_))));
        o.two_phase = false;
        o.streaming = Streaming::Parallel;
        assert!(matches!(start_command(&o, 3, 150_000), Err(ConnError::Unsupported(_))));
        assert!(start_command(&o, 4, 160_000).unwrap().contains("streaming 'parallel'"));
        o.origin = Some("none".into());
        assert!(start_command(&o, 4, 160_000).unwrap().contains("origin 'none'"));
        assert!(matches!(start_command(&o, 3, 150_000), Err(ConnError::Unsupported(_))));
        let empty = StartReplication::new("s", Vec::<String>::new());
        assert!(matches!(start_command(&empty, 1, 150_000), Err(ConnError::Config(_))));
    }
}
