//! A shard key outside the replica identity, with the default identity: Store's `orders`
//! (primary key `id`) sharded by `customer_id`. An update that changes the key carries the new
//! row only, a delete the `id` only; the row is found on whichever shard holds it.

use applier::shard::ShardLayout;

use super::routing::TOASTED;
use super::*;
use crate::common::{apply_all, exec_each, setup};

/// `orders` keyed by `id` alone, sharded by `customer_id`; `tags` sharded by a text column
/// outside its key, some values long enough to be stored out of line.
pub(crate) const LOOSE: &str = "\
    CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint NOT NULL, status text, \
        body text);\
    CREATE TABLE tags (id int PRIMARY KEY, tag text NOT NULL, n int);\
    CREATE TABLE probe_bigint (k bigint) PARTITION BY HASH (k);\
    CREATE TABLE probe_text (k text) PARTITION BY HASH (k);";

pub(crate) fn loose_layout() -> ShardLayout {
    let mut layout = ShardLayout::new();
    layout.shard("public", "orders", vec!["customer_id".into()]);
    layout.shard("public", "tags", vec!["tag".into()]);
    layout
}

/// Rows not found by an update or delete on any shard.
fn missing(target: &ShardedTarget<PostgresTarget>) -> u64 {
    target.shards().map(|s| s.stats().missing_rows).sum()
}

#[tokio::test]
async fn a_shard_key_outside_the_identity_moves_rows_whole_and_deletes_find_them() {
    for shards in [2usize, 3] {
        let env = setup("shard_loose", LOOSE, false).await;
        let dbs = shard_databases(&env, shards, LOOSE).await;
        env.src
            .batch_execute(&format!(
                "INSERT INTO orders SELECT g, g % 50 + 1, 'new', {TOASTED} \
                     FROM generate_series(1, 400) g;\
                 INSERT INTO tags SELECT g, CASE WHEN g % 4 = 0 THEN {TOASTED} ELSE 't' || g END, \
                     0 FROM generate_series(1, 100) g;"
            ))
            .await
            .unwrap();
        let copy = env.fetch(1, false, &[], None).await;
        apply_all(sharded(&dbs, &loose_layout()).await, &copy, cfg()).await.unwrap();
        // Each statement its own transaction; the bodies are never sent again.
        exec_each(
            &env.src,
            "UPDATE orders SET status = 'paid' WHERE id % 3 = 0;\
             UPDATE orders SET customer_id = customer_id + 7 WHERE id % 5 = 0;\
             UPDATE orders SET customer_id = customer_id + 1, status = 'moved' WHERE id % 7 = 0;\
             DELETE FROM orders WHERE id % 11 = 0;\
             INSERT INTO orders SELECT g, g % 13, 'late', 'short' FROM generate_series(401, 450) g;\
             UPDATE orders SET id = id + 1000, customer_id = customer_id + 3 WHERE id % 17 = 0;\
             UPDATE tags SET n = n + 1;\
             UPDATE tags SET tag = tag || 'x' WHERE id % 3 = 0;\
             DELETE FROM tags WHERE id % 5 = 0",
        )
        .await;
        // One transaction moving rows back and forth and deleting some it moved.
        env.src
            .batch_execute(
                "BEGIN;\
                 UPDATE orders SET customer_id = customer_id + 100 WHERE id % 4 = 1;\
                 UPDATE orders SET status = 'again' WHERE id % 4 = 1;\
                 UPDATE orders SET customer_id = customer_id - 100 WHERE id % 8 = 1;\
                 DELETE FROM orders WHERE id % 12 = 1;\
                 COMMIT",
            )
            .await
            .unwrap();
        let msgs = env.fetch(1, false, &[], None).await;
        let applied = apply_all(sharded(&dbs, &loose_layout()).await, &msgs, cfg()).await.unwrap();
        let moved = applied.target().moved_rows();
        assert!(moved > 100, "{moved} rows moved across {shards} shards");
        assert_eq!(missing(applied.target()), 0, "every row was found where it was");
        assert_layout(&env, &dbs, "orders", "t.customer_id", "probe_bigint").await;
        assert_layout(&env, &dbs, "tags", "t.tag", "probe_text").await;
    }
}

#[tokio::test]
async fn an_update_of_a_row_inserted_in_the_same_group_asks_no_shard() {
    let env = setup("shard_loose_oltp", LOOSE, false).await;
    let dbs = shard_databases(&env, 2, LOOSE).await;
    // OLTP-shaped: each transaction inserts an order, then pays it.
    for id in 1..=30i64 {
        env.src
            .batch_execute(&format!(
                "BEGIN; INSERT INTO orders VALUES ({id}, {}, 'new', 'b'); \
                 UPDATE orders SET status = 'paid' WHERE id = {id}; COMMIT",
                id % 7
            ))
            .await
            .unwrap();
    }
    let msgs = env.fetch(1, false, &[], None).await;
    let applied = apply_all(sharded(&dbs, &loose_layout()).await, &msgs, cfg()).await.unwrap();
    let statements: Vec<u64> = applied.target().shards().map(|s| s.stats().statements).collect();
    // The shards' buffered inserts say where each paid order is: the updates fold into them
    // and each shard sends one statement (asking instead would end the run at every update).
    assert!(statements.iter().all(|&n| n == 1), "statements per shard: {statements:?}");
    assert_layout(&env, &dbs, "orders", "t.customer_id", "probe_bigint").await;
}
