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
//! (non-finite ones as strings), booleans, SQL NULL as `null`, an unchanged TOAST value as
//! `{"unchanged_toast":true}`, everything else a string. A json or jsonb value is a string
//! holding its JSON text exactly as PostgreSQL prints it (json keeps the source's whitespace,
//! key order and duplicate keys), as wal2json and Debezium print them: so `'null'::jsonb` is
//! `"null"`, never `null`, and a consumer parses the string when it wants the document. Binary-format values of
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
use std::fs::File;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgoutput_decoder::{Column, DecodingMessage, Lsn, OldTuple, Relation, Tuple};

use crate::error::ApplyError;
use crate::target::{Change, CommitInfo, Target, TxnInfo, TypeMap};
use binary::binary_value;
use types::{Shape, Types};

mod array;
mod binary;
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
///
/// [`flush`](Target::flush) reports a transaction durable once its lines are written and `W`
/// is flushed; built [`with_fsync`](JsonTarget::with_fsync), once the file is also fsync'd.
#[derive(Debug)]
pub struct JsonTarget<W: Write + Send> {
    out: W,
    line: String,
    progress: Option<Lsn>,
    last_end: Option<Lsn>,
    types: Types,
    sync: Option<FileSync>,
}

/// The file behind the output, fsync'd before transactions are reported durable.
#[derive(Debug)]
struct FileSync {
    file: File,
    /// Least time between two fsyncs.
    interval: Duration,
    last: Option<Instant>,
    /// End LSN of the last transaction the last fsync covered.
    synced: Option<Lsn>,
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
            sync: None,
        }
    }

    /// Reports a transaction durable only once `file` (a handle to the regular file the writer
    /// writes, say from [`File::try_clone`]) is fsync'd after its lines were written. To batch
    /// them, fsyncs are at least `interval` apart: a [`flush`](Target::flush) sooner after the
    /// last one reports what that one covered, and the applier's durability poll asks again.
    #[must_use]
    pub fn with_fsync(mut self, file: File, interval: Duration) -> Self {
        self.sync = Some(FileSync { file, interval, last: None, synced: None });
        self
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
        let Some(sync) = &mut self.sync else { return Ok(self.last_end) };
        if self.last_end > sync.synced && sync.last.is_none_or(|t| t.elapsed() >= sync.interval) {
            sync.file.sync_data().map_err(ApplyError::Output)?;
            sync.last = Some(Instant::now());
            sync.synced = self.last_end;
        }
        Ok(sync.synced)
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
    use pgoutput_decoder::PgTimestamp;

    use super::*;

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
            "-2 \"NaN\" \"{\\\"a\\\": [1, 2]}\" \"{\\n\\\"a\\\": 1}\" true {\"binary_hex\":\"\\\\x0102\",\"type_oid\":600} \
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
            (3807, r#"{"{\"a\": [1, 2]}",NULL}"#, r#"["{\"a\": [1, 2]}",null]"#),
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

    #[tokio::test]
    async fn fsyncs_are_batched_and_only_synced_commits_are_durable() {
        let file = tempfile::tempfile().unwrap();
        let interval = Duration::from_millis(300);
        let mut target = JsonTarget::new(file.try_clone().unwrap()).with_fsync(file, interval);
        let commit = |end: u64| CommitInfo {
            xid: 1,
            commit_lsn: Lsn(end - 8),
            end_lsn: Lsn(end),
            commit_time: PgTimestamp(0),
        };
        assert_eq!(target.flush().await.unwrap(), None);
        target.commit(&commit(100)).await.unwrap();
        assert_eq!(target.flush().await.unwrap(), Some(Lsn(100)), "the first fsync is at once");
        target.commit(&commit(200)).await.unwrap();
        let soon = target.flush().await.unwrap();
        assert_eq!(soon, Some(Lsn(100)), "too soon for another fsync: what the last one covered");
        std::thread::sleep(interval);
        assert_eq!(target.flush().await.unwrap(), Some(Lsn(200)));
        let mut unsynced = JsonTarget::new(Vec::new());
        unsynced.commit(&commit(300)).await.unwrap();
        assert_eq!(unsynced.flush().await.unwrap(), Some(Lsn(300)), "flushed is enough");
    }
}
