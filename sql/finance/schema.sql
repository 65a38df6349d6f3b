-- finance scenario: base tables.
--
-- Applied once by the bootstrap, as the database owner `demo` (plain SQL, no psql meta-commands).
-- Column names serve the seed's "Playing with the finance demo" queries.
--
--   sectors ─► instruments ─┬─► market_prices (one row per instrument; the generator moves one per cycle)
--   portfolios ─► accounts ─┴─► trades (append-only stream, written by the generator)

CREATE TABLE IF NOT EXISTS sectors (
    id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name  text NOT NULL UNIQUE CHECK (name <> '')
);

-- reference_price: the level the price walk reverts to; volatility: daily return standard deviation.
CREATE TABLE IF NOT EXISTS instruments (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    symbol           text          NOT NULL UNIQUE CHECK (symbol ~ '^[A-Z.]{1,8}$'),
    name             text          NOT NULL CHECK (name <> ''),
    sector_id        bigint        NOT NULL REFERENCES sectors (id),
    asset_class      text          NOT NULL CHECK (asset_class IN ('EQUITY', 'ETF', 'BOND', 'COMMODITY')),
    reference_price  numeric(12,4) NOT NULL CHECK (reference_price > 0),
    volatility       numeric(6,4)  NOT NULL CHECK (volatility > 0 AND volatility < 1)
);

-- capital_limit: the regulatory capital the portfolio may consume.
CREATE TABLE IF NOT EXISTS portfolios (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name           text          NOT NULL UNIQUE CHECK (name <> ''),
    manager        text          NOT NULL,
    strategy       text          NOT NULL,
    capital_limit  numeric(16,2) NOT NULL CHECK (capital_limit > 0)
);

CREATE TABLE IF NOT EXISTS accounts (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          text   NOT NULL UNIQUE CHECK (name <> ''),
    portfolio_id  bigint NOT NULL REFERENCES portfolios (id)
);

-- Quotes: bid < ask always (the generator keeps a spread of at least 2 ticks), mid is derived.
CREATE TABLE IF NOT EXISTS market_prices (
    instrument_id  bigint        PRIMARY KEY REFERENCES instruments (id),
    bid            numeric(12,4) NOT NULL CHECK (bid > 0),
    ask            numeric(12,4) NOT NULL,
    mid            numeric(12,4) GENERATED ALWAYS AS (round((bid + ask) / 2, 4)) STORED,
    updated_at     timestamptz   NOT NULL DEFAULT now(),
    CONSTRAINT market_prices_bid_below_ask CHECK (bid < ask)
);

-- The trade stream: quantity > 0 buys, < 0 sells; price is the fill price.
CREATE TABLE IF NOT EXISTS trades (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id        bigint        NOT NULL REFERENCES accounts (id),
    instrument_id     bigint        NOT NULL REFERENCES instruments (id),
    quantity          numeric(14,4) NOT NULL CHECK (quantity <> 0),
    price             numeric(12,4) NOT NULL CHECK (price > 0),
    traded_at         timestamptz   NOT NULL DEFAULT now(),
    generator_run_id  uuid,
    generator_seq     bigint,
    CONSTRAINT trades_generator_event_key UNIQUE (generator_run_id, generator_seq),
    CONSTRAINT trades_generator_event_complete CHECK ((generator_run_id IS NULL) = (generator_seq IS NULL))
);
