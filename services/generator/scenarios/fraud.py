"""fraud: a continuous card-transaction stream, suspicious bursts and merchant risk-tier rotation.

Events (metric label `kind`):
  transaction        a regular transaction: one user (a few are far busier than others), one merchant
                     (Crypto and Gambling merchants are rarer), an amount of a few dollars to a few hundred.
  burst_transaction  a suspicious burst: one user fires 6-14 rapid transactions at Crypto/Gambling
                     merchants, each amount 1.5-1.8x the previous one, starting at 200-400 and above 1.1x
                     the user's average so far. The burst's mean is then over 3x its start, so its last
                     amount is over 2x the user's new average: risk_scores ends the burst HIGH. The user is
                     one of the BURST_CANDIDATES with the lowest average (bursts inflate averages).
  tier_rotation      a slow change: one merchant's tier in merchant_risk_tier moves one step along
                     STANDARD -> ELEVATED -> HIGH -> STANDARD (updated_at = now()).

Amounts are handled in integer cents.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import psycopg

from services.generator.scenarios import InsertTarget, LookupsNotReady, Rows, ScenarioGenerator, UpdateTarget

TRANSACTIONS = InsertTarget(
    table="transactions",
    columns=("user_id", "merchant_id", "amount"),
    event_id_columns=("generator_run_id", "generator_seq"),
)
RISK_TIER = UpdateTarget(
    table="merchant_risk_tier",
    set_columns=("tier",),
    key_columns=("merchant_id",),
    touch_columns=("updated_at",),
)

SUSPICIOUS_CATEGORIES = ("Crypto", "Gambling")
TIER_CYCLE = ("STANDARD", "ELEVATED", "HIGH")
REGULAR_AMOUNT_CENTS = (500, 25_000)  # clipped log-normal around 40 dollars
REGULAR_MEDIAN_CENTS = 4_000
REGULAR_SIGMA = 0.9
BURST_SIZE = (6, 14)
BURST_START_CENTS = (20_000, 40_000)
BURST_GROWTH = (1.5, 1.8)  # each amount is this many times the previous one
BURST_CANDIDATES = 10


@dataclass
class Merchant:
    id: int
    category: str
    tier: str


def cents_to_text(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def next_tier(tier: str) -> str:
    return TIER_CYCLE[(TIER_CYCLE.index(tier) + 1) % len(TIER_CYCLE)]


class Generator(ScenarioGenerator):
    name = "fraud"
    regular_kind = "transaction"
    burst_kind = "burst_transaction"
    slow_change_kind = "tier_rotation"
    burst_label = "suspicious burst"
    slow_change_label = "tier rotation"

    def __init__(self, seed: int):
        super().__init__(seed)
        self._user_rng = self.stream("txn-user")
        self._merchant_rng = self.stream("txn-merchant")
        self._amount_rng = self.stream("txn-amount")
        self._burst_rng = self.stream("burst")
        self._rotation_rng = self.stream("tier-rotation")
        self.users: list[int] = []
        self.merchants: list[Merchant] = []

    # -- lookups ---------------------------------------------------------------------------------------
    def load(self, conn: psycopg.Connection) -> None:
        try:
            with conn.cursor() as cur:
                users = [row[0] for row in cur.execute("SELECT id FROM users ORDER BY id")]
                merchants = cur.execute(
                    "SELECT m.id, m.category, r.tier FROM merchants m"
                    " JOIN merchant_risk_tier r ON r.merchant_id = m.id ORDER BY m.id"
                ).fetchall()
                # Read once per (re)load: bursts must start above the user's average to end HIGH.
                averages = cur.execute(
                    "SELECT user_id, count(*), round(avg(amount) * 100) FROM transactions GROUP BY user_id"
                ).fetchall()
        except (psycopg.errors.UndefinedTable, psycopg.errors.InsufficientPrivilege) as exc:
            conn.rollback()
            raise LookupsNotReady(str(exc).splitlines()[0]) from None
        conn.rollback()  # end the read transaction: the engine's write transactions start clean
        self.set_lookups(users, merchants, {user: (count, int(avg)) for user, count, avg in averages})

    def set_lookups(
        self,
        users: Sequence[int],
        merchants: Sequence[tuple[int, str, str]],
        averages: dict[int, tuple[int, int]] | None = None,
    ) -> None:
        """users: ids; merchants: (id, category, tier); averages: user -> (transactions, average cents)."""
        self.users = list(users)
        self.averages = {user: (averages or {}).get(user, (0, 0)) for user in self.users}
        self.merchants = [Merchant(*m) for m in merchants]
        self.suspicious = [m for m in self.merchants if m.category in SUSPICIOUS_CATEGORIES]
        if not self.users or not self.merchants or not self.suspicious:
            raise LookupsNotReady("users, merchants (with Crypto/Gambling ones) and merchant_risk_tier are empty")
        self._by_id = {m.id: m for m in self.merchants}
        popularity = self.stream("popularity")
        ranked = popularity.sample(range(len(self.users)), len(self.users))
        weights = [0.0] * len(self.users)
        for rank, index in enumerate(ranked):
            weights[index] = 1 / (rank + 6)
        self._user_cum = list(itertools.accumulate(weights))
        # Everyday merchants are 4x as likely as Crypto/Gambling ones.
        self._merchant_cum = list(
            itertools.accumulate(1 if m.category in SUSPICIOUS_CATEGORIES else 4 for m in self.merchants)
        )

    # -- events ----------------------------------------------------------------------------------------
    def regular(self, n: int) -> list[Rows]:
        if n <= 0:
            return []
        users = self._user_rng.choices(self.users, cum_weights=self._user_cum, k=n)
        merchants = self._merchant_rng.choices(self.merchants, cum_weights=self._merchant_cum, k=n)
        gauss, (low, high) = self._amount_rng.gauss, REGULAR_AMOUNT_CENTS
        rows = []
        for user, merchant in zip(users, merchants, strict=True):
            cents = round(REGULAR_MEDIAN_CENTS * math.exp(REGULAR_SIGMA * gauss()))
            rows.append((user, merchant.id, cents_to_text(min(high, max(low, cents)))))
        return [Rows(self.regular_kind, TRANSACTIONS, rows)]

    def burst(self) -> list[Rows]:
        rng = self._burst_rng
        calmest = sorted(self.users, key=lambda u: (self.averages[u][1], u))[:BURST_CANDIDATES]
        user = rng.choice(calmest)
        size = rng.randint(*BURST_SIZE)
        growth = rng.uniform(*BURST_GROWTH)
        cents = max(rng.randint(*BURST_START_CENTS), math.ceil(self.averages[user][1] * 1.1))
        rows = []
        for _ in range(size):
            rows.append((user, rng.choice(self.suspicious).id, cents_to_text(cents)))
            cents = math.ceil(cents * growth)
        return [Rows(self.burst_kind, TRANSACTIONS, rows, note={"user_id": user, "transactions": size})]

    def slow_change(self) -> list[Rows]:
        merchant = self._rotation_rng.choice(self.merchants)
        tier = next_tier(merchant.tier)
        note = {"merchant_id": merchant.id, "from": merchant.tier, "to": tier}
        return [Rows(self.slow_change_kind, RISK_TIER, [(tier, merchant.id)], note=note)]

    def committed(self, parts: Sequence[Rows]) -> None:
        for part in parts:
            if part.target is RISK_TIER:
                for tier, merchant_id in part.rows:
                    self._by_id[merchant_id].tier = tier
            elif part.kind == self.burst_kind:
                # Regular amounts (<= 250) never lift an average above a burst's; bursts do: track them.
                for user, _, amount in part.rows:
                    count, avg = self.averages[user]
                    cents = round(float(amount) * 100)
                    self.averages[user] = (count + 1, (avg * count + cents) // (count + 1))

    # -- helpers for tests -----------------------------------------------------------------------------
    def merchant(self, merchant_id: int) -> Merchant:
        return self._by_id[merchant_id]


__all__ = ["RISK_TIER", "TRANSACTIONS", "Generator", "Merchant", "next_tier"]
