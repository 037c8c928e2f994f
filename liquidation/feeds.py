"""Where the next mark comes from: seeded random walks, replays, and scenarios on top.

A simulated walk is reproducible: the return of step ``n`` depends only on the feed's
seed and ``n`` (a ``random.Random`` seeded with ``"<seed>:<n>"``), so the same seed,
start price and number of steps always give the same path. Random draws are floats;
the price they produce is a ``Decimal`` on the instrument's tick grid before it is stored.

A replay plays an uploaded CSV of (seconds from the start, price) at ``replay_speed``
and loops when it reaches the end. A manual feed keeps the mark where it is; an
instructor moves it with a scenario.

When the mark is off the instrument's tick grid (an instructor changed the tick size), the
next tick only moves it onto the new grid, to the nearest tick, and the feed carries on from
there on the tick after: rounding down, as the walk does, would move the price by up to a
whole new tick and could liquidate high-leverage longs for no move of the market.

Scenarios take precedence over the feed while they are active: "set the price" applies
on the next tick; "move by P% over D seconds" moves the price linearly from the mark at
the scenario's start to ``start * (1 + P/100)`` as the ticks go by (with D = 0 the whole
move happens on the next tick). The feed resumes from wherever the scenario left the mark.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from accounts.money import MARK_CEILING, is_multiple, price, to_tick
from liquidation.models import PriceFeed, ReplayPoint, Scenario
from positions.models import Instrument


def on_grid(value: Decimal, instrument: Instrument) -> Decimal:
    """A positive price on the instrument's tick grid (never below one tick, nor above the
    ceiling)."""
    capped = min(value, MARK_CEILING)
    return max(to_tick(capped, instrument.tick_size, up=False), instrument.tick_size)


def nearest_on_grid(value: Decimal, instrument: Instrument) -> Decimal:
    """``value`` moved to the nearest tick of the instrument's grid (at most half a tick away,
    never below one tick)."""
    steps = (value / instrument.tick_size).to_integral_value(rounding=ROUND_HALF_UP)
    return max(price(steps * instrument.tick_size), instrument.tick_size)


def walk_return(*, seed: int, step: int, volatility: float, jump_probability: float,
                jump_size: float) -> float:  # fmt: skip
    """The relative move of step ``step`` of the walk seeded with ``seed``."""
    rng = random.Random(f"{seed}:{step}")
    move = rng.gauss(0.0, volatility)
    if rng.random() < jump_probability:
        move += (1 if rng.random() < 0.5 else -1) * jump_size * (0.5 + rng.random())
    # Keep one tick's move within (-50%, +100%) so the walk never reaches zero.
    return max(-0.5, min(1.0, move))


def simulated_price(feed: PriceFeed, current: Decimal, instrument: Instrument) -> Decimal:
    move = walk_return(
        seed=feed.seed,
        step=feed.step,
        volatility=float(feed.volatility),
        jump_probability=float(feed.jump_probability),
        jump_size=float(feed.jump_size),
    )
    factor = Decimal(repr(round(math.exp(math.log1p(move)), 12)))
    return on_grid(current * factor, instrument)


def replay_price(feed: PriceFeed, now: datetime) -> Decimal | None:
    """The price of the last replay point at or before the elapsed (scaled, looped) time."""
    last = (
        ReplayPoint.objects.filter(feed=feed)
        .order_by("-offset_seconds")
        .values_list("offset_seconds", flat=True)
        .first()
    )
    if last is None:
        return None
    started = feed.replay_started_at or now
    elapsed = Decimal(repr((now - started).total_seconds())) * feed.replay_speed
    if last > 0:
        elapsed %= last
    point = (
        ReplayPoint.objects.filter(feed=feed, offset_seconds__lte=max(elapsed, Decimal(0)))
        .order_by("-offset_seconds")
        .values_list("price", flat=True)
        .first()
    )
    return point


@dataclass(frozen=True)
class ScenarioStep:
    price: Decimal
    finished: bool


def scenario_price(
    scenario: Scenario, current: Decimal | None, now: datetime, instrument: Instrument
) -> ScenarioStep | None:
    """Where an active scenario puts the mark now, and whether it has reached its end."""
    if scenario.kind == Scenario.Kind.SET_PRICE:
        assert scenario.target_price is not None
        return ScenarioStep(on_grid(scenario.target_price, instrument), True)
    start = scenario.start_price if scenario.start_price is not None else current
    if start is None or scenario.percent is None:
        return None
    began = scenario.started_at or scenario.created_at
    duration = scenario.duration_seconds
    if duration <= 0:
        progress = Decimal(1)
    else:
        progress = min(Decimal(1), Decimal(repr((now - began).total_seconds())) / duration)
        progress = max(progress, Decimal(0))
    target = start * (1 + scenario.percent / 100 * progress)
    return ScenarioStep(on_grid(target, instrument), progress >= 1)


def next_price(
    feed: PriceFeed, instrument: Instrument, now: datetime
) -> tuple[Decimal | None, Scenario | None, bool]:
    """(next mark, the scenario that set it, whether that scenario is now finished)."""
    current = instrument.mark_price
    scenario = (
        Scenario.objects.filter(instrument=instrument, status=Scenario.Status.ACTIVE)
        .order_by("-created_at", "-id")
        .first()
    )
    if scenario is not None:
        step = scenario_price(scenario, current, now, instrument)
        if step is not None:
            return step.price, scenario, step.finished
    if current is not None and not is_multiple(current, instrument.tick_size):
        return nearest_on_grid(current, instrument), None, False
    if feed.kind == PriceFeed.Kind.SIMULATED:
        return (
            (None if current is None else simulated_price(feed, current, instrument)),
            None,
            False,
        )
    if feed.kind == PriceFeed.Kind.REPLAY:
        replayed = replay_price(feed, now)
        return (current if replayed is None else on_grid(replayed, instrument)), None, False
    return current, None, False
