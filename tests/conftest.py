"""Shared fixtures: a classroom with a BTC market and two funded students."""

from __future__ import annotations

import pytest
import redis
from django.conf import settings

from tests.factories import make_classroom, make_instrument, make_student


@pytest.fixture
def classroom(db):
    return make_classroom(name="Trading 101")


@pytest.fixture
def btc(classroom):
    return make_instrument(classroom)


@pytest.fixture
def account(classroom):
    return make_student(classroom, username="alice")


@pytest.fixture
def other_account(classroom):
    return make_student(classroom, username="bob")


def _delete_failed_attempts() -> None:
    if settings.REDIS_URL:
        client = redis.Redis.from_url(settings.REDIS_URL)
        prefix = settings.CACHES["default"].get("KEY_PREFIX", "")
        keys = list(client.scan_iter(match=f"{prefix}:*:ringfence:attempts:*"))
        if keys:
            client.delete(*keys)


@pytest.fixture(autouse=True)
def _forget_failed_attempts():
    """Failed sign-ins and join codes are counted in the shared Redis cache across requests;
    each test starts with none, whatever the tests before it typed."""
    _delete_failed_attempts()
    yield
    _delete_failed_attempts()
