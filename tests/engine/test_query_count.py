"""The number of queries of a tick does not grow with the number of positions."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from liquidation.models import LiquidationEvent, PriceFeed, Scenario
from liquidation.services import scenario_start
from tests.engine.helpers import open_position, tick
from tests.factories import make_classroom, make_instrument, make_student
from tests.invariants import assert_ledger_invariants

pytestmark = pytest.mark.django_db


def _market(n: int, leverage: int):
    classroom = make_classroom(name=f"Class of {n}", max_leverage=100)
    btc = make_instrument(classroom)
    accounts = [make_student(classroom) for _ in range(5)]
    for i in range(n):
        open_position(accounts[i % 5], btc, "long" if i % 2 else "short", "0.001", leverage)
    PriceFeed.objects.create(instrument=btc, kind=PriceFeed.Kind.MANUAL)
    return btc


def _queries_of_a_tick(btc, price: str | None = None) -> int:
    if price is not None:
        scenario_start(instrument_id=btc.pk, kind=Scenario.Kind.SET_PRICE, target_price=price)
    PriceFeed.objects.filter(instrument=btc).update(last_tick_at=None)
    with CaptureQueriesContext(connection) as ctx:
        result = tick(btc)
    assert result.status == "ticked"
    return len(ctx.captured_queries)


def test_a_quiet_tick_costs_the_same_with_10_or_200_open_positions():
    small, large = _market(10, 5), _market(200, 5)
    assert _queries_of_a_tick(small) == _queries_of_a_tick(large)


def test_liquidating_10_or_200_positions_costs_the_same_number_of_queries():
    small, large = _market(10, 100), _market(200, 100)
    # Longs breach on a fall (LP about 59,640, BP 59,400: no gap, no ADL); shorts are untouched.
    counts = [_queries_of_a_tick(market, "59500") for market in (small, large)]
    assert LiquidationEvent.objects.filter(position__instrument=small).count() == 5
    assert LiquidationEvent.objects.filter(position__instrument=large).count() == 100
    assert counts[0] == counts[1]
    assert all(e.collateral_lost > Decimal(0) for e in LiquidationEvent.objects.all())
    assert_ledger_invariants()
