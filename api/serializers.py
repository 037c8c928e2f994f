"""Shapes of the API: what a request may carry and what a response contains.

Request serializers only check the shape; the rules (lot size, tick size, leverage caps,
balances) belong to the services, which raise domain errors with stable codes. Numbers are
strings with exact decimals. Response fields are all read-only, and request serializers
declare only the fields a caller may set, so nothing else is ever taken from input.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from accounts.models import LedgerTransaction
from accounts.money import (
    MONEY_DIGITS,
    PRICE_DIGITS,
    QUANTITY_DIGITS,
    RATE_DIGITS,
    is_written_whole_number,
    towards_entry,
)
from api.models import ApiKey
from liquidation.models import MarginCall
from positions.models import Fill, Order, Side

DECIMAL_PATTERN = r"^-?[0-9]+(\.[0-9]+)?$"


class DecimalOutput(serializers.DecimalField):
    """A number as an exact decimal string; zero is "0", never the "-0" that a short's PnL at
    its entry price (-1 x Q x 0) or a tiny loss rounded to the field's places would give."""

    def to_representation(self, value: Any) -> Any:
        text = super().to_representation(value)
        return "0" if text == "-0" else text


def _decimal(max_digits: int, decimal_places: int, **kwargs: Any) -> serializers.DecimalField:
    # Output drops trailing zeros ("60000.1", not "60000.1000000000"); values stay exact.
    return DecimalOutput(
        max_digits=max_digits + 2,
        decimal_places=decimal_places,
        normalize_output=True,
        read_only=True,
        **kwargs,
    )


def money_out(**kwargs: Any) -> serializers.DecimalField:
    return _decimal(MONEY_DIGITS["max_digits"], MONEY_DIGITS["decimal_places"], **kwargs)


def price_out(**kwargs: Any) -> serializers.DecimalField:
    return _decimal(PRICE_DIGITS["max_digits"], PRICE_DIGITS["decimal_places"], **kwargs)


def quantity_out(**kwargs: Any) -> serializers.DecimalField:
    return _decimal(QUANTITY_DIGITS["max_digits"], QUANTITY_DIGITS["decimal_places"], **kwargs)


def rate_out(**kwargs: Any) -> serializers.DecimalField:
    return _decimal(RATE_DIGITS["max_digits"], RATE_DIGITS["decimal_places"], **kwargs)


def derived_out(**kwargs: Any) -> serializers.DecimalField:
    # Numbers worked out when read, not stored amounts, have more whole digits than a money
    # column: a valuation at the mark (a long on a 0.01 instrument the instructor sets to
    # 10^12 gains some 10^19), or a return on funding cut down to 0.00000001 (10^26 %).
    return _decimal(40, MONEY_DIGITS["decimal_places"], **kwargs)


@extend_schema_field(
    {"type": "string", "format": "decimal", "pattern": DECIMAL_PATTERN, "example": "0.01"}
)
class DecimalInput(serializers.CharField):
    """A decimal sent as a string (a JSON number is accepted too); the service checks it."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", 40)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> str:
        # The parser reads JSON numbers with a fraction as Decimal: keep them exact.
        return super().to_internal_value(str(data) if isinstance(data, Decimal) else data)


class WholeNumberInput(serializers.IntegerField):
    """A whole number (a JSON integer, or one written as a string) in ASCII digits.

    DRF reads a string with Python's ``int``, which also takes ``"1_0"`` and other scripts'
    digits (full-width or Arabic-Indic ones): refused, as they are in decimal fields and in
    the forms' ``WholeNumberField`` (the same rule, ``is_written_whole_number``).
    """

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, str) and not is_written_whole_number(data):
            self.fail("invalid")
        return super().to_internal_value(data)


class RiskPriceField(serializers.DecimalField):
    """A stored liquidation or bankruptcy price as every endpoint and page shows it: on the
    instrument's tick, rounded towards the entry by ``towards_entry``."""

    def __init__(self, attribute: str, **kwargs: Any) -> None:
        self.attribute = attribute
        super().__init__(
            max_digits=PRICE_DIGITS["max_digits"] + 2,
            decimal_places=PRICE_DIGITS["decimal_places"],
            normalize_output=True,
            read_only=True,
            source="*",
            **kwargs,
        )

    def position_of(self, instance: Any) -> Any:
        """The position whose side and instrument round the price (the instance itself)."""
        return instance

    def rounded(self, instance: Any) -> Decimal | None:
        position = self.position_of(instance)
        return towards_entry(
            getattr(instance, self.attribute),
            side=position.side,
            tick=position.instrument.tick_size,
        )

    def to_representation(self, instance: Any) -> Any:
        rounded = self.rounded(instance)
        return None if rounded is None else super().to_representation(rounded)


class PositionPriceField(RiskPriceField):
    """A position's stored liquidation or bankruptcy price, rounded; null once the position is
    closed or liquidated (it no longer has one)."""

    def __init__(self, attribute: str, **kwargs: Any) -> None:
        super().__init__(attribute, allow_null=True, **kwargs)

    def to_representation(self, position: Any) -> Any:
        return super().to_representation(position) if position.is_open else None


class EventPriceField(RiskPriceField):
    """The liquidation or bankruptcy price a liquidation recorded, rounded as its position
    showed it."""

    def position_of(self, instance: Any) -> Any:
        return instance.position


class Shape(serializers.Serializer):
    """The base of every request and response shape here: its fields are copied, not rebuilt.

    DRF deep-copies each declared field for every serializer it makes, and a field's deep
    copy runs its ``__init__`` again (error messages, validators, choices): most of the CPU
    of reading an order's body and writing the order back. A built field never changes, and
    binding it to a serializer only sets attributes on the copy, so a shallow copy does as
    well. Nested serializers and fields with a child field (a list, a dict) are still deep
    copied: their child is bound to them, and must be bound to the copy.
    """

    def get_fields(self) -> dict[str, serializers.Field]:
        return {
            name: copy.deepcopy(field)
            if isinstance(field, serializers.BaseSerializer) or hasattr(field, "child")
            else _shallow_copy(field)
            for name, field in self._declared_fields.items()
        }


def _shallow_copy(field: serializers.Field) -> serializers.Field:
    # What copy.copy makes of a field, without its detour through __reduce_ex__ (a quarter
    # of the cost of a serializer's fields).
    clone = object.__new__(type(field))
    clone.__dict__.update(field.__dict__)
    return clone


# --- requests -----------------------------------------------------------------------------


class RequestSerializer(Shape):
    """A request body that refuses fields it does not declare.

    DRF drops them silently, so a bot that misspells a field (``takeProfit``) would get an
    order without the protection it asked for.
    """

    def to_internal_value(self, data: Any) -> Any:
        unknown = (
            {str(name): ["Unknown field."] for name in data if name not in self.fields}
            if isinstance(data, Mapping)
            else {}
        )
        try:
            value = super().to_internal_value(data)
        except serializers.ValidationError as exc:
            if unknown and isinstance(exc.detail, dict):
                raise serializers.ValidationError({**exc.detail, **unknown}) from None
            raise
        if unknown:
            raise serializers.ValidationError(unknown)
        return value


class WordChoiceField(serializers.ChoiceField):
    """A choice of words in any letter case (``MARKET`` is ``market``, as exchanges spell
    it); a wrong one is answered with the words it may be."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.error_messages["invalid_choice"] = (
            f'"{{input}}" is not one of {", ".join(str(c) for c in self.choices)}.'
        )

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, str) and data.lower() in self.choice_strings_to_values:
            data = data.lower()
        return super().to_internal_value(data)


class SideField(WordChoiceField):
    """``long`` or ``short``; ``buy`` and ``sell`` are accepted as aliases."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(choices=[*Side.values, "buy", "sell"], **kwargs)

    def to_internal_value(self, data: Any) -> str:
        value = super().to_internal_value(data)
        return {"buy": Side.LONG, "sell": Side.SHORT}.get(value, value)


class PlaceOrderSerializer(RequestSerializer):
    account = WholeNumberInput(
        min_value=1, help_text="Id of your trading account (see /api/v1/accounts/)."
    )
    symbol = serializers.CharField(max_length=20)
    side = SideField()
    type = WordChoiceField(choices=Order.Type.values, default=Order.Type.MARKET)
    quantity = DecimalInput()
    leverage = WholeNumberInput(
        default=1,
        help_text="1 or more. Over the cap of the instrument, its margin tier or the classroom it "
        "is leverage_too_high; under 1, invalid_leverage.",
    )
    price = DecimalInput(required=False, allow_null=True, help_text="Limit price.")
    stop_price = DecimalInput(required=False, allow_null=True)
    take_profit = DecimalInput(required=False, allow_null=True)
    stop_loss = DecimalInput(required=False, allow_null=True)
    extra_collateral = DecimalInput(
        required=False, allow_null=True, help_text="Margin added on top of the initial margin."
    )
    reduce_only = serializers.BooleanField(default=False)
    position = WholeNumberInput(
        min_value=1,
        required=False,
        allow_null=True,
        help_text="The position a reduce-only order reduces: required with reduce_only, refused "
        "without it.",
    )
    client_order_id = serializers.CharField(
        max_length=64,
        required=False,
        allow_blank=True,
        default="",
        help_text="Your own id: repeating it on the same account returns the original order.",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        # The order's shape: fields an order of this kind would not use are refused rather
        # than ignored, and so is a reduce-only order without the position it reduces.
        unused: dict[str, str] = {}
        if attrs.get("price") is not None and attrs["type"] != Order.Type.LIMIT:
            unused["price"] = "Only a limit order has a price."
        if attrs.get("stop_price") is not None and attrs["type"] != Order.Type.STOP:
            unused["stop_price"] = "Only a stop order has a stop price."
        if attrs.get("position") is not None and not attrs["reduce_only"]:
            unused["position"] = "Only a reduce-only order names a position (reduce_only: true)."
        if attrs["reduce_only"] and attrs.get("position") is None:
            unused["position"] = "A reduce-only order names the position it reduces."
        if attrs["reduce_only"]:
            for name in ("take_profit", "stop_loss", "extra_collateral"):
                if attrs.get(name) is not None:
                    unused[name] = f"A reduce-only order takes no {name}."
        if unused:
            raise serializers.ValidationError({k: [v] for k, v in unused.items()})
        return attrs


class ClosePositionSerializer(RequestSerializer):
    quantity = DecimalInput(
        required=False, allow_null=True, help_text="Part of the position to close; all if absent."
    )
    client_order_id = serializers.CharField(
        max_length=64,
        required=False,
        allow_blank=True,
        default="",
        help_text="Your own id of this close, carried by its order: repeating it with the same "
        "position and quantity returns the position without closing again.",
    )


class ReplaceOrderSerializer(RequestSerializer):
    quantity = DecimalInput(required=False, allow_null=True, help_text="Left out, it stays.")
    price = DecimalInput(
        required=False, allow_null=True, help_text="A limit order's new limit price."
    )
    stop_price = DecimalInput(
        required=False, allow_null=True, help_text="A stop order's new stop price."
    )
    client_order_id = serializers.CharField(
        max_length=64,
        required=False,
        allow_blank=True,
        default="",
        help_text="Your own id of the new order: repeating it with the same terms returns the "
        "replacement already made.",
    )


class TpslChangeSerializer(RequestSerializer):
    take_profit = DecimalInput(
        required=False, allow_null=True, help_text="null clears it; left out, it stays."
    )
    stop_loss = DecimalInput(
        required=False, allow_null=True, help_text="null clears it; left out, it stays."
    )


class MarginChangeSerializer(RequestSerializer):
    amount = DecimalInput(
        help_text="Positive adds margin, negative removes it; up to 8 decimal places, below the "
        "currency's cent too (0.001 moves 0.001, and its statement memo says so)."
    )
    client_request_id = serializers.CharField(
        max_length=64,
        required=False,
        allow_blank=True,
        default="",
        help_text="Your own id of this margin change, unique per position: repeating it with "
        "the same position and amount returns the position without moving the margin again.",
    )


# --- responses ----------------------------------------------------------------------------


class AccountSerializer(Shape):
    id = serializers.IntegerField(read_only=True)
    classroom = serializers.IntegerField(read_only=True)
    classroom_name = serializers.CharField(read_only=True)
    currency = serializers.CharField(read_only=True)
    balance = money_out(
        help_text="Free balance: outside any position and not held by a resting order."
    )
    collateral_locked = money_out()
    order_margin = money_out(
        help_text="What resting orders that would open a position hold out of the free "
        "balance (initial margin, extra collateral and fee at their price); it comes back when "
        "one is cancelled or rejected, or pays for the position when one fills."
    )
    equity = derived_out()
    funded = money_out(
        help_text="What was paid into the account: its starting balance and the instructor's "
        "grants, deductions and resets. equity - funded is all that trading made or lost: the "
        "open positions' unrealized_pnl (each one's loss at most its collateral) plus every "
        "position's realized_pnl less its fees_paid, and less the collateral's share that "
        "liquidations sent to the insurance fund."
    )
    unrealized_pnl = derived_out(
        help_text="The open positions' unrealized PnL at the marks, each one's loss counted as "
        "at most its collateral: under isolated margin that is all a position can take from the "
        "account, though its own unrealized_pnl goes further once the mark passes its "
        "bankruptcy price (until the engine liquidates it)."
    )
    realized_pnl = money_out()
    fees_paid = money_out()
    return_pct = derived_out(allow_null=True, help_text="equity - funded, in percent of funded.")
    trading_frozen = serializers.BooleanField(read_only=True)
    max_leverage = serializers.IntegerField(
        read_only=True,
        help_text="The classroom's leverage cap; an instrument or its margin tier may cap lower.",
    )
    trading_open = serializers.BooleanField(
        read_only=True,
        help_text="Whether the classroom takes orders now (its switch and its trading window); "
        "while it does not, orders are refused with trading_closed.",
    )
    trading_opens_at = serializers.DateTimeField(read_only=True, allow_null=True)
    trading_closes_at = serializers.DateTimeField(read_only=True, allow_null=True)


class MeSerializer(Shape):
    username = serializers.CharField(read_only=True)
    accounts = AccountSerializer(many=True, read_only=True)
    key_scope = serializers.ChoiceField(
        choices=ApiKey.Scope.values, read_only=True, allow_null=True
    )


class TierSerializer(Shape):
    notional_floor = money_out()
    notional_cap = money_out(allow_null=True)
    mmr = rate_out()
    cum = money_out()
    max_leverage = serializers.IntegerField(read_only=True)


class InstrumentSerializer(Shape):
    id = serializers.IntegerField(read_only=True)
    classroom = serializers.IntegerField(source="classroom_id", read_only=True)
    symbol = serializers.CharField(read_only=True)
    name = serializers.CharField(read_only=True)
    tick_size = price_out()
    lot_size = quantity_out()
    min_notional = money_out()
    max_leverage = serializers.IntegerField(read_only=True)
    tiers = serializers.SerializerMethodField()
    taker_fee = rate_out(source="taker_fee_rate")
    spread = price_out(
        help_text="Bid-ask spread in price units: a market order buys at the mark plus half of "
        "it and sells at the mark minus half, on the tick grid."
    )
    is_tradable = serializers.BooleanField(
        read_only=True,
        help_text="False while the instructor keeps it closed: orders on it are refused with "
        "instrument_not_allowed.",
    )
    mark_price = price_out(allow_null=True)
    mark_updated_at = serializers.DateTimeField(read_only=True, allow_null=True)

    @extend_schema_field(TierSerializer(many=True))
    def get_tiers(self, instrument: Any) -> list[dict[str, Any]]:
        return TierSerializer(instrument.tiers.all(), many=True).data  # type: ignore[return-value]


class PriceTickSerializer(Shape):
    price = price_out()
    created_at = serializers.DateTimeField(read_only=True)


class PreviewSerializer(Shape):
    symbol = serializers.CharField(read_only=True)
    side = serializers.ChoiceField(choices=Side.values, read_only=True)
    entry_price = price_out()
    mark_price = price_out()
    quantity = quantity_out()
    leverage = serializers.IntegerField(read_only=True)
    notional = money_out()
    initial_margin = money_out()
    extra_collateral = money_out()
    collateral = money_out(help_text="initial_margin plus extra_collateral.")
    fee = money_out(help_text="The taker fee of opening it.")
    total_cost = money_out(help_text="collateral plus fee: what leaves the free balance.")
    liquidation_price = price_out(
        allow_null=True,
        help_text="On the tick grid, rounded towards the entry; null for a long that could "
        "never be liquidated.",
    )
    bankruptcy_price = price_out(help_text="On the tick grid, rounded towards the entry.")
    max_loss = money_out(help_text="The most the position can lose: its collateral (fees apart).")
    distance_to_liquidation = price_out(
        allow_null=True,
        help_text="To the liquidation price from the mark, for an order that fills at once, "
        "or from its limit or stop price, for one that rests.",
    )
    distance_to_liquidation_pct = derived_out(
        allow_null=True,
        help_text="distance_to_liquidation in percent of where it is measured from.",
    )
    max_leverage = serializers.IntegerField(
        read_only=True,
        help_text="The highest leverage allowed at this order's notional (instrument, its margin "
        "tier and the classroom).",
    )


class OrderSerializer(Shape):
    id = serializers.IntegerField(read_only=True)
    account = serializers.IntegerField(source="account_id", read_only=True)
    symbol = serializers.CharField(source="instrument.symbol", read_only=True)
    side = serializers.ChoiceField(choices=Side.values, read_only=True)
    type = serializers.ChoiceField(choices=Order.Type.values, read_only=True)
    status = serializers.ChoiceField(choices=Order.Status.values, read_only=True)
    quantity = quantity_out()
    leverage = serializers.IntegerField(read_only=True)
    price = price_out(allow_null=True)
    stop_price = price_out(allow_null=True)
    take_profit = price_out(allow_null=True)
    stop_loss = price_out(allow_null=True)
    extra_collateral = money_out()
    held_margin = money_out(
        help_text="What this order holds out of the free balance while it rests (its order "
        "margin); 0 for a reduce-only order and once it has filled, been cancelled or rejected."
    )
    reduce_only = serializers.BooleanField(read_only=True)
    position = serializers.IntegerField(source="position_id", read_only=True, allow_null=True)
    client_order_id = serializers.CharField(read_only=True)
    reject_reason = serializers.CharField(
        read_only=True,
        help_text='Why it was rejected or cancelled by Ringfence ("Replaced by order #N" for '
        "an order a PATCH replaced); empty otherwise.",
    )
    replaces = serializers.IntegerField(
        source="replaces_id",
        read_only=True,
        allow_null=True,
        help_text="The resting order this one replaced (PATCH /orders/{id}/); null otherwise.",
    )
    trigger = serializers.ChoiceField(
        choices=Order.Trigger.values,
        allow_blank=True,
        read_only=True,
        help_text="take_profit or stop_loss on the order that closed a position because the "
        "mark reached its take-profit or stop-loss (its stop_price is that level); empty on "
        "every other order.",
    )
    created_at = serializers.DateTimeField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)
    filled_at = serializers.DateTimeField(read_only=True, allow_null=True)
    filled_price = price_out(
        source="fill_price",
        allow_null=True,
        default=None,
        help_text="The price it filled at; null until it fills.",
    )
    filled_quantity = quantity_out(
        source="fill_quantity",
        allow_null=True,
        default=None,
        help_text="How much it filled (a reduce-only order at most what was open); null until "
        "it fills.",
    )


class CancelledOrdersSerializer(Shape):
    cancelled = OrderSerializer(
        many=True, read_only=True, help_text="The orders it cancelled, oldest first."
    )


class PositionSerializer(Shape):
    """A position with its valuation at the current mark (``valuation`` in the context)."""

    id = serializers.IntegerField(read_only=True)
    account = serializers.IntegerField(source="account_id", read_only=True)
    symbol = serializers.CharField(source="instrument.symbol", read_only=True)
    side = serializers.ChoiceField(choices=Side.values, read_only=True)
    quantity = quantity_out(help_text="What is still open: 0 once closed or liquidated.")
    opened_quantity = quantity_out(help_text="The size it was opened with.")
    entry_price = price_out()
    leverage = serializers.IntegerField(read_only=True)
    collateral = money_out(source="valuation.collateral")
    mark_price = price_out(source="valuation.mark_price", allow_null=True)
    unrealized_pnl = derived_out(source="valuation.unrealized_pnl", allow_null=True)
    margin_balance = derived_out(source="valuation.margin_balance", allow_null=True)
    maintenance_margin = derived_out(source="valuation.maintenance_margin", allow_null=True)
    margin_ratio = _decimal(
        40,
        8,
        source="valuation.margin_ratio",
        allow_null=True,
        help_text="Maintenance margin over margin balance: 1 means liquidation, 0.8 a margin call. "
        "null when there is no mark yet, once the position is closed, and when its margin "
        "balance is zero or below: past its bankruptcy price, so past liquidation too (the "
        "engine liquidates it on its next tick).",
    )
    liquidation_price = PositionPriceField(
        "liquidation_price",
        help_text="On the tick grid, rounded towards the entry; null for a long that cannot be "
        "liquidated and once the position is closed.",
    )
    bankruptcy_price = PositionPriceField(
        "bankruptcy_price",
        help_text="On the tick grid, rounded towards the entry; null once the position is closed.",
    )
    take_profit = price_out(allow_null=True)
    stop_loss = price_out(allow_null=True)
    realized_pnl = money_out()
    fees_paid = money_out()
    net_result = money_out(
        allow_null=True,
        default=None,
        help_text="What the position did to your free balance once it is over: realized_pnl "
        "less fees_paid, and for a liquidation less the rest of the collateral it lost (the "
        "share sent to the insurance fund). The sum of its statement entries; null while it is "
        "open.",
    )
    exit_price = price_out(
        allow_null=True,
        help_text="The price of the fill that closed the last of it (the mark for a "
        "liquidation); each part closed before is a fill of its own (/fills/?position=). Kept "
        "for compatibility: for a position closed in parts, average_exit_price is the exit its "
        "PnL comes from. null while it is open.",
    )
    average_exit_price = price_out(
        allow_null=True,
        help_text="The average price of the fills that closed it so far (closes, a liquidation, "
        "auto-deleveraging), weighted by their quantity, as exchanges show a close price: "
        "(opened_quantity - quantity) x (average_exit_price - entry_price) is its price PnL (for "
        "a long; the other way round for a short). Exact, or rounded half-even to 10 decimal "
        "places when the average has more, so it may lie off the tick grid. null until a part "
        "has closed; an open position partly closed has the average of the parts closed.",
    )
    status = serializers.ChoiceField(choices=["open", "closed", "liquidated"], read_only=True)
    opened_at = serializers.DateTimeField(read_only=True)
    closed_at = serializers.DateTimeField(read_only=True, allow_null=True)


class FillSerializer(Shape):
    id = serializers.IntegerField(read_only=True)
    order = serializers.IntegerField(
        source="order_id",
        read_only=True,
        allow_null=True,
        help_text="The order it executed; null for a liquidation or auto-deleveraging.",
    )
    position = serializers.IntegerField(source="position_id", read_only=True)
    symbol = serializers.CharField(source="position.instrument.symbol", read_only=True)
    side = serializers.ChoiceField(
        choices=Side.values,
        source="position.side",
        read_only=True,
        help_text="The position's side (a close of a long sells).",
    )
    kind = serializers.ChoiceField(choices=Fill.Kind.values, read_only=True)
    trigger = serializers.ChoiceField(
        choices=Order.Trigger.values,
        allow_blank=True,
        source="order.trigger",
        default="",
        read_only=True,
        help_text="take_profit or stop_loss on a close the position's take-profit or stop-loss "
        "made; empty on every other fill.",
    )
    quantity = quantity_out()
    price = price_out()
    fee = money_out()
    realized_pnl = money_out(help_text="PnL this fill realised, before its fee.")
    created_at = serializers.DateTimeField(read_only=True)


class StatementEntrySerializer(Shape):
    id = serializers.IntegerField(read_only=True)
    account = serializers.IntegerField(source="account_id", read_only=True)
    transaction = serializers.IntegerField(source="transaction_id", read_only=True)
    kind = serializers.ChoiceField(
        choices=LedgerTransaction.Kind.values, source="transaction.kind", read_only=True
    )
    memo = serializers.CharField(source="transaction.memo", read_only=True)
    position = serializers.IntegerField(
        source="transaction.position_id",
        read_only=True,
        allow_null=True,
        help_text="The position the transaction opened, closed or changed, if any.",
    )
    amount = money_out(
        help_text="Signed: positive credits the free balance, negative debits it. An account's "
        "amounts add up to its balance."
    )
    created_at = serializers.DateTimeField(source="transaction.created_at", read_only=True)


class LiquidationSerializer(Shape):
    id = serializers.IntegerField(read_only=True)
    position = serializers.IntegerField(source="position_id", read_only=True)
    symbol = serializers.CharField(source="position.instrument.symbol", read_only=True)
    side = serializers.ChoiceField(choices=Side.values, source="position.side", read_only=True)
    quantity = quantity_out()
    mark_price = price_out()
    liquidation_price = EventPriceField(
        "liquidation_price",
        allow_null=True,
        help_text="The position's liquidation price, on the tick grid and rounded towards the "
        "entry as positions show it.",
    )
    bankruptcy_price = EventPriceField(
        "bankruptcy_price",
        help_text="The position's bankruptcy price, on the tick grid and rounded towards the "
        "entry as positions show it.",
    )
    collateral_lost = money_out()
    liquidation_fee = money_out()
    returned_to_trader = money_out()
    insurance_fund_paid = money_out(source="insurance_paid")
    created_at = serializers.DateTimeField(read_only=True)


class MarginCallSerializer(Shape):
    id = serializers.IntegerField(read_only=True)
    position = serializers.IntegerField(source="position_id", read_only=True)
    symbol = serializers.CharField(source="position.instrument.symbol", read_only=True)
    side = serializers.ChoiceField(choices=Side.values, source="position.side", read_only=True)
    mark_price = price_out()
    margin_ratio = _decimal(20, 8)
    outcome = serializers.ChoiceField(
        choices=MarginCall.Outcome.values,
        read_only=True,
        help_text="pending while the call stands; then how it ended: margin_added, reduced "
        "(the position was reduced or closed), recovered (the price moved back) or liquidated.",
    )
    created_at = serializers.DateTimeField(read_only=True)
    resolved_at = serializers.DateTimeField(read_only=True, allow_null=True)


class LeaderboardRowSerializer(Shape):
    rank = serializers.IntegerField(read_only=True)
    username = serializers.CharField(read_only=True)
    equity = derived_out()
    return_pct = derived_out(
        allow_null=True, help_text="Equity against the money paid in (funding), in percent."
    )
    max_drawdown_pct = money_out(
        help_text="Largest fall from a peak of the trading curve, funding left out, in percent."
    )
    liquidations = serializers.IntegerField(read_only=True)
    score = derived_out(help_text="What the ranking sorts by (see the classroom's ranking).")
    is_you = serializers.BooleanField(read_only=True)


class LeaderboardSerializer(Shape):
    classroom = serializers.IntegerField(read_only=True)
    classroom_name = serializers.CharField(read_only=True)
    ranking = serializers.ChoiceField(choices=["raw", "risk_adjusted"], read_only=True)
    results = LeaderboardRowSerializer(many=True, read_only=True)


class HealthSerializer(Shape):
    status = serializers.CharField(read_only=True)


class ErrorDetailSerializer(Shape):
    code = serializers.CharField(read_only=True, help_text="Stable, machine-readable.")
    message = serializers.CharField(read_only=True)
    # The metaclass takes declared fields out of the class body, so this name is safe here.
    fields = serializers.DictField(  # type: ignore[assignment]
        child=serializers.ListField(child=serializers.CharField()),
        help_text="Messages per request field; empty when the error is not about one field.",
    )


class ErrorSerializer(Shape):
    error = ErrorDetailSerializer(read_only=True)
