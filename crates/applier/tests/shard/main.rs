//! ShardedTarget against real databases: routing checked with PostgreSQL's own
//! `satisfies_hash_partition` on the source, rows moved between shards whole (also by a shard
//! key outside the replica identity), and a crash between two shards' commits, on PostgreSQL
//! and on MySQL/MariaDB shards.

#[path = "../common/mod.rs"]
mod common;

mod crash;
mod crash_mysql;
mod elsewhere;
mod routing;

use applier::shard::{ShardLayout, ShardedTarget};
use applier::{ApplierConfig, PostgresTarget, PostgresTargetConfig};
use common::Env;
use tokio_postgres::Client;

/// `n` more target databases (the shards) with `schema`; shard 0 is the env's own target.
async fn shard_databases(env: &Env, n: usize, schema: &str) -> Vec<String> {
    let cluster = pgcluster::shared();
    let mut dbs = vec![env.dst_db.clone()];
    for _ in 1..n {
        let db = pgcluster::unique_name("shard_dst");
        cluster.create_database(&db).await.unwrap();
        cluster.connect(&db).await.unwrap().batch_execute(schema).await.unwrap();
        dbs.push(db);
    }
    dbs
}

async fn connect(db: &str) -> Client {
    pgcluster::shared().connect(db).await.unwrap()
}

async fn shard_target(db: &str) -> PostgresTarget {
    PostgresTarget::new(connect(db).await, PostgresTargetConfig::new("test")).await.unwrap()
}

async fn sharded(dbs: &[String], layout: &ShardLayout) -> ShardedTarget<PostgresTarget> {
    let mut shards = Vec::new();
    for db in dbs {
        shards.push(shard_target(db).await);
    }
    ShardedTarget::new(shards, layout.clone())
}

fn cfg() -> ApplierConfig {
    ApplierConfig::default()
}

/// The rows of `query` (one text column) on every shard, sorted.
async fn rows_on(db: &str, query: &str) -> Vec<String> {
    let mut v: Vec<String> = connect(db)
        .await
        .query(query, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, Option<String>>(0).unwrap_or_default())
        .collect();
    v.sort();
    v
}

/// Checks that shard `i` of `dbs` holds exactly the rows of `table` (whole rows as text,
/// `key` the shard key expression) that PostgreSQL's hash partitioning puts in partition
/// `i`: each shard's rows all satisfy `satisfies_hash_partition` on the source's `probe`
/// table (hash-partitioned by the key's type), and the shards together equal the source.
async fn assert_layout(env: &Env, dbs: &[String], table: &str, key: &str, probe: &str) {
    // Rows shown by their start and a digest of the rest, so a failure stays readable.
    let whole = format!("SELECT left(t::text, 40) || ' ' || md5(t::text) FROM {table} t");
    let mut union = Vec::new();
    for (i, db) in dbs.iter().enumerate() {
        let keys = rows_on(db, &format!("SELECT ({key})::text FROM {table} t")).await;
        let misplaced = misplaced(&env.src, probe, &keys, dbs.len(), i).await;
        assert_eq!(misplaced, 0, "shard {i} holds rows of {table} of another partition");
        union.extend(rows_on(db, &whole).await);
    }
    union.sort();
    let mut source: Vec<String> =
        env.src.query(&whole, &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    source.sort();
    assert_eq!(union, source, "the shards of {table} together differ from the source");
}

/// How many of `keys` (shard key values as text) PostgreSQL's hash partitioning does not put
/// in partition `remainder` of `modulus`, by `satisfies_hash_partition` on the source's `probe`
/// table (hash-partitioned by the key's type).
async fn misplaced(
    src: &Client,
    probe: &str,
    keys: &[String],
    modulus: usize,
    remainder: usize,
) -> i64 {
    src.query_one(
        &format!(
            "SELECT count(*) FROM unnest($1::text[]) k \
             WHERE NOT satisfies_hash_partition('{probe}'::regclass, $2, $3, k::{})",
            probe_type(src, probe).await
        ),
        &[&keys, &i32::try_from(modulus).unwrap(), &i32::try_from(remainder).unwrap()],
    )
    .await
    .unwrap()
    .get(0)
}

/// The type of the (one) partition key column of `probe`.
async fn probe_type(src: &Client, probe: &str) -> String {
    src.query_one(
        "SELECT format_type(a.atttypid, a.atttypmod) FROM pg_partitioned_table p \
         JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0] \
         WHERE p.partrelid = $1::text::regclass",
        &[&probe],
    )
    .await
    .unwrap()
    .get(0)
}
