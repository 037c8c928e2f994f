"""Services that create and revoke API keys; the only code writing ApiKey rows."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from accounts import errors
from api.models import ApiKey

KEY_TAG = "rf"
PREFIX_BYTES = 6  # 12 hex characters: the public part used for the lookup
SECRET_BYTES = 32  # 256 bits of entropy: a plain SHA-256 is enough, no slow hash needed
MAX_ACTIVE_KEYS = 20
HEX_DIGITS = frozenset("0123456789abcdef")


def hash_key(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def split_key(raw: str) -> str | None:
    """The public prefix of a presented key, or None when it is not shaped like one."""
    parts = raw.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_TAG or len(parts[1]) != PREFIX_BYTES * 2:
        return None
    # Only what token_hex gives: anything else (a NUL byte, which PostgreSQL refuses in a
    # query) names no key.
    if any(c not in HEX_DIGITS for c in parts[1]):
        return None
    return parts[1]


@dataclass(frozen=True)
class NewApiKey:
    """A key just created: ``raw`` is the only copy of the secret and is shown once."""

    api_key: ApiKey
    raw: str


@transaction.atomic
def api_key_create(
    *,
    user_id: int,
    name: str,
    scope: str = ApiKey.Scope.READ,
    expires_at: datetime | None = None,
) -> NewApiKey:
    name = (name or "").strip()
    if not name:
        raise errors.DomainError("Give the key a name.", field="name")
    if len(name) > 80:
        raise errors.DomainError("The name is at most 80 characters.", field="name")
    if scope not in ApiKey.Scope.values:
        raise errors.DomainError("The scope must be read or trade.", field="scope")
    now = timezone.now()
    if expires_at is not None and expires_at <= now:
        raise errors.DomainError("The expiry must be in the future.", field="expires_at")
    # The user's row, not their keys, is the lock: two first keys find no key rows to lock,
    # and a waiting count would not see the key the other creation just inserted.
    get_user_model().objects.select_for_update(no_key=True).filter(pk=user_id).first()
    active = ApiKey.objects.filter(user_id=user_id, revoked_at__isnull=True)
    if sum(1 for key in active if key.is_active(now)) >= MAX_ACTIVE_KEYS:
        raise errors.DomainError(
            f"You already have {MAX_ACTIVE_KEYS} active keys; revoke one first.", field="name"
        )
    prefix = secrets.token_hex(PREFIX_BYTES)
    raw = f"{KEY_TAG}_{prefix}_{secrets.token_urlsafe(SECRET_BYTES)}"
    api_key = ApiKey.objects.create(
        user_id=user_id,
        name=name,
        prefix=prefix,
        key_hash=hash_key(raw),
        scope=scope,
        expires_at=expires_at,
        created_at=now,
    )
    return NewApiKey(api_key=api_key, raw=raw)


@transaction.atomic
def api_key_revoke(*, user_id: int, api_key_id: int) -> ApiKey:
    """Revoke one of the user's keys; requests signed with it fail from now on."""
    api_key = (
        ApiKey.objects.select_for_update(no_key=True).filter(pk=api_key_id, user_id=user_id).first()
    )
    if api_key is None:
        raise errors.NotFound("No such API key.")
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
    return api_key


@transaction.atomic
def api_keys_revoke_all(*, user_id: int) -> int:
    """Revoke every key of the user that still works (signing them out everywhere includes
    their bots); returns how many were revoked. Expired and revoked keys stay as they are."""
    return working_keys(user_id).update(revoked_at=timezone.now())


def key_works(now: datetime) -> Q:
    """Keys that neither are revoked nor have expired at ``now``, as ``ApiKey.is_active``."""
    return Q(revoked_at__isnull=True) & (Q(expires_at__isnull=True) | Q(expires_at__gt=now))


def working_keys(user_id: int) -> QuerySet[ApiKey]:
    """The user's keys that neither are revoked nor have expired."""
    return ApiKey.objects.filter(key_works(timezone.now()), user_id=user_id)
