"""The money columns' limit: every stored amount is below ``MONEY_LIMIT`` (10^16).

Grants stop at ``MAX_AMOUNT``, but profits can carry a free balance much further: a
quadrillion-dollar class, a 100x position and a tenfold rally. A close, a margin change or a
ledger leg that would pass the limit is refused with ``amount_too_large`` and a message,
before or instead of the database's overflow, and leaves nothing written.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.urls import reverse

from accounts import errors
from accounts.ledger import Leg, ledger_post
from accounts.models import ClassroomPocket, LedgerEntry, LedgerTransaction, TradingAccount
from accounts.money import MONEY_LIMIT
from liquidation.engine import close_at_tpsl
from liquidation.instructor import account_reset
from liquidation.models import AdlFill, LiquidationEvent
from positions.models import Collateral, Instrument, Order, Position
from positions.services import (
    order_place,
    position_add_margin,
    position_close,
    position_open,
    position_remove_margin,
    position_set_tpsl,
)
from tests.api.conftest import client_for, new_key
from tests.engine.helpers import open_position, set_price
from tests.factories import make_classroom, make_instrument, make_student
from tests.invariants import assert_ledger_invariants, money_snapshot

D = Decimal
QUANTITY = "16000000000"  # 16 billion BTC at 60,000: a notional of 9.6e14, 9.6e12 at 100x
RALLY = "1000000"  # the mark after the rally: the whole position's profit is 1.5e16


@pytest.fixture
def classroom(db):
    return make_classroom(name="Billionaires", starting_balance=D(10) ** 14, max_leverage=100)


@pytest.fixture
def btc(classroom):
    return make_instrument(classroom, brackets=[(D(0), D(10) ** 15, D("0.004"), 125)])


@pytest.fixture
def account(classroom):
    return make_student(classroom, username="whale")


def balance(account) -> Decimal:
    return TradingAccount.objects.get(pk=account.pk).balance


def set_mark(instrument, mark) -> None:
    Instrument.objects.filter(pk=instrument.pk).update(mark_price=D(mark))


def opened(account, btc, quantity: str) -> Position:
    """A 100x long at the mark."""
    return position_open(
        account_id=account.pk, instrument_id=btc.pk, side="long", quantity=quantity, leverage=100
    )


def big_winner(account, btc, quantity: str = QUANTITY, **tpsl) -> Position:
    """A 100x long at 60,000 (a notional of 60,000 times ``quantity``; by default 9.6e14),
    then the rally to a million."""
    position = opened(account, btc, quantity)
    if tpsl:
        position_set_tpsl(position_id=position.pk, **tpsl)
    set_mark(btc, RALLY)
    return position


def _fund(classroom) -> Decimal:
    return ClassroomPocket.objects.get(classroom=classroom, kind="insurance").balance


def advised_quantity(refusal: errors.DomainError) -> str:
    return refusal.message.split("Close at most about ")[1].removesuffix(" now.")


def close_what_fits(position: Position) -> None:
    """Close as much of ``position`` as the refusal of closing all of it advises."""
    with pytest.raises(errors.AmountTooLarge) as refused:
        position_close(position_id=position.pk)
    position_close(position_id=position.pk, quantity=advised_quantity(refused.value))


def rich_and_padded(account, btc) -> tuple[Position, Position]:
    """Three winners of 5 billion BTC (4.7e15 of profit each), two of them closed; then a small
    position padded with 4 quadrillion of collateral (an input is at most 1e15 at a time).
    Returns the third winner, still open, and the padded position."""
    first, second, third = (opened(account, btc, "5000000000") for _ in range(3))
    set_mark(btc, RALLY)
    position_close(position_id=first.pk)
    position_close(position_id=second.pk)
    padded = position_open(
        account_id=account.pk, instrument_id=btc.pk, side="long", quantity="1000", leverage=10,
        extra_collateral="999999999999999",
    )  # fmt: skip
    for _ in range(3):
        position_add_margin(position_id=padded.pk, amount="999999999999999")
    return third, padded


def test_a_close_whose_profit_the_balance_cannot_hold_is_refused_and_says_how_much_fits(
    account, btc
):
    position, _ = rich_and_padded(account, btc)
    before = money_snapshot()
    with pytest.raises(errors.AmountTooLarge) as refused:
        position_close(position_id=position.pk)
    assert refused.value.code == "amount_too_large" and refused.value.field == "quantity"
    assert "into a free balance of" in refused.value.message
    assert money_snapshot() == before
    # The advice is a quantity that does close, and it leaves the balance within the limit.
    part = advised_quantity(refused.value)
    closed = position_close(position_id=position.pk, quantity=part)
    assert closed.quantity == D("5000000000") - D(part)
    assert MONEY_LIMIT * D("0.99") < balance(account) < MONEY_LIMIT
    assert_ledger_invariants()
    # Now not even a small part fits, and the message says so.
    with pytest.raises(errors.AmountTooLarge, match="No part of it can be closed"):
        position_close(position_id=position.pk, quantity="1000000")
    assert_ledger_invariants()


def test_a_position_whose_realised_pnl_would_pass_the_limit_cannot_close_all_of_it(account, btc):
    position = big_winner(account, btc)
    close_what_fits(position)
    # With the free balance emptied into a new position's collateral, the balance has room;
    # the position's realised PnL has not.
    position_open(
        account_id=account.pk, instrument_id=btc.pk, side="long", quantity="1000", leverage=10,
        extra_collateral="999999999999999",
    )  # fmt: skip
    with pytest.raises(errors.AmountTooLarge, match="bring this position's realised PnL to"):
        position_close(position_id=position.pk)
    assert_ledger_invariants()


def test_taking_margin_out_into_a_balance_at_the_limit_is_refused(account, btc):
    third, padded = rich_and_padded(account, btc)
    close_what_fits(third)
    before = money_snapshot()
    with pytest.raises(errors.AmountTooLarge, match="the free balance past the largest amount"):
        position_remove_margin(position_id=padded.pk, amount="100000000000000")
    assert money_snapshot() == before
    assert_ledger_invariants()


def test_collateral_that_would_pass_the_limit_is_refused(account, btc):
    third, padded = rich_and_padded(account, btc)
    close_what_fits(third)
    most = D("999999999999999")  # the largest amount an input may name
    for _ in range(10):
        if Collateral.objects.get(pk=padded.pk).amount + most >= MONEY_LIMIT:
            break
        position_add_margin(position_id=padded.pk, amount=most)
    assert balance(account) > most
    before = money_snapshot()
    with pytest.raises(errors.AmountTooLarge, match="carry the collateral past"):
        position_add_margin(position_id=padded.pk, amount=most)
    assert money_snapshot() == before
    assert_ledger_invariants()


def test_a_ledger_leg_the_column_cannot_store_is_refused(account):
    counts = (LedgerTransaction.objects.count(), LedgerEntry.objects.count())
    with pytest.raises(errors.AmountTooLarge, match="a single ledger entry"):
        ledger_post(
            classroom_id=account.classroom_id,
            kind=LedgerTransaction.Kind.GRANT,
            legs=[
                Leg(LedgerEntry.Pocket.HOUSE, -MONEY_LIMIT),
                Leg(LedgerEntry.Pocket.ACCOUNT, MONEY_LIMIT, account_id=account.pk),
            ],
        )
    assert (LedgerTransaction.objects.count(), LedgerEntry.objects.count()) == counts


def test_the_engine_leaves_a_take_profit_it_cannot_settle_open(account, btc):
    position = big_winner(account, btc, take_profit="500000")
    before = money_snapshot()
    assert close_at_tpsl(position.pk) is False
    assert money_snapshot() == before
    assert Position.objects.get(pk=position.pk).is_open


def test_an_instructor_resets_an_account_whose_profit_the_balance_cannot_take(
    classroom, account, btc
):
    third, _ = rich_and_padded(account, btc)
    close_what_fits(third)
    account_reset(account_id=account.pk)
    assert balance(account) == classroom.starting_balance
    assert not Position.objects.filter(account_id=account.pk, status="open").exists()
    memos = list(
        LedgerTransaction.objects.filter(kind=LedgerTransaction.Kind.RESET)
        .order_by("pk")
        .values_list("memo", flat=True)
    )
    assert len(memos) == 2 and "back to the house" in memos[0]
    assert_ledger_invariants()


def test_the_api_answers_a_close_it_cannot_settle_with_a_conflict(account, btc):
    position = big_winner(account, btc)
    before = money_snapshot()
    answer = client_for(new_key(account)).post(
        f"/api/v1/positions/{position.pk}/close", {}, format="json"
    )
    assert answer.status_code == 409, answer.content
    error = answer.json()["error"]
    assert error["code"] == "amount_too_large"
    assert "Close at most about" in error["fields"]["quantity"][0]
    assert money_snapshot() == before


def test_auto_deleveraging_passes_over_a_counterparty_whose_balance_cannot_take_its_profit(db):
    """The engine's ADL closes the best-ranked opposite positions at the bankruptcy price; one
    whose account could not store the profit is passed over, as a locked one is."""
    classroom = make_classroom(name="No fund", max_leverage=100, starting_balance=D(10) ** 14)
    btc = make_instrument(classroom)
    # A market with a tiny lot, so that closing what fits leaves a room of a few dollars.
    eth = make_instrument(
        classroom, symbol="ETHUSDT", lot_size=D("0.00001"),
        brackets=[(D(0), D(10) ** 15, D("0.004"), 125)],
    )  # fmt: skip
    alice, bob, carol, dave = (make_student(classroom) for _ in range(4))
    winner = opened(dave, eth, "10600000000")
    set_mark(eth, RALLY)
    close_what_fits(winner)
    bankrupt = open_position(alice, btc, "long", "0.1", 50)
    bob_short = open_position(bob, btc, "short", "0.1", 10)
    carol_short = open_position(carol, btc, "short", "0.1", 20)
    set_price(btc, "61000")
    dave_short = open_position(dave, btc, "short", "0.05", 20)
    close_what_fits(winner)  # dave's balance is back within a few dollars of the limit
    assert MONEY_LIMIT - balance(dave) < D(100)
    before = balance(dave)

    result = set_price(btc, "58000")

    assert result.errors == [] and result.liquidated == [bankrupt.pk]
    event = LiquidationEvent.objects.get(position=bankrupt)
    assert event.adl_amount == D("80")
    # dave ranks first (the best PnL for his collateral and leverage) but is passed over.
    fills = {f.position_id: f.quantity for f in AdlFill.objects.filter(liquidation=event)}
    assert dave_short.pk not in fills and set(fills) <= {bob_short.pk, carol_short.pk}
    assert sum(fills.values()) * (D("58800") - D("58000")) >= D("80")
    assert Position.objects.get(pk=dave_short.pk).quantity == D("0.05")
    assert balance(dave) == before
    assert_ledger_invariants()


def test_the_close_form_says_how_much_fits(client, account, btc):
    position = big_winner(account, btc)
    before = money_snapshot()
    client.force_login(account.user)
    response = client.post(reverse("position-close", args=[position.pk]), {"close-quantity": ""})
    assert response.status_code == 400
    page = response.content.decode()
    assert "more than an account can hold" in page and "Close at most about" in page
    assert money_snapshot() == before


def test_a_leftover_the_free_balance_cannot_store_goes_to_the_insurance_fund(db):
    """Under the return-to-trader policy a liquidation's leftover goes to the free balance;
    one that could not store it leaves the leftover to the fund, and the liquidation
    happens on its tick rather than failing on every tick."""
    classroom = make_classroom(name="Kind class", max_leverage=100, starting_balance=D(10) ** 14)
    classroom.leftover_policy = "return_to_trader"
    classroom.liquidation_fee_rate = D("0.001")
    classroom.save()
    btc = make_instrument(classroom)
    eth = make_instrument(
        classroom, symbol="ETHUSDT", lot_size=D("0.00001"),
        brackets=[(D(0), D(10) ** 15, D("0.004"), 125)],
    )  # fmt: skip
    dave = make_student(classroom)
    winner = opened(dave, eth, "10600000000")
    long = open_position(dave, btc, "long", "1", 50)
    set_mark(eth, RALLY)
    close_what_fits(winner)
    before, fund_before = balance(dave), _fund(classroom)

    result = set_price(btc, long.liquidation_price)

    assert result.errors == [] and result.liquidated == [long.pk]
    event = LiquidationEvent.objects.get(position=long)
    assert event.leftover > MONEY_LIMIT - before and event.returned_to_trader == 0
    assert _fund(classroom) == fund_before + event.leftover + event.liquidation_fee
    assert balance(dave) == before
    assert_ledger_invariants()


def big_hold_at_the_limit(account, btc) -> Instrument:
    """A sell limit on another market holding about 10^15 (its extra collateral), placed
    between closing two winners: nothing is open, and the free balance is too close to the
    limit to take the hold back. Returns the other market."""
    eth = make_instrument(account.classroom, symbol="ETHUSDT")
    first, second = opened(account, btc, "5000000000"), opened(account, btc, "6000000000")
    set_mark(btc, RALLY)
    position_close(position_id=first.pk)
    order_place(
        account_id=account.pk, instrument_id=eth.pk, side="short", type="limit",
        quantity="1", leverage=10, price="61000", extra_collateral="999999999999999",
    )  # fmt: skip
    position_close(position_id=second.pk)
    held = Order.objects.get(instrument=eth).held_margin
    assert balance(account) + held >= MONEY_LIMIT
    return eth


def test_a_triggered_order_whose_hold_the_balance_cannot_take_back_keeps_resting(account, btc):
    eth = big_hold_at_the_limit(account, btc)
    order = Order.objects.get(instrument=eth)
    before = money_snapshot()

    result = set_price(eth, "62000")

    assert result.errors == []
    order.refresh_from_db()
    assert (order.status, order.held_margin) == ("resting", D("1000000000006129.5"))
    assert money_snapshot() == before
    assert_ledger_invariants()


def test_a_reset_cancels_an_order_whose_hold_the_balance_cannot_take_back(classroom, account, btc):
    big_hold_at_the_limit(account, btc)
    account_reset(account_id=account.pk)
    assert balance(account) == classroom.starting_balance
    assert not Order.objects.filter(account_id=account.pk, status="resting").exists()
    memos = LedgerTransaction.objects.filter(kind=LedgerTransaction.Kind.RESET).order_by("pk")
    assert "to cancel an order whose hold" in memos.values_list("memo", flat=True)[0]
    assert_ledger_invariants()


def test_cancelling_all_orders_passes_over_one_whose_hold_the_balance_cannot_take_back(
    account, btc
):
    small = order_place(
        account_id=account.pk, instrument_id=btc.pk, side="long", type="limit",
        quantity="1", leverage=10, price="50000",
    )  # fmt: skip
    eth = big_hold_at_the_limit(account, btc)
    answer = client_for(new_key(account)).delete("/api/v1/orders/")
    assert answer.status_code == 200, answer.content
    assert [o["id"] for o in answer.json()["cancelled"]] == [small.pk]
    assert Order.objects.get(instrument=eth).status == "resting"
    assert_ledger_invariants()


def test_a_reset_that_cannot_close_a_position_at_the_mark_says_what_to_do(classroom, account, btc):
    position = big_winner(account, btc)  # 1.5e16 of profit: no column can record it
    before = money_snapshot()
    with pytest.raises(errors.AmountTooLarge, match="Set a lower price for BTCUSDT"):
        account_reset(account_id=account.pk)
    assert money_snapshot() == before
    set_mark(btc, "600000")  # 8.6e15 of profit: it fits once the balance is handed back
    account_reset(account_id=account.pk)
    assert not Position.objects.get(pk=position.pk).is_open
    assert balance(account) == classroom.starting_balance
    assert_ledger_invariants()
