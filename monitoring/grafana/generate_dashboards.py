"""Generates the Grafana dashboards (JSON) with grafana-foundation-sdk, the build for Grafana 11.6.

    python monitoring/grafana/generate_dashboards.py          # writes monitoring/dashboards/*.json
    python monitoring/grafana/generate_dashboards.py --check  # exit 1 if the committed JSON is out of date

(`make dashboards` runs the first.) The JSON is committed: the Helm chart turns every file into a sidecar
ConfigMap and docker compose mounts the folder into Grafana. Every panel picks its data source through the
`datasource` template variable, never a fixed uid. The exporter's per-stream-table series carry no scenario
label; panels keep the series of the exporters whose pg_trickle_info has the selected scenario
(`and on (job, instance) pg_trickle_info{scenario=~"$scenario"}`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from grafana_foundation_sdk.builders import (
    bargauge,
    heatmap,
    stat,
    table,
    timeseries,
)
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus as prom
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

ROOT = Path(__file__).resolve().parents[2]
OUTPUT = ROOT / "monitoring" / "dashboards"

DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
SCENARIO = 'pg_trickle_info{scenario=~"$scenario"}'
TABLE = 'name=~"$stream_table"'


def sel(metric: str, *matchers: str, per_table: bool = True) -> str:
    """A series selector, limited to the selected stream tables unless per_table=False."""
    return metric + "{" + ",".join(([TABLE] if per_table else []) + list(matchers)) + "}"


def rate_of(selector: str) -> str:
    return f"rate({selector}[$__rate_interval])"


def of_scenario(expr: str) -> str:
    """Keeps the series of exporters serving the selected scenario."""
    return f"({expr}) and on (job, instance) {SCENARIO}"


# -- building blocks -----------------------------------------------------------------------------------


def query(expr: str, legend: str = "", ref: str = "A", *, instant: bool = False, fmt: PromQueryFormat | None = None):
    q = prom.Dataquery().expr(expr).ref_id(ref).datasource(DATASOURCE)
    if legend:
        q = q.legend_format(legend)
    q = q.instant() if instant else q.range()
    if fmt is not None:
        q = q.format(fmt)
    return q


def variables(with_stream_table: bool) -> list:
    out = [
        db.DatasourceVariable("datasource").label("Data source").type("prometheus"),
        db.QueryVariable("scenario")
        .label("Scenario")
        .datasource(DATASOURCE)
        .query("label_values(pg_trickle_info, scenario)")
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
        .include_all(True)
        .all_value(".*")
        .multi(False),
    ]
    if with_stream_table:
        out.append(
            db.QueryVariable("stream_table")
            .label("Stream table")
            .datasource(DATASOURCE)
            # label_values() cannot join; query_result() can, and the regex takes the name label out of
            # Grafana's `metric{label="value", ...} value time` text (not `namespace` or `hostname`).
            .query(f"query_result({of_scenario('pg_trickle_populated')})")
            .regex('/[{ ]name="([^"]+)"/')
            .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(model.VariableSort.ALPHABETICAL_ASC)
            .include_all(True)
            .all_value(".*")
            .multi(True)
        )
    return out


def thresholds(*steps: tuple[float | None, str]):
    return (
        db.ThresholdsConfig()
        .mode(model.ThresholdsMode.ABSOLUTE)
        .steps([model.Threshold(value=value, color=color) for value, color in steps])
    )


def mapping(options: dict[str, tuple[str, str]]) -> list:
    return [
        model.ValueMap(
            options={
                key: model.ValueMappingResult(text=text, color=color, index=index)
                for index, (key, (text, color)) in enumerate(options.items())
            }
        )
    ]


def stat_panel(title: str, expr: str, description: str, *, unit: str = "none", steps=None, mappings=None, span=4):
    panel = (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .with_target(query(expr, instant=True))
        .unit(unit)
        .height(4)
        .span(span)
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .graph_mode(common.BigValueGraphMode.NONE)
        .thresholds(thresholds(*(steps or [(None, "green")])))
    )
    if mappings:
        panel = panel.mappings(mappings)
    return panel


def series_panel(title: str, description: str, targets: list, *, unit: str = "none", span: int = 12, no_value=None):
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(targets)
        .unit(unit)
        .height(8)
        .span(span)
        .fill_opacity(10)
        .line_width(1)
    )
    if no_value:
        panel = panel.no_value(no_value)
    return panel


def table_panel(title: str, description: str, expr: str, columns: dict[str, str], *, span: int = 12):
    """An instant query shown as a table; `columns` maps the labels to show to their headers."""
    organize = model.DataTransformerConfig(
        id_val="organize",
        options={
            "excludeByName": {"Time": True, "Value": True, "__name__": True, "job": True, "instance": True},
            "renameByName": columns,
            "indexByName": {name: i for i, name in enumerate(columns)},
        },
    )
    return (
        table.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .with_target(query(expr, instant=True, fmt=PromQueryFormat.TABLE))
        .with_transformation(model.DataTransformerConfig(id_val="merge", options={}))
        .with_transformation(organize)
        .height(8)
        .span(span)
    )


# -- "pg_trickle refreshes" ----------------------------------------------------------------------------


def refreshes_dashboard() -> model.Dashboard:
    t = TABLE
    rate = "$__rate_interval"
    builder = (
        db.Dashboard("pg_trickle refreshes")
        .uid("pg-trickle-refreshes")
        .description("Health, staleness, refresh rate and duration, rows changed and advisor verdicts per stream table")
        .tags(["pg_trickle", "demo"])
        .editable()
        .time("now-30m", "now")
        .refresh("10s")
        .timezone("browser")
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .variables(variables(with_stream_table=True))
        .with_row(db.Row("Health"))
        .with_panel(
            stat_panel(
                "Exporter reads the catalog",
                "min(pg_trickle_up)",
                "pg_trickle_up: 1 when the exporter's last scrape read the pgtrickle catalog.",
                steps=[(None, "red"), (1, "green")],
                mappings=mapping({"0": ("DOWN", "red"), "1": ("UP", "green")}),
            )
        )
        .with_panel(
            stat_panel(
                "Scheduler",
                f"min({of_scenario('pg_trickle_scheduler_running')})",
                "health_check() scheduler_running: is the engine's scheduler refreshing this database?",
                steps=[(None, "red"), (1, "green")],
                mappings=mapping({"0": ("STOPPED", "red"), "1": ("RUNNING", "green")}),
            )
        )
        .with_panel(
            stat_panel(
                "Stream tables",
                f"count({of_scenario(f'pg_trickle_populated{{{t}}}')})",
                "Stream tables the catalog lists (for the selected scenario and names).",
            )
        )
        .with_panel(
            stat_panel(
                "Not ACTIVE",
                "sum(" + of_scenario(sel("pg_trickle_stream_table_status", 'status!="ACTIVE"')) + ")",
                "Stream tables INITIALIZING, SUSPENDED or in ERROR.",
                steps=[(None, "green"), (1, "red")],
            )
        )
        .with_panel(
            stat_panel(
                "Health checks not OK",
                "sum(" + of_scenario(sel("pg_trickle_health_check", 'severity!="OK"', per_table=False)) + ")",
                "Rows of pgtrickle.health_check() whose severity is WARN or ERROR.",
                steps=[(None, "green"), (1, "orange")],
            )
        )
        .with_panel(
            stat_panel(
                "Max consecutive errors",
                f"max({of_scenario(f'pg_trickle_consecutive_errors{{{t}}}')})",
                "The highest number of failed refreshes in a row; pg_trickle suspends a table at 3.",
                steps=[(None, "green"), (1, "orange"), (3, "red")],
            )
        )
        .with_panel(
            table_panel(
                "Health checks",
                "pgtrickle.health_check(): each check with its current severity.",
                of_scenario("pg_trickle_health_check == 1"),
                {"check": "Check", "severity": "Severity"},
            )
        )
        .with_panel(
            table_panel(
                "Stream table status",
                "The status of each stream table (pg_trickle_stream_table_status state set).",
                of_scenario(f"pg_trickle_stream_table_status{{{t}}} == 1"),
                {"schema": "Schema", "name": "Stream table", "status": "Status"},
            )
        )
        .with_row(db.Row("Staleness"))
        .with_panel(
            series_panel(
                "Staleness per stream table",
                "now - data_timestamp: the age of the data each stream table holds. It grows while its sources "
                "are idle (a refresh with nothing to do keeps the data timestamp).",
                [query(of_scenario(f"pg_trickle_staleness_seconds{{{t}}}"), "{{schema}}.{{name}}")],
                unit="s",
            )
        )
        .with_panel(
            series_panel(
                "Time since last refresh",
                "Seconds since the scheduler last completed a refresh (NO_DATA included) and, dashed, the "
                "schedule of tables with a duration schedule. The stale alert fires beyond 3 x schedule + 10 s.",
                [
                    query(of_scenario(f"pg_trickle_seconds_since_last_refresh{{{t}}}"), "{{schema}}.{{name}}"),
                    query(of_scenario(f"pg_trickle_schedule_seconds{{{t}}}"), "schedule {{schema}}.{{name}}", "B"),
                ],
                unit="s",
            )
        )
        .with_row(db.Row("Refreshes"))
        .with_panel(
            series_panel(
                "Refresh rate by action",
                "Completed refreshes per second, by action (NO_DATA: due but nothing changed).",
                [
                    query(
                        "sum by (name, action) ("
                        + of_scenario(rate_of(sel("pg_trickle_refreshes_total", 'status="COMPLETED"')))
                        + ")",
                        "{{name}} {{action}}",
                    )
                ],
                unit="ops",
            )
        )
        .with_panel(
            heatmap.Panel()
            .title("Refresh duration")
            .description("Durations of the refreshes that did work (FULL, DIFFERENTIAL, REINITIALIZE).")
            .datasource(DATASOURCE)
            .with_target(
                query(
                    f"sum by (le) ({of_scenario(f'rate(pg_trickle_refresh_duration_seconds_bucket{{{t}}}[{rate}])')})",
                    "{{le}}",
                    fmt=PromQueryFormat.HEATMAP,
                )
            )
            .calculate(False)
            .color(heatmap.HeatmapColorOptions().mode("scheme").scheme("Oranges").steps(64).exponent(0.5))
            .y_axis(heatmap.YAxisConfig().unit("s"))
            .cell_values(heatmap.CellValues().unit("ops"))
            .height(8)
            .span(12)
        )
        .with_panel(
            series_panel(
                "Refresh duration p95",
                "95th percentile of the refresh durations per stream table.",
                [
                    query(
                        "histogram_quantile(0.95, sum by (name, le) "
                        f"({of_scenario(f'rate(pg_trickle_refresh_duration_seconds_bucket{{{t}}}[{rate}])')}))",
                        "{{name}}",
                    )
                ],
                unit="s",
            )
        )
        .with_panel(
            series_panel(
                "Rows changed",
                "Rows inserted and deleted in the stream tables per second by completed refreshes.",
                [
                    query(
                        "sum by (name, operation) (" + of_scenario(rate_of(sel("pg_trickle_rows_changed_total"))) + ")",
                        "{{name}} {{operation}}",
                    )
                ],
                unit="suffix: rows/s",
            )
        )
        .with_panel(
            series_panel(
                "Change ratio",
                "Average fraction of a stream table's rows one refresh changes (refresh_efficiency()). Near 0: "
                "DIFFERENTIAL pays off; near 1: FULL costs the same.",
                [query(of_scenario(f"pg_trickle_change_ratio{{{t}}}"), "{{schema}}.{{name}}")],
                unit="percentunit",
            )
        )
        .with_panel(
            series_panel(
                "Pending changes",
                "Source changes captured but not yet consumed by each stream table (change_buffer_sizes()).",
                [query(of_scenario(f"pg_trickle_change_buffer_pending_rows{{{t}}}"), "{{schema}}.{{name}}")],
            )
        )
        .with_row(db.Row("Advisor and errors"))
        .with_panel(
            table_panel(
                "Advisor verdicts",
                "recommend_refresh_mode(): the mode the Refresh Mode Advisor recommends (KEEP = stay).",
                of_scenario(f"pg_trickle_advisor_recommendation{{{t}}} == 1"),
                {"schema": "Schema", "name": "Stream table", "mode": "Recommended"},
                span=8,
            )
        )
        .with_panel(
            bargauge.Panel()
            .title("Advisor confidence")
            .description("Confidence of the advisor's verdict: 1 low, 2 medium, 3 high.")
            .datasource(DATASOURCE)
            .with_target(query(of_scenario(f"pg_trickle_advisor_confidence{{{t}}}"), "{{name}}", instant=True))
            .min(0)
            .max(3)
            .mappings(mapping({"1": ("low", "orange"), "2": ("medium", "yellow"), "3": ("high", "green")}))
            .thresholds(thresholds((None, "orange"), (2, "yellow"), (3, "green")))
            .height(8)
            .span(8)
        )
        .with_panel(
            bargauge.Panel()
            .title("Differential speed-up")
            .description(
                "Average FULL duration / average DIFFERENTIAL duration (refresh_efficiency().diff_speedup), where "
                "both are measured. The emulator never measures a differential refresh, so it reports none."
            )
            .datasource(DATASOURCE)
            .with_target(query(of_scenario(f"pg_trickle_differential_speedup_ratio{{{t}}}"), "{{name}}", instant=True))
            .unit("suffix:x")
            .no_value("not measured by this engine")
            .height(8)
            .span(8)
        )
        .with_panel(
            series_panel(
                "Errors",
                "Failed refreshes per second and, for each stream table, its consecutive errors.",
                [
                    query(
                        "sum by (name) ("
                        + of_scenario(rate_of(sel("pg_trickle_refreshes_total", 'status="FAILED"')))
                        + ")",
                        "failed/s {{name}}",
                    ),
                    query(of_scenario(f"pg_trickle_consecutive_errors{{{t}}}"), "consecutive {{name}}", "B"),
                ],
                span=24,
            )
        )
    )
    return builder.build()


# -- "demo pipeline" -----------------------------------------------------------------------------------


def pipeline_dashboard() -> model.Dashboard:
    rate = "$__rate_interval"
    gen = 'scenario=~"$scenario"'
    builder = (
        db.Dashboard("demo pipeline")
        .uid("pg-trickle-demo-pipeline")
        .description("The generator's event feed, its bursts, and the exporter's scrape health")
        .tags(["pg_trickle", "demo"])
        .editable()
        .time("now-30m", "now")
        .refresh("10s")
        .timezone("browser")
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .variables(variables(with_stream_table=False))
        .with_row(db.Row("Generator"))
        .with_panel(
            stat_panel(
                "Target rate",
                f"sum(demo_generator_rate{{{gen}}})",
                "Events per second the generator aims for (GENERATOR_RATE or POST /control/rate).",
                unit="ops",
                span=6,
            )
        )
        .with_panel(
            stat_panel(
                "Paused",
                f"max(demo_generator_paused{{{gen}}})",
                "1 while the generator is paused (POST /control/pause).",
                steps=[(None, "green"), (1, "orange")],
                mappings=mapping({"0": ("writing", "green"), "1": ("paused", "orange")}),
                span=6,
            )
        )
        .with_panel(
            stat_panel(
                "Bursts in the last 15 minutes",
                f"sum(increase(demo_generator_bursts_total{{{gen}}}[15m]))",
                "Bursts committed (flash sales, suspicious bursts, algorithmic orders).",
                span=6,
            )
        )
        .with_panel(
            stat_panel(
                "Database errors in the last 15 minutes",
                f"sum(increase(demo_generator_db_errors_total{{{gen}}}[15m]))",
                "Failed database operations of the generator.",
                steps=[(None, "green"), (1, "orange")],
                span=6,
            )
        )
        .with_panel(
            series_panel(
                "Events per second by kind",
                "Committed events per second, by kind (the counter moves only after COMMIT).",
                [query(f"sum by (kind) (rate(demo_generator_events_total{{{gen}}}[{rate}]))", "{{kind}}")],
                unit="ops",
            )
        )
        .with_panel(
            series_panel(
                "Bursts",
                "Bursts committed per minute.",
                [query(f"sum(increase(demo_generator_bursts_total{{{gen}}}[1m]))", "bursts per minute")],
            )
        )
        .with_panel(
            series_panel(
                "Batch commit duration p95",
                "95th percentile of the time to write and commit one batch.",
                [
                    query(
                        "histogram_quantile(0.95, sum by (le) "
                        f"(rate(demo_generator_batch_duration_seconds_bucket{{{gen}}}[{rate}])))",
                        "p95",
                    )
                ],
                unit="s",
            )
        )
        .with_panel(
            series_panel(
                "Reconnects and database errors",
                "Per second: reconnections after a lost connection, failed database operations.",
                [
                    query(f"sum(rate(demo_generator_reconnects_total{{{gen}}}[{rate}]))", "reconnects"),
                    query(f"sum(rate(demo_generator_db_errors_total{{{gen}}}[{rate}]))", "db errors", "B"),
                ],
                unit="ops",
            )
        )
        .with_row(db.Row("Stream tables"))
        .with_panel(
            series_panel(
                "Refreshes that did work per second",
                "Completed FULL, DIFFERENTIAL and REINITIALIZE refreshes per second, all stream tables.",
                [
                    query(
                        "sum by (action) ("
                        + of_scenario(
                            f'rate(pg_trickle_refreshes_total{{status="COMPLETED",action!="NO_DATA"}}[{rate}])'
                        )
                        + ")",
                        "{{action}}",
                    )
                ],
                unit="ops",
            )
        )
        .with_panel(
            series_panel(
                "Oldest data",
                "The highest staleness among the scenario's stream tables.",
                [query(f"max({of_scenario('pg_trickle_staleness_seconds')})", "max staleness")],
                unit="s",
            )
        )
        .with_row(db.Row("Exporter"))
        .with_panel(
            series_panel(
                "Scrape duration",
                "Time the exporter spent reading the catalog per scrape, and Prometheus' own measure of the scrape.",
                [
                    query(
                        "max by (instance) (pg_trickle_exporter_scrape_duration_seconds)", "catalog read {{instance}}"
                    ),
                    query(
                        "max by (instance) (scrape_duration_seconds and on (job, instance) pg_trickle_up)",
                        "scrape {{instance}}",
                        "B",
                    ),
                ],
                unit="s",
                span=8,
            )
        )
        .with_panel(
            series_panel(
                "Scrape errors by stage",
                "Failed catalog reads per second, by stage (connect, catalog, history, change_buffers, "
                "health_check, analyses).",
                [query(f"sum by (stage) (rate(pg_trickle_exporter_scrape_errors_total[{rate}]))", "{{stage}}")],
                unit="ops",
                span=8,
            )
        )
        .with_panel(
            series_panel(
                "Catalog readable and analyses age",
                "pg_trickle_up per exporter and the age of the advisor/efficiency figures it serves.",
                [
                    query("min by (instance) (pg_trickle_up)", "up {{instance}}"),
                    query(
                        "max by (instance) (pg_trickle_exporter_analyses_age_seconds)",
                        "analyses age (s) {{instance}}",
                        "B",
                    ),
                ],
                span=8,
            )
        )
    )
    return builder.build()


DASHBOARDS: dict[str, Callable[[], model.Dashboard]] = {
    "pg-trickle-refreshes.json": refreshes_dashboard,
    "demo-pipeline.json": pipeline_dashboard,
}


# The SDK writes an interval variable's auto-step settings on every variable; Grafana's dashboard schema
# (@grafana/schema VariableModel, checked by tests/monitoring/test_dashboard_schema.py) has no such fields.
INTERVAL_ONLY_FIELDS = ("auto", "auto_count", "auto_min")


def render(dashboard: model.Dashboard) -> str:
    document = json.loads(json.dumps(dashboard, cls=JSONEncoder))
    for variable in document.get("templating", {}).get("list", []):
        if variable.get("type") != "interval":
            for field in INTERVAL_ONLY_FIELDS:
                variable.pop(field, None)
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed JSON differs")
    parser.add_argument("--output", type=Path, default=OUTPUT, help=f"folder (default {OUTPUT.relative_to(ROOT)})")
    args = parser.parse_args(argv)
    stale = []
    args.output.mkdir(parents=True, exist_ok=True)
    for filename, build in DASHBOARDS.items():
        path = args.output / filename
        text = render(build())
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(filename)
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print(f"out of date: {', '.join(stale)} (run `make dashboards`)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
