//! Integration tests against real PostgreSQL clusters (pgcluster): two databases on the
//! shared cluster act as source and target; one test copies to a second cluster.

use std::sync::Mutex;

use rand::SeedableRng;
use tablesync::{
    CopyEvent, CopyFormat, CopyOptions, DiffKind, Error, IdentityKind, NoTlsConnector,
    PublicationStatus, QualifiedName, ReplicaIdentity, TableDef, TargetOptions, TargetTable,
};
use tokio_postgres::Client;

struct Pair {
    src_db: String,
    dst_db: String,
    src: Client,
    dst: Client,
}

impl Pair {
    fn source(&self) -> NoTlsConnector {
        NoTlsConnector::from_url(&pgcluster::shared().url(&self.src_db)).unwrap()
    }

    fn target(&self) -> NoTlsConnector {
        NoTlsConnector::from_url(&pgcluster::shared().url(&self.dst_db)).unwrap()
    }
}

async fn pair(prefix: &str) -> Pair {
    let cluster = pgcluster::shared();
    let src_db = pgcluster::unique_name(&format!("{prefix}_src"));
    let dst_db = pgcluster::unique_name(&format!("{prefix}_dst"));
    cluster.create_database(&src_db).await.unwrap();
    cluster.create_database(&dst_db).await.unwrap();
    let src = cluster.connect(&src_db).await.unwrap();
    let dst = cluster.connect(&dst_db).await.unwrap();
    Pair { src_db, dst_db, src, dst }
}

async fn store_source(prefix: &str) -> (Pair, Vec<TableDef>) {
    let p = pair(prefix).await;
    store::create_schema(&p.src).await.unwrap();
    store::populate(&p.src, &store::Scale::tiny()).await.unwrap();
    let tables = tablesync::resolve_tables(
        &p.src,
        &QualifiedName::parse_list(&store::TABLES.join(",")).unwrap(),
    )
    .await
    .unwrap();
    (p, tables)
}

/// Exports a snapshot from a plain connection kept open in its transaction.
async fn export_snapshot(db: &str) -> (Client, String) {
    let c = pgcluster::shared().connect(db).await.unwrap();
    c.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ").await.unwrap();
    let name: String = c.query_one("SELECT pg_export_snapshot()", &[]).await.unwrap().get(0);
    (c, name)
}

async fn fingerprints(c: &Client) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    for t in store::TABLES {
        out.push(store::table_fingerprint(c, t).await.unwrap());
    }
    out
}

fn no_progress(_: CopyEvent<'_>) {}

#[test]
fn copy_future_is_send() {
    // The CLI may spawn the copy; building the future runs nothing.
    fn is_send<T: Send>(_: T) {}
    let connector = NoTlsConnector::from_url("postgres://127.0.0.1:1/none").unwrap();
    is_send(tablesync::copy_tables(
        &connector,
        &connector,
        "snap",
        &[],
        &CopyOptions::default(),
        &no_progress,
    ));
}

async fn create_targets(p: &Pair, tables: &[TableDef]) {
    for t in tables {
        let outcome =
            tablesync::ensure_target_table(&p.dst, t, &TargetOptions::default()).await.unwrap();
        assert_eq!(outcome, TargetTable::Created);
    }
}

#[tokio::test]
async fn resolves_store_tables_in_dependency_order() {
    let (p, tables) = store_source("resolve").await;
    let names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
    let pos = |n: &str| names.iter().position(|x| *x == n).unwrap();
    assert_eq!(names.len(), 4);
    assert!(pos("customers") < pos("orders") && pos("orders") < pos("order_items"));
    assert!(pos("products") < pos("order_items"));

    let customers = tables.iter().find(|t| t.name == "customers").unwrap();
    assert_eq!(customers.schema, "public");
    assert_eq!(customers.primary_key, ["id"]);
    assert_eq!(customers.replica_identity, ReplicaIdentity::Default);
    assert_eq!(customers.identity_columns, ["id"]);
    assert_eq!(customers.estimated_rows, Some(20));
    let id = customers.column("id").unwrap();
    assert_eq!(
        (id.type_name.as_str(), id.identity, id.default.as_deref()),
        ("bigint", Some(IdentityKind::ByDefault), None)
    );
    let email = customers.column("email").unwrap();
    assert_eq!(email.type_name, "character varying(200)");
    assert!(email.not_null);
    let phone = customers.column("phone").unwrap();
    assert!(!phone.not_null);
    assert_eq!(customers.column("is_active").unwrap().default.as_deref(), Some("true"));
    assert_eq!(customers.column("created_at").unwrap().default.as_deref(), Some("now()"));
    let items = tables.iter().find(|t| t.name == "order_items").unwrap();
    assert_eq!(items.primary_key, ["order_id", "line_no"]);
    let products = tables.iter().find(|t| t.name == "products").unwrap();
    assert_eq!(products.column("tags").unwrap().type_name, "text[]");
    assert_eq!(products.column("price").unwrap().type_name, "numeric(12,2)");

    let err =
        tablesync::resolve_tables(&p.src, &QualifiedName::parse_list("customers, Nope").unwrap())
            .await
            .unwrap_err();
    assert!(matches!(&err, Error::TableNotFound { table } if table.name == "nope"), "{err}");
    assert!(err.to_string().contains("\"public\".\"nope\""), "{err}");

    let mut seqs = tablesync::table_sequences(&p.src, &tables).await.unwrap();
    assert_eq!(seqs.len(), 3, "{seqs:?}");
    tablesync::refresh_sequences(&p.src, &mut seqs).await.unwrap();
    for s in &seqs {
        assert!(s.identity);
        let (table, column) = s.used_by.clone().unwrap();
        assert_eq!(column, "id");
        let expected = i64::try_from(store::Scale::tiny().rows(&table.name)).unwrap();
        assert_eq!((s.last_value, s.is_called), (expected, true), "{}", table.name);
    }
}

#[tokio::test]
async fn publication_is_created_checked_and_dropped() {
    let (p, tables) = store_source("publication").await;
    let pubname = pgcluster::unique_name("pub");
    let first_two = &tables[..2];
    assert_eq!(
        tablesync::ensure_publication(&p.src, &pubname, first_two).await.unwrap(),
        PublicationStatus::Created
    );
    assert_eq!(
        tablesync::ensure_publication(&p.src, &pubname, first_two).await.unwrap(),
        PublicationStatus::Existing
    );
    let published = tablesync::publication_tables(&p.src, &pubname).await.unwrap();
    let mut got: Vec<_> = published.iter().map(|t| t.name.clone()).collect();
    let mut want: Vec<_> = first_two.iter().map(|t| t.name.clone()).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    // Without a column list or row filter, the definitions are those of the tables.
    for t in &published {
        let plain = tables.iter().find(|x| x.name == t.name).unwrap();
        assert_eq!(t, plain);
    }

    let err = tablesync::ensure_publication(&p.src, &pubname, &tables).await.unwrap_err();
    match &err {
        Error::PublicationMissingTables { publication, missing } => {
            assert_eq!(publication, &pubname);
            let missing: Vec<_> = missing.iter().map(|m| m.name.clone()).collect();
            let expected: Vec<_> = tables[2..].iter().map(|t| t.name.clone()).collect();
            assert_eq!(missing, expected);
        }
        other => panic!("unexpected {other}"),
    }
    assert!(err.to_string().contains(&format!("\"{}\"", tables[3].name)), "{err}");

    assert!(tablesync::drop_publication(&p.src, &pubname).await.unwrap());
    assert!(!tablesync::drop_publication(&p.src, &pubname).await.unwrap());
    assert!(matches!(
        tablesync::publication_tables(&p.src, &pubname).await,
        Err(Error::PublicationNotFound { .. })
    ));
}

#[tokio::test]
async fn created_target_tables_match_the_source_structure() {
    let (p, tables) = store_source("create").await;
    create_targets(&p, &tables).await;
    let names: Vec<QualifiedName> = tables.iter().map(TableDef::qualified_name).collect();
    let on_target = tablesync::resolve_tables(&p.dst, &names).await.unwrap();
    for (s, t) in tables.iter().zip(&on_target) {
        assert_eq!(s.qualified_name(), t.qualified_name());
        assert_eq!(s.columns, t.columns, "columns of {}", s.name);
        assert_eq!(s.primary_key, t.primary_key);
        // Existing and equal: accepted, nothing extra.
        let again =
            tablesync::ensure_target_table(&p.dst, s, &TargetOptions::default()).await.unwrap();
        assert_eq!(again, TargetTable::Existing { extra_columns: vec![] });
    }
    // Without create_missing, a missing table is an error.
    let opts = TargetOptions { create_missing: false };
    p.dst.batch_execute("DROP TABLE order_items").await.unwrap();
    let items = tables.iter().find(|t| t.name == "order_items").unwrap();
    assert!(matches!(
        tablesync::ensure_target_table(&p.dst, items, &opts).await,
        Err(Error::TableNotFound { .. })
    ));
}

#[tokio::test]
async fn mismatching_target_tables_are_reported_by_table_and_column() {
    let p = pair("mismatch").await;
    p.src
        .batch_execute("CREATE TABLE m (id bigint PRIMARY KEY, label text, qty integer NOT NULL);")
        .await
        .unwrap();
    let table = tablesync::resolve_tables(&p.src, &[QualifiedName::parse("m").unwrap()])
        .await
        .unwrap()
        .remove(0);
    let opts = TargetOptions::default();
    let check = |ddl: &'static str| {
        let (dst, table, opts) = (&p.dst, &table, &opts);
        async move {
            dst.batch_execute(&format!("DROP TABLE IF EXISTS m; {ddl}")).await.unwrap();
            tablesync::ensure_target_table(dst, table, opts).await
        }
    };

    let err = check("CREATE TABLE m (id integer PRIMARY KEY, label text, qty integer NOT NULL)")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::ColumnTypeMismatch { column, source_type, target_type, .. }
            if column == "id" && source_type == "bigint" && target_type == "integer"),
        "{err}"
    );
    assert!(err.to_string().contains("\"public\".\"m\""), "{err}");

    let err =
        check("CREATE TABLE m (id bigint PRIMARY KEY, qty integer NOT NULL)").await.unwrap_err();
    assert!(matches!(&err, Error::ColumnMissing { column, .. } if column == "label"), "{err}");

    let err =
        check("CREATE TABLE m (id bigint PRIMARY KEY, label text NOT NULL, qty integer NOT NULL)")
            .await
            .unwrap_err();
    assert!(matches!(&err, Error::ColumnNullability { column, .. } if column == "label"), "{err}");

    let err =
        check("CREATE TABLE m (id bigint PRIMARY KEY, label text, qty integer, x int NOT NULL)")
            .await
            .unwrap_err();
    assert!(matches!(&err, Error::ExtraColumnRequired { column, .. } if column == "x"), "{err}");

    let err = check(
        "CREATE TABLE m (id bigint PRIMARY KEY, label text, qty integer GENERATED ALWAYS AS (1) STORED)",
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, Error::GeneratedMismatch { column, source_generated: false, .. } if column == "qty"),
        "{err}"
    );

    // Target NOT NULL relaxed, extra nullable and defaulted columns: accepted.
    let ok = check(
        "CREATE TABLE m (extra text, qty integer, label text, id bigint PRIMARY KEY, d int NOT NULL DEFAULT 7)",
    )
    .await
    .unwrap();
    assert_eq!(ok, TargetTable::Existing { extra_columns: vec!["extra".into(), "d".into()] });

    // Copying into the compatible table with its different column order works.
    p.src.batch_execute("INSERT INTO m VALUES (1, 'a', 10), (2, NULL, 20)").await.unwrap();
    let (_exporter, snap) = export_snapshot(&p.src_db).await;
    let report = tablesync::copy_tables(
        &p.source(),
        &p.target(),
        &snap,
        std::slice::from_ref(&table),
        &CopyOptions::default(),
        &no_progress,
    )
    .await
    .unwrap();
    assert_eq!(report.rows, 2);
    let rows =
        p.dst.query("SELECT id, label, qty, extra, d FROM m ORDER BY id", &[]).await.unwrap();
    type Row = (i64, Option<String>, i32, Option<String>, i32);
    let got: Vec<Row> =
        rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4))).collect();
    assert_eq!(got, vec![(1, Some("a".into()), 10, None, 7), (2, None, 20, None, 7)]);
    assert!(tablesync::compare_tables(&p.src, &p.dst, &table, 1).await.unwrap().is_empty());
}

#[tokio::test]
async fn copy_under_snapshot_ignores_later_writes() {
    let (mut p, tables) = store_source("copy").await;
    create_targets(&p, &tables).await;
    let (exporter, snap) = export_snapshot(&p.src_db).await;
    let at_snapshot = fingerprints(&exporter).await;

    // Writes committed after the export must not show up in the copy.
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for _ in 0..5 {
        store::oltp_transaction(&mut p.src, &mut rng).await.unwrap();
    }
    p.src.batch_execute("UPDATE customers SET name = 'changed' WHERE id = 1").await.unwrap();
    assert_ne!(fingerprints(&p.src).await, at_snapshot);

    let events = Mutex::new(Vec::new());
    let progress = |e: CopyEvent<'_>| {
        let line = match e {
            CopyEvent::SnapshotImported { connections } => format!("imported {connections}"),
            CopyEvent::TableStarted { table, .. } => format!("start {}", table.name),
            CopyEvent::Progress { table, rows, .. } => format!("progress {} {rows}", table.name),
            CopyEvent::TableDone(r) => format!("done {} {}", r.table.name, r.rows),
            _ => String::new(),
        };
        events.lock().unwrap().push(line);
    };
    let options = CopyOptions { parallelism: 3, replica_role: true, ..CopyOptions::default() };
    let report =
        tablesync::copy_tables(&p.source(), &p.target(), &snap, &tables, &options, &progress)
            .await
            .unwrap();
    assert_eq!(fingerprints(&p.dst).await, at_snapshot);

    let scale = store::Scale::tiny();
    assert_eq!(report.tables.len(), 4);
    for (t, r) in tables.iter().zip(&report.tables) {
        assert_eq!(r.table, t.qualified_name());
        assert_eq!(r.rows, scale.rows(&t.name), "{}", t.name);
        assert_eq!(r.format, CopyFormat::Binary);
        assert!(!r.fell_back_to_text && r.bytes > 0);
    }
    let events = events.into_inner().unwrap();
    assert_eq!(events.iter().filter(|e| e.starts_with("imported")).count(), 1, "{events:?}");
    assert!(events.contains(&"imported 3".to_owned()), "{events:?}");
    for t in store::TABLES {
        let rows = scale.rows(t);
        assert!(events.contains(&format!("done {t} {rows}")), "{events:?}");
        assert!(events.contains(&format!("progress {t} {rows}")), "{events:?}");
    }
    drop(exporter);

    // Text format gives the same data.
    p.dst.batch_execute(&format!("TRUNCATE {}", store::TABLES.join(", "))).await.unwrap();
    let (exporter, snap) = export_snapshot(&p.src_db).await;
    let now = fingerprints(&exporter).await;
    let options =
        CopyOptions { format: CopyFormat::Text, parallelism: 1, ..CopyOptions::default() };
    let report =
        tablesync::copy_tables(&p.source(), &p.target(), &snap, &tables, &options, &no_progress)
            .await
            .unwrap();
    assert!(report.tables.iter().all(|r| r.format == CopyFormat::Text));
    assert_eq!(fingerprints(&p.dst).await, now);
    drop(exporter);
}

#[tokio::test]
async fn non_empty_target_fails_unless_truncated() {
    let (p, tables) = store_source("nonempty").await;
    create_targets(&p, &tables).await;
    p.dst
        .batch_execute("INSERT INTO products (name, price, stock) VALUES ('stale', 1, 1)")
        .await
        .unwrap();
    let err = tablesync::ensure_targets_empty(&p.dst, &tables).await.unwrap_err();
    assert!(matches!(&err, Error::TargetNotEmpty { table } if table.name == "products"), "{err}");
    assert!(err.to_string().contains("\"public\".\"products\""), "{err}");

    let (_exporter, snap) = export_snapshot(&p.src_db).await;
    let options = CopyOptions { parallelism: 1, ..CopyOptions::default() };
    let err =
        tablesync::copy_tables(&p.source(), &p.target(), &snap, &tables, &options, &no_progress)
            .await
            .unwrap_err();
    assert!(matches!(&err, Error::TargetNotEmpty { table } if table.name == "products"), "{err}");
    // The stale row is still there: the failed table's transaction was rolled back.
    let n: i64 = p.dst.query_one("SELECT count(*) FROM products", &[]).await.unwrap().get(0);
    assert_eq!(n, 1);

    p.dst.batch_execute(&format!("TRUNCATE {}", store::TABLES.join(", "))).await.unwrap();
    p.dst
        .batch_execute("INSERT INTO products (name, price, stock) VALUES ('stale', 1, 1)")
        .await
        .unwrap();
    let options = CopyOptions { truncate_target: true, ..CopyOptions::default() };
    tablesync::copy_tables(&p.source(), &p.target(), &snap, &tables, &options, &no_progress)
        .await
        .unwrap();
    assert_eq!(fingerprints(&p.dst).await, fingerprints(&p.src).await);
}

#[tokio::test]
async fn sequences_are_synced_and_created() {
    let p = pair("sequences").await;
    p.src
        .batch_execute(
            "CREATE SCHEMA app;
             CREATE SEQUENCE app.shared_counter AS integer INCREMENT BY 5 START WITH 100;
             CREATE TABLE app.tickets (
                 id serial PRIMARY KEY,
                 ident bigint GENERATED ALWAYS AS IDENTITY,
                 ref integer NOT NULL DEFAULT nextval('app.shared_counter'),
                 note text DEFAULT 'x');
             INSERT INTO app.tickets (note) SELECT 'n' FROM generate_series(1, 7);",
        )
        .await
        .unwrap();
    let tables = tablesync::resolve_tables(&p.src, &[QualifiedName::parse("app.tickets").unwrap()])
        .await
        .unwrap();
    let t = &tables[0];
    assert_eq!(t.column("id").unwrap().default, None, "nextval defaults are not kept");
    assert!(t.column("id").unwrap().has_default);
    assert_eq!(t.column("ident").unwrap().identity, Some(IdentityKind::Always));
    assert_eq!(t.column("note").unwrap().default.as_deref(), Some("'x'::text"));
    create_targets(&p, &tables).await;

    let seqs = tablesync::table_sequences(&p.src, &tables).await.unwrap();
    let mut names: Vec<_> = seqs.iter().map(|s| (s.name.clone(), s.identity)).collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            ("shared_counter".to_owned(), false),
            ("tickets_id_seq".to_owned(), false),
            ("tickets_ident_seq".to_owned(), true)
        ]
    );
    let report = tablesync::sync_sequences(&p.src, &p.dst, &seqs).await;
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!(report.synced, 3);
    let state =
        |rows: Vec<tokio_postgres::Row>| -> (i64, bool) { (rows[0].get(0), rows[0].get(1)) };
    let q = "SELECT last_value, is_called FROM app.shared_counter";
    assert_eq!(state(p.dst.query(q, &[]).await.unwrap()), (130, true));
    let q = "SELECT last_value, is_called FROM app.tickets_id_seq";
    assert_eq!(state(p.dst.query(q, &[]).await.unwrap()), (7, true));
    let q = "SELECT last_value, is_called FROM app.tickets_ident_seq";
    assert_eq!(state(p.dst.query(q, &[]).await.unwrap()), (7, true));
    // The created sequence keeps the source's parameters.
    let inc: i64 = p
        .dst
        .query_one(
            "SELECT increment_by FROM pg_sequences WHERE sequencename = 'shared_counter'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(inc, 5);

    // Periodic sync picks up later use.
    p.src.batch_execute("INSERT INTO app.tickets (note) VALUES ('later')").await.unwrap();
    assert!(tablesync::sync_sequences(&p.src, &p.dst, &seqs).await.failures.is_empty());
    let q = "SELECT last_value FROM app.tickets_ident_seq";
    assert_eq!(p.dst.query_one(q, &[]).await.unwrap().get::<_, i64>(0), 8);
    // A promoted target continues after the source's values.
    let next: i64 =
        p.dst.query_one("SELECT nextval('app.shared_counter')", &[]).await.unwrap().get(0);
    assert_eq!(next, 140);
}

#[tokio::test]
async fn chunk_hashes_find_the_changed_row() {
    let p = pair("chunks").await;
    let ddl = "CREATE TABLE h (a int, b text COLLATE \"C\", v double precision, ts timestamptz, \
               PRIMARY KEY (a, b))";
    p.src.batch_execute(ddl).await.unwrap();
    p.src
        .batch_execute(
            "INSERT INTO h SELECT i / 3, chr(65 + i % 3) || 'x', i * 0.1, \
             '2024-01-01'::timestamptz + i * interval '1 minute' FROM generate_series(0, 999) i",
        )
        .await
        .unwrap();
    let table = tablesync::resolve_tables(&p.src, &[QualifiedName::parse("h").unwrap()])
        .await
        .unwrap()
        .remove(0);
    create_targets(&p, std::slice::from_ref(&table)).await;
    let (_exporter, snap) = export_snapshot(&p.src_db).await;
    tablesync::copy_tables(
        &p.source(),
        &p.target(),
        &snap,
        std::slice::from_ref(&table),
        &CopyOptions::default(),
        &no_progress,
    )
    .await
    .unwrap();

    let whole_src = tablesync::table_hash(&p.src, &table, None).await.unwrap();
    assert_eq!(whole_src.rows, 1000);
    assert_eq!(whole_src, tablesync::table_hash(&p.dst, &table, None).await.unwrap());
    let chunks = tablesync::chunk_hashes(&p.src, &table, 100).await.unwrap();
    assert_eq!(chunks.len(), 10);
    assert!(chunks.iter().all(|c| c.hash.rows == 100));
    assert_eq!(chunks[0].first_key, ["0", "Ax"]);
    assert_eq!(chunks[9].last_key, ["333", "Ax"]);
    assert!(tablesync::compare_tables(&p.src, &p.dst, &table, 100).await.unwrap().is_empty());

    // A session with other formatting settings still hashes the same.
    p.dst
        .batch_execute(
            "SET extra_float_digits = 0; SET TimeZone = 'Asia/Tokyo'; SET DateStyle = 'SQL, DMY'",
        )
        .await
        .unwrap();
    assert_eq!(whole_src, tablesync::table_hash(&p.dst, &table, None).await.unwrap());

    p.dst.batch_execute("UPDATE h SET v = v + 1e-9 WHERE a = 150 AND b = 'Ax'").await.unwrap();
    let diffs = tablesync::compare_tables(&p.src, &p.dst, &table, 100).await.unwrap();
    assert_eq!(diffs.len(), 1, "{diffs:?}");
    assert_eq!(diffs[0].source.rows, diffs[0].target.rows);
    let keys = tablesync::diff_keys(&p.src, &p.dst, &table, &diffs[0].range).await.unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(
        (keys[0].key.clone(), keys[0].kind),
        (vec!["150".to_owned(), "Ax".to_owned()], DiffKind::Differs)
    );

    // A missing row and an extra row beyond the last source key.
    p.dst
        .batch_execute(
            "DELETE FROM h WHERE a = 10 AND b = 'Bx'; INSERT INTO h VALUES (5000, 'Z', 0, now())",
        )
        .await
        .unwrap();
    let diffs = tablesync::compare_tables(&p.src, &p.dst, &table, 100).await.unwrap();
    assert_eq!(diffs.len(), 3, "{diffs:?}");
    let mut all = Vec::new();
    for d in &diffs {
        all.extend(tablesync::diff_keys(&p.src, &p.dst, &table, &d.range).await.unwrap());
    }
    all.sort_by(|a, b| a.key.cmp(&b.key));
    let got: Vec<_> = all.iter().map(|d| (d.key.join("|"), d.kind)).collect();
    assert_eq!(
        got,
        vec![
            ("10|Bx".to_owned(), DiffKind::MissingOnTarget),
            ("150|Ax".to_owned(), DiffKind::Differs),
            ("5000|Z".to_owned(), DiffKind::ExtraOnTarget),
        ]
    );
}

#[tokio::test]
async fn awkward_identifiers_and_keyless_tables_work_end_to_end() {
    let p = pair("idents").await;
    p.src
        .batch_execute(
            r#"CREATE SCHEMA "Weird ""Schema"" Ü";
               CREATE TABLE "Weird ""Schema"" Ü"."Select ""Quoted"" Tåble" (
                   "Order" serial PRIMARY KEY,
                   "with space" text,
                   "ÄÖ" integer NOT NULL DEFAULT 3,
                   "a""b" jsonb,
                   "UPPER" date,
                   "from" numeric GENERATED ALWAYS AS ("ÄÖ" * 2) STORED);
               INSERT INTO "Weird ""Schema"" Ü"."Select ""Quoted"" Tåble" ("with space", "a""b", "UPPER")
                 SELECT 'row ' || i, jsonb_build_object('k', i), DATE '2020-02-29' + i
                 FROM generate_series(1, 50) i;
               CREATE TABLE "Weird ""Schema"" Ü".nokey (x int, y text);
               ALTER TABLE "Weird ""Schema"" Ü".nokey REPLICA IDENTITY FULL;
               INSERT INTO "Weird ""Schema"" Ü".nokey VALUES (1, 'a'), (1, 'a'), (2, NULL);"#,
        )
        .await
        .unwrap();
    let names = QualifiedName::parse_list(
        r#""Weird ""Schema"" Ü"."Select ""Quoted"" Tåble", "Weird ""Schema"" Ü".NoKey"#,
    )
    .unwrap();
    let tables = tablesync::resolve_tables(&p.src, &names).await.unwrap();
    assert_eq!(tables[0].name, "Select \"Quoted\" Tåble");
    assert_eq!(tables[0].schema, "Weird \"Schema\" Ü");
    assert_eq!(tables[1].replica_identity, ReplicaIdentity::Full);
    assert!(tables[1].key_columns().is_empty());
    assert!(tables[0].column("from").unwrap().is_generated());

    let pubname = "Pub \"Ü\" select";
    tablesync::ensure_publication(&p.src, pubname, &tables).await.unwrap();
    assert_eq!(tablesync::publication_tables(&p.src, pubname).await.unwrap().len(), 2);

    create_targets(&p, &tables).await;
    let pk: i64 = p
        .dst
        .query_one(
            "SELECT count(*) FROM pg_index WHERE indrelid = $1::text::regclass AND indisprimary",
            &[&tables[1].quoted()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(pk, 0, "keyless table is created without a primary key");

    let (_exporter, snap) = export_snapshot(&p.src_db).await;
    let report = tablesync::copy_tables(
        &p.source(),
        &p.target(),
        &snap,
        &tables,
        &CopyOptions::default(),
        &no_progress,
    )
    .await
    .unwrap();
    assert_eq!(report.tables.iter().map(|r| r.rows).collect::<Vec<_>>(), vec![50, 3]);
    for t in &tables {
        assert!(
            tablesync::compare_tables(&p.src, &p.dst, t, 7).await.unwrap().is_empty(),
            "{}",
            t.name
        );
    }
    let generated: String = p
        .dst
        .query_one(
            &format!("SELECT \"from\"::text FROM {} WHERE \"Order\" = 1", tables[0].quoted()),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(generated, "6");

    // Keyless: a duplicated row removed on the target is found.
    p.dst
        .batch_execute(&format!(
            "DELETE FROM {} WHERE ctid = (SELECT min(ctid) FROM {} WHERE x = 1)",
            tables[1].quoted(),
            tables[1].quoted()
        ))
        .await
        .unwrap();
    let diffs = tablesync::compare_tables(&p.src, &p.dst, &tables[1], 100).await.unwrap();
    assert_eq!(diffs.len(), 1);
    assert_eq!((diffs[0].source.rows, diffs[0].target.rows), (3, 2));

    let seqs = tablesync::table_sequences(&p.src, &tables).await.unwrap();
    assert_eq!(seqs.len(), 1);
    assert!(tablesync::sync_sequences(&p.src, &p.dst, &seqs).await.failures.is_empty());
    let last: i64 = p
        .dst
        .query_one(&format!("SELECT last_value FROM {}", seqs[0].qualified_name().quoted()), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(last, 50);
    tablesync::drop_publication(&p.src, pubname).await.unwrap();
}

#[tokio::test]
async fn binary_failure_falls_back_to_text() {
    let p = pair("fallback").await;
    p.src.batch_execute("CREATE TABLE f (id integer PRIMARY KEY, n integer); INSERT INTO f SELECT i, i * 2 FROM generate_series(1, 10) i").await.unwrap();
    // Same values, different binary representation: binary COPY fails, text works.
    p.dst.batch_execute("CREATE TABLE f (id bigint PRIMARY KEY, n bigint)").await.unwrap();
    let tables =
        tablesync::resolve_tables(&p.src, &[QualifiedName::parse("f").unwrap()]).await.unwrap();
    let (_exporter, snap) = export_snapshot(&p.src_db).await;

    // The caller decides how to connect: any closure returning a client works.
    let src_url = pgcluster::shared().url(&p.src_db);
    let source = || {
        let url = src_url.clone();
        async move {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
            tokio::spawn(conn);
            Ok::<_, tokio_postgres::Error>(client)
        }
    };
    let binary = CopyOptions { format: CopyFormat::Binary, ..CopyOptions::default() };
    let err = tablesync::copy_tables(&source, &p.target(), &snap, &tables, &binary, &no_progress)
        .await
        .unwrap_err();
    assert!(matches!(&err, Error::Copy { table, .. } if table.name == "f"), "{err}");

    let report = tablesync::copy_tables(
        &p.source(),
        &p.target(),
        &snap,
        &tables,
        &CopyOptions::default(),
        &no_progress,
    )
    .await
    .unwrap();
    assert_eq!(report.tables[0].format, CopyFormat::Text);
    assert!(report.tables[0].fell_back_to_text);
    assert_eq!(report.tables[0].rows, 10);
    let sum: i64 = p.dst.query_one("SELECT sum(n)::int8 FROM f", &[]).await.unwrap().get(0);
    assert_eq!(sum, 110);
}

#[tokio::test]
async fn copies_to_another_server() {
    let (p, tables) = store_source("cross").await;
    let other = pgcluster::ClusterBuilder::new().fast_unsafe().start().unwrap();
    let db = pgcluster::unique_name("cross_dst");
    other.create_database(&db).await.unwrap();
    let dst = other.connect(&db).await.unwrap();
    for t in &tables {
        tablesync::ensure_target_table(&dst, t, &TargetOptions::default()).await.unwrap();
    }
    let (exporter, snap) = export_snapshot(&p.src_db).await;
    let target = NoTlsConnector::from_url(&other.url(&db)).unwrap();
    tablesync::copy_tables(
        &p.source(),
        &target,
        &snap,
        &tables,
        &CopyOptions::default(),
        &no_progress,
    )
    .await
    .unwrap();
    assert_eq!(fingerprints(&dst).await, fingerprints(&exporter).await);
    let seqs = tablesync::table_sequences(&p.src, &tables).await.unwrap();
    assert!(tablesync::sync_sequences(&p.src, &dst, &seqs).await.failures.is_empty());
    for t in &tables {
        assert!(tablesync::compare_tables(&p.src, &dst, t, 10).await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn publication_column_lists_and_row_filters_shape_target_and_copy() {
    let p = pair("pubfilter").await;
    let pubname = pgcluster::unique_name("pubf");
    p.src
        .batch_execute(&format!(
            "CREATE TABLE pf (id int PRIMARY KEY, secret text, region text NOT NULL, amount int);
             INSERT INTO pf SELECT i, 'hidden', CASE WHEN i % 3 = 0 THEN 'eu' ELSE 'us' END, i
             FROM generate_series(1, 90) i;
             CREATE PUBLICATION {pubname} FOR TABLE pf (id, region, amount) WHERE (region = 'eu');"
        ))
        .await
        .unwrap();
    let tables = tablesync::publication_tables(&p.src, &pubname).await.unwrap();
    let t = &tables[0];
    let cols: Vec<&str> = t.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(cols, ["id", "region", "amount"]);
    assert_eq!(t.primary_key, ["id"]);
    assert_eq!(t.row_filter.as_deref(), Some("(region = 'eu'::text)"));

    create_targets(&p, &tables).await;
    let (_exporter, snap) = export_snapshot(&p.src_db).await;
    let report = tablesync::copy_tables(
        &p.source(),
        &p.target(),
        &snap,
        &tables,
        &CopyOptions::default(),
        &no_progress,
    )
    .await
    .unwrap();
    assert_eq!(report.rows, 30);
    let secret: i64 = p
        .dst
        .query_one(
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'pf' AND column_name = 'secret'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(secret, 0, "unpublished column is not created");
    assert_eq!(tablesync::table_hash(&p.src, t, None).await.unwrap().rows, 30);
    assert!(tablesync::compare_tables(&p.src, &p.dst, t, 8).await.unwrap().is_empty());
}

#[tokio::test]
async fn partitioned_tables_are_copied_through_the_root() {
    let p = pair("partitions").await;
    p.src
        .batch_execute(
            "CREATE TABLE ev (id int, day date, v text, PRIMARY KEY (id, day)) PARTITION BY RANGE (day);
             CREATE TABLE ev_2024 PARTITION OF ev FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
             CREATE TABLE ev_2025 PARTITION OF ev FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
             INSERT INTO ev SELECT i, DATE '2024-06-01' + i * 2, 'v' || i FROM generate_series(1, 200) i;
             ANALYZE ev;",
        )
        .await
        .unwrap();
    let tables =
        tablesync::resolve_tables(&p.src, &[QualifiedName::parse("ev").unwrap()]).await.unwrap();
    assert!(tables[0].is_partitioned);
    assert_eq!(tables[0].estimated_rows, Some(200));
    assert!(tables[0].estimated_bytes > 0);
    let pubname = pgcluster::unique_name("pubpart");
    tablesync::ensure_publication(&p.src, &pubname, &tables).await.unwrap();
    // Published under the root, so the existing publication covers the table.
    assert_eq!(
        tablesync::ensure_publication(&p.src, &pubname, &tables).await.unwrap(),
        PublicationStatus::Existing
    );
    create_targets(&p, &tables).await;
    let (_exporter, snap) = export_snapshot(&p.src_db).await;
    let report = tablesync::copy_tables(
        &p.source(),
        &p.target(),
        &snap,
        &tables,
        &CopyOptions::default(),
        &no_progress,
    )
    .await
    .unwrap();
    assert_eq!(report.rows, 200);
    assert!(tablesync::compare_tables(&p.src, &p.dst, &tables[0], 64).await.unwrap().is_empty());
}

#[tokio::test]
async fn large_tables_are_split_into_block_ranges() {
    let p = pair("split").await;
    p.src
        .batch_execute(
            "CREATE TABLE big (id int PRIMARY KEY, pad text);
             INSERT INTO big SELECT i, repeat('x', 200) FROM generate_series(1, 5000) i;
             CREATE TABLE small (id int PRIMARY KEY);
             INSERT INTO small SELECT generate_series(1, 10);
             ANALYZE big, small;",
        )
        .await
        .unwrap();
    let tables =
        tablesync::resolve_tables(&p.src, &QualifiedName::parse_list("big,small").unwrap())
            .await
            .unwrap();
    assert!(tables[0].pages > 100, "{}", tables[0].pages);
    create_targets(&p, &tables).await;
    let (exporter, snap) = export_snapshot(&p.src_db).await;
    // Not visible under the snapshot.
    p.src.batch_execute("DELETE FROM big WHERE id % 2 = 0").await.unwrap();

    let done = Mutex::new(Vec::new());
    let big_progress = Mutex::new(Vec::new());
    let progress = |e: CopyEvent<'_>| match e {
        CopyEvent::TableDone(r) => done.lock().unwrap().push((r.table.name.clone(), r.rows)),
        CopyEvent::Progress { table, rows, .. } if table.name == "big" => {
            big_progress.lock().unwrap().push(rows);
        }
        _ => {}
    };
    let split_bytes = Some(tables[0].estimated_bytes / 5);
    let options =
        CopyOptions { parallelism: 3, split_bytes, replica_role: true, ..CopyOptions::default() };
    let report =
        tablesync::copy_tables(&p.source(), &p.target(), &snap, &tables, &options, &progress)
            .await
            .unwrap();
    assert_eq!(report.tables[0].rows, 5000);
    assert_eq!(report.tables[1].rows, 10);
    // One final progress event per block range, totals growing to the table's rows.
    let big_progress = big_progress.into_inner().unwrap();
    assert!(big_progress.len() >= 5, "{big_progress:?}");
    assert!(big_progress.windows(2).all(|w| w[0] <= w[1]), "{big_progress:?}");
    assert_eq!(big_progress.iter().max(), Some(&5000));
    let mut done = done.into_inner().unwrap();
    done.sort();
    assert_eq!(done, vec![("big".to_owned(), 5000), ("small".to_owned(), 10)]);
    let at_snapshot = tablesync::table_hash(&exporter, &tables[0], None).await.unwrap();
    assert_eq!(tablesync::table_hash(&p.dst, &tables[0], None).await.unwrap(), at_snapshot);

    // A split table is checked empty up front.
    let err =
        tablesync::copy_tables(&p.source(), &p.target(), &snap, &tables, &options, &no_progress)
            .await
            .unwrap_err();
    assert!(matches!(&err, Error::TargetNotEmpty { table } if table.name == "big"), "{err}");
    let options = CopyOptions { truncate_target: true, ..options };
    tablesync::copy_tables(&p.source(), &p.target(), &snap, &tables, &options, &no_progress)
        .await
        .unwrap();
    assert_eq!(tablesync::table_hash(&p.dst, &tables[0], None).await.unwrap(), at_snapshot);
}

/// Indexes, primary keys and unique constraints that nothing depends on are dropped and
/// rebuilt around the rows in the copy's target transaction (a sorted build, not an insertion
/// per row); the others stay as they are. The target ends up with the same indexes and
/// constraints, and a failed copy leaves them all in place.
#[tokio::test]
async fn indexes_are_rebuilt_after_the_rows() {
    let p = pair("deferidx").await;
    let ddl = "CREATE TABLE d (id int PRIMARY KEY, a int, b text, u int, c int, e text, k int);
        CREATE INDEX d_a_idx ON d (a);
        CREATE INDEX d_lower_b_idx ON d (lower(b)) WHERE a > 10;
        CREATE UNIQUE INDEX d_u_idx ON d (u);
        CREATE INDEX d_c_idx ON d USING hash (c);
        CREATE INDEX d_commented_idx ON d (c, a);
        COMMENT ON INDEX d_commented_idx IS 'kept as it is';
        ALTER TABLE d ADD CONSTRAINT d_e_key UNIQUE NULLS NOT DISTINCT (e) INCLUDE (a)
            DEFERRABLE INITIALLY DEFERRED;
        ALTER TABLE d ADD CONSTRAINT d_k_key UNIQUE (k);
        CREATE TABLE d_ref (k int REFERENCES d (k));
        CREATE TABLE f (id int PRIMARY KEY, v text);
        CREATE VIEW f_by_id AS SELECT id, v FROM f GROUP BY id;";
    p.src.batch_execute(ddl).await.unwrap();
    p.src
        .batch_execute(
            "INSERT INTO d SELECT i, i % 97, 'B' || i, i, i % 13, nullif('E' || i, 'E7'), i \
             FROM generate_series(1, 5000) i;
             INSERT INTO f SELECT i, 'v' || i FROM generate_series(1, 300) i;",
        )
        .await
        .unwrap();
    p.dst.batch_execute(ddl).await.unwrap();
    let before = schema_of(&p.dst).await;
    let oids_before = index_oids(&p.dst).await;
    let names = [QualifiedName::parse("d").unwrap(), QualifiedName::parse("f").unwrap()];
    let tables = tablesync::resolve_tables(&p.src, &names).await.unwrap();
    let (_exporter, snap) = export_snapshot(&p.src_db).await;

    // A failing copy (a row the target refuses) rolls the dropped indexes back too.
    p.dst.batch_execute("ALTER TABLE d ADD CONSTRAINT small_a CHECK (a < 90)").await.unwrap();
    let opts = CopyOptions::default();
    assert!(opts.defer_indexes);
    tablesync::copy_tables(&p.source(), &p.target(), &snap, &tables, &opts, &no_progress)
        .await
        .unwrap_err();
    p.dst.batch_execute("ALTER TABLE d DROP CONSTRAINT small_a; TRUNCATE f").await.unwrap();
    assert_eq!(schema_of(&p.dst).await, before);
    assert_eq!(index_oids(&p.dst).await, oids_before);

    let report =
        tablesync::copy_tables(&p.source(), &p.target(), &snap, &tables, &opts, &no_progress)
            .await
            .unwrap();
    assert_eq!(report.rows, 5300);
    assert_eq!(schema_of(&p.dst).await, before);
    let after = index_oids(&p.dst).await;
    let rebuilt: Vec<&str> = oids_before
        .iter()
        .zip(&after)
        .filter(|(b, a)| b.1 != a.1)
        .map(|(b, _)| b.0.as_str())
        .collect();
    assert_eq!(rebuilt, ["d_a_idx", "d_c_idx", "d_e_key", "d_lower_b_idx", "d_pkey", "d_u_idx"]);
    for t in ["d", "f"] {
        assert_eq!(fingerprint(&p.src, t).await, fingerprint(&p.dst, t).await);
    }
    // The rebuilt constraints hold: a deferred duplicate fails at commit, an immediate one at once.
    p.dst.batch_execute("BEGIN; INSERT INTO d (id, e) VALUES (9001, 'E1')").await.unwrap();
    p.dst.batch_execute("COMMIT").await.unwrap_err();
    p.dst.batch_execute("INSERT INTO d (id) VALUES (1)").await.unwrap_err();
    // The planner uses a rebuilt index.
    p.dst.batch_execute("ANALYZE d").await.unwrap();
    let plan: String = p
        .dst
        .query("EXPLAIN SELECT * FROM d WHERE a = 5", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect();
    assert!(plan.contains("d_a_idx"), "{plan}");
}

/// Index and constraint definitions, comments and replica identities of the test's tables.
async fn schema_of(c: &Client) -> Vec<String> {
    c.query(
        "SELECT 'index ' || indexname || ': ' || indexdef FROM pg_indexes \
             WHERE tablename IN ('d', 'f', 'd_ref') \
         UNION ALL SELECT 'constraint ' || conname || ' on ' || conrelid::regclass || ': ' \
             || pg_get_constraintdef(oid) FROM pg_constraint \
             WHERE conrelid IN ('d'::regclass, 'f'::regclass, 'd_ref'::regclass) \
         UNION ALL SELECT 'comment ' || coalesce(obj_description('d_commented_idx'::regclass, \
             'pg_class'), '-') \
         UNION ALL SELECT 'identity ' || relname || ' ' || relreplident::text FROM pg_class \
             WHERE relname IN ('d', 'f') \
         UNION ALL SELECT 'view ' || pg_get_viewdef('f_by_id'::regclass) \
         ORDER BY 1",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// Each index of the test's tables by name, with its relation's oid.
async fn index_oids(c: &Client) -> Vec<(String, u32)> {
    c.query(
        "SELECT c.relname::text, c.oid FROM pg_class c JOIN pg_index i ON i.indexrelid = c.oid \
         WHERE i.indrelid IN ('d'::regclass, 'f'::regclass) ORDER BY 1",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

async fn fingerprint(c: &Client, table: &str) -> (i64, String) {
    store::table_fingerprint(c, table).await.unwrap()
}
