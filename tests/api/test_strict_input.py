"""Input the API would not use is refused with the field named, never silently dropped."""

from __future__ import annotations

from decimal import Decimal

import pytest

from positions.models import Order, Position
from tests.api.conftest import order_body

pytestmark = pytest.mark.django_db

ORDERS = "/api/v1/orders/"


def assert_refused(response, field: str, code: str = "invalid_request") -> None:
    assert response.status_code == 400, response.content[:300]
    error = response.json()["error"]
    assert error["code"] == code, error
    assert field in error["fields"], error


@pytest.fixture
def position(api, account, btc):
    placed = api.post(ORDERS, order_body(account), format="json").json()
    return Position.objects.get(pk=placed["position"])


def test_unknown_body_fields_are_refused_on_every_post(api, account, position):
    for path, body in (
        (ORDERS, order_body(account)),
        ("/api/v1/orders/preview", order_body(account)),
        (f"/api/v1/positions/{position.pk}/close", {}),
        (f"/api/v1/positions/{position.pk}/margin", {"amount": "5"}),
        (f"/api/v1/positions/{position.pk}/tpsl", {"take_profit": "70000"}),
    ):
        response = api.post(path, {**body, "takeProfit": "70000"}, format="json")
        assert_refused(response, "takeProfit")
        assert response.json()["error"]["fields"]["takeProfit"] == ["Unknown field."]
    position.refresh_from_db()
    assert (position.take_profit, position.quantity) == (None, position.opened_quantity)
    assert Order.objects.count() == 1


def test_unknown_fields_are_named_beside_the_other_errors(api, account, btc):
    response = api.post(ORDERS, {**order_body(account), "side": "up", "qty": "1"}, format="json")
    assert_refused(response, "qty")
    assert set(response.json()["error"]["fields"]) == {"side", "qty"}


def test_side_and_type_are_read_in_any_letter_case_as_exchanges_send_them(api, account, btc):
    placed = api.post(
        ORDERS, order_body(account, side="BUY", type="LIMIT", price="59000"), format="json"
    )
    assert placed.status_code == 201, placed.json()
    assert (placed.json()["side"], placed.json()["type"]) == ("long", "limit")


def test_a_wrong_side_or_type_is_answered_with_the_words_it_may_be(api, account, btc):
    response = api.post(ORDERS, order_body(account, side="up", type="Limit_Order"), format="json")
    assert_refused(response, "side")
    assert response.json()["error"]["fields"] == {
        "side": ['"up" is not one of long, short, buy, sell.'],
        "type": ['"Limit_Order" is not one of market, limit, stop.'],
    }
    assert not Order.objects.exists()


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"position": 1}, "position"),
        ({"price": "60000"}, "price"),
        ({"type": "stop", "stop_price": "61000", "price": "61000"}, "price"),
        ({"stop_price": "61000"}, "stop_price"),
        ({"type": "limit", "price": "59000", "stop_price": "61000"}, "stop_price"),
        ({"reduce_only": True, "position": 1, "take_profit": "70000"}, "take_profit"),
    ],
)
def test_order_fields_that_the_order_would_not_use_are_refused(api, account, btc, extra, field):
    for path in (ORDERS, "/api/v1/orders/preview"):
        assert_refused(api.post(path, order_body(account, **extra), format="json"), field)
    assert not Order.objects.exists()


@pytest.mark.parametrize("position", [{}, {"position": None}])
def test_a_reduce_only_order_without_its_position_is_a_malformed_request(
    api, account, btc, position
):
    """The mirror of ``position`` without ``reduce_only``: a shape mistake, named at the field."""
    opened = api.post(ORDERS, order_body(account), format="json")
    assert opened.status_code == 201
    orders = list(Order.objects.values_list("pk", flat=True))
    body = order_body(account, side="short", reduce_only=True, **position)
    for path in (ORDERS, "/api/v1/orders/preview"):
        response = api.post(path, body, format="json")
        assert_refused(response, "position")
        assert response.json()["error"]["fields"] == {
            "position": ["A reduce-only order names the position it reduces."]
        }
    assert list(Order.objects.values_list("pk", flat=True)) == orders
    assert Position.objects.get().is_open


@pytest.mark.parametrize("limit", ["0", "-1", "abc", "1.5", "1_0", "+5", " 5", "\u0665", "\uff15"])
def test_a_limit_that_is_not_a_positive_whole_number_is_refused(api, account, btc, limit):
    for path in ("/api/v1/orders/", "/api/v1/instruments/", "/api/v1/instruments/BTCUSDT/prices/"):
        assert_refused(api.get(path, {"limit": limit}), "limit")


@pytest.mark.parametrize("written", ["+{}", "{}_0", " {}", "{} ", "\u0661{}"])
def test_ids_and_counts_in_query_parameters_are_plain_digits(api, account, btc, written):
    """Python's int() would read each of these; the API reads digits as it does in bodies."""
    plain = api.get("/api/v1/positions/", {"account": str(account.pk)})
    assert plain.status_code == 200
    odd = written.format(account.pk)
    assert_refused(api.get("/api/v1/positions/", {"account": odd}), "account")
    prices = "/api/v1/instruments/BTCUSDT/prices/"
    assert_refused(api.get(prices, {"latest": written.format(5)}), "latest")


def test_a_limit_over_the_maximum_is_cut_to_it(api, account, btc, monkeypatch):
    from api.pagination import NewestFirst

    monkeypatch.setattr(NewestFirst, "max_page_size", 2)
    for _ in range(3):
        api.post("/api/v1/orders/", order_body(account), format="json")
    page = api.get("/api/v1/orders/", {"limit": "5000"})
    assert page.status_code == 200
    assert len(page.json()["results"]) == 2 and page.json()["next"]


def test_repeated_query_parameters_are_refused(api, account, btc):
    response = api.get("/api/v1/positions/?symbol=BTCUSDT&symbol=ETHUSDT")
    assert_refused(response, "symbol")
    response = api.get("/api/v1/orders/?status=filled&limit=5&limit=6")
    assert_refused(response, "limit")


def test_a_body_field_sent_twice_is_refused_not_read_as_its_last_value(api, account, position):
    # JSON readers keep the last of two equal keys: this order would go out with no stop-loss.
    body = (
        f'{{"account": {account.pk}, "symbol": "BTCUSDT", "side": "long", "quantity": "0.01", '
        '"stop_loss": "59000", "leverage": 10, "stop_loss": null}'
    )
    response = api.post(ORDERS, body, content_type="application/json")
    assert_refused(response, "stop_loss")
    assert response.json()["error"]["fields"] == {"stop_loss": ["Send stop_loss once."]}
    assert Order.objects.count() == 1  # the position's own opening order only
    margin = api.post(
        f"/api/v1/positions/{position.pk}/margin",
        '{"amount": "5", "amount": "-5"}',
        content_type="application/json",
    )
    assert_refused(margin, "amount")
    position.refresh_from_db()
    assert position.collateral.amount == Decimal("60")


def test_every_operation_declares_the_400_that_a_repeated_parameter_gets(api, account, btc):
    order = api.post(
        "/api/v1/orders/", order_body(account, type="limit", price="59000"), format="json"
    ).json()
    schema = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            assert "400" in operation["responses"], f"{method.upper()} {path}"
    for method, path in (
        ("get", "/api/v1/health"),
        ("get", "/api/v1/me"),
        ("delete", f"/api/v1/orders/{order['id']}/"),
    ):
        response = getattr(api, method)(f"{path}?limit=5&limit=6")
        assert_refused(response, "limit")
    assert api.get(f"/api/v1/orders/{order['id']}/").json()["status"] == "resting"


def test_a_price_the_order_would_not_use_is_the_same_error_on_placing_and_replacing(
    api, account, btc
):
    stop = order_body(account, type="stop", stop_price="61000")
    limit = order_body(account, type="limit", price="59000")
    placed = {
        "price": api.post(ORDERS, {**stop, "price": "62000"}, format="json"),
        "stop_price": api.post(ORDERS, {**limit, "stop_price": "58000"}, format="json"),
    }
    resting = {
        "price": api.post(ORDERS, stop, format="json").json(),
        "stop_price": api.post(ORDERS, limit, format="json").json(),
    }
    for field, order in resting.items():
        replaced = api.patch(f"{ORDERS}{order['id']}/", {field: "62000"}, format="json")
        assert_refused(placed[field], field)
        assert_refused(replaced, field)
        assert replaced.json()["error"]["fields"] == placed[field].json()["error"]["fields"]
    assert Order.objects.filter(status="resting").count() == 2


@pytest.mark.parametrize(
    "query", ["position={position}", "client_order_id=take-profit-1", "status=resting", "limit=1"]
)
def test_cancelling_every_order_refuses_a_filter_it_does_not_take(api, account, position, query):
    """Ignored, a filter that the list of orders takes would cancel every resting order."""
    protect = order_body(
        account,
        side="short",
        type="limit",
        price="61000",
        reduce_only=True,
        position=position.pk,
        client_order_id="take-profit-1",
    )
    del protect["leverage"]
    kept = [
        api.post(ORDERS, protect, format="json").json()["id"],
        api.post(ORDERS, order_body(account, type="limit", price="59000"), format="json").json()[
            "id"
        ],
    ]
    name = query.split("=")[0]
    response = api.delete(f"{ORDERS}?{query.format(position=position.pk)}")
    assert_refused(response, name)
    assert set(Order.objects.filter(status="resting").values_list("pk", flat=True)) == set(kept)
    assert [o["id"] for o in api.delete(f"{ORDERS}?symbol=btcusdt").json()["cancelled"]] == kept


def test_a_query_parameter_the_endpoint_does_not_read_is_refused_not_ignored(
    api, account, position, other_account
):
    """Ignored, ?symbol= on the statement (which only takes account) would answer every
    symbol's movements as if they were one's, and a misspelt ?acount= every account's."""
    for path, name in (
        ("/api/v1/statement/?symbol=ETHUSDT", "symbol"),
        ("/api/v1/statement/?position=1", "position"),
        ("/api/v1/positions/?acount=1", "acount"),
        ("/api/v1/orders/?side=short", "side"),
        ("/api/v1/liquidations/?symbol=ETHUSDT", "symbol"),
        ("/api/v1/margin-calls/?position=1", "position"),
        ("/api/v1/accounts/?classroom=1", "classroom"),
        (f"/api/v1/accounts/{account.pk}/?account=2", "account"),
        (f"/api/v1/positions/{position.pk}/?status=open", "status"),
        ("/api/v1/instruments/BTCUSDT/?symbol=ETHUSDT", "symbol"),
        ("/api/v1/instruments/BTCUSDT/prices/?from=2030-01-01", "from"),
        ("/api/v1/me?account=1", "account"),
    ):
        response = api.get(path)
        assert_refused(response, name)
        assert response.json()["error"]["fields"][name] == ["Unknown parameter."]
    for path, body in (
        (ORDERS, order_body(account)),
        (f"/api/v1/positions/{position.pk}/close", {}),
        (f"/api/v1/positions/{position.pk}/margin", {"amount": "5"}),
    ):
        assert_refused(api.post(f"{path}?account={account.pk}", body, format="json"), "account")
    position.refresh_from_db()
    assert (position.quantity, Order.objects.count()) == (position.opened_quantity, 1)
    # What each endpoint reads, and a page link as the API gave it, still work.
    assert api.get(f"/api/v1/fills/?position={position.pk}&account={account.pk}").status_code == 200
    first = api.get("/api/v1/positions/?status=open&symbol=btcusdt&limit=1").json()
    assert [p["id"] for p in first["results"]] == [position.pk]
    later = api.get("/api/v1/instruments/BTCUSDT/prices/?since=2030-01-01T00:00:00Z&limit=5")
    assert later.status_code == 200
    assert api.options("/api/v1/fills/?anything=1").status_code == 200


def test_the_query_parameters_read_are_those_the_schema_declares(api):
    from django.urls import resolve

    schema = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    for path, item in schema["paths"].items():
        match = resolve(path.replace("{id}", "1").replace("{symbol}", "BTCUSDT"))
        view = match.func.view_class  # type: ignore[attr-defined]
        for method, operation in item.items():
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}
            read = set(view.query_params.get(method, ()))
            assert read == declared, f"{method.upper()} {path}"
