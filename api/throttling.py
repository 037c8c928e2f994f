"""Per-key request throttling, counted in Redis (the Django cache when REDIS_URL is unset)."""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import redis
from django.conf import settings
from django.core.cache import cache
from rest_framework import exceptions
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

from api.models import ApiKey
from config.cache import UNREACHABLE
from web.attempts import client_address


@lru_cache(maxsize=4)
def _redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, **settings.REDIS_OPTIONS)


@dataclass(frozen=True)
class RateLimit:
    """Where a caller stands in its budget, sent with every response as GitHub's API does."""

    limit: int
    remaining: int
    reset: int  # Unix time at which the budget is whole again

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset),
        }


class ApiKeyRateThrottle(SimpleRateThrottle):
    """One budget per API key (per user for the browser session, per address otherwise).

    The rate is read from ``settings.API_THROTTLE_RATE`` on every request so that every
    web process shares one setting and one counter.

    With Redis the budget is a fixed window per key, as in GitHub's API: a counter that
    expires with its window. Counting and arming its expiry is one round trip; a
    refused request is taken back off the counter, so it costs no budget, and Retry-After is
    the time left in the window. (As with any fixed window, a key may spend one window's
    budget at its end and the next one's at the start of the next.) Without Redis (a development set-up) DRF's timestamp
    history in the cache is used. A counter that cannot be reached refuses the request (503,
    see ``api.exceptions``): a bot must not escape its budget while Redis is away.
    """

    scope = "api"
    cache_format = "throttle_%(scope)s_%(ident)s"

    def get_rate(self) -> str | None:
        return settings.API_THROTTLE_RATE or None

    def get_ident(self, request: Request) -> str:
        # Not DRF's: without NUM_PROXIES it takes the whole X-Forwarded-For header, which the
        # caller writes, so a new value on each request would buy a new budget.
        return client_address(request)

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        if isinstance(request.auth, ApiKey):
            ident = f"key_{request.auth.prefix}"
        elif request.user and request.user.is_authenticated:
            ident = f"user_{request.user.pk}"
        else:
            ident = f"ip_{self.get_ident(request)}"
        return self.cache_format % {"scope": self.scope, "ident": ident}

    def allow_request(self, request: Request, view: Any) -> bool:
        """Count the request; the budget left goes on ``request.rate_limit`` for the headers."""
        allowed = self.count(request, view)
        if not allowed:
            request.key_throttled = True  # type: ignore[attr-defined]
        return allowed

    def count(self, request: Request, view: Any) -> bool:
        if not settings.REDIS_URL:
            allowed = super().allow_request(request, view)
            if self.rate is not None and self.key is not None:
                # A sliding window: whole again once the newest counted request has aged out.
                newest = self.history[0] if self.history else self.now
                request.rate_limit = RateLimit(  # type: ignore[attr-defined]
                    self.num_requests,  # type: ignore[attr-defined]
                    max(self.num_requests - len(self.history), 0),  # type: ignore[attr-defined]
                    math.ceil(newest + self.duration),  # type: ignore[attr-defined]
                )
            return allowed
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        window: int = self.duration  # type: ignore[attr-defined]
        limit: int = self.num_requests  # type: ignore[attr-defined]
        now = time.time()
        number = int(now // window)
        counter = cache.make_key(f"{self.key}:{number}")
        client = _redis(settings.REDIS_URL)
        pipe = client.pipeline(transaction=False)
        pipe.set(counter, 0, ex=window + 1, nx=True)  # a new window's counter expires with it
        pipe.incr(counter)
        _, count = pipe.execute()
        reset = (number + 1) * window
        request.rate_limit = RateLimit(limit, max(limit - count, 0), reset)  # type: ignore[attr-defined]
        if count <= limit:
            return True
        client.decr(counter)
        self._wait = max(reset - now, 1.0)
        return False

    def wait(self) -> float | None:
        if settings.REDIS_URL:
            return getattr(self, "_wait", None)
        return super().wait()


# How many keys' budgets one student's keys share: more keys than this buy no more requests.
USER_KEY_BUDGETS = 3


class ApiUserRateThrottle(ApiKeyRateThrottle):
    """All of one student's keys together get at most ``USER_KEY_BUDGETS`` times one key's
    budget, so creating keys (up to the active-key limit) does not multiply a student's share
    of the server. Browser sessions and anonymous callers are counted per user or address by
    the key throttle already. Answers keep the key's own budget in their headers; a refusal
    by the shared budget says that none of it is left until the shared budget is whole.
    """

    scope = "api-user"

    def get_rate(self) -> str | None:
        rate = settings.API_THROTTLE_RATE
        if not rate:
            return None
        count, period = rate.split("/", 1)
        return f"{int(count) * USER_KEY_BUDGETS}/{period}"

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        if not isinstance(request.auth, ApiKey):
            return None
        return self.cache_format % {"scope": self.scope, "ident": f"user_{request.auth.user_id}"}

    def allow_request(self, request: Request, view: Any) -> bool:
        if getattr(request, "key_throttled", False):
            # DRF asks every throttle even after one refused: a request the key's own budget
            # already refuses must not count here, or a runaway bot that ignores Retry-After
            # would spend the budget of the student's other keys with requests that were
            # never served.
            return True
        shown = getattr(request, "rate_limit", None)
        allowed = self.count(request, view)
        if shown is not None:
            shared = getattr(request, "rate_limit", shown)
            # A bot pacing itself on the headers must not read "requests left" on a 429.
            request.rate_limit = (  # type: ignore[attr-defined]
                shown if allowed else RateLimit(shown.limit, 0, max(shown.reset, shared.reset))
            )
        return allowed


class CountsRefusedRequests:
    """A DRF view mixin: requests refused for their key or their scope spend a budget too.

    DRF counts only the requests it lets through, so a bot retrying a wrong, revoked or
    expired key (``401``), or a read-only key writing (``403``), could retry without limit.
    Here a refused key is counted by address, as a caller without a key (the key is not the
    caller's to spend), and a refused write by its key; past the budget the answer is
    ``429``. While the counts cannot be reached, a refusal is still answered as one.
    """

    def perform_authentication(self, request: Request) -> None:
        try:
            super().perform_authentication(request)  # type: ignore[misc]
        except exceptions.AuthenticationFailed:
            self._count_refused(request)  # the request is anonymous now: its address counts
            raise

    def check_permissions(self, request: Request) -> None:
        try:
            super().check_permissions(request)  # type: ignore[misc]
        except (exceptions.NotAuthenticated, exceptions.PermissionDenied):
            self._count_refused(request)
            raise

    def _count_refused(self, request: Request) -> None:
        # Nothing is served either way: while the counts are away, the caller still learns why.
        with contextlib.suppress(*UNREACHABLE):
            self.check_throttles(request)  # type: ignore[attr-defined]
