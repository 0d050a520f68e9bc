//! The CopyData payloads exchanged after `START_REPLICATION`
//! ([protocol docs](https://www.postgresql.org/docs/current/protocol-replication.html#PROTOCOL-REPLICATION-START-REPLICATION)).

use bytes::{BufMut, Bytes, BytesMut};

use crate::cursor::Cursor;
use crate::error::{DecodeError, DecodeErrorKind};
use crate::lsn::Lsn;
use crate::time::PgTimestamp;

/// Tag of [`XLogData`].
const XLOG_DATA: u8 = b'w';
/// Tag of [`PrimaryKeepalive`].
const PRIMARY_KEEPALIVE: u8 = b'k';
/// Tag of [`StandbyStatusUpdate`].
const STANDBY_STATUS_UPDATE: u8 = b'r';

/// A server-to-client CopyData payload of the replication stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicationMessage {
    /// `w`: WAL data, for logical replication one pgoutput message.
    XLogData(XLogData),
    /// `k`: a keepalive, possibly asking for an immediate status update.
    Keepalive(PrimaryKeepalive),
}

impl ReplicationMessage {
    /// Decodes a CopyData payload (starting with its `w`/`k` tag).
    ///
    /// # Errors
    /// [`DecodeError`] for an unknown tag, truncated input or (for keepalives)
    /// trailing bytes.
    pub fn parse(payload: Bytes) -> Result<Self, DecodeError> {
        let mut cur = Cursor::new(payload);
        let tag =
            cur.u8("replication message tag").map_err(|_| cur.error(DecodeErrorKind::Empty))?;
        let with_tag = |e: DecodeError| e.with_tag(tag);
        match tag {
            XLOG_DATA => {
                let wal_start = Lsn(cur.u64("WAL start").map_err(with_tag)?);
                let wal_end = Lsn(cur.u64("WAL end").map_err(with_tag)?);
                let send_time = PgTimestamp(cur.i64("send time").map_err(with_tag)?);
                Ok(Self::XLogData(XLogData { wal_start, wal_end, send_time, data: cur.rest() }))
            }
            PRIMARY_KEEPALIVE => {
                let wal_end = Lsn(cur.u64("WAL end").map_err(with_tag)?);
                let send_time = PgTimestamp(cur.i64("send time").map_err(with_tag)?);
                let reply_requested = cur.u8("reply requested").map_err(with_tag)? != 0;
                cur.finish().map_err(with_tag)?;
                Ok(Self::Keepalive(PrimaryKeepalive { wal_end, send_time, reply_requested }))
            }
            found => Err(cur
                .error_at(0, DecodeErrorKind::UnknownTag { field: "replication message", found })
                .with_tag(found)),
        }
    }

    /// Appends the payload (tag included) to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) {
        match self {
            Self::XLogData(m) => m.encode(buf),
            Self::Keepalive(m) => m.encode(buf),
        }
    }

    /// The payload as a new buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::new();
        self.encode(&mut buf);
        buf.freeze()
    }
}

/// [XLogData](https://www.postgresql.org/docs/current/protocol-replication.html#PROTOCOL-REPLICATION-XLOGDATA) (`w`).
///
/// In logical replication the header LSNs are unreliable: `wal_start` and
/// `wal_end` are 0/0 for Relation and Type messages (and for Begin when Origin
/// follows). Use the LSNs inside the pgoutput messages for progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XLogData {
    /// Starting point of the WAL data in this message.
    pub wal_start: Lsn,
    /// The current end of WAL on the server.
    pub wal_end: Lsn,
    /// Server clock when the message was sent.
    pub send_time: PgTimestamp,
    /// The WAL data: one pgoutput message, a zero-copy slice of the payload.
    pub data: Bytes,
}

impl XLogData {
    /// Wire size of the header after the tag.
    const HEADER_LEN: usize = 24;

    /// Appends the payload (tag included) to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) {
        buf.reserve(1 + Self::HEADER_LEN + self.data.len());
        buf.put_u8(XLOG_DATA);
        buf.put_u64(self.wal_start.0);
        buf.put_u64(self.wal_end.0);
        buf.put_i64(self.send_time.0);
        buf.put_slice(&self.data);
    }
}

/// [Primary keepalive](https://www.postgresql.org/docs/current/protocol-replication.html#PROTOCOL-REPLICATION-PRIMARY-KEEPALIVE-MESSAGE) (`k`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrimaryKeepalive {
    /// The current end of WAL on the server.
    pub wal_end: Lsn,
    /// Server clock when the message was sent.
    pub send_time: PgTimestamp,
    /// The server asks for a status update right away (else it disconnects at
    /// `wal_sender_timeout`). Any non-zero byte counts as true.
    pub reply_requested: bool,
}

impl PrimaryKeepalive {
    /// Appends the payload (tag included) to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) {
        buf.reserve(18);
        buf.put_u8(PRIMARY_KEEPALIVE);
        buf.put_u64(self.wal_end.0);
        buf.put_i64(self.send_time.0);
        buf.put_u8(u8::from(self.reply_requested));
    }
}

/// [Standby status update](https://www.postgresql.org/docs/current/protocol-replication.html#PROTOCOL-REPLICATION-STANDBY-STATUS-UPDATE) (`r`),
/// sent by the client. Each LSN is "last byte + 1"; only `flush_lsn` advances a
/// logical slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StandbyStatusUpdate {
    /// WAL received and written.
    pub write_lsn: Lsn,
    /// WAL durably applied; the slot's `confirmed_flush_lsn` follows this.
    pub flush_lsn: Lsn,
    /// WAL applied.
    pub apply_lsn: Lsn,
    /// Client clock when sent.
    pub send_time: PgTimestamp,
    /// Asks the server to answer with a keepalive right away.
    pub reply_requested: bool,
}

impl StandbyStatusUpdate {
    /// Wire size including the tag.
    pub const LEN: usize = 34;

    /// Appends the payload (tag included) to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) {
        buf.reserve(Self::LEN);
        buf.put_u8(STANDBY_STATUS_UPDATE);
        buf.put_u64(self.write_lsn.0);
        buf.put_u64(self.flush_lsn.0);
        buf.put_u64(self.apply_lsn.0);
        buf.put_i64(self.send_time.0);
        buf.put_u8(u8::from(self.reply_requested));
    }

    /// The payload as a new buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(Self::LEN);
        self.encode(&mut buf);
        buf.freeze()
    }

    /// Decodes a client payload (for a fake walsender).
    ///
    /// # Errors
    /// [`DecodeError`] for another tag, truncated input or trailing bytes.
    pub fn parse(payload: Bytes) -> Result<Self, DecodeError> {
        let mut cur = Cursor::new(payload);
        let tag = cur.u8("status update tag").map_err(|_| cur.error(DecodeErrorKind::Empty))?;
        if tag != STANDBY_STATUS_UPDATE {
            return Err(cur
                .error_at(0, DecodeErrorKind::UnknownTag { field: "standby message", found: tag })
                .with_tag(tag));
        }
        let body = |cur: &mut Cursor| -> Result<Self, DecodeError> {
            let msg = Self {
                write_lsn: Lsn(cur.u64("write LSN")?),
                flush_lsn: Lsn(cur.u64("flush LSN")?),
                apply_lsn: Lsn(cur.u64("apply LSN")?),
                send_time: PgTimestamp(cur.i64("send time")?),
                reply_requested: cur.u8("reply requested")? != 0,
            };
            cur.finish()?;
            Ok(msg)
        };
        body(&mut cur).map_err(|e| e.with_tag(tag))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xlogdata_round_trip_is_zero_copy() {
        let m = XLogData {
            wal_start: Lsn(0x1_0000_0010),
            wal_end: Lsn(0x1_0000_0020),
            send_time: PgTimestamp(12345),
            data: Bytes::from_static(b"E"),
        };
        let mut buf = BytesMut::new();
        m.encode(&mut buf);
        let bytes = buf.freeze();
        assert_eq!(bytes.len(), 26);
        assert_eq!(&bytes[..9], b"w\0\0\0\x01\0\0\0\x10");
        let parsed = ReplicationMessage::parse(bytes.clone()).unwrap();
        let ReplicationMessage::XLogData(x) = &parsed else { panic!("{parsed:?}") };
        assert_eq!(x, &m);
        assert_eq!(x.data.as_ptr(), bytes[25..].as_ptr());
        assert_eq!(parsed.to_bytes(), bytes);
    }

    #[test]
    fn keepalive_round_trip_and_errors() {
        let k =
            PrimaryKeepalive { wal_end: Lsn(7), send_time: PgTimestamp(-5), reply_requested: true };
        let bytes = ReplicationMessage::Keepalive(k).to_bytes();
        assert_eq!(bytes.len(), 18);
        assert_eq!(
            ReplicationMessage::parse(bytes.clone()).unwrap(),
            ReplicationMessage::Keepalive(k)
        );

        let e = ReplicationMessage::parse(bytes.slice(..10)).unwrap_err();
        assert_eq!(e.tag(), Some(b'k'));
        assert_eq!(e.offset(), 9);
        assert!(matches!(e.kind(), DecodeErrorKind::UnexpectedEof { field: "send time", .. }));

        let mut long = BytesMut::from(&bytes[..]);
        long.put_u8(0);
        let e = ReplicationMessage::parse(long.freeze()).unwrap_err();
        assert_eq!(e.kind(), &DecodeErrorKind::TrailingBytes { count: 1 });

        let e = ReplicationMessage::parse(Bytes::from_static(b"h")).unwrap_err();
        assert_eq!(
            e.kind(),
            &DecodeErrorKind::UnknownTag { field: "replication message", found: b'h' }
        );
        let e = ReplicationMessage::parse(Bytes::new()).unwrap_err();
        assert_eq!(e.kind(), &DecodeErrorKind::Empty);
    }

    #[test]
    fn status_update_layout() {
        let s = StandbyStatusUpdate {
            write_lsn: Lsn(1),
            flush_lsn: Lsn(2),
            apply_lsn: Lsn(3),
            send_time: PgTimestamp(4),
            reply_requested: false,
        };
        let b = s.to_bytes();
        let mut want = vec![b'r'];
        for v in [1u64, 2, 3, 4] {
            want.extend_from_slice(&v.to_be_bytes());
        }
        want.push(0);
        assert_eq!(&b[..], &want[..]);
        assert_eq!(StandbyStatusUpdate::parse(b.clone()).unwrap(), s);
        assert!(StandbyStatusUpdate::parse(b.slice(..33)).is_err());
        assert!(StandbyStatusUpdate::parse(Bytes::from_static(b"k")).is_err());
    }
}
