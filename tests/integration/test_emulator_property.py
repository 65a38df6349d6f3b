"""Property test of the emulator's refreshes (issue 18, item 4): a seeded random driver writes batches of
inserts, updates and deletes through every table a scenario's stream tables read, refreshes the way the
scheduler does (every table due, one pgtrickle.emulator_tick() as the owner `demo`; sometimes manual
refreshes in DAG order first, once a table reinitialised), and after every step compares EVERY stream table
with its defining query: multisets of rows, by the exact text of their values (1.5 and 1.50, 0 and 0.00
differ). Any correct refresh path (full recomputation, or an incremental one reading the change buffers)
keeps this true; a wrong delta shows up as a row that differs.

Replay a failure with the seed and step count its message prints:
    EMULATOR_PROPERTY_SEED=<seed> EMULATOR_PROPERTY_STEPS=<steps> .venv/bin/python -m pytest \\
        tests/integration/test_emulator_property.py -k <scenario>
"""

from __future__ import annotations

import os
import random
import threading
import uuid
from collections.abc import Callable

import psycopg
import pytest
from psycopg import sql

from tests.support import (
    scenario_defining_queries,
    stream_table_difference_samples,
    stream_table_differences,
)

SEED_ENV, STEPS_ENV = "EMULATOR_PROPERTY_SEED", "EMULATOR_PROPERTY_STEPS"
DEFAULT_SEED, DEFAULT_STEPS = 18, 80

# Batch kinds and their weights: insert-only batches on the event table are the most common, and come in runs
# of several steps (the append-only case an incremental path maintains); the rest change what it cannot.
KINDS = {
    "insert_events": 24,
    "update_events": 10,
    "delete_events": 8,
    "insert_dims": 8,
    "update_dims": 12,
    "delete_dims": 3,
    "two_tables": 12,
    "churn": 7,
}


def _env_int(name: str, default: int, minimum: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        pytest.fail(f"{name} must be an integer >= {minimum}, got {raw!r}", pytrace=False)
    return value


class Driver:
    """Writes one random batch per call, each in one transaction, as the role production writes with where it
    has the rights (demo_writer: the [writer] columns of scenario.toml), else as the owner `demo`."""

    def __init__(self, rng: random.Random, owner: psycopg.Connection, writer: psycopg.Connection):
        self.rng, self.owner, self.writer = rng, owner, writer
        self.run_id = uuid.UUID(int=rng.getrandbits(128))
        self.seq = 0
        self.counter = 0
        self.changes: dict[str, int] = {}  # change-buffer rows written per table since the last reset

    # -- helpers ------------------------------------------------------------------------------------------
    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix} {self.counter}"

    def generator_columns(self) -> tuple[uuid.UUID | None, int | None]:
        """NULL (as seed rows) or this run's next event id (as generator rows)."""
        if self.rng.random() < 0.5:
            return None, None
        self.seq += 1
        return self.run_id, self.seq

    def ids(self, table: str, where: str = "") -> list[int]:
        query = sql.SQL("SELECT id FROM {} {} ORDER BY id").format(sql.Identifier(table), sql.SQL(where))
        return [r[0] for r in self.owner.execute(query)]

    def sample(self, items: list, k: int) -> list:
        return self.rng.sample(items, min(k, len(items)))

    def count(self, table: str, cur: psycopg.Cursor, rows: int | None = None, update: bool = False) -> int:
        """Records the change-buffer rows a statement wrote: one per inserted or deleted row, a D and an I row
        per updated row (pg_trickle's statement-level capture; the emulator's emulator_attach_buffer)."""
        n = cur.rowcount if rows is None else rows
        self.changes[table] = self.changes.get(table, 0) + n * (2 if update else 1)
        return n

    def insert(self, cur: psycopg.Cursor, table: str, columns: list[str], rows: list[tuple]) -> None:
        if not rows:
            return
        statement = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
            sql.Identifier(table),
            sql.SQL(", ").join(map(sql.Identifier, columns)),
            sql.SQL(", ").join(sql.Placeholder() * len(columns)),
        )
        cur.executemany(statement, rows)
        self.count(table, cur, len(rows))

    def insert_returning(self, cur: psycopg.Cursor, table: str, columns: list[str], row: tuple) -> int:
        statement = sql.SQL("INSERT INTO {} ({}) VALUES ({}) RETURNING id").format(
            sql.Identifier(table),
            sql.SQL(", ").join(map(sql.Identifier, columns)),
            sql.SQL(", ").join(sql.Placeholder() * len(columns)),
        )
        cur.execute(statement, row)
        self.count(table, cur)
        return cur.fetchone()[0]

    def update(
        self, cur: psycopg.Cursor, table: str, assignments: dict, where_id: int, key: str = "id", noop: str = ""
    ) -> None:
        """UPDATE of one row; with noop instead of assignments, one that sets that column to itself."""
        sets = [sql.SQL("{} = %s").format(sql.Identifier(c)) for c in assignments]
        sets = sets or [sql.SQL("{0} = {0}").format(sql.Identifier(noop))]
        statement = sql.SQL("UPDATE {} SET {} WHERE {} = %s").format(
            sql.Identifier(table), sql.SQL(", ").join(sets), sql.Identifier(key)
        )
        cur.execute(statement, [*assignments.values(), where_id])
        self.count(table, cur, update=True)

    def delete(self, cur: psycopg.Cursor, table: str, ids: list[int], key: str = "id") -> None:
        if ids:
            cur.execute(
                sql.SQL("DELETE FROM {} WHERE {} = ANY(%s)").format(sql.Identifier(table), sql.Identifier(key)), [ids]
            )
            self.count(table, cur)

    def in_transaction(self, conn: psycopg.Connection, body: Callable[[psycopg.Cursor], str]) -> str:
        with conn.transaction(), conn.cursor() as cur:
            return body(cur)

    def apply(self, kind: str) -> str:
        method = getattr(self, kind)
        return f"{kind}: {method()}"

    def event_batch_size(self) -> int:
        return self.rng.choice([1, 1, 2, 3, 5, 8, 13])


class Ecommerce(Driver):
    PRICES = ["1.5", "1.50", "0.01", "19.99", "20", "20.00", "249.95", "4999.9"]
    QUANTITIES = [1, 1, 1, 2, 3, 7, 100]
    COUNTRIES = ["US", "GB", "DE", "FR", "JP", "ZZ"]
    ORDER_COLUMNS = ["customer_id", "product_id", "quantity", "unit_price", "generator_run_id", "generator_seq"]

    def order_rows(self, n: int, customers: list[int], products: list[int]) -> list[tuple]:
        rows = []
        for _ in range(n):
            row = (
                self.rng.choice(customers),
                self.rng.choice(products),
                self.rng.choice(self.QUANTITIES),
                self.rng.choice(self.PRICES),
            )
            rows.append(row)
            if self.rng.random() < 0.15:  # an identical order line (a duplicate value everywhere it lands)
                rows.append(row)
        return [(*r, *self.generator_columns()) for r in rows]

    def insert_events(self) -> str:
        rows = self.order_rows(self.event_batch_size(), self.ids("customers"), self.ids("products"))

        def body(cur):
            self.insert(cur, "orders", self.ORDER_COLUMNS, rows)
            return f"{len(rows)} orders"

        return self.in_transaction(self.writer, body)

    def update_events(self) -> str:
        picked = self.sample(self.ids("orders"), self.rng.randint(1, 6))
        customers, products = self.ids("customers"), self.ids("products")

        def body(cur):
            for order_id in picked:
                values = self.rng.choice(
                    [
                        {"quantity": self.rng.choice(self.QUANTITIES)},
                        {"unit_price": self.rng.choice(self.PRICES)},
                        {"customer_id": self.rng.choice(customers)},
                        {"product_id": self.rng.choice(products)},
                        {
                            "customer_id": self.rng.choice(customers),
                            "product_id": self.rng.choice(products),
                            "quantity": self.rng.choice(self.QUANTITIES),
                            "unit_price": self.rng.choice(self.PRICES),
                        },
                    ]
                )
                self.update(cur, "orders", values, order_id)
                if self.rng.random() < 0.1:  # an UPDATE that changes nothing still fires the capture
                    self.update(cur, "orders", {}, order_id, noop="quantity")
            return f"{len(picked)} orders updated"

        return self.in_transaction(self.owner, body)

    def delete_events(self) -> str:
        def body(cur):
            if self.rng.random() < 0.3:  # every order of one product: its group falls back to the COALESCE zeros
                product = self.rng.choice(self.ids("products"))
                cur.execute("DELETE FROM orders WHERE product_id = %s", [product])
                return f"all {self.count('orders', cur)} orders of product {product} deleted"
            picked = self.sample(self.ids("orders"), self.rng.randint(1, 6))
            self.delete(cur, "orders", picked)
            return f"{len(picked)} orders deleted"

        return self.in_transaction(self.owner, body)

    def new_product(self, cur, categories: list[int]) -> int:
        product = self.insert_returning(
            cur,
            "products",
            ["name", "category_id", "base_price"],
            (self.fresh("Product"), self.rng.choice(categories), self.rng.choice(self.PRICES)),
        )
        if self.rng.random() < 0.7:  # most new products are priced in the catalog; some are not
            self.insert(
                cur, "product_catalog", ["product_id", "current_price"], [(product, self.rng.choice(self.PRICES))]
            )
        return product

    def insert_dims(self) -> str:
        def body(cur):
            what = self.rng.choice(["category", "product", "customer", "customer"])
            if what == "category":
                self.insert(cur, "categories", ["name"], [(self.fresh("Category"),)])
            elif what == "product":
                self.new_product(cur, self.ids("categories"))
            else:
                names = [r[0] for r in cur.execute("SELECT name FROM customers ORDER BY id LIMIT 5")]
                name = self.rng.choice(names) if self.rng.random() < 0.4 else self.fresh("Customer")  # duplicates
                self.insert(cur, "customers", ["name", "country"], [(name, self.rng.choice(self.COUNTRIES))])
            return f"new {what}"

        return self.in_transaction(self.owner, body)

    def reprice(self) -> str:
        """The generator's slow change, as demo_writer: product_catalog.current_price and updated_at."""
        priced = self.ids("products", "WHERE id IN (SELECT product_id FROM product_catalog)")

        def body(cur):
            for product in self.sample(priced, self.rng.randint(1, 3)):
                cur.execute(
                    "UPDATE product_catalog SET current_price = %s, updated_at = now() WHERE product_id = %s",
                    [self.rng.choice(self.PRICES), product],
                )
                self.count("product_catalog", cur, update=True)
            return "repriced"

        return self.in_transaction(self.writer, body)

    def update_dims(self) -> str:
        what = self.rng.choice(["reprice", "reprice", "customer", "product", "category"])
        if what == "reprice":
            return self.reprice()

        def body(cur):
            if what == "customer":
                customer = self.rng.choice(self.ids("customers"))
                change = self.rng.choice(
                    [{"name": self.fresh("Renamed")}, {"country": self.rng.choice(self.COUNTRIES)}, {"name": "Alice A"}]
                )
                self.update(cur, "customers", change, customer)
            elif what == "product":
                product = self.rng.choice(self.ids("products"))
                change = self.rng.choice(
                    [
                        {"name": self.fresh("Renamed product")},
                        {"category_id": self.rng.choice(self.ids("categories"))},
                        {"base_price": self.rng.choice(self.PRICES)},
                    ]
                )
                self.update(cur, "products", change, product)
            else:
                self.update(
                    cur, "categories", {"name": self.fresh("Category")}, self.rng.choice(self.ids("categories"))
                )
            return f"{what} changed"

        return self.in_transaction(self.owner, body)

    def delete_dims(self) -> str:
        def body(cur):
            cur.execute(
                "DELETE FROM customers WHERE id = (SELECT max(c.id) FROM customers c"
                " WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.customer_id = c.id))"
            )
            n = self.count("customers", cur)
            cur.execute(
                "SELECT max(p.id) FROM products p WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.product_id = p.id)"
            )
            (product,) = cur.fetchone()
            if product is not None:
                self.delete(cur, "product_catalog", [product], key="product_id")
                self.delete(cur, "products", [product])
            return f"{n} unreferenced customer, product {product} deleted"

        return self.in_transaction(self.owner, body)

    def two_tables(self) -> str:
        how = self.rng.choice(["new customer orders", "orders and reprice", "product moves with orders"])
        if how == "orders and reprice":  # as the generator does in one cycle, but in one transaction
            rows = self.order_rows(self.event_batch_size(), self.ids("customers"), self.ids("products"))
            product = self.rng.choice(self.ids("products", "WHERE id IN (SELECT product_id FROM product_catalog)"))

            def writer_body(cur):
                self.insert(cur, "orders", self.ORDER_COLUMNS, rows)
                self.update(
                    cur, "product_catalog", {"current_price": self.rng.choice(self.PRICES)}, product, "product_id"
                )
                return how

            return self.in_transaction(self.writer, writer_body)

        def body(cur):
            if how == "new customer orders":
                customers = [
                    self.insert_returning(
                        cur, "customers", ["name", "country"], (self.fresh("Customer"), self.rng.choice(self.COUNTRIES))
                    )
                ]
                products = self.ids("products")
            else:
                products = [self.rng.choice(self.ids("products"))]
                self.update(cur, "products", {"category_id": self.rng.choice(self.ids("categories"))}, products[0])
                customers = self.ids("customers")
            self.insert(cur, "orders", self.ORDER_COLUMNS, self.order_rows(self.rng.randint(1, 4), customers, products))
            return how

        return self.in_transaction(self.owner, body)

    def churn(self) -> str:
        """Rows inserted, then updated and deleted in the same transaction; an old row updated twice."""
        customers, products = self.ids("customers"), self.ids("products")
        old = self.rng.choice(self.ids("orders"))

        def body(cur):
            new = []
            for row in self.order_rows(self.rng.randint(2, 5), customers, products):
                new.append(self.insert_returning(cur, "orders", self.ORDER_COLUMNS, row))
            self.update(cur, "orders", {"quantity": self.rng.choice(self.QUANTITIES)}, new[0])
            self.delete(cur, "orders", [new[-1]])
            self.update(cur, "orders", {"unit_price": self.rng.choice(self.PRICES)}, old)
            self.update(cur, "orders", {"customer_id": self.rng.choice(customers)}, old)
            return f"{len(new)} orders inserted then changed, order {old} updated twice"

        return self.in_transaction(self.owner, body)


class Fraud(Driver):
    AMOUNTS = ["0.01", "1.5", "1.50", "12", "12.00", "49.99", "250", "999.99", "5000.5"]
    COUNTRIES = ["US", "GB", "DE", "MT", "ZZ"]
    CATEGORIES = ["Grocery", "Travel", "Crypto", "Gambling", "Books"]
    TIERS = ["STANDARD", "ELEVATED", "HIGH"]
    TXN_COLUMNS = ["user_id", "merchant_id", "amount", "generator_run_id", "generator_seq"]
    TIMES = ["2026-01-01 00:00:00+00", "2026-01-01 00:00:00.5+00", "2030-06-30 12:00:00+00"]

    def txn_rows(self, n: int, users: list[int], merchants: list[int]) -> list[tuple]:
        rows = []
        for _ in range(n):
            row = (self.rng.choice(users), self.rng.choice(merchants), self.rng.choice(self.AMOUNTS))
            rows.append(row)
            if self.rng.random() < 0.15:
                rows.append(row)
        return [(*r, *self.generator_columns()) for r in rows]

    def insert_events(self) -> str:
        rows = self.txn_rows(self.event_batch_size(), self.ids("users"), self.ids("merchants"))
        risky = self.ids("merchants", "WHERE category IN ('Crypto', 'Gambling')")
        if risky and self.rng.random() < 0.2:  # a burst: one user, escalating amounts at Crypto/Gambling merchants
            user = self.rng.choice(self.ids("users"))
            rows = [(user, self.rng.choice(risky), str(100 * 2**i), None, None) for i in range(self.rng.randint(3, 8))]

        def body(cur):
            self.insert(cur, "transactions", self.TXN_COLUMNS, rows)
            return f"{len(rows)} transactions"

        return self.in_transaction(self.writer, body)

    def update_events(self) -> str:
        picked = self.sample(self.ids("transactions"), self.rng.randint(1, 6))
        users, merchants = self.ids("users"), self.ids("merchants")

        def body(cur):
            for txn in picked:
                values = self.rng.choice(
                    [
                        {"amount": self.rng.choice(self.AMOUNTS)},
                        {"user_id": self.rng.choice(users)},
                        {"merchant_id": self.rng.choice(merchants)},
                        {"txn_at": self.rng.choice(self.TIMES)},  # MAX(txn_at) moves, or its row leaves
                        {
                            "user_id": self.rng.choice(users),
                            "merchant_id": self.rng.choice(merchants),
                            "amount": self.rng.choice(self.AMOUNTS),
                        },
                    ]
                )
                self.update(cur, "transactions", values, txn)
                if self.rng.random() < 0.1:
                    self.update(cur, "transactions", {}, txn, noop="amount")
            return f"{len(picked)} transactions updated"

        return self.in_transaction(self.owner, body)

    def delete_events(self) -> str:
        def body(cur):
            if self.rng.random() < 0.3:
                merchant = self.rng.choice(self.ids("merchants"))
                cur.execute("DELETE FROM transactions WHERE merchant_id = %s", [merchant])
                return f"all {self.count('transactions', cur)} transactions of merchant {merchant} deleted"
            if self.rng.random() < 0.2:  # the newest transaction: MAX(txn_at) must fall back
                cur.execute("DELETE FROM transactions WHERE id = (SELECT max(id) FROM transactions)")
                return f"{self.count('transactions', cur)} newest transaction deleted"
            picked = self.sample(self.ids("transactions"), self.rng.randint(1, 6))
            self.delete(cur, "transactions", picked)
            return f"{len(picked)} transactions deleted"

        return self.in_transaction(self.owner, body)

    def new_merchant(self, cur) -> int:
        merchant = self.insert_returning(
            cur,
            "merchants",
            ["name", "category", "country"],
            (self.fresh("Merchant"), self.rng.choice(self.CATEGORIES), self.rng.choice(self.COUNTRIES)),
        )
        if self.rng.random() < 0.7:
            self.insert(cur, "merchant_risk_tier", ["merchant_id", "tier"], [(merchant, self.rng.choice(self.TIERS))])
        return merchant

    def new_user(self, cur) -> int:
        name = "Alice Almeida" if self.rng.random() < 0.3 else self.fresh("User")
        return self.insert_returning(
            cur,
            "users",
            ["name", "country", "account_age_days"],
            (name, self.rng.choice(self.COUNTRIES), self.rng.choice([0, 30, 365])),
        )

    def insert_dims(self) -> str:
        def body(cur):
            if self.rng.random() < 0.5:
                self.new_merchant(cur)
                return "new merchant"
            self.new_user(cur)
            return "new user"

        return self.in_transaction(self.owner, body)

    def rotate_tier(self) -> str:
        """The generator's slow change, as demo_writer: merchant_risk_tier.tier and updated_at."""
        merchant = self.rng.choice(self.ids("merchants", "WHERE id IN (SELECT merchant_id FROM merchant_risk_tier)"))

        def body(cur):
            cur.execute(
                "UPDATE merchant_risk_tier SET tier = %s, updated_at = now() WHERE merchant_id = %s",
                [self.rng.choice(self.TIERS), merchant],
            )
            self.count("merchant_risk_tier", cur, update=True)
            return f"tier of merchant {merchant}"

        return self.in_transaction(self.writer, body)

    def update_dims(self) -> str:
        what = self.rng.choice(["tier", "tier", "user", "merchant"])
        if what == "tier":
            return self.rotate_tier()

        def body(cur):
            if what == "user":
                change = self.rng.choice(
                    [
                        {"name": self.fresh("Renamed")},
                        {"country": self.rng.choice(self.COUNTRIES)},
                        {"name": "Bruno Berger"},
                    ]
                )
                self.update(cur, "users", change, self.rng.choice(self.ids("users")))
            else:
                change = self.rng.choice(
                    [
                        {"name": self.fresh("Renamed merchant")},
                        {"category": self.rng.choice(self.CATEGORIES)},  # moves category_volume, changes risk levels
                        {"country": self.rng.choice(self.COUNTRIES)},
                    ]
                )
                self.update(cur, "merchants", change, self.rng.choice(self.ids("merchants")))
            return f"{what} changed"

        return self.in_transaction(self.owner, body)

    def delete_dims(self) -> str:
        def body(cur):
            cur.execute(
                "DELETE FROM users WHERE id = (SELECT max(u.id) FROM users u"
                " WHERE NOT EXISTS (SELECT 1 FROM transactions t WHERE t.user_id = u.id))"
            )
            n = self.count("users", cur)
            cur.execute(
                "SELECT max(m.id) FROM merchants m"
                " WHERE NOT EXISTS (SELECT 1 FROM transactions t WHERE t.merchant_id = m.id)"
            )
            (merchant,) = cur.fetchone()
            if merchant is not None:
                self.delete(cur, "merchant_risk_tier", [merchant], key="merchant_id")
                self.delete(cur, "merchants", [merchant])
            return f"{n} unreferenced user, merchant {merchant} deleted"

        return self.in_transaction(self.owner, body)

    def two_tables(self) -> str:
        how = self.rng.choice(
            ["new user transactions", "transactions and tier", "merchant recategorised with transactions"]
        )
        if how == "transactions and tier":
            rows = self.txn_rows(self.event_batch_size(), self.ids("users"), self.ids("merchants"))
            merchant = self.rng.choice(
                self.ids("merchants", "WHERE id IN (SELECT merchant_id FROM merchant_risk_tier)")
            )

            def writer_body(cur):
                self.insert(cur, "transactions", self.TXN_COLUMNS, rows)
                self.update(cur, "merchant_risk_tier", {"tier": self.rng.choice(self.TIERS)}, merchant, "merchant_id")
                return how

            return self.in_transaction(self.writer, writer_body)

        def body(cur):
            if how == "new user transactions":
                users, merchants = [self.new_user(cur)], self.ids("merchants")
            else:
                merchants = [self.rng.choice(self.ids("merchants"))]
                self.update(cur, "merchants", {"category": self.rng.choice(self.CATEGORIES)}, merchants[0])
                users = self.ids("users")
            self.insert(cur, "transactions", self.TXN_COLUMNS, self.txn_rows(self.rng.randint(1, 4), users, merchants))
            return how

        return self.in_transaction(self.owner, body)

    def churn(self) -> str:
        users, merchants = self.ids("users"), self.ids("merchants")
        old = self.rng.choice(self.ids("transactions"))

        def body(cur):
            new = [
                self.insert_returning(cur, "transactions", self.TXN_COLUMNS, row)
                for row in self.txn_rows(self.rng.randint(2, 5), users, merchants)
            ]
            self.update(cur, "transactions", {"amount": self.rng.choice(self.AMOUNTS)}, new[0])
            self.delete(cur, "transactions", [new[-1]])
            self.update(cur, "transactions", {"amount": self.rng.choice(self.AMOUNTS)}, old)
            self.update(cur, "transactions", {"merchant_id": self.rng.choice(merchants)}, old)
            return f"{len(new)} transactions inserted then changed, transaction {old} updated twice"

        return self.in_transaction(self.owner, body)


class Finance(Driver):
    QUANTITIES = ["1.5", "1.5000", "-1.5", "100", "-40", "0.0001", "-250.25", "10"]
    PRICES = ["1.5", "1.50", "99.9999", "100", "250.125", "0.0100"]
    BIDS = ["1.5", "10.0000", "99.5", "100.25", "250"]
    SPREADS = ["0.01", "0.0200", "1.5"]
    TRADE_COLUMNS = ["account_id", "instrument_id", "quantity", "price", "generator_run_id", "generator_seq"]
    TIMES = ["2026-01-01 00:00:00+00", "2026-01-01 00:00:00.5+00", "2030-06-30 12:00:00+00"]

    def trade_rows(self, n: int, accounts: list[int], instruments: list[int]) -> list[tuple]:
        rows = []
        for _ in range(n):
            row = (
                self.rng.choice(accounts),
                self.rng.choice(instruments),
                self.rng.choice(self.QUANTITIES),
                self.rng.choice(self.PRICES),
            )
            rows.append(row)
            if self.rng.random() < 0.15:
                rows.append(row)
        return [(*r, *self.generator_columns()) for r in rows]

    def closing_trade(self) -> tuple:
        """A trade that brings one open position's net quantity to exactly zero (it leaves position_values)."""
        open_positions = self.owner.execute(
            "SELECT account_id, instrument_id, -sum(quantity) FROM trades GROUP BY 1, 2"
            " HAVING sum(quantity) <> 0 ORDER BY 1, 2"
        ).fetchall()
        if not open_positions:
            return ()
        account, instrument, quantity = self.rng.choice(open_positions)
        return (account, instrument, quantity, self.rng.choice(self.PRICES), *self.generator_columns())

    def insert_events(self) -> str:
        rows = self.trade_rows(self.event_batch_size(), self.ids("accounts"), self.ids("instruments"))
        if self.rng.random() < 0.25 and (closing := self.closing_trade()):
            rows.append(closing)

        def body(cur):
            self.insert(cur, "trades", self.TRADE_COLUMNS, rows)
            return f"{len(rows)} trades"

        return self.in_transaction(self.writer, body)

    def update_events(self) -> str:
        picked = self.sample(self.ids("trades"), self.rng.randint(1, 6))
        accounts, instruments = self.ids("accounts"), self.ids("instruments")

        def body(cur):
            for trade in picked:
                values = self.rng.choice(
                    [
                        {"quantity": self.rng.choice(self.QUANTITIES)},
                        {"price": self.rng.choice(self.PRICES)},
                        {"account_id": self.rng.choice(accounts)},
                        {"instrument_id": self.rng.choice(instruments)},
                        {"traded_at": self.rng.choice(self.TIMES)},  # MAX(traded_at) moves, or its row leaves
                        {
                            "account_id": self.rng.choice(accounts),
                            "instrument_id": self.rng.choice(instruments),
                            "quantity": self.rng.choice(self.QUANTITIES),
                        },
                    ]
                )
                self.update(cur, "trades", values, trade)
                if self.rng.random() < 0.1:
                    self.update(cur, "trades", {}, trade, noop="price")
            return f"{len(picked)} trades updated"

        return self.in_transaction(self.owner, body)

    def delete_events(self) -> str:
        def body(cur):
            if self.rng.random() < 0.3:
                account = self.rng.choice(self.ids("accounts"))
                cur.execute("DELETE FROM trades WHERE account_id = %s", [account])
                return f"all {self.count('trades', cur)} trades of account {account} deleted"
            picked = self.sample(self.ids("trades"), self.rng.randint(1, 6))
            self.delete(cur, "trades", picked)
            return f"{len(picked)} trades deleted"

        return self.in_transaction(self.owner, body)

    def symbol(self) -> str:
        n, letters = self.counter, ""
        self.counter += 1
        while True:
            n, r = divmod(n, 26)
            letters = chr(65 + r) + letters
            if n == 0:
                return "Q." + letters

    def quote(self) -> tuple[str, str]:
        from decimal import Decimal

        bid = Decimal(self.rng.choice(self.BIDS))
        return str(bid), str(bid + Decimal(self.rng.choice(self.SPREADS)))

    def new_instrument(self, cur) -> int:
        instrument = self.insert_returning(
            cur,
            "instruments",
            ["symbol", "name", "sector_id", "asset_class", "reference_price", "volatility"],
            (
                self.symbol(),
                self.fresh("Instrument"),
                self.rng.choice(self.ids("sectors")),
                self.rng.choice(["EQUITY", "ETF", "BOND", "COMMODITY"]),
                self.rng.choice(["100", "1.5", "250.1234"]),
                self.rng.choice(["0.0150", "0.02", "0.5", "0.9999"]),
            ),
        )
        if self.rng.random() < 0.7:  # most instruments are quoted; an unquoted one has no market value
            self.insert(cur, "market_prices", ["instrument_id", "bid", "ask"], [(instrument, *self.quote())])
        return instrument

    def new_account(self, cur) -> int:
        return self.insert_returning(
            cur, "accounts", ["name", "portfolio_id"], (self.fresh("Account"), self.rng.choice(self.ids("portfolios")))
        )

    def insert_dims(self) -> str:
        def body(cur):
            what = self.rng.choice(["sector", "instrument", "portfolio", "account"])
            if what == "sector":
                self.insert(cur, "sectors", ["name"], [(self.fresh("Sector"),)])
            elif what == "instrument":
                self.new_instrument(cur)
            elif what == "portfolio":
                self.insert(
                    cur,
                    "portfolios",
                    ["name", "manager", "strategy", "capital_limit"],
                    [(self.fresh("Portfolio"), "M. Test", "Property", self.rng.choice(["10", "50000.5", "1000000"]))],
                )
            else:
                self.new_account(cur)
            return f"new {what}"

        return self.in_transaction(self.owner, body)

    def move_price(self) -> str:
        """The generator's slow change, as demo_writer: market_prices.bid, ask and updated_at."""
        instrument = self.rng.choice(self.ids("instruments", "WHERE id IN (SELECT instrument_id FROM market_prices)"))
        bid, ask = self.quote()

        def body(cur):
            self.update(cur, "market_prices", {"bid": bid, "ask": ask}, instrument, "instrument_id")
            return f"price of instrument {instrument}: {bid}/{ask}"

        return self.in_transaction(self.writer, body)

    def update_dims(self) -> str:
        what = self.rng.choice(["price", "price", "instrument", "sector", "portfolio", "account"])
        if what == "price":
            return self.move_price()

        def body(cur):
            if what == "instrument":
                change = self.rng.choice(
                    [
                        {"name": self.fresh("Renamed instrument")},
                        {"sector_id": self.rng.choice(self.ids("sectors"))},
                        {"volatility": self.rng.choice(["0.0150", "0.02", "0.5"])},
                        {"reference_price": self.rng.choice(["100", "1.5", "250.1234"])},
                        {"asset_class": self.rng.choice(["EQUITY", "BOND"])},
                    ]
                )
                self.update(cur, "instruments", change, self.rng.choice(self.ids("instruments")))
            elif what == "sector":
                self.update(cur, "sectors", {"name": self.fresh("Sector")}, self.rng.choice(self.ids("sectors")))
            elif what == "portfolio":
                change = self.rng.choice(
                    [
                        {"capital_limit": self.rng.choice(["10", "50000.5", "1000000", "1000000.00"])},
                        {"name": self.fresh("Portfolio")},
                        {"strategy": "Renamed strategy"},
                    ]
                )
                self.update(cur, "portfolios", change, self.rng.choice(self.ids("portfolios")))
            else:
                change = self.rng.choice(
                    [{"portfolio_id": self.rng.choice(self.ids("portfolios"))}, {"name": self.fresh("Account")}]
                )
                self.update(cur, "accounts", change, self.rng.choice(self.ids("accounts")))
            return f"{what} changed"

        return self.in_transaction(self.owner, body)

    def delete_dims(self) -> str:
        def body(cur):
            cur.execute(
                "DELETE FROM accounts WHERE id = (SELECT max(a.id) FROM accounts a"
                " WHERE NOT EXISTS (SELECT 1 FROM trades t WHERE t.account_id = a.id))"
            )
            n = self.count("accounts", cur)
            cur.execute(
                "SELECT max(i.id) FROM instruments i"
                " WHERE NOT EXISTS (SELECT 1 FROM trades t WHERE t.instrument_id = i.id)"
            )
            (instrument,) = cur.fetchone()
            if instrument is not None:
                self.delete(cur, "market_prices", [instrument], key="instrument_id")
                self.delete(cur, "instruments", [instrument])
            return f"{n} unreferenced account, instrument {instrument} deleted"

        return self.in_transaction(self.owner, body)

    def two_tables(self) -> str:
        how = self.rng.choice(["new account trades", "trades and price", "instrument moves sector with trades"])
        if how == "trades and price":
            rows = self.trade_rows(self.event_batch_size(), self.ids("accounts"), self.ids("instruments"))
            instrument = self.rng.choice(
                self.ids("instruments", "WHERE id IN (SELECT instrument_id FROM market_prices)")
            )
            bid, ask = self.quote()

            def writer_body(cur):
                self.insert(cur, "trades", self.TRADE_COLUMNS, rows)
                self.update(cur, "market_prices", {"bid": bid, "ask": ask}, instrument, "instrument_id")
                return how

            return self.in_transaction(self.writer, writer_body)

        def body(cur):
            if how == "new account trades":
                accounts, instruments = [self.new_account(cur)], self.ids("instruments")
            else:
                instruments = [self.rng.choice(self.ids("instruments"))]
                self.update(cur, "instruments", {"sector_id": self.rng.choice(self.ids("sectors"))}, instruments[0])
                accounts = self.ids("accounts")
            self.insert(
                cur, "trades", self.TRADE_COLUMNS, self.trade_rows(self.rng.randint(1, 4), accounts, instruments)
            )
            return how

        return self.in_transaction(self.owner, body)

    def churn(self) -> str:
        accounts, instruments = self.ids("accounts"), self.ids("instruments")
        old = self.rng.choice(self.ids("trades"))

        def body(cur):
            new = [
                self.insert_returning(cur, "trades", self.TRADE_COLUMNS, row)
                for row in self.trade_rows(self.rng.randint(2, 5), accounts, instruments)
            ]
            self.update(cur, "trades", {"quantity": self.rng.choice(self.QUANTITIES)}, new[0])
            self.delete(cur, "trades", [new[-1]])
            self.update(cur, "trades", {"price": self.rng.choice(self.PRICES)}, old)
            self.update(cur, "trades", {"instrument_id": self.rng.choice(instruments)}, old)
            return f"{len(new)} trades inserted then changed, trade {old} updated twice"

        return self.in_transaction(self.owner, body)


DRIVERS = {"ecommerce": Ecommerce, "fraud": Fraud, "finance": Finance}


# -- refreshing and checking -------------------------------------------------------------------------------
class Run:
    """One scenario's run: the connections, the driver, the log of what was done (for failure messages)."""

    def __init__(self, db, seed: int, steps: int):
        self.db, self.seed, self.steps = db, seed, steps
        self.rng = random.Random(f"{seed}:{db.scenario}")
        self.queries = scenario_defining_queries(db.scenario)
        self.order = list(self.queries)  # the file's (topological) order: the DAG order
        self.admin = psycopg.connect(db.admin_url, autocommit=True)
        # Autocommit: a batch is one transaction of its own (conn.transaction()), committed before the refresh
        # that follows, which runs in transactions of its own, as the scheduler's session would.
        self.owner = psycopg.connect(db.owner_url, autocommit=True)
        self.writer = psycopg.connect(db.writer_url, autocommit=True)
        self.driver = DRIVERS[db.scenario](random.Random(self.rng.getrandbits(64)), self.owner, self.writer)
        self.log: list[str] = []
        self.step = -1
        self.refresh_ways: dict[str, int] = {}

    def close(self) -> None:
        for conn in (self.admin, self.owner, self.writer):
            conn.close()

    def where(self) -> str:
        recent = "\n    ".join(self.log[-6:])
        return (
            f"[{self.db.scenario}, {SEED_ENV}={self.seed} {STEPS_ENV}={self.steps}, step {self.step}]"
            f"\n  replay: {SEED_ENV}={self.seed} {STEPS_ENV}={self.steps} .venv/bin/python -m pytest"
            f" tests/integration/test_emulator_property.py -k {self.db.scenario}"
            f"\n  last steps:\n    {recent}"
        )

    def tick(self) -> None:
        """As the scheduler: every stream table due, one emulator_tick() as demo (calculated tables follow
        their upstreams in the same tick, in DAG order)."""
        self.admin.execute("UPDATE pgtrickle.pgt_stream_tables SET last_refresh_at = '-infinity'")
        self.owner.execute("SELECT pgtrickle.emulator_tick()")

    def manual(self, names: list[str]) -> None:
        for name in names:  # each in its own transaction, as a client calling it would
            self.owner.execute("SELECT pgtrickle.refresh_stream_table(%s)", [name])

    def stream_upstreams(self) -> dict[str, set[str]]:
        """name -> the stream tables it reads (pgtrickle.pgt_dependencies)."""
        upstreams: dict[str, set[str]] = {name: set() for name in self.order}
        for down, up in self.owner.execute(
            "SELECT st.pgt_name, src.pgt_name FROM pgtrickle.pgt_dependencies d"
            " JOIN pgtrickle.pgt_stream_tables st ON st.pgt_id = d.pgt_id"
            " JOIN pgtrickle.pgt_stream_tables src ON src.pgt_relid = d.source_relid"
        ):
            upstreams[down].add(up)
        return upstreams

    def partial_tick(self) -> tuple[str, list[str]]:
        """A tick with only some scheduled tables due (a 1 s table refreshes while a 5 s one waits): the
        others keep their frontiers while the change buffers they share with the refreshed ones grow, over
        several batches; calculated tables follow the upstreams that changed. Returns the tables known to be
        exact afterwards: refreshed in this tick, reading only stream tables known exact (in DAG order)."""
        scheduled = [n for n in self.order if self.queries[n]["schedule"] != "calculated"]
        due = [n for n in scheduled if self.rng.random() < 0.5]
        (before,) = self.owner.execute(
            "SELECT coalesce(max(refresh_id), 0) FROM pgtrickle.pgt_refresh_history"
        ).fetchone()
        self.admin.execute(
            "UPDATE pgtrickle.pgt_stream_tables"
            " SET last_refresh_at = CASE WHEN pgt_name = ANY(%s) THEN '-infinity'::timestamptz ELSE now() END",
            [due],
        )
        self.owner.execute("SELECT pgtrickle.emulator_tick()")
        refreshed = {
            name
            for (name,) in self.owner.execute(
                "SELECT st.pgt_name FROM pgtrickle.pgt_refresh_history h"
                " JOIN pgtrickle.pgt_stream_tables st ON st.pgt_id = h.pgt_id"
                " WHERE h.refresh_id > %s AND h.status = 'COMPLETED' AND h.action <> 'NO_DATA'",
                [before],
            )
        }
        upstreams, known = self.stream_upstreams(), []
        for name in self.order:
            if name in refreshed and upstreams[name] <= set(known):
                known.append(name)
        return f"partial tick, due {due}, exact {known}", known

    def refresh(self) -> tuple[str, list[str]]:
        """Refreshes in one of the ways below; returns what was done and the tables then known exact."""
        how = self.rng.choices(["tick", "manual some, then tick", "manual all", "partial tick"], [5, 2, 1, 3])[0]
        self.refresh_ways[how] = self.refresh_ways.get(how, 0) + 1
        if how == "partial tick":
            return self.partial_tick()
        if how == "manual all":
            self.manual(self.order)
        elif how == "manual some, then tick":
            some = [n for n in self.order if self.rng.random() < 0.4]
            self.manual(some)
            self.tick()
            how = f"manual {some}, then tick"
        else:
            self.tick()
        return how, self.order

    def reinitialise(self) -> tuple[str, Callable[[], None]]:
        """One DIFFERENTIAL table through a FULL path mid-run: its query altered (to the same query, spaced
        differently: storage kept, frontier reset, refreshed FULL at once), or its mode switched to FULL for
        one refresh and back. Returns what was done and what to undo after the step's refresh."""
        rows = self.owner.execute(
            "SELECT pgt_name FROM pgtrickle.pgt_stream_tables WHERE refresh_mode = 'DIFFERENTIAL' ORDER BY pgt_name"
        ).fetchall()
        (name,) = self.rng.choice(rows)
        if self.rng.random() < 0.5:
            respaced = self.queries[name]["query"].strip() + "\n"
            self.owner.execute("SELECT pgtrickle.alter_stream_table(%s, query => %s)", [name, respaced])
            return f"{name} reinitialised by ALTER QUERY", lambda: None

        def back() -> None:
            self.owner.execute("SELECT pgtrickle.alter_stream_table(%s, refresh_mode => 'DIFFERENTIAL')", [name])

        self.owner.execute("SELECT pgtrickle.alter_stream_table(%s, refresh_mode => 'FULL')", [name])
        return f"{name} switched to FULL for one refresh", back

    def check_statuses(self) -> None:
        broken = self.owner.execute(
            "SELECT pgt_name, status, consecutive_errors, last_error_message FROM pgtrickle.pgt_stream_tables"
            " WHERE status <> 'ACTIVE' OR consecutive_errors > 0 OR NOT is_populated ORDER BY pgt_name"
        ).fetchall()
        assert not broken, f"{self.where()}\n  stream tables not ACTIVE/healthy: {broken}"

    def check_tables(self, names: list[str] | None = None) -> None:
        for name in self.order if names is None else names:
            spec = self.queries[name]
            rows, extra, missing = stream_table_differences(self.owner, name, spec["query"], exact_text=True)
            if extra or missing:
                stored_only, query_only = stream_table_difference_samples(self.owner, name, spec["query"])
                pytest.fail(
                    f"{self.where()}\n  {name}: {rows} rows stored, {extra} not produced by its query, {missing}"
                    f" produced but not stored\n  stored only: {stored_only}\n  query only: {query_only}",
                    pytrace=False,
                )

    def pending_rows(self) -> dict[tuple[str, str], int]:
        rows = self.owner.execute(
            "SELECT stream_table, source_table, pending_rows FROM pgtrickle.change_buffer_sizes()"
        ).fetchall()
        return {(st, source.removeprefix("public.")): n for st, source, n in rows}


def _incremental_figures(run: Run) -> dict[str, tuple] | None:
    """Where the emulator keeps incremental plans (pgtrickle.emulator_delta_plans, issue 18's aggregate path):
    per stream table (supported, incremental refreshes, state rebuilds); None without that path."""
    (plans,) = run.owner.execute("SELECT to_regclass('pgtrickle.emulator_delta_plans') IS NOT NULL").fetchone()
    if not plans:
        return None
    rows = run.owner.execute(
        "SELECT st.pgt_name, p.supported, p.incremental_refreshes, p.state_rebuilds"
        " FROM pgtrickle.emulator_delta_plans p JOIN pgtrickle.pgt_stream_tables st ON st.pgt_id = p.pgt_id"
        " ORDER BY st.pgt_name"
    ).fetchall()
    return {name: (supported, incremental, rebuilds) for name, supported, incremental, rebuilds in rows}


def _report_incremental(run: Run) -> None:
    """Prints what the incremental path did; when it supports a table here, it must have been used."""
    figures = _incremental_figures(run)
    if figures is None:
        return
    used = {name: f[1:] for name, f in figures.items() if f[0]}
    print(f"  incremental path (refreshes, rebuilds) per supported table: {used}")
    unused = [name for name, (incremental, _rebuilds) in used.items() if incremental == 0]
    assert used and not unused, f"{run.where()}\n  supported but never incremental: {unused}; plans: {figures}"


def _drive(run: Run) -> dict[str, int]:
    insert_run = 0
    reinit_step = run.steps // 2
    kinds_seen: dict[str, int] = {}
    for step in range(run.steps):
        run.step = step
        unseen = [k for k in KINDS if k not in kinds_seen]
        if insert_run > 0:
            kind, insert_run = "insert_events", insert_run - 1
        elif unseen and len(unseen) >= run.steps - step:
            kind = unseen[0]  # every kind of batch at least once, however short the run
        else:
            kind = run.rng.choices(list(KINDS), list(KINDS.values()))[0]
            if kind == "insert_events":
                insert_run = run.rng.randint(1, 3)  # several insert-only batches in a row
        kinds_seen[kind] = kinds_seen.get(kind, 0) + 1
        run.log.append(f"{step}: {run.driver.apply(kind)}")
        undo = None
        if step == reinit_step:
            what, undo = run.reinitialise()
            run.log.append(f"{step}: {what}")
        how, exact = run.refresh()
        run.log.append(f"{step}: refresh: {how}")
        run.check_statuses()
        run.check_tables(exact)
        if undo is not None:
            undo()
    return kinds_seen


@pytest.mark.slow
@pytest.mark.parametrize("scenario", list(DRIVERS))
def test_every_stream_table_equals_its_query_after_random_changes(demo_db, engine_server, scenario):
    if engine_server[1] != "emulator":
        pytest.skip("drives the emulator's scheduler tick (pgtrickle.emulator_tick)")
    seed = _env_int(SEED_ENV, DEFAULT_SEED, 0)
    steps = _env_int(STEPS_ENV, DEFAULT_STEPS, 2)
    run = Run(demo_db(scenario), seed, steps)
    try:
        run.tick()  # whatever the bootstrap left pending is consumed first
        run.check_tables()
        kinds_seen = _drive(run)
        refreshes = dict(
            run.owner.execute(
                "SELECT initiated_by || ' ' || action, count(*) FROM pgtrickle.pgt_refresh_history"
                " WHERE status = 'COMPLETED' GROUP BY 1 ORDER BY 1"
            ).fetchall()
        )
        print(
            f"\n{scenario}: seed {seed}, {steps} steps, batches {kinds_seen},"
            f" refreshed by {run.refresh_ways}: {refreshes}"
        )
        assert refreshes.get("SCHEDULER DIFFERENTIAL", 0) >= steps // 2, f"{run.where()}\n  refreshes {refreshes}"
        _report_incremental(run)

        # After a full refresh the change buffers hold nothing: every reader consumed every change.
        run.step = steps
        run.tick()
        pending = run.pending_rows()
        assert pending, f"{run.where()}\n  no change buffers listed"
        assert all(n == 0 for n in pending.values()), f"{run.where()}\n  rows left after a full refresh: {pending}"
        # One more insert-only batch and a reprice, unrefreshed: exactly their rows are pending, in the
        # buffer of each table they wrote (each stream table reading it lists it), and nowhere else.
        run.driver.changes.clear()
        run.log.append(f"{steps}: {run.driver.apply('insert_events')}")
        run.log.append(f"{steps}: {run.driver.apply('update_dims')}")
        pending = run.pending_rows()
        expected = {key: run.driver.changes.get(key[1], 0) for key in pending}
        assert pending == expected, f"{run.where()}\n  pending change-buffer rows {pending}, written {expected}"
        run.tick()
        assert all(n == 0 for n in run.pending_rows().values()), f"{run.where()}\n  rows left after a refresh"
        run.check_statuses()
        run.check_tables()
    finally:
        run.close()


@pytest.mark.slow
@pytest.mark.parametrize("scenario", list(DRIVERS))
def test_stream_tables_exact_after_ticks_racing_an_insert_only_writer(demo_db, engine_server, scenario):
    """Insert-only batches committed by demo_writer without pause while the scheduler ticks (a refresh may
    read a source's change buffer and then the tables while a batch commits in between): once the writer
    stops and one more tick runs, every stream table is exact. A refresh whose recorded frontier is older
    than the rows its result already includes would apply those rows again here."""
    if engine_server[1] != "emulator":
        pytest.skip("drives the emulator's scheduler tick (pgtrickle.emulator_tick)")
    seed = _env_int(SEED_ENV, DEFAULT_SEED, 0)
    ticks = max(4, _env_int(STEPS_ENV, DEFAULT_STEPS, 2) // 4)
    db = demo_db(scenario)
    run = Run(db, seed, ticks)
    stop, errors, batches = threading.Event(), [], [0]

    def write() -> None:
        with (
            psycopg.connect(db.owner_url, autocommit=True) as owner,
            psycopg.connect(db.writer_url, autocommit=True) as writer,
        ):
            driver = DRIVERS[scenario](random.Random(run.rng.getrandbits(64)), owner, writer)
            try:
                while not stop.is_set():
                    driver.insert_events()
                    batches[0] += 1
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

    feeder = threading.Thread(target=write, daemon=True)
    try:
        run.tick()
        feeder.start()
        for step in range(ticks):
            run.step = step
            if run.rng.random() < 0.3:
                run.log.append(f"{step}: {run.partial_tick()[0]}")
            else:
                run.tick()
                run.log.append(f"{step}: tick")
            run.check_statuses()
        stop.set()
        feeder.join(timeout=60)
        assert not feeder.is_alive() and not errors, f"{run.where()}\n  writer: {errors}"
        run.step = ticks
        run.log.append(f"{ticks}: writer stopped after {batches[0]} batches; tick")
        run.tick()
        print(f"\n{scenario}: seed {seed}, {ticks} ticks racing {batches[0]} insert-only batches")
        _report_incremental(run)
        # The writer commits several batches per tick (4x to 40x here): at least one per two ticks proves the race.
        assert batches[0] >= ticks // 2, f"{run.where()}\n  the writer committed only {batches[0]} batches"
        run.check_statuses()
        run.check_tables()
    finally:
        stop.set()
        if feeder.ident is not None:
            feeder.join(timeout=60)
        run.close()
