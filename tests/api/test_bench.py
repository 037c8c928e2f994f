"""The API benchmark runs end to end (a handful of requests; no timing is asserted)."""

from __future__ import annotations

import os
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
    assert "Traceback" not in result.stderr and "Warning" not in result.stderr, result.stderr
