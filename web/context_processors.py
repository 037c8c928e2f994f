"""Navigation links that depend on which pages this installation has."""

from __future__ import annotations

from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse


def navigation(request: HttpRequest) -> dict[str, str | None]:
    try:
        api_keys_url: str | None = reverse("api-keys")
    except NoReverseMatch:
        api_keys_url = None
    return {"api_keys_url": api_keys_url}
