"""Failed sign-ins and join codes, counted in the cache, so that guessing either is slow.

A classroom often reaches the site through one school address, so sign-ins are counted per
address *and* username: one student's typos never lock out the class, while a guesser gets
``LIMIT`` tries per username per window. Wrong join codes are counted per signed-in user
(``LIMIT``) and per address (``ADDRESS_LIMIT``, large enough for a class joining from one
school address, small enough that accounts made one after another do not multiply the guesses
of one person); the sign-up page, where nobody is signed in yet, counts per address. The
counts live in the shared cache (Redis in production), so every web process sees them. When
the cache cannot be reached, nothing is counted and the caller refuses the attempt
(``Unavailable``), so an outage never lets unlimited guesses in.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest

from config.cache import UNREACHABLE

logger = logging.getLogger(__name__)

LIMIT = 10
# Thirty students mistyping the code five times each still join; a guesser behind one address
# gets no more than this, however many accounts they make.
ADDRESS_LIMIT = 200
WINDOW_SECONDS = 15 * 60
TOO_MANY = "Too many failed attempts. Wait 15 minutes, then try again."
SIGN_IN_UNAVAILABLE = "Sign-in is briefly unavailable, try again in a minute."
JOIN_UNAVAILABLE = "Joining a classroom is briefly unavailable, try again in a minute."


class Unavailable(Exception):
    """The counts cannot be read or written right now: the attempt must be refused."""


@contextmanager
def _counting() -> Iterator[None]:
    try:
        yield
    except UNREACHABLE as exc:
        raise Unavailable(f"{type(exc).__name__}: {exc}") from exc


@dataclass(frozen=True)
class Attempts:
    """The failures of one kind by one client within the window."""

    kind: str
    who: str
    limit: int = LIMIT

    @property
    def key(self) -> str:
        digest = hashlib.sha256(self.who.encode()).hexdigest()[:32]
        return f"ringfence:attempts:{self.kind}:{digest}"

    def blocked(self) -> bool:
        with _counting():
            return int(cache.get(self.key, 0)) >= self.limit

    def failed(self) -> None:
        with _counting():
            if cache.add(self.key, 1, WINDOW_SECONDS):
                return
            try:
                cache.incr(self.key)
            except ValueError:  # expired between add and incr
                cache.set(self.key, 1, WINDOW_SECONDS)

    def clear(self) -> None:
        # Called once the attempt succeeded: refusing it now would protect nothing, and a
        # count left behind expires with its window.
        try:
            cache.delete(self.key)
        except UNREACHABLE as exc:
            logger.warning(
                "Could not clear the %s count: %s: %s", self.kind, type(exc).__name__, exc
            )


def client_address(request: HttpRequest) -> str:
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
    with _counting():
        counted_round = cache.get(_round_key(name), "")
    return Attempts("sign-in", f"{client_address(request)}|{name}|{counted_round}")


def sign_in_forgive(username: str) -> None:
    """Start a new count of failed sign-ins for ``username`` from every address.

    Called when an instructor sets a student a new password: the student's guesses at the one
    they forgot must not keep them out of the new one. The failures are counted per address,
    which is not known here, so the counts are left to expire and a new round begins; it
    lasts as long as they could (a round that expires falls back to the first one, whose
    counts are gone by then). With the cache unreachable there is nothing to forgive until it
    is back, and the old counts expire on their own within the window: the new password is
    set all the same.
    """
    try:
        cache.set(_round_key(_signed_in_name(username)), secrets.token_hex(8), WINDOW_SECONDS)
    except UNREACHABLE as exc:
        logger.warning(
            "Could not start a new sign-in count for %s: %s: %s", username, type(exc).__name__, exc
        )


@dataclass(frozen=True)
class Budgets:
    """The same failures counted several ways: refused once any of the counts is spent."""

    counts: tuple[Attempts, ...]

    def blocked(self) -> bool:
        with _counting():
            seen = cache.get_many([count.key for count in self.counts])
        return any(int(seen.get(count.key, 0)) >= count.limit for count in self.counts)

    def failed(self) -> None:
        for count in self.counts:
            count.failed()


def join_code(request: HttpRequest) -> Budgets:
    """Per address, and per signed-in user once there is one."""
    address = Attempts("join-code", f"address:{client_address(request)}", limit=ADDRESS_LIMIT)
    if request.user.is_authenticated:
        return Budgets((Attempts("join-code", f"user:{request.user.pk}"), address))
    return Budgets((address,))
