//! Shard key columns: the types whose PostgreSQL hash is computed here, and their values read
//! from pgoutput's text and binary formats.
//!
//! Text values come from a walsender session with `DateStyle = ISO`, which pgmirror's
//! replication connection sets.

use pgoutput_decoder::Column;

use super::ShardError;
use super::hash::{
    HASH_PARTITION_SEED, NumericDigits, POSTGRES_EPOCH_JDATE, date2j, hash_bytes_extended,
    hash_int4, hash_int8, hash_numeric,
};

/// A shard key column's type, as far as its hash-partitioning hash goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyType {
    /// `smallint`.
    Int2,
    /// `integer`.
    Int4,
    /// `bigint`.
    Int8,
    /// `text` and `varchar` (`text_ops`), under a deterministic collation.
    Text,
    /// `char(n)`: trailing blanks do not count.
    Bpchar,
    /// `uuid`.
    Uuid,
    /// `numeric`.
    Numeric,
    /// `date`.
    Date,
}

impl KeyType {
    /// The key type of a built-in type OID, `None` for a type whose hash is not implemented.
    pub fn from_oid(oid: u32) -> Option<KeyType> {
        Some(match oid {
            21 => KeyType::Int2,
            23 => KeyType::Int4,
            20 => KeyType::Int8,
            25 | 1043 => KeyType::Text,
            1042 => KeyType::Bpchar,
            2950 => KeyType::Uuid,
            1700 => KeyType::Numeric,
            1082 => KeyType::Date,
            _ => return None,
        })
    }

    /// The types a shard key may have, for error messages.
    pub const SUPPORTED: &'static str =
        "smallint, integer, bigint, text, varchar, char(n), uuid, numeric, date";

    /// The column's extended hash with `HASH_PARTITION_SEED`, as the partition key's hash
    /// support function computes it; `None` for NULL.
    ///
    /// # Errors
    /// An unchanged TOASTed value (the caller must find the value elsewhere), or a value that
    /// does not parse as this type.
    pub fn hash(self, value: Column<'_>) -> Result<Option<u64>, ShardError> {
        let seed = HASH_PARTITION_SEED;
        let (bytes, binary) = match value {
            Column::Null => return Ok(None),
            Column::UnchangedToast => return Err(ShardError::Unchanged),
            Column::Text(b) => (b, false),
            Column::Binary(b) => (b, true),
        };
        let bad = || ShardError::BadValue {
            ty: self,
            value: String::from_utf8_lossy(&bytes[..bytes.len().min(64)]).into_owned(),
        };
        let h = match self {
            KeyType::Int2 => hash_int4(
                i32::from(integer(bytes, binary, i16::from_be_bytes).ok_or_else(bad)?),
                seed,
            ),
            KeyType::Int4 => {
                hash_int4(integer(bytes, binary, i32::from_be_bytes).ok_or_else(bad)?, seed)
            }
            KeyType::Int8 => {
                hash_int8(integer(bytes, binary, i64::from_be_bytes).ok_or_else(bad)?, seed)
            }
            // The text and binary forms of text types are the same bytes (the database encoding).
            KeyType::Text => hash_bytes_extended(bytes, seed),
            KeyType::Bpchar => {
                let end = bytes.iter().rposition(|&b| b != b' ').map_or(0, |i| i + 1);
                hash_bytes_extended(&bytes[..end], seed)
            }
            KeyType::Uuid => {
                let raw: [u8; 16] = if binary {
                    bytes.try_into().map_err(|_| bad())?
                } else {
                    parse_uuid(bytes).ok_or_else(bad)?
                };
                hash_bytes_extended(&raw, seed)
            }
            KeyType::Numeric => {
                let n = if binary { numeric_binary(bytes) } else { numeric_text(bytes) };
                hash_numeric(&n.ok_or_else(bad)?, seed)
            }
            KeyType::Date => {
                let days = if binary {
                    i32::from_be_bytes(bytes.try_into().map_err(|_| bad())?)
                } else {
                    text(bytes).and_then(date_text).ok_or_else(bad)?
                };
                hash_int4(days, seed)
            }
        };
        Ok(Some(h))
    }
}

/// An integer from its binary (big-endian) or text form.
fn integer<T: std::str::FromStr, const N: usize>(
    bytes: &[u8],
    binary: bool,
    from_be: fn([u8; N]) -> T,
) -> Option<T> {
    if binary { Some(from_be(bytes.try_into().ok()?)) } else { text(bytes)?.parse().ok() }
}

fn text(bytes: &[u8]) -> Option<&str> {
    std::str::from_utf8(bytes).ok()
}

/// A uuid's 16 bytes from its text form (hex digits, hyphens anywhere, as `uuid_out` writes
/// them or `uuid_in` takes them; braces allowed).
fn parse_uuid(bytes: &[u8]) -> Option<[u8; 16]> {
    let inner = bytes.strip_prefix(b"{").and_then(|b| b.strip_suffix(b"}")).unwrap_or(bytes);
    let nibbles: Vec<u8> = inner
        .iter()
        .filter(|&&c| c != b'-')
        .map(|&c| char::from(c).to_digit(16).and_then(|d| u8::try_from(d).ok()))
        .collect::<Option<_>>()?;
    if nibbles.len() != 32 {
        return None;
    }
    let mut raw = [0u8; 16];
    for (byte, pair) in raw.iter_mut().zip(nibbles.chunks(2)) {
        *byte = pair[0] << 4 | pair[1];
    }
    Some(raw)
}

/// Days since 2000-01-01 of an ISO date (`YYYY-MM-DD`, ` BC` for years before 1), or the
/// infinities' sentinels.
fn date_text(s: &str) -> Option<i32> {
    match s {
        "infinity" => return Some(i32::MAX),
        "-infinity" => return Some(i32::MIN),
        _ => {}
    }
    let (ymd, bc) = match s.strip_suffix(" BC") {
        Some(d) => (d, true),
        None => (s, false),
    };
    let mut parts = ymd.splitn(3, '-');
    let year: i32 = parts.next()?.parse().ok()?;
    let month: i32 = parts.next()?.parse().ok()?;
    let day: i32 = parts.next()?.parse().ok()?;
    // 1 BC is year 0 of the astronomical numbering date2j uses.
    let year = if bc { 1 - year } else { year };
    Some(date2j(year, month, day) - POSTGRES_EPOCH_JDATE)
}

/// A `numeric` from its binary (send) form: ndigits, weight, sign, dscale, then the digits.
fn numeric_binary(b: &[u8]) -> Option<NumericDigits> {
    let field = |i: usize| b.get(i * 2..i * 2 + 2).map(|x| i16::from_be_bytes([x[0], x[1]]));
    let ndigits = usize::try_from(field(0)?).ok()?;
    let weight = i32::from(field(1)?);
    let sign = u16::from_be_bytes(b.get(4..6)?.try_into().ok()?);
    // NaN (0xC000) and the infinities (0xD000, 0xF000).
    if sign >= 0xC000 {
        return Some(NumericDigits { digits: None, weight: 0 });
    }
    let digits = (0..ndigits).map(|i| field(4 + i)).collect::<Option<Vec<_>>>()?;
    Some(NumericDigits { digits: Some(digits), weight })
}

/// A `numeric` from its text form as `numeric_out` writes it (`-123.4500`, `NaN`,
/// `Infinity`; an exponent is accepted too): the decimal digits grouped by four around the
/// decimal point.
fn numeric_text(b: &[u8]) -> Option<NumericDigits> {
    let s = text(b)?.trim();
    if matches!(
        s.to_ascii_lowercase().as_str(),
        "nan" | "infinity" | "+infinity" | "-infinity" | "inf" | "+inf" | "-inf"
    ) {
        return Some(NumericDigits { digits: None, weight: 0 });
    }
    let s = s.strip_prefix(['-', '+']).unwrap_or(s);
    let (mantissa, exp) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], s[i + 1..].parse::<i32>().ok()?),
        None => (s, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let all: Vec<u8> = int.bytes().chain(frac.bytes()).collect();
    if !all.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // Position of the decimal point within `all`, after the exponent moves it.
    let point = i32::try_from(int.len()).ok()?.checked_add(exp)?;
    // Groups of four decimal digits aligned on the point: pad in front so the point falls on
    // a group boundary, and behind to whole groups.
    let lead = (4 - point.rem_euclid(4)) % 4;
    let mut padded = vec![b'0'; usize::try_from(lead).ok()?];
    padded.extend_from_slice(&all);
    while padded.len() % 4 != 0 {
        padded.push(b'0');
    }
    let digits: Vec<i16> = padded
        .chunks(4)
        .map(|g| g.iter().fold(0i16, |acc, &c| acc * 10 + i16::from(c - b'0')))
        .collect();
    // The first group holds the digits just before position point+lead rounded down.
    let weight = (point + lead) / 4 - 1;
    Some(NumericDigits { digits: Some(digits), weight })
}
