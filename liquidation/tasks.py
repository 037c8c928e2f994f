"""Celery tasks of the engine: the beat fan-out, the per-instrument tick and housekeeping."""

from __future__ import annotations

from datetime import datetime

from celery import shared_task
from django.utils import timezone

from liquidation import engine
from liquidation.instructor import confirmation_prune
from liquidation.models import EngineHeartbeat


@shared_task(name="liquidation.tasks.engine_tick", ignore_result=True)
def engine_tick() -> int:
    """Beat entry: one heartbeat row for the run, then one tick task per active instrument."""
    started = timezone.now()
    beat = EngineHeartbeat.objects.create(started_at=started)
    expires = float(engine.tick_seconds()) * 0.9
    for instrument_id in engine.active_instrument_ids():
        tick_instrument.apply_async(args=(instrument_id, started.isoformat()), expires=expires)
    EngineHeartbeat.objects.filter(pk=beat.pk).update(finished_at=timezone.now())
    return beat.pk


# acks_late + reject_on_worker_lost: a tick whose worker dies is delivered again; the tick
# is idempotent per slot and refuses to act once stale, so a second delivery is harmless.
@shared_task(
    name="liquidation.tasks.tick_instrument",
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
)
def tick_instrument(instrument_id: int, scheduled_at: str) -> str:
    result = engine.tick_instrument(instrument_id, datetime.fromisoformat(scheduled_at))
    return f"{result.status} mark={result.mark} liquidated={len(result.liquidated)}"


@shared_task(name="liquidation.tasks.history_prune", ignore_result=True)
def history_prune() -> str:
    """Housekeeping: bound the mark history, the heartbeats and the confirmation claims."""
    dropped, thinned = engine.history_prune()
    forgotten = confirmation_prune()
    return f"dropped {dropped}, thinned {thinned}, forgot {forgotten} confirmation(s)"
