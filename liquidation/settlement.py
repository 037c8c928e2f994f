"""Liquidating breached positions in batches, the insurance fund and auto-deleveraging.

Settlement of one liquidation at the mark P, as Binance and Bybit settle isolated margin, with
WB the position's collateral, pnl its price PnL at P (rounded against the trader) and
MB = WB + pnl:

- MB >= 0: the house (counterparty of every trade) receives the loss; the liquidation fee
  (the classroom's rate times the notional at P, at most MB) goes to the insurance fund;
  the leftover MB - fee goes to the insurance fund too, or back to the free balance under
  the ``return_to_trader`` policy. The student loses at most the collateral.
- MB < 0 (the price gapped past the bankruptcy price): the whole collateral goes to the
  house, the insurance fund pays the house the shortfall -MB as far as it can, and what
  it cannot pay is recovered by auto-deleveraging: the most profitable opposite
  positions of the same instrument (ranked by PnL% of collateral times leverage) are
  closed at the bankrupt position's bankruptcy price, which costs them exactly
  ``quantity * |BP - P|`` of profit that the house keeps.

The free balance is never debited. Each liquidation is one balanced ledger transaction
(kind ``liquidation``), each ADL close one more (kind ``adl``); ``LiquidationEvent`` is
one-to-one with the position, so a second liquidation fails on the unique constraint.

A batch locks positions with SKIP LOCKED, so the engine never waits for a student's
request and cannot deadlock with one; what it skips it finds again on the next tick.
Services lock account → position → collateral; the batch writes no account row under
the insurance-fund policy (the free balance is never touched), so it needs no account
lock there. Under ``return_to_trader`` it credits free balances and locks the accounts
first (also SKIP LOCKED), keeping the account → position order. Collateral only changes
under its position's lock, so holding the position is enough to read it. The margin test is re-checked in Python under the
locks, and every row of the batch is written with a constant number of statements.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple, TypeVar

from django.db import connection, transaction
from django.db.models import Model, Q, QuerySet
from django.utils import timezone

from accounts.ledger import POCKET_LOCK_ORDER, Leg, lock_classroom_pockets, plus
from accounts.models import (
    Classroom,
    ClassroomPocket,
    LedgerEntry,
    LedgerTransaction,
    TradingAccount,
)
from accounts.money import MONEY_LIMIT, ZERO, money, money_charged, money_pnl, plain
from liquidation.models import AdlFill, LiquidationEvent, MarginCall
from positions import margin
from positions.models import Collateral, Fill, Instrument, Order, Position, Side
from positions.services import position_ledger_post, stored_prices

Pocket = LedgerEntry.Pocket
BATCH_SIZE = 2500
# Batches of one tick run on this many threads (own connections) on PostgreSQL.
BATCH_THREADS = 2


def breached_position_ids(instrument_id: int, mark: Decimal) -> list[tuple[int, int]]:
    """(position id, account id) of open positions whose stored LP the mark has reached.

    Two range scans on the partial indexes ``pos_open_long_lp`` / ``pos_open_short_lp``:
    the cost grows with the number of breached positions, not with the open ones.
    """
    base = Position.objects.filter(instrument_id=instrument_id, status=Position.Status.OPEN)
    longs = base.filter(side=Side.LONG, liquidation_price__gte=mark)
    shorts = base.filter(side=Side.SHORT, liquidation_price__lte=mark)
    rows = list(longs.values_list("id", "account_id")) + list(
        shorts.values_list("id", "account_id")
    )
    rows.sort()
    return rows


@dataclass
class BatchResult:
    checked: int = 0
    liquidated: list[int] = field(default_factory=list)
    skipped_locked: int = 0


class Breached(NamedTuple):
    """The columns of a locked position that its liquidation reads."""

    pk: int
    account_id: int
    side: str
    quantity: Decimal
    entry_price: Decimal
    liquidation_price: Decimal | None
    bankruptcy_price: Decimal


BREACHED_FIELDS = Breached._fields


@dataclass
class _Settled:
    position: Breached
    legs: list[Leg]
    event: dict[str, object]
    fill: dict[str, object]
    applied_pnl: Decimal
    fee: Decimal
    adl_needed: Decimal


def _balanced(legs: list[Leg]) -> list[Leg]:
    kept = [leg for leg in legs if leg.amount != 0]
    for leg in kept:
        if leg.amount != money(leg.amount):
            raise ValueError(f"ledger leg {leg} is not quantised to money places")
    if sum((leg.amount for leg in kept), ZERO) != 0:
        raise ValueError(f"liquidation legs do not balance: {kept}")
    return kept


def _settle(
    *,
    position: Breached,
    collateral: Decimal,
    mark: Decimal,
    classroom: Classroom,
    free_balance: Decimal,
    insurance_available: Decimal,
    now: datetime,
) -> _Settled:
    """The money of one liquidation at the mark: ledger legs, event and fill rows (not saved)."""
    s = margin.side_sign(position.side)
    qty = position.quantity
    account_id = position.account_id
    pnl = money_pnl(s * qty * (mark - position.entry_price))
    balance = collateral + pnl
    legs = [Leg(Pocket.COLLATERAL, -collateral, account_id=account_id, position_id=position.pk)]
    fee = leftover = returned = shortfall = insurance_paid = ZERO
    if balance >= 0:
        fee = min(money_charged(qty * mark * classroom.liquidation_fee_rate), balance)
        leftover = balance - fee
        if (
            classroom.leftover_policy == Classroom.LeftoverPolicy.RETURN_TO_TRADER
            and free_balance + leftover < MONEY_LIMIT
        ):
            # (A free balance that could not store it leaves the leftover to the fund.)
            returned = leftover
        legs += [
            Leg(Pocket.HOUSE, -pnl),
            Leg(Pocket.INSURANCE, fee + leftover - returned),
            Leg(Pocket.ACCOUNT, returned, account_id=account_id),
        ]
        applied = pnl
    else:
        shortfall = -balance
        insurance_paid = min(shortfall, insurance_available)
        legs += [
            Leg(Pocket.HOUSE, collateral + insurance_paid),
            Leg(Pocket.INSURANCE, -insurance_paid),
        ]
        applied = -collateral
    event: dict[str, object] = {
        "position_id": position.pk,
        "classroom_id": classroom.pk,
        "quantity": qty,
        "mark_price": mark,
        "liquidation_price": position.liquidation_price,
        "bankruptcy_price": position.bankruptcy_price,
        "collateral_lost": collateral - returned,
        "liquidation_fee": fee,
        "leftover": leftover,
        "returned_to_trader": returned,
        "shortfall": shortfall,
        "insurance_paid": insurance_paid,
        "adl_amount": ZERO,
        "free_balance_before": free_balance,
        "created_at": now,
    }
    fill: dict[str, object] = {
        "order_id": None,
        "position_id": position.pk,
        "kind": Fill.Kind.LIQUIDATION,
        "quantity": qty,
        "price": mark,
        "fee": fee,
        "realized_pnl": applied,
        "created_at": now,
    }
    return _Settled(
        position, _balanced(legs), event, fill, applied, fee, shortfall - insurance_paid
    )


_M = TypeVar("_M", bound=Model)


def with_ids(queryset: QuerySet[_M], column: str, ids: list[int]) -> QuerySet[_M]:
    """Rows whose ``column`` is in ``ids``: one array parameter on PostgreSQL.

    ``column IN (%s, %s, ...)`` with thousands of placeholders costs more to build and parse
    than the statement costs to run; ``= ANY(%s)`` passes the batch as one array.
    """
    if connection.vendor != "postgresql":
        return queryset.filter(**{f"{column}__in": ids})
    table = queryset.model._meta.db_table
    return queryset.extra(where=[f'"{table}"."{column}" = ANY(%s)'], params=[list(ids)])  # noqa: S610


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_text(value: object) -> str:
    """One value in COPY's text format (written by hand: the per-value dumpers cost more)."""
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return f"{value:f}"
    return str(value).translate(_COPY_ESCAPES)


def _copy_column(values: list[object]) -> list[str]:
    """A whole column in COPY's text format.

    A column of integers or of Decimals (with or without NULLs) is formatted without asking
    every value for its type, which is most of the cost; anything else goes value by value.
    """
    kinds = {type(value) for value in values} - {type(None)}
    if kinds == {int}:
        return ["\\N" if value is None else str(value) for value in values]
    if kinds == {Decimal}:
        return ["\\N" if value is None else f"{value:f}" for value in values]
    return [_copy_text(value) for value in values]


def insert_rows(
    model: type[Model], rows: list[dict[str, object]], *, with_ids: bool = False
) -> list[int]:
    """Insert plain rows: COPY on PostgreSQL (ids drawn from the table's sequence first).

    The rows name every column, so nothing depends on model defaults; elsewhere (the
    embedded SQLite) this is an ordinary ``bulk_create``.
    """
    if not rows:
        return []
    if connection.vendor != "postgresql":
        created = model._default_manager.bulk_create([model(**row) for row in rows])
        return [int(obj.pk) for obj in created]
    table = model._meta.db_table
    ids: list[int] = []
    with connection.cursor() as cursor:
        if with_ids:
            cursor.execute(
                "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)",
                [table, len(rows)],
            )
            ids = [int(row[0]) for row in cursor.fetchall()]
            for row, pk in zip(rows, ids, strict=True):
                row["id"] = pk
        columns = list(rows[0])
        statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
        formatted = [_copy_column([row[c] for row in rows]) for c in columns]
        text = "".join(f"{line}\n" for line in map("\t".join, zip(*formatted, strict=True)))
        # Through Django's wrapper, so a failed COPY raises DatabaseError like any query.
        with connection.wrap_database_errors, cursor.cursor.copy(statement) as copy:
            copy.write(text.encode())
    return ids


def _update_positions(settled: list[_Settled], mark: Decimal, now: datetime) -> None:
    """Close the batch's positions in one statement (per-row PnL and fee from arrays)."""
    common = {
        "status": Position.Status.LIQUIDATED,
        "quantity": ZERO,
        "closed_at": now,
        "exit_price": mark,
        "take_profit": None,
        "stop_loss": None,
        "margin_call_active": False,
    }
    if connection.vendor == "postgresql":
        params: list[Any] = [
            Position.Status.LIQUIDATED, ZERO, now, mark, False,
            [item.position.pk for item in settled],
            [item.applied_pnl for item in settled],
            [item.fee for item in settled],
        ]  # fmt: skip
        table = Position._meta.db_table
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} AS p SET status = %s, quantity = %s, closed_at = %s, "  # noqa: S608
                "exit_price = %s, take_profit = NULL, stop_loss = NULL, margin_call_active = %s, "
                "realized_pnl = p.realized_pnl + v.pnl, fees_paid = p.fees_paid + v.fee "
                "FROM unnest(%s::bigint[], %s::numeric[], %s::numeric[]) AS v(id, pnl, fee) "
                "WHERE p.id = v.id",
                params,
            )
        return
    Position.objects.filter(pk__in=[item.position.pk for item in settled]).update(**common)
    for item in settled:
        Position.objects.filter(pk=item.position.pk).update(
            realized_pnl=plus("realized_pnl", item.applied_pnl),
            fees_paid=plus("fees_paid", item.fee),
        )


Deltas = tuple[dict[int, Decimal], dict[str, Decimal]]


def _post_bulk(classroom_id: int, settled: list[_Settled], now: datetime) -> Deltas:
    """One balanced ledger transaction per liquidation, written with a few bulk statements.

    Returns what the free balances and the classroom pockets receive; the caller applies
    it last (see :func:`_apply_deltas`).
    """
    at = plain(settled[0].event["mark_price"])  # type: ignore[arg-type]
    txn_ids = insert_rows(
        LedgerTransaction,
        [
            {
                "classroom_id": classroom_id,
                "kind": LedgerTransaction.Kind.LIQUIDATION,
                "memo": f"Liquidation of position #{item.position.pk} at {at}",
                "position_id": item.position.pk,
                "created_by_id": None,
                "created_at": now,
                "client_request_id": "",
            }
            for item in settled
        ],
        with_ids=True,
    )
    entries: list[dict[str, object]] = []
    accounts: dict[int, Decimal] = defaultdict(Decimal)
    pockets: dict[str, Decimal] = defaultdict(Decimal)
    for txn_id, item in zip(txn_ids, settled, strict=True):
        item.event["ledger_transaction_id"] = txn_id
        for leg in item.legs:
            entries.append(
                {
                    "transaction_id": txn_id,
                    "classroom_id": classroom_id,
                    "pocket": leg.pocket,
                    "account_id": leg.account_id,
                    "position_id": leg.position_id,
                    "amount": leg.amount,
                }
            )
            if leg.pocket == Pocket.ACCOUNT:
                assert leg.account_id is not None
                accounts[leg.account_id] += leg.amount
            elif leg.pocket != Pocket.COLLATERAL:
                pockets[leg.pocket] += leg.amount
    insert_rows(LedgerEntry, entries)
    # Each collateral leg takes the whole locked amount, so every row ends at exactly zero.
    with_ids(
        Collateral.objects.all(), "position_id", [item.position.pk for item in settled]
    ).update(amount=ZERO)
    return accounts, pockets


def _apply_deltas(classroom_id: int, deltas: Deltas) -> None:
    """Move the stored balances of the batch's ledger entries, classroom pockets last.

    Every liquidation of the classroom updates the same pocket rows, so they are written
    at the very end, after the deferred foreign-key checks have run: concurrent batches
    overlap everything else and queue only for these few rows and the commit.
    """
    accounts, pockets = deltas
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    for account_id in sorted(accounts):
        if accounts[account_id]:
            TradingAccount.objects.filter(pk=account_id).update(
                balance=plus("balance", accounts[account_id])
            )
    for kind in POCKET_LOCK_ORDER:
        if pockets.get(kind):
            updated = ClassroomPocket.objects.filter(classroom_id=classroom_id, kind=kind).update(
                balance=plus("balance", pockets[kind])
            )
            if updated != 1:
                raise ValueError(f"classroom {classroom_id} has no {kind} pocket")


def liquidate_batch(
    *, instrument: Instrument, mark: Decimal, rows: list[tuple[int, int]]
) -> BatchResult:
    """Lock, re-check and liquidate one batch of candidate positions in one transaction."""
    result = BatchResult()
    tiers = instrument.margin_tiers()
    classroom = instrument.classroom
    now = timezone.now()
    with transaction.atomic():
        if connection.vendor == "postgresql":
            # The batch is re-derivable: if the server crashed before this commit reached the
            # disk, the positions would still be open past their LP and the next tick would
            # liquidate them again. So the commit need not wait for the WAL flush; the
            # transaction stays atomic either way.
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL synchronous_commit TO OFF")
        account_ids = sorted({account_id for _, account_id in rows})
        accounts = with_ids(TradingAccount.objects.all(), "id", account_ids).order_by("pk")
        if classroom.leftover_policy == Classroom.LeftoverPolicy.RETURN_TO_TRADER:
            # The leftover is credited to the free balance: lock the accounts first, as
            # every service does, skipping busy ones (they are retried on the next tick).
            accounts = accounts.select_for_update(of=("self",), skip_locked=True, no_key=True)
        balances = dict(accounts.values_list("pk", "balance"))
        wanted = [pk for pk, account_id in rows if account_id in balances]
        positions = [
            Breached(*row)
            for row in with_ids(Position.objects.all(), "id", wanted)
            .select_for_update(of=("self",), skip_locked=True, no_key=True)
            .filter(status=Position.Status.OPEN)
            .order_by("pk")
            .values_list(*BREACHED_FIELDS)
        ]
        result.skipped_locked = len(rows) - len(positions)
        if not positions:
            return result
        # Collateral changes only under its position's lock, which this batch now holds.
        collateral = dict(
            with_ids(
                Collateral.objects.all(), "position_id", [p.pk for p in positions]
            ).values_list("pk", "amount")
        )
        fund = ClassroomPocket.objects.filter(
            classroom_id=classroom.pk, kind=ClassroomPocket.Kind.INSURANCE
        ).values_list("balance", flat=True)

        def settle_all(available: Decimal) -> list[_Settled]:
            settled: list[_Settled] = []
            free = dict(balances)  # as each leftover returned so far leaves them
            for position in positions:
                wb = collateral[position.pk]
                if not margin.is_liquidatable(
                    side=position.side,
                    entry_price=position.entry_price,
                    quantity=position.quantity,
                    collateral=wb,
                    mark_price=mark,
                    tiers=tiers,
                ):
                    continue
                item = _settle(
                    position=position,
                    collateral=wb,
                    mark=mark,
                    classroom=classroom,
                    free_balance=free[position.account_id],
                    insurance_available=available,
                    now=now,
                )
                for leg in item.legs:
                    if leg.pocket == Pocket.INSURANCE:
                        available += leg.amount
                    elif leg.pocket == Pocket.ACCOUNT:
                        free[position.account_id] += leg.amount
                settled.append(item)
            return settled

        result.checked = len(positions)
        # The fund's balance only matters when a position gapped past its bankruptcy price;
        # only then is the fund locked (pockets last, as everywhere) and the batch re-settled.
        settled = settle_all(fund.get())
        if any(item.event["shortfall"] for item in settled):
            # Lock the pockets in POCKET_LOCK_ORDER (insurance fund, then house), the order
            # every ledger posting and every service takes them in, so neither a parallel
            # batch nor a student's shortfall close can hold one while waiting for the other.
            locked = lock_classroom_pockets(
                classroom_id=classroom.pk, kinds=(Pocket.INSURANCE, Pocket.HOUSE)
            )
            settled = settle_all(locked[Pocket.INSURANCE].balance)
        if not settled:
            return result
        deltas = _post_bulk(classroom.pk, settled, now)
        _update_positions(settled, mark, now)
        event_ids = insert_rows(LiquidationEvent, [item.event for item in settled], with_ids=True)
        insert_rows(Fill, [item.fill for item in settled])
        ids = [item.position.pk for item in settled]
        with_ids(Order.objects.all(), "position_id", ids).filter(
            status=Order.Status.RESTING
        ).update(status=Order.Status.CANCELLED, reject_reason="Position liquidated", updated_at=now)
        with_ids(MarginCall.objects.all(), "position_id", ids).filter(
            outcome=MarginCall.Outcome.PENDING
        ).update(outcome=MarginCall.Outcome.LIQUIDATED, resolved_at=now)
        _apply_deltas(classroom.pk, deltas)
        for event_id, item in zip(event_ids, settled, strict=True):
            if item.adl_needed > 0:
                auto_deleverage(
                    event_id=event_id,
                    position=item.position,
                    instrument=instrument,
                    mark=mark,
                    needed=item.adl_needed,
                )
        result.liquidated = ids
    return result


# --- auto-deleveraging ----------------------------------------------------------------


def adl_score(*, position: Position, collateral: Decimal, mark: Decimal) -> Decimal:
    """PnL as a share of the position's collateral, times its leverage: who is closed first."""
    if collateral <= 0:
        return ZERO
    pnl = margin.unrealized_pnl(
        side=position.side,
        entry_price=position.entry_price,
        quantity=position.quantity,
        mark_price=mark,
    )
    return pnl / collateral * position.leverage


def _lot_ceiling(value: Decimal, lot: Decimal) -> Decimal:
    steps = (value / lot).to_integral_value(rounding="ROUND_CEILING")
    return steps * lot


def auto_deleverage(
    *, event_id: int, position: Breached, instrument: Instrument, mark: Decimal, needed: Decimal
) -> Decimal:
    """Close the best-ranked opposite positions at the bankrupt position's BP to cover ``needed``.

    Runs inside the liquidation's transaction. Counterparties are locked account first,
    with SKIP LOCKED, so a busy one is passed over rather than waited for.
    """
    bp = position.bankruptcy_price
    gap = abs(bp - mark)
    if gap <= 0 or needed <= 0:
        return ZERO
    opposite = Side.SHORT if position.side == Side.LONG else Side.LONG
    # Only positions still in profit at BP: closing them there never costs them collateral.
    profitable = Q(entry_price__gt=bp) if opposite == Side.SHORT else Q(entry_price__lt=bp)
    candidates = list(
        Position.objects.filter(
            profitable,
            instrument_id=instrument.pk,
            status=Position.Status.OPEN,
            side=opposite,
        ).select_related("collateral")
    )
    ranked = sorted(
        candidates,
        key=lambda p: (-adl_score(position=p, collateral=p.collateral.amount, mark=mark), p.pk),
    )
    tiers = instrument.margin_tiers()
    covered = ZERO
    now = timezone.now()
    for candidate in ranked:
        if covered >= needed:
            break
        account = (
            TradingAccount.objects.select_for_update(of=("self",), skip_locked=True, no_key=True)
            .filter(pk=candidate.account_id)
            .first()
        )
        if account is None:
            continue
        locked = (
            Position.objects.select_for_update(of=("self",), skip_locked=True, no_key=True)
            .filter(pk=candidate.pk, status=Position.Status.OPEN)
            .first()
        )
        if locked is None:
            continue
        collateral = Collateral.objects.select_for_update(no_key=True).get(pk=locked.pk)
        qty = min(locked.quantity, _lot_ceiling((needed - covered) / gap, instrument.lot_size))
        s = margin.side_sign(locked.side)
        full = qty == locked.quantity
        released = collateral.amount if full else money(collateral.amount * qty / locked.quantity)
        pnl = money_pnl(s * qty * (bp - locked.entry_price))
        if (
            account.balance + released + pnl >= MONEY_LIMIT
            or locked.realized_pnl + pnl >= MONEY_LIMIT
        ):
            continue  # a profit this account could not store: the next in rank covers it
        saving = min(money(qty * gap), needed - covered)
        txn = position_ledger_post(
            classroom_id=account.classroom_id,
            kind=LedgerTransaction.Kind.ADL,
            position_id=locked.pk,
            memo=f"Auto-deleveraging of {plain(qty)} of position #{locked.pk} at "
            f"{plain(bp)} for liquidation #{event_id}",
            legs=[
                Leg(Pocket.COLLATERAL, -released, account_id=account.pk, position_id=locked.pk),
                Leg(Pocket.HOUSE, -pnl),
                Leg(Pocket.ACCOUNT, released + pnl, account_id=account.pk),
            ],
        )
        Fill.objects.create(
            position=locked,
            kind=Fill.Kind.ADL,
            quantity=qty,
            price=bp,
            realized_pnl=pnl,
            created_at=now,
        )
        AdlFill.objects.create(
            liquidation_id=event_id,
            position=locked,
            quantity=qty,
            price=bp,
            rank_score=adl_score(position=locked, collateral=collateral.amount, mark=mark).quantize(
                Decimal("1e-10")
            ),
            realized_pnl=pnl,
            created_at=now,
        )
        locked.quantity -= qty
        locked.realized_pnl += pnl
        if full:
            locked.status = Position.Status.CLOSED
            locked.closed_at = now
            locked.exit_price = bp
            locked.take_profit = locked.stop_loss = None
            locked.margin_call_active = False
            Order.objects.filter(position=locked, status=Order.Status.RESTING).update(
                status=Order.Status.CANCELLED,
                reject_reason="Position auto-deleveraged",
                updated_at=now,
            )
        else:
            Collateral.objects.filter(pk=locked.pk).update(
                initial_margin=money(
                    collateral.initial_margin * locked.quantity / (locked.quantity + qty)
                )
            )
            lp, new_bp = stored_prices(
                side=locked.side,
                entry_price=locked.entry_price,
                quantity=locked.quantity,
                collateral=collateral.amount - released,
                tiers=tiers,
            )
            locked.liquidation_price, locked.bankruptcy_price = lp, new_bp
        locked.save()
        covered += saving
        del txn
    LiquidationEvent.objects.filter(pk=event_id).update(adl_amount=covered)
    return covered
