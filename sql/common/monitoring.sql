-- The monitoring role's window on the Refresh Mode Advisor (owned by the scenario owner role `demo`).
--
-- pgtrickle.recommend_refresh_mode() counts the rows of every source's change buffer in pgtrickle_changes
-- as the caller (pg_trickle 0.67, src/diagnostics.rs, gather_change_ratio). `demo_reader` has no right on
-- that schema, and must not get one: the buffers hold copies of the base tables' rows, which the reader
-- may not read. This wrapper runs the advisor as `demo` (who owns the buffers) and returns only the
-- advisor's own answer (modes, confidence, reason, signals: counts and ratios, never a row of data), so it
-- widens nothing the reader can read or write. EXECUTE goes to demo_reader only (granted by the bootstrap).
CREATE SCHEMA IF NOT EXISTS demo_monitor;

CREATE OR REPLACE FUNCTION demo_monitor.recommend_refresh_mode(st_name text DEFAULT NULL)
RETURNS TABLE (pgt_schema text, pgt_name text, current_mode text, effective_mode text, recommended_mode text,
               confidence text, reason text, signals jsonb)
LANGUAGE sql STABLE SECURITY DEFINER
-- `public` first so that a bare stream table name resolves as it does for the caller (the scenario's stream
-- tables live there); only `demo` may create in `public`, and the function runs as `demo` anyway.
SET search_path = public, pg_catalog, pg_temp
AS $$
    SELECT r.pgt_schema, r.pgt_name, r.current_mode, r.effective_mode, r.recommended_mode, r.confidence,
           r.reason, r.signals
      FROM pgtrickle.recommend_refresh_mode(st_name) r
$$;

REVOKE ALL ON FUNCTION demo_monitor.recommend_refresh_mode(text) FROM PUBLIC;
