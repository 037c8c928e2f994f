"""Leaderboard arithmetic: maximum drawdown of an equity path and the ranking score. Pure."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from accounts.money import ZERO, money

# Risk-adjusted ranking divides the return by the drawdown, but never by less than 1%:
# a trader who never lost is not ranked by a division by zero.
MIN_DRAWDOWN_PCT = Decimal(1)


def max_drawdown_pct(equity_path: Iterable[Decimal]) -> Decimal:
    """The largest fall from a running peak, as a percentage of that peak."""
    peak: Decimal | None = None
    worst = ZERO
    for value in equity_path:
        if peak is None or value > peak:
            peak = value
        elif peak > 0:
            worst = max(worst, (peak - value) / peak * 100)
    return money(worst)


def ranking_score(
    *, return_pct: Decimal | None, drawdown_pct: Decimal, risk_adjusted: bool
) -> Decimal:
    ret = return_pct if return_pct is not None else ZERO
    if not risk_adjusted:
        return ret
    return money(ret / max(drawdown_pct, MIN_DRAWDOWN_PCT))
