"""Two instructors, Alpha and Bravo, each running a classroom with a live market."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
from django.apps import apps
from django.contrib import admin
from django.contrib.auth.models import Group
from django.db.models import Model
from django.test import Client
from django.utils import timezone

from accounts.models import Classroom, User
from api.services import api_key_create
from liquidation import engine
from liquidation.models import (
    EngineHeartbeat,
    MarginCall,
    PriceFeed,
    PriceTick,
    ReplayPoint,
    Scenario,
)
from liquidation.services import scenario_start
from positions.models import Instrument
from positions.services import order_place, position_close, position_open
from tests.factories import UserFactory, make_classroom, make_instrument, make_student


def make_instructor(username: str) -> User:
    if not Group.objects.filter(name="Instructors").exists():
        # A transactional test flushed the tables: put back what the data migration made.
        instructors_group = importlib.import_module("liquidation.migrations.0003_instructors_group")
        instructors_group.create_group(apps, None)
    user = UserFactory.create(username=username, is_staff=True)
    user.groups.add(Group.objects.get(name="Instructors"))
    return user


@pytest.fixture
def market():
    """Alpha's live class: one instrument on a manual feed, and Alpha signed in to the admin."""
    alpha = make_instructor("alpha")
    classroom = make_classroom(instructor=alpha, name="Live class", max_leverage=100)
    btc = make_instrument(classroom)
    PriceFeed.objects.create(instrument=btc, kind=PriceFeed.Kind.MANUAL)
    client = Client()
    client.force_login(alpha)
    return alpha, btc, client


def engine_set_price(instrument: Instrument, price: str) -> None:
    """Move the mark through a scenario and let the engine tick once, as beat would."""
    scenario_start(instrument_id=instrument.pk, kind=Scenario.Kind.SET_PRICE, target_price=price)
    PriceFeed.objects.filter(instrument=instrument).update(last_tick_at=None)
    assert engine.tick_instrument(instrument.pk, timezone.now()).status == "ticked"


def crash(classroom: Classroom, instrument: Instrument, *, prefix: str) -> None:
    """A 50x long gaps past its bankruptcy price with an empty insurance fund: the engine
    liquidates it and auto-deleverages a profitable short."""
    victim = make_student(classroom, username=f"{prefix}-crashed")
    winner = make_student(classroom, username=f"{prefix}-winner")
    position_open(
        account_id=victim.pk, instrument_id=instrument.pk, side="long", quantity="0.1", leverage=50
    )
    position_open(
        account_id=winner.pk, instrument_id=instrument.pk, side="short", quantity="0.1", leverage=10
    )
    engine_set_price(instrument, "58000")
    engine_set_price(instrument, "60000")


def build_class(
    instructor: User, *, prefix: str, insurance_fund_seed: str = "1000", with_crash: bool = False
) -> Classroom:
    """A classroom with a market, students, open, closed and resting trades, engine rows."""
    classroom = make_classroom(
        instructor=instructor, name=f"{prefix} class", max_leverage=100,
        insurance_fund_seed=Decimal(insurance_fund_seed),
    )  # fmt: skip
    btc = make_instrument(classroom, symbol=f"{prefix[:3].upper()}USDT")
    feed = PriceFeed.objects.create(instrument=btc, kind=PriceFeed.Kind.REPLAY)
    ReplayPoint.objects.create(feed=feed, offset_seconds=0, price=Decimal("60000"))
    PriceTick.objects.create(instrument=btc, price=Decimal("60000"))
    EngineHeartbeat.objects.create(instrument=btc, mark_price=Decimal("60000"))
    Scenario.objects.create(
        instrument=btc, kind=Scenario.Kind.MOVE, percent=Decimal("-10"), duration_seconds=60,
        status=Scenario.Status.FINISHED, created_by=instructor,
    )  # fmt: skip
    first = make_student(classroom, username=f"{prefix}-student-1")
    second = make_student(classroom, username=f"{prefix}-student-2")
    api_key_create(user_id=first.user_id, name=f"{prefix} momentum bot", scope="trade")
    held = position_open(
        account_id=first.pk, instrument_id=btc.pk, side="long", quantity="0.1", leverage=20
    )
    closed = position_open(
        account_id=second.pk, instrument_id=btc.pk, side="short", quantity="0.05", leverage=10
    )
    position_close(position_id=closed.pk)
    order_place(
        account_id=second.pk, instrument_id=btc.pk, side="long", type="limit",
        quantity="0.01", leverage=5, price="50000",
    )  # fmt: skip
    MarginCall.objects.create(
        position=held, classroom=classroom, mark_price=Decimal("57500"),
        margin_ratio=Decimal("0.85"),
    )  # fmt: skip
    if with_crash:
        crash(classroom, btc, prefix=prefix)
    return classroom


def snapshot() -> dict[type[Model], set[Any]]:
    return {
        model: set(model._default_manager.values_list("pk", flat=True))
        for model in admin.site._registry
    }


@dataclass
class World:
    alpha: User
    bravo: User
    alpha_class: Classroom
    bravo_class: Classroom
    # Every row that belongs to Bravo's side, per registered model: recorded before Alpha
    # and her class existed, so it does not depend on the scoping under test.
    bravo_rows: dict[type[Model], set[Any]] = field(default_factory=dict)


@pytest.fixture
def world(db) -> World:
    bravo = make_instructor("bravo")
    bravo_class = build_class(bravo, prefix="bravo", insurance_fund_seed="0", with_crash=True)
    bravo_rows = snapshot()
    alpha = make_instructor("alpha")
    alpha_class = build_class(alpha, prefix="alpha")
    return World(alpha, bravo, alpha_class, bravo_class, bravo_rows)


@pytest.fixture
def alpha_client(client, world):
    client.force_login(world.alpha)
    return client
