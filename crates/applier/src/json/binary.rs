//! Binary (send format) values of common builtin types, decoded to JSON.

use std::fmt::Write as _;

use pgoutput_decoder::PgTimestamp;

use super::{hex, number_or_string, oid, push_str};

fn float(line: &mut String, f: f64, text: impl std::fmt::Display) {
    if f.is_finite() {
        let _ = write!(line, "{text}");
    } else if f.is_nan() {
        push_str(line, "NaN");
    } else {
        push_str(line, if f > 0.0 { "Infinity" } else { "-Infinity" });
    }
}

/// `b` as an array of `N` bytes, if it is that long.
fn fixed<const N: usize>(b: &[u8]) -> Option<[u8; N]> {
    b.try_into().ok()
}

fn put(line: &mut String, v: impl std::fmt::Display) {
    let _ = write!(line, "{v}");
}

/// Decodes a binary (send format) value of a common builtin type; false if not handled.
pub(super) fn binary_value(line: &mut String, type_oid: u32, b: &[u8]) -> bool {
    match type_oid {
        oid::BOOL if b.len() == 1 => line.push_str(if b[0] != 0 { "true" } else { "false" }),
        oid::INT2 => return fixed(b).map(|a| put(line, i16::from_be_bytes(a))).is_some(),
        oid::INT4 => return fixed(b).map(|a| put(line, i32::from_be_bytes(a))).is_some(),
        oid::OID => return fixed(b).map(|a| put(line, u32::from_be_bytes(a))).is_some(),
        oid::INT8 => return fixed(b).map(|a| put(line, i64::from_be_bytes(a))).is_some(),
        oid::FLOAT4 => {
            let f = fixed(b).map(f32::from_be_bytes);
            return f.map(|f| float(line, f64::from(f), f)).is_some();
        }
        oid::FLOAT8 => {
            return fixed(b).map(f64::from_be_bytes).map(|f| float(line, f, f)).is_some();
        }
        oid::TEXT | oid::VARCHAR | oid::BPCHAR | oid::NAME | oid::CHAR => {
            match std::str::from_utf8(b) {
                Ok(s) => push_str(line, s),
                Err(_) => return false,
            }
        }
        oid::JSON => match std::str::from_utf8(b) {
            Ok(s) => push_str(line, s),
            Err(_) => return false,
        },
        oid::JSONB => match b.split_first() {
            Some((1, rest)) => match std::str::from_utf8(rest) {
                Ok(s) => push_str(line, s),
                Err(_) => return false,
            },
            _ => return false,
        },
        oid::BYTEA => push_str(line, &hex(b)),
        oid::UUID if b.len() == 16 => {
            let h = hex(b);
            let h = &h[2..];
            let _ = write!(
                line,
                "\"{}-{}-{}-{}-{}\"",
                &h[0..8],
                &h[8..12],
                &h[12..16],
                &h[16..20],
                &h[20..32]
            );
        }
        oid::TIMESTAMPTZ | oid::TIMESTAMP => match <[u8; 8]>::try_from(b) {
            Ok(a) => {
                let micros = i64::from_be_bytes(a);
                let s = match micros {
                    i64::MAX => "infinity".to_owned(),
                    i64::MIN => "-infinity".to_owned(),
                    m => {
                        let s = PgTimestamp(m).to_string();
                        if type_oid == oid::TIMESTAMP {
                            s.trim_end_matches('Z').to_owned()
                        } else {
                            s
                        }
                    }
                };
                push_str(line, &s);
            }
            Err(_) => return false,
        },
        oid::DATE => match <[u8; 4]>::try_from(b) {
            Ok(a) => match i32::from_be_bytes(a) {
                i32::MAX => push_str(line, "infinity"),
                i32::MIN => push_str(line, "-infinity"),
                days => push_str(line, &date_string(days)),
            },
            Err(_) => return false,
        },
        oid::NUMERIC => match numeric_string(b) {
            Some(s) => number_or_string(line, &s),
            None => return false,
        },
        _ => return false,
    }
    true
}

/// `YYYY-MM-DD` for days since 2000-01-01 (proleptic Gregorian; years before 1 as BC).
fn date_string(days: i32) -> String {
    // Howard Hinnant's civil_from_days, shifted from 1970 to 2000.
    let z = i64::from(days) + 10_957 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    if y <= 0 { format!("{:04}-{m:02}-{d:02} BC", 1 - y) } else { format!("{y:04}-{m:02}-{d:02}") }
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
    fn dates() {
        assert_eq!(date_string(0), "2000-01-01");
        assert_eq!(date_string(-1), "1999-12-31");
        assert_eq!(date_string(366), "2001-01-01");
        assert_eq!(date_string(9_861), "2026-12-31");
    }
}
