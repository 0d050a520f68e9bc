//! Recordings of a pgoutput stream (`pgmirror record` / `pgmirror replay`).
//!
//! A recording is the raw pgoutput payload of every XLogData a walsender sent, with its
//! start and end LSN, after a small header ([`RecordingWriter`], [`RecordingReader`]). [`record`] streams
//! a slot into a file; [`replay`] applies a file through the same
//! [`Applier`](applier::Applier) and [`PostgresTarget`](applier::PostgresTarget) as
//! `pgmirror mirror`, which gives deterministic apply benchmarks and bug reports that need no
//! live primary; [`decode_all`] times the decoder alone on one.

#![deny(missing_docs)]

mod error;
mod format;
mod record;
mod replay;

pub use error::Error;
pub use format::{
    MAGIC, RecordedMessage, RecordedSource, RecordedTable, RecordingError, RecordingHeader,
    RecordingReader, RecordingWriter, StreamTally,
};
pub use record::{RecordOptions, RecordSummary, StopAt, record};
pub use replay::{ReplayOptions, ReplaySummary, decode_all, replay};
