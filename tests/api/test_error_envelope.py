"""Whatever a bot sends, the API answers JSON: the error envelope, never HTML or a 500."""

from __future__ import annotations

import json

import pytest
from django.urls import URLPattern, reverse

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
