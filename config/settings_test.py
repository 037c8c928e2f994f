"""Test settings: the suite runs on PostgreSQL and Redis only (SQLite ignores row locks)."""

import os

os.environ.setdefault("DATABASE_URL", "postgres://root@127.0.0.1:5432/ringfence")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
os.environ.setdefault("CELERY_BROKER_URL", os.environ["REDIS_URL"])
os.environ.setdefault("DEBUG", "1")

from config.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Serve static files from the finders without a collected STATIC_ROOT (tests never collect).
WHITENOISE_AUTOREFRESH = True
# Cache keys (failed sign-ins, API throttling) carry the database's name, so two test runs
# against different databases never count each other's requests in the shared Redis.
CACHES["default"]["KEY_PREFIX"] = "test-" + DATABASES["default"]["NAME"]  # noqa: F405
