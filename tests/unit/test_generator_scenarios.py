"""ecommerce event shapes from a seeded random generator (no database: lookups are given directly)."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal

import pytest

from services.common.settings import ConfigError
from services.generator.scenarios import LookupsNotReady, load_scenario
from services.generator.scenarios.ecommerce import CATALOG, ORDERS, Generator, percent_bounds

# Like the seed: 8 categories, 60 products (ids 101..160) with base prices from 9.99 to 329.00,
# a few already repriced, 200 customers (ids 1..200).
CUSTOMERS = list(range(1, 201))
PRODUCTS = [
    (100 + i, 1 + (i - 1) % 8, base, base if i % 6 else base * 85 // 100)
    for i, base in ((i, 999 + (i * 7919) % 32000) for i in range(1, 61))
]


def make(seed: int = 7) -> Generator:
    generator = load_scenario("ecommerce", seed)
    assert isinstance(generator, Generator)
    generator.set_lookups(CUSTOMERS, PRODUCTS)
    return generator


def cents(price: str) -> int:
    return int(Decimal(price) * 100)


def test_flash_sale_shape():
    generator = make()
    sizes = Counter()
    for _ in range(400):
        (part,) = generator.burst()
        assert part.kind == "flash_sale_order" and part.target is ORDERS
        assert 8 <= len(part.rows) <= 18
        sizes[len(part.rows)] += 1
        categories = {generator.product(product_id).category_id for _, product_id, _, _ in part.rows}
        assert len(categories) == 1, "a flash sale stays in one category"
        assert categories == {part.note["category_id"]}
        for customer_id, product_id, quantity, unit_price in part.rows:
            assert customer_id in CUSTOMERS
            assert quantity in (1, 2)
            current = generator.product(product_id).current_cents
            assert 0.70 * current <= cents(unit_price) <= 0.90 * current, (unit_price, current)
    assert min(sizes) == 8 and max(sizes) == 18, "sizes span the whole 8-18 range"


def test_reprice_shape_and_committed_price_is_used_next():
    generator = make()
    products_seen = set()
    for _ in range(300):
        (part,) = generator.slow_change()
        assert part.kind == "reprice" and part.target is CATALOG
        ((price, product_id),) = part.rows
        product = generator.product(product_id)
        assert 0.80 * product.base_cents <= cents(price) <= 1.20 * product.base_cents
        products_seen.add(product_id)
        generator.committed([part])
        assert product.current_cents == cents(price)
    assert len(products_seen) > 40, "repricing picks products across the catalogue"
    # Flash-sale prices follow the committed current price, not the base price.
    for _ in range(50):
        for _, product_id, _, unit_price in generator.burst()[0].rows:
            current = generator.product(product_id).current_cents
            assert 0.70 * current <= cents(unit_price) <= 0.90 * current


def test_uncommitted_reprice_does_not_change_prices():
    generator = make()
    before = {p.id: p.current_cents for p in generator.products}
    generator.slow_change()
    assert {p.id: p.current_cents for p in generator.products} == before


def test_regular_orders_shape_and_popularity():
    generator = make()
    (part,) = generator.regular(5000)
    assert part.kind == "order" and len(part.rows) == 5000
    customers = Counter()
    for customer_id, product_id, quantity, unit_price in part.rows:
        customers[customer_id] += 1
        assert quantity in (1, 2, 3)
        current = generator.product(product_id).current_cents
        assert 0.95 * current - 1 <= cents(unit_price) <= 1.05 * current + 1
    top_share = sum(n for _, n in customers.most_common(10)) / 5000
    assert 0.12 < top_share < 0.5, "a few customers buy much more than the rest"
    assert generator.regular(0) == []


def test_same_seed_same_events_however_batched():
    a, b = make(seed=11), make(seed=11)
    whole = a.regular(100)[0].rows
    split = b.regular(30)[0].rows + b.regular(1)[0].rows + b.regular(69)[0].rows
    assert whole == split
    assert [a.burst()[0].rows for _ in range(5)] == [b.burst()[0].rows for _ in range(5)]
    assert [a.slow_change()[0].rows for _ in range(5)] == [b.slow_change()[0].rows for _ in range(5)]


def test_different_seeds_differ():
    assert make(seed=1).regular(50)[0].rows != make(seed=2).regular(50)[0].rows
    assert make(seed=1).burst()[0].rows != make(seed=2).burst()[0].rows


def test_percent_bounds_are_exact_in_cents():
    for price in range(1, 5000):
        low, high = percent_bounds(price, 70, 90)
        assert low >= 1 and low <= high
        if price >= 10:
            assert 0.7 * price <= low and high <= 0.9 * price


def test_empty_lookups_and_unknown_scenarios_are_reported():
    generator = load_scenario("ecommerce", 1)
    with pytest.raises(LookupsNotReady):
        generator.set_lookups([], PRODUCTS)
    with pytest.raises(ConfigError, match="casino"):
        load_scenario("casino", 1)
