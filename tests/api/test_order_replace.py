"""PATCH /api/v1/orders/{id}/: replace a resting order with a new quantity or price."""

from __future__ import annotations

import pytest

from positions.models import Order
from tests.api.conftest import order_body
from tests.invariants import assert_ledger_invariants, money_snapshot

pytestmark = pytest.mark.django_db

ORDERS = "/api/v1/orders/"


@pytest.fixture
def resting(api, account, btc):
    body = order_body(account, type="limit", price="59000", client_order_id="buy-the-dip")
    answer = api.post(ORDERS, body, format="json")
    assert answer.status_code == 201, answer.json()
    return answer.json()


def test_a_new_price_answers_the_new_order_and_the_old_one_says_what_replaced_it(api, resting):
    answer = api.patch(f"{ORDERS}{resting['id']}/", {"price": "58500"}, format="json")
    assert answer.status_code == 200, answer.json()
    new = answer.json()
    assert (new["status"], new["price"], new["replaces"]) == ("resting", "58500", resting["id"])
    # 0.01 x 58,500 / 10 = 58.50 margin + 0.2925 fee.
    assert new["held_margin"] == "58.7925"
    assert (new["quantity"], new["side"], new["leverage"]) == ("0.01", "long", 10)
    old = api.get(f"{ORDERS}{resting['id']}/").json()
    assert (old["status"], old["held_margin"], old["replaces"]) == ("cancelled", "0", None)
    assert old["reject_reason"] == f"Replaced by order #{new['id']}"
    assert_ledger_invariants()


def test_a_retry_with_its_client_order_id_replaces_once(api, resting):
    url = f"{ORDERS}{resting['id']}/"
    body = {"quantity": "0.02", "client_order_id": "bigger"}
    first = api.patch(url, body, format="json")
    again = api.patch(url, body, format="json")
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert Order.objects.filter(status="resting").count() == 1
    reused = api.patch(url, {**body, "quantity": "0.03"}, format="json")
    assert reused.status_code == 409
    assert reused.json()["error"]["code"] == "client_order_id_reused"


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        ({}, 400, "invalid_order", None),
        ({"price": "abc"}, 400, "invalid_price", "price"),
        ({"price": "-1"}, 400, "invalid_price", "price"),
        ({"stop_price": "58000"}, 400, "invalid_request", "stop_price"),  # as on placing
        ({"side": "short"}, 400, "invalid_request", "side"),  # only what the doc names
        ({"quantity": "1000"}, 409, "insufficient_balance", "quantity"),
    ],
)
def test_a_refused_replacement_changes_nothing(api, resting, body, status, code, field):
    before = money_snapshot()
    answer = api.patch(f"{ORDERS}{resting['id']}/", body, format="json")
    assert answer.status_code == status, answer.json()
    error = answer.json()["error"]
    assert error["code"] == code
    if field:
        assert field in error["fields"], error
    assert money_snapshot() == before
    assert Order.objects.get(pk=resting["id"]).status == "resting"


def test_an_order_that_no_longer_rests_is_a_conflict(api, resting):
    url = f"{ORDERS}{resting['id']}/"
    assert api.delete(url).status_code == 200
    answer = api.patch(url, {"price": "58000"}, format="json")
    assert answer.status_code == 409
    assert answer.json()["error"]["code"] == "order_not_cancellable"
    assert "only resting orders can be replaced" in answer.json()["error"]["message"]


def test_cancelling_a_replaced_order_names_the_order_still_resting_in_its_place(api, resting):
    url = f"{ORDERS}{resting['id']}/"
    new = api.patch(url, {"price": "58500"}, format="json").json()
    # A second bot process still holds the old id: it must learn that an order still rests.
    answer = api.delete(url)
    assert answer.status_code == 409
    assert answer.json()["error"]["code"] == "order_not_cancellable"
    assert f"was replaced by order #{new['id']}" in answer.json()["error"]["message"]
    assert api.get(f"{ORDERS}{new['id']}/").json()["status"] == "resting"


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        # 12 BTC at 59,000 is in the 75x tier: the order's own 100x is too high at that size.
        ({"quantity": "12"}, "leverage_too_high", "quantity"),
        # At 66,000 the order's stop-loss 58,800 lies beyond its liquidation price.
        ({"price": "66000"}, "invalid_price", "price"),
        # Below the order's stop-loss: the stop-loss is now on the wrong side of the price.
        ({"price": "58000"}, "invalid_price", "price"),
        # Two changes at once: the refusal is about neither one alone.
        ({"quantity": "12", "price": "59100"}, "leverage_too_high", None),
    ],
)
def test_a_refusal_by_the_orders_own_terms_names_what_the_patch_sent(
    api, account, classroom, btc, body, code, field
):
    classroom.max_leverage = 125
    classroom.save(update_fields=["max_leverage"])
    placed = api.post(
        ORDERS,
        order_body(account, type="limit", price="59000", leverage=100, stop_loss="58800"),
        format="json",
    )
    assert placed.status_code == 201, placed.json()
    before = money_snapshot()
    answer = api.patch(f"{ORDERS}{placed.json()['id']}/", body, format="json")
    assert answer.status_code == 400, answer.json()
    error = answer.json()["error"]
    # A PATCH cannot send leverage, take_profit or stop_loss: a bot told to fix one of those
    # fields could not; what it can change is what it sent.
    assert error["code"] == code
    assert error["fields"] == ({field: [error["message"]]} if field else {}), error
    assert money_snapshot() == before
    assert Order.objects.get(pk=placed.json()["id"]).status == "resting"
