"""The one place where errors become ``{"error": {"code", "message", "fields"}}`` bodies.

Domain errors keep their stable ``code`` and HTTP ``status``; DRF's own exceptions are
mapped to codes of the same family. Headers that DRF sets (``Retry-After``,
``WWW-Authenticate``) are kept. A cache (Redis) that cannot be reached, which the throttle
needs on every request, is a ``503 service_unavailable`` with ``Retry-After``.
"""

from __future__ import annotations

import math
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from accounts.errors import DomainError
from config.cache import RETRY_AFTER_SECONDS, UNREACHABLE, note_cache_unreachable

DRF_CODES: list[tuple[type[exceptions.APIException], str]] = [
    (exceptions.ValidationError, "invalid_request"),
    (exceptions.ParseError, "invalid_request"),
    (exceptions.NotAuthenticated, "not_authenticated"),
    (exceptions.AuthenticationFailed, "not_authenticated"),
    (exceptions.PermissionDenied, "permission_denied"),
    (exceptions.NotFound, "not_found"),
    (exceptions.MethodNotAllowed, "method_not_allowed"),
    (exceptions.NotAcceptable, "not_acceptable"),
    (exceptions.UnsupportedMediaType, "unsupported_media_type"),
    (exceptions.Throttled, "throttled"),
]


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "payload_too_large"


class ServiceUnavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "service_unavailable"
    default_detail = (
        "Ringfence is briefly unavailable: its shared cache cannot be reached. "
        "Try again after Retry-After seconds."
    )


def error_body(code: str, message: str, fields: dict[str, list[str]] | None = None) -> dict:
    return {"error": {"code": code, "message": message, "fields": fields or {}}}


def _flatten(detail: Any, prefix: str = "") -> dict[str, list[str]]:
    """DRF's nested error detail as ``{"field": ["message", ...]}`` (nested keys dotted)."""
    out: dict[str, list[str]] = {}
    if isinstance(detail, dict):
        for key, value in detail.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            for field, messages in _flatten(value, name).items():
                out.setdefault(field, []).extend(messages)
    elif isinstance(detail, list):
        for index, value in enumerate(detail):
            if isinstance(value, dict | list):
                for field, messages in _flatten(value, f"{prefix}.{index}").items():
                    out.setdefault(field, []).extend(messages)
            else:
                out.setdefault(prefix or "non_field_errors", []).append(str(value))
    else:
        out.setdefault(prefix or "non_field_errors", []).append(str(detail))
    return out


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, DomainError):
        return Response(error_body(exc.code, exc.message, exc.fields), status=exc.status)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, UNREACHABLE):
        note_cache_unreachable(context["request"]._request, exc)
        exc = ServiceUnavailable()
    elif isinstance(exc, RequestDataTooBig):
        # Django raises it while DRF reads the body; left alone it becomes an HTML 400.
        exc = PayloadTooLarge(
            f"The request body is over {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes, "
            "the most the API reads."
        )
    response = exception_handler(exc, context)
    if response is None or not isinstance(exc, exceptions.APIException):
        return response
    code = next((c for cls, c in DRF_CODES if isinstance(exc, cls)), None)
    if code is None:
        code = exc.default_code if isinstance(exc.default_code, str) else "error"
    if isinstance(exc, exceptions.ValidationError):
        message = "The request is not valid; see fields."
        fields = _flatten(exc.detail)
    else:
        detail = exc.default_detail if isinstance(exc.detail, dict | list) else exc.detail
        message = str(detail)
        fields = {}
    if isinstance(exc, exceptions.NotFound) and message == str(exceptions.NotFound.default_detail):
        message = "Not found."
    if response.status_code == status.HTTP_403_FORBIDDEN and isinstance(
        exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed
    ):
        # No WWW-Authenticate challenge (session-only callers): still a 401 for bots.
        response.status_code = status.HTTP_401_UNAUTHORIZED
    if isinstance(exc, ServiceUnavailable):
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    if isinstance(exc, exceptions.Throttled):
        # Whole seconds, never 0: a client that waits Retry-After must then get through.
        wait = getattr(exc, "wait", None) or 1
        response.headers["Retry-After"] = str(max(1, math.ceil(wait)))
    response.data = error_body(code, str(message), fields)
    return response
