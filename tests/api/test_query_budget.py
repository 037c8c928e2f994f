"""The order placement's hot path stays lean: a pinned number of queries, and the order it
answers with (built in memory, not re-read) is exactly the order that was stored."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from accounts.models import ClassroomPocket, TradingAccount
from positions.models import Collateral
from tests.api.conftest import client_for, new_key, order_body
from tests.invariants import assert_ledger_invariants

pytestmark = pytest.mark.django_db

ORDERS = "/api/v1/orders/"
# Key lookup; then, in the service's transaction: lock the account; instrument, tiers and a
# repeated client_order_id in one query; insert position, collateral, order and fill; the
# ledger transaction, its entries, the account, the collateral and the fee pocket.
# (Under the test's own transaction the service's BEGIN/COMMIT show as two savepoint queries.)
ORDER_QUERIES = 14  # 20 before this budget was pinned


def test_one_api_order_placement_makes_a_pinned_number_of_queries(account, btc):
    api = client_for(new_key(account))
    api.post(ORDERS, order_body(account, client_order_id="warm-up"), format="json")  # last_used_at
    with CaptureQueriesContext(connection) as queries:
        response = api.post(ORDERS, order_body(account, client_order_id="bot-7"), format="json")
    assert response.status_code == 201, response.json()
    assert len(queries) <= ORDER_QUERIES, "\n".join(q["sql"][:120] for q in queries)


def test_a_repeated_client_order_id_costs_no_more_queries(account, btc):
    api = client_for(new_key(account))
    body = order_body(account, client_order_id="bot-8")
    api.post(ORDERS, body, format="json")
    with CaptureQueriesContext(connection) as queries:
        again = api.post(ORDERS, body, format="json")
    assert again.status_code == 200
    assert len(queries) <= 6, "\n".join(q["sql"][:120] for q in queries)


def test_the_placed_order_is_answered_exactly_as_stored(account, btc):
    api = client_for(new_key(account))
    placed = api.post(
        ORDERS,
        order_body(account, symbol="btcusdt", take_profit="70000", extra_collateral="1.5"),
        format="json",
    ).json()
    assert api.get(f"{ORDERS}{placed['id']}/").json() == placed
    resting = api.post(
        ORDERS, order_body(account, type="limit", price="50000", client_order_id="r"), format="json"
    ).json()
    assert resting["status"] == "resting"
    assert api.get(f"{ORDERS}{resting['id']}/").json() == resting
    assert_ledger_invariants()


def test_the_service_leaves_its_objects_as_stored(account, btc):
    from positions.services import order_place

    order = order_place(
        account_id=account.pk,
        owner_id=account.user_id,
        symbol="BTCUSDT",
        side="long",
        quantity="0.01",
        leverage=10,
        extra_collateral="2",
    )
    assert order.position is not None
    assert order.account.balance == TradingAccount.objects.get(pk=account.pk).balance
    stored = Collateral.objects.get(pk=order.position.pk)
    assert order.position.collateral.amount == stored.amount == 62
    assert order.position.collateral.initial_margin == stored.initial_margin


def test_a_multi_pocket_posting_needs_every_pocket(classroom):
    from accounts.ledger import Leg, ledger_post
    from accounts.models import LedgerEntry, LedgerTransaction

    ClassroomPocket.objects.filter(classroom=classroom, kind="fees").delete()
    before = list(ClassroomPocket.objects.values_list("kind", "balance"))
    with pytest.raises(ValueError, match="has no fees pocket"), transaction.atomic():
        ledger_post(
            classroom_id=classroom.pk,
            kind=LedgerTransaction.Kind.INSURANCE_SEED,
            legs=[
                Leg(LedgerEntry.Pocket.HOUSE, Decimal(-1)),
                Leg(LedgerEntry.Pocket.FEES, Decimal(1)),
            ],
        )
    assert list(ClassroomPocket.objects.values_list("kind", "balance")) == before
    assert not LedgerTransaction.objects.filter(kind=LedgerTransaction.Kind.INSURANCE_SEED).exists()


def test_the_benchmarks_baseline_authenticates_and_throttles_like_any_call(
    account, revoked_key, settings
):
    """GET /api/v1/health is the benchmark's "trivial endpoint": same key check, same throttle."""
    api = client_for(new_key(account))
    api.get("/api/v1/health")  # last_used_at
    with CaptureQueriesContext(connection) as queries:
        assert api.get("/api/v1/health").status_code == 200
    assert [q["sql"].split('"')[1] for q in queries] == ["api_apikey"]
    assert client_for(revoked_key).get("/api/v1/health").status_code == 401
    # An hour's window, so the two requests cannot straddle two windows.
    settings.API_THROTTLE_RATE = "1/hour"
    assert [api.get("/api/v1/health").status_code for _ in range(2)] == [200, 429]


@pytest.mark.parametrize(
    ("path", "budget"),
    [
        # The key lookup; the instrument; its ticks (a bot polls this every round).
        ("/api/v1/instruments/BTCUSDT/prices/?latest=20", 3),
        # The key lookup; the instrument; its margin tiers.
        ("/api/v1/instruments/BTCUSDT/", 3),
    ],
)
def test_reading_one_instrument_makes_a_pinned_number_of_queries(account, btc, path, budget):
    api = client_for(new_key(account))
    api.get(path)  # the key's last_used_at
    with CaptureQueriesContext(connection) as queries:
        response = api.get(path)
    assert response.status_code == 200, response.json()
    assert len(queries) <= budget, "\n".join(q["sql"][:120] for q in queries)
