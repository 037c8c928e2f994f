"""``Authorization: Bearer <key>`` authentication for the REST API."""

from __future__ import annotations

import hmac
from datetime import timedelta
from typing import Any

from django.utils import timezone
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from api.models import ApiKey
from api.services import KEY_TAG, hash_key, split_key

# last_used_at is a hint for the student, not an audit log: one write a minute is plenty.
LAST_USED_RESOLUTION = timedelta(minutes=1)

WRONG_SCHEME = "Send the header as 'Authorization: Bearer <key>'."
KEY_START = f"{KEY_TAG}_".encode()


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """Finds the key by its public prefix, then compares the SHA-256 of the whole key."""

    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[Any, ApiKey] | None:
        header = authentication.get_authorization_header(request).split()
        if not header:
            return None
        if header[0].lower() != self.keyword.lower().encode():
            # A Ringfence key under another scheme ("Token rf_…", or none at all) would
            # otherwise be answered "credentials were not provided"; any other scheme (a
            # proxy's Basic sign-in) is left to the browser session.
            if any(part.startswith(KEY_START) for part in header):
                raise exceptions.AuthenticationFailed(WRONG_SCHEME)
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed(WRONG_SCHEME)
        try:
            raw = header[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("This API key is not valid.") from None
        prefix = split_key(raw)
        try:
            api_key = ApiKey.objects.select_related("user").get(prefix=prefix) if prefix else None
        except ApiKey.DoesNotExist:
            api_key = None
        if api_key is None or not hmac.compare_digest(api_key.key_hash, hash_key(raw)):
            raise exceptions.AuthenticationFailed("This API key is not valid.")
        now = timezone.now()
        if api_key.revoked_at is not None:
            raise exceptions.AuthenticationFailed("This API key has been revoked.")
        if api_key.expires_at is not None and now >= api_key.expires_at:
            raise exceptions.AuthenticationFailed("This API key has expired.")
        if not api_key.user.is_active:
            raise exceptions.AuthenticationFailed("This account is disabled.")
        if api_key.last_used_at is None or now - api_key.last_used_at >= LAST_USED_RESOLUTION:
            ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        return api_key.user, api_key

    def authenticate_header(self, request: Request) -> str:
        return f'{self.keyword} realm="api"'
