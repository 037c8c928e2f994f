"""Price feeds and mark history, scenarios, liquidations, margin calls and engine heartbeats."""

from __future__ import annotations

from decimal import Decimal

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from accounts.models import Classroom, User
from accounts.money import MONEY_DIGITS, PRICE_DIGITS, QUANTITY_DIGITS, RATE_DIGITS, plain
from positions.models import Instrument, Position


class PriceFeed(models.Model):
    """Where an instrument's next mark comes from: a seeded random walk, a replay, or by hand."""

    class Kind(models.TextChoices):
        SIMULATED = "simulated", "Simulated random walk"
        REPLAY = "replay", "Replay of an uploaded CSV"
        MANUAL = "manual", "Manual"

    instrument = models.OneToOneField(Instrument, on_delete=models.CASCADE, related_name="feed")
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.SIMULATED)
    is_active = models.BooleanField(default=True, help_text="Ticked by the engine.")
    seed = models.BigIntegerField(default=1)
    volatility = models.DecimalField(
        **RATE_DIGITS,
        default=Decimal("0.001"),
        validators=[MinValueValidator(Decimal(0)), MaxValueValidator(Decimal("0.1"))],
        help_text="Standard deviation of one tick's return (0.001 is 0.1%; at most 0.1).",
    )
    jump_probability = models.DecimalField(
        **RATE_DIGITS,
        default=Decimal("0.002"),
        validators=[MinValueValidator(Decimal(0)), MaxValueValidator(Decimal(1))],
        help_text="Chance of a jump on each tick, from 0 to 1.",
    )
    jump_size = models.DecimalField(
        **RATE_DIGITS,
        default=Decimal("0.02"),
        validators=[MinValueValidator(Decimal(0)), MaxValueValidator(Decimal("0.5"))],
        help_text="Typical size of a jump, as a share (at most 0.5).",
    )
    step = models.BigIntegerField(
        default=0, help_text="Ticks taken so far; with the seed, the walk."
    )
    replay_speed = models.DecimalField(
        max_digits=10,
        decimal_places=4,
        default=Decimal(1),
        validators=[MinValueValidator(Decimal("0.01")), MaxValueValidator(Decimal(1000))],
        help_text="2 plays a replay twice as fast (0.01 to 1000).",
    )
    replay_started_at = models.DateTimeField(null=True, blank=True)
    # The start of the last tick slot whose price step was applied: claiming a slot with a
    # conditional UPDATE makes a redelivered or doubly scheduled tick move the price once.
    last_tick_at = models.DateTimeField(null=True, blank=True, editable=False)

    def __str__(self) -> str:
        return f"{self.get_kind_display()} feed of {self.instrument}"


class ReplayPoint(models.Model):
    """One row of an uploaded replay CSV: seconds from the start and a price."""

    feed = models.ForeignKey(PriceFeed, on_delete=models.CASCADE, related_name="replay_points")
    offset_seconds = models.DecimalField(max_digits=14, decimal_places=3)
    price = models.DecimalField(**PRICE_DIGITS)

    class Meta:
        ordering = ["feed_id", "offset_seconds"]
        indexes = [models.Index(fields=["feed", "offset_seconds"], name="replay_feed_offset")]

    def __str__(self) -> str:
        return f"+{plain(self.offset_seconds)}s {plain(self.price)}"


class PriceTick(models.Model):
    """The mark price an instrument had at one tick: the history charts are drawn from."""

    instrument = models.ForeignKey(Instrument, on_delete=models.CASCADE, related_name="ticks")
    price = models.DecimalField(**PRICE_DIGITS)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["instrument_id", "created_at"]
        indexes = [models.Index(fields=["instrument", "created_at"], name="tick_instrument_time")]

    def __str__(self) -> str:
        return f"{self.instrument_id} {plain(self.price)} at {self.created_at:%H:%M:%S}"


class Scenario(models.Model):
    """An instructor's move of the market on top of the feed: set a price or move by a share."""

    class Kind(models.TextChoices):
        SET_PRICE = "set_price", "Set the price"
        MOVE = "move", "Move by a percentage over a duration"

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        FINISHED = "finished", "Finished"
        CANCELLED = "cancelled", "Cancelled"

    instrument = models.ForeignKey(Instrument, on_delete=models.CASCADE, related_name="scenarios")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    target_price = models.DecimalField(**PRICE_DIGITS, null=True, blank=True)
    percent = models.DecimalField(max_digits=9, decimal_places=4, null=True, blank=True)
    duration_seconds = models.DecimalField(max_digits=10, decimal_places=3, default=Decimal(0))
    start_price = models.DecimalField(**PRICE_DIGITS, null=True, blank=True)
    created_by = models.ForeignKey(
        User, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} on {self.instrument}"


class LiquidationEvent(models.Model):
    """The liquidation of one position: one-to-one, so a second liquidation cannot exist."""

    position = models.OneToOneField(Position, on_delete=models.PROTECT, related_name="liquidation")
    classroom = models.ForeignKey(Classroom, on_delete=models.PROTECT, related_name="liquidations")
    quantity = models.DecimalField(**QUANTITY_DIGITS)
    mark_price = models.DecimalField(**PRICE_DIGITS)
    liquidation_price = models.DecimalField(**PRICE_DIGITS, null=True, blank=True)
    bankruptcy_price = models.DecimalField(**PRICE_DIGITS)
    collateral_lost = models.DecimalField(**MONEY_DIGITS)
    liquidation_fee = models.DecimalField(**MONEY_DIGITS, default=Decimal(0))
    leftover = models.DecimalField(
        **MONEY_DIGITS,
        default=Decimal(0),
        help_text="Margin balance left after the loss, fee excluded.",
    )
    returned_to_trader = models.DecimalField(**MONEY_DIGITS, default=Decimal(0))
    shortfall = models.DecimalField(
        **MONEY_DIGITS,
        default=Decimal(0),
        help_text="Loss beyond the collateral (price gapped past BP).",
    )
    insurance_paid = models.DecimalField(**MONEY_DIGITS, default=Decimal(0))
    adl_amount = models.DecimalField(
        **MONEY_DIGITS, default=Decimal(0), verbose_name="covered by auto-deleveraging"
    )
    free_balance_before = models.DecimalField(**MONEY_DIGITS, null=True, blank=True)
    ledger_transaction_id = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"Liquidation of position #{self.position_id}"


class AdlFill(models.Model):
    """A profitable opposite position closed at the bankrupt position's price to cover a shortfall."""

    liquidation = models.ForeignKey(
        LiquidationEvent, on_delete=models.PROTECT, related_name="adl_fills"
    )
    position = models.ForeignKey(Position, on_delete=models.PROTECT, related_name="adl_fills")
    quantity = models.DecimalField(**QUANTITY_DIGITS)
    price = models.DecimalField(**PRICE_DIGITS)
    rank_score = models.DecimalField(max_digits=30, decimal_places=10)
    realized_pnl = models.DecimalField(**MONEY_DIGITS, verbose_name="realised PnL")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "auto-deleveraging fill"

    def __str__(self) -> str:
        return f"ADL of position #{self.position_id} at {plain(self.price)}"


class MarginCall(models.Model):
    """A position's margin ratio crossed the warning level (80%); recorded once per crossing."""

    class Outcome(models.TextChoices):
        PENDING = "pending", "Not answered yet"
        MARGIN_ADDED = "margin_added", "Margin added"
        REDUCED = "reduced", "Position reduced or closed"
        RECOVERED = "recovered", "Price recovered"
        LIQUIDATED = "liquidated", "Liquidated"

    position = models.ForeignKey(Position, on_delete=models.PROTECT, related_name="margin_calls")
    classroom = models.ForeignKey(Classroom, on_delete=models.PROTECT, related_name="margin_calls")
    mark_price = models.DecimalField(**PRICE_DIGITS)
    margin_ratio = models.DecimalField(max_digits=20, decimal_places=8)
    # What the position held when the call was made, to tell how it was answered.
    collateral_at_call = models.DecimalField(**MONEY_DIGITS, null=True, blank=True)
    quantity_at_call = models.DecimalField(**QUANTITY_DIGITS, null=True, blank=True)
    outcome = models.CharField(max_length=14, choices=Outcome.choices, default=Outcome.PENDING)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(
                fields=["position"], condition=Q(outcome="pending"), name="margincall_pending"
            )
        ]

    def __str__(self) -> str:
        return f"Margin call on position #{self.position_id}"


class EngineHeartbeat(models.Model):
    """One tick of one instrument: when it ran, what it saw and what it did."""

    instrument = models.ForeignKey(
        Instrument, on_delete=models.CASCADE, null=True, blank=True, related_name="heartbeats"
    )
    started_at = models.DateTimeField(default=timezone.now, db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    mark_price = models.DecimalField(**PRICE_DIGITS, null=True, blank=True)
    positions_checked = models.PositiveIntegerField(default=0)
    liquidated = models.PositiveIntegerField(default=0)
    orders_triggered = models.PositiveIntegerField(default=0)
    margin_calls = models.PositiveIntegerField(default=0)
    errors = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        indexes = [
            models.Index(fields=["instrument", "-started_at"], name="heartbeat_instrument_recent")
        ]

    def __str__(self) -> str:
        return f"Tick of {self.instrument_id} at {self.started_at:%H:%M:%S}"


class ConfirmedAction(models.Model):
    """The token of one confirmation page of an instructor's action, claimed when it acts.

    A confirmation sent twice (a double click on "Yes", a request the browser resends) claims
    the same token twice; the unique token makes the second one act on nothing, so a grant
    or a top-up moves its money once. The claim is written in the action's own transaction:
    an action that is refused claims nothing, and a second sending waits for the first.

    The "add classroom" form carries such a token too; ``classroom`` is the class its first
    sending created, where a second sending is taken instead of creating another.
    """

    token = models.CharField(max_length=32, unique=True)
    created_by = models.ForeignKey(
        User, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    classroom = models.ForeignKey(
        Classroom, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"Confirmation {self.token}"
