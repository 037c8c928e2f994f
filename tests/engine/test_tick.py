"""The tick of one instrument, called as a function: marks, liquidations, safety."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from accounts.models import ClassroomPocket, LedgerTransaction, TradingAccount
from liquidation import engine
from liquidation.models import EngineHeartbeat, LiquidationEvent, PriceFeed, PriceTick
from positions.models import Collateral, Fill, Position
from tests.engine.helpers import open_position, set_price, tick
from tests.invariants import assert_ledger_invariants

pytestmark = pytest.mark.django_db


def test_tick_publishes_the_next_mark_and_stores_it_as_history(btc):
    PriceFeed.objects.create(
        instrument=btc, kind=PriceFeed.Kind.SIMULATED, seed=7, volatility="0.01"
    )
    result = tick(btc)
    btc.refresh_from_db()
    assert result.status == "ticked"
    assert btc.mark_price == result.mark != Decimal("60000")
    assert btc.mark_price % btc.tick_size == 0
    assert list(PriceTick.objects.filter(instrument=btc).values_list("price", flat=True)) == [
        btc.mark_price
    ]
    beat = EngineHeartbeat.objects.get(instrument=btc)
    assert beat.finished_at is not None and beat.mark_price == btc.mark_price


def test_crash_liquidates_exactly_the_breached_positions(btc, account, other_account):
    risky = open_position(account, btc, "long", "0.1", 50)
    safe = open_position(account, btc, "long", "0.1", 5)
    short = open_position(other_account, btc, "short", "0.1", 50)
    balances = dict(TradingAccount.objects.values_list("pk", "balance"))
    assert risky.liquidation_price is not None
    result = set_price(btc, risky.liquidation_price - Decimal("0.1"))
    assert result.liquidated == [risky.pk]
    statuses = dict(Position.objects.values_list("pk", "status"))
    assert statuses == {risky.pk: "liquidated", safe.pk: "open", short.pk: "open"}
    # The free balances are untouched; the collateral is the whole loss.
    assert dict(TradingAccount.objects.values_list("pk", "balance")) == balances
    event = LiquidationEvent.objects.get(position=risky)
    assert event.collateral_lost == Decimal(risky.collateral.amount)
    assert event.free_balance_before == balances[account.pk]
    assert Collateral.objects.get(pk=risky.pk).amount == 0
    assert Fill.objects.filter(position=risky, kind="liquidation").count() == 1
    assert LedgerTransaction.objects.filter(position_id=risky.pk, kind="liquidation").count() == 1
    assert_ledger_invariants()
    # A second tick at the same price finds nothing more to do.
    again = set_price(btc, risky.liquidation_price - Decimal("0.1"))
    assert again.liquidated == []
    assert LiquidationEvent.objects.count() == 1


def test_leftover_and_fee_go_to_the_insurance_fund(classroom, btc, account):
    classroom.liquidation_fee_rate = Decimal("0.001")
    classroom.save()
    position = open_position(account, btc, "long", "0.1", 50)
    collateral = position.collateral.amount
    fund_before = ClassroomPocket.objects.get(classroom=btc.classroom, kind="insurance").balance
    set_price(btc, position.liquidation_price)
    event = LiquidationEvent.objects.get(position=position)
    fund_after = ClassroomPocket.objects.get(classroom=btc.classroom, kind="insurance").balance
    assert event.shortfall == 0 and event.leftover > 0 and event.liquidation_fee > 0
    assert fund_after - fund_before == event.leftover + event.liquidation_fee
    assert event.collateral_lost == collateral
    assert_ledger_invariants()


def test_return_to_trader_policy_returns_the_leftover_minus_the_fee(classroom, btc, account):
    classroom.leftover_policy = "return_to_trader"
    classroom.liquidation_fee_rate = Decimal("0.001")
    classroom.save()
    position = open_position(account, btc, "long", "0.1", 50)
    before = TradingAccount.objects.get(pk=account.pk).balance
    set_price(btc, position.liquidation_price)
    event = LiquidationEvent.objects.get(position=position)
    assert event.returned_to_trader == event.leftover > 0
    assert TradingAccount.objects.get(pk=account.pk).balance == before + event.leftover
    assert_ledger_invariants()


def test_a_redelivered_tick_of_the_same_slot_moves_the_price_once(btc):
    PriceFeed.objects.create(
        instrument=btc, kind=PriceFeed.Kind.SIMULATED, seed=3, volatility="0.01"
    )
    scheduled = timezone.now()
    first = engine.tick_instrument(btc.pk, scheduled)
    second = engine.tick_instrument(btc.pk, scheduled)
    assert (first.status, second.status) == ("ticked", "resumed")
    assert second.mark == first.mark
    assert PriceTick.objects.filter(instrument=btc).count() == 1
    assert PriceFeed.objects.get(instrument=btc).step == 1


def test_a_stale_tick_does_nothing(btc):
    PriceFeed.objects.create(
        instrument=btc, kind=PriceFeed.Kind.SIMULATED, seed=3, volatility="0.01"
    )
    result = engine.tick_instrument(btc.pk, timezone.now() - timedelta(seconds=5))
    assert result.status == "stale"
    assert not PriceTick.objects.exists()
    assert not EngineHeartbeat.objects.exists()


def test_an_older_slot_never_overrides_a_newer_one(btc):
    PriceFeed.objects.create(instrument=btc, kind=PriceFeed.Kind.SIMULATED, seed=3)
    now = timezone.now()
    assert engine.tick_instrument(btc.pk, now).status == "ticked"
    late = engine.tick_instrument(
        btc.pk, now - timedelta(seconds=float(engine.tick_seconds()) * 0.5)
    )
    assert late.status in {"superseded", "resumed"}
    assert PriceTick.objects.count() == 1


def test_simulated_walk_is_reproducible_from_its_seed(classroom):
    from tests.factories import make_instrument

    paths = []
    for symbol in ("AAAUSDT", "BBBUSDT"):
        instrument = make_instrument(classroom, symbol=symbol)
        PriceFeed.objects.create(
            instrument=instrument, kind="simulated", seed=42, volatility="0.01"
        )
        path = []
        for _ in range(5):
            PriceFeed.objects.filter(instrument=instrument).update(last_tick_at=None)
            path.append(tick(instrument).mark)
        paths.append(path)
    assert paths[0] == paths[1]
    assert len(set(paths[0])) > 1


def test_history_is_thinned_to_one_tick_a_minute_and_bounded(btc):
    from liquidation.engine import history_prune

    now = timezone.now().replace(second=30, microsecond=0)
    recent = [now - timedelta(seconds=s) for s in (1, 2, 3)]
    old_minute = now - timedelta(hours=2)
    old = [old_minute.replace(second=s) for s in (1, 20, 40)]
    ancient = now - timedelta(days=8)
    for moment in [*recent, *old, ancient]:
        PriceTick.objects.create(instrument=btc, price=Decimal(60000), created_at=moment)
    EngineHeartbeat.objects.create(instrument=btc, started_at=now - timedelta(hours=2))
    EngineHeartbeat.objects.create(instrument=btc, started_at=now)

    history_prune(now)

    kept = set(PriceTick.objects.values_list("created_at", flat=True))
    assert kept == {*recent, old[0]}
    assert list(EngineHeartbeat.objects.values_list("started_at", flat=True)) == [now]
