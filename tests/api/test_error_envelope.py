"""Whatever a bot sends, the API answers JSON: the error envelope, never HTML or a 500."""

from __future__ import annotations

import pytest
from django.urls import URLPattern, reverse

from api.urls import v1

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
