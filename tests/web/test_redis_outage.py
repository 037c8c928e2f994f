"""What a student sees when Redis, which counts failed sign-ins and join codes, goes away:
sign-in and joining say they are briefly unavailable (503) rather than let guesses through
uncounted, nothing is half-created, pages that count nothing keep working, and the same web
process signs people in again once Redis is back."""

from __future__ import annotations

import logging
import time

import pytest
import redis
from django.contrib.auth import SESSION_KEY
from django.test import Client
from django.urls import reverse
from kombu.exceptions import OperationalError

from accounts.models import Membership, TradingAccount, User
from config.celery import app as celery_app
from positions.models import Position
from tests.factories import make_classroom
from tests.invariants import assert_ledger_invariants
from web import attempts

pytestmark = pytest.mark.django_db

PASSWORD = "ringfence-test"


def assert_unavailable(response, message: str) -> None:
    assert response.status_code == 503
    assert int(response["Retry-After"]) >= 1
    assert message in response.content.decode()


def test_sign_in_is_briefly_unavailable_for_everyone_and_lets_no_one_in(
    own_redis, account, client, caplog
):
    own_redis.kill()
    assert client.get(reverse("login")).status_code == 200  # the page needs no count
    assert client.get(reverse("home")).status_code == 200
    with caplog.at_level(logging.WARNING):
        right = client.post(reverse("login"), {"username": "alice", "password": PASSWORD})
    assert_unavailable(right, attempts.SIGN_IN_UNAVAILABLE)
    assert SESSION_KEY not in client.session
    # Logged once, saying why.
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(logged) == 1, logged
    assert "unreachable" in logged[0] and "ConnectionError" in logged[0] and "/login/" in logged[0]
    # A wrong password is not told apart from a right one: guessing learns nothing.
    wrong = client.post(reverse("login"), {"username": "alice", "password": "guess-1"})
    assert_unavailable(wrong, attempts.SIGN_IN_UNAVAILABLE)
    admin = client.post(reverse("admin:login"), {"username": "alice", "password": PASSWORD})
    assert_unavailable(admin, attempts.SIGN_IN_UNAVAILABLE)
    assert SESSION_KEY not in client.session

    own_redis.restart()
    back = client.post(reverse("login"), {"username": "alice", "password": PASSWORD})
    assert back.status_code == 302
    assert client.session[SESSION_KEY] == str(account.user_id)


def test_changing_the_password_is_briefly_unavailable_and_changes_nothing(
    own_redis, account, client
):
    client.login(username="alice", password=PASSWORD)
    page = reverse("password_change")
    new = {
        "new_password1": "another-long-passphrase-7",
        "new_password2": "another-long-passphrase-7",
    }
    own_redis.kill()
    assert client.get(page).status_code == 200
    for old in (PASSWORD, "guess-1"):  # a right old password is not told from a wrong one
        assert_unavailable(
            client.post(page, {"old_password": old, **new}), attempts.SIGN_IN_UNAVAILABLE
        )
    account.user.refresh_from_db()
    assert account.user.check_password(PASSWORD)

    own_redis.restart()
    assert client.post(page, {"old_password": PASSWORD, **new}).status_code == 302
    account.user.refresh_from_db()
    assert account.user.check_password("another-long-passphrase-7")


def test_failed_sign_ins_are_counted_again_once_redis_is_back(own_redis, account, client):
    own_redis.kill()
    own_redis.restart()
    for n in range(attempts.LIMIT):
        wrong = client.post(reverse("login"), {"username": "alice", "password": f"guess-{n}"})
        assert wrong.status_code == 200
    blocked = client.post(reverse("login"), {"username": "alice", "password": PASSWORD})
    assert attempts.TOO_MANY in blocked.content.decode()
    assert SESSION_KEY not in client.session


def test_a_redis_that_does_not_answer_refuses_sign_in_within_seconds(silent_redis, account, client):
    started = time.monotonic()
    response = client.post(reverse("login"), {"username": "alice", "password": PASSWORD})
    assert_unavailable(response, attempts.SIGN_IN_UNAVAILABLE)
    assert time.monotonic() - started < 3


def test_joining_is_briefly_unavailable_and_creates_no_user_and_no_membership(
    own_redis, classroom, account
):
    other = make_classroom(name="Trading 102")
    student = Client()
    student.login(username="alice", password=PASSWORD)
    newcomer = Client()
    signup = {
        "username": "newbie",
        "password1": "a-long-pass-9281",
        "password2": "a-long-pass-9281",
        "join_code": classroom.join_code,
    }
    own_redis.kill()

    assert newcomer.get(reverse("signup")).status_code == 200
    assert_unavailable(newcomer.post(reverse("signup"), signup), attempts.JOIN_UNAVAILABLE)
    assert not User.objects.filter(username="newbie").exists()
    # An invalid form still says the code cannot be checked now, not that it is wrong.
    weak = newcomer.post(reverse("signup"), {**signup, "password2": "other"})
    assert_unavailable(weak, attempts.JOIN_UNAVAILABLE)
    assert "No classroom has this join code." not in weak.content.decode()

    assert student.get(reverse("classrooms")).status_code == 200
    joining = student.post(reverse("classrooms"), {"join_code": other.join_code})
    assert_unavailable(joining, attempts.JOIN_UNAVAILABLE)
    assert not Membership.objects.filter(classroom=other, user=account.user).exists()
    assert not TradingAccount.objects.filter(classroom=other).exists()

    own_redis.restart()
    assert newcomer.post(reverse("signup"), signup).status_code == 302
    assert student.post(reverse("classrooms"), {"join_code": other.join_code}).status_code == 302
    assert TradingAccount.objects.filter(classroom=other, user=account.user).exists()


@pytest.fixture
def broker_on_own_redis(own_redis, monkeypatch):
    """Celery's broker on the same throwaway Redis as the cache, as in production (Celery
    reads the broker's URL from the environment first)."""
    monkeypatch.setenv("CELERY_BROKER_URL", own_redis.url)
    assert celery_app.connection_for_write().port == own_redis.port
    return own_redis


def test_a_signed_in_student_keeps_trading_while_redis_and_the_broker_are_down(
    broker_on_own_redis, account, btc, client
):
    client.login(username="alice", password=PASSWORD)
    broker_on_own_redis.kill()
    with pytest.raises(OperationalError):  # the broker is really gone
        celery_app.connection_for_write().ensure_connection(max_retries=1)

    started = time.monotonic()
    assert client.get(reverse("dashboard", args=[account.pk])).status_code == 200
    placed = client.post(
        reverse("trade", args=[account.pk]),
        {"instrument": btc.pk, "side": "long", "type": "market", "quantity": "0.5",
         "leverage": "20"},
    )  # fmt: skip
    position = Position.objects.get(account=account)
    assert placed["Location"] == reverse("position", args=[position.pk])
    assert client.get(placed["Location"]).status_code == 200
    # No request waits on the broker: ticks and liquidations are the engine's (beat) work.
    assert time.monotonic() - started < 5
    assert_ledger_invariants(btc.classroom_id)


def test_a_full_redis_that_refuses_writes_refuses_a_wrong_password_without_a_500(
    own_redis, account, client
):
    server = redis.Redis.from_url(own_redis.url)
    server.config_set("maxmemory-policy", "noeviction")
    server.config_set("maxmemory", "1")
    try:
        wrong = client.post(reverse("login"), {"username": "alice", "password": "guess-1"})
        assert_unavailable(wrong, attempts.SIGN_IN_UNAVAILABLE)
        # Reading the counts still works and deleting is allowed: the right password signs in.
        right = client.post(reverse("login"), {"username": "alice", "password": PASSWORD})
        assert right.status_code == 302
    finally:
        server.config_set("maxmemory", "0")


def test_redis_failing_between_the_check_and_the_count_lets_no_guess_through_uncounted(
    own_redis, account, client, caplog
):
    """Redis answers the check of the count, then hangs on the write that follows it (its
    clients paused for writes, as a failover or a stuck disk does): a wrong password is
    refused as unavailable within seconds; the right one signs in, since clearing the count
    protects nothing, and the count it could not clear is logged."""
    server = redis.Redis.from_url(own_redis.url)
    server.execute_command("CLIENT", "PAUSE", 30_000, "WRITE")
    try:
        assert server.get("anything") is None  # reads are still answered
        started = time.monotonic()
        wrong = client.post(reverse("login"), {"username": "alice", "password": "guess-1"})
        assert_unavailable(wrong, attempts.SIGN_IN_UNAVAILABLE)
        assert time.monotonic() - started < 5
        assert SESSION_KEY not in client.session
        with caplog.at_level(logging.WARNING, logger="web.attempts"):
            right = client.post(reverse("login"), {"username": "alice", "password": PASSWORD})
        assert right.status_code == 302
        assert client.session[SESSION_KEY] == str(account.user_id)
        assert any("Could not clear the sign-in count" in r.getMessage() for r in caplog.records)
    finally:
        server.execute_command("CLIENT", "UNPAUSE")
