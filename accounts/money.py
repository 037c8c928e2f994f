"""The one place where Ringfence rounds money, prices, quantities and rates.

Every amount is a ``Decimal`` and every column ``NUMERIC``; floats never touch money.
The rules, applied by the services (never by views, serializers or templates):

- **Money** (balances, collateral, fees, PnL, ledger amounts) is kept to 8 decimal places.
  Amounts charged to a trader round *against the trader* so the house never pays a
  rounding difference: fees and initial margin round **up**, realised PnL rounds **down**
  (towards minus infinity). Amounts that are only shown or split pro rata (the collateral
  released by a partial close) round half-even. Every ledger leg is quantised by one of
  these rules before it is posted; ``ledger_post`` refuses a leg that is not, and a
  transaction that does not sum to exactly zero.
- **Prices** are kept to 10 decimal places. Fill prices land on the instrument's tick:
  a buy fills at ``mark + spread/2`` rounded **up** to the tick, a sell at
  ``mark - spread/2`` rounded **down**. A stored liquidation price rounds towards the
  mark (a long's **up**, a short's **down**) so the engine's range search can never miss
  a breached position; the exact margin test is re-checked before any liquidation. A
  stored bankruptcy price rounds half-even. An average of fill prices (a position's average
  exit price) is exact, or rounded half-even to 10 places once (``average_price``). Margin
  maths in between works on exact values (40 significant digits, ``positions.margin``);
  only results are rounded here.
- **Quantities** are kept to 8 places and must be whole multiples of the lot size; they
  are validated, never rounded.
- **Rates** (fees, maintenance rates, spreads as a share) are kept to 8 places.

What people read (messages, ledger memos, timelines) is rounded for reading only, never
stored as an amount: money to the currency's places (cents for paper dollars), prices to the
instrument's tick (``money_text``, ``price_text``; ``memo_money`` for memo texts); an average
price off the tick with every further place it has (``exact_price_text``). An amount a student
chose to move (a margin change) is told with every place it has (``exact_money_text``; in a
memo ``plain``): a message that rounds 0.001 to "0.00" would say nothing moved.

Rounding never raises for a finite value, however large: quantising happens in a context
wide enough for any column, and too-large values are refused by the input cleaners (and the
column sizes) rather than by an arithmetic error.
"""

from __future__ import annotations

import re
from decimal import (
    MAX_EMAX,
    MAX_PREC,
    MIN_EMIN,
    ROUND_05UP,
    ROUND_CEILING,
    ROUND_FLOOR,
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    InvalidOperation,
)
from typing import TypedDict

MONEY_PLACES = 8
PRICE_PLACES = 10
QUANTITY_PLACES = 8
RATE_PLACES = 8

MONEY_STEP = Decimal(1).scaleb(-MONEY_PLACES)
PRICE_STEP = Decimal(1).scaleb(-PRICE_PLACES)
QUANTITY_STEP = Decimal(1).scaleb(-QUANTITY_PLACES)
RATE_STEP = Decimal(1).scaleb(-RATE_PLACES)


class Digits(TypedDict):
    max_digits: int
    decimal_places: int


# Column shapes, shared by every model that stores one of these.
MONEY_DIGITS = Digits(max_digits=24, decimal_places=MONEY_PLACES)
# A classroom pocket sums amounts of every account (the house pays each starting balance),
# so it has room for a billion free balances at their largest (MAX_AMOUNT each).
POCKET_DIGITS = Digits(max_digits=34, decimal_places=MONEY_PLACES)
PRICE_DIGITS = Digits(max_digits=28, decimal_places=PRICE_PLACES)
QUANTITY_DIGITS = Digits(max_digits=24, decimal_places=QUANTITY_PLACES)
RATE_DIGITS = Digits(max_digits=12, decimal_places=RATE_PLACES)

ZERO = Decimal(0)

# The largest amount a single input or a free balance may reach: well inside the columns.
MAX_AMOUNT = Decimal(10) ** 15

# What a money column holds: every stored amount (a free balance, collateral, an order's
# hold, a ledger leg, a realised PnL) is below this in size. Profits can carry a free balance
# past MAX_AMOUNT; a movement that would carry an amount past this is refused instead.
MONEY_LIMIT = Decimal(10) ** (MONEY_DIGITS["max_digits"] - MONEY_DIGITS["decimal_places"])

# The highest mark price. Far above any classroom's prices; a walk compounding without end,
# or a typo in a scenario, a replay or a new instrument's mark, stops here instead of
# overflowing the price columns.
MARK_CEILING = Decimal(10) ** 12

# Wide enough to quantise any finite amount a calculation can produce from valid inputs.
_WIDE = Context(prec=80)
_UNBOUNDED = Context(prec=MAX_PREC, Emin=MIN_EMIN, Emax=MAX_EMAX)


def money(value: Decimal | int | str) -> Decimal:
    """Money shown or split pro rata: half-even to 8 places."""
    return Decimal(value).quantize(MONEY_STEP, rounding=ROUND_HALF_EVEN, context=_WIDE)


def money_charged(value: Decimal) -> Decimal:
    """Money a trader pays (fees, initial margin): rounded up."""
    return value.quantize(MONEY_STEP, rounding=ROUND_CEILING, context=_WIDE)


def money_pnl(value: Decimal) -> Decimal:
    """Realised PnL: rounded towards minus infinity, against the trader."""
    return value.quantize(MONEY_STEP, rounding=ROUND_FLOOR, context=_WIDE)


def price(value: Decimal) -> Decimal:
    return value.quantize(PRICE_STEP, rounding=ROUND_HALF_EVEN, context=_WIDE)


def price_up(value: Decimal) -> Decimal:
    return value.quantize(PRICE_STEP, rounding=ROUND_CEILING, context=_WIDE)


def price_down(value: Decimal) -> Decimal:
    return value.quantize(PRICE_STEP, rounding=ROUND_FLOOR, context=_WIDE)


# A quotient worked out to far more digits than any price has, rounded so that rounding it
# again to PRICE_PLACES gives what rounding the exact quotient once would: ROUND_05UP keeps a
# last digit of 0 or 5 only where the quotient is exactly that, never for a truncated tail.
_QUOTIENT = Context(prec=80, rounding=ROUND_05UP)


def average_price(total: Decimal, quantity: Decimal) -> Decimal:
    """A quantity-weighted average price: ``total`` (the sum of quantity x price over some
    fills) over their ``quantity``. Exact when it has at most the 10 places prices are kept
    to, else rounded half-even there, once (58,666.666... is 58666.6666666667)."""
    return price(_QUOTIENT.divide(total, quantity))


def to_tick(value: Decimal, tick: Decimal, *, up: bool) -> Decimal:
    """Round a price onto the tick grid, up for buys and down for sells."""
    steps = (value / tick).to_integral_value(rounding=ROUND_CEILING if up else ROUND_FLOOR)
    return price(steps * tick)


def is_multiple(value: Decimal, step: Decimal) -> bool:
    """Whether ``value`` lies on the grid of ``step``; False for values too large to tell."""
    if step <= 0:
        return False
    try:
        return (value % step) == 0
    except InvalidOperation:  # the quotient has more digits than the context holds
        return False


def places(value: Decimal) -> int:
    """Number of decimal places written in ``value`` (``Decimal('0.010')`` has 3)."""
    # Normalised without the default context's exponent limits, which would round a value
    # as small as 1E-9999999 to 0 and so report it as having no places at all.
    exponent = value.normalize(_UNBOUNDED).as_tuple().exponent
    return max(0, -int(exponent))


def plain(value: Decimal) -> str:
    """A number as people write it in messages: no exponent, no trailing zeros (60000, 0.5)."""
    return f"{value.normalize():f}"


# Digits as a bot or a form writes them: optional sign, ASCII digits, one point, an optional
# exponent. Python's Decimal also reads "1_000" and full-width or other non-ASCII digits;
# an amount typed that way is refused, not silently reinterpreted.
_WRITTEN_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_SPECIAL = {"nan", "snan", "inf", "infinity"}


def parse_decimal(value: object) -> Decimal:
    """A Decimal from user input; raises ``InvalidOperation`` unless it is written as above.

    NaN and infinities parse (as Decimal reads them) so that callers can refuse them with
    their own message.
    """
    if isinstance(value, Decimal):
        return value
    text = str(value).strip()
    if not _WRITTEN_NUMBER.fullmatch(text) and text.lower().lstrip("+-") not in _SPECIAL:
        raise InvalidOperation(f"not a number: {text[:40]!r}")
    return Decimal(text)


# A whole number as a bot or a form writes it: optional sign, ASCII digits, and a point
# followed only by zeros ("10", "-3", "10.0"), the forms Django's and DRF's integer fields
# read. Python's ``int``, under both, also reads "1_0" and other scripts' digits (full-width
# or Arabic-Indic ones): refused, as in amounts, rather than read as 10.
_WRITTEN_WHOLE_NUMBER = re.compile(r"[+-]?[0-9]+(?:\.0*)?")


def is_written_whole_number(text: str) -> bool:
    """Whether ``text`` (surrounding blanks aside) is a whole number written as above."""
    return _WRITTEN_WHOLE_NUMBER.fullmatch(text.strip()) is not None


# Decimal places shown per currency; paper dollars show cents.
CURRENCY_PLACES = {"USDT": 2, "USDC": 2, "USD": 2, "EUR": 2, "BTC": 8, "ETH": 6}
DEFAULT_CURRENCY_PLACES = 2


def currency_places(currency: str | None) -> int:
    return CURRENCY_PLACES.get(currency or "", DEFAULT_CURRENCY_PLACES)


def shown(value: Decimal, digits: int, *, down: bool = False) -> Decimal:
    """``value`` rounded half-even (or down) to ``digits`` places for display, never "-0"."""
    rounded = value.quantize(
        Decimal(1).scaleb(-digits), rounding=ROUND_FLOOR if down else ROUND_HALF_EVEN, context=_WIDE
    )
    return abs(rounded) if rounded == 0 else rounded


def money_text(value: Decimal, currency: str | None, *, down: bool = False) -> str:
    """Money in a message as the pages show it: 59,852.37 (USDT), 0.00123400 (BTC). ``down``
    for a limit the reader may type back ("at most ..."), which must not round above it."""
    digits = currency_places(currency)
    return f"{shown(value, digits, down=down):,.{digits}f}"


def exact_money_text(value: Decimal, currency: str | None) -> str:
    """Money as ``money_text`` writes it, with every further place it has (money is kept to
    8): an amount a student moved, told as it moved. 0.001 USDT added to a collateral moved
    0.001, not the "0.00" its cents would say; 1,234.50 stays in cents."""
    digits = max(currency_places(currency), places(value))
    return f"{shown(value, digits):,.{digits}f}"


def price_text(value: Decimal, tick: Decimal | None) -> str:
    """A price in a message on the instrument's tick grid: 57,228.9 for a 0.1 tick."""
    digits = places(tick) if tick else 2
    return f"{shown(value, digits):,.{digits}f}"


def exact_price_text(value: Decimal, tick: Decimal | None) -> str:
    """A price as ``price_text`` writes it, with every further digit it has: a level set on
    a finer grid, before a tick-size change, shows as it was (59,012.3 on a 50 tick)."""
    step = Decimal(1).scaleb(-places(value))
    return price_text(value, step if tick is None or places(value) > places(tick) else tick)


def memo_money(value: Decimal, currency: str | None) -> str:
    """Money in a ledger memo: rounded to the currency's places, written plainly (6, -118.77),
    since a memo is also read by bots and exported as CSV, where separators get in the way."""
    return plain(shown(value, currency_places(currency)))


def towards_entry(value: Decimal | None, *, side: str, tick: Decimal) -> Decimal | None:
    """A liquidation or bankruptcy price on the instrument's tick grid, rounded towards the
    entry (up for a long, down for a short): the mark reaches the price shown no later than
    the exact one, so whoever acts at the shown price is never late. Pages and the API
    show these prices the same way."""
    return None if value is None else to_tick(value, tick, up=side == "long")
