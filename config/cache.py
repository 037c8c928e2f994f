"""What a request answers when the shared cache (Redis) cannot be reached: 503, not 500.

The cache holds the API's rate-limit counters and the counts of failed sign-ins and join
codes. Without them Ringfence refuses what they guard, for a short while, rather than let
requests through uncounted: a bot would otherwise escape its limits, a guesser the slowdown.
Pages that do not count anything keep working.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import redis
from django.http import HttpRequest, HttpResponse

logger = logging.getLogger(__name__)

# What the cache raises when its server is down, restarting or not answering in time, or
# refuses to write: full without eviction, or a replica left read-only after a failover.
UNREACHABLE: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.ReadOnlyError,
)
# Seconds a client is asked to wait before trying again; a restarted Redis is back sooner.
RETRY_AFTER_SECONDS = 30


def note_cache_unreachable(request: HttpRequest, exc: BaseException) -> None:
    """Log once per request that the cache could not be reached; the answer becomes a 503."""
    if getattr(request, "cache_unreachable", False):
        return
    request.cache_unreachable = True  # type: ignore[attr-defined]
    logger.warning(
        "The shared cache is unreachable (%s: %s); %s %s answers 503",
        type(exc).__name__,
        exc,
        request.method,
        request.path,
    )


class CacheUnreachableMiddleware:
    """Answers 503 with ``Retry-After`` when the view said it could not reach the cache.

    The view still renders its page (the sign-in form with its message, say); only the status
    tells browsers, proxies and monitors that the refusal is temporary.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if getattr(request, "cache_unreachable", False):
            response.status_code = 503
            response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
            # Logged once, with its cause, by note_cache_unreachable: Django need not add a
            # second line without it.
            response._has_been_logged = True  # type: ignore[attr-defined]
        return response
