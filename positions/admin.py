"""Admin pages of the positions app: instruments with their margin tiers, positions, orders.

Positions, collateral, orders and fills are records of money: read-only for everyone.
Instruments are the instructor's market: editable, with tiers validated by the margin math.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest

from accounts.admin_scoping import ClassroomScopedAdmin, ReadOnlyInline, ScopedInline
from accounts.money import MARK_CEILING, plain, price_text, towards_entry
from positions.margin import tiers_from_table
from positions.models import Collateral, Fill, Instrument, MarginTier, Order, Position, TpSlChange
from positions.services import (
    GRID_FIELDS,
    instrument_levels_to_grid,
    lock_accounts_with_levels,
)

related_only = admin.RelatedOnlyFieldListFilter

# The largest tick size as a share of the mark: 0.1%. Exchanges quote their contracts far
# finer (BTCUSDT's 0.1 is 0.0002% of 60,000). A tick is what a fill can cost beyond the mark
# (buys round up to it) and what the engine's move onto a new grid can shift the mark by
# (half of it); at 125x a long sits about 0.4% above its liquidation price, so at 0.1% a
# tick change or one fill's rounding cannot liquidate it, while a 1% tick could do both.
MAX_TICK_SHARE_OF_MARK = Decimal("0.001")


class MarginTierFormSet(forms.BaseInlineFormSet):
    """The tiers must form a valid margin table; their maintenance amounts are derived."""

    def clean(self) -> None:
        super().clean()
        if any(form.errors for form in self.forms):
            return
        rows: list[tuple[Decimal, Decimal | None, Decimal, int]] = []
        for form in self.forms:
            data = getattr(form, "cleaned_data", None)
            if not data or data.get("DELETE"):
                continue
            rows.append(
                (data["notional_floor"], data["notional_cap"], data["mmr"], data["max_leverage"])
            )
        if not rows:
            raise forms.ValidationError("An instrument needs at least one margin tier.")
        try:
            tiers_from_table(rows)
        except ValueError as exc:
            raise forms.ValidationError(f"The margin tiers are not valid: {exc}.") from None
        instrument = self.instance
        if instrument.pk and self.has_changed():
            # Held until the admin's save commits, and counted once granted: a position
            # opening meanwhile holds the instrument FOR KEY SHARE from before it reads the
            # tiers, so it is either committed by now and counted, or waits and reads the
            # new tiers (positions.services.lock_account).
            stored = (
                Instrument.objects.select_for_update(of=("self",))
                .filter(pk=instrument.pk)
                .values(*GRID_FIELDS)
                .first()
            )
            moved = [
                label
                for field, label in GRID_FIELDS.items()
                if stored is not None and stored[field] != getattr(instrument, field)
            ]
            if moved:
                # A new tick size, lot size or minimum notional brings resting orders in line
                # under their accounts' locks, which an order amended meanwhile takes before
                # the instrument: with the instrument held FOR UPDATE here, the two would wait
                # on each other.
                raise forms.ValidationError(
                    f"Change the {' and '.join(moved)} and the margin tiers in two saves: "
                    "save one, then the other."
                )
            open_count = instrument.positions.filter(status=Position.Status.OPEN).count()
            if open_count:
                # Stored liquidation prices were computed with the old tiers.
                raise forms.ValidationError(
                    f"{open_count} open position(s) use these tiers; change them when none is open."
                )


def derive_tier_amounts(instrument: Instrument) -> None:
    """Store each tier's maintenance amount (cum) as the margin math derives it."""
    rows = list(instrument.tiers.order_by("notional_floor"))
    if not rows:
        return
    tiers = tiers_from_table(
        (row.notional_floor, row.notional_cap, row.mmr, row.max_leverage) for row in rows
    )
    for row, tier in zip(rows, tiers, strict=True):
        if row.cum != tier.cum:
            row.cum = tier.cum
            row.save(update_fields=["cum"])


class MarginTierInline(ScopedInline):
    model = MarginTier
    formset = MarginTierFormSet
    fields = ("notional_floor", "notional_cap", "mmr", "max_leverage", "cum")
    readonly_fields = ("cum",)
    extra = 1


class InstrumentForm(forms.ModelForm):
    """Refuses a symbol that another instrument of the classroom has, in any letter case:
    bots and the API find instruments by symbol in any case, so both would answer. (The
    database's own check cannot see a change page, where the classroom is read-only.)

    Refuses a new tick size larger than ``MAX_TICK_SHARE_OF_MARK`` of the current mark; the
    engine then moves the mark onto the new grid by at most half a tick."""

    class Meta:
        model = Instrument
        # Every field, as the admin showed before this form: the admin builds its page
        # from the form's fields once a form names them.
        fields = "__all__"  # noqa: DJ007

    def clean(self) -> dict[str, Any]:
        data: dict[str, Any] = super().clean() or self.cleaned_data
        symbol = data.get("symbol")
        classroom_id = data["classroom"].pk if data.get("classroom") else self.instance.classroom_id
        if symbol and classroom_id is not None:
            same = (
                Instrument.objects.filter(classroom_id=classroom_id, symbol__iexact=symbol)
                .exclude(pk=self.instance.pk)
                .first()
            )
            if same is not None:
                self.add_error(
                    "symbol",
                    f"This classroom already trades {same.symbol}; symbols are read in any "
                    "letter case, so pick another.",
                )
        mark = data.get("mark_price")
        if mark is not None and mark > MARK_CEILING:
            self.add_error("mark_price", f"The mark price must be at most {MARK_CEILING:,}.")
        self._check_tick_size(data)
        return data

    def _check_tick_size(self, data: dict[str, Any]) -> None:
        tick = data.get("tick_size")
        if tick is None or (self.instance.pk and "tick_size" not in self.changed_data):
            return  # an unchanged tick keeps the grid the mark is already on
        mark = self.instance.mark_price if self.instance.pk else data.get("mark_price")
        if mark is None or mark <= 0:
            return
        largest = mark * MAX_TICK_SHARE_OF_MARK
        if tick > largest:
            self.add_error(
                "tick_size",
                f"A tick of {plain(tick)} is too coarse for the current mark "
                f"{plain(mark)}: it may be at most "
                f"{plain(MAX_TICK_SHARE_OF_MARK * 100)}% of the mark ({plain(largest)}).",
            )


@admin.register(Instrument)
class InstrumentAdmin(ClassroomScopedAdmin):
    """A classroom's tradable contract: sizes, fees, leverage cap and margin tiers."""

    classroom_path = "classroom"
    form = InstrumentForm
    list_display = (
        "symbol",
        "classroom",
        "mark_price",
        "mark_updated_at",
        "max_leverage",
        "is_tradable",
    )
    list_filter = ("is_tradable", ("classroom", related_only))
    search_fields = ("symbol", "name", "classroom__name")
    list_select_related = ("classroom",)
    autocomplete_fields = ("classroom",)
    inlines = (MarginTierInline,)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return ("mark_updated_at",)
        # The engine and the scenarios move the mark; the market it belongs to is fixed.
        return ("classroom", "mark_price", "mark_updated_at")

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        changed = [field for field in GRID_FIELDS if field in form.changed_data]
        if not (change and changed):
            super().save_model(request, obj, form, change)
            return
        # The admin's page is one transaction: the accounts are locked before the
        # instrument's row, the order every order and the engine take them in, and no
        # resting order or TP/SL is left off the new grids once it commits.
        lock_accounts_with_levels(obj.pk)
        super().save_model(request, obj, form, change)
        moves = instrument_levels_to_grid(instrument_id=obj.pk, changed_fields=changed)
        if moves.orders_replaced or moves.orders_cancelled or moves.positions_changed:
            self.message_user(
                request,
                f"Brought in line with the new {' and '.join(GRID_FIELDS[f] for f in changed)}: "
                f"{moves.orders_replaced} resting order(s) replaced, "
                f"{moves.positions_changed} position(s)' take-profit/stop-loss moved; "
                f"{moves.orders_cancelled} order(s) cancelled (no valid tick or whole lot "
                "left, or worth less than the minimum notional). Their students see why on "
                "the orders and the positions' timelines.",
            )

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        derive_tier_amounts(form.instance)


class CollateralInline(ReadOnlyInline):
    model = Collateral
    fields = ("amount", "initial_margin")
    readonly_fields = fields


class FillInline(ReadOnlyInline):
    model = Fill
    fk_name = "position"
    fields = ("created_at", "kind", "quantity", "price", "fee", "realized_pnl", "order")
    readonly_fields = fields


class TpSlChangeInline(ReadOnlyInline):
    model = TpSlChange
    fields = (
        "created_at",
        "take_profit_before",
        "take_profit_after",
        "stop_loss_before",
        "stop_loss_after",
        "reason",
    )
    readonly_fields = fields


@admin.register(Position)
class PositionAdmin(ClassroomScopedAdmin):
    """One isolated trade with its collateral (read-only: services change positions)."""

    classroom_path = "account__classroom"
    read_only_records = True
    list_display = (
        "id",
        "account",
        "instrument",
        "side",
        "quantity",
        "entry_price",
        "leverage",
        "shown_liquidation_price",
        "status",
        "opened_at",
    )
    list_filter = (
        "status",
        "side",
        ("instrument", related_only),
        ("account__classroom", related_only),
    )
    search_fields = ("=id", "account__user__username", "instrument__symbol")
    list_select_related = ("account__user", "account__classroom", "instrument")
    date_hierarchy = "opened_at"
    inlines = [CollateralInline, FillInline, TpSlChangeInline]

    @admin.display(description="liquidation price", ordering="liquidation_price")
    def shown_liquidation_price(self, position: Position) -> str:
        # As the student's pages, the monitor and the API show it: on the tick, rounded
        # towards the entry; none once the position is closed or can never be liquidated.
        if position.status != Position.Status.OPEN or position.liquidation_price is None:
            return "-"
        tick = position.instrument.tick_size
        shown = towards_entry(position.liquidation_price, side=position.side, tick=tick)
        return price_text(shown, tick) if shown is not None else "-"


@admin.register(Collateral)
class CollateralAdmin(ClassroomScopedAdmin):
    """The isolated margin of each position (read-only)."""

    classroom_path = "position__account__classroom"
    read_only_records = True
    ordering = ("-position_id",)
    list_display = ("position", "amount", "initial_margin")
    search_fields = ("=position__id", "position__account__user__username")
    list_select_related = ("position__instrument",)
    list_filter = (("position__account__classroom", related_only),)


@admin.register(Order)
class OrderAdmin(ClassroomScopedAdmin):
    """Orders as placed and filled (read-only)."""

    classroom_path = "account__classroom"
    read_only_records = True
    list_display = (
        "id",
        "account",
        "instrument",
        "type",
        "side",
        "quantity",
        "price",
        "stop_price",
        "status",
        "held_margin",
        "created_at",
    )
    list_filter = ("status", "type", "side", ("instrument", related_only))
    search_fields = ("=id", "account__user__username", "client_order_id", "instrument__symbol")
    list_select_related = ("account__user", "account__classroom", "instrument")
    date_hierarchy = "created_at"


@admin.register(Fill)
class FillAdmin(ClassroomScopedAdmin):
    """Executions: opening, closing, liquidation and ADL fills (read-only)."""

    classroom_path = "position__account__classroom"
    read_only_records = True
    list_display = ("id", "position", "kind", "quantity", "price", "fee", "realized_pnl")
    list_filter = ("kind", ("position__instrument", related_only))
    search_fields = ("=position__id", "position__account__user__username")
    list_select_related = ("position__instrument",)
