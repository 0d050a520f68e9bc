//! Binary (send format) values decoded to the text PostgreSQL's output function prints for
//! them, so a value reads the same whichever format the stream carries.

use std::fmt::Write as _;

use postgres_protocol::types as pg;

use super::types::{Cx, Shape};
use super::{composite, datetime, float, geometry, network, oid, textsearch};

/// A reader of binary forms, big-endian.
pub(super) struct Reader<'a>(pub(super) &'a [u8]);

impl<'a> Reader<'a> {
    pub(super) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    pub(super) fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    pub(super) fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_be_bytes)
    }

    pub(super) fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_be_bytes)
    }

    pub(super) fn i32(&mut self) -> Option<i32> {
        self.array().map(i32::from_be_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_be_bytes)
    }

    fn i64(&mut self) -> Option<i64> {
        self.array().map(i64::from_be_bytes)
    }

    /// A length-prefixed value: `None` when malformed, `Some(None)` for NULL (length -1).
    pub(super) fn value(&mut self) -> Option<Option<&'a [u8]>> {
        match self.i32()? {
            -1 => Some(None),
            len => self.take(usize::try_from(len).ok()?).map(Some),
        }
    }

    /// A NUL-terminated UTF-8 string.
    pub(super) fn cstr(&mut self) -> Option<&'a str> {
        let end = self.0.iter().position(|&b| b == 0)?;
        let s = std::str::from_utf8(self.take(end)?).ok()?;
        self.take(1)?;
        Some(s)
    }

    /// The rest, when it is exactly what was read by `f`.
    fn whole<T>(mut self, f: impl FnOnce(&mut Self) -> Option<T>) -> Option<T> {
        let v = f(&mut self)?;
        self.0.is_empty().then_some(v)
    }
}

/// The text form of `b`, a binary value of type `type_oid`; `None` when the type is not one
/// pgmirror decodes or `b` is malformed.
pub(super) fn to_text(cx: &Cx<'_>, type_oid: u32, b: &[u8]) -> Option<String> {
    match cx.types.shape(type_oid) {
        Shape::Scalar(base) => scalar(cx, base, b),
        Shape::Enum => utf8(b),
        Shape::Array { delim, .. } => composite::array(cx, b, delim),
        Shape::Vector { .. } => composite::vector(cx, b),
        Shape::Range { sub } => composite::range(cx, sub, b),
        Shape::Multirange { sub } => composite::multirange(cx, sub, b),
        Shape::Record => composite::record(cx, b),
    }
}

/// Appends an `int2`, `int4` or `int8` (`type_oid`) value as its decimal digits; `false` when
/// `b` is not one.
pub(super) fn integer(line: &mut String, type_oid: u32, b: &[u8]) -> bool {
    let v = match type_oid {
        oid::INT2 => pg::int2_from_sql(b).map(i64::from),
        oid::INT4 => pg::int4_from_sql(b).map(i64::from),
        oid::INT8 => pg::int8_from_sql(b),
        _ => return false,
    };
    match v {
        Ok(v) => {
            let _ = write!(line, "{v}");
            true
        }
        Err(_) => false,
    }
}

fn utf8(b: &[u8]) -> Option<String> {
    std::str::from_utf8(b).ok().map(str::to_owned)
}

fn scalar(cx: &Cx<'_>, type_oid: u32, b: &[u8]) -> Option<String> {
    let r = Reader(b);
    Some(match type_oid {
        oid::BOOL => (if pg::bool_from_sql(b).ok()? { "t" } else { "f" }).to_owned(),
        oid::INT2 => pg::int2_from_sql(b).ok()?.to_string(),
        oid::INT4 => pg::int4_from_sql(b).ok()?.to_string(),
        oid::INT8 => pg::int8_from_sql(b).ok()?.to_string(),
        oid::OID | oid::XID | oid::CID => pg::oid_from_sql(b).ok()?.to_string(),
        oid::XID8 => r.whole(Reader::u64)?.to_string(),
        oid::FLOAT4 => float::float4(pg::float4_from_sql(b).ok()?),
        oid::FLOAT8 => float::float8(pg::float8_from_sql(b).ok()?),
        oid::NUMERIC => numeric_string(b)?,
        oid::MONEY => cx.types.settings().money.format(r.whole(Reader::i64)?),
        oid::TEXT
        | oid::VARCHAR
        | oid::BPCHAR
        | oid::NAME
        | oid::REFCURSOR
        | oid::UNKNOWN
        | oid::PG_NODE_TREE
        | oid::XML
        | oid::JSON => utf8(b)?,
        // A format version (1), then the text.
        oid::JSONB | oid::JSONPATH => match b.split_first() {
            Some((1, text)) => utf8(text)?,
            _ => return None,
        },
        oid::CHAR => char_text(b)?,
        // pg_mcv_list prints as bytea does.
        oid::BYTEA | oid::PG_MCV_LIST => bytea(b, cx.types.settings().bytea_escape),
        oid::UUID => uuid(pg::uuid_from_sql(b).ok()?),
        oid::TID => r.whole(|r| Some(format!("({},{})", r.u32()?, r.u16()?)))?,
        oid::PG_LSN => {
            let lsn = pg::lsn_from_sql(b).ok()?;
            format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
        }
        oid::TXID_SNAPSHOT | oid::PG_SNAPSHOT => snapshot(r)?,
        oid::MACADDR => network::mac(b, 6)?,
        oid::MACADDR8 => network::mac(b, 8)?,
        oid::INET => network::inet(b, false)?,
        oid::CIDR => network::inet(b, true)?,
        oid::BIT | oid::VARBIT => bits(b)?,
        oid::DATE => datetime::date(pg::date_from_sql(b).ok()?),
        oid::TIMESTAMP => datetime::timestamp(pg::timestamp_from_sql(b).ok()?, false),
        oid::TIMESTAMPTZ => datetime::timestamp(pg::timestamp_from_sql(b).ok()?, true),
        oid::TIME => datetime::time(pg::time_from_sql(b).ok()?),
        oid::TIMETZ => r.whole(|r| Some(datetime::timetz(r.i64()?, r.i32()?)))?,
        oid::INTERVAL => r.whole(|r| Some(datetime::interval(r.i64()?, r.i32()?, r.i32()?)))?,
        oid::POINT => geometry::point(b)?,
        oid::LSEG => geometry::lseg(b)?,
        oid::PATH => geometry::path(b)?,
        oid::BOX => geometry::bbox(b)?,
        oid::POLYGON => geometry::polygon(b)?,
        oid::LINE => geometry::line(b)?,
        oid::CIRCLE => geometry::circle(b)?,
        oid::TSVECTOR => textsearch::tsvector(b)?,
        oid::TSQUERY => textsearch::tsquery(b)?,
        reg if oid::REG_TYPES.iter().any(|&(t, _)| t == reg) => {
            cx.reg_name(reg, pg::oid_from_sql(b).ok()?)
        }
        _ => return None,
    })
}

/// `"char"`: one byte; empty for 0, `\ooo` for bytes above 127.
fn char_text(b: &[u8]) -> Option<String> {
    match b {
        [0] => Some(String::new()),
        [c] if c.is_ascii() => Some(char::from(*c).to_string()),
        [c] => Some(format!("\\{c:03o}")),
        _ => None,
    }
}

/// `bytea` as `bytea_output` says: `\x0102` (hex), or printable ASCII as is, `\\` for a
/// backslash and `\ooo` for other bytes (escape).
fn bytea(b: &[u8], escape: bool) -> String {
    let mut s = String::with_capacity(2 + 2 * b.len());
    if escape {
        for &c in b {
            match c {
                b'\\' => s.push_str("\\\\"),
                0x20..=0x7e => s.push(char::from(c)),
                _ => {
                    let _ = write!(s, "\\{c:03o}");
                }
            }
        }
    } else {
        s.push_str("\\x");
        for c in b {
            let _ = write!(s, "{c:02x}");
        }
    }
    s
}

fn uuid(b: [u8; 16]) -> String {
    let h: String = b.iter().map(|c| format!("{c:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// `txid_snapshot` / `pg_snapshot`: `xmin:xmax:xip,xip`.
fn snapshot(r: Reader<'_>) -> Option<String> {
    r.whole(|r| {
        let n = r.u32()?;
        let (xmin, xmax) = (r.u64()?, r.u64()?);
        let xips: Option<Vec<String>> = (0..n).map(|_| r.u64().map(|x| x.to_string())).collect();
        Some(format!("{xmin}:{xmax}:{}", xips?.join(",")))
    })
}

/// `bit` / `varbit`: one `0` or `1` per bit.
fn bits(b: &[u8]) -> Option<String> {
    let v = pg::varbit_from_sql(b).ok()?;
    Some(
        (0..v.len())
            .map(|i| if v.bytes()[i / 8] & (0x80 >> (i % 8)) != 0 { '1' } else { '0' })
            .collect(),
    )
}

/// The decimal text of a binary numeric, or "NaN"/"Infinity"/"-Infinity".
fn numeric_string(b: &[u8]) -> Option<String> {
    let word = |i: usize| b.get(i..i + 2).map(|s| u16::from_be_bytes([s[0], s[1]]));
    let ndigits = usize::from(word(0)?);
    let weight = i32::from(i16::from_be_bytes(word(2)?.to_be_bytes()));
    let sign = word(4)?;
    let dscale = usize::from(word(6)?);
    if b.len() != 8 + 2 * ndigits {
        return None;
    }
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 => return Some("NaN".into()),
        0xD000 => return Some("Infinity".into()),
        0xF000 => return Some("-Infinity".into()),
        _ => return None,
    }
    let digits: Vec<u16> = (0..ndigits).map(|i| word(8 + 2 * i)).collect::<Option<_>>()?;
    // Digit i (base 10000) has exponent weight - i.
    let digit = |e: i32| -> u16 {
        let i = weight - e;
        usize::try_from(i).ok().and_then(|i| digits.get(i).copied()).unwrap_or(0)
    };
    let mut s = String::new();
    if sign == 0x4000 && digits.iter().any(|&d| d != 0) {
        s.push('-');
    }
    if weight < 0 {
        s.push('0');
    } else {
        let _ = write!(s, "{}", digit(weight));
        for e in (0..weight).rev() {
            let _ = write!(s, "{:04}", digit(e));
        }
    }
    if dscale > 0 {
        s.push('.');
        let mut frac = String::new();
        let mut e = -1;
        while frac.len() < dscale {
            let _ = write!(frac, "{:04}", digit(e));
            e -= 1;
        }
        frac.truncate(dscale);
        s.push_str(&frac);
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(ndigits: u16, weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> Vec<u8> {
        let mut v = Vec::new();
        for w in [ndigits, u16::from_be_bytes(weight.to_be_bytes()), sign, dscale] {
            v.extend_from_slice(&w.to_be_bytes());
        }
        for d in digits {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v
    }

    #[test]
    fn numerics() {
        assert_eq!(numeric_string(&numeric(2, 0, 0, 2, &[12, 3400])).unwrap(), "12.34");
        assert_eq!(numeric_string(&numeric(2, 1, 0x4000, 0, &[1, 0])).unwrap(), "-10000");
        assert_eq!(numeric_string(&numeric(1, -1, 0, 6, &[5])).unwrap(), "0.000500");
        assert_eq!(numeric_string(&numeric(1, -2, 0, 8, &[5])).unwrap(), "0.00000005");
        assert_eq!(numeric_string(&numeric(0, 0, 0, 3, &[])).unwrap(), "0.000");
        assert_eq!(numeric_string(&numeric(0, 0, 0xC000, 0, &[])).unwrap(), "NaN");
        assert!(numeric_string(&[0, 1]).is_none());
    }

    #[test]
    fn small_types() {
        assert_eq!(char_text(&[0]).unwrap(), "");
        assert_eq!(char_text(&[0xe9]).unwrap(), "\\351");
        assert_eq!(bytea(b"a\\\x00\xff", true), "a\\\\\\000\\377");
        assert_eq!(bytea(b"a\\", false), "\\x615c");
        assert_eq!(bits(&[0, 0, 0, 3, 0b1010_0000]).unwrap(), "101");
    }
}
