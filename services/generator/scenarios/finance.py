"""finance: a continuous trade stream, algorithmic bursts, and a price feed that moves every cycle.

Events (metric label `kind`):
  trade       a regular fill: one account, one instrument, buy (60 %) or sell, 10-200 units, at the ask
              (buy) or the bid (sell) of the current quote.
  algo_trade  an algorithmic burst: one account works one order in one instrument, 8-20 child fills of
              20-120 units on the same side, each fill one tick further through the book.
  price_tick  a slow change (by default every cycle, set in sql/finance/scenario.toml): one instrument's
              mid moves by a Gaussian random walk with mean reversion to its reference price; the quote
              is mid -/+ a half spread of max(1 tick, 2.5 bp), so bid < mid < ask always.

Prices are handled in integer ticks of 0.0001.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass

import psycopg

from services.generator.scenarios import InsertTarget, LookupsNotReady, Rows, ScenarioGenerator, UpdateTarget

TRADES = InsertTarget(
    table="trades",
    columns=("account_id", "instrument_id", "quantity", "price"),
    event_id_columns=("generator_run_id", "generator_seq"),
)
QUOTES = UpdateTarget(
    table="market_prices",
    set_columns=("bid", "ask"),
    key_columns=("instrument_id",),
    touch_columns=("updated_at",),
)

TICKS = 10_000  # per currency unit
BUY_SHARE = 0.6
TRADE_UNITS = (10, 200)
BURST_FILLS = (8, 20)
BURST_UNITS = (20, 120)
REVERSION = 0.05  # share of the gap to the reference price closed per tick
STEP_VOL_SHARE = 0.1  # one tick's standard deviation, as a share of the daily volatility
HALF_SPREAD_BP = 2.5
PRICE_BOUNDS = (0.5, 2.0)  # the walk never leaves [0.5, 2] x reference


@dataclass
class Quote:
    instrument_id: int
    reference: int  # ticks
    volatility: float  # daily
    mid: int  # ticks

    @property
    def half_spread(self) -> int:
        return half_spread(self.mid)

    @property
    def bid(self) -> int:
        return self.mid - self.half_spread

    @property
    def ask(self) -> int:
        return self.mid + self.half_spread


def half_spread(mid: int) -> int:
    return max(1, round(mid * HALF_SPREAD_BP / 10_000))


def ticks_to_text(ticks: int) -> str:
    return f"{ticks // TICKS}.{ticks % TICKS:04d}"


def text_to_ticks(text: str) -> int:
    units, _, fraction = str(text).partition(".")
    return int(units) * TICKS + int((fraction + "0000")[:4])


def step_price(mid: int, reference: int, volatility: float, rng: random.Random) -> int:
    """One step of the walk: mean reversion plus a Gaussian shock, kept within the bounds (ticks)."""
    drift = REVERSION * (reference - mid)
    shock = rng.gauss(0.0, STEP_VOL_SHARE * volatility * mid)
    low, high = (round(reference * bound) for bound in PRICE_BOUNDS)
    return min(high, max(low, round(mid + drift + shock)))


class Generator(ScenarioGenerator):
    name = "finance"
    regular_kind = "trade"
    burst_kind = "algo_trade"
    slow_change_kind = "price_tick"
    burst_label = "algorithmic burst"
    slow_change_label = "price tick"

    def __init__(self, seed: int):
        super().__init__(seed)
        self._account_rng = self.stream("trade-account")
        self._instrument_rng = self.stream("trade-instrument")
        self._side_rng = self.stream("trade-side")
        self._units_rng = self.stream("trade-units")
        self._burst_rng = self.stream("algo")
        self._walk_rng = self.stream("price-walk")
        self.accounts: list[int] = []
        self.quotes: list[Quote] = []

    # -- lookups ---------------------------------------------------------------------------------------
    def load(self, conn: psycopg.Connection) -> None:
        try:
            with conn.cursor() as cur:
                accounts = [row[0] for row in cur.execute("SELECT id FROM accounts ORDER BY id")]
                quotes = cur.execute(
                    "SELECT i.id, i.reference_price::text, i.volatility::float8, mp.mid::text"
                    " FROM instruments i JOIN market_prices mp ON mp.instrument_id = i.id ORDER BY i.id"
                ).fetchall()
        except (psycopg.errors.UndefinedTable, psycopg.errors.InsufficientPrivilege) as exc:
            conn.rollback()
            raise LookupsNotReady(str(exc).splitlines()[0]) from None
        conn.rollback()
        self.set_lookups(accounts, [(i, text_to_ticks(r), v, text_to_ticks(m)) for i, r, v, m in quotes])

    def set_lookups(self, accounts: Sequence[int], quotes: Sequence[tuple[int, int, float, int]]) -> None:
        """accounts: ids; quotes: (instrument_id, reference ticks, daily volatility, mid ticks)."""
        if not accounts or not quotes:
            raise LookupsNotReady("accounts, instruments and market_prices hold no rows yet")
        self.accounts = list(accounts)
        self.quotes = [Quote(*q) for q in quotes]
        self._by_id = {q.instrument_id: q for q in self.quotes}
        popularity = self.stream("popularity")
        ranked = popularity.sample(range(len(self.quotes)), len(self.quotes))
        weights = [0.0] * len(self.quotes)
        for rank, index in enumerate(ranked):
            weights[index] = 1 / (rank + 5)
        self._instrument_cum = list(itertools.accumulate(weights))

    # -- events ----------------------------------------------------------------------------------------
    def regular(self, n: int) -> list[Rows]:
        if n <= 0:
            return []
        accounts = self._account_rng.choices(self.accounts, k=n)
        quotes = self._instrument_rng.choices(self.quotes, cum_weights=self._instrument_cum, k=n)
        rows = []
        for account, quote in zip(accounts, quotes, strict=True):
            buy = self._side_rng.random() < BUY_SHARE
            units = self._units_rng.randint(*TRADE_UNITS)
            rows.append(
                (account, quote.instrument_id, units if buy else -units, ticks_to_text(quote.ask if buy else quote.bid))
            )
        return [Rows(self.regular_kind, TRADES, rows)]

    def burst(self) -> list[Rows]:
        rng = self._burst_rng
        account, quote = rng.choice(self.accounts), rng.choice(self.quotes)
        buy = rng.random() < BUY_SHARE
        fills = rng.randint(*BURST_FILLS)
        rows = []
        for k in range(fills):
            units = rng.randint(*BURST_UNITS)
            price = quote.ask + k if buy else max(1, quote.bid - k)
            rows.append((account, quote.instrument_id, units if buy else -units, ticks_to_text(price)))
        note = {"account_id": account, "instrument_id": quote.instrument_id, "side": "buy" if buy else "sell"}
        return [Rows(self.burst_kind, TRADES, rows, note=note)]

    def slow_change(self) -> list[Rows]:
        quote = self._walk_rng.choice(self.quotes)
        mid = step_price(quote.mid, quote.reference, quote.volatility, self._walk_rng)
        spread = half_spread(mid)
        row = (ticks_to_text(mid - spread), ticks_to_text(mid + spread), quote.instrument_id)
        return [Rows(self.slow_change_kind, QUOTES, [row], note={"instrument_id": quote.instrument_id})]

    def committed(self, parts: Sequence[Rows]) -> None:
        for part in parts:
            if part.target is QUOTES:
                for bid, ask, instrument_id in part.rows:
                    self._by_id[instrument_id].mid = (text_to_ticks(bid) + text_to_ticks(ask)) // 2

    # -- helpers for tests -----------------------------------------------------------------------------
    def quote(self, instrument_id: int) -> Quote:
        return self._by_id[instrument_id]


__all__ = ["QUOTES", "TRADES", "Generator", "Quote", "half_spread", "step_price", "ticks_to_text"]
