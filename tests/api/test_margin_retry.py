"""A margin change sent again with its client_request_id (a retry after a lost answer) moves
the margin once; the same id for another change is a conflict that names the first one."""

from __future__ import annotations

from decimal import Decimal

import pytest

from accounts.models import LedgerTransaction, TradingAccount
from positions.models import Collateral
from tests.api.conftest import client_for, new_key, order_body
from tests.invariants import assert_ledger_invariants, money_snapshot

pytestmark = pytest.mark.django_db

ORDERS = "/api/v1/orders/"


def margin_url(position_id: int) -> str:
    return f"/api/v1/positions/{position_id}/margin"


def test_a_margin_change_retried_with_its_client_request_id_moves_once(api, account, btc):
    order = api.post(ORDERS, order_body(account, quantity="0.02"), format="json").json()
    url = margin_url(order["position"])
    for body, collateral in (
        ({"amount": "50", "client_request_id": "add-1"}, "170"),
        ({"amount": "-20", "client_request_id": "remove-1"}, "150"),
    ):
        first = api.post(url, body, format="json")
        assert (first.status_code, first.json()["collateral"]) == (200, collateral)
        before = money_snapshot()
        again = api.post(url, body, format="json")
        # The same answer, as if the first one had arrived: the margin moved once.
        assert (again.status_code, again.json()) == (200, first.json())
        assert money_snapshot() == before
    stored = LedgerTransaction.objects.filter(position_id=order["position"])
    assert sorted(
        stored.exclude(client_request_id="").values_list("kind", "client_request_id")
    ) == [
        ("add_margin", "add-1"),
        ("remove_margin", "remove-1"),
    ]
    # The same amount written otherwise is the same change.
    before = money_snapshot()
    assert (
        api.post(url, {"amount": "50.00", "client_request_id": "add-1"}, format="json").json()[
            "collateral"
        ]
        == "150"
    )
    assert money_snapshot() == before
    # Retried after the position closed: still 200 with the position as it is now.
    api.post(f"/api/v1/positions/{order['position']}/close", {}, format="json")
    before = money_snapshot()
    late = api.post(url, {"amount": "50", "client_request_id": "add-1"}, format="json")
    assert late.status_code == 200, late.json()
    assert (late.json()["status"], late.json()["collateral"]) == ("closed", "0")
    assert money_snapshot() == before
    assert_ledger_invariants()


def test_a_client_request_id_reused_for_another_margin_change_is_a_conflict(api, account, btc):
    first = api.post(ORDERS, order_body(account, quantity="0.02"), format="json").json()
    other = api.post(ORDERS, order_body(account, side="short"), format="json").json()
    api.post(
        margin_url(first["position"]), {"amount": "50", "client_request_id": "m-1"}, format="json"
    )
    before = money_snapshot()
    for position, amount in (
        (first["position"], "51"),
        (first["position"], "-50"),
        (other["position"], "50"),
    ):
        response = api.post(
            margin_url(position), {"amount": amount, "client_request_id": "m-1"}, format="json"
        )
        assert response.status_code == 409, response.json()
        error = response.json()["error"]
        assert error["code"] == "client_request_id_reused"
        assert error["message"] == (
            f"client_request_id 'm-1' was first used to add 50 margin to position "
            f"#{first['position']}; send a new client_request_id for another margin change."
        )
        assert error["fields"] == {"client_request_id": [error["message"]]}
    assert money_snapshot() == before
    assert Collateral.objects.get(pk=first["position"]).amount == Decimal(170)
    assert_ledger_invariants()


def test_a_reused_client_request_id_names_a_first_change_below_a_cent_as_it_moved(
    api, account, btc
):
    position = api.post(ORDERS, order_body(account, quantity="0.02"), format="json").json()
    url = margin_url(position["position"])
    api.post(url, {"amount": "0.001", "client_request_id": "tiny"}, format="json")
    response = api.post(url, {"amount": "0.002", "client_request_id": "tiny"}, format="json")
    assert response.status_code == 409, response.json()
    assert response.json()["error"]["message"] == (
        f"client_request_id 'tiny' was first used to add 0.001 margin to position "
        f"#{position['position']}; send a new client_request_id for another margin change."
    )


def test_a_client_request_id_is_another_accounts_own(api, account, other_account, btc):
    """Ids are the client's own: another student's bot choosing the same one changes its own
    position's margin."""
    mine = api.post(ORDERS, order_body(account), format="json").json()
    api.post(
        margin_url(mine["position"]), {"amount": "5", "client_request_id": "same"}, format="json"
    )
    theirs_api = client_for(new_key(other_account, "trade"))
    theirs = theirs_api.post(ORDERS, order_body(other_account), format="json").json()
    moved = theirs_api.post(
        margin_url(theirs["position"]), {"amount": "5", "client_request_id": "same"}, format="json"
    )
    assert (moved.status_code, moved.json()["collateral"]) == (200, "65")
    assert TradingAccount.objects.get(pk=other_account.pk).balance == Decimal("9934.7")
    assert_ledger_invariants()


@pytest.mark.parametrize(
    ("client_request_id", "status"), [("x" * 64, 200), ("x" * 65, 400), (" padded ", 200)]
)
def test_a_client_request_id_is_at_most_64_characters(api, account, btc, client_request_id, status):
    order = api.post(ORDERS, order_body(account), format="json").json()
    before = money_snapshot()
    response = api.post(
        margin_url(order["position"]),
        {"amount": "5", "client_request_id": client_request_id},
        format="json",
    )
    assert response.status_code == status, response.json()
    if status == 400:
        error = response.json()["error"]
        assert error["code"] == "invalid_request"
        assert error["fields"].keys() == {"client_request_id"}
        assert money_snapshot() == before
    else:
        stored = LedgerTransaction.objects.get(kind="add_margin")
        assert stored.client_request_id == client_request_id.strip()


def test_the_schema_declares_the_client_request_id_of_a_margin_change(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    margin = schema["paths"]["/api/v1/positions/{id}/margin"]["post"]
    body = margin["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    fields = schema["components"]["schemas"][body.rsplit("/", 1)[1]]["properties"]
    assert fields["client_request_id"]["type"] == "string"
    assert fields["client_request_id"]["maxLength"] == 64
    assert "client_request_id_reused" in margin["responses"]["409"]["description"]
    assert "client_request_id" in schema["info"]["description"]
