"""Hypothesis settings for the trading-core tests.

``core`` keeps the suite inside its CI budget; set ``RINGFENCE_HYPOTHESIS=thorough`` for
a longer local search. Used as decorators so other suites keep their own profiles.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

import pytest
from hypothesis import HealthCheck, settings

Test = TypeVar("Test", bound=Callable[..., object])

settings.register_profile(
    "core",
    max_examples=200,
    deadline=None,
    database=None,
    derandomize=False,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "thorough",
    max_examples=5000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

PROFILE = os.environ.get("RINGFENCE_HYPOTHESIS", "core")
PURE = settings(settings.get_profile(PROFILE))
"""Settings for the pure margin-maths properties (cheap examples)."""

STATEFUL = settings(
    settings.get_profile(PROFILE),
    max_examples=30 if PROFILE == "core" else 400,
    stateful_step_count=40 if PROFILE == "core" else 80,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
"""Settings for the database-backed state machine (each step hits PostgreSQL)."""


def searching(test: Test) -> Test:
    """A database-backed search: a longer profile runs it for many minutes, past the suite's
    pytest-timeout limit, so under any profile but ``core`` the limit is lifted."""
    return test if PROFILE == "core" else pytest.mark.timeout(0)(test)
