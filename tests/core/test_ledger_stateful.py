"""Random sequences of trading against PostgreSQL keep the ledger exact after every step.

Each hypothesis example runs inside one savepoint that its teardown rolls back, so the
examples never see each other's rows and the test needs no table flush.
"""

from __future__ import annotations

from decimal import ROUND_FLOOR, Decimal

import pytest
from django.db import transaction
from django.db.models import Sum
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from accounts.errors import ClientRequestIdReused, DomainError
from accounts.models import LedgerEntry, TradingAccount
from accounts.money import MONEY_STEP, to_tick
from accounts.services import account_adjust, classroom_join
from liquidation.engine import close_at_tpsl, execute_triggered_order, triggered_tpsl_ids
from liquidation.settlement import breached_position_ids, liquidate_batch
from positions.models import Collateral, Instrument, Order, Position, TpSlChange
from positions.services import (
    UNCHANGED,
    order_cancel,
    order_place,
    order_replace,
    position_add_margin,
    position_close,
    position_open,
    position_remove_margin,
    position_set_tpsl,
    removable_margin,
    stored_prices,
)
from tests.core.profiles import STATEFUL, searching
from tests.factories import UserFactory, make_classroom, make_instrument
from tests.invariants import assert_ledger_invariants, money_snapshot

D = Decimal
ETH_BRACKETS = [
    (D(0), D(10_000), D("0.005"), 75),
    (D(10_000), D(100_000), D("0.0065"), 50),
    (D(100_000), None, D("0.01"), 20),
]
# Few enough that margin changes often meet an id their account has used before.
REQUEST_IDS = ["r1", "r2", "r3", "r4"]
request_ids = st.one_of(st.just(""), st.sampled_from(REQUEST_IDS))
# A TP/SL level: kept, cleared, or this many percent on the winning (+) or losing (-) side.
levels = st.one_of(st.just(UNCHANGED), st.none(), st.integers(-40, 40).filter(bool))


class TradingMachine(RuleBasedStateMachine):
    """Students join, open, close, move margin (retrying or reusing client_request_ids), set
    TP/SL, place, cancel and trigger resting orders while the mark jumps about and the
    engine liquidates and closes at TP/SL."""

    accounts = Bundle("accounts")

    def __init__(self) -> None:
        super().__init__()
        self._savepoint = transaction.atomic()
        self._savepoint.__enter__()
        self.open_ids: list[int] = []
        self.resting_ids: list[int] = []
        self.refusals = 0
        # (account, client_request_id) -> (position, signed collateral change) it moved.
        self.margin_requests: dict[tuple[int, str], tuple[int, Decimal]] = {}
        # TP/SL each position opened with; one opened by a resting order had none.
        self.opened_with: dict[int, tuple[Decimal | None, Decimal | None]] = {}

    def teardown(self) -> None:
        transaction.set_rollback(True)
        self._savepoint.__exit__(None, None, None)

    # --- set-up and helpers -----------------------------------------------------------

    @initialize(
        target=accounts,
        spread=st.sampled_from([D(0), D("0.15"), D(5)]),
        fee_rate=st.sampled_from([D(0), D("0.0005"), D("0.001")]),
        seed=st.sampled_from([D(0), D(100), D(5000)]),
    )
    def setup(self, spread, fee_rate, seed):
        self.classroom = make_classroom(max_leverage=125, insurance_fund_seed=seed)
        self.instruments = [
            make_instrument(self.classroom, spread=spread, taker_fee_rate=fee_rate),
            make_instrument(
                self.classroom,
                symbol="ETHUSDT",
                mark="3000",
                tick_size=D("0.01"),
                lot_size=D("0.01"),
                spread=spread / 10,
                taker_fee_rate=fee_rate,
                brackets=ETH_BRACKETS,
            ),
        ]
        return self._join()

    def _join(self) -> int:
        user = UserFactory.create()
        return classroom_join(user_id=user.pk, join_code=self.classroom.join_code).pk

    def _refused(self, call, *args, **kwargs) -> object | None:
        """Run a service; a refusal must leave every row and balance as it was."""
        before = money_snapshot()
        try:
            return call(*args, **kwargs)
        except DomainError:
            self.refusals += 1
            assert money_snapshot() == before
            return None

    def _level(self, instrument: Instrument, side: str, percent: int, *, winning: bool) -> Decimal:
        """A price ``percent`` away from the mark on the winning or losing side of ``side``
        (a negative ``percent``: the other side, where a TP or SL is refused)."""
        assert instrument.mark_price is not None
        s = 1 if (side == "long") == winning else -1
        target = instrument.mark_price * (100 + s * percent) / 100
        return max(to_tick(target, instrument.tick_size, up=False), instrument.tick_size)

    def _change_margin(
        self, position_id: int, change: Decimal, request_id: str
    ) -> tuple[Position | None, bool]:
        """Add (change > 0) or remove margin; also whether ``request_id`` was new to the account.

        An id the account used before decides the outcome on its own: the same change again
        is a repeat and anything else ClientRequestIdReused, and neither moves anything.
        """
        call = position_add_margin if change > 0 else position_remove_margin
        account_id = Position.objects.values_list("account_id", flat=True).get(pk=position_id)
        first = self.margin_requests.get((account_id, request_id)) if request_id else None
        before = money_snapshot()
        try:
            changed = call(
                position_id=position_id, amount=abs(change), client_request_id=request_id
            )
        except ClientRequestIdReused:
            assert first not in (None, (position_id, change)), f"{request_id!r} refused as reused"
            assert money_snapshot() == before
            self.refusals += 1
            return None, False
        except DomainError:
            assert first is None, f"{request_id!r} was used for {first}, then refused otherwise"
            assert money_snapshot() == before
            self.refusals += 1
            return None, True
        if first is not None:
            assert first == (position_id, change), f"{request_id!r} of {first} was reused"
            assert getattr(changed, "repeated", False)
            assert money_snapshot() == before
            return changed, False
        assert not getattr(changed, "repeated", True)
        moved = changed.collateral.amount - before.collateral[position_id][0]
        assert moved == change
        if request_id:
            self.margin_requests[(account_id, request_id)] = (position_id, change)
        return changed, True

    def _still_open(self) -> None:
        """Forget the positions the engine has closed (liquidation, ADL, TP/SL)."""
        open_ = set(
            Position.objects.filter(pk__in=self.open_ids, status=Position.Status.OPEN).values_list(
                "pk", flat=True
            )
        )
        self.open_ids = [pk for pk in self.open_ids if pk in open_]

    def _balances(self) -> tuple[dict[int, Decimal], dict[int, Decimal]]:
        accounts = dict(
            TradingAccount.objects.filter(classroom=self.classroom).values_list("pk", "balance")
        )
        collateral = dict(Collateral.objects.values_list("position_id", "amount"))
        return accounts, collateral

    # --- rules ------------------------------------------------------------------------

    @rule(target=accounts)
    def join(self):
        return self._join()

    @rule(account=accounts, amount=st.integers(1, 20000).map(D))
    def grant(self, account, amount):
        account_adjust(account_id=account, amount=amount, reason="Top-up")

    @rule(
        account=accounts,
        which=st.sampled_from([0, 1]),
        side=st.sampled_from(["long", "short"]),
        lots=st.one_of(st.integers(1, 50), st.integers(1, 3000)),
        leverage=st.one_of(st.integers(1, 25), st.integers(1, 130)),
        extra=st.one_of(st.just(D(0)), st.integers(1, 2000).map(D)),
        protect=st.one_of(st.none(), st.tuples(st.integers(1, 30), st.integers(1, 30))),
    )
    def open(self, account, which, side, lots, leverage, extra, protect):
        instrument = self.instruments[which]
        take_profit = stop_loss = None
        if protect is not None:
            current = Instrument.objects.get(pk=instrument.pk)
            take_profit = self._level(current, side, protect[0], winning=True)
            stop_loss = self._level(current, side, protect[1], winning=False)
        position = self._refused(
            position_open,
            account_id=account,
            instrument_id=instrument.pk,
            side=side,
            quantity=D(lots) * instrument.lot_size,
            leverage=leverage,
            extra_collateral=extra,
            take_profit=take_profit,
            stop_loss=stop_loss,
        )
        if isinstance(position, Position):
            self.open_ids.append(position.pk)
            assert (position.take_profit, position.stop_loss) == (take_profit, stop_loss)
            self.opened_with[position.pk] = (take_profit, stop_loss)

    @precondition(lambda self: bool(self.open_ids))
    @rule(data=st.data())
    def close(self, data):
        position_id = data.draw(st.sampled_from(self.open_ids))
        position = Position.objects.select_related("collateral", "instrument").get(pk=position_id)
        lot = position.instrument.lot_size
        lots = int(position.quantity / lot)
        part = data.draw(st.one_of(st.none(), st.integers(1, lots)))
        quantity = None if part is None else D(part) * lot
        accounts, collateral = self._balances()
        closed = self._refused(position_close, position_id=position_id, quantity=quantity)
        if closed is None:
            return
        assert isinstance(closed, Position)
        if closed.status != Position.Status.OPEN:
            self.open_ids.remove(position_id)
        after_accounts, after_collateral = self._balances()
        # Closing never debits the free balance, and touches no other account or position.
        assert after_accounts[position.account_id] >= accounts[position.account_id]
        for pk, value in accounts.items():
            if pk != position.account_id:
                assert after_accounts[pk] == value
        for pk, value in collateral.items():
            if pk != position_id:
                assert after_collateral[pk] == value
        # The realised loss of this close is at most the collateral it released.
        released = collateral[position_id] - after_collateral[position_id]
        assert closed.realized_pnl - position.realized_pnl >= -released

    @precondition(lambda self: bool(self.open_ids))
    @rule(data=st.data(), amount=st.integers(1, 3000).map(D), request_id=request_ids)
    def add_margin(self, data, amount, request_id):
        position_id = data.draw(st.sampled_from(self.open_ids))
        self._change_margin(position_id, amount, request_id)

    @precondition(lambda self: bool(self.open_ids))
    @rule(
        data=st.data(),
        share=st.sampled_from([D("0.25"), D(1), D("1.001"), D(2)]),
        request_id=request_ids,
    )
    def remove_margin(self, data, share, request_id):
        position_id = data.draw(st.sampled_from(self.open_ids))
        position = Position.objects.select_related("instrument", "collateral").get(pk=position_id)
        limit = removable_margin(position=position, collateral=position.collateral.amount)
        amount = (limit * share).quantize(MONEY_STEP, rounding=ROUND_FLOOR)
        if amount <= 0:
            amount = D("0.01")
        removed, new_id = self._change_margin(position_id, -amount, request_id)
        if not new_id:
            return  # a used id decides the outcome, whatever the limit (checked above)
        if amount <= limit:
            assert removed is not None, f"removing {amount} within the limit {limit} was refused"
        else:
            assert removed is None, f"removing {amount} beyond the limit {limit} was accepted"

    @precondition(lambda self: bool(self.margin_requests))
    @rule(data=st.data())
    def retry_margin_change(self, data):
        """A lost answer retried: the same id, position and change, even once it has closed."""
        (_, request_id), (position_id, change) = data.draw(
            st.sampled_from(sorted(self.margin_requests.items()))
        )
        call = position_add_margin if change > 0 else position_remove_margin
        before = money_snapshot()
        again = call(position_id=position_id, amount=abs(change), client_request_id=request_id)
        assert getattr(again, "repeated", False)
        assert money_snapshot() == before

    @precondition(lambda self: bool(self.margin_requests))
    @rule(
        data=st.data(),
        how=st.sampled_from(["amount", "direction", "position"]),
        more=st.sampled_from([D("0.01"), D(1), D(500)]),
    )
    def reuse_request_id(self, data, how, more):
        """An id already used sent for another change: refused, and nothing moves."""
        (account_id, request_id), (position_id, change) = data.draw(
            st.sampled_from(sorted(self.margin_requests.items()))
        )
        others = sorted(
            Position.objects.filter(account_id=account_id)
            .exclude(pk=position_id)
            .values_list("pk", flat=True)
        )
        if how == "position" and others:
            position_id = data.draw(st.sampled_from(others))
        elif how == "direction":
            change = -change
        else:
            change += more if change > 0 else -more
        call = position_add_margin if change > 0 else position_remove_margin
        before = money_snapshot()
        with pytest.raises(ClientRequestIdReused):
            call(position_id=position_id, amount=abs(change), client_request_id=request_id)
        assert money_snapshot() == before

    @precondition(lambda self: bool(self.open_ids))
    @rule(data=st.data(), take_profit=levels, stop_loss=levels)
    def set_tpsl(self, data, take_profit, stop_loss):
        position = Position.objects.select_related("instrument").get(
            pk=data.draw(st.sampled_from(self.open_ids))
        )
        tp, sl = (
            level
            if level is UNCHANGED or level is None
            else self._level(position.instrument, position.side, level, winning=winning)
            for level, winning in ((take_profit, True), (stop_loss, False))
        )
        changes = TpSlChange.objects.filter(position_id=position.pk)
        count = changes.count()
        changed = self._refused(
            position_set_tpsl, position_id=position.pk, take_profit=tp, stop_loss=sl
        )
        if not isinstance(changed, Position):
            assert changes.count() == count  # TP and SL themselves: checked by _refused
            return
        before = (position.take_profit, position.stop_loss)
        after = (before[0] if tp is UNCHANGED else tp, before[1] if sl is UNCHANGED else sl)
        assert (changed.take_profit, changed.stop_loss) == after
        assert changes.count() == count + (after != before)

    @rule(
        account=accounts,
        which=st.sampled_from([0, 1]),
        side=st.sampled_from(["long", "short"]),
        type=st.sampled_from(["limit", "stop"]),
        away=st.integers(1, 30),
        lots=st.one_of(st.integers(1, 50), st.integers(1, 3000)),
        leverage=st.integers(1, 50),
        extra=st.one_of(st.just(D(0)), st.integers(1, 2000).map(D)),
    )
    def place_resting(self, account, which, side, type, away, lots, leverage, extra):
        instrument = Instrument.objects.get(pk=self.instruments[which].pk)
        assert instrument.mark_price is not None
        # A buy limit rests below the mark and a buy stop above it; a sell the other way.
        below = (side == "long") == (type == "limit")
        target = instrument.mark_price * (100 - away if below else 100 + away) / 100
        at = max(to_tick(target, instrument.tick_size, up=not below), instrument.tick_size)
        before = TradingAccount.objects.get(pk=account).balance
        order = self._refused(
            order_place,
            account_id=account,
            instrument_id=instrument.pk,
            side=side,
            type=type,
            price=at if type == "limit" else None,
            stop_price=at if type == "stop" else None,
            quantity=D(lots) * instrument.lot_size,
            leverage=leverage,
            extra_collateral=extra,
        )
        if not isinstance(order, Order):
            return
        if order.status == Order.Status.RESTING:
            self.resting_ids.append(order.pk)
            # Its hold left the free balance, and nothing else did.
            assert order.held_margin > 0
            assert TradingAccount.objects.get(pk=account).balance == before - order.held_margin
        elif order.position_id is not None:  # a limit the market had already reached
            self.open_ids.append(order.position_id)

    @precondition(lambda self: bool(self.resting_ids))
    @rule(data=st.data())
    def cancel_resting(self, data):
        order = Order.objects.get(pk=data.draw(st.sampled_from(self.resting_ids)))
        before = TradingAccount.objects.get(pk=order.account_id).balance
        order_cancel(order_id=order.pk)
        self.resting_ids.remove(order.pk)
        assert TradingAccount.objects.get(pk=order.account_id).balance == before + order.held_margin

    @precondition(lambda self: bool(self.resting_ids))
    @rule(
        data=st.data(),
        away=st.integers(-40, 40),
        lots=st.one_of(st.none(), st.integers(1, 50), st.integers(1, 3000)),
    )
    def replace_resting(self, data, away, lots):
        order = Order.objects.select_related("instrument").get(
            pk=data.draw(st.sampled_from(self.resting_ids))
        )
        at = order.price if order.type == Order.Type.LIMIT else order.stop_price
        assert at is not None
        tick = order.instrument.tick_size
        moved = max(to_tick(at * (100 + away) / 100, tick, up=away > 0), tick)
        price = {"price" if order.type == Order.Type.LIMIT else "stop_price": moved}
        quantity = None if lots is None else D(lots) * order.instrument.lot_size
        before = TradingAccount.objects.get(pk=order.account_id).balance
        new = self._refused(order_replace, order_id=order.pk, quantity=quantity, **price)
        if not isinstance(new, Order):
            return  # refused: the old order rests as it was (checked by _refused)
        self.resting_ids.remove(order.pk)
        assert Order.objects.get(pk=order.pk).held_margin == 0
        # The old hold came back and the new one, if it rests, left: nothing else moved.
        after = TradingAccount.objects.get(pk=order.account_id).balance
        if new.status == Order.Status.RESTING:
            self.resting_ids.append(new.pk)
            assert after == before + order.held_margin - new.held_margin
        elif new.position_id is not None:  # its new price fills at once
            self.open_ids.append(new.position_id)

    @precondition(lambda self: bool(self.resting_ids))
    @rule(data=st.data())
    def trigger_resting(self, data):
        order_id = data.draw(st.sampled_from(self.resting_ids))
        execute_triggered_order(order_id)  # only if the mark has reached it, as the engine
        order = Order.objects.get(pk=order_id)
        if order.status != Order.Status.RESTING:
            self.resting_ids.remove(order_id)
            assert order.held_margin == 0
        if order.status == Order.Status.FILLED:
            assert order.position_id is not None
            self.open_ids.append(order.position_id)

    @rule(
        which=st.sampled_from([0, 1]),
        move=st.one_of(st.integers(-8, 8), st.sampled_from([-60, -35, 35, 80])),
    )
    def move_price(self, which, move):
        instrument = Instrument.objects.get(pk=self.instruments[which].pk)
        assert instrument.mark_price is not None
        target = instrument.mark_price * (100 + move) / 100
        mark = max(to_tick(target, instrument.tick_size, up=False), D(10))
        Instrument.objects.filter(pk=instrument.pk).update(mark_price=mark)

    @rule(which=st.sampled_from([0, 1]))
    def engine_sweep(self, which):
        """What a tick does after the mark: liquidate the breached, close at TP/SL."""
        instrument = Instrument.objects.get(pk=self.instruments[which].pk)
        mark = instrument.mark_price
        assert mark is not None
        accounts, _ = self._balances()
        rows = breached_position_ids(instrument.pk, mark)
        if rows:
            liquidate_batch(instrument=instrument, mark=mark, rows=rows)
        for position_id in triggered_tpsl_ids(instrument.pk, mark):
            close_at_tpsl(position_id)
        self._still_open()
        # Neither a liquidation nor a close debits a free balance.
        after, _ = self._balances()
        assert all(after[pk] >= value for pk, value in accounts.items())

    # --- after every step -------------------------------------------------------------

    @invariant()
    def ledger_is_exact(self):
        if not hasattr(self, "classroom"):
            return
        assert_ledger_invariants(self.classroom.pk)
        accounts, collateral = self._balances()
        assert all(value >= 0 for value in accounts.values())
        assert all(value >= 0 for value in collateral.values())
        # What each position lost is at most what it ever locked as collateral.
        locked = dict(
            LedgerEntry.objects.filter(
                classroom=self.classroom, pocket=LedgerEntry.Pocket.COLLATERAL, amount__gt=0
            )
            .values_list("position_id")
            .annotate(total=Sum("amount"))
        )
        for pk, realized in Position.objects.filter(account__classroom=self.classroom).values_list(
            "pk", "realized_pnl"
        ):
            assert realized >= -locked[pk]
        # Every open position stores the LP and BP of its current quantity and collateral.
        for position in Position.objects.filter(
            account__classroom=self.classroom, status=Position.Status.OPEN
        ).select_related("collateral", "instrument"):
            assert (position.liquidation_price, position.bankruptcy_price) == stored_prices(
                side=position.side,
                entry_price=position.entry_price,
                quantity=position.quantity,
                collateral=position.collateral.amount,
                tiers=position.instrument.margin_tiers(),
            )

    @invariant()
    def tpsl_changes_chain(self):
        """Each position's TP/SL changes start from what it opened with, each from where the
        last one left it, and end at its levels while it is open; a close clears them."""
        if not hasattr(self, "classroom"):
            return
        changes: dict[int, list[TpSlChange]] = {}
        for change in TpSlChange.objects.filter(position__account__classroom=self.classroom):
            changes.setdefault(change.position_id, []).append(change)
        for pk, status, *levels in Position.objects.filter(
            account__classroom=self.classroom
        ).values_list("pk", "status", "take_profit", "stop_loss"):
            level = self.opened_with.get(pk, (None, None))
            for change in changes.get(pk, []):
                assert (change.take_profit_before, change.stop_loss_before) == level, pk
                after = (change.take_profit_after, change.stop_loss_after)
                assert after != level, f"position {pk}: a change that changed nothing"
                level = after
            if status == Position.Status.OPEN:
                assert tuple(levels) == level, pk
            else:
                assert tuple(levels) == (None, None), pk


@searching
@pytest.mark.django_db
def test_random_trading_keeps_the_ledger_exact():
    run_state_machine_as_test(TradingMachine, settings=STATEFUL)
