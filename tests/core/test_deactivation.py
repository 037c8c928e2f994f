"""A student whose user is deactivated opens nothing more: their resting orders that would open
a position are cancelled, and the engine never fills one; their open positions stay
ring-fenced, protected by their stop-loss, take-profit, reduce-only orders and liquidation."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest
from django.db import connections, transaction

from accounts.errors import AccountFrozen
from accounts.models import LedgerEntry, LedgerTransaction, User
from accounts.services import classroom_join, lock_accounts
from liquidation.engine import execute_triggered_order
from liquidation.instructor import user_set_active
from liquidation.models import LiquidationEvent
from positions.models import Order, Position
from positions.services import order_place, position_close, position_open
from tests.core.test_concurrency import simultaneously
from tests.engine.helpers import set_price
from tests.factories import make_classroom, make_instrument, make_student
from tests.invariants import assert_ledger_invariants
from tests.processes import wait_until, waiting_on_locks

D = Decimal
REASON = "Cancelled: the student's account was deactivated"
HOLD = D("592.95")  # a buy of 0.1 limited at 59,000, 10x: 590 margin and a 2.95 fee


def limit_buy(account, btc, price: str = "59000", **kwargs) -> Order:
    return order_place(
        account_id=account.pk, instrument_id=btc.pk, side="long", type="limit",
        quantity="0.1", leverage=10, price=price, **kwargs,
    )  # fmt: skip


def stop_sell(account, btc, stop_price: str = "58000") -> Order:
    return order_place(
        account_id=account.pk, instrument_id=btc.pk, side="short", type="stop",
        quantity="0.1", leverage=10, stop_price=stop_price,
    )  # fmt: skip


def reduce_only_stop(position: Position, stop_price: str) -> Order:
    return order_place(
        account_id=position.account_id, instrument_id=position.instrument_id, side="short",
        type="stop", quantity=str(position.quantity), stop_price=stop_price, reduce_only=True,
        position_id=position.pk,
    )  # fmt: skip


def balance(account) -> Decimal:
    account.refresh_from_db()
    return account.balance


def deactivate(account) -> list[int]:
    return user_set_active(user_id=account.user_id, active=False).cancelled


@pytest.mark.django_db
def test_deactivating_a_student_cancels_their_opening_orders_and_gives_their_holds_back(
    btc, account, other_account
):
    position = position_open(
        account_id=account.pk, instrument_id=btc.pk, side="long", quantity="0.1", leverage=10,
        take_profit="66000", stop_loss="57000",
    )  # fmt: skip
    protective = reduce_only_stop(position, "57500")
    buy, sell = limit_buy(account, btc), stop_sell(account, btc)
    classmate_buy = limit_buy(other_account, btc)
    # 603 for the position (600 margin, 3 fee), 592.95 and 582.9 held by the two orders.
    assert balance(account) == D(10000) - D(603) - HOLD - D("582.9")

    assert deactivate(account) == [buy.pk, sell.pk]

    assert not User.objects.get(pk=account.user_id).is_active
    assert balance(account) == D(10000) - D(603)
    for order, held in ((buy, HOLD), (sell, D("582.9"))):
        order.refresh_from_db()
        assert (order.status, order.reject_reason, order.held_margin) == ("cancelled", REASON, 0)
        release = LedgerEntry.objects.get(pocket="order", order_id=order.pk, amount__lt=0)
        assert release.amount == -held
        assert release.transaction.memo.endswith(
            "(cancelled: the student's account was deactivated)"
        )
    # The position is ring-fenced as it was: its levels and its reduce-only stop stay.
    position.refresh_from_db()
    assert (position.status, position.take_profit, position.stop_loss) == (
        "open", D(66000), D(57000),
    )  # fmt: skip
    assert Order.objects.get(pk=protective.pk).status == "resting"
    # Nobody else's orders move.
    assert Order.objects.get(pk=classmate_buy.pk).status == "resting"
    assert_ledger_invariants()


@pytest.mark.django_db
def test_deactivating_cancels_the_orders_of_every_classroom_of_the_student(btc, account):
    second = make_classroom(name="Trading 102")
    eth = make_instrument(second, symbol="ETHUSDT", mark="3000")
    there = classroom_join(user_id=account.user_id, join_code=second.join_code)
    here_order = limit_buy(account, btc)
    there_order = limit_buy(there, eth, price="2900")

    assert deactivate(account) == [here_order.pk, there_order.pk]

    assert set(
        Order.objects.filter(pk__in=[here_order.pk, there_order.pk]).values_list(
            "status", "reject_reason"
        )
    ) == {("cancelled", REASON)}
    assert balance(account) == balance(there) == D(10000)
    assert_ledger_invariants()


@pytest.mark.django_db
def test_the_engine_never_fills_an_opening_order_of_a_deactivated_student(btc, account):
    """Deactivated some other way than through the service (a shell, a raw update), so the
    order is still resting when the mark reaches it: the engine cancels it, never fills it."""
    buy = limit_buy(account, btc)
    User.objects.filter(pk=account.user_id).update(is_active=False)

    set_price(btc, "59000")

    buy.refresh_from_db()
    assert (buy.status, buy.reject_reason, buy.held_margin) == ("cancelled", REASON, 0)
    assert not Position.objects.filter(account=account).exists()
    assert balance(account) == D(10000)
    assert_ledger_invariants()


@pytest.mark.django_db
def test_a_deactivated_students_positions_stay_protected_by_the_engine(btc, account):
    stopped = position_open(
        account_id=account.pk, instrument_id=btc.pk, side="long", quantity="0.1", leverage=10,
        stop_loss="58000",
    )  # fmt: skip
    reduced = position_open(
        account_id=account.pk, instrument_id=btc.pk, side="long", quantity="0.1", leverage=10
    )
    protective = reduce_only_stop(reduced, "57000")
    leveraged = position_open(
        account_id=account.pk, instrument_id=btc.pk, side="long", quantity="0.1", leverage=100
    )
    deactivate(account)

    set_price(btc, "57900")  # past the stop-loss, and past the 100x long's liquidation price
    stopped.refresh_from_db()
    assert stopped.status == "closed"
    assert LiquidationEvent.objects.filter(position=leveraged).exists()
    set_price(btc, "56900")  # past the reduce-only stop
    assert Order.objects.get(pk=protective.pk).status == "filled"
    assert Position.objects.get(pk=reduced.pk).status == "closed"
    assert_ledger_invariants()


@pytest.mark.django_db
def test_a_deactivated_student_opens_nothing_but_may_still_reduce(btc, account):
    """Their requests are refused at sign-in; one let in just before the deactivation
    committed is refused by the service, which reads the user under the account's lock."""
    position = position_open(
        account_id=account.pk, instrument_id=btc.pk, side="long", quantity="0.2", leverage=10
    )
    deactivate(account)
    written = LedgerTransaction.objects.count()
    for place in (
        lambda: limit_buy(account, btc),
        lambda: limit_buy(account, btc, price="61000"),  # would fill at once
        lambda: order_place(account_id=account.pk, instrument_id=btc.pk, side="long",
                            quantity="0.1", leverage=10),
        lambda: order_place(account_id=account.pk, symbol="btcusdt", side="short",
                            quantity="0.1", leverage=10),
        lambda: position_open(account_id=account.pk, instrument_id=btc.pk, side="long",
                              quantity="0.1", leverage=10),
    ):  # fmt: skip
        with pytest.raises(AccountFrozen, match="deactivated"):
            place()
    assert LedgerTransaction.objects.count() == written
    assert Order.objects.filter(account=account).count() == 1  # the one that opened
    # Reducing only shrinks what is at risk: a reduce-only order and a close still go.
    reduce_only_stop(position, "57000")
    position_close(position_id=position.pk, quantity="0.1")
    assert Position.objects.get(pk=position.pk).quantity == D("0.1")
    assert_ledger_invariants()


@pytest.mark.django_db
def test_reactivating_a_student_lets_them_trade_again_and_gives_nothing_back(btc, account):
    buy = limit_buy(account, btc)
    deactivate(account)
    assert user_set_active(user_id=account.user_id, active=True).cancelled == []
    assert User.objects.get(pk=account.user_id).is_active
    assert Order.objects.get(pk=buy.pk).status == "cancelled"
    assert limit_buy(account, btc).status == "resting"
    assert_ledger_invariants()


# --- races with the engine -------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_deactivation_racing_the_engines_trigger_cancels_or_lets_fill_never_both(db):
    """Each order is either filled by a tick that committed first, or cancelled by the
    deactivation (the engine then finds it no longer resting); its hold comes back once."""
    classroom = make_classroom()
    btc = make_instrument(classroom)
    for _ in range(4):
        account = make_student(classroom)
        buy = limit_buy(account, btc)
        btc.mark_price = D(58000)
        btc.save(update_fields=["mark_price"])
        outcomes = simultaneously(
            lambda: deactivate(account), lambda: execute_triggered_order(buy.pk)
        )
        buy.refresh_from_db()
        if buy.status == "cancelled":
            assert outcomes == [("ok", [buy.pk]), ("ok", False)]
            assert buy.reject_reason == REASON
            assert balance(account) == D(10000)
        else:
            assert buy.status == "filled"
            assert outcomes == [("ok", []), ("ok", True)]
            assert Position.objects.get(account=account).status == "open"
        assert buy.held_margin == 0
        releases = LedgerEntry.objects.filter(pocket="order", order_id=buy.pk, amount__lt=0)
        assert [e.amount for e in releases] == [-HOLD]
        btc.mark_price = D(60000)
        btc.save(update_fields=["mark_price"])
    assert_ledger_invariants()


@pytest.mark.django_db(transaction=True)
def test_the_engine_waiting_on_a_deactivation_sees_it_once_committed(db):
    """A tick that reads the order while a deactivation holds the account waits for it, then
    reads the user afresh: it does not fill the order with what it read before waiting."""
    classroom = make_classroom()
    btc = make_instrument(classroom)
    account = make_student(classroom)
    buy = limit_buy(account, btc)
    btc.mark_price = D(58000)
    btc.save(update_fields=["mark_price"])
    deactivating, release = threading.Event(), threading.Event()
    filled: list[bool] = []
    errors: list[BaseException] = []

    def deactivate_and_wait() -> None:
        # As the service does, accounts first; here the order is left resting, as one
        # placed while the deactivation ran would be.
        try:
            with transaction.atomic():
                lock_accounts([account.pk])
                User.objects.filter(pk=account.user_id).update(is_active=False)
                deactivating.set()
                assert release.wait(timeout=30)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    def tick() -> None:
        try:
            assert deactivating.wait(timeout=30)
            filled.append(execute_triggered_order(buy.pk))
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=deactivate_and_wait), threading.Thread(target=tick)]
    for thread in threads:
        thread.start()
    wait_until(lambda: waiting_on_locks() > 0, message="the tick waiting on the account")
    release.set()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert filled == [False]
    buy.refresh_from_db()
    assert (buy.status, buy.reject_reason) == ("cancelled", REASON)
    assert not Position.objects.filter(account=account).exists()
    assert balance(account) == D(10000)
    assert_ledger_invariants()
