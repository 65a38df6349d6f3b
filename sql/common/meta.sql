-- Bookkeeping shared by every scenario database (owned by the scenario owner role `demo`).
CREATE SCHEMA IF NOT EXISTS demo_meta;

-- The owner's copy of which of its SQL files ran. The bootstrap's own ledger is demo_bootstrap.steps,
-- owned by the superuser; it reads this copy only over demo's own connection (databases bootstrapped
-- before the ledger moved, or a crash between the two records), never as a superuser.
CREATE TABLE IF NOT EXISTS demo_meta.bootstrap_steps (
    step        text PRIMARY KEY,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

-- The generator's commit ledger: one row per generator run, updated in the same transaction as each
-- batch of events. After a connection loss during COMMIT, the generator reads last_batch to learn whether
-- its batch landed, so an outage neither loses nor duplicates events.
CREATE TABLE IF NOT EXISTS demo_meta.generator_progress (
    run_id            uuid PRIMARY KEY,
    scenario          text NOT NULL,
    last_batch        bigint NOT NULL,
    events_committed  bigint NOT NULL,
    started_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- Each run's row belongs to the run alone: the generator draws a secret per run, never stored or shown,
-- and sets it in its session (demo.run_token); the row keeps its SHA-256. Row-level security lets the
-- writer role see, insert and update only rows whose run_key matches its session's secret, so one
-- generator (or anyone holding demo_writer's password) cannot read or rewrite another run's evidence.
-- The owner `demo` is not subject to it (it owns the table); readers have no privilege on it at all.
ALTER TABLE demo_meta.generator_progress ADD COLUMN IF NOT EXISTS run_key bytea;
ALTER TABLE demo_meta.generator_progress ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS own_run ON demo_meta.generator_progress;
CREATE POLICY own_run ON demo_meta.generator_progress
    USING (run_key = pg_catalog.sha256(pg_catalog.convert_to(pg_catalog.current_setting('demo.run_token', true), 'UTF8')))
    WITH CHECK (run_key = pg_catalog.sha256(pg_catalog.convert_to(pg_catalog.current_setting('demo.run_token', true), 'UTF8')));

-- One reconciliation of a StreamTable name at a time (the operator's handlers, its timers, a second operator):
-- a row lock on the name's row, which needs UPDATE privilege here, so only `demo` can take it. An advisory lock
-- would do the same, but any role may take any advisory key: a read-only role holding the operator's key would
-- stall its reconciliations.
CREATE TABLE IF NOT EXISTS demo_meta.operator_locks (
    name  text PRIMARY KEY
);
