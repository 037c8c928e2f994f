"""Posting to the double-entry ledger: the only way a stored balance changes."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db import connection, transaction
from django.db.models import F, QuerySet
from django.db.models.expressions import Combinable
from django.db.models.functions import Round
from django.utils import timezone

from accounts import errors
from accounts.models import ClassroomPocket, LedgerEntry, LedgerTransaction, TradingAccount
from accounts.money import MONEY_LIMIT, MONEY_PLACES, ZERO, money, money_text

Pocket = LedgerEntry.Pocket
# The order in which a transaction takes a classroom's pocket rows. The insurance fund
# comes first: a liquidation (and a close that must ask the fund for a shortfall) locks the
# fund to read what it holds before it moves the house, so everything else must too.
POCKET_LOCK_ORDER = (Pocket.INSURANCE, Pocket.HOUSE, Pocket.FEES)


@dataclass(frozen=True)
class Leg:
    """A signed amount into one pocket (positive: the pocket receives it)."""

    pocket: str
    amount: Decimal
    account_id: int | None = None
    position_id: int | None = None
    order_id: int | None = None


# Collateral and order margin live in the positions app: legs on them are applied by
# functions it hands in, by position id and by order id.
CollateralUpdater = Callable[[int, Decimal], None]
OrderMarginUpdater = Callable[[int, Decimal], None]


def plus(field: str, delta: Decimal) -> Combinable:
    """``field + delta`` for an UPDATE of a money column, exact on every database.

    PostgreSQL adds NUMERICs exactly. SQLite (the embedded default) keeps them as binary
    floating point, where releasing all of 639.77620667 of collateral can leave -3.6e-15
    and fail the CHECK that keeps it non-negative; rounding to the money places there gives
    back the exact sum.
    """
    total = F(field) + delta
    return Round(total, MONEY_PLACES) if connection.vendor == "sqlite" else total


def too_large(what: str, amount: Decimal) -> errors.AmountTooLarge:
    """The refusal of a movement that would carry ``what`` past ``MONEY_LIMIT``."""
    return errors.AmountTooLarge(
        f"This would move {money_text(amount, None)} and carry {what} past the largest amount "
        f"Ringfence can hold, {money_text(MONEY_LIMIT, None)}: nothing was changed."
    )


def credit_within_limit(rows: QuerySet[Any], field: str, delta: Decimal, *, what: str) -> None:
    """Add ``delta`` to ``field`` of the one row in ``rows``. A credit that would carry the
    stored amount past ``MONEY_LIMIT`` updates nothing and is refused (the column could not
    store it): the caller's transaction rolls back whatever it wrote before."""
    if delta > 0:
        rows = rows.filter(**{f"{field}__lt": MONEY_LIMIT - delta})
    if rows.update(**{field: plus(field, delta)}) != 1:
        if delta > 0:
            raise too_large(what, delta)
        raise ValueError(f"no row to move {delta} on: {rows.query}")


def lock_classroom_pockets(
    *, classroom_id: int, kinds: Iterable[str]
) -> dict[str, ClassroomPocket]:
    """Lock some of a classroom's pockets in ``POCKET_LOCK_ORDER``, the order ``ledger_post``
    moves them in, and return them by kind.

    A service that must read a pocket's balance before posting (the insurance fund paying a
    shortfall) locks through here, so no two transactions ever take the insurance fund and
    the house in opposite orders.
    """
    wanted = set(kinds)
    locked: dict[str, ClassroomPocket] = {}
    for kind in POCKET_LOCK_ORDER:
        if kind in wanted:
            locked[kind] = ClassroomPocket.objects.select_for_update(no_key=True).get(
                classroom_id=classroom_id, kind=kind
            )
    return locked


def ledger_post(
    *,
    classroom_id: int,
    kind: str,
    legs: Iterable[Leg],
    memo: str = "",
    position_id: int | None = None,
    created_by_id: int | None = None,
    client_request_id: str = "",
    collateral_updater: CollateralUpdater | None = None,
    order_margin_updater: OrderMarginUpdater | None = None,
) -> LedgerTransaction:
    """Record one balanced transaction and move the stored balances by its legs.

    The caller holds the row locks of the accounts and collateral it moves and has
    checked that no pocket but the house goes negative; the CHECK constraints are the
    last line of defence. Collateral and order margin live in the positions app, so legs
    on them are applied through ``collateral_updater`` and ``order_margin_updater``.
    ``client_request_id`` is the client's own id of a margin change, unique per position.
    """
    kept = [leg for leg in legs if leg.amount != 0]
    for leg in kept:
        if leg.amount != money(leg.amount):
            raise ValueError(f"ledger leg {leg} is not quantised to money places")
        if leg.amount.copy_abs() >= MONEY_LIMIT:
            raise too_large("a single ledger entry", leg.amount.copy_abs())
    if sum((leg.amount for leg in kept), ZERO) != 0:
        raise ValueError(f"ledger transaction {kind} does not balance: {kept}")
    if any(leg.pocket == Pocket.COLLATERAL for leg in kept) and collateral_updater is None:
        raise ValueError("collateral legs need the positions app's collateral updater")
    if any(leg.pocket == Pocket.ORDER for leg in kept) and order_margin_updater is None:
        raise ValueError("order margin legs need the positions app's order margin updater")

    accounts: dict[int, Decimal] = defaultdict(Decimal)
    collateral: dict[int, Decimal] = defaultdict(Decimal)
    orders: dict[int, Decimal] = defaultdict(Decimal)
    pockets: dict[str, Decimal] = defaultdict(Decimal)
    for leg in kept:
        if leg.pocket == Pocket.ACCOUNT:
            assert leg.account_id is not None
            accounts[leg.account_id] += leg.amount
        elif leg.pocket == Pocket.COLLATERAL:
            assert leg.position_id is not None
            collateral[leg.position_id] += leg.amount
        elif leg.pocket == Pocket.ORDER:
            assert leg.order_id is not None and leg.account_id is not None
            orders[leg.order_id] += leg.amount
        else:
            pockets[leg.pocket] += leg.amount
    # No savepoint of its own: a failure here aborts the caller's transaction anyway, and no
    # caller catches an error of ledger_post inside its own atomic block.
    with transaction.atomic(savepoint=False):
        txn = LedgerTransaction.objects.create(
            classroom_id=classroom_id,
            kind=kind,
            memo=memo[:255],
            position_id=position_id,
            created_by_id=created_by_id,
            created_at=timezone.now(),
            client_request_id=client_request_id,
        )
        LedgerEntry.objects.bulk_create(
            LedgerEntry(
                transaction=txn,
                classroom_id=classroom_id,
                pocket=leg.pocket,
                account_id=leg.account_id,
                position_id=leg.position_id,
                order_id=leg.order_id,
                amount=leg.amount,
            )
            for leg in kept
        )
        # A fixed order (accounts, orders, collateral, then the pockets in POCKET_LOCK_ORDER)
        # keeps two transactions from waiting on each other's rows in opposite orders.
        for account_id in sorted(accounts):
            credit_within_limit(
                TradingAccount.objects.filter(pk=account_id),
                "balance",
                accounts[account_id],
                what="the free balance",
            )
        for order_id in sorted(orders):
            assert order_margin_updater is not None
            order_margin_updater(order_id, orders[order_id])
        for pos_id in sorted(collateral):
            assert collateral_updater is not None
            collateral_updater(pos_id, collateral[pos_id])
        for pocket_kind in POCKET_LOCK_ORDER:
            if pockets.get(pocket_kind):
                updated = ClassroomPocket.objects.filter(
                    classroom_id=classroom_id, kind=pocket_kind
                ).update(balance=plus("balance", pockets[pocket_kind]))
                if updated != 1:
                    raise ValueError(f"classroom {classroom_id} has no {pocket_kind} pocket")
    return txn
