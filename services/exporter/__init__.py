"""The Prometheus exporter: `python -m services.exporter` serves pg_trickle's catalog as metrics on :9188.

A prometheus-client custom collector reads the `pgtrickle` catalog (through services.common.pgtrickle, as
demo_reader, read-only) on every scrape, within EXPORTER_SCRAPE_TIMEOUT. Refresh counters come from the
refresh history itself (a one-off grouped count at start-up, then only the rows added since), so they
continue across exporter restarts and a scrape never scans the history.
"""
