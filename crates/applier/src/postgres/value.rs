//! Values on their way to the target: statement parameters that pass pgoutput's bytes through
//! untouched, and the `COPY` encodings.

use std::error::Error;

use bytes::{BufMut, Bytes, BytesMut};
use pgoutput_decoder::{Column, ColumnValue, Tuple};

use super::table::RowType;
use tokio_postgres::types::{Format, IsNull, ToSql, Type, to_sql_checked};

/// A statement parameter holding a pgoutput value as-is. Text values go in text format (the
/// server parses them with the parameter type's input function), binary values in binary
/// format (they are exactly the type's send format, which its receive function reads). It
/// accepts any parameter type: the statement's own types decide.
#[derive(Debug, Clone)]
pub(crate) enum Param {
    Null,
    Text(Bytes),
    Binary(Bytes),
}

impl Param {
    /// The parameter for a column value (from [`Tuple::values`]: a zero-copy slice, which a
    /// statement in flight must own); `None` for an unchanged TOAST value, which has no value
    /// to send.
    pub(crate) fn from_value(v: ColumnValue) -> Option<Param> {
        match v {
            ColumnValue::Null => Some(Param::Null),
            ColumnValue::Text(b) => Some(Param::Text(b)),
            ColumnValue::Binary(b) => Some(Param::Binary(b)),
            ColumnValue::UnchangedToast => None,
        }
    }
}

impl ToSql for Param {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        match self {
            Param::Null => Ok(IsNull::Yes),
            Param::Text(b) | Param::Binary(b) => {
                out.extend_from_slice(b);
                Ok(IsNull::No)
            }
        }
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    fn encode_format(&self, _ty: &Type) -> Format {
        match self {
            Param::Text(_) => Format::Text,
            Param::Null | Param::Binary(_) => Format::Binary,
        }
    }

    to_sql_checked!();
}

/// The wire format of one value, for grouping rows that can share one `COPY` or array.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ValueFormat {
    Text,
    Binary,
}

impl ValueFormat {
    /// The format a row can be sent in as a whole, if its values agree (NULLs fit either).
    pub(crate) fn of_row(row: &Tuple) -> Option<Option<ValueFormat>> {
        let mut fmt = None;
        for v in row {
            let f = match v {
                Column::Null => continue,
                Column::Text(_) => ValueFormat::Text,
                Column::Binary(_) => ValueFormat::Binary,
                Column::UnchangedToast => return None,
            };
            match fmt {
                None => fmt = Some(f),
                Some(g) if g != f => return None,
                Some(_) => {}
            }
        }
        Some(fmt)
    }
}

/// Header of `COPY ... (FORMAT binary)`: signature, flags, header extension length.
pub(crate) const COPY_BINARY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// Trailer of binary `COPY`: a field count of -1.
pub(crate) const COPY_BINARY_TRAILER: &[u8] = b"\xff\xff";

/// Appends one row in binary `COPY` format. The caller checked that every value is binary or
/// NULL and that the row fits (at most 1600 columns, values under 1 GiB as PostgreSQL allows).
pub(crate) fn copy_binary_row(buf: &mut BytesMut, row: &Tuple) {
    let n = i16::try_from(row.len()).unwrap_or(i16::MAX);
    buf.put_i16(n);
    for v in row {
        match v {
            Column::Binary(b) | Column::Text(b) => {
                buf.put_i32(i32::try_from(b.len()).unwrap_or(i32::MAX));
                buf.put_slice(b);
            }
            Column::Null | Column::UnchangedToast => buf.put_i32(-1),
        }
    }
}

/// Appends one row in text `COPY` format: tab-separated, `\N` for NULL, backslash escapes.
pub(crate) fn copy_text_row(buf: &mut BytesMut, row: &Tuple) {
    for (i, v) in row.iter().enumerate() {
        if i > 0 {
            buf.put_u8(b'\t');
        }
        match v {
            Column::Text(b) | Column::Binary(b) => copy_text_escape(buf, b),
            Column::Null | Column::UnchangedToast => buf.put_slice(b"\\N"),
        }
    }
    buf.put_u8(b'\n');
}

fn copy_text_escape(buf: &mut BytesMut, value: &[u8]) {
    let mut start = 0;
    for (i, &c) in value.iter().enumerate() {
        let esc: &[u8] = match c {
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            _ => continue,
        };
        buf.put_slice(&value[start..i]);
        buf.put_slice(esc);
        start = i + 1;
    }
    buf.put_slice(&value[start..]);
}

/// Builds a one-dimensional array in binary format from values of one format: binary values
/// become elements of `elem_oid` (the target column's type), text values elements of `text`
/// (to be cast in SQL). NULLs are NULL elements.
struct ArrayBuilder {
    buf: BytesMut,
    /// Elements so far.
    len: usize,
    has_null: bool,
}

/// Offsets of the has-nulls flag and the element count in the array header.
const ARRAY_FLAG_AT: usize = 4;
const ARRAY_LEN_AT: usize = 12;

impl ArrayBuilder {
    fn new(elem_oid: u32) -> Self {
        let mut buf = BytesMut::new();
        buf.put_i32(1); // dimensions
        buf.put_i32(0); // has nulls, patched in `finish`
        buf.put_u32(elem_oid);
        buf.put_i32(0); // length, patched in `finish`
        buf.put_i32(1); // lower bound
        ArrayBuilder { buf, len: 0, has_null: false }
    }

    fn push(&mut self, v: Column<'_>) {
        self.len += 1;
        match v {
            Column::Text(b) | Column::Binary(b) => {
                self.buf.put_i32(i32::try_from(b.len()).unwrap_or(i32::MAX));
                self.buf.put_slice(b);
            }
            Column::Null | Column::UnchangedToast => {
                self.has_null = true;
                self.buf.put_i32(-1);
            }
        }
    }

    fn finish(mut self) -> Bytes {
        let n = i32::try_from(self.len).unwrap_or(i32::MAX);
        self.buf[ARRAY_LEN_AT..ARRAY_LEN_AT + 4].copy_from_slice(&n.to_be_bytes());
        if self.has_null {
            self.buf[ARRAY_FLAG_AT..ARRAY_FLAG_AT + 4].copy_from_slice(&1i32.to_be_bytes());
        }
        self.buf.freeze()
    }
}

/// One binary array of a table's row type holding `rows`: per row, the `carried` columns'
/// binary values where the row type has them, NULL in every other attribute (the statement
/// reads only the columns it sets and the key). The caller makes sure those values are
/// binary or NULL.
pub(crate) fn row_type_array<'a>(
    rows: impl IntoIterator<Item = &'a Tuple>,
    row_type: &RowType,
    carried: &[bool],
) -> Bytes {
    let mut array = ArrayBuilder::new(row_type.oid);
    let mut record = BytesMut::new();
    for row in rows {
        let values: Vec<Column<'_>> = row.iter().collect();
        record.clear();
        record.put_i32(i32::try_from(row_type.attrs.len()).unwrap_or(i32::MAX));
        for &(col, oid) in &row_type.attrs {
            record.put_u32(oid);
            match col.filter(|&i| carried.get(i) == Some(&true)).and_then(|i| values.get(i)) {
                Some(Column::Binary(b)) => {
                    record.put_i32(i32::try_from(b.len()).unwrap_or(i32::MAX));
                    record.put_slice(b);
                }
                _ => record.put_i32(-1),
            }
        }
        array.push(Column::Binary(&record));
    }
    array.finish()
}

/// One binary array (see [`ArrayBuilder`]) per picked column `(index, element type oid)` of
/// `rows`, in the order picked. Each row is walked once, whatever the number of columns; a
/// row without a picked column (which the callers rule out) gets a NULL there, so the arrays
/// stay aligned.
pub(crate) fn column_arrays<'a>(
    rows: impl IntoIterator<Item = &'a Tuple>,
    picks: &[(usize, u32)],
) -> Vec<Bytes> {
    let mut arrays: Vec<ArrayBuilder> =
        picks.iter().map(|&(_, oid)| ArrayBuilder::new(oid)).collect();
    // Column index to the arrays it goes into.
    let width = picks.iter().map(|&(i, _)| i + 1).max().unwrap_or(0);
    let mut slots: Vec<Vec<usize>> = vec![Vec::new(); width];
    for (a, &(i, _)) in picks.iter().enumerate() {
        slots[i].push(a);
    }
    for (r, row) in rows.into_iter().enumerate() {
        for (v, slot) in row.iter().zip(&slots) {
            for &a in slot {
                arrays[a].push(v);
            }
        }
        for a in &mut arrays {
            if a.len <= r {
                a.push(Column::Null);
            }
        }
    }
    arrays.into_iter().map(ArrayBuilder::finish).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> ColumnValue {
        ColumnValue::Text(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn row(values: &[ColumnValue]) -> Tuple {
        Tuple::new(values.to_vec())
    }

    #[test]
    fn text_copy_escapes() {
        let mut b = BytesMut::new();
        copy_text_row(&mut b, &row(&[t("a\tb\\c\nd\re"), ColumnValue::Null, t("")]));
        assert_eq!(&b[..], b"a\\tb\\\\c\\nd\\re\t\\N\t\n");
    }

    #[test]
    fn binary_copy_row_layout() {
        let mut b = BytesMut::new();
        copy_binary_row(
            &mut b,
            &row(&[ColumnValue::Binary(Bytes::from_static(&[0, 0, 0, 7])), ColumnValue::Null]),
        );
        assert_eq!(&b[..], &[0, 2, 0, 0, 0, 4, 0, 0, 0, 7, 255, 255, 255, 255]);
        assert_eq!(COPY_BINARY_HEADER.len(), 19);
    }

    #[test]
    fn row_formats() {
        let bin = ColumnValue::Binary(Bytes::from_static(b"x"));
        assert_eq!(ValueFormat::of_row(&row(&[ColumnValue::Null])), Some(None));
        assert_eq!(
            ValueFormat::of_row(&row(&[bin.clone(), ColumnValue::Null])),
            Some(Some(ValueFormat::Binary))
        );
        assert_eq!(ValueFormat::of_row(&row(&[t("1"), t("2")])), Some(Some(ValueFormat::Text)));
        assert_eq!(ValueFormat::of_row(&row(&[t("1"), bin])), None);
        assert_eq!(ValueFormat::of_row(&row(&[ColumnValue::UnchangedToast])), None);
    }

    #[test]
    fn array_layout() {
        let rows = [
            row(&[ColumnValue::Binary(Bytes::from_static(&[0, 0, 0, 1])), t("a")]),
            row(&[ColumnValue::Null, t("b")]),
        ];
        let arrays = column_arrays(&rows, &[(0, 23)]);
        assert_eq!(
            &arrays[0][..],
            &[
                0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 23, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 4, 0, 0, 0,
                1, 255, 255, 255, 255
            ]
        );
        // Several columns in one pass, in the order picked; the same column twice.
        let arrays = column_arrays(&rows, &[(1, 25), (0, 23), (1, 25)]);
        let text = [
            0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 25, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 1, b'a', 0, 0, 0,
            1, b'b',
        ];
        assert_eq!(arrays.len(), 3);
        assert_eq!(&arrays[0][..], &text);
        assert_eq!(arrays[1], column_arrays(&rows, &[(0, 23)])[0]);
        assert_eq!(&arrays[2][..], &text);
        // A row lacking a picked column gets a NULL there (no misaligned arrays).
        let arrays = column_arrays(&[row(&[t("a")]), row(&[])], &[(0, 25)]);
        assert_eq!(&arrays[0][12..16], &[0, 0, 0, 2]);
        assert_eq!(&arrays[0][4..8], &[0, 0, 0, 1]);
        assert!(column_arrays(&rows, &[]).is_empty());
    }
}
