"""A real task travels through Redis to a real Celery worker and its effect lands in PostgreSQL."""

import pytest

from liquidation.models import EngineHeartbeat
from tests.processes import celery_worker, flush_broker, wait_until


@pytest.mark.django_db(transaction=True)
def test_task_sent_through_redis_is_executed_by_a_real_worker():
    from config.celery import app

    flush_broker()
    assert not EngineHeartbeat.objects.exists()
    with celery_worker() as worker:
        app.send_task("liquidation.tasks.engine_tick")
        beat = wait_until(
            lambda: EngineHeartbeat.objects.filter(finished_at__isnull=False).first(),
            message="the worker's heartbeat row",
        )
        assert "liquidation.tasks.engine_tick" in worker.output()
    assert beat.started_at <= beat.finished_at


@pytest.mark.django_db(transaction=True)
def test_embedded_beat_schedules_engine_ticks():
    flush_broker()
    with celery_worker(beat=True, env={"TICK_SECONDS": "0.5"}):
        wait_until(
            lambda: EngineHeartbeat.objects.filter(finished_at__isnull=False).count() >= 2,
            timeout=30,
            message="two beat-driven ticks",
        )
