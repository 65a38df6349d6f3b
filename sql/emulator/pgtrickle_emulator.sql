-- pg_trickle emulator: pg_trickle's SQL surface for stock PostgreSQL 18.
--
-- For machines where the pg_trickle extension cannot be installed (CI, tests, `make preview`). Function
-- names, argument names/order/defaults and catalog columns follow pg_trickle (0.67 / 0.108 common surface,
-- see ../shared/reference/pg_trickle-api.md). Every refresh is a full recomputation whose row differences
-- are applied to the stream table; the catalog and the history record what pg_trickle 0.67 records for the
-- same refresh, and a figure only the engine measures is NULL. pgtrickle.version() says "emulator".
-- See README.md beside this file; CONFORMANCE.md lists each pg_trickle behaviour the project relies on,
-- its source, its test, and whether the emulator does the same.

CREATE SCHEMA pgtrickle;
COMMENT ON SCHEMA pgtrickle IS 'pg_trickle emulator (incremental aggregates, otherwise recomputation with row-level diff); not the real extension';

-- ---------------------------------------------------------------------------------------------------
-- Catalog (columns, types, defaults and CHECK sets of pg_trickle 0.67)
-- ---------------------------------------------------------------------------------------------------
CREATE TABLE pgtrickle.pgt_stream_tables (
    pgt_id                     bigserial PRIMARY KEY,
    pgt_relid                  oid NOT NULL UNIQUE,
    pgt_name                   text NOT NULL,
    pgt_schema                 text NOT NULL,
    defining_query             text NOT NULL,
    original_query             text,
    schedule                   text,
    refresh_mode               text NOT NULL DEFAULT 'DIFFERENTIAL'
                               CHECK (refresh_mode IN ('FULL', 'DIFFERENTIAL', 'IMMEDIATE')),
    status                     text NOT NULL DEFAULT 'INITIALIZING'
                               CHECK (status IN ('INITIALIZING', 'ACTIVE', 'SUSPENDED', 'ERROR')),
    is_populated               boolean NOT NULL DEFAULT false,
    data_timestamp             timestamptz,
    frontier                   jsonb,
    last_refresh_at            timestamptz,
    consecutive_errors         integer NOT NULL DEFAULT 0,
    needs_reinit               boolean NOT NULL DEFAULT false,
    auto_threshold             double precision,
    last_full_ms               double precision,
    functions_used             text[],
    topk_limit                 integer,
    topk_order_by              text,
    topk_offset                integer,
    diamond_consistency        text NOT NULL DEFAULT 'atomic' CHECK (diamond_consistency IN ('none', 'atomic')),
    diamond_schedule_policy    text NOT NULL DEFAULT 'fastest'
                               CHECK (diamond_schedule_policy IN ('fastest', 'slowest')),
    has_keyless_source         boolean NOT NULL DEFAULT false,
    function_hashes            text,
    requested_cdc_mode         text CHECK (requested_cdc_mode IN ('auto', 'trigger', 'wal')),
    is_append_only             boolean NOT NULL DEFAULT false,
    scc_id                     integer,
    last_fixpoint_iterations   integer,
    max_differential_joins     integer,
    max_delta_fraction         double precision,
    pooler_compatibility_mode  boolean NOT NULL DEFAULT false,
    refresh_tier               text NOT NULL DEFAULT 'hot' CHECK (refresh_tier IN ('hot', 'warm', 'cold', 'frozen')),
    effective_refresh_mode     text,  -- no CHECK in 0.67 (create writes FULL, DIFFERENTIAL, IMMEDIATE or TOP_K)
    fuse_mode                  text NOT NULL DEFAULT 'off' CHECK (fuse_mode IN ('off', 'on', 'auto')),
    fuse_state                 text NOT NULL DEFAULT 'armed' CHECK (fuse_state IN ('armed', 'blown', 'disabled')),
    fuse_ceiling               bigint,
    fuse_sensitivity           integer,
    blown_at                   timestamptz,
    blow_reason                text,
    last_error_message         text,
    last_error_at              timestamptz,
    downstream_publication_name text,
    freshness_deadline_ms      bigint,
    st_partition_key           text,
    st_placement               text NOT NULL DEFAULT 'local',
    temporal_mode              boolean NOT NULL DEFAULT false,
    storage_backend            text NOT NULL DEFAULT 'heap',
    post_refresh_action        text NOT NULL DEFAULT 'none'
                               CHECK (post_refresh_action IN ('none', 'analyze', 'reindex', 'reindex_if_drift')),
    reindex_drift_threshold    double precision
                               CHECK (reindex_drift_threshold IS NULL OR (reindex_drift_threshold > 0 AND reindex_drift_threshold <= 1.0)),
    rows_changed_since_last_reindex bigint NOT NULL DEFAULT 0,
    last_reindex_at            timestamptz,
    column_lineage             jsonb,
    defining_query_hash        bigint NOT NULL DEFAULT 0,
    ducklake_compaction_policy text DEFAULT NULL CHECK (ducklake_compaction_policy IN ('fallback', 'error')),
    ducklake_sink_mode         text DEFAULT NULL
                               CHECK (ducklake_sink_mode IS NULL OR ducklake_sink_mode IN ('append', 'replace')),
    ducklake_sink_path         text DEFAULT NULL,
    ducklake_sink_table_id     bigint DEFAULT NULL,
    created_at                 timestamptz NOT NULL DEFAULT now(),
    updated_at                 timestamptz NOT NULL DEFAULT now(),
    UNIQUE (pgt_schema, pgt_name)
);

CREATE TABLE pgtrickle.pgt_refresh_history (
    refresh_id          bigserial PRIMARY KEY,
    pgt_id              bigint NOT NULL REFERENCES pgtrickle.pgt_stream_tables (pgt_id) ON DELETE CASCADE,
    data_timestamp      timestamptz NOT NULL,
    start_time          timestamptz NOT NULL,
    end_time            timestamptz,
    action              text NOT NULL CHECK (action IN ('NO_DATA', 'FULL', 'DIFFERENTIAL', 'REINITIALIZE', 'SKIP')),
    rows_inserted       bigint NOT NULL DEFAULT 0,
    rows_deleted        bigint NOT NULL DEFAULT 0,
    delta_row_count     bigint NOT NULL DEFAULT 0,
    merge_strategy_used text,
    was_full_fallback   boolean NOT NULL DEFAULT false,
    error_message       text,
    status              text NOT NULL CHECK (status IN ('RUNNING', 'COMPLETED', 'FAILED', 'SKIPPED')),
    initiated_by        text CHECK (initiated_by IN ('SCHEDULER', 'MANUAL', 'INITIAL', 'SELF_MONITOR')),
    freshness_deadline  timestamptz,
    tick_watermark_lsn  pg_lsn,
    fixpoint_iteration  integer
);
-- Readers never scan the growing history: per-table newest-first reads, global newest-first reads.
CREATE INDEX pgt_refresh_history_pgt_start_idx ON pgtrickle.pgt_refresh_history (pgt_id, start_time DESC);
CREATE INDEX pgt_refresh_history_start_idx ON pgtrickle.pgt_refresh_history (start_time DESC);
-- refresh_efficiency() and recommend_refresh_mode() read "the latest 100 COMPLETED rows of action X" and "the
-- latest 100 COMPLETED rows" per stream table (src/diagnostics.rs::gather_history_stats): these two partial
-- indexes make both bounded reads, however many rows (or no DIFFERENTIAL rows at all) the history holds.
CREATE INDEX pgt_refresh_history_completed_action_idx ON pgtrickle.pgt_refresh_history (pgt_id, action, start_time DESC)
    INCLUDE (end_time) WHERE status = 'COMPLETED';
CREATE INDEX pgt_refresh_history_completed_idx ON pgtrickle.pgt_refresh_history (pgt_id, start_time DESC)
    INCLUDE (rows_inserted, rows_deleted) WHERE status = 'COMPLETED';
-- These reads compare pgt_id with a parameter (one stream table of a LATERAL join): planned with the true
-- handful of distinct pgt_ids, a global newest-first scan filtering pgt_id looks cheaper, and is unbounded
-- for a table refreshed rarely among busy ones. Planning as if ids were many keeps the per-table ranges.
ALTER TABLE pgtrickle.pgt_refresh_history ALTER COLUMN pgt_id SET (n_distinct = 10000);

CREATE TABLE pgtrickle.pgt_dependencies (
    pgt_id                 bigint NOT NULL REFERENCES pgtrickle.pgt_stream_tables (pgt_id) ON DELETE CASCADE,
    source_relid           oid NOT NULL,
    source_type            text NOT NULL
                           CHECK (source_type IN ('TABLE', 'STREAM_TABLE', 'VIEW', 'MATVIEW', 'FOREIGN_TABLE')),
    columns_used           text[],
    column_snapshot        jsonb,
    schema_fingerprint     text,
    cdc_mode               text NOT NULL DEFAULT 'TRIGGER'
                           CHECK (cdc_mode IN ('TRIGGER', 'TRANSITIONING', 'WAL', 'DUCKLAKE_CHANGE_FEED')),
    slot_name              text,
    decoder_confirmed_lsn  pg_lsn,
    transition_started_at  timestamptz,
    source_stable_name     text,
    source_placement       text NOT NULL DEFAULT 'local',
    PRIMARY KEY (pgt_id, source_relid)
);
CREATE INDEX pgt_dependencies_source_idx ON pgtrickle.pgt_dependencies (source_relid);

-- Change buffers live in their own schema, closed to PUBLIC as in pg_trickle's extension script (src/lib.rs,
-- "F51": nobody may inject bogus changes that the next refresh would apply). create_stream_table creates the
-- buffer table and the capture trigger functions there as the calling role, so that role needs USAGE and
-- CREATE on this schema (granted by whoever installs the engine), exactly as with pg_trickle 0.67.
CREATE SCHEMA pgtrickle_changes;
REVOKE ALL ON SCHEMA pgtrickle_changes FROM PUBLIC;

-- Which sources have a change buffer, and which stream tables read it (src/lib.rs, pgt_change_tracking).
CREATE TABLE pgtrickle.pgt_change_tracking (
    source_relid        oid PRIMARY KEY,
    slot_name           text NOT NULL,
    last_consumed_lsn   pg_lsn,
    tracked_by_pgt_ids  bigint[],
    source_stable_name  text,
    source_placement    text NOT NULL DEFAULT 'local',
    frontier_per_node   jsonb
);

-- ---------------------------------------------------------------------------------------------------
-- Emulator-private state (not part of pg_trickle)
-- ---------------------------------------------------------------------------------------------------
-- Change capture: statement-level triggers on every source bump a per-source sequence and count rows.
CREATE TABLE pgtrickle.emulator_source_changes (
    source_relid  oid PRIMARY KEY,
    change_seq    bigint NOT NULL DEFAULT 0,
    changed_rows  bigint NOT NULL DEFAULT 0
);
-- Running totals per stream table, so monitoring reads cost O(1) however long the history is.
CREATE TABLE pgtrickle.emulator_stats (
    pgt_id           bigint PRIMARY KEY REFERENCES pgtrickle.pgt_stream_tables (pgt_id) ON DELETE CASCADE,
    row_count        bigint NOT NULL DEFAULT 0,
    total_completed  bigint NOT NULL DEFAULT 0,
    total_failed     bigint NOT NULL DEFAULT 0,
    diff_count       bigint NOT NULL DEFAULT 0,
    full_count       bigint NOT NULL DEFAULT 0,
    rows_inserted    bigint NOT NULL DEFAULT 0,
    rows_deleted     bigint NOT NULL DEFAULT 0,
    sum_duration_ms  double precision NOT NULL DEFAULT 0
);

-- Scheduler and refresh locks are row locks, never advisory locks: any role may take any advisory lock
-- key, so a read-only role holding the scheduler's key (or a table's) could stall the whole DAG (issue 14).
-- Locking a row (SELECT ... FOR UPDATE / FOR SHARE) needs UPDATE privilege on its table, which only the
-- owner role (and superusers) hold on the pgtrickle catalog; readers have SELECT only.
--   - one refresh of a stream table at a time: its pgt_stream_tables row, FOR NO KEY UPDATE SKIP LOCKED,
--     held to the end of the refreshing transaction (pg_trickle 0.67 takes a row lock on the same row,
--     FOR UPDATE SKIP LOCKED, besides an advisory one: src/api/refresh_ops.rs, refresh_stream_table_impl,
--     "PB1 row-lock");
--   - up to pg_trickle.max_concurrent_refreshes scheduler sessions per database (default 4, range 1..32 as
--     the engine's GUC: src/config.rs, PGS_MAX_CONCURRENT_REFRESHES, the per-database dispatch cap of
--     src/scheduler/dispatch.rs::parallel_dispatch_tick): one lease row per slot naming its session's backend
--     (pid and backend start), claimed under the slot rows' locks; a lease whose backend is gone is free. A
--     session lock cannot be a row lock (the scheduler commits after every refresh), hence the leases;
--   - a scheduled refresh of a stream table holds FOR SHARE on the rows of its upstream stream tables (taken
--     SKIP LOCKED; skipped when one is held), as src/scheduler/mod.rs::refresh_single_st ("ST-on-ST safety")
--     does: a downstream is never refreshed while its upstream is, nor an upstream while its downstream is;
--   - the consumption of a source's change buffer holds its pgt_change_tracking row FOR UPDATE (taken in
--     source_relid order): refreshes of two readers of one source never delete its rows at the same time.
CREATE TABLE pgtrickle.emulator_scheduler (
    slot           integer PRIMARY KEY CHECK (slot BETWEEN 1 AND 32),
    pid            integer,
    backend_start  timestamptz,
    claimed_at     timestamptz
);
INSERT INTO pgtrickle.emulator_scheduler (slot) SELECT generate_series(1, 32);

-- Does a lease name a live backend of this database? (Another role's backend_start is hidden from
-- non-superusers: such a lease counts as live.)
CREATE FUNCTION pgtrickle.emulator_lease_live(p_pid integer, p_backend_start timestamptz) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT p_pid IS NOT NULL AND EXISTS (
        SELECT 1 FROM pg_catalog.pg_stat_activity a
         WHERE a.pid = p_pid AND a.datname = pg_catalog.current_database()
           AND (a.backend_start IS NULL OR a.backend_start = p_backend_start))
$$;

-- True when at least one scheduler lease names a live backend of this database.
CREATE FUNCTION pgtrickle.emulator_scheduler_running() RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM pgtrickle.emulator_scheduler s
                    WHERE pgtrickle.emulator_lease_live(s.pid, s.backend_start))
$$;

-- The number of live scheduler sessions of this database.
CREATE FUNCTION pgtrickle.emulator_scheduler_sessions() RETURNS integer
LANGUAGE sql STABLE AS $$
    SELECT count(*)::integer FROM pgtrickle.emulator_scheduler s
     WHERE pgtrickle.emulator_lease_live(s.pid, s.backend_start)
$$;

-- pg_trickle.max_concurrent_refreshes as this session sees it: 4 when unset; outside 1..32 (the GUC's range,
-- src/config.rs) an error naming the setting, as PostgreSQL refuses such a value for the engine's GUC.
CREATE FUNCTION pgtrickle.emulator_max_concurrent_refreshes() RETURNS integer
LANGUAGE plpgsql STABLE AS $$
DECLARE
    raw text := nullif(btrim(current_setting('pg_trickle.max_concurrent_refreshes', true)), '');
    bound integer;
BEGIN
    IF raw IS NULL THEN
        RETURN 4;
    END IF;
    IF raw !~ '^[+-]?[0-9]{1,9}$' THEN
        RAISE EXCEPTION 'invalid value for parameter "pg_trickle.max_concurrent_refreshes": "%"', raw
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    bound := raw::integer;
    IF bound < 1 OR bound > 32 THEN
        RAISE EXCEPTION '% is outside the valid range for parameter "pg_trickle.max_concurrent_refreshes" (1 .. 32)', bound
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN bound;
END $$;

-- Takes a stream table's refresh lock for the rest of the transaction; false when another transaction
-- holds it (a refresh, or a change of the table's catalog row in progress).
CREATE FUNCTION pgtrickle.emulator_try_refresh_lock(p_pgt_id bigint) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    -- NO KEY UPDATE: foreign keys to the row (history rows being inserted) take KEY SHARE and pass.
    PERFORM 1 FROM pgtrickle.pgt_stream_tables WHERE pgt_id = p_pgt_id FOR NO KEY UPDATE SKIP LOCKED;
    RETURN FOUND;
END $$;

CREATE FUNCTION pgtrickle.version() RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT 'emulator 0.1.0 of the pg_trickle 0.67 SQL surface (incremental aggregates, otherwise recomputation with row-level diff; PostgreSQL '
           || current_setting('server_version') || ')'
$$;

-- ---------------------------------------------------------------------------------------------------
-- Helpers
-- ---------------------------------------------------------------------------------------------------
-- 'name' or 'schema.name' -> (schema, name); bare names resolve with current_schema() like pg_trickle.
CREATE FUNCTION pgtrickle.emulator_split_name(p_name text, OUT schema_name text, OUT table_name text)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    parts text[];
BEGIN
    IF p_name IS NULL OR btrim(p_name) = '' THEN
        RAISE EXCEPTION 'stream table name must not be empty';
    END IF;
    parts := parse_ident(p_name);
    IF array_length(parts, 1) = 1 THEN
        schema_name := current_schema();
        table_name := parts[1];
    ELSIF array_length(parts, 1) = 2 THEN
        schema_name := parts[1];
        table_name := parts[2];
    ELSE
        RAISE EXCEPTION 'invalid stream table name "%"', p_name;
    END IF;
END $$;

CREATE FUNCTION pgtrickle.emulator_lookup(p_name text) RETURNS pgtrickle.pgt_stream_tables
LANGUAGE plpgsql STABLE AS $$
DECLARE
    n record;
    st pgtrickle.pgt_stream_tables;
BEGIN
    n := pgtrickle.emulator_split_name(p_name);
    SELECT * INTO st FROM pgtrickle.pgt_stream_tables s
     WHERE s.pgt_schema = n.schema_name AND s.pgt_name = n.table_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'stream table "%.%" does not exist', n.schema_name, n.table_name
            USING ERRCODE = 'undefined_table';
    END IF;
    RETURN st;
END $$;

-- Schedule text -> seconds, as src/api/helpers.rs parse_duration: a bare integer is seconds, else
-- <n><unit>... with the units s, m, h, d, w (case-sensitive). NULL for NULL, 'calculated' and cron
-- (anything starting with '@' or containing a space). Errors are pg_trickle's InvalidArgument (22023).
CREATE FUNCTION pgtrickle.emulator_schedule_seconds(p_schedule text) RETURNS double precision
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    s text := btrim(p_schedule, E' \t\n\r\f');
    total double precision := 0;
    m text[];
BEGIN
    IF p_schedule IS NULL OR lower(s) = 'calculated' OR s LIKE '@%' OR s LIKE '% %' THEN
        RETURN NULL;
    END IF;
    IF s = '' THEN
        RAISE EXCEPTION 'invalid argument: schedule cannot be empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF s ~ '^[+-]?[0-9]+$' THEN
        IF s LIKE '-%' THEN
            RAISE EXCEPTION 'invalid argument: schedule cannot be negative: ''%''', s
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        RETURN s::double precision;
    END IF;
    m := regexp_match(s, '[^0-9smhdw]');
    IF m IS NOT NULL THEN
        RAISE EXCEPTION 'invalid argument: invalid duration unit ''%'' in ''%''. Use s (seconds), m (minutes), h (hours), d (days), w (weeks). Example: ''5m'', ''1h30m'', ''2d''', m[1], s
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    m := regexp_match(s, '(^|[smhdw])([smhdw])');
    IF m IS NOT NULL THEN
        RAISE EXCEPTION 'invalid argument: expected a number before ''%'' in duration ''%''', m[2], s
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    m := regexp_match(s, '([0-9]+)$');
    IF m IS NOT NULL THEN
        RAISE EXCEPTION 'invalid argument: trailing digits ''%'' without a unit in duration ''%''. Append s, m, h, d, or w. Example: ''1h30m''', m[1], s
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR m IN SELECT regexp_matches(s, '([0-9]+)([smhdw])', 'g') LOOP
        total := total + m[1]::double precision * CASE m[2]
            WHEN 's' THEN 1 WHEN 'm' THEN 60 WHEN 'h' THEN 3600 WHEN 'd' THEN 86400 ELSE 604800 END;
    END LOOP;
    RETURN total;
END $$;

-- A cron expression as src/api/helpers.rs validate_cron accepts it: 5 or 6 fields (or an @ nickname),
-- each field checked for its range (croner's grammar: *, ?, n, n-m, x/step, lists, month and weekday
-- names, L/W/# in the day fields).
CREATE FUNCTION pgtrickle.emulator_validate_cron(p_expr text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    fields text[];
    names text[] := ARRAY['second', 'minute', 'hour', 'day of month', 'month', 'day of week'];
    lows integer[] := ARRAY[0, 0, 0, 1, 1, 0];
    highs integer[] := ARRAY[59, 59, 23, 31, 12, 7];
    offset_ integer;
    i integer;
    k integer;
    item text;
    part text;
    field text;
    v text;
    problem text;
BEGIN
    IF p_expr LIKE '@%' THEN
        IF lower(p_expr) NOT IN ('@yearly', '@annually', '@monthly', '@weekly', '@daily', '@midnight', '@hourly') THEN
            problem := 'unknown nickname ' || p_expr;
        END IF;
    ELSE
        fields := regexp_split_to_array(btrim(p_expr), '\s+');
        IF array_length(fields, 1) NOT IN (5, 6) THEN
            RAISE EXCEPTION 'invalid argument: invalid cron expression ''%'': expected 5 or 6 fields, got %', p_expr, array_length(fields, 1)
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        offset_ := 7 - array_length(fields, 1);  -- 5 fields start at "minute"
        FOR i IN 1 .. array_length(fields, 1) LOOP
            k := i + offset_ - 1;
            field := upper(fields[i]);
            IF k = 5 THEN
                field := regexp_replace(field, '\m(JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|OCT|NOV|DEC)\M', '1', 'g');
            ELSIF k = 6 THEN
                field := regexp_replace(field, '\m(SUN|MON|TUE|WED|THU|FRI|SAT)\M', '1', 'g');
            END IF;
            FOREACH item IN ARRAY string_to_array(field, ',') LOOP
                part := item;
                IF part ~ '/' THEN
                    IF split_part(part, '/', 2) !~ '^[0-9]+$' OR split_part(part, '/', 2)::integer = 0 THEN
                        problem := format('invalid step in %s field: %s', names[k], fields[i]);
                    END IF;
                    part := split_part(part, '/', 1);
                END IF;
                IF part IN ('*') OR (part = '?' AND k IN (4, 6)) OR (part = 'L' AND k = 4) THEN
                    CONTINUE;
                END IF;
                IF k = 4 THEN
                    part := regexp_replace(part, '^([0-9]+)W$', '\1');
                ELSIF k = 6 THEN
                    part := regexp_replace(regexp_replace(part, '^([0-9]+)L$', '\1'), '^([0-9]+)#[1-5]$', '\1');
                END IF;
                IF part !~ '^[0-9]+(-[0-9]+)?$' THEN
                    problem := coalesce(problem, format('invalid %s field: %s', names[k], fields[i]));
                    CONTINUE;
                END IF;
                FOREACH v IN ARRAY string_to_array(part, '-') LOOP
                    IF length(v) > 9 OR v::integer < lows[k] OR v::integer > highs[k] THEN
                        problem := coalesce(problem, format('%s field value %s out of range %s-%s', names[k], v, lows[k], highs[k]));
                    END IF;
                END LOOP;
            END LOOP;
        END LOOP;
    END IF;
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION 'invalid argument: invalid cron expression ''%'': %', p_expr, problem
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END $$;

-- Validates a schedule and returns what the catalog stores (NULL = calculated), as
-- src/api/alter.rs create_stream_table_impl + src/api/helpers.rs parse_schedule.
CREATE FUNCTION pgtrickle.emulator_normalize_schedule(p_schedule text) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    s text := btrim(p_schedule, E' \t\n\r\f');
    seconds double precision;
BEGIN
    IF p_schedule IS NULL THEN
        RAISE EXCEPTION 'invalid argument: use ''calculated'' instead of NULL to set CALCULATED schedule'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF lower(s) = 'calculated' THEN
        RETURN NULL;
    END IF;
    IF s = '' THEN
        RAISE EXCEPTION 'invalid argument: schedule cannot be empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF s LIKE '@%' OR s LIKE '% %' THEN
        PERFORM pgtrickle.emulator_validate_cron(s);
        RETURN s;
    END IF;
    seconds := pgtrickle.emulator_schedule_seconds(s);
    IF seconds < 1 THEN  -- pg_trickle.min_schedule_seconds (default 1)
        RAISE EXCEPTION 'invalid argument: schedule must be at least 1s, got %s', seconds
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN s;
END $$;

-- The requested mode as src/dag.rs RefreshMode::from_str reads it (upper-cased, not trimmed;
-- INCREMENTAL is DIFFERENTIAL). AUTO is returned as 'AUTO': create_stream_table resolves it.
CREATE FUNCTION pgtrickle.emulator_normalize_mode(p_mode text) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    m text := upper(coalesce(p_mode, 'AUTO'));
BEGIN
    IF m = 'INCREMENTAL' THEN
        m := 'DIFFERENTIAL';
    END IF;
    IF m NOT IN ('AUTO', 'FULL', 'DIFFERENTIAL', 'IMMEDIATE') THEN
        RAISE EXCEPTION 'invalid argument: unknown refresh mode: %. Must be ''AUTO'', ''FULL'', ''DIFFERENTIAL'', or ''IMMEDIATE''', m
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN m;
END $$;

CREATE FUNCTION pgtrickle.emulator_check_choice(p_param text, p_value text, p_allowed text[]) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF p_value IS NOT NULL AND NOT lower(p_value) = ANY (p_allowed) THEN
        RAISE EXCEPTION 'invalid % "%": allowed values are %', p_param, p_value, array_to_string(p_allowed, ', ')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN lower(p_value);
END $$;

-- The relations a query reads, found through PostgreSQL's dependency catalog: the query becomes a
-- temporary view whose rewrite rule depends on every relation (and column) it references. Views are
-- inlined (their own sources are followed), as pg_trickle does.
CREATE FUNCTION pgtrickle.emulator_relation_sources(p_view oid)
RETURNS TABLE (source_relid oid, relkind "char", columns_used text[])
LANGUAGE sql STABLE AS $$
    WITH RECURSIVE refs(view_oid, relid, attnum) AS (
        SELECT r.ev_class, d.refobjid, d.refobjsubid
          FROM pg_catalog.pg_rewrite r
          JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.objid = r.oid
                                     AND d.refclassid = 'pg_catalog.pg_class'::regclass
         WHERE r.ev_class = p_view AND d.refobjid <> p_view
        UNION
        SELECT r.ev_class, d.refobjid, d.refobjsubid
          FROM refs
          JOIN pg_catalog.pg_class v ON v.oid = refs.relid AND v.relkind = 'v'
          JOIN pg_catalog.pg_rewrite r ON r.ev_class = v.oid
          JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.objid = r.oid
                                     AND d.refclassid = 'pg_catalog.pg_class'::regclass
         WHERE d.refobjid <> v.oid
    )
    SELECT refs.relid, c.relkind,
           array_agg(DISTINCT a.attname::text ORDER BY a.attname::text) FILTER (WHERE a.attname IS NOT NULL)
      FROM refs
      JOIN pg_catalog.pg_class c ON c.oid = refs.relid
      LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = refs.relid AND a.attnum = refs.attnum AND refs.attnum > 0
     WHERE c.relkind IN ('r', 'p', 'm', 'f')
     GROUP BY refs.relid, c.relkind
$$;

-- Change capture of stream tables read by other stream tables. pg_trickle blocks direct DML on a stream
-- table's storage (src/api/helpers.rs, EC-25/EC-26 guard triggers), so only its own refreshes change it and
-- the refresh records what it changed: emulator_finish_refresh bumps the storage's change sequence by the rows
-- it wrote, and these statement-level triggers (no transition table: a FULL refresh of a million rows is not
-- copied into a tuplestore) stay silent during that refresh (pgtrickle.emulator_refreshing = the storage's
-- oid, transaction-local). Any other statement on the storage counts as one change of unknown size.
-- SECURITY DEFINER (a writer role fires them); search_path pg_catalog, then pg_temp explicitly last: pgtrickle
-- is writable by the owner role, and every name of another schema is written out (issue 14).
CREATE FUNCTION pgtrickle.emulator_capture_statement() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF pg_catalog.current_setting('pgtrickle.emulator_refreshing', true) IS DISTINCT FROM TG_RELID::text THEN
        INSERT INTO pgtrickle.emulator_source_changes AS c (source_relid, change_seq, changed_rows)
        VALUES (TG_RELID, 1, 0)
        ON CONFLICT (source_relid) DO UPDATE SET change_seq = c.change_seq + 1;
    END IF;
    RETURN NULL;
END $$;

-- A refresh's own record of the rows it wrote into a stream table's storage.
CREATE FUNCTION pgtrickle.emulator_record_storage_change(p_relid oid, p_rows bigint) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO pgtrickle.emulator_source_changes AS c (source_relid, change_seq, changed_rows)
    VALUES (p_relid, 1, p_rows)
    ON CONFLICT (source_relid) DO UPDATE
       SET change_seq = c.change_seq + 1, changed_rows = c.changed_rows + EXCLUDED.changed_rows
$$;

CREATE FUNCTION pgtrickle.emulator_attach_capture(p_relid oid) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    target text := p_relid::regclass::text;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_trigger WHERE tgrelid = p_relid AND tgname = 'pgt_emulator_cdc_ins') THEN
        RETURN;
    END IF;
    EXECUTE format('CREATE TRIGGER pgt_emulator_cdc_ins AFTER INSERT ON %s'
                   ' FOR EACH STATEMENT EXECUTE FUNCTION pgtrickle.emulator_capture_statement()', target);
    EXECUTE format('CREATE TRIGGER pgt_emulator_cdc_upd AFTER UPDATE ON %s'
                   ' FOR EACH STATEMENT EXECUTE FUNCTION pgtrickle.emulator_capture_statement()', target);
    EXECUTE format('CREATE TRIGGER pgt_emulator_cdc_del AFTER DELETE ON %s'
                   ' FOR EACH STATEMENT EXECUTE FUNCTION pgtrickle.emulator_capture_statement()', target);
    EXECUTE format('CREATE TRIGGER pgt_emulator_cdc_trunc AFTER TRUNCATE ON %s'
                   ' FOR EACH STATEMENT EXECUTE FUNCTION pgtrickle.emulator_capture_statement()', target);
    INSERT INTO pgtrickle.emulator_source_changes (source_relid) VALUES (p_relid) ON CONFLICT DO NOTHING;
END $$;

CREATE FUNCTION pgtrickle.emulator_detach_capture_if_unused(p_relid oid) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    target text;
BEGIN
    PERFORM pgtrickle.emulator_sync_buffer(p_relid);
    IF EXISTS (SELECT 1 FROM pgtrickle.pgt_dependencies WHERE source_relid = p_relid) THEN
        RETURN;
    END IF;
    IF EXISTS (SELECT 1 FROM pgtrickle.pgt_stream_tables WHERE pgt_relid = p_relid) THEN
        RETURN;  -- a stream table's own storage keeps its capture while it exists
    END IF;
    SELECT c.oid::regclass::text INTO target FROM pg_catalog.pg_class c WHERE c.oid = p_relid;
    IF target IS NOT NULL THEN
        EXECUTE format('DROP TRIGGER IF EXISTS pgt_emulator_cdc_ins ON %s', target);
        EXECUTE format('DROP TRIGGER IF EXISTS pgt_emulator_cdc_upd ON %s', target);
        EXECUTE format('DROP TRIGGER IF EXISTS pgt_emulator_cdc_del ON %s', target);
        EXECUTE format('DROP TRIGGER IF EXISTS pgt_emulator_cdc_trunc ON %s', target);
    END IF;
    DELETE FROM pgtrickle.emulator_source_changes WHERE source_relid = p_relid;
END $$;

-- ---------------------------------------------------------------------------------------------------
-- Change buffers (pg_trickle's pgtrickle_changes.changes_<stable name>, trigger-based CDC)
-- ---------------------------------------------------------------------------------------------------
-- Stable names: lower_hex(xxh64('schema.table', seed 0x517cc1b727220a95)), as pg_trickle names buffers,
-- capture triggers and their functions (src/citus.rs, stable_hash and source_stable_name). XXH64 over
-- numeric (unsigned 64-bit values) and bit(64) (xor, shifts).
CREATE FUNCTION pgtrickle.emulator_u64_bits(x numeric) RETURNS bit(64)
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT (CASE WHEN x >= 9223372036854775808 THEN x - 18446744073709551616 ELSE x END)::bigint::bit(64)
$$;

CREATE FUNCTION pgtrickle.emulator_bits_u64(b bit(64)) RETURNS numeric
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT CASE WHEN b::bigint < 0 THEN b::bigint + 18446744073709551616 ELSE b::bigint::numeric END
$$;

CREATE FUNCTION pgtrickle.emulator_xxh64(p_data bytea, p_seed numeric) RETURNS numeric
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    m constant numeric := 18446744073709551616;
    p1 constant numeric := 11400714785074694791;
    p2 constant numeric := 14029467366897019727;
    p3 constant numeric := 1609587929392839161;
    p4 constant numeric := 9650029242287828579;
    p5 constant numeric := 2870177450012600261;
    len constant integer := length(p_data);
    pos integer := 0;
    v numeric[];
    h numeric;
    lane numeric;
    k integer;
    j integer;
BEGIN
    IF len >= 32 THEN
        v := ARRAY[mod(p_seed + p1 + p2, m), mod(p_seed + p2, m), p_seed, mod(p_seed - p1 + m, m)];
        WHILE pos <= len - 32 LOOP
            FOR j IN 1 .. 4 LOOP
                lane := 0;
                FOR k IN REVERSE 7 .. 0 LOOP
                    lane := lane * 256 + get_byte(p_data, pos + k);
                END LOOP;
                v[j] := pgtrickle.emulator_xxh64_round(v[j], lane);
                pos := pos + 8;
            END LOOP;
        END LOOP;
        h := mod(pgtrickle.emulator_rotl64(v[1], 1) + pgtrickle.emulator_rotl64(v[2], 7)
                 + pgtrickle.emulator_rotl64(v[3], 12) + pgtrickle.emulator_rotl64(v[4], 18), m);
        FOR j IN 1 .. 4 LOOP
            h := pgtrickle.emulator_bits_u64(pgtrickle.emulator_u64_bits(h)
                    # pgtrickle.emulator_u64_bits(pgtrickle.emulator_xxh64_round(0, v[j])));
            h := mod(h * p1 + p4, m);
        END LOOP;
    ELSE
        h := mod(p_seed + p5, m);
    END IF;
    h := mod(h + len, m);
    WHILE pos + 8 <= len LOOP
        lane := 0;
        FOR k IN REVERSE 7 .. 0 LOOP
            lane := lane * 256 + get_byte(p_data, pos + k);
        END LOOP;
        h := pgtrickle.emulator_bits_u64(pgtrickle.emulator_u64_bits(h)
                # pgtrickle.emulator_u64_bits(pgtrickle.emulator_xxh64_round(0, lane)));
        h := mod(pgtrickle.emulator_rotl64(h, 27) * p1 + p4, m);
        pos := pos + 8;
    END LOOP;
    IF pos + 4 <= len THEN
        lane := 0;
        FOR k IN REVERSE 3 .. 0 LOOP
            lane := lane * 256 + get_byte(p_data, pos + k);
        END LOOP;
        h := pgtrickle.emulator_bits_u64(pgtrickle.emulator_u64_bits(h) # pgtrickle.emulator_u64_bits(mod(lane * p1, m)));
        h := mod(pgtrickle.emulator_rotl64(h, 23) * p2 + p3, m);
        pos := pos + 4;
    END IF;
    WHILE pos < len LOOP
        h := pgtrickle.emulator_bits_u64(pgtrickle.emulator_u64_bits(h)
                # pgtrickle.emulator_u64_bits(mod(get_byte(p_data, pos) * p5, m)));
        h := mod(pgtrickle.emulator_rotl64(h, 11) * p1, m);
        pos := pos + 1;
    END LOOP;
    h := pgtrickle.emulator_bits_u64(pgtrickle.emulator_u64_bits(h) # (pgtrickle.emulator_u64_bits(h) >> 33));
    h := mod(h * p2, m);
    h := pgtrickle.emulator_bits_u64(pgtrickle.emulator_u64_bits(h) # (pgtrickle.emulator_u64_bits(h) >> 29));
    h := mod(h * p3, m);
    h := pgtrickle.emulator_bits_u64(pgtrickle.emulator_u64_bits(h) # (pgtrickle.emulator_u64_bits(h) >> 32));
    RETURN h;
END $$;

CREATE FUNCTION pgtrickle.emulator_rotl64(x numeric, r integer) RETURNS numeric
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT pgtrickle.emulator_bits_u64((b << r) | (b >> (64 - r))) FROM (SELECT pgtrickle.emulator_u64_bits(x) AS b) s
$$;

CREATE FUNCTION pgtrickle.emulator_xxh64_round(acc numeric, lane numeric) RETURNS numeric
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT mod(pgtrickle.emulator_rotl64(mod(acc + lane * 14029467366897019727, 18446744073709551616), 31)
               * 11400714785074694791, 18446744073709551616)
$$;

-- pg_trickle's SQL-callable stable name of a source (src/citus.rs, sql_stable_name_for_oid): NULL when the
-- relation does not exist.
CREATE FUNCTION pgtrickle.source_stable_name(source_oid oid) RETURNS text
LANGUAGE sql STABLE STRICT AS $$
    SELECT lpad(to_hex(pgtrickle.emulator_u64_bits(
               pgtrickle.emulator_xxh64(convert_to(n.nspname || '.' || c.relname, 'UTF8'), 5871781006564002453)
           )::bigint), 16, '0')
      FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid = source_oid
$$;

-- A source column's name in the buffer: pg_trickle prefixes the buffer's own column names (src/cdc/triggers.rs,
-- cb_col_name).
CREATE FUNCTION pgtrickle.emulator_cb_col_name(p_name text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT CASE WHEN p_name IN ('change_id', 'lsn', 'action', 'pk_hash', 'changed_cols') THEN '__usr_' || p_name
                ELSE p_name END
$$;

-- The INSERT a capture trigger runs: rows of transition table p_transition into the buffer as p_action
-- rows, the source's current columns matched by name with the buffer's (built when the trigger fires, so a
-- renamed, added or dropped source column never breaks the source's writers; a column the buffer lacks is
-- not captured). pk_hash hashes the primary key's values, or the whole row of a keyless source.
CREATE FUNCTION pgtrickle.emulator_capture_sql(p_relid oid, p_buffer regclass, p_action text, p_transition text)
RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT format('INSERT INTO %s (lsn, action, pk_hash%s) SELECT pg_current_wal_insert_lsn(), %L, %s%s FROM %I t',
                  p_buffer, coalesce(cols.names, ''), p_action,
                  coalesce(keys.expr, 'hashtextextended(t::text, 0)'), coalesce(cols.vals, ''), p_transition)
      FROM (SELECT string_agg(format(', %I', b.attname), '' ORDER BY a.attnum) AS names,
                   string_agg(format(', t.%I', a.attname), '' ORDER BY a.attnum) AS vals
              FROM pg_catalog.pg_attribute a
              JOIN pg_catalog.pg_attribute b
                ON b.attrelid = p_buffer AND b.attname = pgtrickle.emulator_cb_col_name(a.attname) AND NOT b.attisdropped
             WHERE a.attrelid = p_relid AND a.attnum > 0 AND NOT a.attisdropped) cols,
           (SELECT 'hashtextextended(ROW(' || string_agg(format('t.%I', a.attname), ', ' ORDER BY k.ord) || ')::text, 0)' AS expr
              FROM pg_catalog.pg_constraint con
              CROSS JOIN LATERAL unnest(con.conkey) WITH ORDINALITY k(attnum, ord)
              JOIN pg_catalog.pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum
             WHERE con.conrelid = p_relid AND con.contype = 'p') keys
$$;

-- Creates the change buffer of a plain source table and its capture triggers, as the calling role, the way
-- pg_trickle does on its first stream table over that source (src/api/helpers.rs, setup_cdc_for_source;
-- src/cdc/mod.rs, create_change_buffer_table and create_change_trigger): the buffer table
-- pgtrickle_changes.changes_<stable name>, statement-level triggers pg_trickle_cdc_{ins,upd,del,truncate}_<stable
-- name> (pg_trickle.cdc_trigger_mode's default, 'statement') whose functions live in pgtrickle_changes,
-- SECURITY DEFINER with a fixed search_path, so a writer of the source needs no right on the buffer. Without
-- CREATE on pgtrickle_changes the caller is refused (42501) here, as pg_trickle refuses it. A source already
-- tracked only gets the stream table added to tracked_by_pgt_ids.
CREATE FUNCTION pgtrickle.emulator_attach_buffer(p_relid oid, p_pgt_id bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    stable text;
    buffer text;
    source text;
    col_defs text;
    bump text;
    event record;
BEGIN
    IF EXISTS (SELECT 1 FROM pgtrickle.pgt_change_tracking WHERE source_relid = p_relid) THEN
        UPDATE pgtrickle.pgt_change_tracking
           SET tracked_by_pgt_ids = array_append(tracked_by_pgt_ids, p_pgt_id)
         WHERE source_relid = p_relid AND NOT (p_pgt_id = ANY (coalesce(tracked_by_pgt_ids, '{}')));
        RETURN;
    END IF;
    stable := pgtrickle.source_stable_name(p_relid);
    buffer := format('pgtrickle_changes.%I', 'changes_' || stable);
    SELECT format('%I.%I', n.nspname, c.relname) INTO source
      FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = p_relid;
    SELECT string_agg(format(', %I %s', pgtrickle.emulator_cb_col_name(a.attname), format_type(a.atttypid, a.atttypmod)),
                      '' ORDER BY a.attnum)
      INTO col_defs
      FROM pg_catalog.pg_attribute a
     WHERE a.attrelid = p_relid AND a.attnum > 0 AND NOT a.attisdropped;
    EXECUTE format('CREATE TABLE %s (change_id bigserial, lsn pg_lsn NOT NULL, action char(1) NOT NULL, '
                   'pk_hash bigint, changed_cols varbit%s, __pgt_trace_context text)', buffer, coalesce(col_defs, ''));
    EXECUTE format('ALTER TABLE %s DISABLE ROW LEVEL SECURITY', buffer);
    EXECUTE format('CREATE INDEX %I ON %s (lsn, pk_hash, change_id) INCLUDE (action)',
                   'idx_changes_' || stable || '_lsn_pk_cid', buffer);
    -- The emulator's change sequence (what the scheduler compares with a stream table's frontier) is bumped
    -- first: its row lock orders concurrent writers, so change_ids are handed out in commit order.
    bump := format($b$
            INSERT INTO pgtrickle.emulator_source_changes AS c (source_relid, change_seq, changed_rows)
            VALUES (%s, 1, %%s)
            ON CONFLICT (source_relid) DO UPDATE
               SET change_seq = c.change_seq + 1, changed_rows = c.changed_rows + EXCLUDED.changed_rows;$b$, p_relid);
    -- INSERT: I rows; UPDATE: a D row (old values) and an I row (new values), pg_trickle's D+I schema; DELETE: D rows.
    FOR event IN SELECT * FROM (VALUES
            ('ins', 'INSERT', 'REFERENCING NEW TABLE AS __pgt_new', '__pgt_new',
             format('EXECUTE pgtrickle.emulator_capture_sql(TG_RELID, %L, ''I'', ''__pgt_new'');', buffer)),
            ('upd', 'UPDATE', 'REFERENCING NEW TABLE AS __pgt_new OLD TABLE AS __pgt_old', '__pgt_new',
             format('EXECUTE pgtrickle.emulator_capture_sql(TG_RELID, %L, ''D'', ''__pgt_old'');', buffer)
             || format(' EXECUTE pgtrickle.emulator_capture_sql(TG_RELID, %L, ''I'', ''__pgt_new'');', buffer)),
            ('del', 'DELETE', 'REFERENCING OLD TABLE AS __pgt_old', '__pgt_old',
             format('EXECUTE pgtrickle.emulator_capture_sql(TG_RELID, %L, ''D'', ''__pgt_old'');', buffer)))
            AS e(tag, verb, referencing, counted, capture)
    LOOP
        EXECUTE format($f$
            CREATE FUNCTION pgtrickle_changes.%1$I() RETURNS trigger LANGUAGE plpgsql
            SECURITY DEFINER SET search_path = pgtrickle_changes, pgtrickle, pg_catalog, pg_temp AS $body$
            DECLARE pgt_cnt bigint;
            BEGIN
                SELECT count(*) INTO pgt_cnt FROM %2$I;
                IF pgt_cnt > 0 THEN
                    %3$s
                    %4$s
                END IF;
                RETURN NULL;
            END $body$ $f$, 'pg_trickle_cdc_' || event.tag || '_fn_' || stable, event.counted,
            format(bump, 'pgt_cnt'), event.capture);
        EXECUTE format('CREATE TRIGGER %I AFTER %s ON %s %s FOR EACH STATEMENT EXECUTE FUNCTION pgtrickle_changes.%I()',
                       'pg_trickle_cdc_' || event.tag || '_' || stable, event.verb, source, event.referencing,
                       'pg_trickle_cdc_' || event.tag || '_fn_' || stable);
    END LOOP;
    EXECUTE format($f$
        CREATE FUNCTION pgtrickle_changes.%1$I() RETURNS trigger LANGUAGE plpgsql
        SECURITY DEFINER SET search_path = pgtrickle_changes, pgtrickle, pg_catalog, pg_temp AS $body$
        BEGIN
            %2$s
            INSERT INTO %3$s (lsn, action) VALUES (pg_current_wal_lsn(), 'T');
            RETURN NULL;
        END $body$ $f$, 'pg_trickle_cdc_truncate_fn_' || stable, format(bump, '0'), buffer);
    EXECUTE format('CREATE TRIGGER %I AFTER TRUNCATE ON %s FOR EACH STATEMENT EXECUTE FUNCTION pgtrickle_changes.%I()',
                   'pg_trickle_cdc_truncate_' || stable, source, 'pg_trickle_cdc_truncate_fn_' || stable);
    INSERT INTO pgtrickle.pgt_change_tracking (source_relid, slot_name, source_stable_name, tracked_by_pgt_ids)
    VALUES (p_relid, 'pg_trickle_cdc_ins_' || stable, stable, ARRAY[p_pgt_id]);
    INSERT INTO pgtrickle.emulator_source_changes (source_relid) VALUES (p_relid) ON CONFLICT DO NOTHING;
END $$;

-- Keeps tracked_by_pgt_ids equal to the stream tables reading the source; when none is left, drops the
-- capture triggers, their functions and the buffer (src/cdc/mod.rs, drop_change_trigger), as the caller.
CREATE FUNCTION pgtrickle.emulator_sync_buffer(p_relid oid) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    t pgtrickle.pgt_change_tracking;
    source text;
    readers bigint[] := ARRAY(SELECT d.pgt_id FROM pgtrickle.pgt_dependencies d WHERE d.source_relid = p_relid
                               ORDER BY d.pgt_id);
    event text;
BEGIN
    SELECT * INTO t FROM pgtrickle.pgt_change_tracking WHERE source_relid = p_relid;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF cardinality(readers) > 0 THEN
        UPDATE pgtrickle.pgt_change_tracking SET tracked_by_pgt_ids = readers WHERE source_relid = p_relid;
        RETURN;
    END IF;
    SELECT format('%I.%I', n.nspname, c.relname) INTO source
      FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = p_relid;
    FOREACH event IN ARRAY ARRAY['ins', 'upd', 'del', 'truncate'] LOOP
        IF source IS NOT NULL THEN
            EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', 'pg_trickle_cdc_' || event || '_' || t.source_stable_name, source);
        END IF;
        EXECUTE format('DROP FUNCTION IF EXISTS pgtrickle_changes.%I()', 'pg_trickle_cdc_' || event || '_fn_' || t.source_stable_name);
    END LOOP;
    EXECUTE format('DROP TABLE IF EXISTS pgtrickle_changes.%I', 'changes_' || t.source_stable_name);
    DELETE FROM pgtrickle.pgt_change_tracking WHERE source_relid = p_relid;
END $$;

-- The newest change_id of a source's buffer visible to the current statement (read as the caller, as a
-- refresh reads the buffers); NULL without a buffer.
CREATE FUNCTION pgtrickle.emulator_buffer_watermark(p_relid oid) RETURNS bigint
LANGUAGE plpgsql STABLE AS $$
DECLARE
    stable text;
    result bigint;
BEGIN
    SELECT source_stable_name INTO stable FROM pgtrickle.pgt_change_tracking WHERE source_relid = p_relid;
    IF stable IS NULL THEN
        RETURN NULL;
    END IF;
    EXECUTE format('SELECT coalesce(max(change_id), 0) FROM pgtrickle_changes.%I', 'changes_' || stable) INTO result;
    RETURN result;
END $$;

-- After a refresh: deletes the buffer rows every reader of the source has consumed (up to the lowest
-- change_id in their frontiers), as pg_trickle deletes consumed changes (src/cdc/mod.rs,
-- delete_consumed_changes). A reader that never refreshed keeps every row.
-- Refreshes of two readers of one source (two scheduler sessions) never delete its buffer rows at the same
-- time: a consumer first locks the source's pgt_change_tracking row FOR UPDATE SKIP LOCKED (sources in
-- source_relid order) and leaves the buffer of a source whose row another consumer holds to the next
-- consumer (nothing is lost: a later refresh deletes up to the then lowest frontier). No consumer ever waits
-- for another on buffer rows, so two of them cannot deadlock, and one in an open transaction (a manual
-- refresh) holds up no other refresh. The lowest frontier of all readers is read after the lock, as
-- src/refresh/codegen.rs::cleanup_change_buffers_by_frontier computes it. Row locks, not advisory locks:
-- see emulator_scheduler.
CREATE FUNCTION pgtrickle.emulator_consume_buffers(p_pgt_id bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    src record;
    consumed bigint;
    truncated boolean;
BEGIN
    FOR src IN
        SELECT t.source_relid, t.source_stable_name
          FROM pgtrickle.pgt_change_tracking t
         WHERE t.source_relid IN (SELECT d.source_relid FROM pgtrickle.pgt_dependencies d WHERE d.pgt_id = p_pgt_id)
         ORDER BY t.source_relid
           FOR UPDATE OF t SKIP LOCKED
    LOOP
        SELECT min(coalesce((st.frontier -> d2.source_relid::text ->> 'change_id')::bigint, 0)) INTO consumed
          FROM pgtrickle.pgt_dependencies d2 JOIN pgtrickle.pgt_stream_tables st ON st.pgt_id = d2.pgt_id
         WHERE d2.source_relid = src.source_relid;
        IF consumed > 0 THEN
            -- A buffer every reader consumed entirely is emptied with TRUNCATE (pg_trickle.cleanup_use_truncate,
            -- on by default: src/refresh/codegen.rs, "Safe to TRUNCATE only if ALL entries are at or below the
            -- safe LSN"), so reads of the buffer never wade through the dead rows of a large consumed change.
            -- The emulator takes the buffer's lock first, without waiting (a writer or a reader in progress:
            -- DELETE instead), then checks, so no row committed between check and TRUNCATE is lost.
            truncated := false;
            BEGIN
                EXECUTE format('LOCK TABLE pgtrickle_changes.%I IN ACCESS EXCLUSIVE MODE NOWAIT', 'changes_' || src.source_stable_name);
                EXECUTE format('SELECT NOT EXISTS (SELECT 1 FROM pgtrickle_changes.%I WHERE change_id > $1)', 'changes_' || src.source_stable_name)
                   INTO truncated USING consumed;
                IF truncated THEN
                    EXECUTE format('TRUNCATE pgtrickle_changes.%I', 'changes_' || src.source_stable_name);
                END IF;
            EXCEPTION WHEN lock_not_available OR insufficient_privilege THEN
                truncated := false;
            END;
            IF NOT truncated THEN
                EXECUTE format('DELETE FROM pgtrickle_changes.%I WHERE change_id <= $1', 'changes_' || src.source_stable_name)
                  USING consumed;
            END IF;
        END IF;
    END LOOP;
END $$;

-- The stream table's own columns (everything but __pgt_row_id), quoted, in order.
CREATE FUNCTION pgtrickle.emulator_columns(p_relid oid) RETURNS text[]
LANGUAGE sql STABLE AS $$
    SELECT array_agg(quote_ident(attname) ORDER BY attnum)
      FROM pg_catalog.pg_attribute
     WHERE attrelid = p_relid AND attnum > 0 AND NOT attisdropped AND attname <> '__pgt_row_id'
$$;

-- Current change sequence and captured rows of every source of a stream table, as the frontier jsonb.
CREATE FUNCTION pgtrickle.emulator_current_frontier(p_pgt_id bigint) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_object_agg(d.source_relid::text,
                        jsonb_build_object('change_seq', coalesce(c.change_seq, 0),
                                           'changed_rows', coalesce(c.changed_rows, 0),
                                           'change_id', pgtrickle.emulator_buffer_watermark(d.source_relid))),
                    '{}'::jsonb)
      FROM pgtrickle.pgt_dependencies d
      LEFT JOIN pgtrickle.emulator_source_changes c ON c.source_relid = d.source_relid
     WHERE d.pgt_id = p_pgt_id
$$;

-- Did any source change since the stream table last consumed it?
CREATE FUNCTION pgtrickle.emulator_sources_changed(p_pgt_id bigint) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (
        SELECT 1
          FROM pgtrickle.pgt_dependencies d
          JOIN pgtrickle.pgt_stream_tables st ON st.pgt_id = d.pgt_id
          LEFT JOIN pgtrickle.emulator_source_changes c ON c.source_relid = d.source_relid
         WHERE d.pgt_id = p_pgt_id
           AND coalesce(c.change_seq, 0)
               > coalesce((st.frontier -> d.source_relid::text ->> 'change_seq')::bigint, -1))
$$;

-- ---------------------------------------------------------------------------------------------------
-- Incremental maintenance of aggregates (issue 18): the refresh cost follows the change, not the history
-- ---------------------------------------------------------------------------------------------------
-- pg_trickle maintains an aggregate from the change since the last refresh (src/dvm/operators/aggregate.rs,
-- diff_aggregate): COUNT and SUM algebraically (is_algebraically_invertible), AVG through auxiliary running
-- sum and count columns (is_algebraic_via_aux), MIN/MAX semi-algebraically, COUNT(DISTINCT) and the rest by
-- rescanning the affected groups (build_rescan_cte). The emulator does the same for the case it can keep
-- exactly: a DIFFERENTIAL stream table whose defining query is a plain aggregate (SELECT ... FROM <joins>
-- [WHERE ...] GROUP BY ..., no subquery, HAVING, DISTINCT, window, set operation or TopK) over COUNT, SUM, AVG
-- (integer and numeric arguments: exact), MIN, MAX and COUNT(DISTINCT), when since its last refresh exactly one
-- source changed and that source's change buffer holds only INSERTs (the event tables are append-only). Its
-- state (the groups with their running counts, sums, extremes, and the distinct values per group) lives in
-- pgtrickle_changes.emulator_state_<pgt_id> and emulator_distinct_<pgt_id>_<n>, tables of the refreshing role
-- beside the change buffers. Any other refresh recomputes, rebuilds the state from that recomputation and
-- checks it against the defining query (a plan whose state ever disagrees is never used again). The
-- defining query is read from PostgreSQL's own deparse of it (pg_get_viewdef, every relation schema-qualified).

CREATE TABLE pgtrickle.emulator_delta_plans (
    pgt_id                 bigint PRIMARY KEY REFERENCES pgtrickle.pgt_stream_tables (pgt_id) ON DELETE CASCADE,
    supported              boolean NOT NULL,
    reason                 text,                -- why the query is recomputed (NULL when supported)
    from_sql               text,                -- the FROM clause of the deparsed query
    where_sql              text,                -- its WHERE condition, or NULL
    key_exprs              text[],              -- GROUP BY expressions, then other non-aggregate outputs
    agg_kinds              text[],              -- count_star, count, count_distinct, sum, avg, min, max
    agg_args               text[],
    projection             text[],              -- per storage column, an expression over the state row s
    sources                jsonb,               -- relid -> {ref, alias, ok, reason}
    state_valid            boolean NOT NULL DEFAULT false,
    incremental_refreshes  bigint NOT NULL DEFAULT 0,
    state_rebuilds         bigint NOT NULL DEFAULT 0
);

-- The position of the parenthesis closing the one at p_open (literals and quoted names skipped), or 0.
CREATE FUNCTION pgtrickle.emulator_closing_paren(p_text text, p_open integer) RETURNS integer
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    pos integer := strpos(pgtrickle.emulator_top_level_mask(substr(p_text, p_open + 1)), ')');
BEGIN
    RETURN CASE WHEN pos = 0 THEN 0 ELSE p_open + pos END;
END $$;

-- p_text split at its top-level commas (outside parentheses, literals and quoted names), each part trimmed.
CREATE FUNCTION pgtrickle.emulator_split_top_level(p_text text) RETURNS text[]
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    m text := pgtrickle.emulator_top_level_mask(p_text);
    parts text[] := '{}';
    start integer := 1;
    i integer;
BEGIN
    FOR i IN 1 .. length(m) LOOP
        IF substr(m, i, 1) = ',' THEN
            parts := parts || btrim(substr(p_text, start, i - start), E' \t\n\r');
            start := i + 1;
        END IF;
    END LOOP;
    RETURN parts || btrim(substr(p_text, start), E' \t\n\r');
END $$;

-- The text with every literal and quoted name blanked (same length): what a search for calls may read.
CREATE FUNCTION pgtrickle.emulator_literal_mask(p_text text) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    result text := p_text;
    at integer := 1;
    q integer;
    close integer;
    quote text;
BEGIN
    LOOP
        q := regexp_instr(result, '[''"]', at);
        EXIT WHEN q = 0;
        quote := substr(result, q, 1);
        close := q;
        LOOP
            close := strpos(substr(result, close + 1), quote) + close;
            EXIT WHEN close = q OR substr(result, close + 1, 1) <> quote;
            close := close + 1;  -- a doubled quote inside the literal
        END LOOP;
        IF close = q THEN
            close := length(result);
        END IF;
        result := overlay(result PLACING repeat(' ', close - q + 1) FROM q FOR close - q + 1);
        at := close + 1;
    END LOOP;
    RETURN result;
END $$;

-- Analyses a stream table's defining query and records its plan (supported or the reason it is not).
CREATE FUNCTION pgtrickle.emulator_delta_plan(p_pgt_id bigint) RETURNS pgtrickle.emulator_delta_plans
LANGUAGE plpgsql AS $$
DECLARE
    st pgtrickle.pgt_stream_tables;
    plan pgtrickle.emulator_delta_plans;
    saved_path text := current_setting('search_path');
    def text;
    m text;
    from_at integer;
    where_at integer;
    group_at integer;
    select_list text;
    group_list text;
    items text[];
    item text;
    expr text;
    lit text;
    keys text[];
    kinds text[] := '{}';
    args text[] := '{}';
    proj text[] := '{}';
    storage_cols text[];
    call record;
    pos integer;
    close integer;
    fname text;
    arg text;
    kind text;
    idx integer;
    replaced text;
    arg_types text[];
    src record;
    sources jsonb := '{}';
    ref text;
    ref_at integer;
    alias text;
    nullable boolean;
    aliased boolean;
    ok boolean;
    why text;
    depth_left text;
BEGIN
    SELECT * INTO STRICT st FROM pgtrickle.pgt_stream_tables WHERE pgt_id = p_pgt_id;
    plan.pgt_id := p_pgt_id;
    plan.supported := false;
    DELETE FROM pgtrickle.emulator_delta_plans WHERE pgt_id = p_pgt_id;
    BEGIN
        IF st.topk_limit IS NOT NULL THEN
            RAISE EXCEPTION USING MESSAGE = 'a TopK stream table';
        END IF;
        EXECUTE format('CREATE TEMPORARY VIEW pgt_emulator_delta_probe AS %s', st.defining_query);
        PERFORM set_config('search_path', 'pg_catalog, pg_temp', true);
        def := pg_catalog.pg_get_viewdef('pg_temp.pgt_emulator_delta_probe'::pg_catalog.regclass, false);
        PERFORM pg_catalog.set_config('search_path', saved_path, true);
        DROP VIEW pg_temp.pgt_emulator_delta_probe;
        def := rtrim(btrim(def, E' \t\n\r'), ';');
        m := pgtrickle.emulator_top_level_mask(def);
        IF m !~ '^SELECT\s' OR m ~ '^SELECT\s+DISTINCT\M' THEN
            RAISE EXCEPTION USING MESSAGE = 'not a plain SELECT';
        END IF;
        IF m ~ '\m(HAVING|WINDOW|UNION|INTERSECT|EXCEPT|ORDER|LIMIT|OFFSET|FETCH|WITH)\M' THEN
            RAISE EXCEPTION USING MESSAGE = 'HAVING, WINDOW, set operations, ORDER BY or LIMIT';
        END IF;
        IF regexp_count(upper(pgtrickle.emulator_literal_mask(def)), '\mSELECT\M') <> 1 THEN
            RAISE EXCEPTION USING MESSAGE = 'a subquery';
        END IF;
        IF upper(pgtrickle.emulator_literal_mask(def)) ~ '\m(OVER|FILTER|WITHIN|GROUPING|ROLLUP|CUBE|LATERAL|RIGHT|FULL)\M' THEN
            RAISE EXCEPTION USING MESSAGE = 'a window, FILTER, ordered-set aggregate, grouping set, LATERAL, RIGHT or FULL join';
        END IF;
        from_at := regexp_instr(m, '\mFROM\M');
        where_at := regexp_instr(m, '\mWHERE\M');
        group_at := regexp_instr(m, '\mGROUP\s+BY\M');
        IF from_at = 0 OR group_at = 0 THEN
            RAISE EXCEPTION USING MESSAGE = 'no GROUP BY';
        END IF;
        select_list := substr(def, 7, from_at - 7);
        plan.from_sql := btrim(substr(def, from_at + 4, CASE WHEN where_at > 0 THEN where_at ELSE group_at END - from_at - 4),
                               E' \t\n\r');
        IF where_at > 0 THEN
            plan.where_sql := btrim(substr(def, where_at + 5, group_at - where_at - 5), E' \t\n\r');
        END IF;
        group_list := btrim(regexp_replace(substr(def, group_at), '^GROUP\s+BY\s+', '', 'i'), E' \t\n\r');
        keys := pgtrickle.emulator_split_top_level(group_list);
        items := pgtrickle.emulator_split_top_level(select_list);
        storage_cols := pgtrickle.emulator_columns(st.pgt_relid);
        IF cardinality(items) <> cardinality(storage_cols) THEN
            RAISE EXCEPTION USING MESSAGE = 'the storage columns differ from the query''s';
        END IF;
        FOREACH item IN ARRAY items LOOP
            -- "expr AS alias": the alias is the storage column (matched by position).
            pos := regexp_instr(pgtrickle.emulator_top_level_mask(item), '\sAS\s+\S+$');
            expr := btrim(CASE WHEN pos > 0 THEN substr(item, 1, pos - 1) ELSE item END);
            lit := pgtrickle.emulator_literal_mask(expr);
            IF lit !~* '(?<![\w.$"])(count|sum|avg|min|max)\s*\(' THEN
                -- not an aggregate: a grouping expression, or an expression of them (grouped by as well)
                idx := array_position(keys, expr);
                IF idx IS NULL THEN
                    keys := keys || expr;  -- functionally dependent on the groups: grouped by as well
                    idx := cardinality(keys);
                END IF;
                proj := proj || format('s.k%s', idx);
                CONTINUE;
            END IF;
            -- Replace every aggregate call by its state expression, right to left (positions stay valid).
            replaced := expr;
            LOOP
                lit := pgtrickle.emulator_literal_mask(replaced);
                idx := regexp_count(lit, '(?<![\w.$"])(count|sum|avg|min|max)\s*\(', 1, 'i');
                EXIT WHEN idx = 0;
                pos := regexp_instr(lit, '(?<![\w.$"])(count|sum|avg|min|max)\s*\(', 1, idx, 0, 'i');
                fname := lower(substring(substr(lit, pos) FROM '^([A-Za-z]+)'));
                close := pgtrickle.emulator_closing_paren(replaced, strpos(substr(replaced, pos), '(') + pos - 1);
                IF close = 0 THEN
                    RAISE EXCEPTION USING MESSAGE = 'unbalanced aggregate call';
                END IF;
                arg := btrim(substr(replaced, strpos(substr(replaced, pos), '(') + pos, close - (strpos(substr(replaced, pos), '(') + pos)));
                IF arg ~* '\mORDER\s+BY\M' THEN
                    RAISE EXCEPTION USING MESSAGE = 'an ordered aggregate';
                END IF;
                kind := fname;
                IF fname = 'count' AND arg = '*' THEN
                    kind := 'count_star';
                    arg := NULL;
                ELSIF arg ~* '^DISTINCT\s' THEN
                    IF fname <> 'count' THEN
                        RAISE EXCEPTION USING MESSAGE = format('%s(DISTINCT ...)', fname);
                    END IF;
                    kind := 'count_distinct';
                    arg := btrim(regexp_replace(arg, '^DISTINCT\s+', '', 'i'));
                END IF;
                IF arg IS NOT NULL AND pgtrickle.emulator_top_level_mask(arg) ~ ',' THEN
                    RAISE EXCEPTION USING MESSAGE = 'an aggregate of several arguments';
                END IF;
                idx := NULL;
                FOR i IN 1 .. cardinality(kinds) LOOP
                    IF kinds[i] = kind AND args[i] IS NOT DISTINCT FROM arg THEN
                        idx := i;
                    END IF;
                END LOOP;
                IF idx IS NULL THEN
                    kinds := kinds || kind;
                    args := args || arg;
                    idx := cardinality(kinds);
                END IF;
                replaced := overlay(replaced PLACING format('(%s)', CASE kind
                                WHEN 'avg' THEN format('(s.s%1$s)::numeric / (s.n%1$s)::numeric', idx)
                                WHEN 'count_star' THEN format('s.c%s', idx)
                                WHEN 'count' THEN format('s.c%s', idx)
                                WHEN 'count_distinct' THEN format('s.d%s', idx)
                                WHEN 'sum' THEN format('s.s%s', idx)
                                ELSE format('s.m%s', idx) END)
                            FROM pos FOR close - pos + 1);
            END LOOP;
            -- What remains outside the calls may not read a column (it would not be in the state).
            IF pgtrickle.emulator_literal_mask(replaced) ~ '(?<![\w.$"])(?!s\.)[A-Za-z_][\w$]*\.[A-Za-z_"]' THEN
                RAISE EXCEPTION USING MESSAGE = 'a column outside the aggregate calls of an output expression';
            END IF;
            proj := proj || replaced;
        END LOOP;
        IF cardinality(kinds) = 0 THEN
            RAISE EXCEPTION USING MESSAGE = 'no aggregate';
        END IF;
        plan.key_exprs := keys;
        plan.agg_kinds := kinds;
        plan.agg_args := args;
        plan.projection := proj;
        -- Argument types: SUM and AVG are kept exactly for integers and numeric only (float sums depend on
        -- the order of addition).
        EXECUTE format('CREATE TEMPORARY VIEW pgt_emulator_delta_probe AS SELECT %s FROM %s',
                       (SELECT string_agg(coalesce(a, 'NULL::int4') || format(' AS a%s', o), ', ' ORDER BY o)
                          FROM unnest(args) WITH ORDINALITY u(a, o)), plan.from_sql);
        SELECT array_agg(format_type(atttypid, NULL) ORDER BY attnum) INTO arg_types
          FROM pg_catalog.pg_attribute WHERE attrelid = 'pg_temp.pgt_emulator_delta_probe'::regclass AND attnum > 0;
        DROP VIEW pg_temp.pgt_emulator_delta_probe;
        FOR i IN 1 .. cardinality(kinds) LOOP
            IF kinds[i] IN ('sum', 'avg') AND arg_types[i] NOT IN ('smallint', 'integer', 'bigint', 'numeric') THEN
                RAISE EXCEPTION USING MESSAGE = format('%s over %s', upper(kinds[i]), arg_types[i]);
            END IF;
        END LOOP;
        -- Per source: where it appears, and whether an insert-only change of it can be applied as a delta.
        FOR src IN SELECT d.source_relid, t.source_stable_name, n.nspname, c.relname
                     FROM pgtrickle.pgt_dependencies d
                     JOIN pg_catalog.pg_class c ON c.oid = d.source_relid
                     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                     LEFT JOIN pgtrickle.pgt_change_tracking t ON t.source_relid = d.source_relid
                    WHERE d.pgt_id = p_pgt_id LOOP
            ref := quote_ident(src.nspname) || '.' || quote_ident(src.relname);
            lit := pgtrickle.emulator_literal_mask(plan.from_sql);
            ok := true;
            why := NULL;
            alias := NULL;
            aliased := false;
            nullable := false;
            ref_at := regexp_instr(lit || ' ', '(?<![\w.$"])' || regexp_replace(ref, '([.$"])', '\\\1', 'g') || '\s');
            IF src.source_stable_name IS NULL THEN
                -- A stream table has no change buffer: each of its changes recomputes and leaves the state stale,
                -- so a state next to it would cost rebuilds and rarely serve (src/dvm/diff.rs keeps its own).
                RAISE EXCEPTION USING MESSAGE = format('reads %s, which has no change buffer (a stream table)', ref);
            ELSIF regexp_count(pgtrickle.emulator_literal_mask(def), '(?<![\w.$"])' || regexp_replace(ref, '([.$"])', '\\\1', 'g') || '(?![\w$"])') <> 1
                  OR ref_at = 0 THEN
                ok := false; why := 'read more than once, or not by name';
            ELSE
                alias := substring(substr(plan.from_sql, ref_at + length(ref)) FROM '^\s+([A-Za-z_][\w$]*|"(?:[^"]|"")+")');
                aliased := alias IS NOT NULL
                           AND upper(alias) NOT IN ('ON', 'JOIN', 'LEFT', 'INNER', 'CROSS', 'NATURAL', 'USING', 'RIGHT', 'FULL');
                IF NOT aliased THEN
                    alias := quote_ident(src.relname);
                END IF;
                -- On the nullable side of a LEFT JOIN: right after LEFT JOIN, or inside parentheses opened there.
                depth_left := substr(upper(lit), 1, ref_at - 1);
                nullable := depth_left ~ 'LEFT\s+(OUTER\s+)?JOIN\s*$';
                IF NOT nullable THEN
                    pos := 0;
                    LOOP
                        pos := regexp_instr(depth_left, 'LEFT\s+(OUTER\s+)?JOIN\s*\(', pos + 1, 1, 1);
                        EXIT WHEN pos = 0;
                        close := pgtrickle.emulator_closing_paren(plan.from_sql, pos - 1);
                        IF close = 0 OR close > ref_at THEN
                            nullable := true;
                            EXIT;
                        END IF;
                    END LOOP;
                END IF;
                IF nullable THEN
                    -- Rows the LEFT JOIN extends with NULLs must add nothing: every aggregate reads only this
                    -- source's columns through strict operators, and no output groups by them.
                    FOR i IN 1 .. cardinality(kinds) LOOP
                        IF kinds[i] = 'count_star'
                           OR regexp_replace(args[i], '(?<![\w$"])' || regexp_replace(alias, '([.$"])', '\\\1', 'g')
                                             || '\.("(?:[^"]|"")+"|[A-Za-z_][\w$]*)|\(|\)|::[A-Za-z_][\w ]*|[-+*/]|\s|\m[0-9.]+\M', '', 'g') <> '' THEN
                            ok := false; why := 'an aggregate that counts the rows a LEFT JOIN adds';
                        END IF;
                    END LOOP;
                    FOREACH expr IN ARRAY keys LOOP
                        IF expr ~ ('(?<![\w$"])' || regexp_replace(alias, '([.$"])', '\\\1', 'g') || '\.') THEN
                            ok := false; why := 'a group of columns a LEFT JOIN may extend with NULLs';
                        END IF;
                    END LOOP;
                END IF;
            END IF;
            sources := sources || jsonb_build_object(src.source_relid::text, jsonb_build_object(
                'ref', ref, 'alias', alias, 'aliased', aliased, 'buffer', src.source_stable_name, 'nullable', nullable, 'ok', ok, 'reason', why));
        END LOOP;
        plan.sources := sources;
        IF NOT jsonb_path_exists(sources, '$.* ? (@.ok == true)') THEN
            RAISE EXCEPTION USING MESSAGE = 'no source whose change buffer the delta can read ('
                || (SELECT string_agg(format('%s: %s', e.value ->> 'ref', e.value ->> 'reason'), '; ')
                      FROM jsonb_each(sources) e) || ')';
        END IF;
        plan.supported := true;
    EXCEPTION WHEN OTHERS THEN
        PERFORM pg_catalog.set_config('search_path', saved_path, true);
        plan.supported := false;
        plan.reason := SQLERRM;
        plan.from_sql := NULL; plan.where_sql := NULL; plan.key_exprs := NULL; plan.agg_kinds := NULL;
        plan.agg_args := NULL; plan.projection := NULL; plan.sources := NULL;
    END;
    plan.state_valid := false;
    plan.incremental_refreshes := 0;
    plan.state_rebuilds := 0;
    INSERT INTO pgtrickle.emulator_delta_plans SELECT plan.*;
    RETURN plan;
END $$;

-- The state tables of a stream table (the groups; the distinct values of its n-th aggregate).
CREATE FUNCTION pgtrickle.emulator_state_table(p_pgt_id bigint, p_distinct integer DEFAULT NULL) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT format('pgtrickle_changes.%I', CASE WHEN p_distinct IS NULL THEN 'emulator_state_' || p_pgt_id
                                              ELSE format('emulator_distinct_%s_%s', p_pgt_id, p_distinct) END)
$$;

-- Drops a stream table's state tables; with p_forget_plan its plan too (the query or the mode changed).
CREATE FUNCTION pgtrickle.emulator_drop_delta_state(p_pgt_id bigint, p_forget_plan boolean DEFAULT false) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    rel text;
BEGIN
    FOR rel IN SELECT format('pgtrickle_changes.%I', c.relname) FROM pg_catalog.pg_class c
                WHERE c.relnamespace = 'pgtrickle_changes'::pg_catalog.regnamespace AND c.relkind = 'r'
                  AND (c.relname = 'emulator_state_' || p_pgt_id
                       OR c.relname LIKE 'emulator\_distinct\_' || p_pgt_id || '\_%') LOOP
        BEGIN
            EXECUTE format('DROP TABLE IF EXISTS %s', rel);
        EXCEPTION WHEN insufficient_privilege THEN
            NULL;  -- another role's state (see emulator_delta_refresh): left to its owner, and marked stale below
        END;
    END LOOP;
    IF p_forget_plan THEN
        DELETE FROM pgtrickle.emulator_delta_plans WHERE pgt_id = p_pgt_id;
    ELSE
        UPDATE pgtrickle.emulator_delta_plans SET state_valid = false WHERE pgt_id = p_pgt_id AND state_valid;
    END IF;
END $$;

-- The rows the aggregate reads, as k1.. (grouping) and a1.. (aggregate arguments). With p_source, that source
-- is read from its change buffer: the rows inserted with change_id in (p_from, p_to], and only rows that
-- joined one of them (a LEFT JOIN's NULL-extended rows add nothing to the aggregates the plan accepts).
CREATE FUNCTION pgtrickle.emulator_delta_rows_sql(p_plan pgtrickle.emulator_delta_plans, p_source oid DEFAULT NULL,
                                                  p_from bigint DEFAULT NULL, p_to bigint DEFAULT NULL) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    from_sql text := p_plan.from_sql;
    where_sql text := p_plan.where_sql;
    src jsonb;
    cols text;
    at integer;
BEGIN
    IF p_source IS NOT NULL THEN
        src := p_plan.sources -> p_source::text;
        SELECT string_agg(format('b.%I AS %I', b.attname, a.attname), ', ' ORDER BY a.attnum) INTO cols
          FROM pg_catalog.pg_attribute a
          JOIN pg_catalog.pg_attribute b
            ON b.attrelid = format('pgtrickle_changes.%I', 'changes_' || (src ->> 'buffer'))::pg_catalog.regclass
           AND b.attname = pgtrickle.emulator_cb_col_name(a.attname) AND NOT b.attisdropped
         WHERE a.attrelid = p_source AND a.attnum > 0 AND NOT a.attisdropped;
        at := regexp_instr(pgtrickle.emulator_literal_mask(from_sql) || ' ',
                           '(?<![\w.$"])' || regexp_replace(src ->> 'ref', '([.$"])', '\\\1', 'g') || '\s');
        from_sql := overlay(from_sql PLACING
                        format('(SELECT %s, true AS __pgt_delta FROM pgtrickle_changes.%I b'
                               ' WHERE b.change_id > %s AND b.change_id <= %s AND b.action = ''I'')%s',
                               cols, 'changes_' || (src ->> 'buffer'), p_from, p_to,
                               CASE WHEN (src ->> 'aliased')::boolean THEN '' ELSE ' ' || (src ->> 'alias') END)
                        FROM at FOR length(src ->> 'ref'));
        where_sql := CASE WHEN where_sql IS NULL THEN '' ELSE format('(%s) AND ', where_sql) END
                     || format('%s.__pgt_delta', src ->> 'alias');
    END IF;
    RETURN format('SELECT %s FROM %s%s',
                  (SELECT string_agg(x, ', ') FROM (
                       SELECT format('%s AS k%s', k, o) AS x FROM unnest(p_plan.key_exprs) WITH ORDINALITY u(k, o)
                       UNION ALL
                       SELECT format('%s AS a%s', a, o) FROM unnest(p_plan.agg_args) WITH ORDINALITY u(a, o)
                        WHERE a IS NOT NULL) y),
                  from_sql, CASE WHEN where_sql IS NULL THEN '' ELSE ' WHERE ' || where_sql END);
END $$;

-- The state of the groups of rows r: k1.. and, per aggregate n, cn (COUNT), sn (SUM), sn and nn (AVG's running
-- sum and count), mn (MIN/MAX), dn (COUNT(DISTINCT), counted here; the delta path counts the new values).
CREATE FUNCTION pgtrickle.emulator_delta_state_sql(p_plan pgtrickle.emulator_delta_plans, p_rows text,
                                                   p_distinct_counted boolean DEFAULT true) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT format('SELECT %s, %s FROM (%s) r GROUP BY %s', keys, states, p_rows, keys)
      FROM (SELECT string_agg(format('r.k%s', o), ', ' ORDER BY o) AS keys
              FROM generate_series(1, cardinality(p_plan.key_exprs)) o) k,
           (SELECT string_agg(CASE kind
                       WHEN 'count_star' THEN format('count(*) AS c%s', o)
                       WHEN 'count' THEN format('count(r.a%1$s) AS c%1$s', o)
                       WHEN 'count_distinct' THEN CASE WHEN p_distinct_counted THEN format('count(DISTINCT r.a%1$s) AS d%1$s', o)
                                                       ELSE format('0::bigint AS d%s', o) END
                       WHEN 'sum' THEN format('sum(r.a%1$s) AS s%1$s', o)
                       WHEN 'avg' THEN format('sum(r.a%1$s) AS s%1$s, count(r.a%1$s) AS n%1$s', o)
                       WHEN 'min' THEN format('min(r.a%1$s) AS m%1$s', o)
                       WHEN 'max' THEN format('max(r.a%1$s) AS m%1$s', o) END, ', ' ORDER BY o) AS states
              FROM unnest(p_plan.agg_kinds) WITH ORDINALITY u(kind, o)) s
$$;

-- The storage columns computed from a state row s, and the storage's column list.
CREATE FUNCTION pgtrickle.emulator_delta_projection_sql(p_plan pgtrickle.emulator_delta_plans) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT string_agg(p, ', ' ORDER BY o) FROM unnest(p_plan.projection) WITH ORDINALITY u(p, o)
$$;

-- Raises (40001) unless every source but p_changed still has the change sequence the refresh started from:
-- read in the snapshot of the statement that computes a delta, so the state never mixes two snapshots.
CREATE FUNCTION pgtrickle.emulator_delta_guard(p_pgt_id bigint, p_expected jsonb, p_changed oid) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM pgtrickle.pgt_dependencies d
                 LEFT JOIN pgtrickle.emulator_source_changes c ON c.source_relid = d.source_relid
                WHERE d.pgt_id = p_pgt_id AND d.source_relid IS DISTINCT FROM p_changed
                  AND coalesce(c.change_seq, 0)
                      IS DISTINCT FROM coalesce((p_expected -> d.source_relid::text ->> 'change_seq')::bigint, 0)) THEN
        RAISE EXCEPTION 'emulator: a source of stream table % changed during its refresh', p_pgt_id
            USING ERRCODE = 'serialization_failure';
    END IF;
    RETURN true;
END $$;

-- Rebuilds the state from the sources and makes the storage equal to it (row ids of unchanged rows kept).
-- One statement reads the sources, fills the state, with p_check (a plan's first state) checks the state's
-- rows against the defining query's, and reads the frontier: all in one snapshot, so the frontier returned is
-- the one the state reflects. Raises 'emulator: incremental state disagrees' (P0001) when the check fails.
CREATE FUNCTION pgtrickle.emulator_delta_rebuild(p_plan pgtrickle.emulator_delta_plans, p_check boolean,
                                                 OUT rows_inserted bigint, OUT rows_deleted bigint, OUT frontier jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    st pgtrickle.pgt_stream_tables;
    state text := pgtrickle.emulator_state_table(p_plan.pgt_id);
    target text;
    rows_sql text := pgtrickle.emulator_delta_rows_sql(p_plan);
    keys text := (SELECT string_agg(format('k%s', o), ', ') FROM generate_series(1, cardinality(p_plan.key_exprs)) o);
    cols text;
    stored text;
    proj text := pgtrickle.emulator_delta_projection_sql(p_plan);
    fills text := '';
    disagreements bigint;
    seq text;
BEGIN
    SELECT * INTO STRICT st FROM pgtrickle.pgt_stream_tables WHERE pgt_id = p_plan.pgt_id;
    target := format('%I.%I', st.pgt_schema, st.pgt_name);
    cols := array_to_string(pgtrickle.emulator_columns(st.pgt_relid), ', ');
    stored := (SELECT string_agg('t.' || c, ', ') FROM unnest(pgtrickle.emulator_columns(st.pgt_relid)) c);
    PERFORM pgtrickle.emulator_drop_delta_state(p_plan.pgt_id);
    EXECUTE format('CREATE TABLE %s AS %s WITH NO DATA', state, pgtrickle.emulator_delta_state_sql(p_plan, rows_sql));
    EXECUTE format('ALTER TABLE %s ADD COLUMN __pgt_row_id bigint', state);
    EXECUTE format('CREATE UNIQUE INDEX ON %s (%s) NULLS NOT DISTINCT', state, keys);
    EXECUTE format('CREATE UNIQUE INDEX ON %s (__pgt_row_id)', state);
    FOR i IN 1 .. cardinality(p_plan.agg_kinds) LOOP
        CONTINUE WHEN p_plan.agg_kinds[i] <> 'count_distinct';
        EXECUTE format('CREATE TABLE %s AS SELECT %s, r.a%s AS v FROM (%s) r WITH NO DATA',
                       pgtrickle.emulator_state_table(p_plan.pgt_id, i),
                       (SELECT string_agg(format('r.k%s', o), ', ') FROM generate_series(1, cardinality(p_plan.key_exprs)) o),
                       i, rows_sql);
        EXECUTE format('CREATE UNIQUE INDEX ON %s (%s, v) NULLS NOT DISTINCT', pgtrickle.emulator_state_table(p_plan.pgt_id, i), keys);
        fills := fills || format(', fill_d%1$s AS (INSERT INTO %2$s SELECT DISTINCT %3$s, r.a%1$s FROM r WHERE r.a%1$s IS NOT NULL)',
                                 i, pgtrickle.emulator_state_table(p_plan.pgt_id, i),
                                 (SELECT string_agg(format('r.k%s', o), ', ') FROM generate_series(1, cardinality(p_plan.key_exprs)) o));
    END LOOP;
    EXECUTE format($q$
        WITH r AS NOT MATERIALIZED (%1$s),  -- read once per use (in the statement's one snapshot), never spooled
             grouped AS MATERIALIZED (%2$s),
             fill AS (INSERT INTO %3$s (%4$s) SELECT * FROM grouped)
             %5$s,
             mine AS (SELECT ROW(%6$s)::text AS t FROM grouped s),
             theirs AS (SELECT ROW(q.*)::text AS t FROM (%7$s) q WHERE %9$s),
             wrong AS ((SELECT t FROM mine WHERE %9$s EXCEPT ALL SELECT t FROM theirs)
                       UNION ALL (SELECT t FROM theirs EXCEPT ALL SELECT t FROM mine))
        SELECT (SELECT count(*) FROM wrong), pgtrickle.emulator_current_frontier(%8$s)
    $q$, rows_sql,
         replace(pgtrickle.emulator_delta_state_sql(p_plan, 'SELECT * FROM r'), '(SELECT * FROM r) r', 'r'),
         state,
         (SELECT string_agg(a.attname::text, ', ' ORDER BY a.attnum) FROM pg_catalog.pg_attribute a
           WHERE a.attrelid = state::pg_catalog.regclass AND a.attnum > 0 AND NOT a.attisdropped AND a.attname <> '__pgt_row_id'),
         fills, proj, pgtrickle.emulator_refresh_query(p_plan.pgt_id), p_plan.pgt_id,
         CASE WHEN p_check THEN 'true' ELSE 'false' END)
    INTO disagreements, frontier;
    IF disagreements > 0 THEN
        RAISE EXCEPTION 'emulator: incremental state disagrees with the defining query (% rows)', disagreements;
    END IF;
    -- Pair the state's rows with the stored rows of the same text; delete the stored rows left over; insert
    -- the state's rows left over under new row ids.
    EXECUTE format($q$
        UPDATE %1$s x SET __pgt_row_id = m.id
          FROM (SELECT p.sid, o.id
                  FROM (SELECT s.ctid AS sid, ROW(%2$s)::text AS t, row_number() OVER (PARTITION BY ROW(%2$s)::text) AS rn
                          FROM %1$s s) p
                  JOIN (SELECT t.__pgt_row_id AS id, ROW(%3$s)::text AS t, row_number() OVER (PARTITION BY ROW(%3$s)::text) AS rn
                          FROM %4$s t) o ON o.t = p.t AND o.rn = p.rn) m
         WHERE x.ctid = m.sid
    $q$, state, proj, stored, target);
    EXECUTE format('DELETE FROM %s t WHERE NOT EXISTS (SELECT 1 FROM %s s WHERE s.__pgt_row_id = t.__pgt_row_id)', target, state);
    GET DIAGNOSTICS rows_deleted = ROW_COUNT;
    seq := pg_catalog.pg_get_serial_sequence(target, '__pgt_row_id');
    EXECUTE format($q$
        WITH n AS (UPDATE %1$s s SET __pgt_row_id = nextval(%2$L) WHERE s.__pgt_row_id IS NULL RETURNING s.*)
        INSERT INTO %3$s (__pgt_row_id, %4$s) OVERRIDING SYSTEM VALUE SELECT s.__pgt_row_id, %5$s FROM n s
    $q$, state, seq, target, cols, proj);
    GET DIAGNOSTICS rows_inserted = ROW_COUNT;
END $$;

-- Applies the rows p_source received (inserts with change_id in (p_from, p_to]) to the state and the storage.
CREATE FUNCTION pgtrickle.emulator_delta_apply(p_plan pgtrickle.emulator_delta_plans, p_source oid, p_from bigint,
                                               p_to bigint, p_expected jsonb,
                                               OUT rows_inserted bigint, OUT rows_deleted bigint)
LANGUAGE plpgsql AS $$
DECLARE
    st pgtrickle.pgt_stream_tables;
    state text := pgtrickle.emulator_state_table(p_plan.pgt_id);
    target text;
    nkeys integer := cardinality(p_plan.key_exprs);
    keys text := (SELECT string_agg(format('k%s', o), ', ') FROM generate_series(1, nkeys) o);
    rkeys text := (SELECT string_agg(format('r.k%s', o), ', ') FROM generate_series(1, nkeys) o);
    cols text;
    proj text := pgtrickle.emulator_delta_projection_sql(p_plan);
    distinct_ctes text := '';
    distinct_joins text := '';
    state_cols text;
    merge_sets text;
    values_sql text;
    touched bigint[];
    ok boolean;
BEGIN
    SELECT * INTO STRICT st FROM pgtrickle.pgt_stream_tables WHERE pgt_id = p_plan.pgt_id;
    target := format('%I.%I', st.pgt_schema, st.pgt_name);
    cols := array_to_string(pgtrickle.emulator_columns(st.pgt_relid), ', ');
    SELECT string_agg(a.attname::text, ', ' ORDER BY a.attnum) INTO state_cols
      FROM pg_catalog.pg_attribute a
     WHERE a.attrelid = state::pg_catalog.regclass AND a.attnum > 0 AND NOT a.attisdropped AND a.attname <> '__pgt_row_id';
    -- Merge rules: counts and sums add (a NULL sum is "no value yet"), extremes compare, distinct counts add
    -- the values new to the group.
    SELECT string_agg(CASE
               WHEN a.attname ~ '^[cnd][0-9]+$' THEN format('%1$I = s.%1$I + EXCLUDED.%1$I', a.attname)
               WHEN a.attname ~ '^s[0-9]+$' THEN format('%1$I = CASE WHEN s.%1$I IS NULL THEN EXCLUDED.%1$I WHEN EXCLUDED.%1$I IS NULL THEN s.%1$I ELSE s.%1$I + EXCLUDED.%1$I END', a.attname)
               WHEN a.attname ~ '^m[0-9]+$' THEN format('%1$I = %2$s(s.%1$I, EXCLUDED.%1$I)', a.attname,
                        CASE p_plan.agg_kinds[substr(a.attname, 2)::integer] WHEN 'min' THEN 'LEAST' ELSE 'GREATEST' END)
           END, ', ' ORDER BY a.attnum) INTO merge_sets
      FROM pg_catalog.pg_attribute a
     WHERE a.attrelid = state::pg_catalog.regclass AND a.attnum > 0 AND NOT a.attisdropped AND a.attname ~ '^[cndsm][0-9]+$';
    FOR i IN 1 .. cardinality(p_plan.agg_kinds) LOOP
        CONTINUE WHEN p_plan.agg_kinds[i] <> 'count_distinct';
        distinct_ctes := distinct_ctes || format(
            ', new_d%1$s AS (INSERT INTO %2$s AS d SELECT DISTINCT %3$s, r.a%1$s FROM r WHERE r.a%1$s IS NOT NULL'
            ' ON CONFLICT DO NOTHING RETURNING %4$s),'
            ' count_d%1$s AS (SELECT %5$s, count(*) AS n FROM new_d%1$s GROUP BY %5$s)',
            i, pgtrickle.emulator_state_table(p_plan.pgt_id, i), rkeys,
            (SELECT string_agg(format('d.k%s', o), ', ') FROM generate_series(1, nkeys) o), keys);
        distinct_joins := distinct_joins || format(' LEFT JOIN count_d%1$s ON %2$s', i,
            (SELECT string_agg(format('count_d%1$s.k%2$s IS NOT DISTINCT FROM g.k%2$s', i, o), ' AND ')
               FROM generate_series(1, nkeys) o));
    END LOOP;
    -- The state row's values from the delta's groups g (distinct counts from the values new to the group).
    SELECT string_agg(CASE WHEN a.attname ~ '^d[0-9]+$'
                           THEN format('coalesce(count_%s.n, 0)', a.attname)
                           ELSE 'g.' || quote_ident(a.attname) END, ', ' ORDER BY a.attnum) INTO values_sql
      FROM pg_catalog.pg_attribute a
     WHERE a.attrelid = state::pg_catalog.regclass AND a.attnum > 0 AND NOT a.attisdropped AND a.attname <> '__pgt_row_id';
    EXECUTE format($q$
        WITH guard AS MATERIALIZED (SELECT pgtrickle.emulator_delta_guard(%1$s, %2$L, %3$s) AS ok),
             r AS NOT MATERIALIZED (%4$s)  -- a large delta is read per use, never spooled to disk
             %5$s,
             g AS (%6$s),
             merged AS (INSERT INTO %7$s AS s (%8$s) SELECT %9$s FROM g%10$s
                        ON CONFLICT (%11$s) DO UPDATE SET %12$s
                        RETURNING s.__pgt_row_id)
        SELECT (SELECT ok FROM guard), array_agg(__pgt_row_id) FILTER (WHERE __pgt_row_id IS NOT NULL) FROM merged
    $q$, p_plan.pgt_id, p_expected, p_source,
         pgtrickle.emulator_delta_rows_sql(p_plan, p_source, p_from, p_to),
         distinct_ctes,
         replace(pgtrickle.emulator_delta_state_sql(p_plan, 'SELECT * FROM r', false), '(SELECT * FROM r) r', 'r'),
         state, state_cols, values_sql, distinct_joins, keys, merge_sets)
    INTO ok, touched;
    -- Groups seen for the first time get a row id and a stored row; the others' stored rows are rewritten
    -- where their text changed.
    EXECUTE format($q$
        WITH n AS (UPDATE %1$s s SET __pgt_row_id = nextval(%2$L) WHERE s.__pgt_row_id IS NULL RETURNING s.*)
        INSERT INTO %3$s (__pgt_row_id, %4$s) OVERRIDING SYSTEM VALUE SELECT s.__pgt_row_id, %5$s FROM n s
    $q$, state, pg_catalog.pg_get_serial_sequence(target, '__pgt_row_id'), target, cols, proj);
    GET DIAGNOSTICS rows_inserted = ROW_COUNT;
    rows_deleted := 0;
    IF touched IS NOT NULL THEN
        EXECUTE format($q$
            UPDATE %1$s t SET (%2$s) = (SELECT %3$s)
              FROM (SELECT s.__pgt_row_id AS __pgt_id, %4$s FROM %5$s s WHERE s.__pgt_row_id = ANY ($1)) p
             WHERE t.__pgt_row_id = p.__pgt_id AND ROW(%6$s)::text IS DISTINCT FROM ROW(%3$s)::text
        $q$, target, cols,
             (SELECT string_agg('p.' || c, ', ') FROM unnest(pgtrickle.emulator_columns(st.pgt_relid)) c),
             (SELECT string_agg(format('%s AS %s', e, c), ', ')
                FROM unnest(p_plan.projection, pgtrickle.emulator_columns(st.pgt_relid)) u(e, c)),
             state,
             (SELECT string_agg('t.' || c, ', ') FROM unnest(pgtrickle.emulator_columns(st.pgt_relid)) c))
        USING touched;
        GET DIAGNOSTICS rows_deleted = ROW_COUNT;
        rows_inserted := rows_inserted + rows_deleted;  -- an updated row counts as deleted and inserted, as the diff counts it
    END IF;
END $$;

-- A DIFFERENTIAL refresh through the state, when it can be: handled = false means "recompute as before".
-- p_consumed is the frontier the refresh started from; frontier is the one to record.
CREATE FUNCTION pgtrickle.emulator_delta_refresh(p_pgt_id bigint, p_consumed jsonb, OUT handled boolean,
                                                 OUT rows_inserted bigint, OUT rows_deleted bigint, OUT frontier jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    st pgtrickle.pgt_stream_tables;
    plan pgtrickle.emulator_delta_plans;
    changed text[];
    src jsonb;
    lo bigint;
    hi bigint;
    only_inserts boolean;
    buffered bigint;
BEGIN
    handled := false;
    SELECT * INTO STRICT st FROM pgtrickle.pgt_stream_tables WHERE pgt_id = p_pgt_id;
    IF st.refresh_mode <> 'DIFFERENTIAL' OR st.topk_limit IS NOT NULL THEN
        RETURN;
    END IF;
    -- The state belongs to the stream table's owner: another role (a superuser's manual refresh included)
    -- recomputes, which leaves the state behind.
    IF (SELECT c.relowner FROM pg_catalog.pg_class c WHERE c.oid = st.pgt_relid)
       IS DISTINCT FROM (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = current_user) THEN
        UPDATE pgtrickle.emulator_delta_plans SET state_valid = false WHERE pgt_id = p_pgt_id AND state_valid;
        RETURN;
    END IF;
    SELECT * INTO plan FROM pgtrickle.emulator_delta_plans WHERE pgt_id = p_pgt_id;
    IF NOT FOUND THEN
        plan := pgtrickle.emulator_delta_plan(p_pgt_id);
    END IF;
    IF NOT plan.supported THEN
        RETURN;
    END IF;
    -- The sources whose change sequence moved since the last refresh.
    changed := ARRAY(SELECT e.key FROM jsonb_each(p_consumed) e
                      WHERE (e.value ->> 'change_seq') IS DISTINCT FROM (st.frontier -> e.key ->> 'change_seq'));
    IF plan.state_valid AND st.frontier IS NOT NULL AND st.is_populated THEN
        IF cardinality(changed) = 0 THEN
            handled := true; rows_inserted := 0; rows_deleted := 0; frontier := p_consumed;
            RETURN;
        END IF;
        src := plan.sources -> changed[1];
        lo := (st.frontier -> changed[1] ->> 'change_id')::bigint;
        hi := (p_consumed -> changed[1] ->> 'change_id')::bigint;
        IF cardinality(changed) = 1 AND coalesce((src ->> 'ok')::boolean, false) AND lo IS NOT NULL AND hi IS NOT NULL THEN
            EXECUTE format('SELECT coalesce(bool_and(action = ''I''), true), count(*) FROM pgtrickle_changes.%I'
                           ' WHERE change_id > $1 AND change_id <= $2', 'changes_' || (src ->> 'buffer'))
               INTO only_inserts, buffered USING lo, hi;
            -- Every captured row of the range is in the buffer (the counters agree) and all are inserts.
            IF only_inserts AND buffered = (p_consumed -> changed[1] ->> 'changed_rows')::bigint
                                           - (st.frontier -> changed[1] ->> 'changed_rows')::bigint THEN
                BEGIN
                    SELECT a.rows_inserted, a.rows_deleted INTO rows_inserted, rows_deleted
                      FROM pgtrickle.emulator_delta_apply(plan, changed[1]::oid, lo, hi, p_consumed) a;
                    UPDATE pgtrickle.emulator_delta_plans SET incremental_refreshes = incremental_refreshes + 1
                     WHERE pgt_id = p_pgt_id;
                    handled := true; frontier := p_consumed;
                    RETURN;
                EXCEPTION WHEN OTHERS THEN
                    NULL;  -- rebuilt below
                END;
            END IF;
        END IF;
    END IF;
    -- A rebuild pays a recomputation and a check: only when the change came through sources the delta can
    -- read (a later insert-only change is then applied as a delta); otherwise recompute as before.
    IF EXISTS (SELECT 1 FROM unnest(changed) c WHERE NOT coalesce((plan.sources -> c ->> 'ok')::boolean, false)) THEN
        PERFORM pgtrickle.emulator_drop_delta_state(p_pgt_id);
        RETURN;
    END IF;
    BEGIN
        SELECT r.rows_inserted, r.rows_deleted, r.frontier INTO rows_inserted, rows_deleted, frontier
          FROM pgtrickle.emulator_delta_rebuild(plan, plan.state_rebuilds = 0) r;
        UPDATE pgtrickle.emulator_delta_plans SET state_valid = true, state_rebuilds = state_rebuilds + 1
         WHERE pgt_id = p_pgt_id;
        handled := true;
    EXCEPTION WHEN OTHERS THEN
        -- Never trust this plan again when its state disagreed or could not be built; a data error of the
        -- query itself (class 22) is the recomputation's to report.
        IF SQLSTATE NOT LIKE '22%' AND SQLSTATE NOT IN ('40001', '42501') THEN
            UPDATE pgtrickle.emulator_delta_plans SET supported = false, reason = 'state rebuild failed: ' || SQLERRM
             WHERE pgt_id = p_pgt_id;
        END IF;
        PERFORM pgtrickle.emulator_drop_delta_state(p_pgt_id);
    END;
END $$;

-- ---------------------------------------------------------------------------------------------------
-- Refresh: recompute the defining query, apply only the row differences (multiset, NULL-safe)
-- ---------------------------------------------------------------------------------------------------
-- Rows are compared by their text form, which is hashable and NULL-safe; it is stricter than type
-- equality (1.0 vs 1.00), so the stored rows end up exactly as the query returns them.
-- Returns the counts actually applied. Raises on any error (callers decide how to record it).
-- With p_full (a FULL or REINITIALIZE refresh of a table without TopK), the refresh is pg_trickle's
-- (src/refresh/merge/mod.rs::execute_full_refresh): TRUNCATE the storage and INSERT the query's rows, in the
-- refresh transaction (indexes kept, readers wait on the TRUNCATE's lock as on the engine's); rows_deleted is
-- then the number of rows the table held.
CREATE FUNCTION pgtrickle.emulator_apply(p_pgt_id bigint, p_full boolean DEFAULT false, p_consumed jsonb DEFAULT NULL,
                                         OUT rows_inserted bigint, OUT rows_deleted bigint, OUT frontier jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    st pgtrickle.pgt_stream_tables;
    target text;
    cols text;
    stored_cols text;
    wanted_cols text;
    query_cols text;  -- the query's columns in storage order (the key compares like with like)
    col_list text[];
    handled boolean;
BEGIN
    SELECT * INTO STRICT st FROM pgtrickle.pgt_stream_tables WHERE pgt_id = p_pgt_id;
    target := format('%I.%I', st.pgt_schema, st.pgt_name);
    SELECT array_to_string(c, ', '), array_to_string(array(SELECT 's.' || x FROM unnest(c) x), ', '),
           array_to_string(array(SELECT 'w.' || x FROM unnest(c) x), ', '),
           array_to_string(array(SELECT 'q.' || x FROM unnest(c) x), ', ')
      INTO cols, stored_cols, wanted_cols, query_cols
      FROM pgtrickle.emulator_columns(st.pgt_relid) c;
    col_list := pgtrickle.emulator_columns(st.pgt_relid);
    -- A DIFFERENTIAL refresh goes through the incremental state when it can (emulator_delta_refresh); any
    -- other refresh leaves the state behind (rebuilt by the next DIFFERENTIAL one).
    IF p_full THEN
        PERFORM pgtrickle.emulator_drop_delta_state(p_pgt_id);
    ELSIF p_consumed IS NOT NULL THEN
        SELECT d.rows_inserted, d.rows_deleted, d.frontier, d.handled INTO rows_inserted, rows_deleted, frontier, handled
          FROM pgtrickle.emulator_delta_refresh(p_pgt_id, p_consumed) d;
        IF handled THEN
            RETURN;
        END IF;
    END IF;
    IF p_full AND st.topk_limit IS NULL THEN
        SELECT s.row_count INTO rows_deleted FROM pgtrickle.emulator_stats s WHERE s.pgt_id = p_pgt_id;
        EXECUTE format('TRUNCATE %s', target);
        EXECUTE format('INSERT INTO %s (%s) SELECT %s FROM (%s) q',
                       target, cols, query_cols, pgtrickle.emulator_refresh_query(st.pgt_id));
        GET DIAGNOSTICS rows_inserted = ROW_COUNT;
        rows_deleted := coalesce(rows_deleted, 0);
        RETURN;
    END IF;
    -- The diff: one hash aggregate per side (rows counted by their text form, as a multiset), a hash full
    -- join of the two, and no sort: the rows to insert are rebuilt from their text form with the storage's
    -- row type (text output and input of the stored types round-trip exactly), the rows to delete are named
    -- by their row identity __pgt_row_id (as pg_trickle's MERGE keys on it, src/refresh/merge/mod.rs).
    EXECUTE format($q$
        WITH wanted AS (
                 SELECT ROW(NULL::bigint, %6$s)::text AS __pgt_key, count(*) AS __pgt_n FROM (%1$s) q GROUP BY 1),
             stored AS (
                 SELECT ROW(NULL::bigint, %3$s)::text AS __pgt_key, count(*) AS __pgt_n,
                        array_agg(s.__pgt_row_id) AS __pgt_ids
                   FROM %2$s s GROUP BY 1),
             diff AS MATERIALIZED (
                 SELECT coalesce(w.__pgt_key, s.__pgt_key) AS __pgt_key,
                        coalesce(w.__pgt_n, 0) - coalesce(s.__pgt_n, 0) AS __pgt_d, s.__pgt_ids
                   FROM wanted w FULL JOIN stored s ON s.__pgt_key = w.__pgt_key
                  WHERE w.__pgt_n IS DISTINCT FROM s.__pgt_n),
             deleted AS (
                 DELETE FROM %2$s t
                  USING (SELECT unnest(d.__pgt_ids[1:-d.__pgt_d]) AS __pgt_row_id FROM diff d WHERE d.__pgt_d < 0) x
                  WHERE t.__pgt_row_id = x.__pgt_row_id
                 RETURNING 1),
             inserted AS (
                 INSERT INTO %2$s (%5$s)
                 SELECT %4$s
                   FROM (SELECT d.__pgt_key::%2$s AS r FROM diff d, generate_series(1, d.__pgt_d) WHERE d.__pgt_d > 0) y
                 RETURNING 1)
        SELECT (SELECT count(*) FROM inserted), (SELECT count(*) FROM deleted)
    $q$, pgtrickle.emulator_refresh_query(st.pgt_id), target, stored_cols,
          array_to_string(array(SELECT '(y.r).' || x FROM unnest(col_list) x), ', '), cols, query_cols)
    INTO rows_inserted, rows_deleted;
END $$;

-- Starts a history row (RUNNING) and returns its id. The action is the one pg_trickle records for the same
-- refresh, whatever the emulator runs (it always recomputes): src/api/helpers.rs (initial fill: FULL),
-- src/refresh/orchestrator.rs::determine_refresh_action (scheduler: REINITIALIZE when needs_reinit, else
-- DIFFERENTIAL for DIFFERENTIAL tables, FULL otherwise), src/api/refresh_ops.rs::execute_manual_refresh
-- (manual: DIFFERENTIAL for a DIFFERENTIAL table with a frontier and no TopK, else FULL). start_time is now(),
-- the refresh transaction's time, as src/catalog.rs::RefreshRecord::insert writes it.
CREATE FUNCTION pgtrickle.emulator_begin_refresh(p_pgt_id bigint, p_initiated_by text) RETURNS bigint
LANGUAGE sql AS $$
    INSERT INTO pgtrickle.pgt_refresh_history (pgt_id, data_timestamp, start_time, action, status, initiated_by)
    SELECT pgt_id, coalesce(data_timestamp, now()), now(),
           CASE WHEN p_initiated_by = 'INITIAL' THEN 'FULL'
                WHEN p_initiated_by = 'SCHEDULER' AND needs_reinit THEN 'REINITIALIZE'
                WHEN p_initiated_by = 'SCHEDULER' AND refresh_mode = 'DIFFERENTIAL' THEN 'DIFFERENTIAL'
                WHEN p_initiated_by <> 'SCHEDULER' AND refresh_mode = 'DIFFERENTIAL' AND frontier IS NOT NULL
                     AND topk_limit IS NULL THEN 'DIFFERENTIAL'
                ELSE 'FULL' END,
           'RUNNING', p_initiated_by
      FROM pgtrickle.pgt_stream_tables WHERE pgt_id = p_pgt_id
    RETURNING refresh_id
$$;

-- Is a refresh error transient (retried, counted towards SUSPENDED) or permanent (status ERROR at once)?
-- pg_trickle's scheduler classifies the message of a PostgreSQL error raised by a refresh with
-- src/error.rs::classify_error_for_retry, which falls back to classify_spi_error_retryable (the message
-- carries no bracketed SQLSTATE): permanent when the message names a missing object, a syntax error, a
-- permission, a constraint, a division by zero or a duplicate; otherwise transient (unknown errors included).
CREATE FUNCTION pgtrickle.emulator_error_is_retryable(p_message text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT NOT (lower(coalesce(p_message, '')) LIKE ANY (ARRAY[
        '%does not exist%', '%syntax error%', '%column of relation%', '%permission denied%',
        '%insufficient_privilege%', '%unique constraint%', '%foreign key constraint%', '%not-null constraint%',
        '%check constraint%', '%violates%', '%division by zero%', '%already exists%']))
$$;

-- Runs the refresh a history row stands for and completes the row. With p_catch (the scheduler), an error
-- is handled as pg_trickle's scheduler handles it (src/scheduler/mod.rs::refresh_single_st and
-- execute_scheduled_refresh, src/scheduler/dispatch.rs): a permanent error (emulator_error_is_retryable)
-- sets status ERROR, last_error_message and last_error_at at once and leaves no history row (the refresh
-- transaction that held the RUNNING row is rolled back, as in the default parallel-worker path); a transient
-- error completes the row as FAILED, adds to consecutive_errors and suspends at 3
-- (pg_trickle.max_consecutive_errors) with the auto_suspended alert. Without p_catch (manual refresh, alter)
-- the error is raised to the caller and, the caller's transaction aborting, nothing is recorded.
-- The figures recorded are the engine's for the same refresh (src/refresh/merge/mod.rs): a FULL or
-- REINITIALIZE refresh records all rows of the table as inserted and 0 deleted; a DIFFERENTIAL one records
-- the rows its MERGE touched (here the rows the diff inserted or deleted: an updated row counts twice where
-- the MERGE counts it once), at least 1 when a source changed, and 0 deleted; the initial fill records 0 / 0
-- (src/api/helpers.rs). end_time is now(), as src/catalog.rs::RefreshRecord::complete writes it: start and
-- end are the same transaction time, so a history duration is never a measure (on the engine either).
CREATE FUNCTION pgtrickle.emulator_finish_refresh(p_refresh_id bigint, p_catch boolean DEFAULT true) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    h pgtrickle.pgt_refresh_history;
    consumed jsonb;
    changed boolean;
    ins bigint;
    del bigint;
    rec_ins bigint;
    finished timestamptz;
    elapsed_ms double precision;
    message text;
    errors integer;
BEGIN
    SELECT * INTO STRICT h FROM pgtrickle.pgt_refresh_history WHERE refresh_id = p_refresh_id;
    -- One refresh of a stream table at a time (two concurrent diffs against the same stored rows would
    -- both insert the new rows). A manual refresh checks this lock itself first (refresh_stream_table:
    -- a NOTICE, as pg_trickle's); the scheduler records the table as skipped and tries again on a later
    -- tick. The lock is held until the transaction ends, and every statement below reads a snapshot taken
    -- after it was granted.
    IF NOT pgtrickle.emulator_try_refresh_lock(h.pgt_id) THEN
        IF NOT p_catch THEN
            RAISE EXCEPTION 'refresh of stream table % is already in progress',
                (SELECT format('%s.%s', pgt_schema, pgt_name) FROM pgtrickle.pgt_stream_tables WHERE pgt_id = h.pgt_id)
                USING ERRCODE = 'object_in_use';
        END IF;
        UPDATE pgtrickle.pgt_refresh_history
           SET action = 'SKIP', status = 'SKIPPED', end_time = now(),
               error_message = 'another refresh of this stream table was in progress'
         WHERE refresh_id = p_refresh_id;
        RETURN 'SKIPPED';
    END IF;
    -- What the sources look like *before* the recomputation: later changes trigger another refresh.
    consumed := pgtrickle.emulator_current_frontier(h.pgt_id);
    changed := pgtrickle.emulator_sources_changed(h.pgt_id);
    BEGIN
        PERFORM pg_catalog.set_config('pgtrickle.emulator_refreshing',
                                      (SELECT pgt_relid::text FROM pgtrickle.pgt_stream_tables WHERE pgt_id = h.pgt_id), true);
        SELECT a.rows_inserted, a.rows_deleted, coalesce(a.frontier, consumed) INTO ins, del, consumed
          FROM pgtrickle.emulator_apply(h.pgt_id, h.action IN ('FULL', 'REINITIALIZE'), consumed) a;
        PERFORM pg_catalog.set_config('pgtrickle.emulator_refreshing', '', true);
        IF ins + del > 0 THEN
            PERFORM pgtrickle.emulator_record_storage_change(
                (SELECT pgt_relid FROM pgtrickle.pgt_stream_tables WHERE pgt_id = h.pgt_id), ins + del);
        END IF;
    EXCEPTION WHEN OTHERS THEN
        IF NOT p_catch THEN
            RAISE;
        END IF;
        message := SQLERRM;
        IF NOT pgtrickle.emulator_error_is_retryable(message) THEN
            DELETE FROM pgtrickle.pgt_refresh_history WHERE refresh_id = p_refresh_id;
            UPDATE pgtrickle.pgt_stream_tables
               SET status = 'ERROR', last_error_message = message, last_error_at = now(), updated_at = now()
             WHERE pgt_id = h.pgt_id;
            RETURN 'ERROR';
        END IF;
        UPDATE pgtrickle.pgt_refresh_history
           SET status = 'FAILED', end_time = now(), error_message = message
         WHERE refresh_id = p_refresh_id;
        UPDATE pgtrickle.pgt_stream_tables
           SET consecutive_errors = consecutive_errors + 1,
               status = CASE WHEN consecutive_errors + 1 >= 3 THEN 'SUSPENDED' ELSE status END,
               updated_at = now()
         WHERE pgt_id = h.pgt_id
        RETURNING consecutive_errors INTO errors;
        IF errors = 3 THEN  -- just suspended: pg_trickle's alert, as resume_stream_table sends 'resumed'
            PERFORM pg_notify('pg_trickle_alert', json_build_object(
                'event', 'auto_suspended', 'pgt_schema', st_schema, 'pgt_name', st_name, 'error', message)::text)
              FROM (SELECT pgt_schema AS st_schema, pgt_name AS st_name
                      FROM pgtrickle.pgt_stream_tables WHERE pgt_id = h.pgt_id) x;
        END IF;
        UPDATE pgtrickle.emulator_stats SET total_failed = total_failed + 1 WHERE pgt_id = h.pgt_id;
        RETURN 'FAILED';
    END;
    finished := clock_timestamp();
    elapsed_ms := extract(epoch FROM finished - h.start_time) * 1000;
    rec_ins := CASE WHEN h.initiated_by = 'INITIAL' THEN 0
                    WHEN h.action = 'DIFFERENTIAL' THEN CASE WHEN changed THEN greatest(ins + del, 1) ELSE 0 END
                    ELSE (SELECT s.row_count + ins - del FROM pgtrickle.emulator_stats s WHERE s.pgt_id = h.pgt_id) END;
    UPDATE pgtrickle.pgt_refresh_history
       SET status = 'COMPLETED', end_time = now(), rows_inserted = rec_ins, rows_deleted = 0,
           delta_row_count = CASE WHEN h.initiated_by = 'SCHEDULER' THEN rec_ins ELSE 0 END,
           merge_strategy_used = CASE WHEN h.initiated_by = 'MANUAL' THEN NULL ELSE h.action END,
           was_full_fallback = (h.action = 'REINITIALIZE'),
           data_timestamp = CASE WHEN ins + del > 0 THEN h.start_time ELSE data_timestamp END
     WHERE refresh_id = p_refresh_id;
    UPDATE pgtrickle.pgt_stream_tables
       SET is_populated = true, consecutive_errors = 0, frontier = consumed, last_refresh_at = now(),
           data_timestamp = CASE WHEN ins + del > 0 OR data_timestamp IS NULL THEN h.start_time ELSE data_timestamp END,
           last_full_ms = elapsed_ms,
           effective_refresh_mode = CASE WHEN topk_limit IS NOT NULL THEN 'TOP_K'
                                         WHEN h.action = 'DIFFERENTIAL' THEN 'DIFFERENTIAL' ELSE 'FULL' END,
           needs_reinit = false, last_error_message = NULL, last_error_at = NULL,
           status = CASE WHEN status = 'INITIALIZING' THEN 'ACTIVE' ELSE status END, updated_at = finished
     WHERE pgt_id = h.pgt_id;
    PERFORM pgtrickle.emulator_consume_buffers(h.pgt_id);
    UPDATE pgtrickle.emulator_stats
       SET row_count = row_count + ins - del, total_completed = total_completed + 1,
           full_count = full_count + CASE WHEN h.action = 'FULL' THEN 1 ELSE 0 END,
           diff_count = diff_count + CASE WHEN h.action = 'DIFFERENTIAL' THEN 1 ELSE 0 END,
           rows_inserted = rows_inserted + rec_ins,
           sum_duration_ms = sum_duration_ms + elapsed_ms
     WHERE pgt_id = h.pgt_id;
    RETURN 'COMPLETED';
END $$;

-- Due but nothing changed upstream: a NO_DATA row, as pg_trickle's scheduler writes (start_time and end_time
-- both now(), src/catalog.rs::RefreshRecord; last errors cleared, src/catalog.rs::update_after_no_data_refresh).
-- last_refresh_at is now(), the refresh transaction's start, as every pg_trickle catalog update after a refresh
-- writes it (src/catalog.rs, "last_refresh_at = now()"): the next due time counts from when the refresh began
-- (src/scheduler/mod.rs::check_schedule compares now() - last_refresh_at with the schedule), not from its end.
CREATE FUNCTION pgtrickle.emulator_record_no_data(p_pgt_id bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    started timestamptz := now();
BEGIN
    IF NOT pgtrickle.emulator_try_refresh_lock(p_pgt_id) THEN
        RETURN;  -- a refresh of this table is running: it records the outcome, nothing to add
    END IF;
    INSERT INTO pgtrickle.pgt_refresh_history
           (pgt_id, data_timestamp, start_time, end_time, action, status, initiated_by)
    SELECT pgt_id, coalesce(data_timestamp, started), started, started, 'NO_DATA', 'COMPLETED', 'SCHEDULER'
      FROM pgtrickle.pgt_stream_tables WHERE pgt_id = p_pgt_id;
    UPDATE pgtrickle.pgt_stream_tables
       SET last_refresh_at = now(), consecutive_errors = 0, last_error_message = NULL,
           last_error_at = NULL, updated_at = clock_timestamp()
     WHERE pgt_id = p_pgt_id;
    UPDATE pgtrickle.emulator_stats SET total_completed = total_completed + 1 WHERE pgt_id = p_pgt_id;
END $$;

-- ---------------------------------------------------------------------------------------------------
-- Scheduling
-- ---------------------------------------------------------------------------------------------------
-- Effective interval of a 'calculated' stream table: the minimum of its immediate downstream tables'
-- effective schedules, or pg_trickle.default_schedule_seconds (1 s) when it has none. Cron downstreams
-- take no part (as in pg_trickle).
CREATE FUNCTION pgtrickle.emulator_effective_seconds(p_pgt_id bigint, p_depth integer DEFAULT 0)
RETURNS double precision
LANGUAGE plpgsql STABLE AS $$
DECLARE
    st pgtrickle.pgt_stream_tables;
    result double precision;
BEGIN
    SELECT * INTO st FROM pgtrickle.pgt_stream_tables WHERE pgt_id = p_pgt_id;
    IF st.schedule IS NOT NULL THEN
        RETURN pgtrickle.emulator_schedule_seconds(st.schedule);
    END IF;
    IF p_depth > 64 THEN
        RETURN 1;
    END IF;
    SELECT min(pgtrickle.emulator_effective_seconds(down.pgt_id, p_depth + 1)) INTO result
      FROM pgtrickle.pgt_dependencies d
      JOIN pgtrickle.pgt_stream_tables down ON down.pgt_id = d.pgt_id
     WHERE d.source_relid = st.pgt_relid;
    RETURN coalesce(result, 1);
END $$;

-- Stream tables in topological order (upstream first), ties by pgt_id.
CREATE FUNCTION pgtrickle.emulator_topological_order() RETURNS TABLE (pgt_id bigint, level integer)
LANGUAGE sql STABLE AS $$
    WITH RECURSIVE levels(pgt_id, level) AS (
        SELECT st.pgt_id, 0 FROM pgtrickle.pgt_stream_tables st
        UNION ALL
        SELECT down.pgt_id, l.level + 1
          FROM levels l
          JOIN pgtrickle.pgt_stream_tables up ON up.pgt_id = l.pgt_id
          JOIN pgtrickle.pgt_dependencies d ON d.source_relid = up.pgt_relid
          JOIN pgtrickle.pgt_stream_tables down ON down.pgt_id = d.pgt_id
         WHERE l.level < 64
    )
    SELECT pgt_id, max(level)::integer FROM levels GROUP BY pgt_id ORDER BY max(level), pgt_id
$$;

-- What the scheduler should do with a stream table now: 'REFRESH', 'NO_DATA' or NULL (nothing).
CREATE FUNCTION pgtrickle.emulator_due_action(p_pgt_id bigint) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    st pgtrickle.pgt_stream_tables;
    interval_s double precision;
    elapsed_s double precision;
    changed boolean;
BEGIN
    SELECT * INTO st FROM pgtrickle.pgt_stream_tables WHERE pgt_id = p_pgt_id;
    IF NOT FOUND OR st.status NOT IN ('ACTIVE', 'INITIALIZING') OR st.refresh_tier = 'frozen' THEN
        RETURN NULL;
    END IF;
    IF NOT st.is_populated THEN
        RETURN 'REFRESH';
    END IF;
    changed := pgtrickle.emulator_sources_changed(p_pgt_id);
    elapsed_s := extract(epoch FROM clock_timestamp() - coalesce(st.last_refresh_at, '-infinity'));
    IF st.refresh_mode = 'IMMEDIATE' THEN
        RETURN CASE WHEN changed THEN 'REFRESH' END;  -- maintained at the next tick, not in the writer's transaction
    END IF;
    IF st.schedule IS NULL THEN
        -- calculated: refresh whenever an upstream changed (including one refreshed earlier in this tick)
        IF changed THEN
            RETURN 'REFRESH';
        END IF;
        interval_s := pgtrickle.emulator_effective_seconds(p_pgt_id);
    ELSE
        interval_s := pgtrickle.emulator_schedule_seconds(st.schedule);
        IF interval_s IS NULL THEN
            RETURN NULL;  -- cron schedules are not run by the emulator's scheduler (README)
        END IF;
    END IF;
    interval_s := interval_s * CASE st.refresh_tier WHEN 'warm' THEN 2 WHEN 'cold' THEN 10 ELSE 1 END;
    IF elapsed_s < interval_s THEN
        RETURN NULL;
    END IF;
    RETURN CASE WHEN changed THEN 'REFRESH' ELSE 'NO_DATA' END;
END $$;

-- A scheduler session's claim on a stream table it found due for a refresh, in the refresh's transaction,
-- as pg_trickle's scheduler checks a table before refreshing it (src/scheduler/mod.rs::refresh_single_st):
--   1. the table's refresh lock (check_skip_needed, FOR UPDATE SKIP LOCKED on its catalog row): held by
--      another session (another scheduler session's refresh, a manual refresh, an ALTER) -> skipped, no
--      history row, tried again on a later pass;
--   2. still due once locked (the engine reloads the row after locking, "TOCTOU"): another session may have
--      refreshed it since this one looked;
--   3. FOR SHARE SKIP LOCKED on the catalog row of every upstream stream table ("ST-on-ST safety"), held to
--      the end of the refresh: one being refreshed -> skipped; and while this refresh runs, none of them can
--      be refreshed (their refresh lock conflicts with FOR SHARE);
--   4. no upstream stream table waiting for a refresh that this session has not tried in this pass
--      (p_tried): the engine dispatches a table only once its upstreams' refreshes of the wave are done
--      (src/scheduler/dispatch.rs::parallel_dispatch_tick, remaining_upstreams). A session walks the DAG
--      upstream first, so with one session an upstream due now was always tried first.
-- False when skipped; the caller then commits, releasing whatever was taken.
CREATE FUNCTION pgtrickle.emulator_claim_refresh(p_pgt_id bigint, p_tried bigint[] DEFAULT '{}')
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    upstreams bigint[];
    held integer;
BEGIN
    IF NOT pgtrickle.emulator_try_refresh_lock(p_pgt_id) THEN
        RETURN false;
    END IF;
    IF pgtrickle.emulator_due_action(p_pgt_id) IS DISTINCT FROM 'REFRESH' THEN
        RETURN false;
    END IF;
    upstreams := ARRAY(SELECT up.pgt_id
                         FROM pgtrickle.pgt_dependencies d
                         JOIN pgtrickle.pgt_stream_tables up ON up.pgt_relid = d.source_relid
                        WHERE d.pgt_id = p_pgt_id AND up.pgt_id <> p_pgt_id
                        ORDER BY up.pgt_id);
    IF cardinality(upstreams) = 0 THEN
        RETURN true;
    END IF;
    SELECT count(*) INTO held
      FROM (SELECT 1 FROM pgtrickle.pgt_stream_tables WHERE pgt_id = ANY (upstreams)
             ORDER BY pgt_id FOR SHARE SKIP LOCKED) x;
    IF held < cardinality(upstreams) THEN
        RETURN false;
    END IF;
    RETURN NOT EXISTS (SELECT 1 FROM unnest(upstreams) u(pgt_id)
                        WHERE u.pgt_id <> ALL (p_tried)
                          AND pgtrickle.emulator_due_action(u.pgt_id) = 'REFRESH');
END $$;

-- One scheduler tick inside the caller's transaction. Returns the number of history rows written.
CREATE FUNCTION pgtrickle.emulator_tick() RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    item record;
    action text;
    written integer := 0;
    tried bigint[] := '{}';
BEGIN
    FOR item IN SELECT o.pgt_id FROM pgtrickle.emulator_topological_order() o LOOP
        action := pgtrickle.emulator_due_action(item.pgt_id);
        IF action = 'REFRESH' THEN
            IF pgtrickle.emulator_claim_refresh(item.pgt_id, tried) THEN
                PERFORM pgtrickle.emulator_finish_refresh(pgtrickle.emulator_begin_refresh(item.pgt_id, 'SCHEDULER'));
                written := written + 1;
                tried := tried || item.pgt_id;
            END IF;
        ELSIF action = 'NO_DATA' THEN
            PERFORM pgtrickle.emulator_record_no_data(item.pgt_id);
            written := written + 1;
        END IF;
    END LOOP;
    RETURN written;
END $$;

-- A scheduler session (one of up to pg_trickle.max_concurrent_refreshes per database, see emulator_scheduler):
-- each pass walks the whole DAG upstream first and refreshes what is due and free (emulator_claim_refresh),
-- each refresh in one transaction (its history row written RUNNING and completed in it, as pg_trickle's
-- worker does). Several sessions refresh independent stream tables at the same time, so a slow one holds up
-- only its own downstreams (and, while it runs, its upstreams). Stops on cancel/terminate, or after max_ticks.
CREATE PROCEDURE pgtrickle.emulator_run(tick_interval_ms integer DEFAULT 500, max_ticks integer DEFAULT NULL)
LANGUAGE plpgsql AS $$
DECLARE
    bound integer;
    my_slot integer;
    ticks integer := 0;
    item record;
    action text;
    refresh_id bigint;
    pass_started timestamptz;
    tried bigint[];
BEGIN
    IF tick_interval_ms IS NULL OR tick_interval_ms < 10 THEN
        RAISE EXCEPTION 'tick_interval_ms must be at least 10' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    bound := pgtrickle.emulator_max_concurrent_refreshes();
    -- Claim a slot under the slot rows' locks (claims are serialised; the rows are never locked for longer):
    -- this backend's own slot (a session cancelled earlier), else the first of slots 1..bound whose lease is
    -- free (no pid, or its backend is gone).
    PERFORM 1 FROM pgtrickle.emulator_scheduler ORDER BY slot FOR UPDATE;
    SELECT s.slot INTO my_slot FROM pgtrickle.emulator_scheduler s
     WHERE s.pid = pg_catalog.pg_backend_pid()
        OR (s.slot <= bound AND NOT pgtrickle.emulator_lease_live(s.pid, s.backend_start))
     ORDER BY s.pid IS NOT DISTINCT FROM pg_catalog.pg_backend_pid() DESC, s.slot
     LIMIT 1;
    IF my_slot IS NULL THEN
        RAISE EXCEPTION 'another emulator scheduler is running in database %', current_database()
            USING ERRCODE = 'lock_not_available',
                  DETAIL = format('All %s scheduler sessions that pg_trickle.max_concurrent_refreshes allows are running.', bound);
    END IF;
    UPDATE pgtrickle.emulator_scheduler
       SET pid = pg_catalog.pg_backend_pid(), claimed_at = pg_catalog.clock_timestamp(),
           backend_start = (SELECT a.backend_start FROM pg_catalog.pg_stat_activity a
                             WHERE a.pid = pg_catalog.pg_backend_pid())
     WHERE slot = my_slot;
    COMMIT;
    LOOP
        pass_started := clock_timestamp();
        tried := '{}';
        FOR item IN SELECT o.pgt_id FROM pgtrickle.emulator_topological_order() o LOOP
            action := pgtrickle.emulator_due_action(item.pgt_id);
            IF action IS NOT NULL THEN
                COMMIT;  -- the refresh's transaction starts here: its now() is when the refresh began
            END IF;
            IF action = 'REFRESH' THEN
                -- One transaction per refresh, RUNNING row included, as pg_trickle's refresh worker: other
                -- sessions never see a RUNNING row, and start_time = end_time = now() of that transaction.
                IF pgtrickle.emulator_claim_refresh(item.pgt_id, tried) THEN
                    refresh_id := pgtrickle.emulator_begin_refresh(item.pgt_id, 'SCHEDULER');
                    PERFORM pgtrickle.emulator_finish_refresh(refresh_id);
                    tried := tried || item.pgt_id;
                END IF;
                COMMIT;
            ELSIF action = 'NO_DATA' THEN
                PERFORM pgtrickle.emulator_record_no_data(item.pgt_id);
                COMMIT;
            END IF;
        END LOOP;
        COMMIT;
        ticks := ticks + 1;
        EXIT WHEN max_ticks IS NOT NULL AND ticks >= max_ticks;
        -- Wake every tick_interval_ms from the start of the previous pass (pg_trickle.scheduler_interval_ms,
        -- src/scheduler/scheduler_loop.rs), not tick_interval_ms after its end: a slow pass is not followed by
        -- a full sleep.
        PERFORM pg_sleep(greatest(0, tick_interval_ms / 1000.0 - extract(epoch FROM clock_timestamp() - pass_started)));
    END LOOP;
    UPDATE pgtrickle.emulator_scheduler SET pid = NULL, backend_start = NULL, claimed_at = NULL
     WHERE pid = pg_catalog.pg_backend_pid();
END $$;

-- (Re)records a stream table's sources from its probe view: dependencies, change capture on each table,
-- and capture removed from tables no stream table reads any more.
CREATE FUNCTION pgtrickle.emulator_record_sources(p_pgt_id bigint, p_probe oid) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    previous_sources oid[] := ARRAY(SELECT source_relid FROM pgtrickle.pgt_dependencies WHERE pgt_id = p_pgt_id);
    src record;
BEGIN
    DELETE FROM pgtrickle.pgt_dependencies WHERE pgt_id = p_pgt_id;
    FOR src IN SELECT * FROM pgtrickle.emulator_relation_sources(p_probe) LOOP
        INSERT INTO pgtrickle.pgt_dependencies (pgt_id, source_relid, source_type, columns_used, source_stable_name)
        VALUES (p_pgt_id, src.source_relid,
                CASE WHEN EXISTS (SELECT 1 FROM pgtrickle.pgt_stream_tables s WHERE s.pgt_relid = src.source_relid)
                          THEN 'STREAM_TABLE'
                     WHEN src.relkind = 'm' THEN 'MATVIEW'
                     WHEN src.relkind = 'f' THEN 'FOREIGN_TABLE'
                     ELSE 'TABLE' END,
                src.columns_used, src.source_relid::regclass::text);
        IF EXISTS (SELECT 1 FROM pgtrickle.pgt_stream_tables s WHERE s.pgt_relid = src.source_relid) THEN
            PERFORM pgtrickle.emulator_attach_capture(src.source_relid);
        ELSIF src.relkind IN ('r', 'p') THEN
            PERFORM pgtrickle.emulator_attach_buffer(src.source_relid, p_pgt_id);  -- a change buffer, as the caller
        END IF;
    END LOOP;
    PERFORM pgtrickle.emulator_detach_capture_if_unused(relid) FROM unnest(previous_sources) relid;
END $$;

-- ---------------------------------------------------------------------------------------------------
-- Query validation as pg_trickle 0.67 (src/api/mod.rs validate_and_parse_query,
-- src/dvm/parser/rewrites.rs detect_topk_pattern / reject_limit_offset / reject_materialized_views /
-- reject_unsupported_constructs, src/dvm/parser/validation.rs volatility). pg_trickle reads the raw parse
-- tree; the emulator reads the top level of the query text (everything inside parentheses, literals,
-- quoted identifiers and comments masked) and the analysed query tree of the probe view.
-- ---------------------------------------------------------------------------------------------------
-- The query with every character that is not at the top level (inside parentheses, string literals,
-- quoted identifiers, dollar quotes, comments) replaced by a space, ASCII letters upper-cased: the same
-- length as the query, so positions found in it index the query itself.
CREATE FUNCTION pgtrickle.emulator_top_level_mask(p_query text) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    n integer := length(p_query);
    chars text[] := regexp_split_to_array(p_query, '');
    i integer := 1;
    j integer;
    depth integer := 0;
    c text;
    tag text;
    backslash boolean;
BEGIN
    WHILE i <= n LOOP
        c := chars[i];
        IF c = '''' THEN
            backslash := i > 1 AND chars[i - 1] IN ('E', 'e') AND (i = 2 OR chars[i - 2] !~ '[A-Za-z0-9_]');
            j := i + 1;
            WHILE j <= n LOOP
                IF backslash AND chars[j] = E'\\' THEN
                    j := j + 2;
                    CONTINUE;
                END IF;
                IF chars[j] = '''' THEN
                    IF j < n AND chars[j + 1] = '''' THEN
                        j := j + 2;
                        CONTINUE;
                    END IF;
                    EXIT;
                END IF;
                j := j + 1;
            END LOOP;
        ELSIF c = '"' THEN
            j := i + 1;
            WHILE j <= n LOOP
                IF chars[j] = '"' THEN
                    IF j < n AND chars[j + 1] = '"' THEN
                        j := j + 2;
                        CONTINUE;
                    END IF;
                    EXIT;
                END IF;
                j := j + 1;
            END LOOP;
        ELSIF c = '-' AND i < n AND chars[i + 1] = '-' THEN
            j := i;
            WHILE j <= n AND chars[j] <> E'\n' LOOP
                j := j + 1;
            END LOOP;
        ELSIF c = '/' AND i < n AND chars[i + 1] = '*' THEN
            j := strpos(substr(p_query, i + 2), '*/');
            j := CASE WHEN j = 0 THEN n ELSE i + j + 2 END;
        ELSIF c = '$' AND (i = 1 OR chars[i - 1] !~ '[A-Za-z0-9_$]')
              AND substr(p_query, i) ~ '^\$([A-Za-z_][A-Za-z0-9_]*)?\$' THEN
            tag := substring(substr(p_query, i) FROM '^(\$([A-Za-z_][A-Za-z0-9_]*)?\$)');
            j := strpos(substr(p_query, i + length(tag)), tag);
            j := CASE WHEN j = 0 THEN n ELSE i + length(tag) + j + length(tag) - 2 END;
        ELSE
            IF c = '(' THEN
                depth := depth + 1;
            END IF;
            IF depth > 0 THEN
                chars[i] := ' ';
            END IF;
            IF c = ')' THEN
                depth := greatest(depth - 1, 0);
            END IF;
            i := i + 1;
            CONTINUE;
        END IF;
        FOR k IN i .. least(j, n) LOOP
            chars[k] := ' ';
        END LOOP;
        i := j + 1;
    END LOOP;
    RETURN translate(array_to_string(chars, ''), 'abcdefghijklmnopqrstuvwxyz', 'ABCDEFGHIJKLMNOPQRSTUVWXYZ');
END $$;

-- The top-level clauses pg_trickle looks at: set operation, last ORDER BY, LIMIT / FETCH, OFFSET,
-- FOR UPDATE/SHARE, and the query with ORDER BY ... stripped (src/dvm/parser/rewrites.rs
-- strip_order_by_and_limit: from the last top-level ORDER BY to the end).
CREATE FUNCTION pgtrickle.emulator_query_clauses(
    p_query text, OUT has_set_operation boolean, OUT order_by text, OUT limit_value text, OUT offset_value text,
    OUT has_locking boolean, OUT base_query text)
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    q text := rtrim(btrim(p_query, E' \t\n\r\f'), E'; \t\n\r\f');
    m text := pgtrickle.emulator_top_level_mask(q);
    order_at integer := 0;
    limit_at integer := 0;
    offset_at integer := 0;
    fetch_at integer := 0;
    for_at integer := 0;
    ends integer[];
    stop integer;
    fetched text[];
BEGIN
    has_set_operation := m ~ '\m(UNION|INTERSECT|EXCEPT)\M';
    has_locking := m ~ '\mFOR\s+(UPDATE|SHARE|NO\s+KEY\s+UPDATE|KEY\s+SHARE)\M';
    IF regexp_count(m, '\mORDER\s+BY\M') > 0 THEN
        order_at := regexp_instr(m, '\mORDER\s+BY\M', 1, regexp_count(m, '\mORDER\s+BY\M'));
    END IF;
    IF regexp_count(m, '\mLIMIT\M') > 0 THEN
        limit_at := regexp_instr(m, '\mLIMIT\M', 1, regexp_count(m, '\mLIMIT\M'));
    END IF;
    IF regexp_count(m, '\mOFFSET\M') > 0 THEN
        offset_at := regexp_instr(m, '\mOFFSET\M', 1, regexp_count(m, '\mOFFSET\M'));
    END IF;
    IF regexp_count(m, '\mFETCH\s+(FIRST|NEXT)\M') > 0 THEN
        fetch_at := regexp_instr(m, '\mFETCH\s+(FIRST|NEXT)\M', 1, regexp_count(m, '\mFETCH\s+(FIRST|NEXT)\M'));
    END IF;
    IF has_locking THEN
        for_at := regexp_instr(m, '\mFOR\s+(UPDATE|SHARE|NO\s+KEY\s+UPDATE|KEY\s+SHARE)\M');
    END IF;
    ends := ARRAY[order_at, limit_at, offset_at, fetch_at, for_at, length(q) + 1];
    IF order_at > 0 THEN
        SELECT min(e) INTO stop FROM unnest(ends) e WHERE e > order_at;
        order_by := regexp_replace(btrim(substr(q, order_at, stop - order_at)), '^ORDER\s+BY\s+', '', 'i');
        order_by := regexp_replace(order_by, '\s+', ' ', 'g');
        base_query := rtrim(substr(q, 1, order_at - 1), E' \t\n\r\f');
    ELSE
        base_query := q;
    END IF;
    IF limit_at > 0 THEN
        SELECT min(e) INTO stop FROM unnest(ends) e WHERE e > limit_at;
        limit_value := btrim(substr(q, limit_at + 5, stop - limit_at - 5), E' \t\n\r\f');
    ELSIF fetch_at > 0 THEN
        SELECT min(e) INTO stop FROM unnest(ends) e WHERE e > fetch_at;
        fetched := regexp_match(substr(q, fetch_at, stop - fetch_at),
                                '^FETCH\s+(?:FIRST|NEXT)\s+(.*?)\s*ROWS?\s+(?:ONLY|WITH\s+TIES)\s*$', 'i');
        limit_value := coalesce(nullif(fetched[1], ''), '1');
    END IF;
    IF offset_at > 0 THEN
        SELECT min(e) INTO stop FROM unnest(ends) e WHERE e > offset_at;
        offset_value := regexp_replace(btrim(substr(q, offset_at + 6, stop - offset_at - 6), E' \t\n\r\f'),
                                       '\s+ROWS?$', '', 'i');
    END IF;
END $$;

-- An integer constant as the raw parser sees one (A_Const, or a TypeCast of one), else NULL.
CREATE FUNCTION pgtrickle.emulator_const_int(p_text text) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_text ~ '^-?\s*[0-9]{1,18}(\s*::\s*[A-Za-z_ ]+)?$'
                THEN replace(substring(p_text FROM '^(-?\s*[0-9]+)'), ' ', '')::bigint END
$$;

-- pg_trickle's UnsupportedOperator error (src/api/mod.rs raise_error_with_context: 0A000).
CREATE FUNCTION pgtrickle.emulator_unsupported(p_message text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RAISE EXCEPTION 'unsupported operator for DIFFERENTIAL mode: %', p_message
        USING ERRCODE = 'feature_not_supported',
              DETAIL = 'DIFFERENTIAL mode supports SELECT, WHERE, simple JOINs (INNER/LEFT/RIGHT), GROUP BY, HAVING, '
                       'ORDER BY, and LIMIT. CTEs (WITH …), FULL OUTER JOINs, window functions without a writable '
                       'equivalent, and certain aggregate forms are not supported.',
              HINT = 'Use refresh_mode = ''FULL'' or refresh_mode = ''AUTO'' to handle queries that contain unsupported '
                     'constructs. AUTO will try DIFFERENTIAL first and fall back to FULL when needed.';
END $$;

-- Volatile functions (and operators' functions) the analysed query of a view calls, following the views
-- it reads (pg_trickle inlines views): names, sorted; empty when none.
CREATE FUNCTION pgtrickle.emulator_volatile_functions(p_view oid) RETURNS text[]
LANGUAGE sql STABLE AS $$
    WITH RECURSIVE views(relid) AS (
        SELECT p_view
        UNION
        SELECT d.refobjid
          FROM views v
          JOIN pg_catalog.pg_rewrite r ON r.ev_class = v.relid
          JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.objid = r.oid
                                     AND d.refclassid = 'pg_catalog.pg_class'::regclass
          JOIN pg_catalog.pg_class c ON c.oid = d.refobjid AND c.relkind = 'v'
         WHERE d.refobjid <> v.relid
    ),
    called AS (
        SELECT (regexp_matches(r.ev_action::text, ':(?:funcid|opfuncid|aggfnoid|winfnoid) ([0-9]+)', 'g'))[1]::oid AS fn
          FROM views v JOIN pg_catalog.pg_rewrite r ON r.ev_class = v.relid
    )
    SELECT coalesce(array_agg(DISTINCT p.proname::text ORDER BY p.proname::text), '{}')
      FROM called JOIN pg_catalog.pg_proc p ON p.oid = called.fn
     WHERE p.provolatile = 'v'
$$;

-- Validates a defining query as validate_and_parse_query does and returns the refresh mode to store
-- (AUTO resolved) and the TopK split. p_mode is FULL, DIFFERENTIAL or IMMEDIATE (AUTO arrives as
-- DIFFERENTIAL with p_is_auto). p_probe is the query as a temporary view (already validated by PostgreSQL).
CREATE FUNCTION pgtrickle.emulator_validate_query(
    p_query text, p_mode text, p_is_auto boolean, p_probe oid,
    OUT mode text, OUT topk_limit integer, OUT topk_order_by text, OUT topk_offset integer, OUT base_query text)
LANGUAGE plpgsql AS $$
DECLARE
    c record;
    lim bigint;
    off bigint;
    is_topk boolean := false;
    bad record;
    volatile_names text[];
BEGIN
    mode := p_mode;
    c := pgtrickle.emulator_query_clauses(p_query);
    base_query := c.base_query;
    -- detect_topk_pattern: ORDER BY + constant LIMIT [+ constant OFFSET], no set operation.
    IF NOT c.has_set_operation AND c.limit_value IS NOT NULL AND c.order_by IS NOT NULL THEN
        IF c.offset_value IS NOT NULL THEN
            off := pgtrickle.emulator_const_int(c.offset_value);
            IF off IS NULL THEN
                PERFORM pgtrickle.emulator_unsupported(
                    'OFFSET in defining queries must be a constant integer (e.g., OFFSET 10). Dynamic expressions '
                    'like OFFSET (SELECT ...) are not supported.');
            ELSIF off < 0 THEN
                PERFORM pgtrickle.emulator_unsupported('OFFSET must be a non-negative constant integer.');
            END IF;
        END IF;
        lim := pgtrickle.emulator_const_int(c.limit_value);
        IF lim IS NULL AND upper(c.limit_value) NOT IN ('ALL', 'NULL') THEN
            PERFORM pgtrickle.emulator_unsupported(
                'LIMIT in defining queries must be a constant integer (e.g., LIMIT 100). Dynamic expressions like '
                'LIMIT (SELECT ...) are not supported for TopK stream tables.');
        END IF;
        IF lim >= 0 THEN
            is_topk := true;
            topk_limit := lim;
            topk_offset := nullif(off, 0);
            topk_order_by := c.order_by;
            RAISE INFO '%', CASE WHEN topk_offset IS NULL
                THEN format('pg_trickle: TopK pattern detected (ORDER BY %s LIMIT %s). The stream table will maintain the top %s rows.',
                            c.order_by, lim, lim)
                ELSE format('pg_trickle: TopK pattern detected (ORDER BY %s LIMIT %s OFFSET %s). The stream table will maintain rows %s–%s.',
                            c.order_by, lim, topk_offset, topk_offset + 1, topk_offset + lim) END;
        END IF;
    END IF;
    IF NOT is_topk THEN
        base_query := p_query;
        IF c.order_by IS NOT NULL AND c.limit_value IS NULL AND NOT c.has_set_operation THEN
            RAISE WARNING 'pg_trickle: ORDER BY without LIMIT has no effect on stream tables — storage row order is '
                          'undefined. Use ORDER BY with LIMIT for TopK, or remove ORDER BY.';
        END IF;
        -- reject_limit_offset (every refresh mode, FULL included)
        IF c.limit_value IS NOT NULL AND upper(c.limit_value) NOT IN ('ALL', 'NULL') THEN
            PERFORM pgtrickle.emulator_unsupported(
                'LIMIT is not supported in defining queries without ORDER BY. Use ORDER BY + LIMIT for TopK stream '
                'tables, or omit LIMIT to materialize the full result set.');
        END IF;
        IF c.offset_value IS NOT NULL THEN
            PERFORM pgtrickle.emulator_unsupported(
                'OFFSET is not supported in defining queries without ORDER BY + LIMIT. Use ORDER BY + LIMIT + OFFSET '
                'for paged TopK stream tables, or omit OFFSET to materialize the full result set.');
        END IF;
    END IF;
    -- IMMEDIATE TopK: LIMIT above pg_trickle.ivm_topk_max_limit (default 1000) is refused.
    IF is_topk AND mode = 'IMMEDIATE' THEN
        IF lim > 1000 THEN
            PERFORM pgtrickle.emulator_unsupported(format(
                'ORDER BY + LIMIT %s (TopK) exceeds the IMMEDIATE mode threshold (pg_trickle.ivm_topk_max_limit = 1000). '
                'TopK tables in IMMEDIATE mode recompute the top-K rows on every DML statement. Reduce LIMIT, raise '
                'the threshold, or use ''DIFFERENTIAL'' mode for large TopK queries.', lim));
        END IF;
    END IF;
    -- reject_unsupported_constructs (the part the emulator can see): row locking.
    IF c.has_locking THEN
        IF p_is_auto THEN
            RAISE WARNING E'[pg_trickle] Falling back to FULL refresh: unsupported construct in defining query.\nConstruct: %',
                'FOR UPDATE/FOR SHARE is not supported in defining queries.';
            mode := 'FULL';
        ELSE
            PERFORM pgtrickle.emulator_unsupported(
                'FOR UPDATE/FOR SHARE is not supported in defining queries. Stream tables do not support row-level '
                'locking. Remove the FOR UPDATE/FOR SHARE clause.');
        END IF;
    END IF;
    -- reject_materialized_views: materialized views and foreign tables in DIFFERENTIAL/IMMEDIATE.
    IF mode IN ('DIFFERENTIAL', 'IMMEDIATE') THEN
        SELECT n.nspname AS schema_name, cl.relname AS rel_name, cl.relkind INTO bad
          FROM pgtrickle.emulator_relation_sources(p_probe) s
          JOIN pg_catalog.pg_class cl ON cl.oid = s.source_relid
          JOIN pg_catalog.pg_namespace n ON n.oid = cl.relnamespace
         WHERE s.relkind IN ('m', 'f')
         ORDER BY s.relkind, n.nspname, cl.relname
         LIMIT 1;
        IF FOUND THEN
            IF p_is_auto AND mode = 'DIFFERENTIAL' THEN
                RAISE WARNING E'[pg_trickle] Falling back to FULL refresh: query references materialized views or foreign tables (%.%).\nSuggestion: replace materialized view references with regular views or tables, or convert them to stream tables so changes can be tracked incrementally.',
                    bad.schema_name, bad.rel_name;
                mode := 'FULL';
            ELSIF bad.relkind = 'm' THEN
                PERFORM pgtrickle.emulator_unsupported(format(
                    'Materialized view ''%s.%s'' cannot be used as a source in DIFFERENTIAL mode. Materialized views '
                    'are stale snapshots — CDC triggers cannot track REFRESH MATERIALIZED VIEW. Use the underlying '
                    'query directly, or switch to FULL refresh mode. Alternatively, enable polling-based CDC with: '
                    'SET pg_trickle.matview_polling = on;', bad.schema_name, bad.rel_name));
            ELSE
                PERFORM pgtrickle.emulator_unsupported(format(
                    'Foreign table ''%s.%s'' cannot be used as a source in DIFFERENTIAL or IMMEDIATE mode. Row-level '
                    'triggers cannot be created on foreign tables. Use FULL refresh mode instead, which re-queries the '
                    'foreign table on each refresh cycle.', bad.schema_name, bad.rel_name));
            END IF;
        END IF;
    END IF;
    -- Volatility (VOL-1, policy 'reject'): only for a differentiated (DIFFERENTIAL/IMMEDIATE, non-TopK) query.
    IF mode IN ('DIFFERENTIAL', 'IMMEDIATE') AND NOT is_topk THEN
        volatile_names := pgtrickle.emulator_volatile_functions(p_probe);
        IF cardinality(volatile_names) > 0 THEN
            PERFORM pgtrickle.emulator_unsupported(
                'Defining query contains volatile expressions (e.g., random(), clock_timestamp(), or custom volatile '
                'operators). Volatile functions and operators are not supported in DIFFERENTIAL or IMMEDIATE mode '
                'because they produce different values on each evaluation, breaking delta computation. Use FULL '
                'refresh mode instead, or replace with a deterministic alternative. (Override with: SET '
                'pg_trickle.volatile_function_policy = ''warn'' or ''allow'')');
        END IF;
    END IF;
END $$;

-- The query a refresh runs: a TopK table stores its query without ORDER BY/LIMIT/OFFSET
-- (src/refresh/orchestrator.rs); they are put back here.
CREATE FUNCTION pgtrickle.emulator_refresh_query(p_pgt_id bigint) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT st.defining_query
           || CASE WHEN st.topk_limit IS NOT NULL
                   THEN E'\nORDER BY ' || st.topk_order_by || E'\nLIMIT ' || st.topk_limit
                        || coalesce(E'\nOFFSET ' || st.topk_offset, '')
                   ELSE '' END
      FROM pgtrickle.pgt_stream_tables st WHERE st.pgt_id = p_pgt_id
$$;

-- Cycle detection on ALTER QUERY (src/api/helpers.rs check_for_cycles_alter): the table's incoming edges
-- are replaced by the new sources; a source that is the table itself or reads it (transitively) closes a
-- cycle. pg_trickle.allow_circular is off by default, so a cycle is an error (42P15) naming the nodes
-- Kahn's algorithm could not order: the table and everything downstream of it.
CREATE FUNCTION pgtrickle.emulator_check_cycles(p_pgt_id bigint, p_sources oid[]) RETURNS void
LANGUAGE plpgsql STABLE AS $$
DECLARE
    downstream oid[];
    names text;
BEGIN
    WITH RECURSIVE down(relid) AS (
        SELECT st.pgt_relid FROM pgtrickle.pgt_stream_tables st WHERE st.pgt_id = p_pgt_id
        UNION
        SELECT reader.pgt_relid
          FROM down
          JOIN pgtrickle.pgt_dependencies d ON d.source_relid = down.relid
          JOIN pgtrickle.pgt_stream_tables reader ON reader.pgt_id = d.pgt_id
    )
    SELECT array_agg(relid) INTO downstream FROM down;
    IF NOT (downstream && p_sources) THEN
        RETURN;
    END IF;
    SELECT string_agg(st.pgt_schema || '.' || st.pgt_name, ' -> ' ORDER BY st.pgt_id) INTO names
      FROM pgtrickle.pgt_stream_tables st WHERE st.pgt_relid = ANY (downstream);
    RAISE EXCEPTION 'cycle detected in dependency graph: %', names
        USING ERRCODE = 'invalid_schema_definition',
              DETAIL = 'Stream tables form a directed acyclic graph (DAG). Adding this stream table would introduce a cycle, which is not allowed.',
              HINT = 'Review the defining query and ensure it does not reference any stream table that transitively depends on this table. Use pgtrickle.pgt_dependencies to inspect the current dependency graph.';
END $$;

-- ---------------------------------------------------------------------------------------------------
-- Lifecycle (pg_trickle names, argument names, order and defaults)
-- ---------------------------------------------------------------------------------------------------
CREATE FUNCTION pgtrickle.create_stream_table(
    name text,
    query text,
    schedule text DEFAULT 'calculated',
    refresh_mode text DEFAULT 'AUTO',
    initialize boolean DEFAULT true,
    diamond_consistency text DEFAULT NULL,
    diamond_schedule_policy text DEFAULT NULL,
    cdc_mode text DEFAULT NULL,
    append_only boolean DEFAULT false,
    pooler_compatibility_mode boolean DEFAULT false,
    partition_by text DEFAULT NULL,
    max_differential_joins integer DEFAULT NULL,
    max_delta_fraction double precision DEFAULT NULL,
    output_distribution_column text DEFAULT NULL,
    temporal boolean DEFAULT false,
    storage_backend text DEFAULT NULL
) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    n record;
    -- src/api/alter.rs create_stream_table_impl, in its order: mode, diamond options, name, schedule
    -- (not read for IMMEDIATE), cdc_mode, the query, append_only, duplicate name, cycles.
    requested text := pgtrickle.emulator_normalize_mode(refresh_mode);
    mode text := CASE requested WHEN 'AUTO' THEN 'DIFFERENTIAL' ELSE requested END;
    consistency text := coalesce(pgtrickle.emulator_check_choice('diamond_consistency', diamond_consistency, ARRAY['none', 'atomic']), 'atomic');
    policy text := coalesce(pgtrickle.emulator_check_choice('diamond_schedule_policy', diamond_schedule_policy, ARRAY['fastest', 'slowest']), 'fastest');
    stored_schedule text;
    cdc text;
    vq record;
    probe oid;
    relid oid;
    column_defs text;
    new_id bigint;
BEGIN
    IF policy = 'slowest' AND consistency <> 'atomic' THEN
        RAISE EXCEPTION 'invalid argument: diamond_schedule_policy = ''slowest'' requires diamond_consistency = ''atomic''. The ''slowest'' policy is only meaningful when atomic cross-branch reads are enabled. Set diamond_consistency = ''atomic'' or use diamond_schedule_policy = ''fastest''.'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    n := pgtrickle.emulator_split_name(name);
    IF mode <> 'IMMEDIATE' THEN
        stored_schedule := pgtrickle.emulator_normalize_schedule(schedule);
    END IF;
    cdc := pgtrickle.emulator_check_choice('cdc_mode', cdc_mode, ARRAY['auto', 'trigger', 'wal']);
    IF query IS NULL OR btrim(query) = '' THEN
        RAISE EXCEPTION 'query must not be empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- The query as a temporary view: validates it, gives its columns, and records its sources.
    DROP VIEW IF EXISTS pg_temp.pgt_emulator_probe;
    EXECUTE format('CREATE TEMPORARY VIEW pgt_emulator_probe AS %s', query);
    probe := 'pg_temp.pgt_emulator_probe'::regclass;
    SELECT string_agg(format('%I %s', attname, format_type(atttypid, atttypmod)), ', ' ORDER BY attnum)
      INTO column_defs
      FROM pg_catalog.pg_attribute WHERE attrelid = probe AND attnum > 0 AND NOT attisdropped;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_attribute WHERE attrelid = probe AND attname = '__pgt_row_id') THEN
        RAISE EXCEPTION 'the query must not return a column named __pgt_row_id (reserved)';
    END IF;
    vq := pgtrickle.emulator_validate_query(query, mode, requested = 'AUTO', probe);
    mode := vq.mode;
    IF requested = 'AUTO' AND mode = 'FULL' THEN
        RAISE WARNING '[pg_trickle] Stream table ''%'' will use FULL refresh instead of DIFFERENTIAL. Each refresh will recompute the entire result set from scratch, which is slower than incremental maintenance. See the warnings above for the specific reason and how to fix it.', name;
    END IF;
    IF append_only AND mode = 'FULL' THEN
        RAISE EXCEPTION 'invalid argument: append_only is not supported with FULL refresh mode. Use DIFFERENTIAL or AUTO refresh mode.'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF append_only AND mode = 'IMMEDIATE' THEN
        RAISE EXCEPTION 'invalid argument: append_only is not supported with IMMEDIATE refresh mode. Use DIFFERENTIAL or AUTO refresh mode.'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF EXISTS (SELECT 1 FROM pgtrickle.pgt_stream_tables s WHERE s.pgt_schema = n.schema_name AND s.pgt_name = n.table_name) THEN
        RAISE EXCEPTION 'stream table already exists: %.%', n.schema_name, n.table_name
            USING ERRCODE = 'duplicate_table',
                  HINT = 'Use pgtrickle.alter_stream_table() to modify an existing stream table, or pgtrickle.drop_stream_table() to remove it first.';
    END IF;
    -- Cycles (check_for_cycles): a table being created has no readers yet, so its sources cannot close one.
    EXECUTE format('CREATE TABLE %I.%I (__pgt_row_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, %s)',
                   n.schema_name, n.table_name, column_defs);
    relid := format('%I.%I', n.schema_name, n.table_name)::regclass;
    INSERT INTO pgtrickle.pgt_stream_tables
           (pgt_relid, pgt_name, pgt_schema, defining_query, original_query, schedule, refresh_mode, status,
            diamond_consistency, diamond_schedule_policy, requested_cdc_mode, is_append_only,
            pooler_compatibility_mode, max_differential_joins, max_delta_fraction, st_partition_key,
            storage_backend, effective_refresh_mode)
    VALUES (relid, n.table_name, n.schema_name, vq.base_query, query, stored_schedule, mode, 'INITIALIZING',
            consistency, policy, cdc, append_only, pooler_compatibility_mode, max_differential_joins,
            max_delta_fraction, partition_by, coalesce(storage_backend, 'heap'), NULL)
    RETURNING pgt_id INTO new_id;
    UPDATE pgtrickle.pgt_stream_tables
       SET topk_limit = vq.topk_limit, topk_order_by = vq.topk_order_by, topk_offset = vq.topk_offset,
           temporal_mode = coalesce(create_stream_table.temporal, false)
     WHERE pgt_id = new_id;
    INSERT INTO pgtrickle.emulator_stats (pgt_id) VALUES (new_id);
    PERFORM pgtrickle.emulator_record_sources(new_id, probe);
    -- Downstream stream tables read this one: capture its changes too.
    PERFORM pgtrickle.emulator_attach_capture(relid);
    DROP VIEW pg_temp.pgt_emulator_probe;
    -- initialize => false leaves the table INITIALIZING and unpopulated (the scheduler fills it).
    IF initialize THEN
        PERFORM pgtrickle.emulator_finish_refresh(pgtrickle.emulator_begin_refresh(new_id, 'INITIAL'), false);
        -- G12-ERM-1: the initial population records the effective mode (TOP_K for TopK tables).
        UPDATE pgtrickle.pgt_stream_tables
           SET effective_refresh_mode = CASE WHEN vq.topk_limit IS NOT NULL THEN 'TOP_K' ELSE mode END
         WHERE pgt_id = new_id;
    END IF;
END $$;

CREATE FUNCTION pgtrickle.create_stream_table_if_not_exists(
    name text,
    query text,
    schedule text DEFAULT 'calculated',
    refresh_mode text DEFAULT 'AUTO',
    initialize boolean DEFAULT true,
    diamond_consistency text DEFAULT NULL,
    diamond_schedule_policy text DEFAULT NULL,
    cdc_mode text DEFAULT NULL,
    append_only boolean DEFAULT false,
    pooler_compatibility_mode boolean DEFAULT false,
    partition_by text DEFAULT NULL,
    max_differential_joins integer DEFAULT NULL,
    max_delta_fraction double precision DEFAULT NULL,
    output_distribution_column text DEFAULT NULL,
    temporal boolean DEFAULT false,
    storage_backend text DEFAULT NULL
) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    n record := pgtrickle.emulator_split_name(name);
BEGIN
    IF EXISTS (SELECT 1 FROM pgtrickle.pgt_stream_tables s WHERE s.pgt_schema = n.schema_name AND s.pgt_name = n.table_name) THEN
        RETURN;
    END IF;
    PERFORM pgtrickle.create_stream_table(name, query, schedule, refresh_mode, initialize, diamond_consistency,
        diamond_schedule_policy, cdc_mode, append_only, pooler_compatibility_mode, partition_by,
        max_differential_joins, max_delta_fraction, output_distribution_column, temporal, storage_backend);
END $$;

CREATE FUNCTION pgtrickle.drop_stream_table(name text, "cascade" boolean DEFAULT false) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    st pgtrickle.pgt_stream_tables := pgtrickle.emulator_lookup(name);
    dependents text;
    down record;
    previous_sources oid[];
BEGIN
    SELECT string_agg(format('%s.%s', d2.pgt_schema, d2.pgt_name), ', ' ORDER BY d2.pgt_id) INTO dependents
      FROM pgtrickle.pgt_dependencies d JOIN pgtrickle.pgt_stream_tables d2 ON d2.pgt_id = d.pgt_id
     WHERE d.source_relid = st.pgt_relid;
    -- src/api/alter.rs drop_stream_table_impl_inner: InvalidArgument, i.e. SQLSTATE 22023 (not 2BP01).
    IF dependents IS NOT NULL AND NOT "cascade" THEN
        RAISE EXCEPTION 'invalid argument: stream table %.% has dependent stream tables: %. Use cascade => true to drop them automatically.',
            st.pgt_schema, st.pgt_name, dependents
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'See docs/SQL_REFERENCE.md for valid parameter values and syntax.';
    END IF;
    FOR down IN SELECT d2.pgt_schema, d2.pgt_name FROM pgtrickle.pgt_dependencies d
                  JOIN pgtrickle.pgt_stream_tables d2 ON d2.pgt_id = d.pgt_id
                 WHERE d.source_relid = st.pgt_relid LOOP
        IF EXISTS (SELECT 1 FROM pgtrickle.pgt_stream_tables x WHERE x.pgt_schema = down.pgt_schema AND x.pgt_name = down.pgt_name) THEN
            PERFORM pgtrickle.drop_stream_table(format('%I.%I', down.pgt_schema, down.pgt_name), true);
        END IF;
    END LOOP;
    previous_sources := ARRAY(SELECT source_relid FROM pgtrickle.pgt_dependencies WHERE pgt_id = st.pgt_id);
    PERFORM pgtrickle.emulator_drop_delta_state(st.pgt_id, true);
    DELETE FROM pgtrickle.pgt_stream_tables WHERE pgt_id = st.pgt_id;
    DELETE FROM pgtrickle.emulator_source_changes WHERE source_relid = st.pgt_relid;
    EXECUTE format('DROP TABLE %I.%I', st.pgt_schema, st.pgt_name);
    PERFORM pgtrickle.emulator_detach_capture_if_unused(relid) FROM unnest(previous_sources) relid;
END $$;

-- pg_trickle's manual refresh (src/api/refresh_ops.rs::refresh_stream_table_impl): a SUSPENDED or ERROR table
-- is refused with InvalidArgument (SQLSTATE 22023, "invalid argument: ..." as src/api/mod.rs::
-- raise_error_with_context reports it); when another refresh of the table holds its lock, RefreshSkipped is a
-- NOTICE "refresh skipped: ..." and the call returns normally.
CREATE FUNCTION pgtrickle.refresh_stream_table(name text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    st pgtrickle.pgt_stream_tables := pgtrickle.emulator_lookup(name);
BEGIN
    IF st.status IN ('SUSPENDED', 'ERROR') THEN
        RAISE EXCEPTION 'invalid argument: stream table %.% is % ; use pgtrickle.resume_stream_table(''%'') first',
            st.pgt_schema, st.pgt_name,
            CASE st.status WHEN 'SUSPENDED' THEN 'suspended' ELSE 'in error state' END,
            CASE WHEN st.pgt_schema = 'public' THEN st.pgt_name ELSE st.pgt_schema || '.' || st.pgt_name END
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'See docs/SQL_REFERENCE.md for valid parameter values and syntax.';
    END IF;
    IF NOT pgtrickle.emulator_try_refresh_lock(st.pgt_id) THEN
        RAISE NOTICE 'refresh skipped: %.% — another refresh is already in progress', st.pgt_schema, st.pgt_name;
        RETURN;
    END IF;
    -- Synchronous, in the caller's transaction; an error is raised to the caller (nothing recorded).
    PERFORM pgtrickle.emulator_finish_refresh(pgtrickle.emulator_begin_refresh(st.pgt_id, 'MANUAL'), false);
END $$;

-- src/api/alter.rs::resume_stream_table_impl: only SUSPENDED or ERROR tables (else InvalidArgument, 22023);
-- clears consecutive_errors, last_error_message and last_error_at; the 'resumed' alert.
CREATE FUNCTION pgtrickle.resume_stream_table(name text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    st pgtrickle.pgt_stream_tables := pgtrickle.emulator_lookup(name);
BEGIN
    IF st.status NOT IN ('SUSPENDED', 'ERROR') THEN
        RAISE EXCEPTION 'invalid argument: stream table %.% is not suspended or in error state (current status: %)',
            st.pgt_schema, st.pgt_name, st.status
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'See docs/SQL_REFERENCE.md for valid parameter values and syntax.';
    END IF;
    UPDATE pgtrickle.pgt_stream_tables
       SET status = 'ACTIVE', consecutive_errors = 0, last_error_message = NULL, last_error_at = NULL,
           updated_at = now()
     WHERE pgt_id = st.pgt_id;
    PERFORM pg_notify('pg_trickle_alert', json_build_object('event', 'resumed', 'pgt_schema', st.pgt_schema,
                                                           'pgt_name', st.pgt_name)::text);
END $$;

CREATE FUNCTION pgtrickle.alter_stream_table(
    name text,
    query text DEFAULT NULL,
    schedule text DEFAULT NULL,
    refresh_mode text DEFAULT NULL,
    status text DEFAULT NULL,
    diamond_consistency text DEFAULT NULL,
    diamond_schedule_policy text DEFAULT NULL,
    cdc_mode text DEFAULT NULL,
    append_only boolean DEFAULT NULL,
    pooler_compatibility_mode boolean DEFAULT NULL,
    tier text DEFAULT NULL,
    fuse text DEFAULT NULL,
    fuse_ceiling bigint DEFAULT NULL,
    fuse_sensitivity integer DEFAULT NULL,
    partition_by text DEFAULT NULL,
    max_differential_joins integer DEFAULT NULL,
    max_delta_fraction double precision DEFAULT NULL,
    post_refresh_action text DEFAULT NULL,
    reindex_drift_threshold double precision DEFAULT NULL
) RETURNS void
LANGUAGE plpgsql AS $$
#variable_conflict use_column
-- src/api/alter.rs alter_stream_table_impl, in its order: the query first, then the refresh mode (parsed
-- as RefreshMode::from_str, so AUTO reads as DIFFERENTIAL), schedule, mode switch, status, the rest.
DECLARE
    st pgtrickle.pgt_stream_tables := pgtrickle.emulator_lookup(name);
    new_status text := upper(status);
    target_mode text;
    old_mode text;
BEGIN
    IF alter_stream_table.query IS NOT NULL
       AND alter_stream_table.query IS DISTINCT FROM coalesce(st.original_query, st.defining_query) THEN
        PERFORM pgtrickle.emulator_alter_query(st.pgt_id, alter_stream_table.query);
        st := pgtrickle.emulator_lookup(name);
    END IF;
    old_mode := st.refresh_mode;
    target_mode := CASE WHEN alter_stream_table.refresh_mode IS NULL THEN old_mode
                        ELSE pgtrickle.emulator_normalize_mode(alter_stream_table.refresh_mode) END;
    IF target_mode = 'AUTO' THEN
        target_mode := 'DIFFERENTIAL';
    END IF;
    IF alter_stream_table.schedule IS NOT NULL THEN
        UPDATE pgtrickle.pgt_stream_tables s
           SET schedule = pgtrickle.emulator_normalize_schedule(alter_stream_table.schedule), updated_at = now()
         WHERE s.pgt_id = st.pgt_id;
    END IF;
    IF alter_stream_table.refresh_mode IS NOT NULL THEN
        IF target_mode <> old_mode THEN
            IF target_mode = 'IMMEDIATE' AND st.topk_limit > 1000 THEN
                PERFORM pgtrickle.emulator_unsupported(format(
                    'Cannot switch TopK stream table (LIMIT %s) to IMMEDIATE mode. Exceeds pg_trickle.ivm_topk_max_limit = 1000. '
                    'Raise the threshold or keep using DIFFERENTIAL/FULL mode.', st.topk_limit));
            END IF;
            IF target_mode = 'IMMEDIATE' THEN
                UPDATE pgtrickle.pgt_stream_tables s SET schedule = NULL WHERE s.pgt_id = st.pgt_id;
            ELSIF old_mode = 'IMMEDIATE' AND alter_stream_table.schedule IS NULL THEN
                -- Leaving IMMEDIATE without a schedule restores a default one.
                UPDATE pgtrickle.pgt_stream_tables s SET schedule = coalesce(s.schedule, '1m') WHERE s.pgt_id = st.pgt_id;
            END IF;
        END IF;
        -- The catalog gets the argument upper-cased, as pg_trickle writes it: 'AUTO' (and 'INCREMENTAL')
        -- pass RefreshMode::from_str but then fail the refresh_mode CHECK (23514), as on the engine.
        UPDATE pgtrickle.pgt_stream_tables s
           SET refresh_mode = upper(alter_stream_table.refresh_mode), updated_at = now()
         WHERE s.pgt_id = st.pgt_id;
    END IF;
    IF new_status IS NOT NULL AND new_status NOT IN ('INITIALIZING', 'ACTIVE', 'SUSPENDED', 'ERROR') THEN
        RAISE EXCEPTION 'invalid argument: unknown status: %', new_status  -- src/dag.rs StStatus::from_str
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE pgtrickle.pgt_stream_tables s SET
        status = coalesce(new_status, s.status),
        consecutive_errors = CASE WHEN new_status = 'ACTIVE' THEN 0 ELSE s.consecutive_errors END,
        diamond_consistency = coalesce(pgtrickle.emulator_check_choice('diamond_consistency', alter_stream_table.diamond_consistency, ARRAY['none', 'atomic']), s.diamond_consistency),
        diamond_schedule_policy = coalesce(pgtrickle.emulator_check_choice('diamond_schedule_policy', alter_stream_table.diamond_schedule_policy, ARRAY['fastest', 'slowest']), s.diamond_schedule_policy),
        requested_cdc_mode = coalesce(pgtrickle.emulator_check_choice('cdc_mode', alter_stream_table.cdc_mode, ARRAY['auto', 'trigger', 'wal']), s.requested_cdc_mode),
        is_append_only = coalesce(alter_stream_table.append_only, s.is_append_only),
        pooler_compatibility_mode = coalesce(alter_stream_table.pooler_compatibility_mode, s.pooler_compatibility_mode),
        refresh_tier = coalesce(pgtrickle.emulator_check_choice('tier', tier, ARRAY['hot', 'warm', 'cold', 'frozen']), s.refresh_tier),
        fuse_mode = coalesce(pgtrickle.emulator_check_choice('fuse', fuse, ARRAY['off', 'on', 'auto']), s.fuse_mode),
        fuse_ceiling = coalesce(alter_stream_table.fuse_ceiling, s.fuse_ceiling),
        fuse_sensitivity = coalesce(alter_stream_table.fuse_sensitivity, s.fuse_sensitivity),
        st_partition_key = coalesce(partition_by, s.st_partition_key),
        max_differential_joins = coalesce(alter_stream_table.max_differential_joins, s.max_differential_joins),
        max_delta_fraction = coalesce(alter_stream_table.max_delta_fraction, s.max_delta_fraction),
        post_refresh_action = coalesce(pgtrickle.emulator_check_choice('post_refresh_action', alter_stream_table.post_refresh_action, ARRAY['none', 'analyze', 'reindex', 'reindex_if_drift']), s.post_refresh_action),
        reindex_drift_threshold = coalesce(alter_stream_table.reindex_drift_threshold, s.reindex_drift_threshold),
        updated_at = now()
     WHERE s.pgt_id = st.pgt_id;
END $$;

-- ALTER QUERY (src/api/alter.rs alter_stream_table_query): validated against the table's current mode
-- (no AUTO downgrade), cycle-checked, then the storage is migrated by classify_schema_change: the same
-- columns, or columns added/removed with the surviving ones implicitly castable, keep the storage table
-- (same OID, dependents keep reading it); an incompatible type change rebuilds it.
CREATE FUNCTION pgtrickle.emulator_alter_query(p_pgt_id bigint, p_query text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    st pgtrickle.pgt_stream_tables;
    qualified text;
    probe oid;
    vq record;
    new_defs text;
    incompatible text;
    col record;
    grants text[];
    grant_sql text;
BEGIN
    SELECT * INTO STRICT st FROM pgtrickle.pgt_stream_tables WHERE pgt_id = p_pgt_id;
    qualified := format('%I.%I', st.pgt_schema, st.pgt_name);
    PERFORM pgtrickle.emulator_drop_delta_state(st.pgt_id, true);  -- a new query: a new plan
    DROP VIEW IF EXISTS pg_temp.pgt_emulator_probe;
    EXECUTE format('CREATE TEMPORARY VIEW pgt_emulator_probe AS %s', p_query);
    probe := 'pg_temp.pgt_emulator_probe'::regclass;
    vq := pgtrickle.emulator_validate_query(p_query, st.refresh_mode, false, probe);
    PERFORM pgtrickle.emulator_check_cycles(st.pgt_id, ARRAY(SELECT source_relid FROM pgtrickle.emulator_relation_sources(probe)));
    SELECT string_agg(format('%I %s', attname, format_type(atttypid, atttypmod)), ', ' ORDER BY attnum) INTO new_defs
      FROM pg_catalog.pg_attribute WHERE attrelid = probe AND attnum > 0 AND NOT attisdropped;
    SELECT string_agg(format('column ''%s'' type changed from OID %s to %s (no implicit cast)', n.attname, o.atttypid, n.atttypid), '; ')
      INTO incompatible
      FROM pg_catalog.pg_attribute n
      JOIN pg_catalog.pg_attribute o ON o.attrelid = st.pgt_relid AND o.attname = n.attname AND o.attnum > 0 AND NOT o.attisdropped
     WHERE n.attrelid = probe AND n.attnum > 0 AND NOT n.attisdropped AND o.atttypid <> n.atttypid
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_cast c
                        WHERE c.castsource = o.atttypid AND c.casttarget = n.atttypid AND c.castcontext = 'i');
    IF incompatible IS NULL THEN
        -- Same or Compatible: ALTER the storage in place (migrate_storage_table_compatible).
        FOR col IN SELECT a.attname FROM pg_catalog.pg_attribute a
                    WHERE a.attrelid = st.pgt_relid AND a.attnum > 0 AND NOT a.attisdropped AND a.attname <> '__pgt_row_id'
                      AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute n
                                       WHERE n.attrelid = probe AND n.attname = a.attname AND n.attnum > 0 AND NOT n.attisdropped) LOOP
            EXECUTE format('ALTER TABLE %s DROP COLUMN IF EXISTS %I', qualified, col.attname);
        END LOOP;
        FOR col IN SELECT n.attname, format_type(n.atttypid, n.atttypmod) AS type_name FROM pg_catalog.pg_attribute n
                    WHERE n.attrelid = probe AND n.attnum > 0 AND NOT n.attisdropped
                      AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute o
                                       WHERE o.attrelid = st.pgt_relid AND o.attname = n.attname AND o.attnum > 0
                                         AND NOT o.attisdropped)
                    ORDER BY n.attnum LOOP
            EXECUTE format('ALTER TABLE %s ADD COLUMN IF NOT EXISTS %I %s', qualified, col.attname, col.type_name);
        END LOOP;
    ELSE
        RAISE WARNING 'pg_trickle: ALTER QUERY requires full storage rebuild: %. The storage table OID will change.', incompatible;
        -- Differs from pg_trickle (which drops the storage with CASCADE regardless): the emulator refuses
        -- while other stream tables read it, as their dependencies would point at a dropped relation.
        IF EXISTS (SELECT 1 FROM pgtrickle.pgt_dependencies d WHERE d.source_relid = st.pgt_relid) THEN
            RAISE EXCEPTION 'cannot change the columns of stream table % incompatibly: other stream tables read it', qualified
                USING ERRCODE = 'dependent_objects_still_exist';
        END IF;
        -- The rebuilt storage keeps the old one's grants (readers of the stream table keep reading it).
        SELECT array_agg(format('GRANT %s ON %s TO %s', a.privilege_type, qualified,
                                CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END)
                         || CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END)
          INTO grants
          FROM pg_catalog.pg_class c, aclexplode(c.relacl) a
         WHERE c.oid = st.pgt_relid AND a.grantee <> c.relowner;
        EXECUTE format('DROP TABLE %s', qualified);
        EXECUTE format('CREATE TABLE %s (__pgt_row_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, %s)', qualified, new_defs);
        FOR grant_sql IN SELECT unnest(grants) LOOP
            EXECUTE grant_sql;
        END LOOP;
        DELETE FROM pgtrickle.emulator_source_changes WHERE source_relid = st.pgt_relid;
        UPDATE pgtrickle.pgt_stream_tables SET pgt_relid = qualified::regclass WHERE pgt_id = st.pgt_id;
        UPDATE pgtrickle.emulator_stats SET row_count = 0 WHERE pgt_id = st.pgt_id;
        PERFORM pgtrickle.emulator_attach_capture(qualified::regclass);
    END IF;
    PERFORM pgtrickle.emulator_record_sources(st.pgt_id, probe);
    DROP VIEW pg_temp.pgt_emulator_probe;
    UPDATE pgtrickle.pgt_stream_tables
       SET defining_query = vq.base_query, original_query = p_query, frontier = NULL,
           topk_limit = vq.topk_limit, topk_order_by = vq.topk_order_by, topk_offset = vq.topk_offset,
           status = CASE WHEN status = 'ERROR' THEN 'ACTIVE' ELSE status END, updated_at = now()
     WHERE pgt_id = st.pgt_id;
    PERFORM pgtrickle.emulator_finish_refresh(pgtrickle.emulator_begin_refresh(st.pgt_id, 'MANUAL'), false);
END $$;

-- ---------------------------------------------------------------------------------------------------
-- Monitoring (pg_trickle output columns, names and types)
-- ---------------------------------------------------------------------------------------------------
CREATE FUNCTION pgtrickle.pgt_status()
RETURNS TABLE (name text, status text, refresh_mode text, is_populated boolean, consecutive_errors integer,
               schedule text, data_timestamp timestamptz, staleness interval, scc_id integer)
LANGUAGE sql STABLE AS $$
    SELECT st.pgt_schema || '.' || st.pgt_name, st.status, st.refresh_mode, st.is_populated,
           st.consecutive_errors, st.schedule, st.data_timestamp, now() - st.data_timestamp, st.scc_id
      FROM pgtrickle.pgt_stream_tables st
     ORDER BY st.pgt_schema, st.pgt_name
$$;

CREATE VIEW pgtrickle.stream_tables_info AS
SELECT st.*,
       now() - st.last_refresh_at AS staleness,
       CASE WHEN pgtrickle.emulator_schedule_seconds(st.schedule) IS NULL THEN NULL
            ELSE extract(epoch FROM now() - st.last_refresh_at) > pgtrickle.emulator_schedule_seconds(st.schedule)
       END AS stale,
       st.topk_limit IS NOT NULL AS is_topk
  FROM pgtrickle.pgt_stream_tables st;

CREATE VIEW pgtrickle.pg_stat_stream_tables AS
SELECT i.pgt_id, i.pgt_schema, i.pgt_name, i.status, i.refresh_mode, i.is_populated, i.data_timestamp, i.schedule,
       i.staleness, i.stale, i.consecutive_errors, i.needs_reinit, i.last_refresh_at,
       s.total_completed + s.total_failed AS total_refreshes,
       s.total_completed AS successful_refreshes,
       s.total_failed AS failed_refreshes,
       s.rows_inserted AS total_rows_inserted,
       s.rows_deleted AS total_rows_deleted,
       CASE WHEN s.full_count + s.diff_count > 0 THEN s.sum_duration_ms / (s.full_count + s.diff_count) END AS avg_duration_ms,
       last.action AS last_action, last.status AS last_status,
       (SELECT array_agg(DISTINCT d.cdc_mode) FROM pgtrickle.pgt_dependencies d WHERE d.pgt_id = i.pgt_id) AS cdc_modes,
       i.scc_id, i.last_fixpoint_iterations, i.refresh_tier
  FROM pgtrickle.stream_tables_info i
  JOIN pgtrickle.emulator_stats s ON s.pgt_id = i.pgt_id
  LEFT JOIN LATERAL (
        SELECT h.action, h.status FROM pgtrickle.pgt_refresh_history h
         WHERE h.pgt_id = i.pgt_id ORDER BY h.start_time DESC LIMIT 1) last ON true;

-- The rows a change buffer holds, for change_buffer_sizes(). pg_trickle reads the buffer's n_live_tup, which
-- its scheduler (a background worker) keeps current by reporting statistics; the emulator's scheduler is one
-- long procedure (emulator_run) whose deletes would reach the statistics only when it returns, so pending_rows
-- would never fall. The emulator counts instead: SECURITY DEFINER (the buffers are closed to other roles, F51)
-- and refused for any relation outside pgtrickle_changes, so it reveals no more than the engine's statistic.
CREATE FUNCTION pgtrickle.emulator_buffer_rows(p_buffer oid) RETURNS bigint
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n bigint;
BEGIN
    IF p_buffer IS NULL THEN
        RETURN 0;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class c
                    WHERE c.oid = p_buffer AND c.relkind = 'r'
                      AND c.relnamespace = 'pgtrickle_changes'::regnamespace) THEN
        RAISE EXCEPTION 'relation % is not a change buffer', p_buffer USING ERRCODE = 'insufficient_privilege';
    END IF;
    EXECUTE format('SELECT count(*) FROM %s', p_buffer::regclass) INTO n;
    RETURN n;
END $$;

CREATE FUNCTION pgtrickle.change_buffer_sizes()
RETURNS TABLE (stream_table text, source_table text, source_oid bigint, cdc_mode text, pending_rows bigint,
               buffer_bytes bigint)
LANGUAGE sql STABLE AS $$
    -- pg_trickle's query (src/monitor/mod.rs, change_buffer_sizes): catalog and statistics only, so any role
    -- may call it without rights on pgtrickle_changes. pending_rows is the buffer's row count (the engine's
    -- n_live_tup; see emulator_buffer_rows), buffer_bytes its total relation size; a source without a buffer
    -- of its own (a stream table) shows 0 and 0.
    SELECT st.pgt_schema || '.' || st.pgt_name, n.nspname::text || '.' || c.relname::text, d.source_relid::bigint,
           d.cdc_mode, pgtrickle.emulator_buffer_rows(cb.oid), coalesce(pg_total_relation_size(cb.oid), 0)::bigint
      FROM pgtrickle.pgt_dependencies d
      JOIN pgtrickle.pgt_stream_tables st ON st.pgt_id = d.pgt_id
      JOIN pg_catalog.pg_class c ON c.oid = d.source_relid
      JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
      LEFT JOIN pgtrickle.pgt_change_tracking ct ON ct.source_relid = d.source_relid
      LEFT JOIN pg_catalog.pg_class cb
             ON cb.relname = 'changes_' || ct.source_stable_name
            AND cb.relnamespace = 'pgtrickle_changes'::regnamespace
     ORDER BY 1, 2
$$;

CREATE FUNCTION pgtrickle.health_check() RETURNS TABLE (check_name text, severity text, detail text)
LANGUAGE sql STABLE AS $$
    -- src/monitor/health.rs health_check: its rows, severities and detail texts; names sorted.
    WITH counts AS (
        SELECT count(*) FILTER (WHERE status IN ('ERROR', 'SUSPENDED')) AS broken,
               string_agg(pgt_schema || '.' || pgt_name, ', ' ORDER BY pgt_schema || '.' || pgt_name)
                   FILTER (WHERE status IN ('ERROR', 'SUSPENDED')) AS broken_names,
               count(*) FILTER (WHERE stale) AS stale,
               string_agg(pgt_schema || '.' || pgt_name, ', ' ORDER BY pgt_schema || '.' || pgt_name)
                   FILTER (WHERE stale) AS stale_names,
               count(*) FILTER (WHERE needs_reinit) AS reinit,
               string_agg(pgt_schema || '.' || pgt_name, ', ' ORDER BY pgt_schema || '.' || pgt_name)
                   FILTER (WHERE needs_reinit) AS reinit_names,
               count(*) FILTER (WHERE consecutive_errors > 0 AND status NOT IN ('ERROR', 'SUSPENDED')) AS erroring,
               string_agg(pgt_schema || '.' || pgt_name, ', ' ORDER BY pgt_schema || '.' || pgt_name)
                   FILTER (WHERE consecutive_errors > 0 AND status NOT IN ('ERROR', 'SUSPENDED')) AS erroring_names
          FROM pgtrickle.stream_tables_info),
    buffers AS (
        SELECT count(*) AS bloated,
               string_agg(source_table || ' (' || pending_rows || ' pending)', ', ' ORDER BY pending_rows DESC) AS names
          FROM pgtrickle.change_buffer_sizes() WHERE pending_rows > 10000)
    SELECT 'scheduler_running',
           CASE WHEN pgtrickle.emulator_scheduler_running() THEN 'OK' ELSE 'ERROR' END,
           CASE WHEN pgtrickle.emulator_scheduler_running() THEN 'emulator scheduler session is running'
                ELSE 'emulator scheduler is not running (CALL pgtrickle.emulator_run() in a dedicated session)' END
    UNION ALL
    SELECT 'error_tables', CASE WHEN broken > 0 THEN 'ERROR' ELSE 'OK' END,
           CASE WHEN broken > 0 THEN broken || ' stream table(s) in ERROR/SUSPENDED: ' || broken_names
                ELSE 'All stream tables are ACTIVE or INITIALIZING' END FROM counts
    UNION ALL
    SELECT 'stale_tables', CASE WHEN stale > 0 THEN 'WARN' ELSE 'OK' END,
           CASE WHEN stale > 0 THEN stale || ' stale stream table(s) (scheduler behind its schedule): ' || stale_names
                ELSE 'No stale stream tables' END FROM counts
    UNION ALL
    SELECT 'needs_reinit', CASE WHEN reinit > 0 THEN 'WARN' ELSE 'OK' END,
           CASE WHEN reinit > 0 THEN reinit || ' stream table(s) need reinitialization (DDL change detected): ' || reinit_names
                ELSE 'No stream tables awaiting reinitialization' END FROM counts
    UNION ALL
    SELECT 'consecutive_errors', CASE WHEN erroring > 0 THEN 'WARN' ELSE 'OK' END,
           CASE WHEN erroring > 0
                THEN erroring || ' stream table(s) have consecutive errors (approaching auto-suspend): ' || erroring_names
                ELSE 'No stream tables accumulating refresh errors' END FROM counts
    UNION ALL
    SELECT 'buffer_growth', CASE WHEN bloated > 0 THEN 'WARN' ELSE 'OK' END,
           CASE WHEN bloated > 0
                THEN bloated || ' CDC buffer(s) exceeding 10 000 pending rows — differential refresh may be stalled: ' || names
                ELSE 'All CDC buffers within normal range' END FROM buffers
    -- The rows 0.67 adds (src/monitor/health.rs health_check). The emulator captures changes with
    -- triggers (no replication slot), refreshes in one scheduler session (no worker pool, no job queue):
    -- each row says what the engine says when there is no such thing, and that it is the emulator.
    UNION ALL
    SELECT 'slot_lag', 'OK', 'All WAL replication slots within normal range (emulator: no replication slots)'
    UNION ALL
    SELECT 'worker_pool', 'OK', 'emulator: no worker pool (one scheduler session refreshes serially)'
    UNION ALL
    SELECT 'job_queue', 'OK', 'No jobs queued (emulator: no job queue)'
    UNION ALL
    SELECT 'attachment_owner_check',
           CASE WHEN count(*) = 0 THEN 'OK' ELSE 'WARNING' END,
           CASE WHEN count(*) = 0 THEN 'No outbox/publication ownership mismatches'
                ELSE count(*) || ' attachment(s) created by non-owner: '
                     || string_agg(format('ST "%s" has a publication attached by role "%s" but owned by "%s"',
                                          fqn, pub_owner, table_owner), '; ' ORDER BY fqn)
                     || '. Review outbox/publication created by non-owner; consider re-attaching as owner or granting explicit permissions.' END
      FROM (SELECT st.pgt_schema || '.' || st.pgt_name AS fqn, pub_role.rolname AS pub_owner,
                   st_role.rolname AS table_owner
              FROM pgtrickle.pgt_stream_tables st
              JOIN pg_catalog.pg_publication pub ON pub.pubname = st.downstream_publication_name
              JOIN pg_catalog.pg_class cls ON cls.oid = st.pgt_relid
              JOIN pg_catalog.pg_roles st_role ON st_role.oid = cls.relowner
              JOIN pg_catalog.pg_roles pub_role ON pub_role.oid = pub.pubowner
             WHERE pub_role.rolname IS DISTINCT FROM st_role.rolname) mismatches
$$;

CREATE FUNCTION pgtrickle.health_summary()
RETURNS TABLE (total_stream_tables integer, active_count integer, error_count integer, suspended_count integer,
               stale_count integer, reinit_pending integer, max_staleness_seconds double precision,
               scheduler_status text, cache_hit_rate double precision)
LANGUAGE sql STABLE AS $$
    SELECT count(*)::integer,
           count(*) FILTER (WHERE status = 'ACTIVE')::integer,
           count(*) FILTER (WHERE status = 'ERROR')::integer,
           count(*) FILTER (WHERE status = 'SUSPENDED')::integer,
           count(*) FILTER (WHERE stale)::integer,
           count(*) FILTER (WHERE needs_reinit)::integer,
           max(extract(epoch FROM staleness))::double precision,
           CASE WHEN pgtrickle.emulator_scheduler_running() THEN 'ACTIVE' ELSE 'STOPPED' END,
           NULL::double precision  -- the emulator has no template cache
      FROM pgtrickle.stream_tables_info
$$;

-- quick_health as the 0.67 install script defines it: error_tables counts status ERROR or a table with
-- consecutive errors (a SUSPENDED table whose counter was reset is not counted); stale needs a duration
-- schedule and a last refresh.
CREATE VIEW pgtrickle.quick_health AS
WITH st AS (
    SELECT s.status, s.consecutive_errors,
           s.schedule IS NOT NULL AND s.schedule !~ '[\s@]' AND s.last_refresh_at IS NOT NULL
           AND extract(epoch FROM now() - s.last_refresh_at) > pgtrickle.emulator_schedule_seconds(s.schedule) AS stale
      FROM pgtrickle.pgt_stream_tables s)
SELECT count(*)::bigint AS total_stream_tables,
       count(*) FILTER (WHERE status = 'ERROR' OR consecutive_errors > 0)::bigint AS error_tables,
       count(*) FILTER (WHERE stale)::bigint AS stale_tables,
       pgtrickle.emulator_scheduler_running() AS scheduler_running,
       CASE WHEN count(*) = 0 THEN 'EMPTY'
            WHEN count(*) FILTER (WHERE status = 'SUSPENDED') > 0 THEN 'CRITICAL'
            WHEN count(*) FILTER (WHERE status = 'ERROR' OR consecutive_errors > 0) > 0 THEN 'WARNING'
            WHEN count(*) FILTER (WHERE stale) > 0 THEN 'WARNING'
            ELSE 'OK' END AS status
  FROM st;

CREATE FUNCTION pgtrickle.get_staleness(name text) RETURNS double precision
LANGUAGE sql STABLE AS $$
    SELECT extract(epoch FROM now() - st.data_timestamp)::double precision
      FROM pgtrickle.pgt_stream_tables st
     WHERE st.pgt_schema = coalesce((parse_ident(get_staleness.name))[array_length(parse_ident(get_staleness.name), 1) - 1], 'public')
       AND st.pgt_name = (parse_ident(get_staleness.name))[array_length(parse_ident(get_staleness.name), 1)]
$$;

CREATE FUNCTION pgtrickle.get_refresh_history(name text, max_rows integer DEFAULT 20)
RETURNS TABLE (refresh_id bigint, data_timestamp timestamptz, start_time timestamptz, end_time timestamptz,
               action text, status text, rows_inserted bigint, rows_deleted bigint, duration_ms double precision,
               error_message text)
LANGUAGE sql STABLE AS $$
    SELECT h.refresh_id, h.data_timestamp, h.start_time, h.end_time, h.action, h.status, h.rows_inserted,
           h.rows_deleted, extract(epoch FROM h.end_time - h.start_time) * 1000, h.error_message
      FROM pgtrickle.pgt_refresh_history h
      JOIN pgtrickle.pgt_stream_tables st ON st.pgt_id = h.pgt_id
     WHERE st.pgt_schema = coalesce((parse_ident(get_refresh_history.name))[array_length(parse_ident(get_refresh_history.name), 1) - 1], 'public')
       AND st.pgt_name = (parse_ident(get_refresh_history.name))[array_length(parse_ident(get_refresh_history.name), 1)]
     ORDER BY h.start_time DESC
     LIMIT max_rows
$$;

CREATE FUNCTION pgtrickle.refresh_timeline(max_rows integer DEFAULT 50)
RETURNS TABLE (start_time timestamptz, stream_table text, action text, status text, rows_inserted bigint,
               rows_deleted bigint, duration_ms double precision, error_message text)
LANGUAGE sql STABLE AS $$
    SELECT h.start_time, st.pgt_schema || '.' || st.pgt_name, h.action, h.status, h.rows_inserted, h.rows_deleted,
           extract(epoch FROM h.end_time - h.start_time) * 1000, h.error_message
      FROM pgtrickle.pgt_refresh_history h
      JOIN pgtrickle.pgt_stream_tables st ON st.pgt_id = h.pgt_id
     ORDER BY h.start_time DESC
     LIMIT max_rows
$$;

-- refresh_efficiency: src/api/helpers.rs::refresh_efficiency over src/diagnostics.rs::gather_history_stats.
-- total_refreshes, diff_count and full_count count every COMPLETED row (of any action, of action DIFFERENTIAL,
-- of action FULL; kept as running totals in emulator_stats). avg_diff_ms / avg_full_ms average end_time -
-- start_time over the latest 100 COMPLETED rows of the action: pg_trickle writes both with now() of one
-- transaction (src/catalog.rs::RefreshRecord), so they are 0 on the engine and here alike, never a measure.
-- avg_change_ratio averages (rows_inserted + rows_deleted) / greatest(reltuples of the stream table, 1) over
-- the latest 100 COMPLETED rows of any action, NO_DATA rows included in the window (they add no term).
CREATE FUNCTION pgtrickle.refresh_efficiency()
RETURNS TABLE (pgt_schema text, pgt_name text, refresh_mode text, total_refreshes bigint, diff_count bigint,
               full_count bigint, avg_diff_ms double precision, avg_full_ms double precision,
               avg_change_ratio double precision, diff_speedup text, last_refresh_at text)
LANGUAGE sql STABLE AS $$
    SELECT st.pgt_schema, st.pgt_name, st.refresh_mode, s.total_completed, s.diff_count, s.full_count,
           diff.avg_ms, full_.avg_ms, ratio.avg_ratio,
           CASE WHEN diff.avg_ms > 0 AND full_.avg_ms IS NOT NULL
                THEN to_char(full_.avg_ms / diff.avg_ms, 'FM999999990.0') || 'x' END,
           st.data_timestamp::text
      FROM pgtrickle.pgt_stream_tables st
      JOIN pgtrickle.emulator_stats s ON s.pgt_id = st.pgt_id
      CROSS JOIN LATERAL (
            SELECT avg(extract(epoch FROM h.end_time - h.start_time) * 1000)::double precision AS avg_ms
              FROM (SELECT * FROM pgtrickle.pgt_refresh_history h
                     WHERE h.pgt_id = st.pgt_id AND h.status = 'COMPLETED' AND h.action = 'DIFFERENTIAL'
                     ORDER BY h.pgt_id, h.start_time DESC LIMIT 100) h
             WHERE h.end_time IS NOT NULL) diff
      CROSS JOIN LATERAL (
            SELECT avg(extract(epoch FROM h.end_time - h.start_time) * 1000)::double precision AS avg_ms
              FROM (SELECT * FROM pgtrickle.pgt_refresh_history h
                     WHERE h.pgt_id = st.pgt_id AND h.status = 'COMPLETED' AND h.action = 'FULL'
                     ORDER BY h.pgt_id, h.start_time DESC LIMIT 100) h
             WHERE h.end_time IS NOT NULL) full_
      CROSS JOIN LATERAL (
            SELECT avg(CASE WHEN h.rows_inserted + h.rows_deleted > 0
                            THEN (h.rows_inserted + h.rows_deleted)::double precision
                                 / greatest((SELECT greatest(c.reltuples, 1.0) FROM pg_catalog.pg_class c
                                              WHERE c.oid = st.pgt_relid), 1.0) END) AS avg_ratio
              FROM (SELECT h.rows_inserted, h.rows_deleted FROM pgtrickle.pgt_refresh_history h
                     WHERE h.pgt_id = st.pgt_id AND h.status = 'COMPLETED'
                     ORDER BY h.pgt_id, h.start_time DESC LIMIT 100) h) ratio
     ORDER BY st.pgt_schema, st.pgt_name
$$;

-- The Refresh Mode Advisor: src/diagnostics.rs::collect_signals and compute_recommendation with the inputs
-- of gather_all_signals, as src/api/helpers.rs::recommend_refresh_mode calls them. Every signal is gathered
-- as the engine gathers it except query_complexity, which needs pg_trickle's DVM parser: it is not measured
-- (score and weight NULL, not counted), where the engine always counts it with weight 0.10.
CREATE FUNCTION pgtrickle.emulator_ratio_score(p_ratio double precision) RETURNS double precision
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_ratio IS NULL THEN NULL
                WHEN p_ratio < 0.05 THEN 1.0 WHEN p_ratio < 0.15 THEN 0.5 WHEN p_ratio < 0.30 THEN -0.3
                WHEN p_ratio < 0.50 THEN -0.7 ELSE -1.0 END
$$;

-- src/diagnostics.rs::score_empirical_timing
CREATE FUNCTION pgtrickle.emulator_timing_score(p_diff_ms double precision, p_full_ms double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_full_ms <= 0 THEN 0.0
                WHEN p_diff_ms / p_full_ms < 0.3 THEN 1.0 WHEN p_diff_ms / p_full_ms < 0.7 THEN 0.5
                WHEN p_diff_ms / p_full_ms < 1.0 THEN 0.2 WHEN p_diff_ms / p_full_ms < 1.5 THEN -0.5 ELSE -1.0 END
$$;

-- src/diagnostics.rs::format_bytes
CREATE FUNCTION pgtrickle.emulator_format_bytes(p_bytes bigint) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_bytes >= 1073741824 THEN to_char(p_bytes / 1073741824.0, 'FM999999990.0') || ' GB'
                WHEN p_bytes >= 1048576 THEN to_char(p_bytes / 1048576.0, 'FM999999990.0') || ' MB'
                WHEN p_bytes >= 1024 THEN to_char(p_bytes / 1024.0, 'FM999999990.0') || ' KB'
                ELSE p_bytes || ' B' END
$$;

-- Pending changes of a stream table's plain sources: the rows of their change buffers, counted as the
-- caller as pg_trickle's advisor counts them (src/diagnostics.rs, gather_change_ratio: SELECT count(*) FROM
-- each TABLE/FOREIGN_TABLE source's buffer). A caller without rights on pgtrickle_changes gets 42501.
CREATE FUNCTION pgtrickle.emulator_pending_changes(p_pgt_id bigint) RETURNS bigint
LANGUAGE plpgsql STABLE AS $$
DECLARE
    buffer text;
    n bigint;
    total bigint := 0;
BEGIN
    FOR buffer IN
        SELECT 'changes_' || t.source_stable_name
          FROM pgtrickle.pgt_dependencies d
          JOIN pgtrickle.pgt_change_tracking t ON t.source_relid = d.source_relid
         WHERE d.pgt_id = p_pgt_id AND d.source_type IN ('TABLE', 'FOREIGN_TABLE')
         ORDER BY 1
    LOOP
        EXECUTE format('SELECT count(*) FROM pgtrickle_changes.%I', buffer) INTO n;
        total := total + n;
    END LOOP;
    RETURN total;
END $$;

CREATE FUNCTION pgtrickle.recommend_refresh_mode(st_name text DEFAULT NULL)
RETURNS TABLE (pgt_schema text, pgt_name text, current_mode text, effective_mode text, recommended_mode text,
               confidence text, reason text, signals jsonb)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
DECLARE
    st record;
    eff text;
    pending double precision;
    tuples double precision;
    ratio_now double precision;
    ratio_avg double precision;
    diff_ms double precision;
    full_ms double precision;
    total_rows bigint;
    diff_rows bigint;
    full_rows bigint;
    p50 double precision;
    p95 double precision;
    size_bytes bigint;
    covering boolean;
    sig jsonb;
    total_w double precision;
    composite double precision;
    max_w constant double precision := 1.20;  -- sum of the base weights of pg_trickle's seven signals
    promoted boolean;
    verdict text;
    conf text;
    why text;
BEGIN
    FOR st IN
        SELECT s.* FROM pgtrickle.pgt_stream_tables s
         WHERE recommend_refresh_mode.st_name IS NULL
            OR (s.pgt_schema, s.pgt_name) = (SELECT n.schema_name, n.table_name
                                               FROM pgtrickle.emulator_split_name(recommend_refresh_mode.st_name) n)
         ORDER BY s.pgt_schema, s.pgt_name
    LOOP
        -- change_ratio_current (gather_change_ratio): pending changes of TABLE and FOREIGN_TABLE sources (the
        -- rows of their change buffers) over the sum of their greatest(reltuples, 1); no such source, no signal.
        pending := pgtrickle.emulator_pending_changes(st.pgt_id);
        SELECT sum(greatest(c.reltuples, 1)) INTO tuples
          FROM pgtrickle.pgt_dependencies d JOIN pg_catalog.pg_class c ON c.oid = d.source_relid
         WHERE d.pgt_id = st.pgt_id AND d.source_type IN ('TABLE', 'FOREIGN_TABLE');
        ratio_now := CASE WHEN tuples > 0 THEN pending / tuples END;
        -- gather_history_stats: the same windows as refresh_efficiency().
        SELECT e.avg_change_ratio, e.avg_diff_ms, e.avg_full_ms, e.total_refreshes, e.diff_count, e.full_count
          INTO ratio_avg, diff_ms, full_ms, total_rows, diff_rows, full_rows
          FROM pgtrickle.refresh_efficiency() e
         WHERE e.pgt_schema = st.pgt_schema AND e.pgt_name = st.pgt_name;
        p50 := NULL;
        p95 := NULL;
        IF least(diff_rows, 100) >= 20 THEN
            SELECT percentile_cont(0.50) WITHIN GROUP (ORDER BY extract(epoch FROM h.end_time - h.start_time) * 1000),
                   percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM h.end_time - h.start_time) * 1000)
              INTO p50, p95
              FROM (SELECT h.start_time, h.end_time FROM pgtrickle.pgt_refresh_history h
                     WHERE h.pgt_id = st.pgt_id AND h.status = 'COMPLETED' AND h.action = 'DIFFERENTIAL'
                       AND h.end_time IS NOT NULL
                     ORDER BY h.start_time DESC LIMIT 100) h;
        END IF;
        -- gather_target_size, gather_index_coverage
        size_bytes := pg_relation_size(st.pgt_relid) + pg_indexes_size(st.pgt_relid);
        covering := EXISTS (SELECT 1 FROM pg_catalog.pg_index i
                              JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
                             WHERE i.indrelid = st.pgt_relid AND a.attname = '__pgt_row_id');
        -- Effective mode: the action of the latest COMPLETED row, whatever it is (NO_DATA included).
        SELECT h.action INTO eff FROM pgtrickle.pgt_refresh_history h
         WHERE h.pgt_id = st.pgt_id AND h.status = 'COMPLETED'
         ORDER BY h.start_time DESC, h.refresh_id DESC LIMIT 1;
        IF NOT FOUND THEN
            eff := NULL;
        END IF;

        WITH sigs(ord, name, score, weight, base_weight, detail) AS (
            VALUES
            (1, 'change_ratio_current',
             CASE WHEN ratio_now IS NULL THEN 0.0 ELSE pgtrickle.emulator_ratio_score(ratio_now) END,
             CASE WHEN ratio_now IS NULL THEN 0.0 ELSE 0.25 END, 0.25,
             CASE WHEN ratio_now IS NULL THEN 'no current change data'
                  ELSE 'current change ratio ' || to_char(ratio_now, 'FM999999990.000') END),
            (2, 'change_ratio_avg',
             CASE WHEN ratio_avg IS NULL THEN 0.0 ELSE pgtrickle.emulator_ratio_score(ratio_avg) END,
             CASE WHEN ratio_avg IS NULL THEN 0.0 WHEN total_rows < 10 THEN 0.10 ELSE 0.30 END, 0.30,
             CASE WHEN ratio_avg IS NULL THEN 'no refresh history'
                  ELSE format('avg change ratio %s (%s history rows)', to_char(ratio_avg, 'FM999999990.000'), total_rows) END),
            (3, 'empirical_timing',
             CASE WHEN diff_ms IS NOT NULL AND full_ms IS NOT NULL AND diff_rows >= 5 AND full_rows >= 5
                  THEN pgtrickle.emulator_timing_score(diff_ms, full_ms) ELSE 0.0 END,
             CASE WHEN diff_ms IS NOT NULL AND full_ms IS NOT NULL AND diff_rows >= 5 AND full_rows >= 5
                  THEN 0.35 ELSE 0.0 END, 0.35,
             CASE WHEN diff_ms IS NOT NULL AND full_ms IS NOT NULL AND diff_rows >= 5 AND full_rows >= 5
                  THEN format('DIFF avg %sms vs FULL avg %sms', to_char(diff_ms, 'FM999999990.0'), to_char(full_ms, 'FM999999990.0'))
                  ELSE 'insufficient timing data (need ≥5 of each mode)' END),
            (4, 'query_complexity', NULL::double precision, NULL::double precision, 0.10,
             'query complexity not measured (the emulator has no DVM parser)'),
            (5, 'target_size',
             CASE WHEN size_bytes < 1048576 THEN -0.3 WHEN size_bytes < 104857600 THEN 0.1
                  WHEN size_bytes < 1073741824 THEN 0.5 ELSE 0.8 END, 0.10, 0.10,
             'target size ' || pgtrickle.emulator_format_bytes(size_bytes)),
            (6, 'index_coverage', CASE WHEN covering THEN 0.2 ELSE -0.2 END, 0.05, 0.05,
             CASE WHEN covering THEN 'covering index on row-id columns' ELSE 'no covering index on row-id columns' END),
            (7, 'latency_variance',
             CASE WHEN p50 IS NULL OR p95 IS NULL THEN 0.0 WHEN p50 <= 0 THEN 0.0
                  WHEN p95 / p50 < 2.0 THEN 0.2 WHEN p95 / p50 < 5.0 THEN 0.0 ELSE -0.3 END,
             CASE WHEN p50 IS NULL OR p95 IS NULL THEN 0.0 ELSE 0.05 END, 0.05,
             CASE WHEN p50 IS NULL OR p95 IS NULL THEN 'insufficient latency data (need ≥20 DIFF rows)'
                  ELSE format('P95/P50 = %s/%s = %s×', to_char(p95, 'FM999999990.0'), to_char(p50, 'FM999999990.0'),
                              to_char(p95 / greatest(p50, 0.001), 'FM999999990.0')) END)
        )
        SELECT coalesce(sum(x.weight), 0),
               CASE WHEN coalesce(sum(x.weight), 0) > 0 THEN sum(x.score * x.weight) / sum(x.weight) ELSE 0.0 END,
               coalesce(bool_or(x.base_weight >= 0.25 AND abs(x.score) >= 0.8), false),
               (SELECT string_agg(t.detail, '; ' ORDER BY t.rank)
                  FROM (SELECT y.detail, row_number() OVER (ORDER BY abs(y.score * y.weight) DESC, y.ord) AS rank
                          FROM sigs y WHERE y.weight > 0) t
                 WHERE t.rank <= 2),
               jsonb_agg(jsonb_build_object('name', x.name, 'score', x.score, 'weight', x.weight) ORDER BY x.ord)
          INTO total_w, composite, promoted, why, sig
          FROM sigs x;

        verdict := CASE WHEN composite > 0.15 THEN 'DIFFERENTIAL' WHEN composite < -0.15 THEN 'FULL' ELSE 'KEEP' END;
        IF verdict = eff THEN
            verdict := 'KEEP';  -- compute_recommendation: never recommend what already effectively runs
        END IF;
        conf := CASE WHEN total_w >= 0.8 * max_w THEN 'high' WHEN total_w >= 0.5 * max_w THEN 'medium' ELSE 'low' END;
        IF conf = 'low' AND promoted THEN
            conf := 'medium';
        END IF;

        pgt_schema := st.pgt_schema;
        pgt_name := st.pgt_name;
        current_mode := st.refresh_mode;
        effective_mode := eff;
        recommended_mode := verdict;
        confidence := conf;
        reason := coalesce(why, 'no diagnostic data available');
        signals := jsonb_build_object(
            'change_ratio_current', ratio_now, 'change_ratio_avg', ratio_avg,
            'diff_avg_ms', diff_ms, 'full_avg_ms', full_ms,
            'diff_p95_ms', p95, 'target_size_bytes', size_bytes, 'join_count', NULL,
            'has_covering_index', covering,
            'history_rows_diff', diff_rows, 'history_rows_full', full_rows, 'composite_score', composite,
            'signals', coalesce(sig, '[]'::jsonb));
        RETURN NEXT;
    END LOOP;
END $$;

-- dependency_tree: roots are stream tables without stream-table sources; under each node its downstream
-- stream tables, then its plain sources as leaves "schema.table [src]". Rows in DFS (reading) order.
CREATE FUNCTION pgtrickle.emulator_tree_node(p_pgt_id bigint, p_prefix text, p_connector text, p_depth integer)
RETURNS TABLE (tree_line text, node text, node_type text, depth integer, status text, refresh_mode text)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
DECLARE
    st pgtrickle.pgt_stream_tables;
    children record;
    child_prefix text;
    total integer;
    i integer := 0;
BEGIN
    SELECT * INTO st FROM pgtrickle.pgt_stream_tables s WHERE s.pgt_id = p_pgt_id;
    tree_line := p_prefix || p_connector || st.pgt_schema || '.' || st.pgt_name;
    node := st.pgt_schema || '.' || st.pgt_name;
    node_type := 'stream_table';
    depth := p_depth;
    status := st.status;
    refresh_mode := st.refresh_mode;
    RETURN NEXT;
    -- src/monitor/tree.rs dfs: '│   ' under a '├── ' node, four spaces under '└── ' and under a lone root ('').
    child_prefix := p_prefix || CASE p_connector WHEN '├── ' THEN '│   ' ELSE '    ' END;
    SELECT count(*) INTO total FROM (
        SELECT d.pgt_id FROM pgtrickle.pgt_dependencies d WHERE d.source_relid = st.pgt_relid
        UNION ALL
        SELECT d.source_relid FROM pgtrickle.pgt_dependencies d
         WHERE d.pgt_id = st.pgt_id AND d.source_type <> 'STREAM_TABLE') x;
    FOR children IN
        SELECT 0 AS kind, down.pgt_id, down.pgt_schema || '.' || down.pgt_name AS label
          FROM pgtrickle.pgt_dependencies d JOIN pgtrickle.pgt_stream_tables down ON down.pgt_id = d.pgt_id
         WHERE d.source_relid = st.pgt_relid
        UNION ALL
        SELECT 1, NULL, n.nspname || '.' || c.relname
          FROM pgtrickle.pgt_dependencies d
          JOIN pg_catalog.pg_class c ON c.oid = d.source_relid
          JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE d.pgt_id = st.pgt_id AND d.source_type <> 'STREAM_TABLE'
         ORDER BY 1, 3
    LOOP
        i := i + 1;
        IF children.kind = 0 THEN
            RETURN QUERY SELECT * FROM pgtrickle.emulator_tree_node(
                children.pgt_id, child_prefix, CASE WHEN i = total THEN '└── ' ELSE '├── ' END, p_depth + 1);
        ELSE
            tree_line := child_prefix || CASE WHEN i = total THEN '└── ' ELSE '├── ' END || children.label || ' [src]';
            node := children.label;
            node_type := 'source_table';
            depth := p_depth + 1;
            status := NULL;
            refresh_mode := NULL;
            RETURN NEXT;
        END IF;
    END LOOP;
END $$;

CREATE FUNCTION pgtrickle.dependency_tree()
RETURNS TABLE (tree_line text, node text, node_type text, depth integer, status text, refresh_mode text)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    roots bigint[];
    i integer;
BEGIN
    SELECT array_agg(s.pgt_id ORDER BY s.pgt_schema, s.pgt_name) INTO roots
      FROM pgtrickle.pgt_stream_tables s
     WHERE NOT EXISTS (SELECT 1 FROM pgtrickle.pgt_dependencies d
                        WHERE d.pgt_id = s.pgt_id AND d.source_type = 'STREAM_TABLE');
    IF roots IS NULL THEN
        RETURN;
    END IF;
    FOR i IN 1 .. array_length(roots, 1) LOOP
        RETURN QUERY SELECT * FROM pgtrickle.emulator_tree_node(
            roots[i], '',
            CASE WHEN array_length(roots, 1) = 1 THEN ''
                 WHEN i = array_length(roots, 1) THEN '└── ' ELSE '├── ' END,
            0);
    END LOOP;
END $$;

-- ---------------------------------------------------------------------------------------------------------
-- The engine's capacity surface (src/monitor/alert.rs collect_slot_health_rows, src/monitor/health.rs
-- worker_pool_status and parallel_job_status at v0.67.0). The emulator captures changes with triggers and
-- refreshes in one scheduler session, never in dynamic workers, so each function answers what pg_trickle
-- answers in the same configuration: trigger-mode sources retain no WAL, and with parallel refresh off no
-- worker is busy and no job is queued.
-- ---------------------------------------------------------------------------------------------------------

CREATE FUNCTION pgtrickle.slot_health()
RETURNS TABLE (slot_name text, source_relid bigint, active boolean, retained_wal_bytes bigint, wal_status text)
LANGUAGE sql STABLE SET search_path = pg_catalog AS $$
    -- One row per source with a change buffer (pgt_change_tracking, as collect_slot_health_rows reads it); in
    -- trigger mode slot_name is the capture trigger's name, 0 bytes of WAL retained.
    SELECT ct.slot_name, ct.source_relid::bigint, true, 0::bigint, 'trigger'
      FROM pgtrickle.pgt_change_tracking ct
     ORDER BY ct.source_relid
$$;

CREATE FUNCTION pgtrickle.worker_pool_status()
RETURNS TABLE (active_workers integer, max_workers integer, per_db_cap integer, parallel_mode text,
               idle_workers integer, last_scheduler_tick_unix bigint, ring_overflow_count bigint,
               citus_failure_total bigint)
LANGUAGE sql STABLE SET search_path = pg_catalog AS $$
    -- max_workers and per_db_cap are the GUCs (defaults 4 and 4, src/config.rs); the emulator never starts a
    -- dynamic worker, so active is 0. It keeps no tick clock in shared memory: the last tick is unknown (NULL).
    SELECT 0,
           coalesce(nullif(current_setting('pg_trickle.max_dynamic_refresh_workers', true), '')::integer, 4),
           coalesce(nullif(current_setting('pg_trickle.max_concurrent_refreshes', true), '')::integer, 4),
           'off',
           coalesce(nullif(current_setting('pg_trickle.max_dynamic_refresh_workers', true), '')::integer, 4),
           NULL::bigint, 0::bigint, 0::bigint
$$;

CREATE FUNCTION pgtrickle.parallel_job_status(max_age_seconds integer DEFAULT 300)
RETURNS TABLE (job_id bigint, unit_key text, unit_kind text, status text, member_count integer,
               attempt_no integer, scheduler_pid integer, worker_pid integer, enqueued_at timestamptz,
               started_at timestamptz, finished_at timestamptz, duration_ms double precision)
LANGUAGE sql STABLE SET search_path = pg_catalog AS $$
    -- pgt_scheduler_jobs stays empty when refreshes are not dispatched to workers.
    SELECT NULL::bigint, NULL::text, NULL::text, NULL::text, NULL::integer, NULL::integer, NULL::integer,
           NULL::integer, NULL::timestamptz, NULL::timestamptz, NULL::timestamptz, NULL::double precision
     WHERE false
$$;

-- ---------------------------------------------------------------------------------------------------
-- Diagnostics of pg_trickle 0.67 the emulator lacked (result columns as the 0.67 install script)
-- ---------------------------------------------------------------------------------------------------
-- diamond_groups (src/api/diagnostics.rs diamond_groups over src/dag.rs detect_diamonds and
-- compute_consistency_groups): for a stream table with two upstream nodes whose ancestor sets (each
-- including itself) share a node, the group is the convergence table plus the stream tables on either
-- branch that are not shared; overlapping groups merge; singletons are not listed. epoch is 0 (the
-- scheduler's in-memory counter starts at 0); schedule_policy is the strictest of the convergence points'.
CREATE FUNCTION pgtrickle.diamond_groups()
RETURNS TABLE (group_id integer, member_name text, member_schema text, is_convergence boolean, epoch bigint,
               schedule_policy text)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
DECLARE
    conv record;
    ups oid[];
    i integer;
    j integer;
    anc_i oid[];
    anc_j oid[];
    shared oid[];
    members oid[];
    groups jsonb := '[]'::jsonb;  -- [{"m": [relid...], "c": [relid...]}]
    g jsonb;
    merged jsonb;
    rest jsonb;
    k integer;
BEGIN
    FOR conv IN SELECT st.pgt_id, st.pgt_relid FROM pgtrickle.pgt_stream_tables st ORDER BY st.pgt_id LOOP
        SELECT array_agg(d.source_relid ORDER BY d.source_relid) INTO ups
          FROM pgtrickle.pgt_dependencies d WHERE d.pgt_id = conv.pgt_id;
        CONTINUE WHEN coalesce(array_length(ups, 1), 0) < 2;
        FOR i IN 1 .. array_length(ups, 1) LOOP
            FOR j IN i + 1 .. array_length(ups, 1) LOOP
                anc_i := pgtrickle.emulator_ancestors(ups[i]) || ups[i];
                anc_j := pgtrickle.emulator_ancestors(ups[j]) || ups[j];
                shared := ARRAY(SELECT unnest(anc_i) INTERSECT SELECT unnest(anc_j));
                CONTINUE WHEN cardinality(shared) = 0;
                members := ARRAY(
                    SELECT DISTINCT x FROM unnest(anc_i || anc_j) x
                     WHERE x <> ALL (shared) AND x <> conv.pgt_relid
                       AND EXISTS (SELECT 1 FROM pgtrickle.pgt_stream_tables s WHERE s.pgt_relid = x))
                   || conv.pgt_relid;
                -- merge with every existing group sharing a member
                merged := jsonb_build_object('m', to_jsonb(members), 'c', jsonb_build_array(conv.pgt_relid));
                rest := '[]'::jsonb;
                FOR k IN 0 .. jsonb_array_length(groups) - 1 LOOP
                    g := groups -> k;
                    IF EXISTS (SELECT 1 FROM jsonb_array_elements_text(g -> 'm') e WHERE e::oid = ANY (members)) THEN
                        merged := jsonb_build_object(
                            'm', (SELECT jsonb_agg(DISTINCT e) FROM (SELECT jsonb_array_elements(g -> 'm') e
                                   UNION SELECT jsonb_array_elements(merged -> 'm')) x),
                            'c', (SELECT jsonb_agg(DISTINCT e) FROM (SELECT jsonb_array_elements(g -> 'c') e
                                   UNION SELECT jsonb_array_elements(merged -> 'c')) x));
                    ELSE
                        rest := rest || jsonb_build_array(g);
                    END IF;
                END LOOP;
                groups := rest || jsonb_build_array(merged);
            END LOOP;
        END LOOP;
    END LOOP;
    RETURN QUERY
    SELECT gr.ord::integer, st.pgt_name, st.pgt_schema, (gr.g -> 'c') @> to_jsonb(st.pgt_relid), 0::bigint,
           (SELECT CASE WHEN bool_or(c.diamond_schedule_policy = 'slowest') THEN 'slowest' ELSE 'fastest' END
              FROM pgtrickle.pgt_stream_tables c
             WHERE (gr.g -> 'c') @> to_jsonb(c.pgt_relid) AND c.status = 'ACTIVE')
      FROM jsonb_array_elements(groups) WITH ORDINALITY AS gr(g, ord)
      CROSS JOIN LATERAL jsonb_array_elements_text(gr.g -> 'm') m(relid)
      JOIN pgtrickle.pgt_stream_tables st ON st.pgt_relid = m.relid::oid
      LEFT JOIN pgtrickle.emulator_topological_order() topo ON topo.pgt_id = st.pgt_id
     WHERE st.status = 'ACTIVE'
     ORDER BY gr.ord, topo.level, st.pgt_id;
END $$;

-- Every node (source table or stream table storage) a relation reads, transitively.
CREATE FUNCTION pgtrickle.emulator_ancestors(p_relid oid) RETURNS oid[]
LANGUAGE sql STABLE AS $$
    WITH RECURSIVE up(relid) AS (
        SELECT d.source_relid
          FROM pgtrickle.pgt_stream_tables st JOIN pgtrickle.pgt_dependencies d ON d.pgt_id = st.pgt_id
         WHERE st.pgt_relid = p_relid
        UNION
        SELECT d.source_relid
          FROM up
          JOIN pgtrickle.pgt_stream_tables st ON st.pgt_relid = up.relid
          JOIN pgtrickle.pgt_dependencies d ON d.pgt_id = st.pgt_id
    )
    SELECT coalesce(array_agg(relid), '{}') FROM up
$$;

-- trigger_inventory (src/monitor/health.rs trigger_inventory): two rows per source (DML, TRUNCATE),
-- ordered by source table. pg_trickle names its triggers pg_trickle_cdc_<oid> and
-- pg_trickle_cdc_truncate_<oid>; the emulator reports its own capture triggers under their real names
-- (DML is three statement triggers: present/enabled only if all three are).
CREATE FUNCTION pgtrickle.trigger_inventory()
RETURNS TABLE (source_table text, source_oid bigint, trigger_name text, trigger_type text, present boolean,
               enabled boolean)
LANGUAGE sql STABLE AS $$
    -- pg_trickle 0.67's own query (src/monitor/health.rs trigger_inventory): it looks for triggers named
    -- pg_trickle_cdc_<oid> and pg_trickle_cdc_truncate_<oid>, while create_stream_table names them by the
    -- source's stable name (src/cdc/mod.rs create_change_trigger: pg_trickle_cdc_<event>_<stable name>), so the
    -- engine reports its own capture triggers as absent. The emulator names its triggers as the engine does and
    -- answers with the engine's query, so it reports the same.
    SELECT n.nspname::text || '.' || c.relname::text, d.source_relid::bigint, t.trigger_name, t.kind,
           EXISTS (SELECT 1 FROM pg_catalog.pg_trigger tg
                    WHERE tg.tgrelid = d.source_relid AND tg.tgname = t.trigger_name),
           coalesce((SELECT tg.tgenabled <> 'D' FROM pg_catalog.pg_trigger tg
                      WHERE tg.tgrelid = d.source_relid AND tg.tgname = t.trigger_name), false)
      FROM (SELECT DISTINCT source_relid FROM pgtrickle.pgt_dependencies WHERE source_relid <> 0) d
      JOIN pg_catalog.pg_class c ON c.oid = d.source_relid
      JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
      CROSS JOIN LATERAL (VALUES (1, 'pg_trickle_cdc_' || d.source_relid::text, 'DML'),
                                 (2, 'pg_trickle_cdc_truncate_' || d.source_relid::text, 'TRUNCATE'))
                 AS t(ord, trigger_name, kind)
     ORDER BY 1, t.ord
$$;

-- pgt_scc_status (src/api/diagnostics.rs pgt_scc_status): one row per cyclic strongly connected
-- component (scc_id set). With pg_trickle.allow_circular off (the default) no cycle can be created,
-- so no stream table has an scc_id and the result is empty, as on the engine.
CREATE FUNCTION pgtrickle.pgt_scc_status()
RETURNS TABLE (scc_id integer, member_count integer, members text[], last_iterations integer,
               last_converged_at timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT st.scc_id, count(*)::integer,
           array_agg(st.pgt_schema || '.' || st.pgt_name ORDER BY st.pgt_schema, st.pgt_name),
           max(st.last_fixpoint_iterations), max(st.last_refresh_at)
      FROM pgtrickle.pgt_stream_tables st
     WHERE st.scc_id IS NOT NULL
     GROUP BY st.scc_id
     ORDER BY st.scc_id
$$;
