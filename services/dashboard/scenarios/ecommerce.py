"""ecommerce: revenue by category (flash sales spike in the history), top customers, price impact, countries."""

from __future__ import annotations

import psycopg

from services.dashboard.scenarios import ScenarioData, ScenarioView, chart, column, fetch, panel, tile

CATEGORY_REVENUE = """
SELECT category_name, order_count, units_sold, revenue, unique_customers
  FROM category_revenue ORDER BY revenue DESC, category_name"""
TOP_CUSTOMERS = """
SELECT rank, customer_name, country, order_count, total_spent, avg_order_value
  FROM top_10_customers ORDER BY rank"""
PRICE_IMPACT = """
SELECT product_name, category_name, base_price, current_price, pct_change, price_last_updated
  FROM catalog_price_impact ORDER BY abs(pct_change) DESC NULLS LAST, product_name LIMIT 12"""
TOP_PRODUCTS = """
SELECT product_name, category_name, order_count, units_sold, revenue
  FROM product_sales ORDER BY revenue DESC, product_name LIMIT 10"""
COUNTRY_REVENUE = """
SELECT country, customer_count, total_orders, total_revenue, avg_order_value
  FROM country_revenue ORDER BY total_revenue DESC, country"""


class View(ScenarioView):
    name = "ecommerce"
    burst_label = "Flash sale now"
    history_charts = [
        {
            "id": "revenue_rate",
            "title": "Revenue per second by category",
            "mode": "rate",
            "prefix": "category:",
            "format": "money",
        },
        {"id": "orders_rate", "title": "Orders per second", "mode": "rate", "keys": ["orders"], "format": "number"},
    ]
    captions = {
        "product_sales": "L1 · per product: units, revenue",
        "customer_stats": "L1 · per customer: orders, spend",
        "category_revenue": "L1 · per category: revenue",
        "country_revenue": "L2 · roll-up of a stream table",
        "catalog_price_impact": "DIFF showcase · ratio ~0.07",
        "top_10_customers": "TopK showcase · ratio ~0.1-0.2",
    }

    def read(self, conn: psycopg.Connection) -> ScenarioData:
        categories = fetch(conn, CATEGORY_REVENUE)
        customers = fetch(conn, TOP_CUSTOMERS)
        prices = fetch(conn, PRICE_IMPACT)
        countries = fetch(conn, COUNTRY_REVENUE)
        products = fetch(conn, TOP_PRODUCTS)
        revenue = round(sum(row["revenue"] or 0 for row in categories), 2)
        orders = sum(row["order_count"] or 0 for row in categories)
        biggest = prices[0] if prices else None
        panels = [
            panel(
                "category_revenue",
                "Revenue by category",
                ["category_revenue"],
                note="Cumulative revenue; flash sales show as spikes in the history below.",
                chart=chart(
                    "bar",
                    [r["category_name"] for r in categories],
                    [{"label": "Revenue", "values": [r["revenue"] for r in categories]}],
                    fmt="money",
                ),
                columns=[
                    column("category_name", "Category"),
                    column("order_count", "Orders", "int"),
                    column("units_sold", "Units", "int"),
                    column("unique_customers", "Customers", "int"),
                    column("revenue", "Revenue", "money"),
                ],
                rows=categories,
                wide=True,
            ),
            panel(
                "top_10_customers",
                "Top 10 customers",
                ["top_10_customers"],
                note="TopK stream table: only rank changes produce row changes.",
                chart=chart(
                    "hbar",
                    [r["customer_name"] for r in customers],
                    [{"label": "Total spent", "values": [r["total_spent"] for r in customers]}],
                    fmt="money",
                ),
                columns=[
                    column("rank", "#", "int"),
                    column("customer_name", "Customer"),
                    column("country", "Country"),
                    column("order_count", "Orders", "int"),
                    column("total_spent", "Spent", "money"),
                ],
                rows=customers,
                key="customer_name",
            ),
            panel(
                "top_products",
                "Top products by revenue",
                ["product_sales"],
                note="Level 1: per product, refreshed every second.",
                chart=chart(
                    "hbar",
                    [r["product_name"] for r in products],
                    [{"label": "Revenue", "values": [r["revenue"] for r in products]}],
                    fmt="money",
                ),
                columns=[
                    column("product_name", "Product"),
                    column("category_name", "Category"),
                    column("units_sold", "Units", "int"),
                    column("revenue", "Revenue", "money"),
                ],
                rows=products,
            ),
            panel(
                "catalog_price_impact",
                "Catalog price impact",
                ["catalog_price_impact"],
                note="Current vs base price, sorted by |change|; a product is repriced about every 30 s.",
                columns=[
                    column("product_name", "Product"),
                    column("category_name", "Category"),
                    column("base_price", "Base", "price"),
                    column("current_price", "Now", "price"),
                    column("pct_change", "Change", "pct"),
                ],
                rows=prices,
            ),
            panel(
                "country_revenue",
                "Revenue by country",
                ["country_revenue"],
                note="Level 2: rolled up from customer_stats, itself a stream table.",
                chart=chart(
                    "hbar",
                    [r["country"] for r in countries],
                    [{"label": "Revenue", "values": [r["total_revenue"] for r in countries]}],
                    fmt="money",
                ),
                columns=[
                    column("country", "Country"),
                    column("customer_count", "Customers", "int"),
                    column("total_orders", "Orders", "int"),
                    column("total_revenue", "Revenue", "money"),
                ],
                rows=countries,
                wide=False,
            ),
        ]
        tiles = [
            tile("Revenue", revenue, "money"),
            tile("Orders", orders, "int"),
            tile("Avg order value", round(revenue / orders, 2) if orders else None, "money"),
            tile("Customers buying", sum(r["customer_count"] or 0 for r in countries), "int"),
            tile(
                "Biggest price move",
                biggest["pct_change"] if biggest else None,
                "pct",
                hint=biggest["product_name"] if biggest else None,
            ),
        ]
        figures = {"revenue": float(revenue), "orders": float(orders)}
        figures.update({f"category:{r['category_name']}": float(r["revenue"] or 0) for r in categories})
        return ScenarioData(panels, tiles, figures)
