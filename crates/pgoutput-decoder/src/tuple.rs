//! Row data: [TupleData](https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html#PROTOCOL-LOGICALREP-MESSAGE-FORMATS-TUPLEDATA).
//!
//! A [`Tuple`] keeps the TupleData block as one zero-copy [`Bytes`] slice of the message
//! and hands out its columns on demand: decoding a row checks every column header and
//! length but builds no per-column objects, so a row costs no allocation and no
//! reference count per value.

use std::fmt;
use std::iter::FusedIterator;

use bytes::{BufMut, Bytes, BytesMut};

use crate::message::tag;

/// One row as sent in a TupleData block: one value per published column, in the
/// column order of the table's [`Relation`](crate::Relation) message.
///
/// Read it with [`iter`](Self::iter) or [`get`](Self::get), which borrow the values
/// as [`Column`]s; [`value`](Self::value) and [`values`](Self::values) give owned
/// [`ColumnValue`]s (zero-copy slices) for values kept beyond the tuple. Build one by
/// decoding, or with [`from_values`](Self::from_values) /
/// [`from_columns`](Self::from_columns), which encode.
///
/// Equality compares the values (the wire form of a row is unique, so this is a byte
/// comparison); `Debug` prints the columns.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Tuple {
    /// The TupleData block as sent: Int16 column count, then one entry per column.
    /// Private and only ever made by the decoder (after checking every header and
    /// length) or by the encoder below, so walking it has no error path; the walk
    /// still stops at anything malformed rather than index out of bounds. The count
    /// is read from here, not kept beside it: a `Tuple` is then one `Bytes` (with its
    /// niche), which keeps an Update and so every `LogicalMessage` within 96 bytes.
    raw: Bytes,
}

/// A TupleData block of no columns.
const EMPTY: &[u8] = &[0, 0];

impl Default for Tuple {
    /// A tuple of no columns.
    fn default() -> Self {
        Self { raw: Bytes::from_static(EMPTY) }
    }
}

impl Tuple {
    /// Wraps a TupleData block the decoder has validated.
    pub(crate) fn from_validated(raw: Bytes) -> Self {
        Self { raw }
    }

    /// A tuple of these column values (encodes them; see
    /// [`from_values`](Self::from_values)).
    ///
    /// # Panics
    /// As [`from_values`](Self::from_values).
    pub fn new(columns: Vec<ColumnValue>) -> Self {
        Self::from_values(columns)
    }

    /// A tuple of these column values, encoded into a new buffer.
    ///
    /// # Panics
    /// If there are more than `i16::MAX` columns or a value is longer than `i32::MAX`
    /// bytes: such a row cannot be represented in the protocol.
    pub fn from_values(values: impl IntoIterator<Item = ColumnValue>) -> Self {
        let mut w = Writer::new();
        for v in values {
            w.push(v.as_column());
        }
        w.finish()
    }

    /// A tuple of these borrowed column values (for instance picked from other tuples),
    /// encoded into a new buffer.
    ///
    /// # Panics
    /// As [`from_values`](Self::from_values).
    pub fn from_columns<'a>(columns: impl IntoIterator<Item = Column<'a>>) -> Self {
        let mut w = Writer::new();
        for c in columns {
            w.push(c);
        }
        w.finish()
    }

    /// The TupleData block as sent: Int16 column count, then per column its kind
    /// byte and, for text and binary values, Int32 length and bytes. A zero-copy slice
    /// of the decoded message; appending it re-encodes the tuple.
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// Number of columns.
    #[inline]
    pub fn len(&self) -> usize {
        self.raw.first_chunk::<2>().map_or(0, |n| usize::from(u16::from_be_bytes(*n)))
    }

    /// Whether there are no columns.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The columns in order, borrowed.
    #[inline]
    pub fn iter(&self) -> Columns<'_> {
        Columns { rest: self.raw.get(EMPTY.len()..).unwrap_or_default(), remaining: self.len() }
    }

    /// Column `index`, borrowed, if there is one. Walks the columns before it: to read
    /// several, [`iter`](Self::iter) once.
    #[inline]
    pub fn get(&self, index: usize) -> Option<Column<'_>> {
        self.iter().nth(index)
    }

    /// Column `index` as an owned value (a zero-copy slice of the message), if there
    /// is one.
    pub fn value(&self, index: usize) -> Option<ColumnValue> {
        self.get(index).map(|c| self.owned(c))
    }

    /// The columns in order as owned values (zero-copy slices of the message; each
    /// costs a reference count, so prefer [`iter`](Self::iter) unless the values must
    /// outlive the tuple).
    pub fn values(&self) -> impl ExactSizeIterator<Item = ColumnValue> + '_ {
        self.iter().map(|c| self.owned(c))
    }

    /// `c`, which borrows from `self.raw`, as a slice of it.
    fn owned(&self, c: Column<'_>) -> ColumnValue {
        match c {
            Column::Null => ColumnValue::Null,
            Column::UnchangedToast => ColumnValue::UnchangedToast,
            Column::Text(b) => ColumnValue::Text(self.raw.slice_ref(b)),
            Column::Binary(b) => ColumnValue::Binary(self.raw.slice_ref(b)),
        }
    }
}

impl fmt::Debug for Tuple {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Tuple ")?;
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> IntoIterator for &'a Tuple {
    type Item = Column<'a>;
    type IntoIter = Columns<'a>;

    fn into_iter(self) -> Columns<'a> {
        self.iter()
    }
}

/// Encodes TupleData: the count is patched in at the end.
struct Writer {
    buf: BytesMut,
    count: usize,
}

impl Writer {
    fn new() -> Self {
        let mut buf = BytesMut::with_capacity(64);
        buf.put_slice(EMPTY);
        Self { buf, count: 0 }
    }

    fn push(&mut self, c: Column<'_>) {
        self.count += 1;
        match c {
            Column::Null => self.buf.put_u8(tag::COLUMN_NULL),
            Column::UnchangedToast => self.buf.put_u8(tag::COLUMN_UNCHANGED_TOAST),
            Column::Text(b) => self.value(tag::COLUMN_TEXT, b),
            Column::Binary(b) => self.value(tag::COLUMN_BINARY, b),
        }
    }

    fn value(&mut self, kind: u8, b: &[u8]) {
        let len = i32::try_from(b.len()).expect("value length exceeds the protocol's Int32");
        self.buf.put_u8(kind);
        self.buf.put_i32(len);
        self.buf.put_slice(b);
    }

    fn finish(mut self) -> Tuple {
        let count = i16::try_from(self.count).expect("column count exceeds the protocol's Int16");
        self.buf[..EMPTY.len()].copy_from_slice(&count.to_be_bytes());
        Tuple { raw: self.buf.freeze() }
    }
}

/// The columns of a [`Tuple`], borrowed; from [`Tuple::iter`].
#[derive(Clone)]
pub struct Columns<'a> {
    /// The column entries not yet read.
    rest: &'a [u8],
    /// Columns not yet read.
    remaining: usize,
}

impl<'a> Iterator for Columns<'a> {
    type Item = Column<'a>;

    #[inline]
    fn next(&mut self) -> Option<Column<'a>> {
        if self.remaining == 0 {
            return None;
        }
        match split_column(self.rest) {
            Some((c, rest)) => {
                self.rest = rest;
                self.remaining -= 1;
                Some(c)
            }
            None => {
                // Unreachable for a validated tuple; end instead of panicking.
                self.remaining = 0;
                None
            }
        }
    }

    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for Columns<'_> {}

impl FusedIterator for Columns<'_> {}

impl fmt::Debug for Columns<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.clone()).finish()
    }
}

/// Class of each byte as a TupleData column kind: [`KIND_UNKNOWN`], [`KIND_NO_VALUE`]
/// (`n`, `u`) or [`KIND_VALUE`] (`t`, `b`: length and bytes follow). Looked up rather
/// than matched: a four-way `match` on the kind compiles to a jump table whose indirect
/// branch is often mispredicted on rows that mix NULLs and values.
pub(crate) static KIND_CLASS: [u8; 256] = {
    let mut t = [KIND_UNKNOWN; 256];
    t[tag::COLUMN_NULL as usize] = KIND_NO_VALUE;
    t[tag::COLUMN_UNCHANGED_TOAST as usize] = KIND_NO_VALUE;
    t[tag::COLUMN_TEXT as usize] = KIND_VALUE;
    t[tag::COLUMN_BINARY as usize] = KIND_VALUE;
    t
};
/// See [`KIND_CLASS`].
pub(crate) const KIND_UNKNOWN: u8 = 0;
/// See [`KIND_CLASS`].
pub(crate) const KIND_NO_VALUE: u8 = 1;
/// See [`KIND_CLASS`].
pub(crate) const KIND_VALUE: u8 = 2;

/// The first column entry of `buf` and what follows it; `None` if it is malformed.
#[inline]
fn split_column(buf: &[u8]) -> Option<(Column<'_>, &[u8])> {
    let (&kind, rest) = buf.split_first()?;
    match KIND_CLASS[usize::from(kind)] {
        KIND_VALUE => {
            let (len, rest) = rest.split_first_chunk::<4>()?;
            let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
            let (value, rest) = rest.split_at_checked(len)?;
            let c =
                if kind == tag::COLUMN_TEXT { Column::Text(value) } else { Column::Binary(value) };
            Some((c, rest))
        }
        KIND_NO_VALUE => {
            let c = if kind == tag::COLUMN_NULL { Column::Null } else { Column::UnchangedToast };
            Some((c, rest))
        }
        _ => None,
    }
}

/// One column value of a [`Tuple`], borrowed from it: no copy, no reference count.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum Column<'a> {
    /// `n`: SQL NULL.
    Null,
    /// `u`: an unchanged out-of-line (TOASTed) value that the server did not send.
    /// It is *not* NULL: the old value stays.
    UnchangedToast,
    /// `t`: the value in text format (client encoding, no NUL terminator).
    Text(&'a [u8]),
    /// `b`: the value in binary (send/recv) format; sent only with `binary = true`
    /// for types that have a send function.
    Binary(&'a [u8]),
}

impl<'a> Column<'a> {
    /// Whether this is [`Column::Null`].
    #[inline]
    pub fn is_null(self) -> bool {
        matches!(self, Self::Null)
    }

    /// Whether this is [`Column::UnchangedToast`].
    #[inline]
    pub fn is_unchanged_toast(self) -> bool {
        matches!(self, Self::UnchangedToast)
    }

    /// The raw bytes of a text or binary value.
    #[inline]
    pub fn bytes(self) -> Option<&'a [u8]> {
        match self {
            Self::Text(b) | Self::Binary(b) => Some(b),
            Self::Null | Self::UnchangedToast => None,
        }
    }

    /// A text value as `&str`, if it is text and valid UTF-8.
    pub fn as_str(self) -> Option<&'a str> {
        match self {
            Self::Text(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// An owned copy of the value. This copies the bytes; [`Tuple::value`] gives the
    /// same value as a zero-copy slice.
    pub fn to_value(self) -> ColumnValue {
        match self {
            Self::Null => ColumnValue::Null,
            Self::UnchangedToast => ColumnValue::UnchangedToast,
            Self::Text(b) => ColumnValue::Text(Bytes::copy_from_slice(b)),
            Self::Binary(b) => ColumnValue::Binary(Bytes::copy_from_slice(b)),
        }
    }
}

impl fmt::Debug for Column<'_> {
    /// As [`ColumnValue`]'s: `Text(b"...")` with non-printable bytes escaped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, b) = match self {
            Self::Null => return f.write_str("Null"),
            Self::UnchangedToast => return f.write_str("UnchangedToast"),
            Self::Text(b) => ("Text", b),
            Self::Binary(b) => ("Binary", b),
        };
        write!(f, "{name}(b\"{}\")", b.escape_ascii())
    }
}

impl PartialEq<ColumnValue> for Column<'_> {
    fn eq(&self, other: &ColumnValue) -> bool {
        *self == other.as_column()
    }
}

impl PartialEq<Column<'_>> for ColumnValue {
    fn eq(&self, other: &Column<'_>) -> bool {
        self.as_column() == *other
    }
}

/// One column value of a [`Tuple`], owned: the byte payloads are zero-copy slices of
/// the decoded message. For values kept beyond the tuple; see [`Tuple::value`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ColumnValue {
    /// `n`: SQL NULL.
    Null,
    /// `u`: an unchanged out-of-line (TOASTed) value that the server did not send.
    /// It is *not* NULL: the old value stays.
    UnchangedToast,
    /// `t`: the value in text format (client encoding, no NUL terminator).
    Text(Bytes),
    /// `b`: the value in binary (send/recv) format; sent only with `binary = true`
    /// for types that have a send function.
    Binary(Bytes),
}

impl ColumnValue {
    /// Whether this is [`ColumnValue::Null`].
    pub fn is_null(&self) -> bool {
        matches!(self, Self::Null)
    }

    /// Whether this is [`ColumnValue::UnchangedToast`].
    pub fn is_unchanged_toast(&self) -> bool {
        matches!(self, Self::UnchangedToast)
    }

    /// The raw bytes of a text or binary value.
    pub fn bytes(&self) -> Option<&Bytes> {
        match self {
            Self::Text(b) | Self::Binary(b) => Some(b),
            Self::Null | Self::UnchangedToast => None,
        }
    }

    /// A text value as `&str`, if it is text and valid UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        self.as_column().as_str()
    }

    /// The value borrowed as a [`Column`].
    pub fn as_column(&self) -> Column<'_> {
        match self {
            Self::Null => Column::Null,
            Self::UnchangedToast => Column::UnchangedToast,
            Self::Text(b) => Column::Text(b),
            Self::Binary(b) => Column::Binary(b),
        }
    }
}

/// The old row sent with an [`Update`](crate::Update) or [`Delete`](crate::Delete).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OldTuple {
    /// `K`: the replica identity key columns (other columns are sent as NULL).
    Key(Tuple),
    /// `O`: the whole old row (`REPLICA IDENTITY FULL`).
    Full(Tuple),
}

impl OldTuple {
    /// The row, whichever kind it is.
    pub fn tuple(&self) -> &Tuple {
        match self {
            Self::Key(t) | Self::Full(t) => t,
        }
    }

    /// Whether only the key columns were sent.
    pub fn is_key(&self) -> bool {
        matches!(self, Self::Key(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &'static str) -> ColumnValue {
        ColumnValue::Text(Bytes::from_static(s.as_bytes()))
    }

    #[test]
    fn builds_reads_and_compares_by_value() {
        let values = vec![
            ColumnValue::Null,
            ColumnValue::UnchangedToast,
            text("hi"),
            ColumnValue::Binary(Bytes::from_static(b"\0\xff")),
            text(""),
        ];
        let t = Tuple::new(values.clone());
        assert_eq!(t.len(), 5);
        assert!(!t.is_empty());
        assert_eq!(&t.raw()[..], b"\0\x05nut\0\0\0\x02hib\0\0\0\x02\0\xfft\0\0\0\0");
        assert_eq!(t.values().collect::<Vec<_>>(), values);
        let cols: Vec<Column<'_>> = t.iter().collect();
        assert_eq!(
            cols,
            [
                Column::Null,
                Column::UnchangedToast,
                Column::Text(b"hi"),
                Column::Binary(b"\0\xff"),
                Column::Text(b"")
            ]
        );
        assert_eq!(t.iter().len(), 5);
        assert_eq!(t.get(2).and_then(Column::as_str), Some("hi"));
        assert_eq!(t.get(3).and_then(Column::bytes), Some(&b"\0\xff"[..]));
        assert!(t.get(0).is_some_and(Column::is_null));
        assert!(t.get(1).is_some_and(Column::is_unchanged_toast));
        assert_eq!(t.get(5), None);
        assert_eq!(t.value(4), Some(text("")));
        assert_eq!(t.value(9), None);
        assert_eq!(t, Tuple::from_columns(t.iter()));
        assert_ne!(t, Tuple::new(values[..4].to_vec()));
        assert_eq!(Tuple::default(), Tuple::new(vec![]));
        assert!(Tuple::default().is_empty());
        assert_eq!((&t).into_iter().count(), 5);
        // Columns and owned values compare with each other.
        assert_eq!(t.get(2).unwrap(), text("hi"));
        assert_eq!(text("hi"), t.get(2).unwrap());
        assert_eq!(t.get(2).unwrap().to_value(), text("hi"));
    }

    #[test]
    fn owned_values_are_slices_of_the_tuple() {
        let t = Tuple::new(vec![text("abc")]);
        let v = t.value(0).unwrap();
        assert_eq!(v.bytes().unwrap().as_ptr(), t.raw()[7..].as_ptr());
    }

    #[test]
    fn debug_prints_columns() {
        let t =
            Tuple::new(vec![text("a\"b"), ColumnValue::Null, ColumnValue::Binary(vec![0].into())]);
        assert_eq!(format!("{t:?}"), r#"Tuple [Text(b"a\"b"), Null, Binary(b"\x00")]"#);
        assert_eq!(format!("{:?}", t.iter()), r#"[Text(b"a\"b"), Null, Binary(b"\x00")]"#);
    }

    #[test]
    fn malformed_raw_bytes_end_the_walk_without_panicking() {
        // Never produced by the decoder; the walk must still stop cleanly.
        for raw in [
            &b""[..],
            b"\0",
            b"\0\x02n",
            b"\0\x01t\0\0",
            b"\0\x01t\0\0\0\x05ab",
            b"\0\x01t\xff\xff\xff\xffab",
            b"\0\x02xn",
            b"\xff\xffn",
        ] {
            let t = Tuple::from_validated(Bytes::from_static(raw));
            let n = t.iter().count();
            assert!(n <= t.len(), "{raw:?}");
            let mut it = t.iter();
            while it.next().is_some() {}
            assert_eq!(it.len(), 0);
            assert_eq!(t.values().count(), n);
            let _ = format!("{t:?}");
            let _ = t.get(1);
        }
    }
}
