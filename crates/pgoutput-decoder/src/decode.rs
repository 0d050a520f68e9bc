//! Decoding pgoutput messages: the stateless [`LogicalMessage::decode`] and the
//! stream-tracking [`Decoder`].

use bytes::Bytes;

use crate::cursor::Cursor;
use crate::error::{DecodeError, DecodeErrorKind};
use crate::lsn::Lsn;
use crate::message::*;
use crate::time::PgTimestamp;
use crate::tuple::{KIND_CLASS, KIND_NO_VALUE, KIND_VALUE, OldTuple, Tuple};

/// Smallest wire size of one TupleData column (its kind byte), used to refuse a
/// column count the remaining input could not hold.
const MIN_COLUMN_SIZE: usize = 1;
/// Smallest wire size of one Relation column: flags, empty name, type oid, typmod.
const MIN_RELATION_COLUMN_SIZE: usize = 1 + 1 + 4 + 4;

/// Everything that decides how a message's bytes are laid out, apart from the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeContext {
    /// The negotiated `proto_version` (1 to 4).
    pub proto_version: u32,
    /// Whether the message is inside a Stream Start/Stop block, where change
    /// messages carry the streamed transaction's xid.
    pub in_stream: bool,
    /// Whether `streaming = parallel` was requested (with protocol 4 this adds the
    /// abort LSN and time to Stream Abort).
    pub parallel_streaming: bool,
}

impl DecodeContext {
    /// A context outside any stream block, without parallel streaming.
    pub fn new(proto_version: u32) -> Self {
        Self { proto_version, in_stream: false, parallel_streaming: false }
    }

    fn require(&self, required: u32, cur: &Cursor) -> Result<(), DecodeError> {
        if self.proto_version < required {
            return Err(cur.error_at(
                0,
                DecodeErrorKind::UnsupportedByProtocol {
                    proto_version: self.proto_version,
                    required,
                },
            ));
        }
        Ok(())
    }

    /// Fails unless the stream state is `in_stream`.
    fn expect_stream(&self, in_stream: bool, cur: &Cursor) -> Result<(), DecodeError> {
        if self.in_stream != in_stream {
            return Err(cur.error_at(0, DecodeErrorKind::StreamState { in_stream: self.in_stream }));
        }
        Ok(())
    }

    /// Whether Stream Abort carries the abort LSN and time.
    fn abort_has_lsn(&self) -> bool {
        self.parallel_streaming && self.proto_version >= 4
    }
}

impl LogicalMessage {
    /// Decodes one pgoutput message (the `data` of an XLogData payload).
    ///
    /// Bodies and column values are zero-copy slices of `data`.
    ///
    /// # Errors
    /// A [`DecodeError`] for truncated input, a bad length or count, an unknown tag,
    /// invalid UTF-8 in a name, trailing bytes, a message the protocol version does
    /// not have, or a stream message in the wrong place per `ctx.in_stream`.
    #[inline]
    pub fn decode(data: Bytes, ctx: &DecodeContext) -> Result<LogicalMessage, DecodeError> {
        let mut cur = Cursor::new(data);
        let tag = match cur.u8("message tag") {
            Ok(t) => t,
            Err(_) => return Err(cur.error(DecodeErrorKind::Empty)),
        };
        cur.set_tag(tag);
        // Returned as is, not unwrapped, checked and rewrapped: the message is then built
        // in the caller's slot rather than copied (measurably faster for rows).
        decode_body(tag, &mut cur, ctx)
    }
}

#[inline]
/// Decodes the message after its tag, up to the end of the input.
fn decode_body(
    tag: u8,
    cur: &mut Cursor,
    ctx: &DecodeContext,
) -> Result<LogicalMessage, DecodeError> {
    // The optional xid of changes inside a stream block.
    let xid = |cur: &mut Cursor| -> Result<Option<u32>, DecodeError> {
        if ctx.in_stream { cur.u32("xid").map(Some) } else { Ok(None) }
    };
    // Row messages check for trailing bytes before they are built, so that nothing comes
    // between building and returning them (which costs a copy).
    let msg = match tag {
        tag::INSERT => {
            let xid = xid(cur)?;
            let rel_id = cur.u32("relation id")?;
            expect_byte(cur, tag::TUPLE_NEW, "insert tuple")?;
            let new = decode_tuple(cur)?;
            cur.finish()?;
            return Ok(LogicalMessage::Insert(Insert { xid, rel_id, new }));
        }
        tag::UPDATE => {
            let xid = xid(cur)?;
            let rel_id = cur.u32("relation id")?;
            let at = cur.offset();
            let (old, new) = match cur.u8("update tuple")? {
                tag::TUPLE_KEY => {
                    let old = OldTuple::Key(decode_tuple(cur)?);
                    expect_byte(cur, tag::TUPLE_NEW, "update tuple")?;
                    (Some(old), decode_tuple(cur)?)
                }
                tag::TUPLE_OLD => {
                    let old = OldTuple::Full(decode_tuple(cur)?);
                    expect_byte(cur, tag::TUPLE_NEW, "update tuple")?;
                    (Some(old), decode_tuple(cur)?)
                }
                tag::TUPLE_NEW => (None, decode_tuple(cur)?),
                found => {
                    return Err(cur.error_at(
                        at,
                        DecodeErrorKind::UnknownTag { field: "update tuple", found },
                    ));
                }
            };
            cur.finish()?;
            return Ok(LogicalMessage::Update(Update { xid, rel_id, old, new }));
        }
        tag::DELETE => {
            let xid = xid(cur)?;
            let rel_id = cur.u32("relation id")?;
            let at = cur.offset();
            let old = match cur.u8("delete tuple")? {
                tag::TUPLE_KEY => OldTuple::Key(decode_tuple(cur)?),
                tag::TUPLE_OLD => OldTuple::Full(decode_tuple(cur)?),
                found => {
                    return Err(cur.error_at(
                        at,
                        DecodeErrorKind::UnknownTag { field: "delete tuple", found },
                    ));
                }
            };
            cur.finish()?;
            return Ok(LogicalMessage::Delete(Delete { xid, rel_id, old }));
        }
        tag::BEGIN => {
            ctx.expect_stream(false, cur)?;
            LogicalMessage::Begin(Begin {
                final_lsn: lsn(cur, "final LSN")?,
                commit_time: ts(cur, "commit time")?,
                xid: cur.u32("xid")?,
            })
        }
        tag::COMMIT => {
            ctx.expect_stream(false, cur)?;
            LogicalMessage::Commit(Commit {
                flags: cur.u8("flags")?,
                commit_lsn: lsn(cur, "commit LSN")?,
                end_lsn: lsn(cur, "end LSN")?,
                commit_time: ts(cur, "commit time")?,
            })
        }
        tag::ORIGIN => LogicalMessage::Origin(Origin {
            commit_lsn: lsn(cur, "origin commit LSN")?,
            name: cur.cstr("origin name")?,
        }),
        tag::RELATION => {
            let xid = xid(cur)?;
            let rel_id = cur.u32("relation id")?;
            let namespace = cur.cstr("namespace")?;
            let name = cur.cstr("relation name")?;
            let at = cur.offset();
            let ri = cur.u8("replica identity")?;
            let replica_identity = ReplicaIdentity::from_byte(ri).ok_or_else(|| {
                cur.error_at(
                    at,
                    DecodeErrorKind::UnknownTag { field: "replica identity", found: ri },
                )
            })?;
            let ncols = cur.len_i16("column count", MIN_RELATION_COLUMN_SIZE)?;
            let mut columns = Vec::with_capacity(ncols);
            for _ in 0..ncols {
                let at = cur.offset();
                let flags = cur.u8("column flags")?;
                if flags & !1 != 0 {
                    return Err(cur.error_at(
                        at,
                        DecodeErrorKind::InvalidValue {
                            field: "column flags",
                            value: flags.into(),
                        },
                    ));
                }
                columns.push(RelationColumn {
                    is_key: flags & 1 != 0,
                    name: cur.cstr("column name")?,
                    type_oid: cur.u32("column type oid")?,
                    type_modifier: cur.i32("column type modifier")?,
                });
            }
            LogicalMessage::Relation(Relation {
                xid,
                rel_id,
                namespace,
                name,
                replica_identity,
                columns,
            })
        }
        tag::TYPE => LogicalMessage::Type(TypeInfo {
            xid: xid(cur)?,
            type_oid: cur.u32("type oid")?,
            namespace: cur.cstr("type namespace")?,
            name: cur.cstr("type name")?,
        }),
        tag::TRUNCATE => {
            let xid = xid(cur)?;
            let nrels = cur.len_i32("relation count", 0)?;
            let at = cur.offset();
            let options = cur.u8("truncate options")?;
            if options & !3 != 0 {
                return Err(cur.error_at(
                    at,
                    DecodeErrorKind::InvalidValue {
                        field: "truncate options",
                        value: options.into(),
                    },
                ));
            }
            // The count was read before the options byte; check it against what is left.
            if nrels.checked_mul(4).is_none_or(|n| n > cur.remaining()) {
                return Err(cur.error_at(
                    at - 4,
                    DecodeErrorKind::InvalidLength {
                        field: "relation count",
                        value: i64::try_from(nrels).unwrap_or(i64::MAX),
                    },
                ));
            }
            let mut rel_ids = Vec::with_capacity(nrels);
            for _ in 0..nrels {
                rel_ids.push(cur.u32("relation id")?);
            }
            LogicalMessage::Truncate(Truncate {
                xid,
                cascade: options & 1 != 0,
                restart_identity: options & 2 != 0,
                rel_ids,
            })
        }
        tag::MESSAGE => {
            let xid = xid(cur)?;
            let at = cur.offset();
            let flags = cur.u8("message flags")?;
            if flags & !1 != 0 {
                return Err(cur.error_at(
                    at,
                    DecodeErrorKind::InvalidValue { field: "message flags", value: flags.into() },
                ));
            }
            let lsn = lsn(cur, "message LSN")?;
            let prefix = cur.cstr("message prefix")?;
            let len = cur.len_i32("message content length", 1)?;
            LogicalMessage::Message(DecodingMessage {
                xid,
                transactional: flags & 1 != 0,
                lsn,
                prefix,
                content: cur.bytes("message content", len)?,
            })
        }
        tag::STREAM_START => {
            ctx.require(2, cur)?;
            ctx.expect_stream(false, cur)?;
            let xid = cur.u32("xid")?;
            let at = cur.offset();
            let first_segment = match cur.u8("first segment")? {
                0 => false,
                1 => true,
                v => {
                    return Err(cur.error_at(
                        at,
                        DecodeErrorKind::InvalidValue { field: "first segment", value: v.into() },
                    ));
                }
            };
            LogicalMessage::StreamStart(StreamStart { xid, first_segment })
        }
        tag::STREAM_STOP => {
            ctx.require(2, cur)?;
            ctx.expect_stream(true, cur)?;
            LogicalMessage::StreamStop
        }
        tag::STREAM_COMMIT => {
            ctx.require(2, cur)?;
            ctx.expect_stream(false, cur)?;
            LogicalMessage::StreamCommit(StreamCommit {
                xid: cur.u32("xid")?,
                flags: cur.u8("flags")?,
                commit_lsn: lsn(cur, "commit LSN")?,
                end_lsn: lsn(cur, "end LSN")?,
                commit_time: ts(cur, "commit time")?,
            })
        }
        tag::STREAM_ABORT => {
            ctx.require(2, cur)?;
            ctx.expect_stream(false, cur)?;
            let xid = cur.u32("xid")?;
            let subxid = cur.u32("subtransaction xid")?;
            let (abort_lsn, abort_time) = if ctx.abort_has_lsn() {
                (Some(lsn(cur, "abort LSN")?), Some(ts(cur, "abort time")?))
            } else {
                (None, None)
            };
            LogicalMessage::StreamAbort(StreamAbort { xid, subxid, abort_lsn, abort_time })
        }
        tag::BEGIN_PREPARE => {
            ctx.require(3, cur)?;
            ctx.expect_stream(false, cur)?;
            LogicalMessage::BeginPrepare(BeginPrepare {
                prepare_lsn: lsn(cur, "prepare LSN")?,
                end_lsn: lsn(cur, "end LSN")?,
                prepare_time: ts(cur, "prepare time")?,
                xid: cur.u32("xid")?,
                gid: cur.cstr("gid")?,
            })
        }
        tag::PREPARE | tag::STREAM_PREPARE => {
            ctx.require(3, cur)?;
            ctx.expect_stream(false, cur)?;
            let p = decode_prepare(cur)?;
            if tag == tag::PREPARE {
                LogicalMessage::Prepare(p)
            } else {
                LogicalMessage::StreamPrepare(p)
            }
        }
        tag::COMMIT_PREPARED => {
            ctx.require(3, cur)?;
            ctx.expect_stream(false, cur)?;
            LogicalMessage::CommitPrepared(CommitPrepared {
                flags: cur.u8("flags")?,
                commit_lsn: lsn(cur, "commit LSN")?,
                end_lsn: lsn(cur, "end LSN")?,
                commit_time: ts(cur, "commit time")?,
                xid: cur.u32("xid")?,
                gid: cur.cstr("gid")?,
            })
        }
        tag::ROLLBACK_PREPARED => {
            ctx.require(3, cur)?;
            ctx.expect_stream(false, cur)?;
            LogicalMessage::RollbackPrepared(RollbackPrepared {
                flags: cur.u8("flags")?,
                prepare_end_lsn: lsn(cur, "prepare end LSN")?,
                rollback_end_lsn: lsn(cur, "rollback end LSN")?,
                prepare_time: ts(cur, "prepare time")?,
                rollback_time: ts(cur, "rollback time")?,
                xid: cur.u32("xid")?,
                gid: cur.cstr("gid")?,
            })
        }
        found => {
            return Err(cur.error_at(0, DecodeErrorKind::UnknownTag { field: "message", found }));
        }
    };
    cur.finish()?;
    Ok(msg)
}

fn decode_prepare(cur: &mut Cursor) -> Result<Prepare, DecodeError> {
    Ok(Prepare {
        flags: cur.u8("flags")?,
        prepare_lsn: lsn(cur, "prepare LSN")?,
        end_lsn: lsn(cur, "end LSN")?,
        prepare_time: ts(cur, "prepare time")?,
        xid: cur.u32("xid")?,
        gid: cur.cstr("gid")?,
    })
}

#[inline]
fn lsn(cur: &mut Cursor, field: &'static str) -> Result<Lsn, DecodeError> {
    cur.u64(field).map(Lsn)
}

#[inline]
fn ts(cur: &mut Cursor, field: &'static str) -> Result<PgTimestamp, DecodeError> {
    cur.i64(field).map(PgTimestamp)
}

#[inline]
fn expect_byte(cur: &mut Cursor, want: u8, field: &'static str) -> Result<(), DecodeError> {
    let at = cur.offset();
    match cur.u8(field)? {
        b if b == want => Ok(()),
        found => Err(cur.error_at(at, DecodeErrorKind::UnknownTag { field, found })),
    }
}

/// Decodes a TupleData block: Int16 count, then one kind byte (+ value) per column.
///
/// Checks every column's kind and length, then keeps the block as one slice: no
/// per-column objects (the [`Tuple`] walks the checked bytes when read).
#[inline]
fn decode_tuple(cur: &mut Cursor) -> Result<Tuple, DecodeError> {
    let start = cur.offset();
    let ncols = cur.len_i16("tuple column count", MIN_COLUMN_SIZE)?;
    match scan_columns(cur.rest_slice(), ncols) {
        Some(len) => cur.skip("tuple data", len)?,
        None => return Err(tuple_error(cur, ncols)),
    }
    Ok(Tuple::from_validated(cur.since(start)))
}

/// The length of `ncols` well-formed column entries at the start of `buf`, or `None`
/// if they are not (then [`tuple_error`] says why). The hot loop: plain slice reads.
#[inline]
fn scan_columns(buf: &[u8], ncols: usize) -> Option<usize> {
    let mut pos = 0usize;
    for _ in 0..ncols {
        match KIND_CLASS[usize::from(*buf.get(pos)?)] {
            KIND_VALUE => {
                let len = buf.get(pos + 1..pos + 5)?;
                let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
                pos = (pos + 5).checked_add(usize::try_from(len).ok()?)?;
            }
            KIND_NO_VALUE => pos += 1,
            _ => return None,
        }
    }
    (pos <= buf.len()).then_some(pos)
}

/// The error of column entries [`scan_columns`] refused, with its field and offset.
#[cold]
#[inline(never)]
fn tuple_error(cur: &mut Cursor, ncols: usize) -> DecodeError {
    match check_columns(cur, ncols) {
        Err(e) => e,
        // Unreachable: the two checks agree (tested); still an error, not a panic.
        Ok(()) => cur.error(DecodeErrorKind::InvalidValue { field: "tuple data", value: 0 }),
    }
}

/// Reads `ncols` column entries field by field: the slow twin of [`scan_columns`]
/// that names the failing field.
fn check_columns(cur: &mut Cursor, ncols: usize) -> Result<(), DecodeError> {
    for _ in 0..ncols {
        let at = cur.offset();
        match cur.u8("column kind")? {
            tag::COLUMN_TEXT | tag::COLUMN_BINARY => {
                let len = cur.len_i32("column value length", 1)?;
                cur.skip("column value", len)?;
            }
            tag::COLUMN_NULL | tag::COLUMN_UNCHANGED_TOAST => {}
            found => {
                let kind = DecodeErrorKind::UnknownTag { field: "column kind", found };
                return Err(cur.error_at(at, kind));
            }
        }
    }
    Ok(())
}

/// A pgoutput decoder that keeps the one piece of state the format needs: whether
/// it is inside a Stream Start/Stop block, and for which transaction.
///
/// Inside such a block, change messages (Relation, Type, Insert, Update, Delete,
/// Truncate, Message) carry an extra xid. [`decode`](Self::decode) enters the block
/// on Stream Start and leaves it on Stream Stop; [`streaming_xid`](Self::streaming_xid)
/// shows the state. A message that fails to decode leaves the state unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoder {
    proto_version: u32,
    parallel_streaming: bool,
    streaming_xid: Option<u32>,
}

impl Decoder {
    /// A decoder for the negotiated `proto_version` (1 to 4), outside any stream.
    pub fn new(proto_version: u32) -> Self {
        Self { proto_version, parallel_streaming: false, streaming_xid: None }
    }

    /// Sets whether `streaming = parallel` was requested, which with protocol 4
    /// adds the abort LSN and time to Stream Abort.
    #[must_use]
    pub fn with_parallel_streaming(mut self, parallel: bool) -> Self {
        self.parallel_streaming = parallel;
        self
    }

    /// The protocol version this decoder was made for.
    pub fn proto_version(&self) -> u32 {
        self.proto_version
    }

    /// The xid of the Stream Start block the decoder is in, if any.
    pub fn streaming_xid(&self) -> Option<u32> {
        self.streaming_xid
    }

    /// The context the next message will be decoded with.
    pub fn context(&self) -> DecodeContext {
        DecodeContext {
            proto_version: self.proto_version,
            in_stream: self.streaming_xid.is_some(),
            parallel_streaming: self.parallel_streaming,
        }
    }

    /// Decodes one pgoutput message and updates the stream state.
    ///
    /// # Errors
    /// As [`LogicalMessage::decode`]; on error the state does not change.
    pub fn decode(&mut self, data: Bytes) -> Result<LogicalMessage, DecodeError> {
        let res = LogicalMessage::decode(data, &self.context());
        match &res {
            Ok(LogicalMessage::StreamStart(s)) => self.streaming_xid = Some(s.xid),
            Ok(LogicalMessage::StreamStop) => self.streaming_xid = None,
            _ => {}
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tuple::Column;

    fn ctx(proto_version: u32, in_stream: bool) -> DecodeContext {
        DecodeContext { proto_version, in_stream, parallel_streaming: false }
    }

    fn decode(bytes: &'static [u8], c: DecodeContext) -> Result<LogicalMessage, DecodeError> {
        LogicalMessage::decode(Bytes::from_static(bytes), &c)
    }

    #[test]
    fn insert_with_all_column_kinds() {
        let msg =
            decode(b"I\0\0\x40\x01N\0\x04nut\0\0\0\x02hib\0\0\0\x01\xff", ctx(1, false)).unwrap();
        let LogicalMessage::Insert(i) = msg else { panic!("{msg:?}") };
        assert_eq!(i.rel_id, 0x4001);
        assert_eq!(i.xid, None);
        assert_eq!(
            i.new.iter().collect::<Vec<_>>(),
            [Column::Null, Column::UnchangedToast, Column::Text(b"hi"), Column::Binary(b"\xff")]
        );
        assert_eq!(&i.new.raw()[..], b"\0\x04nut\0\0\0\x02hib\0\0\0\x01\xff");
    }

    #[test]
    fn streamed_insert_carries_xid() {
        let msg = decode(b"I\0\0\0\x07\0\0\x40\x01N\0\0", ctx(2, true)).unwrap();
        assert_eq!(msg.stream_xid(), Some(7));
        // Without the stream state the xid is taken as the relation id and the
        // tuple marker is wrong.
        let e = decode(b"I\0\0\0\x07\0\0\x40\x01N\0\0", ctx(2, false)).unwrap_err();
        assert_eq!(e.kind(), &DecodeErrorKind::UnknownTag { field: "insert tuple", found: 0 });
        assert_eq!((e.offset(), e.tag()), (5, Some(b'I')));
    }

    #[test]
    fn update_and_delete_old_tuples() {
        let msg =
            decode(b"U\0\0\0\x01K\0\x01t\0\0\0\x011N\0\x01t\0\0\0\x012", ctx(1, false)).unwrap();
        let LogicalMessage::Update(u) = msg else { panic!() };
        assert!(matches!(&u.old, Some(OldTuple::Key(t)) if t.get(0) == Some(Column::Text(b"1"))));
        let msg = decode(b"U\0\0\0\x01O\0\0N\0\0", ctx(1, false)).unwrap();
        assert!(matches!(msg, LogicalMessage::Update(Update { old: Some(OldTuple::Full(_)), .. })));
        let msg = decode(b"D\0\0\0\x01O\0\x01n", ctx(1, false)).unwrap();
        assert!(matches!(msg, LogicalMessage::Delete(Delete { old: OldTuple::Full(_), .. })));
        let e = decode(b"D\0\0\0\x01N\0\0", ctx(1, false)).unwrap_err();
        assert_eq!(e.kind(), &DecodeErrorKind::UnknownTag { field: "delete tuple", found: b'N' });
        assert_eq!(e.offset(), 5);
        let e = decode(b"U\0\0\0\x01K\0\0K\0\0", ctx(1, false)).unwrap_err();
        assert_eq!(e.kind(), &DecodeErrorKind::UnknownTag { field: "update tuple", found: b'K' });
    }

    #[test]
    fn malformed_input_gives_typed_errors() {
        let c = ctx(1, false);
        let e = decode(b"", c).unwrap_err();
        assert_eq!((e.kind(), e.offset(), e.tag()), (&DecodeErrorKind::Empty, 0, None));

        let e = decode(b"Z", c).unwrap_err();
        assert_eq!(e.kind(), &DecodeErrorKind::UnknownTag { field: "message", found: b'Z' });
        assert_eq!(e.tag(), Some(b'Z'));

        // Negative value length.
        let e = decode(b"I\0\0\0\x01N\0\x01t\xff\xff\xff\xfe", c).unwrap_err();
        assert_eq!(
            e.kind(),
            &DecodeErrorKind::InvalidLength { field: "column value length", value: -2 }
        );
        assert_eq!(e.offset(), 9);

        // A value length past the end of the input.
        let e = decode(b"I\0\0\0\x01N\0\x01t\x7f\xff\xff\xffab", c).unwrap_err();
        assert!(matches!(e.kind(), DecodeErrorKind::InvalidLength { value: 0x7fff_ffff, .. }));

        // A value length or a column cut off by the end of the input.
        let e = decode(b"I\0\0\0\x01N\0\x02nt\0\0", c).unwrap_err();
        assert_eq!(
            e.kind(),
            &DecodeErrorKind::UnexpectedEof {
                field: "column value length",
                needed: 4,
                remaining: 2
            }
        );
        assert_eq!((e.offset(), e.tag()), (10, Some(b'I')));
        let e = decode(b"I\0\0\0\x01N\0\x02t\0\0\0\x01", c).unwrap_err();
        assert_eq!(
            e.kind(),
            &DecodeErrorKind::InvalidLength { field: "column value length", value: 1 }
        );
        assert_eq!(e.offset(), 9);

        // A huge column count is refused before allocating.
        let e = decode(b"I\0\0\0\x01N\x7f\xffn", c).unwrap_err();
        assert!(matches!(e.kind(), DecodeErrorKind::InvalidLength { value: 32767, .. }));
        let e = decode(b"I\0\0\0\x01N\x80\x00", c).unwrap_err();
        assert!(matches!(e.kind(), DecodeErrorKind::InvalidLength { value: -32768, .. }));

        // Unknown column kind, with its offset.
        let e = decode(b"I\0\0\0\x01N\0\x02nx", c).unwrap_err();
        assert_eq!(e.kind(), &DecodeErrorKind::UnknownTag { field: "column kind", found: b'x' });
        assert_eq!(e.offset(), 9);

        // Trailing bytes.
        let e = decode(b"I\0\0\0\x01N\0\x01n\0", c).unwrap_err();
        assert_eq!(e.kind(), &DecodeErrorKind::TrailingBytes { count: 1 });
        assert_eq!(e.offset(), 9);

        // Truncated fixed fields.
        let e = decode(b"B\0\0\0\0\0\0\0\x01\0\0", c).unwrap_err();
        assert!(matches!(e.kind(), DecodeErrorKind::UnexpectedEof { field: "commit time", .. }));

        // Bad replica identity, relation column flags, truncate options, strings.
        let e = decode(b"R\0\0\0\x01\0t\0x\0\0", c).unwrap_err();
        assert_eq!(
            e.kind(),
            &DecodeErrorKind::UnknownTag { field: "replica identity", found: b'x' }
        );
        let e = decode(b"R\0\0\0\x01\0t\0d\0\x01\x02c\0\0\0\0\x17\xff\xff\xff\xff", c).unwrap_err();
        assert_eq!(e.kind(), &DecodeErrorKind::InvalidValue { field: "column flags", value: 2 });
        let e = decode(b"T\0\0\0\x01\x04\0\0\0\x01", c).unwrap_err();
        assert_eq!(
            e.kind(),
            &DecodeErrorKind::InvalidValue { field: "truncate options", value: 4 }
        );
        let e = decode(b"T\0\0\0\x02\x00\0\0\0\x01", c).unwrap_err();
        assert_eq!(e.kind(), &DecodeErrorKind::InvalidLength { field: "relation count", value: 2 });
        assert_eq!(e.offset(), 1);
        let e = decode(b"O\0\0\0\0\0\0\0\x01abc", c).unwrap_err();
        assert_eq!(e.kind(), &DecodeErrorKind::UnterminatedString { field: "origin name" });
        let e = decode(b"O\0\0\0\0\0\0\0\x01\xc3\x28\0", c).unwrap_err();
        assert_eq!(e.kind(), &DecodeErrorKind::InvalidUtf8 { field: "origin name" });
        let e = decode(b"M\x02\0\0\0\0\0\0\0\x01p\0\0\0\0\0", c).unwrap_err();
        assert_eq!(e.kind(), &DecodeErrorKind::InvalidValue { field: "message flags", value: 2 });
    }

    #[test]
    fn fast_and_slow_column_checks_agree() {
        // Every short byte string over an alphabet of kinds and length bytes.
        const ALPHABET: [u8; 6] = [0, 1, 0xff, b'n', b't', b'x'];
        let mut buf = Vec::new();
        for len in 0..=6u32 {
            for mut code in 0..ALPHABET.len().pow(len) {
                buf.clear();
                for _ in 0..len {
                    buf.push(ALPHABET[code % ALPHABET.len()]);
                    code /= ALPHABET.len();
                }
                for ncols in 0..4 {
                    let fast = scan_columns(&buf, ncols);
                    let mut cur = Cursor::new(Bytes::copy_from_slice(&buf));
                    let slow = check_columns(&mut cur, ncols).map(|()| cur.offset());
                    assert_eq!(fast, slow.ok(), "{buf:?} with {ncols} columns");
                }
            }
        }
    }

    #[test]
    fn protocol_version_and_stream_state_are_enforced() {
        let e = decode(b"S\0\0\0\x05\x01", ctx(1, false)).unwrap_err();
        assert_eq!(
            e.kind(),
            &DecodeErrorKind::UnsupportedByProtocol { proto_version: 1, required: 2 }
        );
        let e = decode(b"P\0", ctx(2, false)).unwrap_err();
        assert_eq!(
            e.kind(),
            &DecodeErrorKind::UnsupportedByProtocol { proto_version: 2, required: 3 }
        );
        let e = decode(b"E", ctx(2, false)).unwrap_err();
        assert_eq!(e.kind(), &DecodeErrorKind::StreamState { in_stream: false });
        let e = decode(b"S\0\0\0\x05\x01", ctx(2, true)).unwrap_err();
        assert_eq!(e.kind(), &DecodeErrorKind::StreamState { in_stream: true });
        let e =
            decode(b"B\0\0\0\0\0\0\0\x01\0\0\0\0\0\0\0\x02\0\0\0\x03", ctx(2, true)).unwrap_err();
        assert_eq!(e.kind(), &DecodeErrorKind::StreamState { in_stream: true });
        let e = decode(b"S\0\0\0\x05\x02", ctx(2, false)).unwrap_err();
        assert_eq!(e.kind(), &DecodeErrorKind::InvalidValue { field: "first segment", value: 2 });
    }

    #[test]
    fn decoder_tracks_stream_blocks_explicitly() {
        let mut d = Decoder::new(2);
        assert_eq!(d.streaming_xid(), None);
        d.decode(Bytes::from_static(b"S\0\0\0\x05\x01")).unwrap();
        assert_eq!(d.streaming_xid(), Some(5));
        assert!(d.context().in_stream);
        let m = d.decode(Bytes::from_static(b"I\0\0\0\x06\0\0\0\x01N\0\0")).unwrap();
        assert_eq!(m.stream_xid(), Some(6));
        // A failed decode leaves the state alone.
        d.decode(Bytes::from_static(b"I\0")).unwrap_err();
        assert_eq!(d.streaming_xid(), Some(5));
        d.decode(Bytes::from_static(b"E")).unwrap();
        assert_eq!(d.streaming_xid(), None);
        let m = d.decode(Bytes::from_static(b"A\0\0\0\x05\0\0\0\x05")).unwrap();
        assert_eq!(
            m,
            LogicalMessage::StreamAbort(StreamAbort {
                xid: 5,
                subxid: 5,
                abort_lsn: None,
                abort_time: None
            })
        );
    }

    #[test]
    fn parallel_stream_abort_has_lsn_and_time() {
        let bytes = b"A\0\0\0\x05\0\0\0\x06\0\0\0\x01\0\0\0\x10\0\0\0\0\0\0\0\x20";
        let mut d = Decoder::new(4).with_parallel_streaming(true);
        let m = d.decode(Bytes::from_static(bytes)).unwrap();
        assert_eq!(
            m,
            LogicalMessage::StreamAbort(StreamAbort {
                xid: 5,
                subxid: 6,
                abort_lsn: Some(Lsn(0x1_0000_0010)),
                abort_time: Some(PgTimestamp(0x20)),
            })
        );
        assert_eq!(&m.to_bytes()[..], &bytes[..]);
        // Protocol 4 without parallel streaming: the short form, so these are trailing.
        let e = Decoder::new(4).decode(Bytes::from_static(bytes)).unwrap_err();
        assert_eq!(e.kind(), &DecodeErrorKind::TrailingBytes { count: 16 });
    }

    #[test]
    fn results_are_no_bigger_than_messages() {
        use std::mem::size_of;
        assert_eq!(size_of::<Result<LogicalMessage, DecodeError>>(), size_of::<LogicalMessage>());
        assert!(size_of::<LogicalMessage>() <= 96, "{}", size_of::<LogicalMessage>());
    }

    #[test]
    fn values_are_zero_copy_slices() {
        let input = Bytes::from(b"I\0\0\0\x01N\0\x01t\0\0\0\x03abc".to_vec());
        let LogicalMessage::Insert(i) =
            LogicalMessage::decode(input.clone(), &ctx(1, false)).unwrap()
        else {
            panic!()
        };
        assert_eq!(i.new.raw().as_ptr(), input[6..].as_ptr());
        let value = i.new.get(0).unwrap().bytes().unwrap();
        assert_eq!(value.as_ptr(), input[13..].as_ptr());
        let value = i.new.value(0).unwrap();
        assert_eq!(value.bytes().unwrap().as_ptr(), input[13..].as_ptr());
    }
}
