"""Every API endpoint, found by walking the URL configuration, against every kind of outsider.

Callers: anonymous, another classroom's student (with a trade key), the owner's read-only
key (on writes), the owner's revoked key and the owner's expired key. None of them may see
the owner's data or change anything: the database is snapshotted around every request.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.urls import URLPattern

from accounts.models import LedgerEntry, LedgerTransaction, TradingAccount
from api.models import ApiKey
from api.urls import v1
from liquidation.models import LiquidationEvent, MarginCall, PriceTick
from positions.models import Collateral, Fill, Order, Position
from positions.services import order_place, position_open
from tests.api.conftest import client_for, new_key, order_body

pytestmark = pytest.mark.django_db

WRITE_METHODS = {"post", "put", "patch", "delete"}
PUBLIC = {"health"}  # answers anyone, says nothing about anybody
SECRET_MARK = "alice-secret-order"
# The quantity of Alice's liquidated short: it shows in her fills, statement and liquidations.
SECRET_QUANTITY = "0.017"


def endpoints() -> list[tuple[str, str, URLPattern]]:
    found = []
    for pattern in v1:
        assert isinstance(pattern, URLPattern)
        view = pattern.callback.view_class  # type: ignore[attr-defined]
        for method in ("get", "post", "put", "patch", "delete"):
            if hasattr(view, method):
                found.append((str(pattern.name), method, pattern))
    return found


@pytest.fixture
def victim(account, btc):
    """Alice with an open position, a resting order, a liquidation and a margin call."""
    account.classroom.max_leverage = 125
    account.classroom.save()
    position = position_open(
        account_id=account.pk, instrument_id=btc.pk, side="long", quantity="0.01", leverage=10
    )
    resting = order_place(
        account_id=account.pk,
        instrument_id=btc.pk,
        side="long",
        type="limit",
        quantity="0.01",
        leverage=10,
        price="50000",
        client_order_id=SECRET_MARK,
    )
    # Its own order for PATCH, which replaces it: DELETE cancels the other one.
    replaceable = order_place(
        account_id=account.pk,
        instrument_id=btc.pk,
        side="short",
        type="limit",
        quantity="0.01",
        leverage=10,
        price="70000",
    )
    gone = position_open(
        account_id=account.pk,
        instrument_id=btc.pk,
        side="short",
        quantity=SECRET_QUANTITY,
        leverage=5,
    )
    LiquidationEvent.objects.create(
        position=gone,
        classroom=btc.classroom,
        quantity=gone.quantity,
        mark_price=Decimal("71234.5"),
        bankruptcy_price=gone.bankruptcy_price,
        collateral_lost=Decimal("120"),
    )
    MarginCall.objects.create(
        position=position,
        classroom=btc.classroom,
        mark_price=Decimal("54321.5"),
        margin_ratio=Decimal("0.8"),
    )
    PriceTick.objects.create(instrument=btc, price=Decimal("60000"))
    return {
        "account": account,
        "position": position,
        "order": resting,
        "replaceable": replaceable,
        "btc": btc,
    }


def request_for(name: str, method: str, victim) -> tuple[dict[str, object], dict[str, object]]:
    """URL kwargs and a body that would succeed for the owner."""
    account, position, order = victim["account"], victim["position"], victim["order"]
    placing = order_body(account, client_order_id="battery")
    table: dict[str, tuple[dict[str, object], dict[str, object]]] = {
        "health": ({}, {}),
        "me": ({}, {}),
        "account-list": ({}, {}),
        "account-detail": ({"pk": account.pk}, {}),
        "instrument-list": ({}, {}),
        "instrument-detail": ({"symbol": "BTCUSDT"}, {}),
        "instrument-prices": ({"symbol": "BTCUSDT"}, {}),
        "order-preview": ({}, placing),
        # A GET sends its body as query parameters, which would narrow the list to this order.
        "order-list": ({}, placing if method == "post" else {}),
        "order-detail": (
            ({"pk": victim["replaceable"].pk}, {"price": "71000"})
            if method == "patch"
            else ({"pk": order.pk}, {})
        ),
        "position-list": ({}, {}),
        "position-detail": ({"pk": position.pk}, {}),
        "position-close": ({"pk": position.pk}, {"quantity": "0.005"}),
        "position-margin": ({"pk": position.pk}, {"amount": "5"}),
        "position-tpsl": ({"pk": position.pk}, {"take_profit": "70000", "stop_loss": "55000"}),
        "fill-list": ({}, {}),
        "statement": ({}, {}),
        "liquidation-list": ({}, {}),
        "margin-call-list": ({}, {}),
        "classroom-leaderboard": ({"pk": account.classroom_id}, {}),
    }
    assert name in table, f"new endpoint {name!r}: add it to the permission battery"
    return table[name]


def url_of(pattern: URLPattern, kwargs: dict[str, object], other_slash: bool = False) -> str:
    """The endpoint's URL, or with ``other_slash`` its trailing slash dropped or added (which
    names the same endpoint)."""
    from django.urls import reverse

    url = reverse(f"api:{pattern.name}", kwargs=kwargs or None)
    if other_slash:
        return url[:-1] if url.endswith("/") else f"{url}/"
    return url


def snapshot() -> tuple[object, ...]:
    return (
        list(TradingAccount.objects.order_by("pk").values_list("pk", "balance", "trading_frozen")),
        list(Collateral.objects.order_by("pk").values_list("pk", "amount")),
        list(
            Position.objects.order_by("pk").values_list(
                "pk", "status", "quantity", "liquidation_price", "take_profit", "stop_loss"
            )
        ),
        list(Order.objects.order_by("pk").values_list("pk", "status")),
        Fill.objects.count(),
        LedgerTransaction.objects.count(),
        LedgerEntry.objects.count(),
        list(ApiKey.objects.order_by("pk").values_list("pk", "revoked_at", "scope")),
    )


def victim_markers(victim) -> list[str]:
    """Strings that appear only in the owner's data."""
    return ["alice", SECRET_MARK, SECRET_QUANTITY, "71234.5", "54321.5", "Trading 101"]


@pytest.fixture
def callers(victim, outsider, read_key, revoked_key, expired_key):
    return {
        "anonymous": client_for(None),
        "another student": outsider,
        "read-only key": client_for(read_key),
        "revoked key": client_for(revoked_key),
        "expired key": client_for(expired_key),
    }


@pytest.mark.parametrize("other_slash", [False, True], ids=["as-routed", "other-slash"])
def test_every_endpoint_refuses_every_outsider(victim, callers, other_slash):
    checked = 0
    for name, method, pattern in endpoints():
        if name in PUBLIC:
            continue
        kwargs, body = request_for(name, method, victim)
        url = url_of(pattern, kwargs, other_slash)
        for caller, client in callers.items():
            writes = method in WRITE_METHODS and getattr(
                pattern.callback.view_class,  # type: ignore[attr-defined]
                "writes",
                True,
            )
            if caller == "read-only key" and not writes:
                continue
            before = snapshot()
            response = getattr(client, method)(url, body, format="json")
            after = snapshot()
            label = f"{caller} {method.upper()} {url}"
            assert after == before, f"{label} changed the database"
            text = response.content.decode()
            for marker in victim_markers(victim):
                assert marker not in text, f"{label} leaked {marker!r}: {text[:300]}"
            expected = {
                "anonymous": (401, "not_authenticated"),
                "revoked key": (401, "not_authenticated"),
                "expired key": (401, "not_authenticated"),
                "read-only key": (403, "permission_denied"),
            }.get(caller)
            if expected:
                assert (response.status_code, response.json()["error"]["code"]) == expected, label
            elif kwargs.get("pk") or body.get("account"):
                assert response.status_code == 404, label
                assert response.json()["error"]["code"] == "not_found", label
            else:
                # A list of the caller's own things: theirs only (checked by the markers).
                assert response.status_code in (200, 404), label
            checked += 1
    assert checked >= 60


def test_a_deactivated_owner_is_refused_everywhere_by_key_and_by_session(victim, account):
    """The operator shuts a student out by deactivating their user: their trade key and the
    browser they were signed in with stop working on every endpoint at once, and nothing is
    written."""
    from rest_framework.test import APIClient

    key = client_for(new_key(account, "trade"))
    browser = APIClient()
    browser.force_login(account.user)
    assert key.get("/api/v1/me").status_code == 200
    account.user.is_active = False
    account.user.save(update_fields=["is_active"])
    checked = 0
    for name, method, pattern in endpoints():
        if name in PUBLIC:
            continue
        kwargs, body = request_for(name, method, victim)
        url = url_of(pattern, kwargs)
        for caller, client in (("key", key), ("session", browser)):
            before = snapshot()
            response = getattr(client, method)(url, body, format="json")
            label = f"{caller} {method.upper()} {url}"
            assert snapshot() == before, f"{label} changed the database"
            assert response.status_code == 401, label
            assert response.json()["error"]["code"] == "not_authenticated", label
            checked += 1
    assert checked >= 30


@pytest.mark.parametrize("other_slash", [False, True], ids=["as-routed", "other-slash"])
def test_the_owner_succeeds_with_the_same_requests(victim, account, other_slash):
    """The battery's requests are real ones: with the owner's trade key every one succeeds."""
    owner = client_for(new_key(account, "trade"))
    order_created = False
    # Cancelling every order goes last, so that cancelling the one order still finds it resting.
    for name, method, pattern in sorted(
        endpoints(), key=lambda e: e[:2] == ("order-list", "delete")
    ):
        kwargs, body = request_for(name, method, victim)
        url = url_of(pattern, kwargs, other_slash)
        response = getattr(owner, method)(url, body, format="json")
        assert response.status_code in (200, 201), (name, method, response.content[:300])
        order_created |= name == "order-list" and method == "post"
        if name not in PUBLIC and method == "get":
            assert any(m in response.content.decode() for m in victim_markers(victim)) or name in {
                "account-list",
                "account-detail",
                "instrument-list",
                "instrument-detail",
                "instrument-prices",
                "position-list",
                "position-detail",
            }, name
    assert order_created


@pytest.mark.parametrize("path", ["/api/v1/orders/", "/api/v1/orders"])
def test_session_callers_need_csrf_for_writes(victim, account, client, path):
    client.force_login(account.user)
    from rest_framework.test import APIClient

    browser = APIClient(enforce_csrf_checks=True)
    browser.force_login(account.user)
    before = snapshot()
    response = browser.post(
        path,
        {"account": account.pk, "symbol": "BTCUSDT", "side": "long", "quantity": "0.01"},
        format="json",
    )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"
    assert snapshot() == before
    assert browser.get("/api/v1/me").json()["username"] == "alice"


def test_a_malformed_or_unknown_key_is_not_authenticated(victim):
    headers = (
        "Bearer",
        "Bearer rf_nope",
        "Bearer rf_0123456789ab_wrong",
        "Bearer a b",
        "Bearer rf_0123456789a\x00_wrong",  # PostgreSQL refuses a NUL in the prefix lookup
    )
    for header in headers:
        from rest_framework.test import APIClient

        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=header)
        response = client.get("/api/v1/me")
        assert response.status_code == 401, header
        assert response.json()["error"]["code"] == "not_authenticated"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("scheme", ["Token {key}", "{key}", "Api-Key {key}"])
def test_a_key_sent_under_another_scheme_is_told_how_to_send_it(account, trade_key, scheme):
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=scheme.format(key=trade_key))
    response = client.get("/api/v1/me")
    assert response.status_code == 401
    assert response.json()["error"] == {
        "code": "not_authenticated",
        "message": "Send the header as 'Authorization: Bearer <key>'.",
        "fields": {},
    }


def test_another_scheme_without_a_key_leaves_the_browser_session_signed_in(account):
    from rest_framework.test import APIClient

    browser = APIClient()
    browser.force_login(account.user)
    # A proxy in front of the classroom may add its own Basic sign-in to every request.
    browser.credentials(HTTP_AUTHORIZATION="Basic dGVhY2hlcjpwcm94eQ==")
    response = browser.get("/api/v1/me")
    assert response.status_code == 200, response.json()
    assert response.json()["username"] == account.user.username
