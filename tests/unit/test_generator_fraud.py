"""fraud generator events from seeded random generators: shapes and reproducibility (no database)."""

from __future__ import annotations

from decimal import Decimal
from itertools import pairwise

import pytest

from services.generator.scenarios import load_scenario
from services.generator.scenarios.fraud import RISK_TIER, TRANSACTIONS, next_tier

USERS = list(range(1, 61))
MERCHANTS = [
    (1, "Grocery", "STANDARD"),
    (2, "Travel", "STANDARD"),
    (3, "Crypto", "HIGH"),
    (4, "Gambling", "ELEVATED"),
    (5, "Food", "STANDARD"),
    (6, "Crypto", "HIGH"),
]
SUSPICIOUS_IDS = {3, 4, 6}


def generator(seed: int = 11):
    gen = load_scenario("fraud", seed)
    gen.set_lookups(USERS, MERCHANTS)
    return gen


@pytest.mark.parametrize("seed", range(40))
def test_burst_is_6_to_14_escalating_transactions_of_one_user_at_crypto_or_gambling(seed):
    [part] = generator(seed).burst()
    assert part.kind == "burst_transaction" and part.target is TRANSACTIONS
    assert 6 <= len(part.rows) <= 14
    assert len({user for user, _, _ in part.rows}) == 1
    assert {merchant for _, merchant, _ in part.rows} <= SUSPICIOUS_IDS
    amounts = [Decimal(amount) for _, _, amount in part.rows]
    assert amounts[0] >= 200 and all(b >= a * Decimal("1.5") - Decimal("0.01") for a, b in pairwise(amounts))
    assert amounts == sorted(set(amounts))  # strictly escalating


def test_regular_transactions_stay_within_bounds_and_prefer_everyday_merchants():
    [part] = generator().regular(5000)
    assert part.kind == "transaction" and len(part.rows) == 5000
    amounts = [Decimal(amount) for _, _, amount in part.rows]
    assert min(amounts) >= Decimal("5.00") and max(amounts) <= Decimal("250.00")
    suspicious = sum(1 for _, merchant, _ in part.rows if merchant in SUSPICIOUS_IDS)
    assert 0.05 < suspicious / 5000 < 0.25  # 3 of 6 merchants, weighted 1 against 4


def test_tier_rotation_cycles_standard_elevated_high():
    assert [next_tier(t) for t in ("STANDARD", "ELEVATED", "HIGH")] == ["ELEVATED", "HIGH", "STANDARD"]
    gen = generator()
    seen: dict[int, list[str]] = {}
    for _ in range(60):
        [part] = gen.slow_change()
        assert part.kind == "tier_rotation" and part.target is RISK_TIER
        [(tier, merchant_id)] = part.rows
        before = gen.merchant(merchant_id).tier
        assert tier == next_tier(before)
        gen.committed([part])
        seen.setdefault(merchant_id, [before]).append(tier)
    for history in seen.values():
        for a, b in pairwise(history):
            assert b == next_tier(a)


def test_same_seed_same_events():
    a, b = generator(5), generator(5)
    assert a.regular(100)[0].rows == b.regular(100)[0].rows
    assert a.burst()[0].rows == b.burst()[0].rows
    assert a.slow_change()[0].rows == b.slow_change()[0].rows
    assert generator(6).regular(100)[0].rows != generator(5).regular(100)[0].rows


def test_bursts_pick_calm_users_and_start_above_their_average():
    gen = load_scenario("fraud", 3)
    averages = {user: (10, 5_000) for user in USERS}
    averages.update({user: (20, 900_000) for user in USERS[:55]})  # 55 users already inflated
    gen.set_lookups(USERS, MERCHANTS, averages)
    # The 10 lowest averages: the 5 calm users, then (ties by id) the 5 first inflated ones.
    candidates = set(USERS[55:]) | set(USERS[:5])
    chosen = set()
    for _ in range(40):
        [part] = gen.burst()
        user = part.rows[0][0]
        chosen.add(user)
        assert user in candidates
        first = Decimal(part.rows[0][2])
        assert first * 100 >= Decimal(averages[user][1]) * Decimal("1.1")
    assert chosen & set(USERS[55:])  # calm users are among those picked
    inflated = {user: (20, 900_000) for user in USERS}
    gen.set_lookups(USERS, MERCHANTS, inflated)
    [part] = gen.burst()
    assert Decimal(part.rows[0][2]) * 100 >= 990_000  # start above 1.1x even a large average


def test_committed_burst_raises_the_users_average():
    gen = generator()
    [part] = gen.burst()
    user = part.rows[0][0]
    before = gen.averages[user]
    gen.committed([part])
    count, average = gen.averages[user]
    assert count == before[0] + len(part.rows) and average > before[1]
