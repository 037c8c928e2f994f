"""Retries racing each other over real HTTP: one client_order_id never opens twice, one
client_request_id never moves margin twice."""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
import requests

from accounts.models import LedgerTransaction, TradingAccount
from positions.models import Collateral, Fill, Order, Position
from tests.api.conftest import new_key, order_body
from tests.factories import make_classroom, make_instrument, make_student
from tests.invariants import assert_ledger_invariants


def post_with_key(
    live_server, key: str, path: str, body: Mapping[str, object]
) -> requests.Response:
    return requests.post(
        f"{live_server.url}{path}",
        json=body,
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )


@pytest.fixture
def racer(transactional_db, live_server):
    """A student's account, and a function that POSTs an order body over HTTP with their key."""
    classroom = make_classroom(name="Race class")
    make_instrument(classroom)
    account = make_student(classroom, username="racer")
    key = new_key(account, "trade")

    def place(body: dict[str, object]) -> requests.Response:
        return post_with_key(live_server, key, "/api/v1/orders/", body)

    return account, place


def test_parallel_retries_of_one_client_order_id_open_one_position(racer):
    account, place = racer
    body = order_body(account, client_order_id="retry-me")
    with ThreadPoolExecutor(max_workers=10) as pool:
        responses = list(pool.map(place, [body] * 10))
    # Exactly one retry placed it (201); every other one is told it got the original (200).
    assert sorted(r.status_code for r in responses) == [200] * 9 + [201]
    assert len({r.json()["id"] for r in responses}) == 1
    assert Order.objects.count() == 1
    assert Position.objects.count() == 1
    later = place(body)
    assert later.status_code == 200 and later.json()["id"] == responses[0].json()["id"]
    assert_ledger_invariants()


def test_parallel_orders_reusing_a_client_order_id_with_other_terms_conflict(racer):
    account, place = racer
    bodies = [
        order_body(account, client_order_id="shared", quantity="0.01" if n % 2 else "0.02")
        for n in range(10)
    ]
    with ThreadPoolExecutor(max_workers=10) as pool:
        responses = list(pool.map(place, bodies))
    order = Order.objects.get()
    placed = f"{order.quantity.normalize():f}"
    for body, response in zip(bodies, responses, strict=True):
        if body["quantity"] == placed:
            assert response.status_code in (200, 201)
            assert response.json()["id"] == order.pk
        else:
            assert response.status_code == 409
            error = response.json()["error"]
            assert error["code"] == "client_order_id_reused"
            assert f"order {order.pk}" in error["message"]
    assert [r.status_code for r in responses].count(201) == 1
    assert Position.objects.count() == 1
    assert_ledger_invariants()


def test_parallel_retries_of_one_close_client_order_id_close_once(racer, live_server):
    account, place = racer
    opened = place(order_body(account, quantity="0.05")).json()
    key = new_key(account, "trade", name="closer")

    def close(_: int) -> requests.Response:
        body = {"quantity": "0.01", "client_order_id": "close-retry"}
        return post_with_key(
            live_server, key, f"/api/v1/positions/{opened['position']}/close", body
        )

    with ThreadPoolExecutor(max_workers=10) as pool:
        responses = list(pool.map(close, range(10)))
    assert [r.status_code for r in responses] == [200] * 10
    assert {r.json()["quantity"] for r in responses} == {"0.04"}
    assert Fill.objects.filter(position_id=opened["position"], kind="close").count() == 1
    assert Order.objects.filter(client_order_id="close-retry").count() == 1
    assert_ledger_invariants()


@pytest.mark.parametrize(("amount", "collateral"), [("50", "210"), ("-20", "140")])
def test_parallel_retries_of_one_margin_change_move_the_margin_once(
    racer, live_server, amount, collateral
):
    account, place = racer
    opened = place(order_body(account)).json()  # 0.01 at 10x: 60 of collateral
    key = new_key(account, "trade", name="margin bot")

    def change(body: dict[str, object]) -> requests.Response:
        return post_with_key(
            live_server, key, f"/api/v1/positions/{opened['position']}/margin", body
        )

    # 100 more first (160 in all), so that there is margin above the initial one to remove.
    assert change({"amount": "100"}).status_code == 200
    body = {"amount": amount, "client_request_id": f"margin-{amount}"}
    balance = TradingAccount.objects.get(pk=account.pk).balance
    with ThreadPoolExecutor(max_workers=10) as pool:
        responses = list(pool.map(change, [body] * 10))
    assert [r.status_code for r in responses] == [200] * 10, [r.text for r in responses]
    # Every retry answers with the position as the one change left it.
    assert all(r.json() == responses[0].json() for r in responses)
    assert responses[0].json()["collateral"] == collateral
    moved = LedgerTransaction.objects.filter(client_request_id=f"margin-{amount}")
    assert moved.count() == 1
    assert Collateral.objects.get(pk=opened["position"]).amount == Decimal(collateral)
    assert TradingAccount.objects.get(pk=account.pk).balance == balance - Decimal(amount)
    assert_ledger_invariants()
