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


@pytest.mark.django_db(transaction=True)
def test_a_gap_liquidation_and_a_shortfall_close_never_deadlock():
    """Both take the insurance fund before the house (POCKET_LOCK_ORDER).

    A third transaction holds the house while the tick's gap batch and a close past the
    bankruptcy price of another position (an instructor's reset) queue behind it. Were the batch to hold
    the house while waiting for the fund (or the close the other way round), PostgreSQL
    would abort one of them with "deadlock detected" once the house is released.
    """
    import threading

    from django.db import connections, transaction

    from accounts.models import ClassroomPocket
    from positions.services import position_close
    from tests.processes import wait_until, waiting_on_locks

    classroom = make_classroom(name="Gaps", max_leverage=100, insurance_fund_seed=Decimal(5000))
    btc = make_instrument(classroom)
    eth = make_instrument(classroom, symbol="ETHUSDT", mark="3000")
    PriceFeed.objects.create(instrument=btc, kind=PriceFeed.Kind.MANUAL)
    alice, bob = make_student(classroom), make_student(classroom)
    gapped = open_position(alice, btc, "long", "0.1", 50)
    closing = open_position(bob, eth, "long", "1", 20)
    # ETH far past its bankruptcy price (2,850), without a tick: a reset closes it.
    eth.mark_price = Decimal(2500)
    eth.save(update_fields=["mark_price"])

    house_held, release_house = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def run(target) -> None:
        try:
            target()
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    def hold_house() -> None:
        with transaction.atomic():
            ClassroomPocket.objects.select_for_update().get(classroom=classroom, kind="house")
            house_held.set()
            assert release_house.wait(timeout=60)

    holder = threading.Thread(target=run, args=(hold_house,))
    holder.start()
    assert house_held.wait(timeout=30)
    ticker = threading.Thread(target=run, args=(lambda: set_price(btc, "50000"),))
    ticker.start()
    wait_until(lambda: waiting_on_locks() >= 1, timeout=30, message="the gap batch queueing")
    closer = threading.Thread(
        target=run, args=(lambda: position_close(position_id=closing.pk, past_liquidation_ok=True),)
    )
    closer.start()
    wait_until(lambda: waiting_on_locks() >= 2, timeout=30, message="the close queueing")
    release_house.set()
    for thread in (holder, ticker, closer):
        thread.join(timeout=60)

    assert not errors, errors
    assert Position.objects.get(pk=gapped.pk).status == "liquidated"
    assert Position.objects.get(pk=closing.pk).status == "closed"
    assert LiquidationEvent.objects.get(position_id=gapped.pk).shortfall > 0
    assert_ledger_invariants()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("batch_size", "poisoned_index"),
    [
        (10, 2),  # among others in its batch
        (5, 5),  # breached rows go in id order: the last one is a batch of its own
    ],
)
def test_a_position_the_database_cannot_settle_holds_back_no_other(
    monkeypatch, batch_size, poisoned_index
):
    """Isolation holds in the engine too: one breached position whose settlement the database
    refuses (its loss is beyond what a money column holds) fails alone, and the rest is
    liquidated and counted on the same tick, also when the failing one is a batch of its own."""
    monkeypatch.setattr(engine, "BATCH_SIZE", batch_size)
    classroom = make_classroom(name="Poisoned", max_leverage=100, insurance_fund_seed=Decimal(100))
    btc = make_instrument(classroom)
    PriceFeed.objects.create(instrument=btc, kind=PriceFeed.Kind.MANUAL)
    accounts = [make_student(classroom) for _ in range(3)]
    positions = [open_position(a, btc, "long", "0.01", 50).pk for a in accounts for _ in range(2)]
    poisoned = sorted(positions)[poisoned_index]
    # A size no order can open, as a database edit could leave it: losing 5,000 a unit on
    # 10^15 units is beyond the 16 digits before the point of every money column.
    Position.objects.filter(pk=poisoned).update(
        quantity=Decimal("1E15"), opened_quantity=Decimal("1E15")
    )

    result = set_price(btc, "55000")

    assert set(result.liquidated) == set(positions) - {poisoned}
    assert Position.objects.get(pk=poisoned).status == "open"  # tried again on the next tick
    assert any(f"liquidation of position {poisoned}" in e for e in result.errors), result.errors
    assert not LiquidationEvent.objects.filter(position_id=poisoned).exists()
    assert_ledger_invariants()
