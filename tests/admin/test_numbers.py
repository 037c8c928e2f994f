"""Stored decimals read as written in the admin: lists, read-only fields and inlines show
-30 and 50, not -30.0000 and 50.00000000, and never round what was stored."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from django.urls import reverse

from accounts.admin_numbers import written
from accounts.models import LedgerEntry
from liquidation.models import Scenario
from positions.models import Instrument, Position

pytestmark = pytest.mark.django_db


def cell(html: str, css_class: str) -> list[str]:
    """The texts of the list cells or read-only fields whose class is ``css_class``."""
    return [
        text.strip()
        for text in re.findall(rf'<(?:td|th|p|div) class="{css_class}"[^>]*>(.*?)</', html, re.S)
    ]


@pytest.mark.parametrize(
    ("stored", "shown"),
    [
        ("10000.00000000", "10,000"),
        ("-120000.00000000", "-120,000"),
        ("0.00080000", "0.0008"),
        ("59708.3000000000", "59,708.3"),
        ("131450.00000000", "131,450"),
        ("0E-8", "0"),
        ("-0.00000001", "-0.00000001"),
        ("1E+15", "1,000,000,000,000,000"),
    ],
)
def test_written_keeps_every_digit_and_drops_the_padding(stored, shown):
    assert written(Decimal(stored)) == shown


def test_a_scenario_reads_its_percent_and_duration_as_written(world, alpha_client):
    scenario = Scenario.objects.get(instrument__classroom=world.alpha_class)
    assert (scenario.percent, scenario.duration_seconds) == (Decimal("-10"), Decimal("60"))
    page = alpha_client.get(reverse("admin:liquidation_scenario_change", args=[scenario.pk]))
    html = page.content.decode()
    assert re.search(r'<div class="readonly">\s*-10\s*</div>', html)
    assert re.search(r'<div class="readonly">\s*60\s*</div>', html)
    assert "-10.0000" not in html and "60.000<" not in html
    listing = alpha_client.get(reverse("admin:liquidation_scenario_changelist")).content.decode()
    assert cell(listing, "field-percent") == ["-10"]
    assert cell(listing, "field-duration_seconds") == ["60"]


def test_margin_tiers_show_their_maintenance_amounts_as_written(world, alpha_client):
    btc = Instrument.objects.get(classroom=world.alpha_class)
    amounts = list(btc.tiers.order_by("notional_floor").values_list("cum", flat=True))
    assert any(a != a.to_integral_value() or a >= 1000 for a in amounts)
    html = alpha_client.get(
        reverse("admin:positions_instrument_change", args=[btc.pk])
    ).content.decode()
    shown = [re.sub(r"<[^>]+>", "", c).strip() for c in cell(html, "field-cum")]
    assert shown[: len(amounts)] == [written(a) for a in amounts]
    assert not [c for c in shown if re.search(r"\.\d*0$", c)]  # no padded zeros


def test_lists_of_money_and_prices_show_numbers_as_written(world, alpha_client):
    classroom_list = alpha_client.get(
        reverse("admin:accounts_classroom_changelist")
    ).content.decode()
    assert cell(classroom_list, "field-starting_balance") == [
        written(world.alpha_class.starting_balance)
    ]
    position = Position.objects.filter(account__classroom=world.alpha_class).first()
    assert position is not None
    positions = alpha_client.get(reverse("admin:positions_position_changelist")).content.decode()
    assert written(position.entry_price) in cell(positions, "field-entry_price")
    entries = alpha_client.get(reverse("admin:accounts_ledgerentry_changelist")).content.decode()
    amounts = {
        written(a)
        for a in LedgerEntry.objects.filter(classroom=world.alpha_class).values_list(
            "amount", flat=True
        )
    }
    assert set(cell(entries, "field-amount")) <= amounts
    assert not [c for c in cell(entries, "field-amount") if c.endswith("00000")]


def test_margin_calls_list_their_ratio_as_the_monitor_does(world, alpha_client):
    from liquidation.models import MarginCall
    from web.templatetags.ringfence import share_pct

    call = MarginCall.objects.get(classroom=world.alpha_class)
    assert call.margin_ratio == Decimal("0.85")
    listing = alpha_client.get(reverse("admin:liquidation_margincall_changelist")).content.decode()
    assert cell(listing, "field-ratio") == [share_pct(call.margin_ratio)]  # 85.00%


def test_the_price_feed_settings_are_edited_as_written(world, alpha_client):
    from liquidation.models import PriceFeed

    btc = Instrument.objects.get(classroom=world.alpha_class)
    PriceFeed.objects.filter(instrument=btc).update(
        kind=PriceFeed.Kind.SIMULATED, volatility=Decimal("0.0008"), replay_speed=Decimal(2)
    )
    html = alpha_client.get(
        reverse("admin:positions_instrument_change", args=[btc.pk])
    ).content.decode()
    assert re.search(r'name="feed-0-volatility"[^>]*value="0.0008"', html)
    assert re.search(r'name="feed-0-replay_speed"[^>]*value="2"', html)
    assert "0.00080000" not in html and 'value="2.0000"' not in html


def test_positions_list_the_liquidation_price_the_student_sees(world, alpha_client):
    from web.templatetags.ringfence import risk_price

    html = alpha_client.get(reverse("admin:positions_position_changelist")).content.decode()
    rows = {
        int(pk): row
        for row in html.split("<tbody>", 1)[1].split("</tr>")
        for pk in re.findall(r"/position/(\d+)/change/", row)[:1]
    }
    positions = Position.objects.filter(account__classroom=world.alpha_class)
    open_one = positions.get(status=Position.Status.OPEN)
    closed = positions.exclude(status=Position.Status.OPEN).first()
    assert open_one.liquidation_price is not None and closed is not None
    shown = risk_price(open_one.liquidation_price, open_one)  # on the 0.1 tick
    assert cell(rows[open_one.pk], "field-shown_liquidation_price") == [shown]
    assert written(open_one.liquidation_price) != shown  # the stored value has more digits
    assert cell(rows[closed.pk], "field-shown_liquidation_price") == ["-"]


def test_money_fields_are_labelled_in_words(world, client):
    """Realised PnL and auto-deleveraging in the product's words, not the columns' names."""
    from liquidation.models import LiquidationEvent

    client.force_login(world.bravo)
    event = LiquidationEvent.objects.get(position__account__classroom=world.bravo_class)
    pages = [
        reverse("admin:liquidation_liquidationevent_change", args=[event.pk]),
        reverse("admin:positions_position_change", args=[event.position_id]),
    ]
    html = {url: client.get(url).content.decode() for url in pages}
    for url in pages:
        assert "Realized pnl" not in html[url] and "Adl amount" not in html[url], url
    assert "Covered by auto-deleveraging" in html[pages[0]]
    assert "<label>Realised PnL:</label>" in html[pages[1]]
    assert "<label>Take-profit:</label>" in html[pages[1]]
    assert "<label>Stop-loss:</label>" in html[pages[1]]


def resting_limit_order(world):
    """The first alpha account's limit buy 10% below the mark: it rests, holding margin."""
    from accounts.models import TradingAccount
    from accounts.money import to_tick
    from positions.services import order_place

    account = TradingAccount.objects.filter(classroom=world.alpha_class).order_by("pk").first()
    instrument = Instrument.objects.filter(classroom=world.alpha_class).order_by("pk").first()
    assert account is not None and instrument is not None and instrument.mark_price is not None
    below = to_tick(instrument.mark_price * Decimal("0.9"), instrument.tick_size, up=False)
    order = order_place(
        account_id=account.pk, instrument_id=instrument.pk, side="long", type="limit",
        price=below, quantity=instrument.lot_size * 10, leverage=5,
    )  # fmt: skip
    return order


def test_accounts_and_orders_show_what_resting_orders_hold_read_only(world, alpha_client):
    from accounts.money import money_text
    from positions.models import Order

    order = resting_limit_order(world)
    account = order.account
    assert order.held_margin > 0
    held = money_text(order.held_margin, world.alpha_class.currency)
    accounts = alpha_client.get(reverse("admin:accounts_tradingaccount_changelist"))
    assert held in cell(accounts.content.decode(), "field-held_by_orders")
    page = alpha_client.get(reverse("admin:accounts_tradingaccount_change", args=[account.pk]))
    assert cell(page.content.decode(), "readonly").count(held) >= 1
    orders = alpha_client.get(reverse("admin:positions_order_changelist")).content.decode()
    assert written(order.held_margin) in cell(orders, "field-held_margin")
    detail = alpha_client.get(reverse("admin:positions_order_change", args=[order.pk]))
    assert written(order.held_margin) in cell(detail.content.decode(), "readonly")
    assert 'name="held_margin"' not in detail.content.decode()
    assert Order.objects.get(pk=order.pk).held_margin == order.held_margin


def test_the_ledger_names_the_order_whose_margin_a_leg_holds(world, alpha_client):
    """An instructor tracing what an account's orders hold finds each order-margin leg by
    its order, as a collateral leg by its position."""
    from accounts.models import LedgerTransaction

    order = resting_limit_order(world)
    entries = reverse("admin:accounts_ledgerentry_changelist")
    found = alpha_client.get(entries, {"q": str(order.pk)}).content.decode()
    leg = LedgerEntry.objects.get(pocket=LedgerEntry.Pocket.ORDER, order_id=order.pk)
    assert f"/ledgerentry/{leg.pk}/change/" in found
    assert str(order.pk) in cell(found, "field-order_id")
    hold = LedgerTransaction.objects.get(
        kind=LedgerTransaction.Kind.ORDER_HOLD, entries__order_id=order.pk
    )
    page = alpha_client.get(reverse("admin:accounts_ledgertransaction_change", args=[hold.pk]))
    inline = [
        re.sub(r"<[^>]+>", "", c).strip() for c in cell(page.content.decode(), "field-order_id")
    ]
    assert str(order.pk) in inline


@pytest.mark.parametrize("typed", ["1_0", "\uff11\uff10", "\u0661\u0660"])
def test_whole_numbers_an_instructor_types_are_read_in_ascii_digits_only(
    world, alpha_client, typed
):
    """Python's int, under Django's integer field, reads each of these as 10: the admin
    refuses them, as the API does, next to the field, and saves nothing."""
    from accounts.models import Classroom
    from liquidation.models import PriceFeed
    from tests.admin.forms import admin_form_data

    refusal = "digits 0 to 9 only, without separators"
    classroom_page = reverse("admin:accounts_classroom_change", args=[world.alpha_class.pk])
    data = admin_form_data(alpha_client.get(classroom_page))
    data["max_leverage"] = typed
    response = alpha_client.post(classroom_page, data)
    assert response.status_code == 200
    assert refusal in str(response.context["adminform"].form.errors["max_leverage"])
    assert Classroom.objects.get(pk=world.alpha_class.pk).max_leverage != 10

    btc = Instrument.objects.get(classroom=world.alpha_class)
    saved = (btc.max_leverage, list(btc.tiers.values_list("max_leverage", flat=True)))
    seed = PriceFeed.objects.get(instrument=btc).seed
    page = reverse("admin:positions_instrument_change", args=[btc.pk])
    for field in ("max_leverage", "tiers-0-max_leverage", "feed-0-seed"):
        data = admin_form_data(alpha_client.get(page))
        data[field] = typed
        response = alpha_client.post(page, data)
        assert response.status_code == 200, field
        assert refusal in response.content.decode(), field
    btc.refresh_from_db()
    assert (btc.max_leverage, list(btc.tiers.values_list("max_leverage", flat=True))) == saved
    assert PriceFeed.objects.get(instrument=btc).seed == seed


@pytest.mark.parametrize("typed", ["10_000", "\uff11\uff10\uff10", "\u0661\u0660\u0660"])
def test_amounts_an_instructor_types_are_read_in_ascii_digits_only(world, alpha_client, typed):
    """Decimal reads each of these as a number: the admin's change pages and action forms
    refuse them, as the services refuse them from the API, and nothing moves."""
    from accounts.models import Classroom, LedgerTransaction, TradingAccount
    from tests.admin.forms import admin_form_data

    refusal = "digits 0 to 9 and a point only, without separators"
    classroom_page = reverse("admin:accounts_classroom_change", args=[world.alpha_class.pk])
    data = admin_form_data(alpha_client.get(classroom_page))
    data["starting_balance"] = typed
    response = alpha_client.post(classroom_page, data)
    assert response.status_code == 200
    assert refusal in str(response.context["adminform"].form.errors["starting_balance"])
    assert Classroom.objects.get(pk=world.alpha_class.pk).starting_balance == 10000

    written_before = LedgerTransaction.objects.count()
    accounts = TradingAccount.objects.filter(classroom=world.alpha_class)
    response = alpha_client.post(
        reverse("admin:accounts_tradingaccount_changelist"),
        {"action": "grant_or_deduct", "_selected_action": [a.pk for a in accounts],
         "confirm": "yes", "direction": "grant", "amount": typed, "reason": "quiz"},
    )  # fmt: skip
    assert response.status_code == 200
    assert refusal in response.content.decode()
    assert LedgerTransaction.objects.count() == written_before
