//! The file format: a header, then every XLogData payload with its WAL positions.
//!
//! File layout (integers big-endian, like the wire protocol):
//! - the magic `PGMREC01`;
//! - `u32` length, then a JSON [`RecordingHeader`];
//! - records until the end of the file: `u64` WAL start, `u64` WAL end, `u32` payload length,
//!   payload (a pgoutput message, tag byte first).

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::Path;

use bytes::{Bytes, BytesMut};
use pgoutput_decoder::{Decoder, LogicalMessage, Lsn};
use serde::{Deserialize, Serialize};

/// The first bytes of every recording (the digits are the format version).
pub const MAGIC: &[u8; 8] = b"PGMREC01";

/// Largest header or payload accepted when reading (a corrupt length must not allocate
/// gigabytes).
const MAX_LEN: u32 = 1 << 30;

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
