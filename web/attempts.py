"""Failed sign-ins and join codes, counted in the cache, so that guessing either is slow.

A classroom often reaches the site through one school address, so sign-ins are counted per
address *and* username: one student's typos never lock out the class, while a guesser gets
``LIMIT`` tries per username per window. Join codes are counted per signed-in user, and per
address on the sign-up page. The counts live in the shared cache (Redis in production), so
every web process sees them.
"""

from __future__ import annotations

import hashlib
import unicodedata
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest

LIMIT = 10
WINDOW_SECONDS = 15 * 60
TOO_MANY = "Too many failed attempts. Wait 15 minutes, then try again."


@dataclass(frozen=True)
class Attempts:
    """The failures of one kind by one client within the window."""

    kind: str
    who: str

    @property
    def key(self) -> str:
        digest = hashlib.sha256(self.who.encode()).hexdigest()[:32]
        return f"ringfence:attempts:{self.kind}:{digest}"

    def blocked(self) -> bool:
        return int(cache.get(self.key, 0)) >= LIMIT

    def failed(self) -> None:
        if cache.add(self.key, 1, WINDOW_SECONDS):
            return
        try:
            cache.incr(self.key)
        except ValueError:  # expired between add and incr
            cache.set(self.key, 1, WINDOW_SECONDS)

    def clear(self) -> None:
        cache.delete(self.key)


def _address(request: HttpRequest) -> str:
    """The client's address; behind the trusted proxy (``SECURE_PROXY_SSL_HEADER`` set), the
    one that proxy appended to X-Forwarded-For, since the earlier ones are the client's say."""
    forwarded = str(request.META.get("HTTP_X_FORWARDED_FOR", ""))
    if getattr(settings, "SECURE_PROXY_SSL_HEADER", None) and forwarded.strip():
        return forwarded.split(",")[-1].strip()
    return str(request.META.get("REMOTE_ADDR", ""))


def sign_in(request: HttpRequest, username: str) -> Attempts:
    # Counted under the name the sign-in checks: Django's form reads the username in NFKC
    # form, so alice typed in fullwidth or monospace letters signs in as alice, and must not
    # start a count of its own.
    name = unicodedata.normalize("NFKC", username).strip().lower()
    return Attempts("sign-in", f"{_address(request)}|{name}")


def join_code(request: HttpRequest) -> Attempts:
    """Per signed-in user, else per address (the sign-up page)."""
    if request.user.is_authenticated:
        return Attempts("join-code", f"user:{request.user.pk}")
    return Attempts("join-code", f"address:{_address(request)}")
