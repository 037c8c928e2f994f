"""What a position holds moment by moment, and the floor of the loss its PnL chart draws."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from accounts.money import ZERO


@dataclass(frozen=True)
class Holding:
    """A position from one moment on: what is open, realised and held as collateral.

    The PnL chart plots ``realised + s·quantity·(mark - entry)``: the PnL the closes so far
    realised plus the unrealised PnL of what is still open, both before fees, as the page
    shows them ("Realised so far", the PnL). Only the unrealised part is still at risk, and
    isolation caps its loss at the collateral held at that moment: a close at a loss takes
    at most the collateral it releases, a liquidation at most all of it (the insurance fund
    pays past the bankruptcy price). So the PnL never goes below ``floor = realised -
    collateral``: margin added lowers it, margin removed raises it, and a close of q of Q
    raises it by what it releases (C·q/Q) plus what it realises (never below minus that),
    so by zero or more. Fees move neither line: the opening fee is paid on top of the
    collateral, a close's fee comes out of the part that close releases, and neither is in
    the PnL plotted. Once the position is closed nothing is held, and the floor is the
    realised PnL it ended with.
    """

    at: datetime
    quantity: Decimal
    realised: Decimal
    collateral: Decimal

    @property
    def floor(self) -> Decimal:
        return self.realised - self.collateral

    def fenced(self, unrealised: Decimal) -> Decimal:
        """The PnL with the ring-fence: the unrealised loss stops at the collateral."""
        return max(self.realised + unrealised, self.floor)


@dataclass(frozen=True)
class Change:
    """One event in a position's life: a close (quantity closed, PnL realised, collateral
    released, negative) or a margin change (collateral only)."""

    at: datetime
    closed: Decimal = ZERO
    realised: Decimal = ZERO
    collateral: Decimal = ZERO


class Holdings:
    """A position's holdings as a step function of time."""

    def __init__(
        self,
        *,
        opened_at: datetime,
        quantity: Decimal,
        collateral: Decimal,
        changes: Iterable[Change],
    ) -> None:
        state = Holding(opened_at, quantity, ZERO, collateral)
        self.steps = [state]
        # A stable sort: two changes at one instant apply in the order they were made.
        for change in sorted(changes, key=lambda c: c.at):
            state = Holding(
                max(change.at, opened_at),
                state.quantity - change.closed,
                state.realised + change.realised,
                state.collateral + change.collateral,
            )
            if state.at == self.steps[-1].at:
                self.steps[-1] = state
            else:
                self.steps.append(state)
        self._times = [step.at for step in self.steps]

    def at(self, moment: datetime) -> Holding:
        """What was held at ``moment`` (before the opening, what it opened with)."""
        return self.steps[max(bisect_right(self._times, moment) - 1, 0)]

    def times(self, start: datetime, end: datetime) -> list[datetime]:
        """The instants from ``start`` to ``end`` at which something changed."""
        return [at for at in self._times if start <= at <= end]
