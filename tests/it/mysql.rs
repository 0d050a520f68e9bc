//! `pgmirror mirror --target mysql://...`: PostgreSQL into throwaway MariaDB servers.

use std::time::Duration;

use applier::mysql::schema::{self, MySqlTable, SourceTable};
use applier::mysql::session::MySqlUrl;
use applier::mysql::verify;
use pgcluster::{Cluster, ClusterBuilder, StopMode};
use pgconn::ConnConfig;
use pgmirror::mirror::mysql::{MySqlMirrorOptions, run};
use pgmirror::selection::TableSelection;
use pgmirror::shutdown::Shutdown;
use sqlx::{Connection, MySqlConnection};
use testservers::Server;
use testservers::mariadb::MariaDb;
use tokio::task::JoinHandle;
use tokio_postgres::Client;

use crate::common::{database, kill, spawn};

/// A fresh database on `server`: its URL and a connection.
async fn mysql_db(server: &MariaDb, prefix: &str) -> (String, MySqlConnection) {
    let name = pgcluster::unique_name(prefix);
    server.create_database(&name).await.expect("create MariaDB database");
    (server.url(&name), server.connect(&name).await.expect("connect MariaDB"))
}

fn options(cluster: &Cluster, src_db: &str, url: &str, tables: &[&str]) -> MySqlMirrorOptions {
    pgmirror::logging::init(0);
    let source = ConnConfig::parse(&cluster.url(src_db)).expect("source url");
    let selection = TableSelection {
        publication: None,
        tables: Some(tables.iter().map(|t| (*t).to_owned()).collect()),
        exclude_tables: None,
    };
    let target = MySqlUrl::parse(url).expect("target url");
    MySqlMirrorOptions::new(pgcluster::unique_name("m"), source, target, selection)
}

fn start(opts: &MySqlMirrorOptions) -> (Shutdown, JoinHandle<anyhow::Result<()>>) {
    let shutdown = Shutdown::manual();
    let mut stop = shutdown.clone();
    let opts = opts.clone();
    (shutdown, tokio::spawn(async move { run(&opts, &mut stop).await }))
}

/// Drops a stopped mirror's slot: the shared cluster has a limited number.
async fn drop_slot(src: &Client, slot: &str) {
    for _ in 0..100 {
        let dropped = src
            .execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
                 WHERE slot_name = $1",
                &[&slot],
            )
            .await;
        if dropped.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("could not drop slot {slot}");
}

/// The mirrored tables as the mirror maps them.
async fn mapped(src: &Client, tables: &[&str]) -> Vec<MySqlTable> {
    let mut sources = Vec::new();
    for t in tables {
        let (schema, name) = t.split_once('.').unwrap_or(("public", t));
        let row = src
            .query_one(
                "SELECT c.oid, coalesce(array_agg(a.attname::text ORDER BY k.i) \
                   FILTER (WHERE a.attname IS NOT NULL), '{}') \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 LEFT JOIN pg_index x ON x.indrelid = c.oid AND x.indisprimary \
                 LEFT JOIN LATERAL unnest(x.indkey) WITH ORDINALITY AS k(attnum, i) ON true \
                 LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum \
                 WHERE n.nspname = $1 AND c.relname = $2 GROUP BY c.oid",
                &[&schema, &name],
            )
            .await
            .expect("table on the source");
        sources.push(SourceTable {
            schema: schema.into(),
            name: name.into(),
            oid: row.get(0),
            key: row.get(1),
        });
    }
    schema::describe(src, &sources).await.expect("describe")
}

/// Every difference between the source's tables and the MySQL ones.
async fn differences(
    src: &Client,
    dst: &mut MySqlConnection,
    tables: &[MySqlTable],
) -> Vec<String> {
    let mut out = Vec::new();
    for t in tables {
        match verify::compare_table(src, dst, t, 500, 5).await {
            Ok(d) => out.extend(d.differences.iter().map(|k| format!("{}: {k}", t.target))),
            Err(e) => out.push(format!("{}: {e}", t.target)),
        }
    }
    out
}

async fn wait_equal(
    src: &Client,
    dst: &mut MySqlConnection,
    tables: &[MySqlTable],
    timeout: Duration,
) {
    let start = std::time::Instant::now();
    loop {
        let diff = differences(src, dst, tables).await;
        if diff.is_empty() {
            return;
        }
        assert!(start.elapsed() < timeout, "MySQL still differs from the source: {diff:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Polls `sql` (a count) on MySQL until it returns `want`; returns how long that took.
async fn wait_count(
    dst: &mut MySqlConnection,
    sql: &str,
    want: i64,
    timeout: Duration,
) -> Duration {
    let start = std::time::Instant::now();
    loop {
        let n: Option<i64> = sqlx::query_scalar(sql).fetch_one(&mut *dst).await.ok();
        if n == Some(want) {
            return start.elapsed();
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {sql} = {want} (got {n:?})");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn count(dst: &mut MySqlConnection, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT COUNT(*) FROM `{table}`"))
        .fetch_one(dst)
        .await
        .expect("count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_lab_copy_stream_and_primary_restart() {
    let primary = ClusterBuilder::new().start().expect("start primary");
    let (src_db, src) = database(&primary, "src").await;
    store::create_schema(&src).await.expect("Store schema");
    store::populate(&src, &store::Scale::tiny()).await.expect("populate");
    let (url, mut dst) = mysql_db(testservers::mariadb::shared(), "lab").await;
    let opts = options(&primary, &src_db, &url, &store::TABLES);
    let (shutdown, task) = start(&opts);
    let tables = mapped(&src, &store::TABLES).await;

    // The initial copy makes both sides equal.
    wait_equal(&src, &mut dst, &tables, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!task.is_finished(), "the mirror streams: {:?}", task.await);

    // A row inserted on the primary is readable in MariaDB promptly.
    src.execute("INSERT INTO customers (email, name) VALUES ('lab1@example.com', 'Lab One')", &[])
        .await
        .unwrap();
    let took = wait_count(
        &mut dst,
        "SELECT COUNT(*) FROM customers WHERE email = 'lab1@example.com'",
        1,
        Duration::from_secs(5),
    )
    .await;
    eprintln!("insert visible in MariaDB after {took:?}");

    // The primary crashes; the mirror waits, and resumes when it is back.
    primary.stop(StopMode::Immediate).expect("stop primary");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!task.is_finished(), "the mirror waits for the primary instead of exiting");
    primary.start().expect("start primary again");
    let src = primary.connect(&src_db).await.unwrap();
    src.batch_execute(
        "UPDATE products SET price = price + 1, description = 'changed' WHERE id % 2 = 0; \
         DELETE FROM order_items WHERE line_no = 2; \
         INSERT INTO customers (email, name, phone) VALUES ('lab2@example.com', 'Lab Two', 'x')",
    )
    .await
    .unwrap();
    wait_equal(&src, &mut dst, &tables, Duration::from_secs(60)).await;

    // An unchanged TOASTed value is kept; a key changes; a TRUNCATE empties the table.
    src.batch_execute(
        "UPDATE products SET description = repeat('long ', 40000) WHERE id = 1; \
         UPDATE products SET price = price + 1 WHERE id = 1; \
         UPDATE order_items SET line_no = line_no + 100 WHERE order_id = 1",
    )
    .await
    .unwrap();
    wait_equal(&src, &mut dst, &tables, Duration::from_secs(60)).await;
    let kept: i64 = sqlx::query_scalar("SELECT LENGTH(description) FROM products WHERE id = 1")
        .fetch_one(&mut dst)
        .await
        .unwrap();
    assert_eq!(kept, 200_000, "the unchanged TOAST value is kept");
    src.batch_execute("TRUNCATE order_items").await.unwrap();
    wait_equal(&src, &mut dst, &tables, Duration::from_secs(60)).await;
    assert_eq!(count(&mut dst, "order_items").await, 0);
    shutdown.trigger();
    task.await.unwrap().expect("the mirror stops cleanly");
}

/// Source DDL and rows for every mapped type, edge values included.
const TYPES_DDL: &str = "
    CREATE DOMAIN posint AS integer CHECK (VALUE > 0);
    CREATE DOMAIN money2 AS numeric(10,2);
    CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
    CREATE TYPE pair AS (a int, b text);
    CREATE TABLE every_type (
        id int PRIMARY KEY,
        i2 smallint, i4 integer, i8 bigint, n numeric, n12 numeric(12,2), n70 numeric(70,5),
        f4 real, f8 double precision, b boolean, t text, vc varchar(10), c char(3),
        ba bytea, d date, tm time, tmtz timetz, ts timestamp, ts3 timestamp(3), tstz timestamptz,
        iv interval, u uuid, j json, jb jsonb, ai int[], at text[], a2 int[][], e mood,
        me mood[], dom posint, dm money2, ip inet, net cidr, mac macaddr, mac8 macaddr8, m money,
        bt bit(4), vb varbit, r int4range, tr tstzrange, tsv tsvector, comp pair, o oid, x xml
    )";

const TYPES_ROWS: &str = "
    INSERT INTO every_type VALUES
    (1, 32767, -2147483648, 9223372036854775807, 123456789012345678901234567890.123456789,
     -9999999999.99, 99999.5, 3.4028235e38, 1.7976931348623157e308, true, 'tab\there ''q'' \\\\ 😀',
     'ten chars!', 'ab', '\\x00ff10', '1000-01-01', '24:00:00', '12:34:56.789+05:30',
     '9999-12-31 23:59:59.999999', '2024-02-29 12:00:00.123', '2038-01-19 03:14:08+00',
     '-1 years 2 mons -3 days 04:05:06.5', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
     '{\"b\": 1,  \"a\": [1, 2.50]}', '{\"k\": \"v\", \"n\": null}', '{1,NULL,-3}',
     '{\"a,b\",\"c\\\"d\",NULL}', '{{1,2},{3,4}}', 'happy', '{sad,ok}', 7, 12.34,
     '192.168.0.1/24', '10.0.0.0/8', '08:00:2b:01:02:03', '08:00:2b:01:02:03:04:05', 12.5,
     '1010', '110011', '[1,10)', '[2024-01-01 00:00+00,2024-02-01 00:00+00)', 'a fat cat',
     ROW(1, 'x y'), 4294967295, '<a>1</a>'),
    (2, -32768, 0, -9223372036854775808, -0.000000000000000000000000000001, 0, 0, -0, 5e-324,
     false, '', '', '   ', '', '9999-12-31', '00:00:00', '00:00:00+00',
     '1000-01-01 00:00:00', '1000-01-01 00:00:00', '1000-01-01 00:00:00+00', '0', 
     '00000000-0000-0000-0000-000000000000', 'null', '[]', '{}', '{}', '{}', 'sad', '{}', 1,
     -0.01, '::1', '::/0', '00:00:00:00:00:00', '00:00:00:00:00:00:00:00', -0.01, '0000', '',
     'empty', 'empty', '', ROW(NULL, NULL), 0, ''),
    (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
     NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
     NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_every_type_with_edge_values_is_copied_and_streamed_exactly() {
    let cluster = pgcluster::shared();
    let (src_db, src) = database(cluster, "types").await;
    src.batch_execute(TYPES_DDL).await.unwrap();
    src.batch_execute(TYPES_ROWS).await.unwrap();
    // 400 more of each, so that the copy sends full batches (a prepared statement, values in
    // binary) as well as a last partial one (values inlined).
    src.batch_execute(
        "INSERT INTO every_type SELECT id + 100 * g, i2, i4, i8, n, n12, n70, f4, f8, b, t, vc, \
           c, ba, d, tm, tmtz, ts, ts3, tstz, iv, u, j, jb, ai, at, a2, e, me, dom, dm, ip, net, \
           mac, mac8, m, bt, vb, r, tr, tsv, comp, o, x \
         FROM every_type, generate_series(1, 400) AS g",
    )
    .await
    .unwrap();
    let (url, mut dst) = mysql_db(testservers::mariadb::shared(), "types").await;
    let opts = options(cluster, &src_db, &url, &["every_type"]);
    let (shutdown, task) = start(&opts);
    let tables = mapped(&src, &["every_type"]).await;
    wait_equal(&src, &mut dst, &tables, Duration::from_secs(60)).await;

    // The same rows again through the stream (ids + 10), then updated and some deleted.
    src.batch_execute(
        "BEGIN; INSERT INTO every_type SELECT id + 10, i2, i4, i8, n, n12, n70, f4, f8, b, t, vc, \
           c, ba, d, tm, tmtz, ts, ts3, tstz, iv, u, j, jb, ai, at, a2, e, me, dom, dm, ip, net, \
           mac, mac8, m, bt, vb, r, tr, tsv, comp, o, x FROM every_type \
           WHERE id < 10; COMMIT; \
         UPDATE every_type SET t = t || '!', jb = '{\"z\": [true]}' WHERE id IN (11, 12); \
         DELETE FROM every_type WHERE id = 13",
    )
    .await
    .unwrap();
    wait_equal(&src, &mut dst, &tables, Duration::from_secs(60)).await;
    assert_eq!(count(&mut dst, "every_type").await, 5 + 1200);

    // A few values checked as MySQL itself returns them.
    let row: (String, String, String, String, String) = sqlx::query_as(
        "SELECT CAST(n AS CHAR), CAST(tstz AS CHAR), CAST(ai AS CHAR), HEX(ba), CAST(e AS CHAR) \
         FROM every_type WHERE id = 11",
    )
    .fetch_one(&mut dst)
    .await
    .unwrap();
    assert_eq!(
        row,
        (
            "123456789012345678901234567890.123456789000000000000000000000".into(),
            "2038-01-19 03:14:08.000000".into(),
            "[1,null,-3]".into(),
            "00FF10".into(),
            "happy".into()
        )
    );
    let types: Vec<(String, String)> = sqlx::query_as(
        "SELECT CAST(COLUMN_NAME AS CHAR), CAST(COLUMN_TYPE AS CHAR) FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'every_type' \
           AND COLUMN_NAME IN ('n', 'n12', 'tstz', 'dom', 'dm', 'b') ORDER BY COLUMN_NAME",
    )
    .fetch_all(&mut dst)
    .await
    .unwrap();
    let want = [
        ("b", "tinyint(1)"),
        ("dm", "decimal(10,2)"),
        ("dom", "int(11)"),
        ("n", "decimal(65,30)"),
        ("n12", "decimal(12,2)"),
        ("tstz", "datetime(6)"),
    ];
    let want: Vec<(String, String)> =
        want.iter().map(|(a, b)| ((*a).into(), (*b).into())).collect();
    assert_eq!(types, want);
    shutdown.trigger();
    task.await.unwrap().expect("the mirror stops cleanly");
    drop_slot(&src, &opts.slot_name()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_unrepresentable_values_stop_the_mirror_before_their_transaction_commits() {
    let cluster = pgcluster::shared();
    let server = testservers::mariadb::shared();
    for (ddl, bad) in [
        ("f8 double precision", "'NaN'"),
        ("f8 real", "'-Infinity'"),
        ("f8 numeric", "'Infinity'"),
        ("f8 numeric", "0.0000000000000000000000000000001"),
        ("f8 numeric", "1e40"),
        ("f8 date", "'0999-12-31'"),
        ("f8 date", "'10000-01-01'"),
        ("f8 timestamptz", "'infinity'"),
        ("f8 timestamp", "'2000-01-01 00:00 BC'"),
    ] {
        let (src_db, src) = database(cluster, "unrep").await;
        src.batch_execute(&format!(
            "CREATE TABLE v (id int PRIMARY KEY, {ddl}); INSERT INTO v VALUES (1, NULL)"
        ))
        .await
        .unwrap();
        let (url, mut dst) = mysql_db(server, "unrep").await;
        let opts = options(cluster, &src_db, &url, &["v"]);
        let (_shutdown, task) = start(&opts);
        wait_count(&mut dst, "SELECT COUNT(*) FROM v", 1, Duration::from_secs(60)).await;
        // One source transaction with a good row, then one with the bad value and a good row.
        src.batch_execute("INSERT INTO v VALUES (2, NULL)").await.unwrap();
        src.batch_execute(&format!(
            "BEGIN; INSERT INTO v VALUES (3, NULL); INSERT INTO v VALUES (4, {bad}); COMMIT"
        ))
        .await
        .unwrap();
        let err = tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("the mirror stops")
            .unwrap()
            .expect_err("the mirror fails");
        let msg = format!("{err:#}");
        eprintln!("{ddl} {bad}: {msg}");
        assert!(
            msg.contains("\"public\".\"v\"") && msg.contains("id=4") && msg.contains("\"f8\""),
            "{msg}"
        );
        assert_eq!(msg.lines().count(), 1, "one line: {msg}");
        let ids: Vec<i32> =
            sqlx::query_scalar("SELECT id FROM v ORDER BY id").fetch_all(&mut dst).await.unwrap();
        assert!(ids == [1] || ids == [1, 2], "nothing of the bad transaction: {ids:?}");
        drop_slot(&src, &opts.slot_name()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_unrepresentable_value_in_the_initial_copy_stops_the_mirror() {
    let cluster = pgcluster::shared();
    let (src_db, src) = database(cluster, "unrepcopy").await;
    src.batch_execute("CREATE TABLE v (id int PRIMARY KEY, d date); INSERT INTO v VALUES (1, '2000-01-01'), (7, '0500-03-04')")
        .await
        .unwrap();
    let (url, _dst) = mysql_db(testservers::mariadb::shared(), "unrepcopy").await;
    let opts = options(cluster, &src_db, &url, &["v"]);
    let mut stop = Shutdown::manual();
    let err = run(&opts, &mut stop).await.expect_err("the copy fails");
    let msg = format!("{err:#}");
    assert!(msg.contains("id=7") && msg.contains("\"d\"") && msg.contains("0500-03-04"), "{msg}");
    let slots: i64 = src
        .query_one(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1",
            &[&opts.slot_name()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(slots, 0, "the failed start dropped the slot it created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_hostile_identifiers_and_name_problems() {
    let cluster = pgcluster::shared();
    let (src_db, src) = database(cluster, "hostile").await;
    src.batch_execute(
        "CREATE SCHEMA \"Sales`; DROP\"; \
         CREATE TABLE \"Sales`; DROP\".\"Or`ders \"\"x\"\"\" (\"i`d\" int PRIMARY KEY, \"Ünï cödé`\" text, \"sp ace\" text); \
         INSERT INTO \"Sales`; DROP\".\"Or`ders \"\"x\"\"\" VALUES (1, 'a`b', 'c''d'), (2, NULL, '😀')",
    )
    .await
    .unwrap();
    let table = "Sales`; DROP.Or`ders \"x\"";
    let (url, mut dst) = mysql_db(testservers::mariadb::shared(), "hostile").await;
    let mut opts = options(cluster, &src_db, &url, &[]);
    opts.tables.tables = Some(vec![format!("\"Sales`; DROP\".\"Or`ders \"\"x\"\"\"")]);
    let (shutdown, task) = start(&opts);
    let tables = {
        let (schema, name) = table.split_once('.').unwrap();
        let oid: u32 = src
            .query_one("SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE nspname = $1 AND relname = $2", &[&schema, &name])
            .await
            .unwrap()
            .get(0);
        schema::describe(
            &src,
            &[SourceTable {
                schema: schema.into(),
                name: name.into(),
                oid,
                key: vec!["i`d".into()],
            }],
        )
        .await
        .unwrap()
    };
    assert_eq!(tables[0].target, "Sales`; DROP__Or`ders \"x\"");
    wait_equal(&src, &mut dst, &tables, Duration::from_secs(60)).await;
    src.batch_execute(
        "UPDATE \"Sales`; DROP\".\"Or`ders \"\"x\"\"\" SET \"sp ace\" = 'new' WHERE \"i`d\" = 1",
    )
    .await
    .unwrap();
    wait_equal(&src, &mut dst, &tables, Duration::from_secs(60)).await;
    shutdown.trigger();
    task.await.unwrap().unwrap();
    drop_slot(&src, &opts.slot_name()).await;

    // Names MySQL cannot take are refused at start-up, each with its fix.
    let (src_db, src) = database(cluster, "collide").await;
    let long = "l".repeat(40);
    src.batch_execute(&format!(
        "CREATE SCHEMA a; CREATE SCHEMA {long}; \
         CREATE TABLE a.b (id int PRIMARY KEY); CREATE TABLE public.a__b (id int PRIMARY KEY); \
         CREATE TABLE {long}.{long} (id int PRIMARY KEY, \"C\" int, c int); \
         CREATE TABLE nokey (v int)"
    ))
    .await
    .unwrap();
    let (url, mut dst) = mysql_db(testservers::mariadb::shared(), "collide").await;
    let opts = options(
        cluster,
        &src_db,
        &url,
        &["a.b", "public.a__b", &format!("{long}.{long}"), "nokey"],
    );
    let err = run(&opts, &mut Shutdown::manual()).await.expect_err("refused");
    let msg = format!("{err:#}");
    eprintln!("{msg}");
    assert!(msg.contains("would both be MySQL table `a__b`"), "{msg}");
    assert!(msg.contains("over 64 characters"), "{msg}");
    assert!(msg.contains("differ only in case"), "{msg}");
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()",
    )
    .fetch_one(&mut dst)
    .await
    .unwrap();
    assert_eq!(n, 0, "nothing was created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_existing_tables_are_checked_with_one_message_per_mismatch() {
    let cluster = pgcluster::shared();
    let (src_db, src) = database(cluster, "compat").await;
    src.batch_execute(
        "CREATE TABLE t (id bigint PRIMARY KEY, name varchar(50) NOT NULL, price numeric(12,2), note text)",
    )
    .await
    .unwrap();
    let (url, mut dst) = mysql_db(testservers::mariadb::shared(), "compat").await;
    sqlx::raw_sql(
        "CREATE TABLE t (id INT NOT NULL PRIMARY KEY, name VARCHAR(20) NOT NULL, \
         price DECIMAL(12,2)) DEFAULT CHARSET=utf8mb4",
    )
    .execute(&mut dst)
    .await
    .unwrap();
    let opts = options(cluster, &src_db, &url, &["t"]);
    let err = run(&opts, &mut Shutdown::manual()).await.expect_err("refused");
    let msg = format!("{err:#}");
    eprintln!("{msg}");
    assert!(msg.contains("`t`.`id` is int(11) but the source's bigint needs BIGINT"), "{msg}");
    assert!(msg.contains("`t`.`name` is varchar(20), narrower than VARCHAR(50)"), "{msg}");
    assert!(
        msg.contains("lacks column `note`; fix: ALTER TABLE `t` ADD COLUMN `note` LONGTEXT"),
        "{msg}"
    );
    assert!(!msg.contains("`price`"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_survives_a_mariadb_restart_mid_stream() {
    let cluster = pgcluster::shared();
    let server = MariaDb::builder().start().expect("start MariaDB");
    let (src_db, src) = database(cluster, "mdbrestart").await;
    src.batch_execute("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 100) g")
        .await
        .unwrap();
    let (url, mut dst) = mysql_db(&server, "restart").await;
    let opts = options(cluster, &src_db, &url, &["t"]);
    let (shutdown, task) = start(&opts);
    let tables = mapped(&src, &["t"]).await;
    wait_equal(&src, &mut dst, &tables, Duration::from_secs(60)).await;
    let load = {
        let src = cluster.connect(&src_db).await.unwrap();
        tokio::spawn(async move {
            for i in 0..200 {
                src.batch_execute(&format!(
                    "INSERT INTO t VALUES ({}, 'new'); UPDATE t SET v = v || '+' WHERE id = {}; \
                     DELETE FROM t WHERE id = {}",
                    1000 + i,
                    1 + i % 100,
                    1000 + i - 1
                ))
                .await
                .unwrap();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.restart().expect("restart MariaDB");
    load.await.unwrap();
    let mut dst = server.connect(&dst_db_name(&url)).await.unwrap();
    wait_equal(&src, &mut dst, &tables, Duration::from_secs(90)).await;
    assert!(!task.is_finished(), "the mirror kept running");
    shutdown.trigger();
    task.await.unwrap().unwrap();
    drop_slot(&src, &opts.slot_name()).await;
}

fn dst_db_name(url: &str) -> String {
    url.rsplit('/').next().unwrap().split('?').next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_sigkill_under_load_loses_and_repeats_nothing() {
    let cluster = pgcluster::shared();
    let (src_db, src) = database(cluster, "mkill").await;
    src.batch_execute(
        "CREATE TABLE acct (id int PRIMARY KEY, balance bigint NOT NULL, note text); \
         INSERT INTO acct SELECT g, 1000, 'n' FROM generate_series(1, 200) g; \
         CREATE TABLE log (id bigserial PRIMARY KEY, acct int, amount bigint)",
    )
    .await
    .unwrap();
    let (url, mut dst) = mysql_db(testservers::mariadb::shared(), "mkill").await;
    let source_url = cluster.url(&src_db);
    let name = pgcluster::unique_name("k");
    let args = ["--name", name.as_str(), "--tables", "acct,log"];
    let tables = mapped(&src, &["acct", "log"]).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let src = cluster.connect(&src_db).await.unwrap();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut i: i64 = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                let (a, b) = (1 + i % 200, 1 + (i * 7) % 200);
                src.batch_execute(&format!(
                    "BEGIN; UPDATE acct SET balance = balance - {i} WHERE id = {a}; \
                     UPDATE acct SET balance = balance + {i} WHERE id = {b}; \
                     INSERT INTO log (acct, amount) VALUES ({a}, {i}); COMMIT"
                ))
                .await
                .unwrap();
            }
        })
    };
    let mut mirror = spawn(&args, &source_url, &url);
    for round in 0..4 {
        tokio::time::sleep(Duration::from_millis(1500 + 300 * round)).await;
        kill(&mut mirror);
        mirror = spawn(&args, &source_url, &url);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    load.await.unwrap();
    wait_equal(&src, &mut dst, &tables, Duration::from_secs(120)).await;
    let total: i64 = sqlx::query_scalar("SELECT CAST(SUM(balance) AS SIGNED) FROM acct")
        .fetch_one(&mut dst)
        .await
        .unwrap();
    assert_eq!(total, 200_000, "transfers applied exactly once");
    drop(mirror);
    let _ = dst.close().await;
    drop_slot(&src, &format!("pgmirror_{name}")).await;
}

/// Runs the built binary; returns its exit code and standard output.
fn pgmirror(args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgmirror"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run pgmirror");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("pgmirror {args:?}:\n{stdout}{}", String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_verify_status_and_drop_accept_the_mysql_url() {
    let cluster = pgcluster::shared();
    let (src_db, src) = database(cluster, "ops").await;
    src.batch_execute(
        "CREATE TABLE t (id int PRIMARY KEY, v text, n numeric(8,3)); \
         INSERT INTO t SELECT g, 'v' || g, g / 7.0 FROM generate_series(1, 1200) g",
    )
    .await
    .unwrap();
    let (url, mut dst) = mysql_db(testservers::mariadb::shared(), "ops").await;
    let opts = options(cluster, &src_db, &url, &["t"]);
    let (shutdown, task) = start(&opts);
    let tables = mapped(&src, &["t"]).await;
    wait_equal(&src, &mut dst, &tables, Duration::from_secs(60)).await;
    let source = cluster.url(&src_db);
    let name = opts.name.as_str();
    let base = ["--source", source.as_str(), "--target", url.as_str()];

    let (code, out) = pgmirror(&[&["verify"][..], &base, &["--chunk-rows", "500"]].concat());
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("✔ \"public\".\"t\": 1200 rows match"), "{out}");
    let (code, out) = pgmirror(&[&["status"][..], &base, &["--name", name]].concat());
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(": streaming") && out.contains("active"), "{out}");

    // A row changed behind the mirror's back, one deleted, one added: each key listed.
    sqlx::raw_sql("UPDATE t SET n = n + 1 WHERE id = 700; DELETE FROM t WHERE id = 3; INSERT INTO t VALUES (5000, 'x', 1)")
        .execute(&mut dst)
        .await
        .unwrap();
    let (code, out) = pgmirror(&[&["verify"][..], &base, &["--name", name]].concat());
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("(id=700): column \"n\" is 100 on the source but 101 on the target"),
        "{out}"
    );
    assert!(out.contains("(id=3): missing on the target"), "{out}");
    assert!(out.contains("1 rows only on the target"), "{out}");

    shutdown.trigger();
    task.await.unwrap().unwrap();
    let (code, out) = pgmirror(&[&["drop"][..], &base, &["--name", name]].concat());
    assert_eq!(code, 0, "{out}");
    let slots: i64 = src
        .query_one(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1",
            &[&opts.slot_name()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(slots, 0, "the slot is dropped");
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pgmirror_progress")
        .fetch_one(&mut dst)
        .await
        .unwrap();
    assert_eq!(rows, 0, "the progress row is deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_demo_runs_the_lab_into_mariadb() {
    let (code, out) =
        pgmirror(&["demo", "--target", "mysql", "--orders", "100", "--transactions", "20"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("MariaDB equals the primary"), "{out}");
    assert!(out.contains("replication resumed by itself"), "{out}");
    assert_eq!(out.matches(" 0 differences").count(), 4, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_check_tests_the_target_and_names_each_fix() {
    let cluster = pgcluster::shared();
    let (src_db, src) = database(cluster, "mcheck").await;
    src.batch_execute("CREATE TABLE t (id bigint PRIMARY KEY, v text)").await.unwrap();
    let (url, mut dst) = mysql_db(testservers::mariadb::shared(), "mcheck").await;
    let source = cluster.url(&src_db);
    let args = ["check", "--source", source.as_str(), "--target", url.as_str(), "--tables", "t"];
    let (code, out) = pgmirror(&args);
    assert_eq!(code, 0, "{out}");
    for check in [
        "target connection",
        "target privileges",
        "storage engine",
        "sql_mode",
        "max_allowed_packet",
        "lower_case_table_names",
        "time zone",
        "commit durability",
    ] {
        assert!(out.contains(check), "{check} in {out}");
    }
    assert!(out.contains("1 tables fit; 1 will be created"), "{out}");
    sqlx::raw_sql("CREATE TABLE t (id INT PRIMARY KEY, v LONGTEXT)")
        .execute(&mut dst)
        .await
        .unwrap();
    let (code, out) = pgmirror(&args);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("fix: ALTER TABLE `t` MODIFY `id` BIGINT"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_a_million_row_transaction_is_applied_whole() {
    let cluster = pgcluster::shared();
    let (src_db, src) = database(cluster, "million").await;
    src.batch_execute("CREATE TABLE big (id int PRIMARY KEY, v text, n numeric(10,2))")
        .await
        .unwrap();
    let (url, mut dst) = mysql_db(testservers::mariadb::shared(), "million").await;
    let opts = options(cluster, &src_db, &url, &["big"]);
    let (shutdown, task) = start(&opts);
    let tables = mapped(&src, &["big"]).await;
    wait_equal(&src, &mut dst, &tables, Duration::from_secs(60)).await;
    src.batch_execute(
        "INSERT INTO big SELECT g, 'row ' || g, g / 100.0 FROM generate_series(1, 1000000) g",
    )
    .await
    .unwrap();
    wait_count(&mut dst, "SELECT COUNT(*) FROM big", 1_000_000, Duration::from_secs(600)).await;
    wait_equal(&src, &mut dst, &tables, Duration::from_secs(60)).await;
    shutdown.trigger();
    task.await.unwrap().unwrap();
    drop_slot(&src, &opts.slot_name()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_a_column_added_on_the_source_is_added_and_streamed() {
    let cluster = pgcluster::shared();
    let (src_db, src) = database(cluster, "addcol").await;
    src.batch_execute("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a')")
        .await
        .unwrap();
    let (url, mut dst) = mysql_db(testservers::mariadb::shared(), "addcol").await;
    let opts = options(cluster, &src_db, &url, &["t"]);
    let (shutdown, task) = start(&opts);
    wait_equal(&src, &mut dst, &mapped(&src, &["t"]).await, Duration::from_secs(60)).await;
    src.batch_execute(
        "ALTER TABLE t ADD COLUMN w numeric(6,2); INSERT INTO t VALUES (2, 'b', 12.5); \
         UPDATE t SET w = 1 WHERE id = 1",
    )
    .await
    .unwrap();
    wait_equal(&src, &mut dst, &mapped(&src, &["t"]).await, Duration::from_secs(60)).await;
    assert!(!task.is_finished(), "the mirror keeps streaming");
    shutdown.trigger();
    task.await.unwrap().unwrap();
    drop_slot(&src, &opts.slot_name()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_a_given_slot_without_initial_copy_is_streamed_and_kept_across_restarts() {
    let cluster = pgcluster::shared();
    let (src_db, src) = database(cluster, "givenslot").await;
    let slot = pgcluster::unique_name("given");
    src.batch_execute("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a')")
        .await
        .unwrap();
    // The publication precedes the slot, as a given slot's must: pgoutput reads it as of each
    // change.
    let publication = pgcluster::unique_name("givenpub");
    src.batch_execute(&format!("CREATE PUBLICATION {publication} FOR TABLE t")).await.unwrap();
    src.execute("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", &[&slot])
        .await
        .unwrap();
    // Only what follows the slot streams: row 1 is not copied.
    src.batch_execute("INSERT INTO t VALUES (2, 'b')").await.unwrap();
    let (url, mut dst) = mysql_db(testservers::mariadb::shared(), "givenslot").await;
    let mut opts = options(cluster, &src_db, &url, &["t"]);
    opts.tables =
        TableSelection { publication: Some(publication), tables: None, exclude_tables: None };
    opts.slot = Some(slot.clone());
    opts.initial_copy = false;
    for (round, id) in [(1, 3_i32), (2, 4)] {
        let (shutdown, task) = start(&opts);
        src.execute("INSERT INTO t VALUES ($1, 'x')", &[&id]).await.unwrap();
        wait_count(&mut dst, "SELECT COUNT(*) FROM t", i64::from(id) - 1, Duration::from_secs(60))
            .await;
        shutdown.trigger();
        task.await.unwrap().unwrap();
        let state: Vec<u8> = sqlx::query_scalar("SELECT state FROM pgmirror_progress")
            .fetch_one(&mut dst)
            .await
            .unwrap();
        assert_eq!(state, b"streaming", "round {round}");
        let kept: bool = src
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)",
                &[&slot],
            )
            .await
            .unwrap()
            .get(0);
        assert!(kept, "round {round}: the given slot is kept");
    }
    let ids: Vec<i32> =
        sqlx::query_scalar("SELECT id FROM t ORDER BY id").fetch_all(&mut dst).await.unwrap();
    assert_eq!(ids, [2, 3, 4]);
    drop_slot(&src, &slot).await;
}

/// A table's InnoDB `STATS_AUTO_RECALC` table option, as `CREATE_OPTIONS` shows it.
async fn recalc_option(dst: &mut MySqlConnection, table: &str) -> String {
    let options: Option<String> = sqlx::query_scalar(
        "SELECT CAST(CREATE_OPTIONS AS CHAR) FROM information_schema.TABLES \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
    )
    .bind(table)
    .fetch_one(dst)
    .await
    .unwrap();
    options.unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_the_copy_turns_statistics_recalculation_back_on_after_a_failure_and_on_drop() {
    let cluster = pgcluster::shared();
    let (src_db, src) = database(cluster, "recalc").await;
    src.batch_execute(
        "CREATE TABLE v (id int PRIMARY KEY, d date); \
         INSERT INTO v VALUES (1, '2000-01-01'), (7, '0500-03-04'); \
         CREATE TABLE w (id int PRIMARY KEY); INSERT INTO w VALUES (1), (2)",
    )
    .await
    .unwrap();
    let (url, mut dst) = mysql_db(testservers::mariadb::shared(), "recalc").await;
    // The user's own setting is left alone.
    sqlx::raw_sql("CREATE TABLE w (id int PRIMARY KEY) STATS_AUTO_RECALC = 1")
        .execute(&mut dst)
        .await
        .unwrap();
    let opts = options(cluster, &src_db, &url, &["v", "w"]);
    let err = run(&opts, &mut Shutdown::manual()).await.expect_err("the copy fails on 0500-03-04");
    assert!(format!("{err:#}").contains("0500-03-04"), "{err:#}");
    assert_eq!(recalc_option(&mut dst, "v").await, "stats_auto_recalc=0", "off during the copy");
    assert_eq!(recalc_option(&mut dst, "w").await, "stats_auto_recalc=1");

    // The next start copies again and ends the pause the failed one left.
    src.batch_execute("UPDATE v SET d = '2000-03-04' WHERE id = 7").await.unwrap();
    let (shutdown, task) = start(&opts);
    let tables = mapped(&src, &["v", "w"]).await;
    wait_equal(&src, &mut dst, &tables, Duration::from_secs(60)).await;
    shutdown.trigger();
    task.await.unwrap().unwrap();
    assert_eq!(recalc_option(&mut dst, "v").await, "", "back to the server's default");
    assert_eq!(recalc_option(&mut dst, "w").await, "stats_auto_recalc=1");
    drop_slot(&src, &opts.slot_name()).await;

    // A mirror dropped after a failed copy: `drop` ends the pause.
    src.batch_execute("INSERT INTO v VALUES (9, '0400-01-01')").await.unwrap();
    let mut again = options(cluster, &src_db, &url, &["v"]);
    again.truncate_target = true;
    run(&again, &mut Shutdown::manual()).await.expect_err("the copy fails on 0400-01-01");
    assert_eq!(recalc_option(&mut dst, "v").await, "stats_auto_recalc=0");
    let source = cluster.url(&src_db);
    let (code, out) = pgmirror(&[
        "drop",
        "--source",
        source.as_str(),
        "--target",
        url.as_str(),
        "--name",
        again.name.as_str(),
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("statistics recalculation back on"), "{out}");
    assert_eq!(recalc_option(&mut dst, "v").await, "");
}
