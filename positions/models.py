"""Instruments with their margin tiers, isolated positions, their collateral, orders and fills."""

from __future__ import annotations

from decimal import Decimal

from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q
from django.db.models.functions import Coalesce, Upper
from django.utils import timezone

from accounts.models import Classroom, LedgerEntry, TradingAccount
from accounts.money import (
    MONEY_DIGITS,
    PRICE_DIGITS,
    QUANTITY_DIGITS,
    RATE_DIGITS,
    average_price,
    plain,
)
from positions import margin

# A symbol is written into URLs (bots read /api/v1/instruments/BTCUSDT/prices/, so a slash
# would make its prices unreachable) and into CSV exports (where a leading = or - would run
# as a formula): letters and digits, then also . _ or -.
SYMBOL_RULE = RegexValidator(
    r"\A[A-Za-z0-9][A-Za-z0-9._-]*\Z",
    "A symbol starts with a letter or digit and holds only letters, digits, '.', '_' or '-' "
    "(no spaces or slashes), such as BTCUSDT or BTC-PERP.",
    code="invalid_symbol",
)

# Exchanges charge takers 0.02-0.1%; 10% is already a lesson in fees, not a market.
MAX_FEE_RATE = Decimal("0.1")


class Side(models.TextChoices):
    LONG = "long", "Long"
    SHORT = "short", "Short"


class Instrument(models.Model):
    """A perpetual-style contract traded in one classroom's market, with its own mark price."""

    classroom = models.ForeignKey(Classroom, on_delete=models.CASCADE, related_name="instruments")
    symbol = models.CharField(max_length=20, validators=[SYMBOL_RULE])
    name = models.CharField(max_length=80, blank=True)
    tick_size = models.DecimalField(**PRICE_DIGITS, default=Decimal("0.1"))
    lot_size = models.DecimalField(**QUANTITY_DIGITS, default=Decimal("0.001"))
    min_notional = models.DecimalField(
        **MONEY_DIGITS, default=Decimal("5"), validators=[MinValueValidator(Decimal(0))]
    )
    max_leverage = models.PositiveSmallIntegerField(
        default=100, validators=[MinValueValidator(1), MaxValueValidator(125)]
    )
    taker_fee_rate = models.DecimalField(
        **RATE_DIGITS,
        default=Decimal("0.0005"),
        validators=[MinValueValidator(Decimal(0)), MaxValueValidator(MAX_FEE_RATE)],
        help_text="Share of the notional charged on every fill (0.0005 is 0.05%).",
    )
    spread = models.DecimalField(
        **PRICE_DIGITS, default=Decimal(0), help_text="Bid-ask spread in price units."
    )
    is_tradable = models.BooleanField(
        default=True, help_text="Allowed for trading in its classroom."
    )
    mark_price = models.DecimalField(**PRICE_DIGITS, null=True, blank=True)
    mark_updated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["classroom_id", "symbol"]
        constraints = [
            # Bots and pages find a symbol in any letter case, so BTCUSDT and btcusdt in one
            # classroom would be one market with two books.
            models.UniqueConstraint(
                "classroom",
                Upper("symbol"),
                name="instrument_symbol_per_classroom_any_case",
                violation_error_message="This classroom already trades this symbol.",
            ),
            models.CheckConstraint(
                condition=Q(tick_size__gt=0),
                name="instrument_tick_positive",
                violation_error_message="The tick size must be positive.",
            ),
            models.CheckConstraint(
                condition=Q(lot_size__gt=0),
                name="instrument_lot_positive",
                violation_error_message="The lot size must be positive.",
            ),
            models.CheckConstraint(
                condition=Q(spread__gte=0),
                name="instrument_spread_non_negative",
                violation_error_message="The spread cannot be negative.",
            ),
            models.CheckConstraint(
                condition=Q(mark_price__isnull=True) | Q(mark_price__gt=0),
                name="instrument_mark_positive",
                violation_error_message="The mark price must be positive.",
            ),
            # A negative fee would pay traders out of the fees pocket.
            models.CheckConstraint(
                condition=Q(taker_fee_rate__gte=0, taker_fee_rate__lte=MAX_FEE_RATE),
                name="instrument_fee_rate_in_range",
                violation_error_message=f"The taker fee rate must be between 0 and {MAX_FEE_RATE}.",
            ),
            models.CheckConstraint(
                condition=Q(min_notional__gte=0),
                name="instrument_min_notional_non_negative",
                violation_error_message="The minimum notional cannot be negative.",
            ),
        ]

    def __str__(self) -> str:
        return self.symbol

    def margin_tiers(self) -> list[margin.Tier]:
        """The maintenance brackets, from the prefetched or stored tier rows."""
        rows = sorted(self.tiers.all(), key=lambda t: t.notional_floor)
        return [t.as_tier() for t in rows]


class MarginTier(models.Model):
    """One maintenance bracket of an instrument; ``cum`` is derived so MM stays continuous."""

    instrument = models.ForeignKey(Instrument, on_delete=models.CASCADE, related_name="tiers")
    notional_floor = models.DecimalField(**MONEY_DIGITS)
    notional_cap = models.DecimalField(**MONEY_DIGITS, null=True, blank=True)
    mmr = models.DecimalField(**RATE_DIGITS, verbose_name="maintenance margin rate")
    max_leverage = models.PositiveSmallIntegerField(validators=[MinValueValidator(1)])
    cum = models.DecimalField(
        **MONEY_DIGITS, default=Decimal(0), editable=False, verbose_name="maintenance amount"
    )

    class Meta:
        ordering = ["instrument_id", "notional_floor"]
        constraints = [
            models.UniqueConstraint(
                fields=["instrument", "notional_floor"], name="tier_floor_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.instrument} from {plain(self.notional_floor)}"

    def as_tier(self) -> margin.Tier:
        return margin.Tier(
            self.notional_floor, self.notional_cap, self.mmr, self.cum, self.max_leverage
        )


class Position(models.Model):
    """One isolated trade: it owns its collateral and can lose nothing beyond it."""

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        CLOSED = "closed", "Closed"
        LIQUIDATED = "liquidated", "Liquidated"

    # No index of its own: pos_account_status (account, status) serves every lookup by account.
    account = models.ForeignKey(
        TradingAccount, on_delete=models.PROTECT, related_name="positions", db_index=False
    )
    instrument = models.ForeignKey(Instrument, on_delete=models.PROTECT, related_name="positions")
    side = models.CharField(max_length=5, choices=Side.choices)
    quantity = models.DecimalField(**QUANTITY_DIGITS, help_text="Quantity still open.")
    opened_quantity = models.DecimalField(**QUANTITY_DIGITS)
    entry_price = models.DecimalField(**PRICE_DIGITS)
    leverage = models.PositiveSmallIntegerField(validators=[MinValueValidator(1)])
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    opened_at = models.DateTimeField(default=timezone.now)
    closed_at = models.DateTimeField(null=True, blank=True)
    # Stored so the engine finds breached positions with an indexed range query.
    # NULL: a long that can never be liquidated (its LP would be <= 0).
    liquidation_price = models.DecimalField(**PRICE_DIGITS, null=True, blank=True)
    bankruptcy_price = models.DecimalField(**PRICE_DIGITS)
    exit_price = models.DecimalField(**PRICE_DIGITS, null=True, blank=True)
    realized_pnl = models.DecimalField(
        **MONEY_DIGITS,
        default=Decimal(0),
        verbose_name="realised PnL",
        help_text="Price PnL settled so far, before fees.",
    )
    fees_paid = models.DecimalField(**MONEY_DIGITS, default=Decimal(0))
    take_profit = models.DecimalField(
        **PRICE_DIGITS, null=True, blank=True, verbose_name="take-profit"
    )
    stop_loss = models.DecimalField(**PRICE_DIGITS, null=True, blank=True, verbose_name="stop-loss")
    # Set while the margin ratio is at or above the warning level, so a margin call is
    # recorded once per crossing.
    margin_call_active = models.BooleanField(default=False)

    class Meta:
        ordering = ["-opened_at", "-id"]
        indexes = [
            models.Index(
                fields=["instrument", "liquidation_price"],
                condition=Q(status="open", side="long"),
                name="pos_open_long_lp",
            ),
            models.Index(
                fields=["instrument", "liquidation_price"],
                condition=Q(status="open", side="short"),
                name="pos_open_short_lp",
            ),
            # The engine's TP/SL search is per side: (instrument, side) then a price range.
            models.Index(
                fields=["instrument", "side", "take_profit"],
                condition=Q(status="open", take_profit__isnull=False),
                name="pos_open_side_tp",
            ),
            models.Index(
                fields=["instrument", "side", "stop_loss"],
                condition=Q(status="open", stop_loss__isnull=False),
                name="pos_open_side_sl",
            ),
            models.Index(fields=["account", "status"], name="pos_account_status"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(quantity__gte=0), name="position_quantity_non_negative"
            ),
            models.CheckConstraint(
                condition=~Q(status="open") | Q(quantity__gt=0), name="position_open_has_quantity"
            ),
            models.CheckConstraint(condition=Q(entry_price__gt=0), name="position_entry_positive"),
        ]

    def __str__(self) -> str:
        # A closed position holds 0: name it by the size it was opened with.
        size = self.quantity or self.opened_quantity
        return f"#{self.pk} {self.side} {plain(size)} {self.instrument}"

    @property
    def is_open(self) -> bool:
        return self.status == self.Status.OPEN

    @property
    def average_exit_price(self) -> Decimal | None:
        """The quantity-weighted average price of the fills that closed it so far (closes, a
        liquidation, auto-deleveraging), as exchanges show a position's close price: with the
        size closed and the entry, it gives the price PnL that ``exit_price``, the last fill's
        price, cannot once it closed in parts. None until a part has closed.

        Read from ``exit_fills``, which ``positions.selectors.with_exit_fills`` fetches for a
        whole list of positions in one query; a position read without them has none to read
        (an AttributeError, rather than a query for each position of a list)."""
        fills: list[Fill] = self.exit_fills  # type: ignore[attr-defined]
        quantity = sum((fill.quantity for fill in fills), Decimal(0))
        if not quantity:
            return None
        total = sum((fill.quantity * fill.price for fill in fills), Decimal(0))
        return average_price(total, quantity)


class Collateral(models.Model):
    """The isolated margin a position owns: initial margin plus added minus removed."""

    position = models.OneToOneField(
        Position, on_delete=models.PROTECT, primary_key=True, related_name="collateral"
    )
    amount = models.DecimalField(**MONEY_DIGITS, default=Decimal(0))
    initial_margin = models.DecimalField(
        **MONEY_DIGITS, help_text="Initial margin of the quantity still open, at entry."
    )

    class Meta:
        verbose_name_plural = "collateral"
        constraints = [
            models.CheckConstraint(condition=Q(amount__gte=0), name="collateral_non_negative"),
        ]

    def __str__(self) -> str:
        return f"{plain(self.amount)} for position #{self.position_id}"


class Order(models.Model):
    """An instruction to open or reduce a position: filled at once (market) or resting."""

    class Type(models.TextChoices):
        MARKET = "market", "Market"
        LIMIT = "limit", "Limit"
        STOP = "stop", "Stop market"

    class Status(models.TextChoices):
        RESTING = "resting", "Resting"
        FILLED = "filled", "Filled"
        CANCELLED = "cancelled", "Cancelled"
        REJECTED = "rejected", "Rejected"

    class Trigger(models.TextChoices):
        TAKE_PROFIT = "take_profit", "Take-profit"
        STOP_LOSS = "stop_loss", "Stop-loss"

    # No index of its own: order_account_status (account, status) serves every lookup by
    # account, as pos_account_status does for positions.
    account = models.ForeignKey(
        TradingAccount, on_delete=models.PROTECT, related_name="orders", db_index=False
    )
    instrument = models.ForeignKey(Instrument, on_delete=models.PROTECT, related_name="orders")
    position = models.ForeignKey(
        Position,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="orders",
        help_text="The position this order opened, or the one it reduces.",
    )
    side = models.CharField(max_length=5, choices=Side.choices)
    type = models.CharField(max_length=8, choices=Type.choices, default=Type.MARKET)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RESTING)
    quantity = models.DecimalField(**QUANTITY_DIGITS)
    leverage = models.PositiveSmallIntegerField(default=1, validators=[MinValueValidator(1)])
    price = models.DecimalField(**PRICE_DIGITS, null=True, blank=True, help_text="Limit price.")
    stop_price = models.DecimalField(**PRICE_DIGITS, null=True, blank=True)
    extra_collateral = models.DecimalField(**MONEY_DIGITS, default=Decimal(0))
    held_margin = models.DecimalField(
        **MONEY_DIGITS,
        default=Decimal(0),
        db_default=Decimal(0),
        help_text="What this resting order holds out of the free balance (its order margin): "
        "initial margin, extra collateral and fee at its price.",
    )
    take_profit = models.DecimalField(
        **PRICE_DIGITS, null=True, blank=True, verbose_name="take-profit"
    )
    stop_loss = models.DecimalField(**PRICE_DIGITS, null=True, blank=True, verbose_name="stop-loss")
    reduce_only = models.BooleanField(default=False)
    client_order_id = models.CharField(max_length=64, blank=True)
    reject_reason = models.CharField(max_length=255, blank=True)
    trigger = models.CharField(
        max_length=12,
        choices=Trigger.choices,
        blank=True,
        default="",
        db_default="",
        help_text="Set on the order the engine places when a position's take-profit or "
        "stop-loss is reached.",
    )
    replaces = models.OneToOneField(
        "self",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="replaced_by",
        help_text="The resting order this one replaced (with a new quantity or price).",
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    filled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(
                fields=["instrument", "type", "side", "price"],
                condition=Q(status="resting", type="limit"),
                name="order_resting_limit",
            ),
            models.Index(
                fields=["instrument", "type", "side", "stop_price"],
                condition=Q(status="resting", type="stop"),
                name="order_resting_stop",
            ),
            models.Index(fields=["account", "status"], name="order_account_status"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["account", "client_order_id"],
                condition=~Q(client_order_id=""),
                name="order_client_id_unique_per_account",
            ),
            models.CheckConstraint(condition=Q(quantity__gt=0), name="order_quantity_positive"),
            models.CheckConstraint(
                condition=Q(held_margin__gte=0), name="order_held_margin_non_negative"
            ),
            # An order that no longer rests has given its hold back to the free balance.
            models.CheckConstraint(
                condition=Q(status="resting") | Q(held_margin=0), name="order_settled_holds_nothing"
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.type} {self.side} {plain(self.quantity)} {self.instrument}"


class Fill(models.Model):
    """An execution: a quantity at a price, opening, reducing or liquidating a position."""

    class Kind(models.TextChoices):
        OPEN = "open", "Open"
        CLOSE = "close", "Close"
        LIQUIDATION = "liquidation", "Liquidation"
        ADL = "adl", "Auto-deleveraging"

    order = models.ForeignKey(
        Order, on_delete=models.PROTECT, null=True, blank=True, related_name="fills"
    )
    position = models.ForeignKey(Position, on_delete=models.PROTECT, related_name="fills")
    kind = models.CharField(max_length=12, choices=Kind.choices)
    quantity = models.DecimalField(**QUANTITY_DIGITS)
    price = models.DecimalField(**PRICE_DIGITS)
    fee = models.DecimalField(**MONEY_DIGITS, default=Decimal(0))
    realized_pnl = models.DecimalField(
        **MONEY_DIGITS, default=Decimal(0), verbose_name="realised PnL"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.kind} {plain(self.quantity)} @ {plain(self.price)}"


# The fills that take quantity out of a position: the ones its average exit price is made of.
EXIT_FILL_KINDS = (Fill.Kind.CLOSE, Fill.Kind.LIQUIDATION, Fill.Kind.ADL)


class TpSlChange(models.Model):
    """A change of an open position's take-profit or stop-loss, with the levels before and
    after (None: no level), so the position's timeline can tell what its owner moved, or
    what Ringfence moved for them and why (``reason``)."""

    position = models.ForeignKey(Position, on_delete=models.PROTECT, related_name="tpsl_changes")
    take_profit_before = models.DecimalField(
        **PRICE_DIGITS, null=True, blank=True, verbose_name="take-profit before"
    )
    take_profit_after = models.DecimalField(
        **PRICE_DIGITS, null=True, blank=True, verbose_name="take-profit after"
    )
    stop_loss_before = models.DecimalField(
        **PRICE_DIGITS, null=True, blank=True, verbose_name="stop-loss before"
    )
    stop_loss_after = models.DecimalField(
        **PRICE_DIGITS, null=True, blank=True, verbose_name="stop-loss after"
    )
    reason = models.CharField(
        max_length=255,
        blank=True,
        default="",
        db_default="",
        help_text="Why Ringfence moved the levels (a tick-size change); empty when the "
        "position's owner moved them.",
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]
        verbose_name = "take-profit / stop-loss change"

    def __str__(self) -> str:
        return f"TP/SL change of position #{self.position_id}"


def with_fill(orders: models.QuerySet[Order]) -> models.QuerySet[Order]:
    """Orders with ``fill_price`` and ``fill_quantity`` from their fill (an order fills at
    once, in one fill, or not at all): ``None`` for an order that has not filled."""
    fill = Fill.objects.filter(order=models.OuterRef("pk")).order_by("pk")
    return orders.annotate(
        fill_price=models.Subquery(fill.values("price")[:1]),
        fill_quantity=models.Subquery(fill.values("quantity")[:1]),
    )


def with_net_result(positions: models.QuerySet[Position]) -> models.QuerySet[Position]:
    """Positions with ``net_result``: what each did to its account's free balance, the sum
    of the free-balance legs of its ledger transactions (margin in and out, fees, PnL; for a
    liquidation, the collateral kept, whatever went to the insurance fund). None while a
    position is open: its collateral is still out of the balance, not lost."""
    legs = (
        LedgerEntry.objects.filter(
            pocket=LedgerEntry.Pocket.ACCOUNT, transaction__position_id=models.OuterRef("pk")
        )
        .order_by()
        .values("transaction__position_id")
        .annotate(total=models.Sum("amount"))
        .values("total")
    )
    return positions.annotate(
        net_result=models.Case(
            models.When(status=Position.Status.OPEN, then=models.Value(None)),
            default=Coalesce(models.Subquery(legs), models.Value(Decimal(0))),
            output_field=models.DecimalField(),
        )
    )
