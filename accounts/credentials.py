"""Passwords set for someone else, and what happens to the sessions they are signed in with."""

from __future__ import annotations

from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY
from django.contrib.sessions.models import Session
from django.db import transaction
from django.utils import timezone
from django.utils.crypto import constant_time_compare
from django.views.decorators.debug import sensitive_variables

from accounts import errors
from accounts.models import User


def _signs_in(user: User, data: dict[str, object]) -> bool:
    """Whether a session naming the user still signs them in: it carries the hash of their
    current password, as Django checks on each request (its fallback secrets included).

    A session stamped before the password last changed was ended by that change, though its
    row stays until its next request or its expiry."""
    stamp = data.get(HASH_SESSION_KEY)
    if not isinstance(stamp, str) or not stamp:
        return False
    hashes = [user.get_session_auth_hash(), *user.get_session_auth_fallback_hash()]
    return any(constant_time_compare(stamp, valid) for valid in hashes)


def _live_sessions(user: User) -> list[tuple[str, dict[str, object]]]:
    """The unexpired sessions signed in as the user: (session key, session data).

    Sessions are stored in the database (Django's default engine) and say whose they are only
    inside their signed data, so each live one is read; an admin action can afford that.
    """
    owner = str(user.pk)
    found = []
    for session in Session.objects.filter(expire_date__gt=timezone.now()).iterator():
        data = session.get_decoded()
        if data.get(SESSION_KEY) == owner and _signs_in(user, data):
            found.append((session.session_key, data))
    return found


def live_session_count(*, user_id: int) -> int:
    """How many unexpired sessions are signed in as the user (browsers, phones)."""
    user = User.objects.filter(pk=user_id).first()
    return 0 if user is None else len(_live_sessions(user))


# The new password is an argument here (and ``raw_password`` in Django's hashing below), so
# error reports must hide those locals; a ``with`` block rather than ``@transaction.atomic``,
# whose wrapper would hold the arguments in a frame of its own that nothing marks.
@sensitive_variables("password", "raw_password")
def user_set_password(*, user_id: int, password: str, sign_out_everywhere: bool) -> int:
    """Give the user a new password (checked against the validators by the caller's form).

    Django ends every session of a user whose password changes, since a session carries a
    hash of the password. Here that happens only with ``sign_out_everywhere``; otherwise
    the user's sessions are stamped with the new hash and stay signed in: a student who
    forgot their password loses nothing where they are still signed in. Only sessions that
    sign in with the old password are kept: one that an earlier change of the password
    ended stays ended. Returns the number of sessions ended, or kept.
    """
    with transaction.atomic():
        user = User.objects.select_for_update(of=("self",)).filter(pk=user_id).first()
        if user is None:
            raise errors.NotFound("No such user.")
        sessions = _live_sessions(user)  # read with the old password's hash
        user.set_password(password)
        user.save(update_fields=["password"])
        if sign_out_everywhere:
            Session.objects.filter(session_key__in=[key for key, _ in sessions]).delete()
            return len(sessions)
        stamp = user.get_session_auth_hash()
        for key, data in sessions:
            data[HASH_SESSION_KEY] = stamp
            Session.objects.filter(session_key=key).update(
                session_data=Session.objects.encode(data)
            )
        return len(sessions)
