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
//! `{"unchanged_toast":true}`, everything else a string holding the text the type's output
//! function prints (what `psql` shows). So a json or jsonb value is a string holding its JSON
//! text exactly as PostgreSQL prints it (json keeps the source's whitespace, key order and
//! duplicate keys), as wal2json and Debezium print them: `'null'::jsonb` is `"null"`, never
//! `null`, and a consumer parses the string when it wants the document.
//!
//! Arrays become JSON arrays: nested arrays for more dimensions, `null` for NULL elements,
//! each element typed as a value of the element type is (`{1,2}` is `[1,2]`, `{t,NULL}` is
//! `[true,null]`). Lower bounds are dropped (`[0:1]={1,2}` is `[1,2]`), as PostgreSQL's
//! `array_to_json` drops them. `int2vector` and `oidvector` are arrays too. Builtin types are
//! known by OID; for other types a target built [`with_catalog`](JsonTarget::with_catalog) asks
//! the source's catalog once per type: a domain is typed as its base type, an enum is its
//! label, arrays of them are arrays. Without a catalog such values stay strings (the stream
//! names a non-builtin type but not its element or base type).
//!
//! Binary-format values print exactly as text-format ones do: each is decoded to the text its
//! type's output function prints on the source, then typed the same way. That text depends on
//! settings of the source's session: pgmirror's replication connection sets DateStyle
//! `ISO, MDY`, IntervalStyle `postgres`, TimeZone `UTC` and extra_float_digits 3 (so
//! timestamps are `2024-02-29 10:34:56.5+00`, `4713-01-01 00:00:00+00 BC`, intervals
//! `-1 years +2 days -00:00:01.5`, floats the shortest exact digits), which binary values are
//! printed by; `bytea_output` and `lc_monetary` are read from the catalog once (without one:
//! hex, and the C locale's `$1,234.56`). Money's binary form is a count of the currency's
//! smallest unit; its layout is learned from how the source prints a probe amount, and one not
//! recognized prints as a plain amount (`-1234.56`, with a warning). `reg*` values (an OID in
//! binary) print the object's name as the source's catalog has it when the change is printed
//! (looked up once per transaction; without a catalog, the OID). Composite values, ranges and
//! multiranges print their text forms, their fields and bounds decoded the same way. Values of
//! types pgmirror does not know, from extensions (and PostgreSQL's internal statistics types),
//! print as `{"binary_hex":"\\x..","type_oid":N}`: text format prints them as the source does.

use std::fmt::Write as _;
use std::fs::File;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgoutput_decoder::{DecodingMessage, Lsn, OldTuple, Relation, Tuple};

use crate::error::ApplyError;
use crate::target::{Change, CommitInfo, Target, TxnInfo, TypeMap};
use types::{Cx, Types, Want};
use value::value;

mod array;
mod binary;
mod composite;
mod datetime;
mod float;
mod geometry;
mod money;
mod network;
mod oid;
mod textsearch;
mod types;
mod value;

/// Rendering a change again after looking up what it found missing stops after this many
/// rounds (a composite's fields can be composites in turn).
const MAX_LOOKUP_ROUNDS: usize = 8;

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

    /// Renders `change` as the object `tail` prints (without the newline) and returns it,
    /// looking up on the source what its types need first.
    pub(crate) async fn render_change(&mut self, change: &Change) -> Result<&str, ApplyError> {
        // Changes replayed from a streamed transaction may bring relations not seen yet.
        let rel = match change {
            Change::Insert { rel, .. }
            | Change::Update { rel, .. }
            | Change::Delete { rel, .. } => Some(rel),
            Change::Truncate { .. } | Change::Message(_) => None,
        };
        if let Some(rel) = rel {
            self.types.learn(rel.columns.iter().map(|c| c.type_oid)).await?;
        }
        // Composite fields of types not seen yet and the names of reg* values are looked up
        // on the source, then the change is rendered again.
        for _ in 0..MAX_LOOKUP_ROUNDS {
            let wants = self.render(change);
            if wants.is_empty() {
                break;
            }
            self.types.resolve(wants).await?;
        }
        Ok(&self.line)
    }

    /// Learns the types of `rel`'s columns (see [`Target::relation`]).
    pub(crate) async fn learn_relation(&mut self, rel: &Relation) -> Result<(), ApplyError> {
        self.types.learn(rel.columns.iter().map(|c| c.type_oid)).await
    }

    /// Forgets the names of `reg*` values looked up for the transaction that ended.
    pub(crate) fn end_transaction(&mut self) {
        self.types.forget_names();
    }

    fn emit(&mut self) -> Result<(), ApplyError> {
        self.line.push('\n');
        let r = self.out.write_all(self.line.as_bytes()).map_err(ApplyError::Output);
        self.line.clear();
        r
    }

    fn start(&mut self, kind: &str) {
        start(&mut self.line, kind);
    }

    /// Renders `change` into the line; returns what it found missing on the source.
    fn render(&mut self, change: &Change) -> Vec<Want> {
        let cx = Cx::new(&self.types);
        let line = &mut self.line;
        match change {
            Change::Insert { rel, new } => {
                rel_head(line, "insert", rel);
                line.push_str(",\"new\":");
                row(line, &cx, rel, new, false);
            }
            Change::Update { rel, old, new } => {
                rel_head(line, "update", rel);
                old_or_key(line, &cx, rel, old.as_ref(), Some(new));
                line.push_str(",\"new\":");
                row(line, &cx, rel, new, false);
            }
            Change::Delete { rel, old } => {
                rel_head(line, "delete", rel);
                old_or_key(line, &cx, rel, Some(old), None);
            }
            Change::Truncate { rels, cascade, restart_identity } => {
                start(line, "truncate");
                line.push_str(",\"tables\":[");
                for (i, r) in rels.iter().enumerate() {
                    if i > 0 {
                        line.push(',');
                    }
                    line.push_str("{\"schema\":");
                    push_str(line, &r.namespace);
                    line.push_str(",\"table\":");
                    push_str(line, &r.name);
                    line.push('}');
                }
                let _ =
                    write!(line, "],\"cascade\":{cascade},\"restart_identity\":{restart_identity}");
            }
            Change::Message(m) => {
                let wants = cx.into_wants();
                self.render_message(m);
                self.line.push('}');
                return wants;
            }
        }
        line.push('}');
        cx.into_wants()
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

fn start(line: &mut String, kind: &str) {
    line.clear();
    line.push_str("{\"type\":");
    push_str(line, kind);
}

fn rel_head(line: &mut String, kind: &str, rel: &Relation) {
    start(line, kind);
    line.push_str(",\"schema\":");
    push_str(line, if rel.namespace.is_empty() { "pg_catalog" } else { &rel.namespace });
    line.push_str(",\"table\":");
    push_str(line, &rel.name);
}

/// `,"key":{..}` or `,"old":{..}`.
fn old_or_key(
    line: &mut String,
    cx: &Cx<'_>,
    rel: &Relation,
    old: Option<&OldTuple>,
    new: Option<&Tuple>,
) {
    match old {
        Some(OldTuple::Full(t)) => {
            line.push_str(",\"old\":");
            row(line, cx, rel, t, false);
        }
        Some(OldTuple::Key(t)) => {
            line.push_str(",\"key\":");
            row(line, cx, rel, t, true);
        }
        None => {
            if let Some(new) = new
                && rel.columns.iter().any(|c| c.is_key)
            {
                line.push_str(",\"key\":");
                row(line, cx, rel, new, true);
            }
        }
    }
}

/// A row as a JSON object; `keys_only` keeps only key columns.
fn row(line: &mut String, cx: &Cx<'_>, rel: &Relation, t: &Tuple, keys_only: bool) {
    line.push('{');
    let mut first = true;
    for (c, v) in rel.columns.iter().zip(t) {
        if keys_only && !c.is_key {
            continue;
        }
        if !first {
            line.push(',');
        }
        first = false;
        push_str(line, &c.name);
        line.push(':');
        value(line, cx, c.type_oid, v);
    }
    line.push('}');
}

/// Appends a JSON string literal.
fn push_str(line: &mut String, s: &str) {
    // Most names and values need no escaping: copied as they are, without an allocation.
    if !s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        line.reserve(s.len() + 2);
        line.push('"');
        line.push_str(s);
        line.push('"');
        return;
    }
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

/// The JSON array of an array value in PostgreSQL's text form, its elements typed as values
/// of the builtin type `elem` are (other element types become strings); `None` when the text
/// is not an array. Other targets store arrays this way.
pub(crate) fn array_text_to_json(elem: u32, delim: u8, text: &str) -> Option<String> {
    let types = Types::default();
    let cx = Cx::new(&types);
    array::from_text(text, delim, &mut |out, e| match e {
        Some(e) => value::text_value(out, &cx, elem, e),
        None => out.push_str("null"),
    })
}

/// The text PostgreSQL's output function prints for a binary value of a builtin type, with
/// the default settings (hex bytea, the C locale's money); `None` for other types.
pub(crate) fn binary_to_text(type_oid: u32, b: &[u8]) -> Option<String> {
    let types = Types::default();
    binary::to_text(&Cx::new(&types), type_oid, b)
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
        self.learn_relation(rel).await
    }

    async fn change(&mut self, change: Change) -> Result<(), ApplyError> {
        self.render_change(&change).await?;
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
        self.end_transaction();
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
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let mut all: Vec<String> = (0..=0x7f_u8).map(|b| char::from(b).to_string()).collect();
        all.extend(
            ["", "plain", "a\"b", "c\\d", "tab\there", "Ünïcode \u{2028} 😀"].map(String::from),
        );
        for s in all {
            let mut line = String::from("x");
            push_str(&mut line, &s);
            assert_eq!(line, format!("x{}", serde_json::to_string(&s).unwrap()), "{s:?}");
        }
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
