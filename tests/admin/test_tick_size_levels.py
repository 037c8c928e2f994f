"""A tick-size change moves resting orders and TP/SL levels onto the new grid, and tells the
student: an order is replaced by one on the grid, a moved TP/SL is on the position's timeline.
"""

from __future__ import annotations

import re
from decimal import Decimal as D

import pytest
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse

from accounts.models import LedgerTransaction
from liquidation.models import PriceFeed
from positions.models import Instrument, Order, Position, TpSlChange
from positions.services import order_place, position_open, position_set_tpsl
from tests.admin.conftest import make_instructor
from tests.admin.forms import admin_form_data
from tests.admin.test_tick_size import engine_tick, post_tick_size
from tests.api.conftest import client_for, new_key
from tests.factories import make_classroom, make_instrument, make_student
from tests.invariants import assert_ledger_invariants, money_snapshot

pytestmark = pytest.mark.django_db

ORDERS = "/api/v1/orders/"


@pytest.fixture
def market(client):
    """A 0.1-tick market at 60,049.9 with a flat feed, its instructor signed in."""
    teacher = make_instructor("teacher")
    classroom = make_classroom(instructor=teacher, max_leverage=125)
    btc = make_instrument(classroom, mark="60049.9")
    PriceFeed.objects.create(
        instrument=btc, kind=PriceFeed.Kind.SIMULATED, volatility=D(0), jump_probability=D(0)
    )
    client.force_login(teacher)
    return client, btc


@pytest.fixture
def student(market):
    _, btc = market
    return make_student(btc.classroom, username="alice")


def _rest(account, btc: Instrument, **terms) -> Order:
    order = order_place(
        account_id=account.pk, instrument_id=btc.pk, quantity="0.01", leverage=10, **terms
    )
    assert order.status == Order.Status.RESTING
    return order


def _to_fifty(client, btc: Instrument) -> None:
    response = post_tick_size(client, btc, "50")
    assert response.status_code == 302, response.context and response.context["errors"]


def _successor(order: Order) -> Order:
    old = Order.objects.get(pk=order.pk)
    assert old.status == Order.Status.CANCELLED and old.held_margin == 0
    return Order.objects.get(replaces=old)


def test_resting_orders_are_replaced_on_the_grid_at_no_worse_price(market, student):
    client, btc = market
    buy = _rest(student, btc, side="long", type="limit", price="59990.3", client_order_id="dip")
    sell = _rest(student, btc, side="short", type="limit", price="60120.7")
    stop = _rest(student, btc, side="long", type="stop", stop_price="60075.3")
    on_grid = _rest(student, btc, side="long", type="limit", price="59900")
    before = money_snapshot()

    response = post_tick_size(client, btc, "50")
    assert response.status_code == 302
    assert any(
        "3 resting order(s) replaced" in str(message)
        for message in get_messages(response.wsgi_request)
    )

    # A buy never pays more than asked, a sell never gets less; a stop triggers on exactly
    # the marks of the new grid that reached its old price.
    moved = {o.pk: _successor(o) for o in (buy, sell, stop)}
    assert moved[buy.pk].price == D(59950) and moved[sell.pk].price == D(60150)
    assert moved[stop.pk].stop_price == D(60100)
    for old, new in ((buy, moved[buy.pk]), (sell, moved[sell.pk]), (stop, moved[stop.pk])):
        assert new.status == Order.Status.RESTING
        assert (new.side, new.type, new.quantity, new.leverage) == (
            old.side,
            old.type,
            old.quantity,
            old.leverage,
        )
    # It holds what it costs at its new price: 0.01 x 59,950 / 10 + 0.05% fee.
    assert moved[buy.pk].held_margin == D("59.95") + D("0.299750")
    assert Order.objects.get(pk=on_grid.pk).status == Order.Status.RESTING
    assert not Order.objects.filter(replaces=on_grid).exists()
    assert_ledger_invariants()
    # Holds moved from order to order; nothing left the classroom's pockets.
    assert money_snapshot().pockets == before.pockets

    # The bot reads what happened to its order and amends the new one on the grid.
    api = client_for(new_key(student))
    old = api.get(f"{ORDERS}{buy.pk}/").json()
    new_id = moved[buy.pk].pk
    assert old["status"] == "cancelled" and old["client_order_id"] == "dip"
    assert old["reject_reason"] == (
        f"Replaced by order #{new_id}: the tick size of BTCUSDT changed to 50, "
        "so its price 59,990.3 moved onto the new grid at 59,950"
    )
    new = api.get(f"{ORDERS}{new_id}/").json()
    assert (new["price"], new["replaces"], new["status"]) == ("59950", buy.pk, "resting")
    amended = api.patch(f"{ORDERS}{new_id}/", {"quantity": "0.02"}, format="json")
    assert amended.status_code == 200, amended.json()
    assert amended.json()["price"] == "59950"


def test_an_order_changed_on_its_page_without_touching_the_price_is_accepted(market, student):
    client, btc = market
    order = _rest(student, btc, side="long", type="limit", price="59990.3")
    _to_fifty(client, btc)
    new = _successor(order)

    page = Client()
    page.force_login(student.user)
    url = reverse("order-change", args=[new.pk])
    form = page.get(url)
    assert 'value="59950"' in form.content.decode()
    response = page.post(url, {"quantity": "0.02", "price": "59950"})
    assert response.status_code == 302, response.content.decode()
    assert Order.objects.get(replaces=new).quantity == D("0.02")


def test_a_resting_order_with_its_tpsl_fills_after_the_change(market, student):
    client, btc = market
    order = _rest(
        student,
        btc,
        side="long",
        type="limit",
        price="59990.3",
        take_profit="61234.5",
        stop_loss="59012.3",
    )
    _to_fifty(client, btc)
    new = _successor(order)
    # Its TP and SL trigger on the same marks as before: the first ticks at or beyond them.
    assert (new.take_profit, new.stop_loss) == (D(61250), D(59000))

    Instrument.objects.filter(pk=btc.pk).update(mark_price=D(59950))
    engine_tick(btc)
    filled = Order.objects.get(pk=new.pk)
    assert filled.status == Order.Status.FILLED, filled.reject_reason
    assert filled.position_id is not None
    position = Position.objects.get(pk=filled.position_id)
    assert (position.take_profit, position.stop_loss) == (D(61250), D(59000))
    assert_ledger_invariants()


def _timeline_tpsl(page: str) -> list[str]:
    section = page.split("<h2>Timeline</h2>", 1)[1].split("</ol>", 1)[0]
    events = re.findall(r'<li class="event-tpsl">(.*?)</li>', section, re.S)
    texts = [re.sub(r"<time[^>]*>.*?</time>", "", body, flags=re.S) for body in events]
    return [" ".join(re.sub(r"<[^>]+>", "", text).split()) for text in texts]


def test_tpsl_levels_move_onto_the_grid_and_the_timeline_says_why(market, student):
    client, btc = market
    long = position_open(
        account_id=student.pk, instrument_id=btc.pk, side="long", quantity="0.1", leverage=10
    )
    short = position_open(
        account_id=student.pk, instrument_id=btc.pk, side="short", quantity="0.1", leverage=10
    )
    position_set_tpsl(position_id=long.pk, take_profit="61234.5", stop_loss="59012.3")
    position_set_tpsl(position_id=short.pk, take_profit="59012.3", stop_loss="61234.5")
    untouched = make_student(btc.classroom, username="bob")
    on_grid = position_open(
        account_id=untouched.pk, instrument_id=btc.pk, side="long", quantity="0.1", leverage=10
    )
    position_set_tpsl(position_id=on_grid.pk, take_profit="61000", stop_loss="59000")
    before = money_snapshot()

    _to_fifty(client, btc)

    long.refresh_from_db()
    short.refresh_from_db()
    assert (long.take_profit, long.stop_loss) == (D(61250), D(59000))
    assert (short.take_profit, short.stop_loss) == (D(59000), D(61250))
    assert TpSlChange.objects.filter(position=on_grid).count() == 1  # only its owner's
    moved = TpSlChange.objects.filter(position=long).last()
    assert moved is not None and "tick size of BTCUSDT changed to 50" in moved.reason
    # The instructor reads the same reason on the position's admin page.
    html = client.get(reverse("admin:positions_position_change", args=[long.pk])).content.decode()
    reasons = re.findall(r'<td class="field-reason">(.*?)</td>', html, re.S)
    assert [re.sub(r"<[^>]+>", "", text).strip() for text in reasons] == [
        "-",
        "the tick size of BTCUSDT changed to 50",
    ]
    after = money_snapshot()
    assert (after.accounts, after.collateral, after.pockets) == (
        before.accounts,
        before.collateral,
        before.pockets,
    )
    assert not LedgerTransaction.objects.filter(position_id__in=[long.pk, short.pk]).exclude(
        kind=LedgerTransaction.Kind.OPEN
    )
    assert_ledger_invariants()

    page = Client()
    page.force_login(student.user)
    content = page.get(reverse("position", args=[long.pk])).content.decode()
    assert _timeline_tpsl(content)[-1] == (
        "TP / SL moved onto the new tick grid Take-profit 61,234.5 → 61,250; "
        "stop-loss 59,012.3 → 59,000 — the tick size of BTCUSDT changed to 50"
    )
    # The form shows the levels as stored; sending it back with a new stop-loss works.
    assert 'value="61250"' in content
    response = page.post(
        reverse("position-tpsl", args=[long.pk]),
        {"tpsl-take_profit": "61250", "tpsl-stop_loss": "59100"},
    )
    assert response.status_code == 302, response.content.decode()
    long.refresh_from_db()
    assert (long.take_profit, long.stop_loss) == (D(61250), D(59100))


def _long_with_stops(account, btc: Instrument, level: str) -> tuple[Position, Order]:
    """A 125x long (its liquidation price about 0.4% below, near 59,809) with a stop-loss
    and a reduce-only stop at ``level``."""
    long = position_open(
        account_id=account.pk, instrument_id=btc.pk, side="long", quantity="0.01", leverage=125
    )
    position_set_tpsl(position_id=long.pk, stop_loss=level)
    stop = _rest(
        account,
        btc,
        side="short",
        type="stop",
        stop_price=level,
        reduce_only=True,
        position_id=long.pk,
    )
    return long, stop


def test_a_stop_loss_that_would_land_beyond_the_liquidation_price_moves_the_other_way(
    market, student
):
    client, btc = market
    long, reduce_stop = _long_with_stops(student, btc, "59812.3")
    lp = Position.objects.get(pk=long.pk).liquidation_price
    assert lp is not None and D(59800) < lp < D("59812.3")

    _to_fifty(client, btc)

    # Rounded down to 59,800 it would sit past the liquidation price and never fire: it
    # fires a little earlier instead.
    long.refresh_from_db()
    assert long.stop_loss == D(59850)
    assert _successor(reduce_stop).stop_price == D(59850)
    assert_ledger_invariants()


def test_a_stop_loss_with_no_valid_tick_is_removed_and_the_student_told(market, student):
    client, btc = market
    long, reduce_stop = _long_with_stops(student, btc, "59830.1")
    # The market fell close to the liquidation price: between it and the mark there is no
    # tick of the new grid left.
    Instrument.objects.filter(pk=btc.pk).update(mark_price=D("59840.3"))

    _to_fifty(client, btc)

    long.refresh_from_db()
    assert long.status == Position.Status.OPEN and long.stop_loss is None
    change = TpSlChange.objects.filter(position=long).last()
    assert change is not None
    assert (change.stop_loss_before, change.stop_loss_after) == (D("59830.1"), None)
    assert "no tick of the new grid" in change.reason
    cancelled = Order.objects.get(pk=reduce_stop.pk)
    assert cancelled.status == Order.Status.CANCELLED
    assert not Order.objects.filter(replaces=cancelled).exists()
    assert "tick size of BTCUSDT changed to 50" in cancelled.reject_reason
    assert_ledger_invariants()


def test_a_refused_tick_change_moves_nothing(market, student):
    client, btc = market
    order = _rest(student, btc, side="long", type="limit", price="59990.3")
    response = post_tick_size(client, btc, "100")  # above 0.1% of the mark
    assert response.status_code == 200
    assert Order.objects.get(pk=order.pk).status == Order.Status.RESTING
    assert not Order.objects.filter(replaces=order).exists()


# Each field whose change brings resting orders in line: a new value, its name in messages.
GRID_CHANGES = {
    "tick_size": ("50", "tick size"),
    "lot_size": ("0.01", "lot size"),
    "min_notional": ("1000", "minimum notional"),
}


@pytest.mark.parametrize("field", GRID_CHANGES)
def test_a_tick_size_and_tiers_changed_in_one_save_are_refused_and_change_nothing(
    market, student, field
):
    client, btc = market
    value, name = GRID_CHANGES[field]
    order = _rest(student, btc, side="long", type="limit", price="59990.3")
    stored = getattr(btc, field)
    tiers_before = list(btc.tiers.order_by("pk").values_list("mmr", "max_leverage"))
    page = reverse("admin:positions_instrument_change", args=[btc.pk])
    data = admin_form_data(client.get(page))
    data[field] = value
    data["tiers-0-max_leverage"] = str(int(data["tiers-0-max_leverage"]) - 1)
    response = client.post(page, data)
    assert response.status_code == 200
    assert f"Change the {name} and the margin tiers in two saves" in response.content.decode()
    btc.refresh_from_db()
    assert getattr(btc, field) == stored
    assert list(btc.tiers.order_by("pk").values_list("mmr", "max_leverage")) == tiers_before
    assert Order.objects.get(pk=order.pk).status == Order.Status.RESTING
    # Each on its own is taken.
    data = admin_form_data(client.get(page))
    data[field] = value
    assert client.post(page, data).status_code == 302
    data = admin_form_data(client.get(page))
    data["tiers-0-max_leverage"] = str(int(data["tiers-0-max_leverage"]) - 1)
    assert client.post(page, data).status_code == 302
    assert btc.tiers.order_by("pk").values_list("max_leverage", flat=True)[0] == (
        tiers_before[0][1] - 1
    )
