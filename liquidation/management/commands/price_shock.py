"""``manage.py price_shock SYMBOL PERCENT [--over SECONDS] [--classroom ID]``."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.errors import DomainError
from accounts.money import plain
from liquidation.services import price_shock
from positions.models import Instrument


class Command(BaseCommand):
    help = "Move an instrument's mark by PERCENT (e.g. -30) over --over seconds (0: next tick)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("symbol")
        parser.add_argument("percent")
        parser.add_argument("--over", default="0", help="Seconds the move takes (default 0).")
        parser.add_argument(
            "--classroom", type=int, help="Classroom id, when several trade SYMBOL."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        instruments = Instrument.objects.filter(symbol__iexact=options["symbol"])
        if options["classroom"] is not None:
            instruments = instruments.filter(classroom_id=options["classroom"])
        found = list(instruments.select_related("classroom"))
        if not found:
            raise CommandError(f"No instrument {options['symbol']} found.")
        if len(found) > 1:
            where = ", ".join(f"{i.classroom_id} ({i.classroom.name})" for i in found)
            raise CommandError(
                f"{options['symbol']} trades in several classrooms; pass --classroom: {where}"
            )
        instrument = found[0]
        try:
            scenario = price_shock(
                instrument_id=instrument.pk,
                percent=options["percent"],
                over_seconds=options["over"],
            )
        except DomainError as exc:
            raise CommandError(exc.message) from None
        assert scenario.percent is not None  # a shock is a move, which always has one
        start = "the mark" if scenario.start_price is None else plain(scenario.start_price)
        self.stdout.write(
            f"Scenario #{scenario.pk}: {instrument.symbol} in {instrument.classroom.name} moves "
            f"{plain(scenario.percent)}% from {start} over "
            f"{plain(scenario.duration_seconds)} s."
        )
