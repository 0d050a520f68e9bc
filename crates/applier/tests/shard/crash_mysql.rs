//! A crash between two MySQL/MariaDB shards' commits converges on replay, as on PostgreSQL
//! shards (see [`super::crash`]): the committed shard keeps the rows it handed over in
//! `pgmirror_shard_moves`, and the replay inserts them, TOASTed text and bytea values the
//! source did not send again included, on the shard that crashed.

use applier::mysql::schema::{self, MySqlTable, SourceTable};
use applier::mysql::session::{self, ServerInfo};
use applier::mysql::verify::{Part, compare_table_part};
use applier::mysql::{progress, quote, take};
use applier::shard::{KeyColumn, KeyType};
use applier::{MySqlTarget, MySqlTargetConfig};
use sqlx::MySqlConnection;

use super::crash::{
    Case, CrashShards, IN_IDENTITY, OUTSIDE_IDENTITY, ProgressProbe, crash_between_commits,
};
use super::*;

/// Two databases on the shared MariaDB server, `case`'s table mapped into each.
struct MySqlShards {
    dbs: Vec<String>,
    tables: Vec<MySqlTable>,
}

/// A session on MariaDB database `db`, set up as the mirror's.
async fn session(db: &str) -> (MySqlConnection, ServerInfo) {
    let url = testservers::mariadb::shared().url(db);
    session::connect(&session::parse_url(&url).unwrap()).await.unwrap()
}

impl CrashShards for MySqlShards {
    type Target = MySqlTarget;

    async fn create(env: &Env, case: &Case, _schema: &str) -> Self {
        let oid: u32 = env
            .src
            .query_one("SELECT $1::text::regclass::oid", &[&case.table])
            .await
            .unwrap()
            .get(0);
        let source = SourceTable {
            schema: "public".into(),
            name: case.table.into(),
            oid,
            key: vec![case.id.into()],
        };
        let tables = schema::describe(&env.src, &[source]).await.unwrap();
        let mut dbs = Vec::new();
        for _ in 0..2 {
            let db = pgcluster::unique_name("mshard_crash");
            testservers::mariadb::shared().create_database(&db).await.unwrap();
            let (mut conn, info) = session(&db).await;
            schema::ensure_tables(&mut conn, &tables, info.collation()).await.unwrap();
            take::ensure_moves_table(&mut conn).await.unwrap();
            progress::ensure_table(&mut conn).await.unwrap();
            let row = progress::MirrorRow {
                name: "test".into(),
                state: progress::MirrorState::Streaming,
                slot: env.slot.clone(),
                publication: env.publication.clone(),
                created_publication: false,
                source_system_id: None,
                lsn: None,
                stats_paused: Vec::new(),
            };
            progress::save(&mut conn, &row).await.unwrap();
            dbs.push(db);
        }
        MySqlShards { dbs, tables }
    }

    async fn target(&self, i: usize) -> MySqlTarget {
        let (conn, info) = session(&self.dbs[i]).await;
        MySqlTarget::new(conn, info, self.tables.clone(), MySqlTargetConfig::new("test"))
    }

    fn progress(&self, i: usize) -> ProgressProbe {
        let db = self.dbs[i].clone();
        Box::new(move || {
            let db = db.clone();
            Box::pin(async move {
                let mut conn = testservers::mariadb::shared().connect(&db).await.unwrap();
                progress::load(&mut conn, "test").await.unwrap().and_then(|r| r.lsn)
            })
        })
    }

    async fn kept(&self, i: usize) -> i64 {
        let mut conn = testservers::mariadb::shared().connect(&self.dbs[i]).await.unwrap();
        sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {}", quote(take::MOVES_TABLE)))
            .fetch_one(&mut conn)
            .await
            .unwrap()
    }

    /// MySQL targets do not count rows they did not find; the comparison with the source
    /// finds them.
    fn missing(_: &ShardedTarget<MySqlTarget>) -> Option<u64> {
        None
    }

    async fn assert_layout(&self, env: &Env, case: &Case) {
        let table = &self.tables[0];
        let index = table.column(case.key).unwrap();
        let key =
            [KeyColumn { index, ty: KeyType::from_oid(table.columns[index].source.oid).unwrap() }];
        let mut source_rows = 0;
        for (i, db) in self.dbs.iter().enumerate() {
            let mut conn = testservers::mariadb::shared().connect(db).await.unwrap();
            let keys: Vec<String> = sqlx::query_scalar(&format!(
                "SELECT CAST({} AS CHAR) FROM {}",
                quote(case.key),
                table.quoted()
            ))
            .fetch_all(&mut conn)
            .await
            .unwrap();
            let misplaced = misplaced(&env.src, "probe_bigint", &keys, self.dbs.len(), i).await;
            assert_eq!(misplaced, 0, "shard {i} holds rows of {} of another partition", case.table);
            // Every value of every row, the moved rows' TOASTed ones included.
            let part = Part { key: &key, modulus: self.dbs.len(), remainder: i };
            let diff =
                compare_table_part(&env.src, &mut conn, table, Some(part), 500, 5).await.unwrap();
            // The first characters of each difference: a value here is 12,800 of them.
            let shown: Vec<String> =
                diff.differences.iter().map(|d| d.chars().take(160).collect()).collect();
            assert!(diff.is_equal(), "shard {i} of {} differs: {shown:?}", case.table);
            assert_eq!(diff.target_rows, u64::try_from(keys.len()).unwrap());
            source_rows += diff.source_rows;
        }
        assert_eq!(source_rows, 200, "the shards' parts of {} cover the source", case.table);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_a_crash_between_two_shards_commits_converges_whichever_committed() {
    Box::pin(crash_between_commits::<MySqlShards>(&IN_IDENTITY)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_a_crash_between_two_shards_commits_converges_with_the_key_outside_the_identity() {
    Box::pin(crash_between_commits::<MySqlShards>(&OUTSIDE_IDENTITY)).await;
}
