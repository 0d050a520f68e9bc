//! A PostgreSQL value (its text form, or a binary one printed as that text) converted into
//! what a MySQL column of the mapped type holds exactly, or the reason it cannot.

use std::borrow::Cow;
use std::fmt::Write as _;

use pgoutput_decoder::Column;

use super::types::Kind;

/// A value bound to a MySQL statement.
#[derive(Debug, Clone, PartialEq)]
pub enum Bind {
    /// SQL NULL.
    Null,
    /// A signed integer.
    Int(i64),
    /// An unsigned integer.
    UInt(u64),
    /// A `float4`.
    Float32(f32),
    /// A `float8`.
    Float64(f64),
    /// Text, which MySQL converts to the column's type (decimals, dates, times, JSON).
    Text(String),
    /// Bytes.
    Bytes(Vec<u8>),
}

impl Bind {
    /// Approximate bytes on the wire, for batching.
    pub fn wire_len(&self) -> usize {
        match self {
            Bind::Null => 1,
            Bind::Int(_) | Bind::UInt(_) | Bind::Float64(_) => 8,
            Bind::Float32(_) => 4,
            Bind::Text(s) => s.len() + 3,
            Bind::Bytes(b) => 2 * b.len() + 3,
        }
    }

    /// Appends the value as an SQL literal, which reads the same whether or not the session's
    /// `sql_mode` has `NO_BACKSLASH_ESCAPES`: text holding a backslash or a NUL, and bytes, go
    /// as hex literals (text with a `_utf8mb4` introducer); other text in single quotes, with
    /// quotes doubled, in the connection's character set (`utf8mb4`). Floats in the shortest
    /// form that reads back as the same bits.
    pub fn write_literal(&self, out: &mut String) {
        self.write(out, false);
    }

    /// [`Bind::write_literal`], with quoted text also marked `_utf8mb4`: a value of a derived
    /// table (`SELECT ... UNION ALL SELECT ...`) needs it, or MySQL refuses to mix the
    /// connection's collation with the column's. Elsewhere it only costs the server a character
    /// set lookup per value.
    pub fn write_utf8mb4_literal(&self, out: &mut String) {
        self.write(out, true);
    }

    fn write(&self, out: &mut String, introducer: bool) {
        match self {
            Bind::Null => out.push_str("NULL"),
            Bind::Int(v) => {
                let _ = write!(out, "{v}");
            }
            Bind::UInt(v) => {
                let _ = write!(out, "{v}");
            }
            // A float's value as a double (exact), so that MySQL rounds nothing twice.
            Bind::Float32(v) => {
                let _ = write!(out, "{:e}", f64::from(*v));
            }
            Bind::Float64(v) => {
                let _ = write!(out, "{v:e}");
            }
            Bind::Text(s) if s.bytes().any(|b| b == b'\\' || b == 0) => {
                out.push_str("_utf8mb4 ");
                write_hex(out, s.as_bytes());
            }
            Bind::Text(s) => {
                out.reserve(s.len() + 11);
                out.push_str(if introducer { "_utf8mb4'" } else { "'" });
                for (i, part) in s.split('\'').enumerate() {
                    if i > 0 {
                        out.push_str("''");
                    }
                    out.push_str(part);
                }
                out.push('\'');
            }
            Bind::Bytes(b) => write_hex(out, b),
        }
    }
}

/// `X'...'`: a hex literal of `bytes`.
fn write_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    out.reserve(2 * bytes.len() + 3);
    out.push_str("X'");
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out.push('\'');
}

/// The PostgreSQL text form of `v` (a value of type `type_oid`); `None` for NULL and an
/// unchanged TOAST value, `Err` for a binary value of a type that cannot be printed here.
pub fn pg_text(type_oid: u32, v: Column<'_>) -> Result<Option<Cow<'_, str>>, String> {
    match v {
        Column::Null | Column::UnchangedToast => Ok(None),
        Column::Text(b) => Ok(Some(String::from_utf8_lossy(b))),
        Column::Binary(b) => crate::json::binary_to_text(type_oid, b)
            .map(|s| Some(Cow::Owned(s)))
            .ok_or_else(|| format!("a binary value of type {type_oid} that pgmirror cannot print")),
    }
}

/// Converts the text form `s` of a non-NULL value for a column of `kind`; the error says why
/// the value cannot be stored exactly.
pub fn convert(kind: Kind, s: &str) -> Result<Bind, String> {
    match kind {
        Kind::Bool => match s {
            "t" | "true" => Ok(Bind::Int(1)),
            "f" | "false" => Ok(Bind::Int(0)),
            _ => Err("not a boolean".into()),
        },
        Kind::Int => s.parse().map(Bind::Int).map_err(|_| "not an integer".into()),
        Kind::UInt => s.parse().map(Bind::UInt).map_err(|_| "not an unsigned integer".into()),
        Kind::Float { single } => {
            if matches!(s, "NaN" | "Infinity" | "-Infinity") {
                return Err(format!(
                    "MySQL {} has no {s}",
                    if single { "FLOAT" } else { "DOUBLE" }
                ));
            }
            if single {
                s.parse().map(Bind::Float32).map_err(|_| "not a float".into())
            } else {
                s.parse().map(Bind::Float64).map_err(|_| "not a float".into())
            }
        }
        Kind::Decimal { precision, scale } => decimal(s, precision, scale),
        Kind::Text { max_chars } => {
            if let Some(max) = max_chars
                && s.chars().count() > usize::try_from(max).unwrap_or(usize::MAX)
            {
                return Err(format!("longer than the column's {max} characters"));
            }
            Ok(Bind::Text(s.to_owned()))
        }
        Kind::Bytes { max_bytes } => {
            let b = bytea(s).ok_or("not a bytea in hex or escape form")?;
            if let Some(max) = max_bytes
                && b.len() > usize::try_from(max).unwrap_or(usize::MAX)
            {
                return Err(format!("longer than the key column's {max} bytes"));
            }
            Ok(Bind::Bytes(b))
        }
        Kind::Date => {
            check_year(s, "DATE")?;
            Ok(Bind::Text(s.to_owned()))
        }
        Kind::Time => Ok(Bind::Text(s.to_owned())),
        Kind::DateTime { tz } => {
            check_year(s, "DATETIME")?;
            if !tz {
                return Ok(Bind::Text(s.to_owned()));
            }
            // `2024-01-02 03:04:05.5+00`: the offset starts after the time of day.
            let cut = s.get(10..).and_then(|t| t.find(['+', '-'])).map_or(s.len(), |i| i + 10);
            match &s[cut..] {
                "+00" | "" => Ok(Bind::Text(s[..cut].to_owned())),
                other => Err(format!("a UTC offset of {other} (the session is not in UTC)")),
            }
        }
        Kind::Json => Ok(Bind::Text(s.to_owned())),
        Kind::JsonArray { elem, delim } => crate::json::array_text_to_json(elem, delim, s)
            .map(Bind::Text)
            .ok_or_else(|| "not an array".into()),
        Kind::JsonString => Ok(Bind::Text(serde_json::Value::from(s).to_string())),
    }
}

/// A PostgreSQL text form of a value MySQL holds, read as `CAST(... AS CHAR)` (`HEX` for bytes,
/// a `FLOAT` through `DOUBLE`), that [`convert`] turns back into the same stored value: what a
/// row moved from one MySQL shard to another is sent again as. `None` when `s` is not a value
/// of `kind` as MySQL prints it.
pub fn source_text(kind: Kind, s: &str) -> Option<String> {
    match kind {
        Kind::Bool => match s {
            "0" => Some("f".into()),
            _ => Some("t".into()),
        },
        // Rust prints the shortest text that reads back as the same bits.
        // The DOUBLE's digits hold the FLOAT exactly: the nearest `f32` is the FLOAT.
        Kind::Float { single: true } => s.parse::<f32>().ok().map(|v| v.to_string()),
        Kind::Float { single: false } => s.parse::<f64>().ok().map(|v| v.to_string()),
        Kind::Bytes { .. } => Some(format!("\\x{s}")),
        Kind::DateTime { tz: true } => Some(format!("{s}+00")),
        Kind::JsonString => serde_json::from_str::<String>(s).ok(),
        Kind::JsonArray { delim, .. } => {
            let v = serde_json::from_str::<serde_json::Value>(s).ok()?;
            let mut out = String::with_capacity(s.len());
            array_text(&mut out, &v, char::from(delim)).then_some(out)
        }
        Kind::Int
        | Kind::UInt
        | Kind::Decimal { .. }
        | Kind::Text { .. }
        | Kind::Date
        | Kind::Time
        | Kind::DateTime { tz: false }
        | Kind::Json => Some(s.to_owned()),
    }
}

/// Appends the PostgreSQL array text of a JSON array made by [`convert`] (numbers and booleans
/// typed, other elements strings); `false` when `v` is not an array.
fn array_text(out: &mut String, v: &serde_json::Value, delim: char) -> bool {
    let serde_json::Value::Array(items) = v else { return false };
    out.push('{');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(delim);
        }
        match item {
            serde_json::Value::Null => out.push_str("NULL"),
            serde_json::Value::Bool(b) => out.push(if *b { 't' } else { 'f' }),
            serde_json::Value::Number(n) => out.push_str(&n.to_string()),
            serde_json::Value::Array(_) => {
                if !array_text(out, item, delim) {
                    return false;
                }
            }
            serde_json::Value::String(s) => push_quoted_element(out, s),
            other => push_quoted_element(out, &other.to_string()),
        }
    }
    out.push('}');
    true
}

/// An array element in double quotes, its quotes and backslashes escaped.
fn push_quoted_element(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// A year MySQL's `DATE` and `DATETIME` support (1000-9999) and no infinity.
fn check_year(s: &str, what: &str) -> Result<(), String> {
    let year = s.split('-').next().unwrap_or("");
    let ok = year.len() == 4
        && year.bytes().all(|b| b.is_ascii_digit())
        && year >= "1000"
        && !s.ends_with(" BC");
    if ok { Ok(()) } else { Err(format!("outside MySQL {what}'s years 1000-9999")) }
}

/// Checks a numeric's digits against `DECIMAL(precision, scale)`; trailing zeros after the
/// point do not count (they change no value).
fn decimal(s: &str, precision: u32, scale: u32) -> Result<Bind, String> {
    if matches!(s, "NaN" | "Infinity" | "-Infinity") {
        return Err(format!("MySQL DECIMAL has no {s}"));
    }
    let digits = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty() && frac.is_empty()
        || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return Err("not a number".into());
    }
    let int_digits = int.trim_start_matches('0').len();
    let frac_digits = frac.trim_end_matches('0').len();
    let int_max = usize::try_from(precision - scale).unwrap_or(usize::MAX);
    if int_digits > int_max || frac_digits > usize::try_from(scale).unwrap_or(usize::MAX) {
        return Err(format!("beyond DECIMAL({precision},{scale})"));
    }
    Ok(Bind::Text(s.to_owned()))
}

/// A bytea's text form, hex (`\x0102`) or escape (`a\\b\001`), as bytes.
fn bytea(s: &str) -> Option<Vec<u8>> {
    if let Some(hex) = s.strip_prefix("\\x") {
        let hex = hex.as_bytes();
        if hex.len() % 2 != 0 {
            return None;
        }
        let nibble = |c: u8| char::from(c).to_digit(16).and_then(|d| u8::try_from(d).ok());
        return hex.chunks(2).map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?)).collect();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
        } else if b.get(i + 1) == Some(&b'\\') {
            out.push(b'\\');
            i += 2;
        } else {
            let oct = b.get(i + 1..i + 4)?;
            let v = oct.iter().try_fold(0u16, |acc, &c| {
                (b'0'..=b'7').contains(&c).then(|| acc * 8 + u16::from(c - b'0'))
            })?;
            out.push(u8::try_from(v).ok()?);
            i += 4;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn representable_values_convert_exactly() {
        let dec = Kind::Decimal { precision: 65, scale: 30 };
        let cases: &[(Kind, &str, Bind)] = &[
            (Kind::Bool, "t", Bind::Int(1)),
            (Kind::Int, "-9223372036854775808", Bind::Int(i64::MIN)),
            (Kind::Float { single: false }, "1e-308", Bind::Float64(1e-308)),
            (
                dec,
                "-12345678901234567890123456789012345.1",
                Bind::Text("-12345678901234567890123456789012345.1".into()),
            ),
            (Kind::Decimal { precision: 4, scale: 2 }, "12.3400", Bind::Text("12.3400".into())),
            (Kind::Date, "1000-01-01", Bind::Text("1000-01-01".into())),
            (
                Kind::DateTime { tz: true },
                "9999-12-31 23:59:59.999999+00",
                Bind::Text("9999-12-31 23:59:59.999999".into()),
            ),
            (Kind::Bytes { max_bytes: None }, "\\x00ff", Bind::Bytes(vec![0, 255])),
            (Kind::Bytes { max_bytes: None }, "a\\\\\\001", Bind::Bytes(vec![b'a', b'\\', 1])),
            (Kind::JsonArray { elem: 23, delim: b',' }, "{1,NULL}", Bind::Text("[1,null]".into())),
            (Kind::JsonString, "(1,\"a b\")", Bind::Text("\"(1,\\\"a b\\\")\"".into())),
            (Kind::Text { max_chars: Some(2) }, "😀😀", Bind::Text("😀😀".into())),
        ];
        for (kind, s, want) in cases {
            assert_eq!(convert(*kind, s).as_ref(), Ok(want), "{kind:?} {s}");
        }
    }

    #[test]
    fn moved_values_convert_back_to_what_mysql_holds() {
        // (kind, the source's text, what MySQL prints the stored value as)
        let cases: &[(Kind, &str, &str)] = &[
            (Kind::Bool, "t", "1"),
            (Kind::Bool, "f", "0"),
            (Kind::Float { single: true }, "0.1", "0.10000000149011612"),
            (Kind::Float { single: false }, "1e-308", "1e-308"),
            (Kind::Bytes { max_bytes: None }, "\\x00ff", "00FF"),
            (Kind::DateTime { tz: true }, "2024-01-02 03:04:05.5+00", "2024-01-02 03:04:05.500000"),
            (Kind::JsonString, "(1,\"a b\")", "\"(1,\\\"a b\\\")\""),
            (
                Kind::JsonArray { elem: 25, delim: b',' },
                "{{\"a \\\"b\",NULL},{\"{}\",\"\\\\\"}}",
                "[[\"a \\\"b\", null], [\"{}\", \"\\\\\"]]",
            ),
            (Kind::JsonArray { elem: 16, delim: b',' }, "{t,f}", "[true, false]"),
            (Kind::JsonArray { elem: 23, delim: b',' }, "{1,-2}", "[1, -2]"),
            (Kind::Decimal { precision: 12, scale: 2 }, "12.50", "12.50"),
        ];
        for (kind, src, mysql) in cases {
            let stored = convert(*kind, src).unwrap();
            let back = source_text(*kind, mysql).unwrap();
            let again = convert(*kind, &back).unwrap();
            let norm = |b: Bind| match b {
                // MySQL's JSON type keeps the document, not its spacing.
                Bind::Text(t) if matches!(kind, Kind::JsonArray { .. } | Kind::JsonString) => {
                    Bind::Text(serde_json::from_str::<serde_json::Value>(&t).unwrap().to_string())
                }
                // The same DATETIME(6), however many fractional digits it is written with.
                Bind::Text(t) if matches!(kind, Kind::DateTime { .. }) => {
                    Bind::Text(t.trim_end_matches('0').to_owned())
                }
                b => b,
            };
            assert_eq!(norm(again), norm(stored), "{kind:?} {src} -> {mysql} -> {back}");
        }
    }

    #[test]
    fn literals() {
        let lit = |b: Bind| {
            let mut s = String::new();
            b.write_literal(&mut s);
            s
        };
        assert_eq!(lit(Bind::Null), "NULL");
        assert_eq!(lit(Bind::Int(i64::MIN)), "-9223372036854775808");
        assert_eq!(lit(Bind::UInt(u64::MAX)), "18446744073709551615");
        assert_eq!(lit(Bind::Float64(0.1)), "1e-1");
        assert_eq!(lit(Bind::Float64(-1e-308)), "-1e-308");
        assert_eq!(lit(Bind::Float32(0.1)), "1.0000000149011612e-1");
        assert_eq!(lit(Bind::Text("it's".into())), "'it''s'");
        assert_eq!(lit(Bind::Text("a\\b".into())), "_utf8mb4 X'615C62'");
        assert_eq!(lit(Bind::Text("\0".into())), "_utf8mb4 X'00'");
        assert_eq!(lit(Bind::Text("😀".into())), "'😀'");
        let mut marked = String::new();
        Bind::Text("it's".into()).write_utf8mb4_literal(&mut marked);
        assert_eq!(marked, "_utf8mb4'it''s'");
        assert_eq!(lit(Bind::Bytes(vec![0, 0xab])), "X'00AB'");
        for v in [f64::MIN_POSITIVE, f64::MAX, 5e-324, 1.0 / 3.0] {
            assert_eq!(lit(Bind::Float64(v)).parse::<f64>().unwrap().to_bits(), v.to_bits());
        }
    }

    #[test]
    fn unrepresentable_values_are_refused() {
        let cases: &[(Kind, &str)] = &[
            (Kind::Float { single: false }, "NaN"),
            (Kind::Float { single: true }, "-Infinity"),
            (Kind::Decimal { precision: 65, scale: 30 }, "Infinity"),
            (Kind::Decimal { precision: 65, scale: 30 }, "0.0000000000000000000000000000001"),
            (Kind::Decimal { precision: 65, scale: 30 }, &"9".repeat(36)),
            (Kind::Date, "0999-12-31"),
            (Kind::Date, "10000-01-01"),
            (Kind::Date, "2000-01-01 BC"),
            (Kind::Date, "infinity"),
            (Kind::DateTime { tz: false }, "-infinity"),
            (Kind::Text { max_chars: Some(2) }, "abc"),
        ];
        for (kind, s) in cases {
            assert!(convert(*kind, s).is_err(), "{kind:?} {s}");
        }
    }
}
