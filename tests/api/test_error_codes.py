"""One kind of mistake, one error code, under the field the request used."""

from __future__ import annotations

from base64 import b64encode

import pytest

from positions.models import Order
from tests.api.conftest import order_body
from tests.factories import make_instrument

pytestmark = pytest.mark.django_db

ORDERS = "/api/v1/orders/"


@pytest.mark.parametrize(
    "cursor",
    ["garbage", "!!!", b64encode(b"p=abc").decode(), b64encode(b"o=-1").decode()],
)
def test_an_unreadable_cursor_is_invalid_request_not_a_missing_list(api, account, btc, cursor):
    for path in (ORDERS, "/api/v1/positions/", "/api/v1/instruments/BTCUSDT/prices/"):
        response = api.get(path, {"cursor": cursor})
        assert response.status_code == 400, (path, response.content[:200])
        error = response.json()["error"]
        assert (error["code"], list(error["fields"])) == ("invalid_request", ["cursor"])


def test_a_cursor_the_api_gave_still_pages(api, account, btc):
    for _ in range(3):
        api.post(ORDERS, order_body(account), format="json")
    first = api.get(ORDERS, {"limit": 2}).json()
    second = api.get(first["next"])
    assert second.status_code == 200
    assert len(second.json()["results"]) == 1
    # An empty cursor is no cursor, as an empty limit is the default.
    empty = api.get(ORDERS, {"limit": 2, "cursor": ""})
    assert empty.status_code == 200 and empty.json()["results"] == first["results"]


@pytest.mark.parametrize("leverage", [51, 1001, 10**30])
def test_leverage_over_any_cap_is_leverage_too_high(api, account, btc, leverage):
    for path in (ORDERS, "/api/v1/orders/preview"):
        response = api.post(path, order_body(account, leverage=leverage), format="json")
        assert response.status_code == 400, response.content[:200]
        error = response.json()["error"]
        assert (error["code"], list(error["fields"])) == ("leverage_too_high", ["leverage"])
    assert not Order.objects.exists()


def test_leverage_under_one_is_invalid_leverage(api, account, btc):
    response = api.post(ORDERS, order_body(account, leverage=0), format="json")
    assert response.json()["error"]["code"] == "invalid_leverage"


def test_a_reduce_only_order_on_another_symbol_names_the_symbol_field(api, account, btc):
    make_instrument(account.classroom, symbol="ETHUSDT", mark="3000")
    placed = api.post(ORDERS, order_body(account), format="json").json()
    response = api.post(
        ORDERS,
        order_body(
            account,
            symbol="ETHUSDT",
            side="short",
            reduce_only=True,
            position=placed["position"],
        ),
        format="json",
    )
    error = response.json()["error"]
    assert (error["code"], list(error["fields"])) == ("invalid_order", ["symbol"])
    assert Order.objects.count() == 1


@pytest.mark.parametrize("symbol", ["BTC%00USDT", "BTC%0AUSDT", "X" * 500])
def test_a_symbol_in_the_path_that_no_instrument_can_have_is_not_found(api, account, btc, symbol):
    for path in (f"/api/v1/instruments/{symbol}/", f"/api/v1/instruments/{symbol}/prices/"):
        response = api.get(path)
        assert response.status_code == 404, (path, response.content[:200])
        assert response.json()["error"]["code"] == "not_found"
    assert api.get("/api/v1/instruments/btcusdt/").json()["symbol"] == "BTCUSDT"
