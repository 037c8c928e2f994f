"""Engine fixtures: a classroom that allows high leverage, with a seeded insurance fund."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.factories import make_classroom


@pytest.fixture
def classroom(db):
    return make_classroom(name="Engine class", max_leverage=100, insurance_fund_seed=Decimal(1000))
