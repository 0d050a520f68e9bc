//! The "Store" demo database: schema, a deterministic data generator, the OLTP transaction
//! used by benchmarks and the demo, and table fingerprints to compare source and target.
//!
//! ```no_run
//! # async fn demo(mut client: tokio_postgres::Client) -> Result<(), store::Error> {
//! use rand::SeedableRng;
//! store::create_schema(&client).await?;
//! store::populate(&client, &store::Scale::tiny()).await?;
//! let mut rng = rand::rngs::StdRng::seed_from_u64(7);
//! store::oltp_transaction(&mut client, &mut rng).await?;
//! let (rows, md5) = store::table_fingerprint(&client, "orders").await?;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

use std::future::Future;

use pgconn::quote_ident;
use rand::Rng;
use tokio_postgres::GenericClient;
use tokio_postgres::types::{ToSql, Type};

/// The schema (plain SQL, no extensions), also in `crates/store/sql/schema.sql`.
pub const SCHEMA_SQL: &str = include_str!("../sql/schema.sql");

/// The Store tables in dependency order (referenced tables first): create/load in this
/// order, drop/truncate in reverse.
pub const TABLES: [&str; 4] = ["customers", "products", "orders", "order_items"];

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A statement failed.
    #[error("postgres error")]
    Postgres(#[from] tokio_postgres::Error),
    /// [`populate`] needs empty tables (it uses fixed ids so data is reproducible).
    #[error("table {0} is not empty; populate needs empty tables")]
    NotEmpty(&'static str),
    /// The scale asks for orders without customers, or items without products.
    #[error("invalid scale: {0}")]
    InvalidScale(&'static str),
    /// The table has no columns or does not exist.
    #[error("table {0} not found")]
    UnknownTable(String),
}

/// How much data [`populate`] generates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scale {
    /// Number of customers.
    pub customers: u32,
    /// Number of products (every tenth has a multi-KB description that is TOASTed).
    pub products: u32,
    /// Number of orders.
    pub orders: u32,
    /// Lines per order.
    pub items_per_order: u32,
}

impl Scale {
    /// A few rows per table: for functional tests.
    pub fn tiny() -> Self {
        Scale { customers: 20, products: 12, orders: 30, items_per_order: 3 }
    }

    /// A demo-sized data set (about 25k rows in total).
    pub fn demo() -> Self {
        Scale { customers: 1_000, products: 200, orders: 5_000, items_per_order: 4 }
    }

    /// Benchmark size: `n` customers, `n / 10` products (at least 10), `2n` orders of 3
    /// lines.
    pub fn bench(n: u32) -> Self {
        Scale {
            customers: n,
            products: (n / 10).max(10),
            orders: n.saturating_mul(2),
            items_per_order: 3,
        }
    }

    /// The number of rows [`populate`] inserts into `table` (0 for unknown tables).
    pub fn rows(&self, table: &str) -> u64 {
        match table {
            "customers" => u64::from(self.customers),
            "products" => u64::from(self.products),
            "orders" => u64::from(self.orders),
            "order_items" => u64::from(self.orders) * u64::from(self.items_per_order),
            _ => 0,
        }
    }
}

/// Creates the four tables (in the current schema).
///
/// # Errors
/// The tables exist already, or the statement failed.
pub async fn create_schema(client: &impl GenericClient) -> Result<(), Error> {
    client.batch_execute(SCHEMA_SQL).await?;
    Ok(())
}

const INSERT_CUSTOMERS: &str = "\
INSERT INTO customers (id, email, name, phone, is_active, loyalty_points, preferences, created_at)
SELECT i,
       'customer' || i || '@example.com',
       'Customer ' || i,
       CASE WHEN i % 3 = 0 THEN NULL ELSE '+1-555-' || lpad((i % 10000)::text, 4, '0') END,
       i % 10 <> 0,
       ((i * 7919) % 1000)::int,
       jsonb_build_object('newsletter', i % 2 = 0, 'lang', (ARRAY['en', 'fr', 'de'])[1 + i % 3]),
       timestamptz '2024-01-01 00:00:00+00' + i * interval '1 minute'
FROM generate_series(1, $1::bigint) AS i";

// Every tenth description is 200 md5 hex strings (6400 bytes): pglz cannot shrink it below
// the TOAST threshold, so it is stored out of line, as replication tests need.
const INSERT_PRODUCTS: &str = "\
INSERT INTO products (id, sku, name, price, stock, tags, thumbnail, description, updated_at)
SELECT i,
       md5('sku' || i)::uuid,
       'Product ' || i,
       (1 + ((i * 7919) % 100000) / 100.0)::numeric(12,2),
       (100 + (i * 31) % 900)::int,
       ARRAY['tag' || (i % 7), 'tag' || (i % 11)],
       CASE WHEN i % 4 = 0 THEN NULL ELSE decode(md5('thumb' || i), 'hex') END,
       CASE WHEN i % 10 = 0
            THEN (SELECT string_agg(md5(i || ':' || j), '') FROM generate_series(1, 200) AS j)
            ELSE 'Short description of product ' || i END,
       timestamptz '2024-01-01 00:00:00+00' + i * interval '1 second'
FROM generate_series(1, $1::bigint) AS i";

/// The generated order lines ($1 orders, $2 lines per order, $3 products); the unit price
/// repeats the product price formula so no join is needed.
const LINES: &str = "\
SELECT o AS order_id, l AS line_no, p AS product_id,
       (1 + (o + l) % 5)::int AS quantity,
       (1 + ((p * 7919) % 100000) / 100.0)::numeric(12,2) AS unit_price
FROM generate_series(1, $1::bigint) AS o
CROSS JOIN generate_series(1, $2::int) AS l
CROSS JOIN LATERAL (SELECT 1 + (o * 40503 + l * 7919) % $3::bigint AS p) AS pick";

fn insert_orders_sql() -> String {
    format!(
        "INSERT INTO orders (id, customer_id, status, total, note, placed_at, shipped_at)
SELECT o, 1 + (o * 2654435761) % $4::bigint, s.status, coalesce(t.total, 0),
       CASE WHEN o % 5 = 0 THEN 'gift wrap' END,
       timestamptz '2024-02-01 00:00:00+00' + o * interval '10 seconds',
       CASE WHEN s.status IN ('shipped', 'delivered')
            THEN timestamptz '2024-02-02 00:00:00+00' + o * interval '10 seconds' END
FROM generate_series(1, $1::bigint) AS o
CROSS JOIN LATERAL (SELECT (ARRAY['new', 'paid', 'shipped', 'delivered', 'cancelled'])
                           [1 + (o % 5)::int] AS status) AS s
LEFT JOIN (SELECT order_id, sum(quantity * unit_price) AS total
           FROM ({LINES}) AS x GROUP BY order_id) AS t ON t.order_id = o"
    )
}

fn insert_items_sql() -> String {
    format!(
        "INSERT INTO order_items (order_id, line_no, product_id, quantity, unit_price)
{LINES}"
    )
}

/// Fills the (empty) tables with deterministic data: the same scale always yields the same
/// rows (and fingerprints). Generated server-side with `generate_series`, so it is fast.
/// Sequences are advanced past the generated ids, then the tables are analyzed.
///
/// # Errors
/// [`Error::NotEmpty`], [`Error::InvalidScale`], or a failed statement.
pub async fn populate(client: &impl GenericClient, scale: &Scale) -> Result<(), Error> {
    if scale.orders > 0 && scale.customers == 0 {
        return Err(Error::InvalidScale("orders need customers"));
    }
    if scale.orders > 0 && scale.items_per_order > 0 && scale.products == 0 {
        return Err(Error::InvalidScale("order items need products"));
    }
    for table in TABLES {
        let sql = format!("SELECT EXISTS (SELECT 1 FROM {})", quote_ident(table));
        if client.query_one(&sql, &[]).await?.get::<_, bool>(0) {
            return Err(Error::NotEmpty(table));
        }
    }
    let customers = i64::from(scale.customers);
    let products = i64::from(scale.products);
    let orders = i64::from(scale.orders);
    let items = i32::try_from(scale.items_per_order).unwrap_or(i32::MAX);

    client.execute(INSERT_CUSTOMERS, &[&customers]).await?;
    client.execute(INSERT_PRODUCTS, &[&products]).await?;
    // products may be 0 when there are no lines; keep the modulo defined.
    let product_mod = products.max(1);
    client.execute(&insert_orders_sql(), &[&orders, &items, &product_mod, &customers]).await?;
    client.execute(&insert_items_sql(), &[&orders, &items, &product_mod]).await?;

    for (table, max_id) in [("customers", customers), ("products", products), ("orders", orders)] {
        // Identity columns own a sequence: move it past the explicit ids we inserted.
        client
            .execute(
                "SELECT setval(pg_get_serial_sequence($1, 'id'), greatest($2::bigint, 1), $2::bigint > 0)",
                &[&quote_ident(table), &max_id],
            )
            .await?;
    }
    let analyze = TABLES.iter().map(|t| quote_ident(t)).collect::<Vec<_>>().join(", ");
    client.batch_execute(&format!("ANALYZE {analyze}")).await?;
    tracing::debug!(?scale, "store populated");
    Ok(())
}

/// The random choices of one OLTP transaction, drawn before any I/O so the future that runs
/// it does not hold the RNG (and is `Send` whatever the RNG).
#[derive(Debug, Clone, PartialEq)]
pub struct OltpPlan {
    /// Picks the customer: `1 + floor(r * max(customers.id))`.
    pub customer_r: f64,
    /// Per line: (line_no, product pick in [0, 1), quantity).
    pub lines: Vec<(i32, f64, i32)>,
    /// An optional order note.
    pub note: Option<String>,
}

/// What an OLTP transaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OltpOutcome {
    /// The new order's id.
    pub order_id: i64,
    /// The product whose stock was decremented (that of line 1).
    pub product_id: i64,
    /// The number of order lines inserted.
    pub lines: usize,
}

impl OltpPlan {
    /// Draws a plan: 2 to 4 lines (about 3), quantities 1 to 5.
    pub fn generate(rng: &mut impl Rng) -> Self {
        let n = rng.gen_range(2..=4);
        let lines = (1..=n).map(|l| (l, rng.gen_range(0.0..1.0), rng.gen_range(1..=5))).collect();
        let note = rng.gen_bool(0.2).then(|| format!("note {}", rng.gen_range(0..1000)));
        OltpPlan { customer_r: rng.gen_range(0.0..1.0), lines, note }
    }

    /// Runs the statements in the caller's transaction (or in autocommit mode, one
    /// transaction per statement, if `client` is a plain client): insert the order and its
    /// lines, decrement the stock of line 1's product, set the order to `paid` with its
    /// total. Every statement uses `query_typed`: one round trip each, no prepare.
    ///
    /// # Errors
    /// A statement failed (e.g. the tables are empty).
    pub async fn execute(&self, client: &impl GenericClient) -> Result<OltpOutcome, Error> {
        let row = client
            .query_typed_one(
                "INSERT INTO orders (customer_id, status, note)
                 SELECT 1 + floor($1 * max(id))::bigint, 'new', $2 FROM customers
                 RETURNING id",
                &[
                    (&self.customer_r as &(dyn ToSql + Sync), Type::FLOAT8),
                    (&self.note, Type::TEXT),
                ],
            )
            .await?;
        let order_id: i64 = row.get(0);

        let line_nos: Vec<i32> = self.lines.iter().map(|l| l.0).collect();
        let picks: Vec<f64> = self.lines.iter().map(|l| l.1).collect();
        let qtys: Vec<i32> = self.lines.iter().map(|l| l.2).collect();
        let inserted = client
            .query_typed(
                "INSERT INTO order_items (order_id, line_no, product_id, quantity, unit_price)
                 SELECT $1, x.line_no, p.id, x.qty, p.price
                 FROM unnest($2::int4[], $3::float8[], $4::int4[]) AS x(line_no, r, qty)
                 CROSS JOIN (SELECT max(id) AS m FROM products) AS mx
                 JOIN products AS p ON p.id = 1 + floor(x.r * mx.m)::bigint
                 RETURNING product_id, line_no",
                &[
                    (&order_id, Type::INT8),
                    (&line_nos, Type::INT4_ARRAY),
                    (&picks, Type::FLOAT8_ARRAY),
                    (&qtys, Type::INT4_ARRAY),
                ],
            )
            .await?;
        let product_id = inserted
            .iter()
            .find(|r| r.get::<_, i32>(1) == 1)
            .map(|r| r.get::<_, i64>(0))
            .unwrap_or_default();

        // One product row per transaction: concurrent transactions never deadlock.
        let first_qty = qtys.first().copied().unwrap_or(0);
        client
            .query_typed(
                "UPDATE products SET stock = stock - $2, updated_at = now() WHERE id = $1",
                &[(&product_id, Type::INT8), (&first_qty, Type::INT4)],
            )
            .await?;
        client
            .query_typed(
                "UPDATE orders SET status = 'paid',
                        total = (SELECT coalesce(sum(quantity * unit_price), 0)
                                 FROM order_items WHERE order_id = $1)
                 WHERE id = $1",
                &[(&order_id, Type::INT8)],
            )
            .await?;
        Ok(OltpOutcome { order_id, product_id, lines: inserted.len() })
    }
}

/// One Store OLTP transaction (see [`OltpPlan::execute`]), committed. On a
/// [`tokio_postgres::Transaction`] it runs in a savepoint of it.
///
/// The random choices are drawn before the returned future starts, so the future does not
/// borrow `rng`.
///
/// # Errors
/// A statement or the commit failed; the transaction is then rolled back.
pub fn oltp_transaction<'a, C: GenericClient + Send + Sync, R: Rng>(
    client: &'a mut C,
    rng: &mut R,
) -> impl Future<Output = Result<OltpOutcome, Error>> + Send + use<'a, C, R> {
    let plan = OltpPlan::generate(rng);
    async move {
        let tx = client.transaction().await?;
        let outcome = plan.execute(&tx).await?;
        tx.commit().await?;
        Ok(outcome)
    }
}

/// Row count and md5 of all rows of `table` (a table name in the search path, quoted here)
/// in primary-key order, as `(rows, md5)`. Equal data gives equal fingerprints; any change
/// to any column of any row changes the md5. Tables without a primary key are ordered by the
/// row text.
///
/// # Errors
/// [`Error::UnknownTable`] or a failed query.
pub async fn table_fingerprint(
    client: &impl GenericClient,
    table: &str,
) -> Result<(i64, String), Error> {
    let quoted = quote_ident(table);
    let exists =
        client.query_one("SELECT to_regclass($1) IS NOT NULL", &[&quoted]).await?.get::<_, bool>(0);
    if !exists {
        return Err(Error::UnknownTable(table.to_owned()));
    }
    let pk: Vec<String> = client
        .query(
            "SELECT a.attname::text
             FROM pg_index AS i
             JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
             WHERE i.indrelid = $1::text::regclass AND i.indisprimary
             ORDER BY array_position(i.indkey::int2[], a.attnum)",
            &[&quoted],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let order = if pk.is_empty() {
        "t::text".to_owned()
    } else {
        pk.iter().map(|c| format!("t.{}", quote_ident(c))).collect::<Vec<_>>().join(", ")
    };
    let sql = format!(
        "SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY {order}), ''))
         FROM {quoted} AS t"
    );
    let row = client.query_one(&sql, &[]).await?;
    Ok((row.get(0), row.get(1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn plans_are_deterministic_and_in_range() {
        let a = OltpPlan::generate(&mut rand::rngs::StdRng::seed_from_u64(1));
        let b = OltpPlan::generate(&mut rand::rngs::StdRng::seed_from_u64(1));
        assert_eq!(a, b);
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        for _ in 0..200 {
            let p = OltpPlan::generate(&mut rng);
            assert!((2..=4).contains(&p.lines.len()));
            assert!((0.0..1.0).contains(&p.customer_r));
            for (i, (line_no, r, q)) in p.lines.iter().enumerate() {
                assert_eq!(usize::try_from(*line_no).unwrap(), i + 1);
                assert!((0.0..1.0).contains(r));
                assert!((1..=5).contains(q));
            }
        }
    }

    #[test]
    fn scale_rows() {
        let s = Scale::tiny();
        assert_eq!(s.rows("order_items"), 90);
        assert_eq!(Scale::bench(5).products, 10);
        assert_eq!(Scale::bench(1000).orders, 2000);
        assert_eq!(s.rows("nope"), 0);
    }

    #[test]
    fn schema_has_all_tables_in_order() {
        let positions: Vec<usize> = TABLES
            .iter()
            .map(|t| SCHEMA_SQL.find(&format!("CREATE TABLE {t} (")).expect("table in schema"))
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "TABLES follow the schema order");
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
