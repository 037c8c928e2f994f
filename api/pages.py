"""The API keys page: a student creates (and sees once), lists and revokes their keys."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
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
from api.throttling import ApiKeyRateThrottle


class ApiKeyForm(forms.Form):
    name = forms.CharField(max_length=80, help_text="What the key is for, e.g. 'momentum bot'.")
    scope = forms.ChoiceField(choices=ApiKey.Scope.choices, initial=ApiKey.Scope.READ)
    expires_on = forms.DateField(
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text="Optional: the key stops working at the end of this day (UTC).",
    )

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


# The secret of a key just created, kept in the session only between the form's redirect and
# the next page view, which shows it once and drops it: a reload then shows it no more and
# cannot post the form again (which would create a second key).
NEW_KEY_SESSION = "api_keys_new"


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
            form.add_error(exc.field if exc.field in form.fields else None, exc.message)
        else:
            request.session[NEW_KEY_SESSION] = {
                "raw": created.raw,
                "name": created.api_key.name,
            }
            return redirect("api-keys")
    new = request.session.pop(NEW_KEY_SESSION, None) if request.method == "GET" else None
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
            "keys": keys,
            "now": timezone.now(),
        },
        status=400 if request.method == "POST" else 200,
    )
    if new:
        response.headers["Cache-Control"] = "no-store"
    return response


@login_required
@require_POST
def api_key_revoke_view(request: HttpRequest, pk: int) -> HttpResponse:
    user = cast(User, request.user)
    try:
        api_key_revoke(user_id=user.pk, api_key_id=pk)
    except errors.NotFound:
        return HttpResponse("No such API key.", status=404)
    return redirect("api-keys")
