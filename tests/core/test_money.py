"""The one rounding rule (accounts.money) and Decimal/NUMERIC everywhere money lives."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

import pytest
from django.apps import apps
from django.db import models

from accounts import money
from accounts.money import parse_decimal

D = Decimal


def test_money_a_trader_pays_rounds_up_and_pnl_rounds_down():
    assert money.money_charged(D("0.000000001")) == D("0.00000001")
    assert money.money_charged(D("4.800000000")) == D("4.8")
    assert money.money_pnl(D("0.000000019")) == D("0.00000001")
    assert money.money_pnl(D("-0.000000011")) == D("-0.00000002")
    assert money.money(D("0.000000005")) == D(0)  # half-even
    assert money.money(D("0.000000015")) == D("0.00000002")


def test_prices_land_on_the_tick_buys_up_sells_down():
    tick = D("0.1")
    assert money.to_tick(D("60000.01"), tick, up=True) == D("60000.1")
    assert money.to_tick(D("60000.09"), tick, up=False) == D(60000)
    assert money.to_tick(D("60000.1"), tick, up=True) == D("60000.1")
    assert money.price_up(D("1.00000000001")) == D("1.0000000001")
    assert money.price_down(D("1.00000000019")) == D("1.0000000001")


def test_rounding_never_raises_on_large_finite_values():
    huge = D("123456789012345678901234567890.123456789")
    assert money.money(huge) == D("123456789012345678901234567890.12345679")
    assert money.money_charged(huge) == D("123456789012345678901234567890.12345679")
    assert money.money_pnl(huge) == D("123456789012345678901234567890.12345678")
    assert money.price(huge) == huge


@pytest.mark.parametrize(
    ("value", "step", "expected"),
    [
        (D("0.003"), D("0.001"), True),
        (D("0.0035"), D("0.001"), False),
        (D("1E+40"), D("0.001"), False),  # too large to tell: refused, never an error
        (D(5), D(0), False),
    ],
)
def test_is_multiple(value, step, expected):
    assert money.is_multiple(value, step) is expected


@pytest.mark.parametrize(
    ("fills", "expected"),
    [
        ([("0.25", "61000"), ("0.25", "59000")], D(60000)),
        ([("0.1", "59000.1"), ("0.3", "59000.2")], D("59000.175")),  # exact, off the tick
        ([("0.1", "59000"), ("0.2", "58500")], D("58666.6666666667")),  # 58,666.666...
        ([("0.1", "1.0000000001"), ("0.1", "1")], D("1.0000000000")),  # a tie: to even
        ([("0.1", "1.0000000003"), ("0.1", "1")], D("1.0000000002")),  # a tie: to even
        ([("0.003", "42")], D(42)),
    ],
)
def test_an_average_price_is_exact_or_rounded_half_even_at_the_places_prices_are_kept_to(
    fills, expected
):
    total = sum((D(q) * D(p) for q, p in fills), D(0))
    quantity = sum((D(q) for q, _ in fills), D(0))
    assert money.average_price(total, quantity) == expected


def test_places_counts_written_decimals():
    assert money.places(D("0.010")) == 2
    assert money.places(D("1E+3")) == 0
    assert money.places(D("0.00000001")) == 8
    # Far below what the context's normalisation keeps: not rounded away to "no places".
    assert money.places(D("1E-9999999")) == 9999999
    assert money.places(D("-4.5E-999999")) == 1000000


def test_an_amount_too_small_for_the_columns_is_refused_not_moved_as_zero():
    from accounts.errors import InvalidAmount
    from accounts.services import clean_amount

    with pytest.raises(InvalidAmount, match="at most 8 decimal places"):
        clean_amount("1e-9999999")


def test_no_float_field_anywhere():
    floats = [
        f"{model._meta.label}.{field.name}"
        for model in apps.get_models()
        for field in model._meta.get_fields()
        if isinstance(field, models.FloatField)
    ]
    assert floats == []


@pytest.mark.parametrize(
    ("label", "fields", "digits"),
    [
        ("accounts.TradingAccount", ["balance"], money.MONEY_DIGITS),
        ("accounts.ClassroomPocket", ["balance"], money.POCKET_DIGITS),
        ("accounts.LedgerEntry", ["amount"], money.MONEY_DIGITS),
        ("positions.Collateral", ["amount", "initial_margin"], money.MONEY_DIGITS),
        ("positions.Position", ["realized_pnl", "fees_paid"], money.MONEY_DIGITS),
        (
            "positions.Position",
            ["entry_price", "liquidation_price", "bankruptcy_price", "exit_price"],
            money.PRICE_DIGITS,
        ),
        ("positions.Position", ["quantity", "opened_quantity"], money.QUANTITY_DIGITS),
        ("positions.Fill", ["fee", "realized_pnl"], money.MONEY_DIGITS),
        ("positions.Instrument", ["taker_fee_rate"], money.RATE_DIGITS),
        ("positions.MarginTier", ["mmr"], money.RATE_DIGITS),
    ],
)
def test_money_columns_are_numeric_with_the_shared_shapes(label, fields, digits):
    model = apps.get_model(label)
    for name in fields:
        field = model._meta.get_field(name)
        assert isinstance(field, models.DecimalField), name
        assert (field.max_digits, field.decimal_places) == (
            digits["max_digits"],
            digits["decimal_places"],
        ), name


def test_plain_writes_numbers_without_exponent_or_trailing_zeros():
    from accounts.money import plain

    assert plain(Decimal("60000.0000000000")) == "60000"
    assert plain(Decimal("0.50000000")) == "0.5"
    assert plain(Decimal("1E+5")) == "100000"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0.001", "0.001"), (" 12.5 ", "12.5"), ("-3", "-3"), ("+0.5", "0.5"), (".5", "0.5"),
     ("1e-3", "0.001"), ("1E+2", "1E+2"), ("NaN", "NaN"), ("-Infinity", "-Infinity")],
)  # fmt: skip
def test_parse_decimal_reads_numbers_written_with_ascii_digits(text, expected):
    assert str(parse_decimal(text)) == str(Decimal(expected))


@pytest.mark.parametrize("text", ["1_000", "\uff11", "\u0661\u0662", "1.2.3", "", "0x10", "1 000"])
def test_parse_decimal_refuses_what_decimal_would_reinterpret(text):
    with pytest.raises(InvalidOperation):
        parse_decimal(text)


@pytest.mark.parametrize(
    ("text", "written"),
    [("10", True), (" 10 ", True), ("-3", True), ("+5", True), ("10.0", True), ("10.", True),
     ("1_0", False), ("\uff11\uff10", False), ("\u0661\u0660", False), ("\u0967", False),
     ("2.5", False), ("1e1", False), ("", False), ("0x10", False), ("1 0", False)],
)  # fmt: skip
def test_a_whole_number_is_written_with_ascii_digits(text, written):
    """The one rule of the API's ``WholeNumberInput`` and the forms' ``WholeNumberField``:
    what Python's ``int`` would also read ("1_0" as 10, other scripts' digits) is refused."""
    assert money.is_written_whole_number(text) is written
