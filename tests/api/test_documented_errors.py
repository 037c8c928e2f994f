"""The README's list of error codes is the contract bots are written against: every code the
API can answer is in it, under the HTTP status it comes with."""

from __future__ import annotations

import re
from pathlib import Path

from django.conf import settings

from accounts import errors
from api import exceptions

# Joining a classroom happens on the site's sign-up page, never through the API.
SITE_ONLY = {"invalid_join_code", "already_joined"}


def _subclasses(cls: type[errors.DomainError]) -> list[type[errors.DomainError]]:
    return [sub for child in cls.__subclasses__() for sub in (child, *_subclasses(child))]


def api_codes() -> dict[str, int]:
    kinds: list[type[errors.DomainError]] = [errors.DomainError, *_subclasses(errors.DomainError)]
    codes = {kind.code: kind.status for kind in kinds}
    for exception, code in exceptions.DRF_CODES:
        codes.setdefault(code, exception.status_code)
    codes[exceptions.PayloadTooLarge.default_code] = exceptions.PayloadTooLarge.status_code
    codes[exceptions.ServiceUnavailable.default_code] = exceptions.ServiceUnavailable.status_code
    return {code: status for code, status in codes.items() if code not in SITE_ONLY}


def documented_codes() -> dict[str, int]:
    readme = (Path(settings.BASE_DIR) / "README.md").read_text()
    section = readme.split("- **Errors** always look like")[1].split("\n- **")[0]
    documented: dict[str, int] = {}
    for bullet in re.split(r"\n  - ", section)[1:]:
        bullet = re.sub(r"\(.*?\)", "", " ".join(bullet.split()))  # asides name fields
        whole = re.match(r"`(\d{3})`[:,]", bullet)
        if whole:  # "`409`, a request the rules refuse ...: `a`, `b`"
            for code in re.findall(r"`([a-z_]+)`", bullet):
                documented[code] = int(whole.group(1))
        for status, code in re.findall(r"`(\d{3})` `([a-z_]+)`", bullet):
            documented[code] = int(status)
    return documented


def test_every_error_code_of_the_api_is_documented_with_its_status():
    assert documented_codes() == api_codes()
