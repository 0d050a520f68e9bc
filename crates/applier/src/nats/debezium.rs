//! Debezium's change-event envelope, built from the object `tail` prints.
//!
//! `{"before":..,"after":..,"source":{..},"op":"c|u|d|t|r","ts_ms":N}`, as Debezium's
//! PostgreSQL connector writes its payload (without the `schema` part). `before` holds what
//! the source sent of the old row: the key columns, or the whole row under REPLICA IDENTITY
//! FULL. `source` carries `version`, `connector` (`postgresql`), `name` (the subject prefix),
//! `ts_ms` (the commit time), `snapshot` (`"true"` for the initial copy), `db`, `schema`,
//! `table`, `txId`, `lsn` (the commit LSN as a number) and `sequence`. An unchanged TOAST
//! value is `"__debezium_unavailable_value"`, Debezium's placeholder, never `null`. A
//! transactional logical decoding message is `op: "m"` with `message: {prefix, content}`.

use serde_json::{Map, Value, json};

use pgoutput_decoder::{Lsn, PgTimestamp};

/// Debezium's placeholder for an unchanged TOAST value.
pub const UNAVAILABLE: &str = "__debezium_unavailable_value";

/// Where a change comes from, for `source`.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    /// The subject prefix (Debezium's logical server name).
    pub name: &'a str,
    /// The source database.
    pub db: &'a str,
    /// Transaction id.
    pub xid: u32,
    /// Commit LSN (or the snapshot's consistent point for the initial copy).
    pub lsn: Lsn,
    /// Commit time (or the copy's start).
    pub commit_time: PgTimestamp,
    /// A row of the initial copy.
    pub snapshot: bool,
}

/// The envelope for `object`, one object `tail` prints (insert, update, delete, truncate of one
/// table, message); an insert of the initial copy (`src.snapshot`) is a read (`op: "r"`).
/// `None` for anything else.
pub fn envelope(object: Value, src: &Source<'_>, now_ms: i64) -> Option<String> {
    let Value::Object(mut o) = object else { return None };
    let kind = o.get("type")?.as_str()?.to_owned();
    let mut take = |k: &str| o.remove(k).map(placeholders).unwrap_or(Value::Null);
    let (op, before, after, schema, table) = match kind.as_str() {
        "insert" => {
            let op = if src.snapshot { "r" } else { "c" };
            (op, Value::Null, take("new"), take("schema"), take("table"))
        }
        "update" => {
            let before = match take("old") {
                Value::Null => take("key"),
                old => old,
            };
            ("u", before, take("new"), take("schema"), take("table"))
        }
        "delete" => {
            let before = match take("old") {
                Value::Null => take("key"),
                old => old,
            };
            ("d", before, Value::Null, take("schema"), take("table"))
        }
        "truncate" => {
            let t = match take("tables") {
                Value::Array(mut ts) if !ts.is_empty() => ts.swap_remove(0),
                _ => return None,
            };
            ("t", Value::Null, Value::Null, t["schema"].clone(), t["table"].clone())
        }
        "message" => {
            let mut m = Map::new();
            m.insert("prefix".into(), take("prefix"));
            for k in ["content", "content_hex"] {
                if let Some(v) = o.remove(k) {
                    m.insert(k.into(), v);
                }
            }
            let source = source(src, Value::Null, Value::Null);
            let e = json!({"op":"m","ts_ms":now_ms,"source":source,"message":m});
            return Some(e.to_string());
        }
        _ => return None,
    };
    let source = source(src, schema, table);
    let e = json!({"before":before,"after":after,"source":source,"op":op,"ts_ms":now_ms});
    Some(e.to_string())
}

fn source(src: &Source<'_>, schema: Value, table: Value) -> Value {
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "connector": "postgresql",
        "name": src.name,
        "ts_ms": src.commit_time.unix_micros().div_euclid(1000),
        "snapshot": if src.snapshot { "true" } else { "false" },
        "db": src.db,
        "sequence": format!("[null,\"{}\"]", src.lsn.0),
        "schema": schema,
        "table": table,
        "txId": src.xid,
        "lsn": src.lsn.0,
        "xmin": null,
    })
}

/// Replaces the `tail` marker of an unchanged TOAST value by Debezium's placeholder (values
/// are strings, numbers, booleans, arrays or null, so only that marker is an object with that
/// one key, besides `binary_hex` values which keep their form).
fn placeholders(row: Value) -> Value {
    match row {
        Value::Object(mut cols) => {
            for v in cols.values_mut() {
                if let Value::Object(m) = v
                    && m.len() == 1
                    && m.get("unchanged_toast") == Some(&Value::Bool(true))
                {
                    *v = Value::String(UNAVAILABLE.into());
                }
            }
            Value::Object(cols)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(snapshot: bool) -> Source<'static> {
        Source {
            name: "pg",
            db: "shop",
            xid: 7,
            lsn: Lsn(0x1_0000_0010),
            commit_time: PgTimestamp(0),
            snapshot,
        }
    }

    fn env(line: &str, snapshot: bool) -> Value {
        let s = envelope(serde_json::from_str(line).unwrap(), &src(snapshot), 5).unwrap();
        serde_json::from_str(&s).unwrap()
    }

    #[test]
    fn every_kind_maps_to_its_op() {
        let ins = r#"{"type":"insert","schema":"public","table":"t","new":{"id":1}}"#;
        let e = env(ins, false);
        assert_eq!(
            (e["op"].as_str(), &e["before"], &e["after"]["id"]),
            (Some("c"), &Value::Null, &json!(1))
        );
        assert_eq!(env(ins, true)["op"], "r");
        assert_eq!(env(ins, true)["source"]["snapshot"], "true");
        let upd = r#"{"type":"update","schema":"public","table":"t","key":{"id":1},"new":{"id":1,"b":{"unchanged_toast":true}}}"#;
        let e = env(upd, false);
        assert_eq!(e["op"], "u");
        assert_eq!(e["before"], json!({"id":1}));
        assert_eq!(e["after"]["b"], UNAVAILABLE);
        let del = r#"{"type":"delete","schema":"public","table":"t","old":{"id":1,"b":"x"}}"#;
        let e = env(del, false);
        assert_eq!((e["op"].as_str(), &e["after"]), (Some("d"), &Value::Null));
        assert_eq!(e["before"]["b"], "x");
        let tr = r#"{"type":"truncate","tables":[{"schema":"s","table":"t"}],"cascade":false,"restart_identity":false}"#;
        let e = env(tr, false);
        assert_eq!((e["op"].as_str(), e["source"]["table"].as_str()), (Some("t"), Some("t")));
        assert_eq!(e["source"]["lsn"], 0x1_0000_0010_u64);
        assert_eq!(e["source"]["txId"], 7);
        assert_eq!(e["source"]["db"], "shop");
        assert_eq!(e["ts_ms"], 5);
    }
}
