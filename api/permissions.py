"""Who may call what: signed-in callers read, only trade-scoped keys (or the browser) write."""

from __future__ import annotations

from typing import Any

from rest_framework import permissions
from rest_framework.request import Request

from api.models import ApiKey


class KeyScopePermission(permissions.BasePermission):
    """Writes need a trade-scoped key; a read-only key may only read (and preview).

    A view whose ``writes`` attribute is False (the order preview) changes nothing and is
    open to read-only keys whatever its method.
    """

    message = "This API key is read-only; create a key with the trade scope to place orders."

    def has_permission(self, request: Request, view: Any) -> bool:
        if request.method in permissions.SAFE_METHODS or not getattr(view, "writes", True):
            return True
        if isinstance(request.auth, ApiKey):
            return request.auth.can_trade
        return True
