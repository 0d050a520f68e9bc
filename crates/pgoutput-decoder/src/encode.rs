//! Encoding pgoutput messages, the inverse of [`LogicalMessage::decode`]: for
//! tests, a fake walsender and recorded streams.

use bytes::{BufMut, Bytes, BytesMut};

use crate::message::*;
use crate::tuple::{OldTuple, Tuple};

impl LogicalMessage {
    /// Appends the wire form of this message (tag included) to `buf`.
    ///
    /// Optional xids are written iff they are `Some`, so a message encoded with an
    /// xid must be decoded with `in_stream = true`. For Stream Abort, the abort
    /// time is written iff `abort_lsn` is `Some` (0 if `abort_time` is `None`).
    ///
    /// # Panics
    /// If a string contains a NUL byte or a count or length does not fit its wire
    /// field (more than `i16::MAX` columns, more than `i32::MAX` bytes or
    /// relations): such a message cannot be represented in the protocol.
    pub fn encode(&self, buf: &mut BytesMut) {
        buf.put_u8(self.tag());
        match self {
            Self::Begin(m) => {
                buf.put_u64(m.final_lsn.0);
                buf.put_i64(m.commit_time.0);
                buf.put_u32(m.xid);
            }
            Self::Commit(m) => {
                buf.put_u8(m.flags);
                buf.put_u64(m.commit_lsn.0);
                buf.put_u64(m.end_lsn.0);
                buf.put_i64(m.commit_time.0);
            }
            Self::Origin(m) => {
                buf.put_u64(m.commit_lsn.0);
                put_cstr(buf, &m.name);
            }
            Self::Relation(m) => {
                put_xid(buf, m.xid);
                buf.put_u32(m.rel_id);
                put_cstr(buf, &m.namespace);
                put_cstr(buf, &m.name);
                buf.put_u8(m.replica_identity.as_byte());
                buf.put_i16(count_i16(m.columns.len()));
                for c in &m.columns {
                    buf.put_u8(u8::from(c.is_key));
                    put_cstr(buf, &c.name);
                    buf.put_u32(c.type_oid);
                    buf.put_i32(c.type_modifier);
                }
            }
            Self::Type(m) => {
                put_xid(buf, m.xid);
                buf.put_u32(m.type_oid);
                put_cstr(buf, &m.namespace);
                put_cstr(buf, &m.name);
            }
            Self::Insert(m) => {
                put_xid(buf, m.xid);
                buf.put_u32(m.rel_id);
                buf.put_u8(tag::TUPLE_NEW);
                put_tuple(buf, &m.new);
            }
            Self::Update(m) => {
                put_xid(buf, m.xid);
                buf.put_u32(m.rel_id);
                if let Some(old) = &m.old {
                    put_old(buf, old);
                }
                buf.put_u8(tag::TUPLE_NEW);
                put_tuple(buf, &m.new);
            }
            Self::Delete(m) => {
                put_xid(buf, m.xid);
                buf.put_u32(m.rel_id);
                put_old(buf, &m.old);
            }
            Self::Truncate(m) => {
                put_xid(buf, m.xid);
                buf.put_i32(len_i32(m.rel_ids.len()));
                buf.put_u8(u8::from(m.cascade) | (u8::from(m.restart_identity) << 1));
                for id in &m.rel_ids {
                    buf.put_u32(*id);
                }
            }
            Self::Message(m) => {
                put_xid(buf, m.xid);
                buf.put_u8(u8::from(m.transactional));
                buf.put_u64(m.lsn.0);
                put_cstr(buf, &m.prefix);
                buf.put_i32(len_i32(m.content.len()));
                buf.put_slice(&m.content);
            }
            Self::StreamStart(m) => {
                buf.put_u32(m.xid);
                buf.put_u8(u8::from(m.first_segment));
            }
            Self::StreamStop => {}
            Self::StreamCommit(m) => {
                buf.put_u32(m.xid);
                buf.put_u8(m.flags);
                buf.put_u64(m.commit_lsn.0);
                buf.put_u64(m.end_lsn.0);
                buf.put_i64(m.commit_time.0);
            }
            Self::StreamAbort(m) => {
                buf.put_u32(m.xid);
                buf.put_u32(m.subxid);
                if let Some(lsn) = m.abort_lsn {
                    buf.put_u64(lsn.0);
                    buf.put_i64(m.abort_time.map_or(0, |t| t.0));
                }
            }
            Self::BeginPrepare(m) => {
                buf.put_u64(m.prepare_lsn.0);
                buf.put_u64(m.end_lsn.0);
                buf.put_i64(m.prepare_time.0);
                buf.put_u32(m.xid);
                put_cstr(buf, &m.gid);
            }
            Self::Prepare(m) | Self::StreamPrepare(m) => {
                buf.put_u8(m.flags);
                buf.put_u64(m.prepare_lsn.0);
                buf.put_u64(m.end_lsn.0);
                buf.put_i64(m.prepare_time.0);
                buf.put_u32(m.xid);
                put_cstr(buf, &m.gid);
            }
            Self::CommitPrepared(m) => {
                buf.put_u8(m.flags);
                buf.put_u64(m.commit_lsn.0);
                buf.put_u64(m.end_lsn.0);
                buf.put_i64(m.commit_time.0);
                buf.put_u32(m.xid);
                put_cstr(buf, &m.gid);
            }
            Self::RollbackPrepared(m) => {
                buf.put_u8(m.flags);
                buf.put_u64(m.prepare_end_lsn.0);
                buf.put_u64(m.rollback_end_lsn.0);
                buf.put_i64(m.prepare_time.0);
                buf.put_i64(m.rollback_time.0);
                buf.put_u32(m.xid);
                put_cstr(buf, &m.gid);
            }
        }
    }

    /// The wire form as a new buffer; see [`encode`](Self::encode).
    ///
    /// # Panics
    /// As [`encode`](Self::encode).
    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::new();
        self.encode(&mut buf);
        buf.freeze()
    }
}

fn put_xid(buf: &mut BytesMut, xid: Option<u32>) {
    if let Some(xid) = xid {
        buf.put_u32(xid);
    }
}

fn put_cstr(buf: &mut BytesMut, s: &str) {
    assert!(!s.as_bytes().contains(&0), "protocol strings cannot contain NUL: {s:?}");
    buf.put_slice(s.as_bytes());
    buf.put_u8(0);
}

fn count_i16(n: usize) -> i16 {
    i16::try_from(n).expect("column count exceeds the protocol's Int16")
}

fn len_i32(n: usize) -> i32 {
    i32::try_from(n).expect("length exceeds the protocol's Int32")
}

fn put_old(buf: &mut BytesMut, old: &OldTuple) {
    match old {
        OldTuple::Key(t) => {
            buf.put_u8(tag::TUPLE_KEY);
            put_tuple(buf, t);
        }
        OldTuple::Full(t) => {
            buf.put_u8(tag::TUPLE_OLD);
            put_tuple(buf, t);
        }
    }
}

fn put_tuple(buf: &mut BytesMut, t: &Tuple) {
    // Decoded or built by encoding, so the raw block is already valid TupleData.
    buf.put_slice(t.raw());
}
