"""The API benchmark runs end to end (a handful of requests; no timing is asserted)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from django.conf import settings


def test_api_benchmark_runs_and_prints_the_ratio():
    result = subprocess.run(
        [sys.executable, "-m", "bench.api"],
        cwd=settings.BASE_DIR,
        env={**os.environ, "BENCH_REQUESTS": "12", "BENCH_CLIENTS": "2"},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "POST /api/v1/orders/" in result.stdout
    assert "order placement / health throughput:" in result.stdout
    # Each endpoint's CPU cost per request, split between server, database and client.
    assert result.stdout.count("CPU per request: server ") == 3
    # The ceiling the database and client leave, as a ratio like the others.
    bound = re.search(
        r"PostgreSQL and the client alone would allow at most (\d+\.\d\d)\n", result.stdout
    )
    assert bound is not None, result.stdout
    assert 0 < float(bound.group(1)) <= 1, result.stdout
    assert "Traceback" not in result.stderr and "Warning" not in result.stderr, result.stderr


def test_cpu_spent_ignores_processes_that_ended_between_readings():
    from bench.api import _spent

    # Process 2 ended (its past must not count as a negative), process 3 started.
    before = {1: 5.0, 2: 3.0}
    after = {1: 6.25, 3: 0.5}
    assert _spent(before, after) == 1.75
    assert _spent(after, after) == 0
