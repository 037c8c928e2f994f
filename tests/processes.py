"""Real processes for tests that cross process boundaries: Celery workers and beat, and
throwaway Redis servers that a test may kill.

The processes read the same settings module as the tests and point at the test
database that pytest-django created, so tests using them need committed data
(``@pytest.mark.django_db(transaction=True)``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import redis
from django.conf import settings
from django.db import connection

BASE_DIR = Path(settings.BASE_DIR)


def database_url() -> str:
    """The URL of the database the current test runs against (the test database)."""
    db = connection.settings_dict
    user = quote(db.get("USER") or "")
    password = quote(db.get("PASSWORD") or "")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    return f"postgres://{auth}{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"


def process_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings_test",
        DATABASE_URL=database_url(),
        CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
        REDIS_URL=settings.REDIS_URL,
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def flush_broker(url: str | None = None) -> None:
    """Drop queued messages left by an earlier test from the broker's Redis database."""
    redis.Redis.from_url(url or settings.CELERY_BROKER_URL).flushdb()


class RunningProcess:
    """A child process started in its own session, with its output in a log file."""

    def __init__(self, cmd: list[str], *, env: dict[str, str], name: str) -> None:
        self.log_path = Path(tempfile.mkdtemp(prefix=f"{name}-")) / "output.log"
        self._log = self.log_path.open("wb")
        self.popen = subprocess.Popen(
            cmd,
            cwd=BASE_DIR,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_output(self, text: str, *, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return
            if self.popen.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"{text!r} never appeared; output:\n{self.output()[-4000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=timeout)
        self._log.close()


def start_worker(
    *,
    beat: bool = False,
    concurrency: int = 1,
    env: dict[str, str] | None = None,
    name: str = "worker",
) -> RunningProcess:
    """Start ``celery worker`` (optionally with embedded beat) and wait until it is ready."""
    workdir = tempfile.mkdtemp(prefix="celery-")
    cmd = [
        sys.executable, "-m", "celery", "-A", "config", "worker", "--loglevel=INFO",
        f"--concurrency={concurrency}", "--without-gossip", "--without-mingle", "--without-heartbeat",
        f"--hostname={name}-{uuid.uuid4().hex[:8]}@%h",
    ]  # fmt: skip
    if beat:
        cmd += ["--beat", f"--schedule={workdir}/beat-schedule"]
    process = RunningProcess(cmd, env=process_env(**(env or {})), name=name)
    process.wait_for_output("ready.", timeout=60)
    return process


def start_beat(*, env: dict[str, str] | None = None, name: str = "beat") -> RunningProcess:
    """Start a standalone ``celery beat``."""
    workdir = tempfile.mkdtemp(prefix="beat-")
    cmd = [sys.executable, "-m", "celery", "-A", "config", "beat", "--loglevel=INFO",
           f"--schedule={workdir}/beat-schedule"]  # fmt: skip
    process = RunningProcess(cmd, env=process_env(**(env or {})), name=name)
    process.wait_for_output("beat: Starting", timeout=60)
    return process


@contextlib.contextmanager
def celery_worker(**kwargs: object) -> Iterator[RunningProcess]:
    process = start_worker(**kwargs)  # type: ignore[arg-type]
    try:
        yield process
    finally:
        process.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ping(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def start_redis(port: int) -> subprocess.Popen[bytes]:
    """A Redis server of the test's own on ``port``, without persistence, ready to answer."""
    workdir = tempfile.mkdtemp(prefix="redis-")
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no",
         "--dir", workdir, "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_until(lambda: _ping(redis.Redis(port=port)), timeout=10, message="the throwaway Redis")
    return process


class ThrowawayRedis:
    """A Redis server that a test may kill and start again on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = start_redis(self.port)

    def kill(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
            self.process = None

    def restart(self) -> None:
        self.kill()
        self.process = start_redis(self.port)


def wait_until(
    predicate, *, timeout: float = 20, interval: float = 0.1, message: str = "condition"
):  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"{message} did not happen within {timeout}s")


def waiting_on_locks() -> int:
    """How many connections to the test database wait for a lock right now."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0]
