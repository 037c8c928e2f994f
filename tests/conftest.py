"""Shared fixtures: a classroom with a BTC market and two funded students."""

from __future__ import annotations

import pytest

from tests.factories import make_classroom, make_instrument, make_student


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
