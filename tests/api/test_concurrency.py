"""Retries racing each other over real HTTP: one client_order_id never opens twice."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from positions.models import Order, Position
from tests.api.conftest import new_key, order_body
from tests.factories import make_classroom, make_instrument, make_student
from tests.invariants import assert_ledger_invariants


@pytest.mark.django_db(transaction=True)
def test_parallel_retries_of_one_client_order_id_open_one_position(live_server):
    classroom = make_classroom(name="Race class")
    make_instrument(classroom)
    account = make_student(classroom, username="racer")
    key = new_key(account, "trade")
    body = order_body(account, client_order_id="retry-me")

    def place(_: int) -> requests.Response:
        return requests.post(
            f"{live_server.url}/api/v1/orders/",
            json=body,
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )

    with ThreadPoolExecutor(max_workers=6) as pool:
        responses = list(pool.map(place, range(6)))
    assert {r.status_code for r in responses} <= {200, 201}
    assert 201 in {r.status_code for r in responses}
    assert len({r.json()["id"] for r in responses}) == 1
    assert Order.objects.count() == 1
    assert Position.objects.count() == 1
    later = place(0)
    assert later.status_code == 200 and later.json()["id"] == responses[0].json()["id"]
    assert_ledger_invariants()
