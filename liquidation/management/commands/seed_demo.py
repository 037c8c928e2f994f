"""``manage.py seed_demo``: the demo classroom, its people and its market (idempotent)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.utils import timezone

from accounts.models import Classroom, Membership, User
from accounts.services import classroom_create, classroom_join
from liquidation.models import PriceFeed, PriceTick
from positions.margin import tiers_from_table
from positions.models import Instrument, MarginTier

JOIN_CODE = "DEMO2026"
CLASSROOM = "Demo class"
PASSWORD = "ringfence-demo"
D = Decimal

# symbol: (name, mark, tick, lot, fee, seed, volatility, brackets (floor, cap, mmr, max lev))
MARKET = {
    "BTCUSDT": ("Bitcoin perpetual", "60000", "0.1", "0.001", "0.0005", 1, "0.0008", [
        (0, 50_000, "0.004", 125), (50_000, 600_000, "0.005", 100),
        (600_000, 3_000_000, "0.0065", 75), (3_000_000, 12_000_000, "0.01", 50),
        (12_000_000, None, "0.02", 25),
    ]),
    "ETHUSDT": ("Ether perpetual", "3000", "0.01", "0.01", "0.0005", 2, "0.0011", [
        (0, 50_000, "0.005", 100), (50_000, 600_000, "0.0065", 75),
        (600_000, 3_000_000, "0.01", 50), (3_000_000, None, "0.02", 25),
    ]),
    "SOLUSDT": ("Solana perpetual", "150", "0.01", "0.1", "0.0005", 3, "0.0015", [
        (0, 10_000, "0.01", 50), (10_000, 100_000, "0.025", 20), (100_000, None, "0.05", 10),
    ]),
}  # fmt: skip


def _user(username: str, *, staff: bool = False) -> User:
    user, created = User.objects.get_or_create(username=username, defaults={"is_staff": staff})
    if created:
        user.set_password(PASSWORD)
        user.save(update_fields=["password"])
    return user


ALLOW_FLAG = "--allow-production"
REFUSAL = (
    "DEBUG is off, so this is a production configuration, and the demo would create a staff "
    f"account 'teacher' (and students alice and bob) with the password {PASSWORD!r}, which is "
    f"published in the README. Nothing was created. Pass {ALLOW_FLAG} if you really want the "
    "demo class on this site, then change those passwords at once."
)


def production_configuration() -> bool:
    """Whether this process runs as a site others reach: DEBUG off.

    DEBUG=0 is how Ringfence is told it is production (the settings then demand a secret key
    and allowed hosts, and serve HTTPS only); the embedded default of ``make run`` keeps it
    on. Which database is used does not matter: a DEBUG-off site on the SQLite file is still
    a public site, and a published staff password is as dangerous there.
    """
    return not settings.DEBUG


class Command(BaseCommand):
    help = "Create the demo classroom (join code DEMO2026) with teacher, alice and bob; idempotent."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            ALLOW_FLAG,
            action="store_true",
            dest="allow_production",
            help=f"Seed even though DEBUG is off (the demo logins use the published password "
            f"{PASSWORD!r}).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if production_configuration() and not options["allow_production"]:
            raise CommandError(REFUSAL)
        self.seed()

    @transaction.atomic
    def seed(self) -> None:
        teacher = _user("teacher", staff=True)
        # The "Instructors" group (a migration creates it) lets the teacher use the admin.
        teacher.groups.add(*Group.objects.filter(name="Instructors"))
        classroom = Classroom.objects.filter(join_code=JOIN_CODE).first()
        if classroom is None:
            classroom = classroom_create(
                instructor_id=teacher.pk,
                name=CLASSROOM,
                max_leverage=50,
                insurance_fund_seed=D(100_000),
            )
            Classroom.objects.filter(pk=classroom.pk).update(join_code=JOIN_CODE)
            classroom.join_code = JOIN_CODE
        for name in ("alice", "bob"):
            student = _user(name)
            if not Membership.objects.filter(user=student, classroom=classroom).exists():
                classroom_join(user_id=student.pk, join_code=JOIN_CODE)
        now = timezone.now()
        for symbol, (title, mark, tick, lot, fee, seed, vol, brackets) in MARKET.items():
            instrument, created = Instrument.objects.get_or_create(
                classroom=classroom,
                symbol=symbol,
                defaults={
                    "name": title,
                    "tick_size": D(tick),
                    "lot_size": D(lot),
                    "taker_fee_rate": D(fee),
                    "max_leverage": brackets[0][3],
                    "mark_price": D(mark),
                    "mark_updated_at": now,
                },
            )
            if created:
                rows = [(D(f), None if c is None else D(c), D(m), lev) for f, c, m, lev in brackets]
                MarginTier.objects.bulk_create(
                    MarginTier(
                        instrument=instrument,
                        notional_floor=t.notional_floor,
                        notional_cap=t.notional_cap,
                        mmr=t.mmr,
                        cum=t.cum,
                        max_leverage=t.max_leverage,
                    )
                    for t in tiers_from_table(rows)
                )
                PriceTick.objects.create(instrument=instrument, price=D(mark), created_at=now)
            PriceFeed.objects.get_or_create(
                instrument=instrument,
                defaults={"kind": PriceFeed.Kind.SIMULATED, "seed": seed, "volatility": D(vol)},
            )
        self.stdout.write(
            f"Demo class ready (join code {JOIN_CODE}). Logins, password {PASSWORD!r}: "
            "teacher (instructor, admin), alice and bob (students)."
        )
