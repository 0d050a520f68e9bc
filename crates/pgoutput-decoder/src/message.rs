//! pgoutput messages (protocol versions 1 to 4): tags, the [`LogicalMessage`] enum
//! and one struct per message.
//!
//! Layouts: <https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html>.

use bytes::Bytes;

use crate::lsn::Lsn;
use crate::time::PgTimestamp;
use crate::tuple::{OldTuple, Tuple};

/// Message tag bytes, as sent first in every pgoutput message.
pub mod tag {
    /// [`Begin`](crate::Begin).
    pub const BEGIN: u8 = b'B';
    /// [`Commit`](crate::Commit).
    pub const COMMIT: u8 = b'C';
    /// [`Origin`](crate::Origin).
    pub const ORIGIN: u8 = b'O';
    /// [`Relation`](crate::Relation).
    pub const RELATION: u8 = b'R';
    /// [`TypeInfo`](crate::TypeInfo).
    pub const TYPE: u8 = b'Y';
    /// [`Insert`](crate::Insert).
    pub const INSERT: u8 = b'I';
    /// [`Update`](crate::Update).
    pub const UPDATE: u8 = b'U';
    /// [`Delete`](crate::Delete).
    pub const DELETE: u8 = b'D';
    /// [`Truncate`](crate::Truncate).
    pub const TRUNCATE: u8 = b'T';
    /// [`DecodingMessage`](crate::DecodingMessage).
    pub const MESSAGE: u8 = b'M';
    /// [`StreamStart`](crate::StreamStart) (protocol 2).
    pub const STREAM_START: u8 = b'S';
    /// Stream Stop (protocol 2).
    pub const STREAM_STOP: u8 = b'E';
    /// [`StreamCommit`](crate::StreamCommit) (protocol 2).
    pub const STREAM_COMMIT: u8 = b'c';
    /// [`StreamAbort`](crate::StreamAbort) (protocol 2).
    pub const STREAM_ABORT: u8 = b'A';
    /// [`BeginPrepare`](crate::BeginPrepare) (protocol 3).
    pub const BEGIN_PREPARE: u8 = b'b';
    /// [`Prepare`](crate::Prepare) (protocol 3).
    pub const PREPARE: u8 = b'P';
    /// [`CommitPrepared`](crate::CommitPrepared) (protocol 3).
    pub const COMMIT_PREPARED: u8 = b'K';
    /// [`RollbackPrepared`](crate::RollbackPrepared) (protocol 3).
    pub const ROLLBACK_PREPARED: u8 = b'r';
    /// Stream Prepare, a [`Prepare`](crate::Prepare) (protocol 3).
    pub const STREAM_PREPARE: u8 = b'p';

    /// TupleData column kind: NULL.
    pub const COLUMN_NULL: u8 = b'n';
    /// TupleData column kind: unchanged TOASTed value.
    pub const COLUMN_UNCHANGED_TOAST: u8 = b'u';
    /// TupleData column kind: text value.
    pub const COLUMN_TEXT: u8 = b't';
    /// TupleData column kind: binary value.
    pub const COLUMN_BINARY: u8 = b'b';

    /// Update/Insert: the new tuple follows.
    pub const TUPLE_NEW: u8 = b'N';
    /// Update/Delete: the old key tuple follows.
    pub const TUPLE_KEY: u8 = b'K';
    /// Update/Delete: the old full tuple follows.
    pub const TUPLE_OLD: u8 = b'O';
}

/// One decoded pgoutput message.
///
/// Decode with [`Decoder::decode`](crate::Decoder::decode) (which tracks stream
/// blocks) or [`LogicalMessage::decode`] with an explicit
/// [`DecodeContext`](crate::DecodeContext); encode with [`LogicalMessage::encode`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogicalMessage {
    /// `B`: start of a transaction.
    Begin(Begin),
    /// `C`: end of a transaction.
    Commit(Commit),
    /// `O`: the transaction came from another replication origin.
    Origin(Origin),
    /// `R`: a table's description, sent before its first change.
    Relation(Relation),
    /// `Y`: a user-defined type's name.
    Type(TypeInfo),
    /// `I`: an inserted row.
    Insert(Insert),
    /// `U`: an updated row.
    Update(Update),
    /// `D`: a deleted row.
    Delete(Delete),
    /// `T`: truncated tables.
    Truncate(Truncate),
    /// `M`: a `pg_logical_emit_message` message.
    Message(DecodingMessage),
    /// `S`: start of a block of a streamed in-progress transaction (protocol 2).
    StreamStart(StreamStart),
    /// `E`: end of a stream block (protocol 2).
    /// [Docs](https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html#PROTOCOL-LOGICALREP-MESSAGE-FORMATS-STREAM-STOP).
    StreamStop,
    /// `c`: a streamed transaction committed (protocol 2).
    StreamCommit(StreamCommit),
    /// `A`: a streamed (sub)transaction aborted (protocol 2).
    StreamAbort(StreamAbort),
    /// `b`: start of a prepared transaction (protocol 3).
    BeginPrepare(BeginPrepare),
    /// `P`: the transaction was prepared (protocol 3).
    Prepare(Prepare),
    /// `K`: a prepared transaction was committed (protocol 3).
    CommitPrepared(CommitPrepared),
    /// `r`: a prepared transaction was rolled back (protocol 3).
    RollbackPrepared(RollbackPrepared),
    /// `p`: a streamed transaction was prepared (protocol 3).
    StreamPrepare(Prepare),
}

impl LogicalMessage {
    /// The tag byte this message is sent with (see [`tag`]).
    pub fn tag(&self) -> u8 {
        match self {
            Self::Begin(_) => tag::BEGIN,
            Self::Commit(_) => tag::COMMIT,
            Self::Origin(_) => tag::ORIGIN,
            Self::Relation(_) => tag::RELATION,
            Self::Type(_) => tag::TYPE,
            Self::Insert(_) => tag::INSERT,
            Self::Update(_) => tag::UPDATE,
            Self::Delete(_) => tag::DELETE,
            Self::Truncate(_) => tag::TRUNCATE,
            Self::Message(_) => tag::MESSAGE,
            Self::StreamStart(_) => tag::STREAM_START,
            Self::StreamStop => tag::STREAM_STOP,
            Self::StreamCommit(_) => tag::STREAM_COMMIT,
            Self::StreamAbort(_) => tag::STREAM_ABORT,
            Self::BeginPrepare(_) => tag::BEGIN_PREPARE,
            Self::Prepare(_) => tag::PREPARE,
            Self::CommitPrepared(_) => tag::COMMIT_PREPARED,
            Self::RollbackPrepared(_) => tag::ROLLBACK_PREPARED,
            Self::StreamPrepare(_) => tag::STREAM_PREPARE,
        }
    }

    /// The streamed-transaction xid carried by a change inside a stream block
    /// (Relation, Type, Insert, Update, Delete, Truncate, Message); `None` otherwise.
    pub fn stream_xid(&self) -> Option<u32> {
        match self {
            Self::Relation(m) => m.xid,
            Self::Type(m) => m.xid,
            Self::Insert(m) => m.xid,
            Self::Update(m) => m.xid,
            Self::Delete(m) => m.xid,
            Self::Truncate(m) => m.xid,
            Self::Message(m) => m.xid,
            _ => None,
        }
    }
}

/// [Begin](https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html#PROTOCOL-LOGICALREP-MESSAGE-FORMATS-BEGIN):
/// start of a (non-streamed) transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Begin {
    /// LSN of the transaction's commit record (equals [`Commit::commit_lsn`]).
    pub final_lsn: Lsn,
    /// Commit time.
    pub commit_time: PgTimestamp,
    /// Transaction id.
    pub xid: u32,
}

/// [Commit](https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html#PROTOCOL-LOGICALREP-MESSAGE-FORMATS-COMMIT):
/// end of a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commit {
    /// Flags, currently unused (0).
    pub flags: u8,
    /// LSN of the commit record.
    pub commit_lsn: Lsn,
    /// End LSN of the commit record: the position to confirm once applied.
    pub end_lsn: Lsn,
    /// Commit time.
    pub commit_time: PgTimestamp,
}

/// [Origin](https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html#PROTOCOL-LOGICALREP-MESSAGE-FORMATS-ORIGIN):
/// the transaction was replicated from another origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Commit LSN on the origin server (0/0 inside a stream block).
    pub commit_lsn: Lsn,
    /// Origin name.
    pub name: String,
}

/// [Relation](https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html#PROTOCOL-LOGICALREP-MESSAGE-FORMATS-RELATION):
/// a table's description, sent before the first change to it in a session and
/// again after it changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// Streamed transaction xid (only inside a stream block).
    pub xid: Option<u32>,
    /// Relation OID, used by the change messages.
    pub rel_id: u32,
    /// Schema name; `""` means `pg_catalog`.
    pub namespace: String,
    /// Table name.
    pub name: String,
    /// The table's replica identity setting.
    pub replica_identity: ReplicaIdentity,
    /// The published columns, in tuple order.
    pub columns: Vec<RelationColumn>,
}

/// `REPLICA IDENTITY` of a table, as sent in a [`Relation`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplicaIdentity {
    /// `d`: the primary key.
    Default,
    /// `n`: nothing.
    Nothing,
    /// `f`: all columns.
    Full,
    /// `i`: the columns of a chosen unique index.
    Index,
}

impl ReplicaIdentity {
    /// The byte this setting is sent as.
    pub fn as_byte(self) -> u8 {
        match self {
            Self::Default => b'd',
            Self::Nothing => b'n',
            Self::Full => b'f',
            Self::Index => b'i',
        }
    }

    /// The setting sent as `b`, if known.
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            b'd' => Some(Self::Default),
            b'n' => Some(Self::Nothing),
            b'f' => Some(Self::Full),
            b'i' => Some(Self::Index),
            _ => None,
        }
    }
}

/// One column of a [`Relation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationColumn {
    /// Whether the column is part of the replica identity key.
    pub is_key: bool,
    /// Column name.
    pub name: String,
    /// OID of the column's type.
    pub type_oid: u32,
    /// Type modifier (`atttypmod`), -1 if none.
    pub type_modifier: i32,
}

/// [Type](https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html#PROTOCOL-LOGICALREP-MESSAGE-FORMATS-TYPE):
/// the name of a non-built-in type used by a following [`Relation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeInfo {
    /// Streamed transaction xid (only inside a stream block).
    pub xid: Option<u32>,
    /// Type OID.
    pub type_oid: u32,
    /// Schema name; `""` means `pg_catalog`.
    pub namespace: String,
    /// Type name.
    pub name: String,
}

/// [Insert](https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html#PROTOCOL-LOGICALREP-MESSAGE-FORMATS-INSERT).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Insert {
    /// Streamed transaction xid (only inside a stream block).
    pub xid: Option<u32>,
    /// Relation OID (see [`Relation::rel_id`]).
    pub rel_id: u32,
    /// The new row.
    pub new: Tuple,
}

/// [Update](https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html#PROTOCOL-LOGICALREP-MESSAGE-FORMATS-UPDATE).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// Streamed transaction xid (only inside a stream block).
    pub xid: Option<u32>,
    /// Relation OID (see [`Relation::rel_id`]).
    pub rel_id: u32,
    /// The old key (if a key column changed) or old row (`REPLICA IDENTITY FULL`).
    pub old: Option<OldTuple>,
    /// The new row; may contain [`ColumnValue::UnchangedToast`](crate::ColumnValue).
    pub new: Tuple,
}

/// [Delete](https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html#PROTOCOL-LOGICALREP-MESSAGE-FORMATS-DELETE).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete {
    /// Streamed transaction xid (only inside a stream block).
    pub xid: Option<u32>,
    /// Relation OID (see [`Relation::rel_id`]).
    pub rel_id: u32,
    /// The old key or old row.
    pub old: OldTuple,
}

/// [Truncate](https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html#PROTOCOL-LOGICALREP-MESSAGE-FORMATS-TRUNCATE).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncate {
    /// Streamed transaction xid (only inside a stream block).
    pub xid: Option<u32>,
    /// `TRUNCATE ... CASCADE`.
    pub cascade: bool,
    /// `TRUNCATE ... RESTART IDENTITY`.
    pub restart_identity: bool,
    /// OIDs of the truncated relations.
    pub rel_ids: Vec<u32>,
}

/// [Message](https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html#PROTOCOL-LOGICALREP-MESSAGE-FORMATS-MESSAGE):
/// a logical decoding message from `pg_logical_emit_message` (sent with `messages = true`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodingMessage {
    /// Streamed transaction xid (only inside a stream block).
    pub xid: Option<u32>,
    /// Whether the message is part of a transaction (else sent right away).
    pub transactional: bool,
    /// LSN of the message.
    pub lsn: Lsn,
    /// The message prefix.
    pub prefix: String,
    /// The message content (zero-copy slice).
    pub content: Bytes,
}

/// [Stream Start](https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html#PROTOCOL-LOGICALREP-MESSAGE-FORMATS-STREAM-START):
/// the following changes, until Stream Stop, belong to in-progress transaction `xid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamStart {
    /// Top-level transaction id.
    pub xid: u32,
    /// Whether this is the transaction's first stream block.
    pub first_segment: bool,
}

/// [Stream Commit](https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html#PROTOCOL-LOGICALREP-MESSAGE-FORMATS-STREAM-COMMIT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamCommit {
    /// Transaction id.
    pub xid: u32,
    /// Flags, currently unused (0).
    pub flags: u8,
    /// LSN of the commit record.
    pub commit_lsn: Lsn,
    /// End LSN of the commit record.
    pub end_lsn: Lsn,
    /// Commit time.
    pub commit_time: PgTimestamp,
}

/// [Stream Abort](https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html#PROTOCOL-LOGICALREP-MESSAGE-FORMATS-STREAM-ABORT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamAbort {
    /// Top-level transaction id.
    pub xid: u32,
    /// The aborted subtransaction; equals `xid` when the whole transaction aborted.
    pub subxid: u32,
    /// LSN of the abort (protocol 4 with `streaming = parallel` only).
    pub abort_lsn: Option<Lsn>,
    /// Abort time (protocol 4 with `streaming = parallel` only).
    pub abort_time: Option<PgTimestamp>,
}

/// [Begin Prepare](https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html#PROTOCOL-LOGICALREP-MESSAGE-FORMATS-BEGIN-PREPARE).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BeginPrepare {
    /// LSN of the prepare record.
    pub prepare_lsn: Lsn,
    /// End LSN of the prepared transaction.
    pub end_lsn: Lsn,
    /// Prepare time.
    pub prepare_time: PgTimestamp,
    /// Transaction id.
    pub xid: u32,
    /// Global transaction identifier of `PREPARE TRANSACTION`.
    pub gid: String,
}

/// [Prepare](https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html#PROTOCOL-LOGICALREP-MESSAGE-FORMATS-PREPARE)
/// and [Stream Prepare](https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html#PROTOCOL-LOGICALREP-MESSAGE-FORMATS-STREAM-PREPARE)
/// (same layout).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepare {
    /// Flags, currently unused (0).
    pub flags: u8,
    /// LSN of the prepare record.
    pub prepare_lsn: Lsn,
    /// End LSN of the prepare record.
    pub end_lsn: Lsn,
    /// Prepare time.
    pub prepare_time: PgTimestamp,
    /// Transaction id.
    pub xid: u32,
    /// Global transaction identifier.
    pub gid: String,
}

/// [Commit Prepared](https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html#PROTOCOL-LOGICALREP-MESSAGE-FORMATS-COMMIT-PREPARED).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitPrepared {
    /// Flags, currently unused (0).
    pub flags: u8,
    /// LSN of the commit-prepared record.
    pub commit_lsn: Lsn,
    /// End LSN of the commit-prepared record.
    pub end_lsn: Lsn,
    /// Commit time.
    pub commit_time: PgTimestamp,
    /// Transaction id.
    pub xid: u32,
    /// Global transaction identifier.
    pub gid: String,
}

/// [Rollback Prepared](https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html#PROTOCOL-LOGICALREP-MESSAGE-FORMATS-ROLLBACK-PREPARED).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollbackPrepared {
    /// Flags, currently unused (0).
    pub flags: u8,
    /// End LSN of the prepared transaction.
    pub prepare_end_lsn: Lsn,
    /// End LSN of the rollback-prepared record.
    pub rollback_end_lsn: Lsn,
    /// Prepare time.
    pub prepare_time: PgTimestamp,
    /// Rollback time.
    pub rollback_time: PgTimestamp,
    /// Transaction id.
    pub xid: u32,
    /// Global transaction identifier.
    pub gid: String,
}
