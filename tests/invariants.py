"""The ledger invariants (double entry, stored balances, isolation), checked in the database."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from django.db.models import F, QuerySet, Sum

from accounts.models import ClassroomPocket, LedgerEntry, LedgerTransaction, TradingAccount
from positions.models import Collateral, Fill, Order, Position


def assert_ledger_invariants(classroom_id: int | None = None) -> None:
    """Every transaction sums to zero; stored balances (free balances, collateral, order
    margin, classroom pockets) equal their entries; totals are conserved."""
    txns = LedgerTransaction.objects.all()
    entries = LedgerEntry.objects.all()
    accounts = TradingAccount.objects.all()
    pockets = ClassroomPocket.objects.all()
    collateral = Collateral.objects.all()
    if classroom_id is not None:
        txns = txns.filter(classroom_id=classroom_id)
        entries = entries.filter(classroom_id=classroom_id)
        accounts = accounts.filter(classroom_id=classroom_id)
        pockets = pockets.filter(classroom_id=classroom_id)
        collateral = collateral.filter(position__account__classroom_id=classroom_id)

    unbalanced = (
        txns.annotate(total=Sum("entries__amount")).exclude(total=0).exclude(total__isnull=True)
    )
    assert not unbalanced.exists(), (
        f"unbalanced transactions: {list(unbalanced.values('id', 'total'))}"
    )

    by_account = dict(
        entries.filter(pocket="account").values_list("account_id").annotate(s=Sum("amount"))
    )
    for account in accounts:
        assert account.balance >= 0, f"account {account.pk} negative"
        assert account.balance == by_account.get(account.pk, Decimal(0)), (
            f"account {account.pk}: stored {account.balance} != ledger {by_account.get(account.pk)}"
        )

    by_position = dict(
        entries.filter(pocket="collateral").values_list("position_id").annotate(s=Sum("amount"))
    )
    for row in collateral:
        assert row.amount >= 0, f"collateral of {row.position_id} negative"
        assert row.amount == by_position.get(row.position_id, Decimal(0)), (
            f"collateral {row.position_id}: stored {row.amount} != ledger {by_position.get(row.position_id)}"
        )

    orders = Order.objects.all()
    if classroom_id is not None:
        orders = orders.filter(account__classroom_id=classroom_id)
    by_order = dict(
        entries.filter(pocket="order").values_list("order_id").annotate(s=Sum("amount"))
    )
    held_orders = set(orders.exclude(held_margin=0).values_list("pk", flat=True))
    for order_id, held, status, reduce_only in orders.filter(
        pk__in=held_orders | set(by_order)
    ).values_list("pk", "held_margin", "status", "reduce_only"):
        assert held >= 0, f"order {order_id} holds a negative amount"
        assert held == by_order.get(order_id, Decimal(0)), (
            f"order {order_id}: stored hold {held} != ledger {by_order.get(order_id)}"
        )
        if status != Order.Status.RESTING or reduce_only:
            assert held == 0, f"{status} order {order_id} (reduce-only {reduce_only}) holds {held}"
    stray_holds = entries.filter(pocket="order").exclude(order_id__in=orders.values("pk"))
    assert not stray_holds.exists(), f"order margin of no order: {list(stray_holds.values('id'))}"

    for pocket in pockets:
        expected = entries.filter(classroom_id=pocket.classroom_id, pocket=pocket.kind).aggregate(
            s=Sum("amount")
        )["s"] or Decimal(0)
        assert pocket.balance == expected, f"{pocket}: stored {pocket.balance} != ledger {expected}"
        if pocket.kind != ClassroomPocket.Kind.HOUSE:
            assert pocket.balance >= 0, f"{pocket} negative"

    # Conservation: every pocket of a classroom together holds exactly zero (the house
    # is the counterparty of all funding and trading).
    classroom_ids = set(pockets.values_list("classroom_id", flat=True))
    for cid in classroom_ids:
        total = (
            (TradingAccount.objects.filter(classroom_id=cid).aggregate(s=Sum("balance"))["s"] or 0)
            + (
                Collateral.objects.filter(position__account__classroom_id=cid).aggregate(
                    s=Sum("amount")
                )["s"]
                or 0
            )
            + (
                Order.objects.filter(account__classroom_id=cid).aggregate(s=Sum("held_margin"))["s"]
                or 0
            )
            + (
                ClassroomPocket.objects.filter(classroom_id=cid).aggregate(s=Sum("balance"))["s"]
                or 0
            )
        )
        assert total == 0, f"classroom {cid} total {total} is not conserved"

    # Closed and liquidated positions hold no collateral; no position lost more than it locked.
    for position in Position.objects.exclude(status=Position.Status.OPEN).select_related(
        "collateral"
    ):
        assert position.collateral.amount == 0, (
            f"closed position {position.pk} still holds collateral"
        )
    # Isolation: a position debits the free balance only to lock collateral and pay fees,
    # so what the account paid into a position never exceeds that.
    account_flows = dict(
        entries.filter(pocket="account", transaction__position_id__isnull=False)
        .values_list("transaction__position_id")
        .annotate(s=Sum("amount"))
    )
    locked = dict(
        entries.filter(pocket="collateral", amount__gt=0)
        .values_list("position_id")
        .annotate(s=Sum("amount"))
    )
    fees = dict(Position.objects.filter(pk__in=account_flows).values_list("pk", "fees_paid"))
    for position_id, flow in account_flows.items():
        assert (
            flow + locked.get(position_id, Decimal(0)) + fees.get(position_id, Decimal(0)) >= 0
        ), f"position {position_id} took more from the free balance than its collateral and fees"

    _assert_isolation(entries, locked)


def _assert_isolation(entries: QuerySet[LedgerEntry], locked: dict[int, Decimal]) -> None:
    """Each position's money stays in its own pocket; its loss stops at its collateral.

    - a transaction moves only the collateral of the position it belongs to;
    - it takes from the free balance only what it locks as collateral or pays as fees,
      so closing, liquidating or deleveraging never debits the free balance;
    - no position's realised loss exceeds the collateral it ever locked.
    """
    stray = entries.filter(pocket="collateral").exclude(transaction__position_id=F("position_id"))
    assert not stray.exists(), (
        f"collateral moved by another position's transaction: {list(stray.values('id'))}"
    )
    per_txn: dict[int, dict[str, Decimal]] = {}
    rows = entries.filter(transaction__position_id__isnull=False).values_list(
        "transaction_id", "pocket", "amount"
    )
    for txn_id, pocket, amount in rows:
        sums = per_txn.setdefault(txn_id, {"debit": Decimal(0), "locked": Decimal(0)})
        if pocket == "account" and amount < 0:
            sums["debit"] -= amount
        elif (pocket == "collateral" or pocket == "fees") and amount > 0:
            sums["locked"] += amount
    for txn_id, sums in per_txn.items():
        assert sums["debit"] <= sums["locked"], (
            f"transaction {txn_id} debits the free balance by {sums['debit']} but locks or "
            f"pays only {sums['locked']}"
        )
    position_ids = set(entries.values_list("position_id", flat=True)) - {None}
    for position_id, realized in Position.objects.filter(pk__in=position_ids).values_list(
        "pk", "realized_pnl"
    ):
        assert -realized <= locked.get(position_id, Decimal(0)), (
            f"position {position_id} lost {-realized}, more than the "
            f"{locked.get(position_id, Decimal(0))} it locked"
        )


@dataclass(frozen=True)
class MoneySnapshot:
    """Row counts and every stored balance, to show that a refused call wrote nothing."""

    counts: dict[str, int]
    accounts: dict[int, Decimal]
    collateral: dict[int, tuple[Decimal, Decimal]]
    pockets: dict[tuple[int, str], Decimal]
    positions: dict[int, tuple[object, ...]]
    orders: dict[int, tuple[object, ...]]


def money_snapshot() -> MoneySnapshot:
    models = (Position, Collateral, Order, Fill, LedgerTransaction, LedgerEntry, TradingAccount)
    return MoneySnapshot(
        counts={m.__name__: m.objects.count() for m in models},
        accounts=dict(TradingAccount.objects.values_list("pk", "balance")),
        collateral={
            pk: (amount, im)
            for pk, amount, im in Collateral.objects.values_list("pk", "amount", "initial_margin")
        },
        pockets={
            (cid, kind): balance
            for cid, kind, balance in ClassroomPocket.objects.values_list(
                "classroom_id", "kind", "balance"
            )
        },
        positions={
            row[0]: row[1:]
            for row in Position.objects.values_list(
                "pk",
                "status",
                "quantity",
                "liquidation_price",
                "bankruptcy_price",
                "realized_pnl",
                "fees_paid",
                "take_profit",
                "stop_loss",
            )
        },
        orders={
            row[0]: row[1:]
            for row in Order.objects.values_list(
                "pk", "status", "reject_reason", "position_id", "held_margin"
            )
        },
    )
