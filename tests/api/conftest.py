"""API fixtures: students with keys of each kind, an HTTP client that signs with a key."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from api.models import ApiKey
from api.services import api_key_create, api_key_revoke
from tests.factories import make_classroom, make_instrument, make_student


def new_key(account, scope: str = "trade", name: str = "bot") -> str:
    return api_key_create(user_id=account.user_id, name=name, scope=scope).raw


def client_for(key: str | None = None) -> APIClient:
    client = APIClient()
    if key:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


def order_body(account, **extra) -> dict[str, object]:
    """A market order for 0.01 BTCUSDT at 10x on ``account``, with ``extra`` fields."""
    body: dict[str, object] = {
        "account": account.pk,
        "symbol": "BTCUSDT",
        "side": "long",
        "quantity": "0.01",
        "leverage": 10,
    }
    body.update(extra)
    return body


@pytest.fixture
def trade_key(account):
    return new_key(account, "trade")


@pytest.fixture
def read_key(account):
    return new_key(account, "read", name="watcher")


@pytest.fixture
def revoked_key(account):
    raw = new_key(account, "trade", name="old bot")
    api_key = ApiKey.objects.get(prefix=raw.split("_")[1])
    api_key_revoke(user_id=account.user_id, api_key_id=api_key.pk)
    return raw


@pytest.fixture
def expired_key(account):
    raw = new_key(account, "trade", name="expired bot")
    # Keys cannot be created already expired, so let time pass for this one.
    ApiKey.objects.filter(prefix=raw.split("_")[1]).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    return raw


@pytest.fixture
def api(trade_key):
    return client_for(trade_key)


@pytest.fixture
def outsider_account(db):
    """A student of another classroom, trading the same symbol in their own market."""
    elsewhere = make_classroom(name="Other class", starting_balance=Decimal("20000"))
    make_instrument(elsewhere, mark="45000")
    return make_student(elsewhere, username="mallory")


@pytest.fixture
def outsider(outsider_account):
    return client_for(new_key(outsider_account, "trade", name="mallory bot"))
