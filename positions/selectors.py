"""Reads that decide who sees what, and valuations derived from a position and its mark.

Valuations are never stored: uPnL, margin ratio and equity come from the position, its
collateral and the instrument's current mark whenever they are read.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from django.db.models import Prefetch, QuerySet, Sum

from accounts.models import Classroom, LedgerEntry, LedgerTransaction, TradingAccount, User
from accounts.money import ZERO, money, towards_entry
from positions import margin
from positions.models import (
    EXIT_FILL_KINDS,
    Fill,
    Instrument,
    MarginTier,
    Order,
    Position,
    with_fill,
)

WARNING_RATIO = Decimal("0.8")
FUNDING_KINDS = (
    LedgerTransaction.Kind.DEPOSIT,
    LedgerTransaction.Kind.GRANT,
    LedgerTransaction.Kind.DEDUCT,
    LedgerTransaction.Kind.RESET,
)


# --- who may see what -------------------------------------------------------------------


def accounts_for_user(user: User) -> QuerySet[TradingAccount]:
    return TradingAccount.objects.filter(user_id=user.pk).select_related("classroom")


def positions_for_user(user: User) -> QuerySet[Position]:
    return with_exit_fills(with_valuation_data(Position.objects.filter(account__user_id=user.pk)))


def orders_for_user(user: User) -> QuerySet[Order]:
    return with_fill(
        Order.objects.filter(account__user_id=user.pk).select_related("instrument", "position")
    )


def fills_for_user(user: User) -> QuerySet[Fill]:
    return Fill.objects.filter(position__account__user_id=user.pk).select_related(
        "position__instrument", "order"
    )


def free_balance_entries() -> QuerySet[LedgerEntry]:
    """Ledger entries that moved a free balance (an account's own pocket), with their
    transaction: what a statement lists. Narrow it to a user or an account before use."""
    return LedgerEntry.objects.filter(pocket=LedgerEntry.Pocket.ACCOUNT).select_related(
        "transaction"
    )


def statement_for_user(user: User) -> QuerySet[LedgerEntry]:
    return free_balance_entries().filter(account__user_id=user.pk)


def instruments_for_user(user: User) -> QuerySet[Instrument]:
    classrooms = Classroom.objects.filter(accounts__user_id=user.pk)
    return Instrument.objects.filter(classroom__in=classrooms).prefetch_related(
        Prefetch("tiers", queryset=MarginTier.objects.order_by("notional_floor"))
    )


def with_valuation_data(positions: QuerySet[Position]) -> QuerySet[Position]:
    """Everything a valuation reads, in a constant number of queries."""
    return positions.select_related("instrument", "collateral", "account").prefetch_related(
        Prefetch("instrument__tiers", queryset=MarginTier.objects.order_by("notional_floor"))
    )


def with_exit_fills(positions: QuerySet[Position]) -> QuerySet[Position]:
    """Positions with ``exit_fills``, the fills that closed each one so far, oldest first:
    what ``Position.average_exit_price`` is worked out from, exactly, in Python. One query for
    a whole list (a page of the API, the History page, the positions CSV), none per row."""
    return positions.prefetch_related(
        Prefetch(
            "fills",
            queryset=Fill.objects.filter(kind__in=EXIT_FILL_KINDS).order_by("created_at", "pk"),
            to_attr="exit_fills",
        )
    )


# --- valuations -------------------------------------------------------------------------


@dataclass(frozen=True)
class Valuation:
    """A position marked to the instrument's current price."""

    mark_price: Decimal | None
    collateral: Decimal
    notional: Decimal | None
    unrealized_pnl: Decimal | None
    margin_balance: Decimal | None
    maintenance_margin: Decimal | None
    margin_ratio: Decimal | None  # a share: 1 means liquidation, 0.8 a margin call
    roe_pct: Decimal | None
    distance_to_liquidation: Decimal | None
    distance_to_liquidation_pct: Decimal | None
    value: Decimal  # what the position is worth to the account: its margin balance, never below 0
    # The mark has put it past its liquidation price: the engine's sweep takes it.
    liquidating: bool = False

    @property
    def at_risk(self) -> bool:
        return self.margin_ratio is None or self.margin_ratio >= WARNING_RATIO


def past_liquidation(
    position: Position,
    *,
    collateral: Decimal,
    mark: Decimal,
    tiers: Sequence[margin.Tier] | None = None,
) -> bool:
    """Whether the engine liquidates this open position at ``mark``, by its own two tests:
    the mark has reached the stored liquidation price, and the margin balance is at or below
    maintenance (the instrument's tiers are read only past the first)."""
    lp = position.liquidation_price
    if lp is None or margin.side_sign(position.side) * (mark - lp) > 0:
        return False
    if tiers is None:
        tiers = position.instrument.margin_tiers()
    return margin.is_liquidatable(
        side=position.side,
        entry_price=position.entry_price,
        quantity=position.quantity,
        collateral=collateral,
        mark_price=mark,
        tiers=tiers,
    )


def position_valuation(
    position: Position, *, tiers: Sequence[margin.Tier] | None = None
) -> Valuation:
    collateral = position.collateral.amount if position.is_open else ZERO
    mark = position.instrument.mark_price
    if not position.is_open or mark is None:
        return Valuation(
            mark, collateral, None, None, None, None, None, None, None, None, collateral
        )
    tiers = tiers if tiers is not None else position.instrument.margin_tiers()
    side, entry, quantity = position.side, position.entry_price, position.quantity
    upnl = margin.unrealized_pnl(side=side, entry_price=entry, quantity=quantity, mark_price=mark)
    balance = collateral + upnl
    mm = margin.maintenance_margin(notional=position.quantity * mark, tiers=tiers)
    ratio = margin.margin_ratio(
        side=side,
        entry_price=entry,
        quantity=quantity,
        collateral=collateral,
        mark_price=mark,
        tiers=tiers,
    )
    # Measured to the liquidation price as shown (on the tick, towards the entry): the
    # distance a learner reads is the one they get by subtracting the two prices shown.
    lp = towards_entry(position.liquidation_price, side=side, tick=position.instrument.tick_size)
    distance = None if lp is None else abs(mark - lp)
    return Valuation(
        mark_price=mark,
        collateral=collateral,
        notional=money(position.quantity * mark),
        unrealized_pnl=money(upnl),
        margin_balance=money(balance),
        maintenance_margin=money(mm),
        margin_ratio=None if ratio is None else ratio.quantize(Decimal("0.00000001")),
        roe_pct=money(upnl / collateral * 100) if collateral else None,
        distance_to_liquidation=distance,
        distance_to_liquidation_pct=None if distance is None else money(distance / mark * 100),
        value=money(max(balance, ZERO)),
        liquidating=past_liquidation(position, collateral=collateral, mark=mark, tiers=tiers),
    )


def return_pct(*, equity: Decimal, funded: Decimal) -> Decimal | None:
    """Gain over the money paid in, in percent; None while nothing has been paid in."""
    return money((equity - funded) / funded * 100) if funded > 0 else None


def account_equities(accounts: Sequence[TradingAccount]) -> dict[int, Decimal]:
    """Each account's equity at the current marks, by id, in a constant number of queries.

    Equity is the free balance plus what resting orders hold plus every open position's
    margin balance floored at zero: under isolated margin a position can never take more
    than its collateral.
    """
    ids = [a.pk for a in accounts]
    value: dict[int, Decimal] = defaultdict(lambda: ZERO, order_margins(ids))
    positions = Position.objects.filter(account_id__in=ids, status=Position.Status.OPEN)
    for position in with_valuation_data(positions):
        value[position.account_id] += position_valuation(position).value
    return {a.pk: money(a.balance + value[a.pk]) for a in accounts}


def order_margins(account_ids: Sequence[int]) -> dict[int, Decimal]:
    """What the resting orders of each account hold out of its free balance, by account id
    (accounts whose orders hold nothing are left out)."""
    return dict(
        Order.objects.filter(
            account_id__in=list(account_ids), status=Order.Status.RESTING, held_margin__gt=0
        )
        .order_by()
        .values_list("account_id")
        .annotate(s=Sum("held_margin"))
        .values_list("account_id", "s")
    )


@dataclass
class AccountOverview:
    """A trading account's money at the current marks."""

    account: TradingAccount
    balance: Decimal
    collateral_locked: Decimal
    order_margin: Decimal
    unrealized_pnl: Decimal
    equity: Decimal
    realized_pnl: Decimal
    fees_paid: Decimal
    funded: Decimal
    return_pct: Decimal | None
    open_positions: list[tuple[Position, Valuation]] = field(default_factory=list)


def account_overview(account: TradingAccount) -> AccountOverview:
    """Balance, collateral, order margin, equity and PnL of one account, in a constant
    number of queries.

    Equity counts what resting orders hold as it is (still the account's own money) and
    each open position at its margin balance floored at zero: under isolated margin a
    position can never take more than its collateral from the account.
    """
    open_positions = list(
        with_valuation_data(
            Position.objects.filter(account_id=account.pk, status=Position.Status.OPEN)
        )
    )
    valued = [(p, position_valuation(p)) for p in open_positions]
    collateral = sum((v.collateral for _, v in valued), ZERO)
    # Unrealised PnL as the account feels it: each position's loss stops at its collateral.
    unrealized = sum(
        (max(v.unrealized_pnl, -v.collateral) for _, v in valued if v.unrealized_pnl is not None),
        ZERO,
    )
    value = sum((v.value for _, v in valued), ZERO)
    totals = Position.objects.filter(account_id=account.pk).aggregate(
        realized=Sum("realized_pnl"), fees=Sum("fees_paid")
    )
    funded = (
        LedgerEntry.objects.filter(
            account_id=account.pk,
            pocket=LedgerEntry.Pocket.ACCOUNT,
            transaction__kind__in=FUNDING_KINDS,
        ).aggregate(s=Sum("amount"))["s"]
        or ZERO
    )
    # The holds as stored on the resting orders (an index scan), not summed over the
    # account's whole ledger history on every refresh of the dashboard.
    held = order_margins([account.pk]).get(account.pk, ZERO)
    equity = account.balance + held + value
    return AccountOverview(
        account=account,
        balance=account.balance,
        collateral_locked=collateral,
        order_margin=held,
        unrealized_pnl=money(unrealized),
        equity=money(equity),
        realized_pnl=totals["realized"] or ZERO,
        fees_paid=totals["fees"] or ZERO,
        funded=funded,
        return_pct=return_pct(equity=equity, funded=funded),
        open_positions=valued,
    )
