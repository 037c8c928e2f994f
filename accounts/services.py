"""Services that change classrooms and their money: create, join, grant, deduct."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal, InvalidOperation

from django.db import IntegrityError, transaction
from django.db.models import Sum

from accounts import errors
from accounts.ledger import Leg, ledger_post
from accounts.models import (
    Classroom,
    ClassroomPocket,
    LedgerEntry,
    LedgerTransaction,
    Membership,
    TradingAccount,
)
from accounts.money import (
    MAX_AMOUNT,
    MONEY_PLACES,
    ZERO,
    money,
    money_text,
    parse_decimal,
    places,
)

Pocket = LedgerEntry.Pocket


def clean_amount(
    value: object, *, field: str = "amount", allow_zero: bool = False, allow_negative: bool = False
) -> Decimal:
    """A money amount from user input: a finite number with at most 8 decimal places."""
    try:
        amount = parse_decimal(value)
    except (InvalidOperation, ValueError):
        raise errors.InvalidAmount("Enter a number.", field=field) from None
    if not amount.is_finite():
        raise errors.InvalidAmount("Enter a finite number.", field=field)
    if amount.copy_abs() >= MAX_AMOUNT:  # first: counting the places of 1e1000000 overflows
        raise errors.InvalidAmount("The amount is too large.", field=field)
    if places(amount) > MONEY_PLACES:
        raise errors.InvalidAmount(f"Use at most {MONEY_PLACES} decimal places.", field=field)
    if amount < 0 and not allow_negative:
        raise errors.InvalidAmount("The amount must be positive.", field=field)
    if amount == 0 and not allow_zero:
        raise errors.InvalidAmount("The amount must not be zero.", field=field)
    return ZERO if amount == 0 else money(amount)  # "-0" is zero, not minus zero


@transaction.atomic
def classroom_create(
    *,
    instructor_id: int,
    name: str,
    starting_balance: Decimal = Decimal("10000"),
    currency: str = "USDT",
    max_leverage: int = 20,
    liquidation_fee_rate: Decimal = Decimal("0.005"),
    leftover_policy: str = Classroom.LeftoverPolicy.INSURANCE_FUND,
    insurance_fund_seed: Decimal = ZERO,
    trading_opens_at: datetime | None = None,
    trading_closes_at: datetime | None = None,
) -> Classroom:
    """Create a classroom with its house, insurance fund and fee pockets."""
    name = str(name or "").strip()
    if not name:
        raise errors.DomainError("Give the classroom a name.", field="name")
    if len(name) > Classroom._meta.get_field("name").max_length:  # type: ignore[operator]
        raise errors.DomainError("The name is too long.", field="name")
    currency = str(currency or "").strip()
    if not 1 <= len(currency) <= Classroom._meta.get_field("currency").max_length:  # type: ignore[operator]
        raise errors.DomainError("Give a currency label of up to 12 characters.", field="currency")
    if leftover_policy not in Classroom.LeftoverPolicy.values:
        raise errors.DomainError("Unknown leftover policy.", field="leftover_policy")
    starting_balance = clean_amount(starting_balance, field="starting_balance")
    insurance_fund_seed = clean_amount(
        insurance_fund_seed, field="insurance_fund_seed", allow_zero=True
    )
    try:
        max_leverage = int(str(max_leverage).strip())
    except (TypeError, ValueError):
        raise errors.InvalidLeverage(
            "Maximum leverage must be a whole number.", field="max_leverage"
        ) from None
    if not 1 <= max_leverage <= 125:
        raise errors.InvalidLeverage(
            "Maximum leverage must be between 1 and 125.", field="max_leverage"
        )
    liquidation_fee_rate = clean_amount(
        liquidation_fee_rate, field="liquidation_fee_rate", allow_zero=True, allow_negative=True
    )
    if not ZERO <= liquidation_fee_rate <= Decimal("0.1"):
        raise errors.DomainError(
            "The liquidation fee must be between 0 and 10%.", field="liquidation_fee_rate"
        )
    if trading_opens_at and trading_closes_at and trading_closes_at <= trading_opens_at:
        raise errors.DomainError("Trading must close after it opens.", field="trading_closes_at")
    classroom = Classroom.objects.create(
        instructor_id=instructor_id,
        name=name,
        starting_balance=starting_balance,
        currency=currency,
        max_leverage=max_leverage,
        liquidation_fee_rate=liquidation_fee_rate,
        leftover_policy=leftover_policy,
        trading_opens_at=trading_opens_at,
        trading_closes_at=trading_closes_at,
    )
    ClassroomPocket.objects.bulk_create(
        ClassroomPocket(classroom=classroom, kind=kind) for kind in ClassroomPocket.Kind.values
    )
    Membership.objects.create(
        user_id=instructor_id, classroom=classroom, role=Membership.Role.INSTRUCTOR
    )
    if insurance_fund_seed:
        ledger_post(
            classroom_id=classroom.pk,
            kind=LedgerTransaction.Kind.INSURANCE_SEED,
            memo="Insurance fund seeded by the instructor",
            created_by_id=instructor_id,
            legs=[
                Leg(Pocket.HOUSE, -insurance_fund_seed),
                Leg(Pocket.INSURANCE, insurance_fund_seed),
            ],
        )
    return classroom


def instructor_refusal(*, classroom_id: int, instructor_id: int) -> str | None:
    """Why the user ``instructor_id`` cannot take over the classroom, or ``None``."""
    trades = Membership.objects.filter(
        classroom_id=classroom_id, user_id=instructor_id, role=Membership.Role.STUDENT
    ).select_related("user", "classroom")
    member = trades.first()
    if member is None:
        return None
    return (
        f"{member.user} is a student of {member.classroom.name}, with a trading account there: "
        "pick someone who does not trade in the class."
    )


@transaction.atomic
def classroom_set_instructor(*, classroom_id: int, instructor_id: int) -> Classroom:
    """Hand a classroom to another instructor. The instructor's membership moves with it, so
    the roster names who teaches the class and the previous instructor leaves it."""
    classroom = Classroom.objects.select_for_update(no_key=True).filter(pk=classroom_id).first()
    if classroom is None:
        raise errors.NotFound("No such classroom.")
    if classroom.instructor_id == instructor_id:
        return classroom
    refusal = instructor_refusal(classroom_id=classroom_id, instructor_id=instructor_id)
    if refusal is not None:
        raise errors.DomainError(refusal, field="instructor")
    Membership.objects.filter(
        classroom=classroom, user_id=classroom.instructor_id, role=Membership.Role.INSTRUCTOR
    ).delete()
    Membership.objects.get_or_create(
        classroom=classroom, user_id=instructor_id, defaults={"role": Membership.Role.INSTRUCTOR}
    )
    classroom.instructor_id = instructor_id
    classroom.save(update_fields=["instructor"])
    return classroom


NO_SUCH_JOIN_CODE = "No classroom has this join code."


def classroom_for_join_code(join_code: str | None) -> Classroom | None:
    """The classroom a join code opens (codes are read without case or spaces), if any."""
    code = (join_code or "").strip().upper()
    return Classroom.objects.filter(join_code=code).first() if code else None


def classroom_join(*, user_id: int, join_code: str) -> TradingAccount:
    """Join a classroom by its code as a student; the house funds the new account."""
    classroom = classroom_for_join_code(join_code)
    if classroom is None:
        raise errors.InvalidJoinCode(NO_SUCH_JOIN_CODE, field="join_code")
    try:
        with transaction.atomic():
            Membership.objects.create(
                user_id=user_id, classroom=classroom, role=Membership.Role.STUDENT
            )
            account = TradingAccount.objects.create(user_id=user_id, classroom=classroom)
            ledger_post(
                classroom_id=classroom.pk,
                kind=LedgerTransaction.Kind.DEPOSIT,
                memo="Starting balance",
                legs=[
                    Leg(Pocket.HOUSE, -classroom.starting_balance),
                    Leg(Pocket.ACCOUNT, classroom.starting_balance, account_id=account.pk),
                ],
            )
    except IntegrityError:
        # The unique (user, classroom) membership: already in, or a simultaneous join won.
        raise errors.AlreadyJoined(
            "You are already a member of this classroom.", field="join_code"
        ) from None
    account.refresh_from_db()
    return account


@transaction.atomic
def account_adjust(
    *, account_id: int, amount: Decimal, reason: str, actor_id: int | None = None
) -> TradingAccount:
    """Grant (positive) or deduct (negative) paper money, with a reason, against the house."""
    amount = clean_amount(amount, allow_negative=True)
    reason = str(reason or "").strip()
    if not reason:
        raise errors.DomainError("Say why the balance changes.", field="reason")
    account = lock_accounts([account_id]).get(account_id)
    if account is None:
        raise errors.NotFound("No such trading account.")
    # What resting orders hold is not the free balance's to give, but it comes back there when
    # they are cancelled. Only services that lock the account move a hold.
    currency = account.classroom.currency
    held = (
        LedgerEntry.objects.filter(account_id=account.pk, pocket=Pocket.ORDER).aggregate(
            s=Sum("amount")
        )["s"]
        or ZERO
    )
    if account.balance + amount < 0:
        holds = (
            f" Its resting orders hold {money_text(held, currency)} more, which comes back to "
            "the free balance when they are cancelled."
            if held
            else ""
        )
        raise errors.InsufficientBalance(
            f"The free balance of {account.user} in {account.classroom.name} is "
            f"{money_text(account.balance, currency)}; it cannot go below zero.{holds}",
            field="amount",
        )
    # The column must still store the free balance once the holds are back.
    if account.balance + held + amount >= MAX_AMOUNT:
        with_held = (
            f" with the {money_text(held, currency)} its resting orders hold" if held else ""
        )
        raise errors.InvalidAmount(
            f"The free balance of {account.user} in {account.classroom.name}{with_held} "
            "would grow too large.",
            field="amount",
        )
    ledger_post(
        classroom_id=account.classroom_id,
        kind=LedgerTransaction.Kind.GRANT if amount > 0 else LedgerTransaction.Kind.DEDUCT,
        memo=reason,
        created_by_id=actor_id,
        legs=[Leg(Pocket.HOUSE, -amount), Leg(Pocket.ACCOUNT, amount, account_id=account.pk)],
    )
    account.refresh_from_db()
    return account


@transaction.atomic
def accounts_adjust(
    *, account_ids: Iterable[int], amount: Decimal, reason: str, actor_id: int | None = None
) -> list[TradingAccount]:
    """Grant or deduct the same amount on several accounts, all or none, one ledger
    transaction each."""
    locked = lock_accounts(account_ids)
    return [
        account_adjust(account_id=pk, amount=amount, reason=reason, actor_id=actor_id)
        for pk in locked
    ]


def lock_accounts(account_ids: Iterable[int]) -> dict[int, TradingAccount]:
    """Lock trading accounts in id order, all before the caller's first posting.

    A posting takes the house pocket. A transaction that moved money for one account and
    then waited for the next account's lock would hold the house while the student of that
    account, holding the account, waited for the house: a deadlock. The locks are
    ``FOR NO KEY UPDATE``, so the engine may still insert ledger entries that refer to a
    locked account (its foreign-key check takes a key-share lock) without waiting.
    """
    ids = sorted({int(pk) for pk in account_ids})
    rows = (
        TradingAccount.objects.select_for_update(of=("self",), no_key=True)
        .select_related("classroom")
        .filter(pk__in=ids)
        .order_by("pk")
    )
    return {account.pk: account for account in rows}
