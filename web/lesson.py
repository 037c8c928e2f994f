"""The isolation lesson: the same price path under isolated and under cross margin.

Pure ``Decimal`` arithmetic on top of ``positions.margin``; no Django, no I/O. Under
isolated margin a position can lose its collateral and nothing else. Under cross margin
the whole account (free balance, what its resting orders hold, and this position's
collateral) backs the position, so it survives deeper moves but a liquidation takes
everything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal

from accounts.money import MONEY_STEP, ZERO, money
from positions import margin


@dataclass(frozen=True)
class CrossOutcome:
    """What the whole account as collateral would have done on the same path."""

    # Free balance + what resting orders hold (an exchange cancels them to save a cross
    # position) + this position's collateral.
    account_collateral: Decimal
    survived: bool
    loss_at_worst: Decimal  # unrealised loss at the worst price (0 if the path never lost)
    consumed: Decimal  # how much of the account the path took: all of it when liquidated
    consumed_pct: Decimal


@dataclass(frozen=True)
class IsolationLesson:
    side: str
    entry_price: Decimal
    quantity: Decimal
    collateral: Decimal
    worst_price: Decimal
    liquidated: bool
    isolated_loss: Decimal  # what isolated margin took: the collateral when liquidated
    free_balance_before: Decimal
    free_balance_after: Decimal  # untouched by an isolated position's loss
    cross: CrossOutcome
    # The smallest extra collateral with which the isolated position survives the worst price.
    extra_collateral_needed: Decimal
    # For a liquidated position: how far the mark went beyond the liquidation afterwards.
    liquidation_mark: Decimal | None
    worst_after_liquidation: Decimal | None
    move_after_liquidation_pct: Decimal | None


def survives(
    *,
    side: str,
    entry_price: Decimal,
    quantity: Decimal,
    collateral: Decimal,
    price: Decimal,
    tiers: Sequence[margin.Tier],
) -> bool:
    return not margin.is_liquidatable(
        side=side,
        entry_price=entry_price,
        quantity=quantity,
        collateral=collateral,
        mark_price=price,
        tiers=tiers,
    )


def collateral_to_survive(
    *,
    side: str,
    entry_price: Decimal,
    quantity: Decimal,
    price: Decimal,
    tiers: Sequence[margin.Tier],
) -> Decimal:
    """The least collateral (to the money step) whose margin balance stays above maintenance."""
    upnl = margin.unrealized_pnl(
        side=side, entry_price=entry_price, quantity=quantity, mark_price=price
    )
    mm = margin.maintenance_margin(notional=quantity * price, tiers=tiers)
    # Liquidation happens at MB <= MM, so one money step above the break-even collateral.
    needed = (mm - upnl).quantize(MONEY_STEP, rounding=ROUND_CEILING)
    if needed + upnl <= mm:
        needed += MONEY_STEP
    return max(needed, ZERO)


def worse(side: str, a: Decimal, b: Decimal) -> Decimal:
    """The price of the two that hurts a position of this side more."""
    return min(a, b) if side == margin.Side.LONG else max(a, b)


def isolation_lesson(
    *,
    side: str,
    entry_price: Decimal,
    quantity: Decimal,
    collateral: Decimal,
    free_balance: Decimal,
    worst_price: Decimal,
    tiers: Sequence[margin.Tier],
    held_by_orders: Decimal = ZERO,
    liquidated: bool = False,
    liquidation_mark: Decimal | None = None,
    worst_after_liquidation: Decimal | None = None,
) -> IsolationLesson:
    """Compare isolated and cross margin on the path whose worst price is ``worst_price``.

    ``collateral`` is the position's isolated collateral (just before a liquidation);
    ``free_balance`` and ``held_by_orders`` (what resting orders hold besides it) the rest
    of the account, which isolated margin never touches.
    """
    s = margin.side_sign(side)
    upnl_worst = margin.unrealized_pnl(
        side=side, entry_price=entry_price, quantity=quantity, mark_price=worst_price
    )
    loss_at_worst = money(max(-upnl_worst, ZERO))
    isolated_loss = collateral if liquidated else min(loss_at_worst, collateral)

    account_collateral = free_balance + held_by_orders + collateral
    cross_survived = survives(
        side=side,
        entry_price=entry_price,
        quantity=quantity,
        collateral=account_collateral,
        price=worst_price,
        tiers=tiers,
    )
    consumed = min(loss_at_worst, account_collateral) if cross_survived else account_collateral
    consumed_pct = money(consumed / account_collateral * 100) if account_collateral else ZERO

    needed = collateral_to_survive(
        side=side, entry_price=entry_price, quantity=quantity, price=worst_price, tiers=tiers
    )
    move_pct = None
    if liquidated and liquidation_mark and worst_after_liquidation is not None:
        beyond = worse(side, worst_after_liquidation, liquidation_mark)
        move_pct = money(-s * (beyond - liquidation_mark) / liquidation_mark * 100)
    return IsolationLesson(
        side=side,
        entry_price=entry_price,
        quantity=quantity,
        collateral=collateral,
        worst_price=worst_price,
        liquidated=liquidated,
        isolated_loss=isolated_loss,
        free_balance_before=free_balance,
        free_balance_after=free_balance,
        cross=CrossOutcome(
            account_collateral=account_collateral,
            survived=cross_survived,
            loss_at_worst=loss_at_worst,
            consumed=consumed,
            consumed_pct=consumed_pct,
        ),
        extra_collateral_needed=max(needed - collateral, ZERO),
        liquidation_mark=liquidation_mark,
        worst_after_liquidation=worst_after_liquidation,
        move_after_liquidation_pct=move_pct,
    )
