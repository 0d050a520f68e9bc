//! JsonTarget prints each value as PostgreSQL's text output of it (numbers, booleans and arrays
//! as JSON ones), the same in text and binary format, and never prints a value as SQL NULL does.

mod common;

use applier::{ApplierConfig, JsonTarget};
use common::{Env, apply_all, setup};
use serde_json::Value;

/// What pgmirror's replication connection sets (the walsender's text output follows them);
/// the sessions reading the slots here and asking for `col::text` get the same.
const WALSENDER_SETTINGS: &[(&str, &str)] = &[
    ("DateStyle", "ISO, MDY"),
    ("IntervalStyle", "postgres"),
    ("TimeZone", "UTC"),
    ("extra_float_digits", "3"),
];

/// Sets the source database's defaults for new sessions and makes a slot for the text pass.
async fn prepare(env: &Env, extra: &[(&str, &str)]) -> String {
    for (name, value) in WALSENDER_SETTINGS.iter().chain(extra) {
        env.src
            .batch_execute(&format!("ALTER DATABASE \"{}\" SET {name} = '{value}'", env.src_db))
            .await
            .unwrap();
    }
    let text_slot = pgcluster::unique_name("jval_text");
    env.src
        .execute("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", &[&text_slot])
        .await
        .unwrap();
    text_slot
}

/// The insert lines for `table`, read from the slots in binary and in text format.
async fn inserts(env: &mut Env, text_slot: &str, table: &str) -> [Vec<String>; 2] {
    let mut out = [Vec::new(), Vec::new()];
    let binary_slot = env.slot.clone();
    for (i, binary) in [true, false].into_iter().enumerate() {
        env.slot = if binary { binary_slot.clone() } else { text_slot.to_owned() };
        let msgs = env.fetch(1, binary, &[], None).await;
        let target = JsonTarget::new(Vec::new()).with_catalog(env.source_session().await);
        let applier = apply_all(target, &msgs, ApplierConfig::default()).await.unwrap();
        let text = String::from_utf8(applier.into_target().into_inner()).unwrap();
        out[i] = text
            .lines()
            .filter(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                v["type"] == "insert" && v["table"] == table
            })
            .map(str::to_owned)
            .collect();
    }
    env.slot = binary_slot;
    out
}

/// Each row of `table` (ordered by `id`) with every column as `col::text`.
async fn server_text(env: &Env, table: &str) -> Vec<Vec<(String, Option<String>)>> {
    let session = env.source_session().await;
    let cols: Vec<String> = session
        .query(
            "SELECT attname::text FROM pg_attribute WHERE attrelid = $1::text::regclass \
             AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            &[&table],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let list: Vec<String> = cols.iter().map(|c| format!("\"{c}\"::text")).collect();
    let rows = session
        .query(&format!("SELECT {} FROM {table} ORDER BY id", list.join(", ")), &[])
        .await
        .unwrap();
    rows.iter()
        .map(|r| cols.iter().enumerate().map(|(i, c)| (c.clone(), r.get(i))).collect())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_null_is_not_sql_null() {
    let mut env = setup(
        "jnull",
        "CREATE TABLE doc (id int PRIMARY KEY, j json, jb jsonb, ja jsonb[], jj json[])",
        false,
    )
    .await;
    let text_slot = prepare(&env, &[]).await;
    env.src
        .batch_execute(
            "INSERT INTO doc VALUES
                (1, 'null', 'null', ARRAY['null'::jsonb, NULL], ARRAY['null'::json, NULL]),
                (2, NULL, NULL, NULL, NULL),
                (3, E'{ \"a\" : 1,\\n  \"a\": [1,  2.50] }', '{\"b\": 2, \"a\": 1.50}',
                 '{}', ARRAY[E' [ 1,\\t2 ] '::json]),
                (4, '\"null\"', '\"\"', ARRAY['\"x\"'::jsonb], NULL)",
        )
        .await
        .unwrap();
    let [binary, text] = inserts(&mut env, &text_slot, "doc").await;
    assert_eq!(binary, text, "binary and text format print the same");
    let news: Vec<Value> =
        text.iter().map(|l| serde_json::from_str::<Value>(l).unwrap()["new"].clone()).collect();
    let want = [
        r#"{"id":1,"j":"null","jb":"null","ja":["null",null],"jj":["null",null]}"#,
        r#"{"id":2,"j":null,"jb":null,"ja":null,"jj":null}"#,
        r#"{"id":3,"j":"{ \"a\" : 1,\n  \"a\": [1,  2.50] }","jb":"{\"a\": 1.50, \"b\": 2}","ja":[],"jj":[" [ 1,\t2 ] "]}"#,
        r#"{"id":4,"j":"\"null\"","jb":"\"\"","ja":["\"x\""],"jj":null}"#,
    ];
    for (got, want) in news.iter().zip(want) {
        assert_eq!(*got, serde_json::from_str::<Value>(want).unwrap());
    }
    // Scalars are the server's own text, whitespace, duplicate keys and all.
    for (row, server) in news.iter().zip(server_text(&env, "doc").await) {
        for (col, t) in server.iter().filter(|(c, _)| c == "j" || c == "jb") {
            assert_eq!(row[col].as_str(), t.as_deref(), "{col}");
        }
    }
}
