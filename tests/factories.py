"""Factories that build classrooms, accounts and instruments through the services."""

from __future__ import annotations

from decimal import Decimal

import factory

from accounts.models import Classroom, TradingAccount, User
from accounts.services import classroom_create, classroom_join
from positions.margin import tiers_from_table
from positions.models import Instrument, MarginTier

BTC_BRACKETS = [
    (Decimal(0), Decimal(50_000), Decimal("0.004"), 125),
    (Decimal(50_000), Decimal(600_000), Decimal("0.005"), 100),
    (Decimal(600_000), Decimal(3_000_000), Decimal("0.0065"), 75),
    (Decimal(3_000_000), Decimal(12_000_000), Decimal("0.01"), 50),
    (Decimal(12_000_000), Decimal(70_000_000), Decimal("0.02"), 25),
]


class UserFactory(factory.django.DjangoModelFactory[User]):
    class Meta:
        model = User

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.django.Password("ringfence-test")


def make_classroom(
    *,
    instructor: User | None = None,
    name: str = "Class",
    insurance_fund_seed: Decimal = Decimal(0),
    **kwargs,
) -> Classroom:
    owner: User = instructor or UserFactory.create(is_staff=True)
    return classroom_create(
        instructor_id=owner.pk, name=name, insurance_fund_seed=insurance_fund_seed, **kwargs
    )


def make_instrument(
    classroom: Classroom,
    *,
    symbol: str = "BTCUSDT",
    mark: Decimal | str = "60000",
    brackets=BTC_BRACKETS,
    **kwargs,
) -> Instrument:
    defaults = {
        "tick_size": Decimal("0.1"),
        "lot_size": Decimal("0.001"),
        "min_notional": Decimal("5"),
        "max_leverage": 125,
        "taker_fee_rate": Decimal("0.0005"),
        "spread": Decimal(0),
    }
    defaults.update(kwargs)
    instrument = Instrument.objects.create(
        classroom=classroom, symbol=symbol, mark_price=Decimal(mark), **defaults
    )
    for tier in tiers_from_table(brackets):
        MarginTier.objects.create(
            instrument=instrument,
            notional_floor=tier.notional_floor,
            notional_cap=tier.notional_cap,
            mmr=tier.mmr,
            cum=tier.cum,
            max_leverage=tier.max_leverage,
        )
    return instrument


def make_student(classroom: Classroom, *, username: str | None = None) -> TradingAccount:
    user: User = UserFactory.create(username=username) if username else UserFactory.create()
    return classroom_join(user_id=user.pk, join_code=classroom.join_code)
