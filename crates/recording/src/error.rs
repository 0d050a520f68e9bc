//! What can go wrong while recording or replaying.

use std::io;
use std::path::PathBuf;

use pgoutput_decoder::{DecodeError, Lsn};

use crate::format::RecordingError;

/// Errors of [`record`](crate::record), [`replay`](crate::replay) and
/// [`decode_all`](crate::decode_all).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A connection to the source or the target, or the replication stream, failed.
    #[error("{what}")]
    Connection {
        /// What was being done.
        what: &'static str,
        /// The connection's error.
        #[source]
        source: replication::Error,
    },
    /// A statement failed.
    #[error("{what}")]
    Query {
        /// What was being done.
        what: String,
        /// The server's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The slot to record from does not exist.
    #[error("slot {0:?} does not exist on the source; create it first")]
    NoSlot(String),
    /// The primary closed the stream before a stop condition was met.
    #[error("the primary ended the replication stream")]
    StreamEnded,
    /// The recording file could not be created, synced or read.
    #[error("{what} {}", path.display())]
    File {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The file system's error.
        #[source]
        source: io::Error,
    },
    /// The recording could not be opened: not a recording, or unreadable.
    #[error("opening {}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: RecordingError,
    },
    /// Reading or writing a record failed.
    #[error(transparent)]
    Format(#[from] RecordingError),
    /// The target is the database the recording was made from.
    #[error(
        "the target is the database this recording was made from ({database:?} of the server \
         with system identifier {system_id}): replaying would apply its changes there a second \
         time; replay into another database (nothing was changed)"
    )]
    SameDatabase {
        /// The database's name.
        database: String,
        /// The server's system identifier.
        system_id: String,
    },
    /// A recorded message is not valid pgoutput.
    #[error("decoding message {index} (WAL {wal_start})")]
    Decode {
        /// 1-based position of the message in the recording.
        index: u64,
        /// Its WAL start.
        wal_start: Lsn,
        /// The decoder's error.
        #[source]
        source: DecodeError,
    },
    /// The applier or the target failed.
    #[error(transparent)]
    Apply(#[from] applier::ApplyError),
}

impl Error {
    /// For an SQL connection's [`pgconn::Error`] and the replication connection's alike.
    pub(crate) fn connection<E: Into<replication::Error>>(
        what: &'static str,
    ) -> impl FnOnce(E) -> Error {
        move |source| Error::Connection { what, source: source.into() }
    }

    pub(crate) fn query(what: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> Error {
        let what = what.into();
        move |source| Error::Query { what, source }
    }

    pub(crate) fn file(
        what: &'static str,
        path: &std::path::Path,
    ) -> impl FnOnce(io::Error) -> Error {
        let path = path.to_owned();
        move |source| Error::File { what, path, source }
    }
}
