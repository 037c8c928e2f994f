"""Instructor services that span the apps: resets, freezes, deactivations, trading switches, join
codes, grades, and the claim that lets each confirmation of an action act once.

Like every service they take keyword-only ids, run in one transaction, lock the account
before its positions and move money only through balanced ledger transactions.
Grants and deductions are ``accounts.services.account_adjust``.
"""

from __future__ import annotations

import csv
import io
import secrets
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TypeVar

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Model
from django.utils import timezone

from accounts import errors
from accounts.ledger import Leg, ledger_post, lock_classroom_pockets
from accounts.models import (
    Classroom,
    LedgerEntry,
    LedgerTransaction,
    Membership,
    TradingAccount,
    User,
    new_join_code,
)
from accounts.money import MAX_AMOUNT, ZERO, memo_money, money, money_text
from accounts.services import clean_amount, lock_accounts
from accounts.spreadsheet import cell
from liquidation.models import ConfirmedAction, MarginCall, PriceFeed, ReplayPoint
from liquidation.performance import Performance, accounts_performance
from positions.models import Instrument, MarginTier, Order, Position, TpSlChange
from positions.services import (
    OWNER_DEACTIVATED,
    lock_account,
    lock_accounts_with_open_positions,
    order_cancel,
    position_close,
)

Pocket = LedgerEntry.Pocket
_Row = TypeVar("_Row", bound=Model)


# --- accounts -------------------------------------------------------------------------


@transaction.atomic
def account_reset(*, account_id: int, actor_id: int | None = None) -> LedgerTransaction | None:
    """Close every open position at market, cancel resting orders, and restore the starting balance.

    The positions close through ``position_close`` (their own ledger transactions); the
    difference between the free balance then and the starting balance moves between the
    house and the account in one ``reset`` transaction (none if there is no difference).
    """
    account = lock_accounts_with_open_positions([account_id]).get(account_id)
    if account is None:
        raise errors.NotFound("No such trading account.")
    # The documented lock order: account, then positions, then orders.
    open_positions = Position.objects.filter(account_id=account.pk, status=Position.Status.OPEN)
    for position_id in open_positions.order_by("pk").values_list("pk", flat=True):
        try:
            position_close(position_id=position_id, past_liquidation_ok=True)
        except errors.AmountTooLarge:
            # A profit the free balance cannot take on top of what it holds (the refused
            # close wrote nothing). The balance ends at the starting balance anyway, so it
            # goes back to the house first and the close pays into an empty balance.
            _reset_balance(account, to=ZERO, actor_id=actor_id, why="close a position whose profit")
            try:
                position_close(position_id=position_id, past_liquidation_ok=True)
            except errors.AmountTooLarge as exc:
                # Its profit alone is past what Ringfence stores: no close at this mark can
                # record it, whatever the balance. The whole reset is refused (nothing written).
                symbol = Position.objects.get(pk=position_id).instrument.symbol
                raise errors.AmountTooLarge(
                    f"Position #{position_id} cannot be closed at the mark: its profit is past "
                    f"the largest amount Ringfence can store. Set a lower price for {symbol} "
                    "(Start a scenario on the instrument), then reset again."
                ) from exc
    resting = Order.objects.filter(account_id=account.pk, status=Order.Status.RESTING)
    for order_id in resting.order_by("pk").values_list("pk", flat=True):
        try:
            order_cancel(order_id=order_id)
        except errors.AmountTooLarge:
            # Likewise a hold the free balance cannot take back (the refused cancel wrote
            # nothing).
            _reset_balance(account, to=ZERO, actor_id=actor_id, why="cancel an order whose hold")
            order_cancel(order_id=order_id)
    return _reset_balance(account, to=account.classroom.starting_balance, actor_id=actor_id)


def _reset_balance(
    account: TradingAccount, *, to: Decimal, actor_id: int | None, why: str = ""
) -> LedgerTransaction | None:
    """Move the difference between the locked account's free balance and ``to`` between the
    house and the account, as a reset transaction (none if there is no difference); ``why``
    ends the memo of a reset to another amount than the starting balance."""
    account.refresh_from_db(fields=["balance"])
    delta = to - account.balance
    if not delta:
        return None
    return ledger_post(
        classroom_id=account.classroom_id,
        kind=LedgerTransaction.Kind.RESET,
        memo=f"Reset to the starting balance {memo_money(to, account.classroom.currency)}"
        if to == account.classroom.starting_balance
        else f"Reset: the free balance of {memo_money(account.balance, account.classroom.currency)}"
        f" back to the house, to {why} it could not take",
        created_by_id=actor_id,
        legs=[Leg(Pocket.HOUSE, -delta), Leg(Pocket.ACCOUNT, delta, account_id=account.pk)],
    )


@transaction.atomic
def account_set_frozen(*, account_id: int, frozen: bool) -> TradingAccount:
    """Freeze (no new orders or positions) or unfreeze one trading account."""
    account = lock_account(account_id)
    account.trading_frozen = frozen
    account.save(update_fields=["trading_frozen"])
    return account


@dataclass(frozen=True)
class Deactivation:
    """What deactivating a user did: the resting orders it cancelled, and those it left."""

    cancelled: list[int] = field(default_factory=list)
    # Orders whose hold the free balance could not take back (past what Ringfence stores):
    # they keep resting, and the engine never fills them (``order_execute``).
    left_resting: list[int] = field(default_factory=list)


@transaction.atomic
def user_set_active(*, user_id: int, active: bool) -> Deactivation:
    """Deactivate a user (they can no longer sign in or use their API keys) or activate them
    again: the one way a user's ``is_active`` changes.

    Deactivating cancels, in each of their trading accounts, every resting order that would
    open a position (through ``order_cancel``: its hold back in the free balance, its reason
    saying why). Their open positions stay, ring-fenced: their collateral, take-profit,
    stop-loss and reduce-only orders protect them and the engine still liquidates them;
    closing them is the instructor's call (a reset), as freezing the account is. Activating
    again gives nothing back: the cancelled orders stay cancelled.

    The trading accounts are locked before the user is written, so an engine tick filling one
    of the orders either commits first (and the order is no longer resting) or waits and
    then sees the user deactivated (``owner_deactivated``).
    """
    account_ids = TradingAccount.objects.filter(user_id=user_id).values_list("pk", flat=True)
    accounts = lock_accounts(account_ids)
    if not User.objects.filter(pk=user_id).update(is_active=active):
        raise errors.NotFound("No such user.")
    done = Deactivation()
    if active:
        return done
    resting = Order.objects.filter(
        account_id__in=list(accounts), status=Order.Status.RESTING, reduce_only=False
    )
    for order_id in resting.order_by("pk").values_list("pk", flat=True):
        try:
            order_cancel(order_id=order_id, why=OWNER_DEACTIVATED)
        except errors.AmountTooLarge:
            done.left_resting.append(order_id)
        else:
            done.cancelled.append(order_id)
    return done


# --- classrooms -----------------------------------------------------------------------


def _lock_classroom(classroom_id: int) -> Classroom:
    try:
        return Classroom.objects.select_for_update(no_key=True).get(pk=classroom_id)
    except Classroom.DoesNotExist:
        raise errors.NotFound("No such classroom.") from None


@transaction.atomic
def classroom_set_trading(*, classroom_id: int, enabled: bool) -> Classroom:
    """Open or close trading in a classroom now, whatever its trading window says.

    Closing switches trading off. Opening switches it on and, if the window has not opened
    yet, opens it now; if the window has closed, it no longer ends.
    """
    classroom = _lock_classroom(classroom_id)
    classroom.trading_enabled = enabled
    if enabled:
        now = timezone.now()
        if classroom.trading_opens_at and classroom.trading_opens_at > now:
            classroom.trading_opens_at = now
        if classroom.trading_closes_at and classroom.trading_closes_at <= now:
            classroom.trading_closes_at = None
    classroom.save(update_fields=["trading_enabled", "trading_opens_at", "trading_closes_at"])
    return classroom


def classroom_regenerate_join_code(*, classroom_id: int) -> Classroom:
    """Give a classroom a fresh join code; the old one stops working at once."""
    for _ in range(5):
        try:
            with transaction.atomic():
                classroom = _lock_classroom(classroom_id)
                old = classroom.join_code
                classroom.join_code = new_join_code()
                if classroom.join_code == old:
                    continue
                classroom.save(update_fields=["join_code"])
                return classroom
        except IntegrityError:
            # Another classroom holds the new code already: draw again.
            continue
    raise errors.DomainError("Could not draw a free join code; try again.")


@transaction.atomic
def insurance_fund_adjust(
    *, classroom_id: int, amount: object, reason: str, actor_id: int | None = None
) -> LedgerTransaction:
    """Top up (positive) or draw down (negative) a classroom's insurance fund from the house.

    The fund pays the shortfall when a liquidation gaps past the bankruptcy price; once it
    is empty, auto-deleveraging closes winners instead. It never goes below zero.
    """
    value = clean_amount(amount, allow_negative=True)
    reason = str(reason or "").strip()
    if not reason:
        raise errors.DomainError("Say why the insurance fund changes.", field="reason")
    classroom = _lock_classroom(classroom_id)
    fund = lock_classroom_pockets(classroom_id=classroom_id, kinds=[Pocket.INSURANCE])[
        Pocket.INSURANCE
    ]
    if fund.balance + value < 0:
        raise errors.InsufficientBalance(
            f"The insurance fund of {classroom.name} holds "
            f"{money_text(fund.balance, classroom.currency)}; it cannot go below zero.",
            field="amount",
        )
    if fund.balance + value >= MAX_AMOUNT:  # as a free balance: well inside the column
        raise errors.InvalidAmount(
            f"The insurance fund of {classroom.name} would grow too large.", field="amount"
        )
    return ledger_post(
        classroom_id=classroom_id,
        kind=LedgerTransaction.Kind.INSURANCE_ADJUST,
        memo=reason,
        created_by_id=actor_id,
        legs=[Leg(Pocket.HOUSE, -value), Leg(Pocket.INSURANCE, value)],
    )


@transaction.atomic
def classroom_copy_instruments(*, source_id: int, target_id: int) -> list[str]:
    """Copy a classroom's instruments (with their margin tiers, price feed and current mark)
    into another classroom, skipping symbols the target has already; returns those copied.

    The copies are the target's own: editing one later leaves the other class alone.
    """
    if source_id == target_id:
        raise errors.DomainError("Pick another classroom to copy from.", field="source")
    _lock_classroom(target_id)
    # Symbols are read in any letter case (the API, the bots): btcusdt is BTCUSDT here too.
    taken = {
        symbol.upper()
        for symbol in Instrument.objects.filter(classroom_id=target_id).values_list(
            "symbol", flat=True
        )
    }
    copied: list[str] = []
    sources = (
        Instrument.objects.filter(classroom_id=source_id)
        .prefetch_related("tiers")
        .order_by("symbol")
    )
    for original in sources:
        if original.symbol.upper() in taken:
            continue
        tiers = list(original.tiers.all())
        feed = PriceFeed.objects.filter(instrument=original).first()
        points = list(ReplayPoint.objects.filter(feed=feed)) if feed else []
        instrument = _as_new(original, classroom_id=target_id)
        instrument.save()
        MarginTier.objects.bulk_create(_as_new(tier, instrument=instrument) for tier in tiers)
        if feed is not None:
            copy = _as_new(feed, instrument=instrument, last_tick_at=None)
            copy.save()
            ReplayPoint.objects.bulk_create(_as_new(point, feed=copy) for point in points)
        copied.append(instrument.symbol)
    return copied


def _as_new(row: _Row, **changes: object) -> _Row:
    """``row`` turned into an unsaved new row with ``changes`` applied."""
    row.pk = None
    row._state.adding = True
    for name, value in changes.items():
        setattr(row, name, value)
    return row


# --- grades ---------------------------------------------------------------------------

OUTCOMES = list(MarginCall.Outcome)


@dataclass(frozen=True)
class Grade:
    """What a student did in a classroom, for the instructor's grade book."""

    username: str
    name: str
    equity: Decimal
    funded: Decimal
    return_pct: Decimal | None
    max_drawdown: Decimal
    max_drawdown_pct: Decimal
    trades: int
    liquidations: int
    average_leverage: Decimal | None
    max_leverage: int | None
    stop_loss_pct: Decimal | None
    margin_calls: int
    margin_call_outcomes: dict[str, int] = field(default_factory=dict)


@dataclass
class _Activity:
    """What grading reads of one account's trading, besides its performance figures."""

    positions: list[tuple[int, int, Decimal | None]] = field(default_factory=list)
    # Positions that had a stop-loss before, though no longer: from the order that opened
    # them, or set later (a closed position, say one its stop-loss took out, keeps none).
    protected_before: set[int] = field(default_factory=set)
    calls: Counter[str] = field(default_factory=Counter)


def _activities(account_ids: list[int]) -> dict[int, _Activity]:
    """Positions, stop-losses and margin calls of many accounts: four queries in all."""
    found: dict[int, _Activity] = {pk: _Activity() for pk in account_ids}
    for account_id, pk, leverage, stop_loss in Position.objects.filter(
        account_id__in=account_ids
    ).values_list("account_id", "pk", "leverage", "stop_loss"):
        found[account_id].positions.append((pk, leverage, stop_loss))
    for account_id, position_id in Order.objects.filter(
        position__account_id__in=account_ids, reduce_only=False, stop_loss__isnull=False
    ).values_list("position__account_id", "position_id"):
        found[account_id].protected_before.add(position_id)
    for account_id, position_id in TpSlChange.objects.filter(
        position__account_id__in=account_ids, stop_loss_after__isnull=False
    ).values_list("position__account_id", "position_id"):
        found[account_id].protected_before.add(position_id)
    for account_id, outcome in MarginCall.objects.filter(
        position__account_id__in=account_ids
    ).values_list("position__account_id", "outcome"):
        found[account_id].calls[outcome] += 1
    return found


def account_grade(account: TradingAccount, performance: Performance, activity: _Activity) -> Grade:
    """One student's grade, from figures read for the whole class at once."""
    positions = activity.positions
    with_stop = sum(
        1 for pk, _, sl in positions if sl is not None or pk in activity.protected_before
    )
    leverages = [lev for _, lev, _ in positions]
    calls = activity.calls
    user = account.user
    return Grade(
        username=user.get_username(),
        name=user.get_full_name(),
        equity=performance.equity,
        funded=performance.funded,
        return_pct=performance.return_pct,
        max_drawdown=performance.max_drawdown,
        max_drawdown_pct=performance.max_drawdown_pct,
        trades=len(positions),
        liquidations=performance.liquidations,
        average_leverage=money(Decimal(sum(leverages)) / len(leverages)) if leverages else None,
        max_leverage=max(leverages) if leverages else None,
        stop_loss_pct=money(Decimal(with_stop) / len(positions) * 100) if positions else None,
        margin_calls=sum(calls.values()),
        margin_call_outcomes={outcome.value: calls.get(outcome.value, 0) for outcome in OUTCOMES},
    )


def classroom_grades(*, classroom_id: int, account_ids: list[int] | None = None) -> list[Grade]:
    """One grade per student account of the classroom (or of the chosen accounts), by name.

    The queries it runs do not grow with the class.
    """
    accounts = (
        TradingAccount.objects.filter(
            classroom_id=classroom_id,
            user__memberships__classroom_id=classroom_id,
            user__memberships__role=Membership.Role.STUDENT,
        )
        .select_related("user", "classroom")
        .order_by("user__username", "pk")
    )
    if account_ids is not None:
        accounts = accounts.filter(pk__in=account_ids)
    chosen = list(accounts)
    performance = accounts_performance(chosen)
    activity = _activities([account.pk for account in chosen])
    return [
        account_grade(account, performance[account.pk], activity[account.pk]) for account in chosen
    ]


GRADE_COLUMNS = [
    "classroom",
    "username",
    "name",
    "equity",
    "funded",
    "return_pct",
    "max_drawdown",
    "max_drawdown_pct",
    "trades",
    "liquidations",
    "average_leverage",
    "max_leverage",
    "stop_loss_pct",
    "margin_calls",
    *(f"margin_calls_{outcome.value}" for outcome in OUTCOMES),
]


def grades_csv(rows: list[tuple[Classroom, Grade]]) -> str:
    """The grade book as CSV text, one row per student, amounts as plain decimals."""

    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(GRADE_COLUMNS)
    for classroom, grade in rows:
        writer.writerow(
            [
                cell(v)
                for v in (
                    classroom.name,
                    grade.username,
                    grade.name,
                    grade.equity,
                    grade.funded,
                    grade.return_pct,
                    grade.max_drawdown,
                    grade.max_drawdown_pct,
                    grade.trades,
                    grade.liquidations,
                    grade.average_leverage,
                    grade.max_leverage,
                    grade.stop_loss_pct,
                    grade.margin_calls,
                    *(grade.margin_call_outcomes[o.value] for o in OUTCOMES),
                )
            ]
        )
    return out.getvalue()


# --- confirmations --------------------------------------------------------------------


# A confirmation page is good for half a day, the default length of a sign-in: long enough
# for a page opened before a lesson and confirmed after it, and since a claim cannot be kept
# forever, a page older than that is refused whether or not it was sent before. Its claim is
# kept a twelfth longer (an hour at the default) than the page is accepted, so that a web
# server whose clock runs behind the worker's still finds the claim of a page it accepts.
CONFIRMATION_MAX_AGE_SECONDS = 12 * 3600


def confirmation_max_age() -> timedelta:
    return timedelta(
        seconds=getattr(settings, "CONFIRMATION_MAX_AGE_SECONDS", CONFIRMATION_MAX_AGE_SECONDS)
    )


def confirmation_token(now: datetime | None = None) -> str:
    """A new one-time token: 32 hex digits, the first 8 its time of issue in seconds."""
    issued = int((now or timezone.now()).timestamp())
    return f"{issued:08x}{secrets.token_hex(12)}"


def confirmation_expired(*, token: str, now: datetime | None = None) -> bool:
    """Whether the page that carries ``token`` is too old to act: its claim, if it was sent
    before, may be pruned already, so it could act a second time.

    A token from the future (more than a few minutes of clocks apart) is refused too: it was
    not issued here.
    """
    now = now or timezone.now()
    issued = datetime.fromtimestamp(int(token[:8], 16), tz=UTC)
    return not now - confirmation_max_age() <= issued <= now + timedelta(minutes=5)


def confirmation_prune(now: datetime | None = None) -> int:
    """Forget the claims of pages that are refused as too old anyway; the number forgotten."""
    now = now or timezone.now()
    keep = confirmation_max_age() * 13 / 12
    deleted, _ = ConfirmedAction.objects.filter(created_at__lt=now - keep).delete()
    return deleted


def confirmation_claim(*, token: str, actor_id: int | None) -> bool:
    """Claim the token of a confirmation page for the caller's transaction; False when it
    was claimed already (the same confirmation sent again after it acted).

    Run it inside the action's transaction: a claim by a transaction still running makes
    this one wait for its outcome, and a refused action leaves its token unclaimed.
    """
    try:
        with transaction.atomic():
            ConfirmedAction.objects.create(token=token, created_by_id=actor_id)
    except IntegrityError:
        return False
    return True


def confirmation_record_classroom(*, token: str, classroom_id: int) -> None:
    """Note the classroom that the claimed "add classroom" form created, in its transaction."""
    ConfirmedAction.objects.filter(token=token).update(classroom_id=classroom_id)


def confirmed_classroom_id(*, token: str) -> int | None:
    """The classroom that an "add classroom" form's first sending created, if it still exists."""
    return (
        ConfirmedAction.objects.filter(token=token).values_list("classroom_id", flat=True).first()
    )
