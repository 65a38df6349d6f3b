"""ecommerce: a continuous order stream, flash sales and product repricing (the seed's description).

Events (metric label `kind`):
  order             a regular order: one customer (a few are much busier than others), one product
                    (popularity-weighted), quantity 1-3, unit price within ±5 % of the current price.
  flash_sale_order  a burst ("flash sale"): 8-18 orders, all in one category, any customers, quantity 1-2,
                    each at 70-90 % of the product's current price.
  reprice           a slow change: one product's current_price in product_catalog set to a price within
                    ±20 % of its base price (updated_at = now()).

Prices are handled in integer cents, so the bounds hold exactly after rounding.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import psycopg

from services.generator.scenarios import (
    InsertTarget,
    LookupsNotReady,
    Rows,
    ScenarioGenerator,
    UpdateTarget,
)

ORDERS = InsertTarget(
    table="orders",
    columns=("customer_id", "product_id", "quantity", "unit_price"),
    event_id_columns=("generator_run_id", "generator_seq"),
)
CATALOG = UpdateTarget(
    table="product_catalog",
    set_columns=("current_price",),
    key_columns=("product_id",),
    touch_columns=("updated_at",),
)

REGULAR_PRICE_SPREAD = (95, 105)  # percent of current price
REGULAR_QUANTITIES = (1, 2, 3)
REGULAR_QUANTITY_CUM_WEIGHTS = (70, 90, 100)
FLASH_SALE_ORDERS = (8, 18)
FLASH_SALE_PRICE = (70, 90)  # percent of current price
FLASH_SALE_QUANTITIES = (1, 2)
REPRICE_RANGE = (80, 120)  # percent of base price


@dataclass
class Product:
    id: int
    category_id: int
    base_cents: int
    current_cents: int


def cents_to_text(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def text_to_cents(text: str) -> int:
    units, _, fraction = str(text).partition(".")
    return int(units) * 100 + int((fraction + "00")[:2])


def percent_bounds(cents: int, low_pct: int, high_pct: int) -> tuple[int, int]:
    """The whole-cent prices p with low_pct % <= p / cents <= high_pct %, and p >= 1 cent."""
    low = max(1, -(-cents * low_pct // 100))  # ceiling
    high = max(low, cents * high_pct // 100)  # floor
    return low, high


class Generator(ScenarioGenerator):
    name = "ecommerce"
    regular_kind = "order"
    burst_kind = "flash_sale_order"
    slow_change_kind = "reprice"
    burst_label = "flash sale"
    slow_change_label = "reprice"

    def __init__(self, seed: int):
        super().__init__(seed)
        # One random generator per attribute of a regular order: each draws exactly one number per
        # order, so the k-th order does not depend on how orders are split into batches.
        self._customer_rng = self.stream("order-customer")
        self._product_rng = self.stream("order-product")
        self._quantity_rng = self.stream("order-quantity")
        self._price_rng = self.stream("order-price")
        self._burst_rng = self.stream("flash-sale")
        self._reprice_rng = self.stream("reprice")
        self.customers: list[int] = []
        self.products: list[Product] = []

    # -- lookups ---------------------------------------------------------------------------------------
    def load(self, conn: psycopg.Connection) -> None:
        try:
            with conn.cursor() as cur:
                customers = [row[0] for row in cur.execute("SELECT id FROM customers ORDER BY id")]
                products = cur.execute(
                    "SELECT p.id, p.category_id, p.base_price::text, pc.current_price::text"
                    " FROM products p JOIN product_catalog pc ON pc.product_id = p.id ORDER BY p.id"
                ).fetchall()
        except (psycopg.errors.UndefinedTable, psycopg.errors.InsufficientPrivilege) as exc:
            conn.rollback()
            raise LookupsNotReady(str(exc).splitlines()[0]) from None
        conn.rollback()  # end the read transaction: the engine's write transactions start clean
        self.set_lookups(customers, [(pid, cat, text_to_cents(b), text_to_cents(c)) for pid, cat, b, c in products])

    def set_lookups(self, customers: Sequence[int], products: Sequence[tuple[int, int, int, int]]) -> None:
        """customers: ids; products: (id, category_id, base_cents, current_cents)."""
        if not customers or not products:
            raise LookupsNotReady("the customers, products and product_catalog tables hold no rows yet")
        self.customers = list(customers)
        self.products = [Product(*p) for p in products]
        self._by_id = {p.id: p for p in self.products}
        self.categories: dict[int, list[Product]] = {}
        for product in self.products:
            self.categories.setdefault(product.category_id, []).append(product)
        self._category_ids = sorted(self.categories)
        # Popularity: a seed-dependent ranking, weight 1/(rank + k): a long tail, as in a real shop.
        popularity = self.stream("popularity")
        ranked_customers = popularity.sample(range(len(self.customers)), len(self.customers))
        weights = [0.0] * len(self.customers)
        for rank, index in enumerate(ranked_customers):
            weights[index] = 1 / (rank + 8)
        self._customer_cum = list(itertools.accumulate(weights))
        ranked_products = popularity.sample(range(len(self.products)), len(self.products))
        weights = [0.0] * len(self.products)
        for rank, index in enumerate(ranked_products):
            weights[index] = 1 / (rank + 4)
        self._product_cum = list(itertools.accumulate(weights))

    # -- events ----------------------------------------------------------------------------------------
    def regular(self, n: int) -> list[Rows]:
        if n <= 0:
            return []
        customers = self._customer_rng.choices(self.customers, cum_weights=self._customer_cum, k=n)
        products = self._product_rng.choices(self.products, cum_weights=self._product_cum, k=n)
        quantities = self._quantity_rng.choices(REGULAR_QUANTITIES, cum_weights=REGULAR_QUANTITY_CUM_WEIGHTS, k=n)
        uniform = self._price_rng.random
        low, span = REGULAR_PRICE_SPREAD[0] / 100, (REGULAR_PRICE_SPREAD[1] - REGULAR_PRICE_SPREAD[0]) / 100
        rows = []
        for customer, product, quantity in zip(customers, products, quantities, strict=True):
            cents = max(1, round(product.current_cents * (low + span * uniform())))
            rows.append((customer, product.id, quantity, f"{cents // 100}.{cents % 100:02d}"))
        return [Rows(self.regular_kind, ORDERS, rows)]

    def burst(self) -> list[Rows]:
        rng = self._burst_rng
        category_id = rng.choice(self._category_ids)
        in_category = self.categories[category_id]
        rows = []
        for _ in range(rng.randint(*FLASH_SALE_ORDERS)):
            product = rng.choice(in_category)
            low, high = percent_bounds(product.current_cents, *FLASH_SALE_PRICE)
            rows.append(
                (
                    rng.choice(self.customers),
                    product.id,
                    rng.randint(*FLASH_SALE_QUANTITIES),
                    cents_to_text(rng.randint(low, high)),
                )
            )
        return [Rows(self.burst_kind, ORDERS, rows, note={"category_id": category_id, "orders": len(rows)})]

    def slow_change(self) -> list[Rows]:
        rng = self._reprice_rng
        product = rng.choice(self.products)
        low, high = percent_bounds(product.base_cents, *REPRICE_RANGE)
        cents = rng.randint(low, high)
        note = {
            "product_id": product.id,
            "base_price": cents_to_text(product.base_cents),
            "old_price": cents_to_text(product.current_cents),
            "new_price": cents_to_text(cents),
        }
        return [Rows(self.slow_change_kind, CATALOG, [(cents_to_text(cents), product.id)], note=note)]

    def committed(self, parts: Sequence[Rows]) -> None:
        for part in parts:
            if part.target is CATALOG:
                for price, product_id in part.rows:
                    self._by_id[product_id].current_cents = text_to_cents(price)

    # -- helpers for tests -----------------------------------------------------------------------------
    def product(self, product_id: int) -> Product:
        return self._by_id[product_id]


__all__ = ["CATALOG", "ORDERS", "Generator", "Product"]
