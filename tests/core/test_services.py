"""Every service of the trading core: happy paths, exact settlements and every refusal.

A refused call must leave the database exactly as it was: ``refused`` compares row counts,
every balance and every position and order before and after.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.errors import DomainError
from accounts.ledger import POCKET_LOCK_ORDER, Leg, ledger_post
from accounts.models import (
    Classroom,
    ClassroomPocket,
    LedgerEntry,
    LedgerTransaction,
    Membership,
    TradingAccount,
)
from accounts.money import MAX_AMOUNT, towards_entry
from accounts.services import account_adjust, classroom_create, classroom_join
from positions import margin
from positions.models import Collateral, Fill, Instrument, Order, Position
from positions.services import (
    max_open_quantity,
    order_cancel,
    order_execute,
    order_place,
    position_add_margin,
    position_close,
    position_open,
    position_remove_margin,
    position_set_tpsl,
    quote_open,
    removable_margin,
    stored_prices,
)
from tests.factories import UserFactory, make_classroom, make_instrument, make_student
from tests.invariants import assert_ledger_invariants, money_snapshot

D = Decimal


@contextmanager
def refused(code: str) -> Iterator[None]:
    """The call inside raises the domain error ``code`` and writes nothing at all."""
    before = money_snapshot()
    with pytest.raises(DomainError) as info:
        yield
    assert info.value.code == code, f"{info.value.code}: {info.value.message}"
    assert money_snapshot() == before
    assert_ledger_invariants()


def pocket(classroom, kind: str) -> Decimal:
    return ClassroomPocket.objects.get(classroom=classroom, kind=kind).balance


def balance(account) -> Decimal:
    return TradingAccount.objects.get(pk=account.pk).balance


def set_mark(instrument, mark) -> None:
    instrument.mark_price = D(mark)
    instrument.save(update_fields=["mark_price"])


def open_position(account, instrument, *, side="long", quantity="0.5", leverage=20, **kwargs):
    return position_open(
        account_id=account.pk,
        instrument_id=instrument.pk,
        side=side,
        quantity=quantity,
        leverage=leverage,
        **kwargs,
    )


# --- classrooms -----------------------------------------------------------------------


def test_classroom_create_makes_pockets_membership_and_seeds_the_fund(db):
    teacher = UserFactory.create(is_staff=True)
    classroom = classroom_create(
        instructor_id=teacher.pk, name="  Futures  ", insurance_fund_seed=D("250")
    )
    assert classroom.name == "Futures"
    assert sorted(classroom.pockets.values_list("kind", flat=True)) == [
        "fees",
        "house",
        "insurance",
    ]
    assert Membership.objects.get(user=teacher, classroom=classroom).role == "instructor"
    assert pocket(classroom, "insurance") == D(250)
    assert pocket(classroom, "house") == D(-250)
    assert LedgerTransaction.objects.get(classroom=classroom).kind == "insurance_seed"
    assert_ledger_invariants()


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"name": "   "}, "invalid_request"),
        ({"starting_balance": D(0)}, "invalid_amount"),
        ({"starting_balance": D(-5)}, "invalid_amount"),
        ({"starting_balance": "lots"}, "invalid_amount"),
        ({"insurance_fund_seed": D(-1)}, "invalid_amount"),
        ({"max_leverage": 0}, "invalid_leverage"),
        ({"max_leverage": 126}, "invalid_leverage"),
        ({"liquidation_fee_rate": D("0.2")}, "invalid_request"),
        ({"liquidation_fee_rate": D("-0.01")}, "invalid_request"),
        ({"liquidation_fee_rate": "a lot"}, "invalid_amount"),
        ({"max_leverage": "abc"}, "invalid_leverage"),
        ({"name": "x" * 121}, "invalid_request"),
        ({"currency": ""}, "invalid_request"),
        ({"currency": "DOLLARS-OF-PAPER"}, "invalid_request"),
        ({"leftover_policy": "keep_it"}, "invalid_request"),
        (
            {
                "trading_opens_at": timezone.now(),
                "trading_closes_at": timezone.now() - timedelta(hours=1),
            },
            "invalid_request",
        ),
    ],
)
def test_classroom_create_refusals_write_nothing(db, kwargs, code):
    teacher = UserFactory.create(is_staff=True)
    arguments = {"instructor_id": teacher.pk, "name": "Class"} | kwargs
    classrooms, memberships = Classroom.objects.count(), Membership.objects.count()
    with refused(code):
        classroom_create(**arguments)
    assert (Classroom.objects.count(), Membership.objects.count()) == (classrooms, memberships)


def test_classroom_join_funds_the_account_from_the_house(classroom):
    user = UserFactory.create()
    house = pocket(classroom, "house")
    account = classroom_join(user_id=user.pk, join_code=f"  {classroom.join_code.lower()} ")
    assert account.balance == classroom.starting_balance == D(10000)
    assert pocket(classroom, "house") == house - D(10000)
    entry = LedgerEntry.objects.get(account=account)
    assert (entry.amount, entry.transaction.kind) == (D(10000), "deposit")
    assert Membership.objects.get(user=user, classroom=classroom).role == "student"
    assert_ledger_invariants()


def test_the_house_funds_any_number_of_the_largest_starting_balances(classroom):
    """Each free balance stays under MAX_AMOUNT, but the house pays them all: its pocket
    holds the sum of many such balances, as does the fees pocket of a busy class."""
    largest = MAX_AMOUNT - D("0.01")
    Classroom.objects.filter(pk=classroom.pk).update(starting_balance=largest)
    house = pocket(classroom, "house")
    for _ in range(12):
        classroom_join(user_id=UserFactory.create().pk, join_code=classroom.join_code)
    assert pocket(classroom, "house") == house - 12 * largest
    assert_ledger_invariants()


@pytest.mark.parametrize("code", ["", "   ", "NOPE1234", None])
def test_classroom_join_with_an_unknown_code_is_refused(classroom, code):
    user = UserFactory.create()
    memberships = Membership.objects.count()
    with refused("invalid_join_code"):
        classroom_join(user_id=user.pk, join_code=code)  # type: ignore[arg-type]
    assert Membership.objects.count() == memberships


def test_classroom_join_twice_is_refused(classroom, account):
    memberships = Membership.objects.count()
    with refused("already_joined"):
        classroom_join(user_id=account.user_id, join_code=classroom.join_code)
    assert Membership.objects.count() == memberships


def test_the_instructor_cannot_join_their_classroom_as_a_student(classroom):
    with refused("already_joined"):
        classroom_join(user_id=classroom.instructor_id, join_code=classroom.join_code)


# --- account adjustments --------------------------------------------------------------


def test_account_adjust_grants_and_deducts_against_the_house(classroom, account):
    house = pocket(classroom, "house")
    account_adjust(account_id=account.pk, amount=D("250.5"), reason="Prize")
    account_adjust(account_id=account.pk, amount=D("-0.5"), reason="Penalty")
    assert balance(account) == D("10250")
    assert pocket(classroom, "house") == house - D(250)
    kinds = list(
        LedgerTransaction.objects.filter(entries__account=account)
        .order_by("id")
        .values_list("kind", flat=True)
    )
    assert kinds == ["deposit", "grant", "deduct"]
    assert_ledger_invariants()


@pytest.mark.parametrize(
    ("amount", "reason", "code"),
    [
        (D("-10000.01"), "Too much", "insufficient_balance"),
        (D(0), "Nothing", "invalid_amount"),
        (D("0.000000001"), "Dust", "invalid_amount"),
        ("abc", "Text", "invalid_amount"),
        (D(5), "   ", "invalid_request"),
    ],
)
def test_account_adjust_refusals_write_nothing(account, amount, reason, code):
    with refused(code):
        account_adjust(account_id=account.pk, amount=amount, reason=reason)


def test_account_adjust_never_grows_a_balance_past_the_limit(account):
    account_adjust(account_id=account.pk, amount=D("999999999980000"), reason="Jackpot")
    with refused("invalid_amount"):
        account_adjust(account_id=account.pk, amount=D("10000"), reason="Again")


def test_account_adjust_of_a_missing_account_is_not_found(db):
    with refused("not_found"):
        account_adjust(account_id=987654, amount=D(5), reason="Ghost")


# --- quotes and opening ---------------------------------------------------------------


def test_quote_open_previews_the_worked_example_without_writing(account, btc):
    before = money_snapshot()
    quote = quote_open(account=account, instrument=btc, side="long", quantity="0.01", leverage=125)
    assert money_snapshot() == before
    assert quote.entry_price == D(60000)
    assert quote.initial_margin == D("4.8")
    assert quote.fee == D("0.3")
    assert quote.total_cost == D("5.1")
    assert quote.liquidation_price == D("59759.0361445784")  # rounded up, towards the mark
    assert quote.bankruptcy_price == D(59520)
    assert quote.max_loss == quote.collateral == D("4.8")
    assert quote.max_leverage == 125


def test_position_open_long_locks_collateral_and_pays_the_fee(classroom, account, btc):
    fees = pocket(classroom, "fees")
    position = open_position(account, btc, quantity="0.01", leverage=125)
    assert position.side == "long"
    assert position.entry_price == D(60000)
    assert (position.quantity, position.opened_quantity) == (D("0.01"), D("0.01"))
    assert position.collateral.amount == D("4.8")
    assert position.collateral.initial_margin == D("4.8")
    assert position.liquidation_price == D("59759.0361445784")
    assert position.bankruptcy_price == D(59520)
    assert position.fees_paid == D("0.3")
    assert balance(account) == D("9994.9")
    assert pocket(classroom, "fees") == fees + D("0.3")
    order = Order.objects.get(position=position)
    assert (order.status, order.type) == ("filled", "market")
    fill = Fill.objects.get(position=position)
    assert (fill.kind, fill.quantity, fill.price, fill.fee) == (
        "open",
        D("0.01"),
        D(60000),
        D("0.3"),
    )
    txn = LedgerTransaction.objects.get(position_id=position.pk)
    assert txn.kind == "open"
    assert sorted(txn.entries.values_list("pocket", "amount")) == [
        ("account", D("-5.1")),
        ("collateral", D("4.8")),
        ("fees", D("0.3")),
    ]
    assert_ledger_invariants()


def test_position_open_short_worked_example(account, btc):
    position = open_position(account, btc, side="short", quantity="0.01", leverage=125)
    assert position.liquidation_price == D("60239.0438247011")  # rounded down, towards the mark
    assert position.bankruptcy_price == D(60480)


def test_position_open_with_extra_collateral_worked_example(account, btc):
    position = open_position(account, btc, quantity="0.5", leverage=20, extra_collateral="500")
    assert position.collateral.amount == D(2000)
    assert position.collateral.initial_margin == D(1500)
    assert position.liquidation_price == D("56224.8995983936")
    assert position.bankruptcy_price == D(56000)
    assert balance(account) == D(10000) - D(2000) - D(15)


def test_buys_fill_above_and_sells_below_the_mark_by_half_the_spread(account, btc):
    btc.spread = D("0.15")
    btc.save()
    long = open_position(account, btc, side="long", quantity="0.01", leverage=10)
    short = open_position(account, btc, side="short", quantity="0.01", leverage=10)
    assert long.entry_price == D("60000.1")  # 60000.075 rounded up to the tick
    assert short.entry_price == D("59999.9")  # 59999.925 rounded down to the tick


def test_long_and_short_on_one_instrument_are_separate_isolated_positions(account, btc):
    long = open_position(account, btc, side="long", quantity="0.1", leverage=10)
    short = open_position(account, btc, side="short", quantity="0.1", leverage=10)
    assert long.pk != short.pk
    assert long.collateral.amount == short.collateral.amount == D(600)
    position_close(position_id=long.pk)
    short.refresh_from_db()
    assert short.status == "open"
    assert Collateral.objects.get(pk=short.pk).amount == D(600)
    assert_ledger_invariants()


def test_position_open_stores_take_profit_and_stop_loss(account, btc):
    position = open_position(account, btc, take_profit="61000", stop_loss="58000.5")
    assert (position.take_profit, position.stop_loss) == (D(61000), D("58000.5"))


def _closed_window(classroom):
    now = timezone.now()
    classroom.trading_opens_at = now - timedelta(days=2)
    classroom.trading_closes_at = now - timedelta(days=1)
    classroom.save()


def _not_yet_open(classroom):
    classroom.trading_opens_at = timezone.now() + timedelta(hours=1)
    classroom.save()


def _disabled(classroom):
    classroom.trading_enabled = False
    classroom.save()


@pytest.mark.parametrize("close_trading", [_closed_window, _not_yet_open, _disabled])
def test_position_open_outside_trading_is_refused(classroom, account, btc, close_trading):
    close_trading(classroom)
    with refused("trading_closed"):
        open_position(account, btc)


def test_position_open_on_a_frozen_account_is_refused(account, btc):
    TradingAccount.objects.filter(pk=account.pk).update(trading_frozen=True)
    with refused("account_frozen"):
        open_position(account, btc)


def test_position_open_on_another_classrooms_instrument_is_refused(account):
    elsewhere = make_instrument(make_classroom(name="Other"), symbol="ETHUSDT", mark="3000")
    with refused("instrument_not_allowed"):
        open_position(account, elsewhere, quantity="1", leverage=5)


def test_position_open_on_an_untradable_instrument_is_refused(account, btc):
    btc.is_tradable = False
    btc.save()
    with refused("instrument_not_allowed"):
        open_position(account, btc)


def test_position_open_on_an_instrument_without_tiers_is_refused(account, btc):
    btc.tiers.all().delete()
    with refused("instrument_not_allowed"):
        open_position(account, btc)


def test_position_open_without_a_mark_price_is_refused(account, btc):
    btc.mark_price = None
    btc.save()
    with refused("no_mark_price"):
        open_position(account, btc)


def test_position_open_on_a_missing_instrument_is_not_found(account, btc):
    with refused("not_found"):
        position_open(
            account_id=account.pk, instrument_id=btc.pk + 999, side="long", quantity="1", leverage=1
        )


@pytest.mark.parametrize(
    "quantity",
    [
        "0",
        0,
        "-0.01",
        "abc",
        "",
        None,
        "NaN",
        "Infinity",
        "0.0005",  # off the 0.001 lot
        "0.0010000001",  # more than 8 decimal places
        "1e30",  # absurdly large
        "1E+999999",
        D("100000000000000"),
    ],
)
def test_position_open_with_a_bad_quantity_is_refused(account, btc, quantity):
    with refused("invalid_quantity"):
        open_position(account, btc, quantity=quantity)


def test_a_huge_order_on_a_dear_instrument_is_refused_for_its_cost(account):
    dear = make_instrument(account.classroom, symbol="IDX", mark="10000000", tick_size=D(1))
    with refused("insufficient_balance"):
        open_position(account, dear, quantity="99999999999999", leverage=1)


def test_position_open_that_the_spread_alone_would_liquidate_is_refused(account, btc):
    # At 125x the margin is 0.8% of the notional and maintenance 0.4%: a half spread of
    # 300 on 60,000 (0.5%) leaves the margin balance below maintenance at the mark.
    btc.spread = D(600)
    btc.save()
    with refused("leverage_too_high"):
        open_position(account, btc, quantity="0.01", leverage=125)
    position = open_position(account, btc, quantity="0.01", leverage=50)
    assert position.liquidation_price is not None
    assert position.liquidation_price < btc.mark_price


def test_position_open_below_min_notional_is_refused(account, btc):
    btc.min_notional = D(100)
    btc.save()
    with refused("below_min_notional"):
        open_position(account, btc, quantity="0.001", leverage=10)  # 60 < 100


@pytest.mark.parametrize(
    ("quantity", "leverage", "setup"),
    [
        ("0.01", 51, "instrument"),  # instrument capped at 50x
        ("2", 101, "tier"),  # 120k notional: BTCUSDT bracket 2 allows 100x
        ("20", 76, "tier"),  # 1.2M notional: bracket 3 allows 75x
        ("0.01", 21, "classroom"),  # classroom capped at 20x
    ],
)
def test_position_open_above_a_leverage_cap_is_refused(
    classroom, account, btc, quantity, leverage, setup
):
    if setup == "instrument":
        btc.max_leverage = 50
        btc.save()
    if setup == "classroom":
        classroom.max_leverage = 20
        classroom.save()
    account_adjust(account_id=account.pk, amount=D(100000), reason="Room for big orders")
    with refused("leverage_too_high"):
        open_position(account, btc, quantity=quantity, leverage=leverage)
    # One notch lower is accepted.
    open_position(account, btc, quantity=quantity, leverage=leverage - 1)


@pytest.mark.parametrize("leverage", [0, -3, "abc", "2.5", None, ""])
def test_position_open_with_bad_leverage_is_refused(account, btc, leverage):
    with refused("invalid_leverage"):
        open_position(account, btc, leverage=leverage)


def test_position_open_beyond_the_free_balance_is_refused(account, btc):
    # 1.7 BTC at 10x needs 10,200 margin + 51 fee.
    with refused("insufficient_balance"):
        open_position(account, btc, quantity="1.7", leverage=10)
    # Exactly the free balance is enough: 1 BTC at 10x (6,030) plus 3,970 extra collateral.
    quote = quote_open(account=account, instrument=btc, side="long", quantity="1", leverage=10)
    extra = D(10000) - quote.total_cost
    open_position(account, btc, quantity="1", leverage=10, extra_collateral=extra)
    assert balance(account) == 0
    with refused("insufficient_balance"):
        open_position(account, btc, quantity="0.001", leverage=10)


@pytest.mark.parametrize("extra", ["-1", "abc", "0.000000001"])
def test_position_open_with_bad_extra_collateral_is_refused(account, btc, extra):
    with refused("invalid_amount"):
        open_position(account, btc, extra_collateral=extra)


def test_position_open_with_a_bad_side_is_refused(account, btc):
    with refused("invalid_request"):
        open_position(account, btc, side="sideways")


@pytest.mark.parametrize(
    ("side", "take_profit", "stop_loss"),
    [
        ("long", "59000", None),  # take-profit below the entry of a long
        ("long", "60000", None),  # at the entry
        ("long", None, "61000"),  # stop-loss above the entry of a long
        ("long", None, "50000"),  # stop-loss beyond the liquidation price (~57,2xx)
        ("short", "61000", None),
        ("short", None, "59000"),
        ("short", None, "70000"),
        ("long", "61000.05", None),  # off the 0.1 tick
        ("long", "abc", None),
        ("long", None, "-5"),
    ],
)
def test_position_open_with_bad_tpsl_is_refused(account, btc, side, take_profit, stop_loss):
    with refused("invalid_price"):
        open_position(account, btc, side=side, take_profit=take_profit, stop_loss=stop_loss)


def test_a_stop_loss_between_the_mark_and_the_fill_price_is_refused(account, btc):
    """With a spread a long fills above the mark: a stop between them would fire at once."""
    btc.spread = D(20)
    btc.save()
    with refused("invalid_price"):
        open_position(account, btc, side="long", stop_loss="60005")  # fill 60,010, mark 60,000
    with refused("invalid_price"):
        open_position(account, btc, side="short", stop_loss="59995")  # fill 59,990
    position = open_position(account, btc, side="long", stop_loss="59995")
    assert position.stop_loss == D(59995)


# --- closing --------------------------------------------------------------------------


def test_full_close_at_a_profit_settles_exactly(classroom, account, btc):
    position = open_position(account, btc)  # 0.5 @ 60,000, 20x: 1,500 margin, 15 fee
    house, fees = pocket(classroom, "house"), pocket(classroom, "fees")
    set_mark(btc, "61000")
    closed = position_close(position_id=position.pk)
    # PnL 0.5 * 1,000 = 500; fee 0.5 * 61,000 * 0.05% = 15.25.
    assert closed.status == "closed"
    assert closed.quantity == 0
    assert closed.exit_price == D(61000)
    assert closed.realized_pnl == D(500)
    assert closed.fees_paid == D("30.25")
    assert closed.collateral.amount == 0
    assert closed.closed_at is not None
    assert balance(account) == D(10000) - D(1515) + D(1500) + D(500) - D("15.25")
    assert pocket(classroom, "house") == house - D(500)
    assert pocket(classroom, "fees") == fees + D("15.25")
    fill = Fill.objects.get(position=position, kind="close")
    assert (fill.quantity, fill.price, fill.fee, fill.realized_pnl) == (
        D("0.5"),
        D(61000),
        D("15.25"),
        D(500),
    )
    assert_ledger_invariants()


def test_full_close_of_a_short_at_a_loss_settles_exactly(classroom, account, btc):
    position = open_position(account, btc, side="short")
    house = pocket(classroom, "house")
    set_mark(btc, "60800")
    closed = position_close(position_id=position.pk)
    # PnL -0.5 * 800 = -400; fee 0.5 * 60,800 * 0.05% = 15.2.
    assert closed.realized_pnl == D(-400)
    assert balance(account) == D(10000) - D(1515) + D(1500) - D(400) - D("15.2")
    assert pocket(classroom, "house") == house + D(400)
    assert_ledger_invariants()


def test_realised_pnl_rounds_against_the_trader(account, btc):
    btc.tick_size = D("0.0000001")
    btc.lot_size = D("0.00000001")
    btc.min_notional = D(0)
    btc.save()
    long = open_position(account, btc, quantity="0.00000003", leverage=1, extra_collateral="1")
    short = open_position(
        account, btc, side="short", quantity="0.00000003", leverage=1, extra_collateral="1"
    )
    set_mark(btc, "60000.1000001")
    # Each leg moves 0.00000003 * 0.1000001 = 0.000000003000003: a profit of 0.00000000
    # for the long and a loss of 0.00000001 for the short (both rounded down).
    assert position_close(position_id=long.pk).realized_pnl == D(0)
    assert position_close(position_id=short.pk).realized_pnl == D("-0.00000001")
    assert_ledger_invariants()


def test_partial_close_releases_collateral_pro_rata_and_restores_the_prices(
    classroom, account, btc
):
    position = open_position(account, btc, quantity="0.5", leverage=20, extra_collateral="500")
    set_mark(btc, "61000")
    before = balance(account)
    closed = position_close(position_id=position.pk, quantity="0.2")
    # 2,000 collateral * 0.2 / 0.5 = 800 released; PnL 200; fee 0.2 * 61,000 * 0.05% = 6.1.
    assert closed.status == "open"
    assert closed.quantity == D("0.3")
    assert closed.opened_quantity == D("0.5")
    assert closed.collateral.amount == D(1200)
    assert closed.collateral.initial_margin == D(900)
    assert closed.realized_pnl == D(200)
    assert balance(account) == before + D(800) + D(200) - D("6.1")
    lp, bp = stored_prices(
        side="long",
        entry_price=D(60000),
        quantity=D("0.3"),
        collateral=D(1200),
        tiers=btc.margin_tiers(),
    )
    assert (closed.liquidation_price, closed.bankruptcy_price) == (lp, bp)
    assert bp == D(56000)
    assert_ledger_invariants()


def test_partial_close_into_a_lower_bracket_moves_the_liquidation_price(account, btc):
    account_adjust(account_id=account.pk, amount=D(20000), reason="Room")
    position = open_position(account, btc, quantity="2", leverage=20)  # 120k: bracket 2
    assert position.liquidation_price == D("57261.3065326634")  # (6000 + 50 - 120000) / -1.99
    closed = position_close(position_id=position.pk, quantity="1.5")
    assert closed.collateral.amount == D(1500)
    # 0.5 BTC: bracket 1 at the LP, (1500 - 30000) / (0.002 - 0.5).
    assert closed.liquidation_price == D("57228.9156626507")
    assert closed.bankruptcy_price == D(57000)


def test_partial_close_rounds_the_released_collateral_half_even(account, btc):
    position = open_position(
        account, btc, quantity="0.007", leverage=125, extra_collateral="0.00000001"
    )
    assert position.collateral.amount == D("3.36000001")
    closed = position_close(position_id=position.pk, quantity="0.003")
    # 3.36000001 * 3 / 7 = 1.440000004285...: 1.44000000 released, 1.92000001 stays.
    assert closed.collateral.amount == D("1.92000001")
    final = position_close(position_id=position.pk)
    assert final.status == "closed"
    assert final.collateral.amount == 0
    assert_ledger_invariants()


def test_a_loss_past_the_bankruptcy_price_stops_at_the_collateral(classroom, account, btc):
    """Only an instructor's reset closes a position past its liquidation price (a student's
    close is refused: see below); its loss stops at the collateral all the same."""
    position = open_position(account, btc)  # BP 57,000
    after_open = balance(account)
    house, fund, fees = (pocket(classroom, k) for k in ("house", "insurance", "fees"))
    set_mark(btc, "56000")
    closed = position_close(position_id=position.pk, past_liquidation_ok=True)
    # Loss 2,000 on 1,500 collateral: the trader gets nothing back and pays nothing more;
    # the insurance fund pays the 500 shortfall to the house; no fee is left to take.
    assert closed.realized_pnl == D(-1500)
    assert balance(account) == after_open
    assert pocket(classroom, "insurance") == fund - D(500)
    assert pocket(classroom, "house") == house + D(2000)
    assert pocket(classroom, "fees") == fees
    assert Fill.objects.get(position=position, kind="close").fee == 0
    assert_ledger_invariants()


def test_an_empty_insurance_fund_leaves_the_shortfall_with_the_house(account, btc, classroom):
    ClassroomPocket.objects.filter(classroom=classroom, kind="insurance").update(balance=0)
    LedgerEntry.objects.filter(classroom=classroom, pocket="insurance").delete()
    LedgerEntry.objects.filter(
        classroom=classroom, pocket="house", transaction__kind="insurance_seed"
    ).delete()
    ClassroomPocket.objects.filter(classroom=classroom, kind="house").update(balance=-10000)
    LedgerTransaction.objects.filter(classroom=classroom, kind="insurance_seed").delete()
    assert_ledger_invariants()
    position = open_position(account, btc)
    house = pocket(classroom, "house")
    set_mark(btc, "56000")
    position_close(position_id=position.pk, past_liquidation_ok=True)
    assert pocket(classroom, "insurance") == 0
    assert pocket(classroom, "house") == house + D(1500)
    assert_ledger_invariants()


def test_a_partly_funded_insurance_fund_pays_what_it_has(account, btc, classroom):
    position = open_position(account, btc, quantity="1", leverage=10)  # 6,000 margin, BP 54,000
    set_mark(btc, "52000")  # loss 8,000: shortfall 2,000, the fund holds 1,000
    house = pocket(classroom, "house")
    position_close(position_id=position.pk, past_liquidation_ok=True)
    assert pocket(classroom, "insurance") == 0
    assert pocket(classroom, "house") == house + D(6000) + D(1000)
    assert_ledger_invariants()


def test_closing_a_position_cancels_its_resting_orders(account, btc):
    position = open_position(account, btc)
    order = order_place(
        account_id=account.pk,
        instrument_id=btc.pk,
        side="short",
        type="limit",
        quantity="0.1",
        price="65000",
        reduce_only=True,
        position_id=position.pk,
    )
    position_close(position_id=position.pk)
    order.refresh_from_db()
    assert order.status == "cancelled"


def _pocket_order(queries) -> list[str]:
    """The pocket kinds in the order the captured SQL first touches them."""
    seen: list[str] = []
    for query in queries.captured_queries:
        sql = query["sql"]
        if "accounts_classroompocket" not in sql:
            continue
        # A quoted kind ('fees') or one in an array literal ('{insurance,house}').
        for kind in re.findall(r"['{,](insurance|house|fees)\b", sql):
            if kind not in seen:
                seen.append(kind)
    return seen


def test_a_shortfall_close_takes_the_insurance_fund_before_the_house(account, btc):
    """The engine locks the fund before it moves the house; a close paying a shortfall too."""
    position = open_position(account, btc)
    set_mark(btc, "56000")
    with CaptureQueriesContext(connection) as queries:
        position_close(position_id=position.pk, past_liquidation_ok=True)
    assert _pocket_order(queries) == ["insurance", "house"]  # nothing is left for a fee


def test_the_ledger_moves_pockets_fund_first(classroom):
    with CaptureQueriesContext(connection) as queries:
        ledger_post(
            classroom_id=classroom.pk,
            kind=LedgerTransaction.Kind.INSURANCE_SEED,
            legs=[
                Leg(LedgerEntry.Pocket.FEES, D(1)),
                Leg(LedgerEntry.Pocket.HOUSE, D(-51)),
                Leg(LedgerEntry.Pocket.INSURANCE, D(50)),
            ],
        )
    assert _pocket_order(queries) == ["insurance", "house", "fees"]
    assert POCKET_LOCK_ORDER == ("insurance", "house", "fees")


def test_closing_a_closed_position_is_refused(account, btc):
    position = open_position(account, btc)
    position_close(position_id=position.pk)
    with refused("position_not_open"):
        position_close(position_id=position.pk)


@pytest.mark.parametrize("quantity", ["0.6", "0", "-0.1", "0.0001", "abc"])
def test_closing_a_bad_quantity_is_refused(account, btc, quantity):
    position = open_position(account, btc)
    with refused("invalid_quantity"):
        position_close(position_id=position.pk, quantity=quantity)


def test_closing_without_a_mark_price_is_refused(account, btc):
    position = open_position(account, btc)
    btc.mark_price = None
    btc.save()
    with refused("no_mark_price"):
        position_close(position_id=position.pk)


def test_closing_a_missing_position_is_not_found(db):
    with refused("not_found"):
        position_close(position_id=424242)


def _past_liquidation(account, btc, side="long"):
    """A position the mark has just put past its liquidation price, before the engine's
    sweep of that tick has liquidated it."""
    position = open_position(account, btc, side=side)
    lp = position.liquidation_price
    set_mark(btc, lp - D(1) if side == "long" else lp + D(1))
    return position


@pytest.mark.parametrize("side", ["long", "short"])
def test_a_position_past_its_liquidation_price_cannot_be_closed(account, btc, side):
    """Closing it would hand back the margin left above bankruptcy, which liquidation
    takes: the position is the engine's, however soon its sweep runs."""
    position = _past_liquidation(account, btc, side)
    with refused("position_liquidating"):
        position_close(position_id=position.pk)
    with refused("position_liquidating"):
        position_close(position_id=position.pk, quantity="0.1")


def test_the_refusal_names_the_mark_and_the_liquidation_price(account, btc):
    position = open_position(account, btc)  # LP 57,228.92 exactly, 57,229.0 on the tick
    set_mark(btc, "57200")
    with pytest.raises(DomainError) as info:
        position_close(position_id=position.pk)
    assert info.value.message.startswith(
        "The mark 57,200.0 has reached the liquidation price 57,229.0: "
    )


def test_a_reduce_only_order_on_a_position_past_its_liquidation_price_is_refused(account, btc):
    position = _past_liquidation(account, btc)
    for type, price in (("market", None), ("limit", "1")):
        with refused("position_liquidating"):
            order_place(
                account_id=account.pk,
                instrument_id=btc.pk,
                side="short",
                type=type,
                price=price,
                quantity="0.5",
                reduce_only=True,
                position_id=position.pk,
            )


def test_margin_cannot_rescue_a_position_past_its_liquidation_price(account, btc):
    position = _past_liquidation(account, btc)
    with refused("position_liquidating"):
        position_add_margin(position_id=position.pk, amount="5000")


def test_one_step_short_of_the_liquidation_price_a_position_still_closes(account, btc):
    position = open_position(account, btc)
    set_mark(btc, position.liquidation_price + btc.tick_size)
    position_add_margin(position_id=position.pk, amount="10")
    assert position_close(position_id=position.pk).status == "closed"
    assert_ledger_invariants()


def test_an_instructors_reset_closes_a_position_past_its_liquidation_price(account, btc):
    from liquidation.instructor import account_reset

    position = _past_liquidation(account, btc)
    account_reset(account_id=account.pk)
    assert Position.objects.get(pk=position.pk).status == "closed"
    assert balance(account) == account.classroom.starting_balance
    assert_ledger_invariants()


# --- margin ---------------------------------------------------------------------------


def test_adding_margin_moves_the_liquidation_price_away(account, btc):
    position = open_position(account, btc)  # LP ~57,228.9
    before = balance(account)
    changed = position_add_margin(position_id=position.pk, amount="500")
    assert changed.collateral.amount == D(2000)
    assert changed.collateral.initial_margin == D(1500)
    assert balance(account) == before - D(500)
    assert changed.liquidation_price == D("56224.8995983936")
    assert changed.bankruptcy_price == D(56000)
    assert changed.liquidation_price < position.liquidation_price
    assert LedgerTransaction.objects.filter(position_id=position.pk, kind="add_margin").count() == 1
    assert_ledger_invariants()


def test_adding_margin_to_a_short_moves_its_liquidation_price_up(account, btc):
    position = open_position(account, btc, side="short")
    changed = position_add_margin(position_id=position.pk, amount="500")
    assert changed.liquidation_price > position.liquidation_price
    assert changed.bankruptcy_price == D(64000)


@pytest.mark.parametrize(
    ("amount", "code"),
    [
        ("8485.00000001", "insufficient_balance"),  # free balance after opening: 8,485
        ("0", "invalid_amount"),
        ("-5", "invalid_amount"),
        ("abc", "invalid_amount"),
        ("1.000000001", "invalid_amount"),
        ("1e20", "invalid_amount"),
    ],
)
def test_adding_margin_refusals_write_nothing(account, btc, amount, code):
    position = open_position(account, btc)
    with refused(code):
        position_add_margin(position_id=position.pk, amount=amount)


def test_adding_the_whole_free_balance_is_allowed(account, btc):
    position = open_position(account, btc)
    position_add_margin(position_id=position.pk, amount="8485")
    assert balance(account) == 0


def test_adding_margin_to_a_closed_position_is_refused(account, btc):
    position = open_position(account, btc)
    position_close(position_id=position.pk)
    with refused("position_not_open"):
        position_add_margin(position_id=position.pk, amount="5")


def test_removing_margin_stops_at_the_initial_margin_at_the_mark(account, btc):
    position = open_position(account, btc, extra_collateral="500")  # 2,000 collateral
    assert removable_margin(position=position, collateral=D(2000)) == D(500)
    with refused("margin_removal_too_large"):
        position_remove_margin(position_id=position.pk, amount="500.00000001")
    before = balance(account)
    changed = position_remove_margin(position_id=position.pk, amount="500")
    assert changed.collateral.amount == D(1500)
    assert balance(account) == before + D(500)
    lp, bp = stored_prices(
        side="long",
        entry_price=D(60000),
        quantity=D("0.5"),
        collateral=D(1500),
        tiers=btc.margin_tiers(),
    )
    assert (changed.liquidation_price, changed.bankruptcy_price) == (lp, bp)
    assert changed.liquidation_price > position.liquidation_price
    assert_ledger_invariants()


def test_removing_margin_never_leaves_the_margin_balance_at_maintenance(account, btc):
    position = open_position(account, btc, extra_collateral="500")  # 2,000 collateral
    set_mark(btc, "57000")
    # MB = 2,000 - 1,500 = 500; MM = 28,500 * 0.4% = 114; IM at the mark 1,425.
    position.refresh_from_db()
    assert removable_margin(position=position, collateral=D(2000)) == D("385.99999999")
    with refused("margin_removal_too_large"):
        position_remove_margin(position_id=position.pk, amount="386")
    position_remove_margin(position_id=position.pk, amount="385.99999999")
    assert Collateral.objects.get(pk=position.pk).amount == D("1614.00000001")
    assert_ledger_invariants()


def test_removing_margin_never_moves_the_liquidation_price_past_the_stop_loss(account, btc):
    # 2,000 collateral: LP 56,224.9, so a stop-loss at 56,500 triggers before liquidation.
    position = open_position(account, btc, extra_collateral="500", stop_loss="56500")
    stop_loss = D(56500)
    assert position.liquidation_price is not None and position.liquidation_price < stop_loss
    # The initial margin at the mark alone would let 500 go, which would move the LP to
    # 57,228.9, above the stop-loss. At the stop-loss MB = 2,000 - 1,750 and MM = 113, so
    # about 137 may go (one price step and one money step short of it, rounded down).
    limit = removable_margin(position=position, collateral=D(2000))
    assert limit == D("136.99999998")
    with pytest.raises(DomainError) as info:
        position_remove_margin(position_id=position.pk, amount="500")
    assert info.value.code == "margin_removal_too_large"
    assert "136.99" in info.value.message and "stop-loss at 56,500.0" in info.value.message
    with refused("margin_removal_too_large"):
        position_remove_margin(position_id=position.pk, amount=limit + D("0.00000001"))

    changed = position_remove_margin(position_id=position.pk, amount=limit)
    assert changed.stop_loss == stop_loss
    assert changed.liquidation_price is not None and changed.liquidation_price < stop_loss
    # Where the stop-loss triggers, the position is not yet liquidated.
    assert not margin.is_liquidatable(
        side="long",
        entry_price=changed.entry_price,
        quantity=changed.quantity,
        collateral=changed.collateral.amount,
        mark_price=stop_loss,
        tiers=btc.margin_tiers(),
    )
    # Without a stop-loss, only the initial margin at the mark bounds the removal.
    position_set_tpsl(position_id=position.pk, stop_loss=None)
    position_remove_margin(position_id=position.pk, amount=D(500) - limit)
    assert Collateral.objects.get(pk=position.pk).amount == D(1500)
    assert_ledger_invariants()


def test_removing_margin_from_a_position_past_its_liquidation_price_is_refused(account, btc):
    position = open_position(account, btc)
    set_mark(btc, "57100")  # MB 50 < MM 114.2: past the liquidation price
    with refused("position_liquidating"):
        position_remove_margin(position_id=position.pk, amount="0.00000001")


@pytest.mark.parametrize(("amount", "code"), [("0", "invalid_amount"), ("x", "invalid_amount")])
def test_removing_margin_with_a_bad_amount_is_refused(account, btc, amount, code):
    position = open_position(account, btc, extra_collateral="500")
    with refused(code):
        position_remove_margin(position_id=position.pk, amount=amount)


def test_removing_margin_from_a_closed_position_is_refused(account, btc):
    position = open_position(account, btc, extra_collateral="500")
    position_close(position_id=position.pk)
    with refused("position_not_open"):
        position_remove_margin(position_id=position.pk, amount="1")


def test_removing_margin_without_a_mark_price_is_refused(account, btc):
    position = open_position(account, btc, extra_collateral="500")
    btc.mark_price = None
    btc.save()
    with refused("no_mark_price"):
        position_remove_margin(position_id=position.pk, amount="1")


# --- take-profit and stop-loss ----------------------------------------------------------


def test_set_tpsl_attaches_and_clears(account, btc):
    position = open_position(account, btc)
    changed = position_set_tpsl(position_id=position.pk, take_profit="62000", stop_loss="59000")
    assert (changed.take_profit, changed.stop_loss) == (D(62000), D(59000))
    cleared = position_set_tpsl(position_id=position.pk)
    assert (cleared.take_profit, cleared.stop_loss) == (None, None)
    short = open_position(account, btc, side="short")
    changed = position_set_tpsl(position_id=short.pk, take_profit="58000", stop_loss="61000")
    assert (changed.take_profit, changed.stop_loss) == (D(58000), D(61000))


@pytest.mark.parametrize(
    ("side", "take_profit", "stop_loss"),
    [
        ("long", "59000", None),
        ("long", None, "60500"),
        ("long", None, "57000"),  # below the liquidation price ~57,228.9
        ("short", "60500", None),
        ("short", None, "59000"),
        ("short", None, "63000"),  # above the liquidation price ~62,7xx
        ("long", "1e40", None),
        ("long", "62000.01", None),
    ],
)
def test_set_tpsl_refusals_write_nothing(account, btc, side, take_profit, stop_loss):
    position = open_position(account, btc, side=side, take_profit=None)
    with refused("invalid_price"):
        position_set_tpsl(position_id=position.pk, take_profit=take_profit, stop_loss=stop_loss)


def test_set_tpsl_checks_against_the_mark_not_the_entry(account, btc):
    position = open_position(account, btc)
    set_mark(btc, "61000")
    with refused("invalid_price"):
        position_set_tpsl(position_id=position.pk, take_profit="60500")  # above entry, below mark
    changed = position_set_tpsl(position_id=position.pk, stop_loss="60500")  # locks in profit
    assert changed.stop_loss == D(60500)


def test_set_tpsl_without_a_mark_price_is_refused(account, btc):
    position = open_position(account, btc)
    btc.mark_price = None
    btc.save()
    with refused("no_mark_price"):
        position_set_tpsl(position_id=position.pk, take_profit="62000")


def test_set_tpsl_on_a_closed_position_is_refused(account, btc):
    position = open_position(account, btc)
    position_close(position_id=position.pk)
    with refused("position_not_open"):
        position_set_tpsl(position_id=position.pk, take_profit="62000")


# --- orders ---------------------------------------------------------------------------


def place(account, instrument, **kwargs):
    arguments: dict[str, Any] = {"side": "long", "quantity": "0.1", "leverage": 10} | kwargs
    return order_place(account_id=account.pk, instrument_id=instrument.pk, **arguments)


def stop_loss_order(account, instrument, position, stop_price, quantity="0.5"):
    """A reduce-only stop order that sells a long position when the mark falls to it."""
    return place(
        account,
        instrument,
        side="short",
        type="stop",
        stop_price=stop_price,
        quantity=quantity,
        reduce_only=True,
        position_id=position.pk,
    )


def test_a_market_order_opens_a_position(account, btc):
    order = place(account, btc, client_order_id="bot-1")
    assert order.status == "filled"
    assert order.position is not None
    assert order.position.collateral.amount == D(600)
    assert Fill.objects.get(order=order).price == D(60000)
    assert_ledger_invariants()


def test_a_repeated_client_order_id_returns_the_first_order(account, btc):
    first = place(account, btc, client_order_id="bot-1")
    before = money_snapshot()
    again = place(account, btc, client_order_id=" bot-1 ", quantity="0.2")
    assert again.pk == first.pk
    assert money_snapshot() == before
    # Another account may reuse the same id.
    other = make_student(account.classroom)
    assert place(other, btc, client_order_id="bot-1").pk != first.pk


def test_a_numeric_client_order_id_is_kept_as_text(account, btc):
    order = place(account, btc, client_order_id=42)
    assert order.client_order_id == "42"
    assert place(account, btc, client_order_id="42").pk == order.pk


def test_a_too_long_client_order_id_is_refused(account, btc):
    with refused("invalid_order"):
        place(account, btc, client_order_id="x" * 65)


def test_a_limit_order_rests_holding_its_order_margin(account, btc):
    before = money_snapshot()
    order = place(account, btc, type="limit", price="59000", take_profit="61000")
    assert order.status == "resting"
    assert (order.price, order.take_profit, order.leverage) == (D(59000), D(61000), 10)
    after = money_snapshot()
    # 590 margin + 2.95 fee at the limit leave the free balance for the order's hold.
    assert after.accounts[account.pk] == before.accounts[account.pk] - D("592.95")
    assert after.counts["LedgerEntry"] == before.counts["LedgerEntry"] + 2
    assert after.counts["Position"] == before.counts["Position"]
    assert_ledger_invariants()


def test_a_stop_order_rests(account, btc):
    order = place(account, btc, side="short", type="stop", stop_price="58000")
    assert (order.status, order.stop_price) == ("resting", D(58000))


@pytest.mark.parametrize(
    ("side", "stop_price"),
    [("long", "60000"), ("long", "59000"), ("short", "60000"), ("short", "61000")],
)
def test_a_stop_the_mark_has_already_passed_is_refused(account, btc, side, stop_price):
    """A stop to buy at or below the mark (or to sell at or above it) would trigger at once."""
    with pytest.raises(DomainError) as info:
        place(account, btc, side=side, type="stop", stop_price=stop_price)
    assert (info.value.code, info.value.field) == ("invalid_price", "stop_price")
    assert not Order.objects.exists()


def test_a_limit_order_the_market_has_reached_fills_at_once_at_market(account, btc):
    """A buy limited at 70,000 with the mark at 60,000 fills now at 60,000 (plus half the
    spread), not later, and its position's prices follow that fill, not the limit."""
    btc.spread = D(2)
    btc.save(update_fields=["spread"])
    order = place(account, btc, type="limit", price="70000")
    assert (order.type, order.status, order.price) == ("limit", "filled", D(70000))
    position = Position.objects.get(pk=order.position_id)
    assert position.entry_price == D(60001)
    fill = Fill.objects.get(order=order)
    assert fill.price == D(60001)
    at_the_ask = place(account, btc, type="limit", price="60001")
    assert at_the_ask.status == "filled"
    below_the_ask = place(account, btc, type="limit", price="60000.9")
    assert below_the_ask.status == "resting"
    assert_ledger_invariants()


def test_a_quote_for_a_resting_order_measures_the_distance_from_its_entry(account, btc):
    quote = quote_open(
        account=account, instrument=btc, side="long", quantity="0.01", leverage=10,
        entry_price=D(50000),
    )  # fmt: skip

    def shown(price: D) -> D:  # the liquidation price as shown: on the tick, up for a long
        rounded = towards_entry(price, side="long", tick=btc.tick_size)
        assert rounded is not None
        return rounded

    assert quote.liquidation_price is not None
    assert quote.distance_to_liquidation == D(50000) - shown(quote.liquidation_price)
    at_market = quote_open(
        account=account, instrument=btc, side="long", quantity="0.01", leverage=10
    )
    assert at_market.liquidation_price is not None
    assert at_market.distance_to_liquidation == D(60000) - shown(at_market.liquidation_price)


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"type": "limit"}, "invalid_price"),
        ({"type": "stop"}, "invalid_price"),
        ({"type": "trailing"}, "invalid_order"),
        ({"type": "limit", "price": "0"}, "invalid_price"),
        ({"type": "limit", "price": "59000.05"}, "invalid_price"),
        ({"type": "limit", "price": "59000", "take_profit": "58000"}, "invalid_price"),
        ({"type": "limit", "price": "59000", "quantity": "2"}, "insufficient_balance"),
        ({"type": "limit", "price": "59000", "leverage": 0}, "invalid_leverage"),
        ({"type": "limit", "price": "59000", "quantity": "0.0001"}, "invalid_quantity"),
        ({"side": "up"}, "invalid_request"),
        ({"reduce_only": True}, "invalid_order"),
    ],
)
def test_order_place_refusals_write_nothing(account, btc, kwargs, code):
    with refused(code):
        place(account, btc, **kwargs)


def test_order_place_follows_the_trading_rules(classroom, account, btc):
    TradingAccount.objects.filter(pk=account.pk).update(trading_frozen=True)
    with refused("account_frozen"):
        place(account, btc, type="limit", price="59000")
    TradingAccount.objects.filter(pk=account.pk).update(trading_frozen=False)
    _disabled(classroom)
    with refused("trading_closed"):
        place(account, btc, type="limit", price="59000")
    with refused("trading_closed"):
        place(account, btc)


def test_order_place_refuses_a_missing_account_or_instrument(account, btc):
    with refused("not_found"):
        order_place(account_id=999999, instrument_id=btc.pk, side="long", quantity="0.1")
    with refused("not_found"):
        order_place(account_id=account.pk, instrument_id=999999, side="long", quantity="0.1")


def test_a_reduce_only_market_order_closes_part_of_its_position(account, btc):
    position = open_position(account, btc)
    order = place(
        account, btc, side="short", quantity="0.2", reduce_only=True, position_id=position.pk
    )
    assert (order.status, order.reduce_only, order.position_id) == ("filled", True, position.pk)
    position.refresh_from_db()
    assert position.quantity == D("0.3")
    assert Fill.objects.get(order=order).kind == "close"
    assert_ledger_invariants()


def test_a_reduce_only_limit_order_rests(account, btc):
    position = open_position(account, btc)
    order = place(
        account,
        btc,
        side="short",
        type="limit",
        price="62000",
        quantity="0.5",
        reduce_only=True,
        position_id=position.pk,
    )
    assert (order.status, order.leverage) == ("resting", 20)


def test_reduce_only_refusals_write_nothing(account, other_account, btc):
    eth = make_instrument(account.classroom, symbol="ETHUSDT", mark="3000")
    position = open_position(account, btc)
    theirs = open_position(other_account, btc)
    cases = [
        ({"side": "long", "position_id": position.pk}, "invalid_order"),
        ({"side": "short", "position_id": position.pk, "quantity": "0.6"}, "invalid_quantity"),
        ({"side": "short", "position_id": theirs.pk}, "not_found"),
        ({"side": "short", "position_id": 999999}, "not_found"),
        ({"side": "short", "position_id": position.pk, "instrument": eth}, "invalid_order"),
    ]
    for kwargs, code in cases:
        instrument = kwargs.pop("instrument", btc)
        with refused(code):
            place(account, instrument, reduce_only=True, **kwargs)
    position_close(position_id=position.pk)
    with refused("position_not_open"):
        place(account, btc, side="short", reduce_only=True, position_id=position.pk)


def test_a_reduce_only_stop_at_or_beyond_the_liquidation_price_is_refused(account, btc):
    position = open_position(account, btc)  # long 0.5 at 20x: LP 57,228.92, shown 57,229.0
    assert position.liquidation_price is not None
    for stop_price in ("57000", "57228.9"):
        with refused("invalid_price"):
            stop_loss_order(account, btc, position, stop_price)
    resting = stop_loss_order(account, btc, position, "57229")
    assert resting.status == "resting"


def test_removing_margin_keeps_a_resting_stop_order_ahead_of_the_liquidation_price(account, btc):
    position = open_position(account, btc, extra_collateral="500")  # LP 56,224.9
    assert removable_margin(position=position, collateral=D(2000)) == D(500)  # no stop yet
    stop_loss_order(account, btc, position, "56500")
    # As with a stop-loss at 56,500 on the position itself.
    limit = removable_margin(position=position, collateral=D(2000))
    assert limit == D("136.99999998")
    with pytest.raises(DomainError) as info:
        position_remove_margin(position_id=position.pk, amount="500")
    assert info.value.code == "margin_removal_too_large"
    assert "stop order at 56,500.0" in info.value.message
    changed = position_remove_margin(position_id=position.pk, amount=limit)
    assert changed.liquidation_price is not None and changed.liquidation_price < D(56500)
    assert_ledger_invariants()


def test_order_cancel_cancels_a_resting_order_only(account, btc):
    resting = place(account, btc, type="limit", price="59000")
    cancelled = order_cancel(order_id=resting.pk)
    assert cancelled.status == "cancelled"
    with refused("order_not_cancellable"):
        order_cancel(order_id=resting.pk)
    filled = place(account, btc)
    with refused("order_not_cancellable"):
        order_cancel(order_id=filled.pk)
    with refused("not_found"):
        order_cancel(order_id=999999)


def test_order_execute_fills_a_resting_opening_order_at_market(account, btc):
    order = place(account, btc, type="limit", price="59000", take_profit="61000")
    set_mark(btc, "58990")
    executed = order_execute(order_id=order.pk)
    assert executed.status == "filled"
    assert executed.position is not None
    assert executed.position.entry_price == D(58990)
    assert executed.position.take_profit == D(61000)
    assert Fill.objects.get(order=order).kind == "open"
    assert_ledger_invariants()
    # Executing again changes nothing.
    before = money_snapshot()
    assert order_execute(order_id=order.pk).status == "filled"
    assert money_snapshot() == before


def test_order_execute_fills_a_resting_reduce_only_order(account, btc):
    position = open_position(account, btc)
    order = place(
        account,
        btc,
        side="short",
        type="limit",
        price="62000",
        quantity="0.2",
        reduce_only=True,
        position_id=position.pk,
    )
    position_close(position_id=position.pk, quantity="0.4")  # only 0.1 left
    set_mark(btc, "62000")
    executed = order_execute(order_id=order.pk)
    assert executed.status == "filled"
    position.refresh_from_db()
    assert position.status == "closed"
    assert_ledger_invariants()


def test_a_triggered_reduce_only_stop_past_the_liquidation_price_keeps_resting(account, btc):
    """The engine liquidates before it triggers orders, but skips a position whose account is
    busy: its stop must not be rejected for good, or a mark that comes back leaves the
    position without it. The liquidation that follows cancels it."""
    position = open_position(account, btc)  # LP 57,228.92
    stop = place(
        account,
        btc,
        side="short",
        type="stop",
        stop_price="58000",
        quantity="0.5",
        reduce_only=True,
        position_id=position.pk,
    )
    set_mark(btc, "57200")  # past the stop and the liquidation price in one tick
    before = money_snapshot()
    assert order_execute(order_id=stop.pk).status == "resting"
    assert money_snapshot() == before
    set_mark(btc, "57900")  # back above the liquidation price, still past the stop
    assert order_execute(order_id=stop.pk).status == "filled"
    position.refresh_from_db()
    assert position.status == "closed"
    assert_ledger_invariants()


def test_the_whole_open_quantity_still_closes_after_the_lot_size_grew(account, btc):
    stopped = open_position(account, btc, quantity="0.005")
    stop = stop_loss_order(account, btc, stopped, "59000", quantity="0.005")
    closed = open_position(account, btc, quantity="0.005")
    reduced = open_position(account, btc, quantity="0.005")
    Instrument.objects.filter(pk=btc.pk).update(lot_size=D("0.01"))

    # A part of 0.005 is no whole number of the new lots; all of it is what is open.
    with refused("invalid_quantity"):
        position_close(position_id=closed.pk, quantity="0.002")
    assert position_close(position_id=closed.pk, quantity="0.005").status == "closed"
    order = place(
        account,
        btc,
        side="short",
        quantity="0.005",
        reduce_only=True,
        position_id=reduced.pk,
    )
    assert order.status == "filled"
    reduced.refresh_from_db()
    assert reduced.status == "closed"
    # A stop-loss resting as a reduce-only order for all of the position still fills.
    set_mark(btc, "58900")
    assert order_execute(order_id=stop.pk).status == "filled"
    stopped.refresh_from_db()
    assert stopped.status == "closed"
    assert_ledger_invariants()


def test_order_execute_rejects_an_order_the_rules_now_refuse(classroom, account, btc):
    order = place(account, btc, type="limit", price="59000")
    _disabled(classroom)
    before = money_snapshot()
    executed = order_execute(order_id=order.pk)
    assert executed.status == "rejected"
    assert "closed" in executed.reject_reason
    after = money_snapshot()
    # Only the hold came back, in one release: no position, fill or fee.
    assert after.accounts[account.pk] == before.accounts[account.pk] + D("592.95")
    assert after.counts["LedgerTransaction"] == before.counts["LedgerTransaction"] + 1
    assert after.counts["Position"] == before.counts["Position"]
    assert after.counts["Fill"] == before.counts["Fill"]
    assert after.pockets == before.pockets
    assert_ledger_invariants()


def test_order_execute_rejects_when_the_hold_and_the_balance_no_longer_pay(account, btc):
    order = place(account, btc, type="stop", stop_price="61000")
    account_adjust(account_id=account.pk, amount=D("-9386.95"), reason="Spent")
    set_mark(btc, "80000")  # the stop fills at market: 800 margin + 4 fee, 613.05 held
    executed = order_execute(order_id=order.pk)
    assert executed.status == "rejected"
    assert Position.objects.filter(account=account).count() == 0
    assert_ledger_invariants()


def test_order_execute_of_a_missing_order_is_not_found(db):
    with pytest.raises(DomainError) as info:
        order_execute(order_id=999999)
    assert info.value.code == "not_found"


@pytest.mark.parametrize(
    ("leverage", "expected", "one_lot_more"),
    [
        # 10,000 / (60,000 x (1/10 + 0.05%)) = 1.6583: margin 9,948 and fee 49.74 fit.
        (10, D("1.658"), "insufficient_balance"),
        # At 125x the balance would open 19.6, but only notional under 50,000 allows 125x.
        (125, D("0.833"), "leverage_too_high"),
    ],
)
def test_max_open_quantity_is_exactly_what_the_balance_and_the_tiers_allow(
    account, btc, leverage, expected, one_lot_more
):
    quantity = max_open_quantity(
        account=account, instrument=btc, leverage=leverage, entry_price=D(60000)
    )
    assert quantity == expected
    with refused(one_lot_more):
        place(account, btc, quantity=str(quantity + btc.lot_size), leverage=leverage)
    assert place(account, btc, quantity=str(quantity), leverage=leverage).status == "filled"
    assert_ledger_invariants()


def test_max_open_quantity_goes_beyond_the_last_tiers_notional_as_opening_does(account, btc):
    # The last bracket (from 12M, up to 25x) also holds every notional beyond its 70M.
    account = account_adjust(account_id=account.pk, amount=D("499990000"), reason="Endowment")
    quantity = max_open_quantity(account=account, instrument=btc, leverage=20, entry_price=D(60000))
    # 500M / (60,000 x (1/20 + 0.05%)) = 165,016.5017: a notional of 9.9 billion.
    assert quantity == D("165016.501")
    with refused("insufficient_balance"):
        place(account, btc, quantity=str(quantity + btc.lot_size), leverage=20)
    assert place(account, btc, quantity=str(quantity), leverage=20).status == "filled"
    assert_ledger_invariants()


def test_max_open_quantity_is_zero_above_the_caps_or_below_one_lot(classroom, account, btc):
    assert (
        max_open_quantity(account=account, instrument=btc, leverage=126, entry_price=D(60000)) == 0
    )
    TradingAccount.objects.filter(pk=account.pk).update(balance=D("0.5"))
    account.refresh_from_db()
    assert (
        max_open_quantity(account=account, instrument=btc, leverage=10, entry_price=D(60000)) == 0
    )


@pytest.mark.parametrize(
    ("kind", "memo", "description"),
    [
        ("grant", "Won the quiz", "Grant: Won the quiz"),
        ("insurance_adjust", "Crash lesson", "Insurance fund topped up or drawn down: Crash lesson"),
        ("deposit", "Starting balance", "Starting balance"),
        ("close", "Close 0.4 of position #2 at 2947.3: realised PnL -8.6, fee 0.59",
         "Close 0.4 of position #2 at 2947.3: realised PnL -8.6, fee 0.59"),
        ("deduct", "", "Deduction"),
    ],
)  # fmt: skip
def test_a_statement_line_says_what_happened_once(kind, memo, description):
    assert LedgerTransaction(kind=kind, memo=memo).description == description


def test_a_reduce_only_limit_fills_at_the_mark_it_was_checked_against(account, btc, monkeypatch):
    """The engine may move the mark between the limit check and the close: the close uses
    the instrument as checked, so a sell limited at 59,900 never fills at 59,000."""
    from positions import services

    position = position_open(
        account_id=account.pk, instrument_id=btc.pk, side="long", quantity="0.1", leverage=10
    )
    check = services.clean_order_prices

    def check_then_the_engine_moves_the_mark(**kwargs):
        prices = check(**kwargs)
        Instrument.objects.filter(pk=btc.pk).update(mark_price=D(59000))
        return prices

    monkeypatch.setattr(services, "clean_order_prices", check_then_the_engine_moves_the_mark)
    order = place(
        account, btc, side="short", type="limit", price="59900", quantity="0.1",
        reduce_only=True, position_id=position.pk,
    )  # fmt: skip
    assert order.status == "filled"
    assert Fill.objects.get(order=order).price == D(60000)  # the checked mark, above the limit
    assert_ledger_invariants()


# --- closes with a client_order_id ----------------------------------------------------


def close(**kwargs: Any) -> Any:
    """position_close, whose answer also carries ``close_order`` and ``repeated``."""
    return position_close(**kwargs)


def test_a_repeated_close_client_order_id_returns_the_first_close(account, btc):
    position = open_position(account, btc)
    first = close(position_id=position.pk, quantity="0.2", client_order_id="close-1")
    assert (first.quantity, first.repeated) == (D("0.3"), False)
    assert first.close_order.client_order_id == "close-1"
    assert (first.close_order.reduce_only, first.close_order.position_id) == (True, position.pk)
    before = money_snapshot()
    again = close(position_id=position.pk, quantity="0.20", client_order_id=" close-1 ")
    assert (again.quantity, again.repeated) == (D("0.3"), True)
    assert again.close_order.pk == first.close_order.pk
    assert money_snapshot() == before  # nothing closed twice
    assert Fill.objects.filter(position=position, kind="close").count() == 1
    assert_ledger_invariants()


def test_a_repeated_full_close_returns_the_closed_position_rather_than_a_refusal(account, btc):
    position = open_position(account, btc)
    first = close(position_id=position.pk, client_order_id="close-all")
    assert first.status == "closed"
    before = money_snapshot()
    for quantity in (None, "0.5"):  # the whole position, named or not
        again = close(position_id=position.pk, quantity=quantity, client_order_id="close-all")
        assert (again.status, again.repeated, again.close_order.pk) == (
            "closed",
            True,
            first.close_order.pk,
        )
    assert money_snapshot() == before
    assert_ledger_invariants()


def test_a_close_client_order_id_reused_for_another_close_is_refused(account, btc):
    position = open_position(account, btc)
    other = open_position(account, btc, side="short")
    order = close(position_id=position.pk, quantity="0.2", client_order_id="close-1").close_order
    with refused("client_order_id_reused"):
        close(position_id=position.pk, quantity="0.1", client_order_id="close-1")
    with refused("client_order_id_reused"):
        close(position_id=position.pk, client_order_id="close-1")  # not all of it
    with refused("client_order_id_reused"):
        close(position_id=other.pk, quantity="0.2", client_order_id="close-1")
    with pytest.raises(DomainError) as info:
        close(position_id=position.pk, quantity="0.1", client_order_id="close-1")
    assert info.value.message == (
        f"client_order_id 'close-1' was used for order {order.pk}, which closed another "
        "quantity, 0.2; send a new client_order_id for a new close."
    )
    assert info.value.fields == {"client_order_id": [info.value.message]}


def test_a_close_reusing_the_client_order_id_of_an_opening_order_is_refused(account, btc):
    opening = place(account, btc, client_order_id="bot-1")
    with refused("client_order_id_reused"):
        close(position_id=opening.position_id, client_order_id="bot-1")
    with pytest.raises(DomainError) as info:
        close(position_id=opening.position_id, client_order_id="bot-1")
    assert f"was used for order {opening.pk}, which is not a market close of position" in (
        info.value.message
    )
    assert Position.objects.get(pk=opening.position_id).status == "open"


def test_a_reduce_only_market_order_and_a_close_of_the_same_quantity_are_one_order(account, btc):
    position = open_position(account, btc)
    order = place(
        account,
        btc,
        side="short",
        quantity="0.2",
        reduce_only=True,
        position_id=position.pk,
        client_order_id="reduce-1",
    )
    before = money_snapshot()
    again = close(position_id=position.pk, quantity="0.2", client_order_id="reduce-1")
    assert (again.close_order.pk, again.repeated, again.quantity) == (order.pk, True, D("0.3"))
    assert money_snapshot() == before


def test_a_too_long_close_client_order_id_is_refused(account, btc):
    position = open_position(account, btc)
    with refused("invalid_order"):
        close(position_id=position.pk, client_order_id="x" * 65)
