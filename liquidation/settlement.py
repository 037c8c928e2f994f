"""Liquidating breached positions in batches, the insurance fund and auto-deleveraging.

Settlement of one liquidation at the mark P (ARCHITECTURE.md §5), with WB the position's
collateral, pnl its price PnL at P (rounded against the trader) and MB = WB + pnl:

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

A batch locks trading accounts, then positions, then collateral, all with SKIP LOCKED so
the engine never waits for a student's request (and cannot deadlock with one); what it
skips it finds again on the next tick. The margin test is re-checked in Python under the
locks, and every row of the batch is written with a constant number of statements.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from accounts.ledger import Leg
from accounts.models import (
    Classroom,
    ClassroomPocket,
    LedgerEntry,
    LedgerTransaction,
    TradingAccount,
)
from accounts.money import ZERO, money, money_charged, money_pnl
from liquidation.models import AdlFill, LiquidationEvent, MarginCall
from positions import margin
from positions.models import Collateral, Fill, Instrument, Order, Position, Side
from positions.services import position_ledger_post, stored_prices

Pocket = LedgerEntry.Pocket
BATCH_SIZE = 1000


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


@dataclass
class _Settled:
    position: Position
    collateral: Decimal
    legs: list[Leg]
    event: LiquidationEvent
    fill: Fill
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
    position: Position,
    collateral: Decimal,
    mark: Decimal,
    classroom: Classroom,
    free_balance: Decimal,
    insurance_available: Decimal,
    now: datetime,
) -> _Settled:
    """The money of one liquidation at the mark, as ledger legs and an event (not saved)."""
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
        if classroom.leftover_policy == Classroom.LeftoverPolicy.RETURN_TO_TRADER:
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
    event = LiquidationEvent(
        position_id=position.pk,
        classroom_id=classroom.pk,
        quantity=qty,
        mark_price=mark,
        liquidation_price=position.liquidation_price,
        bankruptcy_price=position.bankruptcy_price,
        collateral_lost=collateral - returned,
        liquidation_fee=fee,
        leftover=leftover,
        returned_to_trader=returned,
        shortfall=shortfall,
        insurance_paid=insurance_paid,
        free_balance_before=free_balance,
        created_at=now,
    )
    fill = Fill(
        position_id=position.pk,
        kind=Fill.Kind.LIQUIDATION,
        quantity=qty,
        price=mark,
        fee=fee,
        realized_pnl=applied,
        created_at=now,
    )
    return _Settled(
        position, collateral, _balanced(legs), event, fill, applied, fee, shortfall - insurance_paid
    )


def _update_positions(settled: list[_Settled], mark: Decimal, now: datetime) -> None:
    """Close the batch's positions: one statement for the shared fields, one for per-row ones."""
    ids = [item.position.pk for item in settled]
    Position.objects.filter(pk__in=ids).update(
        status=Position.Status.LIQUIDATED,
        quantity=ZERO,
        closed_at=now,
        exit_price=mark,
        take_profit=None,
        stop_loss=None,
        margin_call_active=False,
    )
    if connection.vendor == "postgresql":
        values = ", ".join(["(%s::bigint, %s::numeric, %s::numeric)"] * len(settled))
        params: list[int | Decimal] = []
        for item in settled:
            params += [item.position.pk, item.applied_pnl, item.fee]
        table = Position._meta.db_table
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} AS p SET realized_pnl = p.realized_pnl + v.pnl, "  # noqa: S608
                f"fees_paid = p.fees_paid + v.fee FROM (VALUES {values}) AS v(id, pnl, fee) "
                "WHERE p.id = v.id",
                params,
            )
    else:
        for item in settled:
            Position.objects.filter(pk=item.position.pk).update(
                realized_pnl=F("realized_pnl") + item.applied_pnl,
                fees_paid=F("fees_paid") + item.fee,
            )


def _post_bulk(classroom_id: int, settled: list[_Settled], now: datetime) -> None:
    """One balanced ledger transaction per liquidation, written with a few bulk statements."""
    txns = LedgerTransaction.objects.bulk_create(
        LedgerTransaction(
            classroom_id=classroom_id,
            kind=LedgerTransaction.Kind.LIQUIDATION,
            position_id=item.position.pk,
            memo=f"Liquidation of position #{item.position.pk} at {item.event.mark_price.normalize()}",
            created_at=now,
        )
        for item in settled
    )
    entries: list[LedgerEntry] = []
    accounts: dict[int, Decimal] = defaultdict(Decimal)
    pockets: dict[str, Decimal] = defaultdict(Decimal)
    for txn, item in zip(txns, settled, strict=True):
        item.event.ledger_transaction_id = txn.pk
        for leg in item.legs:
            entries.append(
                LedgerEntry(
                    transaction_id=txn.pk,
                    classroom_id=classroom_id,
                    pocket=leg.pocket,
                    account_id=leg.account_id,
                    position_id=leg.position_id,
                    amount=leg.amount,
                )
            )
            if leg.pocket == Pocket.ACCOUNT:
                assert leg.account_id is not None
                accounts[leg.account_id] += leg.amount
            elif leg.pocket != Pocket.COLLATERAL:
                pockets[leg.pocket] += leg.amount
    LedgerEntry.objects.bulk_create(entries, batch_size=5000)
    # Each collateral leg takes the whole locked amount, so every row ends at exactly zero.
    Collateral.objects.filter(pk__in=[item.position.pk for item in settled]).update(amount=ZERO)
    for account_id in sorted(accounts):
        if accounts[account_id]:
            TradingAccount.objects.filter(pk=account_id).update(
                balance=F("balance") + accounts[account_id]
            )
    for kind in (Pocket.HOUSE, Pocket.INSURANCE, Pocket.FEES):
        if pockets.get(kind):
            updated = ClassroomPocket.objects.filter(classroom_id=classroom_id, kind=kind).update(
                balance=F("balance") + pockets[kind]
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
        account_ids = sorted({account_id for _, account_id in rows})
        balances = dict(
            TradingAccount.objects.select_for_update(of=("self",), skip_locked=True)
            .filter(pk__in=account_ids)
            .order_by("pk")
            .values_list("pk", "balance")
        )
        wanted = [pk for pk, account_id in rows if account_id in balances]
        positions = list(
            Position.objects.select_for_update(of=("self",), skip_locked=True)
            .filter(pk__in=wanted, status=Position.Status.OPEN)
            .order_by("pk")
        )
        result.skipped_locked = len(rows) - len(positions)
        if not positions:
            return result
        collateral = dict(
            Collateral.objects.select_for_update()
            .filter(pk__in=[p.pk for p in positions])
            .values_list("pk", "amount")
        )
        fund = ClassroomPocket.objects.select_for_update().get(
            classroom_id=classroom.pk, kind=ClassroomPocket.Kind.INSURANCE
        )
        available = fund.balance
        settled: list[_Settled] = []
        for position in positions:
            result.checked += 1
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
                free_balance=balances[position.account_id],
                insurance_available=available,
                now=now,
            )
            available -= item.event.insurance_paid
            available += sum(
                (
                    leg.amount
                    for leg in item.legs
                    if leg.pocket == Pocket.INSURANCE and leg.amount > 0
                ),
                ZERO,
            )
            settled.append(item)
        if not settled:
            return result
        _post_bulk(classroom.pk, settled, now)
        _update_positions(settled, mark, now)
        events = LiquidationEvent.objects.bulk_create([item.event for item in settled])
        Fill.objects.bulk_create([item.fill for item in settled], batch_size=5000)
        ids = [item.position.pk for item in settled]
        Order.objects.filter(position_id__in=ids, status=Order.Status.RESTING).update(
            status=Order.Status.CANCELLED, reject_reason="Position liquidated", updated_at=now
        )
        MarginCall.objects.filter(position_id__in=ids, outcome=MarginCall.Outcome.PENDING).update(
            outcome=MarginCall.Outcome.LIQUIDATED, resolved_at=now
        )
        for event, item in zip(events, settled, strict=True):
            if item.adl_needed > 0:
                auto_deleverage(
                    event=event, position=item.position, mark=mark, needed=item.adl_needed
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
    *, event: LiquidationEvent, position: Position, mark: Decimal, needed: Decimal
) -> Decimal:
    """Close the best-ranked opposite positions at the bankrupt position's BP to cover ``needed``.

    Runs inside the liquidation's transaction. Counterparties are locked account first,
    with SKIP LOCKED, so a busy one is passed over rather than waited for.
    """
    bp = position.bankruptcy_price
    gap = abs(bp - mark)
    if gap <= 0 or needed <= 0:
        return ZERO
    instrument = position.instrument
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
            TradingAccount.objects.select_for_update(of=("self",), skip_locked=True)
            .filter(pk=candidate.account_id)
            .first()
        )
        if account is None:
            continue
        locked = (
            Position.objects.select_for_update(of=("self",), skip_locked=True)
            .filter(pk=candidate.pk, status=Position.Status.OPEN)
            .first()
        )
        if locked is None:
            continue
        collateral = Collateral.objects.select_for_update().get(pk=locked.pk)
        qty = min(locked.quantity, _lot_ceiling((needed - covered) / gap, instrument.lot_size))
        s = margin.side_sign(locked.side)
        full = qty == locked.quantity
        released = collateral.amount if full else money(collateral.amount * qty / locked.quantity)
        pnl = money_pnl(s * qty * (bp - locked.entry_price))
        saving = min(money(qty * gap), needed - covered)
        txn = position_ledger_post(
            classroom_id=account.classroom_id,
            kind=LedgerTransaction.Kind.ADL,
            position_id=locked.pk,
            memo=f"Auto-deleveraging of {qty.normalize()} of position #{locked.pk} at "
            f"{bp.normalize()} for liquidation #{event.pk}",
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
            liquidation=event,
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
    LiquidationEvent.objects.filter(pk=event.pk).update(adl_amount=covered)
    event.adl_amount = covered
    return covered
