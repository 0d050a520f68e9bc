//! A sans-IO decoder and encoder for PostgreSQL logical replication.
//!
//! Two layers:
//! - [`ReplicationMessage`]: the CopyBoth payloads of `START_REPLICATION`
//!   ([XLogData](https://www.postgresql.org/docs/current/protocol-replication.html#PROTOCOL-REPLICATION-XLOGDATA),
//!   [primary keepalive](https://www.postgresql.org/docs/current/protocol-replication.html#PROTOCOL-REPLICATION-PRIMARY-KEEPALIVE-MESSAGE))
//!   and the client's [`StandbyStatusUpdate`].
//! - [`LogicalMessage`]: the `pgoutput` messages inside XLogData, protocol versions
//!   1 to 4 ([formats](https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html)),
//!   decoded by a [`Decoder`] that tracks Stream Start/Stop blocks explicitly.
//!
//! Decoding never panics: malformed input gives a [`DecodeError`] with the offset
//! and message tag. Message bodies and column values are [`bytes::Bytes`] slices
//! of the input, so a row costs one `Vec` and no copies.
//!
//! ```
//! use bytes::Bytes;
//! use pgoutput_decoder::{ColumnValue, Decoder, LogicalMessage};
//!
//! let mut decoder = Decoder::new(1);
//! // Insert into relation 16384 of one text column "42".
//! let data = Bytes::from_static(b"I\0\0\x40\0N\0\x01t\0\0\0\x0242");
//! match decoder.decode(data)? {
//!     LogicalMessage::Insert(insert) => {
//!         assert_eq!(insert.rel_id, 16384);
//!         assert_eq!(insert.new.columns, [ColumnValue::Text(Bytes::from_static(b"42"))]);
//!     }
//!     other => panic!("unexpected {other:?}"),
//! }
//! # Ok::<(), pgoutput_decoder::DecodeError>(())
//! ```
#![deny(missing_docs)]

mod copy_both;
mod cursor;
mod decode;
mod encode;
mod error;
mod lsn;
mod message;
mod time;
mod tuple;

pub use copy_both::{PrimaryKeepalive, ReplicationMessage, StandbyStatusUpdate, XLogData};
pub use decode::{DecodeContext, Decoder};
pub use error::{DecodeError, DecodeErrorKind};
pub use lsn::{Lsn, ParseLsnError};
pub use message::{
    Begin, BeginPrepare, Commit, CommitPrepared, DecodingMessage, Delete, Insert, LogicalMessage,
    Origin, Prepare, Relation, RelationColumn, ReplicaIdentity, RollbackPrepared, StreamAbort,
    StreamCommit, StreamStart, Truncate, TypeInfo, Update, tag,
};
pub use time::PgTimestamp;
pub use tuple::{ColumnValue, OldTuple, Tuple};
