//! JsonTarget renders every builtin array type (and arrays of user-defined types) as a JSON
//! array, the same in text and binary format, equal to what PostgreSQL's own `to_json` makes of
//! the same values where pgmirror's scalar conventions agree with it, and to the element-wise
//! scalar rendering where they differ (noted per type).

mod common;

use std::collections::BTreeSet;

use applier::{ApplierConfig, JsonTarget};
use common::{apply_all, setup};
use serde_json::Value;

/// Two values of each element type, as SQL. Every builtin array type is here but two no
/// column can hold: `_gtsvector` (no `gtsvector` value can be made: its input function always
/// fails) and `_pg_attribute` (a row type with an `anyarray` column).
const SAMPLES: &[(&str, &str, &str)] = &[
    ("xml", "'<a>x</a>'::xml", r#"'<b c="d,e"/>'::xml"#),
    ("json", r#"'{"a": [1, "x"]}'::json"#, r#"'"q\"uote"'::json"#),
    (
        "pg_type",
        "(SELECT t FROM pg_type t WHERE t.oid = 16)",
        "(SELECT t FROM pg_type t WHERE t.oid = 25)",
    ),
    ("xid8", "'7'::xid8", "'18446744073709551615'::xid8"),
    (
        "pg_proc",
        "(SELECT p FROM pg_proc p WHERE p.oid = 'int4in'::regproc)",
        "(SELECT p FROM pg_proc p WHERE p.oid = 'int4out'::regproc)",
    ),
    (
        "pg_class",
        "(SELECT c FROM pg_class c WHERE c.oid = 'pg_am'::regclass)",
        "(SELECT c FROM pg_class c WHERE c.oid = 'pg_language'::regclass)",
    ),
    ("line", "'{1,-1,0}'::line", "'{0,1,2.5}'::line"),
    ("cidr", "'10.1.0.0/16'::cidr", "'::1/128'::cidr"),
    ("circle", "'<(1,2),3>'::circle", "'<(0,0),0.5>'::circle"),
    ("macaddr8", "'08:00:2b:01:02:03:04:05'::macaddr8", "'ff:ff:ff:ff:ff:ff:ff:ff'::macaddr8"),
    ("money", "'1.50'::money", "'-1000'::money"),
    ("bool", "true", "false"),
    ("bytea", r"'\x0102'::bytea", "''::bytea"),
    ("\"char\"", "'x'::\"char\"", "'\"'::\"char\""),
    ("name", "'My Name'::name", "'a,b'::name"),
    ("int2", "1::int2", "(-32768)::int2"),
    ("int2vector", "'1 2'::int2vector", "'3'::int2vector"),
    ("int4", "42", "(-2147483648)::int4"),
    ("regproc", "'int4in'::regproc", "'now'::regproc"),
    ("text", r#"E'a"b\\c'"#, "'e,f {g} NULL'"),
    ("tid", "'(0,1)'::tid", "'(42,7)'::tid"),
    ("xid", "'7'::xid", "'4294967295'::xid"),
    ("cid", "'1'::cid", "'0'::cid"),
    ("oidvector", "'1 2'::oidvector", "'3'::oidvector"),
    ("bpchar", "'x y'::char(5)", "' lead'::bpchar"),
    ("varchar", "'NULL'::varchar", "''::varchar"),
    ("int8", "9007199254740993::int8", "(-1)::int8"),
    ("point", "'(1,2)'::point", "'(-1.5,0)'::point"),
    ("lseg", "'[(0,0),(1,1)]'::lseg", "'[(1,2),(3,4)]'::lseg"),
    ("path", "'((0,0),(1,1),(2,0))'::path", "'[(0,0),(1,1)]'::path"),
    ("box", "'((1,2),(3,4))'::box", "'((0,0),(1,1))'::box"),
    ("float4", "1.5::float4", "'NaN'::float4"),
    ("float8", "'-Infinity'::float8", "0.1::float8"),
    ("polygon", "'((0,0),(1,1),(1,0))'::polygon", "'((0,0),(0,1),(1,1),(1,0))'::polygon"),
    ("oid", "1::oid", "4294967295::oid"),
    ("aclitem", "'postgres=arw/postgres'::aclitem", "'=r/postgres'::aclitem"),
    ("macaddr", "'08:00:2b:01:02:03'::macaddr", "'ff:ff:ff:ff:ff:ff'::macaddr"),
    ("inet", "'192.168.0.1/24'::inet", "'::ffff:1.2.3.4'::inet"),
    ("timestamp", "'2024-02-29 12:34:56.5'::timestamp", "'1999-01-08 04:05:06'::timestamp"),
    ("date", "'2024-02-29'::date", "'infinity'::date"),
    ("time", "'12:34:56.789'::time", "'00:00'::time"),
    (
        "timestamptz",
        "'2024-02-29 12:34:56.5+02'::timestamptz",
        "'1999-01-08 04:05:06+00'::timestamptz",
    ),
    ("interval", "'1 day 02:03:04'::interval", "'-1 mon'::interval"),
    ("numeric", "1.50::numeric", "'NaN'::numeric"),
    ("timetz", "'12:34:56+02'::timetz", "'00:00-08'::timetz"),
    ("bit", "B'1'::bit", "B'0'::bit"),
    ("varbit", "B'1'::varbit", "B''::varbit"),
    ("refcursor", "'cur'::refcursor", "'a,b'::refcursor"),
    ("regprocedure", "'int4in(cstring)'::regprocedure", "'now()'::regprocedure"),
    ("regoper", "'||/'::regoper", "'|/'::regoper"),
    ("regoperator", "'+(int4,int4)'::regoperator", "'-(NONE,int4)'::regoperator"),
    ("regclass", "'pg_class'::regclass", "'pg_type'::regclass"),
    ("regtype", "'int4'::regtype", "'character varying'::regtype"),
    ("txid_snapshot", "'10:20:10,14,15'::txid_snapshot", "'1:1:'::txid_snapshot"),
    (
        "uuid",
        "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid",
        "'00000000-0000-0000-0000-000000000000'::uuid",
    ),
    ("pg_lsn", "'0/16B3748'::pg_lsn", "'FFFFFFFF/FFFFFFFF'::pg_lsn"),
    ("tsvector", "'a fat cat'::tsvector", "$$'a,b' c$$::tsvector"),
    ("tsquery", "'fat & rat'::tsquery", "'!cat'::tsquery"),
    ("regconfig", "'english'::regconfig", "'simple'::regconfig"),
    ("regdictionary", "'simple'::regdictionary", "'english_stem'::regdictionary"),
    ("jsonb", r#"'{"a": [1, 2.5, null]}'::jsonb"#, "'[]'::jsonb"),
    ("int4range", "'[1,5)'::int4range", "'empty'::int4range"),
    ("numrange", "'(1.5,2.5]'::numrange", "'(,)'::numrange"),
    ("tsrange", "'[2024-01-01,2024-02-01)'::tsrange", "'empty'::tsrange"),
    ("tstzrange", "'[2024-01-01 00:00+00,)'::tstzrange", "'empty'::tstzrange"),
    ("daterange", "'[2024-01-01,2024-02-01)'::daterange", "'empty'::daterange"),
    ("int8range", "'[1,2)'::int8range", "'empty'::int8range"),
    ("jsonpath", "'$.a[*] ? (@ > 1)'::jsonpath", "'$'::jsonpath"),
    ("regnamespace", "'pg_catalog'::regnamespace", "'public'::regnamespace"),
    ("regrole", "'pg_monitor'::regrole", "'pg_read_all_data'::regrole"),
    ("regcollation", "'\"C\"'::regcollation", "'\"POSIX\"'::regcollation"),
    ("pg_snapshot", "'10:20:10,14,15'::pg_snapshot", "'1:1:'::pg_snapshot"),
    ("int4multirange", "'{[1,5), [7,8)}'::int4multirange", "'{}'::int4multirange"),
    ("nummultirange", "'{(1.5,2.5]}'::nummultirange", "'{}'::nummultirange"),
    ("tsmultirange", "'{[2024-01-01,2024-02-01)}'::tsmultirange", "'{}'::tsmultirange"),
    (
        "tstzmultirange",
        "'{[2024-01-01 00:00+00,2024-01-02 00:00+00)}'::tstzmultirange",
        "'{}'::tstzmultirange",
    ),
    ("datemultirange", "'{[2024-01-01,2024-02-01)}'::datemultirange", "'{}'::datemultirange"),
    ("int8multirange", "'{[1,2)}'::int8multirange", "'{}'::int8multirange"),
    // Types of this database, looked up through the catalog.
    ("mood", "'happy'::mood", "'so \"so\", ok'::mood"),
    ("positive", "1::positive", "2::positive"),
    ("pair", "ROW(1, 'a,b')::pair", "ROW(NULL, '')::pair"),
    ("ints", "'{1,2}'::ints", "'{}'::ints"),
];

const USER_TYPES: &str = "CREATE TYPE mood AS ENUM ('happy', 'so \"so\", ok');
    CREATE DOMAIN positive AS int CHECK (VALUE > 0);
    CREATE TYPE pair AS (n int, s text);
    CREATE DOMAIN ints AS int[];";

/// One element `x` as pgmirror renders it (the same in binary and text format), as SQL
/// returning json: PostgreSQL's to_json where pgmirror's conventions match it, else the
/// deviation spelled out.
fn element_sql(elem: &str) -> &'static str {
    match elem.trim_matches('"') {
        // Numbers, where to_json makes an oid a string.
        "oid" => "to_json(x::int8)",
        "oidvector" => "to_json(x::text::int2vector)",
        // Text forms, where to_json has its own (ISO 8601 times, objects for rows, JSON
        // embedded).
        "timestamp" | "timestamptz" | "pg_type" | "pg_proc" | "pg_class" | "pair" | "json"
        | "jsonb" => "to_json(x::text)",
        _ => "to_json(x)",
    }
}

/// The whole column `c` as pgmirror renders it: `elem` mapped over the (at most two)
/// dimensions, lower bounds dropped, NULL elements null.
fn column_sql(c: &str, element: &str) -> String {
    let one = |x: &str| {
        format!(
            "(SELECT CASE WHEN x IS NULL THEN NULL ELSE {element} END FROM (SELECT {x} AS x) e)"
        )
    };
    format!(
        "CASE WHEN {c} IS NULL THEN NULL WHEN cardinality({c}) = 0 THEN '[]'::json \
         WHEN array_ndims({c}) = 1 THEN to_json(ARRAY(SELECT {e1} FROM generate_subscripts({c}, 1) i ORDER BY i)) \
         ELSE to_json(ARRAY(SELECT ARRAY(SELECT {e2} FROM generate_subscripts({c}, 2) j ORDER BY j) \
                            FROM generate_subscripts({c}, 1) i ORDER BY i)) END",
        e1 = one(&format!("{c}[i]")),
        e2 = one(&format!("{c}[i][j]")),
    )
}

/// Element types PostgreSQL 15's pgoutput cannot send in binary at all (`aclitem` has no
/// send function; the catalog row types hold `aclitem` arrays): the whole change fails there.
const NO_BINARY_SEND: &[&str] = &["aclitem", "pg_type", "pg_proc", "pg_class"];

/// The samples a table for `binary` holds.
fn samples(binary: bool) -> Vec<(&'static str, &'static str, &'static str)> {
    SAMPLES.iter().copied().filter(|(t, _, _)| !binary || !NO_BINARY_SEND.contains(t)).collect()
}

/// Builds an array value from two element values.
type Shape = fn(&str, &str) -> String;

/// Creates `table` with a column per sample and four rows: 1-D with a NULL element, 2-D, empty,
/// NULL; `bounded` holds int arrays with lower bounds other than 1.
async fn fill(client: &tokio_postgres::Client, table: &str, samples: &[(&str, &str, &str)]) {
    let columns: Vec<String> =
        samples.iter().enumerate().map(|(i, (t, _, _))| format!("c{i} {t}[]")).collect();
    client
        .batch_execute(&format!(
            "CREATE TABLE {table} (id int PRIMARY KEY, bounded int[], {})",
            columns.join(", ")
        ))
        .await
        .unwrap();
    let rows: [(&str, &str, Shape); 4] = [
        ("1", "'[0:2]={1,2,3}'", |a, b| format!("ARRAY[{a}, NULL, {b}]")),
        ("2", "'[2:3][5:5]={{1},{NULL}}'", |a, b| format!("ARRAY[[{a}, {b}], [NULL, {a}]]")),
        ("3", "'{}'", |_, _| "'{}'".to_owned()),
        ("4", "NULL", |_, _| "NULL".to_owned()),
    ];
    for (id, bounded, make) in rows {
        let values: Vec<String> =
            samples.iter().map(|(t, a, b)| format!("{}::{t}[]", make(a, b))).collect();
        client
            .batch_execute(&format!(
                "INSERT INTO {table} VALUES ({id}, {bounded}, {})",
                values.join(", ")
            ))
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_array_type_is_a_json_array() {
    let mut env = setup("jarr", USER_TYPES, false).await;

    // The samples cover every builtin array type the server has (but the two above).
    let builtin: BTreeSet<String> = env
        .src
        .query(
            "SELECT e.typname::text FROM pg_type e JOIN pg_type a ON a.oid = e.typarray \
             WHERE a.oid < 10000 AND e.typtype <> 'p' \
               AND e.typname NOT IN ('gtsvector', 'pg_attribute')",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let sampled: BTreeSet<String> =
        SAMPLES.iter().map(|(t, _, _)| t.trim_matches('"').to_owned()).collect();
    let missing: Vec<_> = builtin.difference(&sampled).collect();
    assert!(missing.is_empty(), "builtin array types without samples: {missing:?}");

    // The settings pgmirror's replication connection sets, which binary values are printed
    // by, for the sessions that read the slots and compute the expected values.
    for (name, value) in
        [("DateStyle", "ISO, MDY"), ("IntervalStyle", "postgres"), ("TimeZone", "UTC")]
    {
        env.src
            .batch_execute(&format!("ALTER DATABASE \"{}\" SET {name} = '{value}'", env.src_db))
            .await
            .unwrap();
    }
    let expected = env.source_session().await;
    expected.batch_execute("SET jit = off").await.unwrap();

    // The text pass reads a slot of its own, which also sees the binary pass's rows.
    let text_slot = pgcluster::unique_name("jarr_text");
    env.src
        .execute("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", &[&text_slot])
        .await
        .unwrap();
    for binary in [true, false] {
        let table = if binary { "arr_bin" } else { "arr" };
        let samples = samples(binary);
        fill(&env.src, table, &samples).await;
        if !binary {
            env.slot = text_slot.clone();
        }
        let msgs = env.fetch(1, binary, &[], None).await;
        let target = JsonTarget::new(Vec::new()).with_catalog(env.source_session().await);
        let applier = apply_all(target, &msgs, ApplierConfig::default()).await.unwrap();
        let out = String::from_utf8(applier.into_target().into_inner()).unwrap();
        let got: Vec<Value> = out
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|v| v["type"] == "insert" && v["table"] == table)
            .map(|v| v["new"].clone())
            .collect();
        assert_eq!(got.len(), 4, "binary={binary}: {out}");

        let mut exprs = vec![column_sql("bounded", element_sql("int4"))];
        for (i, (t, _, _)) in samples.iter().enumerate() {
            let whole = if element_sql(t) != "to_json(x)" {
                column_sql(&format!("c{i}"), element_sql(t))
            } else {
                // PostgreSQL's own rendering of the whole array.
                format!("to_json(c{i})")
            };
            exprs.push(whole);
        }
        let want = expected
            .query(&format!("SELECT {} FROM {table} ORDER BY id", exprs.join(", ")), &[])
            .await
            .unwrap();
        let mut bad = Vec::new();
        for (row, want) in got.iter().zip(&want) {
            let names = std::iter::once(("bounded".to_owned(), "int4"))
                .chain(samples.iter().enumerate().map(|(i, (t, _, _))| (format!("c{i}"), *t)));
            for (col, (name, t)) in names.enumerate() {
                let want = want.get::<_, Option<Value>>(col).unwrap_or(Value::Null);
                if row[&name] != want {
                    bad.push(format!("{t}[] (id {}): got {} want {want}", row["id"], row[&name]));
                }
            }
        }
        assert!(bad.is_empty(), "binary={binary}:\n{}", bad.join("\n"));
    }
}
