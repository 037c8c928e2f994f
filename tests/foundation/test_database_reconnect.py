"""A web process keeps its database connection between requests (``CONN_MAX_AGE``); when
PostgreSQL drops it (a restart, a failover, an idle timeout), the next request connects
again instead of failing with a server error."""

from __future__ import annotations

import socket
import sys

import pytest
import requests
from django.db import connection

from api.services import api_key_create
from tests.factories import make_classroom, make_student
from tests.processes import RunningProcess, process_env, wait_until


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _drop_other_connections() -> int:
    """What a database restart does to the web server: its connections are gone."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return int(cursor.fetchone()[0])


@pytest.mark.django_db(transaction=True)
def test_a_request_after_the_database_dropped_the_connection_is_answered():
    account = make_student(make_classroom())
    key = api_key_create(user_id=account.user_id, name="bot", scope="read").raw
    port = _free_port()
    server = RunningProcess(
        [sys.executable, "-m", "gunicorn", "config.wsgi", "--bind", f"127.0.0.1:{port}",
         "--workers", "1", "--log-level", "warning"],
        env=process_env(CONN_MAX_AGE="600"),
        name="gunicorn",
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/api/v1/me"
    headers = {"Authorization": f"Bearer {key}"}

    def answered() -> requests.Response | None:
        try:
            return requests.get(url, headers=headers, timeout=10)
        except requests.ConnectionError:
            return None  # not listening yet

    try:
        first = wait_until(answered, timeout=60, message="the web server answering")
        assert first.status_code == 200, first.text
        assert _drop_other_connections() >= 1  # the worker's kept connection among them
        for _ in range(3):
            again = requests.get(url, headers=headers, timeout=10)
            assert again.status_code == 200, again.text
            assert again.json()["username"] == account.user.username
    finally:
        server.stop()
