"""Users, classrooms, memberships, trading accounts and the double-entry ledger."""

from __future__ import annotations

import secrets
from datetime import datetime
from decimal import Decimal

from django.contrib.auth.models import AbstractUser
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from accounts.money import MONEY_DIGITS, POCKET_DIGITS, RATE_DIGITS, plain

JOIN_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


def new_join_code() -> str:
    return "".join(secrets.choice(JOIN_CODE_ALPHABET) for _ in range(8))


class User(AbstractUser):
    """A person: learner, instructor (staff) or operator (superuser)."""

    class Meta(AbstractUser.Meta):  # type: ignore[name-defined]
        permissions = [
            ("set_student_password", "Can set a new password for a student of their classrooms"),
        ]


class Classroom(models.Model):
    """A class an instructor runs: its rules, its market and its money."""

    class LeftoverPolicy(models.TextChoices):
        INSURANCE_FUND = "insurance_fund", "Leftover margin goes to the insurance fund"
        RETURN_TO_TRADER = "return_to_trader", "Leftover returns to the trader, minus the fee"

    class Ranking(models.TextChoices):
        RAW = "raw", "Raw return"
        RISK_ADJUSTED = "risk_adjusted", "Return per unit of drawdown"

    instructor = models.ForeignKey(User, on_delete=models.PROTECT, related_name="taught_classrooms")
    name = models.CharField(max_length=120)
    join_code = models.CharField(max_length=16, unique=True, default=new_join_code)
    starting_balance = models.DecimalField(
        **MONEY_DIGITS, default=Decimal("10000"), validators=[MinValueValidator(Decimal("0.01"))]
    )
    currency = models.CharField(max_length=12, default="USDT")
    max_leverage = models.PositiveSmallIntegerField(
        default=20, validators=[MinValueValidator(1), MaxValueValidator(125)]
    )
    trading_enabled = models.BooleanField(
        default=True,
        help_text="Off stops all trading. On, students trade within the window below, if any.",
    )
    trading_opens_at = models.DateTimeField(null=True, blank=True)
    trading_closes_at = models.DateTimeField(null=True, blank=True)
    liquidation_fee_rate = models.DecimalField(
        **RATE_DIGITS,
        default=Decimal("0.005"),
        validators=[MinValueValidator(Decimal(0)), MaxValueValidator(Decimal("0.1"))],
        help_text="Share of the notional taken from the leftover margin on liquidation.",
    )
    leftover_policy = models.CharField(
        max_length=20, choices=LeftoverPolicy.choices, default=LeftoverPolicy.INSURANCE_FUND
    )
    ranking = models.CharField(max_length=20, choices=Ranking.choices, default=Ranking.RAW)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name", "id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(trading_opens_at__isnull=True)
                | Q(trading_closes_at__isnull=True)
                | Q(trading_closes_at__gt=models.F("trading_opens_at")),
                name="classroom_window_ordered",
                violation_error_message="Trading must close after it opens.",
            ),
            models.CheckConstraint(
                condition=Q(starting_balance__gt=0),
                name="classroom_starting_balance_positive",
                violation_error_message="The starting balance must be positive.",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def is_trading_open(self, now: datetime | None = None) -> bool:
        now = now or timezone.now()
        if not self.trading_enabled:
            return False
        if self.trading_opens_at and now < self.trading_opens_at:
            return False
        return not (self.trading_closes_at and now >= self.trading_closes_at)


class Membership(models.Model):
    """Who belongs to a classroom, and as what."""

    class Role(models.TextChoices):
        STUDENT = "student", "Student"
        INSTRUCTOR = "instructor", "Instructor"

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="memberships")
    classroom = models.ForeignKey(Classroom, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=12, choices=Role.choices, default=Role.STUDENT)
    joined_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "classroom"], name="membership_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.classroom} ({self.role})"


class TradingAccount(models.Model):
    """A student's paper money in one classroom: the free balance, outside any position."""

    classroom = models.ForeignKey(Classroom, on_delete=models.PROTECT, related_name="accounts")
    user = models.ForeignKey(User, on_delete=models.PROTECT, related_name="trading_accounts")
    balance = models.DecimalField(**MONEY_DIGITS, default=Decimal(0))
    trading_frozen = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "classroom"], name="account_unique_per_classroom"
            ),
            models.CheckConstraint(
                condition=Q(balance__gte=0), name="account_balance_non_negative"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user} @ {self.classroom}"


class ClassroomPocket(models.Model):
    """A classroom-level pocket of the ledger: the house, the insurance fund or the fees.

    The house is the counterparty of every trade and of all funding, so it is the only
    pocket that may go negative.
    """

    class Kind(models.TextChoices):
        HOUSE = "house", "House"
        INSURANCE = "insurance", "Insurance fund"
        FEES = "fees", "Fees"

    classroom = models.ForeignKey(Classroom, on_delete=models.CASCADE, related_name="pockets")
    kind = models.CharField(max_length=12, choices=Kind.choices)
    balance = models.DecimalField(**POCKET_DIGITS, default=Decimal(0))

    class Meta:
        ordering = ["classroom_id", "kind"]
        constraints = [
            models.UniqueConstraint(
                fields=["classroom", "kind"], name="pocket_unique_per_classroom"
            ),
            models.CheckConstraint(
                condition=Q(kind="house") | Q(balance__gte=0),
                name="pocket_non_negative_except_house",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} of {self.classroom}"


class LedgerTransaction(models.Model):
    """One movement of paper money; its entries sum to exactly zero."""

    class Kind(models.TextChoices):
        DEPOSIT = "deposit", "Starting balance"
        GRANT = "grant", "Grant"
        DEDUCT = "deduct", "Deduction"
        RESET = "reset", "Reset to starting balance"
        INSURANCE_SEED = "insurance_seed", "Insurance fund seeded"
        INSURANCE_ADJUST = "insurance_adjust", "Insurance fund topped up or drawn down"
        OPEN = "open", "Position opened"
        ADD_MARGIN = "add_margin", "Margin added"
        REMOVE_MARGIN = "remove_margin", "Margin removed"
        CLOSE = "close", "Position closed"
        LIQUIDATION = "liquidation", "Liquidation"
        ADL = "adl", "Auto-deleveraging"
        ORDER_HOLD = "order_hold", "Margin held by an order"
        ORDER_RELEASE = "order_release", "Order margin released"

    classroom = models.ForeignKey(
        Classroom, on_delete=models.PROTECT, related_name="ledger_transactions"
    )
    kind = models.CharField(max_length=20, choices=Kind.choices)
    memo = models.CharField(max_length=255, blank=True)
    # The position this movement belongs to, if any (the positions app sits above this one).
    position_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    created_by = models.ForeignKey(
        User, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    # A client's own id of a margin change ("" when none was sent): a retry that sends it
    # again finds this movement instead of moving the margin a second time. The database
    # default keeps rows inserted in bulk without naming it (the engine's COPY) valid.
    client_request_id = models.CharField(max_length=64, blank=True, default="", db_default="")

    class Meta:
        ordering = ["id"]
        constraints = [
            # Racing retries of one margin change cannot both post: the second insert fails.
            models.UniqueConstraint(
                fields=["position_id", "client_request_id"],
                condition=~Q(client_request_id=""),
                name="ledger_client_request_id_unique_per_position",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.get_kind_display()}"

    # Kinds whose memo, written by the service, says everything ("Close 0.4 of position #2
    # at …"); for the others the memo is the instructor's reason, shown after the kind.
    SELF_DESCRIBED = frozenset(
        {
            Kind.DEPOSIT, Kind.RESET, Kind.INSURANCE_SEED, Kind.OPEN, Kind.ADD_MARGIN,
            Kind.REMOVE_MARGIN, Kind.CLOSE, Kind.LIQUIDATION, Kind.ADL, Kind.ORDER_HOLD,
            Kind.ORDER_RELEASE,
        }
    )  # fmt: skip

    @property
    def description(self) -> str:
        """What a statement line says about this movement."""
        label = self.get_kind_display()
        if not self.memo:
            return label
        if self.kind in self.SELF_DESCRIBED:
            return self.memo
        return f"{label}: {self.memo}"


class LedgerEntry(models.Model):
    """One leg of a ledger transaction: a signed amount into one pocket."""

    class Pocket(models.TextChoices):
        ACCOUNT = "account", "Free balance"
        COLLATERAL = "collateral", "Position collateral"
        ORDER = "order", "Order margin"
        HOUSE = "house", "House"
        INSURANCE = "insurance", "Insurance fund"
        FEES = "fees", "Fees"

    transaction = models.ForeignKey(
        LedgerTransaction, on_delete=models.PROTECT, related_name="entries"
    )
    classroom = models.ForeignKey(Classroom, on_delete=models.PROTECT, related_name="+")
    pocket = models.CharField(max_length=12, choices=Pocket.choices)
    account = models.ForeignKey(
        TradingAccount,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="ledger_entries",
    )
    # The collateral pocket is keyed by its position (see LedgerTransaction.position_id).
    position_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    # The order-margin pocket is keyed by its resting order, as collateral by its position.
    order_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    amount = models.DecimalField(**MONEY_DIGITS)

    class Meta:
        ordering = ["id"]
        verbose_name_plural = "ledger entries"
        constraints = [
            models.CheckConstraint(
                condition=~Q(pocket="account") | Q(account__isnull=False),
                name="entry_account_pocket_has_account",
            ),
            models.CheckConstraint(
                condition=~Q(pocket="collateral")
                | Q(position_id__isnull=False, account__isnull=False),
                name="entry_collateral_pocket_has_position",
            ),
            models.CheckConstraint(
                condition=~Q(pocket="order") | Q(order_id__isnull=False, account__isnull=False),
                name="entry_order_pocket_has_order",
            ),
            models.CheckConstraint(condition=~Q(amount=0), name="entry_amount_non_zero"),
        ]

    def __str__(self) -> str:
        return f"{self.pocket} {plain(self.amount)}"
