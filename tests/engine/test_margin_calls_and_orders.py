"""Margin calls once per crossing, and resting orders and TP/SL triggered by the tick."""

from __future__ import annotations

from decimal import Decimal

import pytest

from liquidation.models import MarginCall
from positions.models import Order, Position
from positions.services import order_place, position_add_margin
from tests.engine.helpers import open_position, set_price
from tests.invariants import assert_ledger_invariants

pytestmark = pytest.mark.django_db


def test_a_margin_call_is_recorded_once_per_crossing(btc, account):
    position = open_position(account, btc, "long", "0.1", 50)
    set_price(btc, "59090")
    set_price(btc, "59080")
    call = MarginCall.objects.get(position=position)
    assert call.outcome == "pending" and call.margin_ratio >= Decimal("0.8")
    assert Position.objects.get(pk=position.pk).margin_call_active
    set_price(btc, "60000")
    call.refresh_from_db()
    assert call.outcome == "recovered" and call.resolved_at is not None
    assert not Position.objects.get(pk=position.pk).margin_call_active
    set_price(btc, "59090")
    assert MarginCall.objects.filter(position=position).count() == 2


def test_adding_margin_answers_the_call(btc, account):
    position = open_position(account, btc, "long", "0.1", 50)
    set_price(btc, "59090")
    position_add_margin(position_id=position.pk, amount="100")
    set_price(btc, "59090")
    call = MarginCall.objects.get(position=position)
    assert call.outcome == "margin_added"


def test_a_liquidation_answers_the_call(btc, account):
    position = open_position(account, btc, "long", "0.1", 50)
    set_price(btc, "59090")
    set_price(btc, "58000")
    assert MarginCall.objects.get(position=position).outcome == "liquidated"


def test_no_margin_call_far_from_the_liquidation_price(btc, account):
    open_position(account, btc, "long", "0.1", 10)
    set_price(btc, "59090")
    assert not MarginCall.objects.exists()


def test_limit_and_stop_orders_fill_when_the_mark_reaches_them(btc, account):
    limit_buy = order_place(
        account_id=account.pk, instrument_id=btc.pk, side="long", type="limit",
        quantity="0.01", leverage=10, price="59000",
    )  # fmt: skip
    stop_sell = order_place(
        account_id=account.pk, instrument_id=btc.pk, side="short", type="stop",
        quantity="0.01", leverage=10, stop_price="58000",
    )  # fmt: skip
    far_limit_sell = order_place(
        account_id=account.pk, instrument_id=btc.pk, side="short", type="limit",
        quantity="0.01", leverage=10, price="65000",
    )  # fmt: skip
    set_price(btc, "59500")
    assert Order.objects.get(pk=limit_buy.pk).status == "resting"
    result = set_price(btc, "59000")
    assert result.orders_triggered == 1
    assert Order.objects.get(pk=limit_buy.pk).status == "filled"
    assert Order.objects.get(pk=stop_sell.pk).status == "resting"
    set_price(btc, "57900")
    assert Order.objects.get(pk=stop_sell.pk).status == "filled"
    assert Order.objects.get(pk=far_limit_sell.pk).status == "resting"
    assert Position.objects.filter(account=account, status="open").count() == 2
    assert_ledger_invariants()


def test_limit_orders_never_fill_beyond_their_limit_across_the_spread(btc, account):
    """With a spread of 2, a buy fills one above the mark and a sell one below it; a limit
    order waits until that price, not the mark, reaches its limit."""
    btc.spread = Decimal(2)
    btc.save(update_fields=["spread"])
    opened = open_position(account, btc, "long", "0.01", 10)
    buy = order_place(
        account_id=account.pk, instrument_id=btc.pk, side="long", type="limit",
        quantity="0.01", leverage=10, price="59000",
    )  # fmt: skip
    sell = order_place(
        account_id=account.pk, instrument_id=btc.pk, side="short", type="limit",
        quantity="0.01", price="61000", reduce_only=True, position_id=opened.pk,
    )  # fmt: skip
    set_price(btc, "59000")  # the mark is at the limit, the ask (59,001) is not
    assert Order.objects.get(pk=buy.pk).status == "resting"
    set_price(btc, "58999")
    filled = Order.objects.get(pk=buy.pk)
    assert filled.status == "filled"
    assert filled.position is not None and filled.position.entry_price == Decimal(59000)
    set_price(btc, "61000")  # the bid is 60,999
    assert Order.objects.get(pk=sell.pk).status == "resting"
    set_price(btc, "61001")
    assert Order.objects.get(pk=sell.pk).status == "filled"
    assert Position.objects.get(pk=opened.pk).exit_price == Decimal(61000)
    assert_ledger_invariants()


def test_reduce_only_order_and_take_profit_close_their_position(btc, account):
    tp_position = open_position(account, btc, "long", "0.01", 10, take_profit="62000")
    reduced = open_position(account, btc, "long", "0.02", 10)
    order = order_place(
        account_id=account.pk, instrument_id=btc.pk, side="short", type="limit",
        quantity="0.01", price="61000", reduce_only=True, position_id=reduced.pk,
    )  # fmt: skip
    set_price(btc, "61000")
    assert Order.objects.get(pk=order.pk).status == "filled"
    reduced.refresh_from_db()
    assert reduced.quantity == Decimal("0.01") and reduced.status == "open"
    assert Position.objects.get(pk=tp_position.pk).status == "open"
    set_price(btc, "62000")
    assert Position.objects.get(pk=tp_position.pk).status == "closed"
    assert Position.objects.get(pk=reduced.pk).status == "open"
    assert_ledger_invariants()


def test_stop_loss_of_a_short_closes_it(btc, account):
    short = open_position(account, btc, "short", "0.01", 10, stop_loss="61000")
    set_price(btc, "60900")
    assert Position.objects.get(pk=short.pk).status == "open"
    set_price(btc, "61000")
    assert Position.objects.get(pk=short.pk).status == "closed"


def test_a_tick_that_triggers_a_resting_order_returns_its_hold_as_it_opens(btc, account):
    order = order_place(
        account_id=account.pk, instrument_id=btc.pk, side="long", type="limit",
        quantity="0.1", leverage=10, price="59000",
    )  # fmt: skip
    assert order.held_margin == Decimal("592.95")  # 590 margin + 2.95 fee at 59,000
    set_price(btc, "58500")
    filled = Order.objects.get(pk=order.pk)
    assert (filled.status, filled.held_margin) == ("filled", 0)
    account.refresh_from_db()
    # The position cost 585 margin + 2.925 fee at 58,500, out of the whole balance again.
    assert account.balance == Decimal(10000) - Decimal("587.925")
    assert_ledger_invariants()


def test_a_tick_that_triggers_an_order_the_rules_refuse_rejects_it_and_returns_its_hold(
    btc, account
):
    order = order_place(
        account_id=account.pk, instrument_id=btc.pk, side="long", type="limit",
        quantity="0.1", leverage=10, price="59000",
    )  # fmt: skip
    account.trading_frozen = True
    account.save(update_fields=["trading_frozen"])
    set_price(btc, "58500")
    rejected = Order.objects.get(pk=order.pk)
    assert (rejected.status, rejected.held_margin) == ("rejected", 0)
    assert "frozen" in rejected.reject_reason
    account.refresh_from_db()
    assert account.balance == Decimal(10000)
    assert not Position.objects.filter(account=account).exists()
    assert_ledger_invariants()


def test_stop_orders_the_mark_gaps_past_fill_at_the_gapped_market_not_at_their_stop(btc, account):
    """A stop order is a stop-market order: it opens (or, reduce-only, closes) at the market
    price of the tick that reaches it, however far past its stop price that tick jumped."""
    stop_buy = order_place(
        account_id=account.pk, instrument_id=btc.pk, side="long", type="stop",
        quantity="0.01", leverage=10, stop_price="61000",
    )  # fmt: skip
    protected = open_position(account, btc, "long", "0.01", 10)
    stop_close = order_place(
        account_id=account.pk, instrument_id=btc.pk, side="short", type="stop",
        quantity="0.01", stop_price="59000", reduce_only=True, position_id=protected.pk,
    )  # fmt: skip

    set_price(btc, "62500")
    opened = Order.objects.get(pk=stop_buy.pk).position
    assert opened is not None and opened.entry_price == Decimal(62500)
    assert opened.collateral.amount == Decimal("62.5")  # 0.01 x 62,500 / 10
    assert Order.objects.get(pk=stop_close.pk).status == "resting"

    set_price(btc, "58000")
    protected.refresh_from_db()
    assert Order.objects.get(pk=stop_close.pk).status == "filled"
    assert protected.status == "closed" and protected.exit_price == Decimal(58000)
    assert protected.realized_pnl == Decimal(-20)  # 0.01 x 2,000, within its 60 collateral
    assert_ledger_invariants()
