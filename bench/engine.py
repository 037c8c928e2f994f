"""Engine benchmarks: (a) a quiet tick as open positions grow, (b) a crash of 20% of 100k.

Positions are seeded with set-based SQL (``INSERT ... SELECT generate_series``); their
stored liquidation and bankruptcy prices use the first-tier form of ``positions.margin``
(every seeded notional sits in the first bracket). Seeded positions carry no opening
ledger entries: the benchmark measures the engine, not the ledger's history.
"""

from __future__ import annotations

import statistics
import time
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.db import connection
from django.utils import timezone

from accounts.services import classroom_create
from liquidation import engine
from liquidation.models import LiquidationEvent, PriceFeed, Scenario
from liquidation.services import scenario_start
from positions.margin import tiers_from_table
from positions.models import Instrument, MarginTier

QUIET_SIZES = (10_000, 100_000, 1_000_000)
CRASH_SIZE = 100_000
CRASH_SHARE = 0.2
ACCOUNTS = 2_000
TICKS = 30
BRACKETS = [
    (Decimal(0), Decimal(50_000), Decimal("0.004"), 125),
    (Decimal(50_000), Decimal(600_000), Decimal("0.005"), 100),
    (Decimal(600_000), None, Decimal("0.01"), 50),
]


def _market(name: str) -> tuple[int, int]:
    """A classroom with funded accounts (seeded in SQL) and one instrument at 60,000."""
    from accounts.models import User

    teacher, _ = User.objects.get_or_create(username="bench-teacher", defaults={"is_staff": True})
    classroom = classroom_create(
        instructor_id=teacher.pk, name=name, max_leverage=100, insurance_fund_seed=Decimal(10**6)
    )
    instrument = Instrument.objects.create(
        classroom=classroom, symbol="BTCUSDT", mark_price=Decimal(60000), tick_size=Decimal("0.1")
    )
    for tier in tiers_from_table(BRACKETS):
        MarginTier.objects.create(
            instrument=instrument, notional_floor=tier.notional_floor,
            notional_cap=tier.notional_cap, mmr=tier.mmr, cum=tier.cum,
            max_leverage=tier.max_leverage,
        )  # fmt: skip
    PriceFeed.objects.create(instrument=instrument, kind=PriceFeed.Kind.MANUAL)
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO accounts_user (password, is_superuser, username, first_name, last_name,
                                       email, is_staff, is_active, date_joined)
            SELECT '!', false, %s || '-' || g, '', '', '', false, true, now()
            FROM generate_series(1, %s) g
            """,
            [name, ACCOUNTS],
        )
        cursor.execute(
            """
            INSERT INTO accounts_tradingaccount (classroom_id, user_id, balance, trading_frozen, created_at)
            SELECT %s, id, 10000, false, now() FROM accounts_user WHERE username LIKE %s || '-%%'
            """,
            [classroom.pk, name],
        )
    return classroom.pk, instrument.pk


def _seed_positions(
    classroom_id: int, instrument_id: int, count: int, *, breach_share: float = 0.0
) -> None:
    """``count`` open positions of 0.01; a share of them longs at 50x from 60,000 (LP ~59,040)."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            WITH accounts AS (
                SELECT array_agg(id ORDER BY id) AS ids FROM accounts_tradingaccount WHERE classroom_id = %(classroom)s
            ), raw AS (
                SELECT g,
                       CASE WHEN random() < %(breach)s THEN 'breach'
                            WHEN g %% 2 = 0 THEN 'long' ELSE 'short' END AS kind,
                       random() AS r, 2 + floor(random() * 49)::int AS lev
                FROM generate_series(1, %(count)s) g
            ), shaped AS (
                SELECT g,
                       CASE WHEN kind = 'short' THEN 'short' ELSE 'long' END AS side,
                       CASE kind WHEN 'breach' THEN 60000
                                 WHEN 'long' THEN round((55000 + r * 5000)::numeric, 1)
                                 ELSE round((60000 + r * 5000)::numeric, 1) END AS ep,
                       CASE WHEN kind = 'breach' THEN 50 ELSE lev END AS lev
                FROM raw
            ), priced AS (
                SELECT g, side, ep, lev, 0.01::numeric AS q, round(0.01 * ep / lev, 8) AS wb FROM shaped
            )
            INSERT INTO positions_position (account_id, instrument_id, side, quantity, opened_quantity,
                entry_price, leverage, status, opened_at, liquidation_price, bankruptcy_price,
                realized_pnl, fees_paid, margin_call_active)
            SELECT (SELECT ids[1 + (g %% array_length(ids, 1))] FROM accounts), %(instrument)s, side, q, q,
                   ep, lev, 'open', now(),
                   CASE WHEN side = 'long' THEN ceil((wb - q * ep) / (q * 0.004 - q) * 1e10) / 1e10
                        ELSE floor((wb + q * ep) / (q * 0.004 + q) * 1e10) / 1e10 END,
                   CASE WHEN side = 'long' THEN ep - wb / q ELSE ep + wb / q END,
                   0, 0, false
            FROM priced
            """,
            {
                "classroom": classroom_id,
                "instrument": instrument_id,
                "count": count,
                "breach": breach_share,
            },
        )
        cursor.execute(
            """
            INSERT INTO positions_collateral (position_id, amount, initial_margin)
            SELECT p.id, round(p.quantity * p.entry_price / p.leverage, 8), round(p.quantity * p.entry_price / p.leverage, 8)
            FROM positions_position p LEFT JOIN positions_collateral c ON c.position_id = p.id
            WHERE p.instrument_id = %s AND c.position_id IS NULL
            """,
            [instrument_id],
        )
        cursor.execute("ANALYZE positions_position")
        cursor.execute("ANALYZE positions_collateral")
        cursor.execute("ANALYZE accounts_tradingaccount")


def _quiet_tick_ms(instrument_id: int) -> tuple[float, float]:
    times = []
    for _ in range(TICKS):
        PriceFeed.objects.filter(instrument_id=instrument_id).update(last_tick_at=None)
        started = time.perf_counter()
        result = engine.tick_instrument(instrument_id, timezone.now())
        times.append((time.perf_counter() - started) * 1000)
        assert result.status == "ticked" and not result.liquidated, result
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.95) - 1]


def run() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    classroom_id, instrument_id = _market("quiet")
    seeded = 0
    for size in QUIET_SIZES:
        _seed_positions(classroom_id, instrument_id, size - seeded)
        seeded = size
        median, p95 = _quiet_tick_ms(instrument_id)
        rows.append({
            "benchmark": "quiet tick (median)", "size": size, "value": median, "unit": "ms",
            "goal": "< 50 ms at 1M, flat", "ok": median < 50, "note": f"p95 {p95:.1f} ms",
        })  # fmt: skip

    classroom_id, instrument_id = _market("crash")
    _seed_positions(classroom_id, instrument_id, CRASH_SIZE, breach_share=CRASH_SHARE)
    scenario_start(instrument_id=instrument_id, kind=Scenario.Kind.SET_PRICE, target_price="59000")
    PriceFeed.objects.filter(instrument_id=instrument_id).update(last_tick_at=None)
    started = time.perf_counter()
    result = engine.tick_instrument(instrument_id, timezone.now() - timedelta(seconds=0))
    wall = time.perf_counter() - started
    liquidated = LiquidationEvent.objects.filter(position__instrument_id=instrument_id).count()
    assert liquidated == len(result.liquidated)
    rate = liquidated / wall if wall else 0.0
    rows.append({
        "benchmark": "crash tick wall time", "size": CRASH_SIZE, "value": wall, "unit": "s",
        "note": f"{liquidated:,} liquidated ({liquidated / CRASH_SIZE:.0%})",
    })  # fmt: skip
    rows.append({
        "benchmark": "crash liquidations/s", "size": liquidated, "value": rate, "unit": "/s",
        "goal": ">= 5,000/s", "ok": rate >= 5000,
    })  # fmt: skip
    return rows
