//! The target's schema: what a mirror needs on a target it does not own outright.

use std::time::Duration;

use pgconn::ConnConfig;
use pgmirror::selection::TableSelection;

use crate::common::{database, store_mirror, wait_for};

/// A target role without superuser checks foreign keys as rows arrive: parents must be copied
/// before their children, whatever their sizes (the largest table used to go first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_superuser_target_with_foreign_keys_is_copied_parents_first() {
    let cluster = pgcluster::shared();
    let ddl = "CREATE TABLE customer (id int PRIMARY KEY, name text); \
               CREATE TABLE rental (id int PRIMARY KEY, customer_id int NOT NULL REFERENCES customer, note text); \
               CREATE TABLE payment (id int PRIMARY KEY, rental_id int NOT NULL REFERENCES rental, amount numeric)";
    let (src_db, src) = database(cluster, "fk_src").await;
    src.batch_execute(ddl).await.unwrap();
    src.batch_execute(
        "INSERT INTO customer SELECT g, 'c' || g FROM generate_series(1, 10) g; \
         INSERT INTO rental SELECT g, 1 + g % 10, repeat('r', 200) FROM generate_series(1, 5000) g; \
         INSERT INTO payment SELECT g, 1 + g % 5000, g FROM generate_series(1, 2000) g; \
         ANALYZE",
    )
    .await
    .unwrap();
    let (dst_db, dst) = database(cluster, "fk_dst").await;
    let role = pgcluster::unique_name("fk_owner");
    dst.batch_execute(&format!(
        "CREATE ROLE {role} LOGIN; GRANT CREATE ON DATABASE {dst_db} TO {role}; \
         GRANT CREATE ON SCHEMA public TO {role}; \
         SET ROLE {role}; {ddl}; RESET ROLE"
    ))
    .await
    .unwrap();

    let mut opts = store_mirror(cluster, &src_db, cluster, &dst_db);
    opts.target = ConnConfig::parse(&cluster.url_for(&role, None, &dst_db)).unwrap();
    opts.tables = TableSelection {
        publication: None,
        tables: Some(vec!["payment".into(), "rental".into(), "customer".into()]),
        exclude_tables: None,
    };
    let shutdown = pgmirror::shutdown::Shutdown::manual();
    let mut stop = shutdown.clone();
    let task = tokio::spawn(async move { pgmirror::mirror::run(&opts, &mut stop).await });
    wait_for(Duration::from_secs(60), "every row on the target", || async {
        let n: i64 = dst
            .query_one(
                "SELECT (SELECT count(*) FROM customer) + (SELECT count(*) FROM rental) \
                        + (SELECT count(*) FROM payment)",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        n == 7010
    })
    .await;
    assert!(!task.is_finished(), "the mirror failed: {:?}", task.await);
    shutdown.trigger();
    task.await.unwrap().unwrap();
}

/// The rows of `table` in key order, as text: equal on both sides when the mirror converged.
async fn rows(client: &tokio_postgres::Client, table: &str) -> Option<String> {
    let sql = format!(
        "SELECT count(*) || ' rows, md5 ' || md5(coalesce(string_agg(t::text, E'\\n' ORDER BY id), '')) \
         FROM {table} t"
    );
    client.query_one(&sql, &[]).await.ok().map(|r| r.get(0))
}

async fn wait_equal(src: &tokio_postgres::Client, dst: &tokio_postgres::Client, table: &str) {
    let mut last = None;
    let waited = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let want = rows(src, table).await;
            let got = rows(dst, table).await;
            if want.is_some() && want == got {
                return;
            }
            last = Some((want, got));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "{table} differs after 60 s: {last:?}");
}

/// A running mirror of `tables` (comma-separated) or of `publication`.
struct Running {
    shutdown: pgmirror::shutdown::Shutdown,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    name: String,
}

impl Running {
    fn start(src_db: &str, dst_db: &str, selection: TableSelection) -> Self {
        Self::named(src_db, dst_db, selection, None)
    }

    /// Mirror `name` again (a restart), or a new mirror.
    fn named(src_db: &str, dst_db: &str, selection: TableSelection, name: Option<&str>) -> Self {
        let cluster = pgcluster::shared();
        let mut opts = store_mirror(cluster, src_db, cluster, dst_db);
        opts.tables = selection;
        if let Some(name) = name {
            opts.name = name.to_owned();
        }
        let name = opts.name.clone();
        let shutdown = pgmirror::shutdown::Shutdown::manual();
        let mut stop = shutdown.clone();
        let task = tokio::spawn(async move { pgmirror::mirror::run(&opts, &mut stop).await });
        Running { shutdown, task, name }
    }

    async fn stop(self) {
        assert!(!self.task.is_finished(), "the mirror stopped: {:?}", self.task.await);
        self.shutdown.trigger();
        self.task.await.unwrap().unwrap();
    }
}

fn tables(list: &str) -> TableSelection {
    TableSelection {
        publication: None,
        tables: Some(list.split(',').map(str::to_owned).collect()),
        exclude_tables: None,
    }
}

/// `ADD COLUMN ... DEFAULT 'none'` gives existing rows the value PostgreSQL stored for them
/// (attmissingval), and the target column the source's default; a volatile default, which
/// rewrote the source table without decoding a change, makes the table be copied again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn columns_added_while_mirroring_hold_what_the_source_rows_hold() {
    let cluster = pgcluster::shared();
    let (src_db, src) = database(cluster, "addcol").await;
    let (dst_db, dst) = database(cluster, "addcol_dst").await;
    src.batch_execute(
        "CREATE TABLE acct (id int PRIMARY KEY, v text); \
         INSERT INTO acct SELECT g, 'v' || g FROM generate_series(1, 500) g; \
         CREATE TABLE seen (id int PRIMARY KEY, v text); \
         INSERT INTO seen SELECT g, 'v' || g FROM generate_series(1, 300) g",
    )
    .await
    .unwrap();
    let mirror = Running::start(&src_db, &dst_db, tables("acct,seen"));
    wait_equal(&src, &dst, "acct").await;
    wait_equal(&src, &dst, "seen").await;

    src.batch_execute(
        "ALTER TABLE acct ADD COLUMN tier text NOT NULL DEFAULT 'none'; \
         ALTER TABLE acct ADD COLUMN score int DEFAULT 7; \
         ALTER TABLE acct ALTER COLUMN score SET DEFAULT 8; \
         INSERT INTO acct (id, v, tier) VALUES (501, 'new', 'gold'); \
         INSERT INTO acct (id, v) VALUES (502, 'newer'); \
         UPDATE acct SET v = 'changed' WHERE id = 3",
    )
    .await
    .unwrap();
    wait_equal(&src, &dst, "acct").await;
    let default: Option<String> = dst
        .query_one(
            "SELECT column_default FROM information_schema.columns \
             WHERE table_name = 'acct' AND column_name = 'score'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(default.as_deref(), Some("8"), "the source's current default");

    src.batch_execute(
        "ALTER TABLE seen ADD COLUMN at timestamptz DEFAULT clock_timestamp(); \
         ALTER TABLE seen ADD COLUMN n serial; \
         INSERT INTO seen (id, v) VALUES (301, 'after')",
    )
    .await
    .unwrap();
    wait_equal(&src, &dst, "seen").await;
    mirror.stop().await;
}

/// A table added to the publication while mirroring (here `FOR ALL TABLES`, which publishes
/// every new table) is created on the target, copied under a snapshot while its rows keep
/// changing, and then follows the source exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_added_to_the_publication_is_copied_and_streamed() {
    let cluster = pgcluster::shared();
    let (src_db, src) = database(cluster, "addtab").await;
    let (dst_db, dst) = database(cluster, "addtab_dst").await;
    let publication = pgcluster::unique_name("alltabs");
    src.batch_execute(&format!(
        "CREATE TABLE first (id int PRIMARY KEY, v text); \
         INSERT INTO first VALUES (1, 'a'); \
         CREATE PUBLICATION {publication} FOR ALL TABLES"
    ))
    .await
    .unwrap();
    let mirror = Running::start(
        &src_db,
        &dst_db,
        TableSelection {
            publication: Some(publication.clone()),
            tables: None,
            exclude_tables: None,
        },
    );
    wait_equal(&src, &dst, "first").await;

    src.batch_execute(
        "CREATE TABLE later (id int PRIMARY KEY, v text); \
         INSERT INTO later SELECT g, 'row ' || g FROM generate_series(1, 20000) g",
    )
    .await
    .unwrap();
    // Writes go on while the new table is copied.
    for i in 0..200 {
        src.batch_execute(&format!(
            "INSERT INTO later VALUES ({id}, 'more'); UPDATE later SET v = 'upd' WHERE id = {u}; \
             DELETE FROM later WHERE id = {d}; INSERT INTO first VALUES ({id}, 'x')",
            id = 30_000 + i,
            u = 1 + i * 7,
            d = 10_000 + i
        ))
        .await
        .unwrap();
    }
    wait_equal(&src, &dst, "later").await;
    wait_equal(&src, &dst, "first").await;
    let name = mirror.name.clone();
    mirror.stop().await;

    // A restart neither loses nor repeats a change of the copied table.
    src.batch_execute(
        "INSERT INTO later VALUES (40000, 'while stopped'); DELETE FROM later WHERE id = 2",
    )
    .await
    .unwrap();
    let selection =
        TableSelection { publication: Some(publication), tables: None, exclude_tables: None };
    let mirror = Running::named(&src_db, &dst_db, selection, Some(&name));
    wait_equal(&src, &dst, "later").await;
    mirror.stop().await;
}

/// `pgmirror resync --table` copies one table again while the mirror keeps streaming; a
/// column whose type changed on the source is repaired the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resync_copies_one_table_again_while_streaming() {
    let cluster = pgcluster::shared();
    let (src_db, src) = database(cluster, "resync").await;
    let (dst_db, dst) = database(cluster, "resync_dst").await;
    src.batch_execute(
        "CREATE TABLE kept (id int PRIMARY KEY, v text); \
         INSERT INTO kept SELECT g, 'v' || g FROM generate_series(1, 5000) g; \
         CREATE TABLE other (id int PRIMARY KEY, v text)",
    )
    .await
    .unwrap();
    let mirror = Running::start(&src_db, &dst_db, tables("kept,other"));
    wait_equal(&src, &dst, "kept").await;

    // Someone damaged the target's copy.
    dst.batch_execute("DELETE FROM kept WHERE id % 3 = 0; UPDATE kept SET v = 'bad' WHERE id < 50")
        .await
        .unwrap();
    let writer = {
        let src = cluster.connect(&src_db).await.unwrap();
        tokio::spawn(async move {
            for i in 0..300 {
                src.batch_execute(&format!(
                    "UPDATE kept SET v = 'w{i}' WHERE id = {}; INSERT INTO other VALUES ({i}, 'o')",
                    1 + (i * 13) % 5000
                ))
                .await
                .unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgmirror"))
        .args(["resync", "--source", &cluster.url(&src_db), "--target", &cluster.url(&dst_db)])
        .args(["--table", "kept", "--name", &mirror.name, "--wait-timeout", "60"])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("copied again"), "{stdout}");
    writer.await.unwrap();
    wait_equal(&src, &dst, "kept").await;
    wait_equal(&src, &dst, "other").await;

    src.batch_execute(
        "ALTER TABLE kept ALTER COLUMN v TYPE varchar(40); UPDATE kept SET v = 'typed' WHERE id = 1",
    )
    .await
    .unwrap();
    wait_equal(&src, &dst, "kept").await;
    let ty: String = dst
        .query_one("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'kept'::regclass AND attname = 'v'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(ty, "character varying(40)");
    mirror.stop().await;
}
