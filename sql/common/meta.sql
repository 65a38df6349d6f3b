-- Bookkeeping shared by every scenario database (owned by the scenario owner role `demo`).
CREATE SCHEMA IF NOT EXISTS demo_meta;

-- Which bootstrap steps ran, so a second bootstrap changes nothing (and notices an edited file).
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
