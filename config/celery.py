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
    if str(sender.conf.broker_url or "").startswith("filesystem://"):
        # The embedded broker polls a directory; its default second would let ticks expire.
        options = dict(sender.conf.broker_transport_options or {})
        options.setdefault("polling_interval", min(0.1, tick / 10))
        sender.conf.broker_transport_options = options
    sender.conf.beat_schedule = {
        "engine-tick": {
            "task": "liquidation.tasks.engine_tick",
            "schedule": tick,
            "options": {"expires": tick * 0.9},
        },
        "history-prune": {
            "task": "liquidation.tasks.history_prune",
            "schedule": 60.0,
            "options": {"expires": 54.0},
        },
    }
