"""Services instructors use to move their market: scenarios, price shocks and replay uploads.

The engine applies them on its next tick (see ``liquidation.feeds``); nothing here
touches a position or money.
"""

from __future__ import annotations

import csv
import io
import itertools
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

from django.db import transaction
from django.utils import timezone

from accounts import errors
from accounts.money import PRICE_PLACES, PRICE_STEP, parse_decimal, places, plain, price
from liquidation.feeds import MARK_CEILING
from liquidation.models import PriceFeed, ReplayPoint, Scenario
from positions.models import Instrument

MAX_REPLAY_POINTS = 100_000
MAX_REPLAY_SECONDS = Decimal(10 * 366 * 24 * 3600)
# Times in seconds are read up to here: room for Unix timestamps, even in milliseconds.
MAX_OFFSET = Decimal(10) ** 15
OFFSET_STEP = Decimal("0.001")  # the places ReplayPoint.offset_seconds keeps


def _instrument(instrument_id: int) -> Instrument:
    try:
        return Instrument.objects.select_for_update(no_key=True).get(pk=instrument_id)
    except Instrument.DoesNotExist:
        raise errors.NotFound("No such instrument.", field="instrument") from None


def _decimal(
    value: object, *, field: str, kept_places: int | None = None, what: str = ""
) -> Decimal:
    try:
        result = parse_decimal(value)
    except (InvalidOperation, ValueError):
        raise errors.DomainError("Enter a number.", field=field) from None
    if not result.is_finite() or result.copy_abs() >= Decimal(10) ** 12:
        raise errors.DomainError("Enter a finite number of sensible size.", field=field)
    if kept_places is not None and places(result) > kept_places:
        # The scenario's column would round it (or, for 1e-9999999, not take it at all).
        raise errors.DomainError(
            f"Use at most {kept_places} decimal places for the {what}.", field=field
        )
    return result


@transaction.atomic
def scenario_start(
    *,
    instrument_id: int,
    kind: str,
    percent: object = None,
    target_price: object = None,
    duration_seconds: object = 0,
    created_by_id: int | None = None,
) -> Scenario:
    """Start a scenario on an instrument, cancelling any active one.

    ``kind="move"``: move the mark by ``percent`` (e.g. -30) over ``duration_seconds``
    (0: on the next tick), starting from the current mark. ``kind="set_price"``: put the
    mark at ``target_price`` on the next tick.
    """
    instrument = _instrument(instrument_id)
    now = timezone.now()
    duration = _decimal(
        duration_seconds or 0, field="duration_seconds", kept_places=3, what="duration"
    )
    if duration < 0 or duration > 86_400:
        raise errors.DomainError(
            "The duration must be between 0 and 86400 seconds.", field="duration_seconds"
        )
    scenario = Scenario(
        instrument=instrument,
        kind=kind,
        duration_seconds=duration,
        created_by_id=created_by_id,
        created_at=now,
        started_at=now,
    )
    if kind == Scenario.Kind.MOVE:
        pct = _decimal(percent, field="percent", kept_places=4, what="move")
        if not Decimal(-99) <= pct <= Decimal(1000) or pct == 0:
            raise errors.DomainError(
                "The move must be between -99% and +1000%, and not zero.", field="percent"
            )
        if instrument.mark_price is None:
            raise errors.NoMarkPrice(f"{instrument.symbol} has no price to move from yet.")
        scenario.percent = pct
        scenario.start_price = instrument.mark_price
    elif kind == Scenario.Kind.SET_PRICE:
        target = _decimal(
            target_price, field="target_price", kept_places=PRICE_PLACES, what="price"
        )
        if target <= 0:
            raise errors.InvalidPrice("The price must be positive.", field="target_price")
        if target > MARK_CEILING:
            raise errors.InvalidPrice(
                f"The price must be at most {MARK_CEILING:,}.", field="target_price"
            )
        scenario.target_price = target
        scenario.start_price = instrument.mark_price
    else:
        raise errors.DomainError("The scenario must be 'move' or 'set_price'.", field="kind")
    # The engine ticks an instrument through its feed: one without a feed (and without a
    # mark yet) is never ticked, and a switched-off feed is not ticked at all, so the
    # scenario would never move the price. A manual feed keeps the mark where it leaves it.
    feed, _ = PriceFeed.objects.get_or_create(
        instrument=instrument, defaults={"kind": PriceFeed.Kind.MANUAL}
    )
    if not feed.is_active:
        raise errors.DomainError(
            f"The price feed of {instrument.symbol} is switched off, so the engine does not "
            "tick it and no scenario would move its price: switch the feed on (its “Is "
            "active” box, on the instrument's page) first."
        )
    Scenario.objects.filter(instrument=instrument, status=Scenario.Status.ACTIVE).update(
        status=Scenario.Status.CANCELLED, finished_at=now
    )
    scenario.save()
    return scenario


def price_shock(
    *,
    instrument_id: int,
    percent: object,
    over_seconds: object = 0,
    created_by_id: int | None = None,
) -> Scenario:
    """Move an instrument's mark by ``percent`` over ``over_seconds`` (0: the next tick)."""
    return scenario_start(
        instrument_id=instrument_id,
        kind=Scenario.Kind.MOVE,
        percent=percent,
        duration_seconds=over_seconds,
        created_by_id=created_by_id,
    )


@transaction.atomic
def scenario_stop(*, scenario_id: int) -> Scenario:
    """Cancel an active scenario; the mark stays where it is and the feed resumes from it."""
    scenario = Scenario.objects.select_for_update(no_key=True).filter(pk=scenario_id).first()
    if scenario is None:
        raise errors.NotFound("No such scenario.")
    if scenario.status == Scenario.Status.ACTIVE:
        scenario.status = Scenario.Status.CANCELLED
        scenario.finished_at = timezone.now()
        scenario.save(update_fields=["status", "finished_at"])
    return scenario


def _offsets(rows: list[tuple[str, str]]) -> list[tuple[Decimal, Decimal]]:
    """(seconds from the first row, price) from rows of (timestamp or offset, price)."""
    parsed: list[tuple[Decimal, Decimal]] = []
    first_time: datetime | None = None
    for number, (when, value) in enumerate(rows, start=1):
        when = when.strip()
        try:
            offset = Decimal(when)
            if not offset.is_finite():
                raise InvalidOperation
            if offset.copy_abs() >= MAX_OFFSET:
                # Its distance from the first row could overflow, or not fit the column.
                raise errors.DomainError(
                    f"Row {number}: {when!r} is too far from 0 to be a time in seconds.",
                    field="csv",
                )
            offset = offset.quantize(OFFSET_STEP)
        except InvalidOperation:
            try:
                moment = datetime.fromisoformat(when.replace("Z", "+00:00"))
            except ValueError:
                raise errors.DomainError(
                    f"Row {number}: {when!r} is neither seconds nor an ISO timestamp.", field="csv"
                ) from None
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)  # a timestamp without a zone is UTC
            first_time = first_time or moment
            offset = Decimal(repr((moment - first_time).total_seconds()))
        try:
            price_value = Decimal(value.strip())
        except InvalidOperation:
            raise errors.DomainError(
                f"Row {number}: {value!r} is not a price.", field="csv"
            ) from None
        if not price_value.is_finite() or price_value <= 0:
            raise errors.DomainError(f"Row {number}: the price must be positive.", field="csv")
        if price_value > MARK_CEILING:
            raise errors.DomainError(
                f"Row {number}: the price must be at most {MARK_CEILING:,}.", field="csv"
            )
        price_value = price(price_value)  # as the column stores it
        if price_value <= 0:
            raise errors.DomainError(
                f"Row {number}: the price must be at least {plain(PRICE_STEP)}.", field="csv"
            )
        parsed.append((offset, price_value))
    if not parsed:
        raise errors.DomainError("The CSV holds no prices.", field="csv")
    start = parsed[0][0]
    result = [(offset - start, p) for offset, p in parsed]
    if max(offset for offset, _ in result) > MAX_REPLAY_SECONDS:
        raise errors.DomainError("A replay may last at most ten years.", field="csv")
    if any(b[0] < a[0] for a, b in itertools.pairwise(result)):
        raise errors.DomainError("The rows must be in time order.", field="csv")
    return result


@transaction.atomic
def replay_upload(
    *, instrument_id: int, csv_text: str | bytes, speed: object = 1, start: bool = True
) -> PriceFeed:
    """Replace an instrument's feed with a replay of a CSV of ``timestamp,price`` rows.

    The first column is either seconds from the start (``0``, ``1.5``, ...) or an ISO
    timestamp; a header row is skipped. ``speed`` 2 plays twice as fast. With ``start``
    the replay begins now; the replay loops when it reaches its last row.
    """
    instrument = _instrument(instrument_id)
    if isinstance(csv_text, bytes):
        try:
            csv_text = csv_text.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise errors.DomainError("The CSV must be UTF-8 text.", field="csv") from None
    try:
        # newline="": the reader itself ends rows at \n, \r\n or a lone \r.
        lines = csv.reader(io.StringIO(csv_text, newline=""))
        rows = [r for r in lines if r and any(c.strip() for c in r)]
    except csv.Error as exc:
        raise errors.DomainError(f"The CSV could not be read: {exc}.", field="csv") from None
    if rows and len(rows[0]) >= 2:
        try:
            Decimal(rows[0][1].strip())
        except InvalidOperation:
            rows = rows[1:]  # a header
    if any(len(r) < 2 for r in rows):
        raise errors.DomainError("Every row needs a time and a price.", field="csv")
    if len(rows) > MAX_REPLAY_POINTS:
        raise errors.DomainError(f"At most {MAX_REPLAY_POINTS} rows.", field="csv")
    points = _offsets([(r[0], r[1]) for r in rows])
    rate = _decimal(speed, field="speed")
    if not Decimal("0.01") <= rate <= Decimal(1000):
        raise errors.DomainError("The speed must be between 0.01 and 1000.", field="speed")
    feed, _ = PriceFeed.objects.get_or_create(instrument=instrument)
    feed.replay_points.all().delete()
    ReplayPoint.objects.bulk_create(
        ReplayPoint(feed=feed, offset_seconds=offset, price=p) for offset, p in points
    )
    feed.kind = PriceFeed.Kind.REPLAY
    feed.replay_speed = rate
    feed.replay_started_at = timezone.now() if start else None
    feed.is_active = True
    feed.save()
    return feed
