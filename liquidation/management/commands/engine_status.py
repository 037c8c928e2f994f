"""``manage.py engine_status``: per instrument, the mark, its lag and the last tick."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand
from django.utils import timezone

from accounts.money import plain
from liquidation.engine import active_instrument_ids, tick_seconds
from liquidation.models import EngineHeartbeat, Scenario
from positions.models import Instrument


class Command(BaseCommand):
    help = "Show, per instrument, the mark price, how long ago it moved and the last tick."

    def handle(self, *args: Any, **options: Any) -> None:
        now = timezone.now()
        active = set(active_instrument_ids())
        last_beat = EngineHeartbeat.objects.filter(instrument__isnull=True).first()
        beat_lag = (
            "never"
            if last_beat is None
            else f"{(now - last_beat.started_at).total_seconds():.1f}s ago"
        )
        self.stdout.write(f"Tick interval {tick_seconds()} s; last beat run {beat_lag}.")
        header = f"{'id':>5} {'classroom':<20} {'symbol':<10} {'feed':<10} {'mark':>16} {'lag':>9} {'last tick':>10} {'liq':>5} scenario / errors"
        self.stdout.write(header)
        instruments = Instrument.objects.select_related("classroom", "feed").order_by(
            "classroom_id", "symbol"
        )
        for instrument in instruments:
            feed = getattr(instrument, "feed", None)
            kind = feed.kind if feed else "none"
            if instrument.pk not in active:
                kind += "(off)"
            lag = (
                "-"
                if instrument.mark_updated_at is None
                else f"{(now - instrument.mark_updated_at).total_seconds():.1f}s"
            )
            beat = EngineHeartbeat.objects.filter(instrument=instrument).first()
            took = "-"
            if beat is not None and beat.finished_at is not None:
                took = f"{(beat.finished_at - beat.started_at).total_seconds() * 1000:.0f}ms"
            scenario = Scenario.objects.filter(
                instrument=instrument, status=Scenario.Status.ACTIVE
            ).first()
            notes = []
            if scenario is not None:
                notes.append(f"scenario #{scenario.pk} {scenario.kind}")
            if beat is not None and beat.errors:
                notes.append(beat.errors.splitlines()[0][:60])
            mark = "-" if instrument.mark_price is None else plain(instrument.mark_price)
            self.stdout.write(
                f"{instrument.pk:>5} {instrument.classroom.name[:20]:<20} {instrument.symbol:<10} "
                f"{kind:<10} {mark:>16} {lag:>9} {took:>10} {beat.liquidated if beat else 0:>5} {'; '.join(notes)}"
            )
