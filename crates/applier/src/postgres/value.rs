//! Values on their way to the target: statement parameters that pass pgoutput's bytes through
//! untouched, and the `COPY` encodings.

use std::error::Error;

use bytes::{BufMut, Bytes, BytesMut};
use pgoutput_decoder::ColumnValue;
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
    /// The parameter for a column value; `None` for an unchanged TOAST value, which has no
    /// value to send.
    pub(crate) fn from_column(v: &ColumnValue) -> Option<Param> {
        match v {
            ColumnValue::Null => Some(Param::Null),
            ColumnValue::Text(b) => Some(Param::Text(b.clone())),
            ColumnValue::Binary(b) => Some(Param::Binary(b.clone())),
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
    pub(crate) fn of_row(values: &[ColumnValue]) -> Option<Option<ValueFormat>> {
        let mut fmt = None;
        for v in values {
            let f = match v {
                ColumnValue::Null => continue,
                ColumnValue::Text(_) => ValueFormat::Text,
                ColumnValue::Binary(_) => ValueFormat::Binary,
                ColumnValue::UnchangedToast => return None,
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
pub(crate) fn copy_binary_row(buf: &mut BytesMut, values: &[ColumnValue]) {
    let n = i16::try_from(values.len()).unwrap_or(i16::MAX);
    buf.put_i16(n);
    for v in values {
        match v {
            ColumnValue::Binary(b) | ColumnValue::Text(b) => {
                buf.put_i32(i32::try_from(b.len()).unwrap_or(i32::MAX));
                buf.put_slice(b);
            }
            ColumnValue::Null | ColumnValue::UnchangedToast => buf.put_i32(-1),
        }
    }
}

/// Appends one row in text `COPY` format: tab-separated, `\N` for NULL, backslash escapes.
pub(crate) fn copy_text_row(buf: &mut BytesMut, values: &[ColumnValue]) {
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            buf.put_u8(b'\t');
        }
        match v {
            ColumnValue::Text(b) | ColumnValue::Binary(b) => copy_text_escape(buf, b),
            ColumnValue::Null | ColumnValue::UnchangedToast => buf.put_slice(b"\\N"),
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
pub(crate) fn binary_array<'a>(
    elem_oid: u32,
    values: impl ExactSizeIterator<Item = &'a ColumnValue>,
) -> Bytes {
    let mut buf = BytesMut::new();
    let n = i32::try_from(values.len()).unwrap_or(i32::MAX);
    buf.put_i32(1); // dimensions
    let flag_at = buf.len();
    buf.put_i32(0); // has nulls, patched below
    buf.put_u32(elem_oid);
    buf.put_i32(n);
    buf.put_i32(1); // lower bound
    let mut has_null = false;
    for v in values {
        match v {
            ColumnValue::Text(b) | ColumnValue::Binary(b) => {
                buf.put_i32(i32::try_from(b.len()).unwrap_or(i32::MAX));
                buf.put_slice(b);
            }
            ColumnValue::Null | ColumnValue::UnchangedToast => {
                has_null = true;
                buf.put_i32(-1);
            }
        }
    }
    if has_null {
        buf[flag_at..flag_at + 4].copy_from_slice(&1i32.to_be_bytes());
    }
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> ColumnValue {
        ColumnValue::Text(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn text_copy_escapes() {
        let mut b = BytesMut::new();
        copy_text_row(&mut b, &[t("a\tb\\c\nd\re"), ColumnValue::Null, t("")]);
        assert_eq!(&b[..], b"a\\tb\\\\c\\nd\\re\t\\N\t\n");
    }

    #[test]
    fn binary_copy_row_layout() {
        let mut b = BytesMut::new();
        copy_binary_row(
            &mut b,
            &[ColumnValue::Binary(Bytes::from_static(&[0, 0, 0, 7])), ColumnValue::Null],
        );
        assert_eq!(&b[..], &[0, 2, 0, 0, 0, 4, 0, 0, 0, 7, 255, 255, 255, 255]);
        assert_eq!(COPY_BINARY_HEADER.len(), 19);
    }

    #[test]
    fn row_formats() {
        let bin = ColumnValue::Binary(Bytes::from_static(b"x"));
        assert_eq!(ValueFormat::of_row(&[ColumnValue::Null]), Some(None));
        assert_eq!(
            ValueFormat::of_row(&[bin.clone(), ColumnValue::Null]),
            Some(Some(ValueFormat::Binary))
        );
        assert_eq!(ValueFormat::of_row(&[t("1"), t("2")]), Some(Some(ValueFormat::Text)));
        assert_eq!(ValueFormat::of_row(&[t("1"), bin]), None);
        assert_eq!(ValueFormat::of_row(&[ColumnValue::UnchangedToast]), None);
    }

    #[test]
    fn array_layout() {
        let vals = [ColumnValue::Binary(Bytes::from_static(&[0, 0, 0, 1])), ColumnValue::Null];
        let a = binary_array(23, vals.iter());
        assert_eq!(
            &a[..],
            &[
                0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 23, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 4, 0, 0, 0,
                1, 255, 255, 255, 255
            ]
        );
    }
}
