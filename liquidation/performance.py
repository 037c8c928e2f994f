"""How well a student traded: the one definition of equity, return, drawdown and liquidations.

The classroom leaderboard (page and API) and the instructor's grade book both read these
numbers from here, so a student sees the same maximum drawdown, return and liquidation
count wherever they are shown.

The performance curve leaves funding out: a deposit, a grant, a deduction or a reset by
the instructor is not trading, so it is neither a gain nor a drawdown. The curve starts
at the starting balance the student was paid on joining (the classroom's may have changed
since); each ledger transaction that moves the account's
free balance or collateral, other than funding, adds its net amount (fees, realised PnL,
lost collateral); the last point is the performance at the current marks, that starting
balance plus equity minus the money paid in.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from django.db.models import Count, Sum

from accounts.models import Classroom, LedgerEntry, LedgerTransaction, TradingAccount
from accounts.money import ZERO, money
from liquidation.models import LiquidationEvent
from positions.selectors import (
    FUNDING_KINDS,
    account_equities,
    return_pct,
)

# Risk-adjusted ranking divides the return by the drawdown, but never by less than 1%:
# a trader who never lost is not ranked by a division by zero.
MIN_DRAWDOWN_PCT = Decimal(1)


# --- pure arithmetic ----------------------------------------------------------------------


@dataclass(frozen=True)
class Drawdown:
    """The largest fall from a running peak: its amount, and that fall in percent of the peak."""

    amount: Decimal
    pct: Decimal


def max_drawdown(points: Iterable[Decimal]) -> Drawdown:
    peak: Decimal | None = None
    worst, worst_pct = ZERO, ZERO
    for value in points:
        if peak is None or value > peak:
            peak = value
        fall = peak - value
        if fall > worst:
            worst = fall
            worst_pct = fall / peak * 100 if peak > 0 else ZERO
    return Drawdown(money(worst), money(worst_pct))


def ranking_score(
    *, return_pct: Decimal | None, drawdown_pct: Decimal, risk_adjusted: bool
) -> Decimal:
    ret = return_pct if return_pct is not None else ZERO
    if not risk_adjusted:
        return ret
    return money(ret / max(drawdown_pct, MIN_DRAWDOWN_PCT))


# --- many accounts at once ----------------------------------------------------------------


@dataclass(frozen=True)
class Performance:
    account: TradingAccount
    equity: Decimal  # free balance, what resting orders hold, open positions at the marks
    funded: Decimal  # deposits, grants, deductions and resets: the money paid in
    return_pct: Decimal | None
    curve: list[Decimal]  # funding left out, from the starting balance to today
    max_drawdown: Decimal
    max_drawdown_pct: Decimal
    liquidations: int


def accounts_performance(accounts: Sequence[TradingAccount]) -> dict[int, Performance]:
    """The performance of each account, by id, in a constant number of queries.

    The accounts must carry their classroom (``select_related("classroom")``) or share one
    already loaded; the queries do not grow with the number of accounts or movements.
    """
    ids = [a.pk for a in accounts]
    if not ids:
        return {}
    equities = account_equities(accounts)
    funded: dict[int, Decimal] = defaultdict(lambda: ZERO)
    # The starting balance each student was paid on joining: the class's starting balance
    # may have been changed since, and a fall is measured against what they traded with.
    deposited: dict[int, Decimal] = {}
    for account_id, kind, amount in (
        LedgerEntry.objects.filter(
            account_id__in=ids,
            pocket=LedgerEntry.Pocket.ACCOUNT,
            transaction__kind__in=FUNDING_KINDS,
        )
        .values_list("account_id", "transaction__kind")
        .annotate(s=Sum("amount"))
        .values_list("account_id", "transaction__kind", "s")
    ):
        funded[account_id] += amount
        if kind == LedgerTransaction.Kind.DEPOSIT:
            deposited[account_id] = amount
    liquidations: dict[int, int] = dict(
        LiquidationEvent.objects.filter(position__account_id__in=ids)
        .values_list("position__account_id")
        .annotate(n=Count("id"))
        .values_list("position__account_id", "n")
    )
    # One point per ledger transaction (its legs summed), so moving money from the free
    # balance into collateral or an order's hold never shows up as a dip, only the fee it costs.
    flows: dict[int, list[Decimal]] = defaultdict(list)
    for account_id, amount in (
        LedgerEntry.objects.filter(
            account_id__in=ids,
            pocket__in=[
                LedgerEntry.Pocket.ACCOUNT,
                LedgerEntry.Pocket.COLLATERAL,
                LedgerEntry.Pocket.ORDER,
            ],
        )
        .exclude(transaction__kind__in=FUNDING_KINDS)
        .values_list("account_id", "transaction_id")
        .annotate(s=Sum("amount"))
        .order_by("transaction_id")
        .values_list("account_id", "s")
    ):
        flows[account_id].append(amount)
    result = {}
    for account in accounts:
        equity = equities[account.pk]
        paid_in = funded[account.pk]
        base = deposited.get(account.pk, account.classroom.starting_balance)
        curve = [base]
        for amount in flows[account.pk]:
            curve.append(curve[-1] + amount)
        curve.append(base + equity - paid_in)
        drawdown = max_drawdown(curve)
        result[account.pk] = Performance(
            account=account,
            equity=equity,
            funded=paid_in,
            return_pct=return_pct(equity=equity, funded=paid_in),
            curve=curve,
            max_drawdown=drawdown.amount,
            max_drawdown_pct=drawdown.pct,
            liquidations=liquidations.get(account.pk, 0),
        )
    return result


# --- the leaderboard ----------------------------------------------------------------------


@dataclass(frozen=True)
class LeaderboardRow:
    account: TradingAccount
    equity: Decimal
    return_pct: Decimal | None
    max_drawdown_pct: Decimal
    liquidations: int
    score: Decimal


def leaderboard(classroom: Classroom) -> list[LeaderboardRow]:
    """Every trading account of a classroom ranked, in a constant number of queries.

    Classmates see this ranking, so a deactivated user (who has left, or was shut out) is
    left out: their name and results are no longer shown to the class. The instructor's
    grade export still has them.
    """
    accounts = list(
        TradingAccount.objects.filter(
            classroom_id=classroom.pk, user__is_active=True
        ).select_related("user")
    )
    for account in accounts:
        account.classroom = classroom
    risk_adjusted = classroom.ranking == Classroom.Ranking.RISK_ADJUSTED
    rows = [
        LeaderboardRow(
            account=p.account,
            equity=p.equity,
            return_pct=p.return_pct,
            max_drawdown_pct=p.max_drawdown_pct,
            liquidations=p.liquidations,
            score=ranking_score(
                return_pct=p.return_pct,
                drawdown_pct=p.max_drawdown_pct,
                risk_adjusted=risk_adjusted,
            ),
        )
        for p in accounts_performance(accounts).values()
    ]
    rows.sort(key=lambda r: (-r.score, -r.equity, r.account.pk))
    return rows
