"""Services that open, change and close isolated positions: the only code moving their money.

Each service is one transaction. Rows are locked in a fixed order: the trading account
first, then the position and its collateral or the order, then the classroom's pockets in
``accounts.ledger.POCKET_LOCK_ORDER`` (insurance fund, house, fees). State is re-read under
the locks, and every movement of money is one balanced ledger transaction. Calls on one
account queue on that account's row, so they never deadlock and need no retry.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from functools import partial

from django.db import connection, transaction
from django.db.models import (
    BigIntegerField,
    Exists,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
)
from django.utils import timezone

from accounts import errors
from accounts.ledger import Leg, credit_within_limit, ledger_post, lock_classroom_pockets, plus
from accounts.models import LedgerEntry, LedgerTransaction, TradingAccount, User
from accounts.money import (
    MONEY_LIMIT,
    MONEY_STEP,
    PRICE_PLACES,
    PRICE_STEP,
    QUANTITY_PLACES,
    ZERO,
    exact_price_text,
    is_multiple,
    memo_money,
    money,
    money_charged,
    money_pnl,
    money_text,
    parse_decimal,
    places,
    plain,
    price,
    price_down,
    price_text,
    price_up,
    to_tick,
    towards_entry,
)
from accounts.services import clean_amount, lock_accounts
from positions import margin, selectors
from positions.models import (
    Collateral,
    Fill,
    Instrument,
    MarginTier,
    Order,
    Position,
    Side,
    TpSlChange,
    with_fill,
)

Pocket = LedgerEntry.Pocket


# --- input cleaning -------------------------------------------------------------------


def clean_quantity(value: object, *, instrument: Instrument, field: str = "quantity") -> Decimal:
    try:
        quantity = parse_decimal(value)
    except (InvalidOperation, ValueError):
        raise errors.InvalidQuantity("Enter a quantity as a number.", field=field) from None
    if not quantity.is_finite() or quantity <= 0:
        raise errors.InvalidQuantity("The quantity must be a positive number.", field=field)
    if quantity >= Decimal(10) ** 14:
        raise errors.InvalidQuantity("The quantity is too large.", field=field)
    if places(quantity) > QUANTITY_PLACES or not is_multiple(quantity, instrument.lot_size):
        raise errors.InvalidQuantity(
            f"The quantity must be a multiple of the lot size {plain(instrument.lot_size)}.",
            field=field,
        )
    return quantity


def clean_reduce_quantity(
    value: object, *, position: Position, instrument: Instrument, field: str = "quantity"
) -> Decimal:
    """A quantity to take off ``position``: whole lots, or exactly what is open, which is
    whole lots of the size the position was opened with even if the lot size grew since."""
    try:
        return clean_quantity(value, instrument=instrument, field=field)
    except errors.InvalidQuantity:
        try:
            whole = parse_decimal(value) == position.quantity
        except (InvalidOperation, ValueError):
            whole = False
        if whole:
            return position.quantity
        if not is_multiple(position.quantity, instrument.lot_size):
            # Opened before the lot size grew: the student may still close all of it.
            raise errors.InvalidQuantity(
                f"The quantity must be a multiple of the lot size {plain(instrument.lot_size)}, "
                f"or all that is open ({plain(position.quantity)}).",
                field=field,
            ) from None
        raise


def clean_price(value: object, *, instrument: Instrument, field: str) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        result = parse_decimal(value)
    except (InvalidOperation, ValueError):
        raise errors.InvalidPrice("Enter a price as a number.", field=field) from None
    if not result.is_finite() or result <= 0:
        raise errors.InvalidPrice("The price must be a positive number.", field=field)
    if result >= Decimal(10) ** 17:
        raise errors.InvalidPrice("The price is too large.", field=field)
    if places(result) > PRICE_PLACES or not is_multiple(result, instrument.tick_size):
        raise errors.InvalidPrice(
            f"The price must be a multiple of the tick size {plain(instrument.tick_size)}.",
            field=field,
        )
    return result


def clean_side(value: object) -> str:
    side = str(value or "").strip().lower()
    side = {"buy": Side.LONG, "sell": Side.SHORT}.get(side, side)
    if side not in Side.values:
        raise errors.DomainError("The side must be long or short.", field="side")
    return side


def clean_leverage(value: object) -> int:
    try:
        leverage = int(str(value).strip())
    except (TypeError, ValueError):
        raise errors.InvalidLeverage("Leverage must be a whole number.", field="leverage") from None
    if leverage < 1:
        raise errors.InvalidLeverage("Leverage must be at least 1x.", field="leverage")
    return leverage


CLIENT_ORDER_ID_LENGTH = Order._meta.get_field("client_order_id").max_length or 64


def clean_client_order_id(value: object) -> str:
    """A client's own id of an order (or of a close), stripped; "" when there is none."""
    client_order_id = str(value or "").strip()
    if len(client_order_id) > CLIENT_ORDER_ID_LENGTH:
        raise errors.InvalidOrder(
            f"client_order_id is at most {CLIENT_ORDER_ID_LENGTH} characters.",
            field="client_order_id",
        )
    return client_order_id


CLIENT_REQUEST_ID_LENGTH = (
    LedgerTransaction._meta.get_field("client_request_id").max_length or CLIENT_ORDER_ID_LENGTH
)


def clean_client_request_id(value: object) -> str:
    """A client's own id of a margin change, stripped; "" when there is none."""
    client_request_id = str(value or "").strip()
    if len(client_request_id) > CLIENT_REQUEST_ID_LENGTH:
        raise errors.DomainError(
            f"client_request_id is at most {CLIENT_REQUEST_ID_LENGTH} characters.",
            field="client_request_id",
        )
    return client_request_id


# --- prices and quotes ----------------------------------------------------------------


def fill_price(*, instrument: Instrument, buying: bool, mark: Decimal) -> Decimal:
    """Where a market order fills: the mark plus or minus half the spread, on the tick grid."""
    half = instrument.spread / 2
    if buying:
        return to_tick(mark + half, instrument.tick_size, up=True)
    return max(to_tick(mark - half, instrument.tick_size, up=False), instrument.tick_size)


def limit_reached(*, instrument: Instrument, side: str, limit: Decimal, mark: Decimal) -> bool:
    """Whether a limit order would fill now: the price it fills at (half a spread from the
    mark) is at or better than its limit, so it never fills beyond it."""
    buying = side == Side.LONG
    quote = fill_price(instrument=instrument, buying=buying, mark=mark)
    return quote <= limit if buying else quote >= limit


@dataclass(frozen=True)
class OrderPrices:
    """An order's prices, checked: ``entry_price`` is where a quote opens it (``None``: at
    market, now) and ``fills_now`` says whether placing it fills it at once."""

    limit: Decimal | None
    trigger: Decimal | None
    fills_now: bool

    @property
    def entry_price(self) -> Decimal | None:
        if self.fills_now:
            return None
        return self.limit if self.limit is not None else self.trigger


def clean_order_prices(
    *, instrument: Instrument, side: str, type: str, price: object, stop_price: object
) -> OrderPrices:
    """Check an order's type and prices against the mark, for placing it or quoting it.

    A limit order the market has already reached fills at once, at market (never beyond its
    limit), as on an exchange; a stop order the mark has already passed is refused, since it
    would trigger at once at a price its author did not mean.
    """
    if type not in Order.Type.values:
        raise errors.InvalidOrder("The order type must be market, limit or stop.", field="type")
    side = clean_side(side)
    limit = clean_price(price, instrument=instrument, field="price")
    trigger = clean_price(stop_price, instrument=instrument, field="stop_price")
    if type == Order.Type.MARKET:
        return OrderPrices(limit=None, trigger=None, fills_now=True)
    mark = current_mark(instrument)
    if type == Order.Type.LIMIT:
        if limit is None:
            raise errors.InvalidPrice("A limit order needs a price.", field="price")
        reached = limit_reached(instrument=instrument, side=side, limit=limit, mark=mark)
        return OrderPrices(limit=limit, trigger=None, fills_now=reached)
    if trigger is None:
        raise errors.InvalidPrice("A stop order needs a stop price.", field="stop_price")
    if side == Side.LONG and trigger <= mark:
        raise errors.InvalidPrice(
            f"A stop to buy triggers when the mark rises to it, and the mark is already "
            f"{price_text(mark, instrument.tick_size)}: set it above the mark, or place a market "
            "or limit order.",
            field="stop_price",
        )
    if side == Side.SHORT and trigger >= mark:
        raise errors.InvalidPrice(
            f"A stop to sell triggers when the mark falls to it, and the mark is already "
            f"{price_text(mark, instrument.tick_size)}: set it below the mark, or place a market "
            "or limit order.",
            field="stop_price",
        )
    return OrderPrices(limit=None, trigger=trigger, fills_now=False)


def current_mark(instrument: Instrument) -> Decimal:
    if instrument.mark_price is None:
        raise errors.NoMarkPrice(f"{instrument.symbol} has no price yet; try again in a moment.")
    return instrument.mark_price


def stored_prices(
    *,
    side: str,
    entry_price: Decimal,
    quantity: Decimal,
    collateral: Decimal,
    tiers: list[margin.Tier],
) -> tuple[Decimal | None, Decimal]:
    """(liquidation price, bankruptcy price) as stored: the LP rounded towards the mark."""
    lp = margin.liquidation_price(
        side=side, entry_price=entry_price, quantity=quantity, collateral=collateral, tiers=tiers
    )
    bp = margin.bankruptcy_price(
        side=side, entry_price=entry_price, quantity=quantity, collateral=collateral
    )
    if lp is not None:
        lp = price_up(lp) if side == Side.LONG else price_down(lp)
    return lp, max(price(bp), ZERO)


@dataclass(frozen=True)
class OpenQuote:
    """What opening a position would cost and risk: the pre-trade preview."""

    entry_price: Decimal
    quantity: Decimal
    leverage: int
    notional: Decimal
    initial_margin: Decimal
    extra_collateral: Decimal
    collateral: Decimal
    fee: Decimal
    total_cost: Decimal
    liquidation_price: Decimal | None
    bankruptcy_price: Decimal
    max_loss: Decimal
    mark_price: Decimal
    distance_to_liquidation: Decimal | None
    distance_to_liquidation_pct: Decimal | None
    max_leverage: int
    take_profit: Decimal | None = None
    stop_loss: Decimal | None = None


def max_leverage_for(*, account: TradingAccount, instrument: Instrument, notional: Decimal) -> int:
    tiers = instrument.margin_tiers()
    caps = [account.classroom.max_leverage, instrument.max_leverage]
    if tiers:
        caps.append(margin.max_leverage_for_notional(notional=notional, tiers=tiers))
    return min(caps)


def max_open_quantity(
    *, account: TradingAccount, instrument: Instrument, leverage: int, entry_price: Decimal
) -> Decimal:
    """The largest whole-lot quantity the free balance opens at ``leverage`` and
    ``entry_price``, its fee included, within the margin tiers that allow that leverage
    (0 when not even one lot fits, or the leverage is above every cap)."""
    tiers = instrument.margin_tiers()
    if not tiers or entry_price <= 0 or leverage < 1:
        return ZERO
    if leverage > min(account.classroom.max_leverage, instrument.max_leverage):
        return ZERO
    allowed = [t for t in tiers if t.max_leverage >= leverage]
    if not allowed:
        return ZERO
    per_unit = entry_price / Decimal(leverage) + entry_price * instrument.taker_fee_rate
    limit = account.balance / per_unit
    # Tiers allowing a leverage are the first ones; the last tier has no cap of its own (it
    # holds every notional beyond the others, as opening and the margin maths take it).
    cap = allowed[-1].notional_cap if len(allowed) < len(tiers) else None
    if cap is not None:
        limit = min(limit, cap / entry_price)
    lots = (limit / instrument.lot_size).to_integral_value(rounding=ROUND_FLOOR)

    def fits(quantity: Decimal) -> bool:
        notional = quantity * entry_price
        im = money_charged(
            margin.initial_margin(entry_price=entry_price, quantity=quantity, leverage=leverage)
        )
        cost = im + money_charged(notional * instrument.taker_fee_rate)
        within_tier = cap is None or notional < cap
        return cost <= account.balance and within_tier

    # The rounding of margin and fee (up, to the cent's fraction) may cost one lot.
    while lots > 0 and not fits(lots * instrument.lot_size):
        lots -= 1
    quantity = lots * instrument.lot_size
    if quantity * entry_price < instrument.min_notional:
        return ZERO
    return quantity


def _check_can_trade(account: TradingAccount, instrument: Instrument) -> None:
    if instrument.classroom_id != account.classroom_id:
        raise errors.InstrumentNotAllowed(
            "This instrument is not traded in your classroom.", field="instrument"
        )
    if not instrument.is_tradable:
        raise errors.InstrumentNotAllowed(
            f"{instrument.symbol} is not open for trading.", field="instrument"
        )
    if account.trading_frozen:
        raise errors.AccountFrozen("Your instructor has frozen trading on this account.")
    classroom = account.classroom
    if not classroom.is_trading_open():
        # Say when it opens, so a bot (or a student) knows how long to wait.
        now = timezone.now()
        if not classroom.trading_enabled:
            when = "right now"
        elif classroom.trading_opens_at and now < classroom.trading_opens_at:
            when = f"until {_utc(classroom.trading_opens_at)}"
        else:
            when = f"since {_utc(classroom.trading_closes_at)}, the end of its trading window"
        raise errors.TradingClosed(f"Trading is closed in this classroom {when}.")


def _utc(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def opening_charges(
    *, instrument: Instrument, quantity: Decimal, leverage: int, entry_price: Decimal
) -> tuple[Decimal, Decimal]:
    """(initial margin, taker fee) of opening ``quantity`` at ``entry_price``."""
    im = margin.initial_margin(entry_price=entry_price, quantity=quantity, leverage=leverage)
    return money_charged(im), money_charged(quantity * entry_price * instrument.taker_fee_rate)


def quote_open(
    *,
    account: TradingAccount,
    instrument: Instrument,
    side: str,
    quantity: object,
    leverage: object,
    extra_collateral: object = ZERO,
    entry_price: Decimal | None = None,
    fills_now: bool = False,
    check_balance: bool = True,
    take_profit: object = None,
    stop_loss: object = None,
) -> OpenQuote:
    """Validate an opening order and work out its margin, fee, LP, BP and maximum loss.

    ``entry_price`` prices a resting order at its limit or stop price; without it the
    order fills at market. With ``fills_now`` the order fills at ``entry_price`` now (a
    triggered limit at its limit), so it is checked against the mark as a fill at market
    is: the position it opens must not already be liquidatable there. A take-profit and
    stop-loss, if given, are checked against the entry (and, filling now, the mark) and
    the liquidation price.
    """
    _check_can_trade(account, instrument)
    side = clean_side(side)
    qty = clean_quantity(quantity, instrument=instrument)
    lev = clean_leverage(leverage)
    extra = clean_amount(extra_collateral or ZERO, field="extra_collateral", allow_zero=True)
    mark = current_mark(instrument)
    now = entry_price is None or fills_now
    entry = (
        entry_price
        if entry_price is not None
        else fill_price(instrument=instrument, buying=side == Side.LONG, mark=mark)
    )
    notional = qty * entry
    currency = account.classroom.currency
    if notional < instrument.min_notional:
        raise errors.BelowMinNotional(
            f"The order is worth {money_text(notional, currency)}; "
            f"the minimum is {money_text(instrument.min_notional, currency)}.",
            field="quantity",
        )
    cap = max_leverage_for(account=account, instrument=instrument, notional=notional)
    if lev > cap:
        raise errors.LeverageTooHigh(
            f"Leverage is capped at {cap}x for this order.", field="leverage"
        )
    tiers = instrument.margin_tiers()
    if not tiers:
        raise errors.InstrumentNotAllowed(
            f"{instrument.symbol} has no margin tiers yet.", field="instrument"
        )
    im, fee = opening_charges(instrument=instrument, quantity=qty, leverage=lev, entry_price=entry)
    collateral = im + extra
    total = collateral + fee
    if check_balance and total > account.balance:
        parts = f"margin {money_text(im, currency)}"
        if extra:
            parts += f" + extra collateral {money_text(extra, currency)}"
        raise errors.InsufficientBalance(
            f"This needs {money_text(total, currency)} ({parts} + fee {money_text(fee, currency)}); "
            f"your free balance is {money_text(account.balance, currency)}.",
            # The field to change: the extra collateral when the order fits without it.
            field="extra_collateral" if extra and im + fee <= account.balance else "quantity",
        )
    if now and margin.is_liquidatable(
        side=side,
        entry_price=entry,
        quantity=qty,
        collateral=collateral,
        mark_price=mark,
        tiers=tiers,
    ):
        if entry_price is not None:
            # The mark is already past where the position would be liquidated: the next
            # tick would take it.
            raise errors.LeverageTooHigh(
                f"Opened at {price_text(entry, instrument.tick_size)}, the position would "
                f"already be past its liquidation price at the mark "
                f"{price_text(mark, instrument.tick_size)}.",
                field="leverage",
            )
        # A market order fills half a spread away from the mark; at this leverage that
        # alone would eat the margin down to maintenance, and the next tick would liquidate.
        raise errors.LeverageTooHigh(
            "At this leverage the spread alone would liquidate the position; lower the "
            "leverage or add collateral.",
            field="leverage",
        )
    lp, bp = stored_prices(
        side=side, entry_price=entry, quantity=qty, collateral=collateral, tiers=tiers
    )
    tp = clean_price(take_profit, instrument=instrument, field="take_profit")
    sl = clean_price(stop_loss, instrument=instrument, field="stop_loss")
    _validate_tpsl(
        side=side,
        reference=entry,
        mark=mark if now else None,
        liquidation_price=lp,
        take_profit=tp,
        stop_loss=sl,
        tick=instrument.tick_size,
    )
    # From the mark for a fill now; from the entry for an order that rests until then.
    start = mark if now else entry
    # To the liquidation price as shown, so that the distance is the difference of the two
    # prices the quote shows.
    distance = (
        None if lp is None else abs(start - _shown_risk_price(lp, side, instrument.tick_size))
    )
    distance_pct = None if lp is None else money(distance / start * 100)  # type: ignore[operator]
    return OpenQuote(
        take_profit=tp,
        stop_loss=sl,
        entry_price=entry,
        quantity=qty,
        leverage=lev,
        notional=money(notional),
        initial_margin=im,
        extra_collateral=extra,
        collateral=collateral,
        fee=fee,
        total_cost=total,
        liquidation_price=lp,
        bankruptcy_price=bp,
        max_loss=collateral,
        mark_price=mark,
        distance_to_liquidation=distance,
        distance_to_liquidation_pct=distance_pct,
        max_leverage=cap,
    )


def _shown_risk_price(value: Decimal, side: str, tick: Decimal | None) -> Decimal:
    """A liquidation price as pages and the API show it (on the tick, towards the entry)."""
    if tick is None:
        return value
    return towards_entry(value, side=side, tick=tick) or value


def _validate_tpsl(
    *,
    side: str,
    reference: Decimal,
    liquidation_price: Decimal | None,
    take_profit: Decimal | None,
    stop_loss: Decimal | None,
    mark: Decimal | None = None,
    tick: Decimal | None = None,
) -> None:
    """A take-profit lies on the winning side, a stop-loss on the losing side before the LP.

    TP/SL trigger on the mark, so a market order that fills away from the mark (the spread)
    checks against both its fill price and the mark: a stop between the two would fire on
    the next tick.
    """
    s = margin.side_sign(side)
    references = [reference] if mark is None else [reference, mark]
    if take_profit is not None:
        reference = max(references, key=lambda r: s * r)
        if s * (take_profit - reference) <= 0:
            word = "above" if s > 0 else "below"
            raise errors.InvalidPrice(
                f"A take-profit must be {word} {price_text(reference, tick)}.", field="take_profit"
            )
    reference = min(references, key=lambda r: s * r)
    if stop_loss is not None:
        if s * (reference - stop_loss) <= 0:
            word = "below" if s > 0 else "above"
            raise errors.InvalidPrice(
                f"A stop-loss must be {word} {price_text(reference, tick)}.", field="stop_loss"
            )
        if liquidation_price is not None and s * (stop_loss - liquidation_price) <= 0:
            raise errors.InvalidPrice(
                "This stop-loss lies beyond the liquidation price "
                f"{price_text(_shown_risk_price(liquidation_price, side, tick), tick)} "
                "and would never trigger.",
                field="stop_loss",
            )


# --- locking --------------------------------------------------------------------------


def lock_account(
    account_id: int, *, owner_id: int | None = None, opening: QuerySet[Instrument] | None = None
) -> TradingAccount:
    """Lock a trading account (with its classroom); with ``owner_id``, only that user's.

    With ``opening`` (the instrument a position may open on, whose filter may name the
    account's columns by ``OuterRef``), hold that instrument against a change of its margin
    tiers, in the same statement: see ``_hold_against_tier_change``.
    """
    accounts = TradingAccount.objects.select_for_update(of=("self",), no_key=True).select_related(
        "classroom"
    )
    if owner_id is not None:
        accounts = accounts.filter(user_id=owner_id)
    if opening is not None and connection.vendor == "postgresql":
        # SQLite has no row locks; the embedded default runs one writer at a time anyway.
        accounts = accounts.annotate(held_instrument_id=_hold_against_tier_change(opening))
    try:
        return accounts.get(pk=account_id)
    except TradingAccount.DoesNotExist:
        field = None if owner_id is None else "account"
        raise errors.NotFound("No such trading account.", field=field) from None


def _hold_against_tier_change(instruments: QuerySet[Instrument]) -> Subquery:
    """A column whose computation locks the instrument FOR KEY SHARE until the commit.

    A position stores the liquidation price its instrument's margin tiers give it, so the
    tiers may change only while no position is open: the change (``positions.admin``) locks
    the instrument FOR UPDATE, then counts the open positions. An opening holds FOR KEY SHARE
    from before it reads the tiers, so either the change waits for it and counts its
    position, or it waits for the change and reads the new tiers. Not in the statement that
    reads the tiers: one that waits for a row lock still returns the other rows as they were
    when it started, the old tiers.

    KEY SHARE conflicts with FOR UPDATE alone: openings never wait for each other, nor for
    the tick's FOR NO KEY UPDATE. It may be granted before the account's own lock; no
    deadlock, since a tier change takes no account (the admin refuses a save that would also
    move resting orders under their accounts' locks). Django has no FOR KEY SHARE; a
    sub-select may have it.
    """
    return Subquery(instruments.values("pk"), template="(%(subquery)s FOR KEY SHARE)")


def lock_accounts_with_open_positions(account_ids: Iterable[int]) -> dict[int, TradingAccount]:
    """Lock trading accounts in id order, then every open position of theirs in id order.

    For a transaction that closes several positions: each close takes the house pocket, so
    waiting for the next position's lock after the first close could deadlock with the
    engine's liquidation batch, which holds that position and waits for the house.
    """
    accounts = lock_accounts(account_ids)
    list(
        Position.objects.select_for_update(of=("self",), no_key=True)
        .filter(account_id__in=list(accounts), status=Position.Status.OPEN)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    return accounts


def lock_position(position_id: int) -> tuple[TradingAccount, Position, Collateral]:
    """Lock a position's account, then the position, then its collateral."""
    account_id = (
        Position.objects.filter(pk=position_id).values_list("account_id", flat=True).first()
    )
    if account_id is None:
        raise errors.NotFound("No such position.")
    account = lock_account(account_id)
    position = (
        Position.objects.select_for_update(of=("self",), no_key=True)
        .select_related("instrument")
        .get(pk=position_id)
    )
    position.account = account
    collateral = Collateral.objects.select_for_update(no_key=True).get(pk=position_id)
    return account, position, collateral


def _instrument(instrument_id: int) -> Instrument:
    try:
        return Instrument.objects.prefetch_related("tiers").get(pk=instrument_id)
    except Instrument.DoesNotExist:
        raise errors.NotFound("No such instrument.", field="instrument") from None


def _named_instrument(instrument_id: int | None, symbol: str) -> QuerySet[Instrument]:
    """The instrument an order names: by id, or by symbol in its account's classroom (as an
    ``OuterRef`` to the account, for ``lock_account``)."""
    if instrument_id is not None:
        return Instrument.objects.filter(pk=instrument_id)
    return Instrument.objects.filter(classroom_id=OuterRef("classroom_id"), symbol__iexact=symbol)


def _order_instrument(
    account: TradingAccount, *, instrument_id: int | None, symbol: str, client_order_id: str
) -> tuple[Instrument | None, int | None, bool]:
    """The instrument an order trades (by id, or by symbol in the account's classroom), with
    its tiers, the id of the account's order that already carries ``client_order_id``, if
    any, and whether the account's user is deactivated (``owner_deactivated``): one query,
    the tier rows joined to their instrument. (None, id, …) for a repeat.

    Run it under the account's lock: it is a statement of its own, so it sees every order
    committed before the lock was granted, and a deactivation too.
    """
    repeats = Order.objects.filter(account_id=account.pk, client_order_id=client_order_id)
    if instrument_id is not None:
        wanted = Q(instrument_id=instrument_id)
    else:
        wanted = Q(instrument__classroom_id=account.classroom_id, instrument__symbol__iexact=symbol)
    tiers = list(
        MarginTier.objects.select_related("instrument")
        .annotate(
            repeated_order_id=Subquery(repeats.values("pk")[:1])
            if client_order_id
            else Value(None, output_field=BigIntegerField()),
            owner_deactivated=Exists(User.objects.filter(pk=account.user_id, is_active=False)),
        )
        .filter(wanted)
        .order_by("notional_floor")
    )
    if not tiers:  # no such instrument, or one without tiers yet (which cannot trade)
        repeated = repeats.values_list("pk", flat=True).first() if client_order_id else None
        if repeated is not None:
            return None, repeated, False
        deactivated = owner_deactivated(account)
        if instrument_id is not None:
            return _instrument(instrument_id), None, deactivated
        instrument = (
            Instrument.objects.prefetch_related("tiers")
            .filter(classroom_id=account.classroom_id, symbol__iexact=symbol)
            .first()
        )
        if instrument is None:
            raise errors.NotFound(
                f"No instrument {symbol!r} in this account's classroom.", field="symbol"
            )
        return instrument, None, deactivated
    instrument = tiers[0].instrument
    for tier in tiers:
        tier.instrument = instrument
    # What prefetch_related("tiers") would have left: margin_tiers() reads these rows.
    cached = instrument.tiers.all()
    cached._result_cache = tiers  # type: ignore[assignment]
    cached._prefetch_done = True  # type: ignore[attr-defined]
    instrument._prefetched_objects_cache = {"tiers": cached}  # type: ignore[attr-defined]
    first = tiers[0]
    return instrument, first.repeated_order_id, first.owner_deactivated  # type: ignore[attr-defined]


def _fresh(position_id: int) -> Position:
    """The position as stored now, with its collateral and instrument."""
    return Position.objects.select_related("collateral", "instrument", "account").get(
        pk=position_id
    )


def fresh_order(order_id: int) -> Order:
    """The order as stored now, with its instrument and position (and that one's collateral)."""
    return with_fill(
        Order.objects.select_related(
            "instrument", "position", "position__collateral", "position__instrument"
        )
    ).get(pk=order_id)


def collateral_apply_delta(position_id: int, delta: Decimal) -> None:
    credit_within_limit(
        Collateral.objects.filter(pk=position_id), "amount", delta, what="the collateral"
    )


def order_margin_apply_delta(order_id: int, delta: Decimal) -> None:
    Order.objects.filter(pk=order_id).update(held_margin=plus("held_margin", delta))


def position_ledger_post(**kwargs: object) -> LedgerTransaction:
    return ledger_post(
        collateral_updater=collateral_apply_delta,
        order_margin_updater=order_margin_apply_delta,
        **kwargs,  # type: ignore[arg-type]
    )


def _restore_prices(position: Position, collateral_amount: Decimal) -> None:
    lp, bp = stored_prices(
        side=position.side,
        entry_price=position.entry_price,
        quantity=position.quantity,
        collateral=collateral_amount,
        tiers=position.instrument.margin_tiers(),
    )
    position.liquidation_price, position.bankruptcy_price = lp, bp


# --- opening --------------------------------------------------------------------------


def _open(
    *,
    account: TradingAccount,
    instrument: Instrument,
    side: str,
    quantity: object,
    leverage: object,
    extra_collateral: object,
    take_profit: object,
    stop_loss: object,
    order: Order | None,
    client_order_id: str = "",
    entry_price: Decimal | None = None,
) -> tuple[Order, Position]:
    """Open a position now: at market, or at ``entry_price`` (a triggered limit at its limit)."""
    quote = quote_open(
        account=account,
        instrument=instrument,
        side=side,
        quantity=quantity,
        leverage=leverage,
        extra_collateral=extra_collateral,
        entry_price=entry_price,
        fills_now=True,
        take_profit=take_profit,
        stop_loss=stop_loss,
    )
    side = clean_side(side)
    tp, sl = quote.take_profit, quote.stop_loss
    now = timezone.now()
    position = Position.objects.create(
        account=account,
        instrument=instrument,
        side=side,
        quantity=quote.quantity,
        opened_quantity=quote.quantity,
        entry_price=quote.entry_price,
        leverage=quote.leverage,
        opened_at=now,
        liquidation_price=quote.liquidation_price,
        bankruptcy_price=quote.bankruptcy_price,
        fees_paid=quote.fee,
        take_profit=tp,
        stop_loss=sl,
    )
    collateral = Collateral.objects.create(
        position=position, amount=ZERO, initial_margin=quote.initial_margin
    )
    if order is None:
        order = Order(
            account=account,
            instrument=instrument,
            side=side,
            type=Order.Type.MARKET,
            quantity=quote.quantity,
            leverage=quote.leverage,
            extra_collateral=quote.extra_collateral,
            take_profit=tp,
            stop_loss=sl,
            client_order_id=client_order_id,
            created_at=now,
        )
    order.position = position
    order.status = Order.Status.FILLED
    order.filled_at = order.updated_at = now
    order.save()
    Fill.objects.create(
        order=order,
        position=position,
        kind=Fill.Kind.OPEN,
        quantity=quote.quantity,
        price=quote.entry_price,
        fee=quote.fee,
        created_at=now,
    )
    # What ``with_fill`` annotates on orders read back, for the order handed back now.
    setattr(order, "fill_price", quote.entry_price)  # noqa: B010
    setattr(order, "fill_quantity", quote.quantity)  # noqa: B010
    position_ledger_post(
        classroom_id=account.classroom_id,
        kind=LedgerTransaction.Kind.OPEN,
        position_id=position.pk,
        memo=f"Open {side} {plain(quote.quantity)} {instrument.symbol} at "
        f"{plain(quote.entry_price)}, {quote.leverage}x",
        legs=[
            Leg(Pocket.ACCOUNT, -quote.total_cost, account_id=account.pk),
            Leg(
                Pocket.COLLATERAL, quote.collateral, account_id=account.pk, position_id=position.pk
            ),
            Leg(Pocket.FEES, quote.fee),
        ],
    )
    # What the ledger just stored, so callers may hand these objects out without a re-read
    # (the account is locked, so its stored balance is the one read under the lock).
    account.balance -= quote.total_cost
    collateral.amount = quote.collateral
    return order, position


@transaction.atomic
def position_open(
    *,
    account_id: int,
    instrument_id: int,
    side: str,
    quantity: object,
    leverage: object,
    extra_collateral: object = ZERO,
    take_profit: object = None,
    stop_loss: object = None,
) -> Position:
    """Open one isolated position at market: its own collateral, its own liquidation price."""
    account = lock_account(account_id, opening=Instrument.objects.filter(pk=instrument_id))
    _refuse_if_deactivated(account)
    instrument = _instrument(instrument_id)
    _, position = _open(
        account=account,
        instrument=instrument,
        side=side,
        quantity=quantity,
        leverage=leverage,
        extra_collateral=extra_collateral,
        take_profit=take_profit,
        stop_loss=stop_loss,
        order=None,
    )
    return _fresh(position.pk)


# --- closing --------------------------------------------------------------------------


@dataclass(frozen=True)
class CloseSettlement:
    released: Decimal
    pnl: Decimal
    fee: Decimal
    to_trader: Decimal
    insurance_paid: Decimal


def refuse_if_liquidating(position: Position, collateral: Decimal, mark: Decimal) -> None:
    """Refuse to close or rescue a position the mark has already put past its liquidation
    point: it belongs to the engine's liquidation (by the same test the engine applies), as
    on an exchange, however soon its sweep runs."""
    if not selectors.past_liquidation(position, collateral=collateral, mark=mark):
        return
    lp = position.liquidation_price
    assert lp is not None  # past_liquidation needs one
    tick = position.instrument.tick_size
    shown = price_text(_shown_risk_price(lp, position.side, tick), tick)
    raise errors.PositionLiquidating(
        f"The mark {price_text(mark, tick)} has reached the liquidation price {shown}: "
        "the position is being liquidated and can no longer be closed, reduced or have its "
        "collateral changed."
    )


def _refuse_unsettleable(
    *, account: TradingAccount, position: Position, quantity: Decimal, pnl: Decimal,
    to_trader: Decimal,
) -> None:  # fmt: skip
    """Refuse, before anything is written, a close whose profit the money columns could not
    store: the free balance after it, or the position's realised PnL, at ``MONEY_LIMIT`` or
    past it. The message says how much of the position could be closed now."""
    balance_room = MONEY_LIMIT - account.balance
    pnl_room = MONEY_LIMIT - max(position.realized_pnl, ZERO)
    if to_trader < balance_room and pnl < pnl_room:
        return
    # The parts of the close scale with its quantity; one of the two binds, so it is > 0.
    shares = [
        room / part for room, part in ((balance_room, to_trader), (pnl_room, pnl)) if part > 0
    ]
    fits = quantity * min(shares)
    lot = position.instrument.lot_size
    fits = max((fits / lot).to_integral_value(rounding=ROUND_FLOOR) - 1, ZERO) * lot
    currency = account.classroom.currency
    advice = (
        f"Close at most about {plain(fits)} now."
        if fits > 0
        else "No part of it can be closed at this price."
    )
    if pnl >= pnl_room:
        would = (
            "bring this position's realised PnL to "
            f"{money_text(position.realized_pnl + pnl, currency)}"
        )
    else:
        would = (
            f"pay {money_text(to_trader, currency)} into a free balance of "
            f"{money_text(account.balance, currency)}"
        )
    raise errors.AmountTooLarge(
        f"Closing {plain(quantity)} now would {would}: more than an account can hold (below "
        f"{money_text(MONEY_LIMIT, currency)}). {advice}",
        field="quantity",
    )


def _close(
    *,
    account: TradingAccount,
    position: Position,
    collateral: Collateral,
    quantity: object,
    order: Order | None,
    kind: str = Fill.Kind.CLOSE,
    trigger: str = "",
    past_liquidation_ok: bool = False,
    client_order_id: str = "",
) -> tuple[Order, CloseSettlement]:
    if not position.is_open:
        raise errors.PositionNotOpen("This position is no longer open.")
    instrument = position.instrument
    qty = (
        position.quantity
        if quantity in (None, "")
        else clean_reduce_quantity(quantity, position=position, instrument=instrument)
    )
    if qty > position.quantity:
        raise errors.InvalidQuantity(f"Only {plain(position.quantity)} is open.", field="quantity")
    mark = current_mark(instrument)
    if not past_liquidation_ok:
        refuse_if_liquidating(position, collateral.amount, mark)
    s = margin.side_sign(position.side)
    exit_price = fill_price(instrument=instrument, buying=s < 0, mark=mark)
    full = qty == position.quantity
    released = collateral.amount if full else money(collateral.amount * qty / position.quantity)
    pnl = money_pnl(s * qty * (exit_price - position.entry_price))
    fee = money_charged(qty * exit_price * instrument.taker_fee_rate)
    legs = [Leg(Pocket.COLLATERAL, -released, account_id=account.pk, position_id=position.pk)]
    insurance_paid = ZERO
    if pnl >= 0:
        fee = min(fee, released + pnl)
        to_trader = released + pnl - fee
        legs.append(Leg(Pocket.HOUSE, -pnl))
        applied_pnl = pnl
    else:
        # Isolation: the trader never loses more than the collateral released here.
        covered = min(-pnl, released)
        shortfall = -pnl - covered
        fee = min(fee, released - covered)
        to_trader = released - covered - fee
        if shortfall:
            fund = lock_classroom_pockets(
                classroom_id=account.classroom_id, kinds=[Pocket.INSURANCE, Pocket.HOUSE]
            )[Pocket.INSURANCE]
            insurance_paid = min(shortfall, fund.balance)
        legs += [
            Leg(Pocket.HOUSE, covered + insurance_paid),
            Leg(Pocket.INSURANCE, -insurance_paid),
        ]
        applied_pnl = -covered
    legs += [Leg(Pocket.ACCOUNT, to_trader, account_id=account.pk), Leg(Pocket.FEES, fee)]
    _refuse_unsettleable(
        account=account, position=position, quantity=qty, pnl=applied_pnl, to_trader=to_trader
    )

    now = timezone.now()
    if order is None:
        # The engine's close at the take-profit or stop-loss keeps the level it was at as
        # the order's stop price (the position forgets its levels once it is closed).
        level = None
        if trigger == Order.Trigger.TAKE_PROFIT:
            level = position.take_profit
        elif trigger == Order.Trigger.STOP_LOSS:
            level = position.stop_loss
        order = Order(
            account=account,
            instrument=instrument,
            position=position,
            side=Side.SHORT if s > 0 else Side.LONG,
            type=Order.Type.MARKET,
            quantity=qty,
            leverage=position.leverage,
            reduce_only=True,
            trigger=trigger,
            stop_price=level,
            client_order_id=client_order_id,
            created_at=now,
        )
    order.status = Order.Status.FILLED
    order.filled_at = order.updated_at = now
    order.save()
    reached = (
        f" ({order.get_trigger_display().lower()} {plain(order.stop_price)} reached)"
        if order.trigger and order.stop_price is not None
        else ""
    )
    Fill.objects.create(
        order=order,
        position=position,
        kind=kind,
        quantity=qty,
        price=exit_price,
        fee=fee,
        realized_pnl=applied_pnl,
        created_at=now,
    )
    position_ledger_post(
        classroom_id=account.classroom_id,
        kind=LedgerTransaction.Kind.CLOSE,
        position_id=position.pk,
        memo=f"Close {plain(qty)} of position #{position.pk} at {plain(exit_price)}{reached}: "
        f"realised PnL {memo_money(applied_pnl, account.classroom.currency)}, "
        f"fee {memo_money(fee, account.classroom.currency)}",
        legs=legs,
    )
    position.quantity -= qty
    position.realized_pnl += applied_pnl
    position.fees_paid += fee
    if full:
        position.status = Position.Status.CLOSED
        position.closed_at = now
        position.exit_price = exit_price
        position.take_profit = position.stop_loss = None
        Order.objects.filter(position=position, status=Order.Status.RESTING).update(
            status=Order.Status.CANCELLED, reject_reason="Position closed", updated_at=now
        )
    else:
        remaining_im = money(
            collateral.initial_margin * position.quantity / (position.quantity + qty)
        )
        Collateral.objects.filter(pk=position.pk).update(initial_margin=remaining_im)
        _restore_prices(position, collateral.amount - released)
    position.save()
    return order, CloseSettlement(released, applied_pnl, fee, to_trader, insurance_paid)


def _closed_the_rest(order: Order) -> bool:
    """Whether ``order`` closed all that was left of its position: its fill is the
    position's last one, and the position is no longer open."""
    assert order.position_id is not None  # a reduce-only order names its position
    fills = Fill.objects.filter(position_id=order.position_id)
    last = fills.order_by("-pk").values_list("order_id", flat=True).first()
    return last == order.pk and not Position.objects.get(pk=order.position_id).is_open


def same_decimal(sent: object, stored: Decimal | None) -> bool:
    """Whether a number a client sent again is the one stored (None only matches None);
    anything that is not a number is not the same."""
    if sent is None or stored is None:
        return sent is None and stored is None
    try:
        return bool(parse_decimal(sent) == stored)
    except (ArithmeticError, ValueError):  # not a number (sNaN raises even on ==)
        return False


def _check_same_close(order: Order, *, position: Position, quantity: object) -> None:
    """Refuse a client_order_id that names another order than this close of ``position``.

    A close is a reduce-only market order of the position, so a bot's retry of either form
    (``POST /positions/{id}/close`` or ``POST /orders/`` with ``reduce_only``) finds it.
    """
    if (
        order.position_id != position.pk
        or not order.reduce_only
        or order.type != Order.Type.MARKET
        or order.trigger
    ):
        differ = f"is not a market close of position #{position.pk}"
    elif quantity in (None, ""):
        differ = "" if _closed_the_rest(order) else f"closed {plain(order.quantity)}, not all"
    else:
        same = same_decimal(quantity, order.quantity)
        differ = "" if same else f"closed another quantity, {plain(order.quantity)}"
    if differ:
        raise errors.ClientOrderIdReused(
            f"client_order_id {order.client_order_id!r} was used for order {order.pk}, which "
            f"{differ}; send a new client_order_id for a new close.",
            field="client_order_id",
        )


@transaction.atomic
def position_close(
    *,
    position_id: int,
    quantity: object = None,
    trigger: str = "",
    client_order_id: str = "",
    past_liquidation_ok: bool = False,
) -> Position:
    """Close all of a position, or part of it (releasing its collateral pro rata), at market.
    ``trigger`` names the take-profit or stop-loss that closes it, for the engine; only an
    instructor's reset closes a position the mark has put past its liquidation point
    (``past_liquidation_ok``).

    The position comes back with the close's order as ``close_order``. A ``client_order_id``
    already used on the account returns the first close's order instead, with ``repeated``
    set, and closes nothing (decided under the account's lock, so concurrent retries agree);
    one used for another order or another quantity is ClientOrderIdReused.
    """
    client_order_id = clean_client_order_id(client_order_id)
    account, position, collateral = lock_position(position_id)
    # Under the account's lock, a statement of its own: it sees every order committed
    # before the lock was granted, so of racing retries only the first one closes.
    first = (
        Order.objects.filter(account_id=account.pk, client_order_id=client_order_id).first()
        if client_order_id
        else None
    )
    if first is not None:
        _check_same_close(first, position=position, quantity=quantity)
        order = first
    else:
        order, _ = _close(
            account=account,
            position=position,
            collateral=collateral,
            quantity=quantity,
            order=None,
            trigger=trigger,
            client_order_id=client_order_id,
            past_liquidation_ok=past_liquidation_ok,
        )
    closed = _fresh(position.pk)
    closed.close_order = order  # type: ignore[attr-defined]
    closed.repeated = first is not None  # type: ignore[attr-defined]
    return closed


# --- margin and TP/SL -----------------------------------------------------------------


MARGIN_CHANGE_KINDS = (LedgerTransaction.Kind.ADD_MARGIN, LedgerTransaction.Kind.REMOVE_MARGIN)


def _margin_change_done(
    *, account: TradingAccount, position: Position, collateral_change: Decimal, request_id: str
) -> bool:
    """Whether the account made this margin change before under ``request_id``: the same
    position, the same signed change of its collateral. An id used for anything else is
    ClientRequestIdReused, whose message names what it was first used for.

    Run it under the account's lock: it is a statement of its own, so it sees every margin
    change committed before the lock was granted, and of racing retries only the first posts.
    """
    if not request_id:
        return False
    first = (
        LedgerTransaction.objects.filter(
            client_request_id=request_id,
            kind__in=MARGIN_CHANGE_KINDS,
            position_id__in=Position.objects.filter(account_id=account.pk).values("pk"),
        )
        .order_by("pk")
        .first()
    )
    if first is None:
        return False
    moved = (
        LedgerEntry.objects.filter(
            transaction_id=first.pk, pocket=Pocket.COLLATERAL, position_id=first.position_id
        ).aggregate(total=Sum("amount"))["total"]
        or ZERO
    )
    if first.position_id == position.pk and moved == collateral_change:
        return True
    # The amount as it moved, every place of it, as the memo of that change says.
    done = f"add {plain(moved)} margin to" if moved > 0 else f"remove {plain(-moved)} margin from"
    raise errors.ClientRequestIdReused(
        f"client_request_id {request_id!r} was first used to {done} position "
        f"#{first.position_id}; send a new client_request_id for another margin change.",
        field="client_request_id",
    )


def _margin_changed(position_id: int, *, repeated: bool) -> Position:
    changed = _fresh(position_id)
    changed.repeated = repeated  # type: ignore[attr-defined]
    return changed


@transaction.atomic
def position_add_margin(
    *, position_id: int, amount: object, client_request_id: str = ""
) -> Position:
    """Move free balance into a position's collateral: its liquidation price moves away.

    The position comes back with ``repeated`` set when ``client_request_id`` names this same
    change made before: nothing moves again, even if the position has closed since. One used
    for another change is ClientRequestIdReused.
    """
    value = clean_amount(amount)
    request_id = clean_client_request_id(client_request_id)
    account, position, collateral = lock_position(position_id)
    if _margin_change_done(
        account=account, position=position, collateral_change=value, request_id=request_id
    ):
        return _margin_changed(position.pk, repeated=True)
    if not position.is_open:
        raise errors.PositionNotOpen("This position is no longer open.")
    refuse_if_liquidating(position, collateral.amount, current_mark(position.instrument))
    if value > account.balance:
        raise errors.InsufficientBalance(
            f"Your free balance is {money_text(account.balance, account.classroom.currency)}.",
            field="amount",
        )
    position_ledger_post(
        classroom_id=account.classroom_id,
        kind=LedgerTransaction.Kind.ADD_MARGIN,
        position_id=position.pk,
        # Every place of the amount moved (0.001 is not "0"): the student chose it to the last.
        memo=f"Add {plain(value)} margin to position #{position.pk}",
        legs=[
            Leg(Pocket.ACCOUNT, -value, account_id=account.pk),
            Leg(Pocket.COLLATERAL, value, account_id=account.pk, position_id=position.pk),
        ],
        client_request_id=request_id,
    )
    _restore_prices(position, Collateral.objects.get(pk=position.pk).amount)
    position.save(update_fields=["liquidation_price", "bankruptcy_price"])
    return _margin_changed(position.pk, repeated=False)


def _removable_above_maintenance(
    *, position: Position, collateral: Decimal, price: Decimal, tiers: list[margin.Tier]
) -> Decimal:
    """The most that can leave the collateral with MB still strictly above MM at ``price``."""
    balance = margin.margin_balance(
        side=position.side,
        entry_price=position.entry_price,
        quantity=position.quantity,
        collateral=collateral,
        mark_price=price,
    )
    mm = margin.maintenance_margin(notional=position.quantity * price, tiers=tiers)
    return money_pnl(balance - mm) - MONEY_STEP


@dataclass(frozen=True)
class ProtectiveStop:
    """The stop that would close a position furthest from the mark: its stop-loss or a
    resting reduce-only stop order (``what`` names it in messages)."""

    price: Decimal
    what: str


def protective_stop(position: Position) -> ProtectiveStop | None:
    """The furthest of the position's stop-loss and its resting reduce-only stop orders:
    the liquidation price must stay behind it, or it could never trigger."""
    stops: list[ProtectiveStop] = []
    if position.stop_loss is not None:
        stops.append(ProtectiveStop(position.stop_loss, "stop-loss"))
    orders = Order.objects.filter(
        position_id=position.pk,
        status=Order.Status.RESTING,
        reduce_only=True,
        type=Order.Type.STOP,
    ).values_list("stop_price", flat=True)
    stops += [ProtectiveStop(price, "stop order") for price in orders if price is not None]
    s = margin.side_sign(position.side)
    return min(stops, key=lambda stop: s * stop.price, default=None)


def removable_margin(
    *, position: Position, collateral: Decimal, keep_stop_loss: bool = True
) -> Decimal:
    """The most that can leave the collateral: never below IM at the mark, never to
    maintenance, and (with ``keep_stop_loss``) never so much that the liquidation price
    reaches the stop-loss or a resting reduce-only stop order, which would then never
    trigger."""
    mark = current_mark(position.instrument)
    tiers = position.instrument.margin_tiers()
    im_at_mark = money_charged(
        margin.initial_margin(
            entry_price=mark, quantity=position.quantity, leverage=position.leverage
        )
    )
    limits = [
        collateral,
        collateral - im_at_mark,
        _removable_above_maintenance(
            position=position, collateral=collateral, price=mark, tiers=tiers
        ),
    ]
    stop = protective_stop(position) if keep_stop_loss else None
    if stop is not None:
        # Solvent one price step past the stop: the exact LP lies beyond that step, so the
        # stored one (rounded towards the mark by less than a step) stays behind the stop,
        # as position_set_tpsl and order_place require of a new one.
        beyond = stop.price - margin.side_sign(position.side) * PRICE_STEP
        limits.append(
            _removable_above_maintenance(
                position=position, collateral=collateral, price=beyond, tiers=tiers
            )
        )
    return max(ZERO, min(limits))


@transaction.atomic
def position_remove_margin(
    *, position_id: int, amount: object, client_request_id: str = ""
) -> Position:
    """Move collateral back to the free balance, within what keeps the position safe.
    A ``client_request_id`` makes a retry safe, as for position_add_margin."""
    value = clean_amount(amount)
    request_id = clean_client_request_id(client_request_id)
    account, position, collateral = lock_position(position_id)
    if _margin_change_done(
        account=account, position=position, collateral_change=-value, request_id=request_id
    ):
        return _margin_changed(position.pk, repeated=True)
    if not position.is_open:
        raise errors.PositionNotOpen("This position is no longer open.")
    refuse_if_liquidating(position, collateral.amount, current_mark(position.instrument))
    limit = removable_margin(position=position, collateral=collateral.amount)
    if value > limit:
        most = money_text(limit, account.classroom.currency, down=True)
        stop = protective_stop(position)
        if stop is not None and value <= removable_margin(
            position=position, collateral=collateral.amount, keep_stop_loss=False
        ):
            at = price_text(stop.price, position.instrument.tick_size)
            raise errors.MarginRemovalTooLarge(
                f"At most {most} can be removed while the {stop.what} at {at} stays ahead of "
                f"the liquidation price; move or remove the {stop.what} to remove more.",
                field="amount",
            )
        raise errors.MarginRemovalTooLarge(
            f"At most {most} can be removed: "
            "the collateral may not fall below the initial "
            "margin at the mark, nor the margin balance to maintenance.",
            field="amount",
        )
    position_ledger_post(
        classroom_id=account.classroom_id,
        kind=LedgerTransaction.Kind.REMOVE_MARGIN,
        position_id=position.pk,
        memo=f"Remove {plain(value)} margin from position #{position.pk}",
        legs=[
            Leg(Pocket.COLLATERAL, -value, account_id=account.pk, position_id=position.pk),
            Leg(Pocket.ACCOUNT, value, account_id=account.pk),
        ],
        client_request_id=request_id,
    )
    _restore_prices(position, collateral.amount - value)
    position.save(update_fields=["liquidation_price", "bankruptcy_price"])
    return _margin_changed(position.pk, repeated=False)


# For position_set_tpsl: leave this price as it is (None clears it).
UNCHANGED = object()


@transaction.atomic
def position_set_tpsl(
    *, position_id: int, take_profit: object = None, stop_loss: object = None
) -> Position:
    """Attach (or clear, with None) a take-profit and a stop-loss to a position; a price
    passed as UNCHANGED keeps its current value. A change is recorded as a ``TpSlChange``;
    a call that changes nothing writes nothing."""
    _, position, _ = lock_position(position_id)
    if not position.is_open:
        raise errors.PositionNotOpen("This position is no longer open.")
    instrument = position.instrument
    keep_tp, keep_sl = take_profit is UNCHANGED, stop_loss is UNCHANGED
    tp = None if keep_tp else clean_price(take_profit, instrument=instrument, field="take_profit")
    sl = None if keep_sl else clean_price(stop_loss, instrument=instrument, field="stop_loss")
    _validate_tpsl(
        side=position.side,
        reference=current_mark(instrument),
        liquidation_price=position.liquidation_price,
        take_profit=tp,
        stop_loss=sl,
        tick=instrument.tick_size,
    )
    before = (position.take_profit, position.stop_loss)
    after = (before[0] if keep_tp else tp, before[1] if keep_sl else sl)
    if after == before:
        return _fresh(position.pk)  # nothing moved: nothing to write or to tell
    _move_levels(position, after)
    return _fresh(position.pk)


def _move_levels(
    position: Position, after: tuple[Decimal | None, Decimal | None], reason: str = ""
) -> None:
    """Set the position's (take-profit, stop-loss) and record the change as a ``TpSlChange``,
    kept with the change itself, so the timeline shows every level that moved (a stop-loss
    moved away before a liquidation is part of the lesson); ``reason`` when Ringfence moved
    them, not the student."""
    before = (position.take_profit, position.stop_loss)
    position.take_profit, position.stop_loss = after
    position.save(update_fields=["take_profit", "stop_loss"])
    TpSlChange.objects.create(
        position=position,
        take_profit_before=before[0],
        take_profit_after=after[0],
        stop_loss_before=before[1],
        stop_loss_after=after[1],
        reason=reason[:255],
    )


# --- orders ---------------------------------------------------------------------------


@transaction.atomic
def order_place(
    *,
    account_id: int,
    instrument_id: int | None = None,
    symbol: str = "",
    owner_id: int | None = None,
    side: str,
    type: str = Order.Type.MARKET,
    quantity: object,
    leverage: object = 1,
    price: object = None,
    stop_price: object = None,
    extra_collateral: object = ZERO,
    take_profit: object = None,
    stop_loss: object = None,
    reduce_only: bool = False,
    position_id: int | None = None,
    client_order_id: str = "",
) -> Order:
    """Place an order: a market order fills now, a limit or stop order rests until triggered.

    A repeated ``client_order_id`` on the same account returns the first order unchanged,
    with ``repeated`` set on it (decided under the account's lock, so concurrent retries agree).
    A reduce-only order names the position it reduces and takes the opposite side.
    The instrument is named by ``instrument_id``, or by ``symbol`` in the account's
    classroom; with ``owner_id`` the account must be that user's (else NotFound).
    """
    if instrument_id is None and not symbol.strip():
        raise errors.NotFound("No such instrument.", field="instrument")
    symbol = symbol.strip()
    account = lock_account(
        account_id,
        owner_id=owner_id,
        opening=None if reduce_only else _named_instrument(instrument_id, symbol),
    )
    client_order_id = clean_client_order_id(client_order_id)
    instrument, repeated, deactivated = _order_instrument(
        account, instrument_id=instrument_id, symbol=symbol, client_order_id=client_order_id
    )
    if repeated is not None:
        first = fresh_order(repeated)
        first.repeated = True  # type: ignore[attr-defined]
        return first
    if deactivated and not reduce_only:
        raise errors.AccountFrozen(DEACTIVATED_REFUSAL)
    assert instrument is not None  # found, or NotFound was raised
    side = clean_side(side)
    prices = clean_order_prices(
        instrument=instrument, side=side, type=type, price=price, stop_price=stop_price
    )
    limit_price, trigger = prices.limit, prices.trigger

    target: Position | None = None
    if reduce_only:
        if position_id is None:
            raise errors.InvalidOrder(
                "A reduce-only order names the position it reduces.", field="position"
            )
        target = (
            Position.objects.select_for_update(of=("self",), no_key=True)
            .filter(pk=position_id, account=account)
            .first()
        )
        if target is None:
            raise errors.NotFound("No such position.", field="position")
        if not target.is_open:
            raise errors.PositionNotOpen("This position is no longer open.")
        if side == target.side:
            raise errors.InvalidOrder(
                "A reduce-only order takes the side opposite to its position.", field="side"
            )
        if instrument.pk != target.instrument_id:
            raise errors.InvalidOrder(
                "A reduce-only order trades its position's instrument.", field="instrument"
            )
        target.instrument = instrument
        refuse_if_liquidating(
            target, Collateral.objects.get(pk=target.pk).amount, current_mark(instrument)
        )
        qty = clean_reduce_quantity(quantity, position=target, instrument=instrument)
        if qty > target.quantity:
            raise errors.InvalidQuantity(
                f"Only {plain(target.quantity)} is open.", field="quantity"
            )
        lp = target.liquidation_price
        if (
            trigger is not None
            and lp is not None
            and margin.side_sign(target.side) * (trigger - lp) <= 0
        ):
            # The engine liquidates before it triggers stops: this one could never fire.
            shown = _shown_risk_price(lp, target.side, instrument.tick_size)
            raise errors.InvalidPrice(
                f"This stop lies beyond the liquidation price "
                f"{price_text(shown, instrument.tick_size)} and would never trigger.",
                field="stop_price",
            )
    elif type == Order.Type.MARKET:
        order, _ = _open(
            account=account,
            instrument=instrument,
            side=side,
            quantity=quantity,
            leverage=leverage,
            extra_collateral=extra_collateral,
            take_profit=take_profit,
            stop_loss=stop_loss,
            order=None,
            client_order_id=client_order_id,
        )
        return order  # as stored: _open keeps the objects it wrote up to date
    else:
        quote = quote_open(
            account=account,
            instrument=instrument,
            side=side,
            quantity=quantity,
            leverage=leverage,
            extra_collateral=extra_collateral,
            entry_price=prices.entry_price,
            take_profit=take_profit,
            stop_loss=stop_loss,
        )
        qty = quote.quantity

    now = timezone.now()
    order = Order(
        account=account,
        instrument=instrument,
        position=target,
        side=side,
        type=type,
        quantity=qty,
        leverage=target.leverage if target else clean_leverage(leverage),
        price=limit_price,
        stop_price=trigger,
        extra_collateral=ZERO
        if target
        else clean_amount(extra_collateral or ZERO, field="extra_collateral", allow_zero=True),
        take_profit=None
        if target
        else clean_price(take_profit, instrument=instrument, field="take_profit"),
        stop_loss=None
        if target
        else clean_price(stop_loss, instrument=instrument, field="stop_loss"),
        reduce_only=reduce_only,
        client_order_id=client_order_id,
        created_at=now,
        updated_at=now,
    )
    if target is not None and prices.fills_now:
        collateral = Collateral.objects.select_for_update(no_key=True).get(pk=target.pk)
        target.account = account
        # The instrument as read when the limit was checked: closing at a mark read again
        # later (the engine may have moved it since) could fill beyond the limit.
        target.instrument = instrument
        order, _ = _close(
            account=account, position=target, collateral=collateral, quantity=qty, order=order
        )
        return fresh_order(order.pk)
    if prices.fills_now:  # a limit order the market has reached: it fills as it is placed
        order, _ = _open(
            account=account,
            instrument=instrument,
            side=side,
            quantity=qty,
            leverage=order.leverage,
            extra_collateral=order.extra_collateral,
            take_profit=take_profit,
            stop_loss=stop_loss,
            order=order,
        )
        return order
    order.status = Order.Status.RESTING
    order.save()
    if target is None:
        # An order that would open a position reserves what opening it costs at its price, as
        # an exchange's order margin: the free balance shows what is really left to trade.
        _hold_order_margin(account=account, order=order, amount=quote.total_cost)
    return order  # every field was set above, the hold as the ledger stored it


def _hold_order_margin(*, account: TradingAccount, order: Order, amount: Decimal) -> None:
    """Move a resting order's hold from the free balance into its order margin."""
    currency = account.classroom.currency
    at = order.price if order.price is not None else order.stop_price
    assert at is not None  # a resting order rests at its limit or its stop price
    position_ledger_post(
        classroom_id=account.classroom_id,
        kind=LedgerTransaction.Kind.ORDER_HOLD,
        memo=f"Hold {memo_money(amount, currency)} for {order.get_type_display().lower()} order "
        f"#{order.pk}: {order.side} {plain(order.quantity)} {order.instrument.symbol} "
        f"at {plain(at)}, {order.leverage}x",
        legs=[
            Leg(Pocket.ACCOUNT, -amount, account_id=account.pk),
            Leg(Pocket.ORDER, amount, account_id=account.pk, order_id=order.pk),
        ],
    )
    account.balance -= amount
    order.held_margin = amount


def _release_order_margin(*, account: TradingAccount, order: Order, why: str) -> None:
    """Give a resting order's hold back to the free balance (the account and the order
    locked, the order read under its lock); an order that holds nothing posts nothing."""
    held = order.held_margin
    if not held:
        return
    position_ledger_post(
        classroom_id=account.classroom_id,
        kind=LedgerTransaction.Kind.ORDER_RELEASE,
        memo=f"Release {memo_money(held, account.classroom.currency)} held by order "
        f"#{order.pk} ({why})",
        legs=[
            Leg(Pocket.ORDER, -held, account_id=account.pk, order_id=order.pk),
            Leg(Pocket.ACCOUNT, held, account_id=account.pk),
        ],
    )
    account.balance += held
    order.held_margin = ZERO


@transaction.atomic
def order_cancel(*, order_id: int, why: str = "") -> Order:
    """Cancel a resting order, its hold back in the free balance; ``why``, when Ringfence
    rather than the student cancels it, is kept as its reason ("Cancelled: <why>")."""
    account_id = Order.objects.filter(pk=order_id).values_list("account_id", flat=True).first()
    if account_id is None:
        raise errors.NotFound("No such order.")
    account = lock_account(account_id)
    order = Order.objects.select_for_update(of=("self",), no_key=True).get(pk=order_id)
    if order.status != Order.Status.RESTING:
        raise errors.OrderNotCancellable(
            f"The order {order_state(order)}; only resting orders can be cancelled."
        )
    _cancel_resting(account=account, order=order, why=why)
    return order


def _cancel_resting(*, account: TradingAccount, order: Order, why: str = "") -> None:
    """Cancel a resting order read under its account's and its own lock."""
    _release_order_margin(
        account=account, order=order, why=f"cancelled: {why}" if why else "cancelled"
    )
    order.status = Order.Status.CANCELLED
    order.updated_at = timezone.now()
    fields = ["status", "updated_at"]
    if why:
        order.reject_reason = f"Cancelled: {why}"[:255]
        fields.append("reject_reason")
    order.save(update_fields=fields)


# Why the resting orders of a deactivated student are cancelled (``user_set_active``), and
# why the engine cancels one that was placed as the deactivation committed.
OWNER_DEACTIVATED = "the student's account was deactivated"


DEACTIVATED_REFUSAL = "This account is deactivated: it opens no new positions."


def _refuse_if_deactivated(account: TradingAccount) -> None:
    """Refuse an opening for a student deactivated since their request was let in."""
    if owner_deactivated(account):
        raise errors.AccountFrozen(DEACTIVATED_REFUSAL)


def owner_deactivated(account: TradingAccount) -> bool:
    """Whether the account's user has been deactivated, read in a statement of its own.

    Run it under the account's lock. A deactivation locks the user's trading accounts before
    it writes the user, so either it committed before the lock was granted, and this
    statement sees it, or it waits for this transaction. (A column read with the lock would
    not do: a statement that waited for a row lock returns the other rows as they were when
    it started.)
    """
    return User.objects.filter(pk=account.user_id, is_active=False).exists()


@transaction.atomic
def order_replace(
    *,
    order_id: int,
    quantity: object = None,
    price: object = None,
    stop_price: object = None,
    client_order_id: str = "",
) -> Order:
    """Replace a resting order with one of a new quantity, limit price or stop price (None
    keeps the old one's), as an exchange amends an order: in one transaction the old order is
    cancelled, its hold coming back, and the new one is placed by ``order_place`` on the
    old one's other terms, so it rests (holding what it costs at its new price) or fills at
    once if the market has reached its new price. When the rules refuse the new order,
    nothing changes: the old one keeps resting with its hold.

    A repeated ``client_order_id`` returns the replacement it already made, with
    ``repeated`` set on it; one used for another order is refused.
    """
    account_id = Order.objects.filter(pk=order_id).values_list("account_id", flat=True).first()
    if account_id is None:
        raise errors.NotFound("No such order.")
    account = lock_account(account_id)
    order = Order.objects.select_for_update(of=("self",), no_key=True).get(pk=order_id)
    client_order_id = clean_client_order_id(client_order_id)
    if client_order_id:
        earlier = Order.objects.filter(
            account_id=account.pk, client_order_id=client_order_id
        ).first()
        if earlier is not None:
            _check_same_replacement(
                earlier, order, quantity=quantity, price=price, stop_price=stop_price
            )
            again = fresh_order(earlier.pk)
            again.repeated = True  # type: ignore[attr-defined]
            return again
    if order.status != Order.Status.RESTING:
        raise errors.OrderNotCancellable(
            f"The order {order_state(order)}; only resting orders can be replaced."
        )
    if quantity is None and price is None and stop_price is None:
        raise errors.InvalidOrder("Give a new quantity, price or stop_price.")
    # A field the order would not use is malformed input, as when the order is placed.
    if price is not None and order.type != Order.Type.LIMIT:
        raise errors.DomainError("Only a limit order has a price.", field="price")
    if stop_price is not None and order.type != Order.Type.STOP:
        raise errors.DomainError("Only a stop order has a stop price.", field="stop_price")
    _release_order_margin(account=account, order=order, why="replaced")
    order.status = Order.Status.CANCELLED
    order.updated_at = timezone.now()
    order.save(update_fields=["status", "updated_at"])
    replacement = order_place(
        account_id=account.pk,
        instrument_id=order.instrument_id,
        side=order.side,
        type=order.type,
        quantity=order.quantity if quantity is None else quantity,
        leverage=order.leverage,
        price=order.price if price is None else price,
        stop_price=order.stop_price if stop_price is None else stop_price,
        extra_collateral=order.extra_collateral,
        take_profit=order.take_profit,
        stop_loss=order.stop_loss,
        reduce_only=order.reduce_only,
        position_id=order.position_id,
        client_order_id=client_order_id,
    )
    Order.objects.filter(pk=replacement.pk).update(replaces=order)
    order.reject_reason = f"Replaced by order #{replacement.pk}"
    order.save(update_fields=["reject_reason"])
    return fresh_order(replacement.pk)


def order_state(order: Order) -> str:
    """What became of an order, in words: "was replaced by order #N", "is filled", ..."""
    successor = Order.objects.filter(replaces_id=order.pk).values_list("pk", flat=True).first()
    if successor is not None:
        return f"was replaced by order #{successor}"
    return f"is {order.get_status_display().lower()}"


def _check_same_replacement(
    earlier: Order, order: Order, *, quantity: object, price: object, stop_price: object
) -> None:
    """Refuse a client_order_id that names something else than this replacement of ``order``
    with these terms (a retry must ask for the same thing)."""
    differ = []
    if earlier.pk == order.pk:
        differ.append("is the order being replaced: its replacement needs an id of its own")
    elif earlier.replaces_id != order.pk:
        differ.append(f"is not a replacement of order #{order.pk}")
    else:
        for name, asked, got in (
            ("quantity", quantity, earlier.quantity),
            ("price", price, earlier.price),
            ("stop_price", stop_price, earlier.stop_price),
        ):
            if asked is not None and not same_decimal(asked, got):
                differ.append(f"has another {name}, {plain(got) if got is not None else 'none'}")
    if differ:
        raise errors.ClientOrderIdReused(
            f"client_order_id {earlier.client_order_id!r} was used for order {earlier.pk}, which "
            f"{' and '.join(differ)}; send a new client_order_id for a new replacement.",
            field="client_order_id",
        )


def order_execute(*, order_id: int) -> Order:
    """Fill a triggered resting order at market; a rule that now refuses it rejects the order.
    A reduce-only order of a position past its liquidation price keeps resting. A sell limit
    whose better price at market the free balance cannot pay opens at its limit instead."""
    row = (
        Order.objects.filter(pk=order_id)
        .values_list("account_id", "instrument_id", "reduce_only")
        .first()
    )
    if row is None:
        raise errors.NotFound("No such order.")
    account_id, instrument_id, reduce_only = row  # what an order never changes
    try:
        with transaction.atomic():
            account = lock_account(
                account_id,
                opening=None if reduce_only else Instrument.objects.filter(pk=instrument_id),
            )
            order = Order.objects.select_for_update(of=("self",), no_key=True).get(pk=order_id)
            if order.status != Order.Status.RESTING:
                return fresh_order(order.pk)
            if not order.reduce_only and owner_deactivated(account):
                # Placed as its student was deactivated (or deactivated some other way than
                # ``user_set_active``): nobody opens a position for a student who cannot
                # sign in. A reduce-only order still fills: it only shrinks a position.
                _cancel_resting(account=account, order=order, why=OWNER_DEACTIVATED)
                return fresh_order(order.pk)
            if order.reduce_only:
                assert order.position_id is not None
                position = (
                    Position.objects.select_for_update(of=("self",), no_key=True)
                    .select_related("instrument")
                    .get(pk=order.position_id)
                )
                position.account = account
                collateral = Collateral.objects.select_for_update(no_key=True).get(pk=position.pk)
                qty = min(order.quantity, position.quantity) if position.is_open else order.quantity
                _close(
                    account=account,
                    position=position,
                    collateral=collateral,
                    quantity=qty,
                    order=order,
                )
            else:
                # The hold goes back first: opening now costs what the market asks (a sell
                # limit: at most what it held), checked against the whole free balance, in
                # the same transaction.
                _release_order_margin(account=account, order=order, why="triggered")
                _open_triggered(account=account, order=order)
    except errors.PositionLiquidating:
        # Not a rule refusing the order but the engine's turn: its liquidation cancels the
        # order, and should it not come (the mark turned back), the order still protects.
        pass
    except errors.DomainError as exc:
        # A hold that cannot come back into a free balance this close to the limit, neither
        # to open nor to be rejected: the order keeps resting with it (the rejection wrote
        # nothing), as a take-profit the engine cannot settle stays open.
        with contextlib.suppress(errors.AmountTooLarge):
            _order_reject(order_id=order_id, account_id=account_id, reason=exc.message)
    return fresh_order(order_id)


def _open_triggered(*, account: TradingAccount, order: Order) -> None:
    """Open the position of a triggered order, its hold already back in the free balance.

    It opens at market. A sell limit fills at its limit or better, and better (higher) costs
    more margin and fee than it held at its limit: when the free balance cannot pay that, it
    opens at its limit, which the hold pays, rather than being rejected though the market
    went through its price. The attempt at market is a savepoint, so its refusal leaves
    nothing behind; opening at the limit is still refused by every other rule, and when the
    position would already be liquidatable at the mark.
    """
    instrument = _instrument(order.instrument_id)

    def open_at(entry_price: Decimal | None) -> None:
        _open(
            account=account,
            instrument=instrument,
            side=order.side,
            quantity=order.quantity,
            leverage=order.leverage,
            extra_collateral=order.extra_collateral,
            take_profit=order.take_profit,
            stop_loss=order.stop_loss,
            order=order,
            entry_price=entry_price,
        )

    if order.type != Order.Type.LIMIT or order.side != Side.SHORT:
        open_at(None)
        return
    try:
        with transaction.atomic():
            open_at(None)
    except errors.InsufficientBalance:
        open_at(order.price)


@transaction.atomic
def _order_reject(*, order_id: int, account_id: int, reason: str) -> None:
    """Reject a triggered order the rules refused: its hold goes back to the free balance."""
    account = lock_account(account_id)
    order = Order.objects.select_for_update(of=("self",), no_key=True).get(pk=order_id)
    if order.status != Order.Status.RESTING:
        return
    _release_order_margin(account=account, order=order, why="rejected")
    order.status = Order.Status.REJECTED
    order.reject_reason = reason[:255]
    order.updated_at = timezone.now()
    order.save(update_fields=["status", "reject_reason", "updated_at"])


# --- tick-size, lot-size and minimum-notional changes ---------------------------------
#
# After an instructor changes an instrument's tick size, every resting order's price and
# every TP/SL level moves onto the new grid, in the same transaction as the change. The rule
# is one for all levels: a level moves to the first tick of the new grid at or beyond it,
# seen from the market. A buy limit rounds down and a sell limit up, so neither ever fills at
# a worse price than asked; a trigger (a stop price, a take-profit, a stop-loss) rounds the
# way the mark travels to reach it (a long's take-profit up, its stop-loss down), so on the
# new grid it fires on exactly the marks that reached it before, never sooner. A stop-loss
# (or a reduce-only stop) that this puts at or beyond the liquidation price, where it would
# never fire, takes the tick on the mark's side instead and fires a little sooner; when no
# tick is left between the liquidation price and the mark, the level is removed (a position's
# TP/SL) or the order cancelled, and the student is told why.
#
# A new lot size or minimum notional is handled in the same pass, so that no resting order is
# left for the engine to refuse when its price comes. A quantity off the new lot rounds down
# to whole lots: never more exposure than the student asked for, and for a reduce-only order
# never more closed (one for all that is open stays, as a close of all of it is always
# valid). An order left with less than a lot, or (opening) worth less than the minimum
# notional at its price, is cancelled and the student told why. Open positions keep their
# quantity: they close whole lots at a time, or all at once.


@dataclass(frozen=True)
class GridMoves:
    """What a tick-size, lot-size or minimum-notional change did to the instrument's resting
    orders and TP/SL levels."""

    orders_replaced: int = 0
    orders_cancelled: int = 0
    positions_changed: int = 0


def _onto_grid(
    value: Decimal | None, tick: Decimal, *, up: bool, valid: Callable[[Decimal], bool]
) -> tuple[bool, Decimal | None]:
    """(whether ``value`` has a place on the grid, that place): ``value`` itself when it is on
    the grid already, else the tick on the ``up`` side of it, else (when ``valid`` refuses
    that one) the tick on the other side; (False, None) when ``valid`` refuses both."""
    if value is None or is_multiple(value, tick):
        return True, value
    for candidate in (to_tick(value, tick, up=up), to_tick(value, tick, up=not up)):
        if candidate > 0 and valid(candidate):
            return True, candidate
    return False, None


def _tpsl_valid(
    *,
    side: str,
    reference: Decimal,
    liquidation_price: Decimal | None,
    take_profit: Decimal | None = None,
    stop_loss: Decimal | None = None,
) -> bool:
    try:
        _validate_tpsl(
            side=side,
            reference=reference,
            liquidation_price=liquidation_price,
            take_profit=take_profit,
            stop_loss=stop_loss,
        )
    except errors.InvalidPrice:
        return False
    return True


def _tpsl_onto_grid(
    *,
    side: str,
    reference: Decimal,
    liquidation_price: Decimal | None,
    take_profit: Decimal | None,
    stop_loss: Decimal | None,
    tick: Decimal,
) -> tuple[tuple[bool, Decimal | None], tuple[bool, Decimal | None]]:
    """A take-profit and a stop-loss on the grid, each checked as ``position_set_tpsl``
    checks it against ``reference`` (the mark, or a resting order's entry) and the LP."""
    long = side == Side.LONG
    check = partial(
        _tpsl_valid, side=side, reference=reference, liquidation_price=liquidation_price
    )
    tp = _onto_grid(take_profit, tick, up=long, valid=lambda v: check(take_profit=v))
    sl = _onto_grid(stop_loss, tick, up=not long, valid=lambda v: check(stop_loss=v))
    return tp, sl


def _level_moves(
    names_and_levels: Iterable[tuple[str, Decimal | None, Decimal | None]], tick: Decimal
) -> str:
    """The levels that moved, in words: "price 59,990.3 moved onto the new grid at 59,950,
    take-profit 61,234.5 at 61,250"."""
    moved = [
        (n, b, a) for n, b, a in names_and_levels if b is not None and a is not None and b != a
    ]
    parts = [
        f"{name} {exact_price_text(before, tick)} "
        f"{'at' if i else 'moved onto the new grid at'} {price_text(after, tick)}"
        for i, (name, before, after) in enumerate(moved)
    ]
    return ", ".join(parts)


# The instrument's fields whose change ``instrument_levels_to_grid`` follows, as the
# instructor reads them.
GRID_FIELDS = {"tick_size": "tick size", "lot_size": "lot size", "min_notional": "minimum notional"}


def lock_accounts_with_levels(instrument_id: int) -> dict[int, TradingAccount]:
    """Lock, in id order, each trading account with a resting order or an open position with
    a TP/SL on the instrument: a change of a ``GRID_FIELDS`` field takes them before the
    instrument's row, as an order locks its account before it reads the instrument it
    trades."""
    ids = set(_resting_orders(instrument_id).values_list("account_id", flat=True)) | set(
        _positions_with_levels(instrument_id).values_list("account_id", flat=True)
    )
    return lock_accounts(ids)


def _resting_orders(instrument_id: int) -> QuerySet[Order]:
    return Order.objects.filter(instrument_id=instrument_id, status=Order.Status.RESTING)


def _positions_with_levels(instrument_id: int) -> QuerySet[Position]:
    """The instrument's open positions with a take-profit or a stop-loss."""
    return Position.objects.filter(
        Q(take_profit__isnull=False) | Q(stop_loss__isnull=False),
        instrument_id=instrument_id,
        status=Position.Status.OPEN,
    )


def _grid_change(instrument: Instrument, changed: Iterable[str]) -> str:
    """The change in words: "the tick size of BTCUSDT changed to 50 and its lot size to
    0.01"."""
    named = [(label, getattr(instrument, field)) for field, label in GRID_FIELDS.items()]
    said = [
        f"its {label} to {plain(value)}"
        for (label, value), field in zip(named, GRID_FIELDS, strict=True)
        if field in changed
    ]
    assert said, "a change of a GRID_FIELDS field"
    said[0] = (
        said[0]
        .replace("its ", "the ", 1)
        .replace(" to ", f" of {instrument.symbol} changed to ", 1)
    )
    return said[0] if len(said) == 1 else f"{', '.join(said[:-1])} and {said[-1]}"


@transaction.atomic
def instrument_levels_to_grid(
    *, instrument_id: int, changed_fields: Iterable[str] = ("tick_size",)
) -> GridMoves:
    """Bring the instrument's resting orders and open positions' TP/SL levels in line with
    its tick size, lot size and minimum notional (see the rule above), after a change of the
    ``changed_fields``: an order moved or resized is replaced by one that fits, as an amend
    replaces it, its hold moving with it; a TP/SL moved is recorded as a ``TpSlChange`` with
    the reason. Run it in the transaction that makes the change, after
    ``lock_accounts_with_levels`` and the instrument's save."""
    accounts = lock_accounts_with_levels(instrument_id)
    instrument = _instrument(instrument_id)
    tick = instrument.tick_size
    why = _grid_change(instrument, set(changed_fields))
    replaced = cancelled = changed = 0
    orders = list(
        _resting_orders(instrument_id)
        .select_for_update(of=("self",), no_key=True)
        .select_related("position")
        .order_by("pk")
    )
    for order in orders:
        outcome = _order_onto_grid(
            account=accounts[order.account_id], order=order, instrument=instrument, why=why
        )
        replaced += outcome == "replaced"
        cancelled += outcome == "cancelled"
    mark = instrument.mark_price
    # Without a mark there is no TP/SL yet: every level is checked against the mark.
    positions = (
        []
        if mark is None
        else list(
            _positions_with_levels(instrument_id)
            .select_for_update(of=("self",), no_key=True)
            .order_by("pk")
        )
    )
    for position in positions:
        assert mark is not None
        (tp_kept, tp), (sl_kept, sl) = _tpsl_onto_grid(
            side=position.side,
            reference=mark,
            liquidation_price=position.liquidation_price,
            take_profit=position.take_profit,
            stop_loss=position.stop_loss,
            tick=tick,
        )
        if (tp, sl) == (position.take_profit, position.stop_loss):
            continue
        lost = [
            name for name, kept in (("take-profit", tp_kept), ("stop-loss", sl_kept)) if not kept
        ]
        reason = why
        if lost:
            reason += (
                f"; no tick of the new grid was left for the {' and '.join(lost)} between the "
                "liquidation price and the mark, so it was removed"
            )
        _move_levels(position, (tp, sl), reason)
        changed += 1
    return GridMoves(replaced, cancelled, changed)


def _order_onto_grid(
    *, account: TradingAccount, order: Order, instrument: Instrument, why: str
) -> str:
    """Replace one resting order by one on the grids ("replaced"), cancel it when one of its
    levels has no valid tick, its quantity no whole lot or its worth is below the minimum
    notional ("cancelled"), or leave it as it is ("")."""
    tick = instrument.tick_size
    quantity = _order_lots(order, instrument.lot_size)
    mark = instrument.mark_price
    buying = order.side == Side.LONG
    if order.type == Order.Type.LIMIT:
        found, price_ = _onto_grid(order.price, tick, up=not buying, valid=lambda v: True)
    else:
        # A reduce-only stop must also stay short of its position's liquidation price, which
        # the engine acts on first.
        position = order.position if order.reduce_only else None
        lp = None if position is None else position.liquidation_price
        s = 0 if position is None else margin.side_sign(position.side)

        def stop_valid(value: Decimal) -> bool:
            beyond_mark = mark is None or (value > mark if buying else value < mark)
            return beyond_mark and (lp is None or s * (value - lp) > 0)

        found, price_ = _onto_grid(order.stop_price, tick, up=buying, valid=stop_valid)
    levels = ((True, order.take_profit), (True, order.stop_loss))
    if found and price_ is not None and not order.reduce_only:
        # Its TP/SL are checked as when it was placed: against its entry and the LP there.
        im, _ = opening_charges(
            instrument=instrument,
            quantity=quantity or order.quantity,
            leverage=order.leverage,
            entry_price=price_,
        )
        entry_lp, _ = stored_prices(
            side=order.side,
            entry_price=price_,
            quantity=quantity or order.quantity,
            collateral=im + order.extra_collateral,
            tiers=instrument.margin_tiers(),
        )
        levels = _tpsl_onto_grid(
            side=order.side,
            reference=price_,
            liquidation_price=entry_lp,
            take_profit=order.take_profit,
            stop_loss=order.stop_loss,
            tick=tick,
        )
    (tp_found, tp), (sl_found, sl) = levels
    name = "price" if order.type == Order.Type.LIMIT else "stop price"
    old_price = order.price if order.type == Order.Type.LIMIT else order.stop_price
    now = timezone.now()
    refusal = ""
    if not (found and tp_found and sl_found):
        lost = [
            what
            for what, kept in ((name, found), ("take-profit", tp_found), ("stop-loss", sl_found))
            if not kept
        ]
        refusal = (
            f"no tick of the new grid was left for its {' and '.join(lost)} where it could "
            "still trigger"
        )
    elif not quantity:
        refusal = f"its quantity {plain(order.quantity)} is less than one lot"
    elif not order.reduce_only and price_ is not None:
        # As placing it checks: a close is never held to the minimum, an opening order is.
        refusal = _below_min_notional(
            instrument,
            account=account,
            quantity=quantity,
            resized=quantity != order.quantity,
            notional=quantity * price_,
        )
    if refusal:
        _release_order_margin(account=account, order=order, why="cancelled: " + why)
        order.status = Order.Status.CANCELLED
        order.reject_reason = f"Cancelled: {why}, and {refusal}"[:255]
        order.updated_at = now
        order.save(update_fields=["status", "reject_reason", "updated_at"])
        return "cancelled"
    if (price_, tp, sl, quantity) == (
        old_price,
        order.take_profit,
        order.stop_loss,
        order.quantity,
    ):
        return ""
    replacement = Order.objects.create(
        account=account,
        instrument=instrument,
        position=order.position,
        side=order.side,
        type=order.type,
        quantity=quantity,
        leverage=order.leverage,
        price=price_ if order.type == Order.Type.LIMIT else None,
        stop_price=price_ if order.type == Order.Type.STOP else None,
        extra_collateral=order.extra_collateral,
        take_profit=tp,
        stop_loss=sl,
        reduce_only=order.reduce_only,
        replaces=order,
        created_at=now,
        updated_at=now,
    )
    held = order.held_margin
    _release_order_margin(account=account, order=order, why=f"replaced by order #{replacement.pk}")
    if held:
        assert price_ is not None
        im, fee = opening_charges(
            instrument=instrument,
            quantity=quantity,
            leverage=order.leverage,
            entry_price=price_,
        )
        # What it costs at its new price and size, as an amend holds; a sell limit now a tick
        # higher costs a little more, and the hold never takes more than the free balance has.
        _hold_order_margin(
            account=account,
            order=replacement,
            amount=min(im + order.extra_collateral + fee, account.balance),
        )
    moves = _level_moves(
        (
            (name, old_price, price_),
            ("take-profit", order.take_profit, tp),
            ("stop-loss", order.stop_loss, sl),
        ),
        tick,
    )
    if quantity != order.quantity:
        resized = (
            f"quantity {plain(order.quantity)} rounded down to whole lots at {plain(quantity)}"
        )
        moves = f"{moves}, {resized}" if moves else resized.replace(" rounded", " was rounded", 1)
    order.status = Order.Status.CANCELLED
    order.reject_reason = f"Replaced by order #{replacement.pk}: {why}, so its {moves}"[:255]
    order.updated_at = now
    order.save(update_fields=["status", "reject_reason", "updated_at"])
    return "replaced"


def _order_lots(order: Order, lot: Decimal) -> Decimal:
    """The order's quantity rounded down to whole lots (zero: less than one lot). A
    reduce-only order for all its position has open keeps its quantity: a close of all of a
    position is valid whatever the lot size (``clean_reduce_quantity``)."""
    position = order.position
    if is_multiple(order.quantity, lot) or (
        order.reduce_only
        and position is not None
        and position.is_open
        and order.quantity >= position.quantity
    ):
        return order.quantity
    return (order.quantity / lot).to_integral_value(rounding=ROUND_FLOOR) * lot


def _below_min_notional(
    instrument: Instrument,
    *,
    account: TradingAccount,
    quantity: Decimal,
    resized: bool,
    notional: Decimal,
) -> str:
    """Why an opening order of ``quantity`` worth ``notional`` no longer fits the minimum,
    or "" when it does."""
    if notional >= instrument.min_notional:
        return ""
    currency = account.classroom.currency
    worth = money_text(notional, currency)
    minimum = money_text(instrument.min_notional, currency)
    if resized:
        return (
            f"rounded down to whole lots, {plain(quantity)}, it would be worth {worth}; "
            f"the minimum is {minimum}"
        )
    return f"it is worth {worth}; the minimum is {minimum}"
