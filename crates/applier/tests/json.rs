//! JsonTarget: the exact lines of a scripted workload, read from a real slot.

mod common;

use applier::{ApplierConfig, JsonTarget};
use common::{apply_all, exec_each, setup};

const SCHEMA: &str =
    "CREATE TABLE item (id int PRIMARY KEY, name text, price numeric(8,2), ok bool,
        doc jsonb, tag uuid, at timestamptz, raw bytea, f float8, n int8, d date, big text);
    ALTER TABLE item ALTER COLUMN big SET STORAGE EXTERNAL;
    CREATE TABLE bag (a int, b text); ALTER TABLE bag REPLICA IDENTITY FULL;";

const WORKLOAD: &str = "INSERT INTO item VALUES (1, 'a \"q\"', 12.50, true, '{\"k\": [1, 2.5]}',
        '12121212-1212-1212-1212-121212121212', '2026-01-02 03:04:05.25+00', '\\x0102', 'NaN', -7,
        '2024-02-29', repeat('x', 5000));
    UPDATE item SET price = -0.01, ok = NULL, f = 1.5 WHERE id = 1;
    UPDATE item SET id = 2 WHERE id = 1;
    INSERT INTO bag VALUES (1, NULL);
    DELETE FROM bag;
    SELECT pg_logical_emit_message(true, 'app', 'hello');
    DELETE FROM item;
    TRUNCATE bag";

/// Blanks what differs between runs: LSNs, times and xids.
fn normalize(line: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
    for k in ["commit_lsn", "end_lsn", "lsn", "commit_time", "xid"] {
        if let Some(x) = v.get_mut(k) {
            *x = serde_json::Value::String("*".into());
        }
    }
    v.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripted_workload_lines() {
    let env = setup("json", SCHEMA, false).await;
    exec_each(&env.src, WORKLOAD).await;
    for binary in [true, false] {
        let mut msgs = env.fetch(1, binary, &[("messages", "true")], None).await;
        // Drop the helper transaction `fetch` commits to flush the WAL (it comes last).
        let flush_at = msgs.iter().position(|m| {
            matches!(m, pgoutput_decoder::LogicalMessage::Message(x) if x.prefix == "test-flush")
        });
        msgs.truncate(flush_at.expect("the flush message") - 1);
        if binary {
            // Fetched once: replay into a second slot reading is not possible, so rerun the
            // workload for the text-format pass.
            exec_each(&env.src, WORKLOAD).await;
        }
        let target = JsonTarget::new(Vec::new());
        let applier = apply_all(target, &msgs, ApplierConfig::default()).await.unwrap();
        let out = String::from_utf8(applier.into_target().into_inner()).unwrap();
        let lines: Vec<String> = out.lines().map(normalize).collect();
        let big = "x".repeat(5000);
        // The same in both formats.
        let (at, raw, date) = ("\"2026-01-02 03:04:05.25+00\"", "\"\\\\x0102\"", "\"2024-02-29\"");
        let row1 = format!(
            r#"{{"id":1,"name":"a \"q\"","price":12.50,"ok":true,"doc":"{{\"k\": [1, 2.5]}}","tag":"12121212-1212-1212-1212-121212121212","at":{at},"raw":{raw},"f":"NaN","n":-7,"d":{date},"big":"{big}"}}"#
        );
        let row1b = format!(
            r#"{{"id":1,"name":"a \"q\"","price":-0.01,"ok":null,"doc":"{{\"k\": [1, 2.5]}}","tag":"12121212-1212-1212-1212-121212121212","at":{at},"raw":{raw},"f":1.5,"n":-7,"d":{date},"big":{{"unchanged_toast":true}}}}"#
        );
        let row2 = row1b.replace(r#"{"id":1,"#, r#"{"id":2,"#);
        let begin = r#"{"commit_lsn":"*","commit_time":"*","type":"begin","xid":"*"}"#;
        let commit =
            r#"{"commit_lsn":"*","commit_time":"*","end_lsn":"*","type":"commit","xid":"*"}"#;
        let change = |s: String| normalize(&s);
        let expected: Vec<String> = vec![
            begin.into(),
            change(format!(r#"{{"type":"insert","schema":"public","table":"item","new":{row1}}}"#)),
            commit.into(),
            begin.into(),
            change(format!(
                r#"{{"type":"update","schema":"public","table":"item","key":{{"id":1}},"new":{row1b}}}"#
            )),
            commit.into(),
            begin.into(),
            change(format!(
                r#"{{"type":"update","schema":"public","table":"item","key":{{"id":1}},"new":{row2}}}"#
            )),
            commit.into(),
            begin.into(),
            change(r#"{"type":"insert","schema":"public","table":"bag","new":{"a":1,"b":null}}"#.into()),
            commit.into(),
            begin.into(),
            change(r#"{"type":"delete","schema":"public","table":"bag","old":{"a":1,"b":null}}"#.into()),
            commit.into(),
            begin.into(),
            change(r#"{"type":"message","transactional":true,"prefix":"app","lsn":"*","content":"hello"}"#.into()),
            commit.into(),
            begin.into(),
            change(r#"{"type":"delete","schema":"public","table":"item","key":{"id":2}}"#.into()),
            commit.into(),
            begin.into(),
            change(r#"{"type":"truncate","tables":[{"schema":"public","table":"bag"}],"cascade":false,"restart_identity":false}"#.into()),
            commit.into(),
        ];
        assert_eq!(lines.len(), expected.len(), "binary={binary}: {lines:#?}");
        for (got, want) in lines.iter().zip(&expected) {
            assert_eq!(got, want, "binary={binary}");
        }
    }
}
