"""An instructor changes an instrument's margin tiers while a student opens a position on it.

An open position keeps the liquidation price the tiers gave it when it opened, so the
change must either see the new position (and be refused) or the opening must read the new
tiers: never may a position open with the old tiers while the new ones are saved.

Each race holds a row that one racer needs in a third transaction, so that the two meet in
the order the test is about, then lets both run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from decimal import Decimal

import pytest
from django.db import transaction
from django.db.models import Model
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts.models import ClassroomPocket, TradingAccount
from liquidation import engine
from positions.models import Instrument, MarginTier, Order, Position
from positions.services import order_place, position_open, stored_prices
from tests.admin.forms import admin_form_data
from tests.admin.test_edits_during_ticks import Race, hold_row
from tests.factories import make_student
from tests.invariants import assert_ledger_invariants
from tests.processes import wait_until, waiting_on_locks

D = Decimal

pytestmark = pytest.mark.django_db(transaction=True)

OLD_MMR, NEW_MMR = D("0.004"), D("0.0045")  # of the first tier, where 0.01 BTC opens


@pytest.fixture
def student_market(market):
    _, btc, client = market
    return btc, make_student(btc.classroom), client


def market_order(
    account: TradingAccount, btc: Instrument, client_order_id: str = ""
) -> Callable[[], object]:
    return lambda: order_place(
        account_id=account.pk,
        owner_id=account.user_id,
        symbol="btcusdt",
        side="long",
        quantity="0.01",
        leverage=10,
        client_order_id=client_order_id,
    )


def service_open(account: TradingAccount, btc: Instrument) -> Callable[[], object]:
    return lambda: position_open(
        account_id=account.pk, instrument_id=btc.pk, side="long", quantity="0.01", leverage=10
    )


def triggered_limit(account: TradingAccount, btc: Instrument) -> Callable[[], object]:
    """The engine filling a buy limit that the mark has come down to."""
    order = order_place(
        account_id=account.pk,
        instrument_id=btc.pk,
        side="long",
        type="limit",
        price="59000",
        quantity="0.01",
        leverage=10,
    )
    Instrument.objects.filter(pk=btc.pk).update(mark_price=D(58900))
    return lambda: engine.execute_triggered_order(order.pk)


OPENERS = pytest.mark.parametrize("opener", [market_order, service_open, triggered_limit])


def tier_change(btc: Instrument, client: Client) -> Callable[[], int]:
    page = reverse("admin:positions_instrument_change", args=[btc.pk])
    data = admin_form_data(client.get(page))
    assert data["tiers-0-mmr"] == str(OLD_MMR)
    data["tiers-0-mmr"] = str(NEW_MMR)

    def save() -> int:
        response = client.post(page, data)
        refused = b"1 open position(s) use these tiers" in response.content
        assert response.status_code == (200 if refused else 302)
        return response.status_code

    return save


def first_tier_mmr(btc: Instrument) -> Decimal:
    return MarginTier.objects.filter(instrument=btc).order_by("notional_floor")[0].mmr


def assert_priced_by_the_tiers_stored(btc: Instrument, *, positions: int) -> None:
    """Every open position's liquidation price is the one the instrument's tiers give now."""
    tiers = Instrument.objects.get(pk=btc.pk).margin_tiers()
    open_ones = Position.objects.filter(instrument=btc, status=Position.Status.OPEN)
    assert open_ones.count() == positions
    for position in open_ones.select_related("collateral"):
        lp, _ = stored_prices(
            side=position.side,
            entry_price=position.entry_price,
            quantity=position.quantity,
            collateral=position.collateral.amount,
            tiers=tiers,
        )
        assert position.liquidation_price == lp


def second_waits_for_first(
    held_row: tuple[type[Model], int], first: Callable[[], object], second: Callable[[], object]
) -> bool:
    """Run ``first`` until it queues for the held row, then ``second``; let both finish.
    Whether ``second`` waited (for ``first``) rather than finishing meanwhile."""
    held, release = threading.Event(), threading.Event()
    finished: list[object] = []
    race = Race()
    race.start(hold_row(*held_row, held, release))
    assert held.wait(timeout=30)
    race.start(first)
    wait_until(lambda: waiting_on_locks() >= 1, timeout=30, message="the first racer queueing")
    race.start(lambda: finished.append(second()))
    wait_until(lambda: finished or waiting_on_locks() >= 2, timeout=30, message="the second")
    waited = not finished
    release.set()
    race.join()
    return waited


@OPENERS
def test_a_tier_change_waits_for_a_position_opening_and_is_refused(student_market, opener):
    btc, account, client = student_market
    open_one, save = opener(account, btc), tier_change(btc, client)
    fees = ClassroomPocket.objects.get(classroom=btc.classroom, kind="fees")
    saved: list[int] = []

    # The opening reads the tiers, then queues to post its fee.
    waited = second_waits_for_first(
        (ClassroomPocket, fees.pk), open_one, lambda: saved.append(save())
    )

    assert waited, "the tier change did not wait for the opening"
    assert saved == [200]
    assert first_tier_mmr(btc) == OLD_MMR
    assert_priced_by_the_tiers_stored(btc, positions=1)
    assert_ledger_invariants()


@OPENERS
def test_a_position_opening_during_a_tier_change_waits_and_takes_the_new_tiers(
    student_market, opener
):
    btc, account, client = student_market
    open_one, save = opener(account, btc), tier_change(btc, client)
    first_tier = MarginTier.objects.filter(instrument=btc).order_by("notional_floor")[0]
    saved: list[int] = []

    # The tier change counts no open position, then queues to write the first tier.
    waited = second_waits_for_first(
        (MarginTier, first_tier.pk), lambda: saved.append(save()), open_one
    )

    assert waited, "the opening did not wait for the tier change"
    assert saved == [302]
    assert first_tier_mmr(btc) == NEW_MMR
    assert_priced_by_the_tiers_stored(btc, positions=1)
    assert_ledger_invariants()


def test_openings_on_one_instrument_and_its_tick_do_not_wait_for_each_other(student_market):
    btc, first, _ = student_market
    second = make_student(btc.classroom)
    held, release = threading.Event(), threading.Event()
    done: list[str] = []

    def take_the_client_order_id() -> None:
        # Uncommitted, it makes the first opening queue on inserting its order, after it
        # has read the tiers and while it holds the instrument against a tier change.
        with transaction.atomic():
            Order.objects.create(
                account=first,
                instrument=btc,
                side="long",
                quantity=D("0.01"),
                status=Order.Status.CANCELLED,
                client_order_id="bot-1",
            )
            held.set()
            assert release.wait(timeout=60)
            transaction.set_rollback(True)

    def open_for(account: TradingAccount, client_order_id: str) -> Callable[[], None]:
        place = market_order(account, btc, client_order_id)

        def place_and_note() -> None:
            place()
            done.append(client_order_id)

        return place_and_note

    race = Race()
    race.start(take_the_client_order_id)
    assert held.wait(timeout=30)
    race.start(open_for(first, "bot-1"))
    wait_until(lambda: waiting_on_locks() >= 1, timeout=30, message="the first opening queueing")
    race.start(open_for(second, "bot-2"))
    race.start(lambda: done.append(engine.tick_instrument(btc.pk, timezone.now()).status))
    try:
        finished_meanwhile = wait_until(
            lambda: sorted(done) if len(done) >= 2 else None,
            timeout=30,
            message="the second opening and the tick",
        )
    finally:
        release.set()
        race.join()

    assert finished_meanwhile == ["bot-2", "ticked"]  # while the first opening waited
    assert done[-1] == "bot-1"
    assert_priced_by_the_tiers_stored(btc, positions=2)
    assert_ledger_invariants()
