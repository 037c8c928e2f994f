"""The page that gives a resting order a new quantity or price (the service replaces it)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.urls import reverse

from positions.models import Order
from positions.services import order_place
from tests.invariants import assert_ledger_invariants, money_snapshot

pytestmark = pytest.mark.django_db


@pytest.fixture
def resting(account, btc):
    return order_place(
        account_id=account.pk, instrument_id=btc.pk, side="long", type="limit",
        quantity="0.1", leverage=10, price="59000",
    )  # fmt: skip


def change_url(order, next_page: str = "") -> str:
    url = reverse("order-change", args=[order.pk])
    return f"{url}?next={next_page}" if next_page else url


def test_the_page_shows_the_order_and_its_price_field_only(alice_client, resting):
    page = alice_client.get(change_url(resting)).content.decode()
    assert f"Change order #{resting.pk}" in page
    assert 'name="quantity"' in page and 'name="price"' in page
    assert 'name="stop_price"' not in page  # a limit order has no stop price
    assert "holds 592.95" in page


def test_the_page_of_a_reduce_only_order_names_the_position_it_closes(
    alice_client, account, position, btc
):
    order = order_place(
        account_id=account.pk, instrument_id=btc.pk, side="short", type="stop",
        quantity="0.2", stop_price="58000", reduce_only=True, position_id=position.pk,
    )  # fmt: skip
    page = alice_client.get(change_url(order)).content.decode()
    what = page.split("<p>Stop market short 0.200 BTCUSDT stop 58,000.0", 1)[1].split("</p>")[0]
    # Not a leverage of its own: it closes part of the position, at the position's.
    assert what == (
        f' (reduce only: closes <a href="/positions/{position.pk}/">Position #{position.pk}</a>).'
    )


def test_a_new_price_replaces_the_order_and_goes_back_where_it_came_from(
    alice_client, account, resting
):
    dashboard = reverse("dashboard", args=[account.pk])
    form = alice_client.get(change_url(resting, dashboard)).context["form"]
    data = {
        "quantity": "0.1",
        "price": "58000",
        "client_order_id": form["client_order_id"].value(),
        "next": dashboard,
    }
    response = alice_client.post(change_url(resting), data)
    assert response.status_code == 302 and response["Location"] == dashboard
    new = Order.objects.get(replaces=resting)
    assert (new.status, new.price, new.held_margin) == ("resting", Decimal(58000), Decimal("582.9"))
    page = alice_client.get(dashboard).content.decode()
    assert f"Order #{resting.pk} replaced by order #{new.pk}: limit long 0.1" in page
    # A second submit of the same form (a double click) replaces nothing more.
    again = alice_client.post(change_url(resting), data)
    assert again.status_code == 302
    assert Order.objects.filter(account=account).count() == 2
    assert_ledger_invariants()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"quantity": "0.1", "price": "59000"}, "This is the order as it stands"),
        ({"quantity": "0.1", "price": "-1"}, "Must be greater than zero."),
        ({"quantity": "0.1", "price": "abc"}, "Enter a number."),
        ({"quantity": "0.1", "price": ""}, "This field is required."),
        ({"quantity": "100", "price": "59000"}, "This needs"),
        ({"quantity": "0.0001", "price": "59000"}, "0.001"),
        ({}, "This field is required."),
    ],
)
def test_a_refused_change_says_why_and_leaves_the_order_resting(
    alice_client, resting, data, message
):
    before = money_snapshot()
    response = alice_client.post(change_url(resting), data)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert money_snapshot() == before
    resting.refresh_from_db()
    assert (resting.status, resting.held_margin) == ("resting", Decimal("592.95"))


def test_an_order_that_no_longer_rests_sends_you_back_saying_so(alice_client, account, resting):
    alice_client.post(reverse("order-cancel", args=[resting.pk]))
    response = alice_client.get(change_url(resting))
    assert response.status_code == 302
    page = alice_client.get(response["Location"]).content.decode()
    assert f"Order #{resting.pk} is cancelled; only resting orders can be changed." in page


def test_next_never_leads_off_the_site(alice_client, account, resting):
    data = {"quantity": "0.2", "price": "59000", "next": "https://evil.example/"}
    response = alice_client.post(change_url(resting), data)
    assert response["Location"] == reverse("dashboard", args=[account.pk])


def test_the_dashboard_and_the_position_page_link_to_it(alice_client, account, resting):
    dashboard = alice_client.get(reverse("dashboard", args=[account.pk])).content.decode()
    assert f'href="{change_url(resting)}?next=' in dashboard


@pytest.mark.parametrize("target", ["dashboard", "1e400", "//evil.example/"])
def test_next_that_is_no_path_of_the_site_leads_to_the_dashboard(
    alice_client, account, resting, target
):
    response = alice_client.post(
        change_url(resting), {"quantity": "0.2", "price": "59000", "next": target}
    )
    assert response.status_code == 302
    assert response["Location"] == reverse("dashboard", args=[account.pk])


def test_the_form_sent_again_with_another_price_replaces_nothing_more_and_says_so(
    alice_client, account, resting
):
    dashboard = reverse("dashboard", args=[account.pk])
    once = alice_client.get(change_url(resting, dashboard)).context["form"]["client_order_id"]
    data = {"quantity": "0.1", "client_order_id": once.value(), "next": dashboard}
    alice_client.post(change_url(resting), {**data, "price": "58000"}, follow=True)
    before = money_snapshot()
    changed = alice_client.post(change_url(resting), {**data, "price": "57000"}, follow=True)
    assert money_snapshot() == before
    assert changed.redirect_chain == [(dashboard, 302)]
    assert [str(m) for m in changed.context["messages"]] == [
        "This form was already sent with other values, and that first submit was carried out; "
        "nothing more was done. Check the order before trying again."
    ]
    assert Order.objects.get(replaces=resting).price == Decimal(58000)


def test_an_order_already_replaced_names_the_order_that_replaced_it(alice_client, resting):
    from positions.services import order_replace

    new = order_replace(order_id=resting.pk, price="58000")
    response = alice_client.get(change_url(resting))
    page = alice_client.get(response["Location"]).content.decode()
    assert f"Order #{resting.pk} was replaced by order #{new.pk}; only resting" in page


def test_a_price_refused_by_the_orders_stop_loss_names_a_stop_loss_the_page_shows(
    alice_client, account, btc
):
    """The new order keeps the old one's take-profit and stop-loss: the page shows them, so a
    refusal that names the stop-loss speaks of something the student can see."""
    order = order_place(
        account_id=account.pk, instrument_id=btc.pk, side="long", type="limit",
        quantity="0.1", leverage=10, price="59000", take_profit="65000", stop_loss="58000",
    )  # fmt: skip
    page = alice_client.get(change_url(order)).content.decode()
    assert "at 59,000.0, 10x, take-profit 65,000.0, stop-loss 58,000.0; it holds" in page
    before = money_snapshot()
    response = alice_client.post(change_url(order), {"quantity": "0.1", "price": "57000"})
    assert response.status_code == 400
    content = response.content.decode()
    assert "A stop-loss must be below 57,000.0." in content
    assert "stop-loss 58,000.0; it holds" in content
    assert 'name="price" value="57000"' in content  # what was typed stays
    assert money_snapshot() == before
    assert Order.objects.get(pk=order.pk).status == Order.Status.RESTING
    assert_ledger_invariants()


@pytest.mark.parametrize("price", ["59000", "58000"])  # as it was, and a new price
def test_a_change_sent_from_a_page_left_open_after_the_order_ended_says_it_ended(
    alice_client, account, resting, price
):
    """The order was cancelled (or filled) while its change page stood open: whatever the
    form holds, the answer is that the order no longer rests, not that nothing was changed."""
    dashboard = reverse("dashboard", args=[account.pk])
    form = alice_client.get(change_url(resting, dashboard)).context["form"]
    alice_client.post(reverse("order-cancel", args=[resting.pk]), follow=True)
    before = money_snapshot()
    data = {
        "quantity": "0.1",
        "price": price,
        "client_order_id": form["client_order_id"].value(),
        "next": dashboard,
    }
    response = alice_client.post(change_url(resting), data, follow=True)
    assert response.redirect_chain == [(dashboard, 302)]
    assert [str(m) for m in response.context["messages"]] == [
        f"Order #{resting.pk} is cancelled; only resting orders can be changed."
    ]
    assert money_snapshot() == before
    assert Order.objects.count() == 1
