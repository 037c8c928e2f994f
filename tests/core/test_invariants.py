"""The ledger invariant check itself: it passes on honest data and catches each corruption."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import connection

from accounts.ledger import Leg
from accounts.models import LedgerEntry, LedgerTransaction
from positions.services import position_close, position_ledger_post, position_open
from tests.invariants import assert_ledger_invariants

D = Decimal
Pocket = LedgerEntry.Pocket


@pytest.fixture
def trades(account, other_account, btc):
    """An open and a closed position, so every kind of row exists."""
    open_one = position_open(
        account_id=account.pk, instrument_id=btc.pk, side="long", quantity="0.5", leverage=20
    )
    closed = position_open(
        account_id=other_account.pk, instrument_id=btc.pk, side="short", quantity="0.1", leverage=5
    )
    position_close(position_id=closed.pk)
    assert_ledger_invariants()
    return open_one, closed


def raw(sql: str, *params: int | str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def test_a_corrupted_free_balance_is_caught(trades, account):
    raw("UPDATE accounts_tradingaccount SET balance = balance + 0.01 WHERE id = %s", account.pk)
    with pytest.raises(AssertionError, match=f"account {account.pk}: stored"):
        assert_ledger_invariants()


def test_a_corrupted_collateral_is_caught(trades):
    open_one, _ = trades
    raw("UPDATE positions_collateral SET amount = amount - 1 WHERE position_id = %s", open_one.pk)
    with pytest.raises(AssertionError, match=f"collateral {open_one.pk}: stored"):
        assert_ledger_invariants()


@pytest.mark.parametrize("kind", ["house", "insurance", "fees"])
def test_a_corrupted_classroom_pocket_is_caught(trades, classroom, kind):
    raw(
        "UPDATE accounts_classroompocket SET balance = balance + 5 WHERE classroom_id = %s "
        "AND kind = %s",
        classroom.pk,
        kind,
    )
    with pytest.raises(AssertionError, match="stored"):
        assert_ledger_invariants()


def test_an_unbalanced_transaction_is_caught(trades, classroom):
    txn = LedgerTransaction.objects.filter(classroom=classroom).last()
    assert txn is not None
    LedgerEntry.objects.create(transaction=txn, classroom=classroom, pocket="fees", amount=D(1))
    raw(
        "UPDATE accounts_classroompocket SET balance = balance + 1 WHERE classroom_id = %s "
        "AND kind = 'fees'",
        classroom.pk,
    )
    with pytest.raises(AssertionError, match="unbalanced"):
        assert_ledger_invariants()


def test_collateral_left_in_a_closed_position_is_caught(trades, classroom, other_account):
    _, closed = trades
    position_ledger_post(
        classroom_id=classroom.pk,
        kind=LedgerTransaction.Kind.ADD_MARGIN,
        position_id=closed.pk,
        legs=[
            Leg(Pocket.ACCOUNT, D(-1), account_id=other_account.pk),
            Leg(Pocket.COLLATERAL, D(1), account_id=other_account.pk, position_id=closed.pk),
        ],
    )
    with pytest.raises(AssertionError, match=f"closed position {closed.pk} still holds"):
        assert_ledger_invariants()


def test_a_close_that_debits_the_free_balance_is_caught(trades, classroom, account):
    open_one, _ = trades
    position_ledger_post(
        classroom_id=classroom.pk,
        kind=LedgerTransaction.Kind.CLOSE,
        position_id=open_one.pk,
        legs=[Leg(Pocket.ACCOUNT, D(-10), account_id=account.pk), Leg(Pocket.HOUSE, D(10))],
    )
    with pytest.raises(AssertionError, match="free balance"):
        assert_ledger_invariants()


def test_collateral_moved_by_another_positions_transaction_is_caught(trades, classroom, account):
    open_one, closed = trades
    position_ledger_post(
        classroom_id=classroom.pk,
        kind=LedgerTransaction.Kind.REMOVE_MARGIN,
        position_id=closed.pk,
        legs=[
            Leg(Pocket.COLLATERAL, D(-1), account_id=account.pk, position_id=open_one.pk),
            Leg(Pocket.ACCOUNT, D(1), account_id=account.pk),
        ],
    )
    with pytest.raises(AssertionError, match="another position's transaction"):
        assert_ledger_invariants()


def test_a_loss_beyond_the_collateral_is_caught(trades):
    _, closed = trades
    raw("UPDATE positions_position SET realized_pnl = -1200.00000001 WHERE id = %s", closed.pk)
    with pytest.raises(AssertionError, match=f"position {closed.pk} lost"):
        assert_ledger_invariants()
