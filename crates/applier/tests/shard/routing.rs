//! Routing: PostgreSQL's hash for every key type, from pgoutput's text and binary values, and
//! a whole stream split across shards.

use applier::shard::{KeyType, ShardError, ShardLayout, hash};
use pgoutput_decoder::LogicalMessage;

use super::*;
use crate::common::{apply_all, setup};

/// Key types, each with a source table column and a hash-partitioned probe table.
const TYPES: &[(&str, &str)] = &[
    ("i2", "int2"),
    ("i4", "int4"),
    ("i8", "int8"),
    ("t", "text"),
    ("v", "varchar(40)"),
    ("c", "char(6)"),
    ("u", "uuid"),
    ("n", "numeric"),
    ("d", "date"),
];

fn key_schema() -> String {
    let mut sql = String::from("CREATE TABLE keys (id int PRIMARY KEY");
    for (col, ty) in TYPES {
        sql.push_str(&format!(", {col} {ty}"));
    }
    sql.push_str(");");
    for (col, ty) in TYPES {
        sql.push_str(&format!("CREATE TABLE probe_{col} (k {ty}) PARTITION BY HASH (k);"));
    }
    sql.push_str("CREATE TABLE probe_multi (a int8, b text, c date) PARTITION BY HASH (a, b, c);");
    sql
}

/// 2,000 rows of awkward values: extremes, negatives, NULLs, scales, dates BC and infinite,
/// multibyte and long text.
const ROWS: &str = "INSERT INTO keys SELECT g, \
    CASE WHEN g % 97 = 0 THEN NULL ELSE ((g * 7919) % 65535 - 32767)::int2 END, \
    CASE g % 5 WHEN 0 THEN 2147483647 - g WHEN 1 THEN -2147483648 + g ELSE g * 104729 END, \
    CASE g % 4 WHEN 0 THEN 9223372036854775807 - g WHEN 1 THEN -g * 4294967296 \
        WHEN 2 THEN -g ELSE g::int8 * 3000000019 END, \
    CASE g % 3 WHEN 0 THEN '' WHEN 1 THEN repeat(md5(g::text), g % 7) ELSE 'ключ ' || g END, \
    'v' || g, \
    CASE WHEN g % 2 = 0 THEN 'c' || g ELSE NULL END, \
    gen_random_uuid(), \
    CASE g % 6 WHEN 0 THEN (g / 7.0)::numeric(20, 6) WHEN 1 THEN -g * 1000000000000.5 \
        WHEN 2 THEN 0.0001 * g WHEN 3 THEN 'NaN' WHEN 4 THEN 0 ELSE g * 10000 END, \
    CASE g % 5 WHEN 0 THEN 'infinity'::date WHEN 1 THEN '0044-03-15 BC'::date - g \
        ELSE '2000-01-01'::date + g * 37 - 30000 END \
    FROM generate_series(1, 2000) g";

fn int(v: usize) -> i32 {
    i32::try_from(v).unwrap()
}

/// Per row of `keys` (in stream order): its id and each column's hash.
fn hashes(msgs: &[LogicalMessage]) -> Vec<(i32, Vec<Option<u64>>)> {
    let mut types = Vec::new();
    let mut out = Vec::new();
    for m in msgs {
        match m {
            LogicalMessage::Relation(r) if r.name == "keys" => {
                types = r.columns.iter().map(|c| KeyType::from_oid(c.type_oid)).collect();
            }
            LogicalMessage::Insert(i) => {
                let row = types
                    .iter()
                    .enumerate()
                    .skip(1)
                    .map(|(c, ty)| ty.unwrap().hash(i.new.get(c).unwrap()).unwrap())
                    .collect();
                let id = match i.new.get(0).unwrap() {
                    pgoutput_decoder::Column::Text(b) => {
                        std::str::from_utf8(b).unwrap().parse().unwrap()
                    }
                    pgoutput_decoder::Column::Binary(b) => {
                        i32::from_be_bytes(b.try_into().unwrap())
                    }
                    _ => unreachable!(),
                };
                out.push((id, row));
            }
            _ => {}
        }
    }
    out
}

#[tokio::test]
async fn every_key_type_routes_where_satisfies_hash_partition_puts_it() {
    let env = setup("shard_hash", &key_schema(), false).await;
    // A second slot reads the same rows again, as binary values.
    let slot2 = pgcluster::unique_name("shard_hash_bin");
    env.src
        .execute("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", &[&slot2])
        .await
        .unwrap();
    env.src.batch_execute(ROWS).await.unwrap();
    let mut msgs = env.fetch(1, false, &[], None).await;
    let binary = Env {
        src: env.source_session().await,
        dst: env.target_session().await,
        src_db: env.src_db.clone(),
        dst_db: env.dst_db.clone(),
        slot: slot2,
        publication: env.publication.clone(),
    };
    let binary_msgs = binary.fetch(1, true, &[], None).await;
    assert!(
        binary_msgs.iter().any(|m| matches!(m, LogicalMessage::Insert(i)
            if matches!(i.new.get(0), Some(pgoutput_decoder::Column::Binary(_))))),
        "the second stream carries binary values"
    );
    msgs.extend(binary_msgs);
    let rows = hashes(&msgs);
    assert_eq!(rows.len(), 4000, "two streams of 2,000 inserts");
    for modulus in [2usize, 3, 4, 7] {
        for (c, (col, _)) in TYPES.iter().enumerate() {
            let ids: Vec<i32> = rows.iter().map(|(id, _)| *id).collect();
            let parts: Vec<i32> = rows
                .iter()
                .map(|(_, h)| int(hash::partition_of(hash::row_hash([h[c]]), modulus)))
                .collect();
            let wrong: Vec<String> = env
                .src
                .query(
                    &format!(
                        "SELECT k.id || ': ' || coalesce(k.{col}::text, 'NULL') \
                         FROM unnest($1::int[], $2::int[]) AS o(id, part) \
                         JOIN keys k ON k.id = o.id \
                         WHERE NOT satisfies_hash_partition('probe_{col}'::regclass, $3, \
                           o.part, k.{col})"
                    ),
                    &[&ids, &parts, &int(modulus)],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            assert!(wrong.is_empty(), "{col} modulus {modulus}: misrouted {wrong:?}");
        }
        // Several columns, NULLs skipped, combined as compute_partition_hash_value does.
        let (i8c, tc, dc) = (2, 3, 8);
        let ids: Vec<i32> = rows.iter().map(|(id, _)| *id).collect();
        let parts: Vec<i32> = rows
            .iter()
            .map(|(_, h)| int(hash::partition_of(hash::row_hash([h[i8c], h[tc], h[dc]]), modulus)))
            .collect();
        let wrong: i64 = env
            .src
            .query_one(
                "SELECT count(*) FROM unnest($1::int[], $2::int[]) AS o(id, part) \
                 JOIN keys k ON k.id = o.id \
                 WHERE NOT satisfies_hash_partition('probe_multi'::regclass, $3, o.part, \
                   k.i8, k.t, k.d)",
                &[&ids, &parts, &int(modulus)],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(wrong, 0, "three-column key, modulus {modulus}");
    }
}

#[tokio::test]
async fn an_unsupported_key_type_is_refused_before_anything_starts() {
    let env = setup(
        "shard_refuse",
        "CREATE TABLE m (id int PRIMARY KEY, x real, k int);\
         CREATE TABLE f (id int PRIMARY KEY, owner int);",
        false,
    )
    .await;
    let mut layout = ShardLayout::new();
    layout.shard("public", "m", vec!["x".into()]);
    let e = layout.check(&env.src).await.unwrap_err();
    assert!(matches!(e, ShardError::UnsupportedType { .. }), "{e}");
    assert_eq!(
        e.to_string(),
        "shard key column \"x\" of \"public\".\"m\" has type real, which cannot be sharded (supported: \
         smallint, integer, bigint, text, varchar, char(n), uuid, numeric, date)"
    );
    let mut layout = ShardLayout::new();
    layout.shard("public", "m", vec!["nope".into()]);
    assert!(matches!(layout.check(&env.src).await, Err(ShardError::NoSuchColumn { .. })));
    // A key outside the replica identity is taken: an update says where the row goes, and
    // the shards are asked where it was.
    let mut layout = ShardLayout::new();
    layout.shard("public", "f", vec!["owner".into()]);
    layout.check(&env.src).await.unwrap();
    env.src.batch_execute("ALTER TABLE f REPLICA IDENTITY FULL").await.unwrap();
    layout.check(&env.src).await.unwrap();
    let mut layout = ShardLayout::new();
    layout.shard("public", "m", vec!["id".into()]);
    layout.shard("public", "f", vec!["id".into()]);
    layout.check(&env.src).await.unwrap();
}

/// Two customers tables' worth of schema: customers by id, orders by (customer_id) within
/// its primary key, products a reference table.
pub(crate) const STORE: &str = "\
    CREATE TABLE customers (id bigint PRIMARY KEY, name text NOT NULL, notes text);\
    CREATE TABLE orders (customer_id bigint NOT NULL, id bigint NOT NULL, status text, \
        body text, PRIMARY KEY (customer_id, id));\
    CREATE TABLE products (id int PRIMARY KEY, name text);\
    CREATE TABLE probe_bigint (k bigint) PARTITION BY HASH (k);";

pub(crate) fn store_layout() -> ShardLayout {
    let mut layout = ShardLayout::new();
    layout.shard("public", "customers", vec!["id".into()]);
    layout.shard("public", "orders", vec!["customer_id".into()]);
    layout
}

/// A body too large to stay inline, and incompressible: stored out of line (TOAST), so an
/// update that leaves it alone does not send it.
pub(crate) const TOASTED: &str =
    "(SELECT string_agg(md5(random()::text || i::text), '') FROM generate_series(1, 400) i)";

#[tokio::test]
async fn the_store_tables_split_across_shards_and_moved_rows_arrive_whole() {
    for shards in [2usize, 3] {
        let env = setup("shard_store", STORE, false).await;
        let dbs = shard_databases(&env, shards, STORE).await;
        env.src
            .batch_execute(&format!(
                "INSERT INTO customers SELECT g, 'c' || g, {TOASTED} FROM generate_series(1, 300) g;\
                 INSERT INTO orders SELECT g % 300 + 1, g, 'new', {TOASTED} \
                     FROM generate_series(1, 900) g;\
                 INSERT INTO products SELECT g, 'p' || g FROM generate_series(1, 20) g;"
            ))
            .await
            .unwrap();
        crate::common::exec_each(
            &env.src,
            "UPDATE orders SET status = 'paid' WHERE id % 3 = 0;\
             UPDATE customers SET name = name || '!' WHERE id % 4 = 0;\
             UPDATE orders SET customer_id = customer_id + 1 WHERE id % 5 = 0;\
             UPDATE customers SET id = id + 1000 WHERE id % 7 = 0;\
             DELETE FROM orders WHERE id % 11 = 0;\
             UPDATE products SET name = 'renamed' WHERE id < 5;\
             DELETE FROM customers WHERE id % 13 = 0",
        )
        .await;
        let msgs = env.fetch(1, false, &[], None).await;
        let target = sharded(&dbs, &store_layout()).await;
        let applied = apply_all(target, &msgs, cfg()).await.unwrap();
        let moved = applied.target().moved_rows();
        // 180 orders and 42 customers changed key; about (N-1)/N of them changed shard.
        assert!(moved > 50, "{moved} rows moved");
        assert_layout(&env, &dbs, "customers", "t.id", "probe_bigint").await;
        assert_layout(&env, &dbs, "orders", "t.customer_id", "probe_bigint").await;
        for db in &dbs {
            let on = rows_on(db, "SELECT t::text FROM products t").await;
            let src = rows_on(&env.src_db, "SELECT t::text FROM products t").await;
            assert_eq!(on, src, "the reference table differs on {db}");
        }
    }
}
