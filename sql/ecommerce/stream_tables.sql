-- ecommerce scenario: the six stream tables of the seed's 6-node DAG, in topological order.
--
-- Run by the bootstrap on every bootstrap (as the owner `demo`); create_stream_table_if_not_exists makes
-- that a no-op for tables that exist. Names, modes and schedules are exactly those of
-- sql/ecommerce/scenario.toml (= the seed's table). Queries follow the upstream demo
-- (demo/postgres/ecommerce/02_stream_tables.sql) and use only operators pg_trickle maintains
-- differentially: joins, GROUP BY with COUNT/SUM/AVG, COUNT(DISTINCT), ROUND, and TopK
-- (ROW_NUMBER() OVER (ORDER BY ...) with ORDER BY ... LIMIT 10). No volatile functions.
--
--   customers ─┬─► customer_stats (L1, 1s) ─┬─► country_revenue (L2, calculated)
--   orders ────┤                            └─► top_10_customers (showcase, calculated, LIMIT 10)
--   products ──┼─► product_sales (L1, 1s)
--   categories ┴─► category_revenue (L1, 1s)
--   product_catalog + products + categories ─► catalog_price_impact (showcase, 5s)

-- L1: per product: orders, units sold, revenue, average selling price.
SELECT pgtrickle.create_stream_table_if_not_exists(
    name         => 'product_sales',
    query        => $$
        SELECT
            p.id                                          AS product_id,
            p.name                                        AS product_name,
            cat.name                                      AS category_name,
            COUNT(o.id)                                   AS order_count,
            COALESCE(SUM(o.quantity), 0)                  AS units_sold,
            COALESCE(SUM(o.quantity * o.unit_price), 0)   AS revenue,
            COALESCE(ROUND(AVG(o.unit_price), 2), 0)      AS avg_selling_price
        FROM products p
        JOIN categories cat ON cat.id = p.category_id
        LEFT JOIN orders o ON o.product_id = p.id
        GROUP BY p.id, p.name, cat.id, cat.name
    $$,
    schedule     => '1s',
    refresh_mode => 'DIFFERENTIAL'
);

-- L1: per customer: order count, total spent, average order value.
SELECT pgtrickle.create_stream_table_if_not_exists(
    name         => 'customer_stats',
    query        => $$
        SELECT
            c.id                                                    AS customer_id,
            c.name                                                  AS customer_name,
            c.country,
            COUNT(o.id)                                             AS order_count,
            COALESCE(SUM(o.quantity * o.unit_price), 0)             AS total_spent,
            COALESCE(ROUND(AVG(o.quantity * o.unit_price), 2), 0)   AS avg_order_value
        FROM customers c
        LEFT JOIN orders o ON o.customer_id = c.id
        GROUP BY c.id, c.name, c.country
    $$,
    schedule     => '1s',
    refresh_mode => 'DIFFERENTIAL'
);

-- L1: per category: orders, units, revenue, average price, distinct customers.
SELECT pgtrickle.create_stream_table_if_not_exists(
    name         => 'category_revenue',
    query        => $$
        SELECT
            cat.id                                        AS category_id,
            cat.name                                      AS category_name,
            COUNT(o.id)                                   AS order_count,
            COALESCE(SUM(o.quantity), 0)                  AS units_sold,
            COALESCE(SUM(o.quantity * o.unit_price), 0)   AS revenue,
            COALESCE(ROUND(AVG(o.unit_price), 2), 0)      AS avg_price,
            COUNT(DISTINCT o.customer_id)                 AS unique_customers
        FROM categories cat
        LEFT JOIN products p ON p.category_id = cat.id
        LEFT JOIN orders   o ON o.product_id  = p.id
        GROUP BY cat.id, cat.name
    $$,
    schedule     => '1s',
    refresh_mode => 'DIFFERENTIAL'
);

-- L2: per country, rolled up from customer_stats (stream table reading a stream table).
SELECT pgtrickle.create_stream_table_if_not_exists(
    name         => 'country_revenue',
    query        => $$
        SELECT
            country,
            COUNT(*)                          AS customer_count,
            SUM(order_count)                  AS total_orders,
            SUM(total_spent)                  AS total_revenue,
            ROUND(AVG(avg_order_value), 2)    AS avg_order_value
        FROM customer_stats
        WHERE order_count > 0
        GROUP BY country
    $$,
    schedule     => 'calculated',
    refresh_mode => 'DIFFERENTIAL'
);

-- Showcase #1: current vs base price per product. Reads only the slowly-changing product_catalog (one
-- product repriced about every 30 generator cycles) and the static products/categories, so a refresh
-- touches about 1 row in 60.
SELECT pgtrickle.create_stream_table_if_not_exists(
    name         => 'catalog_price_impact',
    query        => $$
        SELECT
            pc.product_id,
            p.name                                                  AS product_name,
            cat.name                                                AS category_name,
            p.base_price,
            pc.current_price,
            ROUND(pc.current_price - p.base_price, 2)               AS price_delta,
            ROUND(100.0 * (pc.current_price - p.base_price)
                  / NULLIF(p.base_price, 0), 1)                     AS pct_change,
            pc.updated_at                                           AS price_last_updated
        FROM product_catalog pc
        JOIN products   p   ON p.id   = pc.product_id
        JOIN categories cat ON cat.id = p.category_id
    $$,
    schedule     => '5s',
    refresh_mode => 'DIFFERENTIAL'
);

-- Showcase #2: the top-10 leaderboard by total spend (TopK over customer_stats). Fixed 10-row output:
-- only rank changes produce row changes. Ties on total_spent are broken by name, then id (names are
-- unique in the seed; the id makes the ranking deterministic whatever the data).
SELECT pgtrickle.create_stream_table_if_not_exists(
    name         => 'top_10_customers',
    query        => $$
        SELECT
            ROW_NUMBER() OVER (ORDER BY total_spent DESC, customer_name, customer_id) AS rank,
            customer_id,
            customer_name,
            country,
            order_count,
            total_spent,
            avg_order_value
        FROM customer_stats
        WHERE order_count > 0
        ORDER BY total_spent DESC, customer_name, customer_id
        LIMIT 10
    $$,
    schedule     => 'calculated',
    refresh_mode => 'DIFFERENTIAL'
);
