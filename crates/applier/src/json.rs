//! [`JsonTarget`]: one JSON object per line, for change data capture.
//!
//! Lines (keys in this order):
//! - `{"type":"begin","xid":N,"commit_lsn":"0/..","commit_time":"..Z"}`
//! - `{"type":"insert","schema":"public","table":"t","new":{..}}`
//! - `{"type":"update","schema":..,"table":..,"key":{..}|"old":{..},"new":{..}}` (`key` holds
//!   the key columns, from the old key when the key changed, else from the new row; `old` the
//!   whole old row under REPLICA IDENTITY FULL)
//! - `{"type":"delete","schema":..,"table":..,"key":{..}|"old":{..}}`
//! - `{"type":"truncate","tables":[{"schema":..,"table":..}],"cascade":false,"restart_identity":false}`
//! - `{"type":"message","transactional":true,"prefix":"p","lsn":"0/..","content":".."}`
//!   (`content_hex` instead of `content` when the content is not UTF-8)
//! - `{"type":"commit","xid":N,"commit_lsn":"0/..","end_lsn":"0/..","commit_time":".."}`
//!
//! Values are typed by the column's type OID: integers, floats and numerics as JSON numbers
//! (non-finite ones as strings), booleans, json/jsonb embedded, NULL as `null`, an unchanged
//! TOAST value as `{"unchanged_toast":true}`, everything else a string. Binary-format values of
//! common builtin types are decoded; other binary values become
//! `{"binary_hex":"\\x..","type_oid":N}`.
//!
//! Arrays become JSON arrays in both formats: nested arrays for more dimensions, `null` for
//! NULL elements, each element typed as a value of the element type is (`{1,2}` is `[1,2]`,
//! `{t,NULL}` is `[true,null]`). Lower bounds are dropped (`[0:1]={1,2}` is `[1,2]`), as
//! PostgreSQL's `array_to_json` drops them. `int2vector` and `oidvector` are arrays too. Builtin
//! array types are known by OID; for other types (arrays of enums or composites, domains) a
//! target built [`with_catalog`](JsonTarget::with_catalog) asks the source's `pg_type` once per
//! type: a domain is typed as its base type, an enum is its label. Without a catalog such
//! values stay strings (the stream names a non-builtin type but not its element or base type).

use std::fmt::Write as _;
use std::io::Write;
use std::sync::Arc;

use pgoutput_decoder::{Column, DecodingMessage, Lsn, OldTuple, PgTimestamp, Relation, Tuple};

use crate::error::ApplyError;
use crate::target::{Change, CommitInfo, Target, TxnInfo, TypeMap};
use types::{Shape, Types};

mod array;
mod types;

mod oid {
    pub const BOOL: u32 = 16;
    pub const BYTEA: u32 = 17;
    pub const CHAR: u32 = 18;
    pub const NAME: u32 = 19;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const TEXT: u32 = 25;
    pub const OID: u32 = 26;
    pub const JSON: u32 = 114;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const BPCHAR: u32 = 1042;
    pub const VARCHAR: u32 = 1043;
    pub const DATE: u32 = 1082;
    pub const TIMESTAMP: u32 = 1114;
    pub const TIMESTAMPTZ: u32 = 1184;
    pub const NUMERIC: u32 = 1700;
    pub const UUID: u32 = 2950;
    pub const JSONB: u32 = 3802;
}

/// Writes changes as JSON lines to `W`, flushing at every commit.
#[derive(Debug)]
pub struct JsonTarget<W: Write + Send> {
    out: W,
    line: String,
    progress: Option<Lsn>,
    last_end: Option<Lsn>,
    types: Types,
}

impl<W: Write + Send> JsonTarget<W> {
    /// A target writing to `out`, starting without stored progress.
    pub fn new(out: W) -> Self {
        JsonTarget {
            out,
            line: String::with_capacity(1024),
            progress: None,
            last_end: None,
            types: Types::default(),
        }
    }

    /// Looks up the non-builtin column types (arrays of user-defined types, domains, enums) in
    /// `catalog`, a connection to the source database, once per type, so their values are
    /// typed too (see the module docs).
    #[must_use]
    pub fn with_catalog(mut self, catalog: tokio_postgres::Client) -> Self {
        self.types = Types::with_catalog(catalog);
        self
    }

    /// Skip transactions ending at or before `lsn` (e.g. what an earlier run wrote).
    #[must_use]
    pub fn with_progress(mut self, lsn: Option<Lsn>) -> Self {
        self.progress = lsn;
        self
    }

    /// The writer.
    pub fn get_ref(&self) -> &W {
        &self.out
    }

    /// Gives the writer back.
    pub fn into_inner(self) -> W {
        self.out
    }

    fn emit(&mut self) -> Result<(), ApplyError> {
        self.line.push('\n');
        let r = self.out.write_all(self.line.as_bytes()).map_err(ApplyError::Output);
        self.line.clear();
        r
    }

    fn start(&mut self, kind: &str) {
        self.line.clear();
        self.line.push_str("{\"type\":");
        push_str(&mut self.line, kind);
    }

    fn rel_head(&mut self, kind: &str, rel: &Relation) {
        self.start(kind);
        self.line.push_str(",\"schema\":");
        push_str(
            &mut self.line,
            if rel.namespace.is_empty() { "pg_catalog" } else { &rel.namespace },
        );
        self.line.push_str(",\"table\":");
        push_str(&mut self.line, &rel.name);
    }

    fn render(&mut self, change: &Change) {
        match change {
            Change::Insert { rel, new } => {
                self.rel_head("insert", rel);
                self.line.push_str(",\"new\":");
                row(&mut self.line, &self.types, rel, new, None);
            }
            Change::Update { rel, old, new } => {
                self.rel_head("update", rel);
                old_or_key(&mut self.line, &self.types, rel, old.as_ref(), Some(new));
                self.line.push_str(",\"new\":");
                row(&mut self.line, &self.types, rel, new, None);
            }
            Change::Delete { rel, old } => {
                self.rel_head("delete", rel);
                old_or_key(&mut self.line, &self.types, rel, Some(old), None);
            }
            Change::Truncate { rels, cascade, restart_identity } => {
                self.start("truncate");
                self.line.push_str(",\"tables\":[");
                for (i, r) in rels.iter().enumerate() {
                    if i > 0 {
                        self.line.push(',');
                    }
                    self.line.push_str("{\"schema\":");
                    push_str(&mut self.line, &r.namespace);
                    self.line.push_str(",\"table\":");
                    push_str(&mut self.line, &r.name);
                    self.line.push('}');
                }
                let _ = write!(
                    self.line,
                    "],\"cascade\":{cascade},\"restart_identity\":{restart_identity}"
                );
            }
            Change::Message(m) => self.render_message(m),
        }
        self.line.push('}');
    }

    fn render_message(&mut self, m: &DecodingMessage) {
        self.start("message");
        let _ = write!(self.line, ",\"transactional\":{},\"prefix\":", m.transactional);
        push_str(&mut self.line, &m.prefix);
        let _ = write!(self.line, ",\"lsn\":\"{}\"", m.lsn);
        match std::str::from_utf8(&m.content) {
            Ok(s) => {
                self.line.push_str(",\"content\":");
                push_str(&mut self.line, s);
            }
            Err(_) => {
                self.line.push_str(",\"content_hex\":");
                push_str(&mut self.line, &hex(&m.content));
            }
        }
    }
}

/// `,"key":{..}` or `,"old":{..}`.
fn old_or_key(
    line: &mut String,
    types: &Types,
    rel: &Relation,
    old: Option<&OldTuple>,
    new: Option<&Tuple>,
) {
    match old {
        Some(OldTuple::Full(t)) => {
            line.push_str(",\"old\":");
            row(line, types, rel, t, None);
        }
        Some(OldTuple::Key(t)) => {
            line.push_str(",\"key\":");
            row(line, types, rel, t, Some(true));
        }
        None => {
            if let Some(new) = new
                && rel.columns.iter().any(|c| c.is_key)
            {
                line.push_str(",\"key\":");
                row(line, types, rel, new, Some(true));
            }
        }
    }
}

/// A row as a JSON object; `keys_only` keeps only key columns.
fn row(line: &mut String, types: &Types, rel: &Relation, t: &Tuple, keys_only: Option<bool>) {
    line.push('{');
    let mut first = true;
    for (c, v) in rel.columns.iter().zip(t) {
        if keys_only.is_some() && !c.is_key {
            continue;
        }
        if !first {
            line.push(',');
        }
        first = false;
        push_str(line, &c.name);
        line.push(':');
        value(line, types, c.type_oid, v);
    }
    line.push('}');
}

/// Appends a JSON string literal.
fn push_str(line: &mut String, s: &str) {
    // serde_json's escaping, without building a Value.
    line.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()));
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(2 + 2 * bytes.len());
    s.push_str("\\x");
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Whether `s` is a JSON number literal.
fn is_json_number(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    let digits = |i: &mut usize| {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i > start
    };
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(c) if c.is_ascii_digit() => {
            digits(&mut i);
        }
        _ => return false,
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        if !digits(&mut i) {
            return false;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if !digits(&mut i) {
            return false;
        }
    }
    i == b.len()
}

fn number_or_string(line: &mut String, s: &str) {
    if is_json_number(s) { line.push_str(s) } else { push_str(line, s) }
}

/// Embeds JSON text, re-serialized compactly if it spans lines; a string if it is not JSON.
fn embed_json(line: &mut String, s: &str) {
    match serde_json::from_str::<serde::de::IgnoredAny>(s) {
        Ok(_) if !s.contains(['\n', '\r']) => line.push_str(s.trim()),
        Ok(_) => match serde_json::from_str::<serde_json::Value>(s) {
            Ok(v) => line.push_str(&v.to_string()),
            Err(_) => push_str(line, s),
        },
        Err(_) => push_str(line, s),
    }
}

fn value(line: &mut String, types: &Types, type_oid: u32, v: Column<'_>) {
    match v {
        Column::Null => line.push_str("null"),
        Column::UnchangedToast => line.push_str("{\"unchanged_toast\":true}"),
        Column::Text(b) => text_value(line, types, type_oid, &String::from_utf8_lossy(b)),
        Column::Binary(b) => binary_or_hex(line, types, type_oid, b),
    }
}

/// A value in PostgreSQL's text form.
fn text_value(line: &mut String, types: &Types, type_oid: u32, s: &str) {
    match types.shape(type_oid) {
        Shape::Scalar(
            oid::INT2 | oid::INT4 | oid::INT8 | oid::OID | oid::FLOAT4 | oid::FLOAT8 | oid::NUMERIC,
        ) => number_or_string(line, s),
        Shape::Scalar(oid::BOOL) => line.push_str(if s == "t" { "true" } else { "false" }),
        Shape::Scalar(oid::JSON | oid::JSONB) => embed_json(line, s),
        Shape::Scalar(_) | Shape::Enum => push_str(line, s),
        Shape::Array { elem, delim } => {
            let json = array::from_text(s, delim, &mut |out, e| match e {
                Some(e) => text_value(out, types, elem, e),
                None => out.push_str("null"),
            });
            match json {
                Some(json) => line.push_str(&json),
                None => push_str(line, s),
            }
        }
        Shape::Vector { elem } => {
            line.push('[');
            for (i, e) in s.split_ascii_whitespace().enumerate() {
                if i > 0 {
                    line.push(',');
                }
                text_value(line, types, elem, e);
            }
            line.push(']');
        }
    }
}

/// A value in binary (send) form: decoded when its type is known, else as hex.
fn binary_or_hex(line: &mut String, types: &Types, type_oid: u32, b: &[u8]) {
    let decoded = match types.shape(type_oid) {
        Shape::Scalar(oid) => binary_value(line, oid, b),
        Shape::Enum => match std::str::from_utf8(b) {
            Ok(s) => {
                push_str(line, s);
                true
            }
            Err(_) => false,
        },
        Shape::Array { .. } | Shape::Vector { .. } => {
            let json =
                array::from_binary(b, &mut |out, elem, e| binary_or_hex(out, types, elem, e));
            json.map(|json| line.push_str(&json)).is_some()
        }
    };
    if !decoded {
        line.push_str("{\"binary_hex\":");
        push_str(line, &hex(b));
        let _ = write!(line, ",\"type_oid\":{type_oid}}}");
    }
}

fn float(line: &mut String, f: f64, text: impl std::fmt::Display) {
    if f.is_finite() {
        let _ = write!(line, "{text}");
    } else if f.is_nan() {
        push_str(line, "NaN");
    } else {
        push_str(line, if f > 0.0 { "Infinity" } else { "-Infinity" });
    }
}

/// Decodes a binary (send format) value of a common builtin type; false if not handled.
fn binary_value(line: &mut String, type_oid: u32, b: &[u8]) -> bool {
    match type_oid {
        oid::BOOL if b.len() == 1 => line.push_str(if b[0] != 0 { "true" } else { "false" }),
        oid::INT2 => match <[u8; 2]>::try_from(b) {
            Ok(a) => {
                let _ = write!(line, "{}", i16::from_be_bytes(a));
            }
            Err(_) => return false,
        },
        oid::INT4 => match <[u8; 4]>::try_from(b) {
            Ok(a) => {
                let _ = write!(line, "{}", i32::from_be_bytes(a));
            }
            Err(_) => return false,
        },
        oid::OID => match <[u8; 4]>::try_from(b) {
            Ok(a) => {
                let _ = write!(line, "{}", u32::from_be_bytes(a));
            }
            Err(_) => return false,
        },
        oid::INT8 => match <[u8; 8]>::try_from(b) {
            Ok(a) => {
                let _ = write!(line, "{}", i64::from_be_bytes(a));
            }
            Err(_) => return false,
        },
        oid::FLOAT4 => match <[u8; 4]>::try_from(b) {
            Ok(a) => {
                let f = f32::from_be_bytes(a);
                float(line, f64::from(f), f);
            }
            Err(_) => return false,
        },
        oid::FLOAT8 => match <[u8; 8]>::try_from(b) {
            Ok(a) => {
                let f = f64::from_be_bytes(a);
                float(line, f, f);
            }
            Err(_) => return false,
        },
        oid::TEXT | oid::VARCHAR | oid::BPCHAR | oid::NAME | oid::CHAR => {
            match std::str::from_utf8(b) {
                Ok(s) => push_str(line, s),
                Err(_) => return false,
            }
        }
        oid::JSON => match std::str::from_utf8(b) {
            Ok(s) => embed_json(line, s),
            Err(_) => return false,
        },
        oid::JSONB => match b.split_first() {
            Some((1, rest)) => match std::str::from_utf8(rest) {
                Ok(s) => embed_json(line, s),
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

impl<W: Write + Send> Target for JsonTarget<W> {
    async fn load_progress(&mut self) -> Result<Option<Lsn>, ApplyError> {
        Ok(self.progress)
    }

    async fn begin(&mut self, txn: &TxnInfo) -> Result<(), ApplyError> {
        self.start("begin");
        let _ = write!(
            self.line,
            ",\"xid\":{},\"commit_lsn\":\"{}\",\"commit_time\":\"{}\"",
            txn.xid, txn.commit_lsn, txn.commit_time
        );
        if let Some(gid) = &txn.gid {
            self.line.push_str(",\"gid\":");
            push_str(&mut self.line, gid);
        }
        self.line.push('}');
        self.emit()
    }

    async fn relation(&mut self, rel: &Arc<Relation>, _types: &TypeMap) -> Result<(), ApplyError> {
        self.types.learn(rel.columns.iter().map(|c| c.type_oid)).await
    }

    async fn change(&mut self, change: Change) -> Result<(), ApplyError> {
        // Changes replayed from a streamed transaction may bring relations not seen yet.
        let rel = match &change {
            Change::Insert { rel, .. }
            | Change::Update { rel, .. }
            | Change::Delete { rel, .. } => Some(rel),
            Change::Truncate { .. } | Change::Message(_) => None,
        };
        if let Some(rel) = rel {
            self.types.learn(rel.columns.iter().map(|c| c.type_oid)).await?;
        }
        self.render(&change);
        self.emit()
    }

    async fn commit(&mut self, commit: &CommitInfo) -> Result<(), ApplyError> {
        self.start("commit");
        let _ = write!(
            self.line,
            ",\"xid\":{},\"commit_lsn\":\"{}\",\"end_lsn\":\"{}\",\"commit_time\":\"{}\"}}",
            commit.xid, commit.commit_lsn, commit.end_lsn, commit.commit_time
        );
        self.emit()?;
        self.out.flush().map_err(ApplyError::Output)?;
        self.last_end = Some(commit.end_lsn);
        Ok(())
    }

    async fn flush(&mut self) -> Result<Option<Lsn>, ApplyError> {
        self.out.flush().map_err(ApplyError::Output)?;
        Ok(self.last_end)
    }

    async fn message(&mut self, msg: &DecodingMessage) -> Result<(), ApplyError> {
        self.render_message(msg);
        self.line.push('}');
        self.emit()?;
        self.out.flush().map_err(ApplyError::Output)
    }
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

    #[test]
    fn json_numbers() {
        for ok in ["0", "-1", "12.5", "1e+10", "1.5E-07", "123456789012345678901234567890.5"] {
            assert!(is_json_number(ok), "{ok}");
        }
        for bad in ["", "-", "01", "1.", ".5", "NaN", "Infinity", "1e", "+1", "0x1"] {
            assert!(!is_json_number(bad), "{bad}");
        }
    }

    #[test]
    fn values() {
        let types = Types::default();
        let mut s = String::new();
        value(&mut s, &types, oid::INT4, Column::Binary(&[0xff, 0xff, 0xff, 0xfe]));
        s.push(' ');
        value(&mut s, &types, oid::FLOAT8, Column::Text(b"NaN"));
        s.push(' ');
        value(&mut s, &types, oid::JSONB, Column::Text(b"{\"a\": [1, 2]}"));
        s.push(' ');
        value(&mut s, &types, oid::JSON, Column::Text(b"{\n\"a\": 1}"));
        s.push(' ');
        value(&mut s, &types, oid::BOOL, Column::Text(b"t"));
        s.push(' ');
        value(&mut s, &types, 600, Column::Binary(&[1, 2]));
        s.push(' ');
        value(&mut s, &types, oid::UUID, Column::Binary(&[0x12; 16]));
        s.push(' ');
        value(&mut s, &types, oid::TEXT, Column::UnchangedToast);
        assert_eq!(
            s,
            "-2 \"NaN\" {\"a\": [1, 2]} {\"a\":1} true {\"binary_hex\":\"\\\\x0102\",\"type_oid\":600} \
             \"12121212-1212-1212-1212-121212121212\" {\"unchanged_toast\":true}"
        );
    }

    fn render(type_oid: u32, v: Column<'_>) -> String {
        let mut s = String::new();
        value(&mut s, &Types::default(), type_oid, v);
        s
    }

    #[test]
    fn arrays_in_text() {
        let cases: &[(u32, &str, &str)] = &[
            (1007, "{1,NULL,-3}", "[1,null,-3]"),
            (1007, "[0:1]={1,2}", "[1,2]"),
            (1007, "{{1,2},{3,NULL}}", "[[1,2],[3,null]]"),
            (1007, "{}", "[]"),
            (
                1009,
                r#"{"a\"b","c\\d","e,f","NULL",NULL,""}"#,
                r#"["a\"b","c\\d","e,f","NULL",null,""]"#,
            ),
            (1000, "{t,f,NULL}", "[true,false,null]"),
            (1231, "{1.50,NaN,-Infinity}", r#"[1.50,"NaN","-Infinity"]"#),
            (1022, "{1e+300,Infinity}", r#"[1e+300,"Infinity"]"#),
            (3807, r#"{"{\"a\": [1, 2]}",NULL}"#, r#"[{"a": [1, 2]},null]"#),
            (1020, "{(3,4),(1,2);(1,1),(0,0)}", r#"["(3,4),(1,2)","(1,1),(0,0)"]"#),
            (22, "1 2", "[1,2]"),
            (1007, "{1,2", r#""{1,2""#),
        ];
        for (oid, text, want) in cases {
            assert_eq!(render(*oid, Column::Text(text.as_bytes())), *want, "{oid} {text}");
        }
    }

    #[test]
    fn arrays_in_binary() {
        // int4[] [2:3]={7,NULL}; then text[] {{"a"},{"b"}}; then an unknown element type.
        let mut int4 = Vec::new();
        for w in [1i32, 1, 23, 2, 2, 4, 7, -1] {
            int4.extend_from_slice(&w.to_be_bytes());
        }
        assert_eq!(render(1007, Column::Binary(&int4)), "[7,null]");
        let mut text = Vec::new();
        for w in [2i32, 0, 25, 2, 1, 1, 1, 1] {
            text.extend_from_slice(&w.to_be_bytes());
        }
        text.extend_from_slice(b"a");
        text.extend_from_slice(&1i32.to_be_bytes());
        text.extend_from_slice(b"b");
        assert_eq!(render(1009, Column::Binary(&text)), r#"[["a"],["b"]]"#);
        let mut points = Vec::new();
        for w in [1i32, 0, 600, 1, 1, 2] {
            points.extend_from_slice(&w.to_be_bytes());
        }
        points.extend_from_slice(&[1, 2]);
        assert_eq!(
            render(1017, Column::Binary(&points)),
            r#"[{"binary_hex":"\\x0102","type_oid":600}]"#
        );
        assert_eq!(
            render(1007, Column::Binary(&[0, 0, 0, 1])),
            r#"{"binary_hex":"\\x00000001","type_oid":1007}"#
        );
    }
}
