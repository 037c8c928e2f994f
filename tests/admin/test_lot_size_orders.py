"""A lot-size or minimum-notional change brings resting orders in line at once, and tells the
student: an order off the new lot is replaced by one rounded down to whole lots, one left
with less than a lot, or worth less than the new minimum, is cancelled with the reason. Open
positions keep their quantity and can still be closed, all of it or whole lots of it.
"""

from __future__ import annotations

import re
from decimal import Decimal as D

import pytest
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse

from accounts.models import TradingAccount
from positions.models import Instrument, Order, Position
from positions.services import order_place, position_open
from tests.admin.forms import admin_form_data
from tests.admin.test_tick_size import engine_tick
from tests.admin.test_tick_size_levels import _successor
from tests.admin.test_tick_size_levels import market as market
from tests.admin.test_tick_size_levels import student as student
from tests.api.conftest import client_for, new_key
from tests.invariants import assert_ledger_invariants, money_snapshot

pytestmark = pytest.mark.django_db

ORDERS = "/api/v1/orders/"


def post_instrument(client, instrument: Instrument, **fields: str):
    page = reverse("admin:positions_instrument_change", args=[instrument.pk])
    data = admin_form_data(client.get(page))
    data.update(fields)
    return client.post(page, data)


def _saved(client, btc: Instrument, **fields: str) -> list[str]:
    response = post_instrument(client, btc, **fields)
    assert response.status_code == 302, response.context and response.context["errors"]
    return [str(message) for message in get_messages(response.wsgi_request)]


def _rest(account, btc: Instrument, quantity: str, **terms) -> Order:
    order = order_place(
        account_id=account.pk, instrument_id=btc.pk, quantity=quantity, leverage=10, **terms
    )
    assert order.status == Order.Status.RESTING
    return order


def _long(account, btc: Instrument, quantity: str) -> Position:
    return position_open(
        account_id=account.pk, instrument_id=btc.pk, side="long", quantity=quantity, leverage=10
    )


def _cancelled_alone(order: Order) -> Order:
    old = Order.objects.get(pk=order.pk)
    assert old.status == Order.Status.CANCELLED and old.held_margin == 0
    assert not Order.objects.filter(replaces=old).exists()
    return old


def test_orders_off_the_new_lot_are_rounded_down_and_fill_when_their_price_comes(market, student):
    client, btc = market
    buy = _rest(student, btc, "0.015", side="long", type="limit", price="59990.3")
    stop = _rest(student, btc, "0.029", side="short", type="stop", stop_price="59900")
    on_lot = _rest(student, btc, "0.02", side="long", type="limit", price="59980")
    before = money_snapshot()

    messages = _saved(client, btc, lot_size="0.01")

    assert any("2 resting order(s) replaced" in m for m in messages), messages
    new_buy, new_stop = _successor(buy), _successor(stop)
    # Never more exposure than the student asked for: rounded down to whole lots.
    assert (new_buy.quantity, new_buy.price, new_buy.leverage) == (D("0.01"), buy.price, 10)
    assert (new_stop.quantity, new_stop.stop_price) == (D("0.02"), D(59900))
    # It holds what it costs now: 0.01 x 59,990.3 / 10 + 0.05% fee.
    assert new_buy.held_margin == D("59.9903") + D("0.29995150")
    assert Order.objects.get(pk=on_lot.pk).status == Order.Status.RESTING
    assert not Order.objects.filter(replaces=on_lot).exists()
    assert_ledger_invariants()
    assert money_snapshot().pockets == before.pockets
    assert TradingAccount.objects.get(pk=student.pk).balance > before.accounts[student.pk]

    api = client_for(new_key(student))
    old = api.get(f"{ORDERS}{buy.pk}/").json()
    assert old["status"] == "cancelled"
    assert old["reject_reason"] == (
        f"Replaced by order #{new_buy.pk}: the lot size of BTCUSDT changed to 0.01, "
        "so its quantity 0.015 was rounded down to whole lots at 0.01"
    )
    new = api.get(f"{ORDERS}{new_buy.pk}/").json()
    assert (new["quantity"], new["replaces"], new["status"]) == ("0.01", buy.pk, "resting")

    # Its price comes: the engine fills it instead of refusing it.
    Instrument.objects.filter(pk=btc.pk).update(mark_price=D("59990.3"))
    engine_tick(btc)
    filled = Order.objects.get(pk=new_buy.pk)
    assert filled.status == Order.Status.FILLED, filled.reject_reason
    assert filled.position is not None and filled.position.quantity == D("0.01")
    assert_ledger_invariants()


def test_an_order_of_less_than_a_lot_or_below_the_minimum_is_cancelled_with_the_reason(
    market, student
):
    client, btc = market
    dust = _rest(student, btc, "0.005", side="long", type="limit", price="59000")
    small = _rest(student, btc, "0.019", side="long", type="limit", price="59000")
    kept = _rest(student, btc, "0.03", side="long", type="limit", price="59000")
    balance = TradingAccount.objects.get(pk=student.pk).balance
    held = dust.held_margin + small.held_margin

    # 0.019 rounds down to 0.01, worth 590: below the new minimum of 1,000.
    messages = _saved(client, btc, lot_size="0.01", min_notional="1000")

    assert any("2 order(s) cancelled" in m for m in messages), messages
    api = client_for(new_key(student))
    assert api.get(f"{ORDERS}{dust.pk}/").json()["reject_reason"] == (
        "Cancelled: the lot size of BTCUSDT changed to 0.01 and its minimum notional to 1000, "
        "and its quantity 0.005 is less than one lot"
    )
    assert api.get(f"{ORDERS}{small.pk}/").json()["reject_reason"] == (
        "Cancelled: the lot size of BTCUSDT changed to 0.01 and its minimum notional to 1000, "
        "and rounded down to whole lots, 0.01, it would be worth 590.00; the minimum is 1,000.00"
    )
    _cancelled_alone(dust)
    _cancelled_alone(small)
    assert Order.objects.get(pk=kept.pk).status == Order.Status.RESTING
    assert TradingAccount.objects.get(pk=student.pk).balance == balance + held
    assert_ledger_invariants()


def test_a_higher_minimum_notional_alone_cancels_the_orders_below_it(market, student):
    client, btc = market
    below = _rest(student, btc, "0.01", side="long", type="limit", price="59000")
    above = _rest(student, btc, "0.02", side="long", type="limit", price="59000")

    messages = _saved(client, btc, min_notional="1000")

    assert any("1 order(s) cancelled" in m for m in messages), messages
    assert _cancelled_alone(below).reject_reason == (
        "Cancelled: the minimum notional of BTCUSDT changed to 1000, and it is worth 590.00; "
        "the minimum is 1,000.00"
    )
    assert Order.objects.get(pk=above.pk).status == Order.Status.RESTING
    assert_ledger_invariants()


def test_reduce_only_orders_round_down_and_one_closing_all_is_kept(market, student):
    client, btc = market
    odd, big = _long(student, btc, "0.015"), _long(student, btc, "0.025")
    reduce = {"side": "short", "type": "limit", "price": "61000", "reduce_only": True}
    closes_all = _rest(student, btc, "0.015", position_id=odd.pk, **reduce)
    part = _rest(student, btc, "0.015", position_id=big.pk, **reduce)
    dust = _rest(student, btc, "0.005", position_id=big.pk, **reduce)

    _saved(client, btc, lot_size="0.01")

    # Closing all of its position is still a valid order: it stays as it was.
    assert Order.objects.get(pk=closes_all.pk).status == Order.Status.RESTING
    # Rounding down closes less than asked, never more: the rest stays open.
    assert _successor(part).quantity == D("0.01")
    assert "less than one lot" in _cancelled_alone(dust).reject_reason
    assert_ledger_invariants()

    Instrument.objects.filter(pk=btc.pk).update(mark_price=D(61000))
    engine_tick(btc)
    assert Position.objects.get(pk=odd.pk).status == Position.Status.CLOSED
    assert Position.objects.get(pk=big.pk).quantity == D("0.015")
    assert_ledger_invariants()


def test_a_new_tick_size_and_lot_size_in_one_save_move_an_order_once(market, student):
    client, btc = market
    order = _rest(student, btc, "0.015", side="long", type="limit", price="59990.3")

    messages = _saved(client, btc, tick_size="50", lot_size="0.01")

    assert any("1 resting order(s) replaced" in m for m in messages), messages
    new = _successor(order)
    assert (new.price, new.quantity) == (D(59950), D("0.01"))
    assert new.status == Order.Status.RESTING
    assert Order.objects.get(pk=order.pk).reject_reason == (
        f"Replaced by order #{new.pk}: the tick size of BTCUSDT changed to 50 and its lot "
        "size to 0.01, so its price 59,990.3 moved onto the new grid at 59,950, quantity "
        "0.015 rounded down to whole lots at 0.01"
    )
    assert_ledger_invariants()


def _page_text(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def test_a_position_off_the_new_lot_shows_its_size_and_closes_in_lots_or_all(market, student):
    client, btc = market
    position = _long(student, btc, "0.015")
    _saved(client, btc, lot_size="0.01")

    page = Client()
    page.force_login(student.user)
    shown = _page_text(page.get(reverse("position", args=[position.pk])).content.decode())
    assert "Size 0.015" in shown

    # Part of it: whole lots of the new size; what is left shows as it is.
    response = page.post(
        reverse("position-close", args=[position.pk]), {"close-quantity": "0.01"}, follow=True
    )
    text = _page_text(response.content.decode())
    assert "Closed 0.01 of 0.015 BTCUSDT" in text and "0.005 stays open" in text, text
    assert Position.objects.get(pk=position.pk).quantity == D("0.005")

    # Less than a lot is refused with what can be closed; all of what is left closes.
    api = client_for(new_key(student))
    url = f"/api/v1/positions/{position.pk}/close"
    refused = api.post(url, {"quantity": "0.002"}, format="json")
    assert refused.status_code == 400
    assert refused.json()["error"]["message"] == (
        "The quantity must be a multiple of the lot size 0.01, or all that is open (0.005)."
    )
    closed = api.post(url, {"quantity": "0.005"}, format="json")
    assert closed.status_code == 200, closed.json()
    assert closed.json()["status"] == "closed"
    assert_ledger_invariants()
