"""fraud: alerts by risk level, the live HIGH-risk feed, risky merchants, merchant tiers, category volume."""

from __future__ import annotations

import psycopg

from services.dashboard.scenarios import ScenarioData, ScenarioView, chart, column, fetch, panel, tile

RISK_LEVELS = ("HIGH", "MEDIUM", "LOW")

ALERTS = "SELECT risk_level, txn_count, total_amount, avg_amount, last_seen_at FROM alert_summary"
# risk_scores has one row per transaction (a FULL-mode stream table): the feed takes its newest HIGH rows
# through the partial index risk_scores_high_feed (sql/fraud/stream_tables.sql), so its cost stays flat.
HIGH_FEED = """
SELECT txn_id, txn_at, user_name, user_country, merchant_name, merchant_category, amount, user_avg_amount
  FROM risk_scores WHERE risk_level = 'HIGH' ORDER BY txn_at DESC, txn_id DESC LIMIT 12"""
TOP_MERCHANTS = """
SELECT rank, merchant_name, merchant_category, total_txns, high_risk_count, medium_risk_count, risk_rate_pct
  FROM top_10_risky_merchants ORDER BY rank"""
TIER_COUNTS = """
SELECT merchant_tier, count(*) AS merchants, max(tier_last_changed) AS last_change
  FROM merchant_tier_stats GROUP BY merchant_tier ORDER BY max(risk_score) DESC"""
TIER_CHANGES = """
SELECT merchant_name, category, merchant_tier, tier_last_changed
  FROM merchant_tier_stats ORDER BY tier_last_changed DESC, merchant_name LIMIT 6"""
CATEGORY_VOLUME = """
SELECT category, txn_count, total_volume, avg_txn_amount, unique_users, active_merchants
  FROM category_volume ORDER BY total_volume DESC, category"""


class View(ScenarioView):
    name = "fraud"
    burst_label = "Fraud burst now"
    history_charts = [
        {
            "id": "alerts_rate",
            "title": "Scored transactions per second by risk level",
            "mode": "rate",
            "prefix": "risk:",
            "format": "number",
        },
        {
            "id": "volume_rate",
            "title": "Payment volume per second",
            "mode": "rate",
            "keys": ["volume"],
            "format": "money",
        },
    ]

    captions = {
        "user_velocity": "L1 · diamond: feeds risk_scores",
        "merchant_stats": "L1 · diamond: feeds risk_scores",
        "category_volume": "L1 · per category",
        "risk_scores": "FULL · diamond join, 3 inputs",
        "country_risk": "L2 · roll-up of a stream table",
        "alert_summary": "L3 · per risk level",
        "top_risky_merchants": "L3 · per merchant risk counts",
        "merchant_tier_stats": "DIFF showcase · ratio ~0.07",
        "top_10_risky_merchants": "TopK showcase · ratio ~0.25",
    }

    def read(self, conn: psycopg.Connection) -> ScenarioData:
        alerts = {row["risk_level"]: row for row in fetch(conn, ALERTS)}
        feed = fetch(conn, HIGH_FEED)
        merchants = fetch(conn, TOP_MERCHANTS)
        tiers = fetch(conn, TIER_COUNTS)
        tier_changes = fetch(conn, TIER_CHANGES)
        categories = fetch(conn, CATEGORY_VOLUME)
        levels = [level for level in RISK_LEVELS if level in alerts] + sorted(set(alerts) - set(RISK_LEVELS))
        alert_rows = [alerts[level] for level in levels]
        volume = round(sum(row["total_volume"] or 0 for row in categories), 2)
        panels = [
            panel(
                "alert_summary",
                "Alerts by risk level",
                ["alert_summary"],
                note="Every transaction scored by risk_scores (FULL refresh), summarised differentially.",
                chart=chart(
                    "doughnut",
                    levels,
                    [
                        {
                            "label": "Transactions",
                            "values": [alerts[lv]["txn_count"] for lv in levels],
                            "palette": "risk",
                        }
                    ],
                    fmt="int",
                ),
                columns=[
                    column("risk_level", "Level", "badge"),
                    column("txn_count", "Transactions", "int"),
                    column("total_amount", "Amount", "money"),
                    column("avg_amount", "Average", "money"),
                ],
                rows=alert_rows,
            ),
            panel(
                "category_volume",
                "Volume by merchant category",
                ["category_volume"],
                chart=chart(
                    "bar",
                    [r["category"] for r in categories],
                    [{"label": "Volume", "values": [r["total_volume"] for r in categories]}],
                    fmt="money",
                ),
                columns=[
                    column("category", "Category"),
                    column("txn_count", "Txns", "int"),
                    column("unique_users", "Users", "int"),
                    column("total_volume", "Volume", "money"),
                ],
                rows=categories,
            ),
            panel(
                "high_risk_feed",
                "Live HIGH-risk feed",
                ["risk_scores"],
                note="Newest transactions scored HIGH: bursts at Crypto and Gambling merchants.",
                columns=[
                    column("txn_at", "Time", "time"),
                    column("user_name", "User"),
                    column("merchant_name", "Merchant"),
                    column("merchant_category", "Category"),
                    column("amount", "Amount", "money"),
                    column("user_avg_amount", "User avg", "money"),
                ],
                rows=feed,
                key="txn_id",
                empty="No HIGH-risk transaction yet",
                wide=True,
            ),
            panel(
                "top_10_risky_merchants",
                "Top 10 risky merchants",
                ["top_10_risky_merchants"],
                chart=chart(
                    "hbar",
                    [r["merchant_name"] for r in merchants],
                    [
                        {"label": "HIGH", "values": [r["high_risk_count"] for r in merchants], "palette": "high"},
                        {"label": "MEDIUM", "values": [r["medium_risk_count"] for r in merchants], "palette": "medium"},
                    ],
                    fmt="int",
                    stacked=True,
                ),
                columns=[
                    column("rank", "#", "int"),
                    column("merchant_name", "Merchant"),
                    column("merchant_category", "Category"),
                    column("total_txns", "Txns", "int"),
                    column("high_risk_count", "HIGH", "int"),
                    column("risk_rate_pct", "Risky", "share"),
                ],
                rows=merchants,
                key="merchant_name",
            ),
            panel(
                "merchant_tier_stats",
                "Merchant risk tiers",
                ["merchant_tier_stats"],
                note="A merchant's tier rotates about every 30 s; latest changes below.",
                chart=chart(
                    "bar",
                    [r["merchant_tier"] for r in tiers],
                    [{"label": "Merchants", "values": [r["merchants"] for r in tiers], "palette": "risk"}],
                    fmt="int",
                ),
                columns=[
                    column("merchant_name", "Merchant"),
                    column("category", "Category"),
                    column("merchant_tier", "Tier", "badge"),
                    column("tier_last_changed", "Changed", "time"),
                ],
                rows=tier_changes,
            ),
        ]
        total = sum(row["txn_count"] or 0 for row in alert_rows)
        high = alerts.get("HIGH", {}).get("txn_count") or 0
        tiles = [
            tile("Transactions", total, "int"),
            tile("HIGH-risk alerts", high, "int"),
            tile("Volume", volume, "money"),
            tile("HIGH share", 100.0 * high / total if total else None, "share"),
        ]
        figures = {"transactions": float(total), "volume": float(volume)}
        figures.update({f"risk:{row['risk_level']}": float(row["txn_count"] or 0) for row in alert_rows})
        return ScenarioData(panels, tiles, figures)
