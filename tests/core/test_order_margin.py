"""Order margin: a resting order that would open a position holds what opening it costs.

As on an exchange, the hold leaves the free balance when the order is placed and comes back
when it is cancelled, rejected or triggered; every move is a ledger transaction between the
free balance and the order's own pocket.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.db import IntegrityError, transaction

from accounts.errors import DomainError
from accounts.ledger import Leg, ledger_post
from accounts.models import LedgerEntry, LedgerTransaction, TradingAccount
from accounts.money import MAX_AMOUNT
from accounts.services import account_adjust
from liquidation.instructor import account_reset
from liquidation.performance import accounts_performance
from positions.models import Fill, Order, Position
from positions.selectors import account_equities, account_overview
from positions.services import (
    fresh_order,
    order_cancel,
    order_execute,
    order_place,
    position_open,
)
from tests.engine.helpers import set_price
from tests.invariants import assert_ledger_invariants, money_snapshot

D = Decimal
Kind = LedgerTransaction.Kind


def place(account, instrument, **kwargs) -> Order:
    arguments: dict[str, Any] = {"side": "long", "quantity": "0.1", "leverage": 10} | kwargs
    return order_place(account_id=account.pk, instrument_id=instrument.pk, **arguments)


def balance(account) -> Decimal:
    return TradingAccount.objects.get(pk=account.pk).balance


def held(order) -> Decimal:
    return Order.objects.get(pk=order.pk).held_margin


def set_mark(instrument, mark) -> None:
    instrument.mark_price = D(mark)
    instrument.save(update_fields=["mark_price"])


def kinds(account) -> list[str]:
    return list(
        LedgerTransaction.objects.filter(entries__account_id=account.pk)
        .distinct()
        .order_by("pk")
        .values_list("kind", flat=True)
    )


def test_a_limit_order_holds_its_margin_extra_collateral_and_fee_at_its_limit(account, btc):
    order = place(account, btc, type="limit", price="59000", extra_collateral="100")
    # 0.1 x 59,000 / 10 = 590 margin, + 100 extra, + 0.05% of 5,900 = 2.95 fee.
    assert order.held_margin == held(order) == D("692.95")
    assert balance(account) == D(10000) - D("692.95")
    txn = LedgerTransaction.objects.get(kind=Kind.ORDER_HOLD)
    legs = {(e.pocket, e.order_id, e.amount) for e in txn.entries.all()}
    assert legs == {("account", None, D("-692.95")), ("order", order.pk, D("692.95"))}
    assert txn.description == (
        f"Hold 692.95 for limit order #{order.pk}: long 0.1 BTCUSDT at 59000, 10x"
    )
    assert not Position.objects.exists()
    assert_ledger_invariants()


def test_a_stop_order_holds_at_its_stop_price(account, btc):
    order = place(account, btc, side="short", type="stop", stop_price="58000")
    # 0.1 x 58,000 / 10 = 580 margin + 2.90 fee.
    assert held(order) == D("582.9")
    assert balance(account) == D(10000) - D("582.9")
    assert_ledger_invariants()


def test_a_reduce_only_resting_order_holds_nothing(account, btc):
    position = position_open(
        account_id=account.pk, instrument_id=btc.pk, side="long", quantity="0.5", leverage=20
    )
    before = balance(account)
    order = place(
        account, btc, side="short", type="limit", price="61000", quantity="0.5",
        reduce_only=True, position_id=position.pk,
    )  # fmt: skip
    assert order.status == "resting"
    assert held(order) == 0
    assert balance(account) == before
    assert not LedgerTransaction.objects.filter(kind=Kind.ORDER_HOLD).exists()


def test_a_limit_order_the_market_has_reached_fills_without_a_hold(account, btc):
    order = place(account, btc, type="limit", price="61000")
    assert (order.status, held(order)) == ("filled", 0)
    assert kinds(account) == [Kind.DEPOSIT, Kind.OPEN]


def test_resting_orders_cannot_hold_more_than_the_free_balance(account, btc):
    """Twenty limit orders for the whole balance: the first holds it, the others are refused
    with what they need, and a refused one writes nothing."""
    whole = {"type": "limit", "price": "50000", "quantity": "1.99", "leverage": 10}
    # 1.99 x 50,000 / 10 = 9,950 margin + 49.75 fee = 9,999.75.
    assert held(place(account, btc, **whole)) == D("9999.75")
    for _ in range(19):
        before = money_snapshot()
        with pytest.raises(DomainError) as info:
            place(account, btc, **whole)
        assert info.value.code == "insufficient_balance"
        assert "9,999.75" in info.value.message and "0.25" in info.value.message
        assert money_snapshot() == before
    assert Order.objects.filter(account=account).count() == 1
    assert_ledger_invariants()


def test_cancelling_gives_the_hold_back(account, btc):
    order = place(account, btc, type="limit", price="59000")
    cancelled = order_cancel(order_id=order.pk)
    assert (cancelled.status, cancelled.held_margin, held(order)) == ("cancelled", 0, 0)
    assert balance(account) == D(10000)
    release = LedgerTransaction.objects.get(kind=Kind.ORDER_RELEASE)
    assert release.description == f"Release 592.95 held by order #{order.pk} (cancelled)"
    assert kinds(account) == [Kind.DEPOSIT, Kind.ORDER_HOLD, Kind.ORDER_RELEASE]
    assert_ledger_invariants()


def test_a_triggered_order_opens_with_its_hold_back_in_one_transaction(account, btc):
    order = place(account, btc, type="limit", price="59000")
    set_mark(btc, "58000")  # a buy limited at 59,000 now fills, at 58,000
    filled = order_execute(order_id=order.pk)
    assert (filled.status, filled.held_margin, held(order)) == ("filled", 0, 0)
    assert filled.position_id is not None
    position = Position.objects.get(pk=filled.position_id)
    # It costs what the market asks: 580 margin + 2.90 fee at 58,000, not the 592.95 held.
    assert position.entry_price == D(58000)
    assert balance(account) == D(10000) - D("582.9")
    assert kinds(account) == [Kind.DEPOSIT, Kind.ORDER_HOLD, Kind.ORDER_RELEASE, Kind.OPEN]
    assert_ledger_invariants()


def test_a_triggered_order_the_rules_refuse_is_rejected_and_gives_its_hold_back(
    classroom, account, btc
):
    order = place(account, btc, type="limit", price="59000")
    classroom.trading_enabled = False
    classroom.save()
    rejected = order_execute(order_id=order.pk)
    assert rejected.status == "rejected" and "closed" in rejected.reject_reason
    assert (rejected.held_margin, held(order)) == (0, 0)
    assert balance(account) == D(10000)
    assert not Position.objects.exists()
    release = LedgerTransaction.objects.get(kind=Kind.ORDER_RELEASE)
    assert release.description.endswith("(rejected)")
    assert_ledger_invariants()


def test_a_stop_that_gaps_past_what_it_holds_is_rejected_and_its_hold_comes_back(account, btc):
    """The hold is priced at the stop; a stop fills at market, and when the market gaps past
    the stop and the rest of the balance has gone, opening costs more than the hold."""
    order = place(account, btc, type="stop", stop_price="61000", quantity="1", leverage=10)
    assert held(order) == D("6130.5")  # 6,100 margin + 30.50 fee
    account_adjust(account_id=account.pk, amount=D("-3869.5"), reason="Spent")
    assert balance(account) == 0
    set_mark(btc, "70000")  # 7,000 margin + 35 fee now
    rejected = order_execute(order_id=order.pk)
    assert rejected.status == "rejected" and "7,035" in rejected.reject_reason
    assert balance(account) == D("6130.5")
    assert held(order) == 0
    assert not Position.objects.exists()
    assert_ledger_invariants()


def short_limit_with_the_rest_spent(account, btc, *, left: str = "0") -> Order:
    """A sell limited at 61,000 holding 6,130.50 (6,100 margin + 30.50 fee), and ``left`` of
    the free balance besides."""
    order = place(account, btc, side="short", type="limit", price="61000", quantity="1")
    assert held(order) == D("6130.5")
    account_adjust(account_id=account.pk, amount=D(left) - D("3869.5"), reason="Spent")
    assert balance(account) == D(left)
    return order


def trigger_at_the_service(btc, order, mark) -> None:
    set_mark(btc, mark)
    order_execute(order_id=order.pk)


def trigger_at_a_tick(btc, order, mark) -> None:
    assert set_price(btc, mark).orders_triggered == 1


@pytest.mark.parametrize("trigger", [trigger_at_the_service, trigger_at_a_tick])
def test_a_sell_limit_its_better_market_price_does_not_fit_opens_at_its_limit(
    account, btc, trigger
):
    """A sell fills at its limit or better, and better (higher) costs more margin and fee
    than the order holds: when the rest of the balance cannot pay that, it opens at its
    limit, which the hold pays, rather than being rejected."""
    order = short_limit_with_the_rest_spent(account, btc)
    trigger(btc, order, "62000")  # 6,200 margin + 31 fee at market: 6,231 > 6,130.50
    filled = fresh_order(order.pk)
    assert (filled.status, filled.held_margin, held(order)) == ("filled", 0, 0)
    assert filled.filled_at is not None and filled.position_id is not None
    position = Position.objects.select_related("collateral").get(pk=filled.position_id)
    assert (position.side, position.quantity, position.entry_price) == ("short", 1, D(61000))
    assert (position.collateral.amount, position.fees_paid) == (D(6100), D("30.5"))
    # LP (6,100 + 50 + 61,000) / 1.005, rounded down; BP 61,000 + 6,100.
    assert (position.liquidation_price, position.bankruptcy_price) == (
        D("66815.9203980099"),
        D(67100),
    )
    fill = Fill.objects.get(order=order)
    assert (fill.kind, fill.quantity, fill.price, fill.fee) == ("open", 1, D(61000), D("30.5"))
    assert balance(account) == 0
    assert kinds(account) == [
        Kind.DEPOSIT, Kind.ORDER_HOLD, Kind.DEDUCT, Kind.ORDER_RELEASE, Kind.OPEN
    ]  # fmt: skip
    opened = LedgerTransaction.objects.get(kind=Kind.OPEN)
    assert opened.memo == "Open short 1 BTCUSDT at 61000, 10x"
    legs = {(e.pocket, e.amount) for e in opened.entries.all()}
    assert legs == {("account", D("-6130.5")), ("collateral", D(6100)), ("fees", D("30.5"))}
    assert_ledger_invariants()


def test_a_sell_limit_its_limit_would_put_past_liquidation_at_the_mark_is_rejected(account, btc):
    """At its limit the hold pays for it, but a short opened at 61,000 with the mark at
    66,900 is already past its liquidation price (66,815.92): the next tick would take it."""
    order = short_limit_with_the_rest_spent(account, btc)
    set_mark(btc, "66900")
    rejected = order_execute(order_id=order.pk)
    assert rejected.status == "rejected"
    assert "61,000" in rejected.reject_reason and "liquidation" in rejected.reject_reason
    assert (rejected.held_margin, held(order)) == (0, 0)
    assert balance(account) == D("6130.5")
    assert not Position.objects.exists() and not Fill.objects.exists()
    assert kinds(account) == [Kind.DEPOSIT, Kind.ORDER_HOLD, Kind.DEDUCT, Kind.ORDER_RELEASE]
    assert LedgerTransaction.objects.get(kind=Kind.ORDER_RELEASE).memo.endswith("(rejected)")
    assert_ledger_invariants()


def test_a_sell_limit_its_better_market_price_fits_still_fills_at_market(account, btc):
    """The hold and the rest of the balance together pay the fill at market, to the cent."""
    order = short_limit_with_the_rest_spent(account, btc, left="100.5")
    set_mark(btc, "62000")  # 6,231 = 6,130.50 held + 100.50 free
    filled = order_execute(order_id=order.pk)
    assert filled.status == "filled" and filled.position_id is not None
    position = Position.objects.get(pk=filled.position_id)
    assert position.entry_price == D(62000)
    assert Fill.objects.get(order=order).price == D(62000)
    assert balance(account) == 0
    assert_ledger_invariants()


def test_an_account_reset_releases_every_hold(classroom, account, btc):
    orders = [place(account, btc, type="limit", price=p) for p in ("59000", "58000", "57000")]
    account_reset(account_id=account.pk)
    assert balance(account) == D(10000)
    assert list(Order.objects.filter(pk__in=[o.pk for o in orders]).values_list(
        "status", "held_margin"
    )) == [("cancelled", 0)] * 3  # fmt: skip
    # The holds came back as releases, so the reset itself had nothing left to restore.
    assert not LedgerTransaction.objects.filter(kind=Kind.RESET).exists()
    assert_ledger_invariants(classroom.pk)


def test_a_hold_moves_the_free_balance_but_not_equity_or_drawdown(account, btc):
    place(account, btc, type="limit", price="59000")
    place(account, btc, side="short", type="stop", stop_price="58000")
    overview = account_overview(TradingAccount.objects.get(pk=account.pk))
    assert overview.balance == D(10000) - D("592.95") - D("582.9")
    assert overview.order_margin == D("1175.85")
    assert overview.equity == D(10000)
    assert account_equities([overview.account]) == {account.pk: D(10000)}
    performance = accounts_performance([overview.account])[account.pk]
    assert (performance.equity, performance.max_drawdown) == (D(10000), 0)


def test_an_order_that_holds_margin_cannot_end_without_releasing_it(account, btc):
    """A bulk status change would strand the hold: the database refuses it."""
    order = place(account, btc, type="limit", price="59000")
    for status in ("cancelled", "rejected", "filled"):
        with pytest.raises(IntegrityError), transaction.atomic():
            Order.objects.filter(pk=order.pk).update(status=status)
    with pytest.raises(IntegrityError), transaction.atomic():
        Order.objects.filter(pk=order.pk).update(held_margin=D("-1"))


def test_order_margin_legs_name_their_order_and_need_its_updater(classroom, account, btc):
    order = place(account, btc, type="limit", price="59000")
    legs = [
        Leg(LedgerEntry.Pocket.ACCOUNT, D(-1), account_id=account.pk),
        Leg(LedgerEntry.Pocket.ORDER, D(1), account_id=account.pk, order_id=order.pk),
    ]
    with pytest.raises(ValueError, match="order margin updater"):
        ledger_post(classroom_id=classroom.pk, kind=Kind.ORDER_HOLD, legs=legs)
    txn = LedgerTransaction.objects.create(classroom=classroom, kind=Kind.ORDER_HOLD)
    with pytest.raises(IntegrityError), transaction.atomic():
        LedgerEntry.objects.create(
            transaction=txn, classroom=classroom, pocket="order", account=account, amount=D(1)
        )


def test_a_grant_counts_what_resting_orders_hold_towards_the_largest_free_balance(account, btc):
    """Holds come back to the free balance: a grant that would take it past the largest
    amount once they do is refused, or cancelling the orders could not store the balance."""
    account_adjust(account_id=account.pk, amount=MAX_AMOUNT - 10001, reason="Seed")
    order = place(account, btc, type="limit", price="50000", quantity="19000000000", leverage=1)
    # 19,000,000,000 x 50,000 = 950,000,000,000,000 margin at 1x + 475,000,000,000 fee.
    assert held(order) == D("950475000000000")
    before = money_snapshot()
    with pytest.raises(DomainError) as info:
        account_adjust(account_id=account.pk, amount=MAX_AMOUNT - balance(account) - 1, reason="X")
    assert info.value.code == "invalid_amount"
    assert "950,475,000,000,000.00" in info.value.message and "resting orders" in info.value.message
    assert money_snapshot() == before
    cancelled = order_cancel(order_id=order.pk)
    assert (cancelled.status, balance(account)) == ("cancelled", MAX_AMOUNT - 1)
    assert_ledger_invariants()


def test_a_deduction_beyond_the_free_balance_says_what_resting_orders_hold(account, btc):
    """Equity still counts the holds, so an instructor who sees it learns why the deduction
    is refused and what would free the money."""
    place(account, btc, type="limit", price="50000", quantity="1.99")  # holds 9,999.75 at 10x
    before = money_snapshot()
    with pytest.raises(DomainError) as info:
        account_adjust(account_id=account.pk, amount=D("-100"), reason="Late homework")
    assert info.value.code == "insufficient_balance"
    assert info.value.message == (
        "The free balance of alice in Trading 101 is 0.25; it cannot go below zero. Its resting "
        "orders hold 9,999.75 more, which comes back to the free balance when they are cancelled."
    )
    assert money_snapshot() == before
