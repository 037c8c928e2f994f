"""Trading through the API: the same services as the pages, errors with stable codes."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from accounts.models import LedgerTransaction, TradingAccount
from accounts.services import account_adjust
from positions.models import Fill, Order, Position, TpSlChange
from positions.services import position_open
from tests.api.conftest import client_for, new_key, order_body
from tests.factories import make_classroom, make_instrument, make_student
from tests.invariants import assert_ledger_invariants

pytestmark = pytest.mark.django_db

ORDERS = "/api/v1/orders/"


def test_market_order_opens_a_position_with_exact_decimal_strings(api, account, btc):
    response = api.post(ORDERS, order_body(account), format="json")
    assert response.status_code == 201, response.json()
    order = response.json()
    assert order["status"] == "filled"
    assert order["symbol"] == "BTCUSDT"
    assert order["quantity"] == "0.01"
    position = api.get(f"/api/v1/positions/{order['position']}/").json()
    assert position["entry_price"] == "60000"
    assert position["collateral"] == "60"
    assert position["liquidation_price"] is not None
    assert isinstance(position["unrealized_pnl"], str)
    account.refresh_from_db()
    assert account.balance == Decimal("10000") - Decimal("60") - Decimal("0.3")
    assert_ledger_invariants()


def test_orders_say_at_what_price_and_how_much_they_filled(api, account, btc):
    btc.spread = Decimal(2)
    btc.save(update_fields=["spread"])
    market = api.post(ORDERS, order_body(account), format="json").json()
    assert (market["filled_price"], market["filled_quantity"]) == ("60001", "0.01")
    resting = api.post(
        ORDERS, order_body(account, type="limit", price="59000"), format="json"
    ).json()
    assert (resting["status"], resting["filled_price"], resting["filled_quantity"]) == (
        "resting", None, None,
    )  # fmt: skip
    listed = {o["id"]: o for o in api.get(ORDERS).json()["results"]}
    assert listed[market["id"]]["filled_price"] == "60001"
    assert listed[resting["id"]]["filled_price"] is None
    detail = api.get(f"{ORDERS}{market['id']}/").json()
    assert detail["filled_quantity"] == "0.01"


def test_a_placed_order_answers_201_with_its_location_and_a_retry_200_without(api, account, btc):
    body = order_body(account, type="limit", price="59000", client_order_id="loc-1")
    placed = api.post(ORDERS, body, format="json")
    assert placed.status_code == 201
    order = api.get(placed["Location"])
    assert order.json() == placed.json()
    assert api.delete(placed["Location"]).json()["status"] == "cancelled"
    again = api.post(ORDERS, body, format="json")
    assert (again.status_code, again.json()["id"]) == (200, placed.json()["id"])
    assert "Location" not in again
    schema = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    answers = schema["paths"]["/api/v1/orders/"]["post"]["responses"]
    assert "Location" in answers["201"]["headers"] and "Location" not in answers["200"]["headers"]


def test_buy_and_sell_are_aliases_of_long_and_short(api, account, btc):
    short = api.post(ORDERS, order_body(account, side="sell"), format="json").json()
    long = api.post(ORDERS, order_body(account, side="BUY"), format="json").json()
    assert (short["side"], long["side"]) == ("short", "long")


def test_repeated_client_order_id_returns_the_original_without_opening_twice(api, account, btc):
    body = order_body(account, client_order_id="alpha-1")
    first = api.post(ORDERS, body, format="json")
    again = api.post(ORDERS, {**body, "quantity": "0.010", "symbol": "btcusdt"}, format="json")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["quantity"] == "0.01"
    assert Position.objects.count() == 1
    assert Order.objects.count() == 1


@pytest.mark.parametrize(
    "change",
    [
        {"quantity": "0.02"},
        {"side": "short"},
        {"leverage": 5},
        {"symbol": "ETHUSDT"},
        {"type": "limit", "price": "50000"},
        {"reduce_only": True, "position": 1},
        {"take_profit": "65000"},
        {"stop_loss": "58000"},
        {"extra_collateral": "10"},
    ],
    ids=lambda change: "+".join(change),
)
def test_a_client_order_id_reused_with_other_terms_is_a_conflict(api, account, btc, change):
    body = order_body(account, client_order_id="alpha-2")
    first = api.post(ORDERS, body, format="json").json()
    other = api.post(ORDERS, {**body, **change}, format="json")
    assert other.status_code == 409, other.json()
    error = other.json()["error"]
    assert error["code"] == "client_order_id_reused"
    assert f"order {first['id']}" in error["message"]
    assert list(error["fields"]) == ["client_order_id"]
    assert Order.objects.count() == 1
    assert Position.objects.count() == 1


def test_domain_errors_keep_their_stable_codes_and_write_nothing(api, account, btc):
    cases: list[tuple[dict, int, str, str]] = [
        ({"quantity": "0.0005"}, 400, "invalid_quantity", "quantity"),
        ({"quantity": "abc"}, 400, "invalid_quantity", "quantity"),
        ({"leverage": 126}, 400, "leverage_too_high", "leverage"),
        ({"quantity": "100"}, 409, "insufficient_balance", "quantity"),
        ({"type": "limit"}, 400, "invalid_price", "price"),
        ({"symbol": "DOGEUSDT"}, 404, "not_found", "symbol"),
    ]
    for extra, status, code, field in cases:
        response = api.post(ORDERS, order_body(account, **extra), format="json")
        assert response.status_code == status, (extra, response.json())
        error = response.json()["error"]
        assert error["code"] == code, (extra, error)
        assert field in error["fields"], (extra, error)
        assert error["message"]
    assert Order.objects.count() == 0
    assert LedgerTransaction.objects.exclude(kind="deposit").count() == 0
    account.refresh_from_db()
    assert account.balance == Decimal("10000")


def test_a_refusal_outside_the_trading_window_says_when_it_opens_or_when_it_ended(
    api, account, btc
):
    from datetime import UTC, datetime

    classroom = account.classroom
    classroom.trading_opens_at = datetime(2999, 1, 31, 9, 30, 15, tzinfo=UTC)
    classroom.save()
    early = api.post(ORDERS, order_body(account), format="json").json()["error"]
    assert early["code"] == "trading_closed"
    assert early["message"] == "Trading is closed in this classroom until 2999-01-31 09:30:15 UTC."
    classroom.trading_opens_at = None
    classroom.trading_closes_at = datetime(2020, 6, 1, 16, 0, tzinfo=UTC)
    classroom.save()
    late = api.post("/api/v1/orders/preview", order_body(account), format="json").json()["error"]
    assert late["message"] == (
        "Trading is closed in this classroom since 2020-06-01 16:00:00 UTC, the end of its "
        "trading window."
    )
    assert not Order.objects.exists()


def test_trading_closed_is_a_conflict(api, account, btc):
    detail = f"/api/v1/accounts/{account.pk}/"
    assert api.get(detail).json()["trading_open"] is True
    account.classroom.trading_enabled = False
    account.classroom.save()
    response = api.post(ORDERS, order_body(account), format="json")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "trading_closed"
    assert not Order.objects.exists()
    # A bot can see that before it tries, and when a window will open.
    assert api.get(detail).json()["trading_open"] is False
    account.classroom.trading_enabled = True
    account.classroom.trading_opens_at = timezone.now() + timedelta(hours=1)
    account.classroom.save()
    shown = api.get("/api/v1/me").json()["accounts"][0]
    assert shown["trading_open"] is False
    assert parse_datetime(shown["trading_opens_at"]) == account.classroom.trading_opens_at
    assert shown["trading_closes_at"] is None


def test_malformed_body_is_invalid_request_with_fields(api, account, btc):
    response = api.post(ORDERS, {"account": "x", "side": "up"}, format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert {"account", "side", "symbol", "quantity"} <= set(error["fields"])
    bad_json = api.post(ORDERS, "{not json", content_type="application/json")
    assert bad_json.status_code == 400
    assert bad_json.json()["error"]["code"] == "invalid_request"


def test_read_only_fields_are_never_taken_from_input(api, account, btc):
    body = order_body(
        account, status="cancelled", id=999, position=None, filled_at="2000-01-01T00:00:00Z"
    )
    body.update(entry_price="1", balance="1000000", collateral="0", user=1)
    response = api.post(ORDERS, body, format="json")
    assert response.status_code == 400
    assert set(response.json()["error"]["fields"]) == {
        "status",
        "id",
        "filled_at",
        "entry_price",
        "balance",
        "collateral",
        "user",
    }
    assert not Order.objects.exists()
    account.refresh_from_db()
    assert account.balance == Decimal("10000")


def test_preview_quotes_and_writes_nothing(api, account, btc, read_key):
    from tests.api.conftest import client_for

    before = (Order.objects.count(), LedgerTransaction.objects.count())
    response = client_for(read_key).post(
        "/api/v1/orders/preview", order_body(account, leverage=125, quantity="0.01"), format="json"
    )
    # Leverage 125 is above the classroom cap of 20: the same rule as placing.
    assert response.json()["error"]["code"] == "leverage_too_high"
    account.classroom.max_leverage = 125
    account.classroom.save()
    response = api.post("/api/v1/orders/preview", order_body(account, leverage=125), format="json")
    assert response.status_code == 200, response.json()
    quote = response.json()
    assert quote["initial_margin"] == "4.8"
    assert quote["fee"] == "0.3"
    assert quote["liquidation_price"] == "59759.1"  # 59759.036…, on the tick towards the entry
    assert quote["bankruptcy_price"] == "59520"
    assert quote["max_loss"] == "4.8"
    assert quote["distance_to_liquidation"] == "240.9"  # from 60,000 to the 59,759.1 shown
    assert (Order.objects.count(), LedgerTransaction.objects.count()) == before


def test_unquoted_json_numbers_are_read_exactly_not_as_floats(api, account, btc):
    """0.010000000000000001 is 0.01 as a float; read exactly it is off the lot size."""

    def preview(quantity: str):
        body = (
            f'{{"account": {account.pk}, "symbol": "BTCUSDT", "side": "long", '
            f'"quantity": {quantity}, "leverage": 10}}'
        )
        return api.post("/api/v1/orders/preview", body, content_type="application/json")

    exact = preview("0.01")
    assert exact.status_code == 200, exact.json()
    assert exact.json()["initial_margin"] == "60"
    off_lot = preview("0.010000000000000001")
    assert off_lot.status_code == 400
    assert off_lot.json()["error"]["code"] == "invalid_quantity"
    huge = preview("1e400")
    assert (huge.status_code, huge.json()["error"]["code"]) == (400, "invalid_quantity")
    not_json = preview("NaN")
    assert (not_json.status_code, not_json.json()["error"]["code"]) == (400, "invalid_request")


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("quantity", "\uff11", "invalid_quantity"),  # a full-width 1: one whole BTC to Decimal
        ("quantity", "0_01", "invalid_quantity"),
        ("extra_collateral", "1_000", "invalid_amount"),
    ],
)
def test_numbers_python_would_reinterpret_are_refused(api, account, btc, field, value, code):
    response = api.post(ORDERS, order_body(account, **{field: value}), format="json")
    assert response.status_code == 400, response.json()
    assert response.json()["error"]["code"] == code
    assert not Position.objects.exists()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("leverage", "1_0"),  # Python's int reads 10
        ("leverage", "\uff11\uff10"),  # full-width 10
        ("leverage", "\u0663"),  # an Arabic-Indic 3
        ("account", "0_{account}"),
        ("account", "{wide_account}"),
    ],
)
def test_whole_numbers_python_would_reinterpret_are_refused(api, account, btc, field, value):
    wide = "".join(chr(ord(digit) - ord("0") + 0xFF10) for digit in str(account.pk))
    value = value.format(account=account.pk, wide_account=wide)
    for url in ("/api/v1/orders/preview", ORDERS):
        response = api.post(url, {**order_body(account), field: value}, format="json")
        assert response.status_code == 400, response.json()
        error = response.json()["error"]
        assert (error["code"], list(error["fields"])) == ("invalid_request", [field]), error
    assert not Order.objects.exists()


def test_minus_zero_extra_collateral_is_plain_zero(api, account, btc):
    order = api.post(ORDERS, order_body(account, extra_collateral="-0"), format="json")
    assert order.status_code == 201, order.json()
    assert order.json()["extra_collateral"] == "0"


def test_a_short_at_its_entry_shows_zero_pnl_not_minus_zero(api, account, btc):
    order = api.post(ORDERS, order_body(account, side="short"), format="json").json()
    position = api.get(f"/api/v1/positions/{order['position']}/").json()
    # -1 x 0.01 x (60,000 - 60,000) is a Decimal "-0": a bot comparing with "0" must match.
    assert (position["unrealized_pnl"], position["mark_price"]) == ("0", "60000")
    listed = api.get("/api/v1/positions/?status=open").json()["results"]
    assert [p["unrealized_pnl"] for p in listed] == ["0"]
    accounts = api.get("/api/v1/accounts/").json()["results"]
    assert accounts[0]["unrealized_pnl"] == "0"


@pytest.mark.parametrize("amount", ["1e1000000", "-1e1000000", "1E+999999999"])
def test_absurd_exponents_in_a_margin_amount_are_refused_not_a_server_error(
    api, account, btc, amount
):
    order = api.post(ORDERS, order_body(account), format="json").json()
    response = api.post(
        f"/api/v1/positions/{order['position']}/margin", {"amount": amount}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "invalid_amount",
        "message": "The amount is too large.",
        "fields": {"amount": ["The amount is too large."]},
    }


def test_a_margin_change_below_a_cent_moves_it_and_its_statement_memo_says_so(api, account, btc):
    """0.001 USDT is taken as sent, as on the web page, and its memo names what moved, not
    "Add 0 margin" (a cent is only how the pages round a balance)."""
    order = api.post(ORDERS, order_body(account, quantity="0.02"), format="json").json()
    url = f"/api/v1/positions/{order['position']}/margin"
    added = api.post(url, {"amount": "0.001"}, format="json")
    assert (added.status_code, added.json()["collateral"]) == (200, "120.001")
    removed = api.post(url, {"amount": "-0.00000001"}, format="json")
    assert (removed.status_code, removed.json()["collateral"]) == (200, "120.00099999")
    statement = api.get("/api/v1/statement/", {"limit": 2}).json()["results"]
    assert [(e["memo"], e["amount"]) for e in statement] == [
        (f"Remove 0.00000001 margin from position #{order['position']}", "0.00000001"),
        (f"Add 0.001 margin to position #{order['position']}", "-0.001"),
    ]


def test_close_part_then_all_and_margin_in_and_out(api, account, btc):
    order = api.post(ORDERS, order_body(account, quantity="0.02"), format="json").json()
    url = f"/api/v1/positions/{order['position']}/"
    added = api.post(url + "margin", {"amount": "50"}, format="json")
    assert added.status_code == 200, added.json()
    assert added.json()["collateral"] == "170"
    removed = api.post(url + "margin", {"amount": "-20"}, format="json")
    assert removed.json()["collateral"] == "150"
    too_much = api.post(url + "margin", {"amount": "-1000"}, format="json")
    assert too_much.status_code == 409
    assert too_much.json()["error"]["code"] == "margin_removal_too_large"
    zero = api.post(url + "margin", {"amount": "0"}, format="json")
    assert zero.json()["error"]["code"] == "invalid_amount"
    half = api.post(url + "close", {"quantity": "0.01"}, format="json")
    assert half.status_code == 200
    assert (half.json()["quantity"], half.json()["opened_quantity"]) == ("0.01", "0.02")
    closed = api.post(url + "close", {}, format="json")
    assert closed.json()["status"] == "closed"
    assert (closed.json()["quantity"], closed.json()["opened_quantity"]) == ("0", "0.02")
    again = api.post(url + "close", {}, format="json")
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "position_not_open"
    open_now = api.get("/api/v1/positions/?status=open").json()
    assert open_now["results"] == []
    assert_ledger_invariants()


def test_resting_order_lists_and_cancels(api, account, btc):
    placed = api.post(
        ORDERS, order_body(account, type="limit", price="55000.5"), format="json"
    ).json()
    assert placed["status"] == "resting"
    listed = api.get(ORDERS + "?status=resting").json()
    assert [o["id"] for o in listed["results"]] == [placed["id"]]
    cancelled = api.delete(f"{ORDERS}{placed['id']}/")
    assert cancelled.json()["status"] == "cancelled"
    again = api.delete(f"{ORDERS}{placed['id']}/")
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "order_not_cancellable"


def test_accounts_me_instruments_and_cursor_pagination(api, account, btc):
    me = api.get("/api/v1/me").json()
    assert me["username"] == "alice"
    assert me["key_scope"] == "trade"
    assert [a["id"] for a in me["accounts"]] == [account.pk]
    detail = api.get(f"/api/v1/accounts/{account.pk}/").json()
    assert detail["balance"] == "10000"
    assert detail["equity"] == "10000"
    instruments = api.get("/api/v1/instruments/").json()["results"]
    assert instruments[0]["symbol"] == "BTCUSDT"
    assert instruments[0]["mark_price"] == "60000"
    assert instruments[0]["tiers"][0]["mmr"] == "0.004"
    for n in range(3):
        api.post(ORDERS, order_body(account, client_order_id=f"p{n}"), format="json")
    page = api.get(ORDERS + "?limit=2").json()
    assert len(page["results"]) == 2 and page["next"]
    rest = api.get(page["next"]).json()
    assert len(rest["results"]) == 1 and rest["next"] is None
    ids = [o["client_order_id"] for o in page["results"] + rest["results"]]
    assert ids == ["p2", "p1", "p0"]


@pytest.mark.parametrize(
    ("since", "prices"),
    [
        ("2020-01-01T00:00:00+20:00", ["60000"]),  # an offset PostgreSQL does not take
        ("2999-01-01T00:00:00-20:00", []),
        ("0001-01-01T00:00:00+23:59", ["60000"]),  # before the first moment there is in UTC
        ("9999-12-31T23:59:59-23:59", []),  # after the last one
    ],
)
def test_price_history_since_takes_any_offset_iso_8601_allows(api, btc, since, prices):
    from liquidation.models import PriceTick

    PriceTick.objects.create(instrument=btc, price=Decimal("60000"))
    response = api.get("/api/v1/instruments/BTCUSDT/prices/", {"since": since})
    assert response.status_code == 200, response.content
    assert [t["price"] for t in response.json()["results"]] == prices


def test_price_history_resolves_the_symbol_among_the_callers_classrooms(api, account, btc):
    from liquidation.models import PriceTick
    from tests.factories import make_classroom, make_instrument

    PriceTick.objects.create(instrument=btc, price=Decimal("60000"))
    history = api.get("/api/v1/instruments/btcusdt/prices/").json()
    assert [t["price"] for t in history["results"]] == ["60000"]
    later = api.get("/api/v1/instruments/BTCUSDT/prices/?since=2999-01-01T00:00:00Z").json()
    assert later["results"] == []
    bad = api.get("/api/v1/instruments/BTCUSDT/prices/?since=yesterday")
    assert bad.json()["error"] == {
        "code": "invalid_request",
        "message": bad.json()["error"]["message"],
        "fields": {"since": [bad.json()["error"]["message"]]},
    }
    second = make_classroom(name="Second class")
    make_instrument(second, mark="61000")
    from accounts.services import classroom_join

    classroom_join(user_id=account.user_id, join_code=second.join_code)
    ambiguous = api.get("/api/v1/instruments/BTCUSDT/prices/")
    assert ambiguous.status_code == 400
    assert "classroom" in ambiguous.json()["error"]["fields"]
    chosen = api.get(f"/api/v1/instruments/BTCUSDT/prices/?classroom={account.classroom_id}")
    assert chosen.status_code == 200
    assert api.get("/api/v1/instruments/ETHUSDT/prices/").status_code == 404


def test_one_instrument_by_its_symbol_among_the_callers_classrooms(api, account, btc):
    from accounts.services import classroom_join

    one = api.get("/api/v1/instruments/btcusdt/")
    assert one.status_code == 200
    listed = api.get("/api/v1/instruments/").json()["results"][0]
    assert one.json() == listed  # the same fields as in the list: mark, tiers, fees
    assert api.get("/api/v1/instruments/ETHUSDT/").json()["error"]["code"] == "not_found"
    second = make_classroom(name="Second class")
    make_instrument(second, mark="61000")
    classroom_join(user_id=account.user_id, join_code=second.join_code)
    ambiguous = api.get("/api/v1/instruments/BTCUSDT/")
    assert ambiguous.status_code == 400
    assert "classroom" in ambiguous.json()["error"]["fields"]
    chosen = api.get(f"/api/v1/instruments/BTCUSDT/?classroom={second.pk}")
    assert (chosen.status_code, chosen.json()["mark_price"]) == (200, "61000")
    # Another student's classroom is not one of the caller's.
    elsewhere = make_classroom(name="Elsewhere")
    make_instrument(elsewhere, symbol="SOLUSDT", mark="150")
    assert api.get("/api/v1/instruments/SOLUSDT/").status_code == 404
    assert api.get(f"/api/v1/instruments/BTCUSDT/?classroom={elsewhere.pk}").status_code == 404


def test_price_history_latest_gives_the_newest_marks_oldest_first(api, account, btc):
    from liquidation.models import PriceTick

    PriceTick.objects.bulk_create(
        PriceTick(instrument=btc, price=Decimal(50000 + n)) for n in range(1200)
    )
    url = "/api/v1/instruments/BTCUSDT/prices/"
    first_page = api.get(url, {"limit": 1000}).json()["results"]
    assert first_page[-1]["price"] == "50999"  # oldest first: a page is not the newest marks
    latest = api.get(url, {"latest": 3}).json()
    assert [t["price"] for t in latest["results"]] == ["51197", "51198", "51199"]
    assert latest["next"] is None
    assert len(api.get(url, {"latest": 1000}).json()["results"]) == 1000
    for bad in ({"latest": "0"}, {"latest": "1001"}, {"latest": "x"}, {"latest": 5, "limit": 5}):
        response = api.get(url, bad)
        assert response.status_code == 400, bad
        assert list(response.json()["error"]["fields"]) == ["latest"], bad


def test_leaderboard_ranks_the_callers_classroom_by_return(api, account, other_account, btc):
    api.post(ORDERS, order_body(account), format="json")  # pays a fee: behind bob
    board = api.get(f"/api/v1/classrooms/{account.classroom_id}/leaderboard").json()
    assert [r["username"] for r in board["results"]] == ["bob", "alice"]
    assert board["results"][1]["is_you"] is True
    assert Decimal(board["results"][1]["return_pct"]) < 0


def test_leaderboard_leaves_out_deactivated_classmates(api, account, other_account):
    gone = make_student(account.classroom, username="deactivated-dora")
    gone.user.is_active = False
    gone.user.save()
    board = api.get(f"/api/v1/classrooms/{account.classroom_id}/leaderboard").json()
    assert sorted(r["username"] for r in board["results"]) == ["alice", "bob"]
    assert [r["rank"] for r in board["results"]] == [1, 2]


def test_leaderboard_queries_do_not_grow_with_students_or_trades(db):
    counts = {}
    for n in (2, 12):
        classroom = make_classroom(name=f"Board {n}")
        btc = make_instrument(classroom)
        students = [make_student(classroom, username=f"board{n}-{i}") for i in range(n)]
        for student in students:
            account_adjust(account_id=student.pk, amount=Decimal(-100), reason="Fine")
            for _ in range(n // 2):
                position_open(
                    account_id=student.pk,
                    instrument_id=btc.pk,
                    side="long",
                    quantity="0.01",
                    leverage=10,
                )
        client = client_for(new_key(students[0], "read"))
        with CaptureQueriesContext(connection) as queries:
            board = client.get(f"/api/v1/classrooms/{classroom.pk}/leaderboard").json()
        assert len(board["results"]) == n
        counts[n] = len(queries)
    assert counts[12] <= counts[2] <= 15


def test_liquidations_and_margin_calls_list_only_the_callers(api, account, other_account, btc):
    from liquidation.models import LiquidationEvent, MarginCall
    from positions.services import position_open

    mine = position_open(
        account_id=account.pk, instrument_id=btc.pk, side="long", quantity="0.01", leverage=10
    )
    theirs = position_open(
        account_id=other_account.pk, instrument_id=btc.pk, side="long", quantity="0.01", leverage=10
    )
    for position in (mine, theirs):
        LiquidationEvent.objects.create(
            position=position,
            classroom=btc.classroom,
            quantity=position.quantity,
            mark_price=Decimal("54000"),
            liquidation_price=position.liquidation_price,
            bankruptcy_price=position.bankruptcy_price,
            collateral_lost=Decimal("60"),
            insurance_paid=Decimal("0"),
        )
        MarginCall.objects.create(
            position=position,
            classroom=btc.classroom,
            mark_price=Decimal("55000"),
            margin_ratio=Decimal("0.85"),
        )
    liquidations = api.get("/api/v1/liquidations/").json()["results"]
    assert [e["position"] for e in liquidations] == [mine.pk]
    assert liquidations[0]["collateral_lost"] == "60"
    assert liquidations[0]["insurance_fund_paid"] == "0"
    calls = api.get("/api/v1/margin-calls/").json()["results"]
    assert [c["position"] for c in calls] == [mine.pk]


@pytest.mark.parametrize("side, crash", [("long", "50000"), ("short", "70000")])
def test_a_liquidation_shows_the_prices_its_position_showed(api, account, btc, side, crash):
    from tests.engine.helpers import set_price

    order = api.post(ORDERS, order_body(account, side=side), format="json").json()
    shown = api.get(f"/api/v1/positions/{order['position']}/").json()
    exact = Position.objects.get(pk=order["position"]).liquidation_price
    assert Decimal(shown["liquidation_price"]) != exact  # the stored price is off the tick
    set_price(btc, crash)
    (event,) = api.get("/api/v1/liquidations/").json()["results"]
    assert event["position"] == order["position"]
    assert event["liquidation_price"] == shown["liquidation_price"]
    assert event["bankruptcy_price"] == shown["bankruptcy_price"]
    assert Decimal(event["liquidation_price"]) % btc.tick_size == 0


def test_a_position_says_what_it_did_to_the_free_balance_once_it_is_over(api, account, btc):
    from accounts.models import Classroom
    from tests.engine.helpers import set_price

    Classroom.objects.filter(pk=account.classroom_id).update(liquidation_fee_rate=Decimal("0.001"))
    start = TradingAccount.objects.get(pk=account.pk).balance
    kept = api.post(ORDERS, order_body(account, side="short", leverage=5), format="json").json()
    lost = api.post(ORDERS, order_body(account, leverage=20), format="json").json()
    url = "/api/v1/positions/{}/"
    assert api.get(url.format(lost["position"])).json()["net_result"] is None  # still open
    # Past the liquidation price, short of bankruptcy at 57,000: part of what is left of the
    # collateral is the liquidation fee, the rest goes to the insurance fund.
    set_price(btc, "57100")
    closed = api.post(f"/api/v1/positions/{kept['position']}/close", format="json").json()
    liquidated = api.get(url.format(lost["position"])).json()
    assert liquidated["status"] == "liquidated"
    statement = api.get("/api/v1/statement/").json()["results"]
    for position in (closed, liquidated):
        legs = sum(Decimal(e["amount"]) for e in statement if e["position"] == position["id"])
        assert Decimal(position["net_result"]) == legs
    assert Decimal(closed["net_result"]) == Decimal(closed["realized_pnl"]) - Decimal(
        closed["fees_paid"]
    )
    pnl_less_fees = Decimal(liquidated["realized_pnl"]) - Decimal(liquidated["fees_paid"])
    assert Decimal(liquidated["net_result"]) < pnl_less_fees  # the insurance fund's share
    balance = TradingAccount.objects.get(pk=account.pk).balance
    assert balance - start == Decimal(closed["net_result"]) + Decimal(liquidated["net_result"])
    listed = {p["id"]: p for p in api.get("/api/v1/positions/").json()["results"]}
    assert listed[liquidated["id"]]["net_result"] == liquidated["net_result"]


def test_an_account_says_what_was_paid_in_so_its_result_adds_up(api, account, btc):
    from accounts.models import Classroom
    from tests.engine.helpers import set_price

    Classroom.objects.filter(pk=account.classroom_id).update(liquidation_fee_rate=Decimal("0.001"))
    account_adjust(account_id=account.pk, amount=Decimal(500), reason="Grant")
    for extra in ({"leverage": 20}, {"side": "short", "leverage": 5}, {"side": "short"}):
        api.post(ORDERS, order_body(account, **extra), format="json")
    set_price(btc, "57100")  # liquidates the 20x long short of its bankruptcy price
    closing = api.get("/api/v1/positions/", {"status": "open"}).json()["results"][0]
    api.post(f"/api/v1/positions/{closing['id']}/close", {"quantity": "0.004"}, format="json")
    api.post(f"/api/v1/positions/{closing['id']}/close", format="json")
    overview = api.get(f"/api/v1/accounts/{account.pk}/").json()
    assert Decimal(overview["funded"]) == Decimal(10500)
    positions = api.get("/api/v1/positions/").json()["results"]
    assert {p["status"] for p in positions} == {"open", "closed", "liquidated"}
    made = Decimal(overview["unrealized_pnl"]) + sum(
        Decimal(p["realized_pnl"]) - Decimal(p["fees_paid"])
        if p["net_result"] is None
        else Decimal(p["net_result"])
        for p in positions
    )
    assert Decimal(overview["equity"]) - Decimal(overview["funded"]) == made
    assert Decimal(overview["return_pct"]) == round(made / 10500 * 100, 8)


def test_a_return_on_almost_nothing_paid_in_is_shown_not_a_server_error(api, account, btc):
    from tests.engine.helpers import set_price

    # A long that made a fortune, then the instructor took back all but a hundred-millionth
    # of what was paid in: the return is some 10^20 percent, past 18 whole digits.
    placed = api.post(ORDERS, order_body(account, quantity="1"), format="json").json()
    set_price(btc, "200000000")
    api.post(f"/api/v1/positions/{placed['position']}/close", format="json")
    account_adjust(account_id=account.pk, amount=Decimal("-9999.99999999"), reason="Taken back")
    overview = api.get(f"/api/v1/accounts/{account.pk}/")
    assert overview.status_code == 200
    equity, funded = Decimal(overview.json()["equity"]), Decimal(overview.json()["funded"])
    assert funded == Decimal("0.00000001")
    expected = round((equity - funded) / funded * 100, 8)
    assert expected > Decimal(10) ** 18
    assert Decimal(overview.json()["return_pct"]) == expected
    for path in ("/api/v1/me", "/api/v1/accounts/"):
        answer = api.get(path)
        assert answer.status_code == 200, path
        rows = answer.json()["accounts" if path.endswith("me") else "results"]
        assert Decimal(rows[0]["return_pct"]) == expected
    board = api.get(f"/api/v1/classrooms/{account.classroom_id}/leaderboard")
    assert board.status_code == 200
    assert Decimal(board.json()["results"][0]["return_pct"]) == expected


def test_a_profit_past_what_a_money_column_holds_is_shown_not_a_server_error(
    api, account, classroom
):
    from tests.engine.helpers import set_price

    # A cheap instrument, and an instructor who sets its mark to the highest price allowed.
    pepe = make_instrument(
        classroom,
        symbol="PEPEUSDT",
        mark="0.01",
        tick_size=Decimal("0.0001"),
        lot_size=Decimal(1),
        brackets=[(Decimal(0), None, Decimal("0.01"), 50)],
    )
    body = order_body(account, symbol="PEPEUSDT", quantity="10000000", leverage=20)
    placed = api.post(ORDERS, body, format="json").json()
    set_price(pepe, "999999999999")
    answer = api.get(f"/api/v1/positions/{placed['position']}/")
    assert answer.status_code == 200
    position = answer.json()
    quantity, entry, mark = (
        Decimal(position[k]) for k in ("quantity", "entry_price", "mark_price")
    )
    assert Decimal(position["unrealized_pnl"]) == quantity * (mark - entry) > Decimal(10) ** 18
    assert Decimal(position["margin_balance"]) == Decimal(position["collateral"]) + quantity * (
        mark - entry
    )
    listed = api.get("/api/v1/positions/")
    assert listed.status_code == 200
    assert listed.json()["results"][0]["unrealized_pnl"] == position["unrealized_pnl"]
    for path in ("/api/v1/me", "/api/v1/accounts/", f"/api/v1/accounts/{account.pk}/"):
        answer = api.get(path)
        assert answer.status_code == 200, path
    overview = answer.json()
    assert overview["unrealized_pnl"] == position["unrealized_pnl"]
    assert Decimal(overview["equity"]) == Decimal(overview["balance"]) + Decimal(
        position["margin_balance"]
    )
    board = api.get(f"/api/v1/classrooms/{classroom.pk}/leaderboard")
    assert board.status_code == 200
    assert board.json()["results"][0]["equity"] == overview["equity"]


def test_a_preview_far_from_liquidation_on_a_cheap_instrument_is_not_a_server_error(
    api, account, classroom
):
    make_instrument(
        classroom,
        symbol="PEPEUSDT",
        mark="0.01",
        tick_size=Decimal("0.0001"),
        lot_size=Decimal(1),
        min_notional=Decimal("0.01"),
        brackets=[(Decimal(0), None, Decimal("0.01"), 50)],
    )
    account_adjust(account_id=account.pk, amount=Decimal(5) * 10**14, reason="Grant")
    body = order_body(account, symbol="PEPEUSDT", side="short", quantity="1", leverage=1)
    answer = api.post("/api/v1/orders/preview", {**body, "extra_collateral": "5e14"}, format="json")
    assert answer.status_code == 200, answer.json()
    quote = answer.json()
    distance, mark = Decimal(quote["distance_to_liquidation"]), Decimal(quote["mark_price"])
    assert distance == Decimal(quote["liquidation_price"]) - mark
    assert Decimal(quote["distance_to_liquidation_pct"]) == round(distance / mark * 100, 8)
    assert distance / mark * 100 > Decimal(10) ** 18


def test_fills_and_orders_say_which_of_take_profit_and_stop_loss_closed_a_position(
    api, account, btc
):
    from tests.engine.helpers import set_price

    def place(**extra):
        return api.post(ORDERS, order_body(account, **extra), format="json").json()["position"]

    won = place(take_profit="61000", stop_loss="59000")
    stopped = place(side="short", take_profit="59000", stop_loss="61000")
    by_hand = place()
    set_price(btc, "61000")  # the long's take-profit and the short's stop-loss
    api.post(f"/api/v1/positions/{by_hand}/close", format="json")
    closes = {
        f["position"]: f
        for f in api.get("/api/v1/fills/").json()["results"]
        if f["kind"] == "close"
    }
    assert {p: f["trigger"] for p, f in closes.items()} == {
        won: "take_profit",
        stopped: "stop_loss",
        by_hand: "",
    }
    orders = {o["id"]: o for o in api.get(ORDERS).json()["results"]}
    assert [orders[closes[p]["order"]]["trigger"] for p in (won, stopped, by_hand)] == [
        "take_profit",
        "stop_loss",
        "",
    ]
    # The level reached is the close order's stop price; a close by hand has none.
    assert [orders[closes[p]["order"]]["stop_price"] for p in (won, stopped, by_hand)] == [
        "61000",
        "61000",
        None,
    ]
    opening = api.get("/api/v1/fills/", {"position": won}).json()["results"][-1]
    assert (opening["kind"], opening["trigger"]) == ("open", "")
    memos = [e["memo"] for e in api.get("/api/v1/statement/").json()["results"]]
    assert any(f"#{won} at 61000 (take-profit 61000 reached):" in memo for memo in memos), memos


def test_orders_are_listed_by_the_position_they_opened_or_reduce(api, account, other_account, btc):
    first = api.post(ORDERS, order_body(account), format="json").json()
    api.post(ORDERS, order_body(account), format="json")
    reduce = order_body(account, side="short", quantity="0.005", type="limit", price="65000")
    take = api.post(
        ORDERS, {**reduce, "reduce_only": True, "position": first["position"]}, format="json"
    ).json()
    listed = api.get(ORDERS, {"position": first["position"], "status": "resting"}).json()
    assert [o["id"] for o in listed["results"]] == [take["id"]]
    every = api.get(ORDERS, {"position": first["position"]}).json()["results"]
    assert [o["id"] for o in every] == [take["id"], first["id"]]
    theirs = position_open(
        account_id=other_account.pk, instrument_id=btc.pk, side="long", quantity="0.01", leverage=5
    )
    refused = api.get(ORDERS, {"position": theirs.pk})
    assert refused.status_code == 404
    assert refused.json()["error"]["fields"] == {"position": ["No such position."]}


def test_frozen_account_and_balance_untouched_by_other_accounts(api, account, other_account, btc):
    TradingAccount.objects.filter(pk=account.pk).update(trading_frozen=True)
    response = api.post(ORDERS, order_body(account), format="json")
    assert response.json()["error"]["code"] == "account_frozen"
    other = api.post(ORDERS, order_body(other_account), format="json")
    assert other.status_code == 404
    assert other.json()["error"] == {
        "code": "not_found",
        "message": "No such trading account.",
        "fields": {"account": ["No such trading account."]},
    }


def test_take_profit_stop_loss_and_reduce_only_orders(api, account, btc):
    order = api.post(ORDERS, order_body(account, quantity="0.02"), format="json").json()
    url = f"/api/v1/positions/{order['position']}/tpsl"
    set_ = api.post(url, {"take_profit": "70000", "stop_loss": "56000"}, format="json")
    assert set_.status_code == 200, set_.json()
    assert (set_.json()["take_profit"], set_.json()["stop_loss"]) == ("70000", "56000")
    wrong = api.post(url, {"take_profit": "50000"}, format="json")
    assert wrong.json()["error"]["code"] == "invalid_price"
    assert Position.objects.get().take_profit == Decimal("70000")
    cleared = api.post(url, {"take_profit": None, "stop_loss": None}, format="json").json()
    assert (cleared["take_profit"], cleared["stop_loss"]) == (None, None)
    reduce = api.post(
        ORDERS,
        order_body(
            account, side="sell", quantity="0.01", reduce_only=True, position=order["position"]
        ),
        format="json",
    )
    assert reduce.status_code == 201, reduce.json()
    assert reduce.json()["status"] == "filled" and reduce.json()["reduce_only"] is True
    assert Position.objects.get().quantity == Decimal("0.01")
    same_side = api.post(
        ORDERS,
        order_body(account, side="long", reduce_only=True, position=order["position"]),
        format="json",
    )
    assert same_side.json()["error"]["code"] == "invalid_order"
    assert_ledger_invariants()


def test_tpsl_changes_only_the_fields_sent_and_null_clears(api, account, btc):
    order = api.post(ORDERS, order_body(account), format="json").json()
    url = f"/api/v1/positions/{order['position']}/tpsl"
    api.post(url, {"take_profit": "70000", "stop_loss": "56000"}, format="json")
    moved = api.post(url, {"stop_loss": "57000"}, format="json").json()
    assert (moved["take_profit"], moved["stop_loss"]) == ("70000", "57000")
    moved = api.post(url, {"take_profit": "71000"}, format="json").json()
    assert (moved["take_profit"], moved["stop_loss"]) == ("71000", "57000")
    cleared = api.post(url, {"take_profit": None}, format="json").json()
    assert (cleared["take_profit"], cleared["stop_loss"]) == (None, "57000")
    untouched = api.post(url, {}, format="json").json()
    assert (untouched["take_profit"], untouched["stop_loss"]) == (None, "57000")
    position = Position.objects.get()
    assert (position.take_profit, position.stop_loss) == (None, Decimal("57000"))


def test_tpsl_endpoint_records_each_change_with_before_and_after(api, account, btc):
    order = api.post(ORDERS, order_body(account), format="json").json()
    url = f"/api/v1/positions/{order['position']}/tpsl"
    api.post(url, {"take_profit": "70000", "stop_loss": "56000"}, format="json")
    api.post(url, {"stop_loss": "57000"}, format="json")
    api.post(url, {"take_profit": None}, format="json")
    # Neither a refused change nor one that changes nothing leaves a trace.
    refused = api.post(url, {"take_profit": "50000"}, format="json")
    assert refused.json()["error"]["code"] == "invalid_price"
    assert api.post(url, {"stop_loss": "57000"}, format="json").status_code == 200
    assert api.post(url, {}, format="json").status_code == 200
    rows = TpSlChange.objects.filter(position_id=order["position"]).order_by("created_at", "id")
    assert [
        (r.take_profit_before, r.take_profit_after, r.stop_loss_before, r.stop_loss_after)
        for r in rows
    ] == [
        (None, Decimal("70000"), None, Decimal("56000")),
        (Decimal("70000"), Decimal("70000"), Decimal("56000"), Decimal("57000")),
        (Decimal("70000"), None, Decimal("57000"), Decimal("57000")),
    ]


def test_unknown_api_paths_answer_in_the_error_shape(api):
    response = api.get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert api.put("/api/v1/orders/", {}, format="json").json()["error"]["code"] == (
        "method_not_allowed"
    )


def test_orders_and_positions_filter_by_symbol_and_client_order_id(
    api, account, btc, other_account
):
    eth = make_instrument(account.classroom, symbol="ETHUSDT", mark="3000")
    mine = api.post(ORDERS, order_body(account, client_order_id="grid-7"), format="json").json()
    api.post(ORDERS, order_body(account, symbol="ETHUSDT", quantity="0.1"), format="json")
    # Another student's order with the same client_order_id stays theirs.
    client_for(new_key(other_account, "trade")).post(
        ORDERS, order_body(other_account, client_order_id="grid-7"), format="json"
    )

    def ids(url: str) -> list[int]:
        response = api.get(url)
        assert response.status_code == 200, response.json()
        return [row["id"] for row in response.json()["results"]]

    assert ids(ORDERS + "?client_order_id=grid-7") == [mine["id"]]
    assert ids(ORDERS + "?client_order_id=%20grid-7%20") == [mine["id"]]
    assert ids(ORDERS + "?client_order_id=grid-8") == []
    assert ids(ORDERS + "?symbol=btcusdt") == [mine["id"]]
    eth_positions = Position.objects.filter(instrument=eth).values_list("pk", flat=True)
    assert ids("/api/v1/positions/?symbol=ETHUSDT&status=open") == list(eth_positions)
    assert ids("/api/v1/positions/?symbol=DOGEUSDT") == []
    for bad in ("x" * 65, "grid%00"):
        refused = api.get(ORDERS + f"?client_order_id={bad}")
        assert refused.status_code == 400
        assert refused.json()["error"]["fields"] == {
            "client_order_id": ["client_order_id is at most 64 printable characters."]
        }
    assert api.get("/api/v1/positions/?symbol=" + "X" * 21).status_code == 400


def test_delete_on_the_order_list_cancels_every_resting_order_of_yours(
    api, account, btc, other_account
):
    eth = make_instrument(account.classroom, symbol="ETHUSDT", mark="3000")

    def rest(symbol: str, price: str, who=account, client=api) -> int:
        body = order_body(who, symbol=symbol, type="limit", price=price)
        return client.post(ORDERS, body, format="json").json()["id"]

    btc_orders = [rest("BTCUSDT", "55000.5"), rest("BTCUSDT", "54000")]
    eth_order = rest("ETHUSDT", "2500")
    theirs = rest("BTCUSDT", "55000.5", other_account, client_for(new_key(other_account, "trade")))
    filled = api.post(ORDERS, order_body(account), format="json").json()["id"]

    only_btc = api.delete(ORDERS + "?symbol=BTCUSDT")
    assert only_btc.status_code == 200
    assert [o["id"] for o in only_btc.json()["cancelled"]] == btc_orders
    assert {o["status"] for o in only_btc.json()["cancelled"]} == {"cancelled"}
    rest_of_mine = api.delete(ORDERS).json()["cancelled"]
    assert [o["id"] for o in rest_of_mine] == [eth_order]
    assert api.delete(ORDERS).json() == {"cancelled": []}  # nothing left: still a success
    statuses = dict(Order.objects.values_list("pk", "status"))
    assert statuses[theirs] == "resting"  # another student's order is never touched
    assert statuses[filled] == "filled"
    assert Order.objects.get(pk=eth_order).instrument == eth


def test_accounts_carry_the_classrooms_leverage_cap(api, account, btc):
    account.classroom.max_leverage = 50
    account.classroom.save(update_fields=["max_leverage"])
    assert api.get(f"/api/v1/accounts/{account.pk}/").json()["max_leverage"] == 50
    assert api.get("/api/v1/me").json()["accounts"][0]["max_leverage"] == 50


@pytest.mark.parametrize(("side", "up"), [("long", True), ("short", False)])
def test_position_prices_are_on_the_tick_rounded_towards_the_entry(api, account, btc, side, up):
    preview = api.post("/api/v1/orders/preview", order_body(account, side=side), format="json")
    placed = api.post(ORDERS, order_body(account, side=side), format="json").json()
    url = f"/api/v1/positions/{placed['position']}/"
    shown = api.get(url).json()
    stored = Position.objects.get()
    for name in ("liquidation_price", "bankruptcy_price"):
        exact, rounded = getattr(stored, name), Decimal(shown[name])
        assert rounded % btc.tick_size == 0, name
        assert abs(rounded - exact) < btc.tick_size, name
        assert (rounded >= exact) if up else (rounded <= exact), name
        assert preview.json()[name] == shown[name], name
    assert stored.liquidation_price % btc.tick_size != 0  # the case is not trivially on grid
    api.post(f"/api/v1/positions/{stored.pk}/close", {}, format="json")
    closed = api.get(url).json()
    assert (closed["liquidation_price"], closed["bankruptcy_price"]) == (None, None)


def test_a_position_past_its_liquidation_price_is_the_engines(api, account, btc):
    order = api.post(ORDERS, order_body(account, quantity="0.02"), format="json").json()
    url = f"/api/v1/positions/{order['position']}/"
    lp = Decimal(api.get(url).json()["liquidation_price"])
    btc.mark_price = lp - 50
    btc.save(update_fields=["mark_price"])
    for path, body in (
        ("close", {}),
        ("close", {"quantity": "0.01"}),
        ("margin", {"amount": "50"}),
    ):
        refused = api.post(url + path, body, format="json")
        assert refused.status_code == 409
        assert refused.json()["error"]["code"] == "position_liquidating"
        assert "being liquidated" in refused.json()["error"]["message"]
    assert api.get(url).json()["status"] == "open"
    assert_ledger_invariants()


def test_resting_orders_show_their_hold_and_accounts_their_order_margin(api, account, btc):
    limit = api.post(
        ORDERS, order_body(account, type="limit", price="59000", quantity="0.1"), format="json"
    ).json()
    # 0.1 x 59,000 / 10 = 590 margin + 2.95 fee at the limit.
    assert (limit["status"], limit["held_margin"]) == ("resting", "592.95")
    market = api.post(ORDERS, order_body(account), format="json").json()
    assert market["held_margin"] == "0"
    mine = api.get(f"/api/v1/accounts/{account.pk}/").json()
    assert mine["order_margin"] == "592.95"
    assert mine["balance"] == str(Decimal(10000) - Decimal("592.95") - Decimal("60.3"))
    assert mine["equity"] == "9999.7"  # only the market order's fee: the hold is still its own
    assert api.get("/api/v1/me").json()["accounts"][0]["order_margin"] == "592.95"
    cancelled = api.delete(f"{ORDERS}{limit['id']}/").json()
    assert (cancelled["status"], cancelled["held_margin"]) == ("cancelled", "0")
    mine = api.get(f"/api/v1/accounts/{account.pk}/").json()
    assert (mine["order_margin"], mine["balance"]) == ("0", "9939.7")
    assert_ledger_invariants()


def test_cancelling_every_resting_order_gives_every_hold_back(api, account, btc):
    for price in ("59000", "58000"):
        api.post(ORDERS, order_body(account, type="limit", price=price), format="json")
    api.post(ORDERS, order_body(account, type="stop", stop_price="61000"), format="json")
    assert api.get(f"/api/v1/accounts/{account.pk}/").json()["order_margin"] != "0"
    assert len(api.delete(ORDERS).json()["cancelled"]) == 3
    mine = api.get(f"/api/v1/accounts/{account.pk}/").json()
    assert (mine["order_margin"], mine["balance"]) == ("0", "10000")
    statement = api.get("/api/v1/statement/").json()["results"]
    kinds = sorted(row["kind"] for row in statement)
    assert kinds == ["deposit"] + ["order_hold"] * 3 + ["order_release"] * 3
    assert_ledger_invariants()


def test_a_close_retried_with_its_client_order_id_closes_once(api, account, btc):
    order = api.post(ORDERS, order_body(account, quantity="0.02"), format="json").json()
    url = f"/api/v1/positions/{order['position']}/close"
    body = {"quantity": "0.01", "client_order_id": "close-half"}
    first = api.post(url, body, format="json")
    assert first.status_code == 200, first.json()
    assert (first.json()["quantity"], first.json()["status"]) == ("0.01", "open")
    again = api.post(url, body, format="json")
    # The same answer, as if the first one had arrived: nothing closed a second time.
    assert (again.status_code, again.json()) == (200, first.json())
    close = Order.objects.get(client_order_id="close-half")
    assert (close.reduce_only, close.position_id, close.quantity) == (
        True,
        order["position"],
        Decimal("0.01"),
    )
    assert Fill.objects.filter(position_id=order["position"], kind="close").count() == 1
    found = api.get(ORDERS, {"client_order_id": "close-half"}).json()["results"]
    assert [o["id"] for o in found] == [close.pk]
    # A whole close, retried after it closed the position, still answers 200.
    whole = {"client_order_id": "close-rest"}
    closed = api.post(url, whole, format="json")
    assert closed.json()["status"] == "closed"
    assert api.post(url, whole, format="json").json() == closed.json()
    assert_ledger_invariants()


def test_a_close_client_order_id_reused_for_something_else_is_a_conflict(api, account, btc):
    opening = api.post(ORDERS, order_body(account, client_order_id="open-1"), format="json").json()
    other = api.post(ORDERS, order_body(account, side="short"), format="json").json()
    url = f"/api/v1/positions/{opening['position']}/close"
    api.post(url, {"quantity": "0.005", "client_order_id": "close-1"}, format="json")
    close = Order.objects.get(client_order_id="close-1")
    before = Fill.objects.count()
    for position, body, first in (
        (opening["position"], {"quantity": "0.004", "client_order_id": "close-1"}, close.pk),
        (other["position"], {"quantity": "0.005", "client_order_id": "close-1"}, close.pk),
        (opening["position"], {"client_order_id": "open-1"}, opening["id"]),
    ):
        response = api.post(f"/api/v1/positions/{position}/close", body, format="json")
        assert response.status_code == 409
        error = response.json()["error"]
        assert error["code"] == "client_order_id_reused"
        assert f"was used for order {first}," in error["message"]
        assert error["fields"] == {"client_order_id": [error["message"]]}
    assert Fill.objects.count() == before
    too_long = api.post(url, {"client_order_id": "x" * 65}, format="json")
    assert too_long.status_code == 400
    assert too_long.json()["error"]["fields"].keys() == {"client_order_id"}
    assert Position.objects.get(pk=opening["position"]).quantity == Decimal("0.005")


def test_a_reduce_only_order_repeating_a_close_client_order_id_gets_the_close(api, account, btc):
    opened = api.post(ORDERS, order_body(account, quantity="0.02"), format="json").json()
    url = f"/api/v1/positions/{opened['position']}/close"
    api.post(url, {"quantity": "0.01", "client_order_id": "shrink"}, format="json")
    close = Order.objects.get(client_order_id="shrink")
    same = order_body(
        account,
        side="short",
        quantity="0.01",
        reduce_only=True,
        position=opened["position"],
        client_order_id="shrink",
    )
    response = api.post(ORDERS, same, format="json")
    assert (response.status_code, response.json()["id"]) == (200, close.pk)
    assert Position.objects.get(pk=opened["position"]).quantity == Decimal("0.01")


def test_a_bankrupt_positions_null_margin_ratio_is_documented_as_past_liquidation(
    api, account, btc, client
):
    from positions.models import Instrument

    placed = api.post("/api/v1/orders/", order_body(account), format="json").json()
    # The mark jumps past the bankruptcy price (54,000 at 10x) before the engine's next tick.
    Instrument.objects.filter(pk=btc.pk).update(mark_price=Decimal("53000"))
    position = api.get(f"/api/v1/positions/{placed['position']}/").json()
    assert Decimal(position["margin_balance"]) < 0
    assert position["margin_ratio"] is None
    # The page shows this position's gauge full, as being liquidated; a bot reading the
    # schema must not take the null for a position without risk.
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    described = schema["components"]["schemas"]["Position"]["properties"]["margin_ratio"]
    assert "null" in described["description"]
    assert "margin balance is zero or below" in described["description"]


def test_an_accounts_unrealized_pnl_counts_each_position_down_to_its_collateral(
    api, account, btc, client
):
    from positions.models import Instrument

    placed = api.post("/api/v1/orders/", order_body(account), format="json").json()
    # Past the bankruptcy price (54,000) before the engine's tick: the position's own PnL is
    # -70, but it can take no more than its collateral, 60, from the account.
    Instrument.objects.filter(pk=btc.pk).update(mark_price=Decimal("53000"))
    position = api.get(f"/api/v1/positions/{placed['position']}/").json()
    assert (position["unrealized_pnl"], position["collateral"]) == ("-70", "60")
    me = api.get("/api/v1/me").json()["accounts"][0]
    assert me["unrealized_pnl"] == "-60"
    assert Decimal(me["equity"]) - Decimal(me["funded"]) == Decimal("-60.3")  # and the 0.3 fee
    # What the schema says of both numbers adds up for a bot that checks one with the other.
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    account_fields = schema["components"]["schemas"]["Account"]["properties"]
    assert "at most its collateral" in account_fields["unrealized_pnl"]["description"]
    assert "at most its collateral" in account_fields["funded"]["description"]
