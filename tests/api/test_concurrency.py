"""Retries racing each other over real HTTP: one client_order_id never opens twice."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from positions.models import Fill, Order, Position
from tests.api.conftest import new_key, order_body
from tests.factories import make_classroom, make_instrument, make_student
from tests.invariants import assert_ledger_invariants


@pytest.fixture
def racer(transactional_db, live_server):
    """A student's account, and a function that POSTs an order body over HTTP with their key."""
    classroom = make_classroom(name="Race class")
    make_instrument(classroom)
    account = make_student(classroom, username="racer")
    key = new_key(account, "trade")

    def place(body: dict[str, object]) -> requests.Response:
        return requests.post(
            f"{live_server.url}/api/v1/orders/",
            json=body,
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )

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
        return requests.post(
            f"{live_server.url}/api/v1/positions/{opened['position']}/close",
            json={"quantity": "0.01", "client_order_id": "close-retry"},
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )

    with ThreadPoolExecutor(max_workers=10) as pool:
        responses = list(pool.map(close, range(10)))
    assert [r.status_code for r in responses] == [200] * 10
    assert {r.json()["quantity"] for r in responses} == {"0.04"}
    assert Fill.objects.filter(position_id=opened["position"], kind="close").count() == 1
    assert Order.objects.filter(client_order_id="close-retry").count() == 1
    assert_ledger_invariants()
