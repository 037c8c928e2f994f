"""Throughput and latency of the REST API: order placement and position listing against
the same server's trivial endpoint (``GET /api/v1/health``), with the ratio of each.

It creates a throwaway PostgreSQL database next to the one in ``DATABASE_URL``, seeds a
classroom with one student (and one trade key) per client thread, starts gunicorn on a
free port with ``DEBUG=0``, drives it from client threads over keep-alive sessions for a
bounded number of requests, then stops the server and drops the database.

    DATABASE_URL=postgres://... REDIS_URL=redis://... python -m bench.api

Goal: order placement at least half the trivial endpoint's throughput.

What "trivial" means here, so the ratio compares like with like: every request, health
included, carries the same bearer key and goes through the same middleware, the same key
authentication (one indexed query) and the same per-key throttle (one Redis round trip);
the health view then answers a constant. The ratio therefore measures what an endpoint adds
on top of the fixed cost of an authenticated, throttled API call, not the cost of the
authentication itself. (An unauthenticated health check would be cheaper and would make
every ratio look worse; one that skipped nothing but its body would make the goal
meaningless.)

Client, server and database share this machine's cores, so throughput follows the CPU a
request costs all three. Each endpoint's line is followed by that cost per request, read
from ``/proc``: the gunicorn workers, every PostgreSQL process, and the client threads.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
CLIENTS = int(os.environ.get("BENCH_CLIENTS", "4"))
REQUESTS = int(os.environ.get("BENCH_REQUESTS", "300"))  # per endpoint, all clients together
WORKERS = int(os.environ.get("BENCH_WORKERS", "2"))
OPEN_POSITIONS = 10  # per student; the listing benchmark reads pages of this many
ROUNDS = 3


@dataclass
class Result:
    name: str
    requests: int
    seconds: float
    latencies: list[float]
    errors: int
    # CPU seconds spent while it ran: (web server workers, PostgreSQL, the client threads).
    cpu: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def cpu_note(self) -> str:
        if not self.requests or not any(self.cpu):
            return ""
        server, database, client = (1000 * part / self.requests for part in self.cpu)
        return f"CPU per request: server {server:.1f} ms, PostgreSQL {database:.1f} ms, client {client:.1f} ms"

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    def line(self, baseline: Result | None) -> str:
        ratio = f"{self.throughput / baseline.throughput:6.2f}x" if baseline else "   1.00x"
        return (
            f"{self.name:<28} {self.throughput:8.1f} req/s  p50 {self.percentile(0.5):7.2f} ms  "
            f"p99 {self.percentile(0.99):7.2f} ms  errors {self.errors:<3} {ratio} of health"
        )


def _combine(parts: list[Result]) -> Result:
    return Result(
        parts[0].name,
        sum(p.requests for p in parts),
        sum(p.seconds for p in parts),
        [latency for p in parts for latency in p.latencies],
        sum(p.errors for p in parts),
        (
            sum(p.cpu[0] for p in parts),
            sum(p.cpu[1] for p in parts),
            sum(p.cpu[2] for p in parts),
        ),
    )


def _process_cpu(match: Callable[[list[str]], bool]) -> dict[int, float]:
    """User plus system CPU seconds, by process id, of the processes on this machine that
    ``match`` picks from their ``/proc/<pid>/stat`` fields (none where /proc cannot be read)."""
    found: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            head, _, rest = entry.read_text().rpartition(")")
        except OSError:
            continue  # the process ended while we looked
        fields = [head.partition("(")[2], *rest.split()]
        if match(fields):
            found[int(entry.parent.name)] = (int(fields[12]) + int(fields[13])) / tick
    return found


def _spent(before: dict[int, float], after: dict[int, float]) -> float:
    """The CPU the processes spent between two readings. A process that ended in between
    (another client's database connection closing) takes its whole past with it, so only
    the processes still there count: a reading can miss a little, never go negative."""
    return sum(max(0.0, cpu - before.get(pid, 0.0)) for pid, cpu in after.items())


def _database_bound(health: Result, placing: Result) -> float | None:
    """The ratio order placement could reach if the web server's own work for an order cost
    no more CPU than a health check's, with PostgreSQL's and the client's as measured.

    Throughput on a shared machine goes as one over a request's total CPU, so the ceiling is
    health's total over (health's server CPU + an order's PostgreSQL and client CPU). It
    says how much of the goal is left to the web server at all.
    """
    if not (health.requests and placing.requests):
        return None
    per_health = [part / health.requests for part in health.cpu]
    per_order = [part / placing.requests for part in placing.cpu]
    ceiling_cost = per_health[0] + per_order[1] + per_order[2]
    if not (sum(per_health) and ceiling_cost):
        return None  # /proc could not be read
    return min(1.0, sum(per_health) / ceiling_cost)


def _cpu_readings(server_pid: int) -> tuple[dict[int, float], dict[int, float], float]:
    """(gunicorn's workers, PostgreSQL's processes) by process id, and this process's CPU
    seconds so far."""
    workers = _process_cpu(lambda f: f[2] == str(server_pid))  # children of the arbiter
    database = _process_cpu(lambda f: f[0] == "postgres")
    return workers, database, time.process_time()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings_test")
    sys.path.insert(0, str(BASE_DIR))
    import django

    django.setup()


def _seed() -> list[dict]:
    """One classroom, one BTC market, and one funded student with a trade key per client."""
    from api.services import api_key_create
    from positions.services import position_open
    from tests.factories import make_classroom, make_instrument, make_student

    classroom = make_classroom(name="Benchmark", starting_balance=Decimal("1000000000"))
    classroom.max_leverage = 100
    classroom.save()
    btc = make_instrument(classroom)
    students = []
    for n in range(CLIENTS):
        account = make_student(classroom, username=f"bench{n}")
        for _ in range(OPEN_POSITIONS):
            position_open(
                account_id=account.pk, instrument_id=btc.pk, side="long", quantity="0.001",
                leverage=10,
            )  # fmt: skip
        key = api_key_create(user_id=account.user_id, name="bench", scope="trade").raw
        students.append({"account": account.pk, "key": key})
    return students


def _drive(
    name: str,
    url: str,
    students: list[dict],
    call: Callable[..., object],
    total: int,
    server_pid: int,
) -> Result:
    import requests

    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    per_client = max(1, total // len(students))
    barrier = threading.Barrier(len(students) + 1)

    def client(student: dict) -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {student['key']}"
        for _ in range(5):  # warm the connection and the worker
            call(session, url, student)
        barrier.wait()
        mine = []
        for _ in range(per_client):
            started = time.perf_counter()
            try:
                failed = call(session, url, student).status_code >= 400  # type: ignore[attr-defined]
            except requests.RequestException:
                failed = True
            mine.append(time.perf_counter() - started)
            if failed:
                with lock:
                    errors[0] += 1
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(s,)) for s in students]
    for thread in threads:
        thread.start()
    barrier.wait()
    started, before = time.perf_counter(), _cpu_readings(server_pid)
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    after = _cpu_readings(server_pid)
    cpu = (_spent(before[0], after[0]), _spent(before[1], after[1]), after[2] - before[2])
    return Result(name, len(latencies), elapsed, latencies, errors[0], cpu)


def _health(session, url, student):  # type: ignore[no-untyped-def]
    return session.get(f"{url}/api/v1/health", timeout=30)


def _list_positions(session, url, student):  # type: ignore[no-untyped-def]
    return session.get(
        f"{url}/api/v1/positions/", params={"status": "open", "limit": OPEN_POSITIONS}, timeout=30
    )


def _place_order(session, url, student):  # type: ignore[no-untyped-def]
    body = {
        "account": student["account"],
        "symbol": "BTCUSDT",
        "side": "long",
        "quantity": "0.001",
        "leverage": 10,
        "client_order_id": uuid.uuid4().hex,
    }
    return session.post(f"{url}/api/v1/orders/", json=body, timeout=30)


def _wait_for(url: str, server: subprocess.Popen, timeout: float = 60) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError("gunicorn exited during start-up")
        try:
            if requests.get(f"{url}/api/v1/health", timeout=10).status_code == 200:
                return
        except requests.RequestException:
            pass  # not listening yet, or a worker still importing Django
        time.sleep(0.2)
    raise RuntimeError("gunicorn did not answer in time")


def run() -> list[dict[str, Any]]:
    _setup_django()
    from django.db import connection

    from tests.processes import database_url

    connection.settings_dict.setdefault("TEST", {})
    connection.settings_dict["TEST"]["NAME"] = f"{connection.settings_dict['NAME']}_bench_api"
    original = connection.settings_dict["NAME"]
    connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    server = None
    # The API serves no static files; an empty STATIC_ROOT spares WhiteNoise's warning that
    # nothing was collected.
    static_root = tempfile.TemporaryDirectory(prefix="ringfence-bench-static-")
    try:
        students = _seed()
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")  # planner statistics, as autovacuum keeps them in production
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        env = dict(os.environ)
        env.update(
            DJANGO_SETTINGS_MODULE="config.settings",
            DATABASE_URL=database_url(),
            DEBUG="0",
            SECRET_KEY=uuid.uuid4().hex * 2,
            ALLOWED_HOSTS="127.0.0.1",
            SECURE_SSL_REDIRECT="0",
            SECURE_HSTS_SECONDS="0",
            API_THROTTLE_RATE="10000000/min",
            LOG_LEVEL="WARNING",
            STATIC_ROOT=static_root.name,
        )
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "config.wsgi", "--bind", f"127.0.0.1:{port}",
             "--workers", str(WORKERS), "--log-level", "warning"],
            cwd=BASE_DIR, env=env,
        )  # fmt: skip
        _wait_for(url, server)
        # Interleaved rounds, so a change in the machine's load hits every endpoint alike.
        rounds: dict[str, list[Result]] = {"health": [], "listing": [], "placing": []}
        for _ in range(ROUNDS):
            share = max(len(students), REQUESTS // ROUNDS)
            pid = server.pid
            rounds["health"].append(
                _drive("GET /api/v1/health", url, students, _health, share, pid)
            )
            rounds["listing"].append(
                _drive("GET /api/v1/positions/", url, students, _list_positions, share, pid)
            )
            rounds["placing"].append(
                _drive("POST /api/v1/orders/", url, students, _place_order, share, pid)
            )
        health, listing, placing = (_combine(rounds[k]) for k in ("health", "listing", "placing"))
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        static_root.cleanup()
        connection.creation.destroy_test_db(original, verbosity=0)
    print(f"REST API benchmark: {CLIENTS} clients, gunicorn with {WORKERS} workers, "
          f"{OPEN_POSITIONS} open positions per student")  # fmt: skip
    for result in (health, listing, placing):
        print(result.line(None if result is health else health))
        if result.cpu_note():
            print(f"    {result.cpu_note()}")
    ratio = placing.throughput / health.throughput
    verdict = "meets" if ratio >= 0.5 else "misses"
    print(f"order placement / health throughput: {ratio:.2f} ({verdict} the goal of 0.5)")
    bound = _database_bound(health, placing)
    if bound is not None:
        print(
            f"    if the web server spent no more CPU on an order than on a health check, "
            f"PostgreSQL and the client alone would allow at most {bound:.2f}"
        )
    errors = health.errors + listing.errors + placing.errors
    rows: list[dict[str, Any]] = []
    # One series: the ratio column of ``make bench`` divides each endpoint by the health check.
    for label, result in (("health", health), ("positions", listing), ("orders", placing)):
        row: dict[str, Any] = {
            "benchmark": "API throughput",
            "size": result.name,
            "value": result.throughput,
            "unit": "req/s",
            "note": f"p50 {result.percentile(0.5):.1f} ms, p99 {result.percentile(0.99):.1f} ms"
            + (f"; {result.cpu_note()}" if result.cpu_note() else ""),
            "errors": result.errors,
        }
        if label == "orders":
            row.update(goal=">= 0.5x health", ok=ratio >= 0.5)
            if bound is not None:
                row["note"] += f"; at most {bound:.2f}x with no more server CPU than health"
        rows.append(row)
    rows[-1]["errors"] = errors
    return rows


if __name__ == "__main__":
    sys.exit(1 if any(row["errors"] for row in run()) else 0)
