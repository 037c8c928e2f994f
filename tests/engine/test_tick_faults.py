"""Faults inside a tick: one position, one order or one connection that fails holds back
nothing else the tick has to do, and the ledger invariants hold afterwards."""

from __future__ import annotations

import threading
from collections.abc import Callable
from decimal import Decimal

import psycopg
import pytest
from django.db import DatabaseError, connections

from accounts.models import ClassroomPocket, LedgerTransaction
from liquidation import engine, settlement
from liquidation.models import EngineHeartbeat, LiquidationEvent, PriceFeed
from positions.models import Order, Position
from positions.services import order_place
from tests.engine.helpers import open_position, set_price
from tests.factories import make_classroom, make_instrument, make_student
from tests.invariants import assert_ledger_invariants, money_snapshot
from tests.processes import database_url, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def _waiting_pids() -> list[int]:
    """Backends of the test database waiting for a lock right now."""
    with psycopg.connect(database_url(), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'"
        ).fetchall()
    return [row[0] for row in rows]


def _drop_connection(pid: int) -> None:
    """What a database restart or failover does to one backend."""
    with psycopg.connect(database_url(), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])


def _tick_dropped_while_waiting(run: Callable[[], object], *, table: str, row_id: int) -> object:
    """Run ``run`` (a tick) in a thread of its own while another connection holds a row of
    ``table``; once the tick waits for that row, PostgreSQL drops the tick's connection. What
    the tick then returned, or raised."""
    outcome: list[object] = []

    def target() -> None:
        try:
            outcome.append(run())
        except BaseException as exc:
            outcome.append(exc)
        finally:
            connections.close_all()

    with psycopg.connect(database_url()) as holder:
        holder.execute(f"SELECT 1 FROM {table} WHERE id = %s FOR UPDATE", [row_id])
        ticker = threading.Thread(target=target)
        ticker.start()
        pids = wait_until(_waiting_pids, timeout=30, message=f"the tick waiting for {table}")
        _drop_connection(pids[0])
        wait_until(lambda: pids[0] not in _waiting_pids(), timeout=30, message="the backend ending")
        holder.rollback()
    ticker.join(timeout=60)
    assert not ticker.is_alive()
    [result] = outcome
    return result


def _market():
    classroom = make_classroom(name="Faults", max_leverage=100, insurance_fund_seed=Decimal(100))
    btc = make_instrument(classroom)
    PriceFeed.objects.create(instrument=btc, kind=PriceFeed.Kind.MANUAL)
    accounts = [make_student(classroom) for _ in range(3)]
    return classroom, btc, accounts


@pytest.mark.parametrize(
    ("batch_size", "poisoned_index"),
    [
        (10, 2),  # among others in its batch
        (2, 1),  # in a batch of two, which runs next to another batch on a thread
        (5, 5),  # the last breached row, a batch of its own
    ],
)
def test_an_error_settling_one_position_leaves_it_open_and_the_rest_of_the_tick_runs(
    monkeypatch, batch_size, poisoned_index
):
    """Not only a database refusal: any error computing one liquidation (a ledger leg that
    does not balance, an arithmetic error) fails that position alone. The others of its
    batch are liquidated, and the tick goes on to its margin calls, resting orders and
    TP/SL, and finishes its heartbeat, instead of stopping there on every tick."""
    monkeypatch.setattr(engine, "BATCH_SIZE", batch_size)
    _, btc, accounts = _market()
    positions = [open_position(a, btc, "long", "0.01", 50).pk for a in accounts for _ in range(2)]
    poisoned = sorted(positions)[poisoned_index]
    take_profit = open_position(accounts[0], btc, "short", "0.01", 10, take_profit="56000")
    limit_buy = order_place(
        account_id=accounts[1].pk, instrument_id=btc.pk, side="long", type="limit",
        quantity="0.01", leverage=10, price="56000",
    )  # fmt: skip
    settle = settlement._settle

    def failing_settle(*, position, **kwargs):  # type: ignore[no-untyped-def]
        if position.pk == poisoned:
            raise ArithmeticError(f"cannot settle position {position.pk}")
        return settle(position=position, **kwargs)

    monkeypatch.setattr(settlement, "_settle", failing_settle)

    result = set_price(btc, "55000")

    assert set(result.liquidated) == set(positions) - {poisoned}
    assert Position.objects.get(pk=poisoned).status == "open"  # tried again on the next tick
    assert not LiquidationEvent.objects.filter(position_id=poisoned).exists()
    assert any(f"liquidation of position {poisoned}" in e for e in result.errors), result.errors
    assert Position.objects.get(pk=take_profit.pk).status == "closed"
    assert Order.objects.get(pk=limit_buy.pk).status == "filled"
    heartbeat = EngineHeartbeat.objects.get(instrument=btc, mark_price=Decimal(55000))
    assert heartbeat.finished_at is not None and heartbeat.liquidated == len(positions) - 1
    assert_ledger_invariants()

    monkeypatch.setattr(settlement, "_settle", settle)
    assert set_price(btc, "55000").liquidated == [poisoned]
    assert_ledger_invariants()


def test_a_failed_batch_whose_positions_all_settle_alone_is_on_the_heartbeat_once(monkeypatch):
    """Every position of the batch settles on its own, so no position's error is recorded;
    the batch's failure (what slowed the tick, and what may fail whole the next time) still is,
    in one line per batch, however many positions it held or lines its error has."""
    monkeypatch.setattr(engine, "BATCH_SIZE", 2)
    _, btc, accounts = _market()
    positions = [open_position(a, btc, "long", "0.01", 50).pk for a in accounts for _ in range(2)]
    whole = engine.liquidate_batch

    def batches_fail(*, instrument, mark, rows):  # type: ignore[no-untyped-def]
        if len(rows) > 1:
            raise DatabaseError("deadlock detected\nDETAIL:  Process 1 waits for ShareLock.")
        return whole(instrument=instrument, mark=mark, rows=rows)

    monkeypatch.setattr(engine, "liquidate_batch", batches_fail)

    result = set_price(btc, "55000")

    assert sorted(result.liquidated) == sorted(positions)
    heartbeat = EngineHeartbeat.objects.get(instrument=btc, mark_price=Decimal(55000))
    assert heartbeat.liquidated == len(positions) and heartbeat.finished_at is not None
    assert (
        heartbeat.errors.splitlines()
        == ["liquidation batch of 2 positions failed and was settled one by one: deadlock detected"]
        * 3
    ), heartbeat.errors
    assert_ledger_invariants()


def test_an_error_filling_one_resting_order_holds_back_no_other_order_or_tpsl(monkeypatch):
    _, btc, accounts = _market()
    first, second = (
        order_place(
            account_id=account.pk,
            instrument_id=btc.pk,
            side="long",
            type="limit",
            quantity="0.01",
            leverage=10,
            price="59000",
        )
        for account in accounts[:2]
    )
    take_profit = open_position(accounts[2], btc, "short", "0.01", 10, take_profit="59500")
    execute = engine.order_execute

    def failing_execute(*, order_id: int) -> Order:
        if order_id == first.pk:
            raise ArithmeticError(f"cannot fill order {order_id}")
        return execute(order_id=order_id)

    monkeypatch.setattr(engine, "order_execute", failing_execute)
    before = money_snapshot()

    result = set_price(btc, "59000")

    assert any(f"order {first.pk}" in e for e in result.errors), result.errors
    assert Order.objects.get(pk=first.pk).status == "resting"
    assert before.orders[first.pk] == money_snapshot().orders[first.pk]
    assert Order.objects.get(pk=second.pk).status == "filled"
    assert Position.objects.get(pk=take_profit.pk).status == "closed"
    assert EngineHeartbeat.objects.get(instrument=btc, mark_price=59000).finished_at is not None
    assert_ledger_invariants()


def test_a_connection_dropped_inside_a_settlement_rolls_it_back_and_the_tick_settles_again():
    """PostgreSQL drops the tick's connection (a restart, a failover, an admin's
    ``pg_terminate_backend``) while its liquidation batch waits for the insurance fund:
    nothing of the batch is written, and the same tick settles each position again on a new
    connection (the batch's failure is logged), goes on to its TP/SL and finishes; the next
    tick can take the instrument."""
    classroom, btc, (alice, erin, bob) = _market()
    gapped = open_position(alice, btc, "long", "0.1", 50).pk  # BP 58,800: the fund pays
    breached = open_position(erin, btc, "long", "0.1", 40).pk  # BP 58,500
    safe = open_position(bob, btc, "long", "0.1", 10).pk
    stop_loss = open_position(bob, btc, "long", "0.01", 10, stop_loss="59000").pk
    fund = ClassroomPocket.objects.get(classroom=classroom, kind="insurance")

    result = _tick_dropped_while_waiting(
        lambda: set_price(btc, "58700"), table="accounts_classroompocket", row_id=fund.pk
    )
    assert isinstance(result, engine.TickResult), result
    assert sorted(result.liquidated) == sorted([gapped, breached])
    assert Position.objects.get(pk=safe).status == "open"
    assert Position.objects.get(pk=stop_loss).status == "closed"
    assert LedgerTransaction.objects.filter(kind="liquidation").count() == 2
    assert LiquidationEvent.objects.get(position_id=gapped).insurance_paid > 0
    assert EngineHeartbeat.objects.get(instrument=btc, mark_price=58700).finished_at is not None
    assert_ledger_invariants()
    assert set_price(btc, "58600").status == "ticked"
    assert_ledger_invariants()


def test_an_error_in_the_margin_call_sweep_still_lets_the_tick_fire_orders_and_tpsl(monkeypatch):
    _, btc, (alice, bob, _) = _market()
    warned = open_position(alice, btc, "long", "0.1", 50)  # LP 59,036: in the warning band
    take_profit = open_position(bob, btc, "short", "0.01", 10, take_profit="59500")

    def failing_ratio(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise ArithmeticError("cannot compute a margin ratio")

    monkeypatch.setattr(engine, "_ratio", failing_ratio)

    result = set_price(btc, "59090")

    assert any("margin_calls_sweep" in e for e in result.errors), result.errors
    assert Position.objects.get(pk=warned.pk).status == "open"
    assert Position.objects.get(pk=take_profit.pk).status == "closed"
    assert EngineHeartbeat.objects.get(instrument=btc, mark_price=59090).finished_at is not None
    assert_ledger_invariants()


def test_a_connection_dropped_while_filling_one_order_leaves_it_resting_and_fills_the_others():
    """The tick waits for a student's account lock to fill a triggered order, and PostgreSQL
    drops its connection there: that fill is rolled back with its hold intact, and the tick
    fills the next order and closes at the take-profit on a new connection."""
    _, btc, (alice, bob, carol) = _market()
    stuck, filled = (
        order_place(
            account_id=account.pk,
            instrument_id=btc.pk,
            side="long",
            type="limit",
            quantity="0.01",
            leverage=10,
            price="59000",
        )
        for account in (alice, bob)
    )
    take_profit = open_position(carol, btc, "short", "0.01", 10, take_profit="59500")
    before = money_snapshot()

    result = _tick_dropped_while_waiting(
        lambda: set_price(btc, "59000"), table="accounts_tradingaccount", row_id=alice.pk
    )
    assert isinstance(result, engine.TickResult), result
    assert any(f"order {stuck.pk}" in e for e in result.errors), result.errors
    assert Order.objects.get(pk=stuck.pk).status == "resting"
    assert money_snapshot().orders[stuck.pk] == before.orders[stuck.pk]
    assert Order.objects.get(pk=filled.pk).status == "filled"
    assert Position.objects.get(pk=take_profit.pk).status == "closed"
    assert EngineHeartbeat.objects.get(instrument=btc, mark_price=59000).finished_at is not None
    assert_ledger_invariants()
    set_price(btc, "59000")  # the next tick fills it
    assert Order.objects.get(pk=stuck.pk).status == "filled"
    assert_ledger_invariants()


def test_a_tick_that_lost_its_connection_and_a_second_tick_overlapping_it_liquidate_each_once():
    """A dropped connection takes the tick's advisory lock with it, so the next tick of the
    instrument runs while the first is still settling on its new connection. They meet only
    at row locks: the second skips the position the first holds, the first skips the one
    the second holds or has closed, and each breached position is liquidated once."""
    classroom, btc, (alice, erin, bob) = _market()
    gapped = open_position(alice, btc, "long", "0.1", 50).pk  # BP 58,800: needs the fund
    breached = open_position(erin, btc, "long", "0.1", 40).pk  # MB > 0 at 58,700
    safe = open_position(bob, btc, "long", "0.1", 10).pk
    fund = ClassroomPocket.objects.get(classroom=classroom, kind="insurance")
    outcomes: dict[str, object] = {}

    def run_tick(name: str) -> None:
        try:
            outcomes[name] = set_price(btc, "58700")
        except BaseException as exc:
            outcomes[name] = exc
        finally:
            connections.close_all()

    with psycopg.connect(database_url()) as holder:
        holder.execute("SELECT 1 FROM accounts_classroompocket WHERE id = %s FOR UPDATE", [fund.pk])
        first = threading.Thread(target=run_tick, args=("first",))
        first.start()
        [dropped] = wait_until(_waiting_pids, timeout=30, message="the first tick's batch waiting")
        _drop_connection(dropped)
        # Settling the gapped position alone on a new connection, it waits for the fund again.
        wait_until(
            lambda: [pid for pid in _waiting_pids() if pid != dropped],
            timeout=30,
            message="the first tick waiting again on a new connection",
        )
        second = threading.Thread(target=run_tick, args=("second",))
        second.start()
        wait_until(lambda: len(_waiting_pids()) >= 2, timeout=30, message="the second tick waiting")
        holder.rollback()
    first.join(timeout=60)
    second.join(timeout=60)
    assert not first.is_alive() and not second.is_alive()

    first_result, second_result = outcomes["first"], outcomes["second"]
    assert isinstance(first_result, engine.TickResult)
    assert isinstance(second_result, engine.TickResult)
    assert first_result.liquidated == [gapped]
    assert second_result.liquidated == [breached]
    assert Position.objects.get(pk=safe).status == "open"
    assert LedgerTransaction.objects.filter(kind="liquidation").count() == 2
    assert LiquidationEvent.objects.count() == 2
    assert_ledger_invariants()


def test_deleveraging_passes_over_a_counterparty_a_student_is_using_for_the_next_in_rank():
    """ADL never waits for a student's request: the best-ranked short, whose account a
    request holds, is passed over and the next one covers the shortfall, at BP."""
    from liquidation.models import AdlFill

    classroom = make_classroom(name="No fund", max_leverage=100)
    btc = make_instrument(classroom)
    PriceFeed.objects.create(instrument=btc, kind=PriceFeed.Kind.MANUAL)
    alice, bob, carol = (make_student(classroom) for _ in range(3))
    bankrupt = open_position(alice, btc, "long", "0.1", 50)  # BP 58,800
    best = open_position(bob, btc, "short", "0.1", 20)
    next_ = open_position(carol, btc, "short", "0.1", 10)

    with psycopg.connect(database_url()) as student:
        student.execute("SELECT 1 FROM accounts_tradingaccount WHERE id = %s FOR UPDATE", [bob.pk])
        result = set_price(btc, "58000")
        student.rollback()

    assert result.liquidated == [bankrupt.pk] and not result.errors
    event = LiquidationEvent.objects.get(position=bankrupt)
    assert (event.shortfall, event.adl_amount) == (Decimal(80), Decimal(80))
    [fill] = AdlFill.objects.filter(liquidation=event)
    assert (fill.position_id, fill.quantity, fill.price) == (next_.pk, Decimal("0.1"), 58800)
    assert Position.objects.get(pk=best.pk).quantity == Decimal("0.1")
    assert_ledger_invariants()


def test_a_soft_time_limit_inside_a_batch_ends_the_tick_and_leaves_the_instrument_free(
    monkeypatch,
):
    """Celery's soft time limit is not one position's error: the tick stops there, its batch
    rolled back, and the advisory lock goes with it, so the next tick settles everything."""
    from celery.exceptions import SoftTimeLimitExceeded

    _, btc, accounts = _market()
    positions = {open_position(a, btc, "long", "0.01", 50).pk for a in accounts}

    def out_of_time(**kwargs):  # type: ignore[no-untyped-def]
        raise SoftTimeLimitExceeded()

    monkeypatch.setattr(settlement, "_settle", out_of_time)
    with pytest.raises(SoftTimeLimitExceeded):
        set_price(btc, "55000")
    assert not LiquidationEvent.objects.exists()
    assert Position.objects.filter(status="open").count() == len(positions)

    monkeypatch.undo()
    assert set(set_price(btc, "55000").liquidated) == positions
    assert_ledger_invariants()


def test_an_error_closing_one_position_at_its_take_profit_holds_back_no_other(monkeypatch):
    _, btc, (alice, bob, _) = _market()
    failing = open_position(alice, btc, "short", "0.01", 10, take_profit="59500")
    closing = open_position(bob, btc, "short", "0.01", 10, take_profit="59500")
    close = engine.position_close

    def failing_close(*, position_id: int, **kwargs):  # type: ignore[no-untyped-def]
        if position_id == failing.pk:
            raise ArithmeticError(f"cannot close position {position_id}")
        return close(position_id=position_id, **kwargs)

    monkeypatch.setattr(engine, "position_close", failing_close)
    before = money_snapshot()

    result = set_price(btc, "59000")

    assert any(f"TP/SL of position {failing.pk}" in e for e in result.errors), result.errors
    assert money_snapshot().positions[failing.pk] == before.positions[failing.pk]
    assert Position.objects.get(pk=closing.pk).status == "closed"
    assert EngineHeartbeat.objects.get(instrument=btc, mark_price=59000).finished_at is not None
    assert_ledger_invariants()


def test_a_connection_dropped_in_the_price_step_moves_nothing_and_the_next_tick_moves_the_price():
    from django.db import OperationalError

    from liquidation.models import PriceTick, Scenario
    from liquidation.services import scenario_start
    from positions.models import Instrument
    from tests.engine.helpers import tick

    _, btc, (alice, _, _) = _market()
    breached = open_position(alice, btc, "long", "0.01", 50)
    scenario_start(instrument_id=btc.pk, kind=Scenario.Kind.SET_PRICE, target_price="55000")

    error = _tick_dropped_while_waiting(
        lambda: tick(btc), table="positions_instrument", row_id=btc.pk
    )
    assert isinstance(error, OperationalError), error
    assert Instrument.objects.get(pk=btc.pk).mark_price == Decimal(60000)
    assert not PriceTick.objects.filter(instrument=btc).exists()
    assert PriceFeed.objects.get(instrument=btc).last_tick_at is None
    assert Position.objects.get(pk=breached.pk).status == "open"

    # The advisory lock went with the connection: the next tick takes the instrument.
    result = tick(btc)
    assert result.status == "ticked" and result.liquidated == [breached.pk]
    assert PriceTick.objects.filter(instrument=btc).count() == 1
    assert_ledger_invariants()
