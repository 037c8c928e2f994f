"""Fixtures of the trading-core tests: a 125x classroom with a seeded insurance fund."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.factories import make_classroom


@pytest.fixture
def classroom(db):
    """Overrides the shared classroom: leverage up to 125x and 1,000 in the insurance fund."""
    return make_classroom(name="Trading 101", max_leverage=125, insurance_fund_seed=Decimal("1000"))
