"""Per-key request throttling, counted in the Django cache (Redis when REDIS_URL is set)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

from api.models import ApiKey


class ApiKeyRateThrottle(SimpleRateThrottle):
    """One budget per API key (per user for the browser session, per address otherwise).

    The rate is read from ``settings.API_THROTTLE_RATE`` on every request so that every
    web process shares one setting and one counter.
    """

    scope = "api"
    cache_format = "throttle_%(scope)s_%(ident)s"

    def get_rate(self) -> str | None:
        return settings.API_THROTTLE_RATE or None

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        if isinstance(request.auth, ApiKey):
            ident = f"key_{request.auth.prefix}"
        elif request.user and request.user.is_authenticated:
            ident = f"user_{request.user.pk}"
        else:
            ident = f"ip_{self.get_ident(request)}"
        return self.cache_format % {"scope": self.scope, "ident": ident}
