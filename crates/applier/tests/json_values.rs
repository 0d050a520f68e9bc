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

/// Each row of `table` (ordered by `id`) with every column as the server prints it: its type's
/// output function, as the simple query protocol returns it (a cast to text can differ:
/// `true::text` is `true`, `inet::text` always has the netmask).
async fn server_text(env: &Env, table: &str) -> Vec<Vec<(String, Option<String>)>> {
    let session = env.source_session().await;
    let mut rows = Vec::new();
    for m in session.simple_query(&format!("SELECT * FROM {table} ORDER BY id")).await.unwrap() {
        if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
            let row = r.columns().iter().enumerate();
            rows.push(
                row.map(|(i, c)| (c.name().to_owned(), r.get(i).map(str::to_owned))).collect(),
            );
        }
    }
    rows
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
    // The server's own text, whitespace, duplicate keys and all.
    for (row, server) in news.iter().zip(server_text(&env, "doc").await) {
        for (col, t) in server.iter().filter(|(c, _)| c == "j" || c == "jb") {
            assert_eq!(row[col].as_str(), t.as_deref(), "{col}");
        }
    }
}

/// Values of every builtin type a column can hold and pgoutput can send in binary (`aclitem`
/// has no binary form; `gtsvector` and the statistics types have no input), edge values
/// first, then types of this database (looked up through the catalog).
const SAMPLES: &[(&str, &[&str])] = &[
    ("bool", &["true", "false"]),
    ("bytea", &[r"'\x0102'", "''", r"'\x00ff5c2722'"]),
    ("\"char\"", &["'x'", "''", r"'\351'", "'\"'", r"'\\'"]),
    ("name", &["'My Name'", "''"]),
    ("int2", &["32767", "-32768", "0"]),
    ("int4", &["2147483647", "-2147483648"]),
    ("int8", &["9223372036854775807", "-9223372036854775808"]),
    ("int2vector", &["'1 -2'", "''"]),
    ("oidvector", &["'1 4294967295'"]),
    ("regproc", &["'int4in'", "'now'", "0"]),
    ("text", &[r#"E'a"b\\c'"#, "''", r"E'tab\tnew\nline'", "'ünïcødé ☃ 𝄞'"]),
    ("oid", &["4294967295", "0"]),
    ("tid", &["'(0,1)'", "'(4294967295,65535)'"]),
    ("xid", &["'4294967295'", "'0'"]),
    ("cid", &["'1'"]),
    ("json", &["'null'", r#"'{"a" : 1,  "a": 2}'"#, r#"E'[\n1]'"#]),
    ("xml", &["'<a>x</a>'", r#"'<?xml version="1.0" encoding="UTF-8"?><b/>'"#, "''"]),
    ("point", &["'(1,2)'", "'(-1.5,1e300)'", "'(NaN,-Infinity)'", "'(-0,1e-300)'"]),
    ("lseg", &["'[(0,0),(1,1.5)]'"]),
    ("path", &["'((0,0),(1,1),(2,0))'", "'[(0,0),(1,1)]'"]),
    ("box", &["'((1,2),(3,4))'", "'((0,0),(0,0))'"]),
    ("polygon", &["'((0,0),(1,1),(1,0))'"]),
    ("line", &["'{1,-1,0}'", "'{0,1,2.5}'"]),
    ("cidr", &["'10.1.0.0/16'", "'::1/128'", "'2001:db8::/32'", "'0.0.0.0/0'", "'1.2.3.4/32'"]),
    (
        "float4",
        &[
            "1.5",
            "'NaN'",
            "'-Infinity'",
            "'3.4028235e38'",
            "'1e-45'",
            "'-0'",
            "0.1",
            "1e6",
            "123456",
        ],
    ),
    (
        "float8",
        &[
            "0.1",
            "1e300",
            "'-0'",
            "'5e-324'",
            "'1.7976931348623157e308'",
            "'Infinity'",
            "123456789012345678",
            "1e15",
            "0.00001",
            "0.0001",
            "'NaN'",
            "-2.5e-7",
        ],
    ),
    ("circle", &["'<(1,2),3>'", "'<(0,0),0>'"]),
    ("macaddr8", &["'08:00:2b:01:02:03:04:05'", "'ff:ff:ff:ff:ff:ff:ff:ff'"]),
    ("money", &["'1.50'", "'-1000'", "'0'", "'92233720368547758.07'", "'-92233720368547758.08'"]),
    ("macaddr", &["'08:00:2b:01:02:03'"]),
    (
        "inet",
        &[
            "'192.168.0.1/24'",
            "'192.168.0.1'",
            "'::ffff:1.2.3.4'",
            "'::1.2.3.4'",
            "'::1'",
            "'::'",
            "'1::'",
            "'fe80::1:0:0:1/64'",
            "'2001:db8:0:0:1:0:0:1'",
            "'1:0:0:2:3:0:0:4'",
        ],
    ),
    ("bpchar", &["'x y'::char(5)", "' lead'::bpchar", "''"]),
    ("varchar", &["'NULL'", "''"]),
    (
        "date",
        &[
            "'2024-02-29'",
            "'infinity'",
            "'-infinity'",
            "'4714-11-24 BC'",
            "'0001-01-01'",
            "'5874897-12-31'",
            "'0001-12-31 BC'",
        ],
    ),
    ("time", &["'12:34:56.789'", "'00:00'", "'24:00:00'", "'23:59:59.999999'"]),
    (
        "timestamp",
        &[
            "'2024-02-29 12:34:56.5'",
            "'infinity'",
            "'-infinity'",
            "'4714-11-24 00:00:00 BC'",
            "'294276-12-31 23:59:59.999999'",
            "'0001-01-01 00:00:00 BC'",
            "'1999-12-31 23:59:59.000001'",
        ],
    ),
    (
        "timestamptz",
        &[
            "'2024-02-29 12:34:56.5+02'",
            "'-infinity'",
            "'4713-01-01 00:00:00+00 BC'",
            "'1970-01-01 00:00:00+05:30'",
            "'294276-12-31 23:59:59.999999+00'",
        ],
    ),
    (
        "interval",
        &[
            "'1 day 02:03:04'",
            "'-1 mon'",
            "'0'",
            "'-1 year -2 mons +3 days -04:05:06.5'",
            "'1 year 1 mon 1 day 1 hour'",
            "'178956970 years 7 mons 2147483647 days 2562047788:00:54.775807'",
            "'-178956970 years -8 mons -2147483648 days'::interval \
             + '-2562047788:00:54.775807'::interval - '00:00:00.000001'::interval",
            "'-00:00:00.000001'",
            "'1 day -00:00:01'",
            "'-1 days'",
        ],
    ),
    (
        "timetz",
        &["'12:34:56+02'", "'00:00-08'", "'24:00:00-15:59:59'", "'12:00:00.5+05:30'", "'00:00+00'"],
    ),
    ("bit", &["B'1'", "B'0101'::bit(4)", "B'101011110'::bit(9)"]),
    ("varbit", &["B''", "B'1010101011'"]),
    (
        "numeric",
        &[
            "1.50",
            "'NaN'",
            "'Infinity'",
            "'-Infinity'",
            "0",
            "-0.0001",
            "123456789012345678901234567890.123456789",
            "1e-20",
        ],
    ),
    ("refcursor", &["'cur'", "''"]),
    ("regprocedure", &["'int4in(cstring)'", "'now()'"]),
    ("regoper", &["'||/'"]),
    ("regoperator", &["'+(int4,int4)'", "'-(NONE,int4)'"]),
    ("regclass", &["'pg_class'", "'v'", "1"]),
    ("regtype", &["'int4'", "'character varying'", "'mood'", "'pair[]'"]),
    ("uuid", &["'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'", "'00000000-0000-0000-0000-000000000000'"]),
    ("txid_snapshot", &["'10:20:10,14,15'", "'1:1:'"]),
    ("pg_lsn", &["'0/16B3748'", "'FFFFFFFF/FFFFFFFF'", "'0/0'"]),
    ("tsvector", &["'a fat cat'", "$$'a,b' c$$", r"$$'it''s':1A,2B,3C,4 'back\\slash':5$$", "''"]),
    (
        "tsquery",
        &[
            "'fat & rat'",
            "'!cat'",
            "'fat & (rat | !cat)'",
            "'a <-> b <2> c'",
            "'a <-> (b <-> c)'",
            "'!(a & b)'",
            "'a & b | c & d'",
            "'(a | b) & !(c <-> d)'",
            "'a:*AB & b:D'",
            r"$$'it''s' & 'back\\slash'$$",
            "'!!a'",
            "'a <-> !b'",
            "''",
        ],
    ),
    ("regconfig", &["'english'"]),
    ("regdictionary", &["'simple'"]),
    ("jsonb", &[r#"'{"b": [1, 2.5, null], "a": "x"}'"#, "'null'", "'\"\"'"]),
    ("jsonpath", &["'$.a[*] ? (@ > 1)'", "'$'"]),
    ("int4range", &["'[1,5)'", "'empty'", "'(,)'", "'[,5)'"]),
    ("numrange", &["'(1.5,2.5]'", "'[-Infinity,Infinity]'"]),
    ("tsrange", &["'[2024-01-01,2024-02-01)'", "'(,\"4713-01-01 00:00:00 BC\"]'"]),
    ("tstzrange", &["'[2024-01-01 00:00+00,)'"]),
    ("daterange", &["'[2024-01-01,2024-02-01)'", "'[-infinity,infinity)'"]),
    ("int8range", &["'[1,2)'"]),
    ("regnamespace", &["'pg_catalog'", "'public'"]),
    ("regrole", &["'pg_monitor'"]),
    ("regcollation", &["'\"C\"'", "'\"POSIX\"'"]),
    ("pg_snapshot", &["'10:20:10,14,15'"]),
    ("xid8", &["'18446744073709551615'", "'0'"]),
    ("int4multirange", &["'{[1,5), [7,8)}'", "'{}'"]),
    ("nummultirange", &["'{(1.5,2.5]}'"]),
    ("tsmultirange", &["'{[2024-01-01,2024-02-01)}'"]),
    ("tstzmultirange", &["'{[2024-01-01 00:00+00,2024-01-02 00:00+00)}'"]),
    ("datemultirange", &["'{[2024-01-01,2024-02-01), [2024-03-01,)}'"]),
    ("int8multirange", &["'{[1,2)}'"]),
    // Types of this database.
    ("mood", &["'happy'", "'so \"so\", ok'"]),
    ("positive", &["1"]),
    ("moneys", &["'7.25'"]),
    (
        "pair",
        &[
            "ROW(1, 'a,b', '2024-01-01', '[0:1]={1,NULL}', '[1,5)', 'happy', '{\"a b\",NULL,\"NULL\",\"\"}', '{(1,1),(0,0);(2,2),(1,1)}')",
            "ROW(NULL, '', NULL, '{}', 'empty', NULL, '{}', NULL)",
            r#"ROW(-1, E'q"u\\o(t)e s', '4713-01-01 BC', '{{1,2},{3,4}}', '(,)', 'so "so", ok', '{x}', '{}')"#,
        ],
    ),
    ("nest", &["ROW(ROW(2, 'x', NULL, NULL, NULL, NULL, NULL, NULL), '2024-01-01 00:00+00')"]),
    ("floatrange", &["'[1.5,2)'", "'(,-0)'"]),
    ("moodrange", &["'[1,3)'"]),
];

const USER_TYPES: &str = "CREATE TYPE mood AS ENUM ('happy', 'so \"so\", ok');
    CREATE DOMAIN positive AS int CHECK (VALUE > 0);
    CREATE DOMAIN moneys AS money;
    CREATE TYPE pair AS (n int, s text, d date, a int[], r int4range, m mood, t text[], b box[]);
    CREATE TYPE nest AS (p pair, at timestamptz);
    CREATE TYPE floatrange AS RANGE (subtype = float8);
    CREATE DOMAIN small AS int CHECK (VALUE < 10);
    CREATE TYPE moodrange AS RANGE (subtype = small);";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_values_print_as_the_server_prints_them() {
    let mut env = setup("jtext", USER_TYPES, false).await;
    let text_slot = prepare(&env, &[("bytea_output", "escape")]).await;
    let columns: Vec<String> =
        SAMPLES.iter().enumerate().map(|(i, (t, _))| format!("c{i} {t}")).collect();
    env.src
        .batch_execute(&format!("CREATE TABLE v (id int PRIMARY KEY, {})", columns.join(", ")))
        .await
        .unwrap();
    let rows = SAMPLES.iter().map(|(_, values)| values.len()).max().unwrap();
    for id in 0..rows {
        let values: Vec<String> = SAMPLES
            .iter()
            .map(|(t, values)| values.get(id).map_or("NULL".into(), |v| format!("({v})::{t}")))
            .collect();
        env.src
            .batch_execute(&format!("INSERT INTO v VALUES ({id}, {})", values.join(", ")))
            .await
            .unwrap();
    }

    let [binary, text] = inserts(&mut env, &text_slot, "v").await;
    assert_eq!(text.len(), rows);
    assert!(binary.iter().all(|l| !l.contains("binary_hex")), "undecoded: {binary:#?}");
    let mut bad = Vec::new();
    for (b, t) in binary.iter().zip(&text) {
        if b != t {
            let (b, t): (Value, Value) =
                (serde_json::from_str(b).unwrap(), serde_json::from_str(t).unwrap());
            for (i, (ty, _)) in SAMPLES.iter().enumerate() {
                let c = format!("c{i}");
                if b["new"][&c] != t["new"][&c] {
                    bad.push(format!("{ty}: binary {} text {}", b["new"][&c], t["new"][&c]));
                }
            }
        }
    }
    assert!(bad.is_empty(), "binary and text format differ:\n{}", bad.join("\n"));

    // Each value is the server's text of it (arrays aside: see json_arrays.rs).
    for (line, server) in text.iter().zip(server_text(&env, "v").await) {
        let new = &serde_json::from_str::<Value>(line).unwrap()["new"];
        for (col, want) in &server {
            let got = &new[col];
            let ok = match (got, want) {
                (Value::Null, None) | (Value::Array(_), Some(_)) => true,
                (Value::String(s), Some(w)) => s == w,
                (Value::Bool(b), Some(w)) => w == if *b { "t" } else { "f" },
                (Value::Number(_), Some(w)) => {
                    serde_json::from_str::<Value>(w).ok() == Some(got.clone())
                }
                _ => false,
            };
            assert!(ok, "{col} ({}): printed {got}, the server prints {want:?}", new["id"]);
        }
    }
}

// Random values are made by rounding wider ones to the float kinds.
#[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_floats_print_as_the_server_prints_them() {
    use rand::{Rng, SeedableRng};

    let mut env =
        setup("jfloat", "CREATE TABLE f (id int PRIMARY KEY, d float8, r float4, p point)", false)
            .await;
    let text_slot = prepare(&env, &[]).await;
    let insert = env.src.prepare("INSERT INTO f VALUES ($1, $2, $3, point($2, $4))").await.unwrap();
    const ROWS: i32 = 3000;
    let mut rng = rand::rngs::StdRng::seed_from_u64(15);
    for id in 0..ROWS {
        // Any bit pattern (mostly scientific notation), plain magnitudes, and large integers
        // and few bits after the point (where the shortest digits can fall on the edge of what
        // reads back, or two be equally near).
        let (d, r, y): (f64, f32, f64) = match id % 3 {
            0 => (f64::from_bits(rng.r#gen()), f32::from_bits(rng.r#gen()), rng.r#gen()),
            1 => {
                let scale = 10f64.powi(rng.gen_range(-6..18));
                (
                    rng.r#gen::<f64>() * scale,
                    (rng.r#gen::<f64>() * scale) as f32,
                    -rng.r#gen::<f64>(),
                )
            }
            // Few bits after the point: exact ties between two shortest candidates.
            _ => {
                let (a, b) = (rng.gen_range(0..12), rng.gen_range(0..8));
                let d = (rng.r#gen::<u64>() >> rng.gen_range(0..12)) as f64 / f64::from(1 << a);
                let r = (rng.r#gen::<u32>() >> rng.gen_range(0..10)) as f32 / (1 << b) as f32;
                (d, r, rng.r#gen::<u32>().into())
            }
        };
        env.src.execute(&insert, &[&id, &d, &r, &y]).await.unwrap();
    }
    let [binary, text] = inserts(&mut env, &text_slot, "f").await;
    assert_eq!(text.len(), usize::try_from(ROWS).unwrap());
    for (b, t) in binary.iter().zip(&text) {
        assert_eq!(b, t, "binary and text format differ");
    }
}
