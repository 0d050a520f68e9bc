//! Hostile and malformed input: a fake walsender sending broken streams (nothing may be applied
//! half-way), and awkward identifiers and values mirrored exactly.

use std::time::Duration;

use applier::{Applier, ApplierConfig, PostgresTarget, PostgresTargetConfig};
use bytes::{BufMut, Bytes, BytesMut};
use pgconn::ConnConfig;
use pgmirror::metrics::Metrics;
use pgmirror::mirror::{self, MirrorOptions};
use pgmirror::pump::pump;
use pgmirror::selection::TableSelection;
use pgmirror::shutdown::Shutdown;
use pgoutput_decoder::{
    Begin, ColumnValue, Commit, Insert, LogicalMessage, Lsn, PgTimestamp, Relation, RelationColumn,
    ReplicaIdentity, Tuple,
};
use replication::{ReplicationClient, StartReplication};
use tokio_postgres::Client;

use crate::common::{database, wait_for};
use crate::support::fake_walsender::{FakeWalsender, Frame, xlog, xlog_bytes};

const REL: u32 = 16_500;
const TXN1_END: u64 = 0x1010;

fn begin(lsn: u64, xid: u32) -> LogicalMessage {
    LogicalMessage::Begin(Begin { final_lsn: Lsn(lsn), commit_time: PgTimestamp(0), xid })
}

fn commit(lsn: u64, end: u64) -> LogicalMessage {
    LogicalMessage::Commit(Commit {
        flags: 0,
        commit_lsn: Lsn(lsn),
        end_lsn: Lsn(end),
        commit_time: PgTimestamp(0),
    })
}

fn relation() -> LogicalMessage {
    let col = |name: &str, type_oid, is_key| RelationColumn {
        is_key,
        name: name.into(),
        type_oid,
        type_modifier: -1,
    };
    LogicalMessage::Relation(Relation {
        xid: None,
        rel_id: REL,
        namespace: "public".into(),
        name: "items".into(),
        replica_identity: ReplicaIdentity::Default,
        columns: vec![col("id", 23, true), col("v", 25, false)],
    })
}

fn insert(rel_id: u32, id: i32) -> LogicalMessage {
    LogicalMessage::Insert(Insert {
        xid: None,
        rel_id,
        new: Tuple::new(vec![
            ColumnValue::Text(Bytes::from(id.to_string())),
            ColumnValue::Text(Bytes::from_static(b"value")),
        ]),
    })
}

/// A complete, valid transaction inserting id 1, then the hostile part.
fn script(hostile: Vec<Frame>) -> Vec<Frame> {
    let mut frames = vec![
        xlog(0x1000, &begin(0x1000, 700)),
        xlog(0x1000, &relation()),
        xlog(0x1000, &insert(REL, 1)),
        xlog(0x1000, &commit(0x1000, TXN1_END)),
    ];
    frames.extend(hostile);
    frames
}

fn hostile_cases() -> Vec<(&'static str, Vec<Frame>)> {
    let second = |extra: Vec<Frame>| {
        let mut v = vec![xlog(0x2000, &begin(0x2000, 701)), xlog(0x2000, &insert(REL, 2))];
        v.extend(extra);
        v
    };
    let truncated = {
        let full = insert(REL, 3).to_bytes();
        full.slice(..full.len() - 3)
    };
    let oversized_column = {
        // Insert whose second column claims 2 GiB of text.
        let mut b = BytesMut::new();
        b.put_u8(b'I');
        b.put_u32(REL);
        b.put_u8(b'N');
        b.put_i16(2);
        b.put_u8(b't');
        b.put_i32(1);
        b.put_u8(b'4');
        b.put_u8(b't');
        b.put_i32(i32::MAX);
        b.put_slice(b"short");
        b.freeze()
    };
    let oversized_frame = {
        let mut b = BytesMut::new();
        b.put_u8(b'd');
        b.put_i32(i32::MAX - 8);
        b.put_slice(b"w\0\0\0");
        b.freeze()
    };
    vec![
        ("unknown message tag", second(vec![xlog_bytes(0x2000, Bytes::from_static(b"Zjunk"))])),
        ("truncated insert", second(vec![xlog_bytes(0x2000, truncated)])),
        ("column longer than the message", second(vec![xlog_bytes(0x2000, oversized_column)])),
        ("commit without begin", vec![xlog(0x2000, &commit(0x2000, 0x2010))]),
        ("insert for an unknown relation", second(vec![xlog(0x2000, &insert(REL + 1, 4))])),
        ("begin inside a transaction", second(vec![xlog(0x2000, &begin(0x2100, 702))])),
        ("unknown replication message", second(vec![Frame::CopyData(Bytes::from_static(b"q123"))])),
        ("oversized frame", second(vec![Frame::Raw(oversized_frame)])),
        (
            "truncated XLogData header",
            second(vec![Frame::CopyData(Bytes::from_static(b"w\0\0\0\0"))]),
        ),
    ]
}

async fn progress(client: &Client, name: &str) -> Option<String> {
    client
        .query_opt("SELECT end_lsn::text FROM pgmirror.progress WHERE mirror_name = $1", &[&name])
        .await
        .ok()
        .flatten()
        .map(|r| r.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_walsender_hostile_streams_stop_with_an_error_and_apply_nothing_half_way() {
    let cluster = pgcluster::shared();
    for (case, hostile) in hostile_cases() {
        let (db, dst) = database(cluster, "hostile").await;
        dst.batch_execute("CREATE TABLE items (id int PRIMARY KEY, v text)").await.unwrap();
        let fake = FakeWalsender::start(script(hostile)).await;
        let cfg = ConnConfig::parse(&fake.url()).unwrap();
        let repl = ReplicationClient::connect(&cfg).await.expect("connect to the fake");
        let stream = repl.start_replication(StartReplication::new("s", ["p"])).await.expect(case);

        let name = pgcluster::unique_name("hostile");
        let target_client = cluster.connect(&db).await.unwrap();
        let target = PostgresTarget::new(target_client, PostgresTargetConfig::new(name.clone()))
            .await
            .unwrap();
        let mut applier = Applier::new(target, ApplierConfig::default()).await.unwrap();
        let metrics = Metrics::default();
        let mut shutdown = Shutdown::manual();
        let ended = tokio::time::timeout(
            Duration::from_secs(20),
            pump(&mut applier, stream, &mut shutdown, &metrics, pgoutput_decoder::Lsn::ZERO),
        )
        .await
        .unwrap_or_else(|_| panic!("{case}: the pump neither failed nor ended"));
        let err = ended.expect_err(case);
        let msg = format!("{:#}", anyhow::Error::from(err));
        eprintln!("{case}: {msg}");
        assert!(!msg.is_empty());
        drop(applier);

        // Nothing of the broken transaction; the valid one entirely or not at all, in step
        // with the stored progress.
        let ids: Vec<i32> = dst
            .query("SELECT id FROM items ORDER BY id", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let stored = progress(&dst, &name).await;
        assert!(ids.is_empty() || ids == [1], "{case}: {ids:?}");
        assert_eq!(
            ids == [1],
            stored.as_deref() == Some(&Lsn(TXN1_END).to_string()),
            "{case}: rows {ids:?} vs progress {stored:?}"
        );
    }
}

/// Row count and md5 of the rows in text form, in a stable order.
async fn fingerprint(client: &Client, table: &str) -> (i64, String) {
    let row = client
        .query_one(
            &format!(
                "SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) \
                 FROM {table} AS t"
            ),
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

const SCHEMA: &str = r#"
CREATE SCHEMA "My ""Odd"" Schema";
CREATE TABLE "My ""Odd"" Schema"."select" (
    id int PRIMARY KEY,
    "Order" text,
    "a b" text,
    "ünï" text,
    raw bytea,
    f8 float8,
    f4 float4,
    n numeric,
    arr text[],
    j jsonb
);
CREATE TABLE "My ""Odd"" Schema"."from" ("KEY" text PRIMARY KEY, "väl ue" text);
"#;

const SELECT_T: &str = r#""My ""Odd"" Schema"."select""#;
const FROM_T: &str = r#""My ""Odd"" Schema"."from""#;

/// Rows with every awkward value, ids from `base`.
fn awkward_rows(base: i32) -> String {
    let all_bytes = "(SELECT decode(string_agg(lpad(to_hex(b), 2, '0'), '' ORDER BY b), 'hex') \
                     FROM generate_series(0, 255) AS b)";
    format!(
        r#"
INSERT INTO {SELECT_T} VALUES
  ({a}, $q$it's "quoted" \ back\\slash$q$, E'new\nline\ttab\r', 'ünïcødé ☃ 𝄞', {all_bytes},
   '-0', '-0', '-0', ARRAY['a,b', '"q"', NULL, ''], '{{"k": "v\"\\\n", "ü": [1, null]}}'),
  ({b}, '', NULL, '', ''::bytea, 'NaN', 'NaN', 'NaN', '{{}}', 'null'),
  ({c}, NULL, '', NULL, NULL, 'Infinity', '-Infinity', 'Infinity', NULL, NULL),
  ({d}, 'select', 'from', 'where', '\x00', '-Infinity', '1e-45', '-Infinity', ARRAY['NULL'], '[]'),
  ({e}, repeat('x', 10000), 'SELECT 1; DROP TABLE x; --', '\', '\xff00', 1.7976931348623157e308,
   3.4028235e38, (10::numeric ^ 900) + 0.000000000000000000001, NULL, '"\u00e9"'),
  ({f}, '--', '/*', '$$', NULL, 2.2250738585072014e-308, -0.0, -(10::numeric ^ -300), NULL, NULL);
INSERT INTO {FROM_T} VALUES
  ('k{a} it''s', 'a'), (E'k{a} new\nline', 'b'), ('k{a} back\slash', NULL), ('k{a} ☃', '');
"#,
        a = base,
        b = base + 1,
        c = base + 2,
        d = base + 3,
        e = base + 4,
        f = base + 5,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_identifiers_and_awkward_values_are_mirrored_exactly() {
    let cluster = pgcluster::shared();
    let (src_db, src) = database(cluster, "odd_src").await;
    src.batch_execute(SCHEMA).await.unwrap();
    src.batch_execute(&awkward_rows(1)).await.unwrap();

    for binary in [true, false] {
        let (dst_db, dst) = database(cluster, "odd_dst").await;
        let source = ConnConfig::parse(&cluster.url(&src_db)).unwrap();
        let target = ConnConfig::parse(&cluster.url(&dst_db)).unwrap();
        let tables = TableSelection {
            publication: None,
            tables: Some(vec![SELECT_T.to_owned(), FROM_T.to_owned()]),
            exclude_tables: None,
        };
        let mut opts = MirrorOptions::new(pgcluster::unique_name("odd"), source, target, tables);
        opts.binary = binary;
        let shutdown = Shutdown::manual();
        let mut stop = shutdown.clone();
        let run_opts = opts.clone();
        let task = tokio::spawn(async move { mirror::run(&run_opts, &mut stop).await });

        let converged = |what: &'static str| {
            let (src, dst) = (&src, &dst);
            async move {
                let want = (fingerprint(src, SELECT_T).await, fingerprint(src, FROM_T).await);
                wait_for(Duration::from_secs(60), what, || async {
                    // Both tables exist once set-up has created them (one after the other).
                    let got = dst
                        .query_one(
                            "SELECT to_regclass($1) IS NOT NULL AND to_regclass($2) IS NOT NULL",
                            &[&SELECT_T, &FROM_T],
                        )
                        .await
                        .map(|r| r.get::<_, bool>(0))
                        .unwrap_or(false);
                    got && (fingerprint(dst, SELECT_T).await, fingerprint(dst, FROM_T).await)
                        == want
                })
                .await;
            }
        };
        converged("the initial copy").await;

        // Streaming: inserts, updates (key and non-key), deletes.
        let base = if binary { 100 } else { 200 };
        src.batch_execute(&awkward_rows(base)).await.unwrap();
        src.batch_execute(&format!(
            r#"UPDATE {SELECT_T} SET "Order" = E'upd\\''q\n', raw = '\x00ff', f8 = '-0', n = 'NaN'
                 WHERE id IN ({base}, {b1});
               UPDATE {SELECT_T} SET "ünï" = NULL, "a b" = '' WHERE id = {b2};
               UPDATE {FROM_T} SET "KEY" = "KEY" || E' \'moved\'', "väl ue" = E'\\' WHERE "KEY" LIKE 'k{base}%';
               DELETE FROM {SELECT_T} WHERE id = {b3};"#,
            b1 = base + 1,
            b2 = base + 2,
            b3 = base + 3,
        ))
        .await
        .unwrap();
        converged("streamed changes").await;
        // Spot checks that equal fingerprints mean equal values.
        let probe = format!(
            "SELECT raw, f8::text, n::text, \"Order\" IS NULL FROM {SELECT_T} WHERE id = {}",
            base + 1
        );
        let (s, d) =
            (src.query_one(&probe, &[]).await.unwrap(), dst.query_one(&probe, &[]).await.unwrap());
        assert_eq!(s.get::<_, Vec<u8>>(0), d.get::<_, Vec<u8>>(0));
        assert_eq!(s.get::<_, String>(1), d.get::<_, String>(1));
        assert_eq!(d.get::<_, String>(1), "-0");
        let all: Vec<u8> = dst
            .query_one(&format!("SELECT raw FROM {SELECT_T} WHERE id = 1"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(all, (0..=255u8).collect::<Vec<_>>(), "binary={binary}");

        shutdown.trigger();
        task.await.unwrap().expect("mirror stops cleanly");
        // The next mode streams the rows of this one too: undo them on the source.
        src.batch_execute(&format!(
            "DELETE FROM {SELECT_T} WHERE id >= 100; DELETE FROM {FROM_T} WHERE \"KEY\" NOT LIKE 'k1 %'"
        ))
        .await
        .unwrap();
    }
}
