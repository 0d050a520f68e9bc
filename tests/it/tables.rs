//! `--tables schema.*` and `--exclude-tables`: a whole schema mirrored with one table left out,
//! quoted schema names, and one clear line for what matches nothing.

use std::time::Duration;

use pgconn::ConnConfig;
use pgmirror::mirror::{self, MirrorOptions};
use pgmirror::selection::TableSelection;
use pgmirror::shutdown::Shutdown;
use tokio_postgres::Client;

use crate::common::{database, wait_for};

const SCHEMA: &str = r#"
CREATE SCHEMA app;
CREATE TABLE app.orders (id int PRIMARY KEY, customer int, total numeric);
CREATE TABLE app.customers (id int PRIMARY KEY, name text);
ALTER TABLE app.orders ADD FOREIGN KEY (customer) REFERENCES app.customers;
CREATE TABLE app.audit (id int PRIMARY KEY, what text);
CREATE VIEW app.recent AS SELECT * FROM app.orders;
CREATE SCHEMA "Sales.EU";
CREATE TABLE "Sales.EU"."Orders" (id int PRIMARY KEY);
CREATE SCHEMA "a,b";
CREATE TABLE "a,b".t (id int PRIMARY KEY);
CREATE SCHEMA parts;
CREATE TABLE parts.events (id int, at date, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE parts.events_2024 PARTITION OF parts.events
    FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE UNLOGGED TABLE parts.scratch (id int PRIMARY KEY);
CREATE SCHEMA empty;
CREATE TABLE public.other (id int PRIMARY KEY);
CREATE PUBLICATION nothing_published;
"#;

fn tables(include: &[&str], exclude: &[&str]) -> TableSelection {
    TableSelection {
        publication: None,
        tables: Some(include.iter().map(|s| (*s).to_owned()).collect()),
        exclude_tables: (!exclude.is_empty())
            .then(|| exclude.iter().map(|s| (*s).to_owned()).collect()),
    }
}

/// The selected tables as `schema.name`, in the order resolved.
async fn resolved(client: &Client, sel: &TableSelection) -> Result<Vec<String>, String> {
    pgmirror::selection::resolve_tables(client, sel)
        .await
        .map(|ts| ts.iter().map(|t| format!("{}.{}", t.schema, t.name)).collect())
        .map_err(|e| format!("{e:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_patterns_and_exclusions_resolve_as_psql_lists_them() {
    let cluster = pgcluster::shared();
    let (_db, client) = database(cluster, "tables").await;
    client.batch_execute(SCHEMA).await.unwrap();

    // Every table of the schema, referenced ones first; the view is not a table.
    let all = resolved(&client, &tables(&["app.*"], &[])).await.unwrap();
    assert_eq!(all, ["app.audit", "app.customers", "app.orders"]);
    let some = resolved(&client, &tables(&["app.*"], &["app.audit"])).await.unwrap();
    assert_eq!(some, ["app.customers", "app.orders"]);
    let some = resolved(&client, &tables(&["APP.*", "public.other"], &["app.orders,app.audit"]))
        .await
        .unwrap();
    assert_eq!(some, ["app.customers", "public.other"]);
    // Quoted schema names: a dot, capitals, a comma inside the quotes.
    let quoted = resolved(&client, &tables(&[r#""Sales.EU".*,"a,b".*"#], &[])).await.unwrap();
    assert_eq!(quoted, ["Sales.EU.Orders", "a,b.t"]);
    // A partitioned table, not its partition; no unlogged table.
    let parts = resolved(&client, &tables(&["parts.*"], &[])).await.unwrap();
    assert_eq!(parts, ["parts.events"]);

    for (sel, want) in [
        (tables(&["nosuchschema.*"], &[]), r#"schema "nosuchschema" not found on the source"#),
        (tables(&["sales.eu.*"], &[]), "invalid table name `sales.eu.*`"),
        (tables(&[r#""sales.eu".*"#], &[]), r#"schema "sales.eu" not found"#),
        (tables(&["empty.*"], &[]), r#"schema "empty" has no table to replicate"#),
        // The library says what is wrong; the command line adds its flags.
        (
            tables(&["app.*"], &["app.nope"]),
            r#"--exclude-tables entry `"app"."nope"` matches none of the tables --tables selects"#,
        ),
        (tables(&["app.*"], &["public.other"]), r#"entry `"public"."other"` matches none"#),
        (tables(&["app.*"], &["app.*"]), "--exclude-tables leaves none of the tables --tables"),
        (
            TableSelection {
                publication: Some("nothing_published".into()),
                tables: None,
                exclude_tables: None,
            },
            "no tables selected; pass --tables or a publication that publishes at least one table",
        ),
        (tables(&["app.t*"], &[]), "the only wildcard is a whole table part"),
        (
            TableSelection {
                publication: Some("p".into()),
                tables: None,
                exclude_tables: Some(vec!["app.audit".into()]),
            },
            "--exclude-tables cannot narrow --publication \"p\"",
        ),
    ] {
        let err = resolved(&client, &sel).await.expect_err(want);
        assert!(err.contains(want), "{sel:?}: {err}");
    }
}

async fn count(client: &Client, table: &str) -> Option<i64> {
    client.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await.ok().map(|r| r.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirrored_schema_leaves_out_the_excluded_table() {
    let cluster = pgcluster::shared();
    let (src_db, src) = database(cluster, "schema_src").await;
    let (dst_db, dst) = database(cluster, "schema_dst").await;
    src.batch_execute(SCHEMA).await.unwrap();
    src.batch_execute(
        r#"INSERT INTO app.customers VALUES (1, 'ann'), (2, 'bob');
           INSERT INTO app.orders VALUES (10, 1, 9.5);
           INSERT INTO app.audit VALUES (1, 'secret');
           INSERT INTO "Sales.EU"."Orders" VALUES (1), (2), (3);"#,
    )
    .await
    .unwrap();
    let source = ConnConfig::parse(&cluster.url(&src_db)).unwrap();
    let target = ConnConfig::parse(&cluster.url(&dst_db)).unwrap();
    let sel = tables(&["app.*", r#""Sales.EU".*"#], &["app.audit"]);
    let opts = MirrorOptions::new(pgcluster::unique_name("schema"), source, target, sel);
    let shutdown = Shutdown::manual();
    let mut stop = shutdown.clone();
    let task = tokio::spawn(async move { mirror::run(&opts, &mut stop).await });

    let mirrored = ["app.customers", "app.orders", r#""Sales.EU"."Orders""#];
    let expect = |counts: [i64; 3]| {
        let dst = &dst;
        async move {
            wait_for(Duration::from_secs(60), "the mirrored tables", || async {
                let mut got = Vec::new();
                for t in mirrored {
                    got.push(count(dst, t).await);
                }
                got == counts.map(Some)
            })
            .await;
        }
    };
    expect([2, 1, 3]).await;
    src.batch_execute(
        r#"INSERT INTO app.customers VALUES (3, 'cy');
           INSERT INTO app.audit VALUES (2, 'also secret');
           INSERT INTO "Sales.EU"."Orders" VALUES (4);"#,
    )
    .await
    .unwrap();
    expect([3, 1, 4]).await;
    let audit: Option<String> =
        dst.query_one("SELECT to_regclass('app.audit')::text", &[]).await.unwrap().get(0);
    assert_eq!(audit, None, "the excluded table is not created on the target");
    shutdown.trigger();
    task.await.unwrap().expect("the mirror stops cleanly");
}
