//! The Store schema, generator, OLTP transaction and fingerprints against a real server.

use rand::SeedableRng;
use rand::rngs::StdRng;
use store::{Scale, TABLES};

async fn fresh_db(tag: &str) -> tokio_postgres::Client {
    let cluster = pgcluster::shared();
    let db = pgcluster::unique_name(tag);
    cluster.create_database(&db).await.unwrap();
    cluster.connect(&db).await.unwrap()
}

async fn count(client: &tokio_postgres::Client, table: &str) -> i64 {
    client.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await.unwrap().get(0)
}

async fn fingerprints(client: &tokio_postgres::Client) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    for t in TABLES {
        out.push(store::table_fingerprint(client, t).await.unwrap());
    }
    out
}

#[tokio::test]
async fn schema_and_populate() {
    let _log = pgcluster::shared().log_guard();
    let client = fresh_db("store_populate").await;
    store::create_schema(&client).await.unwrap();
    let scale = Scale::tiny();
    store::populate(&client, &scale).await.unwrap();
    for t in TABLES {
        assert_eq!(u64::try_from(count(&client, t).await).unwrap(), scale.rows(t), "{t}");
    }
    // Totals are consistent with the lines.
    let bad: i64 = client
        .query_one(
            "SELECT count(*) FROM orders o WHERE o.total <> (SELECT coalesce(sum(quantity * unit_price), 0)
             FROM order_items i WHERE i.order_id = o.id)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(bad, 0);
    // Some descriptions are TOASTed out of line; some columns are NULL.
    let toasted: i64 = client
        .query_one("SELECT count(*) FROM products WHERE pg_column_size(description) > 4000", &[])
        .await
        .unwrap()
        .get(0);
    assert!(toasted > 0);
    let nulls: i64 = client
        .query_one("SELECT count(*) FROM customers WHERE phone IS NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert!(nulls > 0);
    // Sequences were moved past the generated ids.
    let id: i64 = client
        .query_one("INSERT INTO customers (email, name) VALUES ('x@y', 'x') RETURNING id", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(id, i64::from(scale.customers) + 1);
    // Populating again is refused.
    let err = store::populate(&client, &scale).await.unwrap_err();
    assert!(matches!(err, store::Error::NotEmpty("customers")), "{err}");
}

#[tokio::test]
async fn data_is_deterministic_and_fingerprints_detect_changes() {
    let a = fresh_db("store_fp_a").await;
    let b = fresh_db("store_fp_b").await;
    for c in [&a, &b] {
        store::create_schema(c).await.unwrap();
        store::populate(c, &Scale::tiny()).await.unwrap();
    }
    let fa = fingerprints(&a).await;
    assert_eq!(fa, fingerprints(&b).await, "same scale, same data");
    assert_eq!(fa[3].0, 90);

    // A one-column change in one row changes that table's fingerprint only.
    b.execute("UPDATE products SET stock = stock + 1 WHERE id = 3", &[]).await.unwrap();
    let fb = fingerprints(&b).await;
    assert_eq!(fa[0], fb[0]);
    assert_eq!(fa[1].0, fb[1].0);
    assert_ne!(fa[1].1, fb[1].1);
    b.execute("UPDATE products SET stock = stock - 1 WHERE id = 3", &[]).await.unwrap();
    assert_eq!(fa, fingerprints(&b).await, "undoing the change restores the fingerprint");

    // Deleting a row changes count and md5.
    b.execute("DELETE FROM order_items WHERE order_id = 1 AND line_no = 2", &[]).await.unwrap();
    let fb = fingerprints(&b).await;
    assert_eq!(fb[3].0, 89);
    assert_ne!(fa[3].1, fb[3].1);

    let err = store::table_fingerprint(&a, "no_such_table").await.unwrap_err();
    assert!(matches!(err, store::Error::UnknownTable(_)));
}

#[tokio::test]
async fn oltp_transactions() {
    let mut client = fresh_db("store_oltp").await;
    store::create_schema(&client).await.unwrap();
    store::populate(&client, &Scale::tiny()).await.unwrap();
    let before_orders = count(&client, "orders").await;
    let before_items = count(&client, "order_items").await;
    let mut rng = StdRng::seed_from_u64(42);
    let mut lines = 0;
    for _ in 0..20 {
        let outcome = store::oltp_transaction(&mut client, &mut rng).await.unwrap();
        assert!((2..=4).contains(&outcome.lines));
        lines += i64::try_from(outcome.lines).unwrap();
        let row = client
            .query_one("SELECT status, total FROM orders WHERE id = $1", &[&outcome.order_id])
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), "paid");
        let line1: i64 = client
            .query_one(
                "SELECT product_id FROM order_items WHERE order_id = $1 AND line_no = 1",
                &[&outcome.order_id],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(line1, outcome.product_id);
    }
    assert_eq!(count(&client, "orders").await, before_orders + 20);
    assert_eq!(count(&client, "order_items").await, before_items + lines);

    // Inside a caller's transaction it runs in a savepoint and disappears on rollback.
    let mut tx = client.transaction().await.unwrap();
    store::oltp_transaction(&mut tx, &mut rng).await.unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(count(&client, "orders").await, before_orders + 20);

    // Stock moves: the products' stock went down by what line 1 ordered.
    let stock_sum: i64 =
        client.query_one("SELECT sum(stock) FROM products", &[]).await.unwrap().get(0);
    let fresh = fresh_db("store_oltp_ref").await;
    store::create_schema(&fresh).await.unwrap();
    store::populate(&fresh, &Scale::tiny()).await.unwrap();
    let initial: i64 =
        fresh.query_one("SELECT sum(stock) FROM products", &[]).await.unwrap().get(0);
    assert!(stock_sum < initial);
}

#[tokio::test]
async fn oltp_on_empty_tables_fails_cleanly() {
    let mut client = fresh_db("store_oltp_empty").await;
    store::create_schema(&client).await.unwrap();
    let mut rng = StdRng::seed_from_u64(1);
    assert!(store::oltp_transaction(&mut client, &mut rng).await.is_err());
    assert_eq!(count(&client, "orders").await, 0, "rolled back");
}

#[tokio::test]
async fn oltp_future_is_send() {
    fn assert_send<T: Send>(t: T) -> T {
        t
    }
    let mut client = fresh_db("store_send").await;
    store::create_schema(&client).await.unwrap();
    store::populate(&client, &Scale::tiny()).await.unwrap();
    // A thread-local RNG is not Send, yet the transaction future is (checked at compile time).
    let mut rng = rand::thread_rng();
    let fut = assert_send(store::oltp_transaction(&mut client, &mut rng));
    fut.await.unwrap();
}
