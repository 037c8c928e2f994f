"""Live parts of a page (htmx requests) that are answered with a redirect reload the page.

A live part refreshes itself every few seconds in place. Once the sign-in behind it has ended
(signed out in another tab, or past ``SESSION_HOURS``), its request is redirected to the
sign-in page, and htmx, which follows redirects, would swap that whole page, header and all,
into the part: a page inside the page, with the old numbers around it. The browser loads the
page again instead, which leads to the sign-in page and, once signed in, back to this page.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django_htmx.http import HttpResponseClientRefresh

REDIRECTS = frozenset({301, 302, 303, 307, 308})


class LivePartRedirectMiddleware:
    """Turn a redirect of an htmx request into a reload of the whole page (after
    ``HtmxMiddleware``, which tells an htmx request)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if response.status_code in REDIRECTS and getattr(request, "htmx", False):
            return HttpResponseClientRefresh()
        return response
