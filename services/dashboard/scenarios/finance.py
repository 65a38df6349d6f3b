"""finance: the price board with tick directions, portfolio P&L and VaR, sector exposure, capital breaches."""

from __future__ import annotations

import threading

import psycopg

from services.dashboard.scenarios import ScenarioData, ScenarioView, chart, column, fetch, panel, tile

PRICES = """
SELECT symbol, instrument_name, sector, asset_class, bid, ask, mid, spread, drift_pct, price_updated_at
  FROM price_snapshot ORDER BY price_updated_at DESC, symbol"""
PORTFOLIOS = """
SELECT portfolio_id, portfolio_name, strategy, account_count, position_count, market_value, pnl, gross_exposure,
       return_pct
  FROM portfolio_pnl ORDER BY portfolio_name"""
PORTFOLIO_VAR = "SELECT portfolio_id, portfolio_var_95pct, var_10d_95pct, scenario_var FROM portfolio_var"
SECTORS = """
SELECT sector, position_count, net_exposure, gross_exposure, pnl, pct_of_book
  FROM sector_exposure ORDER BY gross_exposure DESC NULLS LAST, sector"""
BREACHES = """
SELECT rank, portfolio_name, capital_required, capital_limit, utilization_ratio, capital_status
  FROM breach_dashboard ORDER BY rank"""
TRADES = "SELECT coalesce(sum(trade_count), 0) AS trades FROM net_positions"


class View(ScenarioView):
    name = "finance"
    burst_label = "Algo burst now"
    history_charts = [
        {"id": "pnl", "title": "Book P&L", "mode": "value", "keys": ["pnl"], "format": "money"},
        {"id": "var", "title": "Portfolio VaR 95% (sum)", "mode": "value", "keys": ["var"], "format": "money"},
        {"id": "trades_rate", "title": "Trades per second", "mode": "rate", "keys": ["trades"], "format": "number"},
    ]

    def __init__(self) -> None:
        # Tick direction per symbol: the sign of the last change of its mid price seen by this process.
        self._last_mid: dict[str, float] = {}
        self._direction: dict[str, str] = {}
        self._lock = threading.Lock()

    def _tick(self, prices: list[dict]) -> None:
        with self._lock:
            for row in prices:
                symbol, mid = row["symbol"], row["mid"]
                before = self._last_mid.get(symbol)
                if before is not None and mid is not None and mid != before:
                    self._direction[symbol] = "up" if mid > before else "down"
                if mid is not None:
                    self._last_mid[symbol] = mid
                row["direction"] = self._direction.get(symbol, "flat")
                # Changes with every tick of this symbol: the page flashes a row whose key it has not seen.
                row["tick"] = f"{symbol}@{row['price_updated_at']}"

    captions = {
        "price_snapshot": "L1 leaf, 2 s · 30 instruments",
        "net_positions": "L1 leaf, 1 s · net positions",
        "position_values": "mark-to-market · ratio ~0.02",
        "account_pnl": "per account",
        "portfolio_pnl": "per portfolio (5 rows)",
        "sector_exposure": "8 sectors · ~1 row a tick",
        "var_contributions": "parametric VaR per position",
        "account_var": "VaR per account",
        "portfolio_var": "Basel scenario VaR",
        "regulatory_capital": "capital requirement",
        "breach_dashboard": "TopK 10 · changes rarely",
    }

    def read(self, conn: psycopg.Connection) -> ScenarioData:
        prices = fetch(conn, PRICES)
        self._tick(prices)
        portfolios = fetch(conn, PORTFOLIOS)
        var = {row["portfolio_id"]: row for row in fetch(conn, PORTFOLIO_VAR)}
        for row in portfolios:
            row["var_95"] = var.get(row["portfolio_id"], {}).get("portfolio_var_95pct")
            row["var_10d"] = var.get(row["portfolio_id"], {}).get("var_10d_95pct")
        sectors = fetch(conn, SECTORS)
        breaches = fetch(conn, BREACHES)
        trades = fetch(conn, TRADES)[0]["trades"]
        pnl = round(sum(row["pnl"] or 0 for row in portfolios), 2)
        total_var = round(sum(row["var_95"] or 0 for row in portfolios), 2)
        panels = [
            panel(
                "price_snapshot",
                "Price board",
                ["price_snapshot"],
                note="Latest ticks first (mean-reverting walk): a row flashes when its price moves; the arrow is "
                "the direction of its last move seen since the dashboard started.",
                columns=[
                    column("direction", "", "direction"),
                    column("symbol", "Symbol"),
                    column("sector", "Sector"),
                    column("bid", "Bid", "price"),
                    column("ask", "Ask", "price"),
                    column("mid", "Mid", "price"),
                    column("drift_pct", "vs ref", "pct"),
                    column("price_updated_at", "Last tick", "time"),
                ],
                rows=prices,
                key="tick",
                wide=True,
            ),
            panel(
                "portfolio_pnl",
                "Portfolio P&L and VaR",
                ["portfolio_pnl", "portfolio_var"],
                note="Unrealised P&L at mid; 1-day 95% VaR (square root of summed squares).",
                chart=chart(
                    "bar",
                    [r["portfolio_name"] for r in portfolios],
                    [
                        {"label": "P&L", "values": [r["pnl"] for r in portfolios], "palette": "sign"},
                        {"label": "VaR 95%", "values": [r["var_95"] for r in portfolios]},
                    ],
                    fmt="money",
                ),
                columns=[
                    column("portfolio_name", "Portfolio"),
                    column("strategy", "Strategy"),
                    column("market_value", "Market value", "money"),
                    column("pnl", "P&L", "money"),
                    column("return_pct", "Return", "pct"),
                    column("var_95", "VaR 95%", "money"),
                ],
                rows=portfolios,
            ),
            panel(
                "sector_exposure",
                "Sector exposure",
                ["sector_exposure"],
                chart=chart(
                    "hbar",
                    [r["sector"] for r in sectors],
                    [
                        {"label": "Net", "values": [r["net_exposure"] for r in sectors], "palette": "sign"},
                        {"label": "Gross", "values": [r["gross_exposure"] for r in sectors]},
                    ],
                    fmt="money",
                ),
                columns=[
                    column("sector", "Sector"),
                    column("position_count", "Positions", "int"),
                    column("net_exposure", "Net", "money"),
                    column("gross_exposure", "Gross", "money"),
                    column("pct_of_book", "Of book", "share"),
                ],
                rows=sectors,
            ),
            panel(
                "breach_dashboard",
                "Capital breaches",
                ["breach_dashboard"],
                note="Capital required (stressed 10-day VaR) against each portfolio's limit.",
                columns=[
                    column("rank", "#", "int"),
                    column("portfolio_name", "Portfolio"),
                    column("utilization_ratio", "Utilisation", "utilisation"),
                    column("capital_required", "Required", "money"),
                    column("capital_limit", "Limit", "money"),
                    column("capital_status", "Status", "badge"),
                ],
                rows=breaches,
                key="portfolio_name",
                wide=True,
            ),
        ]
        tiles = [
            tile("Book P&L", pnl, "money"),
            tile("VaR 95% (sum)", total_var, "money"),
            tile("Trades", trades, "int"),
            tile(
                "Breaches",
                sum(1 for r in breaches if r["capital_status"] == "BREACH"),
                "int",
                hint=f"{sum(1 for r in breaches if r['capital_status'] == 'WARNING')} warning",
            ),
        ]
        figures = {"pnl": float(pnl), "var": float(total_var), "trades": float(trades)}
        return ScenarioData(panels, tiles, figures)
