"""The dashboard's notice of resting orders the engine refused when their price was reached."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from positions.models import Order
from positions.services import order_place
from tests.engine.helpers import set_price

pytestmark = pytest.mark.django_db


def refused_notice(html: str) -> str:
    """The "Recently refused" section of a dashboard page ("" when it shows none)."""
    if 'id="refused-orders"' not in html:
        return ""
    return html.split('id="refused-orders"', 1)[1].split("</section>", 1)[0]


def place_stop(account, instrument, quantity: str, stop_price: str = "61000") -> Order:
    return order_place(
        account_id=account.pk, instrument_id=instrument.pk, side="long", type="stop",
        quantity=quantity, leverage=10, stop_price=stop_price,
    )  # fmt: skip


def close_trading(classroom) -> None:
    classroom.trading_enabled = False
    classroom.save(update_fields=["trading_enabled"])


@pytest.mark.parametrize("page", ["dashboard", "dashboard-live"])
def test_a_stop_refused_when_it_triggered_is_listed_with_its_reason_on_the_dashboard(
    alice_client, classroom, account, other_account, btc, page
):
    older = place_stop(account, btc, "0.01")
    refused = place_stop(account, btc, "0.02")
    bobs = place_stop(other_account, btc, "0.03")
    still_resting = order_place(
        account_id=account.pk, instrument_id=btc.pk, side="long", type="limit",
        quantity="0.04", leverage=10, price="50000",
    )  # fmt: skip
    close_trading(classroom)
    set_price(btc, "61500")  # the stops trigger; the closed classroom refuses them
    for order in (older, refused, bobs):
        order.refresh_from_db()
        assert order.status == Order.Status.REJECTED
    assert refused.reject_reason == "Trading is closed in this classroom right now."
    now = timezone.now()
    # Refused two days ago, placed the day before.
    Order.objects.filter(pk=older.pk).update(
        created_at=now - timedelta(days=3), updated_at=now - timedelta(days=2)
    )
    # An order the rules refused as it was placed is written refused, stamped once: the
    # ticket told the student why there and then.
    at_placement = Order.objects.create(
        account=account, instrument=btc, side="long", type=Order.Type.LIMIT, quantity="0.05",
        leverage=10, price="59000", status=Order.Status.REJECTED,
        reject_reason="Leverage is capped at 10x.", created_at=now, updated_at=now,
    )  # fmt: skip
    # And the ticket refusing an order now stores nothing to list.
    response = alice_client.post(
        reverse("trade", args=[account.pk]),
        {"instrument": btc.pk, "side": "long", "type": "stop", "quantity": "0.06",
         "leverage": "10", "stop_price": "62000"},
    )  # fmt: skip
    assert response.status_code == 400

    html = alice_client.get(reverse(page, args=[account.pk])).content.decode()
    notice = refused_notice(html)
    assert "Recently refused" in notice
    items = notice.split('<li data-order="')[1:]
    assert [int(item.split('"', 1)[0]) for item in items] == [refused.pk]
    item = " ".join(items[0].split())
    assert f"Order #{refused.pk}</a> Stop market long 0.020 BTCUSDT stop 61,000.0" in item
    assert "Trading is closed in this classroom right now." in item
    assert f'<time datetime="{refused.updated_at.isoformat()}" data-local="minutes">' in item
    assert f'href="{reverse("history", args=[account.pk])}#orders"' in item
    for absent in (older, bobs, at_placement):
        assert f"Order #{absent.pk}<" not in notice
    assert "Leverage is capped" not in html and "0.060" not in notice
    # The refused order has left the resting orders; the one still resting is there.
    resting = html.split("Resting orders", 1)[1]
    assert f"Order #{still_resting.pk} " in resting and f"Order #{refused.pk} " not in resting


def test_the_notice_lists_the_five_latest_refusals_newest_first(
    alice_client, classroom, account, btc
):
    stops = [place_stop(account, btc, "0.01", stop_price=f"{61000 + 10 * n}") for n in range(6)]
    close_trading(classroom)
    set_price(btc, "61500")
    refusals = sorted(
        Order.objects.filter(pk__in=[s.pk for s in stops], status=Order.Status.REJECTED),
        key=lambda o: (o.updated_at, o.pk),
        reverse=True,
    )
    assert len(refusals) == 6

    notice = refused_notice(
        alice_client.get(reverse("dashboard", args=[account.pk])).content.decode()
    )
    shown = [int(item.split('"', 1)[0]) for item in notice.split('<li data-order="')[1:]]
    assert shown == [o.pk for o in refusals[:5]]


def test_no_notice_without_a_recent_refusal(alice_client, classroom, account, btc):
    stop = place_stop(account, btc, "0.01")
    html = alice_client.get(reverse("dashboard-live", args=[account.pk])).content.decode()
    assert f"Order #{stop.pk} " in html and refused_notice(html) == ""
    assert "Recently refused" not in html
    close_trading(classroom)
    set_price(btc, "61500")
    now = timezone.now()
    Order.objects.filter(pk=stop.pk).update(
        created_at=now - timedelta(hours=26), updated_at=now - timedelta(hours=25)
    )
    html = alice_client.get(reverse("dashboard-live", args=[account.pk])).content.decode()
    assert "Recently refused" not in html and f"Order #{stop.pk}" not in html
