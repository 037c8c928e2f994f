"""A position closed in several parts shows its average exit price, from which a student gets
the PnL with size and entry: on the History page, the position page and the positions CSV."""

from __future__ import annotations

import csv
import io
import re
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from accounts.services import account_adjust
from positions.models import Fill, Instrument, Position
from positions.services import position_close, position_open
from tests.engine.helpers import open_position, set_price
from tests.factories import make_classroom, make_instrument, make_student

pytestmark = pytest.mark.django_db


def close_at(position: Position, price: str, quantity: str | None = None) -> Position:
    """Close (part of) ``position`` at ``price``: the mark moved there without a tick."""
    Instrument.objects.filter(pk=position.instrument_id).update(mark_price=Decimal(price))
    return position_close(position_id=position.pk, quantity=quantity)


def _csv_row(client, account, position: Position) -> dict[str, str]:
    response = client.get(reverse("positions-csv", args=[account.pk]))
    rows = csv.DictReader(io.StringIO(response.content.decode()))
    return next(row for row in rows if row["position"] == str(position.pk))


def _history_cell(page: str, position: Position) -> str:
    match = re.search(rf'data-testid="average-exit-{position.pk}">([^<]*)<', page)
    assert match, "no average exit in the history table"
    return match.group(1)


def _history_card(page: str, position: Position) -> str:
    card = page.split(f'<article class="position-card" data-position="{position.pk}">')[1]
    match = re.search(r'data-field="average-exit">([^<]*)<', card.split("</article>")[0])
    assert match, "no average exit on the history card"
    return match.group(1)


def _position_stat(page: str) -> str:
    match = re.search(r'data-testid="average-exit">([^<]*)<', page)
    assert match, "no average exit on the position page"
    return match.group(1)


def test_a_long_closed_at_61000_and_59000_shows_the_average_exit_60000_and_its_pnl(
    alice_client, account, btc
):
    """Entry 60,000, 0.25 closed at 61,000 and 0.25 at 59,000: PnL 0, and the exit a student
    can check it with is 60,000, not the last fill's 59,000."""
    position = open_position(account, btc, "long", "0.5", 20)
    close_at(position, "61000", "0.25")
    closed = close_at(position, "59000")
    assert closed.realized_pnl == 0 and closed.exit_price == Decimal(59000)

    history = alice_client.get(reverse("history", args=[account.pk])).content.decode()
    assert "<th>Average exit</th>" in history
    assert _history_cell(history, position) == _history_card(history, position) == "60,000.0"
    page = alice_client.get(reverse("position", args=[position.pk])).content.decode()
    assert _position_stat(page) == "60,000.0"
    assert "Closed in 2 parts at an average exit price of 60,000.0" in page
    assert "over 2 closes, the last at 59,000.0" in page
    assert "Average exit 60,000.0 over 2 closes; realised PnL" in page  # on the timeline
    row = _csv_row(alice_client, account, position)
    assert (row["exit_price"], row["average_exit_price"], row["realized_pnl"]) == (
        "59000",
        "60000",
        "0",
    )


def test_a_short_whose_average_exit_is_off_the_tick_shows_every_place_it_has(
    alice_client, account, btc
):
    """0.1 closed at 59,000.1 and 0.3 at 59,000.2: the average 59,000.175 lies between two
    0.1 ticks and is shown whole, so 0.4 x (60,000 - 59,000.175) is the PnL 399.93."""
    position = open_position(account, btc, "short", "0.4", 20)
    close_at(position, "59000.1", "0.1")
    closed = close_at(position, "59000.2")
    assert closed.realized_pnl == Decimal("399.93")

    history = alice_client.get(reverse("history", args=[account.pk])).content.decode()
    assert _history_cell(history, position) == _history_card(history, position) == "59,000.175"
    page = alice_client.get(reverse("position", args=[position.pk])).content.decode()
    assert _position_stat(page) == "59,000.175"
    row = _csv_row(alice_client, account, position)
    assert (row["exit_price"], row["average_exit_price"]) == ("59000.2", "59000.175")


def test_an_average_that_never_ends_is_shown_to_the_ten_places_prices_are_kept_to(
    alice_client, account, btc
):
    """0.1 closed at 59,000 and 0.2 at 58,500: (5,900 + 11,700) / 0.3 = 58,666.666...,
    rounded half-even at the tenth place, where every stored price ends."""
    position = open_position(account, btc, "short", "0.3", 20)
    close_at(position, "59000", "0.1")
    close_at(position, "58500")

    history = alice_client.get(reverse("history", args=[account.pk])).content.decode()
    assert _history_cell(history, position) == "58,666.6666666667"
    row = _csv_row(alice_client, account, position)
    assert row["average_exit_price"] == "58666.6666666667"


def test_a_position_closed_in_one_fill_shows_that_fill_as_its_average_exit(
    alice_client, account, btc
):
    position = open_position(account, btc, "long", "0.5", 20)
    close_at(position, "61000")
    history = alice_client.get(reverse("history", args=[account.pk])).content.decode()
    assert _history_cell(history, position) == "61,000.0"
    page = alice_client.get(reverse("position", args=[position.pk])).content.decode()
    assert "Closed at 61,000.0; realised PnL" in page
    assert "over 1 close" not in page and "Closed in" not in page
    assert _csv_row(alice_client, account, position)["average_exit_price"] == "61000"


def test_a_liquidation_after_a_partial_close_counts_in_the_average_exit(alice_client, account, btc):
    """0.05 closed at 61,000, then the other 0.05 liquidated at the mark 57,100."""
    position = open_position(account, btc, "long", "0.1", 20)
    close_at(position, "61000", "0.05")
    set_price(btc, "57100")
    liquidated = Position.objects.get(pk=position.pk)
    assert liquidated.status == "liquidated" and liquidated.exit_price == Decimal(57100)

    history = alice_client.get(reverse("history", args=[account.pk])).content.decode()
    assert _history_cell(history, position) == "59,050.0"
    page = alice_client.get(reverse("position", args=[position.pk])).content.decode()
    assert _position_stat(page) == "59,050.0"
    assert "Liquidated at 57,100.0" in page  # the liquidation's own price stays on its banner
    assert _csv_row(alice_client, account, position)["average_exit_price"] == "59050"


def test_an_auto_deleveraging_close_counts_in_the_average_exit(client):
    classroom = make_classroom(name="No fund", max_leverage=100)
    btc = make_instrument(classroom)
    alice, bob = make_student(classroom), make_student(classroom, username="bob")
    open_position(alice, btc, "long", "0.1", 50)  # BP 58,800, no insurance fund
    winner = open_position(bob, btc, "short", "0.1", 10)
    close_at(winner, "59000", "0.05")
    set_price(btc, "58000")  # alice's gap is paid by closing bob's short at her BP

    fills = Fill.objects.filter(position=winner).exclude(kind="open").order_by("pk")
    assert [(f.kind, f.quantity, f.price) for f in fills] == [
        ("close", Decimal("0.05"), Decimal(59000)),
        ("adl", Decimal("0.05"), Decimal(58800)),
    ]
    client.force_login(bob.user)
    history = client.get(reverse("history", args=[bob.pk])).content.decode()
    assert _history_cell(history, winner) == "58,900.0"
    assert _csv_row(client, bob, winner)["average_exit_price"] == "58900"


def test_an_open_position_partly_closed_shows_its_average_exit_so_far(alice_client, account, btc):
    position = open_position(account, btc, "long", "0.5", 20)
    page = alice_client.get(reverse("position", args=[position.pk])).content.decode()
    assert 'data-testid="average-exit"' not in page  # nothing closed yet
    close_at(position, "61000", "0.1")
    close_at(position, "60500", "0.1")
    page = alice_client.get(reverse("position", args=[position.pk])).content.decode()
    assert _position_stat(page) == "60,750.0"
    assert "Average exit so far" in page


@pytest.mark.parametrize("name", ["history", "positions-csv"])
def test_history_and_csv_queries_do_not_grow_with_positions_closed_in_parts(
    client, django_assert_max_num_queries, name
):
    classroom = make_classroom(name="Parts")
    btc = make_instrument(classroom)
    accounts = {}
    for n in (2, 12):
        account = make_student(classroom, username=f"parts{n}")
        account_adjust(account_id=account.pk, amount=Decimal(100_000), reason="Big class")
        for _ in range(n):
            position = position_open(
                account_id=account.pk, instrument_id=btc.pk, side="long", quantity="0.02",
                leverage=10,
            )  # fmt: skip
            close_at(position, "61000", "0.01")
            close_at(position, "59000")
        accounts[n] = account

    client.force_login(accounts[2].user)
    with CaptureQueriesContext(connection) as few:
        response = client.get(reverse(name, args=[accounts[2].pk]))
    assert response.content.decode().count("60") >= 2

    client.force_login(accounts[12].user)
    with django_assert_max_num_queries(len(few)):
        content = client.get(reverse(name, args=[accounts[12].pk])).content.decode()
    if name == "history":
        assert len(re.findall(r'data-testid="average-exit-\d+">60,000.0<', content)) == 12
    else:
        rows = list(csv.DictReader(io.StringIO(content)))
        assert [r["average_exit_price"] for r in rows] == ["60000"] * 12
