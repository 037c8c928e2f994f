"""The tick of one instrument: next mark, liquidations, margin calls, resting orders, heartbeat.

Safety of a tick, in the order it is checked:

- **Stale**: a tick carries the time it was scheduled; older than one tick interval when
  it starts, it does nothing (the next one is already on its way).
- **No overlap**: a PostgreSQL session advisory lock per instrument
  (``pg_try_advisory_lock``); a tick that cannot take it returns at once. Postgres drops
  the lock with the connection, so a killed worker never leaves it held. On SQLite (the
  embedded default, one worker) there is no lock to take and none is needed.
- **Exactly one price step per slot**: ticks are grouped in slots of ``TICK_SECONDS``; a
  conditional UPDATE of ``PriceFeed.last_tick_at`` claims the slot. A redelivered tick of
  the same slot (or a second beat scheduling the same slot) skips the price step but
  still sweeps, which is harmless: liquidations and triggers only ever act on rows that
  are still open or resting, under their row locks.

Cost: every search is a range scan on a partial index (breached liquidation prices,
the margin-call band next to them, resting limit/stop prices, TP/SL), so a tick's work
grows with the positions it acts on, never with the open ones.

History is bounded by :func:`history_prune` (a beat entry every minute): raw mark ticks are
kept for ``PRICE_HISTORY_RAW_SECONDS`` (1 hour), older ones are thinned to the first tick of
each minute, and nothing older than ``PRICE_HISTORY_KEEP_SECONDS`` (7 days) is kept;
heartbeats are kept for ``HEARTBEAT_KEEP_SECONDS`` (1 hour).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import Min, Q
from django.db.models.functions import TruncMinute
from django.utils import timezone

from accounts import errors
from liquidation import feeds
from liquidation.models import EngineHeartbeat, MarginCall, PriceFeed, PriceTick, Scenario
from liquidation.settlement import (
    BATCH_SIZE,
    BATCH_THREADS,
    BatchResult,
    breached_position_ids,
    liquidate_batch,
)
from positions import margin
from positions.models import Instrument, Order, Position, Side
from positions.selectors import WARNING_RATIO
from positions.services import (
    fill_price,
    limit_reached,
    lock_account,
    lock_position,
    order_execute,
    position_close,
)

log = logging.getLogger(__name__)

# First key of the two-key advisory lock: the engine's namespace; the second is the instrument.
ADVISORY_NAMESPACE = 0x52464E47


def tick_seconds() -> Decimal:
    return Decimal(settings.TICK_SECONDS)


def slot_start(moment: datetime) -> datetime:
    """The start of the tick slot ``moment`` falls in (slots of TICK_SECONDS since the epoch)."""
    step = tick_seconds()
    epoch = Decimal(repr(moment.timestamp()))
    start = (epoch // step) * step
    return datetime.fromtimestamp(float(start), tz=moment.tzinfo or UTC)


def active_instrument_ids() -> list[int]:
    """Instruments the engine ticks: an active feed, or no feed yet but a mark to keep."""
    return list(
        Instrument.objects.filter(
            Q(feed__is_active=True) | Q(feed__isnull=True, mark_price__isnull=False)
        )
        .order_by("pk")
        .values_list("pk", flat=True)
    )


@contextlib.contextmanager
def instrument_lock(instrument_id: int) -> Iterator[bool]:
    """Hold the instrument's advisory lock for the block; yields False when another tick has it."""
    if connection.vendor != "postgresql":
        yield True
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [ADVISORY_NAMESPACE, instrument_id])
        acquired = bool(cursor.fetchone()[0])
    try:
        yield acquired
    finally:
        if acquired:
            try:
                with connection.cursor() as cursor:
                    cursor.execute(
                        "SELECT pg_advisory_unlock(%s, %s)", [ADVISORY_NAMESPACE, instrument_id]
                    )
            except DatabaseError:
                # Closing the session is what releases a session lock for certain.
                connection.close()


@dataclass
class TickResult:
    instrument_id: int
    status: str  # "ticked", "resumed", "stale", "busy", "superseded", "no_price"
    mark: Decimal | None = None
    checked: int = 0
    liquidated: list[int] = field(default_factory=list)
    orders_triggered: int = 0
    margin_calls: int = 0
    errors: list[str] = field(default_factory=list)


def advance_mark(instrument_id: int, slot: datetime, now: datetime) -> tuple[str, Decimal | None]:
    """Claim the slot and publish the next mark; a slot already claimed returns the stored mark."""
    with transaction.atomic():
        # The instrument before its feed, in the order of an instructor's save of both (the
        # instrument's page with its feed) and of a replay upload: the other order deadlocks.
        instrument = Instrument.objects.select_for_update(no_key=True).get(pk=instrument_id)
        feed, _ = PriceFeed.objects.get_or_create(
            instrument_id=instrument_id, defaults={"kind": PriceFeed.Kind.MANUAL}
        )
        claimed = (
            PriceFeed.objects.filter(pk=feed.pk)
            .filter(Q(last_tick_at__isnull=True) | Q(last_tick_at__lt=slot))
            .update(last_tick_at=slot)
        )
        if not claimed:
            last = PriceFeed.objects.filter(pk=feed.pk).values_list("last_tick_at", flat=True)[0]
            if last == slot:
                return "resumed", instrument.mark_price
            return "superseded", None
        price, scenario, finished = feeds.next_price(feed, instrument, now)
        PriceFeed.objects.filter(pk=feed.pk).update(step=feed.step + 1)
        if scenario is not None and finished:
            Scenario.objects.filter(pk=scenario.pk, status=Scenario.Status.ACTIVE).update(
                status=Scenario.Status.FINISHED, finished_at=now
            )
        if price is None:
            return "no_price", None
        Instrument.objects.filter(pk=instrument_id).update(mark_price=price, mark_updated_at=now)
        PriceTick.objects.create(instrument_id=instrument_id, price=price, created_at=now)
        return "ticked", price


def _first_line(exc: BaseException) -> str:
    """An error in one short line for the heartbeat: a database error's DETAIL and HINT, and
    the rest of a long message, are in the log."""
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:200]


def liquidate_breached(instrument: Instrument, mark: Decimal, result: TickResult) -> None:
    """Liquidate the breached positions in batches, two at a time on PostgreSQL.

    Batches lock disjoint positions (SKIP LOCKED) and meet only at the classroom pockets,
    which each batch writes last; so one batch computes while the other writes.
    """
    rows = breached_position_ids(instrument.pk, mark)
    batches = [rows[start : start + BATCH_SIZE] for start in range(0, len(rows), BATCH_SIZE)]

    def run_alone(row: tuple[int, int]) -> BatchResult:
        try:
            return liquidate_batch(instrument=instrument, mark=mark, rows=[row])
        except SoftTimeLimitExceeded:
            # The task's time is up: that ends the whole tick, not one position (here and
            # in every other phase below).
            raise
        except Exception as exc:
            # Left open for the next tick; the other batches' outcomes still count.
            log.exception("Liquidation of position %s failed", row[0])
            result.errors.append(f"liquidation of position {row[0]}: {exc}")
            return BatchResult()

    def run(batch: list[tuple[int, int]]) -> BatchResult:
        if len(batch) == 1:
            return run_alone(batch[0])
        try:
            return liquidate_batch(instrument=instrument, mark=mark, rows=batch)
        except SoftTimeLimitExceeded:
            raise
        except Exception as exc:
            log.exception(
                "A liquidation batch of instrument %s failed; settling its positions one by one",
                instrument.pk,
            )
            # Its positions may all settle alone and leave no error of their own; the tick was
            # still slowed by a failure that may recur, which instructors should see: one line
            # per batch (the log has the traceback), whatever its size.
            result.errors.append(
                f"liquidation batch of {len(batch)} positions failed and was settled one by one: "
                f"{_first_line(exc)}"
            )
        # One position the database refuses to settle (or whose settlement raises) must not
        # hold back the others: each goes alone, and only the one that fails again is left
        # for the next tick.
        outcome = BatchResult()
        for row in batch:
            single = run_alone(row)
            outcome.checked += single.checked
            outcome.liquidated += single.liquidated
        return outcome

    def run_in_thread(batch: list[tuple[int, int]]) -> BatchResult:
        try:
            return run(batch)
        finally:
            connection.close()

    if len(batches) > 1 and BATCH_THREADS > 1 and connection.vendor == "postgresql":
        with ThreadPoolExecutor(max_workers=BATCH_THREADS) as pool:
            outcomes = list(pool.map(run_in_thread, batches))
    else:
        outcomes = [run(batch) for batch in batches]
    for outcome in outcomes:
        result.checked += outcome.checked
        result.liquidated += outcome.liquidated


def _warning_band(instrument: Instrument, mark: Decimal) -> Q:
    """Open positions whose margin ratio may be at or above the warning level (a superset).

    MB - MM is linear in the mark between tiers, zero at the exact LP, with a slope of at
    least Q(1 - mmr_max) for a long (Q(1 + mmr_max) for a short), and MM <= N * mmr_max. So
    MM / MB >= w implies, for a long, LP >= P * (1 - k * mmr_max / (1 - mmr_max)) and, for a
    short, LP <= P * (1 + k * mmr_max / (1 + mmr_max)), with k = (1 - w) / w. The stored LP is
    rounded towards the mark, which only widens the band.
    """
    mmr = max(t.mmr for t in instrument.margin_tiers())
    k = (1 - WARNING_RATIO) / WARNING_RATIO
    long_floor = mark * (1 - k * mmr / (1 - mmr))
    short_cap = mark * (1 + k * mmr / (1 + mmr))
    return Q(side=Side.LONG, liquidation_price__gte=long_floor, liquidation_price__lt=mark) | Q(
        side=Side.SHORT, liquidation_price__lte=short_cap, liquidation_price__gt=mark
    )


def _ratio(
    position: Position, collateral: Decimal, mark: Decimal, tiers: list[margin.Tier]
) -> Decimal | None:
    return margin.margin_ratio(
        side=position.side,
        entry_price=position.entry_price,
        quantity=position.quantity,
        collateral=collateral,
        mark_price=mark,
        tiers=tiers,
    )


def margin_calls_sweep(instrument: Instrument, mark: Decimal, result: TickResult) -> None:
    """Record a margin call once per crossing of the warning ratio; resolve the answered ones."""
    tiers = instrument.margin_tiers()
    if not tiers:
        return
    now = timezone.now()
    candidates = list(
        Position.objects.filter(
            _warning_band(instrument, mark),
            instrument_id=instrument.pk,
            status=Position.Status.OPEN,
        ).values_list("pk", flat=True)
    )
    if candidates:
        with transaction.atomic():
            # Only the position row is locked (never waited for): the flag is what makes a
            # call once per crossing, and a busy position is looked at again next tick.
            locked = list(
                Position.objects.select_for_update(of=("self",), skip_locked=True, no_key=True)
                .filter(pk__in=candidates, status=Position.Status.OPEN, margin_call_active=False)
                .select_related("collateral")
            )
            result.checked += len(locked)
            calls = []
            for position in locked:
                ratio = _ratio(position, position.collateral.amount, mark, tiers)
                if ratio is not None and WARNING_RATIO <= ratio < 1:
                    calls.append(
                        MarginCall(
                            position_id=position.pk,
                            classroom_id=instrument.classroom_id,
                            mark_price=mark,
                            margin_ratio=ratio.quantize(Decimal("1e-8")),
                            collateral_at_call=position.collateral.amount,
                            quantity_at_call=position.quantity,
                            created_at=now,
                        )
                    )
            if calls:
                Position.objects.filter(pk__in=[c.position_id for c in calls]).update(
                    margin_call_active=True
                )
                MarginCall.objects.bulk_create(calls)
                result.margin_calls += len(calls)
    pending = list(
        MarginCall.objects.filter(
            outcome=MarginCall.Outcome.PENDING, position__instrument_id=instrument.pk
        ).select_related("position", "position__collateral")
    )
    answered: dict[str, list[int]] = {}
    outcome: str
    cleared: list[int] = []
    for call in pending:
        position = call.position
        if position.status == Position.Status.CLOSED:
            answered.setdefault(MarginCall.Outcome.REDUCED, []).append(call.pk)
            continue
        if position.status != Position.Status.OPEN:
            continue  # liquidated: the liquidation batch records that outcome
        ratio = _ratio(position, position.collateral.amount, mark, tiers)
        if ratio is None or ratio >= WARNING_RATIO:
            continue
        if call.quantity_at_call is not None and position.quantity < call.quantity_at_call:
            outcome = MarginCall.Outcome.REDUCED
        elif (
            call.collateral_at_call is not None
            and position.collateral.amount > call.collateral_at_call
        ):
            outcome = MarginCall.Outcome.MARGIN_ADDED
        else:
            outcome = MarginCall.Outcome.RECOVERED
        answered.setdefault(outcome, []).append(call.pk)
        cleared.append(position.pk)
    for outcome, ids in answered.items():
        MarginCall.objects.filter(pk__in=ids, outcome=MarginCall.Outcome.PENDING).update(
            outcome=outcome, resolved_at=now
        )
    if cleared:
        Position.objects.filter(pk__in=cleared, status=Position.Status.OPEN).update(
            margin_call_active=False
        )


def _order_triggered(order: Order, instrument: Instrument) -> bool:
    mark = instrument.mark_price
    if mark is None:
        return False
    if order.type == Order.Type.LIMIT and order.price is not None:
        return limit_reached(instrument=instrument, side=order.side, limit=order.price, mark=mark)
    if order.type == Order.Type.STOP and order.stop_price is not None:
        return mark >= order.stop_price if order.side == Side.LONG else mark <= order.stop_price
    return False


def _tpsl_triggered(position: Position, mark: Decimal) -> str:
    """Which of the position's take-profit and stop-loss the mark has reached ("" if none)."""
    long = position.side == Side.LONG
    tp, sl = position.take_profit, position.stop_loss
    if tp is not None and (mark >= tp if long else mark <= tp):
        return Order.Trigger.TAKE_PROFIT
    if sl is not None and (mark <= sl if long else mark >= sl):
        return Order.Trigger.STOP_LOSS
    return ""


def triggered_order_ids(instrument: Instrument, mark: Decimal) -> list[int]:
    """Resting limit orders their fill price has reached and stop orders the mark has
    reached, by the resting-order indexes."""
    resting = Order.objects.filter(instrument_id=instrument.pk, status=Order.Status.RESTING)
    limit = resting.filter(type=Order.Type.LIMIT)
    stop = resting.filter(type=Order.Type.STOP)
    ask = fill_price(instrument=instrument, buying=True, mark=mark)
    bid = fill_price(instrument=instrument, buying=False, mark=mark)
    ids: list[int] = []
    for queryset in (
        limit.filter(side=Side.LONG, price__gte=ask),
        limit.filter(side=Side.SHORT, price__lte=bid),
        stop.filter(side=Side.LONG, stop_price__lte=mark),
        stop.filter(side=Side.SHORT, stop_price__gte=mark),
    ):
        ids += queryset.values_list("pk", flat=True)
    return sorted(set(ids))


def triggered_tpsl_ids(instrument_id: int, mark: Decimal) -> list[int]:
    """Open positions whose take-profit or stop-loss the mark has reached (TP/SL indexes)."""
    open_ = Position.objects.filter(instrument_id=instrument_id, status=Position.Status.OPEN)
    ids: list[int] = []
    for queryset in (
        open_.filter(take_profit__isnull=False, take_profit__lte=mark, side=Side.LONG),
        open_.filter(take_profit__isnull=False, take_profit__gte=mark, side=Side.SHORT),
        open_.filter(stop_loss__isnull=False, stop_loss__gte=mark, side=Side.LONG),
        open_.filter(stop_loss__isnull=False, stop_loss__lte=mark, side=Side.SHORT),
    ):
        ids += queryset.values_list("pk", flat=True)
    return sorted(set(ids))


def execute_triggered_order(order_id: int) -> bool:
    """Fill a resting order if, under its locks, it still rests and the mark still triggers it."""
    with transaction.atomic():
        account_id = Order.objects.filter(pk=order_id).values_list("account_id", flat=True).first()
        if account_id is None:
            return False
        lock_account(account_id)
        order = Order.objects.select_for_update(of=("self",), no_key=True).get(pk=order_id)
        instrument = Instrument.objects.filter(pk=order.instrument_id).first()
        if (
            order.status != Order.Status.RESTING
            or instrument is None
            or not _order_triggered(order, instrument)
        ):
            return False
        return order_execute(order_id=order_id).status == Order.Status.FILLED


def close_at_tpsl(position_id: int) -> bool:
    """Close a position whose TP or SL the mark reached, re-checked under its locks."""
    try:
        with transaction.atomic():
            _, position, _ = lock_position(position_id)
            mark = position.instrument.mark_price
            trigger = (
                "" if mark is None or not position.is_open else _tpsl_triggered(position, mark)
            )
            if not trigger:
                return False
            position_close(position_id=position_id, trigger=trigger)
            return True
    except errors.DomainError as exc:
        log.info("TP/SL close of position %s refused: %s", position_id, exc.message)
        return False


def trigger_resting(instrument: Instrument, mark: Decimal, result: TickResult) -> None:
    for order_id in triggered_order_ids(instrument, mark):
        try:
            if execute_triggered_order(order_id):
                result.orders_triggered += 1
        except SoftTimeLimitExceeded:
            raise
        except Exception as exc:
            log.exception("Triggered order %s failed", order_id)
            result.errors.append(f"order {order_id}: {exc}")
    for position_id in triggered_tpsl_ids(instrument.pk, mark):
        try:
            if close_at_tpsl(position_id):
                result.orders_triggered += 1
        except SoftTimeLimitExceeded:
            raise
        except Exception as exc:
            log.exception("TP/SL close of position %s failed", position_id)
            result.errors.append(f"TP/SL of position {position_id}: {exc}")


def tick_instrument(
    instrument_id: int, scheduled_at: datetime, now: datetime | None = None
) -> TickResult:
    """One tick of one instrument (see the module docstring for why it is safe to repeat)."""
    now = now or timezone.now()
    result = TickResult(instrument_id, "stale")
    if (now - scheduled_at).total_seconds() > float(tick_seconds()):
        log.info(
            "Tick of instrument %s scheduled at %s is stale; skipped", instrument_id, scheduled_at
        )
        return result
    with instrument_lock(instrument_id) as acquired:
        if not acquired:
            result.status = "busy"
            log.info("Instrument %s is still ticking; this tick is skipped", instrument_id)
            return result
        started = timezone.now()
        if (started - scheduled_at).total_seconds() > float(tick_seconds()):
            return result
        result.status, result.mark = advance_mark(instrument_id, slot_start(scheduled_at), started)
        if result.mark is None:
            return result
        heartbeat = EngineHeartbeat.objects.create(
            instrument_id=instrument_id, started_at=started, mark_price=result.mark
        )
        instrument = (
            Instrument.objects.select_related("classroom")
            .prefetch_related("tiers")
            .get(pk=instrument_id)
        )
        for phase in (liquidate_breached, margin_calls_sweep):
            try:
                phase(instrument, result.mark, result)
            except SoftTimeLimitExceeded:
                raise
            except Exception as exc:
                log.exception(
                    "Tick phase %s of instrument %s failed", phase.__name__, instrument_id
                )
                result.errors.append(f"{phase.__name__}: {exc}")
        trigger_resting(instrument, result.mark, result)
        EngineHeartbeat.objects.filter(pk=heartbeat.pk).update(
            finished_at=timezone.now(),
            positions_checked=result.checked,
            liquidated=len(result.liquidated),
            orders_triggered=result.orders_triggered,
            margin_calls=result.margin_calls,
            errors="\n".join(result.errors)[:10000],
        )
    return result


def history_prune(now: datetime | None = None) -> tuple[int, int]:
    """Thin old mark ticks to one a minute, drop very old ones and old heartbeats."""
    now = now or timezone.now()
    raw_cutoff = now - timedelta(seconds=getattr(settings, "PRICE_HISTORY_RAW_SECONDS", 3600))
    keep_cutoff = now - timedelta(seconds=getattr(settings, "PRICE_HISTORY_KEEP_SECONDS", 604800))
    dropped, _ = PriceTick.objects.filter(created_at__lt=keep_cutoff).delete()
    old = PriceTick.objects.filter(created_at__lt=raw_cutoff)
    first_per_minute = (
        old.annotate(minute=TruncMinute("created_at"))
        .values("instrument_id", "minute")
        .annotate(first=Min("id"))
        .values("first")
    )
    thinned, _ = old.exclude(id__in=first_per_minute).delete()
    EngineHeartbeat.objects.filter(
        started_at__lt=now - timedelta(seconds=getattr(settings, "HEARTBEAT_KEEP_SECONDS", 3600))
    ).delete()
    return dropped, thinned
