"""Helpers of the engine tests: ticking an instrument now, and opening positions."""

from __future__ import annotations

from django.utils import timezone

from liquidation import engine
from liquidation.engine import TickResult
from liquidation.models import Scenario
from liquidation.services import scenario_start
from positions.models import Instrument, Position
from positions.services import position_open


def tick(instrument: Instrument) -> TickResult:
    """One tick of the instrument, as the task would run it right after being scheduled."""
    return engine.tick_instrument(instrument.pk, timezone.now())


def set_price(instrument: Instrument, price: object) -> TickResult:
    """Move the mark to ``price`` through a scenario and tick once."""
    scenario_start(instrument_id=instrument.pk, kind=Scenario.Kind.SET_PRICE, target_price=price)
    # A new slot for each call: slots are TICK_SECONDS long, so wait for the next one.
    from liquidation.models import PriceFeed

    PriceFeed.objects.filter(instrument=instrument).update(last_tick_at=None)
    result = tick(instrument)
    assert result.status == "ticked", result
    return result


def open_position(
    account, instrument, side: str, quantity: str, leverage: int, **kwargs
) -> Position:
    return position_open(
        account_id=account.pk,
        instrument_id=instrument.pk,
        side=side,
        quantity=quantity,
        leverage=leverage,
        **kwargs,
    )
