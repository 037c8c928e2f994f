"""Many breached positions: batches liquidate in parallel threads, each position once."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db.models import Count

from accounts.models import LedgerTransaction, TradingAccount
from liquidation import engine, settlement
from liquidation.models import LiquidationEvent, PriceFeed
from positions.models import Position
from tests.engine.helpers import open_position, set_price
from tests.factories import make_classroom, make_instrument, make_student
from tests.invariants import assert_ledger_invariants


@pytest.mark.django_db(transaction=True)
def test_parallel_batches_liquidate_each_breached_position_once(monkeypatch):
    monkeypatch.setattr(engine, "BATCH_SIZE", 3)
    classroom = make_classroom(name="Busy", max_leverage=100, insurance_fund_seed=Decimal(100))
    btc = make_instrument(classroom)
    PriceFeed.objects.create(instrument=btc, kind=PriceFeed.Kind.MANUAL)
    accounts = [make_student(classroom) for _ in range(4)]
    breached = {open_position(accounts[i % 4], btc, "long", "0.01", 50).pk for i in range(10)}
    # Two of them gap past BP (50x from 61,000), so the fund is locked and paid from.
    set_price(btc, "61000")
    breached |= {open_position(accounts[i], btc, "long", "0.01", 50).pk for i in range(2)}
    safe = {open_position(accounts[i], btc, "long", "0.01", 5).pk for i in range(4)}
    balances = dict(TradingAccount.objects.values_list("pk", "balance"))

    result = set_price(btc, "59000")

    assert set(result.liquidated) == breached
    assert set(LiquidationEvent.objects.values_list("position_id", flat=True)) == breached
    counts = LedgerTransaction.objects.filter(kind="liquidation").values("position_id")
    assert all(row["n"] == 1 for row in counts.annotate(n=Count("id")))
    assert set(Position.objects.filter(status="open").values_list("pk", flat=True)) == safe
    assert dict(TradingAccount.objects.values_list("pk", "balance")) == balances
    assert LiquidationEvent.objects.filter(shortfall__gt=0).count() == 2
    assert settlement.BATCH_THREADS == 2
    assert_ledger_invariants()
