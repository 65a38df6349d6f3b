"""finance generator events from seeded random generators: the price walk, trades, bursts, defaults."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest

from services.generator.config import parse_config
from services.generator.scenarios import load_scenario
from services.generator.scenarios.finance import QUOTES, TRADES, step_price, ticks_to_text

ACCOUNTS = list(range(1, 51))
# (instrument, reference ticks, daily volatility, mid ticks): a cheap volatile one, a dear calm one.
QUOTE_ROWS = [(1, 269_000, 0.035, 269_000), (2, 4_125_000, 0.024, 4_125_000), (3, 991_000, 0.004, 991_000)]


def generator(seed: int = 7):
    gen = load_scenario("finance", seed)
    gen.set_lookups(ACCOUNTS, QUOTE_ROWS)
    return gen


def test_price_walk_over_10000_ticks_stays_near_reference_with_a_positive_spread():
    gen = generator()
    seen = {q[0]: [] for q in QUOTE_ROWS}
    for _ in range(10_000):
        [part] = gen.slow_change()
        assert part.kind == "price_tick" and part.target is QUOTES
        [(bid, ask, instrument)] = part.rows
        bid, ask = Decimal(bid), Decimal(ask)
        mid = (bid + ask) / 2
        assert Decimal(0) < bid < mid < ask  # the spread is positive, mid strictly inside
        gen.committed([part])
        seen[instrument].append(mid)
    for instrument, reference, _, _ in QUOTE_ROWS:
        mids = seen[instrument]
        ref = Decimal(reference) / 10_000
        assert len(mids) > 2_000  # every instrument moved many times
        assert all(ref * Decimal("0.5") <= m <= ref * 2 for m in mids)
        mean = sum(mids) / len(mids)
        assert abs(mean - ref) / ref < Decimal("0.05")  # mean reversion keeps it near its reference
        assert len(set(mids)) > 100  # and it does move


def test_step_price_reverts_towards_the_reference():
    rng = random.Random(1)
    far_above = [step_price(2_000_000, 1_000_000, 0.0001, rng) for _ in range(100)]
    assert all(m < 2_000_000 for m in far_above)  # with negligible noise, it moves back down
    assert ticks_to_text(1_234_567) == "123.4567"


def test_regular_trades_fill_at_the_touch():
    gen = generator()
    [part] = gen.regular(2000)
    assert part.kind == "trade" and part.target is TRADES and len(part.rows) == 2000
    buys = 0
    for account, instrument, quantity, price in part.rows:
        quote = gen.quote(instrument)
        assert account in ACCOUNTS and 10 <= abs(quantity) <= 200
        expected = quote.ask if quantity > 0 else quote.bid
        assert price == ticks_to_text(expected)
        buys += quantity > 0
    assert 0.5 < buys / 2000 < 0.7


@pytest.mark.parametrize("seed", range(20))
def test_algorithmic_burst_is_one_order_worked_through_the_book(seed):
    [part] = generator(seed).burst()
    assert part.kind == "algo_trade" and 8 <= len(part.rows) <= 20
    assert len({(a, i) for a, i, _, _ in part.rows}) == 1  # one account, one instrument
    sides = {q > 0 for _, _, q, _ in part.rows}
    assert len(sides) == 1
    prices = [Decimal(p) for _, _, _, p in part.rows]
    assert prices == (sorted(prices) if sides == {True} else sorted(prices, reverse=True))


def test_finance_defaults_come_from_its_manifest_and_flags_still_win():
    finance = parse_config(["--scenario", "finance"], {})
    assert (finance.burst_interval, finance.slow_change_every) == (60, 1)
    ecommerce = parse_config(["--scenario", "ecommerce"], {})
    assert (ecommerce.burst_interval, ecommerce.slow_change_every) == (45, 30)
    overridden = parse_config(["--scenario", "finance", "--slow-change-every", "5"], {"GENERATOR_BURST_INTERVAL": "9"})
    assert (overridden.burst_interval, overridden.slow_change_every) == (9, 5)


def test_same_seed_same_events():
    a, b = generator(3), generator(3)
    assert a.regular(50)[0].rows == b.regular(50)[0].rows
    assert a.burst()[0].rows == b.burst()[0].rows
    assert a.slow_change()[0].rows == b.slow_change()[0].rows
