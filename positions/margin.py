"""Isolated-margin mathematics: pure ``Decimal`` functions, no Django, no I/O.

Notation (Binance USDⓈ-M isolated margin): side s = +1 long, -1 short; Q quantity;
EP entry price; P mark price; WB the position's isolated collateral (initial margin plus
margin added, minus margin removed).

- notional        N(P) = Q * P
- initial margin  IM = Q * EP / leverage
- unrealised PnL  uPnL = s * Q * (P - EP)
- margin balance  MB = WB + uPnL
- maintenance     MM(P) = N(P) * mmr_k - cum_k, tier k chosen by N(P); the tier's
                  maintenance amount cum_k = floor_k * (mmr_k - mmr_{k-1}) + cum_{k-1}
                  makes MM continuous across tier boundaries.
- margin ratio    MM / MB; the position is liquidated when MB <= MM (ratio >= 100%).
- liquidation     LP = (WB + cum_k - s*Q*EP) / (Q*mmr_k - s*Q), with k the tier that
                  contains the notional *at LP*. A long whose LP <= 0 is never liquidated.
- bankruptcy      BP = EP - s * WB / Q (margin balance zero).

For a long BP < LP < EP; for a short EP < LP < BP.

Results are exact to 40 significant digits; rounding for storage happens in
``accounts.money``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal, localcontext
from enum import StrEnum

_PRECISION = 40
_ZERO = Decimal(0)


class Side(StrEnum):
    LONG = "long"
    SHORT = "short"


def side_sign(side: str) -> int:
    """+1 for a long, -1 for a short; anything else is a programming error."""
    if side == Side.LONG:
        return 1
    if side == Side.SHORT:
        return -1
    raise ValueError(f"side must be 'long' or 'short', not {side!r}")


@dataclass(frozen=True)
class Tier:
    """One maintenance bracket: notional in [floor, cap), its rate, amount and leverage cap."""

    notional_floor: Decimal
    notional_cap: Decimal | None
    mmr: Decimal
    cum: Decimal
    max_leverage: int

    def contains(self, notional: Decimal) -> bool:
        return notional >= self.notional_floor and (
            self.notional_cap is None or notional < self.notional_cap
        )


TableNumber = Decimal | int | str


def _as_typed(value: Decimal | None) -> str:
    """A notional in a message as people write it: 50000, not 5E+4 or 50000.00000000."""
    if value is None:
        return "no cap"
    return "0" if value == 0 else f"{value.normalize():f}"


def tiers_from_table(
    rows: Iterable[tuple[TableNumber, TableNumber | None, TableNumber, int]],
) -> list[Tier]:
    """Build tiers from (floor, cap, mmr, max_leverage) rows, deriving each maintenance amount.

    Rows must start at a floor of 0, be contiguous (each cap is the next floor), have
    non-decreasing rates and non-increasing leverage caps; only the last cap may be None.
    """
    ordered = sorted(
        (
            (Decimal(f), None if c is None else Decimal(c), Decimal(m), int(lev))
            for f, c, m, lev in rows
        ),
        key=lambda row: row[0],
    )
    if not ordered:
        raise ValueError("a margin table needs at least one tier")
    if ordered[0][0] != 0:
        raise ValueError("the first tier must start at a notional of 0")
    tiers: list[Tier] = []
    previous_mmr = _ZERO
    cum = _ZERO
    for index, (floor, cap, mmr, max_leverage) in enumerate(ordered):
        last = index == len(ordered) - 1
        if cap is None and not last:
            raise ValueError("only the last tier may be open-ended")
        if cap is not None and cap <= floor:
            raise ValueError(f"tier starting at {_as_typed(floor)} must end above its floor")
        if not last and cap != ordered[index + 1][0]:
            raise ValueError(
                f"tier ending at {_as_typed(cap)} must be followed by a tier starting there"
            )
        if not (_ZERO < mmr < 1):
            raise ValueError("a maintenance rate must lie strictly between 0 and 1")
        if mmr < previous_mmr:
            raise ValueError("maintenance rates must not decrease from tier to tier")
        if max_leverage < 1:
            raise ValueError("a tier's leverage cap must be at least 1")
        if tiers and max_leverage > tiers[-1].max_leverage:
            raise ValueError("leverage caps must not increase from tier to tier")
        if mmr * max_leverage >= 1:
            raise ValueError("a tier's maintenance rate must be below its initial margin rate")
        with localcontext() as ctx:
            ctx.prec = _PRECISION
            cum = floor * (mmr - previous_mmr) + cum
        tiers.append(Tier(floor, cap, mmr, cum, max_leverage))
        previous_mmr = mmr
    return tiers


def tier_for_notional(*, notional: Decimal, tiers: Sequence[Tier]) -> Tier:
    """The tier whose bracket holds ``notional`` (the last one beyond every cap)."""
    for tier in tiers:
        if tier.contains(notional):
            return tier
    return tiers[-1]


def initial_margin(*, entry_price: Decimal, quantity: Decimal, leverage: int | Decimal) -> Decimal:
    if Decimal(leverage) <= 0:
        raise ValueError("leverage must be positive")
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        return quantity * entry_price / Decimal(leverage)


def maintenance_margin(*, notional: Decimal, tiers: Sequence[Tier]) -> Decimal:
    tier = tier_for_notional(notional=abs(notional), tiers=tiers)
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        return abs(notional) * tier.mmr - tier.cum


def unrealized_pnl(
    *, side: str, entry_price: Decimal, quantity: Decimal, mark_price: Decimal
) -> Decimal:
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        return side_sign(side) * quantity * (mark_price - entry_price)


def margin_balance(
    *, side: str, entry_price: Decimal, quantity: Decimal, collateral: Decimal, mark_price: Decimal
) -> Decimal:
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        return collateral + unrealized_pnl(
            side=side, entry_price=entry_price, quantity=quantity, mark_price=mark_price
        )


def margin_ratio(
    *,
    side: str,
    entry_price: Decimal,
    quantity: Decimal,
    collateral: Decimal,
    mark_price: Decimal,
    tiers: Sequence[Tier],
) -> Decimal | None:
    """MM / MB at the mark; None when the margin balance is zero or negative (bankrupt)."""
    balance = margin_balance(
        side=side,
        entry_price=entry_price,
        quantity=quantity,
        collateral=collateral,
        mark_price=mark_price,
    )
    if balance <= 0:
        return None
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        return maintenance_margin(notional=quantity * mark_price, tiers=tiers) / balance


def is_liquidatable(
    *,
    side: str,
    entry_price: Decimal,
    quantity: Decimal,
    collateral: Decimal,
    mark_price: Decimal,
    tiers: Sequence[Tier],
) -> bool:
    """The margin test: liquidate when the margin balance is at or below maintenance."""
    balance = margin_balance(
        side=side,
        entry_price=entry_price,
        quantity=quantity,
        collateral=collateral,
        mark_price=mark_price,
    )
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        return balance <= maintenance_margin(notional=quantity * mark_price, tiers=tiers)


def liquidation_price(
    *,
    side: str,
    entry_price: Decimal,
    quantity: Decimal,
    collateral: Decimal,
    tiers: Sequence[Tier],
) -> Decimal | None:
    """The mark at which MB = MM, or None when the position can never be liquidated.

    Each bracket k gives a candidate from the formula; the answer is the candidate whose
    notional lies in bracket k itself. The brackets cover every notional: the first one
    extends below its floor (a long's negative candidate: never liquidated) and the last
    one beyond its cap, as in ``tier_for_notional``. MB - MM is strictly monotonic in the
    price and MM is continuous, so exactly one bracket is self-consistent, or two equal
    ones at an edge.
    """
    if quantity <= 0:
        raise ValueError("quantity must be positive")
    if not tiers:
        raise ValueError("a liquidation price needs at least one margin tier")
    s = side_sign(side)
    last = len(tiers) - 1
    best: tuple[Decimal, Decimal] | None = None  # (distance of N(LP) from the tier, LP)
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        for index, tier in enumerate(tiers):
            denominator = quantity * tier.mmr - s * quantity
            candidate = (collateral + tier.cum - s * quantity * entry_price) / denominator
            notional = quantity * candidate
            above_floor = index == 0 or notional >= tier.notional_floor
            below_cap = index == last or tier.notional_cap is None or notional < tier.notional_cap
            if above_floor and below_cap:
                best = (_ZERO, candidate)
                break
            # Rounding at a bracket edge can leave no bracket exactly self-consistent; MM is
            # continuous there, so the candidate nearest its own bracket is the answer.
            if not above_floor:
                distance = tier.notional_floor - notional
            else:
                assert tier.notional_cap is not None
                distance = notional - tier.notional_cap
            if best is None or distance < best[0]:
                best = (distance, candidate)
    assert best is not None
    lp = best[1]
    if lp <= 0:
        return None
    return lp


def bankruptcy_price(
    *, side: str, entry_price: Decimal, quantity: Decimal, collateral: Decimal
) -> Decimal:
    if quantity <= 0:
        raise ValueError("quantity must be positive")
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        return entry_price - side_sign(side) * collateral / quantity


def max_leverage_for_notional(*, notional: Decimal, tiers: Sequence[Tier]) -> int:
    return tier_for_notional(notional=notional, tiers=tiers).max_leverage
