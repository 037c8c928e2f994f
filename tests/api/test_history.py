"""Fills and the account statement: a bot reads its own executions and every movement of its
free balance, newest first, and they agree with the positions and balances they explain."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.services import account_adjust
from positions.models import Fill, Instrument, Position
from positions.services import position_add_margin, position_close, position_open
from tests.api.conftest import client_for, new_key
from tests.engine.helpers import set_price
from tests.factories import make_classroom, make_instrument, make_student

pytestmark = pytest.mark.django_db

FILLS = "/api/v1/fills/"
STATEMENT = "/api/v1/statement/"


def every_page(api, url: str, **params) -> list[dict]:
    """Follow the cursor to the end, a small page at a time."""
    results: list[dict] = []
    response = api.get(url, {"limit": 2, **params})
    while True:
        assert response.status_code == 200, response.json()
        body = response.json()
        results += body["results"]
        if not body["next"]:
            return results
        response = api.get(body["next"])


def open_and_half_close(account, btc) -> Position:
    position = position_open(
        account_id=account.pk, instrument_id=btc.pk, side="long", quantity="0.02", leverage=10
    )
    btc.mark_price = Decimal("61000")
    btc.save(update_fields=["mark_price"])
    position_close(position_id=position.pk, quantity="0.01")
    return position


def test_fills_show_each_execution_as_stored(api, account, btc):
    position = open_and_half_close(account, btc)
    fills = every_page(api, FILLS)
    assert [f["kind"] for f in fills] == ["close", "open"]  # newest first
    close, opening = fills
    assert opening["price"] == "60000" and opening["quantity"] == "0.02"
    assert opening["fee"] == "0.6"  # 0.02 x 60000 x 0.05%
    assert close["price"] == "61000" and close["quantity"] == "0.01"
    assert close["realized_pnl"] == "10"  # (61000 - 60000) x 0.01
    for row in fills:
        assert (row["position"], row["symbol"], row["side"]) == (position.pk, "BTCUSDT", "long")
        stored = Fill.objects.get(pk=row["id"])
        assert Decimal(row["fee"]) == stored.fee
        assert row["order"] == stored.order_id


def test_fills_filter_by_position_and_account(api, account, btc):
    first = open_and_half_close(account, btc)
    second = position_open(
        account_id=account.pk, instrument_id=btc.pk, side="short", quantity="0.01", leverage=5
    )
    assert {f["position"] for f in every_page(api, FILLS)} == {first.pk, second.pk}
    only = every_page(api, FILLS, position=second.pk)
    assert [(f["position"], f["kind"], f["side"]) for f in only] == [(second.pk, "open", "short")]
    assert len(every_page(api, FILLS, account=account.pk)) == 3


def test_fills_of_someone_elses_position_or_account_are_not_found(api, other_account, btc):
    theirs = position_open(
        account_id=other_account.pk, instrument_id=btc.pk, side="long", quantity="0.01", leverage=5
    )
    assert api.get(FILLS).json()["results"] == []
    for params in ({"position": theirs.pk}, {"account": other_account.pk}):
        response = api.get(FILLS, params)
        assert response.status_code == 404, params
        assert response.json()["error"]["code"] == "not_found"
    response = api.get(FILLS, {"position": "two"})
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"position": ["Use a whole number."]}


def test_the_statement_adds_up_to_the_free_balance(api, account, btc):
    position = open_and_half_close(account, btc)
    position_add_margin(position_id=position.pk, amount="25")
    account_adjust(account_id=account.pk, amount=Decimal("500"), reason="Prize")
    entries = every_page(api, STATEMENT, account=account.pk)
    account.refresh_from_db()
    assert sum(Decimal(e["amount"]) for e in entries) == account.balance
    # Newest first: the grant, the margin added, the partial close, the opening, the deposit.
    assert [e["kind"] for e in entries][:2] == ["grant", "add_margin"]
    assert entries[-1]["kind"] == "deposit" and entries[-1]["position"] is None
    opening = next(e for e in entries if e["kind"] == "open")
    assert opening["amount"] == "-120.6"  # margin 120 + fee 0.6 leave the free balance
    assert opening["position"] == position.pk
    assert opening["memo"].startswith("Open long 0.02 BTCUSDT")
    assert [e["id"] for e in entries] == sorted((e["id"] for e in entries), reverse=True)


def test_the_statement_shows_only_the_callers_accounts(api, account, other_account, btc):
    position_open(
        account_id=other_account.pk, instrument_id=btc.pk, side="long", quantity="0.01", leverage=5
    )
    entries = every_page(api, STATEMENT)
    assert entries and {e["account"] for e in entries} == {account.pk}
    response = api.get(STATEMENT, {"account": other_account.pk})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_history_queries_do_not_grow_with_trades(db):
    counts: dict[int, tuple[int, int]] = {}
    for n in (2, 12):
        classroom = make_classroom(name=f"History {n}")
        btc = make_instrument(classroom)
        student = make_student(classroom, username=f"history{n}")
        for _ in range(n):
            position = position_open(
                account_id=student.pk,
                instrument_id=btc.pk,
                side="long",
                quantity="0.01",
                leverage=5,
            )
            position_close(position_id=position.pk)
        api = client_for(new_key(student, "read"))
        with CaptureQueriesContext(connection) as fills:
            assert len(api.get(FILLS, {"limit": 200}).json()["results"]) == 2 * n
        with CaptureQueriesContext(connection) as statement:
            assert len(api.get(STATEMENT, {"limit": 200}).json()["results"]) == 2 * n + 1
        counts[n] = (len(fills), len(statement))
    assert counts[12] == counts[2], counts


def test_a_liquidation_is_a_fill_without_an_order_and_no_statement_entry(api, account, btc):
    position = position_open(
        account_id=account.pk, instrument_id=btc.pk, side="long", quantity="0.1", leverage=20
    )
    before = every_page(api, STATEMENT)
    set_price(btc, "56000")  # past the bankruptcy price (57000): liquidated on this tick
    assert Position.objects.get(pk=position.pk).status == Position.Status.LIQUIDATED
    fills = every_page(api, FILLS, position=position.pk)
    assert [f["kind"] for f in fills] == ["liquidation", "open"]
    assert fills[0]["order"] is None and fills[1]["order"] is not None
    # The loss stopped at the collateral: the free balance, and so its statement, did not move.
    assert every_page(api, STATEMENT) == before


def test_fills_filter_by_symbol_in_any_letter_case(api, account, btc, classroom):
    eth = make_instrument(classroom, symbol="ETHUSDT", mark="3000")
    on_btc = open_and_half_close(account, btc)
    on_eth = position_open(
        account_id=account.pk, instrument_id=eth.pk, side="short", quantity="0.1", leverage=5
    )
    assert {f["position"] for f in every_page(api, FILLS, symbol="btcusdt")} == {on_btc.pk}
    assert [f["position"] for f in every_page(api, FILLS, symbol="EthUsdt")] == [on_eth.pk]
    assert every_page(api, FILLS, symbol="SOLUSDT") == []
    both = every_page(api, FILLS, symbol="ETHUSDT", position=on_btc.pk, account=account.pk)
    assert both == []
    too_long = api.get(FILLS, {"symbol": "X" * 100})
    assert too_long.status_code == 400
    assert too_long.json()["error"]["fields"].keys() == {"symbol"}


POSITIONS = "/api/v1/positions/"


def _close_at(position: Position, price: str, quantity: str | None = None) -> None:
    Instrument.objects.filter(pk=position.instrument_id).update(mark_price=Decimal(price))
    position_close(position_id=position.pk, quantity=quantity)


@pytest.mark.parametrize(
    ("side", "quantity", "closes", "last", "average", "pnl"),
    [
        # Entry 60,000: 0.25 closed at 61,000 and 0.25 at 59,000 made nothing.
        ("long", "0.5", [("61000", "0.25"), ("59000", None)], "59000", "60000", "0"),
        # A short closed off the tick on average: 0.4 x (60,000 - 59,000.175) = 399.93.
        ("short", "0.4", [("59000.1", "0.1"), ("59000.2", None)], "59000.2", "59000.175", "399.93"),
        # (5,900 + 11,700) / 0.3 never ends: half-even at the tenth place.
        ("short", "0.3", [("59000", "0.1"), ("58500", None)], "58500", "58666.6666666667", "400"),
    ],
)
def test_a_position_closed_in_parts_answers_its_average_exit_next_to_the_last_one(
    api, account, btc, side, quantity, closes, last, average, pnl
):
    position = position_open(
        account_id=account.pk, instrument_id=btc.pk, side=side, quantity=quantity, leverage=20
    )
    for price, part in closes:
        _close_at(position, price, part)
    answer = api.get(f"{POSITIONS}{position.pk}/").json()
    assert (answer["exit_price"], answer["average_exit_price"]) == (last, average)
    assert answer["realized_pnl"] == pnl
    [listed] = every_page(api, POSITIONS, status="closed")
    assert listed == answer


def test_an_open_position_answers_the_average_exit_of_its_closed_parts(api, account, btc):
    position = position_open(
        account_id=account.pk, instrument_id=btc.pk, side="long", quantity="0.5", leverage=20
    )
    answer = api.get(f"{POSITIONS}{position.pk}/").json()
    assert answer["exit_price"] is None and answer["average_exit_price"] is None
    _close_at(position, "61000", "0.1")
    _close_at(position, "60500", "0.1")
    answer = api.get(f"{POSITIONS}{position.pk}/").json()
    assert answer["exit_price"] is None and answer["average_exit_price"] == "60750"
    closed = api.post(f"{POSITIONS}{position.pk}/close", {}, format="json").json()
    # The rest, 0.3, at the mark 60,500: (6,100 + 6,050 + 18,150) / 0.5.
    assert (closed["exit_price"], closed["average_exit_price"]) == ("60500", "60600")


def test_a_liquidation_after_a_partial_close_counts_in_the_average_exit(api, account, btc):
    position = position_open(
        account_id=account.pk, instrument_id=btc.pk, side="long", quantity="0.1", leverage=20
    )
    _close_at(position, "61000", "0.05")
    set_price(btc, "57100")
    answer = api.get(f"{POSITIONS}{position.pk}/").json()
    assert answer["status"] == "liquidated"
    assert (answer["exit_price"], answer["average_exit_price"]) == ("57100", "59050")


def test_position_list_queries_do_not_grow_with_positions_closed_in_parts(db):
    counts: dict[int, int] = {}
    for n in (2, 12):
        classroom = make_classroom(name=f"Parts {n}")
        btc = make_instrument(classroom)
        student = make_student(classroom, username=f"parts{n}")
        for _ in range(n):
            position = position_open(
                account_id=student.pk, instrument_id=btc.pk, side="long", quantity="0.02",
                leverage=10,
            )  # fmt: skip
            _close_at(position, "61000", "0.01")
            _close_at(position, "59000")
        api = client_for(new_key(student, "read"))
        api.get("/api/v1/health")  # the key's last_used_at
        with CaptureQueriesContext(connection) as queries:
            results = api.get(POSITIONS, {"limit": 200}).json()["results"]
        assert [p["average_exit_price"] for p in results] == ["60000"] * n
        counts[n] = len(queries)
    assert counts[12] == counts[2], counts
