-- Seed rows for the Store schema (10-schema.sql, mounted from crates/store/sql/schema.sql).
-- Runs once, in the `store` database, when the primary's data volume is first created.
--
-- No pg_hba.conf change is needed: the postgres image appends `host all all all scram-sha-256`,
-- and pgmirror's replication connection is a *logical* one (replication=database), which
-- pg_hba.conf matches against database entries such as `all`; the `replication` keyword only
-- covers physical replication. The `postgres` role is a superuser, so it may replicate.

INSERT INTO customers (email, name, phone, loyalty_points, preferences)
SELECT format('customer%s@example.com', i),
       format('Customer %s', i),
       CASE WHEN i % 3 = 0 THEN NULL ELSE format('+1-555-%s', lpad(i::text, 4, '0')) END,
       i * 10,
       jsonb_build_object('newsletter', i % 2 = 0)
FROM generate_series(1, 100) AS i;

INSERT INTO products (name, price, stock, tags, description)
SELECT format('Product %s', i),
       (i * 1.25)::numeric(12,2),
       100 + i,
       ARRAY['seed', CASE WHEN i % 2 = 0 THEN 'even' ELSE 'odd' END],
       repeat(format('Description of product %s. ', i), 10)
FROM generate_series(1, 50) AS i;

INSERT INTO orders (customer_id, status, note)
SELECT 1 + (i % 100),
       (ARRAY['new', 'paid', 'shipped', 'delivered', 'cancelled'])[1 + i % 5],
       CASE WHEN i % 4 = 0 THEN 'gift' END
FROM generate_series(1, 200) AS i;

INSERT INTO order_items (order_id, line_no, product_id, quantity, unit_price)
SELECT o.id, l, 1 + ((o.id + l) % 50), 1 + (o.id % 3), p.price
FROM orders AS o
CROSS JOIN generate_series(1, 3) AS l
JOIN products AS p ON p.id = 1 + ((o.id + l) % 50);

UPDATE orders AS o
SET total = s.total
FROM (SELECT order_id, sum(quantity * unit_price) AS total FROM order_items GROUP BY order_id) AS s
WHERE s.order_id = o.id;
