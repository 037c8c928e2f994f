"""What a bot sees when Redis, which counts its requests, goes away: ``503
service_unavailable`` with ``Retry-After``, never a 500 and never a request let through
uncounted; and the same web process answers as before once Redis is back."""

from __future__ import annotations

import logging
import time

import pytest
import redis

from positions.models import Order
from tests.api.conftest import client_for, new_key, order_body
from tests.invariants import assert_ledger_invariants, money_snapshot

pytestmark = pytest.mark.django_db

UNAVAILABLE_MESSAGE = (
    "Ringfence is briefly unavailable: its shared cache cannot be reached. "
    "Try again after Retry-After seconds."
)


def assert_service_unavailable(response) -> None:
    assert response.status_code == 503, response.content
    assert response["Content-Type"] == "application/json"
    assert response.json() == {
        "error": {"code": "service_unavailable", "message": UNAVAILABLE_MESSAGE, "fields": {}}
    }
    assert int(response["Retry-After"]) >= 1


def test_a_bot_gets_503_while_redis_is_down_places_nothing_and_trades_again_once_it_is_back(
    own_redis, account, btc, caplog
):
    api = client_for(new_key(account))
    assert api.get("/api/v1/me").status_code == 200
    before = money_snapshot()

    own_redis.kill()
    with caplog.at_level(logging.WARNING):
        me = api.get("/api/v1/me")
        order = api.post(
            "/api/v1/orders/", order_body(account, client_order_id="outage-1"), format="json"
        )
    assert_service_unavailable(me)
    assert_service_unavailable(order)
    # Nothing was placed, and no money moved.
    assert money_snapshot() == before
    assert not Order.objects.filter(client_order_id="outage-1").exists()
    # One line per refused request, naming the cause.
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(logged) == 2, logged
    assert all("unreachable (Connection" in line for line in logged)

    own_redis.restart()  # an empty Redis on the same port, as after a restart without a disk
    again = api.post(
        "/api/v1/orders/", order_body(account, client_order_id="outage-1"), format="json"
    )
    assert again.status_code == 201, again.content
    assert again["X-RateLimit-Remaining"] == str(600 - 1)  # counted afresh in the new Redis
    assert Order.objects.filter(client_order_id="outage-1").count() == 1
    assert_ledger_invariants(btc.classroom_id)


def test_a_signed_in_browser_gets_503_too_and_refusals_are_still_answered_as_such(
    own_redis, account, client
):
    client.login(username="alice", password="ringfence-test")
    own_redis.kill()
    assert_service_unavailable(client.get("/api/v1/accounts/"))
    # Authentication comes first: a bad key is still told so, without the cache.
    bad = client_for("rf_nope_nope").get("/api/v1/me")
    assert bad.status_code == 401
    # So is a read-only key's write: nothing would be served, so nothing needs counting.
    watcher = client_for(new_key(account, "read", name="watcher"))
    assert watcher.delete("/api/v1/orders/").status_code == 403


def test_a_redis_that_does_not_answer_costs_a_request_about_a_second_not_a_hang(
    silent_redis, account
):
    api = client_for(new_key(account))
    started = time.monotonic()
    response = api.get("/api/v1/me")
    assert_service_unavailable(response)
    assert time.monotonic() - started < 3


def test_the_schema_declares_503_wherever_the_throttle_answers(client):
    schema = client.get("/api/schema/?format=json").json()
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            responses = operation.get("responses", {})
            if "429" in responses:
                assert "503" in responses, f"{method} {path}"
                assert "Retry-After" in responses["503"]["headers"]
                assert responses["503"]["content"] == responses["429"]["content"]


def test_a_full_redis_that_refuses_writes_is_a_503_too(own_redis, account):
    """A Redis at its memory limit without eviction (or a replica left read-only after a
    failover) answers every count with an error: the request is refused as in an outage."""
    api = client_for(new_key(account))
    assert api.get("/api/v1/me").status_code == 200
    server = redis.Redis.from_url(own_redis.url)
    server.config_set("maxmemory-policy", "noeviction")
    server.config_set("maxmemory", "1")
    try:
        assert_service_unavailable(api.get("/api/v1/me"))
    finally:
        server.config_set("maxmemory", "0")
    assert api.get("/api/v1/me").status_code == 200
