"""The API keys page: a student creates (and sees once), lists and revokes their keys."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta
from typing import cast

from django import forms
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from accounts import errors
from accounts.models import User
from api.models import ApiKey
from api.services import api_key_create, api_key_revoke
from api.throttling import ApiKeyRateThrottle, ApiUserRateThrottle


class ApiKeyForm(forms.Form):
    name = forms.CharField(max_length=80, help_text="What the key is for, e.g. 'momentum bot'.")
    scope = forms.ChoiceField(choices=ApiKey.Scope.choices, initial=ApiKey.Scope.READ)
    expires_on = forms.DateField(
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text="Optional: the key stops working at the end of this day (UTC).",
    )

    def clean_expires_on(self) -> date | None:
        day: date | None = self.cleaned_data.get("expires_on")
        if day is not None and day > timezone.now().date() + timedelta(days=MAX_EXPIRY_DAYS):
            raise forms.ValidationError("Pick a day within the next ten years.")
        return day

    def expires_at(self) -> datetime | None:
        day = self.cleaned_data.get("expires_on")
        if day is None:
            return None
        return datetime.combine(day + timedelta(days=1), time.min, tzinfo=UTC)


PERIODS = {1: "a second", 60: "a minute", 3600: "an hour", 86400: "a day"}


def rate_in_words(rate: str | None) -> str:
    """``"600/min"`` as ``"600 requests a minute"`` ("" when the API is not throttled)."""
    try:
        count, seconds = ApiKeyRateThrottle().parse_rate(rate)  # as the throttle reads it
    except (KeyError, ValueError):
        return ""
    if count is None or seconds is None:
        return ""
    return f"{count} requests {PERIODS[seconds]}"


MAX_EXPIRY_DAYS = 3660

# The secret of a key just created travels from the form's redirect to the next page view in a
# signed, short-lived cookie of the student's own browser (the server keeps only the hash),
# which that view shows once and deletes: a reload shows it no more and cannot post the form
# again (which would create a second key).
NEW_KEY_COOKIE = "rf_new_api_key"
NEW_KEY_SALT = "ringfence.api-keys.new"
NEW_KEY_SECONDS = 120


@login_required
def api_keys(request: HttpRequest) -> HttpResponse:
    user = cast(User, request.user)
    form = ApiKeyForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            created = api_key_create(
                user_id=user.pk,
                name=form.cleaned_data["name"],
                scope=form.cleaned_data["scope"],
                expires_at=form.expires_at(),
            )
        except errors.DomainError as exc:
            # The service's expires_at is the form's expires_on: the day the student picked.
            field = "expires_on" if exc.field == "expires_at" else exc.field
            form.add_error(field if field in form.fields else None, exc.message)
        else:
            answer = redirect("api-keys")
            answer.set_signed_cookie(
                NEW_KEY_COOKIE,
                json.dumps({"user": user.pk, "raw": created.raw, "name": created.api_key.name}),
                salt=NEW_KEY_SALT,
                max_age=NEW_KEY_SECONDS,
                path=reverse("api-keys"),
                # At least as secure as the sign-in's cookie: a proxy that does not say the
                # request came over HTTPS must not send the key in the clear.
                secure=request.is_secure() or settings.SESSION_COOKIE_SECURE,
                httponly=True,
                samesite="Strict",
            )
            return answer
    new = _new_key(request) if request.method == "GET" else None
    keys = ApiKey.objects.filter(user_id=user.pk)
    response = render(
        request,
        "api/keys.html",
        {
            "form": form,
            "new_key": new["raw"] if new else None,
            "new_key_name": new["name"] if new else "",
            "me_url": request.build_absolute_uri(reverse("api:me")),
            "throttle_rate": rate_in_words(settings.API_THROTTLE_RATE),
            "shared_rate": rate_in_words(ApiUserRateThrottle().get_rate()),
            "keys": keys,
            "now": timezone.now(),
        },
        status=400 if request.method == "POST" else 200,
    )
    if NEW_KEY_COOKIE in request.COOKIES:
        response.delete_cookie(NEW_KEY_COOKIE, path=reverse("api-keys"), samesite="Strict")
    if new:
        response.headers["Cache-Control"] = "no-store"
    return response


def _new_key(request: HttpRequest) -> dict[str, str] | None:
    """The key created just before this view, if this browser and user created it."""
    value = request.get_signed_cookie(
        NEW_KEY_COOKIE, default=None, salt=NEW_KEY_SALT, max_age=NEW_KEY_SECONDS
    )
    if value is None:
        return None
    try:
        new = json.loads(value)
    except ValueError:
        return None
    if not isinstance(new, dict) or new.get("user") != request.user.pk:
        return None
    return {"raw": str(new.get("raw", "")), "name": str(new.get("name", ""))}


@login_required
@require_POST
def api_key_revoke_view(request: HttpRequest, pk: int) -> HttpResponse:
    user = cast(User, request.user)
    try:
        api_key_revoke(user_id=user.pk, api_key_id=pk)
    except errors.NotFound:
        return HttpResponse("No such API key.", status=404)
    return redirect("api-keys")
