"""Celery tasks of the engine: the beat fan-out and the per-instrument tick."""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from liquidation.models import EngineHeartbeat


@shared_task(name="liquidation.tasks.engine_tick")
def engine_tick() -> int:
    """Beat entry: records that the engine ran (the engine issue fans out per instrument)."""
    beat = EngineHeartbeat.objects.create(started_at=timezone.now())
    EngineHeartbeat.objects.filter(pk=beat.pk).update(finished_at=timezone.now())
    return beat.pk
