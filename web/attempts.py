"""Failed sign-ins and join codes, counted in the cache, so that guessing either is slow.

A classroom often reaches the site through one school address, so sign-ins are counted per
address *and* username: one student's typos never lock out the class, while a guesser gets
``LIMIT`` tries per username per window. Join codes are counted per signed-in user, and per
address on the sign-up page. The counts live in the shared cache (Redis in production), so
every web process sees them.
"""

from __future__ import annotations

import hashlib
import secrets
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


def _signed_in_name(username: str) -> str:
    # Counted under the name the sign-in checks: Django's form reads the username in NFKC
    # form, so alice typed in fullwidth or monospace letters signs in as alice, and must not
    # start a count of its own.
    return unicodedata.normalize("NFKC", username).strip().lower()


def _round_key(name: str) -> str:
    return f"ringfence:attempts:sign-in-round:{hashlib.sha256(name.encode()).hexdigest()[:32]}"


def sign_in(request: HttpRequest, username: str) -> Attempts:
    name = _signed_in_name(username)
    # The round changes when someone sets the user a new password (see ``sign_in_forgive``).
    counted_round = cache.get(_round_key(name), "")
    return Attempts("sign-in", f"{_address(request)}|{name}|{counted_round}")


def sign_in_forgive(username: str) -> None:
    """Start a new count of failed sign-ins for ``username`` from every address.

    Called when an instructor sets a student a new password: the student's guesses at the one
    they forgot must not keep them out of the new one. The failures are counted per address,
    which is not known here, so the counts are left to expire and a new round begins; it
    lasts as long as they could (a round that expires falls back to the first one, whose
    counts are gone by then).
    """
    cache.set(_round_key(_signed_in_name(username)), secrets.token_hex(8), WINDOW_SECONDS)


def join_code(request: HttpRequest) -> Attempts:
    """Per signed-in user, else per address (the sign-up page)."""
    if request.user.is_authenticated:
        return Attempts("join-code", f"user:{request.user.pk}")
    return Attempts("join-code", f"address:{_address(request)}")
