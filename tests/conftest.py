"""Shared fixtures: a classroom with a BTC market and two funded students."""

from __future__ import annotations

import socket

import pytest
import redis
from django.conf import settings

from tests.factories import make_classroom, make_instrument, make_student
from tests.processes import ThrowawayRedis


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


def _delete_counters() -> None:
    if settings.REDIS_URL:
        client = redis.Redis.from_url(settings.REDIS_URL)
        prefix = settings.CACHES["default"].get("KEY_PREFIX", "")
        keys = [
            key
            for pattern in ("ringfence:attempts:*", "throttle_*")
            for key in client.scan_iter(match=f"{prefix}:*:{pattern}")
        ]
        if keys:
            client.delete(*keys)


@pytest.fixture(autouse=True)
def _forget_counters():
    """Failed sign-ins, join codes and API requests are counted in the shared Redis cache
    across requests, under ids that a new test database gives out again: each test starts
    with none, whatever the tests before it (or an earlier run within the hour) sent."""
    _delete_counters()
    yield
    _delete_counters()


@pytest.fixture
def own_redis(settings):
    """The cache (and with it throttling and the counts of failed attempts) on a Redis server
    of the test's own, which the test may kill and start again."""
    server = ThrowawayRedis()
    settings.REDIS_URL = server.url
    settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": server.url}}
    yield server
    server.kill()


@pytest.fixture
def silent_redis(settings):
    """The cache on a server that accepts connections and never answers, as a Redis behind a
    network fault or stuck on a slow disk does."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        url = f"redis://127.0.0.1:{server.getsockname()[1]}/0"
        settings.REDIS_URL = url
        settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": url}}
        yield url
