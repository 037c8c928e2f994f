"""Posting to the double-entry ledger: the only way a stored balance changes."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from accounts.models import ClassroomPocket, LedgerEntry, LedgerTransaction, TradingAccount
from accounts.money import ZERO, money

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


CollateralUpdater = Callable[[int, Decimal], None]


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
            locked[kind] = ClassroomPocket.objects.select_for_update().get(
                classroom_id=classroom_id, kind=kind
            )
    return locked


# Several pockets move in one statement: the materialised CTE takes their row locks in
# POCKET_LOCK_ORDER (the lock node sits above the sort), and the UPDATE only touches rows
# it has already locked, so the statement never takes a pocket lock out of that order.
_MOVE_POCKETS_SQL = """
WITH locked AS MATERIALIZED (
    SELECT id, kind FROM accounts_classroompocket
    WHERE classroom_id = %s AND kind = ANY(%s::varchar[])
    ORDER BY array_position(%s::varchar[], kind::varchar)
    FOR UPDATE
)
UPDATE accounts_classroompocket AS pocket
SET balance = pocket.balance + moves.amount
FROM locked, unnest(%s::varchar[], %s::numeric[]) AS moves(kind, amount)
WHERE pocket.id = locked.id AND locked.kind = moves.kind
"""


# One statement records a transaction and its entries (in the order of its legs) and moves
# the balance of the one trading account the legs touch, if there is exactly one (else the
# last part matches no row). The caller holds that account's row lock already, so this
# takes no lock out of order. Data-modifying CTEs always run to completion, referenced or not.
_RECORD_SQL = """
WITH txn AS (
    INSERT INTO accounts_ledgertransaction
        (classroom_id, kind, memo, position_id, created_by_id, created_at)
    VALUES (%s, %s, %s, %s, %s, %s)
    RETURNING id
), entries AS (
    INSERT INTO accounts_ledgerentry
        (transaction_id, classroom_id, pocket, account_id, position_id, amount)
    SELECT txn.id, %s, leg.pocket, leg.account_id, leg.position_id, leg.amount
    FROM txn, unnest(%s::varchar[], %s::bigint[], %s::bigint[], %s::numeric[])
        WITH ORDINALITY AS leg(pocket, account_id, position_id, amount, n)
    ORDER BY leg.n
), moved AS (
    UPDATE accounts_tradingaccount SET balance = balance + %s::numeric WHERE id = %s::bigint
)
SELECT id FROM txn
"""
_MOVE_POCKET_SQL = """
UPDATE accounts_classroompocket SET balance = balance + %s WHERE classroom_id = %s AND kind = %s
"""


def _move_pockets(classroom_id: int, moves: list[tuple[str, Decimal]]) -> None:
    """Add each amount to the classroom's pocket of that kind; ``moves`` come in lock order,
    and the rows are locked in the order of ``moves``."""
    if not moves:
        return
    params: list[Any]
    if len(moves) == 1:
        kind, amount = moves[0]
        sql, params = _MOVE_POCKET_SQL, [amount, classroom_id, kind]
    else:
        kinds = [kind for kind, _ in moves]
        sql, params = _MOVE_POCKETS_SQL, [classroom_id, kinds, kinds, kinds, [a for _, a in moves]]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        updated = cursor.rowcount
    if updated != len(moves):
        missing = ", ".join(kind for kind, _ in moves)
        raise ValueError(f"classroom {classroom_id} lacks one of the pockets {missing}")


def ledger_post(
    *,
    classroom_id: int,
    kind: str,
    legs: Iterable[Leg],
    memo: str = "",
    position_id: int | None = None,
    created_by_id: int | None = None,
    collateral_updater: CollateralUpdater | None = None,
) -> LedgerTransaction:
    """Record one balanced transaction and move the stored balances by its legs.

    The caller holds the row locks of the accounts and collateral it moves and has
    checked that no pocket but the house goes negative; the CHECK constraints are the
    last line of defence. Collateral lives in the positions app, so legs on it are
    applied through ``collateral_updater``.
    """
    kept = [leg for leg in legs if leg.amount != 0]
    for leg in kept:
        if leg.amount != money(leg.amount):
            raise ValueError(f"ledger leg {leg} is not quantised to money places")
    if sum((leg.amount for leg in kept), ZERO) != 0:
        raise ValueError(f"ledger transaction {kind} does not balance: {kept}")
    if any(leg.pocket == Pocket.COLLATERAL for leg in kept) and collateral_updater is None:
        raise ValueError("collateral legs need the positions app's collateral updater")

    # No savepoint of its own: a failure here aborts the caller's transaction anyway, and no
    # caller catches an error of ledger_post inside its own atomic block.
    accounts: dict[int, Decimal] = defaultdict(Decimal)
    collateral: dict[int, Decimal] = defaultdict(Decimal)
    pockets: dict[str, Decimal] = defaultdict(Decimal)
    for leg in kept:
        if leg.pocket == Pocket.ACCOUNT:
            assert leg.account_id is not None
            accounts[leg.account_id] += leg.amount
        elif leg.pocket == Pocket.COLLATERAL:
            assert leg.position_id is not None
            collateral[leg.position_id] += leg.amount
        else:
            pockets[leg.pocket] += leg.amount
    txn = LedgerTransaction(
        classroom_id=classroom_id,
        kind=kind,
        memo=memo[:255],
        position_id=position_id,
        created_by_id=created_by_id,
        created_at=timezone.now(),
    )
    # A fixed order (accounts, collateral, then the pockets in POCKET_LOCK_ORDER) keeps
    # two transactions from waiting on each other's rows in opposite orders.
    account_ids = sorted(accounts)
    # No savepoint of its own: a failure here aborts the caller's transaction anyway, and no
    # caller catches an error of ledger_post inside its own atomic block.
    with transaction.atomic(savepoint=False):
        # The transaction, its entries and (the usual case) its one account move together.
        single = account_ids[0] if len(account_ids) == 1 else None
        params: list[Any] = [
            txn.classroom_id,
            txn.kind,
            txn.memo,
            txn.position_id,
            txn.created_by_id,
            txn.created_at,
            classroom_id,
            [leg.pocket for leg in kept],
            [leg.account_id for leg in kept],
            [leg.position_id for leg in kept],
            [leg.amount for leg in kept],
            ZERO if single is None else accounts[single],
            single,
        ]
        with connection.cursor() as cursor:
            cursor.execute(_RECORD_SQL, params)
            txn.pk = cursor.fetchone()[0]
        txn._state.adding = False
        txn._state.db = connection.alias
        if len(account_ids) > 1:
            for account_id in account_ids:
                TradingAccount.objects.filter(pk=account_id).update(
                    balance=F("balance") + accounts[account_id]
                )
        for pos_id in sorted(collateral):
            assert collateral_updater is not None
            collateral_updater(pos_id, collateral[pos_id])
        _move_pockets(classroom_id, [(k, pockets[k]) for k in POCKET_LOCK_ORDER if pockets.get(k)])
    return txn
