-- ecommerce scenario: base tables.
--
-- Applied once by the bootstrap, as the database owner `demo` (plain SQL, no psql meta-commands).
-- Column names follow the upstream demo (demo/postgres/ecommerce/01_schema.sql) so the stream-table
-- queries and the seed's "Playing with the ecommerce demo" queries run unchanged.
--
--   categories ─┐
--   products ───┼─► orders (append-only stream, written by the generator)
--   customers ──┘
--   product_catalog: the slowly-changing price list (one row per product; the generator reprices one
--                    product about every 30 cycles, within ±20 % of its base price)

CREATE TABLE IF NOT EXISTS categories (
    id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name  text NOT NULL UNIQUE CHECK (name <> '')
);

CREATE TABLE IF NOT EXISTS products (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         text          NOT NULL UNIQUE CHECK (name <> ''),
    category_id  bigint        NOT NULL REFERENCES categories (id),
    base_price   numeric(10,2) NOT NULL CHECK (base_price > 0)
);
CREATE INDEX IF NOT EXISTS products_category_id_idx ON products (category_id);

CREATE TABLE IF NOT EXISTS customers (
    id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name     text NOT NULL CHECK (name <> ''),
    country  text NOT NULL CHECK (country ~ '^[A-Z]{2}$')  -- ISO 3166-1 alpha-2, as upstream
);

-- The slowly-changing price list. base_price lives in products (as upstream); current_price drifts.
CREATE TABLE IF NOT EXISTS product_catalog (
    product_id     bigint        PRIMARY KEY REFERENCES products (id),
    current_price  numeric(10,2) NOT NULL CHECK (current_price > 0),
    updated_at     timestamptz   NOT NULL DEFAULT now()
);

-- The append-only order stream. One row = one order line (one product, a quantity, a unit price).
-- generator_run_id/generator_seq identify the event that produced the row (NULL for seed rows): the
-- generator numbers its orders 1, 2, 3 ... per run, so "no lost and no duplicated events" is checkable
-- (count = max(seq)) and enforced (a re-sent event would violate the unique constraint).
CREATE TABLE IF NOT EXISTS orders (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id       bigint        NOT NULL REFERENCES customers (id),
    product_id        bigint        NOT NULL REFERENCES products (id),
    quantity          integer       NOT NULL DEFAULT 1 CHECK (quantity > 0),
    unit_price        numeric(10,2) NOT NULL CHECK (unit_price > 0),
    ordered_at        timestamptz   NOT NULL DEFAULT now(),
    generator_run_id  uuid,
    generator_seq     bigint,
    CONSTRAINT orders_generator_event_key UNIQUE (generator_run_id, generator_seq),
    CONSTRAINT orders_generator_event_complete
        CHECK ((generator_run_id IS NULL) = (generator_seq IS NULL))
);
