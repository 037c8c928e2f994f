"""Gaps past the bankruptcy price: the insurance fund pays, and when it cannot, ADL does."""

from __future__ import annotations

from decimal import Decimal

import pytest

from accounts.models import ClassroomPocket, LedgerTransaction, TradingAccount
from accounts.services import account_adjust
from liquidation.models import AdlFill, LiquidationEvent
from liquidation.settlement import breached_position_ids, liquidate_batch
from positions.models import Position
from tests.engine.helpers import open_position, set_price
from tests.factories import make_classroom, make_instrument, make_student
from tests.invariants import assert_ledger_invariants

pytestmark = pytest.mark.django_db


def _fund(classroom) -> Decimal:
    return ClassroomPocket.objects.get(classroom=classroom, kind="insurance").balance


def test_a_gap_past_bankruptcy_costs_the_student_only_the_collateral(classroom, btc, account):
    position = open_position(account, btc, "long", "0.1", 50)
    collateral = position.collateral.amount
    assert position.bankruptcy_price == Decimal("58800")
    free_before = TradingAccount.objects.get(pk=account.pk).balance
    fund_before = _fund(classroom)
    set_price(btc, "58000")
    event = LiquidationEvent.objects.get(position=position)
    # MB = 120 + 0.1 * (58000 - 60000) = -80: the fund pays the 80 shortfall to the house.
    assert event.shortfall == Decimal("80")
    assert event.insurance_paid == Decimal("80")
    assert event.collateral_lost == collateral == Decimal("120")
    assert event.adl_amount == 0
    assert _fund(classroom) == fund_before - Decimal("80")
    assert TradingAccount.objects.get(pk=account.pk).balance == free_before
    assert not AdlFill.objects.exists()
    assert_ledger_invariants()


def test_with_an_empty_fund_adl_closes_the_best_ranked_counterparties_at_bp():
    classroom = make_classroom(name="No fund", max_leverage=100)
    btc = make_instrument(classroom)
    alice, bob, carol, dave = (make_student(classroom) for _ in range(4))
    bankrupt = open_position(alice, btc, "long", "0.1", 50)
    bob_short = open_position(bob, btc, "short", "0.1", 10)
    carol_short = open_position(carol, btc, "short", "0.1", 20)
    set_price(btc, "61000")
    dave_short = open_position(dave, btc, "short", "0.05", 20)
    balances = dict(TradingAccount.objects.values_list("pk", "balance"))

    set_price(btc, "58000")

    event = LiquidationEvent.objects.get(position=bankrupt)
    assert event.shortfall == Decimal("80") and event.insurance_paid == 0
    assert event.adl_amount == Decimal("80")
    # Ranked by PnL% of collateral x leverage at the mark: dave (19.7), carol (13.3), bob (3.3).
    fills = {f.position_id: f for f in AdlFill.objects.filter(liquidation=event)}
    assert set(fills) == {dave_short.pk, carol_short.pk}
    assert fills[dave_short.pk].quantity == Decimal("0.05")
    assert fills[carol_short.pk].quantity == Decimal("0.05")
    assert {f.price for f in fills.values()} == {Decimal("58800")}
    assert fills[dave_short.pk].rank_score > fills[carol_short.pk].rank_score
    dave_short.refresh_from_db()
    carol_short.refresh_from_db()
    bob_short.refresh_from_db()
    assert dave_short.status == "closed" and dave_short.exit_price == Decimal("58800")
    assert carol_short.status == "open" and carol_short.quantity == Decimal("0.05")
    assert bob_short.quantity == Decimal("0.1") and bob_short.status == "open"
    # dave got collateral back plus his PnL at BP: 0.05 * (61000 - 58800) = 110.
    dave_account = TradingAccount.objects.get(pk=dave.pk)
    assert dave_account.balance == balances[dave.pk] + Decimal("152.5") + Decimal("110")
    assert TradingAccount.objects.get(pk=bob.pk).balance == balances[bob.pk]
    assert TradingAccount.objects.get(pk=alice.pk).balance == balances[alice.pk]
    assert LedgerTransaction.objects.filter(kind="adl").count() == 2
    assert _fund(classroom) == 0
    assert Position.objects.get(pk=bankrupt.pk).status == "liquidated"
    assert_ledger_invariants()


def test_an_adl_statement_line_writes_its_quantity_and_price_as_people_do():
    classroom = make_classroom(name="No fund", max_leverage=100)
    btc = make_instrument(classroom, lot_size=Decimal(1), min_notional=Decimal(5))
    alice, bob = make_student(classroom), make_student(classroom)
    account_adjust(account_id=alice.pk, amount=Decimal(100_000), reason="Big class")
    account_adjust(account_id=bob.pk, amount=Decimal(100_000), reason="Big class")
    bankrupt = open_position(alice, btc, "long", "10", 50)
    assert bankrupt.bankruptcy_price == Decimal("58800")
    winner = open_position(bob, btc, "short", "10", 10)

    set_price(btc, "58000")

    fill = AdlFill.objects.get(position=winner)
    assert fill.quantity == Decimal(10)
    memo = LedgerTransaction.objects.get(kind="adl", position_id=winner.pk).memo
    assert memo == (
        f"Auto-deleveraging of 10 of position #{winner.pk} at 58800 "
        f"for liquidation #{fill.liquidation_id}"
    )
    assert_ledger_invariants()


def test_a_liquidation_memo_names_a_whole_number_mark_in_full(classroom, btc, account):
    position = open_position(account, btc, "long", "0.1", 50)
    mark = Decimal(58000)  # a mark written without decimal places

    liquidate_batch(instrument=btc, mark=mark, rows=breached_position_ids(btc.pk, mark))

    memo = LedgerTransaction.objects.get(kind="liquidation", position_id=position.pk).memo
    assert memo == f"Liquidation of position #{position.pk} at 58000"
    assert_ledger_invariants()
