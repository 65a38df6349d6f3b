-- fraud scenario: base tables.
--
-- Applied once by the bootstrap, as the database owner `demo` (plain SQL, no psql meta-commands).
-- Column names follow the upstream demo so that the seed's "Playing with the demo" queries run unchanged.
--
--   users ─────────┐
--   merchants ─────┼─► transactions (append-only stream, written by the generator)
--   merchant_risk_tier: slowly-changing lookup, one row per merchant (the generator rotates one tier
--                       about every 30 cycles)

CREATE TABLE IF NOT EXISTS users (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name              text    NOT NULL CHECK (name <> ''),
    country           text    NOT NULL CHECK (country ~ '^[A-Z]{2}$'),
    account_age_days  integer NOT NULL DEFAULT 365 CHECK (account_age_days >= 0)
);

CREATE TABLE IF NOT EXISTS merchants (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name      text NOT NULL UNIQUE CHECK (name <> ''),
    category  text NOT NULL CHECK (category <> ''),
    country   text NOT NULL CHECK (country ~ '^[A-Z]{2}$')
);

CREATE TABLE IF NOT EXISTS merchant_risk_tier (
    merchant_id  bigint      PRIMARY KEY REFERENCES merchants (id),
    tier         text        NOT NULL DEFAULT 'STANDARD' CHECK (tier IN ('STANDARD', 'ELEVATED', 'HIGH')),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- The append-only transaction stream. generator_run_id/generator_seq identify the generator event that
-- produced a row (NULL for seed rows), so lost or duplicated events are both prevented and checkable.
CREATE TABLE IF NOT EXISTS transactions (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id           bigint        NOT NULL REFERENCES users (id),
    merchant_id       bigint        NOT NULL REFERENCES merchants (id),
    amount            numeric(12,2) NOT NULL CHECK (amount > 0),
    txn_at            timestamptz   NOT NULL DEFAULT now(),
    generator_run_id  uuid,
    generator_seq     bigint,
    CONSTRAINT transactions_generator_event_key UNIQUE (generator_run_id, generator_seq),
    CONSTRAINT transactions_generator_event_complete
        CHECK ((generator_run_id IS NULL) = (generator_seq IS NULL))
);
