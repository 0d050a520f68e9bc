//! Recordings of a pgoutput stream (`pgmirror record` / `pgmirror replay`).
//!
//! A recording is the raw pgoutput payload of every XLogData a walsender sent, with its
//! start and end LSN, after a small header. Replaying it through the same [`Applier`] and
//! [`PostgresTarget`] as `pgmirror mirror` gives deterministic apply benchmarks and bug
//! reports that need no live primary.
//!
//! File layout (integers big-endian, like the wire protocol):
//! - the magic `PGMREC01`;
//! - `u32` length, then a JSON [`RecordingHeader`];
//! - records until the end of the file: `u64` WAL start, `u64` WAL end, `u32` payload length,
//!   payload (a pgoutput message, tag byte first).

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use applier::{Applier, ApplierConfig, PostgresTarget, PostgresTargetConfig};
use bytes::{Bytes, BytesMut};
use pgoutput_decoder::{Decoder, LogicalMessage, Lsn};
use replication::{
    ConnConfig, CreateSlotOptions, ReplicationClient, SnapshotAction, StartReplication, Streaming,
};
use serde::{Deserialize, Serialize};

use crate::cli::TableSelection;
use crate::shutdown::Shutdown;

/// The first bytes of every recording (the digits are the format version).
pub const MAGIC: &[u8; 8] = b"PGMREC01";

/// Largest header or payload accepted when reading (a corrupt length must not allocate
/// gigabytes).
const MAX_LEN: u32 = 1 << 30;

/// How long the stream must be silent, once the server's WAL end has passed `--until-lsn`,
/// before everything up to it counts as received.
const QUIET: Duration = Duration::from_millis(250);

/// What a recording was made with: needed to decode it and to recreate its tables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingHeader {
    /// The negotiated pgoutput protocol version.
    pub proto_version: u32,
    /// Whether column values are in binary form.
    pub binary: bool,
    /// pgoutput's `streaming` option: `off`, `on` or `parallel`.
    pub streaming: String,
    /// The source's `server_version_num`.
    pub server_version: u32,
    /// The publication streamed.
    pub publication: String,
    /// The slot streamed from.
    pub slot: String,
    /// The published tables with the DDL that creates them on a target.
    pub tables: Vec<RecordedTable>,
    /// The database the recording was made from (absent in older recordings).
    #[serde(default)]
    pub source: Option<RecordedSource>,
}

/// Which database a recording comes from, so `replay` can refuse to apply it there again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedSource {
    /// `pg_control_system().system_identifier`, when the role could read it.
    pub system_id: Option<String>,
    /// The database's name.
    pub database: String,
}

/// A published table of a recording.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedTable {
    /// Schema name as stored.
    pub schema: String,
    /// Table name as stored.
    pub name: String,
    /// `CREATE SCHEMA IF NOT EXISTS ...; CREATE TABLE ...` for the target.
    pub ddl: String,
}

/// One recorded XLogData.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedMessage {
    /// XLogData start LSN.
    pub wal_start: Lsn,
    /// XLogData end LSN.
    pub wal_end: Lsn,
    /// The pgoutput message.
    pub payload: Bytes,
}

/// Errors reading a recording.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    /// Reading or writing the file failed.
    #[error("recording I/O: {0}")]
    Io(#[from] io::Error),
    /// The file does not start with [`MAGIC`].
    #[error("not a pgmirror recording (bad magic bytes)")]
    BadMagic,
    /// The header is not valid JSON of the expected shape.
    #[error("recording header: {0}")]
    Header(#[from] serde_json::Error),
    /// The file ends inside a record.
    #[error("recording is truncated inside record {0}")]
    Truncated(u64),
    /// A length field is implausibly large (a corrupt file).
    #[error("recording record {index} claims {len} bytes")]
    TooLong {
        /// The record's index.
        index: u64,
        /// The claimed length.
        len: u32,
    },
}

/// Writes a recording.
#[derive(Debug)]
pub struct RecordingWriter<W: Write> {
    out: W,
    scratch: BytesMut,
    messages: u64,
    bytes: u64,
}

impl<W: Write> RecordingWriter<W> {
    /// Writes the magic and `header`.
    ///
    /// # Errors
    /// Writing failed.
    pub fn new(mut out: W, header: &RecordingHeader) -> Result<Self, RecordingError> {
        let json = serde_json::to_vec(header)?;
        let len = u32::try_from(json.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "header too large"))?;
        out.write_all(MAGIC)?;
        out.write_all(&len.to_be_bytes())?;
        out.write_all(&json)?;
        Ok(RecordingWriter { out, scratch: BytesMut::new(), messages: 0, bytes: 0 })
    }

    /// Appends a message, re-encoded to its wire form (byte-identical to what was sent).
    ///
    /// # Errors
    /// Writing failed.
    pub fn write_message(
        &mut self,
        wal_start: Lsn,
        wal_end: Lsn,
        message: &LogicalMessage,
    ) -> Result<(), RecordingError> {
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        message.encode(&mut buf);
        let written = self.write_raw(wal_start, wal_end, &buf);
        self.scratch = buf;
        written
    }

    /// Appends a raw payload.
    ///
    /// # Errors
    /// Writing failed, or the payload is larger than 4 GiB.
    pub fn write_raw(
        &mut self,
        wal_start: Lsn,
        wal_end: Lsn,
        payload: &[u8],
    ) -> Result<(), RecordingError> {
        let len = u32::try_from(payload.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "payload too large"))?;
        let mut head = [0u8; 20];
        head[..8].copy_from_slice(&wal_start.0.to_be_bytes());
        head[8..16].copy_from_slice(&wal_end.0.to_be_bytes());
        head[16..].copy_from_slice(&len.to_be_bytes());
        self.out.write_all(&head)?;
        self.out.write_all(payload)?;
        self.messages += 1;
        self.bytes += u64::from(len);
        Ok(())
    }

    /// Messages written so far.
    pub fn messages(&self) -> u64 {
        self.messages
    }

    /// Payload bytes written so far.
    pub fn payload_bytes(&self) -> u64 {
        self.bytes
    }

    /// Flushes buffered output.
    ///
    /// # Errors
    /// Writing failed.
    pub fn flush(&mut self) -> Result<(), RecordingError> {
        self.out.flush()?;
        Ok(())
    }

    /// Flushes and returns the underlying writer.
    ///
    /// # Errors
    /// Writing failed.
    pub fn finish(mut self) -> Result<W, RecordingError> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Reads a recording, message by message.
#[derive(Debug)]
pub struct RecordingReader<R: Read> {
    inp: R,
    header: RecordingHeader,
    index: u64,
}

impl RecordingReader<BufReader<File>> {
    /// Opens the recording at `path`.
    ///
    /// # Errors
    /// The file cannot be opened or has no valid header.
    pub fn open(path: &Path) -> Result<Self, RecordingError> {
        Self::new(BufReader::with_capacity(1 << 20, File::open(path)?))
    }
}

impl<R: Read> RecordingReader<R> {
    /// Reads the magic and the header from `inp`.
    ///
    /// # Errors
    /// [`RecordingError::BadMagic`], [`RecordingError::Header`] or I/O errors.
    pub fn new(mut inp: R) -> Result<Self, RecordingError> {
        let mut magic = [0u8; 8];
        inp.read_exact(&mut magic).map_err(|_| RecordingError::BadMagic)?;
        if &magic != MAGIC {
            return Err(RecordingError::BadMagic);
        }
        let mut len = [0u8; 4];
        inp.read_exact(&mut len)?;
        let len = u32::from_be_bytes(len);
        if len > MAX_LEN {
            return Err(RecordingError::TooLong { index: 0, len });
        }
        let mut json = vec![0u8; usize::try_from(len).unwrap_or(usize::MAX)];
        inp.read_exact(&mut json)?;
        let header = serde_json::from_slice(&json)?;
        Ok(RecordingReader { inp, header, index: 0 })
    }

    /// The recording's header.
    pub fn header(&self) -> &RecordingHeader {
        &self.header
    }

    /// The next message, `None` at the end of the file.
    ///
    /// # Errors
    /// A truncated or corrupt record, or I/O errors.
    pub fn next_message(&mut self) -> Result<Option<RecordedMessage>, RecordingError> {
        let mut head = [0u8; 20];
        // Distinguish a clean end (no byte of a new record) from a truncated record.
        let mut filled = 0;
        while filled < head.len() {
            match self.inp.read(&mut head[filled..]) {
                Ok(0) if filled == 0 => return Ok(None),
                Ok(0) => return Err(RecordingError::Truncated(self.index)),
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        let field = |range: std::ops::Range<usize>| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&head[range]);
            u64::from_be_bytes(b)
        };
        let wal_start = Lsn(field(0..8));
        let wal_end = Lsn(field(8..16));
        let len = u32::from_be_bytes([head[16], head[17], head[18], head[19]]);
        if len > MAX_LEN {
            return Err(RecordingError::TooLong { index: self.index, len });
        }
        let mut payload = vec![0u8; usize::try_from(len).unwrap_or(usize::MAX)];
        self.inp.read_exact(&mut payload).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                RecordingError::Truncated(self.index)
            } else {
                RecordingError::Io(e)
            }
        })?;
        self.index += 1;
        Ok(Some(RecordedMessage { wal_start, wal_end, payload: Bytes::from(payload) }))
    }

    /// A pgoutput decoder set up for this recording.
    pub fn decoder(&self) -> Decoder {
        Decoder::new(self.header.proto_version)
            .with_parallel_streaming(self.header.streaming == "parallel")
    }
}

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
    /// The tables (a publication is created for a list).
    pub tables: TableSelection,
    /// The slot to stream from.
    pub slot: String,
    /// Create the slot first (it must not exist).
    pub create_slot: bool,
    /// The file to write.
    pub out: PathBuf,
    /// When to stop (also on a shutdown request).
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

/// Counts transactions and changes of a message stream and tracks transaction boundaries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamTally {
    /// Committed source transactions (Commit, Stream Commit, Commit Prepared).
    pub transactions: u64,
    /// Inserts, updates and deletes.
    pub changes: u64,
    /// End LSN of the last commit seen.
    pub last_commit_end: Lsn,
    in_txn: bool,
    in_stream_block: bool,
}

impl StreamTally {
    /// Counts `message`.
    pub fn add(&mut self, message: &LogicalMessage) {
        match message {
            LogicalMessage::Begin(_) | LogicalMessage::BeginPrepare(_) => self.in_txn = true,
            LogicalMessage::Commit(c) => {
                self.in_txn = false;
                self.transactions += 1;
                self.last_commit_end = c.end_lsn;
            }
            LogicalMessage::Prepare(_) => self.in_txn = false,
            LogicalMessage::StreamCommit(c) => {
                self.transactions += 1;
                self.last_commit_end = c.end_lsn;
            }
            LogicalMessage::CommitPrepared(c) => {
                self.transactions += 1;
                self.last_commit_end = c.end_lsn;
            }
            LogicalMessage::StreamStart(_) => self.in_stream_block = true,
            LogicalMessage::StreamStop => self.in_stream_block = false,
            LogicalMessage::Insert(_) | LogicalMessage::Update(_) | LogicalMessage::Delete(_) => {
                self.changes += 1;
            }
            _ => {}
        }
    }

    /// Whether the stream is between transactions and stream blocks.
    pub fn between_transactions(&self) -> bool {
        !self.in_txn && !self.in_stream_block
    }
}

/// The published tables of `selection` with their target DDL, and the publication's name
/// (created for a table list as `default_publication`).
///
/// # Errors
/// Unknown tables or publication.
pub async fn published_tables(
    source: &tokio_postgres::Client,
    selection: &TableSelection,
    default_publication: &str,
) -> anyhow::Result<(String, Vec<RecordedTable>)> {
    let publication = crate::setup::publication_for(source, selection, default_publication).await?;
    let tables = crate::setup::resolve_tables(source, selection).await?;
    let tables = tables
        .iter()
        .map(|t| RecordedTable {
            schema: t.schema.clone(),
            name: t.name.clone(),
            ddl: tablesync::create_table_sql(t),
        })
        .collect();
    Ok((publication, tables))
}

/// Records the stream of a slot into a file until `opts.stop` or `shutdown`. The slot is
/// advanced past what was recorded (the file is flushed first): recording consumes it.
///
/// # Errors
/// Connection, slot and file errors.
pub async fn record(
    opts: &RecordOptions,
    shutdown: &mut Shutdown,
) -> anyhow::Result<RecordSummary> {
    let source =
        replication::connect_sql(&opts.source).await.context("connecting to the source")?;
    let (publication, tables) =
        published_tables(&source, &opts.tables, &format!("pgmirror_{}", opts.slot)).await?;
    let identity = crate::guard::identify(&source).await.context("identifying the source")?;
    drop(source);
    let mut repl = ReplicationClient::connect(&opts.source)
        .await
        .context("replication connection to the source")?;
    if opts.create_slot {
        let slot_opts =
            CreateSlotOptions { snapshot: SnapshotAction::Nothing, ..Default::default() };
        repl.create_slot(&opts.slot, slot_opts).await.context("creating the slot")?;
    } else if !crate::setup::slot_exists(&mut repl, &opts.slot).await? {
        bail!("slot {:?} does not exist on the source; pass --create-slot", opts.slot);
    }
    let server_version = repl.server_version();
    let mut start = StartReplication::new(opts.slot.clone(), [publication.clone()]);
    start.binary = opts.binary;
    start.streaming = if server_version >= 140_000 { Streaming::On } else { Streaming::Off };
    let mut stream = repl.start_replication(start).await.context("starting replication")?;
    let header = RecordingHeader {
        proto_version: stream.proto_version(),
        binary: opts.binary,
        streaming: if server_version >= 140_000 { "on" } else { "off" }.to_owned(),
        server_version,
        publication,
        slot: opts.slot.clone(),
        tables,
        source: Some(RecordedSource { system_id: identity.system_id, database: identity.database }),
    };
    let file =
        File::create(&opts.out).with_context(|| format!("creating {}", opts.out.display()))?;
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
    loop {
        if shutdown.is_triggered() || done(&tally, stream.received_lsn(), last_message) {
            break;
        }
        tokio::select! {
            event = stream.next() => {
                let event = match event {
                    Some(Ok(e)) => e,
                    Some(Err(e)) => return Err(anyhow::Error::new(e).context("replication stream")),
                    None => bail!("the primary ended the replication stream"),
                };
                writer.write_message(event.wal_start, event.wal_end, &event.message)?;
                tally.add(&event.message);
                last_message = Instant::now();
            }
            // Wakes up to check the stop conditions while the stream is quiet.
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
            () = shutdown.wait(), if !shutdown.is_triggered() => {}
        }
        // Confirm only what the file holds, so the slot never runs ahead of the recording.
        if last_confirm.elapsed() >= Duration::from_secs(1) && !tally.last_commit_end.is_zero() {
            writer.flush()?;
            stream.confirm(tally.last_commit_end);
            last_confirm = Instant::now();
        }
    }
    let file = writer.finish()?.into_inner().map_err(|e| e.into_error())?;
    file.sync_all().context("syncing the recording")?;
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
    stream.shutdown().await.context("ending the replication stream")?;
    let meta = std::fs::metadata(&opts.out)?;
    tracing::info!(bytes = meta.len(), transactions = tally.transactions, "recording written");
    let mut reader = RecordingReader::open(&opts.out)?;
    let (mut messages, mut bytes) = (0u64, 0u64);
    while let Some(m) = reader.next_message()? {
        messages += 1;
        bytes += u64::try_from(m.payload.len()).unwrap_or(u64::MAX);
    }
    Ok(RecordSummary { messages, payload_bytes: bytes, ..summary })
}

/// Settings of [`replay`].
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// The target.
    pub target: ConnConfig,
    /// The mirror name (the progress row): replaying twice under one name applies once.
    pub name: String,
    /// Create the recording's tables on the target when they are missing.
    pub create_tables: bool,
    /// Settings of the apply loop.
    pub applier: ApplierConfig,
}

/// What [`replay`] did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplaySummary {
    /// Messages read.
    pub messages: u64,
    /// Source transactions applied (not skipped).
    pub applied_txns: u64,
    /// Source transactions skipped because the target already had them.
    pub skipped_txns: u64,
    /// Row changes handed to the target.
    pub changes: u64,
    /// Wall-clock seconds of the whole replay.
    pub seconds: f64,
    /// Of which decoding the payloads.
    pub decode_seconds: f64,
    /// The last source LSN the target holds.
    pub last_applied: Option<String>,
}

/// Applies the recording at `path` into `opts.target` with the mirror's applier.
///
/// # Errors
/// A bad recording, a target that rejects a change, connection errors.
pub async fn replay(path: &Path, opts: &ReplayOptions) -> anyhow::Result<ReplaySummary> {
    let mut reader =
        RecordingReader::open(path).with_context(|| format!("opening {}", path.display()))?;
    let client =
        replication::connect_sql(&opts.target).await.context("connecting to the target")?;
    if let Some(source) = &reader.header().source {
        let target = crate::guard::identify(&client).await.context("identifying the target")?;
        let same_system = source.system_id.is_some() && source.system_id == target.system_id;
        anyhow::ensure!(
            !(same_system && source.database == target.database),
            "--target is the database this recording was made from ({:?} of the server with \
             system identifier {}): replaying would apply its changes there a second time; \
             point --target at another database (nothing was changed)",
            source.database,
            source.system_id.as_deref().unwrap_or("?")
        );
    }
    if opts.create_tables {
        for t in &reader.header().tables {
            let quoted = format!(
                "{}.{}",
                replication::quote_ident(&t.schema),
                replication::quote_ident(&t.name)
            );
            let exists: bool =
                client.query_one("SELECT to_regclass($1) IS NOT NULL", &[&quoted]).await?.get(0);
            if !exists {
                client.batch_execute(&t.ddl).await.with_context(|| format!("creating {quoted}"))?;
            }
        }
    }
    let target = PostgresTarget::new(client, PostgresTargetConfig::new(opts.name.clone())).await?;
    let mut applier = Applier::new(target, opts.applier.clone()).await?;
    let mut decoder = reader.decoder();
    let began = Instant::now();
    let mut decode = Duration::ZERO;
    let mut messages = 0u64;
    while let Some(m) = reader.next_message()? {
        messages += 1;
        let t = Instant::now();
        let message = decoder
            .decode(m.payload)
            .with_context(|| format!("decoding message {messages} (WAL {})", m.wal_start))?;
        decode += t.elapsed();
        applier.handle(message).await?;
    }
    applier.flush().await?;
    let stats = applier.stats().clone();
    Ok(ReplaySummary {
        messages,
        applied_txns: stats.applied_txns,
        skipped_txns: stats.skipped_txns,
        changes: stats.changes,
        seconds: began.elapsed().as_secs_f64(),
        decode_seconds: decode.as_secs_f64(),
        last_applied: applier.last_applied().map(|l| l.to_string()),
    })
}

/// Decodes every message of a recording and returns (messages, seconds spent decoding).
///
/// # Errors
/// A bad recording.
pub fn decode_all(path: &Path) -> anyhow::Result<(u64, f64)> {
    let mut reader = RecordingReader::open(path)?;
    let mut decoder = reader.decoder();
    // One buffer with every payload, sliced, as the stream hands them out (slices of its
    // read buffer): separately allocated payloads would time an allocation on each first
    // clone instead of decoding.
    let mut all = bytes::BytesMut::new();
    let mut ends = Vec::new();
    while let Some(m) = reader.next_message()? {
        all.extend_from_slice(&m.payload);
        ends.push(all.len());
    }
    let all = all.freeze();
    let payloads: Vec<bytes::Bytes> = std::iter::once(0)
        .chain(ends.iter().copied())
        .zip(&ends)
        .map(|(start, &end)| all.slice(start..end))
        .collect();
    let t = Instant::now();
    for p in &payloads {
        let message = decoder.decode(p.clone())?;
        std::hint::black_box(message);
    }
    Ok((u64::try_from(payloads.len()).unwrap_or(u64::MAX), t.elapsed().as_secs_f64()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgoutput_decoder::{Begin, Commit, PgTimestamp};

    fn header() -> RecordingHeader {
        RecordingHeader {
            proto_version: 2,
            binary: true,
            streaming: "on".into(),
            server_version: 150_000,
            publication: "p".into(),
            slot: "s".into(),
            tables: vec![RecordedTable {
                schema: "public".into(),
                name: "t".into(),
                ddl: "CREATE TABLE t (id int)".into(),
            }],
            source: None,
        }
    }

    #[test]
    fn round_trip() {
        let begin = LogicalMessage::Begin(Begin {
            final_lsn: Lsn(0x20),
            commit_time: PgTimestamp(5),
            xid: 7,
        });
        let commit = LogicalMessage::Commit(Commit {
            flags: 0,
            commit_lsn: Lsn(0x20),
            end_lsn: Lsn(0x30),
            commit_time: PgTimestamp(5),
        });
        let mut w = RecordingWriter::new(Vec::new(), &header()).unwrap();
        w.write_message(Lsn(0x10), Lsn(0x10), &begin).unwrap();
        w.write_message(Lsn(0x20), Lsn(0x30), &commit).unwrap();
        assert_eq!(w.messages(), 2);
        let bytes = w.finish().unwrap();

        let mut r = RecordingReader::new(&bytes[..]).unwrap();
        assert_eq!(r.header(), &header());
        let mut decoder = r.decoder();
        let first = r.next_message().unwrap().unwrap();
        assert_eq!((first.wal_start, first.wal_end), (Lsn(0x10), Lsn(0x10)));
        assert_eq!(decoder.decode(first.payload).unwrap(), begin);
        let second = r.next_message().unwrap().unwrap();
        assert_eq!(decoder.decode(second.payload).unwrap(), commit);
        assert_eq!(r.next_message().unwrap(), None);

        let mut tally = StreamTally::default();
        tally.add(&begin);
        assert!(!tally.between_transactions());
        tally.add(&commit);
        assert!(tally.between_transactions());
        assert_eq!((tally.transactions, tally.last_commit_end), (1, Lsn(0x30)));
    }

    #[test]
    fn rejects_bad_files() {
        assert!(matches!(RecordingReader::new(&b"NOTAREC!"[..]), Err(RecordingError::BadMagic)));
        assert!(matches!(RecordingReader::new(&b"PG"[..]), Err(RecordingError::BadMagic)));
        let mut w = RecordingWriter::new(Vec::new(), &header()).unwrap();
        w.write_raw(Lsn(1), Lsn(2), b"B0123456789").unwrap();
        let mut bytes = w.finish().unwrap();
        bytes.truncate(bytes.len() - 3);
        let mut r = RecordingReader::new(&bytes[..]).unwrap();
        assert!(matches!(r.next_message(), Err(RecordingError::Truncated(0))));
    }
}
