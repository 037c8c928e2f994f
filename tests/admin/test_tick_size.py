"""An instructor's change of an instrument's tick size: bounded by the mark, and the engine
moves the mark onto the new grid by at most half a tick."""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from django.urls import reverse
from django.utils import timezone

from liquidation import engine
from liquidation.models import PriceFeed, PriceTick
from positions.models import Instrument, Position
from positions.services import position_open
from tests.admin.conftest import make_instructor
from tests.admin.forms import admin_form_data
from tests.admin.test_market_and_classrooms import tier_post
from tests.factories import BTC_BRACKETS, make_classroom, make_instrument, make_student
from tests.invariants import assert_ledger_invariants

pytestmark = pytest.mark.django_db


@pytest.fixture
def market(client):
    """A classroom whose instrument walks with no volatility: every tick keeps the price,
    so the only move a tick makes is its rounding onto the grid."""
    teacher = make_instructor("teacher")
    classroom = make_classroom(instructor=teacher, max_leverage=125)
    btc = make_instrument(classroom, mark="60049.9")
    PriceFeed.objects.create(
        instrument=btc,
        kind=PriceFeed.Kind.SIMULATED,
        volatility=D(0),
        jump_probability=D(0),
    )
    client.force_login(teacher)
    return client, btc


def post_tick_size(client, instrument: Instrument, tick: str):
    page = reverse("admin:positions_instrument_change", args=[instrument.pk])
    data = admin_form_data(client.get(page))
    data["tick_size"] = tick
    return client.post(page, data)


def engine_tick(instrument: Instrument) -> D:
    PriceFeed.objects.filter(instrument=instrument).update(last_tick_at=None)
    result = engine.tick_instrument(instrument.pk, timezone.now())
    assert result.status == "ticked", result
    assert result.mark is not None
    return result.mark


@pytest.mark.parametrize("tick", ["61", "100", "70000"])
def test_a_tick_size_above_a_tenth_of_a_percent_of_the_mark_is_a_form_error(market, tick):
    client, btc = market
    response = post_tick_size(client, btc, tick)
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "current mark 60049.9" in errors["tick_size"][0]
    assert "at most 0.1% of the mark (60.0499)" in errors["tick_size"][0]
    btc.refresh_from_db()
    assert btc.tick_size == D("0.1") and btc.mark_price == D("60049.9")
    assert not PriceTick.objects.filter(instrument=btc).exists()


def test_a_new_instrument_with_a_tick_too_coarse_for_its_mark_is_refused(market):
    client, btc = market
    data = tier_post(btc.classroom, BTC_BRACKETS, tick_size="5", mark_price="3000")
    response = client.post(reverse("admin:positions_instrument_add"), data)
    assert response.status_code == 200
    assert "current mark 3000" in response.context["adminform"].form.errors["tick_size"][0]
    assert not Instrument.objects.filter(symbol="ETHUSDT").exists()


def test_an_allowed_tick_change_moves_the_mark_by_at_most_half_a_new_tick(market):
    client, btc = market
    account = make_student(btc.classroom)
    # A 125x long opened at the old mark: about 0.4% above its liquidation price.
    long = position_open(
        account_id=account.pk, instrument_id=btc.pk, side="long", quantity="0.01", leverage=125
    )
    response = post_tick_size(client, btc, "50")
    assert response.status_code == 302, response.context and response.context["errors"]
    btc.refresh_from_db()
    assert btc.tick_size == D(50) and btc.mark_price == D("60049.9")

    mark = engine_tick(btc)
    # Rounded down, the grid would have moved it to 60,000, almost a whole tick.
    assert mark == D(60050)
    assert abs(mark - D("60049.9")) <= btc.tick_size / 2
    btc.refresh_from_db()
    assert btc.mark_price == mark
    assert list(PriceTick.objects.filter(instrument=btc).values_list("price", flat=True)) == [mark]
    assert Position.objects.get(pk=long.pk).status == Position.Status.OPEN
    assert_ledger_invariants()

    # On the grid again, the feed carries on as before: the flat walk keeps the price.
    assert engine_tick(btc) == D(60050)


def test_an_unchanged_tick_size_is_not_checked_against_the_mark(market):
    client, btc = market
    # A coarse tick from before the bound: other settings can still be saved.
    Instrument.objects.filter(pk=btc.pk).update(tick_size=D(100), mark_price=D(60000))
    page = reverse("admin:positions_instrument_change", args=[btc.pk])
    data = admin_form_data(client.get(page))
    data["name"] = "Bitcoin perpetual"
    response = client.post(page, data)
    assert response.status_code == 302
    btc.refresh_from_db()
    assert btc.name == "Bitcoin perpetual" and btc.tick_size == D(100)
