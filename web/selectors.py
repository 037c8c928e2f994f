"""Reads the learner pages need beyond ``positions.selectors``: all narrowed to one user first."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.db.models import F, Max, Min, Prefetch, Q, QuerySet, Subquery, Sum
from django.http import Http404
from django.utils import timezone

from accounts.models import LedgerEntry, LedgerTransaction, TradingAccount, User
from accounts.money import ZERO, exact_price_text, money_text, plain, price_text
from liquidation.models import AdlFill, LiquidationEvent, MarginCall, PriceTick
from positions import margin
from positions.models import (
    Fill,
    Instrument,
    MarginTier,
    Order,
    Position,
    TpSlChange,
    with_fill,
    with_net_result,
)
from positions.selectors import (
    Valuation,
    accounts_for_user,
    free_balance_entries,
    orders_for_user,
    positions_for_user,
    with_exit_fills,
    with_valuation_data,
)
from web import lesson
from web.loss_floor import Change, Holdings


def account_for_user(user: User, account_id: int) -> TradingAccount:
    account = accounts_for_user(user).filter(pk=account_id).first()
    if account is None:
        raise Http404("No such trading account.")
    return account


def position_for_user(user: User, position_id: int) -> Position:
    position = positions_for_user(user).filter(pk=position_id).first()
    if position is None:
        raise Http404("No such position.")
    return position


def order_for_user(user: User, order_id: int) -> Order:
    order = orders_for_user(user).filter(pk=order_id).first()
    if order is None:
        raise Http404("No such order.")
    return order


def ticket_instruments(account: TradingAccount, *, sent: int | None = None) -> QuerySet[Instrument]:
    """The instruments a trade ticket offers: the tradable ones of the account's classroom,
    and the one a ticket sent names if it is of that classroom but trading on it stopped
    after the ticket was opened. The service refuses that one, saying why, and the ticket
    comes back with it still chosen rather than another one."""
    offered = Q(is_tradable=True) if sent is None else Q(is_tradable=True) | Q(pk=sent)
    return Instrument.objects.filter(offered, classroom_id=account.classroom_id)


def classroom_instruments(classroom_id: int) -> QuerySet[Instrument]:
    return Instrument.objects.filter(classroom_id=classroom_id).prefetch_related(
        Prefetch("tiers", queryset=MarginTier.objects.order_by("notional_floor"))
    )


def resting_orders(account: TradingAccount) -> QuerySet[Order]:
    return Order.objects.filter(account_id=account.pk, status=Order.Status.RESTING).select_related(
        "instrument"
    )


# How far back, and how many, the dashboard lists resting orders the engine refused.
REFUSED_ORDERS_WINDOW = timedelta(hours=24)
REFUSED_ORDERS_SHOWN = 5


def refused_when_triggered(account: TradingAccount, now: datetime | None = None) -> list[Order]:
    """The account's orders refused when they triggered in the last 24 hours, the latest
    refusal first: they left the resting orders without the student doing anything.

    An order refused as it is placed is refused in the transaction that writes it, stamped
    once (``updated_at == created_at``), and its ticket said why. One refused when it
    triggered rested first and was stamped again by the tick that refused it, so its
    ``updated_at`` is later and is the time of the refusal. What an order held cannot tell
    them apart: a reduce-only stop holds nothing, and a refused order gives its hold back.
    One query, on the (account, status) index."""
    since = (now or timezone.now()) - REFUSED_ORDERS_WINDOW
    return list(
        Order.objects.filter(
            account_id=account.pk,
            status=Order.Status.REJECTED,
            updated_at__gt=F("created_at"),
            updated_at__gte=since,
        )
        .select_related("instrument")
        .order_by("-updated_at", "-id")[:REFUSED_ORDERS_SHOWN]
    )


def recent_orders(account: TradingAccount, limit: int = 100) -> list[Order]:
    """The account's latest orders in every state, newest first, each with the price of its
    fill (``fill_price``, None when it never filled): a resting order the engine refused
    when it triggered leaves the dashboard's resting orders (its notice of refusals keeps it
    for a day), and this is where the student reads why later."""
    return list(
        with_fill(Order.objects.filter(account_id=account.pk))
        .select_related("instrument")
        .order_by("-created_at", "-id")[:limit]
    )


def recent_margin_calls(account: TradingAccount, limit: int = 5) -> list[MarginCall]:
    return list(
        MarginCall.objects.filter(position__account_id=account.pk).select_related(
            "position__instrument"
        )[:limit]
    )


def recent_liquidations(account: TradingAccount, limit: int = 5) -> list[LiquidationEvent]:
    return list(
        LiquidationEvent.objects.filter(position__account_id=account.pk)
        .select_related("position__instrument", "position__collateral", "position__account")
        .prefetch_related(
            Prefetch(
                "position__instrument__tiers",
                queryset=MarginTier.objects.order_by("notional_floor"),
            )
        )[:limit]
    )


def closed_positions(account: TradingAccount, limit: int = 200) -> list[Position]:
    """The account's closed and liquidated positions, the latest first, each with its net
    result and the fills its average exit price is worked out from."""
    return list(
        with_exit_fills(
            with_net_result(
                with_valuation_data(
                    Position.objects.filter(account_id=account.pk).exclude(
                        status=Position.Status.OPEN
                    )
                )
            )
        ).order_by("-closed_at", "-id")[:limit]
    )


def net_result(position: Position) -> Decimal:
    """What one position did to its account's free balance (see ``with_net_result``)."""
    annotated = with_net_result(Position.objects.filter(pk=position.pk)).get()
    result: Decimal = annotated.net_result  # type: ignore[attr-defined]
    return result


def ledger_statement(account: TradingAccount) -> QuerySet[LedgerEntry]:
    """Every movement of the account's free balance, oldest first."""
    return (
        free_balance_entries()
        .filter(account_id=account.pk)
        .order_by("transaction__created_at", "id")
    )


# --- position history ---------------------------------------------------------------


@dataclass(frozen=True)
class TimelineEvent:
    at: datetime
    kind: str
    title: str
    detail: str
    amount: Decimal | None = None
    # A gain or a loss (painted green or red); otherwise money only moving between the
    # position's collateral and the free balance, shown plain.
    is_pnl: bool = False
    # An amount the student chose to move (a margin change): shown with every place it has.
    exact: bool = False


def position_window(position: Position) -> tuple[datetime, datetime]:
    end = position.closed_at or timezone.now()
    return position.opened_at, end


def collateral_movements(position: Position) -> list[LedgerEntry]:
    return list(
        LedgerEntry.objects.filter(position_id=position.pk, pocket=LedgerEntry.Pocket.COLLATERAL)
        .select_related("transaction")
        .order_by("transaction__created_at", "id")
    )


def tpsl_changes(position: Position) -> list[TpSlChange]:
    """The changes of a position's take-profit and stop-loss, oldest first; read through a
    position the caller already narrowed to its viewer."""
    return list(TpSlChange.objects.filter(position_id=position.pk).order_by("created_at", "id"))


def _level_change(name: str, before: Decimal | None, after: Decimal | None, tick: Decimal) -> str:
    """One level's part of a TP/SL change: "stop-loss 58,000.0 → 55,000.0", "take-profit
    cleared", "take-profit unchanged"."""
    if before == after:
        return f"no {name}" if after is None else f"{name} unchanged"
    if after is None:
        return f"{name} cleared"
    if before is None:
        return f"{name} set at {price_text(after, tick)}"
    # A level from before a tick-size change may lie off today's grid: shown as it was.
    return f"{name} {exact_price_text(before, tick)} → {price_text(after, tick)}"


def _tpsl_detail(change: TpSlChange, tick: Decimal) -> str:
    """What one change did, the level that moved first: "Stop-loss 58,000.0 → 55,000.0;
    take-profit unchanged"."""
    parts = [
        ("take-profit", change.take_profit_before, change.take_profit_after),
        ("stop-loss", change.stop_loss_before, change.stop_loss_after),
    ]
    parts.sort(key=lambda part: part[1] == part[2])  # stable: a moved level leads
    text = "; ".join(_level_change(*part, tick) for part in parts)
    if change.reason:
        text += f" — {change.reason}"
    return text[:1].upper() + text[1:]


def position_holdings(position: Position, movements: list[LedgerEntry]) -> Holdings:
    """What the position held, open, realised and as collateral, from each of its events on.

    A close's fill and its ledger transaction are written in one database transaction but
    stamped a moment apart: the collateral a close releases is counted at its fill's time,
    with the PnL it realises, so the floor never shows the half-made close in between. The
    n-th close transaction of the position is its n-th close fill (and so for
    auto-deleveraging), whether or not it moved any collateral. The liquidation is left
    out: from then on the position's loss is what the liquidation took.
    """
    exit_kinds = (LedgerTransaction.Kind.CLOSE, LedgerTransaction.Kind.ADL)
    released: dict[int, Decimal] = {}
    for entry in movements:
        released[entry.transaction_id] = released.get(entry.transaction_id, ZERO) + entry.amount
    exits = list(
        LedgerTransaction.objects.filter(position_id=position.pk, kind__in=exit_kinds)
        .order_by("created_at", "pk")
        .values_list("pk", "kind")
    )
    fills = list(
        Fill.objects.filter(position_id=position.pk, kind__in=(Fill.Kind.CLOSE, Fill.Kind.ADL))
        .order_by("created_at", "pk")
        .values_list("kind", "created_at", "quantity", "realized_pnl")
    )
    changes: list[Change] = []
    for exit_kind in exit_kinds:
        txns = [pk for pk, k in exits if k == exit_kind]
        own = [fill for fill in fills if fill[0] == exit_kind]
        for txn, (_, at, quantity, realised) in zip(txns, own, strict=False):
            changes.append(Change(at, quantity, realised, released.get(txn, ZERO)))
        # A fill without its transaction (none is written so) still realises its PnL.
        changes.extend(Change(at, q, r) for _, at, q, r in own[len(txns) :])
    opening = ZERO
    for entry in movements:
        kind = entry.transaction.kind
        if kind == LedgerTransaction.Kind.OPEN:
            opening += entry.amount
        elif kind in (LedgerTransaction.Kind.ADD_MARGIN, LedgerTransaction.Kind.REMOVE_MARGIN):
            changes.append(Change(entry.transaction.created_at, collateral=entry.amount))
    if not movements and position.is_open:
        opening = position.collateral.amount
    return Holdings(
        opened_at=position.opened_at,
        quantity=position.opened_quantity,
        collateral=opening,
        changes=changes,
    )


def peak_collateral(movements: list[LedgerEntry]) -> Decimal:
    running = peak = ZERO
    for entry in movements:
        running += entry.amount
        peak = max(peak, running)
    return peak


def tpsl_reached(fill: Fill | None) -> tuple[str, Decimal] | None:
    """The take-profit or stop-loss, and its level, at which the engine made this close
    (``None`` for a close the student made)."""
    order = None if fill is None else fill.order
    if order is None or not order.trigger or order.stop_price is None:
        return None
    return order.get_trigger_display().lower(), order.stop_price


def _close_fills(position: Position) -> QuerySet[Fill]:
    return (
        Fill.objects.filter(position_id=position.pk, kind=Fill.Kind.CLOSE)
        .select_related("order")
        .order_by("created_at", "pk")
    )


def tpsl_close(position: Position) -> tuple[str, Decimal] | None:
    """The take-profit or stop-loss, and its level, at which the last close happened, if the
    engine closed the position there rather than the student by hand."""
    return tpsl_reached(_close_fills(position).last())


def _close_detail(position: Position, memo: str, fill: Fill | None, currency: str) -> str:
    """What one close did, without the "Close" the timeline's title already says."""
    if fill is None:
        return memo.removeprefix("Close ")
    tick = position.instrument.tick_size
    reached = tpsl_reached(fill)
    why = "" if reached is None else f" ({reached[0]} {price_text(reached[1], tick)} reached)"
    return (
        f"{plain(fill.quantity)} of position #{position.pk} at {price_text(fill.price, tick)}"
        f"{why}: realised PnL {money_text(fill.realized_pnl, currency)}, "
        f"fee {money_text(fill.fee, currency)}"
    )


def _adl_detail(position: Position, memo: str, fill: AdlFill | None, currency: str) -> str:
    """What one auto-deleveraging close did: the part of a profitable position closed at
    another position's bankruptcy price, and what it realised."""
    if fill is None:
        return memo
    tick = position.instrument.tick_size
    return (
        f"{plain(fill.quantity)} of position #{position.pk} at {price_text(fill.price, tick)}, "
        f"the bankruptcy price of liquidation #{fill.liquidation_id}: realised PnL "
        f"{money_text(fill.realized_pnl, currency)}"
    )


def position_timeline(
    position: Position,
    movements: list[LedgerEntry],
    margin_calls: list[MarginCall],
    liquidation: LiquidationEvent | None,
    tpsl_changes: list[TpSlChange],
) -> list[TimelineEvent]:
    events: list[TimelineEvent] = []
    currency = position.account.classroom.currency
    tick = position.instrument.tick_size
    # Each close wrote one fill and one ledger transaction, in the same order: the fill gives
    # its numbers, written as the rest of the page writes them (59,662.9, not 59662.9).
    close_fills = iter(_close_fills(position))
    # The same for each auto-deleveraging close.
    adl_fills = iter(AdlFill.objects.filter(position_id=position.pk).order_by("created_at", "pk"))
    for entry in movements:
        tx = entry.transaction
        if tx.kind == tx.Kind.LIQUIDATION:
            continue  # told with the liquidation's own numbers below
        if tx.kind == tx.Kind.OPEN:
            detail = (
                f"{position.get_side_display()} {plain(position.opened_quantity)} "
                f"{position.instrument.symbol} at {price_text(position.entry_price, tick)}, "
                f"{position.leverage}x; collateral"
            )
        elif tx.kind in (tx.Kind.ADD_MARGIN, tx.Kind.REMOVE_MARGIN):
            detail = "collateral"
        else:
            detail = tx.memo
        title, amount = tx.get_kind_display(), entry.amount
        if tx.kind == tx.Kind.CLOSE:
            # Each close (part or all) hands collateral back to the free balance: shown as
            # what the student gets back, not as the collateral pocket's debit.
            what = _close_detail(position, tx.memo, next(close_fills, None), currency)
            title, detail, amount = "Close", f"{what}; collateral released", -entry.amount
        elif tx.kind == tx.Kind.ADL:
            # A close too, made by the engine: the collateral and the profit came back.
            what = _adl_detail(position, tx.memo, next(adl_fills, None), currency)
            detail, amount = f"{what}; collateral released", -entry.amount
        exact = tx.kind in (tx.Kind.ADD_MARGIN, tx.Kind.REMOVE_MARGIN)
        events.append(TimelineEvent(tx.created_at, tx.kind, title, detail, amount, exact=exact))
    for call in margin_calls:
        events.append(
            TimelineEvent(
                call.created_at,
                "margin_call",
                "Margin call",
                f"Margin ratio {call.margin_ratio * 100:.2f}% at mark "
                f"{price_text(call.mark_price, tick)}"
                f" — {call.get_outcome_display().lower()}",
            )
        )
    for change in tpsl_changes:
        events.append(
            TimelineEvent(
                change.created_at,
                "tpsl",
                "TP / SL moved onto the new tick grid" if change.reason else "TP / SL changed",
                _tpsl_detail(change, tick),
            )
        )
    if liquidation is not None:
        events.append(
            TimelineEvent(
                liquidation.created_at,
                "liquidation",
                "Liquidated",
                f"Closed {plain(liquidation.quantity)} at mark "
                f"{price_text(liquidation.mark_price, tick)}; collateral lost "
                f"{money_text(liquidation.collateral_lost, currency)}, liquidation fee "
                f"{money_text(liquidation.liquidation_fee, currency)}, returned to you "
                f"{money_text(liquidation.returned_to_trader, currency)}; free balance "
                # The amount shown next is what left the collateral, as on the other events.
                "untouched; collateral",
                -liquidation.collateral_lost,
                is_pnl=True,
            )
        )
    elif position.status == Position.Status.CLOSED and position.closed_at:
        # Closed in parts, the last part's price is not the exit the realised PnL comes from;
        # the average of every part's price is: size x (average - entry).
        parts = len(position.exit_fills)  # type: ignore[attr-defined]
        average = position.average_exit_price
        if average is not None and parts > 1:
            exit_text = f"Average exit {exact_price_text(average, tick)} over {parts} closes"
        elif position.exit_price is not None:
            exit_text = f"Exit at {price_text(position.exit_price, tick)}"
        else:
            exit_text = "Exit at —"
        events.append(
            TimelineEvent(
                position.closed_at,
                "closed",
                "Closed",
                f"{exit_text}; realised PnL",
                position.realized_pnl,
                is_pnl=True,
            )
        )
    # The end of a position comes last, even when its last close was written a moment after.
    events.sort(key=lambda e: (e.kind in ("closed", "liquidation"), e.at))
    return events


def price_ticks(
    instrument_id: int, start: datetime, end: datetime, limit: int = 3000
) -> list[tuple[datetime, Decimal]]:
    """The mark history between two instants, the newest ``limit`` ticks, oldest first."""
    rows = list(
        PriceTick.objects.filter(
            instrument_id=instrument_id, created_at__gte=start, created_at__lte=end
        )
        .order_by("-created_at")
        .values_list("created_at", "price")[:limit]
    )
    rows.reverse()
    return rows


def worst_price(
    *, instrument_id: int, side: str, start: datetime, end: datetime | None = None
) -> Decimal | None:
    """The lowest mark (long) or highest (short) in a window, by one aggregate query."""
    ticks = PriceTick.objects.filter(instrument_id=instrument_id, created_at__gte=start)
    if end is not None:
        ticks = ticks.filter(created_at__lte=end)
    agg = Min("price") if side == margin.Side.LONG else Max("price")
    return ticks.aggregate(p=agg)["p"]


def lesson_for(
    position: Position, *, liquidation: LiquidationEvent | None, collateral: Decimal
) -> lesson.IsolationLesson | None:
    """The isolation lesson of a position on its own price path, from the mark history."""
    tiers = position.instrument.margin_tiers()
    if not tiers:
        return None
    quantity = (
        liquidation.quantity if liquidation else position.quantity or position.opened_quantity
    )
    end = None if position.status != Position.Status.CLOSED else position.closed_at
    worst = worst_price(
        instrument_id=position.instrument_id, side=position.side, start=position.opened_at, end=end
    )
    mark = position.instrument.mark_price
    candidates = [p for p in (worst, mark if position.is_open else None) if p is not None]
    if liquidation is not None:
        candidates.append(liquidation.mark_price)
    if not candidates:
        return None
    path_worst = candidates[0]
    for p in candidates[1:]:
        path_worst = lesson.worse(position.side, path_worst, p)
    after = None
    if liquidation is not None:
        after = worst_price(
            instrument_id=position.instrument_id,
            side=position.side,
            start=liquidation.created_at,
        )
    # The rest of the account then: what was free and what resting orders held (the order
    # margin legs posted before the liquidation's own transaction), or now.
    holds = LedgerEntry.objects.filter(
        account_id=position.account_id, pocket=LedgerEntry.Pocket.ORDER
    )
    if liquidation is not None and liquidation.free_balance_before is not None:
        free_balance = liquidation.free_balance_before
        holds = holds.filter(
            transaction_id__lt=Subquery(
                LedgerTransaction.objects.filter(
                    kind=LedgerTransaction.Kind.LIQUIDATION, position_id=position.pk
                ).values("pk")[:1]
            )
        )
    else:
        free_balance = position.account.balance
    held = holds.aggregate(s=Sum("amount"))["s"] or ZERO
    return lesson.isolation_lesson(
        side=position.side,
        entry_price=position.entry_price,
        quantity=quantity,
        collateral=collateral,
        free_balance=free_balance,
        held_by_orders=held,
        worst_price=path_worst,
        tiers=tiers,
        liquidated=liquidation is not None,
        liquidation_mark=liquidation.mark_price if liquidation else None,
        worst_after_liquidation=after
        if after is not None
        else (liquidation.mark_price if liquidation else None),
    )


def lesson_at_mark(
    position: Position, valuation: Valuation, *, free_balance: Decimal, held_by_orders: Decimal
) -> lesson.IsolationLesson | None:
    """The lesson of an open position if the mark stays where it is: no query."""
    tiers = position.instrument.margin_tiers()
    if not tiers or valuation.mark_price is None:
        return None
    return lesson.isolation_lesson(
        side=position.side,
        entry_price=position.entry_price,
        quantity=position.quantity,
        collateral=valuation.collateral,
        free_balance=free_balance,
        held_by_orders=held_by_orders,
        worst_price=valuation.mark_price,
        tiers=tiers,
    )
