"""Every page and action: another student gets 404 for someone else's account, position or order,
and nothing is written."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.urls import reverse

from accounts.models import LedgerTransaction
from positions.models import Order, Position
from positions.services import order_place

pytestmark = pytest.mark.django_db

ACCOUNT_PAGES = [
    ("get", "dashboard", {}),
    ("get", "dashboard-live", {}),
    ("get", "trade", {}),
    ("post", "trade", {"side": "long", "type": "market", "quantity": "0.01", "leverage": "5"}),
    (
        "post",
        "trade-preview",
        {"side": "long", "type": "market", "quantity": "0.01", "leverage": "5"},
    ),
    ("get", "history", {}),
    ("get", "statement-csv", {}),
    ("get", "positions-csv", {}),
    ("get", "leaderboard", {}),
]
POSITION_PAGES = [
    ("get", "position", {}),
    ("get", "position-live", {}),
    ("get", "position-chart", {}),
    ("post", "position-margin", {"margin-action": "add", "margin-amount": "10"}),
    ("post", "position-margin", {"margin-action": "remove", "margin-amount": "10"}),
    ("post", "position-close", {"close-quantity": ""}),
    ("post", "position-tpsl", {"tpsl-take_profit": "70000"}),
]


@pytest.fixture
def alices_things(account, btc):
    position = order_place(
        account_id=account.pk, instrument_id=btc.pk, side="long", quantity="0.1", leverage=10
    ).position
    order = order_place(
        account_id=account.pk, instrument_id=btc.pk, side="long", type="limit", quantity="0.1",
        leverage=10, price="50000",
    )  # fmt: skip
    return {"account": account, "position": position, "order": order}


def _request(client, method, name, pk, data):
    return getattr(client, method)(reverse(name, args=[pk]), data)


@pytest.mark.parametrize(("method", "name", "data"), ACCOUNT_PAGES)
def test_another_students_account_is_404(bob_client, alices_things, btc, method, name, data):
    data = {**data, "instrument": btc.pk} if method == "post" else data
    assert _request(bob_client, method, name, alices_things["account"].pk, data).status_code == 404
    assert Position.objects.count() == 1


@pytest.mark.parametrize(("method", "name", "data"), POSITION_PAGES)
def test_another_students_position_is_404(bob_client, alices_things, method, name, data):
    position = alices_things["position"]
    before = LedgerTransaction.objects.count()
    assert _request(bob_client, method, name, position.pk, data).status_code == 404
    position.refresh_from_db()
    assert position.status == Position.Status.OPEN
    assert position.take_profit is None
    assert LedgerTransaction.objects.count() == before


def test_another_students_order_is_404(bob_client, alices_things):
    order = alices_things["order"]
    before = (Order.objects.count(), LedgerTransaction.objects.count())
    assert _request(bob_client, "post", "order-cancel", order.pk, {}).status_code == 404
    assert _request(bob_client, "get", "order-change", order.pk, {}).status_code == 404
    changed = {"quantity": "0.2", "price": "49000"}
    assert _request(bob_client, "post", "order-change", order.pk, changed).status_code == 404
    order.refresh_from_db()
    assert order.status == Order.Status.RESTING
    assert (Order.objects.count(), LedgerTransaction.objects.count()) == before


def test_the_owner_reaches_every_page(alice_client, alices_things):
    for method, name, _ in ACCOUNT_PAGES:
        if method == "get":
            assert (
                _request(alice_client, "get", name, alices_things["account"].pk, {}).status_code
                == 200
            )
    for method, name, _ in POSITION_PAGES:
        if method == "get":
            assert (
                _request(alice_client, "get", name, alices_things["position"].pk, {}).status_code
                == 200
            )


def test_an_instructor_without_an_account_gets_404_for_a_students_pages(client, alices_things):
    instructor = alices_things["account"].classroom.instructor
    client.force_login(instructor)
    assert _request(client, "get", "dashboard", alices_things["account"].pk, {}).status_code == 404
    assert _request(client, "get", "position", alices_things["position"].pk, {}).status_code == 404


def test_missing_ids_are_404_not_500(alice_client, alices_things):
    assert alice_client.get(reverse("position", args=[999999])).status_code == 404
    assert alice_client.get(reverse("dashboard", args=[999999])).status_code == 404
    assert alice_client.post(reverse("order-cancel", args=[999999])).status_code == 404
    assert alice_client.get(reverse("order-change", args=[999999])).status_code == 404
    assert Position.objects.get().collateral.amount == Decimal(600)


def test_a_deactivated_student_is_signed_out_of_every_page_and_trades_nothing(
    alice_client, account, btc
):
    from liquidation.instructor import user_set_active

    assert alice_client.get(reverse("dashboard", args=[account.pk])).status_code == 200
    user_set_active(user_id=account.user_id, active=False)
    written = LedgerTransaction.objects.count()
    for method, name, data in ACCOUNT_PAGES:
        response = getattr(alice_client, method)(reverse(name, args=[account.pk]), data)
        assert response.status_code == 302, name
        assert response["Location"].startswith(reverse("login")), name
    assert LedgerTransaction.objects.count() == written
    assert not Order.objects.filter(account=account).exists()


@pytest.mark.parametrize("tradable", [True, False])
@pytest.mark.parametrize("name", ["trade", "trade-preview"])
def test_a_ticket_naming_another_classrooms_instrument_is_refused(
    alice_client, account, btc, name, tradable
):
    from tests.factories import make_classroom, make_instrument

    theirs = make_instrument(make_classroom(name="Elsewhere"), is_tradable=tradable)
    data = {"instrument": theirs.pk, "side": "long", "type": "market", "quantity": "0.01",
            "leverage": "5"}  # fmt: skip
    response = alice_client.post(reverse(name, args=[account.pk]), data)
    content = response.content.decode()
    assert "Select a valid choice." in content.split('id="id_instrument_error"', 1)[1]
    assert f'<option value="{theirs.pk}"' not in content  # not offered, not even by name
    assert not Order.objects.exists()
    assert not LedgerTransaction.objects.exclude(kind="deposit").exists()
