"""The Celery app: JSON only, bounded tasks, and the home of the beat schedule."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("ringfence")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.on_after_finalize.connect
def _install_beat_schedule(sender: Celery, **kwargs: object) -> None:
    """Beat entries live here; each expires before the next run is due."""
    from django.conf import settings

    tick = float(settings.TICK_SECONDS)
    sender.conf.beat_schedule = {
        "engine-tick": {
            "task": "liquidation.tasks.engine_tick",
            "schedule": tick,
            "options": {"expires": tick * 0.9},
        },
    }
