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
//! and message tag. Message bodies are [`bytes::Bytes`] slices of the input. A row
//! ([`Tuple`]) is one such slice holding its TupleData block, checked when decoded:
//! no allocation, copy or reference count per column. Its columns are read as
//! borrowed [`Column`]s ([`Tuple::iter`], [`Tuple::get`]), or as owned
//! [`ColumnValue`]s ([`Tuple::value`], [`Tuple::values`]) where a value must outlive
//! the row.
//!
//! ```
//! use bytes::Bytes;
//! use pgoutput_decoder::{Column, Decoder, LogicalMessage};
//!
//! let mut decoder = Decoder::new(1);
//! // Insert into relation 16384 of one text column "42".
//! let data = Bytes::from_static(b"I\0\0\x40\0N\0\x01t\0\0\0\x0242");
//! match decoder.decode(data)? {
//!     LogicalMessage::Insert(insert) => {
//!         assert_eq!(insert.rel_id, 16384);
//!         assert_eq!(insert.new.len(), 1);
//!         assert_eq!(insert.new.get(0), Some(Column::Text(b"42")));
//!         for column in &insert.new {
//!             assert_eq!(column.as_str(), Some("42"));
//!         }
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
pub use tuple::{Column, ColumnValue, Columns, OldTuple, Tuple};
