//! Recording a slot's stream into a file.

use std::fs::File;
use std::future::Future;
use std::io::BufWriter;
use std::path::PathBuf;
use std::pin::pin;
use std::time::{Duration, Instant};

use pgconn::ConnConfig;
use pgoutput_decoder::Lsn;
use replication::{
    CreateSlotOptions, ReplicationClient, SnapshotAction, StartReplication, Streaming,
};
use serde::Serialize;
use tablesync::TableDef;

use crate::error::Error;
use crate::format::{
    RecordedSource, RecordedTable, RecordingHeader, RecordingReader, RecordingWriter, StreamTally,
};

/// How long the stream must be silent, once the server's WAL end has passed `--until-lsn`,
/// before everything up to it counts as received.
const QUIET: Duration = Duration::from_millis(250);

/// When `record` stops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StopAt {
    /// Once the stream has passed this LSN (between transactions).
    pub until_lsn: Option<Lsn>,
    /// After this long.
    pub duration: Option<Duration>,
    /// After this long without a message from the stream.
    pub idle: Option<Duration>,
}

/// Settings of [`record`].
#[derive(Debug, Clone)]
pub struct RecordOptions {
    /// The primary.
    pub source: ConnConfig,
    /// The publication to stream.
    pub publication: String,
    /// Its tables, whose DDL goes into the header (for `replay` to create them).
    pub tables: Vec<TableDef>,
    /// The slot to stream from.
    pub slot: String,
    /// Create the slot first (it must not exist).
    pub create_slot: bool,
    /// The file to write.
    pub out: PathBuf,
    /// When to stop (also when the `stop` future of [`record`] resolves).
    pub stop: StopAt,
    /// Binary column values.
    pub binary: bool,
}

/// What [`record`] wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordSummary {
    /// Messages recorded.
    pub messages: u64,
    /// Source transactions committed in the recording.
    pub transactions: u64,
    /// Row changes (inserts, updates, deletes) in the recording.
    pub changes: u64,
    /// Payload bytes.
    pub payload_bytes: u64,
    /// End LSN of the last recorded commit (confirmed to the slot).
    #[serde(serialize_with = "lsn_text")]
    pub last_commit_end: Lsn,
}

fn lsn_text<S: serde::Serializer>(lsn: &Lsn, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(lsn)
}

/// Records the stream of a slot into a file until `opts.stop`, or until `stop` resolves (a
/// shutdown request). The slot is advanced past what was recorded (the file is flushed
/// first): recording consumes it.
///
/// # Errors
/// Connection, slot and file errors.
pub async fn record(
    opts: &RecordOptions,
    stop: impl Future<Output = ()>,
) -> Result<RecordSummary, Error> {
    let source = pgconn::connect_sql(&opts.source)
        .await
        .map_err(Error::connection("connecting to the source"))?;
    let identity =
        pgconn::identify(&source).await.map_err(Error::query("identifying the source"))?;
    drop(source);
    let mut repl = ReplicationClient::connect(&opts.source)
        .await
        .map_err(Error::connection("replication connection to the source"))?;
    if opts.create_slot {
        let slot_opts =
            CreateSlotOptions { snapshot: SnapshotAction::Nothing, ..Default::default() };
        repl.create_slot(&opts.slot, slot_opts)
            .await
            .map_err(Error::connection("creating the slot"))?;
    } else if !repl
        .slot_exists(&opts.slot)
        .await
        .map_err(Error::connection("looking up the slot"))?
    {
        return Err(Error::NoSlot(opts.slot.clone()));
    }
    let server_version = repl.server_version();
    let mut start = StartReplication::new(opts.slot.clone(), [opts.publication.clone()]);
    start.binary = opts.binary;
    start.streaming = if server_version >= 140_000 { Streaming::On } else { Streaming::Off };
    let mut stream =
        repl.start_replication(start).await.map_err(Error::connection("starting replication"))?;
    let header = RecordingHeader {
        proto_version: stream.proto_version(),
        binary: opts.binary,
        streaming: if server_version >= 140_000 { "on" } else { "off" }.to_owned(),
        server_version,
        publication: opts.publication.clone(),
        slot: opts.slot.clone(),
        tables: opts
            .tables
            .iter()
            .map(|t| RecordedTable {
                schema: t.schema.clone(),
                name: t.name.clone(),
                ddl: tablesync::create_table_sql(t),
            })
            .collect(),
        source: Some(RecordedSource { system_id: identity.system_id, database: identity.database }),
    };
    let file = File::create(&opts.out).map_err(Error::file("creating", &opts.out))?;
    let mut writer = RecordingWriter::new(BufWriter::with_capacity(1 << 20, file), &header)?;
    let mut tally = StreamTally::default();

    let began = Instant::now();
    let mut last_message = Instant::now();
    let mut last_confirm = Instant::now();
    let done = |tally: &StreamTally, received: Lsn, last_message: Instant| {
        // XLogData and keepalives carry the server's WAL end, which runs ahead of the
        // messages: past `until` only counts once the stream has also gone quiet.
        let at_end = opts.stop.until_lsn.is_some_and(|until| {
            tally.between_transactions()
                && (tally.last_commit_end >= until
                    || (received >= until && last_message.elapsed() >= QUIET))
        });
        at_end
            || opts.stop.duration.is_some_and(|d| began.elapsed() >= d)
            || opts.stop.idle.is_some_and(|d| last_message.elapsed() >= d)
    };
    let mut stop = pin!(stop);
    let mut stopped = false;
    loop {
        if stopped || done(&tally, stream.received_lsn(), last_message) {
            break;
        }
        tokio::select! {
            event = stream.next() => {
                let event = match event {
                    Some(Ok(e)) => e,
                    Some(Err(e)) => return Err(Error::connection("replication stream")(e)),
                    None => return Err(Error::StreamEnded),
                };
                writer.write_message(event.wal_start, event.wal_end, &event.message)?;
                tally.add(&event.message);
                last_message = Instant::now();
            }
            // Wakes up to check the stop conditions while the stream is quiet.
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
            () = &mut stop, if !stopped => stopped = true,
        }
        // Confirm only what the file holds, so the slot never runs ahead of the recording.
        if last_confirm.elapsed() >= Duration::from_secs(1) && !tally.last_commit_end.is_zero() {
            writer.flush()?;
            stream.confirm(tally.last_commit_end);
            last_confirm = Instant::now();
        }
    }
    let file = writer
        .finish()?
        .into_inner()
        .map_err(|e| Error::file("writing", &opts.out)(e.into_error()))?;
    file.sync_all().map_err(Error::file("syncing", &opts.out))?;
    let summary = RecordSummary {
        messages: 0,
        transactions: tally.transactions,
        changes: tally.changes,
        payload_bytes: 0,
        last_commit_end: tally.last_commit_end,
    };
    if !tally.last_commit_end.is_zero() {
        stream.confirm(tally.last_commit_end);
    }
    stream.shutdown().await.map_err(Error::connection("ending the replication stream"))?;
    let meta = std::fs::metadata(&opts.out).map_err(Error::file("reading", &opts.out))?;
    tracing::info!(bytes = meta.len(), transactions = tally.transactions, "recording written");
    let mut reader = RecordingReader::open(&opts.out)?;
    let (mut messages, mut bytes) = (0u64, 0u64);
    while let Some(m) = reader.next_message()? {
        messages += 1;
        bytes += u64::try_from(m.payload.len()).unwrap_or(u64::MAX);
    }
    Ok(RecordSummary { messages, payload_bytes: bytes, ..summary })
}
