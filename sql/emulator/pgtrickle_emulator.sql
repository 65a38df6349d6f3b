-- pg_trickle emulator: pg_trickle's SQL surface for stock PostgreSQL 18.
--
-- For machines where the pg_trickle extension cannot be installed (CI, tests, `make preview`). Function
-- names, argument names/order/defaults and catalog columns follow pg_trickle (0.67 / 0.108 common surface,
-- see ../shared/reference/pg_trickle-api.md). Every refresh is a full recomputation whose row differences
-- are applied to the stream table; everything reported is measured, and what cannot be measured is NULL.
-- pgtrickle.version() says "emulator". See README.md beside this file.

CREATE SCHEMA pgtrickle;
COMMENT ON SCHEMA pgtrickle IS 'pg_trickle emulator (full recomputation with row-level diff); not the real extension';

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
    effective_refresh_mode     text CHECK (effective_refresh_mode IN ('FULL', 'DIFFERENTIAL', 'APPEND_ONLY', 'TOP_K', 'NO_DATA')),
    fuse_mode                  text NOT NULL DEFAULT 'off' CHECK (fuse_mode IN ('off', 'on', 'auto')),
    fuse_state                 text NOT NULL DEFAULT 'armed' CHECK (fuse_state IN ('armed', 'blown', 'disabled')),
    fuse_ceiling               bigint,
    fuse_sensitivity           integer,
    last_error_message         text,
    last_error_at              timestamptz,
    post_refresh_action        text NOT NULL DEFAULT 'none'
                               CHECK (post_refresh_action IN ('none', 'analyze', 'reindex', 'reindex_if_drift')),
    reindex_drift_threshold    double precision,
    storage_backend            text NOT NULL DEFAULT 'heap',
    st_partition_key           text,
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
-- latest 100 COMPLETED rows that changed something" per stream table: these two partial indexes make both
-- bounded reads, however many NO_DATA rows (or no DIFFERENTIAL rows at all) the history holds.
CREATE INDEX pgt_refresh_history_completed_action_idx ON pgtrickle.pgt_refresh_history (pgt_id, action, start_time DESC)
    INCLUDE (end_time) WHERE status = 'COMPLETED';
CREATE INDEX pgt_refresh_history_changed_idx ON pgtrickle.pgt_refresh_history (pgt_id, start_time DESC)
    INCLUDE (rows_inserted, rows_deleted) WHERE status = 'COMPLETED' AND rows_inserted + rows_deleted > 0;
-- Without statistics on the expression the planner guesses a third of the rows changed something and may
-- prefer filtering the start_time index, which is unbounded on a NO_DATA-heavy history.
CREATE STATISTICS pgtrickle.pgt_refresh_history_changed_stat ON (rows_inserted + rows_deleted)
    FROM pgtrickle.pgt_refresh_history;

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

-- The scheduler session holds this advisory lock (two int4 keys) while CALL pgtrickle.emulator_run() runs.
CREATE FUNCTION pgtrickle.emulator_lock_keys(OUT key1 integer, OUT key2 integer)
LANGUAGE sql IMMUTABLE AS $$ SELECT 7461, 1 $$;

CREATE FUNCTION pgtrickle.emulator_scheduler_running() RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (
        SELECT 1 FROM pg_catalog.pg_locks l, pgtrickle.emulator_lock_keys() k
         WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
           AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())
           AND l.classid = k.key1::oid AND l.objid = k.key2::oid)
$$;

CREATE FUNCTION pgtrickle.version() RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT 'emulator 0.1.0 of the pg_trickle 0.67 SQL surface (full recomputation with row-level diff; PostgreSQL '
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

-- Schedule text -> seconds. NULL for 'calculated' and cron; errors like pg_trickle for bad input.
CREATE FUNCTION pgtrickle.emulator_schedule_seconds(p_schedule text) RETURNS double precision
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    s text := lower(btrim(p_schedule));
    total double precision := 0;
    m text[];
BEGIN
    IF p_schedule IS NULL THEN
        RETURN NULL;
    END IF;
    IF s = 'calculated' OR s LIKE '@%' OR s LIKE '% %' THEN
        RETURN NULL;
    END IF;
    IF s ~ '^[0-9]+$' THEN
        RETURN s::double precision;
    END IF;
    IF s !~ '^([0-9]+(s|m|h|d|w))+$' THEN
        RAISE EXCEPTION 'invalid schedule "%": use a duration such as ''1s'', ''5m'', ''1h30m'', ''calculated'' or a cron expression', p_schedule
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR m IN SELECT regexp_matches(s, '([0-9]+)(s|m|h|d|w)', 'g') LOOP
        total := total + m[1]::double precision * CASE m[2]
            WHEN 's' THEN 1 WHEN 'm' THEN 60 WHEN 'h' THEN 3600 WHEN 'd' THEN 86400 ELSE 604800 END;
    END LOOP;
    RETURN total;
END $$;

-- Validates a schedule and returns what the catalog stores (NULL = calculated).
CREATE FUNCTION pgtrickle.emulator_normalize_schedule(p_schedule text) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    s text := btrim(p_schedule);
    seconds double precision;
BEGIN
    IF p_schedule IS NULL THEN
        RAISE EXCEPTION 'schedule must not be NULL: use ''calculated'' to refresh when upstream data changes'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF lower(s) = 'calculated' THEN
        RETURN NULL;
    END IF;
    IF s LIKE '@%' OR s LIKE '% %' THEN
        IF s NOT LIKE '@%' AND array_length(regexp_split_to_array(s, '\s+'), 1) NOT IN (5, 6) THEN
            RAISE EXCEPTION 'invalid cron schedule "%": expected 5 or 6 fields', p_schedule
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        RETURN s;
    END IF;
    seconds := pgtrickle.emulator_schedule_seconds(s);
    IF seconds < 1 THEN
        RAISE EXCEPTION 'schedule "%" is shorter than pg_trickle.min_schedule_seconds (1)', p_schedule
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN s;
END $$;

CREATE FUNCTION pgtrickle.emulator_normalize_mode(p_mode text) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    m text := upper(btrim(coalesce(p_mode, 'AUTO')));
BEGIN
    IF m = 'INCREMENTAL' THEN
        m := 'DIFFERENTIAL';
    END IF;
    IF m NOT IN ('AUTO', 'FULL', 'DIFFERENTIAL', 'IMMEDIATE') THEN
        RAISE EXCEPTION 'invalid refresh_mode "%": use AUTO, FULL, DIFFERENTIAL or IMMEDIATE', p_mode
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- The emulator does not analyse differentiability: AUTO resolves to DIFFERENTIAL (see README).
    RETURN CASE m WHEN 'AUTO' THEN 'DIFFERENTIAL' ELSE m END;
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

-- Change capture triggers (SECURITY DEFINER: a writer role with INSERT/UPDATE rights only fires them).
CREATE FUNCTION pgtrickle.emulator_capture_new() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pgtrickle AS $$
DECLARE
    n bigint;
BEGIN
    SELECT count(*) INTO n FROM pgt_emulator_new;
    IF n > 0 THEN
        INSERT INTO pgtrickle.emulator_source_changes AS c (source_relid, change_seq, changed_rows)
        VALUES (TG_RELID, 1, n)
        ON CONFLICT (source_relid) DO UPDATE
           SET change_seq = c.change_seq + 1, changed_rows = c.changed_rows + EXCLUDED.changed_rows;
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION pgtrickle.emulator_capture_old() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pgtrickle AS $$
DECLARE
    n bigint;
BEGIN
    SELECT count(*) INTO n FROM pgt_emulator_old;
    IF n > 0 THEN
        INSERT INTO pgtrickle.emulator_source_changes AS c (source_relid, change_seq, changed_rows)
        VALUES (TG_RELID, 1, n)
        ON CONFLICT (source_relid) DO UPDATE
           SET change_seq = c.change_seq + 1, changed_rows = c.changed_rows + EXCLUDED.changed_rows;
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION pgtrickle.emulator_capture_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pgtrickle AS $$
BEGIN
    -- TRUNCATE has no transition table: count it as one change of unknown size (rows not counted).
    INSERT INTO pgtrickle.emulator_source_changes AS c (source_relid, change_seq, changed_rows)
    VALUES (TG_RELID, 1, 0)
    ON CONFLICT (source_relid) DO UPDATE SET change_seq = c.change_seq + 1;
    RETURN NULL;
END $$;

CREATE FUNCTION pgtrickle.emulator_attach_capture(p_relid oid) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    target text := p_relid::regclass::text;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_trigger WHERE tgrelid = p_relid AND tgname = 'pgt_emulator_cdc_ins') THEN
        RETURN;
    END IF;
    EXECUTE format('CREATE TRIGGER pgt_emulator_cdc_ins AFTER INSERT ON %s REFERENCING NEW TABLE AS pgt_emulator_new'
                   ' FOR EACH STATEMENT EXECUTE FUNCTION pgtrickle.emulator_capture_new()', target);
    EXECUTE format('CREATE TRIGGER pgt_emulator_cdc_upd AFTER UPDATE ON %s REFERENCING NEW TABLE AS pgt_emulator_new'
                   ' FOR EACH STATEMENT EXECUTE FUNCTION pgtrickle.emulator_capture_new()', target);
    EXECUTE format('CREATE TRIGGER pgt_emulator_cdc_del AFTER DELETE ON %s REFERENCING OLD TABLE AS pgt_emulator_old'
                   ' FOR EACH STATEMENT EXECUTE FUNCTION pgtrickle.emulator_capture_old()', target);
    EXECUTE format('CREATE TRIGGER pgt_emulator_cdc_trunc AFTER TRUNCATE ON %s'
                   ' FOR EACH STATEMENT EXECUTE FUNCTION pgtrickle.emulator_capture_truncate()', target);
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
CREATE FUNCTION pgtrickle.emulator_consume_buffers(p_pgt_id bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    src record;
BEGIN
    FOR src IN
        SELECT t.source_relid, t.source_stable_name,
               (SELECT min(coalesce((st.frontier -> d2.source_relid::text ->> 'change_id')::bigint, 0))
                  FROM pgtrickle.pgt_dependencies d2 JOIN pgtrickle.pgt_stream_tables st ON st.pgt_id = d2.pgt_id
                 WHERE d2.source_relid = t.source_relid) AS consumed
          FROM pgtrickle.pgt_dependencies d
          JOIN pgtrickle.pgt_change_tracking t ON t.source_relid = d.source_relid
         WHERE d.pgt_id = p_pgt_id
    LOOP
        IF src.consumed > 0 THEN
            EXECUTE format('DELETE FROM pgtrickle_changes.%I WHERE change_id <= $1', 'changes_' || src.source_stable_name)
              USING src.consumed;
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
-- Refresh: recompute the defining query, apply only the row differences (multiset, NULL-safe)
-- ---------------------------------------------------------------------------------------------------
-- Rows are compared by their text form, which is hashable and NULL-safe; it is stricter than type
-- equality (1.0 vs 1.00), so the stored rows end up exactly as the query returns them.
-- Returns the counts actually applied. Raises on any error (callers decide how to record it).
CREATE FUNCTION pgtrickle.emulator_apply(p_pgt_id bigint, OUT rows_inserted bigint, OUT rows_deleted bigint)
LANGUAGE plpgsql AS $$
DECLARE
    st pgtrickle.pgt_stream_tables;
    target text;
    cols text;
    stored_cols text;
    wanted_cols text;
BEGIN
    SELECT * INTO STRICT st FROM pgtrickle.pgt_stream_tables WHERE pgt_id = p_pgt_id;
    target := format('%I.%I', st.pgt_schema, st.pgt_name);
    SELECT array_to_string(c, ', '), array_to_string(array(SELECT 's.' || x FROM unnest(c) x), ', '),
           array_to_string(array(SELECT 'w.' || x FROM unnest(c) x), ', ')
      INTO cols, stored_cols, wanted_cols
      FROM pgtrickle.emulator_columns(st.pgt_relid) c;
    EXECUTE format($q$
        WITH wanted AS (
                 SELECT q.*, q::text AS __pgt_key FROM (%1$s) q),
             wanted_n AS (
                 SELECT w.*, row_number() OVER (PARTITION BY w.__pgt_key) AS __pgt_n FROM wanted w),
             stored_n AS (
                 SELECT x.__pgt_row_id, x.__pgt_key,
                        row_number() OVER (PARTITION BY x.__pgt_key ORDER BY x.__pgt_row_id) AS __pgt_n
                   FROM (SELECT s.__pgt_row_id, ROW(%3$s)::text AS __pgt_key FROM %2$s s) x),
             deleted AS (
                 DELETE FROM %2$s t
                  USING stored_n s LEFT JOIN wanted_n w ON w.__pgt_key = s.__pgt_key AND w.__pgt_n = s.__pgt_n
                  WHERE t.__pgt_row_id = s.__pgt_row_id AND w.__pgt_key IS NULL
                 RETURNING 1),
             inserted AS (
                 INSERT INTO %2$s (%5$s)
                 SELECT %4$s FROM wanted_n w
                   LEFT JOIN stored_n s ON s.__pgt_key = w.__pgt_key AND s.__pgt_n = w.__pgt_n
                  WHERE s.__pgt_key IS NULL
                 RETURNING 1)
        SELECT (SELECT count(*) FROM inserted), (SELECT count(*) FROM deleted)
    $q$, st.defining_query, target, stored_cols, wanted_cols, cols)
    INTO rows_inserted, rows_deleted;
END $$;

-- Starts a history row (RUNNING) and returns its id.
CREATE FUNCTION pgtrickle.emulator_begin_refresh(p_pgt_id bigint, p_initiated_by text) RETURNS bigint
LANGUAGE sql AS $$
    INSERT INTO pgtrickle.pgt_refresh_history (pgt_id, data_timestamp, start_time, action, status, initiated_by)
    SELECT pgt_id, coalesce(data_timestamp, clock_timestamp()), clock_timestamp(), 'FULL', 'RUNNING', p_initiated_by
      FROM pgtrickle.pgt_stream_tables WHERE pgt_id = p_pgt_id
    RETURNING refresh_id
$$;

-- Runs the refresh a history row stands for and completes the row. With p_catch, an error is recorded
-- (FAILED, consecutive_errors + 1, SUSPENDED at 3) instead of raised, so a scheduler tick goes on.
CREATE FUNCTION pgtrickle.emulator_finish_refresh(p_refresh_id bigint, p_catch boolean DEFAULT true) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    h pgtrickle.pgt_refresh_history;
    consumed jsonb;
    ins bigint;
    del bigint;
    finished timestamptz;
    elapsed_ms double precision;
    message text;
    errors integer;
BEGIN
    SELECT * INTO STRICT h FROM pgtrickle.pgt_refresh_history WHERE refresh_id = p_refresh_id;
    -- One refresh of a stream table at a time (two concurrent diffs against the same stored rows would
    -- both insert the new rows). Like pg_trickle, a manual refresh while another runs is an error; the
    -- scheduler records the table as skipped and tries again on a later tick. The lock is held until the
    -- transaction ends, and every statement below reads a snapshot taken after it was granted.
    IF NOT pg_try_advisory_xact_lock((pgtrickle.emulator_lock_keys()).key1 + 1, h.pgt_id::integer) THEN
        IF NOT p_catch THEN
            RAISE EXCEPTION 'refresh of stream table % is already in progress',
                (SELECT format('%s.%s', pgt_schema, pgt_name) FROM pgtrickle.pgt_stream_tables WHERE pgt_id = h.pgt_id)
                USING ERRCODE = 'object_in_use';
        END IF;
        UPDATE pgtrickle.pgt_refresh_history
           SET action = 'SKIP', status = 'SKIPPED', end_time = clock_timestamp(),
               error_message = 'another refresh of this stream table was in progress'
         WHERE refresh_id = p_refresh_id;
        RETURN 'SKIPPED';
    END IF;
    -- What the sources look like *before* the recomputation: later changes trigger another refresh.
    consumed := pgtrickle.emulator_current_frontier(h.pgt_id);
    BEGIN
        SELECT a.rows_inserted, a.rows_deleted INTO ins, del FROM pgtrickle.emulator_apply(h.pgt_id) a;
    EXCEPTION WHEN OTHERS THEN
        IF NOT p_catch THEN
            RAISE;
        END IF;
        message := SQLERRM;
        finished := clock_timestamp();
        UPDATE pgtrickle.pgt_refresh_history
           SET status = 'FAILED', end_time = finished, error_message = message
         WHERE refresh_id = p_refresh_id;
        UPDATE pgtrickle.pgt_stream_tables
           SET consecutive_errors = consecutive_errors + 1, last_error_message = message, last_error_at = finished,
               status = CASE WHEN consecutive_errors + 1 >= 3 THEN 'SUSPENDED' ELSE status END,
               updated_at = finished
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
    UPDATE pgtrickle.pgt_refresh_history
       SET status = 'COMPLETED', end_time = finished, rows_inserted = ins, rows_deleted = del,
           delta_row_count = ins + del, merge_strategy_used = 'emulator_full_diff',
           data_timestamp = CASE WHEN ins + del > 0 THEN h.start_time ELSE data_timestamp END
     WHERE refresh_id = p_refresh_id;
    UPDATE pgtrickle.pgt_stream_tables
       SET is_populated = true, consecutive_errors = 0, frontier = consumed, last_refresh_at = finished,
           data_timestamp = CASE WHEN ins + del > 0 OR data_timestamp IS NULL THEN h.start_time ELSE data_timestamp END,
           last_full_ms = elapsed_ms, effective_refresh_mode = 'FULL',
           status = CASE WHEN status = 'INITIALIZING' THEN 'ACTIVE' ELSE status END, updated_at = finished
     WHERE pgt_id = h.pgt_id;
    PERFORM pgtrickle.emulator_consume_buffers(h.pgt_id);
    UPDATE pgtrickle.emulator_stats
       SET row_count = row_count + ins - del, total_completed = total_completed + 1, full_count = full_count + 1,
           rows_inserted = rows_inserted + ins, rows_deleted = rows_deleted + del,
           sum_duration_ms = sum_duration_ms + elapsed_ms
     WHERE pgt_id = h.pgt_id;
    RETURN 'COMPLETED';
END $$;

-- Due but nothing changed upstream: a NO_DATA row, as pg_trickle's scheduler writes.
CREATE FUNCTION pgtrickle.emulator_record_no_data(p_pgt_id bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    started timestamptz := clock_timestamp();
BEGIN
    IF NOT pg_try_advisory_xact_lock((pgtrickle.emulator_lock_keys()).key1 + 1, p_pgt_id::integer) THEN
        RETURN;  -- a refresh of this table is running: it records the outcome, nothing to add
    END IF;
    INSERT INTO pgtrickle.pgt_refresh_history
           (pgt_id, data_timestamp, start_time, end_time, action, status, initiated_by)
    SELECT pgt_id, coalesce(data_timestamp, started), started, clock_timestamp(), 'NO_DATA', 'COMPLETED', 'SCHEDULER'
      FROM pgtrickle.pgt_stream_tables WHERE pgt_id = p_pgt_id;
    UPDATE pgtrickle.pgt_stream_tables
       SET last_refresh_at = clock_timestamp(), consecutive_errors = 0, updated_at = clock_timestamp()
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

-- One scheduler tick inside the caller's transaction. Returns the number of history rows written.
CREATE FUNCTION pgtrickle.emulator_tick() RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    item record;
    action text;
    written integer := 0;
BEGIN
    FOR item IN SELECT o.pgt_id FROM pgtrickle.emulator_topological_order() o LOOP
        action := pgtrickle.emulator_due_action(item.pgt_id);
        IF action = 'REFRESH' THEN
            PERFORM pgtrickle.emulator_finish_refresh(pgtrickle.emulator_begin_refresh(item.pgt_id, 'SCHEDULER'));
            written := written + 1;
        ELSIF action = 'NO_DATA' THEN
            PERFORM pgtrickle.emulator_record_no_data(item.pgt_id);
            written := written + 1;
        END IF;
    END LOOP;
    RETURN written;
END $$;

-- The scheduler loop: one session drives the whole DAG. Each refresh commits its RUNNING row first (so
-- other sessions see it running), then its outcome. Stops on cancel/terminate, or after max_ticks.
CREATE PROCEDURE pgtrickle.emulator_run(tick_interval_ms integer DEFAULT 500, max_ticks integer DEFAULT NULL)
LANGUAGE plpgsql AS $$
DECLARE
    keys record;
    ticks integer := 0;
    item record;
    action text;
    refresh_id bigint;
BEGIN
    IF tick_interval_ms IS NULL OR tick_interval_ms < 10 THEN
        RAISE EXCEPTION 'tick_interval_ms must be at least 10' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    keys := pgtrickle.emulator_lock_keys();
    IF NOT pg_try_advisory_lock(keys.key1, keys.key2) THEN
        RAISE EXCEPTION 'another emulator scheduler is running in database %', current_database()
            USING ERRCODE = 'lock_not_available';
    END IF;
    COMMIT;
    LOOP
        FOR item IN SELECT o.pgt_id FROM pgtrickle.emulator_topological_order() o LOOP
            action := pgtrickle.emulator_due_action(item.pgt_id);
            IF action = 'REFRESH' THEN
                refresh_id := pgtrickle.emulator_begin_refresh(item.pgt_id, 'SCHEDULER');
                COMMIT;
                PERFORM pgtrickle.emulator_finish_refresh(refresh_id);
                COMMIT;
            ELSIF action = 'NO_DATA' THEN
                PERFORM pgtrickle.emulator_record_no_data(item.pgt_id);
                COMMIT;
            END IF;
        END LOOP;
        COMMIT;
        ticks := ticks + 1;
        EXIT WHEN max_ticks IS NOT NULL AND ticks >= max_ticks;
        PERFORM pg_sleep(tick_interval_ms / 1000.0);
    END LOOP;
    PERFORM pg_advisory_unlock(keys.key1, keys.key2);
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
    mode text := pgtrickle.emulator_normalize_mode(refresh_mode);
    stored_schedule text := pgtrickle.emulator_normalize_schedule(schedule);
    consistency text := coalesce(pgtrickle.emulator_check_choice('diamond_consistency', diamond_consistency, ARRAY['none', 'atomic']), 'atomic');
    policy text := coalesce(pgtrickle.emulator_check_choice('diamond_schedule_policy', diamond_schedule_policy, ARRAY['fastest', 'slowest']), 'fastest');
    cdc text := pgtrickle.emulator_check_choice('cdc_mode', cdc_mode, ARRAY['auto', 'trigger', 'wal']);
    probe oid;
    relid oid;
    column_defs text;
    new_id bigint;
BEGIN
    n := pgtrickle.emulator_split_name(name);
    IF query IS NULL OR btrim(query) = '' THEN
        RAISE EXCEPTION 'query must not be empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF EXISTS (SELECT 1 FROM pgtrickle.pgt_stream_tables s WHERE s.pgt_schema = n.schema_name AND s.pgt_name = n.table_name) THEN
        RAISE EXCEPTION 'stream table "%.%" already exists', n.schema_name, n.table_name USING ERRCODE = 'duplicate_table';
    END IF;
    IF policy = 'slowest' AND consistency <> 'atomic' THEN
        RAISE EXCEPTION 'diamond_schedule_policy ''slowest'' requires diamond_consistency ''atomic''';
    END IF;
    IF append_only AND mode IN ('FULL', 'IMMEDIATE') THEN
        RAISE EXCEPTION 'append_only is not allowed with refresh_mode %', mode;
    END IF;
    IF mode = 'IMMEDIATE' THEN
        stored_schedule := NULL;
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
    EXECUTE format('CREATE TABLE %I.%I (__pgt_row_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, %s)',
                   n.schema_name, n.table_name, column_defs);
    relid := format('%I.%I', n.schema_name, n.table_name)::regclass;
    INSERT INTO pgtrickle.pgt_stream_tables
           (pgt_relid, pgt_name, pgt_schema, defining_query, original_query, schedule, refresh_mode, status,
            diamond_consistency, diamond_schedule_policy, requested_cdc_mode, is_append_only,
            pooler_compatibility_mode, max_differential_joins, max_delta_fraction, st_partition_key,
            storage_backend, effective_refresh_mode)
    VALUES (relid, n.table_name, n.schema_name, query, query, stored_schedule, mode, 'INITIALIZING',
            consistency, policy, cdc, append_only, pooler_compatibility_mode, max_differential_joins,
            max_delta_fraction, partition_by, coalesce(storage_backend, 'heap'), 'FULL')
    RETURNING pgt_id INTO new_id;
    INSERT INTO pgtrickle.emulator_stats (pgt_id) VALUES (new_id);
    PERFORM pgtrickle.emulator_record_sources(new_id, probe);
    -- Downstream stream tables read this one: capture its changes too.
    PERFORM pgtrickle.emulator_attach_capture(relid);
    DROP VIEW pg_temp.pgt_emulator_probe;
    IF initialize THEN
        PERFORM pgtrickle.emulator_finish_refresh(pgtrickle.emulator_begin_refresh(new_id, 'INITIAL'), false);
    ELSE
        UPDATE pgtrickle.pgt_stream_tables SET status = 'ACTIVE' WHERE pgt_id = new_id;
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
    SELECT string_agg(format('%s.%s', d2.pgt_schema, d2.pgt_name), ', ') INTO dependents
      FROM pgtrickle.pgt_dependencies d JOIN pgtrickle.pgt_stream_tables d2 ON d2.pgt_id = d.pgt_id
     WHERE d.source_relid = st.pgt_relid;
    IF dependents IS NOT NULL AND NOT "cascade" THEN
        RAISE EXCEPTION 'cannot drop stream table "%.%": stream tables depend on it (%)', st.pgt_schema, st.pgt_name, dependents
            USING ERRCODE = 'dependent_objects_still_exist', HINT = 'Use cascade => true to drop them too.';
    END IF;
    FOR down IN SELECT d2.pgt_schema, d2.pgt_name FROM pgtrickle.pgt_dependencies d
                  JOIN pgtrickle.pgt_stream_tables d2 ON d2.pgt_id = d.pgt_id
                 WHERE d.source_relid = st.pgt_relid LOOP
        IF EXISTS (SELECT 1 FROM pgtrickle.pgt_stream_tables x WHERE x.pgt_schema = down.pgt_schema AND x.pgt_name = down.pgt_name) THEN
            PERFORM pgtrickle.drop_stream_table(format('%I.%I', down.pgt_schema, down.pgt_name), true);
        END IF;
    END LOOP;
    previous_sources := ARRAY(SELECT source_relid FROM pgtrickle.pgt_dependencies WHERE pgt_id = st.pgt_id);
    DELETE FROM pgtrickle.pgt_stream_tables WHERE pgt_id = st.pgt_id;
    DELETE FROM pgtrickle.emulator_source_changes WHERE source_relid = st.pgt_relid;
    EXECUTE format('DROP TABLE %I.%I', st.pgt_schema, st.pgt_name);
    PERFORM pgtrickle.emulator_detach_capture_if_unused(relid) FROM unnest(previous_sources) relid;
END $$;

CREATE FUNCTION pgtrickle.refresh_stream_table(name text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    st pgtrickle.pgt_stream_tables := pgtrickle.emulator_lookup(name);
BEGIN
    -- Synchronous, in the caller's transaction; an error is raised to the caller (nothing recorded).
    PERFORM pgtrickle.emulator_finish_refresh(pgtrickle.emulator_begin_refresh(st.pgt_id, 'MANUAL'), false);
END $$;

CREATE FUNCTION pgtrickle.resume_stream_table(name text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    st pgtrickle.pgt_stream_tables := pgtrickle.emulator_lookup(name);
BEGIN
    IF st.status NOT IN ('SUSPENDED', 'ERROR') THEN
        RAISE EXCEPTION 'stream table "%.%" is % (only SUSPENDED or ERROR tables can be resumed)', st.pgt_schema, st.pgt_name, st.status
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    UPDATE pgtrickle.pgt_stream_tables
       SET status = 'ACTIVE', consecutive_errors = 0, last_error_message = NULL, updated_at = now()
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
DECLARE
    st pgtrickle.pgt_stream_tables := pgtrickle.emulator_lookup(name);
    new_status text := upper(status);
    old_defs text;
    new_defs text;
    qualified text := format('%I.%I', st.pgt_schema, st.pgt_name);
    probe oid;
    grants text[];
    grant_sql text;
BEGIN
    IF new_status IS NOT NULL AND new_status NOT IN ('INITIALIZING', 'ACTIVE', 'SUSPENDED', 'ERROR') THEN
        RAISE EXCEPTION 'invalid status "%": allowed values are INITIALIZING, ACTIVE, SUSPENDED, ERROR', status
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE pgtrickle.pgt_stream_tables s SET
        schedule = CASE WHEN alter_stream_table.schedule IS NULL THEN s.schedule
                        ELSE pgtrickle.emulator_normalize_schedule(alter_stream_table.schedule) END,
        refresh_mode = CASE WHEN alter_stream_table.refresh_mode IS NULL THEN s.refresh_mode
                            ELSE pgtrickle.emulator_normalize_mode(alter_stream_table.refresh_mode) END,
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
    UPDATE pgtrickle.pgt_stream_tables s SET schedule = NULL WHERE s.pgt_id = st.pgt_id AND s.refresh_mode = 'IMMEDIATE';
    IF alter_stream_table.query IS NULL OR alter_stream_table.query = st.defining_query THEN
        RETURN;
    END IF;
    -- A new query: same columns keep the storage (dependents keep reading it); otherwise it is rebuilt,
    -- which is refused while other stream tables read it.
    DROP VIEW IF EXISTS pg_temp.pgt_emulator_probe;
    EXECUTE format('CREATE TEMPORARY VIEW pgt_emulator_probe AS %s', alter_stream_table.query);
    probe := 'pg_temp.pgt_emulator_probe'::regclass;
    SELECT string_agg(format('%I %s', attname, format_type(atttypid, atttypmod)), ', ' ORDER BY attnum) INTO new_defs
      FROM pg_catalog.pg_attribute WHERE attrelid = probe AND attnum > 0 AND NOT attisdropped;
    SELECT string_agg(format('%I %s', attname, format_type(atttypid, atttypmod)), ', ' ORDER BY attnum) INTO old_defs
      FROM pg_catalog.pg_attribute
     WHERE attrelid = st.pgt_relid AND attnum > 0 AND NOT attisdropped AND attname <> '__pgt_row_id';
    IF new_defs IS DISTINCT FROM old_defs THEN
        IF EXISTS (SELECT 1 FROM pgtrickle.pgt_dependencies d WHERE d.source_relid = st.pgt_relid) THEN
            RAISE EXCEPTION 'cannot change the columns of stream table %: other stream tables read it', qualified
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
       SET defining_query = alter_stream_table.query, original_query = alter_stream_table.query, frontier = NULL,
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
       CASE WHEN s.full_count > 0 THEN s.sum_duration_ms / s.full_count END AS avg_duration_ms,
       last.action AS last_action, last.status AS last_status,
       (SELECT array_agg(DISTINCT d.cdc_mode) FROM pgtrickle.pgt_dependencies d WHERE d.pgt_id = i.pgt_id) AS cdc_modes,
       i.scc_id, i.last_fixpoint_iterations, i.refresh_tier
  FROM pgtrickle.stream_tables_info i
  JOIN pgtrickle.emulator_stats s ON s.pgt_id = i.pgt_id
  LEFT JOIN LATERAL (
        SELECT h.action, h.status FROM pgtrickle.pgt_refresh_history h
         WHERE h.pgt_id = i.pgt_id ORDER BY h.start_time DESC LIMIT 1) last ON true;

CREATE FUNCTION pgtrickle.change_buffer_sizes()
RETURNS TABLE (stream_table text, source_table text, source_oid bigint, cdc_mode text, pending_rows bigint,
               buffer_bytes bigint)
LANGUAGE sql STABLE AS $$
    -- pg_trickle's query (src/monitor/mod.rs, change_buffer_sizes): catalog and statistics only, so any role
    -- may call it without rights on pgtrickle_changes. pending_rows is the buffer's n_live_tup (statistics:
    -- it follows the buffer once the writing session has reported them), buffer_bytes its total relation
    -- size; a source without a buffer of its own (a stream table) shows 0 and 0.
    SELECT st.pgt_schema || '.' || st.pgt_name, n.nspname::text || '.' || c.relname::text, d.source_relid::bigint,
           d.cdc_mode, coalesce(s.n_live_tup, 0)::bigint, coalesce(pg_total_relation_size(cb.oid), 0)::bigint
      FROM pgtrickle.pgt_dependencies d
      JOIN pgtrickle.pgt_stream_tables st ON st.pgt_id = d.pgt_id
      JOIN pg_catalog.pg_class c ON c.oid = d.source_relid
      JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
      LEFT JOIN pgtrickle.pgt_change_tracking ct ON ct.source_relid = d.source_relid
      LEFT JOIN pg_catalog.pg_class cb
             ON cb.relname = 'changes_' || ct.source_stable_name
            AND cb.relnamespace = 'pgtrickle_changes'::regnamespace
      LEFT JOIN pg_catalog.pg_stat_user_tables s ON s.relid = cb.oid
     ORDER BY 1, 2
$$;

CREATE FUNCTION pgtrickle.health_check() RETURNS TABLE (check_name text, severity text, detail text)
LANGUAGE sql STABLE AS $$
    WITH counts AS (
        SELECT count(*) FILTER (WHERE status IN ('ERROR', 'SUSPENDED')) AS broken,
               string_agg(pgt_schema || '.' || pgt_name, ', ') FILTER (WHERE status IN ('ERROR', 'SUSPENDED')) AS broken_names,
               count(*) FILTER (WHERE stale) AS stale,
               string_agg(pgt_schema || '.' || pgt_name, ', ') FILTER (WHERE stale) AS stale_names,
               count(*) FILTER (WHERE needs_reinit) AS reinit,
               count(*) FILTER (WHERE consecutive_errors > 0 AND status NOT IN ('ERROR', 'SUSPENDED')) AS erroring,
               string_agg(pgt_schema || '.' || pgt_name, ', ')
                   FILTER (WHERE consecutive_errors > 0 AND status NOT IN ('ERROR', 'SUSPENDED')) AS erroring_names
          FROM pgtrickle.stream_tables_info),
    buffers AS (SELECT coalesce(max(pending_rows), 0) AS max_pending FROM pgtrickle.change_buffer_sizes())
    SELECT 'scheduler_running',
           CASE WHEN pgtrickle.emulator_scheduler_running() THEN 'OK' ELSE 'ERROR' END,
           CASE WHEN pgtrickle.emulator_scheduler_running() THEN 'emulator scheduler session is running'
                ELSE 'emulator scheduler is not running (CALL pgtrickle.emulator_run() in a dedicated session)' END
    UNION ALL
    SELECT 'error_tables', CASE WHEN broken > 0 THEN 'ERROR' ELSE 'OK' END,
           CASE WHEN broken > 0 THEN broken || ' stream table(s) in ERROR or SUSPENDED: ' || broken_names
                ELSE 'no stream table in ERROR or SUSPENDED' END FROM counts
    UNION ALL
    SELECT 'stale_tables', CASE WHEN stale > 0 THEN 'WARN' ELSE 'OK' END,
           CASE WHEN stale > 0 THEN stale || ' stream table(s) behind schedule: ' || stale_names
                ELSE 'every scheduled stream table is within its schedule' END FROM counts
    UNION ALL
    SELECT 'needs_reinit', CASE WHEN reinit > 0 THEN 'WARN' ELSE 'OK' END,
           reinit || ' stream table(s) need reinitialisation' FROM counts
    UNION ALL
    SELECT 'consecutive_errors', CASE WHEN erroring > 0 THEN 'WARN' ELSE 'OK' END,
           CASE WHEN erroring > 0 THEN 'failing but not yet suspended: ' || erroring_names
                ELSE 'no consecutive errors' END FROM counts
    UNION ALL
    SELECT 'buffer_growth', CASE WHEN max_pending > 10000 THEN 'WARN' ELSE 'OK' END,
           'largest pending change count: ' || max_pending FROM buffers
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

CREATE VIEW pgtrickle.quick_health AS
SELECT count(*) AS total_stream_tables,
       count(*) FILTER (WHERE status IN ('ERROR', 'SUSPENDED')) AS error_tables,
       count(*) FILTER (WHERE stale) AS stale_tables,
       pgtrickle.emulator_scheduler_running() AS scheduler_running,
       CASE WHEN count(*) = 0 THEN 'EMPTY'
            WHEN count(*) FILTER (WHERE status = 'SUSPENDED') > 0 THEN 'CRITICAL'
            WHEN count(*) FILTER (WHERE status = 'ERROR' OR stale) > 0 THEN 'WARNING'
            ELSE 'OK' END AS status
  FROM pgtrickle.stream_tables_info;

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

-- refresh_efficiency: pg_trickle's formulas over COMPLETED history rows. The emulator only ever runs
-- full recomputations, so diff_count is 0, avg_diff_ms and diff_speedup are NULL (not measured).
-- avg_change_ratio divides by the exact current row count (pg_trickle uses pg_class.reltuples).
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
                     ORDER BY h.pgt_id, h.start_time DESC LIMIT 100) h) diff
      CROSS JOIN LATERAL (
            SELECT avg(extract(epoch FROM h.end_time - h.start_time) * 1000)::double precision AS avg_ms
              FROM (SELECT * FROM pgtrickle.pgt_refresh_history h
                     WHERE h.pgt_id = st.pgt_id AND h.status = 'COMPLETED' AND h.action = 'FULL'
                     ORDER BY h.pgt_id, h.start_time DESC LIMIT 100) h) full_
      CROSS JOIN LATERAL (
            SELECT avg((h.rows_inserted + h.rows_deleted)::double precision / greatest(s.row_count, 1)) AS avg_ratio
              FROM (SELECT * FROM pgtrickle.pgt_refresh_history h
                     WHERE h.pgt_id = st.pgt_id AND h.status = 'COMPLETED' AND h.rows_inserted + h.rows_deleted > 0
                     ORDER BY h.pgt_id, h.start_time DESC LIMIT 100) h) ratio
     ORDER BY st.pgt_schema, st.pgt_name
$$;

-- The Refresh Mode Advisor with pg_trickle's weighted-signal formula, over the signals the emulator can
-- measure truthfully: change_ratio_current (w .25), change_ratio_avg (w .30, .10 below 10 history rows)
-- and target_size (w .10). empirical_timing, latency_variance, query_complexity and index_coverage are
-- not measured (NULL in signals, weight not counted), so confidence never reaches "high".
CREATE FUNCTION pgtrickle.emulator_ratio_score(p_ratio double precision) RETURNS double precision
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_ratio IS NULL THEN NULL
                WHEN p_ratio < 0.05 THEN 1.0 WHEN p_ratio < 0.15 THEN 0.5 WHEN p_ratio < 0.30 THEN -0.3
                WHEN p_ratio < 0.50 THEN -0.7 ELSE -1.0 END
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
    eff record;
    pending bigint;
    source_rows double precision;
    ratio_now double precision;
    ratio_avg double precision;
    full_ms double precision;
    history_rows bigint;
    size_bytes bigint;
    sig jsonb;
    total_w double precision;
    composite double precision;
    max_w constant double precision := 1.20;  -- sum of all pg_trickle signal weights
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
        pending := pgtrickle.emulator_pending_changes(st.pgt_id);
        SELECT sum(greatest(c.reltuples, 0)) INTO source_rows
          FROM pgtrickle.pgt_dependencies d JOIN pg_catalog.pg_class c ON c.oid = d.source_relid
         WHERE d.pgt_id = st.pgt_id AND c.reltuples >= 0;
        ratio_now := CASE WHEN source_rows > 0 THEN pending / source_rows END;
        SELECT e.avg_change_ratio, e.avg_full_ms INTO ratio_avg, full_ms FROM pgtrickle.refresh_efficiency() e
         WHERE e.pgt_schema = st.pgt_schema AND e.pgt_name = st.pgt_name;
        SELECT count(*) INTO history_rows FROM (
            SELECT 1 FROM pgtrickle.pgt_refresh_history h
             WHERE h.pgt_id = st.pgt_id AND h.status = 'COMPLETED' AND h.rows_inserted + h.rows_deleted > 0
             ORDER BY h.pgt_id, h.start_time DESC LIMIT 100) x;
        size_bytes := pg_total_relation_size(st.pgt_relid);
        -- The latest COMPLETED FULL or DIFFERENTIAL row: the newer of two one-row index reads.
        SELECT x.action INTO eff FROM (
            (SELECT h.action, h.start_time FROM pgtrickle.pgt_refresh_history h
              WHERE h.pgt_id = st.pgt_id AND h.status = 'COMPLETED' AND h.action = 'FULL'
              ORDER BY h.start_time DESC LIMIT 1)
            UNION ALL
            (SELECT h.action, h.start_time FROM pgtrickle.pgt_refresh_history h
              WHERE h.pgt_id = st.pgt_id AND h.status = 'COMPLETED' AND h.action = 'DIFFERENTIAL'
              ORDER BY h.start_time DESC LIMIT 1)) x
         ORDER BY x.start_time DESC LIMIT 1;

        WITH measured(name, score, weight, detail) AS (
            SELECT 'change_ratio_current', pgtrickle.emulator_ratio_score(ratio_now), 0.25,
                   format('pending changes are %s of source rows', round(ratio_now::numeric, 3))
             WHERE ratio_now IS NOT NULL
            UNION ALL
            SELECT 'change_ratio_avg', pgtrickle.emulator_ratio_score(ratio_avg),
                   CASE WHEN history_rows < 10 THEN 0.10 ELSE 0.30 END,
                   format('refreshes change %s of the rows on average', round(ratio_avg::numeric, 3))
             WHERE ratio_avg IS NOT NULL
            UNION ALL
            SELECT 'target_size',
                   CASE WHEN size_bytes < 1048576 THEN -0.3 WHEN size_bytes < 104857600 THEN 0.1
                        WHEN size_bytes < 1073741824 THEN 0.5 ELSE 0.8 END,
                   0.10, format('stream table size %s', pg_size_pretty(size_bytes))
        )
        SELECT sum(m.weight), sum(m.score * m.weight) / nullif(sum(m.weight), 0),
               bool_or(m.weight >= 0.25 AND abs(m.score) >= 0.8),
               (SELECT string_agg(x.detail, '; ' ORDER BY abs(x.score * x.weight) DESC, x.name)
                  FROM (SELECT * FROM measured ORDER BY abs(score * weight) DESC, name LIMIT 2) x),
               jsonb_agg(jsonb_build_object('name', m.name, 'score', m.score, 'weight', m.weight) ORDER BY m.name)
          INTO total_w, composite, promoted, why, sig
          FROM measured m;

        verdict := CASE WHEN composite > 0.15 THEN 'DIFFERENTIAL' WHEN composite < -0.15 THEN 'FULL' ELSE 'KEEP' END;
        IF verdict = eff.action THEN
            verdict := 'KEEP';
        END IF;
        conf := CASE WHEN total_w >= 0.8 * max_w THEN 'high' WHEN total_w >= 0.5 * max_w THEN 'medium' ELSE 'low' END;
        IF conf = 'low' AND promoted THEN
            conf := 'medium';
        END IF;

        pgt_schema := st.pgt_schema;
        pgt_name := st.pgt_name;
        current_mode := st.refresh_mode;
        effective_mode := eff.action;
        recommended_mode := verdict;
        confidence := conf;
        reason := why;
        signals := jsonb_build_object(
            'change_ratio_current', ratio_now, 'change_ratio_avg', ratio_avg,
            'diff_avg_ms', NULL, 'full_avg_ms', full_ms,
            'diff_p95_ms', NULL, 'target_size_bytes', size_bytes, 'join_count', NULL, 'has_covering_index', NULL,
            'history_rows_diff', 0, 'history_rows_full', history_rows, 'composite_score', composite,
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
    child_prefix := p_prefix || CASE p_connector WHEN '├── ' THEN '│   ' WHEN '└── ' THEN '    ' ELSE '' END;
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
