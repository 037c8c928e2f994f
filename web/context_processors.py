"""Navigation for every page: links that depend on this installation, and the trading account
whose pages the main navigation leads to when the page itself is about no account."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse
from django.utils.functional import SimpleLazyObject

from accounts.models import TradingAccount
from positions.selectors import accounts_for_user

# The account a student last opened, so pages about no account (API keys, classrooms,
# password) lead back to the classroom they were working in.
CURRENT_ACCOUNT_KEY = "current_account"


def remember_account(request: HttpRequest, account: TradingAccount) -> None:
    if request.session.get(CURRENT_ACCOUNT_KEY) != account.pk:  # no session write per page
        request.session[CURRENT_ACCOUNT_KEY] = account.pk


def current_account(request: HttpRequest) -> TradingAccount | None:
    """The account last opened if it is still the user's, else their newest; None without one."""
    if not request.user.is_authenticated:
        return None
    accounts = accounts_for_user(request.user)  # type: ignore[arg-type]
    remembered = request.session.get(CURRENT_ACCOUNT_KEY)
    if isinstance(remembered, int):
        account = accounts.filter(pk=remembered).first()
        if account is not None:
            return account
    return accounts.order_by("-pk").first()


def navigation(request: HttpRequest) -> dict[str, Any]:
    try:
        api_keys_url: str | None = reverse("api-keys")
    except NoReverseMatch:
        api_keys_url = None
    return {
        "api_keys_url": api_keys_url,
        # Lazy: pages that pass their own ``account`` never run this query.
        "current_account": SimpleLazyObject(lambda: current_account(request)),
    }
