"""Number formatting for the learner pages: prices by tick size, money by currency. Decimal only."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation

from django import template
from django.utils import timezone
from django.utils.timesince import timesince

from accounts.money import currency_places, exact_price_text, places, shown, towards_entry
from positions.models import Instrument

register = template.Library()


def _decimal(value: object) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        result = value if isinstance(value, Decimal) else Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return result if result.is_finite() else None


def _fixed(value: Decimal, digits: int, *, signed: bool = False) -> str:
    # The same rounding as the services' messages (accounts.money.shown): half-even, no "-0".
    quantized = shown(value, digits)
    text = f"{quantized:,.{digits}f}"
    return f"+{text}" if signed and quantized > 0 else text


def price_places(instrument: Instrument | Decimal | None) -> int:
    tick = instrument.tick_size if isinstance(instrument, Instrument) else instrument
    return places(tick) if tick else 2


@register.filter
def price(value: object, instrument: Instrument | Decimal | None = None) -> str:
    """A price on the instrument's tick grid: ``{{ p|price:position.instrument }}``."""
    number = _decimal(value)
    if number is None:
        return "—"
    return _fixed(number, price_places(instrument))


@register.filter
def exact_price(value: object, instrument: Instrument | Decimal | None = None) -> str:
    """A price on the instrument's tick places, with every further place it has (up to the 10
    prices are kept to): an average exit price off the tick shows as it is, 59,000.175."""
    number = _decimal(value)
    if number is None:
        return "—"
    tick = instrument.tick_size if isinstance(instrument, Instrument) else instrument
    return exact_price_text(number, tick)


@register.filter
def risk_price(value: object, position: object) -> str:
    """A liquidation or bankruptcy price as the API gives it: on the tick, rounded towards the
    entry (``towards_entry``). ``position`` is anything with a ``side`` and an
    ``instrument``: a position, or the order a preview quotes."""
    number = _decimal(value)
    instrument = getattr(position, "instrument", None)
    side = getattr(position, "side", None)
    if number is None or not isinstance(instrument, Instrument) or side is None:
        return price(value, instrument if isinstance(instrument, Instrument) else None)
    return price(towards_entry(number, side=str(side), tick=instrument.tick_size), instrument)


@register.filter
def money(value: object, currency: str | None = None) -> str:
    """An amount in the classroom's currency: ``{{ x|money:classroom.currency }}``."""
    number = _decimal(value)
    if number is None:
        return "—"
    return _fixed(number, currency_places(currency))


@register.filter
def pnl(value: object, currency: str | None = None) -> str:
    """Like ``money`` with an explicit plus sign on gains."""
    number = _decimal(value)
    if number is None:
        return "—"
    return _fixed(number, currency_places(currency), signed=True)


@register.filter
def exact_pnl(value: object, currency: str | None = None) -> str:
    """Like ``pnl``, with every further place the amount has: a margin change of 0.001 USDT
    is +0.001 on the timeline, not +0.00."""
    number = _decimal(value)
    if number is None:
        return "—"
    return _fixed(number, max(currency_places(currency), places(number)), signed=True)


@register.filter
def pct(value: object, signed: bool = False) -> str:
    number = _decimal(value)
    if number is None:
        return "—"
    return _fixed(number, 2, signed=bool(signed)) + "%"


@register.filter
def share_pct(value: object) -> str:
    """A share (0.04) shown as a percentage ("4.00%"): margin ratios are kept as shares,
    while ``pct`` is for numbers that are percentages already."""
    number = _decimal(value)
    if number is None:
        return "—"
    return pct(number * 100)


@register.filter
def qty(value: object, instrument: Instrument | None = None) -> str:
    number = _decimal(value)
    if number is None:
        return "—"
    # A quantity from before the lot size grew (an open position's) keeps its own digits:
    # rounded to the new lot it would show a size the student cannot close.
    digits = max(places(instrument.lot_size), places(number)) if instrument else places(number)
    return _fixed(number, digits)


def _as_shown(value: object, currency: str | None) -> Decimal | None:
    """The number as ``money`` (or, with no currency, ``pct``) rounds it for display."""
    number = _decimal(value)
    if number is None:
        return None
    return shown(number, currency_places(currency))


@register.filter
def tone(value: object, currency: str | None = None) -> str:
    """A CSS class for a signed number as it is shown: gain, loss, or flat when it shows as
    zero (a loss of a tenth of a cent is "0.00", and is not painted red):
    ``{{ pnl|tone:currency }}``, or ``{{ percent|tone }}``."""
    shown = _as_shown(value, currency)
    if shown is None or shown == 0:
        return "flat"
    return "gain" if shown > 0 else "loss"


@register.filter
def nonzero(value: object, currency: str | None = None) -> bool:
    """Whether an amount shows as something other than zero."""
    shown = _as_shown(value, currency)
    return shown is not None and shown != 0


@register.filter
def gauge(value: object) -> str:
    """A margin ratio (a share, 1 = liquidation) clamped to [0, 1] for a ``<meter>``."""
    number = _decimal(value)
    if number is None:
        return "1"
    return str(min(max(number, Decimal(0)), Decimal(1)).quantize(Decimal("0.0001")))


@register.filter
def ago(moment: datetime | None) -> str:
    """How long ago, as people say it: "just now" within the first minute, then Django's
    "5 minutes ago", "1 hour, 3 minutes ago"."""
    if moment is None:
        return ""
    if timezone.now() - moment < timedelta(minutes=1):
        return "just now"
    return f"{timesince(moment)} ago"
