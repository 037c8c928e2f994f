"""Whatever a bot sends, the API answers JSON: the error envelope, never HTML or a 500."""

from __future__ import annotations

import json

import pytest
from django.urls import URLPattern, reverse
from rest_framework.test import APIClient

from api.urls import v1
from positions.models import Order
from tests.api.conftest import order_body

pytestmark = pytest.mark.django_db


def every_endpoint_path() -> list[str]:
    paths = []
    for pattern in v1:
        assert isinstance(pattern, URLPattern)
        kwargs = {
            name: "BTCUSDT" if name == "symbol" else 1
            for name in pattern.pattern.converters  # type: ignore[attr-defined]
        }
        paths.append(reverse(f"api:{pattern.name}", kwargs=kwargs or None))
    return paths


def test_options_describes_every_endpoint_without_building_serializers(api, account, btc):
    for path in every_endpoint_path():
        response = api.options(path)
        assert response.status_code == 200, (path, response.content[:200])
        body = response.json()
        assert body["name"] and body["description"], path
        assert body["renders"] == ["application/json"], path
        assert body["parses"] == ["application/json"], path


def test_json_nested_too_deep_is_invalid_request_not_a_server_error(api, account, btc):
    deep = "[" * 100_000 + "]" * 100_000
    for path in ("/api/v1/orders/", "/api/v1/orders/preview"):
        response = api.post(path, deep, content_type="application/json")
        assert response.status_code == 400, path
        assert response.json()["error"]["code"] == "invalid_request", path
    assert not Order.objects.exists()


def test_a_body_over_the_upload_limit_is_payload_too_large_in_json(api, account, btc, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = json.dumps(order_body(account, client_order_id="x" * 2000))
    for path in ("/api/v1/orders/", "/api/v1/orders/preview"):
        response = api.post(path, body, content_type="application/json")
        assert response.status_code == 413, (path, response.content[:200])
        assert response["Content-Type"] == "application/json"
        assert response.json()["error"]["code"] == "payload_too_large", path
    assert not Order.objects.exists()


def bot_client(key: str) -> APIClient:
    # A bot over real HTTP: Django's CSRF middleware runs as it does in production.
    client = APIClient(enforce_csrf_checks=True)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


def test_writes_to_unknown_api_paths_are_a_json_404_not_a_csrf_page(trade_key, account):
    bot = bot_client(trade_key)
    for method in ("post", "put", "patch", "delete"):
        response = getattr(bot, method)("/api/v1/nothing-here", {}, format="json")
        assert response.status_code == 404, (method, response.content[:200])
        assert response.json()["error"]["code"] == "not_found"


def test_the_other_slash_form_of_an_endpoint_is_that_endpoint(trade_key, account, btc):
    bot = bot_client(trade_key)
    preview = bot.post("/api/v1/orders/preview/", order_body(account), format="json")
    assert preview.status_code == 200, preview.content[:200]
    placed = bot.post("/api/v1/orders", order_body(account, client_order_id="s1"), format="json")
    assert placed.status_code == 201, placed.content[:200]
    position_id = placed.json()["position"]
    closed = bot.post(f"/api/v1/positions/{position_id}/close/", {}, format="json")
    assert closed.status_code == 200, closed.content[:200]
    assert closed.json()["status"] == "closed"
    assert bot.get("/api/v1/me/").json()["username"] == "alice"
    assert bot.get(f"/api/v1/orders/{placed.json()['id']}").json()["client_order_id"] == "s1"
